//! The audit writer: one thread owns the current segment file and the chain
//! state (sequence number, last MAC). It takes events from a channel in
//! groups, seals them into one buffer, writes it with one `write`, and
//! syncs when an event in the group must be durable (detokenization) or the
//! sync interval has passed — so many concurrent detokenizations share one
//! `fdatasync`, and tokenizations never wait for one. Between groups it
//! lets events gather ([`GATHER`]; a durable event cuts that short), or,
//! after a group of several reveals, lingers briefly ([`LINGER`]) so the
//! next sync is shared by more of them.
//!
//! Failure handling: if a write fails (disk full, directory removed), the
//! file is cut back to its last complete entry, the chain state is rolled
//! back, the group's durable callers get an error (and refuse to reveal),
//! and the lost events are counted; the next successful write starts with
//! an `audit_resumed` event carrying that count. Segments rotate by size or
//! age; each new segment continues the chain of the previous one.
//!
//! Every N events or T seconds, and at close, the writer signs a checkpoint
//! of the synced end of the chain with the evidence key
//! ([`super::checkpoint`]) and sends it to the checkpoint directory and the
//! syslog mirror. The evidence key is created beside the audit key on the
//! first start that lacks one, and its public key written as PEM.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::Thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use super::chain::{self, Chain, GENESIS, MAC_LEN};
use super::checkpoint::{CheckpointSettings, Checkpointer, Signed};
use super::event::{Event, EventKind};
use super::syslog::{Mirror, SyslogTarget};
use super::{AuditError, key, segment_name, segments};
use crate::crypto::{KeyProvider, SigningKey};
use crate::dirlock::DirLock;

/// Where and how the trail is written.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Directory of the segments and `audit.key` (created 0700 if missing).
    pub dir: PathBuf,
    /// Start a new segment once the current one reaches this size.
    pub max_file_bytes: u64,
    /// Start a new segment once the current one is this old.
    pub rotate_after: Duration,
    /// Longest time a non-durable event waits for `fdatasync`.
    pub sync_interval: Duration,
    /// Optional off-host mirror (RFC 5424 syslog).
    pub syslog: Option<SyslogTarget>,
    /// This node's id, for nodes of a shared store: in every entry and in
    /// the segment names.
    pub node: Option<String>,
    /// Signed checkpoints: where, and how often.
    pub checkpoints: CheckpointSettings,
    /// Where the evidence key's public half is written (PEM), if anywhere.
    pub public_key_file: Option<PathBuf>,
}

impl AuditSettings {
    /// Defaults for `dir`: 64 MiB or one day per segment, 200 ms sync interval.
    pub fn new(dir: PathBuf) -> AuditSettings {
        AuditSettings {
            dir,
            max_file_bytes: 64 << 20,
            rotate_after: Duration::from_secs(86_400),
            sync_interval: Duration::from_millis(200),
            syslog: None,
            node: None,
            checkpoints: CheckpointSettings::default(),
            public_key_file: None,
        }
    }
}

/// How long the writer lets events gather after writing a group. Queuing a
/// non-durable event never wakes the writer while it gathers, so under load
/// the trail costs one wake-up, one `write` and one segment check per window
/// instead of per request. A durable event, a close or a key file wakes it
/// at once: a reveal does not wait for the window.
const GATHER: Duration = Duration::from_millis(1);

/// How long the writer waits before its next group when the last one
/// synced several reveals at once (callers are revealing concurrently):
/// more of them then share the next `fdatasync`, its wake-ups and its
/// device notification. A lone reveal never waits for it.
const LINGER: Duration = Duration::from_micros(200);

enum Message {
    /// A wrapped key file changed (a KEK rotation): the bytes the writer
    /// puts back into a directory that lost it.
    KeyFile(key::KeyKind, Vec<u8>),
    Record(Event),
    Durable(Event, oneshot::Sender<Result<u64, AuditError>>),
    /// A new evidence key and its wrapped file: hand over to it.
    RotateEvidence(Box<EvidenceRotation>),
    /// A statement to sign with the evidence key, or to check against it.
    Statement(Statement),
    Close(oneshot::Sender<Result<(), AuditError>>),
}

