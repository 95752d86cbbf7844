//! Parallel appends: the leader sends every entry it appends to the other voters at once, while
//! its own disk sync runs, instead of after it (why this is safe, and when the store hands an
//! entry over: `raft_storage::leader_appends`).
//!
//! openraft's replication still sends every entry, and it alone tells the leader what a
//! follower holds. When its request reaches a follower that already wrote the entries sent
//! ahead, they match, nothing is written twice, and the answer needs no second sync: the commit
//! waits for the slower of the two syncs instead of their sum. A follower checks a request sent
//! ahead like any other (the leader's vote, the log ID before the entries); what it answers is
//! not needed here and is dropped.
//!
//! One task per voter sends one request at a time on a link of its own. Appends that arrive
//! while a request is out go together into the next one, up to [`ENTRIES_AHEAD_MAX`] entries;
//! a voter that is far behind or unreachable is left to openraft's replication.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use raft_storage::{KmaRaft, LeaderAppend, Stage, WriteStages};
use tokio::sync::mpsc;

use crate::transport::members;
use crate::transport::network::{PeerClient, PeerLinks};

/// Appends the log store holds for this task, and each voter's queue: past it, appends are
/// dropped (openraft's replication carries them).
pub const QUEUED_APPENDS_MAX: usize = 64;

/// Entries in one request sent ahead, as openraft's own (`max_payload_entries`).
pub const ENTRIES_AHEAD_MAX: usize = 512;

/// After a failed request, a voter's appends are dropped for this long: one that cannot be
/// reached is openraft's to retry, with its own back-off and its audit of the failure (C8).
const FAILURE_PAUSE: Duration = Duration::from_secs(1);

type Append = Arc<LeaderAppend<KmaRaft>>;

/// What became of the entries this KMA sent ahead, counted per voter since the process started
/// (`kms_raft_entries_ahead_total` on `/metrics`).
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// The voter wrote them (or already held them).
    Written,
    /// The voter refused them: it lacks the entry before them, or follows a newer leader.
    Refused,
    /// No answer: the voter is unreachable or the call timed out.
    Failed,
    /// Not sent: the voter's queue was full, or paused after a failure.
    Dropped,
}

impl Outcome {
    pub const ALL: [Outcome; 4] =
        [Outcome::Written, Outcome::Refused, Outcome::Failed, Outcome::Dropped];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Written => "written",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

/// Entries sent ahead, by [`Outcome`], since this KMA started: a cheap handle, read by
/// `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct EntriesAhead(Arc<[AtomicU64; 4]>);

impl EntriesAhead {
    fn count(&self, outcome: Outcome, entries: usize) {
        self.0[outcome as usize].fetch_add(entries as u64, Ordering::Relaxed);
    }

    /// Entries counted with this outcome so far.
    pub fn entries(&self, outcome: Outcome) -> u64 {
        self.0[outcome as usize].load(Ordering::Relaxed)
    }
}

/// What the sending-ahead task needs.
pub struct SendAhead {
    pub raft: openraft::Raft<KmaRaft>,
    pub node_id: u64,
    pub tls: Arc<rustls::ClientConfig>,
    pub links: PeerLinks,
    pub counts: EntriesAhead,
    /// Times each request sent ahead until its answer (`Stage::SendAhead`).
    pub stages: WriteStages,
    /// How long a voter may take to answer a request sent ahead: longer than any sync, short
    /// of an election (`election_timeout_ms_max`); the queue meanwhile joins what comes.
    pub answer_timeout: Duration,
}

/// Runs until the log store is dropped: hands each append to the task of every other voter of
/// the current membership, starting and stopping those tasks as the membership changes.
pub async fn run(ahead: SendAhead, mut appends: mpsc::Receiver<Append>) {
    let mut voters: BTreeMap<u64, Voter> = BTreeMap::new();
    while let Some(append) = appends.recv().await {
        let current = members::other_voters(&ahead.raft, ahead.node_id);
        // Dropping a queue ends its task once the request in flight is answered.
        voters.retain(|id, voter| current.get(id) == Some(&voter.address));
        for (id, address) in current {
            let voter = voters.entry(id).or_insert_with(|| Voter::start(&ahead, id, address));
            // Full: that voter is behind, and openraft's own replication catches it up.
            if voter.queue.try_send(append.clone()).is_err() {
                ahead.counts.count(Outcome::Dropped, append.entries.len());
            }
        }
    }
}

struct Voter {
    address: String,
    queue: mpsc::Sender<Append>,
}

impl Voter {
    fn start(ahead: &SendAhead, id: u64, address: String) -> Voter {
        let (queue, appends) = mpsc::channel(QUEUED_APPENDS_MAX);
        let client = PeerClient::new(ahead.tls.clone(), ahead.links.clone(), id, address.clone());
        let (counts, stages) = (ahead.counts.clone(), ahead.stages.clone());
        tokio::spawn(send_ahead(client, appends, ahead.answer_timeout, counts, stages));
        Voter { address, queue }
    }
}

/// Sends the queued appends to one voter, one request at a time.
async fn send_ahead(
    mut client: PeerClient,
    mut appends: mpsc::Receiver<Append>,
    timeout: Duration,
    counts: EntriesAhead,
    stages: WriteStages,
) {
    while let Some(first) = appends.recv().await {
        let mut request = request_for(&first);
        while let Ok(next) = appends.try_recv() {
            join(&mut request, &next, &counts);
        }
        let (count, last) = (request.entries.len(), request.entries.last().map(|e| e.log_id));
        let started = std::time::Instant::now();
        let answered = client.append_ahead(request, timeout).await;
        if answered.is_ok() {
            stages.record(Stage::SendAhead, started.elapsed());
        }
        match answered {
            Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)) => {
                counts.count(Outcome::Written, count);
            }
            Ok(AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_)) => {
                counts.count(Outcome::Refused, count);
            }
            Err(error) => {
                counts.count(Outcome::Failed, count);
                tracing::debug!(?last, %error, "entries sent ahead failed; openraft retries");
                tokio::time::sleep(FAILURE_PAUSE).await;
                while let Ok(skipped) = appends.try_recv() {
                    counts.count(Outcome::Dropped, skipped.entries.len());
                }
            }
        }
    }
}

