//! The gRPC Directory service and the HTTP endpoints, both answering from
//! the directory snapshot.
//!
//! Every call loads the latest snapshot once and answers from it alone, so
//! an answer is consistent with one revision and never waits on gossip.

#![warn(missing_docs)]

mod http;
mod metrics;
mod register;
mod tls;
mod violations;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use muster_core::{LastHeard, Registrar, Selector, Snapshot, State};
use muster_policy::PolicyEngine;
use muster_proto::v1;
use muster_proto::v1::directory_server::{Directory, DirectoryServer};
use thiserror::Error;
use tokio::net::TcpListener;

use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

pub use http::{HttpState, serve_http};
pub use metrics::GrpcMetrics;
pub use register::RegisterConflicts;
pub use tls::{HANDSHAKE_TIMEOUT, ServerTls, TlsError, TlsFiles};

/// Adds to `registry` the gauges read from the directory and the naming
/// policy's verdicts at every scrape: `muster_build_info`,
/// `muster_records`, `muster_members`, `muster_policy_violations`,
/// `muster_index_revision`.
pub fn register_directory_metrics(
    registry: &mut prometheus_client::registry::Registry,
    directory: Arc<ArcSwap<Snapshot>>,
    judged: Arc<ArcSwap<muster_policy::Judged>>,
) {
    registry.register_collector(Box::new(metrics::DirectoryCollector { directory, judged }));
}

/// Watch and WatchViolations streams one agent serves at once, unless
/// configured otherwise.
pub const DEFAULT_MAX_WATCHERS: usize = 1024;

/// Longest name or selector accepted in a request, in bytes.
const MAX_QUERY_BYTES: usize = 4096;

/// Why a server could not start.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The listening socket could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The reflection service could not read the proto descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(tonic::transport::Error),
}

/// The `muster.v1.Directory` service over a directory.
#[derive(Clone)]
pub struct DirectoryService {
    directory: Arc<ArcSwap<Snapshot>>,
    revisions: tokio::sync::watch::Receiver<u64>,
    epoch: u64,
    last_heard: LastHeard,
    registrar: Option<Arc<dyn Registrar>>,
    /// When set, Register, KeepAlive and Deregister need
    /// `authorization: Bearer <token>`; reads stay open.
    write_token: Option<Arc<[u8]>>,
    on_conflict: RegisterConflicts,
    /// One permit per open Watch or WatchViolations stream.
    watchers: Arc<tokio::sync::Semaphore>,
    max_watchers: usize,
    policy: Option<PolicyEngine>,
}

