//! `auth.roles`: roles given to identities by name or by a pattern on the name, each entry bound
//! to the methods that may prove those names (a certificate's SAN and a Basic user name are
//! different namespaces: a role meant for a certificate must not be claimable with a password).
//! Added to the roles an identity already has (a JWT claim, the introspection operator flag).
//! Reloaded with the config file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::Regex;

use crate::config::auth::RoleMembers;
use crate::config::KeyError;
use crate::identity::{Identity, Method};

/// A set of methods, one bit per [`Method`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Methods(u64);

impl Methods {
    fn of(methods: &[Method]) -> Methods {
        Methods(methods.iter().fold(0, |m, x| m | bit(*x)))
    }
    fn has(self, m: Method) -> bool {
        self.0 & bit(m) != 0
    }
}

fn bit(m: Method) -> u64 {
    m.bit()
}

#[derive(Default)]
pub struct Roles {
    by_name: HashMap<String, Vec<(String, Methods)>>,
    patterns: Vec<(String, Regex, Methods)>,
}

/// The methods an entry of `auth.roles` grants to: its `methods`, or, when it has none, the one
/// enabled method. Without `methods` while several methods are enabled the entry is an error:
/// a name would grant the role whatever proved it.
pub fn bound_methods(
    role: &str,
    members: &RoleMembers,
    enabled: &[Method],
) -> Result<Vec<Method>, KeyError> {
    if let Some(methods) = &members.methods {
        return Ok(methods.clone());
    }
    if enabled.len() <= 1 {
        return Ok(enabled.to_vec());
    }
    let names = |m: &[Method]| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
    let what = if members.patterns.is_empty() {
        format!("names: {:?}", members.names)
    } else if members.names.is_empty() {
        format!("patterns: {:?}", members.patterns)
    } else {
        format!(
            "names: {:?}, patterns: {:?}",
            members.names, members.patterns
        )
    };
    Err(KeyError::new(
        format!("auth.roles.{role}"),
        format!(
            "grants by identity name without `methods`, while several methods are enabled ({}): \
             a Basic user or a token named like a certificate identity would get the role. Say \
             which methods prove these names, e.g. `{role}: {{methods: [{}], {what}}}`",
            names(enabled),
            enabled[0].as_str(),
        ),
    ))
}

impl Roles {
    /// `enabled`: `auth.methods`, which decides what an entry without `methods` means.
    pub fn from_config(
        roles: &BTreeMap<String, RoleMembers>,
        enabled: &[Method],
    ) -> Result<Roles, KeyError> {
        let mut out = Roles::default();
        for (role, members) in roles {
            let methods = Methods::of(&bound_methods(role, members, enabled)?);
            for name in &members.names {
                out.by_name
                    .entry(name.clone())
                    .or_default()
                    .push((role.clone(), methods));
            }
            for p in &members.patterns {
                let re = Regex::new(p).map_err(|e| {
                    KeyError::new(
                        format!("auth.roles.{role}.patterns"),
                        format!("expected regular expressions: {p:?}: {e}"),
                    )
                })?;
                out.patterns.push((role.clone(), re, methods));
            }
        }
        Ok(out)
    }

    /// The identity with the roles `auth.roles` gives its name as proven by its method (the
    /// same `Arc` when none).
    pub fn apply(&self, identity: Arc<Identity>) -> Arc<Identity> {
        let method = identity.proven_by;
        let missing = |role: &String| !identity.roles.contains(role);
        let named = self
            .by_name
            .get(&identity.name)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(|(role, m)| m.has(method) && missing(role))
            .map(|(role, _)| role);
        let by_pattern = self
            .patterns
            .iter()
            .filter(|(role, re, m)| m.has(method) && missing(role) && re.is_match(&identity.name))
            .map(|(role, _, _)| role);
        let extra: Vec<&String> = named.chain(by_pattern).collect();
        if extra.is_empty() {
            return identity;
        }
        let mut with = (*identity).clone();
        for role in extra {
            if !with.roles.contains(role) {
                with.roles.push(role.clone());
            }
        }
        Arc::new(with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, method: Method, roles: &[&str]) -> Arc<Identity> {
        Arc::new(Identity {
            name: name.into(),
            proven_by: method,
            originator: name.into(),
            also_allowed: Vec::new(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        })
    }

    fn config(yaml: &str) -> BTreeMap<String, RoleMembers> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn names_and_patterns_give_roles_once() {
        let config = config(
            "sysop: [Cadmin-tool]\ncse:\n  patterns: [\"^/id-[a-z0-9-]+$\"]\nboth:\n  names: [\"/id-mn\"]\n  patterns: [\"^/id-mn$\"]\n",
        );
        let roles = Roles::from_config(&config, &[Method::Mtls]).unwrap();
        let mtls = |name, roles: &[&str]| id(name, Method::Mtls, roles);
        assert_eq!(roles.apply(mtls("Cadmin-tool", &[])).roles, ["sysop"]);
        let mut mn = roles.apply(mtls("/id-mn", &["sysop"])).roles.clone();
        mn.sort();
        assert_eq!(mn, ["both", "cse", "sysop"]);
        assert!(roles.apply(mtls("/id-mn/Cae1", &[])).roles.is_empty());
        let plain = mtls("Cae1", &[]);
        assert!(
            Arc::ptr_eq(&roles.apply(plain.clone()), &plain),
            "no copy without roles"
        );
        let bad = config_err("cse:\n  patterns: [\"(\"]\n", &[Method::Mtls]);
        assert!(bad.contains("auth.roles.cse.patterns"), "{bad}");
    }

    fn config_err(yaml: &str, enabled: &[Method]) -> String {
        Roles::from_config(&config(yaml), enabled)
            .err()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_role_is_given_only_to_identities_of_its_methods() {
        let both = [Method::Mtls, Method::Basic, Method::Bearer];
        let roles = Roles::from_config(
            &config(
                "sysop: {methods: [mtls], names: [CAdmin]}\ncse: {methods: [mtls, bearer], patterns: [\"^/id-\"]}\n",
            ),
            &both,
        )
        .unwrap();
        assert_eq!(
            roles.apply(id("CAdmin", Method::Mtls, &[])).roles,
            ["sysop"]
        );
        assert!(roles
            .apply(id("CAdmin", Method::Basic, &[]))
            .roles
            .is_empty());
        assert!(roles
            .apply(id("CAdmin", Method::Bearer, &[]))
            .roles
            .is_empty());
        assert_eq!(
            roles.apply(id("/id-mn", Method::Bearer, &[])).roles,
            ["cse"]
        );
        assert!(roles
            .apply(id("/id-mn", Method::Basic, &[]))
            .roles
            .is_empty());
        // a bare entry binds to the only enabled method
        let one = Roles::from_config(&config("sysop: [CAdmin]\n"), &[Method::Basic]).unwrap();
        assert_eq!(one.apply(id("CAdmin", Method::Basic, &[])).roles, ["sysop"]);
        assert!(one.apply(id("CAdmin", Method::Mtls, &[])).roles.is_empty());
        // and is an error naming the key and the rewrite when several are enabled
        let err = config_err("sysop: [CAdmin]\n", &both);
        assert!(err.contains("auth.roles.sysop"), "{err}");
        assert!(err.contains("mtls, basic, bearer"), "{err}");
        assert!(
            err.contains("sysop: {methods: [mtls], names: [\"CAdmin\"]}"),
            "{err}"
        );
        let err = config_err("cse: {patterns: [\"^/id-\"]}\n", &both);
        assert!(
            err.contains("cse: {methods: [mtls], patterns: [\"^/id-\"]}"),
            "{err}"
        );
    }
}
