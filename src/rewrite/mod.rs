//! `tokenize-file`'s engine: replaces the card numbers of a file with
//! tokens from a running vault — a CSV column, a JSON Lines field, or every
//! PAN the scan detector finds — writing OUT byte for byte like IN but for
//! the replaced values (grouping kept). The record formats live in
//! `records`, a run's parts (counters, checkpoint, batches) in `job`; here
//! is the run itself.
//!
//! PANs go to the vault in batches over mTLS (`/v1/tokenize/batch`, several
//! batches in flight, written back in order). OUT grows as `OUT.partial`
//! (mode 0600) and becomes OUT only when complete; after each batch the
//! partial file is synced and `OUT.checkpoint` records how far IN was read
//! and OUT written, so a resumed run continues after a crash without
//! re-sending finished rows. Only tokens are ever written: a row is written
//! after its PANs came back as tokens, and a PAN the vault refuses stops the
//! run before that row is written.

mod job;
mod records;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::client::{ClientTls, Connection};
use job::{
    Batch, Checkpoint, Counts, MAX_PENDING_BYTES, Row, Run, Sent, send_batch, usage, with_suffix,
};
use records::Format;

/// The input's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// CSV with a header line and a named column.
    Csv,
    /// One JSON object per line and a field path.
    Jsonl,
    /// Any text: every PAN the scan detector finds.
    Text,
}

