//! The management listener: HTTPS with mutual TLS, serving Raft RPCs between KMAs, proposals,
//! status, state digests, membership changes and joins.

// A handler helper returns the refusal response itself; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use statemachine::quorum::QuorumOperation;
use statemachine::{Actor, Command, Role};
use tokio::net::TcpListener;

use crate::kma::{Kma, Proposal};
use crate::pki::Identity;
use crate::wire::{MembershipRequest, ProposeError, ProposeRequest, ProposeResponse, POSTCARD};

/// Who is on the other end of a connection, from its verified client certificate.
#[derive(Clone, Debug)]
pub struct Peer(pub Option<Identity>);

pub fn router(kma: Arc<Kma>) -> Router {
    let admin = admin_api::backend::Admin {
        state: kma.state.clone(),
        node: Arc::new(crate::admin::NodeAdmin { kma: kma.clone() }),
    };
    let (management_api, _document) = admin_api::routes::router(Arc::new(admin));
    Router::new()
        .route("/v1/propose", post(propose))
        .route("/v1/status", get(status))
        .route("/v1/digest", get(digest))
        .route("/v1/members", post(members))
        .route("/v1/ca", get(ca))
        .merge(crate::security_api::routes())
        .merge(crate::health::routes())
        .with_state(kma)
        .merge(management_api)
        .layer(crate::metrics::MetricsLayer::new(crate::metrics::MANAGEMENT))
}

/// Accepts TLS connections until the process ends (the TLS server is the gateway's, shared by
/// both listeners); each request carries the client's identity and address.
pub async fn serve(kma: Arc<Kma>, listener: TcpListener) -> Result<(), crate::kma::NodeError> {
    let tls = crate::tls::management_server_config(&kma.layout.tls_dir())?;
    let tag = |certificate: Option<&CertificateDer<'_>>, remote: SocketAddr| {
        let mut extensions = axum::http::Extensions::new();
        // A certificate from another cluster's CA never gets here: the handshake refuses it.
        let identity = certificate.and_then(crate::tls::identity_of);
        let user = match &identity {
            Some(Identity::User(user)) => Some(user.clone()),
            _ => None,
        };
        extensions.insert(admin_api::backend::Caller(user));
        extensions.insert(Peer(identity));
        extensions.insert(crate::security_api::Remote(remote));
        extensions
    };
    let links = Some(crate::raft_link::handoff(kma.clone()));
    agent_gateway::server::serve_tls(listener, tls, router(kma), "management listener", tag, links)
        .await;
    Ok(())
}

fn postcard_reply<T: Serialize>(value: &T) -> Response {
    match postcard::to_allocvec(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, POSTCARD)], bytes).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    postcard::from_bytes(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed body: {e}")).into_response())
}

fn forbidden(what: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("{what}: present a certificate from this cluster's CA"))
        .into_response()
}

/// Who may use a management route: other KMAs, and users who exist, are enabled and, when
/// `role` is given, hold it (the role matrix of `statemachine::permission` for the same
/// records). Agents never: their routes are on the service listener.
pub(crate) async fn admitted(
    kma: &Kma,
    peer: &Peer,
    what: &str,
    role: Option<Role>,
) -> Result<(), Response> {
    let user = match &peer.0 {
        Some(Identity::Kma(node)) if role.is_none() || kma.is_member(*node) => return Ok(()),
        Some(Identity::Kma(node)) => {
            let refusal = format!("{what}: KMA {node} is not a member of this cluster");
            return Err((StatusCode::FORBIDDEN, refusal).into_response());
        }
        Some(Identity::User(user)) => user,
        Some(Identity::Agent(agent)) => {
            let refusal = format!(
                "{what}: agent '{agent}' has no business on the management listener; \
                 help: agents use the service listener"
            );
            return Err((StatusCode::FORBIDDEN, refusal).into_response());
        }
        None => return Err(forbidden(what)),
    };
    let state = kma.state.read().await;
    let refusal = match state.meta().users.get(user) {
        None => format!("{what}: user '{user}' does not exist (any more)"),
        Some(record) if !record.enabled => format!(
            "{what}: user '{user}' is disabled; help: a Security Officer enables the user again"
        ),
        Some(record) => match role {
            Some(role) if !record.roles.contains(role) => format!(
                "{what}: needs the {} role, which user '{user}' does not hold; help: ask a \
                 Security Officer",
                role.name()
            ),
            _ => return Ok(()),
        },
    };
    Err((StatusCode::FORBIDDEN, refusal).into_response())
}

