//! What crosses a link between KMAs besides openraft's own messages: a proposal forwarded to
//! the leader, its answer, and the error kinds that answer can carry. These are wire formats
//! between KMAs of different versions: variants are only ever appended.

use serde::{Deserialize, Serialize};
use statemachine::{Actor, Command, RequestId};

use raft_storage::ApplyResponse;

/// The content type of postcard bodies on the management listener.
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
    // New variants go last: the order is the wire format between KMAs of different versions.
    #[error("this KMA is shutting down (retryable: send the request to another KMA)")]
    ShuttingDown,
    #[error("internal error in this KMA: {0} (a bug: please report it with this KMA's log)")]
    Internal(String),
    #[error(
        "{what} is available once every KMA decodes format {needed}; the oldest voter decodes \
         format {cluster} (retryable: upgrade every KMA, then try again)"
    )]
    NotAvailableYet { what: String, needed: u16, cluster: u16 },
}

impl ProposeError {
    /// True when the same request (same request ID) may succeed if sent again, here or to
    /// another KMA: the cluster was busy, electing, cut off or mid-upgrade, not refusing.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProposeError::NoLeader
            | ProposeError::LeaderUnreachable { .. }
            | ProposeError::NotCommitted { .. }
            | ProposeError::ShuttingDown
            | ProposeError::NotAvailableYet { .. } => true,
            ProposeError::Unauthorised(_) | ProposeError::Raft(_) | ProposeError::Internal(_) => {
                false
            }
        }
    }
}

pub type ProposeResponse = Result<ApplyResponse, ProposeError>;

/// Membership changes an administrator (or the KMA that admitted a joiner) asks the leader for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipRequest {
    AddLearner { node_id: u64, address: String },
    Promote { node_id: u64 },
    Remove { node_id: u64 },
}
