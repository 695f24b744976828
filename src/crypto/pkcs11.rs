//! The PKCS#11 KEK provider: the KEK is an AES-256 secret-key object made
//! inside the token (sensitive, never extractable), found by its label;
//! data keys and HMAC keys are wrapped and unwrapped by AES-GCM inside the
//! device (`C_Encrypt`/`C_Decrypt` with the key's label as associated
//! data), so no KEK byte ever enters this process. Tested against SoftHSM2.
//!
//! One logged-in session, behind a mutex (the device is used only at
//! start, at unseal-like loads, and when a tenant's keys are made or
//! rotated — never per request). A lost session or a device error is
//! retried on a fresh session; if that fails too the operation reports
//! [`KeyError::Unavailable`], which the service answers with 503.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::hierarchy::{KEY_LEN, KeyError, KeyLabel, KeyProvider, SecretKey};
use super::wrap::{NONCE_LEN, WRAP_FORMAT_PKCS11, WRAPPED_KEY_LEN, check_layout, label_name};
use crate::random;

/// Where the KEK lives in a PKCS#11 token (the `[kek]` section).
#[derive(Debug, Clone)]
pub struct Pkcs11Settings {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// File holding the user PIN (mode 0600, owned by the vault's user).
    pub pin_file: PathBuf,
    /// The KEK object's label.
    pub key_label: String,
}

/// Why the HSM could not be used. Names the `[kek]` field at fault; never
/// carries the PIN or key bytes.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// The module could not be loaded or initialized.
    #[error("kek.module {path}: cannot load the PKCS#11 module: {why}")]
    Module {
        /// The module path.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// No token carries the label.
    #[error("kek.token_label: no token labelled {0:?} in the module's slots")]
    NoToken(String),
    /// The PIN file is missing, unsafe or empty.
    #[error("kek.pin_file {path}: {why}")]
    PinFile {
        /// The PIN file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The token refused the PIN.
    #[error("kek.pin_file {0}: the token refused the PIN")]
    PinRefused(PathBuf),
    /// No secret key carries the label.
    #[error(
        "kek.key_label: no secret key labelled {0:?} in the token (create one with `cardvault keys init --pkcs11`)"
    )]
    NoKey(String),
    /// The label is taken already (on create).
    #[error(
        "kek.key_label: the token holds a key labelled {0:?} already; refusing to overwrite a KEK"
    )]
    Exists(String),
    /// The key object could be read out of the token.
    #[error(
        "kek.key_label {0:?}: the key is extractable or not sensitive; a KEK must never leave the device"
    )]
    Exportable(String),
    /// Another PKCS#11 failure.
    #[error("PKCS#11 {0}")]
    Device(String),
}

fn ck(e: CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{function:?}: {rv:?}"),
        other => format!("{other:?}"),
    }
}

/// Reads a PIN file as the key files are checked: a regular file that
/// only its owner (this user) may read. Trailing newlines are dropped.
fn read_pin(path: &Path) -> Result<AuthPin, Pkcs11Error> {
    let pin =
        crate::hardening::read_secret_text(path, 256).map_err(|why| Pkcs11Error::PinFile {
            path: path.to_owned(),
            why,
        })?;
    Ok(AuthPin::from(pin.as_str()))
}

fn load_module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let fail = |why: String| Pkcs11Error::Module {
        path: path.to_owned(),
        why,
    };
    let pkcs11 = Pkcs11::new(path).map_err(|e| fail(ck(e)))?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(pkcs11),
        Err(e) => Err(fail(ck(e))),
    }
}

fn find_slot(pkcs11: &Pkcs11, label: &str) -> Result<Slot, Pkcs11Error> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| Pkcs11Error::Device(ck(e)))?;
    for slot in slots {
        if let Ok(info) = pkcs11.get_token_info(slot)
            && info.token_initialized()
            && info.label().trim_end() == label
        {
            return Ok(slot);
        }
    }
    Err(Pkcs11Error::NoToken(label.to_owned()))
}

fn login(
    pkcs11: &Pkcs11,
    slot: Slot,
    pin: &AuthPin,
    pin_file: &Path,
) -> Result<Session, Pkcs11Error> {
    let session = pkcs11
        .open_rw_session(slot)
        .map_err(|e| Pkcs11Error::Device(ck(e)))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => Err(Pkcs11Error::PinRefused(pin_file.to_owned())),
        Err(e) => Err(Pkcs11Error::Device(ck(e))),
    }
}

fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, Pkcs11Error> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| Pkcs11Error::Device(ck(e)))?;
    Ok(found.into_iter().next())
}

/// What the token says about the KEK object (read back through PKCS#11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFacts {
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_ALWAYS_SENSITIVE.
    pub always_sensitive: bool,
    /// CKA_NEVER_EXTRACTABLE.
    pub never_extractable: bool,
}

fn key_facts(session: &Session, key: ObjectHandle) -> Result<KeyFacts, Pkcs11Error> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .map_err(|e| Pkcs11Error::Device(ck(e)))?;
    let mut facts = KeyFacts {
        sensitive: false,
        extractable: true,
        always_sensitive: false,
        never_extractable: false,
    };
    for attribute in attributes {
        match attribute {
            Attribute::Sensitive(v) => facts.sensitive = v,
            Attribute::Extractable(v) => facts.extractable = v,
            Attribute::AlwaysSensitive(v) => facts.always_sensitive = v,
            Attribute::NeverExtractable(v) => facts.never_extractable = v,
            _ => {}
        }
    }
    Ok(facts)
}

/// The logged-in session and the KEK's handle in it.
struct Open {
    session: Session,
    key: ObjectHandle,
}

/// A KEK inside a PKCS#11 token.
pub struct Pkcs11Provider {
    settings: Pkcs11Settings,
    pkcs11: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    open: Mutex<Option<Open>>,
}

impl Pkcs11Provider {
    /// Loads the module, finds the token, logs in with the PIN file and
    /// finds the KEK; refuses a KEK that is extractable or not sensitive.
    pub fn open(settings: &Pkcs11Settings) -> Result<Pkcs11Provider, Pkcs11Error> {
        let pin = read_pin(&settings.pin_file)?;
        let pkcs11 = load_module(&settings.module)?;
        let slot = find_slot(&pkcs11, &settings.token_label)?;
        let session = login(&pkcs11, slot, &pin, &settings.pin_file)?;
        let key = find_key(&session, &settings.key_label)?
            .ok_or_else(|| Pkcs11Error::NoKey(settings.key_label.clone()))?;
        let facts = key_facts(&session, key)?;
        if !facts.sensitive || facts.extractable {
            return Err(Pkcs11Error::Exportable(settings.key_label.clone()));
        }
        Ok(Pkcs11Provider {
            settings: settings.clone(),
            pkcs11,
            slot,
            pin,
            open: Mutex::new(Some(Open { session, key })),
        })
    }

    /// Generates the KEK inside the token: AES-256, token object, private,
    /// sensitive, not extractable, for encrypt and decrypt only. Refuses a
    /// label that is taken.
    pub fn create_key(settings: &Pkcs11Settings) -> Result<(), Pkcs11Error> {
        let pin = read_pin(&settings.pin_file)?;
        let pkcs11 = load_module(&settings.module)?;
        let slot = find_slot(&pkcs11, &settings.token_label)?;
        let session = login(&pkcs11, slot, &pin, &settings.pin_file)?;
        if find_key(&session, &settings.key_label)?.is_some() {
            return Err(Pkcs11Error::Exists(settings.key_label.clone()));
        }
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen((KEY_LEN as u64).into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                    Attribute::Sign(false),
                    Attribute::Verify(false),
                    Attribute::Derive(false),
                    Attribute::Label(settings.key_label.as_bytes().to_vec()),
                ],
            )
            .map_err(|e| Pkcs11Error::Device(ck(e)))?;
        Ok(())
    }

    /// Initializes a fresh token in the first slot without one (SoftHSM2
    /// always offers such a slot) and sets its user PIN — for dev mode and
    /// tests, never for a production HSM.
    pub fn init_token(
        module: &Path,
        label: &str,
        so_pin: &str,
        user_pin: &str,
    ) -> Result<(), Pkcs11Error> {
        let pkcs11 = load_module(module)?;
        if find_slot(&pkcs11, label).is_ok() {
            return Ok(());
        }
        let slots = pkcs11
            .get_all_slots()
            .map_err(|e| Pkcs11Error::Device(ck(e)))?;
        let slot = slots
            .into_iter()
            .find(|slot| {
                pkcs11
                    .get_token_info(*slot)
                    .is_ok_and(|info| !info.token_initialized())
            })
            .ok_or_else(|| Pkcs11Error::Device("no free slot to initialize a token in".into()))?;
        let so_pin = AuthPin::from(so_pin);
        pkcs11
            .init_token(slot, &so_pin, label)
            .map_err(|e| Pkcs11Error::Device(ck(e)))?;
        let session = pkcs11
            .open_rw_session(slot)
            .map_err(|e| Pkcs11Error::Device(ck(e)))?;
        session
            .login(UserType::So, Some(&so_pin))
            .map_err(|e| Pkcs11Error::Device(ck(e)))?;
        session
            .init_pin(&AuthPin::from(user_pin))
            .map_err(|e| Pkcs11Error::Device(ck(e)))?;
        Ok(())
    }

    fn reopen(&self) -> Result<Open, Pkcs11Error> {
        let session = login(&self.pkcs11, self.slot, &self.pin, &self.settings.pin_file)?;
        let key = find_key(&session, &self.settings.key_label)?
            .ok_or_else(|| Pkcs11Error::NoKey(self.settings.key_label.clone()))?;
        Ok(Open { session, key })
    }

    /// Runs `op` on the open session; a session or device failure drops
    /// the session and tries once more on a fresh one.
    fn with_session<T>(&self, op: impl Fn(&Open) -> Result<T, Retry>) -> Result<T, KeyError> {
        let mut guard = self
            .open
            .lock()
            .map_err(|_| KeyError::Unavailable("session lock poisoned".into()))?;
        let mut last = String::new();
        for _ in 0..2 {
            if guard.is_none() {
                match self.reopen() {
                    Ok(open) => *guard = Some(open),
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                }
            }
            let Some(open) = guard.as_ref() else { continue };
            match op(open) {
                Ok(value) => return Ok(value),
                Err(Retry::Final(e)) => return Err(e),
                Err(Retry::Again(why)) => {
                    tracing::warn!(error = %why, "PKCS#11 operation failed; retrying on a fresh session");
                    last = why;
                    *guard = None;
                }
            }
        }
        Err(KeyError::Unavailable(last))
    }
}

