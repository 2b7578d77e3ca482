//! A blocking HTTP/1.1 client over TLS (openssl) or plain TCP, written for tests: requests
//! go on the wire exactly as given (header order, duplicates and letter case kept), responses
//! are read with Content-Length, chunked or close-delimited bodies, and one `Conn` carries
//! any number of keep-alive requests. After a `101 Switching Protocols` the same `Conn`
//! speaks WebSocket frames (`ws_send` / `ws_recv`).
//!
//! ```ignore
//! let mut conn = ClientTls::new(&ca.cert).cert(&client).connect(proxy_addr)?;
//! let resp = conn.request(&Request::get("/cse").header("X-M2M-RI", "r1"))?;
//! assert_eq!(resp.status, 200);
//! ```
//!
//! With TLS 1.3 a server that refuses the client certificate does so after the client's
//! handshake has completed, so `connect` may succeed and the refusal (an alert, or the
//! connection closed) shows up as `Err` from the first `request` / `read_response`. Tests
//! that assert a refusal should accept either (see `ClientTls::connect_and_request`), or
//! force TLS 1.2 with `max_tls12()`, where `connect` itself fails.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use openssl::ssl::{
    HandshakeError, SslConnector, SslFiletype, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509VerifyResult, X509};

use super::http1::{bad, content_length, eof, is_chunked, parse_response_head, Frame, Wire};
use super::pki::CertKey;
use super::IO_TIMEOUT;

/// WebSocket opcodes.
pub const WS_CONT: u8 = 0x0;
pub const WS_TEXT: u8 = 0x1;
pub const WS_BINARY: u8 = 0x2;
pub const WS_CLOSE: u8 = 0x8;
pub const WS_PING: u8 = 0x9;
pub const WS_PONG: u8 = 0xA;

// ---------------------------------------------------------------------------------------
// Request / Response
// ---------------------------------------------------------------------------------------

/// An HTTP/1.1 request, written exactly as given.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// In wire order, names as given (duplicates allowed).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            ..Default::default()
        }
    }
    pub fn get(path: &str) -> Request {
        Self::new("GET", path)
    }
    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> Request {
        Self::new("POST", path).body(body)
    }
    /// Appends a header (does not replace one of the same name).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }
    /// A chunked body: sets `Transfer-Encoding: chunked` and encodes `parts` as chunks.
    pub fn chunked(self, parts: &[&[u8]]) -> Request {
        self.header("Transfer-Encoding", "chunked")
            .body(chunked_body(parts))
    }
    /// A WebSocket upgrade (random `Sec-WebSocket-Key`; `protocols` offered in order, if any).
    pub fn websocket(path: &str, protocols: &[&str]) -> Request {
        let mut key = [0u8; 16];
        openssl::rand::rand_bytes(&mut key).unwrap();
        let mut r = Self::get(path)
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header(
                "Sec-WebSocket-Key",
                &base64::engine::general_purpose::STANDARD.encode(key),
            )
            .header("Sec-WebSocket-Version", "13");
        if !protocols.is_empty() {
            r = r.header("Sec-WebSocket-Protocol", &protocols.join(", "));
        }
        r
    }
    /// First value of a header (case-insensitive name).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The bytes sent: `Host: <host>` added if absent, `Content-Length` added when the body is
    /// non-empty and neither Content-Length nor Transfer-Encoding is given.
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let has = |n: &str| self.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        if !has("host") {
            out.extend(format!("Host: {host}\r\n").as_bytes());
        }
        for (n, v) in &self.headers {
            out.extend(n.as_bytes());
            out.extend(b": ");
            out.extend(v.as_bytes());
            out.extend(b"\r\n");
        }
        if !self.body.is_empty() && !has("content-length") && !has("transfer-encoding") {
            out.extend(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend(b"\r\n");
        out.extend(&self.body);
        out
    }
}

