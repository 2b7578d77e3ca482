//! The tracer the proxy's spans come from: the SDK's, with its sampler and resource, exporting
//! OTLP/HTTP protobuf through `batch` and `http_client`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter as _};
use opentelemetry_sdk::Resource;

use super::batch::BatchProcessor;
use super::http_client::BlockingHttp;
use super::settings::Settings;

/// The running tracer; keep the provider for as long as spans are made.
pub struct Exporting {
    pub provider: SdkTracerProvider,
    pub tracer: SdkTracer,
}

pub fn start(settings: &Settings) -> anyhow::Result<Exporting> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingHttp {
            timeout: settings.export_timeout,
        })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(settings.export_timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("tracing: cannot build the OTLP exporter: {e}"))?;
    let resource = resource(settings);
    exporter.set_resource(&resource);
    let mut provider = SdkTracerProvider::builder()
        .with_span_processor(BatchProcessor::start(exporter, settings.batch))
        .with_resource(resource);
    if let Some(ratio) = settings.sampler_ratio {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        )));
    }
    let provider = provider.build();
    let tracer = provider.tracer("m2m-auth-proxy");
    Ok(Exporting { provider, tracer })
}

/// `service.name` from the file, else `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` (the
/// SDK's detectors read them), else the proxy's name; the rest of `OTEL_RESOURCE_ATTRIBUTES`
/// (pod, namespace) as given.
fn resource(settings: &Settings) -> Resource {
    let detected = Resource::builder().build();
    let named_by_env = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    match (&settings.service_name, named_by_env) {
        (Some(name), _) => builder.with_service_name(name.clone()),
        (None, true) => builder,
        (None, false) => builder.with_service_name(Settings::default_service_name()),
    }
    .build()
}
