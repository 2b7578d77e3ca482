//! TLS session tickets that carry the client-trust generation the client certificate was
//! verified under. A ticket from an older generation (the CA bundle or CRL changed since) is
//! not resumed: the client does a full handshake and its certificate is verified again. A
//! ticket from the current generation resumes without a second verification, unless the
//! certificate in its session has expired since (then the full handshake refuses it).
//!
//! The openssl crate does not wrap these calls (OpenSSL ≥ 1.1.1), hence the declarations here.

use std::ffi::{c_int, c_uchar, c_void};
use std::sync::{Arc, LazyLock};

use foreign_types::ForeignTypeRef;
use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{Ssl, SslContextBuilder, SslRef};
use openssl::x509::X509Ref;
use openssl_sys::{SSL, SSL_CTX, SSL_SESSION};

use super::trust::ClientTrust;

type GenerateCb = unsafe extern "C" fn(*mut SSL, *mut c_void) -> c_int;
type DecryptCb = unsafe extern "C" fn(
    *mut SSL,
    *mut SSL_SESSION,
    *const c_uchar,
    usize,
    c_int,
    *mut c_void,
) -> c_int;

extern "C" {
    fn SSL_CTX_set_session_ticket_cb(
        ctx: *mut SSL_CTX,
        gen_cb: Option<GenerateCb>,
        dec_cb: Option<DecryptCb>,
        arg: *mut c_void,
    ) -> c_int;
    fn SSL_SESSION_set1_ticket_appdata(
        ss: *mut SSL_SESSION,
        data: *const c_void,
        len: usize,
    ) -> c_int;
    fn SSL_SESSION_get0_ticket_appdata(
        ss: *mut SSL_SESSION,
        data: *mut *mut c_void,
        len: *mut usize,
    ) -> c_int;
    fn SSL_SESSION_get0_peer(ss: *mut SSL_SESSION) -> *mut openssl_sys::X509;
}

// SSL_TICKET_STATUS and SSL_TICKET_RETURN values (ssl.h)
const TICKET_FATAL_ERR_MALLOC: c_int = 0;
const TICKET_FATAL_ERR_OTHER: c_int = 1;
const TICKET_SUCCESS: c_int = 5;
const TICKET_SUCCESS_RENEW: c_int = 6;
const RETURN_ABORT: c_int = 0;
const RETURN_IGNORE_RENEW: c_int = 2;
const RETURN_USE: c_int = 3;
const RETURN_USE_RENEW: c_int = 4;

/// The trust generation a full handshake verifies under, taken when its verification store is
/// installed (before the store, so a reload in between errs towards re-verification).
static VERIFIED_GENERATION: LazyLock<Result<Index<Ssl, u64>, ErrorStack>> =
    LazyLock::new(Ssl::new_ex_index);

pub fn record_generation(ssl: &mut SslRef, generation: u64) {
    if let Ok(index) = VERIFIED_GENERATION.as_ref() {
        ssl.set_ex_data(*index, generation);
    }
}

/// The generation this connection's client certificate was verified under: recorded in this
/// handshake, or carried by the ticket it resumed. `None`: unknown (re-verify).
pub fn verified_generation(ssl: &SslRef) -> Option<u64> {
    if ssl.session_reused() {
        let session = ssl.session()?;
        // SAFETY: a valid session pointer for the duration of the call.
        return unsafe { ticket_generation(session.as_ptr()) };
    }
    let index = VERIFIED_GENERATION.as_ref().ok()?;
    ssl.ex_data(*index).copied()
}

/// The generation stamped into a ticket's session, if any.
///
/// # Safety
/// `ss` must be a valid session for the duration of the call.
unsafe fn ticket_generation(ss: *mut SSL_SESSION) -> Option<u64> {
    let mut data: *mut c_void = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: `ss` is valid (this function's contract); OpenSSL writes the out-pointers.
    let found = unsafe { SSL_SESSION_get0_ticket_appdata(ss, &mut data, &mut len) };
    if found != 1 || data.is_null() || len != 8 {
        return None;
    }
    // SAFETY: OpenSSL says `data` holds `len` == 8 bytes owned by the session.
    let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, 8) };
    let mut generation = [0u8; 8];
    generation.copy_from_slice(bytes);
    Some(u64::from_le_bytes(generation))
}

