//! The seed's drive flows against running `kma` processes, with a key policy of seconds (SPEC
//! A2–A4, O4, O6), and a KMA cut off from the majority (SPEC "Availability trade-off").

mod support;

use std::time::Duration;

use agent_gateway::{AgentClient, ClientOptions};
use statemachine::cluster::KeyPoolLimits;
use statemachine::{DataUnitId, DataUnitState, KeyId};
use support::agents::{ca_pem, catalogue, raw_drive, write_key_for};
use support::{done_if, holds_for, no_change, wait_until, Cluster};

const SECOND_MS: u64 = 1_000;

/// `drive1` enrolled at kma1, with a client that uses `addresses`.
async fn enrolled_drive(cluster: &Cluster, addresses: &[String]) -> AgentClient {
    let credentials = agent_gateway::client::enroll(
        &cluster.nodes[0].service,
        &ca_pem(cluster),
        "drive1",
        "drive-one-passphrase",
    )
    .await
    .expect("enrollment");
    AgentClient::from_credentials(addresses, &credentials, ClientOptions::default())
        .expect("client")
}

/// Waits until the drive, reading `unit`'s keys, sees `key` process-only: its encryption
/// period is over (key states are read at the KMA's clock, SPEC O4).
async fn wait_process_only(drive: &AgentClient, unit: DataUnitId, key: KeyId) {
    let what = format!("key {key:?} to become process-only");
    wait_until(Duration::from_secs(30), &what, async || {
        let keys = drive.keys(unit).await.map_err(|error| error.to_string())?;
        let state = keys.keys.iter().find(|k| k.key_id == key).map(|k| k.state.clone());
        done_if(state.as_deref() == Some("process-only"), state).map_err(|s| format!("{s:?}"))
    })
    .await;
}

