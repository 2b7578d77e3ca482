//! What the handshake established about a connection's client certificate, kept for the
//! connection's life and read by every request on it.

use std::sync::{Arc, Mutex};

use openssl::x509::X509;

use crate::identity::Identity;
use crate::tls::trust::ClientTrust;

/// What the handshake established about the client certificate, kept for the connection's life.
pub struct CertIdentity {
    pub result: Result<Arc<Identity>, &'static str>,
    pub(super) cert: X509,
    pub(super) intermediates: Vec<X509>,
    /// Trust generation the certificate was verified under.
    pub(super) generation: u64,
    /// The certificate's notAfter (Unix time), read once at the handshake.
    pub(super) not_after: f64,
    /// Re-verification after a trust change: (generation, still trusted).
    pub(super) recheck: Mutex<Option<(u64, bool)>>,
}

impl CertIdentity {
    /// Whether the certificate's notAfter has passed at `unix_now`: a keep-alive connection
    /// (or a resumed session) must not outlive its certificate.
    pub fn expired(&self, unix_now: f64) -> bool {
        unix_now > self.not_after
    }

    /// Whether the certificate is still trusted. Only when the CA bundle or CRL changed since
    /// the handshake is it verified again (once per connection and trust generation), so that a
    /// keep-alive connection cannot outlive its revocation.
    pub fn still_trusted(&self, trust: &ClientTrust) -> bool {
        let current = trust.generation();
        if current == self.generation {
            return true;
        }
        let mut memo = self.recheck.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((generation, trusted)) = *memo {
            if generation == current {
                return trusted;
            }
        }
        let trusted = trust.verify(&self.cert, &self.intermediates);
        *memo = Some((current, trusted));
        trusted
    }
}
