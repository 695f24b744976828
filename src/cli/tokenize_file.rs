//! `cardvault tokenize-file IN OUT`: replaces the card numbers of a file
//! with tokens from a running vault — a CSV column (`--format csv --column
//! NAME`), a JSON Lines field (`--format jsonl --field PATH`) or every PAN
//! the scan detector finds (`--format text`) — writing OUT byte for byte
//! like IN but for the replaced values (grouping kept).
//!
//! The engine is [`crate::rewrite`]; this file parses the arguments and
//! prints the summary. PANs go to the vault in batches over mTLS (`/v1/tokenize/batch`,
//! `--concurrency` batches in flight, written back in order). OUT grows as
//! `OUT.partial` (mode 0600) and becomes OUT only when complete; after each
//! batch the partial file is synced and `OUT.checkpoint` records how far IN
//! was read and OUT written, so `--resume` continues after a crash without
//! re-sending finished rows. Only tokens are ever written: a row is written
//! after its PANs came back as tokens, and a PAN the vault refuses stops the
//! run before that row is written. The summary counts PANs replaced,
//! values that were already tokens, rejected values (by line number, never
//! the value) and PANs left elsewhere in the rows (exit 1 if any).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::error::{CliError, CliResult};
use crate::load::TargetArgs;
use crate::rewrite::{self, JobError};

/// The input's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FileFormat {
    /// CSV with a header line; `--column NAME`.
    Csv,
    /// One JSON object per line; `--field PATH`.
    Jsonl,
    /// Any text: every PAN the scan detector finds.
    Text,
}

/// Arguments of `tokenize-file`.
#[derive(Debug, Args)]
pub struct TokenizeFileArgs {
    /// The file to read.
    input: PathBuf,
    /// The file to write (must not exist; `OUT.partial` until complete).
    output: PathBuf,
    /// csv, jsonl or text.
    #[arg(long, value_enum)]
    format: FileFormat,
    /// CSV: the header name of the card-number column.
    #[arg(long, required_if_eq("format", "csv"))]
    column: Option<String>,
    /// JSON Lines: the field, `card.pan` or `/card/pan`.
    #[arg(long, required_if_eq("format", "jsonl"))]
    field: Option<String>,
    /// PANs per batch request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10000))]
    batch: u16,
    /// Batches in flight (one connection each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
    concurrency: u8,
    /// Continue an interrupted run from `OUT.checkpoint`.
    #[arg(long)]
    resume: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// The vault (`--dev DIR` or `--ca/--cert/--key`; role `tokenize`).
    #[command(flatten)]
    vault: TargetArgs,
}

/// Runs `tokenize-file`.
pub async fn run(args: TokenizeFileArgs) -> CliResult {
    args.vault.validate()?;
    let (tls, addr) = args.vault.connect_info().await?;
    let job = rewrite::Job {
        input: args.input,
        output: args.output,
        format: match args.format {
            FileFormat::Csv => rewrite::FileFormat::Csv,
            FileFormat::Jsonl => rewrite::FileFormat::Jsonl,
            FileFormat::Text => rewrite::FileFormat::Text,
        },
        column: args.column,
        field: args.field,
        batch: usize::from(args.batch),
        concurrency: usize::from(args.concurrency),
        resume: args.resume,
        tls,
        addr,
        target: args.vault.target.clone(),
        progress: true,
    };
    let csv = job.format == rewrite::FileFormat::Csv;
    let summary = rewrite::run(job).await.map_err(|e| match e {
        JobError::Usage(why) => CliError::Usage(why),
        JobError::Unreadable(why) => CliError::Unreadable(why),
        JobError::Failed(e) => CliError::Failed(e),
    })?;
    if args.json {
        say!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else {
        say!(
            "{}: {} rows, {} PANs replaced, {} already tokens, {} rejected{}; {:.0} rows/s",
            summary.output,
            summary.rows,
            summary.pans_replaced,
            summary.already_tokens,
            summary.rejected,
            if summary.rejected_lines.is_empty() {
                String::new()
            } else {
                format!(
                    " (lines {})",
                    summary
                        .rejected_lines
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            summary.rows_per_s
        );
    }
    if summary.pans_left > 0 {
        return Err(CliError::Answer(format!(
            "{} card numbers remain outside the {} (lines {:?}); tokenize them with --format text",
            summary.pans_left,
            if csv { "column" } else { "field" },
            summary.pans_left_lines
        )));
    }
    Ok(())
}
