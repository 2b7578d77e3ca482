//! Tokens issued elsewhere, through the real proxy over TLS: JWTs checked against JWKS files and
//! URLs, and opaque tokens sent to an introspection endpoint. Tokens are signed here with
//! openssl (not with the proxy's JWT library) and freshly generated keys.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::https::HttpsEndpoint;
use common::scenario::{Scenario, ScenarioOpts};
use common::{ClientOpts, Pki, Request, Response};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::{json, Value};

const ISS: &str = "https://idp.test";
const AUD: &str = "m2m-proxy";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

#[derive(Clone)]
enum Key {
    Rsa(PKey<Private>),
    Ec(PKey<Private>),
    Ec384(PKey<Private>),
    Ed(PKey<Private>),
}

impl Key {
    fn rsa() -> Key {
        Self::rsa_bits(2048)
    }
    fn rsa_bits(bits: u32) -> Key {
        Key::Rsa(PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap())
    }
    fn ec() -> Key {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        Key::Ec(PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap())
    }
    fn ec384() -> Key {
        let group = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        Key::Ec384(PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap())
    }
    fn ed() -> Key {
        Key::Ed(PKey::generate_ed25519().unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
            Key::Ec384(_) => "ES384",
            Key::Ed(_) => "EdDSA",
        }
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            Key::Rsa(k) => {
                let rsa = k.rsa().unwrap();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                       "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
            }
            Key::Ec(k) | Key::Ec384(k) => {
                let (crv, size) = match self {
                    Key::Ec384(_) => ("P-384", 48),
                    _ => ("P-256", 32),
                };
                let ec = k.ec_key().unwrap();
                let (mut x, mut y) = (
                    openssl::bn::BigNum::new().unwrap(),
                    openssl::bn::BigNum::new().unwrap(),
                );
                ec.public_key()
                    .affine_coordinates(
                        ec.group(),
                        &mut x,
                        &mut y,
                        &mut BigNumContext::new().unwrap(),
                    )
                    .unwrap();
                json!({"kty": "EC", "kid": kid, "crv": crv,
                       "x": b64(&x.to_vec_padded(size).unwrap()), "y": b64(&y.to_vec_padded(size).unwrap())})
            }
            Key::Ed(k) => json!({"kty": "OKP", "kid": kid, "crv": "Ed25519",
                                 "x": b64(&k.raw_public_key().unwrap())}),
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Key::Rsa(k) => {
                let mut s = Signer::new(MessageDigest::sha256(), k).unwrap();
                s.sign_oneshot_to_vec(input).unwrap()
            }
            Key::Ec(k) | Key::Ec384(k) => {
                let (md, size) = match self {
                    Key::Ec384(_) => (MessageDigest::sha384(), 48),
                    _ => (MessageDigest::sha256(), 32),
                };
                let mut s = Signer::new(md, k).unwrap();
                let der = s.sign_oneshot_to_vec(input).unwrap();
                let sig = EcdsaSig::from_der(&der).unwrap();
                let mut raw = sig.r().to_vec_padded(size).unwrap();
                raw.extend(sig.s().to_vec_padded(size).unwrap());
                raw
            }
            Key::Ed(k) => {
                let mut s = Signer::new_without_digest(k).unwrap();
                s.sign_oneshot_to_vec(input).unwrap()
            }
        }
    }
}

