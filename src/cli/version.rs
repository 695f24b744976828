//! `cardvault version`: what this build is (version, git commit, build
//! date, compiler) and, with `--check --db DIR`, whether it is the latest
//! *secure* version — yes (exit 0) or no (exit 1, listing the advisories) —
//! by matching the `Cargo.lock` compiled into the binary against a RustSec
//! advisory database snapshot (the `rustsec` crate parses it; no network).
//! A database that cannot be read exits 2. The lockfile lists every
//! package the build could use (dev-only ones too): a superset of what is
//! compiled in, so a "no" may name a crate the binary does not contain.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

use super::error::{CliError, CliResult};

/// The lockfile this binary was built from.
const LOCKFILE: &str = include_str!("../../Cargo.lock");

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
    let mut report = facts();
    let lockfile = rustsec::Lockfile::from_str(LOCKFILE)
        .map_err(|e| anyhow::anyhow!("the embedded Cargo.lock does not parse: {e}"))?;
    report["dependencies"] = lockfile.packages.len().into();
    if !args.check {
        if args.json {
            say!("{report}");
        } else {
            say!(
                "cardvault {} (commit {}, built {} with {}), {} locked dependencies",
                env!("CARGO_PKG_VERSION"),
                env!("CARDVAULT_GIT_COMMIT"),
                env!("CARDVAULT_BUILD_DATE"),
                env!("CARDVAULT_RUSTC_VERSION"),
                lockfile.packages.len()
            );
        }
        return Ok(());
    }
    let db = args.db.unwrap_or_default();
    if !db.join("crates").is_dir() {
        return Err(CliError::Unreadable(format!(
            "{} is not a RustSec advisory database (no crates/ directory)",
            db.display()
        )));
    }
    let database = rustsec::Database::open(&db)
        .map_err(|e| CliError::Unreadable(format!("advisory database {}: {e}", db.display())))?;
    let found = database.vulnerabilities(&lockfile);
    let advisories: Vec<serde_json::Value> = found
        .iter()
        .map(|v| {
            serde_json::json!({
                "id": v.advisory.id.as_str(),
                "package": v.package.name.as_str(),
                "version": v.package.version.to_string(),
                "title": v.advisory.title,
            })
        })
        .collect();
    let secure = advisories.is_empty();
    report["secure"] = secure.into();
    report["advisories"] = advisories.clone().into();
    if args.json {
        say!("{report}");
    } else if secure {
        say!("yes");
    } else {
        say!("no");
        for a in &advisories {
            say!(
                "  {} {} {}: {}",
                a["id"].as_str().unwrap_or(""),
                a["package"].as_str().unwrap_or(""),
                a["version"].as_str().unwrap_or(""),
                a["title"].as_str().unwrap_or("")
            );
        }
    }
    if secure {
        Ok(())
    } else {
        Err(CliError::Answer(format!(
            "{} known advisories affect this build",
            advisories.len()
        )))
    }
}
