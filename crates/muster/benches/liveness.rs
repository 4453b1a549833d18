//! Liveness tuning: detection time against false deaths, on three hosts in
//! network namespaces (root needed; see tests/cluster/netns.rs).
//!
//! For each failure detector (SWIM probes, the default, or chitchat's phi
//! detector at a threshold) and gossip interval: the time from
//! `kill -9` of one agent to its records leaving another agent's directory
//! (failure detector + `--dead-grace`, 1 s here), median of 5; and, over 20
//! s of 5% loss with 50 ms ± 50 ms delay on every gossip datagram, how
//! often an agent wrongly saw a live peer dead (polled every 100 ms).
//!
//! Run: `cargo bench -p muster --bench liveness`

#[allow(dead_code)]
#[path = "../../../tests/cluster/harness.rs"]
mod harness;

#[allow(dead_code)]
#[path = "../../../tests/cluster/netns.rs"]
mod netns;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{Agent, eventually};
use netns::{Delayer, Lab};

const KILLS: usize = 5;

async fn start(lab: &Lab, interval: &str, detector: &str, sealed: bool) -> Vec<Agent> {
    let mut agents = Vec::new();
    for i in 0..3 {
        let mut spec = lab.spec(
            i,
            &format!(
                "[[record]]\nname = \"r{i}\"\naddresses = [\"10.200.0.{}\"]\n",
                i + 1
            ),
        );
        spec.gossip_interval = interval.to_owned();
        match detector.strip_prefix("phi ") {
            Some(phi) => spec.extra_args.extend([
                "--failure-detector".into(),
                "phi".into(),
                "--phi-threshold".into(),
                phi.into(),
            ]),
            None => spec
                .extra_args
                .extend(["--failure-detector".into(), detector.into()]),
        }
        if !sealed {
            // The lab's agents gossip sealed; the baseline, in the clear.
            spec.extra_args
                .retain(|a| a != "--gossip-key-file" && !a.ends_with("gossip.key"));
            spec.extra_args.push("--insecure-gossip".into());
        }
        agents.push(Agent::start(spec).await);
    }
    eventually(Duration::from_secs(60), "three records on h3", || async {
        (lab.listed(2).len() == 3).then_some(())
    })
    .await;
    agents
}

async fn detection(interval: &str, detector: &str, sealed: bool) -> Duration {
    let mut took = Vec::new();
    for _ in 0..KILLS {
        let lab = Lab::new(3);
        let mut agents = start(&lab, interval, detector, sealed).await;
        agents[0].kill();
        let killed = Instant::now();
        eventually(
            Duration::from_secs(120),
            "h1's record gone from h3",
            || async {
                let hosts: BTreeSet<String> = lab.listed(2).into_iter().map(|(h, _)| h).collect();
                (!hosts.contains("h1")).then_some(())
            },
        )
        .await;
        took.push(killed.elapsed());
    }
    took.sort();
    took[took.len() / 2]
}

async fn false_deaths(interval: &str, detector: &str, sealed: bool) -> (usize, usize) {
    let lab = Lab::new(3);
    let _agents = start(&lab, interval, detector, sealed).await;
    lab.lose(0.05);
    let delayers: Vec<Delayer> = (0..3)
        .map(|i| {
            Delayer::start(
                &lab,
                i,
                Duration::from_millis(50),
                Duration::from_millis(50),
            )
        })
        .collect();
    let (mut polls, mut dead) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        polls += 3;
        let seen: BTreeSet<usize> = lab.dead_seen().into_iter().map(|(host, _)| host).collect();
        dead += seen.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(delayers);
    (dead, polls)
}

#[tokio::main]
async fn main() {
    println!("## Liveness: 3 hosts in network namespaces, --dead-grace 1s\n");
    println!(
        "| gossip interval | failure detector | gossip | kill -9 to records gone, median of {KILLS} | polls seeing a live peer dead under 5% loss + 50±50 ms |"
    );
    println!("|---|---|---|---|---|");
    // The default (probes) and the phi detector, sealed (the lab's
    // default) and in the clear, side by side; then other intervals and
    // thresholds. `MUSTER_BENCH_QUICK=1` runs the first two rows alone.
    let quick = std::env::var("MUSTER_BENCH_QUICK").is_ok_and(|v| v == "1");
    let rows: &[(&str, &str, bool)] = &[
        ("200ms", "probes", true),
        ("200ms", "phi 8", true),
        ("200ms", "probes", false),
        ("100ms", "probes", true),
        ("1s", "probes", true),
        ("1s", "phi 8", true),
        ("200ms", "phi 12", true),
    ];
    for &(interval, detector, sealed) in rows.iter().take(if quick { 2 } else { rows.len() }) {
        let detect = detection(interval, detector, sealed).await;
        let (dead, polls) = false_deaths(interval, detector, sealed).await;
        println!(
            "| {interval} | {detector} | {} | {:.2} s | {dead} of {polls} |",
            if sealed { "sealed" } else { "clear" },
            detect.as_secs_f64()
        );
    }
}
