//! `cardvault scan` on a labelled corpus: every planted card number is
//! found (recall 100%) at its file and line, no decoy is reported
//! (timestamps, request ids, Luhn-valid numbers outside card ranges, digit
//! runs inside longer numbers, phone numbers, UUIDs, IBANs, tokens next to
//! their PANs), in plain text, CSV, JSON, SQL, `.gz` and UTF-16 files;
//! binaries skipped and counted; the exit status is the CI gate (0 clean,
//! 1 PANs, 2 unreadable); no output ever holds a card number; SARIF has
//! the shape code-scanning UIs read; tokens are confirmed against a
//! running vault.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::common::{self, DevServer, luhn_complete};

/// Card numbers planted in the corpus, as written (grouping kept).
struct Corpus {
    /// (file name, line, digits) of every planted PAN.
    pans: BTreeSet<(String, u64, String)>,
    /// (file name, line) of every planted token.
    tokens: BTreeSet<(String, u64)>,
}

/// One synthetic PAN per brand range and issued length, plus the public
/// test cards.
fn planted_pans() -> Vec<String> {
    let mut pans: Vec<String> = [
        "4111111111111111",
        "4012888888881881",
        "4222222222222",
        "4000000000000000006",
        "5555555555554444",
        "5105105105105100",
        "2223000048400011",
        "378282246310005",
        "371449635398431",
        "6011111111111117",
        "6011000990139424",
        "30569309025904",
        "38520000023237",
        "3530111333300000",
        "3566002020360505",
        "6200000000000005",
        "6212345678901000002",
        "6759649826438453",
        "500000000009",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for (prefix, len) in [
        ("49", 16),
        ("4", 13),
        ("45", 19),
        ("52", 16),
        ("2720", 16),
        ("34", 15),
        ("6445", 16),
        ("65", 19),
        ("3589", 17),
        ("36", 14),
        ("39", 16),
        ("62", 18),
        ("81", 16),
        ("58", 15),
        ("639", 19),
        ("67", 12),
    ] {
        let body = format!("{prefix}{}", "7".repeat(len - 1 - prefix.len()));
        pans.push(luhn_complete(&body));
    }
    pans
}

fn grouped(pan: &str, sep: char) -> String {
    // The groupings printed on cards and receipts.
    let sizes: &[usize] = match pan.len() {
        12 => &[4, 4, 4],
        13 => &[4, 4, 5],
        14 => &[4, 6, 4],
        15 => &[4, 6, 5],
        17 => &[4, 4, 4, 5],
        18 => &[4, 4, 4, 6],
        _ => &[4, 4, 4, 4, 3],
    };
    let mut out = String::new();
    let mut rest = pan;
    for &n in sizes {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(n.min(rest.len()));
        if !out.is_empty() {
            out.push(sep);
        }
        out.push_str(head);
        rest = tail;
    }
    out
}

/// A Luhn-failing variant with the same BIN and last 4: a token's shape.
fn token_for(pan: &str) -> String {
    let mut digits: Vec<u8> = pan.bytes().collect();
    for d in b'0'..=b'9' {
        digits[7] = d;
        if !cardvault::domain::luhn::passes(&digits) {
            break;
        }
    }
    String::from_utf8(digits).unwrap()
}

/// Lines that must yield nothing.
fn decoys() -> Vec<String> {
    let mut lines = vec![
        "ts=1733140800000 at=1733140800 us=1733140800123456".to_owned(),
        "request_id=9f1c2d3e-4b5a-4c6d-8e7f-901234567890 trace=4bf92f3577b34da6a3ce929d0e0e4736".into(),
        "uuid 123e4567-e89b-12d3-a456-426614174000 and 411111111111-1111-1111-1111-111111111111".into(),
        "phone +1 555-123-4567, +44 20 7946 0958, (212) 555-0100, 0049 30 1234 5678".into(),
        "iban DE89 3704 0044 0532 0130 00, GB29NWBK60161331926819, FR1420041010050500013M02606".into(),
        "inside a longer number: 99411111111111111199 and 41111111111111110000 and 4111111111111111.25".into(),
        "a decimal 0.4111111111111111 and a version 1.5555555555554444.2".into(),
        "glued: card4111111111111111 4111111111111111th _5555555555554444".into(),
        "amounts 1234.56 7890.12 order 20241202-000123 sku 12345678".into(),
        "wrong length for the brand: 411111111111116 3782822463100052 55555555555544446".into(),
    ];
    // Luhn-valid numbers outside every card range.
    for body in [
        "123456781234567",
        "999999999999999",
        "0000000000000",
        "7777777777777777",
    ] {
        lines.push(format!("luhn-valid id {}", luhn_complete(body)));
    }
    lines
}

/// Writes the corpus into `dir` and returns its labels.
fn write_corpus(dir: &Path) -> Corpus {
    let pans = planted_pans();
    let mut corpus = Corpus {
        pans: BTreeSet::new(),
        tokens: BTreeSet::new(),
    };
    let decoys = decoys();
    let mut files: Vec<(&str, Vec<String>)> = vec![
        ("orders.csv", vec!["id,customer,card,expiry,amount".into()]),
        ("app.log", vec![]),
        ("events.jsonl", vec![]),
        ("dump.sql", vec!["-- PostgreSQL database dump".into()]),
    ];
    for (i, pan) in pans.iter().enumerate() {
        let (file, line) = match i % 4 {
            0 => (
                0,
                format!("{i},\"Customer {i}\",{pan},12/27,{}.{:02}", i * 3, i % 100),
            ),
            1 => (
                1,
                format!(
                    "2024-12-02T10:15:{:02}.123Z INFO checkout card={} order=20241202-{i:06}",
                    i % 60,
                    grouped(pan, ' ')
                ),
            ),
            2 => (
                2,
                format!(
                    "{{\"order\":{i},\"pan\":\"{}\",\"ts\":1733140800000}}",
                    grouped(pan, '-')
                ),
            ),
            _ => (
                3,
                format!(
                    "INSERT INTO cards VALUES ({i}, '{pan}', '{}');",
                    token_for(pan)
                ),
            ),
        };
        let (name, lines) = &mut files[file];
        lines.push(decoys[i % decoys.len()].clone());
        lines.push(line);
        corpus
            .pans
            .insert(((*name).to_owned(), lines.len() as u64, pan.clone()));
        if file == 3 && pan.len() >= 16 {
            corpus
                .tokens
                .insert(((*name).to_owned(), lines.len() as u64));
        }
    }
    for (name, lines) in &mut files {
        lines.extend(decoys.iter().cloned());
        std::fs::write(dir.join(name), lines.join("\n") + "\n").unwrap();
    }
    // A gzip'd log and a UTF-16 export, each with one card.
    let gz = std::fs::File::create(dir.join("old.log.gz")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
    enc.write_all(
        format!(
            "{}\nrefund card 5105 1051 0510 5100 ok\n",
            decoys.join("\n")
        )
        .as_bytes(),
    )
    .unwrap();
    enc.finish().unwrap();
    corpus.pans.insert((
        "old.log.gz".into(),
        decoys.len() as u64 + 1,
        "5105105105105100".into(),
    ));
    let mut utf16 = vec![0xFF, 0xFE];
    for u in "Name\tCard\r\nJane\t3530111333300000\r\n".encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(dir.join("export.txt"), utf16).unwrap();
    corpus
        .pans
        .insert(("export.txt".into(), 2, "3530111333300000".into()));
    // A binary with a card in it: skipped and counted, not scanned.
    let mut binary = vec![0x7F, b'E', b'L', b'F', 0, 0, 0, 0];
    binary.extend_from_slice(b"4111111111111111");
    std::fs::write(dir.join("blob.bin"), binary).unwrap();
    corpus
}

fn scan(args: &[&str]) -> (Option<i32>, String, String) {
    let out = common::cardvault().arg("scan").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn file_name(finding: &Value) -> String {
    Path::new(finding["file"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_labelled_corpus_is_found_whole_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = write_corpus(tmp.path());
    let root = tmp.path().to_str().unwrap();
    let (code, out, err) = scan(&["--json", root]);
    assert_eq!(code, Some(1), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let findings = report["findings"].as_array().unwrap();

    let found_pans: BTreeSet<(String, u64)> = findings
        .iter()
        .filter(|f| f["kind"] == "pan")
        .map(|f| (file_name(f), f["line"].as_u64().unwrap()))
        .collect();
    let planted: BTreeSet<(String, u64)> = corpus
        .pans
        .iter()
        .map(|(f, l, _)| (f.clone(), *l))
        .collect();
    let missed: Vec<_> = planted.difference(&found_pans).collect();
    let false_positives: Vec<_> = found_pans.difference(&planted).collect();
    assert!(missed.is_empty(), "recall below 100%: missed {missed:?}");
    assert!(
        false_positives.is_empty(),
        "false positives: {false_positives:?}"
    );
    assert_eq!(
        findings.iter().filter(|f| f["kind"] == "pan").count(),
        corpus.pans.len(),
        "one finding per planted PAN"
    );
    let found_tokens: BTreeSet<(String, u64)> = findings
        .iter()
        .filter(|f| f["kind"] == "token")
        .map(|f| (file_name(f), f["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(found_tokens, corpus.tokens);

    // Each finding says what it is without saying the number.
    for f in findings {
        for field in ["file", "kind", "brand", "last4", "masked"] {
            assert!(f[field].is_string(), "{field} in {f}");
        }
        assert!(f["line"].is_u64() && f["offset"].is_u64(), "{f}");
        let digits = f["digits"].as_u64().unwrap();
        match f["bin"].as_str() {
            Some(bin) => assert!(bin.len() == 6 && digits >= 16, "{f}"),
            None => assert!(digits < 16, "{f}"),
        }
        assert_ne!(f["brand"], "unknown");
    }
    // The offset points at the card in the file.
    let csv = std::fs::read(tmp.path().join("orders.csv")).unwrap();
    let first = findings
        .iter()
        .find(|f| file_name(f) == "orders.csv")
        .unwrap();
    let offset = first["offset"].as_u64().unwrap() as usize;
    assert_eq!(&csv[offset..offset + 4], b"4111");

    let summary = &report["summary"];
    assert_eq!(summary["pans"], corpus.pans.len() as u64);
    assert_eq!(summary["skipped_binary"], 1);
    assert_eq!(summary["files_scanned"], 6);
    assert_eq!(summary["errors"], 0);

    // No output, in any format, holds a card number.
    let (_, text, text_err) = scan(&[root]);
    let (_, sarif, _) = scan(&["--sarif", root]);
    for (_, _, pan) in &corpus.pans {
        for output in [&out, &err, &text, &text_err, &sarif] {
            assert!(!output.contains(pan.as_str()), "a PAN in the output");
            // The hidden middle with the last 4: never shown, even masked.
            assert!(!output.contains(&pan[6..]), "a PAN's middle in the output");
        }
    }
    assert!(text.contains("found 37 PANs in 6 files"), "{text}");
}

#[test]
fn sarif_carries_rules_results_and_locations() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("old orders.csv"),
        "id,card\n1,4111 1111 1111 1111\n2,4111119270641111\n",
    )
    .unwrap();
    let (code, out, err) = scan(&["--sarif", tmp.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    let log: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), 2);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ruleId"], "CV1001");
    assert_eq!(results[0]["level"], "error");
    assert_eq!(results[1]["ruleId"], "CV1002");
    let location = &results[0]["locations"][0]["physicalLocation"];
    assert!(
        location["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("old%20orders.csv"),
        "{location}"
    );
    assert_eq!(location["region"]["startLine"], 2);
    assert_eq!(location["region"]["byteOffset"], 10);
    assert_eq!(location["region"]["byteLength"], 19);
    assert!(
        results[0]["message"]["text"]
            .as_str()
            .unwrap()
            .contains("411111******1111")
    );
}

#[test]
fn the_exit_status_is_a_ci_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    std::fs::create_dir(&clean).unwrap();
    std::fs::write(clean.join("notes.txt"), decoys().join("\n")).unwrap();
    let (code, out, err) = scan(&[clean.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("found 0 PANs"), "{out}");

    let dirty = tmp.path().join("dirty");
    std::fs::create_dir_all(dirty.join("logs")).unwrap();
    std::fs::write(dirty.join("logs/app.log"), "card 4111111111111111\n").unwrap();
    std::fs::write(
        dirty.join("big.txt"),
        format!("{}\n4111111111111111\n", "x".repeat(5000)),
    )
    .unwrap();
    let (code, _, _) = scan(&[dirty.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    // Excluded by name, by directory glob, and by size: clean again.
    let (code, out, err) = scan(&[
        "--exclude",
        "*.log",
        "--max-file-size",
        "4K",
        dirty.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1 larger than --max-file-size"), "{out}");
    let (code, _, _) = scan(&[
        "--exclude",
        "**/logs",
        "--exclude",
        "big.txt",
        dirty.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0));

    // A path that cannot be read: reported, the rest still scanned.
    let missing = tmp.path().join("missing");
    let (code, out, err) = scan(&["--json", missing.to_str().unwrap(), clean.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["summary"]["errors"], 1);
    assert_eq!(report["summary"]["files_scanned"], 1);
    assert!(
        report["errors"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("missing")
    );
    // PANs found outrank an unreadable path.
    let (code, _, _) = scan(&[missing.to_str().unwrap(), dirty.to_str().unwrap()]);
    assert_eq!(code, Some(1));

    let (code, _, err) = scan(&["--exclude", "[", clean.to_str().unwrap()]);
    assert_eq!(code, Some(64), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_confirmed_against_a_running_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let server = DevServer::start(&dir);
    let mut conn = server.connect("cart").await;
    let token = common::tokenize(&mut conn, "5555555555554444").await;
    let stranger = token_for("4111111111111111");
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(
        files.join("export.csv"),
        format!("a,{token}\nb,{stranger}\nc,{token}\n"),
    )
    .unwrap();
    let target = format!("https://{}", server.addr());
    let (code, out, err) = scan(&[
        "--json",
        "--dev",
        dir.to_str().unwrap(),
        "--target",
        &target,
        files.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let confirmed: Vec<(u64, Value)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["confirmed"].clone()))
        .collect();
    assert_eq!(
        confirmed,
        vec![
            (1, Value::Bool(true)),
            (2, Value::Bool(false)),
            (3, Value::Bool(true))
        ]
    );
    server.stop();
}

/// Issue 36, item 5: one card for every brand range in use today and every
/// length its brand issues (ISO/IEC 7812 issuer ranges: Visa, Mastercard
/// with the 2-series, Amex, Discover, JCB, Diners, UnionPay, Maestro's 50
/// and 56–69, Mir, RuPay, Troy), each written plain and in every grouping
/// by single spaces or dashes into groups of 1 to 6 digits, between lines
/// of decoys (phone numbers in national and international form, IMEIs,
/// dates, order numbers, IBANs). Recall must be 100% and false positives
/// 0; the figure is printed.
#[test]
fn every_issued_range_in_any_grouping_is_found_and_no_decoy() {
    let ranges: &[(&str, &[usize])] = &[
        ("4", &[13, 16, 19]),
        ("51", &[16]),
        ("55", &[16]),
        ("2221", &[16]),
        ("2720", &[16]),
        ("34", &[15]),
        ("37", &[15]),
        ("6011", &[16, 19]),
        ("644", &[16, 19]),
        ("65", &[16, 19]),
        ("3528", &[16, 19]),
        ("3589", &[16, 17]),
        ("300", &[14, 16]),
        ("305", &[14, 19]),
        ("36", &[14]),
        ("38", &[16]),
        ("39", &[16]),
        ("62", &[16, 17, 18, 19]),
        ("81", &[16]),
        ("50", &[12, 16, 19]),
        ("56", &[12, 19]),
        ("6304", &[16, 18, 19]),
        ("639", &[19]),
        ("67", &[12, 16]),
        ("69", &[13]),
        ("2200", &[16]),
        ("2204", &[19]),
        ("508", &[16]),
        ("60", &[16]),
        ("82", &[16]),
        ("9792", &[16]),
    ];
    let decoys = [
        "call +1 (415) 555-2671 or +44 7911 123456 or +63 917 123 4567",
        "tel 0049 30 1234 5678, 020 7946 0958, (212) 555-0100, 98765 43210",
        "imei 35 209900 176148 1 and 358240051111110 and 01-234567-890123-4",
        "date 2026-12-06 21:43:26, 06.12.2026, 12/06/2026",
        "order 20241202-000123 invoice 2026 0001 2345 sku 12345678",
        "iban DE89 3704 0044 0532 0130 00 and NL91 ABNA 0417 1643 00",
        "ts 1733140800000 1733140800123456 and 18 digits 123456789012345678",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
    ];
    let mut lines = Vec::new();
    let mut planted = BTreeSet::new();
    for (prefix, lengths) in ranges {
        for &len in *lengths {
            let pan = luhn_complete(&format!("{prefix}{}", "4".repeat(len - 1 - prefix.len())));
            let mut forms = vec![pan.clone()];
            for size in 1..=6 {
                for sep in [' ', '-'] {
                    let groups: Vec<&str> = pan
                        .as_bytes()
                        .chunks(size)
                        .map(|c| std::str::from_utf8(c).unwrap())
                        .collect();
                    forms.push(groups.join(&sep.to_string()));
                }
            }
            // 4-6-rest, as Amex and Diners print them.
            if len <= 16 {
                forms.push(format!("{} {} {}", &pan[..4], &pan[4..10], &pan[10..]));
            }
            for form in forms {
                lines.push(decoys[lines.len() % decoys.len()].to_owned());
                lines.push(format!("card: {form}; exp 12/27"));
                planted.insert(lines.len() as u64);
            }
        }
    }
    lines.extend(decoys.iter().map(|d| (*d).to_owned()));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("corpus.txt");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (code, out, err) = scan(&["--json", file.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let found: BTreeSet<u64> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "pan")
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    let hit = planted.intersection(&found).count();
    let false_positives: Vec<&u64> = found.difference(&planted).collect();
    eprintln!(
        "scanner corpus: recall {hit}/{} ({:.1}%), {} false positives in {} lines",
        planted.len(),
        100.0 * hit as f64 / planted.len() as f64,
        false_positives.len(),
        lines.len()
    );
    let missed: Vec<&String> = planted
        .difference(&found)
        .map(|l| &lines[*l as usize - 1])
        .collect();
    assert!(missed.is_empty(), "missed: {missed:#?}");
    let wrong: Vec<&String> = false_positives
        .iter()
        .map(|l| &lines[**l as usize - 1])
        .collect();
    assert!(wrong.is_empty(), "false positives: {wrong:#?}");
}
