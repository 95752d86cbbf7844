//! Bad input and faults give one clear error naming the problem and the fix; nothing is
//! silently rewritten (issue #3, "Bad input and faults").

mod support;

use std::time::Duration;

use node::client::KmaClient;
use support::*;

async fn run_output(data_dir: &std::path::Path) -> (bool, String) {
    let run = tokio::process::Command::new(KMA).arg("run").arg("--data-dir").arg(data_dir).output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("kma run exits by itself on bad input")
        .expect("kma run starts");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Setup: a one-KMA cluster, stopped. Action: garbage over RocksDB's CURRENT file, then start.
/// Expect: `kma run` exits with an error that says the data dir is damaged and what to do, and
/// leaves the files as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rocksdb_dir_is_refused_with_the_fix() {
    let mut cluster = Cluster::start(1, 17200, no_change).await;
    cluster.stop(0).await;
    let current = cluster.nodes[0].data_dir.join("raft/rocksdb/CURRENT");
    std::fs::write(&current, b"MANIFEST-999999\n").expect("damage CURRENT");
    let (ok, stderr) = run_output(&cluster.nodes[0].data_dir).await;
    assert!(!ok, "kma run must fail on a damaged data dir");
    assert!(stderr.contains("cannot start the KMA in"), "{stderr}");
    assert!(stderr.to_lowercase().contains("rocksdb"), "names the database: {stderr}");
    assert_eq!(std::fs::read(&current).expect("CURRENT"), b"MANIFEST-999999\n", "not rewritten");
}

/// Setup: a `kma.toml` without its `site` line. Expect: the error names the file, the missing
/// field, and how the file is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_missing_a_field_names_it() {
    let mut cluster = Cluster::start(1, 17210, no_change).await;
    cluster.stop(0).await;
    let path = cluster.nodes[0].data_dir.join("kma.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let without_site: String = text
        .lines()
        .filter(|line| !line.starts_with("site"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&path, without_site).expect("write config");
    let (ok, stderr) = run_output(&cluster.nodes[0].data_dir).await;
    assert!(!ok);
    assert!(stderr.contains("kma.toml is not a valid KMA configuration"), "{stderr}");
    assert!(stderr.contains("missing field `site`"), "{stderr}");
}

/// Setup: two separate clusters. Action: cluster B's administrator and KMA certificates are
/// used against cluster A. Expect: the TLS handshake fails; nothing is served. (SPEC S2)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_cluster_is_refused() {
    let cluster_a = Cluster::start(1, 17220, no_change).await;
    let cluster_b = Cluster::start(1, 17230, no_change).await;
    let address_a = &cluster_a.nodes[0].address;
    assert!(cluster_a.admin.status(address_a).await.is_ok(), "A's own admin is served");
    let foreign_admin = KmaClient::admin(&cluster_b.nodes[0].data_dir).expect("client");
    let refused = foreign_admin.status(address_a).await.expect_err("B's admin is not served by A");
    assert!(refused.to_string().contains(address_a.as_str()), "{refused}");
    let tls_b = cluster_b.nodes[0].data_dir.join("tls");
    let foreign_kma = KmaClient::new(&tls_b, "node.pem", "node-key.pem").expect("client");
    assert!(foreign_kma.digest(address_a, 0).await.is_err(), "B's KMA is not served by A");
}

/// A join token is one-time and names the cluster by its CA: a second use is refused, and a
/// token of another cluster is caught before anything is trusted. (SPEC C4, S2)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_single_use_and_pinned_to_their_cluster() {
    let cluster_a = Cluster::start(1, 17240, no_change).await;
    let cluster_b = Cluster::start(1, 17250, no_change).await;
    let first = &cluster_a.nodes[0];
    let ca = node::pki::read(&first.data_dir.join("tls/ca.pem")).expect("CA");
    let token =
        node::pki::create_join_token(&first.data_dir.join("join-tokens"), &ca).expect("token");
    let listeners = |port: u16| node::setup::Listeners {
        management_listen: format!("127.0.0.1:{port}").parse().expect("address"),
        management_advertise: format!("127.0.0.1:{port}"),
        service_listen: format!("127.0.0.1:{}", port + 100).parse().expect("address"),
    };
    let root = tempfile::tempdir().expect("temp dir");
    node::setup::join(
        &root.path().join("n2"),
        "n2",
        "east",
        &listeners(17243),
        &first.address,
        &token,
    )
    .await
    .expect("first use joins");
    let again = node::setup::join(
        &root.path().join("n3"),
        "n3",
        "east",
        &listeners(17244),
        &first.address,
        &token,
    )
    .await;
    let again = again.expect_err("second use").to_string();
    assert!(again.contains("unknown or already used join token"), "{again}");
    let other = &cluster_b.nodes[0].address;
    let wrong =
        node::setup::join(&root.path().join("n4"), "n4", "east", &listeners(17245), other, &token)
            .await;
    let wrong = wrong.expect_err("token of cluster A at cluster B").to_string();
    assert!(wrong.contains("does not match the join token's fingerprint"), "{wrong}");
}
