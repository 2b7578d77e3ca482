//! Buffered reading of HTTP/1.1 messages (and, after a `101`, WebSocket frames). Every part
//! of the kit that reads HTTP heads (the client, the echo upstream, the HTTPS endpoint, the
//! faulty and scripted upstreams, the recorded-stream parser) finds the end of a head with
//! [`head_len`], and every stream is read through [`Wire::read_head`], so the head bound and the
//! end-of-stream rules are the same everywhere; response heads are parsed only by
//! [`parse_response_head`].

use std::io::{self, Read, Write};

use super::client::Response;

/// Largest head or frame this kit reads (bounds memory on a misbehaving peer).
const MAX_HEAD: usize = 1 << 20;
const MAX_FRAME: u64 = 64 << 20;

/// A stream with a read buffer, for parsing HTTP/1.1 and WebSocket framing.
pub struct Wire<S> {
    pub stream: S,
    /// Bytes read but not consumed yet.
    pub buf: Vec<u8>,
}

pub(crate) fn eof(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {what}"),
    )
}

pub(crate) fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<S: Read + Write> Wire<S> {
    pub fn new(stream: S) -> Self {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads once more into the buffer; returns the count (0 = end of stream).
    pub fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to and including the blank line ending a head. `Ok(None)`: the stream ended
    /// before any byte of a new head.
    pub fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(len) = head_len(&self.buf) {
                return Ok(Some(self.buf.drain(..len).collect()));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("head too large"));
            }
            if self.fill()? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(eof("inside a head"))
                };
            }
        }
    }

    /// Exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(eof("inside a body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// One line without its CRLF (LF alone accepted).
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..pos + 1).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("line too long"));
            }
            if self.fill()? == 0 {
                return Err(eof("inside a line"));
            }
        }
    }

    /// Everything until the end of the stream.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {
            if self.buf.len() as u64 > MAX_FRAME {
                return Err(bad("body too large"));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// A chunked body (decoded), trailers read and dropped.
    pub fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let line = String::from_utf8_lossy(&line);
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
            if size as u64 > MAX_FRAME || body.len() as u64 > MAX_FRAME {
                return Err(bad("chunked body too large"));
            }
            if size == 0 {
                // Trailers, up to the blank line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.take(size)?);
            if !self.read_line()?.is_empty() {
                return Err(bad("missing CRLF after chunk data"));
            }
        }
    }

    /// One WebSocket frame (unmasked for the caller).
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let h = self.take(2)?;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0F;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7F {
            126 => u16::from_be_bytes(self.take(2)?.try_into().unwrap()) as u64,
            127 => u64::from_be_bytes(self.take(8)?.try_into().unwrap()),
            n => n as u64,
        };
        if len > MAX_FRAME {
            return Err(bad(format!("frame too large: {len}")));
        }
        let mask = if masked {
            Some(<[u8; 4]>::try_from(self.take(4)?).unwrap())
        } else {
            None
        };
        let mut payload = self.take(len as usize)?;
        if let Some(m) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
        Ok(Frame {
            fin,
            opcode,
            masked,
            payload,
        })
    }
}

/// A WebSocket frame as read (payload already unmasked).
#[derive(Clone, Debug)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

/// Length of the head at the start of `buf`, blank line included, once it is all there.
pub(crate) fn head_len(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Header fields as parsed, (name, value) in wire order; values as lossy UTF-8.
pub(crate) fn header_pairs(headers: &[httparse::Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// Parsed head of a response.
pub(crate) fn parse_response_head(head: &[u8]) -> io::Result<Response> {
    let mut headers = vec![httparse::EMPTY_HEADER; 512];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("partial response head")),
        Err(e) => {
            return Err(bad(format!(
                "bad response head ({e}): {:?}",
                String::from_utf8_lossy(head)
            )))
        }
    }
    Ok(Response {
        status: r.code.unwrap_or(0),
        reason: r.reason.unwrap_or("").to_string(),
        headers: header_pairs(r.headers),
        body: Vec::new(),
    })
}

/// Whether the last `Transfer-Encoding` coding is chunked.
pub(crate) fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .next_back()
        .is_some_and(|s| s == "chunked")
}

/// The Content-Length value, if present; Err if unparsable or conflicting.
pub(crate) fn content_length(headers: &[(String, String)]) -> io::Result<Option<usize>> {
    let mut found: Option<usize> = None;
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in v.split(',') {
            let n: usize = part
                .trim()
                .parse()
                .map_err(|_| bad(format!("bad Content-Length {v:?}")))?;
            if found.is_some_and(|f| f != n) {
                return Err(bad("conflicting Content-Length"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}
