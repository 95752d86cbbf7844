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
//! machines (power, network), before this command runs: docs/operations.md. The survivor gets
//! a new certificate of the new epoch (the CA key the state holds opens with the master key the
//! members combined), so a drive that has spoken to it, and every KMA that joins it, refuses
//! the lost KMAs' certificates of the old epoch (`agent_gateway::epoch`).

use std::path::Path;

use security_core::MasterKey;
use statemachine::command::Envelope;
use statemachine::{Actor, Command};
use zeroize::Zeroizing;

use crate::config::{DataDirLayout, NodeConfig};
use crate::pki::{self, CertificateAuthority, Identity};
use crate::vault::Vault;

/// What a recovery did.
#[derive(Clone, Debug)]
pub struct RecoveryReport {
    pub kma: String,
    pub node_id: u64,
    pub committed_index: u64,
    pub uncommitted_dropped: u64,
    pub recovery_index: u64,
    /// The cluster epoch the recovery started; the survivor's new certificate names it.
    pub epoch: u32,
}

/// The survivor's certificate of the new epoch, made inside the ceremony.
struct Reissued {
    cert_pem: String,
    key_pem: Zeroizing<String>,
    epoch: u32,
}

/// Runs the ceremony on the stopped KMA in `data_dir`; `shares` opens the members' shares of
/// the quorum the state holds (members, threshold, wrapped shares) and combines them.
pub async fn recover_from_lost_majority(
    data_dir: &Path,
    shares: impl FnOnce(&statemachine::State) -> anyhow::Result<MasterKey>,
) -> anyhow::Result<RecoveryReport> {
    let config = NodeConfig::load(data_dir)?;
    let layout = DataDirLayout::new(data_dir);
    let raft_dir = layout.raft_dir();
    let tls_dir = layout.tls_dir();
    let ca_pem = pki::read(&tls_dir.join(pki::CA_FILE))?;
    let hosts = crate::setup::hosts_for(&config.management_advertise)?;
    let (name, node_id) = (config.name.clone(), config.node_id);
    let mut master: Option<MasterKey> = None;
    let mut cluster = None;
    let mut reissued: Option<Reissued> = None;
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
            let certificate = reissue(state, &key, (node_id, &hosts), (&ca_pem, &tls_dir))
                .map_err(|e| format!("{e:#}; nothing was changed"))?;
            let certificate_sha256 =
                pki::fingerprint(&certificate.cert_pem).map_err(|e| e.to_string())?;
            reissued = Some(certificate);
            master = Some(key);
            let envelope = Envelope {
                time_ms: crate::backup::now_ms().max(state.meta().time_ms_last),
                origin_node_id: node_id,
                actor: Actor::System,
                request_id: None,
                command: Command::RecoverFromLostMajority {
                    kma_name: name.clone(),
                    node_id,
                    certificate_sha256,
                },
            };
            Ok((envelope, node_id))
        },
    )
    .await?;
    let (Some(master), Some(cluster), Some(reissued)) = (master, cluster, reissued) else {
        anyhow::bail!(
            "the recovery ended without opening the quorum's shares; nothing was changed"
        );
    };
    // The state now records the new certificate. Should this process die before both files are
    // in place, running the recovery again makes and records another one.
    pki::replace(&tls_dir.join(pki::NODE_KEY_FILE), &reissued.key_pem, true)?;
    pki::replace(&tls_dir.join(pki::NODE_CERT_FILE), &reissued.cert_pem, false)?;
    // The survivor comes back unlocked with the master key the members opened, as a restored
    // KMA does; the vault duty keeps the sealed copy only if autonomous unlock is on.
    Vault::open(data_dir, &reissued.key_pem)?.seal(&master, cluster)?;
    Ok(RecoveryReport {
        kma: config.name,
        node_id,
        committed_index: recovered.committed_index,
        uncommitted_dropped: recovered.uncommitted_dropped,
        recovery_index: recovered.recovery_index,
        epoch: reissued.epoch,
    })
}

/// A certificate for the survivor in the epoch the recovery starts, signed by the cluster CA
/// whose key `state` holds wrapped under `master`.
fn reissue(
    state: &statemachine::State,
    master: &MasterKey,
    (node_id, hosts): (u64, &[String]),
    (ca_pem, tls_dir): (&str, &Path),
) -> anyhow::Result<Reissued> {
    let Some(cluster) = state.cluster_id() else {
        anyhow::bail!("the state holds no cluster");
    };
    // A survivor set up before the CA key was kept in the state still holds it in a file.
    let ca = match crate::setup::state_ca(state, cluster, master, ca_pem) {
        Ok((ca, _)) => ca,
        Err(error) => CertificateAuthority::load(tls_dir).map_err(|_| error)?,
    };
    let epoch = state.cluster_epoch().saturating_add(1);
    let (cert_pem, key_pem) = ca.in_epoch(epoch).issue(&Identity::Kma(node_id), hosts)?;
    Ok(Reissued { cert_pem, key_pem: Zeroizing::new(key_pem), epoch })
}