/// An evidence-key rotation on its way to the writer.
struct EvidenceRotation {
    key: SigningKey,
    file: Vec<u8>,
    done: oneshot::Sender<Result<EvidenceHandover, AuditError>>,
}

/// A statement for the evidence key: answered at once, written nowhere.
enum Statement {
    Sign(Vec<u8>, oneshot::Sender<Signed>),
    Verify(Vec<u8>, Vec<u8>, oneshot::Sender<bool>),
}

/// What an evidence-key rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvidenceHandover {
    /// The old key's fingerprint.
    pub from: String,
    /// The new key's fingerprint.
    pub to: String,
    /// The new public key, hex.
    pub public_key: String,
    /// The entry the handover checkpoint (signed by the old key) covers.
    pub seq: u64,
}

/// A handle to the audit trail; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
    dir: PathBuf,
    /// The writer thread, once started: woken for messages that must not
    /// wait for the gathering window.
    writer: Arc<OnceLock<Thread>>,
}

impl AuditLog {
    /// Opens (or starts) the trail in `settings.dir`: loads or creates the
    /// audit key, finds the end of the chain (cutting off a torn last line
    /// left by a crash), starts a new segment and writes `audit_start`.
    pub fn open(
        settings: AuditSettings,
        provider: &dyn KeyProvider,
    ) -> Result<AuditLog, AuditError> {
        let (log, pending) = AuditLog::prepare(settings)?;
        pending.start(provider).map_err(|(_, e)| e)?;
        Ok(log)
    }

    /// Locks the trail's directory and returns a handle whose events queue
    /// in memory until [`PendingAudit::start`] is given the KEK (a sealed
    /// vault: custodians' unseal attempts are recorded before the audit
    /// key can be unwrapped). Dropping the pending trail loses the queue.
    pub fn prepare(settings: AuditSettings) -> Result<(AuditLog, PendingAudit), AuditError> {
        // Before anything is read or written: a second process (an offline
        // command, a second server) must not append to a running vault's
        // chain. Creates the directory (0700) if missing.
        let lock = DirLock::acquire(&settings.dir, "audit directory")?;
        let (tx, rx) = mpsc::channel();
        let writer = Arc::new(OnceLock::new());
        Ok((
            AuditLog {
                tx,
                dir: settings.dir.clone(),
                writer: Arc::clone(&writer),
            },
            PendingAudit {
                settings,
                lock: Some(lock),
                rx,
                writer,
            },
        ))
    }

    /// Phase one of a KEK rotation for the audit and evidence keys: wraps
    /// each under `next` too (see [`key::rewrap`]).
    pub fn rewrap_key(
        &self,
        current: &dyn KeyProvider,
        next: &dyn KeyProvider,
    ) -> Result<(), AuditError> {
        for kind in [key::AUDIT, key::EVIDENCE] {
            let bytes = key::rewrap(&self.dir, kind, current, next)?;
            self.send_now(Message::KeyFile(kind, bytes))?;
        }
        Ok(())
    }

    /// Rotates the evidence key: a new one (wrapped under `current`, and
    /// `next` during a KEK rotation) replaces `evidence.key`, after a
    /// handover checkpoint signed by the old key names it; checkpoints and
    /// bundles are signed by the new key from then on.
    pub async fn rotate_evidence_key(
        &self,
        current: &dyn KeyProvider,
        next: Option<&dyn KeyProvider>,
    ) -> Result<EvidenceHandover, AuditError> {
        let made = key::prepare_next(&self.dir, key::EVIDENCE, current, next)?;
        let key = SigningKey::from_seed(&made.key)
            .map_err(|e| AuditError::Key(format!("{}: {e}", key::EVIDENCE.file)))?;
        let (done, wait) = oneshot::channel();
        self.send_now(Message::RotateEvidence(Box::new(EvidenceRotation {
            key,
            file: made.file_bytes,
            done,
        })))?;
        wait.await.map_err(|_| AuditError::Closed)?
    }

