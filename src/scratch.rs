//! A private scratch directory: under the system's temporary directory,
//! a random name, mode 0700, removed with everything in it when dropped
//! (a trail copied for evidence, a browser's throw-away profile).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

/// The directory; removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `TMPDIR/PREFIX-<16 hex digits>` (mode 0700).
    pub fn new(prefix: &str) -> std::io::Result<ScratchDir> {
        let mut random = [0u8; 8];
        crate::random::fill(&mut random).map_err(std::io::Error::other)?;
        let path = std::env::temp_dir().join(format!("{prefix}-{}", hex::encode(random)));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(ScratchDir(path))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
