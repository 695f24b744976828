//! Build facts for `cardvault version` and `cardvault_build_info`: the git
//! commit (when built from a checkout), the compiler's version and the
//! build date. Nothing here touches the network or the source.

use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit =
        output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    let date = output("date", &["-u", "+%Y-%m-%d"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CARDVAULT_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=CARDVAULT_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=CARDVAULT_BUILD_DATE={date}");
    // A new commit moves HEAD or the branch it names.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=build.rs");
}
