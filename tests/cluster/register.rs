//! Self-registration: a record registered over gRPC (or with `muster
//! register`) on agent a resolves over DNS on agent c, lives while it is
//! kept alive, lapses after its TTL without keep-alives, and leaves with
//! its agent.

use std::process::Stdio;
use std::time::{Duration, Instant};

use muster_proto::v1;
use tonic::Code;

use crate::directory::{WEB_RECORDS, three_agents};
use crate::harness::*;

/// A request for `name` at `ip`, labelled `role=monitor`.
fn request(name: &str, ip: &str, ttl_seconds: u32) -> v1::RegisterRequest {
    v1::RegisterRequest {
        record: Some(v1::Record {
            name: name.to_owned(),
            addresses: vec![v1::Address {
                ip: ip.to_owned(),
                ..Default::default()
            }],
            labels: [("role".to_owned(), "monitor".to_owned())].into(),
            ..Default::default()
        }),
        ttl_seconds,
    }
}

/// `dig +short NAME.muster` on `agent`.
fn resolve(agent: &Agent, name: &str) -> Vec<String> {
    dig_sorted(
        &agent.spec.ip,
        agent.dns_port(),
        &[&format!("{name}.muster"), "A"],
    )
}

async fn resolves_on(agent: &Agent, name: &str, ip: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("{name} to resolve to {ip} on {}", agent.spec.name),
        || async { (resolve(agent, name) == [ip]).then_some(()) },
    )
    .await;
}

