//! mTLS: the identity named by a verified client certificate.
//!
//! Evaluated once per connection, at the end of the handshake; requests on the connection only
//! read the stored result.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use foreign_types::ForeignTypeRef;
use openssl::nid::Nid;
use openssl::x509::X509Ref;
use regex::Regex;

use anyhow::{bail, Context};

use super::client_cert::CertIdentity;
use super::method::{Assembly, Descriptor, Explained, MethodState, Sample};
use super::verifier::{Claim, Failure, Limit, Presented, Rejection, Verifier};
use crate::config::{AuthConfig, CertField, Config, KeyError, MtlsConfig};
use crate::identity::{Identity, Method, Scheme};
use crate::originator_syntax::validate_originator;
use crate::tls::handshake::{CertIdentify, PeerCertificate};
use crate::tls::material::not_after_unix;
use crate::tls::trust::ClientTrust;
use crate::tls::x509_text;

/// The `mtls` method: built only when enabled; its section has defaults.
pub const METHOD: Descriptor = Descriptor {
    name: "mtls",
    scheme: Scheme::ClientCertificate,
    files: &[],
    headers: &[],
    section: "auth.mtls",
    needs: None,
    configured: |_| true,
    validate,
    rate_limited: false,
    build: |c| match c.auth.methods.contains(&Method::Mtls) {
        true => Ok(Some(Arc::new(MtlsAuthenticator::from_config(
            &c.auth.mtls,
        )?))),
        false => Ok(None),
    },
};

fn validate(auth: &AuthConfig) -> Result<(), KeyError> {
    if auth.mtls.identity.is_empty() {
        return Err(KeyError::new(
            "auth.mtls.identity",
            "expected a list of certificate fields: uri, dns, email, cn",
        ));
    }
    Ok(())
}

impl MethodState for MtlsAuthenticator {
    /// Needs the client CA of `tls`.
    fn verifier(self: Arc<Self>, at: &Assembly<'_>) -> Option<Arc<dyn Verifier>> {
        let trust = at.tls?.trust.clone()?;
        Some(Arc::new(MtlsVerifier { trust }))
    }

    fn summary(&self, c: &Config) -> Vec<String> {
        let fields: Vec<_> = c.auth.mtls.identity.iter().map(|f| f.as_str()).collect();
        vec![format!(
            "mtls: identity from [{}], originator regex {:?}",
            fields.join(", "),
            c.auth.mtls.originator
        )]
    }

    fn explain(&self, sample: &Sample<'_>) -> Explained {
        let made = match (sample.cert, sample.name) {
            (Some(file), None) => {
                let pem = std::fs::read(file)
                    .with_context(|| format!("--cert {}: cannot read", file.display()))?;
                let cert = openssl::x509::X509::from_pem(&pem).with_context(|| {
                    format!("--cert {}: expected a PEM certificate", file.display())
                })?;
                self.identify_inner(&cert)
            }
            (None, Some(value)) => self.identity_of_value(value.to_string()),
            _ => bail!("--method mtls needs one of --as VALUE (the certificate's identity field value) and --cert FILE"),
        };
        Ok(made.map(Arc::new).map_err(str::to_string))
    }
}

pub struct MtlsAuthenticator {
    fields: Vec<CertField>,
    originator: Regex,
}

/// Reason given when a connection's certificate was revoked or its CA removed by a reload.
pub const REVOKED: &str = "client certificate no longer trusted";

/// Reason given when a connection's certificate passed its notAfter since the handshake.
pub const EXPIRED: &str = "client certificate expired";

impl MtlsAuthenticator {
    pub fn from_config(config: &MtlsConfig) -> Result<Self, KeyError> {
        let originator = Regex::new(&config.originator).map_err(|e| {
            KeyError::new(
                "auth.mtls.originator",
                format!("expected a regular expression: {e}"),
            )
        })?;
        Ok(MtlsAuthenticator {
            fields: config.identity.clone(),
            originator,
        })
    }

    /// Identity of a certificate the handshake verified (`verified`) under trust `generation`.
    pub fn identify(
        &self,
        cert: openssl::x509::X509,
        intermediates: Vec<openssl::x509::X509>,
        generation: u64,
        verified: bool,
    ) -> CertIdentity {
        let result = if verified {
            self.identify_inner(&cert).map(Arc::new)
        } else {
            Err("client certificate not verified")
        };
        CertIdentity {
            result,
            not_after: not_after_unix(&cert),
            cert,
            intermediates,
            generation,
            recheck: Mutex::new(None),
        }
    }

