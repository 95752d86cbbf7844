//! `kmsctl`: the operator's command-line tool for a KMA cluster. The commands, the profile
//! layout and the exit codes are in `admin_api::cli`; `kmsctl --help` lists them.

use std::process::ExitCode;

use admin_api::cli::{self, exit, Cli};
use clap::Parser;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2 (0 for --help and --version).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let error = anyhow::Error::new(e).context("starting the async runtime");
            eprintln!("error: {error:#}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("error: {error}");
            if let Some(help) = error.help() {
                eprintln!("help: {help}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}
