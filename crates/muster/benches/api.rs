//! gRPC API bench: one agent (release build) holding 50,000 records on
//! loopback.
//!
//! Prints, as tables:
//! - Lookup and List latency (p50, p99 over sequential calls on one
//!   connection), each against the standard health Check on the same
//!   server and connection, the cheapest call there is (the baseline);
//! - HTTP: the status page (first, last and filtered pages) against
//!   `/healthz`, and `/v1/sd` (every record a target) against List of every
//!   record over gRPC;
//! - Watch fan-out: 100 watchers following every record while 1,000
//!   records change at once (a SIGHUP reload), events delivered per second
//!   in all, against a single watcher (the baseline).
//!
//! Run: `cargo bench -p muster --bench api`

#[allow(dead_code)]
#[path = "../../../tests/cluster/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Agent, AgentSpec, eventually, loopback_block};
use muster_proto::v1;
use muster_proto::v1::directory_client::DirectoryClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const RECORDS: usize = 50_000;
const CALLS: usize = 2_000;
const CHANGED: usize = 1_000;
const WATCHERS: usize = 100;

/// The static file: `RECORDS` records, 100 per `app` label; the first
/// `CHANGED` get address `10.255.x.y` when `changed`.
fn records(changed: bool) -> String {
    let mut out = String::with_capacity(RECORDS * 90);
    for i in 0..RECORDS {
        let ip = if changed && i < CHANGED {
            format!("10.255.{}.{}", i / 256, i % 256)
        } else {
            format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
        };
        out.push_str(&format!(
            "[[record]]\nname = \"svc-{i}\"\naddresses = [\"{ip}\"]\nlabels = {{ app = \"app-{}\", \"muster.metrics.port\" = \"9100\" }}\n",
            i % 500
        ));
    }
    out
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

async fn timed<F, Fut>(mut call: F) -> (Duration, Duration)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut took = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let start = Instant::now();
        call(i).await;
        took.push(start.elapsed());
    }
    took.sort();
    (percentile(&took, 0.5), percentile(&took, 0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Opens `n` watchers of every record; returns them once each is synced.
async fn watchers(addr: &str, n: usize) -> Vec<tonic::Streaming<v1::WatchEvent>> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut client = DirectoryClient::connect(format!("http://{addr}"))
            .await
            .expect("connect")
            .max_decoding_message_size(usize::MAX);
        let mut stream = client
            .watch(v1::WatchRequest::default())
            .await
            .expect("watch")
            .into_inner();
        while let Some(event) = stream.message().await.expect("stream") {
            if event.kind() == v1::EventKind::Synced {
                break;
            }
        }
        streams.push(stream);
    }
    streams
}

