//! Chaos tests: the real `kma` image, three KMAs in containers on a private compose network, and
//! the faults a data centre produces (a process killed, a container stopped or paused, a network
//! cut), with checks that every acknowledged write survives and every KMA converges (SPEC C1, C7).
//!
//! This crate owns the test harness only: driving `docker-compose` and `docker`, and observing
//! the cluster through the management listener as an administrator. It must never reach into a
//! KMA's data dir or process: what it checks is what a client can see.
//!
//! Module map:
//! - [`image`]: Docker present? The KMA image built from the release binary
//!   (`scripts/docker-image.sh`, which makes the base image when missing).
//! - [`compose`]: one compose project (`-p`, unique per test): up, down with its volumes on drop,
//!   container IDs, kill / stop / start / pause / unpause a service, cut it off the network or
//!   off its peers only (iptables in its namespace).
//! - [`cluster`]: the compose cluster seen by an administrator: addresses, status, the leader,
//!   waits, and the convergence check (acknowledged writes on every KMA, equal digests).
//! - [`workload`]: a writer of `CreateUser` commands that records every acknowledged write.
//! - [`agents`]: a catalogue, an enrolled drive and agent clients on the published service ports.

pub mod agents;
pub mod cluster;
pub mod compose;
pub mod image;
pub mod workload;

use std::time::Duration;

/// Runs a command with a deadline and returns its stdout; the error names the command and
/// carries its stderr. The child is killed when the deadline passes.
pub async fn run(
    command: &mut tokio::process::Command,
    timeout: Duration,
) -> anyhow::Result<String> {
    let shown = format!("{:?}", command.as_std());
    let output = tokio::time::timeout(timeout, command.kill_on_drop(true).output())
        .await
        .map_err(|_| anyhow::anyhow!("{shown} did not finish within {timeout:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot run {shown}: {e}"))?;
    if !output.status.success() {
        anyhow::bail!(
            "{shown} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
