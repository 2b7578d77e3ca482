//! The HTTP client the OTLP exporter posts through: one blocking HTTP/1.1 request per export,
//! on the export thread (`batch`), plain HTTP only. It spares the proxy a second HTTP stack
//! (hyper/reqwest) and a second TLS library for what is one POST to a collector in the pod.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};

/// A collector's answer is small (an `ExportTraceServiceResponse`); more is not read.
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct BlockingHttp {
    /// For connecting, and for the whole exchange after it.
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        // the export thread drives this future with a plain executor: blocking here is its job
        self.post(request)
    }
}

impl BlockingHttp {
    fn post(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = request.uri();
        if uri.scheme_str() != Some("http") {
            return Err("only http:// collector endpoints are supported".into());
        }
        let host = uri.host().ok_or("endpoint without host")?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let deadline = Instant::now() + self.timeout;
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()?
            .next()
            .ok_or("endpoint host has no address")?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)?;
        stream.set_nodelay(true)?;
        let left = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or("collector timed out")
        };
        stream.set_write_timeout(Some(left()?))?;
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            request.method(),
            uri.authority().map_or(host, |a| a.as_str()),
            request.body().len()
        );
        for (name, value) in request.headers() {
            if matches!(name.as_str(), "host" | "content-length" | "connection") {
                continue;
            }
            let value = value.to_str().map_err(|_| "header value not text")?;
            head.push_str(name.as_str());
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(request.body())?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            stream.set_read_timeout(Some(left()?))?;
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_RESPONSE {
                break;
            }
            if let Some(done) = complete(&buf) {
                buf.truncate(done);
                break;
            }
        }
        parse_response(&buf)
    }
}

/// The length of a whole response in `buf` (head and a `Content-Length` body), if it is.
fn complete(buf: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(buf).ok()? else {
        return None;
    };
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })?;
    (buf.len() >= head + len).then_some(head + len)
}

fn parse_response(buf: &[u8]) -> Result<Response<Bytes>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err("incomplete response from the collector".into()),
    };
    let mut out = Response::builder().status(resp.code.unwrap_or(0));
    for h in resp.headers.iter() {
        out = out.header(h.name, h.value);
    }
    Ok(out.body(Bytes::copy_from_slice(&buf[head..]))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_once_its_declared_body_arrived() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(complete(head), None);
        let whole = [&head[..], b"abc"].concat();
        assert_eq!(complete(&whole), Some(whole.len()));
        let resp = parse_response(&whole).unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body().as_ref(), b"abc");
        assert!(parse_response(b"HTTP/1.1 20").is_err());
    }
}
