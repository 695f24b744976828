//! Hosted-field collection sessions in the store: their ids (128 random
//! bits, base64url), and reading, creating and changing a session's
//! record by compare-and-swap, so one submit completes a session however
//! many requests or nodes race. The record holds no PAN and no security
//! code ([`SessionRecord`]). A record stays an hour past its expiry, so a
//! cart can still read a result it was slow to fetch, then the sweep
//! deletes it.

use super::{Vault, VaultError};
use crate::store::codec::SessionRecord;

/// How long a session's record is kept after it expires.
pub const SESSION_RETAIN_MS: u64 = 3600 * 1000;

/// Compare-and-swap attempts before an update gives up (each lost race
/// means another request changed the session meanwhile).
const SWAP_ATTEMPTS: usize = 16;

/// A collection session's id: 128 random bits, written as 22 base64url
/// characters (no padding).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// A fresh id from the OS random source.
    pub fn generate() -> Result<SessionId, crate::random::RandomError> {
        let mut bytes = [0u8; 16];
        crate::random::fill(&mut bytes)?;
        Ok(SessionId(bytes))
    }

    /// Parses the written form; `None` for anything else.
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() != 22 {
            return None;
        }
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(text.as_bytes())
            .ok()?;
        Some(SessionId(bytes.try_into().ok()?))
    }

    /// The id's bytes (the store key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&data_encoding::BASE64URL_NOPAD.encode(&self.0))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// What an update asks of the session it was shown.
#[derive(Debug)]
pub enum Change<T> {
    /// Write the changed record and return `T`.
    Write(T),
    /// Leave the record as it is and return `T`.
    Keep(T),
}

/// The sweep time of `record`.
fn sweep_at(record: &SessionRecord) -> u64 {
    record.expires_ms.saturating_add(SESSION_RETAIN_MS)
}

impl Vault {
    /// The session `id`, if it exists (expired ones until the sweep).
    pub async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, VaultError> {
        Ok(self.session_stored(id).await?.map(|(record, _)| record))
    }

    /// The session `id` and its stored bytes (for
    /// [`Vault::completion`]'s compare-and-swap).
    pub async fn session_stored(
        &self,
        id: &SessionId,
    ) -> Result<Option<(SessionRecord, Vec<u8>)>, VaultError> {
        match self.store.get_session(id.as_bytes()).await? {
            Some(bytes) => {
                let record =
                    SessionRecord::decode(&bytes).map_err(crate::store::StoreError::from)?;
                Ok(Some((record, bytes)))
            }
            None => Ok(None),
        }
    }

    /// The completion of session `id`, read as `stored`, by the commit that
    /// stores its card's token ([`Vault::tokenize_completing`]): `complete`
    /// makes the completed record for the token.
    pub fn completion(
        id: &SessionId,
        stored: Vec<u8>,
        sweep_from: &SessionRecord,
        complete: impl Fn(&crate::domain::Token) -> SessionRecord + Send + Sync + 'static,
    ) -> crate::store::SessionCompletion {
        crate::store::SessionCompletion {
            id: id.as_bytes().to_vec(),
            expected: stored,
            sweep_at: sweep_at(sweep_from),
            record: std::sync::Arc::new(move |token| complete(token).encode()),
        }
    }

    /// Stores a new session under `id`; `false` if the id is taken.
    pub async fn create_session(
        &self,
        id: &SessionId,
        record: &SessionRecord,
    ) -> Result<bool, VaultError> {
        Ok(self
            .store
            .swap_session(
                id.as_bytes(),
                None,
                Some((sweep_at(record), record.encode())),
            )
            .await?)
    }

    /// Reads session `id`, lets `change` decide on the record (changing
    /// it in place for [`Change::Write`]) and writes it back only if
    /// nobody changed it meanwhile, else reads again and asks again.
    /// `Ok(None)`: no such session.
    pub async fn update_session<T, E>(
        &self,
        id: &SessionId,
        mut change: impl FnMut(&mut SessionRecord) -> Result<Change<T>, E>,
    ) -> Result<Option<Result<T, E>>, VaultError> {
        for _ in 0..SWAP_ATTEMPTS {
            let Some((mut record, stored)) = self.session_stored(id).await? else {
                return Ok(None);
            };
            let answer = match change(&mut record) {
                Err(e) => return Ok(Some(Err(e))),
                Ok(Change::Keep(answer)) => return Ok(Some(Ok(answer))),
                Ok(Change::Write(answer)) => answer,
            };
            let new = Some((sweep_at(&record), record.encode()));
            if self
                .store
                .swap_session(id.as_bytes(), Some(&stored), new)
                .await?
            {
                return Ok(Some(Ok(answer)));
            }
        }
        Err(VaultError::Store(crate::store::StoreError::Backend(
            "a collection session kept changing under its update".into(),
        )))
    }

    /// Deletes up to `limit` sessions an hour past their expiry.
    pub async fn sweep_sessions(&self, limit: usize) -> Result<usize, VaultError> {
        Ok(self
            .store
            .sweep_sessions(crate::clock::now_ms(), limit)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_22_base64url_characters_and_read_back() {
        let id = SessionId::generate().unwrap();
        let text = id.to_string();
        assert_eq!(text.len(), 22);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(SessionId::parse(&text), Some(id));
        assert_eq!(SessionId::parse(&text[1..]), None);
        assert_eq!(SessionId::parse("!!!!!!!!!!!!!!!!!!!!!!"), None);
        assert_ne!(SessionId::generate().unwrap().to_string(), text);
    }
}
