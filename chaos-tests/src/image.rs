//! Docker present, and the KMA image built from the current release binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// The image the compose file runs (`KMS_IMAGE` there).
pub const KMA_IMAGE: &str = "kms-kma:latest";

/// Generous: a cold build includes debootstrap of the base image (about a minute here).
const IMAGE_BUILD_TIMEOUT: Duration = Duration::from_secs(900);
const DOCKER_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root: the compose file, the scripts and the default target dir live there.
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Fails with the next step when Docker Engine or docker-compose cannot be used: the chaos tests
/// must not pass by doing nothing (CI has both).
pub async fn require_docker() -> anyhow::Result<()> {
    let help = "help: the chaos tests need Docker Engine (daemon running, this user allowed to \
                use it) and docker-compose 1.29+; see docs/docker.md";
    crate::run(
        Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]),
        DOCKER_PROBE_TIMEOUT,
    )
    .await
    .map_err(|e| anyhow::anyhow!("error: Docker is not available: {e:#}\n{help}"))?;
    crate::run(Command::new("docker-compose").arg("version"), DOCKER_PROBE_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("error: docker-compose is not available: {e:#}\n{help}"))?;
    Ok(())
}

/// Builds `kms-kma:latest` from `${CARGO_TARGET_DIR:-target}/release/kma` (and the base image
/// first if it is missing). Run every time so the test never runs a stale binary: with an
/// unchanged binary Docker reuses its cached layers and this takes about a second.
pub async fn build_kma_image() -> anyhow::Result<()> {
    let root = repo_root();
    let mut command = Command::new("bash");
    command.arg(root.join("scripts/docker-image.sh")).current_dir(&root);
    command.env("KMS_IMAGE", KMA_IMAGE);
    if let Some(target_dir) = target_dir() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    crate::run(&mut command, IMAGE_BUILD_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("cannot build the KMA image: {e:#}"))?;
    Ok(())
}

/// The target dir this test binary was built in (`<target>/release/deps/<test>`), so the image
/// gets the `kma` of the same build, wherever `CARGO_TARGET_DIR` or `--target-dir` put it.
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    (profile_dir.file_name()? == "release").then(|| profile_dir.parent().map(Path::to_path_buf))?
}
