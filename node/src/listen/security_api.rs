//! Security endpoints of the management listener (SPEC S2–S4, C4): user login, the join of a
//! new KMA, quorum approvals and quorum changes. JSON bodies, so they can be read in a trace.
//!
//! Each handler checks what only the node can check (a passphrase, a share, the master key)
//! and then proposes the command; the state machine still decides whether it is allowed.

// A handler helper returns the refusal response itself; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use admin_api::api::{ErrorBody, ErrorCode};
use admin_api::routes::extract::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use security_core::challenge::{ChannelBinding, ClientHello};
use statemachine::cluster::KmaStatus;
use statemachine::quorum::QuorumOperation;
use statemachine::reply::Reply;
use statemachine::{Access, Actor, Command, CommandKind, Reject, RejectClass};
use zeroize::Zeroize;

use crate::listen::management::Peer;
use crate::login::Logins;
use crate::pki::Identity;
use crate::view::Local;
use crate::wire::{ApproveRequest, JoinGranted, LoginGranted, MembershipRequest, ProofRequest};
use crate::wire::{JoinExporter, PURPOSE_JOIN, PURPOSE_USER};
use crate::write::membership::Membership;
use crate::write::{Proposal, Proposer};

/// What the security endpoints need of their KMA.
pub struct SecurityApi {
    pub local: Local,
    pub proposer: Proposer,
    pub membership: Membership,
    pub logins: Arc<Logins>,
    /// An HTTPS client authenticated as this KMA (approvals for another KMA's unlock).
    pub peers: reqwest::Client,
    /// Quorum changes waiting for their new members' passphrases.
    pub quorum_changes: crate::listen::quorum_change::PendingChanges,
}

/// How long a user's certificate from a passphrase login is valid.
pub const USER_SESSION: Duration = Duration::from_secs(8 * 3600);

/// The client's address, put into each request by `server::serve_connection`.
#[derive(Clone, Copy, Debug)]
pub struct Remote(pub SocketAddr);

pub fn routes() -> Router<Arc<SecurityApi>> {
    Router::new()
        .route("/v1/login/hello", post(login_hello))
        .route("/v1/login/proof", post(login_proof))
        .route("/v1/join/hello", post(join_hello))
        .route("/v1/join/proof", post(join_proof))
        .route("/v1/quorum/approve", post(approve))
        .route("/v1/quorum/change", post(crate::listen::quorum_change::start))
        .route("/v1/quorum/change/member", post(crate::listen::quorum_change::member))
}

/// A refusal in the one JSON error shape, with its code's HTTP status.
pub(crate) fn refuse(code: ErrorCode, message: impl Into<String>, retryable: bool) -> Response {
    refusal(ErrorBody::new(code, message).with_retryable(retryable))
}

