//! DNS conformance: every form the README documents, asked with dig and
//! dnspython, over UDP (with and without EDNS0) and TCP, must give the same
//! response code and the same answers, with the header, question, EDNS and
//! authority sections a resolver expects.

use std::time::Duration;

use crate::harness::*;

const RECORDS: &str = r#"
[[record]]
name = "web-1"
aliases = ["www"]
image = "registry.local/web:1"
addresses = ["10.0.0.5", "fd00::5"]
ports = ["8080/tcp"]
labels = { "muster.service" = "web", "muster.port.http" = "8080", app = "web", env = "prod" }

[[record]]
name = "web-2"
health = "unhealthy"
addresses = ["10.0.0.7"]
ports = ["8080/tcp"]
labels = { "muster.service" = "web", app = "web", env = "staging" }

[[record]]
name = "db-1"
addresses = ["10.0.0.6"]
labels = { app = "db", env = "prod" }

[[record]]
name = "gone-1"
state = "exited"
addresses = ["10.0.0.8"]
"#;

/// One question and what every client must get back.
struct Case {
    name: &'static str,
    rtype: &'static str,
    rcode: &'static str,
    /// Answer data, sorted; `None`: only the answer types are checked
    /// (the SOA's serial moves with the directory).
    answers: Option<Vec<String>>,
    answer_types: &'static [&'static str],
}

fn case(name: &'static str, rtype: &'static str, rcode: &'static str, answers: &[&str]) -> Case {
    let types: &'static [&'static str] = if answers.is_empty() {
        &[]
    } else {
        match rtype {
            "ANY" => &["A", "AAAA"],
            "A" => &["A"],
            "AAAA" => &["AAAA"],
            "TXT" => &["TXT"],
            "SRV" => &["SRV"],
            "PTR" => &["PTR"],
            "NS" => &["NS"],
            _ => &[],
        }
    };
    let mut answers: Vec<String> = answers.iter().map(|a| a.to_string()).collect();
    answers.sort();
    Case {
        name,
        rtype,
        rcode,
        answers: Some(answers),
        answer_types: types,
    }
}

/// The table of forms; `agent_ptr` is the reverse name of the agent's
/// address.
fn cases(agent_ip: &str, agent_ptr: &'static str) -> Vec<Case> {
    let web1_txt =
        r#""id=web-1" "host=a" "image=registry.local/web:1" "state=running" "health=none""#;
    vec![
        case("web-1.muster.", "A", "NOERROR", &["10.0.0.5"]),
        case("WeB-1.MuStEr.", "A", "NOERROR", &["10.0.0.5"]),
        case("web-1.muster.", "AAAA", "NOERROR", &["fd00::5"]),
        case("www.muster.", "A", "NOERROR", &["10.0.0.5"]),
        case("web-1.a.muster.", "A", "NOERROR", &["10.0.0.5"]),
        case("web-1.b.muster.", "A", "NXDOMAIN", &[]),
        case("web-1.muster.", "TXT", "NOERROR", &[web1_txt]),
        // web-2 fails its health check: out of the group and selections.
        case("web-2.muster.", "A", "NOERROR", &["10.0.0.7"]),
        case("web.svc.muster.", "A", "NOERROR", &["10.0.0.5"]),
        case("web.svc.muster.", "AAAA", "NOERROR", &["fd00::5"]),
        case(
            "web.app.prod.env.sel.muster.",
            "A",
            "NOERROR",
            &["10.0.0.5"],
        ),
        case("db.app.prod.env.sel.muster.", "A", "NOERROR", &["10.0.0.6"]),
        case("db.app.dev.env.sel.muster.", "A", "NXDOMAIN", &[]),
        case(
            "_http._tcp.web.svc.muster.",
            "SRV",
            "NOERROR",
            &["0 10 8080 web-1.a.muster."],
        ),
        case(
            "_8080._tcp.web.svc.muster.",
            "SRV",
            "NOERROR",
            &["0 10 8080 web-1.a.muster."],
        ),
        case("_8080._udp.web.svc.muster.", "SRV", "NOERROR", &[]),
        case("_http._tcp.nope.svc.muster.", "SRV", "NXDOMAIN", &[]),
        case("a.host.muster.", "A", "NOERROR", &[agent_ip]),
        case(
            "5.0.0.10.in-addr.arpa.",
            "PTR",
            "NOERROR",
            &["web-1.muster."],
        ),
        case(
            "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            "PTR",
            "NOERROR",
            &["web-1.muster."],
        ),
        case(agent_ptr, "PTR", "NOERROR", &["a.host.muster."]),
        case("9.9.9.10.in-addr.arpa.", "PTR", "NXDOMAIN", &[]),
        case("muster.", "NS", "NOERROR", &["a.host.muster."]),
        Case {
            answers: None,
            answer_types: &["SOA"],
            ..case("muster.", "SOA", "NOERROR", &[])
        },
        Case {
            answers: None,
            answer_types: &["SOA"],
            ..case("muster.", "ANY", "NOERROR", &[])
        },
        case("web-1.muster.", "ANY", "NOERROR", &["10.0.0.5", "fd00::5"]),
        case("nope.muster.", "A", "NXDOMAIN", &[]),
        case("gone-1.muster.", "A", "NXDOMAIN", &[]),
        case("db-1.muster.", "AAAA", "NOERROR", &[]),
        case("db-1.muster.", "MX", "NOERROR", &[]),
        case("example.com.", "A", "REFUSED", &[]),
        case("1.2.0.192.in-addr.arpa.", "PTR", "REFUSED", &[]),
    ]
}

