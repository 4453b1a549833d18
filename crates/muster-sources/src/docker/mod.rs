//! The Docker source: this host's containers, from the local Docker engine.
//!
//! A session subscribes to the engine's event stream first, then lists and
//! inspects every container and reports the whole set
//! ([`SourceUpdate::Replace`]); from then on each container event makes the
//! source inspect that container again and report the result. Inspect is
//! the single source of truth: an event only says *which* container to
//! look at, so a missed or reordered event can never leave a wrong record.
//! Events that arrive while a listing runs are queued and applied after it,
//! so nothing that happens during a (re)connect is lost.
//!
//! When the engine or its socket goes away the session ends, the status
//! turns [`DockerStatus::Disconnected`], and the source retries with capped
//! exponential backoff; the records it published stay (the cluster keeps
//! serving them) until the next successful listing replaces them, which
//! publishes only the differences.
//!
//! How an inspected container becomes a record (names, aliases,
//! addresses, ports, labels, which containers are published at all) is
//! the pure function [`mapping::record_of`]; this module only talks to the
//! engine and reports what that function makes of its answers.

pub mod mapping;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures_util::{StreamExt, stream};
use muster_core::{Record, Source};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::SourceUpdate;
use mapping::{Mapping, Skipped, record_of, short_id};

/// The socket used when neither `--docker-host` nor `DOCKER_HOST` is set.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";
/// Network name of the host address given to containers with no routable
/// address.
pub const HOST_NETWORK: &str = "host";
/// Timeout of one Docker API call (the event stream excepted).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Containers inspected at once: the engine is shared with its real work.
const INSPECT_CONCURRENCY: usize = 4;
/// First and largest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How the Docker source is set up.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The engine's socket, `unix:///path` or a plain path.
    pub host: String,
    /// Label filters; a container is published only if it matches all.
    pub filters: Vec<LabelFilter>,
    /// Networks whose container IPs are reachable from other hosts.
    pub routable_networks: BTreeSet<String>,
    /// This host's address, answered for containers with no routable IP.
    pub host_ip: IpAddr,
    /// How long an exited container stays listed (never in DNS).
    pub exited_retention: Duration,
}

impl DockerConfig {
    /// The part of the configuration that shapes records.
    pub fn mapping(&self) -> Mapping {
        Mapping {
            filters: self.filters.clone(),
            routable_networks: self.routable_networks.clone(),
            host_ip: self.host_ip,
            exited_retention: self.exited_retention,
        }
    }
}

/// A `--docker-filter`: `label=KEY` (the label is present) or
/// `label=KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    key: String,
    value: Option<String>,
}

/// A filter that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("docker filter {0:?}: expected label=KEY or label=KEY=VALUE")]
pub struct FilterError(String);

impl std::str::FromStr for LabelFilter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<LabelFilter, FilterError> {
        let rest = s
            .strip_prefix("label=")
            .ok_or_else(|| FilterError(s.to_owned()))?;
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (rest, None),
        };
        if key.is_empty() {
            return Err(FilterError(s.to_owned()));
        }
        Ok(LabelFilter {
            key: key.to_owned(),
            value,
        })
    }
}

impl LabelFilter {
    fn matches(&self, labels: &HashMap<String, String>) -> bool {
        match (&self.value, labels.get(&self.key)) {
            (None, found) => found.is_some(),
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        }
    }

    /// The filter in the engine's own syntax.
    fn as_engine_filter(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={v}", self.key),
            None => self.key.clone(),
        }
    }
}

/// The connection state of the Docker source, for members and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerStatus {
    /// Not connected yet.
    Connecting,
    /// Following the engine's events.
    Connected {
        /// The engine's API version.
        api_version: String,
    },
    /// Lost or never reached; retrying.
    Disconnected {
        /// Why.
        error: String,
    },
}

impl std::fmt::Display for DockerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerStatus::Connecting => f.write_str("connecting"),
            DockerStatus::Connected { .. } => f.write_str("connected"),
            DockerStatus::Disconnected { .. } => f.write_str("disconnected"),
        }
    }
}

/// Why a session with the engine ended.
#[derive(Debug, Error)]
enum SessionError {
    #[error("cannot connect to {host}: {source}")]
    Connect {
        host: String,
        source: bollard::errors::Error,
    },
    #[error("Docker API call {call} failed: {source}")]
    Api {
        call: &'static str,
        source: bollard::errors::Error,
    },
    #[error("Docker API call {0} timed out")]
    Timeout(&'static str),
    #[error("the event stream ended")]
    EventsEnded,
    #[error("the agent is shutting down")]
    Closed,
}

/// The Docker source's metrics; cheap to clone (shared counters).
#[derive(Clone, Debug, Default)]
pub struct DockerMetrics {
    events: Counter,
    disconnects: Counter,
}

impl DockerMetrics {
    /// Registers the metrics under `muster_docker_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "muster_docker_events",
            "Docker engine events received",
            self.events.clone(),
        );
        registry.register(
            "muster_docker_disconnects",
            "Times the connection to the Docker engine was lost or could not be made (each is followed by a retry)",
            self.disconnects.clone(),
        );
    }
}