fn refusal(body: ErrorBody) -> Response {
    let status =
        StatusCode::from_u16(body.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

/// A state machine refusal of the caller: who they are or what they may do.
pub(crate) fn rejected(reject: &statemachine::Reject) -> Response {
    let code = match reject.class() {
        RejectClass::NotFound if !matches!(reject, Reject::UnknownUser { .. }) => {
            ErrorCode::NotFound
        }
        RejectClass::Unavailable => ErrorCode::Unavailable,
        RejectClass::NotFound | RejectClass::Forbidden => ErrorCode::Forbidden,
        _ => ErrorCode::Rejected,
    };
    refusal(ErrorBody::rejected(code, reject))
}

pub(crate) fn login_refusal(error: &crate::login::LoginError) -> Response {
    use crate::login::LoginError as E;
    match error {
        E::Throttled { .. } => refuse(ErrorCode::Throttled, error.to_string(), true),
        E::Refused => refuse(ErrorCode::AuthenticationFailed, error.to_string(), false),
        E::UnknownChallenge => refuse(ErrorCode::UnknownChallenge, error.to_string(), false),
        E::Other(_) => refuse(ErrorCode::Unavailable, error.to_string(), true),
    }
}

/// Records a failed authentication in the audit log (SPEC S2); best effort: the refusal stands
/// whether or not the record can be written now.
pub(crate) fn audit_failure(api: &SecurityApi, principal: String, source: IpAddr) {
    let proposer = api.proposer.clone();
    tokio::spawn(async move {
        let command =
            Command::RecordAuthenticationFailure { principal, source: source.to_string() };
        if let Err(error) = proposer.propose(proposer.system(command)).await {
            tracing::warn!(%error, "authentication failure not recorded in the audit log");
        }
    });
}

/// Records a granted login before its certificate is handed out (SPEC S5; issue #16 points 2
/// and 9): a session the audit log does not show never starts. Once the cluster reads log
/// format 3 the entry also records the certificate's fingerprint and end of validity
/// (`RecordUserSession`), and listeners accept that certificate for the user and no other;
/// below it, the login alone (`RecordLogin`). Answers the entry's index, which the client
/// passes to every KMA it calls (`kms-login-index`) so that none judges its certificate on a
/// state older than its login. It costs the login one commit.
async fn record_login(
    api: &SecurityApi,
    principal: String,
    source: IpAddr,
    cert_pem: &str,
) -> Result<u64, Response> {
    let source = source.to_string();
    let command = if api.local.state.read().await.certificates_recorded() {
        let certificate_sha256 = crate::pki::fingerprint(cert_pem)
            .map_err(|error| refuse(ErrorCode::Internal, error.to_string(), false))?;
        let expires_at_ms = crate::transport::wall_clock_ms()
            .saturating_add(u64::try_from(USER_SESSION.as_millis()).unwrap_or(u64::MAX));
        Command::RecordUserSession { principal, source, certificate_sha256, expires_at_ms }
    } else {
        Command::RecordLogin { principal, source }
    };
    match api.proposer.propose(api.proposer.system(command)).await {
        Ok(applied) => match applied.result {
            Ok(_) => Ok(applied.index),
            Err(reject) => Err(rejected(&reject)),
        },
        Err(error) => {
            tracing::warn!(%error, "login not recorded in the audit log: refused");
            let message = format!(
                "the login could not be written to the audit log ({error}), so no session was \
                 started: try again, or log in at another KMA"
            );
            Err(refuse(ErrorCode::Unavailable, message, true))
        }
    }
}

/// Step one of a login or join: the verifier comes from the replicated state.
async fn hello(
    api: &SecurityApi,
    remote: Remote,
    hello: &ClientHello,
    verifier: Option<Vec<u8>>,
) -> Response {
    let (settings, throttled_ms) = {
        let state = api.local.state.read().await;
        let now_ms = crate::transport::wall_clock_ms();
        (state.meta().security, state.login_throttled(&hello.principal, now_ms))
    };
    // Failed proofs of a known principal, counted in the replicated state from every KMA
    // (issue #16 point 5): N KMAs allow no more guesses than one.
    if let Some(wait_ms) = throttled_ms {
        let what = format!("principal:{} (across the cluster)", hello.principal);
        let retry_after_s = wait_ms.div_ceil(1_000).max(1);
        return login_refusal(&crate::login::LoginError::Throttled { what, retry_after_s });
    }
    let source = remote.0.ip();
    if let Err(error) = api.logins.check_throttle(&hello.principal, source, &settings) {
        return login_refusal(&error);
    }
    match api.logins.challenge(hello, verifier.as_deref(), source) {
        Ok(challenge) => Json(challenge).into_response(),
        Err(error) => login_refusal(&error),
    }
}

async fn login_hello(
    State(api): State<Arc<SecurityApi>>,
    Extension(remote): Extension<Remote>,
    Json(client): Json<ClientHello>,
) -> Response {
    let verifier = if client.purpose == PURPOSE_USER {
        let state = api.local.state.read().await;
        state
            .meta()
            .users
            .get(&client.principal)
            .filter(|user| user.enabled)
            .map(|user| user.passphrase_verifier.clone())
    } else {
        None
    };
    hello(&api, remote, &client, verifier).await
}

/// Step two: checks the proof; a failure is throttled and audited.
async fn verify_proof(
    api: &SecurityApi,
    remote: Remote,
    request: &ProofRequest,
    (purpose, binding): (&str, Option<&ChannelBinding>),
) -> Result<crate::login::Verified, Response> {
    let source = remote.0.ip();
    let settings = api.local.state.read().await.meta().security;
    let verified = api.logins.verify(&request.proof, binding, source, &settings).map_err(
        |(error, principal)| {
            if let Some(principal) = principal {
                audit_failure(api, principal, source);
            }
            login_refusal(&error)
        },
    )?;
    if verified.purpose != purpose {
        return Err(refuse(
            ErrorCode::WrongPurpose,
            "this challenge was for another purpose",
            false,
        ));
    }
    Ok(verified)
}

async fn login_proof(
    State(api): State<Arc<SecurityApi>>,
    Extension(remote): Extension<Remote>,
    Json(request): Json<ProofRequest>,
) -> Response {
    let verified = match verify_proof(&api, remote, &request, (PURPOSE_USER, None)).await {
        Ok(verified) => verified,
        Err(refused) => return refused,
    };
    let signed = api.local.certificate_authority().and_then(|ca| {
        let identity = Identity::User(verified.principal.clone());
        let cert =
            ca.sign_request_valid_for(&request.csr_pem, &identity, &[], Some(USER_SESSION))?;
        Ok((cert, api.local.tls.trusted_pem()))
    });
    match signed {
        Ok((cert_pem, ca_pem)) => {
            let recorded = record_login(&api, verified.principal, remote.0.ip(), &cert_pem);
            let login_index = match recorded.await {
                Ok(index) => index,
                Err(refused) => return refused,
            };
            Json(LoginGranted {
                server_final: verified.server_final,
                cert_pem,
                ca_pem,
                valid_for_s: USER_SESSION.as_secs(),
                login_index,
            })
            .into_response()
        }
        Err(error) => signing_refusal(&error),
    }
}

/// Why a certificate could not be signed: a locked KMA signs nothing (issue #16 point 1), one
/// that has not unwrapped the CA key yet will soon; anything else is the request's fault.
fn signing_refusal(error: &crate::pki::PkiError) -> Response {
    use crate::pki::PkiError as E;
    match error {
        E::Locked => refuse(ErrorCode::KmaLocked, error.to_string(), false),
        E::CaKeyNotYetHere => refuse(ErrorCode::Unavailable, error.to_string(), true),
        _ => refuse(ErrorCode::BadRequest, error.to_string(), false),
    }
}

async fn join_hello(
    State(api): State<Arc<SecurityApi>>,
    Extension(remote): Extension<Remote>,
    Json(client): Json<ClientHello>,
) -> Response {
    let verifier = if client.purpose == PURPOSE_JOIN {
        let state = api.local.state.read().await;
        state
            .meta()
            .kmas
            .get(&client.principal)
            .filter(|k| matches!(k.status, KmaStatus::Created | KmaStatus::JoinApproved))
            // A granted join spent the passphrase: a decoy challenge from then on.
            .filter(|k| k.certificate_sha256.is_none())
            .map(|k| k.passphrase_verifier.clone())
    } else {
        None
    };
    hello(&api, remote, &client, verifier).await
}

/// A joining KMA proved its one-time passphrase: once the quorum has approved its join, it
/// gets its certificate and the CA, and becomes a learner (SPEC C4).
///
/// The proof is bound to this TLS session, to the CSR and to the advertised address
/// (`JoinExporter::binding`, issue #16 point 5): a relay in the middle, or anyone who swaps the
/// CSR for their own, fails the proof as with a wrong passphrase, and the failure is counted.
async fn join_proof(
    State(api): State<Arc<SecurityApi>>,
    Extension(remote): Extension<Remote>,
    Extension(exporter): Extension<JoinExporter>,
    Json(request): Json<ProofRequest>,
) -> Response {
    let Some(advertise) = request.management_advertise.clone() else {
        return refuse(ErrorCode::BadRequest, "management_advertise missing", false);
    };
    let Some(binding) = exporter.binding(&request.csr_pem, &advertise) else {
        // Not reached after a TLS 1.3 handshake; refused rather than verified unbound.
        return refuse(ErrorCode::Internal, "this TLS session cannot bind a join proof", true);
    };
    let purpose = (PURPOSE_JOIN, Some(&binding));
    let verified = match verify_proof(&api, remote, &request, purpose).await {
        Ok(verified) => verified,
        Err(refused) => return refused,
    };
    let name = verified.principal;
    let entry = api.local.state.read().await.meta().kmas.get(&name).cloned();
    let Some(entry) = entry else {
        return refuse(ErrorCode::NotFound, format!("no KMA '{name}'"), false);
    };
    if entry.status == KmaStatus::Created {
        let message = format!(
            "the join of '{name}' waits for the quorum: a Security Officer starts the JoinKma \
             operation and quorum members approve it"
        );
        return refuse(ErrorCode::AwaitingQuorum, message, true);
    }
    let (cert_pem, ca_pem, ca_key_pem) =
        match admit(&api, entry.node_id, &advertise, &request.csr_pem).await {
            Ok(granted) => granted,
            Err(message) => return refuse(ErrorCode::JoinFailed, message, true),
        };
    if let Err(refused) = record_grant(&api, &name, &cert_pem).await {
        return refused;
    }
    Json(JoinGranted {
        server_final: verified.server_final,
        node_id: entry.node_id,
        cert_pem,
        ca_pem,
        ca_key_pem,
    })
    .into_response()
}

/// Records the joiner's certificate in its entry before it is handed out (issue #16 points 2
/// and 5), once the cluster reads log format 3: from then on only that certificate speaks for
/// the KMA, and the join passphrase is spent (a second proof gets `JoinAlreadyGranted`).
async fn record_grant(api: &SecurityApi, name: &str, cert_pem: &str) -> Result<(), Response> {
    if !api.local.state.read().await.certificates_recorded() {
        return Ok(());
    }
    let certificate_sha256 = crate::pki::fingerprint(cert_pem)
        .map_err(|error| refuse(ErrorCode::Internal, error.to_string(), false))?;
    let command = Command::GrantKmaJoin { name: name.to_string(), certificate_sha256 };
    match api.proposer.propose(api.proposer.system(command)).await {
        Ok(applied) => applied
            .result
            .map(|_| ())
            .map_err(|reject| refusal(ErrorBody::rejected(ErrorCode::JoinFailed, &reject))),
        Err(error) => {
            let message = format!("the join could not be recorded ({error}): try again");
            Err(refuse(ErrorCode::JoinFailed, message, true))
        }
    }
}

/// Signs the new KMA's certificate and adds it as a learner.
async fn admit(
    api: &SecurityApi,
    node_id: u64,
    advertise: &str,
    csr_pem: &str,
) -> Result<(String, String, String), String> {
    let host = crate::config::advertise_host(advertise)
        .ok_or("management address must be host:port")?
        .to_string();
    let ca = api.local.certificate_authority().map_err(|e| e.to_string())?;
    let hosts = [host, "localhost".into(), "127.0.0.1".into()];
    let cert_pem =
        ca.sign_request(csr_pem, &Identity::Kma(node_id), &hosts).map_err(|e| e.to_string())?;
    let add = MembershipRequest::AddLearner { node_id, address: advertise.into() };
    api.membership.membership_on_leader(add).await?;
    // From log format 3 the joiner finds the CA key wrapped in the state it replicates and
    // opens it once the quorum unlocked it (issue #16 point 1): the reply carries no key.
    // Below it, the older KMAs' way: the key in the reply.
    let ca_key_pem = if api.local.state.read().await.certificates_recorded() {
        String::new()
    } else {
        ca.key_pem().to_string()
    };
    Ok((cert_pem, ca.cert_pem.clone(), ca_key_pem))
}

/// The user behind a request: its certificate, or the user a forwarding KMA vouches for.
fn user_of(peer: &Peer, on_behalf_of: Option<&String>) -> Option<String> {
    match (&peer.0, on_behalf_of) {
        (Some(Identity::User(user)), _) => Some(user.clone()),
        (Some(Identity::Kma(_)), Some(user)) => Some(user.clone()),
        _ => None,
    }
}

async fn approve(
    State(api): State<Arc<SecurityApi>>,
    Extension(peer): Extension<Peer>,
    Extension(remote): Extension<Remote>,
    Json(request): Json<ApproveRequest>,
) -> Response {
    let Some(user) = user_of(&peer, request.on_behalf_of.as_ref()) else {
        return refuse(
            ErrorCode::Unauthenticated,
            "log in as a Security Officer or Backup Operator first",
            false,
        );
    };
    let mut request = Wiped(request);
    match approve_as(&api, &user, remote, &mut request).await {
        Ok(response) | Err(response) => response,
    }
}

/// What an approval needs to know about its operation, read from the local state.
struct PendingView {
    operation: QuorumOperation,
    wrapped: Option<Vec<u8>>,
    cluster_id: Option<statemachine::ClusterId>,
    settings: statemachine::cluster::SecuritySettings,
    /// The KMA that must see the share: the one being unlocked.
    target: Option<u64>,
}

async fn pending_view(
    api: &SecurityApi,
    user: &str,
    request: &ApproveRequest,
) -> Result<PendingView, Response> {
    let unavailable =
        |e: crate::kma::NodeError| refuse(ErrorCode::Unavailable, e.to_string(), true);
    api.local.read_barrier(request.min_index, false).await.map_err(unavailable)?;
    let now_ms = crate::transport::wall_clock_ms();
    let state = api.local.state.read().await;
    // The same checks `apply` makes for the approval, asked before the member's passphrase is
    // put to work: who may enter approvals, then the operation and the member.
    let approval =
        Command::ApproveQuorumOperation { id: request.operation, member: request.member.clone() };
    let actor = Actor::User(user.to_string());
    state.check_access(&actor, Access::from(&approval)).map_err(|r| rejected(&r))?;
    let member = state.check_approval(request.operation, &request.member, now_ms);
    let wrapped = member.map_err(|r| rejected(&r))?.wrapped_share.clone();
    let meta = state.meta();
    let Some(pending) = meta.quorum_operations.get(&request.operation) else {
        // check_approval found it under the same read lock.
        return Err(refuse(ErrorCode::Internal, "the operation vanished under a read lock", false));
    };
    let target = match &pending.operation {
        QuorumOperation::UnlockKma { kma } => meta.kmas.get(kma).map(|k| k.node_id),
        _ => None,
    };
    Ok(PendingView {
        operation: pending.operation.clone(),
        wrapped: Some(wrapped),
        cluster_id: state.cluster_id(),
        settings: meta.security,
        target,
    })
}

/// Unwraps member `member`'s share with `passphrase` on a blocking thread (argon2 must not
/// hold up the runtime): `None` when the passphrase is wrong or the share damaged.
pub(crate) async fn unwrap_share_blocking(
    wrapped: Vec<u8>,
    cluster_id: statemachine::ClusterId,
    member: &str,
    passphrase: &str,
) -> Option<security_core::Share> {
    let member = member.to_string();
    let passphrase = zeroize::Zeroizing::new(passphrase.to_string());
    tokio::task::spawn_blocking(move || {
        security_core::unwrap_share(&wrapped, cluster_id, &member, &passphrase)
    })
    .await
    .ok()
    .and_then(Result::ok)
}

/// Proves the member's passphrase by unwrapping its share; failures are throttled and audited.
async fn member_share(
    api: &SecurityApi,
    view: &PendingView,
    request: &ApproveRequest,
    source: IpAddr,
) -> Result<security_core::Share, Response> {
    let principal = format!("quorum member {}", request.member);
    if let Err(error) = api.logins.check_throttle(&principal, source, &view.settings) {
        return Err(login_refusal(&error));
    }
    let unwrapped = match (view.wrapped.clone(), view.cluster_id) {
        (Some(wrapped), Some(cluster_id)) => {
            unwrap_share_blocking(wrapped, cluster_id, &request.member, &request.passphrase).await
        }
        _ => None,
    };
    unwrapped.ok_or_else(|| {
        api.logins.record_failure(&principal, source, &view.settings);
        audit_failure(api, principal, source);
        login_refusal(&crate::login::LoginError::Refused)
    })
}

/// An approval whose member passphrase is zeroized when the handler is done with it.
struct Wiped(ApproveRequest);

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.passphrase.zeroize();
    }
}

