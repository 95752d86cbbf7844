//! The `kmsctl` binary as scripts run it (no terminal, `KMSCTL_HOME`, `--json`, `--confirm`),
//! without a cluster: against no KMA at all, and against a stand-in KMA that speaks the
//! management API over mutual TLS 1.3 with canned answers. Each test compares the whole stderr
//! and the exit code (STYLE 18); the through-the-cluster tests are in node/tests/kmsctl.rs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use admin_api::api::{
    DestroyDataUnitKeys, Done, ErrorBody, ErrorCode, ImpactPreview, Key, LoginGranted,
    MemberUnlockProgress, MemberUnlockRequest, Page, PreviewOrDone, ProofRequest, Site,
    LOGIN_INDEX_HEADER, MEMBER_UNLOCK_PATH,
};
use admin_api::cli::profile::{self, ProfileFile, SavedLogin};
use admin_api::client::AdminClient;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use security_core::challenge::{create_verifier, ClientHello, ServerLogin};
use security_core::kdf::KdfParams;

/// 2100-01-01: a certificate that does not expire during the test.
const FAR_FUTURE_MS: u64 = 4_102_444_800_000;
const DIGEST: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
const UNIT: &str = "c0ffee0100000000000000000000a001";
const OTHER_UNIT: &str = "c0ffee0100000000000000000000a002";

/// A CA, a server certificate for 127.0.0.1 and a user certificate, all PEM.
struct Pki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    ca: String,
    server_cert: String,
    server_key: String,
    user_cert: String,
    user_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key pair generated");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("certificate parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "kmsctl test CA");
    let ca = params.self_signed(&ca_key).expect("CA self-signed");
    let leaf = |san: Option<SanType>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("key pair generated");
        let mut params =
            CertificateParams::new(Vec::<String>::new()).expect("certificate parameters");
        params.subject_alt_names = san.into_iter().collect();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate signed");
        (cert.pem(), key.serialize_pem())
    };
    let localhost = SanType::IpAddress("127.0.0.1".parse().expect("loopback address"));
    let (server_cert, server_key) = leaf(Some(localhost), ExtendedKeyUsagePurpose::ServerAuth);
    let (user_cert, user_key) = leaf(None, ExtendedKeyUsagePurpose::ClientAuth);
    Pki { ca: ca.pem(), ca_cert: ca, ca_key, server_cert, server_key, user_cert, user_key }
}

/// Saves a logged-in profile for `addresses` under `home`.
fn save_profile(home: &Path, pki: &Pki, addresses: &[String], expires_at_ms: u64) {
    let file = ProfileFile {
        addresses: addresses.to_vec(),
        user: "alice".into(),
        logged_in_at_ms: Some(0),
        expires_at_ms: Some(expires_at_ms),
        granted_by: addresses.first().cloned(),
        login_index: 0,
    };
    let login =
        SavedLogin { file, ca_pem: &pki.ca, cert_pem: &pki.user_cert, key_pem: &pki.user_key };
    profile::save(home, "default", &login).expect("profile saved");
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn kmsctl(home: &Path, args: &[&str]) -> Run {
    kmsctl_with(home, args, None, &[]).await
}

/// Runs kmsctl without a terminal: `stdin` written to its standard input, `env` added.
async fn kmsctl_with(home: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kmsctl"))
        .args(args)
        .env("KMSCTL_HOME", home)
        .env_remove("KMSCTL_PROFILE")
        .env_remove("KMSCTL_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kmsctl starts");
    let mut input = child.stdin.take().expect("kmsctl stdin");
    if let Some(text) = stdin {
        // kmsctl may refuse its arguments and exit before it reads its input.
        if let Err(error) = input.write_all(text.as_bytes()).await {
            assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {error}");
        }
    }
    drop(input);
    let output = child.wait_with_output().await.expect("kmsctl output");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 output"),
    }
}

// ---- Without any KMA ----

/// Setup: an empty KMSCTL_HOME. Action: `kmsctl site list`. Expectation: exit 7 and how to
/// log in.
#[tokio::test]
async fn u1_no_profile_exits_not_logged_in() {
    let home = tempfile::tempdir().unwrap();
    let run = kmsctl(home.path(), &["site", "list"]).await;
    assert_eq!(run.code, Some(7));
    assert_eq!(
        run.stderr,
        format!(
            "error: no profile 'default' in {}\nhelp: log in first: kmsctl login --profile \
             default --address HOST:PORT --ca CA.pem --user ID\n",
            home.path().display()
        )
    );
    assert_eq!(run.stdout, "");
}

