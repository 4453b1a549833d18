//! muster with a real Prometheus (Debian's `prometheus` package, installed
//! by tests/setup.sh): Prometheus finds its scrape targets through one
//! agent's `/v1/sd`, scrapes them, and scrapes every agent's own `/metrics`.
//! Everything is checked through Prometheus' HTTP API, as a monitoring
//! manager would see it.
//!
//! Each test starts its own Prometheus on an address of its loopback block,
//! with a configuration written here, storage in a temp dir, and a scrape
//! interval and discovery refresh of 1 s; it is killed when the test ends,
//! passing or not. The package's own service is never used.
//!
//! Prometheus 2.42 hands discovery results to its scrape manager at most
//! every 5 s, and the scrape manager applies them at most every 5 s (fixed
//! tickers, no flag), so a change reaches `/api/v1/targets` 1 to 11 s after
//! `/v1/sd` shows it: the waits below allow [`DISCOVERY_DELAY`].

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_proto::v1;
use serde_json::Value;

use crate::docker::{Container, IMAGE, Network, require_docker, run_id};
use crate::harness::*;

/// The port of each test's Prometheus, on an address of the test's block.
/// Not Prometheus' usual 9090: where systemd runs the Debian package's
/// service, it listens on `*:9090`, and that keeps every loopback address
/// from binding 9090.
const PROMETHEUS_PORT: u16 = 19090;

/// The longest a change of `/v1/sd` takes to show in Prometheus' targets:
/// the 1 s refresh, then the two 5 s tickers of Prometheus 2.42, with room
/// for a loaded machine.
const DISCOVERY_DELAY: Duration = Duration::from_secs(20);

/// The scrape pool of the targets found through `/v1/sd`.
const SD_JOB: &str = "muster-sd";

/// The scrape pool of the agents' own `/metrics`.
const AGENTS_JOB: &str = "muster";

/// A Prometheus server of one test; killed (SIGKILL) when dropped, and its
/// log printed if the test is failing.
struct Prometheus {
    /// `IP:PORT` of its web API.
    addr: String,
    child: Child,
    /// Holds the configuration, the log and the TSDB; removed on drop.
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on `ip`, discovering targets from `sd_url` and
    /// scraping `/metrics` of every `agents` address, and waits until it is
    /// ready.
    async fn start(ip: &str, sd_url: &str, agents: &[String]) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("muster-prometheus-")
            .tempdir()
            .expect("temp dir");
        let agents: Vec<String> = agents.iter().map(|a| format!("\"{a}\"")).collect();
        let config = format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: {SD_JOB}
    http_sd_configs:
      - url: "{sd_url}"
        refresh_interval: 1s
  - job_name: {AGENTS_JOB}
    static_configs:
      - targets: [{agents}]
"#,
            agents = agents.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let addr = format!("{ip}:{PROMETHEUS_PORT}");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus (installed by tests/setup.sh, see README)");
        let mut prometheus = Prometheus { addr, child, dir };
        let started = Instant::now();
        let addr = prometheus.addr.clone();
        let log = prometheus.dir.path().join("prometheus.log");
        let child = &mut prometheus.child;
        eventually(Duration::from_secs(20), "Prometheus to be ready", || {
            if let Some(status) = child.try_wait().expect("try_wait on prometheus") {
                panic!(
                    "prometheus exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let addr = addr.clone();
            async move {
                let reply = http_get(&addr, "/-/ready").await?;
                (reply.status == 200).then_some(())
            }
        })
        .await;
        eprintln!("Prometheus ready after {:?}", started.elapsed());
        prometheus
    }

    /// The `data` of a successful answer of the API at `path_and_query`.
    async fn api(&self, path_and_query: &str) -> Option<Value> {
        let reply = http_get(&self.addr, path_and_query).await?;
        let doc: Value = serde_json::from_str(&reply.body).ok()?;
        (reply.status == 200 && doc["status"] == "success").then(|| doc["data"].clone())
    }

    /// The active targets of scrape pool `job`.
    async fn targets(&self, job: &str) -> Vec<Value> {
        let Some(data) = self.api("/api/v1/targets?state=active").await else {
            return Vec::new();
        };
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["scrapePool"] == job)
            .cloned()
            .collect()
    }

