//! The one TLS policy for connections the proxy makes itself (egress routes, JWKS URLs, token
//! introspection), matching the listener's: TLS 1.3, or TLS 1.2 with an ECDHE key exchange and
//! an AEAD cipher (no static RSA, no CBC); and the peer certificate names the peer in a DNS or
//! IP-address SAN, never only in its CN (RFC 6125 6.4.4, `X509_CHECK_FLAG_NEVER_CHECK_SUBJECT`).
//!
//! Pingora's connectors (pingora-core's, for egress, JWKS and introspection) build their own
//! OpenSSL context, which offers TLS 1.0, static-RSA and CBC suites and lets OpenSSL's host
//! check fall back to the CN, and they have no hook before the handshake. So the
//! policy is read when a handshake completes ([`hook`], which Pingora stores on the connection)
//! and enforced before the first byte of a request is written ([`verdict`]): a connection that
//! breaks it carries nothing, not even a token.

use std::any::Any;
use std::ffi::c_int;
use std::net::IpAddr;
use std::sync::Arc;

use foreign_types::ForeignTypeRef;
use openssl::ssl::{SslCipherRef, SslRef, SslVersion};
use openssl::x509::X509Ref;
use pingora::protocols::tls::{HandshakeCompleteHook, SslDigest};
use pingora::protocols::Digest;

/// TLS 1.2 suites: ECDHE with AEAD only, in OpenSSL's names (the listener offers exactly these).
/// TLS 1.3 suites are OpenSSL's defaults, all AEAD with an ephemeral key exchange.
pub const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// How a peer's TLS broke the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Below TLS 1.2.
    OldVersion,
    /// TLS 1.2 without ECDHE, or with a cipher that is not AEAD (CBC).
    WeakCipher,
    /// The certificate does not name the peer in a SAN.
    NameMismatch,
    /// No verdict on the connection (not made with [`hook`]): refused rather than trusted.
    Unchecked,
}

impl Violation {
    /// Why the peer was refused, for logs and the oneM2M error (no secret in it).
    pub fn reason(self) -> &'static str {
        match self {
            Violation::OldVersion => "peer offers no TLS 1.2 or 1.3",
            Violation::WeakCipher => {
                "peer offers no TLS 1.2 suite with ECDHE and AEAD (static RSA or CBC only)"
            }
            Violation::NameMismatch => {
                "peer certificate does not name the peer in a DNS or IP SAN (the CN is not used)"
            }
            Violation::Unchecked => "peer TLS not checked",
        }
    }
}

/// The name a peer's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerName {
    Dns(String),
    Ip(IpAddr),
}

impl PeerName {
    /// An IP address literal is checked against IP SANs, anything else against DNS SANs.
    pub fn of(host: &str) -> PeerName {
        match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => PeerName::Ip(ip),
            Err(_) => PeerName::Dns(host.to_owned()),
        }
    }
}

/// What [`hook`] leaves on a connection.
struct Verdict(Result<(), Violation>);

/// The hook for `PeerOptions::upstream_tls_handshake_complete_hook`: judges each handshake
/// against the policy for a peer that must be `name`.
pub fn hook(name: PeerName) -> HandshakeCompleteHook {
    Arc::new(move |ssl: &SslRef| -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(Verdict(check(ssl, &name))))
    })
}

/// The policy's verdict on a connection made with [`hook`], from its digest.
pub fn verdict(digest: Option<&Digest>) -> Result<(), Violation> {
    verdict_of(digest.and_then(|d| d.ssl_digest.as_deref()))
}

/// The same from the connection's TLS digest (`Stream::get_ssl_digest`).
pub fn verdict_of(tls: Option<&SslDigest>) -> Result<(), Violation> {
    tls.and_then(|t| t.extension.get::<Verdict>())
        .map_or(Err(Violation::Unchecked), |v| v.0)
}

/// The policy, on a completed handshake.
pub fn check(ssl: &SslRef, name: &PeerName) -> Result<(), Violation> {
    match ssl.version2() {
        Some(SslVersion::TLS1_3) => {}
        Some(SslVersion::TLS1_2) => {
            let cipher = ssl.current_cipher().ok_or(Violation::WeakCipher)?;
            if !forward_secret_aead(cipher) {
                return Err(Violation::WeakCipher);
            }
        }
        _ => return Err(Violation::OldVersion),
    }
    let cert = ssl.peer_certificate().ok_or(Violation::NameMismatch)?;
    if names(&cert, name) {
        Ok(())
    } else {
        Err(Violation::NameMismatch)
    }
}

extern "C" {
    // libssl's public API since 1.1.0, not declared by openssl-sys.
    fn SSL_CIPHER_get_kx_nid(c: *const openssl_sys::SSL_CIPHER) -> c_int;
    fn SSL_CIPHER_is_aead(c: *const openssl_sys::SSL_CIPHER) -> c_int;
}

/// `NID_kx_ecdhe` (obj_mac.h).
const NID_KX_ECDHE: c_int = 1038;

/// An ECDHE key exchange and an AEAD cipher.
fn forward_secret_aead(cipher: &SslCipherRef) -> bool {
    // SAFETY: a valid cipher for the call; both functions only read its constant fields.
    unsafe {
        SSL_CIPHER_get_kx_nid(cipher.as_ptr()) == NID_KX_ECDHE
            && SSL_CIPHER_is_aead(cipher.as_ptr()) == 1
    }
}

/// Whether `cert` names `name` in a SAN: DNS names as OpenSSL matches them (wildcards in the
/// leftmost label), with the CN never consulted; IP addresses exactly.
pub fn names(cert: &X509Ref, name: &PeerName) -> bool {
    match name {
        PeerName::Ip(ip) => super::material::names_ip(cert, *ip),
        PeerName::Dns(host) => {
            // SAFETY: a valid certificate and a host name of `host.len()` bytes for the call;
            // no peer name is asked back.
            let matched = unsafe {
                openssl_sys::X509_check_host(
                    cert.as_ptr(),
                    host.as_ptr().cast(),
                    host.len(),
                    openssl_sys::X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
                    std::ptr::null_mut(),
                )
            };
            matched == 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509Builder, X509NameBuilder, X509};

    fn cert(cn: &str, dns: &[&str], ips: &[&str]) -> X509 {
        let key = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        if !dns.is_empty() || !ips.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for d in dns {
                san.dns(d);
            }
            for ip in ips {
                san.ip(ip);
            }
            let ext = san.build(&b.x509v3_context(None, None)).unwrap();
            b.append_extension(ext).unwrap();
        }
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    #[test]
    fn names_are_sans_never_the_cn() {
        let dns = |h: &str| PeerName::of(h);
        assert!(!names(&cert("peer.test", &[], &[]), &dns("peer.test")));
        let c = cert("other", &["peer.test", "*.pods.test"], &["10.0.0.1"]);
        assert!(names(&c, &dns("peer.test")));
        assert!(names(&c, &dns("a.pods.test")));
        assert!(!names(&c, &dns("a.b.pods.test")));
        assert!(!names(&c, &dns("other")));
        assert!(names(&c, &PeerName::of("10.0.0.1")));
        assert!(!names(&c, &PeerName::of("10.0.0.2")));
        assert_eq!(PeerName::of("[::1]"), PeerName::Ip("::1".parse().unwrap()));
    }

    #[test]
    fn no_verdict_is_a_refusal() {
        assert_eq!(verdict(None), Err(Violation::Unchecked));
    }
}
