//! A test cluster: a `State` plus a log index and a clock the test moves by hand (STYLE 17:
//! time advances through `time_ms`, never by sleeping).
#![allow(dead_code)]

mod samples;
#[allow(unused_imports)] // Not every test binary uses the samples.
pub use samples::{kmip_sample_attributes, kmip_sample_key, restore_of_kma9, samples, stage_for};

use statemachine::command::{InitCluster, NewKey};
use statemachine::key::{KeyCheckValue, WrappedKey};
use statemachine::quorum::{Quorum, QuorumMember, QuorumOperation};
use statemachine::*;

pub const SECOND_MS: u64 = 1_000;
pub const DAY_MS: u64 = 86_400_000;
pub const WEEK_MS: u64 = 7 * DAY_MS;
pub const YEAR_MS: u64 = 365 * DAY_MS;
/// 2026-01-01T00:00:00Z: tests start at a realistic wall-clock time.
pub const START_MS: u64 = 1_767_225_600_000;
pub const CLUSTER: ClusterId = ClusterId(0x00c1_a55e_7000_0001);

pub struct TestCluster {
    pub state: State,
    pub index: u64,
    pub now_ms: u64,
    pub last: Option<Applied>,
    /// The state before the last applied entry, to see what it changed.
    pub before_last: Option<State>,
    /// Every entry applied so far, in log order (index = position + 1).
    pub log: Vec<Envelope>,
    key_counter: u64,
}

pub fn so() -> Actor {
    Actor::User("so".into())
}
pub fn co() -> Actor {
    Actor::User("co".into())
}
pub fn op() -> Actor {
    Actor::User("op".into())
}
pub fn bo() -> Actor {
    Actor::User("bo".into())
}
pub fn auditor() -> Actor {
    Actor::User("au".into())
}
pub fn agent(id: &str) -> Actor {
    Actor::Agent(id.into())
}

/// A stand-in for AES-GCM wrapping: unit tests need distinct, recognisable bytes, not secrecy.
pub fn fake_wrap(value: [u8; 32]) -> WrappedKey {
    WrappedKey { nonce: [7; 12], ciphertext: value, tag: [9; 16] }
}

pub fn quorum(members: usize, threshold: u8) -> Quorum {
    Quorum {
        members: (1..=members)
            .map(|n| QuorumMember { id: format!("q{n}"), wrapped_share: vec![n as u8; 48] })
            .collect(),
        threshold,
    }
}

impl TestCluster {
    /// A single KMA, its Security Officer `so`, and users `co`, `op`, `bo`, `au` with one role
    /// each.
    /// A state before the quickstart: no cluster yet.
    pub fn blank() -> Self {
        TestCluster {
            state: State::new(),
            index: 0,
            now_ms: START_MS,
            last: None,
            before_last: None,
            log: Vec::new(),
            key_counter: 0,
        }
    }

    pub fn single() -> Self {
        let mut cluster = TestCluster::blank();
        let init = InitCluster {
            cluster_id: CLUSTER,
            kma_name: "kma1".into(),
            site: "east".into(),
            security_officer: "so".into(),
            security_officer_verifier: vec![1; 32],
            quorum: quorum(3, 2),
            autonomous_unlock: false,
        };
        cluster.ok(Actor::System, Command::InitCluster(init));
        for (id, role) in [
            ("co", Role::ComplianceOfficer),
            ("op", Role::Operator),
            ("bo", Role::BackupOperator),
            ("au", Role::Auditor),
        ] {
            let roles = RoleSet::of(role);
            cluster.ok(
                so(),
                Command::CreateUser { id: id.into(), roles, passphrase_verifier: vec![2; 32] },
            );
        }
        cluster
    }

    /// Two KMAs: the second joined through a quorum operation approved by two members.
    pub fn multi() -> Self {
        let mut cluster = TestCluster::single();
        cluster.join_kma("kma2", "east");
        cluster
    }

    pub fn join_kma(&mut self, name: &str, site: &str) {
        self.ok(
            so(),
            Command::CreateKma {
                name: name.into(),
                site: site.into(),
                passphrase_verifier: vec![3; 32],
            },
        );
        let operation = QuorumOperation::JoinKma { kma: name.into() };
        let Reply::QuorumOperationStarted { id, .. } =
            self.ok(so(), Command::StartQuorumOperation { operation, ttl_ms: None })
        else {
            panic!("expected a started quorum operation");
        };
        self.ok(so(), Command::ApproveQuorumOperation { id, member: "q1".into() });
        self.ok(so(), Command::ApproveQuorumOperation { id, member: "q2".into() });
        self.ok(Actor::System, Command::KmaJoined { name: name.into() });
    }