    /// The active `/v1/sd` target discovered for the record `name`, if any.
    async fn sd_target(&self, name: &str) -> Option<Value> {
        self.targets(SD_JOB)
            .await
            .into_iter()
            .find(|t| t["discoveredLabels"]["__meta_muster_container_name"] == name)
    }

    /// The series of an instant query (empty while it has none, or if the
    /// query fails).
    async fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        self.api(&path)
            .await
            .and_then(|data| data["result"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- log of prometheus ({}) ----\n{}",
                self.addr,
                std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
            );
        }
    }
}

/// Two agents, `a` and `b` (joining `a`), and a Prometheus that discovers
/// through `b`'s `/v1/sd` and scrapes both agents' `/metrics`.
struct Cluster {
    a: Agent,
    b: Agent,
    prometheus: Prometheus,
}

impl Cluster {
    /// Starts agent `a` from `a_spec` (index 1 of `block`), then `b`, waits
    /// until `b` sees both alive, then starts Prometheus on `block.50`.
    async fn start(block: &str, a_spec: AgentSpec) -> Cluster {
        let a = Agent::start(a_spec.clone()).await;
        let b = Agent::start(AgentSpec::new(block, 2, "b").joining(&a_spec)).await;
        eventually(
            Duration::from_secs(15),
            "b to see a and b alive",
            || async {
                let members = b.members().await;
                (members.len() == 2 && members.iter().all(|m| m.liveness() == v1::Liveness::Alive))
                    .then_some(())
            },
        )
        .await;
        let agents = [http_addr(&a), http_addr(&b)];
        let sd_url = format!("http://{}/v1/sd", http_addr(&b));
        let prometheus = Prometheus::start(&format!("{block}.50"), &sd_url, &agents).await;
        Cluster { a, b, prometheus }
    }
}

/// `IP:PORT` of an agent's HTTP endpoints.
fn http_addr(agent: &Agent) -> String {
    format!("{}:{HTTP_PORT}", agent.spec.ip)
}

/// `GET` that must succeed, from an agent.
async fn agent_get(agent: &Agent, path_and_query: &str) -> HttpReply {
    http_get(&http_addr(agent), path_and_query)
        .await
        .unwrap_or_else(|| panic!("agent {} to answer {path_and_query}", agent.spec.name))
}

/// `s` for a URL query value: everything but unreserved characters as
/// `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `instance` labels of `series`, sorted.
fn instances(series: &[Value]) -> Vec<String> {
    let mut instances: Vec<String> = series
        .iter()
        .filter_map(|s| s["metric"]["instance"].as_str().map(str::to_owned))
        .collect();
    instances.sort();
    instances.dedup();
    instances
}