/// Setup: three KMAs, policy "tapes" with a 3 s encryption period and a 60 s cryptoperiod.
/// Action (seed ch.7 Example 1, StorageTek drive): write from BOT, append at once; after the
/// encryption period kma3 is stopped and its data unit read from its data dir; append, read.
/// Expect: the first append reuses the key (still protect-and-process); after the period the
/// data unit needs a rekey (SPEC O6), the append gets a new key and the old one is
/// process-only; the read returns both keys, each with the value handed out for the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_example_1_append_after_the_encryption_period_rekeys() {
    let mut cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (3 * SECOND_MS, 60 * SECOND_MS)).await;
    let drive = enrolled_drive(&cluster, &cluster.services()).await;

    let unit = drive.create_data_unit("VOL001").await.expect("data unit").data_unit;
    drive.disassociate_on_bot(unit).await.expect("write from BOT disassociates (none yet)");
    let first = write_key_for(&drive, unit, true).await;
    assert_eq!(first.key.state, "protect-and-process");
    let append = write_key_for(&drive, unit, false).await;
    assert!(append.reused, "an append within the encryption period reuses the key");
    assert_eq!(append.key.key_id, first.key.key_id);

    wait_process_only(&drive, unit, first.key.key_id).await;
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
    let cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (2 * SECOND_MS, 60 * SECOND_MS)).await;
    let drive = enrolled_drive(&cluster, &cluster.services()).await;

    let unit = drive.create_data_unit("LTO001").await.expect("data unit").data_unit;
    let first = write_key_for(&drive, unit, true).await;
    let repositioned = write_key_for(&drive, unit, false).await;
    assert_eq!(repositioned.key.key_id, first.key.key_id, "still protect-and-process");
    wait_process_only(&drive, unit, first.key.key_id).await;
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
    let cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (60 * SECOND_MS, 120 * SECOND_MS)).await;
    let only_kma3 = vec![cluster.nodes[2].service.clone()];
    let drive = enrolled_drive(&cluster, &only_kma3).await;
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
    wait_until(Duration::from_secs(30), "a new data unit once the others are back", async || {
        drive.create_data_unit("VOL002").await.map_err(|error| error.to_string())
    })
    .await;
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
    let cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (60 * SECOND_MS, 120 * SECOND_MS)).await;
    let addresses = cluster.services();
    let credentials = agent_gateway::client::enroll(
        &addresses[0],
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
    let url = |n: usize, path: &str| {
        format!("https://{}{path}?min_index={min_index}", cluster.nodes[n - 1].service)
    };

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
    let kma3 = &cluster.nodes[2].service;
    let read = format!("https://{kma3}/agent/v1/data-units/{unit}/keys?min_index={index}");
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

/// The leader looks at the pool twice a second (`node::leader::run`). "No refill starts" is
/// watched over four of its ticks; a full pool over two, to see it stay at its high mark.
const FOUR_LEADER_TICKS: Duration = Duration::from_secs(2);
const TWO_LEADER_TICKS: Duration = Duration::from_secs(1);

/// Waits until the pool holds exactly `size` keys, no reading above `high`; then watches it
/// stay there for `period` (the refill is over, or none starts).
async fn pool_settles_at(cluster: &Cluster, size: usize, high: usize, period: Duration) {
    let within = |now: usize| {
        assert!(now <= high, "the pool grew past its high water mark {high}: {now}");
        done_if(now == size, now)
    };
    let what = format!("the pool to hold {size} keys");
    wait_until(Duration::from_secs(30), &what, async || within(pool_size(cluster).await)).await;
    let what = format!("the pool staying at {size} keys");
    holds_for(period, &what, async || within(pool_size(cluster).await)).await;
}

async fn set_pool_limits(cluster: &Cluster, low: usize, high: usize) {
    let limits = KeyPoolLimits { low_water: low as u32, high_water: high as u32 };
    let command = statemachine::Command::SetKeyPoolLimits(limits);
    support::agents::ok(&cluster.admin, &cluster.nodes[0].address, command, None).await;
}

/// Setup: three KMAs, a drive; once the pool has stopped growing at S keys, its water marks are
/// set to S+10 and S+9,000, then, once full at P, to P+10 and P+30. Action: wait for each fill;
/// take 15 keys (the pool at P+15, above the low mark); watch four leader ticks; take 10 more
/// (at P+5, below it). Expect: the first refill, longer than one leader tick, goes on to
/// exactly S+9,000; the pool fills to exactly P+30; at P+15 no refill starts (four leader
/// ticks); below the low mark a refill brings it back to P+30; no reading ever exceeds the
/// high mark (SPEC O5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o5_the_pool_refills_from_below_its_low_mark_to_its_high_one_and_never_above() {
    let cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (60 * SECOND_MS, 120 * SECOND_MS)).await;
    // The catalogue's marks are 20 and 40: a pool at 40 or more gets no refill (one filled
    // under the default marks stays above). Two equal readings there: it has stopped.
    let mut last = None;
    let stable = wait_until(Duration::from_secs(30), "the pool to stop growing", async || {
        let size = pool_size(&cluster).await;
        let stopped = size >= 40 && last == Some(size);
        last = Some(size);
        done_if(stopped, size)
    })
    .await;
    // A refill longer than one leader tick (8 commands of 1,024 keys) goes on to the end.
    let far = stable + 9_000;
    set_pool_limits(&cluster, stable + 10, far).await;
    pool_settles_at(&cluster, far, far, TWO_LEADER_TICKS).await;

    let (low, high) = (far + 10, far + 30);
    set_pool_limits(&cluster, low, high).await;
    pool_settles_at(&cluster, high, high, TWO_LEADER_TICKS).await;
    let drive = enrolled_drive(&cluster, &cluster.services()).await;
    let mut taken = 0;
    for (count, expected, watched) in
        [(15, high - 15, FOUR_LEADER_TICKS), (10, high, TWO_LEADER_TICKS)]
    {
        for _ in 0..count {
            let unit = drive.create_data_unit(&format!("P{taken:03}")).await.expect("data unit");
            write_key_for(&drive, unit.data_unit, true).await;
            taken += 1;
        }
        pool_settles_at(&cluster, expected, high, watched).await;
    }
}

