//! Backups this KMA takes (SPEC B1, B2): a database backup streamed from the live state into
//! a sealed file, and the core security backup rendered from the replicated quorum. The file
//! formats are [`files`]'s; what a restore does with them is `setup::restore`'s.
//!
//! A database backup never stops this KMA or the cluster: the state streams under the same
//! locks as a snapshot build (reads go on, applies wait a moment), straight through the
//! backup key's sealer into a file, so no second copy of the state is held in memory. The file
//! is written under a `.part` name, synced, then renamed: a crash or a full disk leaves no file
//! that looks like a complete backup (the `.part` file is removed on failure and ignored
//! otherwise).

pub mod files;
pub mod schedule;

use std::io::Write;
use std::path::{Path, PathBuf};

use raft_storage::backup::BackupSummary;
use security_core::backup_file::{wrap_backup_key, BackupKey, BackupSealer};
use statemachine::backup::BackupKind;
use statemachine::Command;

use crate::pki;
use crate::view::Local;
use files::{
    BackupKeyFile, CoreSecurityBackup, DataFileHeader, HashingWriter, BACKUP_FILES_FORMAT,
};

/// The suffix of a database backup file; its key file adds `.key`.
pub const DATA_FILE_SUFFIX: &str = ".kmsdb";
pub const KEY_FILE_SUFFIX: &str = ".kmsdb.key";
/// A file being written; never listed, never restored from.
pub const PART_SUFFIX: &str = ".part";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("this KMA is locked: take the backup on an unlocked KMA (kmsctl kma list)")]
    Locked,
    #[error("the cluster is not initialised yet: nothing to back up")]
    NotInitialised,
    #[error("cannot write the backup to {path}: {source}; check free space and permissions there, then take it again")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Storage(#[from] raft_storage::StorageError),
    #[error("cannot read this KMA's CA certificate: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("cannot render the key file: {0}; this is a bug: report it")]
    Render(String),
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_path_buf(), source }
}

/// A database backup file written and synced under its final name.
#[derive(Clone, Debug)]
pub struct TakenBackup {
    pub uuid: [u8; 16],
    pub path: PathBuf,
    /// The key file's text (written by whoever keeps the pair: kmsctl or the schedule).
    pub key_file: String,
    pub summary: BackupSummary,
    pub sha256: [u8; 32],
    pub bytes: u64,
    pub taken_at_ms: u64,
}

impl TakenBackup {
    /// The record this KMA proposes once the pair is kept (the command is a KMA's, never a
    /// user's: SPEC B2).
    pub fn record(&self, kma: &str, file_name: &str, taken_by: &str) -> Command {
        Command::RecordBackup {
            kind: BackupKind::Database,
            kma: kma.into(),
            file_name: file_name.into(),
            covers_index: self.summary.covers_index,
            taken_by: taken_by.into(),
            size_bytes: self.bytes,
            file_sha256: self.sha256,
            state_sha256: self.summary.state_sha256,
            backup_uuid: self.uuid,
        }
    }
}

pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// Writes a database backup of this KMA's applied state to `path` (which must not exist).
pub async fn take_database_backup(local: &Local, path: &Path) -> Result<TakenBackup, BackupError> {
    let master = local.vault.master_key().ok_or(BackupError::Locked)?;
    let cluster_id = local.state.read().await.cluster_id().ok_or(BackupError::NotInitialised)?;
    let ca_certificate_pem = pki::read(&local.layout.tls_dir().join(pki::CA_FILE))?;
    let uuid: [u8; 16] = rand::random();
    let key = BackupKey::generate();
    let wrapped = wrap_backup_key(&master, cluster_id, &uuid, &key);
    drop(master);
    let taken_at_ms = now_ms();
    let header = DataFileHeader {
        cluster_id: cluster_id.0,
        backup_uuid: uuid,
        taken_at_ms,
        taken_on_kma: local.config.name.clone(),
        ca_certificate_pem,
    };
    let prefix = header.prefix();
    let part = part_path(path);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .map_err(io_error(&part))?;
    let written = write_sealed(local, file, &prefix, &key, &part).await;
    let (file, summary, sha256, bytes) = match written {
        Ok(written) => written,
        Err(error) => {
            let _ = std::fs::remove_file(&part);
            return Err(error);
        }
    };
    let finished = file
        .sync_all()
        .and_then(|()| std::fs::rename(&part, path))
        .and_then(|()| sync_parent(path));
    if let Err(source) = finished {
        let _ = std::fs::remove_file(&part);
        return Err(BackupError::Io { path: path.to_path_buf(), source });
    }
    let key_file = BackupKeyFile {
        format: BACKUP_FILES_FORMAT,
        cluster_id: format!("{:016x}", cluster_id.0),
        backup_uuid: hex::encode(uuid),
        data_file_sha256: hex::encode(sha256),
        data_file_bytes: bytes,
        covers_index: summary.covers_index,
        taken_at_ms,
        taken_on_kma: local.config.name.clone(),
        wrapped_backup_key: hex::encode(wrapped),
    }
    .render()
    .map_err(|e| BackupError::Render(e.to_string()))?;
    Ok(TakenBackup {
        uuid,
        path: path.to_path_buf(),
        key_file,
        summary,
        sha256,
        bytes,
        taken_at_ms,
    })
}

async fn write_sealed(
    local: &Local,
    file: std::fs::File,
    prefix: &[u8],
    key: &BackupKey,
    part: &Path,
) -> Result<(std::fs::File, BackupSummary, [u8; 32], u64), BackupError> {
    let mut out = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    out.write_all(prefix).map_err(io_error(part))?;
    let sealer = BackupSealer::new(out, key, prefix).map_err(io_error(part))?;
    let (sealer, summary) = local.state.export_backup(sealer).await?;
    let mut out = sealer.finish().map_err(io_error(part))?;
    // The checksum of header and sealed stream, then the SHA-256 of the whole file.
    let checksum = out.digest();
    out.write_all(&checksum).map_err(io_error(part))?;
    out.flush().map_err(io_error(part))?;
    let (sha256, bytes) = (out.digest(), out.bytes);
    let file = out
        .inner
        .into_inner()
        .map_err(|e| BackupError::Io { path: part.to_path_buf(), source: e.into_error() })?;
    Ok((file, summary, sha256, bytes))
}

pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(PART_SUFFIX);
    PathBuf::from(name)
}

/// Syncs the directory holding `path`, so that a rename into it survives a crash.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()
}

/// Writes `text` to `path` atomically (temporary name, sync, rename, sync the directory).
pub fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let part = part_path(path);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&part)?;
        file.write_all(text)?;
        file.sync_all()?;
        std::fs::rename(&part, path)?;
        sync_parent(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written
}

/// The core security backup of the quorum the state holds now.
pub fn core_security_backup(state: &statemachine::State) -> Option<CoreSecurityBackup> {
    let cluster_id = state.cluster_id()?;
    let quorum = &state.meta().quorum;
    Some(CoreSecurityBackup {
        cluster_id,
        quorum_version: state.meta().quorum_changed_index,
        threshold: quorum.threshold,
        shares: quorum.members.iter().map(|m| (m.id.clone(), m.wrapped_share.clone())).collect(),
    })
}
