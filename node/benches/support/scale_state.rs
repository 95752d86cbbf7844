//! A KMA's state at scale, built without a cluster, for the benches that measure storage at
//! millions of keys (`backup_restore`, `storage_scale`): pool keys and data units, each data
//! unit with a write key, applied through `State::apply` as a KMA applies committed entries,
//! then made into a real RocksDB data dir by restoring a plain backup stream of it.
//! Included by `#[path]` in those benches only.

// Each bench that includes this module uses a part of it.
#![allow(dead_code)]

use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use raft_storage::backup::{restore_data_dir, write_state_stream, BackupSummary};
use statemachine::cluster::KeyPoolLimits;
use statemachine::command::{InitCluster, NewKey, RestoreCluster};
use statemachine::format::LOG_FORMAT_MAX;
use statemachine::key::{KeyCheckValue, WrappedKey};
use statemachine::limits::KEY_POOL_HIGH_WATER_MAX;
use statemachine::quorum::{Quorum, QuorumMember, QuorumOperation};
use statemachine::{
    Actor, ChainedAuditEvent, ClusterId, Command, DataUnitId, Envelope, KeyId, Reply, RequestId,
    RoleSet, State,
};

pub const CLUSTER: ClusterId = ClusterId(0xb6b6);
pub const DRIVES: usize = 64;
/// 2026-01-01: the state's clock starts here and advances one millisecond per entry.
pub const START_MS: u64 = 1_767_225_600_000;
const POOL_KEYS_PER_COMMAND: u64 = 1024;
/// The drive whose reads are measured (every drive can access the one key group).
pub const READER: &str = "drive000";
/// The restored data dirs' one voter; nothing connects to it.
pub const ADDRESS: &str = "127.0.0.1:1";

/// Applies entries to an in-memory state, as a KMA applies committed ones.
pub struct Builder {
    pub state: State,
    index: u64,
    pub now_ms: u64,
}

impl Builder {
    pub fn apply(
        &mut self,
        actor: Actor,
        request_id: Option<RequestId>,
        command: Command,
    ) -> anyhow::Result<Reply> {
        self.index += 1;
        self.now_ms += 1;
        let index = self.index;
        let envelope =
            Envelope { time_ms: self.now_ms, origin_node_id: 1, actor, request_id, command };
        let applied = self.state.apply(index, &envelope);
        applied.result.map_err(|reject| anyhow!("building the state: entry {index}: {reject}"))
    }

    /// A cluster of two KMAs with a security officer, an administrator, one key policy and
    /// one key group, and a pool that may hold `keys` ready keys.
    pub fn cluster(keys: u64) -> anyhow::Result<Builder> {
        let mut b = Builder { state: State::new(), index: 0, now_ms: START_MS };
        let member = QuorumMember { id: "q1".into(), wrapped_share: vec![1; 48] };
        let init = InitCluster {
            cluster_id: CLUSTER,
            kma_name: "kma1".into(),
            site: "east".into(),
            security_officer: "so".into(),
            security_officer_verifier: vec![1; 32],
            quorum: Quorum { members: vec![member], threshold: 1 },
            autonomous_unlock: false,
        };
        b.apply(Actor::System, None, Command::InitCluster(init))?;
        let so = Actor::User("so".into());
        let roles = RoleSet::ALL;
        let verifier = vec![1; 32];
        b.apply(
            so,
            None,
            Command::CreateUser { id: "admin".into(), roles, passphrase_verifier: verifier },
        )?;
        let admin = Actor::User("admin".into());
        let kma2 = Command::CreateKma {
            name: "kma2".into(),
            site: "east".into(),
            passphrase_verifier: vec![1; 8],
        };
        b.apply(admin.clone(), None, kma2)?;
        let operation = QuorumOperation::JoinKma { kma: "kma2".into() };
        b.apply(admin.clone(), None, Command::StartQuorumOperation { operation, ttl_ms: None })?;
        let approve = Command::ApproveQuorumOperation { id: 0, member: "q1".into() };
        b.apply(admin.clone(), None, approve)?;
        b.apply(Actor::System, None, Command::KmaJoined { name: "kma2".into() })?;
        // The pool holds at most KEY_POOL_HIGH_WATER_MAX keys: a larger state is built in rounds
        // (`build_state`), each filling the pool and handing it out.
        let high_water = u32::try_from(keys).unwrap_or(u32::MAX).clamp(2, KEY_POOL_HIGH_WATER_MAX);
        let limits = KeyPoolLimits { low_water: 1, high_water };
        b.apply(admin.clone(), None, Command::SetKeyPoolLimits(limits))?;
        let year_ms = 365 * 86_400_000;
        let policy = Command::CreateKeyPolicy {
            name: "std".into(),
            encryption_period_ms: year_ms,
            cryptoperiod_ms: 10 * year_ms,
            allow_export: false,
            allow_import: false,
        };
        b.apply(admin.clone(), None, policy)?;
        let group = Command::CreateKeyGroup { name: "std".into(), policy: "std".into() };
        b.apply(admin.clone(), None, group)?;
        b.drives(&admin)?;
        Ok(b)
    }

