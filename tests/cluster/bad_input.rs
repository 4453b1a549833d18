//! Bad input gets a clear error and never takes an agent down.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use crate::directory::WEB_RECORDS;
use crate::harness::*;

#[test]
fn a_malformed_static_file_stops_startup_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.toml");
    std::fs::write(
        &path,
        "[[record]]\nname = \"web-1\"\n\n[[record]]\nname = \"bad_name\"\n",
    )
    .unwrap();
    let block = loopback_block();
    let spec = AgentSpec::new(&block, 1, "a");
    let out = spec
        .command(dir.path())
        .arg("--static-file")
        .arg(&path)
        .output()
        .expect("run agent");
    assert!(!out.status.success(), "agent started with a bad file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("bad_name"), "{stderr}");
}

#[test]
fn bad_flags_and_config_files_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("muster.toml");
    std::fs::write(&config, "zone = \"muster\"\ngossip-adr = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(muster_bin())
        .args(["agent", "--no-docker", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("muster.toml:2") && stderr.contains("gossip-adr"),
        "{stderr}"
    );

    let out = Command::new(muster_bin())
        .args(["agent", "--no-docker", "--node-name", "not_a_label"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_a_label"));
}

#[tokio::test]
async fn junk_packets_at_the_dns_and_gossip_ports_leave_the_agent_serving() {
    let block = loopback_block();
    let mut a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(WEB_RECORDS)).await;
    let ip = a.spec.ip.clone();
    eventually(Duration::from_secs(10), "web-1 served", || async {
        (dig(&ip, DNS_PORT, &["+short", "web-1.muster"]).trim() == "10.0.0.5").then_some(())
    })
    .await;

    let socket = UdpSocket::bind(format!("{ip}:0")).unwrap();
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0; 11],
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01".to_vec(), // pointer loop
        b"\x12\x34\x01\x00\x00\x05\x00\x00\x00\x00\x00\x00\x03web".to_vec(), // truncated question
        (0..=255u8).cycle().take(4000).collect(),
    ];
    for _ in 0..20 {
        for packet in &junk {
            socket.send_to(packet, format!("{ip}:{DNS_PORT}")).unwrap();
            socket
                .send_to(packet, format!("{ip}:{GOSSIP_PORT}"))
                .unwrap();
        }
    }
    // Junk over TCP as well.
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(format!("{ip}:{DNS_PORT}")).unwrap();
        let _ = tcp.write_all(b"\x00\x05hello\xff\xff\x00\x00");
    }
    // And at the gossip port's TCP side, which carries messages too large
    // for a datagram: another protocol, a frame longer than any datagram, a
    // well-framed payload that is not a chitchat message. Each is cut off
    // and counted; a half-sent preface just waits to be timed out.
    let malformed = "muster_gossip_rejected_total{reason=\"malformed\"}";
    eventually(Duration::from_secs(5), "the UDP junk counted", || async {
        let now = metric(&a, malformed).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        (metric(&a, malformed).await? == now).then_some(())
    })
    .await;
    let before = metric(&a, malformed).await.unwrap();
    let frame = |len: u32, payload: &[u8]| {
        let mut f = b"MGOSSIP1".to_vec();
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&GOSSIP_PORT.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let held = {
        use std::io::Write;
        for junk in [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            frame(1 << 20, b""),
            frame(4, b"\xff\xff\xff\xff"),
        ] {
            let mut tcp = std::net::TcpStream::connect(format!("{ip}:{GOSSIP_PORT}")).unwrap();
            tcp.write_all(&junk).unwrap();
        }
        let mut held = std::net::TcpStream::connect(format!("{ip}:{GOSSIP_PORT}")).unwrap();
        held.write_all(b"MGOS").unwrap();
        held
    };
    eventually(Duration::from_secs(5), "three TCP junk counted", || async {
        (metric(&a, malformed).await? == before + 3.0).then_some(())
    })
    .await;
    drop(held);

    assert!(a.is_running(), "agent died");
    assert_eq!(
        dig(&ip, DNS_PORT, &["+short", "web-1.muster"]).trim(),
        "10.0.0.5"
    );
    assert_eq!(a.lookup("web-1").await.len(), 1);
    let reply = dnspython(&ip, DNS_PORT, "web-1.muster.", "A", true);
    assert_eq!(reply["answers"], serde_json::json!(["10.0.0.5"]));
}

