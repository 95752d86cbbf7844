//! The node side of the agent gateway's boundary: the gateway reads this KMA's state, proposes
//! through its Raft write path, and gets the master key only while this KMA is unlocked.

use std::sync::Arc;
use std::time::Duration;

use agent_gateway::backend::{Backend, BackendError, KmaEndpoint};
use raft_storage::ApplyResponse;
use statemachine::{Actor, ClusterId, Command, RequestId, State};

use crate::login::Logins;
use crate::pki::Identity;
use crate::transport::LeaderContact;
use crate::view::Local;
use crate::write::{Proposal, Proposer};

/// How long an agent read waits for this KMA to apply the index the drive sent: well inside a
/// drive's request timeout, so that a KMA that lags (or is cut off) sends the drive elsewhere
/// with a retryable answer instead of holding it.
pub const AGENT_READ_WAIT: Duration = Duration::from_secs(2);

/// This KMA as the gateway sees it.
#[derive(Clone)]
pub struct GatewayBackend {
    local: Local,
    proposer: Proposer,
    logins: Arc<Logins>,
    /// An HTTPS client authenticated as this KMA (other members' status).
    peers: reqwest::Client,
    /// Cached each second by `run_lock_cache`: the gateway asks on every request.
    master_key: Arc<std::sync::RwLock<Option<security_core::MasterKey>>>,
    cluster_id: Arc<std::sync::RwLock<Option<ClusterId>>>,
    /// The members' service listeners as their own status reports them (SPEC C3).
    endpoints: Arc<std::sync::RwLock<Vec<KmaEndpoint>>>,
    /// The last contact with a leader (a follower's measure of being cut off).
    contact: LeaderContact,
}