/// Setup: a profile whose certificate expired. Action: any command. Expectation: exit 7, the
/// expiry instant, the login command.
#[tokio::test]
async fn s2_expired_profile_exits_not_logged_in() {
    let home = tempfile::tempdir().unwrap();
    save_profile(home.path(), &pki(), &["127.0.0.1:1".into()], 1_709_294_400_000);
    let run = kmsctl(home.path(), &["key", "list"]).await;
    assert_eq!(run.code, Some(7));
    assert_eq!(
        run.stderr,
        "error: the certificate of profile 'default' (alice) expired at 2024-03-01 12:00:00 UTC\n\
         help: log in again: kmsctl login --profile default --user alice\n"
    );
}

/// Setup: a profile whose only KMA refuses connections. Expectation: exit 4 (unavailable),
/// the address and cause named, the next step given.
#[tokio::test]
async fn u1_unreachable_cluster_exits_unavailable() {
    let home = tempfile::tempdir().unwrap();
    save_profile(home.path(), &pki(), &["127.0.0.1:1".into()], FAR_FUTURE_MS);
    let run = kmsctl(home.path(), &["site", "list"]).await;
    assert_eq!(run.code, Some(4), "{}", run.stderr);
    let mut lines = run.stderr.lines();
    assert!(
        lines.next().unwrap().starts_with("error: no KMA answered: 127.0.0.1:1: "),
        "{}",
        run.stderr
    );
    assert_eq!(
        lines.next(),
        Some(
            "help: check that the KMAs of the profile are running and reachable (kmsctl \
             profile show)"
        )
    );
    assert_eq!(lines.next(), None);
}

/// Setup: a logged-in profile, no terminal. Action: create a user without --passphrase-stdin.
/// Expectation: exit 2 before anything is sent, naming the flag to use.
#[tokio::test]
async fn s2_new_passphrase_without_terminal_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    save_profile(home.path(), &pki(), &["127.0.0.1:1".into()], FAR_FUTURE_MS);
    let run = kmsctl(home.path(), &["user", "create", "bob", "--role", "operator"]).await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "error: no terminal to ask for the passphrase of user bob\nhelp: pass --passphrase-stdin \
         and write it to standard input\n"
    );
}

/// Setup: nothing saved. Action: `kmsctl login` without flags. Expectation: exit 2, the full
/// login command.
#[tokio::test]
async fn u1_login_without_a_cluster_named_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let run = kmsctl(home.path(), &["login", "--passphrase-stdin"]).await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "error: no --address given and none saved in the profile\nhelp: kmsctl login --address \
         HOST:PORT --ca CA.pem --user ID\n"
    );
    let run =
        kmsctl(home.path(), &["login", "--address", "https://kma1/", "--ca", "x", "--user", "a"])
            .await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "error: --address https://kma1/: write a KMA's management address as HOST:PORT\n"
    );
}

/// Setup: a saved profile. Action: `profile show --json`, `profile list`, `logout`.
/// Expectation: the profile without secrets, then logged out (exit 7 afterwards).
#[tokio::test]
async fn s2_profile_show_and_logout() {
    let home = tempfile::tempdir().unwrap();
    let pki = pki();
    save_profile(home.path(), &pki, &["127.0.0.1:1".into()], FAR_FUTURE_MS);
    let run = kmsctl(home.path(), &["--json", "profile", "show"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let shown: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(shown["state"], "logged-in");
    assert_eq!(shown["user"], "alice");
    assert!(!run.stdout.contains("PRIVATE KEY"));
    assert_eq!(kmsctl(home.path(), &["profile", "list"]).await.stdout, "default\n");
    let run = kmsctl(home.path(), &["logout"]).await;
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (Some(0), "profile 'default' logged out (addresses and CA kept)\n")
    );
    let run = kmsctl(home.path(), &["site", "list"]).await;
    assert_eq!(run.code, Some(7));
    assert_eq!(
        run.stderr,
        "error: profile 'default' (alice) is logged out\nhelp: log in again: kmsctl login \
         --profile default --user alice\n"
    );
}

/// Setup: nothing. Action: `kmsctl completion zsh`. Expectation: a script, no profile needed.
#[tokio::test]
async fn u1_completion_needs_no_profile() {
    let home = tempfile::tempdir().unwrap();
    let run = kmsctl(home.path(), &["completion", "zsh"]).await;
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("#compdef kmsctl"));
}

