//! The audit chain (SPEC S5): every applied event is a link of one SHA-256 chain whose head is
//! replicated state, so that an edited, removed or reordered stored event is detected.

mod support;

use statemachine::audit::{chain_link, AUDIT_CHAIN_DOMAIN};
use statemachine::codec::{decode_snapshot, encode_snapshot};
use statemachine::{
    verify_chain, Actor, AuditChain, AuditWhat, ChainBreak, ChainCheck, ChainedAuditEvent, Command,
    CommandKind, Envelope, Reject, State,
};
use support::*;

/// The prepared cluster's log, then time passing, a pulse, failed and successful logins.
fn sample_log() -> Vec<Envelope> {
    let (mut cluster, _) = prepared();
    cluster.advance(11 * DAY_MS);
    cluster.ok(Actor::System, Command::Pulse);
    let failure = Command::RecordAuthenticationFailure {
        principal: "mallory".into(),
        source: "10.0.0.9".into(),
    };
    cluster.ok(Actor::System, failure);
    let login = Command::RecordLogin { principal: "co".into(), source: "10.0.0.7".into() };
    cluster.ok(Actor::System, login);
    cluster.log
}

/// Applies `log` from `first_index` on and returns every event with its place in the chain.
fn replay(state: &mut State, log: &[Envelope], first_index: u64) -> Vec<ChainedAuditEvent> {
    let mut events = Vec::new();
    for (position, envelope) in log.iter().enumerate() {
        let applied = state.apply(first_index + position as u64, envelope);
        state.check_invariants();
        events.extend(applied.chained_events());
    }
    events
}

fn chained_sample() -> (State, Vec<ChainedAuditEvent>) {
    let mut state = State::new();
    let events = replay(&mut state, &sample_log(), 1);
    (state, events)
}

/// Setup: two fresh states. Action: apply the same sample log to each.
/// Expect: the same links, seq 1, 2, 3... over every event, each link the SHA-256 of the
/// domain tag, the previous head and the event; both states end at the same chain head, which
/// counts every event.
#[test]
fn s5_chain_advances_identically_for_the_same_log_on_two_states() {
    let log = sample_log();
    let (mut first, mut second) = (State::new(), State::new());
    let events = replay(&mut first, &log, 1);
    assert_eq!(replay(&mut second, &log, 1), events);
    assert_eq!(first.audit_chain(), second.audit_chain());
    assert_eq!(first.meta().audit_chain, first.audit_chain());
    assert!(events.len() > log.len(), "the sample has entries with several events");
    assert_eq!(first.audit_chain().events, events.len() as u64);
    let mut head = [0; 32];
    for (position, event) in events.iter().enumerate() {
        assert_eq!(event.seq, position as u64 + 1);
        assert_eq!(event.link, chain_link(&head, &event.event));
        head = event.link;
    }
    assert_eq!(first.audit_chain().head, head);
}

/// Setup: a new state. Action: apply three envelopes at one log index, as a batch is applied.
/// Expect: the chain does not restart per envelope: seqs run on across the batch.
#[test]
fn s5_envelopes_of_one_batch_continue_one_chain() {
    let log = sample_log();
    let mut state = State::new();
    let mut seqs = Vec::new();
    for envelope in &log[..3] {
        let applied = state.apply(1, envelope);
        assert_eq!(applied.links.len(), applied.events.len(), "one link per event");
        seqs.extend(applied.links.iter().map(|link| link.seq));
    }
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected);
    assert_eq!(state.audit_chain().events, seqs.len() as u64);
}

/// Setup: the sample log applied. Action: verify its events from the empty chain.
/// Expect: every event checked, ending at the state's chain head.
#[test]
fn s5_verify_chain_passes_on_an_untouched_chain() {
    let (state, events) = chained_sample();
    let check = verify_chain(AuditChain::GENESIS, events.iter()).expect("untouched chain");
    assert_eq!(check, ChainCheck { events: events.len() as u64, head: state.audit_chain() });
    let empty = verify_chain((7, [7; 32]), std::iter::empty()).expect("nothing to check");
    assert_eq!(empty, ChainCheck { events: 0, head: AuditChain { events: 7, head: [7; 32] } });
}

