//! The agent client library: what a drive (or anyone integrating one) links to talk to the
//! cluster. It starts from one or more KMA addresses, learns the cluster through discovery,
//! prefers the KMAs of its own site and spreads requests across them, fails over on connection
//! errors, timeouts and retryable refusals, and retries a write with the same request ID so a
//! retry never assigns a second key (SPEC A6, C2, C3). Every request carries the index of the
//! client's last write (or of its enrollment), so the KMA that serves it waits until it has
//! applied it: the drive's own changes are never missing on the next KMA it talks to.

mod enrollment;
mod epoch_floor;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use reqwest::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use statemachine::{DataUnitId, KeyId};
use zeroize::{Zeroize, Zeroizing};

pub use enrollment::enroll;

use crate::wire::{
    CreateDataUnitRequest, DataUnitCreated, DataUnitKeys, DisassociateRequest, Disassociated,
    Discovery, ErrorBody, KeyLookup, WireKey, WireRequestId, WriteKeyRequest, WriteKeyResponse,
    PREFIX,
};

/// Why a request did not succeed. Each message ends with what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: {detail}; help: check the PEM files the drive was configured with")]
    Setup { what: &'static str, detail: String },
    #[error("KMA {address} refused the request ({status}, {}): {}{}", body.code, body.message,
        body.help.as_deref().map(|help| format!("; help: {help}")).unwrap_or_default())]
    Refused { address: String, status: u16, body: ErrorBody },
    #[error(
        "no KMA served the request after {attempts} attempts (last: {last}); help: check the \
         network path to the KMAs and that at least one is unlocked and part of a majority; a \
         write may have been applied, and repeating it is safe"
    )]
    Unavailable { attempts: usize, last: String },
    #[error(
        "KMA {address} sent an answer this client cannot read ({detail}); help: check that the \
         client library and the KMAs are of compatible versions"
    )]
    Protocol { address: String, detail: String },
    #[error("enrollment with {address}: {source}")]
    Security { address: String, source: security_core::SecurityError },
}

impl ClientError {
    /// The error body when a KMA refused the request.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Refused { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// Tuning of an [`AgentClient`]; the defaults suit a drive on a LAN.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Time for a whole request (connection, TLS, answer) before the next KMA is tried.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How often the list of KMAs is refreshed from discovery.
    pub discovery_interval: Duration,
    /// `false` keeps the configured addresses only: for drives that reach the KMAs through
    /// addresses the KMAs do not know themselves (NAT, published container ports).
    pub discovery: bool,
    /// A KMA that failed is tried last for this long.
    pub failover_pause: Duration,
    /// Rounds over all known KMAs before giving up, with `round_pause` in between.
    pub rounds: u32,
    pub round_pause: Duration,
    /// The drive's site; `None` takes the site discovery reports for the agent (SPEC C2).
    pub site: Option<String>,
    /// The newest cluster epoch this drive saw before ([`AgentClient::cluster_epoch_seen`],
    /// kept by the integrator across restarts): KMAs of an older epoch are refused from the
    /// first call (SPEC B7). The drive's own certificate's epoch counts too.
    pub cluster_epoch_seen: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            discovery_interval: Duration::from_secs(60),
            discovery: true,
            failover_pause: Duration::from_secs(5),
            rounds: 2,
            round_pause: Duration::from_millis(200),
            site: None,
            cluster_epoch_seen: 0,
        }
    }
}

/// What enrollment gives a drive: its certificate and the private key that never left it.
#[derive(Clone)]
pub struct AgentCredentials {
    pub agent_id: String,
    pub certificate_pem: String,
    pub private_key_pem: Zeroizing<String>,
    pub ca_pem: String,
    /// The log index the enrollment was applied at: the client's first requests wait for it,
    /// so a KMA that has not applied the enrollment yet does not take the new certificate for
    /// a revoked one. 0 for credentials loaded from files (enrolled long ago).
    pub enrolled_index: u64,
}

impl fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCredentials").field("agent_id", &self.agent_id).finish_non_exhaustive()
    }
}

