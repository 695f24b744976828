//! Process hardening that every entry point installs. For now: a panic hook
//! that logs where a panic happened with a fixed message and never the
//! payload (a payload could quote a request, and so a PAN).

/// Replaces the default panic hook (which prints the payload).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "unknown location".into());
        tracing::error!(%location, "internal error (panic); payload withheld");
        eprintln!("cardvault: internal error at {location}; payload withheld");
    }));
}
