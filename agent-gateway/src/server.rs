//! The service listener: TLS 1.3, HTTP/1.1 and HTTP/2 on one port, the routes of the agent
//! protocol, and who the caller is (from its client certificate, checked against the state).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::wire::{ErrorCode, REQUEST_BODY_LEN_MAX};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::{Builder, Connection};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use statemachine::{Reject, State};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroize;

use crate::backend::Backend;
use crate::connections::{
    self, Admission, ConnectionLimits, ConnectionStats, Ended, Registry, TrackedBody,
};
use crate::error::ApiError;
use crate::throttle::{Failures, PendingChallenges};
use crate::wire::AGENT_CN_PREFIX;
use crate::{enroll, routes, unread_body};

/// What the gateway shares between requests.
pub(crate) struct Gateway<B> {
    pub backend: Arc<B>,
    pub pending: Mutex<PendingChallenges>,
    pub failures: Mutex<Failures>,
}

/// The client certificate of a connection, as far as TLS alone can tell; whether it is the
/// agent's current certificate is checked against the state on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerCertificate {
    None,
    Agent {
        agent_id: String,
        fingerprint: [u8; 32],
    },
    /// A certificate of this cluster's CA for something else (a user, a KMA).
    Other {
        common_name: String,
    },
}

/// Put into each request's extensions by [`serve`]; a node that serves [`router`] itself must
/// insert one too, or every agent route answers `certificate_required`.
#[derive(Clone, Debug)]
pub struct Peer {
    pub remote: Option<SocketAddr>,
    pub certificate: PeerCertificate,
}

impl Peer {
    /// `certificate` must already be verified against the cluster CA by the TLS layer.
    pub fn new(remote: Option<SocketAddr>, certificate: Option<&CertificateDer<'_>>) -> Self {
        let certificate = match certificate {
            None => PeerCertificate::None,
            Some(der) => classify(der),
        };
        Peer { remote, certificate }
    }

    /// The source address recorded with failed enrollments.
    pub fn source(&self) -> String {
        self.remote.map_or_else(|| "unknown".into(), |remote| remote.ip().to_string())
    }
}

fn classify(der: &CertificateDer<'_>) -> PeerCertificate {
    let common_name = x509_parser::parse_x509_certificate(der.as_ref())
        .ok()
        .and_then(|(_, parsed)| {
            let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
            Some(name)
        })
        .unwrap_or_default();
    match common_name.strip_prefix(AGENT_CN_PREFIX) {
        Some(agent_id) if !agent_id.is_empty() => PeerCertificate::Agent {
            agent_id: agent_id.into(),
            fingerprint: Sha256::digest(der.as_ref()).into(),
        },
        _ => PeerCertificate::Other { common_name },
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<Peer>().cloned();
        Ok(peer.unwrap_or(Peer { remote: None, certificate: PeerCertificate::None }))
    }
}

/// An agent that presented some agent certificate; [`authorize`] checks it is the current one.
pub(crate) struct Claimed<'a> {
    pub agent_id: &'a str,
    pub fingerprint: &'a [u8; 32],
}

pub(crate) fn claimed(peer: &Peer) -> Result<Claimed<'_>, ApiError> {
    match &peer.certificate {
        PeerCertificate::Agent { agent_id, fingerprint } => Ok(Claimed { agent_id, fingerprint }),
        PeerCertificate::None => Err(ApiError::new(
            ErrorCode::CertificateRequired,
            "this route needs the agent's client certificate",
        )
        .help("enroll the drive (POST /agent/v1/enroll/hello) and present its certificate")),
        PeerCertificate::Other { common_name } => Err(ApiError::new(
            ErrorCode::NotAnAgent,
            format!("the certificate names {common_name:?}, not an agent"),
        )
        .help("present a certificate whose common name is agent:<ID>")),
    }
}

/// Refuses an agent that is unknown, disabled, or presents a certificate other than the one
/// recorded at its last enrollment (a re-enrollment revokes the old one, SPEC A1).
pub(crate) fn authorize(state: &State, claimed: &Claimed<'_>) -> Result<(), ApiError> {
    let agent_id = claimed.agent_id;
    let agent = state
        .meta()
        .agents
        .get(agent_id)
        .ok_or_else(|| Reject::UnknownAgent { agent: agent_id.into() })?;
    if !agent.enabled {
        return Err(Reject::AgentDisabled { agent: agent_id.into() }.into());
    }
    if agent.certificate_fingerprint.as_ref() != Some(claimed.fingerprint) {
        return Err(ApiError::new(
            ErrorCode::CertificateRevoked,
            format!("this certificate of agent '{agent_id}' was revoked by a later enrollment"),
        )
        .help("enroll the drive again with the passphrase its Operator set"));
    }
    Ok(())
}

