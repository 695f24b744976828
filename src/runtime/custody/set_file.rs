//! The share set's public description pinned beside the data (set id,
//! threshold, share count, check value; the current set and, during a KEK
//! rotation, the next), so shares of any other split are refused; and
//! writing a fresh split's share files.

use super::*;

/// One share set as the set file records it: public facts only.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRecord {
    set: String,
    threshold: u8,
    shares: u8,
    check: String,
}

impl SetRecord {
    fn of(set: &ShareSet) -> SetRecord {
        SetRecord {
            set: set.id_hex(),
            threshold: set.threshold,
            shares: set.count,
            check: hex::encode(set.check),
        }
    }

    fn parse(&self) -> Option<ShareSet> {
        let mut id = [0u8; 8];
        let mut check = [0u8; 32];
        hex::decode_to_slice(&self.set, &mut id).ok()?;
        hex::decode_to_slice(&self.check, &mut check).ok()?;
        Some(ShareSet {
            id,
            threshold: self.threshold,
            count: self.shares,
            check,
        })
    }
}

/// The set file's contents: the set the keys are wrapped under, and the
/// set a KEK rotation is moving to.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    format: String,
    #[serde(flatten)]
    current: SetRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<SetRecord>,
}

/// The share sets a sealed vault accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Pinned {
    pub(super) current: Option<ShareSet>,
    pub(super) next: Option<ShareSet>,
}

impl Pinned {
    pub(super) fn accepted(&self) -> Vec<ShareSet> {
        self.current.iter().chain(&self.next).cloned().collect()
    }
}

pub(super) fn read_set_file(path: &Path) -> anyhow::Result<Pinned> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pinned::default()),
        Err(e) => return Err(anyhow::anyhow!("kek set file {}: {e}", path.display())),
    };
    let bad = || anyhow::anyhow!("kek set file {} is malformed", path.display());
    let file: SetFile = serde_json::from_str(&text).map_err(|_| bad())?;
    if file.format != SET_FORMAT {
        return Err(bad());
    }
    let next = match &file.next {
        Some(next) => Some(next.parse().ok_or_else(bad)?),
        None => None,
    };
    Ok(Pinned {
        current: Some(file.current.parse().ok_or_else(bad)?),
        next,
    })
}

pub(super) fn write_set_file(path: &Path, pinned: &Pinned) -> std::io::Result<()> {
    let Some(current) = &pinned.current else {
        return Ok(());
    };
    let file = SetFile {
        format: SET_FORMAT.to_owned(),
        current: SetRecord::of(current),
        next: pinned.next.as_ref().map(SetRecord::of),
    };
    let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n")?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Draws a KEK, splits it, writes one share file per custodian in `dir`
/// (created 0700; files mode 0600, never overwriting, synced) and returns
/// the shares' set with the KEK as a provider (for a rotation), or drops
/// the KEK (`keys init`: pass the result's provider to nothing).
pub fn write_shares(
    dir: &Path,
    threshold: u8,
    names: &[String],
) -> anyhow::Result<(ShareSet, SharedKek)> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let kek = crate::crypto::SecretKey::generate()?;
    let split = crate::crypto::shares::split(&kek, threshold, names)?;
    let set = split
        .first()
        .map(|s| s.set.clone())
        .ok_or_else(|| anyhow::anyhow!("no shares"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    for share in &split {
        let path = dir.join(format!("{}.share", share.custodian));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                anyhow::anyhow!(
                    "creating {} (refusing to overwrite a share): {e}",
                    path.display()
                )
            })?;
        file.write_all(share.to_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| anyhow::anyhow!("syncing {}: {e}", dir.display()))?;
    let provider = SharedKek::new(&kek, set.clone());
    Ok((set, provider))
}
