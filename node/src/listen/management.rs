//! The management listener: HTTPS with mutual TLS, serving Raft RPCs between KMAs, proposals,
//! status, state digests, membership changes and joins.

// A handler helper returns the refusal response itself; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use admin_api::api::{ErrorBody, ErrorCode};
use admin_api::routes::extract::{Json, Query};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use statemachine::{Access, Actor, Command, Read};
use tokio::net::TcpListener;

use crate::listen::admin::NodeAdmin;
use crate::listen::health::Health;
use crate::listen::metrics::{MetricsLayer, RequestMetrics, MANAGEMENT};
use crate::listen::security_api::{Remote, SecurityApi};
use crate::pki::Identity;
use crate::transport::link::{kma_refusal, LinkServer};
use crate::view::Local;
use crate::wire::{MembershipRequest, ProposeError, ProposeRequest, ProposeResponse, POSTCARD};
use crate::write::intake::{propose_forwarded, user_command};
use crate::write::membership::Membership;
use crate::write::{Proposal, Proposer};

/// Who is on the other end of a connection, from its verified client certificate.
#[derive(Clone, Debug)]
pub struct Peer(pub Option<Identity>);

/// The SHA-256 of the client's certificate (its DER), when it presented one: what the state
/// records of a KMA's certificate; and the cluster epoch it names (`None`: unreadable).
#[derive(Clone, Copy, Debug)]
pub struct CertificateSha256(pub Option<([u8; 32], Option<u32>)>);

/// What the node's own management routes need (`/v1/propose`, status, digest, members, CA).
pub struct Management {
    pub local: Local,
    pub proposer: Proposer,
    pub membership: Membership,
}

/// Every router of the management listener, each with its own handles.
pub struct ManagementRouters {
    pub management: Management,
    pub security: SecurityApi,
    pub health: Health,
    pub admin: NodeAdmin,
    pub requests: RequestMetrics,
}

pub fn router(routers: ManagementRouters) -> Router {
    let local = routers.management.local.clone();
    let admin = admin_api::backend::Admin::new(Arc::new(routers.admin));
    let (management_api, _document) = admin_api::routes::router(Arc::new(admin));
    let security = Arc::new(routers.security);
    let member_unlock = Arc::new(crate::listen::member_unlock::MemberUnlock::new(security.clone()));
    let backups = Arc::new(crate::listen::backups::BackupsApi::new(
        security.local.clone(),
        security.proposer.clone(),
    ));
    Router::new()
        .route("/v1/propose", post(propose))
        .route("/v1/status", get(status))
        .route("/v1/digest", get(digest))
        .route("/v1/members", post(members))
        .route("/v1/ca", get(ca))
        .with_state(Arc::new(routers.management))
        .merge(crate::listen::security_api::routes().with_state(security.clone()))
        .merge(crate::listen::member_unlock::routes().with_state(member_unlock))
        .merge(crate::listen::backups::routes().with_state(backups))
        .merge(crate::listen::health::routes().with_state(Arc::new(routers.health)))
        .merge(management_api)
        // The node's own routes answer a wrong method in the management API's JSON shape too.
        .method_not_allowed_fallback(admin_api::routes::extract::wrong_method)
        .layer(axum::middleware::from_fn_with_state(local, certificate_bound))
        .layer(MetricsLayer::new(MANAGEMENT, routers.requests))
}

