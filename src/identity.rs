//! The one identity model every authentication method produces. Code below the auth layer
//! (originator policy, header rewrite, logging) sees only this, never the method's details.

use crate::originator_syntax::OriginatorPattern;

/// An authentication method: how an identity was proven. The `auth.methods` config values,
/// the `method` label of the metrics and the access log's `auth_method` all come from here.
/// Used for labels and routing of credentials, never for decisions below the auth layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Mtls,
    Basic,
    Bearer,
    Jwt,
    Introspection,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Mtls,
        Method::Basic,
        Method::Bearer,
        Method::Jwt,
        Method::Introspection,
    ];

    /// The HTTP authentication scheme its 401 challenge names.
    pub fn scheme(self) -> Scheme {
        match self {
            Method::Mtls => Scheme::ClientCertificate,
            Method::Basic => Scheme::Basic,
            Method::Bearer | Method::Jwt | Method::Introspection => Scheme::Bearer,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Mtls => "mtls",
            Method::Basic => "basic",
            Method::Bearer => "bearer",
            Method::Jwt => "jwt",
            Method::Introspection => "introspection",
        }
    }
}

/// `WWW-Authenticate` schemes. There is no standard one for client certificates;
/// `ClientCertificate` names what is missing for clients and humans reading the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    ClientCertificate,
    Basic,
    Bearer,
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
