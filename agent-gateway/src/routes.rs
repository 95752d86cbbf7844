//! The agent operations (SPEC A2–A6) and discovery (SPEC C3). Each handler authenticates the
//! agent, proposes one state-machine command or runs one query, and unwraps key values only
//! to put them into the response: every rule is the state machine's.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use security_core::key_wrap::unwrap_key;
use security_core::MasterKey;
use statemachine::query::AgentKey;
use statemachine::{ClusterId, Command, DataUnitId, KeyId, Reply, RequestId};
use zeroize::{Zeroize, Zeroizing};

use crate::backend::Backend;
use crate::error::ApiError;
use crate::extract::{JsonBody, Path, Query};
use crate::handout::{handed_out, Route};
use crate::server::{authorize, claimed, json_response, secret_json_response, Gateway, Peer};
use crate::wire::{
    CreateDataUnitRequest, DataUnitCreated, DataUnitKeys, DisassociateRequest, Disassociated,
    Discovery, KeyLookup, KeyQuery, ReadQuery, SecretHex, WireKey, WriteKeyRequest,
    WriteKeyResponse,
};

type Gw<B> = State<Arc<Gateway<B>>>;

/// Key states are read at the local wall-clock time, as every KMA of the cluster does.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn data_unit_id(text: &str) -> Result<DataUnitId, ApiError> {
    DataUnitId::from_hex(text).ok_or_else(|| {
        ApiError::bad_request(format!("data unit ID {text:?}: expected 32 hex digits"))
    })
}

fn master_key<B: Backend>(gateway: &Gateway<B>) -> Result<MasterKey, ApiError> {
    gateway.backend.master_key().ok_or_else(ApiError::locked)
}

fn unexpected(reply: &Reply) -> ApiError {
    ApiError::internal(format!(
        "the state machine answered {reply:?}, which this gateway does not expect: \
         is this KMA's software older than the cluster's?"
    ))
}

/// The clear value of a key as hex, in a buffer that never grows (no stray copies).
fn wire_key(
    master: &MasterKey,
    cluster_id: ClusterId,
    key: &AgentKey,
) -> Result<WireKey, ApiError> {
    let material = unwrap_key(master, cluster_id, &key.key_id, &key.material)
        .map_err(|error| ApiError::unwrap_failed(&error.to_string()))?;
    let mut digits = [0u8; 64];
    let mut value = Zeroizing::new(String::with_capacity(digits.len()));
    let encoded = hex::encode_to_slice(material.as_bytes(), &mut digits)
        .ok()
        .and_then(|()| std::str::from_utf8(&digits).ok().map(|text| value.push_str(text)));
    digits.zeroize();
    encoded.ok_or_else(|| ApiError::internal("hex encoding of a key failed"))?;
    Ok(WireKey { key_id: key.key_id, state: key.state.name().into(), value: SecretHex(value) })
}

/// Proposes `command` for the authenticated agent; a rejection becomes the refusal.
async fn propose<B: Backend>(
    gateway: &Gateway<B>,
    agent_id: &str,
    request_id: Option<RequestId>,
    command: Command,
) -> Result<(u64, Reply), ApiError> {
    let applied = gateway.backend.propose(Some(agent_id), request_id, command).await?;
    Ok((applied.index, applied.result?))
}

/// Checks, on the local state once it has applied `min_index`, that the caller's certificate is
/// its agent's current one. The client sends the index of its enrollment: a KMA that lags
/// behind it would otherwise take a fresh certificate for one a re-enrollment revoked.
async fn authenticate<B: Backend>(
    gateway: &Gateway<B>,
    peer: &Peer,
    min_index: u64,
) -> Result<String, ApiError> {
    let claimed = claimed(peer)?;
    gateway.backend.read(min_index, |state| authorize(state, &claimed)).await??;
    Ok(claimed.agent_id.to_owned())
}

