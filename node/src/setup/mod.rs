//! Creating a data dir: `kma init` for the first KMA of a new cluster, `kma join` for the next.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use security_core::challenge::{ClientLogin, ServerChallenge};
use security_core::{KdfParams, MasterKey};
use serde::{Deserialize, Serialize};
use statemachine::command::InitCluster;
use statemachine::quorum::{Quorum, QuorumMember};
use statemachine::{ClusterId, Command, State};

pub mod join_session;
pub mod local;
pub mod prompt;
pub mod quorum_flow;
pub mod recover;
pub mod reset;
pub mod restore;

use std::sync::Arc;

use crate::config::{advertise_host, advertise_port, DataDirLayout, NodeConfig, CONFIG_FILE};
use crate::kma::https_client;
use crate::kma::Kma;
use crate::pki::{self, CertificateAuthority, Identity};
use crate::vault::Vault;
use crate::wire::{JoinGranted, ProofRequest, SecurityRefusal};
use join_session::JoinSession;

/// Where a new KMA listens and how others reach it. Port 0 asks for a port the OS chooses
/// (see [`Listeners::with_chosen_ports`]).
#[derive(Clone, Debug)]
pub struct Listeners {
    pub management_listen: SocketAddr,
    pub management_advertise: String,
    pub service_listen: SocketAddr,
    /// The KMIP listener (issue 19), when the KMA serves KMIP.
    pub kmip_listen: Option<SocketAddr>,
}

impl Listeners {
    /// These listeners with every port 0 replaced by a free port the OS chooses now, and an
    /// advertised port 0 by the management port chosen. `kma init` and `kma join` write the
    /// result into `kma.toml`, because the advertised address goes into the Raft membership and
    /// must stay the same across restarts; `kma run` then binds those ports. Each port is
    /// learned by binding it, and both sockets are held until both are known, so the two differ.
    /// (Another program could take a port between here and `kma run`; `kma run` then stops
    /// and names the port.)
    pub fn with_chosen_ports(&self) -> anyhow::Result<Listeners> {
        let choose = |address: SocketAddr, what: &str, example: u16| -> anyhow::Result<_> {
            if address.port() != 0 {
                return Ok((address, None));
            }
            let ip = address.ip();
            let socket = std::net::TcpListener::bind(address).map_err(|e| {
                anyhow::anyhow!(
                    "cannot find a free port for the {what} listener on {ip}: {e}; is {ip} an \
                     address of this machine? Or give the listener a port (--{what} \
                     {address})",
                    address = SocketAddr::new(ip, example)
                )
            })?;
            let chosen = socket.local_addr()?;
            Ok((chosen, Some(socket)))
        };
        let (management_listen, _held) = choose(self.management_listen, "management", 7001)?;
        let (service_listen, _also_held) = choose(self.service_listen, "service", 7101)?;
        let (kmip_listen, _kmip_held) = match self.kmip_listen {
            Some(address) => {
                let (chosen, held) = choose(address, "kmip", agent_gateway::kmip::KMIP_PORT)?;
                (Some(chosen), held)
            }
            None => (None, None),
        };
        let management_advertise = match advertise_port(&self.management_advertise) {
            Some(0) => {
                let host = advertise_host(&self.management_advertise).unwrap_or("127.0.0.1");
                format!("{host}:{}", management_listen.port())
            }
            _ => self.management_advertise.clone(),
        };
        Ok(Listeners { management_listen, management_advertise, service_listen, kmip_listen })
    }
}

/// What the first start of the first KMA proposes once it leads (see `run_quickstart`).
/// Holds no secret: the shares are wrapped under the members' passphrases and the officer's
/// passphrase is only a verifier. The master key itself waits, sealed to this KMA, in
/// `vault::SEALED_FILE`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quickstart {
    /// Hex: TOML integers stop at 2^63.
    pub cluster_id: String,
    pub kma_name: String,
    pub site: String,
    pub security_officer: String,
    /// Hex of the officer's passphrase verifier.
    pub security_officer_verifier: String,
    /// (member ID, hex of the wrapped share).
    pub quorum_shares: Vec<(String, String)>,
    pub quorum_threshold: u8,
    pub autonomous_unlock: bool,
}

pub const QUICKSTART_FILE: &str = "quickstart.toml";

