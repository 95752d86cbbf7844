//! This KMA's part in a CA rotation (issue #16 point 1). The quorum approves the rotation
//! (`QuorumOperation::RotateCa`); from then on every KMA runs the steps below, each driven by
//! the applied state, so that a KMA that restarts anywhere in between picks up where it was:
//!
//! 1. The leader makes the new CA, wraps its key under the master key and records both
//!    (`BeginCaRotation`).
//! 2. Every KMA trusts the old and the new CA on its listeners and links, then signs itself a
//!    certificate of the new CA with a new key pair, kept beside its current one
//!    (`tls/node-next.pem`), and records it (`RecordReissuedKmaCertificate`): the record says
//!    it trusts both, so nobody presents a new certificate to a KMA that would refuse it.
//! 3. Once every KMA has, the leader switches the cluster to the new CA (`CompleteCaRotation`).
//!    Each KMA then presents its new certificate (the next files become the current ones, the
//!    old CA certificate is kept as `tls/ca-retiring.pem`), still trusting the old CA, because a
//!    KMA that has not applied the switch yet still presents an old certificate; and it records
//!    that it switched (`RecordCaAdopted`).
//! 4. Once every KMA has switched, the state retires the old CA: from then on no listener or
//!    link trusts it, and a certificate it signed (a user's, an agent's, or one minted with a
//!    key from an old disk) is refused at the handshake.
//!
//! Users log in again after the switch (their sessions came from the old CA); agents enroll
//! again. Logins during the rotation hand out the CA certificates the KMA trusts, so a client
//! that logged in then already trusts the new CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use statemachine::{Command, State};
use zeroize::Zeroizing;

use crate::kma::Kma;
use crate::pki::{self, CertificateAuthority, Identity};
use crate::transport::live_tls::LiveTls;

/// This KMA's certificate of the new CA, and its key, until the switch.
pub const NEXT_CERT_FILE: &str = "node-next.pem";
pub const NEXT_KEY_FILE: &str = "node-next-key.pem";
/// The retired CA's certificate, trusted until every KMA has switched.
pub const RETIRING_CA_FILE: &str = "ca-retiring.pem";

/// Runs the steps every two seconds until the process ends.
pub async fn run(kma: Arc<Kma>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    let mut warned = false;
    loop {
        ticker.tick().await;
        match step(&kma).await {
            Ok(()) => warned = false,
            Err(problem) if !warned => {
                tracing::warn!(%problem, "the CA rotation waits");
                warned = true;
            }
            Err(problem) => tracing::debug!(%problem, "the CA rotation waits"),
        }
    }
}

fn fingerprint_of(path: &Path) -> Option<[u8; 32]> {
    pki::read(path).ok().and_then(|pem| pki::fingerprint(&pem).ok())
}

/// What one step needs from the applied state.
struct Seen {
    cluster_id: Option<statemachine::ClusterId>,
    /// The cluster's CA: fingerprint and certificate (the certificate from the first rotation
    /// on).
    ca_sha256: Option<[u8; 32]>,
    ca_der: Option<Vec<u8>>,
    /// This KMA's recorded certificate.
    own_sha256: Option<[u8; 32]>,
    rotation: Option<statemachine::cluster::CaRotation>,
    retiring: bool,
    to_reissue: bool,
    reissued: Option<[u8; 32]>,
    to_adopt: bool,
    complete_ready: bool,
}

impl Seen {
    fn of(state: &State, name: &str) -> Seen {
        Seen {
            cluster_id: state.cluster_id(),
            ca_sha256: state.wrapped_ca_key().map(|wrapped| wrapped.ca_certificate_sha256),
            ca_der: state.ca_certificate_der().map(<[u8]>::to_vec),
            own_sha256: state.meta().kmas.get(name).and_then(|entry| entry.certificate_sha256),
            rotation: state.ca_rotation().cloned(),
            retiring: state.retiring_ca().is_some(),
            to_reissue: state.kma_to_reissue(name),
            reissued: state.reissued_certificate(name),
            to_adopt: state.kma_to_adopt(name),
            complete_ready: state.ca_rotation_complete_ready(),
        }
    }
}

