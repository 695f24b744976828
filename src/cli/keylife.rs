//! `keys reencrypt` and `keys inventory`: the running vault's key
//! lifecycle, over mTLS as an admin (`--dev` uses `admin`). `reencrypt`
//! starts the tenant's job and follows it with a progress bar (rate and
//! ETA) until it ends; `inventory` prints every key, as a table or JSON.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hyper::Method;

use super::client::Endpoint;
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
