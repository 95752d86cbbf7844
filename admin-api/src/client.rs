//! A client of the management API (what `kmsctl` uses, and any Rust program may): HTTPS with
//! mutual TLS 1.3 to a KMA's management listener, JSON both ways.
//!
//! - Every non-2xx answer carries an [`ErrorBody`]; it comes back as [`ClientError::Api`] with
//!   the HTTP status.
//! - A profile names several KMAs. A request goes to the KMA that answered last; when it cannot
//!   be reached (connect error, TLS handshake failure) or answers `503 unavailable`, the next
//!   one is tried. Only when all fail is the answer [`ClientError::Unreachable`]. A write is
//!   never sent twice after it may have arrived: a timeout on a write stops there.
//! - Read-your-writes: the client remembers the highest [`Done::index`] it saw and passes it as
//!   `min_index` on every later read, so a read from any KMA shows this client's writes.
//! - [`login`] runs the passphrase challenge/response (no client certificate), checks that the
//!   KMA proved it holds the user's verifier, and returns the granted certificate with the key
//!   pair made here (the private key never leaves this process), and the log index of the entry
//!   that recorded the login. A KMA accepts the certificate once it has applied that entry:
//!   [`AdminClient::with_login_index`] sends the index with every request
//!   ([`LOGIN_INDEX_HEADER`]) so that a KMA that has not applied it yet waits instead of
//!   refusing, and reads start from it.
//! - [`approve_unlock`]: a quorum member's share, given straight to a locked KMA with the
//!   member's passphrase and no client certificate (the one way in after a cold restart, when
//!   no KMA can sign a user certificate).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::api::{
    Done, ErrorBody, ErrorCode, LoginGranted, MemberUnlockProgress, MemberUnlockRequest,
    PreviewOrDone, ProofRequest, LOGIN_INDEX_HEADER, MEMBER_UNLOCK_PATH,
};

/// The purpose of a user login in the challenge transcript. Mirrors `PURPOSE_USER` in
/// `node/src/security_api.rs` (node depends on this crate, not the reverse): the two must match,
/// or every login fails the proof.
pub const PURPOSE_USER: &str = "user-login";

/// How long a connection attempt to one KMA may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take: reads with `min_index` wait up to 30 s on the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A backup file may be gigabytes: fetching one is bounded by this, not by [`REQUEST_TIMEOUT`].
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Longest error body quoted in a message when it is not an [`ErrorBody`].
const BODY_QUOTE_LEN_MAX: usize = 200;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The KMA answered with a refusal.
    #[error("{error}")]
    Api { status: u16, address: String, error: ErrorBody },
    /// No KMA of the profile could be reached, or every one answered `unavailable`.
    #[error("no KMA answered: {}", .attempts.join("; "))]
    Unreachable { attempts: Vec<String> },
    /// A write was sent but no answer came in time: it may or may not have been applied.
    #[error(
        "{address} did not answer {path} in time; the command may or may not have been applied"
    )]
    OutcomeUnknown { address: String, path: String },
    /// A 2xx answer whose body is not what the contract says.
    #[error("{address}: the answer to {path} could not be read: {detail}")]
    Decode { address: String, path: String, detail: String },
    /// Building the TLS configuration or the certificate request failed.
    #[error("{what}: {detail}")]
    Config { what: &'static str, detail: String },
    /// The login challenge could not be answered (e.g. key-derivation parameters out of bounds).
    #[error("login to {address}: {detail}")]
    Login { address: String, detail: String },
    /// The KMA accepted the proof but could not prove it holds the user's verifier.
    #[error("{address} could not prove it knows your passphrase verifier: not your cluster")]
    ServerNotProven { address: String },
}

impl ClientError {
    /// Whether the cause was that no KMA could serve the request now (exit code 4).
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::OutcomeUnknown { .. } => true,
            ClientError::Api { error, .. } => {
                error.code == ErrorCode::Unavailable || error.retryable
            }
            _ => false,
        }
    }
}

