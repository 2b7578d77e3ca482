//! Egress (CSE to CSE over Mcc): two proxies, A in front of "the IN-CSE" and B in front of "the
//! MN-CSE", each with its own PKI, and recording upstreams standing in for the two CSEs. The
//! MN's outbound requests go to B's loopback egress listener, B proves the pod's identity to A
//! with a client certificate (SAN URI /id-mn), A's ingress authenticates it as usual; and the
//! other way round. `poa` URLs are rewritten between the peers' public URLs and the local
//! egress URLs, in JSON and CBOR bodies.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::creds::{htpasswd_line, metric, tokens_yaml};
use common::proxy::write_atomic;
use common::scenario::bin;
use common::{
    free_port, run_cli, CertKey, ClientOpts, Conn, EchoUpstream, Pki, ProxyProcess, Request,
};

/// One CSE with its sidecar: its own CA (which signs its server certificate and the client
/// certificates it trusts), its upstream, its addresses.
struct Side {
    pki: Pki,
    ca: CertKey,
    server: CertKey,
    upstream: EchoUpstream,
    addr: SocketAddr,
    admin: SocketAddr,
    egress: SocketAddr,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Side {
    fn new() -> Side {
        let pki = Pki::new();
        let ca = pki.ca("ca");
        let server = pki.server(&ca, "localhost", &["127.0.0.1"]);
        Side {
            upstream: EchoUpstream::start(),
            addr: loopback(free_port()),
            admin: loopback(free_port()),
            egress: loopback(free_port()),
            pki,
            ca,
            server,
        }
    }

    /// The public URL of this side's ingress.
    fn public(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The local URL of this side's egress route.
    fn local(&self) -> String {
        format!("http://{}", self.egress)
    }

    /// Config of this side: ingress with mTLS (verify mode, CSE namespaces) plus `auth_extra`,
    /// and `egress` as the route list.
    fn yaml(&self, auth_methods: &str, auth_extra: &str, egress: &str) -> String {
        let egress = if egress.is_empty() { " []\n" } else { egress };
        format!(
            "listen: \"{addr}\"\nthreads: 2\nadmin: \"{admin}\"\nupstream: \"{up}\"\ntls:\n  cert: {cert}\n  key: {key}\n  client_ca: {ca}\n  client_cert: optional\nauth:\n  methods: {auth_methods}\n  mtls:\n    identity: [uri]\n{auth_extra}originator:\n  mode: verify\n  cse_namespace: true\nshutdown:\n  grace_period: 1s\nreload:\n  poll_interval: 200ms\negress:{egress}",
            addr = self.addr,
            admin = self.admin,
            up = self.upstream.url(),
            cert = self.server.chain.display(),
            key = self.server.key.display(),
            ca = self.ca.cert.display(),
        )
    }

    /// A route on this side's egress listener to `peer`, trusting `peer_ca`; `client` is the
    /// identity presented to the peer; `extra` lines go into the route.
    fn route(
        &self,
        name: &str,
        peer: &Side,
        peer_ca: &CertKey,
        client: Option<&CertKey>,
        extra: &str,
    ) -> String {
        let mut r = format!(
            "\n  - name: {name}\n    listen: \"{}\"\n    peer: \"{}\"\n    tls:\n      ca: {}\n",
            self.egress,
            peer.public(),
            peer_ca.cert.display()
        );
        if let Some(c) = client {
            r.push_str(&format!(
                "      cert: {}\n      key: {}\n",
                c.chain.display(),
                c.key.display()
            ));
        }
        r.push_str(extra);
        r
    }

    fn start(&self, yaml: &str) -> ProxyProcess {
        ProxyProcess::start(&bin(), yaml)
    }
}

/// B (the MN's side) with a route to A (the IN's side) and A with a route back, both with
/// client certificates the other side's CA issued.
struct Pair {
    a: Side,
    b: Side,
    /// B's identity towards A (issued by A's CA): URI /id-mn.
    mn_cert: CertKey,
    pa: ProxyProcess,
    pb: ProxyProcess,
}

/// `auth.roles` giving the role `cse` to the certificate `name`: with a route's
/// `peer_roles: [cse]` that identity is the route's peer on the ingress (it acts as a CSE, its
/// request bodies get the route's `poa` rewriting).
fn cse_role(name: &str) -> String {
    format!("  roles:\n    cse: {{methods: [mtls], names: [\"{name}\"]}}\n")
}

const PEER_ROLES: &str = "    peer_roles: [cse]\n";

fn pair(b_route_extra: &str) -> Pair {
    let (a, b) = (Side::new(), Side::new());
    let mn_cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let in_cert = b.pki.client(&b.ca, ClientOpts::uri("/id-in"));
    let pa = a.start(&a.yaml(
        "[mtls]",
        &cse_role("/id-mn"),
        &a.route("mn", &b, &b.ca, Some(&in_cert), PEER_ROLES),
    ));
    let pb = b.start(&b.yaml(
        "[mtls]",
        &cse_role("/id-in"),
        &b.route(
            "registrar",
            &a,
            &a.ca,
            Some(&mn_cert),
            &format!("{PEER_ROLES}{b_route_extra}"),
        ),
    ));
    Pair {
        a,
        b,
        mn_cert,
        pa,
        pb,
    }
}

fn egress_request(addr: SocketAddr, req: &Request) -> common::Response {
    Conn::plain(addr)
        .and_then(|mut c| c.request(req))
        .unwrap_or_else(|e| panic!("egress request to {addr}: {e}"))
}

fn dbg(resp: &common::Response) -> String {
    resp.json()["m2m:dbg"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn each_cse_reaches_the_other_with_its_pods_identity_and_nothing_else() {
    let p = pair("    originators: [\"^/id-mn(/.*)?$\"]\n");
    // the MN registers at the IN: through B's egress, authenticated by A as /id-mn
    let req = Request::post("/cse-in", br#"{"m2m:csr":{"rn":"id-mn"}}"#.to_vec())
        .header("Content-Type", "application/xml")
        .header("X-M2M-Origin", "/id-mn")
        .header("X-M2M-RI", "reg-1")
        .header("Authorization", "Basic bW46c2VjcmV0")
        .header("X-Forwarded-For", "10.9.9.9")
        .header("X-Forwarded-Host", "evil");
    let resp = egress_request(p.b.egress, &req);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RI"), Some("reg-1"));
    let seen = p.a.upstream.last().expect("the IN received it");
    assert_eq!(seen.header_values("X-M2M-Origin"), ["/id-mn"]);
    assert_eq!(
        seen.header("Authorization"),
        None,
        "the CSE's own credentials stay home"
    );
    assert_eq!(
        seen.header_values("X-Forwarded-For"),
        ["127.0.0.1"],
        "set by A, not B's CSE"
    );
    assert_eq!(seen.header("X-Forwarded-Host"), None);
    assert_eq!(
        seen.body, br#"{"m2m:csr":{"rn":"id-mn"}}"#,
        "other bodies pass byte-identical"
    );
    // an AE of the MN, forwarded by the MN (A allows the CSE's namespace)
    let resp = egress_request(
        p.b.egress,
        &Request::get("/~/id-in/cse-in").header("X-M2M-Origin", "/id-mn/Cae1"),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(
        p.a.upstream.last().unwrap().header_values("X-M2M-Origin"),
        ["/id-mn/Cae1"]
    );
    // A's ingress still decides: an originator outside /id-mn's namespace is refused by A
    let resp = egress_request(
        p.b.egress,
        &Request::get("/cse-in").header("X-M2M-Origin", "/id-mn-other"),
    );
    assert_eq!(
        resp.status, 403,
        "route pattern does not match: refused by B"
    );
    // the IN calls the MN back: through A's egress, authenticated by B as /id-in
    let before = p.b.upstream.count();
    let resp = egress_request(
        p.a.egress,
        &Request::get("/cse-mn").header("X-M2M-Origin", "/id-in"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(p.b.upstream.count(), before + 1);
    assert_eq!(
        p.b.upstream.last().unwrap().header_values("X-M2M-Origin"),
        ["/id-in"]
    );
    // metrics and the access log
    let (_, scrape) = p.pb.admin_get("/metrics").unwrap();
    assert!(
        metric(
            &scrape,
            "m2m_auth_proxy_egress_requests_total{outcome=\"forwarded\",route=\"registrar\"}"
        ) >= 2.0,
        "{scrape}"
    );
    assert!(
        metric(
            &scrape,
            "m2m_auth_proxy_egress_requests_total{outcome=\"refused\",route=\"registrar\"}"
        ) >= 1.0
    );
    assert!(scrape.contains("m2m_auth_proxy_certificate_not_after_timestamp_seconds{kind=\"egress_client:registrar\""), "{scrape}");
    let line =
        p.pb.wait_stdout("\"direction\":\"egress\"", Duration::from_secs(5))
            .expect("an egress access-log line");
    assert!(line.contains("\"route\":\"registrar\""), "{line}");
    assert!(
        !line.contains("bW46c2VjcmV0"),
        "no credential in the log: {line}"
    );
    let _ = &p.mn_cert;
}

#[test]
fn an_originator_outside_the_routes_list_is_refused_before_leaving_the_pod() {
    let p = pair("    originators: [\"^/id-mn(/.*)?$\"]\n");
    let resp = egress_request(
        p.b.egress,
        &Request::get("/cse-in")
            .header("X-M2M-Origin", "CAdmin")
            .header("X-M2M-RI", "ri-7"),
    );
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("X-M2M-RSC"), Some("4103"));
    assert_eq!(resp.header("X-M2M-RI"), Some("ri-7"));
    assert!(dbg(&resp).contains("egress registrar"), "{}", dbg(&resp));
    assert_eq!(p.a.upstream.count(), 0, "nothing reached the peer");
}

/// The peer's CSE must read a head as the peer's sidecar does (issue 26, class 3): the egress
/// listener forwards only the binding's methods in capitals and one plain-ASCII Content-Type.
#[test]
fn heads_a_peer_could_read_two_ways_do_not_leave_the_pod() {
    let p = pair("");
    let delete = Request::new("delete", "/~/id-in/cse-in/x")
        .header("X-M2M-Origin", "/id-mn")
        .header("X-M2M-RI", "ri-8");
    let resp = egress_request(p.b.egress, &delete);
    assert_eq!(resp.status, 405, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("4005"));
    assert_eq!(resp.header("X-M2M-RI"), Some("ri-8"));
    let two = Request::post("/~/id-in/cse-in", b"{}".to_vec())
        .header("X-M2M-Origin", "/id-mn")
        .header("Content-Type", "application/json")
        .header("Content-Type", "application/json;ty=3");
    let resp = egress_request(p.b.egress, &two);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("4000"));
    assert_eq!(p.a.upstream.count(), 0, "nothing reached the peer");
}

#[test]
fn every_originator_value_must_be_readable_single_and_allowed_before_anything_leaves() {
    let p = pair("    originators: [\"^/id-mn(/.*)?$\"]\n");
    let raw = |origins: &[&[u8]]| {
        let mut head = b"GET /cse-in HTTP/1.1\r\nHost: peer\r\nX-M2M-RI: ri-o\r\n".to_vec();
        for o in origins {
            head.extend_from_slice(b"X-M2M-Origin: ");
            head.extend_from_slice(o);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let mut conn = Conn::plain(p.b.egress).unwrap();
        conn.send_raw(&head).unwrap();
        conn.read_response().unwrap()
    };
    for origins in [
        &[&b"CAdmin\xff"[..], b"/id-mn/a"][..],
        &[b"/id-mn/a", b"CAdmin\xff"],
        &[b"/id-mn/a", b"/id-mn/b"],
        &[b"/id-mn/a", b"/id-mn/a"],
        &[b"/id-mn/a,CAdmin"],
        &[b"/id-mn/\xc3\xa9"],
        &[],
    ] {
        let resp = raw(origins);
        assert_eq!(resp.status, 403, "{origins:?}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4103"));
    }
    assert_eq!(p.a.upstream.count(), 0, "nothing reached the peer");
    let resp = raw(&[b"/id-mn/Ca"]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(p.a.upstream.count(), 1);
}

/// Issue 29 through both sidecars, in front of an IN that gives AEs resource IDs in one flat
/// space as ACME does: what the MN forwards for its AEs stays in its namespace, one AE-ID
/// segment with its own prefix, and cannot take or shadow the IN's IDs.
#[test]
fn an_mn_cannot_take_in_side_ae_ids_or_shadow_a_cse_through_its_namespace() {
    let (a, b) = (Side::new(), Side::new());
    let mn_cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let local_ae = a.pki.client(&a.ca, ClientOpts::uri("Cinae"));
    a.upstream.assign_ae_ids();
    let yaml_a = a
        .yaml("[mtls]", "", "")
        .replace(
            "  cse_namespace: true\n",
            "  cse_namespace: true\n  cse_ae_ids:\n    /id-mn: \"^Cmn-\"\n",
        )
        .replace(
            "shutdown:\n",
            "cse:\n  id: /id-in\n  name: cse-in\n  sp_id: acme.example.com\nshutdown:\n",
        );
    let _pa = a.start(&yaml_a);
    // no originators list on B's route: A's ingress is what decides here
    let _pb = b.start(&b.yaml(
        "[mtls]",
        "",
        &b.route("registrar", &a, &a.ca, Some(&mn_cert), ""),
    ));
    let register = |origin: &str| {
        egress_request(
            b.egress,
            &Request::post(
                "/~/id-in/cse-in",
                br#"{"m2m:ae":{"rn":"x","api":"Nx","rr":false}}"#.to_vec(),
            )
            .header("Content-Type", "application/json;ty=2")
            .header("X-M2M-Origin", origin),
        )
    };
    // the MN may not register an AE under the IN's own AE-ID space, nor anything but one
    // AE-ID segment: no AE named after a CSE
    for origin in [
        "/id-mn/Cinae",
        "/id-mn/Cmn-x/id-mn2",
        "/id-mn/id-mn2",
        "/id-in/Cinae",
        "//acme.example.com/id-in/Cinae",
        "/id-mn2/Cmn-1",
    ] {
        let resp = register(origin);
        assert_eq!(resp.status, 403, "{origin}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4103"), "{origin}");
    }
    assert!(a.upstream.ae_ids().is_empty(), "{:?}", a.upstream.ae_ids());
    // the IN's own AE registers under its ID, the MN's AEs under their prefix, in any form
    let resp = s_request(&a, &local_ae, "Cinae");
    assert_eq!(resp.status, 201, "{}", resp.text());
    for (origin, forwarded) in [
        ("/id-mn/Cmn-ae1", "/id-mn/Cmn-ae1"),
        ("//acme.example.com/id-mn/Cmn-ae2", "/id-mn/Cmn-ae2"),
    ] {
        let resp = register(origin);
        assert_eq!(resp.status, 201, "{origin}: {}", resp.text());
        assert_eq!(
            a.upstream.last().unwrap().header_values("X-M2M-Origin"),
            [forwarded]
        );
    }
    let ids = a.upstream.ae_ids();
    assert_eq!(ids.get("Cinae").map(String::as_str), Some("Cinae"));
    assert_eq!(
        ids.get("Cmn-ae1").map(String::as_str),
        Some("/id-mn/Cmn-ae1")
    );
    assert_eq!(
        ids.get("Cmn-ae2").map(String::as_str),
        Some("/id-mn/Cmn-ae2")
    );
    assert_eq!(ids.len(), 3);
    // the IN's AE written SP-relative is still itself: its ID is taken, by itself
    let resp = s_request(&a, &local_ae, "/id-in/Cinae");
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert_eq!(
        a.upstream.last().unwrap().header_values("X-M2M-Origin"),
        ["Cinae"]
    );
}

/// An AE registration at `side`'s ingress with the certificate `cert`, claiming `origin`.
fn s_request(side: &Side, cert: &CertKey, origin: &str) -> common::Response {
    common::ClientTls::new(&side.ca.cert)
        .cert(cert)
        .connect_and_request(
            side.addr,
            &Request::post(
                "/cse-in",
                br#"{"m2m:ae":{"rn":"x","api":"Nx","rr":false}}"#.to_vec(),
            )
            .header("Content-Type", "application/json;ty=2")
            .header("X-M2M-Origin", origin),
        )
        .unwrap()
}

#[test]
fn a_peer_certificate_from_another_ca_is_refused_with_502_5103() {
    let (a, b) = (Side::new(), Side::new());
    let mn_cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let _pa = a.start(&a.yaml("[mtls]", "", ""));
    let other_ca = b.pki.ca("other");
    let _pb = b.start(&b.yaml(
        "[mtls]",
        "",
        &b.route("registrar", &a, &other_ca, Some(&mn_cert), ""),
    ));
    let resp = egress_request(
        b.egress,
        &Request::get("/cse-in")
            .header("X-M2M-Origin", "/id-mn")
            .header("X-M2M-RI", "ri-1"),
    );
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("5103"));
    assert_eq!(resp.header("X-M2M-RI"), Some("ri-1"));
    assert_eq!(dbg(&resp), "egress registrar: peer certificate not trusted");
    assert_eq!(a.upstream.count(), 0);
}

#[test]
fn a_client_certificate_the_peer_does_not_trust_is_502_5103_and_nothing_arrives() {
    let (a, b) = (Side::new(), Side::new());
    // A requires client certificates; B presents one from a CA that A does not know
    let yaml_a = a
        .yaml("[mtls]", "", "")
        .replace("client_cert: optional", "client_cert: required");
    let _pa = a.start(&yaml_a);
    let rogue_ca = b.pki.ca("rogue");
    let rogue = b.pki.client(&rogue_ca, ClientOpts::uri("/id-mn"));
    let _pb = b.start(&b.yaml(
        "[mtls]",
        "",
        &b.route("registrar", &a, &a.ca, Some(&rogue), ""),
    ));
    for (i, path) in ["/cse-in", "/cse-in/x"].iter().enumerate() {
        let resp = egress_request(
            b.egress,
            &Request::post(path, b"{}".to_vec()).header("X-M2M-Origin", "/id-mn"),
        );
        assert_eq!(resp.status, 502, "request {i}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("5103"));
        assert_eq!(
            dbg(&resp),
            "egress registrar: peer refused our client certificate"
        );
    }
    assert_eq!(a.upstream.count(), 0);
}

#[test]
fn basic_and_bearer_credentials_for_peers_that_want_them() {
    let (a, b) = (Side::new(), Side::new());
    a.pki.write(
        "htpasswd",
        format!("{}\n", htpasswd_line("mn-gw", "s3cret pass")).as_bytes(),
    );
    a.pki.write(
        "tokens.yaml",
        tokens_yaml(&[("mn", "tok-123456", "/id-mn")]).as_bytes(),
    );
    let auth = format!(
        "  basic:\n    htpasswd: {}\n    allow_insecure_hashes: true\n    originators:\n      mn-gw: /id-mn\n  bearer:\n    tokens: {}\n",
        a.pki.path("htpasswd").display(),
        a.pki.path("tokens.yaml").display()
    );
    let _pa = a.start(&a.yaml("[basic, bearer]", &auth, ""));
    let password = b.pki.write("password", b"s3cret pass\n");
    let token = b.pki.write("token", b"tok-123456\n");
    let c = Side::new();
    let routes = format!(
        "{}{}",
        b.route(
            "basic-peer",
            &a,
            &a.ca,
            None,
            &format!(
                "    basic:\n      user: mn-gw\n      password_file: {}\n",
                password.display()
            )
        ),
        c.route(
            "bearer-peer",
            &a,
            &a.ca,
            None,
            &format!("    bearer:\n      token_file: {}\n", token.display())
        )
    );
    let _pb = b.start(&b.yaml("[mtls]", "", &routes));
    for listen in [b.egress, c.egress] {
        let before = a.upstream.count();
        let resp = egress_request(
            listen,
            &Request::get("/cse-in").header("X-M2M-Origin", "/id-mn"),
        );
        assert_eq!(resp.status, 200, "{listen}: {}", resp.text());
        assert_eq!(a.upstream.count(), before + 1);
        assert_eq!(
            a.upstream.last().unwrap().header_values("X-M2M-Origin"),
            ["/id-mn"]
        );
    }
    // a wrong password file is the peer's 401, passed back as it is
    write_atomic(&password, b"wrong\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = egress_request(
            b.egress,
            &Request::get("/cse-in").header("X-M2M-Origin", "/id-mn"),
        );
        if resp.status == 401 {
            assert_eq!(resp.header("X-M2M-RSC"), Some("4107"));
            break;
        }
        assert!(Instant::now() < deadline, "password file not reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const JSON: &str = "application/json";

#[test]
fn poa_urls_are_rewritten_both_ways_in_json_and_cbor_and_other_bodies_pass_unchanged() {
    let p = pair("");
    let (a, b) = (&p.a, &p.b);
    // 1. the MN retrieves the IN's CSEBase: its poa (A's public URL) becomes B's egress URL
    let cb = format!(
        "{{\"m2m:cb\": {{\"rn\":\"cse-in\", \"csi\":\"/id-in\", \"poa\": [\"{}\", \"mqtt://broker:1883\"]}}}}",
        a.public()
    );
    a.upstream.set_response(Some((JSON, cb.as_bytes())));
    let resp = egress_request(
        b.egress,
        &Request::get("/~/id-in/cse-in").header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.status, 200);
    let expected = cb.replace(&a.public(), &b.local());
    assert_eq!(resp.text(), expected, "only the poa string changed");
    // 2. the MN creates its <remoteCSE> at the IN with its own public URL (B's ingress): A turns
    //    it into A's egress URL for the MN, Content-Length recomputed
    a.upstream.set_response(None);
    let csr = format!(
        "{{\"m2m:csr\":{{\"rn\":\"id-mn\",\"csi\":\"/id-mn\",\"cb\":\"/id-mn/cse-mn\",\"poa\":[\"{}/\"],\"rr\":true}}}}",
        b.public()
    );
    let resp = egress_request(
        b.egress,
        &Request::post("/cse-in", csr.clone().into_bytes())
            .header("Content-Type", "application/json;ty=16")
            .header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.status, 200);
    let seen = a.upstream.last().unwrap();
    let want = csr.replace(&b.public(), &a.local());
    assert_eq!(String::from_utf8_lossy(&seen.body), want);
    assert_eq!(
        seen.header("Content-Length"),
        Some(want.len().to_string().as_str())
    );
    // 3. the same in CBOR
    let cbor = cbor_csr(&format!("{}/x", b.public()));
    let resp = egress_request(
        b.egress,
        &Request::post("/cse-in", cbor)
            .header("Content-Type", "application/vnd.onem2m-res+cbor;ty=16")
            .header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.status, 200);
    let seen = a.upstream.last().unwrap();
    assert_eq!(cbor_poa(&seen.body), vec![format!("{}/x", a.local())]);
    assert_eq!(
        seen.header("Content-Length"),
        Some(seen.body.len().to_string().as_str())
    );
    // 4. the IN answers with the MN's poa in its local form: A sends it away as B's public URL
    let csr_at_in = format!("{{\"m2m:csr\":{{\"poa\":[\"{}\"]}}}}", a.local());
    a.upstream.set_response(Some((
        "application/vnd.onem2m-res+json",
        csr_at_in.as_bytes(),
    )));
    let resp = egress_request(
        b.egress,
        &Request::get("/cse-in/id-mn").header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.text(), csr_at_in.replace(&a.local(), &b.public()));
    // 5. bodies without poa, and XML, pass byte-identical
    let plain = "{ \"m2m:cin\" : {\"con\": \"https:\\/\\/x\"} }";
    a.upstream.set_response(Some((JSON, plain.as_bytes())));
    let resp = egress_request(
        b.egress,
        &Request::get("/cse-in/c").header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.text(), plain);
    let xml = format!("<m2m:cb><poa>{}</poa></m2m:cb>", a.public());
    a.upstream
        .set_response(Some(("application/xml", xml.as_bytes())));
    let resp = egress_request(
        b.egress,
        &Request::get("/cse-in").header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.text(), xml, "XML is not rewritten");
    assert_eq!(
        resp.header("Content-Length"),
        Some(xml.len().to_string().as_str())
    );
    // counted per route and direction
    let (_, scrape) = p.pb.admin_get("/metrics").unwrap();
    assert!(
        metric(&scrape, "m2m_auth_proxy_egress_poa_rewrites_total{direction=\"toward_local\",kind=\"route\",route=\"registrar\"}") >= 1.0,
        "{scrape}"
    );
    let (_, scrape) = p.pa.admin_get("/metrics").unwrap();
    assert!(
        metric(
            &scrape,
            "m2m_auth_proxy_egress_poa_rewrites_total{direction=\"toward_local\",kind=\"route\",route=\"mn\"}"
        ) >= 2.0,
        "{scrape}"
    );
    assert!(
        metric(
            &scrape,
            "m2m_auth_proxy_egress_poa_rewrites_total{direction=\"away_from_local\",kind=\"route\",route=\"mn\"}"
        ) >= 1.0,
        "{scrape}"
    );
}

fn cbor_csr(poa: &str) -> Vec<u8> {
    use ciborium::value::Value;
    let csr = Value::Map(vec![(
        Value::Text("m2m:csr".into()),
        Value::Map(vec![
            (Value::Text("rn".into()), Value::Text("id-mn".into())),
            (
                Value::Text("poa".into()),
                Value::Array(vec![Value::Text(poa.into())]),
            ),
        ]),
    )]);
    let mut out = Vec::new();
    ciborium::into_writer(&csr, &mut out).unwrap();
    out
}

fn cbor_poa(body: &[u8]) -> Vec<String> {
    use ciborium::value::Value;
    let v: Value = ciborium::from_reader(body).expect("valid CBOR upstream");
    let csr = v.as_map().unwrap()[0].1.as_map().unwrap().clone();
    let poa = csr
        .iter()
        .find(|(k, _)| k.as_text() == Some("poa"))
        .map(|(_, v)| v.clone())
        .unwrap();
    poa.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_text().unwrap().to_string())
        .collect()
}

#[test]
fn the_routes_client_certificate_and_ca_reload_under_keep_alive_load_without_a_failed_request() {
    let p = pair("");
    let (a, b) = (&p.a, &p.b);
    // the route's files as their own copies, so they can be rewritten
    let cert = b.pki.write(
        "route-client.pem",
        &std::fs::read(&p.mn_cert.chain).unwrap(),
    );
    let key = b
        .pki
        .write("route-client.key", &std::fs::read(&p.mn_cert.key).unwrap());
    let ca = b
        .pki
        .write("route-ca.pem", &std::fs::read(&a.ca.cert).unwrap());
    let route = format!(
        "\n  - name: registrar\n    listen: \"{}\"\n    peer: \"{}\"\n    tls:\n      ca: {}\n      cert: {}\n      key: {}\n",
        b.egress,
        a.public(),
        ca.display(),
        cert.display(),
        key.display()
    );
    let mut pb = p.pb;
    pb.stop();
    let pb = b.start(&b.yaml("[mtls]", "", &route));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed, egress) = (stop.clone(), ok.clone(), failed.clone(), b.egress);
            std::thread::spawn(move || {
                let mut conn = Conn::plain(egress).unwrap();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let req = Request::get("/cse-in").header("X-M2M-Origin", "/id-mn");
                    match conn.request(&req) {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => {
                            conn = Conn::plain(egress).unwrap();
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    let reloads = |kind: &str| {
        let (_, scrape) = pb.admin_get("/metrics").unwrap();
        metric(
            &scrape,
            &format!("m2m_auth_proxy_reloads_total{{file=\"{kind}\",result=\"success\"}}"),
        )
    };
    for round in 0..5 {
        let (cert_before, ca_before) = (reloads("egress_client_cert"), reloads("egress_ca"));
        // a new client certificate for the same identity, and the CA bundle with a second CA
        let fresh = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
        write_atomic(&key, &std::fs::read(&fresh.key).unwrap());
        write_atomic(&cert, &std::fs::read(&fresh.chain).unwrap());
        let extra = b.pki.ca(&format!("extra-{round}"));
        let mut bundle = std::fs::read(&a.ca.cert).unwrap();
        bundle.extend(std::fs::read(&extra.cert).unwrap());
        write_atomic(&ca, &bundle);
        let deadline = Instant::now() + Duration::from_secs(5);
        while reloads("egress_client_cert") <= cert_before || reloads("egress_ca") <= ca_before {
            assert!(
                Instant::now() < deadline,
                "round {round}: not reloaded\n{}",
                pb.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed requests");
    assert!(
        ok.load(Ordering::SeqCst) > 20,
        "load ran: {}",
        ok.load(Ordering::SeqCst)
    );
    // new connections use the new certificate: A sees the new serial only through its log;
    // what matters here is that they are still admitted as /id-mn
    assert_eq!(
        a.upstream.last().unwrap().header_values("X-M2M-Origin"),
        ["/id-mn"]
    );
}

#[test]
fn check_names_what_is_wrong_with_a_route() {
    let (a, b) = (Side::new(), Side::new());
    let good = b.route("registrar", &a, &a.ca, None, "");
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace(
                &format!("listen: \"{}\"", b.egress),
                "listen: \"0.0.0.0:18081\"",
            ),
            "egress[0].listen",
        ),
        (
            good.replace(&a.public(), &a.public().replace("https", "http")),
            "egress[0].peer",
        ),
        (
            format!(
                "\n  - name: registrar\n    listen: \"{}\"\n    peer: \"{}\"\n",
                b.egress,
                a.public()
            ),
            "egress[0].tls.ca",
        ),
        (
            good.replace("name: registrar", "name: Registrar!"),
            "egress[0].name",
        ),
        (
            format!("{good}    originators: [\"(\"]\n"),
            "egress[0].originators",
        ),
        (
            format!("{good}{}", good.replace("name: registrar", "name: other")),
            "egress[1].listen",
        ),
    ];
    for (routes, key) in cases {
        let path: PathBuf = b
            .pki
            .write("check.yaml", b.yaml("[mtls]", "", &routes).as_bytes());
        let (code, out, err) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{key}: accepted\n{out}");
        assert!(err.contains(key), "{key}: {err}");
    }
    // plain http is possible when asked for, and `check` says so
    let plain = good.replace(&a.public(), &a.public().replace("https", "http"));
    let plain = plain.replace(
        &format!("    tls:\n      ca: {}\n", a.ca.cert.display()),
        "    allow_plain_peer: true\n",
    );
    let path = b
        .pki
        .write("plain.yaml", b.yaml("[mtls]", "", &plain).as_bytes());
    let (code, out, err) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("egress registrar"), "{out}");
    assert!(err.contains("plain http"), "{err}");
}

/// WebSocket upgrades pass through the route; the peer's ingress holds every primitive's `fr`
/// to the pod's identity as it does for any client.
#[test]
fn a_websocket_of_the_local_cse_goes_through_the_route_to_the_peers_gate() {
    let p = pair("");
    let mut conn = Conn::plain(p.b.egress).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(&Request::websocket("/ws", &["oneM2M.json"]).header("X-M2M-Origin", "/id-mn"))
        .unwrap();
    assert_eq!(resp.status, 101, "{}", resp.text());
    assert_eq!(resp.header("Sec-WebSocket-Protocol"), Some("oneM2M.json"));
    let own = br#"{"op":2,"to":"/id-in/cse-in","fr":"/id-mn","rqi":"w1","rvi":"3"}"#;
    conn.ws_send(common::WS_TEXT, own, true).unwrap();
    let (_, echoed, _) = conn.ws_recv().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&echoed).unwrap();
    assert_eq!(v["fr"], "/id-mn", "{v}");
    // another CSE's originator is refused by the peer's gate (verify mode), on the same socket
    let other = br#"{"op":2,"to":"/id-in/cse-in","fr":"/id-xx","rqi":"w2","rvi":"3"}"#;
    conn.ws_send(common::WS_TEXT, other, true).unwrap();
    let (_, refusal, _) = conn.ws_recv().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&refusal).unwrap();
    assert_eq!(v["rsc"], 4103, "{v}");
    assert_eq!(v["rqi"], "w2");
}

/// A peer that speaks only TLS 1.1 is not used, whatever Pingora's client context would allow.
#[test]
fn a_peer_below_tls_1_2_is_refused() {
    use openssl::ssl::{SslAcceptor, SslMethod, SslVersion};
    use std::net::TcpListener;
    let b = Side::new();
    let peer_pki = Pki::new();
    let peer_ca = peer_pki.ca("old-peer-ca");
    let peer_cert = peer_pki.server(&peer_ca, "localhost", &["127.0.0.1"]);
    let mut acceptor = SslAcceptor::mozilla_intermediate(SslMethod::tls()).unwrap();
    acceptor
        .set_certificate_chain_file(&peer_cert.chain)
        .unwrap();
    acceptor
        .set_private_key_file(&peer_cert.key, openssl::ssl::SslFiletype::PEM)
        .unwrap();
    acceptor
        .set_min_proto_version(Some(SslVersion::TLS1))
        .unwrap();
    acceptor
        .set_max_proto_version(Some(SslVersion::TLS1_1))
        .unwrap();
    acceptor.set_cipher_list("DEFAULT@SECLEVEL=0").unwrap();
    let acceptor = acceptor.build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        // a handful of handshakes at most; the test ends the process
        for stream in listener.incoming().take(4).flatten() {
            if let Ok(mut tls) = acceptor.accept(stream) {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = std::io::Write::write_all(
                    &mut tls,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                );
            }
        }
    });
    let route = format!(
        "\n  - name: old\n    listen: \"{}\"\n    peer: \"https://127.0.0.1:{port}\"\n    tls:\n      ca: {}\n",
        b.egress,
        peer_ca.cert.display()
    );
    let _pb = b.start(&b.yaml("[mtls]", "", &route));
    let resp = egress_request(b.egress, &Request::get("/x").header("X-M2M-RI", "old-1"));
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("5103"));
    assert!(dbg(&resp).starts_with("egress old: "), "{}", dbg(&resp));
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "no request was sent over TLS 1.1"
    );
}

/// A client that asks `Expect: 100-continue` for a body the proxy reads whole to rewrite its
/// `poa` (on the egress and on the ingress side) gets its `100 Continue` from the proxy: the
/// body is read before anything goes upstream, so no upstream could send one, and without it
/// the client would wait for its own expect timeout.
#[test]
fn a_client_expecting_100_continue_gets_it_when_the_poa_body_is_read_first() {
    let p = pair("");
    let (a, b) = (&p.a, &p.b);
    let csr = format!(
        "{{\"m2m:csr\":{{\"rn\":\"id-mn\",\"csi\":\"/id-mn\",\"poa\":[\"{}/\"]}}}}",
        b.public()
    );
    // the egress side (plain HTTP from the local CSE) and the ingress side (mTLS from a peer)
    let egress = Conn::plain(b.egress).unwrap();
    let ingress = common::ClientTls::new(&a.ca.cert)
        .cert(&p.mn_cert)
        .connect(a.addr)
        .unwrap();
    for (side, mut conn) in [("egress", egress), ("ingress", ingress)] {
        conn.set_timeout(Duration::from_secs(3));
        conn.send(
            &Request::new("POST", "/cse-in")
                .header("Content-Type", "application/json;ty=16")
                .header("Content-Length", &csr.len().to_string())
                .header("Expect", "100-continue")
                .header("X-M2M-Origin", "/id-mn"),
        )
        .unwrap();
        let interim = conn
            .read_response_or_interim()
            .unwrap_or_else(|e| panic!("{side}: no interim answer before the body: {e}"));
        assert_eq!(interim.status, 100, "{side}: {:?}", interim.headers);
        conn.send_raw(csr.as_bytes()).unwrap();
        let resp = conn.read_response().unwrap();
        assert_eq!(resp.status, 200, "{side}: {}", resp.text());
        let seen = a.upstream.last().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&seen.body),
            csr.replace(&b.public(), &a.local()),
            "{side}: the body arrived rewritten"
        );
        assert_eq!(seen.header("Expect"), None, "{side}: answered by the proxy");
    }
}

/// Issue 28: bodies read whole for `poa` rewriting count against `limits.buffer_budget`; one
/// that would exceed it is refused 503 in oneM2M form (and counted), not buffered, and the
/// CSE receives no complete request.
#[test]
fn a_body_read_for_poa_rewriting_beyond_the_buffer_budget_is_refused_503() {
    let (a, b) = (Side::new(), Side::new());
    let yaml = a.yaml("[mtls]", "", &a.route("mn", &b, &b.ca, None, ""))
        + "\nlimits:\n  buffer_budget: 1048576\n  egress_rewrite_max_body: 4194304\n";
    let proxy = a.start(&yaml);
    let client = a.pki.client(&a.ca, ClientOpts::uri("Cae1"));
    let tls = common::ClientTls::new(&a.ca.cert).cert(&client);
    let send = |len: usize| {
        let mut body = br#"{"m2m:cin":{"con":""#.to_vec();
        body.resize(len - 3, b'c');
        body.extend_from_slice(b"\"}}");
        let req = Request::post("/cse-in/cnt", body)
            .header("Content-Type", "application/json")
            .header("X-M2M-Origin", "Cae1")
            .header("X-M2M-RI", "big-1");
        tls.connect_and_request(a.addr, &req).unwrap()
    };
    let small = send(16 * 1024);
    assert_eq!(small.status, 200, "{}", small.text());
    let large = send(200 * 1024); // collected as it streams (over the 64 KiB pre-read)
    assert_eq!(large.status, 200, "{}", large.text());
    let before = a.upstream.count();
    // declared larger than the budget: refused before the body is sent (it waits for 100)
    let mut conn = tls.connect(a.addr).unwrap();
    let head = format!(
        "POST /cse-in/cnt HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-M2M-Origin: Cae1\r\nX-M2M-RI: big-1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        1536 * 1024
    );
    conn.send_raw(head.as_bytes()).unwrap();
    let big = conn.read_response().unwrap();
    assert_eq!(big.status, 503, "{}", big.text());
    assert_eq!(big.header("X-M2M-RSC"), Some("5000"));
    assert_eq!(big.header("X-M2M-RI"), Some("big-1"));
    assert!(big.text().contains("buffer budget"), "{}", big.text());
    assert_eq!(
        a.upstream.count(),
        before,
        "nothing complete reached the CSE"
    );
    let scrape = proxy.admin_get("/metrics").unwrap().1;
    assert_eq!(
        metric(
            &scrape,
            "m2m_auth_proxy_buffer_budget_refusals_total{what=\"request_body\"}"
        ),
        1.0
    );
}

/// An egress route refuses a peer that breaks the outbound TLS policy (static-RSA or CBC suites
/// only, or a certificate that names `server_name` in its CN only) with 502/5103 naming why,
/// and nothing reaches the peer.
#[test]
fn a_peer_without_forward_secrecy_aead_or_a_san_is_refused() {
    let b = Side::new();
    let peer_pki = Pki::new();
    let peer_ca = peer_pki.ca("weak-peer-ca");
    let peers = common::https::policy_breaking_peers(&peer_pki, &peer_ca, "peer.test");
    let mut routes = String::new();
    let mut endpoints = Vec::new();
    let mut listeners = Vec::new();
    for (i, (what, cert, tls)) in peers.into_iter().enumerate() {
        let endpoint =
            common::https::HttpsEndpoint::start_with(&cert, None, tls, |_| (200, "{}".into()));
        let listen = loopback(free_port());
        // the CN-only certificate is checked for peer.test, the others for 127.0.0.1
        let server_name = if what.contains("CN") {
            "      server_name: peer.test\n"
        } else {
            ""
        };
        routes.push_str(&format!(
            "\n  - name: weak-{i}\n    listen: \"{listen}\"\n    peer: \"https://127.0.0.1:{}\"\n    tls:\n      ca: {}\n{server_name}",
            endpoint.addr.port(),
            peer_ca.cert.display()
        ));
        endpoints.push((what, endpoint));
        listeners.push(listen);
    }
    let _pb = b.start(&b.yaml("[mtls]", "", &routes));
    for ((what, endpoint), listen) in endpoints.iter().zip(&listeners) {
        let resp = egress_request(*listen, &Request::get("/x").header("X-M2M-RI", "weak-1"));
        assert_eq!(resp.status, 502, "{what}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("5103"), "{what}");
        let why = dbg(&resp);
        let expected = if what.contains("CN") {
            "does not name the peer"
        } else {
            "ECDHE and AEAD"
        };
        assert!(why.contains(expected), "{what}: {why}");
        assert_eq!(endpoint.count(), 0, "{what}: a request reached the peer");
    }
}

/// A peer (A) that rewrites nothing itself (no routes of its own), in front of a scripted CSE,
/// and B with a route to it: what B's route sends is what that CSE sees, byte for byte. `b_extra`
/// goes into B's config at the top level.
struct ToScripted {
    a: Side,
    b: Side,
    cse: common::wiretap::ScriptedUpstream,
    _pa: ProxyProcess,
    pb: ProxyProcess,
}

fn to_scripted(
    b_extra: &str,
    script: impl Fn(&common::wiretap::Seen) -> common::wiretap::Reply + Send + Sync + 'static,
) -> ToScripted {
    let (a, b) = (Side::new(), Side::new());
    let mn_cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let cse = common::wiretap::ScriptedUpstream::start_on(free_port(), script);
    let a_yaml = a
        .yaml("[mtls]", "", "")
        .replace(&a.upstream.url(), &format!("http://{}", cse.addr()));
    let pa = a.start(&a_yaml);
    let pb = b.start(&b.yaml(
        "[mtls]",
        b_extra,
        &b.route("registrar", &a, &a.ca, Some(&mn_cert), ""),
    ));
    ToScripted {
        a,
        b,
        cse,
        _pa: pa,
        pb,
    }
}

/// A raw response: `HTTP/1.1 200 OK`, JSON, the body with `Content-Length` or chunked (in
/// pieces of at most 1000 bytes).
fn json_answer(body: &[u8], chunked: bool) -> Vec<u8> {
    let mut out =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-M2M-RSC: 2000\r\n".to_vec();
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for piece in body.chunks(1000) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }
    out
}

/// A `poa` rewrite changes a body's length: the rewritten body leaves the route with its exact
/// `Content-Length` and no chunking, in both directions, whichever framing it came with; the
/// local CSE's connection stays usable throughout.
#[test]
fn rewritten_poa_bodies_leave_with_their_exact_content_length_both_ways() {
    let a_public = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let public = a_public.clone();
    let t = to_scripted("", move |r| {
        let cb = format!(
            "{{\"m2m:cb\":{{\"rn\":\"cse-in\",\"poa\":[\"{}\"]}}}}",
            public.get().map_or("", String::as_str)
        );
        common::wiretap::Reply::new(match r.path.as_str() {
            "/cb-length" => json_answer(cb.as_bytes(), false),
            "/cb-chunked" => json_answer(cb.as_bytes(), true),
            _ => json_answer(b"{}", false),
        })
    });
    let (a, b) = (&t.a, &t.b);
    a_public.set(a.public()).unwrap();
    let mut conn = Conn::plain(b.egress).unwrap();
    conn.set_timeout(Duration::from_secs(5));

    // the peer's CSEBase, its poa (A's public URL) turned into B's egress URL
    let want = format!(
        "{{\"m2m:cb\":{{\"rn\":\"cse-in\",\"poa\":[\"{}\"]}}}}",
        b.local()
    );
    for path in ["/cb-length", "/cb-chunked"] {
        let resp = conn
            .request(&Request::get(path).header("X-M2M-Origin", "/id-mn"))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.text(), want, "{path}");
        assert_eq!(
            resp.header("Content-Length"),
            Some(want.len().to_string().as_str()),
            "{path}: {:?}",
            resp.headers
        );
        assert_eq!(resp.header("Transfer-Encoding"), None, "{path}");
    }

    // the MN's <remoteCSE> with its poa as B's egress URL: the peer's CSE sees A's public URL
    let csr = |poa: &str| {
        format!("{{\"m2m:csr\":{{\"rn\":\"id-mn\",\"csi\":\"/id-mn\",\"poa\":[\"{poa}/\"],\"rr\":true}}}}")
    };
    let sent = csr(&b.local());
    let want = csr(&a.public());
    let (half, rest) = sent.as_bytes().split_at(sent.len() / 2);
    for (framing, req) in [
        (
            "Content-Length",
            Request::post("/cse-in", sent.clone().into_bytes()),
        ),
        (
            "chunked",
            Request::new("POST", "/cse-in").chunked(&[half, rest]),
        ),
    ] {
        let resp = conn
            .request(
                &req.header("Content-Type", "application/json;ty=16")
                    .header("X-M2M-Origin", "/id-mn"),
            )
            .unwrap_or_else(|e| panic!("{framing}: {e}"));
        assert_eq!(resp.status, 200, "{framing}: {}", resp.text());
        let seen = t.cse.seen().pop().unwrap();
        assert_eq!(seen.path, "/cse-in", "{framing}");
        assert_eq!(
            String::from_utf8_lossy(seen.body.as_deref().unwrap()),
            want,
            "{framing}"
        );
        assert_eq!(
            seen.values("Content-Length"),
            vec![want.len().to_string().as_str()],
            "{framing}: {:?}",
            seen.headers
        );
        assert!(seen.values("Transfer-Encoding").is_empty(), "{framing}");
    }
    let (_, scrape) = t.pb.admin_get("/metrics").unwrap();
    for direction in ["toward_local", "away_from_local"] {
        assert!(
            metric(
                &scrape,
                &format!("m2m_auth_proxy_egress_poa_rewrites_total{{direction=\"{direction}\",kind=\"route\",route=\"registrar\"}}")
            ) >= 2.0,
            "{direction}: {scrape}"
        );
    }
}

/// A body larger than `limits.egress_rewrite_max_body` passes unchanged, whole and in its own
/// framing (streamed; what was read while it could still have fitted goes first), both ways,
/// and is counted as not inspected.
#[test]
fn bodies_over_the_rewrite_limit_pass_unchanged_both_ways() {
    let a_public = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let public = a_public.clone();
    // a poa, then padding: 8 KiB, over the 1 KiB limit
    let big = |poa: &str| {
        format!(
            "{{\"m2m:cb\":{{\"poa\":[\"{poa}\"],\"lbl\":[\"{}\"]}}}}",
            "x".repeat(8 * 1024)
        )
    };
    let t = to_scripted("limits:\n  egress_rewrite_max_body: 1024\n", move |r| {
        let body = big(public.get().map_or("", String::as_str));
        common::wiretap::Reply::new(match r.path.as_str() {
            "/big-length" => json_answer(body.as_bytes(), false),
            "/big-chunked" => json_answer(body.as_bytes(), true),
            _ => json_answer(b"{}", false),
        })
    });
    let (a, b) = (&t.a, &t.b);
    a_public.set(a.public()).unwrap();
    let mut conn = Conn::plain(b.egress).unwrap();
    conn.set_timeout(Duration::from_secs(5));

    let from_peer = big(&a.public());
    for (path, framing) in [
        ("/big-length", "Content-Length"),
        ("/big-chunked", "Transfer-Encoding"),
    ] {
        let resp = conn
            .request(&Request::get(path).header("X-M2M-Origin", "/id-mn"))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status, 200, "{path}");
        assert!(resp.text() == from_peer, "{path}: body changed");
        assert!(resp.header(framing).is_some(), "{path}: {:?}", resp.headers);
    }

