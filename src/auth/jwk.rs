//! One key of a JWKS document, read as RFC 7517 and 7518 say: a key this proxy cannot or must
//! not use to check a signature is left out with its reason (RFC 7517 5: keys a recipient does
//! not understand are ignored), never a reason to refuse the whole set.
//!
//! Usable: `kty` RSA (2048 to 4096 bits), EC on P-256 or P-384 (coordinates of the curve's
//! size, a point on it), OKP Ed25519; `use` absent or `sig`; `key_ops` absent or with `verify`;
//! `alg` absent or a signature algorithm of the key's type and curve; no private members.
//! A key checks only the algorithms that fit it: RSA keys RS*/PS* (only its own `alg` when it
//! names one), P-256 ES256, P-384 ES384, Ed25519 EdDSA.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::jwt_crypto::check_key;

/// The type (and curve) of a usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }

    /// An algorithm the key is checked with when it is loaded.
    fn any_algorithm(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::P256 => Algorithm::ES256,
            KeyKind::P384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// A key that can check signatures.
pub struct SigningKey {
    pub kid: Option<String>,
    kind: KeyKind,
    /// The JWK's `alg`: then the only algorithm the key checks.
    alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl SigningKey {
    /// Whether this key may check a token signed with `alg`.
    pub fn verifies(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// A key left out of a set, and why (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Position in the document's `keys` array.
    pub index: usize,
    pub kid: Option<String>,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => {
                let shown: String = kid.chars().take(64).collect();
                write!(f, "key {shown:?} (keys[{}]): {}", self.index, self.reason)
            }
            None => write!(f, "keys[{}] (no kid): {}", self.index, self.reason),
        }
    }
}

/// The usable key at `keys[index]`, or why it is skipped.
pub fn parse(index: usize, jwk: &Value) -> Result<SigningKey, Skipped> {
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    let skipped = |reason: String| Skipped {
        index,
        kid: kid.clone(),
        reason,
    };
    let Some(members) = jwk.as_object() else {
        return Err(skipped("not a JSON object".into()));
    };
    let (kind, key) = usable(members).map_err(skipped)?;
    Ok(SigningKey {
        kid: kid.clone(),
        kind,
        alg: algorithm(members, kind).map_err(skipped)?,
        key,
    })
}

fn text<'a>(members: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match members.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{name}` is not a string")),
    }
}

/// The key's type and material, after the members that restrict its use.
fn usable(members: &Map<String, Value>) -> Result<(KeyKind, DecodingKey), String> {
    text(members, "kid")?;
    if let Some(usage) = text(members, "use")? {
        if usage != "sig" {
            return Err(format!("`use` is {usage:?}, not \"sig\""));
        }
    }
    if let Some(ops) = members.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("`key_ops` does not include \"verify\"".into());
        }
    }
    // a published private key is no one's signing key any more
    if ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
        .iter()
        .any(|m| members.contains_key(*m))
        && text(members, "kty")? != Some("oct")
    {
        return Err("holds private key material".into());
    }
    let kty = text(members, "kty")?.ok_or("no `kty`")?;
    let crv = text(members, "crv")?;
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(members, name)?.ok_or_else(|| format!("no `{name}`"))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("`{name}` is not base64url"))
    };
    let (kind, key) = match (kty, crv) {
        ("RSA", _) => (
            KeyKind::Rsa,
            DecodingKey::from_rsa_raw_components(&bytes("n")?, &bytes("e")?),
        ),
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (kind, size) = match crv {
                "P-256" => (KeyKind::P256, 32),
                _ => (KeyKind::P384, 48),
            };
            let (x, y) = (bytes("x")?, bytes("y")?);
            // RFC 7518 6.2.1.2: each coordinate is exactly the curve's size
            if x.len() != size || y.len() != size {
                return Err(format!(
                    "coordinates are not {size} bytes, as {crv} coordinates are"
                ));
            }
            let point = [&[0x04u8][..], &x, &y].concat();
            (kind, DecodingKey::from_ec_der(&point))
        }
        ("EC", crv) => return Err(format!("curve {crv:?} is not P-256 or P-384")),
        ("OKP", Some("Ed25519")) => {
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key is 32 bytes".into());
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        ("OKP", crv) => return Err(format!("curve {crv:?} is not Ed25519")),
        ("oct", _) => {
            return Err("a symmetric (oct) key: whoever reads the JWKS could sign with it".into())
        }
        (other, _) => return Err(format!("key type {other:?} is not one this proxy verifies")),
    };
    check_key(kind.any_algorithm(), &key).map_err(|e| format!("not usable: {e}"))?;
    Ok((kind, key))
}

