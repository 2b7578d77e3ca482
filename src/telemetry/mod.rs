//! OpenTelemetry tracing: W3C trace context in and out, a span per request (and per
//! WebSocket connection), OTLP/HTTP export off the request path. Off unless an endpoint is
//! configured; off, the request path holds `None` and makes no span.
//!
//! - `settings`: on or off, and how, from `tracing:` and the `OTEL_*` environment
//! - `context`: `traceparent`/`tracestate` parsed and sent on
//! - `span`: a request's spans and what they say
//! - `attributes`: every attribute name, in one place
//! - `export`: the SDK tracer and the OTLP exporter
//! - `batch`: the bounded queue and export thread (drops counted)
//! - `http_client`: the exporter's blocking HTTP/1.1 client

pub mod attributes;
pub mod batch;
pub mod context;
pub mod export;
pub mod http_client;
pub mod settings;
pub mod span;

use std::sync::OnceLock;

use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

pub use span::{Ending, Listener, ListenerTracing, RequestSpan};

/// The tracer, once tracing is on: for the spans of work below a request (credential checks,
/// JWKS and introspection calls), which find their parent in the current context.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();
/// Kept for the life of the process (its spans' processor and exporter).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Starts export as `settings` say; the tracer for the listeners.
pub fn start(settings: &settings::Settings) -> anyhow::Result<SdkTracer> {
    let exporting = export::start(settings)?;
    let _ = TRACER.set(exporting.tracer.clone());
    let _ = PROVIDER.set(exporting.provider);
    Ok(exporting.tracer)
}

/// At shutdown: once the grace period is nearly over (the last requests' spans have ended),
/// what is still queued is exported instead of lost with the process.
pub struct FlushAtShutdown {
    pub grace_period: std::time::Duration,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for FlushAtShutdown {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        let margin = std::time::Duration::from_millis(500);
        tokio::time::sleep(self.grace_period.saturating_sub(margin)).await;
        if let Some(provider) = PROVIDER.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        }
    }
}

/// A span for work under the current request, ended when dropped; `None` when tracing is off
/// or the request is not sampled.
pub fn child(name: &'static str) -> Option<Span> {
    let tracer = TRACER.get()?;
    let cx = Context::current();
    if !cx.span().span_context().is_sampled() {
        return None;
    }
    Some(
        tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .start_with_context(tracer, &cx),
    )
}
