//! Errors of the storage layer. Each names the operation, the column family or file and the key,
//! and ends with what the operator should do next (STYLE 11, 12).
//!
//! openraft treats every storage error as fatal: the Raft node stops. [`StorageError::into_raft`]
//! wraps ours into openraft's error so the message survives into the node's shutdown report.

use std::io;
use std::path::PathBuf;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

/// The data dir cannot be trusted: it is damaged or was written by software we cannot read.
pub const HELP_RESTORE: &str = "the data dir is corrupt or was written by another KMA version: \
     restore this KMA from the cluster (stop it, delete the data dir and rejoin), \
     or run the KMA software that wrote it";

/// The data dir is probably fine but the disk or the operating system refused the operation.
pub const HELP_DISK: &str = "check the disk that holds the data dir (free space, permissions, \
     I/O errors in the kernel log), then restart the KMA";

/// Another process holds the RocksDB lock of the data dir.
pub const HELP_LOCKED: &str =
    "another process (a second KMA?) uses this data dir: stop it, or give each KMA its own dir";

/// A snapshot received from the leader failed to decode.
pub const HELP_RECEIVED: &str = "the snapshot sent by the leader is damaged: restart this KMA so \
     that it fetches the snapshot again; if that repeats, check the leader's data dir";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open RocksDB in {dir}: {source}; {help}")]
    Open { dir: PathBuf, source: rocksdb::Error, help: &'static str },

    #[error("{dir} is not empty but holds no RocksDB database (no CURRENT file); {HELP_RESTORE}")]
    NotADatabase { dir: PathBuf },

    #[error("column family `{cf}` is missing in {dir}; {HELP_RESTORE}")]
    ColumnFamilyMissing { cf: &'static str, dir: PathBuf },

    #[error(
        "RocksDB {op} failed in column family `{cf}` at key {key} of {dir}: {source}; {HELP_DISK}"
    )]
    Rocks { op: &'static str, cf: &'static str, key: String, dir: PathBuf, source: rocksdb::Error },

    #[error(
        "cannot decode the {what} in column family `{cf}` at key {key} of {dir}: {detail}; \
         {HELP_RESTORE}"
    )]
    Decode { what: &'static str, cf: &'static str, key: String, dir: PathBuf, detail: String },

    #[error(
        "the {what} in {dir} has format version {found}; this software reads version \
         {supported}; {HELP_RESTORE}"
    )]
    FormatVersion { what: &'static str, dir: PathBuf, found: u8, supported: u8 },

    #[error("cannot encode the {what}: {detail}; this is a bug: report it, then restart the KMA")]
    Encode { what: &'static str, detail: String },

    #[error("cannot {op} {path}: {source}; {HELP_DISK}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },

    #[error("snapshot file {path} is corrupt: {detail}; {HELP_RESTORE}")]
    SnapshotCorrupt { path: PathBuf, detail: String },

    #[error("snapshot {snapshot} received from the leader is corrupt: {detail}; {HELP_RECEIVED}")]
    ReceivedSnapshotCorrupt { snapshot: String, detail: String },

    #[error(
        "the {op} task stopped before finishing: {detail}; this is a bug: report it, then \
         restart the KMA"
    )]
    Task { op: &'static str, detail: String },

    #[error(
        "the backup cannot be used: {detail}; take another backup, or restore from an older \
         copy of the backup files"
    )]
    BackupStream { detail: String },

    #[error("cannot write the backup: {source}; check free space where it goes, then try again")]
    BackupWrite { source: io::Error },

    #[error("cannot read the backup: {source}")]
    BackupRead { source: io::Error },

    #[error(
        "the state machine of this KMA has stopped (its Raft node shut down); restart the KMA"
    )]
    Closed,
}

impl StorageError {
    /// Wraps this error into openraft's, keeping the whole message and its cause.
    pub fn into_raft(
        self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
    ) -> openraft::StorageError<u64> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StorageError::Io { op, path, source }
    }

    pub(crate) fn task(op: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |error| StorageError::Task { op, detail: error.to_string() }
    }
}
