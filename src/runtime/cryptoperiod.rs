//! Cryptoperiods (PCI DSS 3.6.1, 3.7.4): at start (once unsealed) and every `[keys]
//! cryptoperiod_check_s` the watcher reads the key inventory, publishes how
//! long each active key has left (`cardvault_key_cryptoperiod_remaining_seconds
//! {tenant,purpose}`), raises the `cryptoperiod_ending` alert once per key
//! when it enters its last `cryptoperiod_warning_s`, and when a key's
//! period is over rotates it (data or fingerprint key) and starts the
//! tenant's re-encryption, which then destroys the old version.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::reencrypt::Reseals;
use crate::audit::{AuditLog, Event, EventKind};
use crate::config::KeysConfig;
use crate::crypto::{KeyLabel, KeyPurpose};
use crate::vault::Vault;

/// The alert rule's name.
pub const CRYPTOPERIOD_ENDING: &str = "cryptoperiod_ending";

/// The watcher's view of time and its settings.
struct Watch {
    vault: Arc<Vault>,
    reseals: Arc<Reseals>,
    audit: AuditLog,
    settings: KeysConfig,
    /// Keys already alerted on (once each).
    warned: HashSet<KeyLabel>,
}

/// Starts the watcher; it ends when `stop` turns true.
pub fn spawn(
    vault: Arc<Vault>,
    reseals: Arc<Reseals>,
    audit: AuditLog,
    settings: KeysConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut watch = Watch {
        vault,
        reseals,
        audit,
        settings,
        warned: HashSet::new(),
    };
    tokio::spawn(async move {
        // The first check at once (its gauge is there from the start), or
        // as soon as a sealed vault is unsealed; then every interval.
        let every = Duration::from_secs(watch.settings.cryptoperiod_check_s.get());
        let sealed_poll = every.min(Duration::from_secs(5));
        loop {
            let next = if watch.vault.is_sealed() {
                sealed_poll
            } else {
                watch.check().await;
                every
            };
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Watch {
    fn period_s(&self, purpose: KeyPurpose) -> u64 {
        match purpose {
            KeyPurpose::PanEncryption => self.settings.dek_cryptoperiod_s,
            KeyPurpose::Fingerprint => self.settings.fingerprint_cryptoperiod_s,
            KeyPurpose::AuditMac | KeyPurpose::EvidenceSigning => 0,
        }
    }

    async fn check(&mut self) {
        let keys = match self.vault.inventory(false, 1024).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "cryptoperiod check: cannot read the key inventory");
                return;
            }
        };
        let now = now_ms();
        for key in keys.into_iter().filter(|k| k.state == "active") {
            let period = self.period_s(key.label.purpose);
            if period == 0 {
                continue;
            }
            let age_s = now.saturating_sub(key.changed_ms) / 1000;
            let remaining = period as i64 - age_s as i64;
            metrics::gauge!(
                "cardvault_key_cryptoperiod_remaining_seconds",
                "tenant" => key.label.tenant.to_string(),
                "purpose" => key.label.purpose.as_str()
            )
            .set(remaining as f64);
            if remaining <= self.settings.cryptoperiod_warning_s as i64
                && self.warned.insert(key.label.clone())
            {
                self.alert(&key.label, remaining);
            }
            if remaining <= 0 {
                self.renew(&key.label).await;
            }
        }
    }

    fn alert(&self, label: &KeyLabel, remaining: i64) {
        tracing::warn!(alert = CRYPTOPERIOD_ENDING, tenant = %label.tenant, purpose = label.purpose.as_str(), version = label.version, remaining_s = remaining, "alert: a key's cryptoperiod is ending");
        metrics::counter!("cardvault_alerts_total", "rule" => CRYPTOPERIOD_ENDING).increment(1);
        let event = Event::new(EventKind::Alert)
            .with_tenant(label.tenant.as_str())
            .with_detail(format!(
                "{CRYPTOPERIOD_ENDING}: {} v{} has {remaining} s of its cryptoperiod left{}",
                label.purpose.as_str(),
                label.version,
                "; it is rotated and re-encrypted when it ends"
            ));
        self.audit.record(event);
    }

    /// A key past its period: rotate, then re-encrypt the tenant.
    async fn renew(&self, label: &KeyLabel) {
        let rotated = match label.purpose {
            KeyPurpose::Fingerprint => self.vault.rotate_fingerprint_key(&label.tenant).await,
            _ => self.vault.rotate_keys(&label.tenant).await,
        };
        match rotated {
            Ok(version) => {
                tracing::info!(tenant = %label.tenant, from = label.version, to = version, "cryptoperiod over: rotated the key");
                if let Err(e) = self.reseals.start(&label.tenant).await {
                    tracing::error!(tenant = %label.tenant, error = %e, "cannot start the re-encryption after a cryptoperiod rotation");
                }
            }
            Err(e) => {
                tracing::error!(tenant = %label.tenant, error = %e, "cryptoperiod over but the rotation failed")
            }
        }
    }
}