    /// The trail's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Signs `statement` with the vault's current evidence key (an
    /// admin's approval the vault later checks with [`AuditLog::verifies`]).
    pub async fn sign(&self, statement: &[u8]) -> Result<Signed, AuditError> {
        let (done, wait) = oneshot::channel();
        self.send_now(Message::Statement(Statement::Sign(
            statement.to_vec(),
            done,
        )))?;
        wait.await.map_err(|_| AuditError::Closed)
    }

    /// Whether `signature` is the current evidence key's over `statement`.
    pub async fn verifies(&self, statement: &[u8], signature: &[u8]) -> Result<bool, AuditError> {
        let (done, wait) = oneshot::channel();
        self.send_now(Message::Statement(Statement::Verify(
            statement.to_vec(),
            signature.to_vec(),
            done,
        )))?;
        wait.await.map_err(|_| AuditError::Closed)
    }

    /// Queues `message` and wakes the writer if it is gathering.
    fn send_now(&self, message: Message) -> Result<(), AuditError> {
        self.tx.send(message).map_err(|_| AuditError::Closed)?;
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
        Ok(())
    }

    /// Queues `event`; it is written within the gathering window and
    /// reaches the disk within the sync interval. Never waits. A failure
    /// to write it is logged and counted by the writer.
    pub fn record(&self, event: Event) {
        if self.tx.send(Message::Record(event.redacted())).is_err() {
            metrics::counter!("cardvault_audit_events_lost_total").increment(1);
        }
    }

    /// Appends `event` and returns once it is synced to disk; its sequence
    /// number on success.
    pub async fn record_durable(&self, event: Event) -> Result<u64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.send_now(Message::Durable(event.redacted(), done))?;
        wait.await.map_err(|_| AuditError::Closed)?
    }

    /// Writes `audit_stop`, syncs and stops the writer. Later events are lost.
    pub async fn close(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.send_now(Message::Close(done))?;
        wait.await.map_err(|_| AuditError::Closed)?
    }
}

/// A trail whose directory is locked and whose events queue, waiting for
/// the KEK that unwraps its audit key ([`AuditLog::prepare`]).
pub struct PendingAudit {
    settings: AuditSettings,
    lock: Option<DirLock>,
    rx: mpsc::Receiver<Message>,
    writer: Arc<OnceLock<Thread>>,
}

impl std::fmt::Debug for PendingAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAudit")
            .field("dir", &self.settings.dir)
            .finish_non_exhaustive()
    }
}

impl PendingAudit {
    /// Unwraps (or creates) the audit key with `provider`, finds the end of
    /// the chain, writes `audit_start` and then every queued event, in order.
    /// On failure (a KEK that did not wrap the audit key) the pending trail
    /// comes back with the error, its queue intact.
    #[allow(clippy::result_large_err)]
    pub fn start(self, provider: &dyn KeyProvider) -> Result<(), (PendingAudit, AuditError)> {
        let (keys, existing) = match self.keys(provider) {
            Ok(found) => found,
            Err(e) => return Err((self, e)),
        };
        self.start_with(keys, existing)
            .map_err(|e| (PendingAudit::dead(), e))
    }

    /// A pending trail that holds nothing (after a failed start whose
    /// parts were consumed).
    fn dead() -> PendingAudit {
        let (_, rx) = mpsc::channel();
        PendingAudit {
            settings: AuditSettings::new(PathBuf::new()),
            lock: None,
            rx,
            writer: Arc::new(OnceLock::new()),
        }
    }

    fn keys(
        &self,
        provider: &dyn KeyProvider,
    ) -> Result<(TrailKeys, Vec<(u64, PathBuf)>), AuditError> {
        let dir = &self.settings.dir;
        let existing = segments(dir)?;
        let audit_key = match key::load(dir, key::AUDIT, provider)? {
            Some(k) => k,
            None if existing.is_empty() => key::create(dir, key::AUDIT, provider)?,
            None => {
                return Err(AuditError::Key(format!(
                    "{} holds audit segments but no {}; the chain can be neither continued nor verified",
                    dir.display(),
                    key::KEY_FILE
                )));
            }
        };
        // The evidence key: made on the first start that lacks one (a trail
        // from before it existed gets one too; checkpoints start then).
        let (evidence, evidence_created) = match key::load(dir, key::EVIDENCE, provider)? {
            Some(k) => (k, false),
            None => (key::create(dir, key::EVIDENCE, provider)?, true),
        };
        let signing = SigningKey::from_seed(&evidence.key)
            .map_err(|e| AuditError::Key(format!("{}: {e}", key::EVIDENCE.file)))?;
        Ok((
            TrailKeys {
                audit: audit_key,
                evidence_file: evidence.file_bytes,
                signing,
                evidence_created,
            },
            existing,
        ))
    }

