//! The one door through which the state changes: [`State::apply`].
//!
//! Every handler first checks (no mutation), then mutates (no failure), so a rejected command
//! leaves the state exactly as it was: no partial effects, ever.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::apply_backup::NewBackup;
use crate::audit::{AuditEvent, AuditLink, AuditWhat, ChainedAuditEvent, Outcome};
use crate::cluster::UserSession;
use crate::command::{Actor, Command, Envelope};
use crate::digest::body_digest;
use crate::ids::NodeId;
use crate::limits::{CLIENT_OUTCOMES_KEPT, CLIENT_SESSIONS_PER_ACTOR_MAX};
use crate::permission::Access;
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::{ClientSession, RecordedOutcome, State};

/// The result of applying one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub result: Result<Reply, Reject>,
    /// In order; the first is always the `AuditWhat::Command` record of the entry itself.
    pub events: Vec<AuditEvent>,
    /// Where each event sits in the audit chain: `links[i]` is that of `events[i]`. Apart, so
    /// that readers of the events alone are not touched by the chain.
    pub links: Vec<AuditLink>,
}

impl Applied {
    /// The events with their places in the chain, as the audit log stores them.
    pub fn chained_events(&self) -> impl Iterator<Item = ChainedAuditEvent> + '_ {
        assert_eq!(self.events.len(), self.links.len(), "one chain link per audit event");
        self.events.iter().zip(&self.links).map(|(event, link)| ChainedAuditEvent {
            seq: link.seq,
            link: link.link,
            event: event.clone(),
        })
    }

    /// The result, and the events with their places in the chain, without copying the events.
    pub fn into_chained(self) -> (Result<Reply, Reject>, Vec<ChainedAuditEvent>) {
        assert_eq!(self.events.len(), self.links.len(), "one chain link per audit event");
        let events = self.events.into_iter().zip(self.links);
        let chained = events
            .map(|(event, link)| ChainedAuditEvent { seq: link.seq, link: link.link, event })
            .collect();
        (self.result, chained)
    }
}

/// What a handler knows about the entry being applied.
pub(crate) struct Cx<'a> {
    pub index: u64,
    pub now_ms: u64,
    pub actor: &'a Actor,
    /// The KMA that accepted the command from its actor.
    pub origin_node_id: NodeId,
    pub events: Vec<AuditEvent>,
}

impl Cx<'_> {
    pub fn event(&mut self, what: AuditWhat) {
        self.events.push(AuditEvent { index: self.index, at_ms: self.now_ms, what });
    }
}

impl State {
    /// Applies the log entry at `index`. Pure: the same state and entry give the same result,
    /// events and next state on every node.
    pub fn apply(&mut self, index: u64, envelope: &Envelope) -> Applied {
        let now_ms = envelope.time_ms.max(self.meta.time_ms_last);
        self.meta.time_ms_last = now_ms;
        self.meta.last_applied_index = index;
        let kind = envelope.command.kind();
        let mut cx = Cx {
            index,
            now_ms,
            actor: &envelope.actor,
            origin_node_id: envelope.origin_node_id,
            events: Vec::new(),
        };

        let result = match self.replayed(envelope) {
            Some(replayed) => {
                if let (Ok(_), Some(request_id)) = (&replayed, envelope.request_id) {
                    cx.event(AuditWhat::RequestReplayed { request_id });
                }
                replayed
            }
            None => {
                // Taken before the command runs: a deleted KMA's node ID is gone after.
                let change = self.change_of(&envelope.command);
                let retiring = self.retiring_ca_audited();
                let result = self
                    .check_access(&envelope.actor, Access::Command(kind))
                    .and_then(|()| self.check_format(&envelope.command))
                    .and_then(|()| self.execute(&mut cx, &envelope.command));
                if let (Ok(_), Some(change)) = (&result, change) {
                    cx.event(change);
                }
                // After the change that caused it (an adoption, a deletion).
                if let Some(retired) = self.ca_retired_since(retiring).filter(|_| result.is_ok()) {
                    cx.event(retired);
                }
                self.remember(envelope, now_ms, &result);
                result
            }
        };

        let outcome = match &result {
            Ok(_) => Outcome::Applied,
            Err(reject) => Outcome::Rejected { code: reject.code() },
        };
        let record = AuditWhat::Command {
            kind,
            actor: envelope.actor.clone(),
            origin_node_id: envelope.origin_node_id,
            request_id: envelope.request_id,
            outcome,
        };
        let mut events = Vec::with_capacity(cx.events.len() + 1);
        events.push(AuditEvent { index, at_ms: now_ms, what: record });
        events.append(&mut cx.events);
        let chain_before = self.meta.audit_chain;
        let links: Vec<AuditLink> =
            events.iter().map(|event| self.meta.audit_chain.append(event)).collect();
        assert_eq!(
            self.meta.audit_chain.events,
            chain_before.events + events.len() as u64,
            "the audit chain advances by one link per returned event"
        );
        #[cfg(debug_assertions)]
        self.check_invariants();
        Applied { result, events, links }
    }

