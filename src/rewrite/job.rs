//! The parts of a `tokenize-file` run: the counters and the checkpoint it
//! carries between batches, rows waiting for their tokens, batches sent to
//! the vault (retried on 429 and 503), how a value is judged (PAN, token,
//! empty, other), and writing a batch's rows back with their tokens —
//! synced, then checkpointed.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hyper::Method;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::records::{self, Format, JsonValue, Slot};
use super::{FileFormat, JobError};
use crate::client::Connection;
use crate::domain::{Pan, Token};
use crate::scan::{Kind, detect};

/// Line numbers kept in the summary and the checkpoint, at most.
pub(super) const MAX_LINES_LISTED: usize = 1000;
/// Bytes of rows held before a batch is sent even if not full.
pub(super) const MAX_PENDING_BYTES: usize = 8 << 20;

/// Counters, carried in the checkpoint.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Counts {
    pub(super) rows: u64,
    pub(super) replaced: u64,
    pub(super) already_tokens: u64,
    pub(super) rejected: u64,
    pub(super) rejected_lines: Vec<u64>,
    pub(super) pans_left: u64,
    pub(super) pans_left_lines: Vec<u64>,
}

impl Counts {
    /// Adds the counts of rows read (a batch) to those written.
    pub(super) fn merge(&mut self, batch: &Counts) {
        self.rows += batch.rows;
        self.already_tokens += batch.already_tokens;
        self.rejected += batch.rejected;
        for &line in &batch.rejected_lines {
            Counts::note(&mut self.rejected_lines, line);
        }
    }

    pub(super) fn note(list: &mut Vec<u64>, line: u64) {
        if list.len() < MAX_LINES_LISTED {
            list.push(line);
        }
    }
}

/// How far a run got: everything before `in_offset` of IN is in OUT's
/// first `out_len` bytes.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub(super) version: u32,
    pub(super) input_bytes: u64,
    pub(super) format: FileFormat,
    pub(super) selector: Option<String>,
    pub(super) column_index: Option<usize>,
    pub(super) in_offset: u64,
    pub(super) out_len: u64,
    pub(super) line: u64,
    pub(super) counts: Counts,
}

pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn usage(message: impl Into<String>) -> JobError {
    JobError::Usage(message.into())
}

/// One row waiting for its tokens.
pub(super) struct Row {
    pub(super) bytes: Vec<u8>,
    /// 1-based line of the row's first line.
    pub(super) line: u64,
    /// Spans to replace, each with its index in the batch.
    pub(super) replace: Vec<(Range<usize>, usize)>,
}

/// One batch: its rows and where IN and the line count stand after it.
pub(super) struct Batch {
    pub(super) rows: Vec<Row>,
    pub(super) pans: Vec<Zeroizing<String>>,
    pub(super) in_offset: u64,
    pub(super) line: u64,
    pub(super) bytes: usize,
    /// What its rows held (merged into the run's counts once written).
    pub(super) counts: Counts,
}

impl Batch {
    pub(super) fn new() -> Batch {
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

pub(super) type Sent = tokio::task::JoinHandle<(Connection, Result<Vec<String>, JobError>)>;

/// Sends one batch; the tokens in order, or why not.
pub(super) async fn send_batch(
    conn: &mut Connection,
    pans: &[Zeroizing<String>],
) -> Result<Vec<String>, JobError> {
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
                _ => Err(JobError::Failed(anyhow::anyhow!(
                    "the vault refused item {} of a batch: {}",
                    i + 1,
                    r["error"]["code"].as_str().unwrap_or("no token")
                ))),
            })
            .collect();
    }
}

/// What one value of a row is.
pub(super) enum Judged {
    Pan,
    Token,
    Empty,
    Other,
}

pub(super) fn judge(value: &str) -> Judged {
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
pub(super) struct Run {
    pub(super) format: Format,
    pub(super) column_index: Option<usize>,
    pub(super) counts: Counts,
    pub(super) partial: File,
    pub(super) out_len: u64,
    pub(super) checkpoint_path: PathBuf,
    pub(super) checkpoint_base: Checkpoint,
}

impl Run {
    /// Splits one record into the row to write and the PANs to send.
    pub(super) fn take_row(&mut self, record: &[u8], line: u64, batch: &mut Batch) {
        batch.counts.rows += 1;
        let mut replace = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        match &self.format {
            Format::Text => slots = records::text_slots(record),
            Format::Csv { .. } => {
                if let Some(index) = self.column_index
                    && let Some((span, value)) = records::csv_fields(record).into_iter().nth(index)
                {
                    slots.push(Slot {
                        span,
                        value: Zeroizing::new(String::from_utf8_lossy(&value).into_owned()),
                        known_token: false,
                    });
                }
            }
            Format::Jsonl { path } => match records::json_value(record, path) {
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
                    let inner = records::text_slots(&record[slot.span.clone()]);
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
    pub(super) fn write_batch(&mut self, batch: Batch, tokens: &[String]) -> Result<(), JobError> {
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
                let with = records::replacement(&bytes[span.clone()], token);
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
    pub(super) fn clone_base(&self) -> Checkpoint {
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
pub(super) fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<(), JobError> {
    let bytes = serde_json::to_vec(checkpoint).context("encoding the checkpoint")?;
    crate::private_file::replace(path, &bytes)
        .with_context(|| format!("replacing the checkpoint {}", path.display()))?;
    Ok(())
}
