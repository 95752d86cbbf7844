//! Cluster health, sites, KMAs and cluster settings (SPEC C1–C8, S2, O5).

use axum::extract::State;
use statemachine::cluster as sm;
use statemachine::quorum::QuorumOperation;
use statemachine::Command;
use statemachine::Read;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path, Query};
use super::{read, read_at, read_point, run, AdminState, Answer};
use crate::api::{
    ClusterStatus, Done, ErrorBody, KeyPoolLimits, Kma, NewKma, NewSite, ReadParams,
    SecuritySettings, Settings, Site,
};
use crate::backend::Caller;
use crate::view;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(cluster_status))
        .routes(routes!(list_sites, create_site))
        .routes(routes!(delete_site))
        .routes(routes!(list_kmas, create_kma))
        .routes(routes!(delete_kma))
        .routes(routes!(lock_kma))
        .routes(routes!(unlock_kma))
        .routes(routes!(disable_autonomous_unlock))
        .routes(routes!(settings))
        .routes(routes!(set_security))
        .routes(routes!(set_key_pool))
}

/// The KMAs with site, role, reachability, lock state and replication lag (SPEC C8).
#[utoipa::path(get, path = "/v1/cluster/status", tag = "cluster",
    responses((status = 200, body = ClusterStatus), (status = "default", body = ErrorBody)))]
async fn cluster_status(State(admin): State<AdminState>, caller: Caller) -> Answer<ClusterStatus> {
    read(&admin, &caller, None, Read::ClusterStatus, |_, _| Ok(())).await?;
    Ok(Json(admin.node.cluster_status().await))
}

#[utoipa::path(get, path = "/v1/sites", tag = "cluster", params(ReadParams),
    responses((status = 200, body = Vec<Site>), (status = "default", body = ErrorBody)))]
async fn list_sites(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<Vec<Site>> {
    read_at(&admin, &caller, read_point(&params)?, Read::Sites, |state, _| {
        Ok(state.meta().sites.values().map(view::site).collect())
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/v1/sites", tag = "cluster", request_body = NewSite,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn create_site(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(site): Json<NewSite>,
) -> Answer<Done> {
    run(&admin, &caller, Command::CreateSite { name: site.name }, None).await
}

#[utoipa::path(delete, path = "/v1/sites/{name}", tag = "cluster",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn delete_site(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::DeleteSite { name }, None).await
}

#[utoipa::path(get, path = "/v1/kmas", tag = "cluster", params(ReadParams),
    responses((status = 200, body = Vec<Kma>), (status = "default", body = ErrorBody)))]
async fn list_kmas(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<Vec<Kma>> {
    read_at(&admin, &caller, read_point(&params)?, Read::Kmas, |state, _| {
        Ok(state.meta().kmas.values().map(view::kma).collect())
    })
    .await
    .map(Json)
}

/// Creates the entry a new appliance joins with (`kma join`, then a quorum approves).
#[utoipa::path(post, path = "/v1/kmas", tag = "cluster", request_body = NewKma,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn create_kma(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(kma): Json<NewKma>,
) -> Answer<Done> {
    let command =
        Command::CreateKma { name: kma.name, site: kma.site, passphrase_verifier: Vec::new() };
    run(&admin, &caller, command, Some(kma.passphrase)).await
}

#[utoipa::path(delete, path = "/v1/kmas/{name}", tag = "cluster",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn delete_kma(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::DeleteKma { name }, None).await
}

/// Locks a KMA: it hands out no key material until the quorum unlocks it (SPEC C6).
#[utoipa::path(post, path = "/v1/kmas/{name}/lock", tag = "cluster",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn lock_kma(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::LockKma { name }, None).await
}

/// Starts the quorum operation that unlocks a KMA; members approve it.
#[utoipa::path(post, path = "/v1/kmas/{name}/unlock", tag = "cluster",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn unlock_kma(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Done> {
    let operation = QuorumOperation::UnlockKma { kma: name };
    run(&admin, &caller, Command::StartQuorumOperation { operation, ttl_ms: None }, None).await
}

#[utoipa::path(post, path = "/v1/kmas/{name}/disable-autonomous-unlock", tag = "cluster",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn disable_autonomous_unlock(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::DisableAutonomousUnlock { name }, None).await
}

#[utoipa::path(get, path = "/v1/settings", tag = "cluster", params(ReadParams),
    responses((status = 200, body = Settings), (status = "default", body = ErrorBody)))]
async fn settings(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<Settings> {
    read_at(&admin, &caller, read_point(&params)?, Read::Settings, |state, _| {
        let meta = state.meta();
        let (ready, generated) = state.pool_size();
        Ok(Settings {
            security: SecuritySettings {
                passphrase_len_min: meta.security.passphrase_len_min,
                login_failures_max: meta.security.login_failures_max,
                login_throttle_ms: meta.security.login_throttle_ms,
                quorum_operation_ttl_ms: meta.security.quorum_operation_ttl_ms,
            },
            key_pool: KeyPoolLimits {
                low_water: meta.pool_limits.low_water,
                high_water: meta.pool_limits.high_water,
            },
            key_pool_ready: ready as u64,
            key_pool_generated: generated as u64,
        })
    })
    .await
    .map(Json)
}

#[utoipa::path(put, path = "/v1/settings/security", tag = "cluster",
    request_body = SecuritySettings,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_security(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(settings): Json<SecuritySettings>,
) -> Answer<Done> {
    let settings = sm::SecuritySettings {
        passphrase_len_min: settings.passphrase_len_min,
        login_failures_max: settings.login_failures_max,
        login_throttle_ms: settings.login_throttle_ms,
        quorum_operation_ttl_ms: settings.quorum_operation_ttl_ms,
    };
    run(&admin, &caller, Command::SetSecuritySettings(settings), None).await
}

#[utoipa::path(put, path = "/v1/settings/key-pool", tag = "cluster", request_body = KeyPoolLimits,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_key_pool(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(limits): Json<KeyPoolLimits>,
) -> Answer<Done> {
    let limits = sm::KeyPoolLimits { low_water: limits.low_water, high_water: limits.high_water };
    run(&admin, &caller, Command::SetKeyPoolLimits(limits), None).await
}
