//! The security core through running `kma` processes (SPEC S1–S4, C4, C6): passphrase logins,
//! the role matrix at the admin API, quorum approvals, lock and unlock, cold restarts.

mod support;

use std::time::Duration;

use node::client::KmaClient;
use statemachine::backup::BackupKind;
use statemachine::cluster::{KeyPoolLimits, SecuritySettings};
use statemachine::command::DestroySelection;
use statemachine::quorum::QuorumOperation;
use statemachine::reply::Reply;
use statemachine::{Command, CommandKind, DataUnitId, Issuer, KeyId, Reject, Role, RoleSet};
use support::agents::DAY_MS;
use support::{done_if, no_change, wait_until, Cluster};

const ROLES: [(&str, Role); 5] = [
    ("so-user", Role::SecurityOfficer),
    ("co-user", Role::ComplianceOfficer),
    ("op-user", Role::Operator),
    ("bo-user", Role::BackupOperator),
    ("au-user", Role::Auditor),
];

fn ca_pem(cluster: &Cluster) -> String {
    node::pki::read(&cluster.nodes[0].data_dir.join("tls/ca.pem")).expect("CA")
}

/// One command of every kind a user may issue through `/v1/propose`, with made-up arguments:
/// whether it is authorised is decided before its arguments are looked at. Approvals and quorum
/// changes have their own endpoints (tested below).
#[allow(clippy::too_many_lines)]
fn user_commands() -> Vec<(Command, Option<&'static str>)> {
    let s = |text: &str| text.to_string();
    let unit = DataUnitId { cluster_id: statemachine::ClusterId(1), serial: 1 };
    let key = KeyId([1; 30]);
    let pass = Some("a-long-enough-passphrase");
    vec![
        (Command::CreateSite { name: s("site-x") }, None),
        (Command::DeleteSite { name: s("nowhere") }, None),
        (
            Command::CreateKma { name: s("kma-x"), site: s("east"), passphrase_verifier: vec![] },
            pass,
        ),
        (Command::DeleteKma { name: s("nobody") }, None),
        (Command::LockKma { name: s("nobody") }, None),
        (Command::DisableAutonomousUnlock { name: s("nobody") }, None),
        (Command::SetSecuritySettings(SecuritySettings::default()), None),
        (Command::SetKeyPoolLimits(KeyPoolLimits::default()), None),
        (
            Command::CreateUser {
                id: s("new-user"),
                roles: RoleSet::of(Role::Auditor),
                passphrase_verifier: vec![],
            },
            pass,
        ),
        (Command::SetUserRoles { id: s("nobody"), roles: RoleSet::of(Role::Auditor) }, None),
        (Command::SetUserEnabled { id: s("nobody"), enabled: true }, None),
        (Command::SetUserPassphrase { id: s("nobody"), passphrase_verifier: vec![] }, pass),
        (Command::DeleteUser { id: s("nobody") }, None),
        (
            Command::StartQuorumOperation {
                operation: QuorumOperation::JoinKma { kma: s("nobody") },
                ttl_ms: None,
            },
            None,
        ),
        (
            Command::StartQuorumOperation {
                operation: QuorumOperation::UnlockKma { kma: s("nobody") },
                ttl_ms: None,
            },
            None,
        ),
        (
            Command::StartQuorumOperation {
                operation: QuorumOperation::EnableAutonomousUnlock { kma: s("nobody") },
                ttl_ms: None,
            },
            None,
        ),
        (
            Command::StartQuorumOperation {
                operation: QuorumOperation::CreateTransferPartner {
                    name: s("p"),
                    public_key: vec![1; 32],
                },
                ttl_ms: None,
            },
            None,
        ),
        (
            Command::StartQuorumOperation {
                operation: QuorumOperation::RestoreFromBackup { backup_id: 99 },
                ttl_ms: None,
            },
            None,
        ),
        (
            Command::StartQuorumOperation { operation: QuorumOperation::RotateCa, ttl_ms: None },
            None,
        ),
        (Command::CancelQuorumOperation { id: 999 }, None),
        (
            Command::CreateKeyPolicy {
                name: s("pol"),
                encryption_period_ms: 60_000,
                cryptoperiod_ms: 60_000,
                allow_export: false,
                allow_import: false,
            },
            None,
        ),
        (
            Command::SetKeyPolicyFlags { name: s("nopol"), allow_export: true, allow_import: true },
            None,
        ),
        (Command::DeleteKeyPolicy { name: s("nopol") }, None),
        (Command::CreateKeyGroup { name: s("grp"), policy: s("nopol") }, None),
        (Command::DeleteKeyGroup { name: s("nogrp") }, None),
        (
            Command::CreateAgent { id: s("drive-x"), site: s("east"), passphrase_verifier: vec![] },
            pass,
        ),
        (Command::SetAgentPassphrase { id: s("nodrive"), passphrase_verifier: vec![] }, pass),
        (Command::SetAgentEnabled { id: s("nodrive"), enabled: false }, None),
        (Command::SetAgentSite { id: s("nodrive"), site: s("east") }, None),
        (Command::DeleteAgent { id: s("nodrive") }, None),
        (Command::AssignKeyGroupToAgent { agent: s("nodrive"), group: s("nogrp") }, None),
        (Command::UnassignKeyGroupFromAgent { agent: s("nodrive"), group: s("nogrp") }, None),
        (Command::SetAgentDefaultKeyGroup { agent: s("nodrive"), group: s("nogrp") }, None),
        (Command::CompromiseKeys { keys: vec![key] }, None),
        (Command::DestroyKeysPreviewed { keys: vec![key], preview_digest: 0 }, None),
        (
            Command::DestroyDataUnitKeys {
                data_units: vec![unit],
                selection: DestroySelection::DeactivatedOnly,
                preview_digest: 0,
            },
            None,
        ),
        (
            Command::ChangeDataUnitKeyGroup {
                data_units: vec![unit],
                group: s("nogrp"),
                preview_digest: 0,
            },
            None,
        ),
        (Command::DeleteTransferPartner { name: s("nop") }, None),
        (Command::SetTransferPartnerEnabled { name: s("nop"), enabled: false }, None),
        (Command::SetAgentKmipRights { agent: s("noagent"), revoke_and_destroy: true }, None),
        (
            Command::AssignKeyGroupToPartner {
                partner: s("nop"),
                group: s("nogrp"),
                direction: statemachine::command::TransferDirection::Export,
            },
            None,
        ),
        (
            Command::UnassignKeyGroupFromPartner {
                partner: s("nop"),
                group: s("nogrp"),
                direction: statemachine::command::TransferDirection::Export,
            },
            None,
        ),
        (Command::MarkBackupDestroyed { id: 999 }, None),
        (Command::SetBackupSchedule { schedule: None }, None),
    ]
}

/// One command of every kind only a KMA issues (from log format 3): what no user can honestly
/// make, since it carries material wrapped under the master key or records a KMA's own work.
fn kma_only_commands() -> Vec<Command> {
    let s = |text: &str| text.to_string();
    let unit = DataUnitId { cluster_id: statemachine::ClusterId(1), serial: 1 };
    vec![
        Command::SetTransferKeyPair { public_key: vec![1; 32], wrapped_private_key: vec![1; 32] },
        Command::RecordKeyExport { partner: s("nop"), data_units: vec![unit] },
        Command::ImportTransferredKeys { partner: s("nop"), group: s("nogrp"), data_units: vec![] },
        Command::Import1xKeys { group: s("nogrp"), keys: vec![] },
        Command::RecordBackup {
            kind: BackupKind::CoreSecurity,
            kma: s("kma1"),
            file_name: s("f"),
            covers_index: 1,
            taken_by: s("bob"),
            size_bytes: 1,
            file_sha256: [1; 32],
            state_sha256: [0; 32],
            backup_uuid: [1; 16],
        },
        // The KMIP read counts of a KMA (issue 19): a user's would forge the audit log.
        Command::RecordKmipReads { reads: vec![] },
    ]
}

