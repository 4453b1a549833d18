//! Starts real `muster agent` processes on loopback and talks to them with
//! real clients: the generated gRPC client, the `muster` CLI, `dig` and
//! dnspython.
//!
//! Each test gets its own loopback address block `127.X.Y.0/24` (agent `i`
//! lives on `127.X.Y.i`), so the fixed ports below never collide between
//! tests running in parallel.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use muster_proto::v1;
use muster_proto::v1::directory_client::DirectoryClient;
use tonic::transport::Channel;

pub const GOSSIP_PORT: u16 = 7946;
pub const DNS_PORT: u16 = 8600;
pub const GRPC_PORT: u16 = 8700;
pub const HTTP_PORT: u16 = 8800;
/// libfaketime for threaded programs (Debian's libfaketime).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The muster binary under test.
pub fn muster_bin() -> &'static str {
    env!("CARGO_BIN_EXE_muster")
}

/// A fresh `127.X.Y` prefix for one test.
pub fn loopback_block() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
    let n = seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919));
    format!("127.{}.{}", 1 + n % 250, 1 + (n / 250) % 250)
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How to start one agent.
#[derive(Clone)]
pub struct AgentSpec {
    pub name: String,
    pub ip: String,
    pub join: Vec<String>,
    pub static_records: Option<String>,
    pub gossip_interval: String,
    pub zone: String,
    /// `None`: `--no-docker`; `Some(args)`: watch Docker with these flags.
    pub docker_args: Option<Vec<String>>,
    pub extra_args: Vec<String>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    pub dead_grace: String,
    /// Run with the wall clock shifted (libfaketime), e.g. `-1h`.
    pub clock_offset: Option<String>,
}

/// A running agent process; killed (SIGKILL) when dropped.
pub struct Agent {
    pub spec: AgentSpec,
    pub dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl AgentSpec {
    pub fn new(block: &str, index: u8, name: &str) -> AgentSpec {
        AgentSpec {
            name: name.to_owned(),
            ip: format!("{block}.{index}"),
            join: Vec::new(),
            static_records: None,
            gossip_interval: "100ms".to_owned(),
            zone: "muster".to_owned(),
            docker_args: None,
            extra_args: Vec::new(),
            netns: None,
            dead_grace: "1s".to_owned(),
            clock_offset: None,
        }
    }

    pub fn gossip_addr(&self) -> String {
        format!("{}:{GOSSIP_PORT}", self.ip)
    }

    pub fn joining(mut self, seed: &AgentSpec) -> AgentSpec {
        self.join.push(seed.gossip_addr());
        self
    }

    /// Watches the Docker engine, publishing only containers labelled
    /// `muster.test.host=<host_label>`, with `more` flags.
    pub fn with_docker(mut self, host_label: &str, more: &[&str]) -> AgentSpec {
        let mut args = vec![
            "--docker-filter".to_owned(),
            format!("label=muster.test.host={host_label}"),
            "--exited-retention".to_owned(),
            "1h".to_owned(),
        ];
        args.extend(more.iter().map(|s| s.to_string()));
        self.docker_args = Some(args);
        self
    }

    /// More command-line flags for `muster agent`.
    pub fn with_args(mut self, args: &[&str]) -> AgentSpec {
        self.extra_args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    pub fn with_records(mut self, toml: &str) -> AgentSpec {
        self.static_records = Some(toml.to_owned());
        self
    }

    /// Runs the agent inside network namespace `ns`.
    pub fn in_netns(mut self, ns: &str) -> AgentSpec {
        self.netns = Some(ns.to_owned());
        self
    }

    /// The command line for this agent, writing its files under `dir`.
    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = match &self.netns {
            None => Command::new(muster_bin()),
            Some(ns) => {
                // `ip netns exec` execs the agent: the child's pid is the
                // agent's, so signals reach it.
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, muster_bin()]);
                cmd
            }
        };
        cmd.arg("agent")
            .args(["--node-name", &self.name])
            .args(["--gossip-addr", &self.gossip_addr()])
            .args(["--dns-addr", &format!("{}:{DNS_PORT}", self.ip)])
            .args(["--grpc-addr", &format!("{}:{GRPC_PORT}", self.ip)])
            .args(["--http-addr", &format!("{}:{HTTP_PORT}", self.ip)])
            .args(["--zone", &self.zone])
            .args([
                "--gossip-interval",
                &self.gossip_interval,
                "--dead-grace",
                &self.dead_grace,
            ]);
        match &self.docker_args {
            None => {
                cmd.arg("--no-docker");
            }
            Some(args) => {
                cmd.args(args);
            }
        }
        for seed in &self.join {
            cmd.args(["--join", seed]);
        }
        if self.static_records.is_some() {
            cmd.arg("--static-file").arg(dir.join("records.toml"));
        }
        cmd.args(&self.extra_args);
        cmd.env("MUSTER_LOG", "info,hickory_server=warn,chitchat=warn");
        if let Some(offset) = &self.clock_offset {
            // The wall clock only; timers run on the monotonic clock.
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        cmd
    }
}