#[tokio::test]
async fn prometheus_finds_a_container_of_another_agent_through_sd_and_scrapes_it() {
    require_docker();
    let run = run_id();
    let net = Network::create(&format!("prom-{run}"));
    let block = loopback_block();
    let cluster = Cluster::start(
        &block,
        AgentSpec::new(&block, 1, "a")
            .with_docker(&format!("{run}-a"), &["--routable-network", &net.name]),
    )
    .await;
    // A container of a's, on a routable network, serving a metrics file
    // with busybox httpd on the port its label names.
    let name = format!("exporter-{run}");
    let container = Container::run(
        &name,
        &[
            ("muster.test.host", &format!("{run}-a")),
            ("muster.metrics.port", "9100"),
            ("app", "demo"),
        ],
        &["--network", &net.name],
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo 'demo_up 1' > /www/metrics && exec httpd -f -p 9100 -h /www",
        ],
    );
    let ip = container.ip(&net.name).expect("an IP on the test network");
    let prometheus = &cluster.prometheus;

    // Prometheus asks b, and finds the target a publishes, with the labels
    // as discovered (no relabeling configured).
    let target = eventually(
        DISCOVERY_DELAY,
        "the container's target in Prometheus",
        || prometheus.sd_target(&name),
    )
    .await;
    let labels = &target["discoveredLabels"];
    assert_eq!(labels["__address__"], format!("{ip}:9100"), "{target}");
    assert_eq!(labels["__meta_muster_container_name"], name.as_str());
    // muster's records carry Docker's 12-digit short id (docker_sd gives
    // the full one).
    assert_eq!(labels["__meta_muster_container_id"], &container.id[..12]);
    assert_eq!(labels["__meta_muster_host"], "a");
    assert_eq!(labels["__meta_muster_image"], IMAGE);
    assert_eq!(labels["__meta_muster_state"], "running");
    assert_eq!(labels["__meta_muster_container_label_app"], "demo");
    assert_eq!(
        labels["__meta_muster_container_label_muster_metrics_port"],
        "9100"
    );
    assert_eq!(labels["__meta_muster_network_name"], net.name.as_str());
    assert_eq!(labels["__meta_muster_network_ip"], ip.as_str());
    assert_eq!(labels["__meta_muster_port_private"], "9100");
    assert_eq!(target["scrapeUrl"], format!("http://{ip}:9100/metrics"));

    // Its scrapes succeed, and its samples are queryable.
    eventually(
        Duration::from_secs(10),
        "the container's target to be up",
        || async {
            let target = prometheus.sd_target(&name).await?;
            (target["health"] == "up").then_some(())
        },
    )
    .await;
    let series = eventually(Duration::from_secs(10), "demo_up in Prometheus", || async {
        let series = prometheus.query("demo_up").await;
        (!series.is_empty()).then_some(series)
    })
    .await;
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["metric"]["instance"], format!("{ip}:9100"));
    assert_eq!(series[0]["metric"]["job"], SD_JOB);
    assert_eq!(series[0]["value"][1], "1");
}

#[tokio::test]
async fn prometheus_scrapes_the_own_metrics_of_every_agent() {
    let block = loopback_block();
    let cluster = Cluster::start(
        &block,
        AgentSpec::new(&block, 1, "a").with_records(
            r#"
[[record]]
name = "web-1"
addresses = ["10.0.0.5"]
ports = ["8080/tcp"]
"#,
        ),
    )
    .await;
    let prometheus = &cluster.prometheus;
    let both = {
        let mut both = vec![http_addr(&cluster.a), http_addr(&cluster.b)];
        both.sort();
        both
    };

    eventually(
        DISCOVERY_DELAY,
        "both agents' /metrics to be up",
        || async {
            let targets = prometheus.targets(AGENTS_JOB).await;
            (targets.len() == 2 && targets.iter().all(|t| t["health"] == "up")).then_some(())
        },
    )
    .await;
    for metric in ["muster_build_info", "muster_records", "muster_members"] {
        let query = format!("{metric}{{job=\"{AGENTS_JOB}\"}}");
        eventually(
            Duration::from_secs(10),
            &format!("{metric} from both agents"),
            || async { (instances(&prometheus.query(&query).await) == both).then_some(()) },
        )
        .await;
    }
    // Each agent counts the whole cluster's records: a's static record is
    // counted by b too.
    let counted = prometheus
        .query(&format!(
            "sum by (instance) (muster_records{{job=\"{AGENTS_JOB}\"}})"
        ))
        .await;
    assert_eq!(instances(&counted), both, "{counted:?}");
    for series in &counted {
        let count: f64 = series["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a sample value");
        assert!(count >= 1.0, "{series}");
    }
}

/// Two records for agent `a`'s static file: `web-1` names its metrics port
/// with a label, `db-1` declares a TCP port. Nothing listens there: these
/// targets are down, which is enough to follow discovery.
const TWO_TARGETS: &str = r#"
[[record]]
name = "web-1"
addresses = ["BLOCK.60"]
labels = { app = "web", "muster.metrics.port" = "9100" }

