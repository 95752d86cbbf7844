//! Partner key transfer as the API sees it (SPEC T1–T4): the refusals of the transfer file's
//! cryptography in the API's vocabulary, and [`perform`], what both `AdminNode`s run with
//! their master key (the node's vault, the tests' in-memory key).

use security_core::transfer::{self, OwnCluster, TransferDone, TransferError, TransferWork};
use security_core::MasterKey;
use statemachine::partner::TransferKeyPair;
use statemachine::ClusterId;
use wire::{ErrorBody, ErrorCode};

/// A transfer refusal: a bad file is the caller's (`bad-request`); a key pair or a key that
/// does not open is this cluster's problem (`internal`).
pub fn transfer_error(error: &TransferError) -> ErrorBody {
    let code = match error {
        TransferError::KeyPairUnwrapFailed | TransferError::KeyUnwrapFailed { .. } => {
            ErrorCode::Internal
        }
        _ => ErrorCode::BadRequest,
    };
    ErrorBody::new(code, error.to_string())
}

/// Runs `work` with the cluster's transfer key pair (`pair`, as the state holds it).
pub fn perform(
    master: &MasterKey,
    cluster_id: Option<ClusterId>,
    pair: Option<TransferKeyPair>,
    work: TransferWork,
) -> Result<TransferDone, ErrorBody> {
    let cluster_id = cluster_id.ok_or_else(|| {
        ErrorBody::new(ErrorCode::NotInitialised, "the cluster is not initialised")
    })?;
    let pair = pair.ok_or_else(|| {
        ErrorBody::new(
            ErrorCode::Unavailable,
            "this cluster has no transfer key pair yet: an unlocked KMA makes it once every KMA \
             runs this release (kmsctl transfer key show tells when it exists)",
        )
        .with_retryable(true)
    })?;
    let own = OwnCluster {
        master,
        cluster_id,
        public: &pair.public_key,
        wrapped_secret: &pair.wrapped_private_key,
    };
    transfer::perform(&own, work).map_err(|e| transfer_error(&e))
}
