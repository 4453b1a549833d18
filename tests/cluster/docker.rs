//! Docker helpers for the integration tests of Docker discovery: real
//! containers and networks on the local engine, driven through the `docker`
//! CLI, and a unix-socket proxy in front of the engine that a test can stop
//! and restart to make the agent see its Docker daemon die and come back.
//!
//! Everything made here carries the label `muster.test=1`. `tests/run.sh`
//! removes whatever carries it before and after a run, so a killed test
//! leaves nothing behind for long. Containers run the local image [`IMAGE`],
//! built by `tests/setup.sh` (nothing can be pulled: there is no registry).
//!
//! The helpers block (they run the CLI); each call takes tens to hundreds of
//! milliseconds, `docker stop` about a second (see [`Container::stop`]).

// A toolbox: not every helper has a caller in every state of the suite.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The test image: a static busybox with `sh`, `sleep`, `httpd`, `true`,
/// `false`, `cat`, `echo`, `test`, `touch`, `rm`, `ls`, `mkdir` and
/// `hostname` in `/bin`; its default command is `/bin/sleep 3600`.
pub const IMAGE: &str = "muster-test/busybox:1";

/// The label every container and network made here carries (value `1`).
pub const TEST_LABEL: &str = "muster.test";

/// The engine's own socket, which [`SocketProxy`] forwards to.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Extra `docker run` arguments for a health check that passes while
/// `/tmp/healthy` exists: toggle it with `exec(&["touch", "/tmp/healthy"])`
/// and `exec(&["rm", "/tmp/healthy"])`. The status starts as `starting`;
/// the first probe runs about 1 s after start, and each later one 1 s after
/// the previous, so a toggle shows within about 1 s.
pub const HEALTH_ARGS: &[&str] = &[
    "--health-cmd",
    "test -e /tmp/healthy",
    "--health-interval",
    "1s",
    "--health-retries",
    "1",
];

/// Runs `docker ARGS...` under `timeout 60` and returns what it did. A hung
/// engine shows as exit status 124.
pub fn docker(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg("docker")
        .args(args)
        .output()
        .expect("run `timeout 60 docker` (coreutils and the docker CLI are installed)")
}

/// Runs `docker ARGS...`, panics with its stderr if it fails, and returns its
/// stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "`docker {}` failed ({}; 124 means it timed out): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Panics with a clear message unless the engine answers and the test image
/// is there. Call it first in every Docker test. Checked once per process.
pub fn require_docker() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECK.get_or_init(|| {
        let info = Command::new("timeout")
            .args(["20", "docker", "info"])
            .output();
        match info {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "Docker engine not answering; see README set-up \
                     (`timeout 20 docker info` exited {}: {})",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "Docker engine not answering; see README set-up \
                     (could not run `timeout 20 docker info`: {e})"
                ));
            }
        }
        if !docker(&["image", "inspect", IMAGE]).status.success() {
            return Err(format!(
                "the test image {IMAGE} is missing: run tests/setup.sh (see README set-up)"
            ));
        }
        Ok(())
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

/// A short id, unique to this call, for the names and labels of one test:
/// at most 10 lowercase hex digits, from the process id and the clock.
pub fn run_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64;
    let count = u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
    let pid = u64::from(std::process::id()) & 0xf_ffff;
    let low = micros.wrapping_add(count.wrapping_mul(7919)) & 0xf_ffff;
    format!("{:x}", (pid << 20) | low)
}

/// Names of every container, running or not, that matches
/// `docker ps --filter label=LABEL_FILTER` (`key` or `key=value`).
pub fn ps_all(label_filter: &str) -> BTreeSet<String> {
    docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={label_filter}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Removes `containers` with `docker rm -f`, at most 10 ids per call (this
/// engine has deadlocked when ~100 removals ran at once), and marks them
/// removed so that dropping them later costs nothing. Panics if a call fails.
pub fn remove_all(containers: &mut [Container]) {
    for chunk in containers.chunks_mut(10) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk.iter().filter(|c| !c.removed).map(|c| c.id.as_str()));
        if args.len() > 2 {
            docker_ok(&args);
        }
        for container in chunk {
            container.removed = true;
        }
    }
}

