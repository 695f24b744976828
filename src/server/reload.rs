//! What a running vault reloads without a restart (SIGHUP): the TLS server
//! configuration — server certificate and key, client CA, CRLs — and the
//! principals table. A new configuration is built whole before anything is
//! swapped, so a bad file keeps the old one. Established connections keep
//! their TLS session; their requests are checked against the current
//! principals table, so a principal removed from the config loses access on
//! its next request, not at its next connection.

use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;

use super::identity::Policy;
use super::tls::{self, TlsError};
use crate::config::Config;

/// The parts of the server a reload replaces.
pub struct Reloadable {
    acceptor: RwLock<TlsAcceptor>,
    policy: RwLock<Arc<Policy>>,
}

impl Reloadable {
    /// The parts as `config` says.
    pub fn new(config: &Config) -> Result<Arc<Reloadable>, TlsError> {
        Ok(Arc::new(Reloadable {
            acceptor: RwLock::new(TlsAcceptor::from(tls::server_config(&config.api)?)),
            policy: RwLock::new(Arc::new(Policy::from_config(config))),
        }))
    }

    /// The TLS acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The principals table in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Builds both parts from `config`, then swaps them in; on an error
    /// nothing changes.
    pub fn reload(&self, config: &Config) -> Result<(), TlsError> {
        let acceptor = TlsAcceptor::from(tls::server_config(&config.api)?);
        let policy = Arc::new(Policy::from_config(config));
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        Ok(())
    }
}
