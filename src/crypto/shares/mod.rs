//! M-of-N custodian shares of the KEK (Shamir's secret sharing over
//! GF(256), by the `blahaj` crate — no field arithmetic here). This module
//! splits a KEK into share files, parses a share file a custodian hands in
//! (a mistyped or truncated one fails its checksum before it is used), and
//! combines shares into the KEK, checked against the set's check value
//! (HMAC-SHA-256 of a fixed label under the KEK — never the key). Pure: no
//! I/O, fuzzed (`fuzz_targets/kek_share.rs`).
//!
//! A share file is text a custodian can print:
//!
//! ```text
//! # cardvault KEK share ...
//! format: cardvault-kek-share-v1
//! set: 0123456789abcdef
//! share: 2 of 3
//! threshold: 2
//! custodian: custodian-2
//! check: <64 hex digits>
//! data: <66 hex digits: x, then 32 bytes of y>
//! checksum: <16 hex digits: SHA-256 of the lines above, first 8 bytes>
//! ```

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::Guarded;
use super::hierarchy::{KEY_LEN, KeyError, KeyLabel, KeyProvider, SecretKey};
use super::wrap::AesKek;

/// First line (after comments) of every share file.
pub const SHARE_FORMAT: &str = "cardvault-kek-share-v1";
/// Fewest shares a set may need: one would be no split at all.
pub const MIN_THRESHOLD: u8 = 2;
/// Most shares one set may have.
pub const MAX_SHARES: u8 = 64;
/// Longest share file accepted.
pub const MAX_SHARE_FILE_BYTES: usize = 4096;
/// Bytes of one share's data: its x coordinate and one y byte per key byte.
const SHARE_DATA_LEN: usize = 1 + KEY_LEN;
const CHECK_LABEL: &[u8] = b"cardvault-kek-check-v1";

/// What identifies a share set, without any secret: the set id, its
/// threshold and size, and the KEK's check value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSet {
    /// Random id drawn when the KEK was split.
    pub id: [u8; 8],
    /// Shares needed to rebuild the KEK.
    pub threshold: u8,
    /// Shares made.
    pub count: u8,
    /// HMAC-SHA-256 of a fixed label under the KEK.
    pub check: [u8; 32],
}

impl ShareSet {
    /// The set id as 16 hex digits.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

/// One custodian's share. Its data lives on guarded pages and is wiped on
/// drop; printing it shows only the set and the index.
pub struct KekShare {
    /// The set it belongs to.
    pub set: ShareSet,
    /// Its index, 1..=count (the x coordinate).
    pub index: u8,
    /// Who holds it (names the custodian's client certificate in dev mode).
    pub custodian: String,
    data: Guarded<[u8; SHARE_DATA_LEN]>,
}

impl Drop for KekShare {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

impl fmt::Debug for KekShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KekShare")
            .field("set", &self.set.id_hex())
            .field("index", &self.index)
            .field("custodian", &self.custodian)
            .field("data", &"<redacted>")
            .finish()
    }
}

/// Why shares could not be made, read or combined. Never carries share or
/// key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// Threshold or count out of range.
    #[error(
        "a split needs {MIN_THRESHOLD} <= threshold <= shares <= {MAX_SHARES} (got threshold {threshold}, shares {count})"
    )]
    Parameters {
        /// Requested threshold.
        threshold: u8,
        /// Requested share count.
        count: u8,
    },
    /// The text is not a share file, or a field is malformed.
    #[error("not a valid share file: {0}")]
    Malformed(String),
    /// The checksum does not match: mistyped, truncated or edited.
    #[error("share file checksum does not match: the share was mistyped, truncated or edited")]
    Checksum,
    /// The share belongs to another split of another (or the same) KEK.
    #[error("share belongs to set {got}, not to this vault's set {expected}")]
    Foreign {
        /// This vault's set.
        expected: String,
        /// The share's set.
        got: String,
    },
    /// This share index was handed in already.
    #[error("share {0} was received already")]
    Duplicate(u8),
    /// The shares combine to a key whose check value is wrong: a share was
    /// forged or altered consistently with its checksum.
    #[error(
        "the shares do not combine to this set's KEK (check value mismatch); all received shares were discarded"
    )]
    Mismatch,
}

/// HMAC-SHA-256 of a fixed label under `kek`: identifies the KEK without
/// revealing it.
pub fn check_value(kek: &SecretKey) -> [u8; 32] {
    // A 32-byte key is always a valid HMAC key.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(kek.expose()) {
        Ok(mac) => mac,
        Err(_) => return [0u8; 32],
    };
    mac.update(CHECK_LABEL);
    mac.finalize().into_bytes().into()
}

