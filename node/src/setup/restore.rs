//! `kma restore` (SPEC B3, C4): a factory-fresh KMA becomes a new cluster of one, holding the
//! state of a database backup. A local ceremony: the quorum members type their passphrases at
//! this KMA's console (members are not users, S4), no network and no login are involved.
//!
//! Order matters, so that bad input changes nothing:
//! 1. the three files are read and checked against each other (format, checksums, cluster,
//!    backup UUID) before anyone is asked for a passphrase;
//! 2. each member's passphrase is checked against that member's wrapped share as it is typed;
//!    at the threshold the shares combine, and the split's authentication and the master
//!    key's check value decide;
//! 3. the master key must open the backup key, which must open every chunk of the data file;
//! 4. only then is the data dir written, from the decoded state changed by the
//!    `RestoreCluster` command (this KMA the only one, the pool quarantined, sessions ended,
//!    a new cluster epoch, the restore in the audit chain). A failure removes it again.
//!
//! Agents do not re-enroll: the backup holds the cluster CA's key (wrapped under the master
//! key) and every agent's enrolled certificate, and the restored KMA serves with a
//! certificate of that same CA, so a drive's certificate is still trusted and still its own.
//! An agent enrolled after the backup was taken is unknown to the restored cluster and must be
//! enrolled again; a drive only needs the new KMA's address if it changed.

use std::path::Path;

use anyhow::Context;
use security_core::backup_file::{unwrap_backup_key, BackupOpener};
use security_core::{MasterKey, Share};
use serde::Serialize;
use statemachine::command::{Envelope, RestoreCluster};
use statemachine::{Actor, ClusterId, Command, State};
use zeroize::Zeroizing;

use crate::backup::files::{BackupKeyFile, CheckedDataFile, CoreSecurityBackup};
use crate::config::DataDirLayout;
use crate::pki::{self, Identity};
use crate::setup::{config, hosts_for, refuse_existing, Listeners};
use crate::vault::Vault;

/// The three files a restore needs.
pub struct RestoreFiles<'a> {
    pub data: &'a Path,
    pub key: &'a Path,
    pub core_security: &'a Path,
}

/// The files, read and checked against each other: nothing here needs a secret.
pub struct CheckedBackup {
    pub data: CheckedDataFile,
    pub key: BackupKeyFile,
    pub core_security: CoreSecurityBackup,
    pub cluster_id: ClusterId,
    pub uuid: [u8; 16],
    key_path: String,
}

impl CheckedBackup {
    pub fn open(files: &RestoreFiles<'_>) -> anyhow::Result<Self> {
        let core_security = CoreSecurityBackup::read(files.core_security)?;
        let key = BackupKeyFile::read(files.key)?;
        let key_path = files.key.display().to_string();
        let data = CheckedDataFile::open(files.data)?;
        let cluster_id = key.cluster(&key_path)?;
        let uuid = key.uuid(&key_path)?;
        if ClusterId(data.header.cluster_id) != cluster_id {
            anyhow::bail!(
                "{} is a backup of cluster {:016x}, but {key_path} is a key file of cluster \
                 {:016x}: give the key file taken with that data file; nothing was changed",
                files.data.display(),
                data.header.cluster_id,
                cluster_id.0
            );
        }
        if data.header.backup_uuid != uuid || key.data_sha256(&key_path)? != data.sha256 {
            anyhow::bail!(
                "{key_path} is the key file of another backup than {} (each backup has its own \
                 key): give the key file taken with that data file; nothing was changed",
                files.data.display()
            );
        }
        if core_security.cluster_id != cluster_id {
            anyhow::bail!(
                "{} is the core security backup of cluster {:016x}, not of cluster {:016x} \
                 whose backup this is: give that cluster's core security backup; nothing was \
                 changed",
                files.core_security.display(),
                core_security.cluster_id.0,
                cluster_id.0
            );
        }
        Ok(CheckedBackup { data, key, core_security, cluster_id, uuid, key_path })
    }

    pub fn members(&self) -> Vec<String> {
        self.core_security.shares.iter().map(|(id, _)| id.clone()).collect()
    }

    pub fn threshold(&self) -> u8 {
        self.core_security.threshold
    }

    /// Opens `member`'s share with `passphrase`. Blocking (argon2id).
    pub fn open_share(&self, member: &str, passphrase: &str) -> anyhow::Result<Share> {
        let Some((_, wrapped)) = self.core_security.shares.iter().find(|(id, _)| id == member)
        else {
            anyhow::bail!(
                "'{member}' is not a member of this quorum (members: {})",
                self.members().join(", ")
            );
        };
        security_core::unwrap_share(wrapped, self.cluster_id, member, passphrase)
            .map_err(|_| anyhow::anyhow!("wrong passphrase for quorum member '{member}'"))
    }
}

