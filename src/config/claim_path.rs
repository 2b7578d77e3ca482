//! Where a value sits in a JWT's claims or an introspection answer: `sub`, a dotted path to a
//! nested member (`m2m.originator`), a path with a quoted segment for member names that hold
//! dots (`"https://m2m.example/orig"`, `ext."a.b".id`), or the segments as a YAML list
//! (`["https://m2m.example/orig"]`).

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The member names from the top of the JSON object down to the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// A dotted path; a segment in double quotes is taken whole (it may hold dots, no quotes).
    pub fn parse(text: &str) -> Result<ClaimPath, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        loop {
            let (segment, after) = match rest.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"').ok_or_else(|| {
                        format!("{text:?}: a quoted segment has no closing quote")
                    })?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => match rest.find('.') {
                    Some(dot) => (&rest[..dot], &rest[dot..]),
                    None => (rest, ""),
                },
            };
            if segment.is_empty() {
                return Err(format!("{text:?}: empty segment in a claim path"));
            }
            if segment.contains('"') {
                return Err(format!(
                    "{text:?}: a quote may only open or close a whole segment"
                ));
            }
            segments.push(segment.to_owned());
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None if after.is_empty() => return Ok(ClaimPath(segments)),
                None => {
                    return Err(format!(
                        "{text:?}: expected `.` or the end after a quoted segment"
                    ))
                }
            }
        }
    }

    /// The segments as given (a YAML list): any non-empty names, dots included.
    pub fn from_segments(segments: Vec<String>) -> Result<ClaimPath, String> {
        if segments.is_empty() || segments.iter().any(String::is_empty) {
            return Err("expected a non-empty list of non-empty claim names".into());
        }
        Ok(ClaimPath(segments))
    }

    /// The value at this path, if every member on the way exists.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(root, |v, key| v.get(key))
    }
}

impl From<&str> for ClaimPath {
    /// A single member name, taken whole (for defaults such as `sub`).
    fn from(name: &str) -> Self {
        ClaimPath(vec![name.to_owned()])
    }
}

/// The dotted form, segments with dots quoted: what `check` shows.
impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            if segment.contains('.') {
                write!(f, "\"{segment}\"")?;
            } else {
                f.write_str(segment)?;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for ClaimPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Dotted(String),
            Segments(Vec<String>),
        }
        let form = Form::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a claim name, a dotted path (`m2m.originator`, `\"a.b\".c`) or a list of names",
            )
        })?;
        match form {
            Form::Dotted(text) => ClaimPath::parse(&text),
            Form::Segments(segments) => ClaimPath::from_segments(segments),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn segments(text: &str) -> Vec<String> {
        ClaimPath::parse(text).unwrap().0
    }

    #[test]
    fn dotted_and_quoted_paths() {
        assert_eq!(segments("sub"), ["sub"]);
        assert_eq!(segments("m2m.originator"), ["m2m", "originator"]);
        assert_eq!(
            segments("\"https://m2m.example/orig\""),
            ["https://m2m.example/orig"]
        );
        assert_eq!(segments("ext.\"a.b\".id"), ["ext", "a.b", "id"]);
        for bad in [
            "", ".a", "a.", "a..b", "\"a", "\"a\"b", "a\"b\"", "\"\"", "a.\"\"",
        ] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lookup_follows_the_segments() {
        let claims = json!({"sub": "x", "m2m": {"originator": "Cae-1"},
            "https://m2m.example/orig": "Cns-1", "m2m.originator": "flat"});
        let at = |p: &str| ClaimPath::parse(p).unwrap().get(&claims).cloned();
        assert_eq!(at("m2m.originator"), Some(json!("Cae-1")));
        assert_eq!(at("\"m2m.originator\""), Some(json!("flat")));
        assert_eq!(at("\"https://m2m.example/orig\""), Some(json!("Cns-1")));
        // unquoted, the same name is a path that does not exist: fails closed
        assert_eq!(at("https://m2m.example/orig"), None);
        assert_eq!(at("sub.deeper"), None);
    }

    #[test]
    fn yaml_string_or_list() {
        let p: ClaimPath = serde_yaml_ng::from_str("[\"https://m2m.example/orig\"]").unwrap();
        assert_eq!(p.0, ["https://m2m.example/orig"]);
        assert_eq!(p.to_string(), "\"https://m2m.example/orig\"");
        let p: ClaimPath = serde_yaml_ng::from_str("m2m.originator").unwrap();
        assert_eq!(p.to_string(), "m2m.originator");
        assert!(serde_yaml_ng::from_str::<ClaimPath>("[]").is_err());
        assert!(serde_yaml_ng::from_str::<ClaimPath>("[a, '']").is_err());
        assert!(serde_yaml_ng::from_str::<ClaimPath>("a..b").is_err());
    }
}
