//! The URL mappings of `poa` strings (`PoaMap`): base URLs as configured, the strings under
//! them, and the rewriting of a body's poa strings by them.

use std::net::Ipv6Addr;
use std::ops::Range;

use super::cbor::cbor_poa_strings;
use super::json::json_poa_strings;
use super::{Direction, Encoding};

/// The URL mappings and the rewriting by them: each route's pair of peer and local base URLs
/// (both ways), and the local CSE's advertised addresses and public URL (`cse.public_url`).
#[derive(Debug, Clone, Default)]
pub struct PoaMap {
    /// In the order added: the first that matches a string rewrites it, none after it.
    rules: Vec<Rule>,
}

/// One way of one mapping: in bodies travelling `direction`, a string under `from` becomes
/// `to` + the rest. `label` tells the mappings apart (for counting).
#[derive(Debug, Clone)]
struct Rule {
    direction: Direction,
    from: Base,
    to: Base,
    label: usize,
}

impl PoaMap {
    /// One `(peer, local)` pair per route, e.g.
    /// `("https://in-cse.example:8443", "http://127.0.0.1:8081")`, labelled by position.
    pub fn new(routes: &[(&str, &str)]) -> Result<PoaMap, String> {
        let mut map = PoaMap::default();
        for (label, (peer, local)) in routes.iter().enumerate() {
            map.add_pair(peer, local, label)?;
        }
        Ok(map)
    }

    /// A route's mapping: `peer` becomes `local` toward the local CSE, and back away from it.
    pub fn add_pair(&mut self, peer: &str, local: &str, label: usize) -> Result<(), String> {
        let (peer, local) = (Base::parse(peer)?, Base::parse(local)?);
        self.rules.push(Rule {
            direction: Direction::TowardLocal,
            from: peer.clone(),
            to: local.clone(),
            label,
        });
        self.rules.push(Rule {
            direction: Direction::AwayFromLocal,
            from: local,
            to: peer,
            label,
        });
        Ok(())
    }

    /// The local CSE's own addresses: away from it each `advertised` prefix becomes `public`,
    /// toward it `public` becomes the first `advertised` prefix.
    pub fn add_public(
        &mut self,
        advertised: &[&str],
        public: &str,
        label: usize,
    ) -> Result<(), String> {
        let public = Base::parse(public)?;
        let advertised = advertised
            .iter()
            .map(|a| Base::parse(a))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = advertised.first() else {
            return Err("no advertised address".into());
        };
        self.rules.push(Rule {
            direction: Direction::TowardLocal,
            from: public.clone(),
            to: first.clone(),
            label,
        });
        for from in advertised {
            self.rules.push(Rule {
                direction: Direction::AwayFromLocal,
                from,
                to: public.clone(),
                label,
            });
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The body with its poa strings rewritten, and how many changed; `None` when nothing
    /// changed or the body does not parse (the caller then forwards the original).
    pub fn rewrite(
        &self,
        body: &[u8],
        encoding: Encoding,
        direction: Direction,
    ) -> Option<(Vec<u8>, usize)> {
        let mut changed = 0;
        let out = self.rewrite_each(body, encoding, direction, |_| changed += 1)?;
        Some((out, changed))
    }

    /// `rewrite`, calling `count` with the label of the mapping that changed each string.
    pub fn rewrite_each(
        &self,
        body: &[u8],
        encoding: Encoding,
        direction: Direction,
        count: impl FnMut(usize),
    ) -> Option<Vec<u8>> {
        self.rewrite_where(body, encoding, direction, |_| true, count)
    }

    /// `rewrite_each` with only the mappings whose label `allowed` accepts.
    pub fn rewrite_where(
        &self,
        body: &[u8],
        encoding: Encoding,
        direction: Direction,
        allowed: impl Fn(usize) -> bool,
        mut count: impl FnMut(usize),
    ) -> Option<Vec<u8>> {
        if !self
            .rules
            .iter()
            .any(|r| r.direction == direction && allowed(r.label))
        {
            return None;
        }
        let mut edits = Vec::new();
        let mut labels = Vec::new();
        match encoding {
            Encoding::Json => {
                for span in json_poa_strings(body)? {
                    let token = body.get(span.clone())?;
                    // undecodable strings (lone surrogates) are not URLs: left alone
                    let Ok(old) = serde_json::from_slice::<String>(token) else {
                        continue;
                    };
                    if let Some((new, label)) = self.map(&old, direction, &allowed) {
                        edits.push((span, serde_json::to_vec(&new).ok()?));
                        labels.push(label);
                    }
                }
            }
            Encoding::Cbor => {
                for (span, old) in cbor_poa_strings(body)? {
                    if let Some((new, label)) = self.map(old, direction, &allowed) {
                        let mut e = minicbor::Encoder::new(Vec::new());
                        e.str(&new).ok()?;
                        edits.push((span, e.into_writer()));
                        labels.push(label);
                    }
                }
            }
        }
        if edits.is_empty() {
            return None;
        }
        let out = splice(body, &edits)?;
        labels.into_iter().for_each(&mut count);
        Some(out)
    }

    /// The rewritten URL and the label of the mapping that matched, when `s` matches one and
    /// the result differs. Only the first matching mapping is tried: a string is rewritten once.
    fn map(
        &self,
        s: &str,
        direction: Direction,
        allowed: &impl Fn(usize) -> bool,
    ) -> Option<(String, usize)> {
        let url = Url::parse(s)?;
        let rule = self
            .rules
            .iter()
            .filter(|r| r.direction == direction && allowed(r.label))
            .find_map(|r| r.from.tail(&url).map(|tail| (r, tail)));
        let (rule, tail) = rule?;
        let new = format!("{}{tail}", rule.to.text);
        (new != s).then_some((new, rule.label))
    }
}

/// Whether two base URLs name the same origin (scheme, host and port as `poa` strings are
/// compared): mappings from such bases could both match one string.
pub fn same_origin(a: &str, b: &str) -> Result<bool, String> {
    let (a, b) = (Base::parse(a)?, Base::parse(b)?);
    Ok(a.https == b.https && a.host == b.host && a.port == b.port)
}

/// Checks a base URL as the mappings take it (`scheme://host[:port][/path]`, no userinfo,
/// query or fragment); `Ok(true)` for https.
pub fn check_base(url: &str) -> Result<bool, String> {
    Base::parse(url).map(|b| b.https)
}

/// `body` with each range replaced; ranges in increasing, non-overlapping order.
fn splice(body: &[u8], edits: &[(Range<usize>, Vec<u8>)]) -> Option<Vec<u8>> {
    let grown: usize = edits.iter().map(|(_, new)| new.len()).sum();
    let mut out = Vec::with_capacity(body.len().saturating_add(grown));
    let mut at = 0;
    for (span, new) in edits {
        out.extend_from_slice(body.get(at..span.start)?);
        out.extend_from_slice(new);
        at = span.end;
    }
    out.extend_from_slice(body.get(at..)?);
    Some(out)
}

// --- URLs -----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Lower-cased registered name or IPv4 address.
    Name(String),
    /// Compared as an address, so `[::1]` equals `[0:0::1]`.
    V6(Ipv6Addr),
}

/// An http(s) URL split at the end of its authority.
struct Url<'a> {
    https: bool,
    host: Host,
    /// Explicit, or the scheme's default.
    port: u16,
    /// Everything after the authority: empty or starting with `/`, `?` or `#`.
    rest: &'a str,
}

