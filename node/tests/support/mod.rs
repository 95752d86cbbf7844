//! A cluster of real `kma` processes on loopback for tests: start, kill -9, restart, write, and
//! compare what every KMA holds. Each test gets its own data dirs and ports the OS chooses
//! (every listener is created with port 0), so test binaries run side by side.
#![allow(dead_code)]

pub mod agents;
pub mod wait;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node::client::KmaClient;
use node::config::{Listening, NodeConfig};
use node::setup::{InitSecrets, Listeners};
use statemachine::{Command, Role, RoleSet};
use tokio::process::Child;
// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use wait::{done_if, holds_for, wait_until};

pub const KMA: &str = env!("CARGO_BIN_EXE_kma");

/// A listener address for a new KMA: loopback, a port the OS chooses when the KMA is created
/// (kept in its `kma.toml` from then on).
pub const ANY_PORT: &str = "127.0.0.1:0";

pub struct Node {
    pub name: String,
    pub data_dir: PathBuf,
    /// host:port of the management listener, as the KMA advertises it.
    pub address: String,
    /// host:port of the service listener (agents).
    pub service: String,
    pub child: Option<Child>,
}

impl Node {
    /// The KMA in `data_dir`, where its `kma.toml` (written by init or join) says it listens.
    pub fn created(data_dir: PathBuf) -> Node {
        let config = NodeConfig::load(&data_dir).expect("kma.toml written by init or join");
        Node {
            name: config.name.clone(),
            address: config.management_advertise.clone(),
            service: config.service_advertise(),
            data_dir,
            child: None,
        }
    }
}

pub struct Cluster {
    pub root: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub admin: KmaClient,
    pub secrets: InitSecrets,
    /// The CA's private key as `kma init` wrote it, before the first start erased it.
    pub ca_key_at_init: String,
    /// Whether the KMAs unlock themselves after a restart.
    pub autonomous: bool,
    /// kma1's own certificate, valid for years: reads a KMA's status where a session
    /// certificate (8 hours) is not valid, on a KMA whose clock runs a year ahead.
    pub reader: KmaClient,
}

/// The quickstart secrets the test clusters use: officer `admin`, quorum q1..q3, two approvals.
pub const SECRETS: &str = r#"
security_officer = "admin"
security_officer_passphrase = "officer-passphrase-1"
quorum_threshold = 2
autonomous_unlock = true

[[quorum]]
id = "q1"
passphrase = "member-one-passphrase"

[[quorum]]
id = "q2"
passphrase = "member-two-passphrase"

[[quorum]]
id = "q3"
passphrase = "member-three-passphrase"
"#;

/// Small snapshot thresholds so tests see snapshots and purged logs with a few hundred writes.
pub fn small_snapshots(config: &mut NodeConfig) {
    config.snapshot_logs_since_last = 200;
    config.snapshot_logs_kept = 50;
    config.purge_batch_entries = 64;
}

pub fn no_change(_: &mut NodeConfig) {}

pub fn tweak(data_dir: &Path, change: fn(&mut NodeConfig)) {
    let mut config = NodeConfig::load(data_dir).expect("config written by init/join");
    change(&mut config);
    config.save(data_dir).expect("config saved");
}

impl Cluster {
    /// `count` KMAs on loopback ports the OS chooses, every config passed through `change`.
    pub async fn start(count: usize, change: fn(&mut NodeConfig)) -> Cluster {
        Cluster::start_unlocking(count, change, true).await
    }

    /// As [`Cluster::start`]; with `autonomous` false no KMA may unlock itself after a restart
    /// (the quickstart's choice for kma1, the quorum's for the others): the quorum unlocks it.
    pub async fn start_unlocking(
        count: usize,
        change: fn(&mut NodeConfig),
        autonomous: bool,
    ) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let first = root.path().join("kma1");
        let secrets_path = root.path().join("secrets.toml");
        let secrets_text = match autonomous {
            true => SECRETS.to_string(),
            false => SECRETS.replace("autonomous_unlock = true", "autonomous_unlock = false"),
        };
        std::fs::write(&secrets_path, secrets_text).expect("secrets file");
        let secrets = node::setup::read_secrets(&secrets_path).expect("secrets parse");
        let output = tokio::process::Command::new(KMA)
            .args(["init", "--name", "kma1", "--site", "east"])
            .args(["--management", ANY_PORT, "--service", ANY_PORT])
            .arg("--data-dir")
            .arg(&first)
            .arg("--secrets-file")
            .arg(&secrets_path)
            .output()
            .await
            .expect("kma init runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "kma init failed: {stderr}");
        tweak(&first, change);
        // What a copy of kma1's disk taken now would hold: the CA key before the first start
        // wraps it into the state and erases the file (the tests mint with it, as an attacker
        // holding such an old copy could).
        let ca_key_at_init =
            std::fs::read_to_string(first.join("tls/ca-key.pem")).expect("kma init's CA key");
        // Until the officer can log in, readiness is read with kma1's own certificate.
        let reader = KmaClient::node(&first).expect("kma1's client");
        let nodes = vec![Node::created(first)];
        let admin = reader.clone();
        let mut cluster =
            Cluster { root, nodes, admin, reader, secrets, ca_key_at_init, autonomous };
        cluster.restart(0).await;
        cluster.wait_ready(0).await;
        cluster.admin = cluster.officer().await;
        for n in 2..=count {
            cluster.add_node(n, change).await;
        }
        cluster.wait_voters(count).await;
        cluster.wait_format_settled().await;
        cluster
    }

