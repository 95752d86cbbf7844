//! Enrollment from the drive's side (SPEC A1): the key pair and its certificate request are
//! made here, so the private key never leaves the device; the passphrase is only used to
//! answer the KMA's challenge, and the KMA must prove it holds the agent's verifier before the
//! certificate it sends is trusted.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use reqwest::Client;
use security_core::challenge::{ClientLogin, ServerChallenge, ServerFinal};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use super::{http_client, setup, tls_config, AgentCredentials, ClientError, ClientOptions};
use crate::wire::{
    EnrollChallenge, EnrollHello, EnrollProof, EnrollResult, ErrorBody, AGENT_CN_PREFIX,
    ENROLL_PURPOSE, PREFIX,
};

/// Enrolls agent `agent_id` with the KMA at `address` (`host:port`), trusting only `ca_pem`.
/// The passphrase is the one-time enrollment passphrase the Operator set for the agent.
pub async fn enroll(
    address: &str,
    ca_pem: &str,
    agent_id: &str,
    passphrase: &str,
) -> Result<AgentCredentials, ClientError> {
    let key = KeyPair::generate().map_err(|e| setup("agent key pair")(e.to_string()))?;
    let csr_pem = certificate_request(&key, agent_id)?;
    let http =
        http_client(&tls_config(ca_pem, None, Default::default())?, &ClientOptions::default())?;

    let (login, hello) = ClientLogin::start(agent_id, ENROLL_PURPOSE);
    let hello = EnrollHello { agent_id: agent_id.into(), client_nonce: hello.client_nonce };
    let challenge: EnrollChallenge = post(&http, address, "enroll/hello", &hello).await?;
    let challenge = ServerChallenge {
        salt: challenge.salt,
        kdf: challenge.kdf,
        server_nonce: challenge.server_nonce,
    };
    // argon2id takes tens of milliseconds on purpose: keep it off the async workers.
    let passphrase = Zeroizing::new(passphrase.to_owned());
    let responded = tokio::task::spawn_blocking(move || login.respond(&passphrase, &challenge))
        .await
        .map_err(|e| setup("passphrase derivation")(e.to_string()))?;
    let (awaiting, proof) = responded.map_err(|source| security(address, source))?;

    let request = EnrollProof {
        agent_id: agent_id.into(),
        server_nonce: proof.server_nonce,
        proof: proof.proof,
        csr_pem,
    };
    let result: EnrollResult = post(&http, address, "enroll/proof", &request).await?;
    awaiting
        .verify_server(&ServerFinal { server_signature: result.server_signature })
        .map_err(|source| security(address, source))?;
    check_certificate(address, &result.certificate_pem, &key, agent_id)?;
    Ok(AgentCredentials {
        agent_id: agent_id.into(),
        certificate_pem: result.certificate_pem,
        private_key_pem: Zeroizing::new(key.serialize_pem()),
        ca_pem: result.ca_pem,
        enrolled_index: result.index,
    })
}

fn security(address: &str, source: security_core::SecurityError) -> ClientError {
    ClientError::Security { address: address.into(), source }
}

fn certificate_request(key: &KeyPair, agent_id: &str) -> Result<String, ClientError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| setup("certificate request")(e.to_string()))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("{AGENT_CN_PREFIX}{agent_id}"));
    params.distinguished_name = name;
    params
        .serialize_request(key)
        .and_then(|request| request.pem())
        .map_err(|e| setup("certificate request")(e.to_string()))
}

/// The certificate must be for our own key and name: a KMA cannot slip in another identity.
fn check_certificate(
    address: &str,
    certificate_pem: &str,
    key: &KeyPair,
    agent_id: &str,
) -> Result<(), ClientError> {
    let protocol = |detail: &str| ClientError::Protocol {
        address: address.into(),
        detail: format!("the enrollment certificate {detail}"),
    };
    let der = rustls_pemfile::certs(&mut certificate_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| protocol("is not PEM"))?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| protocol("is not X.509"))?;
    if parsed.public_key().raw != key.public_key_der().as_slice() {
        return Err(protocol("is for another key pair"));
    }
    let common_name = parsed.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
    if common_name != Some(&format!("{AGENT_CN_PREFIX}{agent_id}")) {
        return Err(protocol("names another agent"));
    }
    Ok(())
}

async fn post<T: DeserializeOwned>(
    http: &Client,
    address: &str,
    route: &str,
    body: &impl Serialize,
) -> Result<T, ClientError> {
    let url = format!("https://{address}{PREFIX}/{route}");
    let unavailable = |error: reqwest::Error| ClientError::Unavailable {
        attempts: 1,
        last: format!("{address}: {error}"),
    };
    let response = http.post(url).json(body).send().await.map_err(unavailable)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(unavailable)?;
    let protocol = |detail: String| ClientError::Protocol { address: address.into(), detail };
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| protocol(e.to_string()));
    }
    let body: ErrorBody = serde_json::from_slice(&bytes)
        .map_err(|e| protocol(format!("HTTP {status} without an error body ({e})")))?;
    Err(ClientError::Refused { address: address.into(), status: status.as_u16(), body })
}