// ---- Against a stand-in KMA ----

const PASSPHRASE: &str = "correct horse battery";
/// The log index at which the stand-in says it recorded a login.
const LOGIN_INDEX: u64 = 57;
/// The quorum members the stand-in's locked KMA takes shares from, two of them needed.
const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];

/// A KMA stand-in: canned answers, a real login (challenge/response against a verifier of
/// [`PASSPHRASE`], the CSR signed by the test CA) and, like the node, routes other than the
/// login refused to connections without a client certificate.
struct StandIn {
    pki: Pki,
    seen: Mutex<Vec<String>>,
    /// The login index header of each request in `seen` (`-`: none).
    login_index_headers: Mutex<Vec<String>>,
    /// The members whose share the locked KMA holds.
    members_given: Mutex<Vec<String>>,
    login: Mutex<Option<ServerLogin>>,
    verifier: Vec<u8>,
    /// Answers the proof with a server signature that proves nothing.
    impostor: bool,
}

impl StandIn {
    fn lines(&self) -> Vec<String> {
        self.seen.lock().expect("lock not poisoned").clone()
    }

    fn login_index_headers(&self) -> Vec<String> {
        self.login_index_headers.lock().expect("lock not poisoned").clone()
    }

    fn record(&self, line: String) {
        self.seen.lock().expect("lock not poisoned").push(line);
    }
}

/// Whether the connection presented a client certificate.
#[derive(Clone, Copy)]
struct Peer(bool);

fn key(id: &str) -> Key {
    Key {
        id: id.into(),
        state: "ready".into(),
        group: None,
        origin: "pool".into(),
        created_at_ms: 1_709_294_400_000,
        activated_at_ms: None,
        encryption_ends_at_ms: None,
        deactivates_at_ms: None,
        compromised_at_ms: None,
        destroyed_at_ms: None,
        data_units: vec![],
    }
}

fn refusal(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    assert_eq!(status.as_u16(), code.http_status(), "the contract's status for {code}");
    (status, Json(ErrorBody::new(code, message))).into_response()
}

fn query_value<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn login_hello(stand_in: &StandIn, body: &str) -> Response {
    let hello: ClientHello =
        serde_json::from_str(body).expect("request body in the contract's JSON");
    assert_eq!(hello.purpose, admin_api::client::PURPOSE_USER);
    let verifier = (hello.principal == "alice").then_some(stand_in.verifier.as_slice());
    let (login, challenge) =
        ServerLogin::challenge(verifier, &hello, &[7; 32]).expect("challenge made");
    *stand_in.login.lock().expect("lock not poisoned") = Some(login);
    Json(challenge).into_response()
}

fn login_proof(stand_in: &StandIn, body: &str) -> Response {
    let request: ProofRequest =
        serde_json::from_str(body).expect("request body in the contract's JSON");
    let Some(login) = stand_in.login.lock().expect("lock not poisoned").take() else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            ErrorCode::UnknownChallenge,
            "no challenge pending",
        );
    };
    let Ok(mut server_final) = login.verify(&request.proof) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AuthenticationFailed,
            "wrong user or passphrase",
        );
    };
    if stand_in.impostor {
        server_final.server_signature = [9; 32];
    }
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(&request.csr_pem)
        .expect("CSR from the client");
    csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert =
        csr.signed_by(&stand_in.pki.ca_cert, &stand_in.pki.ca_key).expect("certificate signed");
    let granted = LoginGranted {
        server_final,
        cert_pem: cert.pem(),
        ca_pem: stand_in.pki.ca.clone(),
        valid_for_s: 8 * 3_600,
        login_index: LOGIN_INDEX,
    };
    Json(granted).into_response()
}

