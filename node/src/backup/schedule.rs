//! Scheduled database backups, each followed by a restore drill (SPEC B5).
//!
//! Which KMA takes them: the one the schedule names, else the follower voter with the lowest
//! node ID (a follower, so that the leader's work is not slowed), else on a one-KMA cluster
//! the leader itself. It writes into `backup_dir` of its `kma.toml` (other storage than the
//! data dir), and after each backup:
//!
//! 1. **drill**: a separate process (`kma restore-drill`) decrypts the file with the backup key
//!    (given on its standard input), restores it into a scratch directory, and reports the
//!    SHA-256 of the state it decoded. It must equal the digest of this KMA's live state at
//!    the backup's index, computed while the backup streamed: every KMA's state at an index
//!    is the same, so that is the cluster's digest there. Anything else fails the drill;
//! 2. the backup and the drill's result are recorded in the replicated state (audit log,
//!    `kmsctl backup list`, metrics);
//! 3. once it passed: the ship command runs, and backups beyond `backups_kept` are removed.
//!
//! The schedule is read from the applied state, and the time of the last scheduled backup
//! from its record there, so a restart (or another KMA taking over) neither skips nor repeats.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use security_core::backup_file::unwrap_backup_key;
use serde::{Deserialize, Serialize};
use statemachine::backup::BackupKind;
use statemachine::reply::Reply;
use statemachine::Command;
use tokio::io::AsyncWriteExt;

use crate::backup::{self, TakenBackup, DATA_FILE_SUFFIX, KEY_FILE_SUFFIX};
use crate::view::Local;
use crate::write::Proposer;

/// How often the duty looks at the schedule.
const TICK: Duration = Duration::from_secs(5);
/// Longest a drill may take before it counts as failed.
const DRILL_TIMEOUT: Duration = Duration::from_secs(3600);

/// What `kma restore-drill` prints (one JSON line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    pub covers_index: u64,
    pub state_sha256: String,
    pub audit_rows: u64,
}

pub async fn run(local: Local, proposer: Proposer) {
    // A backup interrupted by a crash left its `.part` file: never recorded, never complete.
    if let Some(dir) = &local.config.backup_dir {
        remove_parts(dir);
    }
    let mut warned_no_dir = false;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(interval_ms) = due(&local).await else { continue };
        let Some(dir) = local.config.backup_dir.clone() else {
            if !warned_no_dir {
                tracing::warn!(
                    "the backup schedule has this KMA take backups, but its kma.toml sets no \
                     backup_dir: set one (on other storage than the data dir) and restart"
                );
                warned_no_dir = true;
            }
            continue;
        };
        match scheduled_backup(&local, &proposer, &dir).await {
            Ok(passed) => tracing::info!(passed, "scheduled backup taken and drilled"),
            Err(error) => {
                // A failing disk or a locked KMA: do not spin on it.
                let pause_ms = (interval_ms / 10).max(60_000);
                let retry_in_s = pause_ms / 1000;
                tracing::warn!(%error, retry_in_s, "scheduled backup failed; trying again");
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            }
        }
    }
}

/// The schedule's interval, when this KMA should take a backup now.
async fn due(local: &Local) -> Option<u64> {
    let metrics = local.raft.metrics().borrow().clone();
    let state = local.state.read().await;
    let schedule = state.meta().backup_schedule.clone()?;
    let me = &local.config.name;
    let taker = if schedule.kma.is_empty() {
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        let followers = voters.iter().copied().filter(|id| Some(*id) != metrics.current_leader);
        match followers.min() {
            Some(follower) => follower == local.node_id(),
            None => metrics.current_leader == Some(local.node_id()),
        }
    } else {
        &schedule.kma == me
    };
    if !taker || state.cluster_id().is_none() {
        return None;
    }
    let last = state
        .meta()
        .backups
        .values()
        .filter(|b| b.kind == BackupKind::Database && b.taken_by.is_empty() && &b.kma == me)
        .map(|b| b.taken_at_ms)
        .max();
    let now = backup::now_ms();
    let due = last.is_none_or(|last| now >= last.saturating_add(schedule.interval_ms));
    due.then_some(schedule.interval_ms)
}

