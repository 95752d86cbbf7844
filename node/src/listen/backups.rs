//! Taking backups through this KMA (SPEC B1, B2): a Backup Operator asks, this KMA writes the
//! file, the operator's client fetches it and says it kept it, and only then does this KMA
//! record the backup in the replicated state (`RecordBackup` is a KMA's command, never a
//! user's). A backup nobody kept is never listed.
//!
//! - `POST /v1/backups/database`: writes a database backup into `<data dir>/backups/`
//!   (the state streams through the sealer, see `backup`), answers its key file and checksum.
//! - `GET /v1/backups/database/{uuid}`: the file, streamed, to the user who took it.
//! - `POST /v1/backups/database/{uuid}/kept`: the client kept it (its SHA-256 must be the
//!   one written): recorded, and this KMA's copy removed.
//! - `GET /v1/backups/core-security` and `POST /v1/backups/core-security/kept`: the quorum's
//!   file, rendered from the state (deterministic, so the KMA can check what was kept).
//!
//! Attacker's view: only a Backup Operator's session reaches these routes. A backup costs a
//! full pass over the state and its size on this KMA's disk, so one KMA holds at most one
//! backup waiting to be fetched, for at most [`STAGED_TTL`]; another user's staged backup is
//! invisible (its UUID answers "not found"). The files hold nothing clear: the state's keys are
//! wrapped under the master key, and the whole stream under a fresh backup key that only the
//! master key opens.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use admin_api::api::{
    BackupKept, BackupRecorded, CoreSecurityBackupFile, DatabaseBackupTaken, ErrorCode,
};
use admin_api::routes::extract::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use sha2::{Digest, Sha256};
use statemachine::backup::BackupKind;
use statemachine::permission::{Access, CommandKind};
use statemachine::reply::Reply;
use statemachine::{Actor, Command};

use crate::backup::{self, TakenBackup, DATA_FILE_SUFFIX};
use crate::listen::management::Peer;
use crate::listen::security_api::{refuse, rejected};
use crate::pki::Identity;
use crate::view::Local;
use crate::write::Proposer;

/// How long a written backup waits for its user to fetch it.
pub const STAGED_TTL: Duration = Duration::from_secs(3600);

/// The directory under the data dir where backups wait to be fetched.
pub const STAGED_DIR: &str = "backups";

struct Staged {
    user: String,
    taken: TakenBackup,
    at: Instant,
}

pub struct BackupsApi {
    local: Local,
    proposer: Proposer,
    staged: Mutex<Option<Staged>>,
    /// Held while a backup is being written: a second request is refused, not queued.
    writing: tokio::sync::Mutex<()>,
}

