//! Handlers for the cluster itself: quickstart, sites, KMAs, users, settings and the quorum.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

use crate::apply::Cx;
use crate::audit::AuditWhat;
use crate::check::{check_blob, check_count, check_name, check_text, check_verifier};
use crate::cluster::{ClusterInfo, KeyPoolLimits, Kma, KmaStatus, SecuritySettings, Site, User};
use crate::command::InitCluster;
use crate::format::{KmaVersion, LOG_FORMAT_2, LOG_FORMAT_3};
use crate::ids::NodeId;
use crate::limits::{
    DETAIL_LEN_MAX, KEY_POOL_HIGH_WATER_MAX, KMAS_MAX, QUORUM_OPERATIONS_PENDING_MAX,
    QUORUM_OPERATION_TTL_MS_MAX, SHARE_LEN_MAX, SITES_MAX, USERS_MAX,
};
use crate::quorum::{PendingQuorumOperation, Quorum, QuorumOperation, QUORUM_MEMBERS_MAX};
use crate::reject::{QuorumProblem, Reject};
use crate::reply::Reply;
use crate::role::{Role, RoleSet};
use crate::state::State;

impl State {
    pub(crate) fn init_cluster(
        &mut self,
        cx: &mut Cx<'_>,
        init: &InitCluster,
    ) -> Result<Reply, Reject> {
        if self.meta.cluster.is_some() {
            return Err(Reject::ClusterAlreadyInitialized);
        }
        check_name("KMA name", &init.kma_name)?;
        check_name("site name", &init.site)?;
        check_name("user ID", &init.security_officer)?;
        check_verifier(&init.security_officer_verifier)?;
        check_quorum(&init.quorum)?;

        let now_ms = cx.now_ms;
        self.meta.cluster =
            Some(ClusterInfo { cluster_id: init.cluster_id, created_at_ms: now_ms });
        self.meta
            .sites
            .insert(init.site.clone(), Site { name: init.site.clone(), created_at_ms: now_ms });
        self.meta.next_node_id = 2;
        let kma = Kma {
            name: init.kma_name.clone(),
            node_id: 1,
            site: init.site.clone(),
            status: KmaStatus::Member,
            passphrase_verifier: Vec::new(),
            // The first KMA made the master key, so it holds it.
            locked: false,
            autonomous_unlock: init.autonomous_unlock,
            software_version: 0,
            created_at_ms: now_ms,
            version: None,
            // The first KMA reports the certificate `kma init` made (`RecordKmaCertificate`).
            certificate_sha256: None,
        };
        self.meta.kmas.insert(init.kma_name.clone(), kma);
        let officer = User {
            id: init.security_officer.clone(),
            roles: RoleSet::of(Role::SecurityOfficer),
            enabled: true,
            passphrase_verifier: init.security_officer_verifier.clone(),
            created_at_ms: now_ms,
            sessions: Vec::new(),
        };
        self.meta.users.insert(init.security_officer.clone(), officer);
        self.meta.quorum = init.quorum.clone();
        Ok(Reply::KmaCreated { node_id: 1 })
    }

    pub(crate) fn create_site(&mut self, cx: &mut Cx<'_>, name: &str) -> Result<Reply, Reject> {
        check_name("site name", name)?;
        if self.meta.sites.contains_key(name) {
            return Err(Reject::SiteExists { name: name.into() });
        }
        check_count("sites", self.meta.sites.len() + 1, SITES_MAX)?;
        let site = Site { name: name.into(), created_at_ms: cx.now_ms };
        self.meta.sites.insert(name.into(), site);
        Ok(Reply::Done)
    }

    pub(crate) fn delete_site(&mut self, name: &str) -> Result<Reply, Reject> {
        self.site(name)?;
        let kmas = self.meta.kmas.values().filter(|kma| kma.site == name).count() as u32;
        let agents = self.meta.agents.values().filter(|agent| agent.site == name).count() as u32;
        if kmas > 0 || agents > 0 {
            return Err(Reject::SiteInUse { name: name.into(), kmas, agents });
        }
        self.meta.sites.remove(name);
        Ok(Reply::Done)
    }