/// Logs in each of the five role users (created by the officer with passphrases).
async fn role_clients(cluster: &Cluster, address: &str) -> Vec<(Role, KmaClient)> {
    let ca = ca_pem(cluster);
    let officer = KmaClient::login(address, &ca, "admin", "officer-passphrase-1")
        .await
        .expect("the quickstart officer logs in by passphrase");
    let mut clients = Vec::new();
    for (id, role) in ROLES {
        let passphrase = format!("{id}-passphrase");
        let command = Command::CreateUser {
            id: id.into(),
            roles: RoleSet::of(role),
            passphrase_verifier: Vec::new(),
        };
        let applied = officer
            .propose_with_passphrase(address, None, command, Some(&passphrase))
            .await
            .expect("reachable")
            .expect("proposed");
        assert!(applied.result.is_ok(), "create {id}: {:?}", applied.result);
        let client = KmaClient::login(address, &ca, id, &passphrase).await.expect("login");
        clients.push((role, client));
    }
    clients
}

/// Setup: one KMA; the officer from the quickstart logs in by passphrase and creates one user
/// per role, who log in too. Action: every user command kind by every role through the admin
/// API, an approval entered by every role, a membership change by every role, and every
/// command only a KMA issues by every role. Expect: the roles of the matrix get past
/// authorisation; every other role is refused with the missing role named; no role changes
/// the Raft membership directly, nor issues what only a KMA issues. (SPEC S1, S2; issue #16
/// points 3 and 4)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_every_user_command_by_every_role_through_the_admin_api() {
    let cluster = Cluster::start(1, no_change).await;
    let address = cluster.nodes[0].address.clone();
    // The role matrix of log format 3: once this KMA's version report is applied.
    wait_until(Duration::from_secs(30), "the cluster to read log format 3", async || {
        let status = cluster.admin.status(&address).await.map_err(|e| e.to_string())?;
        done_if(status.cluster_log_format >= 3, status.cluster_log_format.to_string())
    })
    .await;
    let clients = role_clients(&cluster, &address).await;
    let commands = user_commands();
    let kinds: std::collections::BTreeSet<CommandKind> =
        commands.iter().map(|(c, _)| c.kind()).collect();
    let expected: std::collections::BTreeSet<CommandKind> = CommandKind::ALL
        .into_iter()
        .filter(|k| matches!(k.issuer(), Issuer::Users(_)))
        .filter(|k| {
            !matches!(k, CommandKind::ApproveQuorumOperation | CommandKind::StartChangeQuorum)
        })
        .collect();
    assert_eq!(kinds, expected, "one sample per user command kind");
    for (command, passphrase) in commands {
        let kind = command.kind();
        let Issuer::Users(required) = kind.issuer() else { unreachable!("filtered above") };
        for (role, client) in &clients {
            let applied = client
                .propose_with_passphrase(&address, None, command.clone(), passphrase)
                .await
                .expect("reachable")
                .unwrap_or_else(|e| panic!("{kind:?} by {role:?}: {e}"));
            let refused = matches!(&applied.result, Err(Reject::MissingRole { .. }));
            if required.contains(*role) {
                assert!(!refused, "{kind:?} by {role:?} must pass: {:?}", applied.result);
            } else {
                let Err(reject) = &applied.result else { panic!("{kind:?} by {role:?} passed") };
                assert!(refused, "{kind:?} by {role:?}: {reject:?}");
                assert!(reject.to_string().contains(&required.to_string()), "{reject}");
            }
        }
    }
    // Approvals: only officers and backup operators may enter them.
    let started = clients[0]
        .1
        .propose(
            &address,
            None,
            Command::StartQuorumOperation {
                operation: QuorumOperation::EnableAutonomousUnlock { kma: "kma1".into() },
                ttl_ms: None,
            },
        )
        .await
        .expect("reachable")
        .expect("proposed");
    let Ok(Reply::QuorumOperationStarted { id, .. }) = started.result else {
        panic!("{started:?}")
    };
    for (role, client) in &clients[1..] {
        let answer =
            client.approve(&address, id, "q1", "member-one-passphrase", started.index).await;
        let may = matches!(role, Role::BackupOperator);
        assert_eq!(answer.is_ok(), may, "approval entered by {role:?}: {answer:?}");
        if !may {
            let message = format!("{:#}", answer.expect_err("refused"));
            assert!(message.contains("Security Officer or Backup Operator"), "{message}");
        }
    }
    membership_by_every_role(&clients, &address).await;
    kma_only_by_every_role(&clients, &address).await;
}

/// What only a KMA issues is refused from every role, the officer's included, by the state
/// machine (`WrongIssuer`, naming who issues it), so that each refusal is in the audit log.
/// (issue #16 point 4)
async fn kma_only_by_every_role(clients: &[(Role, KmaClient)], address: &str) {
    for command in kma_only_commands() {
        let kind = command.kind();
        assert_eq!(kind.issuer(), Issuer::System, "{kind:?} is the KMA's");
        for (role, client) in clients {
            let applied = client
                .propose(address, None, command.clone())
                .await
                .expect("reachable")
                .unwrap_or_else(|e| panic!("{kind:?} by {role:?}: {e}"));
            let Err(reject) = &applied.result else { panic!("{kind:?} by {role:?} passed") };
            assert!(matches!(reject, Reject::WrongIssuer { .. }), "{kind:?} by {role:?}: {reject}");
            assert!(reject.to_string().contains("only a KMA"), "{reject}");
        }
    }
}

/// Membership changes follow from replicated commands only (issue #16 point 3): no role, the
/// Security Officer's included, reaches `/v1/members`; it points to the commands instead.
async fn membership_by_every_role(clients: &[(Role, KmaClient)], address: &str) {
    let promote = node::wire::MembershipRequest::Promote { node_id: 99 };
    for (role, client) in clients {
        let answer = client.membership(address, &promote).await;
        let message = answer.expect_err("refused").to_string();
        assert!(message.contains("403"), "membership change by {role:?}: {message}");
        assert!(message.contains("kmsctl kma delete"), "{message}");
    }
}

/// Setup: one KMA, quorum of three with threshold two. Action: wrong passphrases for a member
/// until throttled; then an operation approved by one member, then by a second. Expect: wrong
/// passphrases are refused and, past the limit, throttled (HTTP 429) and audited; one approval
/// changes nothing, two run the operation. (SPEC S2, S4)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_m_minus_1_approvals_change_nothing_and_m_do() {
    let cluster = Cluster::start(1, no_change).await;
    let address = cluster.nodes[0].address.clone();
    let officer = KmaClient::login(&address, &ca_pem(&cluster), "admin", "officer-passphrase-1")
        .await
        .expect("login");
    // Three failures within three seconds throttle, so that the test can wait it out.
    let settings = SecuritySettings {
        login_failures_max: 3,
        login_throttle_ms: 3_000,
        ..SecuritySettings::default()
    };
    let set = Command::SetSecuritySettings(settings);
    officer.propose(&address, None, set).await.expect("reach").expect("ok");
    let start = Command::StartQuorumOperation {
        operation: QuorumOperation::EnableAutonomousUnlock { kma: "kma1".into() },
        ttl_ms: None,
    };
    // Autonomous unlock is on for kma1 from the quickstart: disable it, then ask the quorum.
    let disable = Command::DisableAutonomousUnlock { name: "kma1".into() };
    officer.propose(&address, None, disable).await.expect("reach").expect("ok");
    wait_sealed(&cluster, false).await;
    let started = officer.propose(&address, None, start).await.expect("reach").expect("ok");
    let Ok(Reply::QuorumOperationStarted { id, .. }) = started.result else {
        panic!("{started:?}")
    };

    let mut throttled = false;
    for attempt in 0..8 {
        let answer = officer.approve(&address, id, "q3", "not-the-passphrase", started.index).await;
        let message = format!("{:#}", answer.expect_err("a wrong passphrase is refused"));
        if message.contains("too many failed attempts") {
            assert!(attempt >= 3, "throttled after {attempt} attempts: {message}");
            throttled = true;
            break;
        }
        assert!(message.contains("wrong passphrase"), "{message}");
    }
    assert!(throttled, "repeated failures are throttled");
    // The throttle covers this source too: q1's approval is refused until it lapses (3 s),
    // and a refusal by the throttle counts no failure.
    let what = "the throttle to lapse and q1's approval to be taken";
    let first = wait_until(Duration::from_secs(10), what, async || {
        match officer.approve(&address, id, "q1", "member-one-passphrase", started.index).await {
            Err(error) if format!("{error:#}").contains("too many failed attempts") => Err(error),
            answer => Ok(answer.expect("approval").expect("proposed")),
        }
    })
    .await;
    assert!(matches!(
        first.result,
        Ok(Reply::QuorumApproval { completed: false, approvals: 1, .. })
    ));
    let pending = officer.pending_operations(&address, first.index).await.expect("list");
    let listed = pending.iter().find(|op| op.id == id).expect("still pending after one approval");
    assert_eq!(listed.approvals, vec!["q1".to_string()], "{listed:?}");
    assert!(!sealed(&cluster), "one approval of two changes nothing");

    let second = officer.approve(&address, id, "q2", "member-two-passphrase", first.index).await;
    let second = second.expect("approval").expect("proposed");
    assert!(
        matches!(second.result, Ok(Reply::QuorumApproval { completed: true, .. })),
        "{second:?}"
    );
    // The second approval enabled autonomous unlock: the KMA seals its key.
    wait_sealed(&cluster, true).await;
}

