//! The gRPC Directory service and the HTTP endpoints, both answering from
//! the directory snapshot.
//!
//! Every call loads the latest snapshot once and answers from it alone, so
//! an answer is consistent with one revision and never waits on gossip.

#![warn(missing_docs)]

mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use muster_core::{Selector, Snapshot};
use muster_proto::v1;
use muster_proto::v1::directory_server::{Directory, DirectoryServer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

pub use http::serve_http;

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
}

/// The `muster.v1.Directory` service over a directory.
#[derive(Clone)]
pub struct DirectoryService {
    directory: Arc<ArcSwap<Snapshot>>,
}

impl DirectoryService {
    /// A service answering from `directory`.
    pub fn new(directory: Arc<ArcSwap<Snapshot>>) -> DirectoryService {
        DirectoryService { directory }
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
        let text = request.into_inner().selector;
        if text.len() > MAX_QUERY_BYTES {
            return Err(Status::invalid_argument("selector longer than 4096 bytes"));
        }
        let selector: Selector = text
            .parse()
            .map_err(|e| Status::invalid_argument(format!("{e}")))?;
        let snapshot = self.directory.load();
        Ok(Response::new(v1::ListResponse {
            records: snapshot
                .select(&selector)
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
        Ok(Response::new(v1::MembersResponse {
            members: snapshot.members().iter().map(v1::Member::from).collect(),
            revision: snapshot.revision(),
        }))
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

    /// Serves the Directory service until `shutdown` resolves.
    pub async fn serve(
        self,
        service: DirectoryService,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(DirectoryServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await
    }
}
