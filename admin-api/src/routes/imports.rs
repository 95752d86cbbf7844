//! KMS 1.x imports (SPEC M1, issue 18 point 4): a Compliance Officer sends the file, this KMA
//! reads and checks every line, then wraps and stages the keys and commits them at once
//! (`crate::import_1x`); the user follows the progress.
//!
//! Attacker's view: only a user allowed to ask for a 1.x import (`Access::AskKma`, the
//! Compliance Officer) gets the body read at all, and at most [`IMPORT_1X_FILE_BYTES_MAX`] of
//! it; everyone else is refused before a byte of the file is buffered. The file holds clear key
//! values: it is copied into a zeroized buffer as it arrives and never logged; refusals name a
//! line and what is wrong with it, never a value. An import's progress is visible to its own
//! user only. A KMA reads at most `import_1x::UPLOADS_MAX` files at once and runs at most
//! `import_1x::RUNNING_MAX` imports; beyond, a request is refused before its body is read.

use axum::body::Body;
use axum::extract::State;
use http_body_util::BodyExt;
use statemachine::limits::{DESCRIPTION_LEN_MAX, IMPORT_1X_FILE_KEYS_MAX};
use statemachine::migration::parse_1x_key_file;
use statemachine::{Access, CommandKind};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wire::ErrorCode;
use zeroize::Zeroizing;

use super::extract::{Json, Path, Query};
use super::{check_user, user_of, AdminState, Answer, Refusal};
use crate::api::{ErrorBody, Import1xParams, Import1xProgress, Import1xStarted};
use crate::backend::Caller;

/// The longest 1.x file accepted: its most keys, each on a line of two 64-digit fields, the
/// longest description and separators.
pub const IMPORT_1X_FILE_BYTES_MAX: usize =
    IMPORT_1X_FILE_KEYS_MAX * (64 + 64 + DESCRIPTION_LEN_MAX + 8);

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(import_1x)).routes(routes!(import_1x_progress))
}

/// Imports a KMS 1.x key export file (`<key id>, <key value>[, <description>]` per line, SPEC
/// M1) into a key group whose policy allows import. Every line is checked first: a bad one is
/// refused with its number and nothing is imported. The keys are then staged and committed at
/// once, Process-only; follow the import with `GET /v1/imports/1x/{import_id}`.
#[utoipa::path(post, path = "/v1/imports/1x", tag = "keys", params(Import1xParams),
    request_body(content = String, content_type = "text/plain",
        description = "The 1.x export file, as it is"),
    responses((status = 200, body = Import1xStarted), (status = "default", body = ErrorBody)))]
async fn import_1x(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<Import1xParams>,
    body: Body,
) -> Answer<Import1xStarted> {
    let user = user_of(&caller)?;
    {
        let state = admin.node.state().await;
        check_user(&state, &user, Access::AskKma(CommandKind::Import1xKeys))?;
        // The group is checked again when the keys are staged; a wrong name fails here at once.
        if let Err(reject) = state.import_destination_1x(&params.group) {
            return Err(Refusal::rejected(&reject));
        }
    }
    let slot = admin.imports_1x.upload_slot()?;
    let too_large = || {
        format!(
            "the file is larger than {IMPORT_1X_FILE_BYTES_MAX} bytes, the most a KMS 1.x import \
             takes ({IMPORT_1X_FILE_KEYS_MAX} keys): split it into files and import each; \
             nothing was imported"
        )
    };
    let file = read_body(body, IMPORT_1X_FILE_BYTES_MAX, too_large).await?;
    let text = std::str::from_utf8(&file).map_err(|e| {
        Refusal::bad_request(format!(
            "the file is not text (UTF-8) after byte {}: a KMS 1.x export is plain text; \
             nothing was imported",
            e.valid_up_to()
        ))
    })?;
    let keys = parse_1x_key_file(text).map_err(|e| Refusal::bad_request(e.to_string()))?;
    drop(file);
    let started = admin.imports_1x.start(admin.node.clone(), user, params.group, keys)?;
    drop(slot);
    Ok(Json(started))
}

/// The body, into a zeroized buffer (it may hold clear key values), refused past `limit`
/// bytes with `too_large` as the message.
pub(super) async fn read_body(
    body: Body,
    limit: usize,
    too_large: impl FnOnce() -> String,
) -> Result<Zeroizing<Vec<u8>>, Refusal> {
    let mut file = Zeroizing::new(Vec::new());
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Refusal::bad_request(format!("the file did not arrive whole ({e}): send it again"))
        })?;
        let Ok(data) = frame.into_data() else { continue };
        if file.len() + data.len() > limit {
            return Err(Refusal::new(ErrorCode::BodyTooLarge, too_large()));
        }
        if file.capacity() < file.len() + data.len() {
            // Grow into a new zeroized buffer, so that no copy of the values is left behind.
            let mut larger = Zeroizing::new(Vec::with_capacity((file.len() + data.len()) * 2));
            larger.extend_from_slice(&file);
            file = larger;
        }
        file.extend_from_slice(&data);
    }
    Ok(file)
}

/// Where a KMS 1.x import stands: staging (keys staged so far), committed (imported and
/// duplicates), or failed (why, and the line at fault). Only its own user sees it.
#[utoipa::path(get, path = "/v1/imports/1x/{import_id}", tag = "keys",
    responses((status = 200, body = Import1xProgress), (status = "default", body = ErrorBody)))]
async fn import_1x_progress(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(import_id): Path<String>,
) -> Answer<Import1xProgress> {
    let user = user_of(&caller)?;
    let not_found = || {
        Refusal::not_found(format!(
            "no KMS 1.x import {import_id} of yours is known to this KMA (imports are followed \
             on the KMA that runs them, for an hour after they end)"
        ))
    };
    let id = u64::from_str_radix(&import_id, 16).map_err(|_| not_found())?;
    admin.imports_1x.progress(&user, id).map(Json).ok_or_else(not_found)
}