fn token_with(header: Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn token(key: &Key, kid: &str, claims: &Value) -> String {
    token_with(
        json!({"alg": key.alg(), "typ": "JWT", "kid": kid}),
        claims,
        |i| key.sign(i),
    )
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": now() + 300, "nbf": now() - 5, "roles": ["sysop"]})
}

fn jwks(keys: &[(&Key, &str)]) -> String {
    json!({"keys": keys.iter().map(|(k, kid)| k.jwk(kid)).collect::<Vec<_>>()}).to_string()
}

fn get(s: &Scenario, token: &str) -> Response {
    s.tls(None)
        .connect_and_request(
            s.addr,
            &Request::get("/cse-in")
                .header("Authorization", &format!("Bearer {token}"))
                .header("X-M2M-Origin", "CAdmin")
                .header("X-M2M-RI", "jwt-1"),
        )
        .unwrap()
}

fn origin(s: &Scenario) -> String {
    s.upstream
        .last()
        .unwrap()
        .header_values("X-M2M-Origin")
        .join(",")
}

fn jwt_opts(issuer_keys: &str, extra: &str) -> ScenarioOpts {
    ScenarioOpts {
        client_cert: "optional".into(),
        methods: "[mtls, jwt]".into(),
        extra_auth: format!(
            "rate_limit:\n  failures_per_minute: 1000\n  burst: 1000\njwt:\n  leeway: 5s\n  issuers:\n    - issuer: {ISS}\n      audiences: [{AUD}]\n      roles_claim: roles\n      {issuer_keys}{extra}"
        ),
        ..Default::default()
    }
}

fn jwt_scenario(issuer_keys: &str, extra: &str) -> Scenario {
    Scenario::start(jwt_opts(issuer_keys, extra))
}

/// `m2m-auth-proxy check` on the config `opts` make: (exit code, stdout, stderr).
fn check(opts: ScenarioOpts) -> (i32, String, String) {
    let files = Scenario::files_only(opts);
    let path = files.write_config(&files.config_yaml());
    common::run_cli(
        &common::scenario::bin(),
        &["check", "--config", path.to_str().unwrap()],
    )
}

fn write_jwks(dir: &tempfile::TempDir, body: &str) -> PathBuf {
    let path = dir.path().join("jwks.json");
    let tmp = dir.path().join("jwks.json.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

#[test]
fn rsa_ec_and_ed25519_tokens_set_the_originator_from_their_claims() {
    let (rsa, ec, ed) = (Key::rsa(), Key::ec(), Key::ed());
    let dir = tempfile::tempdir().unwrap();
    let file = write_jwks(&dir, &jwks(&[(&rsa, "r1"), (&ec, "e1"), (&ed, "d1")]));
    let s = jwt_scenario(&format!("jwks_file: {}", file.display()), "");
    for (key, kid, sub) in [
        (&rsa, "r1", "Cjwt-rsa"),
        (&ec, "e1", "Cjwt-ec"),
        (&ed, "d1", "Cjwt-ed"),
    ] {
        let resp = get(&s, &token(key, kid, &claims(sub)));
        assert_eq!(resp.status, 200, "{}: {}", key.alg(), resp.text());
        assert_eq!(origin(&s), sub, "the spoofed X-M2M-Origin is replaced");
    }
    let log = s
        .proxy
        .wait_stdout(r#""roles":["sysop"]"#, Duration::from_secs(5))
        .expect("roles are logged");
    assert!(!log.contains("eyJ"), "no token content in the access log");
}

#[test]
fn bad_tokens_are_401_with_an_rfc6750_challenge_and_never_forwarded() {
    let rsa = Key::rsa();
    let other = Key::rsa();
    let dir = tempfile::tempdir().unwrap();
    let file = write_jwks(&dir, &jwks(&[(&rsa, "r1")]));
    let s = jwt_scenario(&format!("jwks_file: {}", file.display()), "");
    let with = |patch: Value| {
        let mut c = claims("Cjwt-1");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let public_pem = match &rsa {
        Key::Rsa(k) => k.public_key_to_pem().unwrap(),
        _ => unreachable!(),
    };
    let hmac_with_public_key = |input: &[u8]| {
        let key = PKey::hmac(&public_pem).unwrap();
        let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
        s.sign_oneshot_to_vec(input).unwrap()
    };
    let cases = [
        (
            "expired",
            token(&rsa, "r1", &with(json!({"exp": now() - 60}))),
            "expired",
        ),
        (
            "not yet valid",
            token(&rsa, "r1", &with(json!({"nbf": now() + 600}))),
            "nbf",
        ),
        (
            "wrong issuer",
            token(&rsa, "r1", &with(json!({"iss": "https://evil.test"}))),
            "issuer",
        ),
        (
            "wrong audience",
            token(&rsa, "r1", &with(json!({"aud": "someone-else"}))),
            "audience",
        ),
        (
            "no originator",
            token(&rsa, "r1", &with(json!({"sub": null}))),
            "originator",
        ),
        (
            "originator not a string",
            token(&rsa, "r1", &with(json!({"sub": 42}))),
            "originator",
        ),
        (
            "signed by another key",
            token(&other, "r1", &claims("Cjwt-1")),
            "signature",
        ),
        (
            "unknown kid",
            token(&other, "r9", &claims("Cjwt-1")),
            "unknown key",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims("Cjwt-1").to_string().as_bytes())
            ),
            "",
        ),
        (
            "crit names an extension the proxy does not implement",
            token_with(
                json!({"alg": "RS256", "kid": "r1", "crit": ["x-must-understand"], "x-must-understand": true}),
                &claims("Cjwt-1"),
                |i| rsa.sign(i),
            ),
            "unsupported critical header",
        ),
        (
            "RS256 -> HS256 key confusion",
            token_with(
                json!({"alg": "HS256", "kid": "r1"}),
                &claims("Cjwt-1"),
                hmac_with_public_key,
            ),
            "algorithm",
        ),
    ];
    for (case, t, why) in cases {
        let resp = get(&s, &t);
        assert_eq!(resp.status, 401, "{case}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4107"), "{case}");
        assert_eq!(resp.header("X-M2M-RI"), Some("jwt-1"), "{case}");
        let challenge = resp.header_all("WWW-Authenticate").join(" | ");
        assert!(challenge.contains("error=\"invalid"), "{case}: {challenge}");
        assert!(
            resp.text().to_lowercase().contains(why),
            "{case}: {} should say {why:?}",
            resp.text()
        );
    }
    assert_eq!(s.upstream.count(), 0, "no bad token was forwarded");
    let log = s.proxy.stdout_text() + &s.proxy.stderr_text();
    assert!(!log.contains("eyJ"), "no token content in the logs");
}

#[test]
fn a_rotated_jwks_file_is_picked_up_and_a_broken_one_keeps_the_keys() {
    let (k1, k2) = (Key::ec(), Key::ec());
    let dir = tempfile::tempdir().unwrap();
    let file = write_jwks(&dir, &jwks(&[(&k1, "k1")]));
    let s = jwt_scenario(&format!("jwks_file: {}", file.display()), "");
    let old = token(&k1, "k1", &claims("Cjwt-1"));
    assert_eq!(get(&s, &old).status, 200, "verified once, then remembered");
    assert_eq!(get(&s, &token(&k2, "k2", &claims("Cjwt-2"))).status, 401);
    write_jwks(&dir, &jwks(&[(&k1, "k1"), (&k2, "k2")]));
    let mut ok = false;
    for _ in 0..50 {
        if get(&s, &token(&k2, "k2", &claims("Cjwt-2"))).status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the new key was never accepted");
    assert_eq!(get(&s, &old).status, 200);
    write_jwks(&dir, "{ not json");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(&s, &token(&k2, "k2", &claims("Cjwt-2"))).status, 200);

    // k1 withdrawn: a token it signed is refused at once, although it was verified before
    write_jwks(&dir, &jwks(&[(&k2, "k2")]));
    let mut refused = false;
    for _ in 0..50 {
        if get(&s, &old).status == 401 {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refused, "a token of a withdrawn key was still accepted");
    assert_eq!(get(&s, &token(&k2, "k2", &claims("Cjwt-2"))).status, 200);
}

fn https_pki() -> (Pki, common::CertKey, common::CertKey) {
    let pki = Pki::new();
    let ca = pki.ca("svc-ca");
    let server = pki.server(&ca, "localhost", &["127.0.0.1"]);
    (pki, ca, server)
}

#[test]
fn a_jwks_url_is_refetched_on_an_unknown_kid_and_its_last_good_keys_survive_an_outage() {
    let (k1, k2, k3) = (Key::rsa(), Key::ed(), Key::ec());
    let (_pki, ca, server) = https_pki();
    let served = Arc::new(std::sync::Mutex::new(jwks(&[(&k1, "k1")])));
    let body = served.clone();
    let endpoint =
        HttpsEndpoint::start(&server, None, move |_| (200, body.lock().unwrap().clone()));
    let s = jwt_scenario(
        &format!(
            "jwks_url: {}\n      jwks_ca: {}\n      jwks_min_refetch: 2s",
            endpoint.url("/jwks"),
            ca.cert.display()
        ),
        "",
    );
    assert_eq!(get(&s, &token(&k1, "k1", &claims("Cjwt-1"))).status, 200);
    assert_eq!(get(&s, &token(&k1, "k1", &claims("Cjwt-1"))).status, 200);
    assert_eq!(endpoint.count(), 1, "keys are cached");

    // rotation: a token with a new kid makes the proxy fetch again
    *served.lock().unwrap() = jwks(&[(&k1, "k1"), (&k2, "k2")]);
    std::thread::sleep(Duration::from_millis(2100));
    let resp = get(&s, &token(&k2, "k2", &claims("Cjwt-2")));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(endpoint.count(), 2);

    // an unknown kid fetches at most once per jwks_min_refetch
    assert_eq!(get(&s, &token(&k3, "k3", &claims("Cjwt-3"))).status, 401);
    assert_eq!(endpoint.count(), 2, "the last fetch was less than 2s ago");
    std::thread::sleep(Duration::from_millis(2100));
    for _ in 0..5 {
        assert_eq!(get(&s, &token(&k3, "k3", &claims("Cjwt-3"))).status, 401);
    }
    assert_eq!(
        endpoint.count(),
        3,
        "one refetch for five unknown-kid tokens"
    );

    // JWKS server gone: the last good keys still verify
    drop(endpoint);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(get(&s, &token(&k3, "k3", &claims("Cjwt-3"))).status, 401);
    let resp = get(&s, &token(&k2, "k2", &claims("Cjwt-2")));
    assert_eq!(resp.status, 200, "last good set used: {}", resp.text());
}

fn introspection_scenario(endpoint: &HttpsEndpoint, ca: &common::CertKey, extra: &str) -> Scenario {
    Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        methods: "[mtls, introspection]".into(),
        extra_auth: format!(
            "rate_limit:\n  failures_per_minute: 1000\n  burst: 1000\nintrospection:\n  url: {}\n  ca: {}\n  operator_field: sysop\n  timeout: 500ms\n  cache_ttl: 30s\n{extra}",
            endpoint.url("/introspect"),
            ca.cert.display()
        ),
        ..Default::default()
    })
}

fn answer(call: &common::https::Call) -> (u16, String) {
    let token = call.body.strip_prefix("token=").unwrap_or("");
    match token {
        "good" => (
            200,
            json!({"active": true, "sub": "Cintro-1", "sysop": true, "exp": now() + 600})
                .to_string(),
        ),
        "no-originator" => (200, json!({"active": true}).to_string()),
        _ => (200, json!({"active": false}).to_string()),
    }
}

#[test]
fn introspection_admits_active_tokens_caches_answers_and_refuses_inactive_ones() {
    let (pki, ca, server) = https_pki();
    // the endpoint wants the proxy's Basic credentials
    let expected = format!(
        "authorization: basic {}",
        base64::engine::general_purpose::STANDARD.encode("m2m-proxy:s3cret pw")
    )
    .to_lowercase();
    let endpoint = HttpsEndpoint::start(&server, None, move |call| {
        if !call.head.to_lowercase().contains(&expected) {
            return (401, "{}".into());
        }
        answer(call)
    });
    let password = pki.write("introspection.password", b"s3cret pw\n");
    let s = introspection_scenario(
        &endpoint,
        &ca,
        &format!(
            "  basic_user: m2m-proxy\n  basic_password_file: {}\n",
            password.display()
        ),
    );
    for _ in 0..5 {
        let resp = get(&s, "IDENTITY-TOKEN//good");
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(origin(&s), "Cintro-1");
    }
    assert_eq!(endpoint.count(), 1, "one call for five requests");
    assert!(endpoint.calls()[0].body == "token=good");
    assert!(s
        .proxy
        .wait_stdout(r#""roles":["sysop"]"#, Duration::from_secs(5))
        .is_some());

    for t in ["IDENTITY-TOKEN//revoked", "IDENTITY-TOKEN//no-originator"] {
        let resp = get(&s, t);
        assert_eq!(resp.status, 401, "{t}: {}", resp.text());
        let challenge = resp.header_all("WWW-Authenticate").join(" | ");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }
    assert_eq!(s.upstream.count(), 5);
}

#[test]
fn introspection_fails_closed_when_the_endpoint_is_slow_or_down() {
    let (_pki, ca, server) = https_pki();
    let endpoint = HttpsEndpoint::start(&server, None, answer);
    let s = introspection_scenario(&endpoint, &ca, "");
    endpoint.set_delay(Duration::from_millis(1500));
    let resp = get(&s, "IDENTITY-TOKEN//good");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("5103"));
    assert_eq!(resp.header("X-M2M-RI"), Some("jwt-1"));
    drop(endpoint);
    let resp = get(&s, "IDENTITY-TOKEN//good");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(s.upstream.count(), 0, "never admitted");
    let (found, metrics) = s.proxy.wait_metrics(
        r#"m2m_auth_proxy_auth_failures_total{method="introspection",reason="unavailable"} 2"#,
        Duration::from_secs(5),
    );
    assert!(found, "{metrics}");
    assert!(
        metrics.contains(r#"m2m_auth_proxy_introspection_calls_total{result="timeout"} 1"#),
        "{metrics}"
    );
}

#[test]
fn concurrent_requests_with_one_token_share_one_introspection_call() {
    let (pki, ca, server) = https_pki();
    // the endpoint also wants the proxy's client certificate
    let proxy_client = pki.client(&ca, ClientOpts::cn("m2m-auth-proxy"));
    let endpoint = HttpsEndpoint::start(&server, Some(&ca), answer);
    endpoint.set_delay(Duration::from_millis(300));
    let s = introspection_scenario(
        &endpoint,
        &ca,
        &format!(
            "  client_cert: {}\n  client_key: {}\n",
            proxy_client.chain.display(),
            proxy_client.key.display()
        ),
    );
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| get(&s, "IDENTITY-TOKEN//good").status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(endpoint.count(), 1, "six concurrent requests, one call");
}

/// An introspection scenario with its own rate limit and endpoint limits (`introspection:` keys
/// in `extra`).
fn bounded_introspection(
    endpoint: &HttpsEndpoint,
    ca: &common::CertKey,
    rate_limit: &str,
    extra: &str,
) -> Scenario {
    Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        methods: "[mtls, introspection]".into(),
        extra_auth: format!(
            "rate_limit:\n  {rate_limit}\nintrospection:\n  url: {}\n  ca: {}\n  cache_ttl: 30s\n  negative_ttl: 30s\n{extra}",
            endpoint.url("/introspect"),
            ca.cert.display()
        ),
        ..Default::default()
    })
}

