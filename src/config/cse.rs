//! `cse`: the identity of the local CSE behind the proxy. With it, every form of a target
//! (CSE-relative, SP-relative, absolute) and of an originator is read as one canonical form
//! (`crate::cse::LocalCse`); here is the data and its syntax check. `advertised` and
//! `public_url`: the addresses the CSE puts into its own `poa` and what peers must use instead
//! (`crate::poa`).

use serde::Deserialize;

use super::value::KeyError;
use crate::originator_syntax::validate_originator;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CseConfig {
    /// The CSE-ID, `/id-in`.
    pub id: String,
    /// The CSEBase resource name, `cse-in`.
    pub name: String,
    /// The M2M-SP-ID as absolute targets carry it (`acme.example.com`, or `//acme.example.com`).
    #[serde(default)]
    pub sp_id: Option<String>,
    /// `poa` prefixes the CSE puts into its own resources (its bind address); default: the
    /// upstream URL. Used only with `public_url`.
    #[serde(default)]
    pub advertised: Option<Vec<String>>,
    /// This sidecar's public ingress URL (https): what leaves the pod instead of `advertised`.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// One segment of a target as the proxy reads it: visible ASCII, no `/`, not a dot segment, no
/// form marker at its start.
fn segment(value: &str) -> Result<(), String> {
    validate_originator(value)?;
    if value.contains('/') || value == "." || value == ".." {
        return Err(format!("expected one path segment, got {value:?}"));
    }
    if value.starts_with('~') || value.starts_with('_') {
        return Err(format!(
            "expected no ~ or _ at the start (target form markers), got {value:?}"
        ));
    }
    Ok(())
}

impl CseConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        let id = self.id.strip_prefix('/').filter(|s| !s.starts_with('/'));
        id.ok_or_else(|| format!("expected a CSE-ID like \"/id-in\", got {:?}", self.id))
            .and_then(segment)
            .map_err(|m| KeyError::new("cse.id", m))?;
        segment(&self.name)
            .and_then(|()| match self.name.as_str() {
                "-" => Err("`-` stands for the CSEBase name; give the name itself".into()),
                _ => Ok(()),
            })
            .map_err(|m| KeyError::new("cse.name", m))?;
        if let Some(sp) = &self.sp_id {
            segment(self.sp_id_bare().unwrap_or(sp)).map_err(|m| {
                KeyError::new(
                    "cse.sp_id",
                    format!("expected an M2M-SP-ID like \"acme.example.com\": {m}"),
                )
            })?;
        }
        if let Some(url) = &self.public_url {
            match crate::poa::check_base(url) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(KeyError::new(
                        "cse.public_url",
                        format!(
                            "expected the https URL of this sidecar's public listener, got {url:?}"
                        ),
                    ))
                }
                Err(m) => return Err(KeyError::new("cse.public_url", m)),
            }
        }
        match &self.advertised {
            Some(list) if list.is_empty() => {
                return Err(KeyError::new(
                    "cse.advertised",
                    "expected at least one URL (omit the key for the upstream URL)",
                ))
            }
            Some(_) if self.public_url.is_none() => {
                return Err(KeyError::new(
                    "cse.advertised",
                    "has no effect without cse.public_url (what the advertised addresses become): set it, or remove this key",
                ))
            }
            Some(list) => {
                for (i, url) in list.iter().enumerate() {
                    let key = format!("cse.advertised[{i}]");
                    crate::poa::check_base(url).map_err(|m| KeyError::new(key.clone(), m))?;
                    let public = self.public_url.as_deref().unwrap_or_default();
                    if crate::poa::same_origin(url, public).unwrap_or(false) {
                        return Err(KeyError::new(
                            key,
                            format!("{url:?} is cse.public_url's own origin: a CSE that advertises its public URL needs no mapping"),
                        ));
                    }
                }
            }
            None => {}
        }
        Ok(())
    }

    /// The `poa` prefixes the CSE advertises: `advertised`, or else the upstream URL.
    pub fn advertised_or<'a>(&'a self, upstream: &'a str) -> Vec<&'a str> {
        match &self.advertised {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => vec![upstream],
        }
    }

    /// `sp_id` without a leading `//`.
    pub fn sp_id_bare(&self) -> Option<&str> {
        self.sp_id
            .as_deref()
            .map(|s| s.strip_prefix("//").unwrap_or(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cse(id: &str, name: &str, sp: Option<&str>) -> CseConfig {
        CseConfig {
            id: id.into(),
            name: name.into(),
            sp_id: sp.map(str::to_string),
            advertised: None,
            public_url: None,
        }
    }

    #[test]
    fn syntax_is_checked_per_key() {
        assert!(cse("/id-in", "cse-in", None).validate().is_ok());
        assert!(cse("/id-in", "cse-in", Some("//acme.example.com"))
            .validate()
            .is_ok());
        assert_eq!(
            cse("/id-in", "cse-in", Some("//acme.example.com")).sp_id_bare(),
            Some("acme.example.com")
        );
        for (c, key) in [
            (cse("id-in", "cse-in", None), "cse.id"),
            (cse("//id-in", "cse-in", None), "cse.id"),
            (cse("/id-in/x", "cse-in", None), "cse.id"),
            (cse("/", "cse-in", None), "cse.id"),
            (cse("/~id", "cse-in", None), "cse.id"),
            (cse("/id-in", "cse/in", None), "cse.name"),
            (cse("/id-in", "-", None), "cse.name"),
            (cse("/id-in", "..", None), "cse.name"),
            (cse("/id-in", "_cse", None), "cse.name"),
            (cse("/id-in", "", None), "cse.name"),
            (cse("/id-in", "cse-in", Some("a/b")), "cse.sp_id"),
            (cse("/id-in", "cse-in", Some("//")), "cse.sp_id"),
            (cse("/id-in", "cse-in", Some("sp com")), "cse.sp_id"),
        ] {
            assert_eq!(c.validate().unwrap_err().key, key, "{c:?}");
        }
    }

    #[test]
    fn public_url_is_https_and_advertised_needs_it() {
        let with = |advertised: Option<&[&str]>, public: Option<&str>| CseConfig {
            advertised: advertised.map(|a| a.iter().map(|s| s.to_string()).collect()),
            public_url: public.map(str::to_string),
            ..cse("/id-in", "cse-in", None)
        };
        let public = Some("https://mn.example.com:8443");
        assert!(with(None, public).validate().is_ok());
        assert!(
            with(Some(&["http://127.0.0.1:3000", "http://10.0.0.5"]), public)
                .validate()
                .is_ok()
        );
        assert_eq!(
            with(None, public).advertised_or("http://127.0.0.1:2"),
            ["http://127.0.0.1:2"]
        );
        for (c, key, says) in [
            (
                with(None, Some("http://mn.example.com")),
                "cse.public_url",
                "https",
            ),
            (
                with(None, Some("https://u:p@mn")),
                "cse.public_url",
                "base URL",
            ),
            (
                with(None, Some("https://mn/?q")),
                "cse.public_url",
                "base URL",
            ),
            (with(Some(&[]), public), "cse.advertised", "at least one"),
            (
                with(Some(&["http://127.0.0.1:3000"]), None),
                "cse.advertised",
                "cse.public_url",
            ),
            (
                with(Some(&["http://127.0.0.1:3000", "tcp://x"]), public),
                "cse.advertised[1]",
                "base URL",
            ),
            (
                with(Some(&["https://MN.example.com:8443/cse"]), public),
                "cse.advertised[0]",
                "origin",
            ),
        ] {
            let err = c.validate().unwrap_err();
            assert_eq!(err.key, key, "{c:?}");
            assert!(err.message.contains(says), "{}", err.message);
        }
    }
}
