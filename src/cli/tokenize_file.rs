//! `cardvault tokenize-file IN OUT`: replaces the card numbers of a file
//! with tokens from a running vault — a CSV column (`--format csv --column
//! NAME`), a JSON Lines field (`--format jsonl --field PATH`) or every PAN
//! the scan detector finds (`--format text`) — writing OUT byte for byte
//! like IN but for the replaced values (grouping kept).
//!
//! PANs go to the vault in batches over mTLS (`/v1/tokenize/batch`,
//! `--concurrency` batches in flight, written back in order). OUT grows as
//! `OUT.partial` (mode 0600) and becomes OUT only when complete; after each
//! batch the partial file is synced and `OUT.checkpoint` records how far IN
//! was read and OUT written, so `--resume` continues after a crash without
//! re-sending finished rows. Only tokens are ever written: a row is written
//! after its PANs came back as tokens, and a PAN the vault refuses stops the
//! run before that row is written. The summary counts PANs replaced,
//! values that were already tokens, rejected values (by line number, never
//! the value) and PANs left elsewhere in the rows (exit 1 if any).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use hyper::Method;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::{CliError, CliResult};
use crate::client::Connection;
use crate::domain::{Pan, Token};
use crate::load::TargetArgs;
use crate::rewrite::{self, Format, JsonValue, Slot};
use crate::scan::{Kind, detect};

/// The input's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// Line numbers kept in the summary and the checkpoint, at most.
const MAX_LINES_LISTED: usize = 1000;
/// Bytes of rows held before a batch is sent even if not full.
const MAX_PENDING_BYTES: usize = 8 << 20;

/// Counters, carried in the checkpoint.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Counts {
    rows: u64,
    replaced: u64,
    already_tokens: u64,
    rejected: u64,
    rejected_lines: Vec<u64>,
    pans_left: u64,
    pans_left_lines: Vec<u64>,
}

impl Counts {
    /// Adds the counts of rows read (a batch) to those written.
    fn merge(&mut self, batch: &Counts) {
        self.rows += batch.rows;
        self.already_tokens += batch.already_tokens;
        self.rejected += batch.rejected;
        for &line in &batch.rejected_lines {
            Counts::note(&mut self.rejected_lines, line);
        }
    }

    fn note(list: &mut Vec<u64>, line: u64) {
        if list.len() < MAX_LINES_LISTED {
            list.push(line);
        }
    }
}

/// How far a run got: everything before `in_offset` of IN is in OUT's
/// first `out_len` bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    input_bytes: u64,
    format: FileFormat,
    selector: Option<String>,
    column_index: Option<usize>,
    in_offset: u64,
    out_len: u64,
    line: u64,
    counts: Counts,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(message.into())
}

/// One row waiting for its tokens.
struct Row {
    bytes: Vec<u8>,
    /// 1-based line of the row's first line.
    line: u64,
    /// Spans to replace, each with its index in the batch.
    replace: Vec<(Range<usize>, usize)>,
}

/// One batch: its rows and where IN and the line count stand after it.
struct Batch {
    rows: Vec<Row>,
    pans: Vec<Zeroizing<String>>,
    in_offset: u64,
    line: u64,
    bytes: usize,
    /// What its rows held (merged into the run's counts once written).
    counts: Counts,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            rows: Vec::new(),
            pans: Vec::new(),
            in_offset: 0,
            line: 0,
            bytes: 0,
            counts: Counts::default(),
        }
    }
}

type Sent = tokio::task::JoinHandle<(Connection, Result<Vec<String>, CliError>)>;

/// Sends one batch; the tokens in order, or why not.
async fn send_batch(
    conn: &mut Connection,
    pans: &[Zeroizing<String>],
) -> Result<Vec<String>, CliError> {
    let mut body = Zeroizing::new(Vec::with_capacity(pans.len() * 24 + 16));
    body.extend_from_slice(b"{\"pans\":[");
    for (i, pan) in pans.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        body.extend_from_slice(pan.as_bytes());
        body.push(b'"');
    }
    body.extend_from_slice(b"]}");
    let mut tries = 0;
    loop {
        let reply = conn
            .send(
                Method::POST,
                "/v1/tokenize/batch",
                Some(("application/json", body.to_vec())),
            )
            .await
            .context("POST /v1/tokenize/batch")?;
        let status = reply.status.as_u16();
        if (status == 429 || status == 503) && tries < 60 {
            tries += 1;
            let wait = reply.retry_after.unwrap_or(1).clamp(1, 10);
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            continue;
        }
        let answer = reply.json();
        if status != 200 {
            return Err(anyhow::anyhow!(
                "the vault answered {status}: {}",
                answer["error"]["message"].as_str().unwrap_or("no message")
            )
            .into());
        }
        let results = answer["results"].as_array().cloned().unwrap_or_default();
        if results.len() != pans.len() {
            return Err(anyhow::anyhow!(
                "the vault answered {} results for {} PANs",
                results.len(),
                pans.len()
            )
            .into());
        }
        return results
            .iter()
            .enumerate()
            .map(|(i, r)| match r["token"].as_str() {
                Some(token) if Token::parse(token).is_ok() => Ok(token.to_owned()),
                _ => Err(CliError::Failed(anyhow::anyhow!(
                    "the vault refused item {} of a batch: {}",
                    i + 1,
                    r["error"]["code"].as_str().unwrap_or("no token")
                ))),
            })
            .collect();
    }
}