    /// An independent copy to try a command on.
    pub fn fork(&self) -> TestCluster {
        TestCluster {
            state: self.state.clone(),
            index: self.index,
            now_ms: self.now_ms,
            last: None,
            before_last: None,
            log: self.log.clone(),
            key_counter: self.key_counter,
        }
    }

    pub fn envelope(&self, actor: Actor, command: Command) -> Envelope {
        Envelope { time_ms: self.now_ms, origin_node_id: 1, actor, request_id: None, command }
    }

    pub fn apply_envelope(&mut self, envelope: &Envelope) -> Applied {
        self.index += 1;
        self.log.push(envelope.clone());
        self.before_last = Some(self.state.clone());
        let applied = self.state.apply(self.index, envelope);
        self.state.check_invariants();
        self.last = Some(applied.clone());
        applied
    }

    /// Applies a command that KMA `origin_node_id` accepted (the others come through node 1).
    pub fn apply_from(
        &mut self,
        origin_node_id: NodeId,
        actor: Actor,
        command: Command,
    ) -> Result<Reply, Reject> {
        let mut envelope = self.envelope(actor, command);
        envelope.origin_node_id = origin_node_id;
        self.apply_envelope(&envelope).result
    }

    /// Each named KMA reports, with the format-1 command, that it reads log format `log`.
    pub fn report_log_format(&mut self, kmas: &[&str], log: u16) {
        for kma in kmas {
            let version = u32::from(log);
            self.ok(Actor::System, Command::ReportSoftwareVersion { kma: (*kma).into(), version });
        }
    }

    /// Every KMA that applies the log reports log format `log` (format-1 reports), so that the
    /// rules of that format apply: [`statemachine::format::LOG_FORMAT_MAX`] is what a cluster
    /// of this software runs at.
    pub fn open_format(&mut self, log: u16) {
        let kmas: Vec<String> = self
            .state
            .meta()
            .kmas
            .values()
            .filter(|kma| kma.applies_the_log())
            .map(|kma| kma.name.clone())
            .collect();
        let names: Vec<&str> = kmas.iter().map(String::as_str).collect();
        self.report_log_format(&names, log);
        assert_eq!(self.state.cluster_format_version(), log, "every KMA reported");
    }

    pub fn apply(&mut self, actor: Actor, command: Command) -> Result<Reply, Reject> {
        let envelope = self.envelope(actor, command);
        self.apply_envelope(&envelope).result
    }

    /// Applies and insists on success, naming the rejection otherwise.
    #[track_caller]
    pub fn ok(&mut self, actor: Actor, command: Command) -> Reply {
        let kind = command.kind();
        match self.apply(actor, command) {
            Ok(reply) => reply,
            Err(reject) => panic!("{kind:?} was rejected: {reject} ({reject:?})"),
        }
    }

    /// The audit events of the last applied entry, without its leading command record.
    pub fn last_events(&self) -> Vec<AuditWhat> {
        let applied = self.last.as_ref().expect("something was applied");
        applied.events.iter().skip(1).map(|event| event.what.clone()).collect()
    }

    pub fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    pub fn pulse(&mut self) -> Vec<AuditWhat> {
        self.ok(Actor::System, Command::Pulse);
        self.last_events()
    }

    pub fn new_key(&mut self) -> NewKey {
        self.key_counter += 1;
        let mut random = [0u8; 22];
        random[14..].copy_from_slice(&self.key_counter.to_be_bytes());
        let mut value = [0u8; 32];
        value[..8].copy_from_slice(&self.key_counter.to_be_bytes());
        NewKey {
            id: KeyId::native(CLUSTER, random),
            material: fake_wrap(value),
            check_value: KeyCheckValue([self.key_counter as u8; 16]),
        }
    }

    pub fn fill_pool(&mut self, count: usize) -> Vec<KeyId> {
        let keys: Vec<NewKey> = (0..count).map(|_| self.new_key()).collect();
        let ids = keys.iter().map(|key| key.id).collect();
        self.ok(Actor::System, Command::GeneratePoolKeys { keys });
        ids
    }

