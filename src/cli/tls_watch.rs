//! `[api] tls_check_s`: the running vault notices that its TLS files
//! changed on disk and asks `serve` for the same reload as SIGHUP. The files
//! are read and hashed (SHA-256 over each path and its content), never
//! logged; a change is acted on only once the next check sees the same
//! content, so a certificate and key replaced one after the other are
//! reloaded together, not half-way.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::config::ApiConfig;

/// What the API's TLS files held when last loaded.
pub struct TlsFiles {
    every: Option<Duration>,
    files: Vec<PathBuf>,
    loaded: [u8; 32],
    seen: [u8; 32],
}

impl TlsFiles {
    /// Watches `api`'s files as they are now (the ones just loaded).
    pub fn new(api: &ApiConfig) -> TlsFiles {
        let files = files(api);
        let now = digest(&files);
        TlsFiles {
            every: (api.tls_check_s > 0).then(|| Duration::from_secs(api.tls_check_s)),
            files,
            loaded: now,
            seen: now,
        }
    }

    /// Returns once the files have changed and held still for one check;
    /// never when checks are off.
    pub async fn changed(&mut self) {
        let Some(every) = self.every else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(every).await;
            let files = self.files.clone();
            let now = tokio::task::spawn_blocking(move || digest(&files))
                .await
                .unwrap_or(self.seen);
            let settled = now == self.seen;
            self.seen = now;
            if settled && now != self.loaded {
                return;
            }
        }
    }

    /// After a reload (whatever its outcome): watch `api`'s files from
    /// what they hold now, so a bad file is not reloaded again until it
    /// changes.
    pub fn reloaded(&mut self, api: &ApiConfig) {
        *self = TlsFiles::new(api);
    }
}

fn files(api: &ApiConfig) -> Vec<PathBuf> {
    let mut files = vec![api.cert.clone(), api.key.clone(), api.client_ca.clone()];
    files.extend(api.crls.iter().cloned());
    files
}

/// One hash over every file's path and content (or that it could not be
/// read, and why, by kind).
fn digest(files: &[PathBuf]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for path in files {
        hash.update(path.as_os_str().as_encoded_bytes());
        hash.update([0]);
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                hash.update((bytes.len() as u64).to_le_bytes());
                hash.update(&bytes);
            }
            Err(e) => hash.update(format!("unreadable: {:?}", e.kind()).as_bytes()),
        }
    }
    hash.finalize().into()
}
