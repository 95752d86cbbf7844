//! Applies one million key assignments and prints a table: applies per second on one core and
//! memory per key and per data unit (issue 2, point 8). Targets, for 10 million keys on one
//! node: at least 200,000 applies/s, at most 400 bytes per key.
//!
//! Run: `cargo bench -p statemachine --bench apply` (KEYS=100000 for a quicker run).

// The counting allocator is the one place that needs `unsafe`: it forwards to the system one.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use statemachine::cluster::KeyPoolLimits;
use statemachine::command::{InitCluster, NewKey};
use statemachine::key::{KeyCheckValue, WrappedKey};
use statemachine::quorum::{Quorum, QuorumMember, QuorumOperation};
use statemachine::{
    Actor, ClusterId, Command, DataUnitId, Envelope, KeyId, Reply, RequestId, RoleSet, State,
};

/// Counts live heap bytes, so memory per object is measured, not estimated.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// What glibc's malloc really takes for a request: an 8-byte header, 16-byte granules, 32 at least.
fn footprint(layout: Layout) -> usize {
    ((layout.size() + 8 + 15) & !15).max(32)
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(footprint(layout), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(footprint(layout), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const CLUSTER: ClusterId = ClusterId(0xbe9c);
const DRIVES: usize = 64;
const START_MS: u64 = 1_767_225_600_000;

struct Bench {
    state: State,
    index: u64,
    now_ms: u64,
}

impl Bench {
    fn apply(&mut self, actor: Actor, request_id: Option<RequestId>, command: Command) -> Reply {
        self.index += 1;
        self.now_ms += 1;
        let envelope =
            Envelope { time_ms: self.now_ms, origin_node_id: 1, actor, request_id, command };
        match self.state.apply(self.index, &envelope).result {
            Ok(reply) => reply,
            Err(reject) => panic!("bench setup was rejected: {reject}"),
        }
    }

    fn setup() -> Bench {
        let mut bench = Bench { state: State::new(), index: 0, now_ms: START_MS };
        let quorum = Quorum {
            members: vec![QuorumMember { id: "q1".into(), wrapped_share: vec![1; 48] }],
            threshold: 1,
        };
        let init = InitCluster {
            cluster_id: CLUSTER,
            kma_name: "kma1".into(),
            site: "east".into(),
            security_officer: "so".into(),
            security_officer_verifier: vec![1; 32],
            quorum,
            autonomous_unlock: false,
        };
        bench.apply(Actor::System, None, Command::InitCluster(init));
        let so = Actor::User("so".into());
        let roles = RoleSet::ALL;
        bench.apply(
            so.clone(),
            None,
            Command::CreateUser { id: "admin".into(), roles, passphrase_verifier: vec![1; 32] },
        );
        let admin = Actor::User("admin".into());
        bench.apply(
            admin.clone(),
            None,
            Command::CreateKma {
                name: "kma2".into(),
                site: "east".into(),
                passphrase_verifier: vec![1; 8],
            },
        );
        let join = QuorumOperation::JoinKma { kma: "kma2".into() };
        bench.apply(
            admin.clone(),
            None,
            Command::StartQuorumOperation { operation: join, ttl_ms: None },
        );
        bench.apply(
            admin.clone(),
            None,
            Command::ApproveQuorumOperation { id: 0, member: "q1".into() },
        );
        bench.apply(Actor::System, None, Command::KmaJoined { name: "kma2".into() });
        bench.apply(
            admin.clone(),
            None,
            Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 1, high_water: 2_000_000 }),
        );
        let year = 365 * 86_400_000;
        bench.apply(
            admin.clone(),
            None,
            Command::CreateKeyPolicy {
                name: "std".into(),
                encryption_period_ms: year,
                cryptoperiod_ms: 10 * year,
                allow_export: false,
                allow_import: false,
            },
        );
        bench.apply(
            admin.clone(),
            None,
            Command::CreateKeyGroup { name: "std".into(), policy: "std".into() },
        );
        bench.add_drives(&admin);
        bench
    }

    /// Enrolled drives with access to `std`.
    fn add_drives(&mut self, admin: &Actor) {
        for drive in 0..DRIVES {
            let id = format!("drive{drive:03}");
            self.apply(
                admin.clone(),
                None,
                Command::CreateAgent {
                    id: id.clone(),
                    site: "east".into(),
                    passphrase_verifier: vec![1; 32],
                },
            );
            self.apply(
                admin.clone(),
                None,
                Command::AssignKeyGroupToAgent { agent: id.clone(), group: "std".into() },
            );
            self.apply(
                Actor::System,
                None,
                Command::RecordAgentEnrollment { id, certificate_fingerprint: [2; 32] },
            );
        }
    }
}

fn pool_batch(first: u64, count: u64) -> Vec<NewKey> {
    (first..first + count)
        .map(|n| {
            // Spread IDs like random ones would be, so the B-trees fill as they will in use.
            let mixed = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes();
            let mut random = [0u8; 22];
            random[..8].copy_from_slice(&mixed);
            random[14..].copy_from_slice(&n.to_be_bytes());
            NewKey {
                id: KeyId::native(CLUSTER, random),
                material: WrappedKey { nonce: [3; 12], ciphertext: [4; 32], tag: [5; 16] },
                check_value: KeyCheckValue([6; 16]),
            }
        })
        .collect()
}

fn live() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn main() {
    let keys: u64 = std::env::var("KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mut bench = Bench::setup();

    let before_pool = live();
    let started = Instant::now();
    let mut made = 0;
    while made < keys {
        let count = (keys - made).min(1024);
        bench.apply(
            Actor::System,
            None,
            Command::GeneratePoolKeys { keys: pool_batch(made, count) },
        );
        made += count;
    }
    let pool_secs = started.elapsed().as_secs_f64();
    let pool_bytes = live() - before_pool;

    let started = Instant::now();
    let mut units: Vec<DataUnitId> = Vec::with_capacity(keys as usize);
    let before_units = live();
    for n in 0..keys {
        let drive = Actor::Agent(format!("drive{:03}", n as usize % DRIVES));
        let Reply::DataUnitCreated { data_unit } = bench.apply(
            drive,
            None,
            Command::CreateDataUnit { external_tag: format!("V{:05}", n % 100_000) },
        ) else {
            panic!("expected a data unit")
        };
        units.push(data_unit);
    }
    let unit_bytes = live() - before_units - units.capacity() * std::mem::size_of::<DataUnitId>();
    let unit_secs = started.elapsed().as_secs_f64();

    let drives: Vec<Actor> = (0..DRIVES).map(|d| Actor::Agent(format!("drive{d:03}"))).collect();
    let before_assign = live();
    let started = Instant::now();
    for (n, data_unit) in units.iter().enumerate() {
        let drive = drives[n % DRIVES].clone();
        let request_id = Some(RequestId { client: (n % DRIVES) as u64, seq: (n / DRIVES) as u64 });
        bench.apply(
            drive,
            request_id,
            Command::AssignWriteKey { data_unit: *data_unit, from_bot: true },
        );
    }
    let assign_secs = started.elapsed().as_secs_f64();
    let assign_bytes = live().saturating_sub(before_assign);

    let per_key = (pool_bytes + assign_bytes) as f64 / keys as f64;
    let per_unit = unit_bytes as f64 / keys as f64;
    println!("statemachine apply bench: {keys} keys, {keys} data units, {DRIVES} drives, one core");
    println!("| phase | commands | commands/s | memory |");
    println!("|---|---:|---:|---|");
    println!(
        "| generate pool (1024 keys/command) | {} | {:.0} | {:.0} B per pool key |",
        keys.div_ceil(1024),
        keys.div_ceil(1024) as f64 / pool_secs,
        pool_bytes as f64 / keys as f64
    );
    println!(
        "| create data unit | {keys} | {:.0} | {per_unit:.0} B per data unit |",
        keys as f64 / unit_secs
    );
    println!(
        "| assign write key (from BOT) | {keys} | {:.0} | {per_key:.0} B per assigned key |",
        keys as f64 / assign_secs
    );
    println!(
        "targets: >= 200000 assignments/s (got {:.0}); <= 400 B per key (got {per_key:.0})",
        keys as f64 / assign_secs
    );
}