pub(crate) async fn discovery<B: Backend>(State(gateway): Gw<B>, peer: Peer) -> Response {
    let kmas = gateway.backend.discovery().await;
    let cluster_id = gateway.backend.cluster_id().map(|id| id.to_string());
    let agent_site = match claimed(&peer) {
        Ok(claimed) => gateway
            .backend
            .read(0, |state| {
                authorize(state, &claimed).ok()?;
                state.meta().agents.get(claimed.agent_id).map(|agent| agent.site.clone())
            })
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    json_response(&Discovery { cluster_id, kmas, agent_site })
}

pub(crate) async fn create_data_unit<B: Backend>(
    State(gateway): Gw<B>,
    peer: Peer,
    Query(read_query): Query<ReadQuery>,
    JsonBody(request): JsonBody<CreateDataUnitRequest>,
) -> Response {
    respond(
        async {
            let min_index = read_query.min_index.unwrap_or(0);
            let agent_id = authenticate(&gateway, &peer, min_index).await?;
            let command = Command::CreateDataUnit { external_tag: request.external_tag };
            let (index, reply) =
                propose(&gateway, &agent_id, Some(request.request_id.into()), command).await?;
            let Reply::DataUnitCreated { data_unit } = reply else {
                return Err(unexpected(&reply));
            };
            Ok(json_response(&DataUnitCreated { data_unit, index }))
        }
        .await,
    )
}

/// Assigns or reuses the write key; the value leaves only after the command has committed
/// (the reply comes from the applied entry), read back at that index.
pub(crate) async fn write_key<B: Backend>(
    State(gateway): Gw<B>,
    peer: Peer,
    Path(id): Path<String>,
    Query(read_query): Query<ReadQuery>,
    JsonBody(request): JsonBody<WriteKeyRequest>,
) -> Response {
    respond(
        async {
            let data_unit = data_unit_id(&id)?;
            let min_index = read_query.min_index.unwrap_or(0);
            claimed(&peer)?;
            let master = master_key(&gateway)?;
            let agent_id = authenticate(&gateway, &peer, min_index).await?;
            let command = Command::AssignWriteKey { data_unit, from_bot: request.from_bot };
            let (index, reply) =
                propose(&gateway, &agent_id, Some(request.request_id.into()), command).await?;
            let Reply::WriteKey { data_unit, key_id, reused } = reply else {
                return Err(unexpected(&reply));
            };
            let (key, cluster_id) = gateway
                .backend
                .read(index, |state| {
                    let key = state.key_for_agent(&agent_id, &key_id, now_ms())?;
                    Ok::<_, ApiError>((key, state.cluster_id().unwrap_or_default()))
                })
                .await??;
            let key = wire_key(&master, cluster_id, &key)?;
            let request_id = Some(request.request_id.into());
            handed_out(Route::WriteKey, &agent_id, &key_id, Some(&data_unit), index, request_id);
            Ok(secret_json_response(&WriteKeyResponse { data_unit, key, reused, index }, 1))
        }
        .await,
    )
}

/// The keys a drive gets on mount, from the local state once it has applied `min_index`.
pub(crate) async fn keys<B: Backend>(
    State(gateway): Gw<B>,
    peer: Peer,
    Path(id): Path<String>,
    Query(read_query): Query<ReadQuery>,
) -> Response {
    respond(
        async {
            let data_unit = data_unit_id(&id)?;
            let min_index = read_query.min_index.unwrap_or(0);
            let claimed = claimed(&peer)?;
            let master = master_key(&gateway)?;
            let (keys, cluster_id, index) = gateway
                .backend
                .read(min_index, |state| {
                    authorize(state, &claimed)?;
                    let keys = state.keys_for_data_unit(claimed.agent_id, &data_unit, now_ms())?;
                    let cluster_id = state.cluster_id().unwrap_or_default();
                    Ok::<_, ApiError>((keys, cluster_id, state.last_applied_index()))
                })
                .await??;
            let keys = keys
                .iter()
                .map(|key| wire_key(&master, cluster_id, key))
                .collect::<Result<Vec<_>, _>>()?;
            for key in &keys {
                let agent = claimed.agent_id;
                handed_out(Route::Keys, agent, &key.key_id, Some(&data_unit), index, None);
            }
            let count = keys.len();
            Ok(secret_json_response(&DataUnitKeys { data_unit, keys, index }, count))
        }
        .await,
    )
}

/// One key by ID. A key that exists but belongs to no data unit yet (a pool key known from
/// before a restore, an imported 1.x key) is first associated (SPEC A5), then returned.
pub(crate) async fn key<B: Backend>(
    State(gateway): Gw<B>,
    peer: Peer,
    Path(id): Path<String>,
    Query(key_query): Query<KeyQuery>,
) -> Response {
    respond(
        async {
            let key_id = KeyId::from_hex(&id).ok_or_else(|| {
                ApiError::bad_request(format!("key ID {id:?}: expected 60 hex digits"))
            })?;
            let data_unit = key_query.data_unit.as_deref().map(data_unit_id).transpose()?;
            let claimed = claimed(&peer)?;
            let master = master_key(&gateway)?;
            let external_tag = key_query.external_tag.unwrap_or_default();
            let read = |state: &statemachine::State| {
                authorize(state, &claimed)?;
                let tape = (data_unit, external_tag.as_str());
                let key = state.key_for_agent_read(claimed.agent_id, &key_id, tape, now_ms())?;
                let cluster_id = state.cluster_id().unwrap_or_default();
                // A tape read again by its tag: the answer names the data unit it made.
                let tagged = state.data_unit_of_key_tagged(&key_id, &external_tag);
                Ok::<_, ApiError>(((key, tagged), cluster_id, state.last_applied_index()))
            };
            let min_index = key_query.min_index.unwrap_or(0);
            let ((mut key, tagged), mut cluster_id, mut index) =
                gateway.backend.read(min_index, read).await??;
            let mut data_unit = data_unit.or(tagged);
            if !key.associated {
                let command = Command::AssociateKeyForRead {
                    key_id,
                    data_unit,
                    external_tag: external_tag.clone(),
                };
                let (applied, reply) = propose(&gateway, claimed.agent_id, None, command).await?;
                let Reply::KeyAssociated { data_unit: associated, .. } = reply else {
                    return Err(unexpected(&reply));
                };
                data_unit = Some(associated);
                ((key, _), cluster_id, index) = gateway.backend.read(applied, read).await??;
            }
            let key = wire_key(&master, cluster_id, &key)?;
            let agent = claimed.agent_id;
            handed_out(Route::Key, agent, &key.key_id, data_unit.as_ref(), index, None);
            Ok(secret_json_response(&KeyLookup { key, data_unit, index }, 1))
        }
        .await,
    )
}

/// A write from BOT: the data unit's keys that can no longer encrypt stop being sent for it.
pub(crate) async fn disassociate<B: Backend>(
    State(gateway): Gw<B>,
    peer: Peer,
    Path(id): Path<String>,
    Query(read_query): Query<ReadQuery>,
    JsonBody(request): JsonBody<DisassociateRequest>,
) -> Response {
    respond(
        async {
            let data_unit = data_unit_id(&id)?;
            let min_index = read_query.min_index.unwrap_or(0);
            let agent_id = authenticate(&gateway, &peer, min_index).await?;
            let command = Command::DisassociateKeysOnBot { data_unit };
            let (index, reply) =
                propose(&gateway, &agent_id, Some(request.request_id.into()), command).await?;
            let Reply::KeysDisassociated { count } = reply else {
                return Err(unexpected(&reply));
            };
            Ok(json_response(&Disassociated { count, index }))
        }
        .await,
    )
}
