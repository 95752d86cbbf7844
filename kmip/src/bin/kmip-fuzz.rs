//! kmip-fuzz: feeds the TTLV decoder random, generated and mutated messages and checks, on
//! every input, that it neither panics nor accepts anything it would not write itself.
//!
//! It runs on the stable toolchain and links only the `kmip` crate. Each input is one of:
//! - random bytes, half of them behind a plausible message header;
//! - a generated item tree, encoded: it must decode to the same tree;
//! - a generated tree or a real client's message, encoded and then mutated (bit flips, length
//!   fields rewritten, bytes cut, inserted or repeated): whatever decodes must re-encode to
//!   exactly the input bytes, since TTLV has one encoding per item.
//!
//! A failure prints the seed, the input number and the input in hex, and exits 1; the same
//! `--seed` replays the run. `--seconds` and `--inputs` bound it (whichever comes first).

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kmip::tag::{self, Tag};
use kmip::{attribute, decode, message, Item, Limits, ProtocolVersion, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

struct Args {
    seconds: f64,
    inputs: u64,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { seconds: 30.0, inputs: u64::MAX, seed: rand::random() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            "--inputs" => args.inputs = value.parse().map_err(|e| bad(&e))?,
            "--seed" => {
                let digits = value.trim_start_matches("0x");
                args.seed = u64::from_str_radix(digits, 16).map_err(|e| bad(&e))?;
            }
            _ => {
                return Err(format!("unknown flag {flag}; use --seconds S, --inputs N, --seed HEX"))
            }
        }
    }
    Ok(args)
}

/// Tags a generator draws from: the ones the server reads, so generated trees look like
/// requests, plus the occasional unknown and extension tag.
const TAGS: &[Tag] = &[
    tag::REQUEST_MESSAGE,
    tag::REQUEST_HEADER,
    tag::PROTOCOL_VERSION,
    tag::PROTOCOL_VERSION_MAJOR,
    tag::PROTOCOL_VERSION_MINOR,
    tag::BATCH_COUNT,
    tag::BATCH_ITEM,
    tag::OPERATION,
    tag::REQUEST_PAYLOAD,
    tag::UNIQUE_IDENTIFIER,
    tag::TEMPLATE_ATTRIBUTE,
    tag::ATTRIBUTE,
    tag::ATTRIBUTE_NAME,
    tag::ATTRIBUTE_VALUE,
    tag::ATTRIBUTES,
    tag::NAME,
    tag::APPLICATION_SPECIFIC_INFORMATION,
    tag::KEY_MATERIAL,
    tag::ATTRIBUTE_INDEX,
    tag::NAME_VALUE,
    tag::BATCH_ORDER_OPTION,
    tag::UNIQUE_BATCH_ITEM_ID,
];

fn random_tag(rng: &mut SmallRng) -> Tag {
    match rng.gen_range(0..10) {
        0 => Tag(0x42_0000 | rng.gen_range(0..0x200)),
        1 => Tag(0x54_0000 | rng.gen_range(0..0x10)),
        _ => TAGS[rng.gen_range(0..TAGS.len())],
    }
}

fn random_bytes(rng: &mut SmallRng, len_max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=len_max);
    (0..len).map(|_| rng.gen()).collect()
}

fn random_value(rng: &mut SmallRng, depth: usize) -> Value {
    match rng.gen_range(0..if depth == 0 { 10 } else { 14 }) {
        0 => Value::Integer(rng.gen()),
        1 => Value::LongInteger(rng.gen()),
        2 => Value::BigInteger((0..rng.gen_range(8..32) / 8 * 8).map(|_| rng.gen()).collect()),
        3 => Value::Enumeration(rng.gen_range(0..0x30)),
        4 => Value::Boolean(rng.gen()),
        5 => Value::TextString(
            (0..rng.gen_range(0..20)).map(|_| rng.gen_range('\u{20}'..'\u{800}')).collect(),
        ),
        6 => Value::ByteString(random_bytes(rng, 40).into()),
        7 => Value::DateTime(rng.gen()),
        8 => Value::Interval(rng.gen()),
        9 => Value::DateTimeExtended(rng.gen()),
        _ => {
            let children = (0..rng.gen_range(0..5))
                .map(|_| Item::new(random_tag(rng), random_value(rng, depth - 1)))
                .collect();
            Value::Structure(children)
        }
    }
}

fn random_item(rng: &mut SmallRng) -> Item {
    let depth = rng.gen_range(0..7);
    let children = (0..rng.gen_range(1..6))
        .map(|_| Item::new(random_tag(rng), random_value(rng, depth)))
        .collect();
    Item::structure(tag::REQUEST_MESSAGE, children)
}

