//! Snapshot files: written by streaming the state chunk by chunk into a temporary file that is
//! synced and then renamed, so a 10-million-key state is never held as one buffer, and a crash
//! never leaves a half-written file under a final name.
//!
//! The record naming the current snapshot (its openraft meta, file name, length and SHA-256) lives
//! in RocksDB ([`CF_SM_META`]); it is written only after the file is durable. On open, any other
//! file in `snapshots/` is a leftover of an interrupted build or transfer and is removed.
//!
//! These functions block: callers run them on `spawn_blocking` threads.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use statemachine::codec::SnapshotReader;
use statemachine::State;

use crate::data_dir::{encode, RocksDataDir, CF_SM_META};
use crate::error::StorageError;

/// Bytes read or written at a time: large enough for sequential disk speed, small against RAM.
pub const SNAPSHOT_CHUNK_LEN: usize = 1 << 20;

const KEY_SNAPSHOT: &str = "snapshot";
const SUFFIX_FINAL: &str = ".snap";
const SUFFIX_TEMP: &str = ".tmp";

/// The current snapshot, as recorded in RocksDB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub meta: SnapshotMeta<u64, BasicNode>,
    pub file: SnapshotFile,
}

/// A durable snapshot file in `snapshots/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub file_name: String,
    pub size_bytes: u64,
    pub sha256: [u8; 32],
}

