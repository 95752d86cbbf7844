//! The codec against bytes another implementation wrote, and each way bytes can be refused.

use proptest::prelude::*;

use super::hex;
use crate::tag::{self, Tag};
use crate::ttlv::{self, message_len, DecodeError, Item, ItemType, Limits, Value, HEADER_LEN};

fn decode(bytes: &[u8]) -> Result<Item, DecodeError> {
    ttlv::decode(bytes, &Limits::SERVER)
}

fn version(major: i32, minor: i32) -> Item {
    Item::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Item::integer(tag::PROTOCOL_VERSION_MAJOR, major),
            Item::integer(tag::PROTOCOL_VERSION_MINOR, minor),
        ],
    )
}

fn request(operation: u32, payload: Vec<Item>) -> Item {
    Item::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Item::structure(
                tag::REQUEST_HEADER,
                vec![version(1, 2), Item::integer(tag::BATCH_COUNT, 1)],
            ),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    Item::enumeration(tag::OPERATION, operation),
                    Item::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

/// PyKMIP 0.11.0's Discover Versions request at KMIP 1.2, encoded offline (shared notes,
/// kmip-facts.md §1.2): decoded to the tree it means and re-encoded to the same 104 bytes.
#[test]
fn u5_pykmip_discover_versions_decodes_and_reencodes_byte_for_byte() {
    let bytes = hex(
        "42007801000000604200770100000038420069010000002042006a0200000004000000010000000042006b\
         0200000004000000020000000042000d0200000004000000010000000042000f010000001842005c050000\
         00040000001e000000004200790100000000",
    );
    assert_eq!(bytes.len(), 104);
    let item = decode(&bytes).expect("PyKMIP's Discover Versions");
    assert_eq!(item, request(0x1E, vec![]));
    assert_eq!(*item.encode().expect("encode"), bytes);
}

/// PyKMIP's Get of unique identifier "1": a text string padded from 1 byte to 8.
#[test]
fn u5_pykmip_get_decodes_and_reencodes_byte_for_byte() {
    let bytes = hex(
        "42007801000000704200770100000038420069010000002042006a0200000004000000010000000042006b\
         0200000004000000020000000042000d0200000004000000010000000042000f010000002842005c050000\
         00040000000a00000000420079010000001042009407000000013100000000000000",
    );
    let item = decode(&bytes).expect("PyKMIP's Get");
    assert_eq!(item, request(0x0A, vec![Item::text(tag::UNIQUE_IDENTIFIER, "1")]));
    assert_eq!(*item.encode().expect("encode"), bytes);
    assert_eq!(message_len(bytes[..8].try_into().expect("8"), &Limits::SERVER), Ok(120));
}

/// Every type's encoding as the specification lays it out.
#[test]
fn u5_each_type_encodes_with_its_length_and_padding() {
    let cases: Vec<(Value, &str)> = vec![
        (Value::Integer(1), "42006a 02 00000004 00000001 00000000"),
        (Value::LongInteger(-2), "42006a 03 00000008 fffffffffffffffe"),
        (Value::BigInteger(vec![0, 0, 0, 0, 0, 0, 1, 0]), "42006a 04 00000008 0000000000000100"),
        (Value::Enumeration(0x1E), "42006a 05 00000004 0000001e 00000000"),
        (Value::Boolean(true), "42006a 06 00000008 0000000000000001"),
        (
            Value::TextString("Hello World".into()),
            "42006a 07 0000000b 48656c6c6f20576f726c640000000000",
        ),
        (Value::ByteString(vec![1, 2, 3].into()), "42006a 08 00000003 0102030000000000"),
        (Value::DateTime(0x4799_0f00), "42006a 09 00000008 0000000047990f00"),
        (Value::Interval(864_000), "42006a 0a 00000004 000d2f00 00000000"),
        (Value::DateTimeExtended(1), "42006a 0b 00000008 0000000000000001"),
        (Value::TextString(String::new()), "42006a 07 00000000"),
    ];
    for (value, expected) in cases {
        let item = Item::new(tag::PROTOCOL_VERSION_MAJOR, value);
        let bytes = item.encode().expect("encode");
        assert_eq!(*bytes, hex(expected), "{item:?}");
        assert_eq!(bytes.len(), item.encoded_len());
        assert_eq!(decode(&bytes), Ok(item));
    }
}

/// Each malformed input is refused with the error that names what is wrong and where.
#[test]
fn u5_malformed_ttlv_is_refused_with_the_offset_at_fault() {
    let cases: Vec<(&str, DecodeError)> = vec![
        ("42006a 02 0000", DecodeError::Truncated { at: 0, needed: 8, available: 6 }),
        ("42006a 02 00000004 000000", DecodeError::Truncated { at: 8, needed: 8, available: 3 }),
        ("43006a 02 00000004 00000001 00000000", DecodeError::BadTag { at: 0, tag: 0x43006a }),
        (
            "42006a 0c 00000004 00000001 00000000",
            DecodeError::UnknownType { at: 0, type_byte: 0x0c },
        ),
        ("42006a 00 00000004 00000001 00000000", DecodeError::UnknownType { at: 0, type_byte: 0 }),
        (
            "42006a 02 00000008 00000001 00000000",
            DecodeError::BadLength { at: 0, item_type: ItemType::Integer, len: 8 },
        ),
        (
            "42006a 06 00000004 00000001 00000000",
            DecodeError::BadLength { at: 0, item_type: ItemType::Boolean, len: 4 },
        ),
        (
            "42006a 04 00000004 00000001 00000000",
            DecodeError::BadLength { at: 0, item_type: ItemType::BigInteger, len: 4 },
        ),
        (
            "42006a 04 00000000",
            DecodeError::BadLength { at: 0, item_type: ItemType::BigInteger, len: 0 },
        ),
        ("42006a 02 00000004 00000001 00000100", DecodeError::NonZeroPadding { at: 12 }),
        ("42006a 07 00000001 3101000000000000", DecodeError::NonZeroPadding { at: 9 }),
        ("42006a 06 00000008 0000000000000002", DecodeError::BadBoolean { at: 0, value: 2 }),
        ("42006a 07 00000002 c328000000000000", DecodeError::NotUtf8 { at: 0 }),
        ("42006a 02 00000004 00000001 00000000 00", DecodeError::Trailing { at: 16, extra: 1 }),
        // A structure of 8 bytes whose child claims 16.
        (
            "420078 01 00000010 42006a 02 00000010 0000000000000000 0000000000000000",
            DecodeError::StructureOverrun { at: 16 },
        ),
        // A structure whose length is not a multiple of 8 leaves its last child short.
        (
            "420078 01 0000000c 42006a 02 00000004 00000001 00000000",
            DecodeError::StructureOverrun { at: 16 },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(decode(&hex(input)), Err(expected), "{input}");
    }
}

fn nested(depth: usize) -> Item {
    let mut item = Item::integer(tag::BATCH_COUNT, 1);
    for _ in 0..depth {
        item = Item::structure(tag::BATCH_ITEM, vec![item]);
    }
    item
}

#[test]
fn u5_depth_item_count_and_size_are_bounded() {
    let limits = Limits { message_len_max: 4096, depth_max: 4, items_max: 10 };
    let ok = nested(3).encode().expect("encode");
    assert!(ttlv::decode(&ok, &limits).is_ok());
    let deep = nested(4).encode().expect("encode");
    assert_eq!(ttlv::decode(&deep, &limits), Err(DecodeError::TooDeep { at: 24, depth_max: 4 }));

    let wide = Item::structure(tag::BATCH_ITEM, vec![Item::integer(tag::BATCH_COUNT, 1); 10]);
    let wide = wide.encode().expect("encode");
    assert_eq!(ttlv::decode(&wide, &limits), Err(DecodeError::TooManyItems { items_max: 10 }));

    let long = Item::bytes(tag::KEY_MATERIAL, vec![0; 4096]).encode().expect("encode");
    assert_eq!(
        ttlv::decode(&long, &limits),
        Err(DecodeError::TooLong { len: 4104, len_max: 4096 })
    );
}

/// A reader sizes its buffer from the header only after these checks: a forged length or a
/// message that is not a structure is refused from its first 8 bytes.
#[test]
fn u5_message_header_is_checked_before_the_body_is_read() {
    let header = |text: &str| -> [u8; HEADER_LEN] { hex(text).try_into().expect("8 bytes") };
    let limits = Limits::SERVER;
    assert_eq!(message_len(&header("420078 01 00000060"), &limits), Ok(104));
    assert_eq!(
        message_len(&header("420078 01 ffffff00"), &limits),
        Err(DecodeError::TooLong { len: 0xffff_ff08, len_max: 1 << 20 })
    );
    assert_eq!(
        message_len(&header("420078 02 00000004"), &limits),
        Err(DecodeError::BadLength { at: 0, item_type: ItemType::Integer, len: 4 })
    );
    assert_eq!(
        message_len(&header("420078 01 00000061"), &limits),
        Err(DecodeError::BadLength { at: 0, item_type: ItemType::Structure, len: 0x61 })
    );
    assert_eq!(
        message_len(&header("000078 01 00000060"), &limits),
        Err(DecodeError::BadTag { at: 0, tag: 0x78 })
    );
}

/// A key travels as a Byte String: `Debug` (what a log line shows) gives only its length.
#[test]
fn s1_debug_of_a_message_never_shows_byte_string_values() {
    let key = Item::bytes(tag::KEY_MATERIAL, vec![0xAB; 32]);
    let message = Item::structure(tag::KEY_VALUE, vec![key, Item::text(tag::NAME_VALUE, "TAPE1")]);
    let shown = format!("{message:?}");
    assert!(shown.contains("KeyMaterial ByteString(32 bytes)"), "{shown}");
    assert!(shown.contains("NameValue TextString(\"TAPE1\")"), "{shown}");
    assert!(!shown.to_lowercase().contains("abab"), "{shown}");
    assert!(!shown.contains("171"), "{shown}");
}

#[test]
fn tag_names_are_sorted_and_unique_so_lookup_finds_each() {
    assert_eq!(
        tag::name(tag::APPLICATION_SPECIFIC_INFORMATION),
        Some("ApplicationSpecificInformation")
    );
    assert_eq!(tag::name(tag::ATTRIBUTES), Some("Attributes"));
    assert_eq!(tag::name(Tag(0x54_0001)), None);
    assert_eq!(format!("{:?}", Tag(0x54_0001)), "0x540001");
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(Value::Integer),
        any::<i64>().prop_map(Value::LongInteger),
        (1usize..4)
            .prop_flat_map(|w| proptest::collection::vec(any::<u8>(), w * 8))
            .prop_map(Value::BigInteger),
        any::<u32>().prop_map(Value::Enumeration),
        any::<bool>().prop_map(Value::Boolean),
        ".{0,20}".prop_map(Value::TextString),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::ByteString(b.into())),
        any::<i64>().prop_map(Value::DateTime),
        any::<u32>().prop_map(Value::Interval),
        any::<i64>().prop_map(Value::DateTimeExtended),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        proptest::collection::vec((0x42_0001u32..0x42_0150, inner), 0..6).prop_map(|children| {
            Value::Structure(
                children.into_iter().map(|(tag, value)| Item::new(Tag(tag), value)).collect(),
            )
        })
    })
}

proptest! {
    /// Whatever the encoder writes, the decoder reads back as the same item.
    #[test]
    fn u5_every_item_round_trips(tag in 0x42_0001u32..0x42_0150, value in value_strategy()) {
        let item = Item::new(Tag(tag), value);
        let bytes = item.encode().expect("encode");
        prop_assert_eq!(bytes.len() % 8, 0);
        prop_assert_eq!(decode(&bytes), Ok(item));
    }
}
