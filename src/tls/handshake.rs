//! The listener's TLS: protocol versions and suites, client verification per mode, and the
//! per-handshake hooks that install the current material and capture the client certificate's
//! identity once per connection.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use openssl::ssl::{SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::stack::Stack;
use openssl::x509::{X509Name, X509VerifyResult, X509};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;

use super::material::{setup, TlsError};
use super::outbound::TLS12_CIPHERS;
use super::state::TlsState;
use super::ticket_keys::{self, TicketKeys};
use super::tickets;
use super::trust::is_ca;
use crate::config::{ClientCertMode, TlsConfig, TlsVersion};
use crate::metrics;

/// Needed whenever clients are verified, or every resumption fails ("session id context
/// uninitialized").
const SESSION_ID_CONTEXT: &[u8] = b"m2m-auth-proxy";

/// A client certificate the handshake saw, and what OpenSSL said of it.
pub struct PeerCertificate {
    pub cert: X509,
    /// The chain the client sent after its own certificate.
    pub intermediates: Vec<X509>,
    /// Trust generation it was verified under (0: unknown, verify again before use).
    pub verified_generation: u64,
    /// OpenSSL verified it in this handshake or the one whose ticket was resumed.
    pub verified: bool,
}

/// What a listener makes of a client certificate, once per connection, at the end of the
/// handshake (the mTLS method implements it; TLS itself knows nothing of identities).
pub trait CertIdentify: Send + Sync + 'static {
    type Identity: Send + Sync + 'static;
    fn identify(&self, peer: PeerCertificate) -> Self::Identity;
}

/// What the handshake leaves on a connection: its open-connection count, and what
/// [`CertIdentify`] made of the client certificate when one was presented.
pub struct ConnectionInfo<T> {
    pub client_cert: Option<T>,
    _open: metrics::ConnectionGuard,
}

/// Pingora's TLS hooks: install the current material on each handshake, and capture the
/// client certificate's identity once it is verified.
struct TlsHandler<I> {
    state: Arc<TlsState>,
    identify: Option<Arc<I>>,
}

#[async_trait]
impl<I: CertIdentify> TlsAccept for TlsHandler<I> {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let Some(server) = self.state.server() else {
            // not reachable: serving starts only after the first load succeeded
            log::error!("TLS: no server certificate loaded");
            return;
        };
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
                    tickets::record_generation(ssl, trust.generation());
                    ext::ssl_set_verify_cert_store(ssl, &trust.store())
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
        let client_cert = match (peer, &self.identify, &self.state.trust) {
            (Some(cert), Some(identify), Some(_)) => {
                let intermediates: Vec<X509> = ssl
                    .peer_cert_chain()
                    .map(|chain| chain.iter().skip(1).map(|c| c.to_owned()).collect())
                    .unwrap_or_default();
                Some(identify.identify(PeerCertificate {
                    cert,
                    intermediates,
                    // The generation the certificate was verified under (in this handshake, or
                    // in the one whose ticket was resumed); unknown -> 0, which makes the first
                    // request re-verify it against the current CA bundle and CRL.
                    verified_generation: tickets::verified_generation(ssl).unwrap_or(0),
                    // OpenSSL already refused the handshake if verification failed; checked
                    // again so that an unverified certificate can never name anyone.
                    verified: ssl.verify_result() == X509VerifyResult::OK,
                }))
            }
            _ => None,
        };
        Some(Arc::new(ConnectionInfo {
            client_cert,
            _open: metrics::ConnectionGuard::open(),
        }))
    }
}

/// Why a client certificate was refused at the handshake: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    Expired,
    NotYetValid,
    Revoked,
    BadPurpose,
    UnknownCa,
    BadSignature,
    CaAsLeaf,
    CrlExpired,
    CrlMissing,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 10] = [
        HandshakeFailure::Expired,
        HandshakeFailure::NotYetValid,
        HandshakeFailure::Revoked,
        HandshakeFailure::BadPurpose,
        HandshakeFailure::UnknownCa,
        HandshakeFailure::BadSignature,
        HandshakeFailure::CaAsLeaf,
        HandshakeFailure::CrlExpired,
        HandshakeFailure::CrlMissing,
        HandshakeFailure::Other,
    ];

    fn of(error: X509VerifyResult) -> Self {
        use openssl_sys as e;
        match error.as_raw() {
            e::X509_V_ERR_CERT_HAS_EXPIRED => HandshakeFailure::Expired,
            e::X509_V_ERR_CERT_NOT_YET_VALID => HandshakeFailure::NotYetValid,
            e::X509_V_ERR_CERT_REVOKED => HandshakeFailure::Revoked,
            e::X509_V_ERR_INVALID_PURPOSE => HandshakeFailure::BadPurpose,
            e::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            | e::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            | e::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN => HandshakeFailure::UnknownCa,
            e::X509_V_ERR_CERT_SIGNATURE_FAILURE => HandshakeFailure::BadSignature,
            e::X509_V_ERR_CRL_HAS_EXPIRED => HandshakeFailure::CrlExpired,
            e::X509_V_ERR_UNABLE_TO_GET_CRL => HandshakeFailure::CrlMissing,
            _ => HandshakeFailure::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::NotYetValid => "not_yet_valid",
            HandshakeFailure::Revoked => "revoked",
            HandshakeFailure::BadPurpose => "bad_purpose",
            HandshakeFailure::UnknownCa => "unknown_ca",
            HandshakeFailure::BadSignature => "bad_signature",
            HandshakeFailure::CaAsLeaf => "ca_as_leaf",
            HandshakeFailure::CrlExpired => "crl_expired",
            HandshakeFailure::CrlMissing => "crl_missing",
            HandshakeFailure::Other => "other",
        }
    }
}

/// OpenSSL's verdict on a client certificate, plus one rule of ours: a CA certificate is never
/// accepted as a client's own certificate. Refusals are counted by reason.
fn verify_client_certificate(
    preverify_ok: bool,
    ctx: &mut openssl::x509::X509StoreContextRef,
) -> bool {
    if preverify_ok && ctx.error_depth() == 0 && ctx.current_cert().is_some_and(is_ca) {
        ctx.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
        metrics::handshake_failure(HandshakeFailure::CaAsLeaf.label());
        return false;
    }
    if !preverify_ok {
        metrics::handshake_failure(HandshakeFailure::of(ctx.error()).label());
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
pub fn listener_settings<I: CertIdentify>(
    config: &TlsConfig,
    state: Arc<TlsState>,
    identify: Option<Arc<I>>,
) -> Result<TlsSettings, TlsError> {
    let ca_names = state.trust.as_ref().map(|t| t.ca());
    let ticket_trust = state.trust.clone();
    let mut settings = TlsSettings::with_callbacks(Box::new(TlsHandler { state, identify }))
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
        let keys = TicketKeys::new(config.session_ticket_rotation, ticket_trust.clone());
        ticket_keys::install(&mut settings, keys).map_err(setup)?;
        tickets::install(&mut settings, ticket_trust).map_err(setup)?;
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