#[tokio::test]
async fn cli_exit_codes_tell_found_from_not_found_from_errors() {
    let block = loopback_block();
    let a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(WEB_RECORDS)).await;
    let addr = a.grpc_addr();
    eventually(Duration::from_secs(10), "web-1 served", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    let code = |args: &[&str]| muster_cli(args).status.code();
    assert_eq!(code(&["lookup", "web-1", "--addr", &addr]), Some(0));
    assert_eq!(code(&["lookup", "nope", "--addr", &addr]), Some(1));
    assert_eq!(code(&["ls", "-l", "app=nope", "--addr", &addr]), Some(1));
    let bad = muster_cli(&["ls", "-l", "app in web", "--addr", &addr]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("column 8"));
    assert_eq!(
        code(&["members", "--addr", &format!("{}.99:1", block)]),
        Some(2)
    );
    assert_eq!(code(&["lookup"]), Some(2));
}

/// `muster agent` with no flags at all is a working single-host agent on
/// the documented default addresses (127.0.0.1: DNS 8600, gRPC 8700,
/// HTTP 8800, gossip 7946).
#[tokio::test]
async fn an_agent_with_no_flags_serves_on_the_default_addresses() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut child = Command::new(muster_bin())
        .arg("agent")
        .current_dir(dir.path())
        .env_remove("MUSTER_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let members = eventually(
        Duration::from_secs(20),
        "the default agent to answer",
        || async {
            let out = muster_cli(&["members", "-o", "json"]);
            out.status
                .success()
                .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
        },
    )
    .await;
    let me = &members["members"][0];
    assert_eq!(me["state"], "alive");
    assert_eq!(me["gossip_addr"], "127.0.0.1:7946");
    let node = me["name"].as_str().unwrap().to_owned();
    let soa = dig("127.0.0.1", 8600, &["+short", "muster", "SOA"]);
    assert!(soa.starts_with(&format!("{node}.host.muster.")), "{soa}");

    let mut http = std::net::TcpStream::connect("127.0.0.1:8800").unwrap();
    http.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    http.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );

    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("muster agent started"), "{log}");
}

