//! An issuer's signing keys: a JWKS file (hot-reloaded like the other credential files), a JWKS
//! URL (fetched over HTTPS, refetched when a token names an unknown `kid`, the last good set
//! kept when a fetch fails), or a shared secret for HS* algorithms.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::fetch::HttpsEndpoint;
use super::jwk::{self, SigningKey, Skipped};
use crate::reload::{self, FileKind, Reloadable};

/// The usable keys of one JWKS document, and those left out with their reasons.
pub struct KeySet {
    keys: Vec<SigningKey>,
    skipped: Vec<Skipped>,
}

impl KeySet {
    /// Every usable key of the document; refused only when it is not a JWKS or no key in it is
    /// usable (then the reasons of all of them).
    pub fn parse(json: &[u8]) -> Result<KeySet, String> {
        let document: Value =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err("not a JWKS document: expected an object with a `keys` array".into());
        };
        let mut set = KeySet {
            keys: Vec::new(),
            skipped: Vec::new(),
        };
        for (index, entry) in entries.iter().enumerate() {
            match jwk::parse(index, entry) {
                Ok(key) => set.keys.push(key),
                Err(skipped) => set.skipped.push(skipped),
            }
        }
        if set.keys.is_empty() {
            let reasons: Vec<String> = set.skipped.iter().map(|s| s.to_string()).collect();
            return Err(format!(
                "expected at least one usable signing key{}{}",
                if reasons.is_empty() { "" } else { "; " },
                reasons.join("; ")
            ));
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys left out, with their reasons.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Candidate keys for a token signed with `alg`: the one with this `kid` (or, without a
    /// `kid`, every key) whose type, curve and `alg` fit `alg`.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&DecodingKey> {
        self.keys
            .iter()
            .filter(|k| {
                k.verifies(alg)
                    && match kid {
                        Some(kid) => k.kid.as_deref() == Some(kid),
                        None => true,
                    }
            })
            .map(|k| &k.key)
            .collect()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// "N keys" and, when some were left out, how many.
    pub fn summary(&self) -> String {
        match self.skipped.len() {
            0 => format!("{} keys", self.keys.len()),
            n => format!("{} keys, {n} unusable skipped", self.keys.len()),
        }
    }
}

/// Logs each skipped key of `keys` that `seen` has not had yet (a URL refetched every few
/// minutes logs a key once, not on every fetch) and publishes the issuer's count.
fn report_skipped(issuer: &str, source: &str, keys: &KeySet, seen: &mut Vec<Skipped>) {
    for s in keys.skipped() {
        if !seen.contains(s) {
            log::warn!("JWKS {source} (issuer {issuer:?}): skipped {s}");
        }
    }
    *seen = keys.skipped().to_vec();
    crate::metrics::jwks_keys_skipped(issuer, keys.skipped().len());
}

pub enum KeySource {
    File(Arc<JwksFile>),
    Url(Box<JwksUrl>),
    Secret(DecodingKey),
}

pub struct JwksFile {
    pub path: PathBuf,
    /// The issuer whose keys these are (logs, metric label).
    pub issuer: String,
    keys: ArcSwap<KeySet>,
    /// The skipped keys already logged.
    reported: std::sync::Mutex<Vec<Skipped>>,
}

impl JwksFile {
    /// No keys until the reloader's first load.
    pub fn new(path: PathBuf, issuer: &str) -> Self {
        JwksFile {
            path,
            issuer: issuer.to_owned(),
            keys: ArcSwap::from_pointee(KeySet {
                keys: Vec::new(),
                skipped: Vec::new(),
            }),
            reported: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }
}

/// Reload of a JWKS file; a broken file keeps the keys in force.
pub struct JwksReload(pub Arc<JwksFile>);

impl Reloadable for JwksReload {
    fn kind(&self) -> FileKind {
        FileKind::Jwks
    }
    fn key(&self) -> &'static str {
        "auth.jwt.issuers"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.0.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        reload::utf8(&self.0.path, &contents[0])?;
        let keys =
            KeySet::parse(&contents[0]).map_err(|e| format!("{}: {e}", self.0.path.display()))?;
        let summary = keys.summary();
        let mut reported = self.0.reported.lock().unwrap_or_else(|e| e.into_inner());
        let source = self.0.path.display().to_string();
        report_skipped(&self.0.issuer, &source, &keys, &mut reported);
        self.0.keys.store(Arc::new(keys));
        Ok(summary)
    }
}

pub struct JwksUrl {
    endpoint: Arc<HttpsEndpoint>,
    issuer: String,
    keys: ArcSwap<Option<Arc<KeySet>>>,
    refresh: Duration,
    min_refetch: Duration,
    /// When the last fetch was attempted and when keys were last fetched; the lock also makes
    /// concurrent requests share one fetch.
    state: tokio::sync::Mutex<FetchTimes>,
}

#[derive(Default)]
struct FetchTimes {
    attempted: Option<Instant>,
    succeeded: Option<Instant>,
    /// The skipped keys already logged.
    reported: Vec<Skipped>,
}

impl JwksUrl {
    pub fn new(
        endpoint: Arc<HttpsEndpoint>,
        issuer: &str,
        refresh: Duration,
        min_refetch: Duration,
    ) -> Self {
        JwksUrl {
            endpoint,
            issuer: issuer.to_owned(),
            keys: ArcSwap::from_pointee(None),
            refresh,
            min_refetch,
            state: tokio::sync::Mutex::new(FetchTimes::default()),
        }
    }

    /// The keys to check a token against, fetched first when there are none yet, when they are
    /// older than `jwks_refresh`, or when `kid` is unknown (at most once per `min_refetch`).
    /// A failed fetch keeps the last good keys.
    pub async fn keys(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        let current = self.keys.load_full();
        if let Some(keys) = current.as_ref() {
            let known = kid.is_none_or(|k| keys.has_kid(k));
            if known && !self.stale().await {
                return Some(keys.clone());
            }
        }
        let mut times = self.state.lock().await;
        // someone else may have fetched while this request waited for the lock
        if let Some(keys) = self.keys.load_full().as_ref() {
            let fresh = times.succeeded.is_some_and(|t| t.elapsed() < self.refresh);
            if fresh && kid.is_none_or(|k| keys.has_kid(k)) {
                return Some(keys.clone());
            }
        }
        let may_fetch = times
            .attempted
            .is_none_or(|t| t.elapsed() >= self.min_refetch);
        if may_fetch {
            times.attempted = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    log::info!("JWKS {}: {}", self.endpoint.url(), keys.summary());
                    let url = self.endpoint.url().to_owned();
                    report_skipped(&self.issuer, &url, &keys, &mut times.reported);
                    crate::metrics::reload(FileKind::Jwks.label(), true);
                    self.keys.store(Arc::new(Some(Arc::new(keys))));
                    times.succeeded = Some(Instant::now());
                }
                Err(e) => {
                    crate::metrics::reload(FileKind::Jwks.label(), false);
                    log::error!(
                        "JWKS {}: {e}; keeping the keys in force",
                        self.endpoint.url()
                    );
                }
            }
        }
        self.keys.load_full().as_ref().clone()
    }

    /// The endpoint's files (its CA), reloaded like the other files.
    pub fn reloadables(&self) -> Vec<Box<dyn Reloadable>> {
        self.endpoint.reloadables()
    }

    /// The keys in force, without fetching.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full().as_ref().clone()
    }

    async fn stale(&self) -> bool {
        match self.state.try_lock() {
            Ok(times) => times.succeeded.is_none_or(|t| t.elapsed() >= self.refresh),
            // a fetch is running: use what is there meanwhile
            Err(_) => false,
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let _span = crate::telemetry::child("JWKS fetch");
        let (status, body) = self.endpoint.call(None).await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("HTTP status {status}"));
        }
        KeySet::parse(&body)
    }
}
