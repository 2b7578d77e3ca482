//! Authentication: each enabled method turns the credentials a request carries into one
//! `Identity`, or a reason to refuse. The first method in `auth.methods` whose credentials are
//! present decides; present but wrong credentials never fall through to another method.

pub mod mtls;

use std::sync::Arc;

use crate::config::{AuthConfig, Method};
use crate::identity::Identity;
use mtls::CertIdentity;

/// Why a request was not authenticated. The text is safe to send to the client and to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No enabled method found credentials.
    NoCredentials,
    /// Credentials present but refused (bad or malformed): 401.
    Refused(&'static str),
    /// Identity proven, but it cannot act as any originator (e.g. certificate fields that do
    /// not match the originator pattern): 403.
    NotAllowed(&'static str),
}

pub struct Authenticator {
    methods: Vec<Method>,
}

/// What the connection contributes to a request's authentication.
pub struct ConnectionCredentials<'a> {
    pub client_cert: Option<&'a CertIdentity>,
}

impl Authenticator {
    pub fn from_config(config: &AuthConfig) -> Self {
        Authenticator {
            methods: config.methods.clone(),
        }
    }

    pub fn authenticate(
        &self,
        conn: &ConnectionCredentials<'_>,
    ) -> Result<Arc<Identity>, AuthError> {
        for method in &self.methods {
            match method {
                Method::Mtls => {
                    if let Some(cert) = conn.client_cert {
                        return match &cert.result {
                            Ok(identity) => Ok(Arc::clone(identity)),
                            Err(reason) => Err(AuthError::NotAllowed(reason)),
                        };
                    }
                }
                Method::Basic | Method::Bearer => {}
            }
        }
        Err(AuthError::NoCredentials)
    }
}