/// Encodes `parts` as a chunked body (empty parts are skipped; ends with the last chunk).
pub fn chunked_body(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts.iter().filter(|p| !p.is_empty()) {
        out.extend(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend(*p);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    out
}

/// An HTTP response.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In wire order, names as received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of a header (case-insensitive name), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The body as JSON; panics (showing the response) if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {} {:?} {}",
                self.status,
                self.headers,
                self.text()
            )
        })
    }
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Encodes one WebSocket frame, masked with `mask` if given.
pub fn ws_frame(opcode: u8, payload: &[u8], fin: bool, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | (opcode & 0x0F)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend(k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn ws_accept(key: &str) -> String {
    let digest =
        openssl::sha::sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

// ---------------------------------------------------------------------------------------
// Stream and Conn
// ---------------------------------------------------------------------------------------

/// TLS or plain TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A TCP connection to 127.0.0.1-style `addr` with the kit's timeouts and TCP_NODELAY.
pub fn tcp_connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    Ok(s)
}

/// `tcp_connect` from `source` (another loopback address, e.g. 127.0.0.3, to stand for a
/// balancer).
pub fn tcp_connect_from(source: std::net::IpAddr, addr: SocketAddr) -> Result<TcpStream, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let s = rt
        .block_on(async {
            let socket = match source {
                std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(source, 0))?;
            let s = tokio::time::timeout(IO_TIMEOUT, socket.connect(addr))
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            s.into_std()
        })
        .map_err(|e| format!("connect {addr} from {source}: {e}"))?;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    Ok(s)
}

/// One client connection (TLS or plain), carrying keep-alive requests and WebSocket frames.
pub struct Conn {
    wire: Wire<Stream>,
    /// Value of the `Host` header added to requests that have none.
    pub host: String,
    /// Method of the last request sent with `request`/`send` (HEAD responses have no body).
    last_method: String,
}

impl Conn {
    /// A plain-TCP connection (for the upstream, the admin listener or a plain-HTTP proxy).
    pub fn plain(addr: SocketAddr) -> Result<Conn, String> {
        Ok(Self::from_stream(Stream::Plain(tcp_connect(addr)?), addr))
    }

    fn from_stream(stream: Stream, addr: SocketAddr) -> Conn {
        Conn {
            wire: Wire::new(stream),
            host: format!("localhost:{}", addr.port()),
            last_method: String::new(),
        }
    }

    /// The underlying TCP socket (for timeouts, shutdown, local/peer address).
    pub fn tcp(&self) -> &TcpStream {
        self.wire.stream.tcp()
    }

    /// Sets read and write timeouts (default `IO_TIMEOUT`).
    pub fn set_timeout(&self, t: Duration) {
        self.tcp().set_read_timeout(Some(t)).unwrap();
        self.tcp().set_write_timeout(Some(t)).unwrap();
    }

    /// Negotiated TLS version ("TLSv1.3"), None over plain TCP.
    pub fn tls_version(&self) -> Option<String> {
        match &self.wire.stream {
            Stream::Tls(s) => Some(s.ssl().version_str().to_string()),
            Stream::Plain(_) => None,
        }
    }

    /// The server's certificate, if TLS.
    pub fn peer_cert(&self) -> Option<X509> {
        match &self.wire.stream {
            Stream::Tls(s) => s.ssl().peer_certificate(),
            Stream::Plain(_) => None,
        }
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.wire
            .stream
            .write_all(bytes)
            .and_then(|_| self.wire.stream.flush())
            .map_err(|e| format!("write: {e}"))
    }

    /// Writes a request without reading the response (pipelining, slow bodies).
    pub fn send(&mut self, req: &Request) -> Result<(), String> {
        self.last_method = req.method.clone();
        let bytes = req.to_bytes(&self.host);
        self.send_raw(&bytes)
    }

    /// Writes a request and reads its response. Err if the connection is closed or alerted.
    /// If the write fails, a response (or TLS alert) the server sent before closing is still
    /// read: an early `413` comes back as `Ok`, an alert's text is added to the `Err`.
    pub fn request(&mut self, req: &Request) -> Result<Response, String> {
        if let Err(write_err) = self.send(req) {
            return match self.read_response() {
                Ok(resp) => Ok(resp),
                Err(read_err) => Err(format!("{write_err}; {read_err}")),
            };
        }
        self.read_response()
    }

    /// Reads one response (1xx other than 101 skipped). Body per Content-Length, chunked or
    /// until close; none for HEAD, 101, 204 and 304.
    pub fn read_response(&mut self) -> Result<Response, String> {
        self.read_response_inner(true)
            .map_err(|e| format!("read response: {e}"))
    }

    /// Like `read_response`, but an interim 1xx (`100 Continue`) is returned, not skipped.
    pub fn read_response_or_interim(&mut self) -> Result<Response, String> {
        self.read_response_inner(false)
            .map_err(|e| format!("read response: {e}"))
    }

    fn read_response_inner(&mut self, skip_interim: bool) -> io::Result<Response> {
        for _ in 0..16 {
            let head = self
                .wire
                .read_head()?
                .ok_or_else(|| eof("before a response"))?;
            let mut resp = parse_response_head(&head)?;
            if (100..200).contains(&resp.status) && resp.status != 101 {
                if skip_interim {
                    continue;
                }
                return Ok(resp);
            }
            let no_body = self.last_method.eq_ignore_ascii_case("HEAD")
                || matches!(resp.status, 101 | 204 | 304);
            if !no_body {
                resp.body = if is_chunked(&resp.headers) {
                    self.wire.read_chunked()?
                } else if let Some(n) = content_length(&resp.headers)? {
                    self.wire.take(n)?
                } else {
                    self.wire.read_to_end()?
                };
            }
            return Ok(resp);
        }
        Err(bad("too many 1xx responses"))
    }

    /// Ok if the peer closes the connection (EOF, reset or TLS alert) before sending anything
    /// more, within the read timeout; Err with what arrived otherwise.
    pub fn expect_closed(&mut self) -> Result<(), String> {
        if !self.wire.buf.is_empty() {
            return Err(format!(
                "unread data: {:?}",
                String::from_utf8_lossy(&self.wire.buf)
            ));
        }
        match self.wire.fill() {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!(
                "data instead of close: {:?}",
                String::from_utf8_lossy(&self.wire.buf)
            )),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err("still open after the read timeout".to_string())
            }
            Err(_) => Ok(()),
        }
    }

    /// Half-closes the sending side (TCP FIN; for TLS a close_notify first).
    pub fn shutdown_write(&mut self) {
        if let Stream::Tls(s) = &mut self.wire.stream {
            let _ = s.shutdown();
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }

    /// The TLS stream itself, for a client that speaks its own protocol on it (nothing may
    /// have been read yet).
    pub fn into_tls_stream(self) -> SslStream<TcpStream> {
        assert!(self.wire.buf.is_empty(), "bytes already read would be lost");
        match self.wire.stream {
            Stream::Tls(s) => *s,
            Stream::Plain(_) => panic!("not a TLS connection"),
        }
    }

    /// Sends one WebSocket frame, masked with a random key (as a client must).
    pub fn ws_send(&mut self, opcode: u8, payload: &[u8], fin: bool) -> Result<(), String> {
        let mut mask = [0u8; 4];
        openssl::rand::rand_bytes(&mut mask).unwrap();
        self.send_raw(&ws_frame(opcode, payload, fin, Some(mask)))
    }

    /// Receives one WebSocket frame: (opcode, payload, fin).
    pub fn ws_recv(&mut self) -> Result<(u8, Vec<u8>, bool), String> {
        self.ws_recv_frame().map(|f| (f.opcode, f.payload, f.fin))
    }

    /// Receives one WebSocket frame with its mask bit.
    pub fn ws_recv_frame(&mut self) -> Result<Frame, String> {
        self.wire
            .read_frame()
            .map_err(|e| format!("read frame: {e}"))
    }
}

