//! openraft's network: Raft RPCs to other KMAs on long-lived mutual-TLS links
//! ([`crate::raft_link`]; a full TLS handshake costs far more than an RPC).
//!
//! Every RPC's outcome is noted per peer in [`PeerLinks`]; when the RPCs to a peer start failing
//! or work again, `PeerLinks::changed` wakes whoever audits it (`crate::duties`, SPEC C8): this
//! layer reports, it never proposes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
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
use raft_storage::{KmaRaft, Stage, WriteStages};
use serde::de::DeserializeOwned;

use crate::transport::link::{Answer, Link, LinkError, RaftCall};
use crate::transport::wall_clock_ms;

/// Makes one client per peer; each holds its own link (openraft sends one call at a time on
/// it), opened on first use and again after a failure.
#[derive(Clone)]
pub struct KmaNetwork {
    /// The KMA's client TLS, offering only the Raft link protocol.
    pub tls: Arc<rustls::ClientConfig>,
    /// Where each RPC's outcome is noted.
    pub links: PeerLinks,
    /// Times each AppendEntries that carries entries (`Stage::Replicate`).
    pub stages: WriteStages,
}

impl RaftNetworkFactory<KmaRaft> for KmaNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        let client =
            PeerClient::new(self.tls.clone(), self.links.clone(), target, node.addr.clone());
        PeerClient { stages: Some(self.stages.clone()), ..client }
    }
}

pub struct PeerClient {
    tls: Arc<rustls::ClientConfig>,
    links: PeerLinks,
    target: u64,
    /// host:port of the peer's management listener, as its membership entry gives it.
    address: String,
    link: Option<Link>,
    /// Openraft's clients time their AppendEntries here; the clients that send ahead time
    /// theirs themselves.
    stages: Option<WriteStages>,
}

/// Either a transport failure (the peer is unreachable or broke the connection) or the peer's
/// own Raft error. A transport failure carries `why`, a short reason for the audit log and the
/// metrics (no address, no body, nothing the peer sent), and `detail`, the full text for
/// openraft.
enum CallError<E> {
    Unreachable { why: &'static str, detail: String },
    Network { why: String, detail: String },
    Remote(E),
}

fn network<E>(why: impl Into<String>, detail: String) -> CallError<E> {
    CallError::Network { why: why.into(), detail }
}

impl PeerClient {
    /// A client for `target` at `address` (host:port of its management listener); its link is
    /// opened on first use.
    pub(crate) fn new(
        tls: Arc<rustls::ClientConfig>,
        links: PeerLinks,
        target: u64,
        address: String,
    ) -> Self {
        PeerClient { tls, links, target, address, link: None, stages: None }
    }

    /// An AppendEntries sent ahead of openraft's own replication (`parallel_append`): its outcome
    /// is not noted for the audit log, since openraft's calls to the same peer already are.
    pub(crate) async fn append_ahead(
        &mut self,
        rpc: AppendEntriesRequest<KmaRaft>,
        timeout: Duration,
    ) -> Result<AppendEntriesResponse<u64>, String> {
        let result = self.call::<_, RaftError<u64>>(&RaftCall::Append(rpc), timeout).await;
        result.map_err(|error| match error {
            CallError::Unreachable { detail, .. } | CallError::Network { detail, .. } => detail,
            CallError::Remote(raft) => raft.to_string(),
        })
    }

    /// One call on the link (opened first if need be), within `timeout`. The link is put back
    /// only after a complete exchange: one that failed or timed out is dropped, since what it
    /// still carries is unknown.
    async fn call<Resp, E>(
        &mut self,
        call: &RaftCall,
        timeout: Duration,
    ) -> Result<Resp, CallError<E>>
    where
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let answer = match tokio::time::timeout(timeout, self.exchange(call)).await {
            Ok(answer) => answer?,
            Err(_elapsed) => {
                let detail = format!("no answer from {} within {timeout:?}", self.address);
                return Err(CallError::Unreachable { why: "timed out", detail });
            }
        };
        match answer {
            Answer::Done(reply) => reply.map_err(CallError::Remote),
            Answer::Refused(why) => {
                if why.starts_with(crate::transport::link::REFUSED_DELETED) {
                    self.links.departure().note(format!("KMA {} refused it: {why}", self.target));
                }
                if why.starts_with(crate::transport::clock::REFUSED_CLOCK) {
                    self.links.note_clock_refusal(self.target);
                }
                // Unreachable, not a network error: openraft then backs off before it calls
                // again, instead of repeating a refused call at once, over and over.
                let detail = format!("{}: {why}", self.address);
                Err(CallError::Unreachable { why: "refused", detail })
            }
        }
    }

