//! Whether tracing is on and how, from `tracing:` in proxy.yaml and the standard `OTEL_*`
//! environment variables: the same answer for `check` and for the running proxy. The file wins
//! where both say something; `tracing: {enabled: false}` (or `OTEL_SDK_DISABLED=true`, or
//! `OTEL_TRACES_EXPORTER=none`) turns it off whatever else is set.

use std::time::Duration;

use super::batch::BatchSettings;
use crate::config::tracing::check_endpoint;
use crate::config::{KeyError, TracingConfig};

/// The path of the traces signal under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";
const DEFAULT_SERVICE_NAME: &str = "m2m-auth-proxy";

#[derive(Debug, Clone, PartialEq)]
pub enum Tracing {
    /// Off, and why (for `check`).
    Off(&'static str),
    On(Box<Settings>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where spans are posted (the traces URL itself).
    pub endpoint: String,
    /// Which key or variable gave it.
    pub endpoint_from: &'static str,
    /// `tracing.sampler_ratio`; `None`: `OTEL_TRACES_SAMPLER(_ARG)`, parent-based always-on by
    /// default.
    pub sampler_ratio: Option<f64>,
    /// The sampler the environment names, when the file names none (for `check`).
    pub env_sampler: Option<String>,
    /// `service.name`: the file's, or `OTEL_SERVICE_NAME`, or `m2m-auth-proxy`.
    pub service_name: Option<String>,
    pub batch: BatchSettings,
    /// `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT`: one export's HTTP exchange.
    pub export_timeout: Duration,
}

impl Settings {
    /// The service name to set, if neither the file nor the environment names one.
    pub fn default_service_name() -> &'static str {
        DEFAULT_SERVICE_NAME
    }
}

/// Resolves the settings from the file's section and an environment (`std::env::var` in use).
pub fn resolve(
    config: Option<&TracingConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Tracing, KeyError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let file = config.cloned().unwrap_or_default();
    if file.enabled == Some(false) {
        return Ok(Tracing::Off("tracing.enabled is false"));
    }
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Tracing::Off("OTEL_SDK_DISABLED=true"));
    }
    if env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none") {
        return Ok(Tracing::Off("OTEL_TRACES_EXPORTER=none"));
    }
    let (endpoint, endpoint_from) = if let Some(base) = file.endpoint.as_deref() {
        (with_traces_path(base), "tracing.endpoint")
    } else if let Some(url) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        (url, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    } else if let Some(base) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        (with_traces_path(&base), "OTEL_EXPORTER_OTLP_ENDPOINT")
    } else {
        return Ok(Tracing::Off(
            "no endpoint (tracing.endpoint, OTEL_EXPORTER_OTLP_ENDPOINT)",
        ));
    };
    check_endpoint(&endpoint).map_err(|m| KeyError::new(endpoint_from, m))?;
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = env(name) {
            if p.trim() != "http/protobuf" {
                return Err(KeyError::new(
                    name,
                    format!("{p:?}: only http/protobuf is built in"),
                ));
            }
            break;
        }
    }
    if let Some(exporter) = env("OTEL_TRACES_EXPORTER") {
        if exporter.trim() != "otlp" {
            return Err(KeyError::new(
                "OTEL_TRACES_EXPORTER",
                format!("{exporter:?}: expected otlp or none"),
            ));
        }
    }
    let millis = |name: &str, default: u64| -> Result<Duration, KeyError> {
        number(&env, name, default).map(Duration::from_millis)
    };
    let batch = BatchSettings {
        schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5000)?,
        export_timeout: millis("OTEL_BSP_EXPORT_TIMEOUT", 30000)?,
        max_queue_size: number(&env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)? as usize,
        max_export_batch_size: number(&env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)? as usize,
    };
    if batch.max_queue_size == 0 || batch.max_export_batch_size == 0 {
        return Err(KeyError::new(
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "queue and batch sizes must be at least 1",
        ));
    }
    let export_timeout = match env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
        Some(_) => millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 10000)?,
        None => millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10000)?,
    };
    let env_sampler = env("OTEL_TRACES_SAMPLER").map(|s| match env("OTEL_TRACES_SAMPLER_ARG") {
        Some(arg) => format!("{s} ({arg})"),
        None => s,
    });
    Ok(Tracing::On(Box::new(Settings {
        endpoint,
        endpoint_from,
        sampler_ratio: file.sampler_ratio,
        env_sampler: file
            .sampler_ratio
            .is_none()
            .then_some(env_sampler)
            .flatten(),
        service_name: file.service_name.clone(),
        batch,
        export_timeout: export_timeout.max(Duration::from_millis(1)),
    })))
}

/// From the process environment.
pub fn from_env(config: Option<&TracingConfig>) -> Result<Tracing, KeyError> {
    resolve(config, &|name| std::env::var(name).ok())
}

fn number(env: &dyn Fn(&str) -> Option<String>, name: &str, default: u64) -> Result<u64, KeyError> {
    match env(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| KeyError::new(name, format!("expected a whole number, got {v:?}"))),
    }
}

/// A base URL with the traces path appended (`OTEL_EXPORTER_OTLP_ENDPOINT`'s rule).
fn with_traces_path(base: &str) -> String {
    format!("{}{TRACES_PATH}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn on(t: Tracing) -> Settings {
        match t {
            Tracing::On(s) => *s,
            Tracing::Off(why) => panic!("off: {why}"),
        }
    }

    #[test]
    fn on_when_an_endpoint_is_given_in_either_place_and_off_when_disabled() {
        let none = env_of(&[]);
        assert!(matches!(resolve(None, &none), Ok(Tracing::Off(_))));
        let env = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]);
        let s = on(resolve(None, &env).unwrap());
        assert_eq!(s.endpoint, "http://c:4318/v1/traces");
        let signal = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/x"),
        ]);
        assert_eq!(
            on(resolve(None, &signal).unwrap()).endpoint,
            "http://t:4318/x"
        );
        let file = TracingConfig {
            endpoint: Some("http://f:4318".into()),
            sampler_ratio: Some(0.5),
            ..TracingConfig::default()
        };
        let s = on(resolve(Some(&file), &signal).unwrap());
        assert_eq!(
            (s.endpoint.as_str(), s.endpoint_from),
            ("http://f:4318/v1/traces", "tracing.endpoint")
        );
        assert_eq!(s.sampler_ratio, Some(0.5));
        let off = TracingConfig {
            enabled: Some(false),
            ..file
        };
        assert!(matches!(resolve(Some(&off), &signal), Ok(Tracing::Off(_))));
    }

    #[test]
    fn environment_values_are_checked() {
        let grpc = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!(
            resolve(None, &grpc).unwrap_err().key,
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        );
        let delay = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ]);
        assert_eq!(
            resolve(None, &delay).unwrap_err().key,
            "OTEL_BSP_SCHEDULE_DELAY"
        );
        let tls = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")]);
        assert!(resolve(None, &tls).is_err());
        let ok = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ]);
        let s = on(resolve(None, &ok).unwrap());
        assert_eq!(s.batch.schedule_delay, Duration::from_millis(50));
    }
}
