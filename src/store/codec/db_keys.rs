//! The database keys entries are stored under: tenant-prefixed token and
//! fingerprint keys, expiry-ordered keys for the sweep, re-encryption
//! checkpoints, and the `keys` column family's wrapped-key and counter keys.

use super::{CodecError, Reader};
use crate::crypto::fingerprint::FINGERPRINT_LEN;
use crate::crypto::{Fingerprint, KeyLabel, KeyPurpose};
use crate::domain::{TenantId, Token};

pub(super) const KEY_PREFIX_WRAPPED: u8 = 1;
pub(super) const KEY_PREFIX_COUNTER: u8 = 2;

fn push_tenant(out: &mut Vec<u8>, tenant: &TenantId) {
    // Tenant ids are at most 64 bytes, so one length byte suffices.
    out.push(tenant.as_str().len() as u8);
    out.extend_from_slice(tenant.as_str().as_bytes());
}

/// The first key after every key of `tenant` (in `tokens` and
/// `fingerprints`): its prefix with the last byte raised (tenant names are
/// ASCII, so it never overflows).
pub fn tenant_prefix_end(tenant: &TenantId) -> Vec<u8> {
    let mut end = tenant_prefix(tenant);
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    end
}

/// The first bytes of every `tokens` key of `tenant`.
pub fn tenant_prefix(tenant: &TenantId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + tenant.as_str().len());
    push_tenant(&mut key, tenant);
    key
}

const CHECKPOINT_PREFIX: &[u8] = b"reseal/";

/// `meta` key of a tenant's re-sealing checkpoint.
pub fn checkpoint_key(tenant: &TenantId) -> Vec<u8> {
    let mut key = CHECKPOINT_PREFIX.to_vec();
    key.extend_from_slice(tenant.as_str().as_bytes());
    key
}

/// The tenant of a checkpoint key; `None` for any other `meta` key.
pub fn decode_checkpoint_key(key: &[u8]) -> Option<TenantId> {
    let name = key.strip_prefix(CHECKPOINT_PREFIX)?;
    TenantId::parse(std::str::from_utf8(name).ok()?).ok()
}

/// `tokens` key: tenant (length-prefixed) ‖ token digits.
pub fn token_key(tenant: &TenantId, token: &Token) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + tenant.as_str().len() + token.len());
    push_tenant(&mut key, tenant);
    key.extend_from_slice(token.as_bytes());
    key
}

/// The tenant and the rest of a tenant-prefixed key (`tokens`,
/// `fingerprints`): the token digits or the fingerprint bytes.
pub fn split_tenant_key(key: &[u8]) -> Result<(TenantId, &[u8]), CodecError> {
    let invalid = CodecError::InvalidField {
        what: "tenant key",
        field: "tenant",
    };
    let (&len, rest) = key.split_first().ok_or(invalid)?;
    let len = usize::from(len);
    let tenant = rest
        .get(..len)
        .and_then(|name| std::str::from_utf8(name).ok())
        .and_then(|name| TenantId::parse(name).ok())
        .ok_or(invalid)?;
    Ok((tenant, &rest[len..]))
}

/// `expiry` key: expiry time (ms, big-endian, so keys sort by time) ‖
/// tenant (length-prefixed) ‖ token digits. The value is empty.
pub fn expiry_key(expires_ms: u64, tenant: &TenantId, token: &Token) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + 1 + tenant.as_str().len() + token.len());
    key.extend_from_slice(&expires_ms.to_be_bytes());
    push_tenant(&mut key, tenant);
    key.extend_from_slice(token.as_bytes());
    key
}

/// The parts of an [`expiry_key`].
pub fn decode_expiry_key(key: &[u8]) -> Result<(u64, TenantId, Token), CodecError> {
    let invalid = |field| CodecError::InvalidField {
        what: "expiry key",
        field,
    };
    let mut r = Reader::new(key, "expiry key");
    let at = r.u64()?;
    let len = usize::from(r.u8()?);
    let tenant = std::str::from_utf8(r.take(len)?)
        .ok()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or(invalid("tenant"))?;
    let rest = r.take(key.len().saturating_sub(9 + len))?;
    let token = Token::parse_bytes(rest).map_err(|_| invalid("token"))?;
    r.finish()?;
    Ok((at, tenant, token))
}

/// `fingerprints` key: tenant (length-prefixed) ‖ HMAC(PAN).
pub fn fingerprint_key(tenant: &TenantId, fingerprint: &Fingerprint) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + tenant.as_str().len() + FINGERPRINT_LEN);
    push_tenant(&mut key, tenant);
    key.extend_from_slice(fingerprint.as_bytes());
    key
}

/// The format-4 key for a `fingerprints` key of an older format (tenant ‖
/// 256-bit HMAC): tenant ‖ its first 16 bytes. `None` when the key is not
/// of the older shape (already short, or not a fingerprint key).
pub fn shortened_fingerprint_key(key: &[u8]) -> Option<Vec<u8>> {
    let tenant_len = usize::from(*key.first()?);
    let fingerprint = key.get(1 + tenant_len..)?;
    let fingerprint = Fingerprint::from_legacy(fingerprint)?;
    let mut short = key[..1 + tenant_len].to_vec();
    short.extend_from_slice(fingerprint.as_bytes());
    Some(short)
}

fn label_key(prefix: u8, label: &KeyLabel) -> Vec<u8> {
    let mut key = vec![prefix];
    push_tenant(&mut key, &label.tenant);
    key.push(label.purpose.code());
    key.extend_from_slice(&label.version.to_be_bytes());
    key
}

/// `keys` key of a wrapped data key.
pub fn wrapped_key_key(label: &KeyLabel) -> Vec<u8> {
    label_key(KEY_PREFIX_WRAPPED, label)
}

/// `keys` key of a data key's persisted encryption counter.
pub fn counter_key(label: &KeyLabel) -> Vec<u8> {
    label_key(KEY_PREFIX_COUNTER, label)
}

/// What a `keys` column family key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysEntry {
    /// A wrapped data key.
    Wrapped(KeyLabel),
    /// A data key's encryption counter.
    Counter(KeyLabel),
}

/// Decodes a `keys` column family key.
pub fn decode_keys_key(bytes: &[u8]) -> Result<KeysEntry, CodecError> {
    const WHAT: &str = "key name";
    let invalid = |field| CodecError::InvalidField { what: WHAT, field };
    let mut r = Reader::new(bytes, WHAT);
    let prefix = r.u8()?;
    let tenant_len = usize::from(r.u8()?);
    let tenant = std::str::from_utf8(r.take(tenant_len)?)
        .ok()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or(invalid("tenant"))?;
    let purpose = KeyPurpose::from_code(r.u8()?).ok_or(invalid("purpose"))?;
    let version = r.u32()?;
    r.finish()?;
    let label = KeyLabel {
        tenant,
        purpose,
        version,
    };
    match prefix {
        KEY_PREFIX_WRAPPED => Ok(KeysEntry::Wrapped(label)),
        KEY_PREFIX_COUNTER => Ok(KeysEntry::Counter(label)),
        _ => Err(invalid("kind")),
    }
}

/// Decodes a persisted encryption counter.
pub fn decode_counter(bytes: &[u8]) -> Result<u64, CodecError> {
    let mut r = Reader::new(bytes, "key counter");
    let n = r.u64()?;
    r.finish()?;
    Ok(n)
}
