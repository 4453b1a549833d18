//! Docker discovery against the machine's real Docker engine: two agents
//! split the one engine with `--docker-filter`, and every container change
//! shows up in DNS and gRPC on the other agent too.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use muster_proto::v1;

use crate::docker::{Container, Network, SocketProxy, docker, ps_all, require_docker, run_id};
use crate::harness::*;

/// Two agents on the engine: `a` publishes containers labelled
/// `muster.test.host=<run>-a`, `b` those labelled `<run>-b`; `b` joins `a`.
async fn two_hosts(run: &str, a_flags: &[&str]) -> (Agent, Agent) {
    let block = loopback_block();
    let a_spec = AgentSpec::new(&block, 1, "a").with_docker(&format!("{run}-a"), a_flags);
    let a = Agent::start(a_spec.clone()).await;
    let b = Agent::start(
        AgentSpec::new(&block, 2, "b")
            .with_docker(&format!("{run}-b"), &[])
            .joining(&a_spec),
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "b to see a alive with Docker connected",
        || async {
            let members = b.members().await;
            let ok = members.len() == 2
                && members.iter().all(|m| {
                    m.liveness() == v1::Liveness::Alive
                        && m.meta.get("docker").map(String::as_str) == Some("connected")
                });
            ok.then_some(())
        },
    )
    .await;
    (a, b)
}

fn labels<'a>(run: &'a str, host: &'a str) -> Vec<(&'static str, String)> {
    vec![
        ("muster.test.host", format!("{run}-{host}")),
        ("muster.test.run", run.to_owned()),
    ]
}

fn run_container(name: &str, labels: &[(&str, String)], extra: &[&str]) -> Container {
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Container::run(name, &labels, extra, &[])
}

/// The record named `name` as `agent` sees it, if any.
async fn record(agent: &Agent, name: &str) -> Option<v1::Record> {
    agent.lookup(name).await.into_iter().next()
}

async fn wait_for_state(agent: &Agent, name: &str, state: v1::State) -> v1::Record {
    eventually(
        Duration::from_secs(15),
        &format!("{name} to be {state:?} on {}", agent.spec.name),
        || async { record(agent, name).await.filter(|r| r.state() == state) },
    )
    .await
}

fn resolves(agent: &Agent, name: &str) -> String {
    dig(
        &agent.spec.ip,
        DNS_PORT,
        &["+short", &format!("{name}.muster")],
    )
    .trim()
    .to_owned()
}

