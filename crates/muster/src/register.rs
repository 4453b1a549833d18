//! `muster register`: publishes a record from the agent it asks, and keeps
//! it alive while the command runs.
//!
//! Without `--once` it registers, sends a KeepAlive every third of the TTL,
//! registers again when the agent no longer knows the registration (its TTL
//! lapsed, or the agent restarted), and rides out an agent that cannot be
//! reached for a while (the record lapses on its own if that lasts longer
//! than the TTL). On SIGINT or SIGTERM it deregisters and exits 0. With
//! `--once` it registers and exits; the record lapses after the TTL.
//!
//! Exit codes: 0 registered (and, without `--once`, deregistered), 2 usage
//! or connection error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use clap::Args;
use muster_core::{Address, Port, Record, Source};
use muster_proto::v1;
use muster_proto::v1::directory_client::DirectoryClient;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tonic::Code;
use tonic::transport::Channel;

use crate::client::{ClientArgs, ClientError, Outcome, Output, call_error, connect};

/// `muster register` options.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The DNS label the record answers to
    name: String,

    /// An address it answers with (IPv4 or IPv6); repeatable, at least one
    #[arg(long = "ip", value_name = "IP", required = true)]
    ips: Vec<IpAddr>,

    /// A label, KEY=VALUE; repeatable
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// A port it serves on, PORT[/tcp|udp|sctp] or HOSTPORT:PORT[/PROTO]; repeatable
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<Port>,

    /// A further name it answers to; repeatable
    #[arg(long = "alias", value_name = "ALIAS")]
    aliases: Vec<String>,

    /// The registration's id, for KeepAlive and Deregister (default: NAME);
    /// published as reg:ID
    #[arg(long, value_name = "ID")]
    id: Option<String>,

    /// How long the record lives without a keep-alive, whole seconds
    /// from 1s to 24h (e.g. 30s, 5m)
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_ttl)]
    ttl: Duration,

    /// Register and exit: the record lapses after --ttl
    #[arg(long)]
    once: bool,

    /// File holding the agent's write token (its --api-token-file), sent as
    /// `authorization: Bearer <token>`; without it, the token in the
    /// MUSTER_TOKEN environment variable, if any
    #[arg(long, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    client: ClientArgs,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if ttl.subsec_nanos() != 0 || !(1..=86_400).contains(&ttl.as_secs()) {
        return Err(format!("{s:?}: a TTL is whole seconds from 1s to 24h"));
    }
    Ok(ttl)
}

impl RegisterArgs {
    /// The request this command sends, built as a core record so the wire
    /// conversion is muster-proto's.
    fn request(&self) -> v1::RegisterRequest {
        let mut record = Record::new(
            self.id.clone().unwrap_or_default(),
            self.name.clone(),
            Source::Registered,
        );
        record.aliases.clone_from(&self.aliases);
        record.addresses = self
            .ips
            .iter()
            .map(|&ip| Address {
                // The agent names the network of registered addresses.
                network: String::new(),
                ip,
                local: false,
            })
            .collect();
        record.ports.clone_from(&self.ports);
        record.labels = self.labels.iter().cloned().collect::<BTreeMap<_, _>>();
        v1::RegisterRequest {
            record: Some(v1::Record::from(&record)),
            ttl_seconds: self.ttl.as_secs() as u32,
        }
    }
}

/// `muster register NAME --ip IP ...`.
pub async fn run(args: &RegisterArgs) -> Result<Outcome, ClientError> {
    let addr = &args.client.addr;
    // Signals first: one that arrives while registering still deregisters.
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| ClientError(format!("SIGTERM: {e}")))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| ClientError(format!("SIGINT: {e}")))?;
    let mut client = connect(&args.client).await?;
    let token = args.token()?;
    let request = args.request();
    let id = register(&mut client, args, &token, request.clone()).await?;
    if args.once {
        return Ok(Outcome::Found);
    }

    let mut ticks = tokio::time::interval(args.ttl / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        let keep_alive = v1::KeepAliveRequest {
            id: id.clone(),
            ttl_seconds: 0,
        };
        match client.keep_alive(authorized(&token, keep_alive)).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {
                eprintln!("muster: the agent no longer knows {id}; registering again");
                if let Err(e) = register(&mut client, args, &token, request.clone()).await {
                    eprintln!("muster: {e}; retrying");
                }
            }
            // The agent may be restarting: keep trying, it lapses on its own.
            Err(status) => eprintln!("muster: keep-alive: {}; retrying", call_error(addr, status)),
        }
    }

    match client
        .deregister(authorized(&token, v1::DeregisterRequest { id: id.clone() }))
        .await
    {
        Ok(_) => {
            eprintln!("muster: deregistered {id}");
            Ok(Outcome::Found)
        }
        Err(status) if status.code() == Code::NotFound => Ok(Outcome::Found),
        Err(status) => Err(ClientError(format!(
            "deregistering {id}: {} (it lapses after its TTL)",
            call_error(addr, status)
        ))),
    }
}

