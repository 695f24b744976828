//! Why a vault operation failed. Messages never contain a PAN. Storage
//! trouble is told apart here (a full disk is [`VaultError::StorageFull`]),
//! so callers need not look inside store errors.

use super::MAX_TOKEN_DRAWS;
use crate::crypto::KeyError;
use crate::crypto::record::RecordError;
use crate::domain::TenantId;
use crate::random::RandomError;
use crate::store::StoreError;

/// Why a vault operation failed. Messages never contain a PAN.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    /// No such token in this tenant.
    #[error("token not found")]
    TokenNotFound,
    /// The vault is sealed: its KEK is not in memory until custodians
    /// hand in enough shares.
    #[error("the vault is sealed")]
    Sealed,
    /// The tenant has no keys (nothing was ever tokenized for it).
    #[error("tenant {0} has no keys")]
    UnknownTenant(TenantId),
    /// Every draw collided: the BIN + last-4 bucket is (nearly) full.
    #[error("no free token after {MAX_TOKEN_DRAWS} draws for this card number's BIN and last 4")]
    TokenSpaceExhausted,
    /// The active data key reached its encryption limit and rotation failed.
    #[error("data key {version} of tenant {tenant} reached its encryption limit")]
    KeyExhausted {
        /// Tenant.
        tenant: TenantId,
        /// Key version.
        version: u32,
    },
    /// A record names a key version the tenant does not have.
    #[error("tenant {tenant} has no data key version {version}")]
    MissingKeyVersion {
        /// Tenant.
        tenant: TenantId,
        /// Key version named by the record.
        version: u32,
    },
    /// A record is sealed under a data key that was destroyed.
    #[error(
        "tenant {tenant}'s data key version {version} was destroyed; the record cannot be opened"
    )]
    KeyDestroyed {
        /// Tenant.
        tenant: TenantId,
        /// Key version named by the record.
        version: u32,
    },
    /// Stored keys are inconsistent (no active key, missing fingerprint key).
    #[error("stored keys of tenant {0} are inconsistent: {1}")]
    KeyState(TenantId, &'static str),
    /// The storage's disk is nearly full: writes are refused until space is
    /// freed (reads keep working).
    #[error("storage is full: {free} bytes free, {reserve} reserved")]
    StorageFull {
        /// Bytes available.
        free: u64,
        /// The configured reserve.
        reserve: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
    /// Key wrapping or unwrapping failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A record failed to seal or open.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> VaultError {
        match e {
            StoreError::DiskFull { free, reserve } => VaultError::StorageFull { free, reserve },
            other => VaultError::Store(other),
        }
    }
}