/// Issue 28: calls to the endpoint go over kept-alive connections (not one TLS connection per
/// call), and no more than `max_concurrent` are in progress at once; beyond the queue, a
/// request is refused 503 without a call.
#[test]
fn introspection_calls_are_capped_and_reuse_their_connections() {
    let (_pki, ca, server) = https_pki();
    let endpoint = HttpsEndpoint::start(&server, None, answer);
    endpoint.set_keep_alive(true);
    let s = bounded_introspection(
        &endpoint,
        &ca,
        "failures_per_minute: 1000\n  burst: 1000",
        "  timeout: 5s\n  max_concurrent: 2\n  max_queued: 2\n",
    );
    for i in 0..10 {
        assert_eq!(get(&s, &format!("IDENTITY-TOKEN//t{i}")).status, 401);
    }
    assert_eq!(endpoint.count(), 10, "a call per new token");
    // Pingora's pool is shared by the two worker threads, and a connection it hands over
    // between them is sometimes dropped: reused for most calls, not every one (without
    // keep-alive: one connection per call)
    assert!(
        endpoint.connections() <= 5,
        "{} connections for 10 calls",
        endpoint.connections()
    );

    endpoint.set_delay(Duration::from_millis(400));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let s = &s;
                scope.spawn(move || get(s, &format!("IDENTITY-TOKEN//c{i}")).status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        endpoint.max_in_flight() <= 2,
        "{}",
        endpoint.max_in_flight()
    );
    let busy = statuses.iter().filter(|c| **c == 503).count();
    let answered = statuses.iter().filter(|c| **c == 401).count();
    assert_eq!(busy + answered, 12, "{statuses:?}");
    assert_eq!(
        endpoint.count(),
        10 + answered,
        "no call for a refused request"
    );
    let (_, metrics) = s.proxy.admin_get("/metrics").unwrap();
    assert_eq!(
        common::creds::metric(
            &metrics,
            "m2m_auth_proxy_verifications_refused_total{queue=\"introspection\"}"
        ),
        busy as f64
    );
}