impl Agent {
    /// Starts the agent and waits until its gRPC API answers.
    pub async fn start(spec: AgentSpec) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("muster-{}-", spec.name))
            .tempdir()
            .expect("temp dir")
            .keep();
        if let Some(records) = &spec.static_records {
            std::fs::write(dir.join("records.toml"), records).expect("write records");
        }
        let mut agent = Agent {
            spec,
            dir,
            child: None,
            log: PathBuf::new(),
        };
        agent.spawn().await;
        agent
    }

    async fn spawn(&mut self) {
        self.log = self.dir.join(format!("agent-{}.log", now_millis()));
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = self
            .spec
            .command(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn muster agent");
        self.child = Some(child);
        let addr = self.grpc_addr();
        if let Some(ns) = self.spec.netns.clone() {
            // Not reachable from here: ask from inside its namespace.
            eventually(
                Duration::from_secs(20),
                &format!("agent {} to serve gRPC in {ns}", self.spec.name),
                || {
                    let (ns, addr) = (ns.clone(), addr.clone());
                    async move {
                        let out = Command::new("ip")
                            .args(["netns", "exec", &ns, muster_bin(), "members"])
                            .args(["--addr", &addr])
                            .output()
                            .ok()?;
                        out.status.success().then_some(())
                    }
                },
            )
            .await;
            return;
        }
        if self.spec.extra_args.iter().any(|a| a == "--grpc-tls-cert") {
            // gRPC speaks TLS: wait for the HTTP endpoint, which starts
            // after it.
            let http = format!("{}:{HTTP_PORT}", self.spec.ip);
            eventually(
                Duration::from_secs(20),
                &format!("agent {} to serve HTTP", self.spec.name),
                || {
                    let http = http.clone();
                    async move { http_get(&http, "/healthz").await.map(|_| ()) }
                },
            )
            .await;
            return;
        }
        eventually(
            Duration::from_secs(20),
            &format!("agent {} to serve gRPC", self.spec.name),
            || {
                let addr = addr.clone();
                async move {
                    DirectoryClient::connect(format!("http://{addr}"))
                        .await
                        .ok()
                }
            },
        )
        .await;
    }

    pub fn grpc_addr(&self) -> String {
        format!("{}:{GRPC_PORT}", self.spec.ip)
    }

    pub fn dns_port(&self) -> u16 {
        DNS_PORT
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("agent running").id() as i32
    }

    pub async fn client(&self) -> DirectoryClient<Channel> {
        DirectoryClient::connect(format!("http://{}", self.grpc_addr()))
            .await
            .expect("connect to agent")
    }

    /// Names of records this agent's directory holds for `name`.
    pub async fn lookup(&self, name: &str) -> Vec<v1::Record> {
        match self
            .client()
            .await
            .lookup(v1::LookupRequest {
                name: name.to_owned(),
            })
            .await
        {
            Ok(r) => r.into_inner().records,
            Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
            Err(s) => panic!("lookup {name}: {s}"),
        }
    }

    /// Records this agent lists for `selector` (empty: all).
    pub async fn list(&self, selector: &str) -> Vec<v1::Record> {
        self.client()
            .await
            .list(v1::ListRequest {
                selector: selector.to_owned(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .records
    }

    pub async fn members(&self) -> Vec<v1::Member> {
        self.client()
            .await
            .members(v1::MembersRequest {})
            .await
            .expect("members")
            .into_inner()
            .members
    }

    /// Sends a signal to the agent process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a child we own; no memory is shared.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same agent again (same name, addresses and files).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Rewrites the static records file.
    pub fn write_records(&self, toml: &str) {
        std::fs::write(self.dir.join("records.toml"), toml).expect("write records");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- log of agent {} ({}) ----\n{}",
                self.spec.name,
                self.log.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
}

/// Runs the muster CLI.
pub fn muster_cli(args: &[&str]) -> Output {
    Command::new(muster_bin())
        .args(args)
        .output()
        .expect("run muster")
}

/// `dig +short`-style answers from a real `dig`, or the status line when
/// `status` is set.
pub fn dig(server_ip: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{server_ip}"))
        .args(["-p", &port.to_string(), "+time=2", "+tries=2"])
        .args(args)
        .output()
        .expect("dig is installed (see README: tests/setup.sh)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short` answer lines, sorted.
pub fn dig_sorted(server_ip: &str, port: u16, args: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = dig(server_ip, port, &[&["+short"], args].concat())
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The answer of dnspython, as JSON: `{"rcode": "NOERROR", "answers": [...],
/// "authority": [...], "flags": [...]}`.
pub fn dnspython(
    server_ip: &str,
    port: u16,
    name: &str,
    rtype: &str,
    tcp: bool,
) -> serde_json::Value {
    dnspython_with(
        server_ip,
        port,
        name,
        rtype,
        if tcp { &["--tcp"] } else { &[] },
    )
}

/// Many questions (`[name, type]`) in one dnspython process, with options
/// of dns_query.py (`--tcp`, `--no-edns`, `--payload=N`); one reply each.
pub fn dnspython_batch(
    server_ip: &str,
    port: u16,
    questions: &[(&str, &str)],
    options: &[&str],
) -> Vec<serde_json::Value> {
    use std::io::Write;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/cluster/dns_query.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .args([server_ip, &port.to_string(), "--batch"])
        .args(options)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is installed");
    let input = serde_json::to_vec(questions).expect("questions as JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("questions written");
    let out = child.wait_with_output().expect("dns_query.py ran");
    assert!(
        out.status.success(),
        "dns_query.py failed (is dnspython installed? see README): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dns_query.py prints JSON")
}

/// [`dnspython`] with options of dns_query.py (`--tcp`, `--no-edns`,
/// `--payload=N`).
pub fn dnspython_with(
    server_ip: &str,
    port: u16,
    name: &str,
    rtype: &str,
    options: &[&str],
) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/cluster/dns_query.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([server_ip, &port.to_string(), name, rtype])
        .args(options);
    let out = cmd.output().expect("python3 is installed");
    assert!(
        out.status.success(),
        "dns_query.py failed (is dnspython installed? see README): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dns_query.py prints JSON")
}

/// One HTTP answer: status code, status line and headers, body.
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    /// A header's value, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `GET path_and_query` from `addr` over HTTP/1.0, so that the body is
/// never chunked and ends with the connection. `None` if the server cannot
/// be reached or does not answer within 5 s.
pub async fn http_get(addr: &str, path_and_query: &str) -> Option<HttpReply> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.ok()?;
        Some(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()??;
    let reply = String::from_utf8(reply).expect("an HTTP answer in UTF-8");
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .expect("an HTTP answer has a blank line after its headers");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    Some(HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// One A question for `name`, with message id `id`, encoded.
#[allow(dead_code)]
pub fn a_query(name: &str, id: u16) -> Vec<u8> {
    use hickory_server::proto::op::{Message, Query};
    use hickory_server::proto::rr::{Name, RecordType};
    let mut query = Message::query();
    query.metadata.id = id;
    query.add_query(Query::query(
        Name::from_ascii(name).expect("a valid name"),
        RecordType::A,
    ));
    query.to_vec().expect("encodes")
}

/// What one A question got.
#[derive(Debug, PartialEq)]
pub enum Answered {
    /// These IPv4 addresses (none: NXDOMAIN or NODATA).
    A(Vec<String>),
    /// No reply within the socket's read timeout.
    Silence,
}

/// Asks `server` over UDP on `socket` for the A records of `name`; a late
/// reply to an earlier question is skipped, not taken for this one.
#[allow(dead_code)]
pub fn ask_a(socket: &std::net::UdpSocket, server: &str, name: &str) -> Answered {
    use hickory_server::proto::op::Message;
    use hickory_server::proto::rr::RData;
    static NEXT_ID: AtomicU32 = AtomicU32::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) as u16;
    if socket.send_to(&a_query(name, id), server).is_err() {
        return Answered::Silence;
    }
    let mut buf = [0u8; 1500];
    loop {
        let Ok(n) = socket.recv(&mut buf) else {
            return Answered::Silence;
        };
        let reply = Message::from_vec(&buf[..n]).expect("a DNS reply");
        if reply.metadata.id != id {
            continue;
        }
        return Answered::A(
            reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect(),
        );
    }
}

/// The first IPv4 address `server` answers for `name` (A, over UDP on
/// `socket`), `None` when it answers none or does not answer in the
/// socket's read timeout. For tests and benches that poll fast.
#[allow(dead_code)]
pub fn resolve_a(socket: &std::net::UdpSocket, server: &str, name: &str) -> Option<String> {
    match ask_a(socket, server, name) {
        Answered::A(ips) => ips.into_iter().next(),
        Answered::Silence => None,
    }
}

/// The value of one series of an agent's `/metrics` (e.g.
/// `muster_gossip_rejected_total{reason="auth"}`), `None` if absent or the
/// agent does not answer.
#[allow(dead_code)]
pub async fn metric(agent: &Agent, series: &str) -> Option<f64> {
    let addr = format!("{}:{HTTP_PORT}", agent.spec.ip);
    let reply = http_get(&addr, "/metrics").await?;
    reply.body.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// CPU time (user + system) process `pid` has used so far, from
/// `/proc/PID/stat` (10 ms ticks). For benches.
#[allow(dead_code)]
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Resident memory of process `pid` in KiB, from `/proc/PID/status`. For
/// benches.
#[allow(dead_code)]
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
