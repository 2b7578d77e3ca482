//! `tls`: the listener's certificate, client-certificate verification and protocol settings.

use serde::Deserialize;

use std::time::Duration;

use super::value::{duration, FilePath, KeyError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: FilePath,
    pub key: FilePath,
    #[serde(default)]
    pub client_ca: Option<FilePath>,
    /// Default: `required` when `client_ca` is set, `off` otherwise.
    #[serde(default)]
    pub client_cert: Option<ClientCertMode>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// CRLs (PEM) for client certificates, checked at the handshake and reloaded at run time.
    #[serde(default)]
    pub crl: Option<FilePath>,
    /// Which certificates of a client's chain the CRLs are checked for: `chain` (every one:
    /// a CRL from every CA on the chain is needed) or `leaf` (the client's own only). Default:
    /// `chain` when `crl` has a CRL from every CA of `client_ca`, else `leaf` with a warning.
    #[serde(default)]
    pub crl_scope: Option<CrlScope>,
    /// Offer TLS session tickets (resumption). Off by default: every connection then does a
    /// full handshake with certificate verification.
    #[serde(default)]
    pub session_tickets: bool,
    /// How often the key that encrypts session tickets is replaced (the one before still
    /// decrypts for one more period); a CA or CRL change replaces it at once.
    #[serde(default = "default_ticket_rotation", with = "duration")]
    pub session_ticket_rotation: Duration,
    /// Key-exchange groups in OpenSSL's list syntax ("X25519:P-256"); default: OpenSSL's,
    /// which puts the post-quantum hybrid X25519MLKEM768 first. Checked by the listener's
    /// builder (OpenSSL knows which names exist).
    #[serde(default)]
    pub groups: Option<String>,
}

fn default_ticket_rotation() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    Off,
    Optional,
    Required,
}

impl ClientCertMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertMode::Off => "off",
            ClientCertMode::Optional => "optional",
            ClientCertMode::Required => "required",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlScope {
    Leaf,
    Chain,
}

impl CrlScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CrlScope::Leaf => "leaf",
            CrlScope::Chain => "chain",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

impl TlsConfig {
    pub fn client_cert_mode(&self) -> ClientCertMode {
        match (self.client_cert, &self.client_ca) {
            (Some(mode), _) => mode,
            (None, Some(_)) => ClientCertMode::Required,
            (None, None) => ClientCertMode::Off,
        }
    }

    pub fn validate(&self) -> Result<(), KeyError> {
        let mode = self.client_cert_mode();
        if mode != ClientCertMode::Off && self.client_ca.is_none() {
            return Err(KeyError::new(
                "tls.client_ca",
                format!(
                    "expected a CA bundle file: tls.client_cert is {}, which verifies client certificates",
                    mode.as_str()
                ),
            ));
        }
        if self.session_ticket_rotation.is_zero() {
            return Err(KeyError::new(
                "tls.session_ticket_rotation",
                "expected a duration > 0 (e.g. 1h)",
            ));
        }
        if self.crl_scope.is_some() && self.crl.is_none() {
            return Err(KeyError::new(
                "tls.crl_scope",
                "says which certificates the CRLs of tls.crl cover: set tls.crl, or remove it",
            ));
        }
        Ok(())
    }
}
