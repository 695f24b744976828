//! Reaching a running vault as an admin, for the commands that otherwise
//! open it in-process (`evidence`, `backup`): while a vault runs it holds
//! its directories, and these commands then ask it through the admin API
//! — at `--target URL`, as the admin `--cacert/--cert/--key` names (a dev
//! directory's own admin by default).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::error::CliError;
use super::offline::VaultLocation;

/// Where the running vault is, and who asks.
#[derive(Debug, Args)]
pub struct RunningVault {
    /// A running vault's API, `https://HOST:PORT`: it is asked through the
    /// admin API (without this, a running vault is refused with exit 75).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// With a running vault: the CA that signed its certificate (a dev
    /// directory's own by default).
    #[arg(long, value_name = "FILE", requires_all = ["cert", "key"])]
    pub cacert: Option<PathBuf>,
    /// With a running vault: an admin's client certificate.
    #[arg(long, value_name = "FILE", requires = "cacert")]
    pub cert: Option<PathBuf>,
    /// With a running vault: that admin's private key.
    #[arg(long, value_name = "FILE", requires = "cacert")]
    pub key: Option<PathBuf>,
}

/// An admin identity: CA, certificate, key.
pub type Identity = (PathBuf, PathBuf, PathBuf);

impl RunningVault {
    /// The admin identity: the one given, or a dev directory's admin.
    pub fn identity(&self, location: &VaultLocation) -> Option<Identity> {
        match (&self.cacert, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => Some((ca.clone(), cert.clone(), key.clone())),
            _ if location.config.is_none() => {
                let pki = location.data_dir.join("pki");
                Some((
                    pki.join("ca.pem"),
                    pki.join("admin.pem"),
                    pki.join("admin-key.pem"),
                ))
            }
            _ => None,
        }
    }

    /// The API's address: none without `--target`; a name that resolves
    /// to nothing is an error that says so (not "the vault is running").
    pub async fn addr(&self) -> Result<Option<SocketAddr>, CliError> {
        let Some(url) = &self.target else {
            return Ok(None);
        };
        use crate::client::ResolveError;
        match crate::client::resolve_https(url).await {
            Ok(addr) => Ok(Some(addr)),
            Err(ResolveError::NotHttps) => Err(CliError::Usage(
                "--target must look like https://HOST:PORT".into(),
            )),
            Err(e) => Err(CliError::Failed(anyhow::anyhow!("--target {url}: {e}"))),
        }
    }

    /// A connection to the running vault as its admin, or `None` when no
    /// address or identity is at hand.
    pub async fn connect(
        &self,
        location: &VaultLocation,
    ) -> Result<Option<(crate::client::Connection, Identity, SocketAddr)>, CliError> {
        let (Some(identity), Some(addr)) = (self.identity(location), self.addr().await?) else {
            return Ok(None);
        };
        let (ca, cert, key) = &identity;
        let tls = crate::client::ClientTls::from_files(ca, Some((cert, key)), false)
            .context("loading the admin certificate")?;
        let conn = tls
            .connect(addr)
            .await
            .with_context(|| format!("connecting to the vault at {addr}"))?;
        Ok(Some((conn, identity, addr)))
    }
}
