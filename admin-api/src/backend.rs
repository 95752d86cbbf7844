//! What the management API needs from the KMA it runs on, behind [`AdminNode`]: reading the
//! state and the audit log, waiting for an index, proposing, and the view of the other KMAs.
//! A trait rather than the node's storage handle, so that `kmsctl` (this crate's binary) links
//! no storage engine: the node implements it over its RocksDB state, the tests over an
//! in-memory `State`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use statemachine::audit::{AuditChain, ChainedAuditEvent};
use statemachine::{Command, State};
use tokio::sync::RwLockReadGuard;
use wire::{ApplyResponse, ErrorBody};
use zeroize::Zeroizing;

use crate::api::ClusterStatus;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The node's half of the API. Errors come back as [`ErrorBody`] with the operator's next step;
/// its code decides the HTTP status.
pub trait AdminNode: Send + Sync + 'static {
    /// Returns once this KMA has applied `min_index`; with `linearizable`, once it has also
    /// confirmed with a quorum that its state is current.
    fn barrier(&self, min_index: u64, linearizable: bool) -> BoxFuture<'_, Result<(), ErrorBody>>;

    /// The state as applied on this KMA so far. Held briefly: applying waits while it is held.
    fn state(&self) -> BoxFuture<'_, RwLockReadGuard<'_, State>>;

    /// Up to `limit` audit events stored on this KMA from log index `from_index` on, in log
    /// order, each with its place in the audit chain. The node reads its storage off the async
    /// threads (a scan of many events blocks).
    fn audit_events(
        &self,
        from_index: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ChainedAuditEvent>, ErrorBody>>;

    /// Every chain position a run of local audit events starts from, in order; the first is
    /// where the local log starts (`AuditChain::GENESIS` when it starts at the cluster's
    /// beginning), each later one follows a snapshot install that skipped events.
    fn audit_anchors(&self) -> BoxFuture<'_, Result<Vec<AuditChain>, ErrorBody>>;

    /// Proposes `command` on behalf of `user` (forwarded to the leader when this KMA follows)
    /// and waits until it is committed and applied here. A passphrase for commands that set
    /// one becomes a verifier on the KMA, checked against the cluster's minimum length.
    fn propose(
        &self,
        user: String,
        command: Command,
        passphrase: Option<Zeroizing<String>>,
    ) -> BoxFuture<'_, Result<ApplyResponse, ErrorBody>>;

    /// The KMAs as this one sees them: role, reachability, lag.
    fn cluster_status(&self) -> BoxFuture<'_, ClusterStatus>;

    /// This KMA's wall clock, for states that time derives (Process-only, Deactivated).
    fn now_ms(&self) -> u64;
}

/// The API's handle on its KMA.
#[derive(Clone)]
pub struct Admin {
    pub node: Arc<dyn AdminNode>,
}

/// Who sent a request, from the verified client certificate: the user ID, or `None` for KMAs,
/// agents and clients without a certificate. The node's TLS server inserts it; a request
/// without one is anonymous (and refused as `unauthenticated` by every route).
#[derive(Clone, Debug, Default)]
pub struct Caller(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or_default())
    }
}
