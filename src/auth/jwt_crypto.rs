//! The signature checks of `jsonwebtoken`, done by OpenSSL (linked anyway for TLS) through the
//! crate's `CryptoProvider` hook instead of its pure-Rust backend, which cost 130–450 µs per
//! first sight of a token. HMAC (HS*, shared secrets) is the exception: it is done by the
//! `hmac`/`sha2` crates the proxy already uses elsewhere, because OpenSSL 3's EVP HMAC spends
//! more on its per-call provider set-up than on hashing a token (5.7 against 3.2 µs per token).
//!
//! Verification only: the proxy never signs a JWT, so signing and the helpers that read private
//! keys answer with an error. What the pure-Rust backend accepted is accepted, no more:
//! * the key's family must be the algorithm's (an HMAC secret never checks an RSA, EC or Ed
//!   signature, nor a public key an HMAC: no RS256 -> HS256 confusion);
//! * RSA keys as `RsaPublicKey::new` of the `rsa` crate takes them (modulus odd and at most 4096
//!   bits, exponent odd, 3 ..= 2^33 - 1 and below the modulus) and at least 2048 bits long
//!   (RFC 7518 3.3; the pure-Rust backend took shorter ones), the signature exactly as long
//!   as the modulus; PKCS#1 v1.5 for RS*, PSS with a salt as long as the hash and MGF1 with the
//!   same hash for PS*;
//! * ECDSA on P-256 for ES256 and P-384 for ES384, the key an uncompressed point on that curve
//!   (what `DecodingKey::from_jwk` makes), the signature JOSE's fixed-size `r || s` (RFC 7518
//!   3.4), not DER;
//! * Ed25519 with a 32-byte key and a 64-byte signature;
//! * HMAC tags compared in constant time, of exactly the hash's length (no truncated tags).

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{new_error, Error, ErrorKind};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use sha2::{Sha256, Sha384, Sha512};

static OPENSSL: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(verify_only()),
        rsa_pub_components_from_public_key: rsa_components,
        ec_pub_components_from_private_key: |_, _| Err(verify_only()),
        ed_pub_components_from_private_key: |_, _| Err(verify_only()),
        compute_digest,
    },
};

/// Makes the OpenSSL provider `jsonwebtoken`'s, for the whole process; true when it is in
/// effect. False only if `jsonwebtoken` had settled on another one first, which happens when
/// its crypto was used before this was called.
pub fn install() -> bool {
    static IN_EFFECT: OnceLock<bool> = OnceLock::new();
    *IN_EFFECT.get_or_init(|| match OPENSSL.install_default() {
        Ok(()) => true,
        Err(other) => std::ptr::eq(other, &OPENSSL),
    })
}

fn verify_only() -> Error {
    new_error(ErrorKind::Provider(
        "the proxy's JWT crypto only verifies".into(),
    ))
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(verify_only())
}

/// (n, e) of a PKCS#1 DER public key.
fn rsa_components(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let rsa = Rsa::public_key_from_der_pkcs1(der)
        .map_err(|e| new_error(ErrorKind::InvalidRsaKey(e.to_string())))?;
    Ok((rsa.n().to_vec(), rsa.e().to_vec()))
}

fn compute_digest(data: &[u8], h: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let md = match h {
        ThumbprintHash::SHA256 => MessageDigest::sha256(),
        ThumbprintHash::SHA384 => MessageDigest::sha384(),
        ThumbprintHash::SHA512 => MessageDigest::sha512(),
        _ => return Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    };
    hash(md, data)
        .map(|d| d.to_vec())
        .map_err(|e| new_error(ErrorKind::Provider(e.to_string())))
}

enum Check {
    Rsa {
        key: PKey<Public>,
        md: MessageDigest,
        pss: bool,
    },
    Ec {
        key: EcKey<Public>,
        md: MessageDigest,
        /// Bytes of r and of s.
        scalar: usize,
    },
    Ed(PKey<Public>),
    /// Keyed with the secret, cloned for each message.
    Hs256(Hmac<Sha256>),
    Hs384(Hmac<Sha384>),
    Hs512(Hmac<Sha512>),
}