    /// Enrolled drives, each with access to the key group.
    pub fn drives(&mut self, admin: &Actor) -> anyhow::Result<()> {
        for drive in 0..DRIVES {
            let id = format!("drive{drive:03}");
            let verifier = vec![1; 32];
            let agent = Command::CreateAgent {
                id: id.clone(),
                site: "east".into(),
                passphrase_verifier: verifier,
            };
            self.apply(admin.clone(), None, agent)?;
            let access = Command::AssignKeyGroupToAgent { agent: id.clone(), group: "std".into() };
            self.apply(admin.clone(), None, access)?;
            let enrolled = Command::RecordAgentEnrollment { id, certificate_fingerprint: [2; 32] };
            self.apply(Actor::System, None, enrolled)?;
        }
        Ok(())
    }

    /// `keys` pool keys with made-up wrapped material (the state never opens it).
    /// Pool keys number `first` to `first + keys - 1`.
    pub fn pool(&mut self, first: u64, keys: u64) -> anyhow::Result<()> {
        let mut made = first;
        while made < first + keys {
            let count = (first + keys - made).min(POOL_KEYS_PER_COMMAND);
            let batch = (made..made + count).map(pool_key).collect();
            self.apply(Actor::System, None, Command::GeneratePoolKeys { keys: batch })?;
            made += count;
        }
        Ok(())
    }

    /// `count` data units, each created by a drive and given a write key from the pool.
    /// Data units number `first` to `first + count - 1`.
    pub fn data_units(&mut self, first: u64, count: u64) -> anyhow::Result<Vec<DataUnitId>> {
        let mut units = Vec::with_capacity(usize::try_from(count)?);
        for n in first..first + count {
            let drive = Actor::Agent(format!("drive{:03}", n % DRIVES as u64));
            let create = Command::CreateDataUnit { external_tag: format!("V{:05}", n % 100_000) };
            let Reply::DataUnitCreated { data_unit } = self.apply(drive.clone(), None, create)?
            else {
                bail!("building the state: CreateDataUnit did not answer with a data unit");
            };
            let request_id = Some(RequestId { client: n % DRIVES as u64, seq: n / DRIVES as u64 });
            let assign = Command::AssignWriteKey { data_unit, from_bot: true };
            self.apply(drive, request_id, assign)?;
            units.push(data_unit);
        }
        Ok(units)
    }
}

