//! Client-certificate trust: the CA bundle and CRLs a client certificate is verified against,
//! as one verification store that reloads replace whole, with a generation that tells
//! connections admitted under an older store to verify again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Crl, X509Ref, X509StoreContext, X509};

use super::material::{not_after_unix, setup, subject_label, TlsError};
use crate::config::CrlScope;
use crate::metrics;

/// Client-certificate trust: CA bundle, optional CRLs, and the verification store built from
/// both. Every change bumps `generation`, so connections admitted under an older one are
/// re-verified on their next request.
pub struct ClientTrust {
    ca: ArcSwap<Vec<X509>>,
    crls: ArcSwapOption<Vec<X509Crl>>,
    store: ArcSwap<X509Store>,
    generation: AtomicU64,
    /// `tls.crl_scope`; `None`: `chain` when every CA of the bundle has a CRL, else `leaf`.
    crl_scope: Option<CrlScope>,
}

/// What the CRLs in force cover.
pub struct CrlCoverage {
    /// The scope in force: `Chain` checks every certificate of a client's chain.
    pub scope: CrlScope,
    /// Subjects of the bundle's CAs that no CRL in force comes from.
    pub uncovered: Vec<String>,
}

impl ClientTrust {
    pub fn new(ca: Vec<X509>, crls: Option<Vec<X509Crl>>) -> Result<Self, TlsError> {
        let store = build_store(&ca, crls.as_deref(), None)?;
        let trust = ClientTrust {
            ca: ArcSwap::from_pointee(ca),
            crls: ArcSwapOption::from(crls.map(Arc::new)),
            store: ArcSwap::from_pointee(store),
            generation: AtomicU64::new(1),
            crl_scope: None,
        };
        trust.publish_expiry();
        Ok(trust)
    }

    /// Nothing trusted yet (generation 0): the state before the first load of the CA bundle.
    pub fn empty(crl_scope: Option<CrlScope>) -> Result<Self, TlsError> {
        Ok(ClientTrust {
            ca: ArcSwap::from_pointee(Vec::new()),
            crls: ArcSwapOption::empty(),
            store: ArcSwap::from_pointee(build_store(&[], None, crl_scope)?),
            generation: AtomicU64::new(0),
            crl_scope,
        })
    }

