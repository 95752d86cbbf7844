//! `kma reset`: returns an appliance to factory defaults (SPEC C5). The cluster side is
//! `kmsctl kma delete`, which removes the KMA from the membership; this removes what the machine
//! still holds: its RocksDB (keys wrapped under the master key, the audit log), its certificates
//! and its sealed master key. With `scrub`, every file is overwritten before it is unlinked, so
//! that the blocks do not keep the wrapped keys for whoever reads the disk next.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::kma::NodeError;

/// What a reset did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResetReport {
    pub files: u64,
    pub bytes_scrubbed: u64,
}

fn io(what: &str, path: &Path, error: std::io::Error) -> NodeError {
    NodeError::Usage(format!("{what} {}: {error}", path.display()))
}

/// Overwrites a file in place with zeros, then with 0xFF, syncing after each pass.
fn scrub_file(path: &Path) -> Result<u64, NodeError> {
    let len = fs::metadata(path).map_err(|e| io("cannot stat", path, e))?.len();
    let mut file =
        OpenOptions::new().write(true).open(path).map_err(|e| io("cannot open", path, e))?;
    let block = vec![0u8; 1 << 20];
    for fill in [0x00u8, 0xFF] {
        let block: Vec<u8> = block.iter().map(|_| fill).collect();
        file.seek(SeekFrom::Start(0)).map_err(|e| io("cannot seek", path, e))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n]).map_err(|e| io("cannot overwrite", path, e))?;
            left -= n as u64;
        }
        file.sync_all().map_err(|e| io("cannot sync", path, e))?;
    }
    Ok(len)
}

fn walk(dir: &Path, scrub: bool, report: &mut ResetReport) -> Result<(), NodeError> {
    for entry in fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
        let path = entry.map_err(|e| io("cannot list", dir, e))?.path();
        let kind = fs::symlink_metadata(&path).map_err(|e| io("cannot stat", &path, e))?;
        if kind.is_dir() {
            walk(&path, scrub, report)?;
        } else {
            if scrub && kind.is_file() {
                report.bytes_scrubbed += scrub_file(&path)?;
            }
            report.files += 1;
        }
    }
    Ok(())
}

/// Resets the KMA whose data directory is `data_dir`. Refuses while the KMA runs (its RocksDB
/// is locked) and refuses a directory that is not a KMA's, so a typo cannot wipe anything else.
pub fn reset(data_dir: &Path, scrub: bool) -> Result<ResetReport, NodeError> {
    if !data_dir.join("kma.toml").exists() {
        return Err(NodeError::Usage(format!(
            "{} holds no kma.toml: not a KMA data directory, nothing reset",
            data_dir.display()
        )));
    }
    let raft_dir = crate::config::DataDirLayout::new(data_dir).raft_dir();
    if raft_dir.join("rocksdb").join("LOCK").exists() {
        // RocksDB holds an fcntl lock on LOCK while open: opening it again tells us whether
        // the KMA still runs.
        if raft_storage::RocksDataDir::open(&raft_dir).is_err() {
            return Err(NodeError::Usage(format!(
                "the KMA in {} is running (its database is locked): stop it first",
                data_dir.display()
            )));
        }
    }
    let mut report = ResetReport::default();
    walk(data_dir, scrub, &mut report)?;
    fs::remove_dir_all(data_dir).map_err(|e| io("cannot remove", data_dir, e))?;
    Ok(report)
}