    pub(crate) fn site(&self, name: &str) -> Result<&Site, Reject> {
        self.meta.sites.get(name).ok_or_else(|| Reject::UnknownSite { name: name.into() })
    }

    pub(crate) fn kma(&self, name: &str) -> Result<&Kma, Reject> {
        self.meta.kmas.get(name).ok_or_else(|| Reject::UnknownKma { name: name.into() })
    }

    /// KMA `name`'s entry, when the command came through that KMA's own node: a KMA speaks
    /// only for itself about its certificates (another could bind one it does not hold).
    pub(crate) fn kma_of_its_own_node(&self, cx: &Cx<'_>, name: &str) -> Result<&Kma, Reject> {
        self.kma_through_its_node(cx, name, |kma, node_id, origin_node_id| {
            Reject::KmaCertificateFromAnotherKma { kma, node_id, origin_node_id }
        })
    }

    /// KMA `name`'s entry, when the command came through that KMA's own node: a KMA records
    /// only what happened to itself (an unlock by members, a backup it wrote, a drill it ran),
    /// since another could record what never happened there.
    pub(crate) fn kma_recording_for_itself(&self, cx: &Cx<'_>, name: &str) -> Result<&Kma, Reject> {
        self.kma_through_its_node(cx, name, |kma, node_id, origin_node_id| Reject::NotFromThatKma {
            kma,
            node_id,
            origin_node_id,
        })
    }

    fn kma_through_its_node(
        &self,
        cx: &Cx<'_>,
        name: &str,
        refusal: fn(String, NodeId, NodeId) -> Reject,
    ) -> Result<&Kma, Reject> {
        let kma = self.kma(name)?;
        if kma.node_id != cx.origin_node_id {
            return Err(refusal(name.into(), kma.node_id, cx.origin_node_id));
        }
        Ok(kma)
    }

    pub(crate) fn kma_mut(&mut self, name: &str) -> Result<&mut Kma, Reject> {
        self.meta.kmas.get_mut(name).ok_or_else(|| Reject::UnknownKma { name: name.into() })
    }

    pub(crate) fn create_kma(
        &mut self,
        cx: &mut Cx<'_>,
        name: &str,
        site: &str,
        passphrase_verifier: &[u8],
    ) -> Result<Reply, Reject> {
        check_name("KMA name", name)?;
        check_verifier(passphrase_verifier)?;
        self.site(site)?;
        if self.meta.kmas.contains_key(name) {
            return Err(Reject::KmaExists { name: name.into() });
        }
        check_count("KMAs", self.meta.kmas.len() + 1, KMAS_MAX)?;
        let node_id = self.meta.next_node_id;
        self.meta.next_node_id += 1;
        let kma = Kma {
            name: name.into(),
            node_id,
            site: site.into(),
            status: KmaStatus::Created,
            passphrase_verifier: passphrase_verifier.into(),
            locked: true,
            autonomous_unlock: false,
            software_version: 0,
            created_at_ms: cx.now_ms,
            version: None,
            certificate_sha256: None,
        };
        self.meta.kmas.insert(name.into(), kma);
        Ok(Reply::KmaCreated { node_id })
    }

    /// The node caught up as a learner and was promoted: it votes from now on, starts locked
    /// (SPEC C6), and pool keys waiting for protection are now on two machines (SPEC O4).
    pub(crate) fn kma_joined(&mut self, cx: &mut Cx<'_>, name: &str) -> Result<Reply, Reject> {
        let kma = self.kma(name)?;
        if kma.status != KmaStatus::JoinApproved {
            return Err(wrong_status(kma));
        }
        let kma = self.kma_mut(name)?;
        kma.status = KmaStatus::Member;
        kma.locked = true;
        if self.member_count() >= 2 {
            self.protect_generated_keys(cx, u64::MAX);
        }
        Ok(Reply::Done)
    }