/// Setup: the sample's chained events. Action: change the principal of the login record, the
/// time of another event, or a stored link. Expect: `LinkMismatch` at the changed seq.
#[test]
fn s5_verify_chain_reports_the_seq_of_an_edited_event() {
    let (_, events) = chained_sample();
    let login = events
        .iter()
        .position(|event| matches!(event.what, AuditWhat::Login { .. }))
        .expect("the login is audited");
    let mut edited = events.clone();
    edited[login].event.what =
        AuditWhat::Login { principal: "so".into(), source: "10.0.0.7".into() };
    let seq = edited[login].seq;
    assert_eq!(
        verify_chain(AuditChain::GENESIS, edited.iter()),
        Err(ChainBreak::LinkMismatch { seq })
    );

    let mut edited = events.clone();
    edited[20].event.at_ms += 1;
    assert_eq!(
        verify_chain(AuditChain::GENESIS, edited.iter()),
        Err(ChainBreak::LinkMismatch { seq: 21 })
    );

    let mut relinked = events.clone();
    relinked[30].link[0] ^= 1;
    let error = verify_chain(AuditChain::GENESIS, relinked.iter()).expect_err("edited link");
    assert_eq!(error, ChainBreak::LinkMismatch { seq: 31 });
    assert_eq!(error.seq(), 31);
    assert_eq!(
        error.to_string(),
        "audit event 31 does not match its link: it was changed after it was written"
    );
}

/// Setup: the sample's chained events. Action: remove one in the middle, the first, or the
/// last. Expect: a `Gap` from the removed seq to the next present one; a removed last event
/// passes the chain but ends short of the state's head, which is how a cut tail shows.
#[test]
fn s5_verify_chain_reports_the_seq_of_a_removed_event() {
    let (state, events) = chained_sample();
    let mut removed = events.clone();
    removed.remove(12);
    let error = verify_chain(AuditChain::GENESIS, removed.iter()).expect_err("gap");
    assert_eq!(error, ChainBreak::Gap { seq: 13, found: 14 });
    assert_eq!(error.seq(), 13);
    assert_eq!(error.to_string(), "audit events 13 to 13 are missing: the next one present is 14");

    let mut removed = events.clone();
    removed.drain(..3);
    assert_eq!(
        verify_chain(AuditChain::GENESIS, removed.iter()),
        Err(ChainBreak::Gap { seq: 1, found: 4 })
    );

    let mut cut = events.clone();
    cut.pop();
    let check = verify_chain(AuditChain::GENESIS, cut.iter()).expect("a shorter chain");
    assert_ne!(check.head, state.audit_chain(), "a cut tail ends short of the state's head");
    assert_eq!(check.head.events + 1, state.audit_chain().events);
}

/// Setup: the sample's chained events. Action: swap two neighbours; or swap their contents
/// while keeping the seqs in order. Expect: `OutOfOrder` at the first of the two; the
/// relabelled swap is a `LinkMismatch` at that seq.
#[test]
fn s5_verify_chain_reports_the_seq_of_a_swapped_pair() {
    let (_, events) = chained_sample();
    let mut swapped = events.clone();
    swapped.swap(40, 41);
    let error = verify_chain(AuditChain::GENESIS, swapped.iter()).expect_err("swapped");
    assert_eq!(error, ChainBreak::OutOfOrder { seq: 41, found: 42 });
    assert_eq!(error.seq(), 41);

    let mut relabelled = events.clone();
    relabelled.swap(40, 41);
    relabelled[40].seq = 41;
    relabelled[41].seq = 42;
    assert_eq!(
        verify_chain(AuditChain::GENESIS, relabelled.iter()),
        Err(ChainBreak::LinkMismatch { seq: 41 })
    );

    let mut repeated = events.clone();
    repeated.insert(10, events[9].clone());
    assert_eq!(
        verify_chain(AuditChain::GENESIS, repeated.iter()),
        Err(ChainBreak::OutOfOrder { seq: 11, found: 10 })
    );
}

