//! Tokenize and lookup: a PAN's keyed fingerprint, its existing token in a
//! deterministic tenant (looked up across fingerprint-key versions while a
//! rotation runs), and otherwise a fresh token drawn, its PAN sealed under
//! the active data key and the entry handed to the store's writer, which
//! inserts it unless a racing caller got there first (then the racer's token
//! is returned) or the token is taken (then a new one is drawn). A single
//! tokenize is a batch of one: the draw, collision and race logic exists
//! once.

use super::*;
use crate::crypto::Fingerprinter;
use crate::store::{SessionCompletion, StoreError};

impl Vault {
    /// Prepares the insert of a fresh token for `pan`.
    pub(super) async fn draft(
        &self,
        keys: &TenantKeys,
        pan: &Pan,
        expiry: Option<Expiry>,
        fingerprint: Option<Fingerprint>,
        absent_at: Option<ReadMark>,
        expires_ms: Option<u64>,
    ) -> Result<(Insert, Arc<DataKey>, u64), VaultError> {
        let token = Token::generate_for(pan, self.profile(&keys.tenant))?;
        let mut drafted = self
            .draft_for(keys, token, pan, expiry, fingerprint, absent_at)
            .await?;
        drafted.0.entry.meta.expires_ms = expires_ms;
        Ok(drafted)
    }

    /// [`Vault::draft`] for a given token (an import keeps the token).
    pub(super) async fn draft_for(
        &self,
        keys: &TenantKeys,
        token: Token,
        pan: &Pan,
        expiry: Option<Expiry>,
        fingerprint: Option<Fingerprint>,
        absent_at: Option<ReadMark>,
    ) -> Result<(Insert, Arc<DataKey>, u64), VaultError> {
        let (dek, count) = self.keys.claim(self.store.as_ref(), keys).await?;
        let sealed = record::seal(&dek, &keys.tenant, &token, pan)?;
        // A tenant whose tokens keep only the last 4 does not keep the BIN
        // either: metadata would otherwise hand it back.
        let bin = pan
            .bin()
            .filter(|_| self.profile(&keys.tenant).keeps_bin(pan.len()));
        let entry = TokenEntry {
            meta: TokenMeta {
                pan_len: pan.len() as u8,
                brand: pan.brand(),
                bin,
                last4: pan.last4(),
                expiry,
                created_ms: now_ms(),
                expires_ms: None,
            },
            fingerprint,
            record: sealed,
        };
        let insert = Insert {
            tenant: keys.tenant.clone(),
            token,
            fingerprint,
            entry,
            counter: Some((keys.label(KeyPurpose::PanEncryption, dek.version()), count)),
            fingerprint_absent_at: fingerprint.and(absent_at),
            token_absent_at: None,
            fingerprint_key: None,
        };
        Ok((insert, dek, count))
    }

    /// Answers for a token that already exists for the PAN, updating its
    /// stored expiry if a new one was given. `None` if the token vanished
    /// meanwhile (deleted concurrently): the caller draws again.
    pub(super) async fn existing(
        &self,
        tenant: &TenantId,
        token: Token,
        expiry: Option<Expiry>,
    ) -> Result<Option<TokenInfo>, VaultError> {
        let Some(entry) = self.store.get_entry(tenant, &token).await? else {
            return Ok(None);
        };
        if entry.meta.expired_at(now_ms()) {
            // Expired: gone for every route. Delete it now (the sweep would
            // later) so the PAN's index entry is free for a new token.
            self.store.delete(tenant, &token).await?;
            return Ok(None);
        }
        let mut info = TokenInfo::from_meta(token, &entry.meta);
        if let Some(expiry) = expiry.filter(|e| entry.meta.expiry != Some(*e)) {
            if !self.store.update_expiry(tenant, &token, expiry).await? {
                return Ok(None);
            }
            info.expiry = Some(expiry);
        }
        Ok(Some(info))
    }

