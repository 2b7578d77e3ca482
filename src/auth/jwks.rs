//! An issuer's signing keys: a JWKS file (hot-reloaded like the other credential files), a JWKS
//! URL (fetched over HTTPS, refetched when a token names an unknown `kid`, the last good set
//! kept when a fetch fails), or a shared secret for HS* algorithms.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{AlgorithmFamily, DecodingKey};

use super::fetch::HttpsEndpoint;
use crate::reload::{self, FileKind, Reloadable};

/// Usable keys of one JWKS document.
pub struct KeySet {
    keys: Vec<(Option<String>, DecodingKey)>,
}

impl KeySet {
    pub fn parse(json: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            // encryption keys are not for checking signatures
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                format!(
                    "key {:?}: {e}",
                    jwk.common.key_id.as_deref().unwrap_or("(no kid)")
                )
            })?;
            // symmetric keys in a JWKS would let anyone who reads it sign tokens
            if key.family() == AlgorithmFamily::Hmac {
                return Err("symmetric (oct) keys are not accepted from a JWKS".into());
            }
            keys.push((jwk.common.key_id.clone(), key));
        }
        if keys.is_empty() {
            return Err("expected at least one signing key".into());
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Candidate keys: the one with this `kid`, or without a `kid` every key of the family.
    pub fn candidates(&self, kid: Option<&str>, family: AlgorithmFamily) -> Vec<&DecodingKey> {
        self.keys
            .iter()
            .filter(|(k, key)| {
                key.family() == family
                    && match kid {
                        Some(kid) => k.as_deref() == Some(kid),
                        None => true,
                    }
            })
            .map(|(_, key)| key)
            .collect()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|(k, _)| k.as_deref() == Some(kid))
    }
}

pub enum KeySource {
    File(Arc<JwksFile>),
    Url(Box<JwksUrl>),
    Secret(DecodingKey),
}

pub struct JwksFile {
    pub path: PathBuf,
    keys: ArcSwap<KeySet>,
}

impl JwksFile {
    /// No keys until the reloader's first load.
    pub fn new(path: PathBuf) -> Self {
        JwksFile {
            path,
            keys: ArcSwap::from_pointee(KeySet { keys: Vec::new() }),
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
        let summary = format!("{} keys", keys.len());
        self.0.keys.store(Arc::new(keys));
        Ok(summary)
    }
}

pub struct JwksUrl {
    endpoint: HttpsEndpoint,
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
}

impl JwksUrl {
    pub fn new(endpoint: HttpsEndpoint, refresh: Duration, min_refetch: Duration) -> Self {
        JwksUrl {
            endpoint,
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
                    log::info!("JWKS {}: {} keys", self.endpoint.url(), keys.len());
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
        let (status, body) = self.endpoint.call(None).await.map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("HTTP status {status}"));
        }
        KeySet::parse(&body)
    }
}
