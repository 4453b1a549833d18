//! The naming policy judged by every agent: violations seen anywhere,
//! duplicates reported by every holder, bad policies refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::*;

const POLICY: &str = r#"
[[rule]]
name = "system-role-n"
severity = "error"
name_pattern = '[a-z][a-z0-9]*-[a-z][a-z0-9]*-[0-9]+'

[[rule]]
name = "owned"
required_labels = ["owner"]
exclude_from_dns = true
"#;

fn write_policy(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write policy");
    path
}

/// `muster violations -o json` on `agent`: (rule, name, host) triples.
pub fn violations(agent: &Agent) -> (Vec<(String, String, String)>, serde_json::Value) {
    let out = muster_cli(&["violations", "-o", "json", "--addr", &agent.grpc_addr()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut found: Vec<(String, String, String)> = json["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("rule"), s("name"), s("host"))
        })
        .collect();
    found.sort();
    (found, json)
}

/// Agent a publishing `records` and agent c joining it, both judging by
/// [`POLICY`] (the directory holding the policy file is returned to be
/// kept).
async fn judged_by_policy(records: &str) -> (Agent, Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path(), "policy.toml", POLICY);
    let policy = policy.to_str().unwrap();
    let block = loopback_block();
    let a_spec = AgentSpec::new(&block, 1, "a")
        .with_records(records)
        .with_args(&["--policy", policy]);
    let a = Agent::start(a_spec.clone()).await;
    let c = Agent::start(
        AgentSpec::new(&block, 3, "c")
            .joining(&a_spec)
            .with_args(&["--policy", policy]),
    )
    .await;
    (a, c, dir)
}

fn triple(rule: &str, name: &str, host: &str) -> (String, String, String) {
    (rule.into(), name.into(), host.into())
}

