//! What the management API needs from the KMA it runs on. The state and the audit log are read
//! through `raft_storage::StateHandle` directly; waiting for an index, proposing and the view of
//! the other KMAs are the node's, behind [`AdminNode`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use raft_storage::{ApplyResponse, StateHandle};
use statemachine::Command;
use zeroize::Zeroizing;

use crate::api::{ApiError, ClusterStatus};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The node's half of the API. Errors come back as [`ApiError`] with the operator's next step.
pub trait AdminNode: Send + Sync + 'static {
    /// Returns once this KMA has applied `min_index`; with `linearizable`, once it has also
    /// confirmed with a quorum that its state is current.
    fn barrier(&self, min_index: u64, linearizable: bool) -> BoxFuture<'_, Result<(), ApiError>>;

    /// Proposes `command` on behalf of `user` (forwarded to the leader when this KMA follows)
    /// and waits until it is committed and applied here. A passphrase for commands that set
    /// one becomes a verifier on the KMA, checked against the cluster's minimum length.
    fn propose(
        &self,
        user: String,
        command: Command,
        passphrase: Option<Zeroizing<String>>,
    ) -> BoxFuture<'_, Result<ApplyResponse, ApiError>>;

    /// The KMAs as this one sees them: role, reachability, lag.
    fn cluster_status(&self) -> BoxFuture<'_, ClusterStatus>;

    /// This KMA's wall clock, for states that time derives (Process-only, Deactivated).
    fn now_ms(&self) -> u64;
}

/// The API's handle on its KMA.
#[derive(Clone)]
pub struct Admin {
    pub state: StateHandle,
    pub node: Arc<dyn AdminNode>,
}

/// Who sent a request, from the verified client certificate: the user ID, or `None` for KMAs,
/// agents and clients without a certificate. The node's TLS server inserts it.
#[derive(Clone, Debug, Default)]
pub struct Caller(pub Option<String>);