fn sealed(cluster: &Cluster) -> bool {
    cluster.nodes[0].data_dir.join(node::vault::SEALED_FILE).exists()
}

async fn wait_sealed(cluster: &Cluster, expected: bool) {
    let what = format!("the sealed file to be present: {expected}");
    wait_until(Duration::from_secs(10), &what, async || done_if(sealed(cluster) == expected, ()))
        .await;
}

async fn wait_locked(client: &KmaClient, address: &str, locked: bool) {
    let what = format!("{address} to report locked={locked}");
    wait_until(Duration::from_secs(30), &what, async || {
        let status = client.status(address).await;
        done_if(matches!(&status, Ok(s) if s.locked == locked), status).map(|_| ())
    })
    .await;
}

/// Setup: three KMAs joined through the quorum; kma2 without autonomous unlock. Action: an
/// officer locks kma3; the quorum unlocks it; then every KMA is killed and restarted. Expect:
/// the lock takes effect; after the cold restart the cluster elects a leader, kma1 and kma3
/// unlock by themselves, kma2 stays locked until the quorum unlocks it through another KMA
/// (its approvals are forwarded to it): no deadlock. A pending operation with one approval
/// survives the restart, is listed with that approval, and completes with the second. (SPEC
/// C4, C6, S4)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_lock_unlock_and_whole_cluster_cold_restart() {
    let mut cluster = Cluster::start(3, no_change).await;
    let (a1, a2, a3) = (
        cluster.nodes[0].address.clone(),
        cluster.nodes[1].address.clone(),
        cluster.nodes[2].address.clone(),
    );
    for address in [&a1, &a2, &a3] {
        wait_locked(&cluster.admin, address, false).await;
    }
    let disable = Command::DisableAutonomousUnlock { name: "kma2".into() };
    cluster.admin.propose(&a1, None, disable).await.expect("reach").expect("ok");
    let lock = Command::LockKma { name: "kma3".into() };
    cluster.admin.propose(&a2, None, lock).await.expect("reach").expect("ok");
    wait_locked(&cluster.admin, &a3, true).await;
    node::setup::quorum_flow::unlock_kma(&cluster.admin, &a1, &cluster.secrets, "kma3", false)
        .await
        .expect("quorum unlock of kma3 through kma1");
    wait_locked(&cluster.admin, &a3, false).await;

    // A pending operation with one approval of two, then every KMA killed at once.
    let start = Command::StartQuorumOperation {
        operation: QuorumOperation::EnableAutonomousUnlock { kma: "kma1".into() },
        ttl_ms: None,
    };
    let started = cluster.admin.propose(&a1, None, start).await.expect("reach").expect("ok");
    let Ok(Reply::QuorumOperationStarted { id, .. }) = started.result else {
        panic!("{started:?}")
    };
    let one = cluster.admin.approve(&a2, id, "q1", "member-one-passphrase", started.index).await;
    let one = one.expect("approval").expect("proposed");

    for index in 0..3 {
        cluster.kill9(index).await;
    }
    for index in 0..3 {
        cluster.restart(index).await;
    }
    for index in 0..3 {
        cluster.wait_ready(index).await;
    }
    let pending = cluster.admin.pending_operations(&a3, one.index).await.expect("list");
    let listed = pending.iter().find(|op| op.id == id).expect("survives the restart");
    assert_eq!(listed.approvals, vec!["q1".to_string()], "{listed:?}");
    let two = cluster.admin.approve(&a3, id, "q2", "member-two-passphrase", one.index).await;
    let two = two.expect("approval").expect("proposed");
    assert!(matches!(two.result, Ok(Reply::QuorumApproval { completed: true, .. })), "{two:?}");
    wait_locked(&cluster.admin, &a1, false).await;
    wait_locked(&cluster.admin, &a3, false).await;
    wait_locked(&cluster.admin, &a2, true).await;
    node::setup::quorum_flow::unlock_kma(&cluster.admin, &a3, &cluster.secrets, "kma2", false)
        .await
        .expect("quorum unlock of kma2 entered at kma3");
    wait_locked(&cluster.admin, &a2, false).await;
}

