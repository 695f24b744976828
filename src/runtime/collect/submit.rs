//! A shopper's submit to a collection session: the card-testing buckets,
//! the session as stored, the frame's nonce, the card and its code, the
//! block list, the oracle guard, the velocity rule, then the token and
//! the session's completion in one commit where the store can, the code
//! into the in-memory hold, and the refusals that lock a session.

use std::net::IpAddr;
use std::time::Duration;

use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::{
    CardInput, Collect, CollectError, Completed, LOCK_AFTER_REFUSED, nonce_digest, open_state,
};
use crate::domain::{Expiry, Pan, TenantId};
use crate::store::codec::{CvcPolicy, SessionRecord, SessionResult, SessionState};
use crate::vault::Vault;
use crate::vault::sessions::{Change, SessionId};

impl Collect {
    /// A shopper's submit to session `id` from `ip` with the frame's
    /// `nonce`. Refusals that count lock the session after
    /// [`LOCK_AFTER_REFUSED`].
    pub async fn submit(
        &self,
        id: &SessionId,
        nonce: &str,
        card: CardInput,
        ip: IpAddr,
    ) -> Result<Completed, CollectError> {
        self.testing
            .submit_from(ip)
            .map_err(|s| CollectError::RateLimited("ip_submits", s))?;
        self.testing
            .submit_to(id.as_bytes())
            .map_err(|s| CollectError::RateLimited("session_submits", s))?;
        let (record, stored) = self
            .vault
            .session_stored(id)
            .await?
            .ok_or(CollectError::NotFound)?;
        open_state(&record, crate::clock::now_ms())?;
        match self
            .checked_tokenize(id, &record, stored, nonce, &card)
            .await
        {
            Ok((completed, true)) => Ok(completed),
            Ok((completed, false)) => self.complete(id, nonce, completed).await,
            Err(refused) if refused.counts() => {
                self.count_refusal(id).await?;
                Err(refused)
            }
            Err(other) => Err(other),
        }
    }

    /// The checks of one submit, then the token: nonce, card, block list,
    /// oracle guard, velocity, tokenize (completing the session read as
    /// `stored` in the same commit where it can: the flag), security code.
    async fn checked_tokenize(
        &self,
        id: &SessionId,
        record: &SessionRecord,
        stored: Vec<u8>,
        nonce: &str,
        card: &CardInput,
    ) -> Result<(Completed, bool), CollectError> {
        let expected = record.frame_nonce.as_deref().unwrap_or_default();
        let given = nonce_digest(nonce);
        if expected.is_empty() || !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(CollectError::BadNonce);
        }
        let pan = Pan::parse(card.pan.expose_secret())
            .map_err(|e| CollectError::InvalidPan(e.client_message()))?;
        let expiry = Expiry::parse(card.exp.expose_secret())
            .map_err(|_| CollectError::Invalid("expiry must be MM/YY or MM/YYYY"))?;
        if is_past(expiry) {
            return Err(CollectError::Invalid("the card has expired"));
        }
        let code = check_code(record.cvc, card.cvc.expose_secret())?;
        // A code is held only while the hold has room (`[cvc] max_held`);
        // the session then says none is held, and no second write is needed.
        let code = code.filter(|_| self.cvcs.has_room());
        if self.testing.blocked(&pan) {
            return Err(CollectError::CardRefused);
        }
        let tenant = TenantId::parse(&record.tenant).map_err(|_| CollectError::NotFound)?;
        let profile = self.vault.profile(&tenant);
        let scope = format!("collect {}", record.origin);
        self.guard
            .check(&tenant, &scope, profile, &[&pan])
            .map_err(CollectError::Enumeration)?;
        let velocity = self.testing.card_seen(&pan, id.as_bytes());
        let bin = if profile.keeps_bin(pan.len()) {
            pan.bin().map(|b| b.as_str().to_owned())
        } else {
            None
        };
        let template = SessionResult {
            token: String::new(),
            bin,
            last4: pan.last4().as_str().to_owned(),
            brand: pan.brand().as_str().to_owned(),
            exp_month: expiry.month(),
            exp_year: expiry.year(),
            cvc_held: code.is_some(),
            completed_ms: crate::clock::now_ms(),
        };
        let open = record.clone();
        let filled = template.clone();
        let completion = Vault::completion(id, stored, record, move |token| {
            let mut done = open.clone();
            done.state = SessionState::Completed;
            done.frame_nonce = None;
            done.result = Some(SessionResult {
                token: token.to_string(),
                ..filled.clone()
            });
            done
        });
        let (info, completed_here) = self
            .vault
            .tokenize_completing(&tenant, &pan, Some(expiry), completion)
            .await?;
        let mut result = SessionResult {
            token: info.token.to_string(),
            // What the token's metadata says (the same, read back).
            bin: info.bin.map(|b| b.as_str().to_owned()),
            ..template
        };
        if let Some(code) = code
            && self
                .cvcs
                .hold(&tenant, &info.token, code, self.code_ttl(record))
                .is_err()
        {
            // Rare (the hold is full): the session must not claim a code.
            result.cvc_held = false;
            if completed_here {
                self.vault
                    .update_session(id, |r| {
                        if let Some(stored) = r.result.as_mut() {
                            stored.cvc_held = false;
                        }
                        Ok::<_, CollectError>(Change::Write(()))
                    })
                    .await?;
            }
        }
        let completed = Completed {
            tenant: record.tenant.clone(),
            origin: record.origin.clone(),
            result,
            velocity,
        };
        Ok((completed, completed_here))
    }

    /// Completes the session with `completed` if it is still open and the
    /// nonce still the frame's (a concurrent submit may have won).
    async fn complete(
        &self,
        id: &SessionId,
        nonce: &str,
        completed: Completed,
    ) -> Result<Completed, CollectError> {
        let digest = nonce_digest(nonce);
        let now = crate::clock::now_ms();
        let result = completed.result.clone();
        let outcome = self
            .vault
            .update_session(id, |record| {
                open_state(record, now)?;
                if record.frame_nonce.as_deref() != Some(digest.as_str()) {
                    return Err(CollectError::BadNonce);
                }
                record.state = SessionState::Completed;
                record.result = Some(result.clone());
                record.frame_nonce = None;
                Ok(Change::Write(()))
            })
            .await?;
        match outcome {
            None => Err(CollectError::NotFound),
            Some(Err(e)) => Err(e),
            Some(Ok(())) => Ok(completed),
        }
    }

    /// Counts a refused submit; the fifth locks the session.
    async fn count_refusal(&self, id: &SessionId) -> Result<(), CollectError> {
        self.vault
            .update_session(id, |record| {
                if record.state != SessionState::Pending {
                    return Ok::<_, CollectError>(Change::Keep(()));
                }
                record.refused += 1;
                if record.refused >= LOCK_AFTER_REFUSED {
                    record.state = SessionState::Locked;
                    record.frame_nonce = None;
                }
                Ok(Change::Write(()))
            })
            .await?;
        Ok(())
    }

    /// How long a code typed into `record`'s frame is held: until the
    /// session expires (at least a minute, so a cart that confirms at the
    /// last moment can still pay), at most `[cvc] max_ttl_s`.
    fn code_ttl(&self, record: &SessionRecord) -> Duration {
        let left = record.expires_ms.saturating_sub(crate::clock::now_ms());
        Duration::from_millis(left)
            .max(Duration::from_secs(60))
            .min(self.cvc_ttl)
    }
}