/// Issue 28: a failing endpoint counts against the client's limit (a client could otherwise
/// keep calls to it going without bound, each with a new token), and is logged once per
/// interval with the count of the failures not logged, not once per request.
#[test]
fn introspection_failures_count_against_the_client_and_are_logged_sparingly() {
    let (_pki, ca, server) = https_pki();
    let endpoint = HttpsEndpoint::start(&server, None, answer);
    let s = bounded_introspection(
        &endpoint,
        &ca,
        "failures_per_minute: 1\n  burst: 6",
        "  timeout: 2s\n",
    );
    drop(endpoint); // connections refused from now on
    let statuses: Vec<u16> = (0..8)
        .map(|i| get(&s, &format!("IDENTITY-TOKEN//down{i}")).status)
        .collect();
    assert_eq!(statuses, [503, 503, 503, 503, 503, 503, 429, 429]);
    let warnings = s
        .proxy
        .stderr_text()
        .lines()
        .filter(|l| l.contains("introspection https://"))
        .count();
    assert_eq!(warnings, 1, "{}", s.proxy.stderr_text());
}

#[test]
fn roles_from_the_config_are_logged_for_any_method() {
    let s = Scenario::start(ScenarioOpts {
        extra_auth: "roles:\n  sysop: [Cadmin-tool]\n  auditor: [Cadmin-tool, Cother]".into(),
        ..Default::default()
    });
    for (who, roles) in [
        ("Cadmin-tool", r#""roles":["auditor","sysop"]"#),
        ("Cae-1", r#""roles":[]"#),
    ] {
        let client = s.client(ClientOpts::uri(who));
        let resp = s
            .tls(Some(&client))
            .connect_and_request(s.addr, &Request::get("/cse-in").header("X-M2M-RI", who))
            .unwrap();
        assert_eq!(resp.status, 200);
        let needle = format!(r#""request_id":"{who}""#);
        let log = s
            .proxy
            .wait_stdout(&needle, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no access-log line for {who}"));
        let line = log.lines().find(|l| l.contains(&needle)).unwrap();
        assert!(line.contains(roles), "{who}: {line}");
    }
}

/// PS256 over `input` with an RSA key.
fn pss256(key: &Key, input: &[u8]) -> Vec<u8> {
    let Key::Rsa(k) = key else {
        unreachable!("an RSA key")
    };
    let mut s = Signer::new(MessageDigest::sha256(), k).unwrap();
    s.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS).unwrap();
    s.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::DIGEST_LENGTH)
        .unwrap();
    s.sign_oneshot_to_vec(input).unwrap()
}

/// A key of a type no JOSE library of today verifies (post-quantum ML-DSA, `kty: AKP`).
fn post_quantum_jwk(kid: &str) -> Value {
    json!({"kty": "AKP", "kid": kid, "alg": "ML-DSA-65", "pub": b64(&[7u8; 64])})
}

#[test]
fn unusable_jwks_keys_are_skipped_and_named_while_the_usable_ones_verify() {
    let (good, weak, p384) = (Key::rsa(), Key::rsa_bits(1024), Key::ec384());
    let mut liar = p384.jwk("liar");
    liar["crv"] = json!("P-256");
    let mut enc = Key::rsa().jwk("enc1");
    enc["use"] = json!("enc");
    let mut oaep = Key::rsa().jwk("oaep");
    oaep["alg"] = json!("RSA-OAEP");
    let document = json!({"keys": [
        good.jwk("r1"),
        weak.jwk("weak"),
        liar,
        enc,
        oaep,
        {"kty": "oct", "kid": "sym", "k": b64(&[7u8; 32])},
        post_quantum_jwk("pq"),
        {"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": b64(&[1u8; 57])},
    ]});
    let dir = tempfile::tempdir().unwrap();
    let file = write_jwks(&dir, &document.to_string());
    let keys = format!("jwks_file: {}", file.display());

    let (code, out, err) = check(jwt_opts(&keys, ""));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(1 keys, 7 unusable skipped)"), "{out}");
    for (kid, why) in [
        ("weak", "under 2048"),
        ("liar", "32 bytes"),
        ("enc1", "use"),
        ("oaep", "RSA-OAEP"),
        ("sym", "symmetric"),
        ("pq", "AKP"),
        ("ed448", "Ed448"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("key {kid:?} (keys[")))
            .unwrap_or_else(|| panic!("check does not name {kid}: {out}"));
        assert!(line.contains("WARNING") && line.contains(why), "{line}");
    }

    let s = jwt_scenario(&keys, "");
    let resp = get(&s, &token(&good, "r1", &claims("Cjwt-1")));
    assert_eq!(resp.status, 200, "{}", resp.text());
    // the skipped keys verify nothing; the RS256 key verifies RS256 only
    let ps256 = token_with(
        json!({"alg": "PS256", "kid": "r1"}),
        &claims("Cjwt-1"),
        |i| pss256(&good, i),
    );
    for (case, t, why) in [
        (
            "a 1024-bit RSA key",
            token(&weak, "weak", &claims("Cjwt-1")),
            "unknown key",
        ),
        (
            "a P-384 key labelled P-256",
            token(&p384, "liar", &claims("Cjwt-1")),
            "unknown key",
        ),
        ("PS256 with an RS256 key", ps256, "does not fit"),
    ] {
        let resp = get(&s, &t);
        assert_eq!(resp.status, 401, "{case}: {}", resp.text());
        assert!(resp.text().contains(why), "{case}: {}", resp.text());
    }
    let (_, metrics) = s.proxy.admin_get("/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "m2m_auth_proxy_jwks_keys_skipped{{issuer=\"{ISS}\"}} 7"
        )),
        "{metrics}"
    );
    assert_eq!(
        s.proxy.stderr_text().matches("skipped key \"pq\"").count(),
        1,
        "logged once"
    );

    // a set with no usable key at all is refused, naming every key
    let only_bad = json!({"keys": [weak.jwk("weak"), post_quantum_jwk("pq")]});
    let file = write_jwks(&dir, &only_bad.to_string());
    let (code, out, err) = check(jwt_opts(&format!("jwks_file: {}", file.display()), ""));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("no usable") || err.contains("at least one usable signing key"),
        "{err}"
    );
    assert!(err.contains("\"weak\"") && err.contains("\"pq\""), "{err}");
}

