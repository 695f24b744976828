//! Who may do what: the `[principals."NAME"]` and `[tenants."NAME"]`
//! sections, parsed into typed values when the file is loaded ([`Role`],
//! [`TenantId`], [`HoursUtc`], [`TokenMode`]), so nothing parses them again.
//! They live here rather than beside identity and the monitor because those
//! import the config; the reverse import would make the two depend on each
//! other.

use serde::{Deserialize, Serialize};

use super::oracle_guard::GuardOverrides;
use crate::domain::{TenantId, TokenProfile};
use crate::vault::TokenMode;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `POST /v1/tokenize`, `POST /v1/tokenize/batch`.
    Tokenize,
    /// `POST /v1/detokenize`, `POST /v1/detokenize/batch`.
    Detokenize,
    /// `GET /v1/tokens/{token}`.
    Read,
    /// `DELETE /v1/tokens/{token}`.
    Delete,
    /// Administrative operations (key rotation, alert clearing, sealing).
    Admin,
    /// Handing in a KEK share (`POST /v1/admin/unseal`); nothing else.
    Custodian,
    /// `POST /v1/lookup`: "is this card on file?" — a separate grant,
    /// because the answer confirms a guessed card number.
    Lookup,
    /// Reporting payment-page checks (`POST /v1/admin/watch/reports`,
    /// `cardvault watch run`); nothing else.
    Watcher,
}

impl Role {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Tokenize => "tokenize",
            Role::Detokenize => "detokenize",
            Role::Read => "read",
            Role::Delete => "delete",
            Role::Admin => "admin",
            Role::Custodian => "custodian",
            Role::Lookup => "lookup",
            Role::Watcher => "watcher",
        }
    }
}

/// One principal's access.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The tenant it acts in.
    pub tenant: TenantId,
    /// What it may do.
    pub roles: Vec<Role>,
    /// UTC hours in which it is expected to detokenize, `"HH:MM-HH:MM"`
    /// (may wrap midnight); a detokenization outside them raises an alert.
    #[serde(default)]
    pub detokenize_hours_utc: Option<HoursUtc>,
    /// Where its `admin` role reaches: its own tenant (default) or every
    /// tenant (`"global"`, for the vault's operators).
    #[serde(default)]
    pub scope: AdminScope,
    /// Every detokenization must carry a `reason` (else 400
    /// `reason_required`); the reason goes to the audit event.
    #[serde(default)]
    pub require_reason: bool,
}

/// The reach of a principal's admin role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminScope {
    /// Only principals and keys of its own tenant.
    #[default]
    Tenant,
    /// Every tenant.
    Global,
}

/// A daily window of UTC minutes, `[start, end)`, possibly wrapping
/// midnight. Written `"HH:MM-HH:MM"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HoursUtc {
    start: u16,
    end: u16,
}

impl TryFrom<String> for HoursUtc {
    type Error = &'static str;
    fn try_from(text: String) -> Result<HoursUtc, &'static str> {
        HoursUtc::parse(&text).ok_or("must be \"HH:MM-HH:MM\" (UTC, start and end differ)")
    }
}

impl From<HoursUtc> for String {
    fn from(hours: HoursUtc) -> String {
        format!(
            "{:02}:{:02}-{:02}:{:02}",
            hours.start / 60,
            hours.start % 60,
            hours.end / 60,
            hours.end % 60
        )
    }
}

impl HoursUtc {
    /// Parses `"HH:MM-HH:MM"`.
    pub fn parse(text: &str) -> Option<HoursUtc> {
        let minutes = |hm: &str| {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
            (h < 24 && m < 60 && hm.trim().len() == 5).then_some(h * 60 + m)
        };
        let (start, end) = text.split_once('-')?;
        let (start, end) = (minutes(start)?, minutes(end)?);
        (start != end).then_some(HoursUtc { start, end })
    }

    /// Whether `minute_of_day` (0..1440, UTC) falls inside.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start || minute_of_day < self.end
        }
    }
}

/// One tenant's settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// `deterministic` (default) or `random`.
    #[serde(default)]
    pub token_mode: TokenMode,
    /// `bin_last4` (default) or `last4`: which PAN digits tokens keep.
    #[serde(default)]
    pub token_profile: TokenProfile,
    /// This tenant's oracle-guard thresholds, where they differ.
    #[serde(default)]
    pub oracle_guard: GuardOverrides,
}
