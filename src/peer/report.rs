//! `POST /v1/admin/watch/reports` (role `watcher`): one check of one
//! payment page, as `cardvault watch run` sends it — its name, URL,
//! interval, outcome and the differences it found (kind and subject:
//! script URLs, hashes, header names, origins; never page content). And
//! `POST /v1/admin/watch/approvals` (an admin): a baseline approved, by its
//! digest, with a justification. Every field is bounded and checked; the
//! page name becomes a metrics label, so it is a short plain name.

use serde::{Deserialize, Serialize};

use super::body::BodyError;

/// Most differences one report may carry.
pub const MAX_DIFFERENCES: usize = 256;

/// The longest interval a page may be checked at: PCI DSS 11.6.1 asks
/// for weekly at least.
pub const MAX_INTERVAL_S: u64 = 7 * 86_400;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The page matched its baseline.
    Matches,
    /// The page differed (`differences` names how).
    Changed,
    /// The page could not be checked (`reason` says why).
    Unchecked,
}

/// One difference, as reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedDifference {
    /// `script_added`, `header_weakened`, …
    pub kind: String,
    /// The script URL, hash, header, origin or form action.
    pub subject: String,
}

/// One approved script of a baseline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovedScript {
    /// Its URL, or `inline`.
    pub script: String,
    /// `sha384-…` of its bytes.
    pub sha384: String,
    /// Why the page needs it (PCI DSS 6.4.3).
    pub justification: String,
}

/// The approved baseline a check was made against: sent with the first
/// report after the watcher starts and whenever the file changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedBaseline {
    /// SHA-256 of the baseline file, hex.
    pub sha256: String,
    /// Every approved script with its justification.
    pub scripts: Vec<ApprovedScript>,
}

/// One report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchReport {
    /// The page's name: 1–64 of `a-z 0-9 . _ -`.
    pub page: String,
    /// Its URL (http or https, at most 2,048 bytes).
    pub url: String,
    /// How often it is checked, seconds (60 to a week).
    pub interval_s: u64,
    /// How the check ended.
    pub outcome: Outcome,
    /// What differed.
    #[serde(default)]
    pub differences: Vec<ReportedDifference>,
    /// Why it could not be checked (at most 500 bytes).
    #[serde(default)]
    pub reason: Option<String>,
    /// The baseline, when it is new to this watcher run.
    #[serde(default)]
    pub baseline: Option<ReportedBaseline>,
    /// SHA-256 of the baseline file checked against (every checked report).
    #[serde(default)]
    pub baseline_sha256: Option<String>,
    /// The admins' signed approvals found beside that baseline (at most
    /// [`MAX_APPROVALS`]).
    #[serde(default)]
    pub approvals: Vec<SignedApproval>,
}

/// Most signed approvals one report may carry (one per vault node).
pub const MAX_APPROVALS: usize = 8;

/// An admin's approval of a baseline file, signed by the vault's evidence
/// key when it was given (`POST /v1/admin/watch/approvals` answers it;
/// `cardvault watch approve` keeps it beside the baseline; the watcher
/// sends it with every report, and the vault checks the signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedApproval {
    /// The page's name.
    pub page: String,
    /// SHA-256 of the approved baseline file, hex.
    pub baseline_sha256: String,
    /// Why (as the admin gave it).
    pub justification: String,
    /// The admin principal.
    pub approved_by: String,
    /// When (RFC 3339).
    pub approved_at: String,
    /// The evidence key's fingerprint.
    pub key: String,
    /// Ed25519 signature of [`SignedApproval::statement`], hex.
    pub signature: String,
}

impl SignedApproval {
    /// The bytes signed: one field per line, each a single line already
    /// (checked when approved and when reported); the key is the one whose
    /// signature verifies, so it is not among them.
    pub fn statement(&self) -> Vec<u8> {
        format!(
            "cardvault page baseline approval v1\npage={}\nbaseline_sha256={}\njustification={}\napproved_by={}\napproved_at={}\n",
            self.page, self.baseline_sha256, self.justification, self.approved_by, self.approved_at
        )
        .into_bytes()
    }

