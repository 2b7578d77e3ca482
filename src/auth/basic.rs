//! Basic authentication against an htpasswd file, each user bound to its originator.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::method::{Assembly, Descriptor, Explained, MethodState, Sample};
use super::queue::VerifyQueue;
use super::verifier::{Claim, Failure, Limit, Presented, Rejection, Verifier, NOT_CLAIMED};
use crate::config::{BasicConfig, Config, KeyError};
use crate::credentials::cache::VerifyCache;
use crate::credentials::htpasswd::HtpasswdFile;
use crate::example_credentials;
use crate::identity::{Identity, Method, Scheme};
use crate::originator_syntax::validate_originator;
use crate::random::RandomUnavailable;
use crate::reload::{self, FileKind, Reloadable};

/// The `basic` method. Its htpasswd file is loaded when configured, even while the method is not
/// enabled, so that `check` validates every file the config names.
pub const METHOD: Descriptor = Descriptor {
    name: "basic",
    scheme: Scheme::Basic,
    files: &[FileKind::Htpasswd],
    headers: &[],
    section: "auth.basic",
    needs: Some("`auth.basic.htpasswd: PATH`"),
    configured: |a| a.basic.is_some(),
    validate: |a| a.basic.as_ref().map_or(Ok(()), BasicConfig::validate),
    rate_limited: true,
    build: |c| match &c.auth.basic {
        Some(b) => match BasicAuth::new(b) {
            Ok(auth) => Ok(Some(Arc::new(auth))),
            Err(e) => Err(KeyError::new("auth.basic", e.to_string())),
        },
        None => Ok(None),
    },
};

impl MethodState for BasicAuth {
    fn reloadables(self: Arc<Self>) -> Vec<Box<dyn Reloadable>> {
        vec![Box::new(HtpasswdReload(self))]
    }

    /// Password checks take a slot of the password queue (`limits.verifications`).
    fn verifier(self: Arc<Self>, at: &Assembly<'_>) -> Option<Arc<dyn Verifier>> {
        let limits = &at.config.limits.verifications;
        let queue = VerifyQueue::new("password", limits.concurrent(), limits.max_queued);
        Some(Arc::new(BasicVerifier::new(self, Arc::new(queue))))
    }

    fn summary(&self, c: &Config) -> Vec<String> {
        let Some(cfg) = &c.auth.basic else {
            return Vec::new();
        };
        vec![format!(
            "basic: {} ({} users), realm {:?}, cache {} entries / {:?}, every check costs at least {}{}",
            cfg.htpasswd.display(),
            self.user_count(),
            cfg.realm,
            cfg.cache.max_entries,
            cfg.cache.ttl,
            self.timing_floor(),
            if cfg.allow_insecure_hashes {
                ", INSECURE hashes allowed"
            } else {
                ""
            }
        )]
    }

    fn explain(&self, sample: &Sample<'_>) -> Explained {
        Ok(match self.outcome_for(sample.name("the user name")?) {
            BasicOutcome::Valid(identity) => Ok(Arc::new(identity)),
            BasicOutcome::NoOriginator => Err(
                "the user name is not usable as an originator and auth.basic.originators has none for it"
                    .to_string(),
            ),
            BasicOutcome::Invalid => Err("wrong password or unknown user".to_string()),
        })
    }
}

pub struct BasicAuth {
    file: ArcSwap<HtpasswdFile>,
    cache: VerifyCache,
    /// Originator per user when it is not the user name; replaced by a config reload.
    originators: ArcSwap<HashMap<String, String>>,
    path: PathBuf,
    allow_insecure: bool,
    timing_floor: Option<u32>,
}

pub enum BasicOutcome {
    Valid(Identity),
    /// Wrong password or unknown user (indistinguishable by design).
    Invalid,
    /// Right password, but the user name cannot serve as an originator and none is mapped.
    NoOriginator,
}

impl BasicAuth {
    /// No users until the reloader's first load of the htpasswd file.
    pub fn new(config: &BasicConfig) -> Result<Self, RandomUnavailable> {
        Ok(BasicAuth {
            file: ArcSwap::from_pointee(HtpasswdFile::default()),
            cache: VerifyCache::new(config.cache.max_entries, config.cache.ttl)?,
            originators: ArcSwap::from_pointee(config.originators.clone().into_iter().collect()),
            path: config.htpasswd.to_path_buf(),
            allow_insecure: config.allow_insecure_hashes,
            timing_floor: config.timing_floor,
        })
    }

