//! What every running KMA does in the background, leader or not: the vault kept in step with
//! the replicated lock state (sealing or unsealing for autonomous unlock), the watchdog that
//! breaks runs of split votes, communication errors between KMAs into the audit log, and this
//! KMA's version reported to the state (the version gate).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use statemachine::{Command, Formats, KmaVersion, SoftwareVersion};

use crate::login::Logins;
use crate::transport::clock::ClockGuard;
use crate::transport::network::{
    communication_detail, PeerLink, PeerLinks, COMMUNICATION_AUDIT_INTERVAL,
};
use crate::transport::LeaderContact;
use crate::view::Local;
use crate::write::Proposer;

/// What the replicated state says about this KMA.
#[derive(Clone, Copy, PartialEq, Eq)]
struct MyEntry {
    locked: bool,
    autonomous_unlock: bool,
    cluster_id: statemachine::ClusterId,
}

async fn my_entry(local: &Local) -> Option<MyEntry> {
    let state = local.state.read().await;
    let cluster_id = state.cluster_id()?;
    let entry = state.meta().kmas.get(&local.config.name)?;
    Some(MyEntry { locked: entry.locked, autonomous_unlock: entry.autonomous_unlock, cluster_id })
}

/// Keeps the vault in step with the state: when this KMA's entry changes, while a standby
/// key waits, and every second. Most applied entries touch other records; skipping them
/// spares the write path the file checks below (issue #3's one-writer latency).
pub async fn run_vault_sync(local: Local) {
    let mut applied = local.state.subscribe_applied();
    let mut reconciled: Option<MyEntry> = None;
    loop {
        let ticked = tokio::select! {
            _ = applied.changed() => false,
            () = tokio::time::sleep(Duration::from_secs(1)) => true,
        };
        let me = my_entry(&local).await;
        if !ticked && me == reconciled && !local.vault.has_standby() {
            continue;
        }
        reconciled = me;
        let Some(me) = me else { continue };
        if let Err(error) = reconcile_vault(&local, me) {
            tracing::error!(%error, "vault");
        }
    }
}

fn reconcile_vault(local: &Local, me: MyEntry) -> Result<(), crate::vault::VaultError> {
    if me.locked {
        if local.vault.is_unlocked() {
            // Locked by an administrator: the key leaves memory now.
            local.vault.forget();
            tracing::warn!("locked by an administrator: master key dropped from memory");
        }
    } else if local.vault.activate_standby() {
        tracing::info!("unlocked with the master key sealed on this KMA");
    }
    let first_boot = local.layout.root.join(crate::setup::QUICKSTART_FILE).exists();
    if me.autonomous_unlock && !local.vault.sealed_file_exists() {
        if let Some(master) = local.vault.master_key() {
            local.vault.seal(&master, me.cluster_id)?;
            tracing::info!("autonomous unlock: master key sealed in the data dir");
        }
    } else if !me.autonomous_unlock && local.vault.sealed_file_exists() && !first_boot {
        local.vault.remove_sealed()?;
        tracing::info!("autonomous unlock is off: sealed master key removed");
    }
    Ok(())
}

/// openraft's election timer handles the normal case (including letting KMAs with a longer
/// log go first); this watchdog only breaks a run of split votes: a voter that has heard no
/// leader for two election timeouts plus a delay drawn afresh each time starts one itself.
pub async fn run_election_watchdog(local: Local, contact: LeaderContact, out: StayOut) {
    let max = local.config.election_timeout_ms_max;
    let draw = move || 2 * max + rand::thread_rng().gen_range(0..=max);
    let mut patience_ms = draw();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    loop {
        ticker.tick().await;
        let metrics = local.raft.metrics().borrow().clone();
        let voter =
            metrics.membership_config.membership().voter_ids().any(|id| id == local.node_id());
        if metrics.current_leader.is_some() || !voter || out.is_out() {
            contact.touch();
            continue;
        }
        let silent_ms = contact.silent_ms();
        if silent_ms < patience_ms {
            continue;
        }
        tracing::info!(silent_ms, "no leader for a while: starting an election");
        if let Err(error) = local.raft.trigger().elect().await {
            tracing::error!(%error, "cannot start an election");
        }
        contact.touch();
        patience_ms = draw();
    }
}

/// What the audit log was last told about one peer, and when this KMA last tried to tell it.
#[derive(Clone, Copy, Debug, Default)]
struct Told {
    changes: u64,
    attempted_at: Option<Instant>,
}