/// What one value of a row is.
enum Judged {
    Pan,
    Token,
    Empty,
    Other,
}

fn judge(value: &str) -> Judged {
    let value = value.trim();
    if value.is_empty() {
        Judged::Empty
    } else if Token::parse(value).is_ok() {
        Judged::Token
    } else if Pan::parse(value).is_ok() {
        Judged::Pan
    } else {
        Judged::Other
    }
}

/// The run's state between batches.
struct Run {
    format: Format,
    column_index: Option<usize>,
    counts: Counts,
    partial: File,
    out_len: u64,
    checkpoint_path: PathBuf,
    checkpoint_base: Checkpoint,
}

impl Run {
    /// Splits one record into the row to write and the PANs to send.
    fn take_row(&mut self, record: &[u8], line: u64, batch: &mut Batch) {
        batch.counts.rows += 1;
        let mut replace = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        match &self.format {
            Format::Text => slots = rewrite::text_slots(record),
            Format::Csv { .. } => {
                if let Some(index) = self.column_index
                    && let Some((span, value)) = rewrite::csv_fields(record).into_iter().nth(index)
                {
                    slots.push(Slot {
                        span,
                        value: Zeroizing::new(String::from_utf8_lossy(&value).into_owned()),
                        known_token: false,
                    });
                }
            }
            Format::Jsonl { path } => match rewrite::json_value(record, path) {
                JsonValue::Found(slot) => slots.push(slot),
                JsonValue::Absent => {}
                JsonValue::Invalid => {
                    batch.counts.rejected += 1;
                    Counts::note(&mut batch.counts.rejected_lines, line);
                }
            },
        }
        for slot in slots {
            if slot.known_token {
                batch.counts.already_tokens += 1;
                continue;
            }
            match judge(&slot.value) {
                Judged::Pan => {
                    replace.push((slot.span, batch.pans.len()));
                    batch
                        .pans
                        .push(Zeroizing::new(slot.value.trim().to_owned()));
                }
                Judged::Token => batch.counts.already_tokens += 1,
                Judged::Empty => {}
                Judged::Other => {
                    // A PAN inside a longer value ("card 4111 …") is still
                    // replaced; anything else is left and reported.
                    let inner = rewrite::text_slots(&record[slot.span.clone()]);
                    let pans: Vec<_> = inner.into_iter().filter(|s| !s.known_token).collect();
                    if pans.is_empty() {
                        batch.counts.rejected += 1;
                        Counts::note(&mut batch.counts.rejected_lines, line);
                    }
                    for inner in pans {
                        let span =
                            slot.span.start + inner.span.start..slot.span.start + inner.span.end;
                        replace.push((span, batch.pans.len()));
                        batch.pans.push(inner.value);
                    }
                }
            }
        }
        batch.bytes += record.len();
        batch.rows.push(Row {
            bytes: record.to_vec(),
            line,
            replace,
        });
    }

    /// Writes a batch's rows with their tokens, syncs, and checkpoints.
    fn write_batch(&mut self, batch: Batch, tokens: &[String]) -> Result<(), CliError> {
        self.counts.merge(&batch.counts);
        let mut out = Vec::with_capacity(batch.bytes + 64);
        for row in batch.rows {
            let mut bytes = row.bytes;
            let mut replace = row.replace;
            replace.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
            for (span, index) in replace {
                let token = tokens
                    .get(index)
                    .context("a token missing from the answer")?;
                let with = rewrite::replacement(&bytes[span.clone()], token);
                bytes.splice(span, with);
                self.counts.replaced += 1;
            }
            let mut left = 0;
            detect::find(&bytes, |f| {
                if f.kind == Kind::Pan {
                    left += 1;
                }
            });
            if left > 0 {
                self.counts.pans_left += left;
                Counts::note(&mut self.counts.pans_left_lines, row.line);
            }
            out.extend_from_slice(&bytes);
        }
        self.partial
            .write_all(&out)
            .context("writing OUT.partial")?;
        self.partial.sync_data().context("syncing OUT.partial")?;
        self.out_len += out.len() as u64;
        let checkpoint = Checkpoint {
            in_offset: batch.in_offset,
            out_len: self.out_len,
            line: batch.line,
            counts: self.counts.clone(),
            ..self.checkpoint_base.clone_base()
        };
        write_checkpoint(&self.checkpoint_path, &checkpoint)
    }
}

