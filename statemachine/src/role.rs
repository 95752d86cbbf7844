//! The five user roles of SPEC S1 and sets of them.

use core::fmt;

use serde::{Deserialize, Serialize};

/// One of the five roles a user may hold (SPEC S1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Security settings, users, sites, KMAs, transfer partners, quorum operations.
    SecurityOfficer,
    /// Key policies, key groups, their assignment to agents and partners; compromising keys.
    ComplianceOfficer,
    /// Agents, data units and keys, including destroying keys.
    Operator,
    /// Database backups, restores, marking backups destroyed.
    BackupOperator,
    /// Read-only access and the audit log.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::SecurityOfficer,
        Role::ComplianceOfficer,
        Role::Operator,
        Role::BackupOperator,
        Role::Auditor,
    ];

    const fn bit(self) -> u8 {
        match self {
            Role::SecurityOfficer => 1,
            Role::ComplianceOfficer => 2,
            Role::Operator => 4,
            Role::BackupOperator => 8,
            Role::Auditor => 16,
        }
    }

    /// The name used by kmsctl and in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Role::SecurityOfficer => "Security Officer",
            Role::ComplianceOfficer => "Compliance Officer",
            Role::Operator => "Operator",
            Role::BackupOperator => "Backup Operator",
            Role::Auditor => "Auditor",
        }
    }
}

/// A set of roles, stored as a bit set (persisted: the bit values above never change).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RoleSet(u8);

impl RoleSet {
    pub const EMPTY: RoleSet = RoleSet(0);
    pub const ALL: RoleSet = RoleSet(31);

    pub const fn of(role: Role) -> RoleSet {
        RoleSet(role.bit())
    }

    pub const fn with(self, role: Role) -> RoleSet {
        RoleSet(self.0 | role.bit())
    }

    pub const fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub const fn intersects(self, other: RoleSet) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Only the five defined bits may be set; anything else is a corrupt or newer value.
    pub const fn is_valid(self) -> bool {
        self.0 & !RoleSet::ALL.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |role| self.contains(*role))
    }
}

impl FromIterator<Role> for RoleSet {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        iter.into_iter().fold(RoleSet::EMPTY, RoleSet::with)
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for role in self.iter() {
            if !first {
                f.write_str(" or ")?;
            }
            f.write_str(role.name())?;
            first = false;
        }
        if first {
            f.write_str("no role")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleSet({self})")
    }
}
