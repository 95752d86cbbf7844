//! Enrollment and who may talk to the service listener (SPEC A1, S2), through real TLS sockets
//! on 127.0.0.1.

mod support;

use agent_gateway::client::enroll;
use agent_gateway::wire::{
    codes, EnrollChallenge, EnrollHello, EnrollProof, ErrorBody, ENROLL_PURPOSE,
};
use agent_gateway::ClientError;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use security_core::challenge::{ClientLogin, ServerChallenge};
use statemachine::{Actor, Command};
use support::*;

fn refusal(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, ErrorBody) {
    match result {
        Err(ClientError::Refused { status, body, .. }) => (status, body),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn error_body(response: reqwest::Response) -> (u16, ErrorBody) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("an error body"))
}

/// Setup: a cluster with agent drive1 created by an Operator, one KMA listed in discovery.
/// Action: the drive enrolls with its passphrase, then uses its certificate.
/// Expectation: the state records the SHA-256 of exactly the certificate the drive received,
/// discovery tells the drive its site, and an agent operation succeeds.
#[tokio::test]
async fn a1_enrollment_gives_a_certificate_the_listener_accepts() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    list(&cluster, "kma1", "east", &address, true);

    let credentials = enroll(&address, &cluster.ca.pem, AGENT, PASSPHRASE).await.expect("enroll");

    assert_eq!(cluster.fingerprint_of(AGENT), Some(fingerprint(&credentials.certificate_pem)));
    assert_eq!(credentials.ca_pem, cluster.ca.pem);
    assert!(credentials.private_key_pem.contains("PRIVATE KEY"));
    let client = client(&[&address], &credentials);
    client.discover().await.expect("discovery");
    assert_eq!(client.site().as_deref(), Some("east"));
    let created = client.create_data_unit("VOL001").await.expect("create a data unit");
    assert!(created.index > 0);
}

/// Setup: two KMAs; kma2 stops applying entries (its reads see the state from before the
/// enrollment). Action: the drive enrolls through kma1, then, knowing only kma2, creates a data
/// unit; kma2 catches up; the drive asks again. Expectation: kma2 does not refuse the new
/// certificate as revoked (it has not seen the enrollment): it is asked to wait for the
/// enrollment's index and answers "not applied yet", retryable; once caught up it serves the
/// same request. Regression: CI of 2026-11-26 failed `a4_lto4_keys_on_demand_and_no_disassociation`
/// with `certificate_revoked` from a KMA a few entries behind.
#[tokio::test]
async fn a1_t90_issue_5_a_lagging_kma_waits_for_the_enrollment_instead_of_refusing() {
    let cluster = Cluster::new();
    let kma1 = FakeKma::new(&cluster);
    let kma2 = FakeKma::new(&cluster);
    let address1 = start(&kma1).await;
    let address2 = start(&kma2).await;
    kma2.fall_behind();

    let credentials = enroll(&address1, &cluster.ca.pem, AGENT, PASSPHRASE).await.expect("enroll");
    let client = client(&[&address2], &credentials);
    let behind = client.create_data_unit("VOL001").await;

    assert!(credentials.enrolled_index > 0);
    assert!(
        matches!(behind, Err(ClientError::Unavailable { .. })),
        "a lagging KMA must answer retryably, not refuse the certificate: {behind:?}"
    );
    let asked = kma2.min_indexes.lock().expect("reads").clone();
    assert!(
        asked.contains(&credentials.enrolled_index),
        "kma2 waited for the enrollment: {asked:?}"
    );
    kma2.catch_up();
    let created = client.create_data_unit("VOL001").await.expect("served once caught up");
    assert_eq!(client.min_index(), created.index);
}

