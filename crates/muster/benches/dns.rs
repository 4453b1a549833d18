//! DNS speed against NSD, side by side on the same machine.
//!
//! Loads 50,000 names into one muster agent (a static file) and into NSD (a
//! zone file), pins each server in turn to CPU 0 and runs dnsperf on CPU 1,
//! in interleaved rounds. Prints queries per second, server CPU time per
//! answer, and, at half of NSD's rate, latency percentiles (from dnsperf's
//! per-query `-v` output), each as a ratio to NSD.
//!
//! Needs Debian's `nsd` and `dnsperf` (`apt-get install nsd dnsperf`).
//! Run: `cargo bench -p muster --bench dns`

#[allow(dead_code)]
#[path = "../../../tests/cluster/harness.rs"]
mod harness;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::{DNS_PORT, dig, loopback_block, muster_bin};

const NAMES: usize = 50_000;
const ROUNDS: usize = 3;
const SECONDS: &str = "10";
const NSD_PORT: u16 = 5353;

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is missing: apt-get install nsd dnsperf");
}

fn ip_of(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
}

fn write_inputs(dir: &Path) {
    let mut records = String::with_capacity(NAMES * 60);
    let mut zone = String::from(
        "$ORIGIN muster.\n$TTL 5\n@ IN SOA ns.muster. hostmaster.muster. 1 3600 600 86400 5\n@ IN NS ns.muster.\nns IN A 127.0.0.1\n",
    );
    for i in 0..NAMES {
        records.push_str(&format!(
            "[[record]]\nname = \"svc-{i}\"\naddresses = [\"{}\"]\n",
            ip_of(i)
        ));
        zone.push_str(&format!("svc-{i} IN A {}\n", ip_of(i)));
    }
    std::fs::write(dir.join("records.toml"), records).expect("records");
    std::fs::write(dir.join("muster.zone"), zone).expect("zone");
    // Names in a scattered order, every one present.
    let mut queries = String::with_capacity(NAMES * 20);
    for k in 0..NAMES {
        queries.push_str(&format!("svc-{}.muster A\n", (k * 7919) % NAMES));
    }
    std::fs::write(dir.join("queries.txt"), queries).expect("queries");
}

fn start_muster(dir: &Path, ip: &str) -> Child {
    let child = Command::new("taskset")
        .args([
            "-c",
            "0",
            muster_bin(),
            "agent",
            "--node-name",
            "bench",
            "--no-docker",
        ])
        .args(["--gossip-addr", &format!("{ip}:7946"), "--insecure-gossip"])
        .args(["--dns-addr", &format!("{ip}:{DNS_PORT}")])
        .args([
            "--grpc-addr",
            &format!("{ip}:8700"),
            "--http-addr",
            &format!("{ip}:8800"),
        ])
        .arg("--static-file")
        .arg(dir.join("records.toml"))
        .env("MUSTER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("muster");
    wait_answers(ip, DNS_PORT, &format!("svc-{}.muster", NAMES - 1));
    child
}

fn start_nsd(dir: &Path, ip: &str) -> Child {
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: {ip}@{NSD_PORT}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: muster\n  zonefile: \"{d}/muster.zone\"\n"
    );
    std::fs::write(dir.join("nsd.conf"), conf).expect("nsd.conf");
    let child = Command::new("taskset")
        .args(["-c", "0", "nsd", "-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nsd");
    wait_answers(ip, NSD_PORT, &format!("svc-{}.muster", NAMES - 1));
    child
}

fn wait_answers(ip: &str, port: u16, name: &str) {
    for _ in 0..600 {
        if !dig(ip, port, &["+short", name]).trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} never answered on {ip}:{port}");
}

/// Server CPU time so far (user + system), in seconds. NSD forks its
/// serving process, so the children are counted through their own stat.
fn cpu_seconds(pid: u32) -> f64 {
    let mut total = 0.0;
    let mut pids = vec![pid];
    while let Some(p) = pids.pop() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let ticks: f64 =
                fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
            total += ticks / 100.0;
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

/// A server process, killed when dropped (also when the bench panics).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    qps: f64,
    completed: f64,
    cpu_per_answer_us: f64,
}

fn dnsperf(dir: &Path, ip: &str, port: u16, pid: u32, extra: &[&str]) -> (Run, String) {
    let before = cpu_seconds(pid);
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "dnsperf",
            "-s",
            ip,
            "-p",
            &port.to_string(),
            "-l",
            SECONDS,
        ])
        .arg("-d")
        .arg(dir.join("queries.txt"))
        .args(extra)
        .output()
        .expect("dnsperf");
    let after = cpu_seconds(pid);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let number = |label: &str| -> f64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let completed = number("Queries completed");
    (
        Run {
            qps: number("Queries per second"),
            completed,
            cpu_per_answer_us: (after - before) / completed.max(1.0) * 1e6,
        },
        text,
    )
}

