//! Keys and data units (SPEC O4–O9): paged lists, lookups, and the operations that can cost
//! data. Destroys and key group changes answer first with an impact preview; they run only when
//! the request comes back with the preview's digest, and only if the impact is still the same
//! (the state machine recomputes it at apply time for data unit selections).

use axum::extract::State;
use statemachine::command::DestroySelection;
use statemachine::list::{page_size, DataUnitFilter, KeyFilter};
use statemachine::Read;
use statemachine::{Command, DataUnitId, KeyId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path, Query};
use super::{read, read_at, read_point, run, AdminState, Answer, Refusal};
use crate::api::{
    parse_data_unit_state, parse_key_state, ChangeKeyGroup, DataUnit, DataUnitQuery,
    DestroyDataUnitKeys, DestroyKeys, DestroyOption, Done, ErrorBody, Key, KeyIds, KeyQuery, Page,
    PreviewOrDone, ReadParams,
};
use crate::backend::Caller;
use crate::view;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys))
        .routes(routes!(get_key))
        .routes(routes!(compromise_keys))
        .routes(routes!(destroy_keys))
        .routes(routes!(list_data_units))
        .routes(routes!(get_data_unit))
        .routes(routes!(destroy_data_unit_keys))
        .routes(routes!(change_key_group))
}

pub(crate) fn key_id(text: &str) -> Result<KeyId, Refusal> {
    KeyId::from_hex(text).ok_or_else(|| {
        Refusal::bad_request(format!("'{text}' is not a key ID (60 hexadecimal digits)"))
    })
}

pub(crate) fn data_unit_id(text: &str) -> Result<DataUnitId, Refusal> {
    DataUnitId::from_hex(text).ok_or_else(|| {
        Refusal::bad_request(format!("'{text}' is not a data unit ID (32 hexadecimal digits)"))
    })
}

fn digest(text: &str) -> Result<u64, Refusal> {
    u64::from_str_radix(text, 16).map_err(|_| {
        Refusal::bad_request(format!("'{text}' is not a preview digest (16 hexadecimal digits)"))
    })
}

/// Keys filtered by state, key group or data unit, paged on the server (SPEC U2).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(KeyQuery),
    responses((status = 200, body = Page<Key>), (status = "default", body = ErrorBody)))]
async fn list_keys(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(query): Query<KeyQuery>,
) -> Answer<Page<Key>> {
    let state_filter = match &query.state {
        Some(name) => Some(parse_key_state(name).ok_or_else(|| {
            let names: Vec<&str> = crate::api::key_state_names().collect();
            Refusal::bad_request(format!(
                "unknown key state '{name}'; states: {}",
                names.join(", ")
            ))
        })?),
        None => None,
    };
    let data_unit = query.data_unit.as_deref().map(data_unit_id).transpose()?;
    let after = query.after.as_deref().map(key_id).transpose()?;
    read(&admin, &caller, query.min_index, Read::Keys, |state, now_ms| {
        let group = match &query.group {
            Some(name) => Some(
                state
                    .group_by_name(name)
                    .ok_or_else(|| Refusal::not_found(format!("unknown key group '{name}'")))?
                    .id,
            ),
            None => None,
        };
        let filter = KeyFilter { state: state_filter, group, data_unit };
        let page = state.keys_page(&filter, after, page_size(query.limit), now_ms);
        Ok(Page {
            rows: page.rows.iter().map(|key| view::key(state, key, now_ms)).collect(),
            next: page.resume_after.map(|id| id.to_string()),
        })
    })
    .await
    .map(Json)
}

#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", params(ReadParams),
    responses((status = 200, body = Key), (status = "default", body = ErrorBody)))]
async fn get_key(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<ReadParams>,
) -> Answer<Key> {
    let id = key_id(&id)?;
    read_at(&admin, &caller, read_point(&params)?, Read::Keys, |state, now_ms| {
        let key = state.key(&id).ok_or_else(|| Refusal::not_found(format!("unknown key {id}")))?;
        Ok(view::key(state, key, now_ms))
    })
    .await
    .map(Json)
}

