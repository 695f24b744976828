//! The load engine: workers with one keep-alive connection each, driven
//! closed-loop (back to back until the deadline) or open-loop (a dispatcher
//! hands out scheduled send times at a fixed rate).
//!
//! Three clocks per request, kept apart: *latency* runs from the moment the
//! worker starts the request to its answer (what the vault's own
//! `cardvault_request_duration_seconds` sees, plus the wire); in open loop,
//! *schedule lag* runs from the scheduled time to that start (the load
//! generator's own delay: its timer, a busy worker) and *response time*
//! from the scheduled time to the answer (what a client arriving on
//! schedule waits, without coordinated omission). The dispatcher is an OS
//! thread sleeping to absolute `CLOCK_MONOTONIC` deadlines with a 1 µs timer
//! slack: tokio's timer wheel ticks in whole milliseconds, which at 2,000
//! requests a second put up to a millisecond of the generator's own delay
//! into every figure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::acks::{ack_log, tokens_from};
use super::dispatch::dispatch;
use super::pans::PanGenerator;
use super::report::Report;
use super::{LoadArgs, Operation};
use crate::client::{ClientTls, Connection};

/// Tokens and PANs kept for detokenize and repeat traffic.
pub(super) const POOL_LIMIT: usize = 100_000;

struct Shared {
    tls: ClientTls,
    addr: SocketAddr,
    /// `--op collect-submit`: the public listener and its sessions.
    public: Option<super::collect::Public>,
    args: LoadArgs,
    measure_from: Instant,
    histogram: Mutex<Histogram<u64>>,
    lag: Mutex<Histogram<u64>>,
    response: Mutex<Histogram<u64>>,
    ops: AtomicU64,
    items: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    tokens: Mutex<Vec<String>>,
    seen: Mutex<Vec<String>>,
    acks: Option<mpsc::UnboundedSender<String>>,
    acknowledged: AtomicU64,
    /// Microseconds from `measure_from` to the latest success, and the
    /// longest stretch between two successes so far.
    last_success_us: AtomicU64,
    longest_gap_us: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn error(&self, key: String) {
        *lock(&self.errors).entry(key).or_insert(0) += 1;
    }

    fn remember(&self, pan: &str, token: &str) {
        {
            let mut tokens = lock(&self.tokens);
            if tokens.len() < POOL_LIMIT {
                tokens.push(token.to_owned());
            }
        }
        if self.args.repeat_ratio > 0.0 {
            let mut seen = lock(&self.seen);
            if seen.len() < POOL_LIMIT {
                seen.push(pan.to_owned());
            }
        }
        if let Some(acks) = &self.acks {
            let n = self.acknowledged.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(self.args.ack_every) {
                let _ = acks.send(json!({ "pan": pan, "token": token }).to_string());
            }
        }
    }

    fn pick_token(&self, generator: &mut PanGenerator) -> Option<String> {
        let tokens = lock(&self.tokens);
        (!tokens.is_empty()).then(|| tokens[generator.below(tokens.len())].clone())
    }

    fn pick_pan(&self, generator: &mut PanGenerator) -> String {
        if self.args.repeat_ratio > 0.0 && generator.chance(self.args.repeat_ratio) {
            let seen = lock(&self.seen);
            if !seen.is_empty() {
                return seen[generator.below(seen.len())].clone();
            }
        }
        generator.next_pan()
    }
}

/// What one request achieved.
enum Outcome {
    /// Succeeded; this many items.
    Done(u64),
    /// The vault answered with an error (connection still usable).
    Refused(String),
    /// The connection failed.
    Broken(String),
    /// Nothing left to send (`collect-submit`'s prepared sessions): the
    /// worker stops.
    Exhausted,
}

fn error_key(status: hyper::StatusCode, body: &Value) -> String {
    let code = body["error"]["code"].as_str().unwrap_or("no_code");
    format!("http_{}_{code}", status.as_u16())
}

/// When a request went out and when its answer was in, taken around the
/// exchange itself (not the body's making or the answer's parsing).
struct Timing {
    sent: Instant,
    answered: Instant,
}