    /// Every field bounded and on one line.
    fn well_formed(&self) -> bool {
        let plain = |t: &str| t.len() <= 500 && !t.chars().any(char::is_control);
        [
            &self.page,
            &self.justification,
            &self.approved_by,
            &self.approved_at,
            &self.key,
        ]
        .iter()
        .all(|t| plain(t))
            && is_sha256(&self.baseline_sha256)
            && self.signature.len() == 128
            && self.signature.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// An admin's approval of a page's baseline (PCI DSS 6.4.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineApproval {
    /// The page's name.
    pub page: String,
    /// SHA-256 of the approved baseline file, hex.
    pub baseline_sha256: String,
    /// Why (1–200 characters, nothing card-number-like).
    pub justification: String,
}

impl BaselineApproval {
    /// Checks the fields; returns the trimmed justification.
    pub fn validate(&self) -> Result<String, BodyError> {
        check_page_name(&self.page)?;
        if !is_sha256(&self.baseline_sha256) {
            return Err(BodyError::Invalid("baseline_sha256 must be 64 hex digits"));
        }
        super::body::check_reason(&self.justification)
    }
}

/// A page name: 1–64 of `a-z 0-9 . _ -`.
fn check_page_name(page: &str) -> Result<(), BodyError> {
    let ok = !page.is_empty()
        && page.len() <= 64
        && page
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BodyError::Invalid(
            "page must be 1-64 characters of a-z, 0-9, '.', '_' and '-'",
        ))
    }
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl WatchReport {
    /// Checks every field's shape and bounds (the messages are fixed).
    pub fn validate(&self) -> Result<(), BodyError> {
        check_page_name(&self.page)?;
        let url_ok = self.url.len() <= 2048
            && (self.url.starts_with("https://") || self.url.starts_with("http://"))
            && !self.url.bytes().any(|b| b.is_ascii_control());
        if !url_ok {
            return Err(BodyError::Invalid(
                "url must be an http(s) URL of at most 2048 bytes",
            ));
        }
        if !(60..=MAX_INTERVAL_S).contains(&self.interval_s) {
            return Err(BodyError::Invalid(
                "interval_s must be between 60 and 604800 (PCI DSS 11.6.1: at least weekly)",
            ));
        }
        if self.differences.len() > MAX_DIFFERENCES {
            return Err(BodyError::Invalid("at most 256 differences per report"));
        }
        for d in &self.differences {
            let kind_ok = !d.kind.is_empty()
                && d.kind.len() <= 32
                && d.kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            if !kind_ok || d.subject.len() > 2048 || d.subject.bytes().any(|b| b.is_ascii_control())
            {
                return Err(BodyError::Invalid(
                    "each difference needs a kind (a-z and '_') and a subject of at most 2048 bytes",
                ));
            }
        }
        if self
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > 500 || r.bytes().any(|b| b.is_ascii_control()))
        {
            return Err(BodyError::Invalid(
                "reason must be at most 500 bytes, one line",
            ));
        }
        if let Some(baseline) = &self.baseline {
            let digest_ok = is_sha256(&baseline.sha256);
            let plain =
                |t: &str, max: usize| t.len() <= max && !t.bytes().any(|b| b.is_ascii_control());
            let scripts_ok = baseline.scripts.len() <= MAX_DIFFERENCES
                && baseline.scripts.iter().all(|s| {
                    plain(&s.script, 2048)
                        && s.sha384.starts_with("sha384-")
                        && plain(&s.sha384, 100)
                        && !s.justification.trim().is_empty()
                        && plain(&s.justification, 500)
                });
            if !digest_ok || !scripts_ok {
                return Err(BodyError::Invalid(
                    "baseline needs a sha256 (64 hex digits) and at most 256 scripts, each with a sha384 and a justification of at most 500 bytes",
                ));
            }
        }
        if self
            .baseline_sha256
            .as_deref()
            .is_some_and(|d| !is_sha256(d))
        {
            return Err(BodyError::Invalid("baseline_sha256 must be 64 hex digits"));
        }
        if self.approvals.len() > MAX_APPROVALS
            || !self.approvals.iter().all(SignedApproval::well_formed)
        {
            return Err(BodyError::Invalid(
                "approvals: at most 8, each as the vault signed it (fields of at most 500 bytes, one line, a 128-hex-digit signature)",
            ));
        }
        let consistent = match self.outcome {
            Outcome::Matches => self.differences.is_empty(),
            Outcome::Changed => !self.differences.is_empty(),
            Outcome::Unchecked => self.reason.is_some() && self.differences.is_empty(),
        };
        if !consistent {
            return Err(BodyError::Invalid(
                "outcome matches has no differences, changed has some, unchecked has a reason",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> Result<(), BodyError> {
        serde_json::from_str::<WatchReport>(json)
            .map_err(|_| BodyError::Invalid("shape"))?
            .validate()
    }

    #[test]
    fn reports_are_bounded_and_consistent() {
        assert!(report(r#"{"page":"checkout","url":"https://shop.example/pay","interval_s":3600,"outcome":"matches"}"#).is_ok());
        assert!(report(r#"{"page":"checkout","url":"https://shop.example/pay","interval_s":3600,"outcome":"changed","differences":[{"kind":"script_added","subject":"https://evil.example/s.js"}]}"#).is_ok());
        for bad in [
            r#"{"page":"Check Out","url":"https://shop.example/pay","interval_s":3600,"outcome":"matches"}"#,
            r#"{"page":"checkout","url":"javascript:alert(1)","interval_s":3600,"outcome":"matches"}"#,
            r#"{"page":"checkout","url":"https://shop.example/pay","interval_s":700000,"outcome":"matches"}"#,
            r#"{"page":"checkout","url":"https://shop.example/pay","interval_s":3600,"outcome":"changed"}"#,
            r#"{"page":"checkout","url":"https://shop.example/pay","interval_s":3600,"outcome":"unchecked"}"#,
            r#"{"page":"checkout","url":"https://shop.example/pay","interval_s":3600,"outcome":"matches","extra":1}"#,
        ] {
            assert!(report(bad).is_err(), "{bad}");
        }
    }
}
