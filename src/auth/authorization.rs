//! Parsing the `Authorization` header into credentials. Never panics, never echoes its input.

use base64::Engine;
use http::HeaderValue;

/// Longest `Authorization` header accepted; real Basic/Bearer values are far shorter.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    Basic {
        user: String,
        password: Vec<u8>,
    },
    Bearer(BearerToken<'a>),
    /// A scheme no method understands.
    Other,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BearerToken<'a> {
    /// `Bearer <token>`.
    Token(&'a str),
    /// Arrowhead's `Bearer IDENTITY-TOKEN//<token>` (the token without the prefix).
    IdentityToken(&'a str),
    /// Arrowhead's declared form `Bearer SYSTEM//<name>`: a claim without proof.
    Declared(&'a str),
}

/// The client's credentials from its `Authorization` header(s); `Ok(None)` when there is none.
/// `Err` is a reason safe to send back: it never contains the header's content.
pub fn parse<'a>(values: &[&'a HeaderValue]) -> Result<Option<Credentials<'a>>, &'static str> {
    let value = match values {
        [] => return Ok(None),
        [one] => *one,
        _ => return Err("several Authorization headers"),
    };
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err("Authorization header too long");
    }
    let text = value
        .to_str()
        .map_err(|_| "Authorization header is not visible ASCII")?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        parse_basic(rest).map(Some)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        parse_bearer(rest).map(|t| Some(Credentials::Bearer(t)))
    } else {
        Ok(Some(Credentials::Other))
    }
}

fn parse_basic(encoded: &str) -> Result<Credentials<'static>, &'static str> {
    const MALFORMED: &str = "malformed Basic credentials";
    if encoded.is_empty() {
        return Err(MALFORMED);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| MALFORMED)?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or(MALFORMED)?;
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    let user = std::str::from_utf8(user).map_err(|_| MALFORMED)?;
    if user.is_empty() || user.chars().any(char::is_control) {
        return Err(MALFORMED);
    }
    if password.is_empty() {
        return Err("empty password");
    }
    Ok(Credentials::Basic {
        user: user.to_owned(),
        password: password.to_vec(),
    })
}

fn parse_bearer(value: &str) -> Result<BearerToken<'_>, &'static str> {
    const MALFORMED: &str = "malformed Bearer token";
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(MALFORMED);
    }
    if let Some(token) = value.strip_prefix("IDENTITY-TOKEN//") {
        return non_empty(token)
            .map(BearerToken::IdentityToken)
            .ok_or(MALFORMED);
    }
    if let Some(name) = value.strip_prefix("SYSTEM//") {
        return non_empty(name).map(BearerToken::Declared).ok_or(MALFORMED);
    }
    Ok(BearerToken::Token(value))
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(s).unwrap()
    }

    fn basic(user_pass: &[u8]) -> HeaderValue {
        let enc = base64::engine::general_purpose::STANDARD.encode(user_pass);
        hv(format!("Basic {enc}").as_bytes())
    }

    #[test]
    fn basic_forms() {
        let v = basic(b"Cae1:s3cret:with:colons");
        assert_eq!(
            parse(&[&v]),
            Ok(Some(Credentials::Basic {
                user: "Cae1".into(),
                password: b"s3cret:with:colons".to_vec()
            }))
        );
        let lower = hv(format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("a:b")
        )
        .as_bytes());
        assert!(matches!(
            parse(&[&lower]),
            Ok(Some(Credentials::Basic { .. }))
        ));
        assert_eq!(
            parse(&[&basic(b"nocolon")]),
            Err("malformed Basic credentials")
        );
        assert_eq!(parse(&[&basic(b":pw")]), Err("malformed Basic credentials"));
        assert_eq!(parse(&[&basic(b"user:")]), Err("empty password"));
        assert_eq!(
            parse(&[&basic(b"\xff\xfe:pw")]),
            Err("malformed Basic credentials")
        );
        assert_eq!(
            parse(&[&hv(b"Basic !!!")]),
            Err("malformed Basic credentials")
        );
        assert_eq!(parse(&[&hv(b"Basic")]), Err("malformed Basic credentials"));
    }

    #[test]
    fn bearer_forms() {
        let plain = hv(b"Bearer abc.def");
        assert_eq!(
            parse(&[&plain]),
            Ok(Some(Credentials::Bearer(BearerToken::Token("abc.def"))))
        );
        let arrowhead = hv(b"Bearer IDENTITY-TOKEN//3d7b084d-1259");
        assert_eq!(
            parse(&[&arrowhead]),
            Ok(Some(Credentials::Bearer(BearerToken::IdentityToken(
                "3d7b084d-1259"
            ))))
        );
        let declared = hv(b"Bearer SYSTEM//TemperatureConsumer1");
        assert_eq!(
            parse(&[&declared]),
            Ok(Some(Credentials::Bearer(BearerToken::Declared(
                "TemperatureConsumer1"
            ))))
        );
        assert_eq!(parse(&[&hv(b"Bearer")]), Err("malformed Bearer token"));
        assert_eq!(
            parse(&[&hv(b"Bearer IDENTITY-TOKEN//")]),
            Err("malformed Bearer token")
        );
        assert_eq!(parse(&[&hv(b"Bearer a b")]), Err("malformed Bearer token"));
    }

    #[test]
    fn header_level_refusals() {
        let a = hv(b"Bearer x");
        let b = hv(b"Bearer y");
        assert_eq!(parse(&[&a, &b]), Err("several Authorization headers"));
        let long = hv(format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN)).as_bytes());
        assert_eq!(parse(&[&long]), Err("Authorization header too long"));
        assert_eq!(
            parse(&[&hv(b"Bearer \xe9t\xe9")]),
            Err("Authorization header is not visible ASCII")
        );
        assert_eq!(parse(&[&hv(b"Digest x=y")]), Ok(Some(Credentials::Other)));
        assert_eq!(parse(&[]), Ok(None));
    }
}
