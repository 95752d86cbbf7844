//! One running KMA, wired together: the Raft instance on RocksDB, the transport below it, the
//! write path above it, and the handles the listeners and duties take. Nothing here decides
//! anything: each piece lives in its layer (`transport/`, `write/`, `listen/`) or beside this
//! file (`leader.rs`, `duties.rs`, `setup/`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Raft, SnapshotPolicy};
use raft_storage::{KmaRaft, WriteStages};
use rand::Rng;
use thiserror::Error;
use tokio::net::TcpListener;

use crate::config::{DataDirLayout, NodeConfig};
use crate::listen::admin::NodeAdmin;
use crate::listen::gateway_backend::GatewayBackend;
use crate::listen::health::Health;
use crate::listen::management::{Management, ManagementRouters};
use crate::listen::metrics::{MetricsLayer, RequestMetrics, MANAGEMENT, SERVICE};
use crate::listen::scrape::ListenerConnections;
use crate::listen::security_api::SecurityApi;
use crate::login::Logins;
use crate::pki;
use crate::transport::clock::ClockGuard;
use crate::transport::forward_links::ForwardLinks;
use crate::transport::link::{LinkServer, INBOUND_PROPOSALS_MAX};
use crate::transport::network::{KmaNetwork, PeerLinks};
use crate::transport::parallel_append::{self, EntriesAhead, SendAhead};
use crate::transport::{tls, LeaderContact};
use crate::vault::Vault;
use crate::view::Local;
use crate::write::forward::LinksThenHttp;
use crate::write::membership::Membership;
use crate::write::Proposer;

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

/// The decoy secret until this KMA holds the CA key (`duties::run_ca_key_custody` then sets
/// the one every KMA derives alike).
fn first_decoy_secret(layout: &DataDirLayout) -> [u8; 32] {
    match pki::read(&layout.tls_dir().join(pki::CA_KEY_FILE)) {
        Ok(ca_key) => crate::login::decoy_secret(&zeroize::Zeroizing::new(ca_key)),
        Err(_) => rand::random(),
    }
}

/// One KMA: the handles of its pieces. Listeners and duties take the handles they need,
/// never the whole `Kma`.
pub struct Kma {
    /// Reads of the local state, the Raft instance, the vault, the configuration.
    pub local: Local,
    /// The write path.
    pub proposer: Proposer,
    pub membership: Membership,
    /// Pending login challenges and failure counts (SPEC S2).
    pub logins: Arc<Logins>,
    /// An HTTPS client authenticated as this KMA, for other KMAs' management listeners.
    pub peers: reqwest::Client,
    /// The health of the Raft links to each peer (SPEC C8).
    pub peer_links: PeerLinks,
    /// What became of the entries sent ahead (`/metrics`).
    pub entries_ahead: EntriesAhead,
    /// Where this KMA's writes spend their time, stage by stage (`/metrics`).
    pub write_stages: WriteStages,
    /// The last contact with a leader, for the election watchdog.
    pub contact: LeaderContact,
    /// What each listener's connection bounds hold and turned away (`/metrics`).
    pub connections: ListenerConnections,
    /// Woken when this KMA must stop: the cluster deleted it (`departure`).
    pub stop: Arc<tokio::sync::Notify>,
    /// Serves the Raft links handed over by the management listener.
    pub link_server: LinkServer,
    /// A pool refill is under way: it goes on until the high water mark (`leader`).
    pub(crate) pool_refilling: AtomicBool,
}

/// An HTTPS client with the given TLS config, keeping connections open between calls.
pub fn https_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, NodeError> {
    https_client_with(tls, reqwest::header::HeaderMap::new())
}

