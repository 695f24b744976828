//! Who is calling: the principal named by the verified client certificate
//! (first URI SAN, else first DNS SAN, else subject CN) and the tenant and
//! roles the config grants it. A config key may name the kind of name it
//! accepts (`uri:…`, `dns:…`, `cn:…`); a plain key accepts any kind. A
//! name holding control or invisible formatting characters is refused. A [`Caller`] is built only here, from a
//! certificate rustls has already verified, and handed to every request.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use super::error::ApiError;
use crate::audit::{Event, EventKind};
use crate::config::{AdminScope, Config, HoursUtc, Role};
use crate::domain::TenantId;
pub use crate::peer::names::{CertificateName, IdentityRefused, NameKind, certificate_name};

/// A principal name taken from a verified certificate. Only this module can
/// make one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Principal(String);

impl Principal {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({})", self.0)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a configured principal may do, and where.
#[derive(Debug, Clone)]
pub struct Access {
    /// Its tenant.
    pub tenant: TenantId,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Where its admin role reaches.
    pub scope: AdminScope,
    /// Whether each reveal must carry a reason.
    pub require_reason: bool,
    /// UTC hours in which it is expected to detokenize.
    pub detokenize_hours: Option<HoursUtc>,
}

/// The access policy: configured principals only; everyone else is denied.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    principals: HashMap<String, Arc<Access>>,
}

impl Policy {
    /// Builds the policy from a validated config.
    pub fn from_config(config: &Config) -> Policy {
        let principals = config
            .principals
            .iter()
            .map(|(name, p)| {
                let access = Access {
                    tenant: p.tenant.clone(),
                    roles: p.roles.iter().copied().collect(),
                    scope: p.scope,
                    require_reason: p.require_reason,
                    detokenize_hours: p.detokenize_hours_utc,
                };
                (name.clone(), Arc::new(access))
            })
            .collect();
        Policy { principals }
    }

    /// The config entry for a name of type `kind`: a typed key
    /// (`uri:NAME`, `dns:NAME`, `cn:NAME`) first, which matches only that
    /// type of name, then the plain key `NAME`, which matches any. The
    /// principal is the key that matched (or the plain name).
    fn resolve(&self, kind: NameKind, name: String) -> (Principal, Option<Arc<Access>>) {
        let typed = format!("{}:{name}", kind.prefix());
        if let Some(access) = self.principals.get(&typed) {
            return (Principal(typed), Some(Arc::clone(access)));
        }
        let access = self.principals.get(&name).cloned();
        (Principal(name), access)
    }

    /// The tenant of the configured principal `name` (config key).
    pub fn tenant_of(&self, name: &str) -> Option<&TenantId> {
        self.principals.get(name).map(|a| &a.tenant)
    }

    /// The access of an already identified principal under this table
    /// (after a reload it may have changed, or be gone).
    pub fn access_of(&self, principal: &Principal) -> Option<Arc<Access>> {
        self.principals.get(principal.as_str()).cloned()
    }
}

/// The authenticated caller of one connection.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Principal from the certificate.
    pub principal: Principal,
    /// Certificate serial number, hex.
    pub serial: String,
    /// Peer address.
    pub peer: SocketAddr,
    /// Granted access; `None` for a principal the config does not know.
    pub access: Option<Arc<Access>>,
}

impl Caller {
    /// Identifies the caller from its verified leaf certificate (DER).
    pub(super) fn from_certificate(
        der: &[u8],
        peer: SocketAddr,
        policy: &Policy,
    ) -> Result<Caller, IdentityRefused> {
        let CertificateName { kind, name, serial } = certificate_name(der)?;
        let (principal, access) = policy.resolve(kind, name);
        Ok(Caller {
            principal,
            serial,
            peer,
            access,
        })
    }

    /// The caller's tenant if it holds `role`.
    pub fn authorize(&self, role: Role) -> Option<&TenantId> {
        let access = self.access.as_ref()?;
        access.roles.contains(&role).then_some(&access.tenant)
    }

    /// Whether the caller's admin role reaches `tenant`: its own tenant,
    /// or any with `scope = "global"`.
    pub fn admin_reaches(&self, tenant: &TenantId) -> bool {
        self.access.as_ref().is_some_and(|a| {
            a.roles.contains(&Role::Admin) && (a.scope == AdminScope::Global || a.tenant == *tenant)
        })
    }

    /// Whether the caller holds the admin role with `scope = "global"`
    /// (what acts on the whole vault, like sealing it, needs).
    pub fn is_global_admin(&self) -> bool {
        self.access
            .as_ref()
            .is_some_and(|a| a.roles.contains(&Role::Admin) && a.scope == AdminScope::Global)
    }

    /// Whether the caller must give a reason for each reveal.
    pub fn must_give_reason(&self) -> bool {
        self.access.as_ref().is_some_and(|a| a.require_reason)
    }

    /// The caller's tenant if it holds `role`, else 403 `forbidden`.
    pub fn require(&self, role: Role) -> Result<TenantId, ApiError> {
        self.authorize(role).cloned().ok_or(ApiError::Forbidden)
    }

    /// An audit event about this caller: principal, certificate serial,
    /// peer and (for a configured principal) tenant.
    pub fn event(&self, kind: EventKind) -> Event {
        let mut event = Event::new(kind);
        event.principal = Some(self.principal.to_string());
        event.cert_serial = Some(self.serial.clone());
        event.peer = Some(self.peer.to_string());
        event.tenant = self.access.as_ref().map(|a| a.tenant.to_string());
        event
    }

    /// A bounded label for metrics: the principal if configured, else `unknown`.
    pub fn metric_label(&self) -> String {
        if self.access.is_some() {
            self.principal.as_str().to_owned()
        } else {
            "unknown".to_owned()
        }
    }
}