    pub(crate) fn delete_kma(&mut self, name: &str) -> Result<Reply, Reject> {
        let kma = self.kma(name)?;
        if kma.status == KmaStatus::Member && self.member_count() <= 1 {
            return Err(Reject::LastKma { name: name.into() });
        }
        self.meta.kmas.remove(name);
        self.forget_kma_in_ca_rotation(name);
        Ok(Reply::Done)
    }

    pub(crate) fn lock_kma(&mut self, name: &str) -> Result<Reply, Reject> {
        let kma = self.kma(name)?;
        if kma.status != KmaStatus::Member {
            return Err(wrong_status(kma));
        }
        self.kma_mut(name)?.locked = true;
        Ok(Reply::Done)
    }

    pub(crate) fn disable_autonomous_unlock(&mut self, name: &str) -> Result<Reply, Reject> {
        self.kma_mut(name)?.autonomous_unlock = false;
        Ok(Reply::Done)
    }

    /// The format-1 report: the log format alone. Every KMA ever released applies it alike to
    /// the fields it knows; a full report recorded before no longer describes the software.
    pub(crate) fn report_software_version(
        &mut self,
        name: &str,
        version: u32,
    ) -> Result<Reply, Reject> {
        let kma = self.kma_mut(name)?;
        kma.software_version = version;
        kma.version = None;
        Ok(Reply::Done)
    }

    /// The full report (log format 2, SPEC C7): only a KMA's own, since the gate trusts it.
    pub(crate) fn report_kma_version(
        &mut self,
        cx: &mut Cx<'_>,
        name: &str,
        version: &KmaVersion,
    ) -> Result<Reply, Reject> {
        let kma = self.kma(name)?;
        if kma.node_id != cx.origin_node_id {
            return Err(Reject::VersionReportFromAnotherKma {
                kma: name.into(),
                node_id: kma.node_id,
                origin_node_id: cx.origin_node_id,
            });
        }
        let invalid = |field: &str, reason: &str| Reject::InvalidSetting {
            field: field.into(),
            reason: reason.into(),
        };
        if version.formats.log < LOG_FORMAT_2 {
            return Err(invalid("log format", "at least 2: a full report is itself of format 2"));
        }
        if version.formats.snapshot == 0 {
            return Err(invalid("snapshot format", "at least 1"));
        }
        let kma = self.kma_mut(name)?;
        kma.software_version = u32::from(version.formats.log);
        kma.version = Some(*version);
        Ok(Reply::Done)
    }

    pub(crate) fn record_communication_error(
        &mut self,
        cx: &mut Cx<'_>,
        from_kma: &str,
        to_kma: &str,
        detail: &str,
    ) -> Result<Reply, Reject> {
        check_name("KMA name", from_kma)?;
        check_name("KMA name", to_kma)?;
        check_text("detail", detail, DETAIL_LEN_MAX, true)?;
        cx.event(AuditWhat::CommunicationError {
            from_kma: from_kma.into(),
            to_kma: to_kma.into(),
            detail: detail.into(),
        });
        Ok(Reply::Done)
    }

    /// Audits a failed proof; from log format 3 it is also counted for a principal that exists
    /// (see [`crate::login_failure`]), so that all KMAs together throttle it.
    pub(crate) fn record_authentication_failure(
        &mut self,
        cx: &mut Cx<'_>,
        principal: &str,
        source: &str,
    ) -> Result<Reply, Reject> {
        check_text("principal", principal, DETAIL_LEN_MAX, true)?;
        check_text("source", source, DETAIL_LEN_MAX, true)?;
        if self.format_rules_apply(LOG_FORMAT_3) && self.login_failures_counted(principal) {
            self.count_login_failure(principal, cx.now_ms);
        }
        cx.event(AuditWhat::AuthenticationFailure {
            principal: principal.into(),
            source: source.into(),
        });
        Ok(Reply::Done)
    }

