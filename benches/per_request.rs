//! Micro-benchmarks of the per-request path (issue 7) and of how its cost grows with the size of
//! the credential files.
//!
//!   cargo bench --bench per_request                 # everything, ~2-3 min on 2 cores
//!   cargo bench --bench per_request -- scaling      # one group (criterion filter)
//!
//! Groups:
//! * `parse`        Authorization header -> credentials (Basic, Bearer)
//! * `mtls`         originator regex on a certificate field; identity of a certificate (done once
//!   per connection, at the end of the handshake); the per-request identity check
//! * `policy`       originator policy (overwrite, verify)
//! * `headers`      X-M2M-Origin collection + upstream header rewrite on a spoofed request
//! * `authenticate` the whole `Authenticator::authenticate` call per request: mTLS, Basic with
//!   the verification cache warm (bcrypt cost 10 entry), Bearer
//! * `basic`        VerifyCache hit (bcrypt-10 entry, warm) and miss (a real bcrypt-10 verify)
//! * `scaling`      cache hit / token lookup with 1, 1 000 and 100 000 entries (cheap {SHA} users
//!   around the bcrypt one, random token hashes), and the parse ("reload") time of
//!   100 000-entry htpasswd and tokens files, which runs off the request path
//! * `metrics`      the per-request Prometheus counter + histogram update
//! * `jwt`          a JWT verified against a JWKS (RS256 2048-bit, ES256) or a shared secret
//!   (HS256): header, issuer lookup, signature, claims, identity (`_first_use`), and the same
//!   token again, answered by the verified-token cache (`_again`); tokens are signed with openssl
//!   in the bench, not with the JWT library
//! * `tokens_file`  load of a tokens file as the proxy loads it (`BearerAuth::new`, then
//!   `TokensReload::apply`: parse, checks, swap): 1 000 and 100 000 tokens in the block form
//!   `m2m-auth-proxy token` writes (`load`), 100 000 as flow mappings (`load_flow`, read by
//!   serde_yaml_ng). The bytes a load keeps are printed once per case (`retained`, requested
//!   and as malloc chunks, and the `peak` above the file's text during the load), counted by
//!   the bench binary's global allocator
//! * `websocket`    one oneM2M WebSocket message through the gate (unmask, strict decode,
//!   policy, canonical re-encode, re-mask): JSON with the proven `fr`, JSON and CBOR with a
//!   spoofed one (rewritten), a 4 KiB JSON primitive (instruction counts: gate_callgrind.rs)
//! * `rules`        authorization rules: `decide` over 100 rules (30 originator regexes, 30 target
//!   globs, 20 identity/role rules, 20 operation/type rules) when none matches (the default
//!   decides) and when rule 50 does; `parse_target` and `primitive_target` of typical targets
//!
//! Everything is built in memory; nothing touches the network or the file system except
//! criterion's own output under target/criterion.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode};
use http::HeaderValue;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

use m2m_auth_proxy::auth::authorization;
use m2m_auth_proxy::auth::basic::{BasicAuth, BasicVerifier, HtpasswdReload};
use m2m_auth_proxy::auth::bearer::{BearerAuth, TokensReload};
use m2m_auth_proxy::auth::mtls::{MtlsAuthenticator, MtlsVerifier};
use m2m_auth_proxy::auth::queue::VerifyQueue;
use m2m_auth_proxy::auth::{Authenticator, Presented, Verifier};
use m2m_auth_proxy::config::{
    AuthConfig, BasicConfig, BearerConfig, CacheConfig, CertField, Method, MtlsConfig,
    OriginatorConfig, OriginatorMode,
};
use m2m_auth_proxy::credentials::cache::VerifyCache;
use m2m_auth_proxy::credentials::htpasswd::HtpasswdFile;
use m2m_auth_proxy::credentials::htpasswd_line;
use m2m_auth_proxy::credentials::tokens::TokenFile;
use m2m_auth_proxy::headers::{client_originators, rewrite_upstream, Forwarding};
use m2m_auth_proxy::identity::Identity;
use m2m_auth_proxy::metrics;
use m2m_auth_proxy::originator::OriginatorPolicy;
use m2m_auth_proxy::originator_syntax::OriginatorPattern;
use m2m_auth_proxy::reload::{Reloadable, Reloader};
use m2m_auth_proxy::rules::{self, RuleSet};
use m2m_auth_proxy::tls::ClientTrust;

