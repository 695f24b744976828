//! The walk: every regular file under the given paths (symbolic links are
//! not followed), minus `--exclude` globs, each read through
//! [`super::source`] — `.gz` files decompressed as a stream, binary files
//! skipped unless asked for, files above the size limit skipped and
//! counted. An unreadable file is recorded and the walk goes on.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::source::{self, Encoding, Located};

/// What to walk and how.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Files larger than this are skipped (for `.gz`, the decompressed
    /// content stops here and the file is reported as truncated).
    pub max_file_size: u64,
    /// Scan files that look binary too.
    pub include_binary: bool,
    /// Globs matched against each path and each file name.
    pub exclude: Vec<String>,
}

/// Why a file was not scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// NUL bytes that are not UTF-16.
    Binary,
    /// Above `max_file_size`.
    TooLarge,
}

/// What happened to one file.
#[derive(Debug)]
pub enum FileOutcome {
    /// Scanned: content bytes and whether a size limit cut it short.
    Scanned(source::Scanned),
    /// Not scanned, and why.
    Skipped(Skip),
    /// Could not be read; the message names no content.
    Failed(String),
}

/// Builds the exclude set; a bad glob is a usage error.
pub fn exclude_set(globs: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob).map_err(|e| format!("--exclude {glob:?}: {e}"))?);
    }
    builder.build().map_err(|e| format!("--exclude: {e}"))
}

fn excluded(set: &GlobSet, path: &Path) -> bool {
    set.is_match(path) || path.file_name().is_some_and(|name| set.is_match(name))
}

/// Walks `roots` and calls `file` once per regular file (after excludes),
/// in a stable order; `failed` gets paths the walk itself could not read.
pub fn walk(
    roots: &[PathBuf],
    excludes: &GlobSet,
    mut file: impl FnMut(&Path),
    mut failed: impl FnMut(&Path, String),
) {
    for root in roots {
        let entries = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| entry.depth() == 0 || !excluded(excludes, entry.path()));
        for entry in entries {
            match entry {
                Ok(entry) if entry.file_type().is_file() => {
                    if !excluded(excludes, entry.path()) {
                        file(entry.path());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    let why = e
                        .io_error()
                        .map_or_else(|| e.to_string(), std::string::ToString::to_string);
                    failed(&path, why);
                }
            }
        }
    }
}

/// Scans one file, calling `each` for every finding.
pub fn scan_file(path: &Path, options: &WalkOptions, each: impl FnMut(Located)) -> FileOutcome {
    match try_scan_file(path, options, each) {
        Ok(outcome) => outcome,
        Err(e) => FileOutcome::Failed(e.to_string()),
    }
}

fn try_scan_file(
    path: &Path,
    options: &WalkOptions,
    each: impl FnMut(Located),
) -> std::io::Result<FileOutcome> {
    let file = File::open(path)?;
    if file.metadata()?.len() > options.max_file_size {
        return Ok(FileOutcome::Skipped(Skip::TooLarge));
    }
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let mut magic = [0u8; 2];
    let got = read_head(&mut reader, &mut magic)?;
    let rest = std::io::Cursor::new(magic[..got].to_vec()).chain(reader);
    let content: Box<dyn Read> = if magic[..got] == [0x1F, 0x8B] {
        Box::new(flate2::read::MultiGzDecoder::new(rest))
    } else {
        Box::new(rest)
    };
    let (encoding, content) = source::peek(content)?;
    if encoding == Encoding::Binary && !options.include_binary {
        return Ok(FileOutcome::Skipped(Skip::Binary));
    }
    let scanned = source::scan_stream(content, encoding, options.max_file_size, each)?;
    Ok(FileOutcome::Scanned(scanned))
}

fn read_head(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