fn destroy_keys(body: &str) -> Response {
    let request: DestroyDataUnitKeys =
        serde_json::from_str(body).expect("request body in the contract's JSON");
    let answer = if request.confirm.as_deref() == Some(DIGEST) {
        PreviewOrDone::Done(Done { index: 42, detail: serde_json::json!({"count": 1}) })
    } else {
        PreviewOrDone::Preview(ImpactPreview {
            keys: vec!["k9".into()],
            data_units_losing_access: vec![UNIT.into(), OTHER_UNIT.into()],
            shared_with_unselected: vec![OTHER_UNIT.into()],
            digest: DIGEST.into(),
        })
    };
    Json(answer).into_response()
}

/// A locked KMA (`kma2`, node 2) taking quorum members' shares: [`PASSPHRASE`] is every
/// member's; two shares unlock it. Served, like the login, without a client certificate.
fn member_unlock(stand_in: &StandIn, peer: Peer, body: &str) -> Response {
    let request: MemberUnlockRequest =
        serde_json::from_str(body).expect("request body in the contract's JSON");
    stand_in.record(format!("POST {MEMBER_UNLOCK_PATH} {} client-cert={}", request.member, peer.0));
    if !MEMBERS.contains(&request.member.as_str()) || request.passphrase != PASSPHRASE {
        return refusal(
            StatusCode::CONFLICT,
            ErrorCode::UnlockFailed,
            "wrong quorum member or passphrase",
        );
    }
    let mut given = stand_in.members_given.lock().expect("lock not poisoned");
    if !given.contains(&request.member) {
        given.push(request.member.clone());
    }
    let progress = MemberUnlockProgress {
        kma: "kma2".into(),
        node_id: 2,
        members_given: given.clone(),
        threshold: 2,
        unlocked: given.len() >= 2,
    };
    Json(progress).into_response()
}

async fn answer(
    State(stand_in): State<Arc<StandIn>>,
    Extension(peer): Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let path = uri.path();
    if path.starts_with("/v1/login/") {
        return if path.ends_with("hello") {
            login_hello(&stand_in, &body)
        } else {
            login_proof(&stand_in, &body)
        };
    }
    if method == Method::POST && path == MEMBER_UNLOCK_PATH {
        return member_unlock(&stand_in, peer, &body);
    }
    if !peer.0 {
        return refusal(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "present a certificate",
        );
    }
    stand_in.record(format!("{method} {uri} {body}").trim_end().to_string());
    let login_index = headers
        .get(LOGIN_INDEX_HEADER)
        .map_or_else(|| "-".to_string(), |value| value.to_str().expect("ASCII").to_string());
    stand_in.login_index_headers.lock().expect("lock not poisoned").push(login_index);
    let done = |index| Json(Done { index, detail: serde_json::json!({}) }).into_response();
    match (method.as_str(), path) {
        ("GET", "/v1/sites") => {
            Json(vec![Site { name: "paris".into(), created_at_ms: 0 }]).into_response()
        }
        ("POST", "/v1/sites") => done(41),
        ("DELETE", "/v1/sites/paris") => refusal(
            StatusCode::CONFLICT,
            ErrorCode::Rejected,
            "site paris still has KMAs or agents: move or delete them first",
        ),
        ("GET", "/v1/users") => {
            refusal(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, "no valid session")
        }
        ("GET", "/v1/keys") => {
            let page = match query_value(&uri, "after") {
                None => Page { rows: vec![key("k1"), key("k2")], next: Some("c1".into()) },
                Some("c1") => Page { rows: vec![], next: Some("c2".into()) },
                _ => Page { rows: vec![key("k3")], next: None },
            };
            Json(page).into_response()
        }
        ("POST", "/v1/data-units/destroy-keys") => destroy_keys(&body),
        _ => refusal(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route"),
    }
}

/// Serves a stand-in on 127.0.0.1 with TLS 1.3; client certificates from the test CA are
/// checked when presented (a connection without one reaches the login only).
async fn stand_in(impostor: bool) -> (SocketAddr, Arc<StandIn>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = |pem: &str| -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut pem.as_bytes()).map(Result::unwrap).collect()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs(&pki.ca).remove(0)).expect("CA certificate");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .expect("client verifier");
    let key: PrivateKeyDer = rustls_pemfile::private_key(&mut pki.server_key.as_bytes())
        .expect("server key PEM")
        .expect("server key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 with ring")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&pki.server_cert), key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let verifier = create_verifier(PASSPHRASE, KdfParams::fast_for_tests()).expect("verifier made");
    let state = Arc::new(StandIn {
        pki,
        seen: Mutex::default(),
        login_index_headers: Mutex::default(),
        members_given: Mutex::default(),
        login: Mutex::default(),
        verifier,
        impostor,
    });
    let app = axum::Router::new().fallback(answer).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback listener");
    let address = listener.local_addr().expect("listener address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let peer = Peer(tls.get_ref().1.peer_certificates().is_some());
                let app = app.layer(Extension(peer));
                let service = hyper_util::service::TowerToHyperService::new(app);
                let executor = hyper_util::rt::TokioExecutor::new();
                let builder = hyper_util::server::conn::auto::Builder::new(executor);
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
            });
        }
    });
    (address, state)
}