    /// Tokenizes one PAN for `tenant` (a batch of one).
    pub async fn tokenize(
        &self,
        tenant: &TenantId,
        pan: &Pan,
        expiry: Option<Expiry>,
    ) -> Result<TokenInfo, VaultError> {
        self.tokenize_items(tenant, &[(pan, expiry)], None)
            .await
            .pop()
            .unwrap_or(Err(VaultError::TokenSpaceExhausted))
    }

    /// Tokenizes PANs whose new tokens expire at `expires_ms` (ms since the
    /// epoch; `None`: never). A PAN that already has a live token gets it,
    /// with its own expiry; an expired token is never returned.
    pub async fn tokenize_with_ttl(
        &self,
        tenant: &TenantId,
        items: &[(&Pan, Option<Expiry>)],
        expires_ms: Option<u64>,
    ) -> Vec<Result<TokenInfo, VaultError>> {
        self.tokenize_items(tenant, items, expires_ms).await
    }

    /// Tokenizes one PAN and, in the same store commit where the backend
    /// can, completes the collection session `completion` describes with
    /// the token (see `Store::insert_completing`). The flag: whether the
    /// session was completed here — `false` when its record changed
    /// meanwhile, or when the PAN already had a token and nothing was
    /// inserted (the caller completes it then).
    pub async fn tokenize_completing(
        &self,
        tenant: &TenantId,
        pan: &Pan,
        expiry: Option<Expiry>,
        completion: SessionCompletion,
    ) -> Result<(TokenInfo, bool), VaultError> {
        let items = [(pan, expiry)];
        let mut run = self.start_run(tenant, &items, None).await?;
        run.completion = Some(completion);
        let (result, completed) = self.run_rounds(run).await;
        let info = result
            .into_iter()
            .next()
            .unwrap_or(Err(VaultError::TokenSpaceExhausted))?;
        Ok((info, completed))
    }

