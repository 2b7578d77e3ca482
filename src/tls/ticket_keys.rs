//! The keys that encrypt session tickets, rotated on a schedule and on every change of the
//! client trust. OpenSSL's own ticket key is made once per context and never changes: without
//! this, a ticket would stay decryptable for the life of the process.
//!
//! Schedule (`tls.session_ticket_rotation`, default 1 h): a new key every period. Tickets of
//! the key before are still accepted, and replaced by a ticket of the current key, during the
//! period after; so a ticket is decrypted at most two periods after its key was made (and
//! OpenSSL's session lifetime may end it sooner). A change of the CA bundle or the CRLs (a new
//! trust generation) replaces every key at once: no ticket from before is decrypted.
//!
//! The ticket format is OpenSSL's (AES-256-CBC, then HMAC-SHA256 over it); only the keys are
//! ours. The openssl crate does not wrap the callback (`SSL_CTX_set_tlsext_ticket_key_cb`).

use std::ffi::{c_int, c_uchar};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{SslContext, SslContextBuilder, SslRef};
use openssl_sys::{EVP_CIPHER_CTX, HMAC_CTX, SSL};

use super::trust::ClientTrust;

/// `SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB` (ssl.h).
const SET_TICKET_KEY_CB: c_int = 72;

type TicketKeyCb = unsafe extern "C" fn(
    *mut SSL,
    *mut c_uchar,
    *mut c_uchar,
    *mut EVP_CIPHER_CTX,
    *mut HMAC_CTX,
    c_int,
) -> c_int;

struct Key {
    name: [u8; 16],
    aes: [u8; 32],
    hmac: [u8; 32],
    made: Instant,
}

impl Key {
    fn new() -> Result<Key, ErrorStack> {
        let mut key = Key {
            name: [0; 16],
            aes: [0; 32],
            hmac: [0; 32],
            made: Instant::now(),
        };
        openssl::rand::rand_bytes(&mut key.name)?;
        openssl::rand::rand_bytes(&mut key.aes)?;
        openssl::rand::rand_bytes(&mut key.hmac)?;
        Ok(key)
    }
}

struct Ring {
    current: Key,
    previous: Option<Key>,
    /// The trust generation the keys were made under.
    generation: u64,
}

/// One listener's ticket keys.
pub struct TicketKeys {
    period: Duration,
    trust: Option<Arc<ClientTrust>>,
    ring: Mutex<Option<Ring>>,
}

impl TicketKeys {
    pub fn new(period: Duration, trust: Option<Arc<ClientTrust>>) -> Self {
        TicketKeys {
            period,
            trust,
            ring: Mutex::new(None),
        }
    }

    /// `f` on the keys in force now, rotated first when the schedule or the trust says so.
    fn with<R>(&self, f: impl FnOnce(&Ring) -> R) -> Result<R, ErrorStack> {
        let generation = self.trust.as_ref().map_or(0, |t| t.generation());
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let ring = match ring.take() {
            Some(r) if r.generation == generation && r.current.made.elapsed() < self.period => {
                ring.insert(r)
            }
            Some(r) if r.generation == generation => {
                let age = r.current.made.elapsed();
                // keys older than two periods decrypt nothing, even after a quiet time
                let previous = (age < 2 * self.period).then_some(r.current);
                ring.insert(Ring {
                    current: Key::new()?,
                    previous,
                    generation,
                })
            }
            // first use, or the trust changed: nothing from before
            _ => ring.insert(Ring {
                current: Key::new()?,
                previous: None,
                generation,
            }),
        };
        Ok(f(ring))
    }
}

static KEYS_INDEX: LazyLock<Result<Index<SslContext, TicketKeys>, ErrorStack>> =
    LazyLock::new(SslContext::new_ex_index);