/// Reloads the static file with `changed` and waits until every watcher
/// has received `CHANGED` updates; returns events per second in all and
/// the time from the reload to the last event.
async fn fan_out(
    agent: &Agent,
    streams: Vec<tonic::Streaming<v1::WatchEvent>>,
    changed: bool,
) -> (f64, Duration) {
    let watchers = streams.len();
    agent.write_records(&records(changed));
    let start = Instant::now();
    agent.signal(libc::SIGHUP);
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        tasks.spawn(async move {
            let mut updates = 0;
            while updates < CHANGED {
                let event = stream.message().await.expect("stream").expect("open");
                if event.kind() == v1::EventKind::Updated {
                    updates += 1;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("watcher task");
    }
    let elapsed = start.elapsed();
    ((watchers * CHANGED) as f64 / elapsed.as_secs_f64(), elapsed)
}

#[tokio::main]
async fn main() {
    let block = loopback_block();
    let agent = Agent::start(AgentSpec::new(&block, 1, "a").with_records(&records(false))).await;
    let addr = agent.grpc_addr();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut directory = DirectoryClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    let health = HealthClient::new(channel);
    eventually(Duration::from_secs(60), "every record served", || {
        let mut d = directory.clone();
        async move {
            let all = d.list(v1::ListRequest::default()).await.ok()?.into_inner();
            (all.records.len() == RECORDS).then_some(())
        }
    })
    .await;

    let (h50, h99) = timed(|_| {
        let mut h = health.clone();
        async move {
            h.check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("check");
        }
    })
    .await;
    let (l50, l99) = timed(|i| {
        let mut d = directory.clone();
        async move {
            let name = format!("svc-{}", (i * 7919) % RECORDS);
            d.lookup(v1::LookupRequest { name }).await.expect("lookup");
        }
    })
    .await;
    let (s50, s99) = timed(|i| {
        let mut d = directory.clone();
        async move {
            let selector = format!("app=app-{}", i % 500);
            let got = d
                .list(v1::ListRequest {
                    selector,
                    ..Default::default()
                })
                .await
                .expect("list");
            assert_eq!(got.into_inner().records.len(), RECORDS / 500);
        }
    })
    .await;
    let mut all = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let got = directory
            .list(v1::ListRequest::default())
            .await
            .expect("list all");
        assert_eq!(got.into_inner().records.len(), RECORDS);
        all.push(start.elapsed());
    }
    all.sort();

    println!(
        "## gRPC on loopback, {RECORDS} records, {CALLS} sequential calls on one connection\n"
    );
    println!("| call | p50 | p99 | p50 vs health Check |");
    println!("|---|---|---|---|");
    println!(
        "| health Check (baseline) | {} | {} | 1.00 |",
        ms(h50),
        ms(h99)
    );
    println!(
        "| Lookup (1 record) | {} | {} | {:.2} |",
        ms(l50),
        ms(l99),
        l50.as_secs_f64() / h50.as_secs_f64()
    );
    println!(
        "| List `app=app-N` (100 records) | {} | {} | {:.2} |",
        ms(s50),
        ms(s99),
        s50.as_secs_f64() / h50.as_secs_f64()
    );
    println!(
        "| List everything ({RECORDS} records, 20 calls) | {} | {} | {:.0} |",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        percentile(&all, 0.5).as_secs_f64() / h50.as_secs_f64()
    );

    // HTTP: each GET on a new connection, read to the end.
    let http = format!("{}:{}", agent.spec.ip, harness::HTTP_PORT);
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            let mut took = Vec::new();
            let mut bytes = 0;
            for _ in 0..20 {
                let start = Instant::now();
                let reply = harness::http_get(&http, path).await.expect("an answer");
                took.push(start.elapsed());
                assert_eq!(reply.status, 200, "{path}");
                bytes = reply.body.len();
            }
            took.sort();
            (took, bytes)
        }
    };
    let (healthz, healthz_bytes) = get("/healthz").await;
    let (sd, sd_bytes) = get("/v1/sd").await;
    println!("\n## HTTP with {RECORDS} records, 20 GETs each\n");
    println!("| GET | p50 | max | size | p50 vs the baseline |");
    println!("|---|---|---|---|---|");
    let row = |what: &str, took: &[Duration], bytes: usize, base: Duration| {
        println!(
            "| {what} | {} | {} | {:.1} KB | {:.2} |",
            ms(percentile(took, 0.5)),
            ms(took[took.len() - 1]),
            bytes as f64 / 1e3,
            percentile(took, 0.5).as_secs_f64() / base.as_secs_f64()
        );
    };
    let healthz_p50 = percentile(&healthz, 0.5);
    row(
        "`/healthz` (baseline for the pages)",
        &healthz,
        healthz_bytes,
        healthz_p50,
    );
    for (what, path) in [
        ("status page `/`", "/"),
        ("status page, page 250", "/?page=250"),
        (
            "status page `?selector=app=app-7`",
            "/?selector=app%3Dapp-7",
        ),
        ("status page `?q=svc-4`", "/?q=svc-4"),
        (
            "status page `?selector=app notin (app-1)` (no index narrows it)",
            "/?selector=app%20notin%20%28app-1%29",
        ),
    ] {
        let (took, bytes) = get(path).await;
        row(what, &took, bytes, healthz_p50);
    }
    let list_p50 = percentile(&all, 0.5);
    println!(
        "| gRPC List of everything (baseline for `/v1/sd`) | {} | {} | | 1.00 |",
        ms(list_p50),
        ms(all[all.len() - 1])
    );
    row("`/v1/sd`, every record a target", &sd, sd_bytes, list_p50);

    let (single, single_took) = fan_out(&agent, watchers(&addr, 1).await, true).await;
    let (fanned, fanned_took) = fan_out(&agent, watchers(&addr, WATCHERS).await, false).await;
    println!(
        "\n## Watch fan-out: {CHANGED} records change in one reload of the {RECORDS}-record file\n"
    );
    println!(
        "| watchers | SIGHUP to last event delivered | vs one watcher | events delivered per second |"
    );
    println!("|---|---|---|---|");
    println!(
        "| 1 (baseline) | {} | 1.00 | {single:.0} |",
        ms(single_took)
    );
    println!(
        "| {WATCHERS} | {} | {:.2} | {fanned:.0} |",
        ms(fanned_took),
        fanned_took.as_secs_f64() / single_took.as_secs_f64()
    );
}