impl RegisterArgs {
    /// The write token to send: from --token-file, else MUSTER_TOKEN.
    fn token(&self) -> Result<Option<String>, ClientError> {
        match &self.token_file {
            Some(path) => crate::config::read_token(path)
                .map(Some)
                .map_err(|e| ClientError(format!("{e:#}"))),
            None => match std::env::var("MUSTER_TOKEN") {
                Ok(t) if t.trim().is_empty() => Ok(None),
                Ok(t) if t.trim().bytes().all(|b| b.is_ascii_graphic()) => {
                    Ok(Some(t.trim().to_owned()))
                }
                Ok(_) => Err(ClientError(
                    "MUSTER_TOKEN: a token is visible ASCII characters, no spaces".to_owned(),
                )),
                Err(_) => Ok(None),
            },
        }
    }
}

/// `message` as a request carrying `authorization: Bearer <token>` when
/// there is a token.
fn authorized<T>(token: &Option<String>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = token
        .as_ref()
        .and_then(|t| format!("Bearer {t}").parse().ok())
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// What `-o json` prints for one registration.
#[derive(Serialize)]
struct Registered<'a> {
    id: &'a str,
    name: &'a str,
    host: &'a str,
    addresses: Vec<String>,
    ttl_seconds: u64,
    expires_at_ms: i64,
    conflicts: Vec<Conflict<'a>>,
}

#[derive(Serialize)]
struct Conflict<'a> {
    id: &'a str,
    name: &'a str,
    host: &'a str,
    source: &'a str,
}

/// Registers, prints what was registered (conflicts as a warning on
/// stderr), and returns the published id.
async fn register(
    client: &mut DirectoryClient<Channel>,
    args: &RegisterArgs,
    token: &Option<String>,
    request: v1::RegisterRequest,
) -> Result<String, ClientError> {
    let response = client
        .register(authorized(token, request))
        .await
        .map_err(|status| call_error(&args.client.addr, status))?
        .into_inner();
    let bad_answer = |e| ClientError(format!("the agent answered a bad record: {e}"));
    let record = Record::try_from(response.record.unwrap_or_default()).map_err(bad_answer)?;
    let others = response
        .conflicts
        .into_iter()
        .map(Record::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad_answer)?;
    for other in &others {
        eprintln!(
            "warning: {} is also answered by {} (id {}, {} record on {})",
            record.name,
            other.name,
            other.id,
            other.source.as_str(),
            other.host
        );
    }
    let addresses: Vec<String> = record.addresses.iter().map(|a| a.ip.to_string()).collect();
    if args.client.output == Output::Json {
        let doc = Registered {
            id: &record.id,
            name: &record.name,
            host: &record.host,
            addresses,
            ttl_seconds: args.ttl.as_secs(),
            expires_at_ms: response.expires_at_ms,
            conflicts: others
                .iter()
                .map(|r| Conflict {
                    id: &r.id,
                    name: &r.name,
                    host: &r.host,
                    source: r.source.as_str(),
                })
                .collect(),
        };
        let line = serde_json::to_string(&doc).map_err(|e| ClientError(e.to_string()))?;
        println!("{line}");
    } else {
        println!(
            "registered {} ({}) on {}: {}; ttl {}{}",
            record.name,
            record.id,
            record.host,
            addresses.join(", "),
            humantime::format_duration(args.ttl),
            if args.once {
                ""
            } else {
                ", kept alive until interrupted"
            }
        );
    }
    Ok(record.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_seconds_from_one_second_to_a_day() {
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        for bad in ["0s", "1500ms", "25h", "soon"] {
            assert!(parse_ttl(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn labels_are_key_equals_value() {
        assert_eq!(parse_label("app=mon"), Ok(("app".into(), "mon".into())));
        assert_eq!(parse_label("k="), Ok(("k".into(), String::new())));
        assert!(parse_label("=v").is_err());
        assert!(parse_label("app").is_err());
    }
}
