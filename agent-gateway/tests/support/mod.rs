//! An in-memory cluster for gateway tests: one `statemachine::State` behind a lock that several
//! fake KMAs share, each serving the real gateway on 127.0.0.1 through real TLS. Commands are
//! applied directly (no Raft); time is the wall clock, as the gateway's key states use it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use agent_gateway::{
    AgentClient, AgentCredentials, Backend, BackendError, ClientOptions, KmaEndpoint,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use security_core::kdf::KdfParams;
use security_core::key_wrap::{check_value, wrap_key, KeyMaterial};
use security_core::MasterKey;
use statemachine::backup::BackupKind;
use statemachine::cluster::SecuritySettings;
use statemachine::command::{InitCluster, NewKey};
use statemachine::quorum::{Quorum, QuorumMember};
use statemachine::{
    Actor, AuditWhat, ClusterId, Command, Envelope, KeyId, Reply, RequestId, Role, RoleSet, State,
};
use wire::ApplyResponse;

pub const CLUSTER: ClusterId = ClusterId(0x00c1_a55e_7000_0001);
pub const AGENT: &str = "drive1";
pub const PASSPHRASE: &str = "drive1 enrollment passphrase";
pub const FAILURES_MAX: u32 = 3;
pub const POOL_SIZE: usize = 12;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// The clear value of pool key number `n`: known to the test, so a key handed out can be
/// checked against what was wrapped, independently of the gateway's unwrapping.
pub fn pool_value(n: usize) -> [u8; 32] {
    let mut value = [0xa5u8; 32];
    value[..8].copy_from_slice(&(n as u64).to_be_bytes());
    value
}

/// A CA of the rcgen kind the node uses, able to issue server, user and agent certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub pem: String,
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn leaf_params(common_name: &str, expired: bool) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = name(common_name);
    params.subject_alt_names = vec![
        SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        SanType::DnsName("localhost".try_into().expect("dns")),
    ];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    } else {
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    }
    params
}

impl TestCa {
    pub fn new(label: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = name(label);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let pem = cert.pem();
        TestCa { cert, key, pem }
    }

    /// A certificate and a fresh key for `common_name` (PEM, PEM).
    pub fn issue(&self, common_name: &str, expired: bool) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let cert = leaf_params(common_name, expired)
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// What the node does on enrollment: names and dates from the issuer, the key from the CSR.
    pub fn sign_request(&self, common_name: &str, csr_pem: &str) -> Result<String, String> {
        let mut request =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| e.to_string())?;
        request.params = leaf_params(common_name, false);
        Ok(request.signed_by(&self.cert, &self.key).map_err(|e| e.to_string())?.pem())
    }

    /// The service listener's TLS, as the node builds it: TLS 1.3, client certificates of this
    /// CA verified when presented, anonymous clients let through for enrollment.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der_of(&self.pem)).expect("CA root");
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .expect("client verifier");
        let (cert_pem, key_pem) = self.issue("kma-1", false);
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut key_pem.as_bytes()).expect("pem").expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![der_of(&cert_pem)], key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

pub fn der_of(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next().expect("a certificate").expect("PEM")
}

pub fn fingerprint(pem: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(der_of(pem).as_ref()).into()
}

/// The replicated state every fake KMA reads and writes.
pub struct Cluster {
    pub state: Mutex<State>,
    pub ca: TestCa,
    pub master: MasterKey,
    /// Clear values of the pool keys, by ID.
    pub values: Vec<(KeyId, [u8; 32])>,
    /// Every audit event applied so far.
    pub events: Mutex<Vec<AuditWhat>>,
    pub kmas: Mutex<Vec<KmaEndpoint>>,
}

