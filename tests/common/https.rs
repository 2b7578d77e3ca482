//! A small HTTPS endpoint on 127.0.0.1 for the services the proxy calls itself (JWKS URL,
//! token introspection): answers come from a closure, calls are counted and recorded, answers
//! can be delayed, client certificates can be required, and connections can be kept alive
//! (then counted, as are the calls in progress at once).

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use openssl::ssl::{
    SslAcceptor, SslAcceptorBuilder, SslFiletype, SslMethod, SslVerifyMode, SslVersion,
};

use super::http1::Wire;
use super::CertKey;

/// One call as the endpoint saw it: request head and body.
#[derive(Clone, Debug)]
pub struct Call {
    pub head: String,
    pub body: String,
    /// The serial (upper-case hex) of the client certificate the connection was made with.
    pub client_serial: Option<String>,
}

type Handler = dyn Fn(&Call) -> (u16, String) + Send + Sync;

/// What the endpoint counts besides the calls.
#[derive(Default)]
struct Counters {
    keep_alive: AtomicBool,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    closed_by_client: AtomicUsize,
}

pub struct HttpsEndpoint {
    pub addr: SocketAddr,
    /// The TLS settings new connections are accepted with.
    acceptor: Arc<Mutex<Arc<SslAcceptor>>>,
    client_ca: Option<std::path::PathBuf>,
    calls: Arc<Mutex<Vec<Call>>>,
    count: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    delay: Arc<Mutex<Duration>>,
    handler: Arc<Mutex<Arc<Handler>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl HttpsEndpoint {
    /// Serves with `server`'s certificate; `client_ca`: require a client certificate from it.
    pub fn start(
        server: &CertKey,
        client_ca: Option<&CertKey>,
        handler: impl Fn(&Call) -> (u16, String) + Send + Sync + 'static,
    ) -> HttpsEndpoint {
        Self::start_with(server, client_ca, |_| {}, handler)
    }

    /// `start` with the TLS settings changed by `tls` (e.g. only some cipher suites).
    pub fn start_with(
        server: &CertKey,
        client_ca: Option<&CertKey>,
        tls: impl FnOnce(&mut SslAcceptorBuilder),
        handler: impl Fn(&Call) -> (u16, String) + Send + Sync + 'static,
    ) -> HttpsEndpoint {
        let client_ca = client_ca.map(|ca| ca.cert.clone());
        let acceptor = acceptor_for(server, client_ca.as_deref(), tls);
        let acceptor = Arc::new(Mutex::new(Arc::new(acceptor)));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Mutex<Arc<Handler>>> = Arc::new(Mutex::new(Arc::new(handler)));
        let (calls, count, delay, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Mutex::new(Duration::ZERO)),
            Arc::new(AtomicBool::new(false)),
        );
        let counters = Arc::new(Counters::default());
        let accept = {
            let (calls, count, delay, stop, handler, counters, acceptors) = (
                calls.clone(),
                count.clone(),
                delay.clone(),
                stop.clone(),
                handler.clone(),
                counters.clone(),
                acceptor.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let (acceptor, calls, count, delay, handler, counters) = (
                                acceptors.lock().unwrap().clone(),
                                calls.clone(),
                                count.clone(),
                                delay.clone(),
                                handler.clone(),
                                counters.clone(),
                            );
                            counters.connections.fetch_add(1, Ordering::SeqCst);
                            thread::spawn(move || {
                                serve(tcp, &acceptor, &calls, &count, &delay, &handler, &counters)
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        HttpsEndpoint {
            addr,
            acceptor,
            client_ca,
            calls,
            count,
            counters,
            delay,
            handler,
            stop,
            accept: Some(accept),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Calls answered or being answered so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Serve further requests on a connection (default: one request, then close).
    pub fn set_keep_alive(&self, on: bool) {
        self.counters.keep_alive.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Connections the client ended (EOF or reset) while the endpoint waited for a request,
    /// not closed by the endpoint's own read timeout.
    pub fn closed_by_client(&self) -> usize {
        self.counters.closed_by_client.load(Ordering::SeqCst)
    }

    /// The most calls that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// Serve new connections with `server`'s certificate (a `start_with` TLS change is not
    /// kept); open ones keep theirs.
    pub fn set_certificate(&self, server: &CertKey) {
        let acceptor = acceptor_for(server, self.client_ca.as_deref(), |_| {});
        *self.acceptor.lock().unwrap() = Arc::new(acceptor);
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn set_handler(&self, h: impl Fn(&Call) -> (u16, String) + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(h);
    }
}

fn acceptor_for(
    server: &CertKey,
    client_ca: Option<&std::path::Path>,
    tls: impl FnOnce(&mut SslAcceptorBuilder),
) -> SslAcceptor {
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_certificate_chain_file(&server.chain).unwrap();
    acceptor
        .set_private_key_file(&server.key, SslFiletype::PEM)
        .unwrap();
    if let Some(ca) = client_ca {
        acceptor.set_ca_file(ca).unwrap();
        acceptor.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    tls(&mut acceptor);
    acceptor.build()
}

impl Drop for HttpsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    tcp: TcpStream,
    acceptor: &SslAcceptor,
    calls: &Mutex<Vec<Call>>,
    count: &AtomicUsize,
    delay: &Mutex<Duration>,
    handler: &Mutex<Arc<Handler>>,
    counters: &Counters,
) {
    let _ = tcp.set_nonblocking(false);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(tls) = acceptor.accept(tcp) else {
        return;
    };
    let client_serial = tls.ssl().peer_certificate().and_then(|c| {
        let hex = c.serial_number().to_bn().ok()?.to_hex_str().ok()?;
        Some(hex.to_string())
    });
    let mut wire = Wire::new(tls);
    loop {
        let head = match wire.read_head() {
            Ok(Some(head)) => head,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return,
            _ => {
                counters.closed_by_client.fetch_add(1, Ordering::SeqCst);
                return;
            }
        };
        let head = String::from_utf8_lossy(&head).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let Ok(body) = wire.take(length) else {
            return;
        };
        let call = Call {
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
            client_serial: client_serial.clone(),
        };
        count.fetch_add(1, Ordering::SeqCst);
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
        calls.lock().unwrap().push(call.clone());
        let wait = *delay.lock().unwrap();
        thread::sleep(wait);
        let h = handler.lock().unwrap().clone();
        let (status, body) = h(&call);
        counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        let keep_alive = counters.keep_alive.load(Ordering::SeqCst);
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let written = wire.stream.write_all(
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        if written.is_err() || !keep_alive {
            let _ = wire.stream.shutdown();
            return;
        }
    }
}

/// Changes to a test peer's TLS settings.
pub type TlsSetup = fn(&mut SslAcceptorBuilder);

/// TLS peers that break the proxy's outbound policy, each `(what, server certificate, TLS
/// settings)`: only static-RSA suites, only CBC suites (both TLS 1.2), and a certificate that
/// names `host` in its CN only (no SAN). The certificates come from `ca`; `host` is what the
/// proxy will check (the static-RSA and CBC certificates name `localhost` and 127.0.0.1).
pub fn policy_breaking_peers(
    pki: &super::Pki,
    ca: &CertKey,
    host: &str,
) -> Vec<(&'static str, CertKey, TlsSetup)> {
    use super::{ClientOpts, Eku};
    fn tls12(a: &mut SslAcceptorBuilder, ciphers: &str) {
        a.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        a.set_cipher_list(ciphers).unwrap();
    }
    let rsa = || pki.client(ca, ClientOpts::server("localhost", &["127.0.0.1"]).rsa());
    let cn_only = ClientOpts {
        cn: Some(host.to_string()),
        eku: Eku::ServerAuthOnly,
        not_after_days: 365,
        ..Default::default()
    };
    vec![
        ("static RSA only", rsa(), |a| {
            tls12(a, "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA")
        }),
        ("CBC only", rsa(), |a| {
            tls12(a, "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA")
        }),
        ("name in the CN only", pki.client(ca, cn_only), |_| {}),
    ]
}
