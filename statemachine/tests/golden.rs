//! Golden files: a checked-in log, the snapshot and audit events it produces. A change that
//! would make old logs, snapshots or audit records unreadable, or read differently, fails here
//! (SPEC "Serialization"). Regenerate only for a deliberate new format version:
//! `BLESS=1 cargo test -p statemachine --test golden`.
//!
//! Snapshot version 2 added the audit chain head at the end of `Meta` (SPEC S5): the log of
//! version 1 and its audit events kept their bytes; only the snapshot it replays to changed,
//! hence `snapshot-v2.bin`. `snapshot-v1.bin` stays, to show an old snapshot is refused.

mod support;

use std::path::PathBuf;

use statemachine::codec::{decode_envelope, decode_snapshot, encode_envelope, encode_snapshot};
use statemachine::command::{Command, DestroySelection};
use statemachine::{Actor, Envelope, State};
use support::*;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// The sample history: the prepared cluster, then time passing, a pulse and a destroy.
fn sample_log() -> Vec<Envelope> {
    let (mut cluster, fixture) = prepared();
    cluster.advance(11 * DAY_MS);
    cluster.ok(Actor::System, Command::Pulse);
    let digest = cluster
        .state
        .destroy_preview(&[fixture.spoiled_unit], DestroySelection::CompromisedOnly, cluster.now_ms)
        .expect("preview")
        .digest;
    cluster.ok(
        op(),
        Command::DestroyDataUnitKeys {
            data_units: vec![fixture.spoiled_unit],
            selection: DestroySelection::CompromisedOnly,
            preview_digest: digest,
        },
    );
    cluster.log
}

fn frame(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in entries {
        bytes.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        bytes.extend_from_slice(entry);
    }
    bytes
}

fn unframe(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("length")) as usize;
        entries.push(&bytes[4..4 + len]);
        bytes = &bytes[4 + len..];
    }
    entries
}

/// Applies the log and returns the state and the postcard encoding of every audit event.
fn replay(entries: &[&[u8]]) -> (State, Vec<u8>) {
    let mut state = State::new();
    let mut events = Vec::new();
    for (position, bytes) in entries.iter().enumerate() {
        let envelope = decode_envelope(bytes).expect("a golden entry decodes");
        assert_eq!(
            &encode_envelope(&envelope),
            bytes,
            "entry {position} re-encodes to the same bytes"
        );
        let applied = state.apply(position as u64 + 1, &envelope);
        state.check_invariants();
        for event in applied.events {
            events.extend(postcard::to_allocvec(&event).expect("event encodes"));
        }
    }
    (state, events)
}

/// Setup: the checked-in log of version 1. Action: decode and apply it on a fresh state.
/// Expect: every entry re-encodes to its bytes; the snapshot (version 2, with the audit chain
/// head) and the audit events equal the checked-in ones byte for byte; the snapshot decodes to
/// the same state.
#[test]
fn golden_log_v1_decodes_and_replays_to_the_golden_snapshot() {
    if std::env::var_os("BLESS").is_some() {
        let entries: Vec<Vec<u8>> = sample_log().iter().map(encode_envelope).collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let (state, events) = replay(&refs);
        std::fs::write(golden("log-v1.bin"), frame(&entries)).expect("write log");
        std::fs::write(golden("snapshot-v2.bin"), encode_snapshot(&state)).expect("write snapshot");
        std::fs::write(golden("audit-v1.bin"), events).expect("write audit");
    }
    let log = std::fs::read(golden("log-v1.bin")).expect("tests/golden/log-v1.bin is checked in");
    let entries = unframe(&log);
    assert!(entries.len() > 40, "the sample log covers a real history");
    let (state, events) = replay(&entries);
    let snapshot = std::fs::read(golden("snapshot-v2.bin")).expect("golden snapshot");
    assert_eq!(
        encode_snapshot(&state),
        snapshot,
        "replaying the golden log gives the golden snapshot"
    );
    assert_eq!(decode_snapshot(&snapshot).expect("golden snapshot decodes"), state);
    let audit = std::fs::read(golden("audit-v1.bin")).expect("golden audit events");
    assert_eq!(events, audit, "the audit events keep their encoding");
}

/// A version byte this software does not know is refused with an upgrade hint, not misread.
#[test]
fn unknown_format_versions_are_refused() {
    let log = std::fs::read(golden("log-v1.bin")).expect("golden log");
    let mut entry = unframe(&log)[0].to_vec();
    entry[0] = 2;
    let error = decode_envelope(&entry).expect_err("version 2 is unknown");
    assert_eq!(
        error.to_string(),
        "log entry has format version 2; this software reads version 1: upgrade the KMA software"
    );
    let mut snapshot = std::fs::read(golden("snapshot-v2.bin")).expect("golden snapshot");
    snapshot[0] = 3;
    let newer = decode_snapshot(&snapshot).expect_err("version 3 is unknown");
    assert_eq!(
        newer.to_string(),
        "snapshot has format version 3; this software reads version 2: upgrade the KMA software"
    );
    snapshot[0] = 2;
    snapshot.truncate(snapshot.len() - 3);
    let truncated = decode_snapshot(&snapshot).expect_err("truncated");
    assert_eq!(truncated.to_string(), "corrupt snapshot: truncated: no trailer");
}

/// Setup: the checked-in snapshot of version 1, from before the audit chain. Action: decode.
/// Expect: refused as older, saying what to do, never read as a state without a chain.
#[test]
fn golden_snapshot_v1_is_refused_as_older() {
    let snapshot = std::fs::read(golden("snapshot-v1.bin")).expect("golden snapshot v1");
    let error = decode_snapshot(&snapshot).expect_err("version 1 is retired");
    assert_eq!(
        error.to_string(),
        "snapshot has format version 1, written by an older KMA software; this software reads \
         version 2 only: run one software version on every KMA of the cluster"
    );
}
