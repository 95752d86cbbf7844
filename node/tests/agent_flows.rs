//! The seed's drive flows against running `kma` processes, with a key policy of seconds (SPEC
//! A2–A4, O4, O6), and a KMA cut off from the majority (SPEC "Availability trade-off").
//! Management ports 17600-17699 (service ports 500 above).

mod support;

use std::time::Duration;

use agent_gateway::{AgentClient, ClientOptions};
use statemachine::DataUnitState;
use support::agents::{ca_pem, catalogue, raw_drive, service, write_key_for};
use support::{no_change, Cluster};

const SECOND_MS: u64 = 1_000;

async fn enrolled_drive(cluster: &Cluster, base: u16, addresses: &[String]) -> AgentClient {
    let credentials = agent_gateway::client::enroll(
        &service(base, 1),
        &ca_pem(cluster),
        "drive1",
        "drive-one-passphrase",
    )
    .await
    .expect("enrollment");
    AgentClient::from_credentials(addresses, &credentials, ClientOptions::default())
        .expect("client")
}

/// Setup: three KMAs, policy "tapes" with a 3 s encryption period and a 60 s cryptoperiod.
/// Action (seed ch.7 Example 1, StorageTek drive): write from BOT, append at once; after the
/// encryption period kma3 is stopped and its data unit read from its data dir; append, read.
/// Expect: the first append reuses the key (still protect-and-process); after the period the
/// data unit needs a rekey (SPEC O6), the append gets a new key and the old one is
/// process-only; the read returns both keys, each with the value handed out for the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_example_1_append_after_the_encryption_period_rekeys() {
    const BASE: u16 = 17600;
    let mut cluster = Cluster::start(3, BASE, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (3 * SECOND_MS, 60 * SECOND_MS)).await;
    let addresses: Vec<String> = (1..=3).map(|n| service(BASE, n)).collect();
    let drive = enrolled_drive(&cluster, BASE, &addresses).await;

    let unit = drive.create_data_unit("VOL001").await.expect("data unit").data_unit;
    drive.disassociate_on_bot(unit).await.expect("write from BOT disassociates (none yet)");
    let first = write_key_for(&drive, unit, true).await;
    assert_eq!(first.key.state, "protect-and-process");
    let append = write_key_for(&drive, unit, false).await;
    assert!(append.reused, "an append within the encryption period reuses the key");
    assert_eq!(append.key.key_id, first.key.key_id);

    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let stopped = persisted_data_unit_state(&mut cluster, 2, unit).await;
    assert_eq!(stopped, DataUnitState::NeedsRekey, "its only key can no longer encrypt");
    let rekeyed = write_key_for(&drive, unit, false).await;
    assert!(!rekeyed.reused, "after the encryption period an append gets a new key");
    assert_ne!(rekeyed.key.key_id, first.key.key_id);

    let keys = drive.keys(unit).await.expect("keys of the data unit");
    assert_eq!(keys.keys.len(), 2, "{keys:?}");
    let old = keys.keys.iter().find(|k| k.key_id == first.key.key_id).expect("old key");
    let new = keys.keys.iter().find(|k| k.key_id == rekeyed.key.key_id).expect("new key");
    assert_eq!(old.state, "process-only");
    assert_eq!(new.state, "protect-and-process");
    assert_eq!(*old.value, *first.key.value);
    assert_eq!(*new.value, *rekeyed.key.value);

    // A write from BOT (StorageTek): keys that can no longer encrypt stop being sent.
    drive.disassociate_on_bot(unit).await.expect("disassociate");
    let after = drive.keys(unit).await.expect("keys");
    assert_eq!(after.keys.len(), 1, "only the protect-and-process key remains: {after:?}");
    assert_eq!(after.keys[0].key_id, rekeyed.key.key_id);
}

/// Stops KMA `index` cleanly, rebuilds its state from its data dir as a restart would (the
/// latest snapshot, then the committed log replayed) and derives `unit`'s state now.
async fn persisted_data_unit_state(
    cluster: &mut Cluster,
    index: usize,
    unit: statemachine::DataUnitId,
) -> DataUnitState {
    cluster.stop(index).await;
    let raft_dir = cluster.nodes[index].data_dir.join("raft");
    let (_dir, mut log, mut state_machine) = raft_storage::open_stores(&raft_dir).expect("open");
    openraft::StorageHelper::new(&mut log, &mut state_machine)
        .get_initial_state()
        .await
        .expect("replay of the committed log");
    let handle = state_machine.state();
    let state = handle.read().await;
    let record = state.data_unit(&unit).expect("the data unit is in kma3's state");
    state.data_unit_state_at(record, node::transport::wall_clock_ms())
}

