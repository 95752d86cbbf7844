//! Handlers that bind certificates to the replicated state (issue 16 point 2): a user's session
//! certificates and a KMA's certificate. A listener accepts a certificate only when the state
//! records it (`State::user_session_certified`, `State::kma_certificate_accepted`), so a
//! certificate minted with a stolen CA key is refused, and removing the record revokes the
//! certificate on every KMA at once. The fingerprints are no secrets: they name certificates,
//! they prove nothing, and they may be shown in the audit log.
//!
//! The cluster CA's key itself is recorded here too (issue 16 point 1), wrapped under the master
//! key, so that no KMA keeps it in clear at rest: the state stores opaque bytes.

use alloc::string::String;
use alloc::vec::Vec;

use crate::apply::Cx;
use crate::apply_cluster::wrong_status;
use crate::audit::AuditWhat;
use crate::check::{check_blob, check_text};
use crate::cluster::{KmaStatus, UserSession, WrappedCaKey};
use crate::ids::Fingerprint;
use crate::limits::{DETAIL_LEN_MAX, USER_SESSIONS_MAX, WRAPPED_CA_KEY_LEN_MAX};
use crate::reject::Reject;
use crate::reply::Reply;
use crate::state::State;

impl State {
    /// A login with its session certificate: refused for a user that is gone or disabled (the
    /// KMA checked the passphrase against a state that may have changed since), or for a
    /// certificate that expired before the entry's time. Sessions already expired at the
    /// entry's time are dropped, then the oldest beyond [`USER_SESSIONS_MAX`], so the record
    /// stays bounded however often a user logs in. Audited as the login it is, so that the
    /// audit log reads the same as with `RecordLogin`.
    pub(crate) fn record_user_session(
        &mut self,
        cx: &mut Cx<'_>,
        principal: &str,
        source: &str,
        session: UserSession,
    ) -> Result<Reply, Reject> {
        check_text("principal", principal, DETAIL_LEN_MAX, true)?;
        check_text("source", source, DETAIL_LEN_MAX, true)?;
        let user = self
            .meta
            .users
            .get(principal)
            .ok_or_else(|| Reject::UnknownUser { user: principal.into() })?;
        if !user.enabled {
            return Err(Reject::UserDisabled { user: principal.into() });
        }
        let now_ms = cx.now_ms;
        if session.expires_at_ms <= now_ms {
            return Err(Reject::InvalidSetting {
                field: "expires_at_ms".into(),
                reason: "after the time of the entry: the certificate expired before it was \
                         recorded; log in again"
                    .into(),
            });
        }
        let user = self.user_mut(principal)?;
        // The same certificate again (a retried proposal) moves to the end instead of counting
        // twice.
        user.sessions.retain(|kept| {
            kept.expires_at_ms > now_ms && kept.certificate_sha256 != session.certificate_sha256
        });
        if user.sessions.len() >= USER_SESSIONS_MAX {
            let oldest = user.sessions.len() + 1 - USER_SESSIONS_MAX;
            user.sessions.drain(..oldest);
        }
        user.sessions.push(session);
        assert!(user.sessions.len() <= USER_SESSIONS_MAX, "a user keeps a bounded session list");
        assert!(user.enabled, "only an enabled user gains a session");
        // The user proved its passphrase: its failed proofs no longer throttle it.
        self.clear_login_failures(principal);
        cx.event(AuditWhat::Login { principal: principal.into(), source: source.into() });
        Ok(Reply::Done)
    }

    /// Records the certificate a joiner is about to be handed. The entry must be approved to
    /// join and hold none: a second grant, which a second proof of the same passphrase would
    /// ask for, is refused (`JoinAlreadyGranted`), so the passphrase is spent by its first
    /// successful proof. The same grant again (a proposal retried after a timeout) is answered
    /// `Done` and changes nothing. No new grant while a CA rotation is under way
    /// (`CaRotationUnderWay`): the joiner's certificate would come from the CA being retired.
    pub(crate) fn grant_kma_join(
        &mut self,
        name: &str,
        certificate_sha256: [u8; 32],
    ) -> Result<Reply, Reject> {
        let kma = self.kma(name)?;
        if kma.certificate_sha256 == Some(certificate_sha256) {
            return Ok(Reply::Done);
        }
        self.check_no_ca_rotation()?;
        if kma.status != KmaStatus::JoinApproved {
            return Err(wrong_status(kma));
        }
        if kma.certificate_sha256.is_some() {
            return Err(Reject::JoinAlreadyGranted { name: name.into() });
        }
        let kma = self.kma_mut(name)?;
        kma.certificate_sha256 = Some(certificate_sha256);
        assert!(kma.applies_the_log(), "only a KMA approved to join holds a certificate");
        Ok(Reply::Done)
    }

