//! One running KMA: the Raft instance on RocksDB, the write path (stamp, propose, forward to the
//! leader), reads of the local state, membership changes, and the leader's pulse.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::{BasicNode, ChangeMembers, Raft, ServerState, SnapshotPolicy};
use raft_storage::{KmaRaft, StateHandle};
use rand::Rng;
use sha2::{Digest, Sha256};
use statemachine::{Actor, Command, RequestId};
use thiserror::Error;

use crate::batching;
use crate::config::{DataDirLayout, NodeConfig};
use crate::forward::{ForwardFailure, ForwardLinks};
use crate::login::Logins;
use crate::network::KmaNetwork;
use crate::parallel_append;
use crate::pki;
use crate::tls;
use crate::vault::Vault;
use crate::wire::{
    MembershipRequest, NodeStatus, ProposeError, ProposeRequest, ProposeResponse, StateDigest,
    POSTCARD,
};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Storage(#[from] raft_storage::StorageError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("raft: {0}")]
    Raft(String),
    /// Wrong arguments or files, with what to give instead.
    #[error("{0}")]
    Usage(String),
    #[error("HTTP client: {0}")]
    Http(String),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
}

/// The secret behind decoy login challenges: derived from the CA key, which every KMA holds,
/// so that all KMAs answer an unknown principal with the same salt.
fn decoy_secret(layout: &DataDirLayout) -> [u8; 32] {
    match pki::read(&layout.tls_dir().join(pki::CA_KEY_FILE)) {
        Ok(ca_key) => Sha256::new()
            .chain_update(b"kms decoy login salt v1")
            .chain_update(ca_key.as_bytes())
            .finalize()
            .into(),
        Err(_) => rand::random(),
    }
}

pub struct Kma {
    pub config: NodeConfig,
    pub layout: DataDirLayout,
    pub raft: Raft<KmaRaft>,
    pub state: StateHandle,
    /// Client for other KMAs, authenticated as this KMA.
    pub peers: reqwest::Client,
    /// Raft links to the leader for forwarded proposals.
    forward_links: ForwardLinks,
    last_stamp_ms: AtomicU64,
    /// Wall-clock ms of the last AppendEntries accepted from a leader or vote granted: the
    /// election watchdog runs from it (see `run_election_watchdog`).
    last_leader_contact_ms: AtomicU64,
    /// The master key while unlocked (SPEC C6).
    pub vault: Vault,
    /// Pending login challenges and failure counts (SPEC S2).
    pub logins: Logins,
    /// Proposals on their way into the next log entry (see `batching`).
    proposals: tokio::sync::mpsc::Sender<batching::Queued>,
    /// A pool refill is under way: it goes on until the high water mark (`kma_security`).
    pub(crate) pool_refilling: std::sync::atomic::AtomicBool,
}

/// A command on its way into the log, with who asked for it and through which KMA.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub actor: Actor,
    pub origin_node_id: u64,
    pub request_id: Option<RequestId>,
    pub command: Command,
}

impl Proposal {
    /// A command the KMA software proposes itself (pulse, quickstart).
    pub fn system(kma: &Kma, command: Command) -> Proposal {
        Proposal { actor: Actor::System, origin_node_id: kma.node_id(), request_id: None, command }
    }
}

/// Milliseconds since the Unix epoch from the wall clock.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// An HTTPS client with the given TLS config, keeping connections open between calls.
pub fn https_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, NodeError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| NodeError::Http(e.to_string()))
}

fn raft_config(config: &NodeConfig) -> Result<openraft::Config, NodeError> {
    // openraft 0.9 draws the election timeout once per process, so two candidates whose
    // timeouts happen to be close could split the vote election after election. A per-process
    // offset makes that unlikely; `run_election_watchdog` breaks it when it happens anyway.
    let spread = config.election_timeout_ms_max - config.election_timeout_ms_min;
    let jitter = rand::thread_rng().gen_range(0..=spread / 2);
    let raft = openraft::Config {
        cluster_name: "kms".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_ms_min + jitter,
        election_timeout_max: config.election_timeout_ms_max + jitter,
        // Snapshots are rare (each streams the whole state) and followers that were away for a
        // while still catch up from the log (defaults: every 50,000 entries, 20,000 kept).
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: config.snapshot_logs_kept,
        snapshot_max_chunk_size: raft_storage::SNAPSHOT_CHUNK_LEN as u64,
        install_snapshot_timeout: 30_000,
        purge_batch_size: config.purge_batch_entries.max(1),
        max_payload_entries: 512,
        ..Default::default()
    };
    raft.validate().map_err(|e| NodeError::Raft(e.to_string()))
}

