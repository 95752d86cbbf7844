//! Creating a data dir: `kma init` for the first KMA of a new cluster, `kma join` for the next.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use statemachine::command::InitCluster;
use statemachine::quorum::{Quorum, QuorumMember};
use statemachine::ClusterId;

use crate::config::{advertise_host, DataDirLayout, NodeConfig, CONFIG_FILE};
use crate::kma::https_client;
use crate::pki::{self, CertificateAuthority, Identity};
use crate::wire::{JoinRequest, JoinResponse, POSTCARD};

/// Where a new KMA listens and how others reach it.
pub struct Listeners {
    pub management_listen: SocketAddr,
    pub management_advertise: String,
    pub service_listen: SocketAddr,
}

/// What the first start of the first KMA proposes once it leads (see `Kma::run_quickstart`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quickstart {
    /// Hex: TOML integers stop at 2^63.
    pub cluster_id: String,
    pub kma_name: String,
    pub site: String,
    pub security_officer: String,
    pub quorum_members: Vec<String>,
    pub quorum_threshold: u8,
}

pub const QUICKSTART_FILE: &str = "quickstart.toml";

impl Quickstart {
    /// The quickstart command. The master key and the members' wrapped shares come with the
    /// security core (issue #4): until then each share is 48 random bytes that protect nothing.
    pub fn command(&self) -> Option<InitCluster> {
        let cluster_id = u64::from_str_radix(&self.cluster_id, 16).ok()?;
        let members = self
            .quorum_members
            .iter()
            .map(|id| {
                let mut share = vec![0u8; 48];
                rand::thread_rng().fill_bytes(&mut share);
                QuorumMember { id: id.clone(), wrapped_share: share }
            })
            .collect();
        Some(InitCluster {
            cluster_id: ClusterId(cluster_id),
            kma_name: self.kma_name.clone(),
            site: self.site.clone(),
            security_officer: self.security_officer.clone(),
            security_officer_verifier: vec![0; 32],
            quorum: Quorum { members, threshold: self.quorum_threshold },
        })
    }
}

fn refuse_existing(data_dir: &Path) -> anyhow::Result<()> {
    if data_dir.join(CONFIG_FILE).exists() {
        anyhow::bail!(
            "{} already holds a KMA (found {CONFIG_FILE}); start it with `kma run --data-dir {}` \
             or choose another directory",
            data_dir.display(),
            data_dir.display()
        );
    }
    std::fs::create_dir_all(DataDirLayout::new(data_dir).tls_dir())?;
    Ok(())
}

fn hosts_for(advertise: &str) -> anyhow::Result<Vec<String>> {
    let host = advertise_host(advertise)
        .ok_or_else(|| anyhow::anyhow!("--advertise '{advertise}' must be host:port"))?;
    Ok(vec![host.to_string(), "localhost".into(), "127.0.0.1".into()])
}

/// Creates the first KMA of a new cluster: cluster ID, CA, the KMA's and the bootstrap
/// administrator's certificates, its configuration, and the pending quickstart.
pub fn init(
    data_dir: &Path,
    name: &str,
    site: &str,
    listeners: &Listeners,
    quorum: (Vec<String>, u8),
) -> anyhow::Result<u64> {
    refuse_existing(data_dir)?;
    let tls_dir = DataDirLayout::new(data_dir).tls_dir();
    let cluster_id = rand::random::<u64>();
    let ca = CertificateAuthority::create(cluster_id)?;
    ca.save(&tls_dir)?;
    let (cert, key) = ca.issue(&Identity::Kma(1), &hosts_for(&listeners.management_advertise)?)?;
    pki::write(&tls_dir.join(pki::NODE_CERT_FILE), &cert, false)?;
    pki::write(&tls_dir.join(pki::NODE_KEY_FILE), &key, true)?;
    let (cert, key) = ca.issue(&Identity::User("admin".into()), &[])?;
    pki::write(&tls_dir.join(pki::ADMIN_CERT_FILE), &cert, false)?;
    pki::write(&tls_dir.join(pki::ADMIN_KEY_FILE), &key, true)?;
    let quickstart = Quickstart {
        cluster_id: format!("{cluster_id:016x}"),
        kma_name: name.into(),
        site: site.into(),
        security_officer: "admin".into(),
        quorum_members: quorum.0,
        quorum_threshold: quorum.1,
    };
    std::fs::write(data_dir.join(QUICKSTART_FILE), toml::to_string_pretty(&quickstart)?)?;
    config(1, name, site, listeners).save(data_dir)?;
    Ok(cluster_id)
}

fn config(node_id: u64, name: &str, site: &str, listeners: &Listeners) -> NodeConfig {
    NodeConfig {
        node_id,
        name: name.into(),
        site: site.into(),
        management_listen: listeners.management_listen,
        management_advertise: listeners.management_advertise.clone(),
        service_listen: listeners.service_listen,
        election_timeout_ms_min: 600,
        election_timeout_ms_max: 1_200,
        heartbeat_ms: 150,
        snapshot_logs_since_last: 50_000,
        snapshot_logs_kept: 20_000,
    }
}

/// Joins a running cluster through `peer` with a token from `kma token`: pins the CA by the
/// token's fingerprint, sends a signing request, and writes the data dir.
pub async fn join(
    data_dir: &Path,
    name: &str,
    site: &str,
    listeners: &Listeners,
    peer: &str,
    token: &str,
) -> anyhow::Result<u64> {
    let (secret, pin) = pki::parse_join_token(token)?;
    let ca_pem = fetch_pinned_ca(peer, &pin).await?;
    refuse_existing(data_dir)?;
    let tls_dir = DataDirLayout::new(data_dir).tls_dir();
    let (csr_pem, key_pem) = pki::signing_request()?;
    let request = JoinRequest {
        token_secret: secret,
        name: name.into(),
        site: site.into(),
        management_advertise: listeners.management_advertise.clone(),
        csr_pem,
    };
    let client = https_client(crate::tls::anonymous_client_config(&ca_pem)?)?;
    let response = client
        .post(format!("https://{peer}/v1/join"))
        .header(reqwest::header::CONTENT_TYPE, POSTCARD)
        .body(postcard::to_allocvec(&request)?)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let answer: Result<JoinResponse, String> = postcard::from_bytes(&response.bytes().await?)?;
    let joined = answer.map_err(|refusal| anyhow::anyhow!("{peer} refused the join: {refusal}"))?;
    pki::write(&tls_dir.join(pki::CA_FILE), &joined.ca_pem, false)?;
    pki::write(&tls_dir.join(pki::NODE_CERT_FILE), &joined.cert_pem, false)?;
    pki::write(&tls_dir.join(pki::NODE_KEY_FILE), &key_pem, true)?;
    config(joined.node_id, name, site, listeners).save(data_dir)?;
    Ok(joined.node_id)
}

async fn fetch_pinned_ca(peer: &str, pin: &[u8; 32]) -> anyhow::Result<String> {
    let client = https_client(crate::tls::ca_fetch_client_config()?)?;
    let ca_pem = client
        .get(format!("https://{peer}/v1/ca"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {peer}: {e:#}"))?
        .text()
        .await?;
    if pki::fingerprint(&ca_pem)? != *pin {
        anyhow::bail!(
            "the CA of {peer} does not match the join token's fingerprint: the token is for \
             another cluster, or something between you and {peer} is not the KMA"
        );
    }
    Ok(ca_pem)
}