async fn gone_from(agent: &Agent, name: &str, within: Duration) {
    eventually(
        within,
        &format!("{name} to leave {}'s DNS", agent.spec.name),
        || async { resolve(agent, name).is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_registration_resolves_elsewhere_lives_while_kept_alive_and_lapses_after_its_ttl() {
    let (a, _b, c) = three_agents(WEB_RECORDS).await;
    let mut client = a.client().await;
    let registered = Instant::now();
    let response = client
        .register(request("mon-1", "10.9.0.1", 2))
        .await
        .expect("register")
        .into_inner();
    let record = response.record.expect("the published record");
    assert_eq!(record.id, "reg:mon-1");
    assert_eq!(record.host, "a");
    assert_eq!(record.source(), v1::Source::Registered);
    assert!(response.conflicts.is_empty(), "{:?}", response.conflicts);

    resolves_on(&c, "mon-1", "10.9.0.1").await;
    let on_c = c.lookup("mon-1").await;
    assert_eq!(on_c.len(), 1);
    assert_eq!(on_c[0].labels["role"], "monitor");
    assert_eq!(on_c[0].source(), v1::Source::Registered);

    // Kept alive well past its 2 s TTL, it stays.
    while registered.elapsed() < Duration::from_secs(5) {
        let kept = client
            .keep_alive(v1::KeepAliveRequest {
                id: "mon-1".into(),
                ttl_seconds: 0,
            })
            .await
            .expect("keep-alive")
            .into_inner();
        assert!(kept.expires_at_ms > 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(resolve(&c, "mon-1"), ["10.9.0.1"]);

    // Left alone, it lapses and leaves c, and a no longer knows it.
    let last_keep_alive = Instant::now();
    gone_from(&c, "mon-1", Duration::from_secs(15)).await;
    assert!(
        last_keep_alive.elapsed() >= Duration::from_secs(1),
        "gone {:?} after the last keep-alive, before its 2 s TTL",
        last_keep_alive.elapsed()
    );
    let status = client
        .keep_alive(v1::KeepAliveRequest {
            id: "mon-1".into(),
            ttl_seconds: 0,
        })
        .await
        .expect_err("lapsed");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn bad_registrations_are_invalid_argument_and_unknown_ids_not_found() {
    let a = Agent::start(AgentSpec::new(&loopback_block(), 1, "a")).await;
    let mut client = a.client().await;
    let mut no_address = request("mon-1", "10.9.0.1", 30);
    no_address
        .record
        .as_mut()
        .expect("record")
        .addresses
        .clear();
    for (bad, field) in [
        (request("mon_1", "10.9.0.1", 30), "record.name"),
        (no_address, "record.addresses"),
        (request("mon-1", "10.9.0.1", 0), "ttl_seconds"),
    ] {
        let status = client.register(bad).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(field),
            "{field} not named first: {}",
            status.message()
        );
    }
    let status = client
        .keep_alive(v1::KeepAliveRequest {
            id: "never-registered".into(),
            ttl_seconds: 0,
        })
        .await
        .expect_err("unknown id");
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .deregister(v1::DeregisterRequest {
            id: "never-registered".into(),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(status.code(), Code::NotFound);
    // Nothing bad was published.
    assert!(a.list("").await.is_empty());
}

#[tokio::test]
async fn a_registration_under_a_static_records_name_reports_the_conflict_and_both_resolve() {
    let (a, b, c) = three_agents(WEB_RECORDS).await;
    eventually(Duration::from_secs(10), "web-1 on b", || async {
        (!b.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    let response = b
        .client()
        .await
        .register(request("web-1", "10.9.0.2", 30))
        .await
        .expect("a conflicting name is accepted")
        .into_inner();
    let conflicts: Vec<(String, String, v1::Source)> = response
        .conflicts
        .iter()
        .map(|r| (r.id.clone(), r.host.clone(), r.source()))
        .collect();
    assert_eq!(
        conflicts,
        [("web-1".to_owned(), "a".to_owned(), v1::Source::Static)]
    );
    // Reported, not merged: the static record is untouched and both
    // answer for the name.
    eventually(Duration::from_secs(10), "both web-1 on c", || async {
        (resolve(&c, "web-1") == ["10.0.0.5", "10.9.0.2"]).then_some(())
    })
    .await;
    assert_eq!(a.lookup("web-1").await.len(), 2);
}

#[tokio::test]
async fn a_registration_leaves_the_cluster_when_its_agent_is_killed() {
    let (mut a, _b, c) = three_agents("").await;
    a.client()
        .await
        .register(request("mon-1", "10.9.0.3", 3600))
        .await
        .expect("register");
    resolves_on(&c, "mon-1", "10.9.0.3").await;
    a.kill();
    // Failure detection plus the harness's 1 s dead grace; the TTL (an
    // hour) plays no part.
    gone_from(&c, "mon-1", Duration::from_secs(30)).await;
}

#[tokio::test]
async fn cli_register_once_resolves_on_another_agent() {
    let (a, _b, c) = three_agents("").await;
    let out = muster_cli(&[
        "register",
        "web-x",
        "--ip",
        "10.9.9.9",
        "--once",
        "--ttl",
        "5s",
        "--addr",
        &a.grpc_addr(),
    ]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("registered web-x (reg:web-x) on a"),
        "{printed}"
    );
    resolves_on(&c, "web-x", "10.9.9.9").await;
    // Nothing keeps it alive: it lapses after its 5 s TTL.
    gone_from(&c, "web-x", Duration::from_secs(20)).await;
}

#[tokio::test]
async fn cli_register_keeps_the_record_until_terminated_then_deregisters() {
    let (a, _b, c) = three_agents(WEB_RECORDS).await;
    eventually(Duration::from_secs(10), "web-1 on a", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    let cli = tokio::process::Command::new(muster_bin())
        .args(["register", "mon-2", "--ip", "10.9.0.4", "--alias", "web-1"])
        .args(["--label", "role=monitor", "--ttl", "2s"])
        .args(["--addr", &a.grpc_addr()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn muster register");
    resolves_on(&c, "mon-2", "10.9.0.4").await;
    // Kept alive by the command past twice its TTL.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(resolve(&c, "mon-2"), ["10.9.0.4"]);

    let pid = cli.id().expect("running") as i32;
    // SAFETY: kill(2) on a child we own; no memory is shared.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = tokio::time::timeout(Duration::from_secs(10), cli.wait_with_output())
        .await
        .expect("muster register exits after SIGTERM")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    // The alias shares the static record's name: reported on stderr.
    assert!(
        stderr.contains("warning: mon-2 is also answered by web-1"),
        "{stderr}"
    );
    // Withdrawn by the command, not left to lapse.
    gone_from(&c, "mon-2", Duration::from_secs(10)).await;
    assert!(a.log().contains("deregistered id=reg:mon-2"), "{}", a.log());
}

#[tokio::test]
async fn refusals_come_from_the_publishers_verdict_and_nothing_refused_is_kept() {
    // The static file already publishes id `reg:mon-1` on a.
    let a = Agent::start(AgentSpec::new(&loopback_block(), 1, "a").with_records(
        "[[record]]\nid = \"reg:mon-1\"\nname = \"mon-static\"\naddresses = [\"10.9.0.9\"]\n",
    ))
    .await;
    eventually(Duration::from_secs(10), "the static record", || async {
        (a.list("").await.len() == 1).then_some(())
    })
    .await;
    let mut client = a.client().await;

    let taken = client
        .register(request("mon-1", "10.9.0.1", 30))
        .await
        .expect_err("the id belongs to the static source");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(
        taken.message().starts_with("record.id:") && taken.message().contains("static"),
        "{}",
        taken.message()
    );

    // Within every per-field limit, but too large to gossip.
    let mut large = request("mon-2", "10.9.0.2", 30);
    large.record.as_mut().expect("record").labels = (0..40)
        .map(|i| (format!("label-{i}"), "v".repeat(200)))
        .collect();
    let too_large = client.register(large).await.expect_err("too large");
    assert_eq!(too_large.code(), Code::InvalidArgument, "{too_large:?}");
    assert!(
        too_large.message().starts_with("record:") && too_large.message().contains("bytes"),
        "{}",
        too_large.message()
    );

    // Neither was kept: nothing to keep alive, nothing published.
    for id in ["mon-1", "mon-2"] {
        let status = client
            .keep_alive(v1::KeepAliveRequest {
                id: id.into(),
                ttl_seconds: 0,
            })
            .await
            .expect_err("not registered");
        assert_eq!(status.code(), Code::NotFound, "{id}: {status:?}");
    }
    let listed: Vec<String> = a.list("").await.into_iter().map(|r| r.name).collect();
    assert_eq!(listed, ["mon-static"]);
}

/// `message` with `authorization: Bearer <token>`.
fn with<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII"),
    );
    request
}

#[tokio::test]
async fn with_a_write_token_registrations_need_it_and_reads_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-Token_42\n").unwrap();
    let a = Agent::start(
        AgentSpec::new(&loopback_block(), 1, "a")
            .with_args(&["--api-token-file", token_file.to_str().unwrap()]),
    )
    .await;
    let mut client = a.client().await;

    let none = client
        .register(request("mon-1", "10.9.0.1", 30))
        .await
        .expect_err("no token");
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    let wrong = client
        .register(with("s3cret-Token_43", request("mon-1", "10.9.0.1", 30)))
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), Code::PermissionDenied, "{wrong:?}");
    assert!(a.list("").await.is_empty(), "nothing published");

    client
        .register(with("s3cret-Token_42", request("mon-1", "10.9.0.1", 30)))
        .await
        .expect("the right token");
    // Reads need no token.
    assert_eq!(a.lookup("mon-1").await.len(), 1);
    let keep_alive = || v1::KeepAliveRequest {
        id: "mon-1".into(),
        ttl_seconds: 0,
    };
    assert_eq!(
        client.keep_alive(keep_alive()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    client
        .keep_alive(with("s3cret-Token_42", keep_alive()))
        .await
        .expect("kept alive with the token");
    client
        .deregister(with(
            "s3cret-Token_42",
            v1::DeregisterRequest { id: "mon-1".into() },
        ))
        .await
        .expect("deregistered with the token");

    // The CLI: from MUSTER_TOKEN, from --token-file, and refused without.
    let cli = |extra: &[&str], env_token: Option<&str>| {
        let mut cmd = std::process::Command::new(muster_bin());
        cmd.args(["register", "cli-1", "--ip", "10.9.0.7", "--once", "--addr"])
            .arg(a.grpc_addr())
            .args(extra)
            .env_remove("MUSTER_TOKEN");
        if let Some(token) = env_token {
            cmd.env("MUSTER_TOKEN", token);
        }
        cmd.output().expect("run muster register")
    };
    let refused = cli(&[], None);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("authorization"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(cli(&[], Some("s3cret-Token_42")).status.code(), Some(0));
    let unusable = cli(&[], Some("two words"));
    assert_eq!(unusable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unusable.stderr).contains("MUSTER_TOKEN"));
    let from_file = cli(&["--token-file", token_file.to_str().unwrap()], None);
    assert_eq!(
        from_file.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
}

#[test]
fn a_bad_token_file_stops_startup_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "two words\n").unwrap();
    let out = AgentSpec::new(&loopback_block(), 1, "a")
        .command(dir.path())
        .args(["--api-token-file", token_file.to_str().unwrap()])
        .output()
        .expect("run agent");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:1", token_file.display())) && stderr.contains("visible ASCII"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_register_conflicts_refuse_a_name_others_answer_to_is_refused_naming_them() {
    let a = Agent::start(
        AgentSpec::new(&loopback_block(), 1, "a")
            .with_records(WEB_RECORDS)
            .with_args(&["--register-conflicts", "refuse"]),
    )
    .await;
    eventually(Duration::from_secs(10), "web-1 on a", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    let mut client = a.client().await;
    let refused = client
        .register(request("web-1", "10.9.0.2", 30))
        .await
        .expect_err("web-1 is the static record's");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().starts_with("record.name:")
            && refused.message().contains("web-1@a, static"),
        "{}",
        refused.message()
    );
    // An alias counts as much as a name.
    let mut aliased = request("mon-2", "10.9.0.3", 30);
    aliased.record.as_mut().unwrap().aliases = vec!["db-1".into()];
    assert_eq!(
        client.register(aliased).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // A free name registers, and registering it again is no conflict
    // with itself.
    client
        .register(request("mon-1", "10.9.0.1", 30))
        .await
        .expect("a free name");
    eventually(Duration::from_secs(10), "mon-1 indexed", || async {
        (!a.lookup("mon-1").await.is_empty()).then_some(())
    })
    .await;
    client
        .register(request("mon-1", "10.9.0.4", 30))
        .await
        .expect("the same registration again");
    assert_eq!(
        a.lookup("web-1").await.len(),
        1,
        "nothing added under web-1"
    );
}