/// The AppendEntries request that carries `append`. It says nothing of what is committed: a
/// follower learns that from openraft's own requests.
fn request_for(append: &LeaderAppend<KmaRaft>) -> AppendEntriesRequest<KmaRaft> {
    AppendEntriesRequest {
        vote: append.vote,
        prev_log_id: append.prev_log_id,
        leader_commit: None,
        entries: append.entries.clone(),
    }
}

/// Adds `next` to `request` when it follows on directly (same leader, consecutive) and the
/// request stays within [`ENTRIES_AHEAD_MAX`]; otherwise the request becomes `next` alone and
/// openraft's replication carries what is skipped.
fn join(
    request: &mut AppendEntriesRequest<KmaRaft>,
    next: &LeaderAppend<KmaRaft>,
    counts: &EntriesAhead,
) {
    let follows = next.vote == request.vote
        && next.prev_log_id == request.entries.last().map(|entry| entry.log_id);
    if follows && request.entries.len() + next.entries.len() <= ENTRIES_AHEAD_MAX {
        request.entries.extend(next.entries.iter().cloned());
    } else {
        counts.count(Outcome::Dropped, request.entries.len());
        *request = request_for(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};

    fn append(
        term: u64,
        prev: Option<u64>,
        indexes: std::ops::Range<u64>,
    ) -> LeaderAppend<KmaRaft> {
        let log_id = |index| LogId::new(CommittedLeaderId::new(term, 1), index);
        let entries = indexes
            .map(|index| openraft::Entry { log_id: log_id(index), payload: EntryPayload::Blank });
        LeaderAppend {
            vote: Vote::new_committed(term, 1),
            prev_log_id: prev.map(log_id),
            entries: entries.collect(),
        }
    }

    fn indexes(request: &AppendEntriesRequest<KmaRaft>) -> Vec<u64> {
        request.entries.iter().map(|entry| entry.log_id.index).collect()
    }

    /// Setup: a request for entries 1..3. Action: join 3..5, then 7..8 (a gap), then a
    /// consecutive append of a newer term, then one that would pass the bound. Expect: the
    /// first joins; after the gap, the newer term and the bound the request is the newest
    /// append alone, with its own previous log ID and vote; what was skipped counts as dropped.
    /// (SPEC C7)
    #[test]
    fn c7_appends_join_only_when_consecutive_and_within_the_bound() {
        let counts = EntriesAhead::default();
        let mut request = request_for(&append(2, Some(0), 1..3));
        assert_eq!(request.leader_commit, None, "a request sent ahead says nothing of commits");
        join(&mut request, &append(2, Some(2), 3..5), &counts);
        assert_eq!(indexes(&request), [1, 2, 3, 4]);
        assert_eq!(request.prev_log_id.map(|id| id.index), Some(0));

        let dropped = counts.entries(Outcome::Dropped);
        join(&mut request, &append(2, Some(6), 7..8), &counts);
        assert_eq!(indexes(&request), [7]);
        assert_eq!(request.prev_log_id.map(|id| id.index), Some(6));
        assert_eq!(counts.entries(Outcome::Dropped), dropped + 4);

        join(&mut request, &append(3, Some(7), 8..9), &counts);
        assert_eq!(indexes(&request), [8], "a newer leader's entries start a request of their own");
        assert_eq!(request.vote, Vote::new_committed(3, 1));

        let full = ENTRIES_AHEAD_MAX as u64;
        join(&mut request, &append(3, Some(8), 9..full + 8), &counts);
        assert_eq!(request.entries.len(), ENTRIES_AHEAD_MAX);
        join(&mut request, &append(3, Some(full + 7), full + 8..full + 9), &counts);
        assert_eq!(indexes(&request), [full + 8], "past the bound the newest goes alone");
    }
}
