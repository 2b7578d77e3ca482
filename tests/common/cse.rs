//! A small oneM2M CSE for Mcc tests, shaped after tinyIoT: its `poa` is its own bind address
//! (`http://127.0.0.1:<port>`); it answers a retrieve of its CSEBase and the create of a
//! `<remoteCSE>` (storing the registree's `poa`), and forwards a request for another CSE's
//! resources (SP-relative `/~/<csi>/...`) to the `poa` it stored for that CSE, with the
//! originator in SP-relative form as ACME does. Its HTTP client reads only `Content-Length`
//! bodies (tinyIoT's does): a chunked or close-delimited answer is an error. Its server reads
//! only `Content-Length` bodies too, answers with `Connection: close` and closes.
//!
//! Bodies are oneM2M JSON or CBOR (one encoding per CSE). Everything is on 127.0.0.1; sockets
//! have timeouts; `Drop` stops the accept loop and joins every thread.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{json, Value};

use super::http1::{content_length, header_pairs, is_chunked, parse_response_head, Wire};
use super::IO_TIMEOUT;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enc {
    Json,
    Cbor,
}

impl Enc {
    pub fn content_type(self) -> &'static str {
        match self {
            Enc::Json => "application/json",
            Enc::Cbor => "application/vnd.onem2m-res+cbor",
        }
    }

    pub fn encode(self, v: &Value) -> Vec<u8> {
        match self {
            Enc::Json => serde_json::to_vec(v).unwrap(),
            Enc::Cbor => {
                let mut out = Vec::new();
                ciborium::into_writer(v, &mut out).unwrap();
                out
            }
        }
    }

    pub fn decode(self, body: &[u8]) -> Result<Value, String> {
        match self {
            Enc::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
            Enc::Cbor => ciborium::from_reader(body).map_err(|e| e.to_string()),
        }
    }
}