    let to_peer = big(&b.local());
    let bytes = to_peer.as_bytes();
    let pieces: Vec<&[u8]> = bytes.chunks(500).collect();
    for (framing, req) in [
        ("Content-Length", Request::post("/cse-in", bytes.to_vec())),
        (
            "Transfer-Encoding",
            Request::new("POST", "/cse-in").chunked(&pieces),
        ),
    ] {
        let resp = conn
            .request(
                &req.header("Content-Type", "application/json")
                    .header("X-M2M-Origin", "/id-mn"),
            )
            .unwrap_or_else(|e| panic!("{framing}: {e}"));
        assert_eq!(resp.status, 200, "{framing}: {}", resp.text());
        let seen = t.cse.seen().pop().unwrap();
        assert!(
            seen.body.as_deref() == Some(bytes),
            "{framing}: body changed or cut ({} bytes)",
            seen.body.as_ref().map_or(0, Vec::len)
        );
        assert_eq!(
            seen.values(framing).len(),
            1,
            "{framing}: {:?}",
            seen.headers
        );
    }
    let (_, scrape) = t.pb.admin_get("/metrics").unwrap();
    let not_inspected = |direction: &str| {
        metric(
            &scrape,
            &format!("m2m_auth_proxy_poa_bodies_not_inspected_total{{direction=\"{direction}\"}}"),
        )
    };
    assert!(not_inspected("toward_local") >= 2.0, "{scrape}");
    assert!(not_inspected("away_from_local") >= 2.0, "{scrape}");
}

