//! Cluster bench: real agents (release build) on loopback.
//!
//! Measures, and prints as a table:
//! - the time from SIGHUP on agent A (after its static file changed) to
//!   agent C answering the new address over DNS, median over 20 changes,
//!   at two gossip intervals, as a ratio of the gossip interval;
//! - the resident memory of the publishing agent and of a receiving agent
//!   with 5,000 static records, against the same agents holding none;
//! - gossip in the clear against sealed (`--gossip-key-file`), side by
//!   side: the SIGHUP-to-DNS time above, and the CPU each agent uses at
//!   rest, with 50 and with 500 records per agent.
//!
//! Run: `cargo bench -p muster --bench cluster`

#[allow(dead_code)]
#[path = "../../../tests/cluster/harness.rs"]
mod harness;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use harness::{Agent, AgentSpec, DNS_PORT, cpu_time, eventually, loopback_block, rss_kib};

const CHANGES: usize = 20;
const RECORDS_FOR_MEMORY: usize = 5_000;

fn web_records(ip: &str) -> String {
    format!("[[record]]\nname = \"web-1\"\naddresses = [\"{ip}\"]\nlabels = {{ app = \"web\" }}\n")
}

/// A key file for sealed runs, written once.
fn key_file() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let out = std::process::Command::new(harness::muster_bin())
            .arg("keygen")
            .output()
            .expect("muster keygen");
        let path = std::env::temp_dir().join(format!("muster-bench-{}.key", std::process::id()));
        std::fs::write(&path, &out.stdout).expect("write key file");
        path.to_string_lossy().into_owned()
    })
}

async fn three(block: &str, interval: &str, records: &str) -> (Agent, Agent, Agent) {
    three_with(block, interval, records, "", false).await
}

