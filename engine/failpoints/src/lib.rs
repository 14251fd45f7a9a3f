//! Named failpoints at the write boundaries where a crash can leave two stores out of step.
//!
//! Every build has them, inert unless the `SAGAFLOW_FAILPOINTS` environment variable arms some
//! at start (see [`arm_from_env`]). The syntax is the [`fail`] crate's, as TiKV uses it:
//! `point=actions[;point=actions...]`. For example `journal-acked=20*off->return` lets the
//! point pass 20 times, then crashes the process at it. Actions:
//! - `return` crashes the process there, as `kill -9` would: no destructor, flush or clean
//!   shutdown runs;
//! - `panic`, `sleep(ms)`, `pause`, `print`, `off`, with `N*` counts and `P%` chances, as in
//!   the `fail` crate.
//!
//! The fault-matrix test (`tests/tests/faults.rs`) arms each point in turn and checks G1–G3
//! after the restart; `take-back-rebuild` needs a partition that changed owners, and
//! `tests/tests/restore.rs` arms it.

use std::sync::atomic::{AtomicBool, Ordering};

/// After the broker acknowledged a journal record, before it is applied to RocksDB.
pub const JOURNAL_ACKED: &str = "journal-acked";
/// Between two chunks of states written to RocksDB while restoring from the changelog.
pub const RESTORE_CHUNK: &str = "restore-chunk";
/// After the relay's outputs up to a new watermark were delivered, before the watermark and
/// its checkpoint are written.
pub const RELAY_DELIVERED: &str = "relay-delivered";
/// During a changelog flush: after one state of the flush is handed to the producer.
pub const CHANGELOG_FLUSH: &str = "changelog-flush";
/// After a restore's CLAIM record is acknowledged, before the partition's inputs are assigned.
pub const CLAIM_WRITTEN: &str = "claim-written";
/// After a restore met another engine's claim in the journal, before it rebuilds the
/// partition from the changelog.
pub const TAKE_BACK_REBUILD: &str = "take-back-rebuild";
/// In the worker, after the handler returned, before the reply is sent.
pub const WORKER_HANDLED: &str = "worker-handled";
/// In the worker, after the reply is acknowledged, before the command's offset is stored.
pub const WORKER_REPLIED: &str = "worker-replied";

/// Every point, for validation and docs.
pub const ALL: &[&str] = &[
    JOURNAL_ACKED,
    RESTORE_CHUNK,
    RELAY_DELIVERED,
    CHANGELOG_FLUSH,
    CLAIM_WRITTEN,
    TAKE_BACK_REBUILD,
    WORKER_HANDLED,
    WORKER_REPLIED,
];

/// The environment variable that arms points.
pub const ENV: &str = "SAGAFLOW_FAILPOINTS";

/// Whether any point is armed: unarmed processes skip the registry lookup entirely.
static ARMED: AtomicBool = AtomicBool::new(false);

/// A bad `SAGAFLOW_FAILPOINTS` value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The entry does not name a point this build has.
    #[error("{ENV}: unknown failpoint {name:?}; the points are: {}", ALL.join(", "))]
    UnknownPoint {
        /// The name given.
        name: String,
    },
    /// The entry is not `point=actions`, or the actions do not parse.
    #[error("{ENV}: cannot arm {entry:?}: {reason}; write point=actions, e.g. journal-acked=20*off->return")]
    BadEntry {
        /// The entry as given.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Arms the points named in `SAGAFLOW_FAILPOINTS`, if set; returns the armed entries.
pub fn arm_from_env() -> Result<Vec<String>, Error> {
    match std::env::var(ENV) {
        Ok(spec) => arm(&spec),
        Err(_) => Ok(Vec::new()),
    }
}

/// Arms the points in `spec` (`point=actions;...`); returns the armed entries.
pub fn arm(spec: &str) -> Result<Vec<String>, Error> {
    let mut armed = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, actions)) = entry.split_once('=') else {
            return Err(Error::BadEntry {
                entry: entry.to_string(),
                reason: "no '='".into(),
            });
        };
        let name = name.trim();
        if !ALL.contains(&name) {
            return Err(Error::UnknownPoint {
                name: name.to_string(),
            });
        }
        fail::cfg(name, actions.trim()).map_err(|reason| Error::BadEntry {
            entry: entry.to_string(),
            reason,
        })?;
        armed.push(entry.to_string());
    }
    if !armed.is_empty() {
        ARMED.store(true, Ordering::SeqCst);
    }
    Ok(armed)
}

/// Passes the point `name`: crashes the process here if the point's action says `return`.
pub fn hit(name: &'static str) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    if returned(name) {
        crash(name);
    }
}

fn returned(name: &'static str) -> bool {
    fail::fail_point!(name, |_| true);
    false
}

/// Ends the process as `kill -9` does, so that nothing is flushed or cleaned up.
fn crash(name: &str) -> ! {
    eprintln!("failpoint {name}: crashing the process (kill -9)");
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // Without a `kill` command: abort also skips destructors and buffered writes.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arming_checks_names_and_actions() {
        assert!(matches!(
            arm("nope=return"),
            Err(Error::UnknownPoint { name }) if name == "nope"
        ));
        assert!(matches!(arm("journal-acked"), Err(Error::BadEntry { .. })));
        assert!(matches!(
            arm("journal-acked=explode"),
            Err(Error::BadEntry { .. })
        ));
        let message = arm("nope=return").unwrap_err().to_string();
        assert!(message.contains("journal-acked"), "{message}");
    }

    #[test]
    fn an_armed_point_passes_until_its_count_runs_out() {
        // `print` instead of `return`: a crash would end the test process.
        let armed = arm(" changelog-flush = 2*off->print ; ").unwrap();
        assert_eq!(armed, ["changelog-flush = 2*off->print"]);
        for _ in 0..3 {
            assert!(!returned(CHANGELOG_FLUSH));
        }
        let _ = arm("changelog-flush=1*off->return").unwrap();
        assert!(!returned(CHANGELOG_FLUSH));
        assert!(returned(CHANGELOG_FLUSH));
        fail::remove(CHANGELOG_FLUSH);
        assert!(!returned(CHANGELOG_FLUSH));
    }
}