/// The events of an audit export (`kmsctl audit export`, JSON lines) kept since the backup:
/// read whole before any passphrase is asked for, checked against the backup's chain later.
pub struct AuditExport {
    path: String,
    events: Vec<statemachine::ChainedAuditEvent>,
}

impl AuditExport {
    pub fn read(path: &Path) -> anyhow::Result<AuditExport> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the audit export {shown}: {e}"))?;
        let mut events = Vec::new();
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |detail: String| {
                anyhow::anyhow!(
                    "{shown} line {}: {detail}: give the output of `kmsctl audit export`, \
                     unchanged; nothing was changed",
                    number + 1
                )
            };
            let record: admin_api::api::AuditRecord =
                serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            let encoded = hex::decode(&record.encoded).map_err(|e| bad(e.to_string()))?;
            let event: statemachine::AuditEvent =
                postcard::from_bytes(&encoded).map_err(|e| bad(e.to_string()))?;
            let link: [u8; 32] = hex::decode(&record.link)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| bad("its link is not 32 bytes of hex".into()))?;
            events.push(statemachine::ChainedAuditEvent { seq: record.seq, link, event });
        }
        events.sort_by_key(|event| event.seq);
        Ok(AuditExport { path: shown, events })
    }

    /// The keys destroyed after `chain` (the backup's audit chain) that `state` holds with
    /// their material: the export's events after the chain must continue it link by link,
    /// so an edited or unrelated export is refused rather than trusted.
    fn destroyed_after(&self, state: &State) -> anyhow::Result<Vec<statemachine::KeyId>> {
        use statemachine::{AuditWhat, KeyState};
        let chain = state.audit_chain();
        let after: Vec<&statemachine::ChainedAuditEvent> =
            self.events.iter().filter(|event| event.seq > chain.events).collect();
        let continues = after.first().is_none_or(|first| first.seq == chain.events + 1);
        let checked = continues
            .then(|| statemachine::verify_chain(chain, after.iter().copied()))
            .and_then(Result::ok);
        if checked.is_none() {
            anyhow::bail!(
                "the audit export {} does not continue this backup's audit chain (at event {}): \
                 give an export of this cluster taken after the backup, unchanged",
                self.path,
                chain.events
            );
        }
        let destroyed = [
            KeyState::IncompletelyDestroyed,
            KeyState::CompletelyDestroyed,
            KeyState::IncompletelyDestroyedCompromised,
            KeyState::CompletelyDestroyedCompromised,
        ];
        let mut keys: Vec<statemachine::KeyId> = after
            .iter()
            .filter_map(|event| match &event.event.what {
                AuditWhat::KeyStateChanged { key_id, to, .. } if destroyed.contains(to) => {
                    Some(*key_id)
                }
                _ => None,
            })
            .filter(|key_id| state.keys().get(key_id).is_some_and(|key| key.material.is_some()))
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// Combines the shares the members opened into the master key (SPEC S3).
pub fn combine(shares: &[Share]) -> anyhow::Result<MasterKey> {
    security_core::quorum_shares::combine_shares(shares).map_err(|e| {
        anyhow::anyhow!("the members' shares do not give this cluster's master key: {e}")
    })
}

/// What a restore brought back, for the operator (printed, and kept as
/// `restore-report.toml` in the data dir).
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub cluster_id: String,
    pub backup_uuid: String,
    pub backup_file_sha256: String,
    pub backup_taken_at_ms: u64,
    pub backup_taken_on_kma: String,
    /// The last log index whose effects the backup holds.
    pub covers_index: u64,
    /// The index of the restore itself, where the new cluster's log starts.
    pub restore_index: u64,
    pub node_id: u64,
    pub epoch: u32,
    pub keys: u64,
    pub data_units: u64,
    pub agents: u64,
    pub users: u64,
    pub key_groups: u64,
    pub audit_events: u64,
    pub pool_keys_quarantined: u64,
    pub kmas_removed: Vec<String>,
    /// Agents keep their certificates (see the module documentation).
    pub agents_reenroll: bool,
    /// Whether an audit export kept since the backup told which keys were destroyed after it.
    pub destroyed_since_known: bool,
    /// Keys the lost cluster destroyed after the backup, brought back by it (SPEC B4): destroy
    /// them again if they must stay destroyed.
    pub keys_destroyed_since_backup: Vec<String>,
}