    /// Waits until kma1 reports that the cluster reads the log format kma1 reads (every KMA
    /// has reported its version, so logins from now on record their session certificates) and
    /// every running KMA holds the CA key (it signs logins and enrollments).
    pub async fn wait_format_settled(&self) {
        wait_until(Duration::from_secs(60), "every KMA's version reported", async || {
            let s = self.status(0).await?;
            done_if(s.cluster_log_format >= s.log_format, format!("{s:?}"))
        })
        .await;
        for index in self.running() {
            wait_until(Duration::from_secs(60), "every KMA to hold the CA key", async || {
                let s = self.status(index).await?;
                done_if(s.ca_key_held, format!("{s:?}"))
            })
            .await;
        }
    }

    /// A new session of the Security Officer, logged in at kma1 with the quickstart passphrase
    /// (`kma init` writes no administrator certificate: issue #16 point 9).
    pub async fn officer(&self) -> KmaClient {
        let first = &self.nodes[0];
        node::setup::local::officer_session(&first.data_dir, &first.address, &self.secrets)
            .await
            .expect("the officer logs in")
    }

    /// Admits KMA number `n` through the quorum, joins it, starts it, and has the quorum unlock
    /// it and let it unlock itself after restarts (SPEC C4, C6).
    pub async fn add_node(&mut self, n: usize, change: fn(&mut NodeConfig)) -> usize {
        let index = self.add_node_locked(n, change).await;
        let (peer, name) = (self.nodes[0].address.clone(), self.nodes[index].name.clone());
        let autonomous = self.autonomous;
        node::setup::local::unlock_when_member(
            &self.admin,
            &peer,
            &self.secrets,
            &name,
            autonomous,
        )
        .await
        .expect("quorum unlock");
        index
    }

    /// Admits, joins and starts KMA `n`, which starts locked (SPEC C6): no quorum unlock.
    pub async fn add_node_locked(&mut self, n: usize, change: fn(&mut NodeConfig)) -> usize {
        let data_dir = self.root.path().join(format!("kma{n}"));
        let any_port = ANY_PORT.parse().expect("address");
        let listeners = Listeners {
            management_listen: any_port,
            management_advertise: ANY_PORT.into(),
            service_listen: any_port,
            kmip_listen: None,
        };
        let site = if n % 2 == 0 { "east" } else { "west" };
        let name = format!("kma{n}");
        let passphrase = format!("join-passphrase-{n}");
        let peer = self.nodes[0].address.clone();
        node::setup::quorum_flow::admit_kma(
            &self.admin,
            &peer,
            &self.secrets,
            (&name, site),
            &passphrase,
        )
        .await
        .expect("admit");
        let fingerprint = self.ca_fingerprint();
        let credentials = node::setup::JoinCredentials {
            peer: &peer,
            passphrase: &passphrase,
            ca_fingerprint: Some(&fingerprint),
            wait: Duration::from_secs(30),
        };
        node::setup::join(&data_dir, &name, site, &listeners, &credentials).await.expect("join");
        tweak(&data_dir, change);
        self.nodes.push(Node::created(data_dir));
        let index = self.nodes.len() - 1;
        self.restart(index).await;
        index
    }

    /// The cluster CA's fingerprint, as `kma init` printed it (hex SHA-256).
    pub fn ca_fingerprint(&self) -> String {
        let ca = node::pki::read(&self.nodes[0].data_dir.join("tls/ca.pem")).expect("CA");
        hex::encode(node::pki::fingerprint(&ca).expect("fingerprint"))
    }

    /// Starts `kma run` for KMA `index` and waits until it reports its listeners bound, at the
    /// addresses of its `kma.toml`; fails with the end of its log if it exits first.
    pub async fn restart(&mut self, index: usize) {
        self.restart_under(index, &[]).await;
    }