const USER: &str = "Cae-basic1";
const PASSWORD: &[u8] = b"s3cret-pw";
const CLIENT_URI: &str = "urn:m2m:Cae-sensor1";
const SIZES: [usize; 3] = [1, 1_000, 100_000];

// ------------------------------------------------------------------ allocation counting

/// The system allocator, counting the bytes live (requested sizes, and glibc's chunk sizes, which
/// include its rounding) and the high-water mark of the requested ones, for the `tokens_file`
/// group's retained-memory figures. A few relaxed atomic updates per allocation: the other
/// groups are measured with it too.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIVE_CHUNKS: AtomicUsize = AtomicUsize::new(0);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn chunk(p: *mut u8) -> usize {
    extern "C" {
        fn malloc_usable_size(ptr: *mut std::ffi::c_void) -> usize;
    }
    // SAFETY: `p` is a live allocation of the system (glibc) allocator.
    unsafe { malloc_usable_size(p.cast()) }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn chunk(_: *mut u8) -> usize {
    0
}

fn grew(by: usize, p: *mut u8) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
    LIVE_CHUNKS.fetch_add(chunk(p), Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size(), p);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size(), p);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_CHUNKS.fetch_sub(chunk(ptr), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) };
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = chunk(ptr);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE_CHUNKS.fetch_sub(before, Ordering::Relaxed);
            grew(new_size, p);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ------------------------------------------------------------------ fixtures

fn src() -> &'static Path {
    Path::new("bench-in-memory")
}

/// Run a future that never waits (every path benchmarked here completes on its first poll).
fn now_or_never<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("benchmarked future did not complete synchronously"),
    }
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A CA and a client certificate like the harness's (`CN=Cae-sensor1`, `URI:urn:m2m:Cae-sensor1`).
fn pki() -> (X509, X509, PKey<Private>) {
    let ca_key = ec_key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "Bench CA")
        .unwrap();
    let ca_name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&ca_name).unwrap();
    b.set_issuer_name(&ca_name).unwrap();
    b.set_pubkey(&ca_key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = b.build();

    let key = ec_key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "Cae-sensor1")
        .unwrap();
    let subject = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(2).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .uri(CLIENT_URI)
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    (ca, b.build(), key)
}

fn basic_header(user: &str, password: &[u8]) -> HeaderValue {
    let mut raw = user.as_bytes().to_vec();
    raw.push(b':');
    raw.extend_from_slice(password);
    let enc = base64::engine::general_purpose::STANDARD.encode(raw);
    HeaderValue::from_str(&format!("Basic {enc}")).unwrap()
}

