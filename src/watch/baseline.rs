//! The approved state of a payment page (PCI DSS 6.4.3): a reviewable TOML
//! file written by `cardvault watch baseline` from one check, in which
//! every script — external and inline — must carry a `justification`
//! before `cardvault watch check` accepts it. A malformed file, or a
//! script without one, is refused naming the line.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::inventory::{ExternalScript, Form, Frame, InlineScript, Inventory};

/// Largest baseline file read.
const MAX_BYTES: u64 = 4 << 20;

/// Why a baseline cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file could not be read.
    #[error("{0}")]
    Io(String),
    /// It is not a baseline, or a script lacks its justification.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        problem: String,
    },
}

/// A baseline as read: the approved inventory and its justifications.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The page it approves.
    pub page: String,
    /// The origin the vault's card frame must come from, if the page
    /// embeds one.
    pub collect_origin: Option<String>,
    /// The approved inventory.
    pub inventory: Inventory,
    /// Each approved script's justification, by URL or inline hash.
    pub justifications: BTreeMap<String, String>,
    /// SHA-256 of the file's bytes as read, hex: what an admin approves
    /// and the watcher reports.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: u32,
    page: String,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    collect_origin: Option<String>,
    #[serde(default, rename = "script")]
    scripts: Vec<ScriptEntry>,
    #[serde(default, rename = "inline_script")]
    inline_scripts: Vec<InlineEntry>,
    #[serde(default, rename = "frame")]
    frames: Vec<Frame>,
    #[serde(default, rename = "form")]
    forms: Vec<Form>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptEntry {
    url: String,
    sha384: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    integrity: Option<String>,
    inserted_by: String,
    justification: toml::Spanned<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineEntry {
    sha384: String,
    starts_with: String,
    justification: toml::Spanned<String>,
}

/// The text of a new baseline for `inventory`: every justification empty,
/// to be written by whoever approves the page.
pub fn render(inventory: &Inventory, collect_origin: Option<&str>, created: &str) -> String {
    let file = File {
        format: 1,
        page: inventory.url.clone(),
        created: created.to_owned(),
        collect_origin: collect_origin.map(str::to_owned),
        scripts: inventory
            .scripts
            .iter()
            .map(|s| ScriptEntry {
                url: s.url.clone(),
                sha384: s.sha384.clone(),
                integrity: s.integrity.clone(),
                inserted_by: s.inserted_by.clone(),
                justification: toml::Spanned::new(0..0, String::new()),
            })
            .collect(),
        inline_scripts: inventory
            .inline_scripts
            .iter()
            .map(|s| InlineEntry {
                sha384: s.sha384.clone(),
                starts_with: s.starts_with.clone(),
                justification: toml::Spanned::new(0..0, String::new()),
            })
            .collect(),
        frames: inventory.frames.clone(),
        forms: inventory.forms.clone(),
        headers: inventory.headers.clone(),
    };
    let body = toml::to_string_pretty(&file).unwrap_or_default();
    format!(
        "# cardvault watch baseline (PCI DSS 6.4.3 / 11.6.1): the approved scripts, frames,\n\
         # forms and security headers of {}.\n\
         # Every [[script]] and [[inline_script]] needs a justification — why this\n\
         # page needs it — before `cardvault watch check` accepts this file.\n\n{body}",
        inventory.url
    )
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Reads and checks a baseline file.
pub fn read(path: &Path) -> Result<Baseline, BaselineError> {
    let invalid = |problem: String| BaselineError::Invalid {
        path: path.display().to_string(),
        problem,
    };
    let meta = std::fs::metadata(path)
        .map_err(|e| BaselineError::Io(format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_BYTES {
        return Err(invalid(format!("larger than {} MiB", MAX_BYTES >> 20)));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| BaselineError::Io(format!("{}: {e}", path.display())))?;
    let file: File = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| line_of(&text, s.start));
        match line {
            Some(line) => invalid(format!("line {line}: {}", e.message())),
            None => invalid(e.message().to_owned()),
        }
    })?;
    if file.format != 1 {
        return Err(invalid(format!("unknown format {}", file.format)));
    }
    let mut justifications = BTreeMap::new();
    let mut scripts = Vec::new();
    for s in file.scripts {
        let why = s.justification.get_ref().trim();
        if why.is_empty() {
            return Err(invalid(format!(
                "line {}: the script {} has no justification (PCI DSS 6.4.3: write why the page needs it)",
                line_of(&text, s.justification.span().start),
                s.url
            )));
        }
        justifications.insert(s.url.clone(), why.to_owned());
        scripts.push(ExternalScript {
            url: s.url,
            sha384: s.sha384,
            integrity: s.integrity,
            inserted_by: s.inserted_by,
        });
    }
    let mut inline_scripts = Vec::new();
    for s in file.inline_scripts {
        let why = s.justification.get_ref().trim();
        if why.is_empty() {
            return Err(invalid(format!(
                "line {}: the inline script {} (\"{}…\") has no justification",
                line_of(&text, s.justification.span().start),
                s.sha384,
                s.starts_with
            )));
        }
        justifications.insert(s.sha384.clone(), why.to_owned());
        inline_scripts.push(InlineScript {
            sha384: s.sha384,
            starts_with: s.starts_with,
        });
    }
    Ok(Baseline {
        sha256: {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        },
        collect_origin: file.collect_origin,
        inventory: Inventory {
            url: file.page.clone(),
            scripts,
            inline_scripts,
            frames: file.frames,
            forms: file.forms,
            headers: file.headers,
        },
        page: file.page,
        justifications,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baseline_round_trips_once_justified_and_names_the_line_otherwise() {
        let inventory = Inventory {
            url: "https://shop.example/checkout".into(),
            scripts: vec![ExternalScript {
                url: "https://shop.example/app.js".into(),
                sha384: "sha384-AAAA".into(),
                integrity: None,
                inserted_by: "html".into(),
            }],
            inline_scripts: vec![InlineScript {
                sha384: "sha384-BBBB".into(),
                starts_with: "window.handle = CardVault.mount(".into(),
            }],
            frames: vec![Frame {
                origin: "https://vault.example".into(),
            }],
            forms: vec![],
            headers: BTreeMap::from([(
                "content-security-policy".into(),
                "default-src 'self'".into(),
            )]),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.toml");
        let text = render(
            &inventory,
            Some("https://vault.example"),
            "2026-12-07T00:00:00Z",
        );
        std::fs::write(&path, &text).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("has no justification"), "{err}");
        let line = text
            .lines()
            .position(|l| l.starts_with("justification"))
            .unwrap()
            + 1;
        assert!(err.contains(&format!("line {line}:")), "{err}\n{text}");
        std::fs::write(
            &path,
            text.replace(
                "justification = \"\"",
                "justification = \"the shop's checkout\"",
            ),
        )
        .unwrap();
        let baseline = read(&path).unwrap();
        assert_eq!(baseline.inventory, inventory);
        assert_eq!(
            baseline.collect_origin.as_deref(),
            Some("https://vault.example")
        );
        std::fs::write(&path, "format = 1\npage = \"x\"\ncreated = 3\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }
}
