//! Bearer tokens from a file of SHA-256 hashes, each token bound to its originator(s).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::authorization::BearerToken;
use super::method::{Assembly, Descriptor, Explained, MethodState, Sample};
use super::verifier::{Claim, Failure, Presented, Rejection, Verifier, NOT_CLAIMED};
use crate::config::{BearerConfig, Config};
use crate::credentials::tokens::{TokenEntry, TokenFile, TokenLookup};
use crate::example_credentials;
use crate::identity::{Identity, Method, Scheme};
use crate::originator_syntax::validate_originator;
use crate::reload::{self, FileKind, Reloadable};

/// The `bearer` method. Its tokens file is loaded when configured, even while the method is not
/// enabled, so that `check` validates every file the config names.
pub const METHOD: Descriptor = Descriptor {
    name: "bearer",
    scheme: Scheme::Bearer,
    files: &[FileKind::Tokens],
    headers: &[],
    section: "auth.bearer",
    needs: Some("`auth.bearer.tokens: PATH`"),
    configured: |a| a.bearer.is_some(),
    validate: |_| Ok(()),
    rate_limited: true,
    build: |c| {
        Ok(c.auth
            .bearer
            .as_ref()
            .map(|b| Arc::new(BearerAuth::new(b)) as _))
    },
};

impl MethodState for BearerAuth {
    fn reloadables(self: Arc<Self>) -> Vec<Box<dyn Reloadable>> {
        vec![Box::new(TokensReload(self))]
    }

    fn verifier(self: Arc<Self>, _: &Assembly<'_>) -> Option<Arc<dyn Verifier>> {
        Some(self)
    }

    fn summary(&self, c: &Config) -> Vec<String> {
        let Some(cfg) = &c.auth.bearer else {
            return Vec::new();
        };
        vec![format!(
            "bearer: {} ({} tokens){}",
            cfg.tokens.display(),
            self.token_count(),
            if cfg.allow_declared {
                "; WARNING: allow_declared is ON: 'Bearer SYSTEM//<name>' is accepted without any proof"
            } else {
                ""
            }
        )]
    }

    fn explain(&self, sample: &Sample<'_>) -> Explained {
        let name = sample.name("the name of the tokens-file entry")?;
        Ok(self.identity_named(name).map_err(str::to_string))
    }
}

pub struct BearerAuth {
    /// The tokens file in force. Its entries are kept compact (a large file stays in memory),
    /// so the `Identity` of a token is built when the token is presented.
    tokens: ArcSwap<TokenFile>,
    path: PathBuf,
    allow_declared: bool,
}

pub enum BearerOutcome {
    Valid(Arc<Identity>),
    Expired,
    Invalid,
    /// `SYSTEM//<name>` while declared identities are not allowed, or a name unusable as an
    /// originator.
    DeclaredRefused,
}

impl BearerAuth {
    /// No tokens until the reloader's first load of the tokens file.
    pub fn new(config: &BearerConfig) -> Self {
        BearerAuth {
            tokens: ArcSwap::from_pointee(TokenFile::default()),
            path: config.tokens.to_path_buf(),
            allow_declared: config.allow_declared,
        }
    }

    pub fn token_count(&self) -> usize {
        self.tokens.load().len()
    }

    pub fn check_token(&self, token: &str) -> BearerOutcome {
        let tokens = self.tokens.load();
        match tokens.lookup(token.as_bytes(), SystemTime::now()) {
            TokenLookup::Valid(entry) => BearerOutcome::Valid(entry_identity(&entry)),
            TokenLookup::Expired(_) => BearerOutcome::Expired,
            TokenLookup::Unknown => BearerOutcome::Invalid,
        }
    }

    /// The identity of the tokens-file entry named `name`, as a request with its token gets it
    /// (for `explain`, which names the entry instead of showing the token).
    pub fn identity_named(&self, name: &str) -> Result<Arc<Identity>, &'static str> {
        let tokens = self.tokens.load();
        let entry = tokens
            .entries()
            .find(|e| e.name == name)
            .ok_or("no entry of that name in the tokens file")?;
        if entry.expires.is_some_and(|t| t <= SystemTime::now()) {
            return Err("token expired");
        }
        Ok(entry_identity(&entry))
    }

    /// Arrowhead's declared identity: accepted only when explicitly allowed.
    pub fn declared(&self, name: &str) -> BearerOutcome {
        if !self.allow_declared || validate_originator(name).is_err() {
            return BearerOutcome::DeclaredRefused;
        }
        BearerOutcome::Valid(Arc::new(Identity {
            name: format!("declared:{name}"),
            proven_by: Method::Bearer,
            originator: name.to_owned(),
            also_allowed: Vec::new(),
            roles: Vec::new(),
        }))
    }
}

fn entry_identity(entry: &TokenEntry<'_>) -> Arc<Identity> {
    Arc::new(Identity {
        name: entry.name.to_owned(),
        proven_by: Method::Bearer,
        originator: entry.originator.to_owned(),
        also_allowed: entry.also_allowed().to_vec(),
        roles: Vec::new(),
    })
}

/// Reload of the tokens file.
pub struct TokensReload(pub Arc<BearerAuth>);

impl Reloadable for TokensReload {
    fn kind(&self) -> FileKind {
        FileKind::Tokens
    }
    fn key(&self) -> &'static str {
        "auth.bearer.tokens"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.0.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let auth = &self.0;
        let text = reload::utf8(&auth.path, &contents[0])?;
        let tokens = TokenFile::parse(&auth.path, text).map_err(|e| e.to_string())?;
        example_credentials::check_tokens(&auth.path, &tokens)?;
        if tokens.is_empty() {
            // An empty list is far more often half-written than meant to lock everyone out.
            return Err(format!(
                "{}: expected at least one token",
                auth.path.display()
            ));
        }
        if auth.allow_declared {
            log::warn!(
                "auth.bearer.allow_declared is ON: any client can claim any identity with 'Bearer SYSTEM//<name>' (no proof at all). Never use this in production."
            );
        }
        let summary = format!("{} tokens", tokens.len());
        auth.tokens.store(Arc::new(tokens));
        Ok(summary)
    }
}

/// The Bearer method: tokens from the tokens file (and Arrowhead's declared form, if allowed).
#[async_trait]
impl Verifier for BearerAuth {
    fn method(&self) -> Method {
        Method::Bearer
    }

    fn claims(&self, presented: &Presented<'_>) -> Claim<()> {
        presented.bearer(Method::Bearer).unit()
    }

    async fn verify(&self, presented: &Presented<'_>) -> Result<Arc<Identity>, Rejection> {
        let Claim::Mine(token) = presented.bearer(Method::Bearer) else {
            return Err(NOT_CLAIMED);
        };
        let outcome = match token {
            BearerToken::Token(t) | BearerToken::IdentityToken(t) => self.check_token(t),
            BearerToken::Declared(name) => self.declared(name),
        };
        match outcome {
            BearerOutcome::Valid(identity) => Ok(identity),
            BearerOutcome::Expired => Err(Rejection::counted(Failure::Expired, "token expired")),
            BearerOutcome::Invalid => {
                Err(Rejection::counted(Failure::BadCredentials, "invalid token"))
            }
            BearerOutcome::DeclaredRefused => Err(Rejection::counted(
                Failure::BadCredentials,
                "declared identities (SYSTEM//) are not accepted",
            )),
        }
    }
}
