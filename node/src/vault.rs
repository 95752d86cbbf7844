//! The master key of a running KMA (SPEC S3, C6): held in memory only while the KMA is
//! unlocked, never written in the clear.
//!
//! Three ways in: the first boot after `kma init` (the quickstart left it sealed for this node),
//! autonomous unlock (sealed in a node-local file, a trade-off the operator chose through the
//! quorum), and a quorum unlock (members' shares, unwrapped on this KMA, combined here).
//!
//! The replicated `locked` flag of this KMA is the administrative state; the vault is what the
//! process actually holds. A KMA serves key material only when both say unlocked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use security_core::{MasterKey, Share};
use serde::{Deserialize, Serialize};
use statemachine::ClusterId;
use zeroize::Zeroizing;

pub const SEALED_FILE: &str = "master-key.sealed";

/// The sealed file: which cluster's key it holds (the AAD), and the sealed bytes.
#[derive(Serialize, Deserialize)]
struct SealedFile {
    cluster_id: u64,
    sealed: Vec<u8>,
}

pub struct Vault {
    /// Serving key material with it (unlocked).
    active: RwLock<Option<MasterKey>>,
    /// Unsealed at boot, waiting until the replicated state says this KMA is not locked.
    standby: RwLock<Option<MasterKey>>,
    /// Shares of a pending quorum unlock of this KMA, by operation ID.
    unlock_shares: Mutex<HashMap<u64, Vec<Share>>>,
    sealed_path: PathBuf,
    /// The node's private TLS key (PEM): what the sealed file is sealed under.
    node_secret: Zeroizing<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a sealed master key of this KMA ({detail}): remove it and unlock the KMA through the quorum")]
    Unseal { path: PathBuf, detail: String },
    #[error("the shares collected on this KMA do not give the master key ({0}); the KMA may have restarted while approvals were collected: start a new unlock operation")]
    Combine(String),
}

/// Locks taken here guard plain data; a panic while holding one cannot leave it half-written,
/// so a poisoned lock is used as is.
fn unpoison<T>(result: Result<T, std::sync::PoisonError<T>>) -> T {
    result.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Vault {
    /// Opens the vault of a data dir; a sealed file found there is unsealed into standby.
    pub fn open(data_dir: &std::path::Path, node_key_pem: &str) -> Result<Vault, VaultError> {
        let vault = Vault {
            active: RwLock::new(None),
            standby: RwLock::new(None),
            unlock_shares: Mutex::new(HashMap::new()),
            sealed_path: data_dir.join(SEALED_FILE),
            node_secret: Zeroizing::new(node_key_pem.as_bytes().to_vec()),
        };
        if let Some(master) = vault.read_sealed()? {
            *unpoison(vault.standby.write()) = Some(master);
        }
        Ok(vault)
    }

    fn read_sealed(&self) -> Result<Option<MasterKey>, VaultError> {
        let path = &self.sealed_path;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(VaultError::Io { path: path.clone(), source }),
        };
        let unseal = |detail: String| VaultError::Unseal { path: path.clone(), detail };
        let file: SealedFile = postcard::from_bytes(&bytes).map_err(|e| unseal(e.to_string()))?;
        let master = security_core::seal::unseal_master_key(
            &file.sealed,
            ClusterId(file.cluster_id),
            &self.node_secret,
        )
        .map_err(|e| unseal(e.to_string()))?;
        Ok(Some(master))
    }

    /// Seals `master` into this KMA's data dir (mode 0600), replacing any earlier file.
    pub fn seal(&self, master: &MasterKey, cluster_id: ClusterId) -> Result<(), VaultError> {
        let sealed = security_core::seal::seal_master_key(master, cluster_id, &self.node_secret);
        let file = SealedFile { cluster_id: cluster_id.0, sealed };
        let path = &self.sealed_path;
        let bytes = postcard::to_allocvec(&file).map_err(|e| VaultError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        write_private(path, &bytes).map_err(|source| VaultError::Io { path: path.clone(), source })
    }

    pub fn sealed_file_exists(&self) -> bool {
        self.sealed_path.exists()
    }

    /// Removes the sealed file, overwriting it first.
    pub fn remove_sealed(&self) -> Result<(), VaultError> {
        let path = &self.sealed_path;
        let io = |source| VaultError::Io { path: path.clone(), source };
        let len = match std::fs::metadata(path) {
            Ok(meta) => meta.len() as usize,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(io(source)),
        };
        write_private(path, &vec![0u8; len]).map_err(io)?;
        std::fs::remove_file(path).map_err(io)
    }

    /// The master key while unlocked.
    pub fn master_key(&self) -> Option<MasterKey> {
        unpoison(self.active.read()).clone()
    }

    pub fn is_unlocked(&self) -> bool {
        unpoison(self.active.read()).is_some()
    }

    pub fn has_standby(&self) -> bool {
        unpoison(self.standby.read()).is_some()
    }

    /// The replicated state says this KMA is not locked: a standby key starts serving.
    pub fn activate_standby(&self) -> bool {
        let Some(master) = unpoison(self.standby.write()).take() else { return false };
        *unpoison(self.active.write()) = Some(master);
        true
    }

    pub fn hold(&self, master: MasterKey) {
        *unpoison(self.active.write()) = Some(master);
    }

    /// An administrator locked this KMA: the key leaves memory (SPEC C6).
    pub fn forget(&self) {
        *unpoison(self.active.write()) = None;
        *unpoison(self.standby.write()) = None;
    }

    /// Keeps a member's share of an unlock of this KMA until the operation completes.
    pub fn stash_share(&self, operation: u64, share: Share) {
        unpoison(self.unlock_shares.lock()).entry(operation).or_default().push(share);
    }

    pub fn drop_shares(&self, operation: u64) {
        unpoison(self.unlock_shares.lock()).remove(&operation);
    }

    /// The unlock operation completed: combines its shares and holds the master key.
    pub fn complete_unlock(&self, operation: u64) -> Result<(), VaultError> {
        let shares = unpoison(self.unlock_shares.lock()).remove(&operation).unwrap_or_default();
        let master = security_core::quorum_shares::combine_shares(&shares)
            .map_err(|e| VaultError::Combine(e.to_string()))?;
        self.hold(master);
        Ok(())
    }
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created: a file left with looser permissions (by
    // hand, by a restore) is narrowed before the secret goes in.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    /// Setup: a file readable by everyone. Action: a secret written over it. Expect: the file
    /// holds the secret and is readable by its owner only (SPEC C6: the sealed master key).
    #[test]
    fn c6_a_private_file_is_narrowed_to_its_owner_even_when_it_existed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, b"old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");

        super::write_private(&path, b"sealed bytes").expect("write_private");

        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"sealed bytes");
    }
}