    pub fn user_count(&self) -> usize {
        self.file.load().len()
    }

    /// What every password check costs at least, for `check`.
    pub fn timing_floor(&self) -> String {
        self.file.load().timing_floor()
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

    /// The identity of a user whose password was verified (`explain` asks it for a user name).
    pub fn outcome_for(&self, user: &str) -> BasicOutcome {
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
            proven_by: Method::Basic,
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
    fn kind(&self) -> FileKind {
        FileKind::Htpasswd
    }
    fn key(&self) -> &'static str {
        "auth.basic.htpasswd"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.0.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let auth = &self.0;
        let text = reload::utf8(&auth.path, &contents[0])?;
        let file = HtpasswdFile::parse(&auth.path, text, auth.allow_insecure)
            .map_err(|e| e.to_string())?;
        // before the floor: the check verifies published passwords, at their own cost
        example_credentials::check_htpasswd(&auth.path, &file)?;
        let file = file.with_timing_floor(auth.timing_floor);
        if file.is_empty() {
            // An empty file is far more often half-written than meant to lock everyone out.
            return Err(format!(
                "{}: expected at least one user",
                auth.path.display()
            ));
        }
        if file.insecure_entries() > 0 {
            log::warn!(
                "{}: {} entries are plain text (auth.basic.allow_insecure_hashes: true); re-hash them with bcrypt",
                auth.path.display(),
                file.insecure_entries()
            );
        }
        let summary = format!("{} users", file.len());
        auth.file.store(Arc::new(file));
        auth.cache.clear();
        Ok(summary)
    }
}

/// The Basic method. Hash checks on a cache miss take a slot of the password queue
/// (`limits.verifications`) and run off the request-serving threads.
pub struct BasicVerifier {
    auth: Arc<BasicAuth>,
    queue: Arc<VerifyQueue>,
}

impl BasicVerifier {
    pub fn new(auth: Arc<BasicAuth>, queue: Arc<VerifyQueue>) -> Self {
        BasicVerifier { auth, queue }
    }
}

#[async_trait]
impl Verifier for BasicVerifier {
    fn method(&self) -> Method {
        Method::Basic
    }

    fn claims(&self, presented: &Presented<'_>) -> Claim<()> {
        presented.basic().unit()
    }

    fn limit<'p>(&self, presented: &'p Presented<'_>) -> Limit<'p> {
        match presented.basic() {
            Claim::Mine((user, _)) => Limit::ClientAddressAndUser(user),
            _ => Limit::ClientAddress,
        }
    }

    async fn verify(&self, presented: &Presented<'_>) -> Result<Arc<Identity>, Rejection> {
        let Claim::Mine((user, password)) = presented.basic() else {
            return Err(NOT_CLAIMED);
        };
        let basic = &self.auth;
        let outcome = match basic.verify_cached(user, password) {
            Some(outcome) => outcome,
            None => {
                // a span of the request's trace, when it has one (not for a cache hit)
                let _span = crate::telemetry::child("password verification");
                let Ok(slot) = self.queue.enter().await else {
                    return Err(Rejection::uncounted(
                        Failure::Busy,
                        "too many password checks in progress; try again",
                    ));
                };
                // bcrypt takes tens of milliseconds: keep it off the request-serving threads.
                // The slot goes with the work: a request that goes away does not free it early.
                let (basic, user, password) = (basic.clone(), user.to_owned(), password.to_vec());
                tokio::task::spawn_blocking(move || {
                    let outcome = basic.verify(&user, &password);
                    drop(slot);
                    outcome
                })
                .await
                .unwrap_or(BasicOutcome::Invalid)
            }
        };
        match outcome {
            BasicOutcome::Valid(identity) => Ok(Arc::new(identity)),
            BasicOutcome::Invalid => Err(Rejection::counted(
                Failure::BadCredentials,
                "invalid user name or password",
            )),
            BasicOutcome::NoOriginator => Err(Rejection::uncounted(
                Failure::OriginatorNotAllowed,
                "user name is not usable as an originator and none is configured",
            )),
        }
    }
}
