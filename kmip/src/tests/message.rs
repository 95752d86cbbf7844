//! Request envelopes as clients send them, the refusals of bad ones, the response layout strict
//! clients parse, and attributes in both spellings.

use super::hex;
use crate::attribute::{self, payload_attributes, response_attributes, Attribute};
use crate::enums::{BatchErrorContinuation, Operation, ResultReason, ResultStatus};
use crate::message::{
    parse_request, refusal, response, Failure, ProtocolVersion, RequestError, ResponseBatchItem,
};
use crate::tag;
use crate::ttlv::{self, Item, Limits, Value};

fn header(version: ProtocolVersion, count: i32, extra: Vec<Item>) -> Item {
    let mut fields = vec![version.to_item()];
    fields.extend(extra);
    fields.push(Item::integer(tag::BATCH_COUNT, count));
    Item::structure(tag::REQUEST_HEADER, fields)
}

fn batch_item(operation: Operation, payload: Vec<Item>) -> Item {
    Item::structure(
        tag::BATCH_ITEM,
        vec![
            Item::enumeration(tag::OPERATION, operation.0),
            Item::structure(tag::REQUEST_PAYLOAD, payload),
        ],
    )
}

fn message(header: Item, items: Vec<Item>) -> Item {
    let mut children = vec![header];
    children.extend(items);
    Item::structure(tag::REQUEST_MESSAGE, children)
}

fn refused(request: &Item) -> RequestError {
    parse_request(request).expect_err("refused")
}

#[test]
fn u5_pykmip_discover_versions_reads_as_one_batch_item_at_1_2() {
    let bytes = hex(
        "42007801000000604200770100000038420069010000002042006a0200000004000000010000000042006b\
         0200000004000000020000000042000d0200000004000000010000000042000f010000001842005c050000\
         00040000001e000000004200790100000000",
    );
    let request =
        parse_request(&ttlv::decode(&bytes, &Limits::SERVER).expect("decode")).expect("parse");
    assert_eq!(request.header.version, ProtocolVersion::V1_2);
    assert_eq!(request.header.batch_count, 1);
    assert_eq!(request.header.batch_order, None);
    assert_eq!(request.header.batch_error_continuation, BatchErrorContinuation::STOP);
    assert_eq!(request.items.len(), 1);
    assert_eq!(request.items[0].operation, Operation::DISCOVER_VERSIONS);
    assert_eq!(request.items[0].id, None);
    assert!(request.items[0].payload.children().is_empty());
}

/// TL-M-2's shape: Batch Order Option, a Create and an empty Get (the ID placeholder).
#[test]
fn u5_tape_library_create_then_placeholder_get_reads_as_two_ordered_items() {
    let get_without_payload =
        Item::structure(tag::BATCH_ITEM, vec![Item::enumeration(tag::OPERATION, Operation::GET.0)]);
    let request = message(
        header(ProtocolVersion::V1_4, 2, vec![Item::boolean(tag::BATCH_ORDER_OPTION, true)]),
        vec![batch_item(Operation::CREATE, vec![]), get_without_payload],
    );
    let request = parse_request(&request).expect("parse");
    assert_eq!(request.header.batch_order, Some(true));
    let operations: Vec<_> = request.items.iter().map(|i| i.operation).collect();
    assert_eq!(operations, [Operation::CREATE, Operation::GET]);
    assert!(request.items[1].payload.children().is_empty());
}

#[test]
fn u5_bad_envelopes_are_refused_with_the_reason_and_a_version_the_client_reads() {
    let v14 = ProtocolVersion::V1_4;
    let one = || vec![batch_item(Operation::GET, vec![])];
    let cases: Vec<(Item, ProtocolVersion, ResultReason, &str)> = vec![
        (
            Item::structure(tag::RESPONSE_MESSAGE, vec![]),
            ProtocolVersion::V1_0,
            ResultReason::INVALID_MESSAGE,
            "the message is not a KMIP Request Message",
        ),
        (
            message(header(ProtocolVersion { major: 1, minor: 5 }, 1, vec![]), one()),
            ProtocolVersion::V1_0,
            ResultReason::INVALID_MESSAGE,
            "KMIP 1.5 is not spoken here; use 1.0 to 1.4 or 2.0",
        ),
        (
            message(header(v14, 2, vec![]), one()),
            v14,
            ResultReason::INVALID_MESSAGE,
            "Batch Count says 2 but the request has 1 items",
        ),
        (
            message(header(v14, 33, vec![]), vec![batch_item(Operation::GET, vec![]); 33]),
            v14,
            ResultReason::INVALID_MESSAGE,
            "Batch Count 33 is outside 1 to 32",
        ),
        (
            message(header(v14, 1, vec![Item::boolean(tag::ASYNCHRONOUS_INDICATOR, true)]), one()),
            v14,
            ResultReason::FEATURE_NOT_SUPPORTED,
            "asynchronous operations are not offered; send the request without it",
        ),
        (
            message(
                header(v14, 1, vec![Item::enumeration(tag::BATCH_ERROR_CONTINUATION_OPTION, 3)]),
                one(),
            ),
            v14,
            ResultReason::FEATURE_NOT_SUPPORTED,
            "Batch Error Continuation Undo is not offered; use Stop or Continue",
        ),
        (
            message(header(v14, 1, vec![]), vec![Item::structure(tag::BATCH_ITEM, vec![])]),
            v14,
            ResultReason::INVALID_MESSAGE,
            "a Batch Item has no Operation",
        ),
    ];
    for (request, version, reason, text) in cases {
        let error = refused(&request);
        assert_eq!((error.version, error.reason, error.message.as_str()), (version, reason, text));
    }
}

