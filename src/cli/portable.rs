//! `cardvault import`, `cardvault export` and `cardvault approve`: moving
//! tokens between vaults with the tokens kept (role `admin`; `--dev DIR`
//! connects as the dev `admin`).
//!
//! `import --file F` sends NDJSON lines `{"token", "pan", "expiry"?}` to
//! `POST /v1/admin/import` in batches and reports each refused line by its
//! number (never its content); `--identity KEY` reads an age-encrypted file
//! (an export) without writing its plaintext anywhere. `export --tenant T
//! --recipient AGE --out FILE` asks for the export, waits until a second
//! admin ran `cardvault approve ID`, and writes the age ciphertext the
//! vault produced — the PANs are encrypted before they leave the vault.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use hyper::Method;
use serde_json::Value;
use zeroize::Zeroizing;

use super::client::{Endpoint, print};
use super::error::{CliError, CliResult};
use crate::client::Connection;

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The vault and the admin certificate.
    #[command(flatten)]
    endpoint: Endpoint,
    /// NDJSON file of `{"token", "pan", "expiry"?}` lines (age-encrypted
    /// with `--identity`).
    #[arg(long)]
    file: PathBuf,
    /// An age identity file (`AGE-SECRET-KEY-1…`) to decrypt `--file`.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// The tenant to import into (default: the admin's own).
    #[arg(long)]
    tenant: Option<String>,
    /// Lines per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10000))]
    batch: u16,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The vault and the admin certificate.
    #[command(flatten)]
    endpoint: Endpoint,
    /// The tenant to export.
    #[arg(long)]
    tenant: String,
    /// The age X25519 public key (`age1…`) to encrypt the export to.
    #[arg(long)]
    recipient: String,
    /// Where to write the age ciphertext (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// How long to wait for the second admin's approval.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    wait: Duration,
}

/// Arguments of `approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The vault and the (second) admin's certificate.
    #[command(flatten)]
    endpoint: Endpoint,
    /// The approval id another admin's request printed.
    id: String,
}

/// The lines of `file`, decrypted with `identity` when given.
fn open_lines(file: &Path, identity: Option<&Path>) -> Result<Box<dyn BufRead>, CliError> {
    let input = std::fs::File::open(file)
        .map_err(|e| CliError::Unreadable(format!("{}: {e}", file.display())))?;
    let Some(identity) = identity else {
        return Ok(Box::new(BufReader::new(input)));
    };
    let text = Zeroizing::new(
        std::fs::read_to_string(identity)
            .map_err(|e| CliError::Unreadable(format!("{}: {e}", identity.display())))?,
    );
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .ok_or_else(|| CliError::Usage(format!("{} holds no age identity", identity.display())))?;
    let identity = age::x25519::Identity::from_str(key)
        .map_err(|_| CliError::Usage("the age identity does not parse".into()))?;
    let decryptor = age::Decryptor::new(BufReader::new(input))
        .map_err(|e| CliError::Unreadable(format!("{}: not an age file: {e}", file.display())))?;
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| CliError::Unreadable(format!("{}: cannot decrypt: {e}", file.display())))?;
    Ok(Box::new(BufReader::new(reader)))
}

/// Sends one batch of lines; the answer's results.
async fn send_lines(
    conn: &mut Connection,
    path: &str,
    body: Zeroizing<Vec<u8>>,
) -> Result<Value, CliError> {
    let reply = conn
        .send(
            Method::POST,
            path,
            Some(("application/x-ndjson", body.to_vec())),
        )
        .await
        .context("POST /v1/admin/import")?;
    if !reply.status.is_success() {
        print(&reply);
        return Err(
            anyhow::anyhow!("the vault refused the import request ({})", reply.status).into(),
        );
    }
    Ok(reply.json())
}

