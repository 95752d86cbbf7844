//! Internal consistency of the state. A violation is a bug in `apply`, never bad input, so it
//! panics (STYLE 8). Called after every apply in debug builds and by the tests in every build.

use alloc::collections::{BTreeMap, BTreeSet};
use sha2::{Digest, Sha256};

use crate::ids::KeyGroupId;
use crate::key::KeyState;
use crate::limits::{
    CA_CERTIFICATE_DER_LEN_MAX, KMAS_MAX, LOGIN_FAILURE_WINDOWS_MAX, USER_SESSIONS_MAX,
    WRAPPED_CA_KEY_LEN_MAX,
};
use crate::state::State;

impl State {
    /// Panics on the first broken invariant, naming it.
    pub fn check_invariants(&self) {
        self.check_key_invariants();
        self.check_association_invariants();
        self.check_catalog_invariants();
        self.check_certificate_invariants();
        self.check_ca_rotation_invariants();
        self.check_ca_retirement_invariants();
        self.check_login_failure_invariants();
        let chain = self.meta.audit_chain;
        assert!(chain.events > 0 || chain.head == [0; 32], "an empty audit chain has a zero head");
        let mut rebuilt = self.clone();
        rebuilt.rebuild_index();
        assert!(rebuilt.index == self.index, "the index must equal one rebuilt from the records");
    }

    fn check_key_invariants(&self) {
        for (id, key) in &self.keys {
            assert_eq!(*id, key.id, "a key is stored under its own ID");
            assert_eq!(
                key.material.is_none(),
                key.destroyed_at_ms.is_some(),
                "exactly the destroyed keys have no material: {id}"
            );
            assert!(
                key.group.is_some() || key.activation.is_none(),
                "an active key has a group: {id}"
            );
            assert!(
                key.activation.is_some() || key.data_units.is_empty(),
                "a key with data units is active: {id}"
            );
            if let Some(activation) = key.activation {
                assert!(activation.activated_at_ms <= activation.encryption_ends_at_ms);
                assert!(activation.encryption_ends_at_ms <= activation.deactivates_at_ms);
            }
        }
        for id in self.index.ready_pool.iter().chain(&self.index.generated_pool) {
            let key = &self.keys[id];
            assert!(key.group.is_none() && key.activation.is_none(), "pool key {id} is unassigned");
        }
        for id in &self.index.ready_pool {
            assert!(self.keys[id].protected, "a Ready pool key {id} is protected");
        }
        for (id, object) in &self.kmip {
            let key = self.keys.get(id).expect("a KMIP object is the KMIP side of a key");
            assert!(key.group.is_some(), "a KMIP key {id} is in a key group");
            assert!(object.revision >= 1, "a KMIP object {id} counts its first revision");
        }
    }

    fn check_association_invariants(&self) {
        let now_ms = self.meta.time_ms_last;
        for (id, unit) in &self.data_units {
            assert_eq!(*id, unit.id, "a data unit is stored under its own ID");
            let mut writable = 0;
            for association in &unit.keys {
                let key = &self.keys[&association.key_id];
                assert!(key.data_units.contains(id), "key {} knows data unit {id}", key.id);
                let state = self.key_state_at(key, now_ms);
                if association.in_use && state == KeyState::ProtectAndProcess {
                    writable += 1;
                }
            }
            assert!(writable <= 1, "data unit {id} has at most one protect-and-process key in use");
        }
        for (id, key) in &self.keys {
            for unit_id in &key.data_units {
                let unit = &self.data_units[unit_id];
                assert!(unit.association(id).is_some(), "data unit {unit_id} lists key {id}");
            }
        }
    }

    /// Certificates bound to the state (issue 16 point 2): bounded, revoked with what revokes
    /// them, held only by KMAs that could have been handed one; the CA key (point 1) bounded.
    fn check_certificate_invariants(&self) {
        for user in self.meta.users.values() {
            assert!(
                user.sessions.len() <= USER_SESSIONS_MAX,
                "user {} keeps at most {USER_SESSIONS_MAX} sessions",
                user.id
            );
            assert!(user.enabled || user.sessions.is_empty(), "disabled user {} has none", user.id);
            let fingerprints: BTreeSet<&[u8; 32]> =
                user.sessions.iter().map(|session| &session.certificate_sha256).collect();
            assert_eq!(fingerprints.len(), user.sessions.len(), "user {}: one each", user.id);
        }
        for kma in self.meta.kmas.values() {
            assert!(
                kma.certificate_sha256.is_none() || kma.applies_the_log(),
                "KMA {} holds a certificate only once its join was approved",
                kma.name
            );
        }
        if let Some(ca_key) = &self.meta.ca_key {
            assert!(!ca_key.wrapped_key.is_empty(), "a recorded CA key holds bytes");
            assert!(
                ca_key.wrapped_key.len() <= WRAPPED_CA_KEY_LEN_MAX,
                "a recorded CA key keeps within {WRAPPED_CA_KEY_LEN_MAX} bytes"
            );
        }
    }

