//! What the gateway needs from the KMA it runs in. Two implementations: the node's `Kma` (Raft,
//! RocksDB, the real master key) and an in-memory fake in this crate's tests.

use std::future::Future;

use security_core::MasterKey;
use statemachine::{ClusterId, Command, RequestId, State};
use wire::ApplyResponse;

/// A proposal that did not produce an applied entry.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// True when the same request may succeed later or on another KMA (no leader, no majority,
    /// leader unreachable): the agent retries with the same request ID (SPEC A6).
    pub retryable: bool,
    pub message: String,
}

/// One KMA as agents see it in discovery (SPEC C3).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KmaEndpoint {
    pub name: String,
    pub site: String,
    /// host:port of its service listener.
    pub service_address: String,
    /// Member of the cluster and unlocked, as far as this KMA knows.
    pub healthy: bool,
}

pub trait Backend: Send + Sync + 'static {
    /// Runs `read` on the local state once this KMA has applied `min_index` (read-your-writes;
    /// 0 reads whatever is applied now).
    fn read<R: Send>(
        &self,
        min_index: u64,
        read: impl FnOnce(&State) -> R + Send,
    ) -> impl Future<Output = Result<R, BackendError>> + Send;

    /// Runs `read` on the local state once this KMA has confirmed with a quorum that it holds
    /// everything committed so far: an answer as current as a write (a KMIP Get or Locate that
    /// found nothing confirms so before it answers "not found").
    fn read_linearizable<R: Send>(
        &self,
        read: impl FnOnce(&State) -> R + Send,
    ) -> impl Future<Output = Result<R, BackendError>> + Send;

    /// Proposes `command` on behalf of `agent` (or of the KMA itself when `agent` is `None`) and
    /// waits until it is committed and applied here.
    fn propose(
        &self,
        agent: Option<&str>,
        request_id: Option<RequestId>,
        command: Command,
    ) -> impl Future<Output = Result<ApplyResponse, BackendError>> + Send;

    /// The master key while this KMA is unlocked; `None` while locked (SPEC C6).
    fn master_key(&self) -> Option<MasterKey>;

    fn cluster_id(&self) -> Option<ClusterId>;

    /// Signs an enrolled agent's certificate request (long-lived; the private key stays on the
    /// device). Returns the certificate and the CA certificate, both PEM.
    fn sign_agent_certificate(
        &self,
        agent: &str,
        csr_pem: &str,
    ) -> Result<(String, String), BackendError>;

    /// The KMAs of the cluster with their service addresses (SPEC C3).
    fn discovery(&self) -> impl Future<Output = Vec<KmaEndpoint>> + Send;

    /// Server secret for decoy challenges to unknown agents (see `security_core::challenge`).
    fn decoy_secret(&self) -> [u8; 32];
}