/// The issuer rotates `c1` out and adds `new1` plus a key type the proxy does not know: the new
/// key verifies, the removed one stops verifying, the unknown one is logged once.
#[test]
fn a_rotated_jwks_url_with_an_unknown_key_type_drops_the_removed_key() {
    let (c1, new1) = (Key::ec(), Key::rsa());
    let (_pki, ca, server) = https_pki();
    let served = Arc::new(std::sync::Mutex::new(jwks(&[(&c1, "c1")])));
    let body = served.clone();
    let endpoint =
        HttpsEndpoint::start(&server, None, move |_| (200, body.lock().unwrap().clone()));
    let s = jwt_scenario(
        &format!(
            "jwks_url: {}\n      jwks_ca: {}\n      jwks_min_refetch: 1s",
            endpoint.url("/jwks"),
            ca.cert.display()
        ),
        "",
    );
    let old = token(&c1, "c1", &claims("Cjwt-1"));
    assert_eq!(get(&s, &old).status, 200);

    *served.lock().unwrap() =
        json!({"keys": [new1.jwk("new1"), post_quantum_jwk("pq")]}).to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let resp = get(&s, &token(&new1, "new1", &claims("Cjwt-2")));
    assert_eq!(resp.status, 200, "the new key verifies: {}", resp.text());
    assert_eq!(endpoint.count(), 2);
    let resp = get(&s, &old);
    assert_eq!(resp.status, 401, "the removed key no longer verifies");
    assert!(resp.text().contains("unknown key"), "{}", resp.text());

    // another fetch of the same set logs the unusable key no second time
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&s, &token(&new1, "zz", &claims("Cjwt-3"))).status, 401);
    assert_eq!(endpoint.count(), 3);
    assert_eq!(
        s.proxy.stderr_text().matches("skipped key \"pq\"").count(),
        1,
        "{}",
        s.proxy.stderr_text()
    );
    let (_, metrics) = s.proxy.admin_get("/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "m2m_auth_proxy_jwks_keys_skipped{{issuer=\"{ISS}\"}} 1"
        )),
        "{metrics}"
    );
}

