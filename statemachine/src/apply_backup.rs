//! Handlers for backup records and restore drills (SPEC B1, B2, B6), and the two local
//! ceremonies that start a cluster anew from a copy of its state: a restore onto a
//! factory-fresh KMA (SPEC B3) and the recovery of a cluster that lost its majority (SPEC B7).
//!
//! The ceremonies are commands although no Raft log carries them: applied through `apply`, at
//! the index after the state's last, they are checked, audited and chained like any entry, and
//! the audit log of the new cluster opens with what was lost.

use alloc::string::String;
use alloc::vec::Vec;

use crate::apply::Cx;
use crate::audit::AuditWhat;
use crate::backup::{Backup, BackupDrill, BackupKind, RestoreSummary};
use crate::check::{check_count, check_name, check_text};
use crate::cluster::{Kma, KmaStatus, Site};
use crate::command::RestoreCluster;
use crate::format::LOG_FORMAT_3;
use crate::ids::NodeId;
use crate::limits::{
    BACKUPS_MAX, DETAIL_LEN_MAX, FILE_NAME_LEN_MAX, KEYS_PER_COMMAND_MAX, NAME_LEN_MAX, SITES_MAX,
};
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::State;

/// A backup record as `apply` takes it from either command: the format-1 record leaves the
/// fields of format 3 empty.
pub(crate) struct NewBackup<'a> {
    pub kind: BackupKind,
    pub kma: &'a str,
    pub file_name: &'a str,
    pub covers_index: u64,
    pub taken_by: &'a str,
    pub size_bytes: u64,
    pub file_sha256: [u8; 32],
    pub state_sha256: [u8; 32],
    pub backup_uuid: [u8; 16],
}

impl State {
    pub(crate) fn record_backup(
        &mut self,
        cx: &mut Cx<'_>,
        new: &NewBackup<'_>,
    ) -> Result<Reply, Reject> {
        self.check_backup_record(cx, new)?;
        let id = self.meta.next_backup_id;
        self.meta.next_backup_id += 1;
        let backup = Backup {
            id,
            kind: new.kind,
            kma: new.kma.into(),
            file_name: new.file_name.into(),
            covers_index: new.covers_index,
            taken_at_ms: cx.now_ms,
            destroyed: false,
            taken_by: new.taken_by.into(),
            size_bytes: new.size_bytes,
            file_sha256: new.file_sha256,
            state_sha256: new.state_sha256,
            backup_uuid: new.backup_uuid,
            drill: None,
        };
        self.meta.backups.insert(id, backup);
        if new.kind == BackupKind::Database {
            self.index.live_database_backups.insert((new.covers_index, id));
            // On a single KMA a backup is what protects pool keys (SPEC O4).
            self.protect_generated_keys(cx, new.covers_index);
        }
        Ok(Reply::BackupRecorded { id })
    }

    /// Below log format 3 the rules of formats 1 and 2, unchanged, so that old logs replay
    /// alike. From format 3: only the KMA that wrote the file records it (another could record
    /// a backup that does not exist, and keys would count as protected by it), and a core
    /// security backup holds the current quorum.
    fn check_backup_record(&self, cx: &Cx<'_>, new: &NewBackup<'_>) -> Result<(), Reject> {
        let format_3 = self.format_rules_apply(LOG_FORMAT_3);
        if format_3 {
            self.kma_recording_for_itself(cx, new.kma)?;
        } else {
            self.kma(new.kma)?;
        }
        check_text("file name", new.file_name, FILE_NAME_LEN_MAX, false)?;
        check_text("taken by", new.taken_by, NAME_LEN_MAX, true)?;
        if new.covers_index > cx.index {
            return Err(Reject::BackupCoversFuture {
                covers_index: new.covers_index,
                index: cx.index,
            });
        }
        if format_3 && new.kind == BackupKind::CoreSecurity {
            if new.state_sha256 != [0; 32] {
                return Err(Reject::InvalidSetting {
                    field: "state_sha256".into(),
                    reason: "all zero for a core security backup: it holds no state".into(),
                });
            }
            let quorum_changed_index = self.meta.quorum_changed_index;
            if new.covers_index != quorum_changed_index {
                return Err(Reject::CoreSecurityBackupOutdated {
                    covers_index: new.covers_index,
                    quorum_changed_index,
                });
            }
        }
        check_count("backups", self.meta.backups.len() + 1, BACKUPS_MAX)
    }

