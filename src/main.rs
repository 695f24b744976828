//! The `cardvault` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    cardvault::cli::main()
}
