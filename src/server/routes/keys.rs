//! Key lifecycle routes (admin; an admin reaches its own tenant unless its
//! scope is global): `POST /v1/admin/keys/{tenant}/rotate` (a new data-key
//! version seals from now on), `POST` and `GET
//! /v1/admin/keys/{tenant}/reencrypt` (start the re-encryption job, or read
//! its progress) and `GET /v1/admin/keys` (the inventory; `?records=true`
//! counts each data key's records). Audited as `key_rotated`,
//! `reencrypt`, `keys_listed`.

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use crate::audit::EventKind;
use crate::config::Role;
use crate::domain::TenantId;
use crate::runtime::inventory::InventoryEntry;
use crate::server::audited::Call;
use crate::server::error::{ApiError, admin_key_error};
use crate::server::identity::Caller;
use crate::server::response::json;
use crate::vault::VaultError;

/// The tenant of the path, if the admin reaches it (403 otherwise).
fn reached(caller: &Caller, tenant: &str) -> Result<TenantId, ApiError> {
    caller.require(Role::Admin)?;
    let tenant =
        TenantId::parse(tenant).map_err(|_| ApiError::InvalidRequest("not a valid tenant name"))?;
    if caller.admin_reaches(&tenant) {
        Ok(tenant)
    } else {
        Err(ApiError::Forbidden)
    }
}

fn vault_error(e: &VaultError) -> ApiError {
    admin_key_error("key operation", e)
}

/// `{"tenant", "purpose", "version"}`.
#[derive(Serialize)]
struct Rotated {
    tenant: String,
    purpose: &'static str,
    version: u32,
}

/// `POST /v1/admin/keys/{tenant}/rotate[?purpose=fingerprint]`: the data
/// key by default; the fingerprint key with `purpose=fingerprint` (older
/// ones are looked up until a re-encryption pass moves every index entry).
pub async fn rotate(
    call: Call,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::KeyRotated, async |audited| {
        let tenant = reached(caller, &tenant)?;
        audited.event().tenant = Some(tenant.to_string());
        let fingerprint = match query.as_deref().unwrap_or("") {
            "" | "purpose=pan-encryption" => false,
            "purpose=fingerprint" => true,
            _ => {
                return Err(ApiError::InvalidRequest(
                    "the only query parameter is purpose=fingerprint or purpose=pan-encryption",
                ));
            }
        };
        let version = if fingerprint {
            state.vault.rotate_fingerprint_key(&tenant).await
        } else {
            state.vault.rotate_keys(&tenant).await
        }
        .map_err(|e| vault_error(&e))?;
        audited.event().detail = Some(format!(
            "{} v{version} active (by request)",
            if fingerprint {
                "fingerprint"
            } else {
                "pan-encryption"
            }
        ));
        Ok(json(
            StatusCode::OK,
            &Rotated {
                tenant: tenant.to_string(),
                purpose: if fingerprint {
                    "fingerprint"
                } else {
                    "pan-encryption"
                },
                version,
            },
        ))
    })
    .await
}

/// `POST /v1/admin/keys/{tenant}/reencrypt`: 202 with the job's status.
pub async fn reencrypt_start(call: Call, Path(tenant): Path<String>) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::Reencrypt, async |audited| {
        let tenant = reached(caller, &tenant)?;
        audited.event().tenant = Some(tenant.to_string());
        let status = state
            .reseals
            .start(&tenant)
            .await
            .map_err(|e| vault_error(&e))?;
        audited.event().detail = Some(format!(
            "requested: re-seal every record older than v{}",
            status.target_version
        ));
        Ok(json(StatusCode::ACCEPTED, &status))
    })
    .await
}

/// `GET /v1/admin/keys/{tenant}/reencrypt`: the job's status (404 if none
/// ran since the vault started). Not audited: it reveals progress only.
pub async fn reencrypt_status(
    call: Call,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::Reencrypt, async |audited| {
        let tenant = reached(caller, &tenant)?;
        audited.event().tenant = Some(tenant.to_string());
        audited.event().detail = Some("status read".into());
        match state.reseals.status(&tenant) {
            Some(status) => Ok(json(StatusCode::OK, &status)),
            None => Err(ApiError::InvalidRequest(
                "no re-encryption job has run for this tenant since the vault started",
            )),
        }
    })
    .await
}

/// `DELETE /v1/admin/keys/{tenant}/reencrypt`: pauses the running job
/// after its current step (it keeps its checkpoint; `POST` continues it).
pub async fn reencrypt_pause(call: Call, Path(tenant): Path<String>) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::Reencrypt, async |audited| {
        let tenant = reached(caller, &tenant)?;
        audited.event().tenant = Some(tenant.to_string());
        match state.reseals.pause(&tenant).await {
            Some(status) => {
                audited.event().detail = Some(format!("paused after {} records", status.done));
                Ok(json(StatusCode::OK, &status))
            }
            None => Err(ApiError::InvalidRequest(
                "no re-encryption job has run for this tenant since the vault started",
            )),
        }
    })
    .await
}

/// Whether the query asks for record counts (`records=true`); anything
/// else in it is refused.
fn wants_records(query: Option<&str>) -> Result<bool, ApiError> {
    match query.unwrap_or("") {
        "" | "records=false" => Ok(false),
        "records=true" => Ok(true),
        _ => Err(ApiError::InvalidRequest(
            "the only query parameter is records=true",
        )),
    }
}

/// `{"keys": [...]}`.
#[derive(Serialize)]
struct Inventory {
    keys: Vec<InventoryEntry>,
}

/// `GET /v1/admin/keys`: every key the admin's reach covers.
pub async fn inventory(call: Call, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (state, caller) = (&call.state, &call.caller);
    call.audited(EventKind::KeysListed, async |audited| {
        caller.require(Role::Admin)?;
        let records = wants_records(query.as_deref())?;
        let keys = state
            .vault
            .inventory(records, state.keys.reencrypt_batch.get().max(1024))
            .await
            .map_err(|e| vault_error(&e))?;
        let keys: Vec<InventoryEntry> = keys
            .into_iter()
            .filter(|k| caller.admin_reaches(&k.label.tenant))
            .map(|k| InventoryEntry::of(k, &state.keys))
            .collect();
        audited.event().count = Some(keys.len() as u64);
        Ok(json(StatusCode::OK, &Inventory { keys }))
    })
    .await
}
