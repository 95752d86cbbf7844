//! Handlers of a CA rotation (SPEC S4; issue 16 point 1): old disks hold the old CA's key in
//! clear, so the quorum can retire that CA. A Security Officer starts `QuorumOperation::RotateCa`
//! and the quorum approves it; an unlocked KMA makes the new CA and records it wrapped
//! (`BeginCaRotation`); every KMA that applies the log signs itself a new certificate and records
//! its fingerprint (`RecordReissuedKmaCertificate`); a KMA completes the rotation once all have
//! (`CompleteCaRotation`). The old CA is still trusted then, until every KMA that applies the
//! log records that it presents its new certificate (`RecordCaAdopted`): the last record, or
//! the deletion of the last KMA missing, retires it. See [`crate::cluster::CaRotation`] and
//! [`crate::cluster::RetiringCa`].
//!
//! The state only records and checks: the KMAs make the keys and certificates, and the state
//! holds no clear key, only the new CA's key wrapped under the master key, as `RecordCaKey`.
//! Fingerprints name certificates and prove nothing: the audit log shows them.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

use crate::apply::Cx;
use crate::apply_cluster::wrong_status;
use crate::check::check_blob;
use crate::cluster::{CaRotation, NewCa, RetiringCa, WrappedCaKey};
use crate::ids::Fingerprint;
use crate::limits::{CA_CERTIFICATE_DER_LEN_MAX, KMAS_MAX, WRAPPED_CA_KEY_LEN_MAX};
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::State;

impl State {
    /// Whether a CA rotation may start, and again whether its approval may take effect (the
    /// state may have changed meanwhile): a CA key to retire is recorded, no rotation is
    /// approved or under way, and the old CA of the last one is retired. Two `RotateCa`
    /// operations may be pending at once, as two joins of one KMA may: the first approved wins,
    /// the second is refused when its approval completes.
    pub(crate) fn check_ca_rotation_start(&self) -> Result<(), Reject> {
        if self.meta.ca_key.is_none() {
            return Err(Reject::CaKeyNotRecorded);
        }
        self.check_no_ca_rotation()
    }

    /// Refuses while a CA rotation is approved or under way, or the old CA of the last one is
    /// not retired yet: a second rotation, and a KMA's join, whose certificate would come from
    /// the CA being retired, or which the retirement would then wait for too. So the KMAs a
    /// retirement waits for only become fewer, and a rotation has one old CA and one new.
    pub(crate) fn check_no_ca_rotation(&self) -> Result<(), Reject> {
        if let Some(rotation) = &self.meta.ca_rotation {
            return Err(Reject::CaRotationUnderWay {
                approved_at_ms: rotation.approved_at_ms,
                operation_id: rotation.operation_id,
            });
        }
        if let Some(retiring) = &self.meta.retiring_ca {
            return Err(Reject::CaRetirementUnderWay {
                ca_certificate_sha256: Fingerprint(retiring.ca_certificate_sha256),
                completed_at_ms: retiring.completed_at_ms,
                waiting_for: self.ca_retirement_waiting_for(),
            });
        }
        Ok(())
    }

    /// The effect of an approved `RotateCa`, checked by [`State::check_ca_rotation_start`]:
    /// the rotation is recorded, waiting for a KMA to make the new CA.
    pub(crate) fn approve_ca_rotation(&mut self, cx: &Cx<'_>, operation_id: u64) {
        assert!(self.meta.ca_key.is_some(), "checked: a rotation retires a recorded CA");
        assert!(self.meta.ca_rotation.is_none(), "checked: one rotation at a time");
        assert!(self.meta.retiring_ca.is_none(), "checked: the last old CA is retired");
        self.meta.ca_rotation = Some(CaRotation {
            approved_at_ms: cx.now_ms,
            operation_id,
            new_ca: None,
            reissued: BTreeMap::new(),
        });
    }