    async fn exchange<Resp, E>(
        &mut self,
        call: &RaftCall,
    ) -> Result<Answer<Result<Resp, E>>, CallError<E>>
    where
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let reused = self.link.is_some();
        let mut link = match self.link.take() {
            Some(link) => link,
            None => self.connect().await?,
        };
        let answered = match link.exchange(call).await {
            // The peer closed a link that sat open (it restarted, or its idle timeout): once
            // more on a new one. Raft calls may be repeated; openraft would repeat it anyway,
            // only later and after counting a failure against the peer.
            Err(LinkError::Io(_)) if reused => {
                link = self.connect().await?;
                link.exchange(call).await
            }
            answered => answered,
        };
        match answered {
            Ok(Ok(answer)) => {
                self.link = Some(link);
                Ok(answer)
            }
            Ok(Err(error)) => Err(network("answer not decodable", error.to_string())),
            Err(error) => Err(link_error(&self.address, error)),
        }
    }

    async fn connect<E>(&self) -> Result<Link, CallError<E>> {
        Link::connect(self.tls.clone(), &self.address)
            .await
            .map_err(|e| link_error(&self.address, e))
    }

    /// Notes the outcome of one RPC in [`PeerLinks`]: a transport failure counts against the
    /// link; an answer, even the peer's own Raft error, shows that the link works.
    fn observe<T, E>(&self, result: &Result<T, CallError<E>>) {
        let why = match result {
            Err(CallError::Unreachable { why, .. }) => Some(*why),
            Err(CallError::Network { why, .. }) => Some(why.as_str()),
            Ok(_) | Err(CallError::Remote(_)) => None,
        };
        self.links.observe(self.target, &self.address, why);
    }

    fn convert<E: std::error::Error>(
        &self,
        error: CallError<RaftError<u64, E>>,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        match error {
            CallError::Unreachable { detail, .. } => {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(detail)))
            }
            CallError::Network { detail, .. } => {
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
        let started = std::time::Instant::now();
        let carries_entries = !rpc.entries.is_empty();
        let result = self.call(&RaftCall::Append(rpc), option.hard_ttl()).await;
        if let Some(stages) = self.stages.as_ref().filter(|_| carries_entries && result.is_ok()) {
            stages.record(Stage::Replicate, started.elapsed());
        }
        self.observe(&result);
        result.map_err(|e| self.convert(e))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KmaRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let result = self.call(&RaftCall::Snapshot(rpc), option.hard_ttl()).await;
        self.observe(&result);
        result.map_err(|e| self.convert(e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let result = self.call(&RaftCall::Vote(rpc), option.hard_ttl()).await;
        self.observe(&result);
        result.map_err(|e| self.convert(e))
    }
}

fn link_error<E>(address: &str, error: LinkError) -> CallError<E> {
    match error {
        LinkError::Connect(detail) => CallError::Unreachable { why: "cannot connect", detail },
        LinkError::Io(error) => network("connection failed", format!("{address}: {error}")),
        LinkError::Protocol => network(
            "no Raft link protocol",
            format!(
                "{address} did not take the {} protocol: is it a KMA of this version?",
                String::from_utf8_lossy(crate::transport::link::ALPN)
            ),
        ),
    }
}

/// At most one communication-error record per peer in this interval (SPEC C8): a peer that
/// flaps, or one that stays down, does not flood the replicated audit log; what happened
/// meanwhile is summed up in the next record.
pub const COMMUNICATION_AUDIT_INTERVAL: Duration = Duration::from_secs(60);
/// Audit details are cut to this many bytes (the state machine takes up to 256).
const COMMUNICATION_DETAIL_LEN_MAX: usize = 200;

/// What this KMA's Raft RPCs to one peer have been doing lately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLink {
    /// host:port of the peer's management listener.
    pub address: String,
    /// The last RPC failed in transport.
    pub failing: bool,
    /// Failed RPCs in a row (0 while working).
    pub failures_in_a_row: u64,
    /// Short reason of the last failure (no URL, nothing the peer sent).
    pub last_failure: String,
    /// Changes between working and failing since this process started.
    pub changes: u64,
    /// Wall-clock ms of the last change.
    pub changed_at_ms: u64,
    /// Records about this peer this KMA got into the audit log, saying failing / working.
    pub recorded_failing: u64,
    pub recorded_working: u64,
}

/// The links of this KMA to its peers, by node ID: a cheap handle, cloned into every Raft
/// client; the RPC path only takes its lock for a few map operations.
#[derive(Clone, Debug, Default)]
pub struct PeerLinks {
    inner: Arc<PeerLinksInner>,
}

#[derive(Default)]
struct PeerLinksInner {
    links: Mutex<BTreeMap<u64, PeerLink>>,
    changed: tokio::sync::Notify,
    /// A peer refused this KMA as deleted from the cluster.
    departure: crate::transport::link::Departure,
    /// When each peer last refused this KMA's entries for stamps ahead of its clock.
    clock_refusals: Mutex<BTreeMap<u64, std::time::Instant>>,
}

impl std::fmt::Debug for PeerLinksInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLinks").field("links", &self.links).finish_non_exhaustive()
    }
}

