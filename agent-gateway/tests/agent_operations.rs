//! The agent operations, lock and failover (SPEC A2–A6, C2, C3, C6), through real TLS sockets on
//! 127.0.0.1 with the client library a drive links.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use agent_gateway::client::enroll;
use agent_gateway::wire::{codes, ErrorBody};
use agent_gateway::{AgentCredentials, ClientError};
use statemachine::{Actor, Command, DataUnitId, Reply};
use support::*;

async fn enrolled(cluster: &Cluster, address: &str) -> AgentCredentials {
    enroll(address, &cluster.ca.pem, AGENT, PASSPHRASE).await.expect("enroll")
}

/// One KMA, drive1 enrolled.
async fn single() -> (Arc<Cluster>, Arc<FakeKma>, String, AgentCredentials) {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    list(&cluster, "kma1", "east", &address, true);
    let credentials = enrolled(&cluster, &address).await;
    (cluster, kma, address, credentials)
}

async fn error_body(response: reqwest::Response) -> (u16, ErrorBody) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("an error body"))
}

fn write_key_body(client: &str, seq: u64, from_bot: bool) -> serde_json::Value {
    serde_json::json!({"from_bot": from_bot, "request_id": {"client": client, "seq": seq}})
}

/// Setup: a pool of keys whose clear values the test made and wrapped itself. Action: create a
/// data unit, ask for its write key from BOT, mount it, ask again. Expectation: the value handed
/// out is the one wrapped for that key ID, the key is protect-and-process and the mount returns
/// it; the second request reuses it; exactly one pool key was drawn.
#[tokio::test]
async fn a2_write_key_hands_out_the_value_that_was_wrapped() {
    let (cluster, _kma, address, credentials) = single().await;
    let client = client(&[&address], &credentials);

    let created = client.create_data_unit("VOL001").await.expect("data unit");
    let written = client.write_key(created.data_unit, true).await.expect("write key");

    assert!(!written.reused);
    assert_eq!(written.data_unit, created.data_unit);
    assert_eq!(written.key.state, "protect-and-process");
    assert_eq!(*written.key.value, cluster.value_of(&written.key.key_id));
    assert!(written.index > created.index);
    assert_eq!(client.min_index(), written.index);
    let mounted = client.keys(created.data_unit).await.expect("keys");
    assert_eq!(mounted.keys, vec![written.key.clone()]);
    let again = client.write_key(created.data_unit, false).await.expect("write key again");
    assert!(again.reused);
    assert_eq!(again.key, written.key);
    assert_eq!(cluster.ready_pool(), POOL_SIZE - 1);
    let disassociated = client.disassociate_on_bot(created.data_unit).await.expect("BOT");
    assert_eq!(disassociated.count, 0, "a protect-and-process key stays in use");
    assert_eq!(client.keys(created.data_unit).await.expect("keys").keys.len(), 1);
}

/// Setup: a data unit without a key. Action: POST write-key from BOT with request ID (aa, 1),
/// then the same request again (a retry after a lost answer), then a new request ID, then the
/// first ID with another body. Expectation: the retry returns the first outcome (same key,
/// `reused: false`) and draws no second pool key, while a new request reports the key as
/// reused; the changed body is refused with reject code 11.
#[tokio::test]
async fn a6_retried_write_with_the_same_request_id_returns_the_first_key() {
    let (cluster, _kma, address, credentials) = single().await;
    let data_unit = client(&[&address], &credentials)
        .create_data_unit("VOL001")
        .await
        .expect("data unit")
        .data_unit;
    let identity = (credentials.certificate_pem.as_str(), credentials.private_key_pem.as_str());
    let http = raw_client(&cluster.ca.pem, Some(identity), false);
    let url = format!("https://{address}/agent/v1/data-units/{data_unit}/write-key");
    let post = |body: serde_json::Value| http.post(&url).json(&body).send();
    let client_id = "00000000000000aa";

    let first: serde_json::Value =
        post(write_key_body(client_id, 1, true)).await.expect("first").json().await.expect("json");
    let retry: serde_json::Value =
        post(write_key_body(client_id, 1, true)).await.expect("retry").json().await.expect("json");

    assert_eq!(first["reused"], false);
    assert_eq!(retry["reused"], false, "the retry got the recorded outcome");
    assert_eq!(retry["key"], first["key"]);
    assert_eq!(cluster.ready_pool(), POOL_SIZE - 1);
    let fresh: serde_json::Value =
        post(write_key_body(client_id, 2, true)).await.expect("fresh").json().await.expect("json");
    assert_eq!(fresh["reused"], true);
    assert_eq!(fresh["key"]["key_id"], first["key"]["key_id"]);
    let changed = post(write_key_body(client_id, 1, false)).await.expect("changed body");
    let (status, body) = error_body(changed).await;
    assert_eq!((status, body.code.as_str(), body.reject), (409, codes::REJECTED, Some(11)));
}