/// `{SHA}` line (htpasswd -s) for user u{i} with password p{i}: cheap to verify.
fn sha_line(i: usize) -> String {
    let digest = sha1::Sha1::digest(format!("p{i}").as_bytes());
    format!(
        "u{i}:{{SHA}}{}\n",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// htpasswd with `n` users: the benchmark user with a bcrypt-10 hash plus n-1 `{SHA}` users.
fn htpasswd_content(n: usize, bcrypt_line: &str) -> String {
    let mut s = String::with_capacity(n * 48);
    s.push_str(bcrypt_line);
    s.push('\n');
    for i in 1..n {
        s.push_str(&sha_line(i));
    }
    s
}

/// Token i: "token-{i}" (the benchmark presents token-0); stored hashes are SHA-256 of the
/// token, i.e. uniformly random-looking 32-byte keys.
fn token(i: usize) -> String {
    format!("tok-{i:08}-bench-bearer-token-value-xxxxxxxxx")
}

fn tokens_content(n: usize) -> String {
    let mut s = String::with_capacity(n * 140 + 8);
    s.push_str("tokens:\n");
    for i in 0..n {
        let digest = hex::encode(Sha256::digest(token(i).as_bytes()));
        s.push_str(&format!(
            "  - name: gw-{i}\n    sha256: \"{digest}\"\n    originator: Cgw{i}\n"
        ));
    }
    s
}

/// The same tokens as [`tokens_content`], one flow mapping per entry.
fn tokens_content_flow(n: usize) -> String {
    let mut s = String::with_capacity(n * 140 + 8);
    s.push_str("tokens:\n");
    for i in 0..n {
        let digest = hex::encode(Sha256::digest(token(i).as_bytes()));
        s.push_str(&format!(
            "  - {{name: gw-{i}, sha256: \"{digest}\", originator: Cgw{i}}}\n"
        ));
    }
    s
}

fn request_with_spoofed_headers() -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/m2m/cse-bench/cnt-1/la", None).unwrap();
    for (k, v) in [
        ("Host", "localhost:38443"),
        ("User-Agent", "oha/1.16.0"),
        ("Accept", "*/*"),
        ("X-M2M-Origin", "spoofed-by-client"),
        ("X-M2M-RI", "bench-1"),
        ("X-Forwarded-For", "10.9.9.9"),
        ("Authorization", "Basic Q2FlLWJhc2ljMTpzM2NyZXQtcHc="),
    ] {
        req.append_header(k, v).unwrap();
    }
    req
}

fn mtls_config(pattern: &str) -> MtlsConfig {
    MtlsConfig {
        identity: vec![
            CertField::Uri,
            CertField::Dns,
            CertField::Email,
            CertField::Cn,
        ],
        originator: pattern.into(),
    }
}

fn identity(originator: &str) -> Identity {
    Identity {
        name: originator.into(),
        proven_by: Method::Mtls,
        originator: originator.into(),
        also_allowed: vec![OriginatorPattern::parse("Cae-sensor1-*").unwrap()],
        roles: Vec::new(),
    }
}

// ------------------------------------------------------------------ groups

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    let basic = basic_header(USER, PASSWORD);
    let bearer = HeaderValue::from_str(&format!("Bearer {}", token(0))).unwrap();
    g.bench_function("authorization_basic", |b| {
        b.iter(|| authorization::parse(black_box(&[&basic])).unwrap())
    });
    g.bench_function("authorization_bearer", |b| {
        b.iter(|| authorization::parse(black_box(&[&bearer])).unwrap())
    });
    g.finish();
}

fn mtls(c: &mut Criterion) {
    let mut g = c.benchmark_group("mtls");
    let (ca, cert, _) = pki();
    let whole = MtlsAuthenticator::from_config(&mtls_config("^(?P<originator>.+)$")).unwrap();
    let prefix =
        MtlsAuthenticator::from_config(&mtls_config("^urn:m2m:(?P<originator>C[^/]+)$")).unwrap();
    g.bench_function("derive_originator_whole", |b| {
        b.iter(|| whole.derive_originator(black_box(CLIENT_URI)).unwrap())
    });
    g.bench_function("derive_originator_urn_prefix", |b| {
        b.iter(|| prefix.derive_originator(black_box(CLIENT_URI)).unwrap())
    });
    // Once per connection (handshake_complete_callback): SAN walk + regex + validation.
    g.bench_function("identify_certificate_per_connection", |b| {
        b.iter_batched(
            || cert.clone(),
            |c| whole.identify(c, Vec::new(), 1, true),
            BatchSize::SmallInput,
        )
    });
    // DER parse of the client certificate (what OpenSSL does per full handshake / resumption).
    let der = cert.to_der().unwrap();
    g.bench_function("x509_from_der_client_cert", |b| {
        b.iter(|| X509::from_der(black_box(&der)).unwrap())
    });
    let trust = ClientTrust::new(vec![ca.clone()], None).unwrap();
    g.bench_function("x509_verify_chain_1ca", |b| {
        b.iter(|| assert!(trust.verify(black_box(&cert), &[])))
    });
    g.finish();
}

