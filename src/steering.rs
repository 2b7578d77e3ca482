//! URLs that would steer the local CSE into one of this sidecar's egress routes (issue 27.1):
//! whatever the CSE sends to an egress listener leaves the pod as the CSE itself, with the
//! pod's certificate. A client that names such a URL where the CSE sends to (a subscription's
//! `nu`, `X-M2M-RTU`, an AE's `poa`, a `<timeSyncBeacon>`'s `bcnu`, …) makes the CSE its deputy.
//!
//! [`Listeners::reached_by`] says whether a string holds a URL that could reach a listener, read
//! the ways HTTP clients read URLs: any scheme (`//` starts an authority), leading and embedded
//! tabs and line breaks dropped, `\` as `/`, percent-encoding (repeated), user-info (at the first
//! or the last `@`), extra slashes after the scheme, ports with leading zeros. The host is judged
//! fail-closed: only an IP literal that is not local (not loopback, not unspecified, not an
//! IPv4-mapped or -compatible form of those) is known not to reach a loopback listener; every
//! host name does (`localhost`, `LOCALHOST.`, `127.0.0.1.nip.io` resolve to the loopback), and
//! so does every IPv4 form other than four plain decimal numbers (`2130706433`, `0x7f.1`,
//! `017700000001`). So a URL with a host name and the port of a listener is refused whatever the
//! name: choose listener ports that no client URL uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::target::hex;

/// Ports a URL without one may mean (http, https, mqtt, mqtts, coap, coaps).
const DEFAULT_PORTS: [u16; 6] = [80, 443, 1883, 8883, 5683, 5684];

/// Percent-decoding rounds at most (a CSE or its client decodes once, rarely twice).
const DECODE_ROUNDS: usize = 4;

/// The ports of the egress listeners (all on loopback addresses: `config::egress` checks that).
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    ports: Vec<u16>,
}

impl Listeners {
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Listeners {
        let mut ports: Vec<u16> = addrs.into_iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        Listeners { ports }
    }

    /// No egress route: nothing to steer into, nothing to check.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Whether `s` holds a URL that could reach an egress listener.
    pub fn reached_by(&self, s: &str) -> bool {
        self.reached_by_bytes(s.as_bytes())
    }

    /// The same for bytes that may not be UTF-8 (a header value, a CBOR byte string).
    pub fn reached_by_bytes(&self, s: &[u8]) -> bool {
        if self.ports.is_empty() || !s.iter().any(|b| matches!(b, b'/' | b'\\' | b'%')) {
            return false;
        }
        // the common case, nothing to drop or decode: read as written, without a copy
        if !s
            .iter()
            .any(|b| matches!(b, b'\\' | b'%' | b'\t' | b'\r' | b'\n'))
        {
            return self.authorities_reach(s);
        }
        // as written (a client drops tabs and line breaks), then `\` as `/` and decoded, again
        // until nothing changes
        let mut view: Vec<u8> = s
            .iter()
            .copied()
            .filter(|b| !matches!(b, b'\t' | b'\r' | b'\n'))
            .collect();
        if self.authorities_reach(&view) {
            return true;
        }
        for _ in 0..DECODE_ROUNDS {
            let next = normalise(&view);
            if next == view {
                break;
            }
            view = next;
            if self.authorities_reach(&view) {
                return true;
            }
        }
        false
    }

    /// Every authority (what follows a `//`) in `v`.
    fn authorities_reach(&self, v: &[u8]) -> bool {
        let mut from = 0;
        while let Some(at) = find(v.get(from..).unwrap_or_default(), b"//") {
            let mut start = from + at + 2;
            from += at + 1;
            // `http:///host` is `http://host` to a WHATWG parser
            while v.get(start) == Some(&b'/') {
                start += 1;
            }
            let rest = v.get(start..).unwrap_or_default();
            let end = rest
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            if self.authority_reaches(rest.get(..end).unwrap_or_default()) {
                return true;
            }
        }
        false
    }