/// Setup: a key written while the KMA was unlocked; then the KMA is locked. Expectation: mount
/// and write-key answer 503 kma_locked, retryable, no key is drawn, and nothing carries a value.
#[tokio::test]
async fn c6_locked_kma_serves_no_key_material() {
    let (cluster, kma, address, credentials) = single().await;
    let client = client(&[&address], &credentials);
    let data_unit = client.create_data_unit("VOL001").await.expect("data unit").data_unit;
    client.write_key(data_unit, true).await.expect("write key");
    let other = client.create_data_unit("VOL002").await.expect("data unit").data_unit;
    kma.locked.store(true, Ordering::SeqCst);
    let identity = (credentials.certificate_pem.as_str(), credentials.private_key_pem.as_str());
    let http = raw_client(&cluster.ca.pem, Some(identity), false);

    let mount = http.get(format!("https://{address}/agent/v1/data-units/{data_unit}/keys"));
    let (status, body) = error_body(mount.send().await.expect("answer")).await;
    assert_eq!((status, body.code.as_str(), body.retryable), (503, codes::KMA_LOCKED, true));
    let write = http
        .post(format!("https://{address}/agent/v1/data-units/{other}/write-key"))
        .json(&write_key_body("00000000000000bb", 1, true));
    let (status, body) = error_body(write.send().await.expect("answer")).await;
    assert_eq!((status, body.code.as_str(), body.retryable), (503, codes::KMA_LOCKED, true));
    assert!(body.help.is_some_and(|help| help.contains("another KMA")));
    assert_eq!(cluster.ready_pool(), POOL_SIZE - 1);
    let Err(ClientError::Unavailable { last, .. }) = client.keys(data_unit).await else {
        panic!("a locked single KMA must leave the client without a key");
    };
    assert!(last.contains(codes::KMA_LOCKED), "{last}");
}

/// A port nobody listens on: connections are refused.
async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// Setup: discovery lists, all at the drive's site, a dead KMA, one that accepts TCP but never
/// answers, a locked one, and (listed as unhealthy, so tried last) a working one; the client is
/// configured with the dead and the locked address only. Expectation: the write key comes from
/// the working KMA after every other one was tried (the silent one until its timeout), and the
/// next read goes straight to the working one carrying the write's index as min_index.
#[tokio::test]
async fn c3_client_fails_over_from_dead_silent_and_locked_kmas() {
    let cluster = Cluster::new();
    let locked = FakeKma::new(&cluster);
    locked.locked.store(true, Ordering::SeqCst);
    let working = FakeKma::new(&cluster);
    let locked_address = start(&locked).await;
    let working_address = start(&working).await;
    let dead = dead_address().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_address = silent.local_addr().expect("address").to_string();
    list(&cluster, "dead", "east", &dead, true);
    list(&cluster, "silent", "east", &silent_address, true);
    list(&cluster, "locked", "east", &locked_address, true);
    list(&cluster, "working", "east", &working_address, false);
    let credentials = enrolled(&cluster, &working_address).await;
    let created = Command::CreateDataUnit { external_tag: "VOL001".into() };
    let Reply::DataUnitCreated { data_unit } = cluster.ok(Actor::Agent(AGENT.into()), created)
    else {
        panic!("a data unit");
    };
    let client = client(&[&dead, &locked_address], &credentials);
    client.discover().await.expect("discovery through the locked KMA");
    let options = fast_options();
    let started = Instant::now();

    let written = client.write_key(data_unit, true).await.expect("write key despite failures");

    let timeout = options.connect_timeout.min(options.request_timeout);
    assert!(started.elapsed() >= timeout, "the silent KMA was tried until its timeout");
    assert_eq!(*written.key.value, cluster.value_of(&written.key.key_id));
    assert!(locked.locked_refusals.load(Ordering::SeqCst) >= 1, "the locked KMA was tried");
    assert_eq!(client.known_kmas()[0], working_address, "failed KMAs rest");
    let mounted = client.keys(data_unit).await.expect("keys");
    assert_eq!(mounted.keys, vec![written.key]);
    let reads = working.min_indexes.lock().expect("reads").clone();
    assert_eq!(reads.last(), Some(&written.index), "the read waited for the write's index");
    drop(silent);
}