/// Setup: the sample log applied halfway, snapshotted and rebuilt from the snapshot bytes.
/// Action: apply the second half to the rebuilt state and to one that never stopped.
/// Expect: the snapshot carries the chain head; both give the same links for the second half,
/// and the second half verifies from the head at the snapshot, as on a KMA that joined then.
#[test]
fn s5_state_rebuilt_from_a_snapshot_continues_the_same_chain() {
    let log = sample_log();
    let half = log.len() / 2;
    let mut running = State::new();
    replay(&mut running, &log[..half], 1);
    let anchor = running.audit_chain();
    assert!(anchor.events > 0);
    let mut rebuilt = decode_snapshot(&encode_snapshot(&running)).expect("snapshot decodes");
    assert_eq!(rebuilt.audit_chain(), anchor);

    let next = half as u64 + 1;
    let tail = replay(&mut rebuilt, &log[half..], next);
    assert_eq!(replay(&mut running, &log[half..], next), tail);
    assert_eq!(rebuilt.audit_chain(), running.audit_chain());
    assert_eq!(tail[0].seq, anchor.events + 1);
    let check = verify_chain((anchor.events, anchor.head), tail.iter()).expect("continues");
    assert_eq!(check.head, rebuilt.audit_chain());
    assert_eq!(
        verify_chain(AuditChain::GENESIS, tail.iter()),
        Err(ChainBreak::Gap { seq: 1, found: anchor.events + 1 }),
        "without its anchor the tail looks like a log whose start was removed"
    );
}

/// Setup: the prepared cluster. Action: the KMA records a login; a user tries to.
/// Expect: the KMA's record is one `Login` event with the principal and source, nothing more;
/// the user is refused as the wrong issuer.
#[test]
fn s5_login_is_recorded_by_the_kma_only() {
    let (mut cluster, _) = prepared();
    let login = Command::RecordLogin { principal: "op".into(), source: "192.0.2.4".into() };
    cluster.ok(Actor::System, login.clone());
    assert_eq!(
        cluster.last_events(),
        vec![AuditWhat::Login { principal: "op".into(), source: "192.0.2.4".into() }]
    );
    assert_eq!(
        cluster.apply(so(), login),
        Err(Reject::WrongIssuer { kind: CommandKind::RecordLogin })
    );
    let control = Command::RecordLogin { principal: "op\n".into(), source: String::new() };
    assert!(matches!(cluster.apply(Actor::System, control), Err(Reject::InvalidText { .. })));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The new variants and the chain are persisted formats: their bytes are pinned here. The
/// variants come last, so no older variant's encoding moved (the golden log and audit files
/// check that); the link pins the domain tag and the hash input order.
#[test]
fn s5_login_encodings_and_chain_link_are_frozen() {
    let login = Command::RecordLogin { principal: "co".into(), source: "10.0.0.7".into() };
    assert_eq!(hex(&postcard::to_allocvec(&login).expect("encode")), "3802636f0831302e302e302e37");
    let what = AuditWhat::Login { principal: "co".into(), source: "10.0.0.7".into() };
    assert_eq!(hex(&postcard::to_allocvec(&what).expect("encode")), "1302636f0831302e302e302e37");
    assert_eq!(postcard::to_allocvec(&CommandKind::RecordLogin).expect("encode"), [61]);
    assert_eq!(AUDIT_CHAIN_DOMAIN, b"kma-audit-chain-v1");
    let event = statemachine::AuditEvent { index: 7, at_ms: START_MS, what };
    assert_eq!(
        hex(&chain_link(&[0; 32], &event)),
        "ac4c7a351362ba5aa297c7c2b905b83891ac6c33a46f98b46e63b74cda165aa5"
    );
}
