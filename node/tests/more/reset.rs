//! `kma reset` (SPEC C5): a KMA deleted from its cluster is returned to factory defaults on its
//! own machine, optionally scrubbing its files; never while it runs, never a directory that is
//! not a KMA's.

use crate::support;

use support::Cluster;

async fn kma_reset(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new(support::KMA)
        .arg("reset")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .await
        .expect("kma reset runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c5_reset_refuses_a_running_kma_and_then_scrubs_and_removes_its_data() {
    let mut cluster = Cluster::start(1, support::no_change).await;
    let data_dir = cluster.nodes[0].data_dir.clone();

    let running = kma_reset(&["--yes"], &data_dir).await;
    assert!(!running.status.success(), "a running KMA is not reset");
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert!(data_dir.join("kma.toml").exists(), "nothing removed");

    cluster.stop(0).await;
    let unconfirmed = kma_reset(&["--scrub"], &data_dir).await;
    assert!(!unconfirmed.status.success(), "--yes is needed");
    assert!(data_dir.join("kma.toml").exists(), "nothing removed without --yes");

    let not_a_kma = tempfile::tempdir().expect("dir");
    std::fs::write(not_a_kma.path().join("precious.txt"), b"keep me").expect("file");
    let refused = kma_reset(&["--yes"], not_a_kma.path()).await;
    assert!(!refused.status.success(), "a directory without kma.toml is not a KMA's");
    assert!(not_a_kma.path().join("precious.txt").exists());

    let reset = kma_reset(&["--scrub", "--yes"], &data_dir).await;
    let stdout = String::from_utf8_lossy(&reset.stdout);
    assert!(reset.status.success(), "{stdout}{}", String::from_utf8_lossy(&reset.stderr));
    assert!(stdout.contains("bytes overwritten"), "{stdout}");
    assert!(!data_dir.exists(), "the data directory is gone");
}
