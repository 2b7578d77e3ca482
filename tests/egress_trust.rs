//! Egress trust changes reach open connections (issue 25.1). A route's peer is an HTTPS
//! endpoint whose server certificate comes from `peer-ca`; the route's `tls.ca` file is
//! replaced by an unrelated CA while the local CSE keeps sending. Every new connection then
//! fails verification, so a 200 for a request sent after the reload was logged could only
//! have come over a connection verified under the old CA: there must be none. A request
//! already in flight at the swap finishes. With the right CA back, the next request makes a
//! new connection under it. A rotated client certificate likewise: no request after the
//! reload goes over a connection made with the old one. `tls.server_name` needs a restart.
//!
//! Before the one request path (pingora-proxy) the pool's key left out the CA, so a pooled
//! connection verified under the old CA kept answering: every CA test below got 200s after the
//! swap. The first version on the lean loop (`b2791db`) left the idle connections open until
//! the peer's timeout and sent a pipelined request over the held one: the idle-close and
//! pipelining assertions fail there.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::http1::Wire;
use common::https::HttpsEndpoint;
use common::proxy::write_atomic;
use common::scenario::bin;
use common::{
    free_port, CertKey, ClientOpts, ClientTls, Conn, EchoUpstream, Pki, ProxyProcess, Request,
    Response, IO_TIMEOUT,
};