/// One request the CSE's server read.
#[derive(Clone, Debug)]
pub struct CseSeen {
    pub method: String,
    pub path: String,
    pub originator: Option<String>,
    pub request_id: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// An answer as the CSE's client read it.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    csi: String,
    rn: String,
    enc: Enc,
    url: String,
    /// CSE-ID -> the `poa` stored for it (from its `<remoteCSE>` create, or the registrar's
    /// CSEBase).
    remotes: Mutex<HashMap<String, Vec<String>>>,
    /// The `<remoteCSE>` resources created here, by resource name.
    csrs: Mutex<HashMap<String, Value>>,
    seen: Mutex<Vec<CseSeen>>,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub struct TestCse {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TestCse {
    /// A CSE with CSE-ID `csi` (`/id-in`) and CSEBase name `rn` (`cse-in`) on a free port.
    pub fn start(csi: &str, rn: &str, enc: Enc) -> TestCse {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            csi: csi.to_string(),
            rn: rn.to_string(),
            enc,
            url: format!("http://{addr}"),
            remotes: Mutex::default(),
            csrs: Mutex::default(),
            seen: Mutex::default(),
            stop: AtomicBool::new(false),
            threads: Mutex::default(),
        });
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let sh2 = sh.clone();
                        let t = thread::spawn(move || serve(s, &sh2));
                        sh.threads.lock().unwrap().push(t);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TestCse {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its `poa`: its own bind address.
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// Registers at the registrar reached at `registrar` (`http://host:port`), as tinyIoT
    /// does: retrieves its CSEBase, creates a `<remoteCSE>` for itself there (its `poa` its own
    /// address), and stores the registrar's CSEBase `poa` as where that CSE is reached.
    pub fn register(&self, registrar: &str, reg_csi: &str, reg_rn: &str) -> Result<(), String> {
        let sh = &self.shared;
        let target = format!("/~{reg_csi}/{reg_rn}");
        let cb = client(registrar, "GET", &target, &sh.csi, "reg-cb", None, sh.enc)?;
        if cb.status != 200 {
            return Err(format!("registrar CSEBase: status {}", cb.status));
        }
        let cb = sh.enc.decode(&cb.body)?;
        let poa = strings(&cb["m2m:cb"]["poa"]).ok_or("registrar CSEBase without poa")?;
        let csr = json!({"m2m:csr": {
            "rn": sh.csi.trim_start_matches('/'),
            "csi": sh.csi,
            "cb": format!("{}/{}", sh.csi, sh.rn),
            "poa": [sh.url],
            "rr": true,
            "cst": 2,
            "srv": ["2a", "3", "4"],
        }});
        let body = sh.enc.encode(&csr);
        let created = client(
            registrar,
            "POST",
            &target,
            &sh.csi,
            "reg-csr",
            Some((&format!("{};ty=16", sh.enc.content_type()), &body)),
            sh.enc,
        )?;
        if created.status != 201 {
            return Err(format!("remoteCSE create: status {}", created.status));
        }
        sh.enc.decode(&created.body)?;
        sh.remotes.lock().unwrap().insert(reg_csi.to_string(), poa);
        Ok(())
    }

    /// The `poa` stored for CSE `csi`.
    pub fn remote_poa(&self, csi: &str) -> Option<Vec<String>> {
        self.shared.remotes.lock().unwrap().get(csi).cloned()
    }

    /// Requests its server read, in order.
    pub fn seen(&self) -> Vec<CseSeen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// What it answers for `/<rn>/plain`: its own address, a `poa` that matches no mapping,
    /// escapes and spacing; nothing for a proxy to rewrite.
    pub fn plain_body(&self) -> Vec<u8> {
        plain(&self.shared)
    }
}

impl Drop for TestCse {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn plain(sh: &Shared) -> Vec<u8> {
    match sh.enc {
        Enc::Json => format!(
            "{{ \"m2m:cin\" : {{\"con\": \"{}\", \"lbl\": [\"{}\"], \"poa\" : [\"mqtt://broker:1883\", \"http://127.0.0.1:1/x\"], \"cs\": 1.50 }} }}",
            sh.url.replace('/', "\\/"),
            sh.url
        )
        .into_bytes(),
        Enc::Cbor => sh.enc.encode(&json!({"m2m:cin": {
            "con": sh.url,
            "lbl": [sh.url],
            "poa": ["mqtt://broker:1883", "http://127.0.0.1:1/x"],
        }})),
    }
}

/// One request on its own connection, `Connection: close`; the answer's body read by its
/// `Content-Length` only.
fn client(
    base: &str,
    method: &str,
    path: &str,
    originator: &str,
    request_id: &str,
    body: Option<(&str, &[u8])>,
    enc: Enc,
) -> Result<Answer, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http poa: {base:?}"))?
        .trim_end_matches('/');
    let addr: SocketAddr = authority
        .parse()
        .map_err(|e| format!("poa {base:?}: {e}"))?;
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("{base}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nX-M2M-Origin: {originator}\r\nX-M2M-RI: {request_id}\r\nX-M2M-RVI: 3\r\nAccept: {}\r\nConnection: close\r\n",
        enc.content_type()
    );
    if let Some((ct, b)) = body {
        head.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut wire = Wire::new(s);
    let mut out = head.into_bytes();
    if let Some((_, b)) = body {
        out.extend_from_slice(b);
    }
    wire.stream.write_all(&out).map_err(|e| e.to_string())?;
    let head = wire
        .read_head()
        .map_err(|e| e.to_string())?
        .ok_or("closed without an answer")?;
    let resp = parse_response_head(&head).map_err(|e| e.to_string())?;
    let len = content_length(&resp.headers)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "Remote CSE not valid: an answer without Content-Length ({:?})",
                resp.headers
            )
        })?;
    let body = wire.take(len).map_err(|e| e.to_string())?;
    Ok(Answer {
        status: resp.status,
        headers: resp.headers,
        body,
    })
}

fn serve(s: TcpStream, sh: &Shared) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let mut wire = Wire::new(s);
    let Ok(Some(head)) = wire.read_head() else {
        return;
    };
    let mut hbuf = vec![httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut hbuf);
    if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let headers = header_pairs(req.headers);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let method = req.method.unwrap_or("").to_string();
    let path = req.path.unwrap_or("").to_string();
    // its server too reads Content-Length bodies only
    let answer = if is_chunked(&headers) {
        (400, 4000, b"{\"m2m:dbg\":\"chunked body\"}".to_vec())
    } else {
        let body = match content_length(&headers) {
            Ok(n) => wire.take(n.unwrap_or(0)),
            Err(e) => Err(e),
        };
        let Ok(body) = body else { return };
        let seen = CseSeen {
            method: method.clone(),
            path: path.clone(),
            originator: get("x-m2m-origin"),
            request_id: get("x-m2m-ri"),
            content_type: get("content-type"),
            body,
        };
        sh.seen.lock().unwrap().push(seen.clone());
        handle(sh, &seen)
    };
    let (status, rsc, body) = answer;
    let ri = get("x-m2m-ri").unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-M2M-RSC: {rsc}\r\nX-M2M-RI: {ri}\r\nConnection: close\r\n\r\n",
        sh.enc.content_type(),
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    let _ = wire.stream.write_all(&out);
    let _ = wire.stream.shutdown(std::net::Shutdown::Write);
    // a lingering close: what the client still sends is drained, so the close is no reset
    let _ = wire
        .stream
        .set_read_timeout(Some(Duration::from_millis(500)));
    let _ = io::copy(&mut wire.stream, &mut io::sink());
}