/// Setup: a KMA at site west (the only configured address) and one at east, the drive's site.
/// Expectation: after discovery the client knows its site and sends every operation to east.
#[tokio::test]
async fn c2_client_prefers_kmas_of_its_own_site() {
    let cluster = Cluster::new();
    let west = FakeKma::new(&cluster);
    let east = FakeKma::new(&cluster);
    let west_address = start(&west).await;
    let east_address = start(&east).await;
    list(&cluster, "kma-west", "west", &west_address, true);
    list(&cluster, "kma-east", "east", &east_address, true);
    let credentials = enrolled(&cluster, &west_address).await;
    let client = client(&[&west_address], &credentials);
    let west_before = west.proposals.load(Ordering::SeqCst);

    client.discover().await.expect("discovery");
    for tag in ["VOL001", "VOL002", "VOL003"] {
        let data_unit = client.create_data_unit(tag).await.expect("data unit").data_unit;
        client.write_key(data_unit, true).await.expect("write key");
    }

    assert_eq!(client.site().as_deref(), Some("east"));
    assert_eq!(client.known_kmas(), vec![east_address.clone(), west_address.clone()]);
    assert_eq!(east.proposals.load(Ordering::SeqCst), 6);
    assert_eq!(west.proposals.load(Ordering::SeqCst), west_before);
}

/// Setup: three KMAs of the drive's site, all healthy. Action: 30 data units created and read.
/// Expectation: every KMA serves a share of the requests (the client spreads its load, SPEC
/// C3): none gets fewer than a sixth of them.
#[tokio::test]
async fn c3_client_spreads_requests_over_the_kmas_of_its_site() {
    let cluster = Cluster::new();
    let kmas = [FakeKma::new(&cluster), FakeKma::new(&cluster), FakeKma::new(&cluster)];
    let mut addresses = Vec::new();
    for (n, kma) in kmas.iter().enumerate() {
        let address = start(kma).await;
        list(&cluster, &format!("kma{n}"), "east", &address, true);
        addresses.push(address);
    }
    let credentials = enrolled(&cluster, &addresses[0]).await;
    let client = client(&[&addresses[0]], &credentials);
    client.discover().await.expect("discovery");
    let before: Vec<usize> = kmas.iter().map(|kma| kma.proposals.load(Ordering::SeqCst)).collect();

    for n in 0..30 {
        client.create_data_unit(&format!("VOL{n:03}")).await.expect("data unit");
    }

    let served: Vec<usize> = kmas
        .iter()
        .zip(&before)
        .map(|(kma, before)| kma.proposals.load(Ordering::SeqCst) - before)
        .collect();
    assert_eq!(served.iter().sum::<usize>(), 30, "{served:?}");
    assert!(served.iter().all(|count| *count >= 5), "load is not spread: {served:?}");
}