/// A client for the management API of one cluster, logged in as one user.
#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    addresses: Arc<Vec<String>>,
    /// The address that answered last: tried first next time.
    preferred: Arc<AtomicUsize>,
    /// The highest `Done.index` seen: `min_index` of every read.
    seen_index: Arc<AtomicU64>,
    /// The index of the entry that recorded the login; sent as [`LOGIN_INDEX_HEADER`] when
    /// not 0.
    login_index: u64,
}

/// What a login grants: the user's certificate and the private key made for it.
pub struct Credentials {
    /// The KMA that granted them.
    pub address: String,
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    /// The CA the KMA sent; the caller trusted its own copy to reach the KMA.
    pub ca_pem: String,
    pub valid_for_s: u64,
    /// [`LoginGranted::login_index`]: give it to [`AdminClient::with_login_index`].
    pub login_index: u64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("address", &self.address)
            .field("valid_for_s", &self.valid_for_s)
            .field("login_index", &self.login_index)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client that trusts only `ca_pem` and presents the user's certificate.
    pub fn new(
        addresses: Vec<String>,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<AdminClient, ClientError> {
        if addresses.is_empty() {
            return Err(ClientError::Config { what: "addresses", detail: "none given".into() });
        }
        let tls = tls_config(ca_pem, Some((cert_pem, key_pem)))?;
        Ok(AdminClient {
            http: https_client(tls)?,
            addresses: Arc::new(addresses),
            preferred: Arc::new(AtomicUsize::new(0)),
            seen_index: Arc::new(AtomicU64::new(0)),
            login_index: 0,
        })
    }

    /// The same client, for a session whose login was recorded at `index`
    /// ([`Credentials::login_index`]): every request carries it ([`LOGIN_INDEX_HEADER`]), and
    /// reads wait for at least that index. 0 (a KMA that does not record logins) changes
    /// nothing.
    pub fn with_login_index(mut self, index: u64) -> AdminClient {
        self.login_index = index;
        self.observe_index(index);
        self
    }

    /// The index sent as [`LOGIN_INDEX_HEADER`] (0: none).
    pub fn login_index(&self) -> u64 {
        self.login_index
    }

    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The address requests go to first: the one that answered last.
    pub fn current_address(&self) -> &str {
        let slot = self.preferred.load(Ordering::Relaxed) % self.addresses.len().max(1);
        // `new` refuses an empty list and `at` makes a list of one: a slot always exists.
        self.addresses.get(slot).map_or("", String::as_str)
    }

    /// The same client (connections, credentials, seen index) talking to one KMA only.
    pub fn at(&self, address: &str) -> AdminClient {
        AdminClient {
            http: self.http.clone(),
            addresses: Arc::new(vec![address.to_string()]),
            preferred: Arc::new(AtomicUsize::new(0)),
            seen_index: Arc::clone(&self.seen_index),
            login_index: self.login_index,
        }
    }

    /// The `min_index` later reads carry.
    pub fn seen_index(&self) -> u64 {
        self.seen_index.load(Ordering::Relaxed)
    }

    /// Raises the `min_index` of later reads to `index` (never lowers it).
    pub fn observe_index(&self, index: u64) {
        self.seen_index.fetch_max(index, Ordering::Relaxed);
    }

    /// `GET path` with `min_index`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get_with(path, &()).await
    }

    /// `GET path?query` with `min_index`; `None` fields of `query` are left out.
    pub async fn get_with<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, ClientError> {
        let min_index = self.seen_index();
        let request = Request { method: Method::GET, path, query, min_index, body: None::<&()> };
        self.call(request).await
    }

