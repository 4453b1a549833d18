//! The status page at `/` of a real agent, fetched over HTTP/1.1 as a
//! browser would: pages, a selector search, a bad selector, and records
//! from another agent, with everything from the network escaped.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// An HTTP answer: status code, header block and body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// `GET path` on `addr` with HTTP/1.1, the connection closed after the
/// answer; `None` if the agent does not answer within 5 s.
async fn get(addr: &str, path: &str) -> Option<Reply> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await.ok()?;
        Some(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()??;
    let reply = String::from_utf8(reply).expect("the page is UTF-8");
    let (head, body) = reply.split_once("\r\n\r\n").expect("headers, then a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    // The page is sent whole, with its length: no chunked encoding to undo.
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a Content-Length");
    assert_eq!(body.len(), length, "body of {path}");
    Some(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// 250 records `svc-001` to `svc-250`; the even ones are `app=web`, the
/// others `app=db`; `svc-007` carries markup in a label.
fn records() -> String {
    let mut toml = String::new();
    for i in 1..=250 {
        let app = if i % 2 == 0 { "web" } else { "db" };
        let note = if i == 7 { "<b>bold</b>" } else { "plain" };
        toml.push_str(&format!(
            "[[record]]\nname = \"svc-{i:03}\"\naddresses = [\"10.9.{}.{}\"]\n\
             ports = [\"8080/tcp\"]\nimage = \"example/svc:1\"\n\
             labels = {{ app = \"{app}\", note = \"{note}\" }}\n",
            i / 200,
            i % 200 + 1,
        ));
    }
    toml
}

fn assert_has(reply: &Reply, what: &str, expected: &[&str], absent: &[&str]) {
    for e in expected {
        assert!(
            reply.body.contains(e),
            "{what}: {e:?} not on the page:\n{}",
            reply.body
        );
    }
    for a in absent {
        assert!(!reply.body.contains(a), "{what}: {a:?} on the page");
    }
}

#[tokio::test]
async fn status_page_pages_searches_and_reports_bad_selectors() {
    let block = loopback_block();
    let a_spec = AgentSpec::new(&block, 1, "a").with_records(&records());
    let _a = Agent::start(a_spec.clone()).await;
    let b = Agent::start(AgentSpec::new(&block, 2, "b").joining(&a_spec)).await;
    let b_http = format!("{}:{HTTP_PORT}", b.spec.ip);

    // b shows a's records once gossip has brought them, and both agents.
    let first = eventually(Duration::from_secs(20), "250 records on b's page", || {
        let b_http = b_http.clone();
        async move {
            let reply = get(&b_http, "/").await?;
            (reply.body.contains("of <strong>250</strong>")
                && reply.body.matches(">alive<").count() == 2)
                .then_some(reply)
        }
    })
    .await;
    assert_eq!(first.status, 200);
    assert!(
        first
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/html; charset=utf-8"),
        "{}",
        first.head
    );
    assert_has(
        &first,
        "/",
        &[
            "<title>muster · b</title>",
            "node <strong>b</strong>",
            "this agent",
            &format!("{}:{GOSSIP_PORT}", a_spec.ip),
            "records <strong>1–100</strong> of <strong>250</strong>",
            "page 1 of 3",
            "href=\"/?page=2\" rel=\"next\"",
            "svc-001",
            "svc-100",
            "10.9.0.2",
            "8080/tcp",
            "example/svc:1",
            "note=&lt;b&gt;bold&lt;/b&gt;",
            "No record breaks the naming policy",
        ],
        &["svc-101", "<b>bold", "rel=\"prev\""],
    );

    let second = get(&b_http, "/?page=2").await.expect("page 2");
    assert_eq!(second.status, 200);
    assert_has(
        &second,
        "/?page=2",
        &[
            "records <strong>101–200</strong> of <strong>250</strong>",
            "href=\"/?page=1\" rel=\"prev\"",
            "href=\"/?page=3\" rel=\"next\"",
            "svc-101",
            "svc-200",
        ],
        &["svc-100<", "svc-201"],
    );

    let web = get(&b_http, "/?selector=app%3Dweb&q=SVC-0")
        .await
        .expect("app=web");
    assert_eq!(web.status, 200);
    // svc-002 to svc-098, even.
    assert_has(
        &web,
        "app=web",
        &[
            "records <strong>1–49</strong> of <strong>49</strong> matching (250 in the directory)",
            "value=\"app=web\"",
            "svc-002",
            "svc-098",
        ],
        &["svc-001<", "svc-100", "page 1 of"],
    );

    let bad = get(&b_http, "/?selector=bad%20sel")
        .await
        .expect("bad selector");
    assert_eq!(bad.status, 400);
    assert_has(
        &bad,
        "bad selector",
        &[
            "Bad request",
            "bad selector at column",
            "value=\"bad sel\"",
            "node <strong>b</strong>",
        ],
        &["svc-001"],
    );
}
