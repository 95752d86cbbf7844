//! The compose cluster as an administrator sees it: three KMAs, one per site (`kma1` at `east`,
//! `kma2` at `west`, `kma3` at `north`), each reached on its published management port with a Security Officer
//! session, logged in with the quickstart secrets that kma1 exports to a temporary host
//! directory.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use node::client::KmaClient;
use node::wire::{NodeStatus, StateDigest};
use tokio::time::Instant;

use crate::compose::Compose;
use crate::workload::Acked;

/// The compose file's KMA services.
pub const SERVICES: [&str; 3] = ["kma1", "kma2", "kma3"];
const MANAGEMENT_PORT: u16 = 7001;
const POLL_PAUSE: Duration = Duration::from_millis(250);
/// First start: containers, `kma init`, two joins one after the other, promotions.
const FORMATION_TIMEOUT: Duration = Duration::from_secs(180);
const CONVERGE_ATTEMPTS_MAX: u32 = 40;
/// How often the officer logs in again while the cluster forms (see `wait_formed`).
const RELOGIN_PAUSE: Duration = Duration::from_secs(5);

/// How [`DockerCluster::start_with`] lays the project out.
#[derive(Debug, Default)]
pub struct Layout {
    /// Project name prefix (default `kmschaos`): a harness that removes what an interrupted
    /// run left behind finds its own projects by it.
    pub prefix: Option<&'static str>,
    /// Compose files applied after the top-level one.
    pub overrides: Vec<std::path::PathBuf>,
    /// Compose variables, over the defaults.
    pub env: Vec<(String, String)>,
}

pub struct DockerCluster {
    /// Declared first so it drops first: the project goes down before the export dir goes.
    pub compose: Compose,
    pub admin: KmaClient,
    export: tempfile::TempDir,
}

impl DockerCluster {
    /// Checks Docker, builds the KMA image, starts a new compose project and waits until the
    /// three KMAs are voters that know their leader.
    pub async fn start() -> anyhow::Result<DockerCluster> {
        DockerCluster::start_with(Layout::default()).await
    }

    /// As [`DockerCluster::start`], with the project prefix, override files and variables of
    /// `layout` (variables given there win over the defaults).
    pub async fn start_with(layout: Layout) -> anyhow::Result<DockerCluster> {
        crate::image::require_docker().await?;
        crate::image::build_kma_image().await?;
        let export = tempfile::Builder::new().prefix("kms-docker-").tempdir()?;
        let mut env = compose_env(export.path())?;
        env.retain(|(name, _)| !layout.env.iter().any(|(given, _)| given == name));
        env.extend(layout.env);
        let prefix = layout.prefix.unwrap_or("kmschaos");
        let compose = Compose::with_overrides(prefix, env, layout.overrides);
        let admin = async {
            compose.up().await?;
            wait_for_files(export.path(), &["tls/ca.pem", "secrets.toml"], FORMATION_TIMEOUT)
                .await?;
            officer_session(&compose, export.path(), FORMATION_TIMEOUT).await
        }
        .await;
        let admin = admin.map_err(|e| e.context(format!("logs:\n{}", compose.logs())))?;
        let mut cluster = DockerCluster { compose, admin, export };
        if let Err(error) = cluster.wait_formed(FORMATION_TIMEOUT).await {
            return Err(error.context(format!("logs:\n{}", cluster.compose.logs())));
        }
        // A session from before every KMA reported its version may have been granted while the
        // cluster recorded no session certificates; one from now on is recorded.
        let export = cluster.export.path().to_path_buf();
        cluster.admin = officer_session(&cluster.compose, &export, FORMATION_TIMEOUT).await?;
        Ok(cluster)
    }

    /// Where kma1 exported the CA (`tls/ca.pem`) and the quickstart secrets (`secrets.toml`).
    pub fn export_dir(&self) -> &Path {
        self.export.path()
    }

    /// `127.0.0.1:PORT` of the service's management listener; an error while it is not running.
    pub async fn address(&self, service: &str) -> anyhow::Result<String> {
        self.compose.port(service, MANAGEMENT_PORT).await
    }

    pub async fn status(&self, service: &str) -> anyhow::Result<NodeStatus> {
        let address = self.address(service).await?;
        Ok(self.admin.status(&address).await?)
    }

    /// The status of every KMA that answers.
    async fn statuses(&self) -> Vec<(&'static str, NodeStatus)> {
        let mut answers = Vec::new();
        for service in SERVICES {
            if let Ok(status) = self.status(service).await {
                answers.push((service, status));
            }
        }
        answers
    }

