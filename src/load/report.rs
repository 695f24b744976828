//! The final report of a load run: counts, errors by code, throughput and
//! latency percentiles from the HDR histogram, as text or one JSON object.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{LoadArgs, Operation};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Operation.
    pub op: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Connections.
    pub concurrency: usize,
    /// Target rate (open loop).
    pub rate: Option<f64>,
    /// Items per request (batch operations).
    pub batch: Option<usize>,
    /// Measured seconds.
    pub duration_s: f64,
    /// Successful requests in the measured window.
    pub ops: u64,
    /// Successful items (PANs or tokens) in those requests.
    pub items: u64,
    /// Failures by kind (`http_403_forbidden`, `item_invalid_pan`, `connection: …`).
    pub errors: BTreeMap<String, u64>,
    /// Requests per second.
    pub throughput_per_s: f64,
    /// Items per second.
    pub items_per_s: f64,
    /// Latency of successful requests: from the moment the request was
    /// started to its answer (compare with the vault's
    /// `cardvault_request_duration_seconds`).
    pub latency_ms: Latency,
    /// Open loop: how late requests started against their schedule (the
    /// load generator's own delay, or every worker busy).
    pub schedule_lag_ms: Option<Latency>,
    /// Open loop: from the scheduled time to the answer (lag + latency;
    /// what a client arriving on schedule waited).
    pub response_ms: Option<Latency>,
    /// The longest stretch of the measured window in which no request
    /// succeeded (the time without service during a fault), milliseconds.
    pub longest_gap_ms: f64,
}

fn percentiles(histogram: &Histogram<u64>) -> Latency {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Latency {
        p50: ms(0.50),
        p90: ms(0.90),
        p99: ms(0.99),
        p999: ms(0.999),
        max: histogram.max() as f64 / 1000.0,
        mean: histogram.mean() / 1000.0,
    }
}

impl Report {
    /// Builds the report.
    pub fn new(
        args: &LoadArgs,
        histogram: &Histogram<u64>,
        open: Option<(Histogram<u64>, Histogram<u64>)>,
        ops: u64,
        items: u64,
        errors: BTreeMap<String, u64>,
        elapsed: Duration,
    ) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let batch = matches!(
            args.op,
            Operation::TokenizeBatch | Operation::DetokenizeBatch
        )
        .then_some(args.batch);
        Report {
            op: clap::ValueEnum::to_possible_value(&args.op)
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default(),
            mode: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            concurrency: args.concurrency,
            rate: args.rate,
            batch,
            duration_s: seconds,
            ops,
            items,
            errors,
            throughput_per_s: ops as f64 / seconds,
            items_per_s: items as f64 / seconds,
            latency_ms: percentiles(histogram),
            schedule_lag_ms: open.as_ref().map(|(lag, _)| percentiles(lag)),
            response_ms: open.as_ref().map(|(_, response)| percentiles(response)),
            longest_gap_ms: 0.0,
        }
    }

    /// Total failures.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({} loop, {} connections{}{}) for {:.1} s",
            self.op,
            self.mode,
            self.concurrency,
            self.rate
                .map(|r| format!(", {r:.0}/s scheduled"))
                .unwrap_or_default(),
            self.batch
                .map(|b| format!(", batch {b}"))
                .unwrap_or_default(),
            self.duration_s
        )?;
        writeln!(
            f,
            "  requests   {:>10}   {:>10.1}/s",
            self.ops, self.throughput_per_s
        )?;
        if self.batch.is_some() {
            writeln!(
                f,
                "  items      {:>10}   {:>10.1}/s",
                self.items, self.items_per_s
            )?;
        }
        writeln!(f, "  errors     {:>10}", self.error_count())?;
        for (kind, n) in &self.errors {
            writeln!(f, "    {kind:<40} {n}")?;
        }
        writeln!(
            f,
            "  longest gap without a success {:.0} ms",
            self.longest_gap_ms
        )?;
        let line = |f: &mut fmt::Formatter<'_>, name: &str, l: &Latency| {
            writeln!(
                f,
                "  {name:<12} ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            )
        };
        line(f, "latency", &self.latency_ms)?;
        if let Some(lag) = &self.schedule_lag_ms {
            line(f, "schedule lag", lag)?;
        }
        if let Some(response) = &self.response_ms {
            line(f, "response", response)?;
        }
        Ok(())
    }
}
