//! This KMA as the management API's node (`admin_api::backend::AdminNode`): read barriers,
//! proposals on behalf of a user through the same write path as `/v1/propose`, and the view of
//! the other KMAs that `GET /v1/cluster/status` shows (SPEC C8).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use admin_api::api::{ApiError, ClusterStatus, KmaHealth};
use admin_api::backend::{AdminNode, BoxFuture};
use openraft::ServerState;
use raft_storage::ApplyResponse;
use statemachine::{Actor, Command};
use zeroize::Zeroizing;

use crate::kma::{Kma, Proposal};
use crate::wire::{NodeStatus, ProposeError};

pub struct NodeAdmin {
    pub kma: Arc<Kma>,
}

fn api_error(code: &str, message: String, retryable: bool) -> ApiError {
    ApiError { code: code.into(), message, retryable, reject_code: None }
}

fn propose_error(error: &ProposeError) -> ApiError {
    match error {
        ProposeError::Unauthorised(_) => api_error("forbidden", error.to_string(), false),
        ProposeError::Raft(_) => api_error("unavailable", error.to_string(), false),
        _ => api_error("unavailable", error.to_string(), true),
    }
}

impl NodeAdmin {
    async fn propose_as(
        &self,
        user: String,
        command: Command,
        passphrase: Option<Zeroizing<String>>,
    ) -> Result<ApplyResponse, ApiError> {
        let len_min = self.kma.state.read().await.meta().security.passphrase_len_min;
        let passphrase = passphrase.as_ref().map(|p| p.as_str());
        let command = crate::server::user_command(command, passphrase, len_min)
            .map_err(|e| api_error("bad-request", e.to_string(), false))?;
        let proposal = Proposal {
            actor: Actor::User(user),
            origin_node_id: self.kma.node_id(),
            request_id: None,
            command,
        };
        self.kma.propose(proposal).await.map_err(|e| propose_error(&e))
    }

    /// Asks each member for its status (1 s each, all at once); `None` for those that did not
    /// answer.
    async fn member_statuses(&self) -> BTreeMap<u64, Option<NodeStatus>> {
        let members: Vec<(u64, String)> = {
            let metrics = self.kma.raft.metrics();
            let metrics = metrics.borrow();
            let nodes = metrics.membership_config.membership().nodes();
            nodes.map(|(id, node)| (*id, node.addr.clone())).collect()
        };
        let mut asks = tokio::task::JoinSet::new();
        for (node_id, address) in members.into_iter().filter(|(id, _)| *id != self.kma.node_id()) {
            let peers = self.kma.peers.clone();
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
        statuses.insert(self.kma.node_id(), Some(self.kma.status().await));
        while let Some(answer) = asks.join_next().await {
            if let Ok((node_id, status)) = answer {
                statuses.insert(node_id, status);
            }
        }
        statuses
    }

    async fn status(&self) -> ClusterStatus {
        let statuses = self.member_statuses().await;
        let metrics = self.kma.raft.metrics().borrow().clone();
        let is_leader = metrics.state == ServerState::Leader;
        let last_log = metrics.last_log_index.unwrap_or(0);
        let addresses: BTreeMap<u64, String> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let commit_index = crate::health::committed_index(&self.kma.raft).await.unwrap_or(0);
        let state = self.kma.state.read().await;
        let leader_name = metrics.current_leader.and_then(|leader| {
            state.meta().kmas.values().find(|kma| kma.node_id == leader).map(|k| k.name.clone())
        });
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
            answered_by: self.kma.config.name.clone(),
            leader: leader_name,
            term: metrics.current_term,
            commit_index,
            kmas,
        }
    }
}

impl AdminNode for NodeAdmin {
    fn barrier(&self, min_index: u64, linearizable: bool) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            self.kma.read_barrier(min_index, linearizable).await.map_err(|e| {
                api_error("unavailable", format!("{e}; help: retry, or ask another KMA"), true)
            })
        })
    }

    fn propose(
        &self,
        user: String,
        command: Command,
        passphrase: Option<Zeroizing<String>>,
    ) -> BoxFuture<'_, Result<ApplyResponse, ApiError>> {
        Box::pin(self.propose_as(user, command, passphrase))
    }

    fn cluster_status(&self) -> BoxFuture<'_, ClusterStatus> {
        Box::pin(self.status())
    }

    fn now_ms(&self) -> u64 {
        crate::kma::wall_clock_ms()
    }
}