/// Marks keys compromised (Compliance Officer, SPEC O7).
#[utoipa::path(post, path = "/v1/keys/compromise", tag = "keys", request_body = KeyIds,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn compromise_keys(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(request): Json<KeyIds>,
) -> Answer<Done> {
    let keys = request.keys.iter().map(|id| key_id(id)).collect::<Result<Vec<_>, _>>()?;
    run(&admin, &caller, Command::CompromiseKeys { keys }, None).await
}

/// Destroys keys by ID (Operator; deactivated or compromised keys only, SPEC O7). Without
/// `confirm`: the preview of the data units that would lose access. With it, the destroy carries
/// the confirmed digest, and `apply` recomputes the preview and refuses a stale one, so a data
/// unit that took one of the keys after this check still stops it. A cluster below log format 3
/// cannot apply that command yet: it gets the destroy without its digest, checked here only.
#[utoipa::path(post, path = "/v1/keys/destroy", tag = "keys", request_body = DestroyKeys,
    responses((status = 200, body = PreviewOrDone), (status = "default", body = ErrorBody)))]
async fn destroy_keys(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(request): Json<DestroyKeys>,
) -> Answer<PreviewOrDone> {
    let keys = request.keys.iter().map(|id| key_id(id)).collect::<Result<Vec<_>, _>>()?;
    let confirm = request.confirm.as_deref().map(digest).transpose()?;
    let (preview, command) = read(&admin, &caller, None, Read::ImpactPreview, |state, _| {
        let preview =
            state.key_destroy_preview(&keys).map_err(|reject| Refusal::rejected(&reject))?;
        let previewed =
            Command::DestroyKeysPreviewed { keys: keys.clone(), preview_digest: preview.digest };
        // The same gate the write path applies before proposing (SPEC C7).
        let command = match state.check_format(&previewed) {
            Ok(()) => previewed,
            Err(_) => Command::DestroyKeys { keys: keys.clone() },
        };
        Ok((preview, command))
    })
    .await?;
    match confirm {
        None => Ok(Json(PreviewOrDone::Preview(view::preview(&preview)))),
        // Checked here too, so that the usual stale confirmation gets the new digest back.
        Some(digest) if digest != preview.digest => Err(stale_preview(&preview)),
        Some(_) => {
            let Json(done) = run(&admin, &caller, command, None).await?;
            Ok(Json(PreviewOrDone::Done(done)))
        }
    }
}

fn stale_preview(preview: &statemachine::query::ImpactPreview) -> Refusal {
    Refusal::new(
        wire::ErrorCode::ConfirmationNeeded,
        format!(
            "the impact changed since the preview (digest now {:016x}); review the new preview \
             and confirm it",
            preview.digest
        ),
    )
}

/// Data units filtered by external tag or state, paged on the server (SPEC U2).
#[utoipa::path(get, path = "/v1/data-units", tag = "keys", params(DataUnitQuery),
    responses((status = 200, body = Page<DataUnit>), (status = "default", body = ErrorBody)))]
async fn list_data_units(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(query): Query<DataUnitQuery>,
) -> Answer<Page<DataUnit>> {
    let state_filter = match &query.state {
        Some(name) => Some(parse_data_unit_state(name).ok_or_else(|| {
            Refusal::bad_request(format!(
                "unknown data unit state '{name}'; states: no-key, normal, needs-rekey, shredded"
            ))
        })?),
        None => None,
    };
    let after = query.after.as_deref().map(data_unit_id).transpose()?;
    let filter = DataUnitFilter { external_tag: query.tag.clone(), state: state_filter };
    read(&admin, &caller, query.min_index, Read::DataUnits, |state, now_ms| {
        let page = state.data_units_page(&filter, after, page_size(query.limit), now_ms);
        Ok(Page {
            rows: page.rows.iter().map(|unit| view::data_unit(state, unit, now_ms)).collect(),
            next: page.resume_after.map(|id| id.to_string()),
        })
    })
    .await
    .map(Json)
}