/// PyKMIP reads a response header as exactly Protocol Version, Time Stamp, Batch Count, and a
/// batch item as Operation, ID, Result Status, then Reason and Message or the payload.
#[test]
fn u5_responses_are_laid_out_in_the_order_strict_clients_parse() {
    let ok = ResponseBatchItem {
        operation: Some(Operation::GET),
        id: Some(vec![7]),
        outcome: Ok(vec![Item::text(tag::UNIQUE_IDENTIFIER, "k1")]),
    };
    let failed = ResponseBatchItem {
        operation: Some(Operation::DESTROY),
        id: None,
        outcome: Err(Failure::new(ResultReason::PERMISSION_DENIED, "no")),
    };
    let message = response(ProtocolVersion::V1_2, 1_700_000_000, vec![ok, failed]);
    let tags = |item: &Item| item.children().iter().map(|c| c.tag).collect::<Vec<_>>();
    assert_eq!(tags(&message), [tag::RESPONSE_HEADER, tag::BATCH_ITEM, tag::BATCH_ITEM]);
    let header = &message.children()[0];
    assert_eq!(tags(header), [tag::PROTOCOL_VERSION, tag::TIME_STAMP, tag::BATCH_COUNT]);
    assert_eq!(header.children()[2].value, Value::Integer(2));
    assert_eq!(
        tags(&message.children()[1]),
        [tag::OPERATION, tag::UNIQUE_BATCH_ITEM_ID, tag::RESULT_STATUS, tag::RESPONSE_PAYLOAD]
    );
    let failed = &message.children()[2];
    assert_eq!(
        tags(failed),
        [tag::OPERATION, tag::RESULT_STATUS, tag::RESULT_REASON, tag::RESULT_MESSAGE]
    );
    assert_eq!(failed.children()[1].value, Value::Enumeration(ResultStatus::OPERATION_FAILED.0));
    assert_eq!(failed.children()[2].value, Value::Enumeration(ResultReason::PERMISSION_DENIED.0));

    let refused = refusal(refused(&Item::structure(tag::REQUEST_MESSAGE, vec![])), 0);
    assert_eq!(
        ProtocolVersion::from_item(&refused.children()[0].children()[0]),
        Some(ProtocolVersion::V1_0)
    );
}

fn pair(name: &str, value: Item) -> Item {
    Item::structure(
        tag::ATTRIBUTE,
        vec![Item::text(tag::ATTRIBUTE_NAME, name), Item::new(tag::ATTRIBUTE_VALUE, value.value)],
    )
}

fn name(text: &str) -> Item {
    Item::new(tag::NAME, attribute::name_value(tag::NAME_VALUE, tag::NAME_TYPE, text, 1))
}

/// PyKMIP's Create at 1.2 (a Template-Attribute of name/value pairs) and at 2.0 (an Attributes
/// structure of tagged items) read into the same attributes.
#[test]
fn u5_attributes_read_the_same_from_1x_pairs_and_2_0_tags() {
    let algorithm = Item::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, 3);
    let length = Item::integer(tag::CRYPTOGRAPHIC_LENGTH, 256);
    let mask = Item::integer(tag::CRYPTOGRAPHIC_USAGE_MASK, 12);
    let v1 = Item::structure(
        tag::REQUEST_PAYLOAD,
        vec![
            Item::enumeration(tag::OBJECT_TYPE, 2),
            Item::structure(
                tag::TEMPLATE_ATTRIBUTE,
                vec![
                    pair("Cryptographic Algorithm", algorithm.clone()),
                    pair("Cryptographic Length", length.clone()),
                    pair("Cryptographic Usage Mask", mask.clone()),
                    pair("Name", name("TAPE-XXA012L8")),
                ],
            ),
        ],
    );
    let v2 = Item::structure(
        tag::REQUEST_PAYLOAD,
        vec![
            Item::enumeration(tag::OBJECT_TYPE, 2),
            Item::structure(tag::ATTRIBUTES, vec![algorithm, length, mask, name("TAPE-XXA012L8")]),
        ],
    );
    let from_1x = payload_attributes(&v1, ProtocolVersion::V1_2).expect("1.2");
    let from_2x = payload_attributes(&v2, ProtocolVersion::V2_0).expect("2.0");
    assert_eq!(from_1x, from_2x);
    assert_eq!(from_1x.len(), 4);
    assert_eq!(from_1x[3].field_text(tag::NAME_VALUE), Some("TAPE-XXA012L8"));
    assert_eq!(response_attributes(&from_1x, ProtocolVersion::V2_0)[0].children().len(), 4);
    assert_eq!(
        response_attributes(&from_1x, ProtocolVersion::V1_2)[3],
        pair("Name", name("TAPE-XXA012L8"))
    );
}