/// A container of [`IMAGE`], removed (`docker rm -f`) when dropped.
pub struct Container {
    /// The full id.
    pub id: String,
    /// The current name, without Docker's leading `/`.
    pub name: String,
    removed: bool,
}

impl Container {
    /// `docker run -d --name NAME --label muster.test=1 --label K=V...
    /// EXTRA_ARGS... IMAGE CMD...`; `CMD` defaults to the image's
    /// `/bin/sleep 3600` when empty. Panics if the container does not start
    /// (and removes what was created).
    pub fn run(
        name: &str,
        labels: &[(&str, &str)],
        extra_args: &[&str],
        cmd: &[&str],
    ) -> Container {
        Container::make(&["run", "-d"], name, labels, extra_args, cmd)
    }

    /// Like [`Container::run`] but `docker create`: the container exists,
    /// in state `created`, and never ran.
    pub fn create(
        name: &str,
        labels: &[(&str, &str)],
        extra_args: &[&str],
        cmd: &[&str],
    ) -> Container {
        Container::make(&["create"], name, labels, extra_args, cmd)
    }

    fn make(
        verb: &[&str],
        name: &str,
        labels: &[(&str, &str)],
        extra_args: &[&str],
        cmd: &[&str],
    ) -> Container {
        let labels: Vec<String> = std::iter::once(format!("{TEST_LABEL}=1"))
            .chain(labels.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let mut args: Vec<&str> = verb.to_vec();
        args.extend(["--name", name]);
        for label in &labels {
            args.extend(["--label", label.as_str()]);
        }
        args.extend(extra_args);
        args.push(IMAGE);
        args.extend(cmd);
        let out = docker(&args);
        if !out.status.success() {
            // `docker run` may have created the container before failing to
            // start it; do not leave it behind.
            let _ = docker(&["rm", "-f", name]);
            panic!(
                "`docker {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Container {
            id: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            name: name.to_owned(),
            removed: false,
        }
    }

    /// `docker stop -t 1`. The image's `sleep` runs as PID 1 and ignores
    /// SIGTERM, so this takes the full second and ends with SIGKILL (exit
    /// code 137): events `kill` (signal 15), `kill` (9), `die`, network
    /// `disconnect`, `stop`.
    pub fn stop(&self) {
        docker_ok(&["stop", "-t", "1", &self.id]);
    }

    /// `docker kill` (SIGKILL): events `kill` (signal 9), `die`, network
    /// `disconnect`; no `stop` event.
    pub fn kill(&self) {
        docker_ok(&["kill", &self.id]);
    }

    /// `docker start`.
    pub fn start(&self) {
        docker_ok(&["start", &self.id]);
    }

    /// `docker pause`. A health-checked container's status reads
    /// `unhealthy` while paused, with no `health_status` event.
    pub fn pause(&self) {
        docker_ok(&["pause", &self.id]);
    }

    /// `docker unpause`.
    pub fn unpause(&self) {
        docker_ok(&["unpause", &self.id]);
    }

    /// `docker rename`; updates [`Container::name`].
    pub fn rename(&mut self, new: &str) {
        docker_ok(&["rename", &self.id, new]);
        self.name = new.to_owned();
    }

    /// `docker exec ID CMD...`; panics if it fails, returns its stdout.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["exec", self.id.as_str()];
        args.extend(cmd);
        docker_ok(&args)
    }

    /// `docker rm -f`. Idempotent: removing twice, or a container that is
    /// already gone, is fine (this CLI even exits 0 for an unknown id).
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        let out = docker(&["rm", "-f", &self.id]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("No such container"),
            "`docker rm -f {}` ({}) failed ({}): {}",
            self.id,
            self.name,
            out.status,
            stderr.trim()
        );
        self.removed = true;
    }

