//! The scale simulator: N members running muster's real gossip (chitchat
//! through muster's transport), sync and index code in one process, over
//! loopback UDP, each with its own socket, publisher and directory.
//!
//! For each size it prints: gossip bytes and datagrams sent per member per
//! second at rest, bytes under churn (`--churn` record changes per second
//! across the cluster, 10 by default), the largest datagram, the time for a change on one
//! member to be visible on every member (p50, p99 of `--changes`), the time
//! for a new member to hold the whole directory, the time from a member's
//! stop to its records leaving every directory (detector plus the grace),
//! polls that saw a live member dead, and CPU and memory per member.
//!
//! Run: `cargo bench -p muster-gossip --bench scale -- --hosts 50,100,200
//! --records 10 --interval 200ms --loss 0 --churn 10 --detector probes`
//! (defaults shown); `--start-rate 20` starts 20 members a second while
//! the cluster forms (all at once by default); `--loss 0.05` drops 5% of
//! the gossip messages each member receives; `--detector phi` runs chitchat's classic protocol
//! (phi detector, whole digests), the baseline of issue 17; `--log
//! muster_gossip::probe=debug` prints the members' logs (here every claim
//! written and every verdict) stamped with simulated seconds. Every member holds
//! the whole directory, so memory grows with hosts × hosts × records: the
//! machine's memory bounds the sizes (see the README's Measured section).
//!
//! `--clock real` (the default) runs the members on two worker threads
//! against the wall clock, so the machine's two cores are shared by all of
//! them: past about 200 members at 1 s the process saturates them and the
//! figures say more about this machine than about the protocol.
//! `--clock virtual` runs them on one thread with tokio's clock paused:
//! whenever every member waits, the clock jumps to the next timer, so
//! computing costs no simulated time (a discrete-event simulation of the
//! real code, which reads time only through tokio). Messages still travel
//! over loopback UDP and TCP; one sent is handled at the next timer of any
//! member (well under a millisecond apart at hundreds of members). Every
//! time printed is simulated time; CPU per member is the process's CPU
//! time over the simulated time, i.e. what each member would spend on a
//! host of its own. What it cannot show is an overloaded member: the real
//! clock and the real-agent bench (`cargo bench -p muster --bench fleet`)
//! do.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use muster_core::{Address, Liveness, Record, Source};
use muster_gossip::{Gossip, GossipConfig, GossipMetrics, Sent};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Args {
    hosts: Vec<usize>,
    records: usize,
    interval: Duration,
    changes: usize,
    rest: Duration,
    /// The fraction of gossip messages each member drops on receipt.
    loss: f64,
    /// Record changes per second across the cluster in the churn phase.
    churn: f64,
    detector: muster_gossip::FailureDetection,
    /// Members started per second while the cluster forms (0: all at
    /// once).
    start_rate: f64,
    /// Virtual time: one thread, tokio's clock paused and moved to the
    /// next timer whenever every member waits (see the module doc).
    virtual_clock: bool,
    /// A tracing filter (`--log muster_gossip::probe=debug`): the members'
    /// logs on stderr, stamped with the seconds since the simulator's
    /// start on its clock (simulated time with `--clock virtual`).
    log: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        hosts: vec![50, 100, 200],
        records: 10,
        interval: Duration::from_millis(200),
        changes: 20,
        rest: Duration::from_secs(10),
        loss: 0.0,
        churn: 10.0,
        detector: muster_gossip::FailureDetection::Probes,
        start_rate: 0.0,
        virtual_clock: false,
        log: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        argv.iter()
            .position(|x| x == flag)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    if let Some(v) = value("--hosts") {
        a.hosts = v
            .split(',')
            .map(|n| n.parse().expect("--hosts N,N"))
            .collect();
    }
    if let Some(v) = value("--records") {
        a.records = v.parse().expect("--records N");
    }
    if let Some(v) = value("--interval") {
        a.interval = Duration::from_millis(
            v.trim_end_matches("ms")
                .parse()
                .expect("--interval in ms, e.g. 200ms"),
        );
    }
    if let Some(v) = value("--changes") {
        a.changes = v.parse().expect("--changes N");
    }
    if let Some(v) = value("--churn") {
        a.churn = v.parse().expect("--churn CHANGES_PER_SECOND");
    }
    if let Some(v) = value("--loss") {
        a.loss = v.parse().expect("--loss FRACTION, e.g. 0.05");
    }
    if let Some(v) = value("--detector") {
        a.detector = match v.as_str() {
            "probes" => muster_gossip::FailureDetection::Probes,
            "phi" => muster_gossip::FailureDetection::Phi,
            _ => panic!("--detector probes|phi"),
        };
    }
    if let Some(v) = value("--start-rate") {
        a.start_rate = v.parse().expect("--start-rate MEMBERS_PER_SECOND");
    }
    if let Some(v) = value("--clock") {
        a.virtual_clock = match v.as_str() {
            "real" => false,
            "virtual" => true,
            _ => panic!("--clock real|virtual"),
        };
    }
    a.log = value("--log");
    if let Some(v) = value("--rest") {
        a.rest = Duration::from_secs(v.trim_end_matches('s').parse().expect("--rest in s"));
    }
    a
}

