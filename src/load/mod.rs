//! `cardvault load`: an mTLS load generator for a running vault, and
//! `cardvault load verify`, which checks an ack log after a crash test.
//!
//! Closed loop (`--concurrency C`): C connections send back to back. Open
//! loop (`--rate R`): requests are scheduled at a constant rate and latency
//! is measured from each request's *scheduled* send time, so a stalled vault
//! cannot hide behind a load generator that waits for it (coordinated
//! omission). Latencies go into HDR histograms; PANs are synthetic
//! Luhn-valid numbers across brands and lengths, never real ones.

mod acks;
mod collect;
mod dispatch;
mod pans;
mod report;
mod run;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::client::ClientTls;

pub use pans::PanGenerator;
pub use report::Report;
pub use run::run;
pub use verify::{VerifyReport, verify};

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Operation {
    /// `POST /v1/tokenize`.
    Tokenize,
    /// `POST /v1/detokenize` of tokens created before the run.
    Detokenize,
    /// Tokenize with probability `--mix`, else detokenize.
    Mixed,
    /// `POST /v1/tokenize/batch` of `--batch` PANs.
    TokenizeBatch,
    /// `POST /v1/detokenize/batch` of `--batch` tokens.
    DetokenizeBatch,
    /// `GET /v1/tokens/{token}` of tokens created before the run: the
    /// lightest authenticated request (a read, no sync), so it measures
    /// what mTLS + HTTP + JSON alone cost on the machine.
    Metadata,
    /// `POST /collect/v1/sessions/{id}/submit` on the hosted fields' public
    /// listener (`--collect URL`) with a browser's headers, into sessions
    /// created and framed before the clock starts (`--sessions N`, as
    /// `payments` over mTLS): the card path of the hosted fields.
    CollectSubmit,
}

/// Where to connect and with which certificate.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The vault, `https://HOST:PORT` (`--addr` is an alias).
    #[arg(
        long,
        visible_alias = "addr",
        env = "CARDVAULT_ADDR",
        default_value = "https://127.0.0.1:8443"
    )]
    pub target: String,
    /// Take CA and client certificate (`payments`) from a `serve --dev` directory.
    #[arg(long, conflicts_with_all = ["ca", "cert", "key"])]
    pub dev: Option<PathBuf>,
    /// CA bundle that signed the server certificate (`--cacert` is an alias).
    #[arg(long, visible_alias = "cacert", env = "CARDVAULT_CACERT", requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    /// Client certificate, PEM.
    #[arg(long, env = "CARDVAULT_CERT")]
    pub cert: Option<PathBuf>,
    /// Client private key, PEM.
    #[arg(long, env = "CARDVAULT_KEY")]
    pub key: Option<PathBuf>,
}

impl TargetArgs {
    /// Checks the shape of the arguments (before anything connects).
    pub fn validate(&self) -> Result<(), UsageError> {
        let files =
            self.dev.is_some() || (self.ca.is_some() && self.cert.is_some() && self.key.is_some());
        if !files {
            return Err(usage("give --dev DIR, or --ca, --cert and --key"));
        }
        if !self.target.starts_with("https://") {
            return Err(usage("--target must look like https://HOST:PORT"));
        }
        Ok(())
    }

    /// The TLS client and the resolved address.
    pub async fn connect_info(&self) -> Result<(ClientTls, SocketAddr)> {
        let (ca, cert, key) = match (&self.dev, &self.ca, &self.cert, &self.key) {
            (Some(dir), ..) => (
                dir.join("pki/ca.pem"),
                dir.join("pki/payments.pem"),
                dir.join("pki/payments-key.pem"),
            ),
            (None, Some(ca), Some(cert), Some(key)) => (ca.clone(), cert.clone(), key.clone()),
            _ => bail!(usage("give --dev DIR, or --ca, --cert and --key")),
        };
        let tls = ClientTls::from_files(&ca, Some((&cert, &key)), false)?;
        let addr = match crate::client::resolve_https(&self.target).await {
            Err(crate::client::ResolveError::NotHttps) => {
                bail!(usage("--target must look like https://HOST:PORT"))
            }
            resolved => resolved?,
        };
        Ok((tls, addr))
    }
}