    fn start_with(self, keys: TrailKeys, existing: Vec<(u64, PathBuf)>) -> Result<(), AuditError> {
        let settings = self.settings;
        let lock = self.lock;
        let tail = find_tail(&existing)?;
        let public = keys.signing.public();
        let public_note = write_public_key(settings.public_key_file.as_deref(), &public);
        let mut detail = match tail.seq {
            0 => "new chain".to_owned(),
            n => format!("continuing the chain after seq {n}"),
        };
        if tail.torn_bytes > 0 {
            detail.push_str(&format!(
                "; cut {} bytes of an incomplete last entry (crash during a write)",
                tail.torn_bytes
            ));
            tracing::warn!(
                bytes = tail.torn_bytes,
                "audit trail ended in an incomplete entry; cut it off"
            );
        }
        let mirror = settings.syslog.clone().map(Mirror::start);
        let checkpointer = Checkpointer::new(
            settings.checkpoints.clone(),
            settings.node.clone(),
            keys.signing,
            tail.seq,
        );
        let mut writer = Writer {
            chain: Chain::new(&keys.audit.key),
            key_file: keys.audit.file_bytes,
            evidence_file: keys.evidence_file,
            checkpointer,
            last_event: "",
            segment: None,
            next_index: existing.last().map_or(1, |(i, _)| i + 1),
            seq: tail.seq,
            last_mac: tail.mac,
            lost: 0,
            dirty: false,
            last_sync: Instant::now(),
            buf: Vec::with_capacity(64 << 10),
            scratch: Vec::with_capacity(1 << 10),
            mirror,
            settings,
            lock,
        };
        writer.append(&Event::new(EventKind::AuditStart).with_detail(detail));
        if keys.evidence_created {
            tracing::info!(fingerprint = %public.fingerprint(), public_key = %public.hex(), "evidence signing key created; pin its fingerprint");
            writer.append(
                &Event::new(EventKind::EvidenceKeyCreated).with_detail(format!(
                    "Ed25519 public key {}, fingerprint (SHA-256 of its DER) {}; {public_note}",
                    public.hex(),
                    public.fingerprint()
                )),
            );
        }
        writer.commit(true)?;
        // The trail as found at start, signed: a copy rolled back while
        // the vault was stopped is caught by the checkpoints before it.
        writer.checkpoint();
        tracing::info!(dir = %writer.settings.dir.display(), seq = writer.seq, "audit trail open");
        let rx = self.rx;
        let thread = std::thread::Builder::new()
            .name("cardvault-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io(Path::new("audit writer thread"), e))?;
        // A durable event queued before this is already in the channel,
        // which the writer drains before it first gathers.
        let _ = self.writer.set(thread.thread().clone());
        Ok(())
    }
}

/// The trail's keys, unwrapped.
struct TrailKeys {
    audit: key::AuditKey,
    evidence_file: Vec<u8>,
    signing: SigningKey,
    evidence_created: bool,
}

/// Writes the evidence public key as PEM to `path` unless it already holds
/// it; says what happened (for the audit event). A path that cannot be
/// written is logged, never a failure: the key is also in the trail.
fn write_public_key(path: Option<&Path>, public: &crate::crypto::PublicKey) -> String {
    let Some(path) = path else {
        return "no public key file configured".into();
    };
    let pem = public.pem();
    if fs::read_to_string(path).is_ok_and(|text| text == pem) {
        return format!("public key in {}", path.display());
    }
    match fs::write(path, &pem) {
        Ok(()) => format!("public key written to {}", path.display()),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the evidence public key file");
            format!("public key file {} not writable", path.display())
        }
    }
}