impl BackupsApi {
    /// Removes what a previous run left in the staging directory: nobody can fetch it now.
    pub fn new(local: Local, proposer: Proposer) -> Self {
        let dir = local.layout.root.join(STAGED_DIR);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        BackupsApi { local, proposer, staged: Mutex::new(None), writing: Default::default() }
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Option<Staged>> {
        let mut staged = self.staged.lock().unwrap_or_else(PoisonError::into_inner);
        if staged.as_ref().is_some_and(|s| s.at.elapsed() >= STAGED_TTL) {
            if let Some(expired) = staged.take() {
                let _ = std::fs::remove_file(&expired.taken.path);
            }
        }
        staged
    }
}

pub fn routes() -> Router<Arc<BackupsApi>> {
    Router::new()
        .route("/v1/backups/database", post(take_database))
        .route("/v1/backups/database/{uuid}", get(fetch_database))
        .route("/v1/backups/database/{uuid}/kept", post(kept_database))
        .route("/v1/backups/core-security", get(core_security))
        .route("/v1/backups/core-security/kept", post(kept_core_security))
}

/// The caller, if a Backup Operator (the role that manages backups, SPEC S1).
async fn backup_operator(local: &Local, peer: &Peer) -> Result<String, Response> {
    let Some(Identity::User(user)) = peer.0.clone() else {
        return Err(refuse(ErrorCode::Unauthenticated, "log in as a Backup Operator first", false));
    };
    let access = Access::Command(CommandKind::MarkBackupDestroyed);
    let state = local.state.read().await;
    state.check_access(&Actor::User(user.clone()), access).map_err(|r| rejected(&r))?;
    Ok(user)
}

fn bad_uuid(uuid: &str) -> Response {
    let message = format!("no backup {uuid} waits on this KMA (it expired after an hour, this KMA restarted, or another user took it): take it again");
    refuse(ErrorCode::NotFound, message, false)
}

async fn take_database(
    State(api): State<Arc<BackupsApi>>,
    Extension(peer): Extension<Peer>,
) -> Response {
    let user = match backup_operator(&api.local, &peer).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    let Ok(_writing) = api.writing.try_lock() else {
        return refuse(
            ErrorCode::Throttled,
            "a backup is being written on this KMA now: try again when it is done",
            true,
        );
    };
    if let Some(waiting) = api.staged().as_ref() {
        let message = format!(
            "backup {} waits on this KMA to be fetched by {}: fetch it and confirm it was kept, \
             or wait until it expires (an hour after it was taken)",
            hex::encode(waiting.taken.uuid),
            waiting.user
        );
        return refuse(ErrorCode::Throttled, message, true);
    }
    let dir = api.local.layout.root.join(STAGED_DIR);
    if let Err(error) = std::fs::create_dir_all(&dir) {
        let message = format!("cannot create {}: {error}", dir.display());
        return refuse(ErrorCode::Internal, message, false);
    }
    let uuid_name = hex::encode(rand::random::<[u8; 16]>());
    let path: PathBuf = dir.join(format!("{uuid_name}{DATA_FILE_SUFFIX}"));
    let taken = match backup::take_database_backup(&api.local, &path).await {
        Ok(taken) => taken,
        Err(backup::BackupError::Locked) => {
            return refuse(ErrorCode::KmaLocked, backup::BackupError::Locked.to_string(), true)
        }
        Err(error) => {
            tracing::warn!(%error, "database backup failed");
            return refuse(ErrorCode::Unavailable, error.to_string(), true);
        }
    };
    let cluster = api.local.state.read().await.cluster_id().map(|c| c.0).unwrap_or_default();
    let answer = DatabaseBackupTaken {
        backup_uuid: hex::encode(taken.uuid),
        covers_index: taken.summary.covers_index,
        size_bytes: taken.bytes,
        sha256: hex::encode(taken.sha256),
        key_file: taken.key_file.clone(),
        file_name: format!(
            "kms-{cluster:016x}-{:012}{DATA_FILE_SUFFIX}",
            taken.summary.covers_index
        ),
    };
    tracing::info!(
        user = %user,
        covers_index = taken.summary.covers_index,
        bytes = taken.bytes,
        "database backup written; waiting for its user to fetch it"
    );
    *api.staged() = Some(Staged { user, taken, at: Instant::now() });
    Json(answer).into_response()
}

/// The staged backup `uuid` of `user`, if it is theirs.
fn staged_of(api: &BackupsApi, user: &str, uuid: &str) -> Option<TakenBackup> {
    let staged = api.staged();
    let staged = staged.as_ref()?;
    (staged.user == user && hex::encode(staged.taken.uuid) == uuid).then(|| staged.taken.clone())
}

async fn fetch_database(
    State(api): State<Arc<BackupsApi>>,
    Extension(peer): Extension<Peer>,
    Path(uuid): Path<String>,
) -> Response {
    let user = match backup_operator(&api.local, &peer).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    let Some(taken) = staged_of(&api, &user, &uuid) else { return bad_uuid(&uuid) };
    let file = match tokio::fs::File::open(&taken.path).await {
        Ok(file) => file,
        Err(_) => return bad_uuid(&uuid),
    };
    let body =
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 16));
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (axum::http::header::CONTENT_LENGTH, taken.bytes.to_string()),
    ];
    (headers, body).into_response()
}