#[utoipa::path(get, path = "/v1/data-units/{id}", tag = "keys", params(ReadParams),
    responses((status = 200, body = DataUnit), (status = "default", body = ErrorBody)))]
async fn get_data_unit(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<ReadParams>,
) -> Answer<DataUnit> {
    let id = data_unit_id(&id)?;
    read_at(&admin, &caller, read_point(&params)?, Read::DataUnits, |state, now_ms| {
        let unit = state
            .data_unit(&id)
            .ok_or_else(|| Refusal::not_found(format!("unknown data unit {id}")))?;
        Ok(view::data_unit(state, unit, now_ms))
    })
    .await
    .map(Json)
}

fn selection(option: DestroyOption) -> DestroySelection {
    match option {
        DestroyOption::DeactivatedOnly => DestroySelection::DeactivatedOnly,
        DestroyOption::CompromisedOnly => DestroySelection::CompromisedOnly,
        DestroyOption::DeactivatedAndCompromised => DestroySelection::DeactivatedAndCompromised,
    }
}

/// Destroys the keys of the selected data units (SPEC O7, O9); preview first.
#[utoipa::path(post, path = "/v1/data-units/destroy-keys", tag = "keys",
    request_body = DestroyDataUnitKeys,
    responses((status = 200, body = PreviewOrDone), (status = "default", body = ErrorBody)))]
async fn destroy_data_unit_keys(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(request): Json<DestroyDataUnitKeys>,
) -> Answer<PreviewOrDone> {
    let data_units =
        request.data_units.iter().map(|id| data_unit_id(id)).collect::<Result<Vec<_>, _>>()?;
    let selection = selection(request.option);
    match request.confirm.as_deref().map(digest).transpose()? {
        None => {
            read(&admin, &caller, None, Read::ImpactPreview, |state, now_ms| {
                let preview = state
                    .destroy_preview(&data_units, selection, now_ms)
                    .map_err(|reject| Refusal::rejected(&reject))?;
                Ok(Json(PreviewOrDone::Preview(view::preview(&preview))))
            })
            .await
        }
        Some(preview_digest) => {
            let command = Command::DestroyDataUnitKeys { data_units, selection, preview_digest };
            let Json(done) = run(&admin, &caller, command, None).await?;
            Ok(Json(PreviewOrDone::Done(done)))
        }
    }
}

/// Moves the keys of the selected data units to another key group (SPEC O8, O9); preview first.
#[utoipa::path(post, path = "/v1/data-units/change-key-group", tag = "keys",
    request_body = ChangeKeyGroup,
    responses((status = 200, body = PreviewOrDone), (status = "default", body = ErrorBody)))]
async fn change_key_group(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(request): Json<ChangeKeyGroup>,
) -> Answer<PreviewOrDone> {
    let data_units =
        request.data_units.iter().map(|id| data_unit_id(id)).collect::<Result<Vec<_>, _>>()?;
    match request.confirm.as_deref().map(digest).transpose()? {
        None => {
            read(&admin, &caller, None, Read::ImpactPreview, |state, now_ms| {
                let preview = state
                    .group_change_preview(&data_units, &request.group, now_ms)
                    .map_err(|reject| Refusal::rejected(&reject))?;
                Ok(Json(PreviewOrDone::Preview(view::preview(&preview))))
            })
            .await
        }
        Some(preview_digest) => {
            let command = Command::ChangeDataUnitKeyGroup {
                data_units,
                group: request.group,
                preview_digest,
            };
            let Json(done) = run(&admin, &caller, command, None).await?;
            Ok(Json(PreviewOrDone::Done(done)))
        }
    }
}
