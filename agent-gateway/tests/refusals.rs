//! Every refusal of the service listener has the protocol's JSON error body, the framework's own
//! rejections included (issue 15, point 3): tried as a new user would, malformed JSON, a
//! missing field, a bad query, an unknown route, a wrong method and an oversized body must all
//! come back as `{"code": ..., "message": ..., "retryable": ...}` with the code's status, over
//! real TLS on 127.0.0.1.

mod support;

use agent_gateway::wire::{codes, ErrorBody};
use support::*;

/// The status and the error body of a refusal; fails on a body that is not JSON.
async fn refusal(response: reqwest::Response) -> (u16, ErrorBody) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// Setup: one fake KMA, an anonymous client over HTTP/2 and one over HTTP/1.1. Action: the
/// malformed requests a newcomer sends with curl. Expectation: each is refused with the JSON
/// body, the documented code and status, and a message naming what was wrong.
#[tokio::test]
async fn t90_issue_15_framework_rejections_have_the_json_error_body() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    let base = format!("https://{address}/agent/v1");
    for http1_only in [false, true] {
        let http = raw_client(&cluster.ca.pem, None, http1_only);
        let hello = format!("{base}/enroll/hello");
        let typed = |body: &'static str| {
            http.post(&hello).header("content-type", "application/json").body(body).send()
        };

        let (status, body) = refusal(typed("{not json").await.expect("answer")).await;
        assert_eq!((status, body.code.as_str()), (400, codes::BAD_REQUEST));
        assert!(body.message.starts_with("body: "), "{}", body.message);

        let (status, body) =
            refusal(typed(r#"{"agent_id":"drive1"}"#).await.expect("answer")).await;
        assert_eq!((status, body.code.as_str()), (400, codes::BAD_REQUEST));
        assert!(body.message.contains("missing field `client_nonce`"), "{}", body.message);

        let keys = format!("{base}/keys/{}?min_index=soon", "ab".repeat(30));
        let (status, body) = refusal(http.get(&keys).send().await.expect("answer")).await;
        assert_eq!((status, body.code.as_str()), (400, codes::BAD_REQUEST));
        assert!(body.message.starts_with("query: "), "{}", body.message);

        let (status, body) =
            refusal(http.get(format!("{base}/nothing")).send().await.expect("answer")).await;
        assert_eq!((status, body.code.as_str()), (404, codes::BAD_REQUEST));

        let (status, body) = refusal(http.get(&hello).send().await.expect("answer")).await;
        assert_eq!((status, body.code.as_str()), (405, codes::METHOD_NOT_ALLOWED));
        assert!(!body.retryable);
    }
}

/// An HTTP/1.1 client over TLS that writes a whole request before it reads the answer, as
/// many clients do, through a socket that buffers little (as over a real network: on loopback
/// the kernel would otherwise swallow a whole 6 MB body before the server answers).
struct PatientClient {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl PatientClient {
    async fn connect(address: &str, ca_pem: &str) -> PatientClient {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der_of(ca_pem)).expect("root");
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_send_buffer_size(256 * 1024).expect("send buffer");
        let tcp = socket.connect(address.parse().expect("address")).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        PatientClient { tls: connector.connect(name, tcp).await.expect("TLS handshake") }
    }

    /// Sends the whole request, then reads the answer: (status, body).
    async fn send(&mut self, head: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let head = format!("{head}\r\nHost: kma\r\nContent-Length: {}\r\n\r\n", body.len());
        self.tls.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(64 * 1024) {
            self.tls.write_all(chunk).await?;
        }
        self.tls.flush().await?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = self.tls.read(&mut buffer).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            answer.extend_from_slice(&buffer[..read]);
            if let Some(answer) = complete(&answer) {
                return Ok(answer);
            }
        }
    }
}

/// A whole HTTP/1.1 answer with a Content-Length: (status, body).
fn complete(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head.lines().find_map(|line| {
        line.to_ascii_lowercase().strip_prefix("content-length: ")?.parse().ok()
    })?;
    (body.len() >= length).then(|| (status, body[..length].to_string()))
}

/// Setup: one fake KMA. Action: a client that writes a whole 6 MB body (three times the limit)
/// to an enrollment route before reading, over HTTP/1.1, twice on one connection, then a
/// discovery on the same connection; and the same body with reqwest over HTTP/2. Expectation:
/// a JSON 413 `body_too_large` each time, not a connection reset while the client is still
/// sending (the listener reads and discards the rest of the body before it answers), and the
/// connection goes on serving.
#[tokio::test]
async fn t90_issue_15_oversized_body_gets_a_json_413_not_a_dropped_connection() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    let huge = format!(r#"{{"agent_id":"{}"}}"#, "x".repeat(6 * 1024 * 1024));
    let mut patient = PatientClient::connect(&address, &cluster.ca.pem).await;
    for _ in 0..2 {
        let sent = patient.send("POST /agent/v1/enroll/hello HTTP/1.1", huge.as_bytes()).await;
        let (status, text) = sent.expect("an answer, not a reset connection");
        let body: ErrorBody = serde_json::from_str(&text).expect("the JSON error body");
        assert_eq!((status, body.code.as_str()), (413, codes::BODY_TOO_LARGE));
        assert!(body.message.contains("2097152 bytes"), "{}", body.message);
    }
    let discovery = patient.send("GET /agent/v1/discovery HTTP/1.1", b"").await;
    assert_eq!(discovery.expect("the connection still serves").0, 200);

    let http2 = raw_client(&cluster.ca.pem, None, false);
    let sent = http2.post(format!("https://{address}/agent/v1/enroll/hello")).body(huge).send();
    let (status, body) = refusal(sent.await.expect("an answer over HTTP/2")).await;
    assert_eq!((status, body.code.as_str()), (413, codes::BODY_TOO_LARGE));
}