/// Where a CA rotation stands, for `kma status` and `kmsctl status`; `None` when none runs.
pub fn describe(state: &State) -> Option<String> {
    if let Some(rotation) = state.ca_rotation() {
        if rotation.new_ca.is_none() {
            return Some("approved: the leader makes the new CA".into());
        }
        let waiting = state.ca_rotation_waiting_for().join(", ");
        return Some(format!("begun: waiting for the new certificates of {waiting}"));
    }
    state.retiring_ca()?;
    let waiting = state.ca_retirement_waiting_for().join(", ");
    Some(format!("retiring the old CA: waiting for {waiting} to switch"))
}

/// What a KMA presents and trusts when it starts: the files switched first if the cluster
/// switched to the new CA while this KMA was down, then the CAs the state says to trust.
pub async fn tls_at_start(
    state: &raft_storage::StateHandle,
    layout: &crate::config::DataDirLayout,
    name: &str,
) -> Result<Arc<LiveTls>, crate::transport::tls::TlsError> {
    let seen = Seen::of(&*state.read().await, name);
    let tls_dir = &layout.tls_dir();
    let failed =
        |detail: String| crate::transport::tls::TlsError::Config { what: "CA rotation", detail };
    switch_files(tls_dir, &seen).map_err(failed)?;
    let trusted = trusted_pem(tls_dir, &seen).map_err(failed)?;
    let cert = pki::read(&tls_dir.join(pki::NODE_CERT_FILE))?;
    let key = Zeroizing::new(pki::read(&tls_dir.join(pki::NODE_KEY_FILE))?);
    LiveTls::new(&trusted, &cert, &key)
}

async fn step(kma: &Arc<Kma>) -> Result<(), String> {
    let local = &kma.local;
    let seen = Seen::of(&*local.state.read().await, &local.config.name);
    let tls_dir = local.layout.tls_dir();
    switch_files(&tls_dir, &seen)?;
    sync_tls(kma, &tls_dir, &seen)?;
    let Some(master) = local.vault.master_key() else { return Ok(()) };
    let Some(cluster_id) = seen.cluster_id else { return Ok(()) };
    let leading = local.raft.metrics().borrow().current_leader == Some(local.node_id());
    if let (Some(rotation), true) = (&seen.rotation, leading) {
        if rotation.new_ca.is_none() {
            begin(kma, &master, cluster_id, rotation.operation_id).await?;
        }
    }
    if seen.to_reissue || stale_reissue(&tls_dir, &seen) {
        reissue(kma, &master, cluster_id, &seen).await?;
    }
    if seen.complete_ready && leading {
        propose(kma, Command::CompleteCaRotation, "the cluster switched to the new CA").await?;
    }
    if seen.to_adopt && seen.own_sha256 == fingerprint_of(&tls_dir.join(pki::NODE_CERT_FILE)) {
        let command = Command::RecordCaAdopted { name: local.config.name.clone() };
        propose(kma, command, "this KMA presents its certificate of the new CA").await?;
    }
    Ok(())
}

async fn propose(kma: &Kma, command: Command, done: &str) -> Result<(), String> {
    let proposer = &kma.proposer;
    match proposer.propose(proposer.system(command)).await {
        Ok(applied) if applied.result.is_ok() => {
            tracing::info!(index = applied.index, "CA rotation: {done}");
            Ok(())
        }
        Ok(applied) => Err(format!("refused: {:?}", applied.result)),
        Err(error) => Err(format!("waits for the cluster: {error}")),
    }
}