/// [`https_client`] sending `headers` with every request.
pub fn https_client_with(
    tls: rustls::ClientConfig,
    headers: reqwest::header::HeaderMap,
) -> Result<reqwest::Client, NodeError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .default_headers(headers)
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
    /// Opens the data dir and starts Raft, the batcher and the link tasks (not yet serving:
    /// see `listen::management::serve`).
    pub async fn start(data_dir: &Path) -> Result<Arc<Kma>, NodeError> {
        if let Some(departed) = crate::departure::Departed::load(data_dir) {
            return Err(NodeError::Usage(departed.refusal(data_dir)));
        }
        let config = Arc::new(NodeConfig::load(data_dir)?);
        let layout = DataDirLayout::new(data_dir);
        let raft_dir = layout.raft_dir();
        let (raft_data, log_store, state_machine) =
            tokio::task::spawn_blocking(move || raft_storage::open_stores(raft_dir))
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))??;
        let write_stages = raft_data.write_stages();
        let state = state_machine.state();
        let live_tls = crate::ca_rotation::tls_at_start(&state, &layout, &config.name).await?;
        let client_tls = live_tls.client_config()?;
        let raft_tls = crate::transport::link::client_config(client_tls.clone());
        let peer_links = PeerLinks::default();
        let network = KmaNetwork {
            tls: raft_tls.clone(),
            links: peer_links.clone(),
            stages: write_stages.clone(),
        };
        let appends = match config.parallel_append {
            true => log_store.leader_appends(config.node_id, parallel_append::QUEUED_APPENDS_MAX),
            false => None,
        };
        let peers = https_client(client_tls)?;
        let raft_config = Arc::new(raft_config(&config)?);
        let raft = Raft::new(config.node_id, raft_config, network, log_store, state_machine)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let node_key = pki::read(&layout.tls_dir().join(pki::NODE_KEY_FILE))?;
        let vault = Arc::new(Vault::open(data_dir, &node_key)?);
        let logins = Arc::new(Logins::new(first_decoy_secret(&layout)));
        let links = WriteLinks {
            raft_tls,
            peers: peers.clone(),
            peer_links: peer_links.clone(),
            stages: write_stages.clone(),
        };
        let (proposer, link_server, entries_ahead) =
            start_write_path(&config, &raft, &state, links, appends);
        let contact = link_server.contact.clone();
        let membership = Membership {
            raft: raft.clone(),
            state: state.clone(),
            node_id: config.node_id,
            http: peers.clone(),
        };
        let version = crate::duties::this_version();
        let local = Local { config, layout, raft, state, vault, version, tls: live_tls };
        Ok(Arc::new(Kma {
            local,
            proposer,
            membership,
            logins,
            peers,
            peer_links,
            entries_ahead,
            write_stages,
            contact,
            link_server,
            stop: Arc::new(tokio::sync::Notify::new()),
            connections: [
                (MANAGEMENT, agent_gateway::ConnectionStats::default()),
                (SERVICE, agent_gateway::ConnectionStats::default()),
            ],
            pool_refilling: AtomicBool::new(false),
        }))
    }

    /// Makes this KMA the single voter of a new cluster (first start after `kma init`).
    pub async fn initialize_if_new(&self) -> Result<(), NodeError> {
        let raft = &self.local.raft;
        let initialized =
            raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let me = BasicNode { addr: self.local.config.management_advertise.clone() };
        let members = std::collections::BTreeMap::from([(self.node_id(), me)]);
        raft.initialize(members).await.map_err(|e| NodeError::Raft(e.to_string()))
    }

    pub fn node_id(&self) -> u64 {
        self.local.config.node_id
    }

    /// Starts the background duties of a running KMA: the leader's loop, the vault kept in
    /// step, the election watchdog, the audit of communication errors, the quickstart.
    pub fn spawn_duties(self: &Arc<Self>) {
        tokio::spawn(crate::setup::run_quickstart(self.clone()));
        tokio::spawn(crate::leader::run(self.clone()));
        tokio::spawn(crate::duties::run_vault_sync(self.local.clone()));
        tokio::spawn(crate::backup::schedule::run(self.local.clone(), self.proposer.clone()));
        let (local, proposer) = (self.local.clone(), self.proposer.clone());
        tokio::spawn(crate::duties::run_version_report(local, proposer));
        let (local, proposer) = (self.local.clone(), self.proposer.clone());
        tokio::spawn(crate::duties::run_certificate_report(local, proposer));
        let (local, proposer) = (self.local.clone(), self.proposer.clone());
        tokio::spawn(crate::duties::run_ca_key_custody(local, proposer, self.logins.clone()));
        tokio::spawn(crate::ca_rotation::run(self.clone()));
        let out = crate::duties::StayOut::default();
        tokio::spawn(crate::duties::run_election_watchdog(
            self.local.clone(),
            self.contact.clone(),
            out.clone(),
        ));
        tokio::spawn(crate::duties::run_clock_step_down(
            self.local.clone(),
            self.peer_links.clone(),
            out,
        ));
        tokio::spawn(crate::duties::run_login_failure_summary(
            self.proposer.clone(),
            self.logins.clone(),
        ));
        tokio::spawn(crate::duties::run_clock_audit(
            self.local.clone(),
            self.proposer.clone(),
            self.link_server.clock.clone(),
        ));
        tokio::spawn(crate::departure::run_departure_watch(
            self.local.clone(),
            self.peer_links.departure(),
            self.stop.clone(),
        ));
        tokio::spawn(crate::duties::run_communication_audit(
            self.local.clone(),
            self.proposer.clone(),
            self.peer_links.clone(),
        ));
    }

    /// The management listener's router, each part with the handles it needs.
    pub fn management_router(&self, requests: RequestMetrics) -> axum::Router {
        let local = &self.local;
        let routers = ManagementRouters {
            management: Management {
                local: local.clone(),
                proposer: self.proposer.clone(),
                membership: self.membership.clone(),
            },
            security: SecurityApi {
                local: local.clone(),
                proposer: self.proposer.clone(),
                membership: self.membership.clone(),
                logins: self.logins.clone(),
                peers: self.peers.clone(),
                quorum_changes: crate::listen::quorum_change::PendingChanges::default(),
            },
            health: Health::new(
                local.clone(),
                self.peer_links.clone(),
                self.entries_ahead.clone(),
                self.write_stages.clone(),
                requests.clone(),
                self.connections.clone(),
            ),
            admin: NodeAdmin {
                local: local.clone(),
                proposer: self.proposer.clone(),
                peers: self.peers.clone(),
            },
            requests,
        };
        crate::listen::management::router(routers)
    }

    /// The agent gateway's backend on this KMA.
    pub fn gateway_backend(&self) -> GatewayBackend {
        GatewayBackend::new(
            self.local.clone(),
            self.proposer.clone(),
            self.logins.clone(),
            self.peers.clone(),
            self.contact.clone(),
        )
    }

    /// Serves the listeners until one fails or the task is dropped: management, service, and
    /// KMIP when this KMA was given an address for it.
    pub async fn serve(
        self: &Arc<Self>,
        management: TcpListener,
        service: TcpListener,
        kmip: Option<TcpListener>,
    ) -> Result<(), NodeError> {
        let requests = RequestMetrics::new();
        let management_protocols: [&[u8]; 3] = [b"h2", b"http/1.1", crate::transport::link::ALPN];
        let management_tls = self.local.tls.server_config(&management_protocols)?;
        let service_tls = self.local.tls.server_config(&[b"h2", b"http/1.1"])?;
        let router = self.management_router(requests.clone());
        let gateway = self.gateway_backend();
        tokio::spawn(gateway.clone().run_lock_cache());
        tokio::spawn(gateway.clone().run_discovery_cache());
        let links = self.link_server.clone();
        let limits = self.local.config.connection_limits();
        let [(_, management_stats), (_, service_stats)] = self.connections.clone();
        let management_bounds = (limits.clone(), management_stats);
        if let Some(listener) = kmip {
            let tls = self.local.tls.kmip_server_config()?;
            let backend = Arc::new(gateway.clone());
            let stats = agent_gateway::ConnectionStats::default();
            tokio::spawn(agent_gateway::kmip::serve_kmip(
                backend,
                listener,
                tls,
                limits.clone(),
                stats,
            ));
        }
        tokio::select! {
            () = crate::listen::management::serve(
                router, management_tls, management, links, management_bounds
            ) => {}
            () = serve_service(gateway, service, service_tls, requests, (limits, service_stats)) => {}
        }
        Ok(())
    }
}

