//! Raw TCP tools for adversarial tests:
//!
//! - [`Tap`]: a TCP relay put between the proxy and the echo upstream that records every byte
//!   the proxy sends upstream, per connection, so a test can check the exact wire format the
//!   CSE would see (framing, header lines), not only what a lenient parser made of it.
//! - [`parse_requests`]: a strict HTTP/1.1 request-stream parser (CRLF only, no obs-fold, one
//!   framing per message) that splits a recorded byte stream into requests, or says exactly
//!   where it is ambiguous.
//! - [`FaultyUpstream`]: an upstream that misbehaves on purpose (resets, garbage, silence).
//! - [`ScriptedUpstream`]: an upstream whose test decides, request by request, the raw answer
//!   and what becomes of the connection (kept, closed, reset; body read first or not).
//!
//! Everything is on 127.0.0.1; every socket has timeouts; `Drop` closes sockets and joins
//! threads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::http1::{content_length, head_len, header_pairs, is_chunked, Wire};
use super::IO_TIMEOUT;

fn bind_retry(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
        }
    }
}

/// Sockets and threads of a small server, closed and joined on stop.
#[derive(Default)]
struct Threads {
    streams: Mutex<Vec<TcpStream>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    stopping: AtomicBool,
}

impl Threads {
    fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        self.handles.lock().unwrap().push(thread::spawn(f));
    }
    fn track(&self, s: &TcpStream) {
        if let Ok(c) = s.try_clone() {
            self.streams.lock().unwrap().push(c);
        }
    }
    fn stop(&self, addr: SocketAddr, accept: Option<JoinHandle<()>>) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        if let Some(a) = accept {
            let _ = a.join();
        }
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let handles: Vec<_> = self.handles.lock().unwrap().drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tap
// ---------------------------------------------------------------------------------------

/// What the proxy sent on one upstream connection.
#[derive(Default)]
struct Recording {
    bytes: Vec<u8>,
    /// The proxy closed (or half-closed) its side.
    closed: bool,
}

/// What the proxy sent on one upstream connection.
#[derive(Clone, Debug)]
pub struct Sent {
    pub bytes: Vec<u8>,
    /// The proxy has closed the connection: a truncated last request was abandoned, not
    /// left for the next one to complete.
    pub closed: bool,
}

/// A recording TCP relay: listens on 127.0.0.1:`port`, forwards to `target`.
pub struct Tap {
    addr: SocketAddr,
    /// One recording per upstream connection, in accept order.
    sent: Arc<Mutex<Vec<Arc<Mutex<Recording>>>>>,
    threads: Arc<Threads>,
    accept: Option<JoinHandle<()>>,
}

impl Tap {
    pub fn start_on(port: u16, target: SocketAddr) -> Tap {
        let listener = bind_retry(port);
        let addr = listener.local_addr().unwrap();
        let sent: Arc<Mutex<Vec<Arc<Mutex<Recording>>>>> = Arc::default();
        let threads = Arc::new(Threads::default());
        let (s, t) = (sent.clone(), threads.clone());
        let accept = thread::spawn(move || {
            for down in listener.incoming() {
                if t.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(down) = down else { continue };
                let Ok(up) = TcpStream::connect_timeout(&target, IO_TIMEOUT) else {
                    continue;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                t.track(&down);
                t.track(&up);
                let record = Arc::new(Mutex::new(Recording::default()));
                s.lock().unwrap().push(record.clone());
                let (d2, u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                t.spawn(move || pump(down, up, Some(record)));
                t.spawn(move || pump(u2, d2, None));
            }
        });
        Tap {
            addr,
            sent,
            threads,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the proxy sent upstream, per connection.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let r = r.lock().unwrap();
                Sent {
                    bytes: r.bytes.clone(),
                    closed: r.closed,
                }
            })
            .collect()
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, record: Option<Arc<Mutex<Recording>>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(r) = &record {
                    r.lock().unwrap().bytes.extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    if let Some(r) = &record {
        r.lock().unwrap().closed = true;
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.threads.stop(self.addr, self.accept.take());
    }
}

// ---------------------------------------------------------------------------------------
// Strict request-stream parser
// ---------------------------------------------------------------------------------------

/// One request as a strict HTTP/1.1 recipient reads it off the wire.
#[derive(Clone, Debug, Default)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    /// Header lines in wire order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Decoded body.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, Vec<u8>)>,
    /// False for a last request whose body (or trailers) the stream ends inside of.
    pub complete: bool,
}

impl RawRequest {
    /// Every value of a header (case-insensitive name), lossy UTF-8.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// Why a stream is not a clean sequence of requests.
#[derive(Debug)]
pub enum WireError {
    /// Two recipients could read these bytes differently.
    Ambiguous(String),
    /// The stream ends inside a request head (no request to speak of).
    TruncatedHead(usize),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Ambiguous(m) => write!(f, "{m}"),
            WireError::TruncatedHead(at) => write!(f, "stream ends inside a head at byte {at}"),
        }
    }
}

impl From<String> for WireError {
    fn from(m: String) -> Self {
        WireError::Ambiguous(m)
    }
}

/// The stream ended inside a body: not an ambiguity by itself.
struct Truncated;

fn line_end(buf: &[u8], from: usize) -> Result<Result<usize, Truncated>, String> {
    let Some(pos) = buf[from..]
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| from + p)
    else {
        return Ok(Err(Truncated));
    };
    if pos == from || buf[pos - 1] != b'\r' {
        return Err(format!("bare LF at byte {pos}"));
    }
    Ok(Ok(pos - 1))
}

