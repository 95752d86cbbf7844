//! openraft's network: Raft RPCs to other KMAs over HTTPS with mutual TLS, postcard bodies, on
//! long-lived pooled connections (a full TLS handshake costs far more than an RPC).

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use raft_storage::KmaRaft;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::POSTCARD;

/// Makes one client per peer; they share the connection pool.
#[derive(Clone)]
pub struct KmaNetwork {
    pub http: reqwest::Client,
}

impl RaftNetworkFactory<KmaRaft> for KmaNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient { http: self.http.clone(), target, base: format!("https://{}", node.addr) }
    }
}

pub struct PeerClient {
    http: reqwest::Client,
    target: u64,
    base: String,
}

/// Either a transport failure (the peer is unreachable or broke the connection) or the peer's
/// own Raft error.
enum CallError<E> {
    Unreachable(String),
    Network(String),
    Remote(E),
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let body = postcard::to_allocvec(request).map_err(|e| CallError::Network(e.to_string()))?;
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() || e.is_timeout() {
                    CallError::Unreachable(format!("{e:#}"))
                } else {
                    CallError::Network(format!("{e:#}"))
                }
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| CallError::Network(e.to_string()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return Err(CallError::Network(format!("HTTP {status}: {text}")));
        }
        let reply: Result<Resp, E> =
            postcard::from_bytes(&bytes).map_err(|e| CallError::Network(e.to_string()))?;
        reply.map_err(CallError::Remote)
    }

    fn convert<E: std::error::Error>(
        &self,
        error: CallError<RaftError<u64, E>>,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        match error {
            CallError::Unreachable(detail) => {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(detail)))
            }
            CallError::Network(detail) => {
                RPCError::Network(NetworkError::new(&std::io::Error::other(detail)))
            }
            CallError::Remote(raft) => RPCError::RemoteError(RemoteError::new(self.target, raft)),
        }
    }
}

impl RaftNetwork<KmaRaft> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KmaRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("/raft/append", &rpc, option.hard_ttl()).await.map_err(|e| self.convert(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KmaRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call("/raft/snapshot", &rpc, option.hard_ttl()).await.map_err(|e| self.convert(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("/raft/vote", &rpc, option.hard_ttl()).await.map_err(|e| self.convert(e))
    }
}