async fn wait_resolves(agent: &Agent, name: &str, want: &str) {
    eventually(
        Duration::from_secs(15),
        &format!("{name} to resolve to {want:?} on {}", agent.spec.name),
        || async { (resolves(agent, name) == want).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn container_lifecycle_is_followed_on_another_agent() {
    require_docker();
    let run = run_id();
    let (a, b) = two_hosts(&run, &[]).await;
    let a_ip = a.spec.ip.clone();
    let web = format!("web-{run}");
    let mut web_labels = labels(&run, "a");
    web_labels.push(("muster.service", format!("g{run}")));
    let mut c = run_container(&web, &web_labels, &["-p", "80"]);

    // Running on a bridge network: resolves on b to a's address.
    let r = wait_for_state(&b, &web, v1::State::Running).await;
    assert_eq!(r.host, "a");
    assert_eq!(r.image, crate::docker::IMAGE);
    assert!(r.started_at > 0);
    let bridge = r
        .addresses
        .iter()
        .find(|x| x.network == "bridge")
        .expect("bridge address");
    assert!(bridge.local, "a bridge address is local: {r:?}");
    wait_resolves(&b, &web, &a_ip).await;

    // Its published port: SRV points at the host and the host port. The
    // engine may bind IPv4 and IPv6 to different host ports, and lists
    // them in either order: SRV names one of them.
    let host_ports: Vec<String> = crate::docker::docker_ok(&["port", &c.name, "80/tcp"])
        .lines()
        .filter_map(|line| line.rsplit(':').next())
        .map(|port| format!("0 10 {} a.host.muster.", port.trim()))
        .collect();
    let srv = dig(
        &b.spec.ip,
        DNS_PORT,
        &["+short", &format!("_80._tcp.g{run}.svc.muster"), "SRV"],
    );
    assert!(
        host_ports.contains(&srv.trim().to_owned()),
        "SRV {srv:?}, published as {host_ports:?}"
    );

    // A container of b's is not published by a, and vice versa.
    let other = format!("other-{run}");
    let _o = run_container(&other, &labels(&run, "b"), &[]);
    let r = wait_for_state(&a, &other, v1::State::Running).await;
    assert_eq!(r.host, "b");

    c.stop();
    let r = wait_for_state(&b, &web, v1::State::Exited).await;
    assert!(r.finished_at > 0);
    wait_resolves(&b, &web, "").await;

    c.start();
    wait_for_state(&b, &web, v1::State::Running).await;
    wait_resolves(&b, &web, &a_ip).await;

    c.pause();
    wait_for_state(&b, &web, v1::State::Paused).await;
    wait_resolves(&b, &web, "").await;
    c.unpause();
    wait_for_state(&b, &web, v1::State::Running).await;

    let renamed = format!("api-{run}");
    c.rename(&renamed);
    wait_resolves(&b, &renamed, &a_ip).await;
    eventually(Duration::from_secs(10), "the old name to go", || async {
        record(&b, &web).await.is_none().then_some(())
    })
    .await;

    c.kill();
    wait_for_state(&b, &renamed, v1::State::Exited).await;
    c.remove();
    eventually(
        Duration::from_secs(10),
        "the removed container to leave b",
        || async { record(&b, &renamed).await.is_none().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn health_and_network_changes_are_followed() {
    require_docker();
    let run = run_id();
    let net = Network::create(&format!("net-{run}"));
    let (a, b) = two_hosts(&run, &["--routable-network", &net.name]).await;
    let name = format!("hc-{run}");
    let service = format!("svc{run}");
    let mut hc_labels = labels(&run, "a");
    hc_labels.push(("muster.service", service.clone()));
    let c = run_container(&name, &hc_labels, crate::docker::HEALTH_ARGS);
    eventually(Duration::from_secs(20), "unhealthy on b", || async {
        record(&b, &name)
            .await
            .filter(|r| r.health() == v1::Health::Unhealthy)
    })
    .await;
    // Unhealthy members leave their service group's answers (NODATA),
    // while the container's own name still resolves.
    let group = format!("{service}.svc");
    wait_resolves(&b, &name, &a.spec.ip).await;
    let nodata = dnspython(
        &b.spec.ip,
        DNS_PORT,
        &format!("{group}.muster."),
        "A",
        false,
    );
    assert_eq!(nodata["rcode"], "NOERROR", "{nodata}");
    assert_eq!(nodata["answers"], serde_json::json!([]));
    c.exec(&["touch", "/tmp/healthy"]);
    eventually(Duration::from_secs(20), "healthy on b", || async {
        record(&b, &name)
            .await
            .filter(|r| r.health() == v1::Health::Healthy)
    })
    .await;
    wait_resolves(&b, &group, &a.spec.ip).await;

    // Connected to a routable network with an alias: the container IP on
    // that network is answered, and the alias resolves too.
    let alias = format!("alias-{run}");
    net.connect(&c, &[&alias]);
    let ip = eventually(Duration::from_secs(15), "the routable IP", || async {
        c.ip(&net.name)
    })
    .await;
    wait_resolves(&b, &name, &ip).await;
    wait_resolves(&b, &alias, &ip).await;
    let r = record(&b, &name).await.unwrap();
    assert!(r.aliases.contains(&alias), "{r:?}");
    assert!(
        r.addresses
            .iter()
            .any(|x| x.network == net.name && !x.local && x.ip == ip)
    );

    net.disconnect(&c);
    wait_resolves(&b, &name, &a.spec.ip).await;
    wait_resolves(&b, &alias, "").await;
    drop(c);
}

/// The Docker status `agent` shows for the member `name`.
async fn docker_status(agent: &Agent, name: &str) -> Option<String> {
    let members = agent.members().await;
    members
        .into_iter()
        .find(|m| m.name == name)?
        .meta
        .get("docker")
        .cloned()
}

/// Names of the records of this run, as an agent lists them.
async fn listed(agent: &Agent, run: &str) -> BTreeSet<String> {
    agent
        .list(&format!("muster.test.run={run}"))
        .await
        .into_iter()
        .map(|r| r.name)
        .collect()
}

#[tokio::test]
async fn after_a_lost_engine_returns_the_directory_equals_docker_ps() {
    require_docker();
    let run = run_id();
    let block = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let mut proxy = SocketProxy::start(&socket);
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_docker(
        &format!("{run}-a"),
        &["--docker-host", &format!("unix://{}", socket.display())],
    ))
    .await;
    let b =
        Agent::start(AgentSpec::new(&block, 2, "b").joining(&AgentSpec::new(&block, 1, "a"))).await;
    let filter = format!("muster.test.run={run}");
    let mut containers: Vec<Container> = (0..3)
        .map(|i| run_container(&format!("keep{i}-{run}"), &labels(&run, "a"), &[]))
        .collect();
    eventually(Duration::from_secs(15), "three containers on b", || async {
        (listed(&b, &run).await == ps_all(&filter)).then_some(())
    })
    .await;

    proxy.stop();
    eventually(
        Duration::from_secs(15),
        "a's Docker source to be disconnected",
        || async {
            (docker_status(&b, "a").await.as_deref() == Some("disconnected")).then_some(())
        },
    )
    .await;
    // The cluster keeps serving what it knew.
    assert_eq!(listed(&b, &run).await.len(), 3);
    assert_eq!(resolves(&b, &format!("keep0-{run}")), a.spec.ip);

    // Changes while the agent cannot see the engine.
    containers.remove(0).remove();
    containers[0].stop();
    containers.push(run_container(
        &format!("new0-{run}"),
        &labels(&run, "a"),
        &[],
    ));
    containers.push(run_container(
        &format!("new1-{run}"),
        &labels(&run, "a"),
        &[],
    ));
    assert_eq!(
        listed(&b, &run).await.len(),
        3,
        "nothing changes while away"
    );

    proxy.restart();
    let want = ps_all(&filter);
    assert_eq!(want.len(), 4);
    eventually(
        Duration::from_secs(20),
        "the directory to equal docker ps -a",
        || async { (listed(&b, &run).await == want).then_some(()) },
    )
    .await;
    let stopped = record(&b, &format!("keep1-{run}")).await.unwrap();
    assert_eq!(stopped.state(), v1::State::Exited);
    // The status is a key of its own, gossiped apart from the records and
    // shown in the member list at b's next look at every host (once a
    // round): it follows the records, not with them.
    eventually(
        Duration::from_secs(5),
        "a's Docker source to be connected again",
        || async { (docker_status(&b, "a").await.as_deref() == Some("connected")).then_some(()) },
    )
    .await;
    assert!(
        a.log().contains("Docker source disconnected"),
        "{}",
        a.log()
    );
}

#[tokio::test]
async fn a_burst_of_200_containers_is_exact_within_10_seconds() {
    require_docker();
    let run = run_id();
    let (a, b) = two_hosts(&run, &[]).await;
    let filter = format!("muster.test.run={run}");
    let names: Vec<String> = (0..200).map(|i| format!("burst{i}-{run}")).collect();
    let host_label = format!("{run}-a");

    // Start them eight at a time, as fast as the engine takes them.
    let mut started = Vec::new();
    for chunk in names.chunks(8) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|name| {
                let (name, host_label, run) = (name.clone(), host_label.clone(), run.clone());
                std::thread::spawn(move || {
                    Container::run(
                        &name,
                        &[("muster.test.host", &host_label), ("muster.test.run", &run)],
                        &[],
                        &[],
                    )
                })
            })
            .collect();
        started.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("docker run thread")),
        );
    }
    let burst_end = Instant::now();
    let want = ps_all(&filter);
    assert_eq!(want.len(), 200);
    eventually(
        Duration::from_secs(10),
        "200 containers listed on b",
        || async { (listed(&b, &run).await == want).then_some(()) },
    )
    .await;
    eprintln!(
        "start burst: exact on b {:?} after the last docker run",
        burst_end.elapsed()
    );

    // Remove them ten at a time (the engine dislikes a hundred at once).
    let ids: Vec<String> = started.iter().map(|c| c.id.clone()).collect();
    for chunk in ids.chunks(10) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk.iter().map(String::as_str));
        assert!(docker(&args).status.success());
    }
    let burst_end = Instant::now();
    eventually(
        Duration::from_secs(10),
        "no container listed on b",
        || async { listed(&b, &run).await.is_empty().then_some(()) },
    )
    .await;
    eprintln!(
        "remove burst: exact on b {:?} after the last docker rm",
        burst_end.elapsed()
    );
    drop(started);
    drop(a);
}