/// A home whose profile names a dead address first, then the stand-in.
async fn with_stand_in() -> (tempfile::TempDir, Arc<StandIn>, String) {
    let (address, stand_in) = stand_in(false).await;
    let home = tempfile::tempdir().expect("temp dir");
    let addresses = ["127.0.0.1:1".into(), address.to_string()];
    save_profile(home.path(), &stand_in.pki, &addresses, FAR_FUTURE_MS);
    (home, stand_in, address.to_string())
}

/// Writes the stand-in's CA where `--ca` can name it.
fn ca_file(home: &Path, stand_in: &StandIn) -> String {
    let path = home.join("cluster-ca.pem");
    std::fs::write(&path, &stand_in.pki.ca).expect("CA file written");
    path.to_str().expect("UTF-8 path").to_string()
}

/// Setup: a stand-in holding alice's verifier; the first address is down. Action: `kmsctl
/// login --passphrase-stdin`, then a command. Expectation: logged in at the second address,
/// the key file 0600, the granted certificate used (the stand-in refuses connections without
/// one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_login_saves_a_profile_whose_certificate_the_next_command_uses() {
    let (address, stand_in) = stand_in(false).await;
    let home = tempfile::tempdir().unwrap();
    let ca = ca_file(home.path(), &stand_in);
    let args =
        ["login", "--address", "127.0.0.1:1", "--address", &address.to_string(), "--ca", &ca];
    let mut login = args.to_vec();
    login.extend(["--user", "alice", "--passphrase-stdin"]);
    let run = kmsctl_with(home.path(), &login, Some(&format!("{PASSPHRASE}\n")), &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let dir = home.path().join("profiles").join("default");
    assert!(
        run.stdout.starts_with(&format!(
            "Logged in as alice at {address}; profile 'default' ({}) is valid until ",
            dir.display()
        )),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(PASSPHRASE) && !run.stderr.contains(PASSPHRASE));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let toml = std::fs::read_to_string(dir.join("profile.toml")).unwrap();
    assert!(toml.contains(&format!("login_index = {LOGIN_INDEX}\n")), "{toml}");
    let run = kmsctl(home.path(), &["--json", "site", "list"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // The login's index: as the header, and as the first read's min_index.
    assert_eq!(stand_in.lines(), vec![format!("GET /v1/sites?min_index={LOGIN_INDEX}")]);
    assert_eq!(stand_in.login_index_headers(), vec![LOGIN_INDEX.to_string()]);
    // Again from the saved profile, the passphrase from KMSCTL_PASSPHRASE.
    let env = [("KMSCTL_PASSPHRASE", PASSPHRASE)];
    let run = kmsctl_with(home.path(), &["login"], None, &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

/// Setup: the stand-in. Action: login with a wrong passphrase. Expectation: exit 7, the
/// refusal, no profile saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_wrong_passphrase_does_not_log_in() {
    let (address, stand_in) = stand_in(false).await;
    let home = tempfile::tempdir().unwrap();
    let ca = ca_file(home.path(), &stand_in);
    let address = address.to_string();
    let login =
        ["login", "--address", &address, "--ca", &ca, "--user", "alice", "--passphrase-stdin"];
    let run = kmsctl_with(home.path(), &login, Some("wrong passphrase\n"), &[]).await;
    assert_eq!(run.code, Some(7));
    assert_eq!(run.stderr, "error: wrong user or passphrase\n");
    assert!(!home.path().join("profiles").exists());
}

/// Setup: a stand-in that accepts the proof but cannot prove it holds the verifier.
/// Expectation: the grant is refused (exit 1), nothing saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_kma_that_cannot_prove_the_verifier_is_refused() {
    let (address, stand_in) = stand_in(true).await;
    let home = tempfile::tempdir().unwrap();
    let ca = ca_file(home.path(), &stand_in);
    let address = address.to_string();
    let login =
        ["login", "--address", &address, "--ca", &ca, "--user", "alice", "--passphrase-stdin"];
    let run = kmsctl_with(home.path(), &login, Some(&format!("{PASSPHRASE}\n")), &[]).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr,
        format!(
            "error: {address} could not prove it knows your passphrase verifier: not your \
             cluster\nhelp: check --address and --ca: they must name the cluster that holds \
             your account\n"
        )
    );
    assert!(!home.path().join("profiles").exists());
}

/// Setup: the first KMA of the profile is down. Action: `site list`. Expectation: the second
/// one answers over mutual TLS; the table is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c8_requests_fail_over_to_the_next_kma() {
    let (home, seen, _) = with_stand_in().await;
    let run = kmsctl(home.path(), &["site", "list"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "NAME   CREATED\nparis  1970-01-01 00:00:00\n");
    assert_eq!(seen.lines(), vec!["GET /v1/sites".to_string()]);
}

/// Setup: the stand-in. Action: a write, then a read through the same client. Expectation:
/// the read carries the write's index as min_index (read-your-writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u1_reads_carry_the_index_of_the_last_write() {
    let (_home, seen, address) = with_stand_in().await;
    let pki = &seen.pki;
    let client = AdminClient::new(vec![address], &pki.ca, &pki.user_cert, &pki.user_key).unwrap();
    let done = client
        .write(
            reqwest::Method::POST,
            "/v1/sites",
            Some(&admin_api::api::NewSite { name: "lyon".into() }),
        )
        .await
        .unwrap();
    assert_eq!(done.index, 41);
    let _: Vec<Site> = client.get("/v1/sites").await.unwrap();
    assert_eq!(
        seen.lines(),
        vec![
            "POST /v1/sites {\"name\":\"lyon\"}".to_string(),
            "GET /v1/sites?min_index=41".to_string()
        ]
    );
}