pub const REPORT_FILE: &str = "restore-report.toml";

/// Writes the restored KMA into `data_dir`. `master` is the quorum's master key.
pub fn restore(
    data_dir: &Path,
    name: &str,
    site: &str,
    listeners: &Listeners,
    backup: &CheckedBackup,
    export: Option<&AuditExport>,
    master: &MasterKey,
) -> anyhow::Result<RestoreReport> {
    let wrapped = backup.key.wrapped_key(&backup.key_path)?;
    let backup_key = unwrap_backup_key(master, backup.cluster_id, &backup.uuid, &wrapped)
        .map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
    let fresh = is_fresh(data_dir)?;
    if !fresh {
        refuse_existing(data_dir)?;
        anyhow::bail!(
            "{} is not empty: a restore needs a factory-fresh KMA (an empty data dir; `kma \
             reset` makes one); nothing was changed",
            data_dir.display()
        );
    }
    let listeners = listeners.with_chosen_ports()?;
    let written =
        write_restored(data_dir, (name, site), &listeners, (backup, export), master, &backup_key);
    if written.is_err() {
        // Only what this ceremony created: the directory was empty or absent.
        let _ = std::fs::remove_dir_all(data_dir);
    }
    written
}

fn is_fresh(data_dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(anyhow::anyhow!("cannot read {}: {error}", data_dir.display())),
    }
}

/// The certificate the restored KMA serves with, made inside the restore step.
struct Issued {
    node_id: u64,
    cert_pem: String,
    key_pem: Zeroizing<String>,
    ca_pem: String,
    epoch: u32,
    pool_keys_quarantined: u64,
    kmas_removed: Vec<String>,
    keys_destroyed_since_backup: Vec<statemachine::KeyId>,
}

