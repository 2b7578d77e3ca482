//! Originator policy: which `X-M2M-Origin` the upstream receives for an authenticated identity.
//! One piece of code, blind to how the identity was proven. What an originator may look like is
//! `originator_syntax`.

use std::collections::HashMap;

use regex::Regex;

use crate::config::{KeyError, OriginatorConfig, OriginatorMode};
use crate::cse::LocalCse;
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
    /// `originator.by_role`, in order: (role, mode, cse_namespace).
    by_role: Vec<(String, OriginatorMode, bool)>,
    /// Per CSE-ID: what the AE-ID segment of an originator in its namespace must match.
    cse_ae_ids: HashMap<String, Regex>,
    /// Keyed by the authenticated originator as written; patterns in canonical form.
    allow: HashMap<String, Vec<OriginatorPattern>>,
    /// The local CSE: originators are decided and forwarded in canonical form.
    cse: Option<LocalCse>,
}

impl OriginatorPolicy {
    /// Without a local CSE: originators are taken as written.
    pub fn from_config(config: &OriginatorConfig) -> Result<Self, KeyError> {
        OriginatorPolicy::build(config, None)
    }

    /// With the local CSE `cse` (config `cse`): every originator of the local CSE, in any form,
    /// is decided and forwarded in its canonical form ([`LocalCse::originator`]).
    pub fn build(config: &OriginatorConfig, cse: Option<&LocalCse>) -> Result<Self, KeyError> {
        let canonical = |o: &str| cse.map_or(o, |c| c.originator(o)).to_string();
        let mut allow = HashMap::new();
        for (who, patterns) in &config.allow {
            let parsed = patterns
                .iter()
                .map(|p| {
                    OriginatorPattern::parse(&canonical(p)).map_err(|m| {
                        KeyError::new(
                            "originator.allow",
                            format!("pattern {p:?} for {who:?}: {m}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            allow.insert(who.clone(), parsed);
        }
        let mut by_role = Vec::with_capacity(config.by_role.len());
        for (i, entry) in config.by_role.iter().enumerate() {
            let key = |k: &str| format!("originator.by_role[{i}].{k}");
            if entry.role.is_empty() {
                return Err(KeyError::new(key("role"), "expected a role name"));
            }
            if entry.cse_namespace && entry.mode == OriginatorMode::Overwrite {
                return Err(KeyError::new(
                    key("cse_namespace"),
                    "has no effect with mode: overwrite (the identity's own originator is forwarded)",
                ));
            }
            by_role.push((entry.role.clone(), entry.mode, entry.cse_namespace));
        }
        let any_namespace = config.cse_namespace || by_role.iter().any(|(_, _, ns)| *ns);
        let mut cse_ae_ids = HashMap::new();
        for (cse_id, pattern) in &config.cse_ae_ids {
            let key = || format!("originator.cse_ae_ids.{cse_id}");
            if !any_namespace {
                return Err(KeyError::new(
                    key(),
                    "has no effect without cse_namespace: true (in originator or an originator.by_role entry)",
                ));
            }
            if !is_cse_id(cse_id) {
                return Err(KeyError::new(
                    key(),
                    format!("expected a CSE-ID like \"/id-mn\" as the key, got {cse_id:?}"),
                ));
            }
            let regex = Regex::new(pattern)
                .map_err(|e| KeyError::new(key(), format!("expected a regular expression: {e}")))?;
            cse_ae_ids.insert(cse_id.clone(), regex);
        }
        Ok(OriginatorPolicy {
            mode: config.mode,
            cse_namespace: config.cse_namespace,
            by_role,
            cse_ae_ids,
            allow,
            cse: cse.cloned(),
        })
    }

    /// The canonical form of an originator (as written without a local CSE).
    pub fn canonical<'a>(&self, originator: &'a str) -> &'a str {
        self.cse
            .as_ref()
            .map_or(originator, |c| c.originator(originator))
    }

    /// The originator to forward, in canonical form. `claimed` are the client's
    /// `X-M2M-Origin` values (any case, empty ones already dropped by the caller or here).
    pub fn decide<'a>(
        &self,
        identity: &'a Identity,
        claimed: &[&'a str],
    ) -> Result<&'a str, Refusal> {
        let own = self.canonical(&identity.originator);
        let (mode, cse_namespace) = self.mode_for(identity);
        if mode == OriginatorMode::Overwrite {
            return Ok(own);
        }
        let mut chosen: Option<&str> = None;
        for value in claimed.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            match chosen {
                Some(c) if c != value => return Err(Refusal::Ambiguous),
                _ => chosen = Some(value),
            }
        }
        let Some(claim) = chosen else {
            return Ok(own);
        };
        let claim = self.canonical(claim);
        if self.may_use(identity, own, claim, cse_namespace) {
            Ok(claim)
        } else {
            Err(Refusal::NotAllowed)
        }
    }

    /// The mode and `cse_namespace` of `identity`: those of the first `by_role` entry whose role
    /// it holds, else the top-level ones.
    pub fn mode_for(&self, identity: &Identity) -> (OriginatorMode, bool) {
        self.by_role
            .iter()
            .find(|(role, _, _)| identity.roles.contains(role))
            .map_or((self.mode, self.cse_namespace), |(_, mode, ns)| {
                (*mode, *ns)
            })
    }

    /// `claim` and `own` in canonical form.
    fn may_use(&self, identity: &Identity, own: &str, claim: &str, cse_namespace: bool) -> bool {
        if claim == own {
            return true;
        }
        if validate_originator(claim).is_err() {
            return false;
        }
        if cse_namespace && self.in_cse_namespace(own, claim) {
            return true;
        }
        identity
            .also_allowed
            .iter()
            .any(|p| self.pattern_allows(p, claim))
            || self
                .allow
                .get(&identity.originator)
                .or_else(|| self.allow.get(own))
                .is_some_and(|ps| ps.iter().any(|p| p.matches(claim)))
    }

    /// A pattern of the identity itself (token, JWT claim, introspection field), read in
    /// canonical form: `/id-in/C*` allows what `C*` allows; `/*` allows no local AE.
    fn pattern_allows(&self, p: &OriginatorPattern, claim: &str) -> bool {
        let Some(cse) = &self.cse else {
            return p.matches(claim);
        };
        let source = p.source();
        match cse.originator(&source) {
            same if same == source => p.matches(claim),
            canonical => OriginatorPattern::parse(canonical).is_ok_and(|c| c.matches(claim)),
        }
    }

    /// `/id-mn` may act for `/id-mn/Cae1` (one AE-ID segment, `C…` or `S…`); never an SP-ID
    /// or an AE for anything, never `/id-mnx/…`, `/id-mn/Cx/y` or `/id-mn/id-mn2`.
    fn in_cse_namespace(&self, cse: &str, claim: &str) -> bool {
        namespace_ae(cse, claim)
            .is_some_and(|ae| !ae.contains('/') && (ae.starts_with('C') || ae.starts_with('S')))
    }

    /// Whether some CSE has an AE-ID pattern (`cse_ae_ids`): then AE registrations are checked
    /// with [`OriginatorPolicy::may_register`].
    pub fn checks_registrations(&self) -> bool {
        !self.cse_ae_ids.is_empty()
    }

    /// Whether `originator` (as decided) may register an AE (a create of type 2, or one whose
    /// type cannot be read): an AE of a CSE namespace whose CSE has an AE-ID pattern must
    /// match it, so that it cannot take a resource ID of the local CSE's own AEs. Other
    /// requests of the namespace need only the AE-ID shape.
    pub fn may_register(&self, identity: &Identity, originator: &str) -> bool {
        let own = self.canonical(&identity.originator);
        match (namespace_ae(own, originator), self.cse_ae_ids.get(own)) {
            (Some(ae), Some(re)) => re.is_match(ae),
            _ => true,
        }
    }
}

/// The part of `claim` after `cse` + `/`, when `cse` is a CSE-ID (`/` and one segment).
fn namespace_ae<'a>(cse: &str, claim: &'a str) -> Option<&'a str> {
    if !is_cse_id(cse) {
        return None;
    }
    claim
        .strip_prefix(cse)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|ae| !ae.is_empty())
}