#[derive(Debug, thiserror::Error)]
enum ScheduleError {
    #[error("{0}")]
    Backup(#[from] backup::BackupError),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot record the backup: {0}")]
    Record(String),
}

/// One scheduled backup with its drill; `Ok(passed)` once both are recorded.
async fn scheduled_backup(
    local: &Local,
    proposer: &Proposer,
    dir: &Path,
) -> Result<bool, ScheduleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScheduleError::Io { path: path.clone(), source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cluster = local.state.read().await.cluster_id().map(|c| c.0).unwrap_or_default();
    let stamp = time::OffsetDateTime::now_utc();
    let name = format!(
        "kms-{cluster:016x}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second()
    );
    let data = dir.join(format!("{name}{DATA_FILE_SUFFIX}"));
    let key = dir.join(format!("{name}{KEY_FILE_SUFFIX}"));
    let taken = backup::take_database_backup(local, &data).await?;
    if let Err(error) = backup::write_atomically(&key, taken.key_file.as_bytes()) {
        let _ = std::fs::remove_file(&data);
        return Err(ScheduleError::Io { path: key, source: error });
    }
    let file_name = format!("{name}{DATA_FILE_SUFFIX}");
    let record = taken.record(&local.config.name, &file_name, "");
    let record = local.state.read().await.backup_record_to_propose(record);
    let backup_id = match proposer.propose(proposer.system(record)).await {
        Ok(applied) => match applied.result {
            Ok(Reply::BackupRecorded { id }) => id,
            other => return Err(ScheduleError::Record(format!("{other:?}"))),
        },
        Err(error) => return Err(ScheduleError::Record(error.to_string())),
    };
    let (passed, detail) = match drill(local, &taken).await {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    let command = Command::RecordBackupDrill {
        backup_id,
        kma: local.config.name.clone(),
        passed,
        detail: detail.clone(),
    };
    if let Err(error) = proposer.propose(proposer.system(command)).await {
        tracing::warn!(%error, backup_id, "the drill's result could not be recorded");
    }
    if !passed {
        tracing::error!(backup_id, %detail, "restore drill FAILED: this backup may not restore");
        return Ok(false);
    }
    if let Some(ship) = &local.config.backup_ship_command {
        ship_files(ship, &data, &key).await;
    }
    prune(dir, local.config.backups_kept);
    Ok(true)
}

/// Restores `taken` in a separate process; `Ok` with what matched, `Err` with why not.
async fn drill(local: &Local, taken: &TakenBackup) -> Result<String, String> {
    let master = local.vault.master_key().ok_or("this KMA was locked before the drill")?;
    let cluster_id = local.state.read().await.cluster_id().ok_or("no cluster")?;
    let key_file = backup::files::BackupKeyFile::read(&taken.path.with_extension("kmsdb.key"))
        .map_err(|e| e.to_string())?;
    let wrapped = key_file.wrapped_key("the key file").map_err(|e| e.to_string())?;
    let key = unwrap_backup_key(&master, cluster_id, &taken.uuid, &wrapped)
        .map_err(|e| format!("the key file does not open: {e}"))?;
    drop(master);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the kma program: {e}"))?;
    let scratch = local.layout.root.join("restore-drill");
    let _ = std::fs::remove_dir_all(&scratch);
    let mut child = tokio::process::Command::new(exe)
        .arg("restore-drill")
        .arg("--data")
        .arg(&taken.path)
        .arg("--scratch")
        .arg(&scratch)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the drill process: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let hex_key = zeroize::Zeroizing::new(hex::encode(*key.to_bytes()));
        let written = stdin.write_all(hex_key.as_bytes()).await;
        written.map_err(|e| format!("cannot hand the drill its key: {e}"))?;
    }
    let output = tokio::time::timeout(DRILL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("the drill took longer than {} s", DRILL_TIMEOUT.as_secs()))?
        .map_err(|e| format!("the drill process failed: {e}"))?;
    let _ = std::fs::remove_dir_all(&scratch);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").trim().to_string();
        return Err(format!("the restore failed: {last}"));
    }
    let report: DrillReport = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("the drill's report is unreadable: {e}"))?;
    let expected = hex::encode(taken.summary.state_sha256);
    if report.covers_index != taken.summary.covers_index || report.state_sha256 != expected {
        return Err(format!(
            "restored state at index {} has digest {}, the cluster's at index {} is {expected}",
            report.covers_index, report.state_sha256, taken.summary.covers_index
        ));
    }
    Ok(format!(
        "restored in a separate process: state digest {} at index {} matches, {} audit events",
        &expected[..16],
        report.covers_index,
        report.audit_rows
    ))
}