/// Records in the audit log, as `Actor::System`, each peer whose Raft RPCs started failing or
/// work again (SPEC C8). Runs on its own task, so the Raft RPC path only notes outcomes; a
/// proposal that fails (no leader) is tried again after the interval, if still news.
pub async fn run_communication_audit(local: Local, proposer: Proposer, links: PeerLinks) {
    let mut told: BTreeMap<u64, Told> = BTreeMap::new();
    loop {
        tokio::select! {
            () = links.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        for (peer, link) in links.snapshot() {
            let last = told.get(&peer).copied().unwrap_or_default();
            let waited =
                last.attempted_at.is_none_or(|at| at.elapsed() >= COMMUNICATION_AUDIT_INTERVAL);
            if link.changes == last.changes || !waited {
                continue;
            }
            let recorded = record_communication(
                &local,
                &proposer,
                &links,
                peer,
                &link,
                link.changes - last.changes,
            )
            .await;
            let changes = if recorded { link.changes } else { last.changes };
            told.insert(peer, Told { changes, attempted_at: Some(Instant::now()) });
        }
    }
}

/// Proposes one record about `peer`; true once applied.
async fn record_communication(
    local: &Local,
    proposer: &Proposer,
    links: &PeerLinks,
    peer: u64,
    link: &PeerLink,
    changes: u64,
) -> bool {
    let to_kma = {
        let state = local.state.read().await;
        if state.cluster_id().is_none() {
            return false;
        }
        let named = state.kma_by_node_id(peer);
        named.map_or_else(|| format!("node-{peer}"), |entry| entry.name.clone())
    };
    let detail = communication_detail(peer, link, changes);
    let command =
        Command::RecordCommunicationError { from_kma: local.config.name.clone(), to_kma, detail };
    match proposer.propose(proposer.system(command)).await {
        Ok(applied) if applied.result.is_ok() => {
            links.count_record(peer, link.failing);
            true
        }
        Ok(applied) => {
            tracing::warn!(peer, result = ?applied.result, "communication error record refused");
            false
        }
        Err(error) => {
            tracing::warn!(peer, %error, "communication error not recorded in the audit log");
            false
        }
    }
}

/// Records in the audit log each KMA whose stamps this KMA refused for running ahead of its
/// clock (issue #16 point 7), as `Actor::System`: at most once per
/// [`crate::transport::clock::SUSPECT_FOR`] and KMA (openraft retries a refused call at every
/// heartbeat), retried every few seconds until written, since the first tries go to the very
/// leader whose entries cannot commit.
pub async fn run_clock_audit(local: Local, proposer: Proposer, clock: ClockGuard) {
    let mut reported: BTreeMap<u64, Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        reported.retain(|_, at| at.elapsed() < crate::transport::clock::SUSPECT_FOR);
        for (peer, suspect) in clock.suspects() {
            if reported.contains_key(&peer) {
                continue;
            }
            let to_kma = {
                let state = local.state.read().await;
                let named = state.kma_by_node_id(peer);
                named.map_or_else(|| format!("node-{peer}"), |entry| entry.name.clone())
            };
            let detail = format!(
                "refused entries stamped {} s ahead of this KMA's clock (at most {} s allowed): \
                 they never commit, and that KMA steps down as leader; fix its clock (NTP)",
                suspect.ahead_ms / 1_000,
                clock.ahead_max_ms() / 1_000
            );
            let from_kma = local.config.name.clone();
            let command = Command::RecordCommunicationError { from_kma, to_kma, detail };
            match proposer.propose(proposer.system(command)).await {
                Ok(applied) if applied.result.is_ok() => {
                    tracing::error!(peer, ahead_ms = suspect.ahead_ms, "a KMA's clock runs ahead");
                    reported.insert(peer, Instant::now());
                }
                Ok(applied) => tracing::warn!(result = ?applied.result, "clock record refused"),
                Err(error) => tracing::debug!(%error, "clock record waits for a leader"),
            }
        }
    }
}

/// How often failed logins for unknown principals are summed up into the audit log.
pub const LOGIN_FAILURE_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Sums up, once a minute, the failed proofs for principals that do not exist, one audit record
/// per source address (issue #16 points 5 and 9): a flood of made-up names costs the
/// replicated log one record per source and minute, not one per attempt. A record that cannot
/// be written now is added to the next minute's.
pub async fn run_login_failure_summary(proposer: Proposer, logins: std::sync::Arc<Logins>) {
    let mut carried: BTreeMap<std::net::IpAddr, u64> = BTreeMap::new();
    loop {
        tokio::time::sleep(LOGIN_FAILURE_SUMMARY_INTERVAL).await;
        for (source, count) in logins.take_unknown_failures() {
            *carried.entry(source).or_default() += count;
        }
        let sources: Vec<(std::net::IpAddr, u64)> =
            std::mem::take(&mut carried).into_iter().collect();
        for (source, count) in sources {
            let principal =
                format!("{count} failed logins for unknown principals in the last minute");
            let command =
                Command::RecordAuthenticationFailure { principal, source: source.to_string() };
            match proposer.propose(proposer.system(command)).await {
                Ok(applied) if applied.result.is_ok() => {}
                _ => {
                    *carried.entry(source).or_default() += count;
                }
            }
        }
    }
}