/// A usage error: reported like clap's, exit status 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(message: &str) -> UsageError {
    UsageError(message.to_owned())
}

/// Arguments of `load`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LoadArgs {
    /// `verify`: check an ack log instead of generating load.
    #[command(subcommand)]
    pub command: Option<LoadCommand>,
    /// Connection and certificate.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Operation.
    #[arg(long, value_enum, default_value = "tokenize")]
    pub op: Operation,
    /// Items per batch request (batch operations).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Share of tokenize requests in `--op mixed` (0–1).
    #[arg(long, default_value_t = 0.9)]
    pub mix: f64,
    /// Share of tokenize requests that resend a PAN seen before (0–1).
    #[arg(long, default_value_t = 0.0)]
    pub repeat_ratio: f64,
    /// Connections. Closed loop: each sends back to back. Open loop: the
    /// pool that serves the schedule.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Open loop: requests per second on a fixed schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured time (e.g. `30s`, `2m`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time before measuring starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Append `{"pan","token"}` per acknowledged tokenization (synthetic PANs only).
    #[arg(long)]
    pub ack_log: Option<PathBuf>,
    /// Write only every N-th acknowledged tokenization to the ack log (a
    /// sample spread over a long prefill).
    #[arg(long, default_value_t = 1, requires = "ack_log")]
    pub ack_every: u64,
    /// Detokenize / read the tokens of this ack log (spread over the whole
    /// store) instead of tokens made just before the run.
    #[arg(long)]
    pub tokens_from: Option<PathBuf>,
    /// Seed for the synthetic PAN generator (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `--op collect-submit`: the public listener, `https://HOST:PORT`.
    #[arg(long)]
    pub collect: Option<String>,
    /// `--op collect-submit`: sessions prepared before the clock starts
    /// (one per submit; the run ends early when they are used up).
    #[arg(long, default_value_t = 20_000)]
    pub sessions: usize,
}

/// Subcommands of `load`.
#[derive(Debug, Subcommand)]
pub enum LoadCommand {
    /// Detokenize every entry of an ack log; report lost and mismatched.
    Verify {
        /// Connection and certificate.
        #[command(flatten)]
        target: TargetArgs,
        /// The ack log written by `load --ack-log`.
        #[arg(long)]
        ack_log: PathBuf,
        /// Also tokenize every logged PAN again and count those given a
        /// token other than the logged one (deterministic tenants: one
        /// token per PAN, whatever happened in between).
        #[arg(long)]
        retokenize: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the storage ceiling: synced RocksDB WriteBatches of each
    /// `--group` size in a scratch database, nothing of the vault around it.
    Ceiling {
        /// Scratch directory (created; a fresh database per group size).
        #[arg(long)]
        dir: PathBuf,
        /// Puts per synced batch; repeat for several sizes.
        #[arg(long = "group", default_values_t = [1usize, 64, 1024])]
        groups: Vec<usize>,
        /// Time per group size.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

impl LoadArgs {
    /// Checks ranges clap cannot, and the target arguments.
    pub fn validate(&self) -> Result<(), UsageError> {
        self.target.validate()?;
        if !(0.0..=1.0).contains(&self.mix) {
            return Err(usage("--mix must be between 0 and 1"));
        }
        if !(0.0..=1.0).contains(&self.repeat_ratio) {
            return Err(usage("--repeat-ratio must be between 0 and 1"));
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(usage("--concurrency must be 1 to 10000"));
        }
        if self.batch == 0 || self.batch > 10_000 {
            return Err(usage("--batch must be 1 to 10000"));
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(usage("--rate must be a positive number"));
        }
        if self.duration.is_zero() {
            return Err(usage("--duration must be positive"));
        }
        if self.ack_every == 0 {
            return Err(usage("--ack-every must be at least 1"));
        }
        if self.op == Operation::CollectSubmit
            && !self
                .collect
                .as_deref()
                .is_some_and(|url| url.starts_with("https://"))
        {
            return Err(usage(
                "--op collect-submit needs --collect https://HOST:PORT (the public listener)",
            ));
        }
        if self.sessions == 0 || self.sessions > 1_000_000 {
            return Err(usage("--sessions must be 1 to 1000000"));
        }
        Ok(())
    }
}