    /// A KMA reports the certificate it holds from before certificates were recorded (the first
    /// KMA, joins before log format 3). Only its own, through its own node, as the version
    /// report: another KMA's report could bind a certificate the KMA does not hold. Once: after
    /// that, only the recorded certificate is accepted, and a second report could replace it
    /// with a minted one. The same report again is answered `Done`.
    pub(crate) fn record_kma_certificate(
        &mut self,
        cx: &mut Cx<'_>,
        name: &str,
        certificate_sha256: [u8; 32],
    ) -> Result<Reply, Reject> {
        let kma = self.kma_of_its_own_node(cx, name)?;
        if kma.certificate_sha256 == Some(certificate_sha256) {
            return Ok(Reply::Done);
        }
        if !kma.applies_the_log() {
            return Err(wrong_status(kma));
        }
        if kma.certificate_sha256.is_some() {
            return Err(Reject::KmaCertificateAlreadyRecorded { name: name.into() });
        }
        let kma = self.kma_mut(name)?;
        kma.certificate_sha256 = Some(certificate_sha256);
        assert_eq!(kma.node_id, cx.origin_node_id, "a KMA records its own certificate");
        Ok(Reply::Done)
    }

    /// Records the cluster CA's private key as the proposing KMA wrapped it under the master
    /// key (issue 16 point 1). Once per cluster: a second key would let whoever proposed it
    /// mint certificates that every listener accepts, so another one is refused
    /// (`CaKeyAlreadyRecorded`) and a new CA comes only through a rotation the quorum approves.
    /// The same record again, fingerprint and bytes (a proposal retried after a timeout), is
    /// answered `Done` and changes nothing. Audited by `change_of` (the fingerprint only).
    pub(crate) fn record_ca_key(
        &mut self,
        ca_certificate_sha256: [u8; 32],
        wrapped_key: &[u8],
    ) -> Result<Reply, Reject> {
        check_blob("wrapped CA key", wrapped_key, WRAPPED_CA_KEY_LEN_MAX)?;
        if let Some(recorded) = &self.meta.ca_key {
            if recorded.ca_certificate_sha256 == ca_certificate_sha256
                && recorded.wrapped_key == wrapped_key
            {
                return Ok(Reply::Done);
            }
            return Err(Reject::CaKeyAlreadyRecorded {
                ca_certificate_sha256: Fingerprint(recorded.ca_certificate_sha256),
            });
        }
        let wrapped_key = Vec::from(wrapped_key);
        let recorded = self.meta.ca_key.insert(WrappedCaKey { ca_certificate_sha256, wrapped_key });
        assert!(!recorded.wrapped_key.is_empty(), "a recorded CA key holds bytes");
        assert!(recorded.wrapped_key.len() <= WRAPPED_CA_KEY_LEN_MAX, "within its bound");
        Ok(Reply::Done)
    }

    /// Records, for the audit log, that quorum members unlocked KMA `kma` with their
    /// passphrases alone (issue 16 point 5). Only the KMA itself reports it, through its own
    /// node; the members are quorum members of the applied state, each once, at least one.
    /// Changes nothing but the audit log (`change_of` emits `KmaChange::UnlockedByMembers`).
    pub(crate) fn record_member_unlock(
        &self,
        cx: &mut Cx<'_>,
        kma: &str,
        members: &[String],
    ) -> Result<Reply, Reject> {
        self.kma_recording_for_itself(cx, kma)?;
        let mut seen = alloc::collections::BTreeSet::new();
        let known = members.iter().all(|m| self.meta.quorum.is_member(m) && seen.insert(m));
        if members.is_empty() || !known {
            return Err(Reject::InvalidSetting {
                field: "members".into(),
                reason: "each a current quorum member, once, at least one".into(),
            });
        }
        Ok(Reply::Done)
    }
}
