//! Several hosts, real faults: each host is a network namespace of its own
//! with one address, wired by veth pairs into a bridge that lives in a
//! namespace too, so nothing touches the machine's own network. Links are
//! cut with INPUT drop rules on the receiving side (a real cut never makes
//! `sendto` fail), loss is an iptables `statistic` drop, and delay with
//! jitter is an NFQUEUE rule whose packets a [`Delayer`] thread of this
//! process (moved into the host's namespace) holds back (this kernel has no
//! `tc netem`). Agents are killed, restarted and paused with signals.
//! Every scenario compares each agent's directory with the truth.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The hosts' subnet; every lab has its own bridge, so labs never meet.
const SUBNET: &str = "10.77.0";

/// The soak knobs: `MUSTER_SOAK_SECS` (how long the loss lasts, default
/// 10) and `MUSTER_SOAK_HOSTS` (hosts under loss, default 3). The CI run
/// uses the defaults; see the README for the long run.
fn soak() -> (Duration, usize) {
    let secs = std::env::var("MUSTER_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let hosts = std::env::var("MUSTER_SOAK_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .clamp(2, 20);
    (Duration::from_secs(secs), hosts)
}

/// A set of hosts in network namespaces; everything is deleted on drop.
/// Their agents gossip sealed, with one key made by `muster keygen`: the
/// faults below are faults of the keyed cluster (an agent gossiping on a
/// non-loopback address without a key refuses to start).
pub struct Lab {
    bridge: String,
    hosts: Vec<String>,
    keys: tempfile::TempDir,
}

/// Writes a key file of `muster keygen` keys (one per line) to `path`.
pub fn write_keys(path: &std::path::Path, keys: &[String]) {
    std::fs::write(path, keys.join("\n") + "\n").expect("write key file");
}

/// A new key from `muster keygen`.
pub fn keygen() -> String {
    let out = Command::new(muster_bin())
        .arg("keygen")
        .output()
        .expect("muster keygen runs");
    assert!(out.status.success(), "muster keygen: {out:?}");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

fn ip_cmd(args: &[&str]) -> Output {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Lab {
    /// `n` hosts, `10.77.0.1` to `10.77.0.n`, all linked.
    pub fn new(n: usize) -> Lab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "mst{}x{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let bridge = format!("{id}-br");
        let lab = Lab {
            hosts: (1..=n).map(|i| format!("{id}-h{i}")).collect(),
            bridge,
            keys: tempfile::tempdir().expect("temp dir"),
        };
        write_keys(&lab.key_file(), &[keygen()]);
        ip_cmd(&["netns", "add", &lab.bridge]);
        ip_cmd(&["-n", &lab.bridge, "link", "add", "br0", "type", "bridge"]);
        ip_cmd(&["-n", &lab.bridge, "link", "set", "br0", "up"]);
        for (i, ns) in lab.hosts.iter().enumerate() {
            let port = format!("p{}", i + 1);
            ip_cmd(&["netns", "add", ns]);
            ip_cmd(&[
                "-n",
                ns,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lab.bridge,
            ]);
            ip_cmd(&["-n", &lab.bridge, "link", "set", &port, "master", "br0"]);
            ip_cmd(&["-n", &lab.bridge, "link", "set", &port, "up"]);
            ip_cmd(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", lab.ip(i)),
                "dev",
                "eth0",
            ]);
            ip_cmd(&["-n", ns, "link", "set", "eth0", "up"]);
            ip_cmd(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// The gossip key file every agent of the lab reads.
    pub fn key_file(&self) -> std::path::PathBuf {
        self.keys.path().join("gossip.key")
    }

    /// Host `i`'s address (0-based).
    pub fn ip(&self, i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Runs a command inside host `i`.
    pub fn exec(&self, i: usize, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", self.ns(i), program])
            .args(args)
            .output()
            .expect("ip netns exec runs")
    }

    fn iptables(&self, i: usize, args: &[&str]) {
        let out = self.exec(i, "iptables", args);
        assert!(
            out.status.success(),
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Cuts every link between the hosts of `a` and those of `b`, both ways.
    pub fn cut(&self, a: &[usize], b: &[usize]) {
        for (from, to) in [(a, b), (b, a)] {
            for &host in to {
                for &peer in from {
                    self.iptables(host, &["-A", "INPUT", "-s", &self.ip(peer), "-j", "DROP"]);
                }
            }
        }
    }

    /// Drops each incoming packet with probability `p`, on every host.
    pub fn lose(&self, p: f64) {
        for i in 0..self.hosts.len() {
            self.iptables(
                i,
                &[
                    "-A",
                    "INPUT",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p.to_string(),
                    "-j",
                    "DROP",
                ],
            );
        }
    }

    /// Host `i` refuses TCP to its gossip port, as a firewall opened only
    /// for UDP would: datagrams pass, messages past the MTU do not.
    pub fn refuse_gossip_tcp(&self, i: usize) {
        self.iptables(
            i,
            &[
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                &GOSSIP_PORT.to_string(),
                "-j",
                "DROP",
            ],
        );
    }

    /// The body of host `i`'s HTTP endpoint `path`, fetched from inside its
    /// namespace; empty if it does not answer.
    pub fn http(&self, i: usize, path: &str) -> String {
        let url = format!("http://{}:{HTTP_PORT}{path}", self.ip(i));
        let out = self.exec(
            i,
            "python3",
            &[
                "-c",
                "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
                &url,
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One series of host `i`'s `/metrics`, read from inside its namespace.
    pub fn metric(&self, i: usize, series: &str) -> Option<f64> {
        self.http(i, "/metrics").lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// Member `name` as host `i` shows it in `muster members -o json`.
    pub fn member(&self, i: usize, name: &str) -> Option<serde_json::Value> {
        let addr = format!("{}:{GRPC_PORT}", self.ip(i));
        let out = self.exec(i, muster_bin(), &["members", "-o", "json", "--addr", &addr]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        json["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
    }

    /// Removes every cut and every loss.
    pub fn heal(&self) {
        for i in 0..self.hosts.len() {
            self.iptables(i, &["-F", "INPUT"]);
        }
    }

    /// Starts an agent named `h<i+1>` on host `i`, joining host 0.
    pub async fn agent(&self, i: usize, records: &str) -> Agent {
        Agent::start(self.spec(i, records)).await
    }

    /// How [`Lab::agent`] starts host `i`'s agent.
    pub fn spec(&self, i: usize, records: &str) -> AgentSpec {
        let mut spec = AgentSpec::new(SUBNET, (i + 1) as u8, &format!("h{}", i + 1))
            .in_netns(self.ns(i))
            .with_records(records)
            .with_args(&["--gossip-key-file", &self.key_file().to_string_lossy()]);
        if i != 0 {
            spec.join.push(format!("{}:{GOSSIP_PORT}", self.ip(0)));
        }
        spec
    }

    /// What host `i`'s agent lists: (host, name) of every record.
    pub fn listed(&self, i: usize) -> BTreeSet<(String, String)> {
        let addr = format!("{}:{GRPC_PORT}", self.ip(i));
        let out = self.exec(i, muster_bin(), &["ls", "-o", "json", "--addr", &addr]);
        let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => return BTreeSet::new(),
        };
        json["records"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (s("host"), s("name"))
            })
            .collect()
    }

    /// Liveness of every member as host `i` sees it: (name, state, generation).
    pub fn members(&self, i: usize) -> Vec<(String, String, u64)> {
        let addr = format!("{}:{GRPC_PORT}", self.ip(i));
        let out = self.exec(i, muster_bin(), &["members", "-o", "json", "--addr", &addr]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        json["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_owned(),
                    m["state"].as_str().unwrap_or_default().to_owned(),
                    m["generation"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// One look at every host's member list: each member a host sees dead,
    /// as (host index, member name). With every agent running, each is a
    /// false death.
    pub fn dead_seen(&self) -> Vec<(usize, String)> {
        (0..self.hosts.len())
            .flat_map(|i| {
                self.members(i)
                    .into_iter()
                    .filter(|(_, state, _)| state == "dead")
                    .map(move |(name, _, _)| (i, name))
            })
            .collect()
    }

    /// The addresses host `i`'s DNS answers for `name`.
    pub fn resolve(&self, i: usize, name: &str) -> Vec<String> {
        let server = format!("@{}", self.ip(i));
        let out = self.exec(
            i,
            "dig",
            &[
                &server,
                "-p",
                &DNS_PORT.to_string(),
                "+short",
                "+time=1",
                "+tries=1",
                name,
            ],
        );
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(';'))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }
}

/// Holds every gossip datagram a host receives for `delay` ± `jitter`,
/// from an NFQUEUE rule in that host; stops (releasing what it holds) when
/// dropped. The queue rule has `--queue-bypass`: without a delayer,
/// packets pass.
pub struct Delayer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Delayer {
    pub fn start(lab: &Lab, host: usize, delay: Duration, jitter: Duration) -> Delayer {
        let out = lab.exec(
            host,
            "iptables",
            &[
                "-I",
                "INPUT",
                "-p",
                "udp",
                "--dport",
                &GOSSIP_PORT.to_string(),
                "-j",
                "NFQUEUE",
                "--queue-num",
                "0",
                "--queue-bypass",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stop = Arc::new(AtomicBool::new(false));
        let ns = format!("/var/run/netns/{}", lab.ns(host));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let file = std::fs::File::open(&ns).expect("namespace file");
                // SAFETY: setns(2) on this thread only, with a valid fd.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns into {ns}");
                let mut queue = nfq::Queue::open().expect("nfqueue");
                queue.bind(0).expect("bind queue 0");
                queue.set_nonblocking(true);
                let _ = ready_tx.send(());
                let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
                let mut held: HashMap<u64, nfq::Message> = HashMap::new();
                let mut next = 0u64;
                let spread = jitter.as_micros() as u64 * 2;
                loop {
                    let stopping = stop.load(Ordering::Relaxed);
                    while let Ok(mut msg) = queue.recv() {
                        msg.set_verdict(nfq::Verdict::Accept);
                        let offset = Duration::from_micros(fastrand::u64(0..=spread.max(1)));
                        let at = Instant::now() + (delay + offset).saturating_sub(jitter);
                        due.push(Reverse((at, next)));
                        held.insert(next, msg);
                        next += 1;
                    }
                    let now = Instant::now();
                    while let Some(Reverse((at, id))) = due.peek().copied() {
                        if at > now && !stopping {
                            break;
                        }
                        due.pop();
                        if let Some(msg) = held.remove(&id) {
                            let _ = queue.verdict(msg);
                        }
                    }
                    if stopping {
                        let _ = queue.unbind(0);
                        return next;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the delayer bound its queue");
        Delayer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Delayer {
    /// Stops, releasing what it holds; returns how many datagrams it
    /// delayed.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("delayer thread"))
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.bridge)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The static file of host `i`: one record `r<i+1>-<k>` per k in `keys`.
fn records(i: usize, keys: &[u32]) -> String {
    keys.iter()
        .map(|k| {
            format!(
                "[[record]]\nname = \"r{}-{k}\"\naddresses = [\"10.200.{}.{k}\"]\n",
                i + 1,
                i + 1
            )
        })
        .collect()
}

/// Like [`records`], each with a label of 32 random-looking hex digits:
/// gossip compresses its messages (zstd), and 100 of these stay far past
/// one datagram once compressed.
fn incompressible_records(i: usize, keys: &[u32]) -> String {
    keys.iter()
        .map(|&k| {
            // splitmix64 of (host, key): the same file every run.
            let mut z = ((i as u64) << 32 | u64::from(k)).wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut noise = String::new();
            for _ in 0..2 {
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                noise.push_str(&format!("{z:016x}"));
            }
            format!(
                "[[record]]\nname = \"r{}-{k}\"\naddresses = [\"10.200.{}.{k}\"]\nlabels = {{ noise = \"{noise}\" }}\n",
                i + 1,
                i + 1
            )
        })
        .collect()
}

/// The truth: (host, name) of every record the hosts in `hosts` publish.
fn truth(hosts: &[(usize, Vec<u32>)]) -> BTreeSet<(String, String)> {
    hosts
        .iter()
        .flat_map(|(i, keys)| {
            keys.iter()
                .map(move |k| (format!("h{}", i + 1), format!("r{}-{k}", i + 1)))
        })
        .collect()
}

/// Waits until every host in `on` lists exactly `want`; returns how long
/// it took.
async fn converge(
    lab: &Lab,
    on: &[usize],
    want: &BTreeSet<(String, String)>,
    bound: Duration,
) -> Duration {
    let start = Instant::now();
    eventually(
        bound,
        "every agent to hold the expected directory",
        || async { on.iter().all(|&i| lab.listed(i) == *want).then_some(()) },
    )
    .await;
    start.elapsed()
}

#[tokio::test]
async fn a_killed_agent_leaves_every_directory_and_returns_once_with_a_new_generation() {
    let lab = Lab::new(3);
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(lab.agent(i, &records(i, &[1, 2])).await);
    }
    let everything = truth(&[(0, vec![1, 2]), (1, vec![1, 2]), (2, vec![1, 2])]);
    converge(&lab, &[0, 1, 2], &everything, Duration::from_secs(20)).await;
    let generation = |on: usize| {
        lab.members(on)
            .into_iter()
            .find(|m| m.0 == "h1")
            .map(|m| m.2)
    };
    let before = generation(1);

    agents[0].kill();
    let killed = Instant::now();
    let rest = truth(&[(1, vec![1, 2]), (2, vec![1, 2])]);
    let gone = converge(&lab, &[1, 2], &rest, Duration::from_secs(20)).await;
    assert!(lab.resolve(2, "r1-1.muster").is_empty());
    eprintln!("h1's records left h2 and h3 {gone:?} after kill -9");

    agents[0].restart().await;
    converge(&lab, &[0, 1, 2], &everything, Duration::from_secs(20)).await;
    assert_eq!(
        lab.resolve(2, "r1-1.muster"),
        ["10.200.1.1"],
        "exactly once"
    );
    assert!(generation(1) > before, "a new generation after the restart");
    eprintln!("h1 back everywhere {:?} after the kill", killed.elapsed());
}

#[tokio::test]
async fn a_partition_heals_to_the_full_directory_without_resurrecting_deletions() {
    let lab = Lab::new(6);
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(lab.agent(i, &records(i, &[1, 2])).await);
    }
    let all: Vec<(usize, Vec<u32>)> = (0..6).map(|i| (i, vec![1, 2])).collect();
    converge(
        &lab,
        &[0, 1, 2, 3, 4, 5],
        &truth(&all),
        Duration::from_secs(30),
    )
    .await;

    let (left, right) = ([0, 1, 2], [3, 4, 5]);
    lab.cut(&left, &right);
    // Each side serves its own side and calls the other dead after the
    // grace.
    let left_truth = truth(&all[..3]);
    let right_truth = truth(&all[3..]);
    let detected = converge(&lab, &left, &left_truth, Duration::from_secs(30)).await;
    converge(&lab, &right, &right_truth, Duration::from_secs(30)).await;
    for i in left {
        let dead: BTreeSet<String> = lab
            .members(i)
            .into_iter()
            .filter(|m| m.1 == "dead")
            .map(|m| m.0)
            .collect();
        assert_eq!(
            dead,
            ["h4", "h5", "h6"].map(String::from).into(),
            "as h{} sees it",
            i + 1
        );
    }
    eprintln!("partition: the far side left each directory within {detected:?}");

    // While cut off: h1 deletes a record and adds one, h4 deletes one.
    agents[0].write_records(&records(0, &[2, 3]));
    agents[0].signal(libc::SIGHUP);
    agents[3].write_records(&records(3, &[1]));
    agents[3].signal(libc::SIGHUP);
    let mut after = all.clone();
    after[0].1 = vec![2, 3];
    after[3].1 = vec![1];
    converge(&lab, &left, &truth(&after[..3]), Duration::from_secs(10)).await;

    lab.heal();
    let healed = converge(
        &lab,
        &[0, 1, 2, 3, 4, 5],
        &truth(&after),
        Duration::from_secs(30),
    )
    .await;
    eprintln!("heal: every agent held the full directory after {healed:?}");
    assert!(
        healed < Duration::from_secs(5),
        "converged in {healed:?}, over 5 s"
    );
    for i in 0..6 {
        assert!(
            lab.resolve(i, "r1-1.muster").is_empty(),
            "r1-1 came back on h{}",
            i + 1
        );
        assert!(
            lab.resolve(i, "r4-2.muster").is_empty(),
            "r4-2 came back on h{}",
            i + 1
        );
    }
}

#[tokio::test]
async fn five_percent_loss_and_jitter_declare_no_one_dead_and_changes_still_converge() {
    let (period, n) = soak();
    let lab = Lab::new(n);
    let mut agents = Vec::new();
    for i in 0..n {
        agents.push(lab.agent(i, &records(i, &[1])).await);
    }
    let hosts: Vec<usize> = (0..n).collect();
    let all: Vec<(usize, Vec<u32>)> = (0..n).map(|i| (i, vec![1])).collect();
    converge(&lab, &hosts, &truth(&all), Duration::from_secs(30)).await;

    lab.lose(0.05);
    // 50 ms ± 50 ms on every gossip datagram.
    let delayers: Vec<Delayer> = (0..n)
        .map(|i| {
            Delayer::start(
                &lab,
                i,
                Duration::from_millis(50),
                Duration::from_millis(50),
            )
        })
        .collect();
    let start = Instant::now();
    let mut changed = all.clone();
    let mut step = 0u32;
    let mut false_deaths = Vec::new();
    while start.elapsed() < period {
        false_deaths.extend(lab.dead_seen());
        // A change every two seconds on h1.
        if start.elapsed() > Duration::from_secs(2 * u64::from(step + 1)) {
            step += 1;
            changed[0].1 = vec![1, 1 + step];
            agents[0].write_records(&records(0, &changed[0].1));
            agents[0].signal(libc::SIGHUP);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        false_deaths.is_empty(),
        "false deaths under 5% loss: {false_deaths:?}"
    );
    let took = converge(&lab, &hosts, &truth(&changed), Duration::from_secs(20)).await;
    eprintln!(
        "under 5% loss and 50 ms ± 50 ms delay for {period:?} on {n} hosts: no false death, {step} changes, converged {took:?} after the last check"
    );
    let delayed: u64 = delayers.into_iter().map(Delayer::finish).sum();
    assert!(
        delayed > 100,
        "only {delayed} gossip datagrams went through the delayers"
    );
    eprintln!("{delayed} gossip datagrams delayed");
    lab.heal();
}

#[tokio::test]
async fn a_rolling_restart_never_leaves_a_live_agent_without_a_live_host() {
    let lab = Lab::new(3);
    let mut agents = Vec::new();
    for i in 0..3 {
        // A restart slower than the grace (detection plus --dead-grace)
        // drops the host by design; this test is about the handover, so
        // the grace is one no restart here comes near, even on a loaded
        // machine.
        let mut spec = lab.spec(i, &records(i, &[1]));
        spec.dead_grace = "10s".to_owned();
        agents.push(Agent::start(spec).await);
    }
    let mut now: Vec<(usize, Vec<u32>)> = (0..3).map(|i| (i, vec![1])).collect();
    converge(&lab, &[0, 1, 2], &truth(&now), Duration::from_secs(20)).await;
    let mut gaps = Vec::new();
    for k in 0..3 {
        // Records change while the roll goes on.
        let other = (k + 1) % 3;
        now[other].1.push(10 + k as u32);
        agents[other].write_records(&records(other, &now[other].1));
        agents[other].signal(libc::SIGHUP);
        agents[k].kill();
        // While k is down (shorter than the grace), every other agent
        // still answers for every host, k included.
        let down = Instant::now();
        let start_again = agents[k].restart();
        tokio::pin!(start_again);
        loop {
            tokio::select! {
                _ = &mut start_again => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    for i in (0..3).filter(|i| *i != k) {
                        let hosts: BTreeSet<String> = lab.listed(i).into_iter().map(|(h, _)| h).collect();
                        if hosts.len() != 3 {
                            gaps.push(format!("h{} lists {hosts:?} while h{} restarts", i + 1, k + 1));
                        }
                    }
                }
            }
        }
        eprintln!("h{} restarted in {:?}", k + 1, down.elapsed());
        // And while its new generation replaces the old one elsewhere.
        let back = Instant::now();
        while back.elapsed() < Duration::from_secs(1) {
            for i in (0..3).filter(|i| *i != k) {
                let hosts: BTreeSet<String> = lab.listed(i).into_iter().map(|(h, _)| h).collect();
                if hosts.len() != 3 {
                    gaps.push(format!(
                        "h{} lists {hosts:?} after h{} restarted",
                        i + 1,
                        k + 1
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        converge(&lab, &[0, 1, 2], &truth(&now), Duration::from_secs(20)).await;
    }
    assert!(gaps.is_empty(), "{gaps:?}");
}

#[tokio::test]
async fn an_agent_paused_past_the_grace_rejoins_with_nothing_lost_or_doubled() {
    let lab = Lab::new(3);
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(lab.agent(i, &records(i, &[1, 2])).await);
    }
    let all = vec![(0, vec![1, 2]), (1, vec![1, 2]), (2, vec![1, 2])];
    converge(&lab, &[0, 1, 2], &truth(&all), Duration::from_secs(20)).await;

    agents[2].signal(libc::SIGSTOP);
    converge(&lab, &[0, 1], &truth(&all[..2]), Duration::from_secs(20)).await;
    agents[2].signal(libc::SIGCONT);
    let back = converge(&lab, &[0, 1, 2], &truth(&all), Duration::from_secs(20)).await;
    eprintln!("a paused agent was whole again {back:?} after SIGCONT");
    for i in 0..3 {
        assert_eq!(
            lab.resolve(i, "r3-1.muster"),
            ["10.200.3.1"],
            "once, on h{}",
            i + 1
        );
    }
}

#[tokio::test]
async fn clock_skew_breaks_neither_liveness_nor_a_restart_with_the_clock_set_back() {
    let lab = Lab::new(3);
    let mut agents = Vec::new();
    for (i, offset) in [(0, None), (1, Some("+1h")), (2, Some("-1h"))] {
        let mut spec = lab.spec(i, &records(i, &[1]));
        spec.clock_offset = offset.map(str::to_owned);
        agents.push(Agent::start(spec).await);
    }
    let mut all = vec![(0, vec![1]), (1, vec![1]), (2, vec![1])];
    converge(&lab, &[0, 1, 2], &truth(&all), Duration::from_secs(20)).await;
    // Hours apart, nobody is called dead.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        for i in 0..3 {
            let dead: Vec<_> = lab
                .members(i)
                .into_iter()
                .filter(|m| m.1 == "dead")
                .collect();
            assert!(dead.is_empty(), "h{} sees {dead:?} dead", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // h1 restarts with its clock two hours back: its new generation is
    // smaller than the old one, and must still replace it everywhere.
    let old_generation = lab
        .members(1)
        .into_iter()
        .find(|m| m.0 == "h1")
        .map(|m| m.2);
    agents[0].kill();
    agents[0].write_records(&records(0, &[7]));
    agents[0].spec.clock_offset = Some("-2h".into());
    agents[0].restart().await;
    all[0].1 = vec![7];
    let took = converge(&lab, &[0, 1, 2], &truth(&all), Duration::from_secs(20)).await;
    let h1 = lab
        .members(1)
        .into_iter()
        .find(|m| m.0 == "h1")
        .expect("h1 known");
    assert_eq!(h1.1, "alive");
    assert!(
        Some(h1.2) < old_generation,
        "the new generation is the smaller one"
    );
    eprintln!("h1 restarted two hours back: its new records everywhere after {took:?}");
}

#[tokio::test]
async fn an_agent_that_gossip_cannot_reach_over_tcp_says_how_far_behind_it_is_and_catches_up() {
    let lab = Lab::new(2);
    let h1 = lab.agent(0, &records(0, &[1])).await;
    let h2 = lab.agent(1, &records(1, &[1])).await;
    converge(
        &lab,
        &[0, 1],
        &truth(&[(0, vec![1]), (1, vec![1])]),
        Duration::from_secs(20),
    )
    .await;
    const BEHIND: &str = "muster_gossip_behind_members";
    assert_eq!(lab.metric(1, BEHIND), Some(0.0));

    // A firewall that passes gossip's UDP but not its TCP: h2 still hears
    // h1's digests, which announce h1's new versions, but the 100 records
    // themselves (one message far past 1,400 bytes) cannot reach it.
    lab.refuse_gossip_tcp(1);
    let many: Vec<u32> = (1..=100).collect();
    h1.write_records(&incompressible_records(0, &many));
    h1.signal(libc::SIGHUP);
    let versions = eventually(
        Duration::from_secs(20),
        "h2 to say it lacks h1's changes",
        || async {
            let m = lab.member(1, "h1")?;
            let versions = m["behind_versions"].as_u64()?;
            (versions >= 99 && m["behind_since_ms"].as_i64()? > 0).then_some(versions)
        },
    )
    .await;
    assert!(lab.metric(1, BEHIND).unwrap() >= 1.0);
    assert_eq!(
        lab.listed(1)
            .iter()
            .filter(|(host, _)| host == "h1")
            .count(),
        1,
        "h2 still holds h1's old records"
    );
    assert_eq!(
        lab.member(1, "h1").unwrap()["state"],
        "alive",
        "and h1 is alive"
    );
    let addr = format!("{}:{GRPC_PORT}", lab.ip(1));
    let wide = lab.exec(1, muster_bin(), &["members", "-o", "wide", "--addr", &addr]);
    let wide = String::from_utf8_lossy(&wide.stdout).into_owned();
    assert!(wide.lines().next().unwrap().contains("BEHIND"), "{wide}");
    let row = wide
        .lines()
        .find(|l| l.starts_with("h1 "))
        .expect("a row for h1");
    assert!(row.contains(&format!("({versions} versions)")), "{wide}");
    assert!(
        lab.http(1, "/").contains(&format!("{versions} versions")),
        "the status page shows it too"
    );
    // The lag lasts: h2 says so in its log, naming what to check.
    eventually(Duration::from_secs(30), "h2 to warn of the lag", || async {
        (lab.metric(1, "muster_gossip_behind_seconds")? >= 10.0
            && h2.log().contains("is the gossip port open to TCP"))
        .then_some(())
    })
    .await;

    lab.heal();
    let everything = truth(&[(0, many), (1, vec![1])]);
    converge(&lab, &[0, 1], &everything, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(10), "h2 caught up", || async {
        let m = lab.member(1, "h1")?;
        (lab.metric(1, BEHIND)? == 0.0
            && m["behind_since_ms"].is_null()
            && m["behind_versions"] == 0)
            .then_some(())
    })
    .await;
}
