//! The agent's settings: flags, `MUSTER_*` environment variables and a TOML
//! config file, merged in that order of precedence over built-in defaults.
//!
//! Every flag of `muster agent` is also a key of the config file, spelled
//! the same (`node-name = "a"`, `join = ["10.0.0.2:7946"]`). Unknown keys
//! are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use muster_sources::docker::{DEFAULT_SOCKET, DockerConfig, LabelFilter};
use serde::Deserialize;

/// Node names that are DNS forms of their own (`web.svc.muster`,
/// `a.host.muster`, `web.app.sel.muster`).
const RESERVED_NODE_NAMES: [&str; 3] = ["svc", "host", "sel"];

/// A duration written as humans do: `500ms`, `5s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(HumanDuration)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// Flags of `muster agent`. Each is optional here so that the config file
/// can fill what the command line and environment leave out.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentArgs {
    /// TOML config file; its keys are these flags' names (e.g. `zone = "muster"`).
    #[arg(long, env = "MUSTER_CONFIG", value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// This agent's node name, the `host` of its records [default: the host name]
    #[arg(long, env = "MUSTER_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Agents with different cluster ids ignore each other [default: muster]
    #[arg(long, env = "MUSTER_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,

    /// UDP address to gossip on [default: 127.0.0.1:7946]
    #[arg(long, env = "MUSTER_GOSSIP_ADDR", value_name = "IP:PORT")]
    pub gossip_addr: Option<SocketAddr>,

    /// Address other agents reach this one at, when it differs from --gossip-addr
    /// (e.g. listening on 0.0.0.0) [default: --gossip-addr]
    #[arg(long, env = "MUSTER_ADVERTISE_ADDR", value_name = "IP:PORT")]
    pub advertise_addr: Option<SocketAddr>,

    /// Gossip address of an agent to join through; repeat or comma-separate for several.
    /// Example: --join 10.0.0.2:7946 --join 10.0.0.3:7946
    #[arg(
        long,
        env = "MUSTER_JOIN",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub join: Option<Vec<String>>,

    /// UDP and TCP address of the DNS server [default: 127.0.0.1:8600]
    #[arg(long, env = "MUSTER_DNS_ADDR", value_name = "IP:PORT")]
    pub dns_addr: Option<SocketAddr>,

    /// Address of the gRPC API [default: 127.0.0.1:8700]
    #[arg(long, env = "MUSTER_GRPC_ADDR", value_name = "IP:PORT")]
    pub grpc_addr: Option<SocketAddr>,

    /// Address of the HTTP endpoints (/healthz, /readyz) [default: 127.0.0.1:8800]
    #[arg(long, env = "MUSTER_HTTP_ADDR", value_name = "IP:PORT")]
    pub http_addr: Option<SocketAddr>,

    /// DNS zone muster is authoritative for: web-1 answers as web-1.<zone> [default: muster]
    #[arg(long, env = "MUSTER_ZONE", value_name = "ZONE")]
    pub zone: Option<String>,

    /// TTL of DNS answers, in seconds [default: 5]
    #[arg(long, env = "MUSTER_DNS_TTL", value_name = "SECONDS")]
    pub dns_ttl: Option<u32>,

    /// UDP answers per second to each client network (/24 for IPv4, /56 for
    /// IPv6), as NSD and Knot limit them: over the limit, every second
    /// answer goes out truncated (the client retries over TCP, which is
    /// never limited) and the rest are dropped. 0 is no limit [default: 0]
    #[arg(long, env = "MUSTER_DNS_RATE_LIMIT", value_name = "N")]
    pub dns_rate_limit: Option<u32>,

    /// DNS TCP connections served at once; one more is closed as soon as it
    /// is accepted (and counted) [default: 1024]
    #[arg(long, env = "MUSTER_DNS_MAX_TCP_CONNECTIONS", value_name = "N")]
    pub dns_max_tcp_connections: Option<usize>,

    /// Resolver to forward names outside the zone to; repeat or
    /// comma-separate for several, tried in order. Without it, such names get
    /// REFUSED. Example: --dns-forward 127.0.0.53:53
    #[arg(
        long,
        env = "MUSTER_DNS_FORWARD",
        value_name = "IP:PORT",
        value_delimiter = ','
    )]
    pub dns_forward: Option<Vec<SocketAddr>>,

    /// Reverse zone to be authoritative for, as a network on a label
    /// boundary (IPv4 /8, /16, /24; IPv6 a multiple of /4); repeat or
    /// comma-separate for several. PTR of addresses in the directory is
    /// answered anyway; inside these zones the rest gets NXDOMAIN and the
    /// apex SOA and NS. Example: --reverse-zone 172.18.0.0/16
    #[arg(
        long,
        env = "MUSTER_REVERSE_ZONE",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub reverse_zone: Option<Vec<ipnet::IpNet>>,

    /// Static records file (TOML, `[[record]]` tables), re-read on SIGHUP
    #[arg(long, env = "MUSTER_STATIC_FILE", value_name = "PATH")]
    pub static_file: Option<PathBuf>,

    /// What Register does with a name that records of another source or
    /// host already answer to: allow it and report them in `conflicts`, or
    /// refuse it (FAILED_PRECONDITION, naming them) [default: allow]
    #[arg(
        long,
        env = "MUSTER_REGISTER_CONFLICTS",
        value_enum,
        value_name = "POLICY"
    )]
    pub register_conflicts: Option<RegisterConflicts>,

    /// Watch and WatchViolations streams served at once; one more gets
    /// RESOURCE_EXHAUSTED until another ends [default: 1024]
    #[arg(long, env = "MUSTER_MAX_WATCHERS", value_name = "N")]
    pub max_watchers: Option<usize>,

    /// File holding the write token: Register, KeepAlive and Deregister then
    /// need `authorization: Bearer <token>` (the CLI sends it from
    /// --token-file or MUSTER_TOKEN); reads stay open. One line of visible
    /// ASCII, read at start
    #[arg(long, env = "MUSTER_API_TOKEN_FILE", value_name = "PATH")]
    pub api_token_file: Option<PathBuf>,

    /// PEM certificate chain the gRPC server presents: gRPC then speaks TLS
    /// only (needs --grpc-tls-key); re-read on SIGHUP
    #[arg(long, env = "MUSTER_GRPC_TLS_CERT", value_name = "PEM")]
    pub grpc_tls_cert: Option<PathBuf>,

    /// PEM private key of --grpc-tls-cert
    #[arg(long, env = "MUSTER_GRPC_TLS_KEY", value_name = "PEM")]
    pub grpc_tls_key: Option<PathBuf>,

    /// PEM CA certificates: every gRPC client must present a certificate
    /// that chains to one of them (mutual TLS; needs --grpc-tls-cert)
    #[arg(long, env = "MUSTER_GRPC_CLIENT_CA", value_name = "PEM")]
    pub grpc_client_ca: Option<PathBuf>,

    /// Gossip key file: one or more keys, one per line, each the base64 of
    /// 32 random bytes (make one with `muster keygen`). The first seals every
    /// datagram sent, every one opens; re-read on SIGHUP. Required when the
    /// gossip address is not a loopback address (see --insecure-gossip)
    #[arg(long, env = "MUSTER_GOSSIP_KEY_FILE", value_name = "PATH")]
    pub gossip_key_file: Option<PathBuf>,

    /// Gossip in the clear on a non-loopback address: anyone who can send
    /// it a datagram can then rewrite the directory
    #[arg(long, env = "MUSTER_INSECURE_GOSSIP", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub insecure_gossip: Option<bool>,

    /// Naming policy file (TOML, `[[rule]]` tables), re-read on SIGHUP;
    /// give every agent the same one. Example: --policy deploy/policy.toml
    #[arg(long, env = "MUSTER_POLICY", value_name = "PATH")]
    pub policy: Option<PathBuf>,

    /// Do not watch the local Docker engine
    #[arg(long, env = "MUSTER_NO_DOCKER", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_docker: Option<bool>,

    /// Docker engine socket [default: $DOCKER_HOST, else unix:///var/run/docker.sock]
    #[arg(long, env = "MUSTER_DOCKER_HOST", value_name = "unix:///PATH")]
    pub docker_host: Option<String>,

    /// Publish only containers with this label; repeat to require several.
    /// Example: --docker-filter label=tenant=billing --docker-filter label=muster.publish
    #[arg(long, env = "MUSTER_DOCKER_FILTER", value_name = "label=KEY[=VALUE]")]
    pub docker_filter: Option<Vec<String>>,

    /// Docker network whose container IPs other hosts can reach (overlay,
    /// macvlan, ipvlan, routed); repeat or comma-separate. Containers with no
    /// IP on such a network resolve to this host's advertised address.
    #[arg(
        long,
        env = "MUSTER_ROUTABLE_NETWORK",
        value_name = "NETWORK",
        value_delimiter = ','
    )]
    pub routable_network: Option<Vec<String>>,

    /// How long an exited container stays listed in gRPC (it leaves DNS at
    /// once) [default: 5m]
    #[arg(long, env = "MUSTER_EXITED_RETENTION", value_name = "DURATION")]
    pub exited_retention: Option<HumanDuration>,

    /// Time between gossip rounds [default: 200ms]
    #[arg(long, env = "MUSTER_GOSSIP_INTERVAL", value_name = "DURATION")]
    pub gossip_interval: Option<HumanDuration>,

    /// How long a dead agent's records stay in DNS and gRPC after the failure
    /// detector declares it dead [default: 5s]
    #[arg(long, env = "MUSTER_DEAD_GRACE", value_name = "DURATION")]
    pub dead_grace: Option<HumanDuration>,

    /// How a dead agent is found: `probes` (SWIM: each agent probes one
    /// member per gossip interval, directly and through three others; its
    /// cost per agent does not grow with the cluster) or `phi` (chitchat's
    /// phi-accrual detector on heartbeats every gossip message carries for
    /// every member: decides sooner, costs more as the cluster grows)
    /// [default: probes]
    #[arg(
        long,
        env = "MUSTER_FAILURE_DETECTOR",
        value_enum,
        value_name = "DETECTOR"
    )]
    pub failure_detector: Option<FailureDetector>,

    /// Phi-accrual threshold of the `phi` failure detector: higher declares
    /// death later and more surely [default: 8]
    #[arg(long, env = "MUSTER_PHI_THRESHOLD", value_name = "PHI")]
    pub phi_threshold: Option<f64>,

    /// The largest gossip datagram, in bytes; a larger message goes over TCP
    /// to the peer's gossip port, so open that port to TCP as well as UDP.
    /// The default keeps datagrams inside one Ethernet frame, so overlays,
    /// VPNs and cloud networks never see a fragment [default: 1400]
    #[arg(long, env = "MUSTER_GOSSIP_MTU", value_name = "BYTES")]
    pub gossip_mtu: Option<usize>,
}