    /// As [`Cluster::restart`], through a wrapper command (e.g. `faketime -f +365d`).
    pub async fn restart_under(&mut self, index: usize, wrapper: &[&str]) {
        let node = &mut self.nodes[index];
        assert!(node.child.is_none(), "{} is already running", node.name);
        let mut child =
            node::setup::local::spawn_run_under(wrapper, Path::new(KMA), &node.data_dir)
                .expect("spawn kma run");
        let config = NodeConfig::load(&node.data_dir).expect("config");
        let expected = Listening {
            management: config.management_listen,
            service: config.service_listen,
            kmip: config.kmip_listen,
        };
        let what = format!("{} to report its listeners", node.name);
        let listening = wait_until(Duration::from_secs(60), &what, async || {
            if let Some(exit) = child.try_wait().expect("child status") {
                let log =
                    std::fs::read_to_string(node.data_dir.join("kma.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                panic!("{} exited ({exit}) before listening; its kma.log ends:\n{tail}", node.name);
            }
            Listening::load(&node.data_dir).expect("listening.toml").ok_or("no listening.toml yet")
        })
        .await;
        assert_eq!(listening, expected, "{} listens where its kma.toml says", node.name);
        node.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush beyond what was already synced.
    pub async fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            child.start_kill().expect("kill -9");
            child.wait().await.expect("reaped");
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub async fn stop(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            }
            let waited = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
            assert!(
                waited.is_ok(),
                "{} did not stop within 20 s of SIGTERM",
                self.nodes[index].name
            );
        }
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].child.is_some()).collect()
    }

    /// The status of KMA `index`: read with the officer's session, or else with kma1's own
    /// certificate (a KMA whose clock runs far ahead finds the session not yet or no longer
    /// valid).
    pub async fn status(&self, index: usize) -> Result<node::wire::NodeStatus, String> {
        let address = &self.nodes[index].address;
        match self.admin.status(address).await {
            Ok(status) => Ok(status),
            Err(error) => self.reader.status(address).await.map_err(|_| error.to_string()),
        }
    }

    pub async fn wait_ready(&self, index: usize) {
        node::setup::local::wait_ready(
            &self.reader,
            &self.nodes[index].address,
            Duration::from_secs(60),
        )
        .await
        .expect("KMA ready");
    }

    /// Waits until every running KMA reports `count` voters and no learner. Every KMA, not just
    /// the leader: a follower still in the joint configuration of a promotion needs the old
    /// majority too, so losing the leader at that moment would rightly leave it without one.
    pub async fn wait_voters(&self, count: usize) {
        let what = format!("every running KMA to report {count} voters and no learner");
        wait_until(Duration::from_secs(90), &what, async || {
            let mut seen = Vec::new();
            for index in self.running() {
                let status = self.status(index).await;
                let members = status.map(|s| (s.voters, s.learners));
                seen.push((self.nodes[index].name.clone(), members));
            }
            let settled = seen.iter().all(|(_, members)| {
                members
                    .as_ref()
                    .is_ok_and(|(voters, learners)| voters.len() == count && learners.is_empty())
            });
            done_if(settled, seen)
        })
        .await;
    }

    /// Index (in `nodes`) of the leader that a running KMA reports, waiting for one.
    pub async fn leader(&self, timeout: Duration) -> usize {
        wait_until(timeout, "a leader among the running KMAs", async || {
            let mut seen = Vec::new();
            for index in self.running() {
                let Ok(status) = self.status(index).await else {
                    continue;
                };
                let found = status.leader_id.and_then(|leader| self.node_index(leader));
                if found.is_some_and(|i| self.nodes[i].child.is_some())
                    && status.role != "candidate"
                {
                    return Ok(found.expect("checked"));
                }
                seen.push((status.name, status.role, status.leader_id));
            }
            Err(seen)
        })
        .await
    }

    pub fn node_index(&self, node_id: u64) -> Option<usize> {
        self.nodes.iter().position(|node| {
            NodeConfig::load(&node.data_dir)
                .map(|config| config.node_id == node_id)
                .unwrap_or(false)
        })
    }

    /// Checks that every running KMA holds every acknowledged user and that all digests agree
    /// at the same applied index.
    pub async fn assert_converged(&self, acked: &Acked) {
        let (users, max_index) = acked.snapshot();
        let mut digests = BTreeSet::new();
        for index in self.running() {
            let address = &self.nodes[index].address;
            let digest = self.digest(index, max_index).await;
            // Users are read with a session; a KMA whose clock runs far ahead finds none valid.
            // Its digest is compared with the others' below, which covers its users too.
            let Ok(users_here) = self.admin.users(address).await else {
                digests
                    .insert((0, format!("{} not compared by its users", self.nodes[index].name)));
                continue;
            };
            let present: BTreeSet<String> = users_here.into_iter().collect();
            let missing: Vec<&String> =
                users.iter().filter(|user| !present.contains(*user)).collect();
            assert!(
                missing.is_empty(),
                "{} lacks acknowledged users {missing:?}",
                self.nodes[index].name
            );
            digests.insert((digest.applied_index, digest.sha256));
        }
        // Digests are taken at possibly different applied indexes if writes still trickle in;
        // compare at one index by retrying until all agree.
        if digests.len() > 1 {
            self.wait_same_digest().await;
        }
    }

    /// KMA `index`'s state digest at `min_index` or later, read with the officer's session or
    /// else with kma1's own certificate (see [`Cluster::status`]).
    async fn digest(&self, index: usize, min_index: u64) -> node::wire::StateDigest {
        let address = &self.nodes[index].address;
        match self.admin.digest(address, min_index).await {
            Ok(digest) => digest,
            Err(_) => self.reader.digest(address, min_index).await.expect("digest"),
        }
    }

    async fn wait_same_digest(&self) {
        wait_until(Duration::from_secs(30), "the same digest on every running KMA", async || {
            let mut digests = BTreeSet::new();
            for index in self.running() {
                let digest = self.digest(index, 0).await;
                digests.insert((digest.applied_index, digest.sha256));
            }
            done_if(digests.len() == 1, digests)
        })
        .await;
    }

    /// The management addresses of the running KMAs.
    pub fn running_addresses(&self) -> Vec<String> {
        self.running().into_iter().map(|index| self.nodes[index].address.clone()).collect()
    }

    /// The service addresses of every KMA, in order.
    pub fn services(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.service.clone()).collect()
    }
}