impl PeerLinks {
    fn observe(&self, target: u64, address: &str, failure: Option<&str>) {
        let changed = {
            let mut links = self.inner.links.lock().unwrap_or_else(PoisonError::into_inner);
            let link = links.entry(target).or_insert_with(|| PeerLink {
                address: address.to_string(),
                failing: false,
                failures_in_a_row: 0,
                last_failure: String::new(),
                changes: 0,
                changed_at_ms: wall_clock_ms(),
                recorded_failing: 0,
                recorded_working: 0,
            });
            if link.address != address {
                address.clone_into(&mut link.address);
            }
            let changed = link.failing != failure.is_some();
            if changed {
                link.failing = failure.is_some();
                link.changes += 1;
                link.changed_at_ms = wall_clock_ms();
            }
            match failure {
                Some(why) => {
                    link.failures_in_a_row += 1;
                    if link.last_failure != why {
                        why.clone_into(&mut link.last_failure);
                    }
                }
                None => link.failures_in_a_row = 0,
            }
            changed
        };
        if changed {
            self.inner.changed.notify_one();
        }
    }

    /// The links of this KMA's Raft RPCs to its peers (peers it never called are absent).
    pub fn snapshot(&self) -> BTreeMap<u64, PeerLink> {
        self.inner.links.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until a link changes between working and failing.
    pub async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// What the peers said of this KMA's own membership: set once one refused it as deleted.
    pub fn departure(&self) -> crate::transport::link::Departure {
        self.inner.departure.clone()
    }

    fn note_clock_refusal(&self, peer: u64) {
        let mut refusals = self.inner.clock_refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals.insert(peer, std::time::Instant::now());
    }

    /// The peers that refused this KMA's entries for its clock within `within`.
    pub fn clock_refusals(&self, within: Duration) -> Vec<u64> {
        let refusals = self.inner.clock_refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals.iter().filter(|(_, at)| at.elapsed() < within).map(|(peer, _)| *peer).collect()
    }

    /// Counts a communication-error record about `peer` that the cluster applied.
    pub fn count_record(&self, peer: u64, failing: bool) {
        let mut links = self.inner.links.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = links.get_mut(&peer) {
            if failing {
                link.recorded_failing += 1;
            } else {
                link.recorded_working += 1;
            }
        }
    }
}

/// The audit detail: the link's state now, its address, the reason, and how many changes the
/// record sums up. Short, and built only from our own words, the node ID and the address.
pub fn communication_detail(peer: u64, link: &PeerLink, changes: u64) -> String {
    let mut detail = if link.failing {
        format!(
            "raft RPCs to node {peer} at {} failing: {} ({} in a row)",
            link.address, link.last_failure, link.failures_in_a_row
        )
    } else {
        format!("raft RPCs to node {peer} at {} working again", link.address)
    };
    if changes > 1 {
        detail += &format!("; {changes} changes since the last record");
    }
    if detail.len() > COMMUNICATION_DETAIL_LEN_MAX {
        let mut end = COMMUNICATION_DETAIL_LEN_MAX;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(failing: bool, address: &str) -> PeerLink {
        PeerLink {
            address: address.into(),
            failing,
            failures_in_a_row: if failing { 3 } else { 0 },
            last_failure: if failing { "cannot connect".into() } else { String::new() },
            changes: 1,
            changed_at_ms: 0,
            recorded_failing: 0,
            recorded_working: 0,
        }
    }

    /// Setup: a failing link, a working one after three changes, one with a very long
    /// address. Action: make their audit details. Expect: state, address and reason in few
    /// words, the number of changes summed up, and the length bound kept. (SPEC C8)
    #[test]
    fn c8_communication_details_are_short_and_say_what_changed() {
        let failing = communication_detail(3, &link(true, "10.0.0.3:7001"), 1);
        assert_eq!(
            failing,
            "raft RPCs to node 3 at 10.0.0.3:7001 failing: cannot connect (3 in a row)"
        );
        let working = communication_detail(2, &link(false, "kma2:7001"), 3);
        assert_eq!(
            working,
            "raft RPCs to node 2 at kma2:7001 working again; 3 changes since the last record"
        );
        let long = communication_detail(4, &link(true, &"é".repeat(300)), 1);
        assert!(long.len() <= COMMUNICATION_DETAIL_LEN_MAX, "{}", long.len());
        assert!(long.len() + 1 >= COMMUNICATION_DETAIL_LEN_MAX);
    }

    /// Setup: no link to node 901. Action: a failed RPC, two more, a success. Expect: one
    /// change to failing (counted in a row, with its reason), then one back to working.
    /// (SPEC C8)
    #[test]
    fn c8_links_change_only_between_working_and_failing() {
        let links = PeerLinks::default();
        links.observe(901, "127.0.0.1:1", Some("cannot connect"));
        links.observe(901, "127.0.0.1:1", Some("timed out"));
        links.observe(901, "127.0.0.1:1", Some("timed out"));
        let failing = links.snapshot()[&901].clone();
        assert!(failing.failing);
        assert_eq!((failing.changes, failing.failures_in_a_row), (1, 3));
        assert_eq!(failing.last_failure, "timed out");
        links.observe(901, "127.0.0.1:1", None);
        let working = links.snapshot()[&901].clone();
        assert!(!working.failing);
        assert_eq!((working.changes, working.failures_in_a_row), (2, 0));
    }
}