/// Setup: three KMAs, quorum q1..q3 with threshold two, a drive with a key written for VOL001.
/// Action: an officer asks for a new quorum of q4 and q5 with threshold one; q4 and q5 each
/// enter their own passphrase in their own call (q4 a second time too); q1 and q2 approve; a
/// new operation is approved by q1, then q5; then kma1 is locked and unlocked by q5 alone.
/// Expect: the change starts only once both new members entered theirs, each only once; the
/// old member's passphrase no longer opens a share, the new member's does, one approval
/// suffices, and the master key kma1 rebuilds from the new shares unwraps the key written
/// before the change: the re-split is of the same master key. (SPEC S3, S4, C6; issue #16
/// point 9)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_quorum_change_resplits_the_master_key() {
    let cluster = Cluster::start(3, no_change).await;
    let address = cluster.nodes[0].address.clone();
    support::agents::catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let kma1_service = cluster.nodes[0].service.clone();
    // Only kma1: the read at the end must come from the KMA that rebuilt its key.
    let drive = support::agents::pinned_drive(&cluster, &kma1_service, &kma1_service).await;
    let (unit, value) = support::agents::write_key(&drive, "VOL001").await;

    let officer = KmaClient::login(&address, &ca_pem(&cluster), "admin", "officer-passphrase-1")
        .await
        .expect("login");
    // A new quorum: the KMA splits its master key among q4 and q5, each enters their own
    // passphrase in their own call, and the old quorum approves the change.
    let started = officer.change_quorum(&address, &["q4", "q5"], 1).await.expect("started");
    assert_eq!(started.waiting_for, ["q4", "q5"]);
    assert!(started.operation.is_none(), "no operation before every member entered theirs");
    let q4 = officer
        .quorum_member_passphrase(&address, started.change, "q4", "member-four-passphrase")
        .await
        .expect("q4's passphrase");
    assert_eq!((q4.waiting_for.as_slice(), q4.operation), (["q5".to_string()].as_slice(), None));
    let again = officer
        .quorum_member_passphrase(&address, started.change, "q4", "another-passphrase-4")
        .await;
    assert!(again.is_err(), "a member enters their passphrase once");
    let q5 = officer
        .quorum_member_passphrase(&address, started.change, "q5", "member-five-passphrase")
        .await
        .expect("q5's passphrase");
    let (Some(id), Some(index)) = (q5.operation, q5.index) else { panic!("{q5:?}") };
    let mut index = index;
    for (member, passphrase) in [("q1", "member-one-passphrase"), ("q2", "member-two-passphrase")] {
        let approved = officer.approve(&address, id, member, passphrase, index).await;
        index = approved.expect("approval").expect("proposed").index;
    }
    let start = Command::StartQuorumOperation {
        operation: QuorumOperation::EnableAutonomousUnlock { kma: "kma1".into() },
        ttl_ms: None,
    };
    let started = officer.propose(&address, None, start).await.expect("reach").expect("ok");
    let Ok(Reply::QuorumOperationStarted { id, .. }) = started.result else {
        panic!("{started:?}")
    };
    let old = officer.approve(&address, id, "q1", "member-one-passphrase", started.index).await;
    assert!(old.is_err(), "the old quorum's shares are gone: {old:?}");
    let new = officer.approve(&address, id, "q5", "member-five-passphrase", started.index).await;
    let new = new.expect("the new member's share unwraps").expect("proposed");
    assert!(matches!(new.result, Ok(Reply::QuorumApproval { completed: true, .. })), "{new:?}");

    // kma1 forgets its master key and rebuilds it from the new quorum's one share.
    let lock = Command::LockKma { name: "kma1".into() };
    cluster.admin.propose(&address, None, lock).await.expect("reach").expect("ok");
    wait_locked(&cluster.admin, &address, true).await;
    let start = Command::StartQuorumOperation {
        operation: QuorumOperation::UnlockKma { kma: "kma1".into() },
        ttl_ms: None,
    };
    let started = officer.propose(&address, None, start).await.expect("reach").expect("ok");
    let Ok(Reply::QuorumOperationStarted { id, .. }) = started.result else {
        panic!("{started:?}")
    };
    let unlock = officer.approve(&address, id, "q5", "member-five-passphrase", started.index).await;
    unlock.expect("approval").expect("proposed");
    wait_locked(&cluster.admin, &address, false).await;
    let keys = drive.keys(unit).await.expect("kma1 serves the key again");
    assert_eq!(keys.keys.len(), 1, "{keys:?}");
    assert_eq!(*keys.keys[0].value, value, "the rebuilt master key is the one that wrapped it");
}

/// The hello step of a user login sent from `source` (a loopback address of its own), with no
/// client certificate: for telling throttling per source from throttling per principal.
async fn hello_from(cluster: &Cluster, address: &str, source: &str, user: &str) -> (u16, String) {
    let tls = node::transport::tls::anonymous_client_config(&ca_pem(cluster)).expect("TLS");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(source.parse::<std::net::IpAddr>().expect("address"))
        .build()
        .expect("client");
    let (_, hello) = security_core::challenge::ClientLogin::start(user, node::wire::PURPOSE_USER);
    let response = http
        .post(format!("https://{address}/v1/login/hello"))
        .json(&hello)
        .send()
        .await
        .expect("reachable");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// Setup: one KMA, `login_failures_max` 5. Action: five logins of `admin` with a wrong
/// passphrase from 127.0.0.1; then `admin` with the right one; then principal `nobody` from
/// 127.0.0.1; then `admin`'s hello from 127.0.0.2; once the audit API shows five failures,
/// the KMA is stopped and its audit log read from its RocksDB. Expect: the five are refused;
/// the right passphrase is refused too, throttled for the principal; `nobody` is throttled for
/// the source; `admin` from another source is throttled for the principal; the audit log
/// holds one authentication failure per wrong passphrase, with principal and source. (SPEC
/// S2, S5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_failed_user_logins_are_throttled_per_principal_and_source_and_audited() {
    let mut cluster = Cluster::start(1, no_change).await;
    let address = cluster.nodes[0].address.clone();
    let ca = ca_pem(&cluster);
    for attempt in 0..5 {
        let refused = KmaClient::login(&address, &ca, "admin", "not-the-passphrase").await;
        let message = format!("{:#}", refused.err().expect("a wrong passphrase is refused"));
        assert!(message.contains("wrong passphrase"), "attempt {attempt}: {message}");
    }
    let right = KmaClient::login(&address, &ca, "admin", "officer-passphrase-1").await;
    let message = format!("{:#}", right.err().expect("throttled"));
    assert!(message.contains("principal:admin"), "{message}");
    let other = KmaClient::login(&address, &ca, "nobody", "whatever-passphrase").await;
    let message = format!("{:#}", other.err().expect("throttled"));
    assert!(message.contains("source:127.0.0.1"), "{message}");
    let (status, body) = hello_from(&cluster, &address, "127.0.0.2", "admin").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("principal:admin"), "{body}");

    // The failures are audited by commands of their own, proposed after each refusal: wait
    // until an Auditor (the officer, given the role through its certificate) sees all five.
    let roles = RoleSet::of(Role::SecurityOfficer).with(Role::Auditor);
    let grant = Command::SetUserRoles { id: "admin".into(), roles };
    let granted = cluster.admin.propose(&address, None, grant).await.expect("reach");
    let granted = granted.expect("proposed");
    assert!(granted.result.is_ok(), "{:?}", granted.result);
    wait_until(Duration::from_secs(15), "five authentication failures audited", async || {
        let audit = cluster.admin.audit(&address, "authentication-failure", granted.index).await;
        let failures = audit.expect("an Auditor reads the audit log");
        done_if(failures.len() >= 5, failures)
    })
    .await;
    cluster.stop(0).await;
    let raft_dir = cluster.nodes[0].data_dir.join("raft");
    let (_dir, _log, state_machine) = raft_storage::open_stores(&raft_dir).expect("data dir");
    let events = state_machine.state().audit_events(0, usize::MAX).expect("audit log");
    let failures: Vec<(String, String)> = events
        .iter()
        .filter_map(|event| match &event.what {
            statemachine::AuditWhat::AuthenticationFailure { principal, source } => {
                Some((principal.clone(), source.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 5, "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|(principal, source)| principal.contains("admin") && source == "127.0.0.1"),
        "{failures:?}"
    );
}

/// Setup: one KMA; the quorum admits kma2, which joins. Action: wait until kma2 votes; ask it
/// for a key as a drive would; then the quorum unlocks it. Expect: as a voter, before the
/// unlock, kma2 reports itself locked and its service listener refuses key material with a
/// retryable `kma_locked`; after the quorum's unlock it is unlocked. (SPEC C4, C6)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_c6_a_joined_kma_starts_locked_until_the_quorum_unlocks_it() {
    let mut cluster = Cluster::start(1, no_change).await;
    let address = cluster.nodes[0].address.clone();
    support::agents::catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let index = cluster.add_node_locked(2, no_change).await;
    cluster.wait_voters(2).await;
    let kma2 = cluster.nodes[index].address.clone();
    let status = cluster.admin.status(&kma2).await.expect("status");
    assert!(status.voters.contains(&status.node_id), "kma2 votes: {status:?}");
    assert!(status.locked, "a newly joined KMA starts locked: {status:?}");

    let (kma1_service, kma2_service) = (&cluster.nodes[0].service, &cluster.nodes[index].service);
    let only_kma2 = support::agents::pinned_drive(&cluster, kma1_service, kma2_service).await;
    let unit = only_kma2.create_data_unit("VOL001").await.expect("a data unit needs no key");
    let refused = only_kma2.write_key(unit.data_unit, true).await.expect_err("locked");
    assert!(refused.to_string().contains("kma_locked"), "{refused}");

    node::setup::local::unlock_when_member(
        &cluster.admin,
        &address,
        &cluster.secrets,
        "kma2",
        false,
    )
    .await
    .expect("quorum unlock");
    wait_locked(&cluster.admin, &kma2, false).await;
}

/// Setup: one KMA, quorum q1..q3 with threshold two. Action: an operation with a 2 s time to
/// live, approved once; wait until it is no longer listed (the leader's pulse is due at the
/// expiry); approve again; stop the KMA and read its audit log. Expect: the operation is no
/// longer listed, the late approval is refused, and the audit log records the expiry. (SPEC
/// S4, S5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_a_pending_operation_expires_after_its_time_to_live() {
    let mut cluster = Cluster::start(1, no_change).await;
    let address = cluster.nodes[0].address.clone();
    let start = Command::StartQuorumOperation {
        operation: QuorumOperation::EnableAutonomousUnlock { kma: "kma1".into() },
        ttl_ms: Some(2_000),
    };
    let started = cluster.admin.propose(&address, None, start).await.expect("reach").expect("ok");
    let Ok(Reply::QuorumOperationStarted { id, .. }) = started.result else {
        panic!("{started:?}")
    };
    let one = cluster.admin.approve(&address, id, "q1", "member-one-passphrase", started.index);
    let one = one.await.expect("approval").expect("proposed");
    assert!(cluster
        .admin
        .pending_operations(&address, one.index)
        .await
        .expect("list")
        .iter()
        .any(|op| op.id == id));

    // The leader's pulse is due when the time to live ends; it expires the operation.
    wait_until(Duration::from_secs(15), "the operation to expire", async || {
        let pending = cluster.admin.pending_operations(&address, one.index).await.expect("list");
        done_if(pending.iter().all(|op| op.id != id), pending)
    })
    .await;
    let late = cluster.admin.approve(&address, id, "q2", "member-two-passphrase", one.index).await;
    let completed = matches!(&late, Ok(Ok(applied))
        if matches!(applied.result, Ok(Reply::QuorumApproval { completed: true, .. })));
    assert!(!completed, "an expired operation cannot complete: {late:?}");

    cluster.stop(0).await;
    let raft_dir = cluster.nodes[0].data_dir.join("raft");
    let (_dir, _log, state_machine) = raft_storage::open_stores(&raft_dir).expect("data dir");
    let events = state_machine.state().audit_events(0, usize::MAX).expect("audit log");
    let expired = events.iter().any(|event| {
        matches!(&event.what, statemachine::AuditWhat::QuorumOperationExpired { id: gone } if *gone == id)
    });
    assert!(expired, "the expiry is audited");
}

/// Setup: three KMAs, none with autonomous unlock (the sealed files removed). Action: every
/// KMA is killed at once and restarted; then the quorum unlocks each one, its approvals
/// entered at another KMA. Expect: the three elect a leader while all are locked (Raft needs
/// no key), each reports itself locked, and each unlocks through the quorum: no deadlock
/// (SPEC C6; the failure a popular peer's auto-unseal had).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c6_a_cold_restart_with_every_kma_locked_comes_back_through_the_quorum() {
    let mut cluster = Cluster::start(3, no_change).await;
    let addresses: Vec<String> = cluster.nodes.iter().map(|n| n.address.clone()).collect();
    for name in ["kma1", "kma2", "kma3"] {
        let disable = Command::DisableAutonomousUnlock { name: name.into() };
        cluster.admin.propose(&addresses[0], None, disable).await.expect("reach").expect("ok");
    }
    wait_until(Duration::from_secs(10), "every sealed file to be removed", async || {
        let sealed: Vec<&String> = (cluster.nodes.iter())
            .filter(|n| n.data_dir.join(node::vault::SEALED_FILE).exists())
            .map(|n| &n.name)
            .collect();
        done_if(sealed.is_empty(), sealed)
    })
    .await;

    for index in 0..3 {
        cluster.kill9(index).await;
    }
    for index in 0..3 {
        cluster.restart(index).await;
    }
    for (index, address) in addresses.iter().enumerate() {
        cluster.wait_ready(index).await;
        wait_locked(&cluster.admin, address, true).await;
    }
    for (index, name) in ["kma1", "kma2", "kma3"].into_iter().enumerate() {
        let elsewhere = &addresses[(index + 1) % 3];
        node::setup::quorum_flow::unlock_kma(
            &cluster.admin,
            elsewhere,
            &cluster.secrets,
            name,
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("quorum unlock of {name}: {e:#}"));
        wait_locked(&cluster.admin, &addresses[index], false).await;
    }
}

