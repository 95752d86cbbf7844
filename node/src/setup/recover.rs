//! `kma recover-from-lost-majority` (SPEC B7): when most KMAs of a cluster are gone for good,
//! one survivor becomes a cluster of one with its state intact. A local ceremony on the
//! stopped survivor: the quorum members type their passphrases at its console, as for a
//! restore (S4), because this overrides the cluster's own rule that a majority decides.
//!
//! What the survivor keeps: every entry it knew committed. What it drops: entries it held but
//! never learnt committed (the lost majority may have committed them or not; the drives that
//! asked for them saw no answer, or were answered by the majority that is now gone).
//!
//! The lost KMAs still form a majority of the old configuration: should they come back they
//! could elect a leader of their own. So the recovery removes them from the state (their
//! certificates are refused from then on by every KMA that applies it), quarantines the key
//! pool (a pool key the lost side may have handed out is given only to a drive that asks for it
//! by ID, A5), and starts a new cluster epoch. The runbook's first step is to fence the lost
//! machines (power, network), before this command runs: docs/operations.md.

use std::path::Path;

use security_core::MasterKey;
use statemachine::command::Envelope;
use statemachine::{Actor, Command};

use crate::config::NodeConfig;
use crate::vault::Vault;

/// What a recovery did.
#[derive(Clone, Debug)]
pub struct RecoveryReport {
    pub kma: String,
    pub node_id: u64,
    pub committed_index: u64,
    pub uncommitted_dropped: u64,
    pub recovery_index: u64,
}

/// Runs the ceremony on the stopped KMA in `data_dir`; `shares` opens the members' shares of
/// the quorum the state holds (members, threshold, wrapped shares) and combines them.
pub async fn recover_from_lost_majority(
    data_dir: &Path,
    shares: impl FnOnce(&statemachine::State) -> anyhow::Result<MasterKey>,
) -> anyhow::Result<RecoveryReport> {
    let config = NodeConfig::load(data_dir)?;
    let raft_dir = crate::config::DataDirLayout::new(data_dir).raft_dir();
    let (name, node_id) = (config.name.clone(), config.node_id);
    let mut master: Option<MasterKey> = None;
    let mut cluster = None;
    let recovered = raft_storage::backup::recover_data_dir(
        &raft_dir,
        &config.management_advertise,
        |state, _index| {
            let Some(me) = state.meta().kmas.get(&name) else {
                return Err(format!(
                    "the state no longer holds KMA '{name}' (it was deleted): recover from \
                     another survivor"
                ));
            };
            if me.node_id != node_id {
                return Err(format!(
                    "the state's KMA '{name}' is node {}, not {node_id}",
                    me.node_id
                ));
            }
            let key = shares(state).map_err(|e| format!("{e:#}; nothing was changed"))?;
            cluster = state.cluster_id();
            master = Some(key);
            let envelope = Envelope {
                time_ms: crate::backup::now_ms().max(state.meta().time_ms_last),
                origin_node_id: node_id,
                actor: Actor::System,
                request_id: None,
                command: Command::RecoverFromLostMajority { kma_name: name.clone(), node_id },
            };
            Ok((envelope, node_id))
        },
    )
    .await?;
    // The survivor comes back unlocked with the master key the members opened, as a restored
    // KMA does; the vault duty keeps the sealed copy only if autonomous unlock is on.
    if let (Some(master), Some(cluster)) = (master, cluster) {
        let key_pem = crate::pki::read(
            &crate::config::DataDirLayout::new(data_dir).tls_dir().join(crate::pki::NODE_KEY_FILE),
        )?;
        Vault::open(data_dir, &key_pem)?.seal(&master, cluster)?;
    }
    Ok(RecoveryReport {
        kma: config.name,
        node_id,
        committed_index: recovered.committed_index,
        uncommitted_dropped: recovered.uncommitted_dropped,
        recovery_index: recovered.recovery_index,
    })
}
