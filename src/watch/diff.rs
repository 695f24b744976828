//! One check against its baseline: every difference named (PCI DSS
//! 11.6.1) — a script added, removed or changed (its URL and hash, and who
//! inserted it), an inline script added or removed, a security header
//! added, removed, weakened or changed, a frame's origin (the vault's card
//! frame missing or moved), a form's action.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::baseline::Baseline;
use super::inventory::Inventory;

/// One difference between the approved page and the page as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What kind: `script_added`, `script_removed`, `script_changed`,
    /// `inline_script_added`, `inline_script_removed`, `header_added`,
    /// `header_removed`, `header_weakened`, `header_changed`,
    /// `frame_added`, `frame_removed`, `collect_frame_missing`,
    /// `form_added`, `form_removed`.
    pub kind: &'static str,
    /// The script URL, inline hash, header name, frame origin or form
    /// action it is about.
    pub subject: String,
    /// What changed, in words.
    pub detail: String,
}

fn diff(kind: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Difference {
    Difference {
        kind,
        subject: subject.into(),
        detail: detail.into(),
    }
}

/// Every difference of `found` from `baseline`, in a stable order.
pub fn compare(baseline: &Baseline, found: &Inventory) -> Vec<Difference> {
    let approved = &baseline.inventory;
    let mut out = Vec::new();
    scripts(approved, found, &mut out);
    inline_scripts(approved, found, &mut out);
    headers(&approved.headers, &found.headers, &mut out);
    frames(baseline, found, &mut out);
    let before = approved.forms.iter().map(|f| f.action.as_str()).collect();
    let now = found.forms.iter().map(|f| f.action.as_str()).collect();
    set_changes(
        &before,
        &now,
        ("form_added", |a| format!("a form now submits to {a}")),
        ("form_removed", |a| {
            format!("no form submits to {a} any more")
        }),
        &mut out,
    );
    out
}

/// A kind of difference and how it reads for one member.
type Named = (&'static str, fn(&str) -> String);

/// The members of `now` not in `before` (`added`) and of `before` not in
/// `now` (`removed`).
fn set_changes(
    before: &BTreeSet<&str>,
    now: &BTreeSet<&str>,
    added: Named,
    removed: Named,
    out: &mut Vec<Difference>,
) {
    for member in now.difference(before) {
        out.push(diff(added.0, *member, (added.1)(member)));
    }
    for member in before.difference(now) {
        out.push(diff(removed.0, *member, (removed.1)(member)));
    }
}

fn scripts(approved: &Inventory, found: &Inventory, out: &mut Vec<Difference>) {
    let before: BTreeMap<&str, _> = approved
        .scripts
        .iter()
        .map(|s| (s.url.as_str(), s))
        .collect();
    let now: BTreeMap<&str, _> = found.scripts.iter().map(|s| (s.url.as_str(), s)).collect();
    for (url, script) in &now {
        match before.get(url) {
            None => out.push(diff(
                "script_added",
                *url,
                format!(
                    "{url} ({}) is not approved; inserted by {}",
                    script.sha384,
                    inserted(&script.inserted_by)
                ),
            )),
            Some(was) if was.sha384 != script.sha384 => out.push(diff(
                "script_changed",
                *url,
                format!("{url} changed: {} → {}", was.sha384, script.sha384),
            )),
            Some(was) if was.inserted_by != script.inserted_by => out.push(diff(
                "script_changed",
                *url,
                format!(
                    "{url} is now inserted by {}, was by {}",
                    inserted(&script.inserted_by),
                    inserted(&was.inserted_by)
                ),
            )),
            Some(_) => {}
        }
    }
    for url in before.keys().filter(|u| !now.contains_key(*u)) {
        out.push(diff(
            "script_removed",
            *url,
            format!("{url} was not loaded"),
        ));
    }
}

fn inserted(by: &str) -> String {
    if by == "html" {
        "the page's HTML".into()
    } else {
        format!("the script {by}")
    }
}

fn inline_scripts(approved: &Inventory, found: &Inventory, out: &mut Vec<Difference>) {
    let before: BTreeMap<&str, &str> = approved
        .inline_scripts
        .iter()
        .map(|s| (s.sha384.as_str(), s.starts_with.as_str()))
        .collect();
    let now: BTreeMap<&str, &str> = found
        .inline_scripts
        .iter()
        .map(|s| (s.sha384.as_str(), s.starts_with.as_str()))
        .collect();
    for (hash, start) in &now {
        if !before.contains_key(hash) {
            out.push(diff(
                "inline_script_added",
                *hash,
                format!("an inline script not approved: {hash} (\"{start}…\")"),
            ));
        }
    }
    for (hash, start) in &before {
        if !now.contains_key(hash) {
            out.push(diff(
                "inline_script_removed",
                *hash,
                format!("the approved inline script {hash} (\"{start}…\") is gone"),
            ));
        }
    }
}

fn headers(
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
    out: &mut Vec<Difference>,
) {
    for name in super::inventory::SECURITY_HEADERS {
        match (before.get(name), now.get(name)) {
            (None, None) => {}
            (None, Some(value)) => {
                out.push(diff("header_added", name, format!("{name}: {value} (new)")))
            }
            (Some(value), None) => out.push(diff(
                "header_removed",
                name,
                format!("{name} removed (was: {value})"),
            )),
            (Some(was), Some(value)) if was != value => {
                let kind = if weakens(name, was, value) {
                    "header_weakened"
                } else {
                    "header_changed"
                };
                out.push(diff(kind, name, format!("{name}: {was} → {value}")));
            }
            (Some(_), Some(_)) => {}
        }
    }
}

/// The directives of a CSP: name → its sources.
fn directives(csp: &str) -> BTreeMap<String, BTreeSet<String>> {
    csp.split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect()
}

/// Whether a header's new value lets more through than the old: for CSP,
/// a directive dropped or a source added to one (`'unsafe-inline'`, a
/// host, `*`); for the others, any change but a stricter well-known value.
fn weakens(name: &str, was: &str, now: &str) -> bool {
    match name {
        "content-security-policy" => {
            let (was, now) = (directives(was), directives(now));
            was.iter()
                .any(|(directive, sources)| match now.get(directive) {
                    None => true,
                    Some(now_sources) => now_sources.difference(sources).next().is_some(),
                })
        }
        "x-frame-options" => {
            now.eq_ignore_ascii_case("sameorigin") && was.eq_ignore_ascii_case("deny")
        }
        _ => true,
    }
}

fn frames(baseline: &Baseline, found: &Inventory, out: &mut Vec<Difference>) {
    let before: BTreeSet<&str> = baseline
        .inventory
        .frames
        .iter()
        .map(|f| f.origin.as_str())
        .collect();
    let now: BTreeSet<&str> = found.frames.iter().map(|f| f.origin.as_str()).collect();
    set_changes(
        &before,
        &now,
        ("frame_added", |o| {
            format!("a frame from {o} is not approved")
        }),
        ("frame_removed", |o| format!("no frame from {o} any more")),
        out,
    );
    if let Some(collect) = &baseline.collect_origin
        && !now.contains(collect.as_str())
    {
        out.push(diff(
            "collect_frame_missing",
            collect.as_str(),
            format!("the vault's card frame ({collect}) is not on the page"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_loosening_is_weakening_and_tightening_is_a_change() {
        let strict = "default-src 'self'; script-src 'self' 'nonce-*'";
        assert!(weakens(
            "content-security-policy",
            strict,
            "default-src 'self'"
        ));
        assert!(weakens(
            "content-security-policy",
            strict,
            "default-src 'self'; script-src 'self' 'nonce-*' 'unsafe-inline'"
        ));
        assert!(!weakens(
            "content-security-policy",
            strict,
            "default-src 'self'; script-src 'nonce-*'"
        ));
    }
}