impl DirectoryService {
    /// A service answering from `directory`. `revisions` moves whenever a
    /// new snapshot is stored (watchers wait on it); `epoch` tells this
    /// run's revisions from another's (the agent's generation).
    pub fn new(
        directory: Arc<ArcSwap<Snapshot>>,
        revisions: tokio::sync::watch::Receiver<u64>,
        epoch: u64,
    ) -> DirectoryService {
        DirectoryService {
            directory,
            revisions,
            epoch,
            last_heard: LastHeard::default(),
            registrar: None,
            write_token: None,
            on_conflict: RegisterConflicts::Allow,
            watchers: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_WATCHERS)),
            max_watchers: DEFAULT_MAX_WATCHERS,
            policy: None,
        }
    }

    /// Members show when each was last heard from, as `heard` records it.
    pub fn with_last_heard(mut self, heard: LastHeard) -> DirectoryService {
        self.last_heard = heard;
        self
    }

    /// Violations and WatchViolations report `engine`'s verdicts; without
    /// one they answer UNAVAILABLE.
    pub fn with_policy(mut self, engine: PolicyEngine) -> DirectoryService {
        self.policy = Some(engine);
        self
    }

    /// What Register does with names other records already answer to.
    pub fn with_register_conflicts(mut self, on_conflict: RegisterConflicts) -> DirectoryService {
        self.on_conflict = on_conflict;
        self
    }

    /// Serves at most `max` Watch and WatchViolations streams at once; the
    /// next gets RESOURCE_EXHAUSTED until one ends.
    pub fn with_max_watchers(mut self, max: usize) -> DirectoryService {
        self.watchers = Arc::new(tokio::sync::Semaphore::new(max));
        self.max_watchers = max;
        self
    }

    /// Register, KeepAlive and Deregister need `authorization: Bearer
    /// <token>` metadata: UNAUTHENTICATED without it, PERMISSION_DENIED
    /// with another token (compared in constant time). Reads stay open.
    pub fn with_write_token(mut self, token: &str) -> DirectoryService {
        self.write_token = Some(Arc::from(token.as_bytes()));
        self
    }

    /// Register, KeepAlive and Deregister act on `registrar`; without one
    /// they answer UNAVAILABLE.
    pub fn with_registrar(mut self, registrar: Arc<dyn Registrar>) -> DirectoryService {
        self.registrar = Some(registrar);
        self
    }
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn lookup(
        &self,
        request: Request<v1::LookupRequest>,
    ) -> Result<Response<v1::LookupResponse>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() || name.len() > MAX_QUERY_BYTES {
            return Err(Status::invalid_argument("name must be 1 to 4096 bytes"));
        }
        let snapshot = self.directory.load();
        let records = snapshot.lookup(&name);
        if records.is_empty() {
            return Err(Status::not_found(format!("no record named {name:?}")));
        }
        Ok(Response::new(v1::LookupResponse {
            records: records.iter().map(|r| v1::Record::from(&**r)).collect(),
            revision: snapshot.revision(),
        }))
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let request = request.into_inner();
        let filter = Filter::from_request(&request.selector, &request.host, request.state)?;
        let snapshot = self.directory.load();
        Ok(Response::new(v1::ListResponse {
            records: filter
                .select(&snapshot)
                .iter()
                .map(|r| v1::Record::from(&**r))
                .collect(),
            revision: snapshot.revision(),
        }))
    }

    async fn members(
        &self,
        _request: Request<v1::MembersRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        let snapshot = self.directory.load();
        let members = snapshot
            .members()
            .iter()
            .map(|m| {
                let mut wire = v1::Member::from(m);
                wire.last_heard_ms = self
                    .last_heard
                    .get(&m.name)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                if let Some(behind) = self.last_heard.behind(&m.name) {
                    wire.behind_since_ms = behind
                        .since
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    wire.behind_versions = behind.versions;
                }
                wire
            })
            .collect();
        Ok(Response::new(v1::MembersResponse {
            members,
            revision: snapshot.revision(),
        }))
    }

    type WatchStream = watch::EventStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let filter = Filter::from_request(&request.selector, "", None)?;
        let slot = self.watcher_slot()?;
        Ok(Response::new(watch::start(
            self.directory.clone(),
            self.revisions.clone(),
            self.epoch,
            filter,
            request.from_revision,
            request.epoch,
            slot,
        )))
    }

    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        self.authorize(&request)?;
        let registrar = self.registrar()?;
        register::register(
            registrar,
            &self.directory.load(),
            self.on_conflict,
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }

    async fn keep_alive(
        &self,
        request: Request<v1::KeepAliveRequest>,
    ) -> Result<Response<v1::KeepAliveResponse>, Status> {
        self.authorize(&request)?;
        let registrar = self.registrar()?;
        register::keep_alive(registrar, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn violations(
        &self,
        request: Request<v1::ViolationsRequest>,
    ) -> Result<Response<v1::ViolationsResponse>, Status> {
        let rule = request.into_inner().rule;
        Ok(Response::new(violations::list(self.policy()?, &rule)))
    }

    type WatchViolationsStream = violations::ViolationStream;

    async fn watch_violations(
        &self,
        request: Request<v1::ViolationsRequest>,
    ) -> Result<Response<Self::WatchViolationsStream>, Status> {
        let rule = request.into_inner().rule;
        let engine = self.policy()?.clone();
        Ok(Response::new(violations::watch(
            engine,
            rule,
            self.watcher_slot()?,
        )))
    }

    async fn deregister(
        &self,
        request: Request<v1::DeregisterRequest>,
    ) -> Result<Response<v1::DeregisterResponse>, Status> {
        self.authorize(&request)?;
        let registrar = self.registrar()?;
        register::deregister(registrar, request.into_inner())
            .await
            .map(Response::new)
    }
}

impl DirectoryService {
    fn policy(&self) -> Result<&PolicyEngine, Status> {
        self.policy
            .as_ref()
            .ok_or_else(|| Status::unavailable("this agent judges no naming policy"))
    }

    /// Whether `request` may write: always without a write token, else only
    /// with `authorization: Bearer <that token>`.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.write_token else {
            return Ok(());
        };
        let Some(given) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "authorization: this agent takes writes only with `authorization: Bearer <token>` \
                 (the token in the agent's --api-token-file)",
            ));
        };
        let given = given
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .unwrap_or_default();
        if bool::from(subtle::ConstantTimeEq::ct_eq(given, &token[..])) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "authorization: not this agent's write token",
            ))
        }
    }

    /// A place for one more stream, or RESOURCE_EXHAUSTED.
    fn watcher_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this agent already serves {} watch streams (--max-watchers); try again later",
                self.max_watchers
            ))
        })
    }

    fn registrar(&self) -> Result<&dyn Registrar, Status> {
        self.registrar
            .as_deref()
            .ok_or_else(|| Status::unavailable("this agent takes no registrations"))
    }
}

