//! `double-natpmp client` (being written).

use std::process::ExitCode;

use clap::Args;

/// `double-natpmp client` options.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {}

/// Runs `client`.
pub async fn run(_args: ClientArgs) -> ExitCode {
    eprintln!("error: 'client' is not available yet");
    ExitCode::FAILURE
}
