//! The gRPC API for tooling: List filters, Watch with resumption, Members
//! with suspicion and last-heard times, and the CLI on top of them.

use std::time::Duration;

use muster_proto::v1;
use tonic::Code;

use crate::directory::{WEB_RECORDS, three_agents};
use crate::harness::*;

/// The next event on a watch stream, within a bound.
async fn next(stream: &mut tonic::Streaming<v1::WatchEvent>) -> v1::WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// Events up to and including the next SYNCED, as (kind, name) pairs.
async fn until_synced(
    stream: &mut tonic::Streaming<v1::WatchEvent>,
) -> (Vec<(v1::EventKind, String)>, v1::WatchEvent) {
    let mut seen = Vec::new();
    loop {
        let event = next(stream).await;
        if event.kind() == v1::EventKind::Synced {
            return (seen, event);
        }
        let name = event
            .record
            .as_ref()
            .map_or(String::new(), |r| r.name.clone());
        seen.push((event.kind(), name));
    }
}

/// `n` change events (not SYNCED), as (kind, name, revision).
async fn changes(
    stream: &mut tonic::Streaming<v1::WatchEvent>,
    n: usize,
) -> Vec<(v1::EventKind, String, u64)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let event = next(stream).await;
        if event.kind() == v1::EventKind::Synced {
            continue;
        }
        let name = event
            .record
            .as_ref()
            .map_or(String::new(), |r| r.name.clone());
        seen.push((event.kind(), name, event.revision));
    }
    seen
}

fn web_set(extra: &str) -> String {
    format!("{WEB_RECORDS}\n{extra}")
}

