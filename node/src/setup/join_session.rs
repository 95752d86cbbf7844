//! The TLS session of a join, spoken by the joiner itself rather than through an HTTP client
//! library: the proof of the join passphrase is bound to this very session through its TLS
//! exporter (issue #16 point 5, `wire::JoinExporter`), which a pooled client would hide.
//! Both steps of the exchange (hello, proof) go over the one session.

use std::sync::Arc;
use std::time::Duration;

use axum::http;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::wire::JoinExporter;

/// How long a connection, its handshake or one request may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest answer read (a challenge, a refusal, a grant with two certificates).
const ANSWER_LEN_MAX: usize = 64 * 1024;

/// One TLS session to the KMA a joiner joins through.
pub struct JoinSession {
    peer: String,
    sender: SendRequest<Full<Bytes>>,
    exporter: JoinExporter,
}

impl JoinSession {
    /// Connects to `peer` (`host:port`) and completes the TLS handshake with `tls`, which
    /// trusts the cluster CA only.
    pub async fn open(peer: &str, tls: rustls::ClientConfig) -> anyhow::Result<JoinSession> {
        let host = crate::config::advertise_host(peer)
            .ok_or_else(|| anyhow::anyhow!("'{peer}' is not host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| anyhow::anyhow!("'{host}' is not a host name or address: {e}"))?;
        let connect = async {
            let tcp = TcpStream::connect(peer).await?;
            let _ = tcp.set_nodelay(true);
            TlsConnector::from(Arc::new(tls)).connect(server_name, tcp).await
        };
        let stream = tokio::time::timeout(STEP_TIMEOUT, connect)
            .await
            .map_err(|_| anyhow::anyhow!("{peer} did not complete a TLS handshake in time"))?
            .map_err(|e| anyhow::anyhow!("cannot reach {peer}: {e}"))?;
        let exporter = JoinExporter::of_client(stream.get_ref().1);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| anyhow::anyhow!("HTTP with {peer}: {e}"))?;
        // Ends when `sender` is dropped or the peer closes the connection.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "join session closed");
            }
        });
        Ok(JoinSession { peer: peer.to_string(), sender, exporter })
    }

    /// This session's exporter value, to bind the proof with.
    pub fn exporter(&self) -> JoinExporter {
        self.exporter
    }

    /// POSTs `body` as JSON to `path`; answers the status and the body.
    pub async fn post(
        &mut self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let request = http::Request::post(path)
            .header(http::header::HOST, &self.peer)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            // A join's answers are a few KiB; whoever answers gets no more of this memory.
            let limited = http_body_util::Limited::new(response.into_body(), ANSWER_LEN_MAX);
            let body = limited.collect().await.map_err(|e| anyhow::anyhow!("{e}"))?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        let peer = &self.peer;
        tokio::time::timeout(STEP_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("{peer} did not answer {path} in time"))?
            .map_err(|e| anyhow::anyhow!("{path} at {peer}: {e}"))
    }
}
