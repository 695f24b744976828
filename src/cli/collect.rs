//! `cardvault collect snippet`: the `<script>` tag a shop puts on its
//! checkout page to load `cardvault.js` from the public listener, pinned
//! by its Subresource Integrity hash, and the hashes of the frame's own
//! script and style (the script inventory PCI DSS 6.4.3 asks for).

use std::path::PathBuf;

use clap::Subcommand;

use super::error::{CliError, CliResult};

/// `collect` subcommands.
#[derive(Debug, Subcommand)]
pub enum CollectCommand {
    /// Print the checkout page's `<script>` tag with its integrity hash.
    Snippet {
        /// The public listener's URL (`https://pay.shop.example`); default
        /// `[collect] public_url` of `--config`, else the dev listener's.
        #[arg(long)]
        url: Option<String>,
        /// Read `[collect] public_url` from this config file.
        #[arg(long, conflicts_with = "url")]
        config: Option<PathBuf>,
    },
}

/// The dev public listener's URL (`serve --dev`).
const DEV_PUBLIC_URL: &str = "https://localhost:8444";

/// Runs a `collect` subcommand.
pub fn run(command: CollectCommand) -> CliResult {
    match command {
        CollectCommand::Snippet { url, config } => {
            let url = match (url, config) {
                (Some(url), _) => url,
                (None, Some(path)) => {
                    let config = crate::config::Config::load(&path)?;
                    let collect = config.collect.ok_or_else(|| {
                        CliError::Usage(format!("{} has no [collect] section", path.display()))
                    })?;
                    collect.public_url.ok_or_else(|| {
                        CliError::Usage(format!(
                            "{} sets no [collect] public_url; pass --url",
                            path.display()
                        ))
                    })?
                }
                (None, None) => DEV_PUBLIC_URL.to_owned(),
            };
            let inventory = crate::server::collect_inventory();
            say!("{}", crate::server::snippet(&url));
            say!();
            say!("# The card frame's scripts and styles (PCI DSS 6.4.3 inventory):");
            for (path, integrity, bytes) in inventory {
                say!("#   {path}  {integrity}  ({bytes} bytes)");
            }
            Ok(())
        }
    }
}