    /// Sends a request with an optional JSON body and reads the JSON answer. Not retried on
    /// another KMA once it may have arrived.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call(Request { method, path, query: &(), min_index: 0, body }).await
    }

    /// A command: remembers the index of its [`Done`] for later reads.
    pub async fn write<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Done, ClientError> {
        let done: Done = self.send(method, path, body).await?;
        self.observe_index(done.index);
        Ok(done)
    }

    /// A command that answers with an impact preview until it is confirmed.
    pub async fn preview_or_done<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<PreviewOrDone, ClientError> {
        let answer: PreviewOrDone = self.send(Method::POST, path, Some(body)).await?;
        if let PreviewOrDone::Done(done) = &answer {
            self.observe_index(done.index);
        }
        Ok(answer)
    }

    /// `GET path` from the current KMA only, its body streamed into `out` (a backup file, never
    /// held whole in memory). Returns the bytes written and their SHA-256.
    pub async fn download(
        &self,
        path: &str,
        out: &mut impl std::io::Write,
    ) -> Result<(u64, [u8; 32]), ClientError> {
        use sha2::Digest;
        let address = self.current_address().to_string();
        let url = format!("https://{address}{path}");
        let mut builder = self.http.get(&url).timeout(DOWNLOAD_TIMEOUT);
        if self.login_index > 0 {
            builder = builder.header(LOGIN_INDEX_HEADER, self.login_index);
        }
        let unreachable = |e: &reqwest::Error| ClientError::Unreachable {
            attempts: vec![format!("{address}: {}", error_chain(e))],
        };
        let mut response = builder.send().await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            let error = api_error(status, &bytes);
            return Err(ClientError::Api { status: status.as_u16(), address, error });
        }
        let mut hasher = sha2::Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&e))? {
            out.write_all(&chunk).map_err(|e| ClientError::Config {
                what: "the file being written",
                detail: e.to_string(),
            })?;
            hasher.update(&chunk);
            written += chunk.len() as u64;
        }
        Ok((written, hasher.finalize().into()))
    }

    /// `POST path?query` to the current KMA only, with `body` as a plain-text body (a KMS 1.x
    /// file: the KMA that takes it runs the import). Bounded by the download timeout, not
    /// [`REQUEST_TIMEOUT`]: the file may be tens of megabytes.
    pub async fn upload<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let bytes = self.post_raw(path, query, ("text/plain", body), None).await?.1;
        decode(self.current_address(), path, &bytes)
    }

    /// `POST path?query` to the current KMA with a raw body (`content type`, bytes), or a JSON
    /// body when `json` is given: the answer's headers and bytes, whatever their type (a
    /// transfer file comes back as `application/octet-stream`).
    pub async fn post_raw<Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
        (content_type, body): (&str, Vec<u8>),
        json: Option<&serde_json::Value>,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), ClientError> {
        let address = self.current_address().to_string();
        let url = format!("https://{address}{path}");
        let mut builder = self.http.post(&url).query(query).timeout(DOWNLOAD_TIMEOUT);
        builder = match json {
            Some(json) => builder.json(json),
            None => builder.header(reqwest::header::CONTENT_TYPE, content_type).body(body),
        };
        if self.login_index > 0 {
            builder = builder.header(LOGIN_INDEX_HEADER, self.login_index);
        }
        let response = builder.send().await.map_err(|e| ClientError::Unreachable {
            attempts: vec![format!("{address}: {}", error_chain(&e))],
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| ClientError::Unreachable {
            attempts: vec![format!("{address}: {}", error_chain(&e))],
        })?;
        if !status.is_success() {
            let error = api_error(status, &bytes);
            return Err(ClientError::Api { status: status.as_u16(), address, error });
        }
        Ok((headers, bytes.to_vec()))
    }

    async fn call<Q: Serialize, B: Serialize, T: DeserializeOwned>(
        &self,
        request: Request<'_, Q, B>,
    ) -> Result<T, ClientError> {
        let count = self.addresses.len();
        let first = self.preferred.load(Ordering::Relaxed) % count.max(1);
        let mut attempts = Vec::new();
        for offset in 0..count {
            let slot = (first + offset) % count;
            let address = &self.addresses[slot];
            match self.call_once(address, &request).await {
                Attempt::Answer(bytes) => {
                    self.preferred.store(slot, Ordering::Relaxed);
                    return decode(address, request.path, &bytes);
                }
                Attempt::Refused(error) => return Err(error),
                Attempt::TryNext(reason) => attempts.push(format!("{address}: {reason}")),
            }
        }
        Err(ClientError::Unreachable { attempts })
    }

    async fn call_once<Q: Serialize, B: Serialize>(
        &self,
        address: &str,
        request: &Request<'_, Q, B>,
    ) -> Attempt {
        let url = format!("https://{address}{}", request.path);
        let mut builder = self
            .http
            .request(request.method.clone(), &url)
            .query(request.query)
            .timeout(REQUEST_TIMEOUT);
        if request.min_index > 0 {
            builder = builder.query(&[("min_index", request.min_index)]);
        }
        if self.login_index > 0 {
            builder = builder.header(LOGIN_INDEX_HEADER, self.login_index);
        }
        if let Some(body) = request.body {
            builder = builder.json(body);
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Attempt::TryNext(error_chain(&e)),
            Err(e) if e.is_timeout() && request.method != Method::GET => {
                let path = request.path.to_string();
                return Attempt::Refused(ClientError::OutcomeUnknown {
                    address: address.to_string(),
                    path,
                });
            }
            Err(e) => return Attempt::TryNext(error_chain(&e)),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return Attempt::TryNext(error_chain(&e)),
        };
        if status.is_success() {
            return Attempt::Answer(bytes.to_vec());
        }
        let error = api_error(status, &bytes);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Attempt::TryNext(format!("{} ({})", error.message, error.code));
        }
        Attempt::Refused(ClientError::Api {
            status: status.as_u16(),
            address: address.to_string(),
            error,
        })
    }
}

