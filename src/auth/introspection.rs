//! Outsourced token verification: a token only an identity service can judge is sent to its
//! endpoint (RFC 7662 shape: POST `token=…` → `{"active": true, "sub": …, "exp": …}`). An
//! active answer is also checked: `exp`, `nbf` and `iat` are RFC 7519 NumericDates (anything
//! else makes it inactive), and `aud`, `iss` and `token_type` when the config names them.
//! Answers are cached (positive until the smaller of `exp` and `cache_ttl`, negative for
//! `negative_ttl`), concurrent requests with the same token share one call, and an endpoint that
//! is down or slow fails closed. At most `max_concurrent` calls run at once (over kept-alive
//! connections), `max_queued` wait; beyond, a request is refused without a call. A failing
//! endpoint is logged at most once per [`LOG_INTERVAL`], with the count of the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::authorization::BearerToken;
use super::fetch::{EndpointFiles, FetchError, HttpsEndpoint};
use super::method::{Assembly, Descriptor, Explained, MethodState, Sample};
use super::queue::VerifyQueue;
use super::verifier::{Claim, Failure, Presented, Rejection, Verifier, NOT_CLAIMED};
use crate::config::{ClaimPath, Config, IntrospectionConfig, KeyError};
use crate::identity::{Identity, Method, Scheme};
use crate::log_limit::{suppressed_note, LogLimit};
use crate::metrics;
use crate::originator_syntax::validate_originator;
use crate::reload::{FileKind, Reloadable};