impl Quickstart {
    pub fn command(&self) -> Option<InitCluster> {
        let cluster_id = u64::from_str_radix(&self.cluster_id, 16).ok()?;
        let members = self
            .quorum_shares
            .iter()
            .map(|(id, share)| {
                Some(QuorumMember { id: id.clone(), wrapped_share: hex::decode(share).ok()? })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(InitCluster {
            cluster_id: ClusterId(cluster_id),
            kma_name: self.kma_name.clone(),
            site: self.site.clone(),
            security_officer: self.security_officer.clone(),
            security_officer_verifier: hex::decode(&self.security_officer_verifier).ok()?,
            quorum: Quorum { members, threshold: self.quorum_threshold },
            autonomous_unlock: self.autonomous_unlock,
        })
    }
}

/// The secrets of a quickstart, from a file (scripts) or typed in (people).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSecrets {
    pub security_officer: String,
    pub security_officer_passphrase: String,
    /// (member ID, passphrase), in order.
    pub quorum: Vec<QuorumMemberSecret>,
    pub quorum_threshold: u8,
    #[serde(default)]
    pub autonomous_unlock: bool,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumMemberSecret {
    pub id: String,
    pub passphrase: String,
}

/// Reads the quickstart's secrets from a TOML file (scripts, tests, `kma local`).
pub fn read_secrets(path: &Path) -> anyhow::Result<InitSecrets> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The shortest passphrase the quickstart accepts (the cluster's default minimum).
pub const PASSPHRASE_LEN_MIN: usize = 8;

impl InitSecrets {
    fn check(&self) -> anyhow::Result<()> {
        let short = |what: &str, passphrase: &str| {
            (passphrase.chars().count() < PASSPHRASE_LEN_MIN).then(|| {
                anyhow::anyhow!(
                    "the passphrase of {what} is shorter than {PASSPHRASE_LEN_MIN} characters"
                )
            })
        };
        if let Some(error) = short("the Security Officer", &self.security_officer_passphrase) {
            return Err(error);
        }
        for member in &self.quorum {
            if let Some(error) =
                short(&format!("quorum member '{}'", member.id), &member.passphrase)
            {
                return Err(error);
            }
        }
        Ok(())
    }
}

pub(crate) fn refuse_existing(data_dir: &Path) -> anyhow::Result<()> {
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

/// The cluster CA whose key `state` holds, unwrapped under the master key, to sign the
/// certificate of a restored or recovered KMA; and its certificate, as PEM (`candidate_pem`
/// when that is it: the backup's header, or the survivor's `tls/ca.pem`).
pub(crate) fn state_ca(
    state: &State,
    cluster_id: ClusterId,
    master: &MasterKey,
    candidate_pem: &str,
) -> anyhow::Result<(CertificateAuthority, String)> {
    let Some(wrapped_ca) = state.wrapped_ca_key().cloned() else {
        anyhow::bail!(
            "the state holds no CA key (it was written before the cluster kept its CA key there)"
        );
    };
    let ca_pem = if pki::fingerprint(candidate_pem).ok() == Some(wrapped_ca.ca_certificate_sha256) {
        candidate_pem.to_string()
    } else {
        match state.ca_certificate_der() {
            Some(der)
                if pki::fingerprint(&pki::pem_of_der(der)).ok()
                    == Some(wrapped_ca.ca_certificate_sha256) =>
            {
                pki::pem_of_der(der)
            }
            _ => anyhow::bail!("the state holds no certificate of the CA whose key it holds"),
        }
    };
    let ca_key = security_core::ca_key::unwrap_ca_key(
        master,
        cluster_id,
        &wrapped_ca.ca_certificate_sha256,
        &wrapped_ca.wrapped_key,
    )?;
    let ca = CertificateAuthority::from_pem(ca_pem.clone(), &ca_key, Path::new("the state"))?;
    Ok((ca, ca_pem))
}

pub(crate) fn hosts_for(advertise: &str) -> anyhow::Result<Vec<String>> {
    let host = advertise_host(advertise)
        .ok_or_else(|| anyhow::anyhow!("--advertise '{advertise}' must be host:port"))?;
    Ok(vec![host.to_string(), "localhost".into(), "127.0.0.1".into()])
}

/// Creates the first KMA of a new cluster: cluster ID, CA, the KMA's certificate, a fresh
/// master key split among the quorum, its configuration, and the pending quickstart. No
/// administrator certificate: the bootstrap officer logs in with its passphrase like anyone.
pub fn init(
    data_dir: &Path,
    name: &str,
    site: &str,
    listeners: &Listeners,
    secrets: &InitSecrets,
) -> anyhow::Result<u64> {
    secrets.check()?;
    let listeners = &listeners.with_chosen_ports()?;
    let master = MasterKey::generate();
    let cluster_id = rand::random::<u64>();
    let members: Vec<(&str, &str)> =
        secrets.quorum.iter().map(|m| (m.id.as_str(), m.passphrase.as_str())).collect();
    let kdf = KdfParams::default();
    let shares = security_core::split_master_key(
        &master,
        ClusterId(cluster_id),
        &members,
        secrets.quorum_threshold,
        kdf,
    )?;
    let verifier = security_core::create_verifier(&secrets.security_officer_passphrase, kdf)?;
    refuse_existing(data_dir)?;
    let tls_dir = DataDirLayout::new(data_dir).tls_dir();
    let ca = CertificateAuthority::create(cluster_id)?;
    ca.save(&tls_dir)?;
    let (cert, key) = ca.issue(&Identity::Kma(1), &hosts_for(&listeners.management_advertise)?)?;
    pki::write(&tls_dir.join(pki::NODE_CERT_FILE), &cert, false)?;
    pki::write(&tls_dir.join(pki::NODE_KEY_FILE), &key, true)?;
    // Until the quickstart is committed this KMA is the only holder of the master key.
    Vault::open(data_dir, &key)?.seal(&master, ClusterId(cluster_id))?;
    let quickstart = Quickstart {
        cluster_id: format!("{cluster_id:016x}"),
        kma_name: name.into(),
        site: site.into(),
        security_officer: secrets.security_officer.clone(),
        security_officer_verifier: hex::encode(verifier),
        quorum_shares: shares.into_iter().map(|(id, share)| (id, hex::encode(share))).collect(),
        quorum_threshold: secrets.quorum_threshold,
        autonomous_unlock: secrets.autonomous_unlock,
    };
    std::fs::write(data_dir.join(QUICKSTART_FILE), toml::to_string_pretty(&quickstart)?)?;
    config(1, name, site, listeners).save(data_dir)?;
    Ok(cluster_id)
}

pub(crate) fn config(node_id: u64, name: &str, site: &str, listeners: &Listeners) -> NodeConfig {
    NodeConfig {
        node_id,
        name: name.into(),
        site: site.into(),
        management_listen: listeners.management_listen,
        management_advertise: listeners.management_advertise.clone(),
        service_listen: listeners.service_listen,
        kmip_listen: listeners.kmip_listen,
        election_timeout_ms_min: 600,
        election_timeout_ms_max: 1_200,
        heartbeat_ms: 150,
        snapshot_logs_since_last: 50_000,
        snapshot_logs_kept: 20_000,
        purge_batch_entries: 1_024,
        parallel_append: true,
        clock_ahead_max_ms: 60_000,
        serve_cut_off_ms: 86_400_000,
        connections_max: agent_gateway::ConnectionLimits::default().connections_max,
        anonymous_connections_max: agent_gateway::ConnectionLimits::default().anonymous_max,
        backup_dir: None,
        backups_kept: 7,
        backup_ship_command: None,
    }
}

/// How a new KMA proves itself to the cluster: its name and one-time passphrase, which a
/// Security Officer set when creating its entry (`CreateKma`).
pub struct JoinCredentials<'a> {
    pub peer: &'a str,
    pub passphrase: &'a str,
    /// SHA-256 of the cluster CA certificate (hex), when the operator has it to compare.
    pub ca_fingerprint: Option<&'a str>,
    /// How long to wait for the quorum to approve the join.
    pub wait: Duration,
}

/// Joins a running cluster through `peer`: proves the passphrase by challenge/response (the
/// KMA proves itself back), waits for the quorum's approval, and writes the data dir with the
/// certificate it receives for a key pair made here.
pub async fn join(
    data_dir: &Path,
    name: &str,
    site: &str,
    listeners: &Listeners,
    credentials: &JoinCredentials<'_>,
) -> anyhow::Result<u64> {
    let peer = credentials.peer;
    // Chosen before the cluster is asked: the advertised address goes into its membership.
    let listeners = &listeners.with_chosen_ports()?;
    let ca_pem = fetch_ca(peer, credentials.ca_fingerprint).await?;
    if data_dir.join(CONFIG_FILE).exists() {
        // Checked before asking the cluster anything; `refuse_existing` below says why.
        refuse_existing(data_dir)?;
    }
    let (csr_pem, key_pem) = pki::signing_request()?;
    let tls = crate::transport::tls::anonymous_client_config(&ca_pem)?;
    let deadline = tokio::time::Instant::now() + credentials.wait;
    let mut told = false;
    let granted = loop {
        let mut session = JoinSession::open(peer, tls.clone()).await?;
        match join_once(&mut session, name, listeners, credentials, &csr_pem).await? {
            JoinStep::Granted(granted) => break granted,
            JoinStep::AwaitingQuorum(message) => {
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!("{message} (gave up after {} s)", credentials.wait.as_secs());
                }
                if !told {
                    eprintln!("{message}; waiting...");
                    told = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    refuse_existing(data_dir)?;
    let tls_dir = DataDirLayout::new(data_dir).tls_dir();
    pki::write(&tls_dir.join(pki::CA_FILE), &granted.ca_pem, false)?;
    // Only a cluster below log format 3 hands the CA key out; from then on the joiner opens
    // the wrapped key in the state once unlocked.
    if !granted.ca_key_pem.is_empty() {
        pki::write(&tls_dir.join(pki::CA_KEY_FILE), &granted.ca_key_pem, true)?;
    }
    pki::write(&tls_dir.join(pki::NODE_CERT_FILE), &granted.cert_pem, false)?;
    pki::write(&tls_dir.join(pki::NODE_KEY_FILE), &key_pem, true)?;
    config(granted.node_id, name, site, listeners).save(data_dir)?;
    Ok(granted.node_id)
}

enum JoinStep {
    Granted(JoinGranted),
    AwaitingQuorum(String),
}

/// One exchange on `session`: hello, then the proof, bound to the session, the CSR and the
/// advertised address (`JoinExporter::binding`), so that a relay in the middle gets nothing.
async fn join_once(
    session: &mut JoinSession,
    name: &str,
    listeners: &Listeners,
    credentials: &JoinCredentials<'_>,
    csr_pem: &str,
) -> anyhow::Result<JoinStep> {
    let peer = credentials.peer;
    let advertise = &listeners.management_advertise;
    let binding = session.exporter().binding(csr_pem, advertise).ok_or_else(|| {
        anyhow::anyhow!("the TLS session with {peer} cannot bind a join proof: nothing was joined")
    })?;
    let (login, hello) = ClientLogin::start(name, crate::wire::PURPOSE_JOIN);
    let (status, body) = session.post("/v1/join/hello", &hello).await?;
    let challenge: ServerChallenge = decode_or_refusal(status, &body)?;
    let (awaiting, proof) =
        login.respond_bound(credentials.passphrase, &challenge, Some(&binding))?;
    let request = ProofRequest {
        proof,
        csr_pem: csr_pem.into(),
        management_advertise: Some(advertise.clone()),
    };
    let (status, body) = session.post("/v1/join/proof", &request).await?;
    if status == axum::http::StatusCode::CONFLICT {
        let refusal: SecurityRefusal = serde_json::from_slice(&body)?;
        return Ok(JoinStep::AwaitingQuorum(refusal.message));
    }
    let granted: JoinGranted = decode_or_refusal(status, &body)?;
    awaiting.verify_server(&granted.server_final).map_err(|_| {
        anyhow::anyhow!(
            "{peer} did not prove that it knows this KMA's passphrase verifier: it is not a KMA \
             of the cluster you meant; nothing was written"
        )
    })?;
    Ok(JoinStep::Granted(granted))
}

/// POSTs JSON and decodes the JSON answer, or the refusal's message.
pub async fn post_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    body: &impl Serialize,
) -> anyhow::Result<T> {
    let response = client.post(url).json(body).timeout(Duration::from_secs(60)).send().await?;
    json_or_refusal(response).await
}

pub async fn json_or_refusal<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> anyhow::Result<T> {
    let status = response.status();
    let bytes = response.bytes().await?;
    decode_or_refusal(status, &bytes)
}

/// The JSON answer of a successful status, or the refusal's message.
fn decode_or_refusal<T: serde::de::DeserializeOwned>(
    status: reqwest::StatusCode,
    bytes: &[u8],
) -> anyhow::Result<T> {
    if status.is_success() {
        return Ok(serde_json::from_slice(bytes)?);
    }
    match serde_json::from_slice::<SecurityRefusal>(bytes) {
        Ok(refusal) => Err(anyhow::Error::new(refusal)),
        Err(_) => anyhow::bail!("{status}: {}", String::from_utf8_lossy(bytes)),
    }
}

/// The cluster CA from `peer`. With a fingerprint it is checked at once; without one the
/// passphrase exchange is what proves the peer is the cluster (see `join_once`).
async fn fetch_ca(peer: &str, fingerprint: Option<&str>) -> anyhow::Result<String> {
    let client = https_client(crate::transport::tls::ca_fetch_client_config()?)?;
    let ca_pem = client
        .get(format!("https://{peer}/v1/ca"))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {peer}: {e:#}"))?
        .text()
        .await?;
    let actual = hex::encode(pki::fingerprint(&ca_pem)?);
    match fingerprint {
        Some(expected) if actual.eq_ignore_ascii_case(expected.trim()) => Ok(ca_pem),
        Some(expected) => anyhow::bail!(
            "the CA of {peer} has fingerprint {actual}, not {expected}: wrong cluster, or \
             something between you and {peer} is not the KMA"
        ),
        // Trusting a CA nobody compared would let whoever answers as `peer` be the cluster.
        None if crate::setup::prompt::confirm_ca_fingerprint(peer, &actual)? => Ok(ca_pem),
        None => anyhow::bail!("the CA of {peer} was not trusted: nothing was joined"),
    }
}

/// Proposes the pending quickstart of `kma init` once this KMA leads, then forgets it.
pub async fn run_quickstart(kma: Arc<Kma>) {
    let path = kma.local.layout.root.join(QUICKSTART_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else { return };
    let parsed: Result<Quickstart, _> = toml::from_str(&text);
    let Some(init) = parsed.ok().and_then(|quickstart| quickstart.command()) else {
        tracing::error!(path = %path.display(), "unreadable quickstart file: run kma init again in a new data dir");
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if kma.local.state.read().await.cluster_id().is_some() {
            break;
        }
        let command = Command::InitCluster(init.clone());
        match kma.proposer.propose(kma.proposer.system(command)).await {
            Ok(applied) => {
                tracing::info!(index = applied.index, result = ?applied.result, "quickstart applied");
                break;
            }
            Err(error) => tracing::debug!(%error, "quickstart waits for a leader"),
        }
    }
    if let Err(error) = std::fs::remove_file(&path) {
        tracing::warn!(%error, "could not remove the quickstart file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(management: &str, advertise: &str, service: &str) -> Listeners {
        Listeners {
            management_listen: management.parse().expect("address"),
            management_advertise: advertise.into(),
            service_listen: service.parse().expect("address"),
            kmip_listen: None,
        }
    }

    /// Setup: both listeners on port 0, the advertised address too. Action: choose the ports.
    /// Expect: two different ports other than 0, the management one advertised on the host
    /// given. (issue #15)
    #[test]
    fn t90_issue_15_port_0_becomes_two_free_ports_and_the_advertised_one() {
        let asked = listeners("127.0.0.1:0", "kma1.example:0", "127.0.0.1:0");
        let chosen = asked.with_chosen_ports().expect("free ports on loopback");
        let (management, service) = (chosen.management_listen.port(), chosen.service_listen.port());
        assert!(management != 0 && service != 0 && management != service, "{chosen:?}");
        assert_eq!(chosen.management_advertise, format!("kma1.example:{management}"));
        let with_kmip = Listeners { kmip_listen: Some("127.0.0.1:0".parse().expect("a")), ..asked };
        let chosen = with_kmip.with_chosen_ports().expect("free ports on loopback");
        let kmip = chosen.kmip_listen.expect("a KMIP listener").port();
        assert!(kmip != 0 && kmip != chosen.service_listen.port(), "{chosen:?}");
    }

    /// Setup: ports given, an advertised port of its own. Action: choose the ports. Expect:
    /// nothing changes (no port is bound to find out). (issue #15)
    #[test]
    fn t90_issue_15_given_ports_are_kept_as_they_are() {
        let asked = listeners("127.0.0.1:7001", "kma1.example:443", "127.0.0.1:7101");
        let chosen = asked.with_chosen_ports().expect("nothing to choose");
        assert_eq!(chosen.management_listen, asked.management_listen);
        assert_eq!(chosen.management_advertise, "kma1.example:443");
        assert_eq!(chosen.service_listen, asked.service_listen);
    }
}