/// Install the ticket callbacks on the listener's context. `trust` (`None`: client certificates
/// are off, every ticket resumes) is kept for the life of the process: the listener settings are
/// built once.
pub fn install(
    ctx: &mut SslContextBuilder,
    trust: Option<Arc<ClientTrust>>,
) -> Result<(), ErrorStack> {
    VERIFIED_GENERATION.as_ref().map_err(Clone::clone)?;
    let arg = match trust {
        Some(trust) => Arc::into_raw(trust) as *mut c_void,
        None => std::ptr::null_mut(),
    };
    // SAFETY: the context pointer is valid; `arg` is null or points to a ClientTrust that is
    // never freed (its Arc was leaked above).
    let ok =
        unsafe { SSL_CTX_set_session_ticket_cb(ctx.as_ptr(), Some(generate), Some(decrypt), arg) };
    if ok == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// Whether `cert` is past its notAfter now.
fn expired(cert: &X509Ref) -> bool {
    Asn1Time::days_from_now(0).is_ok_and(|now| cert.not_after() < now)
}

/// Whether the client certificate a session carries has expired (a session without one has
/// nothing to expire).
///
/// # Safety
/// `ss` must be a valid session for the duration of the call.
unsafe fn session_cert_expired(ss: *mut SSL_SESSION) -> bool {
    // SAFETY: `ss` is valid (this function's contract); the certificate, if any, is owned by
    // the session and only borrowed here.
    let peer = unsafe { SSL_SESSION_get0_peer(ss) };
    if peer.is_null() {
        return false;
    }
    // SAFETY: a valid X509 pointer owned by the session, which outlives this borrow.
    expired(unsafe { X509Ref::from_ptr(peer) })
}

/// Stamp the ticket being issued with the generation the certificate was verified under.
///
/// # Safety
/// Called by OpenSSL only, with a valid `ssl` for the duration of the call.
unsafe extern "C" fn generate(ssl: *mut SSL, _arg: *mut c_void) -> c_int {
    // SAFETY: OpenSSL passes a valid SSL pointer (this function's contract).
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    let (Some(generation), Some(session)) = (verified_generation(ssl), ssl.session()) else {
        // no stamp: this ticket will not resume
        return 1;
    };
    if ssl.peer_certificate().is_some_and(|c| expired(&c)) {
        // an expired certificate's session must not resume: no stamp
        return 1;
    }
    let bytes = generation.to_le_bytes();
    // SAFETY: a valid session; OpenSSL copies the 8 bytes.
    unsafe {
        SSL_SESSION_set1_ticket_appdata(session.as_ptr(), bytes.as_ptr().cast(), bytes.len());
    }
    1
}

/// Resume only tickets stamped with the current trust generation whose client certificate
/// has not expired since.
///
/// # Safety
/// Called by OpenSSL only, with a valid `ss` and the `arg` given to [`install`]: null or a
/// pointer to a `ClientTrust` that lives for the rest of the process.
unsafe extern "C" fn decrypt(
    _ssl: *mut SSL,
    ss: *mut SSL_SESSION,
    _keyname: *const c_uchar,
    _keyname_len: usize,
    status: c_int,
    arg: *mut c_void,
) -> c_int {
    match status {
        TICKET_SUCCESS | TICKET_SUCCESS_RENEW => {
            // SAFETY: `arg` is null or a leaked Arc<ClientTrust> (see `install`).
            let trust = unsafe { (arg as *const ClientTrust).as_ref() };
            let current = match trust {
                None => true, // no client certificates: nothing to re-verify
                // SAFETY: OpenSSL passes a valid session.
                Some(trust) => (unsafe { ticket_generation(ss) }) == Some(trust.generation()),
            };
            // SAFETY: OpenSSL passes a valid session.
            let usable = current && !unsafe { session_cert_expired(ss) };
            match (usable, status) {
                (true, TICKET_SUCCESS_RENEW) => RETURN_USE_RENEW,
                (true, _) => RETURN_USE,
                (false, _) => RETURN_IGNORE_RENEW,
            }
        }
        TICKET_FATAL_ERR_MALLOC | TICKET_FATAL_ERR_OTHER => RETURN_ABORT,
        // no ticket, an empty one, or one we cannot decrypt: full handshake
        _ => RETURN_IGNORE_RENEW,
    }
}