/// Splits a proxy→upstream byte stream into requests, the way a strict recipient must:
/// CRLF line endings only, no bare CR, no obsolete line folding, no whitespace in or before
/// a header name, at most one `Content-Length` (digits only), never both `Content-Length` and
/// `Transfer-Encoding`, `Transfer-Encoding` only `chunked`, strict chunk framing, and nothing
/// left over. Err names the first ambiguity: a CSE could read such a stream differently from
/// the proxy. A stream that ends inside a body gives a last request with `complete: false`;
/// one that ends inside a head gives `WireError::TruncatedHead`.
pub fn parse_requests(stream: &[u8]) -> Result<Vec<RawRequest>, WireError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let start = pos;
        let head_end = head_len(&stream[pos..])
            .map(|n| pos + n)
            .ok_or(WireError::TruncatedHead(pos))?;
        let head = &stream[pos..head_end];
        for (i, b) in head.iter().enumerate() {
            if *b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
                return Err(WireError::Ambiguous(format!(
                    "bare LF in head at byte {}",
                    start + i
                )));
            }
            if *b == b'\r' && head.get(i + 1) != Some(&b'\n') {
                return Err(WireError::Ambiguous(format!(
                    "bare CR in head at byte {}",
                    start + i
                )));
            }
            if *b == 0 {
                return Err(WireError::Ambiguous(format!(
                    "NUL in head at byte {}",
                    start + i
                )));
            }
        }
        let mut lines = head[..head.len() - 4].split(|b| *b == b'\n');
        let request_line = lines.next().unwrap_or_default();
        let request_line =
            String::from_utf8_lossy(request_line.strip_suffix(b"\r").unwrap_or(request_line));
        let parts: Vec<&str> = request_line.split(' ').collect();
        if parts.len() != 3 || (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
            return Err(WireError::Ambiguous(format!(
                "bad request line {request_line:?}"
            )));
        }
        let mut req = RawRequest {
            method: parts[0].to_string(),
            path: parts[1].to_string(),
            complete: true,
            ..Default::default()
        };
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                return Err(WireError::Ambiguous(format!(
                    "obsolete line folding: {:?}",
                    String::from_utf8_lossy(line)
                )));
            }
            let colon = line.iter().position(|b| *b == b':').ok_or_else(|| {
                format!(
                    "header line without colon: {:?}",
                    String::from_utf8_lossy(line)
                )
            })?;
            let name = &line[..colon];
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                return Err(WireError::Ambiguous(format!(
                    "bad header name {:?}",
                    String::from_utf8_lossy(name)
                )));
            }
            let value = line[colon + 1..].trim_ascii();
            req.headers
                .push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
        }
        pos = head_end;
        let cls = req.values("content-length");
        let tes = req.values("transfer-encoding");
        if !tes.is_empty() {
            if !cls.is_empty() {
                return Err(WireError::Ambiguous(format!(
                    "{} {}: Content-Length and Transfer-Encoding",
                    req.method, req.path
                )));
            }
            if tes.len() != 1 || !tes[0].eq_ignore_ascii_case("chunked") {
                return Err(WireError::Ambiguous(format!(
                    "{} {}: Transfer-Encoding {tes:?}",
                    req.method, req.path
                )));
            }
            'chunks: loop {
                let Ok(end) = line_end(stream, pos)? else {
                    req.complete = false;
                    break;
                };
                let size_line = String::from_utf8_lossy(&stream[pos..end]).into_owned();
                let size_hex = size_line.split(';').next().unwrap_or("");
                if size_hex.is_empty() || !size_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(WireError::Ambiguous(format!(
                        "bad chunk size line {size_line:?}"
                    )));
                }
                let size = usize::from_str_radix(size_hex, 16)
                    .map_err(|e| format!("chunk size {size_hex:?}: {e}"))?;
                pos = end + 2;
                if size == 0 {
                    loop {
                        let Ok(end) = line_end(stream, pos)? else {
                            req.complete = false;
                            break 'chunks;
                        };
                        let line = &stream[pos..end];
                        pos = end + 2;
                        if line.is_empty() {
                            break;
                        }
                        let colon = line.iter().position(|b| *b == b':').unwrap_or(line.len());
                        req.trailers.push((
                            String::from_utf8_lossy(&line[..colon]).into_owned(),
                            line.get(colon + 1..)
                                .unwrap_or_default()
                                .trim_ascii()
                                .to_vec(),
                        ));
                    }
                    break;
                }
                if stream.len() < pos + size + 2 || &stream[pos + size..pos + size + 2] != b"\r\n" {
                    return Err(WireError::Ambiguous(format!(
                        "chunk of {size} bytes not followed by CRLF at byte {pos}"
                    )));
                }
                req.body.extend_from_slice(&stream[pos..pos + size]);
                pos += size + 2;
            }
        } else if !cls.is_empty() {
            if cls.len() != 1 || cls[0].is_empty() || !cls[0].bytes().all(|b| b.is_ascii_digit()) {
                return Err(WireError::Ambiguous(format!(
                    "{} {}: Content-Length {cls:?}",
                    req.method, req.path
                )));
            }
            let n: usize = cls[0].parse().map_err(|e| format!("Content-Length: {e}"))?;
            if stream.len() < pos + n {
                req.body = stream[pos..].to_vec();
                req.complete = false;
                pos = stream.len();
            } else {
                req.body = stream[pos..pos + n].to_vec();
                pos += n;
            }
        }
        let complete = req.complete;
        out.push(req);
        if !complete {
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Faulty upstream
// ---------------------------------------------------------------------------------------

/// How a [`FaultyUpstream`] answers each request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Reads the request head, then resets the connection (RST) without answering.
    ResetBeforeResponse,
    /// Sends a response head promising 1000 body bytes and 10 of them, then resets.
    ResetMidResponse,
    /// Answers with these bytes (not HTTP), then closes.
    Garbage(Vec<u8>),
    /// Closes the connection cleanly (FIN) without answering.
    CloseWithoutResponse,
    /// Accepts any `Upgrade` with `101 Switching Protocols` (echoing the protocol), then
    /// records every byte that follows (see `FaultyUpstream::tunneled`).
    SwitchProtocols,
}