impl Cluster {
    /// A single KMA cluster with users `so`, `co`, `op`, `bo`, key group `std`, agent `drive1`
    /// (not enrolled yet, `std` its default group) and a pool of Ready keys.
    pub fn new() -> Arc<Self> {
        let master = MasterKey::generate();
        let values: Vec<(KeyId, [u8; 32])> = (0..POOL_SIZE)
            .map(|n| {
                let mut random = [0u8; 22];
                random[14..].copy_from_slice(&(n as u64 + 1).to_be_bytes());
                (KeyId::native(CLUSTER, random), pool_value(n))
            })
            .collect();
        let cluster = Arc::new(Cluster {
            state: Mutex::new(State::new()),
            ca: TestCa::new("test cluster CA"),
            master,
            values,
            events: Mutex::new(Vec::new()),
            kmas: Mutex::new(Vec::new()),
        });
        cluster.set_up();
        cluster
    }

    fn set_up(&self) {
        let init = InitCluster {
            cluster_id: CLUSTER,
            kma_name: "kma1".into(),
            site: "east".into(),
            security_officer: "so".into(),
            security_officer_verifier: vec![1; 32],
            quorum: Quorum {
                members: vec![QuorumMember { id: "q1".into(), wrapped_share: vec![1; 48] }],
                threshold: 1,
            },
            autonomous_unlock: false,
        };
        self.ok(Actor::System, Command::InitCluster(init));
        for (id, role) in
            [("co", Role::ComplianceOfficer), ("op", Role::Operator), ("bo", Role::BackupOperator)]
        {
            let roles = RoleSet::of(role);
            let command =
                Command::CreateUser { id: id.into(), roles, passphrase_verifier: vec![2; 32] };
            self.ok(user("so"), command);
        }
        let settings = SecuritySettings {
            login_failures_max: FAILURES_MAX,
            login_throttle_ms: 600_000,
            ..SecuritySettings::default()
        };
        self.ok(user("so"), Command::SetSecuritySettings(settings));
        self.ok(user("so"), Command::CreateSite { name: "west".into() });
        self.set_up_catalog();
        self.fill_pool();
    }

    fn set_up_catalog(&self) {
        let policy = Command::CreateKeyPolicy {
            name: "std".into(),
            encryption_period_ms: 3_600_000,
            cryptoperiod_ms: 7_200_000,
            allow_export: false,
            allow_import: false,
        };
        self.ok(user("co"), policy);
        self.ok(user("co"), Command::CreateKeyGroup { name: "std".into(), policy: "std".into() });
        let verifier = verifier(PASSPHRASE);
        let agent = Command::CreateAgent {
            id: AGENT.into(),
            site: "east".into(),
            passphrase_verifier: verifier,
        };
        self.ok(user("op"), agent);
        let assign = Command::AssignKeyGroupToAgent { agent: AGENT.into(), group: "std".into() };
        self.ok(user("co"), assign);
    }

    /// Pool keys of known values; a database backup makes them Ready on a single KMA.
    fn fill_pool(&self) {
        let keys = self
            .values
            .iter()
            .map(|(id, value)| {
                let material = KeyMaterial::from_bytes(value);
                NewKey {
                    id: *id,
                    material: wrap_key(&self.master, CLUSTER, id, &material),
                    check_value: check_value(&material),
                }
            })
            .collect();
        self.ok(Actor::System, Command::GeneratePoolKeys { keys });
        let covers_index = self.state.lock().expect("state").last_applied_index();
        let backup = Command::RecordBackupBeforeFormat3 {
            kind: BackupKind::Database,
            kma: "kma1".into(),
            file_name: "b0.kms".into(),
            covers_index,
        };
        self.ok(user("bo"), backup);
        assert_eq!(self.ready_pool(), POOL_SIZE, "the backup made every pool key Ready");
    }

    pub fn apply(
        &self,
        actor: Actor,
        request_id: Option<RequestId>,
        command: Command,
    ) -> ApplyResponse {
        let mut state = self.state.lock().expect("state");
        let index = state.last_applied_index() + 1;
        let envelope =
            Envelope { time_ms: now_ms(), origin_node_id: 1, actor, request_id, command };
        let applied = state.apply(index, &envelope);
        state.check_invariants();
        let mut events = self.events.lock().expect("events");
        events.extend(applied.events.into_iter().map(|event| event.what));
        ApplyResponse { index, result: applied.result }
    }

