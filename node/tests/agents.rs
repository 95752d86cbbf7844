//! Agents against running `kma` processes (SPEC A1, C6, S3 "key material at rest"): enrollment,
//! revoked certificates, a locked KMA serving no key, and no clear key value anywhere on disk.

mod support;

/// drive-sim against killed KMAs, here to share this binary's link.
#[path = "more/drive_sim.rs"]
mod drive_sim;

use std::time::Duration;

use agent_gateway::{AgentClient, ClientOptions};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use statemachine::{Command, DataUnitId};
use support::agents::{ca_pem, catalogue, ok, write_key, DAY_MS};
use support::{done_if, files_containing, no_change, wait_until, Cluster};

/// Discovery is refreshed every two seconds on each KMA: waits until `count` KMAs are known.
async fn wait_discovered(drive: &AgentClient, count: usize) {
    let what = format!("the drive to know {count} KMAs");
    wait_until(Duration::from_secs(15), &what, async || {
        drive.discover().await.expect("discovery works");
        done_if(drive.known_kmas().len() >= count, drive.known_kmas())
    })
    .await;
}

/// Waits until the KMA refuses the drive's old, revoked certificate.
async fn wait_refused(old: &AgentClient, unit: DataUnitId) {
    wait_until(
        Duration::from_secs(10),
        "the revoked certificate to be refused",
        async || match old.keys(unit).await {
            Err(error) if error.to_string().contains("revoked") => Ok(()),
            other => Err(other),
        },
    )
    .await;
}

/// Waits until the KMA at `address` has built a snapshot and purged log entries behind it.
async fn wait_snapshot_and_purge(cluster: &Cluster, address: &str) {
    let what = format!("{address} to snapshot and purge its log");
    wait_until(Duration::from_secs(30), &what, async || {
        let status = cluster.admin.status(address).await;
        let done =
            matches!(&status, Ok(s) if s.snapshot_index.is_some() && s.purged_index.is_some());
        done_if(done, status).map(|_| ())
    })
    .await;
}

/// Setup: three KMAs joined and unlocked through the quorum; a policy, group and agent. Action:
/// the drive enrolls at kma1, gets write keys, reads them back; an officer locks kma1; the
/// drive, knowing only kma1, reads again; its passphrase is reset. Expect: the locked kma1
/// refuses with a retryable `kma_locked` and the drive gets the same key from another KMA; the
/// old certificate is refused after the reset; the new passphrase enrolls once. (SPEC A1, C6)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_locked_kma_serves_no_key_and_the_agent_fails_over() {
    let mut cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let ca = ca_pem(&cluster);
    let kma1 = cluster.nodes[0].service.clone();
    let credentials = agent_gateway::client::enroll(&kma1, &ca, "drive1", "drive-one-passphrase")
        .await
        .expect("enrollment");
    let options = ClientOptions {
        discovery_interval: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let drive =
        AgentClient::from_credentials(std::slice::from_ref(&kma1), &credentials, options.clone())
            .expect("client");
    let (unit, value) = write_key(&drive, "VOL001").await;
    let read = drive.keys(unit).await.expect("keys");
    assert_eq!(read.keys.len(), 1);
    assert_eq!(*read.keys[0].value, value, "the key read back is the key handed out");

    ok(&cluster.admin, &address, Command::LockKma { name: "kma1".into() }, None).await;
    // Straight to kma1, no failover: it says it is locked, and that another KMA may serve.
    let tls = node::transport::tls::client_config_from_pem(
        &credentials.ca_pem,
        &credentials.certificate_pem,
        &credentials.private_key_pem,
    )
    .expect("agent TLS");
    let direct = node::kma::https_client(tls).expect("client");
    let url = format!("https://{kma1}/agent/v1/data-units/{unit}/keys");
    let body = wait_until(Duration::from_secs(10), "kma1 to refuse key material", async || {
        let answer = direct.get(&url).send().await.expect("kma1 answers");
        let status = answer.status().as_u16();
        let body = answer.text().await.expect("body");
        done_if(status == 503, (status, body))
    })
    .await
    .1;
    assert!(body.contains("kma_locked") && body.contains("\"retryable\":true"), "{body}");
    wait_discovered(&drive, 3).await;
    let failed_over = drive.keys(unit).await.expect("another KMA serves the key");
    assert_eq!(*failed_over.keys[0].value, value);

    let reset =
        Command::SetAgentPassphrase { id: "drive1".into(), passphrase_verifier: Vec::new() };
    ok(&cluster.admin, &address, reset, Some("drive-one-new-passphrase")).await;
    let kma2 = cluster.nodes[1].service.clone();
    let old = AgentClient::from_credentials(
        std::slice::from_ref(&kma2),
        &credentials,
        ClientOptions { rounds: 1, ..options },
    )
    .expect("client");
    wait_refused(&old, unit).await;
    agent_gateway::client::enroll(&kma2, &ca, "drive1", "drive-one-new-passphrase")
        .await
        .expect("re-enrollment with the new passphrase");
    let again =
        agent_gateway::client::enroll(&kma2, &ca, "drive1", "drive-one-new-passphrase").await;
    assert!(again.is_err(), "a passphrase enrolls once");
    for index in 0..3 {
        cluster.stop(index).await;
    }
}