async fn approve_as(
    api: &SecurityApi,
    user: &str,
    remote: Remote,
    Wiped(request): &mut Wiped,
) -> Result<Response, Response> {
    let view = pending_view(api, user, request).await?;
    // The share of an unlock is needed on the KMA being unlocked: the approval goes there.
    if let Some(target) = view.target.filter(|id| *id != api.local.node_id()) {
        request.on_behalf_of = Some(user.to_string());
        return Ok(api.forward_approval(target, request).await);
    }
    let share = member_share(api, &view, request, remote.0.ip()).await?;
    let unlocks_me = matches!(&view.operation,
        QuorumOperation::UnlockKma { kma: name } if *name == api.local.config.name);
    let operation = request.operation;
    if unlocks_me {
        api.local.vault.stash_share(operation, share);
    }
    let command = Command::ApproveQuorumOperation { id: operation, member: request.member.clone() };
    let proposal = Proposal {
        actor: Actor::User(user.into()),
        origin_node_id: api.local.node_id(),
        request_id: None,
        command,
    };
    let applied = api.proposer.propose(proposal).await;
    if unlocks_me {
        let completed = matches!(&applied,
            Ok(response) if matches!(response.result, Ok(Reply::QuorumApproval { completed: true, .. })));
        let refused = !matches!(&applied, Ok(response) if response.result.is_ok());
        if completed {
            if let Err(error) = api.local.vault.complete_unlock(operation) {
                let message = error.to_string();
                return Err(refuse(ErrorCode::UnlockFailed, message, false));
            }
            tracing::info!(operation, "unlocked by the quorum");
        } else if refused {
            api.local.vault.drop_shares(operation);
        }
    }
    Ok(Json(applied).into_response())
}