    #[track_caller]
    pub fn ok(&self, actor: Actor, command: Command) -> Reply {
        let kind = command.kind();
        match self.apply(actor, None, command).result {
            Ok(reply) => reply,
            Err(reject) => panic!("{kind:?} was rejected: {reject}"),
        }
    }

    pub fn ready_pool(&self) -> usize {
        self.state.lock().expect("state").pool_size().0
    }

    pub fn fingerprint_of(&self, agent: &str) -> Option<[u8; 32]> {
        let state = self.state.lock().expect("state");
        state.meta().agents.get(agent).and_then(|agent| agent.certificate_fingerprint)
    }

    pub fn value_of(&self, key_id: &KeyId) -> [u8; 32] {
        self.values.iter().find(|(id, _)| id == key_id).expect("a pool key").1
    }

    pub fn authentication_failures(&self) -> Vec<(String, String)> {
        let events = self.events.lock().expect("events");
        events
            .iter()
            .filter_map(|what| match what {
                AuditWhat::AuthenticationFailure { principal, source } => {
                    Some((principal.clone(), source.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// An Operator sets a new passphrase: the old certificate is revoked (SPEC A1).
    pub fn set_passphrase(&self, agent: &str, passphrase: &str) {
        let command = Command::SetAgentPassphrase {
            id: agent.into(),
            passphrase_verifier: verifier(passphrase),
        };
        self.ok(user("op"), command);
    }
}

pub fn user(id: &str) -> Actor {
    Actor::User(id.into())
}

pub fn verifier(passphrase: &str) -> Vec<u8> {
    security_core::challenge::create_verifier(passphrase, KdfParams::fast_for_tests())
        .expect("verifier")
}

/// One fake KMA: the shared state, its own lock flag and counters.
pub struct FakeKma {
    pub cluster: Arc<Cluster>,
    pub locked: AtomicBool,
    /// Proposals fail with a retryable error (no majority).
    pub partitioned: AtomicBool,
    pub proposals: AtomicUsize,
    /// How often a locked KMA was asked for its master key.
    pub locked_refusals: AtomicUsize,
    /// `min_index` of every read, in order.
    pub min_indexes: Mutex<Vec<u64>>,
    /// While set, reads see this copy of the state, as on a KMA that lags behind the log.
    pub lagging: Mutex<Option<State>>,
    /// Linearizable reads asked for; they always see the current state.
    pub linearizable_reads: AtomicUsize,
}

impl FakeKma {
    pub fn new(cluster: &Arc<Cluster>) -> Arc<Self> {
        Arc::new(FakeKma {
            cluster: cluster.clone(),
            locked: AtomicBool::new(false),
            partitioned: AtomicBool::new(false),
            proposals: AtomicUsize::new(0),
            linearizable_reads: AtomicUsize::new(0),
            locked_refusals: AtomicUsize::new(0),
            min_indexes: Mutex::new(Vec::new()),
            lagging: Mutex::new(None),
        })
    }

    /// From now on this KMA's reads see the state as it is now, until [`FakeKma::catch_up`].
    pub fn fall_behind(&self) {
        let now = self.cluster.state.lock().expect("state").clone();
        *self.lagging.lock().expect("lagging") = Some(now);
    }

    pub fn catch_up(&self) {
        *self.lagging.lock().expect("lagging") = None;
    }
}

impl Backend for FakeKma {
    fn read<R: Send>(
        &self,
        min_index: u64,
        read: impl FnOnce(&State) -> R + Send,
    ) -> impl Future<Output = Result<R, BackendError>> + Send {
        self.min_indexes.lock().expect("reads").push(min_index);
        let lagging = self.lagging.lock().expect("lagging");
        let current = self.cluster.state.lock().expect("state");
        let state = lagging.as_ref().unwrap_or(&current);
        let result = if state.last_applied_index() < min_index {
            Err(BackendError {
                retryable: true,
                message: format!("index {min_index} not applied yet"),
            })
        } else {
            Ok(read(state))
        };
        std::future::ready(result)
    }

    fn read_linearizable<R: Send>(
        &self,
        read: impl FnOnce(&State) -> R + Send,
    ) -> impl Future<Output = Result<R, BackendError>> + Send {
        self.linearizable_reads.fetch_add(1, Ordering::SeqCst);
        let current = self.cluster.state.lock().expect("state");
        std::future::ready(Ok(read(&current)))
    }

    fn propose(
        &self,
        agent: Option<&str>,
        request_id: Option<RequestId>,
        command: Command,
    ) -> impl Future<Output = Result<ApplyResponse, BackendError>> + Send {
        self.proposals.fetch_add(1, Ordering::SeqCst);
        let result = if self.partitioned.load(Ordering::SeqCst) {
            Err(BackendError { retryable: true, message: "no majority reachable".into() })
        } else {
            let actor = agent.map_or(Actor::System, |id| Actor::Agent(id.into()));
            Ok(self.cluster.apply(actor, request_id, command))
        };
        std::future::ready(result)
    }

    fn master_key(&self) -> Option<MasterKey> {
        if self.locked.load(Ordering::SeqCst) {
            self.locked_refusals.fetch_add(1, Ordering::SeqCst);
            None
        } else {
            Some(self.cluster.master.clone())
        }
    }

    fn cluster_id(&self) -> Option<ClusterId> {
        Some(CLUSTER)
    }

    fn sign_agent_certificate(
        &self,
        agent: &str,
        csr_pem: &str,
    ) -> Result<(String, String), BackendError> {
        let common_name = format!("agent:{agent}");
        let certificate = self
            .cluster
            .ca
            .sign_request(&common_name, csr_pem)
            .map_err(|message| BackendError { retryable: false, message })?;
        Ok((certificate, self.cluster.ca.pem.clone()))
    }

    fn discovery(&self) -> impl Future<Output = Vec<KmaEndpoint>> + Send {
        std::future::ready(self.cluster.kmas.lock().expect("kmas").clone())
    }

    fn decoy_secret(&self) -> [u8; 32] {
        [7; 32]
    }
}

/// Serves the gateway for `kma` on a fresh 127.0.0.1 port; returns `host:port`.
pub async fn start(kma: &Arc<FakeKma>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let tls = kma.cluster.ca.server_config();
    tokio::spawn(agent_gateway::serve(kma.clone(), listener, tls));
    address
}

/// Lists a KMA in discovery.
pub fn list(cluster: &Cluster, name: &str, site: &str, address: &str, healthy: bool) {
    cluster.kmas.lock().expect("kmas").push(KmaEndpoint {
        name: name.into(),
        site: site.into(),
        service_address: address.into(),
        healthy,
    });
}

/// Short timeouts: tests fail over in milliseconds.
pub fn fast_options() -> ClientOptions {
    ClientOptions {
        request_timeout: std::time::Duration::from_millis(800),
        connect_timeout: std::time::Duration::from_millis(500),
        round_pause: std::time::Duration::from_millis(10),
        ..ClientOptions::default()
    }
}

pub fn client(addresses: &[&str], credentials: &AgentCredentials) -> AgentClient {
    let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_owned()).collect();
    AgentClient::from_credentials(&addresses, credentials, fast_options()).expect("client")
}

/// A TLS 1.3 client configuration trusting `ca_pem`, presenting `identity` (certificate and
/// key, PEM) when given.
pub fn client_tls(ca_pem: &str, identity: Option<(&str, &str)>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der_of(ca_pem)).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let key =
                rustls_pemfile::private_key(&mut key_pem.as_bytes()).expect("pem").expect("key");
            builder.with_client_auth_cert(vec![der_of(cert_pem)], key).expect("client certificate")
        }
    }
}

/// A plain HTTPS client trusting `ca_pem`, with an optional client certificate: for requests
/// the agent client library would never send (replays, wrong bodies, raw status checks).
pub fn raw_client(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    http1_only: bool,
) -> reqwest::Client {
    let mut config = client_tls(ca_pem, identity);
    config.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    let mut builder = reqwest::Client::builder().use_preconfigured_tls(config);
    if http1_only {
        builder = builder.http1_only();
    }
    builder.timeout(std::time::Duration::from_secs(5)).build().expect("reqwest client")
}