/// A KMA serves key material for 3 s after it loses the majority.
fn short_cut_off(config: &mut node::config::NodeConfig) {
    config.serve_cut_off_ms = 3_000;
}

/// Setup: three KMAs that serve key material for 3 s once cut off from the majority; a drive
/// with a key, reading through kma1. Action: the two other KMAs stop, so kma1 is cut off; then
/// they come back. Expect: after the bound kma1 refuses key material with a retryable
/// `kma_locked` (a drive revoked meanwhile could otherwise go on reading through it); once
/// the majority is back it serves the key again. (SPEC C3, C6; issue #16 point 10)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_a_kma_cut_off_longer_than_the_bound_serves_no_key() {
    let mut cluster = Cluster::start(3, short_cut_off).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let kma1 = cluster.nodes[0].service.clone();
    let credentials =
        agent_gateway::client::enroll(&kma1, &ca_pem(&cluster), "drive1", "drive-one-passphrase")
            .await
            .expect("enrollment");
    let drive = AgentClient::from_credentials(
        std::slice::from_ref(&kma1),
        &credentials,
        ClientOptions { discovery: false, ..ClientOptions::default() },
    )
    .expect("client");
    let (unit, _value) = write_key(&drive, "VOL001").await;
    let direct = support::agents::raw_drive(&credentials);
    let url = format!("https://{kma1}/agent/v1/data-units/{unit}/keys");
    let status_and_body = async || {
        let answer = direct.get(&url).send().await.expect("kma1 answers");
        let status = answer.status().as_u16();
        (status, answer.text().await.expect("body"))
    };
    assert_eq!(status_and_body().await.0, 200);

    cluster.stop(1).await;
    cluster.stop(2).await;
    let (_, body) =
        wait_until(Duration::from_secs(30), "kma1, cut off, to refuse keys", async || {
            let (status, body) = status_and_body().await;
            done_if(status == 503, (status, body))
        })
        .await;
    assert!(body.contains("kma_locked") && body.contains("\"retryable\":true"), "{body}");

    cluster.restart(1).await;
    cluster.restart(2).await;
    wait_until(Duration::from_secs(60), "kma1 to serve keys again", async || {
        let (status, body) = status_and_body().await;
        done_if(status == 200, (status, body))
    })
    .await;
}

/// Setup: three KMAs with small snapshot thresholds, a drive. Action: the drive gets write keys
/// for 20 data units; 300 more entries follow, until every KMA has a snapshot holding those keys
/// and has purged its log behind it; every KMA is stopped. Expect: no file under any KMA's data
/// directory (RocksDB files, Raft log, snapshots, sealed key, logs) holds any of the clear key
/// values, raw, in hex or in base64; the search finds a value planted on purpose, so it can
/// fail. (SPEC "Key material at rest", S3)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_no_clear_key_value_in_any_file_of_any_kma() {
    let mut cluster = Cluster::start(3, support::small_snapshots).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let ca = ca_pem(&cluster);
    let credentials = agent_gateway::client::enroll(
        &cluster.nodes[1].service,
        &ca,
        "drive1",
        "drive-one-passphrase",
    )
    .await
    .expect("enrollment");
    let addresses = cluster.services();
    let drive = AgentClient::from_credentials(&addresses, &credentials, ClientOptions::default())
        .expect("client");
    let mut values = Vec::new();
    for n in 0..20 {
        let (_, value) = write_key(&drive, &format!("VOL{n:03}")).await;
        values.push(value);
    }
    // Enough entries after the keys for every KMA to snapshot them and purge its log.
    let limits = statemachine::cluster::KeyPoolLimits { low_water: 20, high_water: 40 };
    for _ in 0..300 {
        ok(&cluster.admin, &address, Command::SetKeyPoolLimits(limits), None).await;
    }
    for node in &cluster.nodes {
        wait_snapshot_and_purge(&cluster, &node.address).await;
    }
    for index in 0..3 {
        cluster.stop(index).await;
    }
    let root = cluster.root.path();
    for value in &values {
        let raw = files_containing(root, value);
        assert!(raw.is_empty(), "clear key value found in {raw:?}");
        for text in [hex::encode(value), hex::encode_upper(value)] {
            let found = files_containing(root, text.as_bytes());
            assert!(found.is_empty(), "key value in hex found in {found:?}");
        }
        for text in [STANDARD.encode(value), URL_SAFE_NO_PAD.encode(value)] {
            let found = files_containing(root, &text.as_bytes()[..40]);
            assert!(found.is_empty(), "key value in base64 found in {found:?}");
        }
    }
    let planted = root.join("kma1/planted.bin");
    std::fs::write(&planted, [b"xx".as_slice(), &values[0], b"yy"].concat()).expect("plant");
    assert_eq!(files_containing(root, &values[0]), vec![planted.display().to_string()]);
}