/// Step 1, on the leader: the new CA, its key wrapped under the master key.
async fn begin(
    kma: &Kma,
    master: &security_core::MasterKey,
    cluster_id: statemachine::ClusterId,
    operation_id: u64,
) -> Result<(), String> {
    let ca = CertificateAuthority::create_rotated(cluster_id.0, operation_id)
        .map_err(|e| e.to_string())?;
    let ca_certificate_sha256 = pki::fingerprint(&ca.cert_pem).map_err(|e| e.to_string())?;
    let wrapped_key = security_core::ca_key::wrap_ca_key(
        master,
        cluster_id,
        &ca_certificate_sha256,
        &ca.key_pem(),
    )
    .map_err(|e| e.to_string())?;
    let ca_certificate_der = crate::transport::tls::certs_from_pem(&ca.cert_pem)
        .into_iter()
        .next()
        .ok_or("the new CA certificate did not encode")?
        .to_vec();
    let command =
        Command::BeginCaRotation { ca_certificate_der, ca_certificate_sha256, wrapped_key };
    propose(kma, command, "the new CA was recorded").await
}

/// A certificate of the new CA recorded for this KMA that is not the one on its disk (it
/// crashed between writing a new one and recording it): it makes and records another.
fn stale_reissue(tls_dir: &Path, seen: &Seen) -> bool {
    let begun = seen.rotation.as_ref().is_some_and(|rotation| rotation.new_ca.is_some());
    begun
        && seen.reissued.is_some()
        && seen.reissued != fingerprint_of(&tls_dir.join(NEXT_CERT_FILE))
}

/// Step 2: a certificate of the new CA for this KMA, with a new key pair, written beside the
/// current one and recorded. Only once this KMA trusts the new CA (`sync_tls` ran first).
async fn reissue(
    kma: &Kma,
    master: &security_core::MasterKey,
    cluster_id: statemachine::ClusterId,
    seen: &Seen,
) -> Result<(), String> {
    let new_ca = seen.rotation.as_ref().and_then(|r| r.new_ca.as_ref()).ok_or("not begun")?;
    let local = &kma.local;
    let new_ca_sha256 = new_ca.ca_key.ca_certificate_sha256;
    if !kma.local.tls.trusted().contains(&new_ca_sha256) {
        return Err("this KMA does not trust the new CA yet".into());
    }
    let key_pem = security_core::ca_key::unwrap_ca_key(
        master,
        cluster_id,
        &new_ca_sha256,
        &new_ca.ca_key.wrapped_key,
    )
    .map_err(|e| format!("the new CA's key does not open here: {e}"))?;
    let cert_pem = pki::pem_of_der(&new_ca.ca_certificate_der);
    let ca = CertificateAuthority::from_pem(cert_pem, &key_pem, Path::new("the state"))
        .map_err(|e| e.to_string())?
        .in_epoch(local.tls.presented_epoch());
    let advertise = &local.config.management_advertise;
    let host = crate::config::advertise_host(advertise).ok_or("no advertised host")?;
    let hosts = [host.to_string(), "localhost".into(), "127.0.0.1".into()];
    let (cert, key) =
        ca.issue(&Identity::Kma(local.node_id()), &hosts).map_err(|e| e.to_string())?;
    let key = Zeroizing::new(key);
    let tls_dir = local.layout.tls_dir();
    pki::replace(&tls_dir.join(NEXT_KEY_FILE), &key, true).map_err(|e| e.to_string())?;
    pki::replace(&tls_dir.join(NEXT_CERT_FILE), &cert, false).map_err(|e| e.to_string())?;
    let certificate_sha256 = pki::fingerprint(&cert).map_err(|e| e.to_string())?;
    tracing::info!(certificate = %hex::encode(&certificate_sha256[..8]), "CA rotation: a certificate of the new CA for this KMA");
    let name = local.config.name.clone();
    let command = Command::RecordReissuedKmaCertificate { name, certificate_sha256 };
    propose(kma, command, "this KMA's certificate of the new CA was recorded").await
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::rename(from, to).map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))
}

