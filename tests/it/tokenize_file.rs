//! `cardvault tokenize-file` against a real dev vault: CSV, JSON Lines and
//! text files come back byte for byte but for the card numbers, which are
//! tokens that detokenize to them; a scan of the output finds no PAN; a
//! run killed mid-way resumes from its checkpoint without re-sending the
//! rows it had finished; bad arguments exit 64.

use std::path::Path;

use serde_json::Value;

use crate::common::{self, DevServer, luhn_complete, run};

fn pan(i: usize) -> String {
    luhn_complete(&format!("45{i:013}"))
}

/// Detokenizes `tokens` (as payments) and returns the PANs in order.
async fn reveal(server: &DevServer, tokens: &[String]) -> Vec<String> {
    let mut conn = server.connect("payments").await;
    let mut out = Vec::new();
    for chunk in tokens.chunks(500) {
        let reply = conn
            .post_json(
                "/v1/detokenize/batch",
                &serde_json::json!({ "tokens": chunk }),
            )
            .await
            .unwrap();
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        for r in reply.json()["results"].as_array().unwrap() {
            out.push(r["pan"].as_str().unwrap().to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_jsonl_and_text_come_back_identical_but_for_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let server = DevServer::start(&dir);
    let d = dir.to_str().unwrap();
    let target = format!("https://{}", server.addr());
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();

    // CSV: quoted and grouped cards, CRLF, a quoted line break, an
    // existing token, a value that is no card, an empty cell.
    let mut csv = String::from("id,card,note\r\n");
    let mut pans = Vec::new();
    for i in 0..120 {
        let p = pan(i);
        let cell = match i % 4 {
            0 => p.clone(),
            1 => format!("\"{} {} {} {}\"", &p[..4], &p[4..8], &p[8..12], &p[12..]),
            2 => format!("\"{p}\""),
            _ => p.clone(),
        };
        csv.push_str(&format!(
            "{i},{cell},\"line one\nline two, with a comma\"\r\n"
        ));
        pans.push(p);
    }
    csv.push_str("900,4111119270641111,already a token\r\n901,n/a,no card\r\n902,,empty\r\n");
    std::fs::write(path("in.csv"), &csv).unwrap();
    let (code, out, err) = run(&[
        "tokenize-file",
        &path("in.csv"),
        &path("out.csv"),
        "--format",
        "csv",
        "--column",
        "card",
        "--batch",
        "50",
        "--json",
        "--dev",
        d,
        "--target",
        &target,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["rows"], 123);
    assert_eq!(summary["pans_replaced"], 120);
    assert_eq!(summary["already_tokens"], 1);
    assert_eq!(summary["rejected"], 1);
    // Line numbers count every line (two per data row here, header first).
    assert_eq!(summary["rejected_lines"], serde_json::json!([243]));
    assert_eq!(summary["pans_left"], 0);
    let output = std::fs::read_to_string(path("out.csv")).unwrap();
    assert_eq!(output.len(), csv.len(), "tokens keep the length");
    assert!(!Path::new(&path("out.csv.partial")).exists());
    assert!(!Path::new(&path("out.csv.checkpoint")).exists());
    let mut tokens = Vec::new();
    for (a, b) in csv
        .split("\r\n")
        .zip(output.split("\r\n"))
        .skip(1)
        .take(120)
    {
        let ca = a.split(',').nth(1).unwrap();
        let cb = b.split(',').nth(1).unwrap();
        assert_eq!(
            a.replace(ca, ""),
            b.replace(cb, ""),
            "only the card cell changes"
        );
        assert_eq!(ca.len(), cb.len());
        assert_eq!(ca.starts_with('"'), cb.starts_with('"'));
        assert_eq!(ca.contains(' '), cb.contains(' '), "grouping kept");
        let token: String = cb.chars().filter(char::is_ascii_digit).collect();
        cardvault::Token::parse(&token).unwrap();
        tokens.push(token);
    }
    assert_eq!(reveal(&server, &tokens).await, pans);
    let (code, _, _) = run(&["scan", &path("out.csv")]);
    assert_eq!(code, Some(0));

    // JSON Lines, a nested field, a line that is not JSON, a missing field.
    let mut jsonl = String::new();
    for (i, p) in pans.iter().enumerate().take(30) {
        jsonl.push_str(&format!(
            "{{\"order\": {i}, \"card\": {{\"pan\": \"{p}\", \"exp\": \"12/27\"}}, \"note\": \"x\"}}\n"
        ));
    }
    jsonl.push_str("not json\n{\"order\": 99}\n");
    std::fs::write(path("in.jsonl"), &jsonl).unwrap();
    let (code, out, err) = run(&[
        "tokenize-file",
        &path("in.jsonl"),
        &path("out.jsonl"),
        "--format",
        "jsonl",
        "--field",
        "card.pan",
        "--json",
        "--dev",
        d,
        "--target",
        &target,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            summary["pans_replaced"].as_u64(),
            summary["rejected_lines"].clone()
        ),
        (Some(30), serde_json::json!([31]))
    );
    let output = std::fs::read_to_string(path("out.jsonl")).unwrap();
    assert_eq!(output.len(), jsonl.len());
    let tokens: Vec<String> = output
        .lines()
        .take(30)
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["card"]["pan"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(reveal(&server, &tokens).await, pans[..30]);
    assert!(output.ends_with("not json\n{\"order\": 99}\n"));

    // Text: every PAN the detector finds, grouping kept, tokens left alone.
    let text = format!(
        "2024-12-02 checkout card={} ok\nrefund {} and {} again\nts=1733140800000 token=4111119270641111\n",
        pans[0],
        format_args!(
            "{}-{}-{}-{}",
            &pans[1][..4],
            &pans[1][4..8],
            &pans[1][8..12],
            &pans[1][12..]
        ),
        pans[0]
    );
    std::fs::write(path("in.log"), &text).unwrap();
    let (code, out, err) = run(&[
        "tokenize-file",
        &path("in.log"),
        &path("out.log"),
        "--format",
        "text",
        "--json",
        "--dev",
        d,
        "--target",
        &target,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["pans_replaced"], 3);
    assert_eq!(summary["already_tokens"], 1);
    let output = std::fs::read_to_string(path("out.log")).unwrap();
    assert_eq!(output.len(), text.len());
    assert!(output.contains("ts=1733140800000 token=4111119270641111"));
    for p in &pans[..2] {
        assert!(!output.contains(p.as_str()));
    }
    let (code, _, _) = run(&["scan", &path("out.log")]);
    assert_eq!(code, Some(0));

    // Refusals: existing OUT, unknown column, missing --column, bad path.
    let (code, _, _) = run(&[
        "tokenize-file",
        &path("in.csv"),
        &path("out.csv"),
        "--format",
        "csv",
        "--column",
        "card",
        "--dev",
        d,
        "--target",
        &target,
    ]);
    assert_eq!(code, Some(64));
    let (code, _, err) = run(&[
        "tokenize-file",
        &path("in.csv"),
        &path("other.csv"),
        "--format",
        "csv",
        "--column",
        "pan",
        "--dev",
        d,
        "--target",
        &target,
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("no column \"pan\""), "{err}");
    let (code, _, _) = run(&[
        "tokenize-file",
        &path("in.csv"),
        &path("x.csv"),
        "--format",
        "csv",
        "--dev",
        d,
    ]);
    assert_eq!(code, Some(64));
    let (code, _, _) = run(&[
        "tokenize-file",
        &path("missing.csv"),
        &path("y.csv"),
        "--format",
        "text",
        "--dev",
        d,
        "--target",
        &target,
    ]);
    assert_eq!(code, Some(2));
    // No card number leaked into what the command printed.
    for p in &pans {
        assert!(!err.contains(p.as_str()));
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_without_resending_finished_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let server = DevServer::start(&dir);
    let d = dir.to_str().unwrap().to_owned();
    let target = format!("https://{}", server.addr());
    let input = tmp.path().join("in.csv");
    let output = tmp.path().join("out.csv");
    let rows = 20_000;
    let mut csv = String::from("n,card\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},{}\n", pan(1_000_000 + i)));
    }
    std::fs::write(&input, &csv).unwrap();
    let args = |resume: bool| {
        let mut a = vec![
            "tokenize-file".to_owned(),
            input.to_str().unwrap().to_owned(),
            output.to_str().unwrap().to_owned(),
            "--format".into(),
            "csv".into(),
            "--column".into(),
            "card".into(),
            "--batch".into(),
            "100".into(),
            "--concurrency".into(),
            "2".into(),
            "--json".into(),
            "--dev".into(),
            d.clone(),
            "--target".into(),
            target.clone(),
        ];
        if resume {
            a.push("--resume".into());
        }
        a
    };
    let mut child = common::cardvault()
        .args(args(false))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = tmp.path().join("out.csv.checkpoint");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let written = std::fs::read(&checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|c| c["counts"]["rows"].as_u64())
            .unwrap_or(0);
        if written >= 2_000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    let done_before = saved["counts"]["rows"].as_u64().unwrap();
    assert!(done_before < rows as u64, "killed before the end");
    assert!(!output.exists());

    // Without --resume the leftover is pointed out, not overwritten.
    let (code, _, err) = run(&args(false).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(64));
    assert!(err.contains("--resume"), "{err}");
    let (code, out, err) = run(&args(true).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["rows"], rows as u64);
    assert_eq!(summary["pans_replaced"], rows as u64);
    let written = std::fs::read_to_string(&output).unwrap();
    assert_eq!(written.len(), csv.len());
    let tokens: Vec<String> = written
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), rows);
    let sample: Vec<String> = tokens.iter().step_by(97).cloned().collect();
    let expected: Vec<String> = (0..rows).step_by(97).map(|i| pan(1_000_000 + i)).collect();
    assert_eq!(reveal(&server, &sample).await, expected);
    server.stop();

    // Rows finished before the kill were not sent again: the vault's trail
    // counts at most the rows plus the batches in flight at the kill.
    let trail = common::entries(&dir.join("audit"));
    let sent: u64 = common::of_kind(&trail, "tokenize_batch")
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum();
    assert!(sent >= rows as u64, "{sent}");
    assert!(
        sent <= rows as u64 + 2 * 100,
        "{sent} items sent for {rows} rows"
    );
}
