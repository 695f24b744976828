//! The development directory (`--dev DIR`, default `./cardvault-dev`) in
//! one place: creating what is missing — PKI, KEK, config — and what
//! `serve --dev` prints about it (the DEV MODE banner, curl commands, unseal
//! commands). Its KEK is a key file (the default), a SoftHSM2 token inside
//! the directory (`--kek pkcs11`), or a KEK split 2-of-3 among three dev
//! custodians whose share files and client certificates sit in the
//! directory (`--kek shamir`); the choice is made once, when the
//! directory's config is written, and later runs reuse it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::error::CliError;
use crate::config::Config;
use crate::crypto::KeyFileProvider;
use crate::crypto::pkcs11::{Pkcs11Provider, Pkcs11Settings};

/// Which KEK provider a dev directory uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DevKek {
    /// `DIR/kek.key`.
    File,
    /// A SoftHSM2 token in `DIR/softhsm/`.
    Pkcs11,
    /// Three custodian shares (any two unseal) in `DIR/custodians/`.
    Shamir,
}

impl DevKek {
    fn name(self) -> &'static str {
        match self {
            DevKek::File => "file",
            DevKek::Pkcs11 => "pkcs11",
            DevKek::Shamir => "shamir",
        }
    }
}

/// Debian's SoftHSM2 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The dev token's label and the dev KEK's label.
const DEV_TOKEN: &str = "cardvault-dev";
const DEV_KEY_LABEL: &str = "cardvault-kek-1";
/// The dev custodians.
pub const DEV_CUSTODIANS: [&str; 3] = ["custodian-1", "custodian-2", "custodian-3"];
pub const DEV_THRESHOLD: u8 = 2;

/// The SoftHSM2 config of a dev directory (SoftHSM2 reads it from the
/// `SOFTHSM2_CONF` environment variable, which `cardvault` sets for a dev
/// directory that has one before it starts any thread).
pub fn softhsm_conf(dir: &Path) -> PathBuf {
    dir.join("softhsm").join("softhsm2.conf")
}

/// The config text for a new dev directory with `kek`.
pub fn config_text(kek: DevKek) -> String {
    let base = crate::config::dev::DEV_CONFIG;
    match kek {
        DevKek::File => base.to_owned(),
        DevKek::Pkcs11 => format!(
            "{}\n[kek]\nprovider = \"pkcs11\"\nmodule = \"{SOFTHSM_MODULE}\"\ntoken_label = \"{DEV_TOKEN}\"\npin_file = \"hsm.pin\"\nkey_label = \"{DEV_KEY_LABEL}\"\n",
            base.replace("key_file = \"kek.key\"\n", "")
        ),
        DevKek::Shamir => {
            let mut text = base.replace("key_file = \"kek.key\"\n", "");
            text.push_str("\n[kek]\nprovider = \"shamir\"\n");
            for name in DEV_CUSTODIANS {
                let _ = write!(
                    text,
                    "\n[principals.{name}]\ntenant = \"default\"\nroles = [\"custodian\"]\n"
                );
            }
            text
        }
    }
}

/// The provider an existing dev config names.
pub fn existing(config: &Path) -> Result<DevKek, CliError> {
    let source = Config::load(config)?.kek()?;
    Ok(match source.name() {
        "pkcs11" => DevKek::Pkcs11,
        "shamir" => DevKek::Shamir,
        _ => DevKek::File,
    })
}

/// Refuses `--kek` asking for another provider than the directory has.
pub fn check_matches(dir: &Path, wanted: Option<DevKek>, found: DevKek) -> Result<(), CliError> {
    match wanted {
        Some(wanted) if wanted != found => Err(CliError::Usage(format!(
            "{} was created with --kek {}; use another --dev DIR for --kek {}",
            dir.display(),
            found.name(),
            wanted.name()
        ))),
        _ => Ok(()),
    }
}

/// Creates whatever the dev KEK of `kek` still lacks in `dir`.
pub fn prepare(dir: &Path, kek: DevKek) -> anyhow::Result<()> {
    match kek {
        DevKek::File => create_dev_kek_if_missing(&dir.join("kek.key")),
        DevKek::Pkcs11 => prepare_softhsm(dir),
        DevKek::Shamir => prepare_custodians(dir),
    }
}

