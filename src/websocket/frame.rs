//! RFC 6455 framing for the two directions of a proxied WebSocket. The client's stream is
//! parsed into whole messages (the gate must read them); the server's stream is only followed,
//! frame by frame, so that the proxy knows where it may insert a frame of its own.

use bytes::{Buf, Bytes, BytesMut};

use crate::buffers::{BufferBudget, Held};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Why the proxy closes the connection; `code` is the close code sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> Violation {
    Violation { code: 1002, reason }
}

const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A frame header, parsed once all its bytes are there.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    rsv: u8,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
    /// Bytes of the header itself (2 to 14).
    len: usize,
}

/// `Ok(None)` while the header is incomplete.
fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(protocol("unknown opcode"))?;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                let n = u64::from_be_bytes(n);
                if n >> 63 != 0 {
                    return Err(protocol("frame length with the top bit set"));
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        match buf.get(len..len + 4) {
            Some(k) => {
                len += 4;
                Some([k[0], k[1], k[2], k[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70,
        opcode,
        mask,
        payload_len,
        len,
    }))
}

/// XORs `data` with the mask, `offset` bytes into the frame's payload.
fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 4];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// What the client sent, in the order it sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A ping or pong to forward to the upstream as is: the original frame bytes.
    Control(Bytes),
    /// A whole data message (fragments joined, payload unmasked).
    Message { opcode: Opcode, payload: Bytes },
    /// The client's Close frame (original bytes, forward as is); nothing after it is valid.
    Close(Bytes),
}

/// The client → server direction: every frame masked, fragments joined up to `max_message`
/// bytes, control frames (≤ 125 bytes, never fragmented) allowed between fragments, no
/// reserved bits (no extension is ever negotiated). What is held counts against the buffer
/// budget (`limits.buffer_budget`): beyond it the connection is closed with 1013.
pub struct ClientStream {
    max_message: usize,
    /// Bytes of a frame whose header or payload is not complete yet.
    pending: BytesMut,
    /// The data message being joined: its opcode and unmasked payload so far.
    message: Option<(Opcode, BytesMut)>,
    /// A Close frame was seen: nothing after it is read.
    closed: bool,
    /// The capacity of `pending` and `message`, taken from the buffer budget.
    held: Held,
}

/// A buffer over this that is mostly empty after a message is given back (an idle connection
/// keeps no large allocation from its last large message).
const KEEP: usize = 64 * 1024;

const BUDGET_EXHAUSTED: Violation = Violation {
    code: 1013,
    reason: "proxy buffer budget exhausted; try again later",
};

impl ClientStream {
    pub fn new(max_message: usize) -> Self {
        Self::with_budget(max_message, &crate::buffers::BUDGET)
    }

    pub fn with_budget(max_message: usize, budget: &'static BufferBudget) -> Self {
        ClientStream {
            max_message,
            pending: BytesMut::new(),
            message: None,
            closed: false,
            held: Held::new(budget),
        }
    }

    /// Bytes held by this stream's buffers (their capacity).
    pub fn held(&self) -> usize {
        self.held.bytes()
    }

    fn message_capacity(&self) -> usize {
        self.message.as_ref().map_or(0, |(_, m)| m.capacity())
    }

    /// Take what `pending` (grown to `pending_capacity`) and the message being joined (grown by
    /// `message_extra`) will hold from the budget, before allocating it.
    fn hold(&mut self, pending_capacity: usize, message_extra: usize) -> Result<(), Violation> {
        let bytes =
            pending_capacity.max(self.pending.capacity()) + self.message_capacity() + message_extra;
        if bytes <= self.held.bytes() {
            return Ok(());
        }
        self.held.resize(bytes).map_err(|_| {
            crate::metrics::buffer_budget_refused("websocket");
            BUDGET_EXHAUSTED
        })
    }

