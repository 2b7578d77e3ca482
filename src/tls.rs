//! TLS termination: server certificate, client-certificate verification, and the identity of
//! the client certificate captured once per connection.
//!
//! The server certificate and the client trust store are installed per handshake from `ArcSwap`
//! snapshots, so a reload replaces them for every new handshake without touching the listener.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Crl, X509Name, X509Ref, X509StoreContext, X509VerifyResult, X509};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;

use crate::auth::mtls::{CertIdentity, MtlsAuthenticator};
use crate::config::{ClientCertMode, TlsConfig, TlsVersion};
use crate::metrics;
use crate::reload::Reloadable;
use crate::session_tickets;

/// TLS 1.2 suites: ECDHE with AEAD only. TLS 1.3 suites are OpenSSL's defaults (all AEAD).
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// Needed whenever clients are verified, or every resumption fails ("session id context
/// uninitialized").
const SESSION_ID_CONTEXT: &[u8] = b"m2m-auth-proxy";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: expected {expected}: {detail}")]
    Pem {
        file: PathBuf,
        expected: &'static str,
        detail: String,
    },
    #[error("{key}: private key does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS setup: {0}")]
    Setup(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file: path.to_path_buf(),
        source,
    })
}

fn pem_error(file: &Path, expected: &'static str, detail: impl ToString) -> TlsError {
    TlsError::Pem {
        file: file.to_path_buf(),
        expected,
        detail: detail.to_string(),
    }
}

fn setup(e: openssl::error::ErrorStack) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// Subject CN (or the whole subject) for logs and the expiry metric.
pub fn subject_label(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| {
            std::str::from_utf8(e.data().as_slice())
                .ok()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{:?}", cert.subject_name()))
}

/// notAfter as a Unix timestamp.
pub fn not_after_unix(cert: &X509Ref) -> f64 {
    Asn1Time::from_unix(0)
        .ok()
        .and_then(|epoch| epoch.diff(cert.not_after()).ok())
        .map(|d| d.days as f64 * 86_400.0 + d.secs as f64)
        .unwrap_or(0.0)
}

/// The server's certificate chain and key.
pub struct ServerCert {
    pub leaf: X509,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

impl ServerCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        Self::parse(cert_path, &read(cert_path)?, key_path, &read(key_path)?)
    }

    pub fn parse(
        cert_path: &Path,
        cert_pem: &[u8],
        key_path: &Path,
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let mut certs = X509::stack_from_pem(cert_pem)
            .map_err(|e| pem_error(cert_path, "PEM certificates", e))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| pem_error(cert_path, "PEM certificates", "no certificate found"))?;
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| pem_error(key_path, "a PEM private key", e))?;
        let public = leaf
            .public_key()
            .map_err(|e| pem_error(cert_path, "a certificate with a public key", e))?;
        if !public.public_eq(&key) {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        Ok(ServerCert {
            leaf,
            chain: certs.collect(),
            key,
        })
    }

    fn publish_expiry(&self) {
        metrics::certificates(
            "server",
            &[(subject_label(&self.leaf), not_after_unix(&self.leaf))],
        );
    }
}

/// CA certificates trusted to sign client certificates.
pub fn parse_ca_bundle(path: &Path, pem: &[u8]) -> Result<Vec<X509>, TlsError> {
    let certs = X509::stack_from_pem(pem).map_err(|e| pem_error(path, "PEM CA certificates", e))?;
    if certs.is_empty() {
        return Err(pem_error(
            path,
            "PEM CA certificates",
            "no certificate found",
        ));
    }
    Ok(certs)
}

