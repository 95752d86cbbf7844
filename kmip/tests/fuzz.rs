//! U5: the TTLV decoder under `kmip-fuzz` for a bounded time (30 s by default; KMIP_FUZZ_SECONDS
//! sets it). The harness's own line, with its input count, goes to the test's output.

use std::io::Write;
use std::process::Command;

#[test]
fn u5_ttlv_decoder_survives_the_fuzz_harness() {
    let seconds = std::env::var("KMIP_FUZZ_SECONDS").unwrap_or_else(|_| "30".to_owned());
    let output = Command::new(env!("CARGO_BIN_EXE_kmip-fuzz"))
        .args(["--seconds", &seconds])
        .output()
        .expect("run kmip-fuzz");
    let report = String::from_utf8_lossy(&output.stdout);
    // Written to the process's stderr, not through `eprintln!` (which `cargo test` captures),
    // so the CI log carries the count on success too.
    let _ = writeln!(std::io::stderr(), "{}", report.trim_end());
    assert!(output.status.success(), "kmip-fuzz failed:\n{report}");
    assert!(report.contains(" inputs in ") && report.contains("no panic"), "{report}");
}