impl<'a> Url<'a> {
    fn parse(s: &'a str) -> Option<Url<'a>> {
        let (scheme, after) = s.split_once("://")?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return None;
        };
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at_checked(end)?;
        // userinfo: credentials in a poa are not ours to move to another host
        if authority.contains('@') {
            return None;
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (addr, port) = v6.split_once(']')?;
                (Host::V6(addr.parse().ok()?), port)
            }
            None => {
                let colon = authority.find(':').unwrap_or(authority.len());
                let (name, port) = authority.split_at_checked(colon)?;
                let valid = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
                if name.is_empty() || !name.bytes().all(valid) {
                    return None;
                }
                (Host::Name(name.to_ascii_lowercase()), port)
            }
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => {
                if https {
                    443
                } else {
                    80
                }
            }
            // all digits first: u16's parser would also take a leading `+`
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse().ok()?
            }
            _ => return None,
        };
        Some(Url {
            https,
            host,
            port,
            rest,
        })
    }
}

/// A route's peer or local base URL.
#[derive(Debug, Clone)]
struct Base {
    https: bool,
    host: Host,
    port: u16,
    /// Without a trailing slash; empty for none.
    path: String,
    /// As configured, without a trailing slash: the prefix written into rewritten strings.
    text: String,
}

impl Base {
    fn parse(configured: &str) -> Result<Base, String> {
        let bad =
            || format!("not an http(s) base URL (scheme://host[:port][/path]): {configured:?}");
        if configured
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        let text = configured.trim_end_matches('/');
        let url = Url::parse(text).ok_or_else(bad)?;
        if url.port == 0 || url.rest.contains(['?', '#']) {
            return Err(bad());
        }
        Ok(Base {
            https: url.https,
            host: url.host,
            port: url.port,
            path: url.rest.to_owned(),
            text: text.to_owned(),
        })
    }