    /// The remembered outcome of a retried request, or a rejection when the request ID is
    /// reused for another command or is too old to be answered.
    fn replayed(&self, envelope: &Envelope) -> Option<Result<Reply, Reject>> {
        let request_id = envelope.request_id?;
        let session = self.meta.sessions.get(&envelope.actor)?.get(&request_id.client)?;
        let digest = body_digest(&envelope.command);
        if let Some(outcome) = session.outcomes.iter().find(|o| o.seq == request_id.seq) {
            if outcome.body_digest != digest {
                return Some(Err(Reject::ExistsWithDifferentBody {
                    client: request_id.client,
                    seq: request_id.seq,
                }));
            }
            return Some(outcome.result.clone());
        }
        let oldest = session.outcomes.front().map(|o| o.seq)?;
        if session.outcomes.len() >= CLIENT_OUTCOMES_KEPT && request_id.seq < oldest {
            return Some(Err(Reject::RequestTooOld {
                client: request_id.client,
                seq: request_id.seq,
                kept: CLIENT_OUTCOMES_KEPT as u32,
            }));
        }
        None
    }

    /// Keeps the outcome of a request for its retries. Retryable rejections are not kept: the
    /// retry must run again.
    fn remember(&mut self, envelope: &Envelope, now_ms: u64, result: &Result<Reply, Reject>) {
        let Some(request_id) = envelope.request_id else {
            return;
        };
        if matches!(result, Err(reject) if reject.is_retryable()) {
            return;
        }
        let body_digest = body_digest(&envelope.command);
        let sessions = self.meta.sessions.entry(envelope.actor.clone()).or_default();
        if !sessions.contains_key(&request_id.client)
            && sessions.len() >= CLIENT_SESSIONS_PER_ACTOR_MAX
        {
            let idle = sessions.iter().min_by_key(|(_, session)| session.last_used_ms);
            if let Some(idle_client) = idle.map(|(client, _)| *client) {
                sessions.remove(&idle_client);
            }
        }
        let session: &mut ClientSession = sessions.entry(request_id.client).or_default();
        session.last_used_ms = now_ms;
        if session.outcomes.len() >= CLIENT_OUTCOMES_KEPT {
            session.outcomes.pop_front();
        }
        let outcome = RecordedOutcome { seq: request_id.seq, body_digest, result: result.clone() };
        // Kept sorted by seq so the oldest is in front even when requests arrive out of order.
        let at = session.outcomes.partition_point(|o| o.seq < request_id.seq);
        session.outcomes.insert(at, outcome);
    }