[[record]]
name = "db-1"
addresses = ["BLOCK.61"]
labels = { app = "db" }
ports = ["9187/tcp"]
"#;

#[tokio::test]
async fn a_record_removed_on_one_agent_leaves_prometheus_targets_on_the_next_refresh() {
    let block = loopback_block();
    let records = TWO_TARGETS.replace("BLOCK", &block);
    let cluster = Cluster::start(
        &block,
        AgentSpec::new(&block, 1, "a").with_records(&records),
    )
    .await;
    let prometheus = &cluster.prometheus;
    eventually(
        DISCOVERY_DELAY,
        "web-1 and db-1 among Prometheus' targets",
        || async {
            prometheus.sd_target("web-1").await?;
            prometheus.sd_target("db-1").await?;
            Some(())
        },
    )
    .await;

    let only_db = records
        .split("[[record]]")
        .filter(|r| r.contains("db-1"))
        .map(|r| format!("[[record]]{r}"))
        .collect::<String>();
    cluster.a.write_records(&only_db);
    cluster.a.signal(libc::SIGHUP);
    let removed = Instant::now();
    eventually(
        DISCOVERY_DELAY,
        "web-1 to leave Prometheus' targets",
        || async {
            // db-1 listed proves Prometheus answered.
            let names: Vec<Value> = prometheus
                .targets(SD_JOB)
                .await
                .iter()
                .map(|t| t["discoveredLabels"]["__meta_muster_container_name"].clone())
                .collect();
            (names == ["db-1"]).then_some(())
        },
    )
    .await;
    eprintln!(
        "web-1 left Prometheus' targets {:?} after SIGHUP",
        removed.elapsed()
    );
    let db = prometheus
        .sd_target("db-1")
        .await
        .expect("db-1 stays a target");
    assert_eq!(
        db["discoveredLabels"]["__address__"],
        format!("{block}.61:9187")
    );
}

#[tokio::test]
async fn sd_selector_narrows_the_targets_and_a_bad_selector_is_a_400() {
    let block = loopback_block();
    let a_spec = AgentSpec::new(&block, 1, "a").with_records(&TWO_TARGETS.replace("BLOCK", &block));
    let _a = Agent::start(a_spec.clone()).await;
    let b = Agent::start(AgentSpec::new(&block, 2, "b").joining(&a_spec)).await;
    let names = |body: &str| -> Vec<String> {
        let groups: Value = serde_json::from_str(body).expect("/v1/sd answers JSON");
        let mut names: Vec<String> = groups
            .as_array()
            .expect("a JSON array of target groups")
            .iter()
            .map(|g| {
                g["labels"]["__meta_muster_container_name"]
                    .as_str()
                    .expect("a container name")
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    };
    eventually(
        Duration::from_secs(15),
        "both of a's records in b's /v1/sd",
        || async {
            let reply = http_get(&http_addr(&b), "/v1/sd").await?;
            (reply.status == 200 && names(&reply.body) == ["db-1", "web-1"]).then_some(())
        },
    )
    .await;

    for (selector, want) in [
        ("app=web", &["web-1"][..]),
        ("app!=web", &["db-1"]),
        ("app in (db,web)", &["db-1", "web-1"]),
        ("app=cache", &[]),
    ] {
        let reply = agent_get(&b, &format!("/v1/sd?selector={}", percent_encode(selector))).await;
        assert_eq!(reply.status, 200, "{selector}: {}", reply.body);
        assert!(
            reply
                .head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{selector}: {}",
            reply.head
        );
        assert_eq!(names(&reply.body), want, "{selector}: {}", reply.body);
    }
    let empty = agent_get(&b, "/v1/sd?selector=app%3Dcache").await;
    assert_eq!(empty.body.trim(), "[]");

    for bad in ["=web", "app=we b", "env in (prod"] {
        let reply = agent_get(&b, &format!("/v1/sd?selector={}", percent_encode(bad))).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.body.contains("selector"), "{bad}: {}", reply.body);
    }
}
