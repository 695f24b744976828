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

/// Every counter with its HELP text. Those without labels are registered
/// at 0 when the recorder is installed, so a dashboard sees every series
/// from the start.
/// Records whether the process's memory is locked against swap
/// (`cardvault_memory_locked`, 1 or 0), installing the recorder first.
pub fn record_memory_lock(locked: bool) {
    let _ = handle();
    metrics::gauge!("cardvault_memory_locked").set(if locked { 1.0 } else { 0.0 });
}

const COUNTERS: [(&str, &str); 25] = [
    ("cardvault_tokens_created_total", "New tokens issued"),
    (
        "cardvault_tokens_expired_total",
        "Expiring tokens deleted by the sweep after their time to live",
    ),
    (
        "cardvault_tokens_imported_total",
        "Tokens made elsewhere and imported with their PANs",
    ),
    (
        "cardvault_cvc_delivered_total",
        "Card security codes handed over by a detokenize (once each)",
    ),
    (
        "cardvault_cvc_expired_total",
        "Card security codes wiped at their time to live",
    ),
    (
        "cardvault_rate_limited_total",
        "Requests refused by a per-principal rate limit (429)",
    ),
    (
        "cardvault_audit_events_total",
        "Events written to the audit trail",
    ),
    (
        "cardvault_audit_write_failures_total",
        "Failed writes of the audit trail",
    ),
    (
        "cardvault_audit_events_lost_total",
        "Audit events lost while the trail could not be written",
    ),
    (
        "cardvault_detokenize_refused_audit_total",
        "Detokenizations refused because the audit trail could not be written",
    ),
    (
        "cardvault_audit_syslog_sent_total",
        "Audit entries mirrored to syslog",
    ),
    (
        "cardvault_audit_syslog_dropped_total",
        "Audit entries the syslog mirror dropped",
    ),
    (
        "cardvault_audit_checkpoints_total",
        "Signed checkpoints of the audit trail written to the checkpoint directory",
    ),
    (
        "cardvault_audit_checkpoint_failures_total",
        "Signed checkpoints that could not be written to the checkpoint directory",
    ),
    (
        "cardvault_writes_refused_disk_full_total",
        "Write groups refused because the database disk is below its reserve",
    ),
    (
        "cardvault_connections_idle_closed_total",
        "Connections closed after the idle timeout",
    ),
    (
        "cardvault_connections_header_timeout_total",
        "Connections closed because no complete first request head arrived within limits.header_timeout_ms of the handshake",
    ),
    (
        "cardvault_body_budget_refused_total",
        "Requests refused because the request-body budget stayed spent (503)",
    ),
    (
        "cardvault_requests_timed_out_total",
        "Requests cut off by the request timeout, by route template",
    ),
    (
        "cardvault_connections_refused_total",
        "Connections closed: over a listener's cap, a principal's or an address's share, or the public listener's handshake rate",
    ),
    (
        "cardvault_accept_errors_total",
        "Failed accepts (file descriptors exhausted), by listener",
    ),
    (
        "cardvault_tls_handshake_failures_total",
        "Failed TLS handshakes by reason",
    ),
    (
        "cardvault_detokenizations_total",
        "PANs revealed, by principal",
    ),
    (
        "cardvault_reencrypt_done_total",
        "Records sealed again under a tenant's active data key, by tenant",
    ),
    (
        "cardvault_proxy_requests_total",
        "Reveal proxy requests sent upstream, by route and upstream status or error code",
    ),
];

/// How many of [`COUNTERS`], at its end, carry labels.
const LABELLED: usize = 7;

/// Alert rules, registered at 0 per rule.
const ALERT_RULES: [&str; 8] = [
    "card_enumeration",
    "card_testing",
    "cryptoperiod_ending",
    "detokenize_burst",
    "detokenize_outside_hours",
    "handshake_failure_burst",
    "known_vulnerabilities",
    "metadata_burst",
];