async fn one_request(
    shared: &Shared,
    conn: &mut Connection,
    generator: &mut PanGenerator,
    op: Operation,
    timing: &mut Timing,
) -> Outcome {
    if op == Operation::CollectSubmit {
        return collect_submit(shared, conn, generator, timing).await;
    }
    if op == Operation::Metadata {
        let Some(token) = shared.pick_token(generator) else {
            return Outcome::Refused("no_tokens_to_read".into());
        };
        let path = format!("/v1/tokens/{token}");
        timing.sent = Instant::now();
        let reply = conn.get(&path).await;
        timing.answered = Instant::now();
        return match reply {
            Ok(reply) if reply.status == hyper::StatusCode::OK => Outcome::Done(1),
            Ok(reply) => Outcome::Refused(error_key(reply.status, &reply.json())),
            Err(e) => Outcome::Broken(format!("connection: {}", label(&e.to_string()))),
        };
    }
    let (path, body, pans) = match op {
        Operation::Tokenize => {
            let pan = shared.pick_pan(generator);
            ("/v1/tokenize", json!({ "pan": pan }), vec![pan])
        }
        Operation::TokenizeBatch => {
            let pans: Vec<String> = (0..shared.args.batch)
                .map(|_| shared.pick_pan(generator))
                .collect();
            ("/v1/tokenize/batch", json!({ "pans": pans }), pans)
        }
        // `Mixed` is resolved to Tokenize or Detokenize by the caller;
        // `Metadata` and `CollectSubmit` were answered above.
        Operation::Detokenize
        | Operation::Mixed
        | Operation::Metadata
        | Operation::CollectSubmit => match shared.pick_token(generator) {
            Some(token) => ("/v1/detokenize", json!({ "token": token }), Vec::new()),
            None => return Outcome::Refused("no_tokens_to_detokenize".into()),
        },
        Operation::DetokenizeBatch => {
            let tokens: Vec<String> = (0..shared.args.batch)
                .filter_map(|_| shared.pick_token(generator))
                .collect();
            (
                "/v1/detokenize/batch",
                json!({ "tokens": tokens }),
                Vec::new(),
            )
        }
    };
    timing.sent = Instant::now();
    let reply = conn.post_json(path, &body).await;
    timing.answered = Instant::now();
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => return Outcome::Broken(format!("connection: {}", label(&e.to_string()))),
    };
    let value = reply.json();
    if reply.status != hyper::StatusCode::OK {
        return Outcome::Refused(error_key(reply.status, &value));
    }
    match op {
        Operation::Tokenize => {
            if let (Some(token), Some(pan)) = (value["token"].as_str(), pans.first()) {
                shared.remember(pan, token);
            }
            Outcome::Done(1)
        }
        Operation::TokenizeBatch | Operation::DetokenizeBatch => {
            let results = value["results"].as_array().cloned().unwrap_or_default();
            let mut ok = 0;
            for (i, result) in results.iter().enumerate() {
                if let Some(code) = result["error"]["code"].as_str() {
                    shared.error(format!("item_{code}"));
                    continue;
                }
                ok += 1;
                if let (Some(token), Some(pan)) = (result["token"].as_str(), pans.get(i)) {
                    shared.remember(pan, token);
                }
            }
            Outcome::Done(ok)
        }
        _ => Outcome::Done(1),
    }
}

/// One `collect-submit` request: a card into the next prepared session.
async fn collect_submit(
    shared: &Shared,
    conn: &mut Connection,
    generator: &mut PanGenerator,
    timing: &mut Timing,
) -> Outcome {
    let Some(public) = &shared.public else {
        return Outcome::Refused("no_public_listener".into());
    };
    timing.sent = Instant::now();
    let Some(reply) = super::collect::submit(public, conn, generator).await else {
        return Outcome::Exhausted;
    };
    timing.answered = Instant::now();
    match reply {
        Ok(reply) if reply.status == hyper::StatusCode::OK => Outcome::Done(1),
        Ok(reply) => Outcome::Refused(error_key(reply.status, &reply.json())),
        Err(e) => Outcome::Broken(format!("connection: {}", label(&e.to_string()))),
    }
}

