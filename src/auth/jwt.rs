//! JWTs issued elsewhere: the token names its issuer, the issuer's keys and rules decide, and
//! claims become the one `Identity` every method produces.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

use async_trait::async_trait;

use super::authorization::BearerToken;
use super::fetch::{EndpointFiles, HttpsEndpoint};
use super::jwks::{JwksFile, JwksReload, JwksUrl, KeySet, KeySource};
use super::method::{Assembly, Descriptor, Explained, MethodState, Sample};
use super::verifier::{Claim, Failure, Presented, Rejection, Verifier, NOT_CLAIMED};
use crate::config::{ClaimPath, Config, JwtConfig, JwtIssuerConfig, KeyError};
use crate::identity::{Identity, Method, Scheme};
use crate::originator_syntax::{validate_originator, OriginatorPattern};
use crate::reload::{FileKind, Reloadable};

/// Every asymmetric algorithm: the default when an issuer lists none.
const ASYMMETRIC: [Algorithm; 9] = [
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

/// The algorithms an issuer accepts, checked against where its keys come from.
fn check_issuer_config(c: &JwtIssuerConfig) -> Result<Vec<Algorithm>, String> {
    if c.issuer.is_empty() {
        return Err("`issuer` must not be empty".into());
    }
    if c.audiences.is_empty() || c.audiences.iter().any(String::is_empty) {
        return Err("expected at least one non-empty `audiences` value".into());
    }
    let sources = [
        c.jwks_file.is_some(),
        c.jwks_url.is_some(),
        c.secret_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err("expected exactly one of jwks_file, jwks_url, secret_file".into());
    }
    if let Some(url) = &c.jwks_url {
        if !url.starts_with("https://") {
            return Err(format!("jwks_url: expected an https:// URL, got {url:?}"));
        }
        if c.jwks_ca.is_none() {
            return Err("jwks_url needs jwks_ca (the CA bundle of the JWKS server)".into());
        }
    }
    let algorithms = match &c.algorithms {
        None if c.secret_file.is_some() => {
            return Err("secret_file needs `algorithms` (HS256, HS384 or HS512)".into())
        }
        None => ASYMMETRIC.to_vec(),
        Some(names) if names.is_empty() => return Err("`algorithms` must not be empty".into()),
        Some(names) => names
            .iter()
            .map(|n| {
                if n.eq_ignore_ascii_case("none") {
                    return Err("algorithm `none` is never accepted".to_string());
                }
                Algorithm::from_str(n).map_err(|_| {
                    format!("unknown algorithm {n:?}; expected RS256/384/512, PS256/384/512, ES256/384, EdDSA or HS256/384/512")
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let hmac = algorithms
        .iter()
        .filter(|a| a.family() == AlgorithmFamily::Hmac)
        .count();
    match (c.secret_file.is_some(), hmac) {
        (true, n) if n != algorithms.len() => {
            Err("with secret_file only HS256/HS384/HS512 are accepted".into())
        }
        (false, n) if n > 0 => Err(
            "HS* algorithms need secret_file: with public keys they would allow forged tokens"
                .into(),
        ),
        _ => Ok(algorithms),
    }
}

/// Why a JWT was refused; the text is safe to send back (no token content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Expired,
    Invalid(&'static str),
}

/// The `jwt` method: built when its section is written.
pub const METHOD: Descriptor = Descriptor {
    name: "jwt",
    scheme: Scheme::Bearer,
    files: &[FileKind::Jwks, FileKind::JwksCa],
    headers: &[],
    section: "auth.jwt",
    needs: Some("`auth.jwt.issuers`"),
    configured: |a| a.jwt.is_some(),
    validate: |a| a.jwt.as_ref().map_or(Ok(()), JwtConfig::validate),
    rate_limited: true,
    build: |c| match &c.auth.jwt {
        Some(config) => {
            let (auth, files) = JwtAuth::build(config)?;
            Ok(Some(Arc::new(JwtMethod {
                auth: Arc::new(auth),
                files,
            })))
        }
        None => Ok(None),
    },
};

/// The JWT verifier and the JWKS files of its issuers.
pub struct JwtMethod {
    auth: Arc<JwtAuth>,
    files: Vec<Arc<JwksFile>>,
}

impl MethodState for JwtMethod {
    /// Its JWKS files, and the CA files of its JWKS URLs.
    fn reloadables(self: Arc<Self>) -> Vec<Box<dyn Reloadable>> {
        let files = self
            .files
            .iter()
            .map(|f| Box::new(JwksReload(f.clone())) as Box<dyn Reloadable>);
        files.chain(self.auth.reloadables()).collect()
    }

    fn verifier(self: Arc<Self>, _: &Assembly<'_>) -> Option<Arc<dyn Verifier>> {
        Some(self.auth.clone())
    }

    fn summary(&self, c: &Config) -> Vec<String> {
        let mut lines = Vec::new();
        for issuer in c.auth.jwt.iter().flat_map(|j| &j.issuers) {
            let keys = match (&issuer.jwks_file, &issuer.jwks_url, &issuer.secret_file) {
                (Some(f), _, _) => format!("JWKS file {}", f.display()),
                (_, Some(u), _) => format!("JWKS URL {u} (fetched on first use)"),
                (_, _, Some(f)) => format!("shared secret {}", f.display()),
                _ => "no keys".into(),
            };
            let file = self.files.iter().find(|f| f.issuer == issuer.issuer);
            let loaded = file.map(|f| f.keys());
            lines.push(format!(
                "jwt: issuer {:?}, audiences {:?}, {keys}{}, originator from claim `{}`",
                issuer.issuer,
                issuer.audiences,
                loaded
                    .as_ref()
                    .map_or(String::new(), |k| format!(" ({})", k.summary())),
                issuer.originator_claim
            ));
            for skipped in loaded.iter().flat_map(|k| k.skipped()) {
                lines.push(format!("  WARNING: JWKS key skipped: {skipped}"));
            }
        }
        lines
    }

    fn explain(&self, sample: &Sample<'_>) -> Explained {
        Ok(
            match self
                .auth
                .identity_of_claims(sample.claims("the token's claims")?)
            {
                Ok(identity) => Ok(identity),
                Err(JwtError::Invalid(reason)) => Err(reason.to_string()),
                Err(JwtError::Expired) => Err("JWT expired".to_string()),
            },
        )
    }
}

struct Issuer {
    name: String,
    /// One per accepted algorithm: jsonwebtoken wants every algorithm of a validation to
    /// belong to the key's family.
    validations: Vec<(Algorithm, Validation)>,
    keys: KeySource,
    originator_claim: ClaimPath,
    originators_claim: Option<ClaimPath>,
    name_claim: ClaimPath,
    roles_claim: Option<ClaimPath>,
}

pub struct JwtAuth {
    issuers: Vec<Issuer>,
    verified: VerifiedCache,
}

/// Verified tokens are remembered at most this long (and never past their `exp`).
const VERIFIED_TTL: Duration = Duration::from_secs(300);
const VERIFIED_MAX: usize = 10_000;

/// Signature checks cost tens of µs (RSA-2048, P-256 with OpenSSL): a token seen again is
/// answered from here, keyed by a salted hash (the cache holds no token), for as long as its
/// issuer's keys are the very set that verified it.
struct VerifiedCache {
    salt: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], Verified>>,
}

#[derive(Clone)]
struct Verified {
    identity: Arc<Identity>,
    until: Instant,
    issuer: usize,
    /// The key set that verified it (`None`: a shared secret). Held, not just its address,
    /// so that a new set can never be mistaken for it.
    keys: Option<Arc<KeySet>>,
}

impl VerifiedCache {
    fn new() -> Result<Self, String> {
        let salt = crate::random::key().map_err(|e| e.to_string())?;
        Ok(VerifiedCache {
            salt,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, token: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(token.as_bytes());
        h.finalize().into()
    }

    fn get(&self, key: &[u8; 32]) -> Option<Verified> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).cloned()
    }

    fn put(&self, key: [u8; 32], verified: Verified) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= VERIFIED_MAX {
            let now = Instant::now();
            entries.retain(|_, v| v.until > now);
            if entries.len() >= VERIFIED_MAX {
                entries.clear();
            }
        }
        entries.insert(key, verified);
    }
}

impl JwtAuth {
    /// Builds the issuers. JWKS files come back empty, for the reloader's first load; JWKS
    /// URLs are fetched on first use; secret files are read now.
    pub fn build(config: &JwtConfig) -> Result<(Self, Vec<Arc<JwksFile>>), KeyError> {
        if !super::jwt_crypto::install() {
            return Err(KeyError::new(
                "auth.jwt",
                "the JWT library was set up with another crypto provider",
            ));
        }
        let mut issuers = Vec::new();
        let mut files = Vec::new();
        for c in &config.issuers {
            let invalid =
                |e: String| KeyError::new("auth.jwt.issuers", format!("{:?}: {e}", c.issuer));
            let algorithms = check_issuer_config(c).map_err(invalid)?;
            let validations = algorithms
                .iter()
                .map(|alg| {
                    let mut v = Validation::new(*alg);
                    v.leeway = config.leeway.as_secs();
                    v.validate_nbf = true;
                    v.set_issuer(&[&c.issuer]);
                    v.set_audience(&c.audiences);
                    v.set_required_spec_claims(&["exp", "iss", "aud"]);
                    (*alg, v)
                })
                .collect();
            let keys = if let Some(path) = &c.jwks_file {
                let file = Arc::new(JwksFile::new(path.to_path_buf(), &c.issuer));
                files.push(file.clone());
                KeySource::File(file)
            } else if let (Some(url), Some(ca)) = (&c.jwks_url, &c.jwks_ca) {
                let files = EndpointFiles {
                    ca: (
                        ca.to_path_buf(),
                        FileKind::JwksCa,
                        "auth.jwt.issuers[].jwks_ca",
                    ),
                    client: None,
                    basic: None,
                    metric_kinds: (format!("jwks_ca:{}", c.issuer), String::new()),
                };
                let endpoint = HttpsEndpoint::new(url, files, c.jwks_timeout)
                    .map_err(|e| invalid(format!("jwks_url: {e}")))?;
                KeySource::Url(Box::new(JwksUrl::new(
                    Arc::new(endpoint),
                    &c.issuer,
                    c.jwks_refresh,
                    c.jwks_min_refetch,
                )))
            } else if let Some(path) = &c.secret_file {
                let secret = std::fs::read(path)
                    .map_err(|e| invalid(format!("{path}: cannot read: {e}")))?;
                let secret = secret.trim_ascii_end();
                if secret.len() < 32 {
                    return Err(invalid(format!(
                        "{path}: expected a secret of at least 32 bytes"
                    )));
                }
                KeySource::Secret(DecodingKey::from_secret(secret))
            } else {
                return Err(invalid("no keys".into()));
            };
            issuers.push(Issuer {
                name: c.issuer.clone(),
                validations,
                keys,
                originator_claim: c.originator_claim.clone(),
                originators_claim: c.originators_claim.clone(),
                name_claim: c.name_claim.clone().unwrap_or(c.originator_claim.clone()),
                roles_claim: c.roles_claim.clone(),
            });
        }
        let verified = VerifiedCache::new().map_err(|e| KeyError::new("auth.jwt", e))?;
        Ok((JwtAuth { issuers, verified }, files))
    }

    /// The files of the issuers' JWKS URLs (their CAs), reloaded like the other files.
    pub fn reloadables(&self) -> Vec<Box<dyn Reloadable>> {
        self.issuers
            .iter()
            .filter_map(|i| match &i.keys {
                KeySource::Url(url) => Some(url.reloadables()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub async fn verify_token(&self, token: &str) -> Result<Arc<Identity>, JwtError> {
        let key = self.verified.key(token);
        if let Some(hit) = self.verified.get(&key) {
            let same_keys = match (&hit.keys, self.current_keys(hit.issuer)) {
                (None, Some(None)) => true,
                (Some(then), Some(Some(now))) => Arc::ptr_eq(then, &now),
                _ => false,
            };
            if same_keys && hit.until > Instant::now() {
                return Ok(hit.identity);
            }
        }
        let verified = self.verify_uncached(token).await?;
        let identity = verified.identity.clone();
        self.verified.put(key, verified);
        Ok(identity)
    }

    /// The identity a token with these (already verified) claims proves: its issuer found by
    /// `iss` as for a token, then the same claim reading. For `explain`, which has the claims
    /// and not the token; nothing is verified here.
    pub fn identity_of_claims(&self, claims: Value) -> Result<Arc<Identity>, JwtError> {
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.name == iss)
            .ok_or(JwtError::Invalid("JWT from an unknown issuer"))?;
        claims_identity(issuer, claims)
    }

    /// The key set an issuer uses now (no fetch): `Some(None)` for a shared secret, `None`
    /// when there is none.
    fn current_keys(&self, issuer: usize) -> Option<Option<Arc<KeySet>>> {
        match &self.issuers.get(issuer)?.keys {
            KeySource::File(file) => Some(Some(file.keys())),
            KeySource::Url(url) => url.current().map(Some),
            KeySource::Secret(_) => Some(None),
        }
    }

    /// The full check, without the cache (also for benchmarks).
    pub async fn verify_uncached_identity(&self, token: &str) -> Result<Arc<Identity>, JwtError> {
        self.verify_uncached(token).await.map(|v| v.identity)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Verified, JwtError> {
        const MALFORMED: JwtError = JwtError::Invalid("malformed JWT");
        let _span = crate::telemetry::child("JWT verification");
        let header = jsonwebtoken::decode_header(token).map_err(|_| MALFORMED)?;
        // RFC 7515 4.1.11: every extension `crit` names must be understood; none is here
        if header.crit.is_some() {
            return Err(JwtError::Invalid("unsupported critical header"));
        }
        let iss = unverified_issuer(token).ok_or(JwtError::Invalid("JWT without iss"))?;
        let (index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == iss)
            .ok_or(JwtError::Invalid("JWT from an unknown issuer"))?;
        let Some((_, validation)) = issuer.validations.iter().find(|(a, _)| *a == header.alg)
        else {
            return Err(JwtError::Invalid("JWT algorithm not accepted"));
        };
        let keys = match &issuer.keys {
            KeySource::File(file) => Some(file.keys()),
            KeySource::Url(url) => url.keys(header.kid.as_deref()).await,
            KeySource::Secret(secret) => {
                let claims = decode(token, &[secret], validation)?;
                return verified(index, None, issuer, claims);
            }
        };
        let keys = keys.ok_or(JwtError::Invalid("issuer keys not available"))?;
        let candidates = keys.candidates(header.kid.as_deref(), header.alg);
        if candidates.is_empty() {
            return Err(match header.kid.as_deref() {
                // the key exists, but its type, curve or `alg` is not the token's algorithm
                Some(kid) if keys.has_kid(kid) => {
                    JwtError::Invalid("JWT algorithm does not fit its key")
                }
                _ => JwtError::Invalid("JWT signed with an unknown key"),
            });
        }
        let claims = decode(token, &candidates, validation)?;
        verified(index, Some(keys), issuer, claims)
    }
}

/// The cache entry of a token that passed every check: kept until its `exp`, at most
/// `VERIFIED_TTL`.
fn verified(
    index: usize,
    keys: Option<Arc<KeySet>>,
    issuer: &Issuer,
    claims: Value,
) -> Result<Verified, JwtError> {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = claims
        .get("exp")
        .and_then(Value::as_u64)
        .map_or(0, |exp| exp.saturating_sub(unix_now));
    Ok(Verified {
        identity: claims_identity(issuer, claims)?,
        until: Instant::now() + VERIFIED_TTL.min(Duration::from_secs(left)),
        issuer: index,
        keys,
    })
}

/// `iss` read before the signature is checked, only to pick the issuer whose rules then
/// verify everything (including that `iss` again).
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

fn decode(token: &str, keys: &[&DecodingKey], validation: &Validation) -> Result<Value, JwtError> {
    use jsonwebtoken::errors::ErrorKind;
    let mut last = JwtError::Invalid("invalid JWT signature");
    for key in keys {
        match jsonwebtoken::decode::<Value>(token, key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                last = match e.kind() {
                    ErrorKind::ExpiredSignature => return Err(JwtError::Expired),
                    ErrorKind::ImmatureSignature => {
                        return Err(JwtError::Invalid("JWT not valid yet (nbf)"))
                    }
                    ErrorKind::InvalidIssuer => return Err(JwtError::Invalid("wrong JWT issuer")),
                    ErrorKind::InvalidAudience => {
                        return Err(JwtError::Invalid("JWT not for this audience"))
                    }
                    ErrorKind::MissingRequiredClaim(_) => {
                        return Err(JwtError::Invalid("JWT without exp, iss or aud"))
                    }
                    ErrorKind::InvalidAlgorithm => JwtError::Invalid("JWT algorithm not accepted"),
                    _ => JwtError::Invalid("invalid JWT signature"),
                };
            }
        }
    }
    Err(last)
}

fn claims_identity(issuer: &Issuer, claims: Value) -> Result<Arc<Identity>, JwtError> {
    let originator = issuer
        .originator_claim
        .get(&claims)
        .and_then(Value::as_str)
        .ok_or(JwtError::Invalid(
            "JWT originator claim missing or not a string",
        ))?;
    validate_originator(originator)
        .map_err(|_| JwtError::Invalid("JWT originator claim is not a usable originator"))?;
    let name = issuer
        .name_claim
        .get(&claims)
        .and_then(Value::as_str)
        .unwrap_or(originator);
    let strings = |path: &Option<ClaimPath>| -> Vec<String> {
        match path.as_ref().and_then(|p| p.get(&claims)) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    let also_allowed = strings(&issuer.originators_claim)
        .iter()
        .map(|p| OriginatorPattern::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| JwtError::Invalid("JWT originators claim holds an unusable pattern"))?;
    Ok(Arc::new(Identity {
        name: name.to_owned(),
        proven_by: Method::Jwt,
        originator: originator.to_owned(),
        also_allowed,
        roles: strings(&issuer.roles_claim),
    }))
}

/// Three base64url segments whose first one decodes to a JSON object with `alg`.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .is_some_and(|h| h.get("alg").is_some())
}

/// The JWT method: tokens of the JWT form, checked with their issuer's keys.
#[async_trait]
impl Verifier for JwtAuth {
    fn method(&self) -> Method {
        Method::Jwt
    }

    fn claims(&self, presented: &Presented<'_>) -> Claim<()> {
        presented.bearer(Method::Jwt).unit()
    }

    async fn verify(&self, presented: &Presented<'_>) -> Result<Arc<Identity>, Rejection> {
        let Claim::Mine(BearerToken::Token(token)) = presented.bearer(Method::Jwt) else {
            return Err(NOT_CLAIMED);
        };
        match self.verify_token(token).await {
            Ok(identity) => Ok(identity),
            Err(JwtError::Expired) => Err(Rejection::counted(Failure::Expired, "JWT expired")),
            Err(JwtError::Invalid(reason)) => {
                Err(Rejection::counted(Failure::BadCredentials, reason))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer_config(yaml: &str) -> JwtIssuerConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn algorithm_policy() {
        let ok = issuer_config("issuer: a\naudiences: [b]\njwks_file: k.json\n");
        assert_eq!(check_issuer_config(&ok).unwrap().len(), 9);
        for (yaml, why) in [
            (
                "issuer: a\naudiences: [b]\njwks_file: k\nalgorithms: [none]",
                "never",
            ),
            (
                "issuer: a\naudiences: [b]\njwks_file: k\nalgorithms: [HS256]",
                "secret_file",
            ),
            ("issuer: a\naudiences: [b]\nsecret_file: s", "algorithms"),
            (
                "issuer: a\naudiences: [b]\nsecret_file: s\nalgorithms: [HS256, RS256]",
                "only HS",
            ),
            (
                "issuer: a\naudiences: [b]\njwks_file: k\njwks_url: https://x",
                "exactly one",
            ),
            ("issuer: a\naudiences: []\njwks_file: k", "audiences"),
            (
                "issuer: a\naudiences: [b]\njwks_url: http://x\njwks_ca: c",
                "https",
            ),
            ("issuer: a\naudiences: [b]\njwks_url: https://x", "jwks_ca"),
            (
                "issuer: a\naudiences: [b]\njwks_file: k\nalgorithms: [XY256]",
                "unknown",
            ),
        ] {
            let err = check_issuer_config(&issuer_config(yaml)).unwrap_err();
            assert!(err.contains(why), "{yaml}: {err}");
        }
    }

    /// Through `JwtAuth::build`, which installs the OpenSSL provider: a PS256 token from a JWKS
    /// file and an HS256 one from a shared secret pass; the same HS256 token refused under the
    /// JWKS issuer, and a tampered one.
    #[tokio::test]
    async fn build_installs_the_openssl_provider() {
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::rsa::{Padding, Rsa};
        use openssl::sign::{RsaPssSaltlen, Signer};

        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let (n, e) = (
            rsa.rsa().unwrap().n().to_vec(),
            rsa.rsa().unwrap().e().to_vec(),
        );
        let jwks =
            serde_json::json!({"keys": [{"kty": "RSA", "kid": "r", "n": b64(&n), "e": b64(&e)}]});
        let dir = tempfile::tempdir().unwrap();
        let (jwks_path, secret_path) = (dir.path().join("jwks.json"), dir.path().join("secret"));
        let secret = [b's'; 32];
        std::fs::write(&secret_path, secret).unwrap();
        let config: JwtConfig = serde_yaml_ng::from_str(&format!(
            "issuers:\n  - {{issuer: a, audiences: [p], jwks_file: {}}}\n  \
             - {{issuer: s, audiences: [p], secret_file: {}, algorithms: [HS256]}}\n",
            jwks_path.display(),
            secret_path.display()
        ))
        .unwrap();
        let (auth, files) = JwtAuth::build(&config).unwrap();
        let reload = crate::auth::jwks::JwksReload(files[0].clone());
        crate::reload::Reloadable::apply(&reload, &[jwks.to_string().into_bytes()]).unwrap();

        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let token = |alg: &str, iss: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>| {
            let header = serde_json::json!({"alg": alg, "kid": "r"}).to_string();
            let claims = serde_json::json!({"iss": iss, "aud": "p", "sub": "Cae-1", "exp": exp});
            let input = format!(
                "{}.{}",
                b64(header.as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = sign(input.as_bytes());
            format!("{input}.{}", b64(&sig))
        };
        let ps256 = token("PS256", "a", &|input| {
            let mut s = Signer::new(MessageDigest::sha256(), &rsa).unwrap();
            s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
            s.sign_oneshot_to_vec(input).unwrap()
        });
        let hs256 = |iss| {
            token("HS256", iss, &|input| {
                let key = PKey::hmac(&secret).unwrap();
                Signer::new(MessageDigest::sha256(), &key)
                    .unwrap()
                    .sign_oneshot_to_vec(input)
                    .unwrap()
            })
        };
        assert_eq!(auth.verify_token(&ps256).await.unwrap().originator, "Cae-1");
        assert_eq!(
            auth.verify_token(&hs256("s")).await.unwrap().originator,
            "Cae-1"
        );
        assert_eq!(
            auth.verify_token(&hs256("a")).await.unwrap_err(),
            JwtError::Invalid("JWT algorithm not accepted")
        );
        let mut tampered = ps256.clone();
        tampered.replace_range(ps256.len() - 5..ps256.len() - 4, "A");
        if tampered == ps256 {
            tampered.replace_range(ps256.len() - 5..ps256.len() - 4, "B");
        }
        assert!(auth.verify_token(&tampered).await.is_err());
    }

    #[test]
    fn jwt_shape() {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        assert!(looks_like_jwt(&format!("{header}.e30.c2ln")));
        assert!(!looks_like_jwt("3d7b084d-1259-4f6e-a6a5-0c4a2b1b7e6f"));
        assert!(!looks_like_jwt(&format!("{header}.e30")));
        assert!(!looks_like_jwt("a.b.c"));
    }
}
