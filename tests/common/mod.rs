//! Helpers shared by the integration tests: synthetic Luhn-valid PANs, a
//! vault in a temp dir with a real key file, and a scanner that looks for a
//! byte string in every file under a directory.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cardvault::crypto::KeyFileProvider;
use cardvault::domain::luhn;
use cardvault::{Pan, Vault, VaultOptions};

/// Appends the Luhn check digit to `body`.
pub fn luhn_complete(body: &str) -> String {
    (b'0'..=b'9')
        .map(|d| format!("{body}{}", char::from(d)))
        .find(|s| luhn::passes(s.as_bytes()))
        .expect("one check digit always fits")
}

/// The `i`-th synthetic 16-digit Visa-range PAN (distinct for distinct `i`).
pub fn synthetic_pan(i: u64) -> Pan {
    Pan::parse(&luhn_complete(&format!("49{i:013}"))).expect("valid synthetic PAN")
}

/// A temp dir holding `kek.key` and `db/`.
pub struct TestVaultDir {
    pub dir: tempfile::TempDir,
}

impl TestVaultDir {
    pub fn new() -> TestVaultDir {
        let dir = tempfile::tempdir().expect("temp dir");
        KeyFileProvider::create(&dir.path().join("kek.key")).expect("key file");
        TestVaultDir { dir }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    pub fn open(&self) -> Vault {
        self.open_with(VaultOptions::default())
    }

    pub fn open_with(&self, options: VaultOptions) -> Vault {
        let provider =
            KeyFileProvider::open(&self.dir.path().join("kek.key")).expect("open key file");
        Vault::open(&self.db_path(), Arc::new(provider), options).expect("open vault")
    }
}

/// Every file under `root` (recursively) whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut scanned = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                scanned += 1;
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(path);
                }
            }
        }
    }
    assert!(scanned > 0, "nothing scanned under {}", root.display());
    hits
}