/// An upstream that fails every request the same way.
pub struct FaultyUpstream {
    addr: SocketAddr,
    heads: Arc<AtomicUsize>,
    tunneled: Arc<Mutex<Vec<u8>>>,
    threads: Arc<Threads>,
    accept: Option<JoinHandle<()>>,
}

extern "C" {
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
}

/// SO_LINGER 0: the next close sends RST instead of FIN (Linux values).
fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        onoff: i32,
        linger: i32,
    }
    let l = Linger {
        onoff: 1,
        linger: 0,
    };
    // SAFETY: valid descriptor and a properly sized struct for the duration of the call.
    unsafe {
        setsockopt(
            s.as_raw_fd(),
            1,  /* SOL_SOCKET */
            13, /* SO_LINGER */
            &l as *const Linger as *const std::ffi::c_void,
            std::mem::size_of::<Linger>() as u32,
        );
    }
}

impl FaultyUpstream {
    pub fn start_on(port: u16, fault: Fault) -> FaultyUpstream {
        let listener = bind_retry(port);
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(AtomicUsize::new(0));
        let tunneled: Arc<Mutex<Vec<u8>>> = Arc::default();
        let threads = Arc::new(Threads::default());
        let (h, t, tun) = (heads.clone(), threads.clone(), tunneled.clone());
        let accept = thread::spawn(move || {
            for s in listener.incoming() {
                if t.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                // not tracked: the connection must really close (FIN or RST) when the
                // handler drops it; the short timeout bounds a silent peer instead
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let (h, fault, tun) = (h.clone(), fault.clone(), tun.clone());
                t.spawn(move || serve_fault(s, &h, &fault, &tun));
            }
        });
        FaultyUpstream {
            addr,
            heads,
            tunneled,
            threads,
            accept: Some(accept),
        }
    }