/// Setup: a client for a session whose login was recorded at index 12 (issue 16 point 2), and
/// a client without a login index. Action: a read, a write, a read through `at`, then a read
/// of the other client. Expectation: every request of the first carries the index in the
/// login index header, and its reads wait for it (then for the write's 41); the other sends
/// neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_requests_carry_the_login_index_and_reads_start_from_it() {
    let (_home, seen, address) = with_stand_in().await;
    let pki = &seen.pki;
    let client = AdminClient::new(vec![address.clone()], &pki.ca, &pki.user_cert, &pki.user_key)
        .unwrap()
        .with_login_index(12);
    assert_eq!((client.login_index(), client.seen_index()), (12, 12));
    let _: Vec<Site> = client.get("/v1/sites").await.unwrap();
    let lyon = admin_api::api::NewSite { name: "lyon".into() };
    client.write(reqwest::Method::POST, "/v1/sites", Some(&lyon)).await.unwrap();
    let _: Vec<Site> = client.at(&address).get("/v1/sites").await.unwrap();
    let plain = AdminClient::new(vec![address], &pki.ca, &pki.user_cert, &pki.user_key).unwrap();
    assert_eq!((plain.login_index(), plain.seen_index()), (0, 0));
    let _: Vec<Site> = plain.get("/v1/sites").await.unwrap();
    assert_eq!(
        seen.lines(),
        [
            "GET /v1/sites?min_index=12",
            "POST /v1/sites {\"name\":\"lyon\"}",
            "GET /v1/sites?min_index=41",
            "GET /v1/sites",
        ]
    );
    assert_eq!(seen.login_index_headers(), ["12", "12", "12", "-"]);
}

/// `kmsctl quorum approve --member MEMBER --unlock ADDRESS [--ca CA] --passphrase-stdin`.
fn unlock_args<'a>(member: &'a str, address: &'a str, ca: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["quorum", "approve", "--member", member, "--unlock", address];
    if let Some(ca) = ca {
        args.extend(["--ca", ca]);
    }
    args.push("--passphrase-stdin");
    args
}

