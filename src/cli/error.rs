//! The command line's one error type and its exit statuses: usage and
//! config errors exit 64 (`EX_USAGE`), a broken audit trail and every other
//! failure exit 1.

/// Exit status for command-line usage errors (sysexits.h `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

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
    /// Anything else (exit 1).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => EXIT_USAGE,
            CliError::TrailBroken(_) | CliError::Failed(_) => 1,
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
