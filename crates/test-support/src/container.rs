//! A real container engine for the tests: podman (with runc) running the image file that
//! `scripts/image.sh` wrote, each [`Podman`] with its own storage in a temporary directory, so
//! tests run in parallel and leave no container, image or lock behind.
//!
//! On these machines podman runs as root with: the runc runtime (crun refuses hybrid cgroups),
//! no default ulimits (runc cannot set RLIMIT_NPROC/NOFILE here), cgroupfs, the vfs storage
//! driver, file locks in the engine's own directory (the default shared-memory locks are one set
//! for every podman on the machine, whatever its storage), events in a file, and never a pull:
//! no registry is reachable. A container gets a test's network namespace with
//! `--network ns:/run/netns/NAME`, or with `--network host` when podman itself runs under
//! `nsenter --net` (not `ip netns exec`: its fresh /sys hides the cgroup mounts runc needs).
//! Without systemd podman logs that it cannot time health checks; the tests run them with
//! `podman healthcheck run`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::lab;

/// The options every container of the tests runs with, besides the README's own.
pub const LOCKED_DOWN: [&str; 2] = ["--read-only", "--cap-drop=all"];

/// The image file `scripts/image.sh` writes (a docker-archive, as RouterOS loads it).
pub fn archive() -> PathBuf {
    crate::repo_root().join("target/image/double-natpmp-amd64.tar")
}

/// The image's name in the archive (`scripts/image.sh` tags it with the crate version).
pub fn image() -> String {
    format!("localhost/double-natpmp:{}", double_natpmp::VERSION)
}

/// The static binary the image was built from (`scripts/static-build.sh`).
pub fn static_binary() -> PathBuf {
    crate::repo_root().join("target/static/double-natpmp")
}

/// Whether this process can run the container tests: root and the namespace tools (see
/// [`lab::available`]), podman, skopeo, nsenter and the image file. Under CI=true anything
/// missing fails the test; locally it prints a loud notice and the caller returns early.
pub fn available(test: &str) -> bool {
    available_with(
        test,
        &archive(),
        "scripts/static-build.sh and scripts/image.sh",
    )
}

/// [`available`] for the image file `archive`, which `made_by` writes.
pub fn available_with(test: &str, archive: &Path, made_by: &str) -> bool {
    if !lab::available(test) {
        return false;
    }
    let why = if let Some(tool) = ["podman", "skopeo", "runc", "nsenter", "tar"]
        .into_iter()
        .find(|t| lab::which(t).is_none())
    {
        format!("needs {tool} (the test command installs buildah, podman, runc and skopeo)")
    } else if !archive.is_file() {
        format!("needs the image file {}: run {made_by}", archive.display())
    } else {
        return true;
    };
    crate::skip::skip(test, &why)
}

/// One podman with its own storage, configuration and locks, the image loaded. Dropping it
/// removes every container (killing what still runs) and image it holds, stops the processes
/// it started, and deletes the directory.
pub struct Podman {
    dir: tempfile::TempDir,
    /// The processes [`Podman::spawn`] started, each with its tag.
    children: Vec<(String, Child)>,
}

impl Podman {
    /// A fresh engine with the image file loaded.
    pub fn new() -> Podman {
        Podman::loading(&archive())
    }

