//! What a command changed, for the audit log (SPEC S5; issue 16 point 9): the `Command` record
//! says who asked what kind of thing; these say to what and to which value, for the commands
//! that change who may do what (users, agents), who is in the cluster (KMAs, the quorum) and
//! which CA vouches for them (the cluster CA's key, and its rotation).
//! A rule of log format 3: the events are part of the audit chain, so every KMA emits them
//! alike or none does (see [`crate::format`], rule 2).
//!
//! Only new values and names: a passphrase verifier, a wrapped share or key never enters the
//! audit log (SPEC S5).
//!
//! One change is a consequence rather than a command's own: the old CA's retirement, by the
//! last KMA's adoption of the new CA or by the deletion of the last KMA missing. `apply` tells
//! it after the command's own change, by comparing the CA being retired before and after
//! ([`State::ca_retired_since`]), so that the rule of when it happens is decided once, by the
//! handlers.

use crate::audit::{AgentChange, AuditWhat, KmaChange, UserChange};
use crate::command::Command;
use crate::format::LOG_FORMAT_3;
use crate::ids::Fingerprint;
use crate::quorum::{Quorum, QuorumOperation};
use crate::state::State;

impl State {
    /// The change `command` makes if it applies, by the state before it (a deleted KMA's node
    /// ID is gone after), or `None` for a command of another kind or below format 3.
    pub(crate) fn change_of(&self, command: &Command) -> Option<AuditWhat> {
        let change = user_change(command)
            .or_else(|| agent_change(command))
            .or_else(|| self.kma_change(command))
            .or_else(|| self.ca_change(command))?;
        // Asked last: the format costs a look at every KMA, and most commands change nothing
        // recorded here.
        self.format_rules_apply(LOG_FORMAT_3).then_some(change)
    }

    /// The change an approved quorum operation makes, or `None` below format 3 or for one
    /// recorded otherwise (a transfer partner, a restore).
    pub(crate) fn quorum_operation_change(&self, operation: &QuorumOperation) -> Option<AuditWhat> {
        let change = match operation {
            QuorumOperation::JoinKma { kma } => self.kma_event(kma, KmaChange::JoinApproved)?,
            QuorumOperation::UnlockKma { kma } => self.kma_event(kma, KmaChange::Unlocked)?,
            QuorumOperation::EnableAutonomousUnlock { kma } => {
                self.kma_event(kma, KmaChange::AutonomousUnlock { enabled: true })?
            }
            QuorumOperation::ChangeQuorum { quorum } => quorum_changed(quorum),
            QuorumOperation::RotateCa => {
                let retiring = self.meta.ca_key.as_ref()?;
                let ca_certificate_sha256 = Fingerprint(retiring.ca_certificate_sha256);
                AuditWhat::CaRotationApproved { ca_certificate_sha256 }
            }
            QuorumOperation::CreateTransferPartner { .. }
            | QuorumOperation::RestoreFromBackup { .. } => return None,
        };
        self.format_rules_apply(LOG_FORMAT_3).then_some(change)
    }

    fn kma_change(&self, command: &Command) -> Option<AuditWhat> {
        use Command as C;
        match command {
            C::CreateKma { name, site, .. } => Some(AuditWhat::KmaChanged {
                kma: name.clone(),
                // The node ID `create_kma` gives.
                node_id: self.meta.next_node_id,
                change: KmaChange::Created { site: site.clone() },
            }),
            C::KmaJoined { name } => self.kma_event(name, KmaChange::Joined),
            C::DeleteKma { name } => self.kma_event(name, KmaChange::Deleted),
            C::LockKma { name } => self.kma_event(name, KmaChange::Locked),
            C::DisableAutonomousUnlock { name } => {
                self.kma_event(name, KmaChange::AutonomousUnlock { enabled: false })
            }
            // Only the first record: the same one retried changes nothing.
            C::GrantKmaJoin { name, certificate_sha256 } if self.kma_without_certificate(name) => {
                let change = KmaChange::JoinGranted { certificate_sha256: *certificate_sha256 };
                self.kma_event(name, change)
            }
            C::RecordMemberUnlock { kma, members } => {
                self.kma_event(kma, KmaChange::UnlockedByMembers { members: members.clone() })
            }
            C::RecordKmaCertificate { name, certificate_sha256 }
                if self.kma_without_certificate(name) =>
            {
                let change =
                    KmaChange::CertificateRecorded { certificate_sha256: *certificate_sha256 };
                self.kma_event(name, change)
            }
            // Each new certificate, not the same one retried.
            C::RecordReissuedKmaCertificate { name, certificate_sha256 }
                if self.reissued_certificate(name) != Some(*certificate_sha256) =>
            {
                let change =
                    KmaChange::CertificateReissued { certificate_sha256: *certificate_sha256 };
                self.kma_event(name, change)
            }
            // The first record, not the same one retried.
            C::RecordCaAdopted { name } if self.kma_to_adopt(name) => {
                let ca_key = self.meta.ca_key.as_ref()?;
                let change =
                    KmaChange::AdoptedNewCa { ca_certificate_sha256: ca_key.ca_certificate_sha256 };
                self.kma_event(name, change)
            }
            _ => None,
        }
    }

