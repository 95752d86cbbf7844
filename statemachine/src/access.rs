//! The access check (SPEC S1): [`State::check_access`] applies the table of
//! [`crate::permission`] to an actor, for a command, a read or a Raft membership change.

use crate::command::Actor;
use crate::format::LOG_FORMAT_3;
use crate::permission::{Access, CommandKind, Issuer};
use crate::reject::Reject;
use crate::role::RoleSet;
use crate::state::State;

impl State {
    /// Whether `actor` may have `access`, by the access table: the whole check, so that shells
    /// only map a refusal to their protocol. A user exists, is enabled and holds a role the
    /// table allows; an agent exists, is enabled and is enrolled; the KMA software
    /// (`Actor::System`) has what the table gives it. `apply` authorizes every command here.
    /// A command's issuer is the one of the cluster's log format ([`State::issuer_of`]): a
    /// user asking for a KMA-only command is refused as `WrongIssuer` from format 3 on.
    ///
    /// Refusals, by precedence: `ClusterNotInitialized` (anything but the quickstart);
    /// `UnknownUser`, `UserDisabled`; `UnknownAgent`, `AgentDisabled`, `AgentNotEnrolled`; then,
    /// for a command, `MissingRole` or `WrongIssuer` (as `apply` has always answered), and for
    /// a read or a membership change `AccessNeedsRole` or `AccessWrongActor`. A user-only access
    /// asked by an agent or the KMA software names the roles it needs, with none held.
    pub fn check_access(&self, actor: &Actor, access: Access) -> Result<(), Reject> {
        if self.meta.cluster.is_none() && access != Access::Command(CommandKind::InitCluster) {
            return Err(Reject::ClusterNotInitialized);
        }
        let granted = match access {
            Access::Command(kind) => self.issuer_of(kind),
            _ => access.granted_to(),
        };
        match (granted, actor) {
            (Issuer::System, Actor::System) => Ok(()),
            (Issuer::Users(required), Actor::User(id)) => {
                let held = self.user_roles(id)?;
                if held.intersects(required) {
                    Ok(())
                } else {
                    Err(needs_role(access, required, held))
                }
            }
            (Issuer::Agent, Actor::Agent(id)) => self.check_agent_may_act(id),
            (Issuer::Users(required), Actor::Agent(_) | Actor::System) => {
                Err(needs_role(access, required, RoleSet::EMPTY))
            }
            _ => Err(match access {
                Access::Command(kind) => Reject::WrongIssuer { kind },
                _ => Reject::AccessWrongActor { access },
            }),
        }
    }

    /// Who may issue `kind` under the rules the cluster's log format says: the table of
    /// [`CommandKind::issuer`], or the older one below format 3 (rule 2 of [`crate::format`]).
    /// Looks at the KMAs only for the few kinds whose issuer changed.
    pub fn issuer_of(&self, kind: CommandKind) -> Issuer {
        match kind.issuer_before_format_3() {
            Some(older) if !self.format_rules_apply(LOG_FORMAT_3) => older,
            _ => kind.issuer(),
        }
    }

    /// The roles of an enabled user.
    fn user_roles(&self, id: &str) -> Result<RoleSet, Reject> {
        let user =
            self.meta.users.get(id).ok_or_else(|| Reject::UnknownUser { user: id.into() })?;
        if !user.enabled {
            return Err(Reject::UserDisabled { user: id.into() });
        }
        debug_assert!(user.roles.is_valid(), "user {id} holds only defined roles");
        Ok(user.roles)
    }

    /// An agent that exists, is enabled and holds a certificate (SPEC O3, A1).
    pub(crate) fn check_agent_may_act(&self, id: &str) -> Result<(), Reject> {
        let agent =
            self.meta.agents.get(id).ok_or_else(|| Reject::UnknownAgent { agent: id.into() })?;
        if !agent.enabled {
            return Err(Reject::AgentDisabled { agent: id.into() });
        }
        if !agent.enrolled() {
            return Err(Reject::AgentNotEnrolled { agent: id.into() });
        }
        Ok(())
    }
}

fn needs_role(access: Access, required: RoleSet, held: RoleSet) -> Reject {
    match access {
        Access::Command(kind) => Reject::MissingRole { kind, required, held },
        _ => Reject::AccessNeedsRole { access, required, held },
    }
}
