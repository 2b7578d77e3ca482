//! `tracing`: OpenTelemetry trace export. Every key is optional; the standard `OTEL_*`
//! environment variables fill what the file leaves out (`crate::telemetry::settings`), and the
//! file wins where both say something.

use serde::Deserialize;

use super::KeyError;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// `false`: no tracing, whatever the environment says. Absent or `true`: on when an
    /// endpoint is given here or in the environment.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The collector's OTLP/HTTP base URL (`http://otel-collector:4318`); `/v1/traces` is
    /// appended, as for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Parent-based ratio sampling: a request with a sampled parent is traced, one without a
    /// parent with this probability.
    #[serde(default)]
    pub sampler_ratio: Option<f64>,
    /// The `service.name` resource attribute.
    #[serde(default)]
    pub service_name: Option<String>,
}

impl TracingConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        if let Some(endpoint) = &self.endpoint {
            check_endpoint(endpoint).map_err(|m| KeyError::new("tracing.endpoint", m))?;
        }
        if let Some(ratio) = self.sampler_ratio {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(KeyError::new(
                    "tracing.sampler_ratio",
                    format!("expected a number from 0.0 to 1.0, got {ratio}"),
                ));
            }
        }
        if self
            .service_name
            .as_ref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(KeyError::new(
                "tracing.service_name",
                "expected a non-empty name",
            ));
        }
        Ok(())
    }
}

/// An OTLP/HTTP endpoint the exporter can reach: `http://host[:port][/path]`. No TLS: the
/// collector of a pod (or its node agent) is reached in plain HTTP.
pub fn check_endpoint(endpoint: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("expected an http:// URL, got {endpoint:?} ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{endpoint:?}: https is not supported; export to a collector in plain HTTP (in the pod or on the node)"
            ))
        }
        _ => return Err(format!("expected an http:// URL, got {endpoint:?}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{endpoint:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{endpoint:?}: no query string expected"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_ratios_and_names_are_checked() {
        assert!(check_endpoint("http://collector:4318").is_ok());
        assert!(check_endpoint("http://127.0.0.1:4318/otlp").is_ok());
        assert!(check_endpoint("https://collector:4318").is_err());
        assert!(check_endpoint("collector:4318").is_err());
        assert!(check_endpoint("http://c:4318/?x=1").is_err());
        let bad_ratio = TracingConfig {
            sampler_ratio: Some(1.5),
            ..TracingConfig::default()
        };
        assert_eq!(
            bad_ratio.validate().unwrap_err().key,
            "tracing.sampler_ratio"
        );
        let empty_name = TracingConfig {
            service_name: Some(" ".into()),
            ..TracingConfig::default()
        };
        assert_eq!(
            empty_name.validate().unwrap_err().key,
            "tracing.service_name"
        );
    }
}
