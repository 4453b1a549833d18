//! The status page at `/` of a real agent, fetched over HTTP as a
//! browser would: pages, a selector search, a bad selector, and records
//! from another agent, with everything from the network escaped.

use std::time::Duration;

use crate::harness::*;

/// `GET path` on `addr`; the page is sent whole, with its length.
async fn get(addr: &str, path: &str) -> Option<HttpReply> {
    let reply = http_get(addr, path).await?;
    let length: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length");
    assert_eq!(reply.body.len(), length, "body of {path}");
    Some(reply)
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

fn assert_has(reply: &HttpReply, what: &str, expected: &[&str], absent: &[&str]) {
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
