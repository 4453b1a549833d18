//! The client subcommands (`lookup`, `ls`, `members`, `watch`): call the
//! gRPC API of an agent and print a table or JSON.
//!
//! Exit codes: 0 when something was found, 1 when nothing was, 2 for usage
//! or connection errors.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use muster_core::Record;
use muster_proto::v1;
use muster_proto::v1::directory_client::DirectoryClient;
use serde::Serialize;
use std::path::PathBuf;
use tabwriter::TabWriter;
use tonic::Code;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How long to wait for an agent to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer accepted from an agent.
const MAX_ANSWER_BYTES: usize = 512 * 1024 * 1024;
/// How long to wait for an answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Options every client subcommand takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// gRPC address of the agent to ask
    #[arg(
        long,
        env = "MUSTER_ADDR",
        default_value = "127.0.0.1:8700",
        value_name = "HOST:PORT"
    )]
    pub addr: String,

    /// Speak TLS, trusting the agent's certificate if it chains to this PEM
    /// CA (the agent runs with --grpc-tls-cert)
    #[arg(long, env = "MUSTER_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for an agent that requires one
    /// (--grpc-client-ca); needs --tls-key and --tls-ca
    #[arg(long, env = "MUSTER_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert
    #[arg(long, env = "MUSTER_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people
    Table,
    /// More columns: id, image, health, source, every network
    Wide,
    /// One JSON document for programs (`watch`: one JSON object per line)
    Json,
}

/// What a client command ended with, mapped to the process exit code.
pub enum Outcome {
    Found,
    NotFound,
}

/// A failure that exits with code 2.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) async fn connect(args: &ClientArgs) -> Result<DirectoryClient<Channel>, ClientError> {
    connect_with(args, Some(CALL_TIMEOUT)).await
}

/// The TLS settings of `--tls-ca`, `--tls-cert` and `--tls-key`, if any.
fn tls_config(args: &ClientArgs) -> Result<Option<ClientTlsConfig>, ClientError> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .map_err(|e| ClientError(format!("cannot read {what} {}: {e}", path.display())))
    };
    let Some(ca) = &args.tls_ca else {
        if args.tls_cert.is_some() || args.tls_key.is_some() {
            return Err(ClientError(
                "--tls-cert and --tls-key need --tls-ca (the CA the agent's certificate chains to)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "CA")?));
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read(cert, "certificate")?,
                read(key, "key")?,
            ));
        }
        (None, None) => {}
        _ => return Err(ClientError("--tls-cert and --tls-key go together".into())),
    }
    Ok(Some(config))
}

/// Connects to an agent; `timeout` bounds every call (none for streams).
async fn connect_with(
    args: &ClientArgs,
    timeout: Option<Duration>,
) -> Result<DirectoryClient<Channel>, ClientError> {
    let addr = &args.addr;
    let tls = tls_config(args)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = Channel::from_shared(uri)
        .map_err(|e| ClientError(format!("bad address {addr:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| ClientError(format!("TLS settings: {e}")))?;
    }
    if let Some(timeout) = timeout {
        endpoint = endpoint.timeout(timeout);
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
        ClientError(format!("cannot reach muster agent at {addr}: {e}{cause}"))
    })?;
    // A whole large directory is one List answer: allow far more than
    // tonic's 4 MiB default (50,000 records are about 6 MB).
    Ok(DirectoryClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES))
}

pub(crate) fn call_error(addr: &str, status: tonic::Status) -> ClientError {
    match status.code() {
        Code::InvalidArgument => ClientError(status.message().to_owned()),
        Code::Unavailable => ClientError(format!(
            "muster agent at {addr} is unavailable: {}",
            status.message()
        )),
        // The connection broke under the call: most often a client that
        // does not speak the agent's TLS.
        Code::Unknown | Code::Cancelled
            if status.message().contains("transport error")
                || status.message().contains("canceled") =>
        {
            ClientError(format!(
                "muster agent at {addr}: the connection broke ({}); if the agent serves gRPC \
                 over TLS, give --tls-ca, and --tls-cert and --tls-key if it requires client \
                 certificates",
                status.message()
            ))
        }
        _ => ClientError(format!(
            "muster agent at {addr}: {}: {}",
            status.code(),
            status.message()
        )),
    }
}

