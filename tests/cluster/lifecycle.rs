//! Agents die, restart and reload: the directory follows, with no ghosts
//! and no duplicates.

use std::time::{Duration, Instant};

use muster_proto::v1;

use crate::directory::{WEB_RECORDS, three_agents};
use crate::harness::*;

#[tokio::test]
async fn killed_agent_records_leave_dns_after_the_grace_and_return_once_on_restart() {
    let (mut a, _b, c) = three_agents(WEB_RECORDS).await;
    let ip = c.spec.ip.clone();
    let port = c.dns_port();
    eventually(Duration::from_secs(10), "web-1 resolves on c", || async {
        (dig(&ip, port, &["+short", "web-1.muster"]).trim() == "10.0.0.5").then_some(())
    })
    .await;
    let first_generation = c
        .members()
        .await
        .into_iter()
        .find(|m| m.name == "a")
        .unwrap()
        .generation;

    a.kill();
    let killed = Instant::now();
    eventually(
        Duration::from_secs(20),
        "web-1 to leave c's DNS",
        || async {
            dig(&ip, port, &["+short", "web-1.muster"])
                .trim()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    // The grace is 1 s on top of the failure detector: never sooner.
    assert!(
        killed.elapsed() >= Duration::from_secs(1),
        "gone after {:?}",
        killed.elapsed()
    );
    let nx = dnspython(&ip, port, "web-1.muster.", "A", false);
    assert_eq!(nx["rcode"], "NXDOMAIN");
    assert!(c.lookup("web-1").await.is_empty());
    let a_member = c
        .members()
        .await
        .into_iter()
        .find(|m| m.name == "a")
        .unwrap();
    assert_eq!(a_member.liveness(), v1::Liveness::Dead);
    assert!(!a_member.visible);

    a.restart().await;
    let records = eventually(Duration::from_secs(15), "web-1 back on c", || async {
        let r = c.lookup("web-1").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(records.len(), 1, "exactly once: {records:?}");
    assert_eq!(
        dig(&ip, port, &["+short", "web-1.muster"]).trim(),
        "10.0.0.5"
    );
    let a_member = eventually(Duration::from_secs(10), "a alive again on c", || async {
        let members = c.members().await;
        let a_members: Vec<_> = members.into_iter().filter(|m| m.name == "a").collect();
        assert_eq!(a_members.len(), 1, "one member a: {a_members:?}");
        (a_members[0].liveness() == v1::Liveness::Alive).then(|| a_members[0].clone())
    })
    .await;
    assert!(a_member.generation > first_generation);
    let all = c.list("").await;
    assert_eq!(all.len(), 2, "no duplicates: {all:?}");
}

#[tokio::test]
async fn sighup_reload_adds_changes_and_removes_records_on_other_agents() {
    let (a, _b, c) = three_agents(WEB_RECORDS).await;
    eventually(Duration::from_secs(10), "db-1 on c", || async {
        (!c.lookup("db-1").await.is_empty()).then_some(())
    })
    .await;

    // web-1 changes address, db-1 goes, cache-1 comes.
    a.write_records(
        r#"
[[record]]
name = "web-1"
addresses = ["10.0.0.50"]
labels = { app = "web", env = "prod" }

[[record]]
name = "cache-1"
addresses = ["10.0.0.7"]
"#,
    );
    a.signal(libc::SIGHUP);
    let ip = c.spec.ip.clone();
    let port = c.dns_port();
    eventually(Duration::from_secs(10), "the reloaded set on c", || async {
        let web = dig(&ip, port, &["+short", "web-1.muster"]);
        let cache = dig(&ip, port, &["+short", "cache-1.muster"]);
        let db = dig(&ip, port, &["+short", "db-1.muster"]);
        (web.trim() == "10.0.0.50" && cache.trim() == "10.0.0.7" && db.trim().is_empty())
            .then_some(())
    })
    .await;
    assert!(c.lookup("db-1").await.is_empty());
}

#[tokio::test]
async fn a_bad_reload_keeps_the_last_good_set_and_says_why() {
    let block = loopback_block();
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(WEB_RECORDS)).await;
    eventually(Duration::from_secs(10), "web-1 served", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    a.write_records("[[record]]\nname = \"web-1\"\naddresses = [\"not-an-ip\"]\n");
    a.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "the reload error in the log",
        || async {
            let log = a.log();
            (log.contains("records.toml:1")
                && log.contains("not-an-ip")
                && log.contains("keeping the last good set"))
            .then_some(())
        },
    )
    .await;
    assert_eq!(a.lookup("web-1").await.len(), 1);
    assert_eq!(a.lookup("db-1").await.len(), 1);
}

#[tokio::test]
async fn sigterm_stops_the_agent_promptly_and_cleanly() {
    let block = loopback_block();
    let mut a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(WEB_RECORDS)).await;
    eventually(Duration::from_secs(10), "web-1 served", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    a.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.is_running() {
        assert!(
            Instant::now() < deadline,
            "the agent did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.log().contains("stopped"), "{}", a.log());
}
