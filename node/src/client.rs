//! A client of the management listener, authenticated by a certificate from the cluster CA: used
//! by `kma` subcommands, the process tests, the chaos tests and the benchmark.

use std::path::Path;
use std::time::Duration;

use statemachine::{Command, RequestId};

use crate::kma::{https_client, NodeError};
use crate::wire::{NodeStatus, ProposeRequest, ProposeResponse, StateDigest, POSTCARD};

#[derive(Clone)]
pub struct KmaClient {
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{address}: {detail}")]
    Transport { address: String, detail: String },
    #[error("{address}: HTTP {status}: {body}")]
    Refused { address: String, status: u16, body: String },
}

impl KmaClient {
    /// A client presenting `cert_file`/`key_file` from `tls_dir` (e.g. `admin.pem` written by
    /// `kma init`).
    pub fn new(tls_dir: &Path, cert_file: &str, key_file: &str) -> Result<KmaClient, NodeError> {
        let tls = crate::tls::client_config(tls_dir, cert_file, key_file)?;
        Ok(KmaClient { http: https_client(tls)? })
    }

    pub fn admin(data_dir: &Path) -> Result<KmaClient, NodeError> {
        if !data_dir.join("tls").join(crate::pki::ADMIN_CERT_FILE).exists() {
            return Err(NodeError::Usage(format!(
                "{} holds no administrator certificate (tls/admin.pem): give the data dir of the \
                 KMA created by `kma init` or `kma local` (for `kma local`: .kms-local/kma1)",
                data_dir.display()
            )));
        }
        KmaClient::new(
            &data_dir.join("tls"),
            crate::pki::ADMIN_CERT_FILE,
            crate::pki::ADMIN_KEY_FILE,
        )
    }

    pub async fn propose(
        &self,
        address: &str,
        request_id: Option<RequestId>,
        command: Command,
    ) -> Result<ProposeResponse, ClientError> {
        let request = ProposeRequest { actor: None, origin_node_id: None, request_id, command };
        let body = postcard::to_allocvec(&request).map_err(|e| transport(address, e))?;
        let bytes = self.send(address, "/v1/propose", Some(body), Duration::from_secs(15)).await?;
        postcard::from_bytes(&bytes).map_err(|e| transport(address, e))
    }

    pub async fn status(&self, address: &str) -> Result<NodeStatus, ClientError> {
        let bytes = self.send(address, "/v1/status", None, Duration::from_secs(5)).await?;
        serde_json::from_slice(&bytes).map_err(|e| transport(address, e))
    }

    pub async fn digest(&self, address: &str, min_index: u64) -> Result<StateDigest, ClientError> {
        let path = format!("/v1/digest?min_index={min_index}");
        let bytes = self.send(address, &path, None, Duration::from_secs(35)).await?;
        serde_json::from_slice(&bytes).map_err(|e| transport(address, e))
    }

    pub async fn users(&self, address: &str) -> Result<Vec<String>, ClientError> {
        self.users_read(address, 0, false).await
    }

    /// Users as of at least `min_index`; `linearizable` asks for a current answer.
    pub async fn users_read(
        &self,
        address: &str,
        min_index: u64,
        linearizable: bool,
    ) -> Result<Vec<String>, ClientError> {
        let consistency = if linearizable { "&consistency=linearizable" } else { "" };
        let path = format!("/v1/users?min_index={min_index}{consistency}");
        let bytes = self.send(address, &path, None, Duration::from_secs(35)).await?;
        serde_json::from_slice(&bytes).map_err(|e| transport(address, e))
    }

    /// A membership change, run by the leader.
    pub async fn membership(
        &self,
        address: &str,
        request: &crate::wire::MembershipRequest,
    ) -> Result<Result<u64, String>, ClientError> {
        let body = postcard::to_allocvec(request).map_err(|e| transport(address, e))?;
        let bytes = self.send(address, "/v1/members", Some(body), Duration::from_secs(35)).await?;
        postcard::from_bytes(&bytes).map_err(|e| transport(address, e))
    }

    async fn send(
        &self,
        address: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, ClientError> {
        let url = format!("https://{address}{path}");
        let request = match body {
            Some(body) => {
                self.http.post(url).header(reqwest::header::CONTENT_TYPE, POSTCARD).body(body)
            }
            None => self.http.get(url),
        };
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport(address, format!("{e:#}")))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport(address, e))?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes).into_owned();
            return Err(ClientError::Refused {
                address: address.into(),
                status: status.as_u16(),
                body,
            });
        }
        Ok(bytes)
    }
}

fn transport(address: &str, detail: impl ToString) -> ClientError {
    ClientError::Transport { address: address.into(), detail: detail.to_string() }
}