    pub(crate) fn record_login(
        &mut self,
        cx: &mut Cx<'_>,
        principal: &str,
        source: &str,
    ) -> Result<Reply, Reject> {
        check_text("principal", principal, DETAIL_LEN_MAX, true)?;
        check_text("source", source, DETAIL_LEN_MAX, true)?;
        // The principal proved its passphrase: its failed proofs no longer throttle it.
        self.clear_login_failures(principal);
        cx.event(AuditWhat::Login { principal: principal.into(), source: source.into() });
        Ok(Reply::Done)
    }

    pub(crate) fn set_security_settings(
        &mut self,
        settings: &SecuritySettings,
    ) -> Result<Reply, Reject> {
        let invalid = |field: &str, reason: &str| Reject::InvalidSetting {
            field: field.into(),
            reason: reason.into(),
        };
        if !(8..=1024).contains(&settings.passphrase_len_min) {
            return Err(invalid("passphrase_len_min", "must be 8 to 1024"));
        }
        if !(1..=1000).contains(&settings.login_failures_max) {
            return Err(invalid("login_failures_max", "must be 1 to 1000"));
        }
        if settings.login_throttle_ms > 24 * 3_600_000 {
            return Err(invalid("login_throttle_ms", "must be at most one day"));
        }
        if !(60_000..=QUORUM_OPERATION_TTL_MS_MAX).contains(&settings.quorum_operation_ttl_ms) {
            return Err(invalid("quorum_operation_ttl_ms", "must be one minute to 30 days"));
        }
        self.meta.security = *settings;
        Ok(Reply::Done)
    }

    pub(crate) fn set_key_pool_limits(&mut self, limits: &KeyPoolLimits) -> Result<Reply, Reject> {
        if limits.high_water == 0 || limits.high_water > KEY_POOL_HIGH_WATER_MAX {
            return Err(Reject::InvalidSetting {
                field: "high_water".into(),
                reason: "must be 1 to 2000000".into(),
            });
        }
        if limits.low_water >= limits.high_water {
            return Err(Reject::InvalidSetting {
                field: "low_water".into(),
                reason: "must be below high_water".into(),
            });
        }
        self.meta.pool_limits = *limits;
        Ok(Reply::Done)
    }
}

pub(crate) fn wrong_status(kma: &Kma) -> Reject {
    let status = match kma.status {
        KmaStatus::Created => "created (not joined)",
        KmaStatus::JoinApproved => "join approved (not caught up)",
        KmaStatus::Member => "member",
    };
    Reject::KmaWrongStatus { name: kma.name.clone(), status: status.into() }
}

/// At most ten members with distinct IDs, a threshold of 1..=N, and a wrapped share each.
pub(crate) fn check_quorum(quorum: &Quorum) -> Result<(), Reject> {
    let members = quorum.members.len();
    let problem = if members == 0 {
        Some(QuorumProblem::NoMembers)
    } else if members > QUORUM_MEMBERS_MAX {
        Some(QuorumProblem::TooManyMembers { members_max: QUORUM_MEMBERS_MAX as u32 })
    } else if quorum.threshold == 0 || usize::from(quorum.threshold) > members {
        Some(QuorumProblem::ThresholdOutOfRange {
            threshold: quorum.threshold,
            members: members as u32,
        })
    } else if quorum.members.iter().map(|m| m.id.as_str()).collect::<BTreeSet<_>>().len() != members
    {
        Some(QuorumProblem::DuplicateMember)
    } else if quorum
        .members
        .iter()
        .any(|m| check_blob("share", &m.wrapped_share, SHARE_LEN_MAX).is_err())
    {
        Some(QuorumProblem::ShareMissingOrTooLarge)
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(Reject::InvalidQuorum { problem });
    }
    quorum.members.iter().try_for_each(|member| check_name("quorum member ID", &member.id))
}

impl State {
    pub(crate) fn user_mut(&mut self, id: &str) -> Result<&mut User, Reject> {
        self.meta.users.get_mut(id).ok_or_else(|| Reject::UnknownUser { user: id.into() })
    }