/// Set while this KMA stays out of elections (it stepped down for its clock): the election
/// watchdog then starts none either.
#[derive(Clone, Default)]
pub struct StayOut(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StayOut {
    fn set(&self, out: bool) {
        self.0.store(out, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_out(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How long a leader that stepped down for its clock stays out of elections.
const CLOCK_STEP_DOWN_FOR: Duration = Duration::from_secs(300);

/// A leader whose entries enough voters refuse for their stamps (its clock runs ahead, see
/// `transport::clock`) that none can commit steps down (issue #16 point 7): it stops sending
/// heartbeats, so the voters elect another leader, and stays out of elections for
/// [`CLOCK_STEP_DOWN_FOR`], after which it may try again (and steps down again while its clock
/// is still wrong). openraft 0.9 has no leader transfer; this is the same in effect.
pub async fn run_clock_step_down(local: Local, links: PeerLinks, out: StayOut) {
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut out_until: Option<Instant> = None;
    loop {
        ticker.tick().await;
        let metrics = local.raft.metrics().borrow().clone();
        let leading = metrics.current_leader == Some(local.node_id());
        if let Some(until) = out_until {
            if !leading {
                local.raft.runtime_config().heartbeat(true);
            }
            if Instant::now() >= until {
                local.raft.runtime_config().heartbeat(true);
                local.raft.runtime_config().elect(true);
                out_until = None;
                out.set(false);
                tracing::info!("back in elections after stepping down for this KMA's clock");
            }
            continue;
        }
        if !leading {
            continue;
        }
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        let refusing = links.clock_refusals(Duration::from_secs(5));
        let refusing = voters.iter().filter(|id| refusing.contains(id)).count();
        // Entries commit with a majority of the voters, this one included.
        let majority = voters.len() / 2 + 1;
        if voters.len() - refusing >= majority {
            continue;
        }
        tracing::error!(
            refusing,
            voters = voters.len(),
            "the voters refuse this leader's entries: its clock runs ahead of theirs; stepping \
             down and staying out of elections until the clock is fixed (NTP)"
        );
        local.raft.runtime_config().heartbeat(false);
        local.raft.runtime_config().elect(false);
        out.set(true);
        out_until = Some(Instant::now() + CLOCK_STEP_DOWN_FOR);
    }
}

/// Reports this KMA's own certificate to the replicated state once the cluster records
/// certificates (log format 3) and its entry holds none: the first KMA, and KMAs that joined
/// before (issue #16 point 2). From then on a certificate minted for its name is refused
/// everywhere. Checked every two seconds; a failed proposal is tried again.
pub async fn run_certificate_report(local: Local, proposer: Proposer) {
    let path = local.layout.tls_dir().join(crate::pki::NODE_CERT_FILE);
    let fingerprint = match crate::pki::read(&path).and_then(|pem| crate::pki::fingerprint(&pem)) {
        Ok(fingerprint) => fingerprint,
        Err(error) => {
            tracing::error!(%error, "this KMA's certificate cannot be read: it is not reported");
            return;
        }
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        ticker.tick().await;
        if !local.state.read().await.kma_certificate_to_report(&local.config.name) {
            continue;
        }
        let name = local.config.name.clone();
        let command = Command::RecordKmaCertificate { name, certificate_sha256: fingerprint };
        match proposer.propose(proposer.system(command)).await {
            Ok(applied) if applied.result.is_ok() => {
                tracing::info!(index = applied.index, "this KMA's certificate recorded");
            }
            Ok(applied) => tracing::warn!(result = ?applied.result, "certificate report refused"),
            Err(error) => tracing::debug!(%error, "certificate report waits for the cluster"),
        }
    }
}

/// What this KMA reports of itself: its software version and the formats it reads. The
/// environment variable `KMA_LOG_FORMAT_MAX` lowers the log format it claims (never raises
/// it): a KMA can hold the cluster at an older format, as an older KMA would, while the others
/// are upgraded one by one (docs/upgrade.md).
pub fn this_version() -> KmaVersion {
    let software = SoftwareVersion::parse(env!("CARGO_PKG_VERSION")).unwrap_or_default();
    let mut formats = Formats::CURRENT;
    let capped = std::env::var("KMA_LOG_FORMAT_MAX").ok().and_then(|v| v.parse::<u16>().ok());
    if let Some(capped) = capped {
        formats.log = formats.log.min(capped.max(statemachine::format::LOG_FORMAT_BASELINE));
    }
    KmaVersion { software, formats }
}

/// Reports this KMA's version to the replicated state (SPEC C7, the version gate): once it is
/// a member, and again whenever the state asks for another report (the cluster reached a
/// format at which the full report can be written). Checked each second; a failed proposal is
/// tried again at the next check.
pub async fn run_version_report(local: Local, proposer: Proposer) {
    let version = local.version;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let report = local.state.read().await.version_report(&local.config.name, &version);
        let Some(command) = report else { continue };
        match proposer.propose(proposer.system(command)).await {
            Ok(applied) if applied.result.is_ok() => {
                tracing::info!(index = applied.index, ?version, "version reported");
            }
            Ok(applied) => tracing::warn!(result = ?applied.result, "version report refused"),
            Err(error) => tracing::debug!(%error, "version report waits for the cluster"),
        }
    }
}

/// Keeps the cluster CA's private key out of every disk (issue #16 point 1). While this KMA is
/// unlocked and the cluster reads log format 3: the CA key that the state holds, wrapped under
/// the master key, is unwrapped into memory (the vault drops it when the KMA locks); when the
/// state holds none yet, the key file `kma init` wrote (or an older version's join handed out)
/// is wrapped and recorded (`Command::RecordCaKey`); once the key from the state is in memory,
/// that file is overwritten and removed. The file goes only after the state's copy opened with
/// this KMA's master key, so a crash in between loses nothing.
pub async fn run_ca_key_custody(local: Local, proposer: Proposer, logins: std::sync::Arc<Logins>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    let mut warned = false;
    loop {
        // At once when the KMA is unlocked: it signs nothing until it holds the CA key.
        tokio::select! {
            _ = ticker.tick() => {}
            () = local.vault.unlocked() => {}
        }
        match keep_ca_key(&local, &proposer, &logins).await {
            Ok(()) => warned = false,
            Err(problem) if !warned => {
                tracing::warn!(%problem, "the CA key's custody waits");
                warned = true;
            }
            Err(problem) => tracing::debug!(%problem, "the CA key's custody waits"),
        }
    }
}

async fn keep_ca_key(local: &Local, proposer: &Proposer, logins: &Logins) -> Result<(), String> {
    let Some(master) = local.vault.master_key() else { return Ok(()) };
    let tls_dir = local.layout.tls_dir();
    let key_file = tls_dir.join(crate::pki::CA_KEY_FILE);
    let ca_pem = crate::pki::read(&tls_dir.join(crate::pki::CA_FILE)).map_err(|e| e.to_string())?;
    let ca_sha256 = crate::pki::fingerprint(&ca_pem).map_err(|e| e.to_string())?;
    // After a CA rotation `tls/ca.pem` names the new CA, and the key held is the old one's.
    if local.vault.ca_key_pem(&ca_sha256).is_some() && !key_file.exists() {
        return Ok(());
    }
    let (recorded, cluster_id) = {
        let state = local.state.read().await;
        if !state.certificates_recorded() {
            return Ok(());
        }
        let Some(cluster_id) = state.cluster_id() else { return Ok(()) };
        (state.wrapped_ca_key().cloned(), cluster_id)
    };
    match recorded {
        Some(wrapped) if wrapped.ca_certificate_sha256 == ca_sha256 => {
            if local.vault.ca_key_pem(&ca_sha256).is_none() {
                let key_pem = security_core::ca_key::unwrap_ca_key(
                    &master,
                    cluster_id,
                    &ca_sha256,
                    &wrapped.wrapped_key,
                )
                .map_err(|e| format!("the CA key in the state does not open here: {e}"))?;
                logins.set_decoy_secret(crate::login::decoy_secret(&key_pem));
                local.vault.hold_ca_key(ca_sha256, key_pem);
                tracing::info!("the CA key was unwrapped from the state");
            }
            if key_file.exists() {
                crate::vault::erase(&key_file).map_err(|e| e.to_string())?;
                tracing::info!(path = %key_file.display(), "the CA key file was erased: the key is kept wrapped in the state");
            }
            Ok(())
        }
        Some(_) => {
            Err("the state's CA key belongs to another CA certificate than tls/ca.pem".into())
        }
        None if key_file.exists() => {
            let key_pem =
                zeroize::Zeroizing::new(crate::pki::read(&key_file).map_err(|e| e.to_string())?);
            let wrapped_key =
                security_core::ca_key::wrap_ca_key(&master, cluster_id, &ca_sha256, &key_pem)
                    .map_err(|e| e.to_string())?;
            let command = Command::RecordCaKey { ca_certificate_sha256: ca_sha256, wrapped_key };
            match proposer.propose(proposer.system(command)).await {
                Ok(applied) if applied.result.is_ok() => {
                    tracing::info!(index = applied.index, "the CA key was recorded wrapped");
                    Ok(())
                }
                Ok(applied) => {
                    Err(format!("recording the CA key was refused: {:?}", applied.result))
                }
                Err(error) => Err(format!("recording the CA key waits for the cluster: {error}")),
            }
        }
        None => Err("no KMA has recorded the CA key in the state yet".into()),
    }
}