/// The agent's settings after merging, with every default applied.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub cluster_id: String,
    pub gossip_addr: SocketAddr,
    pub advertise_addr: SocketAddr,
    pub join: Vec<String>,
    pub dns_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub zone: String,
    pub dns_ttl: u32,
    pub dns_rate_limit: u32,
    pub dns_max_tcp_connections: usize,
    pub dns_forward: Vec<SocketAddr>,
    pub reverse_zones: Vec<ipnet::IpNet>,
    pub static_file: Option<PathBuf>,
    pub api_token_file: Option<PathBuf>,
    pub gossip_key_file: Option<PathBuf>,
    pub insecure_gossip: bool,
    pub grpc_tls: Option<muster_api::TlsFiles>,
    pub max_watchers: usize,
    pub register_conflicts: muster_api::RegisterConflicts,
    pub policy: Option<PathBuf>,
    pub docker: Option<DockerConfig>,
    pub gossip_interval: Duration,
    pub dead_grace: Duration,
    pub failure_detection: muster_gossip::FailureDetection,
    pub phi_threshold: f64,
    pub gossip_mtu: usize,
}

/// Why a secret file (gossip keys, a token, a TLS key) is too open, if it
/// is: readable or writable by others than its owner and group.
pub fn too_open(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o007 != 0).then(|| {
        format!(
            "{} is open to every user (mode {mode:04o}): anyone on this host can read the secret in it; chmod 600 it",
            path.display()
        )
    })
}