impl Checkpoint {
    fn clone_base(&self) -> Checkpoint {
        Checkpoint {
            version: self.version,
            input_bytes: self.input_bytes,
            format: self.format,
            selector: self.selector.clone(),
            column_index: self.column_index,
            in_offset: 0,
            out_len: 0,
            line: 0,
            counts: Counts::default(),
        }
    }
}

/// Replaces `path` with the checkpoint atomically (synced temp, rename).
fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<(), CliError> {
    let tmp = with_suffix(path, ".tmp");
    let bytes = serde_json::to_vec(checkpoint).context("encoding the checkpoint")?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(&bytes).context("writing the checkpoint")?;
    file.sync_all().context("syncing the checkpoint")?;
    std::fs::rename(&tmp, path).context("replacing the checkpoint")?;
    Ok(())
}

/// Runs `tokenize-file`.
pub async fn run(args: TokenizeFileArgs) -> CliResult {
    args.vault.validate()?;
    let format = match args.format {
        FileFormat::Csv => Format::Csv {
            column: args.column.clone().unwrap_or_default(),
        },
        FileFormat::Jsonl => {
            Format::jsonl(args.field.as_deref().unwrap_or("")).map_err(|e| usage(e.to_string()))?
        }
        FileFormat::Text => Format::Text,
    };
    let selector = args.column.clone().or_else(|| args.field.clone());
    let mut input = File::open(&args.input)
        .map_err(|e| CliError::Unreadable(format!("{}: {e}", args.input.display())))?;
    let input_bytes = input.metadata().context("reading IN")?.len();
    let partial_path = with_suffix(&args.output, ".partial");
    let checkpoint_path = with_suffix(&args.output, ".checkpoint");

    let (checkpoint, partial) = if args.resume {
        let bytes = std::fs::read(&checkpoint_path).map_err(|e| {
            usage(format!(
                "--resume: no checkpoint at {}: {e}",
                checkpoint_path.display()
            ))
        })?;
        let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|_| usage(format!("{} is not a checkpoint", checkpoint_path.display())))?;
        if checkpoint.version != 1
            || checkpoint.input_bytes != input_bytes
            || checkpoint.format != args.format
            || checkpoint.selector != selector
        {
            return Err(usage(
                "--resume: the checkpoint is for another input, format, column or field",
            ));
        }
        let partial = OpenOptions::new()
            .write(true)
            .open(&partial_path)
            .with_context(|| format!("opening {}", partial_path.display()))?;
        partial
            .set_len(checkpoint.out_len)
            .context("cutting OUT.partial back to the checkpoint")?;
        (checkpoint, partial)
    } else {
        if args.output.exists() {
            return Err(usage(format!("{} exists", args.output.display())));
        }
        if checkpoint_path.exists() {
            return Err(usage(format!(
                "an interrupted run left {}: add --resume to continue it, or delete it and {}",
                checkpoint_path.display(),
                partial_path.display()
            )));
        }
        let partial = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial_path)
            .with_context(|| format!("creating {}", partial_path.display()))?;
        let checkpoint = Checkpoint {
            version: 1,
            input_bytes,
            format: args.format,
            selector: selector.clone(),
            column_index: None,
            in_offset: 0,
            out_len: 0,
            line: 1,
            counts: Counts::default(),
        };
        (checkpoint, partial)
    };
    let mut partial = partial;
    partial
        .seek(SeekFrom::Start(checkpoint.out_len))
        .context("seeking OUT.partial")?;
    input
        .seek(SeekFrom::Start(checkpoint.in_offset))
        .context("seeking IN")?;

    let (tls, addr) = args.vault.connect_info().await?;
    let mut free: Vec<Connection> = Vec::new();
    for _ in 0..args.concurrency {
        free.push(
            tls.connect(addr)
                .await
                .with_context(|| format!("cannot reach the vault at {}", args.vault.target))?,
        );
    }

    let bar = indicatif::ProgressBar::new(input_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {msg} {per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(checkpoint.in_offset);

    let mut run = Run {
        format,
        column_index: checkpoint.column_index,
        counts: checkpoint.counts.clone(),
        partial,
        out_len: checkpoint.out_len,
        checkpoint_path: checkpoint_path.clone(),
        checkpoint_base: checkpoint.clone_base(),
    };
    let started = Instant::now();
    let rows_before = run.counts.rows;
    let mut in_offset = checkpoint.in_offset;
    let mut line = checkpoint.line;
    let mut buf: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(1 << 20));
    let mut chunk = Zeroizing::new(vec![0u8; 1 << 20]);
    let mut eof = false;
    let mut batch = Batch::new();
    let mut in_flight: VecDeque<(Sent, Batch)> = VecDeque::new();
    let csv = args.format == FileFormat::Csv;

    loop {
        // The next complete record, reading more as needed.
        let record_len = loop {
            if let Some(end) = rewrite::record_end(&buf, csv) {
                break Some(end);
            }
            if eof {
                break (!buf.is_empty()).then_some(buf.len());
            }
            let n = input.read(&mut chunk).context("reading IN")?;
            if n == 0 {
                eof = true;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if let Some(len) = record_len {
            let record: Zeroizing<Vec<u8>> = Zeroizing::new(buf.drain(..len).collect());
            let record_line = line;
            line += memchr::memchr_iter(b'\n', &record).count() as u64;
            in_offset += len as u64;
            if csv && run.column_index.is_none() {
                // The header: found once, written as it is.
                let column = args.column.as_deref().unwrap_or("");
                run.column_index =
                    Some(rewrite::csv_column(&record, column).map_err(|e| usage(e.to_string()))?);
                run.checkpoint_base.column_index = run.column_index;
                batch.rows.push(Row {
                    bytes: record.to_vec(),
                    line: record_line,
                    replace: Vec::new(),
                });
                batch.bytes += len;
            } else {
                run.take_row(&record, record_line, &mut batch);
            }
            batch.in_offset = in_offset;
            batch.line = line;
        }
        let full = batch.pans.len() >= usize::from(args.batch) || batch.bytes >= MAX_PENDING_BYTES;
        let done = record_len.is_none();
        if (full || done) && !batch.rows.is_empty() {
            let mut sending = std::mem::replace(&mut batch, Batch::new());
            if free.is_empty() {
                // Every connection is busy: the oldest batch is written first.
                let (task, finished) = in_flight.pop_front().context("no batch in flight")?;
                let (conn, tokens) = task.await.context("a batch task stopped")?;
                free.push(conn);
                run.write_batch(finished, &tokens?)?;
            }
            let mut conn = free.pop().context("no free connection")?;
            let pans = std::mem::take(&mut sending.pans);
            let task = tokio::spawn(async move {
                let result = if pans.is_empty() {
                    Ok(Vec::new())
                } else {
                    send_batch(&mut conn, &pans).await
                };
                (conn, result)
            });
            in_flight.push_back((task, sending));
            bar.set_position(in_offset);
            bar.set_message(format!("{} rows", run.counts.rows));
        }
        if done {
            break;
        }
    }
    while let Some((task, finished)) = in_flight.pop_front() {
        let (_conn, tokens) = task.await.context("a batch task stopped")?;
        run.write_batch(finished, &tokens?)?;
    }
    bar.finish_and_clear();
    run.partial.sync_all().context("syncing OUT.partial")?;
    std::fs::rename(&partial_path, &args.output)
        .with_context(|| format!("renaming to {}", args.output.display()))?;
    let _ = std::fs::remove_file(&checkpoint_path);

    let elapsed = started.elapsed().as_secs_f64();
    let rows_now = run.counts.rows - rows_before;
    let c = &run.counts;
    let summary = serde_json::json!({
        "output": args.output.display().to_string(),
        "rows": c.rows,
        "pans_replaced": c.replaced,
        "already_tokens": c.already_tokens,
        "rejected": c.rejected,
        "rejected_lines": c.rejected_lines,
        "pans_left": c.pans_left,
        "pans_left_lines": c.pans_left_lines,
        "seconds": elapsed,
        "rows_per_s": if elapsed > 0.0 { rows_now as f64 / elapsed } else { 0.0 },
        "resumed": args.resume,
    });
    if args.json {
        say!("{summary}");
    } else {
        say!(
            "{}: {} rows, {} PANs replaced, {} already tokens, {} rejected{}; {:.0} rows/s",
            args.output.display(),
            c.rows,
            c.replaced,
            c.already_tokens,
            c.rejected,
            if c.rejected_lines.is_empty() {
                String::new()
            } else {
                format!(
                    " (lines {})",
                    c.rejected_lines
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            summary["rows_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    if c.pans_left > 0 {
        return Err(CliError::Answer(format!(
            "{} card numbers remain outside the {} (lines {:?}); tokenize them with --format text",
            c.pans_left,
            if csv { "column" } else { "field" },
            c.pans_left_lines
        )));
    }
    Ok(())
}