/// The router of the agent protocol; [`serve`] runs it behind TLS.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    let gateway = Arc::new(Gateway {
        backend,
        pending: Mutex::new(PendingChallenges::default()),
        failures: Mutex::new(Failures::default()),
    });
    Router::new()
        .route("/agent/v1/enroll/hello", post(enroll::hello::<B>))
        .route("/agent/v1/enroll/proof", post(enroll::proof::<B>))
        .route("/agent/v1/discovery", get(routes::discovery::<B>))
        .route("/agent/v1/data-units", post(routes::create_data_unit::<B>))
        .route("/agent/v1/data-units/{id}/keys", get(routes::keys::<B>))
        .route("/agent/v1/data-units/{id}/write-key", post(routes::write_key::<B>))
        .route("/agent/v1/data-units/{id}/disassociate-on-bot", post(routes::disassociate::<B>))
        .route("/agent/v1/keys/{key_id}", get(routes::key::<B>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_LEN_MAX))
        .with_state(gateway)
}

async fn not_found() -> Response {
    ApiError::new(ErrorCode::BadRequest, "no such route")
        .with_status(StatusCode::NOT_FOUND)
        .help("routes start with /agent/v1; see docs/agent-protocol.md")
        .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take this HTTP method")
        .help("see docs/agent-protocol.md for each route's method")
        .into_response()
}

/// Accepts TLS connections until the task is dropped; each connection is served on its own
/// task. `tls` must offer TLS 1.3 and verify client certificates against the cluster CA while
/// allowing clients without one (enrollment is anonymous). Connections are bounded by
/// [`ConnectionLimits::default`]; see [`serve_limited`].
pub async fn serve<B: Backend>(
    backend: Arc<B>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let limits = ConnectionLimits::default();
    serve_limited(backend, listener, tls, limits, ConnectionStats::default()).await;
}

/// [`serve`] with the given connection bounds, counting into `stats`.
pub async fn serve_limited<B: Backend>(
    backend: Arc<B>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ConnectionLimits,
    stats: ConnectionStats,
) {
    let tag = |tls: &rustls::ServerConnection, remote: SocketAddr| {
        let mut extensions = axum::http::Extensions::new();
        extensions.insert(Peer::new(Some(remote), client_certificate(tls)));
        extensions
    };
    let app = router(backend);
    serve_tls(listener, tls, app, "service listener", tag, None, limits, stats).await;
}

/// The client's certificate, verified by the handshake against the listener's CA; `None` when
/// the client presented none.
pub fn client_certificate(tls: &rustls::ServerConnection) -> Option<&CertificateDer<'static>> {
    tls.peer_certificates().and_then(|chain| chain.first())
}

/// A connection the client opened for a protocol other than HTTP, chosen through ALPN: the
/// handshake is done (client certificate verified), the stream is the handler's.
pub type HandedOff = (tokio_rustls::server::TlsStream<TcpStream>, SocketAddr);

/// What serves a handed-off connection, until it ends.
pub type HandoffServer = Arc<
    dyn Fn(HandedOff) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// A protocol served beside HTTP on the same listener: connections whose client offered
/// `protocol` in ALPN and presented a client certificate go to `serve` instead of HTTP (the
/// management listener's Raft links); without a certificate they are closed.
#[derive(Clone)]
pub struct Handoff {
    pub protocol: &'static [u8],
    pub serve: HandoffServer,
}

/// The TLS server of both listeners of a KMA: accepts connections until the task is dropped,
/// serves each on its own task (HTTP/1.1 and HTTP/2), and puts into every request what `tag`
/// makes of the client's TLS session (its verified certificate, [`client_certificate`]) and
/// address. A connection whose client chose
/// `handoff`'s protocol in ALPN, with a client certificate, is given to it instead.
/// `limits` bounds the connections, their handshake, headers and idle time
/// (`crate::connections`); `stats` counts them, for the node's metrics.
// Each argument is one listener's own; a builder would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn serve_tls<Tag>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    name: &'static str,
    tag: Tag,
    handoff: Option<Handoff>,
    limits: ConnectionLimits,
    stats: ConnectionStats,
) where
    Tag: Fn(&rustls::ServerConnection, SocketAddr) -> axum::http::Extensions
        + Clone
        + Send
        + Sync
        + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let registry = Registry::new(name, limits, stats);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, typically: pause rather than spin.
                tracing::warn!(%error, name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Beyond the bound the socket is closed at once (counted and warned about by the
        // registry): holding it, even unread, would spend the descriptors the bound protects.
        let Some(admission) = registry.admit() else { continue };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted { acceptor: acceptor.clone(), stream, remote, admission };
        let handoff = handoff.clone();
        tokio::spawn(serve_connection(accepted, app.clone(), name, tag.clone(), handoff));
    }
}