/// Reads a write token file: one line of visible ASCII (no spaces), at
/// most 4,096 bytes; surrounding white space is ignored.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let token = text.trim();
    if let Some(n) = token.lines().nth(1).map(|_| token.lines().count()) {
        anyhow::bail!(
            "{}: {n} lines; a token file holds one token on one line",
            path.display()
        );
    }
    if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "{}:1: a token is 1 to 4096 visible ASCII characters, no spaces \
             (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
            path.display()
        );
    }
    Ok(token.to_owned())
}

/// `--register-conflicts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegisterConflicts {
    /// Register, and report the other holders of the name
    Allow,
    /// Refuse the registration, naming the other holders
    Refuse,
}

/// `--failure-detector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureDetector {
    /// SWIM probes, suspicion and refutation
    Probes,
    /// chitchat's phi-accrual detector on gossiped heartbeats
    Phi,
}

fn read_file(path: &Path) -> anyhow::Result<AgentArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map_or(1, |s| muster_core::LineIndex::new(&text).line_of(s.start));
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message().trim())
    })
}

/// The host name's first label, lower-cased: a default node name.
fn default_node_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    host.split('.')
        .next()
        .unwrap_or("muster")
        .to_ascii_lowercase()
}

impl AgentArgs {
    /// Merges flags and environment (already in `self`) over the config
    /// file over the defaults, and checks the result.
    pub fn resolve(self) -> anyhow::Result<AgentConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => AgentArgs::default(),
        };
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                self.$field.or(file.$field).unwrap_or_else(|| $default)
            };
        }
        let gossip_addr = pick!(
            gossip_addr,
            "127.0.0.1:7946".parse().expect("valid literal")
        );
        let config = AgentConfig {
            node_name: pick!(node_name, default_node_name()),
            cluster_id: pick!(cluster_id, "muster".to_owned()),
            gossip_addr,
            advertise_addr: pick!(advertise_addr, gossip_addr),
            join: pick!(join, Vec::new()),
            dns_addr: pick!(dns_addr, "127.0.0.1:8600".parse().expect("valid literal")),
            grpc_addr: pick!(grpc_addr, "127.0.0.1:8700".parse().expect("valid literal")),
            http_addr: pick!(http_addr, "127.0.0.1:8800".parse().expect("valid literal")),
            zone: pick!(zone, "muster".to_owned()),
            dns_ttl: pick!(dns_ttl, 5),
            dns_rate_limit: pick!(dns_rate_limit, 0),
            dns_max_tcp_connections: pick!(
                dns_max_tcp_connections,
                muster_dns::DEFAULT_MAX_TCP_CONNECTIONS
            ),
            dns_forward: pick!(dns_forward, Vec::new()),
            reverse_zones: pick!(reverse_zone, Vec::new()),
            static_file: self.static_file.or(file.static_file),
            api_token_file: self.api_token_file.or(file.api_token_file),
            gossip_key_file: self.gossip_key_file.or(file.gossip_key_file),
            insecure_gossip: pick!(insecure_gossip, false),
            grpc_tls: None,
            max_watchers: pick!(max_watchers, muster_api::DEFAULT_MAX_WATCHERS),
            register_conflicts: match pick!(register_conflicts, RegisterConflicts::Allow) {
                RegisterConflicts::Allow => muster_api::RegisterConflicts::Allow,
                RegisterConflicts::Refuse => muster_api::RegisterConflicts::Refuse,
            },
            policy: self.policy.or(file.policy),
            docker: None,
            gossip_interval: pick!(gossip_interval, HumanDuration(Duration::from_millis(200))).0,
            dead_grace: pick!(dead_grace, HumanDuration(Duration::from_secs(5))).0,
            failure_detection: match pick!(failure_detector, FailureDetector::Probes) {
                FailureDetector::Probes => muster_gossip::FailureDetection::Probes,
                FailureDetector::Phi => muster_gossip::FailureDetection::Phi,
            },
            phi_threshold: pick!(phi_threshold, 8.0),
            gossip_mtu: pick!(gossip_mtu, muster_gossip::DEFAULT_MTU),
        };
        let docker_off = self.no_docker.or(file.no_docker).unwrap_or(false);
        let docker_host = self
            .docker_host
            .or(file.docker_host)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
        let filters = self
            .docker_filter
            .or(file.docker_filter)
            .unwrap_or_default()
            .iter()
            .map(|f| f.parse::<LabelFilter>())
            .collect::<Result<Vec<_>, _>>()?;
        let routable = self
            .routable_network
            .or(file.routable_network)
            .unwrap_or_default();
        let retention = self.exited_retention.or(file.exited_retention);
        let mut config = config;
        let client_ca = self.grpc_client_ca.or(file.grpc_client_ca);
        config.grpc_tls = match (
            self.grpc_tls_cert.or(file.grpc_tls_cert),
            self.grpc_tls_key.or(file.grpc_tls_key),
        ) {
            (Some(cert), Some(key)) => Some(muster_api::TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None) if client_ca.is_none() => None,
            (None, None) => bail!(
                "--grpc-client-ca needs --grpc-tls-cert and --grpc-tls-key: mutual TLS is TLS first"
            ),
            _ => bail!("--grpc-tls-cert and --grpc-tls-key go together"),
        };
        if !docker_off {
            if !(docker_host.starts_with("unix://") || docker_host.starts_with('/')) {
                bail!(
                    "docker host {docker_host:?}: only unix sockets are supported (unix:///path)"
                );
            }
            config.docker = Some(DockerConfig {
                host: docker_host,
                filters,
                routable_networks: routable.into_iter().collect(),
                host_ip: config.advertise_addr.ip(),
                exited_retention: retention.map_or(Duration::from_secs(300), |d| d.0),
            });
        }
        config.check()?;
        Ok(config)
    }
}

