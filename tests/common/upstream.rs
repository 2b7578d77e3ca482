//! A recording HTTP/1.1 echo upstream on 127.0.0.1, standing in for the CSE.
//!
//! Every request is recorded (method, path, headers in wire order with names as received,
//! decoded body) *before* its response is sent, then answered with
//! `200 application/json {"method","path","origin","headers","body_len"}` plus
//! `X-M2M-RSC: 2000` and the request's `X-M2M-RI` echoed. Keep-alive, Content-Length and
//! chunked request bodies, `Expect: 100-continue`, and WebSocket upgrades (echo of every
//! complete message) are supported. One thread per connection; `stop()` or `Drop` closes
//! the listener and every live connection and joins all threads.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::client::{ws_accept, ws_frame, WS_BINARY, WS_CLOSE, WS_CONT, WS_PING, WS_PONG, WS_TEXT};
use super::http1::{content_length, header_pairs, is_chunked, Wire};
use super::IO_TIMEOUT;

/// How long an idle keep-alive (or WebSocket) connection is kept open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One request as the upstream received it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// In wire order, names as received, values as (lossy) UTF-8.
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunked framing removed).
    pub body: Vec<u8>,
    /// HTTP minor version (1 for HTTP/1.1).
    pub version: u8,
    /// Which upstream TCP connection carried it (1, 2, ... in accept order).
    pub conn_id: u64,
}

impl Recorded {
    /// Every value of a header (case-insensitive name), in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        header_values(self, name)
    }
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every value of header `name` (case-insensitive) in `r`, in wire order.
pub fn header_values(r: &Recorded, name: &str) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

struct Conn {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    recorded: Condvar,
    ws_messages: Mutex<Vec<(u8, Vec<u8>)>>,
    /// Payloads of the Close frames received (answered with the same payload).
    ws_closes: Mutex<Vec<Vec<u8>>>,
    delay: Mutex<Duration>,
    status: AtomicU16,
    /// A fixed response (content type, body) instead of the echo.
    canned: Mutex<Option<(String, Vec<u8>)>>,
    /// `Some`: AE registrations get resource IDs as a CSE gives them (see `assign_ae_ids`):
    /// resource ID -> the originator that registered it.
    ae_ids: Mutex<Option<HashMap<String, String>>>,
    stopping: AtomicBool,
    stop_lock: Mutex<bool>,
    stop_cv: Condvar,
    conns: Mutex<HashMap<u64, Conn>>,
    accepted: AtomicU64,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Waits `d`, returning early when the upstream stops.
    fn pause(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let guard = self.stop_lock.lock().unwrap();
        let _ = self
            .stop_cv
            .wait_timeout_while(guard, d, |stopped| !*stopped);
    }
}