/// Setup: no profile at all; a locked KMA that two of the members m1, m2, m3 unlock (issue 16
/// point 5: after a cold restart nobody can log in). Action: m1 approves its unlock with
/// `--unlock` and `--ca`; m2, then m2 again with `--json`; m3 with a wrong passphrase. Expectation: no session
/// asked for and no client certificate presented; m1 is told one more share is needed and the
/// command the next member runs; m2 is told it unlocked (no next step), then gets the progress
/// as JSON; m3 exits 3 with the KMA's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_a_member_unlocks_a_locked_kma_without_a_session() {
    let (address, stand_in) = stand_in(false).await;
    let home = tempfile::tempdir().unwrap();
    let ca = ca_file(home.path(), &stand_in);
    let address = address.to_string();
    let passphrase = format!("{PASSPHRASE}\n");
    let args = unlock_args("m1", &address, Some(&ca));
    let run = kmsctl_with(home.path(), &args, Some(&passphrase), &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "Member m1 given on KMA kma2 (node 2): 1 of 2 needed (m1); still needs 1 more\n"
    );
    assert_eq!(
        run.stderr,
        format!("help: the next member runs: kmsctl quorum approve --member MEMBER --unlock {address}\n")
    );
    let args = unlock_args("m2", &address, Some(&ca));
    let run = kmsctl_with(home.path(), &args, Some(&passphrase), &[]).await;
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""), "no next step once unlocked");
    assert_eq!(
        run.stdout,
        "Member m2 given on KMA kma2 (node 2): 2 of 2 needed (m1, m2); unlocked\n"
    );
    let mut args = vec!["--json"];
    args.extend(unlock_args("m2", &address, Some(&ca)));
    let run = kmsctl_with(home.path(), &args, Some(&passphrase), &[]).await;
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""));
    let progress: MemberUnlockProgress = serde_json::from_str(&run.stdout).unwrap();
    let expected = MemberUnlockProgress {
        kma: "kma2".into(),
        node_id: 2,
        members_given: vec!["m1".into(), "m2".into()],
        threshold: 2,
        unlocked: true,
    };
    assert_eq!(progress, expected);
    let args = unlock_args("m3", &address, Some(&ca));
    let run = kmsctl_with(home.path(), &args, Some("wrong\n"), &[]).await;
    assert_eq!(run.code, Some(3));
    assert_eq!(run.stderr, "error: wrong quorum member or passphrase\n");
    assert_eq!(
        stand_in.lines(),
        [
            "POST /v1/unlock/member m1 client-cert=false",
            "POST /v1/unlock/member m2 client-cert=false",
            "POST /v1/unlock/member m2 client-cert=false",
            "POST /v1/unlock/member m3 client-cert=false",
        ]
    );
    assert!(!home.path().join("profiles").exists(), "nothing saved");
}

/// Setup: a locked KMA; first no profile, then a profile whose certificate expired long ago.
/// Action: `quorum approve --unlock` without `--ca`, and with an address that is not
/// HOST:PORT. Expectation: without a profile, a usage error (exit 2) naming `--ca`; with the
/// expired profile, its saved CA is used and no login is asked for; the bad address is a usage
/// error naming `--unlock`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_an_unlock_takes_the_ca_from_the_profile_whatever_its_session() {
    let (address, stand_in) = stand_in(false).await;
    let home = tempfile::tempdir().unwrap();
    let address = address.to_string();
    let passphrase = format!("{PASSPHRASE}\n");
    let args = unlock_args("m1", &address, None);
    let run = kmsctl_with(home.path(), &args, Some(&passphrase), &[]).await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        format!(
            "error: no --ca given and no profile 'default' holds the cluster's CA\nhelp: kmsctl \
             quorum approve --member m1 --unlock {address} --ca CA.pem\n"
        )
    );
    save_profile(home.path(), &stand_in.pki, &["127.0.0.1:1".into()], 1);
    let run = kmsctl_with(home.path(), &args, Some(&passphrase), &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.ends_with("(m1); still needs 1 more\n"), "{}", run.stdout);
    let args = unlock_args("m1", "https://kma2/", None);
    let run = kmsctl_with(home.path(), &args, Some(&passphrase), &[]).await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "error: --unlock https://kma2/: write a KMA's management address as HOST:PORT\n"
    );
    assert_eq!(stand_in.lines(), ["POST /v1/unlock/member m1 client-cert=false"]);
}

