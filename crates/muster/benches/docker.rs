//! Docker discovery bench, against the machine's real Docker engine (run
//! `bash tests/setup.sh` first for the test image).
//!
//! - Time from `docker run` returning to the container's name resolving
//!   over DNS on another agent, p50 and p99 over 100 containers, with the
//!   gossip interval as the baseline.
//! - Time for an agent to reconcile after its engine connection returns,
//!   with 500 containers (the agent's view is cut by a socket proxy), against
//!   the time `docker ps -a` plus one inspect per container takes from the
//!   CLI.
//!
//! Run: `cargo bench -p muster --bench docker`

#[allow(dead_code)]
#[path = "../../../tests/cluster/harness.rs"]
mod harness;

#[path = "../../../tests/cluster/docker.rs"]
mod docker;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use docker::{Container, SocketProxy, docker_ok, require_docker, run_id};
use harness::{Agent, AgentSpec, DNS_PORT, eventually, loopback_block};

const RUNS: usize = 100;
const RECONCILE_CONTAINERS: usize = 500;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

async fn run_to_resolve(interval: &str) -> Vec<Duration> {
    let run = run_id();
    let block = loopback_block();
    let mut a_spec = AgentSpec::new(&block, 1, "a").with_docker(&run, &[]);
    a_spec.gossip_interval = interval.to_owned();
    let a = Agent::start(a_spec.clone()).await;
    let mut b_spec = AgentSpec::new(&block, 2, "b").joining(&a_spec);
    b_spec.gossip_interval = interval.to_owned();
    let b = Agent::start(b_spec).await;
    eventually(Duration::from_secs(15), "two members", || async {
        (b.members().await.len() == 2).then_some(())
    })
    .await;
    let socket = UdpSocket::bind(format!("{block}.200:0")).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let server = format!("{}:{DNS_PORT}", b.spec.ip);
    let mut latencies = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let name = format!("lat{i}-{run}");
        let c = Container::run(&name, &[("muster.test.host", &run)], &[], &[]);
        let start = Instant::now();
        while harness::resolve_a(&socket, &server, &format!("{name}.muster.")).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} never resolved"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(start.elapsed());
        drop(c);
    }
    drop(a);
    latencies.sort();
    latencies
}

async fn reconcile() -> (Duration, Duration) {
    let run = run_id();
    let block = loopback_block();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let mut proxy = SocketProxy::start(&socket);
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_docker(
        &run,
        &["--docker-host", &format!("unix://{}", socket.display())],
    ))
    .await;
    eventually(Duration::from_secs(15), "docker connected", || async {
        let m = a.members().await;
        (m[0].meta.get("docker").map(String::as_str) == Some("connected")).then_some(())
    })
    .await;
    proxy.stop();
    // Create the containers while the agent cannot see them.
    let mut containers = Vec::with_capacity(RECONCILE_CONTAINERS);
    for chunk in (0..RECONCILE_CONTAINERS).collect::<Vec<_>>().chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|i| {
                let (name, run) = (format!("rc{i}-{run}"), run.clone());
                std::thread::spawn(move || {
                    Container::run(&name, &[("muster.test.host", &run)], &[], &[])
                })
            })
            .collect();
        containers.extend(handles.into_iter().map(|h| h.join().expect("docker run")));
    }
    let start = Instant::now();
    proxy.restart();
    eventually(Duration::from_secs(120), "500 records", || async {
        let n = a.list("").await.len();
        (n == RECONCILE_CONTAINERS).then_some(())
    })
    .await;
    let agent = start.elapsed();

    // Baseline: the same listing and inspection from the docker CLI.
    let start = Instant::now();
    let ids = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=muster.test.host={run}"),
    ]);
    let ids: Vec<&str> = ids.lines().collect();
    for chunk in ids.chunks(50) {
        let mut args = vec!["inspect"];
        args.extend(chunk.iter().copied());
        docker_ok(&args);
    }
    let cli = start.elapsed();
    for chunk in containers.chunks(10) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk.iter().map(|c| c.id.as_str()));
        docker::docker(&args);
    }
    (agent, cli)
}

#[tokio::main]
async fn main() {
    require_docker();
    // `-- latency` or `-- reconcile` runs one part only.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|a| a == part);
    if wants("latency") {
        latency().await;
    }
    if wants("reconcile") {
        reconcile_table().await;
    }
}

async fn latency() {
    println!(
        "## `docker run` returning to the name resolving over DNS on another agent ({RUNS} containers)\n"
    );
    println!("| gossip interval | p50 | p99 | max | p50 / interval |");
    println!("|---|---|---|---|---|");
    for (interval, interval_ms) in [("200ms", 200.0), ("1s", 1000.0)] {
        let l = run_to_resolve(interval).await;
        let p50 = percentile(&l, 0.5);
        println!(
            "| {interval} | {} | {} | {} | {:.2} |",
            ms(p50),
            ms(percentile(&l, 0.99)),
            ms(l[l.len() - 1]),
            p50.as_secs_f64() * 1e3 / interval_ms
        );
    }
}

async fn reconcile_table() {
    println!(
        "\n## Reconcile after the engine connection returns, {RECONCILE_CONTAINERS} containers created while away\n"
    );
    let (agent, cli) = reconcile().await;
    println!("| what | time | ratio |");
    println!("|---|---|---|");
    println!(
        "| docker CLI: `ps -a` + `inspect` of every container (baseline) | {} | 1.00 |",
        ms(cli)
    );
    println!(
        "| agent: reconnect, list, inspect, publish, served over gRPC | {} | {:.2} |",
        ms(agent),
        agent.as_secs_f64() / cli.as_secs_f64()
    );
}