/// Setup: one KMA; the officer creates an Operator who logs in. Action: the officer disables
/// the user; the user, with the certificate it already has, proposes a command and reads the
/// status; then tries to log in again. Expect: the command is refused as from a disabled user,
/// the read is refused (403), and the new login is refused. (SPEC S1, S2)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_a_disabled_user_can_neither_act_nor_read_nor_log_in() {
    let cluster = Cluster::start(1, no_change).await;
    let address = cluster.nodes[0].address.clone();
    let ca = ca_pem(&cluster);
    let create = Command::CreateUser {
        id: "op-user".into(),
        roles: RoleSet::of(Role::Operator),
        passphrase_verifier: Vec::new(),
    };
    let passphrase = Some("op-user-passphrase");
    let created = cluster.admin.propose_with_passphrase(&address, None, create, passphrase).await;
    assert!(created.expect("reach").expect("proposed").result.is_ok());
    let user = KmaClient::login(&address, &ca, "op-user", "op-user-passphrase").await;
    let user = user.expect("login");
    user.status(&address).await.expect("an enabled user reads the status");

    let disable = Command::SetUserEnabled { id: "op-user".into(), enabled: false };
    let disabled = cluster.admin.propose(&address, None, disable).await.expect("reach");
    assert!(disabled.expect("proposed").result.is_ok());
    // Disabling dropped the user's sessions: the listener refuses the certificate before any
    // route runs (issue #16 point 2).
    let policy = Command::SetKeyPoolLimits(KeyPoolLimits { low_water: 1, high_water: 2 });
    let refused = user.propose(&address, None, policy).await.expect_err("no session");
    let refused = refused.to_string();
    assert!(refused.contains("403") && refused.contains("log in again"), "{refused}");
    let read = user.status(&address).await.expect_err("a disabled user reads nothing");
    assert!(read.to_string().contains("403") && read.to_string().contains("disabled"), "{read}");
    let again = KmaClient::login(&address, &ca, "op-user", "op-user-passphrase").await;
    assert!(again.is_err(), "a disabled user cannot log in");
}

/// Setup: two KMAs, then one stopped: no majority, so nothing can be written to the audit log.
/// Action: the officer logs in at the running KMA with the right passphrase. Expect: refused,
/// saying the login could not be written to the audit log, and no certificate is handed out;
/// once the other KMA is back, the same login works and the audit log shows it. (SPEC S5;
/// issue #16 point 9)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_no_session_starts_before_its_login_is_in_the_audit_log() {
    let mut cluster = Cluster::start(2, no_change).await;
    let ca = ca_pem(&cluster);
    cluster.stop(1).await;
    let address = cluster.nodes[0].address.clone();
    let refused = KmaClient::login(&address, &ca, "admin", "officer-passphrase-1").await;
    let message = format!("{:#}", refused.err().expect("no session without its audit record"));
    assert!(message.contains("audit log"), "{message}");

    cluster.restart(1).await;
    let officer =
        wait_until(Duration::from_secs(60), "a login once a leader is back", async || {
            KmaClient::login(&address, &ca, "admin", "officer-passphrase-1")
                .await
                .map_err(|error| format!("{error:#}"))
        })
        .await;
    assert!(officer.status(&address).await.is_ok(), "the session works");
}

/// The officer creates Operator `op-user` with passphrase `op-user-passphrase` at `address`.
async fn create_operator(cluster: &Cluster, address: &str) {
    let create = Command::CreateUser {
        id: "op-user".into(),
        roles: RoleSet::of(Role::Operator),
        passphrase_verifier: Vec::new(),
    };
    let passphrase = Some("op-user-passphrase");
    let created = cluster.admin.propose_with_passphrase(address, None, create, passphrase);
    assert!(created.await.expect("reach").expect("proposed").result.is_ok());
}

