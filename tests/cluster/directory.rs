//! Records published on one agent are answered by every agent, over DNS
//! and gRPC, with the right codes for everything else.

use std::time::Duration;

use muster_proto::v1;

use crate::harness::*;

pub const WEB_RECORDS: &str = r#"
[[record]]
name = "web-1"
addresses = ["10.0.0.5", "fd00::5"]
labels = { app = "web", env = "prod" }
ports = ["8080/tcp"]

[[record]]
name = "db-1"
addresses = ["10.0.0.6"]
labels = { app = "db", env = "prod" }
"#;

/// Starts agents a (with `records`), b and c, all joining through a, and
/// waits until c sees three alive members.
pub async fn three_agents(records: &str) -> (Agent, Agent, Agent) {
    let block = loopback_block();
    let a_spec = AgentSpec::new(&block, 1, "a").with_records(records);
    let a = Agent::start(a_spec.clone()).await;
    let b = Agent::start(AgentSpec::new(&block, 2, "b").joining(&a_spec)).await;
    let c = Agent::start(AgentSpec::new(&block, 3, "c").joining(&a_spec)).await;
    eventually(
        Duration::from_secs(15),
        "c to see three alive members",
        || async {
            let members = c.members().await;
            (members.len() == 3 && members.iter().all(|m| m.liveness() == v1::Liveness::Alive))
                .then_some(())
        },
    )
    .await;
    (a, b, c)
}