    /// What follows this base in `url`, when `url` is under it: same origin, and the base's
    /// path ends at a segment, query or fragment boundary.
    fn tail<'a>(&self, url: &Url<'a>) -> Option<&'a str> {
        if url.https != self.https || url.host != self.host || url.port != self.port {
            return None;
        }
        let tail = url.rest.strip_prefix(self.path.as_str())?;
        matches!(tail.bytes().next(), None | Some(b'/' | b'?' | b'#')).then_some(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poa::MAX_DEPTH;

    const PEER: &str = "https://in-cse.example:8443";
    const LOCAL: &str = "http://127.0.0.1:8081";

    fn in_map() -> PoaMap {
        PoaMap::new(&[(PEER, LOCAL)]).unwrap()
    }

    fn toward(map: &PoaMap, json: &str) -> Option<(String, usize)> {
        map.rewrite(json.as_bytes(), Encoding::Json, Direction::TowardLocal)
            .map(|(b, n)| (String::from_utf8(b).unwrap(), n))
    }

    fn away(map: &PoaMap, json: &str) -> Option<(String, usize)> {
        map.rewrite(json.as_bytes(), Encoding::Json, Direction::AwayFromLocal)
            .map(|(b, n)| (String::from_utf8(b).unwrap(), n))
    }

    /// The rewrite of a single poa string, toward local.
    fn one(map: &PoaMap, poa: &str) -> Option<String> {
        let doc = serde_json::json!({ "m2m:cb": { "poa": [poa] } }).to_string();
        let (out, n) = toward(map, &doc)?;
        assert_eq!(n, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        Some(v["m2m:cb"]["poa"][0].as_str().unwrap().to_owned())
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(PoaMap::new(&[]).unwrap().is_empty());
        assert!(!in_map().is_empty());
        for bad in [
            "in-cse.example:8443",
            "ftp://in-cse.example",
            "https://",
            "https://:8443",
            "https://user@in-cse.example",
            "https://in-cse.example:",
            "https://in-cse.example:0",
            "https://in-cse.example:65536",
            "https://in-cse.example:+443",
            "https://in-cse.example:8443x",
            "https://in-cse.example/p?q=1",
            "https://in-cse.example#f",
            "https://in cse.example",
            "https://[zz::1]:8443",
            "https://::1:8443",
        ] {
            let err = PoaMap::new(&[(bad, LOCAL)]).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(PoaMap::new(&[(PEER, bad)]).is_err(), "{bad}");
        }
        for good in [
            "http://h",
            "HTTPS://In-Cse.example:443/",
            "https://[::1]:8443/cse/",
            "http://10.0.0.1:1/a/b",
        ] {
            assert!(PoaMap::new(&[(good, LOCAL)]).is_ok(), "{good}");
        }
    }

    const ADVERTISED: &str = "http://127.0.0.1:3000";
    const PUBLIC: &str = "https://mn.example.com:8443";

    #[test]
    fn the_cses_own_addresses_leave_as_its_public_url_and_come_back_as_the_first() {
        let mut map = in_map();
        map.add_public(&[ADVERTISED, "http://10.1.2.3:3000/cse"], PUBLIC, 1)
            .unwrap();
        let csr = |poa: &str| format!(r#"{{"m2m:csr":{{"poa":["{poa}"],"rr":true}}}}"#);
        // leaving: either advertised prefix; the route's local URL still goes to its peer
        let body = format!(
            r#"{{"m2m:cb":{{"poa":["{ADVERTISED}/x","http://10.1.2.3:3000/cse/y","http://10.1.2.3:3000/other",{:?}]}}}}"#,
            LOCAL
        );
        let mut labels = Vec::new();
        let out = map
            .rewrite_each(
                body.as_bytes(),
                Encoding::Json,
                Direction::AwayFromLocal,
                |l| labels.push(l),
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                r#"{{"m2m:cb":{{"poa":["{PUBLIC}/x","{PUBLIC}/y","http://10.1.2.3:3000/other",{PEER:?}]}}}}"#
            )
        );
        assert_eq!(labels, [1, 1, 0]);
        // entering: the public URL becomes the first advertised prefix
        let (out, n) = toward(&map, &csr(&format!("{PUBLIC}/cse-mn"))).unwrap();
        assert_eq!((out, n), (csr(&format!("{ADVERTISED}/cse-mn")), 1));
        // the advertised address is not rewritten entering, nor the public URL leaving
        assert_eq!(toward(&map, &csr(ADVERTISED)), None);
        assert_eq!(away(&map, &csr(PUBLIC)), None);
        // only the public mapping: nothing for the routes' URLs
        let mut own = PoaMap::default();
        own.add_public(&[ADVERTISED], PUBLIC, 0).unwrap();
        assert_eq!(away(&own, &csr(LOCAL)), None);
        assert_eq!(toward(&own, &csr(PEER)), None);
        assert!(own.add_public(&[], PUBLIC, 0).is_err());
        assert!(own.add_public(&["mqtt://x"], PUBLIC, 0).is_err());
    }

    #[test]
    fn a_string_is_rewritten_by_at_most_one_mapping() {
        // the first route's result is the second's input: applied once, by the first
        let map = PoaMap::new(&[
            ("https://a.example", "http://127.0.0.1:1"),
            ("http://127.0.0.1:1", "http://127.0.0.1:2"),
        ])
        .unwrap();
        assert_eq!(
            one(&map, "https://a.example/x"),
            Some("http://127.0.0.1:1/x".into())
        );
        let mut map = PoaMap::default();
        map.add_public(&[ADVERTISED], PUBLIC, 0).unwrap();
        map.add_pair(PUBLIC, ADVERTISED, 1).unwrap();
        let (out, _) = away(&map, &format!(r#"{{"poa":"{ADVERTISED}"}}"#)).unwrap();
        assert_eq!(out, format!(r#"{{"poa":"{PUBLIC}"}}"#));
        assert!(same_origin(PUBLIC, "HTTPS://MN.example.com:8443/p").unwrap());
        assert!(!same_origin(PUBLIC, "https://mn.example.com").unwrap());
        assert!(!same_origin("http://h:443", "https://h").unwrap());
        assert!(same_origin("http://h", "bad").is_err());
        assert_eq!(check_base(PUBLIC), Ok(true));
        assert_eq!(check_base(ADVERTISED), Ok(false));
    }

    #[test]
    fn cse_base_response_toward_local() {
        let body = r#"{"m2m:cb":{"rn":"cse-in","poa":["https://IN-CSE.example:8443","http://other:1"],"csi":"/id-in"}}"#;
        let (out, n) = toward(&in_map(), body).unwrap();
        assert_eq!(
            out,
            r#"{"m2m:cb":{"rn":"cse-in","poa":["http://127.0.0.1:8081","http://other:1"],"csi":"/id-in"}}"#
        );
        assert_eq!(n, 1);
        // the other direction has nothing to do here
        assert_eq!(away(&in_map(), body), None);
    }

    #[test]
    fn remote_cse_create_away_from_local() {
        let map = PoaMap::new(&[("https://mn.example", "http://127.0.0.1:9081")]).unwrap();
        let body = r#"{"m2m:csr":{"rn":"id-mn","csi":"/id-mn","cb":"/id-mn/cse-mn","poa":["http://127.0.0.1:9081/path?x=1"],"rr":true}}"#;
        let (out, n) = away(&map, body).unwrap();
        assert_eq!(
            out,
            r#"{"m2m:csr":{"rn":"id-mn","csi":"/id-mn","cb":"/id-mn/cse-mn","poa":["https://mn.example/path?x=1"],"rr":true}}"#
        );
        assert_eq!(n, 1);
        assert_eq!(toward(&map, body), None);
    }

    #[test]
    fn default_ports_and_case() {
        let map = PoaMap::new(&[("https://in.example", "http://127.0.0.1:8081")]).unwrap();
        let local = Some("http://127.0.0.1:8081".to_owned());
        assert_eq!(one(&map, "https://in.example:443"), local);
        assert_eq!(one(&map, "HTTPS://IN.Example"), local);
        assert_eq!(one(&map, "https://in.example:00443"), local);
        assert_eq!(one(&map, "http://in.example"), None, "other scheme");
        assert_eq!(one(&map, "https://in.example:8443"), None);
        let map = PoaMap::new(&[(PEER, "http://127.0.0.1:80")]).unwrap();
        // the replacement is the base as configured, explicit default port and all
        assert_eq!(
            one(&map, "https://in-cse.example:8443/x"),
            Some("http://127.0.0.1:80/x".to_owned())
        );
        let (out, _) = away(&map, r#"{"poa":["http://127.0.0.1/x"]}"#).unwrap();
        assert_eq!(out, r#"{"poa":["https://in-cse.example:8443/x"]}"#);
    }

    #[test]
    fn authority_and_path_boundaries() {
        let map = in_map();
        for no in [
            "https://in-cse.example:84430/x",
            "https://in-cse.example:84430",
            "https://in-cse.example:8443x",
            "https://in-cse.example:8443.evil.example/",
            "https://in-cse.example.evil:8443",
            "https://in-cse.example:8443:8443",
            "https://in-cse.example:",
            "https//in-cse.example:8443",
            " https://in-cse.example:8443",
            "mqtt://in-cse.example:8443",
            "",
        ] {
            assert_eq!(one(&map, no), None, "{no:?}");
        }
        for (yes, want) in [
            ("https://in-cse.example:8443/", "http://127.0.0.1:8081/"),
            (
                "https://in-cse.example:8443?a=b",
                "http://127.0.0.1:8081?a=b",
            ),
            (
                "https://in-cse.example:8443#frag",
                "http://127.0.0.1:8081#frag",
            ),
            (
                "https://in-cse.example:8443/a/b",
                "http://127.0.0.1:8081/a/b",
            ),
        ] {
            assert_eq!(one(&map, yes).as_deref(), Some(want), "{yes:?}");
        }
        // a base path must end at a boundary, and is replaced by the other base's path
        let map = PoaMap::new(&[(
            "https://in-cse.example:8443/cse/",
            "http://127.0.0.1:8081/local",
        )])
        .unwrap();
        for (poa, want) in [
            (
                "https://in-cse.example:8443/cse",
                Some("http://127.0.0.1:8081/local"),
            ),
            (
                "https://in-cse.example:8443/cse/x",
                Some("http://127.0.0.1:8081/local/x"),
            ),
            (
                "https://in-cse.example:8443/cse?q",
                Some("http://127.0.0.1:8081/local?q"),
            ),
            ("https://in-cse.example:8443/csex", None),
            ("https://in-cse.example:8443/CSE", None),
            ("https://in-cse.example:8443/", None),
            ("https://in-cse.example:8443", None),
        ] {
            assert_eq!(one(&map, poa).as_deref(), want, "{poa:?}");
        }
    }

    #[test]
    fn userinfo_is_never_matched() {
        for poa in [
            "https://user:pass@in-cse.example:8443",
            "https://user@in-cse.example:8443/x",
            "https://@in-cse.example:8443",
        ] {
            assert_eq!(one(&in_map(), poa), None, "{poa}");
        }
        let map = PoaMap::new(&[("https://mn.example", LOCAL)]).unwrap();
        assert_eq!(away(&map, r#"{"poa":["http://u:p@127.0.0.1:8081"]}"#), None);
    }

    #[test]
    fn ipv6_literals() {
        let map = PoaMap::new(&[("https://[2001:db8::1]:8443", "http://[::1]:8081")]).unwrap();
        assert_eq!(
            one(&map, "https://[2001:DB8:0::1]:8443/x").as_deref(),
            Some("http://[::1]:8081/x")
        );
        assert_eq!(one(&map, "https://[2001:db8::1]:84430/x"), None);
        assert_eq!(one(&map, "https://[2001:db8::2]:8443/x"), None);
        assert_eq!(one(&map, "https://2001:db8::1:8443/x"), None);
        let (out, n) = away(&map, r#"{"poa":["http://[0:0::1]:8081?a"]}"#).unwrap();
        assert_eq!(
            (out.as_str(), n),
            (r#"{"poa":["https://[2001:db8::1]:8443?a"]}"#, 1)
        );
    }

    #[test]
    fn escapes_are_decoded_and_the_replacement_escaped() {
        let map = in_map();
        let body =
            r#"{"m2m:cb":{"lbl":["a\/b"],"poa":["https:\/\/in-cse.example:8443\/x\u0041"]}}"#;
        let (out, n) = toward(&map, body).unwrap();
        assert_eq!(
            out,
            r#"{"m2m:cb":{"lbl":["a\/b"],"poa":["http://127.0.0.1:8081/xA"]}}"#
        );
        assert_eq!(n, 1);
        // characters that need escaping in the rest are escaped in the output
        let body = r#"{"poa":["https://in-cse.example:8443/\"q\"\\\u00e9\n"]}"#;
        let (out, _) = toward(&map, body).unwrap();
        assert_eq!(
            out,
            "{\"poa\":[\"http://127.0.0.1:8081/\\\"q\\\"\\\\\u{e9}\\n\"]}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["poa"][0], "http://127.0.0.1:8081/\"q\"\\\u{e9}\n");
        // an escaped key is still the key poa
        let (out, _) = toward(&map, r#"{"p\u006fa":["https://in-cse.example:8443"]}"#).unwrap();
        assert_eq!(out, r#"{"p\u006fa":["http://127.0.0.1:8081"]}"#);
        // a lone surrogate is valid JSON syntax but no URL: left as it is
        assert_eq!(
            toward(&map, r#"{"poa":["https://in-cse.example:8443/\ud800"]}"#),
            None
        );
    }

    #[test]
    fn poa_anywhere_in_the_document() {
        let map = in_map();
        // a retrieve response, a discovery result list, a notification-like nesting
        let body = r#"{"m2m:rsp":{"rsc":2000,"pc":{"m2m:csr":{"poa":["https://in-cse.example:8443/a"]}}},
            "m2m:uril":["https://in-cse.example:8443/not-poa"],
            "list":[{"m2m:ae":{"poa":"https://in-cse.example:8443/single"}},{"m2m:cb":{"poa":[]}},
                    {"x":{"y":{"z":[[{"poa":["http://x","https://in-cse.example:8443"]}]]}}}],
            "deep":{"poa":[["https://in-cse.example:8443/nested-array"],{"poa":["https://in-cse.example:8443/in-object"]}]},
            "obj":{"poa":{"u":"https://in-cse.example:8443/object-value"}}}"#;
        let (out, n) = toward(&map, body).unwrap();
        assert_eq!(n, 4);
        let want = body
            .replace(
                r#""https://in-cse.example:8443/a""#,
                r#""http://127.0.0.1:8081/a""#,
            )
            .replace(
                r#""https://in-cse.example:8443/single""#,
                r#""http://127.0.0.1:8081/single""#,
            )
            .replace(
                r#""https://in-cse.example:8443"]"#,
                r#""http://127.0.0.1:8081"]"#,
            )
            .replace(
                r#""https://in-cse.example:8443/in-object""#,
                r#""http://127.0.0.1:8081/in-object""#,
            );
        assert_eq!(out, want);
        assert!(out.contains("https://in-cse.example:8443/not-poa"));
        assert!(out.contains("https://in-cse.example:8443/nested-array"));
        assert!(out.contains("https://in-cse.example:8443/object-value"));
    }

    #[test]
    fn first_matching_route_wins() {
        let map = PoaMap::new(&[
            (PEER, LOCAL),
            ("https://in-cse.example:8443/cse", "http://127.0.0.1:9999"),
        ])
        .unwrap();
        assert_eq!(
            one(&map, "https://in-cse.example:8443/cse/x").as_deref(),
            Some("http://127.0.0.1:8081/cse/x")
        );
        let map = PoaMap::new(&[
            ("https://in-cse.example:8443/cse", "http://127.0.0.1:9999"),
            (PEER, LOCAL),
        ])
        .unwrap();
        assert_eq!(
            one(&map, "https://in-cse.example:8443/cse/x").as_deref(),
            Some("http://127.0.0.1:9999/x")
        );
        assert_eq!(
            one(&map, "https://in-cse.example:8443/other").as_deref(),
            Some("http://127.0.0.1:8081/other")
        );
    }

    #[test]
    fn nothing_to_change_or_not_json_is_none() {
        let map = in_map();
        for body in [
            r#"{"m2m:cb":{"rn":"cse-in","csi":"/id-in"}}"#,
            r#"{"x":"\"poa\":[\"https://in-cse.example:8443\"]"}"#,
            r#"{"poa":["http://other:1", 7, null, {"a":"https://in-cse.example:8443"}]}"#,
            r#"["poa", "https://in-cse.example:8443"]"#,
            r#""https://in-cse.example:8443""#,
            r#"{"poa ":["https://in-cse.example:8443"],"POA":["https://in-cse.example:8443"]}"#,
            // invalid JSON, each with a poa that would otherwise be rewritten
            r#"{"poa":["https://in-cse.example:8443"]} x"#,
            r#"{"poa":["https://in-cse.example:8443"]}}"#,
            r#"{"poa":["https://in-cse.example:8443"],}"#,
            r#"{"poa":["https://in-cse.example:8443",]}"#,
            r#"{"poa":["https://in-cse.example:8443"]"#,
            r#"{"poa":["https://in-cse.example:8443"#,
            r#"{'poa':['https://in-cse.example:8443']}"#,
            r#"{"poa":["https://in-cse.example:8443"],"n":01}"#,
            r#"{"poa":["https://in-cse.example:8443"],"n":1.}"#,
            r#"{"poa":["https://in-cse.example:8443"],"n":-}"#,
            r#"{"poa":["https://in-cse.example:8443"],"n":NaN}"#,
            r#"{"poa":["https://in-cse.example:8443"],"n":tru}"#,
            r#"{"poa":["https://in-cse.example:8443"],"s":"\x"}"#,
            r#"{"poa":["https://in-cse.example:8443"],"s":"\u12"}"#,
            "{\"poa\":[\"https://in-cse.example:8443\"],\"s\":\"a\tb\"}",
            "\u{feff}{\"poa\":[\"https://in-cse.example:8443\"]}",
            r#"{"poa" ["https://in-cse.example:8443"]}"#,
            r#"{"poa":["https://in-cse.example:8443"] "a":1}"#,
            r#"{poa:["https://in-cse.example:8443"]}"#,
            "",
            "   ",
        ] {
            assert_eq!(toward(&map, body), None, "{body}");
        }
        let mut not_utf8 = br#"{"poa":["https://in-cse.example:8443"],"s":""}"#.to_vec();
        not_utf8.insert(not_utf8.len() - 2, 0xff);
        assert_eq!(
            map.rewrite(&not_utf8, Encoding::Json, Direction::TowardLocal),
            None
        );
        // no routes: nothing to do
        let body = r#"{"poa":["https://in-cse.example:8443"]}"#;
        assert_eq!(toward(&PoaMap::new(&[]).unwrap(), body), None);
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let map = in_map();
        for open in ["[", "{\"a\":"] {
            let bomb = open.repeat(10_000);
            assert_eq!(toward(&map, &bomb), None);
        }
        let bomb = format!(
            "{{\"poa\":[\"https://in-cse.example:8443\"],\"x\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(toward(&map, &bomb), None);
        // as deep as allowed still works
        let ok = format!(
            "{}{{\"poa\":[\"https://in-cse.example:8443\"]}}{}",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert_eq!(toward(&map, &ok).unwrap().1, 1);
        let too_deep = format!("[{ok}]");
        assert_eq!(toward(&map, &too_deep), None);
    }

    #[test]
    fn formatting_is_preserved() {
        let body = "\r\n{ \"m2m:cb\" :\t{\n    \"rn\": \"cse\\u002Din\",\n    \"n\": [1.50E+02, -0, 0.0e-0, 1234567890123456789012],\n    \"poa\" : [ \"https://in-cse.example:8443/a\" ,\"https://in-cse.example:8443\\/b\"\n ],\n    \"t\": true, \"f\": false, \"z\": null, \"e\": {}, \"l\": [ ]\n  }\n}\n ";
        let (out, n) = toward(&in_map(), body).unwrap();
        assert_eq!(n, 2);
        let want = body
            .replace(
                "\"https://in-cse.example:8443/a\"",
                "\"http://127.0.0.1:8081/a\"",
            )
            .replace(
                "\"https://in-cse.example:8443\\/b\"",
                "\"http://127.0.0.1:8081/b\"",
            );
        assert_eq!(out, want);
    }

    // --- a generated round trip ---------------------------------------------------------------

    /// xorshift64*: deterministic, no crate needed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    const ROUTES: [(&str, &str); 2] = [
        (PEER, LOCAL),
        ("https://[2001:db8::7]/cse", "http://127.0.0.1:9090/m"),
    ];

    /// A random document as written (`orig`) and as it must look toward local (`want`);
    /// returns how many poa strings it rewrites.
    fn gen(rng: &mut Rng, depth: u32, orig: &mut String, want: &mut String) -> usize {
        let mut both = |s: &str| {
            orig.push_str(s);
            want.push_str(s);
        };
        let ws = ["", " ", "\n  ", "\t", "\r\n"];
        both(rng.pick(&ws));
        let mut changes = 0;
        match rng.below(if depth > 3 { 3 } else { 6 }) {
            0 => both(rng.pick(&[
                "0",
                "-1.5",
                "1e3",
                "2.50E-2",
                "12345678901234567890",
                "true",
                "null",
            ])),
            1 => both(rng.pick(&[
                r#""a\/b""#,
                r#""\u00e9t\u00E9""#,
                r#""tab\there""#,
                "\"h\u{e9}\"",
                // a peer URL that is not a poa stays
                r#""https://in-cse.example:8443""#,
            ])),
            2 => both("[]"),
            3 => {
                both("[");
                for i in 0..rng.below(4) {
                    if i > 0 {
                        orig.push(',');
                        want.push(',');
                    }
                    changes += gen(rng, depth + 1, orig, want);
                }
                orig.push(']');
                want.push(']');
            }
            _ => {
                orig.push('{');
                want.push('{');
                let mut keys = vec!["rn", "m2m:cb", "pc", "lbl", "POA", "poa"];
                for i in 0..rng.below(5) {
                    if i > 0 {
                        orig.push(',');
                        want.push(',');
                    }
                    let key = keys.swap_remove(rng.below(keys.len()));
                    let ws = rng.pick(&ws);
                    if key == "poa" {
                        let key = rng.pick(&["\"poa\"", r#""p\u006fa""#]);
                        for s in [&mut *orig, &mut *want] {
                            s.push_str(key);
                            s.push_str(ws);
                            s.push(':');
                        }
                        changes += gen_poa(rng, orig, want);
                    } else {
                        for s in [&mut *orig, &mut *want] {
                            s.push_str(&format!("\"{key}\"{ws}:"));
                        }
                        changes += gen(rng, depth + 1, orig, want);
                    }
                }
                orig.push('}');
                want.push('}');
            }
        }
        changes
    }

    fn gen_poa(rng: &mut Rng, orig: &mut String, want: &mut String) -> usize {
        // in_array: a nested array is untouched only inside the poa array, not as its value
        let item = |rng: &mut Rng, orig: &mut String, want: &mut String, in_array: bool| {
            let untouched = rng.pick(
                &[
                    "7",
                    "\"mqtt://broker:1883\"",
                    "\"https://in-cse.example:84430/\"",
                    "\"https://[2001:db8::7]/csex\"",
                    "{}",
                    "[\"https://in-cse.example:8443\"]",
                ][..if in_array { 6 } else { 5 }],
            );
            if rng.below(3) == 0 {
                orig.push_str(untouched);
                want.push_str(untouched);
                return 0;
            }
            let (peer, local) = ROUTES[rng.below(ROUTES.len())];
            let rest = rng.pick(&["", "/", "/x?y=1", "#f", "/a/b", "?q"]);
            orig.push_str(&format!("\"{peer}{rest}\""));
            want.push_str(&format!("\"{local}{rest}\""));
            1
        };
        if rng.below(4) == 0 {
            return item(rng, orig, want, false);
        }
        orig.push('[');
        want.push('[');
        let mut changes = 0;
        for i in 0..rng.below(4) {
            if i > 0 {
                orig.push_str(", ");
                want.push_str(", ");
            }
            changes += item(rng, orig, want, true);
        }
        orig.push(']');
        want.push(']');
        changes
    }

    #[test]
    fn generated_documents_round_trip() {
        let map = PoaMap::new(&ROUTES).unwrap();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut rewritten = 0;
        for _ in 0..3000 {
            let (mut orig, mut want) = (String::new(), String::new());
            let changes = gen(&mut rng, 0, &mut orig, &mut want);
            serde_json::from_str::<serde_json::Value>(&orig).expect(&orig);
            match toward(&map, &orig) {
                None => assert_eq!(changes, 0, "{orig}"),
                Some((out, n)) => {
                    assert_eq!((&out, n), (&want, changes), "{orig}");
                    let (back, m) = away(&map, &out).unwrap();
                    assert_eq!((&back, m), (&orig, n));
                    rewritten += 1;
                }
            }
        }
        assert!(
            rewritten > 300,
            "the generator rarely writes a poa: {rewritten}"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let map = PoaMap::new(&ROUTES).unwrap();
        let json = br#"{"m2m:rsp":{"pc":{"m2m:csr":{"poa":["https://in-cse.example:8443/x",1],"s":"\u00e9"}}}}"#;
        let cbor = cbor_doc(&V::Map(vec![(
            t("m2m:cb"),
            V::Map(vec![
                (t("poa"), V::Array(vec![t(PEER), V::Integer(1.into())])),
                (t("n"), V::Float(1.5)),
                (V::Integer(3.into()), V::Bytes(vec![1, 2])),
            ]),
        )]));
        let mut rng = Rng(42);
        for doc in [&json[..], &cbor] {
            for end in 0..doc.len() {
                for dir in [Direction::TowardLocal, Direction::AwayFromLocal] {
                    for enc in [Encoding::Json, Encoding::Cbor] {
                        let _ = map.rewrite(&doc[..end], enc, dir);
                        for b in [0x00, 0x1c, 0x22, 0x5b, 0x5c, 0x7f, 0x9f, 0xbf, 0xff] {
                            let mut m = doc.to_vec();
                            m[end] = b;
                            let _ = map.rewrite(&m, enc, dir);
                        }
                    }
                }
            }
        }
        for _ in 0..5000 {
            let noise: Vec<u8> = (0..rng.below(40)).map(|_| rng.below(256) as u8).collect();
            let _ = map.rewrite(&noise, Encoding::Cbor, Direction::TowardLocal);
            let _ = map.rewrite(&noise, Encoding::Json, Direction::TowardLocal);
        }
    }

    // --- CBOR ---------------------------------------------------------------------------------

    use ciborium::Value as V;

    fn t(s: &str) -> V {
        V::Text(s.to_owned())
    }

    fn cbor_doc(v: &V) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    fn cb(poa: Vec<V>) -> V {
        V::Map(vec![(
            t("m2m:cb"),
            V::Map(vec![
                (t("rn"), t("cse-in")),
                (t("poa"), V::Array(poa)),
                (
                    t("srt"),
                    V::Array(vec![V::Integer(2.into()), V::Integer(16.into())]),
                ),
                (t("f"), V::Float(1.5)),
                (t("b"), V::Bytes(b"poa".to_vec())),
                (t("rr"), V::Bool(true)),
                (t("csi"), t("/id-in")),
            ]),
        )])
    }

    #[test]
    fn cbor_cse_base_and_nested_response() {
        let map = in_map();
        let body = cbor_doc(&cb(vec![
            t("https://IN-CSE.example:8443/x"),
            t("http://other:1"),
        ]));
        let (out, n) = map
            .rewrite(&body, Encoding::Cbor, Direction::TowardLocal)
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            out,
            cbor_doc(&cb(vec![t("http://127.0.0.1:8081/x"), t("http://other:1")]))
        );
        let back: V = ciborium::from_reader(&out[..]).unwrap();
        assert_eq!(
            back,
            cb(vec![t("http://127.0.0.1:8081/x"), t("http://other:1")])
        );

        let rsp = |poa: &str| {
            V::Map(vec![
                (t("rsc"), V::Integer(2000.into())),
                (
                    t("pc"),
                    V::Map(vec![(
                        t("m2m:csr"),
                        V::Map(vec![(t("poa"), t(poa)), (t("rr"), V::Bool(false))]),
                    )]),
                ),
                (t("m2m:uril"), V::Array(vec![t(LOCAL)])),
            ])
        };
        let (out, n) = map
            .rewrite(
                &cbor_doc(&rsp(LOCAL)),
                Encoding::Cbor,
                Direction::AwayFromLocal,
            )
            .unwrap();
        assert_eq!((out, n), (cbor_doc(&rsp(PEER)), 1));
        // nothing to change
        for dir in [Direction::TowardLocal, Direction::AwayFromLocal] {
            let plain = cbor_doc(&cb(vec![t("http://other:1"), V::Integer(3.into())]));
            assert_eq!(map.rewrite(&plain, Encoding::Cbor, dir), None);
        }
        assert_eq!(
            map.rewrite(
                &cbor_doc(&rsp(PEER)),
                Encoding::Cbor,
                Direction::AwayFromLocal
            ),
            None
        );
    }

    #[test]
    fn cbor_length_headers_grow_and_shrink() {
        let map = PoaMap::new(&[("https://a.example", LOCAL)]).unwrap();
        // 17 + 6 = 23 bytes (one-byte header) -> 27 bytes (0x78 0x1b)
        let poa = "https://a.example/abcde";
        assert_eq!(poa.len(), 23);
        let body = cbor_doc(&V::Map(vec![(t("poa"), V::Array(vec![t(poa)]))]));
        let (out, _) = map
            .rewrite(&body, Encoding::Cbor, Direction::TowardLocal)
            .unwrap();
        let mut want = vec![0xa1, 0x63, b'p', b'o', b'a', 0x81, 0x78, 27];
        want.extend_from_slice(b"http://127.0.0.1:8081/abcde");
        assert_eq!(out, want);
        // and back: 27 -> 23, header 0x77
        let (back, _) = map
            .rewrite(&out, Encoding::Cbor, Direction::AwayFromLocal)
            .unwrap();
        assert_eq!(back, body);
        assert_eq!(back[6], 0x60 | 23);

        // 255 bytes (0x78 0xff) -> 259 bytes (0x79 0x01 0x03)
        let long = format!("https://a.example/{}", "p".repeat(255 - 18));
        assert_eq!(long.len(), 255);
        let body = cbor_doc(&V::Map(vec![(t("poa"), t(&long))]));
        assert_eq!(&body[5..7], &[0x78, 0xff]);
        let (out, _) = map
            .rewrite(&body, Encoding::Cbor, Direction::TowardLocal)
            .unwrap();
        assert_eq!(&out[..8], &[0xa1, 0x63, b'p', b'o', b'a', 0x79, 0x01, 0x03]);
        assert_eq!(out.len(), 8 + 259);
        let v: V = ciborium::from_reader(&out[..]).unwrap();
        assert_eq!(
            v,
            V::Map(vec![(t("poa"), t(&format!("{LOCAL}/{}", "p".repeat(237))))])
        );
    }

    #[test]
    fn cbor_indefinite_containers_tags_and_keys() {
        let map = in_map();
        let text = |s: &str| {
            let mut e = minicbor::Encoder::new(Vec::new());
            e.str(s).unwrap();
            e.into_writer()
        };
        let doc = |poa: &str| {
            let mut b = vec![0xbf];
            b.extend(text("m2m:cb"));
            b.push(0xbf);
            b.extend(text("rn"));
            b.extend(text("x"));
            // key "poa" in two chunks
            b.extend([0x7f, 0x61, b'p', 0x62, b'o', b'a', 0xff]);
            b.push(0x9f);
            b.extend(text(poa));
            // tag 32 (URI) on a poa string
            b.extend([0xd8, 0x20]);
            b.extend(text(poa));
            // an indefinite-length poa string: left as it is
            b.extend([0x7f, 0x78, 0x1b]);
            b.extend(PEER.as_bytes());
            b.push(0xff);
            b.extend([0xff, 0xff, 0xff]);
            b
        };
        let body = doc(PEER);
        let (out, n) = map
            .rewrite(&body, Encoding::Cbor, Direction::TowardLocal)
            .unwrap();
        assert_eq!((out, n), (doc(LOCAL), 2));
        let v: V = ciborium::from_reader(&body[..]).unwrap();
        assert!(
            matches!(v, V::Map(_)),
            "the hand-written document is valid CBOR"
        );
        // a non-text key (here a map) is walked, and its poa does not make the value a poa
        let mut b = vec![0xa2, 0xa1];
        b.extend(text("poa"));
        b.extend(text(PEER));
        b.extend(text(PEER));
        b.extend(text("poa"));
        b.extend(text(PEER));
        let (out, n) = map
            .rewrite(&b, Encoding::Cbor, Direction::TowardLocal)
            .unwrap();
        let mut want = vec![0xa2, 0xa1];
        want.extend(text("poa"));
        want.extend(text(LOCAL));
        want.extend(text(PEER));
        want.extend(text("poa"));
        want.extend(text(LOCAL));
        assert_eq!((out, n), (want, 2));
    }

    #[test]
    fn cbor_invalid_is_none() {
        let map = in_map();
        let good = cbor_doc(&cb(vec![t(PEER)]));
        assert!(map
            .rewrite(&good, Encoding::Cbor, Direction::TowardLocal)
            .is_some());
        let mut trailing = good.clone();
        trailing.push(0x00);
        let mut bad_utf8 = cbor_doc(&V::Map(vec![(t("poa"), t(PEER)), (t("x"), t("ab"))]));
        let last = bad_utf8.len() - 1;
        bad_utf8[last] = 0xff;
        let mut bad_poa = cbor_doc(&V::Map(vec![(t("poa"), t(&format!("{PEER}/a")))]));
        // "/a" becomes 0xc3 'a': not UTF-8
        let at = bad_poa.windows(2).position(|w| w == b"/a").unwrap();
        bad_poa[at] = 0xc3;
        let mut cases: Vec<Vec<u8>> = vec![
            trailing,
            bad_utf8,
            bad_poa,
            vec![],
            vec![0xff],
            vec![0x1c],
            // a break inside a definite array, which minicbor's skip would let through
            [
                &[0xa2][..],
                &text_bytes("poa"),
                &[0x81],
                &text_bytes(PEER),
                &text_bytes("x"),
                &[0x82, 0xff, 0x01],
            ]
            .concat(),
            // a break where a map value belongs, and after a tag
            [
                &[0xbf][..],
                &text_bytes("poa"),
                &text_bytes(PEER),
                &text_bytes("x"),
                &[0xff],
            ]
            .concat(),
            [
                &[0xbf][..],
                &text_bytes("poa"),
                &text_bytes(PEER),
                &[0xc0, 0xff],
            ]
            .concat(),
            // an unterminated indefinite map
            [&[0xbf][..], &text_bytes("poa"), &text_bytes(PEER)].concat(),
        ];
        for end in 0..good.len() {
            cases.push(good[..end].to_vec());
        }
        let mut bomb = vec![0x81; 10_000];
        bomb.push(0x00);
        cases.push(bomb);
        let mut bomb = [
            &[0xa2][..],
            &text_bytes("poa"),
            &text_bytes(PEER),
            &text_bytes("x"),
        ]
        .concat();
        bomb.extend(std::iter::repeat_n(0x9f, 10_000));
        bomb.extend(std::iter::repeat_n(0xff, 10_000));
        cases.push(bomb);
        for case in cases {
            assert_eq!(
                map.rewrite(&case, Encoding::Cbor, Direction::TowardLocal),
                None,
                "{case:02x?}"
            );
        }
    }

    fn text_bytes(s: &str) -> Vec<u8> {
        cbor_doc(&t(s))
    }
}