/// Setup: a KMA listed in discovery at an address this drive cannot use. Action: a client with
/// discovery turned off makes requests through its one configured KMA. Expectation: it never
/// learns the discovered address; every request goes to the configured one.
#[tokio::test]
async fn c3_discovery_off_keeps_the_configured_addresses() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    list(&cluster, "behind-nat", "east", "127.0.0.1:1", true);
    let credentials = enrolled(&cluster, &address).await;
    let options = agent_gateway::ClientOptions { discovery: false, ..fast_options() };
    let client = agent_gateway::AgentClient::from_credentials(
        std::slice::from_ref(&address),
        &credentials,
        options,
    )
    .expect("client");

    for tag in ["VOL001", "VOL002"] {
        client.create_data_unit(tag).await.expect("data unit");
    }

    assert_eq!(client.known_kmas(), vec![address]);
}

/// Setup: two KMAs, the first without a majority (proposals fail, retryable). Expectation: the
/// gateway answers 503 unavailable, retryable; the client's write succeeds on the other KMA with
/// the same request ID (one data unit is created, not two).
#[tokio::test]
async fn c3_no_majority_is_retryable_and_the_client_fails_over() {
    let cluster = Cluster::new();
    let cut_off = FakeKma::new(&cluster);
    cut_off.partitioned.store(true, Ordering::SeqCst);
    let majority = FakeKma::new(&cluster);
    let cut_off_address = start(&cut_off).await;
    let majority_address = start(&majority).await;
    list(&cluster, "cut-off", "east", &cut_off_address, true);
    list(&cluster, "majority", "east", &majority_address, false);
    let credentials = enrolled(&cluster, &majority_address).await;
    let identity = (credentials.certificate_pem.as_str(), credentials.private_key_pem.as_str());
    let http = raw_client(&cluster.ca.pem, Some(identity), false);
    let body = serde_json::json!({
        "external_tag": "VOL001",
        "request_id": {"client": "00000000000000cc", "seq": 1}
    });
    let direct = http.post(format!("https://{cut_off_address}/agent/v1/data-units")).json(&body);
    let (status, error) = error_body(direct.send().await.expect("answer")).await;
    assert_eq!((status, error.code.as_str(), error.retryable), (503, codes::UNAVAILABLE, true));

    let client = client(&[&cut_off_address], &credentials);
    let created = client.create_data_unit("VOL002").await.expect("created elsewhere");

    assert!(cut_off.proposals.load(Ordering::SeqCst) >= 2, "the cut-off KMA was tried");
    let state = cluster.state.lock().expect("state");
    assert_eq!(state.data_units_by_tag("VOL002"), vec![created.data_unit]);
    assert!(state.data_units_by_tag("VOL001").is_empty());
}

/// Setup: a Ready pool key that no data unit uses (as after a restore). Action: the drive asks
/// for it by ID with an external tag, then again. Expectation: the first request associates it
/// with a new data unit of that tag and returns its wrapped value, Process-only (a recovered key
/// never encrypts again); the second returns it without another proposal.
#[tokio::test]
async fn a5_key_by_id_claims_an_unassigned_pool_key() {
    let (cluster, kma, address, credentials) = single().await;
    let client = client(&[&address], &credentials);
    let (key_id, value) = *cluster.values.last().expect("pool keys");

    let found = client.key(key_id, None, "VOL 9/R").await.expect("key by ID");

    assert_eq!(*found.key.value, value);
    assert_eq!(found.key.state, "process-only");
    let data_unit = found.data_unit.expect("a data unit was created");
    let tagged = cluster.state.lock().expect("state").data_units_by_tag("VOL 9/R");
    assert_eq!(tagged, vec![data_unit]);
    let proposals = kma.proposals.load(Ordering::SeqCst);
    let again = client.key(key_id, Some(data_unit), "").await.expect("key by ID again");
    assert_eq!(again.key, found.key);
    assert_eq!(kma.proposals.load(Ordering::SeqCst), proposals);
}

