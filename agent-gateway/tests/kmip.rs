//! The KMIP listener through real TLS on 127.0.0.1 (SPEC U5, issue 19): a tape library's
//! sequence from the Tape Library profile (TL-M-2, TL-M-3), the refusals of bad input, and
//! key groups deciding what a KMIP client sees. The state is the in-memory cluster of
//! `support`; PyKMIP's run against a real cluster is `scripts/kmip-interop.sh`.

mod support;

use std::sync::Arc;

use agent_gateway::kmip::{client, serve_kmip};
use agent_gateway::{ConnectionLimits, ConnectionStats};
use kmip::enums::{Operation, ResultReason, ResultStatus};
use kmip::message::ProtocolVersion;
use kmip::{tag, Item, Limits, Value};
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use statemachine::{Actor, Command, KeyId};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const ASI_DATA: &str = "123456789ABCDEF123456789123456789ABCDEF123456789ABCDEF1234000000";

/// The KMIP listener's TLS as a test: this CA's client certificates required.
fn kmip_server_config(ca: &TestCa) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der_of(&ca.pem)).expect("CA root");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let (cert_pem, key_pem) = ca.issue("kma-1", false);
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).expect("pem").expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![der_of(&cert_pem)], key)
        .expect("server certificate");
    Arc::new(config)
}

/// An enrolled KMIP client `id` in `group` (its default); returns its certificate and key.
fn enroll(cluster: &Cluster, id: &str, group: &str) -> (String, String) {
    let create = Command::CreateAgent {
        id: id.into(),
        site: "east".into(),
        passphrase_verifier: vec![3; 32],
    };
    cluster.ok(user("op"), create);
    cluster
        .ok(user("co"), Command::AssignKeyGroupToAgent { agent: id.into(), group: group.into() });
    let (cert, key) = cluster.ca.issue(&format!("agent:{id}"), false);
    let enrolled = Command::RecordAgentEnrollment {
        id: id.into(),
        certificate_fingerprint: fingerprint(&cert),
    };
    cluster.ok(Actor::System, enrolled);
    (cert, key)
}

struct Kmip {
    cluster: Arc<Cluster>,
    address: String,
}

async fn start_kmip() -> Kmip {
    let cluster = Cluster::new();
    cluster.ok(Actor::System, support_format_3());
    let kma = FakeKma::new(&cluster);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let tls = kmip_server_config(&cluster.ca);
    tokio::spawn(serve_kmip(
        kma,
        listener,
        tls,
        ConnectionLimits::default(),
        ConnectionStats::default(),
    ));
    Kmip { cluster, address }
}

/// The log format the KMIP commands need: every KMA (the one) reports it.
fn support_format_3() -> Command {
    let version = u32::from(statemachine::format::LOG_FORMAT_MAX);
    Command::ReportSoftwareVersion { kma: "kma1".into(), version }
}

async fn connect(kmip: &Kmip, identity: (&str, &str)) -> TlsStream<TcpStream> {
    let config = client_tls(&kmip.cluster.ca.pem, Some(identity));
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(&kmip.address).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS")
}

/// Sends one request and reads its response, or `None` if there is none to read.
async fn exchange(stream: &mut TlsStream<TcpStream>, request: &[u8]) -> Option<Item> {
    client::exchange(stream, request, std::time::Duration::from_secs(10)).await.ok()
}

fn request(version: ProtocolVersion, order: bool, items: Vec<(Operation, Vec<Item>)>) -> Vec<u8> {
    kmip::client::request(version, order, items).encode().expect("encode").to_vec()
}

fn pair(name: &str, value: Value) -> Item {
    kmip::attribute::Attribute::new(name, value).to_pair()
}

fn asi() -> Value {
    Value::Structure(vec![
        Item::text(tag::APPLICATION_NAMESPACE, "LIBRARY-LTO"),
        Item::text(tag::APPLICATION_DATA, ASI_DATA),
    ])
}

