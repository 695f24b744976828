//! `cardvault copy-secrets --from DIR --to DIR [--every SECONDS]`: copies
//! the files of a mounted secret (a Kubernetes Secret volume: root-owned,
//! group-readable, updated in place by the kubelet) into a directory of the
//! vault's own as files it owns with mode 0600, which is what the vault
//! requires of its keys. Run once (an init container), or every SECONDS as
//! a sidecar so a rotated key reaches the vault (`[api] tls_check_s`
//! notices it) without a restart. Each file is replaced by a rename, never
//! rewritten in place; a file is copied only when its content changed (a
//! file removed from the secret stays as last copied). Names, never
//! contents, are printed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use zeroize::Zeroizing;

use super::error::{CliError, CliResult};

/// Files in a secret, at most.
const MAX_FILES: usize = 64;
/// Bytes per file, at most (keys, PINs, passwords, certificate chains).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// `copy-secrets`.
#[derive(Debug, Args)]
pub struct CopySecretsArgs {
    /// The mounted secret (its files; names starting with `.`, the
    /// kubelet's own, are skipped).
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The directory to copy into (a memory-backed volume).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Keep running and copy again every this many seconds (until SIGTERM).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    every: Option<u64>,
}

/// Runs `copy-secrets`.
pub async fn run(args: CopySecretsArgs) -> CliResult {
    let copy = || {
        let (from, to) = (args.from.clone(), args.to.clone());
        async move {
            tokio::task::spawn_blocking(move || copy_all(&from, &to))
                .await
                .map_err(|e| CliError::Failed(e.into()))?
        }
    };
    let copied = copy().await?;
    say(&copied);
    let Some(every) = args.every else {
        return Ok(());
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Failed(e.into()))?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(every)) => {}
        }
        // A secret being updated may be half-way: say so and try again.
        match copy().await {
            Ok(copied) => say(&copied),
            Err(e) => eprintln!("copy-secrets: {e} (trying again in {every} s)"),
        }
    }
}

fn say(copied: &[String]) {
    for name in copied {
        println!("copy-secrets: {name} updated");
    }
}

/// Copies every changed file of `from` into `to`; returns their names.
fn copy_all(from: &Path, to: &Path) -> Result<Vec<String>, CliError> {
    let unreadable = |path: &Path, why: String| {
        CliError::Unreadable(format!("copy-secrets: {}: {why}", path.display()))
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(from).map_err(|e| unreadable(from, e.to_string()))? {
        let entry = entry.map_err(|e| unreadable(from, e.to_string()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(unreadable(from, "a file name that is not UTF-8".into()));
        };
        if name.starts_with('.') {
            continue;
        }
        // The kubelet's files are symbolic links into its `..data`.
        let meta = std::fs::metadata(entry.path())
            .map_err(|e| unreadable(&entry.path(), e.to_string()))?;
        if meta.is_file() {
            names.push(name);
            if names.len() > MAX_FILES {
                return Err(unreadable(from, format!("more than {MAX_FILES} files")));
            }
        }
    }
    names.sort();
    let mut copied = Vec::new();
    for name in names {
        let source = from.join(&name);
        let bytes = read_bounded(&source).map_err(|why| unreadable(&source, why))?;
        let target = to.join(&name);
        let same = read_bounded(&target).is_ok_and(|held| held == bytes);
        let private = std::fs::metadata(&target)
            .map(|m| m.permissions().mode() & 0o777 == 0o600)
            .unwrap_or(false);
        if same && private {
            continue;
        }
        crate::private_file::replace(&target, &bytes)
            .map_err(|e| unreadable(&target, e.to_string()))?;
        copied.push(name);
    }
    Ok(copied)
}

/// The file's bytes, refusing more than [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}