    /// A policy and a group of the same name.
    pub fn policy_and_group(
        &mut self,
        name: &str,
        encryption_period_ms: u64,
        cryptoperiod_ms: u64,
    ) {
        self.ok(
            co(),
            Command::CreateKeyPolicy {
                name: name.into(),
                encryption_period_ms,
                cryptoperiod_ms,
                allow_export: true,
                allow_import: true,
            },
        );
        self.ok(co(), Command::CreateKeyGroup { name: name.into(), policy: name.into() });
    }

    /// An enrolled agent at site `east` with access to `groups`; the first is its default.
    pub fn enrolled_agent(&mut self, id: &str, groups: &[&str]) {
        self.ok(
            op(),
            Command::CreateAgent {
                id: id.into(),
                site: "east".into(),
                passphrase_verifier: vec![4; 32],
            },
        );
        for group in groups {
            self.ok(
                co(),
                Command::AssignKeyGroupToAgent { agent: id.into(), group: (*group).into() },
            );
        }
        self.ok(
            Actor::System,
            Command::RecordAgentEnrollment { id: id.into(), certificate_fingerprint: [5; 32] },
        );
    }

    pub fn create_data_unit(&mut self, agent_id: &str, tag: &str) -> DataUnitId {
        match self.ok(agent(agent_id), Command::CreateDataUnit { external_tag: tag.into() }) {
            Reply::DataUnitCreated { data_unit } => data_unit,
            other => panic!("expected a data unit, got {other:?}"),
        }
    }

    /// Asks for a write key; returns (key, reused).
    #[track_caller]
    pub fn write_key(
        &mut self,
        agent_id: &str,
        data_unit: DataUnitId,
        from_bot: bool,
    ) -> (KeyId, bool) {
        match self.ok(agent(agent_id), Command::AssignWriteKey { data_unit, from_bot }) {
            Reply::WriteKey { key_id, reused, .. } => (key_id, reused),
            other => panic!("expected a write key, got {other:?}"),
        }
    }

    pub fn key_state(&self, key_id: &KeyId) -> KeyState {
        self.state.key_state(key_id, self.now_ms).expect("key exists")
    }

    pub fn unit_state(&self, data_unit: &DataUnitId) -> DataUnitState {
        self.state.data_unit_state(data_unit, self.now_ms).expect("data unit exists")
    }

    /// The IDs of the keys a drive gets when it mounts the data unit.
    pub fn mount(&self, agent_id: &str, data_unit: &DataUnitId) -> Vec<KeyId> {
        let keys = self.state.keys_for_data_unit(agent_id, data_unit, self.now_ms).expect("mount");
        keys.into_iter().map(|key| key.key_id).collect()
    }

    pub fn snapshot(&self) -> Vec<u8> {
        statemachine::codec::encode_snapshot(&self.state)
    }

    /// The KMA software records the cluster CA's key, wrapped, for the CA certificate
    /// [`ca_certificate_der`]`(0xca)` (the cluster at log format 3).
    pub fn record_ca_key(&mut self) {
        let ca_certificate_sha256 = sha256(&ca_certificate_der(0xca));
        let record = Command::RecordCaKey { ca_certificate_sha256, wrapped_key: vec![0x35; 96] };
        self.ok(Actor::System, record);
    }

    /// The Security Officer starts a CA rotation and the first members of the quorum, as many
    /// as its threshold, approve it; returns the operation's ID.
    pub fn approve_ca_rotation(&mut self) -> u64 {
        let start =
            Command::StartQuorumOperation { operation: QuorumOperation::RotateCa, ttl_ms: None };
        let Reply::QuorumOperationStarted { id, .. } = self.ok(so(), start) else {
            panic!("expected a started quorum operation");
        };
        let quorum = self.state.meta().quorum.clone();
        for member in quorum.members.iter().take(usize::from(quorum.threshold)) {
            self.ok(so(), Command::ApproveQuorumOperation { id, member: member.id.clone() });
        }
        assert!(self.state.ca_rotation().is_some(), "the rotation is approved");
        id
    }

    /// The KMAs that apply the log, as (name, node ID).
    pub fn kmas_applying_the_log(&self) -> Vec<(String, NodeId)> {
        let kmas = self.state.meta().kmas.values().filter(|kma| kma.applies_the_log());
        kmas.map(|kma| (kma.name.clone(), kma.node_id)).collect()
    }

