//! Request bodies as they arrive on the wire, with no HTTP types: the
//! request shapes of every route, the refusal of bodies that carry card
//! security codes, track data or PINs (PCI DSS 3.3.1), and the bounded
//! parse of batch bodies, which stops counting at the limit instead of
//! expanding millions of items into memory. Builds without the `vault`
//! feature, so the fuzz targets reach it. Error messages are fixed and
//! never quote the input; values that may hold card data are
//! [`SecretString`]s (wiped on drop, never printed).

use std::collections::HashMap;

use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON of the route's shape, or it names sensitive data; the
    /// message is fixed.
    Invalid(&'static str),
    /// A batch with more items than the limit.
    TooMany,
}

/// Field names that announce sensitive authentication data, which PCI DSS
/// 3.3.1 forbids storing: refused outright.
pub const SENSITIVE_FIELDS: [&str; 12] = [
    "cvv",
    "cvc",
    "cid",
    "csc",
    "cav",
    "security_code",
    "securitycode",
    "track",
    "magstripe",
    "pin",
    "pinblock",
    "pin_block",
];

fn names_sensitive_data(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE_FIELDS
        .iter()
        .any(|s| key == *s || (s.len() > 3 && key.contains(s)) || key.starts_with(s))
}

/// Parses a single-item body: unknown fields refused.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    serde_json::from_slice(bytes).map_err(|_| refusal(bytes))
}

/// A parsed batch body.
pub struct Batch {
    /// The items, in order.
    pub items: Vec<SecretString>,
    /// `"reason"`, where the route allows one.
    pub reason: Option<SecretString>,
    /// `"ttl_s"` of a tokenize batch (field `pans`): its tokens expire.
    pub ttl_s: Option<u64>,
}

/// Parses a batch body `{"FIELD": [string, ...]}` (plus `"reason"` when
/// `with_reason`), stopping at the `max`-th item plus one
/// ([`BodyError::TooMany`]).
pub fn parse_batch(
    bytes: &[u8],
    field: &'static str,
    max: usize,
    with_reason: bool,
) -> Result<Batch, BodyError> {
    let too_many = std::cell::Cell::new(false);
    let seed = batch::Body {
        field,
        max,
        with_reason,
        too_many: &too_many,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde::de::DeserializeSeed::deserialize(seed, &mut de).and_then(|items| {
        de.end()?;
        Ok(items)
    });
    match parsed {
        Ok(items) => Ok(items),
        Err(_) if too_many.get() => Err(BodyError::TooMany),
        Err(_) => Err(refusal(bytes)),
    }
}

/// The refusal of a body that did not parse. Every request type refuses
/// unknown fields, so a body naming card security codes, track data or
/// PINs never parses; only then is it worth a second look to choose the
/// message.
fn refusal(bytes: &[u8]) -> BodyError {
    let sensitive = serde_json::from_slice::<HashMap<String, IgnoredAny>>(bytes)
        .is_ok_and(|fields| fields.keys().any(|k| names_sensitive_data(k)));
    if sensitive {
        BodyError::Invalid(
            "card security codes, track data and PINs are never accepted (PCI DSS 3.3.1)",
        )
    } else {
        BodyError::Invalid("body is not valid JSON of the expected shape (see docs/openapi.json)")
    }
}

/// The bounded parse of a batch body: a map with exactly one field, an
/// array of strings, counted as it is read.
mod batch {
    use std::cell::Cell;
    use std::fmt;

    use secrecy::SecretString;
    use serde::de::{DeserializeSeed, Error, MapAccess, SeqAccess, Visitor};

    pub(super) struct Body<'a> {
        pub(super) field: &'static str,
        pub(super) max: usize,
        pub(super) with_reason: bool,
        pub(super) too_many: &'a Cell<bool>,
    }

    impl<'de> DeserializeSeed<'de> for Body<'_> {
        type Value = super::Batch;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Body<'_> {
        type Value = super::Batch;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an object with the field {}", self.field)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut items = None;
            let mut reason = None;
            let mut ttl_s = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == self.field && items.is_none() {
                    items = Some(map.next_value_seed(Items {
                        max: self.max,
                        too_many: self.too_many,
                    })?);
                } else if key == "reason" && self.with_reason && reason.is_none() {
                    reason = Some(map.next_value::<SecretString>()?);
                } else if key == "ttl_s" && self.field == "pans" && ttl_s.is_none() {
                    ttl_s = Some(map.next_value::<u64>()?);
                } else {
                    return Err(A::Error::custom("unexpected field"));
                }
            }
            let items = items.ok_or_else(|| A::Error::missing_field(self.field))?;
            Ok(super::Batch {
                items,
                reason,
                ttl_s,
            })
        }
    }

    struct Items<'a> {
        max: usize,
        too_many: &'a Cell<bool>,
    }

    impl<'de> DeserializeSeed<'de> for Items<'_> {
        type Value = Vec<SecretString>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Items<'_> {
        type Value = Vec<SecretString>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {} strings", self.max)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            while let Some(item) = seq.next_element::<SecretString>()? {
                if items.len() == self.max {
                    self.too_many.set(true);
                    return Err(A::Error::custom("too many items"));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
}

