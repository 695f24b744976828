//! Who is calling: the principal named by the verified client certificate
//! (first URI SAN, else first DNS SAN, else subject CN) and the tenant and
//! roles the config grants it. A [`Caller`] is built only here, from a
//! certificate rustls has already verified, and handed to every request.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::ApiError;
use crate::audit::{Event, EventKind};
use crate::config::{Config, Role};
use crate::domain::TenantId;

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
}

/// The access policy: configured principals only; everyone else is denied.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    principals: HashMap<String, Access>,
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
                };
                (name.clone(), access)
            })
            .collect();
        Policy { principals }
    }

    fn access(&self, principal: &Principal) -> Option<Access> {
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
    /// `None` if the certificate names no principal at all.
    pub(super) fn from_certificate(
        der: &[u8],
        peer: SocketAddr,
        policy: &Policy,
    ) -> Option<Caller> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let (principal, serial) = principal_of(&cert)?;
        let access = policy.access(&principal).map(Arc::new);
        Some(Caller {
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

fn principal_of(cert: &X509Certificate<'_>) -> Option<(Principal, String)> {
    let serial = cert.raw_serial_as_string().replace(':', "");
    let mut uri = None;
    let mut dns = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) if uri.is_none() => uri = Some(u.to_string()),
                GeneralName::DNSName(d) if dns.is_none() => dns = Some(d.to_string()),
                _ => {}
            }
        }
    }
    let cn = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    };
    let name = uri.or(dns).or_else(cn).filter(|n| !n.is_empty())?;
    Some((Principal(name), serial))
}
