//! Certificate material from PEM files: the server's certificate chain and key, CA bundles and
//! CRLs, with errors that name the file and what was expected in it.

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509Crl, X509Ref, X509};

use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
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

pub(crate) fn pem_error(file: &Path, expected: &'static str, detail: impl ToString) -> TlsError {
    TlsError::Pem {
        file: file.to_path_buf(),
        expected,
        detail: detail.to_string(),
    }
}

pub(crate) fn setup(e: openssl::error::ErrorStack) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// Subject CN (or the whole subject) for logs and the expiry metric.
pub fn subject_label(cert: &X509Ref) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| super::x509_text::decode(e.data()))
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

    pub fn publish_expiry(&self) {
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

/// Whether the certificate has `ip` among its IP-address SANs.
pub fn names_ip(cert: &X509Ref, ip: std::net::IpAddr) -> bool {
    let wanted: Vec<u8> = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    cert.subject_alt_names().is_some_and(|sans| {
        sans.iter()
            .any(|n| n.ipaddress() == Some(wanted.as_slice()))
    })
}