/// Setup: three KMAs, policy "tapes" with a 2 s encryption period. Action (seed appendix, an
/// LTO4 drive): write from BOT without disassociating, write again after a reposition within
/// the period, then from BOT after it; read each record by key ID on demand. Expect: the write
/// within the period gets the current key; after the period a new one; both stay associated
/// (no disassociation), and a key fetched by ID has the value handed out for its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_lto4_keys_on_demand_and_no_disassociation() {
    const BASE: u16 = 17620;
    let cluster = Cluster::start(3, BASE, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (2 * SECOND_MS, 60 * SECOND_MS)).await;
    let addresses: Vec<String> = (1..=3).map(|n| service(BASE, n)).collect();
    let drive = enrolled_drive(&cluster, BASE, &addresses).await;

    let unit = drive.create_data_unit("LTO001").await.expect("data unit").data_unit;
    let first = write_key_for(&drive, unit, true).await;
    let repositioned = write_key_for(&drive, unit, false).await;
    assert_eq!(repositioned.key.key_id, first.key.key_id, "still protect-and-process");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let second = write_key_for(&drive, unit, true).await;
    assert_ne!(second.key.key_id, first.key.key_id, "a new key after the encryption period");

    let keys = drive.keys(unit).await.expect("keys");
    assert_eq!(keys.keys.len(), 2, "no disassociation on a write from BOT: {keys:?}");
    let on_demand = drive.key(first.key.key_id, Some(unit), "LTO001").await.expect("key by ID");
    assert_eq!(*on_demand.key.value, *first.key.value);
    assert_eq!(on_demand.key.state, "process-only");
}

/// Sends SIGSTOP or SIGCONT to a running KMA.
fn signal(cluster: &Cluster, index: usize, signal: &str) {
    let pid = cluster.nodes[index].child.as_ref().and_then(tokio::process::Child::id);
    let pid = pid.expect("running").to_string();
    let status = std::process::Command::new("kill").args([signal, &pid]).status();
    assert!(status.expect("kill runs").success());
}

