//! The bounds on a listener's connections (issue #16 point 6, SPEC S2): how many, the TLS
//! handshake time, the time to the first request's headers, idle time, and which connections
//! make room for which. Through real TLS over real sockets on 127.0.0.1; the limits are short
//! so that each test takes a second or two.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_gateway::server::{serve_limited, serve_tls, HandedOff, Handoff};
use agent_gateway::{ConnectionLimits, ConnectionStats};
use axum::routing::get;
use axum::Router;
use rustls::pki_types::ServerName;
use statemachine::Command;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const LINK_PROTOCOL: &[u8] = b"test-link";

/// The flood test's process may hold this many descriptors: its 2,000 client sockets, what the
/// listener holds, and some spare. A listener that held every flood connection (the code of
/// issue #16's start) runs out, fails to accept, and the drive is not served.
const DESCRIPTORS_MAX: u64 = 3_500;

/// Sets this process's descriptor limit to [`DESCRIPTORS_MAX`] (or the hard limit, if lower):
/// the bound is then the same on every machine, and the flood exceeds it unless the listener
/// holds fewer connections than the flood opens. The other tests of this binary need few.
fn fit_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.map_or(DESCRIPTORS_MAX, |hard| hard.min(DESCRIPTORS_MAX));
    limit.current = Some(wanted);
    setrlimit(Resource::Nofile, limit).expect("set RLIMIT_NOFILE");
}

/// Waits until `done` holds, polling; panics with `what` after `within`.
async fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn connector(ca: &TestCa, identity: Option<&(String, String)>, alpn: &[&[u8]]) -> TlsConnector {
    let identity = identity.map(|(cert, key)| (cert.as_str(), key.as_str()));
    let mut config = client_tls(&ca.pem, identity);
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(connector: &TlsConnector, address: &str) -> TlsStream<TcpStream> {
    try_tls_connect(connector, address).await.expect("TLS connection")
}

async fn try_tls_connect(
    connector: &TlsConnector,
    address: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

/// One HTTP/1.1 GET on an open connection; returns the answer's body.
async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> String {
    send_get(stream, path).await;
    read_answer(stream).await
}

async fn send_get<S: AsyncWrite + Unpin>(stream: &mut S, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
}

/// The body of the next HTTP/1.1 answer, which must be a 200.
async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = stream.read(&mut buffer).await.expect("read the answer");
        assert!(read > 0, "closed before the answer");
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let length: usize = text[..end]
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase().strip_prefix("content-length: ")?.parse().ok()
            })
            .expect("a content-length");
        if answer.len() >= end + 4 + length {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            return text[end + 4..end + 4 + length].to_owned();
        }
    }
}

/// Reads until the server closes the connection; returns how long that took from `since`.
async fn closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    since: Instant,
    within: Duration,
) -> Duration {
    let mut buffer = [0u8; 256];
    let reading = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, reading).await.expect("the server closes the connection")
}

/// A listener through `serve_tls` with two routes: `/hello`, and `/slow`, which answers once
/// `release` is notified; a connection asking for [`LINK_PROTOCOL`] is handed off.
struct TestServer {
    address: String,
    stats: ConnectionStats,
    release: Arc<Notify>,
    handed_off: Arc<AtomicUsize>,
}

async fn start_server(ca: &TestCa, limits: ConnectionLimits) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let mut tls = (*ca.server_config()).clone();
    tls.alpn_protocols.push(LINK_PROTOCOL.to_vec());
    let release = Arc::new(Notify::new());
    let waiting = release.clone();
    let app = Router::new().route("/hello", get(|| async { "hello" })).route(
        "/slow",
        get(move || {
            let waiting = waiting.clone();
            async move {
                waiting.notified().await;
                "slow"
            }
        }),
    );
    let handed_off = Arc::new(AtomicUsize::new(0));
    let counter = handed_off.clone();
    let handoff = Handoff {
        protocol: LINK_PROTOCOL,
        serve: Arc::new(move |(mut stream, _): HandedOff| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let _ = stream.write_all(b"linked").await;
                let _ = stream.shutdown().await;
            })
        }),
    };
    let tag = |_: &rustls::ServerConnection, _| axum::http::Extensions::new();
    let stats = ConnectionStats::default();
    let serving =
        serve_tls(listener, Arc::new(tls), app, "test", tag, Some(handoff), limits, stats.clone());
    tokio::spawn(serving);
    TestServer { address, stats, release, handed_off }
}

