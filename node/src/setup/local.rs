//! `kma local`: a working cluster on this machine with embedded defaults: three KMAs on
//! loopback, data under one directory, each a real `kma run` process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::client::KmaClient;
use crate::config::{Listening, NodeConfig, CONFIG_FILE};
use crate::setup::InitSecrets;

pub struct LocalNode {
    pub name: String,
    pub data_dir: PathBuf,
    pub management: String,
    pub service: String,
    /// Its KMIP listener (issue 19), `None` for a KMA created before it had one.
    pub kmip: Option<String>,
}

/// The KMAs of a local cluster: `kma1`..`kmaN` on 127.0.0.1, management ports from
/// `base_port`, service ports from `base_port + 100`, KMIP ports from `base_port + 200`; with `base_port` 0, ports the OS chooses
/// when each KMA is created. A KMA that exists is where its `kma.toml` says, whatever
/// `base_port` is now. Sites: two KMAs at `east`, one at `west` (a tie-breaker site), then
/// alternating.
pub fn layout(root: &Path, nodes: usize, base_port: u16) -> anyhow::Result<Vec<LocalNode>> {
    (1..=nodes).map(|n| local_node(root, n, base_port)).collect()
}

/// KMA `n` of the local cluster under `root`: from its `kma.toml` once it exists.
fn local_node(root: &Path, n: usize, base_port: u16) -> anyhow::Result<LocalNode> {
    let name = format!("kma{n}");
    let data_dir = root.join(&name);
    if data_dir.join(CONFIG_FILE).exists() {
        let config = NodeConfig::load(&data_dir)?;
        let service = config.service_advertise();
        let kmip = config.kmip_listen.map(|address| address.to_string());
        let management = config.management_advertise;
        return Ok(LocalNode { name, data_dir, management, service, kmip });
    }
    let port = |offset: u16| match base_port {
        0 => 0,
        base => base + offset + n as u16,
    };
    Ok(LocalNode {
        name,
        data_dir,
        management: format!("127.0.0.1:{}", port(0)),
        service: format!("127.0.0.1:{}", port(100)),
        kmip: Some(format!("127.0.0.1:{}", port(200))),
    })
}

pub fn site_of(n: usize) -> &'static str {
    if n <= 2 || n % 2 == 0 {
        "east"
    } else {
        "west"
    }
}

/// Starts `kma run` for an existing data dir, its log in `<data dir>/kma.log`. The report of
/// an earlier run's listeners is removed first, so that a `listening.toml` found afterwards is
/// this run's.
pub fn spawn_run(binary: &Path, data_dir: &Path) -> std::io::Result<Child> {
    spawn_run_under(&[], binary, data_dir)
}

