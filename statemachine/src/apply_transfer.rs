//! Handlers for partner key transfer (SPEC T1–T4), 1.x migration (SPEC M1) and backup records
//! (SPEC B1–B5): the ways keys enter and leave the cluster outside the agent protocol.

use core::num::NonZeroU64;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use smallvec::SmallVec;

use crate::apply::Cx;
use crate::audit::{AuditWhat, PartnerChange};
use crate::backup::BackupKind;
use crate::check::{check_blob, check_count, check_name, check_text};
use crate::cluster::BackupSchedule;
use crate::command::{
    Legacy1xKey, TransferDirection, TransferExport, TransferImport, TransferredDataUnit,
};
use crate::data_unit::{DataUnit, KeyAssociation};
use crate::format::LOG_FORMAT_3;
use crate::ids::{DataUnitId, Fingerprint16, KeyGroupId, KeyId};
use crate::key::{Activation, Key, KeyCheckValue, KeyOrigin, KeyState, WrappedKey};
use crate::limits::{
    DESCRIPTION_LEN_MAX, EXTERNAL_TAG_LEN_MAX, IMPORT_KEYS_PER_COMMAND_MAX, PARTNERS_MAX,
    PUBLIC_KEY_LEN_MAX, TRANSFER_DATA_UNITS_MAX, TRANSFER_FILES_MAX, TRANSFER_KEYS_MAX,
    TRANSFER_PUBLIC_KEYS_LEN,
};
use crate::partner::{TransferFileRecord, TransferKeyPair, TransferPartner};
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::{index_key, State};

/// An imported key, before it is inserted.
pub(crate) struct Incoming<'a> {
    pub id: KeyId,
    pub material: &'a WrappedKey,
    pub check_value: KeyCheckValue,
    pub origin: KeyOrigin,
    pub created_at_ms: u64,
    pub activation: Activation,
    pub compromised_at_ms: Option<u64>,
}

impl<'a> Incoming<'a> {
    /// A KMS 1.x key, created and activated when its import applies (SPEC M1).
    pub(crate) fn legacy(key: &'a Legacy1xKey, activation: Activation) -> Incoming<'a> {
        Incoming {
            id: key.id,
            material: &key.material,
            check_value: key.check_value,
            origin: KeyOrigin::Imported1x,
            created_at_ms: activation.activated_at_ms,
            activation,
            compromised_at_ms: None,
        }
    }
}

impl State {
    /// The dates of a key imported into `group` at `now_ms` that encrypts no more: created,
    /// activated and encryption-ended now, deactivated a cryptoperiod later (SPEC M1).
    pub(crate) fn process_only_from(&self, group: KeyGroupId, now_ms: u64) -> Activation {
        let cryptoperiod_ms = self.group_policy(group).cryptoperiod_ms;
        Activation {
            activated_at_ms: now_ms,
            encryption_ends_at_ms: now_ms,
            deactivates_at_ms: now_ms.saturating_add(cryptoperiod_ms),
        }
    }

    /// From log format 3 the same quorum operation that creates a partner replaces the public
    /// keys of an existing one (issue 18 point 1), and the keys are a transfer key pair's 64
    /// bytes (X25519 then Ed25519).
    pub(crate) fn check_new_partner(&self, name: &str, public_key: &[u8]) -> Result<(), Reject> {
        check_name("partner name", name)?;
        check_blob("partner public key", public_key, PUBLIC_KEY_LEN_MAX)?;
        let rekey = self.format_rules_apply(LOG_FORMAT_3);
        if rekey && public_key.len() != TRANSFER_PUBLIC_KEYS_LEN {
            return Err(Reject::InvalidSetting {
                field: "partner public key".into(),
                reason: alloc::format!(
                    "{} bytes, not the {TRANSFER_PUBLIC_KEYS_LEN} of a transfer key pair's \
                     public keys: copy them from `kmsctl transfer key show` on the partner",
                    public_key.len()
                ),
            });
        }
        if self.meta.partners.contains_key(name) {
            if rekey {
                return Ok(());
            }
            return Err(Reject::PartnerExists { name: name.into() });
        }
        check_count("transfer partners", self.meta.partners.len() + 1, PARTNERS_MAX)
    }

