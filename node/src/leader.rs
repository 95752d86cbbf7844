//! The security duties of a running KMA: keeping the vault in step with the replicated lock
//! state, sealing or unsealing for autonomous unlock, refilling the key pool with wrapped keys,
//! and recording KMAs that finished joining.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use statemachine::cluster::KmaStatus;
use statemachine::Command;

use crate::kma::{Kma, Proposal};
use crate::pki::{self, CertificateAuthority};
use crate::wire::ApproveRequest;

/// Pool keys made and proposed in one command (the state machine takes at most 1,024).
const POOL_BATCH: usize = 1_024;
/// Commands per leader tick: a drained pool of 8,192 keys is back within one tick.
const POOL_BATCHES_PER_TICK: usize = 8;

/// What one refill step did.
enum Refill {
    Added,
    /// At the high water mark, or at or above the low one with no refill under way.
    Full,
    /// Locked, not initialised, or the proposal failed: try again at the next tick.
    NotNow,
}

/// What the replicated state says about this KMA.
#[derive(Clone, Copy, PartialEq, Eq)]
struct MyEntry {
    locked: bool,
    autonomous_unlock: bool,
    cluster_id: statemachine::ClusterId,
}

impl Kma {
    /// The cluster CA with its key (every KMA holds it: see `wire::JoinGranted`).
    pub fn certificate_authority(&self) -> Result<CertificateAuthority, pki::PkiError> {
        CertificateAuthority::load(&self.layout.tls_dir())
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

    async fn my_entry(&self) -> Option<MyEntry> {
        let state = self.state.read().await;
        let cluster_id = state.cluster_id()?;
        let entry = state.meta().kmas.get(&self.config.name)?;
        Some(MyEntry {
            locked: entry.locked,
            autonomous_unlock: entry.autonomous_unlock,
            cluster_id,
        })
    }

    /// Keeps the vault in step with the state: when this KMA's entry changes, while a standby
    /// key waits, and every second. Most applied entries touch other records; skipping them
    /// spares the write path the file checks below (issue #3's one-writer latency).
    pub async fn run_security_loop(self: Arc<Self>) {
        let mut applied = self.state.subscribe_applied();
        let mut reconciled: Option<MyEntry> = None;
        loop {
            let ticked = tokio::select! {
                _ = applied.changed() => false,
                () = tokio::time::sleep(Duration::from_secs(1)) => true,
            };
            let me = self.my_entry().await;
            if !ticked && me == reconciled && !self.vault.has_standby() {
                continue;
            }
            reconciled = me;
            let Some(me) = me else { continue };
            if let Err(error) = self.reconcile_vault(me) {
                tracing::error!(%error, "vault");
            }
        }
    }

    fn reconcile_vault(&self, me: MyEntry) -> Result<(), crate::vault::VaultError> {
        if me.locked {
            if self.vault.is_unlocked() {
                // Locked by an administrator: the key leaves memory now.
                self.vault.forget();
                tracing::warn!("locked by an administrator: master key dropped from memory");
            }
        } else if self.vault.activate_standby() {
            tracing::info!("unlocked with the master key sealed on this KMA");
        }
        let first_boot = self.layout.root.join(crate::setup::QUICKSTART_FILE).exists();
        if me.autonomous_unlock && !self.vault.sealed_file_exists() {
            if let Some(master) = self.vault.master_key() {
                self.vault.seal(&master, me.cluster_id)?;
                tracing::info!("autonomous unlock: master key sealed in the data dir");
            }
        } else if !me.autonomous_unlock && self.vault.sealed_file_exists() && !first_boot {
            self.vault.remove_sealed()?;
            tracing::info!("autonomous unlock is off: sealed master key removed");
        }
        Ok(())
    }

    /// Sends an approval to the KMA whose unlock it is; that KMA answers for itself.
    pub async fn forward_approval(&self, target: u64, request: &ApproveRequest) -> Response {
        let Some(address) = self.address_of_node(target) else {
            let message = format!("KMA {target} is not a member: its unlock cannot be approved");
            return (StatusCode::NOT_FOUND, message).into_response();
        };
        let sent = self
            .peers
            .post(format!("https://{address}/v1/quorum/approve"))
            .json(request)
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        match sent {
            Ok(answer) => {
                let status = StatusCode::from_u16(answer.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let content_type = answer
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                let body = answer.bytes().await.unwrap_or_default();
                (status, [(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
            }
            Err(error) => {
                let message =
                    format!("the KMA being unlocked ({address}) cannot be reached: {error}");
                (StatusCode::BAD_GATEWAY, message).into_response()
            }
        }
    }

    /// On the leader: keeps the pool between its water marks with keys made and wrapped here
    /// (SPEC O5); the clear values never leave this process. A refill starts when the pool is
    /// below the low water mark and goes on, tick after tick, until it reaches the high one, so
    /// that a drained pool is refilled in long runs rather than a little at every tick.
    pub(crate) async fn refill_key_pool(&self) {
        let mut refilling = self.pool_refilling.load(Ordering::Acquire);
        for _ in 0..POOL_BATCHES_PER_TICK {
            match self.refill_key_pool_once(refilling).await {
                Refill::Added => refilling = true,
                Refill::Full => {
                    refilling = false;
                    break;
                }
                // Kept as it is: the next tick tries again.
                Refill::NotNow => break,
            }
        }
        self.pool_refilling.store(refilling, Ordering::Release);
    }

    /// One command's worth of pool keys, when the pool needs them.
    async fn refill_key_pool_once(&self, refilling: bool) -> Refill {
        let Some(master) = self.serving_master_key().await else { return Refill::NotNow };
        let (cluster_id, missing) = {
            let state = self.state.read().await;
            let Some(cluster_id) = state.cluster_id() else { return Refill::NotNow };
            let (ready, generated) = state.pool_size();
            let limits = state.meta().pool_limits;
            let size = ready + generated;
            if size >= limits.high_water as usize
                || (!refilling && size >= limits.low_water as usize)
            {
                return Refill::Full;
            }
            (cluster_id, limits.high_water as usize - size)
        };
        let count = missing.min(POOL_BATCH);
        let made = tokio::task::spawn_blocking(move || {
            security_core::new_pool_keys(&master, cluster_id, count)
        })
        .await;
        let Ok(keys) = made else { return Refill::NotNow };
        let proposal = Proposal::system(self, Command::GeneratePoolKeys { keys });
        match self.propose(proposal).await {
            Ok(applied) if applied.result.is_ok() => {
                tracing::debug!(index = applied.index, count, "pool keys added");
                Refill::Added
            }
            Ok(applied) => {
                tracing::warn!(result = ?applied.result, "pool refill refused");
                Refill::NotNow
            }
            Err(error) => {
                tracing::warn!(%error, "pool refill not proposed");
                Refill::NotNow
            }
        }
    }

    /// On the leader: a KMA whose join the quorum approved and that now votes is a member.
    pub(crate) async fn record_joined_kmas(&self) {
        let voters: Vec<u64> =
            self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        let joined: Vec<String> = {
            let state = self.state.read().await;
            state
                .meta()
                .kmas
                .values()
                .filter(|k| k.status == KmaStatus::JoinApproved && voters.contains(&k.node_id))
                .map(|k| k.name.clone())
                .collect()
        };
        for name in joined {
            let proposal = Proposal::system(self, Command::KmaJoined { name: name.clone() });
            match self.propose(proposal).await {
                Ok(_) => tracing::info!(kma = %name, "KMA joined: member, locked until unlocked"),
                Err(error) => tracing::warn!(%error, "KmaJoined not proposed"),
            }
        }
    }
}
