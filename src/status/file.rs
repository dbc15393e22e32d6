//! STATUS_FILE: the current mappings as JSON (the same array as `/api/v1/mappings`), written
//! whenever they change: first to a temporary file in the same folder, flushed to disk, then
//! renamed over the old one, so a reader sees the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::natpmp::upstream::Upstream;
use crate::routeros::api::Router;
use crate::status::state::StatusState;

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "status.json".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Starts the writer: it writes at once, then after each change signalled on `changes`, and a
/// last time when the sender is dropped.
pub fn spawn<R: Router, U: Upstream>(
    path: PathBuf,
    state: Arc<StatusState<R, U>>,
    mut changes: watch::Receiver<u64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mappings = state.mappings();
            let path2 = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                let bytes = serde_json::to_vec(&mappings).map_err(std::io::Error::other)?;
                write_atomically(&path2, &bytes)
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(path = %path.display(), "cannot write STATUS_FILE: {e}"),
                Err(e) => warn!(path = %path.display(), "STATUS_FILE writer failed: {e}"),
            }
            if changes.changed().await.is_err() {
                // The last write after the sender is gone shows the final state.
                let mappings = state.mappings();
                if let Ok(bytes) = serde_json::to_vec(&mappings) {
                    let path2 = path.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || write_atomically(&path2, &bytes)).await;
                }
                return;
            }
        }
    })
}