const ATTRIBUTE_NAMES: &[&str] = &[
    "Name",
    "Cryptographic Algorithm",
    "Cryptographic Length",
    "Cryptographic Usage Mask",
    "Application Specific Information",
    "Alternative Name",
    "State",
    "x-Barcode",
    "x-VendorAttribute2",
    "Colour",
];

/// A plausible request: a header (a version that is usually spoken, a batch count that is
/// usually right, options) and batch items whose payloads hold attributes in either spelling.
fn random_request(rng: &mut SmallRng) -> Item {
    let items: Vec<Item> = (0..rng.gen_range(0..5)).map(|_| random_batch_item(rng)).collect();
    let count =
        i32::try_from(items.len()).unwrap_or(0) + if rng.gen_range(0..8) == 0 { 1 } else { 0 };
    let version = ProtocolVersion::SUPPORTED[rng.gen_range(0..6)];
    let mut header = vec![version.to_item()];
    if rng.gen() {
        header.push(Item::boolean(tag::BATCH_ORDER_OPTION, rng.gen()));
    }
    if rng.gen() {
        header.push(Item::enumeration(tag::BATCH_ERROR_CONTINUATION_OPTION, rng.gen_range(0..5)));
    }
    header.push(Item::integer(tag::BATCH_COUNT, count));
    let mut children = vec![Item::structure(tag::REQUEST_HEADER, header)];
    children.extend(items);
    Item::structure(tag::REQUEST_MESSAGE, children)
}

fn random_batch_item(rng: &mut SmallRng) -> Item {
    let attributes: Vec<Item> = (0..rng.gen_range(0..4))
        .map(|_| {
            let name = ATTRIBUTE_NAMES[rng.gen_range(0..ATTRIBUTE_NAMES.len())];
            Item::structure(
                tag::ATTRIBUTE,
                vec![
                    Item::text(tag::ATTRIBUTE_NAME, name),
                    Item::new(tag::ATTRIBUTE_VALUE, random_value(rng, 1)),
                ],
            )
        })
        .collect();
    let payload = match rng.gen_range(0..3) {
        0 => vec![Item::structure(tag::TEMPLATE_ATTRIBUTE, attributes)],
        1 => vec![Item::structure(
            tag::ATTRIBUTES,
            vec![Item::new(random_tag(rng), random_value(rng, 1))],
        )],
        _ => vec![Item::text(tag::UNIQUE_IDENTIFIER, "k")],
    };
    Item::structure(
        tag::BATCH_ITEM,
        vec![
            Item::enumeration(tag::OPERATION, rng.gen_range(0..0x36)),
            Item::structure(tag::REQUEST_PAYLOAD, payload),
        ],
    )
}

/// Messages real clients send (PyKMIP's Discover Versions and Get), as mutation seeds.
fn seeds() -> Vec<Item> {
    let version = Item::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Item::integer(tag::PROTOCOL_VERSION_MAJOR, 1),
            Item::integer(tag::PROTOCOL_VERSION_MINOR, 2),
        ],
    );
    let header =
        Item::structure(tag::REQUEST_HEADER, vec![version, Item::integer(tag::BATCH_COUNT, 1)]);
    let batch = |operation: u32, payload: Vec<Item>| {
        Item::structure(
            tag::BATCH_ITEM,
            vec![
                Item::enumeration(tag::OPERATION, operation),
                Item::structure(tag::REQUEST_PAYLOAD, payload),
            ],
        )
    };
    vec![
        Item::structure(tag::REQUEST_MESSAGE, vec![header.clone(), batch(0x1E, vec![])]),
        Item::structure(
            tag::REQUEST_MESSAGE,
            vec![header, batch(0x0A, vec![Item::text(tag::UNIQUE_IDENTIFIER, "1")])],
        ),
    ]
}

fn mutate(rng: &mut SmallRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..4) {
        let len = bytes.len();
        if len == 0 {
            bytes.extend(random_bytes(rng, 16));
            continue;
        }
        let at = rng.gen_range(0..len);
        match rng.gen_range(0..8) {
            0 => bytes[at] ^= 1 << rng.gen_range(0..8),
            1 => {
                bytes[at] =
                    [0, 1, 7, 8, 0x0b, 0x0c, 0x42, 0x54, 0x7f, 0x80, 0xff][rng.gen_range(0..11)]
            }
            2 => {
                // A length field: bytes 4..8 of an item header, which sit at 8-byte offsets.
                let field = (at / 8) * 8 + 4;
                if field + 4 <= len {
                    let new: u32 = match rng.gen_range(0..4) {
                        0 => rng.gen(),
                        1 => rng.gen_range(0..64),
                        2 => u32::MAX - rng.gen_range(0..16),
                        _ => {
                            u32::from_be_bytes(bytes[field..field + 4].try_into().unwrap_or([0; 4]))
                                .wrapping_add(rng.gen_range(0..16))
                                .wrapping_sub(8)
                        }
                    };
                    bytes[field..field + 4].copy_from_slice(&new.to_be_bytes());
                }
            }
            3 => bytes.truncate(at),
            4 => {
                let extra = random_bytes(rng, 16);
                bytes.splice(at..at, extra);
            }
            5 => {
                let end = rng.gen_range(at..=len);
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            6 => {
                let end = rng.gen_range(at..=len.min(at + 24));
                bytes.drain(at..end);
            }
            _ => bytes[at] = rng.gen(),
        }
    }
}