    /// Feeds bytes as they arrive, split anywhere; returns the complete events.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<ClientEvent>, Violation> {
        if self.closed {
            return Ok(Vec::new());
        }
        self.hold(self.pending.len() + data.len(), 0)?;
        self.pending.extend_from_slice(data);
        let mut events = Vec::new();
        let mut split = false;
        while let Some(header) = parse_header(&self.pending)? {
            self.check(&header)?;
            // checked against max_message (or 125) above, so it fits in usize
            let total = header.len + header.payload_len as usize;
            if self.pending.len() < total {
                // Reserve once for the whole frame instead of growing as it trickles in,
                // within the budget.
                if self.pending.capacity() < total {
                    self.hold(total, 0)?;
                    // exactly (`reserve` may double)
                    let mut whole = BytesMut::with_capacity(total);
                    whole.extend_from_slice(&self.pending);
                    self.pending = whole;
                }
                break;
            }
            let frame = self.pending.split_to(total).freeze();
            split = true;
            if let Some(event) = self.on_frame(&header, frame)? {
                let close = matches!(event, ClientEvent::Close(_));
                events.push(event);
                if close {
                    self.pending = BytesMut::new();
                    self.closed = true;
                    break;
                }
            }
        }
        if split || self.pending.capacity() > KEEP {
            self.shrink();
        }
        // what is held now (in hand already, so counted even if others took the rest)
        let bytes = self.pending.capacity() + self.message_capacity();
        self.held.set_in_hand(bytes);
        Ok(events)
    }

    /// After frames were taken out: the rest moves to a buffer of its own size, so that the
    /// allocation of a large frame (shared with the frame until it is dropped) goes away.
    fn shrink(&mut self) {
        if self.pending.is_empty() {
            self.pending = BytesMut::new();
        } else if self.pending.len() <= KEEP {
            self.pending = BytesMut::from(&self.pending[..]);
        }
    }

    fn check(&self, h: &Header) -> Result<(), Violation> {
        if h.mask.is_none() {
            return Err(protocol("client frames must be masked"));
        }
        if h.rsv != 0 {
            return Err(protocol("reserved bits set (no extension was negotiated)"));
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(protocol("fragmented control frame"));
            }
            if h.payload_len > MAX_CONTROL_PAYLOAD {
                return Err(protocol("control frame over 125 bytes"));
            }
            return Ok(());
        }
        match (h.opcode, &self.message) {
            (Opcode::Continuation, None) => {
                return Err(protocol("continuation frame without a message"))
            }
            (Opcode::Text | Opcode::Binary, Some(_)) => {
                return Err(protocol("new message inside a fragmented one"))
            }
            _ => {}
        }
        let so_far = self.message.as_ref().map_or(0, |(_, b)| b.len() as u64);
        if so_far + h.payload_len > self.max_message as u64 {
            return Err(Violation {
                code: 1009,
                reason: "message over websocket.max_message",
            });
        }
        Ok(())
    }

    fn on_frame(&mut self, h: &Header, frame: Bytes) -> Result<Option<ClientEvent>, Violation> {
        match h.opcode {
            Opcode::Ping | Opcode::Pong => return Ok(Some(ClientEvent::Control(frame))),
            Opcode::Close => return Ok(Some(ClientEvent::Close(frame))),
            _ => {}
        }
        let mask = h.mask.unwrap_or_default();
        self.hold(0, frame.len() - h.len)?;
        let message = self
            .message
            .get_or_insert_with(|| (h.opcode, BytesMut::new()));
        let start = message.1.len();
        message.1.extend_from_slice(&frame[h.len..]);
        apply_mask(&mut message.1[start..], mask, 0);
        if !h.fin {
            return Ok(None);
        }
        let Some((opcode, payload)) = self.message.take() else {
            return Ok(None);
        };
        if opcode == Opcode::Text && std::str::from_utf8(&payload).is_err() {
            return Err(Violation {
                code: 1007,
                reason: "text message is not UTF-8",
            });
        }
        Ok(Some(ClientEvent::Message {
            opcode,
            payload: payload.freeze(),
        }))
    }
}

/// The server → client direction, passed through unchanged: this follows frame boundaries only
/// (a partial header is kept, never a payload) to tell where a whole message ends.
#[derive(Default)]
pub struct ServerStream {
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The current frame is the last one of its message (or a control frame).
    frame_ends_message: bool,
    /// A fragmented data message is open.
    in_message: bool,
    messages: u64,
    closed: bool,
}