/// An optional field: absent is `None` (`#[serde(default)]`), but an
/// explicit `null` is refused like any other value of the wrong type — the
/// API document says the field's type, and `null` is not it.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `POST /v1/tokenize`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// The card number.
    pub pan: SecretString,
    /// `MM/YY` or `MM/YYYY`.
    #[serde(default, deserialize_with = "present")]
    pub expiry: Option<String>,
    /// Seconds until the token expires (a new token only).
    #[serde(default, deserialize_with = "present")]
    pub ttl_s: Option<u64>,
}

/// `POST /v1/lookup`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// The card number to look for.
    pub pan: SecretString,
}

/// `POST /v1/detokenize`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    /// A caller may send a PAN here by mistake: wiped on drop too.
    pub token: SecretString,
    /// Why the PAN is needed (recorded in the audit event).
    #[serde(default, deserialize_with = "present")]
    pub reason: Option<SecretString>,
    /// Also hand over the security code held for the token (once).
    #[serde(default)]
    pub include_cvc: bool,
}

/// `POST /v1/tokens/{token}/cvc`: a security code to hold in memory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvcRequest {
    /// 3 or 4 digits.
    pub cvc: SecretString,
    /// Seconds to hold it (default 900, at most `cvc.max_ttl_s`).
    #[serde(default, deserialize_with = "present")]
    pub ttl_s: Option<u64>,
}

/// Longest reveal reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// Checks a reveal reason: at most [`MAX_REASON_CHARS`], no control
/// characters, and nothing that looks like a card number (12 or more digits
/// in a row, spaces and dashes between them ignored). Returns it trimmed.
pub fn check_reason(reason: &str) -> Result<String, BodyError> {
    const REFUSED: &str = "reason must be 1 to 200 characters, without control characters or anything that looks like a card number";
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(BodyError::Invalid(REFUSED));
    }
    if reason.chars().any(char::is_control) || holds_card_like_digits(reason, b" -") {
        return Err(BodyError::Invalid(REFUSED));
    }
    Ok(reason.to_owned())
}

/// Whether `text` holds 12 or more digits in a row (the shortest card
/// number), the bytes in `separators` between them ignored: a field that
/// is echoed, logged or made a file name must not be able to carry one.
pub fn holds_card_like_digits(text: &str, separators: &[u8]) -> bool {
    let mut digits = 0;
    for b in text.bytes() {
        if b.is_ascii_digit() {
            digits += 1;
            if digits >= 12 {
                return true;
            }
        } else if !separators.contains(&b) {
            digits = 0;
        }
    }
    false
}

/// `POST /v1/admin/alerts/clear`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// Whose block to lift.
    pub principal: String,
}