/// Step 3 on disk, once the state switched: the next certificate and key become the current
/// ones, the old CA certificate is kept as the retiring one and the new CA's is written. Each
/// move is checked against the state on its own, so a crash between them is finished at the
/// next step; nothing needs the master key.
fn switch_files(tls_dir: &Path, seen: &Seen) -> Result<(), String> {
    let (node_cert, node_key) =
        (tls_dir.join(pki::NODE_CERT_FILE), tls_dir.join(pki::NODE_KEY_FILE));
    let (next_cert, next_key) = (tls_dir.join(NEXT_CERT_FILE), tls_dir.join(NEXT_KEY_FILE));
    let own = seen.own_sha256;
    if own.is_some() && fingerprint_of(&node_cert) != own && fingerprint_of(&next_cert) == own {
        rename(&next_cert, &node_cert)?;
        tracing::info!("CA rotation: this KMA presents its certificate of the new CA");
    }
    if next_key.exists() && own.is_some() && fingerprint_of(&node_cert) == own {
        rename(&next_key, &node_key)?;
    }
    let ca_file = tls_dir.join(pki::CA_FILE);
    let (Some(ca_sha256), Some(ca_der)) = (seen.ca_sha256, &seen.ca_der) else { return Ok(()) };
    if fingerprint_of(&ca_file) == Some(ca_sha256) {
        if !seen.retiring {
            let _ = std::fs::remove_file(tls_dir.join(RETIRING_CA_FILE));
        }
        return Ok(());
    }
    let ca_pem = pki::pem_of_der(ca_der);
    if pki::fingerprint(&ca_pem).ok() != Some(ca_sha256) {
        return Err("the state's CA certificate does not match its fingerprint".into());
    }
    let retiring = tls_dir.join(RETIRING_CA_FILE);
    if seen.retiring && !retiring.exists() {
        let old = pki::read(&ca_file).map_err(|e| e.to_string())?;
        pki::replace(&retiring, &old, false).map_err(|e| e.to_string())?;
    }
    pki::replace(&ca_file, &ca_pem, false).map_err(|e| e.to_string())?;
    tracing::info!("CA rotation: tls/ca.pem now holds the new CA");
    Ok(())
}

/// The CA certificates this KMA trusts now, as PEM: the cluster's (`tls/ca.pem`), the new one
/// while a rotation runs, the retiring one until every KMA has switched.
fn trusted_pem(tls_dir: &Path, seen: &Seen) -> Result<String, String> {
    let mut pem = pki::read(&tls_dir.join(pki::CA_FILE)).map_err(|e| e.to_string())?;
    if let Some(new_ca) = seen.rotation.as_ref().and_then(|rotation| rotation.new_ca.as_ref()) {
        pem.push_str(&pki::pem_of_der(&new_ca.ca_certificate_der));
    }
    let retiring = tls_dir.join(RETIRING_CA_FILE);
    if seen.retiring && retiring.exists() {
        pem.push_str(&pki::read(&retiring).map_err(|e| e.to_string())?);
    }
    Ok(pem)
}

/// Keeps what the listeners and links present and trust in step with the files and the state;
/// after the switch, also the vault's sealing key and the CA key this KMA signs with.
fn sync_tls(kma: &Kma, tls_dir: &Path, seen: &Seen) -> Result<(), String> {
    let trusted = trusted_pem(tls_dir, seen)?;
    let node_cert = tls_dir.join(pki::NODE_CERT_FILE);
    let wanted: Vec<[u8; 32]> =
        crate::transport::tls::certs_from_pem(&trusted).iter().map(pki::der_fingerprint).collect();
    let presented = fingerprint_of(&node_cert);
    if kma.local.tls.trusted() == wanted && kma.local.tls.presented() == presented {
        return Ok(());
    }
    let cert = pki::read(&node_cert).map_err(|e| e.to_string())?;
    let key =
        Zeroizing::new(pki::read(&tls_dir.join(pki::NODE_KEY_FILE)).map_err(|e| e.to_string())?);
    let switched = kma.local.tls.presented() != presented;
    kma.local.tls.replace(&trusted, &cert, &key).map_err(|e| e.to_string())?;
    let presented = presented.map(|sha256| hex::encode(&sha256[..8])).unwrap_or_default();
    tracing::info!(
        trusted = wanted.len(),
        switched,
        presented,
        "CA rotation: TLS material replaced"
    );
    if switched {
        if let Some(cluster_id) = seen.cluster_id {
            kma.local.vault.rekey_seal(&key, cluster_id).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