fn write_restored(
    data_dir: &Path,
    (name, site): (&str, &str),
    listeners: &Listeners,
    (backup, export): (&CheckedBackup, Option<&AuditExport>),
    master: &MasterKey,
    backup_key: &security_core::backup_file::BackupKey,
) -> anyhow::Result<RestoreReport> {
    std::fs::create_dir_all(DataDirLayout::new(data_dir).tls_dir())?;
    let sealed = backup.data.sealed()?;
    let opened = BackupOpener::new(sealed, backup_key, &backup.data.prefix)?;
    let hosts = hosts_for(&listeners.management_advertise)?;
    let mut issued: Option<Issued> = None;
    let mut counts = (0u64, 0u64, 0u64, 0u64, 0u64);
    let apply_restore = |state: &mut State, index: u64| -> Result<_, String> {
        let step = restore_step(state, index, (name, site, &hosts), (backup, export), master);
        let (events, made) = step.map_err(|e| format!("{e:#}"))?;
        counts = (
            state.keys().len() as u64,
            state.data_units().len() as u64,
            state.meta().agents.len() as u64,
            state.meta().users.len() as u64,
            state.meta().groups.len() as u64,
        );
        let node_id = made.node_id;
        issued = Some(made);
        Ok((events, node_id))
    };
    let raft_dir = DataDirLayout::new(data_dir).raft_dir();
    let restored = raft_storage::backup::restore_data_dir(
        &raft_dir,
        opened,
        &listeners.management_advertise,
        apply_restore,
    )?;
    let issued = issued.ok_or_else(|| anyhow::anyhow!("the restore step did not run"))?;
    let tls_dir = DataDirLayout::new(data_dir).tls_dir();
    pki::write(&tls_dir.join(pki::CA_FILE), &issued.ca_pem, false)?;
    pki::write(&tls_dir.join(pki::NODE_CERT_FILE), &issued.cert_pem, false)?;
    pki::write(&tls_dir.join(pki::NODE_KEY_FILE), &issued.key_pem, true)?;
    // The restored KMA starts unlocked with the quorum's master key, sealed to its own key as
    // `kma init` does for a first KMA; the vault duty keeps or erases it per the state.
    Vault::open(data_dir, &issued.key_pem)?.seal(master, backup.cluster_id)?;
    config(issued.node_id, name, site, listeners).save(data_dir)?;
    let (keys, data_units, agents, users, key_groups) = counts;
    let report = RestoreReport {
        cluster_id: format!("{:016x}", backup.cluster_id.0),
        backup_uuid: hex::encode(backup.uuid),
        backup_file_sha256: hex::encode(backup.data.sha256),
        backup_taken_at_ms: backup.data.header.taken_at_ms,
        backup_taken_on_kma: backup.data.header.taken_on_kma.clone(),
        covers_index: restored.backup.covers_index,
        restore_index: restored.restore_index,
        node_id: issued.node_id,
        epoch: issued.epoch,
        keys,
        data_units,
        agents,
        users,
        key_groups,
        audit_events: restored.backup.audit_rows,
        pool_keys_quarantined: issued.pool_keys_quarantined,
        kmas_removed: issued.kmas_removed,
        agents_reenroll: false,
        destroyed_since_known: export.is_some(),
        keys_destroyed_since_backup: issued
            .keys_destroyed_since_backup
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let text = toml::to_string_pretty(&report)?;
    crate::backup::write_atomically(&data_dir.join(REPORT_FILE), text.as_bytes())?;
    Ok(report)
}

/// Applies `RestoreCluster` to the decoded state at `index`, after making this KMA's
/// certificate with the CA key the state holds.
fn restore_step(
    state: &mut State,
    index: u64,
    (name, site, hosts): (&str, &str, &[String]),
    (backup, export): (&CheckedBackup, Option<&AuditExport>),
    master: &MasterKey,
) -> anyhow::Result<(Vec<statemachine::ChainedAuditEvent>, Issued)> {
    if state.cluster_id() != Some(backup.cluster_id) {
        anyhow::bail!("the backup's state is not of cluster {:016x}", backup.cluster_id.0);
    }
    let header_ca = &backup.data.header.ca_certificate_pem;
    let (ca, ca_pem) = crate::setup::state_ca(state, backup.cluster_id, master, header_ca)
        .context("restore from a newer backup")?;
    // The restore starts the next epoch (SPEC B7); the certificate names it.
    let epoch = state.cluster_epoch().saturating_add(1);
    let ca = ca.in_epoch(epoch);
    let node_id = state.meta().next_node_id;
    let (cert_pem, key_pem) = ca.issue(&Identity::Kma(node_id), hosts)?;
    let key_pem = Zeroizing::new(key_pem);
    let certificate_sha256 = pki::fingerprint(&cert_pem)?;
    let keys_destroyed_since_backup = match export {
        Some(export) => export.destroyed_after(state)?,
        None => Vec::new(),
    };
    if keys_destroyed_since_backup.len() > statemachine::limits::KEYS_PER_COMMAND_MAX {
        anyhow::bail!(
            "the audit export names {} keys destroyed since the backup, more than one restore \
             records ({}): restore from a newer backup",
            keys_destroyed_since_backup.len(),
            statemachine::limits::KEYS_PER_COMMAND_MAX
        );
    }
    let command = Command::RestoreCluster(RestoreCluster {
        backup_uuid: backup.uuid,
        file_name: backup_file_name(&backup.data),
        covers_index: state.last_applied_index(),
        taken_at_ms: backup.data.header.taken_at_ms,
        taken_on_kma: backup.data.header.taken_on_kma.clone(),
        state_sha256: raft_storage::backup::state_sha256(state),
        kma_name: name.into(),
        site: site.into(),
        node_id,
        certificate_sha256,
        software_version: u32::from(statemachine::format::LOG_FORMAT_MAX),
        keys_destroyed_since_backup: keys_destroyed_since_backup.clone(),
    });
    let envelope = Envelope {
        time_ms: crate::backup::now_ms().max(state.meta().time_ms_last),
        origin_node_id: node_id,
        actor: Actor::System,
        request_id: None,
        command,
    };
    let kmas_removed: Vec<String> = state.meta().kmas.keys().cloned().collect();
    let (result, events) = state.apply(index, &envelope).into_chained();
    let reply = result.map_err(|reject| anyhow::anyhow!("the restore was refused: {reject}"))?;
    let pool_keys_quarantined = match reply {
        statemachine::reply::Reply::ClusterRestored(summary) => summary.pool_keys_quarantined,
        other => anyhow::bail!("the restore was answered unexpectedly: {other:?}"),
    };
    if state.cluster_epoch() != epoch {
        anyhow::bail!("the restore started epoch {}, not {epoch}", state.cluster_epoch());
    }
    let issued = Issued {
        node_id,
        cert_pem,
        key_pem,
        ca_pem,
        epoch,
        pool_keys_quarantined,
        kmas_removed,
        keys_destroyed_since_backup,
    };
    Ok((events, issued))
}

fn backup_file_name(data: &CheckedDataFile) -> String {
    data.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