fn policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy");
    let me = identity("Cae-sensor1");
    let overwrite = OriginatorPolicy::from_config(&OriginatorConfig {
        mode: OriginatorMode::Overwrite,
        ..Default::default()
    })
    .unwrap();
    let verify = OriginatorPolicy::from_config(&OriginatorConfig {
        mode: OriginatorMode::Verify,
        cse_namespace: true,
        allow: [("Cgw".to_string(), vec!["Cgw-*".to_string()])].into(),
        ..Default::default()
    })
    .unwrap();
    g.bench_function("overwrite_spoofed", |b| {
        b.iter(|| {
            overwrite
                .decide(black_box(&me), black_box(&["spoofed-by-client"]))
                .unwrap()
        })
    });
    g.bench_function("verify_same", |b| {
        b.iter(|| {
            verify
                .decide(black_box(&me), black_box(&["Cae-sensor1"]))
                .unwrap()
        })
    });
    g.bench_function("verify_pattern", |b| {
        b.iter(|| {
            verify
                .decide(black_box(&me), black_box(&["Cae-sensor1-temp"]))
                .unwrap()
        })
    });
    g.bench_function("verify_refused", |b| {
        b.iter(|| {
            verify
                .decide(black_box(&me), black_box(&["CAdmin"]))
                .unwrap_err()
        })
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("headers");
    let req = request_with_spoofed_headers();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    g.bench_function("client_originators", |b| {
        b.iter(|| client_originators(black_box(&req)).len())
    });
    g.bench_function("clone_request_only", |b| b.iter(|| black_box(&req).clone()));
    g.bench_function("rewrite_upstream_spoofed", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |r| {
                rewrite_upstream(
                    r,
                    &Forwarding {
                        originator: Some("Cae-sensor1"),
                        client_ip: Some(ip),
                        proto: "https",
                        forward_authorization: false,
                    },
                )
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The whole authentication call of one request, as `AuthProxy::request_filter` makes it.
fn authenticate(c: &mut Criterion) {
    let mut g = c.benchmark_group("authenticate");
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, _) = pki();
    let trust = Arc::new(ClientTrust::new(vec![ca.clone()], None).unwrap());
    let mtls = MtlsAuthenticator::from_config(&mtls_config("^(?P<originator>.+)$")).unwrap();
    let conn = mtls.identify(cert.clone(), Vec::new(), 1, true);

    let bcrypt = htpasswd_line(USER, PASSWORD).unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("{bcrypt}\n")).unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(&tokens, tokens_content(1)).unwrap();
    let basic = Arc::new(
        BasicAuth::new(&BasicConfig {
            htpasswd: htpasswd.into(),
            realm: "oneM2M".into(),
            allow_insecure_hashes: false,
            originators: Default::default(),
            cache: CacheConfig::default(),
            timing_floor: None,
        })
        .unwrap(),
    );
    let bearer = Arc::new(BearerAuth::new(&BearerConfig {
        tokens: tokens.into(),
        allow_declared: false,
    }));
    // the files are loaded as the proxy loads them: the reloader's first load
    Reloader::new(vec![
        Box::new(HtpasswdReload(basic.clone())),
        Box::new(TokensReload(bearer.clone())),
    ])
    .load_all()
    .unwrap();
    let config = AuthConfig {
        methods: vec![Method::Mtls, Method::Basic, Method::Bearer],
        ..AuthConfig::default()
    };
    let verifiers: Vec<Arc<dyn Verifier>> = vec![
        Arc::new(MtlsVerifier { trust }),
        Arc::new(BasicVerifier::new(
            basic,
            Arc::new(VerifyQueue::new("password", 1, 1)),
        )),
        bearer,
    ];
    let auth = Authenticator::new(&config, verifiers, Default::default());
    let ip: IpAddr = "127.0.0.1".parse().unwrap();

    g.bench_function("mtls_per_request", |b| {
        b.iter(|| {
            let p = Presented::new(Some(&conn), Vec::new(), Some(ip));
            now_or_never(auth.authenticate(p)).unwrap()
        })
    });
    let basic_hv = basic_header(USER, PASSWORD);
    // warm the cache (one bcrypt-10 verification, off the clock); the cache-hit path never
    // reaches spawn_blocking, so the future completes on its first poll.
    assert!(auth_basic_warm(&auth, &basic_hv, ip));
    g.bench_function("basic_bcrypt10_cache_hit", |b| {
        b.iter(|| {
            let p = Presented::new(None, vec![&basic_hv], Some(ip));
            now_or_never(auth.authenticate(p)).unwrap()
        })
    });
    let bearer_hv = HeaderValue::from_str(&format!("Bearer {}", token(0))).unwrap();
    g.bench_function("bearer", |b| {
        b.iter(|| {
            let p = Presented::new(None, vec![&bearer_hv], Some(ip));
            now_or_never(auth.authenticate(p)).unwrap()
        })
    });
    g.finish();
}

/// Warm the Basic cache through the real path (spawn_blocking needs a runtime).
fn auth_basic_warm(auth: &Authenticator, hv: &HeaderValue, ip: IpAddr) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = Presented::new(None, vec![hv], Some(ip));
    rt.block_on(auth.authenticate(p)).is_ok()
}

fn basic(c: &mut Criterion) {
    let mut g = c.benchmark_group("basic");
    let bcrypt = htpasswd_line(USER, PASSWORD).unwrap();
    let file = HtpasswdFile::parse(src(), &format!("{bcrypt}\n"), false).unwrap();
    let cache = VerifyCache::new(10_000, Duration::from_secs(300)).unwrap();
    assert!(cache.check(&file, USER, PASSWORD));
    g.bench_function("cache_hit_bcrypt10", |b| {
        b.iter(|| assert!(cache.check(&file, black_box(USER), black_box(PASSWORD))))
    });
    g.finish();

    // A miss = one real bcrypt cost-10 verification (what both anchors pay on every request).
    let mut g = c.benchmark_group("basic_miss");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
    let disabled = VerifyCache::new(0, Duration::from_secs(300)).unwrap();
    g.bench_function("cache_miss_bcrypt10_verify", |b| {
        b.iter(|| assert!(disabled.check(&file, USER, PASSWORD)))
    });
    g.finish();
}

fn scaling(c: &mut Criterion) {
    let bcrypt = htpasswd_line(USER, PASSWORD).unwrap();
    let mut g = c.benchmark_group("scaling");
    for n in SIZES {
        let content = htpasswd_content(n, &bcrypt);
        let file = HtpasswdFile::parse(src(), &content, false).unwrap();
        assert_eq!(file.len(), n);
        // Cache warm with the benchmark user plus up to max_entries-1 other users, so the hit is
        // measured in a cache as full as the file allows.
        let cache = VerifyCache::new(10_000, Duration::from_secs(300)).unwrap();
        assert!(cache.check(&file, USER, PASSWORD));
        for i in 1..n.min(10_000) {
            assert!(cache.check(&file, &format!("u{i}"), format!("p{i}").as_bytes()));
        }
        assert!(cache.contains(&file, USER, PASSWORD));
        g.bench_with_input(BenchmarkId::new("htpasswd_cache_hit", n), &n, |b, _| {
            b.iter(|| assert!(cache.check(&file, black_box(USER), black_box(PASSWORD))))
        });

        let tokens = TokenFile::parse(src(), &tokens_content(n)).unwrap();
        assert_eq!(tokens.len(), n);
        let t0 = token(0);
        let now = SystemTime::now();
        g.bench_with_input(BenchmarkId::new("token_lookup", n), &n, |b, _| {
            b.iter(|| {
                matches!(
                    tokens.lookup(black_box(t0.as_bytes()), now),
                    m2m_auth_proxy::credentials::tokens::TokenLookup::Valid(_)
                )
            })
        });
    }
    g.finish();

    // Reload cost: parse of a 100 000-entry file (runs on the reload thread, then an ArcSwap
    // store; requests keep using the old snapshot meanwhile).
    let mut g = c.benchmark_group("reload_parse");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8));
    let content = htpasswd_content(100_000, &bcrypt);
    g.bench_function("htpasswd_100000", |b| {
        b.iter(|| {
            HtpasswdFile::parse(src(), black_box(&content), false)
                .unwrap()
                .len()
        })
    });
    let content = tokens_content(100_000);
    g.bench_function("tokens_100000", |b| {
        b.iter(|| TokenFile::parse(src(), black_box(&content)).unwrap().len())
    });
    g.finish();
}

