//! `POST /v1/admin/backup` (role `admin`, `scope = "global"`): the running
//! vault backs itself up ([`crate::runtime::backup`]) into `[storage] backup_dir`
//! under the name asked for — a RocksDB checkpoint taken while it serves,
//! its trail after a synced `backup_taken` entry, its wrapped keys and a
//! manifest — and answers where. `cardvault backup` calls it when the
//! vault runs. One at a time (503 `unavailable` while one runs), and only
//! when the backup directory's file system keeps `[storage]
//! min_free_bytes` free after the copy of the trail (the store's files are
//! hard links there). A PostgreSQL vault is refused (its database has its
//! own backups: docs/runbook.md).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::audit::EventKind;
use crate::config::Role;
use crate::server::audited::Call;
use crate::server::error::ApiError;
use crate::server::request::read_json;
use crate::server::response::json;

/// `{"name"}`: 1–64 of `a-z 0-9 . _ -`, not starting with a dot, nothing
/// card-number-like.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    name: String,
}

/// `{"name", "path", "files", "bytes", "audit_seq"}`.
#[derive(Serialize)]
struct Taken {
    name: String,
    path: String,
    files: usize,
    bytes: u64,
    audit_seq: u64,
}

/// A plain name that holds nothing card-number-like: it becomes a
/// directory name on disk and is echoed back, so 12 or more digits with
/// only separators between them are refused.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !crate::peer::body::holds_card_like_digits(name, b"._-")
}

/// Whether the file system of `root` keeps `reserve` bytes free after a
/// copy of the trail in `audit_dir` (the store's files are hard-linked).
fn room_for(root: &std::path::Path, audit_dir: &std::path::Path, reserve: u64) -> bool {
    let trail: u64 = std::fs::read_dir(audit_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    rustix::fs::statvfs(root)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .is_ok_and(|free| free >= trail.saturating_add(reserve))
}

/// `POST /v1/admin/backup` (global admin).
pub async fn take(call: Call, req: Request) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::BackupTaken, async |audited| {
        caller.require(Role::Admin)?;
        if !caller.is_global_admin() {
            audited.event().detail = Some("a backup needs scope = \"global\"".into());
            return Err(ApiError::Forbidden);
        }
        let body: BackupRequest =
            read_json(req, state.limits.body_limit_bytes.get(), &state.bodies).await?;
        if !valid_name(&body.name) {
            return Err(ApiError::InvalidRequest(
                "name must be 1-64 characters of a-z, 0-9, '.', '_' and '-', not starting with '.', and nothing like a card number",
            ));
        }
        let Some((root, reserve)) = &state.backup_dir else {
            return Err(ApiError::InvalidRequest(
                "this vault's data is in PostgreSQL: back the database up with its own tools (docs/runbook.md)",
            ));
        };
        if state.vault.is_sealed() {
            return Err(ApiError::Sealed);
        }
        let Ok(_one_at_a_time) = state.backup_running.try_lock() else {
            return Err(ApiError::Unavailable("a backup is being taken; try again when it is done"));
        };
        std::fs::create_dir_all(root).map_err(|e| {
            tracing::error!(dir = %root.display(), error = %e, "cannot create the backup directory");
            ApiError::Unavailable("the backup directory cannot be created")
        })?;
        if !room_for(root, state.audit.dir(), *reserve) {
            return Err(ApiError::Unavailable(
                "not enough free space for a backup: it would leave less than [storage] min_free_bytes",
            ));
        }
        let out = root.join(&body.name);
        if out.exists() {
            return Err(ApiError::InvalidRequest("a backup of that name exists"));
        }
        let sources = crate::runtime::backup::Sources {
            vault: &state.vault,
            audit: &state.audit,
            audit_dir: state.audit.dir(),
            extra: Vec::new(),
        };
        let manifest = crate::runtime::backup::take(&sources, &out, false)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "backup failed");
                let _ = std::fs::remove_dir_all(&out);
                ApiError::Unavailable("the backup failed; the log says why")
            })?;
        let bytes = manifest.files.iter().map(|f| f.bytes).sum();
        audited.event().detail = Some(format!(
            "backup {}: {} files, {bytes} bytes, the trail to entry {}",
            body.name,
            manifest.files.len(),
            manifest.audit_seq
        ));
        Ok(json(
            StatusCode::OK,
            &Taken {
                name: body.name,
                path: out.display().to_string(),
                files: manifest.files.len(),
                bytes,
                audit_seq: manifest.audit_seq,
            },
        ))
    })
    .await
}
