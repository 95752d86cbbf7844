//! The seed's drive flows against running `kma` processes, with a key policy of seconds (SPEC
//! A2–A4, O4, O6), and a KMA cut off from the majority (SPEC "Availability trade-off").
//! Management ports 17600-17699 (service ports 500 above).

mod support;

use std::time::Duration;

use agent_gateway::{AgentClient, ClientOptions};
use support::agents::{ca_pem, catalogue, service, write_key_for};
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
/// Action (seed ch.7 Example 1, StorageTek drive): write from BOT, append at once, append after
/// the encryption period, read. Expect: the first append reuses the key (still
/// protect-and-process); after the period the append gets a new key and the old one is
/// process-only; the read returns both keys, each with the value handed out for the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_example_1_append_after_the_encryption_period_rekeys() {
    const BASE: u16 = 17600;
    let cluster = Cluster::start(3, BASE, no_change).await;
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