/// A port free for both UDP and TCP: gossip binds both.
fn free_addr() -> SocketAddr {
    muster_gossip::free_gossip_addr([127, 0, 0, 1].into()).unwrap()
}

fn record(host: usize, i: usize, generation: usize) -> Record {
    let id = format!("svc-{host}-{i}");
    let mut r = Record::new(&id, &id, Source::Static);
    r.addresses.push(Address {
        network: "static".into(),
        ip: format!(
            "10.{}.{}.{}",
            host / 256,
            host % 256,
            (i + generation) % 250
        )
        .parse()
        .unwrap(),
        local: false,
    });
    r.labels.insert("app".into(), format!("app-{}", i % 10));
    r
}

struct Member {
    gossip: Gossip,
    metrics: GossipMetrics,
    stop: CancellationToken,
}

async fn start(index: usize, addr: SocketAddr, seeds: &[SocketAddr], args: &Args) -> Member {
    let metrics = GossipMetrics::default();
    let stop = CancellationToken::new();
    let gossip = Gossip::start(
        GossipConfig {
            node_name: format!("h{index}"),
            generation: 1,
            cluster_id: "scale".into(),
            listen_addr: addr,
            advertise_addr: addr,
            seeds: seeds.iter().map(ToString::to_string).collect(),
            gossip_interval: args.interval,
            failure_detection: args.detector,
            phi_threshold: 8.0,
            dead_grace: Duration::from_secs(2),
            forget_after: Duration::from_secs(600),
            meta: Default::default(),
            sources: BTreeSet::from([Source::Static]),
            metrics: metrics.clone(),
            keys: None,
            mtu: muster_gossip::DEFAULT_MTU,
            receive_loss: args.loss,
        },
        &stop,
    )
    .await
    .expect("gossip starts");
    let records = (0..args.records).map(|i| record(index, i, 0)).collect();
    gossip.publisher().replace(Source::Static, records).await;
    Member {
        gossip,
        metrics,
        stop,
    }
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Waits until `check` holds on every member, polling every 10 ms; the
/// time it took, or `None` past `limit`.
async fn everywhere(
    members: &[Member],
    limit: Duration,
    check: impl Fn(&muster_core::Snapshot) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if members.iter().all(|m| check(&m.gossip.directory().load())) {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lifts the open-file limit as far as allowed: every member holds a UDP
/// socket, a TCP listener and TCP connections to the peers it sent large
/// messages to lately, all in this one process.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(limit.rlim_max);
        // Raising the hard limit needs privilege; the soft one does not.
        let raised = libc::rlimit {
            rlim_cur: ceiling,
            rlim_max: ceiling,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

async fn simulate(n: usize, args: &Args) {
    // Each port is picked just before its member binds it: a port picked
    // and let go may be handed out again by the next pick.
    let mut seeds: Vec<SocketAddr> = Vec::with_capacity(3);
    let started = Instant::now();
    let wall = std::time::Instant::now();
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let addr = free_addr();
        members.push(start(i, addr, &seeds, args).await);
        if seeds.len() < 3 {
            seeds.push(addr);
        }
        if (i + 1) % 50 == 0 {
            eprintln!(
                "{n} hosts: {} started after {:.1} s ({:.0} s of real time)",
                i + 1,
                started.elapsed().as_secs_f64(),
                wall.elapsed().as_secs_f64()
            );
        }
        if args.start_rate > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(1.0 / args.start_rate)).await;
        }
    }
    let total = n * args.records;
    // Formation, with progress on stderr every 15 s: how many members
    // hold everything, the fewest records any member holds, and how many
    // (member, peer) pairs see the peer dead or suspect.
    let limit = Duration::from_secs(600);
    let mut said = Instant::now();
    loop {
        let held: Vec<usize> = members
            .iter()
            .map(|m| m.gossip.directory().load().len())
            .collect();
        let complete = held.iter().filter(|&&h| h == total).count();
        if complete == n {
            break;
        }
        if started.elapsed() > limit {
            println!(
                "| {n} | did not converge within {} s: {complete} members held all {total} records, the fewest {} |",
                limit.as_secs(),
                held.iter().min().unwrap_or(&0)
            );
            return;
        }
        if said.elapsed() >= Duration::from_secs(15) {
            said = Instant::now();
            let (mut dead, mut suspect) = (0usize, 0usize);
            for m in &members {
                for x in m.gossip.directory().load().members().iter() {
                    match x.liveness {
                        Liveness::Dead => dead += 1,
                        Liveness::Suspect => suspect += 1,
                        _ => {}
                    }
                }
            }
            // Who still lacks records, and of which hosts (a few).
            let lacking: Vec<String> = members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.gossip.directory().load().len() < total)
                .take(3)
                .map(|(i, m)| {
                    let s = m.gossip.directory().load();
                    let hosts: Vec<String> = (0..n)
                        .filter(|h| s.lookup(&format!("svc-{h}-0")).is_empty())
                        .take(3)
                        .map(|h| {
                            let name = format!("h{h}");
                            match s.members().iter().find(|x| x.name == name) {
                                Some(x) => format!(
                                    "{name} ({:?}, {} records, {})",
                                    x.liveness,
                                    x.records,
                                    if x.visible { "visible" } else { "hidden" }
                                ),
                                None => format!("{name} (unknown)"),
                            }
                        })
                        .collect();
                    format!("h{i} lacks {}", hosts.join(", "))
                })
                .collect();
            eprintln!(
                "{n} hosts, {:.0} s ({:.0} s of real time): {complete} hold all {total} records, the fewest {}; members seen dead {dead}, suspect {suspect}; RSS {:.0} MiB; {}",
                started.elapsed().as_secs_f64(),
                wall.elapsed().as_secs_f64(),
                held.iter().min().unwrap_or(&0),
                rss_mib(),
                lacking.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let formed = started.elapsed();

    // At rest.
    let before: Vec<Sent> = members.iter().map(|m| m.metrics.sent()).collect();
    let cpu_before = cpu_time();
    let (mut polls, mut false_deaths) = (0usize, 0usize);
    let rest_start = Instant::now();
    while rest_start.elapsed() < args.rest {
        for m in &members {
            let s = m.gossip.directory().load();
            polls += 1;
            false_deaths += s
                .members()
                .iter()
                .filter(|x| x.liveness == Liveness::Dead)
                .count()
                .min(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secs = rest_start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_before).as_secs_f64() * 1000.0 / secs / n as f64;
    let after: Vec<Sent> = members.iter().map(|m| m.metrics.sent()).collect();
    // Everything sent, datagrams and TCP alike.
    let bytes: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.datagram_bytes + a.tcp_bytes - b.datagram_bytes - b.tcp_bytes)
        .sum();
    let datagrams: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.datagrams - b.datagrams)
        .sum();
    let tcp: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.tcp_messages - b.tcp_messages)
        .sum();
    let largest = after.iter().map(|a| a.largest_datagram).max().unwrap_or(0);

    // Churn: `--churn` records change per second across the cluster (one
    // member at a time moves one record), for as long as the rest lasted.
    let before: Vec<Sent> = members.iter().map(|m| m.metrics.sent()).collect();
    let churn_start = Instant::now();
    let mut churned = 0usize;
    if args.churn > 0.0 {
        let every = Duration::from_secs_f64(1.0 / args.churn);
        while churn_start.elapsed() < args.rest {
            churned += 1;
            let host = (churned * 104_729) % n;
            let mut records: Vec<Record> = (0..args.records).map(|i| record(host, i, 0)).collect();
            // Never record 0, which the change phase below times.
            let i = if args.records > 1 {
                1 + churned % (args.records - 1)
            } else {
                0
            };
            records[i] = record(host, i, 1 + churned % 249);
            members[host]
                .gossip
                .publisher()
                .replace(Source::Static, records)
                .await;
            tokio::time::sleep(every).await;
        }
    }
    let churn_secs = churn_start.elapsed().as_secs_f64();
    let churn_bytes: u64 = members
        .iter()
        .zip(&before)
        .map(|(m, b)| {
            let a = m.metrics.sent();
            a.datagram_bytes + a.tcp_bytes - b.datagram_bytes - b.tcp_bytes
        })
        .sum();
    let churn_rate = if churned > 0 {
        format!(
            "{:.1} KB/s",
            churn_bytes as f64 / churn_secs / n as f64 / 1000.0
        )
    } else {
        "-".to_owned()
    };

    // Changes: one member moves one record; time until every member sees it.
    let mut took = Vec::with_capacity(args.changes);
    for c in 1..=args.changes {
        let host = (c * 7919) % n;
        let mut records: Vec<Record> = (0..args.records).map(|i| record(host, i, 0)).collect();
        records[0] = record(host, 0, c);
        let want = records[0].addresses[0].ip;
        let id = records[0].id.clone();
        let t0 = Instant::now();
        members[host]
            .gossip
            .publisher()
            .replace(Source::Static, records)
            .await;
        let seen = everywhere(&members, Duration::from_secs(60), |s| {
            s.lookup(&id).iter().any(|r| r.addresses[0].ip == want)
        })
        .await;
        took.push(seen.map_or(Duration::from_secs(60), |_| t0.elapsed()));
    }
    took.sort();

    // A new member: time to hold the whole directory.
    let newcomer_start = Instant::now();
    let newcomer = start(n, free_addr(), &seeds, args).await;
    let joined = everywhere(
        std::slice::from_ref(&newcomer),
        Duration::from_secs(120),
        |s| s.len() == total + args.records,
    )
    .await
    .map_or(Duration::from_secs(120), |_| newcomer_start.elapsed());
    let rss = rss_mib();

    // A member stops: time until its records leave every other directory.
    let victim = members.remove(n / 2);
    let gone_name = format!("svc-{}-0", n / 2);
    let t0 = Instant::now();
    victim.gossip.shutdown().await;
    let detect = everywhere(&members, Duration::from_secs(120), |s| {
        s.lookup(&gone_name).is_empty()
    })
    .await
    .map_or(Duration::from_secs(120), |_| t0.elapsed());

    println!(
        "| {n} | {:.1} s | {:.1} KB/s | {churn_rate} | {:.1} | {:.1} | {largest} B | {:.2} s | {:.2} s | {:.2} s | {:.1} s | {false_deaths} of {polls} | {cpu:.1} mc | {:.2} MiB |",
        formed.as_secs_f64(),
        bytes as f64 / secs / n as f64 / 1000.0,
        datagrams as f64 / secs / n as f64,
        tcp as f64 / secs / n as f64,
        percentile(&took, 0.5).as_secs_f64(),
        percentile(&took, 0.99).as_secs_f64(),
        joined.as_secs_f64(),
        detect.as_secs_f64(),
        rss / (n + 1) as f64,
    );
    eprintln!(
        "{n} hosts: {:.0} s simulated in {:.0} s of real time",
        started.elapsed().as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    for m in members.into_iter().chain([newcomer]) {
        m.stop.cancel();
        m.gossip.stopped().await;
    }
}

fn main() {
    let args = args();
    raise_open_files();
    let runtime = if args.virtual_clock {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let runtime = runtime.expect("a tokio runtime");
    if let Some(filter) = &args.log {
        let start = runtime.block_on(async { Instant::now() });
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimulatedTime(start))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    println!(
        "## Scale simulator: {} clock, {:?} failure detection, {} records per host, gossip every {:?}, dead grace 2 s, at rest for {:?}, {:.0}% of messages lost on receipt, {}\n",
        if args.virtual_clock {
            "virtual"
        } else {
            "real"
        },
        args.detector,
        args.records,
        args.interval,
        args.rest,
        args.loss * 100.0,
        if args.start_rate > 0.0 {
            format!("{} members started a second", args.start_rate)
        } else {
            "all members started at once".to_owned()
        }
    );
    println!(
        "| hosts | all hold everything after | sent per member at rest | under churn | datagrams/s per member at rest | TCP messages/s per member | largest datagram | change everywhere p50 | p99 | new member holds all | stop to records gone everywhere | polls seeing a live member dead | CPU per member at rest | memory per member |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &args.hosts {
        simulate(n, &args).await;
    }
}

/// Log lines stamped with seconds on the simulator's clock.
struct SimulatedTime(Instant);

impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:10.3}", self.0.elapsed().as_secs_f64())
    }
}