/// The reload log line of a route's CA.
const RELOADED: &str = "reloaded egress_ca";
/// What the local CSE gets when the peer's certificate does not verify.
const NOT_TRUSTED: &str = "egress mn: peer certificate not trusted";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `f` every 20 ms until it holds; false after `bound`.
fn wait_until(bound: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// One proxy whose route `mn` goes to `peer`; its public listener (mTLS) forwards to
/// `upstream`.
struct Setup {
    pki: Pki,
    peer_ca: CertKey,
    unrelated: CertKey,
    peer: HttpsEndpoint,
    /// The route's `tls.ca`, rewritten by the tests.
    ca_file: PathBuf,
    /// The route's `tls.cert` and `tls.key` and the CA the peer trusts them from (when the
    /// peer requires a client certificate).
    client: Option<RouteClient>,
    egress: SocketAddr,
    ingress: SocketAddr,
    ingress_ca: CertKey,
    proxy: ProxyProcess,
    _echo: EchoUpstream,
}

struct RouteClient {
    ca: CertKey,
    cert: PathBuf,
    key: PathBuf,
    /// The certificate the route starts with.
    first: CertKey,
}

impl Setup {
    /// `upstream`: the CSE behind the public listener (default: an echo upstream).
    fn start(egress: SocketAddr, upstream: Option<String>) -> Setup {
        Self::start_with(egress, upstream, false)
    }

    /// `client_cert`: the peer requires a client certificate, the route has one.
    fn start_with(egress: SocketAddr, upstream: Option<String>, client_cert: bool) -> Setup {
        let pki = Pki::new();
        let peer_ca = pki.ca("peer-ca");
        let unrelated = pki.ca("unrelated");
        let peer_server = pki.server(&peer_ca, "localhost", &["127.0.0.1"]);
        let client = client_cert.then(|| {
            let ca = pki.ca("route-client-ca");
            let first = pki.client(&ca, ClientOpts::uri("/id-in"));
            RouteClient {
                cert: pki.write("route-client.pem", &std::fs::read(&first.chain).unwrap()),
                key: pki.write("route-client.key", &first.key_pem()),
                ca,
                first,
            }
        });
        let peer = HttpsEndpoint::start(&peer_server, client.as_ref().map(|c| &c.ca), |_| {
            (200, r#"{"m2m:cb":{"rn":"cse-mn"}}"#.into())
        });
        peer.set_keep_alive(true);
        let ca_file = pki.write("route-ca.pem", &peer_ca.pem());
        let client_files = client.as_ref().map_or(String::new(), |c| {
            format!(
                "      cert: {}\n      key: {}\n",
                c.cert.display(),
                c.key.display()
            )
        });
        let ingress_ca = pki.ca("ingress-ca");
        let server = pki.server(&ingress_ca, "localhost", &["127.0.0.1"]);
        let echo = EchoUpstream::start();
        let ingress = loopback(free_port());
        let yaml = format!(
            "listen: \"{ingress}\"\nthreads: 2\nadmin: \"{admin}\"\nupstream: \"{upstream}\"\ntls:\n  cert: {cert}\n  key: {key}\n  client_ca: {ca}\n  client_cert: required\nauth:\n  methods: [mtls]\n  mtls:\n    identity: [uri]\noriginator:\n  mode: overwrite\nshutdown:\n  grace_period: 1s\nreload:\n  poll_interval: 200ms\negress:\n  - name: mn\n    listen: \"{egress}\"\n    peer: \"https://127.0.0.1:{peer_port}\"\n    tls:\n      ca: {ca_file}\n{client_files}",
            admin = loopback(free_port()),
            upstream = upstream.unwrap_or_else(|| echo.url()),
            cert = server.chain.display(),
            key = server.key.display(),
            ca = ingress_ca.cert.display(),
            peer_port = peer.addr.port(),
            ca_file = ca_file.display(),
        );
        let proxy = ProxyProcess::start(&bin(), &yaml);
        Setup {
            pki,
            peer_ca,
            unrelated,
            peer,
            ca_file,
            client,
            egress,
            ingress,
            ingress_ca,
            proxy,
            _echo: echo,
        }
    }

    /// What the local CSE sends to the MN through the route.
    fn get(&self) -> Request {
        Request::get("/~/id-mn/cse-mn")
            .header("X-M2M-Origin", "/id-in")
            .header("X-M2M-RI", "ri-trust")
    }

    /// One request on a new connection to the route's listener.
    fn on_new_connection(&self) -> Response {
        Conn::plain(self.egress)
            .and_then(|mut c| c.request(&self.get()))
            .unwrap_or_else(|e| panic!("egress request: {e}"))
    }

    fn reloads(&self) -> usize {
        self.proxy.stderr_text().matches(RELOADED).count()
    }

    /// Replaces the route's CA file with `ca` and returns once the reload is logged.
    fn swap_ca(&self, ca: &CertKey) {
        self.swap_ca_bundle(&[ca]);
    }

    fn swap_ca_bundle(&self, cas: &[&CertKey]) {
        let before = self.reloads();
        let bundle: Vec<u8> = cas.iter().flat_map(|c| c.pem()).collect();
        write_atomic(&self.ca_file, &bundle);
        assert!(
            wait_until(Duration::from_secs(20), || self.reloads() > before),
            "route CA not reloaded\n{}",
            self.proxy.stderr_text()
        );
    }

    /// Replaces the route's client certificate and key with `cert`'s and returns once the
    /// reload is logged.
    fn swap_client_cert(&self, cert: &CertKey) {
        let files = self
            .client
            .as_ref()
            .expect("a route with a client certificate");
        let reloads = || {
            self.proxy
                .stderr_text()
                .matches("reloaded egress_client_cert")
                .count()
        };
        let before = reloads();
        // key first: a certificate whose key is not there yet is refused and tried again
        write_atomic(&files.key, &cert.key_pem());
        write_atomic(&files.cert, &std::fs::read(&cert.chain).unwrap());
        assert!(
            wait_until(Duration::from_secs(20), || reloads() > before),
            "route client certificate not reloaded\n{}",
            self.proxy.stderr_text()
        );
    }

    /// The client certificate serials of the calls the peer got after the first `skip`.
    fn serials_after(&self, skip: usize) -> Vec<String> {
        self.peer
            .calls()
            .into_iter()
            .skip(skip)
            .map(|c| c.client_serial.unwrap_or_default())
            .collect()
    }

    /// From now on the peer answers only once the returned flag is set (30 s at most).
    fn hold_answers(&self) -> Arc<AtomicBool> {
        let release = Arc::new(AtomicBool::new(false));
        let flag = release.clone();
        self.peer.set_handler(move |_| {
            wait_until(Duration::from_secs(30), || flag.load(Ordering::SeqCst));
            (200, r#"{"m2m:cb":{"rn":"cse-mn"}}"#.into())
        });
        release
    }

    /// Waits until the proxy has closed `n` established connections to the peer (the peer saw
    /// the close while it waited for a request, not its own read timeout). Connections whose
    /// handshake failed are not counted.
    fn peer_connections_closed_by_proxy(&self, n: usize) -> bool {
        wait_until(Duration::from_secs(20), || {
            self.peer.closed_by_client() >= n
        })
    }
}

fn assert_not_trusted(resp: &Response, what: &str) {
    assert_eq!(resp.status, 502, "{what}: {}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("5103"), "{what}");
    assert_eq!(resp.json()["m2m:dbg"].as_str(), Some(NOT_TRUSTED), "{what}");
}

/// Requests one at a time, each on a new connection of the local CSE (curl's way): the
/// route's idle connections are closed when the reload is logged, and none is reused.
#[test]
fn after_the_routes_ca_is_replaced_sequential_requests_on_new_connections_get_no_answer_over_old_ones(
) {
    let s = Setup::start(loopback(free_port()), None);
    for i in 0..3 {
        let resp = s.on_new_connection();
        assert_eq!(resp.status, 200, "warm-up {i}: {}", resp.text());
    }
    let (calls, connections) = (s.peer.count(), s.peer.connections());
    assert!(connections >= 1);

    s.swap_ca(&s.unrelated);
    // closed by the proxy at the reload, not left for the peer's idle timeout
    assert!(
        s.peer_connections_closed_by_proxy(connections),
        "idle connections to the peer still open: {} of {connections}",
        connections - s.peer.closed_by_client(),
    );
    for i in 0..5 {
        assert_not_trusted(
            &s.on_new_connection(),
            &format!("request {i} after the swap"),
        );
    }
    assert_eq!(s.peer.count(), calls, "a request reached the peer");

    // the right CA back: a new handshake under it
    s.swap_ca(&s.peer_ca);
    let resp = s.on_new_connection();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(s.peer.connections() > connections, "a new connection");
}

/// One keep-alive connection of the local CSE: the request in flight at the swap gets its
/// answer, the next one on the same connection does not go over the old peer connection,
/// which is closed once its request is done.
#[test]
fn after_the_routes_ca_is_replaced_a_keep_alive_connection_finishes_its_request_in_flight_and_no_more(
) {
    let s = Setup::start(loopback(free_port()), None);
    let mut conn = Conn::plain(s.egress).unwrap();
    let resp = conn.request(&s.get()).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());

    let release = s.hold_answers();
    conn.send(&s.get()).unwrap();
    assert!(wait_until(Duration::from_secs(10), || s.peer.count() == 2));
    s.swap_ca(&s.unrelated);
    release.store(true, Ordering::SeqCst);
    let resp = conn.read_response().unwrap();
    assert_eq!(resp.status, 200, "in flight at the swap: {}", resp.text());
    let verified = s.peer.connections();

    let resp = conn.request(&s.get()).unwrap();
    assert_not_trusted(&resp, "next request on the same connection");
    assert_not_trusted(&s.on_new_connection(), "on a new connection");
    assert_eq!(s.peer.count(), 2, "a request reached the peer");
    assert!(
        s.peer_connections_closed_by_proxy(verified),
        "the connection verified under the old CA is still open"
    );
}

/// A request pipelined behind one in flight at the swap: the upstream connection the client
/// connection holds for it was verified under the old CA, so it is not used.
#[test]
fn after_the_routes_ca_is_replaced_a_pipelined_request_does_not_take_the_held_connection() {
    let s = Setup::start(loopback(free_port()), None);
    let mut conn = Conn::plain(s.egress).unwrap();
    let resp = conn.request(&s.get()).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());

    let release = s.hold_answers();
    // both heads in one write: the second waits in the proxy's buffer, not in the socket
    let mut two = s.get().to_bytes(&conn.host);
    two.extend(s.get().to_bytes(&conn.host));
    conn.send_raw(&two).unwrap();
    assert!(wait_until(Duration::from_secs(10), || s.peer.count() == 2));
    s.swap_ca(&s.unrelated);
    release.store(true, Ordering::SeqCst);
    let first = conn.read_response().unwrap();
    assert_eq!(first.status, 200, "in flight at the swap: {}", first.text());
    assert_not_trusted(&conn.read_response().unwrap(), "pipelined behind it");
    assert_eq!(s.peer.count(), 2, "the pipelined request reached the peer");
}

/// Several clients at once, some on keep-alive connections and some on a new connection per
/// request: no request sent after the reload is logged gets an answer from the peer.
#[test]
fn after_the_routes_ca_is_replaced_no_request_of_parallel_clients_sent_after_the_reload_succeeds() {
    let s = Setup::start(loopback(free_port()), None);
    // (sent at, status, m2m:dbg)
    type Log = Arc<Mutex<Vec<(Instant, u16, String)>>>;
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<JoinHandle<()>> = (0..4)
        .map(|i| {
            let (log, stop, egress, req) = (log.clone(), stop.clone(), s.egress, s.get());
            let keep_alive = i % 2 == 0;
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(90);
                let mut conn: Option<Conn> = None;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let sent = Instant::now();
                    let mut c = match conn.take() {
                        Some(c) => c,
                        None => match Conn::plain(egress) {
                            Ok(c) => c,
                            Err(_) => continue,
                        },
                    };
                    let (status, dbg) = match c.request(&req) {
                        Ok(r) => {
                            let dbg = serde_json::from_slice::<serde_json::Value>(&r.body)
                                .ok()
                                .and_then(|v| v["m2m:dbg"].as_str().map(str::to_string))
                                .unwrap_or_default();
                            (r.status, dbg)
                        }
                        Err(e) => (0, e),
                    };
                    // an error answer closes the connection
                    if keep_alive && status == 200 {
                        conn = Some(c);
                    }
                    log.lock().unwrap().push((sent, status, dbg));
                }
            })
        })
        .collect();
    let count = |f: &dyn Fn(&(Instant, u16, String)) -> bool| {
        log.lock().unwrap().iter().filter(|e| f(e)).count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || count(&|e| e.1 == 200) >= 20),
        "load did not run"
    );
    s.swap_ca(&s.unrelated);
    let logged = Instant::now();
    let after = |e: &(Instant, u16, String)| e.0 > logged;
    let enough = wait_until(Duration::from_secs(30), || count(&after) >= 40);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert!(enough, "too few requests after the swap: {}", count(&after));
    let log = log.lock().unwrap();
    let wrong: Vec<_> = log
        .iter()
        .filter(|e| after(e) && !(e.1 == 502 && e.2 == NOT_TRUSTED))
        .map(|e| (e.1, e.2.clone()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} requests after the reload was logged were not refused: {wrong:?}",
        wrong.len(),
        log.iter().filter(|e| after(e)).count()
    );
}