    /// Whether some enabled Security Officer other than `id` remains.
    fn other_security_officer(&self, id: &str) -> bool {
        self.meta
            .users
            .values()
            .any(|user| user.id != id && user.enabled && user.roles.contains(Role::SecurityOfficer))
    }

    pub(crate) fn create_user(
        &mut self,
        cx: &mut Cx<'_>,
        id: &str,
        roles: RoleSet,
        passphrase_verifier: &[u8],
    ) -> Result<Reply, Reject> {
        check_name("user ID", id)?;
        check_verifier(passphrase_verifier)?;
        if roles.is_empty() || !roles.is_valid() {
            return Err(Reject::NoRoles);
        }
        if self.meta.users.contains_key(id) {
            return Err(Reject::UserExists { user: id.into() });
        }
        check_count("users", self.meta.users.len() + 1, USERS_MAX)?;
        let user = User {
            id: id.into(),
            roles,
            enabled: true,
            passphrase_verifier: passphrase_verifier.into(),
            created_at_ms: cx.now_ms,
            sessions: Vec::new(),
        };
        self.meta.users.insert(id.into(), user);
        Ok(Reply::Done)
    }

    /// Keeps the user's sessions: a certificate names the user, not its roles, which every
    /// request reads from the state, so the new roles hold at once without a new login.
    pub(crate) fn set_user_roles(&mut self, id: &str, roles: RoleSet) -> Result<Reply, Reject> {
        if roles.is_empty() || !roles.is_valid() {
            return Err(Reject::NoRoles);
        }
        self.user_mut(id)?;
        if !roles.contains(Role::SecurityOfficer) && !self.other_security_officer(id) {
            return Err(Reject::LastSecurityOfficer);
        }
        self.user_mut(id)?.roles = roles;
        Ok(Reply::Done)
    }

    pub(crate) fn set_user_enabled(&mut self, id: &str, enabled: bool) -> Result<Reply, Reject> {
        self.user_mut(id)?;
        if !enabled && !self.other_security_officer(id) {
            return Err(Reject::LastSecurityOfficer);
        }
        let user = self.user_mut(id)?;
        user.enabled = enabled;
        if !enabled {
            // Revokes its session certificates on every KMA (issue 16 point 2); enabling it
            // again brings none back: the user logs in anew.
            user.sessions.clear();
        }
        Ok(Reply::Done)
    }

    pub(crate) fn set_user_passphrase(
        &mut self,
        id: &str,
        verifier: &[u8],
    ) -> Result<Reply, Reject> {
        check_verifier(verifier)?;
        let user = self.user_mut(id)?;
        user.passphrase_verifier = verifier.into();
        // A new passphrase is what one sets when the old one or a terminal was lost: the
        // sessions started with the old one end with it, on every KMA. The failed proofs of
        // the old one no longer throttle the new one.
        user.sessions.clear();
        self.clear_login_failures(id);
        Ok(Reply::Done)
    }

    pub(crate) fn delete_user(&mut self, id: &str) -> Result<Reply, Reject> {
        self.user_mut(id)?;
        if !self.other_security_officer(id) {
            return Err(Reject::LastSecurityOfficer);
        }
        // Its session certificates go with its record: no listener accepts them any more.
        self.meta.users.remove(id);
        self.drop_login_failures_of_deleted(id);
        Ok(Reply::Done)
    }
}