/// As [`spawn_run`], through a wrapper command (`wrapper[0]` run with the rest of `wrapper`,
/// then the binary and its arguments): e.g. `faketime -f +365d` for a KMA whose clock is wrong.
pub fn spawn_run_under(wrapper: &[&str], binary: &Path, data_dir: &Path) -> std::io::Result<Child> {
    Listening::remove(data_dir).map_err(std::io::Error::other)?;
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("kma.log"))?;
    let mut command = match wrapper.split_first() {
        Some((program, arguments)) => {
            let mut command = Command::new(program);
            command.args(arguments).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
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

/// The Security Officer's session on a cluster that is ready: logged in with the secrets
/// file's passphrase, retried while a leader is elected or the login cannot be recorded yet.
/// It waits first until the cluster reads the log format the KMA at `address` reads (read
/// with the certificate of the KMA in `data_dir`): a login before that, in a cluster whose
/// KMAs have not all reported their version yet, records no session certificate, and the
/// listeners refuse its certificate once they check sessions.
pub async fn officer_session(
    data_dir: &Path,
    address: &str,
    secrets: &InitSecrets,
) -> anyhow::Result<KmaClient> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let reader = KmaClient::node(data_dir)?;
    loop {
        let status = reader.status(address).await;
        let settled = status.is_ok_and(|s| s.cluster_log_format >= s.log_format);
        if settled || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        match KmaClient::officer(data_dir, address, secrets).await {
            Ok(client) => return Ok(client),
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%error, "officer login not possible yet");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(error) => return Err(error.context(format!("logging the officer in at {address}"))),
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
            "{LOCAL_SECRETS_HEADER}\n\
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

/// The first line of a local cluster's secrets file: what tells a `kma local` cluster from
/// others (the development tools refuse anything else).
const LOCAL_SECRETS_HEADER: &str = "# Secrets of the local cluster (kma local): development only.";

/// Whether `data_dir` is a KMA of a cluster `kma local` made: its root holds the secrets file
/// that `kma local` wrote.
pub fn is_local_cluster(data_dir: &Path) -> bool {
    let secrets = data_dir.parent().map(|root| root.join(SECRETS_FILE));
    let text = secrets.and_then(|path| std::fs::read_to_string(path).ok());
    text.is_some_and(|text| text.starts_with(LOCAL_SECRETS_HEADER))
}

/// Creates (first time) or restarts (later) a local cluster and returns its running processes;
/// [`layout`] then says where each KMA is.
pub async fn start(
    binary: &Path,
    root: &Path,
    nodes: usize,
    base_port: u16,
) -> anyhow::Result<Vec<Child>> {
    anyhow::ensure!(nodes >= 1, "a local cluster needs one KMA at least: --nodes 1 or more");
    std::fs::create_dir_all(root)?;
    let (secrets_path, secrets) = local_secrets(root)?;
    let mut kmas = layout(root, nodes, base_port)?;
    let mut children = Vec::new();
    if !kmas[0].data_dir.join(CONFIG_FILE).exists() {
        init_first(binary, &kmas[0], &secrets_path).await?;
        kmas[0] = local_node(root, 1, base_port)?;
    }
    let first = &kmas[0];
    // Every KMA that exists starts before any is waited for: a restarted cluster needs a
    // majority to elect a leader (a KMA that led does not take up its old term alone).
    children.push(spawn_run(binary, &first.data_dir)?);
    for node in kmas.iter().skip(1) {
        if node.data_dir.join(CONFIG_FILE).exists() {
            children.push(spawn_run(binary, &node.data_dir)?);
        }
    }
    // Readiness is read with the first KMA's own certificate; what an officer does, an
    // officer's session does.
    let reader = KmaClient::node(&first.data_dir)?;
    wait_ready(&reader, &first.management, Duration::from_secs(60)).await?;
    let admin = officer_session(&first.data_dir, &first.management, &secrets).await?;
    for (n, node) in kmas.iter().enumerate().skip(1) {
        if !node.data_dir.join(CONFIG_FILE).exists() {
            join_local(&admin, first, node, site_of(n + 1), &secrets).await?;
            let node = local_node(root, n + 1, base_port)?;
            children.push(spawn_run(binary, &node.data_dir)?);
            wait_ready(&reader, &node.management, Duration::from_secs(60)).await?;
            unlock_when_member(&admin, &first.management, &secrets, &node.name, true).await?;
        }
    }
    for node in layout(root, nodes, base_port)? {
        wait_ready(&reader, &node.management, Duration::from_secs(60)).await?;
    }
    Ok(children)
}

/// `kma init` for the first KMA of a new local cluster.
async fn init_first(binary: &Path, first: &LocalNode, secrets_path: &Path) -> anyhow::Result<()> {
    let status = Command::new(binary)
        .args(["init", "--name", &first.name, "--site", site_of(1)])
        .args(["--management", &first.management, "--service", &first.service])
        .args(first.kmip.iter().flat_map(|kmip| ["--kmip", kmip.as_str()]))
        .arg("--data-dir")
        .arg(&first.data_dir)
        .arg("--secrets-file")
        .arg(secrets_path)
        .stdout(Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "kma init failed (its error is above)");
    Ok(())
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
        kmip_listen: node.kmip.as_deref().map(str::parse).transpose()?,
    };
    // The CA is on this machine: pinned, as an operator would pin what `kma init` printed.
    let ca_pem = crate::pki::read(&first.data_dir.join("tls").join(crate::pki::CA_FILE))?;
    let fingerprint = hex::encode(crate::pki::fingerprint(&ca_pem)?);
    let credentials = crate::setup::JoinCredentials {
        peer: &first.management,
        passphrase: &passphrase,
        ca_fingerprint: Some(&fingerprint),
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
