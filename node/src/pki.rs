//! The cluster's own certificate authority (rcgen) and the certificates it issues: one per KMA
//! for mutual TLS between KMAs, one for the bootstrap administrator, and certificates signed
//! from requests: short-lived ones for users after a passphrase login, long-lived ones for
//! agents and joining KMAs (SPEC S2).
//!
//! A client sends a certificate signing request: its private key never leaves it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub const CA_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const NODE_CERT_FILE: &str = "node.pem";
pub const NODE_KEY_FILE: &str = "node-key.pem";

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("cannot create a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no usable certificate or key: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("this KMA holds no CA key (tls/ca-key.pem), so it cannot issue certificates: it was set up by an older version; join it again or copy the key from the first KMA")]
    NoCaKey,
    #[error("this KMA is locked, so it signs no certificate (no login, join or enrollment here): unlock it first; after a cold restart each quorum member runs kmsctl quorum approve --member M --unlock HOST:PORT")]
    Locked,
    #[error("this KMA has not unwrapped the cluster CA's key from the replicated state yet: retry in a few seconds, or at another KMA")]
    CaKeyNotYetHere,
}

/// Who a certificate names: a KMA by node ID or a user by ID. Read back from the common name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Kma(u64),
    User(String),
    Agent(String),
}

impl Identity {
    pub fn common_name(&self) -> String {
        match self {
            Identity::Kma(node_id) => format!("kma-{node_id}"),
            Identity::User(user) => format!("user:{user}"),
            Identity::Agent(agent) => format!("agent:{agent}"),
        }
    }

    pub fn from_common_name(name: &str) -> Option<Identity> {
        if let Some(id) = name.strip_prefix("kma-") {
            return id.parse().ok().map(Identity::Kma);
        }
        if let Some(agent) = name.strip_prefix("agent:") {
            return Some(Identity::Agent(agent.into()));
        }
        name.strip_prefix("user:").map(|user| Identity::User(user.into()))
    }
}

/// A CA certificate with its key, able to sign.
pub struct CertificateAuthority {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub cert_pem: String,
    /// The cluster epoch every certificate it issues names (SPEC B7, `agent_gateway::epoch`).
    epoch: u32,
}

impl CertificateAuthority {
    /// A new CA for cluster `cluster_id`, valid for 20 years (keys live for a decade or more).
    pub fn create(cluster_id: u64) -> Result<Self, PkiError> {
        Self::create_named(&format!("KMS cluster {cluster_id:016x} CA"))
    }

    /// The CA that replaces the cluster's in the CA rotation approved as quorum operation
    /// `operation_id` (issue #16 point 1): named apart from the CA it replaces, which clients
    /// trust beside it while the rotation runs.
    pub fn create_rotated(cluster_id: u64, operation_id: u64) -> Result<Self, PkiError> {
        Self::create_named(&format!("KMS cluster {cluster_id:016x} CA, rotation {operation_id}"))
    }

    fn create_named(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(years_from_now(20), 1, 1);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        Ok(CertificateAuthority { cert, key, cert_pem, epoch: 0 })
    }

    /// Loads the CA of a data dir's TLS folder; only KMAs that created the cluster hold its key.
    pub fn load(tls_dir: &Path) -> Result<Self, PkiError> {
        let key_path = tls_dir.join(CA_KEY_FILE);
        if !key_path.exists() {
            return Err(PkiError::NoCaKey);
        }
        let cert_pem = read(&tls_dir.join(CA_FILE))?;
        let key_pem = zeroize::Zeroizing::new(read(&key_path)?);
        CertificateAuthority::from_pem(cert_pem, &key_pem, &key_path)
    }