    /// The only `match` over commands that changes state: one handler per intent.
    #[allow(clippy::too_many_lines)] // One arm per command: the dispatch table reads best whole.
    fn execute(&mut self, cx: &mut Cx<'_>, command: &Command) -> Result<Reply, Reject> {
        use Command as C;
        match command {
            C::InitCluster(init) => self.init_cluster(cx, init),
            C::CreateSite { name } => self.create_site(cx, name),
            C::DeleteSite { name } => self.delete_site(name),
            C::CreateKma { name, site, passphrase_verifier } => {
                self.create_kma(cx, name, site, passphrase_verifier)
            }
            C::KmaJoined { name } => self.kma_joined(cx, name),
            C::DeleteKma { name } => self.delete_kma(name),
            C::LockKma { name } => self.lock_kma(name),
            C::DisableAutonomousUnlock { name } => self.disable_autonomous_unlock(name),
            C::ReportSoftwareVersion { kma, version } => {
                self.report_software_version(kma, *version)
            }
            C::RecordCommunicationError { from_kma, to_kma, detail } => {
                self.record_communication_error(cx, from_kma, to_kma, detail)
            }
            C::SetSecuritySettings(settings) => self.set_security_settings(settings),
            C::SetKeyPoolLimits(limits) => self.set_key_pool_limits(limits),
            C::CreateUser { id, roles, passphrase_verifier } => {
                self.create_user(cx, id, *roles, passphrase_verifier)
            }
            C::SetUserRoles { id, roles } => self.set_user_roles(id, *roles),
            C::SetUserEnabled { id, enabled } => self.set_user_enabled(id, *enabled),
            C::SetUserPassphrase { id, passphrase_verifier } => {
                self.set_user_passphrase(id, passphrase_verifier)
            }
            C::DeleteUser { id } => self.delete_user(id),
            C::RecordAuthenticationFailure { principal, source } => {
                self.record_authentication_failure(cx, principal, source)
            }
            C::StartQuorumOperation { operation, ttl_ms } => {
                self.start_quorum_operation(cx, operation, *ttl_ms)
            }
            C::ApproveQuorumOperation { id, member } => {
                self.approve_quorum_operation(cx, *id, member)
            }
            C::CancelQuorumOperation { id } => self.cancel_quorum_operation(*id),
            C::CreateKeyPolicy {
                name,
                encryption_period_ms,
                cryptoperiod_ms,
                allow_export,
                allow_import,
            } => self.create_key_policy(
                name,
                *encryption_period_ms,
                *cryptoperiod_ms,
                (*allow_export, *allow_import),
            ),
            C::SetKeyPolicyFlags { name, allow_export, allow_import } => {
                self.set_key_policy_flags(name, *allow_export, *allow_import)
            }
            C::DeleteKeyPolicy { name } => self.delete_key_policy(name),
            C::CreateKeyGroup { name, policy } => self.create_key_group(cx, name, policy),
            C::DeleteKeyGroup { name } => self.delete_key_group(name),
            C::CreateAgent { id, site, passphrase_verifier } => {
                self.create_agent(cx, id, site, passphrase_verifier)
            }
            C::SetAgentPassphrase { id, passphrase_verifier } => {
                self.set_agent_passphrase(id, passphrase_verifier)
            }
            C::SetAgentEnabled { id, enabled } => self.set_agent_enabled(id, *enabled),
            C::SetAgentSite { id, site } => self.set_agent_site(id, site),
            C::DeleteAgent { id } => self.delete_agent(id),
            C::RecordAgentEnrollment { id, certificate_fingerprint } => {
                self.record_agent_enrollment(id, *certificate_fingerprint)
            }
            C::AssignKeyGroupToAgent { agent, group } => self.assign_group_to_agent(agent, group),
            C::UnassignKeyGroupFromAgent { agent, group } => {
                self.unassign_group_from_agent(agent, group)
            }
            C::SetAgentDefaultKeyGroup { agent, group } => {
                self.set_agent_default_group(agent, group)
            }
            C::GeneratePoolKeys { keys } => self.generate_pool_keys(cx, keys),
            C::QuarantineKeyPool => self.quarantine_key_pool(cx),
            C::Pulse => self.pulse(cx),
            C::CreateDataUnit { external_tag } => self.create_data_unit(cx, external_tag),
            C::AssignWriteKey { data_unit, from_bot } => {
                self.assign_write_key(cx, *data_unit, *from_bot)
            }
            C::DisassociateKeysOnBot { data_unit } => self.disassociate_keys_on_bot(cx, *data_unit),
            C::AssociateKeyForRead { key_id, data_unit, external_tag } => {
                self.associate_key_for_read(cx, key_id, *data_unit, external_tag)
            }
            C::CompromiseKeys { keys } => self.compromise_keys(cx, keys),
            C::DestroyKeys { keys } => self.destroy_keys(cx, keys),
            C::DestroyDataUnitKeys { data_units, selection, preview_digest } => {
                self.destroy_data_unit_keys(cx, data_units, *selection, *preview_digest)
            }
            C::ChangeDataUnitKeyGroup { data_units, group, preview_digest } => {
                self.change_data_unit_key_group(cx, data_units, group, *preview_digest)
            }
            C::SetTransferKeyPair { public_key, wrapped_private_key } => {
                self.set_transfer_key_pair(cx, public_key, wrapped_private_key)
            }
            C::DeleteTransferPartner { name } => self.delete_transfer_partner(name),
            C::AssignKeyGroupToPartner { partner, group, direction } => {
                self.assign_group_to_partner(partner, group, *direction)
            }
            C::UnassignKeyGroupFromPartner { partner, group, direction } => {
                self.unassign_group_from_partner(partner, group, *direction)
            }
            C::RecordKeyExport { partner, data_units } => {
                self.record_key_export(cx, partner, data_units)
            }
            C::ImportTransferredKeys { partner, group, data_units } => {
                self.import_transferred_keys(cx, partner, group, data_units)
            }
            C::Import1xKeys { group, keys } => self.import_1x_keys(cx, group, keys),
            C::RecordBackupBeforeFormat3 { kind, kma, file_name, covers_index } => {
                let new = NewBackup {
                    kind: *kind,
                    kma,
                    file_name,
                    covers_index: *covers_index,
                    taken_by: "",
                    size_bytes: 0,
                    file_sha256: [0; 32],
                    state_sha256: [0; 32],
                    backup_uuid: [0; 16],
                };
                self.record_backup(cx, &new)
            }
            C::MarkBackupDestroyed { id } => self.mark_backup_destroyed(cx, *id),
            C::SetBackupSchedule { schedule } => self.set_backup_schedule(schedule.as_ref()),
            C::RecordLogin { principal, source } => self.record_login(cx, principal, source),
            C::ReportKmaVersion { kma, version } => self.report_kma_version(cx, kma, version),
            C::DestroyKeysPreviewed { keys, preview_digest } => {
                self.destroy_keys_previewed(cx, keys, *preview_digest)
            }
            C::RecordUserSession { principal, source, certificate_sha256, expires_at_ms } => {
                let session = UserSession {
                    certificate_sha256: *certificate_sha256,
                    expires_at_ms: *expires_at_ms,
                };
                self.record_user_session(cx, principal, source, session)
            }
            C::GrantKmaJoin { name, certificate_sha256 } => {
                self.grant_kma_join(name, *certificate_sha256)
            }
            C::RecordKmaCertificate { name, certificate_sha256 } => {
                self.record_kma_certificate(cx, name, *certificate_sha256)
            }
            C::RecordCaKey { ca_certificate_sha256, wrapped_key } => {
                self.record_ca_key(*ca_certificate_sha256, wrapped_key)
            }
            C::RecordMemberUnlock { kma, members } => self.record_member_unlock(cx, kma, members),
            C::BeginCaRotation { ca_certificate_der, ca_certificate_sha256, wrapped_key } => {
                self.begin_ca_rotation(ca_certificate_der, *ca_certificate_sha256, wrapped_key)
            }
            C::RecordReissuedKmaCertificate { name, certificate_sha256 } => {
                self.record_reissued_kma_certificate(cx, name, *certificate_sha256)
            }
            C::CompleteCaRotation => self.complete_ca_rotation(cx),
            C::RecordCaAdopted { name } => self.record_ca_adopted(cx, name),
            C::RecordBackup {
                kind,
                kma,
                file_name,
                covers_index,
                taken_by,
                size_bytes,
                file_sha256,
                state_sha256,
                backup_uuid,
            } => {
                let new = NewBackup {
                    kind: *kind,
                    kma,
                    file_name,
                    covers_index: *covers_index,
                    taken_by,
                    size_bytes: *size_bytes,
                    file_sha256: *file_sha256,
                    state_sha256: *state_sha256,
                    backup_uuid: *backup_uuid,
                };
                self.record_backup(cx, &new)
            }
            C::RecordBackupDrill { backup_id, kma, passed, detail } => {
                self.record_backup_drill(cx, *backup_id, kma, *passed, detail)
            }
            C::RestoreCluster(restore) => self.restore_cluster(cx, restore),
            C::RecoverFromLostMajority { kma_name, node_id, certificate_sha256 } => {
                self.recover_from_lost_majority(cx, kma_name, *node_id, *certificate_sha256)
            }
            C::StageImport1x { import_id, batch, group, requested_by, kma, keys } => {
                let names = (group.as_str(), requested_by.as_str(), kma.as_str());
                self.stage_import_1x(cx, (*import_id, *batch), names, keys)
            }
            C::CommitImport1x { import_id, keys_received } => {
                self.commit_import_1x(cx, *import_id, *keys_received)
            }
            C::AbandonImport1x { import_id, reason } => {
                self.abandon_import_1x(cx, *import_id, reason)
            }
            C::SetTransferPartnerEnabled { name, enabled } => {
                self.set_transfer_partner_enabled(cx, name, *enabled)
            }
            C::RecordTransferExport(export) => self.record_transfer_export(cx, export),
            C::ImportTransferFile(import) => self.import_transfer_file(cx, import),
            C::CreateKmipKey { usage_mask, attributes } => {
                self.create_kmip_key(cx, *usage_mask, attributes)
            }
            C::RegisterKmipKey { key, usage_mask, attributes } => {
                self.register_kmip_key(cx, key, *usage_mask, attributes)
            }
            C::ActivateKmipKey { key_id } => self.activate_kmip_key(cx, key_id),
            C::SetKmipAttributes { key_id, revision, attributes } => {
                self.set_kmip_attributes(cx, key_id, *revision, attributes)
            }
            C::RevokeKmipKey { key_id, compromised } => {
                self.revoke_kmip_key(cx, key_id, *compromised)
            }
            C::DestroyKmipKey { key_id } => self.destroy_kmip_key(cx, key_id),
            C::SetAgentKmipRights { agent, revoke_and_destroy } => {
                self.set_agent_kmip_rights(cx, agent, *revoke_and_destroy)
            }
            C::RecordKmipReads { reads } => self.record_kmip_reads(cx, reads),
        }
    }
}