impl Kma {
    /// Opens the data dir and starts Raft (not yet serving: see `server::serve`).
    pub async fn start(data_dir: &Path) -> Result<Arc<Kma>, NodeError> {
        let config = NodeConfig::load(data_dir)?;
        let layout = DataDirLayout::new(data_dir);
        let raft_dir = layout.raft_dir();
        let (_dir, log_store, state_machine) =
            tokio::task::spawn_blocking(move || raft_storage::open_stores(raft_dir))
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))??;
        let state = state_machine.state();
        let client_tls =
            tls::client_config(&layout.tls_dir(), pki::NODE_CERT_FILE, pki::NODE_KEY_FILE)?;
        let network = KmaNetwork { tls: crate::raft_link::client_config(client_tls.clone()) };
        let appends = match config.parallel_append {
            true => log_store.leader_appends(config.node_id, parallel_append::QUEUED_APPENDS_MAX),
            false => None,
        };
        let raft_tls = network.tls.clone();
        let peers = https_client(client_tls)?;
        let raft_config = Arc::new(raft_config(&config)?);
        let raft = Raft::new(config.node_id, raft_config, network, log_store, state_machine)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let node_key = pki::read(&layout.tls_dir().join(pki::NODE_KEY_FILE))?;
        let vault = Vault::open(data_dir, &node_key)?;
        let logins = Logins::new(decoy_secret(&layout));
        let (proposals, queue) = batching::queue();
        let kma = Arc::new(Kma {
            config,
            layout,
            raft,
            state,
            peers,
            forward_links: ForwardLinks::new(raft_tls.clone()),
            last_stamp_ms: AtomicU64::new(0),
            last_leader_contact_ms: AtomicU64::new(wall_clock_ms()),
            vault,
            logins,
            proposals,
            pool_refilling: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(batching::run(kma.clone(), queue));
        if let Some(appends) = appends {
            tokio::spawn(parallel_append::run(kma.clone(), raft_tls, appends));
        }
        Ok(kma)
    }

    /// Makes this KMA the single voter of a new cluster (first start after `kma init`).
    pub async fn initialize_if_new(&self) -> Result<(), NodeError> {
        let initialized =
            self.raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let me = BasicNode { addr: self.config.management_advertise.clone() };
        let members = BTreeMap::from([(self.config.node_id, me)]);
        self.raft.initialize(members).await.map_err(|e| NodeError::Raft(e.to_string()))
    }

    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    /// The leader's stamp: its wall clock, never going backwards (SPEC "Determinism").
    pub(crate) fn stamp(&self) -> u64 {
        let now = wall_clock_ms();
        self.last_stamp_ms.fetch_max(now, Ordering::SeqCst).max(now)
    }

    /// Proposes a command: on the leader directly, elsewhere forwarded to the leader.
    pub async fn propose(&self, proposal: Proposal) -> ProposeResponse {
        let leader = self.raft.metrics().borrow().current_leader;
        match leader {
            Some(leader) if leader == self.node_id() => self.propose_here(proposal).await,
            Some(leader) => self.forward(leader, proposal).await,
            None => Err(ProposeError::NoLeader),
        }
    }

    /// Queues the proposal for the next log entry this leader writes (see `batching`).
    async fn propose_here(&self, proposal: Proposal) -> ProposeResponse {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queued = batching::Queued { proposal, reply };
        if self.proposals.send(queued).await.is_err() {
            return Err(ProposeError::Raft("this KMA is shutting down".into()));
        }
        answer.await.unwrap_or_else(|_| Err(ProposeError::Raft("the proposal was dropped".into())))
    }

    /// A voter or learner of the current membership: a KMA deleted from the cluster still has
    /// a certificate of its CA, but no longer speaks for anyone.
    pub fn is_member(&self, node_id: u64) -> bool {
        self.address_of_node(node_id).is_some()
    }

    /// The voters of the current membership other than this KMA, with their addresses.
    pub(crate) fn other_voters(&self) -> BTreeMap<u64, String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| voters.contains(id) && **id != self.node_id())
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    pub(crate) fn address_of_node(&self, node_id: u64) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let mut nodes = metrics.membership_config.membership().nodes();
        nodes.find(|(id, _)| **id == node_id).map(|(_, node)| node.addr.clone())
    }

    /// Forwards a proposal to the leader on a Raft link; to a leader that does not take it
    /// there (an older version), over HTTP.
    pub(crate) async fn forward(&self, leader: u64, proposal: Proposal) -> ProposeResponse {
        let address = self.address_of_node(leader).ok_or(ProposeError::NoLeader)?;
        let request = ProposeRequest {
            actor: Some(proposal.actor),
            origin_node_id: Some(proposal.origin_node_id),
            request_id: proposal.request_id,
            command: proposal.command,
            // The verifier was made on the KMA that took the passphrase.
            passphrase: None,
        };
        match self.forward_links.propose(&address, request.clone()).await {
            Ok(response) => response,
            Err(ForwardFailure::Unreachable(detail)) => {
                Err(ProposeError::LeaderUnreachable { leader_id: leader, detail })
            }
            Err(ForwardFailure::NotRun(why)) => {
                tracing::debug!(leader, %why, "the leader took no proposal on a Raft link");
                self.forward_http(leader, &address, &request).await
            }
        }
    }

    async fn forward_http(
        &self,
        leader: u64,
        address: &str,
        request: &ProposeRequest,
    ) -> ProposeResponse {
        let unreachable =
            |detail: String| ProposeError::LeaderUnreachable { leader_id: leader, detail };
        let body = postcard::to_allocvec(request).map_err(|e| unreachable(e.to_string()))?;
        let response = self
            .peers
            .post(format!("https://{address}/v1/propose"))
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let bytes = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
        postcard::from_bytes::<ProposeResponse>(&bytes).map_err(|e| unreachable(e.to_string()))?
    }

    pub async fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            _ if !voters.contains(&self.node_id()) => "learner",
            _ => "follower",
        };
        let (cluster_id, (key_pool_ready, key_pool_generated)) = {
            let state = self.state.read().await;
            (state.cluster_id().map(|id| id.to_string()), state.pool_size())
        };
        NodeStatus {
            node_id: self.node_id(),
            name: self.config.name.clone(),
            site: self.config.site.clone(),
            cluster_id,
            role: role.into(),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            applied_index: self.state.applied_index(),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
            voters,
            learners,
            locked: self.is_locked().await,
            service_address: self.config.service_advertise(),
            key_pool_ready,
            key_pool_generated,
        }
    }

    /// Waits until a read may be served: `min_index` applied here (read-your-writes) and, when
    /// `linearizable`, leadership confirmed by a quorum and everything it committed applied
    /// (one quorum round: for admin reads, not the agent path). Gives up after 30 s.
    pub async fn read_barrier(&self, min_index: u64, linearizable: bool) -> Result<(), NodeError> {
        self.read_barrier_within(min_index, linearizable, Duration::from_secs(30)).await
    }

    /// [`Kma::read_barrier`] with its own bound on the wait.
    pub async fn read_barrier_within(
        &self,
        min_index: u64,
        linearizable: bool,
        wait_max: Duration,
    ) -> Result<(), NodeError> {
        let mut index = min_index;
        if linearizable {
            let read_log_id = self
                .raft
                .ensure_linearizable()
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))?;
            index = index.max(read_log_id.map_or(0, |log_id| log_id.index));
        }
        // The usual case on the agent path: nothing to wait for, so no timer to set.
        if self.state.applied_index() >= index {
            return Ok(());
        }
        let wait = self.state.wait_applied(index);
        let seconds = wait_max.as_secs_f64();
        tokio::time::timeout(wait_max, wait).await.map_err(|_| {
            NodeError::Raft(format!("index {index} not applied here within {seconds} s"))
        })??;
        Ok(())
    }

    /// SHA-256 of the applied state, after waiting (up to 30 s) for `min_index` to be applied.
    pub async fn digest(&self, min_index: u64) -> Result<StateDigest, NodeError> {
        self.read_barrier(min_index, false).await?;
        let state = self.state.read().await;
        let mut hasher = Sha256::new();
        for chunk in statemachine::codec::snapshot_chunks(&state, 1 << 20) {
            hasher.update(&chunk);
        }
        Ok(StateDigest {
            applied_index: state.last_applied_index(),
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Runs a membership change on the leader (forwarded there if needed).
    pub async fn change_membership(&self, request: MembershipRequest) -> Result<u64, String> {
        let result = match request {
            MembershipRequest::AddLearner { node_id, address } => {
                self.raft.add_learner(node_id, BasicNode { addr: address }, false).await
            }
            MembershipRequest::Promote { node_id } => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), true)
                    .await
            }
            MembershipRequest::Remove { node_id } => {
                let voters = ChangeMembers::RemoveVoters(BTreeSet::from([node_id]));
                match self.raft.change_membership(voters, true).await {
                    Ok(_) => {
                        self.raft
                            .change_membership(
                                ChangeMembers::RemoveNodes(BTreeSet::from([node_id])),
                                false,
                            )
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        result.map(|response| response.log_id.index).map_err(|e| e.to_string())
    }

    /// Sends a membership change to the leader (this KMA or another).
    pub async fn membership_on_leader(&self, request: MembershipRequest) -> Result<u64, String> {
        let leader = self.raft.metrics().borrow().current_leader.ok_or("no leader is known")?;
        if leader == self.node_id() {
            return self.change_membership(request).await;
        }
        let address = self.address_of_node(leader).ok_or("the leader's address is unknown")?;
        let body = postcard::to_allocvec(&request).map_err(|e| e.to_string())?;
        let response = self
            .peers
            .post(format!("https://{address}/v1/members"))
            .header(reqwest::header::CONTENT_TYPE, POSTCARD)
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("{e:#}"))?;
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        postcard::from_bytes::<Result<u64, String>>(&bytes).map_err(|e| e.to_string())?
    }

    /// On the leader: promotes every learner whose log is within 100 entries of the leader's.
    /// Run from the leader's loop, so a promotion survives the restart of the KMA that admitted
    /// the learner.
    async fn promote_caught_up_learners(&self) {
        let metrics = self.raft.metrics().borrow().clone();
        let Some(last) = metrics.last_log_index else { return };
        let learners: Vec<u64> = metrics.membership_config.membership().learner_ids().collect();
        for node_id in learners {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&node_id).cloned().flatten())
                .map(|log_id| log_id.index);
            if matched.is_none_or(|index| index + 100 < last) {
                continue;
            }
            match self.change_membership(MembershipRequest::Promote { node_id }).await {
                Ok(_) => tracing::info!(node_id, "promoted a caught-up KMA to voter"),
                Err(error) => tracing::warn!(node_id, %error, "promotion not possible yet"),
            }
        }
    }

    /// Records contact with a leader (an accepted AppendEntries) or a granted vote: both put
    /// off this KMA's own candidacy.
    pub fn leader_contact(&self) {
        self.last_leader_contact_ms.fetch_max(wall_clock_ms(), Ordering::SeqCst);
    }

    /// openraft's election timer handles the normal case (including letting KMAs with a longer
    /// log go first); this watchdog only breaks a run of split votes: a voter that has heard no
    /// leader for two election timeouts plus a delay drawn afresh each time starts one itself.
    pub async fn run_election_watchdog(self: Arc<Self>) {
        let max = self.config.election_timeout_ms_max;
        let draw = move || 2 * max + rand::thread_rng().gen_range(0..=max);
        let mut patience_ms = draw();
        let mut ticker = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticker.tick().await;
            let metrics = self.raft.metrics().borrow().clone();
            let voter =
                metrics.membership_config.membership().voter_ids().any(|id| id == self.node_id());
            if metrics.current_leader.is_some() || !voter {
                self.leader_contact();
                continue;
            }
            let silent_ms =
                wall_clock_ms().saturating_sub(self.last_leader_contact_ms.load(Ordering::SeqCst));
            if silent_ms < patience_ms {
                continue;
            }
            tracing::info!(silent_ms, "no leader for a while: starting an election");
            if let Err(error) = self.raft.trigger().elect().await {
                tracing::error!(%error, "cannot start an election");
            }
            self.leader_contact();
            patience_ms = draw();
        }
    }

    /// The leader's duties, twice a second: propose `Pulse` whenever a time-driven transition
    /// is due (STYLE 4), and promote learners that have caught up.
    pub async fn run_leader_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            ticker.tick().await;
            if self.raft.metrics().borrow().current_leader != Some(self.node_id()) {
                continue;
            }
            self.promote_caught_up_learners().await;
            self.record_joined_kmas().await;
            self.refill_key_pool().await;
            let due = self
                .state
                .read()
                .await
                .next_transition_ms()
                .is_some_and(|at| at <= wall_clock_ms());
            if due {
                let result = self.propose(Proposal::system(&self, Command::Pulse)).await;
                if let Err(error) = result {
                    tracing::warn!(%error, "pulse not proposed");
                }
            }
        }
    }
}

impl Kma {
    /// Proposes the pending quickstart of `kma init` once this KMA leads, then forgets it.
    pub async fn run_quickstart(self: Arc<Self>) {
        let path = self.layout.root.join(crate::setup::QUICKSTART_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else { return };
        let parsed: Result<crate::setup::Quickstart, _> = toml::from_str(&text);
        let Some(init) = parsed.ok().and_then(|quickstart| quickstart.command()) else {
            tracing::error!(path = %path.display(), "unreadable quickstart file: run kma init again in a new data dir");
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.state.read().await.cluster_id().is_some() {
                break;
            }
            let command = Command::InitCluster(init.clone());
            match self.propose(Proposal::system(&self, command)).await {
                Ok(applied) => {
                    tracing::info!(index = applied.index, result = ?applied.result, "quickstart applied");
                    break;
                }
                Err(error) => tracing::debug!(%error, "quickstart waits for a leader"),
            }
        }
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(%error, "could not remove the quickstart file");
        }
    }
}
