//! The write path of a KMA: every command on its way into the Raft log.
//!
//! Owns [`Proposal`] (a command with who asked and through which KMA), [`ProposeError`] and its
//! [`ProposeError::is_retryable`], the leader's time stamp ([`Stamp`]), group commit
//! ([`batching`]), forwarding to the leader ([`forward`]), the intake of commands from users and
//! from other KMAs ([`intake`]), membership changes ([`membership`]) and the cluster version
//! gate ([`gate`]), all behind the cloneable [`Proposer`] handle.
//!
//! It may use `transport/` (links to the leader, the wire types of a forwarded proposal) and
//! must never touch `listen/`: listeners call down into it, never the other way (a CI check,
//! `scripts/check-layers.sh`, says so). The Raft log and the leader's link are reached through
//! two traits, [`RaftLog`] and [`LeaderLink`], each with one production implementation: an
//! exception to STYLE 15, taken so that batching, forwarding and intake have unit tests with
//! fakes of the layer below instead of needing a whole KMA.

pub mod batching;
pub mod forward;
pub mod gate;
pub mod intake;
pub mod membership;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raft_storage::{EntryResponse, Stage, StateHandle, WriteStages};
use statemachine::{Actor, Batch, Command, RequestId};
use tokio::sync::{mpsc, oneshot};

use crate::transport::wall_clock_ms;
pub use crate::transport::wire::{ProposeError, ProposeRequest, ProposeResponse};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A command on its way into the log, with who asked for it and through which KMA.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub actor: Actor,
    pub origin_node_id: u64,
    pub request_id: Option<RequestId>,
    pub command: Command,
}

/// Why the Raft log did not take a batch.
#[derive(Clone, Debug)]
pub enum WriteFailure {
    /// This KMA no longer leads: the batch goes to this leader, if one is known.
    ForwardTo(Option<u64>),
    /// openraft refused the write for another reason (shutting down, a fatal error).
    Refused(String),
}

/// The Raft log as the write path sees it: who leads, where a node is, and writing one entry
/// on the leader. Production: `openraft::Raft<KmaRaft>` (below); tests: an in-memory fake.
pub trait RaftLog: Send + Sync + 'static {
    fn leader(&self) -> Option<u64>;
    fn address_of(&self, node_id: u64) -> Option<String>;
    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<EntryResponse, WriteFailure>>;
}

impl RaftLog for openraft::Raft<raft_storage::KmaRaft> {
    fn leader(&self) -> Option<u64> {
        crate::transport::members::leader(self)
    }

    fn address_of(&self, node_id: u64) -> Option<String> {
        crate::transport::members::address_of(self, node_id)
    }

    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<EntryResponse, WriteFailure>> {
        use openraft::error::{ClientWriteError, RaftError};
        Box::pin(async move {
            match self.client_write(batch).await {
                Ok(response) => Ok(response.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    Err(WriteFailure::ForwardTo(forward.leader_id))
                }
                Err(other) => Err(WriteFailure::Refused(other.to_string())),
            }
        })
    }
}

/// The link to the leader a follower forwards on. Production: [`forward::LinksThenHttp`].
pub trait LeaderLink: Send + Sync + 'static {
    fn propose(
        &self,
        address: &str,
        request: ProposeRequest,
    ) -> BoxFuture<'_, Result<ProposeResponse, forward::Unreachable>>;
}

/// The leader's stamp: its wall clock, never going backwards (SPEC "Determinism").
#[derive(Debug, Default)]
pub struct Stamp {
    last_ms: AtomicU64,
}

impl Stamp {
    pub fn next(&self) -> u64 {
        self.stamp_at(wall_clock_ms())
    }

    fn stamp_at(&self, now_ms: u64) -> u64 {
        self.last_ms.fetch_max(now_ms, Ordering::SeqCst).max(now_ms)
    }
}

/// The write path's handle: cheap to clone, shared by every listener and duty of a KMA.
#[derive(Clone)]
pub struct Proposer {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    log: Arc<dyn RaftLog>,
    leader_link: Arc<dyn LeaderLink>,
    state: Option<StateHandle>,
    queue: mpsc::Sender<batching::Queued>,
    stamp: Stamp,
    /// Where this KMA's writes spend their time (`/metrics`, issue 21 point 2).
    stages: WriteStages,
}

impl Proposer {
    /// A proposer for this KMA, and the batcher task to spawn with it. `state` feeds the version
    /// gate (`None` in unit tests that do not exercise it); `stages` times the write path.
    pub fn new(
        node_id: u64,
        log: Arc<dyn RaftLog>,
        leader_link: Arc<dyn LeaderLink>,
        state: Option<StateHandle>,
        stages: WriteStages,
    ) -> (Proposer, impl Future<Output = ()> + Send + 'static) {
        let (queue, queued) = batching::queue();
        let stamp = Stamp::default();
        let inner = Arc::new(Inner { node_id, log, leader_link, state, queue, stamp, stages });
        let proposer = Proposer { inner };
        let batcher = batching::run(proposer.clone(), queued);
        (proposer, batcher)
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// A command the KMA software proposes itself (pulse, quickstart, pool refills).
    pub fn system(&self, command: Command) -> Proposal {
        Proposal { actor: Actor::System, origin_node_id: self.node_id(), request_id: None, command }
    }

    /// Proposes a command: on the leader directly, elsewhere forwarded to the leader. Refused
    /// before anything is sent when some voter could not decode it (the version gate).
    pub async fn propose(&self, proposal: Proposal) -> ProposeResponse {
        let started = std::time::Instant::now();
        if let Some(state) = &self.inner.state {
            gate::check(&*state.read().await, &proposal.command)?;
        }
        let response = match self.inner.log.leader() {
            Some(leader) if leader == self.node_id() => self.propose_here(proposal).await,
            Some(leader) => self.forward(leader, proposal).await,
            None => Err(ProposeError::NoLeader),
        };
        // Only proposals that were applied: a refusal before any work would pull the mean down.
        if response.is_ok() {
            self.inner.stages.record(Stage::Propose, started.elapsed());
        }
        response
    }

    /// Queues the proposal for the next log entry this leader writes (see `batching`).
    async fn propose_here(&self, proposal: Proposal) -> ProposeResponse {
        let (reply, answer) = oneshot::channel();
        let queued = batching::Queued { proposal, reply, queued_at: std::time::Instant::now() };
        if self.inner.queue.send(queued).await.is_err() {
            return Err(ProposeError::ShuttingDown);
        }
        answer.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}
