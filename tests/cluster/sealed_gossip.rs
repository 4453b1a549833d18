//! Sealed gossip between real agents: a key file shared by the cluster, an
//! impersonator without it, datagrams captured and replayed, a key rotation
//! done by SIGHUP in three steps, and the checks on the key file and the
//! gossip address at start.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_proto::v1;
use tokio::net::UdpSocket;

use crate::harness::*;
use crate::netns::{keygen, write_keys};

const AUTH: &str = "muster_gossip_rejected_total{reason=\"auth\"}";
const REPLAY: &str = "muster_gossip_rejected_total{reason=\"replay\"}";

/// Agent `index` of `block`, named `name`, sealing with the key file `key`
/// (none: in the clear, which loopback allows).
fn spec(block: &str, index: u8, name: &str, key: Option<&std::path::Path>) -> AgentSpec {
    let spec = AgentSpec::new(block, index, name);
    match key {
        Some(path) => spec.with_args(&["--gossip-key-file", &path.to_string_lossy()]),
        None => spec,
    }
}

fn web_records(ip: &str) -> String {
    format!("[[record]]\nname = \"web-1\"\naddresses = [\"{ip}\"]\n")
}

/// Every poll for `period`, `check` holds on each agent.
async fn throughout(what: &str, period: Duration, agents: &[&Agent], check: impl AsyncCheck) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        for agent in agents {
            if let Err(why) = check.check(agent).await {
                panic!("{what}: on {}: {why}", agent.spec.name);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A check run against one agent.
trait AsyncCheck {
    async fn check(&self, agent: &Agent) -> Result<(), String>;
}

/// `web-1` answers 10.0.0.5 alone over DNS, `billing-db` nothing, and the
/// agent knows one `a`.
struct TheTruth;

impl AsyncCheck for TheTruth {
    async fn check(&self, agent: &Agent) -> Result<(), String> {
        FirstKeeps.check(agent).await?;
        let named_a = agent
            .members()
            .await
            .into_iter()
            .filter(|m| m.name == "a")
            .count();
        if named_a != 1 {
            return Err(format!("{named_a} members named a"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn an_agent_without_the_key_or_with_another_one_can_neither_learn_nor_inject_records() {
    let block = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gossip.key");
    write_keys(&key, &[keygen()]);
    let a =
        Agent::start(spec(&block, 1, "a", Some(&key)).with_records(&web_records("10.0.0.5"))).await;
    let b = Agent::start(spec(&block, 2, "b", Some(&key)).joining(&a.spec)).await;
    let c = Agent::start(spec(&block, 3, "c", Some(&key)).joining(&a.spec)).await;
    for agent in [&a, &b, &c] {
        eventually(Duration::from_secs(10), "web-1 everywhere", || async {
            (agent.lookup("web-1").await.len() == 1).then_some(())
        })
        .await;
    }

    // The attack of the issue: another process calls itself `a`, names
    // web-1 and billing-db, and joins b; once without a key, once with a
    // key of its own.
    let forged =
        web_records("6.6.6.6") + "[[record]]\nname = \"billing-db\"\naddresses = [\"6.6.6.7\"]\n";
    let other_key = dir.path().join("other.key");
    write_keys(&other_key, &[keygen()]);
    let plain = Agent::start(
        spec(&block, 4, "a", None)
            .joining(&b.spec)
            .with_records(&forged),
    )
    .await;
    // A keyed agent whose only seed is the unkeyed one gossips to it every
    // round: the unkeyed one hears sealed datagrams, and says why it drops
    // them (as b says why it drops the unkeyed one's).
    let lonely = Agent::start(spec(&block, 6, "d", Some(&key)).joining(&plain.spec)).await;
    let keyed = Agent::start(
        spec(&block, 5, "a", Some(&other_key))
            .joining(&b.spec)
            .with_records(&forged),
    )
    .await;

    throughout(
        "the cluster keeps the truth",
        Duration::from_secs(4),
        &[&a, &b, &c],
        TheTruth,
    )
    .await;
    for intruder in [&plain, &keyed] {
        let web: Vec<String> = intruder
            .lookup("web-1")
            .await
            .iter()
            .flat_map(|r| r.addresses.iter().map(|a| a.ip.clone()))
            .collect();
        assert_eq!(web, ["6.6.6.6"], "the intruder learnt nothing");
        assert_eq!(intruder.members().await.len(), 1, "the intruder met no one");
    }
    assert!(
        metric(&b, AUTH).await.unwrap() > 0.0,
        "b counted the intruders"
    );
    let logs = b.log();
    assert!(logs.contains("not sealed"), "b says why: {logs}");
    assert!(
        logs.contains("sealed with a key not in this agent's key file"),
        "{logs}"
    );
    let plain_log = eventually(
        Duration::from_secs(5),
        "the unkeyed agent says why",
        || async {
            let log = plain.log();
            log.contains("this agent has no gossip key").then_some(log)
        },
    )
    .await;
    assert_eq!(lonely.members().await.len(), 1, "it met no one");
    assert!(
        plain_log.matches("GOSSIP IS NOT ENCRYPTED").count() == 1,
        "one loud warning at start: {plain_log}"
    );
}

/// Forwards datagrams between `client` (which is given the relay's first
/// socket as its seed) and `server`, keeping a copy of each: what a
/// listener on the wire would capture.
struct Relay {
    seed: std::net::SocketAddr,
    to_server: Arc<Mutex<Vec<Vec<u8>>>>,
    to_client: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(ip: &str, server: std::net::SocketAddr) -> Relay {
        let front = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
        let back = UdpSocket::bind(format!("{ip}:0")).await.unwrap();
        let seed = front.local_addr().unwrap();
        let to_server = Arc::new(Mutex::new(Vec::new()));
        let to_client = Arc::new(Mutex::new(Vec::new()));
        let (up, down) = (to_server.clone(), to_client.clone());
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut a, mut b) = (vec![0u8; 65_536], vec![0u8; 65_536]);
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut a) => {
                        client = Some(from);
                        up.lock().unwrap().push(a[..n].to_vec());
                        let _ = back.send_to(&a[..n], server).await;
                    }
                    Ok((n, _)) = back.recv_from(&mut b) => {
                        down.lock().unwrap().push(b[..n].to_vec());
                        if let Some(client) = client {
                            let _ = front.send_to(&b[..n], client).await;
                        }
                    }
                }
            }
        });
        Relay {
            seed,
            to_server,
            to_client,
            task,
        }
    }
}

#[tokio::test]
async fn a_replayed_datagram_changes_nothing_and_is_counted() {
    let block = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gossip.key");
    write_keys(&key, &[keygen()]);
    let a = Agent::start(spec(&block, 1, "a", Some(&key))).await;
    let b = Agent::start(spec(&block, 2, "b", Some(&key)).joining(&a.spec)).await;
    let relay = Relay::start(&format!("{block}.9"), b.spec.gossip_addr().parse().unwrap()).await;
    // c reaches b through the relay first, with its records as they were.
    let mut c_spec = spec(&block, 3, "c", Some(&key)).with_records(&web_records("10.0.0.5"));
    c_spec.join.push(relay.seed.to_string());
    let c = Agent::start(c_spec).await;
    for agent in [&a, &b] {
        eventually(Duration::from_secs(10), "c's web-1 everywhere", || async {
            (agent.lookup("web-1").await.len() == 1).then_some(())
        })
        .await;
    }
    eventually(Duration::from_secs(10), "datagrams both ways", || async {
        let both = relay.to_server.lock().unwrap().len() >= 3
            && relay.to_client.lock().unwrap().len() >= 3;
        both.then_some(())
    })
    .await;
    relay.task.abort();
    let from_c: Vec<Vec<u8>> = relay.to_server.lock().unwrap().clone();
    let to_c: Vec<Vec<u8>> = relay.to_client.lock().unwrap().clone();
    let distinct: HashSet<&Vec<u8>> = from_c.iter().chain(&to_c).collect();
    assert_eq!(
        distinct.len(),
        from_c.len() + to_c.len(),
        "every datagram differs"
    );

    // c moves web-1; the captured datagrams carry its old state.
    c.write_records(&web_records("10.0.0.6"));
    c.signal(libc::SIGHUP);
    for agent in [&a, &b, &c] {
        eventually(
            Duration::from_secs(10),
            "web-1 moved everywhere",
            || async {
                let r = agent.lookup("web-1").await;
                (r.len() == 1 && r[0].addresses[0].ip == "10.0.0.6").then_some(())
            },
        )
        .await;
    }

    let replayer = UdpSocket::bind(format!("{block}.10:0")).await.unwrap();
    for round in 0..2 {
        let (b_before, a_before) = (
            metric(&b, REPLAY).await.unwrap(),
            metric(&a, REPLAY).await.unwrap(),
        );
        // What c sent b, to b again: every counter was seen.
        for datagram in &from_c {
            replayer
                .send_to(datagram, b.spec.gossip_addr())
                .await
                .unwrap();
        }
        // What b answered c, to a: addressed to c's run, not a's.
        for datagram in &to_c {
            replayer
                .send_to(datagram, a.spec.gossip_addr())
                .await
                .unwrap();
        }
        let (want_b, want_a) = (b_before + from_c.len() as f64, a_before + to_c.len() as f64);
        eventually(Duration::from_secs(5), "every replay counted", || async {
            let counted = metric(&b, REPLAY).await.unwrap() == want_b
                && metric(&a, REPLAY).await.unwrap() == want_a;
            counted.then_some(())
        })
        .await;
        for agent in [&a, &b, &c] {
            let r = agent.lookup("web-1").await;
            assert_eq!(r.len(), 1, "round {round}");
            assert_eq!(
                r[0].addresses[0].ip, "10.0.0.6",
                "round {round}: nothing rolled back"
            );
        }
        assert!(
            agent_members_alive(&[&a, &b, &c]).await,
            "round {round}: every member alive"
        );
        // Later, once the windows have moved on.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(metric(&b, AUTH).await.unwrap(), 0.0, "replays authenticate");
}

async fn agent_members_alive(agents: &[&Agent]) -> bool {
    for agent in agents {
        let members = agent.members().await;
        if members.len() != agents.len()
            || members
                .iter()
                .any(|m| m.liveness != v1::Liveness::Alive as i32)
        {
            return false;
        }
    }
    true
}

/// Every agent sees every member alive.
struct AllAlive(usize);

impl AsyncCheck for AllAlive {
    async fn check(&self, agent: &Agent) -> Result<(), String> {
        let members = agent.members().await;
        let alive = members
            .iter()
            .filter(|m| m.liveness == v1::Liveness::Alive as i32)
            .count();
        if members.len() != self.0 || alive != self.0 {
            let seen: Vec<_> = members.iter().map(|m| (&m.name, m.liveness)).collect();
            return Err(format!("members {seen:?}"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_key_rotation_in_three_steps_by_sighup_loses_no_member_and_no_change() {
    let block = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (keygen(), keygen());
    let names = ["a", "b", "c"];
    let files: Vec<_> = names
        .iter()
        .map(|n| dir.path().join(format!("{n}.key")))
        .collect();
    let mut agents: Vec<Agent> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        write_keys(&files[i], std::slice::from_ref(&old));
        let mut s =
            spec(&block, i as u8 + 1, name, Some(&files[i])).with_records(&web_records("10.0.1.0"));
        if i > 0 {
            s = s.joining(&agents[0].spec);
        }
        agents.push(Agent::start(s).await);
    }
    let all: Vec<&Agent> = agents.iter().collect();
    eventually(Duration::from_secs(10), "three members alive", || async {
        agent_members_alive(&all).await.then_some(())
    })
    .await;

    let steps = [
        ("add the new key second", vec![old.clone(), new.clone()]),
        ("move it first", vec![new.clone(), old.clone()]),
        ("remove the old one", vec![new.clone()]),
    ];
    for (step, (what, keys)) in steps.iter().enumerate() {
        for (i, agent) in agents.iter().enumerate() {
            write_keys(&files[i], keys);
            agent.signal(libc::SIGHUP);
            // Mixed keyrings, the normal state mid-step, for a while.
            throughout(what, Duration::from_millis(700), &all, AllAlive(3)).await;
        }
        // The keys every agent now uses, primary first.
        for agent in &agents {
            let primary = format!(
                "muster_gossip_key_info{{id=\"{}\",primary=\"true\"}}",
                key_id(&keys[0])
            );
            assert_eq!(
                metric(agent, &primary).await,
                Some(1.0),
                "{what}: on {}",
                agent.spec.name
            );
        }
        // A change on one agent still reaches every other.
        let ip = format!("10.0.1.{}", step + 1);
        let changer = &agents[step];
        changer.write_records(&format!(
            "[[record]]\nname = \"web-1\"\naddresses = [\"{ip}\"]\n"
        ));
        changer.signal(libc::SIGHUP);
        for agent in &agents {
            eventually(Duration::from_secs(10), what, || async {
                let moved = agent
                    .lookup("web-1")
                    .await
                    .iter()
                    .any(|r| r.host == changer.spec.name && r.addresses[0].ip == ip);
                moved.then_some(())
            })
            .await;
        }
        throughout(what, Duration::from_millis(500), &all, AllAlive(3)).await;
    }
    for agent in &agents {
        assert_eq!(
            metric(agent, AUTH).await,
            Some(0.0),
            "on {}",
            agent.spec.name
        );
    }
}

/// The id logs and `muster_gossip_key_info` name `key` by.
fn key_id(key: &str) -> String {
    muster_gossip::Keyring::parse(key)
        .expect("a key")
        .ids()
        .remove(0)
}

#[tokio::test]
async fn a_bad_key_file_stops_start_up_and_a_bad_reload_keeps_the_keys_in_use() {
    let block = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gossip.key");
    std::fs::write(&key, format!("# ours\n{}\nnot-a-key\n", keygen())).unwrap();
    let out = std::process::Command::new(muster_bin())
        .args(["agent", "--no-docker", "--node-name", "a"])
        .args(["--gossip-addr", &format!("{block}.1:{GOSSIP_PORT}")])
        .args(["--dns-addr", &format!("{block}.1:{DNS_PORT}")])
        .args(["--grpc-addr", &format!("{block}.1:{GRPC_PORT}")])
        .args(["--http-addr", &format!("{block}.1:{HTTP_PORT}")])
        .arg("--gossip-key-file")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3: not a key", key.display())),
        "{stderr}"
    );

    let good = keygen();
    write_keys(&key, std::slice::from_ref(&good));
    let a = Agent::start(spec(&block, 1, "a", Some(&key))).await;
    let b = Agent::start(spec(&block, 2, "b", Some(&key)).joining(&a.spec)).await;
    eventually(Duration::from_secs(10), "a and b alive", || async {
        agent_members_alive(&[&a, &b]).await.then_some(())
    })
    .await;
    let series = format!(
        "muster_gossip_key_info{{id=\"{}\",primary=\"true\"}}",
        key_id(&good)
    );
    assert_eq!(metric(&a, &series).await, Some(1.0));
    std::fs::write(&key, "").unwrap();
    a.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), "the refusal logged", || async {
        a.log().contains("gossip keys not reloaded").then_some(())
    })
    .await;
    assert!(a.log().contains("holds no key"), "{}", a.log());
    assert_eq!(metric(&a, &series).await, Some(1.0), "the old key stays");
    throughout(
        "still one cluster",
        Duration::from_secs(1),
        &[&a, &b],
        AllAlive(2),
    )
    .await;
}

#[tokio::test]
async fn gossip_off_loopback_needs_a_key_or_an_explicit_insecure_flag() {
    let block = loopback_block();
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(muster_bin());
        cmd.args(["agent", "--no-docker", "--node-name", "a"])
            .args(["--gossip-addr", "0.0.0.0:0"])
            .args(["--advertise-addr", &format!("{block}.1:{GOSSIP_PORT}")])
            .args(["--dns-addr", &format!("{block}.1:{DNS_PORT}")])
            .args(["--grpc-addr", &format!("{block}.1:{GRPC_PORT}")])
            .args(["--http-addr", &format!("{block}.1:{HTTP_PORT}")])
            .args(extra);
        cmd
    };
    let out = run(&[]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for hint in [
        "not a loopback address",
        "muster keygen",
        "--gossip-key-file",
        "--insecure-gossip",
    ] {
        assert!(stderr.contains(hint), "{hint:?} in {stderr}");
    }

    // With the flag it starts, and says loudly, once, what that means.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = run(&["--insecure-gossip"])
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let started = eventually(Duration::from_secs(10), "the agent started", || async {
        let text = std::fs::read_to_string(log.path()).unwrap();
        text.contains("muster agent started").then_some(text)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        started.matches("GOSSIP IS NOT ENCRYPTED").count(),
        1,
        "{started}"
    );
}

#[tokio::test]
async fn two_running_agents_with_one_node_name_are_a_conflict_and_the_first_keeps_its_records() {
    let block = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gossip.key");
    write_keys(&key, &[keygen()]);
    let a =
        Agent::start(spec(&block, 1, "a", Some(&key)).with_records(&web_records("10.0.0.5"))).await;
    let b = Agent::start(spec(&block, 2, "b", Some(&key)).joining(&a.spec)).await;
    eventually(
        Duration::from_secs(10),
        "web-1 on b, a and b alive",
        || async {
            let settled =
                b.lookup("web-1").await.len() == 1 && agent_members_alive(&[&a, &b]).await;
            settled.then_some(())
        },
    )
    .await;

    // A clone of a (same name, same key, another address) starts later.
    let forged =
        web_records("6.6.6.6") + "[[record]]\nname = \"billing-db\"\naddresses = [\"6.6.6.7\"]\n";
    let mut clone = Agent::start(
        spec(&block, 3, "a", Some(&key))
            .joining(&b.spec)
            .with_records(&forged),
    )
    .await;
    let everyone = [&a, &b, &clone];
    // The agents that ran before the clone never serve its records; the
    // clone itself serves a's once it has heard a's heartbeat move (a gossip
    // round or two), and from then on every agent makes the same choice.
    eventually(
        Duration::from_secs(5),
        "the clone serves a's records",
        || async { FirstKeeps.check(&clone).await.ok() },
    )
    .await;
    throughout(
        "the first keeps its records",
        Duration::from_secs(3),
        &everyone,
        FirstKeeps,
    )
    .await;
    for agent in everyone {
        eventually(
            Duration::from_secs(10),
            "a conflict on every agent",
            || async {
                let claimants: Vec<v1::Member> = agent
                    .members()
                    .await
                    .into_iter()
                    .filter(|m| m.name == "a")
                    .collect();
                let both = claimants.len() == 2
                    && claimants
                        .iter()
                        .all(|m| m.liveness == v1::Liveness::Conflict as i32);
                both.then_some(())
            },
        )
        .await;
    }
    for agent in everyone {
        let members = agent.members().await;
        let serving: Vec<&v1::Member> = members
            .iter()
            .filter(|m| m.name == "a" && m.visible)
            .collect();
        assert_eq!(serving.len(), 1, "on {}", agent.spec.name);
        assert_eq!(
            serving[0].gossip_addr,
            a.spec.gossip_addr(),
            "on {}",
            agent.spec.name
        );
        eventually(
            Duration::from_secs(10),
            "a duplicate-node violation",
            || async {
                let (found, _) = crate::policy::violations(agent);
                found
                    .contains(&("duplicate-node".into(), "a".into(), "a".into()))
                    .then_some(())
            },
        )
        .await;
    }
    assert!(
        b.log().contains("two running agents claim one node name"),
        "{}",
        b.log()
    );

    // The clone stops: once the failure detector calls it dead, the
    // conflict is over, and a's records never moved.
    clone.kill();
    for agent in [&a, &b] {
        eventually(Duration::from_secs(20), "the conflict over", || async {
            let (found, _) = crate::policy::violations(agent);
            let members = agent.members().await;
            let over = !found.iter().any(|v| v.0 == "duplicate-node")
                && members.iter().filter(|m| m.name == "a").count() == 1;
            over.then_some(())
        })
        .await;
        FirstKeeps.check(agent).await.unwrap();
    }
}

/// `web-1` answers a's address (10.0.0.5) alone over DNS, `billing-db`
/// nothing.
struct FirstKeeps;

impl AsyncCheck for FirstKeeps {
    async fn check(&self, agent: &Agent) -> Result<(), String> {
        let socket = std::net::UdpSocket::bind(format!("{}:0", agent.spec.ip)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let server = format!("{}:{DNS_PORT}", agent.spec.ip);
        let web = ask_a(&socket, &server, "web-1.muster");
        if web != Answered::A(vec!["10.0.0.5".into()]) {
            return Err(format!("web-1 answers {web:?}"));
        }
        let billing = ask_a(&socket, &server, "billing-db.muster");
        if billing != Answered::A(vec![]) {
            return Err(format!("billing-db answers {billing:?}"));
        }
        Ok(())
    }
}