/// TL-M-2's Create template: names, the barcode, the key-associated data, vendor attributes.
fn tape_template() -> Vec<Item> {
    let name = |value_tag, type_tag, text: &str| {
        Value::Structure(vec![Item::text(value_tag, text), Item::enumeration(type_tag, 1)])
    };
    vec![
        Item::enumeration(tag::OBJECT_TYPE, 2),
        Item::structure(
            tag::TEMPLATE_ATTRIBUTE,
            vec![
                pair("x-ID", Value::TextString("TL-M-2-14".into())),
                pair(
                    "Alternative Name",
                    name(tag::ALTERNATIVE_NAME_VALUE, tag::ALTERNATIVE_NAME_TYPE, "XXA012A1"),
                ),
                pair(
                    "Name",
                    name(tag::NAME_VALUE, tag::NAME_TYPE, "AAAAAAA1A1AA12345678901234567"),
                ),
                pair("Cryptographic Algorithm", Value::Enumeration(3)),
                pair("Cryptographic Length", Value::Integer(256)),
                pair("Cryptographic Usage Mask", Value::Integer(12)),
                pair("Application Specific Information", asi()),
                pair("x-Barcode", Value::TextString("XXA012A1".into())),
                pair("x-VendorAttribute2", Value::Integer(2)),
                pair("x-VendorAttribute3", Value::DateTime(1_400_000_000)),
            ],
        ),
    ]
}

fn items(response: &Item) -> Vec<&Item> {
    kmip::client::batch_items(response)
}

fn status(item: &Item) -> (u32, Option<u32>) {
    match kmip::client::outcome(item) {
        Ok(_) => OK,
        Err(failure) => (failure.status.0, Some(failure.reason.0)),
    }
}

fn payload(item: &Item) -> &Item {
    kmip::client::outcome(item).expect("a payload")
}

fn uid_of(item: &Item) -> KeyId {
    let text = kmip::client::unique_identifier(payload(item)).expect("an identifier");
    KeyId::from_hex(text).expect("a key ID")
}

fn key_bytes(item: &Item) -> Vec<u8> {
    kmip::client::key_material(payload(item)).expect("key material").to_vec()
}

const OK: (u32, Option<u32>) = (0, None);

fn failed(reason: ResultReason) -> (u32, Option<u32>) {
    (ResultStatus::OPERATION_FAILED.0, Some(reason.0))
}

