//! Group commit on the leader: the proposals that arrive while earlier log entries are being
//! appended and replicated go into the next entry together, as one `statemachine::Batch`.
//!
//! The commit path is bound by fsync and by one replication round trip per entry (SPEC "Known
//! pitfalls"); batching is how one sync carries tens of commands. A lone proposal is not delayed:
//! the batcher takes whatever is queued the moment an entry slot is free, so at low load every
//! entry holds one command, and only under load do entries grow (up to
//! `statemachine::limits::ENVELOPES_PER_ENTRY_MAX`).
//!
//! Each command is still applied and answered on its own (its result, its audit events, its
//! request ID); the commands of one entry share the entry's log index and the leader's stamp.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_storage::Stage;
use statemachine::limits::ENVELOPES_PER_ENTRY_MAX;
use statemachine::{Batch, Envelope};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::write::{Proposal, ProposeError, ProposeResponse, Proposer, WriteFailure};

/// Entries of batched proposals being appended and replicated at once. More would make entries
/// smaller under load; fewer would make a lone proposal wait for the one before it.
pub const ENTRIES_IN_FLIGHT_MAX: usize = 2;

/// Proposals waiting for an entry: a bound, so that a leader that cannot commit (no majority)
/// pushes back instead of queueing without end.
pub const QUEUED_PROPOSALS_MAX: usize = 16 * 1024;

/// How long a proposal may wait for its entry to commit before the proposer is told to retry.
/// A leader cut off from its majority would otherwise hold it until the partition heals.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(8);

/// A proposal waiting for its entry, with the way back to its proposer.
pub(crate) struct Queued {
    pub proposal: Proposal,
    pub reply: oneshot::Sender<ProposeResponse>,
    /// When it was queued: the wait for its entry is a stage of the write (`Stage::Queue`).
    pub queued_at: Instant,
}

pub(super) fn queue() -> (mpsc::Sender<Queued>, mpsc::Receiver<Queued>) {
    mpsc::channel(QUEUED_PROPOSALS_MAX)
}

/// Runs until every sender is gone (the KMA shuts down): takes the queued proposals whenever an
/// entry slot is free and writes them as one entry.
pub(super) async fn run(proposer: Proposer, mut queue: mpsc::Receiver<Queued>) {
    let slots = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT_MAX));
    while let Some(first) = queue.recv().await {
        // Waiting for a slot is what lets the queue fill while the earlier entries commit.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut taken = Vec::with_capacity(16);
        taken.push(first);
        while taken.len() < ENVELOPES_PER_ENTRY_MAX {
            match queue.try_recv() {
                Ok(next) => taken.push(next),
                Err(_) => break,
            }
        }
        let proposer = proposer.clone();
        tokio::spawn(async move {
            write(&proposer, taken).await;
            drop(slot);
        });
    }
}

/// Writes `taken` as one entry and answers each proposer with its own result.
async fn write(proposer: &Proposer, taken: Vec<Queued>) {
    let stages = &proposer.inner.stages;
    for queued in &taken {
        stages.record(Stage::Queue, queued.queued_at.elapsed());
    }
    let time_ms = proposer.inner.stamp.next();
    let envelopes = taken
        .iter()
        .map(|queued| Envelope {
            time_ms,
            origin_node_id: queued.proposal.origin_node_id,
            actor: queued.proposal.actor.clone(),
            request_id: queued.proposal.request_id,
            command: queued.proposal.command.clone(),
        })
        .collect();
    let started = Instant::now();
    let written =
        tokio::time::timeout(COMMIT_TIMEOUT, proposer.inner.log.write(Batch { envelopes })).await;
    // Only writes that committed: one timeout would move the mean by seconds.
    if matches!(written, Ok(Ok(_))) {
        stages.record(Stage::RaftWrite, started.elapsed());
    }
    match written {
        Ok(Ok(response)) => {
            let index = response.index;
            let results = response.results;
            if results.len() != taken.len() {
                // apply answers once per envelope; anything else is a bug in this KMA.
                let detail = format!(
                    "entry {index} answered {} results for {} commands",
                    results.len(),
                    taken.len()
                );
                answer_all(taken, &ProposeError::Internal(detail));
                return;
            }
            for (queued, result) in taken.into_iter().zip(results) {
                // A proposer that gave up (timed out) has dropped its receiver: nothing to do.
                let _ = queued.reply.send(Ok(raft_storage::ApplyResponse { index, result }));
            }
        }
        Err(_elapsed) => {
            let seconds = COMMIT_TIMEOUT.as_secs();
            answer_all(taken, &ProposeError::NotCommitted { seconds });
        }
        Ok(Err(WriteFailure::Refused(why))) => answer_all(taken, &ProposeError::Raft(why)),
        // Leadership moved since the proposers checked: each goes to the new leader alone.
        Ok(Err(WriteFailure::ForwardTo(leader))) => {
            match leader.filter(|leader| *leader != proposer.node_id()) {
                Some(leader) => {
                    for queued in taken {
                        let proposer = proposer.clone();
                        tokio::spawn(async move {
                            let response = proposer.forward(leader, queued.proposal).await;
                            let _ = queued.reply.send(response);
                        });
                    }
                }
                None => answer_all(taken, &ProposeError::NoLeader),
            }
        }
    }
}

fn answer_all(taken: Vec<Queued>, error: &ProposeError) {
    for queued in taken {
        let _ = queued.reply.send(Err(error.clone()));
    }
}