    /// What the CRLs in force cover (`None` without CRLs).
    pub fn crl_coverage(&self) -> Option<CrlCoverage> {
        let crls = self.crls.load_full()?;
        Some(coverage(&self.ca.load(), &crls, self.crl_scope))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The CA certificates in force.
    pub fn ca(&self) -> Arc<Vec<X509>> {
        self.ca.load_full()
    }

    /// The verification store in force.
    pub fn store(&self) -> Arc<X509Store> {
        self.store.load_full()
    }

    pub fn ca_count(&self) -> usize {
        self.ca.load().len()
    }

    pub fn replace_ca(&self, ca: Vec<X509>) -> Result<(), TlsError> {
        let crls = self.crls.load();
        let store = build_store(&ca, crls.as_deref().map(|v| v.as_slice()), self.crl_scope)?;
        self.ca.store(Arc::new(ca));
        self.install(store);
        self.publish_expiry();
        Ok(())
    }

    pub fn replace_crls(&self, crls: Vec<X509Crl>) -> Result<(), TlsError> {
        let store = build_store(&self.ca.load(), Some(&crls), self.crl_scope)?;
        self.crls.store(Some(Arc::new(crls)));
        self.install(store);
        Ok(())
    }

    fn install(&self, store: X509Store) {
        self.store.store(Arc::new(store));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Verify a certificate (and the intermediates the client sent) against the current store.
    pub fn verify(&self, cert: &X509Ref, intermediates: &[X509]) -> bool {
        let store = self.store.load();
        let check = || -> Result<bool, openssl::error::ErrorStack> {
            let mut chain = Stack::new()?;
            for c in intermediates {
                chain.push(c.clone())?;
            }
            let mut ctx = X509StoreContext::new()?;
            ctx.init(&store, cert, &chain, |c| c.verify_cert())
                .map(|ok| ok && !is_ca(cert))
        };
        check().unwrap_or(false)
    }

    fn publish_expiry(&self) {
        let ca = self.ca.load();
        let series: Vec<_> = ca
            .iter()
            .map(|c| (subject_label(c), not_after_unix(c)))
            .collect();
        metrics::certificates("client_ca", &series);
    }
}

extern "C" {
    // Part of libcrypto's public API, not declared by openssl-sys 0.9.
    fn X509_STORE_add_crl(
        store: *mut openssl_sys::X509_STORE,
        crl: *mut openssl_sys::X509_CRL,
    ) -> std::ffi::c_int;
}

/// The scope `configured` comes to with these CAs and CRLs, and the CAs no CRL comes from.
fn coverage(ca: &[X509], crls: &[X509Crl], configured: Option<CrlScope>) -> CrlCoverage {
    let uncovered: Vec<String> = ca
        .iter()
        .filter(|ca| !crls.iter().any(|crl| issued_by(crl, ca)))
        .map(|ca| subject_label(ca))
        .collect();
    let scope = configured.unwrap_or(if uncovered.is_empty() {
        CrlScope::Chain
    } else {
        CrlScope::Leaf
    });
    CrlCoverage { scope, uncovered }
}

/// Whether `ca` signed `crl` (its name and its key: OpenSSL would not use it otherwise).
fn issued_by(crl: &X509Crl, ca: &X509) -> bool {
    let same_name = crl.issuer_name().to_der().ok() == ca.subject_name().to_der().ok();
    same_name
        && ca
            .public_key()
            .and_then(|key| crl.verify(&key))
            .unwrap_or(false)
}

fn build_store(
    ca: &[X509],
    crls: Option<&[X509Crl]>,
    crl_scope: Option<CrlScope>,
) -> Result<X509Store, TlsError> {
    let mut builder = X509StoreBuilder::new().map_err(setup)?;
    for cert in ca {
        builder.add_cert(cert.clone()).map_err(setup)?;
    }
    if let Some(crls) = crls {
        for crl in crls {
            // SAFETY: both pointers are valid for the call; X509_STORE_add_crl takes its own
            // reference to the CRL, so `crl` may be dropped afterwards.
            let added = unsafe { X509_STORE_add_crl(builder.as_ptr(), crl.as_ptr()) };
            if added != 1 {
                return Err(TlsError::Setup(
                    "cannot add a CRL to the trust store".into(),
                ));
            }
        }
        let coverage = coverage(ca, crls, crl_scope);
        let flags = match coverage.scope {
            CrlScope::Chain => X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL,
            CrlScope::Leaf => X509VerifyFlags::CRL_CHECK,
        };
        if !ca.is_empty() && !coverage.uncovered.is_empty() {
            log::warn!(
                "tls.crl has no CRL from {}: {}",
                coverage.uncovered.join(", "),
                match crl_scope {
                    None => "revocation is checked for client certificates only, not for their intermediates (add the missing CRLs, or set tls.crl_scope: leaf to make this the choice)",
                    Some(CrlScope::Chain) => "with tls.crl_scope: chain, client certificates on a chain through it are refused (crl_missing)",
                    Some(CrlScope::Leaf) => "tls.crl_scope: leaf checks client certificates only",
                }
            );
        }
        builder.set_flags(flags).map_err(setup)?;
    }
    Ok(builder.build())
}

/// Whether a certificate is a CA (basicConstraints CA:TRUE).
pub fn is_ca(cert: &X509Ref) -> bool {
    // SAFETY: a valid certificate pointer for the call; the function only reads cached flags.
    let flags = unsafe { openssl_sys::X509_get_extension_flags(cert.as_ptr()) };
    flags & openssl_sys::EXFLAG_CA != 0
}
