//! The integration tests, one binary (so RocksDB links once): each module
//! starts real components — RocksDB, key files, the mTLS server on
//! 127.0.0.1:0, the `cardvault` binary — and talks to them as a client would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod backup;
mod cli;
mod collect;
mod collect_browser;
mod common;
mod custody;
mod deploy;
mod evidence;
mod expiring;
mod fuzz_corpus;
mod hostile;
mod kubernetes;
mod leak;
mod lifecycle;
mod load;
mod migrate;
mod oracle;
mod portable;
mod postgres;
mod postgres_faults;
mod proxy;
mod scan;
mod secret_files;
mod server;
mod store_suite;
mod tokenize_file;
mod vault;
mod version;
mod watch;
