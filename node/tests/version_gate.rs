//! The cluster version gate through running `kma` processes (SPEC C7, issue #15 point 8): a
//! cluster in which one KMA reports an older format stays at that format, and moves on once
//! that KMA reports the newer one. One test in this binary: it sets `KMA_LOG_FORMAT_MAX` in
//! the test process's environment, which the KMA it starts inherits.

mod support;

use std::time::Duration;

use support::{done_if, no_change, wait_until, Cluster};

const NEWEST: u16 = statemachine::format::LOG_FORMAT_MAX;
const OLDER: u16 = statemachine::format::LOG_FORMAT_BASELINE;

/// Waits until every running KMA reports `cluster` as the cluster's log format, and returns
/// each KMA's own `log_format`.
async fn cluster_format_becomes(cluster: &Cluster, format: u16) -> Vec<u16> {
    let what = format!("every KMA to report cluster_log_format {format}");
    wait_until(Duration::from_secs(60), &what, async || {
        let mut seen = Vec::new();
        for node in &cluster.nodes {
            match cluster.admin.status(&node.address).await {
                Ok(status) => seen.push((status.log_format, status.cluster_log_format)),
                Err(error) => return Err(format!("{}: {error}", node.name)),
            }
        }
        let settled = seen.iter().all(|(_, cluster_format)| *cluster_format == format);
        done_if(settled, seen)
            .map(|seen| seen.into_iter().map(|(own, _)| own).collect())
            .map_err(|seen| format!("{seen:?}"))
    })
    .await
}

/// Setup: three KMAs of this software; they report their versions and the cluster reaches the
/// newest log format. Action: restart kma3 as a KMA that reads only the older format (as the
/// previous release would report), then restart it again without the cap. Expect: while kma3
/// reports the older format every KMA shows the cluster at that format (newer commands are
/// refused by the gate); once kma3 reports the newer one, every KMA shows the newest format.
/// (SPEC C7)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_one_kma_of_an_older_format_holds_the_cluster_back_until_it_is_upgraded() {
    let mut cluster = Cluster::start(3, no_change).await;
    let own = cluster_format_becomes(&cluster, NEWEST).await;
    assert_eq!(own, [NEWEST; 3], "every KMA of this software reads the newest format");

    cluster.stop(2).await;
    // Inherited by the KMA started next: it reports, as an older KMA would, format 1 only.
    std::env::set_var("KMA_LOG_FORMAT_MAX", OLDER.to_string());
    cluster.restart(2).await;
    std::env::remove_var("KMA_LOG_FORMAT_MAX");
    let own = cluster_format_becomes(&cluster, OLDER).await;
    assert_eq!(own, [NEWEST, NEWEST, OLDER], "kma3 reports the older format");

    cluster.stop(2).await;
    cluster.restart(2).await;
    let own = cluster_format_becomes(&cluster, NEWEST).await;
    assert_eq!(own, [NEWEST; 3], "upgraded: the gate is open again");
}
