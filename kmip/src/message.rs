//! Request and Response Messages: a header and up to `BATCH_ITEMS_MAX` batch items, each an
//! operation and its payload. This layer checks the envelope (tags, version, batch count,
//! options) and leaves each payload as an `Item` for the operation that reads it.
//!
//! A response mirrors the request's protocol version: clients such as PyKMIP pick their
//! decoder from the response's version, so answering 1.4 to a 1.2 request breaks them. Its
//! header carries exactly Protocol Version, Time Stamp and Batch Count, in that order, which is
//! what strict clients parse.

use crate::enums::{BatchErrorContinuation, Operation, ResultReason, ResultStatus};
use crate::tag::{self, Tag};
use crate::ttlv::{Item, Value};

/// The Tape Library profile's batch size, and the bound on a request's work.
pub const BATCH_ITEMS_MAX: usize = 32;

/// A Unique Batch Item ID is the client's to choose; one longer than this is refused.
pub const BATCH_ITEM_ID_LEN_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: i32,
    pub minor: i32,
}

impl ProtocolVersion {
    pub const V1_0: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };
    pub const V1_1: ProtocolVersion = ProtocolVersion { major: 1, minor: 1 };
    pub const V1_2: ProtocolVersion = ProtocolVersion { major: 1, minor: 2 };
    pub const V1_3: ProtocolVersion = ProtocolVersion { major: 1, minor: 3 };
    pub const V1_4: ProtocolVersion = ProtocolVersion { major: 1, minor: 4 };
    pub const V2_0: ProtocolVersion = ProtocolVersion { major: 2, minor: 0 };

    /// What this server speaks, newest first (the order Discover Versions answers in).
    pub const SUPPORTED: [ProtocolVersion; 6] = [
        ProtocolVersion::V2_0,
        ProtocolVersion::V1_4,
        ProtocolVersion::V1_3,
        ProtocolVersion::V1_2,
        ProtocolVersion::V1_1,
        ProtocolVersion::V1_0,
    ];

    pub fn is_supported(self) -> bool {
        ProtocolVersion::SUPPORTED.contains(&self)
    }

    /// KMIP 2.0 carries attributes by their own tags; 1.x as name/value pairs.
    pub fn is_2x(self) -> bool {
        self.major >= 2
    }

    pub fn to_item(self) -> Item {
        Item::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Item::integer(tag::PROTOCOL_VERSION_MAJOR, self.major),
                Item::integer(tag::PROTOCOL_VERSION_MINOR, self.minor),
            ],
        )
    }

    pub fn from_item(item: &Item) -> Option<ProtocolVersion> {
        let major = integer(item.child(tag::PROTOCOL_VERSION_MAJOR)?)?;
        let minor = integer(item.child(tag::PROTOCOL_VERSION_MINOR)?)?;
        Some(ProtocolVersion { major, minor })
    }
}

impl core::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub version: ProtocolVersion,
    pub maximum_response_size: Option<usize>,
    /// Absent means the server may reorder; this server never does, so it is kept for the log.
    pub batch_order: Option<bool>,
    pub batch_error_continuation: BatchErrorContinuation,
    pub batch_count: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestBatchItem {
    pub operation: Operation,
    pub id: Option<Vec<u8>>,
    /// The Request Payload structure (empty for an ID-placeholder Get).
    pub payload: Item,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub header: RequestHeader,
    pub items: Vec<RequestBatchItem>,
}

/// Why a message is not a request this server will run. It is answered with one failed batch
/// item carrying `reason`, at `version` when the header gave a version this server speaks and
/// at 1.0 otherwise (every client can read 1.0's response layout).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub version: ProtocolVersion,
    pub reason: ResultReason,
    pub message: String,
}

fn invalid(version: ProtocolVersion, message: impl Into<String>) -> RequestError {
    RequestError { version, reason: ResultReason::INVALID_MESSAGE, message: message.into() }
}

fn integer(item: &Item) -> Option<i32> {
    match item.value {
        Value::Integer(v) => Some(v),
        _ => None,
    }
}

fn boolean(item: &Item) -> Option<bool> {
    match item.value {
        Value::Boolean(v) => Some(v),
        _ => None,
    }
}

