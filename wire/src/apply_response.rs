//! What one applied command answered, as its proposer (a gateway, the management API, a KMA
//! that forwarded it) receives it.

use serde::{Deserialize, Serialize};
use statemachine::{Reject, Reply};

/// What one command answered, as its proposer receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// Log index of the entry that carried it (shared by the commands of one batch): a client
    /// passes it to any KMA to read its own writes.
    pub index: u64,
    pub result: Result<Reply, Reject>,
}