struct Request<'a, Q, B> {
    method: Method,
    path: &'a str,
    query: &'a Q,
    min_index: u64,
    body: Option<&'a B>,
}

enum Attempt {
    Answer(Vec<u8>),
    Refused(ClientError),
    TryNext(String),
}

fn decode<T: DeserializeOwned>(address: &str, path: &str, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        address: address.to_string(),
        path: path.to_string(),
        detail: e.to_string(),
    })
}

/// The refusal in a non-2xx body. A body that is not an [`ErrorBody`] (a proxy's page) becomes
/// one named after the status; one whose code this version does not know (a newer or older
/// KMA's) keeps its message and words, under the code of the status.
pub fn api_error(status: StatusCode, body: &[u8]) -> ErrorBody {
    if let Ok(error) = serde_json::from_slice::<ErrorBody>(body) {
        return error;
    }
    let code = ErrorCode::of_http_status(status.as_u16());
    if let Ok(other) = serde_json::from_slice::<OtherErrorBody>(body) {
        return ErrorBody {
            code,
            message: format!("{} ({})", other.message, other.code),
            retryable: other.retryable,
            reject_code: other.reject_code,
            help: other.help,
        };
    }
    let text = String::from_utf8_lossy(body);
    let quoted: String = text.trim().chars().take(BODY_QUOTE_LEN_MAX).collect();
    let message =
        if quoted.is_empty() { status.to_string() } else { format!("{status}: {quoted}") };
    ErrorBody::new(code, message)
}

/// An error body with a code outside [`ErrorCode`].
#[derive(serde::Deserialize)]
struct OtherErrorBody {
    code: String,
    message: String,
    #[serde(default)]
    retryable: bool,
    #[serde(default)]
    reject_code: Option<u16>,
    #[serde(default)]
    help: Option<String>,
}

/// The error and its causes in one line: reqwest's own message alone says only "error sending
/// request"; the TLS or socket reason is further down.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Percent-encodes one path segment (a user ID, a name) so that `/`, `?` or spaces in it stay
/// inside the segment.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &'static str) -> impl Fn(rustls::Error) -> ClientError {
    move |e| ClientError::Config { what, detail: e.to_string() }
}