/// Cached answers kept at most; beyond, expired ones are dropped, then all.
const MAX_CACHED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectionError {
    /// The endpoint says the token is not active (unknown, expired, revoked).
    Inactive,
    /// Active, but the answer gives no usable originator.
    Unusable(&'static str),
    /// Active, but not for this proxy: another audience, issuer or token type.
    NotForUs(&'static str),
    /// No answer: endpoint down, slow or broken. Never an admission.
    Unavailable,
    /// Every call slot and the queue were taken: no call was made.
    Busy,
}

impl IntrospectionError {
    /// The reason a client is given.
    pub fn reason(self) -> &'static str {
        match self {
            IntrospectionError::Inactive => "token not active",
            IntrospectionError::Unusable(reason) | IntrospectionError::NotForUs(reason) => reason,
            IntrospectionError::Unavailable => "token verification service unavailable",
            IntrospectionError::Busy => "too many token verifications in progress; try again",
        }
    }
}

#[derive(Clone)]
enum Answer {
    Active(Arc<Identity>, Instant),
    Refused(IntrospectionError, Instant),
    /// Not cached beyond the requests that waited for this call.
    Unavailable,
    /// No call made (the queue was full); not cached either.
    Busy,
}

impl Answer {
    fn expired(&self, now: Instant) -> bool {
        match self {
            Answer::Active(_, until) | Answer::Refused(_, until) => *until <= now,
            Answer::Unavailable | Answer::Busy => true,
        }
    }
}

/// The `introspection` method: built when its section is written.
pub const METHOD: Descriptor = Descriptor {
    name: "introspection",
    scheme: Scheme::Bearer,
    files: &[
        FileKind::IntrospectionCa,
        FileKind::IntrospectionClientCert,
        FileKind::IntrospectionCredentials,
    ],
    headers: &[],
    section: "auth.introspection",
    needs: Some("`auth.introspection.url` and `ca`"),
    configured: |a| a.introspection.is_some(),
    validate: |a| {
        a.introspection
            .as_ref()
            .map_or(Ok(()), IntrospectionConfig::validate)
    },
    rate_limited: true,
    build: |c| match &c.auth.introspection {
        Some(i) => match Introspection::build(i) {
            Ok(built) => Ok(Some(Arc::new(built))),
            Err(m) => Err(KeyError::new("auth.introspection", m)),
        },
        None => Ok(None),
    },
};

impl MethodState for Introspection {
    /// Its CA, client certificate and password files.
    fn reloadables(self: Arc<Self>) -> Vec<Box<dyn Reloadable>> {
        Introspection::reloadables(&self)
    }

    fn verifier(self: Arc<Self>, _: &Assembly<'_>) -> Option<Arc<dyn Verifier>> {
        Some(self)
    }

    fn summary(&self, c: &Config) -> Vec<String> {
        let Some(intro) = &c.auth.introspection else {
            return Vec::new();
        };
        let mut lines = vec![format!(
            "introspection: {} (timeout {:?}, cache {:?}, {} calls at once, {} queued), originator from field `{}`{}",
            intro.url,
            intro.timeout,
            intro.cache_ttl,
            intro.max_concurrent,
            intro.max_queued,
            intro.originator_field,
            if intro.plain_bearer {
                ", plain bearer tokens too"
            } else {
                ""
            }
        )];
        if !intro.audiences.is_empty() || intro.issuer.is_some() || !intro.token_types.is_empty() {
            lines.push(format!(
                "introspection answers need: audiences {:?}, issuer {}, token types {:?}",
                intro.audiences,
                intro
                    .issuer
                    .as_deref()
                    .map_or("(any)".to_string(), |i| format!("{i:?}")),
                intro.token_types
            ));
        }
        lines
    }

    fn explain(&self, sample: &Sample<'_>) -> Explained {
        let answer = sample.claims("the introspection endpoint's answer")?;
        Ok(self
            .identity_of_answer(&answer)
            .map_err(|e| e.reason().to_string()))
    }
}

pub struct Introspection {
    endpoint: Arc<HttpsEndpoint>,
    originator_field: ClaimPath,
    name_field: ClaimPath,
    operator_field: Option<ClaimPath>,
    audiences: Vec<String>,
    issuer: Option<String>,
    token_types: Vec<String>,
    leeway: f64,
    cache_ttl: Duration,
    negative_ttl: Duration,
    /// Keyed by a salted hash of the token: the cache never holds a token.
    cache: Mutex<HashMap<[u8; 32], Arc<OnceCell<Answer>>>>,
    salt: [u8; 32],
    queue: VerifyQueue,
    failures_logged: LogLimit,
}

/// A failing endpoint is logged at most this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Introspection {
    pub fn build(c: &IntrospectionConfig) -> Result<Self, String> {
        let client = match (&c.client_cert, &c.client_key) {
            (Some(cert), Some(key)) => Some((
                cert.to_path_buf(),
                key.to_path_buf(),
                FileKind::IntrospectionClientCert,
                "auth.introspection.client_cert",
            )),
            _ => None,
        };
        let basic = match (&c.basic_user, &c.basic_password_file) {
            (Some(user), Some(file)) => Some((
                user.clone(),
                file.to_path_buf(),
                FileKind::IntrospectionCredentials,
                "auth.introspection.basic_password_file",
            )),
            _ => None,
        };
        let files = EndpointFiles {
            ca: (
                c.ca.to_path_buf(),
                FileKind::IntrospectionCa,
                "auth.introspection.ca",
            ),
            client,
            basic,
            metric_kinds: ("introspection_ca".into(), "introspection_client".into()),
        };
        let endpoint = Arc::new(HttpsEndpoint::new(&c.url, files, c.timeout)?);
        let salt = crate::random::key().map_err(|e| e.to_string())?;
        Ok(Introspection {
            endpoint,
            originator_field: c.originator_field.clone(),
            name_field: c.name_field.clone().unwrap_or(c.originator_field.clone()),
            operator_field: c.operator_field.clone(),
            audiences: c.audiences.clone(),
            issuer: c.issuer.clone(),
            token_types: c.token_types.clone(),
            leeway: c.leeway.as_secs_f64(),
            cache_ttl: c.cache_ttl,
            negative_ttl: c.negative_ttl,
            cache: Mutex::new(HashMap::new()),
            salt,
            queue: VerifyQueue::new("introspection", c.max_concurrent, c.max_queued),
            failures_logged: LogLimit::new(LOG_INTERVAL),
        })
    }

    /// The endpoint's files (CA, client certificate, password), reloaded like the other files.
    pub fn reloadables(&self) -> Vec<Box<dyn Reloadable>> {
        self.endpoint.reloadables()
    }

    pub async fn introspect(&self, token: &str) -> Result<Arc<Identity>, IntrospectionError> {
        let key = self.cache_key(token);
        let cell = self.cell(key);
        let answer = cell.get_or_init(|| self.call(token)).await.clone();
        match answer {
            Answer::Active(identity, _) => Ok(identity),
            Answer::Refused(e, _) => Err(e),
            Answer::Unavailable | Answer::Busy => {
                // the next request asks again
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    cache.remove(&key);
                }
                Err(match answer {
                    Answer::Busy => IntrospectionError::Busy,
                    _ => IntrospectionError::Unavailable,
                })
            }
        }
    }

    fn cache_key(&self, token: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(token.as_bytes());
        h.finalize().into()
    }

    /// The shared answer slot for this token: a fresh one when there is none or it expired.
    fn cell(&self, key: [u8; 32]) -> Arc<OnceCell<Answer>> {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cell) = cache.get(&key) {
            // an empty cell is a call in flight: wait for it
            if cell.get().is_none_or(|a| !a.expired(now)) {
                return cell.clone();
            }
        }
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.get().is_none_or(|a| !a.expired(now)));
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        let cell = Arc::new(OnceCell::new());
        cache.insert(key, cell.clone());
        cell
    }

    async fn call(&self, token: &str) -> Answer {
        let _span = crate::telemetry::child("introspection call");
        let Ok(_slot) = self.queue.enter().await else {
            return Answer::Busy;
        };
        let form = format!("token={}", form_encode(token));
        let (status, body) = match self.endpoint.call(Some(form.as_bytes())).await {
            Ok(answer) => answer,
            Err(e) => {
                let kind = match e {
                    FetchError::Timeout(_) => "timeout",
                    FetchError::Failed(_) => "error",
                };
                return self.failed(kind, &e);
            }
        };
        if status != 200 {
            return self.failed("error", &format!("HTTP status {status}"));
        }
        let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
            return self.failed("error", &"answer is not JSON");
        };
        let answer = self.judge(&answer);
        metrics::introspection(match answer {
            Answer::Active(..) => "active",
            _ => "inactive",
        });
        answer
    }

    /// A call without a usable answer: counted, and logged at most once per interval.
    fn failed(&self, kind: &str, why: &dyn std::fmt::Display) -> Answer {
        metrics::introspection(kind);
        if let Some(suppressed) = self.failures_logged.due() {
            log::warn!(
                "introspection {}: {why}{}",
                self.endpoint.url(),
                suppressed_note(suppressed)
            );
        }
        Answer::Unavailable
    }

    /// The identity an answer of the endpoint gives, judged as a fresh answer is (`active`,
    /// dates, audience, issuer, token type, originator). For `explain`.
    pub fn identity_of_answer(&self, answer: &Value) -> Result<Arc<Identity>, IntrospectionError> {
        match self.judge(answer) {
            Answer::Active(identity, _) => Ok(identity),
            Answer::Refused(e, _) => Err(e),
            Answer::Unavailable => Err(IntrospectionError::Unavailable),
            Answer::Busy => Err(IntrospectionError::Busy),
        }
    }

    fn judge(&self, answer: &Value) -> Answer {
        let now = Instant::now();
        let refused = |e| Answer::Refused(e, now + self.negative_ttl);
        if answer.get("active").and_then(Value::as_bool) != Some(true) {
            return refused(IntrospectionError::Inactive);
        }
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // exp, nbf and iat as RFC 7519 NumericDates; a value of another kind is no date
        let (Ok(exp), Ok(nbf), Ok(iat)) = (
            numeric_date(answer, "exp"),
            numeric_date(answer, "nbf"),
            numeric_date(answer, "iat"),
        ) else {
            return refused(IntrospectionError::Inactive);
        };
        let ahead = |t: Option<f64>| t.is_some_and(|t| t > unix_now + self.leeway);
        if exp.is_some_and(|exp| exp <= unix_now) || ahead(nbf) || ahead(iat) {
            return refused(IntrospectionError::Inactive);
        }
        if let Some(reason) = self.not_for_us(answer) {
            return refused(IntrospectionError::NotForUs(reason));
        }
        let mut until = now + self.cache_ttl;
        if let Some(exp) = exp {
            // a cached answer never outlives the token
            until = until.min(now + Duration::from_secs_f64(exp - unix_now));
        }
        let Some(originator) = self.originator_field.get(answer).and_then(Value::as_str) else {
            return refused(IntrospectionError::Unusable(
                "introspection answer without an originator",
            ));
        };
        if validate_originator(originator).is_err() {
            return refused(IntrospectionError::Unusable(
                "introspection answer names an unusable originator",
            ));
        }
        let name = self
            .name_field
            .get(answer)
            .and_then(Value::as_str)
            .unwrap_or(originator);
        let sysop = self
            .operator_field
            .as_ref()
            .and_then(|f| f.get(answer))
            .and_then(Value::as_bool)
            == Some(true);
        Answer::Active(
            Arc::new(Identity {
                name: name.to_owned(),
                proven_by: Method::Introspection,
                originator: originator.to_owned(),
                also_allowed: Vec::new(),
                roles: if sysop {
                    vec!["sysop".to_owned()]
                } else {
                    Vec::new()
                },
            }),
            until,
        )
    }
}