/// The security code as the policy wants it: `Some` to hold, `None` for
/// none given (allowed unless required).
fn check_code(policy: CvcPolicy, code: &str) -> Result<Option<&str>, CollectError> {
    let valid = (3..=4).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit());
    match (policy, code.is_empty()) {
        (CvcPolicy::None, true) | (CvcPolicy::Optional, true) => Ok(None),
        (CvcPolicy::None, false) => {
            Err(CollectError::Invalid("this session takes no security code"))
        }
        (CvcPolicy::Required, true) => Err(CollectError::Invalid("the security code is required")),
        (_, false) if valid => Ok(Some(code)),
        (_, false) => Err(CollectError::Invalid(
            "the security code must be 3 or 4 digits",
        )),
    }
}

/// Whether `expiry`'s month is over (UTC).
fn is_past(expiry: Expiry) -> bool {
    let now = time::OffsetDateTime::now_utc();
    let (year, month) = (now.year(), u8::from(now.month()));
    (i32::from(expiry.year()), expiry.month()) < (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_codes_follow_the_policy() {
        assert_eq!(check_code(CvcPolicy::Required, "123").unwrap(), Some("123"));
        assert!(check_code(CvcPolicy::Required, "").is_err());
        assert!(check_code(CvcPolicy::Required, "12").is_err());
        assert!(check_code(CvcPolicy::Required, "12a").is_err());
        assert_eq!(check_code(CvcPolicy::Optional, "").unwrap(), None);
        assert_eq!(
            check_code(CvcPolicy::Optional, "1234").unwrap(),
            Some("1234")
        );
        assert_eq!(check_code(CvcPolicy::None, "").unwrap(), None);
        assert!(check_code(CvcPolicy::None, "123").is_err());
    }

    #[test]
    fn a_month_is_past_only_once_it_is_over() {
        let now = time::OffsetDateTime::now_utc();
        let this = Expiry::new(u8::from(now.month()), now.year() as u16).unwrap();
        assert!(!is_past(this));
        assert!(is_past(Expiry::new(1, 2001).unwrap()));
        assert!(!is_past(Expiry::new(12, 2099).unwrap()));
    }
}
