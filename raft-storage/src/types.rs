//! The openraft type configuration of the KMA cluster and the response of one applied entry.

use serde::{Deserialize, Serialize};
use statemachine::{Reject, Reply};

openraft::declare_raft_types!(
    /// openraft types of a KMA cluster: each log entry carries one [`statemachine::Envelope`];
    /// snapshots are files, so a 10-million-key state is never held twice in memory.
    pub KmaRaft:
        D = statemachine::Envelope,
        R = ApplyResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<KmaRaft>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What applying one log entry answered. Blank and membership entries answer `Ok(Reply::Done)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// Log index of the entry: a client passes it to any KMA to read its own writes.
    pub index: u64,
    pub result: Result<Reply, Reject>,
}