/// Setup: three KMAs, a drive with a key for data unit VOL001 written through kma3. Action:
/// kma1 and kma2 are frozen (SIGSTOP): kma3 is cut off from the majority. Expect: kma3 still
/// serves the existing key from its local state; a new data unit is refused with a retryable
/// error; once the others are back, the same request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_a_kma_cut_off_from_the_majority_serves_existing_keys_and_refuses_new_ones() {
    const BASE: u16 = 17650;
    let cluster = Cluster::start(3, BASE, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (60 * SECOND_MS, 120 * SECOND_MS)).await;
    let only_kma3 = vec![service(BASE, 3)];
    let drive = enrolled_drive(&cluster, BASE, &only_kma3).await;
    let unit = drive.create_data_unit("VOL001").await.expect("data unit").data_unit;
    let written = write_key_for(&drive, unit, true).await;
    drive.keys(unit).await.expect("kma3 has applied the write");

    signal(&cluster, 0, "-STOP");
    signal(&cluster, 1, "-STOP");
    let read = drive.keys(unit).await;
    let new = drive.create_data_unit("VOL002").await;
    signal(&cluster, 0, "-CONT");
    signal(&cluster, 1, "-CONT");

    let read = read.expect("the cut-off KMA serves an existing key");
    assert_eq!(*read.keys[0].value, *written.key.value);
    let refused = new.expect_err("no majority: no new data unit");
    let message = refused.to_string();
    assert!(message.contains("repeating it is safe") || message.contains("retry"), "{message}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match drive.create_data_unit("VOL002").await {
            Ok(_) => break,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "after the cut: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn post_json(
    client: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> serde_json::Value {
    let response = client.post(url).json(&body).send().await.expect("reachable");
    let status = response.status();
    let answer: serde_json::Value = response.json().await.expect("json");
    assert!(status.is_success(), "{status}: {answer}");
    answer
}

/// Setup: three KMAs, a drive enrolled and the pool filled. Action: the drive creates a data
/// unit and asks for its write key with fixed request IDs, each request sent to kma1 and then,
/// as a retry after a lost answer would be, to kma2 (a follower or the leader) with the same
/// body. Expect: the retry returns the same data unit and the same key as the first answer,
/// and the data unit has exactly one key: a retry never assigns a second key (SPEC A6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_a_retry_on_another_kma_with_the_same_request_id_assigns_no_second_key() {
    const BASE: u16 = 17670;
    let cluster = Cluster::start(3, BASE, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (60 * SECOND_MS, 120 * SECOND_MS)).await;
    let addresses: Vec<String> = (1..=3).map(|n| service(BASE, n)).collect();
    let credentials = agent_gateway::client::enroll(
        &service(BASE, 1),
        &ca_pem(&cluster),
        "drive1",
        "drive-one-passphrase",
    )
    .await
    .expect("enrollment");
    let drive = AgentClient::from_credentials(&addresses, &credentials, ClientOptions::default())
        .expect("client");
    let warm = drive.create_data_unit("WARM01").await.expect("data unit").data_unit;
    let warmed = write_key_for(&drive, warm, true).await;
    let raw = raw_drive(&credentials);
    let min_index = drive.min_index().max(warmed.index);
    let url =
        |n: u16, path: &str| format!("https://{}{path}?min_index={min_index}", service(BASE, n));

    let create = serde_json::json!({
        "external_tag": "VOL777",
        "request_id": {"client": "00000000000a6a6a", "seq": 1},
    });
    let first = post_json(&raw, url(1, "/agent/v1/data-units"), create.clone()).await;
    let again = post_json(&raw, url(2, "/agent/v1/data-units"), create).await;
    assert_eq!(first["data_unit"], again["data_unit"], "one data unit for one request ID");
    let unit = first["data_unit"].as_str().expect("data unit ID").to_owned();

    let write = serde_json::json!({
        "from_bot": true,
        "request_id": {"client": "00000000000a6a6a", "seq": 2},
    });
    let path = format!("/agent/v1/data-units/{unit}/write-key");
    let first = post_json(&raw, url(1, &path), write.clone()).await;
    let again = post_json(&raw, url(2, &path), write).await;
    assert_eq!(first["key"]["key_id"], again["key"]["key_id"], "one key for one request ID");
    assert_eq!(first["key"]["value"], again["key"]["value"]);

    let index = again["index"].as_u64().expect("index");
    let read =
        format!("https://{}/agent/v1/data-units/{unit}/keys?min_index={index}", service(BASE, 3));
    let keys: serde_json::Value =
        raw.get(read).send().await.expect("reachable").json().await.expect("json");
    let keys = keys["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "the retry assigned no second key: {keys:?}");
    assert_eq!(keys[0]["key_id"], first["key"]["key_id"]);
}

/// Pool keys (ready + generated) as kma1 reports them.
async fn pool_size(cluster: &Cluster) -> usize {
    let status = cluster.admin.status(&cluster.nodes[0].address).await.expect("status");
    status.key_pool_ready + status.key_pool_generated
}

/// Polls the pool for `seconds`: every reading within `max`; returns the last one.
async fn watch_pool(cluster: &Cluster, seconds: u64, max: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    let mut size = pool_size(cluster).await;
    while std::time::Instant::now() < deadline {
        assert!(size <= max, "the pool grew past its high water mark {max}: {size}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        size = pool_size(cluster).await;
    }
    size
}

/// Setup: three KMAs, a drive; once the pool has stopped growing at S keys, its water marks are
/// set to S+10 and S+9,000, then, once full at P, to P+10 and P+30. Action: wait for each fill;
/// take 15 keys (the pool at P+15, above the low mark); wait 2 s; take 10 more (at P+5, below
/// it); wait. Expect: the first refill, longer than one leader tick, goes on to exactly S+9,000;
/// the pool fills to exactly P+30; at P+15 no refill starts (four leader ticks); below the low
/// mark a refill brings it back to P+30; no reading ever exceeds the high mark (SPEC O5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o5_the_pool_refills_from_below_its_low_mark_to_its_high_one_and_never_above() {
    const BASE: u16 = 17690;
    let cluster = Cluster::start(3, BASE, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (60 * SECOND_MS, 120 * SECOND_MS)).await;
    let mut stable = pool_size(&cluster).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = pool_size(&cluster).await;
        if now == stable && now > 0 {
            break;
        }
        stable = now;
    }
    // A refill longer than one leader tick (8 commands of 1,024 keys) goes on to the end.
    let far = stable + 9_000;
    let limits = statemachine::cluster::KeyPoolLimits {
        low_water: stable as u32 + 10,
        high_water: far as u32,
    };
    let command = statemachine::Command::SetKeyPoolLimits(limits);
    support::agents::ok(&cluster.admin, &address, command, None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pool_size(&cluster).await < far {
        assert!(std::time::Instant::now() < deadline, "the refill stopped short of {far}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(watch_pool(&cluster, 1, far).await, far, "refilled to the high water mark");
    let stable = far;

    let (low, high) = (stable + 10, stable + 30);
    let limits =
        statemachine::cluster::KeyPoolLimits { low_water: low as u32, high_water: high as u32 };
    support::agents::ok(
        &cluster.admin,
        &address,
        statemachine::Command::SetKeyPoolLimits(limits),
        None,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pool_size(&cluster).await < high {
        assert!(std::time::Instant::now() < deadline, "the pool never filled to {high}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(watch_pool(&cluster, 1, high).await, high, "filled to the high water mark");
    let addresses: Vec<String> = (1..=3).map(|n| service(BASE, n)).collect();
    let drive = enrolled_drive(&cluster, BASE, &addresses).await;
    let mut taken = 0;
    for (count, expected) in [(15, high - 15), (10, high)] {
        for _ in 0..count {
            let unit = drive.create_data_unit(&format!("P{taken:03}")).await.expect("data unit");
            write_key_for(&drive, unit.data_unit, true).await;
            taken += 1;
        }
        assert_eq!(watch_pool(&cluster, 2, high).await, expected, "after {taken} keys taken");
    }
}