/// Setup: the stand-in refuses a delete. Expectation: exit 3 and its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u1_a_refusal_exits_3_with_the_cluster_message() {
    let (home, _, _) = with_stand_in().await;
    let run = kmsctl(home.path(), &["site", "delete", "paris"]).await;
    assert_eq!(run.code, Some(3));
    assert_eq!(
        run.stderr,
        "error: site paris still has KMAs or agents: move or delete them first\n"
    );
}

/// Setup: the stand-in answers `unauthenticated`. Expectation: exit 7 and the login command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_an_unauthenticated_answer_asks_to_log_in_again() {
    let (home, _, _) = with_stand_in().await;
    let run = kmsctl(home.path(), &["user", "list"]).await;
    assert_eq!(run.code, Some(7));
    assert_eq!(
        run.stderr,
        "error: no valid session\nhelp: log in again: kmsctl login --profile default --user alice\n"
    );
}

/// Setup: keys over three pages, one of them empty with a cursor. Action: `--json key list
/// --all`, then `key list --limit 1`. Expectation: one array of all rows; then one row and the
/// cursor to go on from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2_lists_follow_every_page_or_stop_at_the_limit() {
    let (home, seen, _) = with_stand_in().await;
    let run = kmsctl(home.path(), &["--json", "key", "list", "--all"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let rows: Vec<Key> = serde_json::from_str(&run.stdout).unwrap();
    let ids: Vec<&str> = rows.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["k1", "k2", "k3"]);
    assert_eq!(
        seen.lines(),
        vec![
            "GET /v1/keys?limit=1000".to_string(),
            "GET /v1/keys?after=c1&limit=1000".to_string(),
            "GET /v1/keys?after=c2&limit=1000".to_string(),
        ]
    );
    let run = kmsctl(home.path(), &["key", "list", "--limit", "1"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 3, "header and the two rows of the first page");
    assert_eq!(
        run.stderr,
        "note: more rows follow: add --after c1 to go on, or --all for every row\n"
    );
}

/// Setup: a destroy whose key another data unit shares. Action: without confirmation, with
/// `--json`, with a wrong digest, with the right one. Expectation: the preview with the ripple
/// effect and exit 5 three times, nothing confirmed sent; then done (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o9_destroy_runs_only_after_a_confirmed_preview() {
    let (home, seen, _) = with_stand_in().await;
    let destroy = ["data-unit", "destroy-keys", UNIT, "--option", "compromised-only"];
    let run = kmsctl(home.path(), &destroy).await;
    assert_eq!(run.code, Some(5));
    assert!(run.stdout.contains(&format!("{OTHER_UNIT}  [NOT SELECTED]")), "{}", run.stdout);
    assert!(run.stdout.contains("WARNING: ripple effect"), "{}", run.stdout);
    assert_eq!(
        run.stderr,
        "error: this needs a confirmation of its impact preview: nothing was changed\nhelp: check \
         the preview, then run the same command with --confirm abcdef01\n"
    );
    let mut json = vec!["--json"];
    json.extend(destroy);
    let run = kmsctl(home.path(), &json).await;
    assert_eq!(run.code, Some(5));
    let preview: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (preview["result"].as_str(), preview["digest"].as_str()),
        (Some("preview"), Some(DIGEST))
    );
    let mut wrong = destroy.to_vec();
    wrong.extend(["--confirm", "99999999"]);
    let run = kmsctl(home.path(), &wrong).await;
    assert_eq!(run.code, Some(5));
    assert!(run
        .stderr
        .starts_with("error: --confirm 99999999 does not match the preview's digest"));
    assert!(
        seen.lines().iter().all(|line| line.contains("\"confirm\":null")),
        "{:?}",
        seen.lines()
    );
    let mut right = destroy.to_vec();
    right.extend(["--confirm", "ABCDEF01"]);
    let run = kmsctl(home.path(), &right).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.ends_with(
        "destroy the compromised only keys of 1 data unit(s): done (index 42) {\"count\":1}\n"
    ));
    let last = seen.lines().pop().unwrap();
    assert!(last.contains(&format!("\"confirm\":\"{DIGEST}\"")), "{last}");
}