/// Refuses, before any route runs, a certificate that the applied state does not accept
/// (issue #16 points 2 and 3): a KMA certificate of a deleted KMA, or other than the one the
/// state records for that KMA; a user certificate that no login of that user recorded (one
/// minted with a copied CA key, or a session revoked since by disabling or deleting the user
/// or a new passphrase). A client names the index of its login (`kms-login-index`): this KMA
/// waits, briefly, until it has applied that far, so a login granted by another KMA is not
/// refused here for being newer than this KMA's state.
async fn certificate_bound(
    State(local): State<Local>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request.extensions().get::<Peer>().and_then(|peer| peer.0.clone());
    let certificate = request.extensions().get::<CertificateSha256>().and_then(|c| c.0);
    let refused = match (peer, certificate) {
        (Some(Identity::Kma(node_id)), Some((fingerprint, epoch))) => {
            let why = kma_refusal(&*local.state.read().await, node_id, &fingerprint, epoch);
            why.map(|why| (ErrorCode::Forbidden, why))
        }
        (Some(Identity::User(user)), Some((fingerprint, _))) => {
            let login_index = login_index(&request);
            user_refusal(&local, &user, &fingerprint, login_index).await
        }
        _ => None,
    };
    match refused {
        Some((code, why)) => {
            let retryable = code == ErrorCode::Unavailable;
            let body = ErrorBody::new(code, why).with_retryable(retryable);
            let status = StatusCode::from_u16(body.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // The connection keeps the certificate of its handshake: closing it lets a client
            // that holds a newer one (a KMA after a CA rotation) reconnect with it, rather
            // than be refused on a pooled connection for as long as it is kept busy.
            let close = [(header::CONNECTION, "close")];
            (status, close, Json(body)).into_response()
        }
        None => next.run(request).await,
    }
}

/// How long a request waits for this KMA to apply the login it names.
const LOGIN_APPLIED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The login index a client names; none, or one that is not a number, is 0 (judged on the
/// state as it is).
fn login_index(request: &axum::extract::Request) -> u64 {
    let header = request.headers().get(admin_api::api::LOGIN_INDEX_HEADER);
    header.and_then(|value| value.to_str().ok()).and_then(|text| text.parse().ok()).unwrap_or(0)
}

/// Why the user certificate of fingerprint `fingerprint` is refused, if it is. A named login
/// index far beyond what this KMA has applied costs the caller the wait, nothing else.
async fn user_refusal(
    local: &Local,
    user: &str,
    fingerprint: &[u8; 32],
    login_index: u64,
) -> Option<(ErrorCode, String)> {
    if login_index > 0
        && local.read_barrier_within(login_index, false, LOGIN_APPLIED_WAIT).await.is_err()
    {
        return Some((
            ErrorCode::Unavailable,
            format!(
                "this KMA has not yet applied your login (log index {login_index}): retry, or use \
             another KMA"
            ),
        ));
    }
    let state = local.state.read().await;
    if !state.certificates_recorded() || state.user_session_certified(user, fingerprint) {
        return None;
    }
    Some((
        ErrorCode::Forbidden,
        format!(
        "this certificate is no session the cluster recorded for '{user}' (it expired, the user \
         was disabled or deleted or changed passphrase, or it was not issued by a login): log in \
         again with kmsctl login"
    ),
    ))
}

/// Accepts TLS connections until the process ends (the accept loop is `transport::accept`,
/// shared by both listeners); each request carries the client's identity and address, and
/// connections that ask for the Raft link protocol go to `links`.
pub async fn serve(
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
    links: LinkServer,
    (limits, stats): (agent_gateway::ConnectionLimits, agent_gateway::ConnectionStats),
) {
    let tag = |tls: &rustls::ServerConnection, remote: SocketAddr| {
        let mut extensions = axum::http::Extensions::new();
        let certificate = agent_gateway::server::client_certificate(tls);
        // A certificate from another cluster's CA never gets here: the handshake refuses it.
        let identity = certificate.and_then(crate::transport::tls::identity_of);
        let user = match &identity {
            Some(Identity::User(user)) => Some(user.clone()),
            _ => None,
        };
        extensions.insert(admin_api::backend::Caller(user));
        extensions.insert(Peer(identity));
        extensions.insert(CertificateSha256(certificate.map(|certificate| {
            (
                crate::pki::der_fingerprint(certificate),
                agent_gateway::epoch::of_certificate(certificate),
            )
        })));
        extensions.insert(Remote(remote));
        extensions.insert(crate::wire::JoinExporter::of_server(tls));
        extensions
    };
    let links = Some(links.handoff());
    let name = "management listener";
    crate::transport::accept::serve_tls(listener, tls, router, name, tag, links, limits, stats)
        .await;
}

fn postcard_reply<T: Serialize>(value: &T) -> Response {
    match postcard::to_allocvec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, POSTCARD)], bytes).into_response(),
        Err(error) => refusal(ErrorCode::Internal, format!("encoding the answer failed: {error}")),
    }
}