/// A Compose project, taken down (containers and network) when dropped.
struct ComposeProject {
    dir: tempfile::TempDir,
    name: String,
}

impl ComposeProject {
    fn up(name: &str, yaml: &str) -> ComposeProject {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("docker-compose.yml"), yaml).expect("write compose file");
        let project = ComposeProject {
            dir,
            name: name.to_owned(),
        };
        let out = project.compose(&["up", "-d"]);
        assert!(
            out.status.success(),
            "docker-compose up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        project
    }

    fn compose(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("timeout")
            .args(["120", "docker-compose", "--no-ansi", "-p", &self.name])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("docker-compose is installed")
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-t", "1"]);
    }
}

#[tokio::test]
async fn compose_services_resolve_as_groups_and_by_network_alias() {
    require_docker();
    let run = run_id();
    let project = format!("mt{run}");
    let network = format!("{project}_default");
    let (_a, b) = two_hosts(&run, &["--routable-network", &network]).await;
    let _compose = ComposeProject::up(
        &project,
        &format!(
            r#"version: "2.4"
services:
  web:
    image: {image}
    command: ["/bin/sleep", "3600"]
    scale: 2
    labels:
      muster.test: "1"
      muster.test.host: "{run}-a"
      muster.test.run: "{run}"
networks:
  default:
    labels:
      muster.test: "1"
"#,
            image = crate::docker::IMAGE
        ),
    );
    let ips: BTreeSet<String> = ["1", "2"]
        .iter()
        .map(|i| {
            crate::docker::docker_ok(&[
                "inspect",
                "-f",
                &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
                &format!("{project}_web_{i}"),
            ])
        })
        .collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    let answers = |name: &str| -> BTreeSet<String> {
        dig(&b.spec.ip, DNS_PORT, &["+short", &format!("{name}.muster")])
            .lines()
            .map(str::to_owned)
            .collect()
    };
    // Each replica by its own name (`mtX_web_1` maps to `mtx-web-1`)...
    let first = format!("{project}-web-1").to_lowercase();
    eventually(
        Duration::from_secs(20),
        "the first replica by name",
        || async { (answers(&first).len() == 1).then_some(()) },
    )
    .await;
    // ... the service group, and the network alias Compose gives both.
    eventually(Duration::from_secs(20), "the service group", || async {
        (answers("web.svc") == ips).then_some(())
    })
    .await;
    assert_eq!(answers("web"), ips);
    let r = record(&b, &first).await.expect("record");
    assert_eq!(r.labels["com.docker.compose.service"], "web");
    assert!(r.aliases.contains(&"web".to_owned()), "{r:?}");
}