/// A tokens file loaded as the proxy loads it: a fresh `BearerAuth`, then the reloader's `apply`.
fn load_tokens(contents: &[Vec<u8>]) -> Arc<BearerAuth> {
    let auth = Arc::new(BearerAuth::new(&BearerConfig {
        tokens: "bench-in-memory/tokens.yaml".into(),
        allow_declared: false,
    }));
    TokensReload(auth.clone()).apply(contents).unwrap();
    auth
}

fn tokens_file(c: &mut Criterion) {
    let mut g = c.benchmark_group("tokens_file");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    // `load`: the block form `m2m-auth-proxy token` writes; `load_flow`: the same entries as
    // flow mappings (`- {name: …, sha256: …, originator: …}`), which serde_yaml_ng reads.
    let cases = [
        ("load", 1_000, &AtomicBool::new(false)),
        ("load", 100_000, &AtomicBool::new(false)),
        ("load_flow", 100_000, &AtomicBool::new(false)),
    ];
    for (form, n, reported) in cases {
        let content = match form {
            "load" => tokens_content(n),
            _ => tokens_content_flow(n),
        };
        let contents = vec![content.into_bytes()];
        g.bench_with_input(BenchmarkId::new(form, n), &n, |b, _| {
            if !reported.swap(true, Ordering::Relaxed) {
                // Bytes kept by the loaded tokens (the file's text is alive before and after,
                // so it is not counted), and the high-water mark above that during the load.
                let before = LIVE.load(Ordering::Relaxed);
                let chunks_before = LIVE_CHUNKS.load(Ordering::Relaxed);
                PEAK.store(before, Ordering::Relaxed);
                let auth = load_tokens(&contents);
                let retained = LIVE.load(Ordering::Relaxed) - before;
                let chunks = LIVE_CHUNKS.load(Ordering::Relaxed) - chunks_before;
                let peak = PEAK.load(Ordering::Relaxed) - before;
                assert_eq!(auth.token_count(), n);
                assert!(matches!(
                    auth.check_token(&token(n - 1)),
                    m2m_auth_proxy::auth::bearer::BearerOutcome::Valid(_)
                ));
                drop(auth);
                let mib = |bytes: usize| bytes as f64 / 1048576.0;
                println!(
                    "tokens_file/{form}/{n}: retained {retained} bytes ({:.2} MiB, {:.0} B/token; \
                     malloc chunks {:.2} MiB), peak during the load {:.2} MiB above the file's \
                     {:.2} MiB",
                    mib(retained),
                    retained as f64 / n as f64,
                    mib(chunks),
                    mib(peak),
                    mib(contents[0].len())
                );
            }
            // the load only: dropping the previous set is not timed
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = std::time::Instant::now();
                    let auth = load_tokens(black_box(&contents));
                    total += start.elapsed();
                    drop(black_box(auth));
                }
                total
            })
        });
    }
    g.finish();
}

