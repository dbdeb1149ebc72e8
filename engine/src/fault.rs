//! Deterministic crash points for the crash-safety tests (TigerBeetle's
//! style of fault injection, at the granularity of a process): with
//! `INT_FAULT=NAME:N` in its environment, the process aborts — as abruptly
//! as a SIGKILL, no unwinding, no flush — the `N`th time it passes the
//! point `NAME`. Without the variable a point costs one relaxed load of a
//! flag read once.
//!
//! Points: `state_log_half_written` (half of a block's records written to
//! the state log, not synced), `state_log_synced` (the log synced, LMDB
//! not committed: the window the commit protocol must survive),
//! `lmdb_committed` (LMDB committed, the log's memory not updated),
//! `genesis_chunk_loaded` (a genesis chunk in the log, no head yet). A genesis chunk's log write passes `state_log_half_written`
//! too.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The armed point: its name, and how many passes abort.
struct Armed {
    name: String,
    at: u64,
    passes: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("INT_FAULT").ok()?;
            let (name, at) = v.split_once(':')?;
            Some(Armed {
                name: name.to_string(),
                at: at.parse().ok().filter(|n| *n > 0)?,
                passes: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Passes the crash point `name`: aborts the process when `INT_FAULT`
/// arms it and this is the armed pass.
pub fn point(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && a.passes.fetch_add(1, Ordering::Relaxed) + 1 == a.at
    {
        eprintln!("INT_FAULT: aborting at {name} (pass {})", a.at);
        std::process::abort();
    }
}
