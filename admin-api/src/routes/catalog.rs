//! Key policies, key groups and agents (SPEC O1–O3).

use axum::extract::State;
use sha2::Digest;
use statemachine::list::{page_size, AgentFilter};
use statemachine::Command;
use statemachine::Read;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Json, Path, Query};
use super::{read, read_at, read_point, run, AdminState, Answer, Refusal};
use crate::api::{
    Agent, AgentQuery, Done, Enabled, ErrorBody, ErrorCode, GroupName, KeyGroup, KeyPolicy,
    KmipCertificate, KmipEnrollment, KmipRights, NewAgent, NewKeyGroup, Page, Passphrase,
    PolicyFlags, ReadParams, SiteName,
};
use crate::backend::Caller;
use crate::view;

pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(delete_policy))
        .routes(routes!(set_policy_flags))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(delete_group))
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, delete_agent))
        .routes(routes!(set_agent_passphrase))
        .routes(routes!(set_agent_enabled))
        .routes(routes!(set_agent_site))
        .routes(routes!(add_agent_group))
        .routes(routes!(remove_agent_group))
        .routes(routes!(set_default_group))
        .routes(routes!(set_kmip_rights))
        .routes(routes!(enroll_kmip))
}

#[utoipa::path(get, path = "/v1/policies", tag = "catalog", params(ReadParams),
    responses((status = 200, body = Vec<KeyPolicy>), (status = "default", body = ErrorBody)))]
async fn list_policies(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<Vec<KeyPolicy>> {
    read_at(&admin, &caller, read_point(&params)?, Read::Policies, |state, _| {
        Ok(state.meta().policies.values().map(view::policy).collect())
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/v1/policies", tag = "catalog", request_body = KeyPolicy,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn create_policy(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(policy): Json<KeyPolicy>,
) -> Answer<Done> {
    let command = Command::CreateKeyPolicy {
        name: policy.name,
        encryption_period_ms: policy.encryption_period_ms,
        cryptoperiod_ms: policy.cryptoperiod_ms,
        allow_export: policy.allow_export,
        allow_import: policy.allow_import,
    };
    run(&admin, &caller, command, None).await
}

#[utoipa::path(delete, path = "/v1/policies/{name}", tag = "catalog",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn delete_policy(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::DeleteKeyPolicy { name }, None).await
}

/// The export and import flags stay modifiable (SPEC O1); the periods do not.
#[utoipa::path(put, path = "/v1/policies/{name}/flags", tag = "catalog",
    request_body = PolicyFlags,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_policy_flags(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(flags): Json<PolicyFlags>,
) -> Answer<Done> {
    let command = Command::SetKeyPolicyFlags {
        name,
        allow_export: flags.allow_export,
        allow_import: flags.allow_import,
    };
    run(&admin, &caller, command, None).await
}

#[utoipa::path(get, path = "/v1/groups", tag = "catalog", params(ReadParams),
    responses((status = 200, body = Vec<KeyGroup>), (status = "default", body = ErrorBody)))]
async fn list_groups(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(params): Query<ReadParams>,
) -> Answer<Vec<KeyGroup>> {
    read_at(&admin, &caller, read_point(&params)?, Read::Groups, |state, _| {
        Ok(state.meta().groups.values().map(|group| view::group(state, group)).collect())
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/v1/groups", tag = "catalog", request_body = NewKeyGroup,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn create_group(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(group): Json<NewKeyGroup>,
) -> Answer<Done> {
    run(&admin, &caller, Command::CreateKeyGroup { name: group.name, policy: group.policy }, None)
        .await
}

#[utoipa::path(delete, path = "/v1/groups/{name}", tag = "catalog",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn delete_group(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::DeleteKeyGroup { name }, None).await
}

/// Agents, filtered and paged on the server (SPEC U2).
#[utoipa::path(get, path = "/v1/agents", tag = "catalog", params(AgentQuery),
    responses((status = 200, body = Page<Agent>), (status = "default", body = ErrorBody)))]
async fn list_agents(
    State(admin): State<AdminState>,
    caller: Caller,
    Query(query): Query<AgentQuery>,
) -> Answer<Page<Agent>> {
    read(&admin, &caller, query.min_index, Read::Agents, |state, _| {
        let group = match &query.group {
            Some(name) => Some(
                state
                    .group_by_name(name)
                    .ok_or_else(|| Refusal::not_found(format!("unknown key group '{name}'")))?
                    .id,
            ),
            None => None,
        };
        let filter = AgentFilter { site: query.site.clone(), enabled: query.enabled, group };
        let page = state.agents_page(&filter, query.after.as_deref(), page_size(query.limit));
        Ok(Page {
            rows: page.rows.iter().map(|agent| view::agent(state, agent)).collect(),
            next: page.resume_after.map(str::to_string),
        })
    })
    .await
    .map(Json)
}

#[utoipa::path(post, path = "/v1/agents", tag = "catalog", request_body = NewAgent,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn create_agent(
    State(admin): State<AdminState>,
    caller: Caller,
    Json(agent): Json<NewAgent>,
) -> Answer<Done> {
    let command =
        Command::CreateAgent { id: agent.id, site: agent.site, passphrase_verifier: Vec::new() };
    run(&admin, &caller, command, Some(agent.passphrase)).await
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "catalog", params(ReadParams),
    responses((status = 200, body = Agent), (status = "default", body = ErrorBody)))]
async fn get_agent(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<ReadParams>,
) -> Answer<Agent> {
    read_at(&admin, &caller, read_point(&params)?, Read::Agents, |state, _| {
        let agent = state
            .meta()
            .agents
            .get(&id)
            .ok_or_else(|| Refusal::not_found(format!("unknown agent '{id}'")))?;
        Ok(view::agent(state, agent))
    })
    .await
    .map(Json)
}