/// A refusal in the one JSON error shape, with its code's HTTP status.
fn refusal(code: ErrorCode, message: impl Into<String>) -> Response {
    let body = ErrorBody::new(code, message);
    let status =
        StatusCode::from_u16(body.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    postcard::from_bytes(body).map_err(|_| {
        // The decoder's own words name Rust types, not the request: say what was expected.
        let message = "the body is not a postcard-encoded request of this route";
        let body = ErrorBody::new(ErrorCode::BadRequest, message)
            .with_help("this route is for KMAs and tools that speak postcard; people use kmsctl");
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    })
}

/// Who may use a management route: member KMAs, and users who exist, are enabled and may make
/// `access` (the access table of `statemachine::permission`). A KMA that is not a member may
/// read status and digests (a joiner waits on them), nothing else. Agents never: their routes
/// are on the service listener.
pub(crate) async fn admitted(
    local: &Local,
    peer: &Peer,
    what: &str,
    access: Access,
) -> Result<(), Response> {
    let forbidden = |message: String| Err(refusal(ErrorCode::Forbidden, message));
    let user = match &peer.0 {
        Some(Identity::Kma(node)) if local.is_member(*node) => return Ok(()),
        Some(Identity::Kma(_)) if matches!(access, Access::Read(Read::ClusterStatus)) => {
            return Ok(())
        }
        Some(Identity::Kma(node)) => {
            return forbidden(format!("{what}: KMA {node} is not a member of this cluster"))
        }
        Some(Identity::User(user)) => user,
        Some(Identity::Agent(agent)) => {
            return forbidden(format!(
                "{what}: agent '{agent}' has no business on the management listener; \
                 help: agents use the service listener"
            ))
        }
        None => {
            let message = format!("{what}: present a certificate from this cluster's CA");
            return Err(refusal(ErrorCode::Unauthenticated, message));
        }
    };
    let state = local.state.read().await;
    state
        .check_access(&Actor::User(user.clone()), access)
        .map_err(|reject| refusal(ErrorCode::Forbidden, format!("{what}: {reject}")))
}

/// Raft RPCs come only from KMAs of this cluster.
/// Decodes a Raft RPC from another KMA of this cluster, runs it, and encodes openraft's answer.
/// Raft RPCs come only from KMAs: a user certificate is refused.
async fn propose(
    State(api): State<Arc<Management>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let request: ProposeRequest = match decode(&body) {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let (actor, origin, command) = match (&peer.0, request.actor) {
        (Some(Identity::Kma(node)), actor) => {
            let request = ProposeRequest { actor, ..request };
            return postcard_reply(&propose_forwarded(&api.proposer, *node, request).await);
        }
        (Some(Identity::User(_)), _) if matches!(request.command, Command::DestroyKeys { .. }) => {
            // The management API's route shows the impact first and destroys only what the
            // officer confirmed (SPEC O9); this raw route would skip that.
            let refused: ProposeResponse = Err(ProposeError::Unauthorised(
                "destroying keys goes through POST /v1/keys/destroy (kmsctl key destroy): \
                 preview, then confirm"
                    .into(),
            ));
            return postcard_reply(&refused);
        }
        (Some(Identity::User(user)), _) => {
            let passphrase = request.passphrase.map(zeroize::Zeroizing::new);
            match user_command(&api.local.state, user, request.command, passphrase).await {
                Ok(command) => (Actor::User(user.clone()), api.local.node_id(), command),
                Err(refused) => return postcard_reply::<ProposeResponse>(&Err(refused)),
            }
        }
        _ => {
            let refused: ProposeResponse =
                Err(ProposeError::Unauthorised("a user or KMA certificate is needed".into()));
            return postcard_reply(&refused);
        }
    };
    let proposal =
        Proposal { actor, origin_node_id: origin, request_id: request.request_id, command };
    postcard_reply(&api.proposer.propose(proposal).await)
}

async fn status(State(api): State<Arc<Management>>, Extension(peer): Extension<Peer>) -> Response {
    if let Err(refused) =
        admitted(&api.local, &peer, "status", Access::Read(Read::ClusterStatus)).await
    {
        return refused;
    }
    Json(api.local.status().await).into_response()
}

#[derive(Deserialize)]
struct DigestQuery {
    min_index: Option<u64>,
}

async fn digest(
    State(api): State<Arc<Management>>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<DigestQuery>,
) -> Response {
    if let Err(refused) =
        admitted(&api.local, &peer, "digest", Access::Read(Read::ClusterStatus)).await
    {
        return refused;
    }
    match api.local.digest(query.min_index.unwrap_or(0)).await {
        Ok(digest) => Json(digest).into_response(),
        Err(error) => refusal(ErrorCode::Unavailable, error.to_string()),
    }
}

async fn members(
    State(api): State<Arc<Management>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    // Membership changes follow from replicated commands (an approved join, a deletion), and
    // the leader checks the command is there (`write::membership`): only a member KMA passes a
    // change on, for the join it granted. Users ask through the commands (kmsctl kma ...).
    match &peer.0 {
        Some(Identity::Kma(node)) if api.local.is_member(*node) => {}
        _ => {
            let message = "membership changes: only a member KMA passes them to the leader; the \
                           membership follows from commands (a join the quorum approved, \
                           `kmsctl kma delete`)";
            return refusal(ErrorCode::Forbidden, message);
        }
    }
    match decode::<MembershipRequest>(&body) {
        Ok(request) => postcard_reply(&api.membership.membership_on_leader(request).await),
        Err(refused) => refused,
    }
}

async fn ca(State(api): State<Arc<Management>>) -> Response {
    match crate::pki::read(&api.local.layout.tls_dir().join(crate::pki::CA_FILE)) {
        Ok(pem) => pem.into_response(),
        Err(error) => refusal(ErrorCode::Internal, error.to_string()),
    }
}