/// Splits `kek` into `custodians.len()` shares, any `threshold` of which
/// rebuild it. Randomness comes straight from the OS (no user-space
/// generator keeps state that could replay the polynomial).
pub fn split(
    kek: &SecretKey,
    threshold: u8,
    custodians: &[String],
) -> Result<Vec<KekShare>, ShareError> {
    let count = u8::try_from(custodians.len()).unwrap_or(u8::MAX);
    if threshold < MIN_THRESHOLD || threshold > count || count > MAX_SHARES {
        return Err(ShareError::Parameters { threshold, count });
    }
    let mut id = [0u8; 8];
    crate::random::fill(&mut id).map_err(|e| ShareError::Malformed(e.to_string()))?;
    let set = ShareSet {
        id,
        threshold,
        count,
        check: check_value(kek),
    };
    let mut rng = rand010::rand_core::UnwrapErr(rand010::rngs::SysRng);
    let dealer = blahaj::Sharks(threshold).dealer_rng(kek.expose(), &mut rng);
    let mut out = Vec::with_capacity(custodians.len());
    for (share, custodian) in dealer.zip(custodians) {
        let bytes = Zeroizing::new(Vec::from(&share));
        let mut data = Guarded::new([0u8; SHARE_DATA_LEN]);
        data.copy_from_slice(&bytes);
        out.push(KekShare {
            set: set.clone(),
            index: bytes[0],
            custodian: checked_custodian(custodian)?.to_owned(),
            data,
        });
    }
    Ok(out)
}

fn checked_custodian(name: &str) -> Result<&str, ShareError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(ShareError::Malformed(
            "custodian names are 1-64 letters, digits, '.', '_' or '-'".into(),
        ))
    }
}

impl KekShare {
    fn body(&self, data_hex: &str) -> String {
        format!(
            "format: {SHARE_FORMAT}\nset: {}\nshare: {} of {}\nthreshold: {}\ncustodian: {}\ncheck: {}\ndata: {}\n",
            self.set.id_hex(),
            self.index,
            self.set.count,
            self.set.threshold,
            self.custodian,
            hex::encode(self.set.check),
            data_hex,
        )
    }

    /// The share file's text (wiped when dropped).
    pub fn to_text(&self) -> Zeroizing<String> {
        let data_hex = Zeroizing::new(hex::encode(&self.data[..]));
        let body = Zeroizing::new(self.body(&data_hex));
        let sum = checksum(&body);
        Zeroizing::new(format!(
            "# cardvault KEK share {} of {} (any {} rebuild the KEK) for {}.\n\
             # Keep it offline and apart from the other shares; never send it by mail or chat.\n\
             # Hand it in with: cardvault unseal --share THIS_FILE\n{}checksum: {}\n",
            self.index, self.set.count, self.set.threshold, self.custodian, *body, sum
        ))
    }

    /// Parses a share file: comment and blank lines are skipped; every
    /// field must appear once; the checksum must match.
    pub fn parse(text: &str) -> Result<KekShare, ShareError> {
        let bad = |what: &str| ShareError::Malformed(what.to_owned());
        if text.len() > MAX_SHARE_FILE_BYTES {
            return Err(bad("longer than 4096 bytes"));
        }
        let mut fields: [Option<&str>; 8] = [None; 8];
        const NAMES: [&str; 8] = [
            "format",
            "set",
            "share",
            "threshold",
            "custodian",
            "check",
            "data",
            "checksum",
        ];
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad("a line is neither a comment nor `name: value`"))?;
            let slot = NAMES
                .iter()
                .position(|n| *n == name.trim())
                .ok_or_else(|| bad("unknown field"))?;
            if fields[slot].replace(value.trim()).is_some() {
                return Err(ShareError::Malformed(format!(
                    "field `{}` twice",
                    NAMES[slot]
                )));
            }
        }
        let field = |i: usize| {
            fields[i].ok_or_else(|| ShareError::Malformed(format!("field `{}` missing", NAMES[i])))
        };
        if field(0)? != SHARE_FORMAT {
            return Err(bad("unknown format (expected cardvault-kek-share-v1)"));
        }
        let id: [u8; 8] = hex_array(field(1)?).ok_or_else(|| bad("`set` is not 16 hex digits"))?;
        let (index, count) = field(2)?
            .split_once(" of ")
            .and_then(|(i, n)| Some((i.trim().parse::<u8>().ok()?, n.trim().parse::<u8>().ok()?)))
            .ok_or_else(|| bad("`share` is not `I of N`"))?;
        let threshold: u8 = field(3)?
            .parse()
            .map_err(|_| bad("`threshold` is not a number"))?;
        let custodian = checked_custodian(field(4)?)?.to_owned();
        let check: [u8; 32] =
            hex_array(field(5)?).ok_or_else(|| bad("`check` is not 64 hex digits"))?;
        let data_hex = field(6)?;
        let sum = field(7)?;
        if threshold < MIN_THRESHOLD || threshold > count || count > MAX_SHARES {
            return Err(ShareError::Parameters { threshold, count });
        }
        if index == 0 || index > count {
            return Err(bad("share index out of range"));
        }
        let set = ShareSet {
            id,
            threshold,
            count,
            check,
        };
        let mut data = Guarded::new([0u8; SHARE_DATA_LEN]);
        if data_hex.len() != 2 * SHARE_DATA_LEN
            || hex::decode_to_slice(data_hex, &mut data[..]).is_err()
        {
            data.zeroize();
            return Err(bad("`data` is not 66 hex digits"));
        }
        let share = KekShare {
            set,
            index,
            custodian,
            data,
        };
        let body = Zeroizing::new(share.body(data_hex));
        if !bool::from(checksum(&body).as_bytes().ct_eq(sum.as_bytes())) {
            return Err(ShareError::Checksum);
        }
        if share.data[0] != index {
            return Err(bad("`data` does not belong to this share index"));
        }
        Ok(share)
    }
}