struct OpensslVerifier {
    alg: Algorithm,
    check: Check,
}

/// `jsonwebtoken` asks for one of these per token and key: the key is parsed here, checked
/// against the algorithm, and refused when it is not one the algorithm can use.
fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if key.family() != alg.family() {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    let check = match alg {
        Algorithm::HS256 => Check::Hs256(hmac(key)?),
        Algorithm::HS384 => Check::Hs384(hmac(key)?),
        Algorithm::HS512 => Check::Hs512(hmac(key)?),
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => Check::Rsa {
            key: rsa_key(key)?,
            md: sha(*alg),
            pss: false,
        },
        Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => Check::Rsa {
            key: rsa_key(key)?,
            md: sha(*alg),
            pss: true,
        },
        Algorithm::ES256 => Check::Ec {
            key: ec_key(Curve::P256, key.try_get_as_bytes()?)?,
            md: MessageDigest::sha256(),
            scalar: Curve::P256.scalar(),
        },
        Algorithm::ES384 => Check::Ec {
            key: ec_key(Curve::P384, key.try_get_as_bytes()?)?,
            md: MessageDigest::sha384(),
            scalar: Curve::P384.scalar(),
        },
        Algorithm::EdDSA => Check::Ed(
            PKey::public_key_from_raw_bytes(key.try_get_as_bytes()?, Id::ED25519)
                .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?,
        ),
        _ => return Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    };
    Ok(Box::new(OpensslVerifier { alg: *alg, check }))
}

/// Whether `key` can check `alg` signatures: parsed and checked exactly as for a token, so a
/// key set keeps only keys that will verify (the reason otherwise, without key material).
pub fn check_key(alg: Algorithm, key: &DecodingKey) -> Result<(), String> {
    new_verifier(&alg, key)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The SHA-2 of an RS* or PS* algorithm.
fn sha(alg: Algorithm) -> MessageDigest {
    match alg {
        Algorithm::RS384 | Algorithm::PS384 => MessageDigest::sha384(),
        Algorithm::RS512 | Algorithm::PS512 => MessageDigest::sha512(),
        _ => MessageDigest::sha256(),
    }
}

fn hmac<M: KeyInit>(key: &DecodingKey) -> Result<M, Error> {
    M::new_from_slice(key.try_get_as_bytes()?).map_err(|_| new_error(ErrorKind::InvalidKeyFormat))
}

/// Whether `tag` is the HMAC of `msg` (constant-time, full length only).
fn hmac_matches<M: Mac + Clone>(keyed: &M, msg: &[u8], tag: &[u8]) -> bool {
    let mut mac = keyed.clone();
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

/// Largest RSA modulus accepted, in bits, and largest public exponent: the limits of the
/// `rsa` crate's `RsaPublicKey::new`, which the pure-Rust backend applied.
const RSA_MAX_BITS: i32 = 4096;
/// Smallest RSA modulus, in bits (RFC 7518 3.3).
const RSA_MIN_BITS: i32 = 2048;
const RSA_MAX_EXPONENT_BITS: i32 = 33;

fn rsa_key(key: &DecodingKey) -> Result<PKey<Public>, Error> {
    let invalid = |e: &dyn std::fmt::Display| new_error(ErrorKind::InvalidRsaKey(e.to_string()));
    let rsa = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            let n = BigNum::from_slice(n).map_err(|e| invalid(&e))?;
            let e = BigNum::from_slice(e).map_err(|e| invalid(&e))?;
            Rsa::from_public_components(n, e).map_err(|e| invalid(&e))?
        }
        DecodingKeyKind::SecretOrDer(der) => {
            Rsa::public_key_from_der_pkcs1(der).map_err(|e| invalid(&e))?
        }
    };
    let (n, e) = (rsa.n(), rsa.e());
    let odd = |b: &openssl::bn::BigNumRef| b.is_bit_set(0);
    if n.num_bits() > RSA_MAX_BITS || !odd(n) {
        return Err(invalid(&"modulus even or larger than 4096 bits"));
    }
    if n.num_bits() < RSA_MIN_BITS {
        return Err(invalid(&format!(
            "modulus of {} bits, under 2048 (RFC 7518 3.3)",
            n.num_bits()
        )));
    }
    // odd and at least 2: at least 3
    if e.num_bits() > RSA_MAX_EXPONENT_BITS || !odd(e) || e.num_bits() < 2 || e >= n {
        return Err(invalid(&"public exponent out of range"));
    }
    PKey::from_rsa(rsa).map_err(|e| invalid(&e))
}

