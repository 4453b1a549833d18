//! Fleet bench: many real agents (release build, one process each) on one
//! loopback block, as many as the machine holds: what gossip costs each
//! agent as the fleet grows.
//!
//! For each fleet size it prints one row: the time for every agent to hold
//! every record; at rest, gossip bytes sent per agent per second (datagrams
//! and TCP, from each agent's `/metrics`: mean and the largest agent), the
//! largest datagram any agent sent, agent CPU (from `/proc`, mean) and
//! resident memory (mean); then, for `--changes` edits (one record of one
//! agent's static file, SIGHUP), the time until every agent answers the
//! new address over DNS (p50, p99); and members any agent saw dead while
//! none was stopped.
//!
//! Then a new agent joins each fleet: the time until it holds every
//! record. With `--bulk N`, one more measurement: an agent joining one that
//! publishes N records.
//!
//! Run: `cargo bench -p muster --bench fleet -- --agents 30,60,120
//! --interval 1s --records 50 --rest 20 --changes 20 --bulk 50000`

#[allow(dead_code)]
#[path = "../../../tests/cluster/harness.rs"]
mod harness;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use harness::{Agent, AgentSpec, DNS_PORT, cpu_time, eventually, loopback_block, metric, rss_kib};

struct Args {
    agents: Vec<usize>,
    interval: String,
    records: usize,
    rest: Duration,
    changes: usize,
    /// Records of the bulk-join measurement; 0 skips it.
    bulk: usize,
}

fn args() -> Args {
    let mut args = Args {
        agents: vec![30, 60],
        interval: "1s".to_owned(),
        records: 50,
        rest: Duration::from_secs(20),
        changes: 20,
        bulk: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--agents" => {
                args.agents = value()
                    .split(',')
                    .map(|n| n.parse().expect("--agents N,M,..."))
                    .collect()
            }
            "--interval" => args.interval = value(),
            "--records" => args.records = value().parse().expect("--records N"),
            "--rest" => args.rest = Duration::from_secs(value().parse().expect("--rest SECONDS")),
            "--changes" => args.changes = value().parse().expect("--changes N"),
            "--bulk" => args.bulk = value().parse().expect("--bulk RECORDS"),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        args.agents.iter().all(|&n| (3..=249).contains(&n)),
        "3 to 249 agents (and a newcomer): one loopback /24"
    );
    args
}

/// Agent `host`'s static file: `records` records, the first at `first_ip`.
fn records(host: usize, records: usize, first_ip: &str) -> String {
    let mut text = String::new();
    for i in 0..records {
        let ip = if i == 0 {
            first_ip.to_owned()
        } else {
            format!("10.{}.{}.{}", host / 250, host % 250, 1 + i % 250)
        };
        text.push_str(&format!(
            "[[record]]\nname = \"s{host}-{i}\"\naddresses = [\"{ip}\"]\nlabels = {{ app = \"s{host}\", tier = \"t{}\" }}\n",
            i % 3
        ));
    }
    text
}

/// Gossip bytes the agent has sent: datagrams and TCP.
async fn sent_bytes(agent: &Agent) -> f64 {
    let udp = metric(agent, "muster_gossip_bytes_total{direction=\"out\"}")
        .await
        .unwrap_or(0.0);
    let tcp = metric(agent, "muster_gossip_tcp_bytes_total{direction=\"out\"}")
        .await
        .unwrap_or(0.0);
    udp + tcp
}