/// The Tape Library profile's vendor attributes: Text, Integer and Date-Time `x-` attributes.
#[test]
fn u5_custom_attributes_of_text_integer_and_date_time_are_taken() {
    let template = Item::structure(
        tag::TEMPLATE_ATTRIBUTE,
        vec![
            pair("x-Barcode", Item::text(tag::ATTRIBUTE_VALUE, "XXA012A1")),
            pair("x-VendorAttribute2", Item::integer(tag::ATTRIBUTE_VALUE, 7)),
            pair("x-VendorAttribute3", Item::date_time(tag::ATTRIBUTE_VALUE, 1_400_000_000)),
        ],
    );
    let payload = Item::structure(tag::REQUEST_PAYLOAD, vec![template]);
    let attributes = payload_attributes(&payload, ProtocolVersion::V1_0).expect("custom");
    assert_eq!(attributes[0].text(), Some("XXA012A1"));
    assert_eq!(attributes[2].value, Value::DateTime(1_400_000_000));
    assert!(response_attributes(&attributes, ProtocolVersion::V2_0)[0].children().is_empty());
}

#[test]
fn u5_bad_attributes_are_refused_with_invalid_field() {
    let in_template = |attributes: Vec<Item>| {
        Item::structure(
            tag::REQUEST_PAYLOAD,
            vec![Item::structure(tag::TEMPLATE_ATTRIBUTE, attributes)],
        )
    };
    let v14 = ProtocolVersion::V1_4;
    let cases: Vec<(Item, ProtocolVersion, ResultReason, &str)> = vec![
        (
            in_template(vec![pair(
                "Cryptographic Length",
                Item::text(tag::ATTRIBUTE_VALUE, "256"),
            )]),
            v14,
            ResultReason::INVALID_FIELD,
            "attribute Cryptographic Length must be of type Integer, not TextString",
        ),
        (
            in_template(vec![pair("Colour", Item::text(tag::ATTRIBUTE_VALUE, "red"))]),
            v14,
            ResultReason::INVALID_FIELD,
            "attribute \"Colour\" is not one this server knows; custom ones start with x-",
        ),
        (
            in_template(vec![pair("x-Flag", Item::boolean(tag::ATTRIBUTE_VALUE, true))]),
            v14,
            ResultReason::INVALID_FIELD,
            "custom attribute x-Flag must be a Text String, an Integer or a Date-Time",
        ),
        (
            in_template(vec![pair("x-Long", Item::text(tag::ATTRIBUTE_VALUE, "a".repeat(257)))]),
            v14,
            ResultReason::INVALID_FIELD,
            "attribute x-Long: text longer than 256 bytes",
        ),
        (
            in_template(vec![name("a-template")]),
            v14,
            ResultReason::FEATURE_NOT_SUPPORTED,
            "named templates are not kept here; send the attributes themselves",
        ),
        (
            in_template(vec![pair("x-a", Item::integer(tag::ATTRIBUTE_VALUE, 1)); 65]),
            v14,
            ResultReason::INVALID_FIELD,
            "65 attributes in one request; at most 64",
        ),
        (
            Item::structure(
                tag::REQUEST_PAYLOAD,
                vec![Item::structure(tag::ATTRIBUTES, vec![Item::text(tag::USERNAME, "x")])],
            ),
            ProtocolVersion::V2_0,
            ResultReason::INVALID_FIELD,
            "Username is not an attribute this server takes over KMIP 2.0",
        ),
    ];
    for (payload, version, reason, text) in cases {
        let failure = payload_attributes(&payload, version).expect_err("refused");
        assert_eq!((failure.reason, failure.message.as_str()), (reason, text));
    }
}

/// An attribute a version lacks is left out of that version's responses.
#[test]
fn u5_responses_leave_out_attributes_the_version_does_not_have() {
    let attributes = vec![
        Attribute::new("Sensitive", Value::Boolean(false)),
        Attribute::new("Fresh", Value::Boolean(true)),
        Attribute::new("State", Value::Enumeration(1)),
    ];
    let names = |version| -> Vec<Item> { response_attributes(&attributes, version) };
    assert_eq!(names(ProtocolVersion::V1_0).len(), 1);
    assert_eq!(names(ProtocolVersion::V1_2).len(), 2);
    assert_eq!(names(ProtocolVersion::V1_4).len(), 3);
}
