//! The openraft type configuration of the KMA cluster and the responses of applied entries.
//! [`ApplyResponse`], what one command answered, crosses to clients and lives in the `wire`
//! crate (clients do not link this one); it is re-exported here for the node.

use serde::{Deserialize, Serialize};
use statemachine::{Reject, Reply};
pub use wire::ApplyResponse;

openraft::declare_raft_types!(
    /// openraft types of a KMA cluster: each log entry carries a [`statemachine::Batch`] of
    /// envelopes; snapshots are files, so a 10-million-key state is never held twice in memory.
    pub KmaRaft:
        D = statemachine::Batch,
        R = EntryResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<KmaRaft>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What applying one log entry answered: one result per envelope of its batch, in order.
/// Blank and membership entries answer no result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResponse {
    pub index: u64,
    pub results: Vec<Result<Reply, Reject>>,
}
