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
        /// Client (principal) name.
        name: String,
        /// Directory holding ca.pem and ca-key.pem.
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
        PkiCommand::Issue { name, dir } => {
            crate::pki::issue(&dir, &name).context("issuing the certificate")?;
            say!("issued {}/{name}.pem and {name}-key.pem", dir.display());
        }
    }
    Ok(())
}
