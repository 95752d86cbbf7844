//! `kma local`: a working cluster on this machine with embedded defaults: three KMAs on
//! loopback, data under one directory, each a real `kma run` process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::client::KmaClient;
use crate::config::CONFIG_FILE;

pub struct LocalNode {
    pub name: String,
    pub data_dir: PathBuf,
    pub management: String,
    pub service: String,
}

/// The KMAs of a local cluster: `kma1`..`kmaN` on 127.0.0.1, management ports from
/// `base_port`, service ports from `base_port + 100`. Sites: two KMAs at `east`, one at `west`
/// (a tie-breaker site), then alternating.
pub fn layout(root: &Path, nodes: usize, base_port: u16) -> Vec<LocalNode> {
    (1..=nodes)
        .map(|n| LocalNode {
            name: format!("kma{n}"),
            data_dir: root.join(format!("kma{n}")),
            management: format!("127.0.0.1:{}", base_port + n as u16),
            service: format!("127.0.0.1:{}", base_port + 100 + n as u16),
        })
        .collect()
}

pub fn site_of(n: usize) -> &'static str {
    if n <= 2 || n % 2 == 0 {
        "east"
    } else {
        "west"
    }
}

/// Starts `kma run` for an existing data dir, its log in `<data dir>/kma.log`.
pub fn spawn_run(binary: &Path, data_dir: &Path) -> std::io::Result<Child> {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("kma.log"))?;
    Command::new(binary)
        .arg("run")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// Waits until the KMA answers its status with a leader known.
pub async fn wait_ready(
    client: &KmaClient,
    address: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match client.status(address).await {
            Ok(status) if status.leader_id.is_some() && status.cluster_id.is_some() => {
                return Ok(())
            }
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(status) => anyhow::bail!("{address} is up but not ready: {status:?}"),
            Err(error) => anyhow::bail!("{address} did not come up: {error}"),
        }
    }
}

/// Creates (first time) or restarts (later) a local cluster and returns its running processes.
pub async fn start(
    binary: &Path,
    root: &Path,
    nodes: usize,
    base_port: u16,
) -> anyhow::Result<Vec<Child>> {
    std::fs::create_dir_all(root)?;
    let layout = layout(root, nodes, base_port);
    let first = &layout[0];
    let mut children = Vec::new();
    if !first.data_dir.join(CONFIG_FILE).exists() {
        let status = Command::new(binary)
            .args(["init", "--name", &first.name, "--site", site_of(1)])
            .args(["--management", &first.management, "--service", &first.service])
            .arg("--data-dir")
            .arg(&first.data_dir)
            .stdout(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kma init failed");
    }
    children.push(spawn_run(binary, &first.data_dir)?);
    let admin = KmaClient::admin(&first.data_dir)?;
    wait_ready(&admin, &first.management, Duration::from_secs(60)).await?;
    for (n, node) in layout.iter().enumerate().skip(1) {
        if !node.data_dir.join(CONFIG_FILE).exists() {
            let ca = crate::pki::read(&first.data_dir.join("tls").join(crate::pki::CA_FILE))?;
            let token = crate::pki::create_join_token(&first.data_dir.join("join-tokens"), &ca)?;
            let listeners = crate::setup::Listeners {
                management_listen: node.management.parse()?,
                management_advertise: node.management.clone(),
                service_listen: node.service.parse()?,
            };
            crate::setup::join(
                &node.data_dir,
                &node.name,
                site_of(n + 1),
                &listeners,
                &first.management,
                &token,
            )
            .await?;
        }
        children.push(spawn_run(binary, &node.data_dir)?);
    }
    for node in &layout {
        wait_ready(&admin, &node.management, Duration::from_secs(60)).await?;
    }
    Ok(children)
}