fn metrics_update(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    m2m_auth_proxy::server::init_metrics(&[], &[]);
    g.bench_function("request_counter_and_histogram", |b| {
        b.iter(|| metrics::request(black_box("mtls"), black_box("forwarded"), 0.0004))
    });
    g.finish();
}

fn jwt(c: &mut Criterion) {
    use m2m_auth_proxy::auth::jwks::JwksReload;
    use m2m_auth_proxy::auth::jwt::JwtAuth;
    use m2m_auth_proxy::config::JwtConfig;
    use m2m_auth_proxy::reload::Reloadable;
    use openssl::bn::BigNumContext;
    use openssl::ecdsa::EcdsaSig;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::sign::Signer;

    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let ec = ec_key();
    let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
    let ec_key = ec.ec_key().unwrap();
    ec_key
        .public_key()
        .affine_coordinates(
            ec_key.group(),
            &mut x,
            &mut y,
            &mut BigNumContext::new().unwrap(),
        )
        .unwrap();
    let n = rsa.rsa().unwrap().n().to_vec();
    let e = rsa.rsa().unwrap().e().to_vec();
    let jwks = serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "r", "n": b64(&n), "e": b64(&e)},
        {"kty": "EC", "kid": "e", "crv": "P-256",
         "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())},
    ]});
    let secret = [7u8; 32];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let secret_path = dir.path().join("secret");
    std::fs::write(&secret_path, secret).unwrap();
    let config: JwtConfig = serde_yaml_ng::from_str(&format!(
        "issuers:\n  - issuer: https://idp\n    audiences: [proxy]\n    jwks_file: {}\n  \
         - issuer: https://shared\n    audiences: [proxy]\n    secret_file: {}\n    algorithms: [HS256]\n",
        path.display(),
        secret_path.display()
    ))
    .unwrap();
    let (auth, files) = JwtAuth::build(&config).unwrap();
    // JWKS files start empty: their first load is the reloader's
    for file in files {
        JwksReload(file)
            .apply(&[jwks.to_string().into_bytes()])
            .unwrap();
    }
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    // signed here with openssl, not with the library under test
    let token = |alg: &str, kid: &str, iss: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>| {
        let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid});
        let claims =
            serde_json::json!({"iss": iss, "aud": "proxy", "sub": "Cae-sensor1", "exp": exp});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    };
    let rs256 = token("RS256", "r", "https://idp", &|input| {
        let mut s = Signer::new(MessageDigest::sha256(), &rsa).unwrap();
        s.sign_oneshot_to_vec(input).unwrap()
    });
    let es256 = token("ES256", "e", "https://idp", &|input| {
        let mut s = Signer::new(MessageDigest::sha256(), &ec).unwrap();
        let sig = EcdsaSig::from_der(&s.sign_oneshot_to_vec(input).unwrap()).unwrap();
        let mut raw = sig.r().to_vec_padded(32).unwrap();
        raw.extend(sig.s().to_vec_padded(32).unwrap());
        raw
    });
    let hs256 = token("HS256", "s", "https://shared", &|input| {
        let key = PKey::hmac(&secret).unwrap();
        let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
        s.sign_oneshot_to_vec(input).unwrap()
    });
    let mut g = c.benchmark_group("jwt");
    for (name, token) in [("rs256_2048", &rs256), ("es256", &es256), ("hs256", &hs256)] {
        assert!(now_or_never(auth.verify_token(token)).is_ok(), "{name}");
        // first sight of a token: the whole check
        g.bench_function(format!("{name}_first_use"), |b| {
            b.iter(|| now_or_never(auth.verify_uncached_identity(black_box(token))))
        });
        // the same token again: answered by the verified-token cache
        g.bench_function(format!("{name}_again"), |b| {
            b.iter(|| now_or_never(auth.verify_token(black_box(token))))
        });
    }
    g.finish();
}