/// Expectation: the same listener speaks HTTP/2 (ALPN h2) and HTTP/1.1, and a malformed data
/// unit ID is a 400 with the protocol's error body rather than a bare status.
#[tokio::test]
async fn a2_listener_speaks_http2_and_http1() {
    let (cluster, _kma, address, credentials) = single().await;
    let url = format!("https://{address}/agent/v1/discovery");
    for (http1_only, version) in
        [(false, reqwest::Version::HTTP_2), (true, reqwest::Version::HTTP_11)]
    {
        let http = raw_client(&cluster.ca.pem, None, http1_only);
        let response = http.get(&url).send().await.expect("discovery");
        assert_eq!(response.version(), version);
        let discovery: serde_json::Value = response.json().await.expect("json");
        assert_eq!(discovery["cluster_id"], "00c1a55e70000001");
        assert_eq!(discovery["kmas"][0]["service_address"], address.as_str());
    }
    let identity = (credentials.certificate_pem.as_str(), credentials.private_key_pem.as_str());
    let http = raw_client(&cluster.ca.pem, Some(identity), true);
    let bad = http.get(format!("https://{address}/agent/v1/data-units/xyz/keys")).send();
    let (status, body) = error_body(bad.await.expect("answer")).await;
    assert_eq!((status, body.code.as_str()), (400, codes::BAD_REQUEST));
    let unknown = DataUnitId { cluster_id: CLUSTER, serial: 999 };
    let missing = http.get(format!("https://{address}/agent/v1/data-units/{unknown}/keys")).send();
    let (status, body) = error_body(missing.await.expect("answer")).await;
    assert_eq!((status, body.code.as_str(), body.reject), (404, codes::REJECTED, Some(45)));
}

/// Setup: a KMS 1.x key imported into a key group drive1 may read (its policy allows import).
/// Action: the drive asks for it by ID for tape A (tagged, no data unit yet), for tape A again,
/// then for tape B. Expect: tapes A and B each get a data unit associated with the key; the
/// second read of A proposes nothing and names A's data unit; the key's destroy preview lists
/// both tapes (the ripple effect the previews exist for). (SPEC A5, O9; issue 18 point 5)
#[tokio::test]
async fn a5_every_tape_that_reads_a_1x_key_by_id_is_associated() {
    use security_core::key_wrap::{check_value, wrap_key, KeyMaterial};
    let (cluster, kma, address, credentials) = single().await;
    let policy = Command::CreateKeyPolicy {
        name: "legacy".into(),
        encryption_period_ms: 3_600_000,
        cryptoperiod_ms: 7_200_000,
        allow_export: false,
        allow_import: true,
    };
    cluster.ok(user("co"), policy);
    let group = Command::CreateKeyGroup { name: "legacy".into(), policy: "legacy".into() };
    cluster.ok(user("co"), group);
    let grant = Command::AssignKeyGroupToAgent { agent: AGENT.into(), group: "legacy".into() };
    cluster.ok(user("co"), grant);
    let (key_id, value) = (statemachine::KeyId([0x1a; 30]), [0x5e; 32]);
    let material = KeyMaterial::from_bytes(&value);
    let legacy = statemachine::command::Legacy1xKey {
        id: key_id,
        material: wrap_key(&cluster.master, CLUSTER, &key_id, &material),
        check_value: check_value(&material),
        description: String::new(),
    };
    let import = Command::Import1xKeys { group: "legacy".into(), keys: vec![legacy] };
    cluster.ok(user("co"), import);

    let client = client(&[&address], &credentials);
    let tape_a = client.key(key_id, None, "TAPE-A").await.expect("tape A");
    let unit_a = tape_a.data_unit.expect("tape A's data unit");
    assert_eq!(*tape_a.key.value, value);
    let proposals = kma.proposals.load(Ordering::SeqCst);
    let again = client.key(key_id, None, "TAPE-A").await.expect("tape A again");
    assert_eq!(kma.proposals.load(Ordering::SeqCst), proposals, "tape A is known by its tag");
    assert_eq!(again.data_unit, Some(unit_a));
    let tape_b = client.key(key_id, None, "TAPE-B").await.expect("tape B");
    let unit_b = tape_b.data_unit.expect("tape B's data unit");
    assert_ne!(unit_a, unit_b);
    let state = cluster.state.lock().expect("state");
    assert_eq!(state.data_units_by_tag("TAPE-B"), vec![unit_b]);
    let preview = state.key_destroy_preview(&[key_id]).expect("preview");
    assert_eq!(preview.data_units, vec![unit_a, unit_b]);
}
