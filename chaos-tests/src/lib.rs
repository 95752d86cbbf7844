//! Chaos tests: the real `kma` image, three KMAs in containers on a private compose network, and
//! the faults a data centre produces (a process killed, a container stopped or paused, a network
//! cut), with checks that every acknowledged write survives and every KMA converges (SPEC C1, C7).
//!
//! This crate owns the test harness only: driving `docker-compose` and `docker`, and observing
//! the cluster through the management listener as an administrator, the agents' protocol and
//! the KMAs' logs. It must never read a KMA's data dir: what it checks is what a client, an
//! auditor or an operator reading the logs can see. The nemesis alone touches a KMA's process
//! and namespaces from outside (signals, iptables, a proxy, a clock offset, a full disk).
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
//! - [`nemesis`]: the faults (kill, stop, partitions, one-way drops, a site cut off, latency
//!   through `chaos-proxy`, loss, clock skew, a full disk), chosen by a seed, each healed, and
//!   every still-active fault healed on the way out.
//! - [`history`]: the evidence of a run (the drives' answers, the KMAs' hand-out log lines, the
//!   committed log read back through the audit log) and the checker's verdicts.
//! - [`admin`]: the admin workload (users, key groups, policies, keys compromised and destroyed,
//!   quorum operations approved or cancelled), recorded as register operations.
//! - [`run`]: one chaos run: cluster, fleets at every site, admin workload, faults, read-back,
//!   verdicts; the short mode (a test) and the long mode (`chaos` binary) both call it.
//! - [`linearizable`]: the linearizability check of a recorded history of register operations
//!   (write, read, compare-and-set; unknown outcomes allowed), one register at a time.

pub mod admin;
pub mod agents;
pub mod cluster;
pub mod compose;
pub mod history;
pub mod image;
pub mod linearizable;
pub mod nemesis;
pub mod run;
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
