//! Partner key transfer (SPEC T1–T4; issue 18 points 1–3): this cluster's transfer key,
//! partners (recorded through the quorum, their groups, enabled or not), and the files.
//!
//! Attacker's view:
//! - Reading the partners and our public keys is any user's (public keys are meant to travel).
//! - Partners are recorded and re-keyed only through a quorum operation started by a Security
//!   Officer; groups are assigned by a Compliance Officer; files are written and read for an
//!   Operator (`Access::AskKma`). The KMA does the cryptography and proposes the record: a
//!   user never sends wrapped material, and the state machine checks the selection again.
//! - An import's body is read only once the caller may import, and at most
//!   `security_core::transfer::FILE_LEN_MAX` of it; a file is verified against the named
//!   partner's recorded key before anything is decrypted, and its ID is refused a second
//!   time. Refusals name what is wrong with the file, never a key value.
//! - An export file leaves this KMA only once its record is committed: the audit log names
//!   every key that went out, to whom, for whom.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use security_core::transfer::{
    fingerprint_text, ExportKey, PayloadDataUnit, TransferDone, TransferPublicKeys, TransferWork,
    FILE_LEN_MAX,
};
use statemachine::command::{TransferDirection, TransferExport, TransferImport};
use statemachine::limits::TRANSFER_DATA_UNITS_MAX;
use statemachine::quorum::QuorumOperation;
use statemachine::{Access, Command, CommandKind, DataUnitId, Read, State as SmState};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wire::ErrorCode;

use super::extract::{Json, Path, Query};
use super::{check_user, read_at, read_point, run, user_of, AdminState, Answer, Refusal};
use crate::api::{
    Done, ErrorBody, NewPartner, Partner, PartnerGroup, ReadParams, TransferExportRequest,
    TransferImportParams, TransferKey,
};
use crate::backend::Caller;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(transfer_key))
        .routes(routes!(list_partners, create_partner))
        .routes(routes!(delete_partner))
        .routes(routes!(set_partner_enabled))
        .routes(routes!(assign_partner_group))
        .routes(routes!(unassign_partner_group))
        .routes(routes!(export))
        .routes(routes!(import))
}

fn public_keys(bytes: &[u8]) -> (String, String) {
    match TransferPublicKeys::from_bytes(bytes) {
        Ok(keys) => (keys.to_text(), keys.fingerprint_text()),
        // Recorded below log format 3, before keys had a format: shown, not interpreted.
        Err(_) => (hex::encode(bytes), String::new()),
    }
}

/// This cluster's transfer public keys and their fingerprint (SPEC T1).
#[utoipa::path(get, path = "/v1/transfer/key", tag = "transfer", params(ReadParams),
    responses((status = 200, body = TransferKey), (status = "default", body = ErrorBody)))]
async fn transfer_key(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<TransferKey> {
    read_at(&admin, &caller, read_point(&params)?, Read::Partners, |state, _| {
        let pair = state.meta().transfer_key_pair.as_ref().ok_or_else(|| {
            Refusal::not_found(
                "this cluster has no transfer key pair yet: an unlocked KMA makes it once \
                 every KMA runs this release; ask again in a minute",
            )
        })?;
        let (public_keys, fingerprint) = public_keys(&pair.public_key);
        Ok(TransferKey { public_keys, fingerprint, created_at_ms: pair.created_at_ms })
    })
    .await
    .map(Json)
}

fn group_names(
    state: &SmState,
    groups: &std::collections::BTreeSet<statemachine::KeyGroupId>,
) -> Vec<String> {
    groups.iter().filter_map(|id| state.meta().groups.get(id).map(|g| g.name.clone())).collect()
}

#[utoipa::path(get, path = "/v1/partners", tag = "transfer", params(ReadParams),
    responses((status = 200, body = Vec<Partner>), (status = "default", body = ErrorBody)))]
async fn list_partners(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<Vec<Partner>> {
    read_at(&admin, &caller, read_point(&params)?, Read::Partners, |state, _| {
        let partners = state.meta().partners.values().map(|partner| {
            let (public_keys, fingerprint) = public_keys(&partner.public_key);
            Partner {
                name: partner.name.clone(),
                public_keys,
                fingerprint,
                enabled: !state.partner_disabled(&partner.name),
                export_groups: group_names(state, &partner.export_groups),
                import_groups: group_names(state, &partner.import_groups),
                created_at_ms: partner.created_at_ms,
            }
        });
        Ok(partners.collect())
    })
    .await
    .map(Json)
}

/// Starts the quorum operation that records a partner, or new keys for one (SPEC T2, S4):
/// compare the fingerprint it answers with the partner's by another channel before the
/// members approve.
#[utoipa::path(post, path = "/v1/partners", tag = "transfer", request_body = NewPartner,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn create_partner(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(request): Json<NewPartner>,
) -> Answer<Done> {
    let keys = TransferPublicKeys::from_text(&request.public_keys)
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    let operation = QuorumOperation::CreateTransferPartner {
        name: request.name,
        public_key: keys.to_bytes().to_vec(),
    };
    let command = Command::StartQuorumOperation { operation, ttl_ms: request.ttl_ms };
    let Json(mut done) = run(&admin, &caller, command, None).await?;
    if let serde_json::Value::Object(detail) = &mut done.detail {
        detail.insert("fingerprint".into(), keys.fingerprint_text().into());
    }
    Ok(Json(done))
}