    /// Request heads received so far.
    pub fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    /// Bytes received after a `101` (`Fault::SwitchProtocols`), all connections together.
    pub fn tunneled(&self) -> Vec<u8> {
        self.tunneled.lock().unwrap().clone()
    }
}

fn serve_fault(s: TcpStream, heads: &AtomicUsize, fault: &Fault, tunneled: &Mutex<Vec<u8>>) {
    // Bytes after the head stay in `wire.buf` (the start of a tunnel after a 101).
    let mut wire = Wire::new(s);
    let Ok(Some(head)) = wire.read_head() else {
        return;
    };
    let s = &mut wire.stream;
    heads.fetch_add(1, Ordering::SeqCst);
    match fault {
        Fault::ResetBeforeResponse => set_linger_zero(s),
        Fault::ResetMidResponse => {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"partial\"",
            );
            let _ = s.flush();
            thread::sleep(Duration::from_millis(100));
            set_linger_zero(s);
        }
        Fault::Garbage(bytes) => {
            let _ = s.write_all(bytes);
            let _ = s.flush();
            thread::sleep(Duration::from_millis(100));
        }
        Fault::CloseWithoutResponse => {
            let _ = s.shutdown(Shutdown::Both);
        }
        Fault::SwitchProtocols => {
            let protocol = String::from_utf8_lossy(&head)
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("upgrade")
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_else(|| "none".into());
            tunneled.lock().unwrap().append(&mut wire.buf);
            let _ = s.write_all(
                format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n")
                    .as_bytes(),
            );
            let mut tmp = [0u8; 4096];
            loop {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => tunneled.lock().unwrap().extend_from_slice(&tmp[..n]),
                }
            }
        }
    }
    // dropped here: RST when SO_LINGER is 0, FIN otherwise
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.threads.stop(self.addr, self.accept.take());
    }
}

// ---------------------------------------------------------------------------------------
// Scripted upstream
// ---------------------------------------------------------------------------------------

/// One request as a [`ScriptedUpstream`] read it; the script decides on it from the head.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Upstream connection (1, 2, ... in accept order) and request number on it (1, 2, ...).
    pub conn: usize,
    pub nth: usize,
    pub method: String,
    pub path: String,
    /// In wire order, names as received.
    pub headers: Vec<(String, String)>,
    /// The decoded body, if the reply had it read.
    pub body: Option<Vec<u8>>,
}

impl Seen {
    /// Every value of a header (case-insensitive name), in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What a [`ScriptedUpstream`] does with the connection after a reply.
#[derive(Clone, Copy, Debug)]
pub enum Then {
    /// Waits for the next request on it.
    Keep,
    /// Waits this long without reading, then half-closes (FIN), drops what still arrives (for
    /// up to 2 s) and closes: a server's lingering close.
    Close(Duration),
    /// Waits this long without reading, then resets (RST).
    Reset(Duration),
}

/// A script's answer to one request head.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Read the request body (Content-Length or chunked) before answering; an
    /// `Expect: 100-continue` then gets `100 Continue` first. Otherwise the body is left unread.
    pub read_body: bool,
    /// Written as they are; empty: no answer at all.
    pub bytes: Vec<u8>,
    pub then: Then,
}

impl Reply {
    /// Reads the body, answers `bytes`, keeps the connection.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            read_body: true,
            bytes: bytes.into(),
            then: Then::Keep,
        }
    }
    /// Answers without reading the body.
    pub fn before_body(mut self) -> Reply {
        self.read_body = false;
        self
    }
    pub fn then(mut self, then: Then) -> Reply {
        self.then = then;
        self
    }
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

#[derive(Default)]
struct ScriptState {
    seen: Vec<Seen>,
    /// Connections the upstream closed or reset (`Then::Close` / `Then::Reset`), in order.
    ended: Vec<usize>,
}

struct ScriptShared {
    state: Mutex<ScriptState>,
    changed: Condvar,
    accepted: AtomicUsize,
    threads: Threads,
}