impl AgentConfig {
    fn check(&self) -> anyhow::Result<()> {
        muster_core::validate_dns_label(&self.node_name).with_context(|| {
            format!(
                "node name {:?} must be a DNS label (it answers as <node>.host.<zone>); set --node-name",
                self.node_name
            )
        })?;
        if RESERVED_NODE_NAMES.contains(&self.node_name.as_str()) {
            bail!(
                "node name {:?} is reserved: it would clash with <name>.{}.<zone> in DNS; set --node-name",
                self.node_name,
                self.node_name
            );
        }
        muster_core::validate_dns_name(&self.zone)
            .with_context(|| format!("zone {:?} is not a DNS name", self.zone))?;
        if self.cluster_id.is_empty() {
            bail!("cluster id must not be empty");
        }
        if self.advertise_addr.ip().is_unspecified() {
            bail!(
                "advertise address {} is unspecified: other agents cannot reach it; set --advertise-addr",
                self.advertise_addr
            );
        }
        if self.gossip_key_file.is_none()
            && !self.insecure_gossip
            && !self.gossip_addr.ip().is_loopback()
        {
            bail!(
                "gossip address {} is not a loopback address and there is no gossip key: \
                 anyone who can reach it could rewrite the directory. Make a key with \
                 `muster keygen > gossip.key`, give every agent that file with \
                 --gossip-key-file, or pass --insecure-gossip to gossip in the clear",
                self.gossip_addr
            );
        }
        if self.gossip_interval < Duration::from_millis(10)
            || self.gossip_interval > Duration::from_secs(60)
        {
            bail!("gossip interval must be between 10ms and 60s");
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            bail!("phi threshold must be a positive number");
        }
        if !(muster_gossip::MIN_MTU..=muster_gossip::MAX_MTU).contains(&self.gossip_mtu) {
            bail!(
                "gossip MTU must be between {} and {} bytes, not {}",
                muster_gossip::MIN_MTU,
                muster_gossip::MAX_MTU,
                self.gossip_mtu
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = write(
            "zone = \"corp\"\nnode-name = \"from-file\"\ndead-grace = \"9s\"\njoin = [\"10.0.0.1:7946\"]\n",
        );
        let args = AgentArgs {
            config: Some(file.path().to_owned()),
            node_name: Some("from-flag".into()),
            ..AgentArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.node_name, "from-flag");
        assert_eq!(config.zone, "corp");
        assert_eq!(config.dead_grace, Duration::from_secs(9));
        assert_eq!(config.join, ["10.0.0.1:7946"]);
        assert_eq!(config.dns_addr.port(), 8600);
        assert!(config.docker.is_some());
    }

    #[test]
    fn a_secret_file_open_to_every_user_is_named_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gossip.key");
        std::fs::write(&path, "x").unwrap();
        for (mode, open) in [(0o600, false), (0o640, false), (0o644, true), (0o606, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let why = too_open(&path);
            assert_eq!(why.is_some(), open, "mode {mode:o}: {why:?}");
            if let Some(why) = why {
                assert!(why.contains(&format!("mode {mode:04o}")), "{why}");
            }
        }
        assert_eq!(too_open(&dir.path().join("absent")), None);
    }

    #[test]
    fn token_files_hold_one_visible_ascii_token() {
        let dir = tempfile::tempdir().unwrap();
        let check = |text: &str| {
            let path = dir.path().join("token");
            std::fs::write(&path, text).unwrap();
            read_token(&path).map_err(|e| e.to_string())
        };
        assert_eq!(check("  abc-DEF_123+/=\n").unwrap(), "abc-DEF_123+/=");
        for bad in ["", "\n \n", "two words", "caf\u{e9}", "one\ntwo"] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check("one\ntwo").unwrap_err().contains("2 lines"));
    }

    #[test]
    fn bad_config_files_name_the_line() {
        let file = write("zone = \"muster\"\nzoen = \"typo\"\n");
        let args = AgentArgs {
            config: Some(file.path().to_owned()),
            ..AgentArgs::default()
        };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("zoen"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            AgentArgs {
                node_name: Some("bad_name".into()),
                ..AgentArgs::default()
            },
            AgentArgs {
                node_name: Some("svc".into()),
                ..AgentArgs::default()
            },
            AgentArgs {
                zone: Some("bad zone".into()),
                ..AgentArgs::default()
            },
            AgentArgs {
                docker_filter: Some(vec!["tenant=x".into()]),
                ..AgentArgs::default()
            },
            AgentArgs {
                advertise_addr: Some("0.0.0.0:7946".parse().unwrap()),
                ..AgentArgs::default()
            },
            AgentArgs {
                gossip_mtu: Some(100),
                ..AgentArgs::default()
            },
            AgentArgs {
                gossip_mtu: Some(70_000),
                ..AgentArgs::default()
            },
        ] {
            let shown = format!("{args:?}");
            assert!(args.resolve().is_err(), "{shown}");
        }
    }

    #[test]
    fn the_gossip_mtu_defaults_to_one_unfragmented_frame_and_can_be_set_in_the_file() {
        assert_eq!(AgentArgs::default().resolve().unwrap().gossip_mtu, 1400);
        let file = write("gossip-mtu = 8900\n");
        let args = AgentArgs {
            config: Some(file.path().to_owned()),
            ..AgentArgs::default()
        };
        assert_eq!(args.resolve().unwrap().gossip_mtu, 8900);
    }
}

#[cfg(test)]
mod shipped_examples {
    use super::*;

    #[test]
    fn the_example_config_in_deploy_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/muster.toml"
        ));
        let args = AgentArgs {
            config: Some(path.to_owned()),
            ..AgentArgs::default()
        };
        let config = args.resolve().expect("deploy/muster.toml");
        assert_eq!(config.node_name, "host-a");
        assert_eq!(config.join.len(), 2);
    }

    #[test]
    fn the_example_records_in_deploy_are_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/records.example.toml"
        ));
        let records = muster_sources::static_file::load(path).expect("deploy/records.example.toml");
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn the_example_policy_in_deploy_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/policy.toml"
        ));
        let policy = muster_policy::Policy::load(path).expect("deploy/policy.toml");
        assert_eq!(policy.rules().len(), 2);
    }
}