/// Setup: source 127.0.0.1, `login_failures_max` = 3. Action: an unknown agent, then drive1
/// with a wrong passphrase twice, then drive1 with the right one. Expectation: the first three
/// are refused alike (an unknown agent is not told apart) and each is audited with principal and
/// source; the fourth is throttled although its passphrase is right, and nothing is enrolled.
#[tokio::test]
async fn s2_wrong_passphrases_are_refused_audited_then_throttled() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    let ca = &cluster.ca.pem;

    let (status, body) = refusal(enroll(&address, ca, "ghost", PASSPHRASE).await);
    assert_eq!((status, body.code.as_str()), (401, codes::AUTHENTICATION_FAILED));
    for _ in 0..2 {
        let (status, body) = refusal(enroll(&address, ca, AGENT, "not the passphrase").await);
        assert_eq!((status, body.code.as_str()), (401, codes::AUTHENTICATION_FAILED));
        assert!(!body.retryable);
    }
    let (status, body) = refusal(enroll(&address, ca, AGENT, PASSPHRASE).await);

    assert_eq!((status, body.code.as_str()), (429, codes::THROTTLED));
    assert!(body.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 600_000));
    let source = "127.0.0.1".to_owned();
    assert_eq!(
        cluster.authentication_failures(),
        vec![
            ("agent:ghost".to_owned(), source.clone()),
            ("agent:drive1".to_owned(), source.clone()),
            ("agent:drive1".to_owned(), source),
        ]
    );
    assert_eq!(cluster.fingerprint_of(AGENT), None);
}

fn certificate_request(agent: &str) -> String {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("agent:{agent}"));
    params.distinguished_name = name;
    params.serialize_request(&key).expect("csr").pem().expect("pem")
}

/// Setup: an exchange captured in full (hello, challenge, proof). Action: the proof is sent a
/// second time after it enrolled the drive. Expectation: refused as answering no pending
/// challenge, audited, and the recorded certificate stays the first one.
#[tokio::test]
async fn a1_replayed_proof_is_refused() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    let http = raw_client(&cluster.ca.pem, None, false);
    let url = |route: &str| format!("https://{address}/agent/v1/enroll/{route}");

    let (login, hello) = ClientLogin::start(AGENT, ENROLL_PURPOSE);
    let hello = EnrollHello { agent_id: AGENT.into(), client_nonce: hello.client_nonce };
    let response = http.post(url("hello")).json(&hello).send().await.expect("hello");
    let challenge: EnrollChallenge = response.json().await.expect("challenge");
    let challenge = ServerChallenge {
        salt: challenge.salt,
        kdf: challenge.kdf,
        server_nonce: challenge.server_nonce,
    };
    let (_, proof) = login.respond(PASSPHRASE, &challenge).expect("proof");
    let proof = EnrollProof {
        agent_id: AGENT.into(),
        server_nonce: proof.server_nonce,
        proof: proof.proof,
        csr_pem: certificate_request(AGENT),
    };
    let first = http.post(url("proof")).json(&proof).send().await.expect("proof");
    assert_eq!(first.status(), 200);
    let recorded = cluster.fingerprint_of(AGENT);
    assert!(recorded.is_some());

    let replay = http.post(url("proof")).json(&proof).send().await.expect("replay");

    let (status, body) = error_body(replay).await;
    assert_eq!((status, body.code.as_str()), (401, codes::AUTHENTICATION_FAILED));
    assert!(body.message.contains("no pending challenge"), "{}", body.message);
    assert_eq!(cluster.authentication_failures().len(), 1);
    assert_eq!(cluster.fingerprint_of(AGENT), recorded);
}

/// Setup: drive1 enrolled and working. Action: an Operator sets a new passphrase and the drive
/// enrolls again with it. Expectation: the old certificate is refused as revoked (from the
/// moment the passphrase changed, and after the new enrollment), the new one works, and the
/// old passphrase no longer enrolls.
#[tokio::test]
async fn a1_reenrollment_revokes_the_old_certificate() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    let ca = &cluster.ca.pem;
    let old = enroll(&address, ca, AGENT, PASSPHRASE).await.expect("enroll");
    let old_client = client(&[&address], &old);
    old_client.create_data_unit("VOL001").await.expect("works before");

    cluster.set_passphrase(AGENT, "second passphrase");
    let (status, body) = refusal(old_client.create_data_unit("VOL002").await);
    assert_eq!((status, body.code.as_str()), (403, codes::CERTIFICATE_REVOKED));
    let (status, _) = refusal(enroll(&address, ca, AGENT, PASSPHRASE).await);
    assert_eq!(status, 401);
    let new = enroll(&address, ca, AGENT, "second passphrase").await.expect("re-enroll");

    let (status, body) = refusal(old_client.create_data_unit("VOL003").await);
    assert_eq!((status, body.code.as_str()), (403, codes::CERTIFICATE_REVOKED));
    client(&[&address], &new).create_data_unit("VOL004").await.expect("new certificate works");
    assert_ne!(old.certificate_pem, new.certificate_pem);
}

