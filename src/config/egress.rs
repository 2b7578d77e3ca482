//! `egress`: routes that carry the local CSE's outbound (Mcc) traffic to its peers, each with
//! the identity the pod proves to that peer.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;

use super::authorization::{AuthorizationConfig, Effect, Operation, ResourceType, RuleConfig};
use super::cse::CseConfig;
use super::service::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_UPSTREAM_TIMEOUT};
use super::value::{duration, FilePath, KeyError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRoute {
    /// `[a-z0-9-]+`, unique: the route's label in logs and metrics.
    pub name: String,
    /// Plain-HTTP listener for the local CSE; loopback addresses only.
    pub listen: String,
    /// The peer's public base URL (`https://host:port`).
    pub peer: String,
    /// Allow an `http://` peer (the pod's identity then travels in clear: warned about).
    #[serde(default)]
    pub allow_plain_peer: bool,
    #[serde(default)]
    pub tls: Option<EgressTls>,
    #[serde(default)]
    pub basic: Option<EgressBasic>,
    #[serde(default)]
    pub bearer: Option<EgressBearer>,
    /// Regexes one of which the outbound `X-M2M-Origin` must match; absent: not checked.
    #[serde(default)]
    pub originators: Option<Vec<String>>,
    /// Rewrite `poa` URLs between the peer's public URL and this route's local URL.
    #[serde(default = "yes")]
    pub rewrite_poa: bool,
    /// Roles (`auth.roles`, or from tokens) of the identities that are this route's peer when
    /// they call the local CSE: only their request bodies get the peer's `poa` turned into this
    /// route's local URL on the ingress, and they act as CSEs there. Absent: nobody's.
    #[serde(default)]
    pub peer_roles: Vec<String>,
    /// The peer CSE (its CSE-ID, CSEBase name, SP-ID): `allow` reads targets in its canonical
    /// form, as the rules read the local CSE's with `cse`.
    #[serde(default)]
    pub peer_cse: Option<CseConfig>,
    /// What may leave on this route; absent: everything `originators` lets out.
    #[serde(default)]
    pub allow: Option<Vec<EgressAllow>>,
    /// Per read/write, like `upstream.timeout`.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    DEFAULT_UPSTREAM_TIMEOUT
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressTls {
    /// CA bundle that must sign the peer's server certificate.
    pub ca: FilePath,
    /// SNI and certificate name check; default: the host of `peer`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate (and key) presented to the peer.
    #[serde(default)]
    pub cert: Option<FilePath>,
    #[serde(default)]
    pub key: Option<FilePath>,
}

/// One entry of `egress[].allow`: every condition given must match, as in a rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressAllow {
    /// Regexes on the `X-M2M-Origin` the local CSE sends.
    #[serde(default)]
    pub originators: Option<Vec<String>>,
    #[serde(default)]
    pub operations: Option<Vec<Operation>>,
    /// Resource types of a create.
    #[serde(default)]
    pub resource_types: Option<Vec<ResourceType>>,
    /// Target patterns (`*` one segment, `**` any tail), read for `peer_cse`.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
}

impl EgressRoute {
    /// `allow` as a rule set's section: one allow rule per entry (named `allow[i]`), default
    /// deny. `None` without `allow`.
    pub fn allow_rules(&self) -> Option<AuthorizationConfig> {
        let entries = self.allow.as_ref()?;
        Some(AuthorizationConfig {
            default: Effect::Deny,
            rules: entries
                .iter()
                .enumerate()
                .map(|(i, a)| RuleConfig {
                    name: format!("allow[{i}]"),
                    identities: None,
                    patterns: None,
                    roles: None,
                    unless_roles: None,
                    methods: None,
                    originators: a.originators.clone(),
                    operations: a.operations.clone(),
                    resource_types: a.resource_types.clone(),
                    targets: a.targets.clone(),
                    effect: Effect::Allow,
                })
                .collect(),
        })
    }
}

/// An error about `authorization.rules[i]…` or `cse…` of a route's `allow` rule set, named by
/// the route's keys.
pub fn allow_key_error(index: usize, e: KeyError) -> KeyError {
    let route = format!("egress[{index}]");
    let key = if let Some(rest) = e.key.strip_prefix("authorization.rules") {
        format!("{route}.allow{rest}")
    } else if let Some(rest) = e.key.strip_prefix("cse") {
        format!("{route}.peer_cse{rest}")
    } else {
        format!("{route}.allow")
    };
    KeyError::new(key, e.message)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressBasic {
    pub user: String,
    pub password_file: FilePath,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressBearer {
    pub token_file: FilePath,
}

/// A peer base URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl PeerUrl {
    pub fn parse(url: &str) -> Result<PeerUrl, String> {
        let expected = || format!("expected a base URL like \"https://host:8443\", got {url:?}");
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(expected());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
            return Err(expected());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            // an IPv6 literal without a port ends with ']'
            Some((host, port)) if !port.ends_with(']') => {
                (host, port.parse::<u16>().map_err(|_| expected())?)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(expected());
        }
        Ok(PeerUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `host:port` as written in a URL (IPv6 literals bracketed).
    pub fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }
}

impl EgressRoute {
    /// The listener address (checked to be loopback by `validate`).
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen
            .to_socket_addrs()
            .map_err(|e| format!("expected host:port, got {:?} ({e})", self.listen))?
            .next()
            .ok_or_else(|| format!("{:?} resolves to no address", self.listen))
    }

    fn validate(&self, index: usize) -> Result<(), KeyError> {
        let key = |k: &str| format!("egress[{index}].{k}");
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(KeyError::new(
                key("name"),
                format!("expected [a-z0-9-]+, got {:?}", self.name),
            ));
        }
        let listen = self
            .listen_addr()
            .map_err(|m| KeyError::new(key("listen"), m))?;
        if !listen.ip().is_loopback() {
            return Err(KeyError::new(
                key("listen"),
                format!(
                    "expected a loopback address (127.0.0.1 or [::1]): the egress listener speaks plain HTTP and proves the pod's identity to whoever connects, got {:?}",
                    self.listen
                ),
            ));
        }
        let peer = PeerUrl::parse(&self.peer).map_err(|m| KeyError::new(key("peer"), m))?;
        if !peer.tls && !self.allow_plain_peer {
            return Err(KeyError::new(
                key("peer"),
                "expected an https:// URL (plain http only with allow_plain_peer: true)",
            ));
        }
        match &self.tls {
            None if peer.tls => {
                return Err(KeyError::new(
                    key("tls.ca"),
                    "expected the CA bundle that signs the peer's server certificate",
                ))
            }
            Some(_) if !peer.tls => {
                return Err(KeyError::new(
                    key("tls"),
                    "a plain http peer has no TLS: remove the tls section or use https",
                ))
            }
            Some(tls) if tls.cert.is_some() != tls.key.is_some() => {
                return Err(KeyError::new(
                    key("tls.cert"),
                    "expected cert and key together",
                ))
            }
            Some(EgressTls {
                server_name: Some(name),
                ..
            }) if name.is_empty() || name.contains(['/', ' ', ':']) => {
                return Err(KeyError::new(
                    key("tls.server_name"),
                    format!("expected a host name or IP address, got {name:?}"),
                ))
            }
            _ => {}
        }
        if self.basic.is_some() && self.bearer.is_some() {
            return Err(KeyError::new(
                key("bearer"),
                "expected basic or bearer, not both: a request carries one Authorization header",
            ));
        }
        if let Some(basic) = &self.basic {
            if basic.user.is_empty() || basic.user.contains(':') {
                return Err(KeyError::new(
                    key("basic.user"),
                    "expected a non-empty user name without ':'",
                ));
            }
        }
        if let Some(role) = self.peer_roles.iter().find(|r| r.is_empty()) {
            return Err(KeyError::new(
                key("peer_roles"),
                format!("expected role names, got {role:?}"),
            ));
        }
        if let Some(cse) = &self.peer_cse {
            cse.validate().map_err(|e| allow_key_error(index, e))?;
        }
        match &self.allow {
            Some(entries) if entries.is_empty() => {
                return Err(KeyError::new(
                    key("allow"),
                    "expected at least one entry (an empty list would let nothing out; leave the key out to let everything out)",
                ))
            }
            Some(entries) if self.peer_cse.is_none() => {
                if let Some(i) = entries.iter().position(|a| a.targets.is_some()) {
                    return Err(KeyError::new(
                        key("peer_cse"),
                        format!("allow[{i}] has targets, which need the peer CSE's identity to be read in every form: add `peer_cse: {{id: \"/id-in\", name: \"cse-in\"}}` with the peer's values"),
                    ));
                }
            }
            _ => {}
        }
        if let Some(rules) = self.allow_rules() {
            rules.validate().map_err(|e| allow_key_error(index, e))?;
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(KeyError::new(
                key("timeout"),
                "expected timeout and connect_timeout > 0",
            ));
        }
        Ok(())
    }
}

/// Checks across the routes: each on its own, unique names and listeners.
pub fn validate(routes: &[EgressRoute]) -> Result<(), KeyError> {
    let mut names = HashSet::new();
    let mut listens = HashSet::new();
    for (i, route) in routes.iter().enumerate() {
        route.validate(i)?;
        if !names.insert(route.name.as_str()) {
            return Err(KeyError::new(
                format!("egress[{i}].name"),
                format!("route {:?} is listed twice", route.name),
            ));
        }
        if let Ok(addr) = route.listen_addr() {
            if !listens.insert(addr) {
                return Err(KeyError::new(
                    format!("egress[{i}].listen"),
                    format!("{addr} is used by another route"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls() {
        let p = PeerUrl::parse("https://IN-CSE.example:8443/").unwrap();
        assert_eq!(
            (p.tls, p.host.as_str(), p.port),
            (true, "in-cse.example", 8443)
        );
        assert_eq!(PeerUrl::parse("https://in.example").unwrap().port, 443);
        assert_eq!(PeerUrl::parse("http://in.example").unwrap().port, 80);
        let v6 = PeerUrl::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.authority()),
            ("::1", "[::1]:8443".to_string())
        );
        assert_eq!(PeerUrl::parse("https://[::1]").unwrap().port, 443);
        for bad in [
            "in.example:8443",
            "https://",
            "https://u:p@in.example",
            "https://in.example/path",
            "https://in.example:x",
            "ftp://in.example",
        ] {
            assert!(PeerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