    /// The cluster CA's key recorded, a CA rotation begun or completed: fingerprints only.
    /// Only the first record of a key or of a new CA: the same one retried changes nothing,
    /// another is refused.
    fn ca_change(&self, command: &Command) -> Option<AuditWhat> {
        match command {
            Command::RecordCaKey { ca_certificate_sha256, .. } => {
                let ca_certificate_sha256 = Fingerprint(*ca_certificate_sha256);
                let change = AuditWhat::CaKeyRecorded { ca_certificate_sha256 };
                self.meta.ca_key.is_none().then_some(change)
            }
            Command::BeginCaRotation { ca_certificate_sha256, .. } => {
                let ca_certificate_sha256 = Fingerprint(*ca_certificate_sha256);
                let rotation = self.meta.ca_rotation.as_ref()?;
                let change = AuditWhat::CaRotationBegun { ca_certificate_sha256 };
                rotation.new_ca.is_none().then_some(change)
            }
            Command::CompleteCaRotation => {
                let retired = self.meta.ca_key.as_ref()?;
                let (_, new_ca) = self.begun_ca_rotation().ok()?;
                let sessions: usize =
                    self.meta.users.values().map(|user| user.sessions.len()).sum();
                Some(AuditWhat::CaRotationCompleted {
                    retired_ca_certificate_sha256: Fingerprint(retired.ca_certificate_sha256),
                    ca_certificate_sha256: Fingerprint(new_ca.ca_key.ca_certificate_sha256),
                    // At most USERS_MAX times USER_SESSIONS_MAX: far below u32::MAX.
                    user_sessions_ended: u32::try_from(sessions).unwrap_or(u32::MAX),
                })
            }
            _ => None,
        }
    }

    /// The fingerprint of the old CA being retired, taken before a command runs for
    /// [`State::ca_retired_since`]; `None` when none is, and below format 3 (judged by the state
    /// before the command, as `change_of`).
    pub(crate) fn retiring_ca_audited(&self) -> Option<[u8; 32]> {
        let retiring = self.meta.retiring_ca.as_ref()?;
        // Asked last: the format costs a look at every KMA.
        self.format_rules_apply(LOG_FORMAT_3).then_some(retiring.ca_certificate_sha256)
    }

    /// `CaRetired` when the command just applied retired the CA that was retiring before it
    /// (`retiring`, from [`State::retiring_ca_audited`]); `None` otherwise. No entry ends one
    /// retirement and starts another (a rotation cannot complete while an old CA retires), so
    /// the CA is retired when the state no longer holds it as retiring.
    pub(crate) fn ca_retired_since(&self, retiring: Option<[u8; 32]>) -> Option<AuditWhat> {
        let retired = retiring?;
        let still = self.meta.retiring_ca.as_ref().map(|now| now.ca_certificate_sha256);
        (still != Some(retired))
            .then_some(AuditWhat::CaRetired { ca_certificate_sha256: Fingerprint(retired) })
    }

    fn kma_without_certificate(&self, name: &str) -> bool {
        self.meta.kmas.get(name).is_some_and(|kma| kma.certificate_sha256.is_none())
    }

    fn kma_event(&self, name: &str, change: KmaChange) -> Option<AuditWhat> {
        let kma = self.meta.kmas.get(name)?;
        Some(AuditWhat::KmaChanged { kma: kma.name.clone(), node_id: kma.node_id, change })
    }
}

fn user_change(command: &Command) -> Option<AuditWhat> {
    use Command as C;
    let (user, change) = match command {
        C::CreateUser { id, roles, .. } => (id, UserChange::Created { roles: *roles }),
        C::SetUserRoles { id, roles } => (id, UserChange::Roles { roles: *roles }),
        C::SetUserEnabled { id, enabled } => (id, UserChange::Enabled { enabled: *enabled }),
        C::SetUserPassphrase { id, .. } => (id, UserChange::PassphraseSet),
        C::DeleteUser { id } => (id, UserChange::Deleted),
        _ => return None,
    };
    Some(AuditWhat::UserChanged { user: user.clone(), change })
}

fn agent_change(command: &Command) -> Option<AuditWhat> {
    use Command as C;
    let (agent, change) = match command {
        C::CreateAgent { id, site, .. } => (id, AgentChange::Created { site: site.clone() }),
        C::SetAgentPassphrase { id, .. } => (id, AgentChange::PassphraseSet),
        C::SetAgentEnabled { id, enabled } => (id, AgentChange::Enabled { enabled: *enabled }),
        C::SetAgentSite { id, site } => (id, AgentChange::Site { site: site.clone() }),
        C::DeleteAgent { id } => (id, AgentChange::Deleted),
        C::RecordAgentEnrollment { id, certificate_fingerprint } => {
            (id, AgentChange::Enrolled { certificate_fingerprint: *certificate_fingerprint })
        }
        C::AssignKeyGroupToAgent { agent, group } => {
            (agent, AgentChange::KeyGroupAssigned { group: group.clone() })
        }
        C::UnassignKeyGroupFromAgent { agent, group } => {
            (agent, AgentChange::KeyGroupUnassigned { group: group.clone() })
        }
        C::SetAgentDefaultKeyGroup { agent, group } => {
            (agent, AgentChange::DefaultKeyGroup { group: group.clone() })
        }
        _ => return None,
    };
    Some(AuditWhat::AgentChanged { agent: agent.clone(), change })
}

fn quorum_changed(quorum: &Quorum) -> AuditWhat {
    let members = quorum.members.iter().map(|member| member.id.clone()).collect();
    AuditWhat::QuorumChanged { members, threshold: quorum.threshold }
}
