//! KMIP on the service listener's host (SPEC U5, issue 19): binary TTLV messages over mutual
//! TLS, by default on TCP 5696, for tape libraries and other KMIP clients.
//!
//! A KMIP client is an agent: an Operator enrolls it from its certificate request, its
//! certificate names `agent:<ID>`, and the fingerprint recorded at enrollment is checked on
//! every request, as for a drive. Its key groups decide what it sees; the state machine
//! decides everything else (`statemachine::kmip`).
//!
//! - `engine`: one request's batch items, run in order, with the ID placeholder.
//! - `attributes`: KMIP attributes to and from what the state keeps.
//! - `reads`: the reads answered locally, counted for the audit log.
//! - `client`: a client's TLS connection and one exchange, for the tests and the bench.
//!
//! A connection is read one message at a time: 8 header bytes, checked (a Request Message
//! structure no longer than `Limits::SERVER` allows) before its body is read, the body under
//! the header-read timeout, then the answer. Bytes that are not TTLV close the connection (the
//! stream has lost its framing); a well-framed message the server will not run is answered
//! with the KMIP result reason for it. The connection bounds of the other listeners apply.

mod attributes;
pub mod client;
mod engine;
mod reads;

use std::sync::Arc;

use kmip::message::{self, Failure, RequestError};
use kmip::ttlv::{self, HEADER_LEN};
use kmip::{enums::ResultReason, Item, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::backend::Backend;
use crate::connections::{Admission, ConnectionLimits, ConnectionStats, Registry};
use crate::server::{authorize, client_certificate, Claimed, Peer, PeerCertificate};

pub use engine::OPERATIONS;
pub use reads::{ReadLog, FLUSH_INTERVAL};

/// IANA's port for KMIP over TLS.
pub const KMIP_PORT: u16 = 5696;

/// Accepts KMIP connections until the task is dropped. `tls` must require a client
/// certificate of the cluster CA; KMIP 1.x profiles need TLS 1.2, which it may offer beside
/// 1.3 (docs/kmip.md). Read counts go to the audit log every [`FLUSH_INTERVAL`].
pub async fn serve_kmip<B: Backend>(
    backend: Arc<B>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ConnectionLimits,
    stats: ConnectionStats,
) {
    let reads = Arc::new(ReadLog::default());
    let flusher = {
        let (backend, reads) = (backend.clone(), reads.clone());
        tokio::spawn(async move { reads.flush_forever(&*backend).await })
    };
    let _flusher = AbortOnDrop(flusher);
    let acceptor = TlsAcceptor::from(tls);
    let registry = Registry::new("KMIP listener", limits, stats);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "KMIP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admission) = registry.admit() else { continue };
        let _ = stream.set_nodelay(true);
        let (backend, reads, acceptor) = (backend.clone(), reads.clone(), acceptor.clone());
        tokio::spawn(async move {
            let handshake_timeout = admission.limits().handshake_timeout;
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::info!(%remote, %error, "KMIP TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let peer = Peer::new(Some(remote), client_certificate(tls.get_ref().1));
            serve_connection(&*backend, &reads, tls, peer, admission).await;
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves one client's messages until it goes, breaks the framing or stays idle too long.
async fn serve_connection<B: Backend, S: AsyncRead + AsyncWrite + Unpin>(
    backend: &B,
    reads: &ReadLog,
    mut stream: S,
    peer: Peer,
    mut admission: Admission,
) {
    let remote = peer.remote;
    let PeerCertificate::Agent { agent_id, fingerprint } = &peer.certificate else {
        tracing::info!(?remote, "KMIP connection without an agent certificate: closed");
        return;
    };
    if !admission.settle(true) {
        return;
    }
    let claimed = Claimed { agent_id, fingerprint };

    let limits = admission.limits().clone();
    let mut first = true;
    loop {
        let wait = if first { limits.header_read_timeout } else { limits.idle_timeout };
        first = false;
        let mut header = [0u8; HEADER_LEN];
        match tokio::time::timeout(wait, stream.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
        let body = match read_body(&mut stream, &header, limits.header_read_timeout).await {
            Ok(body) => body,
            Err(reason) => {
                tracing::info!(
                    ?remote,
                    agent = agent_id.as_str(),
                    reason,
                    "KMIP framing error: closed"
                );
                reads.count(agent_id, 0, None, false);
                return;
            }
        };
        let answer = answer(backend, reads, &claimed, &body).await;
        match answer.encode() {
            Ok(bytes) => {
                if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(?remote, %error, "KMIP response could not be encoded: closed");
                return;
            }
        }
    }
}

/// The rest of a message whose header is `header`, zeroized on drop (a Register carries a key).
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    header: &[u8; HEADER_LEN],
    timeout: std::time::Duration,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let total = ttlv::message_len(header, &Limits::SERVER).map_err(|e| e.to_string())?;
    // Grown as bytes arrive, not sized from the header: a client that announces 1 MiB and
    // sends nothing costs the server nothing.
    let mut body = zeroize::Zeroizing::new(Vec::with_capacity(HEADER_LEN + 4096));
    body.extend_from_slice(header);
    let rest = (total - HEADER_LEN) as u64;
    match tokio::time::timeout(timeout, (&mut *stream).take(rest).read_to_end(&mut body)).await {
        Ok(Ok(_)) if body.len() == total => Ok(body),
        Ok(Ok(_)) => Err("the connection ended inside a message".into()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the message body did not arrive in time".into()),
    }
}

fn seconds_now() -> i64 {
    i64::try_from(crate::routes::now_ms() / 1000).unwrap_or(i64::MAX)
}

/// The Response Message for one well-framed message.
async fn answer<B: Backend>(
    backend: &B,
    reads: &ReadLog,
    claimed: &Claimed<'_>,
    body: &[u8],
) -> Item {
    let agent = claimed.agent_id;
    let decoded = match ttlv::decode(body, &Limits::SERVER) {
        Ok(item) => item,
        Err(error) => {
            reads.count(agent, 0, None, false);
            let refusal = RequestError {
                version: message::ProtocolVersion::V1_0,
                reason: ResultReason::INVALID_MESSAGE,
                message: format!("not a KMIP message: {error}"),
            };
            return message::refusal(refusal, seconds_now());
        }
    };
    let request = match message::parse_request(&decoded) {
        Ok(request) => request,
        Err(error) => {
            tracing::info!(agent, %error, message = ?decoded, "KMIP request refused");
            reads.count(agent, 0, None, false);
            return message::refusal(error, seconds_now());
        }
    };
    let version = request.header.version;
    let authorized =
        backend.read(0, |state| authorize(state, claimed).map_err(|e| e.body.message)).await;
    let refused = match authorized {
        Ok(Ok(())) => None,
        // An unknown, disabled or re-enrolled agent's certificate passes the handshake (it is
        // the CA's); every request is refused until an Operator enrolls it again.
        Ok(Err(message)) => {
            Some(Failure::new(ResultReason::AUTHENTICATION_NOT_SUCCESSFUL, message))
        }
        Err(error) => Some(Failure::new(ResultReason::GENERAL_FAILURE, error.message)),
    };
    if let Some(failure) = refused {
        reads.count(agent, 0, None, false);
        let error = RequestError { version, reason: failure.reason, message: failure.message };
        return message::refusal(error, seconds_now());
    }
    let items = engine::run(backend, agent, reads, &request).await;
    let response = message::response(version, seconds_now(), items);
    match request.header.maximum_response_size {
        Some(max) if response.encoded_len() > max => {
            let error = RequestError {
                version,
                reason: ResultReason::RESPONSE_TOO_LARGE,
                message: format!(
                    "the response is {} bytes, over the {max} the request allows",
                    response.encoded_len()
                ),
            };
            message::refusal(error, seconds_now())
        }
        _ => response,
    }
}
