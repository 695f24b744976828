//! `cardvault tokenize | detokenize | metadata | delete`: a small mTLS
//! client for scripts and operators, printing each answer as one line of
//! JSON. PANs are read from standard input only — never from arguments,
//! which every user of the machine can read in `/proc` — and the vault is
//! reached through `CARDVAULT_ADDR`, `CARDVAULT_CACERT`, `CARDVAULT_CERT`
//! and `CARDVAULT_KEY` (or flags of the same names), or `--dev DIR`.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use hyper::Method;
use zeroize::Zeroizing;

use super::error::{CliError, CliResult};
use crate::client::{ClientTls, Connection, Reply};

/// Where the vault is and who calls it.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The vault, `https://HOST:PORT` (`--addr` is an alias).
    #[arg(
        long = "target",
        visible_alias = "addr",
        env = "CARDVAULT_ADDR",
        default_value = "https://127.0.0.1:8443"
    )]
    addr: String,
    /// CA bundle that signed the vault's certificate (`--ca` is an alias).
    #[arg(long, visible_alias = "ca", env = "CARDVAULT_CACERT")]
    cacert: Option<PathBuf>,
    /// Client certificate, PEM.
    #[arg(long, env = "CARDVAULT_CERT")]
    cert: Option<PathBuf>,
    /// Client private key, PEM.
    #[arg(long, env = "CARDVAULT_KEY")]
    key: Option<PathBuf>,
    /// A `serve --dev` directory: its CA and the client certificate `--as`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["cacert", "cert", "key"])]
    dev: Option<PathBuf>,
    /// With `--dev`: which dev client to be (cart, payments, admin,
    /// custodian-N). Default: payments; for `unseal`, the custodian the
    /// share file names; for `seal`, admin.
    #[arg(long = "as", value_name = "NAME", requires = "dev")]
    as_client: Option<String>,
}

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Tokenize each PAN read from standard input (one per line).
    Tokenize {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Expiry stored with every PAN, `MM/YY`.
        #[arg(long)]
        expiry: Option<String>,
    },
    /// Reveal the PAN behind each token (arguments, or standard input).
    Detokenize {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Tokens; read from standard input when none are given.
        tokens: Vec<String>,
    },
    /// Show each token's metadata (never the PAN).
    Metadata {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Tokens; read from standard input when none are given.
        tokens: Vec<String>,
    },
    /// Delete each token.
    Delete {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Tokens; read from standard input when none are given.
        tokens: Vec<String>,
    },
}

impl Endpoint {
    async fn connect(&self) -> Result<Connection, CliError> {
        self.connect_as("payments").await
    }

    /// Connects; with `--dev` and no `--as`, as the dev client `default`.
    pub(super) async fn connect_as(&self, default: &str) -> Result<Connection, CliError> {
        let name = self.as_client.as_deref().unwrap_or(default);
        let (ca, cert, key) = match (&self.dev, &self.cacert, &self.cert, &self.key) {
            (Some(dir), ..) => {
                let pki = dir.join("pki");
                (
                    pki.join("ca.pem"),
                    pki.join(format!("{name}.pem")),
                    pki.join(format!("{name}-key.pem")),
                )
            }
            (None, Some(ca), Some(cert), Some(key)) => (ca.clone(), cert.clone(), key.clone()),
            _ => {
                return Err(CliError::Usage(
                    "give --dev DIR, or CARDVAULT_CACERT, CARDVAULT_CERT and CARDVAULT_KEY (or --cacert, --cert, --key)".into(),
                ));
            }
        };
        let addr = match crate::client::resolve_https(&self.addr).await {
            Err(crate::client::ResolveError::NotHttps) => {
                return Err(CliError::Usage(
                    "CARDVAULT_ADDR must look like https://HOST:PORT".into(),
                ));
            }
            resolved => resolved.map_err(anyhow::Error::from)?,
        };
        let tls = ClientTls::from_files(&ca, Some((&cert, &key)), false)
            .context("loading the client certificate")?;
        Ok(tls.connect(addr).await.context("connecting to the vault")?)
    }
}