async fn kept_database(
    State(api): State<Arc<BackupsApi>>,
    Extension(peer): Extension<Peer>,
    Path(uuid): Path<String>,
    Json(kept): Json<BackupKept>,
) -> Response {
    let user = match backup_operator(&api.local, &peer).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    let Some(taken) = staged_of(&api, &user, &uuid) else { return bad_uuid(&uuid) };
    if !kept.sha256.eq_ignore_ascii_case(&hex::encode(taken.sha256)) {
        let message =
            "the file kept is not the one this KMA wrote (its SHA-256 differs): fetch it again";
        return refuse(ErrorCode::BadRequest, message, false);
    }
    let command = taken.record(&api.local.config.name, file_name(&kept.file_name), &user);
    let answer = record(&api, command).await;
    if answer.status().is_success() {
        let mut staged = api.staged();
        if staged.as_ref().is_some_and(|s| s.taken.uuid == taken.uuid) {
            *staged = None;
        }
        let _ = std::fs::remove_file(&taken.path);
    }
    answer
}

/// Only the file's own name is listed: a client's directories are its own business.
fn file_name(kept: &str) -> &str {
    kept.rsplit(['/', '\\']).next().unwrap_or(kept)
}

async fn record(api: &BackupsApi, command: Command) -> Response {
    // A cluster still below log format 3 takes the record in its older shape.
    let command = api.local.state.read().await.backup_record_to_propose(command);
    match api.proposer.propose(api.proposer.system(command)).await {
        Ok(applied) => match applied.result {
            Ok(Reply::BackupRecorded { id }) => {
                Json(BackupRecorded { id, index: applied.index }).into_response()
            }
            Ok(other) => {
                let message = format!("the backup record was answered unexpectedly: {other:?}");
                refuse(ErrorCode::Internal, message, false)
            }
            Err(reject) => rejected(&reject),
        },
        Err(error) => {
            let message = format!("the backup could not be recorded ({error}): confirm again");
            refuse(ErrorCode::Unavailable, message, true)
        }
    }
}

async fn core_security_file(local: &Local) -> Result<CoreSecurityBackupFile, Response> {
    let state = local.state.read().await;
    let Some(file) = backup::core_security_backup(&state) else {
        return Err(refuse(ErrorCode::NotInitialised, "the cluster is not initialised", false));
    };
    let text = file.render();
    Ok(CoreSecurityBackupFile {
        quorum_version: file.quorum_version,
        file_name: format!(
            "kms-{:016x}-quorum-{}.core-security.toml",
            file.cluster_id.0, file.quorum_version
        ),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        text,
    })
}

async fn core_security(
    State(api): State<Arc<BackupsApi>>,
    Extension(peer): Extension<Peer>,
) -> Response {
    if let Err(refused) = backup_operator(&api.local, &peer).await {
        return refused;
    }
    match core_security_file(&api.local).await {
        Ok(file) => Json(file).into_response(),
        Err(refused) => refused,
    }
}

async fn kept_core_security(
    State(api): State<Arc<BackupsApi>>,
    Extension(peer): Extension<Peer>,
    Json(kept): Json<BackupKept>,
) -> Response {
    let user = match backup_operator(&api.local, &peer).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    let file = match core_security_file(&api.local).await {
        Ok(file) => file,
        Err(refused) => return refused,
    };
    if !kept.sha256.eq_ignore_ascii_case(&file.sha256) {
        let message = "the file kept is not the current quorum's core security backup (the \
                       quorum changed, or the file was altered): take it again";
        return refuse(ErrorCode::BadRequest, message, false);
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&Sha256::digest(file.text.as_bytes()));
    let command = Command::RecordBackup {
        kind: BackupKind::CoreSecurity,
        kma: api.local.config.name.clone(),
        file_name: file_name(&kept.file_name).into(),
        covers_index: file.quorum_version,
        taken_by: user,
        size_bytes: file.text.len() as u64,
        file_sha256: sha256,
        state_sha256: [0; 32],
        backup_uuid: [0; 16],
    };
    record(&api, command).await
}