/// TLS 1.3 only, trusting only the cluster CA; with `identity`, presenting the user's
/// certificate (as `node/src/tls.rs` builds its clients, with the ring provider).
fn tls_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::BufReader::new(ca_pem.as_bytes());
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert =
            cert.map_err(|e| ClientError::Config { what: "cluster CA", detail: e.to_string() })?;
        roots.add(cert).map_err(tls_error("cluster CA"))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Config {
            what: "cluster CA",
            detail: "no PEM certificate".into(),
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error("TLS 1.3"))?
        .with_root_certificates(roots);
    let Some((cert_pem, key_pem)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(cert_pem.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| ClientError::Config { what: "user certificate", detail: e.to_string() })?;
    if chain.is_empty() {
        return Err(ClientError::Config {
            what: "user certificate",
            detail: "no PEM certificate".into(),
        });
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(key_pem.as_bytes()))
        .map_err(|e| ClientError::Config { what: "private key", detail: e.to_string() })?
        .ok_or(ClientError::Config { what: "private key", detail: "no PEM key".into() })?;
    builder.with_client_auth_cert(chain, key).map_err(tls_error("user certificate"))
}

fn https_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ClientError::Config { what: "HTTPS client", detail: error_chain(&e) })
}

/// A fresh key pair and a certificate signing request for it: (CSR PEM, private key PEM).
/// The KMA names the certificate after the authenticated user, not after the CSR.
pub fn signing_request() -> Result<(String, Zeroizing<String>), ClientError> {
    let config = |e: rcgen::Error| ClientError::Config {
        what: "certificate request",
        detail: e.to_string(),
    };
    let key = rcgen::KeyPair::generate().map_err(config)?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(config)?;
    let csr = params.serialize_request(&key).map_err(config)?;
    Ok((csr.pem().map_err(config)?, Zeroizing::new(key.serialize_pem())))
}

/// Logs `user` in at the first of `addresses` that can be reached (no client certificate):
/// hello, challenge, proof with a certificate request, grant; then checks the KMA's proof that
/// it holds the user's verifier and refuses the grant otherwise.
pub async fn login(
    addresses: &[String],
    ca_pem: &str,
    user: &str,
    passphrase: &str,
) -> Result<Credentials, ClientError> {
    let http = https_client(tls_config(ca_pem, None)?)?;
    let mut attempts = Vec::new();
    for address in addresses {
        match login_at(&http, address, user, passphrase).await {
            Err(LoginAttempt::TryNext(reason)) => attempts.push(format!("{address}: {reason}")),
            Err(LoginAttempt::Failed(error)) => return Err(error),
            Ok(credentials) => return Ok(credentials),
        }
    }
    Err(ClientError::Unreachable { attempts })
}

enum LoginAttempt {
    TryNext(String),
    Failed(ClientError),
}

async fn login_at(
    http: &reqwest::Client,
    address: &str,
    user: &str,
    passphrase: &str,
) -> Result<Credentials, LoginAttempt> {
    use security_core::challenge::{ClientLogin, ServerChallenge};
    let failed = |detail: String| {
        LoginAttempt::Failed(ClientError::Login { address: address.to_string(), detail })
    };
    let (login, hello) = ClientLogin::start(user, PURPOSE_USER);
    let challenge: ServerChallenge = post_login(http, address, "/v1/login/hello", &hello).await?;
    let (awaiting, proof) =
        login.respond(passphrase, &challenge).map_err(|e| failed(e.to_string()))?;
    let (csr_pem, key_pem) = signing_request().map_err(LoginAttempt::Failed)?;
    let request = ProofRequest { proof, csr_pem, management_advertise: None };
    // The challenge lives on the KMA that sent it: the proof goes to the same one, and a
    // failure from here on is not retried elsewhere.
    let granted: LoginGranted = post_login(http, address, "/v1/login/proof", &request)
        .await
        .map_err(|attempt| match attempt {
            LoginAttempt::TryNext(reason) => failed(reason),
            failed => failed,
        })?;
    awaiting.verify_server(&granted.server_final).map_err(|_| {
        LoginAttempt::Failed(ClientError::ServerNotProven { address: address.to_string() })
    })?;
    Ok(Credentials {
        address: address.to_string(),
        cert_pem: granted.cert_pem,
        key_pem,
        ca_pem: granted.ca_pem,
        valid_for_s: granted.valid_for_s,
        login_index: granted.login_index,
    })
}