/// `muster lookup NAME`.
pub async fn lookup(name: &str, args: &ClientArgs) -> Result<Outcome, ClientError> {
    let mut client = connect(args).await?;
    match client
        .lookup(v1::LookupRequest {
            name: name.to_owned(),
        })
        .await
    {
        Ok(response) => {
            let response = response.into_inner();
            print_records(response.records, response.revision, args.output)?;
            Ok(Outcome::Found)
        }
        Err(status) if status.code() == Code::NotFound => {
            if args.output == Output::Json {
                print_records(Vec::new(), 0, args.output)?;
            }
            eprintln!("{}", status.message());
            Ok(Outcome::NotFound)
        }
        Err(status) => Err(call_error(&args.addr, status)),
    }
}

/// What `muster ls` lists.
pub struct ListFilter {
    pub selector: String,
    pub host: Option<String>,
    pub state: Option<muster_core::State>,
}

/// Parses a state name as `--state` takes it, in any case.
pub fn parse_state(s: &str) -> Result<muster_core::State, String> {
    s.to_ascii_lowercase()
        .parse()
        .map_err(|e: muster_core::UnknownState| e.to_string())
}

/// `muster ls [-l SELECTOR] [--host H] [--state S]`.
pub async fn list(filter: &ListFilter, args: &ClientArgs) -> Result<Outcome, ClientError> {
    let mut client = connect(args).await?;
    let response = client
        .list(v1::ListRequest {
            selector: filter.selector.clone(),
            host: filter.host.clone().unwrap_or_default(),
            state: filter.state.map(|s| muster_proto::state_to_wire(s) as i32),
        })
        .await
        .map_err(|s| call_error(&args.addr, s))?
        .into_inner();
    let found = !response.records.is_empty();
    print_records(response.records, response.revision, args.output)?;
    Ok(if !found {
        if args.output != Output::Json {
            eprintln!("no records match");
        }
        Outcome::NotFound
    } else {
        Outcome::Found
    })
}

/// `muster members`.
pub async fn members(args: &ClientArgs) -> Result<Outcome, ClientError> {
    let mut client = connect(args).await?;
    let response = client
        .members(v1::MembersRequest {})
        .await
        .map_err(|s| call_error(&args.addr, s))?
        .into_inner();
    let members: Vec<MemberJson> = response.members.iter().map(MemberJson::from).collect();
    match args.output {
        Output::Json => print_json(&MembersJson {
            members,
            revision: response.revision,
        })?,
        Output::Table | Output::Wide => {
            let mut t = table();
            let wide = args.output == Output::Wide;
            write!(
                t,
                "NAME\tSTATE\tGOSSIP ADDRESS\tRECORDS\tDOCKER\tVERSION\tLAST HEARD"
            )
            .map_err(io_error)?;
            writeln!(
                t,
                "{}",
                if wide {
                    "\tGENERATION\tBEHIND\tGRPC\tPOLICY\tDOCKER ERROR"
                } else {
                    ""
                }
            )
            .map_err(io_error)?;
            for m in &members {
                write!(
                    t,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    m.name,
                    m.state,
                    m.gossip_addr,
                    m.records,
                    dash(&m.docker),
                    dash(&m.version),
                    m.last_heard_ms.map_or("-".to_owned(), |ms| age(ms / 1000)),
                )
                .map_err(io_error)?;
                if wide {
                    write!(
                        t,
                        "\t{}\t{}\t{}\t{}\t{}",
                        m.generation,
                        behind(m),
                        m.meta.get("grpc_addr").map_or("-", String::as_str),
                        m.meta.get("policy").map_or("-", String::as_str),
                        dash(&m.docker_error),
                    )
                    .map_err(io_error)?;
                }
                writeln!(t).map_err(io_error)?;
            }
            flush(t)?;
        }
    }
    Ok(Outcome::Found)
}

