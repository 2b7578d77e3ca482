//! What an originator (`X-M2M-Origin`) may look like: the one rule that certificates, htpasswd mappings, tokens,
//! JWT claims and the policy all apply. A leaf module: it imports nothing of the crate.

/// Longest originator we forward; oneM2M IDs are short, this only bounds hostile input.
pub const MAX_ORIGINATOR_LEN: usize = 1024;

/// An originator that may be used, with `*` matching any run of characters within one `/`
/// segment: `Cgw-*` admits `Cgw-7`, never `Cgw-x/id-mn2` (a CSE takes the last segment of an
/// AE's originator as its resource ID, so a run across `/` could name another AE or a CSE).
/// More segments are allowed only where the pattern writes them: `/id-mn/C*`, `/*/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginatorPattern {
    /// Per `/` segment, its literal parts between `*`s.
    segments: Vec<Vec<String>>,
}

impl OriginatorPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        validate_originator(pattern)?;
        Ok(OriginatorPattern {
            segments: pattern
                .split('/')
                .map(|seg| seg.split('*').map(str::to_owned).collect())
                .collect(),
        })
    }

    /// The pattern as written.
    pub fn source(&self) -> String {
        self.segments
            .iter()
            .map(|parts| parts.join("*"))
            .collect::<Vec<_>>()
            .join("/")
    }

    pub fn matches(&self, candidate: &str) -> bool {
        let mut segs = candidate.split('/');
        let all = self
            .segments
            .iter()
            .all(|parts| segs.next().is_some_and(|seg| glob(parts, seg)));
        all && segs.next().is_none()
    }
}

/// `parts` (a segment's literals between `*`s) match the whole of `candidate`.
fn glob(parts: &[String], candidate: &str) -> bool {
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return false,
    };
    let Some(mut remaining) = candidate.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        // no `*`: exact match
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part.as_str()) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last.as_str())
}

/// An originator must be usable as one HTTP header value: visible ASCII only, bounded length.
pub fn validate_originator(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("expected a non-empty originator".into());
    }
    if value.len() > MAX_ORIGINATOR_LEN {
        return Err(format!(
            "expected at most {MAX_ORIGINATOR_LEN} bytes, got {}",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "expected visible ASCII characters only, found {:?}",
            c.escape_default().to_string()
        ));
    }
    // HTTP list and quoting syntax: a CSE could split "Cae-1,CAdmin" into two originators.
    if let Some(c) = value.chars().find(|c| matches!(c, ',' | ';' | '"' | '\\')) {
        return Err(format!(
            "expected no list or quoting characters, found {c:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = OriginatorPattern::parse("Cgw-*-x").unwrap();
        assert!(p.matches("Cgw-1-x"));
        assert!(p.matches("Cgw--x"));
        assert!(!p.matches("Cgw-x"));
        assert!(!p.matches("Cgw-1-xy"));
        assert!(OriginatorPattern::parse("a*").unwrap().matches("a"));
        assert!(OriginatorPattern::parse("*").unwrap().matches("anything"));
        assert!(!OriginatorPattern::parse("abc").unwrap().matches("abcd"));
        assert!(OriginatorPattern::parse("bad value").is_err());
    }

    #[test]
    fn a_star_stays_within_one_segment() {
        // finding 6 of the red-team run: `Cgw-*` took `Cgw-x/id-mn2`, an AE with the ID id-mn2
        let gw = OriginatorPattern::parse("Cgw-*").unwrap();
        assert!(gw.matches("Cgw-sensor1"));
        for claim in ["Cgw-x/id-mn2", "Cgw-x/Cvictim", "Cgw-/", "Cgw-x/"] {
            assert!(!gw.matches(claim), "{claim}");
        }
        let any = OriginatorPattern::parse("*").unwrap();
        assert!(any.matches("CAdmin"));
        assert!(!any.matches("/id-mn/CAdmin") && !any.matches("/id-mn"));
        // segments the pattern writes
        let ns = OriginatorPattern::parse("/id-mn/C*").unwrap();
        assert!(ns.matches("/id-mn/Cae1") && ns.matches("/id-mn/C"));
        assert!(!ns.matches("/id-mn/Cae1/x") && !ns.matches("/id-mn/id-mn2"));
        let all = OriginatorPattern::parse("/*/*").unwrap();
        assert!(all.matches("/id-mn/Cx") && !all.matches("/id-mn/Cx/y") && !all.matches("Cx"));
        let abs = OriginatorPattern::parse("//sp/*/C*").unwrap();
        assert!(abs.matches("//sp/id-mn/Cx") && !abs.matches("//sp/id-mn/Cx/Cy"));
        assert_eq!(abs.source(), "//sp/*/C*");
        assert!(OriginatorPattern::parse("a*b*c").unwrap().matches("a-b-c"));
        assert!(!OriginatorPattern::parse("a*c").unwrap().matches("a/c"));
    }

    #[test]
    fn originator_must_be_one_header_value() {
        assert!(validate_originator("Cae\r\nX: y").is_err());
        assert!(validate_originator("a\0b").is_err());
        assert!(validate_originator("caf\u{e9}").is_err());
        assert!(validate_originator(&"a".repeat(MAX_ORIGINATOR_LEN + 1)).is_err());
        assert!(validate_originator("//openmtc.org/mn-cse-1/CTestIPE").is_ok());
        assert!(validate_originator("admin:admin").is_ok());
        assert!(validate_originator("Cae-1,CAdmin").is_err());
        assert!(validate_originator("a;b").is_err());
    }
}