// ---------------------------------------------------------------------------------------
// TLS client
// ---------------------------------------------------------------------------------------

/// TLS client settings; `connect` makes a `Conn`.
#[derive(Clone, Debug)]
pub struct ClientTls {
    ca: PathBuf,
    cert: Option<(PathBuf, PathBuf)>,
    hostname: String,
    max_tls12: bool,
    min_tls13: bool,
    verify: bool,
    alpn: Vec<String>,
    groups: Option<String>,
}

impl ClientTls {
    /// Trusts `ca` (PEM, may hold several) and verifies the server name "localhost".
    pub fn new(ca: impl AsRef<Path>) -> ClientTls {
        ClientTls {
            ca: ca.as_ref().to_path_buf(),
            cert: None,
            hostname: "localhost".to_string(),
            max_tls12: false,
            min_tls13: false,
            verify: true,
            alpn: Vec::new(),
            groups: None,
        }
    }
    /// Presents this client certificate (its `chain` file, so intermediates go along).
    pub fn cert(self, ck: &CertKey) -> ClientTls {
        self.cert_files(&ck.chain, &ck.key)
    }
    /// Presents the certificate (chain) PEM file `cert` with key file `key`.
    pub fn cert_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> ClientTls {
        self.cert = Some((cert.as_ref().to_path_buf(), key.as_ref().to_path_buf()));
        self
    }
    /// The name sent as SNI and verified in the server certificate (default "localhost").
    pub fn hostname(mut self, name: &str) -> ClientTls {
        self.hostname = name.to_string();
        self
    }
    /// At most TLS 1.2 (the client-certificate verdict then comes during `connect`).
    pub fn max_tls12(mut self) -> ClientTls {
        self.max_tls12 = true;
        self
    }
    /// At least TLS 1.3.
    pub fn min_tls13(mut self) -> ClientTls {
        self.min_tls13 = true;
        self
    }
    /// Does not verify the server certificate at all.
    pub fn insecure(mut self) -> ClientTls {
        self.verify = false;
        self
    }
    /// Offers only these key-exchange groups (OpenSSL list syntax, e.g. "X25519").
    pub fn groups(mut self, groups: &str) -> ClientTls {
        self.groups = Some(groups.to_string());
        self
    }
    /// Offers these ALPN protocols (e.g. "h2", "http/1.1").
    pub fn alpn(mut self, protos: &[&str]) -> ClientTls {
        self.alpn = protos.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Connects and completes the TLS handshake; Err carries openssl's message (plus the
    /// verification result when the server certificate was refused).
    pub fn connect(&self, addr: SocketAddr) -> Result<Conn, String> {
        self.connect_over(addr, None)
    }

    /// `connect` over `tcp` when given (a connection from another source address, or with
    /// bytes already sent before the handshake).
    pub fn connect_over(&self, addr: SocketAddr, tcp: Option<TcpStream>) -> Result<Conn, String> {
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        b.set_ca_file(&self.ca)
            .map_err(|e| format!("CA file {}: {e}", self.ca.display()))?;
        if let Some((cert, key)) = &self.cert {
            b.set_certificate_chain_file(cert)
                .map_err(|e| format!("client cert {}: {e}", cert.display()))?;
            b.set_private_key_file(key, SslFiletype::PEM)
                .map_err(|e| format!("client key {}: {e}", key.display()))?;
            b.check_private_key().map_err(|e| e.to_string())?;
        }
        if self.max_tls12 {
            b.set_max_proto_version(Some(SslVersion::TLS1_2))
                .map_err(|e| e.to_string())?;
        }
        if self.min_tls13 {
            b.set_min_proto_version(Some(SslVersion::TLS1_3))
                .map_err(|e| e.to_string())?;
        }
        b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
        if let Some(groups) = &self.groups {
            b.set_groups_list(groups).map_err(|e| e.to_string())?;
        }
        if !self.verify {
            b.set_verify(SslVerifyMode::NONE);
        }
        if !self.alpn.is_empty() {
            let mut wire = Vec::new();
            for p in &self.alpn {
                wire.push(p.len() as u8);
                wire.extend(p.as_bytes());
            }
            b.set_alpn_protos(&wire).map_err(|e| e.to_string())?;
        }
        let connector = b.build();
        let tcp = match tcp {
            Some(tcp) => tcp,
            None => tcp_connect(addr)?,
        };
        let mut cfg = connector.configure().map_err(|e| e.to_string())?;
        cfg.set_verify_hostname(self.verify);
        match cfg.connect(&self.hostname, tcp) {
            Ok(s) => Ok(Conn::from_stream(Stream::Tls(Box::new(s)), addr)),
            Err(HandshakeError::Failure(mid)) => {
                let v = mid.ssl().verify_result();
                if v == X509VerifyResult::OK {
                    Err(format!("TLS handshake: {}", mid.error()))
                } else {
                    Err(format!(
                        "TLS handshake: {} (server certificate: {})",
                        mid.error(),
                        v.error_string()
                    ))
                }
            }
            Err(HandshakeError::SetupFailure(e)) => Err(format!("TLS setup: {e}")),
            Err(HandshakeError::WouldBlock(_)) => Err("TLS handshake timed out".to_string()),
        }
    }

    /// Connects and sends `req`: Err if either the handshake or the exchange fails. The way to
    /// assert "this client certificate is refused" independently of the TLS version.
    pub fn connect_and_request(&self, addr: SocketAddr, req: &Request) -> Result<Response, String> {
        self.connect(addr)?.request(req)
    }
}

// ---------------------------------------------------------------------------------------
// curl CLI
// ---------------------------------------------------------------------------------------

/// Whether the `curl` command is on PATH.
pub fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What a `curl` run produced.
#[derive(Clone, Debug)]
pub struct CurlOutput {
    /// curl's exit code (0 = transfer done; e.g. 35/56 = TLS failure, 7 = refused).
    pub exit_code: i32,
    /// Final HTTP status (0 if none).
    pub status: u16,
    /// Response headers as curl dumped them (`-D`).
    pub headers: String,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl CurlOutput {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("curl body is not JSON ({e}): {}", self.text()))
    }
}

/// Runs `curl -q -sS --noproxy '*' --max-time 10 -o BODY -D HEADERS -w '%{http_code}' ARGS...`
/// (no config file, no proxy) and captures the status, headers, body and stderr.
pub fn curl(args: &[&str]) -> CurlOutput {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("body");
    let headers = dir.path().join("headers");
    let mut cmd = Command::new("curl");
    cmd.args(["-q", "-sS", "--noproxy", "*", "--max-time", "10", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args);
    let (exit_code, stdout, stderr) = super::proxy::run_command(cmd, Duration::from_secs(20));
    CurlOutput {
        exit_code,
        status: String::from_utf8_lossy(&stdout).trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
