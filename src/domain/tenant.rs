//! Tenant identifiers: every key, token and fingerprint belongs to exactly one
//! tenant, and a tenant's data is never readable under another tenant's name.

use std::fmt;

/// Longest tenant identifier, in bytes.
pub const MAX_TENANT_LEN: usize = 64;

/// Why a tenant identifier was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// Empty, or longer than 64 bytes.
    #[error("tenant id must be 1 to {MAX_TENANT_LEN} characters")]
    WrongLength,
    /// A character outside `a-z 0-9 . _ -`, or not starting with a letter or digit.
    #[error("tenant id may hold only a-z, 0-9, '.', '_' and '-', starting with a letter or digit")]
    InvalidCharacter,
    /// Twelve digits or more: a tenant id travels in paths, logs and audit
    /// entries, so it must never be able to hold a card number.
    #[error("tenant id may hold at most 11 digits (it must never be able to hold a card number)")]
    TooManyDigits,
}

/// A tenant identifier: 1–64 of `a-z 0-9 . _ -`, starting with a letter or
/// digit, with at most 11 digits in all (so no card number fits in one). Deserializing parses (a bad value is an error naming its field).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TryFrom<String> for TenantId {
    type Error = TenantError;
    fn try_from(text: String) -> Result<TenantId, TenantError> {
        TenantId::parse(&text)
    }
}

impl From<TenantId> for String {
    fn from(tenant: TenantId) -> String {
        tenant.0
    }
}

impl TenantId {
    /// Parses a tenant identifier.
    pub fn parse(input: &str) -> Result<TenantId, TenantError> {
        if input.is_empty() || input.len() > MAX_TENANT_LEN {
            return Err(TenantError::WrongLength);
        }
        let bytes = input.as_bytes();
        let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b);
        if !bytes.iter().all(allowed) || !bytes[0].is_ascii_alphanumeric() {
            return Err(TenantError::InvalidCharacter);
        }
        if bytes.iter().filter(|b| b.is_ascii_digit()).count() >= 12 {
            return Err(TenantError::TooManyDigits);
        }
        Ok(TenantId(input.to_owned()))
    }

    /// The vault's own pseudo-tenant, owner of keys that belong to no
    /// tenant (the audit MAC key). Its name cannot be parsed, so no
    /// configured tenant can ever collide with it.
    pub fn system() -> TenantId {
        TenantId("_system".to_owned())
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_card_number_fits_in_a_tenant_id() {
        assert_eq!(
            TenantId::parse("4111111111111111"),
            Err(TenantError::TooManyDigits)
        );
        assert_eq!(
            TenantId::parse("shop-4111-1111-1111-1111"),
            Err(TenantError::TooManyDigits)
        );
        assert!(TenantId::parse("shop-2026-12-06-eu1").is_ok());
    }

    #[test]
    fn rules() {
        for ok in ["default", "shop-1", "a", "eu.west_2", &"x".repeat(64)] {
            assert_eq!(TenantId::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(TenantId::parse("").unwrap_err(), TenantError::WrongLength);
        assert_eq!(
            TenantId::parse(&"x".repeat(65)).unwrap_err(),
            TenantError::WrongLength
        );
        assert!(TenantId::parse(TenantId::system().as_str()).is_err());
        for bad in ["Default", "-a", ".a", "a b", "a/b", "ä", "a\0"] {
            assert_eq!(
                TenantId::parse(bad).unwrap_err(),
                TenantError::InvalidCharacter,
                "{bad}"
            );
        }
    }
}