    /// The leader: a KMA that says it leads, confirmed by another KMA that follows it.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<&'static str> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.statuses().await;
            let confirmed = statuses.iter().find(|(_, status)| {
                status.role == "leader"
                    && statuses.iter().any(|(_, other)| {
                        other.node_id != status.node_id && other.leader_id == Some(status.node_id)
                    })
            });
            if let Some((service, _)) = confirmed {
                return Ok(service);
            }
            if Instant::now() >= deadline {
                // Say why the others did not answer: a KMA down and a refused session differ.
                let mut silent = Vec::new();
                for service in SERVICES {
                    if let Err(error) = self.status(service).await {
                        silent.push(format!("{service}: {error:#}"));
                    }
                }
                anyhow::bail!("no confirmed leader: {statuses:#?}; no answer from {silent:#?}");
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Waits until `service` answers, knows a leader and has applied `applied_min`.
    pub async fn wait_ready(
        &self,
        service: &str,
        applied_min: u64,
        timeout: Duration,
    ) -> anyhow::Result<NodeStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.status(service).await;
            match answer {
                Ok(status) if status.leader_id.is_some() && status.applied_index >= applied_min => {
                    return Ok(status)
                }
                _ if Instant::now() < deadline => tokio::time::sleep(POLL_PAUSE).await,
                _ => anyhow::bail!("{service} not ready (applied {applied_min}+): {answer:?}"),
            }
        }
    }

    /// Waits until every KMA answers with three voters, no learner, and a leader.
    /// Waits until the three KMAs are voters that know their leader and the cluster reads the
    /// log format they read. While the joins go on, the cluster's format dips (a KMA approved
    /// to join counts as the oldest until it reports its version) and a session granted then
    /// is not recorded, so the officer logs in again every few seconds until formed.
    async fn wait_formed(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut logged_in = Instant::now();
        loop {
            let statuses = self.statuses().await;
            let formed = statuses.len() == SERVICES.len()
                && statuses.iter().all(|(_, status)| {
                    status.voters.len() == SERVICES.len()
                        && status.learners.is_empty()
                        && status.leader_id.is_some()
                        && status.cluster_log_format >= status.log_format
                });
            if formed {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the compose cluster did not form within {timeout:?}: {statuses:#?}"
            );
            if logged_in.elapsed() > RELOGIN_PAUSE {
                let export = self.export.path().to_path_buf();
                if let Ok(admin) = officer_session(&self.compose, &export, POLL_PAUSE).await {
                    self.admin = admin;
                }
                logged_in = Instant::now();
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Every acknowledged write is on every KMA, and the three state digests are equal at the
    /// same applied index (at or past the last acknowledged write).
    pub async fn check_converged(&self, acked: &Acked) -> anyhow::Result<StateDigest> {
        let digest = self.equal_digests(acked.index_max()).await?;
        let expected = acked.ids();
        for service in SERVICES {
            let address = self.address(service).await?;
            let users: BTreeSet<String> = self.admin.users(&address).await?.into_iter().collect();
            let missing: Vec<&String> = expected.iter().filter(|id| !users.contains(*id)).collect();
            anyhow::ensure!(
                missing.is_empty(),
                "{service} lacks {} of {} acknowledged writes, first {:?}",
                missing.len(),
                expected.len(),
                missing.iter().take(5).collect::<Vec<_>>()
            );
        }
        Ok(digest)
    }

    /// Asks every KMA for its digest once it has applied the leader's last log index; entries
    /// may still arrive meanwhile (a new term's blank entry), so it retries until the three
    /// answer at the same index. Different digests at one index are a divergence: no retry.
    async fn equal_digests(&self, index_min: u64) -> anyhow::Result<StateDigest> {
        let mut digests = Vec::new();
        for _attempt in 0..CONVERGE_ATTEMPTS_MAX {
            let leader = self.leader(Duration::from_secs(30)).await?;
            let last = self.status(leader).await?.last_log_index.unwrap_or(0).max(index_min);
            digests.clear();
            for service in SERVICES {
                let address = self.address(service).await?;
                digests.push((service, self.admin.digest(&address, last).await?));
            }
            let first = digests[0].1.clone();
            if digests.iter().all(|(_, digest)| digest.applied_index == first.applied_index) {
                anyhow::ensure!(
                    digests.iter().all(|(_, digest)| *digest == first),
                    "the KMAs diverged: different state digests at index {}: {digests:#?}",
                    first.applied_index
                );
                return Ok(first);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("the KMAs never answered at the same applied index: {digests:#?}")
    }
}

/// The compose file's variables for a test project: its own export dir, exported files owned
/// by this user, and management and KMIP ports on 127.0.0.1 chosen by Docker (no clash with
/// other tests or a cluster someone runs on 7701-7703 and 7721-7723).
fn compose_env(export: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let owner = std::fs::metadata(export)?;
    let mut env = vec![
        ("KMS_IMAGE".to_string(), crate::image::KMA_IMAGE.to_string()),
        ("KMS_DOCKER_DIR".into(), export.display().to_string()),
        ("KMS_EXPORT_UID".into(), owner.uid().to_string()),
        ("KMS_EXPORT_GID".into(), owner.gid().to_string()),
    ];
    for n in 1..=SERVICES.len() {
        env.push((format!("KMS_KMA{n}_PUBLISH"), "127.0.0.1:".into()));
        env.push((format!("KMS_KMA{n}_KMIP_PUBLISH"), "127.0.0.1:".into()));
    }
    Ok(env)
}

/// Logs the Security Officer in at kma1 with the exported secrets file, as an operator would
/// with kmsctl (no administrator certificate exists): retried while kma1 starts, applies its
/// quickstart and elects itself.
async fn officer_session(
    compose: &Compose,
    export: &Path,
    timeout: Duration,
) -> anyhow::Result<KmaClient> {
    let secrets = node::setup::read_secrets(&export.join("secrets.toml"))?;
    let ca_pem = std::fs::read_to_string(export.join("tls/ca.pem"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let address = compose.port("kma1", MANAGEMENT_PORT).await?;
            let passphrase = &secrets.security_officer_passphrase;
            KmaClient::login(&address, &ca_pem, &secrets.security_officer, passphrase).await
        };
        match attempt.await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context("the Security Officer could not log in at kma1"))
            }
            Err(_) => tokio::time::sleep(POLL_PAUSE).await,
        }
    }
}

async fn wait_for_files(dir: &Path, names: &[&str], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !names.iter().all(|name| dir.join(name).exists()) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "kma1 did not export its CA and secrets file to {} within {timeout:?}",
            dir.display()
        );
        tokio::time::sleep(POLL_PAUSE).await;
    }
    Ok(())
}