/// What to rewrite, how, and against which vault.
pub struct Job {
    /// The file to read.
    pub input: PathBuf,
    /// The file to write (must not exist; `OUT.partial` until complete).
    pub output: PathBuf,
    /// The input's shape.
    pub format: FileFormat,
    /// CSV: the header name of the card-number column.
    pub column: Option<String>,
    /// JSON Lines: the field, `card.pan` or `/card/pan`.
    pub field: Option<String>,
    /// PANs per batch request.
    pub batch: usize,
    /// Batches in flight (one connection each).
    pub concurrency: usize,
    /// Continue an interrupted run from `OUT.checkpoint`.
    pub resume: bool,
    /// The vault's TLS settings and address (role `tokenize`).
    pub tls: ClientTls,
    /// Where the vault is.
    pub addr: SocketAddr,
    /// How the vault was named, for messages.
    pub target: String,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The arguments do not fit the files (exists, no checkpoint, wrong
    /// column, …).
    #[error("{0}")]
    Usage(String),
    /// IN cannot be read.
    #[error("{0}")]
    Unreadable(String),
    /// Anything else: the vault, the disk.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What a finished run did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// OUT.
    pub output: String,
    /// Rows read (header included), this run and those it resumed.
    pub rows: u64,
    /// PANs replaced by tokens.
    pub pans_replaced: u64,
    /// Values that were tokens already.
    pub already_tokens: u64,
    /// Values that were neither (by line, never the value).
    pub rejected: u64,
    /// Their first lines (at most 1,000).
    pub rejected_lines: Vec<u64>,
    /// PANs left outside the column or field.
    pub pans_left: u64,
    /// Their first lines (at most 1,000).
    pub pans_left_lines: Vec<u64>,
    /// Seconds this run took.
    pub seconds: f64,
    /// Rows per second in this run.
    pub rows_per_s: f64,
    /// Whether this run resumed an interrupted one.
    pub resumed: bool,
}

/// Runs `job` to its end: OUT complete, the checkpoint removed.
pub async fn run(job: Job) -> Result<Summary, JobError> {
    let format = match job.format {
        FileFormat::Csv => Format::Csv {
            column: job.column.clone().unwrap_or_default(),
        },
        FileFormat::Jsonl => {
            Format::jsonl(job.field.as_deref().unwrap_or("")).map_err(|e| usage(e.to_string()))?
        }
        FileFormat::Text => Format::Text,
    };
    let mut input = File::open(&job.input)
        .map_err(|e| JobError::Unreadable(format!("{}: {e}", job.input.display())))?;
    let input_bytes = input.metadata().context("reading IN")?.len();
    let (checkpoint, partial) = open_output(&job, input_bytes)?;
    input
        .seek(SeekFrom::Start(checkpoint.in_offset))
        .context("seeking IN")?;
    let mut free: Vec<Connection> = Vec::new();
    for _ in 0..job.concurrency {
        free.push(
            job.tls
                .connect(job.addr)
                .await
                .with_context(|| format!("cannot reach the vault at {}", job.target))?,
        );
    }
    let bar = progress_bar(job.progress, input_bytes, checkpoint.in_offset);
    let mut run = Run {
        format,
        column_index: checkpoint.column_index,
        counts: checkpoint.counts.clone(),
        partial,
        out_len: checkpoint.out_len,
        checkpoint_path: with_suffix(&job.output, ".checkpoint"),
        checkpoint_base: checkpoint.clone_base(),
    };
    let started = Instant::now();
    let rows_before = run.counts.rows;
    pump(&job, &mut run, &mut input, &checkpoint, free, &bar).await?;
    bar.finish_and_clear();
    run.partial.sync_all().context("syncing OUT.partial")?;
    std::fs::rename(with_suffix(&job.output, ".partial"), &job.output)
        .with_context(|| format!("renaming to {}", job.output.display()))?;
    let _ = std::fs::remove_file(&run.checkpoint_path);
    let seconds = started.elapsed().as_secs_f64();
    let rows_now = run.counts.rows - rows_before;
    let c = run.counts;
    Ok(Summary {
        output: job.output.display().to_string(),
        rows: c.rows,
        pans_replaced: c.replaced,
        already_tokens: c.already_tokens,
        rejected: c.rejected,
        rejected_lines: c.rejected_lines,
        pans_left: c.pans_left,
        pans_left_lines: c.pans_left_lines,
        seconds,
        rows_per_s: if seconds > 0.0 {
            rows_now as f64 / seconds
        } else {
            0.0
        },
        resumed: job.resume,
    })
}

/// The checkpoint to start from and `OUT.partial` at its end: a fresh one,
/// or — resuming — the interrupted run's, cut back to what it recorded.
fn open_output(job: &Job, input_bytes: u64) -> Result<(Checkpoint, File), JobError> {
    let selector = job.column.clone().or_else(|| job.field.clone());
    let partial_path = with_suffix(&job.output, ".partial");
    let checkpoint_path = with_suffix(&job.output, ".checkpoint");
    let (checkpoint, mut partial) = if job.resume {
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
            || checkpoint.format != job.format
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
        if job.output.exists() {
            return Err(usage(format!("{} exists", job.output.display())));
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
            format: job.format,
            selector,
            column_index: None,
            in_offset: 0,
            out_len: 0,
            line: 1,
            counts: Counts::default(),
        };
        (checkpoint, partial)
    };
    partial
        .seek(SeekFrom::Start(checkpoint.out_len))
        .context("seeking OUT.partial")?;
    Ok((checkpoint, partial))
}

fn progress_bar(shown: bool, total: u64, at: u64) -> indicatif::ProgressBar {
    if !shown {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {msg} {per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(at);
    bar
}

/// IN read record by record, in 1 MiB chunks.
struct Records<'a> {
    input: &'a mut File,
    buf: Zeroizing<Vec<u8>>,
    chunk: Zeroizing<Vec<u8>>,
    eof: bool,
    csv: bool,
}

impl Records<'_> {
    /// The next complete record, or `None` at the end of IN.
    fn next(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, JobError> {
        loop {
            if let Some(end) = records::record_end(&self.buf, self.csv) {
                return Ok(Some(Zeroizing::new(self.buf.drain(..end).collect())));
            }
            if self.eof {
                let len = self.buf.len();
                return Ok((len > 0).then(|| Zeroizing::new(self.buf.drain(..len).collect())));
            }
            let n = self.input.read(&mut self.chunk).context("reading IN")?;
            if n == 0 {
                self.eof = true;
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// Reads IN to its end, sending batches (at most one per connection in
/// flight) and writing each back in order as its tokens come.
async fn pump(
    job: &Job,
    run: &mut Run,
    input: &mut File,
    checkpoint: &Checkpoint,
    mut free: Vec<Connection>,
    bar: &indicatif::ProgressBar,
) -> Result<(), JobError> {
    let csv = job.format == FileFormat::Csv;
    let mut records = Records {
        input,
        buf: Zeroizing::new(Vec::with_capacity(1 << 20)),
        chunk: Zeroizing::new(vec![0u8; 1 << 20]),
        eof: false,
        csv,
    };
    let mut in_offset = checkpoint.in_offset;
    let mut line = checkpoint.line;
    let mut batch = Batch::new();
    let mut in_flight: VecDeque<(Sent, Batch)> = VecDeque::new();
    loop {
        let record = records.next()?;
        if let Some(record) = &record {
            let record_line = line;
            line += memchr::memchr_iter(b'\n', record).count() as u64;
            in_offset += record.len() as u64;
            if csv && run.column_index.is_none() {
                // The header: found once, written as it is.
                let column = job.column.as_deref().unwrap_or("");
                run.column_index =
                    Some(records::csv_column(record, column).map_err(|e| usage(e.to_string()))?);
                run.checkpoint_base.column_index = run.column_index;
                batch.rows.push(Row {
                    bytes: record.to_vec(),
                    line: record_line,
                    replace: Vec::new(),
                });
                batch.bytes += record.len();
            } else {
                run.take_row(record, record_line, &mut batch);
            }
            batch.in_offset = in_offset;
            batch.line = line;
        }
        let full = batch.pans.len() >= job.batch || batch.bytes >= MAX_PENDING_BYTES;
        let done = record.is_none();
        if (full || done) && !batch.rows.is_empty() {
            let sending = std::mem::replace(&mut batch, Batch::new());
            if free.is_empty() {
                // Every connection is busy: the oldest batch is written first.
                let (task, finished) = in_flight.pop_front().context("no batch in flight")?;
                let (conn, tokens) = task.await.context("a batch task stopped")?;
                free.push(conn);
                run.write_batch(finished, &tokens?)?;
            }
            let conn = free.pop().context("no free connection")?;
            in_flight.push_back(send(conn, sending));
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
    Ok(())
}

/// Sends `batch`'s PANs on `conn` in a task of its own.
fn send(mut conn: Connection, mut batch: Batch) -> (Sent, Batch) {
    let pans = std::mem::take(&mut batch.pans);
    let task = tokio::spawn(async move {
        let result = if pans.is_empty() {
            Ok(Vec::new())
        } else {
            send_batch(&mut conn, &pans).await
        };
        (conn, result)
    });
    (task, batch)
}
