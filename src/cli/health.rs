//! `double-natpmp health` (being written).

use std::process::ExitCode;

use clap::Args;

/// `double-natpmp health` options.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {}

/// Runs `health`.
pub async fn run(_args: HealthArgs) -> ExitCode {
    eprintln!("error: 'health' is not available yet");
    ExitCode::FAILURE
}