/// Identity providers name claims by URL (`https://m2m.example/orig`): a list of segments or a
/// quoted segment names them whole, for JWTs and introspection answers.
#[test]
fn a_claim_whose_name_holds_dots_can_be_the_originator() {
    let rsa = Key::rsa();
    let dir = tempfile::tempdir().unwrap();
    let file = write_jwks(&dir, &jwks(&[(&rsa, "r1")]));
    let s = jwt_scenario(
        &format!("jwks_file: {}", file.display()),
        "\n      originator_claim: [\"https://m2m.example/orig\"]",
    );
    let mut c = claims("Csub-is-not-it");
    c["https://m2m.example/orig"] = json!("Cnamespaced-1");
    let resp = get(&s, &token(&rsa, "r1", &c));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(origin(&s), "Cnamespaced-1");
    // read as a nested path, the same name finds nothing: refused, never `sub`
    let nested = json!({"https:": {"//m2m": {"example/orig": "Cwrong"}}});
    let mut c = claims("Csub-is-not-it");
    c["https:"] = nested["https:"].clone();
    let resp = get(&s, &token(&rsa, "r1", &c));
    assert_eq!(resp.status, 401, "{}", resp.text());

    let (_pki, ca, server) = https_pki();
    let endpoint = HttpsEndpoint::start(&server, None, |_| {
        (
            200,
            json!({"active": true, "sub": "Cnot-this", "https://m2m.example/orig": "Cintro-ns", "exp": now() + 60})
                .to_string(),
        )
    });
    let s = introspection_scenario(
        &endpoint,
        &ca,
        "  originator_field: '\"https://m2m.example/orig\"'\n",
    );
    let resp = get(&s, "IDENTITY-TOKEN//t1");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(origin(&s), "Cintro-ns");
}

