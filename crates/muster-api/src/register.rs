//! Register, KeepAlive and Deregister: self-reported records.

use muster_core::Snapshot;
use muster_proto::v1;
use muster_sources::registry::Registry;
use tonic::Status;

pub(crate) async fn register(
    _registry: &Registry,
    _snapshot: &Snapshot,
    _request: v1::RegisterRequest,
) -> Result<v1::RegisterResponse, Status> {
    Err(Status::unimplemented("registration is being built"))
}

pub(crate) async fn keep_alive(
    _registry: &Registry,
    _request: v1::KeepAliveRequest,
) -> Result<v1::KeepAliveResponse, Status> {
    Err(Status::unimplemented("registration is being built"))
}

pub(crate) async fn deregister(
    _registry: &Registry,
    _request: v1::DeregisterRequest,
) -> Result<v1::DeregisterResponse, Status> {
    Err(Status::unimplemented("registration is being built"))
}
