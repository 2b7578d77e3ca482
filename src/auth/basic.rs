//! Basic authentication against an htpasswd file, each user bound to its originator.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::BasicConfig;
use crate::credentials::cache::VerifyCache;
use crate::credentials::htpasswd::HtpasswdFile;
use crate::credentials::CredentialError;
use crate::identity::{Identity, ProvenBy};
use crate::originator::validate_originator;
use crate::reload::{self, Reloadable};

pub struct BasicAuth {
    file: ArcSwap<HtpasswdFile>,
    cache: VerifyCache,
    /// Originator per user when it is not the user name; replaced by a config reload.
    originators: ArcSwap<HashMap<String, String>>,
    path: PathBuf,
    allow_insecure: bool,
}

pub enum BasicOutcome {
    Valid(Identity),
    /// Wrong password or unknown user (indistinguishable by design).
    Invalid,
    /// Right password, but the user name cannot serve as an originator and none is mapped.
    NoOriginator,
}

impl BasicAuth {
    pub fn load(config: &BasicConfig) -> Result<Self, CredentialError> {
        let file = HtpasswdFile::load(&config.htpasswd, config.allow_insecure_hashes)?;
        if file.is_empty() {
            return Err(CredentialError::InvalidInput {
                what: "auth.basic.htpasswd",
                message: format!("{}: expected at least one user", config.htpasswd.display()),
            });
        }
        crate::metrics::loaded("htpasswd");
        if file.insecure_entries() > 0 {
            log::warn!(
                "{}: {} entries are plain text (auth.basic.allow_insecure_hashes: true); re-hash them with bcrypt",
                config.htpasswd.display(),
                file.insecure_entries()
            );
        }
        Ok(BasicAuth {
            file: ArcSwap::from_pointee(file),
            cache: VerifyCache::new(config.cache.max_entries, config.cache.ttl),
            originators: ArcSwap::from_pointee(config.originators.clone().into_iter().collect()),
            path: config.htpasswd.clone(),
            allow_insecure: config.allow_insecure_hashes,
        })
    }

    pub fn user_count(&self) -> usize {
        self.file.load().len()
    }

    /// Verify a user's password (possibly slow: bcrypt on a cache miss).
    pub fn verify(&self, user: &str, password: &[u8]) -> BasicOutcome {
        let file = self.file.load();
        if !self.cache.check(&file, user, password) {
            return BasicOutcome::Invalid;
        }
        self.outcome_for(user)
    }

    /// The answer from the verification cache alone (`None`: not cached, verify the slow way).
    pub fn verify_cached(&self, user: &str, password: &[u8]) -> Option<BasicOutcome> {
        self.cache
            .contains(&self.file.load(), user, password)
            .then(|| self.outcome_for(user))
    }

    /// The identity of a user whose password was verified.
    fn outcome_for(&self, user: &str) -> BasicOutcome {
        let originator = self
            .originators
            .load()
            .get(user)
            .cloned()
            .unwrap_or_else(|| user.to_owned());
        if validate_originator(&originator).is_err() {
            return BasicOutcome::NoOriginator;
        }
        BasicOutcome::Valid(Identity {
            name: user.to_owned(),
            proven_by: ProvenBy::Basic,
            originator,
            also_allowed: Vec::new(),
            roles: Vec::new(),
        })
    }

    pub fn set_originators(&self, originators: HashMap<String, String>) {
        self.originators.store(Arc::new(originators));
    }
}

/// Reload of the htpasswd file: a new file empties the verification cache.
pub struct HtpasswdReload(pub Arc<BasicAuth>);

impl Reloadable for HtpasswdReload {
    fn kind(&self) -> &'static str {
        "htpasswd"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.0.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let auth = &self.0;
        let text = reload::utf8(&auth.path, &contents[0])?;
        let file = HtpasswdFile::parse(&auth.path, text, auth.allow_insecure)
            .map_err(|e| e.to_string())?;
        if file.is_empty() {
            // An empty file is far more often half-written than meant to lock everyone out.
            return Err(format!(
                "{}: expected at least one user",
                auth.path.display()
            ));
        }
        let summary = format!("{} users", file.len());
        auth.file.store(Arc::new(file));
        auth.cache.clear();
        Ok(summary)
    }
}
