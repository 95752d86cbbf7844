//! `kmsctl audit verify`'s client-side chain check (SPEC S5), without a cluster: records made
//! with the state machine's own chain, then edited, dropped, reordered, cut short.

use admin_api::api::AuditRecord;
use admin_api::cli::audit_verify::{BreakKind, Broken, ChainVerifier, Verified};
use statemachine::{AuditChain, AuditEvent, AuditWhat};

const T0: u64 = 1_709_294_400_000;

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        index: 100 + i / 2,
        at_ms: T0 + i,
        what: AuditWhat::Login { principal: format!("user{i}"), source: "10.0.0.9".into() },
    }
}

fn record(seq: u64, link: [u8; 32], event: &AuditEvent) -> AuditRecord {
    AuditRecord {
        seq,
        index: event.index,
        at_ms: event.at_ms,
        kind: "login".into(),
        actor: None,
        kma: None,
        outcome: None,
        detail: format!("{:?}", event.what),
        link: hex::encode(link),
        encoded: hex::encode(postcard::to_allocvec(event).expect("event encodes")),
    }
}

/// Records 1..=n as a KMA stores them, and the replicated head after them.
fn chain(n: u64) -> (Vec<AuditRecord>, AuditChain) {
    let mut chain = AuditChain::GENESIS;
    let records = (1..=n)
        .map(|i| {
            let event = event(i);
            let link = chain.append(&event);
            record(link.seq, link.link, &event)
        })
        .collect();
    (records, chain)
}

/// Feeds `records` in pages of `page` from the genesis anchor up to `head`.
fn verify(records: &[AuditRecord], page: usize, head: AuditChain) -> Result<Verified, Broken> {
    verify_from(records, page, AuditChain::GENESIS, head)
}

fn verify_from(
    records: &[AuditRecord],
    page: usize,
    anchor: AuditChain,
    head: AuditChain,
) -> Result<Verified, Broken> {
    let mut verifier = ChainVerifier::new(anchor.events, &hex::encode(anchor.head), head.events)
        .expect("anchor link is hex");
    let pages: Vec<&[AuditRecord]> = records.chunks(page).collect();
    for (i, rows) in pages.iter().enumerate() {
        verifier.feed(rows, i + 1 < pages.len())?;
    }
    verifier.finish(&hex::encode(head.head))
}

fn broken(result: Result<Verified, Broken>) -> (u64, BreakKind) {
    let broken = result.expect_err("the chain must be reported broken");
    (broken.seq, broken.kind)
}

/// Setup: ten intact records in pages of three. Expectation: all checked, the recomputed head
/// is the replicated one.
#[test]
fn s5_intact_chain_verifies_to_the_replicated_head() {
    let (records, head) = chain(10);
    let verified = verify(&records, 3, head).unwrap();
    assert_eq!(verified.checked, 10);
    assert_eq!(verified.chain, head);
}

/// Setup: no event after the anchor. Expectation: nothing to check, OK.
#[test]
fn s5_empty_chain_verifies() {
    let verified = verify(&[], 3, AuditChain::GENESIS).unwrap();
    assert_eq!(verified.checked, 0);
}

/// Setup: a KMA that stores from seq 4 on (its anchor is the link of 3). Expectation: OK.
#[test]
fn s5_chain_verifies_from_a_later_anchor() {
    let (records, head) = chain(8);
    let anchor = AuditChain { events: 3, head: hex_link(&records[2]) };
    let verified = verify_from(&records[3..], 2, anchor, head).unwrap();
    assert_eq!(verified.checked, 5);
}

fn hex_link(record: &AuditRecord) -> [u8; 32] {
    hex::decode(&record.link).expect("link is hex").try_into().expect("32-byte link")
}

/// Setup: event 5 re-encoded with another principal, its link kept. Expectation: edited at 5.
#[test]
fn s5_an_edited_event_is_found() {
    let (mut records, head) = chain(10);
    let mut edited = event(5);
    edited.what = AuditWhat::Login { principal: "mallory".into(), source: "10.0.0.9".into() };
    records[4].encoded = hex::encode(postcard::to_allocvec(&edited).unwrap());
    assert_eq!(broken(verify(&records, 3, head)), (5, BreakKind::Edited));
}

/// Setup: the link of event 7 replaced. Expectation: edited at 7.
#[test]
fn s5_an_edited_link_is_found() {
    let (mut records, head) = chain(10);
    records[6].link = "00".repeat(32);
    assert_eq!(broken(verify(&records, 4, head)), (7, BreakKind::Edited));
}

/// Setup: the shown index of event 2 changed (the encoding kept). Expectation: edited at 2.
#[test]
fn s5_shown_fields_that_differ_from_the_encoding_are_edits() {
    let (mut records, head) = chain(4);
    records[1].index += 1;
    assert_eq!(broken(verify(&records, 10, head)), (2, BreakKind::Edited));
}

/// Setup: a byte appended to event 3's encoding; event 4's encoding not hex. Expectation: both
/// are edits, each at its own position.
#[test]
fn s5_undecodable_encodings_are_edits() {
    let (mut records, head) = chain(4);
    records[2].encoded.push_str("00");
    assert_eq!(broken(verify(&records, 10, head)), (3, BreakKind::Edited));
    let (mut records, head) = chain(4);
    records[3].encoded = "zz".into();
    assert_eq!(broken(verify(&records, 10, head)), (4, BreakKind::Edited));
}

/// Setup: event 6 removed. Expectation: missing at 6.
#[test]
fn s5_a_missing_event_is_found() {
    let (mut records, head) = chain(10);
    records.remove(5);
    assert_eq!(broken(verify(&records, 3, head)), (6, BreakKind::Missing));
}

/// Setup: events 4 and 5 swapped inside one page. Expectation: out of order at 4.
#[test]
fn s5_reordered_events_are_found() {
    let (mut records, head) = chain(10);
    records.swap(3, 4);
    assert_eq!(broken(verify(&records, 10, head)), (4, BreakKind::OutOfOrder));
}

/// Setup: events 3 and 4 swapped across a page boundary (pages of three: 1 2 4 | 3 5 6).
/// Expectation: still out of order at 3, not a gap: the last event of a page waits.
#[test]
fn s5_reordering_across_pages_is_not_taken_for_a_gap() {
    let (mut records, head) = chain(8);
    records.swap(2, 3);
    assert_eq!(broken(verify(&records, 3, head)), (3, BreakKind::OutOfOrder));
}

/// Setup: the last two events cut off. Expectation: missing at 9 (the tail).
#[test]
fn s5_a_missing_tail_is_found_against_the_head() {
    let (records, head) = chain(10);
    assert_eq!(broken(verify(&records[..8], 3, head)), (9, BreakKind::Missing));
}

/// Setup: a consistent chain, but not the one the cluster replicated. Expectation: edited at
/// the head.
#[test]
fn s5_a_rewritten_log_differs_from_the_replicated_head() {
    let (records, mut head) = chain(5);
    head.head[0] ^= 1;
    assert_eq!(broken(verify(&records, 2, head)), (5, BreakKind::Edited));
}

/// Setup: records past the head (appended after it was read). Expectation: ignored, OK.
#[test]
fn s5_records_past_the_head_are_left_out() {
    let (records, _) = chain(6);
    let (_, head_at_4) = chain(4);
    let verified = verify(&records, 4, head_at_4).unwrap();
    assert_eq!(verified.checked, 4);
}
