//! Integration tests: real `muster agent` processes on loopback, queried
//! with real clients (dig, dnspython, the generated gRPC client, the CLI).

mod harness;

mod api;
mod bad_input;
mod conformance;
mod directory;
mod discovery;
mod docker;
mod grpc_tls;
mod lifecycle;
mod netns;
mod policy;
mod prometheus;
mod register;
mod sealed_gossip;
mod status_page;