impl ServerStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// No frame partially seen and no fragmented message open: a frame may be inserted here.
    pub fn at_message_boundary(&self) -> bool {
        self.header.is_empty() && self.remaining == 0 && !self.in_message
    }

    /// Data messages seen complete so far.
    pub fn messages_completed(&self) -> u64 {
        self.messages
    }

    /// A Close frame was seen whole.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Feeds a chunk; returns the offset of the first message boundary in it (`Some(0)` when
    /// the stream was at one before the chunk), `None` if there is none.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<usize>, Violation> {
        let mut first = self.at_message_boundary().then_some(0);
        let mut buf = data;
        while !buf.is_empty() {
            if self.remaining > 0 {
                let n = buf
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                buf.advance(n);
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.frame_done();
                }
            } else {
                // collect the header (at most 14 bytes) one byte at a time from this chunk
                self.header.push(buf[0]);
                buf.advance(1);
                let Some(h) = parse_header(&self.header)? else {
                    continue;
                };
                if h.mask.is_some() {
                    return Err(protocol("server frames must not be masked"));
                }
                self.header.clear();
                self.begin_frame(&h)?;
                self.remaining = h.payload_len;
                if self.remaining == 0 {
                    self.frame_done();
                }
            }
            if first.is_none() && self.at_message_boundary() {
                first = Some(data.len() - buf.len());
            }
        }
        Ok(first)
    }

    fn begin_frame(&mut self, h: &Header) -> Result<(), Violation> {
        if h.opcode.is_control() {
            self.frame_ends_message = false;
            if h.opcode == Opcode::Close {
                self.closed = true;
            }
            return Ok(());
        }
        match (h.opcode, self.in_message) {
            (Opcode::Continuation, false) => {
                return Err(protocol("continuation frame without a message"))
            }
            (Opcode::Text | Opcode::Binary, true) => {
                return Err(protocol("new message inside a fragmented one"))
            }
            _ => {}
        }
        self.in_message = true;
        self.frame_ends_message = h.fin;
        Ok(())
    }

    fn frame_done(&mut self) {
        if self.frame_ends_message {
            self.in_message = false;
            self.frame_ends_message = false;
            self.messages += 1;
        }
    }
}