#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "catalog",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn delete_agent(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer<Done> {
    run(&admin, &caller, Command::DeleteAgent { id }, None).await
}

/// A new enrollment passphrase; the drive's current certificate is revoked (SPEC A1).
#[utoipa::path(put, path = "/v1/agents/{id}/passphrase", tag = "catalog",
    request_body = Passphrase,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_agent_passphrase(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(passphrase): Json<Passphrase>,
) -> Answer<Done> {
    let command = Command::SetAgentPassphrase { id, passphrase_verifier: Vec::new() };
    run(&admin, &caller, command, Some(passphrase.passphrase)).await
}

#[utoipa::path(put, path = "/v1/agents/{id}/enabled", tag = "catalog", request_body = Enabled,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_agent_enabled(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(enabled): Json<Enabled>,
) -> Answer<Done> {
    run(&admin, &caller, Command::SetAgentEnabled { id, enabled: enabled.enabled }, None).await
}

#[utoipa::path(put, path = "/v1/agents/{id}/site", tag = "catalog", request_body = SiteName,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_agent_site(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(site): Json<SiteName>,
) -> Answer<Done> {
    run(&admin, &caller, Command::SetAgentSite { id, site: site.site }, None).await
}

#[utoipa::path(post, path = "/v1/agents/{id}/groups", tag = "catalog", request_body = GroupName,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn add_agent_group(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(agent): Path<String>,
    Json(group): Json<GroupName>,
) -> Answer<Done> {
    run(&admin, &caller, Command::AssignKeyGroupToAgent { agent, group: group.group }, None).await
}

#[utoipa::path(delete, path = "/v1/agents/{id}/groups/{group}", tag = "catalog",
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn remove_agent_group(
    State(admin): State<AdminState>,
    caller: Caller,
    Path((agent, group)): Path<(String, String)>,
) -> Answer<Done> {
    run(&admin, &caller, Command::UnassignKeyGroupFromAgent { agent, group }, None).await
}

#[utoipa::path(put, path = "/v1/agents/{id}/default-group", tag = "catalog",
    request_body = GroupName,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_default_group(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(agent): Path<String>,
    Json(group): Json<GroupName>,
) -> Answer<Done> {
    run(&admin, &caller, Command::SetAgentDefaultKeyGroup { agent, group: group.group }, None).await
}

/// A Security Officer grants or withdraws a KMIP client's right to revoke and destroy keys
/// (issue 19); audited as a change of the agent.
#[utoipa::path(put, path = "/v1/agents/{id}/kmip-rights", tag = "catalog",
    request_body = KmipRights,
    responses((status = 200, body = Done), (status = "default", body = ErrorBody)))]
async fn set_kmip_rights(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(agent): Path<String>,
    Json(rights): Json<KmipRights>,
) -> Answer<Done> {
    let command =
        Command::SetAgentKmipRights { agent, revoke_and_destroy: rights.revoke_and_destroy };
    run(&admin, &caller, command, None).await
}

/// An Operator enrolls a KMIP client (a tape library), which cannot run the enrollment
/// challenge, from its certificate request: the KMA signs it as `agent:<ID>` and records its
/// fingerprint, as a drive's enrollment does (issue 19). Refused for an agent already
/// enrolled: a new passphrase (`PUT /v1/agents/{id}/passphrase`) revokes the old certificate
/// first. Attacker's view: only an Operator may ask, the request's own names are ignored, and
/// a signed certificate whose enrollment is refused is never recorded, so it opens nothing.
#[utoipa::path(post, path = "/v1/agents/{id}/kmip-enrollment", tag = "catalog",
    request_body = KmipEnrollment,
    responses((status = 200, body = KmipCertificate), (status = "default", body = ErrorBody)))]
async fn enroll_kmip(
    State(admin): State<AdminState>,
    caller: Caller,
    Path(agent): Path<String>,
    Json(request): Json<KmipEnrollment>,
) -> Result<axum::Json<KmipCertificate>, Refusal> {
    let user = super::user_of(&caller)?;
    {
        let state = admin.node.state().await;
        let access = statemachine::Access::AskKma(statemachine::CommandKind::RecordAgentEnrollment);
        super::check_user(&state, &user, access)?;
        let known = state.meta().agents.get(&agent);
        let known = known.ok_or_else(|| Refusal::not_found(format!("no agent '{agent}'")))?;
        if known.enrolled() {
            return Err(Refusal::rejected(&statemachine::Reject::AgentAlreadyEnrolled { agent })
                .with_help("set a new passphrase first (`kmsctl agent passphrase`): it revokes the old certificate"));
        }
    }
    let (certificate_pem, ca_pem) = admin.node.sign_agent_certificate(&agent, &request.csr_pem)?;
    let der = rustls_pemfile::certs(&mut certificate_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| Refusal::new(ErrorCode::Internal, "the signed certificate is not PEM"))?;
    let fingerprint: [u8; 32] = sha2::Sha256::digest(der.as_ref()).into();
    let command =
        Command::RecordAgentEnrollment { id: agent.clone(), certificate_fingerprint: fingerprint };
    let applied = admin.node.propose_system(command).await?;
    if let Err(reject) = applied.result {
        return Err(Refusal::rejected(&reject));
    }
    let fingerprint = hex::encode(fingerprint);
    let index = applied.index;
    Ok(axum::Json(KmipCertificate { agent, certificate_pem, ca_pem, fingerprint, index }))
}