/// Where a KMA listens for KMIP: a loopback port free when its `kma.toml` is written.
fn with_kmip(config: &mut node::config::NodeConfig) {
    let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    config.kmip_listen = Some(free.expect("a free loopback port"));
}

type KmipStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A KMIP client's TLS connection to KMA `index` with `identity` (certificate, key).
async fn kmip_connect(cluster: &Cluster, index: usize, identity: (&str, &str)) -> KmipStream {
    let config = node::config::NodeConfig::load(&cluster.nodes[index].data_dir).expect("config");
    let address = config.kmip_listen.expect("a KMIP listener").to_string();
    let ca = ca_pem(cluster);
    let connected = agent_gateway::kmip::client::connect(&address, &ca, identity).await;
    connected.expect("a TLS connection to the KMIP port")
}

/// One KMIP 1.4 message; each batch item's payload or failure.
async fn kmip_batch(
    stream: &mut KmipStream,
    batch_order: bool,
    operations: Vec<(kmip::enums::Operation, Vec<kmip::Item>)>,
) -> Vec<Result<kmip::Item, kmip::Failure>> {
    let version = kmip::ProtocolVersion::V1_4;
    let request = kmip::client::request(version, batch_order, operations).encode().expect("encode");
    let response = agent_gateway::kmip::client::exchange(stream, &request, Duration::from_secs(30))
        .await
        .expect("a KMIP response");
    let items = kmip::client::batch_items(&response);
    items.into_iter().map(|item| kmip::client::outcome(item).cloned()).collect()
}

/// A tape's Application Specific Information as a library derives it: `LIBRARY-LTO` and 64
/// upper-case hex characters.
fn tape_asi(tape: u64) -> kmip::Value {
    kmip::Value::Structure(vec![
        kmip::Item::text(kmip::tag::APPLICATION_NAMESPACE, "LIBRARY-LTO"),
        kmip::Item::text(kmip::tag::APPLICATION_DATA, format!("{tape:064X}")),
    ])
}

/// A Locate payload: the keys whose Application Specific Information is `asi`.
fn locate_by_asi(asi: kmip::Value) -> Vec<kmip::Item> {
    let asi = kmip::attribute::Attribute::new("Application Specific Information", asi);
    vec![kmip::Item::structure(kmip::tag::TEMPLATE_ATTRIBUTE, vec![asi.to_pair()])]
}

/// Agent `library1` in group `tapes`, enrolled as a KMIP client by the officer (an Operator)
/// through the management API from its certificate request: the admin client, the library's
/// certificate and private key.
async fn enrolled_library(
    cluster: &Cluster,
    address: &str,
) -> (admin_api::client::AdminClient, String, String) {
    let agent = statemachine::Command::CreateAgent {
        id: "library1".into(),
        site: "east".into(),
        passphrase_verifier: Vec::new(),
    };
    support::agents::ok(&cluster.admin, address, agent, Some("library-one-passphrase")).await;
    let assign = statemachine::Command::AssignKeyGroupToAgent {
        agent: "library1".into(),
        group: "tapes".into(),
    };
    support::agents::ok(&cluster.admin, address, assign, None).await;
    let admin = support::admin_api_client(cluster, address).await;
    let (csr_pem, key_pem) = admin_api::client::signing_request().expect("a CSR");
    let enrolled: admin_api::api::KmipCertificate = admin
        .send(
            reqwest::Method::POST,
            "/v1/agents/library1/kmip-enrollment",
            Some(&admin_api::api::KmipEnrollment { csr_pem }),
        )
        .await
        .expect("an Operator enrolls the library");
    (admin, enrolled.certificate_pem, key_pem.to_string())
}

