//! Is this build affected by a known advisory? The `Cargo.lock` the binary
//! was built from is compiled in; a RustSec advisory database snapshot (a
//! directory, no network) is matched against it by the `rustsec` crate.
//! Used by `cardvault version --check` and, with `[supply_chain]
//! advisory_db`, by the running vault (`cardvault_known_vulnerabilities`).
//! The lockfile lists every package the build could use (dev-only ones
//! too): a superset of what is compiled in.

use std::path::Path;
use std::str::FromStr;

/// The lockfile this binary was built from.
const LOCKFILE: &str = include_str!("../Cargo.lock");

/// One advisory that affects a locked package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `RUSTSEC-YYYY-NNNN`.
    pub id: String,
    /// The affected package.
    pub package: String,
    /// Its locked version.
    pub version: String,
    /// The advisory's title.
    pub title: String,
}

/// Why the question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SupplyChainError {
    /// The database path is not an advisory database, or does not parse.
    #[error("{0}")]
    Database(String),
    /// The embedded lockfile does not parse (a build defect).
    #[error("the embedded Cargo.lock does not parse: {0}")]
    Lockfile(String),
}

/// How many packages the embedded lockfile locks.
pub fn locked_packages() -> Result<usize, SupplyChainError> {
    Ok(lockfile()?.packages.len())
}

fn lockfile() -> Result<rustsec::Lockfile, SupplyChainError> {
    rustsec::Lockfile::from_str(LOCKFILE).map_err(|e| SupplyChainError::Lockfile(e.to_string()))
}

/// The advisories of `db` (withdrawn and informational ones left out) that
/// affect a locked package.
pub fn known_vulnerabilities(db: &Path) -> Result<Vec<Finding>, SupplyChainError> {
    if !db.join("crates").is_dir() {
        return Err(SupplyChainError::Database(format!(
            "{} is not a RustSec advisory database (no crates/ directory)",
            db.display()
        )));
    }
    let database = rustsec::Database::open(db).map_err(|e| {
        SupplyChainError::Database(format!("advisory database {}: {e}", db.display()))
    })?;
    Ok(database
        .vulnerabilities(&lockfile()?)
        .iter()
        .map(|v| Finding {
            id: v.advisory.id.as_str().to_owned(),
            package: v.package.name.as_str().to_owned(),
            version: v.package.version.to_string(),
            title: v.advisory.title.clone(),
        })
        .collect())
}