/// Setup: two KMAs; the officer creates an Operator. Action: three logins with a wrong
/// passphrase at kma1 and two at kma2 (each KMA's own counts stay below the limit of 5); then
/// the right passphrase at kma1. Expect: refused as throttled "across the cluster": the failed
/// proofs of a known user are counted in the replicated state, so two KMAs allow no more
/// guesses than one. (SPEC S2; issue #16 point 5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_failed_proofs_of_a_known_user_are_throttled_across_the_cluster() {
    let cluster = Cluster::start(2, no_change).await;
    let ca = ca_pem(&cluster);
    let addresses = [cluster.nodes[0].address.clone(), cluster.nodes[1].address.clone()];
    create_operator(&cluster, &addresses[0]).await;
    for (address, attempts) in [(&addresses[0], 3), (&addresses[1], 2)] {
        for _ in 0..attempts {
            let refused = KmaClient::login(address, &ca, "op-user", "not-the-passphrase").await;
            let message = format!("{:#}", refused.err().expect("a wrong passphrase is refused"));
            assert!(message.contains("wrong passphrase"), "{message}");
        }
    }
    // A hello from another source address: kma1's own count for that source is empty, so only
    // the replicated count can refuse it; it does once kma2's failures are applied here.
    let what = "kma1 to count kma2's failures";
    let body = wait_until(Duration::from_secs(30), what, async || {
        let (status, body) = hello_from(&cluster, &addresses[0], "127.0.0.3", "op-user").await;
        done_if(status == 429, body)
    })
    .await;
    assert!(body.contains("across the cluster"), "{body}");
    let right = KmaClient::login(&addresses[0], &ca, "op-user", "op-user-passphrase").await;
    let message = format!("{:#}", right.err().expect("throttled"));
    assert!(message.contains("across the cluster"), "{message}");
}

/// Setup: two KMAs; the officer creates an Operator. Action: the Operator logs in at kma2 and
/// reads at both KMAs; a certificate minted for the Operator's name with the CA key from kma1's
/// disk is used at kma1; then the officer sets a new passphrase for the Operator. Expect: the
/// session is served on both KMAs (each waits for the login's index), the minted certificate is
/// refused on both, naming the rule; after the new passphrase the old session is refused
/// everywhere, and a login with the new passphrase is served. (SPEC S2; issue #16 point 2)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_user_certificate_is_served_only_while_its_login_is_recorded() {
    let cluster = Cluster::start(2, no_change).await;
    let ca = ca_pem(&cluster);
    let addresses = [cluster.nodes[0].address.clone(), cluster.nodes[1].address.clone()];
    create_operator(&cluster, &addresses[0]).await;
    let user = KmaClient::login(&addresses[1], &ca, "op-user", "op-user-passphrase").await;
    let user = user.expect("login at kma2");
    for address in &addresses {
        user.status(address).await.expect("the session is served on every KMA");
    }

    let forged = node::pki::Identity::User("op-user".into());
    let forged = node::kma::https_client(minted(&cluster, forged)).expect("client");
    for address in &addresses {
        let answer = forged.get(format!("https://{address}/v1/status")).send().await;
        let answer = answer.expect("answered");
        let status = answer.status().as_u16();
        let body = answer.text().await.expect("body");
        assert!(status == 403 && body.contains("no session the cluster recorded"), "{body}");
    }

    let verifier = Vec::new();
    let renew = Command::SetUserPassphrase { id: "op-user".into(), passphrase_verifier: verifier };
    let renewed = cluster.admin.propose_with_passphrase(
        &addresses[0],
        None,
        renew,
        Some("op-user-passphrase-2"),
    );
    assert!(renewed.await.expect("reach").expect("proposed").result.is_ok());
    for address in &addresses {
        let what = format!("the old session to be refused at {address}");
        let refused =
            wait_until(Duration::from_secs(30), &what, async || match user.status(address).await {
                Ok(_) => Err("still served".to_string()),
                Err(error) => Ok(error.to_string()),
            })
            .await;
        assert!(refused.contains("403") && refused.contains("log in again"), "{refused}");
    }
    let again = KmaClient::login(&addresses[0], &ca, "op-user", "op-user-passphrase-2").await;
    let again = again.expect("a login with the new passphrase");
    again.status(&addresses[1]).await.expect("the new session is served");
}

/// A certificate for `identity` and a fresh key pair, made with the CA key from a copy of
/// kma1's disk taken before its first start (as whoever copied that disk could): TLS config
/// with it, trusting the cluster CA.
fn minted(cluster: &Cluster, identity: node::pki::Identity) -> rustls::ClientConfig {
    let tls_dir = cluster.nodes[0].data_dir.join("tls");
    let cert_pem = node::pki::read(&tls_dir.join("ca.pem")).expect("the CA certificate");
    let origin = std::path::Path::new("an old copy of the disk");
    let ca = node::pki::CertificateAuthority::from_pem(cert_pem, &cluster.ca_key_at_init, origin)
        .expect("the CA");
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    let (cert_pem, key_pem) = ca.issue(&identity, &hosts).expect("minted");
    node::transport::tls::client_config_from_pem(&ca.cert_pem, &cert_pem, &key_pem).expect("TLS")
}