/// IN → MN: a request arrives at the IN's public listener, the IN-CSE forwards it to the MN
/// through its route on a connection it keeps alive. After the swap the client gets the
/// route's 502 through the CSE, and nothing reaches the MN.
#[test]
fn after_the_routes_ca_is_replaced_requests_the_cse_forwards_for_its_clients_get_no_answer_over_old_connections(
) {
    let egress = loopback(free_port());
    let cse = ForwardingCse::start(egress);
    let s = Setup::start(egress, Some(cse.url()));
    let admin = s.pki.client(&s.ingress_ca, ClientOpts::uri("CAdmin"));
    let client = ClientTls::new(&s.ingress_ca.cert).cert(&admin);
    let request = || {
        client
            .connect_and_request(s.ingress, &Request::get("/~/id-mn/cse-mn"))
            .unwrap()
    };
    for i in 0..3 {
        let resp = request();
        assert_eq!(resp.status, 200, "warm-up {i}: {}", resp.text());
    }
    let calls = s.peer.count();
    s.swap_ca(&s.unrelated);
    for i in 0..5 {
        assert_not_trusted(&request(), &format!("request {i} after the swap"));
    }
    assert_eq!(s.peer.count(), calls, "a request reached the MN");
    s.swap_ca(&s.peer_ca);
    assert_eq!(request().status, 200);
}

