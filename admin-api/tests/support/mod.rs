//! An in-memory KMA for the management API's routes: one `statemachine::State` behind a lock,
//! commands applied directly (no Raft, no storage), the audit events kept in a list. The
//! second implementation of `AdminNode` beside the node's, and the reason `admin-api` needs no
//! storage crate to be tested.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use admin_api::api::{ClusterStatus, ErrorBody, ErrorCode};
use admin_api::backend::{Admin, AdminNode, BoxFuture, Caller};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use statemachine::audit::{AuditChain, ChainedAuditEvent};
use statemachine::cluster::SecuritySettings;
use statemachine::command::InitCluster;
use statemachine::quorum::{Quorum, QuorumMember};
use statemachine::{Actor, ClusterId, Command, Envelope, Role, RoleSet, State};
use tokio::sync::{RwLock, RwLockReadGuard};
use tower::ServiceExt;
use wire::ApplyResponse;
use zeroize::Zeroizing;

pub const CLUSTER: ClusterId = ClusterId(0x00c1_a55e_7000_0002);
/// The fake's wall clock: 2024-03-01 12:00 UTC.
pub const NOW_MS: u64 = 1_709_294_400_000;

pub struct MemoryNode {
    pub state: RwLock<State>,
    pub events: Mutex<Vec<ChainedAuditEvent>>,
    /// Every command applied, in log order: what the routes proposed.
    pub commands: Mutex<Vec<Command>>,
    /// Every read barrier the routes asked for: `(min_index, linearizable)`.
    pub barriers: Mutex<Vec<(u64, bool)>>,
    /// The master key the fake wraps imported keys under (real wrapping, a key of its own).
    pub master: security_core::MasterKey,
}

impl MemoryNode {
    /// A cluster with the Security Officer `so`, an Operator `op` and an Auditor `au`.
    pub fn new() -> Arc<MemoryNode> {
        let node = Arc::new(MemoryNode {
            state: RwLock::new(State::new()),
            events: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
            barriers: Mutex::new(Vec::new()),
            master: security_core::MasterKey::generate(),
        });
        let init = InitCluster {
            cluster_id: CLUSTER,
            kma_name: "kma1".into(),
            site: "east".into(),
            security_officer: "so".into(),
            security_officer_verifier: vec![1; 32],
            quorum: Quorum {
                members: vec![QuorumMember { id: "q1".into(), wrapped_share: vec![1; 48] }],
                threshold: 1,
            },
            autonomous_unlock: false,
        };
        node.ok(Actor::System, Command::InitCluster(init));
        for (id, role) in [("op", Role::Operator), ("au", Role::Auditor)] {
            let roles = RoleSet::of(role);
            let command =
                Command::CreateUser { id: id.into(), roles, passphrase_verifier: vec![2; 32] };
            node.ok(Actor::User("so".into()), command);
        }
        node.ok(
            Actor::User("so".into()),
            Command::SetSecuritySettings(SecuritySettings::default()),
        );
        node
    }

    pub fn apply(&self, actor: Actor, command: Command) -> ApplyResponse {
        let mut state = self.state.try_write().expect("no reader while applying");
        let index = state.last_applied_index() + 1;
        self.commands.lock().expect("commands").push(command.clone());
        let envelope =
            Envelope { time_ms: NOW_MS, origin_node_id: 1, actor, request_id: None, command };
        let applied = state.apply(index, &envelope);
        state.check_invariants();
        let chained = applied
            .events
            .into_iter()
            .zip(applied.links)
            .map(|(event, link)| ChainedAuditEvent { seq: link.seq, link: link.link, event });
        self.events.lock().expect("events").extend(chained);
        ApplyResponse { index, result: applied.result }
    }

    #[track_caller]
    pub fn ok(&self, actor: Actor, command: Command) {
        let kind = command.kind();
        if let Err(reject) = self.apply(actor, command).result {
            panic!("{kind:?} was rejected: {reject}");
        }
    }
}