    /// Records the new CA a KMA made for the approved rotation: its certificate, whose SHA-256
    /// must be the fingerprint stated (so that what the listeners will trust is what the audit
    /// log names), and differ from the current CA's, and its key wrapped under the master key.
    /// The first record wins: the same one again (a proposal retried after a timeout, or two
    /// KMAs racing with one result) is answered `Done` and changes nothing; another is refused
    /// (`CaRotationAlreadyBegun`), so that every KMA reissues under one CA. Audited by
    /// `change_of` (the fingerprint only).
    pub(crate) fn begin_ca_rotation(
        &mut self,
        ca_certificate_der: &[u8],
        ca_certificate_sha256: [u8; 32],
        wrapped_key: &[u8],
    ) -> Result<Reply, Reject> {
        check_blob("CA certificate", ca_certificate_der, CA_CERTIFICATE_DER_LEN_MAX)?;
        check_blob("wrapped CA key", wrapped_key, WRAPPED_CA_KEY_LEN_MAX)?;
        let rotation = self.meta.ca_rotation.as_ref().ok_or(Reject::CaRotationNotApproved)?;
        if let Some(begun) = &rotation.new_ca {
            if begun.ca_certificate_der == ca_certificate_der
                && begun.ca_key.ca_certificate_sha256 == ca_certificate_sha256
                && begun.ca_key.wrapped_key == wrapped_key
            {
                return Ok(Reply::Done);
            }
            let ca_certificate_sha256 = Fingerprint(begun.ca_key.ca_certificate_sha256);
            return Err(Reject::CaRotationAlreadyBegun { ca_certificate_sha256 });
        }
        let computed: [u8; 32] = Sha256::digest(ca_certificate_der).into();
        if computed != ca_certificate_sha256 {
            return Err(Reject::CaCertificateFingerprintMismatch {
                stated: Fingerprint(ca_certificate_sha256),
                computed: Fingerprint(computed),
            });
        }
        let current = self.meta.ca_key.as_ref().map(|key| key.ca_certificate_sha256);
        if current == Some(ca_certificate_sha256) {
            let ca_certificate_sha256 = Fingerprint(ca_certificate_sha256);
            return Err(Reject::NewCaIsCurrentCa { ca_certificate_sha256 });
        }
        let ca_key = WrappedCaKey { ca_certificate_sha256, wrapped_key: Vec::from(wrapped_key) };
        let new_ca = NewCa { ca_certificate_der: Vec::from(ca_certificate_der), ca_key };
        let rotation = self.ca_rotation_mut()?;
        let begun = rotation.new_ca.insert(new_ca);
        assert_eq!(begun.ca_key.ca_certificate_sha256, computed, "the fingerprint of the DER");
        assert!(rotation.reissued.is_empty(), "no certificate is reissued before the new CA");
        Ok(Reply::Done)
    }

    /// Records the certificate KMA `name` signed itself under the new CA. Only its own, through
    /// its own node, as `RecordKmaCertificate`: another KMA's record could bind a certificate
    /// the KMA does not hold, and the rotation would then cut it off. A second record replaces
    /// the first (a KMA that crashed before it saved its new certificate makes another); the
    /// same one again is answered `Done`. Audited by `change_of`.
    pub(crate) fn record_reissued_kma_certificate(
        &mut self,
        cx: &Cx<'_>,
        name: &str,
        certificate_sha256: [u8; 32],
    ) -> Result<Reply, Reject> {
        let kma = self.kma_of_its_own_node(cx, name)?;
        let (rotation, _) = self.begun_ca_rotation()?;
        if rotation.reissued.get(name) == Some(&certificate_sha256) {
            return Ok(Reply::Done);
        }
        // A KMA only created has no certificate to replace, and completion does not wait for it.
        if !kma.applies_the_log() {
            return Err(wrong_status(kma));
        }
        let rotation = self.ca_rotation_mut()?;
        rotation.reissued.insert(name.into(), certificate_sha256);
        assert!(rotation.reissued.len() <= KMAS_MAX, "one reissued certificate per KMA at most");
        assert!(rotation.new_ca.is_some(), "certificates are reissued under a recorded new CA");
        Ok(Reply::Done)
    }