    /// A CA rotation (issue 16 point 1) retires a recorded CA for another, bounded; its
    /// reissued certificates name KMAs that apply the log, under a recorded new CA. The CA
    /// certificate recorded by a completed rotation is that of the CA key.
    fn check_ca_rotation_invariants(&self) {
        if let Some(der) = &self.meta.ca_certificate_der {
            let ca_key = self.meta.ca_key.as_ref();
            assert!(ca_key.is_some(), "a rotated CA's certificate comes with its key");
            let sha256: [u8; 32] = Sha256::digest(der).into();
            assert!(
                ca_key.is_some_and(|key| key.ca_certificate_sha256 == sha256),
                "the CA certificate recorded is that of the CA key"
            );
        }
        let Some(rotation) = &self.meta.ca_rotation else { return };
        let Some(current) = &self.meta.ca_key else {
            panic!("a CA rotation retires a recorded CA key")
        };
        assert!(rotation.reissued.len() <= KMAS_MAX, "one reissued certificate per KMA at most");
        for name in rotation.reissued.keys() {
            assert!(
                self.meta.kmas.get(name).is_some_and(|kma| kma.applies_the_log()),
                "the reissued certificate of {name} names a KMA that applies the log"
            );
        }
        let Some(new_ca) = &rotation.new_ca else {
            assert!(rotation.reissued.is_empty(), "no certificate is reissued before the new CA");
            return;
        };
        let der = &new_ca.ca_certificate_der;
        assert!(!der.is_empty() && der.len() <= CA_CERTIFICATE_DER_LEN_MAX, "a bounded new CA");
        let wrapped_key = &new_ca.ca_key.wrapped_key;
        assert!(!wrapped_key.is_empty(), "a new CA key holds bytes");
        assert!(wrapped_key.len() <= WRAPPED_CA_KEY_LEN_MAX, "a new CA key within its bound");
        let sha256: [u8; 32] = Sha256::digest(der).into();
        assert_eq!(new_ca.ca_key.ca_certificate_sha256, sha256, "the new CA's own fingerprint");
        assert_ne!(current.ca_certificate_sha256, sha256, "a rotation moves to another CA");
    }

    /// The old CA of a completed rotation, while it retires (issue 16 point 1): a CA other than
    /// the cluster CA, replaced by a rotation that recorded the new CA's certificate; no new
    /// rotation meanwhile (none starts while an old CA retires); adoptions only by KMAs that
    /// apply the log; and some KMA still missing, since the adoption or deletion that leaves
    /// none retires it in the same entry.
    fn check_ca_retirement_invariants(&self) {
        let Some(retiring) = &self.meta.retiring_ca else { return };
        let Some(current) = &self.meta.ca_key else {
            panic!("a retiring CA was replaced by a recorded CA key")
        };
        assert_ne!(
            current.ca_certificate_sha256, retiring.ca_certificate_sha256,
            "the CA retiring is not the cluster CA"
        );
        assert!(self.meta.ca_certificate_der.is_some(), "a completed rotation's CA certificate");
        assert!(self.meta.ca_rotation.is_none(), "no CA rotation while an old CA retires");
        assert!(retiring.completed_at_ms <= self.meta.time_ms_last, "completed by an entry");
        assert!(retiring.adopted.len() <= KMAS_MAX, "one adoption per KMA at most");
        for name in &retiring.adopted {
            assert!(
                self.meta.kmas.get(name).is_some_and(|kma| kma.applies_the_log()),
                "the adoption of {name} names a KMA that applies the log"
            );
        }
        assert!(
            !self.ca_retirement_waiting_for().is_empty(),
            "the old CA is retired once no KMA is missing"
        );
    }

    /// Failed-proof windows (issue 16 point 5): one per principal that exists, each holding at
    /// least the failure that opened it, none opened after the last applied entry.
    fn check_login_failure_invariants(&self) {
        let failures = &self.meta.login_failures;
        assert!(
            failures.len() <= self.meta.users.len() + self.meta.agents.len(),
            "at most one failure window per user and agent"
        );
        assert!(failures.len() <= LOGIN_FAILURE_WINDOWS_MAX, "failure windows keep their bound");
        for (principal, window) in failures {
            assert!(
                self.login_failures_counted(principal),
                "the failure window of {principal:?} belongs to a user or agent that exists"
            );
            assert!(window.count >= 1, "the failure window of {principal:?} holds a failure");
            assert!(
                window.since_ms <= self.meta.time_ms_last,
                "the failure window of {principal:?} opened at an applied entry's time"
            );
        }
    }

    fn check_catalog_invariants(&self) {
        let mut node_ids = alloc::collections::BTreeSet::new();
        for kma in self.meta.kmas.values() {
            assert!(
                (1..self.meta.next_node_id).contains(&kma.node_id),
                "KMA {} holds a node ID the cluster assigned",
                kma.name
            );
            assert!(node_ids.insert(kma.node_id), "node ID {} belongs to one KMA", kma.node_id);
        }
        let mut keys_per_group: BTreeMap<KeyGroupId, u64> = BTreeMap::new();
        for key in self.keys.values() {
            if let Some(group) = key.group {
                assert!(self.meta.groups.contains_key(&group), "key {} has a known group", key.id);
                *keys_per_group.entry(group).or_insert(0) += 1;
            }
        }
        for group in self.meta.groups.values() {
            assert!(
                self.meta.policies.contains_key(&group.policy),
                "group {} has a policy",
                group.name
            );
        }
        for agent in self.meta.agents.values() {
            assert!(agent.key_groups.iter().all(|g| self.meta.groups.contains_key(g)));
            assert!(
                agent.default_key_group.is_none_or(|g| agent.key_groups.contains(&g)),
                "the default group of agent {} is one of its groups",
                agent.id
            );
        }
        for kma in self.meta.kmas.values() {
            if let Some(version) = kma.version {
                assert_eq!(
                    kma.software_version,
                    u32::from(version.formats.log),
                    "KMA {} has one log format, that of its full report",
                    kma.name
                );
                assert!(version.formats.log >= 2, "a full report is of log format 2 or newer");
            }
        }
        let quorum = &self.meta.quorum;
        if self.meta.cluster.is_some() {
            assert!(quorum.threshold >= 1, "the quorum threshold is at least one");
            assert!(usize::from(quorum.threshold) <= quorum.members.len());
        }
    }
}