    /// The one tokenize loop. Each round looks up the pending PANs'
    /// fingerprints, drafts fresh tokens for the unknown ones and inserts
    /// them in one store commit; a PAN that a racing caller tokenized first
    /// gets that token, a drawn token that is taken is drawn again.
    pub(super) async fn tokenize_items(
        &self,
        tenant: &TenantId,
        items: &[(&Pan, Option<Expiry>)],
        expires_ms: Option<u64>,
    ) -> Vec<Result<TokenInfo, VaultError>> {
        match self.start_run(tenant, items, expires_ms).await {
            Ok(run) => self.run_rounds(run).await.0,
            Err(e) => items.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// A run over `items` with the tenant's keys (created on first use).
    async fn start_run<'a>(
        &self,
        tenant: &'a TenantId,
        items: &'a [(&'a Pan, Option<Expiry>)],
        expires_ms: Option<u64>,
    ) -> Result<TokenizeRun<'a>, VaultError> {
        let keys = self.keys.get_or_create(self.store.as_ref(), tenant).await?;
        let deterministic = self.mode(tenant) == TokenMode::Deterministic;
        Ok(TokenizeRun::new(
            tenant,
            items,
            expires_ms,
            deterministic,
            keys,
        ))
    }

    /// Drafts and commits rounds until every item has a result (or the
    /// draws run out); the results and whether a session was completed.
    async fn run_rounds(
        &self,
        mut run: TokenizeRun<'_>,
    ) -> (Vec<Result<TokenInfo, VaultError>>, bool) {
        let keys = Arc::clone(&run.keys);
        // Held to the end: a fingerprint-key rotation waits for it.
        let _epoch = if run.deterministic {
            Some(keys.fp_epoch.read().await)
        } else {
            None
        };
        let mut pending: Vec<usize> = (0..run.items.len()).collect();
        for _ in 0..MAX_TOKEN_DRAWS {
            if pending.is_empty() {
                break;
            }
            let round = self.draft_round(&mut run, &pending).await;
            pending = self.commit_round(&mut run, round).await;
        }
        let results = run
            .results
            .into_iter()
            .map(|r| r.unwrap_or(Err(VaultError::TokenSpaceExhausted)))
            .collect();
        (results, run.completed)
    }

    /// One round's drafts: the pending PANs' existing tokens, read in one
    /// batch, and fresh tokens drafted for the others.
    async fn draft_round(&self, run: &mut TokenizeRun<'_>, pending: &[usize]) -> Round {
        let mut round = Round {
            inserts: Vec::with_capacity(pending.len()),
            inserted_for: Vec::with_capacity(pending.len()),
            existing: Vec::new(),
            last_claim: None,
        };
        // Taken before the lookups: their "absent" answers hold as of this
        // mark, which lets the store skip repeating them.
        let mark = self.store.read_mark();
        let mut known = self.known_tokens(run, pending).await;
        for &i in pending {
            let (pan, expiry) = &run.items[i];
            match known[i].take() {
                Some(Ok(Some(token))) => {
                    round.existing.push((i, token));
                    continue;
                }
                Some(Err(e)) => {
                    run.results[i] = Some(Err(e));
                    continue;
                }
                Some(Ok(None)) | None => {}
            }
            let fingerprint = run.fingerprints[i];
            match self
                .draft(
                    &run.sealing,
                    pan,
                    *expiry,
                    fingerprint,
                    mark,
                    run.expires_ms,
                )
                .await
            {
                Ok((mut insert, dek, count)) => {
                    insert.fingerprint_key = fingerprint.map(|_| {
                        run.sealing
                            .label(KeyPurpose::Fingerprint, run.fingerprinter.version())
                    });
                    round.inserts.push(insert);
                    round.inserted_for.push(i);
                    round.last_claim = Some((dek, count));
                }
                Err(e) => run.results[i] = Some(Err(e)),
            }
        }
        if let Some(mark) = mark {
            self.vouch_tokens_free(run.tenant, &mut round.inserts, mark)
                .await;
        }
        round
    }

    /// The existing tokens of the pending PANs that have a fingerprint, by
    /// item index (`None`: not looked up).
    async fn known_tokens(
        &self,
        run: &TokenizeRun<'_>,
        pending: &[usize],
    ) -> Vec<Option<Result<Option<Token>, VaultError>>> {
        let fingerprinted: Vec<usize> = pending
            .iter()
            .copied()
            .filter(|&i| run.fingerprints[i].is_some())
            .collect();
        let lookups: Vec<(&Pan, Fingerprint)> = fingerprinted
            .iter()
            .filter_map(|&i| run.fingerprints[i].map(|fp| (run.items[i].0, fp)))
            .collect();
        let mut known: Vec<Option<Result<Option<Token>, VaultError>>> =
            run.items.iter().map(|_| None).collect();
        let found = self.existing_tokens(run.tenant, &lookups, &run.older).await;
        for (i, found) in fingerprinted.into_iter().zip(found) {
            known[i] = Some(found);
        }
        known
    }

    /// Inserts one round's drafts and settles each item: its token, its
    /// error, or a place among the indexes returned to draw again.
    async fn commit_round(&self, run: &mut TokenizeRun<'_>, round: Round) -> Vec<usize> {
        let Round {
            mut inserts,
            inserted_for,
            mut existing,
            last_claim,
        } = round;
        let infos: Vec<TokenInfo> = inserts
            .iter()
            .map(|ins| TokenInfo::from_meta(ins.token, &ins.entry.meta))
            .collect();
        let outcomes = match (&run.completion, inserts.len()) {
            (_, 0) => Ok(Vec::new()),
            (Some(completion), 1) => {
                let item = inserts.pop().map(Ok).unwrap_or(Err(StoreError::WriterGone));
                match item {
                    Ok(item) => self
                        .store
                        .insert_completing(item, completion.clone())
                        .await
                        .map(|(outcome, swapped)| {
                            run.completed |= swapped;
                            vec![outcome]
                        }),
                    Err(e) => Err(e),
                }
            }
            _ => self.store.insert(inserts).await,
        };
        if let Some((dek, count)) = last_claim {
            self.keys
                .rotate_if_due(self.store.as_ref(), &run.keys, &dek, count)
                .await;
        }
        let mut retry = Vec::new();
        let mut stale = false;
        match outcomes {
            Ok(outcomes) => {
                for ((i, info), outcome) in inserted_for.into_iter().zip(infos).zip(outcomes) {
                    match outcome {
                        InsertOutcome::Inserted => {
                            metrics::counter!("cardvault_tokens_created_total").increment(1);
                            run.results[i] = Some(Ok(info));
                        }
                        InsertOutcome::Existing(token) => existing.push((i, token)),
                        InsertOutcome::TokenCollision => retry.push(i),
                        InsertOutcome::StaleKey => {
                            stale = true;
                            retry.push(i);
                        }
                    }
                }
            }
            Err(e) => {
                for i in inserted_for {
                    run.results[i] = Some(Err(e.clone().into()));
                }
            }
        }
        if stale {
            self.refresh_sealing(run, &mut retry).await;
        }
        for (i, token) in existing {
            match self.existing(run.tenant, token, run.items[i].1).await {
                Ok(Some(info)) => run.results[i] = Some(Ok(info)),
                Ok(None) => retry.push(i),
                Err(e) => run.results[i] = Some(Err(e)),
            }
        }
        retry.sort_unstable();
        retry
    }

    /// Reads the tenant's keys again after the store said another node
    /// rotated the active data or fingerprint key; on failure the items
    /// waiting to retry get the error instead.
    async fn refresh_sealing(&self, run: &mut TokenizeRun<'_>, retry: &mut Vec<usize>) {
        match self.keys.refresh(self.store.as_ref(), run.tenant).await {
            Ok(Some(fresh)) => run.reseat(fresh),
            Ok(None) => {}
            Err(e) => {
                for &i in retry.iter() {
                    run.results[i] = Some(Err(e.clone()));
                }
                retry.clear();
            }
        }
    }

    /// Reads the drafted tokens of `inserts` in one batched lookup (after
    /// `mark`) and vouches for each one found free, so a store that tracks
    /// its recent writes skips its own collision read (on RocksDB, on the
    /// single writer thread). A token found taken, or a failed read, leaves
    /// the check to the store.
    pub(super) async fn vouch_tokens_free(
        &self,
        tenant: &TenantId,
        inserts: &mut [Insert],
        mark: ReadMark,
    ) {
        if inserts.is_empty() {
            return;
        }
        let tokens: Vec<Token> = inserts.iter().map(|insert| insert.token).collect();
        if let Ok(taken) = self.store.tokens_taken(tenant, &tokens).await {
            for (insert, taken) in inserts.iter_mut().zip(taken) {
                if !taken {
                    insert.token_absent_at = Some(mark);
                }
            }
        }
    }

    /// The token `pan` already has in `tenant`, never creating one ("is
    /// this card on file?"). Deterministic tenants only: a random-mode
    /// tenant stores no fingerprints, so every lookup there is not found.
    pub async fn lookup(&self, tenant: &TenantId, pan: &Pan) -> Result<TokenInfo, VaultError> {
        let keys = self.known_keys(tenant).await?;
        let (fingerprinter, older) = keys.fingerprinters();
        let fingerprint = fingerprinter.fingerprint(pan);
        let token = self
            .existing_tokens(tenant, &[(pan, fingerprint)], &older)
            .await
            .pop()
            .unwrap_or(Ok(None))?
            .ok_or(VaultError::TokenNotFound)?;
        self.metadata(tenant, &token).await
    }

    /// The tokens `tenant` already has for the PANs of `lookups`, each with
    /// its fingerprint under the active key, in input order: the active
    /// key's fingerprints in one batched read, then — while a
    /// fingerprint-key rotation is in progress — each miss under the older
    /// keys' fingerprints of the same PAN. A failed batched read fails every
    /// item.
    pub(super) async fn existing_tokens(
        &self,
        tenant: &TenantId,
        lookups: &[(&Pan, Fingerprint)],
        older: &[Arc<Fingerprinter>],
    ) -> Vec<Result<Option<Token>, VaultError>> {
        if lookups.is_empty() {
            return Vec::new();
        }
        let fingerprints: Vec<Fingerprint> = lookups.iter().map(|(_, fp)| *fp).collect();
        let found = match self.store.get_tokens_for(tenant, &fingerprints).await {
            Ok(found) => found,
            Err(e) => {
                let e = VaultError::from(e);
                return lookups.iter().map(|_| Err(e.clone())).collect();
            }
        };
        let mut out = Vec::with_capacity(lookups.len());
        for ((pan, _), token) in lookups.iter().zip(found) {
            out.push(match token {
                Some(token) => Ok(Some(token)),
                None => self.token_for_older(tenant, pan, older).await,
            });
        }
        out
    }

    /// The token for `pan` under the tenant's older fingerprint keys (a
    /// fingerprint rotation whose re-encryption has not moved every index
    /// entry yet), newest first.
    pub(super) async fn token_for_older(
        &self,
        tenant: &TenantId,
        pan: &Pan,
        older: &[Arc<Fingerprinter>],
    ) -> Result<Option<Token>, VaultError> {
        for fingerprinter in older {
            let old = fingerprinter.fingerprint(pan);
            if let Some(token) = self.store.get_token_for(tenant, &old).await? {
                return Ok(Some(token));
            }
        }
        Ok(None)
    }
}