impl ScriptShared {
    fn stopping(&self) -> bool {
        self.threads.stopping.load(Ordering::SeqCst)
    }
    fn update(&self, f: impl FnOnce(&mut ScriptState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }
    /// Sleeps `d`, returning early when the upstream stops.
    fn pause(&self, d: Duration) {
        let guard = self.state.lock().unwrap();
        let _ = self
            .changed
            .wait_timeout_while(guard, d, |_| !self.stopping());
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 driven by a script: it reads each request head with
/// [`Wire`], records it, asks the script for a [`Reply`] and does what that says. Connections
/// are not tracked, so that `Close` and `Reset` really end them; idle ones notice a stop
/// within 200 ms. `Drop` stops it and joins every thread.
pub struct ScriptedUpstream {
    addr: SocketAddr,
    shared: Arc<ScriptShared>,
    accept: Option<JoinHandle<()>>,
}

/// How often a connection waiting for its next request checks for a stop.
const SCRIPT_POLL: Duration = Duration::from_millis(200);

impl ScriptedUpstream {
    /// Listens on 127.0.0.1:`port` (e.g. the port of the scenario's stopped echo upstream).
    pub fn start_on(
        port: u16,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> ScriptedUpstream {
        let listener = bind_retry(port);
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ScriptShared {
            state: Mutex::default(),
            changed: Condvar::new(),
            accepted: AtomicUsize::new(0),
            threads: Threads::default(),
        });
        let script: Arc<Script> = Arc::new(script);
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            for s in listener.incoming() {
                if sh.stopping() {
                    break;
                }
                let Ok(s) = s else { continue };
                let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                let _ = s.set_nodelay(true);
                let conn = sh.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let (sh2, script) = (sh.clone(), script.clone());
                sh.threads
                    .spawn(move || serve_script(s, conn, &sh2, script.as_ref()));
            }
        });
        ScriptedUpstream {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Every request read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }
    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
    /// Connections this upstream has closed or reset, in order.
    pub fn ended(&self) -> Vec<usize> {
        self.shared.state.lock().unwrap().ended.clone()
    }
    /// Waits until at least `n` requests were read; false on timeout.
    pub fn wait_seen(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.seen.len() >= n)
    }
    /// Waits until at least `n` connections were ended by the upstream; false on timeout.
    pub fn wait_ended(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.ended.len() >= n)
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&ScriptState) -> bool) -> bool {
        let guard = self.shared.state.lock().unwrap();
        let (guard, _) = self
            .shared
            .changed
            .wait_timeout_while(guard, timeout, |s| !done(s))
            .unwrap();
        done(&guard)
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.shared.threads.stopping.store(true, Ordering::SeqCst);
        self.shared.update(|_| {}); // wakes connections pausing before a close
        self.shared.threads.stop(self.addr, self.accept.take());
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn serve_script(s: TcpStream, conn: usize, shared: &ScriptShared, script: &Script) {
    let mut wire = Wire::new(s);
    for nth in 1.. {
        // idle between requests: poll so that a stop is noticed
        let _ = wire.stream.set_read_timeout(Some(SCRIPT_POLL));
        let idle = Instant::now();
        while wire.buf.is_empty() {
            if shared.stopping() || idle.elapsed() > 6 * IO_TIMEOUT {
                return;
            }
            match wire.fill() {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
        let _ = wire.stream.set_read_timeout(Some(IO_TIMEOUT));
        let Ok(Some(head)) = wire.read_head() else {
            return;
        };
        let mut hbuf = vec![httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut hbuf);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let mut seen = Seen {
            conn,
            nth,
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("").to_string(),
            headers: header_pairs(req.headers),
            body: None,
        };
        let reply = script(&seen);
        if reply.read_body {
            let expects = seen
                .values("expect")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("100-continue"));
            if expects
                && wire
                    .stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .is_err()
            {
                return;
            }
            let body = if is_chunked(&seen.headers) {
                wire.read_chunked()
            } else {
                match content_length(&seen.headers) {
                    Ok(Some(n)) => wire.take(n),
                    Ok(None) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            };
            let Ok(body) = body else { return };
            seen.body = Some(body);
        }
        shared.update(|st| st.seen.push(seen));
        if !reply.bytes.is_empty() && wire.stream.write_all(&reply.bytes).is_err() {
            return;
        }
        match reply.then {
            Then::Keep => continue,
            Then::Close(d) => {
                shared.pause(d);
                let _ = wire.stream.shutdown(Shutdown::Write);
                shared.update(|st| st.ended.push(conn));
                let _ = wire.stream.set_read_timeout(Some(SCRIPT_POLL));
                let until = Instant::now() + Duration::from_secs(2);
                let mut sink = [0u8; 16 * 1024];
                while Instant::now() < until && !shared.stopping() {
                    match wire.stream.read(&mut sink) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => break,
                    }
                }
                return;
            }
            Then::Reset(d) => {
                shared.pause(d);
                set_linger_zero(&wire.stream);
                drop(wire); // RST
                shared.update(|st| st.ended.push(conn));
                return;
            }
        }
    }
}
