//! KMS 1.x imports staged in batches (SPEC M1, issue 18 point 4).
//!
//! A 1.x export can hold more keys than one log entry may carry, yet the import must be all or
//! nothing. So the KMA that read the file stages it: [`Command::StageImport1x`] batches of at
//! most [`IMPORT_1X_BATCH_KEYS_MAX`] keys go into a pending import that no read of the state
//! sees (the staged keys live beside the keys, not among them), then one small
//! [`Command::CommitImport1x`] makes them all keys at once. [`Command::AbandonImport1x`] drops a
//! staged import whose file turned out bad; one whose KMA went quiet for
//! [`IMPORT_1X_IDLE_MS`] is dropped by the next pulse. Either way nothing of it was visible.
//!
//! The rules of M1 hold across batches: a key ID seen before with the same value (among the
//! keys or earlier in the file) is a duplicate; with another value the batch is refused, and
//! the KMA abandons the import. The commit checks the keys again: a key may have arrived
//! between the first batch and the commit.
//!
//! [`Command::StageImport1x`]: crate::Command::StageImport1x
//! [`Command::CommitImport1x`]: crate::Command::CommitImport1x
//! [`Command::AbandonImport1x`]: crate::Command::AbandonImport1x

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::apply::Cx;
use crate::audit::AuditWhat;
use crate::check::{check_count, check_name, check_text};
use crate::command::Legacy1xKey;
use crate::ids::{KeyId, KEY_ID_LEN};
use crate::limits::{
    DESCRIPTION_LEN_MAX, IMPORTS_1X_STAGED_MAX, IMPORT_1X_BATCH_KEYS_MAX, IMPORT_1X_FILE_KEYS_MAX,
    IMPORT_1X_IDLE_MS,
};
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::State;

/// A KMS 1.x import being staged: its keys are in `State::staged_1x` under its ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedImport1x {
    /// The destination key group, by name: the commit looks it up again.
    pub group: String,
    /// The user who asked the KMA to import the file (a Compliance Officer).
    pub requested_by: String,
    /// The KMA reading the file.
    pub kma: String,
    pub started_at_ms: u64,
    pub last_batch_at_ms: u64,
    /// Batches staged so far: the next must carry this number.
    pub batches: u32,
    /// Keys of the file staged so far, duplicates included.
    pub keys_received: u64,
    /// Of those, keys already held (same ID, same value) or earlier in the file.
    pub duplicates: u64,
}

/// What a batch's number says of it.
enum NextBatch {
    /// The next batch, after this many keys staged.
    Continue(u64),
    /// The last batch staged, sent again: its answer.
    Repeat(Reply),
}

/// What the commit found, for the reply and the audit event.
struct Committed {
    imported: u64,
    duplicates: u64,
}

impl State {
    /// The imports being staged, by ID.
    pub fn staged_imports_1x(&self) -> &alloc::collections::BTreeMap<u64, StagedImport1x> {
        &self.meta.imports_1x
    }

