//! The one identity model every authentication method produces. Code below the auth layer
//! (originator policy, header rewrite, logging) sees only this, never the method's details.

use crate::originator_syntax::OriginatorPattern;

/// An authentication method: how an identity was proven. Used for labels and routing of
/// credentials, never for decisions below the auth layer.
///
/// Its values are the list of methods in `auth/mod.rs` (`Method::ALL`, `Method::Mtls`, …); the
/// descriptor each method's file declares there gives its name (the `auth.methods` value, the
/// `method` label of the metrics, the access log's `auth_method`), its scheme and the rest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(u8);

impl Method {
    /// The method at `index` of the list (only the list makes methods).
    pub(crate) const fn at(index: usize) -> Method {
        Method(index as u8)
    }

    /// Its place in `Method::ALL`.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Its bit in a set of methods (the list holds fewer than 64).
    pub const fn bit(self) -> u64 {
        1 << self.0
    }
}

/// `WWW-Authenticate` schemes. There is no standard one for client certificates;
/// `ClientCertificate` names what is missing for clients and humans reading the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    ClientCertificate,
    Basic,
    Bearer,
    /// Another scheme: its challenge is `<name> realm="…"`.
    Named(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Shown in logs: certificate field value, user name or token name. Never a secret.
    pub name: String,
    pub proven_by: Method,
    /// The originator this identity acts as by default (`X-M2M-Origin`).
    pub originator: String,
    /// Further originators it may use in `verify` mode.
    pub also_allowed: Vec<OriginatorPattern>,
    /// Roles such as `sysop` (from an introspection answer, a JWT claim or `auth.roles`).
    /// Logged only, for now; kept here so that path rules can use them later.
    pub roles: Vec<String>,
}
