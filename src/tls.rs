//! TLS termination: server certificate, client-certificate verification, and the identity of
//! the client certificate captured once per connection.
//!
//! The certificate, key and client CA store are installed per handshake from an `ArcSwap`
//! snapshot, so a reload can replace them without rebuilding the listener.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509Name, X509VerifyResult, X509};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;

use crate::auth::mtls::{CertIdentity, MtlsAuthenticator};
use crate::config::{ClientCertMode, TlsConfig, TlsVersion};

/// TLS 1.2 suites: ECDHE with AEAD only. TLS 1.3 suites are OpenSSL's defaults (all AEAD).
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// Resumption needs a session id context whenever clients are verified, or every resumption
/// fails ("session id context uninitialized").
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

/// The server's certificate chain and key.
pub struct ServerCert {
    pub leaf: X509,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// Trusted issuers of client certificates.
pub struct ClientCa {
    pub store: X509Store,
    pub certs: Vec<X509>,
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

impl ServerCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let pem = read(cert_path)?;
        let mut certs = X509::stack_from_pem(&pem)
            .map_err(|e| pem_error(cert_path, "PEM certificates", e))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| pem_error(cert_path, "PEM certificates", "no certificate found"))?;
        let key_pem = read(key_path)?;
        let key = PKey::private_key_from_pem(&key_pem)
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
}

impl ClientCa {
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let pem = read(path)?;
        let certs =
            X509::stack_from_pem(&pem).map_err(|e| pem_error(path, "PEM CA certificates", e))?;
        if certs.is_empty() {
            return Err(pem_error(
                path,
                "PEM CA certificates",
                "no certificate found",
            ));
        }
        let mut builder = X509StoreBuilder::new().map_err(|e| TlsError::Setup(e.to_string()))?;
        for cert in &certs {
            builder
                .add_cert(cert.clone())
                .map_err(|e| pem_error(path, "distinct CA certificates", e))?;
        }
        Ok(ClientCa {
            store: builder.build(),
            certs,
        })
    }
}

/// Everything a handshake needs, replaced whole by a reload.
pub struct TlsMaterial {
    pub server: ServerCert,
    pub client_ca: Option<ClientCa>,
}

impl TlsMaterial {
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let server = ServerCert::load(&config.cert, &config.key)?;
        let client_ca = match (&config.client_ca, config.client_cert_mode()) {
            (Some(path), mode) if mode != ClientCertMode::Off => Some(ClientCa::load(path)?),
            _ => None,
        };
        Ok(TlsMaterial { server, client_ca })
    }
}

/// Pingora's TLS hooks: install the current material on each handshake, and capture the
/// client certificate's identity once it is verified.
pub struct TlsHandler {
    material: Arc<ArcSwap<TlsMaterial>>,
    mtls: Option<Arc<MtlsAuthenticator>>,
}

impl TlsHandler {
    pub fn new(material: Arc<ArcSwap<TlsMaterial>>, mtls: Option<Arc<MtlsAuthenticator>>) -> Self {
        TlsHandler { material, mtls }
    }
}

#[async_trait]
impl TlsAccept for TlsHandler {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let material = self.material.load();
        let installed = ext::ssl_use_certificate(ssl, &material.server.leaf)
            .and_then(|_| ext::ssl_use_private_key(ssl, &material.server.key))
            .and_then(|_| {
                material
                    .server
                    .chain
                    .iter()
                    .try_for_each(|c| ext::ssl_add_chain_cert(ssl, c))
            })
            .and_then(|_| match &material.client_ca {
                Some(ca) => ext::ssl_set_verify_cert_store(ssl, &ca.store),
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
        let mtls = self.mtls.as_ref()?;
        let cert = ssl.peer_certificate()?;
        // OpenSSL already refused the handshake if verification failed; checked again so that
        // an unverified certificate can never name anyone.
        let identity = if ssl.verify_result() == X509VerifyResult::OK {
            mtls.identify(&cert)
        } else {
            CertIdentity {
                result: Err("client certificate not verified"),
            }
        };
        Some(Arc::new(identity))
    }
}

/// Listener TLS settings: TLS 1.2+ (or 1.3 only), AEAD suites, client verification per mode,
/// no session resumption (a resumed session would skip certificate re-verification).
pub fn listener_settings(
    config: &TlsConfig,
    material: Arc<ArcSwap<TlsMaterial>>,
    mtls: Option<Arc<MtlsAuthenticator>>,
) -> Result<TlsSettings, TlsError> {
    let setup = |e: openssl::error::ErrorStack| TlsError::Setup(e.to_string());
    let current = material.load_full();
    let mut settings = TlsSettings::with_callbacks(Box::new(TlsHandler::new(material, mtls)))
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
    settings
        .set_session_id_context(SESSION_ID_CONTEXT)
        .map_err(setup)?;
    settings.set_session_cache_mode(SslSessionCacheMode::OFF);
    settings.set_options(SslOptions::NO_TICKET);
    settings.set_num_tickets(0).map_err(setup)?;
    let verify = match config.client_cert_mode() {
        ClientCertMode::Off => SslVerifyMode::NONE,
        ClientCertMode::Optional => SslVerifyMode::PEER,
        ClientCertMode::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
    };
    settings.set_verify(verify);
    if let Some(ca) = &current.client_ca {
        // Tell clients which issuers are accepted, so they pick the right certificate.
        let mut names = openssl::stack::Stack::<X509Name>::new().map_err(setup)?;
        for cert in &ca.certs {
            names
                .push(cert.subject_name().to_owned().map_err(setup)?)
                .map_err(setup)?;
        }
        settings.set_client_ca_list(names);
    }
    Ok(settings)
}
