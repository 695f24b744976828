//! The mTLS service: the API listener ([`listener`]: rustls, client
//! certificate required, own accept loop with a handshake timeout and a
//! connection cap, HTTP/1.1 and HTTP/2 via hyper, graceful drain on
//! shutdown) and the plain-HTTP ops listener ([`ops`]). Thin: all card logic
//! is in [`crate::vault`]. Each concern has its file: requests
//! ([`request`]), responses ([`response`]), auditing ([`audited`]), the card
//! routes ([`api`]), admin routes ([`admin`]), key custody ([`custody`]:
//! the KEK provider, sealed state, shares) and its routes ([`seal`]), identity, errors, alert
//! rules, rate limits, TLS and metrics; [`running`] binds and starts the
//! listeners over the route table ([`routes`]); [`service`] wires the whole
//! vault.
//! Request bodies and certificate names are parsed in [`crate::peer`].

pub mod accept;
pub mod admin;
pub mod api;
pub mod approvals;
pub mod audited;
pub mod budget;
pub mod connection;
pub mod cryptoperiod;
pub mod custody;
pub mod error;
pub mod identity;
pub mod keys;
pub mod linger;
pub mod listener;
pub mod metrics;
pub mod monitor;
pub mod observe;
pub mod ops;
pub mod oracle_guard;
pub mod portable;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod request;
pub mod reseal;
pub mod response;
pub mod routes;
pub mod running;
pub mod seal;
pub mod service;
pub mod shares;
pub mod state;
pub mod tenants;
pub mod tls;
pub mod upstream;

pub use listener::DRAIN_TIMEOUT;
pub use running::{Running, ServerError, start};
pub use service::Service;
