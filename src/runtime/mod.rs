//! Work that outlives a request, without HTTP: key custody (opening the
//! KEK provider, the sealed state, unseal and seal, the online KEK
//! rotation), the re-encryption runner, cryptoperiods, the reveal proxy's
//! upstream client, dual-control approvals, the oracle guard, the
//! background sweeps, the watched payment pages' gauges and backups
//! (taken from a vault and its trail, restored elsewhere). Both the server
//! and the CLI use it; it imports nothing from either.

pub(crate) mod approvals;
pub(crate) mod backup;
pub(crate) mod collect;
pub(crate) mod cryptoperiod;
pub(crate) mod custody;
pub(crate) mod inventory;
pub(crate) mod oracle_guard;
pub(crate) mod reencrypt;
pub(crate) mod sweeps;
pub(crate) mod upstream;
pub(crate) mod watched;