/// dig's view of one question: the status and the answers' data, sorted.
fn dig_reply(ip: &str, port: u16, name: &str, rtype: &str, tcp: bool) -> (String, Vec<String>) {
    let mut args = vec!["+noall", "+comments", "+answer", name, rtype];
    if tcp {
        args.push("+tcp");
    }
    let out = dig(ip, port, &args);
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("(no reply)")
        .to_owned();
    let mut answers: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
        .collect();
    answers.sort();
    (status, answers)
}

#[tokio::test]
async fn every_documented_form_answers_alike_with_dig_and_dnspython_over_udp_and_tcp() {
    let block = loopback_block();
    let a = Agent::start(
        AgentSpec::new(&block, 1, "a")
            .with_records(RECORDS)
            .with_args(&["--reverse-zone", "10.0.0.0/8"]),
    )
    .await;
    let ip = a.spec.ip.clone();
    let port = a.dns_port();
    eventually(
        Duration::from_secs(10),
        "every record to be served",
        || async { (a.list("").await.len() == 4).then_some(()) },
    )
    .await;
    let octets: Vec<&str> = ip.split('.').rev().collect();
    let agent_ptr: &'static str =
        Box::leak(format!("{}.in-addr.arpa.", octets.join(".")).into_boxed_str());
    let cases = cases(&ip, agent_ptr);
    let questions: Vec<(&str, &str)> = cases.iter().map(|c| (c.name, c.rtype)).collect();

    let transports: [(&str, &[&str]); 3] = [
        ("UDP with EDNS0 (4096)", &["--payload=4096"]),
        ("UDP without EDNS0", &["--no-edns"]),
        ("TCP", &["--tcp"]),
    ];
    for (transport, options) in transports {
        let replies = dnspython_batch(&ip, port, &questions, options);
        for (c, reply) in cases.iter().zip(&replies) {
            let what = format!("dnspython {transport}: {} {}", c.name, c.rtype);
            assert_eq!(reply["rcode"], c.rcode, "{what}: {reply}");
            assert_eq!(reply["id_matches"], true, "{what}");
            assert_eq!(
                reply["question"],
                serde_json::json!([c.name]),
                "{what}: question echoed in its case"
            );
            if let Some(answers) = &c.answers {
                assert_eq!(reply["answers"], serde_json::json!(answers), "{what}");
            }
            assert_eq!(
                reply["answer_types"],
                serde_json::json!(c.answer_types),
                "{what}"
            );
            let flags = reply["flags"].as_array().expect("flags");
            let in_zone = c.name.to_ascii_lowercase().ends_with("muster.") || c.rcode != "REFUSED";
            assert_eq!(
                flags.contains(&serde_json::json!("AA")),
                in_zone,
                "{what}: AA {flags:?}"
            );
            assert!(
                !flags.contains(&serde_json::json!("TC")),
                "{what}: truncated"
            );
            assert!(
                !flags.contains(&serde_json::json!("RA")),
                "{what}: never a recursive resolver"
            );
            // Names in the zone: the case of the question is kept.
            if c.answer_types != ["SOA"] && c.answers.as_ref().is_some_and(|a| !a.is_empty()) {
                assert_eq!(reply["answer_names"], serde_json::json!([c.name]), "{what}");
            }
            // Negative answers in muster's zones carry the SOA.
            let negative =
                c.rcode == "NXDOMAIN" || (c.rcode == "NOERROR" && c.answer_types.is_empty());
            let want_authority: &[&str] = if negative { &["SOA"] } else { &[] };
            assert_eq!(
                reply["authority_types"],
                serde_json::json!(want_authority),
                "{what}"
            );
            // EDNS0: an OPT answers an OPT, with muster's payload size.
            if transport.contains("without") {
                assert_eq!(reply["edns"], -1, "{what}: an OPT nobody asked for");
            } else {
                assert_eq!(reply["edns"], 0, "{what}");
                assert_eq!(reply["payload"], 1232, "{what}");
            }
        }
    }

    for c in &cases {
        for tcp in [false, true] {
            let (status, answers) = dig_reply(&ip, port, c.name, c.rtype, tcp);
            let what = format!("dig {} {} tcp={tcp}", c.name, c.rtype);
            assert_eq!(status, c.rcode, "{what}");
            if let Some(want) = &c.answers {
                assert_eq!(&answers, want, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn a_question_compressed_into_the_header_gets_a_readable_formerr_over_udp_and_tcp() {
    use hickory_server::proto::op::{Message, ResponseCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let block = loopback_block();
    let a = Agent::start(AgentSpec::new(&block, 1, "a")).await;
    let server = format!("{}:{}", a.spec.ip, a.dns_port());
    // Found by the fuzz target: the question's name points at offset 2 of
    // the header, which a reply would change under it.
    let query = [
        0x12u8, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x02, 0, 1, 0, 1,
    ];
    let check = |reply: &[u8]| {
        let reply = Message::from_vec(reply).expect("a readable reply");
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    };

    let udp = tokio::net::UdpSocket::bind(format!("{}:0", a.spec.ip))
        .await
        .unwrap();
    udp.send_to(&query, &server).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf))
        .await
        .expect("a UDP reply")
        .unwrap();
    check(&buf[..n]);

    let mut tcp = tokio::net::TcpStream::connect(&server).await.unwrap();
    tcp.write_all(&(query.len() as u16).to_be_bytes())
        .await
        .unwrap();
    tcp.write_all(&query).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut len))
        .await
        .expect("a TCP reply")
        .unwrap();
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    tcp.read_exact(&mut reply).await.unwrap();
    check(&reply);
}
