//! `cse`: the identity of the local CSE behind the proxy. With it, every form of a target
//! (CSE-relative, SP-relative, absolute) and of an originator is read as one canonical form
//! (`crate::cse::LocalCse`); here is the data and its syntax check.

use serde::Deserialize;

use super::value::KeyError;
use crate::originator_syntax::validate_originator;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CseConfig {
    /// The CSE-ID, `/id-in`.
    pub id: String,
    /// The CSEBase resource name, `cse-in`.
    pub name: String,
    /// The M2M-SP-ID as absolute targets carry it (`acme.example.com`, or `//acme.example.com`).
    #[serde(default)]
    pub sp_id: Option<String>,
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
        Ok(())
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
}
