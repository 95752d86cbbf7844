//! `kma local`: a working cluster on this machine with embedded defaults: three KMAs on
//! loopback, data under one directory, each a real `kma run` process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::client::KmaClient;
use crate::config::CONFIG_FILE;
use crate::setup::InitSecrets;

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

/// The quickstart secrets of a local cluster: random passphrases in `<root>/secrets.toml`
/// (mode 0600). A convenience for a cluster on one machine, where one person is every role; a
/// real cluster's quorum members keep their passphrases to themselves.
fn local_secrets(root: &Path) -> anyhow::Result<(PathBuf, InitSecrets)> {
    let path = root.join(SECRETS_FILE);
    if !path.exists() {
        let passphrase = || hex::encode(rand::random::<[u8; 12]>());
        let text = format!(
            "# Secrets of the local cluster (kma local): development only.\n\
             security_officer = \"admin\"\n\
             security_officer_passphrase = \"{}\"\n\
             quorum_threshold = 1\n\
             autonomous_unlock = true\n\n\
             [[quorum]]\nid = \"q1\"\npassphrase = \"{}\"\n",
            passphrase(),
            passphrase()
        );
        crate::vault::write_private(&path, text.as_bytes())?;
    }
    let secrets = crate::setup::read_secrets(&path)?;
    Ok((path, secrets))
}

pub const SECRETS_FILE: &str = "secrets.toml";

/// Creates (first time) or restarts (later) a local cluster and returns its running processes.
pub async fn start(
    binary: &Path,
    root: &Path,
    nodes: usize,
    base_port: u16,
) -> anyhow::Result<Vec<Child>> {
    std::fs::create_dir_all(root)?;
    let (secrets_path, secrets) = local_secrets(root)?;
    let layout = layout(root, nodes, base_port);
    let first = &layout[0];
    let mut children = Vec::new();
    if !first.data_dir.join(CONFIG_FILE).exists() {
        let status = Command::new(binary)
            .args(["init", "--name", &first.name, "--site", site_of(1)])
            .args(["--management", &first.management, "--service", &first.service])
            .arg("--data-dir")
            .arg(&first.data_dir)
            .arg("--secrets-file")
            .arg(&secrets_path)
            .stdout(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kma init failed");
    }
    // Every KMA that exists starts before any is waited for: a restarted cluster needs a
    // majority to elect a leader (a KMA that led does not take up its old term alone).
    children.push(spawn_run(binary, &first.data_dir)?);
    for node in layout.iter().skip(1) {
        if node.data_dir.join(CONFIG_FILE).exists() {
            children.push(spawn_run(binary, &node.data_dir)?);
        }
    }
    let admin = KmaClient::admin(&first.data_dir)?;
    wait_ready(&admin, &first.management, Duration::from_secs(60)).await?;
    for (n, node) in layout.iter().enumerate().skip(1) {
        if !node.data_dir.join(CONFIG_FILE).exists() {
            join_local(&admin, first, node, site_of(n + 1), &secrets).await?;
            children.push(spawn_run(binary, &node.data_dir)?);
            wait_ready(&admin, &node.management, Duration::from_secs(60)).await?;
            unlock_when_member(&admin, &first.management, &secrets, &node.name, true).await?;
        }
    }
    for node in &layout {
        wait_ready(&admin, &node.management, Duration::from_secs(60)).await?;
    }
    Ok(children)
}

/// Admits `node` through the quorum and writes its data dir with `kma join`'s steps.
async fn join_local(
    admin: &KmaClient,
    first: &LocalNode,
    node: &LocalNode,
    site: &str,
    secrets: &InitSecrets,
) -> anyhow::Result<()> {
    let passphrase = hex::encode(rand::random::<[u8; 12]>());
    crate::setup::quorum_flow::admit_kma(
        admin,
        &first.management,
        secrets,
        (&node.name, site),
        &passphrase,
    )
    .await?;
    let listeners = crate::setup::Listeners {
        management_listen: node.management.parse()?,
        management_advertise: node.management.clone(),
        service_listen: node.service.parse()?,
    };
    let credentials = crate::setup::JoinCredentials {
        peer: &first.management,
        passphrase: &passphrase,
        ca_fingerprint: None,
        wait: Duration::from_secs(60),
    };
    crate::setup::join(&node.data_dir, &node.name, site, &listeners, &credentials).await?;
    Ok(())
}

/// A joined KMA starts locked (SPEC C6); once it is a member, the quorum unlocks it and lets it
/// unlock itself after restarts, so the local cluster survives Ctrl-C and a rerun.
pub async fn unlock_when_member(
    admin: &KmaClient,
    peer: &str,
    secrets: &InitSecrets,
    name: &str,
    autonomous: bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match crate::setup::quorum_flow::unlock_kma(admin, peer, secrets, name, autonomous).await {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, kma = name, "not a member yet");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(error) => return Err(error.context(format!("unlocking {name}"))),
        }
    }
}