/// One tokenize call's state across its rounds.
struct TokenizeRun<'a> {
    tenant: &'a TenantId,
    items: &'a [(&'a Pan, Option<Expiry>)],
    expires_ms: Option<u64>,
    deterministic: bool,
    /// The keys the call started with (its claims count against them).
    keys: Arc<TenantKeys>,
    /// The keys that seal and fingerprint: replaced when the store says
    /// another node rotated the active data or fingerprint key.
    sealing: Arc<TenantKeys>,
    fingerprinter: Arc<Fingerprinter>,
    older: Vec<Arc<Fingerprinter>>,
    fingerprints: Vec<Option<Fingerprint>>,
    results: Vec<Option<Result<TokenInfo, VaultError>>>,
    /// A collection session the (single) insert completes in its commit.
    completion: Option<SessionCompletion>,
    /// Whether it was completed.
    completed: bool,
}

impl<'a> TokenizeRun<'a> {
    fn new(
        tenant: &'a TenantId,
        items: &'a [(&'a Pan, Option<Expiry>)],
        expires_ms: Option<u64>,
        deterministic: bool,
        keys: Arc<TenantKeys>,
    ) -> Self {
        let (fingerprinter, older) = keys.fingerprinters();
        let mut run = TokenizeRun {
            tenant,
            items,
            expires_ms,
            deterministic,
            sealing: Arc::clone(&keys),
            keys,
            fingerprinter,
            older,
            fingerprints: Vec::new(),
            results: items.iter().map(|_| None).collect(),
            completion: None,
            completed: false,
        };
        run.fingerprint_all();
        run
    }

    /// Fingerprints every item under the active fingerprinter (deterministic
    /// tenants only).
    fn fingerprint_all(&mut self) {
        let (deterministic, fingerprinter) = (self.deterministic, &self.fingerprinter);
        self.fingerprints = self
            .items
            .iter()
            .map(|(pan, _)| deterministic.then(|| fingerprinter.fingerprint(pan)))
            .collect();
    }

    /// Seals and fingerprints with `fresh` keys from here on.
    fn reseat(&mut self, fresh: Arc<TenantKeys>) {
        (self.fingerprinter, self.older) = fresh.fingerprinters();
        self.sealing = fresh;
        self.fingerprint_all();
    }
}

/// What one tokenize round drafted.
struct Round {
    inserts: Vec<Insert>,
    /// The item index of each insert.
    inserted_for: Vec<usize>,
    /// Items whose PAN already has a token.
    existing: Vec<(usize, Token)>,
    /// The last data-key claim, checked against the rotation policy.
    last_claim: Option<(Arc<DataKey>, u64)>,
}