#[derive(Serialize)]
struct RecordsJson<'a> {
    records: Vec<RecordJson<'a>>,
    revision: u64,
}

/// A record as `-o json` prints it.
#[derive(Serialize)]
struct RecordJson<'a> {
    id: &'a str,
    name: &'a str,
    aliases: &'a [String],
    host: &'a str,
    state: &'static str,
    health: &'static str,
    image: &'a str,
    /// RFC 3339, or null when unknown.
    started_at: Option<String>,
    /// When it last exited, RFC 3339, or null.
    finished_at: Option<String>,
    /// The addresses the name resolves to in DNS (those not local to the
    /// record's host), in the order published.
    addresses: Vec<String>,
    /// Every address by network, local ones included.
    networks: BTreeMap<&'a str, Vec<String>>,
    /// Networks whose addresses are local to the record's host.
    local_networks: Vec<&'a str>,
    ports: Vec<String>,
    labels: &'a BTreeMap<String, String>,
    source: &'static str,
}

fn rfc3339(unix_secs: Option<i64>) -> Option<String> {
    unix_secs.filter(|t| *t > 0).map(|t| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t as u64)).to_string()
    })
}

impl<'a> From<&'a Record> for RecordJson<'a> {
    fn from(r: &'a Record) -> RecordJson<'a> {
        let mut networks: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for a in &r.addresses {
            networks
                .entry(&a.network)
                .or_default()
                .push(a.ip.to_string());
        }
        let mut local_networks: Vec<&str> = r
            .addresses
            .iter()
            .filter(|a| a.local)
            .map(|a| a.network.as_str())
            .collect();
        local_networks.dedup();
        RecordJson {
            id: &r.id,
            name: &r.name,
            aliases: &r.aliases,
            host: &r.host,
            state: r.state.as_str(),
            health: r.health.as_str(),
            image: &r.image,
            started_at: rfc3339(r.started_at),
            finished_at: rfc3339(r.finished_at),
            addresses: r.routable_addresses().map(|ip| ip.to_string()).collect(),
            networks,
            local_networks,
            ports: r.ports.iter().map(ToString::to_string).collect(),
            labels: &r.labels,
            source: r.source.as_str(),
        }
    }
}

#[derive(Serialize)]
struct MembersJson {
    members: Vec<MemberJson>,
    revision: u64,
}

/// A member as `-o json` prints it.
#[derive(Serialize)]
struct MemberJson {
    name: String,
    gossip_addr: String,
    /// `alive`, `suspect`, `joining` or `dead`.
    state: &'static str,
    generation: u64,
    records: u64,
    /// Whether its records are served (false once dead past the grace).
    visible: bool,
    version: String,
    /// `connected`, `connecting`, `disconnected` or `disabled`.
    docker: String,
    docker_error: String,
    /// When the answering agent last heard its heartbeat, Unix ms.
    last_heard_ms: Option<i64>,
    /// The same, RFC 3339.
    last_heard: Option<String>,
    /// Since when the answering agent has lacked changes of this member
    /// that other agents hold, Unix ms; absent if it lacks none.
    behind_since_ms: Option<i64>,
    /// How many versions of its state it lacks (0 if none).
    behind_versions: u64,
    meta: BTreeMap<String, String>,
}

