//! Exporting request spans to an OpenTelemetry collector (`[telemetry]`, cargo feature
//! `otlp`).
//!
//! The gateway opens one `tracing` span per request (see [`agentgate_proxy::gateway`]). With
//! the `otlp` feature and a `[telemetry]` section, `agentgate serve` adds a
//! `tracing-opentelemetry` layer to its subscriber ([`Telemetry::layer`]) that turns those
//! spans into OpenTelemetry spans, batched and sent over OTLP/HTTP (protobuf) to
//! `telemetry.otlp_endpoint`:
//!
//! - sampling is parent-based: a request that joins a caller's trace follows the caller's
//!   `sampled` flag; a new trace is kept with probability `telemetry.sample_ratio`;
//! - [`OtelSpanLink`] makes the caller's `traceparent` the span's remote parent and hands
//!   the span's OpenTelemetry ids back to the gateway, so the `traceparent` sent upstream
//!   names exactly the span that is exported;
//! - the batch processor runs on its own thread; each export request is sent by a pooled
//!   hyper client on the application runtime (the one that lives for the whole process),
//!   bounded by `telemetry.export_timeout_ms`;
//! - [`Telemetry::shutdown`] flushes what is still queued when the gateway stops.
//!
//! Without the feature, propagation still works (it needs no backend) and a `[telemetry]`
//! section is rejected by [`check`] so a missing export never goes unnoticed.

use agentgate_config::{Config, ValidationError};

/// Checks that this build can honour the configuration's `[telemetry]` section: without
/// the `otlp` feature, any `[telemetry]` is an error naming the key.
pub fn check(config: &Config) -> Result<(), ValidationError> {
    if cfg!(feature = "otlp") || config.telemetry.is_none() {
        return Ok(());
    }
    Err(ValidationError::new(
        "telemetry",
        "this agentgate was built without the `otlp` feature, so spans cannot be \
         exported: rebuild with `cargo build --features otlp`, or remove [telemetry]",
    ))
}

/// The [`SpanLink`](agentgate_proxy::SpanLink) the gateway should use: OpenTelemetry's with
/// the `otlp` feature (it links nothing unless the exporting layer is installed), else none.
pub fn span_link() -> Option<std::sync::Arc<dyn agentgate_proxy::SpanLink>> {
    #[cfg(feature = "otlp")]
    {
        Some(std::sync::Arc::new(otlp::OtelSpanLink))
    }
    #[cfg(not(feature = "otlp"))]
    {
        None
    }
}

#[cfg(feature = "otlp")]
pub use otlp::{OtelSpanLink, Telemetry};

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::Duration;

    use agentgate_config::TelemetryConfig;
    use agentgate_proxy::trace::{SpanIds, SpanLink, TraceParent};
    use bytes::Bytes;
    use http::{HeaderValue, Request, Response};
    use http_body_util::{BodyExt, Full, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use opentelemetry::trace::{
        SpanContext, TraceContextExt, TraceFlags, TraceState, TracerProvider as _,
    };
    use opentelemetry_http::{HttpClient, HttpError};
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// Largest collector answer read (its body is only checked for errors).
    const MAX_ANSWER_BYTES: usize = 1 << 20;

    /// The OpenTelemetry pipeline: a tracer provider exporting batches over OTLP/HTTP.
    #[derive(Debug)]
    pub struct Telemetry {
        provider: opentelemetry_sdk::trace::SdkTracerProvider,
    }

    impl Telemetry {
        /// Builds the pipeline for `config`; export requests run on `runtime`, which must
        /// outlive the returned value (shut it down first).
        pub fn new(
            config: &TelemetryConfig,
            runtime: tokio::runtime::Handle,
        ) -> Result<Self, opentelemetry_otlp::ExporterBuildError> {
            let client = RuntimeClient {
                client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
                runtime,
                timeout: config.export_timeout(),
            };
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(config.otlp_endpoint.clone())
                .with_timeout(config.export_timeout())
                .build()?;
            let batches = BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(config.batch_delay())
                        .build(),
                )
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_span_processor(batches)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    config.sample_ratio,
                ))))
                .with_resource(
                    Resource::builder()
                        .with_service_name(config.service_name.clone())
                        .build(),
                )
                .build();
            Ok(Self { provider })
        }

        /// The `tracing` layer that turns spans into OpenTelemetry spans of this pipeline.
        pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
        where
            S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
        {
            tracing_opentelemetry::layer().with_tracer(self.provider.tracer("agentgate"))
        }

        /// Exports what is still queued and stops the pipeline.
        pub fn shutdown(self) {
            if let Err(e) = self.provider.shutdown() {
                tracing::warn!(error = %e, "telemetry shutdown failed; some spans were lost");
            }
        }
    }

    /// Connects the gateway's request spans to the OpenTelemetry layer: see the
    /// [module docs](super).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct OtelSpanLink;

    impl SpanLink for OtelSpanLink {
        fn link(
            &self,
            span: &tracing::Span,
            parent: Option<TraceParent>,
            tracestate: Option<&HeaderValue>,
        ) -> Option<SpanIds> {
            if let Some(parent) = parent {
                // A tracestate that OpenTelemetry cannot read still passes through to
                // upstreams unchanged (the gateway copies the header); it is only left out
                // of the exported parent context.
                let state = tracestate
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<TraceState>().ok())
                    .unwrap_or_default();
                let remote = SpanContext::new(
                    opentelemetry::trace::TraceId::from_bytes(parent.trace_id.0),
                    opentelemetry::trace::SpanId::from_bytes(parent.parent_id.0),
                    TraceFlags::new(parent.flags),
                    true,
                    state,
                );
                let cx = opentelemetry::Context::new().with_remote_span_context(remote);
                // Fails when no OpenTelemetry layer is installed: the gateway's ids serve.
                span.set_parent(cx).ok()?;
            }
            let cx = span.context();
            let ids = cx.span().span_context().clone();
            ids.is_valid().then(|| SpanIds {
                trace_id: agentgate_proxy::trace::TraceId(ids.trace_id().to_bytes()),
                span_id: agentgate_proxy::trace::SpanId(ids.span_id().to_bytes()),
                sampled: ids.is_sampled(),
            })
        }
    }

    /// Sends export requests with a pooled hyper client on a long-lived tokio runtime.
    ///
    /// The SDK's batch processor calls the exporter from its own thread, outside any
    /// runtime; the request is spawned onto `runtime` and its result awaited from there.
    #[derive(Debug)]
    struct RuntimeClient {
        client: Client<HttpConnector, Full<Bytes>>,
        runtime: tokio::runtime::Handle,
        timeout: Duration,
    }

    #[async_trait::async_trait]
    impl HttpClient for RuntimeClient {
        async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
            let client = self.client.clone();
            let exchange = async move {
                let response = client.request(request.map(Full::new)).await?;
                let (head, body) = response.into_parts();
                let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await?;
                Ok::<_, HttpError>(Response::from_parts(head, body.to_bytes()))
            };
            let timeout = self.timeout;
            let task = self.runtime.spawn(async move {
                match tokio::time::timeout(timeout, exchange).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis()).into()),
                }
            });
            task.await?
        }
    }
}
