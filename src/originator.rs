//! Originator policy: which `X-M2M-Origin` the upstream receives for an authenticated identity.
//! One piece of code, blind to how the identity was proven. What an originator may look like is
//! `originator_syntax`.

use std::collections::HashMap;

use crate::config::{KeyError, OriginatorConfig, OriginatorMode};
use crate::identity::Identity;
use crate::originator_syntax::{validate_originator, OriginatorPattern};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client claimed an originator this identity may not use.
    NotAllowed,
    /// Several different originators in one request.
    Ambiguous,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotAllowed => "originator not allowed for the authenticated identity",
            Refusal::Ambiguous => "several different X-M2M-Origin values",
        }
    }
}

pub struct OriginatorPolicy {
    mode: OriginatorMode,
    cse_namespace: bool,
    allow: HashMap<String, Vec<OriginatorPattern>>,
}

impl OriginatorPolicy {
    pub fn from_config(config: &OriginatorConfig) -> Result<Self, KeyError> {
        let mut allow = HashMap::new();
        for (who, patterns) in &config.allow {
            let parsed = patterns
                .iter()
                .map(|p| {
                    OriginatorPattern::parse(p).map_err(|m| {
                        KeyError::new(
                            "originator.allow",
                            format!("pattern {p:?} for {who:?}: {m}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            allow.insert(who.clone(), parsed);
        }
        Ok(OriginatorPolicy {
            mode: config.mode,
            cse_namespace: config.cse_namespace,
            allow,
        })
    }

    /// The originator to forward. `claimed` are the client's `X-M2M-Origin` values (any case,
    /// empty ones already dropped by the caller or here).
    pub fn decide<'a>(
        &self,
        identity: &'a Identity,
        claimed: &[&'a str],
    ) -> Result<&'a str, Refusal> {
        if self.mode == OriginatorMode::Overwrite {
            return Ok(&identity.originator);
        }
        let mut chosen: Option<&str> = None;
        for value in claimed.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            match chosen {
                Some(c) if c != value => return Err(Refusal::Ambiguous),
                _ => chosen = Some(value),
            }
        }
        let Some(claim) = chosen else {
            return Ok(&identity.originator);
        };
        if self.may_use(identity, claim) {
            Ok(claim)
        } else {
            Err(Refusal::NotAllowed)
        }
    }

    fn may_use(&self, identity: &Identity, claim: &str) -> bool {
        if claim == identity.originator {
            return true;
        }
        if validate_originator(claim).is_err() {
            return false;
        }
        if self.cse_namespace && in_cse_namespace(&identity.originator, claim) {
            return true;
        }
        identity.also_allowed.iter().any(|p| p.matches(claim))
            || self
                .allow
                .get(&identity.originator)
                .is_some_and(|ps| ps.iter().any(|p| p.matches(claim)))
    }
}

/// `/id-mn` may act for `/id-mn/Cae1`, never for `/id-mnx` or `/id-mn` itself elsewhere.
fn in_cse_namespace(cse: &str, claim: &str) -> bool {
    cse.starts_with('/')
        && claim
            .strip_prefix(cse)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Method;

    fn id(originator: &str, also: &[&str]) -> Identity {
        Identity {
            name: originator.into(),
            proven_by: Method::Mtls,
            originator: originator.into(),
            also_allowed: also
                .iter()
                .map(|p| OriginatorPattern::parse(p).unwrap())
                .collect(),
            roles: Vec::new(),
        }
    }

    fn policy(mode: OriginatorMode, cse_namespace: bool) -> OriginatorPolicy {
        OriginatorPolicy::from_config(&OriginatorConfig {
            mode,
            cse_namespace,
            allow: [("Cgw".to_string(), vec!["Cgw-*".to_string()])].into(),
        })
        .unwrap()
    }

    #[test]
    fn overwrite_ignores_claims() {
        let p = policy(OriginatorMode::Overwrite, false);
        assert_eq!(p.decide(&id("Cae1", &[]), &["CAdmin", "x"]), Ok("Cae1"));
    }

    #[test]
    fn verify_mode() {
        let p = policy(OriginatorMode::Verify, true);
        let me = id("Cae1", &["Cae1-*"]);
        assert_eq!(p.decide(&me, &[]), Ok("Cae1"));
        assert_eq!(p.decide(&me, &["", " "]), Ok("Cae1"));
        assert_eq!(p.decide(&me, &["Cae1"]), Ok("Cae1"));
        assert_eq!(p.decide(&me, &["Cae1-temp"]), Ok("Cae1-temp"));
        assert_eq!(p.decide(&me, &["CAdmin"]), Err(Refusal::NotAllowed));
        assert_eq!(p.decide(&me, &["Cae1", "CAdmin"]), Err(Refusal::Ambiguous));
        let gw = id("Cgw", &[]);
        assert_eq!(p.decide(&gw, &["Cgw-7"]), Ok("Cgw-7"));
        let mn = id("/id-mn", &[]);
        assert_eq!(p.decide(&mn, &["/id-mn/Cae9"]), Ok("/id-mn/Cae9"));
        assert_eq!(p.decide(&mn, &["/id-mnx/Cae9"]), Err(Refusal::NotAllowed));
        assert_eq!(p.decide(&mn, &["/id-mn/"]), Err(Refusal::NotAllowed));
        let strict = policy(OriginatorMode::Verify, false);
        assert_eq!(
            strict.decide(&mn, &["/id-mn/Cae9"]),
            Err(Refusal::NotAllowed)
        );
    }
}
