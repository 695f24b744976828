//! Process hardening (docs/guarantees.md). Every entry point installs the panic
//! hook, which logs where a panic happened with a fixed message and never
//! the payload (a payload could quote a request, and so a PAN). `serve`
//! also turns core dumps off, makes the process non-dumpable (no ptrace
//! attach or /proc/PID/mem by other same-uid processes), locks memory
//! where the limit allows, and refuses to start on files an attacker could
//! read or plant: private keys readable by group/others, data or audit
//! directories owned by another user.

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

#[cfg(feature = "vault")]
pub use process::{
    MemoryLock, harden_process, lower_thread_priority, raise_open_files_limit, read_secret_text,
    refuse_unsafe_files,
};

#[cfg(feature = "vault")]
mod process {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use rustix::mm::{MlockAllFlags, mlockall};
    use rustix::process::{
        DumpableBehavior, Resource, Rlimit, geteuid, getrlimit, set_dumpable_behavior, setrlimit,
    };

    /// Whether memory is locked against swapping.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum MemoryLock {
        /// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` is in force:
        /// key material (like every page) never reaches swap.
        Locked,
        /// Not locked, and why.
        NotLocked(String),
    }

    /// What [`harden_process`] achieved.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ProcessHardening {
        /// `RLIMIT_CORE` is 0 (soft and hard).
        pub core_dumps_off: bool,
        /// `PR_SET_DUMPABLE` is 0.
        pub non_dumpable: bool,
        /// Memory locking.
        pub memory: MemoryLock,
    }

    /// Core dumps off, non-dumpable, memory locked when `RLIMIT_MEMLOCK`'s
    /// hard limit is unlimited (raising the soft limit to it). Locking with
    /// a finite limit is refused on purpose: with `MCL_FUTURE` every later
    /// allocation beyond the limit would fail, so the vault would crash
    /// under load instead of warning now. Logs what it did (in dev mode,
    /// `dev`, the memory warning is one short line).
    pub fn harden_process(dev: bool) -> ProcessHardening {
        let core_dumps_off = setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )
        .is_ok();
        let non_dumpable = set_dumpable_behavior(DumpableBehavior::NotDumpable).is_ok();
        let memory = lock_memory();
        match &memory {
            MemoryLock::Locked => tracing::info!(
                core_dumps_off,
                non_dumpable,
                "process hardened; memory locked (no key page reaches swap)"
            ),
            MemoryLock::NotLocked(why) if dev => tracing::warn!(
                reason = %why,
                "memory NOT locked (fine in dev mode)"
            ),
            MemoryLock::NotLocked(why) => tracing::warn!(
                core_dumps_off,
                non_dumpable,
                reason = %why,
                "memory NOT locked: key material could be swapped out; run with LimitMEMLOCK=infinity (systemd) or ulimit -l unlimited"
            ),
        }
        ProcessHardening {
            core_dumps_off,
            non_dumpable,
            memory,
        }
    }

    /// Lowers the calling thread's scheduling priority by `nice` steps (a
    /// Linux thread has its own nice value), so work on it yields the CPU
    /// to the rest of the process when both want it. Used by the public
    /// listener's runtime: a flood of the internet-facing port then costs
    /// the mTLS API little. A failure is logged, not fatal.
    pub fn lower_thread_priority(nice: i32) {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::warn!(error = %e, "cannot lower the public listener's thread priority");
        }
    }

    /// Raises the soft `RLIMIT_NOFILE` to the hard limit, so the connection
    /// caps, not the descriptor limit, bound the listeners; warns when even
    /// the hard limit is below `needed` (both listeners' caps plus a
    /// reserve for the database, the trail and the PKI files). Returns the
    /// soft limit in force.
    pub fn raise_open_files_limit(needed: u64) -> u64 {
        let limit = getrlimit(Resource::Nofile);
        let hard = limit.maximum;
        if limit.current != hard {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: hard,
                    maximum: hard,
                },
            );
        }
        let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        if now < needed {
            tracing::warn!(
                open_files_limit = now,
                needed,
                "the open-files limit is below the connection caps plus a reserve: a connection flood could exhaust descriptors before the caps refuse it; raise LimitNOFILE (systemd) or ulimit -n, or lower limits.max_connections"
            );
        }
        now
    }

    fn lock_memory() -> MemoryLock {
        let limit = getrlimit(Resource::Memlock);
        if limit.maximum.is_some() {
            return MemoryLock::NotLocked(format!(
                "RLIMIT_MEMLOCK hard limit is {} bytes, not unlimited",
                limit.maximum.unwrap_or_default()
            ));
        }
        if limit.current.is_some() {
            let raised = setrlimit(
                Resource::Memlock,
                Rlimit {
                    current: None,
                    maximum: None,
                },
            );
            if let Err(e) = raised {
                return MemoryLock::NotLocked(format!("cannot raise RLIMIT_MEMLOCK: {e}"));
            }
        }
        match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
            Ok(()) => MemoryLock::Locked,
            Err(e) => MemoryLock::NotLocked(format!("mlockall failed: {e}")),
        }
    }

    /// Why the vault refuses to start on a file or directory.
    #[derive(Debug, thiserror::Error)]
    #[error("refusing to start: {what} {path}: {problem}")]
    pub struct UnsafeFile {
        what: &'static str,
        path: String,
        problem: String,
    }

    /// Checks what the vault is about to trust: each private key must not be
    /// readable or writable by group/others; each directory, if it exists,
    /// must be owned by the user the vault runs as and not writable by
    /// group/others.
    pub fn refuse_unsafe_files(
        private_keys: &[(&'static str, &Path)],
        directories: &[(&'static str, &Path)],
    ) -> Result<(), UnsafeFile> {
        let me = geteuid().as_raw();
        let fail = |what, path: &Path, problem: String| UnsafeFile {
            what,
            path: path.display().to_string(),
            problem,
        };
        for &(what, path) in private_keys {
            let meta = std::fs::metadata(path).map_err(|e| fail(what, path, e.to_string()))?;
            let mode = meta.mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(
                    what,
                    path,
                    format!("mode {mode:o} lets group/others read it; chmod 600"),
                ));
            }
            if meta.uid() != me {
                return Err(fail(
                    what,
                    path,
                    format!("owned by uid {}, not by the vault's uid {me}", meta.uid()),
                ));
            }
        }
        for &(what, path) in directories {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            if meta.uid() != me {
                return Err(fail(
                    what,
                    path,
                    format!("owned by uid {}, not by the vault's uid {me}", meta.uid()),
                ));
            }
            let mode = meta.mode() & 0o777;
            if mode & 0o022 != 0 {
                return Err(fail(
                    what,
                    path,
                    format!("mode {mode:o} lets group/others write to it; chmod 700"),
                ));
            }
        }
        Ok(())
    }

    /// Reads a small secret text file (a PIN, a database password) as the
    /// private keys are checked: a regular file owned by this user that
    /// group and others cannot access, at most `max_len` bytes of UTF-8;
    /// trailing newlines are dropped and an empty secret is refused. The
    /// error says what is wrong with the file, never what it holds.
    pub fn read_secret_text(
        path: &Path,
        max_len: u64,
    ) -> Result<zeroize::Zeroizing<String>, String> {
        use std::io::Read as _;
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "mode {:04o}; it must not be accessible to group or others (chmod 600)",
                meta.mode() & 0o7777
            ));
        }
        if meta.uid() != geteuid().as_raw() {
            return Err("owned by another user".into());
        }
        if meta.len() > max_len {
            return Err(format!("longer than {max_len} bytes"));
        }
        let mut text = zeroize::Zeroizing::new(String::new());
        file.take(max_len + 1)
            .read_to_string(&mut text)
            .map_err(|_| "not UTF-8 text".to_owned())?;
        let end = text.trim_end_matches(['\n', '\r']).len();
        text.truncate(end);
        if text.is_empty() {
            return Err("empty".into());
        }
        Ok(text)
    }
}
