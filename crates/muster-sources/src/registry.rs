//! Self-reported records, registered over gRPC with a TTL.

/// The records registered with this agent.
#[derive(Clone, Default)]
pub struct Registry {}
