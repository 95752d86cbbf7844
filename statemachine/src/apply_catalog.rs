//! Handlers for key policies, key groups and agents.

use alloc::collections::BTreeSet;

use crate::agent::{agent_principal, Agent};
use crate::apply::Cx;
use crate::check::{check_count, check_name, check_verifier};
use crate::ids::{KeyGroupId, KeyPolicyId};
use crate::limits::{AGENTS_MAX, GROUPS_MAX, GROUPS_PER_AGENT_MAX, PERIOD_MS_MAX, POLICIES_MAX};
use crate::policy::{KeyGroup, KeyPolicy};
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::State;

impl State {
    pub(crate) fn policy_id(&self, name: &str) -> Result<KeyPolicyId, Reject> {
        self.index
            .policy_names
            .get(name)
            .copied()
            .ok_or_else(|| Reject::UnknownPolicy { name: name.into() })
    }

    pub(crate) fn group_id(&self, name: &str) -> Result<KeyGroupId, Reject> {
        self.index
            .group_names
            .get(name)
            .copied()
            .ok_or_else(|| Reject::UnknownGroup { name: name.into() })
    }

    /// The policy bound to a group. Groups are created only with an existing policy, and a
    /// policy in use cannot be deleted, so the lookup cannot fail on a consistent state.
    pub(crate) fn group_policy(&self, group: KeyGroupId) -> &KeyPolicy {
        let policy = self.meta.groups.get(&group).map(|g| g.policy);
        let found = policy.and_then(|id| self.meta.policies.get(&id));
        assert!(found.is_some(), "key group {group:?} must have a policy");
        assert!(policy.is_some());
        found.expect("asserted above")
    }

    pub(crate) fn group_name(&self, group: KeyGroupId) -> alloc::string::String {
        self.meta.groups.get(&group).map(|g| g.name.clone()).unwrap_or_default()
    }

    pub(crate) fn create_key_policy(
        &mut self,
        name: &str,
        encryption_period_ms: u64,
        cryptoperiod_ms: u64,
        (allow_export, allow_import): (bool, bool),
    ) -> Result<Reply, Reject> {
        check_name("key policy name", name)?;
        if encryption_period_ms == 0
            || cryptoperiod_ms < encryption_period_ms
            || cryptoperiod_ms > PERIOD_MS_MAX
        {
            return Err(Reject::PolicyPeriodsInvalid { encryption_period_ms, cryptoperiod_ms });
        }
        if self.index.policy_names.contains_key(name) {
            return Err(Reject::PolicyExists { name: name.into() });
        }
        check_count("key policies", self.meta.policies.len() + 1, POLICIES_MAX)?;
        let id = KeyPolicyId(self.meta.next_policy_id);
        self.meta.next_policy_id += 1;
        let policy = KeyPolicy {
            id,
            name: name.into(),
            encryption_period_ms,
            cryptoperiod_ms,
            allow_export,
            allow_import,
        };
        self.meta.policies.insert(id, policy);
        self.index.policy_names.insert(name.into(), id);
        Ok(Reply::KeyPolicyCreated { id })
    }

    pub(crate) fn set_key_policy_flags(
        &mut self,
        name: &str,
        allow_export: bool,
        allow_import: bool,
    ) -> Result<Reply, Reject> {
        let id = self.policy_id(name)?;
        if let Some(policy) = self.meta.policies.get_mut(&id) {
            policy.allow_export = allow_export;
            policy.allow_import = allow_import;
        }
        Ok(Reply::Done)
    }

    pub(crate) fn delete_key_policy(&mut self, name: &str) -> Result<Reply, Reject> {
        let id = self.policy_id(name)?;
        let groups = self.meta.groups.values().filter(|g| g.policy == id).count() as u32;
        if groups > 0 {
            return Err(Reject::PolicyInUse { name: name.into(), groups });
        }
        self.meta.policies.remove(&id);
        self.index.policy_names.remove(name);
        Ok(Reply::Done)
    }

    pub(crate) fn create_key_group(
        &mut self,
        cx: &mut Cx<'_>,
        name: &str,
        policy: &str,
    ) -> Result<Reply, Reject> {
        check_name("key group name", name)?;
        let policy = self.policy_id(policy)?;
        if self.index.group_names.contains_key(name) {
            return Err(Reject::GroupExists { name: name.into() });
        }
        check_count("key groups", self.meta.groups.len() + 1, GROUPS_MAX)?;
        let id = KeyGroupId(self.meta.next_group_id);
        self.meta.next_group_id += 1;
        let group = KeyGroup { id, name: name.into(), policy, created_at_ms: cx.now_ms };
        self.meta.groups.insert(id, group);
        self.index.group_names.insert(name.into(), id);
        Ok(Reply::KeyGroupCreated { id })
    }

    pub(crate) fn delete_key_group(&mut self, name: &str) -> Result<Reply, Reject> {
        let id = self.group_id(name)?;
        let keys = self.index.keys_per_group.get(&id).copied().unwrap_or(0);
        let agents = self.meta.agents.values().filter(|a| a.can_access(id)).count() as u32;
        let partners = self
            .meta
            .partners
            .values()
            .filter(|p| p.export_groups.contains(&id) || p.import_groups.contains(&id))
            .count() as u32;
        if keys > 0 || agents > 0 || partners > 0 {
            return Err(Reject::GroupInUse { name: name.into(), keys, agents, partners });
        }
        self.meta.groups.remove(&id);
        self.index.group_names.remove(name);
        self.index.keys_per_group.remove(&id);
        Ok(Reply::Done)
    }
}