/// How a failed device call is handled.
enum Retry {
    /// Worth a fresh session (lost session, device error).
    Again(String),
    /// The answer stands (a wrapped key that does not decrypt).
    Final(KeyError),
}

fn classify(e: CkError, final_error: impl FnOnce() -> KeyError) -> Retry {
    match e {
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::DataInvalid,
            _,
        ) => Retry::Final(final_error()),
        other => Retry::Again(ck(other)),
    }
}

impl KeyProvider for Pkcs11Provider {
    fn describe(&self) -> String {
        format!(
            "PKCS#11 token {:?} key {:?} ({})",
            self.settings.token_label,
            self.settings.key_label,
            self.settings.module.display()
        )
    }

    fn wrap(&self, label: &KeyLabel, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        random::fill(&mut nonce)?;
        let aad = label.aad();
        let sealed = self.with_session(|open| {
            let mut iv = nonce;
            let params = GcmParams::new(&mut iv, &aad, 128.into())
                .map_err(|e| Retry::Final(KeyError::Provider(ck(e))))?;
            open.session
                .encrypt(&Mechanism::AesGcm(params), open.key, key.expose())
                .map_err(|e| classify(e, || KeyError::Provider("AES-GCM wrap refused".into())))
        })?;
        if sealed.len() != WRAPPED_KEY_LEN - 1 - NONCE_LEN {
            return Err(KeyError::Provider(format!(
                "the device returned {} bytes for a wrapped key",
                sealed.len()
            )));
        }
        let mut out = Vec::with_capacity(WRAPPED_KEY_LEN);
        out.push(WRAP_FORMAT_PKCS11);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, label: &KeyLabel, wrapped: &[u8]) -> Result<SecretKey, KeyError> {
        check_layout(label, wrapped, WRAP_FORMAT_PKCS11)?;
        let aad = label.aad();
        let plain = self.with_session(|open| {
            let mut iv = [0u8; NONCE_LEN];
            iv.copy_from_slice(&wrapped[1..1 + NONCE_LEN]);
            let params = GcmParams::new(&mut iv, &aad, 128.into())
                .map_err(|e| Retry::Final(KeyError::Provider(ck(e))))?;
            open.session
                .decrypt(
                    &Mechanism::AesGcm(params),
                    open.key,
                    &wrapped[1 + NONCE_LEN..],
                )
                .map(Zeroizing::new)
                .map_err(|e| classify(e, || KeyError::Unwrap(label_name(label))))
        })?;
        SecretKey::from_slice(&plain).ok_or_else(|| KeyError::Malformed(label_name(label)))
    }
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
