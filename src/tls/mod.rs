//! TLS termination, one job per file: certificate material from PEM (`material`), the client
//! trust store (`trust`), the state every handshake reads (`state`), the listener settings and
//! handshake hooks (`handshake`), session tickets that carry the trust generation (`tickets`)
//! and the keys that encrypt them (`ticket_keys`),
//! the TLS files as reloadables (`reload`), the text of certificate names (`x509_text`), and
//! the policy for the TLS connections the proxy makes itself (`outbound`).
//!
//! The server certificate and the client trust store are installed per handshake from `ArcSwap`
//! snapshots, so a reload replaces them for every new handshake without touching the listener.

pub mod handshake;
pub mod material;
pub mod outbound;
pub mod reload;
pub mod state;
pub mod ticket_keys;
pub mod tickets;
pub mod trust;
pub mod x509_text;

pub use material::{ServerCert, TlsError};
pub use state::TlsState;
pub use trust::ClientTrust;