/// Long timeouts, so that only the bound a test is about can close a connection.
fn patient() -> ConnectionLimits {
    let long = Duration::from_secs(60);
    ConnectionLimits {
        handshake_timeout: long,
        header_read_timeout: long,
        idle_timeout: long,
        anonymous_idle_timeout: long,
        ..ConnectionLimits::default()
    }
}

/// Opens `count` TLS connections without a certificate, `parallel` at a time, and keeps them.
async fn open_anonymous(
    ca: &TestCa,
    address: &str,
    count: usize,
    parallel: usize,
) -> Vec<TlsStream<TcpStream>> {
    let connector = connector(ca, None, &[b"h2", b"http/1.1"]);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..parallel {
        let (connector, address) = (connector.clone(), address.to_owned());
        let share = count / parallel + usize::from(worker < count % parallel);
        tasks.spawn(async move {
            let mut opened = Vec::with_capacity(share);
            for _ in 0..share {
                // A listener out of descriptors accepts nothing: stop rather than wait forever.
                let connecting = try_tls_connect(&connector, &address);
                match tokio::time::timeout(Duration::from_secs(3), connecting).await {
                    Ok(Ok(stream)) => opened.push(stream),
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            opened
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(opened) = tasks.join_next().await {
        all.extend(opened.expect("a worker"));
    }
    all
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or("");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
}

/// Setup: the gateway's service listener with the default bounds but a total of 1,024
/// connections; drive1 enrolled; drive2 created, not enrolled. Action: 2,000 TLS connections
/// complete their handshake without a certificate and stay open, idle (as in the flood of issue
/// #16, which used up a KMA's descriptors); then drive1 asks for a data unit and drive2 enrolls
/// (an anonymous hello and proof) and asks too. Expect: the listener holds no more than 256
/// anonymous connections, evicting the oldest idle ones, and refuses nothing; drive1 is served
/// and drive2's enrollment and request succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_t90_issue_16_2000_idle_anonymous_connections_leave_drives_and_enrollment_served() {
    fit_descriptor_limit();
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let limits = ConnectionLimits { connections_max: 1024, ..ConnectionLimits::default() };
    let stats = ConnectionStats::default();
    let tls = cluster.ca.server_config();
    tokio::spawn(serve_limited(kma.clone(), listener, tls, limits.clone(), stats.clone()));
    let ca = &cluster.ca.pem;
    let drive1 =
        agent_gateway::client::enroll(&address, ca, AGENT, PASSPHRASE).await.expect("enroll");
    let create = Command::CreateAgent {
        id: "drive2".into(),
        site: "east".into(),
        passphrase_verifier: verifier("drive2 passphrase"),
    };
    cluster.ok(user("op"), create);
    let assign = Command::AssignKeyGroupToAgent { agent: "drive2".into(), group: "std".into() };
    cluster.ok(user("co"), assign);

    let (started, resident_before) = (Instant::now(), resident_kib());
    let flood = open_anonymous(&cluster.ca, &address, 2000, 40).await;
    let opened_in = started.elapsed();
    assert_eq!(flood.len(), 2000, "the listener (or this process) ran out of descriptors");
    wait_for("every handshake settled", Duration::from_secs(10), || {
        stats.handshaking() == 0 && stats.evicted_total() >= 2000 - limits.anonymous_max as u64
    })
    .await;
    eprintln!(
        "2,000 anonymous TLS connections opened in {opened_in:?}; resident memory {} -> {} KiB",
        resident_before,
        resident_kib()
    );
    let served = client(&[&address], &drive1).create_data_unit("VOL001").await;
    let drive2 = agent_gateway::client::enroll(&address, ca, "drive2", "drive2 passphrase").await;
    let drive2 = drive2.expect("drive2 enrolls during the flood");
    let served2 = client(&[&address], &drive2).create_data_unit("VOL002").await;

    assert!(served.is_ok(), "drive1 served: {served:?}");
    assert!(served2.is_ok(), "drive2 served: {served2:?}");
    assert!(stats.anonymous() <= limits.anonymous_max as u64, "{stats:?}");
    assert_eq!(stats.refused_total(), 0, "the total was never reached");
    assert!(stats.open() < 300, "{} connections held", stats.open());
}

/// Setup: a listener of 4 connections at most. Action: 4 sockets connect and send nothing (held
/// in their handshake); a fifth connects; then one of the four goes and a client asks `/hello`.
/// Expect: the fifth is closed at once and counted as refused; once a place is free the request
/// is served.
#[tokio::test]
async fn s2_connections_beyond_the_total_are_closed_at_once_and_counted() {
    let ca = TestCa::new("test CA");
    let server = start_server(&ca, ConnectionLimits { connections_max: 4, ..patient() }).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&server.address).await.expect("connect"));
    }
    wait_for("4 connections held", Duration::from_secs(5), || server.stats.open() == 4).await;

    let started = Instant::now();
    let mut fifth = TcpStream::connect(&server.address).await.expect("connect");
    let closed_after = closed(&mut fifth, started, Duration::from_secs(2)).await;
    assert_eq!(server.stats.refused_total(), 1);
    assert_eq!(server.stats.open(), 4);
    held.pop();
    wait_for("a place freed", Duration::from_secs(5), || server.stats.open() == 3).await;
    let connector = connector(&ca, None, &[b"http/1.1"]);
    let mut stream = tls_connect(&connector, &server.address).await;
    assert_eq!(get_on(&mut stream, "/hello").await, "hello");
    assert!(closed_after < Duration::from_secs(1), "closed after {closed_after:?}");
}

/// Setup: a header read time of 300 ms, every other bound long. Action: a client without a
/// certificate completes the handshake and sends nothing; a client with one sends half of a
/// request's headers. Expect: both connections are closed by the server, each after about
/// 300 ms (not before, and well before the other bounds).
#[tokio::test]
async fn s2_a_connection_without_request_headers_is_closed_after_the_header_time() {
    let ca = TestCa::new("test CA");
    let header_read_timeout = Duration::from_millis(300);
    let server = start_server(&ca, ConnectionLimits { header_read_timeout, ..patient() }).await;
    let identity = ca.issue("user:alice", false);

    let started = Instant::now();
    let mut silent =
        tls_connect(&connector(&ca, None, &[b"h2", b"http/1.1"]), &server.address).await;
    let mut partial =
        tls_connect(&connector(&ca, Some(&identity), &[b"http/1.1"]), &server.address).await;
    partial.write_all(b"GET /hello HTTP/1.1\r\nhost: loc").await.expect("half the headers");
    let silent_after = closed(&mut silent, started, Duration::from_secs(5)).await;
    let partial_after = closed(&mut partial, started, Duration::from_secs(5)).await;

    for after in [silent_after, partial_after] {
        assert!(after >= header_read_timeout, "closed after {after:?}");
        assert!(after < Duration::from_secs(3), "closed after {after:?}");
    }
    wait_for("both gone", Duration::from_secs(2), || server.stats.open() == 0).await;
}

/// Setup: a handshake time of 300 ms, every other bound long. Action: a socket connects and
/// sends nothing; another sends the first bytes of a ClientHello and stops. Expect: the server
/// closes both after about 300 ms and no longer counts them.
#[tokio::test]
async fn s2_a_slow_handshake_is_closed_after_the_handshake_time() {
    let ca = TestCa::new("test CA");
    let handshake_timeout = Duration::from_millis(300);
    let server = start_server(&ca, ConnectionLimits { handshake_timeout, ..patient() }).await;

    let started = Instant::now();
    let mut silent = TcpStream::connect(&server.address).await.expect("connect");
    let mut stalled = TcpStream::connect(&server.address).await.expect("connect");
    // A TLS handshake record header announcing 512 bytes, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.expect("a partial hello");
    let silent_after = closed(&mut silent, started, Duration::from_secs(5)).await;
    let stalled_after = closed(&mut stalled, started, Duration::from_secs(5)).await;

    for after in [silent_after, stalled_after] {
        assert!(after >= handshake_timeout, "closed after {after:?}");
        assert!(after < Duration::from_secs(3), "closed after {after:?}");
    }
    wait_for("both gone", Duration::from_secs(2), || server.stats.open() == 0).await;
}

/// Setup: an idle time of 1 s with a certificate, 400 ms without, header time 200 ms. Action:
/// an anonymous client sends a request over HTTP/1.1 and then keeps its connection; a client
/// with a certificate does the same over HTTP/2. Expect: the anonymous connection is closed
/// after its idle time (not the header time), the HTTP/2 one after the longer idle time.
#[tokio::test]
async fn s2_idle_connections_are_closed_after_their_idle_time_http1_and_http2() {
    let ca = TestCa::new("test CA");
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(1),
        anonymous_idle_timeout: Duration::from_millis(400),
        ..patient()
    };
    let server = start_server(&ca, limits.clone()).await;
    let identity = ca.issue("user:alice", false);

    let mut anonymous = tls_connect(&connector(&ca, None, &[b"http/1.1"]), &server.address).await;
    assert_eq!(get_on(&mut anonymous, "/hello").await, "hello");
    let answered = Instant::now();
    let anonymous_after = closed(&mut anonymous, answered, Duration::from_secs(5)).await;
    let h2 = raw_client(&ca.pem, Some((&identity.0, &identity.1)), false);
    let response = h2.get(format!("https://{}/hello", server.address)).send().await.expect("h2");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.expect("body"), "hello");
    let answered = Instant::now();
    wait_for("the HTTP/2 connection closed", Duration::from_secs(5), || server.stats.open() == 0)
        .await;
    let h2_after = answered.elapsed();

    let slack = Duration::from_millis(100);
    assert!(anonymous_after + slack >= limits.anonymous_idle_timeout, "{anonymous_after:?}");
    assert!(anonymous_after < limits.idle_timeout, "{anonymous_after:?}");
    assert!(h2_after + slack >= limits.idle_timeout, "{h2_after:?}");
    assert!(h2_after < Duration::from_secs(4), "{h2_after:?}");
}

