//! The local CSE (config `cse`): what makes the forms of one originator one canonical value.
//! A CSE treats `CAdmin`, `/id-in/CAdmin` (SP-relative) and `//acme.example.com/id-in/CAdmin`
//! (absolute) as the same originator; the policy, the rules and the CSE must all see one of
//! them. Targets are made canonical with the same identity (`crate::target::canonical`).

use crate::config::{CseConfig, KeyError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCse {
    /// `/id-in`
    id: String,
    /// `cse-in`
    name: String,
    /// `acme.example.com`; `None`: any SP-ID names the local SP in absolute targets.
    sp_id: Option<String>,
}

impl LocalCse {
    pub fn from_config(c: &CseConfig) -> Result<LocalCse, KeyError> {
        c.validate()?;
        Ok(LocalCse {
            id: c.id.clone(),
            name: c.name.clone(),
            sp_id: c.sp_id_bare().map(str::to_string),
        })
    }

    /// The CSE-ID with its slash: `/id-in`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The CSE-ID as a path segment: `id-in`.
    pub fn id_segment(&self) -> &str {
        self.id.get(1..).unwrap_or("")
    }

    /// The CSEBase resource name: `cse-in`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sp_id(&self) -> Option<&str> {
        self.sp_id.as_deref()
    }

    /// Whether an SP-ID of an absolute target or originator names the local SP: the configured
    /// one (a domain name: letter case does not count), or any when none is configured.
    pub fn is_local_sp(&self, sp: &str) -> bool {
        self.sp_id
            .as_deref()
            .is_none_or(|own| own.eq_ignore_ascii_case(sp))
    }

    /// Whether the SP-ID is known to be the local one (configured and equal).
    pub fn is_known_sp(&self, sp: &str) -> bool {
        self.sp_id
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(sp))
    }

    /// The canonical form of an originator (or an originator pattern whose prefix is literal):
    /// `/id-in/CAdmin` and `//sp/id-in/CAdmin` (local SP-ID) become `CAdmin`; `//sp/id-mn/Cx`
    /// becomes `/id-mn/Cx` (same SP); everything else is returned as is. CSE-IDs are compared
    /// exactly (CSEs compare originators case-sensitively). Always a suffix of `o`.
    pub fn originator<'a>(&self, o: &'a str) -> &'a str {
        let sp_relative = match o.strip_prefix("//") {
            Some(rest) => match rest.split_once('/') {
                // `//sp/id-mn…` of the local SP is `/id-mn…`
                Some((sp, tail)) if self.is_local_sp(sp) && !tail.is_empty() => {
                    &o[o.len() - tail.len() - 1..]
                }
                _ => return o,
            },
            None => o,
        };
        match sp_relative
            .strip_prefix(self.id.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some(ae) if !ae.is_empty() => ae,
            _ => sp_relative,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn cse(sp: Option<&str>) -> LocalCse {
        LocalCse::from_config(&CseConfig {
            id: "/id-in".into(),
            name: "cse-in".into(),
            sp_id: sp.map(str::to_string),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn three_forms_of_an_originator_are_one() {
        let c = cse(Some("//acme.example.com"));
        assert_eq!(c.sp_id(), Some("acme.example.com"));
        for (o, canonical) in [
            ("CAdmin", "CAdmin"),
            ("/id-in/CAdmin", "CAdmin"),
            ("//acme.example.com/id-in/CAdmin", "CAdmin"),
            ("//ACME.example.com/id-in/CAdmin", "CAdmin"),
            ("/id-in/Cvictim", "Cvictim"),
            ("/id-in/C*", "C*"),
            // the CSE itself, another CSE, another SP: as they are (absolute of the local SP
            // becomes SP-relative)
            ("/id-in", "/id-in"),
            ("//acme.example.com/id-in", "/id-in"),
            ("/id-mn/Cae1", "/id-mn/Cae1"),
            ("//acme.example.com/id-mn/Cae1", "/id-mn/Cae1"),
            (
                "//other.example/id-in/CAdmin",
                "//other.example/id-in/CAdmin",
            ),
            // CSE-IDs are compared exactly
            ("/ID-IN/CAdmin", "/ID-IN/CAdmin"),
            ("/id-inx/CAdmin", "/id-inx/CAdmin"),
            ("/id-in/", "/id-in/"),
            ("//acme.example.com", "//acme.example.com"),
            ("//acme.example.com/", "//acme.example.com/"),
            ("", ""),
            ("/", "/"),
            ("//", "//"),
        ] {
            assert_eq!(c.originator(o), canonical, "{o}");
        }
        // without an SP-ID, any SP-ID is the local SP
        let c = cse(None);
        assert_eq!(c.originator("//any.example/id-in/CAdmin"), "CAdmin");
        assert_eq!(c.originator("//any.example/id-mn/C1"), "/id-mn/C1");
    }
}
