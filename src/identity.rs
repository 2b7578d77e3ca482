//! The one identity model every authentication method produces. Code below the auth layer
//! (originator policy, header rewrite, logging) sees only this, never the method's details.

use crate::originator::OriginatorPattern;

/// How an identity was proven. Used for logs and metrics labels only, never for decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenBy {
    Mtls,
    Basic,
    Bearer,
    Jwt,
    Introspection,
}

impl ProvenBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvenBy::Mtls => "mtls",
            ProvenBy::Basic => "basic",
            ProvenBy::Bearer => "bearer",
            ProvenBy::Jwt => "jwt",
            ProvenBy::Introspection => "introspection",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Shown in logs: certificate field value, user name or token name. Never a secret.
    pub name: String,
    pub proven_by: ProvenBy,
    /// The originator this identity acts as by default (`X-M2M-Origin`).
    pub originator: String,
    /// Further originators it may use in `verify` mode.
    pub also_allowed: Vec<OriginatorPattern>,
    /// Roles such as `sysop` (from an introspection answer, a JWT claim or `auth.roles`).
    /// Logged only, for now; kept here so that path rules can use them later.
    pub roles: Vec<String>,
}
