//! `cardvault demo`: tokenize, re-tokenize and detokenize the public test
//! cards on a local dev vault, in process (the one offline command that
//! creates a development KEK on first run).

use std::path::Path;

use anyhow::Context;

use super::error::CliResult;
use super::offline::open_or_create_dev;
use crate::domain::{Pan, TenantId};

/// Public test card numbers (they pass Luhn; none is a real account).
const DEMO_CARDS: [&str; 8] = [
    "4111111111111111",
    "5555555555554444",
    "2223000048400011",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "30569309025904",
    "6200000000000005",
];

/// Runs the demo on the dev vault in `data_dir`, or on the vault of
/// `config` (which must exist already).
pub async fn run(data_dir: &Path, config: Option<&Path>) -> CliResult {
    let offline = match config {
        Some(path) => super::offline::VaultLocation::from_config(path).open()?,
        None => open_or_create_dev(data_dir)?,
    };
    let vault = &offline.vault;
    let tenant = TenantId::parse("default").context("demo tenant")?;
    say!("cardvault demo — data in {}", data_dir.display());
    say!(
        "{:<11} {:<20} {:<20} {:<7} detokenized",
        "brand",
        "card (masked)",
        "token",
        "bin"
    );
    let mut all_ok = true;
    for card in DEMO_CARDS {
        let pan = Pan::parse(card).context("demo card")?;
        let info = vault
            .tokenize(&tenant, &pan, None)
            .await
            .context("tokenize")?;
        let again = vault
            .tokenize(&tenant, &pan, None)
            .await
            .context("tokenize")?;
        let revealed = vault
            .detokenize(&tenant, &info.token)
            .await
            .context("detokenize")?;
        let ok = revealed.pan == pan && again.token == info.token;
        all_ok &= ok;
        say!(
            "{:<11} {:<20} {:<20} {:<7} {}",
            info.brand.as_str(),
            pan.to_string(),
            info.token.as_str(),
            info.bin
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            if ok { "matches" } else { "MISMATCH" }
        );
    }
    for (tenant, version, sealed) in vault.key_status() {
        say!("tenant {tenant}: data key v{version}, {sealed} encryptions");
    }
    offline.close().await?;
    if !all_ok {
        return Err(anyhow::anyhow!("a card did not round-trip").into());
    }
    say!("every card tokenized, re-tokenized to the same token, and detokenized to itself");
    Ok(())
}