fn enumeration(item: &Item) -> Option<u32> {
    match item.value {
        Value::Enumeration(v) => Some(v),
        _ => None,
    }
}

/// Reads a Request Message.
pub fn parse_request(message: &Item) -> Result<Request, RequestError> {
    let v1_0 = ProtocolVersion::V1_0;
    if message.tag != tag::REQUEST_MESSAGE || !matches!(message.value, Value::Structure(_)) {
        return Err(invalid(v1_0, "the message is not a KMIP Request Message"));
    }
    let header = message
        .child(tag::REQUEST_HEADER)
        .ok_or_else(|| invalid(v1_0, "the request has no Request Header"))?;
    let version = header
        .child(tag::PROTOCOL_VERSION)
        .and_then(ProtocolVersion::from_item)
        .ok_or_else(|| invalid(v1_0, "the Request Header has no valid Protocol Version"))?;
    if !version.is_supported() {
        return Err(RequestError {
            version: v1_0,
            reason: ResultReason::INVALID_MESSAGE,
            message: format!("KMIP {version} is not spoken here; use 1.0 to 1.4 or 2.0"),
        });
    }
    let header = parse_header(header, version)?;
    let mut items = Vec::new();
    for child in message.children() {
        match child.tag {
            t if t == tag::REQUEST_HEADER => {}
            t if t == tag::BATCH_ITEM => items.push(parse_batch_item(child, version)?),
            other => return Err(invalid(version, format!("unexpected {other:?} in the request"))),
        }
    }
    if items.len() != header.batch_count {
        return Err(invalid(
            version,
            format!(
                "Batch Count says {} but the request has {} items",
                header.batch_count,
                items.len()
            ),
        ));
    }
    Ok(Request { header, items })
}

fn parse_header(header: &Item, version: ProtocolVersion) -> Result<RequestHeader, RequestError> {
    let field = |t: Tag, name: &str| -> Result<Option<&Item>, RequestError> {
        let mut found = header.children_tagged(t);
        let first = found.next();
        match found.next() {
            Some(_) => Err(invalid(version, format!("the Request Header has two {name} fields"))),
            None => Ok(first),
        }
    };
    if field(tag::ASYNCHRONOUS_INDICATOR, "Asynchronous Indicator")?.and_then(boolean) == Some(true)
    {
        return Err(RequestError {
            version,
            reason: ResultReason::FEATURE_NOT_SUPPORTED,
            message: "asynchronous operations are not offered; send the request without it".into(),
        });
    }
    let maximum_response_size = match field(tag::MAXIMUM_RESPONSE_SIZE, "Maximum Response Size")? {
        None => None,
        Some(item) => match integer(item) {
            Some(size) if size > 0 => Some(size.unsigned_abs() as usize),
            _ => return Err(invalid(version, "Maximum Response Size must be a positive Integer")),
        },
    };
    let batch_order = match field(tag::BATCH_ORDER_OPTION, "Batch Order Option")? {
        None => None,
        Some(item) => Some(
            boolean(item)
                .ok_or_else(|| invalid(version, "Batch Order Option must be a Boolean"))?,
        ),
    };
    let batch_error_continuation =
        match field(tag::BATCH_ERROR_CONTINUATION_OPTION, "Batch Error Continuation Option")? {
            None => BatchErrorContinuation::STOP,
            Some(item) => match enumeration(item).map(BatchErrorContinuation) {
                Some(o @ (BatchErrorContinuation::CONTINUE | BatchErrorContinuation::STOP)) => o,
                Some(BatchErrorContinuation::UNDO) => {
                    return Err(RequestError {
                        version,
                        reason: ResultReason::FEATURE_NOT_SUPPORTED,
                        message:
                            "Batch Error Continuation Undo is not offered; use Stop or Continue"
                                .into(),
                    })
                }
                _ => {
                    return Err(invalid(
                        version,
                        "Batch Error Continuation Option is not a known value",
                    ))
                }
            },
        };
    let batch_count = field(tag::BATCH_COUNT, "Batch Count")?
        .and_then(integer)
        .ok_or_else(|| invalid(version, "the Request Header has no Batch Count"))?;
    let batch_count = usize::try_from(batch_count)
        .ok()
        .filter(|n| (1..=BATCH_ITEMS_MAX).contains(n))
        .ok_or_else(|| {
            invalid(version, format!("Batch Count {batch_count} is outside 1 to {BATCH_ITEMS_MAX}"))
        })?;
    Ok(RequestHeader {
        version,
        maximum_response_size,
        batch_order,
        batch_error_continuation,
        batch_count,
    })
}

