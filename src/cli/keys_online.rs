//! `keys rotate-kek`, `keys rotate-evidence-key`, `keys reencrypt` and
//! `keys inventory`: the running vault's key lifecycle, over mTLS as an
//! admin (`--dev` uses `admin`). `rotate-kek` wraps every key under a new
//! KEK too; `rotate-evidence-key` hands checkpoints and bundles over to a
//! new evidence key (either may answer with a pending approval for a
//! second admin: `cardvault approve ID`); `reencrypt` starts the
//! tenant's job and follows it with a progress bar (rate and ETA) until it
//! ends; `inventory` prints every key, as a table or JSON.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hyper::Method;

use super::client::{Endpoint, print};
use super::error::{CliError, CliResult};
use crate::client::Connection;

/// `keys reencrypt`.
#[derive(Debug, Args)]
pub struct ReencryptArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The tenant whose records are sealed again under its active data key.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Start the job and return at once (follow it with this command again
    /// or `GET /v1/admin/keys/{tenant}/reencrypt`).
    #[arg(long)]
    no_wait: bool,
}

/// `keys inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Count each data key's records too (a scan of every tenant).
    #[arg(long)]
    records: bool,
    /// Print the vault's JSON as is.
    #[arg(long)]
    json: bool,
}

async fn call(
    conn: &mut Connection,
    method: Method,
    path: &str,
) -> Result<serde_json::Value, CliError> {
    let body = (method == Method::POST).then(|| ("application/json", b"{}".to_vec()));
    let reply = conn
        .send(method.clone(), path, body)
        .await
        .with_context(|| format!("{method} {path}"))?;
    let json = reply.json();
    if reply.status.is_success() {
        Ok(json)
    } else {
        Err(anyhow::anyhow!(
            "{method} {path}: {} {}",
            reply.status.as_u16(),
            json["error"]["message"].as_str().unwrap_or("")
        )
        .into())
    }
}

