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
use security_core::transfer::{TransferDone, TransferWork};
use statemachine::audit::{AuditChain, ChainedAuditEvent};
use statemachine::key::{KeyCheckValue, WrappedKey};
use statemachine::{Command, KeyId, State};
use tokio::sync::RwLockReadGuard;
use wire::{ApplyResponse, ErrorBody};
use zeroize::Zeroizing;

use crate::api::ClusterStatus;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Keys wrapped by [`AdminNode::wrap_keys`], each with its check value, in order.
pub type WrapResult = Result<Vec<(WrappedKey, KeyCheckValue)>, ErrorBody>;

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

    /// This KMA's name, as the state records it.
    fn kma_name(&self) -> String;

    /// Wraps clear keys a user brought (a KMS 1.x file, SPEC M1) under the master key, each
    /// with its check value, in order. Refused (`kma-locked`) while this KMA is locked. The
    /// master key never leaves the node: this is all the API may ask of it.
    fn wrap_keys<'a>(&'a self, keys: &'a [(KeyId, &'a [u8; 32])]) -> BoxFuture<'a, WrapResult>;

    /// Proposes a command this KMA issues itself (`Actor::System`) for work it did on a user's
    /// behalf (issue 18: a 1.x import), and waits until it is applied here. The caller checked
    /// first that the user may ask for that work (`Access::AskKma`); the command names the
    /// user for the audit log.
    fn propose_system(&self, command: Command) -> BoxFuture<'_, Result<ApplyResponse, ErrorBody>>;

    /// Writes or opens a partner transfer file (SPEC T3, T4) with this KMA's master key and
    /// the cluster's transfer key pair ([`crate::transfer::perform`]). Refused (`kma-locked`)
    /// while this KMA is locked.
    fn transfer(&self, work: TransferWork) -> BoxFuture<'_, Result<TransferDone, ErrorBody>>;

    /// Signs an agent's certificate request with the cluster CA (issue 19: a KMIP client,
    /// which cannot run the enrollment challenge, is enrolled by an Operator from its request).
    /// The certificate names `agent:<agent>` whatever the request asked. Returns the
    /// certificate and the CA certificate, PEM. Refused (`kma-locked`) while this KMA cannot
    /// sign.
    fn sign_agent_certificate(
        &self,
        agent: &str,
        csr_pem: &str,
    ) -> Result<(String, String), ErrorBody>;
}

/// The API's handle on its KMA.
#[derive(Clone)]
pub struct Admin {
    pub node: Arc<dyn AdminNode>,
    /// The 1.x imports this KMA runs for its users, with their progress.
    pub imports_1x: Arc<crate::import_1x::Imports>,
}

impl Admin {
    pub fn new(node: Arc<dyn AdminNode>) -> Admin {
        Admin { node, imports_1x: Default::default() }
    }
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