/// What the write path reaches other KMAs with, and times itself with.
struct WriteLinks {
    raft_tls: Arc<rustls::ClientConfig>,
    /// An HTTPS client authenticated as this KMA (forwarding to a leader of an older version).
    peers: reqwest::Client,
    peer_links: PeerLinks,
    stages: WriteStages,
}

/// The write path (proposer and its batcher, the answering of forwarded proposals, the
/// leader's appends sent ahead when `appends` hands them over) and the server of Raft links
/// that feeds it; with what becomes of the entries sent ahead.
fn start_write_path(
    config: &NodeConfig,
    raft: &Raft<KmaRaft>,
    state: &raft_storage::StateHandle,
    links: WriteLinks,
    appends: Option<tokio::sync::mpsc::Receiver<Arc<raft_storage::LeaderAppend<KmaRaft>>>>,
) -> (Proposer, LinkServer, EntriesAhead) {
    let WriteLinks { raft_tls, peers, peer_links, stages } = links;
    let entries_ahead = EntriesAhead::default();
    if let Some(appends) = appends {
        let ahead = SendAhead {
            raft: raft.clone(),
            node_id: config.node_id,
            tls: raft_tls.clone(),
            links: peer_links,
            counts: entries_ahead.clone(),
            stages: stages.clone(),
            answer_timeout: Duration::from_millis(config.election_timeout_ms_max),
        };
        tokio::spawn(parallel_append::run(ahead, appends));
    }
    let leader_link = LinksThenHttp { links: ForwardLinks::new(raft_tls), http: peers };
    let (proposer, batcher) = Proposer::new(
        config.node_id,
        Arc::new(raft.clone()),
        Arc::new(leader_link),
        Some(state.clone()),
        stages.clone(),
    );
    tokio::spawn(batcher);
    let (inbound, inbound_queue) = tokio::sync::mpsc::channel(INBOUND_PROPOSALS_MAX);
    tokio::spawn(crate::write::intake::serve_forwarded(proposer.clone(), inbound_queue));
    let link_server = LinkServer {
        raft: raft.clone(),
        state: state.clone(),
        clock: ClockGuard::new(config.clock_ahead_max_ms),
        contact: LeaderContact::default(),
        inbound,
        stages,
    };
    (proposer, link_server, entries_ahead)
}

/// The agent gateway on the service listener, as `agent_gateway::serve` runs it, with the
/// request metrics around its router.
async fn serve_service(
    gateway: GatewayBackend,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    requests: RequestMetrics,
    (limits, stats): (agent_gateway::ConnectionLimits, agent_gateway::ConnectionStats),
) {
    let tag = |tls: &rustls::ServerConnection, remote: SocketAddr| {
        let mut extensions = axum::http::Extensions::new();
        let certificate = agent_gateway::server::client_certificate(tls);
        extensions.insert(agent_gateway::Peer::new(Some(remote), certificate));
        extensions
    };
    let layer = MetricsLayer::new(SERVICE, requests);
    let app = agent_gateway::router(Arc::new(gateway)).layer(layer);
    let name = "service listener";
    crate::transport::accept::serve_tls(listener, tls, app, name, tag, None, limits, stats).await;
}
