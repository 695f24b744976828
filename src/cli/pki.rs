//! `cardvault pki`: the development / test PKI (a CA, a server certificate,
//! client certificates).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::error::CliResult;

/// Subcommands of `pki`.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a CA, a server certificate (localhost, 127.0.0.1, ::1) and
    /// client certificates for cart, payments and admin in DIR.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a client certificate NAME.pem / NAME-key.pem (principal = NAME)
    /// signed by the CA in DIR.
    Issue {
        /// Client name: the file names and the CN (the principal unless
        /// `--uri` is given).
        name: String,
        /// A URI SAN, such as a SPIFFE ID (`spiffe://shop.example/cart`):
        /// the vault takes it as the principal.
        #[arg(long)]
        uri: Option<String>,
        /// Directory holding ca.pem and ca-key.pem.
        #[arg(long, default_value = "./cardvault-dev/pki")]
        dir: PathBuf,
    },
    /// Revoke client certificate NAME.pem: (re)write DIR/crl.pem with every
    /// certificate revoked so far. Point `api.crls` at it; SIGHUP applies it.
    Revoke {
        /// Client name (NAME.pem in DIR).
        name: String,
        /// Directory holding ca.pem, ca-key.pem and NAME.pem.
        #[arg(long, default_value = "./cardvault-dev/pki")]
        dir: PathBuf,
    },
}

/// Runs a `pki` subcommand.
pub fn run(command: PkiCommand) -> CliResult {
    match command {
        PkiCommand::Init { out } => {
            crate::pki::init(&out).context("creating the dev PKI")?;
            say!("created dev PKI in {}", out.display());
        }
        PkiCommand::Issue { name, uri, dir } => {
            crate::pki::issue_with_uri(&dir, &name, uri.as_deref())
                .context("issuing the certificate")?;
            say!("issued {}/{name}.pem and {name}-key.pem", dir.display());
        }
        PkiCommand::Revoke { name, dir } => {
            let serial = crate::pki::revoke(&dir, &name).context("revoking the certificate")?;
            say!(
                "revoked {name} (serial {serial}); CRL: {}",
                dir.join(crate::pki::CRL_FILE).display()
            );
        }
    }
    Ok(())
}