#[tokio::test]
async fn a_violation_on_one_host_is_listed_on_another_and_ends_when_fixed() {
    let good = "[[record]]\nname = \"billing-batch-1\"\naddresses = [\"10.0.0.1\"]\nlabels = { owner = \"ops\" }\n";
    let (a, c, _dir) = judged_by_policy(good).await;
    eventually(Duration::from_secs(10), "billing-batch-1 on c", || async {
        (!c.lookup("billing-batch-1").await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(violations(&c).0, []);

    // A badly named, unowned record appears on a.
    a.write_records(&format!(
        "{good}[[record]]\nname = \"billing\"\naddresses = [\"10.0.0.2\"]\n"
    ));
    let started = Instant::now();
    a.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "the violations on c", || async {
        (violations(&c).0
            == [
                triple("owned", "billing", "a"),
                triple("system-role-n", "billing", "a"),
            ])
        .then_some(())
    })
    .await;
    eprintln!(
        "violation visible on c {:?} after the reload on a",
        started.elapsed()
    );
    let (_, json) = violations(&c);
    let why: Vec<&str> = json["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["why"].as_str().unwrap())
        .collect();
    assert!(why.contains(&"label \"owner\" is missing"), "{why:?}");
    // `owned` keeps violators out of DNS, on every agent.
    assert!(
        dig(&c.spec.ip, c.dns_port(), &["+short", "billing.muster"])
            .trim()
            .is_empty()
    );
    assert_eq!(
        dig(
            &c.spec.ip,
            c.dns_port(),
            &["+short", "billing-batch-1.muster"]
        )
        .trim(),
        "10.0.0.1"
    );
    // The table names rule, record, host, why and since when.
    let table = muster_cli(&["violations", "--addr", &c.grpc_addr()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.status.code(), Some(0));
    assert!(
        text.starts_with("RULE") && text.contains("billing") && text.contains(" ago"),
        "{text}"
    );

    // Renamed to fit and given an owner: both end, on c too, with one log
    // line each for the start and the end.
    a.write_records(&format!(
        "{good}[[record]]\nname = \"billing-api-1\"\naddresses = [\"10.0.0.2\"]\nlabels = {{ owner = \"ops\" }}\n"
    ));
    a.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "no violation on c", || async {
        violations(&c).0.is_empty().then_some(())
    })
    .await;
    let none = muster_cli(&["violations", "--addr", &c.grpc_addr()]);
    assert_eq!(none.status.code(), Some(1), "exit 1: nothing found");
    let log = c.log();
    assert_eq!(log.matches("policy violation started").count(), 2, "{log}");
    assert_eq!(log.matches("policy violation ended").count(), 2, "{log}");
}

#[tokio::test]
async fn the_same_name_on_two_agents_is_a_duplicate_reported_by_both() {
    let block = loopback_block();
    let record = |ip: &str| format!("[[record]]\nname = \"web-1\"\naddresses = [\"{ip}\"]\n");
    let a_spec = AgentSpec::new(&block, 1, "a").with_records(&record("10.0.0.1"));
    let a = Agent::start(a_spec.clone()).await;
    let b = Agent::start(
        AgentSpec::new(&block, 2, "b")
            .with_records(&record("10.0.1.1"))
            .joining(&a_spec),
    )
    .await;
    let both = vec![
        triple("duplicate-name", "web-1", "a"),
        triple("duplicate-name", "web-1", "b"),
    ];
    for agent in [&a, &b] {
        eventually(Duration::from_secs(10), "the duplicate on both", || async {
            (violations(agent).0 == both).then_some(())
        })
        .await;
    }
    let (_, json) = violations(&a);
    let whys: Vec<&str> = json["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["why"].as_str().unwrap())
        .collect();
    assert!(
        whys.contains(&"name \"web-1\" is also on host b"),
        "{whys:?}"
    );
    // DNS answers every holder; <name>.<host> picks one.
    assert_eq!(
        dig_sorted(&a.spec.ip, a.dns_port(), &["web-1.muster"]),
        ["10.0.0.1", "10.0.1.1"]
    );
    assert_eq!(
        dig(&a.spec.ip, a.dns_port(), &["+short", "web-1.b.muster"]).trim(),
        "10.0.1.1"
    );
}

#[tokio::test]
async fn a_bad_policy_stops_startup_a_bad_reload_keeps_the_old_one_and_differences_show() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write_policy(
        dir.path(),
        "bad.toml",
        "[[rule]]\nname = \"shape\"\nname_pattern = '[a-z'\n",
    );
    let out = std::process::Command::new(muster_bin())
        .args(["agent", "--no-docker", "--policy", bad.to_str().unwrap()])
        .args(["--gossip-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0"])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .output()
        .expect("muster runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.toml:1: rule \"shape\": name_pattern"),
        "{stderr}"
    );

    let good = write_policy(dir.path(), "good.toml", POLICY);
    let other = write_policy(
        dir.path(),
        "other.toml",
        "[[rule]]\nname = \"owned\"\nrequired_labels = [\"team\"]\n",
    );
    let block = loopback_block();
    let a_spec = AgentSpec::new(&block, 1, "a")
        .with_records(
            "[[record]]\nname = \"x\"\naddresses = [\"10.0.0.1\"]\nlabels = { owner = \"o\" }\n",
        )
        .with_args(&["--policy", good.to_str().unwrap()]);
    let a = Agent::start(a_spec.clone()).await;
    let b = Agent::start(
        AgentSpec::new(&block, 2, "b")
            .joining(&a_spec)
            .with_args(&["--policy", other.to_str().unwrap()]),
    )
    .await;
    eventually(Duration::from_secs(10), "x judged on a", || async {
        (violations(&a).0 == [triple("system-role-n", "x", "a")]).then_some(())
    })
    .await;
    // b judges by another policy: a says so.
    eventually(Duration::from_secs(10), "the mismatch reported", || async {
        let (_, json) = violations(&a);
        let mismatched = json["mismatched_members"].as_array()?.clone();
        (mismatched.len() == 1 && mismatched[0].as_str()?.starts_with("b=")).then_some(())
    })
    .await;

    // A broken policy file on reload: the old policy stays.
    let digest = violations(&a).1["policy_digest"].clone();
    std::fs::write(&good, "[[rule]]\nname = \"shape\"\nname_patern = 'x'\n").unwrap();
    a.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "the refusal logged", || async {
        a.log().contains("naming policy not reloaded").then_some(())
    })
    .await;
    assert!(
        a.log().contains("unknown field `name_patern`"),
        "{}",
        a.log()
    );
    let (still, json) = violations(&a);
    assert_eq!(still, [triple("system-role-n", "x", "a")]);
    assert_eq!(json["policy_digest"], digest);
    drop(b);
}

#[tokio::test]
async fn a_record_a_rule_hides_is_never_answered_not_even_under_a_burst_of_changes() {
    let (a, c, _dir) = judged_by_policy("").await;
    eventually(Duration::from_secs(10), "c to see a", || async {
        (c.members().await.len() == 2).then_some(())
    })
    .await;

    // Round k publishes `shown-k-N` (owned) and `hidden-k-N` (no owner:
    // rule `owned` keeps it out of DNS). A thread asks c for round k's
    // hidden name as fast as c answers, on both of a's agents' zones.
    const ROUNDS: u32 = 30;
    let round = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (round, stop) = (round.clone(), stop.clone());
        let server = format!("{}:{}", c.spec.ip, c.dns_port());
        std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            let (mut asked, mut answered) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = round.load(std::sync::atomic::Ordering::Relaxed);
                for n in 0..3 {
                    let name = format!("hidden-{k}-{n}.muster.");
                    if let Some(ip) = resolve_a(&socket, &server, &name) {
                        answered.push(format!("{name} -> {ip}"));
                    }
                    asked += 1;
                }
            }
            (asked, answered)
        })
    };
    for k in 1..=ROUNDS {
        let mut records = String::new();
        for n in 0..3 {
            records += &format!(
                "[[record]]\nname = \"shown-{k}-{n}\"\naddresses = [\"10.7.{k}.{n}\"]\nlabels = {{ owner = \"ops\" }}\n\
                 [[record]]\nname = \"hidden-{k}-{n}\"\naddresses = [\"10.8.{k}.{n}\"]\n"
            );
        }
        round.store(k, std::sync::atomic::Ordering::Relaxed);
        a.write_records(&records);
        a.signal(libc::SIGHUP);
        // The round's change has reached c's DNS before the next.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let server = format!("{}:{}", c.spec.ip, c.dns_port());
        eventually(Duration::from_secs(10), &format!("round {k} on c"), || {
            let found = resolve_a(&socket, &server, &format!("shown-{k}-2.muster."));
            async move { found.is_some().then_some(()) }
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (asked, answered) = poller.join().unwrap();
    eprintln!("asked c for hidden names {asked} times over {ROUNDS} rounds");
    assert!(asked > 100, "the poller barely ran: {asked}");
    assert!(answered.is_empty(), "hidden names answered: {answered:?}");
    // The hidden records are in the directory all the same, and listed as
    // violations.
    assert_eq!(c.lookup(&format!("hidden-{ROUNDS}-0")).await.len(), 1);
    assert!(
        violations(&c)
            .0
            .contains(&triple("owned", &format!("hidden-{ROUNDS}-0"), "a"))
    );
}