impl From<&v1::Member> for MemberJson {
    fn from(m: &v1::Member) -> MemberJson {
        MemberJson {
            name: m.name.clone(),
            gossip_addr: m.gossip_addr.clone(),
            state: match m.liveness() {
                v1::Liveness::Alive => "alive",
                v1::Liveness::Suspect => "suspect",
                v1::Liveness::Dead => "dead",
                v1::Liveness::Joining => "joining",
                v1::Liveness::Conflict => "conflict",
            },
            generation: m.generation,
            records: m.records,
            visible: m.visible,
            version: m.version.clone(),
            docker: m.docker.clone(),
            docker_error: m.docker_error.clone(),
            last_heard_ms: (m.last_heard_ms > 0).then_some(m.last_heard_ms),
            last_heard: (m.last_heard_ms > 0).then(|| {
                humantime::format_rfc3339_millis(
                    UNIX_EPOCH + Duration::from_millis(m.last_heard_ms as u64),
                )
                .to_string()
            }),
            behind_since_ms: (m.behind_since_ms > 0).then_some(m.behind_since_ms),
            behind_versions: m.behind_versions,
            meta: m.meta.clone(),
        }
    }
}

/// "-" for an empty value.
fn dash(v: &str) -> &str {
    if v.is_empty() { "-" } else { v }
}

