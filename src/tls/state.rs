//! What every handshake reads: the server certificate and the client trust, each behind its own
//! snapshot so that a reload replaces one without touching the listener or the other.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::material::{ServerCert, TlsError};
use super::trust::ClientTrust;
use crate::config::{ClientCertMode, TlsConfig};

pub struct TlsState {
    /// `None` until the first load of `tls.cert`/`tls.key` (which must succeed before serving).
    pub server: ArcSwapOption<ServerCert>,
    /// Present when client certificates are asked for (`tls.client_cert` not `off`).
    pub trust: Option<Arc<ClientTrust>>,
}

impl TlsState {
    /// The empty state for `config`; the reloader's first load fills it.
    pub fn new(config: &TlsConfig) -> Result<Self, TlsError> {
        let trust = match config.client_cert_mode() {
            ClientCertMode::Off => None,
            _ => Some(Arc::new(ClientTrust::empty(config.crl_scope)?)),
        };
        Ok(TlsState {
            server: ArcSwapOption::empty(),
            trust,
        })
    }

    /// A state with its material given directly (benchmarks, tests).
    pub fn with(server: ServerCert, trust: Option<ClientTrust>) -> Self {
        TlsState {
            server: ArcSwapOption::from_pointee(server),
            trust: trust.map(Arc::new),
        }
    }

    pub fn server(&self) -> Option<Arc<ServerCert>> {
        self.server.load_full()
    }
}