/// Runs `keys reencrypt`.
pub async fn reencrypt(args: ReencryptArgs) -> CliResult {
    crate::domain::TenantId::parse(&args.tenant)
        .map_err(|e| CliError::Usage(format!("--tenant: {e}")))?;
    let path = format!("/v1/admin/keys/{}/reencrypt", args.tenant);
    let mut conn = args.endpoint.connect_as("admin").await?;
    let mut status = call(&mut conn, Method::POST, &path).await?;
    if args.no_wait {
        say!("{status}");
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(status["total"].as_u64().unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} records, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let state = status["state"].as_str().unwrap_or("").to_owned();
        bar.set_length(status["total"].as_u64().unwrap_or(0));
        bar.set_position(status["done"].as_u64().unwrap_or(0));
        bar.set_message(format!("{} {state}", args.tenant));
        match state.as_str() {
            "done" => {
                bar.finish();
                say!("{status}");
                return Ok(());
            }
            "failed" | "stopped" => {
                bar.abandon();
                say!("{status}");
                return Err(anyhow::anyhow!("re-encryption {state}").into());
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        status = call(&mut conn, Method::GET, &path).await?;
    }
}

/// Runs `keys inventory`.
pub async fn inventory(args: InventoryArgs) -> CliResult {
    let mut conn = args.endpoint.connect_as("admin").await?;
    let path = if args.records {
        "/v1/admin/keys?records=true"
    } else {
        "/v1/admin/keys"
    };
    let inventory = call(&mut conn, Method::GET, path).await?;
    if args.json {
        say!("{inventory}");
        return Ok(());
    }
    say!(
        "{:<16} {:<15} {:>4} {:<13} {:<20} {:<20} {:>12} {:>10}  wrapped by",
        "tenant",
        "purpose",
        "ver",
        "state",
        "created",
        "changed",
        "encryptions",
        "records"
    );
    let empty = Vec::new();
    for key in inventory["keys"].as_array().unwrap_or(&empty) {
        let text = |field: &str| key[field].as_str().unwrap_or("-").to_owned();
        let number = |field: &str| {
            key[field]
                .as_u64()
                .map_or("-".to_owned(), |n| n.to_string())
        };
        let time = |field: &str| text(field).chars().take(19).collect::<String>();
        say!(
            "{:<16} {:<15} {:>4} {:<13} {:<20} {:<20} {:>12} {:>10}  {}{}",
            text("tenant"),
            text("purpose"),
            number("version"),
            text("state"),
            time("created_at"),
            time("changed_at"),
            number("encryptions"),
            number("records"),
            text("wrapped_by"),
            if key["rotation_pending"] == true {
                " (+ next KEK)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// `keys rotate-kek`: the running vault's new KEK. Paths are on the vault's
/// host.
#[derive(Debug, Args)]
pub struct RotateKekArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Rotate to this key file (`keys init --out FILE` made it).
    #[arg(long, conflicts_with_all = ["key_label", "shares"], required_unless_present_any = ["key_label", "shares"])]
    key_file: Option<String>,
    /// Rotate to this key in the PKCS#11 token (`keys init --pkcs11` made
    /// it); module, token and PIN file default to the current `[kek]`'s.
    #[arg(long, conflicts_with = "shares")]
    key_label: Option<String>,
    /// With --key-label: another module.
    #[arg(long, requires = "key_label")]
    module: Option<String>,
    /// With --key-label: another token.
    #[arg(long, requires = "key_label")]
    token_label: Option<String>,
    /// With --key-label: another PIN file.
    #[arg(long, requires = "key_label")]
    pin_file: Option<String>,
    /// Rotate to a fresh split into this many custodian shares.
    #[arg(long, requires_all = ["threshold", "out_dir"])]
    shares: Option<u8>,
    /// With --shares: shares needed.
    #[arg(long, requires = "shares")]
    threshold: Option<u8>,
    /// With --shares: where the vault writes the share files.
    #[arg(long, requires = "shares")]
    out_dir: Option<String>,
    /// With --shares: custodian names, comma-separated.
    #[arg(long, value_delimiter = ',', requires = "shares")]
    custodians: Vec<String>,
}

/// `keys rotate-kek`: asks the running vault (as an admin with global
/// scope; `--dev` uses `admin`) to wrap every key under a new KEK too.
pub async fn rotate_kek(args: RotateKekArgs) -> CliResult {
    let body = match (&args.key_file, &args.key_label, args.shares) {
        (Some(file), ..) => serde_json::json!({ "provider": "file", "key_file": file }),
        (None, Some(label), _) => {
            let mut body = serde_json::json!({ "provider": "pkcs11", "key_label": label });
            for (field, value) in [
                ("module", &args.module),
                ("token_label", &args.token_label),
                ("pin_file", &args.pin_file),
            ] {
                if let Some(value) = value {
                    body[field] = serde_json::Value::from(value.as_str());
                }
            }
            body
        }
        (None, None, Some(shares)) => serde_json::json!({
            "provider": "shamir",
            "shares": shares,
            "threshold": args.threshold,
            "out_dir": args.out_dir,
            "custodians": args.custodians,
        }),
        _ => {
            return Err(CliError::Usage(
                "give --key-file, --key-label or --shares N --threshold M --out-dir DIR".into(),
            ));
        }
    };
    let mut conn = args.endpoint.connect_as("admin").await?;
    let reply = conn
        .send(
            Method::POST,
            "/v1/admin/kek/rotate",
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
        .context("POST /v1/admin/kek/rotate")?;
    if print(&reply) {
        Ok(())
    } else {
        Err(anyhow::anyhow!("the vault refused the KEK rotation (see the output)").into())
    }
}

/// `keys rotate-evidence-key`.
#[derive(Debug, Args)]
pub struct RotateEvidenceKeyArgs {
    #[command(flatten)]
    endpoint: Endpoint,
}

/// `keys rotate-evidence-key`: asks the running vault (as a global admin)
/// for a new evidence key; prints the handover (both fingerprints) or the
/// pending approval.
pub async fn rotate_evidence_key(args: RotateEvidenceKeyArgs) -> CliResult {
    let mut conn = args.endpoint.connect_as("admin").await?;
    let reply = conn
        .send(
            Method::POST,
            "/v1/admin/evidence-key/rotate",
            Some(("application/json", b"{}".to_vec())),
        )
        .await
        .context("POST /v1/admin/evidence-key/rotate")?;
    if print(&reply) {
        Ok(())
    } else {
        Err(anyhow::anyhow!("the vault refused the evidence-key rotation (see the output)").into())
    }
}