    /// `docker inspect ID`: the engine's JSON for this container.
    pub fn inspect(&self) -> serde_json::Value {
        let text = docker_ok(&["inspect", &self.id]);
        let mut all: Vec<serde_json::Value> =
            serde_json::from_str(&text).expect("`docker inspect` prints a JSON array");
        assert_eq!(all.len(), 1, "`docker inspect {}` gave {text}", self.id);
        all.pop().expect("one element, checked above")
    }

    /// The container's IPv4 address on `network` (`bridge` for the default
    /// network), or `None` when it is not attached there or not running (a
    /// stopped container keeps its network entries with an empty address).
    pub fn ip(&self, network: &str) -> Option<String> {
        self.network_field(network, "IPAddress")
            .and_then(|v| v.as_str().map(str::to_owned))
            .filter(|ip| !ip.is_empty())
    }

    /// The container's aliases on `network`, as `docker inspect` shows them.
    /// On a user-defined network the engine adds the 12-digit short id after
    /// the given aliases; on the default `bridge` the list is empty.
    pub fn aliases(&self, network: &str) -> Vec<String> {
        self.network_field(network, "Aliases")
            .and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// `State.Status`: `created`, `running`, `paused`, `exited`, ...
    pub fn state(&self) -> String {
        self.inspect()["State"]["Status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `State.Health.Status` (`starting`, `healthy`, `unhealthy`), or `None`
    /// for a container without a health check.
    pub fn health(&self) -> Option<String> {
        self.inspect()["State"]["Health"]["Status"]
            .as_str()
            .map(str::to_owned)
    }

    fn network_field(&self, network: &str, field: &str) -> Option<serde_json::Value> {
        self.inspect()["NetworkSettings"]["Networks"]
            .get(network)?
            .get(field)
            .cloned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.removed {
            let _ = docker(&["rm", "-f", &self.id]);
        }
    }
}

/// A user-defined bridge network, removed when dropped.
///
/// Declare a test's networks before its containers: locals drop in reverse
/// order, so the containers go first. Drop copes with the other order too,
/// by force-disconnecting whatever is still attached; a stopped container
/// left connected to a removed network can no longer start.
pub struct Network {
    /// The full id (what `network` events carry as `Actor.ID`).
    pub id: String,
    /// The name given at creation.
    pub name: String,
}

impl Network {
    /// `docker network create --label muster.test=1 NAME`.
    pub fn create(name: &str) -> Network {
        let id = docker_ok(&[
            "network",
            "create",
            "--label",
            &format!("{TEST_LABEL}=1"),
            name,
        ]);
        Network {
            id,
            name: name.to_owned(),
        }
    }

    /// `docker network connect [--alias A]... NAME CONTAINER`.
    pub fn connect(&self, container: &Container, aliases: &[&str]) {
        let mut args = vec!["network", "connect"];
        for alias in aliases {
            args.extend(["--alias", *alias]);
        }
        args.extend([self.name.as_str(), container.id.as_str()]);
        docker_ok(&args);
    }

    /// `docker network disconnect NAME CONTAINER`.
    pub fn disconnect(&self, container: &Container) {
        docker_ok(&["network", "disconnect", &self.name, &container.id]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let attached = docker(&[
            "network",
            "inspect",
            "-f",
            "{{range $id, $c := .Containers}}{{$id}} {{end}}",
            &self.id,
        ]);
        for container in String::from_utf8_lossy(&attached.stdout).split_whitespace() {
            let _ = docker(&["network", "disconnect", "-f", &self.id, container]);
        }
        let _ = docker(&["network", "rm", &self.id]);
    }
}

/// A unix socket that forwards every connection to the engine's socket,
/// byte for byte, so an agent pointed at it (`unix://PATH`) talks to the
/// real engine until the test calls [`SocketProxy::stop`], which acts like
/// the daemon dying: every open connection is cut and new connections are
/// refused (the socket file is gone). [`SocketProxy::restart`] brings it
/// back on the same path.
///
/// The proxy runs on its own thread with its own single-threaded tokio
/// runtime: an accept-loop task, and one copy task per connection, all
/// owned by the accept loop. So it keeps forwarding while the test thread
/// blocks in a [`docker`] call, whatever the test's runtime flavor, and it
/// works from sync code too. `stop` returns once every connection is closed.
pub struct SocketProxy {
    path: PathBuf,
    upstream: PathBuf,
    running: Option<Running>,
}

/// One incarnation of the proxy: its accept loop and the thread running it.
struct Running {
    accept: tokio::task::AbortHandle,
    thread: std::thread::JoinHandle<()>,
}

impl SocketProxy {
    /// Listens at `path` (a stale file there is removed first) and forwards
    /// to [`DOCKER_SOCKET`]. `path` must be short (unix sockets allow 107
    /// bytes); a file in a fresh temp dir is fine.
    pub fn start(path: &Path) -> SocketProxy {
        SocketProxy::start_to(path, Path::new(DOCKER_SOCKET))
    }

    /// Like [`SocketProxy::start`], forwarding to `upstream`.
    pub fn start_to(path: &Path, upstream: &Path) -> SocketProxy {
        SocketProxy {
            path: path.to_owned(),
            upstream: upstream.to_owned(),
            running: Some(launch(path, upstream)),
        }
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `unix://PATH`, the Docker host URL of this proxy.
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Whether it is listening (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Removes the socket file (new connections fail with "no such file"),
    /// then ends the accept loop and every connection task, which closes
    /// both ends of every forwarded connection; returns when all are closed.
    /// Idempotent.
    pub fn stop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(running) = self.running.take() {
            running.accept.abort();
            if running.thread.join().is_err() {
                eprintln!("socket proxy {}: its thread panicked", self.path.display());
            }
        }
    }

    /// Starts again on the same path (stopping first if it is running).
    pub fn restart(&mut self) {
        self.stop();
        self.running = Some(launch(&self.path, &self.upstream));
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `path` now (so a client can connect as soon as this returns) and
/// serves it on a new thread.
fn launch(path: &Path, upstream: &Path) -> Running {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove stale socket {}: {e}", path.display()),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .unwrap_or_else(|e| panic!("bind proxy socket {}: {e}", path.display()));
    listener
        .set_nonblocking(true)
        .expect("make the proxy listener non-blocking, as tokio requires");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the socket proxy's runtime");
    let accept = {
        // `from_std` registers the socket with the runtime entered here.
        let _guard = runtime.enter();
        let listener = tokio::net::UnixListener::from_std(listener)
            .expect("register the proxy listener with tokio");
        runtime.spawn(accept_loop(listener, upstream.to_owned()))
    };
    let abort = accept.abort_handle();
    let thread = std::thread::Builder::new()
        .name("docker-socket-proxy".to_owned())
        .spawn(move || {
            // Returns when the accept loop is aborted; dropping the runtime
            // afterwards (here, off any async context) drops every task left.
            let _ = runtime.block_on(accept);
        })
        .expect("spawn the socket proxy thread");
    Running {
        accept: abort,
        thread,
    }
}

/// Accepts connections until aborted; each gets a task copying both ways.
/// The tasks live in a `JoinSet` owned by this future, so aborting the
/// loop aborts them all.
async fn accept_loop(listener: tokio::net::UnixListener, upstream: PathBuf) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(forward(client, upstream.clone()));
                }
                Err(e) => {
                    eprintln!("socket proxy: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Copies bytes both ways between `client` and a new connection to
/// `upstream` until both sides are done. If the engine does not answer, the
/// client's connection is closed at once.
async fn forward(mut client: tokio::net::UnixStream, upstream: PathBuf) {
    let mut engine = match tokio::net::UnixStream::connect(&upstream).await {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("socket proxy: connect {}: {e}", upstream.display());
            return;
        }
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
}
