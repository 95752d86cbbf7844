//! Records of database and core security backups (SPEC B1–B5), and what a restore ceremony tells
//! the state (SPEC B3, B7). The files live outside the cluster; the state only remembers that
//! they exist, what they hold and whether a restore drill read one back.

use alloc::string::String;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupKind {
    /// The whole state at `covers_index`, encrypted under a fresh backup key.
    Database,
    /// The master key split and wrapped per quorum member; holds no key material of its own.
    /// Its `covers_index` is the quorum version it holds (`Meta::quorum_changed_index`).
    CoreSecurity,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub id: u64,
    pub kind: BackupKind,
    /// The KMA that wrote the backup.
    pub kma: String,
    pub file_name: String,
    /// A database backup: the last log index whose effects it holds. A core security backup:
    /// the quorum version it holds, the index of the quorum change (`Meta::quorum_changed_index`).
    pub covers_index: u64,
    pub taken_at_ms: u64,
    /// Marked by a Backup Operator once every copy of the file is gone (SPEC B4).
    pub destroyed: bool,
    // Log format 3, snapshot format 4 (issue 17); empty or zero in records of older formats.
    /// The user ID who asked for the backup; empty for the backup schedule (SPEC B5), for a
    /// restore's own record, and in records of older formats.
    pub taken_by: String,
    pub size_bytes: u64,
    /// SHA-256 of the backup file as written, so that an operator can tell a copy is whole.
    pub file_sha256: [u8; 32],
    /// SHA-256 of the snapshot encoding of the state the file holds (`codec::encode_snapshot`);
    /// all zero for a core security backup, which holds no state.
    pub state_sha256: [u8; 32],
    /// Made by the KMA that wrote the file, and written into it: a restore names its backup by
    /// it, since backup IDs are given by the cluster after the file was written.
    pub backup_uuid: [u8; 16],
    /// The last restore drill of this database backup (SPEC B6): `None` until a KMA read the
    /// file back on a scratch state and recorded the outcome.
    pub drill: Option<BackupDrill>,
}

/// A restore drill: a KMA decrypted a database backup into a scratch state and checked it
/// (`Command::RecordBackupDrill`). Proves the file and its key file restore, before a disaster
/// needs them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupDrill {
    /// The time of the entry that recorded the drill.
    pub at_ms: u64,
    /// The KMA that ran the drill.
    pub kma: String,
    pub passed: bool,
    /// What the drill found, for the operator (at most [`crate::limits::DETAIL_LEN_MAX`]).
    pub detail: String,
}

/// What `Command::RestoreCluster` restored, and what [`crate::State::restore_summary`] says a
/// restore of a state would restore: counts, for the ceremony's report to the operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSummary {
    pub keys: u64,
    pub data_units: u64,
    pub agents: u64,
    pub users: u64,
    pub key_groups: u64,
    /// Unassigned pool keys made recovery-only (SPEC A5).
    pub pool_keys_quarantined: u64,
    /// KMA entries of the lost cluster removed.
    pub kmas_removed: u64,
}