    /// `[user-info@]host[:port]`, the user-info split off at the last and at the first `@`
    /// (parsers differ).
    fn authority_reaches(&self, authority: &[u8]) -> bool {
        let last = authority.iter().rposition(|b| *b == b'@');
        let first = authority.iter().position(|b| *b == b'@');
        let after = |i: Option<usize>| authority.get(i.map_or(0, |i| i + 1)..).unwrap_or_default();
        self.host_port_reaches(after(last)) || self.host_port_reaches(after(first))
    }

    fn host_port_reaches(&self, hp: &[u8]) -> bool {
        let (host, port) = match hp.strip_prefix(b"[") {
            Some(inside) => match inside.iter().position(|b| *b == b']') {
                Some(close) => (
                    Host::Bracketed(inside.get(..close).unwrap_or_default()),
                    inside.get(close + 1..).unwrap_or_default(),
                ),
                // no closing bracket: nothing a parser would connect to as given; fail closed
                None => (Host::Bracketed(inside), &b""[..]),
            },
            None => {
                let colon = hp.iter().position(|b| *b == b':').unwrap_or(hp.len());
                (
                    Host::Plain(hp.get(..colon).unwrap_or_default()),
                    hp.get(colon..).unwrap_or_default(),
                )
            }
        };
        self.port_matches(port) && host.may_be_local()
    }

    /// `port` is empty or `:` and what follows the host.
    fn port_matches(&self, port: &[u8]) -> bool {
        let digits = parse_port(port.strip_prefix(b":").unwrap_or_default());
        match digits {
            // the scheme's default port
            None => DEFAULT_PORTS.iter().any(|d| self.ports.contains(d)),
            // some clients wrap a port past 65535 around
            Some(n) => self
                .ports
                .iter()
                .any(|p| u64::from(*p) == n || n % 65536 == u64::from(*p)),
        }
    }
}

/// The leading decimal digits (ASCII or fullwidth) of `s`, as a number; `None` without any.
fn parse_port(s: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(s);
    let mut n: Option<u64> = None;
    for c in text.chars() {
        let d = match c {
            '0'..='9' => c as u64 - '0' as u64,
            '\u{ff10}'..='\u{ff19}' => c as u64 - 0xff10,
            _ => break,
        };
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d));
    }
    n
}

enum Host<'a> {
    Plain(&'a [u8]),
    Bracketed(&'a [u8]),
}

impl Host<'_> {
    /// Whether a client could reach a loopback listener through this host: anything but an IP
    /// literal known not to be local.
    fn may_be_local(&self) -> bool {
        match self {
            Host::Bracketed(inside) => {
                // a zone (`fe80::1%25eth0`, `%eth0`) is no part of the address
                let addr = inside.split(|b| *b == b'%').next().unwrap_or_default();
                std::str::from_utf8(addr)
                    .ok()
                    .and_then(|a| a.parse::<Ipv6Addr>().ok())
                    .is_none_or(v6_local)
            }
            Host::Plain(name) => {
                let text = std::str::from_utf8(name).unwrap_or("");
                let text = text.strip_suffix('.').unwrap_or(text);
                match dotted_quad(text) {
                    Some(v4) => v4_local(v4),
                    None => text.parse::<IpAddr>().ok().is_none_or(|ip| match ip {
                        IpAddr::V4(v4) => v4_local(v4),
                        IpAddr::V6(v6) => v6_local(v6),
                    }),
                }
            }
        }
    }
}