#[tokio::test]
async fn records_published_on_a_resolve_on_c_over_dns_and_grpc() {
    let (a, _b, c) = three_agents(WEB_RECORDS).await;
    let ip = c.spec.ip.clone();

    let records = eventually(Duration::from_secs(10), "web-1 on c", || async {
        let r = c.lookup("web-1").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].host, "a");
    assert_eq!(records[0].labels["app"], "web");

    // dig, over UDP and TCP.
    assert_eq!(
        dig(&ip, c.dns_port(), &["+short", "web-1.muster", "A"]).trim(),
        "10.0.0.5"
    );
    assert_eq!(
        dig(
            &ip,
            c.dns_port(),
            &["+short", "+tcp", "web-1.muster", "AAAA"]
        )
        .trim(),
        "fd00::5"
    );

    // dnspython, over UDP and TCP.
    let a_reply = dnspython(&ip, c.dns_port(), "web-1.muster.", "A", false);
    assert_eq!(a_reply["rcode"], "NOERROR");
    assert_eq!(a_reply["answers"], serde_json::json!(["10.0.0.5"]));
    assert!(
        a_reply["flags"].as_array().unwrap().contains(&"AA".into()),
        "{a_reply}"
    );
    let aaaa_reply = dnspython(&ip, c.dns_port(), "web-1.muster.", "AAAA", true);
    assert_eq!(aaaa_reply["answers"], serde_json::json!(["fd00::5"]));

    // The CLI.
    let out = muster_cli(&["lookup", "web-1", "--addr", &c.grpc_addr(), "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let record = &doc["records"][0];
    assert_eq!(record["name"], "web-1");
    assert_eq!(record["host"], "a");
    assert_eq!(record["state"], "running");
    assert_eq!(
        record["addresses"],
        serde_json::json!(["10.0.0.5", "fd00::5"])
    );
    assert_eq!(record["labels"]["env"], "prod");
    assert_eq!(record["ports"], serde_json::json!(["8080/tcp"]));

    let out = muster_cli(&[
        "ls",
        "-l",
        "app=web",
        "--addr",
        &c.grpc_addr(),
        "-o",
        "json",
    ]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1"]);

    let out = muster_cli(&["ls", "-l", "env=prod", "--addr", &c.grpc_addr()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("db-1") && table.contains("web-1"), "{table}");

    let out = muster_cli(&["members", "--addr", &c.grpc_addr(), "-o", "json"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = doc["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        assert_eq!(m["state"], "alive", "{m}");
        assert!(m["generation"].as_u64().unwrap() > 0);
        assert!(m["gossip_addr"].as_str().unwrap().ends_with(":7946"));
    }
    let a_member = members.iter().find(|m| m["name"] == "a").unwrap();
    assert_eq!(a_member["records"], 2);
    drop(a);
}

#[tokio::test]
async fn dns_answers_negative_and_out_of_zone_questions_correctly() {
    let block = loopback_block();
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(WEB_RECORDS)).await;
    let ip = a.spec.ip.clone();
    let port = a.dns_port();
    eventually(Duration::from_secs(10), "web-1 to be served", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;

    // The query's case is kept in the answer, whatever case was stored.
    let mixed = dnspython(&ip, port, "WeB-1.MUSTER.", "A", false);
    assert_eq!(mixed["answers"], serde_json::json!(["10.0.0.5"]));
    assert_eq!(mixed["answer_names"], serde_json::json!(["WeB-1.MUSTER."]));

    // Unknown name in the zone: NXDOMAIN with the SOA.
    let nx = dnspython(&ip, port, "nope.muster.", "A", false);
    assert_eq!(nx["rcode"], "NXDOMAIN");
    assert_eq!(nx["authority_types"], serde_json::json!(["SOA"]));

    // Known name, missing type: NODATA (NOERROR, no answer, SOA).
    let nodata = dnspython(&ip, port, "db-1.muster.", "AAAA", false);
    assert_eq!(nodata["rcode"], "NOERROR");
    assert_eq!(nodata["answers"], serde_json::json!([]));
    assert_eq!(nodata["authority_types"], serde_json::json!(["SOA"]));

    // Outside the zone: REFUSED, never recursion.
    let refused = dnspython(&ip, port, "example.com.", "A", false);
    assert_eq!(refused["rcode"], "REFUSED");
    assert!(dig(&ip, port, &["example.com"]).contains("status: REFUSED"));

    // SOA and NS at the apex.
    let soa = dig(&ip, port, &["+short", "muster", "SOA"]);
    assert!(
        soa.starts_with("a.host.muster. hostmaster.muster."),
        "{soa}"
    );
    assert_eq!(
        dig(&ip, port, &["+short", "muster", "NS"]).trim(),
        "a.host.muster."
    );
    assert_eq!(dig(&ip, port, &["+short", "a.host.muster", "A"]).trim(), ip);
    let over_tcp = dnspython(&ip, port, "muster.", "SOA", true);
    assert_eq!(over_tcp["rcode"], "NOERROR");
}

#[tokio::test]
async fn configured_reverse_zones_and_any_queries_follow_the_rfcs() {
    let block = loopback_block();
    let a = Agent::start(
        AgentSpec::new(&block, 1, "a")
            .with_records(WEB_RECORDS)
            .with_args(&["--reverse-zone", "10.0.0.0/8,fd00::/16"]),
    )
    .await;
    let ip = a.spec.ip.clone();
    let port = a.dns_port();
    eventually(Duration::from_secs(10), "web-1 to be served", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    let ask = |name: &str, rtype: &str| dnspython(&ip, port, name, rtype, false);

    // A known address: its PTR, as without reverse zones.
    assert_eq!(
        ask("5.0.0.10.in-addr.arpa.", "PTR")["answers"],
        serde_json::json!(["web-1.muster."])
    );
    // The apex of a configured reverse zone has a SOA and NS.
    let soa = ask("10.in-addr.arpa.", "SOA");
    assert_eq!(soa["answer_names"], serde_json::json!(["10.in-addr.arpa."]));
    assert_eq!(
        dig(&ip, port, &["+short", "10.in-addr.arpa", "NS"]).trim(),
        "a.host.muster."
    );
    // A name with addresses below it exists (NODATA), an address that is
    // not in the directory does not (NXDOMAIN); both carry the reverse
    // zone's SOA, IPv4 and IPv6 alike.
    for (name, rcode) in [
        ("0.10.in-addr.arpa.", "NOERROR"),
        ("9.9.9.10.in-addr.arpa.", "NXDOMAIN"),
        ("0.0.0.0.d.f.ip6.arpa.", "NOERROR"),
        ("1.0.0.0.d.f.ip6.arpa.", "NXDOMAIN"),
    ] {
        let reply = ask(name, "PTR");
        assert_eq!(reply["rcode"], rcode, "{name}: {reply}");
        assert_eq!(reply["answers"], serde_json::json!([]), "{name}");
        assert_eq!(
            reply["authority_types"],
            serde_json::json!(["SOA"]),
            "{name}"
        );
        let zone = if name.ends_with("ip6.arpa.") {
            "0.0.d.f.ip6.arpa."
        } else {
            "10.in-addr.arpa."
        };
        assert_eq!(
            reply["authority_names"],
            serde_json::json!([zone]),
            "{name}"
        );
    }
    // Outside every configured zone, muster is not authoritative.
    assert_eq!(ask("1.2.0.192.in-addr.arpa.", "PTR")["rcode"], "REFUSED");

    // ANY is answered minimally (RFC 8482): the SOA alone at the apex, the
    // address records alone for a name (no TXT, no SRV expansion).
    let any = ask("muster.", "ANY");
    assert_eq!(any["answer_types"], serde_json::json!(["SOA"]));
    let any = ask("web-1.muster.", "ANY");
    assert_eq!(any["answer_types"], serde_json::json!(["A", "AAAA"]));
    assert_eq!(ask("nope.muster.", "ANY")["rcode"], "NXDOMAIN");
}

#[tokio::test]
async fn list_filters_by_equality_selectors_and_rejects_bad_ones() {
    let block = loopback_block();
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(WEB_RECORDS)).await;
    eventually(Duration::from_secs(10), "records to be served", || async {
        (a.lookup("db-1").await.len() == 1).then_some(())
    })
    .await;
    let mut client = a.client().await;
    let list = |selector: &str| v1::ListRequest {
        selector: selector.to_owned(),
        ..Default::default()
    };
    let names = |r: v1::ListResponse| r.records.into_iter().map(|r| r.name).collect::<Vec<_>>();

    assert_eq!(
        names(client.list(list("env=prod")).await.unwrap().into_inner()),
        ["db-1", "web-1"]
    );
    assert_eq!(
        names(
            client
                .list(list("app=web,env=prod"))
                .await
                .unwrap()
                .into_inner()
        ),
        ["web-1"]
    );
    assert!(
        names(
            client
                .list(list("app=web,env=dev"))
                .await
                .unwrap()
                .into_inner()
        )
        .is_empty()
    );

    let bad = client.list(list("app=web,,env=prod")).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("column 9"), "{}", bad.message());
}

#[tokio::test]
async fn dns_answers_per_host_names_txt_reverse_and_rotates_groups() {
    let block = loopback_block();
    let a_spec = AgentSpec::new(&block, 1, "a").with_records(
        r#"
[[record]]
name = "web-1"
addresses = ["10.0.0.5", "fd00::5"]
labels = { "muster.service" = "web", "muster.port.http" = "8080" }
ports = ["8080/tcp"]
image = "registry.local/web:1"
"#,
    );
    let a = Agent::start(a_spec.clone()).await;
    let b = Agent::start(
        AgentSpec::new(&block, 2, "b")
            .with_records(
                r#"
[[record]]
name = "web-1"
addresses = ["10.0.1.5"]
labels = { "muster.service" = "web" }
"#,
            )
            .joining(&a_spec),
    )
    .await;
    let ip = b.spec.ip.clone();
    let short = |args: &[&str]| dig_sorted(&ip, DNS_PORT, args);
    eventually(Duration::from_secs(10), "web-1 from both hosts", || async {
        (short(&["web-1.muster"]) == ["10.0.0.5", "10.0.1.5"]).then_some(())
    })
    .await;

    // A repeated name, disambiguated by host.
    assert_eq!(short(&["web-1.a.muster"]), ["10.0.0.5"]);
    assert_eq!(short(&["web-1.b.muster"]), ["10.0.1.5"]);
    assert_eq!(short(&["web-1.a.muster", "AAAA"]), ["fd00::5"]);
    let nx = dnspython(&ip, DNS_PORT, "web-1.c.muster.", "A", false);
    assert_eq!(nx["rcode"], "NXDOMAIN");

    // TXT facts.
    let txt = short(&["web-1.a.muster", "TXT"]).join(" ");
    for fact in [
        "id=web-1",
        "host=a",
        "image=registry.local/web:1",
        "state=running",
        "health=none",
    ] {
        assert!(txt.contains(fact), "{fact} missing from {txt}");
    }

    // Reverse look-ups of record and agent addresses, IPv4 and IPv6.
    assert_eq!(short(&["-x", "10.0.0.5"]), ["web-1.muster."]);
    assert_eq!(short(&["-x", "fd00::5"]), ["web-1.muster."]);
    assert_eq!(short(&["-x", &a.spec.ip]), ["a.host.muster."]);
    let unknown = dnspython(&ip, DNS_PORT, "1.2.0.192.in-addr.arpa.", "PTR", false);
    assert_eq!(unknown["rcode"], "REFUSED");

    // SRV by port number and by port name, targets in the additional
    // section; b's web-1 has no port 8080 and is left out.
    assert_eq!(
        short(&["_8080._tcp.web.svc.muster", "SRV"]),
        ["0 10 8080 web-1.a.muster."]
    );
    assert_eq!(
        short(&["_http._tcp.web.svc.muster", "SRV"]),
        ["0 10 8080 web-1.a.muster."]
    );
    let full = dig(&ip, DNS_PORT, &["_http._tcp.web.svc.muster", "SRV"]);
    assert!(
        full.contains("ADDITIONAL SECTION")
            && full.contains("10.0.0.5")
            && full.contains("fd00::5"),
        "{full}"
    );
    assert!(short(&["_9999._tcp.web.svc.muster", "SRV"]).is_empty());

    // The service group holds both, and its first answer rotates.
    assert_eq!(short(&["web.svc.muster"]), ["10.0.0.5", "10.0.1.5"]);
    let firsts: std::collections::BTreeSet<String> = (0..4)
        .map(|_| {
            dig(&ip, DNS_PORT, &["+short", "web.svc.muster"])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(firsts.len(), 2, "round robin: {firsts:?}");
}

#[tokio::test]
async fn a_large_group_is_truncated_over_udp_and_whole_over_tcp() {
    let mut records = String::new();
    for i in 0..300 {
        records.push_str(&format!(
            "[[record]]\nname = \"big-{i}\"\naddresses = [\"10.9.{}.{}\"]\nlabels = {{ \"muster.service\" = \"big\" }}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let block = loopback_block();
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(&records)).await;
    let ip = a.spec.ip.clone();
    eventually(Duration::from_secs(10), "300 members over TCP", || async {
        let reply = dnspython(&ip, DNS_PORT, "big.svc.muster.", "A", true);
        (reply["answers"].as_array().map_or(0, Vec::len) == 300).then_some(())
    })
    .await;

    // Without EDNS a UDP reply holds 512 bytes; with EDNS the client's size
    // (capped at 1232): both are cut with TC set.
    for options in [&["--no-edns"][..], &["--payload=1232"], &["--payload=4096"]] {
        let reply = dnspython_with(&ip, DNS_PORT, "big.svc.muster.", "A", options);
        assert!(
            reply["flags"].as_array().unwrap().contains(&"TC".into()),
            "{options:?}: {reply}"
        );
        let n = reply["answers"].as_array().unwrap().len();
        assert!(n < 300, "{options:?}: {n} answers fit?");
    }
    let small = dnspython_with(&ip, DNS_PORT, "big-7.muster.", "A", &["--no-edns"]);
    assert!(
        !small["flags"].as_array().unwrap().contains(&"TC".into()),
        "{small}"
    );

    // dig retries over TCP on TC by itself and gets every member.
    let all = dig(&ip, DNS_PORT, &["+short", "big.svc.muster"]);
    assert_eq!(all.lines().count(), 300);
}

#[tokio::test]
async fn dns_selects_by_several_labels_at_once() {
    let block = loopback_block();
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(
        r#"
[[record]]
name = "web-1"
addresses = ["10.0.0.1"]
labels = { app = "web", env = "prod" }

[[record]]
name = "web-2"
addresses = ["10.0.0.2"]
labels = { app = "web", env = "dev" }

[[record]]
name = "db-1"
addresses = ["10.0.0.3"]
labels = { app = "db", env = "prod" }

[[record]]
name = "web-3"
addresses = ["10.0.0.4"]
labels = { app = "web", env = "prod" }
health = "unhealthy"
"#,
    ))
    .await;
    let ip = a.spec.ip.clone();
    let short = |name: &str| dig_sorted(&ip, DNS_PORT, &[name]);
    eventually(Duration::from_secs(10), "records served", || async {
        (a.lookup("db-1").await.len() == 1).then_some(())
    })
    .await;
    // app=web AND env=prod; the unhealthy web-3 is left out.
    assert_eq!(short("web.app.prod.env.sel.muster"), ["10.0.0.1"]);
    assert_eq!(short("prod.env.web.app.sel.muster"), ["10.0.0.1"]);
    assert_eq!(short("web.app.sel.muster"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(short("prod.env.sel.muster"), ["10.0.0.1", "10.0.0.3"]);
    let none = dnspython(&ip, DNS_PORT, "cache.app.sel.muster.", "A", false);
    assert_eq!(none["rcode"], "NXDOMAIN");
    let odd = dnspython(&ip, DNS_PORT, "web.sel.muster.", "A", false);
    assert_eq!(odd["rcode"], "NXDOMAIN");
}

#[tokio::test]
async fn names_outside_the_zone_are_forwarded_only_when_asked() {
    let block = loopback_block();
    // The upstream: a resolver on loopback authoritative for `corp`.
    let mut corp = AgentSpec::new(&block, 9, "corp")
        .with_records("[[record]]\nname = \"mail\"\naddresses = [\"10.1.1.1\"]\n");
    corp.zone = "corp".to_owned();
    let corp = Agent::start(corp).await;
    let upstream = format!("{}:{DNS_PORT}", corp.spec.ip);
    let mut forwarding = AgentSpec::new(&block, 1, "a");
    forwarding.extra_args = vec![
        "--dns-forward".into(),
        format!("{block}.99:53"),
        "--dns-forward".into(),
        upstream,
    ];
    let a = Agent::start(forwarding).await;
    let b = Agent::start(AgentSpec::new(&block, 2, "b")).await;
    eventually(
        Duration::from_secs(10),
        "mail.corp on the upstream",
        || async {
            (dig(&corp.spec.ip, DNS_PORT, &["+short", "mail.corp"]).trim() == "10.1.1.1")
                .then_some(())
        },
    )
    .await;

    // a forwards (past a dead first upstream), b refuses.
    let found = dnspython(&a.spec.ip, DNS_PORT, "mail.corp.", "A", false);
    assert_eq!(found["rcode"], "NOERROR");
    assert_eq!(found["answers"], serde_json::json!(["10.1.1.1"]));
    let missing = dnspython(&a.spec.ip, DNS_PORT, "nope.corp.", "A", true);
    assert_eq!(missing["rcode"], "NXDOMAIN");
    let refused = dnspython(&b.spec.ip, DNS_PORT, "mail.corp.", "A", false);
    assert_eq!(refused["rcode"], "REFUSED");
    // Its own zone is still answered locally.
    let own = dnspython(&a.spec.ip, DNS_PORT, "muster.", "SOA", false);
    assert_eq!(own["rcode"], "NOERROR");
}