/// Records `certificate_pem` as drive1's certificate, so that only TLS can refuse it.
fn record_enrollment(cluster: &Cluster, certificate_pem: &str) {
    let command = Command::RecordAgentEnrollment {
        id: AGENT.into(),
        certificate_fingerprint: fingerprint(certificate_pem),
    };
    cluster.ok(Actor::System, command);
}

/// Sends GET keys with `identity`: `Err` when the request never got an HTTP answer.
async fn keys_with(
    cluster: &Cluster,
    address: &str,
    identity: (&str, &str),
) -> Result<reqwest::Response, reqwest::Error> {
    let http = raw_client(&cluster.ca.pem, Some(identity), false);
    let url = format!("https://{address}/agent/v1/data-units/{}/keys", "0".repeat(32));
    http.get(url).send().await
}

/// Setup: a certificate for agent:drive1 from the cluster CA whose validity ended in 2021, its
/// fingerprint recorded as the agent's. Expectation: no HTTP answer (the handshake fails), while
/// a valid certificate of the same name on the same listener gets one.
#[tokio::test]
async fn a1_expired_certificate_is_refused_by_tls() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    let (expired, expired_key) = cluster.ca.issue("agent:drive1", true);
    record_enrollment(&cluster, &expired);

    let refused = keys_with(&cluster, &address, (&expired, &expired_key)).await;

    assert!(refused.is_err(), "an expired certificate got an answer: {refused:?}");
    let (valid, valid_key) = cluster.ca.issue("agent:drive1", false);
    let answered = keys_with(&cluster, &address, (&valid, &valid_key)).await.expect("answer");
    let (status, body) = error_body(answered).await;
    assert_eq!((status, body.code.as_str()), (403, codes::CERTIFICATE_REVOKED));
}

/// Setup: a certificate for agent:drive1 from another CA, its fingerprint recorded as the
/// agent's. Expectation: no HTTP answer, while one from the cluster CA gets an answer.
#[tokio::test]
async fn a1_certificate_of_a_foreign_ca_is_refused_by_tls() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    let foreign_ca = TestCa::new("another cluster's CA");
    let (foreign, foreign_key) = foreign_ca.issue("agent:drive1", false);
    record_enrollment(&cluster, &foreign);

    let refused = keys_with(&cluster, &address, (&foreign, &foreign_key)).await;

    assert!(refused.is_err(), "a foreign certificate got an answer: {refused:?}");
    let (valid, valid_key) = cluster.ca.issue("agent:drive1", false);
    let answered = keys_with(&cluster, &address, (&valid, &valid_key)).await.expect("answer");
    assert_eq!(answered.status(), 403);
}

/// Expectation: without a certificate an agent route answers certificate_required; with a
/// user's certificate of the same CA, not_an_agent; discovery needs neither.
#[tokio::test]
async fn a2_agent_routes_need_an_agent_certificate() {
    let cluster = Cluster::new();
    let kma = FakeKma::new(&cluster);
    let address = start(&kma).await;
    let url = format!("https://{address}/agent/v1/data-units");
    let body = serde_json::json!({
        "external_tag": "VOL001",
        "request_id": {"client": "00000000000000aa", "seq": 1}
    });

    let anonymous = raw_client(&cluster.ca.pem, None, false);
    let response = anonymous.post(&url).json(&body).send().await.expect("answer");
    let (status, error) = error_body(response).await;
    assert_eq!((status, error.code.as_str()), (401, codes::CERTIFICATE_REQUIRED));

    let (user_cert, user_key) = cluster.ca.issue("user:op", false);
    let user = raw_client(&cluster.ca.pem, Some((&user_cert, &user_key)), false);
    let response = user.post(&url).json(&body).send().await.expect("answer");
    let (status, error) = error_body(response).await;
    assert_eq!((status, error.code.as_str()), (403, codes::NOT_AN_AGENT));

    let discovery = anonymous.get(format!("https://{address}/agent/v1/discovery")).send();
    assert_eq!(discovery.await.expect("answer").status(), 200);
    assert_eq!(kma.proposals.load(std::sync::atomic::Ordering::SeqCst), 0);
}