/// A key in clear, as the drive uses it. The value is zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey {
    pub key_id: KeyId,
    /// `protect-and-process`, `process-only`, `deactivated` or `compromised`.
    pub state: String,
    pub value: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKey")
            .field("key_id", &self.key_id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct WriteKey {
    pub data_unit: DataUnitId,
    pub key: AgentKey,
    pub reused: bool,
    pub index: u64,
    /// The request ID the client sent (and re-sent on failover): the cluster answers every
    /// retry of it with the same key (SPEC A6).
    pub request_id: statemachine::RequestId,
}

#[derive(Clone, Debug)]
pub struct DataUnitKeySet {
    pub data_unit: DataUnitId,
    pub keys: Vec<AgentKey>,
    pub index: u64,
}

#[derive(Clone, Debug)]
pub struct KeyById {
    pub key: AgentKey,
    pub data_unit: Option<DataUnitId>,
    pub index: u64,
}

#[derive(Clone)]
struct Endpoint {
    address: String,
    site: Option<String>,
    healthy: bool,
    down_until: Option<Instant>,
    /// One client per KMA, so each keeps its own long-lived connection (a TLS handshake costs
    /// far more than a request).
    http: reqwest::Client,
}

struct Endpoints {
    list: Vec<Endpoint>,
    site: Option<String>,
    next_discovery: Option<Instant>,
}

/// A drive's connection to the cluster. Cheap to clone; clones share connections and state.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

struct Inner {
    tls: rustls::ClientConfig,
    options: ClientOptions,
    configured: Vec<String>,
    endpoints: Mutex<Endpoints>,
    discovering: AtomicBool,
    /// Random per client: the state machine remembers outcomes per (agent, client, seq).
    request_client: u64,
    next_seq: AtomicU64,
    min_index: AtomicU64,
    turn: AtomicUsize,
    /// The newest cluster epoch of a KMA certificate this client verified (SPEC B7).
    epoch_floor: Arc<AtomicU32>,
}

/// One request, possibly sent to several KMAs.
struct Call {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
}

enum Outcome<T> {
    Done(T),
    /// Worth trying on the next KMA; the text says why this one did not serve it.
    Next(String),
    Fail(ClientError),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn setup(what: &'static str) -> impl Fn(String) -> ClientError {
    move |detail| ClientError::Setup { what, detail }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 trusting only the cluster CA's KMAs of an epoch no older than `epoch_floor` (which
/// rises with each newer one verified), with the agent's certificate when it has one.
pub(crate) fn tls_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    epoch_floor: Arc<AtomicU32>,
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| setup("cluster CA certificate")(e.to_string()))?;
        roots.add(cert).map_err(|e| setup("cluster CA certificate")(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(setup("cluster CA certificate")("no PEM certificate found".into()));
    }
    let chain =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| setup("cluster CA certificate")(e.to_string()))?;
    let verifier = epoch_floor::NewestEpochOnly::new(chain, epoch_floor);
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup("TLS 1.3")(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((certificate_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut certificate_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| setup("agent certificate")(e.to_string()))?;
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
                .map_err(|e| setup("agent private key")(e.to_string()))?
                .ok_or_else(|| setup("agent private key")("no PEM private key found".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| setup("agent certificate")(e.to_string()))?
        }
    };
    // With a preconfigured TLS config, reqwest leaves ALPN to us: offer HTTP/2 first.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

pub(crate) fn http_client(
    tls: &rustls::ClientConfig,
    options: &ClientOptions,
) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(None)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        .build()
        .map_err(|e| setup("HTTP client")(e.to_string()))
}

/// Parses a success body; key-bearing bodies are zeroized after parsing when this client
/// holds the only reference to the buffer.
fn parse_body<T: DeserializeOwned>(address: &str, bytes: bytes::Bytes) -> Result<T, ClientError> {
    let parsed = serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Protocol { address: address.into(), detail: e.to_string() });
    if let Ok(mut buffer) = bytes.try_into_mut() {
        buffer.as_mut().zeroize();
    }
    parsed
}

fn agent_key(address: &str, wire: WireKey) -> Result<AgentKey, ClientError> {
    let mut value = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(wire.value.0.as_bytes(), value.as_mut()).map_err(|_| {
        ClientError::Protocol { address: address.into(), detail: "a key value is not hex".into() }
    })?;
    Ok(AgentKey { key_id: wire.key_id, state: wire.state, value })
}

impl AgentClient {
    /// A client for the KMAs at `addresses` (`host:port` of their service listeners), trusting
    /// `ca_pem` and presenting the agent's certificate and key. No request is sent yet.
    pub fn new(
        addresses: &[String],
        ca_pem: &str,
        certificate_pem: &str,
        private_key_pem: &str,
    ) -> Result<Self, ClientError> {
        Self::with_options(
            addresses,
            ca_pem,
            certificate_pem,
            private_key_pem,
            ClientOptions::default(),
        )
    }

    pub fn from_credentials(
        addresses: &[String],
        credentials: &AgentCredentials,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let client = Self::with_options(
            addresses,
            &credentials.ca_pem,
            &credentials.certificate_pem,
            &credentials.private_key_pem,
            options,
        )?;
        client.saw_index(credentials.enrolled_index);
        Ok(client)
    }

    pub fn with_options(
        addresses: &[String],
        ca_pem: &str,
        certificate_pem: &str,
        private_key_pem: &str,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        if addresses.is_empty() {
            return Err(setup("KMA addresses")("give at least one host:port".into()));
        }
        // A drive enrolled by a recovered cluster refuses the lost KMAs from its first call.
        let own_epoch = crate::epoch::of_pem(certificate_pem)
            .ok_or_else(|| setup("agent certificate")("names no readable cluster epoch".into()))?;
        let epoch_floor = Arc::new(AtomicU32::new(own_epoch.max(options.cluster_epoch_seen)));
        let tls =
            tls_config(ca_pem, Some((certificate_pem, private_key_pem)), epoch_floor.clone())?;
        let list = addresses
            .iter()
            .map(|address| {
                let http = http_client(&tls, &options)?;
                let address = address.clone();
                Ok(Endpoint { address, site: None, healthy: true, down_until: None, http })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let site = options.site.clone();
        let inner = Inner {
            tls,
            options,
            configured: addresses.to_vec(),
            endpoints: Mutex::new(Endpoints { list, site, next_discovery: None }),
            discovering: AtomicBool::new(false),
            request_client: rand::random(),
            next_seq: AtomicU64::new(1),
            min_index: AtomicU64::new(0),
            turn: AtomicUsize::new(0),
            epoch_floor,
        };
        Ok(AgentClient { inner: Arc::new(inner) })
    }

    /// The KMAs this client knows, in the order it would try them now.
    pub fn known_kmas(&self) -> Vec<String> {
        self.ordered().into_iter().map(|endpoint| endpoint.address).collect()
    }

    /// The site whose KMAs this client prefers.
    pub fn site(&self) -> Option<String> {
        lock(&self.inner.endpoints).site.clone()
    }

    /// The highest log index this client's writes were applied at: reads wait for it.
    pub fn min_index(&self) -> u64 {
        self.inner.min_index.load(Ordering::Acquire)
    }

    /// The newest cluster epoch this client has seen (its own certificate's, or a KMA's): KMAs
    /// of an older one are refused in the handshake (SPEC B7).
    pub fn cluster_epoch_seen(&self) -> u32 {
        self.inner.epoch_floor.load(Ordering::Acquire)
    }

    /// Asks the cluster for its KMAs now, rather than at the next discovery interval.
    pub async fn discover(&self) -> Result<(), ClientError> {
        let path = format!("{PREFIX}/discovery");
        let call = Call { method: Method::GET, path, body: None };
        let found = self.send_without_discovery::<Discovery>(&call).await;
        let options = &self.inner.options;
        let next = if found.is_ok() { options.discovery_interval } else { options.failover_pause };
        lock(&self.inner.endpoints).next_discovery = Some(Instant::now() + next);
        self.apply_discovery(found?);
        Ok(())
    }

    /// Creates a data unit (a tape) with its external tag (the VOLSER).
    pub async fn create_data_unit(
        &self,
        external_tag: &str,
    ) -> Result<DataUnitCreated, ClientError> {
        let request = CreateDataUnitRequest {
            external_tag: external_tag.into(),
            request_id: self.next_request_id(),
        };
        let path = format!("{PREFIX}/data-units?min_index={}", self.min_index());
        let created: DataUnitCreated = self.write(path, &request).await?;
        self.saw_index(created.index);
        Ok(created)
    }

    /// The key to write with: the data unit's current protect-and-process key, or a new one.
    /// `from_bot`: the drive writes from the beginning of the tape.
    pub async fn write_key(
        &self,
        data_unit: DataUnitId,
        from_bot: bool,
    ) -> Result<WriteKey, ClientError> {
        let request_id = self.next_request_id();
        let request = WriteKeyRequest { from_bot, request_id };
        let min_index = self.min_index();
        let path = format!("{PREFIX}/data-units/{data_unit}/write-key?min_index={min_index}");
        let (answer, address): (WriteKeyResponse, String) = self.write_from(path, &request).await?;
        self.saw_index(answer.index);
        let key = agent_key(&address, answer.key)?;
        Ok(WriteKey {
            data_unit: answer.data_unit,
            key,
            reused: answer.reused,
            index: answer.index,
            request_id: request_id.into(),
        })
    }

    /// The keys a drive needs to read the data unit (on mount).
    pub async fn keys(&self, data_unit: DataUnitId) -> Result<DataUnitKeySet, ClientError> {
        let path = format!("{PREFIX}/data-units/{data_unit}/keys?min_index={}", self.min_index());
        let call = Call { method: Method::GET, path, body: None };
        let (answer, address): (DataUnitKeys, String) = self.send_from(&call).await?;
        let keys = answer
            .keys
            .into_iter()
            .map(|wire| agent_key(&address, wire))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DataUnitKeySet { data_unit: answer.data_unit, keys, index: answer.index })
    }

    /// One key by ID, for a data unit the drive may not know (SPEC A4, A5). `external_tag`
    /// names the tape when the KMA has to create a data unit for a recovered key.
    pub async fn key(
        &self,
        key_id: KeyId,
        data_unit: Option<DataUnitId>,
        external_tag: &str,
    ) -> Result<KeyById, ClientError> {
        let mut path = format!("{PREFIX}/keys/{key_id}?min_index={}", self.min_index());
        if let Some(data_unit) = data_unit {
            path.push_str(&format!("&data_unit={data_unit}"));
        }
        if !external_tag.is_empty() {
            path.push_str(&format!("&external_tag={}", percent_encode(external_tag)));
        }
        let call = Call { method: Method::GET, path, body: None };
        let (answer, address): (KeyLookup, String) = self.send_from(&call).await?;
        self.saw_index(answer.index);
        let key = agent_key(&address, answer.key)?;
        Ok(KeyById { key, data_unit: answer.data_unit, index: answer.index })
    }

    /// A write from BOT: the data unit's keys that no longer encrypt stop being sent for it.
    pub async fn disassociate_on_bot(
        &self,
        data_unit: DataUnitId,
    ) -> Result<Disassociated, ClientError> {
        let request = DisassociateRequest { request_id: self.next_request_id() };
        let min_index = self.min_index();
        let path =
            format!("{PREFIX}/data-units/{data_unit}/disassociate-on-bot?min_index={min_index}");
        let answer: Disassociated = self.write(path, &request).await?;
        self.saw_index(answer.index);
        Ok(answer)
    }

    fn next_request_id(&self) -> WireRequestId {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        WireRequestId { client: self.inner.request_client, seq }
    }

    fn saw_index(&self, index: u64) {
        self.inner.min_index.fetch_max(index, Ordering::AcqRel);
    }

    /// Sends a write; the body (and so its request ID) is the same on every KMA it tries.
    async fn write<T: DeserializeOwned>(
        &self,
        path: String,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        Ok(self.write_from(path, body).await?.0)
    }

    async fn write_from<T: DeserializeOwned>(
        &self,
        path: String,
        body: &impl Serialize,
    ) -> Result<(T, String), ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| setup("request body")(e.to_string()))?;
        let call = Call { method: Method::POST, path, body: Some(body) };
        self.send_from(&call).await
    }

    /// Tries the KMAs in order of preference until one serves the call.
    async fn send_from<T: DeserializeOwned>(
        &self,
        call: &Call,
    ) -> Result<(T, String), ClientError> {
        self.refresh_if_due().await;
        let mut attempts = 0;
        let mut last = String::from("no KMA is known");
        for round in 0..self.inner.options.rounds.max(1) {
            if round > 0 {
                tokio::time::sleep(self.inner.options.round_pause).await;
            }
            for endpoint in self.ordered() {
                attempts += 1;
                match self.attempt(&endpoint, call).await {
                    Outcome::Done(answer) => {
                        self.mark(&endpoint.address, None);
                        return Ok((answer, endpoint.address));
                    }
                    Outcome::Next(reason) => {
                        let address = &endpoint.address;
                        tracing::debug!(%address, %reason, "trying the next KMA");
                        let until = Instant::now() + self.inner.options.failover_pause;
                        self.mark(&endpoint.address, Some(until));
                        last = format!("{}: {reason}", endpoint.address);
                    }
                    Outcome::Fail(error) => return Err(error),
                }
            }
        }
        Err(ClientError::Unavailable { attempts, last })
    }

    async fn attempt<T: DeserializeOwned>(&self, endpoint: &Endpoint, call: &Call) -> Outcome<T> {
        let url = format!("https://{}{}", endpoint.address, call.path);
        let mut request = endpoint.http.request(call.method.clone(), url);
        if let Some(body) = &call.body {
            request = request.header("content-type", "application/json").body(body.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Outcome::Next(describe(&error)),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return Outcome::Next(describe(&error)),
        };
        let address = &endpoint.address;
        if status.is_success() {
            return match parse_body(address, bytes) {
                Ok(answer) => Outcome::Done(answer),
                Err(error) => Outcome::Fail(error),
            };
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) if body.retryable => Outcome::Next(format!("{}: {}", body.code, body.message)),
            Ok(body) => Outcome::Fail(ClientError::Refused {
                address: address.clone(),
                status: status.as_u16(),
                body,
            }),
            // Not the gateway speaking (a proxy, a server error page): another KMA may do.
            Err(_) if status.is_server_error() => Outcome::Next(format!("HTTP {status}")),
            Err(error) => Outcome::Fail(ClientError::Protocol {
                address: address.clone(),
                detail: format!("HTTP {status} without an error body ({error})"),
            }),
        }
    }

    /// KMAs in the order to try: those not recently failed, of the own site, healthy first;
    /// equals are rotated per call to spread the load.
    fn ordered(&self) -> Vec<Endpoint> {
        let endpoints = lock(&self.inner.endpoints);
        let now = Instant::now();
        let mut list = endpoints.list.clone();
        if !list.is_empty() {
            let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
            let len = list.len();
            list.rotate_left(turn % len);
        }
        let site = endpoints.site.as_deref();
        list.sort_by_key(|endpoint| {
            let resting = endpoint.down_until.is_some_and(|until| until > now);
            let other_site = site.is_some() && endpoint.site.as_deref() != site;
            (resting, other_site, !endpoint.healthy)
        });
        list
    }

    fn mark(&self, address: &str, down_until: Option<Instant>) {
        let mut endpoints = lock(&self.inner.endpoints);
        for endpoint in endpoints.list.iter_mut().filter(|e| e.address == address) {
            endpoint.down_until = down_until;
        }
    }

    async fn refresh_if_due(&self) {
        let due =
            lock(&self.inner.endpoints).next_discovery.is_none_or(|next| next <= Instant::now());
        // One discovery at a time; the others go on with the list they have.
        if !due
            || !self.inner.options.discovery
            || self.inner.discovering.swap(true, Ordering::AcqRel)
        {
            return;
        }
        if let Err(error) = self.discover().await {
            tracing::debug!(%error, "discovery failed; keeping the known KMAs");
        }
        self.inner.discovering.store(false, Ordering::Release);
    }

    async fn send_without_discovery<T: DeserializeOwned>(
        &self,
        call: &Call,
    ) -> Result<T, ClientError> {
        let mut last = String::from("no KMA is known");
        let endpoints = self.ordered();
        for endpoint in &endpoints {
            match self.attempt(endpoint, call).await {
                Outcome::Done(answer) => return Ok(answer),
                Outcome::Next(reason) => last = format!("{}: {reason}", endpoint.address),
                Outcome::Fail(error) => return Err(error),
            }
        }
        Err(ClientError::Unavailable { attempts: endpoints.len(), last })
    }

    /// Replaces the list with the discovered KMAs (keeping the connections of those already
    /// known) followed by configured addresses discovery did not name, as a last resort.
    fn apply_discovery(&self, discovery: Discovery) {
        let mut endpoints = lock(&self.inner.endpoints);
        let mut list: Vec<Endpoint> = Vec::with_capacity(discovery.kmas.len());
        for kma in discovery.kmas {
            let known = endpoints.list.iter().find(|e| e.address == kma.service_address);
            let http = match known {
                Some(endpoint) => endpoint.http.clone(),
                None => match http_client(&self.inner.tls, &self.inner.options) {
                    Ok(http) => http,
                    Err(_) => continue,
                },
            };
            let down_until = known.and_then(|endpoint| endpoint.down_until);
            list.push(Endpoint {
                address: kma.service_address,
                site: Some(kma.site),
                healthy: kma.healthy,
                down_until,
                http,
            });
        }
        for address in &self.inner.configured {
            if !list.iter().any(|endpoint| &endpoint.address == address) {
                if let Some(endpoint) = endpoints.list.iter().find(|e| &e.address == address) {
                    list.push(endpoint.clone());
                }
            }
        }
        endpoints.list = list;
        if self.inner.options.site.is_none() {
            endpoints.site = discovery.agent_site.or(endpoints.site.take());
        }
    }
}

fn describe(error: &reqwest::Error) -> String {
    // The reason (a refused certificate, a reset) is in the chain of sources, not the display.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    if error.is_timeout() {
        format!("timed out ({text})")
    } else if error.is_connect() {
        format!("connection failed ({text})")
    } else {
        text
    }
}

/// Query-string encoding for an external tag (VOLSERs are plain, but tags are free text).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
