//! A tiny echo upstream for `demo` and `m2m-auth-proxy echo`: answers every request with what
//! it received, so a newcomer sees which `X-M2M-Origin` reached "the CSE". Not for production.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Largest request head or body the echo server reads.
const MAX_READ: usize = 64 * 1024;

/// `m2m-auth-proxy echo LISTEN`: serve until killed.
pub fn run(listen: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::net::ToSocketAddrs;
    let addr = listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| format!("expected host:port to listen on, got {listen:?}"))?;
    let bound = spawn(addr).with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("echo: answering every request on {bound} with what it received (a stand-in CSE, not for production)");
    loop {
        std::thread::park();
    }
}

pub fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("echo-upstream".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = std::thread::Builder::new()
                    .name("echo-conn".into())
                    .spawn(move || serve(stream));
            }
        })?;
    Ok(bound)
}

fn serve(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let body = echo_body(&request).to_string();
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-M2M-RSC: 2000\r\n",
            body.len()
        );
        if let Some(ri) = header(&request.headers, "x-m2m-ri") {
            response.push_str(&format!("X-M2M-RI: {ri}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&body);
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body_len: usize,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut total = line.len();
    loop {
        let mut h = String::new();
        total += reader.read_line(&mut h).ok().filter(|n| *n > 0)?;
        if total > MAX_READ {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body_len = header(&headers, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_READ);
    let mut body = vec![0; body_len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body_len,
    })
}

fn echo_body(r: &Request) -> serde_json::Value {
    serde_json::json!({
        "echo": "m2m-auth-proxy demo upstream",
        "method": r.method,
        "path": r.path,
        "origin": header(&r.headers, "x-m2m-origin"),
        "headers": r.headers.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
        "body_len": r.body_len,
    })
}