impl State {
    pub(crate) fn start_quorum_operation(
        &mut self,
        cx: &mut Cx<'_>,
        operation: &QuorumOperation,
        ttl_ms: Option<u64>,
    ) -> Result<Reply, Reject> {
        self.check_quorum_operation(operation)?;
        let ttl_ms = ttl_ms.unwrap_or(self.meta.security.quorum_operation_ttl_ms);
        if ttl_ms == 0 || ttl_ms > QUORUM_OPERATION_TTL_MS_MAX {
            return Err(Reject::InvalidSetting {
                field: "ttl_ms".into(),
                reason: "must be above zero and at most 30 days".into(),
            });
        }
        let pending = self.meta.quorum_operations.len() + 1;
        check_count("pending quorum operations", pending, QUORUM_OPERATIONS_PENDING_MAX)?;
        let id = self.meta.next_quorum_operation_id;
        self.meta.next_quorum_operation_id += 1;
        let expires_at_ms = cx.now_ms.saturating_add(ttl_ms);
        let started_by = match cx.actor {
            crate::command::Actor::User(user) => user.clone(),
            _ => String::new(),
        };
        let op = PendingQuorumOperation {
            id,
            operation: operation.clone(),
            started_by,
            started_at_ms: cx.now_ms,
            expires_at_ms,
            approvals: BTreeSet::new(),
        };
        self.meta.quorum_operations.insert(id, op);
        Ok(Reply::QuorumOperationStarted { id, expires_at_ms })
    }

    /// Whether the operation could run now; checked when it starts and again when it completes,
    /// since the state may have changed while approvals were collected.
    fn check_quorum_operation(&self, operation: &QuorumOperation) -> Result<(), Reject> {
        match operation {
            QuorumOperation::JoinKma { kma } => {
                let kma = self.kma(kma)?;
                if kma.status != KmaStatus::Created {
                    return Err(wrong_status(kma));
                }
                // A KMA approved to join during a CA rotation could get no certificate (its
                // grant waits for the rotation), yet the rotation would wait for it to reissue.
                self.check_no_ca_rotation()?;
            }
            QuorumOperation::UnlockKma { kma }
            | QuorumOperation::EnableAutonomousUnlock { kma } => {
                let kma = self.kma(kma)?;
                if kma.status != KmaStatus::Member {
                    return Err(wrong_status(kma));
                }
            }
            QuorumOperation::ChangeQuorum { quorum } => check_quorum(quorum)?,
            QuorumOperation::CreateTransferPartner { name, public_key } => {
                self.check_new_partner(name, public_key)?;
            }
            QuorumOperation::RestoreFromBackup { backup_id } => {
                // Retired from log format 3 (issue 17): a restore replaces the state of a
                // factory-fresh KMA, which no entry of the cluster being replaced can do. Also
                // at the completion of one started before: it would restore nothing.
                if self.format_rules_apply(LOG_FORMAT_3) {
                    return Err(Reject::RestoreIsALocalCeremony);
                }
                let backup = self
                    .meta
                    .backups
                    .get(backup_id)
                    .ok_or(Reject::UnknownBackup { id: *backup_id })?;
                if backup.destroyed {
                    return Err(Reject::BackupAlreadyDestroyed { id: *backup_id });
                }
            }
            QuorumOperation::RotateCa => self.check_ca_rotation_start()?,
        }
        Ok(())
    }

    pub(crate) fn approve_quorum_operation(
        &mut self,
        cx: &mut Cx<'_>,
        id: u64,
        member: &str,
    ) -> Result<Reply, Reject> {
        self.check_approval(id, member, cx.now_ms)?;
        let op =
            self.meta.quorum_operations.get(&id).ok_or(Reject::UnknownQuorumOperation { id })?;
        let approvals = self.approvals_counted(op) + 1;
        let threshold = u32::from(self.meta.quorum.threshold);
        let completed = approvals >= threshold;
        let operation = op.operation.clone();
        if completed {
            self.check_quorum_operation(&operation)?;
        }

        cx.event(AuditWhat::QuorumApproval { id, member: member.into(), approvals, threshold });
        if completed {
            self.meta.quorum_operations.remove(&id);
            self.run_quorum_operation(cx, id, &operation);
            cx.event(AuditWhat::QuorumOperationCompleted { id });
        } else if let Some(op) = self.meta.quorum_operations.get_mut(&id) {
            op.approvals.insert(member.into());
        }
        Ok(Reply::QuorumApproval { id, approvals, threshold, completed })
    }

