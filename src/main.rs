//! The `cardvault` binary: everything lives in the library's `cli` module.
//! Its heap wipes every block on free ([`cardvault::zero_on_free`]), and
//! its `malloc` — under Rust's allocations and RocksDB's alike — is
//! jemalloc, linked unprefixed so it replaces the C library's `malloc`
//! for the whole process (`tests/it/cli.rs` checks the binary exports it).

// Linked for its `malloc`/`free` symbols, not called.
use tikv_jemalloc_sys as _;

#[global_allocator]
static ALLOCATOR: cardvault::zero_on_free::ZeroOnFree = cardvault::zero_on_free::ZeroOnFree;

fn main() -> std::process::ExitCode {
    cardvault::cli::main()
}