/// Which records a List or Watch wants: a label selector, and for List a
/// host and a state.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    selector: Selector,
    host: Option<String>,
    state: Option<State>,
}

impl Filter {
    /// Checks a request's fields: INVALID_ARGUMENT for a bad selector
    /// (the message points at the column) or an unknown state.
    fn from_request(selector: &str, host: &str, state: Option<i32>) -> Result<Filter, Status> {
        if selector.len() > MAX_QUERY_BYTES || host.len() > MAX_QUERY_BYTES {
            return Err(Status::invalid_argument(
                "selector or host longer than 4096 bytes",
            ));
        }
        let selector: Selector = selector
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{e}")))?;
        let state = match state {
            None => None,
            Some(n) => {
                let wire = v1::State::try_from(n)
                    .map_err(|_| Status::invalid_argument(format!("unknown state {n}")))?;
                Some(muster_proto::state_from_wire(wire))
            }
        };
        Ok(Filter {
            selector,
            host: (!host.is_empty()).then(|| host.to_owned()),
            state,
        })
    }

    fn matches(&self, record: &muster_core::Record) -> bool {
        self.selector.matches(&record.labels)
            && self
                .host
                .as_ref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&record.host))
            && self.state.is_none_or(|s| s == record.state)
    }

    fn select(&self, snapshot: &Snapshot) -> Vec<Arc<muster_core::Record>> {
        let mut records = snapshot.select(&self.selector);
        records.retain(|r| self.matches(r));
        records
    }
}

/// A bound gRPC listener, ready to serve.
pub struct GrpcServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl GrpcServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> Result<GrpcServer, ApiError> {
        let bind_err = |source| ApiError::Bind {
            what: "gRPC",
            addr,
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(GrpcServer { listener, addr })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the Directory service until `shutdown` resolves, with the
    /// standard health checking service (`grpc.health.v1.Health`: SERVING
    /// for the whole server and for `muster.v1.Directory`) and server
    /// reflection (v1 and v1alpha), so that grpcurl and grpc-health-probe
    /// need no proto files. With `tls`, every connection is TLS (mutual
    /// when its files name a client CA).
    pub async fn serve(
        self,
        service: DirectoryService,
        metrics: GrpcMetrics,
        tls: Option<Arc<ServerTls>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ApiError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<DirectoryServer<DirectoryService>>()
            .await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(muster_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(ApiError::Reflection)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(ApiError::Reflection)?;
        let router = tonic::transport::Server::builder()
            .layer(metrics::GrpcMetricsLayer(metrics.clone()))
            .add_service(DirectoryServer::new(service))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        match tls {
            None => {
                // Answers of a few kilobytes span several segments: without
                // TCP_NODELAY, Nagle's algorithm and the client's delayed
                // ACK hold each such answer for ~40 ms. tonic sets it only
                // on sockets it accepts itself.
                let incoming = TcpListenerStream::new(self.listener).map(|stream| {
                    let stream = stream?;
                    stream.set_nodelay(true)?;
                    Ok::<_, std::io::Error>(stream)
                });
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            Some(tls) => {
                let incoming = tls_incoming(self.listener, tls, metrics);
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        }
        .map_err(ApiError::Serve)
    }
}

/// Most TLS handshakes in progress at once; a connection past it is closed
/// at once (and counted), so slow or silent clients cannot pile up.
const MAX_HANDSHAKES: usize = 256;

/// Accepts connections and runs each TLS handshake in a task of its own
/// (bounded in number and in time), yielding the connections that
/// completed one. Ends when the server stops taking connections.
fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    metrics: GrpcMetrics,
) -> impl tokio_stream::Stream<
    Item = std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                metrics.tls_refused("busy");
                continue;
            };
            let (tx, tls, metrics) = (tx.clone(), tls.clone(), metrics.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let peer = stream.peer_addr().ok();
                match tls.accept(stream).await {
                    Ok(stream) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Err(e) => {
                        metrics.tls_refused("handshake");
                        tracing::debug!(?peer, error = %e, "gRPC TLS handshake failed");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
