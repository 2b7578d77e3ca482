//! `auth.roles`: roles given to identities by name or by a pattern on the name, whatever method
//! proved them (a certificate's SAN, a user name, a token name). Added to the roles an identity
//! already has (a JWT claim, the introspection operator flag). Reloaded with the config file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::Regex;

use crate::config::auth::RoleMembers;
use crate::config::KeyError;
use crate::identity::Identity;

#[derive(Default)]
pub struct Roles {
    by_name: HashMap<String, Vec<String>>,
    patterns: Vec<(String, Regex)>,
}

impl Roles {
    pub fn from_config(roles: &BTreeMap<String, RoleMembers>) -> Result<Roles, KeyError> {
        let mut out = Roles::default();
        for (role, members) in roles {
            for name in &members.names {
                out.by_name
                    .entry(name.clone())
                    .or_default()
                    .push(role.clone());
            }
            for p in &members.patterns {
                let re = Regex::new(p).map_err(|e| {
                    KeyError::new(
                        format!("auth.roles.{role}.patterns"),
                        format!("expected regular expressions: {p:?}: {e}"),
                    )
                })?;
                out.patterns.push((role.clone(), re));
            }
        }
        Ok(out)
    }

    /// The identity with the roles `auth.roles` gives its name (the same `Arc` when none).
    pub fn apply(&self, identity: Arc<Identity>) -> Arc<Identity> {
        let named = self
            .by_name
            .get(&identity.name)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let missing = |role: &String| !identity.roles.contains(role);
        let by_pattern = self
            .patterns
            .iter()
            .filter(|(role, re)| missing(role) && re.is_match(&identity.name));
        let mut extra: Vec<&String> = named.iter().filter(|r| missing(r)).collect();
        extra.extend(by_pattern.map(|(role, _)| role));
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
    use crate::identity::Method;

    fn id(name: &str, roles: &[&str]) -> Arc<Identity> {
        Arc::new(Identity {
            name: name.into(),
            proven_by: Method::Mtls,
            originator: name.into(),
            also_allowed: Vec::new(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        })
    }

    #[test]
    fn names_and_patterns_give_roles_once() {
        let config: BTreeMap<String, RoleMembers> = serde_yaml_ng::from_str(
            "sysop: [Cadmin-tool]\ncse:\n  patterns: [\"^/id-[a-z0-9-]+$\"]\nboth:\n  names: [\"/id-mn\"]\n  patterns: [\"^/id-mn$\"]\n",
        )
        .unwrap();
        let roles = Roles::from_config(&config).unwrap();
        assert_eq!(roles.apply(id("Cadmin-tool", &[])).roles, ["sysop"]);
        let mut mn = roles.apply(id("/id-mn", &["sysop"])).roles.clone();
        mn.sort();
        assert_eq!(mn, ["both", "cse", "sysop"]);
        assert!(roles.apply(id("/id-mn/Cae1", &[])).roles.is_empty());
        let plain = id("Cae1", &[]);
        assert!(
            Arc::ptr_eq(&roles.apply(plain.clone()), &plain),
            "no copy without roles"
        );
        let bad: BTreeMap<String, RoleMembers> =
            serde_yaml_ng::from_str("cse:\n  patterns: [\"(\"]\n").unwrap();
        let err = Roles::from_config(&bad).err().unwrap().to_string();
        assert!(err.contains("auth.roles.cse.patterns"), "{err}");
    }
}
