//! Phases of a storage bench, each timed with the process's resident memory around it: VmRSS
//! and VmHWM from /proc/self/status, VmHWM reset at the start of each phase (5 to
//! /proc/self/clear_refs), so that its value at the end is the phase's own peak. Included by
//! `#[path]` in the benches that use it.

// Each bench that includes this module uses a part of it.
#![allow(dead_code)]

use std::time::Instant;

use anyhow::{anyhow, Context};

pub const MIB: f64 = 1024.0 * 1024.0;

/// Reads one field of /proc/self/status, in kB.
pub fn status_kb(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| anyhow!("/proc/self/status has no {field}"))?;
    let kb = line.trim().trim_end_matches("kB").trim();
    kb.parse().with_context(|| format!("/proc/self/status {field}: {kb:?}"))
}

/// One measured phase: its time and the memory around it.
pub struct Phase {
    pub name: &'static str,
    pub secs: f64,
    /// VmHWM when the phase started (before the reset) and VmRSS then.
    pub hwm_before_kb: u64,
    pub rss_before_kb: u64,
    /// VmHWM when it ended: the phase's own peak when the reset worked.
    pub hwm_after_kb: u64,
    pub peak_reset: bool,
    pub file_bytes: Option<u64>,
}

/// What is noted when a phase starts; the peak resident memory is reset then, so that VmHWM
/// at its end is the phase's own peak.
pub struct PhaseStart {
    hwm_before_kb: u64,
    rss_before_kb: u64,
    peak_reset: bool,
    started: Instant,
}

impl PhaseStart {
    pub fn now() -> anyhow::Result<PhaseStart> {
        let hwm_before_kb = status_kb("VmHWM")?;
        let rss_before_kb = status_kb("VmRSS")?;
        let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        Ok(PhaseStart { hwm_before_kb, rss_before_kb, peak_reset, started: Instant::now() })
    }

    pub fn end(self, name: &'static str) -> anyhow::Result<Phase> {
        let secs = self.started.elapsed().as_secs_f64();
        Ok(Phase {
            name,
            secs,
            hwm_before_kb: self.hwm_before_kb,
            rss_before_kb: self.rss_before_kb,
            hwm_after_kb: status_kb("VmHWM")?,
            peak_reset: self.peak_reset,
            file_bytes: None,
        })
    }
}

/// Runs `work` as a measured phase.
pub fn phase<T>(
    name: &'static str,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Phase)> {
    let start = PhaseStart::now()?;
    let value = work().with_context(|| format!("phase '{name}' failed"))?;
    Ok((value, start.end(name)?))
}

/// [`phase`] for async work.
pub async fn async_phase<T>(
    name: &'static str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Phase)> {
    let start = PhaseStart::now()?;
    let value = work.await.with_context(|| format!("phase '{name}' failed"))?;
    Ok((value, start.end(name)?))
}