impl SnapshotFile {
    /// Short content digest, used in file names and snapshot ids.
    pub fn digest_hex(&self) -> String {
        self.sha256[..8].iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

pub(crate) fn read_record(data_dir: &RocksDataDir) -> Result<Option<SnapshotRecord>, StorageError> {
    data_dir.get_decoded("snapshot record", CF_SM_META, KEY_SNAPSHOT)
}

pub(crate) fn write_record(
    data_dir: &RocksDataDir,
    record: &SnapshotRecord,
) -> Result<(), StorageError> {
    let mut batch = WriteBatch::default();
    batch.put_cf(data_dir.cf(CF_SM_META)?, KEY_SNAPSHOT, encode("snapshot record", record)?);
    data_dir.write_synced(batch, CF_SM_META, KEY_SNAPSHOT)
}

/// A snapshot file being written under a temporary name; removed if dropped unfinished.
pub(crate) struct SnapshotWriter {
    dir: PathBuf,
    temp_path: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    size_bytes: u64,
}

impl SnapshotWriter {
    /// `tag` makes the temporary name unique among concurrent writers (build, install).
    pub fn create(dir: &Path, tag: &str) -> Result<Self, StorageError> {
        let temp_path = dir.join(format!("{tag}{SUFFIX_TEMP}"));
        let file = File::create(&temp_path).map_err(StorageError::io("create", &temp_path))?;
        let dir = dir.to_path_buf();
        Ok(SnapshotWriter {
            dir,
            temp_path,
            file: Some(file),
            hasher: Sha256::new(),
            size_bytes: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let file = self.file.as_mut().ok_or_else(|| StorageError::Task {
            op: "snapshot write",
            detail: "writer already finished".into(),
        })?;
        file.write_all(bytes).map_err(StorageError::io("write", &self.temp_path))?;
        self.hasher.update(bytes);
        self.size_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Syncs the file, renames it to its final name (index and digest) and syncs the directory.
    pub fn finish(mut self, last_index: Option<u64>) -> Result<SnapshotFile, StorageError> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(StorageError::io("sync", &self.temp_path))?;
        }
        let sha256: [u8; 32] = self.hasher.finalize_reset().into();
        let mut snapshot =
            SnapshotFile { file_name: String::new(), size_bytes: self.size_bytes, sha256 };
        let index = last_index.map_or_else(|| "none".to_string(), |index| format!("{index:020}"));
        snapshot.file_name = format!("snapshot-{index}-{}{SUFFIX_FINAL}", snapshot.digest_hex());
        let final_path = self.dir.join(&snapshot.file_name);
        fs::rename(&self.temp_path, &final_path)
            .map_err(StorageError::io("rename into place", &final_path))?;
        sync_dir(&self.dir)?;
        Ok(snapshot)
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            if let Err(error) = fs::remove_file(&self.temp_path) {
                let path = self.temp_path.display();
                tracing::warn!(%path, %error, "cannot remove an unfinished snapshot file");
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StorageError::io("sync directory", dir))
}

/// Streams `state` into a new snapshot file.
pub(crate) fn write_state(
    dir: &Path,
    tag: &str,
    state: &State,
) -> Result<SnapshotWriter, StorageError> {
    let mut writer = SnapshotWriter::create(dir, tag)?;
    for chunk in statemachine::codec::snapshot_chunks(state, SNAPSHOT_CHUNK_LEN) {
        writer.write(&chunk)?;
    }
    Ok(writer)
}

/// Loads the state of the current snapshot, checking its length and SHA-256 against the record.
pub(crate) fn load(dir: &Path, file: &SnapshotFile) -> Result<State, StorageError> {
    let path = dir.join(&file.file_name);
    let corrupt = |detail: String| StorageError::SnapshotCorrupt { path: path.clone(), detail };
    let mut source = File::open(&path).map_err(StorageError::io("open", &path))?;
    let mut reader = SnapshotReader::new();
    let mut hasher = Sha256::new();
    let mut size_bytes = 0u64;
    let mut buffer = vec![0u8; SNAPSHOT_CHUNK_LEN];
    loop {
        let read = source.read(&mut buffer).map_err(StorageError::io("read", &path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size_bytes += read as u64;
        reader.push(&buffer[..read]).map_err(|e| corrupt(e.to_string()))?;
    }
    if size_bytes != file.size_bytes {
        return Err(corrupt(format!("{size_bytes} bytes where {} were written", file.size_bytes)));
    }
    if <[u8; 32]>::from(hasher.finalize()) != file.sha256 {
        return Err(corrupt("SHA-256 differs from the one recorded when it was written".into()));
    }
    reader.finish().map_err(|e| corrupt(e.to_string()))
}

/// Decodes a snapshot received from the leader while copying it into a snapshot file of ours
/// (openraft may hand us any file, so we keep our own copy under our own name).
pub(crate) fn copy_received(
    mut source: File,
    snapshot: &str,
    dir: &Path,
    tag: &str,
) -> Result<(State, SnapshotWriter), StorageError> {
    let snapshot = snapshot.to_string();
    let corrupt = |detail: String| StorageError::ReceivedSnapshotCorrupt {
        snapshot: snapshot.clone(),
        detail,
    };
    let source_path = PathBuf::from(format!("(snapshot {snapshot} as received)"));
    source.seek(SeekFrom::Start(0)).map_err(StorageError::io("seek", &source_path))?;
    let mut writer = SnapshotWriter::create(dir, tag)?;
    let mut reader = SnapshotReader::new();
    let mut buffer = vec![0u8; SNAPSHOT_CHUNK_LEN];
    loop {
        let read = source.read(&mut buffer).map_err(StorageError::io("read", &source_path))?;
        if read == 0 {
            break;
        }
        reader.push(&buffer[..read]).map_err(|e| corrupt(e.to_string()))?;
        writer.write(&buffer[..read])?;
    }
    let state = reader.finish().map_err(|e| corrupt(e.to_string()))?;
    Ok((state, writer))
}

/// Removes every snapshot or temporary file except `keep`.
pub(crate) fn remove_stale(dir: &Path, keep: Option<&str>) -> Result<(), StorageError> {
    let entries = fs::read_dir(dir).map_err(StorageError::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.ends_with(SUFFIX_FINAL) || name.ends_with(SUFFIX_TEMP);
        if ours && Some(name.as_ref()) != keep {
            remove_quietly(&entry.path());
        }
    }
    Ok(())
}

/// Removes a file nobody needs any more; a failure only leaves garbage behind, so it is logged.
pub(crate) fn remove_quietly(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "cannot remove an old snapshot file");
        }
    }
}
