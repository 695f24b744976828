//! The process-wide Prometheus recorder (metrics-exporter-prometheus),
//! installed once; latency metrics (`*_seconds`) render as histograms.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, seconds: 100 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The recorder's handle, installing the recorder on first use. If another
/// recorder is installed already, metrics go there and this renders nothing.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "cardvault_requests_total",
        "API requests by route template, method and status"
    );
    metrics::describe_histogram!(
        "cardvault_request_duration_seconds",
        metrics::Unit::Seconds,
        "API request latency by route template and outcome"
    );
    metrics::describe_counter!("cardvault_tokens_created_total", "New tokens issued");
    metrics::describe_counter!(
        "cardvault_detokenizations_total",
        "PANs revealed, by principal"
    );
    metrics::describe_counter!(
        "cardvault_tls_handshake_failures_total",
        "Failed TLS handshakes by reason"
    );
    metrics::describe_gauge!("cardvault_connections_active", "Open API connections");
}