/// A complete, stable label for a failed exchange: the error's whole text
/// (our client's and the OS's words, never a request body), lower-case,
/// other characters as `_`, at most 80 characters. Labels used to keep only
/// the text before the first colon, which cut every one to `HTTP`.
fn label(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(80));
    for c in text.chars() {
        if out.len() >= 80 {
            break;
        }
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

async fn worker(
    shared: Arc<Shared>,
    id: u64,
    seed: u64,
    schedule: Option<Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Instant>>>>,
) {
    let mut generator =
        PanGenerator::new(seed.wrapping_add(id.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut conn: Option<Connection> = None;
    let deadline = shared.measure_from + shared.args.duration;
    loop {
        let scheduled = match &schedule {
            None => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
            Some(rx) => match rx.lock().await.recv().await {
                Some(at) => at,
                None => break,
            },
        };
        let connection = match conn.as_mut() {
            Some(c) => c,
            None => match shared.connect().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    if scheduled >= shared.measure_from {
                        shared.error(format!("connect: {}", label(&e.to_string())));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let op = match shared.args.op {
            Operation::Mixed if generator.chance(shared.args.mix) => Operation::Tokenize,
            Operation::Mixed => Operation::Detokenize,
            op => op,
        };
        let now = Instant::now();
        let mut timing = Timing {
            sent: now,
            answered: now,
        };
        let outcome = one_request(&shared, connection, &mut generator, op, &mut timing).await;
        let measured = scheduled >= shared.measure_from;
        match outcome {
            Outcome::Done(items) if measured => {
                let micros = |d: Duration| (d.as_micros().max(1) as u64).min(3_600_000_000);
                let Timing { sent, answered } = timing;
                let _ = lock(&shared.histogram).record(micros(answered - sent));
                if schedule.is_some() {
                    let lag = sent.saturating_duration_since(scheduled);
                    let _ = lock(&shared.lag).record(micros(lag));
                    let _ = lock(&shared.response).record(micros(answered - scheduled));
                }
                shared.ops.fetch_add(1, Ordering::Relaxed);
                shared.items.fetch_add(items, Ordering::Relaxed);
                shared.close_gap_at(answered);
            }
            Outcome::Done(_) => {}
            Outcome::Refused(key) => {
                if measured {
                    shared.error(key);
                }
            }
            Outcome::Broken(key) => {
                if measured {
                    shared.error(key);
                }
                conn = None;
            }
            Outcome::Exhausted => break,
        }
    }
}

fn shared_op_is_collect(args: &LoadArgs) -> bool {
    args.op == Operation::CollectSubmit
}

impl Shared {
    /// Ends the stretch without a success at `at` (a success, or the end
    /// of the window), keeping the longest such stretch.
    fn close_gap_at(&self, at: Instant) {
        let now = at.saturating_duration_since(self.measure_from).as_micros() as u64;
        let before = self.last_success_us.fetch_max(now, Ordering::Relaxed);
        if now > before {
            self.longest_gap_us
                .fetch_max(now - before, Ordering::Relaxed);
        }
    }

    /// A worker's connection: the public listener for `collect-submit`,
    /// else the mTLS API.
    async fn connect(&self) -> Result<Connection, crate::client::ClientError> {
        match &self.public {
            Some(public) => public.tls.connect(public.addr).await,
            None => self.tls.connect(self.addr).await,
        }
    }
}

/// Opens a connection, failing with a message that names the target.
async fn open(shared: &Shared) -> Result<Connection> {
    shared
        .tls
        .connect(shared.addr)
        .await
        .with_context(|| format!("cannot reach the vault at {}", shared.args.target.target))
}

fn refused(shared: &Shared) -> String {
    format!(
        "the vault at {} refused the connection or certificate",
        shared.args.target.target
    )
}

/// Tokenizes a first set of PANs so detokenize traffic has tokens.
async fn prefill(shared: &Shared, generator: &mut PanGenerator) -> Result<()> {
    let mut conn = open(shared).await?;
    for _ in 0..2 {
        let pans: Vec<String> = (0..1000).map(|_| generator.next_pan()).collect();
        let reply = conn
            .post_json("/v1/tokenize/batch", &json!({ "pans": pans }))
            .await
            .with_context(|| refused(shared))?;
        if reply.status != hyper::StatusCode::OK {
            bail!(
                "preparing tokens failed: {} (does the certificate hold the tokenize role?)",
                error_key(reply.status, &reply.json())
            );
        }
        for (pan, result) in pans.iter().zip(
            reply.json()["results"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        ) {
            if let Some(token) = result["token"].as_str() {
                shared.remember(pan, token);
            }
        }
    }
    Ok(())
}

fn progress(shared: &Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let total = (shared.args.warmup + shared.args.duration).as_secs().max(1);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let shared = Arc::clone(shared);
    Some(tokio::spawn(async move {
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let elapsed = start.elapsed();
            bar.set_position(elapsed.as_secs().min(total));
            let ops = shared.ops.load(Ordering::Relaxed);
            let measuring = Instant::now()
                .saturating_duration_since(shared.measure_from)
                .as_secs_f64();
            let rate = if measuring > 0.0 {
                ops as f64 / measuring
            } else {
                0.0
            };
            let p99 = lock(&shared.histogram).value_at_quantile(0.99) as f64 / 1000.0;
            let phase = if measuring > 0.0 {
                "measuring"
            } else {
                "warming up"
            };
            bar.set_message(format!("{phase}: {ops} ops, {rate:.0}/s, p99 {p99:.2} ms"));
            if elapsed.as_secs() >= total {
                bar.finish_and_clear();
                break;
            }
        }
    }))
}

/// Runs the load described by `args` and returns the report.
pub async fn run(args: LoadArgs) -> Result<Report> {
    args.validate()?;
    let (tls, addr) = args.target.connect_info().await?;
    let seed = match args.seed {
        Some(seed) => seed,
        None => {
            let mut bytes = [0u8; 8];
            crate::random::fill(&mut bytes)?;
            u64::from_le_bytes(bytes)
        }
    };
    let (acks, ack_writer) = ack_log(args.ack_log.as_deref())?;
    let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3).context("histogram bounds")?;
    let public = match (shared_op_is_collect(&args), args.collect.as_deref()) {
        (true, Some(url)) => Some(super::collect::Public::new(&args.target, url).await?),
        _ => None,
    };
    let mut shared = Shared {
        tls,
        addr,
        public,
        measure_from: Instant::now(),
        lag: Mutex::new(histogram.clone()),
        response: Mutex::new(histogram.clone()),
        histogram: Mutex::new(histogram),
        ops: AtomicU64::new(0),
        items: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        tokens: Mutex::new(Vec::new()),
        seen: Mutex::new(Vec::new()),
        acks,
        acknowledged: AtomicU64::new(0),
        last_success_us: AtomicU64::new(0),
        longest_gap_us: AtomicU64::new(0),
        args,
    };
    prepare(&shared, seed).await?;
    let start = Instant::now();
    shared.measure_from = start + shared.args.warmup;
    let shared = Arc::new(shared);
    let progress = progress(&shared);
    drive(&shared, start, seed).await;
    let elapsed = Instant::now().saturating_duration_since(shared.measure_from);
    if let Some(progress) = progress {
        progress.abort();
    }
    let open = shared.args.rate.is_some();
    // The window's end counts as well: a run that never recovered.
    shared.close_gap_at(Instant::now());
    let mut report = Report::new(
        &shared.args,
        &lock(&shared.histogram),
        open.then(|| (lock(&shared.lag).clone(), lock(&shared.response).clone())),
        shared.ops.load(Ordering::Relaxed),
        shared.items.load(Ordering::Relaxed),
        lock(&shared.errors).clone(),
        elapsed,
    );
    report.longest_gap_ms = shared.longest_gap_us.load(Ordering::Relaxed) as f64 / 1000.0;
    drop(shared);
    if let Some(writer) = ack_writer {
        writer.await.context("ack log writer")??;
    }
    Ok(report)
}

/// Before the clock starts: the tokens to read (from a file, or made by a
/// prefill for the operations that read), or one request that fails fast
/// with a clear message when the vault is down or refuses us.
async fn prepare(shared: &Shared, seed: u64) -> Result<()> {
    if let Some(public) = &shared.public {
        super::collect::prefill(
            public,
            (&shared.tls, shared.addr),
            shared.args.sessions,
            shared.args.concurrency,
        )
        .await
        .with_context(|| refused(shared))?;
    } else if let Some(path) = shared.args.tokens_from.clone() {
        *lock(&shared.tokens) = tokens_from(&path)?;
    } else if matches!(
        shared.args.op,
        Operation::Detokenize | Operation::DetokenizeBatch | Operation::Mixed | Operation::Metadata
    ) {
        prefill(shared, &mut PanGenerator::new(seed ^ 0xA5A5)).await?;
    } else {
        // Fail fast with a clear message when the vault is down or refuses us.
        let mut conn = open(shared).await?;
        conn.get("/v1/tokens/4111111111111112")
            .await
            .with_context(|| refused(shared))?;
    }
    Ok(())
}

/// Runs the workers (closed loop, or fed send times by the open loop's
/// dispatcher) to the end of the run.
async fn drive(shared: &Arc<Shared>, start: Instant, seed: u64) {
    let workers = shared.args.concurrency as u64;
    // Open loop: workers take scheduled send times from one queue.
    let schedule = shared.args.rate.map(|rate| {
        let (tx, rx) = mpsc::unbounded_channel();
        (rate, tx, Arc::new(tokio::sync::Mutex::new(rx)))
    });
    let handles: Vec<_> = (0..workers)
        .map(|id| {
            let queue = schedule.as_ref().map(|(_, _, rx)| Arc::clone(rx));
            tokio::spawn(worker(Arc::clone(shared), id, seed, queue))
        })
        .collect();
    let dispatcher = schedule.map(|(rate, tx, _)| {
        let end = shared.measure_from + shared.args.duration;
        tokio::task::spawn_blocking(move || dispatch(start, end, rate, &tx))
    });
    if let Some(dispatcher) = dispatcher {
        let _ = dispatcher.await;
    }
    for handle in handles {
        let _ = handle.await;
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn error_labels_keep_the_whole_cause() {
        assert_eq!(
            label("HTTP: connection closed before message completed"),
            "http_connection_closed_before_message_completed"
        );
        assert_eq!(
            label("cannot connect to 127.0.0.1:1: Connection refused (os error 111)"),
            "cannot_connect_to_127_0_0_1_1_connection_refused_os_error_111"
        );
        assert!(label(&"x".repeat(500)).len() <= 80);
    }
}
