//! A client of the management listener, authenticated by a certificate from the cluster CA: used
//! by `kma` subcommands, the process tests, the chaos tests and the benchmark.

use std::path::Path;
use std::time::Duration;

use statemachine::{Command, RequestId};

use crate::kma::NodeError;
use crate::wire::{NodeStatus, ProposeRequest, ProposeResponse, StateDigest, POSTCARD};

#[derive(Clone)]
pub struct KmaClient {
    http: reqwest::Client,
    /// What [`KmaClient::with_own_connections`] builds another client from.
    parts: std::sync::Arc<(rustls::ClientConfig, reqwest::header::HeaderMap)>,
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
        let tls = crate::transport::tls::client_config(tls_dir, cert_file, key_file)?;
        KmaClient::from_parts(tls, reqwest::header::HeaderMap::new())
    }

    fn from_parts(
        tls: rustls::ClientConfig,
        headers: reqwest::header::HeaderMap,
    ) -> Result<KmaClient, NodeError> {
        let http = crate::kma::https_client_with(tls.clone(), headers.clone())?;
        Ok(KmaClient { http, parts: std::sync::Arc::new((tls, headers)) })
    }

    /// The same credentials over connections of its own (a clone shares the pool): what a
    /// benchmark's concurrent writers each need.
    pub fn with_own_connections(&self) -> Result<KmaClient, NodeError> {
        let (tls, headers) = &*self.parts;
        KmaClient::from_parts(tls.clone(), headers.clone())
    }

    /// A client presenting the KMA's own certificate from its data dir: what `kma status`
    /// reads a KMA's status with. A member KMA's certificate reads the cluster's status; it
    /// logs in as nobody, so it cannot act as a user.
    pub fn node(data_dir: &Path) -> Result<KmaClient, NodeError> {
        let tls_dir = data_dir.join("tls");
        if !tls_dir.join(crate::pki::NODE_CERT_FILE).exists() {
            return Err(NodeError::Usage(format!(
                "{} holds no KMA certificate (tls/{}): give the data dir of a KMA made by kma \
                 init, kma join or kma local (for kma local: .kms-local/kma1)",
                data_dir.display(),
                crate::pki::NODE_CERT_FILE
            )));
        }
        KmaClient::new(&tls_dir, crate::pki::NODE_CERT_FILE, crate::pki::NODE_KEY_FILE)
    }

    /// Logs the Security Officer named in `secrets` in at `address`, trusting the CA in the
    /// data dir: how `kma local`, `kma admit`, `kma write` and the tests act as an officer,
    /// with a session recorded in the state like anyone's (issue #16 point 9: `kma init`
    /// writes no administrator certificate).
    pub async fn officer(
        data_dir: &Path,
        address: &str,
        secrets: &crate::setup::InitSecrets,
    ) -> anyhow::Result<KmaClient> {
        let ca_pem = crate::pki::read(&data_dir.join("tls").join(crate::pki::CA_FILE))?;
        let passphrase = &secrets.security_officer_passphrase;
        KmaClient::login(address, &ca_pem, &secrets.security_officer, passphrase).await
    }

    /// Logs `user` in at `address` by passphrase challenge/response, with kmsctl's login
    /// (`admin_api::client::login`: one implementation for tools, tests and operators): the
    /// passphrase stays here, the KMA proves itself, and the answer is a short-lived
    /// certificate for a key pair made here. Every request names the login's log index, so a
    /// KMA that has not applied the login yet waits for it rather than refuse the session.
    pub async fn login(
        address: &str,
        ca_pem: &str,
        user: &str,
        passphrase: &str,
    ) -> anyhow::Result<KmaClient> {
        let addresses = [address.to_string()];
        let granted = admin_api::client::login(&addresses, ca_pem, user, passphrase).await?;
        // The CA the caller trusted to reach the KMA, not the one the KMA sent back.
        let tls = crate::transport::tls::client_config_from_pem(
            ca_pem,
            &granted.cert_pem,
            &granted.key_pem,
        )?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(admin_api::api::LOGIN_INDEX_HEADER, granted.login_index.into());
        Ok(KmaClient::from_parts(tls, headers)?)
    }

    pub async fn propose(
        &self,
        address: &str,
        request_id: Option<RequestId>,
        command: Command,
    ) -> Result<ProposeResponse, ClientError> {
        self.propose_with_passphrase(address, request_id, command, None).await
    }

    /// Proposes a command that sets a passphrase (users, agents, KMAs); the KMA keeps only a
    /// verifier made from it.
    pub async fn propose_with_passphrase(
        &self,
        address: &str,
        request_id: Option<RequestId>,
        command: Command,
        passphrase: Option<&str>,
    ) -> Result<ProposeResponse, ClientError> {
        let request = ProposeRequest {
            actor: None,
            origin_node_id: None,
            request_id,
            command,
            passphrase: passphrase.map(str::to_string),
        };
        let body = postcard::to_allocvec(&request).map_err(|e| transport(address, e))?;
        let bytes = self.send(address, "/v1/propose", Some(body), Duration::from_secs(15)).await?;
        postcard::from_bytes(&bytes).map_err(|e| transport(address, e))
    }

    pub async fn status(&self, address: &str) -> Result<NodeStatus, ClientError> {
        let bytes = self.send(address, "/v1/status", None, Duration::from_secs(5)).await?;
        serde_json::from_slice(&bytes).map_err(|e| transport(address, e))
    }

    /// The KMA's `/metrics` text (Prometheus text format): what a benchmark reads the write
    /// stages from.
    pub async fn metrics_text(&self, address: &str) -> Result<String, ClientError> {
        let bytes = self.send(address, "/metrics", None, Duration::from_secs(5)).await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| transport(address, e))
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
        let users: Vec<admin_api::api::User> =
            serde_json::from_slice(&bytes).map_err(|e| transport(address, e))?;
        Ok(users.into_iter().map(|user| user.id).collect())
    }

    /// The first page of this KMA's audit records of `kind` (`authentication-failure`,
    /// `command`, ...), as of at least log index `min_index`. Auditors only (SPEC S5).
    pub async fn audit(
        &self,
        address: &str,
        kind: &str,
        min_index: u64,
    ) -> Result<Vec<admin_api::api::AuditRecord>, ClientError> {
        let path = format!("/v1/audit?kind={kind}&min_index={min_index}");
        let bytes = self.send(address, &path, None, Duration::from_secs(35)).await?;
        let page: admin_api::api::Page<admin_api::api::AuditRecord> =
            serde_json::from_slice(&bytes).map_err(|e| transport(address, e))?;
        Ok(page.rows)
    }

    /// A GET of the management API at `path` (e.g. `/v1/keys/{id}?min_index=9`), its JSON
    /// answer decoded as `T`: for reads that have no method of their own here.
    pub async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        let bytes = self.send(address, path, None, Duration::from_secs(35)).await?;
        serde_json::from_slice(&bytes).map_err(|e| transport(address, e))
    }

    /// One page of this KMA's audit records from the start of its log, or after the record
    /// `after` names (the `next` of the previous page), as of at least log index `min_index`;
    /// the page's `next` is `None` once the log is exhausted. Auditors only (SPEC S5).
    pub async fn audit_page(
        &self,
        address: &str,
        after: Option<&str>,
        min_index: u64,
    ) -> Result<admin_api::api::Page<admin_api::api::AuditRecord>, ClientError> {
        let after = after.map(|cursor| format!("&after={cursor}")).unwrap_or_default();
        let path = format!("/v1/audit?limit=1000&min_index={min_index}{after}");
        let bytes = self.send(address, &path, None, Duration::from_secs(35)).await?;
        serde_json::from_slice(&bytes).map_err(|e| transport(address, e))
    }

    /// Enters a quorum member's approval of `operation` (started at log index `min_index`).
    pub async fn approve(
        &self,
        address: &str,
        operation: u64,
        member: &str,
        passphrase: &str,
        min_index: u64,
    ) -> anyhow::Result<ProposeResponse> {
        let request = crate::wire::ApproveRequest {
            operation,
            member: member.into(),
            passphrase: passphrase.into(),
            min_index,
            on_behalf_of: None,
        };
        let url = format!("https://{address}/v1/quorum/approve");
        crate::setup::post_json(&self.http, &url, &request).await
    }

    /// Pending quorum operations and their approvals, as of at least `min_index` (after a
    /// restart a KMA may not yet have replayed the approval a caller was told of).
    pub async fn pending_operations(
        &self,
        address: &str,
        min_index: u64,
    ) -> Result<Vec<admin_api::api::QuorumOperationView>, ClientError> {
        let path = format!("/v1/quorum?min_index={min_index}");
        let bytes = self.send(address, &path, None, Duration::from_secs(35)).await?;
        let quorum: admin_api::api::QuorumView =
            serde_json::from_slice(&bytes).map_err(|e| transport(address, e))?;
        Ok(quorum.pending)
    }

    /// Starts a change of the quorum; the KMA at `address` splits its master key among the new
    /// members, who then enter their passphrases ([`KmaClient::quorum_member_passphrase`]).
    pub async fn change_quorum(
        &self,
        address: &str,
        members: &[&str],
        threshold: u8,
    ) -> anyhow::Result<admin_api::api::ChangeQuorumProgress> {
        let request = crate::wire::ChangeQuorumRequest {
            members: members.iter().map(|id| (*id).to_string()).collect(),
            threshold,
            ttl_ms: None,
        };
        let url = format!("https://{address}/v1/quorum/change");
        crate::setup::post_json(&self.http, &url, &request).await
    }

    /// One new member's passphrase for the pending quorum change `change`.
    pub async fn quorum_member_passphrase(
        &self,
        address: &str,
        change: u64,
        member: &str,
        passphrase: &str,
    ) -> anyhow::Result<admin_api::api::ChangeQuorumProgress> {
        let request = admin_api::api::QuorumMemberPassphrase {
            change,
            member: member.into(),
            passphrase: passphrase.into(),
        };
        let url = format!("https://{address}/v1/quorum/change/member");
        crate::setup::post_json(&self.http, &url, &request).await
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
