//! The bundle as a readable Markdown file: one heading per requirement,
//! facts as nested lists, arrays of objects as tables.

use serde_json::Value;

/// What a development vault's bundle says of itself.
pub const DEVELOPMENT: &str = "A development vault (cardvault serve --dev): its KEK, keys and PKI are dev files beside the data. Not evidence for an assessment.";

/// A readable rendering: one heading per requirement, facts as nested
/// lists, arrays of objects as tables.
/// A development vault's bundle says so under the title and in every
/// section's heading.
pub fn render_markdown(bundle: &Value) -> String {
    let development = bundle["development"].as_bool().unwrap_or(false);
    let mut out = format!(
        "# PCI DSS v4.0.1 evidence — cardvault\n\n{}Created {}. Signed in `signature.json` with the vault's evidence key (verify with `cardvault evidence verify DIR --pubkey evidence.pub`, or with openssl: docs/evidence.md). Each section lists where its facts come from: measured (a file's stat, the audit trail, a scan) or declared (the config, this build's code).\n\n",
        if development {
            format!("**{DEVELOPMENT}**\n\n")
        } else {
            String::new()
        },
        bundle["created"].as_str().unwrap_or("")
    );
    for s in bundle["sections"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "## {} — {}{}\n\n",
            s["requirement"].as_str().unwrap_or(""),
            s["title"].as_str().unwrap_or(""),
            if development {
                " (development vault)"
            } else {
                ""
            }
        ));
        render_value(&s["facts"], 0, &mut out);
        if let Some(sources) = s["sources"].as_object().filter(|m| !m.is_empty()) {
            out.push_str("\n*Sources:*\n\n");
            for (fact, source) in sources {
                out.push_str(&format!("- {fact}: {}\n", scalar(source)));
            }
        }
        out.push('\n');
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.replace('|', "\\|").replace('\n', " "),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn render_value(v: &Value, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(_) => {
                        out.push_str(&format!("{indent}- **{k}**:\n"));
                        render_value(v, depth + 1, out);
                    }
                    Value::Array(items) if items.iter().any(Value::is_object) => {
                        out.push_str(&format!("{indent}- **{k}**:\n\n"));
                        render_table(items, out);
                        out.push('\n');
                    }
                    Value::Array(items) => out.push_str(&format!(
                        "{indent}- **{k}**: {}\n",
                        if items.is_empty() {
                            "none".into()
                        } else {
                            items.iter().map(scalar).collect::<Vec<_>>().join(", ")
                        }
                    )),
                    other => out.push_str(&format!("{indent}- **{k}**: {}\n", scalar(other))),
                }
            }
        }
        other => out.push_str(&format!("{indent}{}\n", scalar(other))),
    }
}

fn render_table(items: &[Value], out: &mut String) {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        for k in item.as_object().into_iter().flat_map(|m| m.keys()) {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    out.push_str(&format!("| {} |\n", columns.join(" | ")));
    out.push_str(&format!("|{}\n", " --- |".repeat(columns.len())));
    for item in items {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &item[c] {
                Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
                Value::Object(_) => scalar(&Value::String(item[c].to_string())),
                other => scalar(other),
            })
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
}
