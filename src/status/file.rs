//! STATUS_FILE: the current mappings as JSON (the same array as `/api/v1/mappings`), written
//! when they change: first to a temporary file in the same folder, flushed to disk, then
//! renamed over the old one, so a reader sees the old file or the new one, never half of one.
//!
//! The temporary file is made afresh each time (`O_CREAT | O_EXCL`), so nothing already at its
//! name is written through: not a symlink someone planted there to have the daemon overwrite
//! another file, not a stale file. Such an entry is unlinked (which removes the link itself,
//! never what it points to) and the name made again. The file gets mode 0644 (less under a
//! stricter umask).
//!
//! Writes are at least [`MIN_SPACING`] apart, a burst of changes giving one write; and a change
//! that alters nothing but the times of a renewal (`last_renewed`, `lifetime_left`) gives none,
//! since those are stale from the moment they are written anyway: a file on flash is not
//! rewritten and flushed at every client's renewal. Ports, addresses, lifetimes, the set of
//! mappings are always current within [`MIN_SPACING`].

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use crate::status::state::StatusState;
use crate::status::view::MappingView;

/// The shortest time between two writes.
pub(crate) const MIN_SPACING: Duration = Duration::from_secs(1);
/// The temporary file's mode (before the umask): the owner writes, everyone reads.
const MODE: u32 = 0o644;
/// How often an entry found at the temporary name is removed before this write gives up.
const TRIES: usize = 3;

/// Writes `bytes` to `path` atomically (a temporary file made exclusively, then a rename).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "status.json".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = create_exclusively(&tmp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A new file at `tmp`, made by this call: whatever was at that name (a planted symlink, a
/// file left by a crash) is unlinked first, never opened.
fn create_exclusively(tmp: &Path) -> std::io::Result<std::fs::File> {
    let mut tries = 0;
    loop {
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // O_CREAT | O_EXCL: fails on any entry at the name, a symlink included, dangling
            // or not (POSIX open(): "If O_CREAT and O_EXCL are set ... if path names a
            // symbolic link, open() shall fail"), so nothing is ever opened through a link.
            .mode(MODE)
            .open(tmp);
        match made {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < TRIES => {
                tries += 1;
                warn!(path = %tmp.display(), "something is already at STATUS_FILE's temporary name: removing it (not following it)");
                std::fs::remove_file(tmp)?;
            }
            other => return other,
        }
    }
}

/// What of the mappings the file must keep current: all but the times of renewals.
fn shown(mappings: &[MappingView]) -> Vec<MappingView> {
    mappings
        .iter()
        .map(|m| MappingView {
            lifetime_left: None,
            last_renewed: None,
            ..m.clone()
        })
        .collect()
}

/// Starts the writer: it writes at once, then after the changes signalled on `changes` (see
/// the module's rules), and a last time when the sender is dropped.
pub(crate) fn spawn(
    path: PathBuf,
    state: Arc<StatusState>,
    changes: watch::Receiver<u64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        write_on_change(path, move || state.mappings(), changes).await;
    })
}

/// What the writer did, for its tests: how many writes, the last one's time, and the shortest
/// time between two.
#[derive(Debug, Default)]
struct Writes {
    count: u64,
    last: Option<Instant>,
    shortest_gap: Option<Duration>,
}

impl Writes {
    fn record(&mut self, at: Instant) {
        if let Some(last) = self.last {
            let gap = at - last;
            self.shortest_gap = Some(self.shortest_gap.map_or(gap, |g| g.min(gap)));
        }
        self.count += 1;
        self.last = Some(at);
    }
}

/// The writer's loop; returns when `changes`' sender is gone.
async fn write_on_change(
    path: PathBuf,
    snapshot: impl Fn() -> Vec<MappingView>,
    mut changes: watch::Receiver<u64>,
) -> Writes {
    let mut writes = Writes::default();
    let mut last_shown: Option<Vec<MappingView>> = None;
    let mut open = true;
    loop {
        if let Some(last) = writes.last {
            tokio::time::sleep_until(last + MIN_SPACING).await;
        }
        // Taken after the pause: every change of the burst is in it.
        let mappings = snapshot();
        let now_shown = shown(&mappings);
        if last_shown.as_ref() != Some(&now_shown) {
            let path2 = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                let bytes = serde_json::to_vec(&mappings).map_err(std::io::Error::other)?;
                write_atomically(&path2, &bytes)
            })
            .await;
            writes.record(Instant::now());
            match written {
                Ok(Ok(())) => last_shown = Some(now_shown),
                Ok(Err(e)) => warn!(path = %path.display(), "cannot write STATUS_FILE: {e}"),
                Err(e) => warn!(path = %path.display(), "STATUS_FILE writer failed: {e}"),
            }
        }
        if !open {
            // That round, after the sender was gone, showed the final state.
            return writes;
        }
        if changes.changed().await.is_err() {
            open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("status.json");
        let tmp = dir.path().join(".status.json.tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();

        write_atomically(&path, b"[]").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[]");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "a file of its own, not a link");
        assert_ne!(meta.ino(), std::fs::metadata(&victim).unwrap().ino());
        assert_eq!(
            meta.permissions().mode() & 0o777 & !0o644,
            0,
            "0644 or stricter"
        );
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "no temporary left"
        );

        // A dangling link (to where a file could be made) is not followed either.
        let made = dir.path().join("made-by-a-link");
        std::os::unix::fs::symlink(&made, &tmp).unwrap();
        write_atomically(&path, b"[1]").unwrap();
        assert!(
            std::fs::symlink_metadata(&made).is_err(),
            "nothing made there"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[1]");
    }

    fn view(internal_port: u16, renewed: u64) -> MappingView {
        MappingView {
            client: Ipv4Addr::new(192, 168, 88, 20),
            protocol: "tcp",
            internal_port,
            router_port: internal_port,
            external_address: Some(Ipv4Addr::new(198, 51, 100, 7)),
            external_port: 40000,
            lifetime: 60,
            lifetime_left: Some(60),
            created: Some(1000),
            last_renewed: Some(renewed),
            origin: "natpmp",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_a_second_apart_and_a_renewal_alone_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let now = Arc::new(Mutex::new(vec![view(5000, 1000)]));
        let (taken_tx, mut taken) = mpsc::unbounded_channel();
        let snapshot = {
            let now = Arc::clone(&now);
            move || {
                let v = now.lock().unwrap().clone();
                let _ = taken_tx.send(v.clone());
                v
            }
        };
        let (tx, rx) = watch::channel(0u64);
        let writer = tokio::spawn(write_on_change(path.clone(), snapshot, rx));
        let set = |v: Vec<MappingView>| {
            *now.lock().unwrap() = v;
            tx.send_modify(|n| *n += 1);
        };
        // The first round shows the first mapping.
        assert_eq!(taken.recv().await.unwrap()[0].internal_port, 5000);
        // A burst of changes: one write, a second after the first, showing the last.
        set(vec![view(5001, 1000)]);
        set(vec![view(5002, 1000)]);
        assert_eq!(taken.recv().await.unwrap()[0].internal_port, 5002);
        // A renewal that moves only its times: looked at, not written.
        set(vec![view(5002, 2000)]);
        assert_eq!(taken.recv().await.unwrap()[0].last_renewed, Some(2000));
        drop(tx);
        let writes = writer.await.unwrap();
        assert_eq!(writes.count, 2, "{writes:?}");
        assert!(
            writes.shortest_gap.is_some_and(|g| g >= MIN_SPACING),
            "{writes:?}"
        );
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(file[0]["internal_port"], 5002);
        assert_eq!(file[0]["last_renewed"], 1000);
    }
}
