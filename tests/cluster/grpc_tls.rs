//! gRPC over TLS and mutual TLS, with certificates made by `openssl` for
//! each test: the CLI with the right CA (and client certificate) is
//! answered; a plaintext client, a client without a certificate, or with a
//! certificate from another CA is refused; SIGHUP swaps the server's
//! certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority in `dir`: `<name>.pem` and `<name>.key`.
fn ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A certificate `<name>.pem` (key `<name>.key`) signed by CA `ca`, for
/// `san` (e.g. `IP:127.0.0.1`) and extended key usage `usage`
/// (`serverAuth` or `clientAuth`).
fn issue(dir: &Path, ca: &str, name: &str, san: &str, usage: &str) -> (PathBuf, PathBuf) {
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-days",
            "2",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            &ext.to_string_lossy(),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// `muster ls` against `agent` with extra client flags: Ok(stdout) or
/// Err(stderr).
fn ls(agent: &Agent, flags: &[&str]) -> Result<String, String> {
    let mut args = vec!["ls", "-o", "json", "--addr"];
    let addr = agent.grpc_addr();
    args.push(&addr);
    args.extend_from_slice(flags);
    let out = muster_cli(&args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn records() -> &'static str {
    "[[record]]\nname = \"web-1\"\naddresses = [\"10.0.0.5\"]\n"
}

#[tokio::test]
async fn with_mutual_tls_only_a_client_certificate_from_the_trusted_ca_is_answered() {
    let block = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca_pem = ca(d, "ca");
    ca(d, "other-ca");
    let ip = format!("{block}.1");
    let (cert, key) = issue(d, "ca", "agent", &format!("IP:{ip}"), "serverAuth");
    let (client, client_key) = issue(d, "ca", "client", "DNS:client", "clientAuth");
    let (stranger, stranger_key) = issue(d, "other-ca", "stranger", "DNS:stranger", "clientAuth");
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let spec = AgentSpec::new(&block, 1, "a")
        .with_records(records())
        .with_args(&[
            "--grpc-tls-cert",
            &path(&cert),
            "--grpc-tls-key",
            &path(&key),
            "--grpc-client-ca",
            &path(&ca_pem),
        ]);
    let agent = Agent::start(spec).await;

    let trusted = [
        "--tls-ca",
        &path(&ca_pem),
        "--tls-cert",
        &path(&client),
        "--tls-key",
        &path(&client_key),
    ];
    let listed = eventually(Duration::from_secs(10), "an answer over mTLS", || async {
        ls(&agent, &trusted).ok()
    })
    .await;
    assert!(listed.contains("10.0.0.5"), "{listed}");
    let lookup = muster_cli(&[
        "lookup",
        "web-1",
        "--addr",
        &agent.grpc_addr(),
        trusted[0],
        trusted[1],
        trusted[2],
        trusted[3],
        trusted[4],
        trusted[5],
    ]);
    assert!(lookup.status.success(), "{lookup:?}");

    let refused = [
        ("plaintext", vec![]),
        (
            "TLS without a client certificate",
            vec!["--tls-ca".to_owned(), path(&ca_pem)],
        ),
        (
            "a certificate from another CA",
            vec![
                "--tls-ca".to_owned(),
                path(&ca_pem),
                "--tls-cert".to_owned(),
                path(&stranger),
                "--tls-key".to_owned(),
                path(&stranger_key),
            ],
        ),
    ];
    for (what, flags) in &refused {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let err = ls(&agent, &flags).expect_err(what);
        assert!(err.contains("muster:"), "{what}: {err}");
    }
    let failures = metric(
        &agent,
        "muster_grpc_tls_refused_total{reason=\"handshake\"}",
    )
    .await
    .expect("the counter");
    assert!(failures >= 2.0, "handshakes refused: {failures}");
    assert!(
        ls(&agent, &trusted).is_ok(),
        "still answering the trusted client"
    );
}

#[tokio::test]
async fn a_tls_agent_presents_the_certificate_reloaded_on_sighup_and_keeps_the_old_one_on_a_bad_file()
 {
    let block = loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first_ca = ca(d, "first");
    let second_ca = ca(d, "second");
    let ip = format!("{block}.1");
    let (cert, key) = issue(d, "first", "agent", &format!("IP:{ip}"), "serverAuth");
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let spec = AgentSpec::new(&block, 1, "a")
        .with_records(records())
        .with_args(&[
            "--grpc-tls-cert",
            &path(&cert),
            "--grpc-tls-key",
            &path(&key),
        ]);
    let agent = Agent::start(spec).await;
    let with_ca = |ca: &PathBuf| ls(&agent, &["--tls-ca", &path(ca)]);
    eventually(Duration::from_secs(10), "an answer over TLS", || async {
        with_ca(&first_ca).ok()
    })
    .await;
    assert!(with_ca(&second_ca).is_err(), "a CA it does not chain to");
    assert!(ls(&agent, &[]).is_err(), "plaintext");

    // A bad file on SIGHUP: the certificate in use stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    agent.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), "the refusal logged", || async {
        agent
            .log()
            .contains("gRPC TLS certificates not reloaded")
            .then_some(())
    })
    .await;
    assert!(with_ca(&first_ca).is_ok(), "the old certificate stays");

    // A certificate from the second CA, in place of the first.
    let (new_cert, new_key) = issue(d, "second", "agent2", &format!("IP:{ip}"), "serverAuth");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    agent.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(5),
        "the new certificate presented",
        || async { with_ca(&second_ca).ok() },
    )
    .await;
    assert!(with_ca(&first_ca).is_err(), "the first CA no longer fits");
}

#[tokio::test]
async fn tls_flags_that_do_not_fit_together_stop_start_up_with_a_reason() {
    let block = loopback_block();
    let base = |extra: &[&str]| {
        let mut args = vec!["agent", "--no-docker", "--node-name", "a"];
        args.extend_from_slice(extra);
        let gossip = format!("{block}.1:{GOSSIP_PORT}");
        let grpc = format!("{block}.1:{GRPC_PORT}");
        let out = Command::new(muster_bin())
            .args(&args)
            .args(["--gossip-addr", &gossip, "--grpc-addr", &grpc])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(base(&["--grpc-tls-cert", "c.pem"]).contains("go together"));
    assert!(base(&["--grpc-client-ca", "ca.pem"]).contains("mutual TLS is TLS first"));
    let missing = base(&[
        "--grpc-tls-cert",
        "/nonexistent/c.pem",
        "--grpc-tls-key",
        "/nonexistent/k.pem",
    ]);
    assert!(missing.contains("/nonexistent/c.pem"), "{missing}");
    let cli = muster_cli(&["ls", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
    assert_eq!(cli.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&cli.stderr).contains("need --tls-ca"));
}
