//! A writer of `CreateUser` commands through one KMA, recording each acknowledged write: a write
//! the cluster answered with an applied entry whose result is `Ok`. Only those are promises the
//! cluster made; a write that timed out or met an election may or may not have happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use node::client::KmaClient;
use statemachine::{Command, Role, RoleSet};
use tokio::task::JoinHandle;

/// A writer stops by itself after this many attempts, whatever happens.
const WRITE_ATTEMPTS_MAX: u64 = 200_000;
/// Pause after a refused or failed write (no leader, leader unreachable, KMA down).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Acknowledged writes: (user ID, log index), shared by writers and checks.
#[derive(Clone, Default)]
pub struct Acked(Arc<Mutex<Vec<(String, u64)>>>);

impl Acked {
    fn lock(&self) -> MutexGuard<'_, Vec<(String, u64)>> {
        // A writer never panics while it holds the lock, so the list is whole even if poisoned.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn push(&self, id: String, index: u64) {
        self.lock().push((id, index));
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The highest log index of an acknowledged write (0 before the first).
    pub fn index_max(&self) -> u64 {
        self.lock().iter().map(|(_, index)| *index).max().unwrap_or(0)
    }

    pub fn ids(&self) -> Vec<String> {
        self.lock().iter().map(|(id, _)| id.clone()).collect()
    }
}

/// What a writer saw, for the test's assertions and messages.
#[derive(Debug, Default)]
pub struct WriterReport {
    pub attempts: u64,
    pub acked: u64,
    /// Writes the state machine refused: never expected here, each user ID is new.
    pub rejected: Vec<String>,
    pub last_error: Option<String>,
}

/// A background task writing users `<prefix>-<n>` through `address` until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<WriterReport>,
}

impl Writer {
    pub fn spawn(client: KmaClient, address: String, prefix: &str, acked: Acked) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let task =
            tokio::spawn(write_users(client, address, prefix.to_string(), acked, stop.clone()));
        Writer { stop, task }
    }

    pub async fn stop(self) -> anyhow::Result<WriterReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.map_err(|e| anyhow::anyhow!("the writer task failed: {e}"))
    }
}

async fn write_users(
    client: KmaClient,
    address: String,
    prefix: String,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let mut report = WriterReport::default();
    while !stop.load(Ordering::SeqCst) && report.attempts < WRITE_ATTEMPTS_MAX {
        // A new ID for every attempt: a retried ID could meet its own earlier, unacknowledged
        // success and be refused as a duplicate.
        let id = format!("{prefix}-{}", report.attempts);
        report.attempts += 1;
        let command = Command::CreateUser {
            id: id.clone(),
            roles: RoleSet::of(Role::Auditor),
            passphrase_verifier: Vec::new(),
        };
        match client.propose_with_passphrase(&address, None, command, Some("workload-pass")).await {
            Ok(Ok(applied)) => match applied.result {
                Ok(_) => {
                    acked.push(id, applied.index);
                    report.acked += 1;
                }
                Err(reject) => report.rejected.push(format!("{id}: {reject}")),
            },
            Ok(Err(refused)) => {
                report.last_error = Some(refused.to_string());
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => {
                report.last_error = Some(error.to_string());
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
    report
}
