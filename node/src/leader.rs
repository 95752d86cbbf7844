//! The leader's duties, twice a second while this KMA leads: propose `Pulse` when a
//! time-driven transition is due (STYLE 4), take deleted KMAs out of the membership, promote
//! learners that caught up, record KMAs that finished joining, keep the key pool filled
//! with keys wrapped here (SPEC O5), and make the cluster's transfer key pair once (SPEC T1).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use statemachine::cluster::KmaStatus;
use statemachine::Command;

use crate::kma::Kma;
use crate::transport::wall_clock_ms;
use crate::wire::MembershipRequest;

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

/// The leader's duties, twice a second: propose `Pulse` whenever a time-driven transition
/// is due (STYLE 4), and promote learners that have caught up.
pub async fn run(kma: Arc<Kma>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        if kma.local.raft.metrics().borrow().current_leader != Some(kma.node_id()) {
            continue;
        }
        kma.remove_deleted_kmas().await;
        kma.promote_caught_up_learners().await;
        kma.record_joined_kmas().await;
        kma.refill_key_pool().await;
        kma.make_transfer_key_pair().await;
        let due = kma
            .local
            .state
            .read()
            .await
            .next_transition_ms()
            .is_some_and(|at| at <= wall_clock_ms());
        if due {
            let result = kma.proposer.propose(kma.proposer.system(Command::Pulse)).await;
            if let Err(error) = result {
                tracing::warn!(%error, "pulse not proposed");
            }
        }
    }
}

impl Kma {
    /// On the leader, once per cluster: makes the transfer key pair (SPEC T1; issue 18, its
    /// first point) and records it with its private half wrapped under the master key. Only
    /// at log format 3, where a recorded pair is never replaced.
    async fn make_transfer_key_pair(&self) {
        let cluster_id = {
            let state = self.local.state.read().await;
            if state.meta().transfer_key_pair.is_some()
                || !state.format_rules_apply(statemachine::format::LOG_FORMAT_3)
            {
                return;
            }
            let Some(cluster_id) = state.cluster_id() else { return };
            cluster_id
        };
        let Some(master) = self.local.serving_master_key().await else { return };
        let (public, wrapped) = security_core::transfer::new_key_pair(&master, cluster_id);
        let command = Command::SetTransferKeyPair {
            public_key: public.to_bytes().to_vec(),
            wrapped_private_key: wrapped,
        };
        match self.proposer.propose(self.proposer.system(command)).await {
            Ok(applied) if applied.result.is_ok() => tracing::info!(
                fingerprint = %public.fingerprint_text(),
                "this cluster's transfer key pair was made"
            ),
            Ok(applied) => tracing::warn!(result = ?applied.result, "transfer key pair refused"),
            Err(error) => tracing::warn!(%error, "transfer key pair not recorded yet"),
        }
    }

    /// On the leader: takes out of the membership every voter or learner the cluster deleted
    /// (SPEC C5; issue #16 point 3), so that a deleted KMA never votes again. Run from the
    /// leader's loop, so a removal interrupted by a leader change is finished by the next.
    async fn remove_deleted_kmas(&self) {
        let members: Vec<u64> = crate::transport::members::all(&self.local.raft)
            .into_iter()
            .map(|(node_id, _address)| node_id)
            .collect();
        let deleted: Vec<u64> = {
            let state = self.local.state.read().await;
            members.into_iter().filter(|id| state.kma_deleted(*id)).collect()
        };
        for node_id in deleted {
            match self.membership.change_membership(MembershipRequest::Remove { node_id }).await {
                Ok(index) => {
                    tracing::warn!(node_id, index, "deleted KMA removed from the membership")
                }
                Err(error) => tracing::warn!(node_id, %error, "deleted KMA not removed yet"),
            }
        }
    }

    /// On the leader: promotes every learner whose log is within 100 entries of the leader's.
    /// Run from the leader's loop, so a promotion survives the restart of the KMA that admitted
    /// the learner.
    async fn promote_caught_up_learners(&self) {
        let metrics = self.local.raft.metrics().borrow().clone();
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
            match self.membership.change_membership(MembershipRequest::Promote { node_id }).await {
                Ok(_) => tracing::info!(node_id, "promoted a caught-up KMA to voter"),
                Err(error) => tracing::warn!(node_id, %error, "promotion not possible yet"),
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
        let Some(master) = self.local.serving_master_key().await else { return Refill::NotNow };
        // How many keys, and whether a refill goes on, is the state's rule (SPEC O5).
        let (cluster_id, count) = {
            let state = self.local.state.read().await;
            let Some(cluster_id) = state.cluster_id() else { return Refill::NotNow };
            (cluster_id, state.pool_keys_wanted(refilling))
        };
        if count == 0 {
            return Refill::Full;
        }
        let made = tokio::task::spawn_blocking(move || {
            security_core::new_pool_keys(&master, cluster_id, count)
        })
        .await;
        let Ok(keys) = made else { return Refill::NotNow };
        let proposal = self.proposer.system(Command::GeneratePoolKeys { keys });
        match self.proposer.propose(proposal).await {
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
            self.local.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        let joined: Vec<String> = {
            let state = self.local.state.read().await;
            state
                .meta()
                .kmas
                .values()
                .filter(|k| k.status == KmaStatus::JoinApproved && voters.contains(&k.node_id))
                .map(|k| k.name.clone())
                .collect()
        };
        for name in joined {
            let proposal = self.proposer.system(Command::KmaJoined { name: name.clone() });
            match self.proposer.propose(proposal).await {
                Ok(_) => tracing::info!(kma = %name, "KMA joined: member, locked until unlocked"),
                Err(error) => tracing::warn!(%error, "KmaJoined not proposed"),
            }
        }
    }
}