/// Acknowledged writes: user IDs and the highest log index acknowledged.
#[derive(Clone, Default)]
pub struct Acked(Arc<Mutex<(Vec<String>, u64)>>);

impl Acked {
    pub fn record(&self, user: String, index: u64) {
        let mut inner = self.0.lock().expect("lock");
        inner.0.push(user);
        inner.1 = inner.1.max(index);
    }

    pub fn snapshot(&self) -> (Vec<String>, u64) {
        self.0.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.0.lock().expect("lock").0.len()
    }

    /// Waits until `count` writes in all are acknowledged: `what` says what that shows.
    pub async fn wait_count(&self, count: usize, what: &str) {
        let what = format!("{count} acknowledged writes ({what})");
        wait_until(Duration::from_secs(30), &what, async || {
            done_if(self.count() >= count, self.count())
        })
        .await;
    }
}

/// One user creation through `address`. True when the cluster answered (the write was applied,
/// or an earlier unanswered attempt had already created the user); acknowledged writes are
/// recorded.
pub async fn write_user(admin: &KmaClient, address: &str, user: String, acked: &Acked) -> bool {
    let command = Command::CreateUser {
        id: user.clone(),
        roles: RoleSet::of(Role::Auditor),
        passphrase_verifier: Vec::new(),
    };
    match admin.propose_with_passphrase(address, None, command, Some("workload-pass")).await {
        Ok(Ok(applied)) => {
            if applied.result.is_ok() {
                acked.record(user, applied.index);
            }
            true
        }
        _ => false,
    }
}

/// After a failed write the writer pauses this long before trying the next KMA: without it,
/// a writer would spin on refusals while the cluster elects a leader. A pacing of the retries,
/// not a wait for anything.
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Writes users round-robin over `addresses` until `stop` is set; failures are retried on the
/// next KMA (a write may land twice only as a rejected duplicate, never as two users).
pub fn spawn_writer(
    admin: KmaClient,
    addresses: Vec<String>,
    prefix: &str,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut n = 0usize;
        let mut attempt = 0usize;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let address = &addresses[attempt % addresses.len()];
            attempt += 1;
            if write_user(&admin, address, format!("{prefix}-{n}"), &acked).await {
                n += 1;
            } else {
                tokio::time::sleep(WRITE_RETRY_PAUSE).await;
            }
        }
    })
}

/// Every file under `root` that contains `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|window| window == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// An administrator's management API client at `address`: the officer, logged in there.
pub async fn admin_api_client(cluster: &Cluster, address: &str) -> admin_api::client::AdminClient {
    let tls = cluster.nodes[0].data_dir.join("tls");
    let ca_pem = node::pki::read(&tls.join("ca.pem")).expect("the CA");
    let addresses = vec![address.to_string()];
    let (officer, passphrase) =
        (&cluster.secrets.security_officer, &cluster.secrets.security_officer_passphrase);
    let granted = admin_api::client::login(&addresses, &ca_pem, officer, passphrase)
        .await
        .expect("the officer logs in");
    admin_api::client::AdminClient::new(addresses, &ca_pem, &granted.cert_pem, &granted.key_pem)
        .expect("admin API client")
        .with_login_index(granted.login_index)
}
