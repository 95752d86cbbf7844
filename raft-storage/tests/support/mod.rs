//! Shared by the integration tests: a data dir in a temp dir, and a workload of real
//! statemachine commands as openraft log entries.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::Arc;

use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};
use raft_storage::{
    open_stores, EntryResponse, KmaRaft, RocksDataDir, RocksLogStore, RocksStateMachine,
};
use statemachine::command::{InitCluster, NewKey};
use statemachine::key::KeyCheckValue;
use statemachine::quorum::{Quorum, QuorumMember};
use statemachine::{
    Actor, Batch, ClusterId, Command, Envelope, KeyId, RequestId, Role, RoleSet, WrappedKey,
};
use tempfile::TempDir;

pub type Entry = openraft::Entry<KmaRaft>;

pub const CLUSTER: ClusterId = ClusterId(0x6b6d_6100_0000_0001);
const TIME_MS_START: u64 = 1_700_000_000_000;

pub struct Stores {
    pub data_dir: Arc<RocksDataDir>,
    pub log: RocksLogStore,
    pub sm: RocksStateMachine,
}

pub fn open(dir: &TempDir) -> Stores {
    let (data_dir, log, sm) = open_stores(dir.path()).expect("open the data dir");
    Stores { data_dir, log, sm }
}

pub fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

/// As openraft writes a new single-node cluster: the membership entry (index 0) and the leader's
/// blank entry (index 1); then `commands` envelopes from index 2: the cluster is initialised
/// first, then pool keys, users and pulses alternate.
pub fn workload(commands: u64) -> Vec<Entry> {
    let members = BTreeSet::from([1u64]);
    let mut entries = vec![
        Entry {
            log_id: log_id(0),
            payload: EntryPayload::Membership(Membership::new(vec![members], None)),
        },
        Entry { log_id: log_id(1), payload: EntryPayload::Blank },
    ];
    for i in 0..commands {
        let payload = EntryPayload::Normal(batch(i));
        entries.push(Entry { log_id: log_id(2 + i), payload });
    }
    entries
}

/// The batch of entry `i`: one envelope, or, every fifth entry, two (as the leader packs
/// commands that arrive during an append).
fn batch(i: u64) -> Batch {
    let mut batch = Batch::one(envelope(i));
    if i % 5 == 4 {
        let so = Actor::User("so".into());
        let extra = Envelope {
            actor: so,
            request_id: None,
            command: create_user(1_000_000 + i),
            ..envelope(i)
        };
        batch.envelopes.push(extra);
    }
    batch
}

fn envelope(i: u64) -> Envelope {
    let so = Actor::User("so".into());
    let (actor, request_id, command) = match i % 4 {
        _ if i == 0 => (Actor::System, None, Command::InitCluster(init_cluster())),
        0 => (Actor::System, None, Command::GeneratePoolKeys { keys: pool_keys(i) }),
        1 => (so, None, create_user(i)),
        2 => (Actor::System, None, Command::Pulse),
        _ => (so, Some(RequestId { client: 9, seq: i }), create_user(i)),
    };
    Envelope { time_ms: TIME_MS_START + i * 1_000, origin_node_id: 1, actor, request_id, command }
}

fn init_cluster() -> InitCluster {
    InitCluster {
        cluster_id: CLUSTER,
        kma_name: "kma1".into(),
        site: "site1".into(),
        security_officer: "so".into(),
        security_officer_verifier: vec![7; 32],
        quorum: Quorum {
            members: vec![QuorumMember { id: "m1".into(), wrapped_share: vec![1; 32] }],
            threshold: 1,
        },
        autonomous_unlock: false,
    }
}

fn create_user(i: u64) -> Command {
    let roles = RoleSet::of(Role::Operator);
    Command::CreateUser { id: format!("user{i}"), roles, passphrase_verifier: vec![3; 32] }
}

/// Three pool keys with IDs and (fake, wrapped) material derived from `i`.
fn pool_keys(i: u64) -> Vec<NewKey> {
    (0..3u8)
        .map(|k| {
            let mut random = [k; 22];
            random[..8].copy_from_slice(&i.to_be_bytes());
            pool_key(random, k, i as u8)
        })
        .collect()
}