/// Setup: three KMAs, each with a KMIP listener; group `tapes`; library1, a KMIP client an
/// Operator enrolled through the management API from its certificate request. Action: on
/// kma1, TL-M-2's first write of tape XXA012A1 (Create with its barcode and Application
/// Specific Information, Get of the placeholder, one ordered batch); at once the library fails
/// over to a follower and plays TL-M-3's read (Locate by the ASI, Get of the placeholder);
/// then Locates a tape no one wrote there. Expect: the follower finds the same key and value
/// on the first try (a miss is confirmed through the log, never answered from a lagging
/// state), and answers an empty Locate for the unknown tape; the barcode is the data unit's
/// external tag in `data-unit list --tag`. (SPEC U5, O5, C1: no key handed out before it is
/// committed, none missed on failover)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u5_a_tape_library_writes_on_one_kma_and_reads_the_tape_back_on_another() {
    use kmip::attribute::{name_value, Attribute};
    use kmip::enums::Operation;
    use kmip::{tag, Item, Value};

    let cluster = Cluster::start(3, with_kmip).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (30 * SECOND_MS, 600 * SECOND_MS)).await;
    let (admin, cert_pem, key_pem) = enrolled_library(&cluster, &address).await;
    let identity = (cert_pem.as_str(), key_pem.as_str());

    let barcode =
        name_value(tag::ALTERNATIVE_NAME_VALUE, tag::ALTERNATIVE_NAME_TYPE, "XXA012A1", 1);
    let template = vec![
        Attribute::new("Cryptographic Algorithm", Value::Enumeration(3)).to_pair(),
        Attribute::new("Cryptographic Length", Value::Integer(256)).to_pair(),
        Attribute::new("Cryptographic Usage Mask", Value::Integer(12)).to_pair(),
        Attribute::new("Application Specific Information", tape_asi(0x1234_5678)).to_pair(),
        Attribute::new("Alternative Name", barcode).to_pair(),
    ];
    let create = vec![
        Item::enumeration(tag::OBJECT_TYPE, 2),
        Item::structure(tag::TEMPLATE_ATTRIBUTE, template),
    ];
    let mut kma1 = kmip_connect(&cluster, 0, identity).await;
    let what = "TL-M-2 on kma1 (the pool fills after the setup)";
    let written = wait_until(Duration::from_secs(30), what, async || {
        let batch = vec![(Operation::CREATE, create.clone()), (Operation::GET, Vec::new())];
        let answered = kmip_batch(&mut kma1, true, batch).await;
        let got = answered.get(1).cloned().ok_or_else(|| "one answer only".to_string())?;
        got.map_err(|failure| failure.message)
    })
    .await;
    let key_id = kmip::client::unique_identifier(&written).expect("an ID").to_owned();
    let value = kmip::client::key_material(&written).expect("a key value").to_vec();
    assert_eq!(value.len(), 32);

    // The library fails over to a follower, which may not have applied the Create yet.
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let reader = (1..3).find(|&i| i != leader).expect("a follower other than kma1");
    let mut follower = kmip_connect(&cluster, reader, identity).await;
    let locate = locate_by_asi(tape_asi(0x1234_5678));
    let batch = vec![(Operation::LOCATE, locate), (Operation::GET, Vec::new())];
    let answered = kmip_batch(&mut follower, true, batch).await;
    let located = answered[0].as_ref().expect("the Locate on the follower");
    assert_eq!(kmip::client::unique_identifier(located), Some(key_id.as_str()));
    let read = answered[1].as_ref().expect("the Get on the follower");
    assert_eq!(kmip::client::unique_identifier(read), Some(key_id.as_str()));
    assert_eq!(kmip::client::key_material(read), Some(&value[..]));
    // A tape no one wrote: the follower confirms through the log, then answers "none".
    let locate = locate_by_asi(tape_asi(0x9999));
    let answered = kmip_batch(&mut follower, false, vec![(Operation::LOCATE, locate)]).await;
    let located = answered[0].as_ref().expect("a Locate that finds nothing succeeds");
    assert_eq!(kmip::client::unique_identifier(located), None);

    let query = [("tag", "XXA012A1")];
    let units: admin_api::api::Page<admin_api::api::DataUnit> =
        admin.get_with("/v1/data-units", &query).await.expect("data units by tag");
    let keys: Vec<&str> =
        units.rows.iter().flat_map(|u| u.keys.iter().map(|k| k.key_id.as_str())).collect();
    assert_eq!(keys, [key_id.as_str()], "{:?}", units.rows);
}