/// The refusal of an AE registration outside a CSE's `cse_ae_ids` pattern.
pub const REGISTRATION_REFUSED: &str =
    "AE-ID not allowed for an AE registered through this CSE (originator.cse_ae_ids)";

/// Exactly `/` and one segment: `/id-mn`, not `//sp` nor `/id-mn/Cae1`.
fn is_cse_id(o: &str) -> bool {
    o.strip_prefix('/')
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
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
            ..Default::default()
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
        for claim in ["Cgw-x/id-mn2", "Cgw-x/Cvictim", "/id-in/Cgw-x/Cvictim"] {
            assert_eq!(p.decide(&gw, &[claim]), Err(Refusal::NotAllowed), "{claim}");
        }
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

    fn local_cse() -> LocalCse {
        LocalCse::from_config(&crate::config::CseConfig {
            id: "/id-in".into(),
            name: "cse-in".into(),
            sp_id: Some("acme.example.com".into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn with_a_local_cse_every_form_is_decided_and_forwarded_canonical() {
        let c = local_cse();
        let config = OriginatorConfig {
            mode: OriginatorMode::Verify,
            allow: [(
                "Ctool".to_string(),
                vec!["/id-in/Cx-*".to_string(), "/*/*".to_string()],
            )]
            .into(),
            ..Default::default()
        };
        let p = OriginatorPolicy::build(&config, Some(&c)).unwrap();
        let me = id(
            "/id-in/Cae1",
            &["//acme.example.com/id-in/Cown-*", "/*/Cfree"],
        );
        assert_eq!(p.decide(&me, &[]), Ok("Cae1"));
        assert_eq!(p.decide(&me, &["Cae1"]), Ok("Cae1"));
        assert_eq!(
            p.decide(&me, &["//acme.example.com/id-in/Cae1"]),
            Ok("Cae1")
        );
        // the identity's own patterns, read canonical
        assert_eq!(p.decide(&me, &["Cown-1"]), Ok("Cown-1"));
        assert_eq!(p.decide(&me, &["/id-in/Cown-1"]), Ok("Cown-1"));
        // a pattern that is not of the local CSE does not match its canonical AE-IDs
        assert_eq!(p.decide(&me, &["/id-in/Cfree"]), Err(Refusal::NotAllowed));
        assert_eq!(p.decide(&me, &["/id-mn/Cfree"]), Ok("/id-mn/Cfree"));
        let tool = id("Ctool", &[]);
        assert_eq!(p.decide(&tool, &["/id-in/Cx-1"]), Ok("Cx-1"));
        assert_eq!(p.decide(&tool, &["Cx-1"]), Ok("Cx-1"));
        // `/*/*` (any AE of any CSE) does not reach a local AE through its SP-relative form
        assert_eq!(
            p.decide(&tool, &["/id-in/CAdmin"]),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(p.decide(&tool, &["/id-mn/CAdmin"]), Ok("/id-mn/CAdmin"));
        // a `*` never takes a `/`: one AE-ID segment per `*` (finding 6 of the red-team run)
        for claim in ["/id-mn/Cx/id-mn2", "/id-in/Cx-1/Cvictim", "Cx-1/Cvictim"] {
            assert_eq!(
                p.decide(&tool, &[claim]),
                Err(Refusal::NotAllowed),
                "{claim}"
            );
        }
        assert_eq!(p.decide(&me, &["Cown-1/Cvictim"]), Err(Refusal::NotAllowed));
        // overwrite forwards the canonical form of the identity's own originator
        let o = OriginatorPolicy::build(&OriginatorConfig::default(), Some(&c)).unwrap();
        assert_eq!(o.decide(&me, &["x"]), Ok("Cae1"));
    }

    #[test]
    fn the_first_by_role_entry_the_identity_holds_decides_the_mode() {
        let config: OriginatorConfig = serde_yaml_ng::from_str(
            "mode: overwrite\nby_role:\n  - {role: cse, mode: verify, cse_namespace: true}\n  - {role: gateway, mode: verify}\n  - {role: cse2, mode: overwrite}\nallow:\n  Cgw: [\"Cgw-*\"]\ncse_ae_ids:\n  /id-mn: \"^Cmn-\"\n",
        )
        .unwrap();
        let p = OriginatorPolicy::from_config(&config).unwrap();
        let with = |originator: &str, roles: &[&str]| Identity {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..id(originator, &[])
        };
        // a device without a role: overwrite, whatever it claims
        assert_eq!(p.decide(&with("Cae1", &[]), &["C"]), Ok("Cae1"));
        assert_eq!(p.decide(&with("Cae1", &[]), &["/id-mn/Cx"]), Ok("Cae1"));
        // a CSE: verify with its namespace
        let mn = with("/id-mn", &["cse"]);
        assert_eq!(p.decide(&mn, &["/id-mn/Cmn-1"]), Ok("/id-mn/Cmn-1"));
        assert_eq!(p.decide(&mn, &["CAdmin"]), Err(Refusal::NotAllowed));
        assert_eq!(p.mode_for(&mn), (OriginatorMode::Verify, true));
        // verify without a namespace; the list order decides for several roles
        let gw = with("Cgw", &["gateway"]);
        assert_eq!(p.decide(&gw, &["Cgw-7"]), Ok("Cgw-7"));
        let both = with("/id-mn", &["cse2", "gateway"]);
        assert_eq!(p.decide(&both, &["/id-mn/Cx"]), Err(Refusal::NotAllowed));
        let first = with("/id-mn", &["cse2", "cse"]);
        assert_eq!(p.decide(&first, &["/id-mn/Cx"]), Ok("/id-mn/Cx"));
        // cse_ae_ids needs a namespace somewhere; overwrite with a namespace is an error
        let err = |yaml: &str| {
            OriginatorPolicy::from_config(&serde_yaml_ng::from_str(yaml).unwrap())
                .err()
                .map(|e| e.key)
        };
        assert_eq!(
            err("by_role: [{role: cse, mode: overwrite, cse_namespace: true}]"),
            Some("originator.by_role[0].cse_namespace".into())
        );
        assert_eq!(
            err("by_role: [{role: cse, mode: verify}]\ncse_ae_ids: {/id-mn: \"^C\"}"),
            Some("originator.cse_ae_ids./id-mn".into())
        );
        assert_eq!(
            err("by_role: [{role: \"\", mode: verify}]"),
            Some("originator.by_role[0].role".into())
        );
        assert!(serde_yaml_ng::from_str::<OriginatorConfig>("by_role: [{role: cse}]").is_err());
    }

    #[test]
    fn cse_namespaces_are_bounded() {
        let config = OriginatorConfig {
            mode: OriginatorMode::Verify,
            cse_namespace: true,
            cse_ae_ids: [("/id-mn".to_string(), "^Cmn-".to_string())].into(),
            ..Default::default()
        };
        let p = OriginatorPolicy::build(&config, Some(&local_cse())).unwrap();
        let mn = id("/id-mn", &[]);
        assert_eq!(p.decide(&mn, &["/id-mn/Cmn-1"]), Ok("/id-mn/Cmn-1"));
        assert_eq!(
            p.decide(&mn, &["//acme.example.com/id-mn/Cmn-1"]),
            Ok("/id-mn/Cmn-1")
        );
        for claim in ["/id-mn/Cmn-1/x", "/id-mn/mn-1", "/id-mn/", "/id-mn2/Cmn-1"] {
            assert_eq!(p.decide(&mn, &[claim]), Err(Refusal::NotAllowed), "{claim}");
        }
        // the AE-ID pattern is for registrations: other requests need the AE-ID shape only
        assert!(p.checks_registrations());
        assert_eq!(p.decide(&mn, &["/id-mn/CAdmin"]), Ok("/id-mn/CAdmin"));
        assert!(!p.may_register(&mn, "/id-mn/CAdmin"));
        assert!(p.may_register(&mn, "/id-mn/Cmn-1"));
        assert!(p.may_register(&mn, "/id-mn"));
        let other = id("/id-mn2", &[]);
        assert_eq!(p.decide(&other, &["/id-mn2/Sany"]), Ok("/id-mn2/Sany"));
        assert!(p.may_register(&other, "/id-mn2/Sany"));
        assert!(p.may_register(&id("Cae1", &[]), "Cae1"));
        for (who, claim) in [
            ("//acme.example.com", "//acme.example.com/id-in/CAdmin"),
            ("//acme.example.com", "//acme.example.com/Cx"),
            ("/id-mn/Cae1", "/id-mn/Cae1/Cx"),
        ] {
            assert_eq!(
                p.decide(&id(who, &[]), &[claim]),
                Err(Refusal::NotAllowed),
                "{who} {claim}"
            );
        }
        // config errors name the key
        let bad = |cse_namespace: bool, key: &str, re: &str| {
            OriginatorPolicy::from_config(&OriginatorConfig {
                cse_namespace,
                cse_ae_ids: [(key.to_string(), re.to_string())].into(),
                ..Default::default()
            })
            .err()
            .map(|e| e.key)
        };
        let key = Some("originator.cse_ae_ids./id-mn".to_string());
        assert_eq!(bad(false, "/id-mn", "^C"), key);
        assert_eq!(bad(true, "/id-mn", "("), key);
        assert_eq!(
            bad(true, "id-mn", "^C"),
            Some("originator.cse_ae_ids.id-mn".to_string())
        );
        assert_eq!(bad(true, "/id-mn", "^C"), None);
    }
}