impl AdminNode for MemoryNode {
    fn barrier(&self, min_index: u64, linearizable: bool) -> BoxFuture<'_, Result<(), ErrorBody>> {
        self.barriers.lock().expect("barriers").push((min_index, linearizable));
        Box::pin(async { Ok(()) })
    }

    fn state(&self) -> BoxFuture<'_, RwLockReadGuard<'_, State>> {
        Box::pin(self.state.read())
    }

    fn audit_events(
        &self,
        from_index: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ChainedAuditEvent>, ErrorBody>> {
        let events = self.events.lock().expect("events");
        let page = events.iter().filter(|row| row.event.index >= from_index).take(limit);
        let page: Vec<ChainedAuditEvent> = page.cloned().collect();
        Box::pin(async move { Ok(page) })
    }

    fn audit_anchors(&self) -> BoxFuture<'_, Result<Vec<AuditChain>, ErrorBody>> {
        Box::pin(async { Ok(vec![AuditChain::GENESIS]) })
    }

    fn propose(
        &self,
        user: String,
        command: Command,
        _passphrase: Option<Zeroizing<String>>,
    ) -> BoxFuture<'_, Result<ApplyResponse, ErrorBody>> {
        let applied = self.apply(Actor::User(user), command);
        Box::pin(async move { Ok(applied) })
    }

    fn cluster_status(&self) -> BoxFuture<'_, ClusterStatus> {
        Box::pin(async {
            ClusterStatus {
                cluster_id: Some(CLUSTER.to_string()),
                answered_by: "kma1".into(),
                leader: Some("kma1".into()),
                term: 1,
                commit_index: 0,
                kmas: Vec::new(),
            }
        })
    }

    fn now_ms(&self) -> u64 {
        NOW_MS
    }

    fn kma_name(&self) -> String {
        "kma1".into()
    }

    fn wrap_keys<'a>(
        &'a self,
        keys: &'a [(statemachine::KeyId, &'a [u8; 32])],
    ) -> BoxFuture<'a, admin_api::backend::WrapResult> {
        use security_core::key_wrap::{check_value, wrap_key, KeyMaterial};
        let wrapped = keys.iter().map(|(id, value)| {
            let material = KeyMaterial::from_bytes(value);
            (wrap_key(&self.master, CLUSTER, id, &material), check_value(&material))
        });
        let wrapped = wrapped.collect();
        Box::pin(async move { Ok(wrapped) })
    }

    fn propose_system(&self, command: Command) -> BoxFuture<'_, Result<ApplyResponse, ErrorBody>> {
        let applied = self.apply(Actor::System, command);
        Box::pin(async move { Ok(applied) })
    }

    fn transfer(
        &self,
        work: security_core::transfer::TransferWork,
    ) -> BoxFuture<'_, Result<security_core::transfer::TransferDone, ErrorBody>> {
        Box::pin(async move {
            let (cluster_id, pair) = {
                let state = self.state.read().await;
                (state.cluster_id(), state.meta().transfer_key_pair.clone())
            };
            admin_api::transfer::perform(&self.master, cluster_id, pair, work)
        })
    }

    /// Signs with a CA made for the call: what the tests check is the name it gives the
    /// agent and the enrollment recorded, not the chain (the node's CA is tested in node).
    fn sign_agent_certificate(
        &self,
        agent: &str,
        csr_pem: &str,
    ) -> Result<(String, String), ErrorBody> {
        let refused = |e: rcgen::Error| ErrorBody::new(ErrorCode::BadRequest, e.to_string());
        let key = rcgen::KeyPair::generate().map_err(refused)?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(refused)?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&key).map_err(refused)?;
        let mut request =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(refused)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(refused)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("agent:{agent}"));
        request.params = params;
        let certificate = request.signed_by(&ca, &key).map_err(refused)?;
        Ok((certificate.pem(), ca.pem()))
    }
}

/// The management API's router on `node`.
pub fn router(node: &Arc<MemoryNode>) -> axum::Router {
    admin_api::routes::router(Arc::new(Admin::new(node.clone()))).0
}

/// A request as the node's TLS server hands it on: with the caller its certificate names.
pub fn request(method: &str, uri: &str, user: Option<&str>, body: Body) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    request.extensions_mut().insert(Caller(user.map(str::to_owned)));
    request
}

/// Sends `request` through the router: the status, the Content-Type and the body.
pub async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String, String) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("ASCII").to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    (status, content_type, String::from_utf8(bytes.to_vec()).expect("UTF-8"))
}

/// Parses a refusal; checks that it is JSON, sent with its code's status.
#[track_caller]
pub fn refusal(answer: (StatusCode, String, String)) -> ErrorBody {
    let (status, content_type, body) = answer;
    assert_eq!(content_type, "application/json", "{status}: {body}");
    let error: ErrorBody =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {body}"));
    assert_eq!(status.as_u16(), error.code.http_status(), "{body}");
    error
}

/// The codes a list of refusals carries, for whole-list comparisons.
pub fn codes(errors: &[ErrorBody]) -> Vec<ErrorCode> {
    errors.iter().map(|error| error.code).collect()
}