/// The route's client certificate is rotated (the old one is to be revoked at the peer):
/// the request in flight at the swap finishes on its connection, every later request reaches
/// the peer over a connection made with the new certificate, and the idle connections made
/// with the old one are closed at the reload. Then a certificate the peer does not trust:
/// every request is refused and none reaches the peer.
#[test]
fn after_the_routes_client_certificate_is_replaced_no_request_goes_over_a_connection_made_with_the_old_one(
) {
    let s = Setup::start_with(loopback(free_port()), None, true);
    let client = s.client.as_ref().unwrap();
    let old = client.first.serial_hex();
    let mut conn = Conn::plain(s.egress).unwrap();
    for i in 0..3 {
        let resp = conn.request(&s.get()).unwrap();
        assert_eq!(resp.status, 200, "warm-up {i}: {}", resp.text());
        let resp = s.on_new_connection();
        assert_eq!(resp.status, 200, "warm-up {i}: {}", resp.text());
    }
    assert_eq!(s.serials_after(0), vec![old.clone(); 6]);

    let release = s.hold_answers();
    conn.send(&s.get()).unwrap();
    assert!(wait_until(Duration::from_secs(10), || s.peer.count() == 7));
    let connections = s.peer.connections();
    let fresh = s.pki.client(&client.ca, ClientOpts::uri("/id-in"));
    s.swap_client_cert(&fresh);
    release.store(true, Ordering::SeqCst);
    let resp = conn.read_response().unwrap();
    assert_eq!(resp.status, 200, "in flight at the swap: {}", resp.text());
    // every connection made with the old certificate: the idle ones at the reload, the one
    // that carried the request in flight once it is done
    assert!(
        s.peer_connections_closed_by_proxy(connections),
        "connections made with the old certificate still open: {} of {connections}",
        connections - s.peer.closed_by_client(),
    );
    for i in 0..3 {
        let resp = conn.request(&s.get()).unwrap();
        assert_eq!(resp.status, 200, "keep-alive {i}: {}", resp.text());
        let resp = s.on_new_connection();
        assert_eq!(resp.status, 200, "new connection {i}: {}", resp.text());
    }
    assert_eq!(
        s.serials_after(7),
        vec![fresh.serial_hex(); 6],
        "old certificate {old}"
    );

    // a certificate the peer does not trust: refused, nothing reaches the peer
    let calls = s.peer.count();
    let untrusted = s.pki.client(&s.unrelated, ClientOpts::uri("/id-in"));
    s.swap_client_cert(&untrusted);
    for i in 0..3 {
        let resp = conn.request(&s.get()).unwrap();
        assert_eq!(resp.status, 502, "keep-alive {i}: {}", resp.text());
        conn = Conn::plain(s.egress).unwrap();
        let resp = s.on_new_connection();
        assert_eq!(resp.status, 502, "new connection {i}: {}", resp.text());
    }
    assert_eq!(s.peer.count(), calls, "a request reached the peer");
}