    /// The effect of an approved quorum operation; checked by `check_quorum_operation`.
    fn run_quorum_operation(&mut self, cx: &mut Cx<'_>, id: u64, operation: &QuorumOperation) {
        if let Some(change) = self.quorum_operation_change(operation) {
            cx.event(change);
        }
        match operation {
            QuorumOperation::JoinKma { kma } => {
                // From log format 3 the joiner is taken to read the cluster's log format until
                // it reports its own (issue 16 point 2): it must, to replay a log that holds
                // format-3 entries (the CA key's record is one of the first). Otherwise the
                // cluster's format would dip to the baseline until the joiner starts and
                // reports, and with it the rules of format 3: listeners would accept user
                // certificates by name, and logins would record no session meanwhile.
                let assumed = self
                    .format_rules_apply(LOG_FORMAT_3)
                    .then(|| u32::from(self.cluster_format_version()));
                if let Some(kma) = self.meta.kmas.get_mut(kma) {
                    kma.status = KmaStatus::JoinApproved;
                    if let Some(log_format) = assumed.filter(|_| kma.version.is_none()) {
                        kma.software_version = kma.software_version.max(log_format);
                    }
                }
            }
            QuorumOperation::UnlockKma { kma } => {
                if let Some(kma) = self.meta.kmas.get_mut(kma) {
                    kma.locked = false;
                }
            }
            QuorumOperation::EnableAutonomousUnlock { kma } => {
                if let Some(kma) = self.meta.kmas.get_mut(kma) {
                    kma.autonomous_unlock = true;
                }
            }
            QuorumOperation::ChangeQuorum { quorum } => self.change_quorum(cx, quorum),
            QuorumOperation::CreateTransferPartner { name, public_key } => {
                self.insert_partner(cx, name, public_key);
            }
            // The restore itself replaces a fresh KMA's state outside `apply`; the approval is
            // what the state records.
            QuorumOperation::RestoreFromBackup { .. } => {}
            QuorumOperation::RotateCa => self.approve_ca_rotation(cx, id),
        }
    }

    /// The new quorum replaces the old one. From log format 3 the pending operations also lose
    /// the approvals of the members it removed (issue 16 point 9): format 2 already stopped
    /// counting them (`approvals_counted`), but kept them, so that a member removed and added
    /// back counted again an approval given before, and could not approve anew.
    ///
    /// From log format 3 the entry's index is the new quorum version
    /// (`Meta::quorum_changed_index`): a core security backup of the old quorum no longer
    /// restores this one, so the audit log reminds that a new one is due (issue 17).
    fn change_quorum(&mut self, cx: &mut Cx<'_>, quorum: &Quorum) {
        self.meta.quorum = quorum.clone();
        if self.format_rules_apply(LOG_FORMAT_3) {
            self.meta.quorum_changed_index = cx.index;
            cx.event(AuditWhat::CoreSecurityBackupDue { quorum_changed_index: cx.index });
            for op in self.meta.quorum_operations.values_mut() {
                op.approvals.retain(|member| quorum.is_member(member));
                debug_assert!(op.approvals.len() <= QUORUM_MEMBERS_MAX, "members approve once");
            }
        }
    }

    pub(crate) fn cancel_quorum_operation(&mut self, id: u64) -> Result<Reply, Reject> {
        if self.meta.quorum_operations.remove(&id).is_none() {
            return Err(Reject::UnknownQuorumOperation { id });
        }
        Ok(Reply::Done)
    }

    /// Drops quorum operations whose time is up; part of the pulse.
    pub(crate) fn expire_quorum_operations(&mut self, cx: &mut Cx<'_>) {
        let now_ms = cx.now_ms;
        let expired: Vec<u64> = self
            .meta
            .quorum_operations
            .values()
            .filter(|op| op.expires_at_ms <= now_ms)
            .map(|op| op.id)
            .collect();
        for id in expired {
            self.meta.quorum_operations.remove(&id);
            cx.event(AuditWhat::QuorumOperationExpired { id });
        }
    }
}
