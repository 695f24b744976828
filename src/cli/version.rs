//! `cardvault version`: what this build is (version, git commit, build
//! date, compiler, how many packages it compiles in and where that list
//! came from — one line; `--deps` lists them) and, with `--check --db DIR`, whether it is the latest
//! *secure* version — yes (exit 0) or no (exit 1, listing the advisories;
//! see [`crate::supply_chain`]). A database that cannot be read exits 2.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::error::{CliError, CliResult};
use crate::supply_chain::{self, SupplyChainError};

/// Arguments of `version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// List every package compiled in (name and version), after the
    /// summary line (with `--json`: a `packages` array).
    #[arg(long, conflicts_with = "check")]
    deps: bool,
    /// Answer yes or no: is any crate of this build affected by a known
    /// advisory in the database `--db`?
    #[arg(long, requires = "db")]
    check: bool,
    /// A RustSec advisory database directory (a snapshot of
    /// github.com/rustsec/advisory-db).
    #[arg(long, value_name = "DIR")]
    db: Option<PathBuf>,
    /// Write a CycloneDX 1.5 SBOM (JSON) of this build to FILE (`-`:
    /// standard output).
    #[arg(long, value_name = "FILE", conflicts_with = "check")]
    sbom: Option<PathBuf>,
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
    if let Some(path) = &args.sbom {
        let sbom = supply_chain::sbom(&report).map_err(unreadable)?;
        let text = serde_json::to_string_pretty(&sbom).context("encoding the SBOM")? + "\n";
        if path.as_os_str() == "-" {
            say_raw!("{text}");
        } else {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    let deps = supply_chain::dependencies().map_err(unreadable)?;
    let packages: Vec<(String, String)> = deps
        .lockfile
        .packages
        .iter()
        .map(|p| (p.name.to_string(), p.version.to_string()))
        .collect();
    report["dependencies"] = packages.len().into();
    report["dependency_source"] = deps.source.as_str().into();
    if !args.check {
        if args.json {
            if args.deps {
                report["packages"] = packages
                    .iter()
                    .map(|(name, version)| serde_json::json!({"name": name, "version": version}))
                    .collect();
            }
            say!("{report}");
        } else {
            say!(
                "cardvault {} (commit {}, built {} with {}); {} dependencies compiled in ({}){}",
                env!("CARGO_PKG_VERSION"),
                env!("CARDVAULT_GIT_COMMIT"),
                env!("CARDVAULT_BUILD_DATE"),
                env!("CARDVAULT_RUSTC_VERSION"),
                packages.len(),
                deps.source.as_str(),
                if args.deps { ":" } else { "" },
            );
            if args.deps {
                for (name, version) in &packages {
                    say!("  {name} {version}");
                }
            }
        }
        return Ok(());
    }
    let found = supply_chain::known_vulnerabilities(&args.db.unwrap_or_default(), &deps)
        .map_err(unreadable)?;
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