    /// Completes the rotation once every KMA that applies the log reissued its certificate
    /// (`CaRotationIncomplete` names those it waits for): the new CA becomes the cluster CA,
    /// its certificate recorded for KMAs that were away; each KMA's reissued certificate becomes
    /// the one its links accept, so its certificate of the old CA is refused; and every user
    /// session ends, since its certificate came from the old CA: users log in again. Agents
    /// keep their records: their certificates fail TLS against the new CA, and they enroll
    /// again. The old CA itself stays trusted (`Meta::retiring_ca`) until every KMA adopted
    /// the new one: a KMA presents its new certificate only once it applied this entry. Audited
    /// by `change_of` (the retired and the new fingerprint, the sessions ended).
    pub(crate) fn complete_ca_rotation(&mut self, cx: &Cx<'_>) -> Result<Reply, Reject> {
        let (rotation, new_ca) = self.begun_ca_rotation()?;
        let waiting_for = self.ca_rotation_waiting_for();
        if !waiting_for.is_empty() {
            return Err(Reject::CaRotationIncomplete { waiting_for });
        }
        // Copied, not taken, so that nothing changes before every check passed; at most a
        // certificate, a wrapped key and one fingerprint per KMA.
        let new_ca = new_ca.clone();
        let reissued = rotation.reissued.clone();

        let Some(retired) = self.meta.ca_key.replace(new_ca.ca_key) else {
            panic!("a rotation retires a recorded CA")
        };
        self.meta.ca_certificate_der = Some(new_ca.ca_certificate_der);
        let mut replaced = 0;
        for kma in self.meta.kmas.values_mut() {
            if let Some(certificate_sha256) = reissued.get(&kma.name) {
                kma.certificate_sha256 = Some(*certificate_sha256);
                replaced += 1;
            }
        }
        assert_eq!(replaced, reissued.len(), "a deleted KMA leaves the reissued certificates");
        for user in self.meta.users.values_mut() {
            user.sessions.clear();
        }
        self.meta.ca_rotation = None;
        assert!(self.meta.retiring_ca.is_none(), "no rotation starts while an old CA retires");
        self.meta.retiring_ca = Some(RetiringCa {
            ca_certificate_sha256: retired.ca_certificate_sha256,
            completed_at_ms: cx.now_ms,
            adopted: BTreeSet::new(),
        });
        Ok(Reply::Done)
    }

    /// Records that KMA `name`, having applied the completion of a rotation, presents its
    /// certificate of the new CA. Only its own, through its own node, as
    /// `RecordReissuedKmaCertificate`: another KMA's record could retire the old CA while that
    /// KMA still presents a certificate of it, and cut it off. The same again is answered
    /// `Done`. The record of the last KMA missing retires the old CA, in the same entry.
    /// Audited by `change_of` (`KmaChange::AdoptedNewCa`), then the retirement by
    /// `ca_retired_since`.
    pub(crate) fn record_ca_adopted(&mut self, cx: &Cx<'_>, name: &str) -> Result<Reply, Reject> {
        let kma = self.kma_of_its_own_node(cx, name)?;
        let retiring = self.meta.retiring_ca.as_ref().ok_or(Reject::CaNotRetiring)?;
        if retiring.adopted.contains(name) {
            return Ok(Reply::Done);
        }
        // A KMA only created holds no certificate, and the retirement does not wait for it.
        if !kma.applies_the_log() {
            return Err(wrong_status(kma));
        }
        let retiring = self.meta.retiring_ca.as_mut().ok_or(Reject::CaNotRetiring)?;
        retiring.adopted.insert(name.into());
        assert!(retiring.adopted.len() <= KMAS_MAX, "one adoption per KMA at most");
        self.retire_ca_once_adopted();
        assert!(
            self.meta.retiring_ca.as_ref().is_none_or(|retiring| retiring.adopted.contains(name)),
            "the adoption is recorded, or the old CA retired"
        );
        Ok(Reply::Done)
    }

    /// Retires the old CA once no KMA that applies the log is missing from its adoptions.
    fn retire_ca_once_adopted(&mut self) {
        if self.meta.retiring_ca.is_some() && self.ca_retirement_waiting_for().is_empty() {
            self.meta.retiring_ca = None;
        }
    }

    /// The rotation under way and its new CA, or why there is none: not approved, or approved
    /// and not begun.
    pub(crate) fn begun_ca_rotation(&self) -> Result<(&CaRotation, &NewCa), Reject> {
        let rotation = self.meta.ca_rotation.as_ref().ok_or(Reject::CaRotationNotApproved)?;
        let new_ca = rotation.new_ca.as_ref().ok_or(Reject::CaRotationNotBegun)?;
        Ok((rotation, new_ca))
    }

    fn ca_rotation_mut(&mut self) -> Result<&mut CaRotation, Reject> {
        self.meta.ca_rotation.as_mut().ok_or(Reject::CaRotationNotApproved)
    }

    /// A deleted KMA leaves the rotation: completion no longer waits for it, and its reissued
    /// certificate, if any, names nobody. It leaves the retirement of the old CA likewise: if
    /// it was the last KMA missing, the old CA is retired at once.
    pub(crate) fn forget_kma_in_ca_rotation(&mut self, name: &str) {
        assert!(!self.meta.kmas.contains_key(name), "forgotten once deleted");
        if let Some(rotation) = self.meta.ca_rotation.as_mut() {
            rotation.reissued.remove(name);
        }
        if let Some(retiring) = self.meta.retiring_ca.as_mut() {
            retiring.adopted.remove(name);
            self.retire_ca_once_adopted();
        }
    }
}