impl State {
    pub(crate) fn agent(&self, id: &str) -> Result<&Agent, Reject> {
        self.meta.agents.get(id).ok_or_else(|| Reject::UnknownAgent { agent: id.into() })
    }

    fn agent_mut(&mut self, id: &str) -> Result<&mut Agent, Reject> {
        self.meta.agents.get_mut(id).ok_or_else(|| Reject::UnknownAgent { agent: id.into() })
    }

    pub(crate) fn create_agent(
        &mut self,
        cx: &mut Cx<'_>,
        id: &str,
        site: &str,
        passphrase_verifier: &[u8],
    ) -> Result<Reply, Reject> {
        check_name("agent ID", id)?;
        check_verifier(passphrase_verifier)?;
        self.site(site)?;
        if self.meta.agents.contains_key(id) {
            return Err(Reject::AgentExists { agent: id.into() });
        }
        check_count("agents", self.meta.agents.len() + 1, AGENTS_MAX)?;
        let agent = Agent {
            id: id.into(),
            site: site.into(),
            passphrase_verifier: passphrase_verifier.into(),
            certificate_fingerprint: None,
            enabled: true,
            key_groups: BTreeSet::new(),
            default_key_group: None,
            created_at_ms: cx.now_ms,
        };
        self.meta.agents.insert(id.into(), agent);
        Ok(Reply::Done)
    }

    /// A new passphrase revokes the certificate: the drive must enroll again (SPEC A1).
    pub(crate) fn set_agent_passphrase(
        &mut self,
        id: &str,
        verifier: &[u8],
    ) -> Result<Reply, Reject> {
        check_verifier(verifier)?;
        let agent = self.agent_mut(id)?;
        agent.passphrase_verifier = verifier.into();
        agent.certificate_fingerprint = None;
        self.clear_login_failures(&agent_principal(id));
        Ok(Reply::Done)
    }

    pub(crate) fn set_agent_enabled(&mut self, id: &str, enabled: bool) -> Result<Reply, Reject> {
        self.agent_mut(id)?.enabled = enabled;
        Ok(Reply::Done)
    }

    pub(crate) fn set_agent_site(&mut self, id: &str, site: &str) -> Result<Reply, Reject> {
        self.site(site)?;
        self.agent_mut(id)?.site = site.into();
        Ok(Reply::Done)
    }

    pub(crate) fn delete_agent(&mut self, id: &str) -> Result<Reply, Reject> {
        self.agent(id)?;
        self.meta.agents.remove(id);
        self.meta.kmip_revokers.remove(id);
        self.drop_login_failures_of_deleted(&agent_principal(id));
        Ok(Reply::Done)
    }

    pub(crate) fn record_agent_enrollment(
        &mut self,
        id: &str,
        certificate_fingerprint: [u8; 32],
    ) -> Result<Reply, Reject> {
        // A passphrase enrolls once: re-enrollment needs a new one (SPEC A1).
        let agent = self.agent_mut(id)?;
        if agent.enrolled() {
            return Err(Reject::AgentAlreadyEnrolled { agent: id.into() });
        }
        agent.certificate_fingerprint = Some(certificate_fingerprint);
        // The agent proved its passphrase: its failed proofs no longer throttle it.
        self.clear_login_failures(&agent_principal(id));
        Ok(Reply::Done)
    }

    /// The first group assigned also becomes the default, so a new agent is usable at once.
    pub(crate) fn assign_group_to_agent(
        &mut self,
        agent: &str,
        group: &str,
    ) -> Result<Reply, Reject> {
        let group = self.group_id(group)?;
        let count = self.agent(agent)?.key_groups.len() + 1;
        check_count("key groups of an agent", count, GROUPS_PER_AGENT_MAX)?;
        let agent = self.agent_mut(agent)?;
        agent.key_groups.insert(group);
        agent.default_key_group.get_or_insert(group);
        Ok(Reply::Done)
    }

    pub(crate) fn unassign_group_from_agent(
        &mut self,
        agent: &str,
        group: &str,
    ) -> Result<Reply, Reject> {
        let group_id = self.group_id(group)?;
        let found = self.agent(agent)?;
        if !found.can_access(group_id) {
            return Err(Reject::GroupNotAssignedToAgent {
                agent: agent.into(),
                group: group.into(),
            });
        }
        if found.default_key_group == Some(group_id) && found.key_groups.len() > 1 {
            return Err(Reject::GroupIsAgentDefault { agent: agent.into(), group: group.into() });
        }
        let found = self.agent_mut(agent)?;
        found.key_groups.remove(&group_id);
        if found.default_key_group == Some(group_id) {
            found.default_key_group = None;
        }
        Ok(Reply::Done)
    }

    pub(crate) fn set_agent_default_group(
        &mut self,
        agent: &str,
        group: &str,
    ) -> Result<Reply, Reject> {
        let group_id = self.group_id(group)?;
        if !self.agent(agent)?.can_access(group_id) {
            return Err(Reject::GroupNotAssignedToAgent {
                agent: agent.into(),
                group: group.into(),
            });
        }
        self.agent_mut(agent)?.default_key_group = Some(group_id);
        Ok(Reply::Done)
    }
}