fn parse_batch_item(
    item: &Item,
    version: ProtocolVersion,
) -> Result<RequestBatchItem, RequestError> {
    let operation = item
        .child(tag::OPERATION)
        .and_then(enumeration)
        .map(Operation)
        .ok_or_else(|| invalid(version, "a Batch Item has no Operation"))?;
    let id = match item.child(tag::UNIQUE_BATCH_ITEM_ID) {
        None => None,
        Some(Item { value: Value::ByteString(id), .. }) if id.len() <= BATCH_ITEM_ID_LEN_MAX => {
            Some(id.to_vec())
        }
        Some(_) => {
            return Err(invalid(
                version,
                format!("a Unique Batch Item ID must be a Byte String of at most {BATCH_ITEM_ID_LEN_MAX} bytes"),
            ))
        }
    };
    let payload = match item.child(tag::REQUEST_PAYLOAD) {
        Some(payload @ Item { value: Value::Structure(_), .. }) => payload.clone(),
        Some(_) => return Err(invalid(version, "a Request Payload must be a Structure")),
        None => Item::structure(tag::REQUEST_PAYLOAD, Vec::new()),
    };
    Ok(RequestBatchItem { operation, id, payload })
}

/// A failed batch item's status, reason and message. The message goes to the client: it
/// names what is wrong with the request, never a key value or another client's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: ResultStatus,
    pub reason: ResultReason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: ResultReason, message: impl Into<String>) -> Failure {
        Failure { status: ResultStatus::OPERATION_FAILED, reason, message: message.into() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseBatchItem {
    /// Echoed when the request named one.
    pub operation: Option<Operation>,
    pub id: Option<Vec<u8>>,
    /// The Response Payload's children on success.
    pub outcome: Result<Vec<Item>, Failure>,
}

/// The Response Message for `items`, stamped `time_stamp_s` (seconds since the epoch).
pub fn response(
    version: ProtocolVersion,
    time_stamp_s: i64,
    items: Vec<ResponseBatchItem>,
) -> Item {
    let count = i32::try_from(items.len()).unwrap_or(i32::MAX);
    let header = Item::structure(
        tag::RESPONSE_HEADER,
        vec![
            version.to_item(),
            Item::date_time(tag::TIME_STAMP, time_stamp_s),
            Item::integer(tag::BATCH_COUNT, count),
        ],
    );
    let mut children = vec![header];
    children.extend(items.into_iter().map(response_batch_item));
    Item::structure(tag::RESPONSE_MESSAGE, children)
}

fn response_batch_item(item: ResponseBatchItem) -> Item {
    let mut fields = Vec::new();
    if let Some(operation) = item.operation {
        fields.push(Item::enumeration(tag::OPERATION, operation.0));
    }
    if let Some(id) = item.id {
        fields.push(Item::bytes(tag::UNIQUE_BATCH_ITEM_ID, id));
    }
    match item.outcome {
        Ok(payload) => {
            fields.push(Item::enumeration(tag::RESULT_STATUS, ResultStatus::SUCCESS.0));
            fields.push(Item::structure(tag::RESPONSE_PAYLOAD, payload));
        }
        Err(failure) => {
            fields.push(Item::enumeration(tag::RESULT_STATUS, failure.status.0));
            fields.push(Item::enumeration(tag::RESULT_REASON, failure.reason.0));
            fields.push(Item::text(tag::RESULT_MESSAGE, failure.message));
        }
    }
    Item::structure(tag::BATCH_ITEM, fields)
}

/// The response to a message that could not be run at all: one failed item.
pub fn refusal(error: RequestError, time_stamp_s: i64) -> Item {
    let item = ResponseBatchItem {
        operation: None,
        id: None,
        outcome: Err(Failure::new(error.reason, error.message)),
    };
    response(error.version, time_stamp_s, vec![item])
}
