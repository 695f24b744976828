//! `cardvault unseal --share FILE` and `cardvault seal`: a custodian hands
//! in one KEK share to a sealed vault (role `custodian`), and a global admin
//! seals it again. The share file is refused if group or others can read
//! it, and checked before it is sent; neither it nor its bytes are printed.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use hyper::Method;
use zeroize::Zeroizing;

use super::client::{Endpoint, print};
use super::error::{CliError, CliResult};

/// The custody subcommands.
#[derive(Debug, Subcommand)]
pub enum CustodyCommand {
    /// Hand in one custodian's KEK share to a sealed vault (role
    /// `custodian`). Prints the seal status; the vault serves once enough
    /// shares are in.
    Unseal {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The share file (`keys init --shares` wrote it; mode 0600).
        #[arg(long)]
        share: PathBuf,
    },
    /// Seal the vault: it drops its KEK and every key until custodians
    /// unseal it again (role `admin` with `scope = "global"`).
    Seal {
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// Runs `unseal` or `seal`; exit 1 if the vault refused.
pub async fn run(command: CustodyCommand) -> CliResult {
    let ok = match command {
        CustodyCommand::Unseal { endpoint, share } => unseal(&endpoint, &share).await?,
        CustodyCommand::Seal { endpoint } => {
            let mut conn = endpoint.connect_as("admin").await?;
            let reply = conn
                .send(
                    Method::POST,
                    "/v1/admin/seal",
                    Some(("application/json", b"{}".to_vec())),
                )
                .await
                .context("POST /v1/admin/seal")?;
            print(&reply)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!("the vault refused (see the output)").into())
    }
}

/// Reads a share file, refusing one that group or others can read (it is
/// one custodian's secret) and checking it before it is sent, so a typo
/// is caught here. Neither the share nor its bytes are ever printed.
fn read_share(path: &std::path::Path) -> Result<(Zeroizing<String>, String), CliError> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening the share file {}", path.display()))?;
    let meta = file.metadata().context("reading the share file")?;
    if meta.mode() & 0o077 != 0 {
        return Err(CliError::Usage(format!(
            "share file {} has mode {:04o}; it must not be accessible to group or others (chmod 600)",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(crate::crypto::shares::MAX_SHARE_FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .context("reading the share file")?;
    let share = crate::crypto::shares::KekShare::parse(&text)
        .map_err(|e| CliError::Usage(format!("share file {}: {e}", path.display())))?;
    Ok((text, share.custodian.clone()))
}

async fn unseal(endpoint: &Endpoint, path: &std::path::Path) -> Result<bool, CliError> {
    let (text, custodian) = read_share(path)?;
    let json = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({ "share": text.as_str() }))
            .context("encoding the request")?,
    );
    let mut conn = endpoint.connect_as(&custodian).await?;
    let reply = conn
        .send(
            Method::POST,
            "/v1/admin/unseal",
            Some(("application/json", json.to_vec())),
        )
        .await
        .context("POST /v1/admin/unseal")?;
    Ok(print(&reply))
}
