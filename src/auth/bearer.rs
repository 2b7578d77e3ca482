//! Bearer tokens from a file of SHA-256 hashes, each token bound to its originator(s).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::BearerConfig;
use crate::credentials::tokens::{TokenFile, TokenLookup};
use crate::credentials::CredentialError;
use crate::identity::{Identity, ProvenBy};
use crate::originator::{validate_originator, OriginatorPattern};
use crate::reload::{self, Reloadable};

pub struct BearerAuth {
    tokens: ArcSwap<TokenSet>,
    path: PathBuf,
    allow_declared: bool,
}

/// A tokens file with the identity of each entry built once, off the request path.
struct TokenSet {
    file: TokenFile,
    identities: HashMap<String, Arc<Identity>>,
}

impl TokenSet {
    fn new(path: &Path, file: TokenFile) -> Result<Self, String> {
        if file.is_empty() {
            // An empty list is far more often half-written than meant to lock everyone out.
            return Err(format!("{}: expected at least one token", path.display()));
        }
        let identities = file
            .entries()
            .map(|entry| {
                validate_originator(&entry.originator).map_err(|e| {
                    format!(
                        "{}: token {:?}: originator: {e}",
                        path.display(),
                        entry.name
                    )
                })?;
                let also_allowed = entry
                    .extra_originators
                    .iter()
                    .map(|p| OriginatorPattern::parse(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        format!(
                            "{}: token {:?}: originators: {e}",
                            path.display(),
                            entry.name
                        )
                    })?;
                let identity = Identity {
                    name: entry.name.clone(),
                    proven_by: ProvenBy::Bearer,
                    originator: entry.originator.clone(),
                    also_allowed,
                    roles: Vec::new(),
                };
                Ok((entry.name.clone(), Arc::new(identity)))
            })
            .collect::<Result<_, String>>()?;
        Ok(TokenSet { file, identities })
    }
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
    pub fn load(config: &BearerConfig) -> Result<Self, CredentialError> {
        let tokens =
            TokenSet::new(&config.tokens, TokenFile::load(&config.tokens)?).map_err(|message| {
                CredentialError::InvalidInput {
                    what: "auth.bearer.tokens",
                    message,
                }
            })?;
        crate::metrics::loaded("tokens");
        if config.allow_declared {
            log::warn!(
                "auth.bearer.allow_declared is ON: any client can claim any identity with 'Bearer SYSTEM//<name>' (no proof at all). Never use this in production."
            );
        }
        Ok(BearerAuth {
            tokens: ArcSwap::from_pointee(tokens),
            path: config.tokens.clone(),
            allow_declared: config.allow_declared,
        })
    }

    pub fn token_count(&self) -> usize {
        self.tokens.load().file.len()
    }

    pub fn verify(&self, token: &str) -> BearerOutcome {
        let tokens = self.tokens.load();
        match tokens.file.lookup(token.as_bytes(), SystemTime::now()) {
            TokenLookup::Valid(entry) => match tokens.identities.get(&entry.name) {
                Some(identity) => BearerOutcome::Valid(Arc::clone(identity)),
                None => BearerOutcome::Invalid,
            },
            TokenLookup::Expired(_) => BearerOutcome::Expired,
            TokenLookup::Unknown => BearerOutcome::Invalid,
        }
    }

    /// Arrowhead's declared identity: accepted only when explicitly allowed.
    pub fn declared(&self, name: &str) -> BearerOutcome {
        if !self.allow_declared || validate_originator(name).is_err() {
            return BearerOutcome::DeclaredRefused;
        }
        BearerOutcome::Valid(Arc::new(Identity {
            name: format!("declared:{name}"),
            proven_by: ProvenBy::Bearer,
            originator: name.to_owned(),
            also_allowed: Vec::new(),
            roles: Vec::new(),
        }))
    }
}

/// Reload of the tokens file.
pub struct TokensReload(pub Arc<BearerAuth>);

impl Reloadable for TokensReload {
    fn kind(&self) -> &'static str {
        "tokens"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.0.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let auth = &self.0;
        let text = reload::utf8(&auth.path, &contents[0])?;
        let tokens = TokenFile::parse(&auth.path, text).map_err(|e| e.to_string())?;
        let tokens = TokenSet::new(&auth.path, tokens)?;
        let summary = format!("{} tokens", tokens.file.len());
        auth.tokens.store(Arc::new(tokens));
        Ok(summary)
    }
}
