//! Messages on the management listener. Raft RPCs and proposals travel as postcard; status and
//! digests as JSON for people and scripts.

use serde::{Deserialize, Serialize};
use statemachine::{Actor, Command, RequestId};

use raft_storage::ApplyResponse;

pub const POSTCARD: &str = "application/x-postcard";

/// A command for the cluster. `actor` is honoured only when a KMA forwards the request on behalf
/// of a client it authenticated; otherwise the actor is the client's certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProposeRequest {
    pub actor: Option<Actor>,
    pub origin_node_id: Option<u64>,
    pub request_id: Option<RequestId>,
    pub command: Command,
}

/// Why a proposal did not produce an applied entry.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader is known right now (retryable: the cluster may be electing one or have lost its majority)")]
    NoLeader,
    #[error("the leader (node {leader_id}) could not be reached: {detail} (retryable)")]
    LeaderUnreachable { leader_id: u64, detail: String },
    #[error("not authorised: {0}")]
    Unauthorised(String),
    #[error("raft refused the proposal: {0}")]
    Raft(String),
}

pub type ProposeResponse = Result<ApplyResponse, ProposeError>;

/// What `GET /v1/status` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub name: String,
    pub site: String,
    pub cluster_id: Option<String>,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: u64,
    /// Last log index covered by this KMA's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Last log index deleted from this KMA's log (behind a snapshot).
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// What `GET /v1/digest` answers: a SHA-256 of the applied state's snapshot encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    pub applied_index: u64,
    pub sha256: String,
}

/// A new KMA asks for its certificate with a join token (`POST /v1/join`, no client cert).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_secret: [u8; 32],
    pub name: String,
    pub site: String,
    pub management_advertise: String,
    pub csr_pem: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: u64,
    pub cert_pem: String,
    pub ca_pem: String,
}

/// Membership changes an administrator (or the KMA that admitted a joiner) asks the leader for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipRequest {
    AddLearner { node_id: u64, address: String },
    Promote { node_id: u64 },
    Remove { node_id: u64 },
}