/// (status, RSC, body) for one request.
fn handle(sh: &Shared, req: &CseSeen) -> (u16, u16, Vec<u8>) {
    let err = |status, rsc, why: &str| (status, rsc, sh.enc.encode(&json!({ "m2m:dbg": why })));
    // SP-relative: its own, or another CSE's (forwarded)
    let local = match req.path.strip_prefix("/~") {
        Some(rest) => match rest.strip_prefix(sh.csi.as_str()) {
            Some(own) if own.starts_with('/') => own.to_string(),
            _ => return forward(sh, req, rest),
        },
        None => req.path.clone(),
    };
    let segments: Vec<&str> = local.trim_start_matches('/').split('/').collect();
    if segments.first() != Some(&sh.rn.as_str()) {
        return err(404, 4004, "not found");
    }
    match (req.method.as_str(), &segments[1..]) {
        ("GET", []) => {
            let cb = json!({"m2m:cb": {
                "rn": sh.rn,
                "ri": sh.csi.trim_start_matches('/'),
                "ty": 5,
                "csi": sh.csi,
                "cst": 1,
                "srt": [1, 2, 3, 4, 5, 16, 23],
                "poa": [sh.url],
                "srv": ["2a", "3", "4"],
            }});
            (200, 2000, sh.enc.encode(&cb))
        }
        ("POST", []) => {
            let ty16 = req
                .content_type
                .as_deref()
                .is_some_and(|ct| ct.replace(' ', "").ends_with(";ty=16"));
            if !ty16 {
                return err(400, 4000, "only <remoteCSE> creates");
            }
            let Ok(mut v) = sh.enc.decode(&req.body) else {
                return err(400, 4000, "body not readable");
            };
            let csr = &mut v["m2m:csr"];
            let (Some(rn), Some(csi), Some(poa)) = (
                csr["rn"].as_str().map(str::to_string),
                csr["csi"].as_str().map(str::to_string),
                strings(&csr["poa"]),
            ) else {
                return err(400, 4000, "Remote CSE not valid");
            };
            csr["ri"] = json!(rn);
            csr["pi"] = json!(sh.csi.trim_start_matches('/'));
            csr["ty"] = json!(16);
            sh.remotes.lock().unwrap().insert(csi, poa);
            sh.csrs.lock().unwrap().insert(rn, v.clone());
            (201, 2001, sh.enc.encode(&v))
        }
        ("GET", ["plain"]) => (200, 2000, plain(sh)),
        ("GET", [rn]) => match sh.csrs.lock().unwrap().get(*rn) {
            Some(v) => (200, 2000, sh.enc.encode(v)),
            None => err(404, 4004, "not found"),
        },
        _ => err(405, 4005, "not supported here"),
    }
}

/// A request for CSE `rest`'s resources (`/<csi>/...`), sent on to the `poa` stored for it.
fn forward(sh: &Shared, req: &CseSeen, rest: &str) -> (u16, u16, Vec<u8>) {
    let err = |status, rsc, why: String| (status, rsc, sh.enc.encode(&json!({ "m2m:dbg": why })));
    let csi = rest.split('/').nth(1).map(|s| format!("/{s}"));
    let Some(poa) = csi.and_then(|c| sh.remotes.lock().unwrap().get(&c).cloned()) else {
        return err(404, 4004, format!("no remote CSE for {rest}"));
    };
    let Some(base) = poa.first() else {
        return err(404, 4004, "remote CSE without poa".into());
    };
    // SP-relative originator, as ACME forwards it
    let origin = match req.originator.as_deref() {
        Some(o) if o.starts_with('/') => o.to_string(),
        Some(o) => format!("{}/{o}", sh.csi),
        None => sh.csi.clone(),
    };
    let body = req
        .content_type
        .as_deref()
        .map(|ct| (ct, req.body.as_slice()));
    match client(
        base,
        &req.method,
        &req.path,
        &origin,
        req.request_id.as_deref().unwrap_or(""),
        body,
        sh.enc,
    ) {
        Ok(a) => {
            let rsc = a
                .header("x-m2m-rsc")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2000);
            (a.status, rsc, a.body)
        }
        Err(e) => err(504, 5103, format!("forwarding to {base}: {e}")),
    }
}