/// One login step: a KMA that cannot be reached or answers `503 unavailable` lets the next
/// one be tried; any other refusal ends the login.
async fn post_login<B: Serialize, T: DeserializeOwned>(
    http: &reqwest::Client,
    address: &str,
    path: &str,
    body: &B,
) -> Result<T, LoginAttempt> {
    post_json(http, address, path, body).await.map_err(|failure| match failure {
        PostFailure::NoAnswer(reason) => LoginAttempt::TryNext(reason),
        PostFailure::Refused(ClientError::Api { status, error, .. })
            if status == StatusCode::SERVICE_UNAVAILABLE.as_u16() =>
        {
            LoginAttempt::TryNext(format!("{} ({})", error.message, error.code))
        }
        PostFailure::Refused(error) => LoginAttempt::Failed(error),
    })
}

/// Why a [`post_json`] brought no answer to use.
enum PostFailure {
    /// No answer came (connect, TLS, timeout): the cause.
    NoAnswer(String),
    /// A refusal ([`ClientError::Api`]) or an answer that is not the contract's.
    Refused(ClientError),
}

/// `POST path` with a JSON body to one KMA, without retrying: the JSON answer, a non-2xx
/// answer's refusal as [`ClientError::Api`], or why no answer came.
async fn post_json<B: Serialize, T: DeserializeOwned>(
    http: &reqwest::Client,
    address: &str,
    path: &str,
    body: &B,
) -> Result<T, PostFailure> {
    let no_answer = |e: reqwest::Error| PostFailure::NoAnswer(error_chain(&e));
    let url = format!("https://{address}{path}");
    let response =
        http.post(&url).json(body).timeout(REQUEST_TIMEOUT).send().await.map_err(no_answer)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(no_answer)?;
    if status.is_success() {
        return decode(address, path, &bytes).map_err(PostFailure::Refused);
    }
    Err(PostFailure::Refused(ClientError::Api {
        status: status.as_u16(),
        address: address.to_string(),
        error: api_error(status, &bytes),
    }))
}