/// The curves of ES256 and ES384.
#[derive(Clone, Copy)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    /// Bytes of a coordinate, and of r and of s.
    fn scalar(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// Built once: making a group costs about 5 % of a P-256 check.
    fn group(self) -> Option<&'static EcGroup> {
        static P256: OnceLock<Option<EcGroup>> = OnceLock::new();
        static P384: OnceLock<Option<EcGroup>> = OnceLock::new();
        let (cell, nid) = match self {
            Curve::P256 => (&P256, Nid::X9_62_PRIME256V1),
            Curve::P384 => (&P384, Nid::SECP384R1),
        };
        cell.get_or_init(|| EcGroup::from_curve_name(nid).ok())
            .as_ref()
    }
}

/// A public key on `curve`, given as an uncompressed point (0x04 || x || y).
fn ec_key(curve: Curve, bytes: &[u8]) -> Result<EcKey<Public>, Error> {
    let invalid = || new_error(ErrorKind::InvalidEcdsaKey);
    if bytes.len() != 1 + 2 * curve.scalar() || bytes[0] != 0x04 {
        return Err(invalid());
    }
    let group = curve.group().ok_or_else(invalid)?;
    let key = || -> Result<EcKey<Public>, ErrorStack> {
        // decoding checks that the point is on the curve
        let mut ctx = BigNumContext::new()?;
        let point = EcPoint::from_bytes(group, bytes, &mut ctx)?;
        EcKey::from_public_key(group, &point)
    };
    key().map_err(|_| invalid())
}

impl OpensslVerifier {
    fn check(&self, msg: &[u8], sig: &[u8]) -> Result<bool, ErrorStack> {
        match &self.check {
            Check::Rsa { key, md, pss } => {
                if sig.len() != key.size() {
                    return Ok(false);
                }
                let mut v = Verifier::new(*md, key)?;
                if *pss {
                    v.set_rsa_padding(Padding::PKCS1_PSS)?;
                    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                    v.set_rsa_mgf1_md(*md)?;
                } else {
                    v.set_rsa_padding(Padding::PKCS1)?;
                }
                v.verify_oneshot(sig, msg)
            }
            Check::Ec { key, md, scalar } => {
                if sig.len() != 2 * scalar {
                    return Ok(false);
                }
                let (r, s) = sig.split_at(*scalar);
                let sig = EcdsaSig::from_private_components(
                    BigNum::from_slice(r)?,
                    BigNum::from_slice(s)?,
                )?;
                let ok = sig.verify(&hash(*md, msg)?, key)?;
                // a refused signature (r or s out of range, say) leaves its reason in this
                // thread's OpenSSL error queue, where a later TLS call would find it
                drop(ErrorStack::get());
                Ok(ok)
            }
            Check::Ed(key) => Verifier::new_without_digest(key)?.verify_oneshot(sig, msg),
            Check::Hs256(keyed) => Ok(hmac_matches(keyed, msg, sig)),
            Check::Hs384(keyed) => Ok(hmac_matches(keyed, msg, sig)),
            Check::Hs512(keyed) => Ok(hmac_matches(keyed, msg, sig)),
        }
    }
}

impl signature::Verifier<Vec<u8>> for OpensslVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        match self.check(msg, sig) {
            Ok(true) => Ok(()),
            Ok(false) => Err(signature::Error::new()),
            Err(e) => Err(signature::Error::from_source(e)),
        }
    }
}

