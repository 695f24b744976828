//! `cardvault version`: what this build is (version, git commit, build
//! date, compiler) and, with `--check --db DIR`, whether it is the latest
//! *secure* version — yes (exit 0) or no (exit 1, listing the advisories;
//! see [`crate::supply_chain`]). A database that cannot be read exits 2.

use std::path::PathBuf;

use clap::Args;

use super::error::{CliError, CliResult};
use crate::supply_chain::{self, SupplyChainError};

/// Arguments of `version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Answer yes or no: is any crate of this build affected by a known
    /// advisory in the database `--db`?
    #[arg(long, requires = "db")]
    check: bool,
    /// A RustSec advisory database directory (a snapshot of
    /// github.com/rustsec/advisory-db).
    #[arg(long, value_name = "DIR")]
    db: Option<PathBuf>,
}

/// The build's facts.
pub fn facts() -> serde_json::Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("CARDVAULT_GIT_COMMIT"),
        "build_date": env!("CARDVAULT_BUILD_DATE"),
        "rustc": env!("CARDVAULT_RUSTC_VERSION"),
    })
}

/// Runs `version`.
pub fn run(args: VersionArgs) -> CliResult {
    let unreadable = |e: SupplyChainError| match e {
        SupplyChainError::Database(why) => CliError::Unreadable(why),
        other => CliError::Failed(other.into()),
    };
    let mut report = facts();
    let locked = supply_chain::locked_packages().map_err(unreadable)?;
    report["dependencies"] = locked.into();
    if !args.check {
        if args.json {
            say!("{report}");
        } else {
            say!(
                "cardvault {} (commit {}, built {} with {}), {locked} locked dependencies",
                env!("CARGO_PKG_VERSION"),
                env!("CARDVAULT_GIT_COMMIT"),
                env!("CARDVAULT_BUILD_DATE"),
                env!("CARDVAULT_RUSTC_VERSION"),
            );
        }
        return Ok(());
    }
    let found =
        supply_chain::known_vulnerabilities(&args.db.unwrap_or_default()).map_err(unreadable)?;
    let secure = found.is_empty();
    report["secure"] = secure.into();
    report["advisories"] = serde_json::to_value(&found).unwrap_or_default();
    if args.json {
        say!("{report}");
    } else if secure {
        say!("yes");
    } else {
        say!("no");
        for f in &found {
            say!("  {} {} {}: {}", f.id, f.package, f.version, f.title);
        }
    }
    if secure {
        Ok(())
    } else {
        Err(CliError::Answer(format!(
            "{} known advisories affect this build",
            found.len()
        )))
    }
}