    pub(crate) fn insert_partner(&mut self, cx: &mut Cx<'_>, name: &str, public_key: &[u8]) {
        if let Some(known) = self.meta.partners.get_mut(name) {
            // A re-key (log format 3): the assignments and the enabled state stay.
            known.public_key = public_key.into();
            cx.event(AuditWhat::TransferPartnerChanged {
                name: name.into(),
                change: PartnerChange::Rekeyed,
            });
            return;
        }
        if self.format_rules_apply(LOG_FORMAT_3) {
            cx.event(AuditWhat::TransferPartnerChanged {
                name: name.into(),
                change: PartnerChange::Created,
            });
        }
        let partner = TransferPartner {
            name: name.into(),
            public_key: public_key.into(),
            export_groups: BTreeSet::new(),
            import_groups: BTreeSet::new(),
            created_at_ms: cx.now_ms,
        };
        self.meta.partners.insert(name.into(), partner);
    }

    fn partner(&self, name: &str) -> Result<&TransferPartner, Reject> {
        self.meta.partners.get(name).ok_or_else(|| Reject::UnknownPartner { name: name.into() })
    }

    pub(crate) fn set_transfer_key_pair(
        &mut self,
        cx: &mut Cx<'_>,
        public_key: &[u8],
        wrapped_private_key: &[u8],
    ) -> Result<Reply, Reject> {
        check_blob("transfer public key", public_key, PUBLIC_KEY_LEN_MAX)?;
        check_blob("wrapped transfer private key", wrapped_private_key, PUBLIC_KEY_LEN_MAX)?;
        if self.format_rules_apply(LOG_FORMAT_3) {
            // Partners hold our public keys: a new pair would silently cut every one of them
            // off, so the first pair a KMA records stays (issue 18 point 1).
            if let Some(held) = &self.meta.transfer_key_pair {
                if held.public_key == public_key {
                    return Ok(Reply::Done);
                }
                return Err(Reject::TransferKeyPairExists);
            }
        }
        self.meta.transfer_key_pair = Some(TransferKeyPair {
            public_key: public_key.into(),
            wrapped_private_key: wrapped_private_key.into(),
            created_at_ms: cx.now_ms,
        });
        Ok(Reply::Done)
    }

    pub(crate) fn delete_transfer_partner(&mut self, name: &str) -> Result<Reply, Reject> {
        self.partner(name)?;
        self.meta.partners.remove(name);
        self.meta.disabled_partners.remove(name);
        Ok(Reply::Done)
    }

    /// A disabled partner keeps its keys and groups, but no file goes to it or comes from it
    /// (issue 18 point 1).
    pub(crate) fn set_transfer_partner_enabled(
        &mut self,
        cx: &mut Cx<'_>,
        name: &str,
        enabled: bool,
    ) -> Result<Reply, Reject> {
        self.partner(name)?;
        let changed = if enabled {
            self.meta.disabled_partners.remove(name)
        } else {
            self.meta.disabled_partners.insert(name.into())
        };
        if changed {
            let change = PartnerChange::Enabled { enabled };
            cx.event(AuditWhat::TransferPartnerChanged { name: name.into(), change });
        }
        Ok(Reply::Done)
    }

    /// The partner, if it exists and is enabled: what an export or an import needs.
    fn enabled_partner(&self, name: &str) -> Result<&TransferPartner, Reject> {
        let partner = self.partner(name)?;
        if self.meta.disabled_partners.contains(name) {
            return Err(Reject::PartnerDisabled { name: name.into() });
        }
        Ok(partner)
    }

    /// Whether partner `name` is disabled.
    pub fn partner_disabled(&self, name: &str) -> bool {
        self.meta.disabled_partners.contains(name)
    }

