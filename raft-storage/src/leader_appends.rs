//! Entries the leader appends to its own log, handed to the node before they are durable here,
//! so that the followers can write them while the leader's own sync runs.
//!
//! openraft 0.9 waits for the leader's log flush before it starts replicating an entry, which
//! puts two fsyncs in series on every commit. Raft allows the leader to write its own log in
//! parallel with replication (Ongaro's thesis, §10.2.1): an entry is committed once a majority
//! has it on disk, whoever writes first. The node's `parallel_append` sends what this module
//! hands over as ordinary AppendEntries requests, which a follower checks like any other.
//!
//! What is handed over must be exactly the leader's log, or the request could make a follower
//! truncate entries it should keep. So an append is published only when this KMA is the
//! committed leader of the entries' term (its saved vote says so) and the entry before them is
//! known: the last entry this store wrote, as long as no truncation or restart has left that
//! unknown. When in doubt nothing is published; openraft's own replication still carries every
//! entry, so publishing is never needed for correctness.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use openraft::{LogId, RaftLogId, RaftTypeConfig, Vote};
use tokio::sync::mpsc;

/// Entries this KMA appended as the leader of `vote`'s term, with the log ID before them.
pub struct LeaderAppend<C: RaftTypeConfig> {
    /// The leader's committed vote (this KMA's), as an AppendEntries request carries it.
    pub vote: Vote<u64>,
    /// The leader's log ID just before `entries`; `None` when they start the log.
    pub prev_log_id: Option<LogId<u64>>,
    /// Consecutive entries, all of `vote`'s term. Never empty.
    pub entries: Vec<C::Entry>,
}

/// The store's side: what it knows of its own log, and where to publish.
pub(crate) struct AppendTap<C: RaftTypeConfig> {
    subscriber: OnceLock<Subscriber<C>>,
    log: Mutex<KnownLog>,
}

struct Subscriber<C: RaftTypeConfig> {
    node_id: u64,
    appends: mpsc::Sender<Arc<LeaderAppend<C>>>,
}

/// The saved vote and the last entry of the log, each `None` while unknown.
#[derive(Default)]
struct KnownLog {
    vote: Option<Vote<u64>>,
    last_log_id: Option<Option<LogId<u64>>>,
}

impl<C> AppendTap<C>
where
    C: RaftTypeConfig<NodeId = u64>,
    C::Entry: Clone,
{
    pub(crate) fn new() -> Self {
        AppendTap { subscriber: OnceLock::new(), log: Mutex::new(KnownLog::default()) }
    }

    /// Starts publishing the leader appends of `node_id` into a queue of `depth` appends; `None`
    /// when a subscriber already exists (there is one node per store).
    pub(crate) fn subscribe(
        &self,
        node_id: u64,
        depth: usize,
    ) -> Option<mpsc::Receiver<Arc<LeaderAppend<C>>>> {
        let (appends, receiver) = mpsc::channel(depth.max(1));
        self.subscriber.set(Subscriber { node_id, appends }).ok()?;
        Some(receiver)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, KnownLog> {
        // The guarded values are plain copies: a panic elsewhere cannot leave them half-written.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn vote_saved(&self, vote: Vote<u64>) {
        self.known().vote = Some(vote);
    }

    /// The log as openraft found it at start-up (exact, read from the column family).
    pub(crate) fn log_read(&self, last_log_id: Option<LogId<u64>>) {
        self.known().last_log_id = Some(last_log_id);
    }

    /// Entries from `index` on were deleted: the last entry is unknown until the next append.
    pub(crate) fn truncated(&self) {
        self.known().last_log_id = None;
    }

    /// Entries up to `log_id` were deleted; if that reached the last entry (a snapshot
    /// installed past the log), the last entry is unknown until the next append.
    pub(crate) fn purged(&self, log_id: LogId<u64>) {
        let mut known = self.known();
        let reached = match known.last_log_id {
            Some(Some(last)) => log_id.index >= last.index,
            Some(None) => true,
            None => false,
        };
        if reached {
            known.last_log_id = None;
        }
    }

    /// Records `entries` as written (the write returned) and publishes them when this KMA
    /// leads their term. Never blocks: a full queue drops the append.
    pub(crate) fn appended(&self, entries: &[C::Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return };
        let (first, last) = (*first.get_log_id(), *last.get_log_id());
        let (prev_log_id, vote) = {
            let mut known = self.known();
            let before = known.last_log_id.replace(Some(last));
            (before, known.vote)
        };
        let Some(subscriber) = self.subscriber.get() else { return };
        let Some(prev_log_id) = prev_log_id else { return };
        let Some(vote) = vote else { return };
        let consecutive = prev_log_id.map_or(0, |id| id.index + 1) == first.index;
        let leads = vote.is_committed()
            && vote.leader_id().voted_for() == Some(subscriber.node_id)
            && vote.leader_id().term == first.leader_id.term
            && first.leader_id.term == last.leader_id.term;
        if !(consecutive && leads) {
            return;
        }
        let Ok(permit) = subscriber.appends.try_reserve() else { return };
        permit.send(Arc::new(LeaderAppend { vote, prev_log_id, entries: entries.to_vec() }));
    }
}
