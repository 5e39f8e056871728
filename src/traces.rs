//! The OTLP span exporter, when `[traces] otlp_endpoint` is set: every
//! span of the role (intake's `intake.event`, a worker's `worker.deliver`
//! and its `provider.call`s) is exported, in the trace its event started
//! (see `tidings_core::trace`). Batched on a thread of its own; what is
//! still buffered at shutdown is flushed then.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tidings_core::config::TracesConfig;

/// The exporter of a running process: flushed and stopped by [`Export::shutdown`].
pub struct Export(SdkTracerProvider);

/// The layer that exports `service`'s spans, and its exporter; none when
/// no endpoint is configured.
pub fn layer<S>(
    config: &TracesConfig,
    service: &str,
) -> anyhow::Result<Option<(tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, Export)>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .with_context(|| format!("traces: cannot export to {}", tidings_core::redact::credentials(endpoint)))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
        .with_resource(Resource::builder().with_service_name(service.to_string()).build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tidings"));
    tidings_core::trace::enable_export();
    Ok(Some((layer, Export(provider))))
}

/// What is exported, whatever `TIDINGS_LOG` lets the log show: the spans of
/// a notification's hops, and warnings and errors (as events on them).
pub fn wanted() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|meta| {
        if meta.is_span() {
            *meta.level() <= tracing::Level::INFO
        } else {
            *meta.level() <= tracing::Level::WARN
        }
    })
}

impl Export {
    /// Exports what is still buffered, then stops.
    pub async fn shutdown(self) {
        let provider = self.0;
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            eprintln!("traces: the last spans were not exported: {e}");
        }
    }
}