fn websocket(c: &mut Criterion) {
    use m2m_auth_proxy::websocket::frame::{encode_frame, Opcode};
    use m2m_auth_proxy::websocket::gate::Gate;
    use m2m_auth_proxy::websocket::primitive::Encoding;

    let mut g = c.benchmark_group("websocket");
    let policy = Arc::new(ArcSwap::from_pointee(
        OriginatorPolicy::from_config(&OriginatorConfig::default()).unwrap(),
    ));
    let json = |fr: &str, pc: &str| {
        format!(r#"{{"op":2,"to":"/id-in/cse-in/Cae-sensor1/temperature/la","fr":"{fr}","rqi":"bench-0001","rvi":"3","pc":{pc}}}"#).into_bytes()
    };
    let cbor_spoofed: Vec<u8> = {
        // {"op": 2, "to": "/id-in/cse-in", "fr": "CAdmin", "rqi": "bench-0001"}
        let mut m = vec![0xa4, 0x62, b'o', b'p', 0x02, 0x62, b't', b'o', 0x6d];
        m.extend_from_slice(b"/id-in/cse-in");
        m.extend_from_slice(&[0x62, b'f', b'r', 0x66]);
        m.extend_from_slice(b"CAdmin");
        m.extend_from_slice(&[0x63, b'r', b'q', b'i', 0x6a]);
        m.extend_from_slice(b"bench-0001");
        m
    };
    let big_pc = format!(r#"{{"m2m:cin":{{"con":"{}"}}}}"#, "x".repeat(4000));
    let cases: [(&str, Encoding, Opcode, Vec<u8>); 4] = [
        (
            "json_own_fr",
            Encoding::Json,
            Opcode::Text,
            json("Cae-sensor1", "{}"),
        ),
        (
            "json_spoofed_fr",
            Encoding::Json,
            Opcode::Text,
            json("CAdmin", "{}"),
        ),
        (
            "cbor_spoofed_fr",
            Encoding::Cbor,
            Opcode::Binary,
            cbor_spoofed,
        ),
        (
            "json_4k_spoofed_fr",
            Encoding::Json,
            Opcode::Text,
            json("CAdmin", &big_pc),
        ),
    ];
    for (name, encoding, opcode, payload) in cases {
        let frame = encode_frame(opcode, &payload, Some([0x12, 0x34, 0x56, 0x78]));
        let mut gate = Gate::new(
            encoding,
            Arc::new(identity("Cae-sensor1")),
            policy.clone(),
            Arc::new(ArcSwap::from_pointee(
                m2m_auth_proxy::rules::RuleSet::compile(&Default::default()).unwrap(),
            )),
            None,
            Arc::new(m2m_auth_proxy::steering::Listeners::default()),
            1 << 20,
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                let out = gate.on_client_data(black_box(&frame));
                assert!(!out.to_upstream.is_empty());
                out
            })
        });
    }
    g.finish();
}