/// The echo upstream. Dropping it stops it.
pub struct EchoUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    /// Listens on 127.0.0.1 on a free port.
    pub fn start() -> EchoUpstream {
        Self::start_on(0)
    }

    /// Listens on 127.0.0.1:`port` (e.g. the port of a stopped upstream), retrying for up to
    /// 5 s while the port is still in use.
    pub fn start_on(port: u16) -> EchoUpstream {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("echo upstream: bind 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            recorded: Condvar::new(),
            ws_messages: Mutex::new(Vec::new()),
            ws_closes: Mutex::new(Vec::new()),
            delay: Mutex::new(Duration::ZERO),
            status: AtomicU16::new(200),
            canned: Mutex::new(None),
            ae_ids: Mutex::new(None),
            stopping: AtomicBool::new(false),
            stop_lock: Mutex::new(false),
            stop_cv: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            accepted: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name(format!("echo-upstream-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))
            .unwrap();
        EchoUpstream {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// "http://127.0.0.1:PORT", for the proxy config.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
    pub fn last(&self) -> Option<Recorded> {
        self.shared.requests.lock().unwrap().last().cloned()
    }
    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }
    /// Forgets the recorded requests and WebSocket messages.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
        self.shared.ws_messages.lock().unwrap().clear();
    }
    /// Waits until at least `n` requests are recorded; false on timeout.
    pub fn wait_count(&self, n: usize, timeout: Duration) -> bool {
        let guard = self.shared.requests.lock().unwrap();
        let (guard, _) = self
            .shared
            .recorded
            .wait_timeout_while(guard, timeout, |r| r.len() < n)
            .unwrap();
        guard.len() >= n
    }
    /// Complete WebSocket messages received (opcode, payload), in order.
    pub fn ws_messages(&self) -> Vec<(u8, Vec<u8>)> {
        self.shared.ws_messages.lock().unwrap().clone()
    }

    /// Payloads of the WebSocket Close frames received (status code first).
    pub fn ws_closes(&self) -> Vec<Vec<u8>> {
        self.shared.ws_closes.lock().unwrap().clone()
    }
    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
    /// Connections currently open.
    pub fn live_connections(&self) -> usize {
        self.shared
            .conns
            .lock()
            .unwrap()
            .values()
            .filter(|c| !c.thread.is_finished())
            .count()
    }

    /// Delays every later response by `d` (the request is recorded before the delay).
    pub fn set_delay(&self, d: Duration) {
        *self.shared.delay.lock().unwrap() = d;
    }
    /// Answer every later request with this content type and body instead of the echo (the
    /// request is still recorded); `None` goes back to the echo.
    pub fn set_response(&self, canned: Option<(&str, &[u8])>) {
        *self.shared.canned.lock().unwrap() = canned.map(|(t, b)| (t.to_string(), b.to_vec()));
    }
    /// From now on, answer AE registrations (POST with `ty=2` in Content-Type) as ACME does
    /// (../shared/notes/onem2m-mcc.md): the new AE's resource ID is the last segment of its
    /// `X-M2M-Origin`, in one flat space; a taken ID is 409 / RSC 4105, a new one 201 / 2001
    /// with `{"m2m:ae": {"ri", "aei"}}`.
    pub fn assign_ae_ids(&self) {
        *self.shared.ae_ids.lock().unwrap() = Some(HashMap::new());
    }
    /// The resource IDs registered so far, with the originator that took each.
    pub fn ae_ids(&self) -> HashMap<String, String> {
        self.shared
            .ae_ids
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }

    /// Status of every later response (default 200).
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Closes the listener (the port then refuses connections) and every live connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        *self.shared.stop_lock.lock().unwrap() = true;
        self.shared.stop_cv.notify_all();
        // Wake the blocking accept(); the loop sees `stopping` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
        let conns: Vec<Conn> = self
            .shared
            .conns
            .lock()
            .unwrap()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in &conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        for c in conns {
            let _ = c.thread.join();
        }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let s = shared.clone();
        let thread = thread::Builder::new()
            .name(format!("echo-conn-{id}"))
            .spawn(move || serve(stream, id, &s))
            .unwrap();
        let mut conns = shared.conns.lock().unwrap();
        // Reap finished connections so the table stays small.
        let done: Vec<u64> = conns
            .iter()
            .filter(|(_, c)| c.thread.is_finished())
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            if let Some(c) = conns.remove(&k) {
                let _ = c.thread.join();
            }
        }
        conns.insert(
            id,
            Conn {
                stream: clone,
                thread,
            },
        );
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Waits for the first byte of the next message; false when the connection should end
/// (closed, stopping, or idle longer than `IDLE_TIMEOUT`).
fn wait_data(wire: &mut Wire<TcpStream>, shared: &Shared) -> bool {
    let start = Instant::now();
    while wire.buf.is_empty() {
        if shared.stopping() {
            return false;
        }
        match wire.fill() {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if is_timeout(&e) && start.elapsed() < IDLE_TIMEOUT => {}
            Err(_) => return false,
        }
    }
    true
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        409 => "Conflict",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn serve(stream: TcpStream, conn_id: u64, shared: &Shared) {
    let mut wire = Wire::new(stream);
    while wait_data(&mut wire, shared) {
        let Ok(Some(head)) = wire.read_head() else {
            return;
        };
        let mut hbuf = vec![httparse::EMPTY_HEADER; 512];
        let mut req = httparse::Request::new(&mut hbuf);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            let _ = wire.stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        let mut rec = Recorded {
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("").to_string(),
            headers: header_pairs(req.headers),
            body: Vec::new(),
            version: req.version.unwrap_or(1),
            conn_id,
        };
        if has_token(&rec.headers, "expect", "100-continue")
            && wire
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .is_err()
        {
            return;
        }
        let body = if is_chunked(&rec.headers) {
            wire.read_chunked()
        } else {
            match content_length(&rec.headers) {
                Ok(Some(n)) => wire.take(n),
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        };
        let Ok(body) = body else {
            let _ = wire.stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        };
        rec.body = body;

        let ws_key = (has_token(&rec.headers, "upgrade", "websocket"))
            .then(|| rec.header("sec-websocket-key").map(str::to_string))
            .flatten();
        let close = has_token(&rec.headers, "connection", "close")
            || (rec.version == 0 && !has_token(&rec.headers, "connection", "keep-alive"));
        let protocol = rec
            .header("sec-websocket-protocol")
            .and_then(|p| p.split(',').next())
            .map(|p| p.trim().to_string());
        let ri = rec.header("x-m2m-ri").map(str::to_string);
        let origins = rec.header_values("x-m2m-origin");
        let json = serde_json::json!({
            "method": rec.method,
            "path": rec.path,
            "origin": if origins.len() == 1 { serde_json::Value::from(origins[0].clone()) } else { serde_json::Value::Null },
            "headers": rec.headers.iter().map(|(n, v)| vec![n.clone(), v.clone()]).collect::<Vec<_>>(),
            "body_len": rec.body.len(),
        });
        let head_only = rec.method.eq_ignore_ascii_case("HEAD");
        {
            let mut reqs = shared.requests.lock().unwrap();
            reqs.push(rec);
            shared.recorded.notify_all();
        }
        let delay = *shared.delay.lock().unwrap();
        shared.pause(delay);
        if shared.stopping() {
            return;
        }

        if let Some(key) = ws_key {
            let mut resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                ws_accept(&key)
            );
            if let Some(p) = protocol {
                resp.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
            }
            if let Some(ri) = &ri {
                resp.push_str(&format!("X-M2M-RI: {ri}\r\n"));
            }
            resp.push_str("\r\n");
            if wire.stream.write_all(resp.as_bytes()).is_ok() {
                ws_echo(&mut wire, shared);
            }
            let _ = wire.stream.shutdown(Shutdown::Both);
            return;
        }

        let mut status = shared.status.load(Ordering::SeqCst);
        let mut canned = shared.canned.lock().unwrap().clone();
        let mut rsc = "2000".to_string();
        if let Some((code, answer, answer_rsc)) = register_ae(shared, &json) {
            (status, canned, rsc) = (code, Some(("application/json".into(), answer)), answer_rsc);
        }
        let (content_type, body) = match canned {
            _ if matches!(status, 204 | 304) || status < 200 => {
                ("application/json".into(), Vec::new())
            }
            Some((content_type, body)) => (content_type, body),
            None => (
                "application/json".into(),
                serde_json::to_vec(&json).unwrap(),
            ),
        };
        let mut resp = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        resp.push_str(&format!("Content-Type: {content_type}\r\n"));
        if !body.is_empty() {
            resp.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else if !matches!(status, 204 | 304) {
            resp.push_str("Content-Length: 0\r\n");
        }
        resp.push_str(&format!("X-M2M-RSC: {rsc}\r\n"));
        if let Some(ri) = &ri {
            resp.push_str(&format!("X-M2M-RI: {ri}\r\n"));
        }
        if close {
            resp.push_str("Connection: close\r\n");
        }
        resp.push_str("\r\n");
        let mut out = resp.into_bytes();
        if !head_only {
            out.extend(body);
        }
        if wire.stream.write_all(&out).is_err() || close {
            let _ = wire.stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// An AE registration in `assign_ae_ids` mode: (status, body, rsc), or `None` for any other
/// request or mode.
fn register_ae(shared: &Shared, req: &serde_json::Value) -> Option<(u16, Vec<u8>, String)> {
    let mut ids = shared.ae_ids.lock().unwrap();
    let ids = ids.as_mut()?;
    let headers = req["headers"].as_array()?;
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            (h[0].as_str()?.eq_ignore_ascii_case(name))
                .then(|| h[1].as_str().map(str::to_string))?
        })
    };
    let is_ae = req["method"] == "POST"
        && header("content-type").is_some_and(|ct| ct.replace(' ', "").contains(";ty=2"));
    if !is_ae {
        return None;
    }
    let origin = header("x-m2m-origin").unwrap_or_default();
    let ri = origin.rsplit('/').next().unwrap_or_default().to_string();
    if ids.contains_key(&ri) {
        let body = serde_json::json!({"m2m:dbg": format!("resource with ID {ri} already exists")});
        return Some((409, body.to_string().into_bytes(), "4105".into()));
    }
    ids.insert(ri.clone(), origin.clone());
    let body = serde_json::json!({"m2m:ae": {"ri": ri, "aei": origin}});
    Some((201, body.to_string().into_bytes(), "2001".into()))
}

/// Echoes WebSocket messages until close, error, idle timeout or stop.
fn ws_echo(wire: &mut Wire<TcpStream>, shared: &Shared) {
    let mut partial: Option<(u8, Vec<u8>)> = None;
    while wait_data(wire, shared) {
        let Ok(f) = wire.read_frame() else { return };
        if !f.masked {
            // Client frames must be masked (RFC 6455 5.1): close with 1002 protocol error.
            let _ = wire
                .stream
                .write_all(&ws_frame(WS_CLOSE, &1002u16.to_be_bytes(), true, None));
            return;
        }
        let reply = match f.opcode {
            WS_PING => Some((WS_PONG, f.payload)),
            WS_PONG => None,
            WS_CLOSE => {
                shared.ws_closes.lock().unwrap().push(f.payload.clone());
                let _ = wire
                    .stream
                    .write_all(&ws_frame(WS_CLOSE, &f.payload, true, None));
                return;
            }
            WS_TEXT | WS_BINARY if f.fin => Some((f.opcode, f.payload)),
            WS_TEXT | WS_BINARY => {
                partial = Some((f.opcode, f.payload));
                None
            }
            WS_CONT => match partial.as_mut() {
                Some((_, buf)) => {
                    buf.extend(f.payload);
                    if f.fin {
                        partial.take()
                    } else {
                        None
                    }
                }
                None => return,
            },
            _ => return,
        };
        if let Some((opcode, payload)) = reply {
            if opcode != WS_PONG {
                shared
                    .ws_messages
                    .lock()
                    .unwrap()
                    .push((opcode, payload.clone()));
            }
            if wire
                .stream
                .write_all(&ws_frame(opcode, &payload, true, None))
                .is_err()
            {
                return;
            }
        }
    }
}