/// `egress[].tls.server_name` is read at start only: a config edit is reported as needing a
/// restart and changes nothing (a name the peer's certificate lacks would fail every request).
#[test]
fn a_changed_server_name_needs_a_restart_and_is_not_applied_live() {
    let s = Setup::start(loopback(free_port()), None);
    assert_eq!(s.on_new_connection().status, 200);
    let config = std::fs::read_to_string(s.proxy.config_path()).unwrap();
    let changed = config.replace(
        "    tls:\n      ca:",
        "    tls:\n      server_name: not-the-peer.example\n      ca:",
    );
    assert_ne!(changed, config);
    s.proxy.rewrite_config(&changed);
    assert!(
        s.proxy
            .wait_stderr("changes to egress need a restart", Duration::from_secs(20)),
        "{}",
        s.proxy.stderr_text()
    );
    // a CA reload that still trusts the peer closes the pooled connection: the next request
    // makes a new one, with the name from the start
    s.swap_ca_bundle(&[&s.peer_ca, &s.unrelated]);
    let connections = s.peer.connections();
    let resp = s.on_new_connection();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(s.peer.connections() > connections, "a new connection");
}

/// The IN-CSE's part in IN → MN: each request it receives goes on to the route (GET, with
/// the CSE's own originator) over one connection it keeps alive while the route does, and
/// the route's answer goes back.
struct ForwardingCse {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl ForwardingCse {
    fn start(egress: SocketAddr) -> ForwardingCse {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let out: Arc<Mutex<Option<Conn>>> = Arc::new(Mutex::new(None));
        let accept = {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let out = out.clone();
                            thread::spawn(move || relay(tcp, egress, &out));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        ForwardingCse {
            addr,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ForwardingCse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay(tcp: TcpStream, egress: SocketAddr, out: &Mutex<Option<Conn>>) {
    let _ = tcp.set_nonblocking(false);
    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
    let mut wire = Wire::new(tcp);
    while let Ok(Some(head)) = wire.read_head() {
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let req = Request::get(&path)
            .header("X-M2M-Origin", "/id-in")
            .header("X-M2M-RI", "ri-forwarded");
        let answer = {
            let mut out = out.lock().unwrap();
            // a kept connection the route closed meanwhile: once more on a new one
            let mut answer = None;
            for _ in 0..2 {
                if out.is_none() {
                    *out = Conn::plain(egress).ok();
                }
                let Some(conn) = out.as_mut() else { break };
                match conn.request(&req) {
                    Ok(r) => {
                        if r.status != 200 {
                            *out = None;
                        }
                        answer = Some(r);
                        break;
                    }
                    Err(_) => *out = None,
                }
            }
            answer
        };
        let answer = answer.unwrap_or(Response {
            status: 504,
            ..Default::default()
        });
        // the oneM2M header fields go back with the answer
        let fields: String = answer
            .headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-m2m-"))
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let mut bytes = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{fields}\r\n",
            answer.status,
            answer.body.len()
        )
        .into_bytes();
        bytes.extend(&answer.body);
        if std::io::Write::write_all(&mut wire.stream, &bytes).is_err() {
            return;
        }
    }
}