/// "3m ago" for a Unix time in seconds.
/// How far behind the answering agent is on `m`: "-" if not at all, else
/// for how long and by how many versions, e.g. `12s (40 versions)`.
fn behind(m: &MemberJson) -> String {
    let Some(since_ms) = m.behind_since_ms else {
        return "-".to_owned();
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let secs = (now_ms - since_ms).max(0) as f64 / 1000.0;
    let versions = m.behind_versions;
    let plural = if versions == 1 { "" } else { "s" };
    format!("{secs:.1}s ({versions} version{plural})")
}

fn age(started_at: i64) -> String {
    if started_at <= 0 {
        return "-".to_owned();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let secs = (now - started_at).max(0) as u64;
    let (n, unit) = match secs {
        0..60 => (secs, "s"),
        60..3600 => (secs / 60, "m"),
        3600..86400 => (secs / 3600, "h"),
        _ => (secs / 86400, "d"),
    };
    format!("{n}{unit} ago")
}

/// Converts the agent's records to core records (checked as any wire
/// input is) and prints them.
fn print_records(wire: Vec<v1::Record>, revision: u64, output: Output) -> Result<(), ClientError> {
    let records = wire
        .into_iter()
        .map(Record::try_from)
        .collect::<Result<Vec<Record>, _>>()
        .map_err(|e| ClientError(format!("the agent sent a bad record: {e}")))?;
    match output {
        Output::Json => print_json(&RecordsJson {
            records: records.iter().map(RecordJson::from).collect(),
            revision,
        }),
        Output::Table | Output::Wide => {
            if records.is_empty() {
                return Ok(());
            }
            let mut t = table();
            write_record_header(&mut t, output)?;
            for r in &records {
                write_record_row(&mut t, r, output)?;
            }
            flush(t)
        }
    }
}

fn write_record_header(t: &mut impl Write, output: Output) -> Result<(), ClientError> {
    let wide = if output == Output::Wide {
        "\tID\tHEALTH\tIMAGE\tSOURCE\tNETWORKS"
    } else {
        ""
    };
    writeln!(
        t,
        "NAME\tHOST\tSTATE\tADDRESSES\tPORTS\tLABELS\tSTARTED{wide}"
    )
    .map_err(io_error)
}

fn write_record_row(t: &mut impl Write, r: &Record, output: Output) -> Result<(), ClientError> {
    let addresses: Vec<String> = r.routable_addresses().map(|ip| ip.to_string()).collect();
    let ports: Vec<String> = r.ports.iter().map(ToString::to_string).collect();
    let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    write!(
        t,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
        r.name,
        r.host,
        r.state.as_str(),
        dash(&addresses.join(",")),
        dash(&ports.join(",")),
        dash(&labels.join(",")),
        age(r.started_at.unwrap_or(0)),
    )
    .map_err(io_error)?;
    if output == Output::Wide {
        let networks: Vec<String> = r
            .addresses
            .iter()
            .map(|a| {
                format!(
                    "{}={}{}",
                    a.network,
                    a.ip,
                    if a.local { "(local)" } else { "" }
                )
            })
            .collect();
        write!(
            t,
            "\t{}\t{}\t{}\t{}\t{}",
            r.id.get(..12).unwrap_or(&r.id),
            r.health.as_str(),
            dash(&r.image),
            r.source.as_str(),
            dash(&networks.join(",")),
        )
        .map_err(io_error)?;
    }
    writeln!(t).map_err(io_error)
}

/// `muster watch [-l SELECTOR]`: follows changes until interrupted or the
/// agent goes away (exit 2).
pub async fn watch(
    selector: &str,
    from_revision: u64,
    epoch: u64,
    args: &ClientArgs,
) -> Result<Outcome, ClientError> {
    let mut client = connect_with(args, None).await?;
    let mut stream = client
        .watch(v1::WatchRequest {
            selector: selector.to_owned(),
            from_revision,
            epoch,
        })
        .await
        .map_err(|s| call_error(&args.addr, s))?
        .into_inner();
    if args.output != Output::Json {
        let mut t = table();
        write!(t, "REVISION\tEVENT\t").map_err(io_error)?;
        write_record_header(&mut t, args.output)?;
        flush(t)?;
    }
    loop {
        let event = next_event(&mut stream, &args.addr).await?;
        let kind = match event.kind() {
            v1::EventKind::Added => "added",
            v1::EventKind::Updated => "updated",
            v1::EventKind::Removed => "removed",
            v1::EventKind::Synced => "synced",
            v1::EventKind::Reset => "reset",
            v1::EventKind::Unspecified => "unknown",
        };
        let record = event
            .record
            .map(Record::try_from)
            .transpose()
            .map_err(|e| ClientError(format!("the agent sent a bad record: {e}")))?;
        match args.output {
            Output::Json => {
                let line = serde_json::json!({
                    "event": kind,
                    "revision": event.revision,
                    "epoch": event.epoch,
                    "record": record.as_ref().map(RecordJson::from),
                });
                println!("{line}");
            }
            Output::Table | Output::Wide => {
                // Rows are printed as they come: one tab-aligned line each.
                let mut t = table();
                write!(t, "{}\t{kind}\t", event.revision).map_err(io_error)?;
                match &record {
                    Some(r) => write_record_row(&mut t, r, args.output)?,
                    None => writeln!(t, "-").map_err(io_error)?,
                }
                flush(t)?;
            }
        }
        std::io::stdout().flush().map_err(io_error)?;
    }
}

fn print_json(value: &impl Serialize) -> Result<(), ClientError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ClientError(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn table() -> TabWriter<Vec<u8>> {
    TabWriter::new(Vec::new()).padding(2)
}

fn flush(t: TabWriter<Vec<u8>>) -> Result<(), ClientError> {
    let bytes = t.into_inner().map_err(|e| ClientError(e.to_string()))?;
    std::io::stdout().write_all(&bytes).map_err(io_error)
}

fn io_error(e: std::io::Error) -> ClientError {
    ClientError(format!("cannot write output: {e}"))
}

/// `muster violations [--rule R] [--watch]`.
pub async fn violations(
    rule: &str,
    follow: bool,
    args: &ClientArgs,
) -> Result<Outcome, ClientError> {
    if follow {
        return watch_violations(rule, args).await;
    }
    let mut client = connect(args).await?;
    let response = client
        .violations(v1::ViolationsRequest {
            rule: rule.to_owned(),
        })
        .await
        .map_err(|s| call_error(&args.addr, s))?
        .into_inner();
    for member in &response.mismatched_members {
        eprintln!(
            "warning: member {member} judges by a different policy than this agent ({})",
            response.policy_digest
        );
    }
    let found = !response.violations.is_empty();
    match args.output {
        Output::Json => print_json(&serde_json::json!({
            "violations": response.violations.iter().map(violation_json).collect::<Vec<_>>(),
            "revision": response.revision,
            "policy_digest": response.policy_digest,
            "mismatched_members": response.mismatched_members,
        }))?,
        Output::Table | Output::Wide => {
            if found {
                let mut t = table();
                write_violation_header(&mut t, args.output)?;
                for v in &response.violations {
                    write_violation_row(&mut t, v, None, args.output)?;
                }
                flush(t)?;
            } else {
                eprintln!("no violations (policy {})", response.policy_digest);
            }
        }
    }
    Ok(if found {
        Outcome::Found
    } else {
        Outcome::NotFound
    })
}

fn violation_json(v: &v1::Violation) -> serde_json::Value {
    serde_json::json!({
        "rule": v.rule,
        "severity": v.severity,
        "name": v.name,
        "host": v.host,
        "id": v.id,
        "why": v.why,
        "since_ms": v.since_ms,
        "since": humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(v.since_ms.max(0) as u64)).to_string(),
        "excluded_from_dns": v.excluded_from_dns,
    })
}

fn write_violation_header(t: &mut impl Write, output: Output) -> Result<(), ClientError> {
    let wide = if output == Output::Wide {
        "\tID\tOUT OF DNS"
    } else {
        ""
    };
    writeln!(t, "RULE\tSEVERITY\tNAME\tHOST\tWHY\tSINCE{wide}").map_err(io_error)
}

fn write_violation_row(
    t: &mut impl Write,
    v: &v1::Violation,
    event: Option<&str>,
    output: Output,
) -> Result<(), ClientError> {
    if let Some(event) = event {
        write!(t, "{event}\t").map_err(io_error)?;
    }
    write!(
        t,
        "{}\t{}\t{}\t{}\t{}\t{}",
        v.rule,
        v.severity,
        v.name,
        v.host,
        v.why,
        age(v.since_ms / 1000)
    )
    .map_err(io_error)?;
    if output == Output::Wide {
        write!(
            t,
            "\t{}\t{}",
            v.id,
            if v.excluded_from_dns { "yes" } else { "no" }
        )
        .map_err(io_error)?;
    }
    writeln!(t).map_err(io_error)
}

/// The next message of a server stream; its end or an error ends the
/// command (exit 2).
async fn next_event<T>(stream: &mut tonic::Streaming<T>, addr: &str) -> Result<T, ClientError> {
    match stream.message().await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(ClientError(format!(
            "muster agent at {addr} ended the watch"
        ))),
        Err(status) => Err(call_error(addr, status)),
    }
}

/// `muster violations --watch`: the current set, then each start and end.
async fn watch_violations(rule: &str, args: &ClientArgs) -> Result<Outcome, ClientError> {
    let mut client = connect_with(args, None).await?;
    let mut stream = client
        .watch_violations(v1::ViolationsRequest {
            rule: rule.to_owned(),
        })
        .await
        .map_err(|s| call_error(&args.addr, s))?
        .into_inner();
    if args.output != Output::Json {
        let mut t = table();
        write!(t, "EVENT\t").map_err(io_error)?;
        write_violation_header(&mut t, args.output)?;
        flush(t)?;
    }
    loop {
        let event = next_event(&mut stream, &args.addr).await?;
        use v1::violation_event::Kind;
        let kind = match event.kind() {
            Kind::Started => "started",
            Kind::Ended => "ended",
            Kind::Synced => "synced",
            Kind::Reset => "reset",
            Kind::Unspecified => "unknown",
        };
        match args.output {
            Output::Json => {
                let line = serde_json::json!({
                    "event": kind,
                    "violation": event.violation.as_ref().map(violation_json),
                });
                println!("{line}");
            }
            Output::Table | Output::Wide => {
                let mut t = table();
                match &event.violation {
                    Some(v) => write_violation_row(&mut t, v, Some(kind), args.output)?,
                    None => writeln!(t, "{kind}").map_err(io_error)?,
                }
                flush(t)?;
            }
        }
        std::io::stdout().flush().map_err(io_error)?;
    }
}
