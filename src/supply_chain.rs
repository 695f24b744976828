//! What this build is made of, and is it affected by a known advisory?
//!
//! The dependency list comes from the binary itself when it was built with
//! `cargo auditable` (the exact packages compiled in, in the format `cargo
//! audit bin` reads); otherwise from the build graph `build.rs` recorded
//! (`cargo metadata` for this target and features, normal and build
//! dependencies only); and only if that could not be read, from the
//! `Cargo.lock` compiled in (every package the build could use, dev-only and
//! other platforms' too: a superset). A RustSec
//! advisory database snapshot (a directory, no network) is matched against
//! it by the `rustsec` crate. Used by `cardvault version` (`--check`,
//! `--sbom`), the evidence bundle and, with `[supply_chain] advisory_db`,
//! the running vault (`cardvault_known_vulnerabilities`).

use std::path::Path;
use std::str::FromStr;

/// The lockfile this binary was built from.
const LOCKFILE: &str = include_str!("../Cargo.lock");

/// `name version` lines of what this build compiles in (by `build.rs`;
/// empty if `cargo metadata` could not be run).
const COMPILED: &str = include_str!(concat!(env!("OUT_DIR"), "/compiled-deps.txt"));

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

/// Where the dependency list was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencySource {
    /// The binary's own `cargo auditable` data: exactly what is compiled in.
    Auditable,
    /// The resolved build graph `build.rs` recorded: what this target and
    /// these features compile in.
    BuildGraph,
    /// The `Cargo.lock` compiled in: a superset.
    Lockfile,
}

impl DependencySource {
    /// `cargo-auditable` or `Cargo.lock`.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencySource::Auditable => "cargo-auditable",
            DependencySource::BuildGraph => "build graph",
            DependencySource::Lockfile => "Cargo.lock",
        }
    }
}

/// The packages of this build.
pub struct Dependencies {
    /// As a lockfile (name, version, source, checksum, dependencies).
    pub lockfile: rustsec::Lockfile,
    /// Where they were read.
    pub source: DependencySource,
}

/// The packages of this build: the binary's `cargo auditable` data when it
/// has some, else the compiled-in `Cargo.lock`.
pub fn dependencies() -> Result<Dependencies, SupplyChainError> {
    use rustsec::binary_scanning::{BinaryReport, load_deps_from_binary};
    let embedded = std::env::current_exe()
        .and_then(std::fs::read)
        .ok()
        .and_then(|bytes| load_deps_from_binary(&bytes, None).ok());
    if let Some((_, BinaryReport::Complete(lockfile))) = embedded {
        return Ok(Dependencies {
            lockfile,
            source: DependencySource::Auditable,
        });
    }
    let mut lockfile = lockfile()?;
    let compiled: std::collections::HashSet<(&str, &str)> =
        COMPILED.lines().filter_map(|l| l.split_once(' ')).collect();
    if compiled.is_empty() {
        return Ok(Dependencies {
            lockfile,
            source: DependencySource::Lockfile,
        });
    }
    lockfile
        .packages
        .retain(|p| compiled.contains(&(p.name.as_str(), p.version.to_string().as_str())));
    Ok(Dependencies {
        lockfile,
        source: DependencySource::BuildGraph,
    })
}

fn lockfile() -> Result<rustsec::Lockfile, SupplyChainError> {
    rustsec::Lockfile::from_str(LOCKFILE).map_err(|e| SupplyChainError::Lockfile(e.to_string()))
}

/// The package URL of a crate (`pkg:cargo/NAME@VERSION`).
fn purl(name: &str, version: &str) -> String {
    format!("pkg:cargo/{name}@{version}")
}

/// A CycloneDX 1.5 SBOM (JSON) of this build: every package of
/// [`dependencies`] but the vault itself as a component (with its
/// package URL and, from `Cargo.lock`, its SHA-256), the vault as the
/// described application, and the dependency graph.
pub fn sbom(facts: &serde_json::Value) -> Result<serde_json::Value, SupplyChainError> {
    use serde_json::json;
    let deps = dependencies()?;
    let checksums: std::collections::HashMap<(String, String), String> = lockfile()?
        .packages
        .iter()
        .filter_map(|p| {
            let sum = p.checksum.as_ref()?.to_string();
            Some(((p.name.to_string(), p.version.to_string()), sum))
        })
        .collect();
    let root = env!("CARGO_PKG_NAME");
    let root_ref = purl(root, env!("CARGO_PKG_VERSION"));
    let present: std::collections::HashSet<(String, String)> = deps
        .lockfile
        .packages
        .iter()
        .map(|p| (p.name.to_string(), p.version.to_string()))
        .collect();
    let mut components = Vec::new();
    let mut graph = Vec::new();
    for p in &deps.lockfile.packages {
        let (name, version) = (p.name.to_string(), p.version.to_string());
        let reference = if name == root {
            root_ref.clone()
        } else {
            purl(&name, &version)
        };
        // Only packages of this build: a lockfile edge to a crate of
        // another platform (or a dev-dependency) is no edge here.
        let depends_on: Vec<String> = p
            .dependencies
            .iter()
            .filter(|d| present.contains(&(d.name.to_string(), d.version.to_string())))
            .map(|d| purl(d.name.as_str(), &d.version.to_string()))
            .collect();
        graph.push(json!({"ref": reference, "dependsOn": depends_on}));
        if name == root {
            continue;
        }
        let mut component = json!({
            "type": "library",
            "bom-ref": reference,
            "name": name,
            "version": version,
            "purl": reference,
        });
        if let Some(sum) = checksums.get(&(name, version)) {
            component["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
        }
        components.push(component);
    }
    let mut uuid = [0u8; 16];
    crate::random::fill(&mut uuid).map_err(|e| SupplyChainError::Lockfile(e.to_string()))?;
    uuid[6] = (uuid[6] & 0x0F) | 0x40;
    uuid[8] = (uuid[8] & 0x3F) | 0x80;
    let h = hex::encode(uuid);
    let serial = format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "tools": {"components": [{"type": "application", "name": root, "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "type": "application",
                "bom-ref": root_ref,
                "name": root,
                "version": env!("CARGO_PKG_VERSION"),
                "purl": root_ref,
                "licenses": [{"license": {"id": "Apache-2.0"}}],
            },
            "properties": [
                {"name": "cardvault:commit", "value": facts["commit"]},
                {"name": "cardvault:rustc", "value": facts["rustc"]},
                {"name": "cardvault:dependency_source", "value": deps.source.as_str()},
            ],
        },
        "components": components,
        "dependencies": graph,
    }))
}

/// How many advisories the database at `db` holds and the date of the
/// newest: what "no advisory matched" is worth (a stale snapshot proves
/// little).
pub fn database_span(db: &Path) -> Result<(usize, Option<String>), SupplyChainError> {
    let database = rustsec::Database::open(db).map_err(|e| {
        SupplyChainError::Database(format!("advisory database {}: {e}", db.display()))
    })?;
    let newest = database.iter().map(|a| a.metadata.date.to_string()).max();
    Ok((database.iter().count(), newest))
}

/// The advisories of `db` (withdrawn and informational ones left out) that
/// affect a locked package.
pub fn known_vulnerabilities(
    db: &Path,
    deps: &Dependencies,
) -> Result<Vec<Finding>, SupplyChainError> {
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
        .vulnerabilities(&deps.lockfile)
        .iter()
        .map(|v| Finding {
            id: v.advisory.id.as_str().to_owned(),
            package: v.package.name.as_str().to_owned(),
            version: v.package.version.to_string(),
            title: v.advisory.title.clone(),
        })
        .collect())
}