/// Pool key number `n`, its ID spread as a random one would be.
pub fn pool_key(n: u64) -> NewKey {
    let mut random = [0u8; 22];
    random[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    random[14..].copy_from_slice(&n.to_be_bytes());
    NewKey {
        id: KeyId::native(CLUSTER, random),
        material: WrappedKey { nonce: [3; 12], ciphertext: [4; 32], tag: [5; 16] },
        check_value: KeyCheckValue([6; 16]),
    }
}

/// Builds the state in memory; returns it with its data units and its clock.
pub fn build_state(keys: u64) -> anyhow::Result<(State, Vec<DataUnitId>, u64)> {
    let mut builder = Builder::cluster(keys)?;
    let mut units = Vec::with_capacity(usize::try_from(keys)?);
    let mut made = 0;
    while made < keys {
        let round = (keys - made).min(u64::from(KEY_POOL_HIGH_WATER_MAX));
        builder.pool(made, round)?;
        units.extend(builder.data_units(made, round)?);
        made += round;
    }
    Ok((builder.state, units, builder.now_ms))
}

/// Makes `dir` a data dir holding `state` as its snapshot, through a plain backup stream. The
/// state is dropped once written, so that the restore does not hold it beside its own copy.
pub fn make_data_dir(
    state: State,
    stream_path: &Path,
    dir: &Path,
) -> anyhow::Result<BackupSummary> {
    let file = std::fs::File::create(stream_path)
        .with_context(|| format!("create {}", stream_path.display()))?;
    let (out, summary) = write_state_stream(&state, BufWriter::with_capacity(1 << 20, file))
        .context("write the plain stream")?;
    out.into_inner().map_err(|e| e.into_error()).context("flush the plain stream")?;
    drop(state);
    let file = std::fs::File::open(stream_path)
        .with_context(|| format!("open {}", stream_path.display()))?;
    let input = BufReader::with_capacity(1 << 20, file);
    let uuid = rand::random();
    restore_data_dir(dir, input, ADDRESS, |state, index| {
        restore_cluster(state, index, "kma-a", uuid)
    })
    .context("restore the plain stream into the first data dir")?;
    std::fs::remove_file(stream_path).context("remove the plain stream")?;
    Ok(summary)
}

/// The restore's own command, as `kma restore` applies it (`setup::restore`) with a made-up
/// certificate digest: the state's SHA-256 once more, then `RestoreCluster`, which leaves the
/// state at `index` as the data dir's snapshot says.
pub fn restore_cluster(
    state: &mut State,
    index: u64,
    kma_name: &str,
    backup_uuid: [u8; 16],
) -> Result<(Vec<ChainedAuditEvent>, u64), String> {
    let node_id = state.meta().next_node_id;
    let command = Command::RestoreCluster(RestoreCluster {
        backup_uuid,
        file_name: "bench.kmsdb".into(),
        covers_index: state.last_applied_index(),
        taken_at_ms: START_MS,
        taken_on_kma: "kma1".into(),
        state_sha256: raft_storage::backup::state_sha256(state),
        kma_name: kma_name.into(),
        site: "east".into(),
        node_id,
        certificate_sha256: [7; 32],
        software_version: u32::from(LOG_FORMAT_MAX),
        keys_destroyed_since_backup: Vec::new(),
    });
    let time_ms = state.meta().time_ms_last + 1;
    let envelope = Envelope {
        time_ms,
        origin_node_id: node_id,
        actor: Actor::System,
        request_id: None,
        command,
    };
    let (result, events) = state.apply(index, &envelope).into_chained();
    match result {
        Ok(Reply::ClusterRestored(_)) => Ok((events, node_id)),
        Ok(other) => Err(format!("the restore was answered unexpectedly: {other:?}")),
        Err(reject) => Err(format!("the restore was refused: {reject}")),
    }
}

/// The state's size from `KEYS`, or `default`.
pub fn keys_from_env(default: u64, max: u64) -> anyhow::Result<u64> {
    let keys = match std::env::var("KEYS") {
        Ok(text) => text.parse().with_context(|| format!("KEYS={text:?} is not a number"))?,
        Err(_) => default,
    };
    if !(2..=max).contains(&keys) {
        bail!("KEYS must be from 2 to {max}");
    }
    Ok(keys)
}