/// A connection just accepted, with its place in the listener's bounds.
struct Accepted {
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    admission: Admission,
}

/// One accepted connection: the handshake (bounded in time, and dropped for a newer one when
/// too many are under way), then HTTP until the client goes or the connection's bounds close it.
async fn serve_connection<Tag>(
    accepted: Accepted,
    app: Router,
    name: &'static str,
    tag: Tag,
    handoff: Option<Handoff>,
) where
    Tag: Fn(&rustls::ServerConnection, SocketAddr) -> axum::http::Extensions,
{
    let Accepted { acceptor, stream, remote, mut admission } = accepted;
    let handshake_timeout = admission.limits().handshake_timeout;
    let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                // Expired certificates and those of another CA end here, before any request.
                tracing::info!(%remote, %error, name, "TLS handshake refused");
                return;
            }
            Err(_) => {
                // Debug only: a flood of these must not flood the log (the bound is counted).
                tracing::debug!(%remote, name, "TLS handshake timed out");
                return;
            }
        },
        () = admission.slot.evicted() => {
            tracing::debug!(%remote, name, "TLS handshake dropped for a newer one");
            return;
        }
    };
    let certificate = client_certificate(tls.get_ref().1);
    let handoff = handoff.filter(|h| tls.get_ref().1.alpn_protocol() == Some(h.protocol));
    if handoff.is_some() && certificate.is_none() {
        // Only a CA-verified client reaches the other protocol (Raft links), which would
        // otherwise read frames from anyone.
        tracing::info!(%remote, name, "handoff protocol asked without a certificate: closed");
        return;
    }
    if !admission.settle(certificate.is_some()) {
        return;
    }
    if let Some(handoff) = handoff {
        (handoff.serve)((tls, remote)).await;
        return;
    }
    let extensions = tag(tls.get_ref().1, remote);
    serve_http(tls, app, extensions, &admission, (name, remote)).await;
}

/// HTTP on a connection past its handshake, until the client goes or its bounds close it. A
/// body a handler left unread is read to its end before the answer (`unread_body`), so a
/// refused request does not reset a connection whose client is still sending.
async fn serve_http(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    app: Router,
    extensions: axum::http::Extensions,
    admission: &Admission,
    (name, remote): (&'static str, SocketAddr),
) {
    let slot = admission.slot.clone();
    let service = tower::service_fn(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().extend(extensions.clone());
        // In flight from its headers until its answer is sent: the idle time does not run.
        let in_flight = slot.begin();
        let app = app.clone();
        async move {
            let response = unread_body::serve_request(app, request).await?;
            Ok::<_, Infallible>(response.map(|inner| Body::new(TrackedBody::new(inner, in_flight))))
        }
    });
    // No hyper timer: its HTTP/1.1 header timeout also runs while a keep-alive connection waits
    // for its next request, which would cut authenticated clients' connections at the header
    // time. `connections::supervise` bounds the first headers and the idle time instead.
    let builder = Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    let shutdown = |connection: Pin<&mut _>| Connection::graceful_shutdown(connection);
    match connections::supervise(connection.as_mut(), shutdown, admission).await {
        Ended::ByItself(Ok(())) => {}
        Ended::ByItself(Err(error)) => tracing::debug!(%remote, %error, name, "connection ended"),
        Ended::Closed(closing) => tracing::debug!(%remote, name, ?closing, "closed by its bounds"),
    }
}

/// Parses a JSON request body, answering `bad_request` with serde's reason.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("body: {error}")))
}

pub(crate) fn json_response<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => ApiError::internal(format!("encoding the answer: {error}")).into_response(),
    }
}

/// A response body holding clear key values: zeroized when hyper drops it.
struct SecretBody(Vec<u8>);

impl AsRef<[u8]> for SecretBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBody {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Like [`json_response`] for answers that carry key values. The buffer is sized up front so
/// that growing it leaves no copy of a key behind in freed memory.
pub(crate) fn secret_json_response<T: Serialize>(value: &T, keys: usize) -> Response {
    let mut buffer = Vec::with_capacity(512 + keys * 256);
    match serde_json::to_writer(&mut buffer, value) {
        Ok(()) => {
            let body = Bytes::from_owner(SecretBody(buffer));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(error) => {
            buffer.zeroize();
            ApiError::internal(format!("encoding the answer: {error}")).into_response()
        }
    }
}