/// Non-empty lines of standard input, each wiped when dropped.
fn stdin_lines() -> Result<Vec<Zeroizing<String>>, CliError> {
    let mut lines = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = Zeroizing::new(line.context("reading standard input")?);
        if !line.trim().is_empty() {
            lines.push(Zeroizing::new(line.trim().to_owned()));
        }
    }
    Ok(lines)
}

fn tokens_or_stdin(tokens: Vec<String>) -> Result<Vec<Zeroizing<String>>, CliError> {
    if tokens.is_empty() {
        stdin_lines()
    } else {
        Ok(tokens.into_iter().map(Zeroizing::new).collect())
    }
}

/// Prints the answer as one JSON line; false for an error answer.
pub(super) fn print(reply: &Reply) -> bool {
    let body = if reply.body.is_empty() {
        serde_json::json!({ "status": reply.status.as_u16() }).to_string()
    } else {
        String::from_utf8_lossy(&reply.body).into_owned()
    };
    say!("{}", body.trim_end());
    reply.status.is_success()
}

/// A JSON body `{"FIELD": VALUE, …}`. It moves into the request, and the
/// binary's allocator wipes it when the request is done with it.
fn body(pairs: &[(&str, Option<&str>)]) -> Result<Vec<u8>, CliError> {
    let mut map = serde_json::Map::new();
    for (field, value) in pairs {
        if let Some(value) = value {
            map.insert((*field).to_owned(), serde_json::Value::from(*value));
        }
    }
    Ok(serde_json::to_vec(&map).context("encoding the request")?)
}

/// POSTs one JSON body per item to `path`, printing each answer; false if
/// any was an error.
async fn post_each(
    endpoint: &Endpoint,
    path: &str,
    items: &[Zeroizing<String>],
    make_body: impl Fn(&str) -> Result<Vec<u8>, CliError>,
) -> Result<bool, CliError> {
    let mut conn = endpoint.connect().await?;
    let mut all_ok = true;
    for item in items {
        let json = make_body(item)?;
        let reply = conn
            .send(Method::POST, path, Some(("application/json", json)))
            .await
            .with_context(|| format!("POST {path}"))?;
        all_ok &= print(&reply);
    }
    Ok(all_ok)
}

/// `GET` or `DELETE /v1/tokens/{token}` for each token. A value that is not
/// a token (a card number sent by mistake, say) never reaches a URL: it is
/// refused here, without being echoed.
async fn by_path(
    endpoint: &Endpoint,
    method: Method,
    tokens: Vec<String>,
) -> Result<bool, CliError> {
    let tokens = tokens_or_stdin(tokens)?;
    let mut conn = endpoint.connect().await?;
    let mut all_ok = true;
    for raw in &tokens {
        let token = match crate::domain::Token::parse(raw) {
            Ok(token) => token,
            Err(e) => {
                say!(
                    "{}",
                    serde_json::json!({ "error": { "code": "invalid_request", "message": e.client_message() } })
                );
                all_ok = false;
                continue;
            }
        };
        let reply = conn
            .send(method.clone(), &format!("/v1/tokens/{token}"), None)
            .await
            .context("request")?;
        all_ok &= print(&reply);
    }
    Ok(all_ok)
}

/// Runs a client subcommand. Exit 1 if any item got an error answer.
pub async fn run(command: ClientCommand) -> CliResult {
    let all_ok = match command {
        ClientCommand::Tokenize { endpoint, expiry } => {
            let pans = stdin_lines()?;
            post_each(&endpoint, "/v1/tokenize", &pans, |pan| {
                body(&[("pan", Some(pan)), ("expiry", expiry.as_deref())])
            })
            .await?
        }
        ClientCommand::Detokenize { endpoint, tokens } => {
            let tokens = tokens_or_stdin(tokens)?;
            post_each(&endpoint, "/v1/detokenize", &tokens, |token| {
                body(&[("token", Some(token))])
            })
            .await?
        }
        ClientCommand::Metadata { endpoint, tokens } => {
            by_path(&endpoint, Method::GET, tokens).await?
        }
        ClientCommand::Delete { endpoint, tokens } => {
            by_path(&endpoint, Method::DELETE, tokens).await?
        }
    };
    if all_ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!("the vault refused at least one item (see the output)").into())
    }
}
