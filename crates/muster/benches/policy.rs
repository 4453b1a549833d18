//! Naming policy bench, against the machine's real Docker engine (run
//! `bash tests/setup.sh` first for the test image).
//!
//! Time from `docker run` returning (a container whose name breaks the
//! policy) to the violation being listed by `Violations` on another agent,
//! p50 and p99 over 50 containers, next to the time to the same name
//! resolving over DNS on that agent (the baseline: the directory itself).
//!
//! Run: `cargo bench -p muster --bench policy`

#[allow(dead_code)]
#[path = "../../../tests/cluster/harness.rs"]
mod harness;

#[path = "../../../tests/cluster/docker.rs"]
mod docker;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use docker::{Container, require_docker, run_id};
use harness::{Agent, AgentSpec, DNS_PORT, eventually, loopback_block};
use muster_proto::v1;

const STARTS: usize = 50;
const POLICY: &str =
    "[[rule]]\nname = \"system-role-n\"\nname_pattern = '[a-z][a-z0-9]*-[a-z][a-z0-9]*-[0-9]+'\n";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// (to resolve, to violation) for each start.
async fn starts(interval: &str) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).expect("policy");
    let policy = policy.to_str().expect("utf-8 path");
    let run = run_id();
    let block = loopback_block();
    let mut a_spec = AgentSpec::new(&block, 1, "a")
        .with_docker(&run, &[])
        .with_args(&["--policy", policy]);
    a_spec.gossip_interval = interval.to_owned();
    let a = Agent::start(a_spec.clone()).await;
    let mut b_spec = AgentSpec::new(&block, 2, "b")
        .joining(&a_spec)
        .with_args(&["--policy", policy]);
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
    let mut client = b.client().await;
    let (mut resolved, mut violated) = (Vec::new(), Vec::new());
    for i in 0..STARTS {
        let name = format!("pol{i}-{run}");
        let c = Container::run(&name, &[("muster.test.host", &run)], &[], &[]);
        let start = Instant::now();
        let (mut r, mut v) = (None, None);
        while r.is_none() || v.is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} never showed"
            );
            if r.is_none()
                && harness::resolve_a(&socket, &server, &format!("{name}.muster.")).is_some()
            {
                r = Some(start.elapsed());
            }
            if v.is_none() {
                let listed = client
                    .violations(v1::ViolationsRequest::default())
                    .await
                    .expect("violations")
                    .into_inner();
                if listed.violations.iter().any(|x| x.name == name) {
                    v = Some(start.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        resolved.extend(r);
        violated.extend(v);
        drop(c);
    }
    drop(a);
    resolved.sort();
    violated.sort();
    (resolved, violated)
}

#[tokio::main]
async fn main() {
    require_docker();
    println!(
        "## `docker run` of a badly named container on agent a: seen on agent b ({STARTS} starts)\n"
    );
    println!(
        "| gossip interval | resolves over DNS, p50 / p99 (baseline) | violation listed, p50 / p99 | p50 ratio |"
    );
    println!("|---|---|---|---|");
    for interval in ["200ms", "1s"] {
        let (r, v) = starts(interval).await;
        println!(
            "| {interval} | {} / {} | {} / {} | {:.2} |",
            ms(percentile(&r, 0.5)),
            ms(percentile(&r, 0.99)),
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99)),
            percentile(&v, 0.5).as_secs_f64() / percentile(&r, 0.5).as_secs_f64()
        );
    }
}
