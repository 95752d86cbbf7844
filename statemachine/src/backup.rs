//! Records of database and core security backups (SPEC B1–B4). The files live outside the
//! cluster; the state only remembers that they exist and what they hold.

use alloc::string::String;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupKind {
    /// The whole state at `covers_index`, encrypted under a fresh backup key.
    Database,
    /// The master key split and wrapped per quorum member; holds no key material of its own.
    CoreSecurity,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub id: u64,
    pub kind: BackupKind,
    /// The KMA that wrote the backup.
    pub kma: String,
    pub file_name: String,
    /// The last log index whose effects the backup holds.
    pub covers_index: u64,
    pub taken_at_ms: u64,
    /// Marked by a Backup Operator once every copy of the file is gone (SPEC B4).
    pub destroyed: bool,
}