/// Latency percentiles (ms) from dnsperf -v lines ending in the latency.
fn percentiles(verbose: &str) -> (f64, f64, f64) {
    let mut l: Vec<f64> = verbose
        .lines()
        .filter(|line| line.starts_with('>'))
        .filter_map(|line| line.split_whitespace().last()?.parse().ok())
        .collect();
    l.sort_by(f64::total_cmp);
    if l.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let p = |q: f64| l[((l.len() - 1) as f64 * q) as usize] * 1e3;
    (p(0.5), p(0.99), p(0.999))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    require("nsd");
    require("dnsperf");
    require("taskset");
    let dir = tempfile::tempdir().expect("tempdir");
    write_inputs(dir.path());
    let block = loopback_block();
    let muster_ip = format!("{block}.1");
    let nsd_ip = format!("{block}.2");
    let muster = Server(start_muster(dir.path(), &muster_ip));
    let nsd = Server(start_nsd(dir.path(), &nsd_ip));
    let load = ["-c", "4", "-q", "200"];

    let (mut m_qps, mut n_qps, mut m_cpu, mut n_cpu) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (m, m_text) = dnsperf(dir.path(), &muster_ip, DNS_PORT, muster.0.id(), &load);
        assert!(m.completed > 0.0, "no answer from muster:\n{m_text}");
        let (n, n_text) = dnsperf(dir.path(), &nsd_ip, NSD_PORT, nsd.0.id(), &load);
        assert!(n.completed > 0.0, "no answer from NSD:\n{n_text}");
        m_qps.push(m.qps);
        n_qps.push(n.qps);
        m_cpu.push(m.cpu_per_answer_us);
        n_cpu.push(n.cpu_per_answer_us);
    }
    let (mq, nq, mc, nc) = (
        median(&mut m_qps),
        median(&mut n_qps),
        median(&mut m_cpu),
        median(&mut n_cpu),
    );
    println!(
        "## {NAMES} names, A queries, server on CPU 0, dnsperf -c 4 -q 200 on CPU 1, median of {ROUNDS} interleaved {SECONDS}s rounds\n"
    );
    println!("| server | queries/s | vs NSD | CPU per answer | vs NSD |");
    println!("|---|---|---|---|---|");
    println!("| NSD | {nq:.0} | 1.00 | {nc:.1} µs | 1.00 |");
    println!(
        "| muster | {mq:.0} | {:.2} | {mc:.1} µs | {:.2} |",
        mq / nq,
        mc / nc
    );

    let half = format!("{:.0}", nq / 2.0);
    let paced = ["-c", "1", "-q", "20", "-Q", half.as_str(), "-v"];
    let (_, m_text) = dnsperf(dir.path(), &muster_ip, DNS_PORT, muster.0.id(), &paced);
    let (_, n_text) = dnsperf(dir.path(), &nsd_ip, NSD_PORT, nsd.0.id(), &paced);
    let (m50, m99, m999) = percentiles(&m_text);
    let (n50, n99, n999) = percentiles(&n_text);
    println!("\n## Latency at {half} queries/s (half of NSD's rate), dnsperf -c 1 -q 20\n");
    println!("| server | p50 | p99 | p99.9 |");
    println!("|---|---|---|---|");
    println!("| NSD | {n50:.3} ms | {n99:.3} ms | {n999:.3} ms |");
    println!("| muster | {m50:.3} ms | {m99:.3} ms | {m999:.3} ms |");
}
