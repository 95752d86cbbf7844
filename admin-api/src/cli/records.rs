//! `kmsctl backup` (SPEC B2, B4, B5).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Subcommand};
use reqwest::Method;

use super::args::duration_ms;
use super::context::Ctx;
use super::exit::CliError;
use super::render;
use crate::api::{
    Backup, BackupKept, BackupRecorded, BackupSchedule, CoreSecurityBackupFile, DatabaseBackupTaken,
};

#[derive(Clone, Debug, Subcommand)]
pub enum BackupCommand {
    /// List the backups the cluster knows of: index, time, size, who took them, drill result.
    List,
    /// Take a database backup (SPEC B2) from the KMA this profile reaches first, without
    /// stopping it: writes FILE (the encrypted state) and FILE.key (its backup key, wrapped
    /// under the master key). Keep them apart from the core security backup.
    Database {
        /// The data file to write (must not exist); the key file is FILE.key.
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
    /// Save the core security backup of the current quorum (SPEC B1): member IDs, threshold
    /// and wrapped shares, no clear secret. Take one after every quorum change.
    CoreSecurity {
        /// The file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
    /// Record that a backup's files were destroyed (keys destroyed since become completely
    /// destroyed once no backup holds them).
    MarkDestroyed { id: u64 },
    /// Set or turn off scheduled database backups.
    #[command(group(ArgGroup::new("when").required(true)))]
    Schedule {
        /// Take a backup this often, e.g. 1d.
        #[arg(long, group = "when", value_parser = duration_ms, value_name = "DURATION")]
        interval: Option<u64>,
        /// Turn scheduled backups off.
        #[arg(long, group = "when")]
        off: bool,
        /// The KMA that takes them [default: a follower, so the leader is not slowed]. It
        /// writes them into the `backup_dir` of its kma.toml and drills a restore of each.
        #[arg(long, conflicts_with = "off")]
        kma: Option<String>,
    },
}

pub async fn backup(ctx: &Ctx, command: BackupCommand) -> Result<(), CliError> {
    let client = &ctx.client;
    match command {
        BackupCommand::List => {
            let rows: Vec<Backup> = client.get("/v1/backups").await?;
            ctx.show(&rows, |rows| render::backups(rows))
        }
        BackupCommand::Database { out } => database(ctx, &out).await,
        BackupCommand::CoreSecurity { out } => core_security(ctx, &out).await,
        BackupCommand::MarkDestroyed { id } => {
            let path = format!("/v1/backups/{id}/destroyed");
            let done = client.write::<()>(Method::POST, &path, None).await?;
            ctx.done(&format!("Backup {id} marked destroyed"), &done)
        }
        BackupCommand::Schedule { interval, off, kma } => {
            let body = BackupSchedule { interval_ms: if off { None } else { interval }, kma };
            let done = client.write(Method::PUT, "/v1/backups/schedule", Some(&body)).await?;
            let what = match body.interval_ms {
                None => "Scheduled backups turned off".to_string(),
                Some(ms) => format!(
                    "Backups scheduled every {}",
                    statemachine::duration::format_duration_ms(ms)
                ),
            };
            ctx.done(&what, &done)
        }
    }
}

/// The key file of a data file: `FILE.key`.
pub fn key_file_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_os_string();
    name.push(".key");
    PathBuf::from(name)
}

fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

fn file_error(path: &Path, error: std::io::Error) -> CliError {
    CliError::File { path: path.to_path_buf(), detail: format!("cannot write: {error}") }
}

fn refuse_existing(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        return Err(CliError::usage(format!(
            "{} exists: a backup never overwrites a file; choose another --out",
            path.display()
        )));
    }
    Ok(())
}

/// Writes `bytes` under a temporary name, syncs, renames: never a half file under `path`.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let part = part_path(path);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&part)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&part, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&part);
        return Err(file_error(path, error));
    }
    Ok(())
}

async fn database(ctx: &Ctx, out: &Path) -> Result<(), CliError> {
    let key_path = key_file_path(out);
    refuse_existing(out)?;
    refuse_existing(&key_path)?;
    let client = &ctx.client;
    let taken: DatabaseBackupTaken =
        client.send::<(), _>(Method::POST, "/v1/backups/database", None).await?;
    // The backup waits on the KMA that wrote it: fetch and confirm there.
    let kma = client.at(client.current_address());
    let part = part_path(out);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .map_err(|e| file_error(&part, e))?;
    let path = format!("/v1/backups/database/{}", taken.backup_uuid);
    let fetched = kma.download(&path, &mut file).await;
    let kept = fetched.map_err(CliError::from).and_then(|(bytes, sha256)| {
        if bytes != taken.size_bytes || hex::encode(sha256) != taken.sha256 {
            return Err(CliError::Other {
                help: None,
                message: format!(
                    "the backup fetched ({bytes} bytes) is not the one the KMA wrote ({} bytes, \
                 SHA-256 {}): take it again",
                    taken.size_bytes, taken.sha256
                ),
            });
        }
        file.sync_all().map_err(|e| file_error(&part, e))?;
        std::fs::rename(&part, out).map_err(|e| file_error(out, e))
    });
    if let Err(error) = kept {
        let _ = std::fs::remove_file(&part);
        return Err(error);
    }
    write_atomically(&key_path, taken.key_file.as_bytes())?;
    let body = BackupKept { file_name: file_name(out), sha256: taken.sha256.clone() };
    let path = format!("/v1/backups/database/{}/kept", taken.backup_uuid);
    let recorded: BackupRecorded = kma.send(Method::POST, &path, Some(&body)).await?;
    client.observe_index(recorded.index);
    let message = format!(
        "Backup {} taken: {} ({} bytes, log index {}) and its key file {}\n",
        recorded.id,
        out.display(),
        taken.size_bytes,
        taken.covers_index,
        key_path.display()
    );
    ctx.show(&recorded, |_| message.clone())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

async fn core_security(ctx: &Ctx, out: &Path) -> Result<(), CliError> {
    refuse_existing(out)?;
    let client = &ctx.client;
    let file: CoreSecurityBackupFile = client.get("/v1/backups/core-security").await?;
    write_atomically(out, file.text.as_bytes())?;
    let body = BackupKept { file_name: file_name(out), sha256: file.sha256.clone() };
    let recorded: BackupRecorded =
        client.send(Method::POST, "/v1/backups/core-security/kept", Some(&body)).await?;
    client.observe_index(recorded.index);
    let message = format!(
        "Core security backup {} saved to {} (quorum version {}); destroy older copies\n",
        recorded.id,
        out.display(),
        file.quorum_version
    );
    ctx.show(&recorded, |_| message.clone())
}
