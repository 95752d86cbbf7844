//! The client's side of a message, for the tests, the bench and tools that play a tape library
//! against the KMIP listener: a request built from operations and payloads, and the parts of a
//! response a client reads (its batch items, each one's outcome, a key's identifier and value).
//! The server never builds a request; keeping these here means every client of the listener
//! spells a request the same way.

use crate::enums::{Operation, ResultReason, ResultStatus};
use crate::message::{Failure, ProtocolVersion};
use crate::tag;
use crate::ttlv::{Item, Value};

/// A Request Message at `version`, one batch item per operation in order. With
/// `batch_order` the header asks the server to run the items in order (the Batch Order
/// Option the Tape Library profile sets for a Create followed by an ID-placeholder Get).
pub fn request(
    version: ProtocolVersion,
    batch_order: bool,
    operations: Vec<(Operation, Vec<Item>)>,
) -> Item {
    let mut header = vec![version.to_item()];
    if batch_order {
        header.push(Item::boolean(tag::BATCH_ORDER_OPTION, true));
    }
    let count = i32::try_from(operations.len()).unwrap_or(i32::MAX);
    header.push(Item::integer(tag::BATCH_COUNT, count));
    let mut children = vec![Item::structure(tag::REQUEST_HEADER, header)];
    children.extend(operations.into_iter().map(|(operation, payload)| {
        Item::structure(
            tag::BATCH_ITEM,
            vec![
                Item::enumeration(tag::OPERATION, operation.0),
                Item::structure(tag::REQUEST_PAYLOAD, payload),
            ],
        )
    }));
    Item::structure(tag::REQUEST_MESSAGE, children)
}

/// The batch items of a Response Message, in the order the server answered them.
pub fn batch_items(response: &Item) -> Vec<&Item> {
    response.children_tagged(tag::BATCH_ITEM).collect()
}

/// One answered batch item: its Response Payload on success, or what failed. An item with no
/// Result Status, or a success with no payload, is a failure of the server's (General Failure).
pub fn outcome(item: &Item) -> Result<&Item, Failure> {
    let enumeration = |t| match item.child(t).map(|i| &i.value) {
        Some(Value::Enumeration(value)) => Some(*value),
        _ => None,
    };
    let malformed = |what: &str| Failure::new(ResultReason::GENERAL_FAILURE, what);
    let status = enumeration(tag::RESULT_STATUS).ok_or_else(|| malformed("no Result Status"))?;
    if status == ResultStatus::SUCCESS.0 {
        return item.child(tag::RESPONSE_PAYLOAD).ok_or_else(|| malformed("no Response Payload"));
    }
    let reason = enumeration(tag::RESULT_REASON).unwrap_or(ResultReason::GENERAL_FAILURE.0);
    let message = match item.child(tag::RESULT_MESSAGE).map(|i| &i.value) {
        Some(Value::TextString(text)) => text.clone(),
        _ => String::new(),
    };
    Err(Failure { status: ResultStatus(status), reason: ResultReason(reason), message })
}

/// The first Unique Identifier of a payload (a Create's, a Get's, a Locate's first match).
pub fn unique_identifier(payload: &Item) -> Option<&str> {
    match payload.child(tag::UNIQUE_IDENTIFIER).map(|i| &i.value) {
        Some(Value::TextString(text)) => Some(text),
        _ => None,
    }
}

/// The raw key value of a Get's Symmetric Key.
pub fn key_material(payload: &Item) -> Option<&[u8]> {
    let material = payload
        .child(tag::SYMMETRIC_KEY)?
        .child(tag::KEY_BLOCK)?
        .child(tag::KEY_VALUE)?
        .child(tag::KEY_MATERIAL)?;
    match &material.value {
        Value::ByteString(bytes) => Some(bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse_request, response, ResponseBatchItem};

    /// A request built here is one the server's parser reads back, items in order; a response
    /// the server builds reads back as the same outcomes.
    #[test]
    fn u5_a_built_request_parses_and_a_response_reads_back() {
        let get = vec![Item::text(tag::UNIQUE_IDENTIFIER, "ab")];
        let built = request(
            ProtocolVersion::V1_4,
            true,
            vec![(Operation::CREATE, vec![]), (Operation::GET, get)],
        );
        let parsed = parse_request(&built).expect("the server reads it");
        assert_eq!(parsed.header.version, ProtocolVersion::V1_4);
        assert_eq!(parsed.header.batch_order, Some(true));
        let operations: Vec<Operation> = parsed.items.iter().map(|i| i.operation).collect();
        assert_eq!(operations, [Operation::CREATE, Operation::GET]);

        let key = Item::structure(
            tag::SYMMETRIC_KEY,
            vec![Item::structure(
                tag::KEY_BLOCK,
                vec![Item::structure(
                    tag::KEY_VALUE,
                    vec![Item::bytes(tag::KEY_MATERIAL, vec![7; 32])],
                )],
            )],
        );
        let denied = Failure::new(ResultReason::PERMISSION_DENIED, "not in your key groups");
        let answered = response(
            ProtocolVersion::V1_4,
            0,
            vec![
                ResponseBatchItem {
                    operation: Some(Operation::GET),
                    id: None,
                    outcome: Ok(vec![Item::text(tag::UNIQUE_IDENTIFIER, "ab"), key]),
                },
                ResponseBatchItem { operation: None, id: None, outcome: Err(denied.clone()) },
            ],
        );
        let items = batch_items(&answered);
        let payload = outcome(items[0]).expect("a success");
        assert_eq!(unique_identifier(payload), Some("ab"));
        assert_eq!(key_material(payload), Some(&[7u8; 32][..]));
        assert_eq!(outcome(items[1]), Err(denied));
        let bare = Item::structure(tag::BATCH_ITEM, vec![]);
        assert_eq!(outcome(&bare).map_err(|f| f.reason), Err(ResultReason::GENERAL_FAILURE));
    }
}