/// Setup: three KMAs, kma1 and kma2 at site `east`, kma3 at `west`; drive `drive1` belongs to
/// `east`. Action: a drive configured with kma3's address alone enrolls there, learns the
/// cluster through discovery, then writes and reads. Expect: it knows all three KMAs, tries the
/// two of its own site first (SPEC C2, C3), and its requests are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_c3_a_drive_told_one_kma_learns_the_cluster_and_prefers_its_own_site() {
    let cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let west = cluster.nodes[2].service.clone();
    let credentials =
        agent_gateway::client::enroll(&west, &ca_pem(&cluster), "drive1", "drive-one-passphrase")
            .await
            .expect("enrollment");
    let drive = AgentClient::from_credentials(
        std::slice::from_ref(&west),
        &credentials,
        ClientOptions::default(),
    )
    .expect("client");

    wait_discovered(&drive, 3).await;
    let known = drive.known_kmas();
    assert_eq!(drive.site().as_deref(), Some("east"), "discovery names the drive's site");
    let (mut east, mut expected) = (known[..2].to_vec(), cluster.services()[..2].to_vec());
    east.sort();
    expected.sort();
    assert_eq!(east, expected, "own site first: {known:?}");
    assert_eq!(known[2], west, "the other site last: {known:?}");
    let (unit, value) = write_key(&drive, "VOL001").await;
    let keys = drive.keys(unit).await.expect("keys");
    assert_eq!(*keys.keys[0].value, value);
}

/// Setup: two KMAs; drive1 created with its enrollment passphrase. Action: three enrollments
/// with a wrong passphrase at kma1's service listener and two at kma2's (each KMA's own count
/// stays below the limit of 5); then an enrollment hello from another source address at kma1,
/// and the right passphrase there. Expect: both refused as throttled "across the cluster": the
/// failed proofs of a known agent are counted in the replicated state, so two KMAs allow no
/// more guesses than one. (SPEC A1, S2; issue #16 point 5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_failed_enrollments_of_a_known_agent_are_throttled_across_the_cluster() {
    let cluster = Cluster::start(2, no_change).await;
    let address = cluster.nodes[0].address.clone();
    catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let ca = ca_pem(&cluster);
    let services = [cluster.nodes[0].service.clone(), cluster.nodes[1].service.clone()];
    for (service, attempts) in [(&services[0], 3), (&services[1], 2)] {
        for _ in 0..attempts {
            let refused =
                agent_gateway::client::enroll(service, &ca, "drive1", "not-the-passphrase").await;
            assert!(refused.is_err(), "a wrong passphrase enrolls nothing");
        }
    }
    // From another source address kma1's own count is empty: only the replicated count can
    // refuse the hello, once kma2's failures are applied at kma1.
    let tls = node::transport::tls::anonymous_client_config(&ca).expect("TLS");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address("127.0.0.3".parse::<std::net::IpAddr>().expect("address"))
        .build()
        .expect("client");
    let url = format!("https://{}/agent/v1/enroll/hello", services[0]);
    let hello = serde_json::json!({ "agent_id": "drive1", "client_nonce": hex::encode([7u8; 24]) });
    let body = wait_until(Duration::from_secs(30), "kma1 to count kma2's failures", async || {
        let answer = http.post(&url).json(&hello).send().await.map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        done_if(status == 429, answer.text().await.unwrap_or_default())
    })
    .await;
    assert!(body.contains("across the cluster"), "{body}");
    let right = agent_gateway::client::enroll(&services[0], &ca, "drive1", "drive-one-passphrase");
    let Err(refused) = right.await else { panic!("the right passphrase enrolled: not throttled") };
    let refused = format!("{refused:?}");
    assert!(refused.contains("across the cluster"), "{refused}");
}