    /// A restore drill (SPEC B6): the KMA that read database backup `backup_id` back records
    /// the outcome, through its own node; the last drill replaces an earlier one.
    pub(crate) fn record_backup_drill(
        &mut self,
        cx: &mut Cx<'_>,
        backup_id: u64,
        kma: &str,
        passed: bool,
        detail: &str,
    ) -> Result<Reply, Reject> {
        self.kma_recording_for_itself(cx, kma)?;
        check_text("detail", detail, DETAIL_LEN_MAX, true)?;
        let backup = self.backup_mut(backup_id)?;
        if backup.kind != BackupKind::Database {
            return Err(Reject::BackupNotADatabaseBackup { id: backup_id });
        }
        if backup.destroyed {
            return Err(Reject::BackupAlreadyDestroyed { id: backup_id });
        }
        let drill =
            BackupDrill { at_ms: cx.now_ms, kma: kma.into(), passed, detail: detail.into() };
        backup.drill = Some(drill);
        cx.event(AuditWhat::BackupDrillRecorded { backup_id, passed });
        Ok(Reply::Done)
    }

    fn backup_mut(&mut self, id: u64) -> Result<&mut Backup, Reject> {
        self.meta.backups.get_mut(&id).ok_or(Reject::UnknownBackup { id })
    }
}

impl State {
    /// The `kma restore` ceremony (SPEC B3) on the state decoded from a backup: the KMAs of
    /// the lost cluster leave, the restoring KMA becomes the one member, unlocked (the quorum
    /// members typed their passphrases at its console). What the lost cluster did after the
    /// backup is unknown, so its pool keys may have been handed out since: they become
    /// recovery-only (SPEC A5). Sessions and pending work of the lost cluster end.
    pub(crate) fn restore_cluster(
        &mut self,
        cx: &mut Cx<'_>,
        restore: &RestoreCluster,
    ) -> Result<Reply, Reject> {
        let record_needed = self.check_restore(cx, restore)?;
        let before = self.restore_summary();
        let kmas_removed = self.remove_kmas_but(None);
        let pool_keys_quarantined = self.quarantine_unassigned_pool_keys();
        let sessions_ended = self.end_user_sessions();
        self.forget_work_of_lost_kmas();
        self.add_restored_kma(cx, restore);
        if record_needed {
            self.record_restored_backup(restore);
        }
        self.meta.cluster_epoch = self.meta.cluster_epoch.saturating_add(1);
        let summary = RestoreSummary {
            pool_keys_quarantined,
            kmas_removed: kmas_removed.len() as u64,
            ..before
        };
        assert_eq!(self.member_count(), 1, "a restored cluster has one KMA");
        assert_eq!(self.pool_size(), (0, 0), "no pool key of the lost cluster is drawn again");
        cx.event(AuditWhat::ClusterRestored {
            backup_uuid: restore.backup_uuid,
            file_name: restore.file_name.clone(),
            covers_index: restore.covers_index,
            kmas_removed,
            pool_keys_quarantined,
            sessions_ended,
            epoch: self.meta.cluster_epoch,
            keys_destroyed_since_backup: restore.keys_destroyed_since_backup.clone(),
        });
        Ok(Reply::ClusterRestored(summary))
    }