/// Certificate revocation lists, one or more PEM blocks.
pub fn parse_crls(path: &Path, pem: &[u8]) -> Result<Vec<X509Crl>, TlsError> {
    let text = std::str::from_utf8(pem).map_err(|_| pem_error(path, "PEM CRLs", "not text"))?;
    const END: &str = "-----END X509 CRL-----";
    let crls = text
        .split_inclusive(END)
        .filter(|block| block.contains("-----BEGIN X509 CRL-----"))
        .map(|block| {
            X509Crl::from_pem(block.as_bytes()).map_err(|e| pem_error(path, "PEM CRLs", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if crls.is_empty() {
        return Err(pem_error(path, "PEM CRLs", "no CRL found"));
    }
    Ok(crls)
}

/// Client-certificate trust: CA bundle, optional CRLs, and the verification store built from
/// both. Every change bumps `generation`, so connections admitted under an older one are
/// re-verified on their next request.
pub struct ClientTrust {
    ca: ArcSwap<Vec<X509>>,
    crls: ArcSwapOption<Vec<X509Crl>>,
    store: ArcSwap<X509Store>,
    generation: AtomicU64,
}

impl ClientTrust {
    pub fn new(ca: Vec<X509>, crls: Option<Vec<X509Crl>>) -> Result<Self, TlsError> {
        let store = build_store(&ca, crls.as_deref())?;
        let trust = ClientTrust {
            ca: ArcSwap::from_pointee(ca),
            crls: ArcSwapOption::from(crls.map(Arc::new)),
            store: ArcSwap::from_pointee(store),
            generation: AtomicU64::new(1),
        };
        trust.publish_expiry();
        Ok(trust)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn ca_count(&self) -> usize {
        self.ca.load().len()
    }

    pub fn replace_ca(&self, ca: Vec<X509>) -> Result<(), TlsError> {
        let store = build_store(&ca, self.crls.load().as_deref().map(|v| v.as_slice()))?;
        self.ca.store(Arc::new(ca));
        self.install(store);
        self.publish_expiry();
        Ok(())
    }

    pub fn replace_crls(&self, crls: Vec<X509Crl>) -> Result<(), TlsError> {
        let store = build_store(&self.ca.load(), Some(&crls))?;
        self.crls.store(Some(Arc::new(crls)));
        self.install(store);
        Ok(())
    }

    fn install(&self, store: X509Store) {
        self.store.store(Arc::new(store));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Verify a certificate (and the intermediates the client sent) against the current store.
    pub fn verify(&self, cert: &X509Ref, intermediates: &[X509]) -> bool {
        let store = self.store.load();
        let check = || -> Result<bool, openssl::error::ErrorStack> {
            let mut chain = Stack::new()?;
            for c in intermediates {
                chain.push(c.clone())?;
            }
            let mut ctx = X509StoreContext::new()?;
            ctx.init(&store, cert, &chain, |c| c.verify_cert())
                .map(|ok| ok && !is_ca(cert))
        };
        check().unwrap_or(false)
    }

    fn publish_expiry(&self) {
        let ca = self.ca.load();
        let series: Vec<_> = ca
            .iter()
            .map(|c| (subject_label(c), not_after_unix(c)))
            .collect();
        metrics::certificates("client_ca", &series);
    }
}

extern "C" {
    // Part of libcrypto's public API, not declared by openssl-sys 0.9.
    fn X509_STORE_add_crl(
        store: *mut openssl_sys::X509_STORE,
        crl: *mut openssl_sys::X509_CRL,
    ) -> std::ffi::c_int;
}

fn build_store(ca: &[X509], crls: Option<&[X509Crl]>) -> Result<X509Store, TlsError> {
    let mut builder = X509StoreBuilder::new().map_err(setup)?;
    for cert in ca {
        builder.add_cert(cert.clone()).map_err(setup)?;
    }
    if let Some(crls) = crls {
        for crl in crls {
            // SAFETY: both pointers are valid for the call; X509_STORE_add_crl takes its own
            // reference to the CRL, so `crl` may be dropped afterwards.
            let added = unsafe { X509_STORE_add_crl(builder.as_ptr(), crl.as_ptr()) };
            if added != 1 {
                return Err(TlsError::Setup(
                    "cannot add a CRL to the trust store".into(),
                ));
            }
        }
        builder
            .set_flags(X509VerifyFlags::CRL_CHECK)
            .map_err(setup)?;
    }
    Ok(builder.build())
}

/// Everything a handshake needs, each part replaceable on its own.
pub struct TlsState {
    pub server: ArcSwap<ServerCert>,
    pub trust: Option<ClientTrust>,
}

impl TlsState {
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let server = ServerCert::load(&config.cert, &config.key)?;
        server.publish_expiry();
        metrics::loaded("server_cert");
        let trust = match (&config.client_ca, config.client_cert_mode()) {
            (Some(ca_path), mode) if mode != ClientCertMode::Off => {
                let ca = parse_ca_bundle(ca_path, &read(ca_path)?)?;
                metrics::loaded("client_ca");
                let crls = match &config.crl {
                    Some(crl_path) => {
                        let crls = parse_crls(crl_path, &read(crl_path)?)?;
                        metrics::loaded("crl");
                        Some(crls)
                    }
                    None => None,
                };
                Some(ClientTrust::new(ca, crls)?)
            }
            _ => None,
        };
        Ok(TlsState {
            server: ArcSwap::from_pointee(server),
            trust,
        })
    }
}

/// What the handshake leaves on a connection: its open-connection count, and the client
/// certificate's identity when one was presented.
pub struct ConnectionInfo {
    pub client_cert: Option<CertIdentity>,
    _open: metrics::ConnectionGuard,
}

/// Pingora's TLS hooks: install the current material on each handshake, and capture the
/// client certificate's identity once it is verified.
pub struct TlsHandler {
    state: Arc<TlsState>,
    mtls: Option<Arc<MtlsAuthenticator>>,
}

#[async_trait]
impl TlsAccept for TlsHandler {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let server = self.state.server.load();
        let installed = ext::ssl_use_certificate(ssl, &server.leaf)
            .and_then(|_| ext::ssl_use_private_key(ssl, &server.key))
            .and_then(|_| {
                server
                    .chain
                    .iter()
                    .try_for_each(|c| ext::ssl_add_chain_cert(ssl, c))
            })
            .and_then(|_| match &self.state.trust {
                Some(trust) => {
                    session_tickets::record_generation(ssl, trust.generation());
                    ext::ssl_set_verify_cert_store(ssl, &trust.store.load())
                }
                None => Ok(()),
            });
        // The hook cannot fail the handshake itself; without a certificate it fails anyway.
        if let Err(e) = installed {
            log::error!("TLS: cannot install the server certificate for a handshake: {e}");
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let peer = ssl.peer_certificate();
        metrics::handshake(peer.is_some());
        let client_cert = match (peer, &self.mtls, &self.state.trust) {
            (Some(cert), Some(mtls), Some(_)) => {
                let intermediates: Vec<X509> = ssl
                    .peer_cert_chain()
                    .map(|chain| chain.iter().skip(1).map(|c| c.to_owned()).collect())
                    .unwrap_or_default();
                // OpenSSL already refused the handshake if verification failed; checked again
                // so that an unverified certificate can never name anyone.
                let verified = ssl.verify_result() == X509VerifyResult::OK;
                // The generation the certificate was verified under (in this handshake, or in
                // the one whose ticket was resumed); unknown -> 0, which makes the first
                // request re-verify it against the current CA bundle and CRL.
                let generation = session_tickets::verified_generation(ssl).unwrap_or(0);
                Some(mtls.identify(cert, intermediates, generation, verified))
            }
            _ => None,
        };
        Some(Arc::new(ConnectionInfo {
            client_cert,
            _open: metrics::ConnectionGuard::open(),
        }))
    }
}

/// Whether a certificate is a CA (basicConstraints CA:TRUE).
pub fn is_ca(cert: &X509Ref) -> bool {
    // SAFETY: a valid certificate pointer for the call; the function only reads cached flags.
    let flags = unsafe { openssl_sys::X509_get_extension_flags(cert.as_ptr()) };
    flags & openssl_sys::EXFLAG_CA != 0
}

/// OpenSSL's verdict on a client certificate, plus one rule of ours: a CA certificate is never
/// accepted as a client's own certificate. Refusals are counted by reason.
fn verify_client_certificate(
    preverify_ok: bool,
    ctx: &mut openssl::x509::X509StoreContextRef,
) -> bool {
    if preverify_ok && ctx.error_depth() == 0 && ctx.current_cert().is_some_and(is_ca) {
        ctx.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
        metrics::handshake_failure("ca_as_leaf");
        return false;
    }
    if !preverify_ok {
        use openssl_sys as e;
        let reason = match ctx.error().as_raw() {
            e::X509_V_ERR_CERT_HAS_EXPIRED => "expired",
            e::X509_V_ERR_CERT_NOT_YET_VALID => "not_yet_valid",
            e::X509_V_ERR_CERT_REVOKED => "revoked",
            e::X509_V_ERR_INVALID_PURPOSE => "bad_purpose",
            e::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            | e::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            | e::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN => "unknown_ca",
            e::X509_V_ERR_CERT_SIGNATURE_FAILURE => "bad_signature",
            e::X509_V_ERR_CRL_HAS_EXPIRED => "crl_expired",
            e::X509_V_ERR_UNABLE_TO_GET_CRL => "crl_missing",
            _ => "other",
        };
        metrics::handshake_failure(reason);
    }
    preverify_ok
}

/// Whether OpenSSL knows every group of `groups` (checked at load, so `check` reports it).
pub fn check_groups(groups: &str) -> Result<(), String> {
    let mut ctx = openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::tls())
        .map_err(|e| e.to_string())?;
    ctx.set_groups_list(groups).map_err(|_| {
        format!("expected groups OpenSSL knows, separated by ':' (e.g. \"X25519:P-256\"), got {groups:?}")
    })
}

/// Listener TLS settings: TLS 1.2+ (or 1.3 only), AEAD suites, client verification per mode.
/// Session resumption only with `tls.session_tickets`; a resumed connection re-verifies its
/// client certificate on its first request, since resumption skips verification.
pub fn listener_settings(
    config: &TlsConfig,
    state: Arc<TlsState>,
    mtls: Option<Arc<MtlsAuthenticator>>,
) -> Result<TlsSettings, TlsError> {
    let ca_names = state.trust.as_ref().map(|t| t.ca.load_full());
    let ticket_state = state.clone();
    let mut settings = TlsSettings::with_callbacks(Box::new(TlsHandler { state, mtls }))
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let min = match config.min_version {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    };
    settings.set_min_proto_version(Some(min)).map_err(setup)?;
    settings
        .set_max_proto_version(Some(SslVersion::TLS1_3))
        .map_err(setup)?;
    settings.set_cipher_list(TLS12_CIPHERS).map_err(setup)?;
    // Memory per idle connection: free OpenSSL's record buffers between reads, and let it read
    // ahead since the listener has no L4 read buffer of its own.
    settings.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
    settings.set_read_ahead(true);
    settings
        .set_session_id_context(SESSION_ID_CONTEXT)
        .map_err(setup)?;
    // No server-side session cache; resumption only through tickets, and only when enabled.
    settings.set_session_cache_mode(SslSessionCacheMode::OFF);
    if let Some(groups) = &config.groups {
        settings.set_groups_list(groups).map_err(setup)?;
    }
    if config.session_tickets {
        session_tickets::install(&mut settings, ticket_state).map_err(setup)?;
    } else {
        settings.set_options(SslOptions::NO_TICKET);
        settings.set_num_tickets(0).map_err(setup)?;
    }
    let verify = match config.client_cert_mode() {
        ClientCertMode::Off => SslVerifyMode::NONE,
        ClientCertMode::Optional => SslVerifyMode::PEER,
        ClientCertMode::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
    };
    settings.set_verify_callback(verify, verify_client_certificate);
    if let Some(ca) = ca_names {
        // Tell clients which issuers are accepted, so they pick the right certificate.
        let mut names = Stack::<X509Name>::new().map_err(setup)?;
        for cert in ca.iter() {
            names
                .push(cert.subject_name().to_owned().map_err(setup)?)
                .map_err(setup)?;
        }
        settings.set_client_ca_list(names);
    }
    Ok(settings)
}

/// Reload of the server certificate and key (one unit: they must match).
pub struct ServerCertReload {
    pub state: Arc<TlsState>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Reloadable for ServerCertReload {
    fn kind(&self) -> &'static str {
        "server_cert"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let server = ServerCert::parse(&self.cert, &contents[0], &self.key, &contents[1])
            .map_err(|e| e.to_string())?;
        let summary = format!(
            "subject {}, valid until {}",
            subject_label(&server.leaf),
            server.leaf.not_after()
        );
        server.publish_expiry();
        self.state.server.store(Arc::new(server));
        Ok(summary)
    }
}

/// Reload of the client CA bundle.
pub struct ClientCaReload {
    pub state: Arc<TlsState>,
    pub path: PathBuf,
}

impl Reloadable for ClientCaReload {
    fn kind(&self) -> &'static str {
        "client_ca"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let trust = self
            .state
            .trust
            .as_ref()
            .ok_or("client certificates are off")?;
        let ca = parse_ca_bundle(&self.path, &contents[0]).map_err(|e| e.to_string())?;
        let count = ca.len();
        trust.replace_ca(ca).map_err(|e| e.to_string())?;
        Ok(format!(
            "{count} CA certificate(s), trust generation {}",
            trust.generation()
        ))
    }
}

/// Reload of the client-certificate CRLs.
pub struct CrlReload {
    pub state: Arc<TlsState>,
    pub path: PathBuf,
}

impl Reloadable for CrlReload {
    fn kind(&self) -> &'static str {
        "crl"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let trust = self
            .state
            .trust
            .as_ref()
            .ok_or("client certificates are off")?;
        let crls = parse_crls(&self.path, &contents[0]).map_err(|e| e.to_string())?;
        let revoked: usize = crls
            .iter()
            .map(|c| c.get_revoked().map(|r| r.len()).unwrap_or(0))
            .sum();
        let count = crls.len();
        trust.replace_crls(crls).map_err(|e| e.to_string())?;
        Ok(format!(
            "{count} CRL(s), {revoked} revoked certificate(s), trust generation {}",
            trust.generation()
        ))
    }
}