/// The hosted card fields' series (registered at 0, so a dashboard and
/// the alert rules see them before the first session).
fn describe_collect() {
    for (name, help) in [
        (
            "cardvault_collect_sessions_created_total",
            "Hosted-field collection sessions created",
        ),
        (
            "cardvault_collect_frames_served_total",
            "Card frames served by the public listener",
        ),
        (
            "cardvault_collect_submits_total",
            "Cards tokenized through the hosted fields",
        ),
        (
            "cardvault_collect_sessions_swept_total",
            "Collection sessions deleted an hour past their expiry",
        ),
        (
            "cardvault_collect_requests_timed_out_total",
            "Public-listener requests cut off by its request timeout",
        ),
    ] {
        metrics::describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    metrics::describe_counter!(
        "cardvault_collect_refusals_total",
        "Hosted-field requests refused, by reason (card-testing limits, nonces, origins, closed sessions, bad cards)"
    );
    for reason in [
        "ip_submits",
        "session_submits",
        "tenant_sessions",
        "card_refused",
        "bad_nonce",
        "not_from_frame",
        "invalid_pan",
        "session_locked",
    ] {
        metrics::counter!("cardvault_collect_refusals_total", "reason" => reason).increment(0);
    }
    metrics::describe_counter!(
        "cardvault_collect_handshake_failures_total",
        "Failed TLS handshakes on the public listener, by reason"
    );
    metrics::describe_gauge!(
        "cardvault_collect_connections_active",
        "Open connections on the hosted fields' public listener"
    );
    metrics::gauge!("cardvault_collect_connections_active").set(0.0);
}

fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(name, help);
    }
    // The last five carry labels; their series appear with their first event.
    for (name, _) in &COUNTERS[..COUNTERS.len() - LABELLED] {
        metrics::counter!(*name).increment(0);
    }
    metrics::describe_counter!("cardvault_alerts_total", "Alert rules fired, by rule");
    for rule in ALERT_RULES {
        metrics::counter!("cardvault_alerts_total", "rule" => rule).increment(0);
    }
    metrics::describe_counter!(
        "cardvault_requests_total",
        "API requests by route template, method and status"
    );
    metrics::describe_histogram!(
        "cardvault_request_duration_seconds",
        metrics::Unit::Seconds,
        "API request latency by route template and outcome"
    );
    metrics::describe_counter!(
        "cardvault_oracle_guard_refusals_total",
        "Requests the oracle guard refused (429 enumeration_suspected), by tier"
    );
    for tier in ["principal", "tenant"] {
        metrics::counter!("cardvault_oracle_guard_refusals_total", "tier" => tier).increment(0);
    }
    metrics::describe_counter!(
        "cardvault_oracle_guard_evicted_groups_total",
        "Groups the full oracle guard forgot: idle ones, or active ones holding the fewest cards"
    );
    for state in ["idle", "active"] {
        metrics::counter!("cardvault_oracle_guard_evicted_groups_total", "state" => state)
            .increment(0);
    }
    metrics::describe_gauge!(
        "cardvault_oracle_guard_groups",
        "Token groups the oracle guard tracks (both tiers)"
    );
    metrics::gauge!("cardvault_oracle_guard_groups").set(0.0);
    metrics::describe_gauge!(
        "cardvault_oracle_guard_cards",
        "Card hashes the oracle guard holds in its windows (both tiers)"
    );
    metrics::gauge!("cardvault_oracle_guard_cards").set(0.0);
    describe_collect();
    metrics::describe_gauge!(
        "cardvault_store_ready",
        "PostgreSQL: 1 while the readiness probe's commits complete within the bound, else 0"
    );
    metrics::describe_gauge!("cardvault_connections_active", "Open API connections");
    metrics::gauge!("cardvault_connections_active").set(0.0);
    metrics::describe_gauge!(
        "cardvault_cvc_held",
        "Card security codes held in memory now"
    );
    metrics::gauge!("cardvault_cvc_held").set(0.0);
    metrics::describe_gauge!(
        "cardvault_build_info",
        "Always 1; the running build's version and git commit as labels"
    );
    metrics::gauge!(
        "cardvault_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("CARDVAULT_GIT_COMMIT")
    )
    .set(1.0);
    metrics::describe_gauge!(
        "cardvault_known_vulnerabilities",
        "Known advisories affecting this build ([supply_chain] advisory_db, checked at start)"
    );
    metrics::describe_gauge!(
        "cardvault_tls_certificate_not_after_seconds",
        "When the server certificate (certificate=\"server\") and the earliest client CA certificate expire, Unix seconds"
    );
    metrics::describe_gauge!(
        "cardvault_key_cryptoperiod_remaining_seconds",
        "Seconds left in each active key's cryptoperiod (negative: overdue), by tenant and purpose"
    );
    metrics::describe_gauge!(
        "cardvault_reencrypt_remaining",
        "Records still sealed under an older data key while a tenant's re-encryption runs, by tenant"
    );
    metrics::describe_gauge!(
        "cardvault_page_unapproved_changes",
        "Differences from its approved baseline in a payment page's last check (cardvault watch), by page"
    );
    metrics::describe_gauge!(
        "cardvault_page_last_check_timestamp_seconds",
        "When a payment page was last checked against its baseline, Unix seconds, by page"
    );
    metrics::describe_gauge!(
        "cardvault_page_check_interval_seconds",
        "How often a payment page is checked, seconds, by page"
    );
    metrics::describe_gauge!(
        "cardvault_page_unchecked",
        "1 while a payment page's last check attempt could not check it, by page"
    );
    metrics::describe_counter!(
        "cardvault_reloads_total",
        "Configuration reloads (SIGHUP, or changed TLS files under [api] tls_check_s), by outcome (ok, failed)"
    );
    for outcome in ["ok", "failed"] {
        metrics::counter!("cardvault_reloads_total", "outcome" => outcome).increment(0);
    }
    metrics::describe_gauge!(
        "cardvault_memory_locked",
        "1 when the process's memory is locked against swap (mlockall), else 0"
    );
    metrics::describe_gauge!(
        "cardvault_starting",
        "1 while the vault is starting (its ops port answers before the KEK, the trail and the store are open), else 0"
    );
    metrics::describe_gauge!(
        "cardvault_start_progress_ratio",
        "How far the start is, 0 to 1 (steps done: the KEK, the audit trail, the store, the listeners)"
    );
    metrics::describe_gauge!(
        "cardvault_ready",
        "1 when /readyz answers 200 (serving, unsealed, the store able to commit), else 0"
    );
    metrics::describe_gauge!("cardvault_sealed", "1 while the vault is sealed, else 0");
    metrics::describe_gauge!(
        "cardvault_store_free_bytes",
        "Bytes available to the vault on the RocksDB data directory's file system"
    );
    metrics::describe_gauge!(
        "cardvault_store_reserve_bytes",
        "The reserve below which writes are refused ([storage] min_free_bytes)"
    );
    metrics::describe_gauge!(
        "cardvault_key_filter_progress_ratio",
        "How much of a RocksDB key filter is loaded at start, 0 to 1, by filter (lookups read the database until 1)"
    );
    metrics::describe_gauge!(
        "cardvault_page_baseline_unapproved",
        "1 while the baseline a payment page was last checked against carries no approval the vault's evidence key signed, by page"
    );
}