fn random_pin() -> anyhow::Result<String> {
    let mut bytes = [0u8; 12];
    crate::random::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

fn prepare_softhsm(dir: &Path) -> anyhow::Result<()> {
    let conf = softhsm_conf(dir);
    let tokens = dir.join("softhsm").join("tokens");
    std::fs::create_dir_all(&tokens).with_context(|| format!("creating {}", tokens.display()))?;
    if !conf.exists() {
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
    }
    if std::env::var_os("SOFTHSM2_CONF").is_none_or(|v| Path::new(&v) != conf) {
        anyhow::bail!(
            "SOFTHSM2_CONF must be {} for this dev directory (cardvault sets it when run with --dev DIR)",
            conf.display()
        );
    }
    let pin_file = dir.join("hsm.pin");
    if !pin_file.exists() {
        let pin = zeroize::Zeroizing::new(random_pin()?);
        let so_pin = zeroize::Zeroizing::new(random_pin()?);
        Pkcs11Provider::init_token(Path::new(SOFTHSM_MODULE), DEV_TOKEN, &so_pin, &pin)?;
        crate::pki::write_file(&pin_file, &pin, true)?;
        tracing::info!(
            token = DEV_TOKEN,
            "created a SoftHSM2 token for the dev vault"
        );
    }
    let settings = Pkcs11Settings {
        module: PathBuf::from(SOFTHSM_MODULE),
        token_label: DEV_TOKEN.to_owned(),
        pin_file,
        key_label: DEV_KEY_LABEL.to_owned(),
    };
    if Pkcs11Provider::open(&settings).is_err() {
        Pkcs11Provider::create_key(&settings)?;
        tracing::info!(
            key = DEV_KEY_LABEL,
            "created the dev KEK inside the SoftHSM2 token"
        );
    }
    Ok(())
}

fn prepare_custodians(dir: &Path) -> anyhow::Result<()> {
    let shares = dir.join("custodians");
    let pki = dir.join("pki");
    if !shares.exists() {
        let names: Vec<String> = DEV_CUSTODIANS.iter().map(|s| (*s).to_owned()).collect();
        crate::runtime::custody::write_shares(&shares, DEV_THRESHOLD, &names)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(dir = %shares.display(), "split the dev KEK among three custodians (any two unseal)");
    }
    for name in DEV_CUSTODIANS {
        if !pki.join(format!("{name}.pem")).exists() {
            crate::pki::issue(&pki, name)?;
        }
    }
    Ok(())
}

/// Sets `SOFTHSM2_CONF` for a dev directory that has (or is about to get)
/// a SoftHSM2 token, unless the caller set it. Reads the raw arguments:
/// `--dev DIR`, `--dev=DIR`, `--data-dir DIR`, or a bare `--dev`.
pub fn softhsm_env_from_args(args: &[String]) -> Option<PathBuf> {
    if std::env::var_os("SOFTHSM2_CONF").is_some() {
        return None;
    }
    let mut dir = None;
    let mut wants_pkcs11 = false;
    for (i, arg) in args.iter().enumerate() {
        let next = args.get(i + 1).filter(|n| !n.starts_with('-'));
        match arg.as_str() {
            "--dev" => dir = Some(next.map_or(DEV_DIR, String::as_str)),
            "--data-dir" => dir = next.map(String::as_str).or(dir),
            "--kek" => wants_pkcs11 |= next.is_some_and(|n| n == "pkcs11"),
            "--kek=pkcs11" => wants_pkcs11 = true,
            other => {
                if let Some(value) = other.strip_prefix("--dev=") {
                    dir = Some(value);
                }
            }
        }
    }
    let dir = std::path::absolute(dir?).ok()?;
    let conf = softhsm_conf(&dir);
    (wants_pkcs11 || conf.exists()).then_some(conf)
}

/// Where `--dev` puts the development setup unless told otherwise.
pub const DEV_DIR: &str = "./cardvault-dev";

/// The config `serve --dev` wrote in a dev directory: it names the KEK
/// (a key file, a token, custodians — or another key file after a KEK
/// rotation). A directory without one uses [`Layout::dev`].
pub fn dev_config(dir: &Path) -> Option<PathBuf> {
    let config = dir.join("cardvault.toml");
    config.is_file().then_some(config)
}

/// Creates a development KEK at `path` unless one is there (`demo` and
/// `serve --dev` only).
pub fn create_dev_kek_if_missing(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        KeyFileProvider::create(path)?;
        tracing::info!(path = %path.display(), "created development KEK");
    }
    Ok(())
}

/// Creates whatever of the dev setup is missing (with a new directory's
/// KEK where `kek` says); returns the config path.
pub fn prepare_dev(
    dir: &Path,
    kek: Option<DevKek>,
) -> std::result::Result<PathBuf, super::error::CliError> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pki = dir.join("pki");
    if !pki.join("ca.pem").exists() {
        crate::pki::init(&pki).map_err(anyhow::Error::from)?;
        tracing::info!(dir = %pki.display(), "created development PKI");
    } else if crate::pki::renew_server_if_due(&pki).map_err(anyhow::Error::from)? {
        tracing::info!(dir = %pki.display(), "renewed the development server certificate");
    }
    let config = dir.join("cardvault.toml");
    let kek = if config.exists() {
        let found = existing(&config)?;
        check_matches(dir, kek, found)?;
        found
    } else {
        kek.unwrap_or(DevKek::File)
    };
    prepare(dir, kek)?;
    if !config.exists() {
        std::fs::write(&config, config_text(kek))
            .with_context(|| format!("writing {}", config.display()))?;
    }
    Ok(config)
}

/// Signed checkpoints of a dev directory's trail go to `DIR/checkpoints/`
/// unless its config says otherwise (a directory made before they existed
/// gets them too).
pub fn add_dev_checkpoints(config: &mut crate::config::Config, dir: &Path) {
    if config.audit.checkpoint_dir.is_none() {
        config.audit.checkpoint_dir = Some(dir.join("checkpoints"));
    }
}

/// The hosted card fields of a dev directory: its config's `[collect]`, or
/// the listener `serve --dev` adds (the dev server certificate, loopback
/// page origins over plain HTTP allowed, on `api_listen`'s address when it
/// asks for port 0).
pub fn add_dev_collect(
    config: &mut crate::config::Config,
    api_listen: Option<std::net::SocketAddr>,
) {
    if config.collect.is_some() {
        return;
    }
    let mut collect =
        crate::config::CollectConfig::dev(config.api.cert.clone(), config.api.key.clone());
    if let Some(api) = api_listen.filter(|a| a.port() == 0) {
        collect.listen = api;
    }
    config.collect = Some(collect);
}
