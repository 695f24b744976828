//! The `cardvault` binary: everything lives in the library's `cli` module.
//! Its heap wipes every block on free ([`cardvault::zero_on_free`]).

#[global_allocator]
static ALLOCATOR: cardvault::zero_on_free::ZeroOnFree = cardvault::zero_on_free::ZeroOnFree;

fn main() -> std::process::ExitCode {
    cardvault::cli::main()
}