/// The Docker source task.
pub struct DockerSource {
    config: DockerConfig,
    mapping: Mapping,
    status: watch::Sender<DockerStatus>,
    metrics: DockerMetrics,
}

impl DockerSource {
    /// A source with `config`, and a receiver of its connection status.
    pub fn new(config: DockerConfig) -> (DockerSource, watch::Receiver<DockerStatus>) {
        let (status, rx) = watch::channel(DockerStatus::Connecting);
        let metrics = DockerMetrics::default();
        (
            DockerSource {
                mapping: config.mapping(),
                config,
                status,
                metrics,
            },
            rx,
        )
    }

    /// Counts events and disconnections in `metrics`.
    pub fn with_metrics(mut self, metrics: DockerMetrics) -> DockerSource {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown` is cancelled (or the receiver of `updates` is
    /// dropped): connects, reports the containers, follows events, and
    /// reconnects whenever the engine goes away.
    pub async fn run(self, updates: mpsc::Sender<SourceUpdate>, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut session = Session {
                config: &self.config,
                mapping: &self.mapping,
                status: &self.status,
                updates: &updates,
                metrics: &self.metrics,
                known: HashMap::new(),
                connected: false,
            };
            let outcome = tokio::select! {
                outcome = session.run() => outcome,
                _ = updates.closed() => return,
                () = shutdown.cancelled() => return,
            };
            let error = match outcome {
                Err(SessionError::Closed) => return,
                Err(e) => e.to_string(),
                Ok(()) => unreachable!("a session only ends with an error"),
            };
            if session.connected {
                backoff = BACKOFF_MIN;
            }
            self.metrics.disconnects.inc();
            let was_connected = matches!(*self.status.borrow(), DockerStatus::Connected { .. });
            if was_connected || *self.status.borrow() == DockerStatus::Connecting {
                warn!(%error, retry_in = ?backoff, "Docker source disconnected; keeping the published containers and retrying");
            } else {
                debug!(%error, retry_in = ?backoff, "Docker still unreachable");
            }
            self.status
                .send_replace(DockerStatus::Disconnected { error });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = updates.closed() => return,
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// One connection to the engine, from connect to loss.
struct Session<'a> {
    config: &'a DockerConfig,
    mapping: &'a Mapping,
    status: &'a watch::Sender<DockerStatus>,
    updates: &'a mpsc::Sender<SourceUpdate>,
    metrics: &'a DockerMetrics,
    /// What this session has reported, by short id.
    known: HashMap<String, Record>,
    connected: bool,
}

async fn timed<T>(
    call: &'static str,
    f: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SessionError::Api { call, source }),
        Err(_) => Err(SessionError::Timeout(call)),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Session<'_> {
    async fn run(&mut self) -> Result<(), SessionError> {
        let host = self.config.host.clone();
        let docker =
            Docker::connect_with_unix(&host, CALL_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
                .map_err(|source| SessionError::Connect {
                    host: host.clone(),
                    source,
                })?;
        let docker = timed("version", docker.negotiate_version()).await?;
        let api_version = docker.client_version().to_string();

        // Subscribe before listing, so nothing between the two is missed.
        let mut events = Box::pin(docker.events(Some(EventsOptions {
            filters: Some(HashMap::from([(
                "type".to_owned(),
                vec!["container".to_owned(), "network".to_owned()],
            )])),
            ..Default::default()
        })));

        let records = self.list_all(&docker).await?;
        info!(host = %host, api_version = %api_version, containers = records.len(), "Docker source connected");
        self.connected = true;
        self.status
            .send_replace(DockerStatus::Connected { api_version });
        self.known = records.iter().map(|r| (r.id.clone(), r.clone())).collect();
        self.send(SourceUpdate::Replace {
            source: Source::Docker,
            records,
        })
        .await?;

        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        loop {
            let mut pending: HashSet<String> = HashSet::new();
            tokio::select! {
                event = events.next() => {
                    self.note(event, &mut pending)?;
                    // Take every event already waiting, so a burst is
                    // handled as one batch with one inspect per container.
                    while let Some(event) = futures_util::FutureExt::now_or_never(events.next()) {
                        self.note(event, &mut pending)?;
                    }
                }
                _ = expiry.tick() => {}
            }
            if !pending.is_empty() {
                self.refresh(&docker, pending).await?;
            }
            self.expire().await?;
        }
    }

    /// Adds the container an event is about to `pending`; an error or the
    /// end of the stream ends the session.
    fn note(
        &self,
        event: Option<Result<EventMessage, bollard::errors::Error>>,
        pending: &mut HashSet<String>,
    ) -> Result<(), SessionError> {
        let event = match event {
            None => return Err(SessionError::EventsEnded),
            Some(Err(source)) => {
                return Err(SessionError::Api {
                    call: "events",
                    source,
                });
            }
            Some(Ok(e)) => e,
        };
        self.metrics.events.inc();
        let action = event.action.as_deref().unwrap_or("");
        let actor = event.actor.as_ref();
        let attributes = actor.and_then(|a| a.attributes.as_ref());
        let id = match event.typ {
            Some(EventMessageTypeEnum::CONTAINER) => {
                // exec_*, attach, resize, top... change nothing we publish.
                let relevant = matches!(
                    action,
                    "create"
                        | "start"
                        | "restart"
                        | "die"
                        | "stop"
                        | "kill"
                        | "destroy"
                        | "rename"
                        | "pause"
                        | "unpause"
                        | "update"
                        | "oom"
                ) || action.starts_with("health_status");
                if !relevant {
                    return Ok(());
                }
                actor.and_then(|a| a.id.clone())
            }
            Some(EventMessageTypeEnum::NETWORK) if matches!(action, "connect" | "disconnect") => {
                attributes.and_then(|a| a.get("container").cloned())
            }
            _ => None,
        };
        if let Some(id) = id {
            debug!(%action, id = %short_id(&id), "Docker event");
            pending.insert(id);
        }
        Ok(())
    }

    async fn list_all(&self, docker: &Docker) -> Result<Vec<Record>, SessionError> {
        let mut filters = HashMap::new();
        if !self.config.filters.is_empty() {
            filters.insert(
                "label".to_owned(),
                self.config
                    .filters
                    .iter()
                    .map(LabelFilter::as_engine_filter)
                    .collect(),
            );
        }
        let summaries = timed(
            "list containers",
            docker.list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            })),
        )
        .await?;
        let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
        let inspected = self.inspect_many(docker, ids).await?;
        Ok(inspected.into_iter().filter_map(|(_, r)| r).collect())
    }

    /// Inspects containers a few at a time; `None` for those that are gone
    /// or not ours.
    async fn inspect_many(
        &self,
        docker: &Docker,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<Vec<(String, Option<Record>)>, SessionError> {
        let results: Vec<Result<(String, Option<Record>), SessionError>> = stream::iter(ids)
            .map(|id| async move {
                match tokio::time::timeout(CALL_TIMEOUT, docker.inspect_container(&id, None)).await
                {
                    Ok(Ok(c)) => Ok((short_id(&id).to_owned(), self.to_record(&c))),
                    Ok(Err(e)) if is_not_found(&e) => Ok((short_id(&id).to_owned(), None)),
                    Ok(Err(source)) => Err(SessionError::Api {
                        call: "inspect container",
                        source,
                    }),
                    Err(_) => Err(SessionError::Timeout("inspect container")),
                }
            })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Inspects the containers events named and reports what changed.
    async fn refresh(&mut self, docker: &Docker, ids: HashSet<String>) -> Result<(), SessionError> {
        for (id, record) in self.inspect_many(docker, ids).await? {
            match record {
                Some(record) => {
                    if self.known.get(&id) != Some(&record) {
                        self.known.insert(id, record.clone());
                        self.send(SourceUpdate::Upsert {
                            source: Source::Docker,
                            record: Box::new(record),
                            ack: None,
                        })
                        .await?;
                    }
                }
                None => {
                    if self.known.remove(&id).is_some() {
                        self.send(SourceUpdate::Remove {
                            source: Source::Docker,
                            id,
                        })
                        .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Withdraws exited containers once their retention has passed.
    async fn expire(&mut self) -> Result<(), SessionError> {
        let now = unix_now();
        let expired: Vec<String> = self
            .known
            .values()
            .filter(|r| self.mapping.expired(r, now))
            .map(|r| r.id.clone())
            .collect();
        for id in expired {
            self.known.remove(&id);
            self.send(SourceUpdate::Remove {
                source: Source::Docker,
                id,
            })
            .await?;
        }
        Ok(())
    }

    async fn send(&self, update: SourceUpdate) -> Result<(), SessionError> {
        self.updates
            .send(update)
            .await
            .map_err(|_| SessionError::Closed)
    }

    /// The record for an inspected container, now; `None` when it is not
    /// published (see [`record_of`]).
    fn to_record(&self, c: &ContainerInspectResponse) -> Option<Record> {
        match record_of(c, self.mapping, unix_now()) {
            Ok(record) => Some(record),
            Err(Skipped::Invalid(e)) => {
                let raw_name = c.name.as_deref().unwrap_or("");
                warn!(container = %raw_name, error = %e, "container not published");
                None
            }
            Err(Skipped::NoId | Skipped::Filtered | Skipped::Expired) => None,
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_label_key_and_value() {
        let f: LabelFilter = "label=muster.host=a".parse().unwrap();
        assert_eq!(f.as_engine_filter(), "muster.host=a");
        let present: LabelFilter = "label=tenant".parse().unwrap();
        let labels = HashMap::from([("tenant".to_owned(), "x".to_owned())]);
        assert!(present.matches(&labels));
        assert!(!f.matches(&labels));
        for bad in ["muster.host=a", "label=", "label==a"] {
            assert!(bad.parse::<LabelFilter>().is_err(), "{bad}");
        }
    }
}
