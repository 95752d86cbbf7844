//! Messages on the management listener. Raft RPCs and proposals travel as postcard; status and
//! digests as JSON for people and scripts.

use serde::{Deserialize, Serialize};
use statemachine::{Actor, Command, RequestId};

use raft_storage::ApplyResponse;

pub const POSTCARD: &str = "application/x-postcard";

/// A command for the cluster. `actor` is honoured only when a KMA forwards the request on behalf
/// of a client it authenticated; otherwise the actor is the client's certificate. No `Debug`:
/// it may carry a passphrase.
#[derive(Clone, Serialize, Deserialize)]
pub struct ProposeRequest {
    pub actor: Option<Actor>,
    pub origin_node_id: Option<u64>,
    pub request_id: Option<RequestId>,
    pub command: Command,
    /// For commands that set a passphrase (users, agents, KMAs): the KMA checks it against the
    /// cluster's minimum length and stores only a verifier made from it.
    pub passphrase: Option<String>,
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
    #[error(
        "the leader could not commit the command within {seconds} s: a majority of KMAs may be \
         unreachable; it may still be applied (retryable: a retry with the same request ID is \
         answered once)"
    )]
    NotCommitted { seconds: u64 },
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
    /// Holds no master key or is locked by an administrator: serves no key material.
    pub locked: bool,
    /// host:port of the service listener (agents), as other hosts reach it.
    pub service_address: String,
    /// Pool keys ready to be handed out, and generated ones not yet protected (SPEC O4, O5).
    #[serde(default)]
    pub key_pool_ready: usize,
    #[serde(default)]
    pub key_pool_generated: usize,
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

/// A successful join: the KMA certificate, and the CA key so this KMA can issue certificates
/// too (logins and enrollments must work on any KMA, even while the cluster is locked).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinGranted {
    pub server_final: security_core::challenge::ServerFinal,
    pub node_id: u64,
    pub cert_pem: String,
    pub ca_pem: String,
    pub ca_key_pem: String,
}

/// An error of the security endpoints, with the HTTP status it travels with.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct SecurityRefusal {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

pub use admin_api::api::{ApproveRequest, ChangeQuorumRequest, LoginGranted, ProofRequest};