/// `name` of an answer as an RFC 7519 NumericDate (seconds since the epoch, integer or
/// fractional): `Ok(None)` when absent, `Err` when present but not a number.
fn numeric_date(answer: &Value, name: &str) -> Result<Option<f64>, ()> {
    match answer.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().filter(|t| t.is_finite()).map(Some).ok_or(()),
    }
}

impl Introspection {
    /// Why an active answer is not for this proxy, when `audiences`, `issuer` or
    /// `token_types` say so.
    fn not_for_us(&self, answer: &Value) -> Option<&'static str> {
        if !self.audiences.is_empty() {
            let ours = |v: &Value| {
                v.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|o| o == a))
            };
            let matched = match answer.get("aud") {
                Some(Value::Array(values)) => values.iter().any(ours),
                Some(v) => ours(v),
                None => false,
            };
            if !matched {
                return Some("token not for this audience");
            }
        }
        if let Some(issuer) = &self.issuer {
            if answer.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Some("token from another issuer");
            }
        }
        if !self.token_types.is_empty() {
            let accepted = answer
                .get("token_type")
                .and_then(Value::as_str)
                .is_some_and(|t| self.token_types.iter().any(|a| a.eq_ignore_ascii_case(t)));
            if !accepted {
                return Some("token type not accepted");
            }
        }
        None
    }
}