struct Tail {
    seq: u64,
    mac: [u8; MAC_LEN],
    torn_bytes: u64,
}

/// The last complete entry of the trail. A last segment that ends without a
/// newline (a write cut by a crash) is cut back to its last complete line.
fn find_tail(existing: &[(u64, PathBuf)]) -> Result<Tail, AuditError> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    let mut torn_bytes = 0;
    for (position, (_, path)) in existing.iter().enumerate().rev() {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| AuditError::io(path, e))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() && position == existing.len() - 1 {
            torn_bytes = (bytes.len() - complete) as u64;
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| {
                    f.set_len(complete as u64)?;
                    f.sync_all()
                })
                .map_err(|e| AuditError::io(path, e))?;
        }
        let Some(line) = bytes[..complete].split(|b| *b == b'\n').rev().nth(1) else {
            continue;
        };
        let unreadable = || AuditError::Io {
            path: path.display().to_string(),
            message: "last entry is not a sealed audit entry; run `cardvault audit verify`".into(),
        };
        let (body, mac) = chain::split(line).map_err(|_| unreadable())?;
        let seq: Seq = serde_json::from_slice(&body).map_err(|_| unreadable())?;
        return Ok(Tail {
            seq: seq.seq,
            mac,
            torn_bytes,
        });
    }
    Ok(Tail {
        seq: 0,
        mac: GENESIS,
        torn_bytes,
    })
}

struct Segment {
    file: File,
    path: PathBuf,
    len: u64,
    opened: Instant,
    identity: (u64, u64),
}

struct Writer {
    settings: AuditSettings,
    chain: Chain,
    key_file: Vec<u8>,
    /// `evidence.key` as stored (put back like `audit.key`).
    evidence_file: Vec<u8>,
    checkpointer: Checkpointer,
    /// The last entry's event name (for its checkpoint).
    last_event: &'static str,
    segment: Option<Segment>,
    next_index: u64,
    seq: u64,
    last_mac: [u8; MAC_LEN],
    /// Events lost to write failures since the last successful write.
    lost: u64,
    /// Written but not yet synced.
    dirty: bool,
    last_sync: Instant,
    buf: Vec<u8>,
    /// One entry's body, reused.
    scratch: Vec<u8>,
    mirror: Option<Mirror>,
    /// Held until the trail is closed: this process owns the directory.
    lock: Option<DirLock>,
}

/// The fields the writer adds around an event.
#[derive(Serialize)]
struct Entry<'a> {
    seq: u64,
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(flatten)]
    event: &'a Event,
}

fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Message>) {
        let mut batch = Vec::new();
        loop {
            let wait = if self.dirty {
                self.settings
                    .sync_interval
                    .saturating_sub(self.last_sync.elapsed())
            } else {
                Duration::from_secs(1)
            };
            match rx.recv_timeout(wait) {
                Ok(message) => batch.push(message),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.commit(true);
                    return;
                }
            }
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            match self.process(&mut batch) {
                None => return,
                Some(reveals) if reveals >= 2 => std::thread::sleep(LINGER),
                Some(_) => std::thread::park_timeout(GATHER),
            }
        }
    }

    /// Seals and writes one group; returns how many of its events were
    /// durable, or `None` when the log was closed.
    fn process(&mut self, batch: &mut Vec<Message>) -> Option<usize> {
        let (seq_before, mac_before) = (self.seq, self.last_mac);
        self.buf.clear();
        let lost_before = self.lost;
        if lost_before > 0 {
            let mut resumed = Event::new(EventKind::AuditResumed)
                .with_detail("events were lost while the trail could not be written");
            resumed.count = Some(lost_before);
            self.append(&resumed);
        }
        let mut durable = Vec::new();
        let mut closing = None;
        let mut rotation = None;
        let mut events = 0u64;
        for message in batch.drain(..) {
            match message {
                Message::KeyFile(kind, bytes) if kind == key::EVIDENCE => {
                    self.evidence_file = bytes;
                }
                Message::KeyFile(_, bytes) => self.key_file = bytes,
                Message::Record(event) => {
                    self.append(&event);
                    events += 1;
                }
                Message::Durable(event, done) => {
                    durable.push((self.append(&event), done));
                    events += 1;
                }
                Message::RotateEvidence(r) => rotation = Some(r),
                Message::Statement(Statement::Sign(bytes, done)) => {
                    let _ = done.send(self.checkpointer.sign(&bytes));
                }
                Message::Statement(Statement::Verify(bytes, signature, done)) => {
                    let _ = done.send(self.checkpointer.public().verifies(&bytes, &signature));
                }
                Message::Close(done) => {
                    self.append(&Event::new(EventKind::AuditStop));
                    closing = Some(done);
                }
            }
        }
        let reveals = durable.len();
        let checkpoint = self.checkpointer.due(self.seq, closing.is_some());
        let must_sync = !durable.is_empty()
            || closing.is_some()
            || checkpoint
            || rotation.is_some()
            || (self.dirty || !self.buf.is_empty())
                && self.last_sync.elapsed() >= self.settings.sync_interval;
        match self.commit(must_sync) {
            Ok(()) => {
                if checkpoint && !self.dirty {
                    self.checkpoint();
                }
                if let Some(rotation) = rotation.take() {
                    let EvidenceRotation { key, file, done } = *rotation;
                    let _ = done.send(self.hand_over(key, file));
                }
                if lost_before > 0 {
                    tracing::warn!(lost = lost_before, "audit trail writable again");
                    self.lost = 0;
                }
                metrics::counter!("cardvault_audit_events_total").increment(events);
                for (seq, done) in durable {
                    let _ = done.send(Ok(seq));
                }
                if let Some(done) = closing {
                    // Released before the answer, so a caller that closes
                    // and reopens the trail finds the directory free.
                    self.lock = None;
                    let _ = done.send(Ok(()));
                    return None;
                }
            }
            Err(e) => {
                if let Some(rotation) = rotation.take() {
                    let _ = rotation.done.send(Err(e.clone()));
                }
                self.seq = seq_before;
                self.last_mac = mac_before;
                if lost_before == 0 {
                    tracing::error!(error = %e, "audit trail cannot be written; detokenization is refused until it can");
                }
                self.lost += events;
                metrics::counter!("cardvault_audit_write_failures_total").increment(1);
                metrics::counter!("cardvault_audit_events_lost_total").increment(events);
                for (_, done) in durable {
                    let _ = done.send(Err(e.clone()));
                }
                if let Some(done) = closing {
                    self.lock = None;
                    let _ = done.send(Err(e));
                    return None;
                }
            }
        }
        Some(reveals)
    }

    /// Hands over to a new evidence key: a checkpoint of the synced end of
    /// the chain, signed by the old key, names the new one; then the new
    /// key file and public key file replace the old ones and the new key
    /// signs from now on.
    fn hand_over(
        &mut self,
        key: SigningKey,
        file: Vec<u8>,
    ) -> Result<EvidenceHandover, AuditError> {
        let public = key.public();
        let from = self.checkpointer.fingerprint().to_owned();
        let line = self
            .checkpointer
            .make(self.seq, &self.last_mac, self.last_event, Some(&public));
        if let Some(mirror) = &self.mirror {
            mirror.send_checkpoint(&line);
        }
        key::replace(&self.settings.dir, key::EVIDENCE, &file)?;
        self.evidence_file = file;
        let _ = write_public_key(self.settings.public_key_file.as_deref(), &public);
        self.checkpointer.switch_key(key);
        tracing::info!(from = %from, to = %public.fingerprint(), "evidence key rotated; pin the new fingerprint");
        Ok(EvidenceHandover {
            from,
            to: public.fingerprint(),
            public_key: public.hex(),
            seq: self.seq,
        })
    }

    /// Signs a checkpoint of the last entry (synced by the caller) and
    /// sends it to the checkpoint directory and the mirror.
    fn checkpoint(&mut self) {
        let line = self
            .checkpointer
            .make(self.seq, &self.last_mac, self.last_event, None);
        if let Some(mirror) = &self.mirror {
            mirror.send_checkpoint(&line);
        }
    }

    /// Seals `event` as the next entry into the buffer; returns its seq.
    fn append(&mut self, event: &Event) -> u64 {
        self.seq += 1;
        self.last_event = event.event.as_str();
        let entry = Entry {
            seq: self.seq,
            ts: now_utc(),
            node: self.settings.node.as_deref(),
            event,
        };
        // Serializing plain strings and numbers into a Vec cannot fail.
        self.scratch.clear();
        let _ = serde_json::to_writer(&mut self.scratch, &entry);
        self.last_mac = self
            .chain
            .seal_into(&self.last_mac, &self.scratch, &mut self.buf);
        self.seq
    }

    /// Writes the buffer to the current segment (opening or rotating one as
    /// needed) and syncs if asked or due. On a failed write the segment is
    /// cut back to where it was, so no partial entry stays behind.
    fn commit(&mut self, sync: bool) -> Result<(), AuditError> {
        if self.buf.is_empty() && !(sync && self.dirty) {
            return Ok(());
        }
        self.ensure_segment()?;
        let Writer {
            segment: slot,
            buf,
            dirty,
            last_sync,
            settings,
            mirror,
            ..
        } = self;
        let Some(segment) = slot.as_mut() else {
            return Err(AuditError::Io {
                path: settings.dir.display().to_string(),
                message: "no open segment".into(),
            });
        };
        if !buf.is_empty() {
            if let Err(e) = segment.file.write_all(buf) {
                let path = segment.path.clone();
                let _ = segment.file.set_len(segment.len);
                let _ = segment.file.seek(SeekFrom::Start(segment.len));
                *slot = None;
                return Err(AuditError::io(&path, e));
            }
            segment.len += buf.len() as u64;
            *dirty = true;
            if let Some(mirror) = mirror {
                mirror.send(buf);
            }
        }
        if sync || last_sync.elapsed() >= settings.sync_interval {
            if let Err(e) = segment.file.sync_data() {
                let path = segment.path.clone();
                *slot = None;
                return Err(AuditError::io(&path, e));
            }
            *dirty = false;
            *last_sync = Instant::now();
        }
        Ok(())
    }

    /// The segment to write to: the open one unless it was removed or
    /// replaced, is full or is too old; otherwise a new one.
    fn ensure_segment(&mut self) -> Result<(), AuditError> {
        if let Some(segment) = &mut self.segment {
            let same_file =
                fs::metadata(&segment.path).is_ok_and(|m| (m.dev(), m.ino()) == segment.identity);
            let full = segment.len >= self.settings.max_file_bytes
                || segment.opened.elapsed() >= self.settings.rotate_after;
            if !same_file {
                tracing::error!(path = %segment.path.display(), "audit segment was removed or replaced; starting a new one");
                self.segment = None;
            } else if full {
                if self.dirty {
                    segment
                        .file
                        .sync_data()
                        .map_err(|e| AuditError::io(&segment.path, e))?;
                    self.dirty = false;
                }
                self.segment = None;
            }
        }
        if self.segment.is_none() {
            let dir = &self.settings.dir;
            if !dir.join(key::AUDIT.file).exists() {
                key::write_key_file(dir, key::AUDIT, &self.key_file)?;
            }
            if !dir.join(key::EVIDENCE.file).exists() {
                key::write_key_file(dir, key::EVIDENCE, &self.evidence_file)?;
            }
            let path = dir.join(segment_name(self.settings.node.as_deref(), self.next_index));
            let file = fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o640)
                .open(&path)
                .map_err(|e| AuditError::io(&path, e))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| AuditError::io(dir, e))?;
            let meta = file.metadata().map_err(|e| AuditError::io(&path, e))?;
            self.next_index += 1;
            self.dirty = false;
            self.segment = Some(Segment {
                file,
                path,
                len: 0,
                opened: Instant::now(),
                identity: (meta.dev(), meta.ino()),
            });
        }
        Ok(())
    }
}
