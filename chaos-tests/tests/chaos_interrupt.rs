//! The nemesis leaves no fault behind (issue 20, "Bad input and faults"): the `chaos` binary,
//! run as an operator runs it, is interrupted in the middle of a fault, first with Ctrl-C
//! (SIGINT), then with SIGKILL, which no process can handle.
//!
//! The fault is latency, the one that leaves the most behind on the host: a `chaos-proxy`
//! process in a KMA's network namespace and iptables rules there; every run also mounts a small
//! tmpfs for one KMA's disk. After Ctrl-C the run itself must heal and remove everything; after
//! SIGKILL the proxy must stop on its own and the next run must remove the compose project and
//! the mount (`run::remove_leftovers`, which every run calls first).
//!
//! Needs Docker Engine, docker-compose, nsenter, iptables and mount (run as root).

use std::process::Stdio;
use std::time::{Duration, Instant};

use chaos_tests::nemesis::{self, FaultKind, RUN_DIR_PREFIX};
use chaos_tests::run::{remove_leftovers, PROJECT_PREFIX};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Held far longer than the test waits: only the interrupt can end the fault.
const HOLD_S: u64 = 900;
/// Cluster start, set-up, the fault injected.
const FAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Heal, recovery, the drives' read-back and the checker after Ctrl-C.
const EXIT_TIMEOUT: Duration = Duration::from_secs(300);
/// For an orphaned proxy to notice (it polls its parent every 500 ms).
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(10);
/// Let the proxy take the KMA's connections before the interrupt.
const SETTLE: Duration = Duration::from_secs(3);

/// Setup: the first seed whose first fault is latency; `chaos --seed S --faults 1` with the
/// fault held 15 minutes. Action: SIGINT once the fault is injected and its proxy runs.
/// Expect: the run ends within minutes (not at the end of the hold), says it was interrupted,
/// passes its checks on what was recorded, and leaves no proxy, no container, no mount, no run
/// dir. Then the same with SIGKILL: the proxy exits by itself and the next run's clean-up
/// removes the project and the mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_heals_everything_and_a_killed_one_is_cleaned_up_next() {
    let seed = (0..10_000u64)
        .find(|seed| {
            let first = nemesis::schedule(*seed, 1, Duration::from_secs(HOLD_S));
            first[0].kind == FaultKind::Latency
        })
        .expect("a seed whose first fault is latency");

    // Ctrl-C.
    let (mut chaos, pid, proxies) = start_until_fault(seed).await;
    assert!(!proxies.is_empty(), "the latency fault runs a chaos-proxy beside the run");
    signal(pid, "INT").await;
    let started = Instant::now();
    let status = tokio::time::timeout(EXIT_TIMEOUT, chaos.wait())
        .await
        .unwrap_or_else(|_| panic!("chaos still runs {EXIT_TIMEOUT:?} after Ctrl-C"))
        .expect("chaos exit status");
    println!("chaos ended {:.0} s after Ctrl-C: {status}", started.elapsed().as_secs_f64());
    assert!(status.success(), "the interrupted run passes its checks: {status}");
    assert_nothing_left(pid, &proxies).await;

    // SIGKILL: nothing in the process runs; the proxy and the next run clean up.
    let (mut chaos, pid, proxies) = start_until_fault(seed).await;
    assert!(!proxies.is_empty(), "the latency fault runs a chaos-proxy beside the run");
    signal(pid, "KILL").await;
    let _ = chaos.wait().await;
    assert!(!projects_of(pid).await.is_empty(), "SIGKILL left the compose project up");
    let deadline = Instant::now() + ORPHAN_TIMEOUT;
    while proxies.iter().any(|proxy| alive(*proxy)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    remove_leftovers().await;
    assert_nothing_left(pid, &proxies).await;
}

/// Starts `chaos` and reads its standard error until the first fault is injected; returns the
/// process, its PID and the PIDs of the proxies it started.
async fn start_until_fault(seed: u64) -> (Child, u32, Vec<u32>) {
    let mut chaos = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["--seed", &seed.to_string(), "--faults", "1"])
        .args(["--hold-s", &HOLD_S.to_string(), "--calm-s", "2", "--drives-per-site", "1"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the chaos binary starts");
    let pid = chaos.id().expect("a running process");
    let stderr = chaos.stderr.take().expect("piped standard error");
    let mut lines = BufReader::new(stderr).lines();
    let injected = async {
        while let Some(line) = lines.next_line().await.expect("chaos's standard error") {
            eprintln!("{line}");
            if line.starts_with("chaos: fault 1 at") {
                return true;
            }
        }
        false
    };
    let injected = tokio::time::timeout(FAULT_TIMEOUT, injected).await;
    assert!(matches!(injected, Ok(true)), "chaos did not inject its fault: {injected:?}");
    // Keep echoing what chaos says, so a failure shows its end.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
        }
    });
    tokio::time::sleep(SETTLE).await;
    (chaos, pid, children_named(pid, "chaos-proxy"))
}

async fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// No proxy alive, no container, network or volume of the run's compose project, no mount and
/// no run dir of the process.
async fn assert_nothing_left(pid: u32, proxies: &[u32]) {
    let alive: Vec<&u32> = proxies.iter().filter(|proxy| alive(**proxy)).collect();
    assert!(alive.is_empty(), "proxies left running: {alive:?}");
    let projects = projects_of(pid).await;
    assert!(projects.is_empty(), "compose projects left: {projects:?}");
    for kind in ["network", "volume"] {
        let names = docker(&[kind, "ls", "--format", "{{.Name}}"]).await;
        let prefix = format!("{PROJECT_PREFIX}{pid}x");
        let left: Vec<&str> = names.lines().filter(|name| name.starts_with(&prefix)).collect();
        assert!(left.is_empty(), "{kind}s left: {left:?}");
    }
    let run_dir = format!("{RUN_DIR_PREFIX}{pid}-");
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let mounted: Vec<&str> = mounts.lines().filter(|line| line.contains(&run_dir)).collect();
    assert!(mounted.is_empty(), "mounts left: {mounted:?}");
    let dirs: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .expect("the temporary dir")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&run_dir))
        .collect();
    assert!(dirs.is_empty(), "run dirs left: {dirs:?}");
}

/// The compose projects of the chaos process `pid`, from its containers' labels.
async fn projects_of(pid: u32) -> Vec<String> {
    let format = "{{.Label \"com.docker.compose.project\"}}";
    let projects = docker(&["ps", "-a", "--format", format]).await;
    let prefix = format!("{PROJECT_PREFIX}{pid}x");
    let mut mine: Vec<String> =
        projects.lines().filter(|p| p.starts_with(&prefix)).map(str::to_string).collect();
    mine.dedup();
    mine
}

async fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().await.expect("docker runs");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// PIDs of the processes named `name` whose parent is `parent`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
            let Some((head, rest)) = stat.rsplit_once(") ") else { return false };
            let comm = head.split_once(" (").map_or("", |(_, comm)| comm);
            let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            comm == name && ppid == Some(parent)
        })
        .collect()
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(state) if state != "Z" && state != "X")
}