/// A relay in the middle of a join: it holds a server certificate minted with the CA key of a
/// copied disk (so the joiner's TLS trusts it), and opens its own TLS session to `kma` for each
/// connection, forwarding the bytes both ways. Answers its address.
async fn start_join_relay(cluster: &Cluster, kma: String) -> String {
    use tokio_rustls::{TlsAcceptor, TlsConnector};
    let tls_dir = cluster.nodes[0].data_dir.join("tls");
    let ca_pem = node::pki::read(&tls_dir.join("ca.pem")).expect("the CA certificate");
    let origin = std::path::Path::new("an old copy of the disk");
    let ca =
        node::pki::CertificateAuthority::from_pem(ca_pem.clone(), &cluster.ca_key_at_init, origin)
            .expect("the CA");
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    let (cert_pem, key_pem) = ca.issue(&node::pki::Identity::Kma(9), &hosts).expect("minted");
    let chain = node::transport::tls::certs_from_pem(&cert_pem);
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).expect("PEM").expect("a key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key);
    let acceptor = TlsAcceptor::from(std::sync::Arc::new(server.expect("relay TLS")));
    let client = node::transport::tls::anonymous_client_config(&ca_pem).expect("client TLS");
    let connector = TlsConnector::from(std::sync::Arc::new(client));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("relay port");
    let address = listener.local_addr().expect("bound").to_string();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let (acceptor, connector, kma) = (acceptor.clone(), connector.clone(), kma.clone());
            tokio::spawn(async move {
                let Ok(mut inbound) = acceptor.accept(inbound).await else { return };
                let Ok(tcp) = tokio::net::TcpStream::connect(&kma).await else { return };
                let name = node::transport::tls::server_name(&kma).expect("a host");
                let Ok(mut outbound) = connector.connect(name, tcp).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    address
}

/// A join exchange straight to `peer` whose proof binds one CSR while the request carries
/// another (someone who would have the KMA certify a key of their own): the proof's answer.
async fn prove_for_one_csr_send_another(
    peer: &str,
    ca_pem: &str,
    name: &str,
    passphrase: &str,
) -> (u16, bytes::Bytes) {
    use node::setup::join_session::JoinSession;
    let tls = node::transport::tls::anonymous_client_config(ca_pem).expect("TLS");
    let mut session = JoinSession::open(peer, tls).await.expect("session");
    let advertise = "127.0.0.1:1".to_string();
    let (proved_csr, _) = node::pki::signing_request().expect("CSR");
    let (sent_csr, _) = node::pki::signing_request().expect("CSR");
    let binding = session.exporter().binding(&proved_csr, &advertise).expect("binding");
    let (login, hello) = security_core::ClientLogin::start(name, node::wire::PURPOSE_JOIN);
    let (_, body) = session.post("/v1/join/hello", &hello).await.expect("challenge");
    let challenge = serde_json::from_slice(&body).expect("a challenge");
    let (_, proof) = login.respond_bound(passphrase, &challenge, Some(&binding)).expect("proof");
    let request = node::wire::ProofRequest {
        proof,
        csr_pem: sent_csr,
        management_advertise: Some(advertise),
    };
    let (status, body) = session.post("/v1/join/proof", &request).await.expect("answered");
    (status.as_u16(), body)
}

/// Setup: one KMA; kma2's entry created and its join approved by the quorum. A relay sits in
/// the middle with a server certificate minted from a copied disk's CA key (the joiner trusts
/// it), and opens its own TLS session to kma1. Action: `kma join` through the relay; then a
/// client straight to kma1 that proves the passphrase for one CSR and sends another; then
/// `kma join` straight to kma1. Expect: the relayed join and the swapped CSR are refused as
/// wrong proofs and write nothing; the direct join then gets its certificate with the same
/// passphrase, which neither attempt spent. (SPEC S2, C4; issue #16 point 5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_join_proof_is_bound_to_its_tls_session_and_its_csr() {
    let cluster = Cluster::start(1, no_change).await;
    let peer = cluster.nodes[0].address.clone();
    let (name, passphrase) = ("kma2", "join-passphrase-2");
    node::setup::quorum_flow::admit_kma(
        &cluster.admin,
        &peer,
        &cluster.secrets,
        (name, "east"),
        passphrase,
    )
    .await
    .expect("admit");
    let listeners = node::setup::Listeners {
        management_listen: support::ANY_PORT.parse().expect("address"),
        management_advertise: support::ANY_PORT.into(),
        service_listen: support::ANY_PORT.parse().expect("address"),
        kmip_listen: None,
    };
    let fingerprint = cluster.ca_fingerprint();
    let relay = start_join_relay(&cluster, peer.clone()).await;
    let through = |peer| node::setup::JoinCredentials {
        peer,
        passphrase,
        ca_fingerprint: Some(&fingerprint),
        wait: Duration::from_secs(5),
    };
    let relayed_dir = cluster.root.path().join("kma2-relayed");
    let relayed = node::setup::join(&relayed_dir, name, "east", &listeners, &through(&relay)).await;
    let error = format!("{:#}", relayed.expect_err("a relayed join gets nothing"));
    assert!(error.contains("wrong passphrase"), "{error}");
    assert!(!relayed_dir.join("kma.toml").exists());

    let (status, body) =
        prove_for_one_csr_send_another(&peer, &ca_pem(&cluster), name, passphrase).await;
    let body = String::from_utf8_lossy(&body);
    assert!((400..500).contains(&status) && body.contains("wrong passphrase"), "{status} {body}");

    let dir = cluster.root.path().join("kma2");
    let node_id = node::setup::join(&dir, name, "east", &listeners, &through(&peer))
        .await
        .expect("the direct join, with the passphrase neither attempt spent");
    assert!(node_id > 1 && dir.join("kma.toml").exists());
}

/// A vote request in `candidate`'s own name on a Raft link to `address` made with `tls`: the
/// refusal, or `None` when openraft answered.
async fn link_refusal(tls: rustls::ClientConfig, address: &str, candidate: u64) -> Option<String> {
    use node::transport::link::{client_config, Answer, Link, RaftCall};
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(0, candidate), None);
    let mut link = Link::connect(client_config(tls), address).await.expect("TLS handshake");
    type VoteAnswer = Answer<Result<openraft::raft::VoteResponse<u64>, String>>;
    let answer: VoteAnswer =
        link.exchange(&RaftCall::Vote(vote)).await.expect("answered").expect("decoded");
    match answer {
        Answer::Refused(why) => Some(why),
        Answer::Done(_) => None,
    }
}

/// Setup: two KMAs (kma2 joined through the quorum, so its grant recorded its certificate;
/// kma1 reports its own once the cluster reads log format 3) and a drive with a data unit.
/// Action: with the CA key copied from kma1's disk, certificates are minted for `kma-1`,
/// `kma-2` and `agent:drive1`, and used on kma1's management listener, its Raft link (a vote in
/// the minted KMA's own name) and its service listener; kma2's join passphrase is proved again.
/// Expect: each minted certificate is refused, naming the rule, while the real ones are
/// served; the second join gets no certificate: its passphrase was spent by the first. (SPEC
/// S2, C4; issue #16 points 2 and 5)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_certificate_minted_with_a_copied_ca_key_is_refused_on_every_listener() {
    use node::pki::Identity;
    let cluster = Cluster::start(2, no_change).await;
    let (first, address) = (&cluster.nodes[0].data_dir, cluster.nodes[0].address.clone());
    let real = node::transport::tls::client_config(&first.join("tls"), "node.pem", "node-key.pem")
        .expect("kma1's own certificate");
    for node_id in [1, 2] {
        let what =
            format!("a minted kma-{node_id} certificate to be refused on the management API");
        let http =
            node::kma::https_client(minted(&cluster, Identity::Kma(node_id))).expect("client");
        let url = format!("https://{address}/v1/status");
        let body = wait_until(Duration::from_secs(30), &what, async || {
            let answer = http.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = answer.status().as_u16();
            let body = answer.text().await.map_err(|e| e.to_string())?;
            done_if(status == 403, body)
        })
        .await;
        assert!(body.contains("not the one the cluster recorded"), "{body}");
        let refused =
            link_refusal(minted(&cluster, Identity::Kma(node_id)), &address, node_id).await;
        let refused = refused.expect("a minted KMA certificate on a Raft link");
        assert!(refused.contains("not the one the cluster recorded"), "{refused}");
    }
    assert!(link_refusal(real, &address, 1).await.is_none(), "kma1's own certificate is served");
    assert!(cluster.admin.status(&address).await.is_ok());

    support::agents::catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let service = cluster.nodes[0].service.clone();
    let drive = support::agents::pinned_drive(&cluster, &service, &service).await;
    let (unit, _) = support::agents::write_key(&drive, "VOL001").await;
    let forged = node::kma::https_client(minted(&cluster, Identity::Agent("drive1".into())))
        .expect("client");
    let answer = forged
        .get(format!("https://{service}/agent/v1/data-units/{unit}/keys"))
        .send()
        .await
        .expect("answered");
    let status = answer.status().as_u16();
    let body = answer.text().await.expect("body");
    assert!((400..500).contains(&status) && !body.contains("\"value\""), "{status} {body}");
    assert!(drive.keys(unit).await.is_ok(), "the enrolled drive is served");

    let again = node::setup::JoinCredentials {
        peer: &address,
        passphrase: "join-passphrase-2",
        ca_fingerprint: Some(&cluster.ca_fingerprint()),
        wait: Duration::from_secs(2),
    };
    let dir = cluster.root.path().join("kma2-again");
    let listeners = node::setup::Listeners {
        management_listen: support::ANY_PORT.parse().expect("address"),
        management_advertise: support::ANY_PORT.into(),
        service_listen: support::ANY_PORT.parse().expect("address"),
        kmip_listen: None,
    };
    let joined = node::setup::join(&dir, "kma2", "east", &listeners, &again).await;
    assert!(joined.is_err(), "a spent join passphrase gets no certificate");
    assert!(!dir.join("kma.toml").exists());
}

/// Whether a TLS session with `tls` to `address` gets an answer to `GET path` (any status).
async fn answered(tls: rustls::ClientConfig, address: &str, path: &str) -> Result<u16, String> {
    let http = node::kma::https_client(tls).map_err(|e| e.to_string())?;
    let answer = http.get(format!("https://{address}{path}")).send().await;
    answer.map(|answer| answer.status().as_u16()).map_err(|e| format!("{e:#}"))
}