/// Setup: library1, a KMIP client in `std`. Action: TL-M-2 (one batch, Batch Order Option:
/// Create with the tape template, then Get with an empty payload), then TL-M-3's reads (Locate
/// by the ASI and Get in one batch; Get Attributes). Expect: the Get of the placeholder returns
/// the value of the pool key the Create drew, in Raw format; the data unit is tagged with the
/// barcode; a later Locate by ASI finds the same key and its Get the same value; Get
/// Attributes says Pre-Active (TL-M-2 never activates) and echoes the vendor attributes.
/// (SPEC U5, O5, O6)
#[tokio::test]
async fn u5_tape_library_creates_and_gets_in_one_batch_then_locates_by_asi() {
    let kmip = start_kmip().await;
    let (cert, key) = enroll(&kmip.cluster, "library1", "std");
    let mut stream = connect(&kmip, (&cert, &key)).await;
    let v14 = ProtocolVersion::V1_4;
    let tl_m_2 =
        request(v14, true, vec![(Operation::CREATE, tape_template()), (Operation::GET, vec![])]);
    let response = exchange(&mut stream, &tl_m_2).await.expect("a response");
    let answered = items(&response);
    assert_eq!((answered.len(), status(answered[0]), status(answered[1])), (2, OK, OK));
    let key_id = uid_of(answered[0]);
    assert_eq!(uid_of(answered[1]), key_id);
    assert_eq!(key_bytes(answered[1]), kmip.cluster.value_of(&key_id));
    let state = kmip.cluster.state.lock().expect("state").clone();
    let unit = state.key(&key_id).expect("key").data_units[0];
    assert_eq!(state.data_unit(&unit).expect("unit").external_tag, "XXA012A1");

    let locate = vec![Item::structure(
        tag::TEMPLATE_ATTRIBUTE,
        vec![pair("Application Specific Information", asi())],
    )];
    let tl_m_3 = request(v14, true, vec![(Operation::LOCATE, locate), (Operation::GET, vec![])]);
    let response = exchange(&mut stream, &tl_m_3).await.expect("a response");
    let answered = items(&response);
    assert_eq!((status(answered[0]), status(answered[1])), (OK, OK));
    assert_eq!(uid_of(answered[0]), key_id);
    assert_eq!(key_bytes(answered[1]), kmip.cluster.value_of(&key_id));

    let get_attributes = vec![Item::text(tag::UNIQUE_IDENTIFIER, key_id.to_string())];
    let response = exchange(
        &mut stream,
        &request(v14, false, vec![(Operation::GET_ATTRIBUTES, get_attributes)]),
    )
    .await
    .expect("a response");
    let attributes = payload(items(&response)[0]);
    let shown = format!("{attributes:?}");
    assert!(
        shown.contains(
            "AttributeName TextString(\"State\")\n    AttributeValue Enumeration(0x00000001)"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("TextString(\"x-VendorAttribute2\")\n    AttributeValue Integer(2)"),
        "{shown}"
    );
}

/// Setup: library1 in `std`, stranger in `other`. Action: stranger Gets library1's key and
/// Locates by its ASI; library1 revokes and destroys it without the right; Gets an unknown ID.
/// Expect: Permission Denied for the stranger's Get and nothing located for it; Permission
/// Denied for the revoke and destroy (agents may not, S1/O7, until a Security Officer grants
/// it); Item Not Found for the unknown key. (SPEC U5, A3, S1, O7)
#[tokio::test]
async fn s1_key_groups_and_the_granted_right_decide_what_a_kmip_client_may_do() {
    let kmip = start_kmip().await;
    let (cert, key) = enroll(&kmip.cluster, "library1", "std");
    kmip.cluster
        .ok(user("co"), Command::CreateKeyGroup { name: "other".into(), policy: "std".into() });
    let (stranger_cert, stranger_key) = enroll(&kmip.cluster, "stranger", "other");
    let v12 = ProtocolVersion::V1_2;
    let mut library = connect(&kmip, (&cert, &key)).await;
    let created =
        exchange(&mut library, &request(v12, false, vec![(Operation::CREATE, tape_template())]))
            .await;
    let key_id = uid_of(items(&created.expect("created"))[0]);
    let by_id = || vec![Item::text(tag::UNIQUE_IDENTIFIER, key_id.to_string())];

    let mut stranger = connect(&kmip, (&stranger_cert, &stranger_key)).await;
    let locate = vec![Item::structure(
        tag::TEMPLATE_ATTRIBUTE,
        vec![pair("Application Specific Information", asi())],
    )];
    let batch = vec![(Operation::GET, by_id()), (Operation::LOCATE, locate)];
    let mut continue_header = request(v12, false, batch);
    // Batch Error Continuation Option: Continue, so the Locate runs after the refused Get.
    let mut message = kmip::decode(&continue_header, &Limits::SERVER).expect("decode");
    if let Value::Structure(children) = &mut message.value {
        if let Value::Structure(header) = &mut children[0].value {
            header.insert(1, Item::enumeration(tag::BATCH_ERROR_CONTINUATION_OPTION, 1));
        }
    }
    continue_header = message.encode().expect("encode").to_vec();
    let response = exchange(&mut stranger, &continue_header).await.expect("a response");
    let answered = items(&response);
    assert_eq!(status(answered[0]), failed(ResultReason::PERMISSION_DENIED));
    assert_eq!(status(answered[1]), OK);
    assert_eq!(payload(answered[1]).children_tagged(tag::UNIQUE_IDENTIFIER).count(), 0);

    for operation in [Operation::REVOKE, Operation::DESTROY] {
        let mut body = by_id();
        body.push(Item::structure(
            tag::REVOCATION_REASON,
            vec![Item::enumeration(tag::REVOCATION_REASON_CODE, 6)],
        ));
        let response = exchange(&mut library, &request(v12, false, vec![(operation, body)])).await;
        assert_eq!(
            status(items(&response.expect("a response"))[0]),
            failed(ResultReason::PERMISSION_DENIED)
        );
    }
    let unknown = vec![Item::text(tag::UNIQUE_IDENTIFIER, "00".repeat(30))];
    let response =
        exchange(&mut library, &request(v12, false, vec![(Operation::GET, unknown)])).await;
    assert_eq!(
        status(items(&response.expect("a response"))[0]),
        failed(ResultReason::ITEM_NOT_FOUND)
    );
}

/// Setup: library1. Action: Discover Versions (none listed, then 1.1 and 3.0); TL-M-1's Query
/// (operations, objects, server information, application namespaces); an operation not
/// offered; a batch of 33; a KMIP 1.5 header; a header tag broken; bytes that are not TTLV.
/// Expect: every version newest first, then only 1.1; the operations of `kmip::OPERATIONS`,
/// Symmetric Key, a vendor identification and `LIBRARY-LTO`; Operation Not Supported; Invalid
/// Message (three times, the 1.5 one answered at 1.0); the connection closed for the bytes
/// that are not TTLV. Nothing drew a key. (SPEC U5)
#[tokio::test]
async fn u5_versions_query_and_bad_input_are_answered_as_the_standard_says() {
    let kmip = start_kmip().await;
    let (cert, key) = enroll(&kmip.cluster, "library1", "std");
    let mut stream = connect(&kmip, (&cert, &key)).await;
    let v20 = ProtocolVersion::V2_0;
    let response =
        exchange(&mut stream, &request(v20, false, vec![(Operation::DISCOVER_VERSIONS, vec![])]))
            .await;
    let versions = payload(items(&response.expect("a response"))[0]).children().len();
    assert_eq!(versions, 6);
    let asked =
        vec![ProtocolVersion::V1_1.to_item(), ProtocolVersion { major: 3, minor: 0 }.to_item()];
    let response =
        exchange(&mut stream, &request(v20, false, vec![(Operation::DISCOVER_VERSIONS, asked)]))
            .await;
    let answered = payload(items(&response.expect("a response"))[0]).clone();
    assert_eq!(answered.children(), [ProtocolVersion::V1_1.to_item()]);

    // TL-M-1: operations, objects, server information and application namespaces.
    let query = (1..=4).map(|function| Item::enumeration(tag::QUERY_FUNCTION, function)).collect();
    let v14 = ProtocolVersion::V1_4;
    let response =
        exchange(&mut stream, &request(v14, false, vec![(Operation::QUERY, query)])).await;
    let response = response.expect("a response");
    let answered = payload(items(&response)[0]);
    let listed = answered.children_tagged(tag::OPERATION).count();
    assert_eq!(listed, agent_gateway::kmip::OPERATIONS.len());
    assert_eq!(
        answered.child(tag::OBJECT_TYPE).map(|o| o.value.clone()),
        Some(Value::Enumeration(2))
    );
    assert!(answered.child(tag::VENDOR_IDENTIFICATION).is_some());
    let namespace = answered.child(tag::APPLICATION_NAMESPACE).map(|n| n.value.clone());
    assert_eq!(namespace, Some(Value::TextString("LIBRARY-LTO".into())));

    let response =
        exchange(&mut stream, &request(v20, false, vec![(Operation::ENCRYPT, vec![])])).await;
    assert_eq!(
        status(items(&response.expect("a response"))[0]),
        failed(ResultReason::OPERATION_NOT_SUPPORTED)
    );
    let response =
        exchange(&mut stream, &request(v20, false, vec![(Operation::GET, vec![]); 33])).await;
    assert_eq!(
        status(items(&response.expect("a response"))[0]),
        failed(ResultReason::INVALID_MESSAGE)
    );
    let v15 = ProtocolVersion { major: 1, minor: 5 };
    let response = exchange(&mut stream, &request(v15, false, vec![(Operation::QUERY, vec![])]))
        .await
        .expect("a response");
    let header = response.child(tag::RESPONSE_HEADER).expect("header");
    assert_eq!(
        header.child(tag::PROTOCOL_VERSION).and_then(ProtocolVersion::from_item),
        Some(ProtocolVersion::V1_0)
    );
    assert_eq!(status(items(&response)[0]), failed(ResultReason::INVALID_MESSAGE));

    let mut broken = request(v20, false, vec![(Operation::QUERY, vec![])]);
    broken[8] = 0x99;
    broken[9] = 0x99;
    let answered = exchange(&mut stream, &broken).await;
    assert!(answered.is_some_and(|r| status(items(&r)[0]) == failed(ResultReason::INVALID_MESSAGE)));
    let garbage = [0xffu8; 16];
    let closed = client::exchange(&mut stream, &garbage, std::time::Duration::from_secs(10)).await;
    assert!(matches!(closed, Err(client::ExchangeError::Closed)), "{closed:?}");
    let ready_before = kmip.cluster.ready_pool();
    assert_eq!(ready_before, POOL_SIZE, "nothing drew a key");
}

/// Setup: a certificate of the cluster CA for an agent never enrolled. Action: Query.
/// Expect: Authentication Not Successful, naming no key. (SPEC S2, U5)
#[tokio::test]
async fn s2_a_certificate_that_is_not_an_enrolled_agents_is_refused() {
    let kmip = start_kmip().await;
    let (cert, key) = kmip.cluster.ca.issue("agent:ghost", false);
    let mut stream = connect(&kmip, (&cert, &key)).await;
    let query = vec![Item::enumeration(tag::QUERY_FUNCTION, 1)];
    let response = exchange(
        &mut stream,
        &request(ProtocolVersion::V1_4, false, vec![(Operation::QUERY, query)]),
    )
    .await;
    assert_eq!(
        status(items(&response.expect("a response"))[0]),
        failed(ResultReason::AUTHENTICATION_NOT_SUCCESSFUL)
    );
}