/// Runs `import`.
pub async fn import(args: ImportArgs) -> CliResult {
    let mut lines = open_lines(&args.file, args.identity.as_deref())?;
    let mut conn = args.endpoint.connect_as("admin").await?;
    let path = match &args.tenant {
        Some(t) => {
            let t = crate::domain::TenantId::parse(t)
                .map_err(|_| CliError::Usage(format!("--tenant {t:?} is not a tenant name")))?;
            format!("/v1/admin/import?tenant={t}")
        }
        None => "/v1/admin/import".to_owned(),
    };
    let (mut imported, mut present, mut refused) = (0u64, 0u64, 0u64);
    let mut refusals: Vec<Value> = Vec::new();
    let mut offset = 0usize; // lines before the current batch
    let mut done = false;
    while !done {
        let mut body = Zeroizing::new(Vec::new());
        let mut count = 0usize;
        while count < usize::from(args.batch) {
            let mut line = Zeroizing::new(Vec::new());
            let n = lines
                .read_until(b'\n', &mut line)
                .map_err(|e| CliError::Unreadable(format!("{}: {e}", args.file.display())))?;
            if n == 0 {
                done = true;
                break;
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            body.extend_from_slice(&line);
            count += 1;
        }
        if count == 0 {
            break;
        }
        let answer = send_lines(&mut conn, &path, body).await?;
        imported += answer["imported"].as_u64().unwrap_or(0);
        present += answer["already_present"].as_u64().unwrap_or(0);
        refused += answer["refused"].as_u64().unwrap_or(0);
        for r in answer["results"].as_array().into_iter().flatten() {
            if r["status"] == "refused" {
                let line = r["line"].as_u64().unwrap_or(0) as usize + offset;
                refusals.push(serde_json::json!({"line": line, "error": r["error"]}));
            }
        }
        offset += count;
    }
    if args.json {
        say!(
            "{}",
            serde_json::json!({"imported": imported, "already_present": present, "refused": refused, "refusals": refusals})
        );
    } else {
        for r in &refusals {
            say!(
                "line {}: {} ({})",
                r["line"],
                r["error"]["message"].as_str().unwrap_or(""),
                r["error"]["code"].as_str().unwrap_or("")
            );
        }
        say!("imported {imported}, already present {present}, refused {refused}");
    }
    if refused > 0 {
        return Err(CliError::Answer(format!("{refused} lines were refused")));
    }
    Ok(())
}

/// Runs `export`.
pub async fn export(args: ExportArgs) -> CliResult {
    age::x25519::Recipient::from_str(args.recipient.trim()).map_err(|_| {
        CliError::Usage("--recipient must be an age X25519 public key (age1…)".into())
    })?;
    if args.out.exists() {
        return Err(CliError::Usage(format!("{} exists", args.out.display())));
    }
    crate::domain::TenantId::parse(&args.tenant)
        .map_err(|_| CliError::Usage(format!("--tenant {:?} is not a tenant name", args.tenant)))?;
    let mut conn = args.endpoint.connect_as("admin").await?;
    let request = serde_json::to_vec(&serde_json::json!({"recipient": args.recipient.trim()}))
        .context("encoding the request")?;
    let reply = conn
        .send(
            Method::POST,
            &format!("/v1/admin/tenants/{}/export", args.tenant),
            Some(("application/json", request)),
        )
        .await
        .context("asking for the export")?;
    if reply.status.as_u16() != 202 {
        print(&reply);
        return Err(anyhow::anyhow!("the vault refused the export ({})", reply.status).into());
    }
    let id = reply.json()["id"].as_str().unwrap_or("").to_owned();
    eprintln!(
        "export {id} of tenant {} waits for a second admin: cardvault approve {id}",
        args.tenant
    );
    let deadline = Instant::now() + args.wait;
    let ciphertext = loop {
        let reply = conn
            .get(&format!("/v1/admin/exports/{id}"))
            .await
            .context("fetching the export")?;
        match reply.status.as_u16() {
            200 => break reply.body,
            202 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            202 => {
                return Err(anyhow::anyhow!("no second admin approved export {id} in time").into());
            }
            _ => {
                print(&reply);
                return Err(anyhow::anyhow!("export {id} failed ({})", reply.status).into());
            }
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    file.write_all(&ciphertext).context("writing the export")?;
    file.sync_all().context("syncing the export")?;
    say!(
        "{}",
        serde_json::json!({"export": id, "out": args.out.display().to_string(), "bytes": ciphertext.len()})
    );
    Ok(())
}

/// Runs `approve`.
pub async fn approve(args: ApproveArgs) -> CliResult {
    if !crate::runtime::approvals::is_approval_id(&args.id) {
        return Err(CliError::Usage("not an approval id (24 hex digits)".into()));
    }
    let mut conn = args.endpoint.connect_as("admin").await?;
    let reply = conn
        .send(
            Method::POST,
            &format!("/v1/admin/approvals/{}", args.id),
            None,
        )
        .await
        .context("POST /v1/admin/approvals/{id}")?;
    if print(&reply) {
        Ok(())
    } else {
        Err(anyhow::anyhow!("the vault refused the approval").into())
    }
}