async fn ship_files(program: &Path, data: &Path, key: &Path) {
    let status = tokio::process::Command::new(program).arg(data).arg(key).status().await;
    match status {
        Ok(status) if status.success() => tracing::info!(data = %data.display(), "backup shipped"),
        Ok(status) => {
            tracing::warn!(%status, program = %program.display(), "the backup ship command failed")
        }
        Err(error) => {
            tracing::warn!(%error, program = %program.display(), "cannot run the backup ship command")
        }
    }
}

fn remove_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(crate::backup::PART_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
            tracing::info!(file = %entry.path().display(), "unfinished backup removed");
        }
    }
}

/// Keeps the `kept` newest scheduled backups (their names sort by time) in `dir`.
fn prune(dir: &Path, kept: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut data: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(DATA_FILE_SUFFIX))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("kms-")))
        .collect();
    data.sort();
    let excess = data.len().saturating_sub(kept.max(1) as usize);
    for old in data.into_iter().take(excess) {
        let mut key = old.as_os_str().to_os_string();
        key.push(".key");
        let _ = std::fs::remove_file(&old);
        let _ = std::fs::remove_file(PathBuf::from(key));
        tracing::info!(file = %old.display(), "old scheduled backup removed");
    }
}

/// `kma restore-drill`: restores a backup into `scratch` with the backup key read from
/// standard input (hex), and prints a [`DrillReport`]. Run by [`drill`] as a separate process,
/// so that a restore that crashes or runs out of memory fails the drill, not the KMA.
pub fn restore_drill(data: &Path, scratch: &Path) -> anyhow::Result<DrillReport> {
    use std::io::Read;
    let mut hex_key = zeroize::Zeroizing::new(String::new());
    std::io::stdin().take(128).read_to_string(&mut hex_key)?;
    let bytes = zeroize::Zeroizing::new(hex::decode(hex_key.trim())?);
    let bytes: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| anyhow::anyhow!("the key is not 32 bytes"))?;
    let key = security_core::backup_file::BackupKey::from_bytes(&bytes);
    let checked = backup::files::CheckedDataFile::open(data)?;
    let opened =
        security_core::backup_file::BackupOpener::new(checked.sealed()?, &key, &checked.prefix)?;
    let mut digest = None;
    let restored = raft_storage::backup::restore_data_dir(scratch, opened, "drill", |state, _| {
        // The digest of the state as the backup holds it, before any change a restore makes.
        digest = Some(raft_storage::backup::state_sha256(state));
        Ok((Vec::new(), 0))
    })?;
    let digest = digest.ok_or_else(|| anyhow::anyhow!("the restore step did not run"))?;
    Ok(DrillReport {
        covers_index: restored.backup.covers_index,
        state_sha256: hex::encode(digest),
        audit_rows: restored.backup.audit_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setup: five scheduled backups (data and key files) and a file of the operator's in the
    /// backup directory. Action: prune to three. Expect: the two oldest pairs are gone, the
    /// three newest and the operator's file stay. (SPEC B5)
    #[test]
    fn b5_pruning_keeps_the_newest_scheduled_backups_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = |n: u32| format!("kms-00000000000000aa-2026120{n}T000000Z");
        for n in 1..=5 {
            std::fs::write(dir.path().join(format!("{}{DATA_FILE_SUFFIX}", name(n))), b"d")
                .expect("data file");
            std::fs::write(dir.path().join(format!("{}{KEY_FILE_SUFFIX}", name(n))), b"k")
                .expect("key file");
        }
        std::fs::write(dir.path().join("notes.kmsdb"), b"mine").expect("operator's file");
        prune(dir.path(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut expected = vec!["notes.kmsdb".to_string()];
        for n in 3..=5 {
            expected.push(format!("{}{DATA_FILE_SUFFIX}", name(n)));
            expected.push(format!("{}{KEY_FILE_SUFFIX}", name(n)));
        }
        expected.sort();
        assert_eq!(left, expected);
    }
}
