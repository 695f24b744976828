//! The command line's one error type and its exit statuses: usage and
//! config errors (an HSM's module, token, PIN or key label included) exit
//! 64 (`EX_USAGE`), a vault directory locked by a
//! running vault exits 75 (`EX_TEMPFAIL`: stop it and try again), a
//! signature that checks against a key nobody pinned exits 3, a broken
//! audit trail and every other failure exit 1.

use crate::audit::AuditError;
use crate::crypto::pkcs11::Pkcs11Error;
use crate::dirlock::LockError;

/// Exit status for command-line usage errors (sysexits.h `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit status when another process holds the vault's directories
/// (sysexits.h `EX_TEMPFAIL`).
pub const EXIT_LOCKED: u8 = 75;

/// Exit status of a verification whose signature is valid but whose
/// signer was not pinned: nothing says who signed.
pub const EXIT_UNPINNED: u8 = 3;

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments (exit 64).
    #[error("{0}")]
    Usage(String),
    /// A bad config file or override (exit 64).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `audit verify` found the chain broken (exit 1).
    #[error("{0}")]
    TrailBroken(crate::audit::VerifyFailure),
    /// An input file or database could not be read (exit 2).
    #[error("{0}")]
    Unreadable(String),
    /// The command's answer is "no" (exit 1), already printed.
    #[error("{0}")]
    Answer(String),
    /// A running vault holds the data or audit directory (exit 75).
    #[error(transparent)]
    Locked(LockError),
    /// A valid signature by a key that was not pinned (exit 3).
    #[error("{0}")]
    Unpinned(String),
    /// Anything else (exit 1).
    #[error(transparent)]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for CliError {
    /// Finds a directory lock held by another process anywhere in the
    /// error's chain (it may come from the store or the audit trail).
    fn from(e: anyhow::Error) -> CliError {
        let locked = e.chain().find_map(|cause| {
            cause.downcast_ref::<LockError>().cloned().or_else(|| {
                match cause.downcast_ref::<AuditError>() {
                    Some(AuditError::Locked(lock)) => Some(lock.clone()),
                    _ => None,
                }
            })
        });
        if let Some(lock @ LockError::Held { .. }) = locked {
            return CliError::Locked(lock);
        }
        // A misconfigured HSM (module, token, PIN, key label) is a config
        // error: exit 64, naming the field. A device failure is not.
        let hsm_config = e.chain().any(|cause| {
            cause
                .downcast_ref::<Pkcs11Error>()
                .is_some_and(|e| !matches!(e, Pkcs11Error::Device(_)))
        });
        if hsm_config {
            return CliError::Usage(format!("{e:#}"));
        }
        CliError::Failed(e)
    }
}

impl From<Pkcs11Error> for CliError {
    fn from(e: Pkcs11Error) -> CliError {
        CliError::from(anyhow::Error::from(e))
    }
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => EXIT_USAGE,
            CliError::Locked(_) => EXIT_LOCKED,
            CliError::Unreadable(_) => 2,
            CliError::Unpinned(_) => EXIT_UNPINNED,
            CliError::TrailBroken(_) | CliError::Failed(_) | CliError::Answer(_) => 1,
        }
    }
}

impl From<crate::load::UsageError> for CliError {
    fn from(e: crate::load::UsageError) -> CliError {
        CliError::Usage(e.0)
    }
}

/// What every subcommand returns.
pub type CliResult = Result<(), CliError>;
