//! The admin workload of a chaos run (issue 20 point 2): what officers do to a cluster while
//! its drives write, recorded as a history of register operations for [`crate::linearizable`].
//!
//! Every kind of change the issue names has registers of its own, each read back by a
//! linearizable read (`consistency=linearizable`) through a KMA chosen at random:
//! - `user:<name>`: users created and deleted (compare-and-set: a creation of an existing user,
//!   or a deletion of a missing one, is refused by the state machine);
//! - `group:<name>`: key groups created and deleted, the same way;
//! - `policy:<name>`: key policies created, their export and import flags changed (a write:
//!   the flags are set whatever they were), deleted;
//! - `key:<id>`: keys compromised (a write: compromising a compromised key changes nothing) and
//!   destroyed (compare-and-set from compromised: a destroy of a key that is not compromised is
//!   refused). The keys are the workload's own: a drive `chaos-keys` takes each for a data unit
//!   of its own, so no fleet's tape loses its key;
//! - `quorum:<id>`: quorum operations (enable autonomous unlock of kma1, which it has: the
//!   approval changes nothing a fault depends on) started, then approved by the quorum member or
//!   cancelled; either closes it, and a second try is refused.
//!
//! A call whose answer did not come back is recorded with an unknown outcome; a refusal that
//! says nothing of the register (e.g. no leader) is left out. Names come in generations, so that
//! each register's history stays short (the search is exponential in the worst case), and a
//! generation's policies and groups are deleted when the next begins.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_gateway::AgentClient;
use node::client::KmaClient;
use node::transport::wire::ProposeResponse;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statemachine::quorum::QuorumOperation;
use statemachine::{Command, KeyId, Reject, Reply, Role, RoleSet};

use crate::linearizable::{Call, Operation, Outcome};

/// Users, groups and policies per generation, and keys taken per generation.
const USERS: usize = 4;
const GROUPS: usize = 3;
const POLICIES: usize = 2;
const KEYS: usize = 3;
/// Operations on one generation before the next.
const OPS_PER_GENERATION: usize = 120;
const PAUSE: Duration = Duration::from_millis(150);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough that no operation of a run expires while it waits.
const QUORUM_TTL_MS: u64 = 3_600_000;
/// The policy every group of the workload uses (made by the run's set-up, never deleted).
pub const GROUP_POLICY: &str = "chaos";
const DAY_MS: u64 = 86_400_000;
const PRESENT: &str = "exists";
const COMPROMISED: &str = "compromised";
const DESTROYED: &str = "destroyed";
const CLOSED: &str = "closed";
/// The quorum operation the workload starts: harmless, kma1 unlocks autonomously already, and
/// the nemesis never deletes kma1.
const QUORUM_TARGET: &str = "kma1";

/// What the workload needs besides the officer's session.
pub struct AdminSetup {
    /// The KMAs' management addresses.
    pub addresses: Vec<String>,
    /// The drive `chaos-keys`: takes the keys the workload compromises and destroys.
    pub keys_agent: AgentClient,
    /// A quorum member and its passphrase (the compose cluster's quickstart secrets).
    pub quorum_member: (String, String),
}

/// What the workload recorded.
#[derive(Default)]
pub struct AdminHistory {
    /// Every register starts absent: a user, group or policy not yet created, a key active, a
    /// quorum operation pending.
    pub operations: Vec<Operation>,
}

impl AdminHistory {
    /// Operations by register kind (`user`, `group`, `policy`, `key`, `quorum`).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for operation in &self.operations {
            let kind = operation.key.split(':').next().unwrap_or_default();
            *counts.entry(format!("admin operations: {kind}")).or_default() += 1;
        }
        counts
    }
}

/// One generation's names and keys.
#[derive(Default)]
struct Generation {
    users: Vec<String>,
    groups: Vec<String>,
    policies: Vec<String>,
    /// Keys taken, with whether a compromise was acknowledged (a destroy is tried only then).
    keys: Vec<(KeyId, bool)>,
    /// Quorum operations whose start was acknowledged.
    quorum: Vec<u64>,
}

struct Workload {
    admin: KmaClient,
    setup: AdminSetup,
    epoch: Instant,
    rng: StdRng,
    history: AdminHistory,
    generation: Generation,
}

