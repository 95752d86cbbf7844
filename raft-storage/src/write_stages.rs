//! Where the time of a write goes, stage by stage (issue 21 point 2): each stage sums the time
//! it took and counts how often it ran, since the process started. `/metrics` reports them as
//! `kms_write_stage_seconds_total` and `kms_write_stage_total`; a client that reads them before
//! and after a run divides the differences (the cluster bench prints that breakdown).
//!
//! The stages are those of one KMA: which of them a write passes through depends on whether
//! the KMA asked leads (a follower forwards, the leader batches and writes) and on its role in
//! replication (the leader sends, a follower appends). This crate times the two it owns (a log
//! append until its WAL sync, the apply); the node times the rest with the same handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One stage of a write on one KMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A command the KMA was asked for, from its intake to its answer (`Proposer::propose`).
    Propose,
    /// On a follower: a proposal sent to the leader until its answer came back.
    Forward,
    /// On the leader: a proposal queued until the entry that carries it is handed to Raft.
    Queue,
    /// On the leader: one entry handed to Raft until it is committed and applied here.
    RaftWrite,
    /// Entries written to this KMA's log until the WAL sync that covers them ends.
    LogAppend,
    /// One WAL sync (fsync) of this KMA's log; one covers every append queued before it.
    WalSync,
    /// On the leader: entries sent to a voter ahead of openraft's replication, until it answered.
    SendAhead,
    /// On the leader: an AppendEntries with entries sent by openraft, until the voter answered.
    Replicate,
    /// On a follower: an AppendEntries with entries received, until its answer was ready.
    FollowerAppend,
    /// Committed entries applied to the state (and the audit rows written).
    Apply,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Propose,
        Stage::Forward,
        Stage::Queue,
        Stage::RaftWrite,
        Stage::LogAppend,
        Stage::WalSync,
        Stage::SendAhead,
        Stage::Replicate,
        Stage::FollowerAppend,
        Stage::Apply,
    ];

    /// The `stage` label on `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Propose => "propose",
            Stage::Forward => "forward",
            Stage::Queue => "queue",
            Stage::RaftWrite => "raft_write",
            Stage::LogAppend => "log_append",
            Stage::WalSync => "wal_sync",
            Stage::SendAhead => "send_ahead",
            Stage::Replicate => "replicate",
            Stage::FollowerAppend => "follower_append",
            Stage::Apply => "apply",
        }
    }

    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.name() == name)
    }
}

#[derive(Debug, Default)]
struct Totals {
    nanos: AtomicU64,
    count: AtomicU64,
}

/// The time summed per [`Stage`] on this KMA: a cheap handle, shared by everything that times a
/// stage and by `/metrics`. Two relaxed atomic adds per record, no lock.
#[derive(Clone, Debug, Default)]
pub struct WriteStages(Arc<[Totals; Stage::ALL.len()]>);

impl WriteStages {
    pub fn record(&self, stage: Stage, took: Duration) {
        let totals = &self.0[stage as usize];
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        totals.nanos.fetch_add(nanos, Ordering::Relaxed);
        totals.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How often `stage` ran, and the seconds it took in all, since the process started.
    pub fn totals(&self, stage: Stage) -> (u64, f64) {
        let totals = &self.0[stage as usize];
        let nanos = totals.nanos.load(Ordering::Relaxed);
        (totals.count.load(Ordering::Relaxed), nanos as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_sum_apart_and_names_round_trip() {
        let stages = WriteStages::default();
        stages.record(Stage::WalSync, Duration::from_micros(300));
        stages.record(Stage::WalSync, Duration::from_micros(100));
        stages.record(Stage::Apply, Duration::from_millis(2));
        let (count, seconds) = stages.totals(Stage::WalSync);
        assert_eq!(count, 2);
        assert!((seconds - 0.0004).abs() < 1e-12, "{seconds}");
        assert_eq!(stages.totals(Stage::Apply).0, 1);
        assert_eq!(stages.totals(Stage::Forward), (0, 0.0));
        for stage in Stage::ALL {
            assert_eq!(Stage::from_name(stage.name()), Some(stage));
        }
        assert_eq!(Stage::from_name("commit"), None);
    }
}
