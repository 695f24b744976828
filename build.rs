//! Build facts for `cardvault version` and `cardvault_build_info`: the git
//! commit (when built from a checkout), the compiler's version, the build
//! date, and the packages this build compiles in — `cargo metadata`'s
//! resolved graph for this target, walked from the crate through normal and
//! build dependencies only (no dev-dependencies, no other platform's
//! crates), written to `OUT_DIR/compiled-deps.txt` as `name version`
//! lines. Nothing here touches the network (`--offline`) or the source.

use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    // An image build has no .git: it passes the commit in
    // (`--build-arg CARDVAULT_COMMIT=…`, deploy/Containerfile).
    println!("cargo:rerun-if-env-changed=CARDVAULT_COMMIT");
    let commit = std::env::var("CARDVAULT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c != "unknown")
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    let date = output("date", &["-u", "+%Y-%m-%d"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CARDVAULT_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=CARDVAULT_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=CARDVAULT_BUILD_DATE={date}");
    write_compiled_deps();
    // A new commit moves HEAD or the branch it names.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=Cargo.toml");
}

/// The resolved graph of this build, or nothing (then `version` falls back
/// to the whole `Cargo.lock` and says so).
fn write_compiled_deps() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let file = out.join("compiled-deps.txt");
    let list = compiled_deps().unwrap_or_default();
    let _ = std::fs::write(file, list);
}

fn compiled_deps() -> Option<String> {
    let cargo = std::env::var("CARGO").ok()?;
    let target = std::env::var("TARGET").ok()?;
    let manifest = std::env::var("CARGO_MANIFEST_DIR").ok()? + "/Cargo.toml";
    // The crate's enabled features, as cargo passes them to build scripts.
    let features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_owned))
        .map(|f| f.to_lowercase().replace('_', "-"))
        .collect();
    let mut args = vec![
        "metadata".to_owned(),
        "--format-version=1".into(),
        "--offline".into(),
        "--locked".into(),
        "--no-default-features".into(),
        "--filter-platform".into(),
        target,
        "--manifest-path".into(),
        manifest,
    ];
    if !features.is_empty() {
        args.push("--features".into());
        args.push(features.join(","));
    }
    let out = Command::new(cargo)
        .args(&args)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let root = meta["resolve"]["root"].as_str()?.to_owned();
    let nodes: std::collections::HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let packages: std::collections::HashMap<&str, (&str, &str)> = meta["packages"]
        .as_array()?
        .iter()
        .filter_map(|p| {
            Some((
                p["id"].as_str()?,
                (p["name"].as_str()?, p["version"].as_str()?),
            ))
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![root.as_str()];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes.get(id)?["deps"].as_array()? {
            let compiled = dep["dep_kinds"].as_array().is_some_and(|kinds| {
                kinds
                    .iter()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build")
            });
            if compiled && let Some(pkg) = dep["pkg"].as_str() {
                stack.push(pkg);
            }
        }
    }
    let mut lines: Vec<String> = seen
        .iter()
        .filter_map(|id| packages.get(id))
        .map(|(name, version)| format!("{name} {version}\n"))
        .collect();
    lines.sort();
    lines.dedup();
    Some(lines.concat())
}
