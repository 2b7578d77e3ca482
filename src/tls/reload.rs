//! The TLS files as [`Reloadable`]s: the server certificate with its key (one unit: they must
//! match), the client CA bundle, and the CRLs. The first load at start-up is the same code.

use std::path::PathBuf;
use std::sync::Arc;

use super::material::{parse_ca_bundle, parse_crls, subject_label, ServerCert};
use super::state::TlsState;
use super::trust::ClientTrust;
use crate::config::TlsConfig;
use crate::example_credentials;
use crate::reload::{FileKind, Reloadable};

/// Every TLS file of `config` that `state` uses, each reloaded on its own.
pub fn reloadables(config: &TlsConfig, state: &Arc<TlsState>) -> Vec<Box<dyn Reloadable>> {
    let mut items: Vec<Box<dyn Reloadable>> = vec![Box::new(ServerCertReload {
        state: state.clone(),
        cert: config.cert.to_path_buf(),
        key: config.key.to_path_buf(),
    })];
    if let Some(trust) = &state.trust {
        let parts = [
            (TrustPart::Ca, config.client_ca.as_ref()),
            (TrustPart::Crl, config.crl.as_ref()),
        ];
        for (part, path) in parts {
            if let Some(path) = path {
                items.push(Box::new(TrustReload {
                    trust: trust.clone(),
                    part,
                    path: path.to_path_buf(),
                }));
            }
        }
    }
    items
}

struct ServerCertReload {
    state: Arc<TlsState>,
    cert: PathBuf,
    key: PathBuf,
}

impl Reloadable for ServerCertReload {
    fn kind(&self) -> FileKind {
        FileKind::ServerCert
    }
    fn key(&self) -> &'static str {
        "tls.cert"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let server = ServerCert::parse(&self.cert, &contents[0], &self.key, &contents[1])
            .map_err(|e| e.to_string())?;
        example_credentials::check_certs(
            &self.cert,
            [&*server.leaf],
            "a certificate for this host from your own CA",
        )?;
        let summary = format!(
            "subject {}, valid until {}",
            subject_label(&server.leaf),
            server.leaf.not_after()
        );
        server.publish_expiry();
        self.state.server.store(Some(Arc::new(server)));
        Ok(summary)
    }
}

#[derive(Clone, Copy)]
enum TrustPart {
    Ca,
    Crl,
}

/// The CA bundle or the CRLs: either replaces the verification store and bumps the trust
/// generation.
struct TrustReload {
    trust: Arc<ClientTrust>,
    part: TrustPart,
    path: PathBuf,
}

impl Reloadable for TrustReload {
    fn kind(&self) -> FileKind {
        match self.part {
            TrustPart::Ca => FileKind::ClientCa,
            TrustPart::Crl => FileKind::Crl,
        }
    }
    fn key(&self) -> &'static str {
        match self.part {
            TrustPart::Ca => "tls.client_ca",
            TrustPart::Crl => "tls.crl",
        }
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let summary = match self.part {
            TrustPart::Ca => {
                let ca = parse_ca_bundle(&self.path, &contents[0]).map_err(|e| e.to_string())?;
                example_credentials::check_certs(
                    &self.path,
                    ca.iter().map(|c| &**c),
                    "your own CA, which alone can issue client certificates",
                )?;
                let count = ca.len();
                self.trust.replace_ca(ca).map_err(|e| e.to_string())?;
                format!("{count} CA certificate(s)")
            }
            TrustPart::Crl => {
                let crls = parse_crls(&self.path, &contents[0]).map_err(|e| e.to_string())?;
                let revoked: usize = crls
                    .iter()
                    .map(|c| c.get_revoked().map(|r| r.len()).unwrap_or(0))
                    .sum();
                let count = crls.len();
                self.trust.replace_crls(crls).map_err(|e| e.to_string())?;
                format!("{count} CRL(s), {revoked} revoked certificate(s)")
            }
        };
        Ok(format!(
            "{summary}, trust generation {}",
            self.trust.generation()
        ))
    }
}