    /// Every check of a restore, before anything changes; whether the backup needs a record
    /// of its own (the state it holds was taken before its record was applied).
    fn check_restore(&self, cx: &Cx<'_>, restore: &RestoreCluster) -> Result<bool, Reject> {
        if self.meta.cluster.is_none() {
            return Err(Reject::ClusterNotInitialized);
        }
        check_name("KMA name", &restore.kma_name)?;
        check_name("site name", &restore.site)?;
        check_name("KMA name", &restore.taken_on_kma)?;
        check_text("file name", &restore.file_name, FILE_NAME_LEN_MAX, false)?;
        check_new_node_id(restore.node_id)?;
        if cx.origin_node_id != restore.node_id {
            // Only the restoring KMA applies its restore, through its new node ID.
            return Err(Reject::NotFromThatKma {
                kma: restore.kma_name.clone(),
                node_id: restore.node_id,
                origin_node_id: cx.origin_node_id,
            });
        }
        if restore.software_version < u32::from(LOG_FORMAT_3) {
            return Err(Reject::InvalidSetting {
                field: "software_version".into(),
                reason: "at least 3: the restoring KMA applies this command of log format 3".into(),
            });
        }
        if restore.covers_index > cx.index {
            let covers_index = restore.covers_index;
            return Err(Reject::BackupCoversFuture { covers_index, index: cx.index });
        }
        if !self.meta.sites.contains_key(&restore.site) {
            check_count("sites", self.meta.sites.len() + 1, SITES_MAX)?;
        }
        check_count(
            "keys destroyed since the backup",
            restore.keys_destroyed_since_backup.len(),
            KEYS_PER_COMMAND_MAX,
        )?;
        for key_id in &restore.keys_destroyed_since_backup {
            if !self.keys.contains_key(key_id) {
                return Err(Reject::UnknownKey { key_id: *key_id });
            }
        }
        let uuid = restore.backup_uuid;
        let record_needed = !self.meta.backups.values().any(|backup| backup.backup_uuid == uuid);
        if record_needed {
            check_count("backups", self.meta.backups.len() + 1, BACKUPS_MAX)?;
        }
        Ok(record_needed)
    }

    fn add_restored_kma(&mut self, cx: &Cx<'_>, restore: &RestoreCluster) {
        let now_ms = cx.now_ms;
        let site = Site { name: restore.site.clone(), created_at_ms: now_ms };
        self.meta.sites.entry(restore.site.clone()).or_insert(site);
        // Node IDs are never given twice: the lost KMAs' IDs stay spent.
        self.meta.next_node_id = self.meta.next_node_id.max(restore.node_id + 1);
        let kma = Kma {
            name: restore.kma_name.clone(),
            node_id: restore.node_id,
            site: restore.site.clone(),
            status: KmaStatus::Member,
            passphrase_verifier: Vec::new(),
            // The quorum members unlocked it at its console; it unlocks itself only once a
            // quorum operation allows it again.
            locked: false,
            autonomous_unlock: false,
            software_version: restore.software_version,
            created_at_ms: now_ms,
            version: None,
            certificate_sha256: Some(restore.certificate_sha256),
        };
        self.meta.kmas.insert(restore.kma_name.clone(), kma);
    }

    /// The backup just restored, as a database backup: B4 bookkeeping then knows it holds the
    /// material of every key it holds.
    fn record_restored_backup(&mut self, restore: &RestoreCluster) {
        let id = self.meta.next_backup_id;
        self.meta.next_backup_id += 1;
        let backup = Backup {
            id,
            kind: BackupKind::Database,
            kma: restore.taken_on_kma.clone(),
            file_name: restore.file_name.clone(),
            covers_index: restore.covers_index,
            taken_at_ms: restore.taken_at_ms,
            destroyed: false,
            taken_by: String::new(),
            size_bytes: 0,
            file_sha256: [0; 32],
            state_sha256: restore.state_sha256,
            backup_uuid: restore.backup_uuid,
            drill: None,
        };
        self.meta.backups.insert(id, backup);
        self.index.live_database_backups.insert((restore.covers_index, id));
    }

    /// Recovery of a cluster that lost its majority (SPEC B7), on survivor `kma_name`: the
    /// other KMAs leave (they may come back only as new KMAs), and their pending work with
    /// them. The lost KMAs may have handed out pool keys in entries the survivor never saw:
    /// those keys become recovery-only (SPEC A5). User sessions stay: the survivor issued or
    /// accepted them, and the users are the same.
    pub(crate) fn recover_from_lost_majority(
        &mut self,
        cx: &mut Cx<'_>,
        kma_name: &str,
        node_id: NodeId,
        certificate_sha256: [u8; 32],
    ) -> Result<Reply, Reject> {
        let survivor = self.kma(kma_name)?;
        if survivor.node_id != node_id {
            return Err(Reject::SurvivingKmaIsAnotherNode {
                kma: kma_name.into(),
                node_id,
                recorded_node_id: survivor.node_id,
            });
        }
        self.kma_recording_for_itself(cx, kma_name)?;
        if survivor.status != KmaStatus::Member {
            return Err(crate::apply_cluster::wrong_status(survivor));
        }
        let kmas_removed = self.remove_kmas_but(Some(kma_name));
        let pool_keys_quarantined = self.quarantine_unassigned_pool_keys();
        self.forget_work_of_lost_kmas();
        self.meta.cluster_epoch = self.meta.cluster_epoch.saturating_add(1);
        assert_eq!(self.meta.kmas.len(), 1, "the survivor is the one KMA");
        // Its certificate of the old epoch is refused from now on, like the lost KMAs'.
        if let Some(survivor) = self.meta.kmas.get_mut(kma_name) {
            survivor.certificate_sha256 = Some(certificate_sha256);
        }
        assert_eq!(self.pool_size(), (0, 0), "no pool key of the lost KMAs is drawn again");
        let reply = Reply::RecoveredFromLostMajority {
            kmas_removed: kmas_removed.len() as u32,
            pool_keys_quarantined,
            cluster_epoch: self.meta.cluster_epoch,
        };
        cx.event(AuditWhat::RecoveredFromLostMajority {
            kma: kma_name.into(),
            kmas_removed,
            pool_keys_quarantined,
            epoch: self.meta.cluster_epoch,
        });
        Ok(reply)
    }