/// A pool key of ID `random` with fake wrapped material: nonce and ciphertext filled with the
/// given bytes.
fn pool_key(random: [u8; 22], nonce_byte: u8, ciphertext_byte: u8) -> NewKey {
    NewKey {
        id: KeyId::native(CLUSTER, random),
        material: WrappedKey {
            nonce: [nonce_byte; 12],
            ciphertext: [ciphertext_byte; 32],
            tag: [1; 16],
        },
        check_value: KeyCheckValue([2; 16]),
    }
}

/// From `first_index` on: the pool limits raised by the security officer, then `entries`
/// entries of 1,024 new pool keys each, for a state whose snapshot takes a while to stream.
pub fn pool_filling(first_index: u64, entries: u64) -> Vec<Entry> {
    let limits = statemachine::cluster::KeyPoolLimits { low_water: 0, high_water: 2_000_000 };
    let mut out = Vec::new();
    let mut push = |actor: Actor, command: Command| {
        let i = first_index + out.len() as u64;
        let envelope = Envelope {
            time_ms: TIME_MS_START + i,
            origin_node_id: 1,
            actor,
            request_id: None,
            command,
        };
        let payload = EntryPayload::Normal(Batch::one(envelope));
        out.push(Entry { log_id: log_id(i), payload });
    };
    push(Actor::User("so".into()), Command::SetKeyPoolLimits(limits));
    for n in 0..entries {
        let keys = (0..1_024u32)
            .map(|k| {
                let mut random = [0xA5; 22];
                random[..8].copy_from_slice(&n.to_be_bytes());
                random[8..12].copy_from_slice(&k.to_be_bytes());
                pool_key(random, 1, k as u8)
            })
            .collect();
        push(Actor::System, Command::GeneratePoolKeys { keys });
    }
    out
}

pub async fn append(log: &mut RocksLogStore, entries: &[Entry]) {
    log.blocking_append(entries.to_vec()).await.expect("append");
}

pub async fn apply(sm: &mut RocksStateMachine, entries: &[Entry]) -> Vec<EntryResponse> {
    sm.apply(entries.to_vec()).await.expect("apply")
}

/// The state's snapshot bytes: equal bytes mean equal states.
pub async fn state_bytes(sm: &RocksStateMachine) -> Vec<u8> {
    let state = sm.state();
    let state = state.read().await;
    state.check_invariants();
    statemachine::codec::encode_snapshot(&state)
}

/// Copies a snapshot into a file of `sm` as openraft's transfer would, keeping `len` bytes.
pub async fn receive(
    sm: &mut RocksStateMachine,
    source: tokio::fs::File,
    len: Option<usize>,
) -> Box<tokio::fs::File> {
    let mut bytes = Vec::new();
    source.into_std().await.read_to_end(&mut bytes).expect("read snapshot");
    bytes.truncate(len.unwrap_or(bytes.len()));
    let target = sm.begin_receiving_snapshot().await.expect("begin receiving");
    let mut target = (*target).into_std().await;
    target.write_all(&bytes).expect("write received snapshot");
    Box::new(tokio::fs::File::from_std(target))
}

/// The column families of a data dir, for tests that open it with plain RocksDB.
pub const COLUMN_FAMILIES: [&str; 4] = ["log", "log_meta", "sm_meta", "audit"];

/// The data dir's database opened with plain RocksDB, as damage or an attacker would; the
/// stores must be dropped first.
pub fn raw_db(dir: &TempDir) -> rocksdb::DB {
    let path = dir.path().join("rocksdb");
    rocksdb::DB::open_cf(&rocksdb::Options::default(), path, COLUMN_FAMILIES).expect("raw open")
}

/// Every (key, value) of column family `cf`, in key order.
pub fn raw_rows(db: &rocksdb::DB, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let cf = db.cf_handle(cf).expect("cf");
    db.iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("raw read"))
        .collect()
}