/// A with `records`, B and C with `others` each, sealed or not.
async fn three_with(
    block: &str,
    interval: &str,
    records: &str,
    others: &str,
    sealed: bool,
) -> (Agent, Agent, Agent) {
    let key: &[&str] = if sealed {
        &["--gossip-key-file", key_file()]
    } else {
        &[]
    };
    let mut a_spec = AgentSpec::new(block, 1, "a")
        .with_records(records)
        .with_args(key);
    a_spec.gossip_interval = interval.to_owned();
    let a = Agent::start(a_spec.clone()).await;
    let mut b_spec = AgentSpec::new(block, 2, "b")
        .joining(&a_spec)
        .with_records(others)
        .with_args(key);
    b_spec.gossip_interval = interval.to_owned();
    let mut c_spec = AgentSpec::new(block, 3, "c")
        .joining(&a_spec)
        .with_records(others)
        .with_args(key);
    c_spec.gossip_interval = interval.to_owned();
    let b = Agent::start(b_spec).await;
    let c = Agent::start(c_spec).await;
    eventually(Duration::from_secs(30), "three members on c", || async {
        (c.members().await.len() == 3).then_some(())
    })
    .await;
    (a, b, c)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn reload_latency(interval: &str, interval_ms: u64, sealed: bool) -> Vec<Duration> {
    let block = loopback_block();
    let (a, _b, c) = three_with(&block, interval, &web_records("10.1.0.0"), "", sealed).await;
    let socket = UdpSocket::bind(format!("{block}.200:0")).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let server = format!("{}:{DNS_PORT}", c.spec.ip);
    eventually(Duration::from_secs(30), "web-1 on c", || async {
        (harness::resolve_a(&socket, &server, "web-1.muster.").as_deref() == Some("10.1.0.0"))
            .then_some(())
    })
    .await;
    let mut latencies = Vec::with_capacity(CHANGES);
    for i in 1..=CHANGES {
        let ip = format!("10.1.0.{i}");
        a.write_records(&web_records(&ip));
        let start = Instant::now();
        a.signal(libc::SIGHUP);
        loop {
            if harness::resolve_a(&socket, &server, "web-1.muster.").as_deref() == Some(ip.as_str())
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "change {i} never arrived"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(start.elapsed());
        // Spread the next change over the gossip round (a fixed pause would
        // lock every change to the same phase of the round).
        tokio::time::sleep(Duration::from_millis(50 + (i as u64 * 7919) % interval_ms)).await;
    }
    latencies.sort();
    latencies
}

/// Millicores each of three agents uses at rest over 20 s, with `records`
/// records each, gossip every 200 ms.
async fn rest_cpu(records: usize, sealed: bool) -> f64 {
    let block = loopback_block();
    let set = many_records(records);
    let (a, b, c) = three_with(&block, "200ms", &set, &set, sealed).await;
    eventually(Duration::from_secs(60), "every record on c", || async {
        (c.list("").await.len() == 3 * records).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = [a.pid(), b.pid(), c.pid()];
    let before: Vec<Duration> = pids.iter().map(|&p| cpu_time(p)).collect();
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let used: Duration = pids
        .iter()
        .zip(&before)
        .map(|(&p, &b)| cpu_time(p) - b)
        .sum();
    used.as_secs_f64() * 1000.0 / window.as_secs_f64() / 3.0
}

fn many_records(n: usize) -> String {
    let mut s = String::with_capacity(n * 160);
    for i in 0..n {
        s.push_str(&format!(
            "[[record]]\nname = \"svc-{i}\"\naddresses = [\"10.{}.{}.{}\"]\nlabels = {{ app = \"app-{}\", env = \"prod\", team = \"team-{}\" }}\nports = [\"8080/tcp\"]\n\n",
            i / 65536,
            (i / 256) % 256,
            i % 256,
            i % 50,
            i % 7
        ));
    }
    s
}

async fn memory(records: usize) -> (u64, u64) {
    let block = loopback_block();
    let (a, _b, c) = three(&block, "200ms", &many_records(records)).await;
    eventually(Duration::from_secs(120), "every record on c", || async {
        let n = c.list("").await.len();
        (n == records).then_some(())
    })
    .await;
    // Let allocations settle after the burst.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (rss_kib(a.pid()), rss_kib(c.pid()))
}

#[tokio::main]
async fn main() {
    println!("## SIGHUP on A to the new answer over DNS on C ({CHANGES} changes, 3 agents)\n");
    println!("| gossip interval | median | p90 | max | median / interval |");
    println!("|---|---|---|---|---|");
    for (interval, ms) in [("200ms", 200), ("1s", 1000)] {
        let l = reload_latency(interval, ms, false).await;
        let median = percentile(&l, 0.5);
        println!(
            "| {interval} | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} |",
            median.as_secs_f64() * 1e3,
            percentile(&l, 0.9).as_secs_f64() * 1e3,
            l[l.len() - 1].as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3 / ms as f64,
        );
    }

    println!("\n## Gossip in the clear and sealed, side by side (gossip every 200 ms)\n");
    println!("| measure | clear | sealed | sealed / clear |");
    println!("|---|---|---|---|");
    for round in 0..2 {
        let clear = reload_latency("200ms", 200, false).await;
        let sealed = reload_latency("200ms", 200, true).await;
        let (c, s) = (percentile(&clear, 0.5), percentile(&sealed, 0.5));
        println!(
            "| SIGHUP on A to DNS on C, median of {CHANGES} (round {}) | {:.0} ms | {:.0} ms | {:.2} |",
            round + 1,
            c.as_secs_f64() * 1e3,
            s.as_secs_f64() * 1e3,
            s.as_secs_f64() / c.as_secs_f64()
        );
    }
    for records in [50, 500] {
        let clear = rest_cpu(records, false).await;
        let sealed = rest_cpu(records, true).await;
        println!(
            "| CPU per agent at rest, 3 agents x {records} records, 20 s | {clear:.1} millicores | {sealed:.1} millicores | {:.2} |",
            sealed / clear
        );
    }

    println!("\n## Resident memory (VmRSS), {RECORDS_FOR_MEMORY} static records on A\n");
    let (a0, c0) = memory(0).await;
    let (a1, c1) = memory(RECORDS_FOR_MEMORY).await;
    println!("| agent | 0 records | {RECORDS_FOR_MEMORY} records | ratio | per record |");
    println!("|---|---|---|---|---|");
    for (who, base, with) in [("A (publishes)", a0, a1), ("C (receives)", c0, c1)] {
        println!(
            "| {who} | {:.1} MiB | {:.1} MiB | {:.2} | {:.0} B |",
            base as f64 / 1024.0,
            with as f64 / 1024.0,
            with as f64 / base as f64,
            (with.saturating_sub(base) * 1024) as f64 / RECORDS_FOR_MEMORY as f64,
        );
    }
}