/// `POST /v1/admin/kek/rotate`: the KEK to rotate to. Paths are on the
/// vault's host; no key material travels in the request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum RotateKekRequest {
    /// A key file (`cardvault keys init --out FILE`).
    File {
        /// Its path.
        key_file: String,
    },
    /// A key in a PKCS#11 token (`cardvault keys init --pkcs11`); module,
    /// token and PIN file default to the current `[kek]`'s.
    Pkcs11 {
        /// The new key's label.
        key_label: String,
        /// The module, if not the current one.
        #[serde(default, deserialize_with = "present")]
        module: Option<String>,
        /// The token, if not the current one.
        #[serde(default, deserialize_with = "present")]
        token_label: Option<String>,
        /// The PIN file, if not the current one.
        #[serde(default, deserialize_with = "present")]
        pin_file: Option<String>,
    },
    /// A fresh split, written as share files before anything is rewrapped.
    Shamir {
        /// Shares to make.
        shares: u8,
        /// Shares needed.
        threshold: u8,
        /// Where the share files go (created 0700, never overwritten).
        out_dir: String,
        /// Custodian names (default custodian-1..N).
        #[serde(default)]
        custodians: Vec<String>,
    },
}

/// `POST /v1/admin/unseal`: one custodian's share file, as text. Wiped on
/// drop, printed redacted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsealRequest {
    /// The share file's contents.
    pub share: SecretString,
}

/// One line of `POST /v1/admin/import`: a token made elsewhere and its
/// PAN (wiped on drop, printed redacted), optionally its expiry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportLine {
    /// The token to keep.
    pub token: SecretString,
    /// Its card number.
    pub pan: SecretString,
    /// `MM/YY`.
    #[serde(default, deserialize_with = "present")]
    pub expiry: Option<String>,
}

/// `POST /v1/admin/tenants/{tenant}/export`: who can read the export.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// An age X25519 public key (`age1…`).
    pub recipient: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_field_names() {
        for k in [
            "cvv",
            "CVV2",
            "cvc",
            "cid",
            "csc",
            "track2",
            "track_data",
            "pin",
            "pin_block",
            "security_code",
        ] {
            assert!(names_sensitive_data(k), "{k}");
        }
        for k in ["pan", "pans", "expiry", "token", "tokens", "spinner"] {
            assert!(!names_sensitive_data(k), "{k}");
        }
    }

    #[test]
    fn request_secrets_print_redacted() {
        let body: TokenizeRequest =
            serde_json::from_str(r#"{"pan":"4111111111111111"}"#).expect("parses");
        let printed = format!("{:?}", body.pan);
        assert!(!printed.contains("4111"), "{printed}");
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn batches_stop_at_the_limit_and_keep_their_shape() {
        let len = |bytes: &[u8], max| parse_batch(bytes, "pans", max, false).map(|b| b.items.len());
        assert_eq!(len(br#"{"pans": ["1", "2"]}"#, 2), Ok(2));
        assert_eq!(
            len(br#"{"pans": ["1", "2", "3"]}"#, 2),
            Err(BodyError::TooMany)
        );
        // A reason only where the route allows one.
        assert!(parse_batch(br#"{"pans": ["1"], "reason": "x"}"#, "pans", 5, false).is_err());
        let with = parse_batch(br#"{"reason": "refund", "pans": ["1"]}"#, "pans", 5, true).unwrap();
        assert!(with.reason.is_some() && with.items.len() == 1);
        for bad in [
            &br#"{"tokens": ["1"]}"#[..],
            br#"{"pans": ["1"], "pans": ["2"]}"#,
            br#"{"pans": [1]}"#,
            br#"{"pans": ["1"]} trailing"#,
            br#"["1"]"#,
        ] {
            assert!(
                matches!(
                    parse_batch(bad, "pans", 5, false),
                    Err(BodyError::Invalid(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_batch(br#"{"pans": ["1"], "cvv": "123"}"#, "pans", 5, false)
                .map(|b| b.items.len()),
            Err(BodyError::Invalid(
                "card security codes, track data and PINs are never accepted (PCI DSS 3.3.1)"
            ))
        );
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn reasons_that_could_hold_a_card_number_are_refused() {
        assert_eq!(
            check_reason("  chargeback 2026-11 ").unwrap(),
            "chargeback 2026-11"
        );
        for bad in [
            "",
            "card 4111 1111 1111 1111",
            "4111-1111-1111",
            "line\nbreak",
            &"x".repeat(201),
        ] {
            assert!(check_reason(bad).is_err(), "{bad:?}");
        }
        assert!(check_reason("order 12345678901 refund").is_ok());
    }
}
