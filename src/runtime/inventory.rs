//! The key inventory as it is shown — the admin API's `GET
//! /v1/admin/keys` and the evidence bundle alike: each key's facts from
//! [`crate::vault::KeyInfo`] with its times in RFC 3339 and, for an active
//! key, when its cryptoperiod (`[keys]`) ends.

use serde::Serialize;

use crate::clock::rfc3339 as created_at;
use crate::vault::KeyInfo;

/// One inventory line.
#[derive(Serialize)]
pub struct InventoryEntry {
    tenant: String,
    purpose: &'static str,
    version: u32,
    state: &'static str,
    created_at: String,
    changed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryptions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wrapped_by: Option<String>,
    rotation_pending: bool,
    /// When an active key's cryptoperiod ends (`[keys]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cryptoperiod_ends_at: Option<String>,
}

impl InventoryEntry {
    /// The inventory line of `k` (its cryptoperiod from `settings`).
    pub fn of(k: KeyInfo, settings: &crate::config::KeysConfig) -> InventoryEntry {
        let period_s = match k.label.purpose {
            crate::crypto::KeyPurpose::PanEncryption => settings.dek_cryptoperiod_s,
            crate::crypto::KeyPurpose::Fingerprint => settings.fingerprint_cryptoperiod_s,
            crate::crypto::KeyPurpose::AuditMac | crate::crypto::KeyPurpose::EvidenceSigning => 0,
        };
        let cryptoperiod_ends_at = (k.state == "active" && period_s > 0)
            .then(|| created_at(k.changed_ms.saturating_add(period_s.saturating_mul(1000))));
        InventoryEntry {
            cryptoperiod_ends_at,
            tenant: k.label.tenant.to_string(),
            purpose: k.label.purpose.as_str(),
            version: k.label.version,
            state: k.state,
            created_at: created_at(k.created_ms),
            changed_at: created_at(k.changed_ms),
            encryptions: k.encryptions,
            limit: k.limit,
            records: k.records,
            wrapped_by: k.wrapped_by,
            rotation_pending: k.rotation_pending,
        }
    }
}