    /// The identity a verified certificate names (`explain` reads a certificate file with it).
    pub fn identify_inner(&self, cert: &X509Ref) -> Result<Identity, &'static str> {
        let value = self
            .fields
            .iter()
            .find_map(|field| field_value(cert, *field))
            .ok_or("client certificate has none of the configured identity fields")?;
        self.identity_of_value(value)
    }

    /// The identity of a certificate whose first configured identity field holds `value`.
    pub fn identity_of_value(&self, value: String) -> Result<Identity, &'static str> {
        let originator = self
            .derive_originator(&value)
            .ok_or("certificate identity does not match the originator pattern")?;
        validate_originator(&originator)
            .map_err(|_| "certificate identity is not usable as an originator")?;
        Ok(Identity {
            // validated: visible ASCII only, so safe to log
            name: value,
            proven_by: Method::Mtls,
            originator,
            also_allowed: Vec::new(),
            roles: Vec::new(),
        })
    }

    /// The named group `originator` of the configured regex, or the whole match.
    pub fn derive_originator(&self, value: &str) -> Option<String> {
        let caps = self.originator.captures(value)?;
        let m = caps.name("originator").or_else(|| caps.get(0))?;
        Some(m.as_str().to_owned())
    }
}

impl CertIdentify for MtlsAuthenticator {
    type Identity = CertIdentity;

    fn identify(&self, peer: PeerCertificate) -> CertIdentity {
        MtlsAuthenticator::identify(
            self,
            peer.cert,
            peer.intermediates,
            peer.verified_generation,
            peer.verified,
        )
    }
}

/// The mTLS method: the identity the connection's certificate established at the handshake,
/// as long as the certificate is still trusted.
pub struct MtlsVerifier {
    pub trust: Arc<ClientTrust>,
}

#[async_trait]
impl Verifier for MtlsVerifier {
    fn method(&self) -> Method {
        Method::Mtls
    }

    fn claims(&self, presented: &Presented<'_>) -> Claim<()> {
        match presented.client_cert {
            Some(_) => Claim::Mine(()),
            None => Claim::NotMine,
        }
    }

    fn limit<'p>(&self, _presented: &'p Presented<'_>) -> Limit<'p> {
        // a certificate verified at the handshake is nobody's guess
        Limit::Off
    }

    async fn verify(&self, presented: &Presented<'_>) -> Result<Arc<Identity>, Rejection> {
        let cert = presented.client_cert.ok_or(super::verifier::NOT_CLAIMED)?;
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if cert.expired(unix_now) {
            return Err(Rejection::uncounted(Failure::Expired, EXPIRED));
        }
        if !cert.still_trusted(&self.trust) {
            return Err(Rejection::uncounted(Failure::Revoked, REVOKED));
        }
        match &cert.result {
            Ok(identity) => Ok(Arc::clone(identity)),
            Err(reason) => Err(Rejection::uncounted(Failure::OriginatorNotAllowed, reason)),
        }
    }
}

/// The first value of `field` in the certificate. SAN URIs are kept as raw strings: oneM2M
/// originators like `//openmtc.org/mn-cse-1/CTestIPE` are not URLs.
fn field_value(cert: &X509Ref, field: CertField) -> Option<String> {
    if field == CertField::Cn {
        // decoded by its string type; one that cannot be read is an empty value (refused), not
        // a reason to look at the next field
        return cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .map(|e| x509_text::decode(e.data()).unwrap_or_default());
    }
    let wanted = match field {
        CertField::Uri => openssl_sys::GEN_URI,
        CertField::Dns => openssl_sys::GEN_DNS,
        CertField::Email => openssl_sys::GEN_EMAIL,
        CertField::Cn => return None,
    };
    let sans = cert.subject_alt_names()?;
    // The first entry of the wanted type decides. If its bytes are not text it yields an empty
    // value (refused later), never the next entry: skipping it would let a second SAN choose.
    let first = sans.iter().find(|name| {
        // SAFETY: `name` is a valid GENERAL_NAME for the life of `sans`; only its tag is read.
        unsafe { (*name.as_ptr()).type_ == wanted }
    })?;
    let text = match field {
        CertField::Uri => first.uri(),
        CertField::Dns => first.dnsname(),
        CertField::Email => first.email(),
        CertField::Cn => None,
    };
    // these are IA5Strings: anything but ASCII is a malformed value
    Some(text.filter(|t| t.is_ascii()).unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(pattern: &str) -> MtlsAuthenticator {
        MtlsAuthenticator::from_config(&MtlsConfig {
            identity: vec![CertField::Uri],
            originator: pattern.into(),
        })
        .unwrap()
    }

    #[test]
    fn originator_from_named_group_or_whole_match() {
        assert_eq!(
            auth("^(?P<originator>.+)$").derive_originator("//openmtc.org/mn-cse-1/CTestIPE"),
            Some("//openmtc.org/mn-cse-1/CTestIPE".into())
        );
        assert_eq!(
            auth("^urn:m2m:(?P<originator>C[^/]+)$").derive_originator("urn:m2m:Cae-sensor1"),
            Some("Cae-sensor1".into())
        );
        assert_eq!(
            auth("C[a-z]+").derive_originator("xCabc1"),
            Some("Cabc".into())
        );
        assert_eq!(
            auth("^urn:(?P<originator>.+)$").derive_originator("Cae1"),
            None
        );
    }
}