    /// Removes every KMA entry but `keep`; their names, in order.
    fn remove_kmas_but(&mut self, keep: Option<&str>) -> Vec<String> {
        let removed: Vec<String> =
            self.meta.kmas.keys().filter(|name| Some(name.as_str()) != keep).cloned().collect();
        for name in &removed {
            self.meta.kmas.remove(name);
        }
        removed
    }

    /// Ends every user session certificate; how many.
    fn end_user_sessions(&mut self) -> u64 {
        let mut ended = 0;
        for user in self.meta.users.values_mut() {
            ended += user.sessions.len() as u64;
            user.sessions.clear();
        }
        ended
    }

    /// Drops what the lost KMAs were part of: pending quorum operations (approvals given in a
    /// cluster that went another way), a CA rotation and a CA being retired (both wait for
    /// KMAs that are gone; the current CA stays), and a backup schedule naming a KMA that left.
    fn forget_work_of_lost_kmas(&mut self) {
        self.meta.quorum_operations.clear();
        self.meta.ca_rotation = None;
        self.meta.retiring_ca = None;
        let kmas = &self.meta.kmas;
        let orphaned =
            self.meta.backup_schedule.as_ref().is_some_and(|schedule| {
                !schedule.kma.is_empty() && !kmas.contains_key(&schedule.kma)
            });
        if orphaned {
            self.meta.backup_schedule = None;
        }
    }
}

/// A node ID the restoring KMA may take: not 0 (no node), and leaving room for the next.
fn check_new_node_id(node_id: NodeId) -> Result<(), Reject> {
    if node_id == 0 || node_id == NodeId::MAX {
        return Err(Reject::InvalidSetting {
            field: "node_id".into(),
            reason: "a node ID from 1 to 2^64 - 2".into(),
        });
    }
    Ok(())
}

impl State {
    /// The quorum version (`Meta::quorum_changed_index`) when no core security backup holds
    /// the current quorum, else `None`; `None` before the quickstart. A backup marked destroyed
    /// holds nothing. The shells remind the Backup Operator with it (SPEC B1).
    pub fn core_security_backup_due(&self) -> Option<u64> {
        self.meta.cluster?;
        let version = self.meta.quorum_changed_index;
        let held = self.meta.backups.values().any(|backup| {
            backup.kind == BackupKind::CoreSecurity
                && !backup.destroyed
                && backup.covers_index >= version
        });
        (!held).then_some(version)
    }

    /// The quorum version a core security backup taken now records as its `covers_index`.
    pub fn quorum_changed_index(&self) -> u64 {
        self.meta.quorum_changed_index
    }

    /// How many restores and recoveries started the cluster anew (`Meta::cluster_epoch`).
    pub fn cluster_epoch(&self) -> u32 {
        self.meta.cluster_epoch
    }

    /// What a restore of this state would restore (SPEC B3): the counts the `kma restore`
    /// ceremony shows before it asks for the quorum, and its reply after.
    pub fn restore_summary(&self) -> RestoreSummary {
        let (ready, generated) = self.pool_size();
        RestoreSummary {
            keys: self.keys.len() as u64,
            data_units: self.data_units.len() as u64,
            agents: self.meta.agents.len() as u64,
            users: self.meta.users.len() as u64,
            key_groups: self.meta.groups.len() as u64,
            pool_keys_quarantined: (ready + generated) as u64,
            kmas_removed: self.meta.kmas.len() as u64,
        }
    }
}