/// Setup: two anonymous places; a client with a certificate holds an idle connection; anonymous
/// A has a request in flight (`/slow`), anonymous B is idle. Action: anonymous C connects; the
/// slow request is released; the certified client asks again on its connection. Expect: B is
/// closed to make room for C, A is not cut and gets its answer, the certified connection
/// is untouched and served; one eviction counted.
#[tokio::test]
async fn s2_a_new_anonymous_connection_evicts_the_oldest_idle_one_never_a_busy_or_certified_one() {
    let ca = TestCa::new("test CA");
    let server = start_server(&ca, ConnectionLimits { anonymous_max: 2, ..patient() }).await;
    let identity = ca.issue("agent:drive1", false);
    let anonymous = connector(&ca, None, &[b"http/1.1"]);

    let mut certified =
        tls_connect(&connector(&ca, Some(&identity), &[b"http/1.1"]), &server.address).await;
    assert_eq!(get_on(&mut certified, "/hello").await, "hello");
    let mut a = tls_connect(&anonymous, &server.address).await;
    send_get(&mut a, "/slow").await;
    let mut b = tls_connect(&anonymous, &server.address).await;
    wait_for("A and B settled", Duration::from_secs(5), || server.stats.anonymous() == 2).await;
    let mut c = tls_connect(&anonymous, &server.address).await;
    closed(&mut b, Instant::now(), Duration::from_secs(5)).await;
    assert_eq!(get_on(&mut c, "/hello").await, "hello");
    server.release.notify_one();
    let a_answer = read_answer(&mut a).await;

    assert_eq!(a_answer, "slow", "A was answered");
    assert_eq!(get_on(&mut certified, "/hello").await, "hello");
    assert_eq!((server.stats.evicted_total(), server.stats.refused_total()), (1, 0));
}

/// Setup: a listener that hands connections choosing the link protocol in ALPN to another
/// server. Action: a client without a certificate asks for the link protocol; then a client with
/// one. Expect: the first is closed without reaching the link server; the second is handed off.
#[tokio::test]
async fn s2_only_a_client_with_a_certificate_is_handed_off() {
    let ca = TestCa::new("test CA");
    let server = start_server(&ca, patient()).await;
    let identity = ca.issue("kma-2", false);

    let mut anonymous = tls_connect(&connector(&ca, None, &[LINK_PROTOCOL]), &server.address).await;
    closed(&mut anonymous, Instant::now(), Duration::from_secs(5)).await;
    assert_eq!(server.handed_off.load(Ordering::SeqCst), 0);
    let mut link =
        tls_connect(&connector(&ca, Some(&identity), &[LINK_PROTOCOL]), &server.address).await;
    let mut greeting = String::new();
    link.read_to_string(&mut greeting).await.expect("the link server's bytes");

    assert_eq!(greeting, "linked");
    assert_eq!(server.handed_off.load(Ordering::SeqCst), 1);
}