/// Records the agent's directory holds: the sum of its `muster_records`
/// series (one per host, state and source).
async fn records_held(agent: &Agent) -> f64 {
    let addr = format!("{}:{}", agent.spec.ip, harness::HTTP_PORT);
    let Some(reply) = harness::http_get(&addr, "/metrics").await else {
        return -1.0;
    };
    reply
        .body
        .lines()
        .filter(|l| l.starts_with("muster_records{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn fleet(n: usize, args: &Args) {
    let block = loopback_block();
    let started = Instant::now();
    let mut agents: Vec<Agent> = Vec::with_capacity(n);
    for i in 0..n {
        let mut spec = AgentSpec::new(&block, (i + 1) as u8, &format!("h{i}"))
            .with_records(&records(i, args.records, &format!("10.250.{}.1", i % 250)));
        spec.gossip_interval = args.interval.clone();
        // Three seeds, as an operator would give.
        for seed in agents.iter().take(3) {
            spec = spec.joining(&seed.spec);
        }
        agents.push(Agent::start(spec).await);
    }
    let total = (n * args.records) as f64;
    for agent in &agents {
        eventually(
            Duration::from_secs(600),
            "every record on every agent",
            || async { (records_held(agent).await == total).then_some(()) },
        )
        .await;
    }
    let formed = started.elapsed();

    // At rest.
    let pids: Vec<i32> = agents.iter().map(Agent::pid).collect();
    let mut bytes_before = Vec::with_capacity(n);
    for agent in &agents {
        bytes_before.push(sent_bytes(agent).await);
    }
    let cpu_before: Vec<Duration> = pids.iter().map(|&p| cpu_time(p)).collect();
    let rest_start = Instant::now();
    tokio::time::sleep(args.rest).await;
    let secs = rest_start.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(&p, before)| (cpu_time(p) - *before).as_secs_f64() * 1000.0 / secs)
        .collect();
    let mut rates = Vec::with_capacity(n);
    for (agent, before) in agents.iter().zip(&bytes_before) {
        rates.push((sent_bytes(agent).await - before) / secs / 1000.0);
    }
    let mut largest: f64 = 0.0;
    let mut dead_seen = 0usize;
    for agent in &agents {
        largest = largest.max(
            metric(agent, "muster_gossip_largest_datagram_bytes")
                .await
                .unwrap_or(0.0),
        );
        dead_seen += agent
            .members()
            .await
            .iter()
            .filter(|m| m.liveness != muster_proto::v1::Liveness::Alive as i32)
            .count();
    }
    let rss_mib = pids.iter().map(|&p| rss_kib(p)).sum::<u64>() as f64 / n as f64 / 1024.0;

    // Changes: one record of one agent moves; time until every agent
    // answers the new address over DNS.
    let socket = UdpSocket::bind(format!("{block}.251:0")).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut took = Vec::with_capacity(args.changes);
    for c in 1..=args.changes {
        let host = (c * 7919) % n;
        let ip = format!("10.251.{}.{}", c / 250, 1 + c % 250);
        agents[host].write_records(&records(host, args.records, &ip));
        let name = format!("s{host}-0.muster.");
        let t0 = Instant::now();
        agents[host].signal(libc::SIGHUP);
        let mut pending: Vec<String> = agents
            .iter()
            .map(|a| format!("{}:{DNS_PORT}", a.spec.ip))
            .collect();
        while !pending.is_empty() {
            pending.retain(|server| {
                harness::resolve_a(&socket, server, &name).as_deref() != Some(ip.as_str())
            });
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "change {c} never reached every agent"
            );
        }
        took.push(t0.elapsed());
        // Off the round's phase.
        tokio::time::sleep(Duration::from_millis(100 + (c as u64 * 7919) % 900)).await;
    }
    took.sort();

    // A new agent joins: time until it holds every record.
    let joined = {
        let mut spec = AgentSpec::new(&block, (n + 1) as u8, &format!("h{n}"))
            .with_records(&records(n, args.records, "10.250.250.1"));
        spec.gossip_interval = args.interval.clone();
        for seed in agents.iter().take(3) {
            spec = spec.joining(&seed.spec);
        }
        let t0 = Instant::now();
        let newcomer = Agent::start(spec).await;
        let all = ((n + 1) * args.records) as f64;
        eventually(
            Duration::from_secs(300),
            "the newcomer holds everything",
            || async { (records_held(&newcomer).await == all).then_some(()) },
        )
        .await;
        t0.elapsed()
    };
    let mean = rates.iter().sum::<f64>() / n as f64;
    let max = rates.iter().cloned().fold(0.0, f64::max);
    println!(
        "| {n} | {:.1} s | {mean:.1} KB/s | {max:.1} KB/s | {largest} B | {:.1} mc | {rss_mib:.1} MiB | {:.2} s | {:.2} s | {:.1} s | {dead_seen} |",
        formed.as_secs_f64(),
        cpu.iter().sum::<f64>() / n as f64,
        percentile(&took, 0.5).as_secs_f64(),
        percentile(&took, 0.99).as_secs_f64(),
        joined.as_secs_f64(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    println!(
        "## Fleet: real agents on loopback, {} records each, gossip every {}, at rest for {} s, {} changes\n",
        args.records,
        args.interval,
        args.rest.as_secs(),
        args.changes
    );
    println!(
        "| agents | all hold everything after | gossip sent per agent at rest, mean | largest agent | largest datagram | CPU per agent at rest | RSS per agent | change on every agent p50 | p99 | a new agent holds everything | members seen not alive at rest |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &args.agents {
        fleet(n, &args).await;
    }
    if args.bulk > 0 {
        // Side by side: the default MTU (bulk over TCP) against the largest
        // (bulk in datagrams of up to 64 KiB, as before TCP carried it).
        for round in 1..=2 {
            for mtu in [1_400, 65_507] {
                bulk_join(args.bulk, &args.interval, mtu, round).await;
            }
        }
    }
}

/// One agent publishes `n` records from its static file; a second joins
/// it: the time until the second holds them all (a bulk transfer, over
/// TCP past the MTU), from its start.
async fn bulk_join(n: usize, interval: &str, mtu: usize, round: usize) {
    let mtu_arg = mtu.to_string();
    let mtu_args = ["--gossip-mtu", mtu_arg.as_str()];
    let block = loopback_block();
    let mut text = String::with_capacity(n * 120);
    for i in 0..n {
        text.push_str(&format!(
            "[[record]]\nname = \"bulk-{i}\"\naddresses = [\"10.{}.{}.{}\"]\nlabels = {{ app = \"a{}\", team = \"t{}\", tier = \"x{}\" }}\n",
            i / 62_500,
            (i / 250) % 250,
            1 + i % 250,
            i % 50,
            i % 7,
            i % 3
        ));
    }
    let mut a_spec = AgentSpec::new(&block, 1, "a")
        .with_records(&text)
        .with_args(&mtu_args);
    a_spec.gossip_interval = interval.to_owned();
    let a = Agent::start(a_spec.clone()).await;
    eventually(Duration::from_secs(120), "a holds its records", || async {
        (records_held(&a).await == n as f64).then_some(())
    })
    .await;
    let mut b_spec = AgentSpec::new(&block, 2, "b")
        .joining(&a_spec)
        .with_args(&mtu_args);
    b_spec.gossip_interval = interval.to_owned();
    let t0 = Instant::now();
    let b = Agent::start(b_spec).await;
    let started = t0.elapsed();
    eventually(Duration::from_secs(300), "b holds a's records", || async {
        (records_held(&b).await == n as f64).then_some(())
    })
    .await;
    let tcp = metric(&a, "muster_gossip_tcp_bytes_total{direction=\"out\"}")
        .await
        .unwrap_or(0.0);
    let largest = metric(&a, "muster_gossip_largest_datagram_bytes")
        .await
        .unwrap_or(0.0);
    println!(
        "\nRound {round}, --gossip-mtu {mtu}: a new agent joining one that publishes {n} records holds them all {:.2} s after it was started ({:.2} s of which to start serving gRPC); {:.1} MB went over TCP, the largest datagram was {largest} B.",
        t0.elapsed().as_secs_f64(),
        started.as_secs_f64(),
        tcp / 1e6
    );
}