/// Four decimal numbers 0–255 without leading zeros: the only IPv4 form every parser reads
/// alike (`inet_aton` also takes `127.1`, `0x7f.1`, `017700000001`, `2130706433`).
fn dotted_quad(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty()
            || part.len() > 3
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (part.len() > 1 && part.starts_with('0'))
        {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

fn v4_local(a: Ipv4Addr) -> bool {
    // 0.0.0.0/8: connecting to 0.0.0.0 reaches the local host
    a.is_loopback() || a.octets()[0] == 0
}

fn v6_local(a: Ipv6Addr) -> bool {
    // `to_ipv4` reads both the IPv4-mapped (::ffff:127.0.0.1) and -compatible (::127.0.0.1) forms
    a.is_loopback() || a.is_unspecified() || a.to_ipv4().is_some_and(v4_local)
}

/// One more reading: `\` as `/`, tabs and line breaks dropped, percent-escapes decoded once.
fn normalise(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        let escaped = (b == b'%')
            .then(|| Some(hex(*v.get(i + 1)?)? << 4 | hex(*v.get(i + 2)?)?))
            .flatten();
        let (byte, step) = match escaped {
            Some(d) => (d, 3),
            None => (b, 1),
        };
        i += step;
        match byte {
            b'\\' => out.push(b'/'),
            b'\t' | b'\r' | b'\n' => {}
            other => out.push(other),
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Attributes whose values the CSE sends to (notification targets, beacon and forwarding
/// targets, consultation addresses, `rt.nu`). A value that is no URL is an ID the CSE resolves,
/// to a `<remoteCSE>` too: and that one's `poa` is an egress listener (red-team round 3).
pub const TARGET_KEYS: &[&str] = &["nu", "bcnu", "nfu", "dacan"];

/// Whether `value`, a value of a target attribute, is an ID (no `scheme://` URL) other than the
/// requester's own: `own` is its canonical originator, `canonical` reads an ID that way.
pub fn names_other_entity(
    value: &[u8],
    own: Option<&str>,
    canonical: impl Fn(&str) -> String,
) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return true;
    };
    if is_url(text) {
        // a URL goes where it says: `Listeners` judges it
        return false;
    }
    own.is_none_or(|own| canonical(text) != own)
}

/// `scheme://…` with an RFC 3986 scheme, as a CSE tells a URL from an ID.
fn is_url(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners() -> Listeners {
        Listeners::new(["127.0.0.1:8081".parse().unwrap()])
    }

    #[test]
    fn every_form_of_a_local_url_with_the_listeners_port_is_found() {
        let l = listeners();
        for url in [
            "http://127.0.0.1:8081/cse-in/x?y=1",
            "http://127.0.0.1:8081",
            "HTTP://127.0.0.1:8081/",
            "https://127.0.0.1:8081/",
            "ws://127.0.0.1:8081/",
            "mqtt://127.0.0.1:8081",
            "coap://127.0.0.1:8081",
            "acme://127.0.0.1:8081",
            "//127.0.0.1:8081/x",
            "http://127.1.2.3:8081/",
            "http://localhost:8081/",
            "http://LocalHost.:8081/",
            "http://a.localhost:8081/",
            "http://ip6-localhost:8081/",
            "http://127.0.0.1.nip.io:8081/",
            "http://in-cse.example.com:8081/",
            "http://[::1]:8081/",
            "http://[0:0:0:0:0:0:0:1]:8081/",
            "http://[::]:8081/",
            "http://[::ffff:127.0.0.1]:8081/",
            "http://[::ffff:7f00:1]:8081/",
            "http://[::127.0.0.1]:8081/",
            "http://[::1%25lo]:8081/",
            "http://0.0.0.0:8081/",
            "http://0:8081/",
            "http://2130706433:8081/",
            "http://0x7f000001:8081/",
            "http://0x7f.1:8081/",
            "http://017700000001:8081/",
            "http://0177.0.0.1:8081/",
            "http://127.1:8081/",
            "http://127.000.000.001:8081/",
            "http://:8081/",
            "http://127.0.0.1:08081/",
            "http://127.0.0.1:73617/",
            "http://127.0.0.1:８０８１/",
            "http://１２７．０．０．１:8081/",
            "http://user:pass@127.0.0.1:8081/",
            "http://a@127.0.0.1:8081@evil.example/",
            "http://evil.example@127.0.0.1:8081/",
            "http://127.0.0.1:8081\\@evil.example/",
            "http:\\\\127.0.0.1:8081\\x",
            "http:/\\127.0.0.1:8081/x",
            "http:///127.0.0.1:8081/",
            "http://127.0.0.%31:8081/",
            "http%3A%2F%2F127.0.0.1%3A8081%2Fx",
            "http%253A%252F%252F127.0.0.1%253A8081",
            "http://127.0.0.1%3A8081/",
            " http://127.0.0.1:8081/",
            "http://127.0.0.1:80\n81/",
            "ht\ttp://127.0.0.1:8081/",
            "http://127.0.0.1:8081&http://example.com/",
            "x http://example.com/ and http://127.0.0.1:8081/",
            "http://127.0.0.1:8081abc",
        ] {
            assert!(l.reached_by(url), "{url:?}");
        }
    }

    #[test]
    fn other_urls_and_strings_are_not() {
        let l = listeners();
        for s in [
            "http://127.0.0.1:8080/",
            "http://127.0.0.1/",
            "http://localhost/",
            "http://localhost:18081/",
            "http://localhost:808/",
            "http://10.0.0.5:8081/",
            "http://192.168.1.10:8081/",
            "http://[2001:db8::1]:8081/",
            "http://[::ffff:10.0.0.1]:8081/",
            "https://in-cse.example:8443/",
            "Cae-sensor1",
            "/id-in/cse-in/sub",
            "127.0.0.1:8081",
            "localhost:8081",
            "application/json",
            "",
            "http://example.com/?next=/8081",
            "http://example.com/a//b",
            "http://[fe80::1%25eth0]:8081/",
        ] {
            assert!(!l.reached_by(s), "{s:?}");
        }
        assert!(!Listeners::default().reached_by("http://127.0.0.1:8081/"));
    }

    #[test]
    fn a_listener_on_a_default_port_is_reached_without_one() {
        let l = Listeners::new(["127.0.0.1:80".parse().unwrap()]);
        assert!(l.reached_by("http://localhost/x"));
        assert!(l.reached_by("http://127.0.0.1:/x"));
        assert!(!l.reached_by("http://127.0.0.1:8080/x"));
    }

    #[test]
    fn port_and_address_forms() {
        assert_eq!(parse_port(b"8081/x"), Some(8081));
        assert_eq!(parse_port(b"x"), None);
        assert_eq!(parse_port(b""), None);
        assert_eq!(parse_port("８０".as_bytes()), Some(80));
        assert_eq!(dotted_quad("127.0.0.1"), Some(Ipv4Addr::LOCALHOST));
        for odd in [
            "127.1",
            "0177.0.0.1",
            "127.0.0.1.",
            "127.0.0.256",
            "1.2.3.4.5",
            "",
        ] {
            assert_eq!(dotted_quad(odd), None, "{odd}");
        }
    }

    #[test]
    fn ids_other_than_the_requesters_own_are_found() {
        let canon = |s: &str| s.strip_prefix("/id-in/").unwrap_or(s).to_string();
        let own = Some("Cae1");
        for other in [
            "/id-mn/cse-mn/x",
            "/id-mn",
            "id-mn",
            "cse-in/id-mn",
            "/id-in/cse-in/id-mn",
            "Cae2",
            " http://x",
            "/x/http://y",
            "1http://x",
        ] {
            assert!(names_other_entity(other.as_bytes(), own, canon), "{other}");
        }
        for fine in ["Cae1", "/id-in/Cae1", "http://10.0.0.1:80/x", "mqtt://b/x"] {
            assert!(!names_other_entity(fine.as_bytes(), own, canon), "{fine}");
        }
        assert!(names_other_entity(b"Cae1", None, canon));
        assert!(names_other_entity(&[0xff], own, canon));
    }
}
