//! The development setup's config (`serve --dev` writes it once to
//! `DIR/cardvault.toml`), and its principals as typed values, so tests and
//! the dev server share one definition of cart, payments and admin.

use std::collections::BTreeMap;

use super::PrincipalConfig;

/// The development config, written once to `DIR/cardvault.toml`.
pub const DEV_CONFIG: &str = r#"# cardvault development configuration (created by `cardvault serve --dev`).
# Paths are relative to this file. Not for production: the KEK sits beside the data.

[api]
listen = "127.0.0.1:8443"
cert = "pki/server.pem"
key = "pki/server-key.pem"
client_ca = "pki/ca.pem"

[ops]
listen = "127.0.0.1:9090"

[storage]
data_dir = "db"
key_file = "kek.key"

[audit]
dir = "audit"
# Signed checkpoints of the trail (in production: a directory on another host).
checkpoint_dir = "checkpoints"

# The dev setup has one admin: sealing, KEK and evidence-key rotation need no
# second one here. In production they wait for a second admin's approval
# (the default).
[keys.dual_control]
kek_rotation = false
seal = false
evidence_key_rotation = false

# /v1/lookup needs the lookup role (it confirms "this card is on file").
[compat]
lookup_via_tokenize_or_read = false

[principals.cart]
tenant = "default"
roles = ["tokenize", "read", "lookup"]

[principals.payments]
tenant = "default"
roles = ["tokenize", "detokenize", "read"]

[principals.admin]
tenant = "default"
roles = ["read", "delete", "admin"]
# Acts on the whole vault: sealing, KEK rotation (dev has one tenant anyway).
scope = "global"
"#;

/// The principals of [`DEV_CONFIG`] (empty if the constant did not parse,
/// which its unit test rules out; validation refuses an empty table).
pub fn dev_principals() -> BTreeMap<String, PrincipalConfig> {
    use figment::providers::{Format, Toml};
    #[derive(serde::Deserialize)]
    struct Principals {
        principals: BTreeMap<String, PrincipalConfig>,
    }
    figment::Figment::new()
        .merge(Toml::string(DEV_CONFIG))
        .extract::<Principals>()
        .map(|p| p.principals)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_config_names_cart_payments_and_admin() {
        let principals = dev_principals();
        let names: Vec<&str> = principals.keys().map(String::as_str).collect();
        assert_eq!(names, ["admin", "cart", "payments"]);
    }
}