/// `now` with its fraction of a second.
fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Introspection answers are read as RFC 7519 and 7662 say: fractional dates are dates, a date
/// that is not a number makes the token inactive, a cached answer ends at its `exp`, and the
/// configured audience, issuer and token types are checked.
#[test]
fn introspection_answers_are_checked_as_numeric_dates_audience_issuer_and_token_type() {
    let (_pki, ca, server) = https_pki();
    // "soon" expires 4.5 s after the proxy is ready, with a fraction (set below)
    let soon = Arc::new(std::sync::Mutex::new(0.0f64));
    let soon_at = soon.clone();
    let endpoint = HttpsEndpoint::start(&server, None, move |call| {
        let soon_exp = *soon_at.lock().unwrap();
        let token = call.body.strip_prefix("token=").unwrap_or("");
        let now = now_f64();
        let good = json!({"active": true, "sub": "Cintro-1", "aud": ["other", AUD], "iss": ISS,
                   "token_type": "Access_Token", "exp": now + 600.5, "iat": now - 1.5});
        let patch = match token {
            "good" => json!({}),
            "soon" => json!({"exp": soon_exp}),
            "fractional-past" => json!({"exp": now - 3600.5}),
            "string-exp" => json!({"exp": format!("{}", now as i64 + 600)}),
            "null-exp" => json!({"exp": null}),
            "nbf-tomorrow" => json!({"nbf": now + 86_400.0}),
            "iat-tomorrow" => json!({"iat": now + 86_400.0}),
            "foreign-aud" => json!({"aud": "someone-else"}),
            "no-aud" => json!({"aud": null}),
            "foreign-iss" => json!({"iss": "https://evil.test"}),
            "refresh" => json!({"token_type": "refresh_token"}),
            _ => return (200, json!({"active": false}).to_string()),
        };
        let mut answer = good;
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() && k != "exp" {
                answer.as_object_mut().unwrap().remove(k);
            } else {
                answer[k] = v.clone();
            }
        }
        (200, answer.to_string())
    });
    let s = introspection_scenario(
        &endpoint,
        &ca,
        &format!("  audiences: [{AUD}]\n  issuer: {ISS}\n  token_types: [access_token]\n"),
    );
    let soon_exp = now_f64() + 4.5;
    *soon.lock().unwrap() = soon_exp;
    let resp = get(&s, "IDENTITY-TOKEN//soon");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = get(&s, "IDENTITY-TOKEN//good");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(origin(&s), "Cintro-1");
    for (token, why) in [
        ("fractional-past", "not active"),
        ("string-exp", "not active"),
        ("null-exp", "not active"),
        ("nbf-tomorrow", "not active"),
        ("iat-tomorrow", "not active"),
        ("foreign-aud", "audience"),
        ("no-aud", "audience"),
        ("foreign-iss", "issuer"),
        ("refresh", "token type"),
    ] {
        let resp = get(&s, &format!("IDENTITY-TOKEN//{token}"));
        assert_eq!(resp.status, 401, "{token}: {}", resp.text());
        assert!(resp.text().contains(why), "{token}: {}", resp.text());
        let challenge = resp.header_all("WWW-Authenticate").join(" | ");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }
    assert_eq!(
        s.upstream.count(),
        2,
        "only the good answers were forwarded"
    );

    // "soon" was cached until its fractional exp (cache_ttl is 30 s), not a second longer
    let calls = endpoint.count();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while now_f64() <= soon_exp + 0.2 {
        assert!(
            std::time::Instant::now() < deadline,
            "clock did not advance"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = get(&s, "IDENTITY-TOKEN//soon");
    assert_eq!(resp.status, 401, "admitted past its exp: {}", resp.text());
    assert_eq!(
        endpoint.count(),
        calls + 1,
        "asked again once the answer expired"
    );
}

/// The JWKS fetch and the introspection call (which carries the token itself) refuse peers that
/// break the outbound TLS policy: static-RSA or CBC suites only, a name in the CN only. Nothing
/// is sent to them; the same peers with a policy-conforming setup are used.
#[test]
fn jwks_and_introspection_refuse_peers_without_forward_secrecy_aead_or_a_san() {
    let key = Key::ec();
    let pki = Pki::new();
    let ca = pki.ca("svc-ca");
    for (what, server, tls) in common::https::policy_breaking_peers(&pki, &ca, "localhost") {
        let doc = jwks(&[(&key, "k1")]);
        let jwks_peer = HttpsEndpoint::start_with(&server, None, tls, move |_| (200, doc.clone()));
        let s = jwt_scenario(
            &format!(
                "jwks_url: {}\n      jwks_ca: {}",
                jwks_peer.url("/jwks"),
                ca.cert.display()
            ),
            "",
        );
        let resp = get(&s, &token(&key, "k1", &claims("Cjwt-1")));
        assert_eq!(
            resp.status,
            401,
            "JWKS from a peer with {what}: {}",
            resp.text()
        );
        assert!(
            resp.text().contains("keys not available"),
            "{what}: {}",
            resp.text()
        );
        assert_eq!(
            jwks_peer.count(),
            0,
            "{what}: a request reached the JWKS peer"
        );

        let intro_peer = HttpsEndpoint::start_with(&server, None, tls, answer);
        let s = introspection_scenario(&intro_peer, &ca, "");
        let resp = get(&s, "IDENTITY-TOKEN//good");
        assert_eq!(
            resp.status,
            503,
            "introspection at a peer with {what}: {}",
            resp.text()
        );
        assert_eq!(intro_peer.count(), 0, "{what}: the token reached the peer");
        let log = s.proxy.stderr_text();
        assert!(
            log.contains("ECDHE and AEAD") || log.contains("does not name the peer"),
            "{what}: the log says why: {log}"
        );
    }
    // the control: a peer as the policy wants it serves both
    let server = pki.server(&ca, "localhost", &["127.0.0.1"]);
    let doc = jwks(&[(&key, "k1")]);
    let jwks_peer = HttpsEndpoint::start(&server, None, move |_| (200, doc.clone()));
    let s = jwt_scenario(
        &format!(
            "jwks_url: {}\n      jwks_ca: {}",
            jwks_peer.url("/jwks"),
            ca.cert.display()
        ),
        "",
    );
    assert_eq!(get(&s, &token(&key, "k1", &claims("Cjwt-1"))).status, 200);
}

/// Issue 22: a JWKS URL's CA file is reloaded like the other files. A broken CA file keeps the
/// CA in force (a fetch still trusts the JWKS server); when the server moves to a certificate of
/// a new CA, fetches fail until the CA file is replaced by the new CA, and then succeed.
#[test]
fn a_rotated_jwks_ca_file_is_used_by_the_next_fetch_and_a_broken_one_keeps_the_last_good() {
    use common::creds::wait_metric;
    use common::proxy::write_atomic;

    let (k1, k2, k3) = (Key::rsa(), Key::ec(), Key::ed());
    let (pki, old_ca, old_server) = https_pki();
    let new_ca = pki.ca("svc-ca-2");
    let new_server = pki.server(&new_ca, "localhost", &["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("jwks-ca.pem");
    write_atomic(&ca_file, &std::fs::read(&old_ca.cert).unwrap());
    let served = Arc::new(std::sync::Mutex::new(jwks(&[(&k1, "k1")])));
    let body = served.clone();
    let endpoint = HttpsEndpoint::start(&old_server, None, move |_| {
        (200, body.lock().unwrap().clone())
    });
    let s = jwt_scenario(
        &format!(
            "jwks_url: {}\n      jwks_ca: {}\n      jwks_min_refetch: 1s",
            endpoint.url("/jwks"),
            ca_file.display()
        ),
        "",
    );
    let reloads = |result: &str| {
        format!("m2m_auth_proxy_reloads_total{{file=\"jwks_ca\",result=\"{result}\"}}")
    };
    let past_min_refetch = || std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(&s, &token(&k1, "k1", &claims("Cjwt-1"))).status, 200);
    assert_eq!(endpoint.count(), 1);

    // a broken CA file is refused; the next fetch (an unknown kid) uses the CA in force
    write_atomic(&ca_file, b"not a certificate\n");
    assert_eq!(wait_metric(&s.proxy, &reloads("failure"), 1.0), 1.0);
    *served.lock().unwrap() = jwks(&[(&k1, "k1"), (&k2, "k2")]);
    past_min_refetch();
    let resp = get(&s, &token(&k2, "k2", &claims("Cjwt-2")));
    assert_eq!(
        resp.status,
        200,
        "fetched with the last good CA: {}",
        resp.text()
    );
    assert_eq!(endpoint.count(), 2);

    // the server's certificate now chains to a new CA: the CA in force refuses it
    endpoint.set_certificate(&new_server);
    *served.lock().unwrap() = jwks(&[(&k1, "k1"), (&k2, "k2"), (&k3, "k3")]);
    past_min_refetch();
    assert_eq!(get(&s, &token(&k3, "k3", &claims("Cjwt-3"))).status, 401);
    assert_eq!(endpoint.count(), 2, "no call got through the handshake");

    // the CA file is replaced by the new CA: the next fetch trusts the new certificate
    write_atomic(&ca_file, &std::fs::read(&new_ca.cert).unwrap());
    assert_eq!(
        wait_metric(&s.proxy, &reloads("success"), 1.0),
        1.0,
        "{}",
        s.proxy.stderr_text()
    );
    past_min_refetch();
    let resp = get(&s, &token(&k3, "k3", &claims("Cjwt-3")));
    assert_eq!(resp.status, 200, "fetched with the new CA: {}", resp.text());
    assert_eq!(endpoint.count(), 3);
    assert!(
        s.proxy.stderr_text().contains("reloaded jwks_ca"),
        "{}",
        s.proxy.stderr_text()
    );
}

/// Issue 22: the introspection endpoint's client certificate and password files are reloaded
/// like the other files. After a rotation, the next call presents the new certificate (not on a
/// kept-alive connection made with the old one) and the new password; a broken password file
/// keeps the one in force; a new CA file applies to the next call, kept-alive connection or not.
#[test]
fn introspection_client_certificate_and_password_files_are_reloaded() {
    use common::creds::wait_metric;
    use common::proxy::write_atomic;

    let (pki, ca, server) = https_pki();
    let (first, second) = (
        pki.client(&ca, ClientOpts::cn("m2m-auth-proxy")),
        pki.client(&ca, ClientOpts::cn("m2m-auth-proxy-2")),
    );
    let serial = |c: &common::CertKey| {
        c.x509
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string()
    };
    let basic = |pw: &str| {
        format!(
            "authorization: basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("m2m-proxy:{pw}"))
        )
        .to_lowercase()
    };
    let expected = Arc::new(std::sync::Mutex::new(basic("pw-one")));
    let wanted = expected.clone();
    // a client certificate of `ca` and the current password, or no answer the proxy can use
    let endpoint = HttpsEndpoint::start(&server, Some(&ca), move |call| {
        if !call.head.to_lowercase().contains(&*wanted.lock().unwrap()) {
            return (401, "{}".into());
        }
        let active = call.body.starts_with("token=good");
        (
            200,
            json!({"active": active, "sub": "Cintro-1", "exp": now() + 600}).to_string(),
        )
    });
    endpoint.set_keep_alive(true);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, password) = (
        dir.path().join("client.pem"),
        dir.path().join("client.key"),
        dir.path().join("password"),
    );
    let install = |c: &common::CertKey| {
        write_atomic(&key, &std::fs::read(&c.key).unwrap());
        write_atomic(&cert, &std::fs::read(&c.chain).unwrap());
    };
    install(&first);
    write_atomic(&password, b"pw-one\n");
    let ca_file = dir.path().join("ca.pem");
    write_atomic(&ca_file, &std::fs::read(&ca.cert).unwrap());
    let s = introspection_scenario(
        &endpoint,
        &common::CertKey {
            cert: ca_file.clone(),
            ..ca.clone()
        },
        &format!(
            "  client_cert: {}\n  client_key: {}\n  basic_user: m2m-proxy\n  basic_password_file: {}\n",
            cert.display(),
            key.display(),
            password.display()
        ),
    );
    let reloads = |file: &str, result: &str| {
        format!("m2m_auth_proxy_reloads_total{{file=\"{file}\",result=\"{result}\"}}")
    };
    let last_serial = || {
        endpoint
            .calls()
            .last()
            .and_then(|c| c.client_serial.clone())
    };
    assert_eq!(get(&s, "IDENTITY-TOKEN//good-1").status, 200);
    assert_eq!(last_serial(), Some(serial(&first)));

    // a new client certificate: the next call is made with it, on a new connection
    install(&second);
    let rotated = reloads("introspection_client_cert", "success");
    assert_eq!(
        wait_metric(&s.proxy, &rotated, 1.0),
        1.0,
        "{}",
        s.proxy.stderr_text()
    );
    let resp = get(&s, "IDENTITY-TOKEN//good-2");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(last_serial(), Some(serial(&second)));

    // a new password: the endpoint now wants it, and gets it
    *expected.lock().unwrap() = basic("pw-two");
    write_atomic(&password, b"pw-two\n");
    let changed = reloads("introspection_credentials", "success");
    assert_eq!(
        wait_metric(&s.proxy, &changed, 1.0),
        1.0,
        "{}",
        s.proxy.stderr_text()
    );
    let resp = get(&s, "IDENTITY-TOKEN//good-3");
    assert_eq!(resp.status, 200, "{}", resp.text());

    // an empty password file is refused: the password in force stays
    write_atomic(&password, b"");
    let refused = reloads("introspection_credentials", "failure");
    assert_eq!(
        wait_metric(&s.proxy, &refused, 1.0),
        1.0,
        "{}",
        s.proxy.stderr_text()
    );
    let resp = get(&s, "IDENTITY-TOKEN//good-4");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(endpoint.count(), 4);

    // the CA file names another CA: no call, not even on a kept-alive connection verified with
    // the old CA, trusts the endpoint any more
    write_atomic(&ca_file, &std::fs::read(&pki.ca("other-ca").cert).unwrap());
    let trusted = reloads("introspection_ca", "success");
    assert_eq!(
        wait_metric(&s.proxy, &trusted, 1.0),
        1.0,
        "{}",
        s.proxy.stderr_text()
    );
    let resp = get(&s, "IDENTITY-TOKEN//good-5");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(endpoint.count(), 4);
}