/// Gives quorum member `member`'s share to the locked KMA at `address` (`HOST:PORT` of its
/// management listener): `POST /v1/unlock/member` over TLS 1.3 that trusts only `ca_pem`,
/// without a client certificate (after a cold restart nobody holds a valid one). The KMA
/// unwraps the share with `passphrase` and answers how many it holds; it unlocks once it holds
/// the threshold. Sent once, to that KMA only: each KMA is unlocked on its own.
pub async fn approve_unlock(
    address: &str,
    ca_pem: &str,
    member: &str,
    passphrase: &str,
) -> Result<MemberUnlockProgress, ClientError> {
    let http = https_client(tls_config(ca_pem, None)?)?;
    // Zeroized when dropped, sent or not.
    let request =
        MemberUnlockRequest { member: member.to_string(), passphrase: passphrase.to_string() };
    post_json(&http, address, MEMBER_UNLOCK_PATH, &request).await.map_err(|failure| match failure {
        PostFailure::NoAnswer(reason) => {
            ClientError::Unreachable { attempts: vec![format!("{address}: {reason}")] }
        }
        PostFailure::Refused(error) => error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setup: names with characters that mean something in a URL. Expectation: they stay one
    /// path segment.
    #[test]
    fn u1_path_segments_are_percent_encoded() {
        assert_eq!(segment("alice"), "alice");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(segment("drive-1.lto_4~"), "drive-1.lto_4~");
    }

    /// Setup: error bodies that are and are not an ErrorBody. Expectation: the contract's body
    /// is kept as is; a body with a code this version does not know keeps its message and
    /// words under the status's code; any other becomes a refusal named after the status.
    #[test]
    fn u1_non_api_error_bodies_become_api_errors() {
        let body = br#"{"code":"rejected","message":"no","retryable":false,"reject_code":12}"#;
        let error = api_error(StatusCode::CONFLICT, body);
        assert_eq!((error.code, error.reject_code), (ErrorCode::Rejected, Some(12)));
        let error = api_error(StatusCode::NOT_FOUND, b"nothing here");
        assert_eq!(error.code, ErrorCode::NotFound);
        assert_eq!(error.message, "404 Not Found: nothing here");
        let error = api_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert!(error.retryable);
        let newer = br#"{"code":"kma-on-fire","message":"hot","retryable":true,"help":"wait"}"#;
        let error = api_error(StatusCode::INTERNAL_SERVER_ERROR, newer);
        assert_eq!(
            (error.code, error.message.as_str()),
            (ErrorCode::Internal, "hot (kma-on-fire)")
        );
        assert_eq!((error.retryable, error.help.as_deref()), (true, Some("wait")));
    }

    /// Setup: a grant as an older KMA sends it, without `login_index` (issue 16 point 2).
    /// Expectation: it reads, with index 0, and a client given 0 sends no header (its
    /// `login_index` stays 0) and reads from index 0.
    #[test]
    fn s2_a_grant_without_a_login_index_reads_as_none() {
        let signature = serde_json::to_value([3u8; 32]).unwrap();
        let older = serde_json::json!({
            "server_final": { "server_signature": signature },
            "cert_pem": "CERT",
            "ca_pem": "CA",
            "valid_for_s": 28_800,
        });
        let granted: LoginGranted = serde_json::from_value(older.clone()).unwrap();
        assert_eq!(granted.login_index, 0);
        let mut newer = older;
        newer["login_index"] = 57.into();
        let granted: LoginGranted = serde_json::from_value(newer).unwrap();
        assert_eq!(granted.login_index, 57);
    }

    /// Setup: a member's unlock request and a locked KMA's answer (issue 16 point 5).
    /// Expectation: the contract's JSON both ways; the passphrase never in `Debug`; the
    /// members still missing counted from the threshold, never below 0.
    #[test]
    fn s4_member_unlock_shapes_on_the_wire() {
        let request =
            MemberUnlockRequest { member: "m1".into(), passphrase: "secret words".into() };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(json, r#"{"member":"m1","passphrase":"secret words"}"#);
        let debug = format!("{request:?}");
        assert_eq!(debug, r#"MemberUnlockRequest { member: "m1", passphrase: "<redacted>" }"#);
        let answer = r#"{"kma":"kma2","node_id":2,"members_given":["m1"],"threshold":3,
                         "unlocked":false}"#;
        let mut progress: MemberUnlockProgress = serde_json::from_str(answer).unwrap();
        assert_eq!((progress.kma.as_str(), progress.node_id), ("kma2", 2));
        assert_eq!(progress.members_missing(), 2);
        progress.threshold = 0;
        assert_eq!(progress.members_missing(), 0);
        assert_eq!(MEMBER_UNLOCK_PATH, "/v1/unlock/member");
        assert_eq!(LOGIN_INDEX_HEADER, "kms-login-index");
    }

    /// Setup: a fresh certificate request. Expectation: PEM CSR and PEM key.
    #[test]
    fn s2_signing_request_is_pem() {
        let (csr, key) = signing_request().unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(key.contains("PRIVATE KEY-----"));
    }
}