/// Raft RPCs come only from KMAs of this cluster.
/// Decodes a Raft RPC from another KMA of this cluster, runs it, and encodes openraft's answer.
/// Raft RPCs come only from KMAs: a user certificate is refused.
async fn propose(
    State(kma): State<Arc<Kma>>,
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
            return postcard_reply(&propose_forwarded(&kma, *node, request).await);
        }
        (Some(Identity::User(user)), _) => {
            let len_min = kma.state.read().await.meta().security.passphrase_len_min;
            match user_command(request.command, request.passphrase.as_deref(), len_min) {
                Ok(command) => (Actor::User(user.clone()), kma.node_id(), command),
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
    postcard_reply(&kma.propose(proposal).await)
}

/// A proposal the KMA `node` forwards on behalf of the client it authenticated (over HTTP or a
/// Raft link): only a member KMA may, and it must name that client.
pub(crate) async fn propose_forwarded(
    kma: &Kma,
    node: u64,
    request: ProposeRequest,
) -> ProposeResponse {
    match request.actor {
        Some(actor) if kma.is_member(node) => {
            let origin_node_id = request.origin_node_id.unwrap_or(node);
            let request_id = request.request_id;
            kma.propose(Proposal { actor, origin_node_id, request_id, command: request.command })
                .await
        }
        _ => Err(ProposeError::Unauthorised(format!(
            "KMA {node} is not a member of this cluster: it was deleted, or has not joined yet"
        ))),
    }
}

/// Checks a command a user sent: commands that need the node's own proof (quorum approvals,
/// a re-split master key) have their own endpoints, and a passphrase becomes a verifier here,
/// so that the cluster's minimum length holds and clients never choose verifiers.
pub(crate) fn user_command(
    mut command: Command,
    passphrase: Option<&str>,
    len_min: u32,
) -> Result<Command, ProposeError> {
    let elsewhere = |what: &str| Err(ProposeError::Unauthorised(what.into()));
    match &command {
        Command::ApproveQuorumOperation { .. } => {
            return elsewhere(
                "approvals go through POST /v1/quorum/approve with the member's passphrase",
            )
        }
        Command::StartQuorumOperation {
            operation: QuorumOperation::ChangeQuorum { .. }, ..
        } => return elsewhere(
            "a new quorum goes through POST /v1/quorum/change (the KMA re-splits the master key)",
        ),
        _ => {}
    }
    let verifier = match &mut command {
        Command::CreateUser { passphrase_verifier, .. }
        | Command::SetUserPassphrase { passphrase_verifier, .. }
        | Command::CreateAgent { passphrase_verifier, .. }
        | Command::SetAgentPassphrase { passphrase_verifier, .. }
        | Command::CreateKma { passphrase_verifier, .. } => Some(passphrase_verifier),
        _ => None,
    };
    match (verifier, passphrase) {
        (Some(verifier), Some(passphrase)) => {
            *verifier = crate::security_api::make_verifier(passphrase, len_min)
                .map_err(ProposeError::Unauthorised)?;
        }
        (Some(_), None) => {
            return elsewhere(
                "this command sets a passphrase: send it in the request's passphrase field",
            )
        }
        (None, Some(_)) => return elsewhere("this command takes no passphrase"),
        (None, None) => {}
    }
    Ok(command)
}

async fn status(State(kma): State<Arc<Kma>>, Extension(peer): Extension<Peer>) -> Response {
    if let Err(refused) = admitted(&kma, &peer, "status", None).await {
        return refused;
    }
    Json(kma.status().await).into_response()
}

#[derive(Deserialize)]
struct DigestQuery {
    min_index: Option<u64>,
}

async fn digest(
    State(kma): State<Arc<Kma>>,
    Extension(peer): Extension<Peer>,
    Query(query): Query<DigestQuery>,
) -> Response {
    if let Err(refused) = admitted(&kma, &peer, "digest", None).await {
        return refused;
    }
    match kma.digest(query.min_index.unwrap_or(0)).await {
        Ok(digest) => Json(digest).into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

async fn members(
    State(kma): State<Arc<Kma>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    // Adding, promoting and removing KMAs is the Security Officer's (SPEC S1), as the KMA
    // records are; the join flow reaches here with a KMA's own certificate.
    let role = Some(Role::SecurityOfficer);
    if let Err(refused) = admitted(&kma, &peer, "membership changes", role).await {
        return refused;
    }
    match decode::<MembershipRequest>(&body) {
        Ok(request) => postcard_reply(&kma.membership_on_leader(request).await),
        Err(refused) => refused,
    }
}

async fn ca(State(kma): State<Arc<Kma>>) -> Response {
    match crate::pki::read(&kma.layout.tls_dir().join(crate::pki::CA_FILE)) {
        Ok(pem) => pem.into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