    /// Every KMA that applies the log records, through its own node, the certificate it
    /// reissued itself under the new CA: [`reissued_certificate`] of its node ID.
    pub fn reissue_every_kma(&mut self) {
        for (name, node_id) in self.kmas_applying_the_log() {
            let certificate_sha256 = reissued_certificate(node_id);
            let record = Command::RecordReissuedKmaCertificate { name, certificate_sha256 };
            self.apply_from(node_id, Actor::System, record).expect("its own certificate");
        }
    }

    /// After a CA rotation completed, every KMA that applies the log records, through its own
    /// node, that it adopted the new CA: the last one retires the old CA.
    pub fn adopt_every_kma(&mut self) {
        for (name, node_id) in self.kmas_applying_the_log() {
            let record = Command::RecordCaAdopted { name };
            self.apply_from(node_id, Actor::System, record).expect("its own adoption");
        }
        assert!(self.state.retiring_ca().is_none(), "the old CA is retired");
    }
}

/// SHA-256, as a KMA fingerprints a certificate's DER.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// A stand-in for a CA certificate's DER: the state checks its SHA-256 and its length, never
/// its contents.
pub fn ca_certificate_der(byte: u8) -> Vec<u8> {
    vec![byte; 700]
}

/// A KMA begins a CA rotation with the CA certificate [`ca_certificate_der`]`(byte)`, its true
/// fingerprint, and a wrapped key of `byte ^ 0xff`.
pub fn begin_ca_rotation(byte: u8) -> Command {
    let ca_certificate_der = ca_certificate_der(byte);
    Command::BeginCaRotation {
        ca_certificate_sha256: sha256(&ca_certificate_der),
        ca_certificate_der,
        wrapped_key: vec![byte ^ 0xff; 96],
    }
}

/// The certificate the KMA of node `node_id` reissues itself in these tests.
pub fn reissued_certificate(node_id: NodeId) -> [u8; 32] {
    [0xe0 | node_id as u8; 32]
}

/// A standard setup: two KMAs (so keys are Ready at once), a policy/group `std` with the given
/// periods, an enrolled drive `drive1` with `std` as default, and a pool of 50 keys.
pub fn standard(encryption_period_ms: u64, cryptoperiod_ms: u64) -> TestCluster {
    let mut cluster = TestCluster::multi();
    cluster.policy_and_group("std", encryption_period_ms, cryptoperiod_ms);
    cluster.enrolled_agent("drive1", &["std"]);
    cluster.fill_pool(50);
    cluster
}

/// IDs of the objects [`prepared`] makes.
pub struct Fixture {
    /// A tape written by drive1, with its protect-and-process key.
    pub unit: DataUnitId,
    pub key: KeyId,
    /// A second tape whose key a Compliance Officer compromised.
    pub spoiled_unit: DataUnitId,
    pub compromised: KeyId,
    /// An imported 1.x key in `std`, associated with no tape yet.
    pub legacy: KeyId,
    /// A tape with no key.
    pub empty_unit: DataUnitId,
    /// A pending quorum operation (join of `kma3`).
    pub pending: u64,
    /// A database backup record.
    pub backup: u64,
}

/// A cluster with one of everything, so that every command has something to act on.
pub fn prepared() -> (TestCluster, Fixture) {
    let mut cluster = standard(10 * DAY_MS, 54 * WEEK_MS);
    let pending = prepare_kmas_and_partner(&mut cluster);
    prepare_catalog(&mut cluster);
    let fixture = prepare_keys(&mut cluster, pending);
    (cluster, fixture)
}

