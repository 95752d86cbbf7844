//! This KMA as the management API's node (`admin_api::backend::AdminNode`): read barriers,
//! proposals on behalf of a user through the same write path as `/v1/propose`, and the view of
//! the other KMAs that `GET /v1/cluster/status` shows (SPEC C8).

use std::collections::BTreeMap;
use std::time::Duration;

use admin_api::api::{ClusterStatus, ErrorBody, ErrorCode, KmaHealth};
use admin_api::backend::{AdminNode, BoxFuture, WrapResult};
use openraft::ServerState;
use raft_storage::ApplyResponse;
use security_core::key_wrap::{check_value, wrap_key, KeyMaterial};
use security_core::transfer::{TransferDone, TransferWork};
use statemachine::audit::{AuditChain, ChainedAuditEvent};
use statemachine::{Actor, Command, KeyId, State};
use tokio::sync::RwLockReadGuard;
use zeroize::Zeroizing;

use crate::view::Local;
use crate::wire::NodeStatus;
use crate::write::{Proposal, ProposeError, Proposer};

/// What the management API needs of its KMA.
pub struct NodeAdmin {
    pub local: Local,
    pub proposer: Proposer,
    /// An HTTPS client authenticated as this KMA (other members' status).
    pub peers: reqwest::Client,
}

fn propose_error(error: &ProposeError) -> ErrorBody {
    let code = match error {
        ProposeError::Unauthorised(_) => ErrorCode::Forbidden,
        _ => ErrorCode::Unavailable,
    };
    ErrorBody::new(code, error.to_string()).with_retryable(error.is_retryable())
}

fn audit_log_error(error: impl std::fmt::Display) -> ErrorBody {
    let message = format!("reading this KMA's audit log failed: {error}");
    ErrorBody::new(ErrorCode::Internal, message)
        .with_help("check this KMA's log, or ask another KMA")
}

impl NodeAdmin {
    async fn propose_as(
        &self,
        user: String,
        command: Command,
        passphrase: Option<Zeroizing<String>>,
    ) -> Result<ApplyResponse, ErrorBody> {
        let command =
            crate::write::intake::user_command(&self.local.state, &user, command, passphrase)
                .await
                .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e.to_string()))?;
        let proposal = Proposal {
            actor: Actor::User(user),
            origin_node_id: self.local.node_id(),
            request_id: None,
            command,
        };
        self.proposer.propose(proposal).await.map_err(|e| propose_error(&e))
    }

    /// Asks each member for its status (1 s each, all at once); `None` for those that did not
    /// answer.
    async fn member_statuses(&self) -> BTreeMap<u64, Option<NodeStatus>> {
        let members: Vec<(u64, String)> = {
            let metrics = self.local.raft.metrics();
            let metrics = metrics.borrow();
            let nodes = metrics.membership_config.membership().nodes();
            nodes.map(|(id, node)| (*id, node.addr.clone())).collect()
        };
        let mut asks = tokio::task::JoinSet::new();
        for (node_id, address) in members.into_iter().filter(|(id, _)| *id != self.local.node_id())
        {
            let peers = self.peers.clone();
            asks.spawn(async move {
                let url = format!("https://{address}/v1/status");
                let response = peers.get(url).timeout(Duration::from_secs(1)).send().await;
                let status = match response {
                    Ok(response) => response.json::<NodeStatus>().await.ok(),
                    Err(_) => None,
                };
                (node_id, status)
            });
        }
        let mut statuses = BTreeMap::new();
        statuses.insert(self.local.node_id(), Some(self.local.status().await));
        while let Some(answer) = asks.join_next().await {
            if let Ok((node_id, status)) = answer {
                statuses.insert(node_id, status);
            }
        }
        statuses
    }

    async fn status(&self) -> ClusterStatus {
        let statuses = self.member_statuses().await;
        let metrics = self.local.raft.metrics().borrow().clone();
        let is_leader = metrics.state == ServerState::Leader;
        let last_log = metrics.last_log_index.unwrap_or(0);
        let addresses: BTreeMap<u64, String> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let commit_index =
            crate::listen::health::committed_index(&self.local.raft).await.unwrap_or(0);
        let state = self.local.state.read().await;
        let leader_name = metrics
            .current_leader
            .and_then(|leader| state.kma_by_node_id(leader).map(|k| k.name.clone()));
        let kmas = state
            .meta()
            .kmas
            .values()
            .map(|record| {
                let status = statuses.get(&record.node_id).cloned().flatten();
                let matched = metrics.replication.as_ref().and_then(|replication| {
                    replication.get(&record.node_id).map(|m| m.map_or(0, |log_id| log_id.index))
                });
                KmaHealth {
                    name: record.name.clone(),
                    node_id: record.node_id,
                    site: record.site.clone(),
                    status: admin_api::view::kma_status(record.status).into(),
                    role: status.as_ref().map_or_else(|| "unknown".into(), |s| s.role.clone()),
                    reachable: status.is_some(),
                    locked: status.as_ref().map_or(record.locked, |s| s.locked),
                    autonomous_unlock: record.autonomous_unlock,
                    software_version: record.software_version,
                    replication_lag: if is_leader {
                        matched.map(|index| last_log.saturating_sub(index))
                    } else {
                        None
                    },
                    last_applied_index: status.as_ref().map(|s| s.applied_index),
                    management_address: addresses.get(&record.node_id).cloned(),
                }
            })
            .collect();
        ClusterStatus {
            cluster_id: state.cluster_id().map(|id| id.to_string()),
            answered_by: self.local.config.name.clone(),
            leader: leader_name,
            term: metrics.current_term,
            commit_index,
            kmas,
        }
    }
}

