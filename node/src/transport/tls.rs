//! Mutual TLS 1.3 for every connection between KMAs and from clients (rustls). A running KMA's
//! own listeners and links take theirs from `live_tls`; these are the clients' and the tools'.
//!
//! The management listener asks every client for a certificate from the cluster's CA but also
//! lets a client without one through the handshake: only the join endpoint serves such clients,
//! every other route refuses them. A certificate from another cluster's CA fails the handshake.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

use crate::pki::{self, Identity};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("{what}: {detail}")]
    Config { what: &'static str, detail: String },
}

fn config_error(what: &'static str) -> impl Fn(rustls::Error) -> TlsError {
    move |e| TlsError::Config { what, detail: e.to_string() }
}

pub fn certs_from_pem(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut std::io::BufReader::new(pem.as_bytes()))
        .filter_map(Result::ok)
        .collect()
}

/// The name a KMA at `address` (host:port, an IPv6 host in brackets) is verified under: its
/// host, a DNS name or an IP address as its certificate lists it.
pub fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let host = address.rsplit_once(':').map_or(address, |(host, _port)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{address}: not a host name: {e}"))
}

fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem) {
        roots.add(cert).map_err(config_error("cluster CA"))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client's TLS: trusts only the cluster CA and presents `cert_file`/`key_file`.
pub fn client_config(
    tls_dir: &Path,
    cert_file: &str,
    key_file: &str,
) -> Result<ClientConfig, TlsError> {
    let ca_pem = pki::read(&tls_dir.join(pki::CA_FILE))?;
    let cert_pem = pki::read(&tls_dir.join(cert_file))?;
    let key_pem = pki::read(&tls_dir.join(key_file))?;
    client_config_from_pem(&ca_pem, &cert_pem, &key_pem)
}

/// As `client_config`, from PEM text in memory (a certificate fresh from a login).
pub fn client_config_from_pem(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, TlsError> {
    let chain = certs_from_pem(cert_pem);
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(key_pem.as_bytes()))
        .ok()
        .flatten()
        .ok_or(TlsError::Config { what: "private key", detail: "no PEM key".into() })?;
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error("TLS 1.3"))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(chain, key)
        .map_err(config_error("client certificate"))
}

/// A client that trusts only `ca_pem` and presents no certificate (a joining KMA).
pub fn anonymous_client_config(ca_pem: &str) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error("TLS 1.3"))?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth())
}

/// A client for the one request a joining KMA makes before it knows the CA: fetching the CA
/// certificate, which it then checks against the fingerprint in its join token. Nothing read
/// through this connection is trusted before that check.
pub fn ca_fetch_client_config() -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error("TLS 1.3"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CheckedLater))
        .with_no_client_auth())
}

#[derive(Debug)]
struct CheckedLater;

impl ServerCertVerifier for CheckedLater {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify_schemes()
    }
}

/// Every verifier here refuses TLS 1.2, which no config of the KMA offers.
pub(crate) fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General("TLS 1.2 is not offered".into()))
}

/// A TLS 1.3 handshake signature checked with the provider's algorithms: what every verifier
/// here does, whichever CAs it trusts.
pub(crate) fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let algorithms = provider().signature_verification_algorithms;
    rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
}

/// The signature schemes [`tls13_signature`] checks.
pub(crate) fn verify_schemes() -> Vec<SignatureScheme> {
    provider().signature_verification_algorithms.supported_schemes()
}

/// Why a KMA of cluster epoch `epoch` is refused by one of epoch `current` (SPEC B7).
pub fn older_epoch(epoch: u32, current: u32) -> String {
    format!(
        "this KMA's certificate is of cluster epoch {epoch}, older than this cluster's epoch \
         {current}: it was left behind by a recovery or a restore; fence it, wipe its data dir \
         and join it anew"
    )
}

/// The identity a verified client certificate names, from its common name.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let common_name = parsed.subject().iter_common_name().next()?.as_str().ok()?;
    Identity::from_common_name(common_name)
}