/// Sites, KMAs `kma3` (created) and `kma5` (join approved), partner `p1`, and a pending join
/// of `kma3`, whose ID is returned.
fn prepare_kmas_and_partner(cluster: &mut TestCluster) -> u64 {
    cluster.ok(so(), Command::CreateSite { name: "empty-site".into() });
    cluster.ok(
        so(),
        Command::CreateKma {
            name: "kma3".into(),
            site: "east".into(),
            passphrase_verifier: vec![3; 32],
        },
    );
    cluster.ok(
        so(),
        Command::CreateKma {
            name: "kma5".into(),
            site: "east".into(),
            passphrase_verifier: vec![3; 32],
        },
    );
    let join5 = QuorumOperation::JoinKma { kma: "kma5".into() };
    let Reply::QuorumOperationStarted { id, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation: join5, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q2".into() });
    let partner =
        QuorumOperation::CreateTransferPartner { name: "p1".into(), public_key: vec![8; 32] };
    let Reply::QuorumOperationStarted { id, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation: partner, ttl_ms: None })
    else {
        panic!("started")
    };
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q1".into() });
    cluster.ok(so(), Command::ApproveQuorumOperation { id, member: "q3".into() });
    cluster.ok(
        so(),
        Command::SetTransferKeyPair { public_key: vec![6; 32], wrapped_private_key: vec![7; 48] },
    );
    cluster.ok(
        co(),
        Command::AssignKeyGroupToPartner {
            partner: "p1".into(),
            group: "std".into(),
            direction: statemachine::command::TransferDirection::Import,
        },
    );
    let join3 = QuorumOperation::JoinKma { kma: "kma3".into() };
    let Reply::QuorumOperationStarted { id: pending, .. } =
        cluster.ok(so(), Command::StartQuorumOperation { operation: join3, ttl_ms: None })
    else {
        panic!("started")
    };
    pending
}

/// Users, policies, groups and agents the commands refer to.
fn prepare_catalog(cluster: &mut TestCluster) {
    cluster.ok(
        so(),
        Command::CreateUser {
            id: "au2".into(),
            roles: RoleSet::of(Role::Auditor),
            passphrase_verifier: vec![2; 32],
        },
    );
    cluster.policy_and_group("second", 10 * DAY_MS, 54 * WEEK_MS);
    cluster.ok(
        co(),
        Command::CreateKeyPolicy {
            name: "unused".into(),
            encryption_period_ms: DAY_MS,
            cryptoperiod_ms: DAY_MS,
            allow_export: false,
            allow_import: false,
        },
    );
    cluster
        .ok(co(), Command::CreateKeyGroup { name: "empty-group".into(), policy: "unused".into() });
    cluster.ok(
        co(),
        Command::AssignKeyGroupToAgent { agent: "drive1".into(), group: "second".into() },
    );
    cluster.ok(
        op(),
        Command::CreateAgent {
            id: "drive8".into(),
            site: "east".into(),
            passphrase_verifier: vec![4; 32],
        },
    );
}

/// Tapes, keys and a backup.
fn prepare_keys(cluster: &mut TestCluster, pending: u64) -> Fixture {
    let unit = cluster.create_data_unit("drive1", "VOL001");
    let (key, _) = cluster.write_key("drive1", unit, true);
    let spoiled_unit = cluster.create_data_unit("drive1", "VOL002");
    let (compromised, _) = cluster.write_key("drive1", spoiled_unit, true);
    cluster.ok(co(), Command::CompromiseKeys { keys: vec![compromised] });
    let legacy = KeyId([0x42; 30]);
    let legacy_key = statemachine::command::Legacy1xKey {
        id: legacy,
        material: fake_wrap([0x11; 32]),
        check_value: KeyCheckValue([0x11; 16]),
        description: String::new(),
    };
    cluster.ok(co(), Command::Import1xKeys { group: "std".into(), keys: vec![legacy_key] });
    let empty_unit = cluster.create_data_unit("drive1", "VOL003");
    let covers_index = cluster.index;
    let record = Command::RecordBackupBeforeFormat3 {
        kind: statemachine::backup::BackupKind::Database,
        kma: "kma1".into(),
        file_name: "b0.kms".into(),
        covers_index,
    };
    let Reply::BackupRecorded { id: backup } = cluster.ok(bo(), record) else { panic!("backup") };
    Fixture { unit, key, spoiled_unit, compromised, legacy, empty_unit, pending, backup }
}

/// What a refusal is meant to change, set back to the values of `before`: the apply stamp
/// (`last_applied_index`, `time_ms_last`), the audit chain (the refusal is audited) and the
/// request-ID table (`sessions`: a refusal is the outcome a retry gets back).
pub fn without_what_a_refusal_changes(after: &State, before: &State) -> State {
    let meta = statemachine::state::Meta {
        last_applied_index: before.meta().last_applied_index,
        time_ms_last: before.meta().time_ms_last,
        audit_chain: before.meta().audit_chain,
        sessions: before.meta().sessions.clone(),
        ..after.meta().clone()
    };
    after.with_meta(meta)
}