/// Encrypt and decrypt the context's tickets with `keys`.
pub fn install(ctx: &mut SslContextBuilder, keys: TicketKeys) -> Result<(), ErrorStack> {
    let index = KEYS_INDEX.as_ref().map_err(Clone::clone)?;
    ctx.set_ex_data(*index, keys);
    // SAFETY: OpenSSL calls the function with the signature of SSL_CTX_set_tlsext_ticket_key_cb
    // (the C API passes it as a generic function pointer); the context pointer is valid.
    let set = unsafe {
        let cb = std::mem::transmute::<TicketKeyCb, unsafe extern "C" fn()>(ticket_key);
        openssl_sys::SSL_CTX_callback_ctrl__fixed_rust(ctx.as_ptr(), SET_TICKET_KEY_CB, Some(cb))
    };
    if set == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

/// OpenSSL's ticket key callback: `enc` 1 to encrypt a new ticket (fill in name, IV and both
/// contexts), 0 to decrypt one (look up its key by `name`). Returns 1 (or, decrypting with the
/// previous key, 2: issue a fresh ticket), 0 for a ticket of an unknown key (full handshake),
/// -1 on an internal error.
///
/// # Safety
/// Called by OpenSSL only: `ssl` valid, `name` 16 bytes, `iv` EVP_MAX_IV_LENGTH bytes, both
/// contexts valid, all for the duration of the call.
unsafe extern "C" fn ticket_key(
    ssl: *mut SSL,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut EVP_CIPHER_CTX,
    mac: *mut HMAC_CTX,
    enc: c_int,
) -> c_int {
    // SAFETY: a valid SSL pointer (this function's contract).
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    let Ok(index) = KEYS_INDEX.as_ref() else {
        return -1;
    };
    let Some(keys) = ssl.ssl_context().ex_data(*index) else {
        return -1;
    };
    // SAFETY: the lengths are OpenSSL's (this function's contract).
    let (name, iv) = unsafe {
        (
            std::slice::from_raw_parts_mut(name, 16),
            std::slice::from_raw_parts_mut(iv, 16),
        )
    };
    let done = if enc == 1 {
        if openssl::rand::rand_bytes(iv).is_err() {
            return -1;
        }
        keys.with(|ring| {
            name.copy_from_slice(&ring.current.name);
            // SAFETY: valid contexts (this function's contract); keys of the cipher's and the
            // hash's sizes; IV of 16 bytes.
            let ok = unsafe { init(&ring.current, iv, cipher, mac, true) };
            if ok {
                1
            } else {
                -1
            }
        })
    } else {
        keys.with(|ring| {
            let (key, answer) = if ring.current.name == *name {
                (&ring.current, 1)
            } else {
                match &ring.previous {
                    Some(previous) if previous.name == *name => (previous, 2),
                    _ => return 0,
                }
            };
            // SAFETY: as above.
            if unsafe { init(key, iv, cipher, mac, false) } {
                answer
            } else {
                -1
            }
        })
    };
    done.unwrap_or(-1)
}

/// Set up the ticket's cipher and HMAC with `key`.
///
/// # Safety
/// `cipher` and `mac` valid contexts, `iv` 16 bytes.
unsafe fn init(
    key: &Key,
    iv: &[u8],
    cipher: *mut EVP_CIPHER_CTX,
    mac: *mut HMAC_CTX,
    encrypt: bool,
) -> bool {
    use openssl_sys::{EVP_aes_256_cbc, EVP_sha256, HMAC_Init_ex};
    // SAFETY: the caller's contract; AES-256 takes the 32-byte key and a 16-byte IV.
    unsafe {
        let null = std::ptr::null_mut();
        let cipher_ok = if encrypt {
            openssl_sys::EVP_EncryptInit_ex(
                cipher,
                EVP_aes_256_cbc(),
                null,
                key.aes.as_ptr(),
                iv.as_ptr(),
            )
        } else {
            openssl_sys::EVP_DecryptInit_ex(
                cipher,
                EVP_aes_256_cbc(),
                null,
                key.aes.as_ptr(),
                iv.as_ptr(),
            )
        };
        let mac_ok = HMAC_Init_ex(
            mac,
            key.hmac.as_ptr().cast(),
            key.hmac.len() as c_int,
            EVP_sha256(),
            null,
        );
        cipher_ok == 1 && mac_ok == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(keys: &TicketKeys) -> ([u8; 16], Option<[u8; 16]>) {
        keys.with(|r| (r.current.name, r.previous.as_ref().map(|p| p.name)))
            .unwrap()
    }

    #[test]
    fn keys_rotate_on_the_schedule_and_the_one_before_is_kept_one_period() {
        let keys = TicketKeys::new(Duration::from_millis(200), None);
        let (first, none) = names(&keys);
        assert_eq!(none, None);
        assert_eq!(names(&keys).0, first, "same key within the period");
        std::thread::sleep(Duration::from_millis(250));
        let (second, previous) = names(&keys);
        assert_ne!(second, first);
        assert_eq!(previous, Some(first), "the key before still decrypts");
        // a quiet time of two periods: the old key is dropped, not kept as the previous one
        std::thread::sleep(Duration::from_millis(450));
        let (third, previous) = names(&keys);
        assert_ne!(third, second);
        assert_eq!(previous, None);
    }

    #[test]
    fn a_trust_change_replaces_every_key() {
        let trust = Arc::new(ClientTrust::empty(None).unwrap());
        let keys = TicketKeys::new(Duration::from_secs(3600), Some(trust.clone()));
        let (first, _) = names(&keys);
        trust.replace_crls(Vec::new()).unwrap();
        let (second, previous) = names(&keys);
        assert_ne!(second, first);
        assert_eq!(previous, None);
    }
}