#[tokio::test]
async fn watch_sends_the_set_then_every_change_in_order_and_resumes_without_a_gap() {
    let (a, _b, c) = three_agents(WEB_RECORDS).await;
    eventually(Duration::from_secs(10), "web-1 on c", || async {
        (!c.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    let watch = |from_revision: u64, epoch: u64| {
        let c = &c;
        async move {
            c.client()
                .await
                .watch(v1::WatchRequest {
                    selector: "app=web".into(),
                    from_revision,
                    epoch,
                })
                .await
                .expect("watch accepted")
                .into_inner()
        }
    };

    // The matching set first, then SYNCED.
    let mut stream = watch(0, 0).await;
    let (initial, synced) = until_synced(&mut stream).await;
    assert_eq!(initial, [(v1::EventKind::Added, "web-1".to_owned())]);
    assert!(synced.epoch > 0);

    // Changes on a arrive on c's stream, in order; db-1 (app=db) is not
    // watched.
    a.write_records(&web_set(
        r#"
[[record]]
name = "web-2"
addresses = ["10.0.0.9"]
labels = { app = "web" }
"#,
    ));
    a.signal(libc::SIGHUP);
    let seen = changes(&mut stream, 1).await;
    assert_eq!(seen[0].0, v1::EventKind::Added);
    assert_eq!(seen[0].1, "web-2");
    // web-1 stops matching (its label changes): REMOVED for this watcher.
    a.write_records(
        r#"
[[record]]
name = "web-1"
addresses = ["10.0.0.5"]
labels = { app = "legacy" }

[[record]]
name = "web-2"
addresses = ["10.0.0.10"]
labels = { app = "web" }
"#,
    );
    a.signal(libc::SIGHUP);
    let mut seen2 = changes(&mut stream, 2).await;
    assert!(
        seen2.windows(2).all(|w| w[0].2 <= w[1].2),
        "in revision order: {seen2:?}"
    );
    assert!(seen2[0].2 > seen[0].2);
    seen2.sort();
    assert_eq!(
        seen2
            .iter()
            .map(|(k, n, _)| (*k, n.as_str()))
            .collect::<Vec<_>>(),
        [
            (v1::EventKind::Updated, "web-2"),
            (v1::EventKind::Removed, "web-1")
        ]
    );
    let last = seen2.iter().map(|e| e.2).max().unwrap_or(0);
    drop(stream);

    // While nobody watches: web-2 goes, web-3 comes.
    a.write_records(
        r#"
[[record]]
name = "web-1"
addresses = ["10.0.0.5"]
labels = { app = "legacy" }

[[record]]
name = "web-3"
addresses = ["10.0.0.11"]
labels = { app = "web" }
"#,
    );
    a.signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "web-3 on c", || async {
        (!c.lookup("web-3").await.is_empty() && c.lookup("web-2").await.is_empty()).then_some(())
    })
    .await;

    // Resuming after the last revision seen replays exactly what was
    // missed, then SYNCED.
    let mut resumed = watch(last, synced.epoch).await;
    let (mut missed, _) = until_synced(&mut resumed).await;
    missed.sort();
    assert_eq!(
        missed,
        [
            (v1::EventKind::Added, "web-3".to_owned()),
            (v1::EventKind::Removed, "web-2".to_owned()),
        ]
    );

    // A revision from another run of the agent: RESET, then the full set.
    let mut other_run = watch(last, synced.epoch + 1).await;
    let first = next(&mut other_run).await;
    assert_eq!(first.kind(), v1::EventKind::Reset);
    let (full, _) = until_synced(&mut other_run).await;
    assert_eq!(full, [(v1::EventKind::Added, "web-3".to_owned())]);
}

#[tokio::test]
async fn list_filters_by_host_and_state_and_bad_requests_are_invalid_arguments() {
    let block = loopback_block();
    let a_spec = AgentSpec::new(&block, 1, "a").with_records(
        r#"
[[record]]
name = "job-1"
addresses = ["10.0.0.1"]
labels = { system = "billing", role = "batch" }

[[record]]
name = "job-2"
state = "exited"
addresses = ["10.0.0.2"]
labels = { system = "billing", role = "batch" }
"#,
    );
    let a = Agent::start(a_spec.clone()).await;
    let b = Agent::start(
        AgentSpec::new(&block, 2, "b")
            .with_records(
                r#"
[[record]]
name = "job-3"
addresses = ["10.0.1.3"]
labels = { system = "billing", role = "cron" }
"#,
            )
            .joining(&a_spec),
    )
    .await;
    let list = |selector: &str, host: &str, state: Option<v1::State>| {
        let request = v1::ListRequest {
            selector: selector.into(),
            host: host.into(),
            state: state.map(|s| s as i32),
        };
        async {
            let mut client = b.client().await;
            client.list(request).await.map(|r| {
                let mut names: Vec<String> =
                    r.into_inner().records.into_iter().map(|r| r.name).collect();
                names.sort();
                names
            })
        }
    };
    eventually(Duration::from_secs(10), "every job on b", || async {
        (list("system=billing", "", None).await.ok()?.len() == 3).then_some(())
    })
    .await;
    assert_eq!(
        list("role in (batch)", "a", None).await.unwrap(),
        ["job-1", "job-2"]
    );
    assert_eq!(
        list("system=billing", "", Some(v1::State::Running))
            .await
            .unwrap(),
        ["job-1", "job-3"]
    );
    assert_eq!(
        list(
            "system=billing,role notin (batch)",
            "b",
            Some(v1::State::Running)
        )
        .await
        .unwrap(),
        ["job-3"]
    );
    assert!(list("", "nope", None).await.unwrap().is_empty());

    let bad = list("role in (batch", "", None).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("column"), "{}", bad.message());
    let bad_state = b
        .client()
        .await
        .list(v1::ListRequest {
            selector: String::new(),
            host: String::new(),
            state: Some(42),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_state.code(), Code::InvalidArgument);
    let bad_watch = b
        .client()
        .await
        .watch(v1::WatchRequest {
            selector: "a b".into(),
            from_revision: 0,
            epoch: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_watch.code(), Code::InvalidArgument);

    // The CLI: filters, wide output, exit codes.
    let addr = b.grpc_addr();
    let out = muster_cli(&[
        "ls",
        "-l",
        "system=billing",
        "--state",
        "running",
        "-o",
        "wide",
        "--addr",
        &addr,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("NAME") && text.contains("IMAGE") && text.contains("job-3"),
        "{text}"
    );
    assert!(!text.contains("job-2"), "{text}");
    let none = muster_cli(&["ls", "--host", "nope", "--addr", &addr]);
    assert_eq!(none.status.code(), Some(1));
    let usage = muster_cli(&["ls", "--state", "sleeping", "--addr", &addr]);
    assert_eq!(usage.status.code(), Some(2));
    drop(a);
}

#[tokio::test]
async fn members_show_version_docker_last_heard_and_suspicion_of_a_silent_agent() {
    let (_a, b, c) = three_agents(WEB_RECORDS).await;
    let members = c.members().await;
    for m in &members {
        assert!(!m.version.is_empty(), "{m:?}");
        assert_eq!(m.docker, "disabled", "{m:?}");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(now_ms - m.last_heard_ms < 5_000, "heard recently: {m:?}");
    }

    // b stops answering: c suspects it before the failure detector calls it
    // dead, and trusts it again when it resumes.
    b.signal(libc::SIGSTOP);
    let liveness_of_b = || async {
        c.members()
            .await
            .into_iter()
            .find(|m| m.name == "b")
            .map(|m| m.liveness())
    };
    let mut seen = Vec::new();
    for _ in 0..200 {
        let now = liveness_of_b().await;
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if now == Some(v1::Liveness::Dead) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    b.signal(libc::SIGCONT);
    assert_eq!(
        seen,
        [
            Some(v1::Liveness::Alive),
            Some(v1::Liveness::Suspect),
            Some(v1::Liveness::Dead)
        ]
    );
    eventually(Duration::from_secs(15), "b alive again on c", || async {
        (liveness_of_b().await == Some(v1::Liveness::Alive)).then_some(())
    })
    .await;
    let out = muster_cli(&["members", "--addr", &c.grpc_addr()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("LAST HEARD") && text.contains(" ago"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_without_proto_files_finds_the_api_by_reflection_and_checks_health() {
    let block = loopback_block();
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(WEB_RECORDS)).await;
    eventually(Duration::from_secs(10), "web-1 served", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/cluster/grpc_reflect.py"
    );
    let ask = |name: &str| {
        let out = std::process::Command::new("python3")
            .args([script, &a.grpc_addr(), name])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "grpc_reflect.py failed (grpcio installed? tests/setup.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let found = ask("web-1");
    for service in [
        "muster.v1.Directory",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            found["services"]
                .as_array()
                .is_some_and(|s| s.contains(&serde_json::json!(service))),
            "{service} not listed: {found}"
        );
    }
    assert_eq!(found["lookup"]["records"][0]["name"], "web-1", "{found}");
    assert_eq!(found["lookup"]["records"][0]["host"], "a", "{found}");
    assert_eq!(found["health"][""], "SERVING");
    assert_eq!(found["health"]["muster.v1.Directory"], "SERVING");
    assert_eq!(ask("nope")["lookup"]["error"], "NOT_FOUND");
}

#[tokio::test]
async fn watch_streams_are_bounded_and_a_closed_one_frees_its_place() {
    let a = Agent::start(
        AgentSpec::new(&loopback_block(), 1, "a")
            .with_records(WEB_RECORDS)
            .with_args(&["--max-watchers", "2"]),
    )
    .await;
    let open = |selector: &str| {
        let selector = selector.to_owned();
        let a = &a;
        async move {
            a.client()
                .await
                .watch(v1::WatchRequest {
                    selector,
                    ..Default::default()
                })
                .await
        }
    };
    let first = open("app=web").await.expect("first watcher");
    let _second = open("").await.expect("second watcher");
    let third = open("").await.expect_err("a third is one too many");
    assert_eq!(third.code(), tonic::Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains("--max-watchers"), "{third:?}");
    // WatchViolations counts too.
    let violations = a
        .client()
        .await
        .watch_violations(v1::ViolationsRequest::default())
        .await;
    assert_eq!(
        violations.expect_err("no place left").code(),
        tonic::Code::ResourceExhausted
    );
    // Reads are not limited.
    assert_eq!(a.lookup("web-1").await.len(), 1);

    drop(first);
    eventually(Duration::from_secs(10), "a place freed", || async {
        open("").await.ok().map(|_| ())
    })
    .await;
}