/// 100 rules in a realistic mix, interleaved (rule i is of kind i % 10).
fn rule_set_100() -> RuleSet {
    use m2m_auth_proxy::config::{
        AuthorizationConfig, Effect, Operation, ResourceType, RuleConfig,
    };
    let rule = |i: usize, effect: Effect| RuleConfig {
        name: format!("rule-{i}"),
        identities: None,
        patterns: None,
        roles: None,
        unless_roles: None,
        methods: None,
        originators: None,
        operations: None,
        resource_types: None,
        targets: None,
        effect,
    };
    let rules = (0..100)
        .map(|i| match i % 10 {
            0..=2 => RuleConfig {
                originators: Some(vec![format!("^Cgw{i}-[a-z0-9]+$")]),
                unless_roles: Some(vec!["sysop".into()]),
                ..rule(i, Effect::Deny)
            },
            3..=5 => RuleConfig {
                targets: Some(vec![
                    format!("/cse-in/site{i}/**"),
                    format!("/~/id-in/cse-in/site{i}/*"),
                ]),
                ..rule(i, Effect::Deny)
            },
            6 => RuleConfig {
                identities: Some(vec![format!("svc-{i}"), format!("svc-{i}-backup")]),
                ..rule(i, Effect::Allow)
            },
            7 => RuleConfig {
                roles: Some(vec![format!("role-{i}"), "auditor".into()]),
                ..rule(i, Effect::Allow)
            },
            _ => RuleConfig {
                operations: Some(vec![Operation::Create]),
                resource_types: Some(vec![ResourceType(16), ResourceType(100 + i as u32)]),
                ..rule(i, Effect::Deny)
            },
        })
        .collect();
    let cse = m2m_auth_proxy::cse::LocalCse::from_config(&m2m_auth_proxy::config::CseConfig {
        id: "/id-in".into(),
        name: "cse-in".into(),
        sp_id: None,
        ..Default::default()
    })
    .unwrap();
    RuleSet::compile_for(
        &AuthorizationConfig {
            default: Effect::Allow,
            rules,
        },
        Some(&cse),
    )
    .unwrap()
}

fn rules_group(c: &mut Criterion) {
    use m2m_auth_proxy::config::Operation;
    let mut g = c.benchmark_group("rules");
    let set = rule_set_100();
    let mut me = identity("Cae-sensor1");
    me.roles = vec!["viewer".into()];
    let path = "/cse-in/Cae-sensor1/temperature/la";
    let target = set.http_target(path).unwrap();
    let request = |originator| rules::Request {
        identity: Some(&me),
        originator: Some(originator),
        operation: Some(Operation::Retrieve),
        resource_type: None,
        content: m2m_auth_proxy::parts::Known::Is(None),
        target: &target,
    };
    let none = request("Cae-sensor1");
    let fiftieth = request("Cgw50-abc");
    assert_eq!(set.decide(&none).rule, None);
    assert_eq!(set.decide(&fiftieth).rule, Some(50));
    g.bench_function("decide_100_no_match", |b| {
        b.iter(|| set.decide(black_box(&none)))
    });
    g.bench_function("decide_100_rule_50", |b| {
        b.iter(|| set.decide(black_box(&fiftieth)))
    });
    g.bench_function("parse_target", |b| {
        b.iter(|| rules::parse_target(black_box(path)).unwrap())
    });
    let encoded = "/~/id-in/cse-in/Cae-sensor1/temp%20room/la?rcn=1";
    g.bench_function("parse_target_sp_encoded", |b| {
        b.iter(|| rules::parse_target(black_box(encoded)).unwrap())
    });
    // the targets the rules judge: parsed, made canonical, query read for rcn/fu
    g.bench_function("http_target_sp_encoded", |b| {
        b.iter(|| set.http_target(black_box(encoded)).unwrap())
    });
    let to = "/id-in/cse-in/Cae-sensor1/temperature/la";
    g.bench_function("primitive_target", |b| {
        b.iter(|| rules::primitive_target(black_box(to)).unwrap())
    });
    g.bench_function("primitive_target_canonical", |b| {
        b.iter(|| {
            set.primitive_target(black_box(to), &rules::Params::default())
                .unwrap()
        })
    });
    g.bench_function("http_operation_create", |b| {
        b.iter(|| {
            rules::http_operation(black_box("POST"), black_box(Some("application/json;ty=4")))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = parse, mtls, policy, headers, authenticate, basic, scaling, tokens_file, metrics_update, jwt, websocket, rules_group
}
criterion_main!(benches);
