//! This KMA as its listeners and duties read it: the Raft instance, the applied state, the
//! vault, the configuration. Reads only: writing goes through `write::Proposer`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Raft, ServerState};
use raft_storage::{KmaRaft, StateHandle};
use sha2::{Digest, Sha256};

use crate::config::{DataDirLayout, NodeConfig};
use crate::kma::NodeError;
use crate::pki::{self, CertificateAuthority};
use crate::vault::Vault;
use crate::wire::{NodeStatus, StateDigest};

/// A cheap, cloneable view of this KMA.
#[derive(Clone)]
pub struct Local {
    pub config: Arc<NodeConfig>,
    pub layout: DataDirLayout,
    pub raft: Raft<KmaRaft>,
    pub state: StateHandle,
    /// The master key while unlocked (SPEC C6).
    pub vault: Arc<Vault>,
    /// What this KMA reports of itself (software, formats read): fixed for the process.
    pub version: statemachine::KmaVersion,
    /// The certificate this KMA presents and the CAs it trusts, on every listener and link
    /// (replaced by a CA rotation, `ca_rotation`).
    pub tls: Arc<crate::transport::live_tls::LiveTls>,
}

impl Local {
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    /// A voter or learner of the current membership.
    pub fn is_member(&self, node_id: u64) -> bool {
        crate::transport::members::is_member(&self.raft, node_id)
    }

    /// The cluster CA with its key (every KMA holds it: see `wire::JoinGranted`).
    /// The cluster CA, to sign with: only while this KMA is unlocked (a locked KMA signs
    /// nothing, issue #16 point 1), with the key unwrapped from the replicated state, or, until
    /// `duties::run_ca_key_custody` has wrapped it into the state and erased it, the key file
    /// `kma init` wrote.
    pub fn certificate_authority(&self) -> Result<CertificateAuthority, pki::PkiError> {
        if !self.vault.is_unlocked() {
            return Err(pki::PkiError::Locked);
        }
        let tls_dir = self.layout.tls_dir();
        let cert_pem = pki::read(&tls_dir.join(pki::CA_FILE))?;
        // What it issues names the epoch of this KMA's own certificate (SPEC B7).
        let epoch = self.tls.presented_epoch();
        if let Some(key_pem) = self.vault.ca_key_pem(&pki::fingerprint(&cert_pem)?) {
            return CertificateAuthority::from_pem(cert_pem, &key_pem, Path::new("the state"))
                .map(|ca| ca.in_epoch(epoch));
        }
        match CertificateAuthority::load(&tls_dir) {
            Err(pki::PkiError::NoCaKey) => Err(pki::PkiError::CaKeyNotYetHere),
            other => other.map(|ca| ca.in_epoch(epoch)),
        }
    }

    /// Locked: no master key in memory, or an administrator locked this KMA (SPEC C6).
    pub async fn is_locked(&self) -> bool {
        let locked_by_state = self
            .state
            .read()
            .await
            .meta()
            .kmas
            .get(&self.config.name)
            .is_none_or(|entry| entry.locked);
        locked_by_state || !self.vault.is_unlocked()
    }

    /// The master key if this KMA may serve key material now.
    pub async fn serving_master_key(&self) -> Option<security_core::MasterKey> {
        if self.is_locked().await {
            return None;
        }
        self.vault.master_key()
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
        let (cluster_id, pool, cluster_log_format, ca_rotation, core_security_backup_due) = {
            let state = self.state.read().await;
            let cluster_id = state.cluster_id().map(|id| id.to_string());
            let rotation = crate::ca_rotation::describe(&state);
            let due = state.cluster_id().and(state.core_security_backup_due());
            (cluster_id, state.pool_size(), state.cluster_format_version(), rotation, due)
        };
        let (key_pool_ready, key_pool_generated) = pool;
        let version = self.version;
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
            software_version: version.software.to_string(),
            log_format: version.formats.log,
            cluster_log_format,
            ca_key_held: self.certificate_authority().is_ok(),
            sealed_key_problem: self.vault.sealed_problem(),
            trusted_ca_sha256: self.tls.trusted().iter().map(hex::encode).collect(),
            ca_rotation,
            core_security_backup_due,
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
}
