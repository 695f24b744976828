//! Portable tokens: importing (token, PAN) pairs made by another vault so
//! the tokens keep working here, and reading a tenant's pairs back out in
//! pages for an export.
//!
//! An import seals the PAN under the tenant's data key like a tokenization,
//! but stores the given token, and — in a deterministic tenant — indexes the
//! PAN's fingerprint to it, so tokenizing that PAN later returns the
//! imported token. It never overwrites: a token held by another PAN, or a
//! PAN that already has another token, is refused for that item; the same
//! pair again is reported as already present (an import re-run is
//! idempotent).

use subtle::ConstantTimeEq as _;

use std::sync::Arc;

use super::keys::TenantKeys;
use super::{Revealed, TokenMode, Vault, VaultError};
use crate::crypto::{DataKey, Fingerprint};
use crate::domain::{Expiry, Pan, TenantId, Token};
use crate::store::{Insert, InsertOutcome};

/// What became of one imported pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored.
    Imported,
    /// This token already stands for this PAN: nothing to do.
    AlreadyPresent,
    /// The token stands for another PAN here.
    TokenTaken,
    /// The PAN already has another token here (deterministic tenant).
    PanHasOtherToken,
}

impl Vault {
    /// Imports `(token, PAN, expiry)` items into `tenant`; one outcome per
    /// item, in order.
    pub async fn import(
        &self,
        tenant: &TenantId,
        items: &[(Token, &Pan, Option<Expiry>)],
    ) -> Vec<Result<ImportOutcome, VaultError>> {
        if let Err(e) = self.unsealed() {
            return items.iter().map(|_| Err(e.clone())).collect();
        }
        let keys = match self.keys.get_or_create(self.store.as_ref(), tenant).await {
            Ok(keys) => keys,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        let deterministic = self.mode(tenant) == TokenMode::Deterministic;
        let _epoch = if deterministic {
            Some(keys.fp_epoch.read().await)
        } else {
            None
        };
        let mut results: Vec<Option<Result<ImportOutcome, VaultError>>> =
            items.iter().map(|_| None).collect();
        let drafts = self
            .draft_imports(&keys, items, deterministic, &mut results)
            .await;
        let outcomes = if drafts.inserts.is_empty() {
            Ok(Vec::new())
        } else {
            self.store.insert(drafts.inserts).await
        };
        if let Some((dek, count)) = drafts.last_claim {
            self.keys
                .rotate_if_due(self.store.as_ref(), &keys, &dek, count)
                .await;
        }
        match outcomes {
            Ok(outcomes) => {
                for (i, outcome) in drafts.inserted_for.into_iter().zip(outcomes) {
                    let (token, pan, _) = &items[i];
                    results[i] = Some(self.settle_import(tenant, token, pan, outcome).await);
                }
            }
            Err(e) => {
                for i in drafts.inserted_for {
                    results[i] = Some(Err(e.clone().into()));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(VaultError::TokenNotFound)))
            .collect()
    }

    /// Drafts the inserts of the items whose PAN has no token yet; an item
    /// whose PAN has one (deterministic tenants, read in one batch) or that
    /// fails is settled in `results` at once.
    async fn draft_imports(
        &self,
        keys: &TenantKeys,
        items: &[(Token, &Pan, Option<Expiry>)],
        deterministic: bool,
        results: &mut [Option<Result<ImportOutcome, VaultError>>],
    ) -> ImportDrafts {
        let mut drafts = ImportDrafts {
            inserts: Vec::new(),
            inserted_for: Vec::new(),
            last_claim: None,
        };
        let (fingerprinter, older) = keys.fingerprinters();
        let mark = self.store.read_mark();
        let lookups: Vec<(&Pan, Fingerprint)> = if deterministic {
            items
                .iter()
                .map(|(_, pan, _)| (*pan, fingerprinter.fingerprint(pan)))
                .collect()
        } else {
            Vec::new()
        };
        let mut known = self
            .existing_tokens(&keys.tenant, &lookups, &older)
            .await
            .into_iter();
        for (i, (token, pan, expiry)) in items.iter().enumerate() {
            let fingerprint = lookups.get(i).map(|(_, fp)| *fp);
            match known.next() {
                Some(Ok(Some(existing))) => {
                    results[i] = Some(Ok(if existing == *token {
                        ImportOutcome::AlreadyPresent
                    } else {
                        ImportOutcome::PanHasOtherToken
                    }));
                    continue;
                }
                Some(Err(e)) => {
                    results[i] = Some(Err(e));
                    continue;
                }
                Some(Ok(None)) | None => {}
            }
            match self
                .draft_for(keys, *token, pan, *expiry, fingerprint, mark)
                .await
            {
                Ok((insert, dek, count)) => {
                    drafts.inserts.push(insert);
                    drafts.inserted_for.push(i);
                    drafts.last_claim = Some((dek, count));
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        drafts
    }

    /// What the store's answer to one imported pair's insert means.
    async fn settle_import(
        &self,
        tenant: &TenantId,
        token: &Token,
        pan: &Pan,
        outcome: InsertOutcome,
    ) -> Result<ImportOutcome, VaultError> {
        match outcome {
            InsertOutcome::Inserted => {
                metrics::counter!("cardvault_tokens_imported_total").increment(1);
                Ok(ImportOutcome::Imported)
            }
            InsertOutcome::Existing(existing) if existing == *token => {
                Ok(ImportOutcome::AlreadyPresent)
            }
            InsertOutcome::Existing(_) => Ok(ImportOutcome::PanHasOtherToken),
            // Another node rotated the key: the import is refused for now;
            // a re-run seals it again.
            InsertOutcome::StaleKey => {
                let _ = self.keys.refresh(self.store.as_ref(), tenant).await;
                Err(VaultError::KeyState(
                    tenant.clone(),
                    "another node rotated the data key; import again",
                ))
            }
            // The token is stored: for this PAN (a re-run in a random-mode
            // tenant), or another.
            InsertOutcome::TokenCollision => match self.detokenize(tenant, token).await {
                Ok(held) if same_pan(&held, pan) => Ok(ImportOutcome::AlreadyPresent),
                Ok(_) => Ok(ImportOutcome::TokenTaken),
                Err(e) => Err(e),
            },
        }
    }

    /// `tenant`'s live tokens among the next `limit` after `after`, each
    /// with its PAN and expiry, in token order: one page of an export, and
    /// where the next page starts (`None` after the last).
    pub async fn export_page(
        &self,
        tenant: &TenantId,
        after: Option<Token>,
        limit: usize,
    ) -> Result<(Vec<(Token, Revealed)>, Option<Token>), VaultError> {
        let keys = self.known_keys(tenant).await?;
        let entries = self.store.scan_entries(tenant, after, limit).await?;
        let next = (entries.len() == limit)
            .then(|| entries.last().map(|(t, _)| *t))
            .flatten();
        let mut out = Vec::with_capacity(entries.len());
        for (token, entry) in entries {
            if entry.meta.expired_at(super::now_ms()) {
                continue;
            }
            let view = crate::crypto::RecordView::decode(&entry.record)?;
            let dek = keys.opener(view.dek_version())?;
            let pan = view.open(&dek, tenant, &token)?;
            out.push((
                token,
                Revealed {
                    pan,
                    expiry: entry.meta.expiry,
                },
            ));
        }
        Ok((out, next))
    }
}

fn same_pan(held: &Revealed, pan: &Pan) -> bool {
    bool::from(held.pan.expose_digits().ct_eq(pan.expose_digits()))
}

/// The inserts an import drafted.
struct ImportDrafts {
    inserts: Vec<Insert>,
    /// The item index of each insert.
    inserted_for: Vec<usize>,
    /// The last data-key claim, checked against the rotation policy.
    last_claim: Option<(Arc<DataKey>, u64)>,
}