/// Runs until `stop`, one call at a time; each call is its own process in the history (a call
/// with an unknown outcome may still take effect after the next one started).
pub async fn run(
    admin: KmaClient,
    setup: AdminSetup,
    seed: u64,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> AdminHistory {
    let mut workload = Workload {
        admin,
        setup,
        epoch,
        rng: StdRng::seed_from_u64(seed ^ 0xad31_0000),
        history: AdminHistory::default(),
        generation: Generation::default(),
    };
    let mut calls = 0usize;
    while !stop.load(Ordering::SeqCst) {
        if calls % OPS_PER_GENERATION == 0 {
            workload.next_generation(calls / OPS_PER_GENERATION).await;
        }
        calls += 1;
        workload.step().await;
        tokio::time::sleep(PAUSE).await;
    }
    let mut history = workload.history;
    for (process, operation) in history.operations.iter_mut().enumerate() {
        operation.process = process as u64;
    }
    history
}

impl Workload {
    fn address(&mut self) -> String {
        let n = self.rng.gen_range(0..self.setup.addresses.len());
        self.setup.addresses[n].clone()
    }

    fn now(&self) -> u64 {
        since(self.epoch, Instant::now())
    }

    fn pick(&mut self, names: &[String]) -> Option<String> {
        (!names.is_empty()).then(|| names[self.rng.gen_range(0..names.len())].clone())
    }

    /// Deletes the last generation's policies and groups (recorded), then names the next.
    async fn next_generation(&mut self, generation: usize) {
        let old = std::mem::take(&mut self.generation);
        for group in &old.groups {
            self.group_write(group, false).await;
        }
        for policy in &old.policies {
            self.policy_delete(policy).await;
        }
        self.cancel_strays().await;
        let names = |what: &str, count: usize| -> Vec<String> {
            (0..count).map(|n| format!("chaos-g{generation}-{what}{n}")).collect()
        };
        self.generation.users = names("u", USERS);
        self.generation.groups = names("k", GROUPS);
        self.generation.policies = names("p", POLICIES);
        let policies = self.generation.policies.clone();
        for policy in &policies {
            self.policy_create(policy).await;
        }
    }

    async fn step(&mut self) {
        let roll = self.rng.gen_range(0..20);
        match roll {
            0..=3 => {
                let Some(user) = self.pick(&self.generation.users.clone()) else { return };
                let create = self.rng.gen_bool(0.5);
                self.user_write(&user, create).await;
            }
            4..=6 => {
                let Some(group) = self.pick(&self.generation.groups.clone()) else { return };
                let create = self.rng.gen_bool(0.5);
                self.group_write(&group, create).await;
            }
            7..=8 => {
                let Some(policy) = self.pick(&self.generation.policies.clone()) else { return };
                self.policy_flags(&policy).await;
            }
            9..=10 => self.key_step().await,
            11..=12 => self.quorum_step().await,
            13..=14 => self.read_users().await,
            15 => self.read_groups().await,
            16 => self.read_policies().await,
            17..=18 => self.read_keys().await,
            _ => self.read_quorum().await,
        }
    }

    /// Proposes `command`, records it on `register` as `call`; `failed` says which refusals
    /// mean that the call observed the register and did not take effect. Returns the reply.
    async fn propose(
        &mut self,
        register: String,
        call: Call,
        command: Command,
        passphrase: Option<&str>,
        failed: fn(&Reject) -> bool,
    ) -> Option<Reply> {
        let address = self.address();
        let invoked_at = self.now();
        let proposed = self.admin.propose_with_passphrase(&address, None, command, passphrase);
        let answer = tokio::time::timeout(CALL_TIMEOUT, proposed).await;
        let answer = match answer {
            Ok(Ok(response)) => Some(response),
            _ => None,
        };
        self.record(register, call, invoked_at, answer, failed)
    }

    fn record(
        &mut self,
        register: String,
        call: Call,
        invoked_at: u64,
        answer: Option<ProposeResponse>,
        failed: fn(&Reject) -> bool,
    ) -> Option<Reply> {
        let returned = Some(self.now());
        let (outcome, returned_at, reply) = match answer {
            Some(Ok(applied)) => match applied.result {
                Ok(reply) => (Outcome::Ok, returned, Some(reply)),
                Err(reject) if failed(&reject) => (Outcome::Failed, returned, None),
                // Refused for a reason that says nothing of the register.
                Err(_) => return None,
            },
            // Not answered from the log: "not committed in time" may still be applied, so
            // every such refusal is an unknown outcome.
            Some(Err(_)) | None => (Outcome::Unknown, None, None),
        };
        self.history.operations.push(Operation {
            process: 0,
            invoked_at,
            returned_at,
            key: register,
            call,
            outcome,
        });
        reply
    }

    async fn user_write(&mut self, user: &str, create: bool) {
        let (command, call) = if create {
            let command = Command::CreateUser {
                id: user.into(),
                roles: RoleSet::of(Role::Auditor),
                passphrase_verifier: Vec::new(),
            };
            (command, Call::CompareAndSet { expected: None, new: Some(PRESENT.into()) })
        } else {
            let command = Command::DeleteUser { id: user.into() };
            (command, Call::CompareAndSet { expected: Some(PRESENT.into()), new: None })
        };
        let passphrase = create.then_some("chaos-user-passphrase");
        let failed = |reject: &Reject| {
            matches!(reject, Reject::UserExists { .. } | Reject::UnknownUser { .. })
        };
        self.propose(format!("user:{user}"), call, command, passphrase, failed).await;
    }

    async fn group_write(&mut self, group: &str, create: bool) {
        let (command, call) = if create {
            let command =
                Command::CreateKeyGroup { name: group.into(), policy: GROUP_POLICY.into() };
            (command, Call::CompareAndSet { expected: None, new: Some(PRESENT.into()) })
        } else {
            let command = Command::DeleteKeyGroup { name: group.into() };
            (command, Call::CompareAndSet { expected: Some(PRESENT.into()), new: None })
        };
        let failed = |reject: &Reject| {
            matches!(reject, Reject::GroupExists { .. } | Reject::UnknownGroup { .. })
        };
        self.propose(format!("group:{group}"), call, command, None, failed).await;
    }

    async fn policy_create(&mut self, policy: &str) {
        let command = Command::CreateKeyPolicy {
            name: policy.into(),
            encryption_period_ms: DAY_MS,
            cryptoperiod_ms: 2 * DAY_MS,
            allow_export: false,
            allow_import: false,
        };
        let call = Call::CompareAndSet { expected: None, new: Some(flags(false, false)) };
        let failed = |reject: &Reject| matches!(reject, Reject::PolicyExists { .. });
        self.propose(format!("policy:{policy}"), call, command, None, failed).await;
    }

    /// A write: the flags are set whatever they were. Refused when the policy is missing, which
    /// the register model takes as "no effect".
    async fn policy_flags(&mut self, policy: &str) {
        let (allow_export, allow_import) = (self.rng.gen_bool(0.5), self.rng.gen_bool(0.5));
        let command =
            Command::SetKeyPolicyFlags { name: policy.into(), allow_export, allow_import };
        let call = Call::Write(Some(flags(allow_export, allow_import)));
        let failed = |reject: &Reject| matches!(reject, Reject::UnknownPolicy { .. });
        self.propose(format!("policy:{policy}"), call, command, None, failed).await;
    }

    async fn policy_delete(&mut self, policy: &str) {
        let command = Command::DeleteKeyPolicy { name: policy.into() };
        let failed = |reject: &Reject| matches!(reject, Reject::UnknownPolicy { .. });
        self.propose(format!("policy:{policy}"), Call::Write(None), command, None, failed).await;
    }

    /// Takes a key while the generation has fewer than [`KEYS`]; otherwise compromises one not
    /// yet compromised, or destroys one whose compromise was acknowledged.
    async fn key_step(&mut self) {
        if self.generation.keys.len() < KEYS {
            self.take_key().await;
            return;
        }
        let n = self.rng.gen_range(0..self.generation.keys.len());
        let (key, compromised) = self.generation.keys[n];
        let register = format!("key:{key}");
        if compromised {
            let command = Command::DestroyKeys { keys: vec![key] };
            let call = Call::CompareAndSet {
                expected: Some(COMPROMISED.into()),
                new: Some(DESTROYED.into()),
            };
            let failed = |reject: &Reject| {
                matches!(reject, Reject::DestroyNeedsDeactivatedOrCompromised { .. })
            };
            self.propose(register, call, command, None, failed).await;
        } else {
            // Never after a destroy was tried: compromising a destroyed key leaves it
            // destroyed, which a plain write would not say.
            let command = Command::CompromiseKeys { keys: vec![key] };
            let call = Call::Write(Some(COMPROMISED.into()));
            let done = self.propose(register, call, command, None, |_| false).await;
            if done.is_some() {
                self.generation.keys[n].1 = true;
            }
        }
    }

    /// A data unit of `chaos-keys` and its write key: an active key the workload owns. Not an
    /// operation of the history (the drives' checks cover hand-outs).
    async fn take_key(&mut self) {
        let tag = format!("ADM{:05}", self.rng.gen_range(0..100_000u32));
        let taken = async {
            let created = self.setup.keys_agent.create_data_unit(&tag).await.ok()?;
            self.setup.keys_agent.write_key(created.data_unit, true).await.ok()
        };
        if let Ok(Some(write)) = tokio::time::timeout(CALL_TIMEOUT, taken).await {
            self.generation.keys.push((write.key.key_id, false));
        }
    }

    /// Starts a quorum operation while the generation has none open; otherwise approves or
    /// cancels one of its operations (once closed, a second try is refused).
    async fn quorum_step(&mut self) {
        if self.generation.quorum.is_empty() || self.rng.gen_range(0..4) == 0 {
            self.quorum_start().await;
            return;
        }
        let Some(&id) = self.pick_quorum() else { return };
        let register = format!("quorum:{id}");
        let call = Call::CompareAndSet { expected: None, new: Some(CLOSED.into()) };
        let unknown = |reject: &Reject| matches!(reject, Reject::UnknownQuorumOperation { .. });
        if self.rng.gen_bool(0.5) {
            let command = Command::CancelQuorumOperation { id };
            self.propose(register, call, command, None, unknown).await;
            return;
        }
        let address = self.address();
        let (member, passphrase) = self.setup.quorum_member.clone();
        let invoked_at = self.now();
        let approve = self.admin.approve(&address, id, &member, &passphrase, 0);
        // An error the client could not read as an answer may hide an approval that was
        // applied: an unknown outcome, like a timeout.
        let answer = match tokio::time::timeout(CALL_TIMEOUT, approve).await {
            Ok(Ok(response)) => Some(response),
            Ok(Err(_)) | Err(_) => None,
        };
        self.record(register, call, invoked_at, answer, unknown);
    }

    fn pick_quorum(&mut self) -> Option<&u64> {
        let n = self.rng.gen_range(0..self.generation.quorum.len().max(1));
        self.generation.quorum.get(n)
    }

    /// Not an operation of the history: the register exists once the start's answer names it.
    async fn quorum_start(&mut self) {
        let operation = QuorumOperation::EnableAutonomousUnlock { kma: QUORUM_TARGET.into() };
        let command = Command::StartQuorumOperation { operation, ttl_ms: Some(QUORUM_TTL_MS) };
        let address = self.address();
        let proposed = self.admin.propose(&address, None, command);
        if let Ok(Ok(Ok(applied))) = tokio::time::timeout(CALL_TIMEOUT, proposed).await {
            if let Ok(Reply::QuorumOperationStarted { id, .. }) = applied.result {
                self.generation.quorum.push(id);
            }
        }
    }

    /// Cancels the workload's operations whose start had no answer, so they never pile up
    /// against the cluster's limit of pending operations (the membership fault needs one).
    async fn cancel_strays(&mut self) {
        let address = self.address();
        let path = "/v1/quorum";
        let read = self.admin.read_json::<admin_api::api::QuorumView>(&address, path);
        let Ok(Ok(view)) = tokio::time::timeout(CALL_TIMEOUT, read).await else { return };
        let ours = format!("enable-autonomous-unlock {QUORUM_TARGET}");
        for pending in view.pending.iter().filter(|p| p.operation == ours) {
            let command = Command::CancelQuorumOperation { id: pending.id };
            let _ = tokio::time::timeout(CALL_TIMEOUT, self.admin.propose(&address, None, command))
                .await;
        }
    }

    /// One linearizable read, tried on the KMAs from one chosen at random until one answers (only
    /// the leader does: a follower refuses, retryably); `seen` gives each register's value from
    /// the answer. Only the attempt that answered is recorded, with its own times: a refused or
    /// lost read constrains nothing.
    async fn read<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        registers: Vec<String>,
        seen: impl Fn(&T, &str) -> Option<String>,
    ) {
        let path = format!("{path}{}consistency=linearizable", separator(path));
        let first = self.rng.gen_range(0..self.setup.addresses.len());
        let mut answered = None;
        for n in 0..self.setup.addresses.len() {
            let address = &self.setup.addresses[(first + n) % self.setup.addresses.len()];
            let invoked_at = self.now();
            let read = self.admin.read_json::<T>(address, &path);
            if let Ok(Ok(answer)) = tokio::time::timeout(CALL_TIMEOUT, read).await {
                answered = Some((invoked_at, answer));
                break;
            }
        }
        let Some((invoked_at, answer)) = answered else { return };
        let returned_at = Some(self.now());
        for register in registers {
            let name = register.split_once(':').map_or("", |(_, name)| name);
            let value = seen(&answer, name);
            self.history.operations.push(Operation {
                process: 0,
                invoked_at,
                returned_at,
                key: register,
                call: Call::Read,
                outcome: Outcome::ReadOk(value),
            });
        }
    }

    async fn read_users(&mut self) {
        let registers = self.generation.users.iter().map(|u| format!("user:{u}")).collect();
        self.read("/v1/users", registers, |users: &Vec<admin_api::api::User>, name| {
            users.iter().any(|user| user.id == name).then(|| PRESENT.to_string())
        })
        .await;
    }

    async fn read_groups(&mut self) {
        let registers = self.generation.groups.iter().map(|g| format!("group:{g}")).collect();
        self.read("/v1/groups", registers, |groups: &Vec<admin_api::api::KeyGroup>, name| {
            groups.iter().any(|group| group.name == name).then(|| PRESENT.to_string())
        })
        .await;
    }

    async fn read_policies(&mut self) {
        let registers = self.generation.policies.iter().map(|p| format!("policy:{p}")).collect();
        self.read("/v1/policies", registers, |policies: &Vec<admin_api::api::KeyPolicy>, name| {
            let policy = policies.iter().find(|policy| policy.name == name)?;
            Some(flags(policy.allow_export, policy.allow_import))
        })
        .await;
    }

    /// Each key on its own: a key is read by its ID.
    async fn read_keys(&mut self) {
        let Some(&(key, _)) = self.generation.keys.get(self.rng.gen_range(0..KEYS)) else {
            return;
        };
        let path = format!("/v1/keys/{key}");
        self.read(&path, vec![format!("key:{key}")], |key: &admin_api::api::Key, _| {
            if key.destroyed_at_ms.is_some() {
                Some(DESTROYED.to_string())
            } else {
                key.compromised_at_ms.map(|_| COMPROMISED.to_string())
            }
        })
        .await;
    }

    /// The generation's operations whose start returned before this read was invoked: pending
    /// while listed, closed once not.
    async fn read_quorum(&mut self) {
        let registers = self.generation.quorum.iter().map(|id| format!("quorum:{id}")).collect();
        self.read("/v1/quorum", registers, |view: &admin_api::api::QuorumView, name| {
            let listed = view.pending.iter().any(|pending| pending.id.to_string() == name);
            (!listed).then(|| CLOSED.to_string())
        })
        .await;
    }
}

fn flags(allow_export: bool, allow_import: bool) -> String {
    format!("export={allow_export} import={allow_import}")
}

fn separator(path: &str) -> char {
    if path.contains('?') {
        '&'
    } else {
        '?'
    }
}

pub fn since(epoch: Instant, instant: Instant) -> u64 {
    u64::try_from(instant.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}
