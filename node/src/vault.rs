//! The master key of a running KMA (SPEC S3, C6): held in memory only while the KMA is
//! unlocked, never written in the clear.
//!
//! Three ways in: the first boot after `kma init` (the quickstart left it sealed for this node),
//! autonomous unlock (sealed in a node-local file, a trade-off the operator chose through the
//! quorum), and a quorum unlock (members' shares, unwrapped on this KMA, combined here).
//!
//! The replicated `locked` flag of this KMA is the administrative state; the vault is what the
//! process actually holds. A KMA serves key material only when both say unlocked.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use security_core::{MasterKey, Share};
use serde::{Deserialize, Serialize};
use statemachine::ClusterId;
use zeroize::Zeroizing;

pub const SEALED_FILE: &str = "master-key.sealed";

/// Where a new sealed file is written before it is renamed over [`SEALED_FILE`]: a crash
/// leaves either the old file or the new one whole, never half of one.
const SEALED_TEMP_FILE: &str = "master-key.sealed.tmp";

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
    /// Shares members gave straight to this locked KMA (`listen::member_unlock`), by member,
    /// with when: each member counts once, and a share left waiting too long is dropped.
    member_shares: Mutex<BTreeMap<String, (Instant, Share)>>,
    sealed_path: PathBuf,
    /// The node's private TLS key (PEM): what the sealed file is sealed under.
    node_secret: RwLock<Zeroizing<Vec<u8>>>,
    /// Why a sealed file found at start could not be used: the KMA starts locked and says so.
    sealed_problem: Mutex<Option<String>>,
    /// The cluster CA's private key (PEM), unwrapped from the replicated state while unlocked
    /// (issue #16 point 1); dropped with the master key.
    ca_key: RwLock<Option<([u8; 32], Zeroizing<String>)>>,
    /// Woken whenever a master key starts serving, so that the CA key is opened at once
    /// (`duties::run_ca_key_custody`), not at its next tick.
    unlocked: tokio::sync::Notify,
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
    /// Opens the vault of a data dir; a sealed file found there is unsealed into standby. A
    /// sealed file that cannot be used (cut short by a crash, damaged, sealed by another KMA)
    /// does not keep the KMA from starting: it starts locked, says why in its log and status,
    /// and the quorum unlocks it (SPEC C6; issue #16 point 8). A temporary file left by a crash
    /// while sealing is erased.
    pub fn open(data_dir: &std::path::Path, node_key_pem: &str) -> Result<Vault, VaultError> {
        let vault = Vault {
            active: RwLock::new(None),
            standby: RwLock::new(None),
            unlock_shares: Mutex::new(HashMap::new()),
            member_shares: Mutex::new(BTreeMap::new()),
            sealed_path: data_dir.join(SEALED_FILE),
            node_secret: RwLock::new(Zeroizing::new(node_key_pem.as_bytes().to_vec())),
            sealed_problem: Mutex::new(None),
            ca_key: RwLock::new(None),
            unlocked: tokio::sync::Notify::new(),
        };
        let temp = data_dir.join(SEALED_TEMP_FILE);
        erase(&temp).map_err(|source| VaultError::Io { path: temp.clone(), source })?;
        match vault.read_sealed() {
            Ok(Some(master)) => *unpoison(vault.standby.write()) = Some(master),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "starting locked: the sealed master key is unusable");
                *unpoison(vault.sealed_problem.lock()) = Some(error.to_string());
            }
        }
        Ok(vault)
    }

    /// Why the sealed master key found at start was not used, if it was not.
    pub fn sealed_problem(&self) -> Option<String> {
        unpoison(self.sealed_problem.lock()).clone()
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
            &unpoison(self.node_secret.read()),
        )
        .map_err(|e| unseal(e.to_string()))?;
        Ok(Some(master))
    }

    /// Seals `master` into this KMA's data dir (mode 0600), replacing any earlier file
    /// atomically: written to a temporary file, synced, renamed over the old one, and the
    /// directory synced.
    pub fn seal(&self, master: &MasterKey, cluster_id: ClusterId) -> Result<(), VaultError> {
        let secret = unpoison(self.node_secret.read()).clone();
        let sealed = security_core::seal::seal_master_key(master, cluster_id, &secret);
        let file = SealedFile { cluster_id: cluster_id.0, sealed };
        let path = &self.sealed_path;
        let io = |source| VaultError::Io { path: path.clone(), source };
        let bytes = postcard::to_allocvec(&file).map_err(|e| io(std::io::Error::other(e)))?;
        let temp = path.with_file_name(SEALED_TEMP_FILE);
        write_private(&temp, &bytes).map_err(io)?;
        std::fs::rename(&temp, path).map_err(io)?;
        sync_parent(path).map_err(io)?;
        *unpoison(self.sealed_problem.lock()) = None;
        Ok(())
    }

    /// A CA rotation gave this KMA a new TLS key (issue #16 point 1), under which the sealed
    /// file is sealed from now on: sealed again at once while the master key is in memory. A
    /// locked KMA's sealed file no longer opens: it starts locked and says why, and the quorum
    /// unlocks it.
    pub fn rekey_seal(&self, node_key_pem: &str, cluster_id: ClusterId) -> Result<(), VaultError> {
        *unpoison(self.node_secret.write()) = Zeroizing::new(node_key_pem.as_bytes().to_vec());
        match (self.sealed_file_exists(), self.master_key()) {
            (true, Some(master)) => self.seal(&master, cluster_id),
            _ => Ok(()),
        }
    }

    pub fn sealed_file_exists(&self) -> bool {
        self.sealed_path.exists()
    }

    /// Removes the sealed file, overwriting it in place first (see [`erase`]).
    pub fn remove_sealed(&self) -> Result<(), VaultError> {
        let path = &self.sealed_path;
        erase(path).map_err(|source| VaultError::Io { path: path.clone(), source })
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
        self.hold(master);
        true
    }

    pub fn hold(&self, master: MasterKey) {
        *unpoison(self.active.write()) = Some(master);
        // One waiter, the custody duty; a permit kept while it is busy wakes it right after.
        self.unlocked.notify_one();
    }

    /// Resolves the next time a master key starts serving.
    pub async fn unlocked(&self) {
        self.unlocked.notified().await;
    }

    /// An administrator locked this KMA: the key leaves memory (SPEC C6), and the CA key with
    /// it.
    pub fn forget(&self) {
        *unpoison(self.active.write()) = None;
        *unpoison(self.standby.write()) = None;
        *unpoison(self.ca_key.write()) = None;
    }

    /// Keeps the key of the CA whose certificate has fingerprint `ca_sha256`, unwrapped from
    /// the state, while the master key is held.
    pub fn hold_ca_key(&self, ca_sha256: [u8; 32], key_pem: Zeroizing<String>) {
        *unpoison(self.ca_key.write()) = Some((ca_sha256, key_pem));
    }

    /// The key of the CA of fingerprint `ca_sha256`, while this KMA is unlocked and has
    /// unwrapped it; `None` for any other CA (the one a CA rotation replaced, say), so that no
    /// certificate is ever signed with the key of another CA than the one it names.
    pub fn ca_key_pem(&self, ca_sha256: &[u8; 32]) -> Option<Zeroizing<String>> {
        if !self.is_unlocked() {
            return None;
        }
        let held = unpoison(self.ca_key.read());
        held.as_ref().filter(|(sha256, _)| sha256 == ca_sha256).map(|(_, key)| key.clone())
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

/// How long a member's share given to a locked KMA waits for the others: the members of a
/// quorum unlock come together for it, and a share should not linger in memory for days.
pub const MEMBER_SHARE_TTL: Duration = Duration::from_secs(15 * 60);

impl Vault {
    /// Keeps `share`, which member `member` gave to unlock this KMA, in place of any earlier
    /// one of theirs; answers who has given one, shares past [`MEMBER_SHARE_TTL`] dropped.
    pub fn give_member_share(&self, member: &str, share: Share) -> Vec<String> {
        let mut shares = unpoison(self.member_shares.lock());
        shares.retain(|_, (given, _)| given.elapsed() < MEMBER_SHARE_TTL);
        shares.insert(member.to_string(), (Instant::now(), share));
        shares.keys().cloned().collect()
    }

    /// With at least `threshold` members' shares: combines them, and holds the master key when
    /// they give it (the split is authenticated and carries the key's check value, so shares
    /// of another split or a wrong key never unlock). Shares are dropped either way; fewer
    /// than `threshold` are kept and `Ok(false)` answered.
    pub fn unlock_with_member_shares(&self, threshold: usize) -> Result<bool, VaultError> {
        let shares = {
            let mut shares = unpoison(self.member_shares.lock());
            if shares.len() < threshold.max(1) {
                return Ok(false);
            }
            std::mem::take(&mut *shares)
        };
        let shares: Vec<Share> = shares.into_values().map(|(_, share)| share).collect();
        let master = security_core::quorum_shares::combine_shares(&shares)
            .map_err(|e| VaultError::Combine(e.to_string()))?;
        self.hold(master);
        Ok(true)
    }

    /// Drops the shares members gave (the KMA was unlocked another way, or locked again).
    pub fn drop_member_shares(&self) {
        unpoison(self.member_shares.lock()).clear();
    }
}

/// Keeps the master key, shares and passphrases in this process's memory out of core dumps
/// and away from other processes of the same user (issue #16 point 8): no core file at all
/// (`RLIMIT_CORE` 0, soft and hard), and the process not dumpable (`PR_SET_DUMPABLE` 0), which
/// also stops ptrace attachment and reading `/proc/PID/mem` by anyone but root. Called first
/// thing by every `kma` subcommand, since `init`, `join` and unlocks hold secrets too.
pub fn protect_process_memory() -> std::io::Result<()> {
    use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Overwrites a file in place with zeros, syncs, then unlinks it and syncs its directory;
/// nothing when it does not exist. On an SSD or a copy-on-write file system the old blocks may
/// survive the overwrite (docs/security.md says so): this erases what a file system lets erase.
pub fn erase(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    // Not `truncate`: truncating frees the old blocks and the zeros would go to new ones.
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    let len = file.metadata()?.len() as usize;
    file.write_all(&vec![0u8; len])?;
    file.sync_all()?;
    drop(file);
    std::fs::remove_file(path)?;
    sync_parent(path)
}

/// Syncs the directory holding `path`, so that a rename or unlink in it survives a crash.
fn sync_parent(path: &std::path::Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
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

    fn node_key() -> String {
        crate::pki::signing_request().expect("key pair").1
    }

    /// Setup: a sealed master key cut short, as a crash while writing it would leave it, and a
    /// temporary file from an interrupted seal. Action: open the vault. Expect: it opens (the KMA
    /// starts), holds no key, says why, and the temporary file is gone. (SPEC C6; issue #16
    /// point 8)
    #[test]
    fn c6_a_damaged_sealed_key_starts_the_kma_locked_and_says_why() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = node_key();
        let vault = super::Vault::open(dir.path(), &key).expect("empty vault");
        let master = security_core::MasterKey::generate();
        vault.seal(&master, statemachine::ClusterId(7)).expect("seal");
        let path = dir.path().join(super::SEALED_FILE);
        let whole = std::fs::read(&path).expect("sealed file");
        std::fs::write(&path, &whole[..whole.len() / 2]).expect("cut short");
        std::fs::write(dir.path().join(super::SEALED_TEMP_FILE), b"half a seal").expect("temp");

        let reopened = super::Vault::open(dir.path(), &key).expect("a damaged seal still opens");

        assert!(!reopened.has_standby() && !reopened.is_unlocked());
        let problem = reopened.sealed_problem().expect("the reason is kept");
        assert!(problem.contains("quorum"), "{problem}");
        assert!(!dir.path().join(super::SEALED_TEMP_FILE).exists());
    }

    /// Setup: a sealed master key, and a second name (hard link) for the same file. Action: the
    /// seal is removed (autonomous unlock turned off). Expect: the file is gone and the blocks it
    /// had, still reachable through the other name, hold only zeros: it was overwritten in
    /// place, not truncated. Sealing again goes through a temporary file renamed into place.
    /// (SPEC C6; issue #16 point 8)
    #[test]
    fn c6_removing_the_sealed_key_overwrites_it_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vault = super::Vault::open(dir.path(), &node_key()).expect("vault");
        let master = security_core::MasterKey::generate();
        vault.seal(&master, statemachine::ClusterId(7)).expect("seal");
        let path = dir.path().join(super::SEALED_FILE);
        let other_name = dir.path().join("same-blocks");
        std::fs::hard_link(&path, &other_name).expect("hard link");
        let len = std::fs::metadata(&path).expect("metadata").len();

        vault.remove_sealed().expect("removed");

        assert!(!path.exists());
        let left = std::fs::read(&other_name).expect("the other name");
        assert_eq!(left.len() as u64, len);
        assert!(left.iter().all(|byte| *byte == 0), "the sealed bytes survived");
        vault.seal(&master, statemachine::ClusterId(7)).expect("sealed again");
        assert!(path.exists() && !dir.path().join(super::SEALED_TEMP_FILE).exists());
    }

    /// Setup: this test process. Action: protect its memory as `kma` does at start. Expect: no
    /// core file may be written (limit 0, soft and hard) and the process is not dumpable.
    /// (issue #16 point 8)
    #[test]
    fn s3_the_process_refuses_core_dumps() {
        super::protect_process_memory().expect("protected");
        let limit = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!((limit.current, limit.maximum), (Some(0), Some(0)));
        let dumpable = rustix::process::dumpable_behavior().expect("PR_GET_DUMPABLE");
        assert_eq!(dumpable, rustix::process::DumpableBehavior::NotDumpable);
    }
}
