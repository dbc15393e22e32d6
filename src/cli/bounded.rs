//! A router call of `double-natpmp check` with a time limit, shared by its steps
//! (`check.rs`, `check_srcnat.rs`).

use std::future::Future;
use std::time::Duration;

use crate::routeros::api::RouterError;

/// Bounds a router call on top of the client's own timeouts, so no step can hang.
pub(super) async fn bounded<T>(
    limit: Duration,
    address: &str,
    what: &str,
    fut: impl Future<Output = Result<T, RouterError>>,
) -> Result<T, RouterError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(RouterError::Timeout {
            address: address.to_owned(),
            what: what.to_owned(),
            after: limit,
        }),
    }
}