impl AdminNode for NodeAdmin {
    fn barrier(&self, min_index: u64, linearizable: bool) -> BoxFuture<'_, Result<(), ErrorBody>> {
        Box::pin(async move {
            self.local.read_barrier(min_index, linearizable).await.map_err(|e| {
                ErrorBody::new(ErrorCode::Unavailable, e.to_string())
                    .with_retryable(true)
                    .with_help("retry, or ask another KMA")
            })
        })
    }

    fn state(&self) -> BoxFuture<'_, RwLockReadGuard<'_, State>> {
        Box::pin(self.local.state.read())
    }

    fn audit_events(
        &self,
        from_index: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ChainedAuditEvent>, ErrorBody>> {
        let state = self.local.state.clone();
        Box::pin(async move {
            // A RocksDB scan: off the async workers.
            let read = tokio::task::spawn_blocking(move || state.audit_events(from_index, limit));
            read.await.map_err(audit_log_error)?.map_err(audit_log_error)
        })
    }

    fn audit_anchors(&self) -> BoxFuture<'_, Result<Vec<AuditChain>, ErrorBody>> {
        let state = self.local.state.clone();
        Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || state.audit_anchors());
            read.await.map_err(audit_log_error)?.map_err(audit_log_error)
        })
    }

    fn propose(
        &self,
        user: String,
        command: Command,
        passphrase: Option<Zeroizing<String>>,
    ) -> BoxFuture<'_, Result<ApplyResponse, ErrorBody>> {
        Box::pin(self.propose_as(user, command, passphrase))
    }

    fn cluster_status(&self) -> BoxFuture<'_, ClusterStatus> {
        Box::pin(self.status())
    }

    fn now_ms(&self) -> u64 {
        crate::transport::wall_clock_ms()
    }

    fn kma_name(&self) -> String {
        self.local.config.name.clone()
    }

    fn wrap_keys<'a>(&'a self, keys: &'a [(KeyId, &'a [u8; 32])]) -> BoxFuture<'a, WrapResult> {
        Box::pin(async move {
            let locked = || {
                ErrorBody::new(ErrorCode::KmaLocked, "this KMA is locked: it wraps no keys")
                    .with_help("unlock it through the quorum, or ask an unlocked KMA")
            };
            let master = self.local.serving_master_key().await.ok_or_else(locked)?;
            let cluster_id = self.local.state.read().await.cluster_id().ok_or_else(|| {
                ErrorBody::new(ErrorCode::NotInitialised, "the cluster is not initialised")
            })?;
            Ok(keys
                .iter()
                .map(|(id, value)| {
                    let material = KeyMaterial::from_bytes(value);
                    (wrap_key(&master, cluster_id, id, &material), check_value(&material))
                })
                .collect())
        })
    }

    fn transfer(&self, work: TransferWork) -> BoxFuture<'_, Result<TransferDone, ErrorBody>> {
        Box::pin(async move {
            let master = self.local.serving_master_key().await.ok_or_else(|| {
                ErrorBody::new(
                    ErrorCode::KmaLocked,
                    "this KMA is locked: it opens no transfer file",
                )
                .with_help("unlock it through the quorum, or ask an unlocked KMA")
            })?;
            let (cluster_id, pair) = {
                let state = self.local.state.read().await;
                (state.cluster_id(), state.meta().transfer_key_pair.clone())
            };
            // Unwrapping and sealing thousands of keys: off the async workers.
            let work = move || admin_api::transfer::perform(&master, cluster_id, pair, work);
            tokio::task::spawn_blocking(work).await.map_err(|e| {
                ErrorBody::new(ErrorCode::Internal, format!("the transfer work failed: {e}"))
            })?
        })
    }

    fn propose_system(&self, command: Command) -> BoxFuture<'_, Result<ApplyResponse, ErrorBody>> {
        Box::pin(async move {
            let proposal = self.proposer.system(command);
            self.proposer.propose(proposal).await.map_err(|e| propose_error(&e))
        })
    }

    fn sign_agent_certificate(
        &self,
        agent: &str,
        csr_pem: &str,
    ) -> Result<(String, String), ErrorBody> {
        let ca = self.local.certificate_authority().map_err(|error| {
            ErrorBody::new(ErrorCode::KmaLocked, error.to_string())
                .with_retryable(true)
                .with_help("unlock this KMA through the quorum, or ask an unlocked KMA")
        })?;
        let identity = crate::pki::Identity::Agent(agent.into());
        let certificate = ca.sign_request(csr_pem, &identity, &[]).map_err(|error| {
            ErrorBody::new(ErrorCode::BadRequest, format!("the certificate request: {error}"))
                .with_help("send a PEM PKCS#10 request (openssl req -new -key KEY -out FILE)")
        })?;
        Ok((certificate, ca.cert_pem.clone()))
    }
}