    /// Keys staged under `import_id`, in key ID order.
    pub fn staged_keys_1x(&self, import_id: u64) -> impl Iterator<Item = &Legacy1xKey> + '_ {
        let from = (import_id, KeyId([0; KEY_ID_LEN]));
        let to = (import_id, KeyId([u8::MAX; KEY_ID_LEN]));
        self.staged_1x.range(from..=to).map(|(_, key)| key)
    }

    fn staged_import(&self, import_id: u64) -> Result<&StagedImport1x, Reject> {
        self.meta.imports_1x.get(&import_id).ok_or(Reject::UnknownImport { import_id })
    }

    /// `names`: the group, the user who asked, the KMA reading the file.
    pub(crate) fn stage_import_1x(
        &mut self,
        cx: &mut Cx<'_>,
        (import_id, batch): (u64, u32),
        names: (&str, &str, &str),
        keys: &[Legacy1xKey],
    ) -> Result<Reply, Reject> {
        let (group, requested_by, kma) = names;
        check_name("user", requested_by)?;
        check_name("KMA", kma)?;
        if keys.is_empty() {
            return Err(Reject::NothingSelected);
        }
        check_count("keys in one import batch", keys.len(), IMPORT_1X_BATCH_KEYS_MAX)?;
        for key in keys {
            check_text("key description", &key.description, DESCRIPTION_LEN_MAX, true)?;
        }
        self.import_destination_1x(group)?;
        let received = match self.next_batch(import_id, batch, names)? {
            NextBatch::Repeat(reply) => return Ok(reply),
            NextBatch::Continue(received) => received,
        };
        let total = received as usize + keys.len();
        check_count("keys in one KMS 1.x file", total, IMPORT_1X_FILE_KEYS_MAX)?;
        let (fresh, duplicates) = self.sort_batch(import_id, keys)?;
        let now_ms = cx.now_ms;
        let staged = self.meta.imports_1x.entry(import_id).or_insert_with(|| StagedImport1x {
            group: group.into(),
            requested_by: requested_by.into(),
            kma: kma.into(),
            started_at_ms: now_ms,
            last_batch_at_ms: now_ms,
            batches: 0,
            keys_received: 0,
            duplicates: 0,
        });
        staged.last_batch_at_ms = now_ms;
        staged.batches += 1;
        staged.keys_received += keys.len() as u64;
        staged.duplicates += duplicates;
        let (keys_received, duplicates) = (staged.keys_received, staged.duplicates);
        for key in fresh {
            self.staged_1x.insert((import_id, key.id), key.clone());
        }
        Ok(Reply::Staged1x { keys_received, duplicates })
    }

    /// Whether `batch` continues import `import_id` (the keys it staged so far), repeats its
    /// last batch (answered again, staged once), or is refused: out of order, another group,
    /// user or KMA, a new import beyond the bound.
    fn next_batch(
        &self,
        import_id: u64,
        batch: u32,
        (group, requested_by, kma): (&str, &str, &str),
    ) -> Result<NextBatch, Reject> {
        let Some(staged) = self.meta.imports_1x.get(&import_id) else {
            if batch != 0 {
                return Err(Reject::UnknownImport { import_id });
            }
            let pending = self.meta.imports_1x.len() + 1;
            check_count("KMS 1.x imports staged at once", pending, IMPORTS_1X_STAGED_MAX)?;
            return Ok(NextBatch::Continue(0));
        };
        if staged.group != group || staged.requested_by != requested_by || staged.kma != kma {
            return Err(Reject::InvalidSetting {
                field: "import".into(),
                reason: alloc::format!(
                    "import {import_id} stages keys for group '{}' asked by '{}' on KMA '{}': a \
                     batch must continue it unchanged",
                    staged.group,
                    staged.requested_by,
                    staged.kma
                ),
            });
        }
        if batch.checked_add(1) == Some(staged.batches) {
            // The last batch again: its KMA lost the answer. Staged once already.
            let (keys_received, duplicates) = (staged.keys_received, staged.duplicates);
            return Ok(NextBatch::Repeat(Reply::Staged1x { keys_received, duplicates }));
        }
        if batch != staged.batches {
            return Err(Reject::InvalidSetting {
                field: "batch".into(),
                reason: alloc::format!(
                    "import {import_id} has staged {} batches: the next is batch {}",
                    staged.batches,
                    staged.batches
                ),
            });
        }
        Ok(NextBatch::Continue(staged.keys_received))
    }

    /// The batch's new keys and its count of duplicates (a key held, or seen earlier in the
    /// file, with the same value); a key seen with another value refuses the batch. Changes
    /// nothing: a refused command changes nothing.
    fn sort_batch<'k>(
        &self,
        import_id: u64,
        keys: &'k [Legacy1xKey],
    ) -> Result<(Vec<&'k Legacy1xKey>, u64), Reject> {
        let mut fresh: alloc::collections::BTreeMap<KeyId, &Legacy1xKey> = Default::default();
        let mut duplicates = 0u64;
        for key in keys {
            let known = self
                .keys
                .get(&key.id)
                .map(|k| k.check_value)
                .or_else(|| self.staged_1x.get(&(import_id, key.id)).map(|k| k.check_value))
                .or_else(|| fresh.get(&key.id).map(|k| k.check_value));
            match known {
                Some(value) if value != key.check_value => {
                    return Err(Reject::ImportValueMismatch { key_id: key.id })
                }
                Some(_) => duplicates += 1,
                None => {
                    fresh.insert(key.id, key);
                }
            }
        }
        Ok((fresh.into_values().collect(), duplicates))
    }

    /// The destination of a 1.x import: an existing group whose policy allows import (M1).
    pub fn import_destination_1x(&self, group: &str) -> Result<crate::ids::KeyGroupId, Reject> {
        let group_id = self.group_id(group)?;
        if !self.group_policy(group_id).allow_import {
            return Err(Reject::PolicyForbidsImport { group: group.into() });
        }
        Ok(group_id)
    }

    pub(crate) fn commit_import_1x(
        &mut self,
        cx: &mut Cx<'_>,
        import_id: u64,
        keys_received: u64,
    ) -> Result<Reply, Reject> {
        let staged = self.staged_import(import_id)?.clone();
        if staged.keys_received != keys_received {
            return Err(Reject::ImportIncomplete {
                import_id,
                staged: staged.keys_received,
                expected: keys_received,
            });
        }
        let group_id = self.import_destination_1x(&staged.group)?;
        let mut late_duplicates = 0u64;
        for key in self.staged_keys_1x(import_id) {
            match self.keys.get(&key.id) {
                Some(held) if held.check_value != key.check_value => {
                    return Err(Reject::ImportValueMismatch { key_id: key.id })
                }
                Some(_) => late_duplicates += 1,
                None => {}
            }
        }
        let duplicates = staged.duplicates + late_duplicates;
        if duplicates == staged.keys_received {
            return Err(Reject::ImportAllDuplicates { keys: staged.keys_received });
        }
        let committed = self.insert_staged_1x(cx, import_id, group_id, duplicates);
        cx.event(AuditWhat::Keys1xImported {
            import_id,
            requested_by: staged.requested_by,
            group: group_id,
            count: committed.imported,
            duplicates: committed.duplicates,
        });
        Ok(Reply::Imported {
            keys: committed.imported as u32,
            duplicates: committed.duplicates as u32,
            data_units: 0,
        })
    }

    /// Moves the staged keys of `import_id` among the keys, Process-only from now on (M1).
    fn insert_staged_1x(
        &mut self,
        cx: &mut Cx<'_>,
        import_id: u64,
        group: crate::ids::KeyGroupId,
        duplicates: u64,
    ) -> Committed {
        let activation = self.process_only_from(group, cx.now_ms);
        let staged = self.take_staged_1x(import_id);
        let mut imported = 0u64;
        for key in &staged {
            if self.keys.contains_key(&key.id) {
                continue;
            }
            let incoming = crate::apply_transfer::Incoming::legacy(key, activation);
            self.insert_imported(cx, &incoming, group);
            imported += 1;
        }
        self.meta.imports_1x.remove(&import_id);
        Committed { imported, duplicates }
    }

    fn take_staged_1x(&mut self, import_id: u64) -> Vec<Legacy1xKey> {
        let ids: Vec<(u64, KeyId)> = self
            .staged_1x
            .range((import_id, KeyId([0; KEY_ID_LEN]))..=(import_id, KeyId([u8::MAX; KEY_ID_LEN])))
            .map(|(at, _)| *at)
            .collect();
        ids.into_iter().filter_map(|at| self.staged_1x.remove(&at)).collect()
    }

    pub(crate) fn abandon_import_1x(
        &mut self,
        cx: &mut Cx<'_>,
        import_id: u64,
        reason: &str,
    ) -> Result<Reply, Reject> {
        check_text("reason", reason, crate::limits::DETAIL_LEN_MAX, true)?;
        self.staged_import(import_id)?;
        self.drop_import_1x(cx, import_id, reason, false);
        Ok(Reply::Done)
    }

    fn drop_import_1x(&mut self, cx: &mut Cx<'_>, import_id: u64, reason: &str, expired: bool) {
        let Some(staged) = self.meta.imports_1x.remove(&import_id) else { return };
        self.take_staged_1x(import_id);
        cx.event(AuditWhat::Import1xAbandoned {
            import_id,
            requested_by: staged.requested_by,
            keys_received: staged.keys_received,
            reason: reason.into(),
            expired,
        });
    }

    /// Pulse: drops the imports whose KMA sent nothing for [`IMPORT_1X_IDLE_MS`].
    pub(crate) fn expire_imports_1x(&mut self, cx: &mut Cx<'_>) {
        let now_ms = cx.now_ms;
        let idle: Vec<u64> = self
            .meta
            .imports_1x
            .iter()
            .filter(|(_, staged)| {
                staged.last_batch_at_ms.saturating_add(IMPORT_1X_IDLE_MS) <= now_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for import_id in idle {
            self.drop_import_1x(cx, import_id, "no batch for an hour", true);
        }
    }
}