/// What the server does with a decoded message before any operation runs: the envelope, then
/// each payload's attributes in both spellings.
fn read_as_request(item: &Item) -> bool {
    let request = message::parse_request(item);
    for payload in item.children().iter().flat_map(Item::children) {
        for version in [ProtocolVersion::V1_0, ProtocolVersion::V1_4, ProtocolVersion::V2_0] {
            let _ = attribute::payload_attributes(payload, version);
        }
    }
    request.is_ok()
}

enum Outcome {
    /// Decoded; `true` when it was also a request the server would run.
    Accepted(bool),
    Refused,
}

/// One input through the decoder, and the checks on what it did.
fn check(input: &[u8], expected: Option<&Item>) -> Result<Outcome, String> {
    // Generated trees must fit the server's bounds; mutated bytes meet tighter ones, so that
    // the depth and item-count refusals are reached too.
    let limits = match expected {
        Some(_) => Limits::SERVER,
        None => Limits { message_len_max: 4096, depth_max: 8, items_max: 256 },
    };
    let decoded = panic::catch_unwind(AssertUnwindSafe(|| decode(input, &limits)))
        .map_err(|_| "the decoder panicked".to_owned())?;
    let mut request = false;
    if let Ok(item) = &decoded {
        request = panic::catch_unwind(AssertUnwindSafe(|| read_as_request(item)))
            .map_err(|_| "the message layer panicked".to_owned())?;
    }
    match (decoded, expected) {
        (Ok(item), Some(expected)) if item != *expected => {
            Err(format!("decoded {item:?}\nbut it was encoded from {expected:?}"))
        }
        (Err(e), Some(_)) => Err(format!("refused its own encoding: {e}")),
        (Ok(item), _) => match item.encode() {
            Ok(again) if *again == input => Ok(Outcome::Accepted(request)),
            Ok(_) => Err(format!("accepted bytes it does not write back the same: {item:?}")),
            Err(e) => Err(format!("accepted an item it cannot encode: {e}")),
        },
        (Err(_), None) => Ok(Outcome::Refused),
    }
}

fn next_input(rng: &mut SmallRng, seeds: &[Item]) -> (Vec<u8>, Option<Item>) {
    match rng.gen_range(0..8) {
        0 => {
            let mut bytes = Vec::new();
            if rng.gen() {
                bytes.extend_from_slice(&[0x42, 0x00, 0x78, 0x01, 0, 0, 0, rng.gen::<u8>() & !7]);
            }
            bytes.extend(random_bytes(rng, 200));
            (bytes, None)
        }
        1 | 2 => {
            let item = if rng.gen() { random_item(rng) } else { random_request(rng) };
            let bytes = item.encode().map(|b| b.to_vec()).unwrap_or_default();
            (bytes, Some(item))
        }
        n => {
            let item = if n == 3 {
                seeds[rng.gen_range(0..seeds.len())].clone()
            } else {
                random_item(rng)
            };
            let mut bytes = item.encode().map(|b| b.to_vec()).unwrap_or_default();
            mutate(rng, &mut bytes);
            (bytes, None)
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // The panic hook would print before the harness can say which input it was.
    panic::set_hook(Box::new(|_| {}));
    let mut rng = SmallRng::seed_from_u64(args.seed);
    let seeds = seeds();
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(args.seconds);
    let (mut accepted, mut requests, mut refused, mut inputs) = (0u64, 0u64, 0u64, 0u64);
    while inputs < args.inputs && (inputs % 4096 != 0 || started.elapsed() < deadline) {
        let (input, expected) = next_input(&mut rng, &seeds);
        inputs += 1;
        match check(&input, expected.as_ref()) {
            Ok(Outcome::Accepted(request)) => {
                accepted += 1;
                requests += u64::from(request);
            }
            Ok(Outcome::Refused) => refused += 1,
            Err(failure) => {
                let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
                println!("kmip-fuzz: FAILED on input {inputs} (seed {:#x}): {failure}", args.seed);
                println!("input: {hex}");
                return ExitCode::FAILURE;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "kmip-fuzz: {inputs} inputs in {seconds:.1} s ({:.0}/s), {accepted} decoded ({requests} \
         valid requests), {refused} refused, no panic, seed {:#x}",
        inputs as f64 / seconds,
        args.seed
    );
    ExitCode::SUCCESS
}
