//! `double-natpmp check` (being written).

use std::process::ExitCode;

use clap::Args;

/// `double-natpmp check` options.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {}

/// Runs `check`.
pub async fn run(_args: CheckArgs) -> ExitCode {
    eprintln!("error: 'check' is not available yet");
    ExitCode::FAILURE
}
