//! What the benches share: the CPU time of processes, read from `/proc`.

use anyhow::{ensure, Context};

/// Linux reports process CPU time in clock ticks of 1/100 s (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time of the processes, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let mut ticks = 0u64;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // Fields after the command name, which ends at the last ')': state is the first,
        // utime the 12th and stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("no ')' in stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ensure!(fields.len() > 12, "{path}: too few fields");
        ticks += fields[11].parse::<u64>().with_context(|| format!("{path}: utime"))?;
        ticks += fields[12].parse::<u64>().with_context(|| format!("{path}: stime"))?;
    }
    Ok(ticks as f64 / TICKS_PER_SECOND)
}
