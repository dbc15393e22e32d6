//! `double-natpmp demo`: the daemon against the built-in emulators on loopback.

use thiserror::Error;

use crate::config::DemoArgs;

/// Why the demo could not run.
#[derive(Debug, Error)]
pub enum DemoError {
    /// Not wired yet.
    #[error("the demo is not available in this build")]
    Unavailable,
}

/// Runs the demo.
pub async fn run(_args: DemoArgs) -> Result<(), DemoError> {
    Err(DemoError::Unavailable)
}