impl JwtVerifier for OpensslVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{decode, AlgorithmFamily, Validation};
    use openssl::pkey::Private;
    use openssl::sign::Signer;
    use serde_json::{json, Value};

    /// OpenSSL's special PSS salt lengths (`RSA_PSS_SALTLEN_DIGEST`, `_MAX`).
    const SALT_HASH_LENGTH: i32 = -1;
    const SALT_MAX_LENGTH: i32 = -2;

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    /// header.payload.signature, the signature made by `sign` over the first two.
    fn token(alg: &str, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    fn claims() -> Value {
        json!({"sub": "Cae-1", "exp": jsonwebtoken::get_current_timestamp() + 300})
    }

    fn check(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Value, ErrorKind> {
        assert!(install());
        decode::<Value>(token, key, &Validation::new(alg))
            .map(|d| d.claims)
            .map_err(|e| e.into_kind())
    }

    fn accepted(token: &str, key: &DecodingKey, alg: Algorithm) {
        assert_eq!(check(token, key, alg).unwrap()["sub"], "Cae-1", "{alg:?}");
    }

    fn refused(token: &str, key: &DecodingKey, alg: Algorithm) -> ErrorKind {
        match check(token, key, alg) {
            Ok(_) => panic!("{alg:?} accepted"),
            Err(e) => e,
        }
    }

    fn jwk(value: Value) -> DecodingKey {
        DecodingKey::from_jwk(&serde_json::from_value::<Jwk>(value).unwrap()).unwrap()
    }

    fn rsa_signer(bits: u32) -> (PKey<Private>, DecodingKey) {
        let rsa = Rsa::generate(bits).unwrap();
        let public =
            jwk(json!({"kty": "RSA", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())}));
        (PKey::from_rsa(rsa).unwrap(), public)
    }

    fn rsa_sign(
        key: &PKey<Private>,
        md: MessageDigest,
        pss: Option<i32>,
    ) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        move |input| {
            let mut s = Signer::new(md, key).unwrap();
            if let Some(salt) = pss {
                s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                s.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt)).unwrap();
                s.set_rsa_mgf1_md(md).unwrap();
            }
            s.sign_oneshot_to_vec(input).unwrap()
        }
    }

    fn ec_signer(nid: Nid) -> (PKey<Private>, DecodingKey, usize) {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let scalar = if nid == Nid::SECP384R1 { 48 } else { 32 };
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        ec.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut BigNumContext::new().unwrap())
            .unwrap();
        let crv = if scalar == 48 { "P-384" } else { "P-256" };
        let public = jwk(json!({"kty": "EC", "crv": crv,
            "x": b64(&x.to_vec_padded(scalar as i32).unwrap()),
            "y": b64(&y.to_vec_padded(scalar as i32).unwrap())}));
        (PKey::from_ec_key(ec).unwrap(), public, scalar)
    }

    /// ECDSA as JOSE wants it: r || s, each padded to the curve's size.
    fn ec_sign_raw(
        key: &PKey<Private>,
        md: MessageDigest,
        scalar: usize,
    ) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        move |input| {
            let der = ec_sign_der(key, md)(input);
            let sig = EcdsaSig::from_der(&der).unwrap();
            let mut raw = sig.r().to_vec_padded(scalar as i32).unwrap();
            raw.extend(sig.s().to_vec_padded(scalar as i32).unwrap());
            raw
        }
    }

    fn ec_sign_der(key: &PKey<Private>, md: MessageDigest) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        move |input| {
            let mut s = Signer::new(md, key).unwrap();
            s.sign_oneshot_to_vec(input).unwrap()
        }
    }

    fn hmac_sign(secret: &[u8], md: MessageDigest) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        move |input| {
            let key = PKey::hmac(secret).unwrap();
            let mut s = Signer::new(md, &key).unwrap();
            s.sign_oneshot_to_vec(input).unwrap()
        }
    }

    /// The same token with another payload and the old signature.
    fn tampered(token: &str) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = "CAdmin".into();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(claims.to_string().as_bytes()),
            parts[2]
        )
    }

    #[test]
    fn rsa_pkcs1_and_pss() {
        let (key, public) = rsa_signer(2048);
        let c = claims();
        for (alg, name, md) in [
            (Algorithm::RS256, "RS256", MessageDigest::sha256()),
            (Algorithm::RS384, "RS384", MessageDigest::sha384()),
            (Algorithm::RS512, "RS512", MessageDigest::sha512()),
        ] {
            let t = token(name, &c, rsa_sign(&key, md, None));
            accepted(&t, &public, alg);
            assert!(matches!(
                refused(&tampered(&t), &public, alg),
                ErrorKind::InvalidSignature
            ));
        }
        for (alg, name, md) in [
            (Algorithm::PS256, "PS256", MessageDigest::sha256()),
            (Algorithm::PS384, "PS384", MessageDigest::sha384()),
            (Algorithm::PS512, "PS512", MessageDigest::sha512()),
        ] {
            let t = token(name, &c, rsa_sign(&key, md, Some(SALT_HASH_LENGTH)));
            accepted(&t, &public, alg);
            assert!(matches!(
                refused(&tampered(&t), &public, alg),
                ErrorKind::InvalidSignature
            ));
            // JWA: the salt is as long as the hash, no shorter, no longer
            for salt in [0, SALT_MAX_LENGTH] {
                let t = token(name, &c, rsa_sign(&key, md, Some(salt)));
                assert!(matches!(
                    refused(&t, &public, alg),
                    ErrorKind::InvalidSignature
                ));
            }
        }
        // a PKCS#1 v1.5 signature under a PS256 header, and a PSS one under RS256
        let t = token("PS256", &c, rsa_sign(&key, MessageDigest::sha256(), None));
        refused(&t, &public, Algorithm::PS256);
        let pss = Some(SALT_HASH_LENGTH);
        let t = token("RS256", &c, rsa_sign(&key, MessageDigest::sha256(), pss));
        refused(&t, &public, Algorithm::RS256);
    }

    #[test]
    fn rsa_signature_of_the_wrong_length_is_refused() {
        let (key, public) = rsa_signer(2048);
        let t = token("RS256", &claims(), |input| {
            let mut sig = rsa_sign(&key, MessageDigest::sha256(), None)(input);
            sig.insert(0, 0);
            sig
        });
        refused(&t, &public, Algorithm::RS256);
    }

    #[test]
    fn rsa_keys_the_pure_rust_backend_refused_are_refused() {
        let t = format!(
            "{}.{}.c2ln",
            b64(br#"{"alg":"RS256"}"#),
            b64(claims().to_string().as_bytes())
        );
        let odd_4104_bits = {
            let mut n = vec![0xffu8; 513];
            n[0] = 0x80;
            n
        };
        let (_, ok) = rsa_signer(2048);
        let DecodingKeyKind::RsaModulusExponent { n, .. } = ok.kind() else {
            unreachable!()
        };
        for (n, e) in [
            (odd_4104_bits.as_slice(), &[1u8, 0, 1][..]),
            (n.as_slice(), &[1u8][..]),
            (n.as_slice(), &[2u8][..]),
            (n.as_slice(), &[1u8, 0, 0, 0, 0, 1][..]),
            (&[0x0eu8; 256][..], &[1u8, 0, 1][..]),
        ] {
            let key = DecodingKey::from_rsa_raw_components(n, e);
            assert!(matches!(
                refused(&t, &key, Algorithm::RS256),
                ErrorKind::InvalidRsaKey(_)
            ));
        }
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_refused() {
        let (key, public) = rsa_signer(1024);
        let t = token(
            "RS256",
            &claims(),
            rsa_sign(&key, MessageDigest::sha256(), None),
        );
        assert!(matches!(
            refused(&t, &public, Algorithm::RS256),
            ErrorKind::InvalidRsaKey(_)
        ));
        assert!(check_key(Algorithm::RS256, &public)
            .unwrap_err()
            .contains("under 2048"));
        assert!(check_key(Algorithm::RS256, &rsa_signer(2048).1).is_ok());
    }

    #[test]
    fn ecdsa_p256_and_p384_raw_signatures() {
        let c = claims();
        for (nid, alg, name, md) in [
            (
                Nid::X9_62_PRIME256V1,
                Algorithm::ES256,
                "ES256",
                MessageDigest::sha256(),
            ),
            (
                Nid::SECP384R1,
                Algorithm::ES384,
                "ES384",
                MessageDigest::sha384(),
            ),
        ] {
            let (key, public, scalar) = ec_signer(nid);
            let t = token(name, &c, ec_sign_raw(&key, md, scalar));
            accepted(&t, &public, alg);
            assert!(matches!(
                refused(&tampered(&t), &public, alg),
                ErrorKind::InvalidSignature
            ));
            // the DER form OpenSSL makes is not JOSE's
            let t = token(name, &c, ec_sign_der(&key, md));
            assert!(matches!(
                refused(&t, &public, alg),
                ErrorKind::InvalidSignature
            ));
        }
    }

    #[test]
    fn ecdsa_key_of_another_curve_is_refused() {
        let (_, p384, _) = ec_signer(Nid::SECP384R1);
        let (key, p256, _) = ec_signer(Nid::X9_62_PRIME256V1);
        let t = token(
            "ES256",
            &claims(),
            ec_sign_raw(&key, MessageDigest::sha256(), 32),
        );
        assert!(matches!(
            refused(&t, &p384, Algorithm::ES256),
            ErrorKind::InvalidEcdsaKey
        ));
        let t = token(
            "ES384",
            &claims(),
            ec_sign_raw(&key, MessageDigest::sha384(), 48),
        );
        assert!(matches!(
            refused(&t, &p256, Algorithm::ES384),
            ErrorKind::InvalidEcdsaKey
        ));
        // a point off the curve
        let mut bad = p256.try_get_as_bytes().unwrap().to_vec();
        bad[64] ^= 1;
        let t = token(
            "ES256",
            &claims(),
            ec_sign_raw(&key, MessageDigest::sha256(), 32),
        );
        refused(&t, &DecodingKey::from_ec_der(&bad), Algorithm::ES256);
    }

    #[test]
    fn ecdsa_out_of_range_signature_is_refused_and_leaves_no_openssl_error() {
        let (_, public, _) = ec_signer(Nid::X9_62_PRIME256V1);
        let t = token("ES256", &claims(), |_| vec![0u8; 64]);
        assert!(matches!(
            refused(&t, &public, Algorithm::ES256),
            ErrorKind::InvalidSignature
        ));
        assert!(ErrorStack::get().errors().is_empty());
    }

    #[test]
    fn eddsa() {
        let key = PKey::generate_ed25519().unwrap();
        let public =
            jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&key.raw_public_key().unwrap())}));
        let t = token("EdDSA", &claims(), |input| {
            Signer::new_without_digest(&key)
                .unwrap()
                .sign_oneshot_to_vec(input)
                .unwrap()
        });
        accepted(&t, &public, Algorithm::EdDSA);
        assert!(matches!(
            refused(&tampered(&t), &public, Algorithm::EdDSA),
            ErrorKind::InvalidSignature
        ));
        let short = DecodingKey::from_ed_components(&b64(&[9u8; 31])).unwrap();
        assert!(matches!(
            refused(&t, &short, Algorithm::EdDSA),
            ErrorKind::InvalidEddsaKey
        ));
    }

    #[test]
    fn hmac() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let key = DecodingKey::from_secret(secret);
        for (alg, name, md) in [
            (Algorithm::HS256, "HS256", MessageDigest::sha256()),
            (Algorithm::HS384, "HS384", MessageDigest::sha384()),
            (Algorithm::HS512, "HS512", MessageDigest::sha512()),
        ] {
            let t = token(name, &claims(), hmac_sign(secret, md));
            accepted(&t, &key, alg);
            assert!(matches!(
                refused(&tampered(&t), &key, alg),
                ErrorKind::InvalidSignature
            ));
            let other = DecodingKey::from_secret(b"another secret of thirty-two bytes");
            refused(&t, &other, alg);
        }
        // a truncated tag
        let t = token("HS256", &claims(), |i| {
            hmac_sign(secret, MessageDigest::sha256())(i)[..16].to_vec()
        });
        refused(&t, &key, Algorithm::HS256);
    }

    #[test]
    fn no_algorithm_confusion() {
        let (rsa, rsa_public) = rsa_signer(2048);
        let der = rsa.rsa().unwrap().public_key_to_der_pkcs1().unwrap();
        let n = rsa.rsa().unwrap().n().to_vec();
        // HS256 "signed" with what an attacker knows of the RSA key
        for secret in [der.as_slice(), n.as_slice()] {
            let t = token(
                "HS256",
                &claims(),
                hmac_sign(secret, MessageDigest::sha256()),
            );
            assert!(matches!(
                refused(&t, &rsa_public, Algorithm::HS256),
                ErrorKind::InvalidKeyFormat
            ));
            assert!(matches!(
                refused(&t, &DecodingKey::from_rsa_der(&der), Algorithm::HS256),
                ErrorKind::InvalidKeyFormat
            ));
        }
        // and the other way round: an HMAC secret never checks a public-key algorithm
        let secret = DecodingKey::from_secret(&der);
        for (alg, name) in [
            (Algorithm::RS256, "RS256"),
            (Algorithm::PS256, "PS256"),
            (Algorithm::ES256, "ES256"),
            (Algorithm::EdDSA, "EdDSA"),
        ] {
            let t = token(name, &claims(), |i| {
                hmac_sign(&der, MessageDigest::sha256())(i)
            });
            assert!(matches!(
                refused(&t, &secret, alg),
                ErrorKind::InvalidKeyFormat
            ));
        }
        let t = token(
            "RS256",
            &claims(),
            rsa_sign(&rsa, MessageDigest::sha256(), None),
        );
        // nor an EC key an RSA algorithm
        let (_, ec_public, _) = ec_signer(Nid::X9_62_PRIME256V1);
        assert!(matches!(
            refused(&t, &ec_public, Algorithm::RS256),
            ErrorKind::InvalidKeyFormat
        ));
    }

    #[test]
    fn a_key_checks_only_its_own_family() {
        let (_, rsa) = rsa_signer(2048);
        let (_, ec, _) = ec_signer(Nid::X9_62_PRIME256V1);
        let ed = PKey::generate_ed25519().unwrap().raw_public_key().unwrap();
        let ed = DecodingKey::from_ed_components(&b64(&ed)).unwrap();
        let hmac = DecodingKey::from_secret(&[1u8; 32]);
        let all = [
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        for (key, family) in [
            (&rsa, AlgorithmFamily::Rsa),
            (&ec, AlgorithmFamily::Ec),
            (&ed, AlgorithmFamily::Ed),
            (&hmac, AlgorithmFamily::Hmac),
        ] {
            for alg in all {
                let made = new_verifier(&alg, key);
                if alg.family() == family && alg != Algorithm::ES384 {
                    assert_eq!(made.unwrap().algorithm(), alg);
                } else {
                    assert!(made.is_err(), "{family:?} key for {alg:?}");
                }
            }
        }
    }

    #[test]
    fn none_is_not_an_algorithm() {
        let (_, public) = rsa_signer(2048);
        let t = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(claims().to_string().as_bytes())
        );
        refused(&t, &public, Algorithm::RS256);
    }

    #[test]
    fn signing_is_refused() {
        assert!(install());
        let key = jsonwebtoken::EncodingKey::from_secret(b"x");
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        assert!(jsonwebtoken::encode(&header, &claims(), &key).is_err());
    }

    #[test]
    fn thumbprints_use_openssl_digests() {
        assert!(install());
        let (_, public) = rsa_signer(2048);
        let jwk = Jwk::from_decoding_key(&public, None).unwrap();
        assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256).unwrap().len(), 43);
    }
}