/// The JWK's `alg`, when it names a signature algorithm this key can check.
fn algorithm(members: &Map<String, Value>, kind: KeyKind) -> Result<Option<Algorithm>, String> {
    let Some(name) = text(members, "alg")? else {
        return Ok(None);
    };
    let alg = Algorithm::from_str(name)
        .ok()
        .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        .ok_or_else(|| {
            format!("`alg` {name:?} is not a signature algorithm this proxy verifies")
        })?;
    if !kind.fits(alg) {
        return Err(format!("`alg` {name:?} does not fit a {kind:?} key"));
    }
    Ok(Some(alg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::rsa::Rsa;
    use serde_json::json;

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn rsa(bits: u32) -> Value {
        let rsa = Rsa::generate(bits).unwrap();
        json!({"kty": "RSA", "kid": "r", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
    }

    fn ec(nid: Nid, size: i32) -> Value {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut BigNumContext::new().unwrap())
            .unwrap();
        let crv = if size == 32 { "P-256" } else { "P-384" };
        json!({"kty": "EC", "crv": crv, "x": b64(&x.to_vec_padded(size).unwrap()),
               "y": b64(&y.to_vec_padded(size).unwrap())})
    }

    fn with(mut jwk: Value, member: &str, value: Value) -> Value {
        jwk[member] = value;
        jwk
    }

    fn reason(jwk: &Value) -> String {
        match parse(0, jwk) {
            Ok(_) => panic!("accepted: {jwk}"),
            Err(s) => s.reason,
        }
    }

    #[test]
    fn usable_keys_and_the_algorithms_they_check() {
        crate::auth::jwt_crypto::install();
        let key = parse(0, &rsa(2048)).unwrap();
        assert!(key.verifies(Algorithm::RS256) && key.verifies(Algorithm::PS512));
        assert!(!key.verifies(Algorithm::ES256));
        let key = parse(0, &with(rsa(2048), "alg", json!("RS256"))).unwrap();
        assert!(key.verifies(Algorithm::RS256));
        assert!(
            !key.verifies(Algorithm::PS256),
            "an RS256 key is not a PS256 key"
        );
        let p256 = parse(0, &ec(Nid::X9_62_PRIME256V1, 32)).unwrap();
        assert!(p256.verifies(Algorithm::ES256) && !p256.verifies(Algorithm::ES384));
        let p384 = parse(0, &ec(Nid::SECP384R1, 48)).unwrap();
        assert!(p384.verifies(Algorithm::ES384) && !p384.verifies(Algorithm::ES256));
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "key_ops": ["verify"],
            "x": b64(&openssl::pkey::PKey::generate_ed25519().unwrap().raw_public_key().unwrap())});
        assert!(parse(0, &ed).unwrap().verifies(Algorithm::EdDSA));
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        crate::auth::jwt_crypto::install();
        let p256 = ec(Nid::X9_62_PRIME256V1, 32);
        // a P-384 key labelled P-256
        let mislabelled = with(ec(Nid::SECP384R1, 48), "crv", json!("P-256"));
        let mut off_curve = p256.clone();
        let mut y = URL_SAFE_NO_PAD
            .decode(off_curve["y"].as_str().unwrap())
            .unwrap();
        y[31] ^= 1;
        off_curve["y"] = json!(b64(&y));
        let cases = [
            (rsa(1024), "under 2048"),
            (with(rsa(2048), "use", json!("enc")), "use"),
            (with(rsa(2048), "key_ops", json!(["encrypt"])), "key_ops"),
            (with(rsa(2048), "alg", json!("RSA-OAEP")), "RSA-OAEP"),
            (with(rsa(2048), "alg", json!("ES256")), "does not fit"),
            (with(rsa(2048), "alg", json!("HS256")), "HS256"),
            (with(rsa(2048), "d", json!("AAAA")), "private"),
            (with(p256.clone(), "alg", json!("ES384")), "does not fit"),
            (mislabelled, "32 bytes"),
            (off_curve, "not usable"),
            (with(p256, "crv", json!("secp256k1")), "secp256k1"),
            (
                json!({"kty": "OKP", "crv": "Ed448", "x": b64(&[1; 57])}),
                "Ed448",
            ),
            (json!({"kty": "oct", "k": b64(&[1; 32])}), "symmetric"),
            (
                json!({"kty": "AKP", "alg": "ML-DSA-44", "pub": "AAAA"}),
                "AKP",
            ),
            (json!({"kid": "x"}), "kty"),
            (json!("a string"), "object"),
            (
                json!({"kty": "RSA", "kid": 7, "n": "AQAB", "e": "AQAB"}),
                "kid",
            ),
        ];
        for (jwk, why) in cases {
            let r = reason(&jwk);
            assert!(r.contains(why), "{jwk}: {r:?} should say {why:?}");
        }
    }

    #[test]
    fn a_skipped_key_is_named_by_kid_or_position() {
        let s = parse(3, &json!({"kty": "AKP", "kid": "pq-1"}))
            .err()
            .unwrap();
        assert!(s.to_string().starts_with("key \"pq-1\" (keys[3]): "), "{s}");
        let s = parse(4, &json!({"kty": "AKP"})).err().unwrap();
        assert!(s.to_string().starts_with("keys[4] (no kid): "), "{s}");
    }
}