    /// The CA from its certificate and its private key (PEM), e.g. the key unwrapped from the
    /// replicated state; `origin` names where the key came from in errors.
    pub fn from_pem(cert_pem: String, key_pem: &str, origin: &Path) -> Result<Self, PkiError> {
        let parse = |detail: String| PkiError::Parse { path: origin.to_path_buf(), detail };
        let key = KeyPair::from_pem(key_pem).map_err(|e| parse(e.to_string()))?;
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| parse(e.to_string()))?;
        // Re-signing the same parameters with the same key yields an equivalent issuer.
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority { cert, key, cert_pem, epoch: 0 })
    }

    /// This CA, issuing certificates of cluster epoch `epoch`: a running KMA issues in the
    /// epoch of its own certificate, a restore or a recovery in the epoch it starts.
    pub fn in_epoch(mut self, epoch: u32) -> Self {
        self.epoch = epoch;
        self
    }

    /// The private key's PEM, zeroized on drop: what is wrapped under the master key.
    pub fn key_pem(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(self.key.serialize_pem())
    }

    pub fn save(&self, tls_dir: &Path) -> Result<(), PkiError> {
        write(&tls_dir.join(CA_FILE), &self.cert_pem, false)?;
        write(&tls_dir.join(CA_KEY_FILE), &self.key.serialize_pem(), true)
    }

    /// Issues a certificate for `identity` and a fresh key pair (PEM cert, PEM key).
    pub fn issue(
        &self,
        identity: &Identity,
        hosts: &[String],
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let cert =
            leaf_params(identity, hosts, self.epoch)?.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs a request from a joining KMA. Names and usages come from the issuer, not from the
    /// request: only the public key is taken from it.
    pub fn sign_request(
        &self,
        csr_pem: &str,
        identity: &Identity,
        hosts: &[String],
    ) -> Result<String, PkiError> {
        self.sign_request_valid_for(csr_pem, identity, hosts, None)
    }

    /// As `sign_request`, valid for `valid_for` from now instead of ten years (user sessions).
    pub fn sign_request_valid_for(
        &self,
        csr_pem: &str,
        identity: &Identity,
        hosts: &[String],
        valid_for: Option<std::time::Duration>,
    ) -> Result<String, PkiError> {
        let mut request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            PkiError::Parse { path: "certificate request".into(), detail: e.to_string() }
        })?;
        request.params = leaf_params(identity, hosts, self.epoch)?;
        if let Some(valid_for) = valid_for {
            let now = time::OffsetDateTime::now_utc();
            // A little slack before now: clocks of KMAs and clients differ by seconds.
            request.params.not_before = now - time::Duration::minutes(5);
            request.params.not_after = now + valid_for;
        }
        Ok(request.signed_by(&self.cert, &self.key)?.pem())
    }
}

/// A key pair and a signing request for it (the joining side).
pub fn signing_request() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(Vec::<String>::new())?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

fn leaf_params(
    identity: &Identity,
    hosts: &[String],
    epoch: u32,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(&identity.common_name());
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, agent_gateway::epoch::unit_of(epoch));
    params.subject_alt_names = hosts
        .iter()
        .map(|host| match host.parse() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => host.clone().try_into().map(SanType::DnsName),
        })
        .collect::<Result<_, _>>()?;
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_after = rcgen::date_time_ymd(years_from_now(10), 1, 1);
    Ok(params)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// The year that is `years` after the current one.
fn years_from_now(years: i32) -> i32 {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let year = 1970 + (now_s / 31_556_952) as i32;
    year + years
}

/// SHA-256 of a PEM certificate's DER bytes: what a joining KMA pins (as hex) and what the
/// replicated state records of a KMA's certificate.
pub fn fingerprint(cert_pem: &str) -> Result<[u8; 32], PkiError> {
    let mut reader = std::io::BufReader::new(cert_pem.as_bytes());
    let der = rustls_pemfile::certs(&mut reader).next().and_then(Result::ok).ok_or_else(|| {
        PkiError::Parse { path: "certificate".into(), detail: "no PEM certificate".into() }
    })?;
    Ok(der_fingerprint(&der))
}

/// [`fingerprint`] of a certificate already decoded, as TLS presents a peer's.
pub fn der_fingerprint(certificate: &rustls::pki_types::CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(certificate.as_ref()).into()
}

/// A DER certificate as PEM text (the replicated state keeps certificates as DER).
pub fn pem_of_der(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

/// Replaces a file atomically: written beside it, synced, renamed over it, so a crash leaves
/// the old file or the new one, never half of one.
pub fn replace(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    let temp = path.with_extension("next-tmp");
    write(&temp, text, secret)?;
    let synced = std::fs::File::open(&temp).and_then(|file| file.sync_all());
    synced.map_err(|source| PkiError::Write { path: temp.clone(), source })?;
    std::fs::rename(&temp, path).map_err(|source| PkiError::Write { path: path.into(), source })
}

pub fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read { path: path.into(), source })
}

/// Writes a file; secret ones (private keys) are created with mode 0600.
pub fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file =
        options.open(path).map_err(|source| PkiError::Write { path: path.into(), source })?;
    file.write_all(text.as_bytes()).map_err(|source| PkiError::Write { path: path.into(), source })
}