/// `limits.max_body` holds for chunked bodies on a route too (they declare no length): past
/// it the local CSE gets a 413 in oneM2M form, and the connection to the peer, which carries
/// the head and part of that body, is closed rather than reused (the next request would be
/// read as more of the body).
#[test]
fn a_chunked_egress_body_over_max_body_is_refused_with_413_and_the_peer_connection_is_dropped() {
    let (a, b) = (Side::new(), Side::new());
    let mn_cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let pa = a.start(&a.yaml("[mtls]", "", ""));
    let _pb = b.start(&b.yaml(
        "[mtls]",
        "limits:\n  max_body: 65536\n",
        &b.route("registrar", &a, &a.ca, Some(&mn_cert), ""),
    ));
    let handshakes = || {
        let (_, scrape) = pa.admin_get("/metrics").unwrap();
        ["yes", "no"]
            .iter()
            .map(|c| {
                metric(
                    &scrape,
                    &format!("m2m_auth_proxy_tls_handshakes_total{{client_cert=\"{c}\"}}"),
                )
            })
            .sum::<f64>()
    };
    // a warm connection from B to A, back in B's pool: the upload takes it
    let warm = egress_request(
        b.egress,
        &Request::get("/warm").header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(warm.status, 200);

    let piece = vec![b'a'; 16 * 1024];
    let pieces: Vec<&[u8]> = (0..16).map(|_| &piece[..]).collect();
    let mut conn = Conn::plain(b.egress).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(
            &Request::new("POST", "/cse-in/big")
                .chunked(&pieces)
                .header("Content-Type", "application/octet-stream")
                .header("X-M2M-Origin", "/id-mn")
                .header("X-M2M-RI", "ri-big"),
        )
        .expect("an answer");
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert!(resp.header("X-M2M-RSC").is_some(), "{:?}", resp.headers);
    assert_eq!(resp.header("X-M2M-RI"), Some("ri-big"));
    assert!(resp.json()["m2m:dbg"].is_string(), "{}", resp.text());
    assert!(
        a.upstream
            .requests()
            .iter()
            .all(|r| r.path != "/cse-in/big"),
        "the cut body reached the peer's CSE as a whole request"
    );
    let before = handshakes();

    let next = egress_request(
        b.egress,
        &Request::get("/next").header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(a.upstream.last().unwrap().path, "/next");
    assert!(
        handshakes() > before,
        "the next request went on the connection that carried the cut body"
    );
}

/// A route's connections to its peer are pooled with the client certificate they were made
/// with: after the certificate file is replaced, the next request (on the same keep-alive
/// connection of the local CSE) reaches the peer with the new certificate's identity.
#[test]
fn after_the_routes_client_certificate_is_replaced_new_requests_carry_the_new_one() {
    let (a, b) = (Side::new(), Side::new());
    let first = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let cert = b
        .pki
        .write("own-client.pem", &std::fs::read(&first.chain).unwrap());
    let key = b
        .pki
        .write("own-client.key", &std::fs::read(&first.key).unwrap());
    let route = format!(
        "\n  - name: registrar\n    listen: \"{}\"\n    peer: \"{}\"\n    tls:\n      ca: {}\n      cert: {}\n      key: {}\n",
        b.egress,
        a.public(),
        a.ca.cert.display(),
        cert.display(),
        key.display()
    );
    let _pa = a.start(&a.yaml("[mtls]", "", ""));
    let pb = b.start(&b.yaml("[mtls]", "", &route));
    let mut conn = Conn::plain(b.egress).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let as_origin = |o: &str| Request::get("/cse-in").header("X-M2M-Origin", o);
    let resp = conn.request(&as_origin("/id-mn")).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        a.upstream.last().unwrap().header_values("X-M2M-Origin"),
        ["/id-mn"]
    );

    let reloads = || {
        let (_, scrape) = pb.admin_get("/metrics").unwrap();
        metric(
            &scrape,
            "m2m_auth_proxy_reloads_total{file=\"egress_client_cert\",result=\"success\"}",
        )
    };
    let before = reloads();
    let second = a.pki.client(&a.ca, ClientOpts::uri("/id-mn2"));
    write_atomic(&key, &std::fs::read(&second.key).unwrap());
    write_atomic(&cert, &std::fs::read(&second.chain).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads() <= before {
        assert!(
            Instant::now() < deadline,
            "not reloaded\n{}",
            pb.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // the peer holds the originator to the certificate's identity (verify mode): a request on
    // a connection made with the old certificate would be refused there
    let resp = conn.request(&as_origin("/id-mn2")).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        a.upstream.last().unwrap().header_values("X-M2M-Origin"),
        ["/id-mn2"]
    );
}

/// An upgrade request carries no body on the egress listener either: with one it is refused
/// before anything leaves the pod (its bytes would reach the peer uncounted by
/// `limits.max_body`).
#[test]
fn an_upgrade_request_with_a_body_does_not_leave_the_pod() {
    let p = pair("");
    for (case, req) in [
        (
            "Content-Length",
            Request::websocket("/ws", &["oneM2M.json"]).body(b"hello".to_vec()),
        ),
        (
            "chunked",
            Request::websocket("/ws", &["oneM2M.json"]).chunked(&[b"hello"]),
        ),
    ] {
        let resp = egress_request(p.b.egress, &req.header("X-M2M-Origin", "/id-mn"));
        assert_eq!(resp.status, 400, "{case}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4000"), "{case}");
    }
    // the peer's sidecar saw no request at all (it would refuse them too)
    let (_, scrape) = p.pa.admin_get("/metrics").unwrap();
    let requests: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("m2m_auth_proxy_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(requests, 0.0, "{scrape}");
    assert_eq!(p.a.upstream.count(), 0, "nothing reached the peer's CSE");
}

/// A stand-in CSE that does what a real one does when a subscription is created: it sends the
/// verification request (`m2m:sgn` with `vrq`) to each `nu`, as itself (`/id-in`), and answers
/// the create 201 only when every verification got a 2xx (else 403 / 4101). A `nu` that is no
/// URL is an originator: the verification goes to the `poa` its registration (`<AE>` or
/// `<remoteCSE>` create) gave. Plain HTTP only, one request per connection, loopback only.
struct NotifyingCse {
    addr: SocketAddr,
    /// What the CSE stored of every request.
    seen: Arc<std::sync::Mutex<Vec<Stored>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotifyingCse {
    fn start() -> NotifyingCse {
        use std::collections::HashMap;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<std::sync::Mutex<Vec<_>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut poas: HashMap<String, String> = HashMap::new();
            while !st.load(Ordering::SeqCst) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let Some((method, path, headers, body)) = read_request(&conn) else {
                    continue;
                };
                let header = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(n))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let origin = header("X-M2M-Origin");
                let ty = header("Content-Type");
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                s.lock()
                    .unwrap()
                    .push((method, path, origin.clone(), v.clone()));
                let (status, rsc) = if ty.ends_with("ty=2") || ty.ends_with("ty=16") {
                    let res = v.as_object().and_then(|m| m.values().next()).cloned();
                    if let Some(poa) = res.as_ref().and_then(|r| r["poa"][0].as_str()) {
                        poas.insert(origin.clone(), poa.to_string());
                    }
                    (201, 2001)
                } else if ty.ends_with("ty=23") {
                    let nus: Vec<String> = v["m2m:sub"]["nu"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|n| n.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    let verified = nus.iter().all(|nu| {
                        let url = match nu.starts_with("http") {
                            true => Some(nu.clone()),
                            false => poas.get(nu).cloned(),
                        };
                        url.is_some_and(|u| verify(&u, &origin))
                    });
                    match verified {
                        true => (201, 2001),
                        false => (403, 4101),
                    }
                } else {
                    (200, 2000)
                };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nX-M2M-RSC: {rsc}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
                let _ = (&conn).write_all(answer.as_bytes());
            }
        });
        NotifyingCse {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Stored> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for NotifyingCse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

use std::io::{Read, Write};

/// (method, path, originator, body) of a request a [`NotifyingCse`] got.
type Stored = (String, String, String, serde_json::Value);
/// (method, path, headers, body).
type ReadRequest = (String, String, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 request with a `Content-Length` body (or none).
fn read_request(mut conn: &std::net::TcpStream) -> Option<ReadRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let mut hbuf = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut hbuf);
    req.parse(&buf[..end]).ok()?;
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let (method, path) = (req.method?.to_string(), req.path?.to_string());
    let mut body = buf[end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some((method, path, headers, body))
}

/// The verification request a CSE sends to `url` (plain `http://host:port/path` only) for a
/// subscription `creator` made; whether it got a 2xx.
fn verify(url: &str, creator: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let Ok(addr) = authority.parse::<SocketAddr>() else {
        return false;
    };
    if !addr.ip().is_loopback() {
        return false;
    }
    let body = format!(
        "{{\"m2m:sgn\":{{\"vrq\":true,\"sur\":\"/id-in/cse-in/sub1\",\"cr\":\"{creator}\"}}}}"
    );
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nX-M2M-Origin: /id-in\r\nX-M2M-RI: vrq-1\r\nX-M2M-RVI: 3\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    answer.starts_with(b"HTTP/1.1 2")
}

/// Issue 27.1 / red-team finding 5: A (the IN's side, with a route `mn` to B) in front of a CSE
/// that verifies subscriptions; B (the MN's side) in front of an echoing MN. The MN registers
/// and subscribes through B's route; AEs of the IN call A's ingress.
struct Steering {
    a: Side,
    b: Side,
    cse: NotifyingCse,
    _pa: ProxyProcess,
    pb: ProxyProcess,
    mn_cert: CertKey,
    ae: common::ClientTls,
}

fn steering() -> Steering {
    let (a, b) = (Side::new(), Side::new());
    let mn_cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let in_cert = b.pki.client(&b.ca, ClientOpts::uri("/id-in"));
    let cse = NotifyingCse::start();
    let a_yaml = a
        .yaml(
            "[mtls]",
            &cse_role("/id-mn"),
            &a.route("mn", &b, &b.ca, Some(&in_cert), PEER_ROLES),
        )
        .replace(&a.upstream.url(), &cse.url());
    let pa = a.start(&a_yaml);
    let pb = b.start(&b.yaml(
        "[mtls]",
        &cse_role("/id-in"),
        &b.route("registrar", &a, &a.ca, Some(&mn_cert), PEER_ROLES),
    ));
    let ae_cert = a.pki.client(&a.ca, ClientOpts::uri("Cae-1"));
    let ae = common::ClientTls::new(&a.ca.cert).cert(&ae_cert);
    Steering {
        a,
        b,
        cse,
        _pa: pa,
        pb,
        mn_cert,
        ae,
    }
}

fn sub(nu: &[&str]) -> Vec<u8> {
    serde_json::json!({"m2m:sub": {"rn": "sub1", "nu": nu, "nct": 1}})
        .to_string()
        .into_bytes()
}

/// An AE cannot make the CSE send through an egress route, in whatever form it names the
/// listener: the request is refused 403 / 4103 before anything reaches the CSE, and nothing
/// leaves the pod. Its own `poa` naming the peer's public URL stays as written (only the
/// route's peer gets `poa` rewriting), so a subscription to its AE-ID goes nowhere near the
/// route either.
#[test]
fn an_ae_cannot_steer_the_cse_into_an_egress_route() {
    let t = steering();
    let (a, b) = (&t.a, &t.b);
    let egress = a.egress.port();
    let post = |path: &str, body: Vec<u8>, ty: &str| {
        Request::post(path, body)
            .header("Content-Type", ty)
            .header("X-M2M-Origin", "Cae-1")
    };
    let sub_ty = "application/json;ty=23";
    let refused: Vec<(Request, &str)> = vec![
        (
            post(
                "/cse-in/app",
                sub(&[&format!("{}/cse-in/anything?x=1", a.local())]),
                sub_ty,
            ),
            "body",
        ),
        (
            post(
                "/cse-in/app",
                sub(&[&format!("http://localhost:{egress}/x")]),
                sub_ty,
            ),
            "body",
        ),
        (
            post(
                "/cse-in/app",
                sub(&[&format!("http%3A%2F%2F[::1]%3A{egress}")]),
                "application/vnd.onem2m-res+json;ty=23",
            ),
            "body",
        ),
        (
            post(
                "/cse-in",
                format!("{{\"m2m:ae\":{{\"rn\":\"x\",\"api\":\"Nx\",\"rr\":true,\"poa\":[\"http://127.0.0.1:{egress}\"]}}}}")
                    .into_bytes(),
                "application/json;ty=2",
            ),
            "body",
        ),
        (
            post(
                "/cse-in/app",
                {
                    let mut out = Vec::new();
                    ciborium::into_writer(
                        &serde_json::json!({"m2m:sub": {"nu": [format!("http://0x7f.1:{egress}/")]}}),
                        &mut out,
                    )
                    .unwrap();
                    out
                },
                "application/cbor;ty=23",
            ),
            "body",
        ),
        (
            Request::get("/cse-in/app?rt=2")
                .header("X-M2M-Origin", "Cae-1")
                .header("X-M2M-RTU", &format!("{}/cse-in/x", a.local())),
            "header x-m2m-rtu",
        ),
        (
            Request::get(&format!(
                "/cse-in/app?rt=2&nu=http://127.0.0.1:{egress}/x"
            ))
            .header("X-M2M-Origin", "Cae-1"),
            "query",
        ),
    ];
    for (req, place) in refused {
        let resp = t.ae.connect_and_request(a.addr, &req).unwrap();
        assert_eq!(
            (resp.status, resp.header("X-M2M-RSC")),
            (403, Some("4103")),
            "{} {}: {}",
            req.method,
            req.path,
            resp.text()
        );
        let why = dbg(&resp);
        assert!(
            why.contains(place) && why.contains("egress route"),
            "{place}: {why}"
        );
    }
    // a body the strict decoder reads otherwise than a lenient parser might: refused
    let dup = br#"{"m2m:sub":{"nu":["http://10.0.0.5/x"],"nu":["http://127.0.0.1:1/"]}}"#;
    let resp =
        t.ae.connect_and_request(a.addr, &post("/cse-in/app", dup.to_vec(), sub_ty))
            .unwrap();
    assert_eq!(
        (resp.status, resp.header("X-M2M-RSC")),
        (400, Some("4000")),
        "{}",
        resp.text()
    );
    // a body the proxy cannot read at all: 415
    let xml = format!("<m2m:sub><nu>http://127.0.0.1:{egress}/</nu></m2m:sub>");
    let resp =
        t.ae.connect_and_request(
            a.addr,
            &post("/cse-in/app", xml.into_bytes(), "application/xml;ty=23"),
        )
        .unwrap();
    assert_eq!(resp.status, 415, "{}", resp.text());
    assert!(
        t.cse.seen().is_empty(),
        "nothing reached the CSE: {:?}",
        t.cse.seen()
    );

    // the poa variant: the AE's poa is the peer's public URL and stays so
    let ae = format!(
        "{{\"m2m:ae\":{{\"rn\":\"ae1\",\"api\":\"Nx\",\"rr\":true,\"poa\":[\"{}\"]}}}}",
        b.public()
    );
    let resp =
        t.ae.connect_and_request(
            a.addr,
            &post("/cse-in", ae.into_bytes(), "application/json;ty=2"),
        )
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let seen = t.cse.seen();
    let (_, _, origin, body) = seen.last().unwrap();
    assert_eq!(origin, "Cae-1");
    assert_eq!(
        body["m2m:ae"]["poa"][0],
        b.public(),
        "not rewritten: {body}"
    );
    // ... so the CSE's verification for a subscription to it does not take the route
    let resp =
        t.ae.connect_and_request(a.addr, &post("/cse-in/app", sub(&["Cae-1"]), sub_ty))
            .unwrap();
    assert_eq!(
        resp.status,
        403,
        "the https poa is not reachable: {}",
        resp.text()
    );
    assert_eq!(b.upstream.count(), 0, "nothing left the pod");

    // a subscription with a notification URL of the AE's own is verified there
    let sink = EchoUpstream::start();
    let resp =
        t.ae.connect_and_request(
            a.addr,
            &post(
                "/cse-in/app",
                sub(&[&format!("{}/notify", sink.url())]),
                sub_ty,
            ),
        )
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let vrq = sink.last().expect("the verification request");
    assert!(String::from_utf8_lossy(&vrq.body).contains("\"vrq\":true"));
    // counted by place
    let (_, scrape) = t._pa.admin_get("/metrics").unwrap();
    assert!(
        metric(
            &scrape,
            "m2m_auth_proxy_egress_steering_refusals_total{place=\"body\"}"
        ) >= 5.0,
        "{scrape}"
    );
    let _ = (&t.pb, &t.mn_cert);
}

/// The route's peer still works as a CSE: the MN registers through B's route (its `poa`, B's
/// public URL, becomes A's egress URL for the MN), subscribes with its CSE-ID as `nu`, and the
/// CSE's verification request reaches the MN through A's route, as `/id-in`.
#[test]
fn a_peer_cse_registers_and_its_subscription_is_verified_through_the_route() {
    let t = steering();
    let (a, b) = (&t.a, &t.b);
    let csr = format!(
        "{{\"m2m:csr\":{{\"rn\":\"id-mn\",\"csi\":\"/id-mn\",\"cb\":\"/id-mn/cse-mn\",\"poa\":[\"{}\"],\"rr\":true}}}}",
        b.public()
    );
    let resp = egress_request(
        b.egress,
        &Request::post("/cse-in", csr.into_bytes())
            .header("Content-Type", "application/json;ty=16")
            .header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let seen = t.cse.seen();
    let (_, _, origin, body) = seen.last().unwrap();
    assert_eq!(origin, "/id-mn");
    assert_eq!(body["m2m:csr"]["poa"][0], a.local(), "{body}");
    // the MN subscribes to a resource of the IN; the IN verifies through its route
    let resp = egress_request(
        b.egress,
        &Request::post("/cse-in/app", sub(&["/id-mn"]))
            .header("Content-Type", "application/json;ty=23")
            .header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let vrq = b
        .upstream
        .last()
        .expect("the MN got the verification request");
    assert_eq!(vrq.header_values("X-M2M-Origin"), ["/id-in"]);
    let v: serde_json::Value = serde_json::from_slice(&vrq.body).unwrap();
    assert_eq!(v["m2m:sgn"]["vrq"], true, "{v}");
    assert_eq!(v["m2m:sgn"]["cr"], "/id-mn");
    let _ = (&t.pb, &t.mn_cert, &t.ae);
}

/// `allow` on a route: only what it names leaves the pod (same matching as the rules, targets
/// read for the peer CSE in every form); the rest is 403 / 4103 naming the route.
#[test]
fn an_egress_route_lets_out_only_what_its_allow_list_names() {
    let p = pair(
        "    peer_cse: {id: /id-in, name: cse-in, sp_id: acme.example.com}\n    allow:\n      - {originators: [\"^/id-mn$\"], operations: [retrieve], targets: [\"/cse-in\", \"/cse-in/id-mn\"]}\n      - {originators: [\"^/id-mn$\"], operations: [create], resource_types: [remoteCSE], targets: [\"/cse-in\"]}\n      - {originators: [\"^/id-mn/\"]}\n",
    );
    let b = &p.b;
    let ok = [
        Request::get("/cse-in").header("X-M2M-Origin", "/id-mn"),
        Request::get("/~/id-in/cse-in/id-mn").header("X-M2M-Origin", "/id-mn"),
        Request::post("/cse-in", br#"{"m2m:csr":{"rn":"id-mn"}}"#.to_vec())
            .header("Content-Type", "application/json;ty=16")
            .header("X-M2M-Origin", "/id-mn"),
        Request::new("DELETE", "/cse-in/app/x").header("X-M2M-Origin", "/id-mn/Cae1"),
    ];
    for req in &ok {
        let resp = egress_request(b.egress, req);
        assert_eq!(
            resp.status,
            200,
            "{} {}: {}",
            req.method,
            req.path,
            resp.text()
        );
    }
    let before = p.a.upstream.count();
    let refused = [
        Request::get("/cse-in/app").header("X-M2M-Origin", "/id-mn"),
        Request::new("DELETE", "/cse-in/id-mn").header("X-M2M-Origin", "/id-mn"),
        Request::post("/cse-in", br#"{"m2m:sub":{"nu":["/id-mn"]}}"#.to_vec())
            .header("Content-Type", "application/json;ty=23")
            .header("X-M2M-Origin", "/id-mn"),
        Request::get("/_/elsewhere.example/id-in/cse-in").header("X-M2M-Origin", "/id-mn"),
    ];
    for req in &refused {
        let resp = egress_request(b.egress, req);
        assert_eq!(
            (resp.status, resp.header("X-M2M-RSC")),
            (403, Some("4103")),
            "{} {}: {}",
            req.method,
            req.path,
            resp.text()
        );
        assert!(dbg(&resp).contains("egress registrar"), "{}", dbg(&resp));
    }
    assert_eq!(p.a.upstream.count(), before, "nothing refused left the pod");
}

#[test]
fn check_names_what_is_wrong_with_a_routes_allow_list() {
    let (a, b) = (Side::new(), Side::new());
    let good = b.route("registrar", &a, &a.ca, None, "");
    let cases = [
        ("    allow: []\n", "egress[0].allow"),
        ("    allow:\n      - {targets: [\"/cse-in/**\"]}\n", "egress[0].peer_cse"),
        (
            "    peer_cse: {id: /id-in, name: cse-in}\n    allow:\n      - {targets: [\"/cse-in/a**\"]}\n",
            "egress[0].allow[0].targets",
        ),
        (
            "    peer_cse: {id: id-in, name: cse-in}\n    allow:\n      - {operations: [retrieve]}\n",
            "egress[0].peer_cse.id",
        ),
        ("    allow:\n      - {originators: [\"(\"]}\n", "egress[0].allow[0].originators"),
        ("    peer_roles: [\"\"]\n", "egress[0].peer_roles"),
    ];
    for (extra, key) in cases {
        let path: PathBuf = b.pki.write(
            "check.yaml",
            b.yaml("[mtls]", "", &format!("{good}{extra}")).as_bytes(),
        );
        let (code, out, err) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{key}: accepted\n{out}");
        assert!(err.contains(key), "{key}: {err}");
    }
}

/// Red-team round 3: a notification target that is an ID, not a URL, is resolved by the CSE,
/// to a `<remoteCSE>` too, whose `poa` is this sidecar's egress listener: the CSE would send
/// there as itself. With egress routes, a client's notification targets are URLs or its own ID.
#[test]
fn an_ae_cannot_steer_the_cse_into_an_egress_route_by_an_id() {
    let t = steering();
    let a = &t.a;
    let post = |body: Vec<u8>, ty: &str| {
        Request::post("/cse-in/app", body)
            .header("Content-Type", ty)
            .header("X-M2M-Origin", "Cae-1")
    };
    let sub_ty = "application/json;ty=23";
    let beacon = br#"{"m2m:tsb":{"bcni":"PT2S","bcnu":["/id-mn/cse-mn/beacon"]}}"#.to_vec();
    let refused = vec![
        post(sub(&["/id-mn/cse-mn/x"]), sub_ty),
        post(sub(&["/id-mn"]), sub_ty),
        post(sub(&["id-mn"]), sub_ty),
        post(sub(&["cse-in/id-mn"]), sub_ty),
        post(sub(&["Cae-1", "Cother"]), sub_ty),
        post(sub(&["/x/http://y"]), sub_ty),
        post(beacon, "application/json;ty=60"),
        Request::get("/cse-in/app?rt=2")
            .header("X-M2M-Origin", "Cae-1")
            .header("X-M2M-RTU", "/id-mn/cse-mn/rtu-target"),
        Request::get("/cse-in/app?rt=2")
            .header("X-M2M-Origin", "Cae-1")
            .header("X-M2M-RTU", "Cae-1&id-mn"),
    ];
    for req in refused {
        let resp = t.ae.connect_and_request(a.addr, &req).unwrap();
        assert_eq!(
            (resp.status, resp.header("X-M2M-RSC")),
            (403, Some("4103")),
            "{} {} {:?}: {}",
            req.method,
            req.path,
            req.header_value("X-M2M-RTU"),
            resp.text()
        );
        assert!(
            dbg(&resp).contains("ID other than the originator's own"),
            "{}",
            dbg(&resp)
        );
    }
    assert!(
        t.cse.seen().is_empty(),
        "nothing reached the CSE: {:?}",
        t.cse.seen()
    );
    // the AE's own ID and a URL of its own pass
    let resp =
        t.ae.connect_and_request(
            a.addr,
            &Request::get("/cse-in/app?rt=2")
                .header("X-M2M-Origin", "Cae-1")
                .header("X-M2M-RTU", "Cae-1&http://10.0.0.7:9000/n"),
        )
        .unwrap();
    assert_ne!(resp.status, 403, "{}", resp.text());
    assert_eq!(t.cse.seen().len(), 1);
}
