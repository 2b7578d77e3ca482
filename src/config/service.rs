//! The sections around the request path: upstream, limits, WebSocket, reload, shutdown, log.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::value::{duration, opt_duration, KeyError};
use crate::originator_syntax::validate_originator;

/// `upstream: "http://host:port"` or the long form with timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub url: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamLong {
    url: String,
    #[serde(default, with = "opt_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum UpstreamForms {
    Short(String),
    Long(UpstreamLong),
}

impl<'de> Deserialize<'de> for UpstreamConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let form = UpstreamForms::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a URL string like \"http://127.0.0.1:8080\" or a map with keys url, connect_timeout, timeout",
            )
        })?;
        Ok(match form {
            UpstreamForms::Short(url) => UpstreamConfig {
                url,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                timeout: DEFAULT_UPSTREAM_TIMEOUT,
            },
            UpstreamForms::Long(l) => UpstreamConfig {
                url: l.url,
                connect_timeout: l.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                timeout: l.timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
            },
        })
    }
}

/// The oneM2M WebSocket binding: every request primitive's `fr` is held to the proven identity.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Largest WebSocket message (reassembled from its fragments) the client may send; larger
    /// closes the connection with 1009.
    pub max_message: usize,
    /// Let upgrades that offer neither `oneM2M.json` nor `oneM2M.cbor` through uninspected.
    /// Off by default: otherwise omitting the subprotocol would bypass the `fr` check.
    pub allow_opaque: bool,
    /// `fr` of the responses the proxy sends when it refuses a primitive; default: the
    /// CSE-ID that starts the request's `to` (`/id-in/...` -> `/id-in`).
    pub cse_id: Option<String>,
    /// How long an upgraded connection may stay silent in both directions.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// A write to either side that has not completed after this long (a peer that stopped
    /// reading) closes the connection.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_message: 1024 * 1024,
            allow_opaque: false,
            cse_id: None,
            idle_timeout: Duration::from_secs(3600),
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl WebSocketConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        if !(125..=64 * 1024 * 1024).contains(&self.max_message) {
            return Err(KeyError::new(
                "websocket.max_message",
                format!("expected 125 to 67108864 bytes, got {}", self.max_message),
            ));
        }
        if self.idle_timeout.as_secs() == 0 {
            return Err(KeyError::new(
                "websocket.idle_timeout",
                "expected at least 1s",
            ));
        }
        if self.write_timeout.as_secs() == 0 {
            return Err(KeyError::new(
                "websocket.write_timeout",
                "expected at least 1s",
            ));
        }
        if let Some(cse_id) = &self.cse_id {
            validate_originator(cse_id).map_err(|m| KeyError::new("websocket.cse_id", m))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Request line plus headers, in bytes; larger -> 431.
    pub max_header_bytes: usize,
    /// Request body, in bytes; larger -> 413 (WebSocket traffic after the upgrade is not a body).
    pub max_body: u64,
    /// Open client connections (TLS listener); more are closed at accept.
    pub max_connections: usize,
    /// From accept to the first complete request head, TLS handshake included (TLS listener).
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after this long without a new request.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// oneM2M JSON/CBOR bodies up to this size are read whole to rewrite their `poa` values
    /// (egress routes with `rewrite_poa`); larger ones pass unchanged.
    pub egress_rewrite_max_body: usize,
    /// Password hash checks (cache misses) running at once, and waiting for a turn.
    pub verifications: VerificationLimits,
    /// Bytes all buffering together may hold (WebSocket messages, bodies read whole); default:
    /// a quarter of the container's memory limit when one is visible, else 256 MiB.
    pub buffer_budget: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationLimits {
    /// Default: half the CPUs (at least 1), so that hashing never takes every core.
    pub max_concurrent: Option<usize>,
    /// Beyond the running ones; more are refused at once (503) without verifying.
    pub max_queued: usize,
}

impl Default for VerificationLimits {
    fn default() -> Self {
        VerificationLimits {
            max_concurrent: None,
            max_queued: 32,
        }
    }
}

impl VerificationLimits {
    /// `max_concurrent`, or its default for this machine.
    pub fn concurrent(&self) -> usize {
        self.max_concurrent.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        })
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: 16 * 1024,
            max_body: 10 * 1024 * 1024,
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            egress_rewrite_max_body: 1024 * 1024,
            verifications: VerificationLimits::default(),
            buffer_budget: None,
        }
    }
}

impl LimitsConfig {
    /// `buffer_budget`, or its default here, with where it came from.
    pub fn buffer_budget(&self) -> (usize, String) {
        match self.buffer_budget {
            Some(bytes) => (bytes, "configured".to_owned()),
            None => crate::buffers::default_budget(),
        }
    }

    pub fn validate(&self) -> Result<(), KeyError> {
        if self.max_header_bytes < 1024
            || self.max_connections == 0
            || self.header_timeout.is_zero()
            || self.idle_timeout.as_secs() == 0
        {
            return Err(KeyError::new(
                "limits",
                "expected max_header_bytes >= 1024, max_connections >= 1, header_timeout > 0 and idle_timeout >= 1s",
            ));
        }
        if self.buffer_budget.is_some_and(|b| b < 1024 * 1024) {
            return Err(KeyError::new(
                "limits.buffer_budget",
                "expected at least 1048576 bytes (1 MiB)",
            ));
        }
        if self.verifications.max_concurrent == Some(0) {
            return Err(KeyError::new(
                "limits.verifications.max_concurrent",
                "expected at least 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One JSON line per request on stdout.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { access: true }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Periodic content check, for file systems without change events.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// React to file-system events in the files' directories (off: SIGHUP and polling only).
    pub watch: bool,
    /// A file changed in place (or a replacement much smaller than the file in force) is
    /// loaded only once it has not changed for this long: a half-written file is never loaded.
    #[serde(with = "duration")]
    pub settle: Duration,
    /// A read that takes longer is given up (a hung file system); the other files go on.
    #[serde(with = "duration")]
    pub read_timeout: Duration,
    /// Largest file per kind (`htpasswd`, `tokens`, `client_ca`, …), in bytes; defaults per
    /// kind.
    pub max_file_size: BTreeMap<String, u64>,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            poll_interval: Duration::from_secs(10),
            watch: true,
            settle: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            max_file_size: BTreeMap::new(),
        }
    }
}

impl ReloadConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.poll_interval < Duration::from_millis(100) {
            return Err(KeyError::new(
                "reload.poll_interval",
                "expected at least 100ms (e.g. \"10s\")",
            ));
        }
        if self.read_timeout < Duration::from_millis(100) {
            return Err(KeyError::new(
                "reload.read_timeout",
                "expected at least 100ms (e.g. \"5s\")",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run after SIGTERM before the process exits.
    #[serde(with = "duration")]
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period: Duration::from_secs(20),
        }
    }
}
