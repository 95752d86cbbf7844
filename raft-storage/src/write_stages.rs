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
    /// A proposal sent to the leader until its answer came back: on a follower, or on a leader
    /// that lost its leadership while the proposal waited.
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
    /// On a follower: an AppendEntries with entries received, until its answer was ready. Both
    /// kinds count: those sent ahead (which write and sync) and openraft's own for the same
    /// entries (which find them written and answer without a second sync).
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

    /// What the stage times, in a few words, for reports.
    pub fn what(self) -> &'static str {
        match self {
            Stage::Propose => "the write path on the KMA asked: intake to answer (with forward)",
            Stage::Forward => "sent to the leader on a Raft link until its answer",
            Stage::Queue => "the leader: waiting for the entry that carries it",
            Stage::RaftWrite => "the leader: entry handed to Raft until committed and applied",
            Stage::LogAppend => "entries written to the log until the WAL sync that covers them",
            Stage::WalSync => "one fsync of the WAL",
            Stage::SendAhead => {
                "the leader: entries sent to a voter during its sync, until answered"
            }
            Stage::Replicate => "the leader: openraft's AppendEntries with entries, until answered",
            Stage::FollowerAppend => "a follower: an AppendEntries with entries, until its answer",
            Stage::Apply => "committed entries applied to the state, audit rows written",
        }
    }

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

    /// The stage of a `stage` label, if it names one.
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.name() == name)
    }
}

#[derive(Debug, Default)]
struct Totals {
    nanos: AtomicU64,
    count: AtomicU64,
}

/// How often a stage ran and the seconds it took in all.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTotals {
    pub count: u64,
    pub seconds: f64,
}

/// The time summed per [`Stage`] on this KMA: a cheap handle, shared by everything that times a
/// stage and by `/metrics`. Two relaxed atomic adds per record, no lock: a reader may see one
/// record's count without its time, or the reverse, which no mean over a run notices. Only
/// stages that succeeded are recorded (a timeout would move a mean by seconds).
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
    pub fn totals(&self, stage: Stage) -> StageTotals {
        let totals = &self.0[stage as usize];
        let nanos = totals.nanos.load(Ordering::Relaxed);
        StageTotals { count: totals.count.load(Ordering::Relaxed), seconds: nanos as f64 / 1e9 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u3_stages_sum_apart_and_names_round_trip() {
        let stages = WriteStages::default();
        stages.record(Stage::WalSync, Duration::from_micros(300));
        stages.record(Stage::WalSync, Duration::from_micros(100));
        stages.record(Stage::Apply, Duration::from_millis(2));
        let wal = stages.totals(Stage::WalSync);
        assert_eq!(wal.count, 2);
        assert!((wal.seconds - 0.0004).abs() < 1e-12, "{wal:?}");
        assert_eq!(stages.totals(Stage::Apply).count, 1);
        assert_eq!(stages.totals(Stage::Forward), StageTotals::default());
        for stage in Stage::ALL {
            assert_eq!(Stage::from_name(stage.name()), Some(stage));
        }
        assert_eq!(Stage::from_name("commit"), None);
    }
}