#[utoipa::path(delete, path = "/v1/partners/{name}", tag = "transfer",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn delete_partner(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::DeleteTransferPartner { name }, None).await
}

/// Disables a partner (no file goes to it or comes from it) or enables it again.
#[utoipa::path(put, path = "/v1/partners/{name}/enabled", tag = "transfer",
    request_body = crate::api::Enabled,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_partner_enabled(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(request): Json<crate::api::Enabled>,
) -> Answer<Done> {
    let command = Command::SetTransferPartnerEnabled { name, enabled: request.enabled };
    run(&admin, &caller, command, None).await
}

fn direction(text: &str) -> Result<TransferDirection, Refusal> {
    match text {
        "export" => Ok(TransferDirection::Export),
        "import" => Ok(TransferDirection::Import),
        other => Err(Refusal::bad_request(format!(
            "direction '{other}': a group is assigned to a partner for `export` or `import`"
        ))),
    }
}

#[utoipa::path(post, path = "/v1/partners/{name}/groups", tag = "transfer",
    request_body = PartnerGroup,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn assign_partner_group(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(request): Json<PartnerGroup>,
) -> Answer<Done> {
    let command = Command::AssignKeyGroupToPartner {
        partner: name,
        group: request.group,
        direction: direction(&request.direction)?,
    };
    run(&admin, &caller, command, None).await
}

#[utoipa::path(delete, path = "/v1/partners/{name}/groups/{direction}/{group}", tag = "transfer",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn unassign_partner_group(
    State(admin): State<AdminState>,
    caller: Caller,
    Path((name, way, group)): Path<(String, String, String)>,
) -> Answer<Done> {
    let command =
        Command::UnassignKeyGroupFromPartner { partner: name, group, direction: direction(&way)? };
    run(&admin, &caller, command, None).await
}

/// The data units a request names, by ID and by tag, each once.
fn selected(state: &SmState, request: &TransferExportRequest) -> Result<Vec<DataUnitId>, Refusal> {
    let mut units = std::collections::BTreeSet::new();
    for text in &request.data_units {
        let id = DataUnitId::from_hex(text).ok_or_else(|| {
            Refusal::bad_request(format!("'{text}' is not a data unit ID (32 hex digits)"))
        })?;
        units.insert(id);
    }
    for tag in &request.tags {
        let tagged = state.data_units_by_tag(tag);
        if tagged.is_empty() {
            return Err(Refusal::not_found(format!("no data unit has the external tag '{tag}'")));
        }
        units.extend(tagged);
    }
    if units.is_empty() {
        return Err(Refusal::bad_request("select data units: by ID, by tag, or from a file"));
    }
    if units.len() > TRANSFER_DATA_UNITS_MAX {
        return Err(Refusal::bad_request(format!(
            "{} data units selected; one transfer file holds at most {TRANSFER_DATA_UNITS_MAX}: \
             export them in several files",
            units.len()
        )));
    }
    Ok(units.into_iter().collect())
}

/// What the KMA seals: the keys with their records, the data units with their tags and keys.
struct Selection {
    partner_public: Vec<u8>,
    data_units: Vec<DataUnitId>,
    /// The keys the file holds, in ID order: what the record names.
    key_ids: Vec<statemachine::KeyId>,
    keys: Vec<ExportKey>,
    payload_units: Vec<PayloadDataUnit>,
}

fn selection(
    state: &SmState,
    request: &TransferExportRequest,
    now_ms: u64,
) -> Result<Selection, Refusal> {
    let units = selected(state, request)?;
    let (key_ids, data_units) = state
        .export_to_partner(&request.partner, &units, now_ms)
        .map_err(|reject| Refusal::rejected(&reject))?;
    let partner_public = state
        .meta()
        .partners
        .get(&request.partner)
        .map(|p| p.public_key.clone())
        .unwrap_or_default();
    let keys = key_ids
        .iter()
        .filter_map(|id| state.key(id))
        .filter_map(|key| {
            Some(ExportKey {
                id: key.id,
                material: key.material.clone()?,
                created_at_ms: key.created_at_ms,
                activation: key.activation?,
                compromised_at_ms: key.compromised_at_ms.map(|at| at.get()),
            })
        })
        .collect();
    let payload_units = data_units
        .iter()
        .filter_map(|id| state.data_units().get(id))
        .map(|unit| PayloadDataUnit {
            id: unit.id,
            external_tag: unit.external_tag.clone(),
            keys: unit
                .keys_in_use()
                .filter(|id| key_ids.binary_search(id).is_ok())
                .copied()
                .collect(),
        })
        .collect();
    Ok(Selection { partner_public, data_units, key_ids, keys, payload_units })
}