    /// A fresh engine with the image file `archive` loaded (one of `scripts/image.sh`'s
    /// docker-archives, whatever its architecture).
    pub fn loading(archive: &Path) -> Podman {
        let dir = tempfile::tempdir().expect("temp dir for podman's storage");
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\n\
             default_ulimits = []\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             lock_type = \"file\"\n\
             pull_policy = \"never\"\n\
             runtime = \"runc\"\n",
        )
        .expect("write containers.conf");
        let podman = Podman {
            dir,
            children: Vec::new(),
        };
        let loaded = podman.ok(&["load", "-i", archive.to_str().unwrap_or_default()]);
        assert!(
            loaded.contains(&format!("Loaded image: {}", image())),
            "{} does not hold {}: podman load said {loaded}",
            archive.display(),
            image()
        );
        podman
    }

    /// A podman command using this engine's storage and configuration.
    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null());
        cmd
    }

    /// The same command, run by podman inside the network namespace `netns` (only the network
    /// namespace changes, so the cgroup mounts stay visible): `--network host` is that namespace.
    pub fn command_in(&self, netns: &str) -> Command {
        let plain = self.command();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{netns}"))
            .arg(plain.get_program())
            .args(plain.get_args())
            .envs(
                plain
                    .get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `podman ARGS` and returns its output, whatever its status.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run podman {args:?}: {e}"))
    }

    /// Runs `podman ARGS`, fails the test with podman's words unless it succeeds, and returns
    /// its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `podman inspect --format FORMAT NAME` of a container.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["container", "inspect", "--format", format, name])
    }

    /// Starts `cmd` (a podman command from this engine) and returns its output and error lines,
    /// each also echoed to the test's stderr with `tag`; the process is killed on drop.
    pub fn spawn(&mut self, mut cmd: Command, tag: &str) -> mpsc::Receiver<String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let (tx, rx) = mpsc::channel();
        let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let tx = tx.clone();
            let tag = tag.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("[{tag}] {line}");
                    // A closed channel only means nobody listens any more; keep draining.
                    let _ = tx.send(line);
                }
            });
        }
        self.children.push((tag.to_owned(), child));
        rx
    }

    /// Waits, bounded, for a line containing `needle` from a process [`Podman::spawn`] started.
    /// If its output ends first (podman exited), fails at once, saying how the processes ended.
    pub fn wait_for_line(
        &mut self,
        rx: &mpsc::Receiver<String>,
        needle: &str,
        limit: Duration,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no line containing {needle:?} within {limit:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both output streams closed: the process is ending, or has ended.
                    let exits: Vec<String> = self
                        .children
                        .iter_mut()
                        .map(|(tag, c)| match wait_bounded(c, Duration::from_secs(5)) {
                            Some(status) => format!("[{tag}] exited: {status}"),
                            None => format!("[{tag}] still runs"),
                        })
                        .collect();
                    panic!(
                        "the output ended before a line containing {needle:?} (see the lines \
                         above): {}",
                        exits.join("; ")
                    )
                }
            }
        }
    }

    /// Starts `podman run … IMAGE demo` (in the foreground, read-only, no capabilities, with
    /// `extra` options such as `--platform`) in the network namespace `ns` and waits until the
    /// demo's daemon serves on 127.0.0.1:5351.
    pub fn start_demo(
        &mut self,
        ns: &lab::Netns,
        name: &str,
        extra: &[&str],
    ) -> mpsc::Receiver<String> {
        let mut cmd = self.command();
        cmd.args(["run", "--name", name])
            .arg(format!("--network=ns:/run/netns/{}", ns.name))
            .args(LOCKED_DOWN)
            .args(extra)
            .args([image().as_str(), "demo"]);
        let lines = self.spawn(cmd, name);
        // Under qemu-user an ARM daemon starts slower than a native one.
        self.wait_for_line(
            &lines,
            "daemon (NAT-PMP)        127.0.0.1:5351",
            Duration::from_secs(60),
        );
        lines
    }

    /// Follows a container's log (`podman logs -f`) until the engine drops.
    pub fn follow_logs(&mut self, name: &str) -> mpsc::Receiver<String> {
        let mut cmd = self.command();
        cmd.args(["logs", "-f", name]);
        self.spawn(cmd, name)
    }

    /// Waits, bounded, for the last process [`Podman::spawn`] started to exit; its exit code.
    pub fn wait_last(&mut self, limit: Duration) -> Option<i32> {
        let (tag, child) = self.children.last_mut().expect("a started process");
        wait_bounded(child, limit)
            .unwrap_or_else(|| panic!("[{tag}] did not exit within {limit:?}"))
            .code()
    }

    /// The exit codes and outputs of a container's health checks so far, one a line.
    pub fn health_log(&self, name: &str) -> String {
        self.inspect(
            name,
            "{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}\n{{end}}",
        )
    }

    /// The host PID of a running container's first process.
    pub fn pid(&self, name: &str) -> u32 {
        let pid = self.inspect(name, "{{.State.Pid}}");
        pid.parse()
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("container {name} has no process (State.Pid = {pid:?})"))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Force-remove every container (SIGKILL after 0 s) and image, then the processes this
        // engine started (followers of logs, `podman run` clients), then the directory.
        let _ = self.command().args(["rm", "-a", "-f", "-t", "0"]).output();
        let _ = self.command().args(["rmi", "-a", "-f"]).output();
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits up to `limit` for `child` to exit (std has no wait with a time limit, so it polls).
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => return None,
        }
    }
}