/// The logged-in user behind `peer` when it is an enabled Security Officer; else the refusal.
pub(crate) async fn security_officer(api: &SecurityApi, peer: &Peer) -> Result<String, Response> {
    let Some(Identity::User(user)) = peer.0.clone() else {
        let message = "log in as a Security Officer first";
        return Err(refuse(ErrorCode::Unauthenticated, message, false));
    };
    let access = Access::Command(CommandKind::StartChangeQuorum);
    let state = api.local.state.read().await;
    state.check_access(&Actor::User(user.clone()), access).map_err(|r| rejected(&r))?;
    Ok(user)
}

impl SecurityApi {
    /// Sends an approval to the KMA whose unlock it is; that KMA answers for itself.
    async fn forward_approval(&self, target: u64, request: &ApproveRequest) -> Response {
        let Some(address) = crate::transport::members::address_of(&self.local.raft, target) else {
            let message = format!("KMA {target} is not a member: its unlock cannot be approved");
            return (StatusCode::NOT_FOUND, message).into_response();
        };
        let sent = self
            .peers
            .post(format!("https://{address}/v1/quorum/approve"))
            .json(request)
            .timeout(Duration::from_secs(60))
            .send()
            .await;
        match sent {
            Ok(answer) => {
                let status = StatusCode::from_u16(answer.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let content_type = answer
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                let body = answer.bytes().await.unwrap_or_default();
                (status, [(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
            }
            Err(error) => {
                let message =
                    format!("the KMA being unlocked ({address}) cannot be reached: {error}");
                (StatusCode::BAD_GATEWAY, message).into_response()
            }
        }
    }
}