/// application/x-www-form-urlencoded value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The introspection method: tokens only a verification service can judge.
#[async_trait::async_trait]
impl Verifier for Introspection {
    fn method(&self) -> Method {
        Method::Introspection
    }

    fn claims(&self, presented: &Presented<'_>) -> Claim<()> {
        presented.bearer(Method::Introspection).unit()
    }

    async fn verify(&self, presented: &Presented<'_>) -> Result<Arc<Identity>, Rejection> {
        let (Claim::Mine(BearerToken::Token(token))
        | Claim::Mine(BearerToken::IdentityToken(token))) = presented.bearer(Method::Introspection)
        else {
            return Err(NOT_CLAIMED);
        };
        match self.introspect(token).await {
            Ok(identity) => Ok(identity),
            Err(e @ (IntrospectionError::Inactive | IntrospectionError::NotForUs(_))) => {
                Err(Rejection::counted(Failure::BadCredentials, e.reason()))
            }
            Err(e @ IntrospectionError::Unusable(_)) => {
                Err(Rejection::uncounted(Failure::BadCredentials, e.reason()))
            }
            // Counted: otherwise a client could keep calls to a slow or failing endpoint
            // going without limit, each with a new token.
            Err(e @ IntrospectionError::Unavailable) => {
                Err(Rejection::counted(Failure::Unavailable, e.reason()))
            }
            Err(e @ IntrospectionError::Busy) => {
                Err(Rejection::uncounted(Failure::Busy, e.reason()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_form_encoded() {
        assert_eq!(form_encode("a b+c/=&é"), "a%20b%2Bc%2F%3D%26%C3%A9");
        assert_eq!(form_encode("Abc-1._~"), "Abc-1._~");
    }
}