    /// The group's policy must allow the direction (SPEC T2); the flags may have been changed
    /// since, so export and import check them again.
    fn check_policy_allows(
        &self,
        group: KeyGroupId,
        direction: TransferDirection,
    ) -> Result<(), Reject> {
        let policy = self.group_policy(group);
        let name = self.group_name(group);
        match direction {
            TransferDirection::Export if !policy.allow_export => {
                Err(Reject::PolicyForbidsExport { group: name })
            }
            TransferDirection::Import if !policy.allow_import => {
                Err(Reject::PolicyForbidsImport { group: name })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn assign_group_to_partner(
        &mut self,
        partner: &str,
        group: &str,
        direction: TransferDirection,
    ) -> Result<Reply, Reject> {
        let group_id = self.group_id(group)?;
        self.partner(partner)?;
        self.check_policy_allows(group_id, direction)?;
        if let Some(found) = self.meta.partners.get_mut(partner) {
            match direction {
                TransferDirection::Export => found.export_groups.insert(group_id),
                TransferDirection::Import => found.import_groups.insert(group_id),
            };
        }
        Ok(Reply::Done)
    }

    pub(crate) fn unassign_group_from_partner(
        &mut self,
        partner: &str,
        group: &str,
        direction: TransferDirection,
    ) -> Result<Reply, Reject> {
        let group_id = self.group_id(group)?;
        let found = self.partner(partner)?;
        let assigned = match direction {
            TransferDirection::Export => found.export_groups.contains(&group_id),
            TransferDirection::Import => found.import_groups.contains(&group_id),
        };
        if !assigned {
            return Err(Reject::GroupNotAssignedToPartner {
                partner: partner.into(),
                group: group.into(),
            });
        }
        if let Some(found) = self.meta.partners.get_mut(partner) {
            match direction {
                TransferDirection::Export => found.export_groups.remove(&group_id),
                TransferDirection::Import => found.import_groups.remove(&group_id),
            };
        }
        Ok(Reply::Done)
    }

    /// Which keys of the selected data units may go to the partner (SPEC T3): in a group
    /// assigned to it for export whose policy still allows export; active, deactivated or
    /// compromised; in use by the data unit.
    pub fn export_selection(
        &self,
        partner: &str,
        data_units: &[DataUnitId],
        now_ms: u64,
    ) -> Result<(Vec<KeyId>, Vec<DataUnitId>), Reject> {
        let found = self.partner(partner)?;
        self.check_data_unit_selection(data_units)?;
        let exportable = |key: &Key| {
            let group_ok = key.group.is_some_and(|group| {
                found.export_groups.contains(&group) && self.group_policy(group).allow_export
            });
            group_ok && self.key_state_at(key, now_ms).may_decrypt()
        };
        let mut keys = BTreeSet::new();
        let mut units = BTreeSet::new();
        for unit in data_units.iter().filter_map(|id| self.data_units.get(id)) {
            for key in
                unit.keys_in_use().filter_map(|id| self.keys.get(id)).filter(|k| exportable(k))
            {
                keys.insert(key.id);
                units.insert(unit.id);
            }
        }
        Ok((keys.into_iter().collect(), units.into_iter().collect()))
    }

    /// The keys of the selected data units that an export to `partner` takes (SPEC T3), or
    /// why it is refused: a disabled partner; a key in a group assigned to the partner whose
    /// policy forbids export (refused whole, not left out: the tape would arrive unreadable);
    /// nothing exportable at all.
    pub fn export_to_partner(
        &self,
        partner: &str,
        data_units: &[DataUnitId],
        now_ms: u64,
    ) -> Result<(Vec<KeyId>, Vec<DataUnitId>), Reject> {
        let found = self.enabled_partner(partner)?;
        if self.meta.transfer_key_pair.is_none() {
            return Err(Reject::NoTransferKeyPair);
        }
        check_count("data units in one export", data_units.len(), TRANSFER_DATA_UNITS_MAX)?;
        for unit in data_units.iter().filter_map(|id| self.data_units.get(id)) {
            for key in unit.keys_in_use().filter_map(|id| self.keys.get(id)) {
                let Some(group) = key.group else { continue };
                if found.export_groups.contains(&group) && !self.group_policy(group).allow_export {
                    return Err(Reject::PolicyForbidsExport { group: self.group_name(group) });
                }
            }
        }
        let (keys, units) = self.export_selection(partner, data_units, now_ms)?;
        if keys.is_empty() {
            return Err(Reject::NothingSelected);
        }
        check_count("keys in one export", keys.len(), TRANSFER_KEYS_MAX)?;
        Ok((keys, units))
    }

    /// The export a KMA wrote (log format 3): the selection is checked again and must be the
    /// one the file holds; the audit log says who exported which keys to whom.
    pub(crate) fn record_transfer_export(
        &mut self,
        cx: &mut Cx<'_>,
        export: &TransferExport,
    ) -> Result<Reply, Reject> {
        check_name("user", &export.requested_by)?;
        let (keys, data_units) =
            self.export_to_partner(&export.partner, &export.data_units, cx.now_ms)?;
        if keys != export.keys {
            return Err(Reject::ExportSelectionChanged { partner: export.partner.clone() });
        }
        cx.event(AuditWhat::KeysExportedTo {
            partner: export.partner.clone(),
            requested_by: export.requested_by.clone(),
            file_id: export.file_id,
            keys: keys.clone(),
            data_units: data_units.len() as u32,
        });
        Ok(Reply::Exported { keys, data_units })
    }

    pub(crate) fn record_key_export(
        &mut self,
        cx: &mut Cx<'_>,
        partner: &str,
        data_units: &[DataUnitId],
    ) -> Result<Reply, Reject> {
        if self.meta.transfer_key_pair.is_none() {
            return Err(Reject::NoTransferKeyPair);
        }
        let (keys, data_units) = self.export_selection(partner, data_units, cx.now_ms)?;
        cx.event(AuditWhat::KeysExported { partner: partner.into(), count: keys.len() as u32 });
        Ok(Reply::Exported { keys, data_units })
    }
}

impl State {
    /// The destination group of an import: assigned to the partner (if any) and allowing import.
    fn import_group(&self, group: &str, partner: Option<&str>) -> Result<KeyGroupId, Reject> {
        let group_id = self.group_id(group)?;
        if let Some(name) = partner {
            if !self.partner(name)?.import_groups.contains(&group_id) {
                return Err(Reject::GroupNotAssignedToPartner {
                    partner: name.into(),
                    group: group.into(),
                });
            }
        }
        self.check_policy_allows(group_id, TransferDirection::Import)?;
        Ok(group_id)
    }

    /// Sorts incoming keys into new ones and duplicates (same ID, same value); any key whose ID
    /// exists with another value aborts the whole import (SPEC M1).
    fn split_duplicates<'a>(
        &self,
        incoming: &'a [Incoming<'a>],
    ) -> Result<Vec<&'a Incoming<'a>>, Reject> {
        check_count("keys in one import", incoming.len(), IMPORT_KEYS_PER_COMMAND_MAX)?;
        let mut fresh: BTreeMap<KeyId, &Incoming<'_>> = BTreeMap::new();
        for key in incoming {
            let known = self
                .keys
                .get(&key.id)
                .map(|k| k.check_value)
                .or_else(|| fresh.get(&key.id).map(|k| k.check_value));
            match known {
                Some(value) if value != key.check_value => {
                    return Err(Reject::ImportValueMismatch { key_id: key.id })
                }
                Some(_) => {}
                None => {
                    fresh.insert(key.id, key);
                }
            }
        }
        Ok(fresh.into_values().collect())
    }

    pub(crate) fn insert_imported(&mut self, cx: &Cx<'_>, key: &Incoming<'_>, group: KeyGroupId) {
        let mut inserted = Key {
            id: key.id,
            origin: key.origin,
            group: Some(group),
            material: Some(key.material.clone()),
            check_value: key.check_value,
            protected: true,
            recovery_only: false,
            created_at_ms: key.created_at_ms,
            created_index: cx.index,
            activation: Some(key.activation),
            next_audit_at_ms: None,
            compromised_at_ms: key.compromised_at_ms.and_then(NonZeroU64::new),
            destroyed_at_ms: None,
            destroyed_index: None,
            data_units: SmallVec::new(),
        };
        inserted.next_audit_at_ms = inserted.transition_after(cx.now_ms).and_then(NonZeroU64::new);
        index_key(&mut self.index, &inserted);
        self.keys.insert(inserted.id, Box::new(inserted));
    }

    /// KMS 1.x keys: validated whole, then imported all or nothing, Process-only from now on
    /// (SPEC M1). The node parsed the file and wrapped the values before proposing.
    pub(crate) fn import_1x_keys(
        &mut self,
        cx: &mut Cx<'_>,
        group: &str,
        keys: &[Legacy1xKey],
    ) -> Result<Reply, Reject> {
        let group_id = self.import_group(group, None)?;
        for key in keys {
            check_text("key description", &key.description, DESCRIPTION_LEN_MAX, true)?;
        }
        let activation = self.process_only_from(group_id, cx.now_ms);
        let incoming: Vec<Incoming<'_>> =
            keys.iter().map(|key| Incoming::legacy(key, activation)).collect();
        let fresh = self.split_duplicates(&incoming)?;
        for key in &fresh {
            self.insert_imported(cx, key, group_id);
        }
        let (imported, duplicates) = (fresh.len() as u32, (keys.len() - fresh.len()) as u32);
        cx.event(AuditWhat::KeysImported { count: imported, duplicates });
        Ok(Reply::Imported { keys: imported, duplicates, data_units: 0 })
    }

    /// Keys and data units from a partner's file (SPEC T4). IDs keep the sender's cluster ID.
    pub(crate) fn import_transferred_keys(
        &mut self,
        cx: &mut Cx<'_>,
        partner: &str,
        group: &str,
        data_units: &[TransferredDataUnit],
    ) -> Result<Reply, Reject> {
        let group_id = self.import_group(group, Some(partner))?;
        let mut incoming = Vec::new();
        for unit in data_units {
            check_text("external tag", &unit.external_tag, EXTERNAL_TAG_LEN_MAX, true)?;
            for key in &unit.keys {
                incoming.push(Incoming {
                    id: key.id,
                    material: &key.material,
                    check_value: key.check_value,
                    origin: KeyOrigin::Transferred,
                    created_at_ms: key.created_at_ms,
                    activation: key.activation,
                    compromised_at_ms: key.compromised_at_ms,
                });
            }
        }
        check_count("data units in one import", data_units.len(), IMPORT_KEYS_PER_COMMAND_MAX)?;
        let fresh = self.split_duplicates(&incoming)?;
        let (imported, duplicates) = (fresh.len() as u32, (incoming.len() - fresh.len()) as u32);
        for key in &fresh {
            self.insert_imported(cx, key, group_id);
        }
        let new_units = self.merge_transferred_units(cx, data_units);
        cx.event(AuditWhat::KeysImported { count: imported, duplicates });
        Ok(Reply::Imported { keys: imported, duplicates, data_units: new_units })
    }

    /// A partner's file the KMA verified and decrypted (log format 3; SPEC T4): refused whole
    /// if the partner is disabled, the file was imported before, or a key is held with another
    /// value; the file's ID is remembered so that it is never imported twice.
    pub(crate) fn import_transfer_file(
        &mut self,
        cx: &mut Cx<'_>,
        import: &TransferImport,
    ) -> Result<Reply, Reject> {
        check_name("user", &import.requested_by)?;
        self.enabled_partner(&import.partner)?;
        if let Some(earlier) = self.meta.transfer_files.get(&import.file_id) {
            return Err(Reject::TransferFileReplayed {
                file_id: Fingerprint16(import.file_id),
                partner: earlier.partner.clone(),
                imported_at_ms: earlier.imported_at_ms,
            });
        }
        check_count(
            "transfer files imported",
            self.meta.transfer_files.len() + 1,
            TRANSFER_FILES_MAX,
        )?;
        let reply =
            self.import_transferred_keys(cx, &import.partner, &import.group, &import.data_units)?;
        let record = TransferFileRecord {
            partner: import.partner.clone(),
            requested_by: import.requested_by.clone(),
            imported_at_ms: cx.now_ms,
        };
        self.meta.transfer_files.insert(import.file_id, record);
        if let Reply::Imported { keys, duplicates, data_units } = &reply {
            cx.event(AuditWhat::KeysImportedFrom {
                partner: import.partner.clone(),
                requested_by: import.requested_by.clone(),
                file_id: import.file_id,
                count: *keys,
                duplicates: *duplicates,
                data_units: *data_units,
            });
        }
        Ok(reply)
    }

    /// Creates the data units not yet known and associates every listed key with its unit.
    fn merge_transferred_units(
        &mut self,
        cx: &mut Cx<'_>,
        data_units: &[TransferredDataUnit],
    ) -> u32 {
        let mut created = 0;
        for unit in data_units {
            if !self.data_units.contains_key(&unit.id) {
                let fresh = DataUnit {
                    id: unit.id,
                    external_tag: unit.external_tag.clone(),
                    created_at_ms: cx.now_ms,
                    keys: SmallVec::new(),
                };
                self.index.tags.insert((fresh.external_tag.clone(), unit.id));
                self.data_units.insert(unit.id, fresh);
                cx.event(AuditWhat::DataUnitCreated { data_unit: unit.id });
                created += 1;
            }
            for key in &unit.keys {
                let Some(found) = self.data_units.get_mut(&unit.id) else { continue };
                if found.association(&key.id).is_some() {
                    continue;
                }
                found.keys.push(KeyAssociation { key_id: key.id, in_use: true });
                if let Some(stored) = self.keys.get_mut(&key.id) {
                    stored.data_units.push(unit.id);
                }
            }
        }
        created
    }
}

impl State {
    /// Once no live backup holds a destroyed key's material, it is Completely destroyed (B4).
    pub(crate) fn mark_backup_destroyed(
        &mut self,
        cx: &mut Cx<'_>,
        id: u64,
    ) -> Result<Reply, Reject> {
        let backup = self.meta.backups.get(&id).ok_or(Reject::UnknownBackup { id })?;
        if backup.destroyed {
            return Err(Reject::BackupAlreadyDestroyed { id });
        }
        let (kind, covers_index) = (backup.kind, backup.covers_index);
        if kind != BackupKind::Database {
            if let Some(backup) = self.meta.backups.get_mut(&id) {
                backup.destroyed = true;
            }
            return Ok(Reply::Done);
        }
        let held_before: Vec<KeyId> = self
            .index
            .destroyed
            .range((covers_index + 1, KeyId([0; crate::ids::KEY_ID_LEN]))..)
            .map(|(_, key_id)| *key_id)
            .filter(|key_id| {
                self.keys.get(key_id).is_some_and(|key| key.created_index <= covers_index)
            })
            .collect();
        self.index.live_database_backups.remove(&(covers_index, id));
        if let Some(backup) = self.meta.backups.get_mut(&id) {
            backup.destroyed = true;
        }
        for key_id in held_before {
            let Some(key) = self.keys.get(&key_id) else { continue };
            if self.held_by_live_backup(key) {
                continue;
            }
            let to = self.key_state_at(key, cx.now_ms);
            let from = match to {
                KeyState::CompletelyDestroyedCompromised => {
                    KeyState::IncompletelyDestroyedCompromised
                }
                _ => KeyState::IncompletelyDestroyed,
            };
            cx.event(AuditWhat::KeyStateChanged { key_id, from, to, effective_at_ms: cx.now_ms });
        }
        Ok(Reply::Done)
    }

    pub(crate) fn set_backup_schedule(
        &mut self,
        schedule: Option<&BackupSchedule>,
    ) -> Result<Reply, Reject> {
        if let Some(schedule) = schedule {
            if schedule.interval_ms < 60_000 {
                return Err(Reject::InvalidSetting {
                    field: "interval_ms".into(),
                    reason: "must be at least one minute".into(),
                });
            }
            if !schedule.kma.is_empty() && !self.meta.kmas.contains_key(&schedule.kma) {
                return Err(Reject::UnknownKma { name: schedule.kma.clone() });
            }
        }
        self.meta.backup_schedule = schedule.cloned();
        Ok(Reply::Done)
    }
}
