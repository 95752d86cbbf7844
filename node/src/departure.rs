//! A KMA the cluster deleted takes itself out (SPEC C5, S3; issue #16 point 3).
//!
//! Deleting a KMA is a replicated, audited command (`DeleteKma`); the leader then removes it
//! from the Raft membership (`leader.rs`), and every KMA refuses its links
//! (`transport::link`). The deleted KMA learns it is out from the state it applies or from a
//! peer's refusal, whichever comes first. It then drops its master key from memory, erases the
//! sealed copy, writes [`DEPARTED_FILE`] into its data dir and stops. A KMA whose data dir
//! holds that file refuses to start: the machine comes back only through a new `kma join` on a
//! wiped data dir, which the quorum must approve again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::transport::link::Departure;
use crate::view::Local;

/// The file a deleted KMA leaves in its data dir; its presence keeps `kma run` from starting.
pub const DEPARTED_FILE: &str = "departed.toml";

/// What [`DEPARTED_FILE`] says.
#[derive(Debug, Serialize, Deserialize)]
pub struct Departed {
    pub node_id: u64,
    /// Wall-clock ms when this KMA took itself out.
    pub at_ms: u64,
    pub reason: String,
}

impl Departed {
    /// The record left in `data_dir`, if this KMA was deleted.
    pub fn load(data_dir: &Path) -> Option<Departed> {
        let text = std::fs::read_to_string(data_dir.join(DEPARTED_FILE)).ok()?;
        // A file that does not parse still says the KMA was deleted: refuse all the same.
        Some(toml::from_str(&text).unwrap_or(Departed {
            node_id: 0,
            at_ms: 0,
            reason: "the record of the deletion is unreadable".into(),
        }))
    }

    /// Why a KMA with this record refuses to start, and what the operator does instead.
    pub fn refusal(&self, data_dir: &Path) -> String {
        format!(
            "this KMA (node {}) was deleted from its cluster and took itself out ({}); it will \
             not start again from {}. To use this machine again: wipe the data dir, have a \
             Security Officer create a new KMA entry, and run `kma join` once the quorum \
             approved it",
            self.node_id,
            self.reason,
            data_dir.display()
        )
    }
}

/// How long a deleted KMA that learnt of its deletion from the state keeps acknowledging the
/// leader, so that the change that removes it can commit (in a cluster of two, the remaining
/// KMA cannot commit it alone).
const REMOVAL_WAIT: Duration = Duration::from_secs(30);

/// Watches for this KMA's deletion, every second and on every applied entry; once it is out,
/// takes it out and wakes `stop` (the process then ends: see `main.rs`).
pub async fn run_departure_watch(
    local: Local,
    departure: Departure,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut applied = local.state.subscribe_applied();
    let from_state = loop {
        tokio::select! {
            _ = applied.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if local.state.read().await.kma_deleted(local.node_id()) {
            depart(&local, "the applied state records its deletion");
            break true;
        }
        if let Some(reason) = departure.reason() {
            depart(&local, &reason);
            break false;
        }
    };
    if from_state {
        // The key is gone and the record written: what remains is to let the leader commit
        // the removal, answering its AppendEntries (this KMA's own calls are refused).
        let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
        while local.is_member(local.node_id()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop.notify_one();
}

/// Drops the master key, erases its sealed copy and leaves the record that keeps this KMA from
/// starting again. Each step is tried even when an earlier one failed: the key leaving memory
/// matters most, and it cannot fail.
fn depart(local: &Local, reason: &str) {
    local.vault.forget();
    if let Err(error) = local.vault.remove_sealed() {
        tracing::error!(%error, "deleted KMA: the sealed master key could not be erased");
    }
    let record = Departed {
        node_id: local.node_id(),
        at_ms: crate::transport::wall_clock_ms(),
        reason: reason.to_string(),
    };
    let path = local.layout.root.join(DEPARTED_FILE);
    let written = toml::to_string_pretty(&record)
        .map_err(std::io::Error::other)
        .and_then(|text| crate::vault::write_private(&path, text.as_bytes()));
    if let Err(error) = written {
        tracing::error!(%error, path = %path.display(), "deleted KMA: its record not written");
    }
    tracing::error!(
        node_id = local.node_id(),
        reason,
        "this KMA was deleted from the cluster: master key dropped, stopping; it will not start \
         again from this data dir"
    );
}