/// DNS-over-TCP clients that never finish a query (RFC 7766 framing: a
/// 2-byte length, then the message) hold no resource other clients need:
/// while 150 of them are open, dig gets its answer over TCP and UDP as
/// usual, and the agent closes every one of them after its idle timeout
/// (5 s), the trickling ones included.
#[tokio::test]
async fn slow_and_oversized_tcp_clients_do_not_stall_other_dns_clients() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    const EACH_KIND: usize = 50;
    // A bound against hangs, not a speed claim.
    const ANSWER_WITHIN: Duration = Duration::from_secs(2);

    let block = loopback_block();
    let mut a = Agent::start(AgentSpec::new(&block, 1, "a").with_records(WEB_RECORDS)).await;
    let ip = a.spec.ip.clone();
    eventually(Duration::from_secs(10), "web-1 served", || async {
        (dig(&ip, DNS_PORT, &["+short", "web-1.muster"]).trim() == "10.0.0.5").then_some(())
    })
    .await;

    let open = |first_bytes: &[u8]| -> TcpStream {
        let mut stream = TcpStream::connect(format!("{ip}:{DNS_PORT}")).expect("connect");
        stream.write_all(first_bytes).expect("send the first bytes");
        stream.set_nonblocking(true).expect("nonblocking");
        stream
    };
    // Announce a 65535-byte query, then send nothing.
    let oversized: Vec<TcpStream> = (0..EACH_KIND).map(|_| open(&[0xff, 0xff])).collect();
    // Send one byte of the length, then hang (slowloris).
    let half_length: Vec<TcpStream> = (0..EACH_KIND).map(|_| open(&[0x00])).collect();
    // Announce 512 bytes, then send a few per second: never a whole query.
    let trickling: Vec<TcpStream> = (0..EACH_KIND).map(|_| open(&[0x02, 0x00])).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let streams: Vec<TcpStream> = trickling
            .iter()
            .map(|s| s.try_clone().expect("clone"))
            .collect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            // At most 30 s of trickling (5 bytes a second, under 512).
            for round in 0..150u8 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for mut s in &streams {
                    // The agent closes these; writes then fail, which is fine.
                    let _ = s.write(&[round]);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let junk: Vec<&TcpStream> = oversized
        .iter()
        .chain(&half_length)
        .chain(&trickling)
        .collect();

    let timed_dig = |args: &[&str]| {
        let start = Instant::now();
        let answer = dig(&ip, DNS_PORT, args);
        (answer.trim().to_owned(), start.elapsed())
    };
    let (answer, took) = timed_dig(&["+short", "+tcp", "web-1.muster"]);
    assert_eq!(answer, "10.0.0.5", "dig +tcp");
    assert!(took < ANSWER_WITHIN, "dig +tcp took {took:?}");
    let (answer, took) = timed_dig(&["+short", "web-1.muster", "AAAA"]);
    assert_eq!(answer, "fd00::5", "dig over UDP");
    assert!(took < ANSWER_WITHIN, "dig over UDP took {took:?}");
    let still_open = junk.iter().filter(|s| !closed_by_peer(s)).count();
    assert_eq!(
        still_open,
        junk.len(),
        "the junk connections must still be open when the clients are answered"
    );

    let junk = &junk;
    eventually(
        Duration::from_secs(20),
        "the agent to close every junk connection",
        || async move { junk.iter().all(|s| closed_by_peer(s)).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    trickler.join().expect("the trickling thread");
    drop((oversized, half_length, trickling));

    assert!(a.is_running(), "agent died");
    assert_eq!(
        dig(&ip, DNS_PORT, &["+short", "+tcp", "web-1.muster"]).trim(),
        "10.0.0.5"
    );
    assert_eq!(
        dig(&ip, DNS_PORT, &["+short", "web-1.muster"]).trim(),
        "10.0.0.5"
    );
    let reply = dnspython(&ip, DNS_PORT, "web-1.muster.", "AAAA", true);
    assert_eq!(reply["answers"], serde_json::json!(["fd00::5"]));
}

/// Whether the other end has closed (or reset) a nonblocking stream; bytes
/// it sent are read and dropped (a peer that keeps sending counts as open).
fn closed_by_peer(mut stream: &std::net::TcpStream) -> bool {
    use std::io::{ErrorKind, Read};
    let mut buf = [0; 512];
    for _ in 0..16 {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

/// What a reply was: (truncated, A records).
fn read_reply(bytes: &[u8]) -> (bool, usize) {
    let reply = hickory_server::proto::op::Message::from_vec(bytes).expect("a DNS reply");
    (reply.metadata.truncation, reply.answers.len())
}

#[tokio::test]
async fn a_dns_flood_from_one_network_is_rate_limited_while_another_is_answered_in_full() {
    const LIMIT: usize = 50;
    let block = loopback_block();
    let a = Agent::start(
        AgentSpec::new(&block, 1, "a")
            .with_records(WEB_RECORDS)
            .with_args(&["--dns-rate-limit", &LIMIT.to_string()]),
    )
    .await;
    let server = format!("{}:{}", a.spec.ip, a.dns_port());
    eventually(Duration::from_secs(10), "web-1 served", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    // Two client networks (two /24s of loopback other than the agent's).
    let flooder_ip = format!("{}.9", loopback_block());
    let other_ip = format!("{}.9", loopback_block());

    let flood = {
        let (server, ip) = (server.clone(), flooder_ip.clone());
        std::thread::spawn(move || {
            let socket = UdpSocket::bind(format!("{ip}:0")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let started = std::time::Instant::now();
            let (mut full, mut truncated, mut sent) = (0, 0, 0);
            let mut buf = [0u8; 1500];
            // 20 bursts of 50, replies read between bursts so that none is
            // lost in this socket's receive buffer.
            for burst in 0..20u16 {
                for k in 0..50u16 {
                    socket
                        .send_to(&a_query("web-1.muster.", burst * 50 + k), &server)
                        .unwrap();
                    sent += 1;
                }
                while let Ok(n) = socket.recv(&mut buf) {
                    match read_reply(&buf[..n]) {
                        (true, 0) => truncated += 1,
                        (false, 1) => full += 1,
                        other => panic!("unexpected reply {other:?}"),
                    }
                }
            }
            (sent, full, truncated, started.elapsed())
        })
    };
    // Meanwhile the other network asks within its limit, and gets every
    // answer in full.
    let other = {
        let (server, ip) = (server.clone(), other_ip.clone());
        std::thread::spawn(move || {
            let socket = UdpSocket::bind(format!("{ip}:0")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 1500];
            let mut replies = Vec::new();
            for id in 0..20u16 {
                socket
                    .send_to(&a_query("web-1.muster.", id), &server)
                    .unwrap();
                let n = socket
                    .recv(&mut buf)
                    .expect("an answer to the other network");
                replies.push(read_reply(&buf[..n]));
                std::thread::sleep(Duration::from_millis(25));
            }
            replies
        })
    };
    let (sent, full, truncated, took) = flood.join().unwrap();
    let other = other.join().unwrap();
    eprintln!("flood: {sent} sent in {took:?}, {full} answered, {truncated} truncated");
    assert!(
        other.iter().all(|r| *r == (false, 1)),
        "the other network was limited: {other:?}"
    );
    // At most LIMIT full answers per second the flood touched.
    let seconds = took.as_secs() as usize + 2;
    assert!(
        (1..=LIMIT * seconds).contains(&full),
        "{full} full answers in {took:?}"
    );
    let limited = sent - full;
    // Slip 2: about every second limited answer truncated, the rest
    // dropped (some replies may still be in flight when the flood stops).
    assert!(
        truncated > 0 && truncated <= limited / 2 + 1 && truncated >= limited / 4,
        "{truncated} truncated of {limited} limited"
    );
    // TCP is never limited, even from the flooding network.
    let tcp = Command::new("dig")
        .args(["-b", &flooder_ip, "+tcp", "+short", "-p"])
        .arg(a.dns_port().to_string())
        .args([&format!("@{}", a.spec.ip), "web-1.muster"])
        .output()
        .expect("dig");
    assert_eq!(String::from_utf8_lossy(&tcp.stdout).trim(), "10.0.0.5");
    let metrics = http_get(&format!("{}:{HTTP_PORT}", a.spec.ip), "/metrics")
        .await
        .expect("metrics");
    for action in ["truncated", "dropped"] {
        assert!(
            metrics.body.contains(&format!(
                "muster_dns_rate_limited_total{{action=\"{action}\"}}"
            )),
            "{action} not counted"
        );
    }
    // The agent is alive and well.
    assert_eq!(a.lookup("web-1").await.len(), 1);
}

#[tokio::test]
async fn dns_tcp_connections_past_the_limit_are_closed_and_counted_and_udp_keeps_answering() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    const LIMIT: usize = 4;
    let block = loopback_block();
    let a = Agent::start(
        AgentSpec::new(&block, 1, "a")
            .with_records(WEB_RECORDS)
            .with_args(&["--dns-max-tcp-connections", &LIMIT.to_string()]),
    )
    .await;
    let server = format!("{}:{}", a.spec.ip, a.dns_port());
    eventually(Duration::from_secs(10), "web-1 served", || async {
        (!a.lookup("web-1").await.is_empty()).then_some(())
    })
    .await;
    // One query over TCP on `stream`: the A answers, or None when the
    // server closed the connection.
    let ask = |stream: &mut TcpStream, id: u16| -> Option<usize> {
        let query = a_query("web-1.muster.", id);
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed).ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).ok()?;
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).ok()?;
        Some(reply.len())
    };
    let connect = || {
        let s = TcpStream::connect(&server).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    };
    // LIMIT connections, each answered once and kept open (idle: the
    // server closes idle ones after 5 s, far longer than this test).
    let mut held: Vec<TcpStream> = (0..LIMIT).map(|_| connect()).collect();
    for (i, s) in held.iter_mut().enumerate() {
        assert!(ask(s, i as u16).is_some(), "connection {i} answered");
    }
    // One more is closed at once, unanswered.
    let mut extra = connect();
    assert_eq!(ask(&mut extra, 99), None, "over the limit: closed");
    let refused = metric(&a, "muster_dns_tcp_refused_total").await.unwrap();
    assert!(refused >= 1.0, "counted: {refused}");
    // UDP is not affected.
    let socket = UdpSocket::bind(format!("{}:0", a.spec.ip)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(
        resolve_a(&socket, &server, "web-1.muster.").as_deref(),
        Some("10.0.0.5")
    );
    // A connection closed frees its place.
    drop(held.pop());
    let mut again = eventually(Duration::from_secs(3), "a place freed", || async {
        let mut s = connect();
        ask(&mut s, 100).map(|_| s)
    })
    .await;
    assert!(ask(&mut again, 101).is_some());
}
