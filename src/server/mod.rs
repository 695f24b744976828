//! The wire: the mTLS API listener and the plain-HTTP ops listener, and
//! the routes behind them. Thin: card logic is in [`crate::vault`], work
//! that outlives a request in [`crate::runtime`].
//!
//! - Transport: the accept loop both listeners share (`accept`), the API
//!   listener (`listener`: TLS handshake, identity, connection quota,
//!   hyper's HTTP/1.1 and HTTP/2), one connection's life (`connection`:
//!   header and idle timeouts), early answers on HTTP/1 (`linger`), TLS
//!   settings (`tls`), SIGHUP reload (`reload`), connection quotas
//!   (`conn_quota`), the body budget (`budget`), the per-request
//!   middleware (`observe`), the ops listener (`ops`), the Prometheus
//!   recorder (`metrics`), alert rules (`monitor`), rate limits
//!   (`ratelimit`), binding and starting (`running`) and the whole vault
//!   as `serve` runs it (`service`).
//! - Handling: identity (`identity`), what handlers share (`state`), the
//!   one audited-handler helper (`audited`: [`Call`]), errors (`error`),
//!   reading requests (`request`) and writing responses (`response`).
//! - `routes`: the route table and one file per route family.
//! - `collect`: the hosted card fields' public listener (frame, assets,
//!   submit), internet-facing, on its own bounds and runtime.
//!
//! Request bodies and certificate names are parsed in [`crate::peer`].

mod accept;
mod audited;
mod budget;
mod collect;
mod conn_quota;
mod connection;
mod error;
mod identity;
mod linger;
mod listener;
mod metrics;
mod monitor;
mod observe;
mod ops;
mod phase;
mod ratelimit;
mod reload;
mod request;
mod response;
mod routes;
mod running;
mod service;
mod state;
mod tls;

pub use audited::Call;
pub use collect::{frame_policy, inventory as collect_inventory, snippet};
pub use error::ApiError;
pub use listener::DRAIN_TIMEOUT;
pub use metrics::record_memory_lock;
pub use running::{OpsListener, Running, ServerError, start};
pub use service::Service;
pub use tls::{TlsError, public_server_config, server_config};