/// Writes a transfer file for a partner (SPEC T3): the keys of the selected data units that
/// may go to it, sealed to its key and signed by this cluster. The answer is the file; its ID
/// and counts are in the headers `x-kms-file-id`, `x-kms-keys` and `x-kms-data-units`.
#[utoipa::path(post, path = "/v1/transfer/export", tag = "transfer",
    request_body = TransferExportRequest,
    responses((status = 200, description = "The transfer file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = "default", body = ErrorBody)))]
async fn export(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(request): Json<TransferExportRequest>,
) -> Result<Response, Refusal> {
    let user = user_of(&caller)?;
    let now_ms = admin.node.now_ms();
    let chosen = {
        let state = admin.node.state().await;
        check_user(&state, &user, Access::AskKma(CommandKind::RecordKeyExport))?;
        selection(&state, &request, now_ms)?
    };
    let file_id: [u8; 16] = rand::random();
    let work = TransferWork::Export {
        file_id,
        created_at_ms: now_ms,
        partner_public: chosen.partner_public,
        keys: chosen.keys,
        data_units: chosen.payload_units,
    };
    let TransferDone::Exported(file) = admin.node.transfer(work).await? else {
        return Err(Refusal::new(ErrorCode::Internal, "the export was answered with an import"));
    };
    // The record names the keys the file holds: `apply` refuses it if the state would now
    // select others, and the file is then never handed out.
    let key_ids = chosen.key_ids;
    let record = TransferExport {
        partner: request.partner.clone(),
        requested_by: user,
        file_id,
        data_units: chosen.data_units.clone(),
        keys: key_ids.clone(),
    };
    let applied = admin.node.propose_system(Command::RecordTransferExport(record)).await?;
    if let Err(reject) = applied.result {
        return Err(Refusal::rejected(&reject));
    }
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (axum::http::HeaderName::from_static("x-kms-file-id"), hex::encode(file_id)),
        (axum::http::HeaderName::from_static("x-kms-keys"), key_ids.len().to_string()),
        (
            axum::http::HeaderName::from_static("x-kms-data-units"),
            chosen.data_units.len().to_string(),
        ),
        (axum::http::HeaderName::from_static("x-kms-index"), applied.index.to_string()),
    ];
    Ok((headers, file).into_response())
}

/// Imports a partner's transfer file (SPEC T4): verified against that partner's recorded key,
/// refused if imported before, decrypted here, and its keys and data units imported into a
/// group assigned to the partner for import. Key and data unit IDs keep the sender's cluster.
#[utoipa::path(post, path = "/v1/transfer/import", tag = "transfer", params(TransferImportParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The transfer file, as the partner sent it"),
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn import(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<TransferImportParams>,
    body: Body,
) -> Answer<Done> {
    let user = user_of(&caller)?;
    let partner_public = {
        let state = admin.node.state().await;
        check_user(&state, &user, Access::AskKma(CommandKind::ImportTransferredKeys))?;
        let partner = state.meta().partners.get(&params.partner).ok_or_else(|| {
            Refusal::not_found(format!(
                "no transfer partner '{}' (kmsctl partner list)",
                params.partner
            ))
        })?;
        if state.partner_disabled(&params.partner) {
            let reject = statemachine::Reject::PartnerDisabled { name: params.partner.clone() };
            return Err(Refusal::rejected(&reject));
        }
        partner.public_key.clone()
    };
    let too_large = || {
        format!(
            "the file is larger than {FILE_LEN_MAX} bytes, the most a transfer file is: it is not \
             a transfer file; nothing was imported"
        )
    };
    let file = super::imports::read_body(body, FILE_LEN_MAX, too_large).await?.to_vec();
    let work = TransferWork::Import { file, partner: params.partner.clone(), partner_public };
    let TransferDone::Imported(opened) = admin.node.transfer(work).await? else {
        return Err(Refusal::new(ErrorCode::Internal, "the import was answered with an export"));
    };
    let file_id = opened.header.file_id;
    let command = Command::ImportTransferFile(TransferImport {
        partner: params.partner,
        group: params.group,
        requested_by: user,
        file_id,
        data_units: opened.data_units,
    });
    let applied = admin.node.propose_system(command).await?;
    match applied.result {
        Ok(reply) => {
            let mut detail = crate::view::reply(&reply);
            if let serde_json::Value::Object(map) = &mut detail {
                map.insert("file_id".into(), hex::encode(file_id).into());
                map.insert(
                    "sender_fingerprint".into(),
                    fingerprint_text(&opened.header.sender_fingerprint).into(),
                );
            }
            Ok(Json(Done { index: applied.index, detail }))
        }
        Err(reject) => Err(Refusal::rejected(&reject)),
    }
}