fn checksum(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..8])
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Where an unseal stands after a share was accepted.
#[derive(Debug)]
pub enum Progress {
    /// More shares are needed.
    Need {
        /// Shares held now.
        received: u8,
        /// Shares needed.
        threshold: u8,
    },
    /// The threshold was reached; the KEK, checked against the set's check
    /// value. The shares are wiped.
    Complete(SecretKey),
}

/// Collects shares of one set until the threshold, then combines them.
#[derive(Debug, Default)]
pub struct Combiner {
    accepted: Vec<ShareSet>,
    held: Vec<KekShare>,
}

impl Combiner {
    /// A combiner that accepts shares only of the sets in `accepted` (the
    /// set recorded with the data, and the set a KEK rotation is moving
    /// to), or of whichever set the first share names when it is empty.
    /// All shares of one combination belong to one set.
    pub fn new(accepted: Vec<ShareSet>) -> Combiner {
        Combiner {
            accepted,
            held: Vec::new(),
        }
    }

    /// Shares held now.
    pub fn received(&self) -> u8 {
        self.held.len() as u8
    }

    /// The set being collected: the held shares', else the first accepted.
    pub fn set(&self) -> Option<&ShareSet> {
        self.held.first().map(|s| &s.set).or(self.accepted.first())
    }

    /// Wipes every held share (a reseal, or a custodian's abort).
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// Takes one share. Refuses a share of another set and a share handed
    /// in twice; at the threshold, combines and checks.
    pub fn offer(&mut self, share: KekShare) -> Result<Progress, ShareError> {
        let foreign = match self.held.first() {
            Some(first) => first.set != share.set,
            None => !self.accepted.is_empty() && !self.accepted.contains(&share.set),
        };
        if foreign {
            return Err(ShareError::Foreign {
                expected: self.set().map(ShareSet::id_hex).unwrap_or_default(),
                got: share.set.id_hex(),
            });
        }
        if self.held.iter().any(|s| s.index == share.index) {
            return Err(ShareError::Duplicate(share.index));
        }
        let set = share.set.clone();
        self.held.push(share);
        if self.held.len() < set.threshold as usize {
            return Ok(Progress::Need {
                received: self.received(),
                threshold: set.threshold,
            });
        }
        let key = self.combine(&set);
        self.held.clear();
        key.map(Progress::Complete)
    }

    fn combine(&self, set: &ShareSet) -> Result<SecretKey, ShareError> {
        let mut shares = Vec::with_capacity(self.held.len());
        for held in &self.held {
            let share = blahaj::Share::try_from(&held.data[..])
                .map_err(|_| ShareError::Malformed("share data".into()))?;
            shares.push(share);
        }
        let secret = Zeroizing::new(
            blahaj::Sharks(set.threshold)
                .recover(&shares)
                .map_err(|_| ShareError::Mismatch)?,
        );
        let key = SecretKey::from_slice(&secret).ok_or(ShareError::Mismatch)?;
        if bool::from(check_value(&key).ct_eq(&set.check)) {
            Ok(key)
        } else {
            Err(ShareError::Mismatch)
        }
    }
}

/// The KEK the custodians rebuilt, as a key provider: held expanded on
/// guarded pages until the vault is sealed (dropped) again.
pub struct SharedKek {
    kek: AesKek,
    set: ShareSet,
}

impl SharedKek {
    /// Expands `kek` (the caller's copy is wiped when it drops it).
    pub fn new(kek: &SecretKey, set: ShareSet) -> SharedKek {
        SharedKek {
            kek: AesKek::new(kek),
            set,
        }
    }
}

impl KeyProvider for SharedKek {
    fn describe(&self) -> String {
        format!(
            "custodian shares (set {}, {} of {})",
            self.set.id_hex(),
            self.set.threshold,
            self.set.count
        )
    }

    fn wrap(&self, label: &KeyLabel, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        self.kek.wrap(label, key)
    }

    fn unwrap(&self, label: &KeyLabel, wrapped: &[u8]) -> Result<SecretKey, KeyError> {
        self.kek.unwrap(label, wrapped)
    }
}

#[cfg(test)]
mod tests;