fn unpoison<T>(result: Result<T, std::sync::PoisonError<T>>) -> T {
    result.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GatewayBackend {
    pub fn new(
        local: Local,
        proposer: Proposer,
        logins: Arc<Logins>,
        peers: reqwest::Client,
        contact: LeaderContact,
    ) -> GatewayBackend {
        GatewayBackend {
            local,
            proposer,
            logins,
            peers,
            master_key: Arc::default(),
            cluster_id: Arc::default(),
            endpoints: Arc::default(),
            contact,
        }
    }

    /// How long this KMA has been cut off from a majority, in milliseconds: a leader, since a
    /// quorum of voters last acknowledged it (never, alone); any other KMA, since it last
    /// heard from a leader.
    fn cut_off_ms(&self) -> u64 {
        // Read under the borrow: this runs every 200 ms, and the metrics hold the membership.
        let leading = {
            let metrics = self.local.raft.metrics();
            let metrics = metrics.borrow();
            let voters = metrics.membership_config.membership().voter_ids().count();
            (metrics.current_leader == Some(self.local.node_id())).then(|| {
                if voters <= 1 {
                    0
                } else {
                    metrics.millis_since_quorum_ack.unwrap_or(0)
                }
            })
        };
        leading.unwrap_or_else(|| self.contact.silent_ms())
    }

    /// Asks every member for its status every two seconds; one that does not answer is listed
    /// as unhealthy with the address it last reported.
    pub async fn run_discovery_cache(self) {
        loop {
            let metrics = self.local.raft.metrics().borrow().clone();
            let members: Vec<(u64, String)> = metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect();
            let mut fresh = Vec::new();
            for (node_id, address) in members {
                let status = if node_id == self.local.node_id() {
                    Some(self.local.status().await)
                } else {
                    self.fetch_status(&address).await
                };
                let known = unpoison(self.endpoints.read())
                    .iter()
                    .find(|e| e.name.ends_with(&format!("#{node_id}")))
                    .cloned();
                match (status, known) {
                    (Some(status), _) => fresh.push(KmaEndpoint {
                        name: format!("{}#{node_id}", status.name),
                        site: status.site,
                        service_address: status.service_address,
                        healthy: !status.locked,
                    }),
                    (None, Some(known)) => fresh.push(KmaEndpoint { healthy: false, ..known }),
                    (None, None) => {}
                }
            }
            *unpoison(self.endpoints.write()) = fresh;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn fetch_status(&self, address: &str) -> Option<crate::wire::NodeStatus> {
        let response = self
            .peers
            .get(format!("https://{address}/v1/status"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Keeps the cached lock state current: on every applied entry and every 200 ms. A KMA cut
    /// off from the majority for longer than `kma.toml`'s `serve_cut_off_ms` serves no key
    /// material, as if locked (issue #16 point 10): its state may miss a revocation made
    /// meanwhile, and drives go to a KMA that has it.
    pub async fn run_lock_cache(self) {
        let mut applied = self.local.state.subscribe_applied();
        let mut was_cut_off = false;
        loop {
            let cut_off_ms = self.cut_off_ms();
            let cut_off = cut_off_ms > self.local.config.serve_cut_off_ms;
            if cut_off != was_cut_off {
                match cut_off {
                    true => tracing::warn!(
                        cut_off_ms,
                        "cut off from the cluster's majority for too long: no key material is \
                         served until it is reached again"
                    ),
                    false => tracing::info!("the majority is reached again: serving keys"),
                }
                was_cut_off = cut_off;
            }
            let master = match cut_off {
                true => None,
                false => self.local.serving_master_key().await,
            };
            let cluster_id = self.local.state.read().await.cluster_id();
            *unpoison(self.master_key.write()) = master;
            *unpoison(self.cluster_id.write()) = cluster_id;
            tokio::select! {
                _ = applied.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

impl Backend for GatewayBackend {
    async fn read<R: Send>(
        &self,
        min_index: u64,
        read: impl FnOnce(&State) -> R + Send,
    ) -> Result<R, BackendError> {
        let wait_max = AGENT_READ_WAIT;
        self.local.read_barrier_within(min_index, false, wait_max).await.map_err(|error| {
            BackendError { retryable: true, message: format!("{error} (try another KMA)") }
        })?;
        let state = self.local.state.read().await;
        Ok(read(&state))
    }

    /// As current as a write. The leader confirms with a quorum that it still leads (a round of
    /// heartbeats) and reads at its commit index. A follower cannot confirm by itself, and a
    /// wrong "not found" would make a library write a tape under a second key: it commits an
    /// empty read count through the leader instead, which the log orders after every command
    /// committed before it, and reads once that entry is applied here. That costs a KMIP client
    /// on a follower one Raft entry per read that finds nothing, no more than a Create costs it.
    async fn read_linearizable<R: Send>(
        &self,
        read: impl FnOnce(&State) -> R + Send,
    ) -> Result<R, BackendError> {
        if self.local.read_barrier_within(0, true, AGENT_READ_WAIT).await.is_err() {
            let barrier = Proposal {
                actor: Actor::System,
                origin_node_id: self.local.node_id(),
                request_id: None,
                command: Command::RecordKmipReads { reads: Vec::new() },
            };
            let applied = self.proposer.propose(barrier).await.map_err(|error| BackendError {
                retryable: error.is_retryable(),
                message: format!("this KMA could not confirm that it holds every key: {error}"),
            })?;
            self.local.read_barrier_within(applied.index, false, AGENT_READ_WAIT).await.map_err(
                |error| BackendError {
                    retryable: true,
                    message: format!("{error} (try another KMA)"),
                },
            )?;
        }
        let state = self.local.state.read().await;
        Ok(read(&state))
    }

    async fn propose(
        &self,
        agent: Option<&str>,
        request_id: Option<RequestId>,
        command: Command,
    ) -> Result<ApplyResponse, BackendError> {
        let actor = agent.map_or(Actor::System, |agent| Actor::Agent(agent.into()));
        let proposal =
            Proposal { actor, origin_node_id: self.local.node_id(), request_id, command };
        self.proposer.propose(proposal).await.map_err(|error| BackendError {
            retryable: error.is_retryable(),
            message: error.to_string(),
        })
    }

    fn master_key(&self) -> Option<security_core::MasterKey> {
        unpoison(self.master_key.read()).clone()
    }

    fn cluster_id(&self) -> Option<ClusterId> {
        *unpoison(self.cluster_id.read())
    }

    fn sign_agent_certificate(
        &self,
        agent: &str,
        csr_pem: &str,
    ) -> Result<(String, String), BackendError> {
        // A locked KMA, or one still opening the CA key, cannot sign now; another KMA can.
        let fail = |e: crate::pki::PkiError| BackendError {
            retryable: matches!(
                e,
                crate::pki::PkiError::Locked | crate::pki::PkiError::CaKeyNotYetHere
            ),
            message: e.to_string(),
        };
        let ca = self.local.certificate_authority().map_err(fail)?;
        let cert = ca.sign_request(csr_pem, &Identity::Agent(agent.into()), &[]).map_err(fail)?;
        Ok((cert, ca.cert_pem.clone()))
    }

    async fn discovery(&self) -> Vec<KmaEndpoint> {
        unpoison(self.endpoints.read())
            .iter()
            .map(|e| KmaEndpoint {
                name: e.name.split('#').next().unwrap_or_default().to_string(),
                ..e.clone()
            })
            .collect()
    }

    fn decoy_secret(&self) -> [u8; 32] {
        self.logins.decoy_secret()
    }
}