/// One unfragmented frame; `mask` for frames the proxy sends to the upstream as a client.
pub fn encode_frame(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 14);
    out.extend_from_slice(&[0x80 | opcode.bits()]);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[mask_bit | n as u8]),
        n if n <= 0xFFFF => {
            out.extend_from_slice(&[mask_bit | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[mask_bit | 127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let start = out.len() + mask.map_or(0, |_| 4);
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out.freeze()
}

/// A Close frame with `code` and `reason` (cut to fit 125 bytes, on a character boundary).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(Opcode::Close, &payload, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn raw(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = encode_frame(Opcode::Text, payload, mask).to_vec();
        f[0] = if fin { 0x80 } else { 0 } | opcode;
        f
    }

    fn message(opcode: Opcode, payload: &[u8]) -> ClientEvent {
        ClientEvent::Message {
            opcode,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// Issue 28: 1 000 connections each sending 1 MiB minus one byte of a frame held 1 GiB.
    /// Partial frames now count against the buffer budget: beyond it, close 1013.
    #[test]
    fn partial_frames_beyond_the_budget_are_refused_with_1013() {
        static BUDGET: BufferBudget = BufferBudget::new(300 * 1024);
        let frame = raw(true, 2, &vec![1u8; 100 * 1024], Some(KEY));
        let almost = &frame[..frame.len() - 1];
        let mut streams: Vec<ClientStream> = Vec::new();
        let mut refused = 0;
        for _ in 0..5 {
            let mut s = ClientStream::with_budget(1024 * 1024, &BUDGET);
            match s.push(almost) {
                Ok(events) => assert!(events.is_empty()),
                Err(v) => {
                    assert_eq!(v, BUDGET_EXHAUSTED);
                    refused += 1;
                }
            }
            streams.push(s);
        }
        assert!(BUDGET.used() <= 300 * 1024, "{}", BUDGET.used());
        assert_eq!(refused, 3, "two partial frames fit, three do not");
        // the last byte completes one: its message comes out, and its buffer is given back
        let events = streams[0].push(&frame[frame.len() - 1..]).unwrap();
        assert!(
            matches!(&events[..], [ClientEvent::Message { payload, .. }] if payload.len() == 100 * 1024)
        );
        drop(events);
        assert_eq!(streams[0].held(), 0, "nothing kept after the message");
        drop(streams);
        assert_eq!(BUDGET.used(), 0);
    }

    #[test]
    fn a_large_message_leaves_no_large_buffer_behind() {
        let mut s = ClientStream::new(2 * 1024 * 1024);
        let mut wire = raw(true, 2, &vec![3u8; 1024 * 1024], Some(KEY));
        // and the start of the next frame in the same chunk
        let next = raw(true, 2, b"next", Some(KEY));
        wire.extend_from_slice(&next[..3]);
        let events = s.push(&wire).unwrap();
        assert_eq!(events.len(), 1);
        drop(events);
        assert!(s.held() < KEEP, "{}", s.held());
        assert!(s.pending.capacity() < KEEP, "{}", s.pending.capacity());
        let events = s.push(&next[3..]).unwrap();
        assert_eq!(events, vec![message(Opcode::Binary, b"next")]);
    }

    #[test]
    fn a_masked_text_frame_is_one_message() {
        let mut s = ClientStream::new(1024);
        let events = s.push(&raw(true, 1, b"Hello", Some(KEY))).unwrap();
        assert_eq!(events, vec![message(Opcode::Text, b"Hello")]);
    }

    #[test]
    fn frames_split_at_every_byte_give_the_same_events() {
        let mut wire = raw(true, 1, br#"{"op":1}"#, Some(KEY));
        wire.extend(raw(true, 9, b"p", Some(KEY)));
        wire.extend(raw(true, 2, &[0u8; 300], Some(KEY)));
        let mut whole = ClientStream::new(1024);
        let expected = whole.push(&wire).unwrap();
        assert_eq!(expected.len(), 3);
        let mut bytewise = ClientStream::new(1024);
        let mut got = Vec::new();
        for b in &wire {
            got.extend(bytewise.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn fragments_are_joined_and_a_ping_between_them_comes_first() {
        let mut wire = raw(false, 1, b"Hel", Some(KEY));
        let ping = raw(true, 9, b"are you there", Some([1, 2, 3, 4]));
        wire.extend(&ping);
        wire.extend(raw(false, 0, b"lo ", Some([9, 9, 9, 9])));
        wire.extend(raw(true, 0, b"world", Some(KEY)));
        let events = ClientStream::new(1024).push(&wire).unwrap();
        assert_eq!(
            events,
            vec![
                ClientEvent::Control(Bytes::from(ping)),
                message(Opcode::Text, b"Hello world")
            ]
        );
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths() {
        for n in [126usize, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let events = ClientStream::new(100_000)
                .push(&raw(true, 2, &payload, Some(KEY)))
                .unwrap();
            assert_eq!(events, vec![message(Opcode::Binary, &payload)], "{n}");
        }
    }

    #[test]
    fn protocol_errors_are_1002() {
        let cases: [(&str, Vec<u8>); 6] = [
            ("unmasked", raw(true, 1, b"x", None)),
            ("rsv1", {
                let mut f = raw(true, 1, b"x", Some(KEY));
                f[0] |= 0x40;
                f
            }),
            ("stray continuation", raw(true, 0, b"x", Some(KEY))),
            ("fragmented ping", raw(false, 9, b"x", Some(KEY))),
            ("long ping", raw(true, 9, &[0; 126], Some(KEY))),
            ("opcode 3", raw(true, 3, b"x", Some(KEY))),
        ];
        for (case, wire) in cases {
            let err = ClientStream::new(1024).push(&wire).unwrap_err();
            assert_eq!(err.code, 1002, "{case}");
        }
        let mut wire = raw(false, 1, b"a", Some(KEY));
        wire.extend(raw(true, 1, b"b", Some(KEY)));
        assert_eq!(ClientStream::new(64).push(&wire).unwrap_err().code, 1002);
    }

    #[test]
    fn an_oversized_message_is_refused_from_its_header_alone() {
        // header declares 1 TiB; no payload follows
        let mut wire = vec![0x82, 0x80 | 127];
        wire.extend((1u64 << 40).to_be_bytes());
        wire.extend(KEY);
        let mut s = ClientStream::new(1024);
        assert_eq!(s.push(&wire).unwrap_err().code, 1009);
        // and across fragments
        let mut s = ClientStream::new(10);
        s.push(&raw(false, 1, b"123456", Some(KEY))).unwrap();
        assert_eq!(
            s.push(&raw(true, 0, b"7890x", Some(KEY))).unwrap_err().code,
            1009
        );
    }

    #[test]
    fn invalid_utf8_text_is_1007() {
        let err = ClientStream::new(64)
            .push(&raw(true, 1, &[0xff, 0xfe], Some(KEY)))
            .unwrap_err();
        assert_eq!(err.code, 1007);
    }

    #[test]
    fn close_ends_the_stream() {
        let close = close_frame(1000, "bye", Some(KEY));
        let mut wire = close.to_vec();
        wire.extend(raw(true, 1, b"after", Some(KEY)));
        let events = ClientStream::new(64).push(&wire).unwrap();
        assert_eq!(events, vec![ClientEvent::Close(close.clone())]);
        // the same when what follows the close arrives in a later chunk (found by fuzzing)
        let mut s = ClientStream::new(64);
        assert_eq!(s.push(&close).unwrap(), vec![ClientEvent::Close(close)]);
        assert_eq!(s.push(&raw(true, 9, b"late", Some(KEY))).unwrap(), vec![]);
        assert_eq!(s.push(&[0xff, 0xff]).unwrap(), vec![], "not even parsed");
    }

    #[test]
    fn server_boundaries_fall_between_messages_only() {
        let mut s = ServerStream::new();
        let a = encode_frame(Opcode::Text, b"first", None);
        let b = encode_frame(Opcode::Text, b"second", None);
        let mut chunk = a[..3].to_vec();
        assert_eq!(
            s.push(&chunk).unwrap(),
            Some(0),
            "at a boundary before the chunk"
        );
        assert!(!s.at_message_boundary());
        chunk = a[3..].to_vec();
        chunk.extend_from_slice(&b[..2]);
        assert_eq!(s.push(&chunk).unwrap(), Some(a.len() - 3));
        assert!(!s.at_message_boundary());
        assert_eq!(s.push(&b[2..]).unwrap(), Some(b.len() - 2));
        assert!(s.at_message_boundary());
        assert_eq!(s.messages_completed(), 2);

        // fragmented message with a ping between fragments: no boundary until the last one
        let mut s = ServerStream::new();
        let mut wire = raw(false, 1, b"frag", None);
        wire.extend(raw(true, 9, b"ping", None));
        let before_last = wire.len();
        wire.extend(raw(true, 0, b"end", None));
        let first_part = &wire[..before_last];
        s.push(b"").unwrap();
        assert_eq!(s.push(&first_part[..1]).unwrap(), Some(0));
        assert_eq!(s.push(&first_part[1..]).unwrap(), None);
        assert_eq!(
            s.push(&wire[before_last..]).unwrap(),
            Some(wire.len() - before_last)
        );
        assert_eq!(s.messages_completed(), 1);
        assert_eq!(
            ServerStream::new()
                .push(&raw(true, 1, b"x", Some(KEY)))
                .unwrap_err()
                .code,
            1002
        );
    }

    #[test]
    fn encoded_frames_read_back() {
        let payload = vec![7u8; 70_000];
        let masked = encode_frame(Opcode::Binary, &payload, Some(KEY));
        assert_eq!(
            ClientStream::new(100_000).push(&masked).unwrap(),
            vec![message(Opcode::Binary, &payload)]
        );
        let plain = encode_frame(Opcode::Binary, &payload, None);
        let mut s = ServerStream::new();
        assert_eq!(s.push(&plain).unwrap(), Some(0));
        assert!(s.at_message_boundary());
        let close = close_frame(1009, &"é".repeat(100), None);
        assert!(close.len() <= 127);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }
}
