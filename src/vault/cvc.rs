//! Card security codes held in memory only (PCI DSS 3.3.1): a checkout
//! hands the code over once, the payment connector's detokenize takes it
//! once, and nothing is ever written — not to the store, the WAL, the audit
//! trail or a log. Each code is sealed under a [`TransientKey`] made at
//! start and bound to its tenant and token; it is gone after delivery,
//! after its time to live (a sweeper removes it, not only a read), or when
//! the process stops.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::crypto::{KeyError, TransientKey};
use crate::domain::{TenantId, Token};

/// Why a code was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CvcError {
    /// Not 3 or 4 digits.
    #[error("a card security code is 3 or 4 digits")]
    Invalid,
    /// `max_held` codes are held already.
    #[error("too many card security codes held")]
    Full,
    /// Sealing failed (the random source).
    #[error("cannot seal the card security code")]
    Crypto,
}

struct Held {
    sealed: Vec<u8>,
    expires: Instant,
}

/// The codes held, by tenant and token.
pub struct CvcHold {
    key: TransientKey,
    held: Mutex<HashMap<(TenantId, Token), Held>>,
    max_held: usize,
}

impl std::fmt::Debug for CvcHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CvcHold")
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

fn binding(tenant: &TenantId, token: &Token) -> Vec<u8> {
    let mut aad = b"cvc/".to_vec();
    crate::crypto::push_length_prefixed(&mut aad, tenant.as_str().as_bytes());
    crate::crypto::push_length_prefixed(&mut aad, token.as_bytes());
    aad
}

impl CvcHold {
    /// An empty hold with a fresh in-memory key, for at most `max_held` codes.
    pub fn new(max_held: usize) -> Result<CvcHold, KeyError> {
        Ok(CvcHold {
            key: TransientKey::generate()?,
            held: Mutex::new(HashMap::new()),
            max_held,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, Token), Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `code` for `token` for `ttl` (replacing an earlier one).
    pub fn hold(
        &self,
        tenant: &TenantId,
        token: &Token,
        code: &str,
        ttl: Duration,
    ) -> Result<(), CvcError> {
        if !(3..=4).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CvcError::Invalid);
        }
        let sealed = self
            .key
            .seal(code.as_bytes(), &binding(tenant, token))
            .map_err(|_| CvcError::Crypto)?;
        let key = (tenant.clone(), *token);
        let mut held = self.lock();
        if held.len() >= self.max_held && !held.contains_key(&key) {
            return Err(CvcError::Full);
        }
        held.insert(
            key,
            Held {
                sealed,
                expires: Instant::now() + ttl,
            },
        );
        metrics::gauge!("cardvault_cvc_held").set(held.len() as f64);
        Ok(())
    }

    /// Takes the code held for `token`, once; `None` if there is none or
    /// it has expired.
    pub fn take(&self, tenant: &TenantId, token: &Token) -> Option<Zeroizing<String>> {
        let held = {
            let mut all = self.lock();
            let held = all.remove(&(tenant.clone(), *token));
            metrics::gauge!("cardvault_cvc_held").set(all.len() as f64);
            held
        }?;
        if held.expires <= Instant::now() {
            metrics::counter!("cardvault_cvc_expired_total").increment(1);
            return None;
        }
        let code = self.key.open(&held.sealed, &binding(tenant, token)).ok()?;
        metrics::counter!("cardvault_cvc_delivered_total").increment(1);
        String::from_utf8(code.to_vec()).ok().map(Zeroizing::new)
    }

    /// Removes every expired code; how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut all = self.lock();
        let before = all.len();
        all.retain(|_, held| held.expires > now);
        let removed = before - all.len();
        metrics::gauge!("cardvault_cvc_held").set(all.len() as f64);
        metrics::counter!("cardvault_cvc_expired_total").increment(removed as u64);
        removed
    }

    /// Codes held now.
    pub fn held(&self) -> usize {
        self.lock().len()
    }

    /// Whether another code would fit now (a hint: a racing hold may take
    /// the last place).
    pub fn has_room(&self) -> bool {
        self.held() < self.max_held
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_code_is_delivered_once_expires_and_is_bounded() {
        let hold = CvcHold::new(2).unwrap();
        let tenant = TenantId::parse("t").unwrap();
        let token = Token::parse("4111110000001112").unwrap();
        let other = Token::parse("4111110000002110").unwrap();
        assert_eq!(
            hold.hold(&tenant, &token, "12a", Duration::from_secs(9)),
            Err(CvcError::Invalid)
        );
        hold.hold(&tenant, &token, "123", Duration::from_secs(9))
            .unwrap();
        assert_eq!(
            hold.take(&tenant, &token).as_deref().map(String::as_str),
            Some("123")
        );
        assert!(hold.take(&tenant, &token).is_none());
        hold.hold(&tenant, &token, "4567", Duration::ZERO).unwrap();
        hold.hold(&tenant, &other, "890", Duration::from_secs(9))
            .unwrap();
        let third = Token::parse("4111110000003118").unwrap();
        assert_eq!(
            hold.hold(&tenant, &third, "111", Duration::from_secs(9)),
            Err(CvcError::Full)
        );
        assert_eq!(hold.sweep(), 1);
        assert_eq!(hold.held(), 1);
        assert!(format!("{hold:?}").contains("held: 1"));
    }
}