/// Waits until every KMA trusts one CA, not `old_ca`, and reports no rotation running; checks
/// that each presents a certificate other than the one it had (`node_certs`).
async fn wait_rotated(cluster: &Cluster, old_ca: &str, node_certs: &[String]) {
    for (index, node) in cluster.nodes.iter().enumerate() {
        let ca_file = node.data_dir.join("tls/ca.pem");
        let what = format!("kma{} to trust the new CA alone", index + 1);
        wait_until(Duration::from_secs(90), &what, async || {
            let client = KmaClient::node(&cluster.nodes[0].data_dir).map_err(|e| e.to_string())?;
            let status = client.status(&node.address).await.map_err(|e| e.to_string())?;
            let ca = node::pki::read(&ca_file).map_err(|e| e.to_string())?;
            let ca_sha256 = hex::encode(node::pki::fingerprint(&ca).map_err(|e| e.to_string())?);
            let done = ca != old_ca
                && status.ca_rotation.is_none()
                && status.trusted_ca_sha256 == vec![ca_sha256];
            done_if(done, format!("{status:?}"))
        })
        .await;
        let cert = node::pki::read(&node.data_dir.join("tls/node.pem")).expect("node.pem");
        assert_ne!(cert, node_certs[index], "a new certificate for kma{}", index + 1);
        assert!(!node.data_dir.join("tls/ca-retiring.pem").exists());
    }
}

/// Certificates minted with the old CA's key (copied from a disk before the first start), for
/// kma-1 and for the officer: each must fail the handshake on `listeners`.
fn assert_old_ca_refused<'a>(
    cluster: &'a Cluster,
    old_ca: &str,
    listeners: [&'a str; 2],
) -> impl std::future::Future<Output = ()> + 'a {
    let origin = std::path::Path::new("an old copy of the disk");
    let old =
        node::pki::CertificateAuthority::from_pem(old_ca.into(), &cluster.ca_key_at_init, origin)
            .expect("the old CA");
    let new_ca = ca_pem(cluster);
    async move {
        let hosts = ["127.0.0.1".to_string()];
        for identity in [node::pki::Identity::Kma(1), node::pki::Identity::User("admin".into())] {
            let (cert, key) = old.issue(&identity, &hosts).expect("minted");
            let tls =
                node::transport::tls::client_config_from_pem(&new_ca, &cert, &key).expect("TLS");
            for listener in listeners {
                let refused = answered(tls.clone(), listener, "/readyz").await;
                let what = format!("{identity:?} minted with the old CA at {listener}");
                assert!(refused.is_err(), "{what}: {refused:?}");
            }
        }
    }
}

/// Waits until the KMA at `address` reports every KMA reachable on the management listener:
/// after a CA rotation, connections pooled with an old certificate are closed by their first
/// refusal and reopened with the new certificate.
async fn wait_all_reachable(cluster: &Cluster, address: &str) {
    let api = support::admin_api_client(cluster, address).await;
    wait_until(Duration::from_secs(30), "every KMA reachable", async || {
        let status: Result<admin_api::api::ClusterStatus, _> = api.get("/v1/cluster/status").await;
        let kmas = status.map_err(|e| e.to_string())?.kmas;
        let seen: Vec<(String, bool)> = kmas.into_iter().map(|k| (k.name, k.reachable)).collect();
        done_if(seen.iter().all(|(_, reachable)| *reachable), format!("{seen:?}"))
    })
    .await;
}

/// drive1, enrolled again at `service` with a new passphrase and the CA of kma1's `tls/ca.pem`.
async fn enroll_again(
    cluster: &Cluster,
    address: &str,
    service: &str,
) -> agent_gateway::AgentClient {
    let passphrase = "drive-one-passphrase-2";
    let again = Command::SetAgentPassphrase { id: "drive1".into(), passphrase_verifier: vec![] };
    support::agents::ok(&cluster.admin, address, again, Some(passphrase)).await;
    let credentials =
        agent_gateway::client::enroll(service, &ca_pem(cluster), "drive1", passphrase)
            .await
            .expect("enrolled again with the new CA");
    let options = agent_gateway::ClientOptions { discovery: false, ..Default::default() };
    agent_gateway::AgentClient::from_credentials(&[service.to_string()], &credentials, options)
        .expect("drive")
}

/// Setup: two KMAs that unlock themselves; drive1 enrolled; the CA key of kma1's disk copied
/// before its first start. Action: a Security Officer starts `rotate-ca`, two quorum members
/// approve it; the KMAs take the steps on their own. Expect: the rotation ends (no KMA reports
/// one running) with both KMAs trusting one CA, the new one, in `tls/ca.pem`, each presenting a
/// new certificate; a certificate minted with the old CA key, for kma-1 or for the officer,
/// and the officer's session from before, fail the TLS handshake on the management and
/// service listeners, where before the rotation they reached the routes; the officer logs in
/// again and writes commit, so Raft runs on the new certificates; kma2 restarts and serves;
/// drive1, enrolled again with the new CA, gets its key; the audit log names each step.
/// (SPEC S2, S4; issue #16 point 1)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_ca_rotation_leaves_the_old_ca_refused_on_every_listener() {
    let mut cluster = Cluster::start(2, no_change).await;
    let address = cluster.nodes[0].address.clone();
    let service = cluster.nodes[0].service.clone();
    support::agents::catalogue(&cluster, &address, (DAY_MS, 2 * DAY_MS)).await;
    let drive = support::agents::pinned_drive(&cluster, &service, &service).await;
    let (unit, key) = support::agents::write_key(&drive, "VOL001").await;
    let old_ca = ca_pem(&cluster);
    let node_pem = |n: &support::Node| node::pki::read(&n.data_dir.join("tls/node.pem"));
    let node_certs: Vec<String> =
        cluster.nodes.iter().map(|n| node_pem(n).expect("node.pem")).collect();
    let old_session = cluster.admin.clone();
    let minted_kma1 = minted(&cluster, node::pki::Identity::Kma(1));
    assert!(answered(minted_kma1, &address, "/v1/status").await.is_ok(), "TLS passes before");

    wait_all_reachable(&cluster, &address).await;

    let rotate = QuorumOperation::RotateCa;
    node::setup::quorum_flow::run_quorum_operation(
        &cluster.admin,
        &address,
        &cluster.secrets,
        rotate,
    )
    .await
    .expect("the quorum approves the rotation");
    wait_rotated(&cluster, &old_ca, &node_certs).await;
    assert_old_ca_refused(&cluster, &old_ca, [&address, &service]).await;
    assert!(old_session.status(&address).await.is_err(), "the session from before");

    let officer = cluster.officer().await;
    let roles = statemachine::RoleSet::of(statemachine::Role::SecurityOfficer)
        .with(statemachine::Role::Operator);
    let command = Command::SetUserRoles { id: "admin".into(), roles };
    let applied = officer.propose(&address, None, command).await.expect("sent").expect("committed");
    assert!(applied.result.is_ok(), "{:?}", applied.result);
    cluster.admin = officer;
    wait_all_reachable(&cluster, &address).await;
    // The harness's own reader holds kma1's certificate of the old CA: read with the new one.
    cluster.reader = KmaClient::node(&cluster.nodes[0].data_dir).expect("kma1's new certificate");
    cluster.stop(1).await;
    cluster.restart(1).await;
    cluster.wait_ready(1).await;

    let drive = enroll_again(&cluster, &address, &service).await;
    let keys = drive.keys(unit).await.expect("the tape's key after the rotation");
    assert!(keys.keys.iter().any(|k| *k.value == key), "the same key as before the rotation");

    cluster.stop(0).await;
    let raft_dir = cluster.nodes[0].data_dir.join("raft");
    let (_dir, _log, state_machine) = raft_storage::open_stores(&raft_dir).expect("data dir");
    let events = state_machine.state().audit_events(0, usize::MAX).expect("audit log");
    let audit = format!("{events:?}");
    for event in ["CaRotationApproved", "CaRotationBegun", "CaRotationCompleted", "CaRetired"] {
        assert!(audit.contains(event), "{event} in the audit log");
    }
    assert!(audit.matches("CertificateReissued").count() >= 2, "each KMA's new certificate");
}
