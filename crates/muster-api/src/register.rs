//! Register, KeepAlive and Deregister: self-reported records.
//!
//! This module converts between the wire and the [`Registry`] (which owns
//! registrations, their TTLs and their publication) and maps its errors to
//! status codes a client can act on: INVALID_ARGUMENT for a bad record or
//! TTL, with the offending field first in the message (`record.name: ...`,
//! `ttl_seconds: ...`); NOT_FOUND for an id that is not registered (never
//! was, deregistered, or lapsed); ALREADY_EXISTS when another source of
//! this agent publishes the same id; RESOURCE_EXHAUSTED when the agent holds
//! all the registrations it takes; UNAVAILABLE while it shuts down.
//!
//! A registration whose names are already answered by other records (on
//! any host, from any source) is accepted, and the others are reported in
//! `conflicts` and logged: names may repeat, and merging is not muster's
//! call.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_core::{Record, RecordError, Snapshot, Source};
use muster_proto::{WireError, v1};
use muster_sources::registry::{Registry, RegistryError};
use tonic::Status;
use tracing::warn;

pub(crate) async fn register(
    registry: &Registry,
    snapshot: &Snapshot,
    request: v1::RegisterRequest,
) -> Result<v1::RegisterResponse, Status> {
    let mut wire = request
        .record
        .ok_or_else(|| Status::invalid_argument("record: required"))?;
    // The id defaults to the name; host and source are the agent's to set,
    // whatever the client sent.
    if wire.id.is_empty() {
        wire.id.clone_from(&wire.name);
    }
    wire.host.clear();
    wire.source = v1::Source::Registered as i32;
    let name = wire.name.clone();
    let record = Record::try_from(wire).map_err(|e| wire_error(&name, e))?;
    let id = Registry::published_id(&record.id);
    if let Some(other) = snapshot
        .get(registry.node_name(), &id)
        .filter(|r| r.source != Source::Registered)
    {
        return Err(Status::already_exists(format!(
            "record.id: this agent already publishes {id:?} from its {} source",
            other.source.as_str()
        )));
    }
    // Refused here, not by the publisher later: a record that cannot be
    // gossiped must not be acknowledged.
    let mut as_published = record.clone();
    as_published.id.clone_from(&id);
    if let Err(e) = muster_gossip::publishable(&as_published) {
        return Err(Status::invalid_argument(format!("record: {e}")));
    }
    let ttl = Duration::from_secs(request.ttl_seconds.into());
    let registration = registry
        .register(record, ttl)
        .await
        .map_err(|e| registry_error(&name, e))?;
    let conflicts = conflicts(snapshot, &registration.record);
    if !conflicts.is_empty() {
        let others: Vec<String> = conflicts
            .iter()
            .map(|r| format!("{}@{} ({})", r.id, r.host, r.source.as_str()))
            .collect();
        warn!(
            id = %registration.record.id,
            name = %registration.record.name,
            others = %others.join(", "),
            "registered record shares a name with other records"
        );
    }
    Ok(v1::RegisterResponse {
        record: Some(v1::Record::from(&registration.record)),
        expires_at_ms: unix_ms(registration.expires_at),
        conflicts: conflicts.iter().map(|r| v1::Record::from(&**r)).collect(),
    })
}

pub(crate) async fn keep_alive(
    registry: &Registry,
    request: v1::KeepAliveRequest,
) -> Result<v1::KeepAliveResponse, Status> {
    if request.id.is_empty() {
        return Err(Status::invalid_argument("id: required"));
    }
    let ttl = (request.ttl_seconds != 0).then(|| Duration::from_secs(request.ttl_seconds.into()));
    let expires_at = registry
        .keep_alive(&request.id, ttl)
        .await
        .map_err(|e| registry_error("", e))?;
    Ok(v1::KeepAliveResponse {
        expires_at_ms: unix_ms(expires_at),
    })
}

pub(crate) async fn deregister(
    registry: &Registry,
    request: v1::DeregisterRequest,
) -> Result<v1::DeregisterResponse, Status> {
    if request.id.is_empty() {
        return Err(Status::invalid_argument("id: required"));
    }
    registry
        .deregister(&request.id)
        .await
        .map_err(|e| registry_error("", e))?;
    Ok(v1::DeregisterResponse {})
}

/// The records of `snapshot`, other than `registered` itself, that answer
/// to one of its names; each once.
fn conflicts(snapshot: &Snapshot, registered: &Record) -> Vec<Arc<Record>> {
    let mut found: Vec<Arc<Record>> = Vec::new();
    for name in registered.names() {
        for other in snapshot.lookup(name) {
            let itself = other.host == registered.host && other.id == registered.id;
            let seen = found
                .iter()
                .any(|r| r.host == other.host && r.id == other.id);
            if !itself && !seen {
                found.push(other.clone());
            }
        }
    }
    found
}

/// The status for a record that did not convert; `name` is the record's
/// name as sent (to tell a bad name from a bad alias).
fn wire_error(name: &str, e: WireError) -> Status {
    let field = match &e {
        WireError::Invalid(e) => return invalid_record(name, e),
        WireError::BadIp { .. } => "record.addresses",
        WireError::BadPort { .. } => "record.ports",
        WireError::UnknownEnum { field, .. } if *field == "protocol" => "record.ports",
        WireError::UnknownEnum { field, .. } => {
            return Status::invalid_argument(format!("record.{field}: {e}"));
        }
        WireError::Decode(_) => "record",
    };
    Status::invalid_argument(format!("{field}: {e}"))
}

fn invalid_record(name: &str, e: &RecordError) -> Status {
    let field = match e {
        RecordError::BadId(_) => "id".to_owned(),
        RecordError::BadName { name: bad, .. } if bad == name => "name".to_owned(),
        RecordError::BadName { .. } => "aliases".to_owned(),
        RecordError::TooMany { what, .. } => (*what).to_owned(),
        RecordError::BadLabel { .. } => "labels".to_owned(),
    };
    Status::invalid_argument(format!("record.{field}: {e}"))
}

fn registry_error(name: &str, e: RegistryError) -> Status {
    match &e {
        RegistryError::BadTtl { .. } => Status::invalid_argument(format!("ttl_seconds: {e}")),
        RegistryError::NoAddress => Status::invalid_argument(format!("record.addresses: {e}")),
        RegistryError::BadRecord(record) => invalid_record(name, record),
        RegistryError::Full { .. } => Status::resource_exhausted(e.to_string()),
        RegistryError::NotFound(_) => Status::not_found(e.to_string()),
        RegistryError::Stopped => Status::unavailable(e.to_string()),
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use muster_core::{Address, Change};
    use tokio::sync::mpsc;

    use super::*;

    fn wire(name: &str, ips: &[&str]) -> v1::Record {
        v1::Record {
            name: name.to_owned(),
            addresses: ips
                .iter()
                .map(|ip| v1::Address {
                    ip: (*ip).to_owned(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn registry() -> Registry {
        let (tx, mut rx) = mpsc::channel(16);
        let (registry, task) = Registry::new("a", tx);
        tokio::spawn(task);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        registry
    }

    async fn refused(request: v1::RegisterRequest) -> Status {
        register(&registry(), &Snapshot::default(), request)
            .await
            .expect_err("refused")
    }

    #[tokio::test]
    async fn bad_registrations_are_invalid_argument_naming_the_field() {
        let ok = || v1::RegisterRequest {
            record: Some(wire("mon-1", &["10.0.0.9"])),
            ttl_seconds: 30,
        };
        let cases: Vec<(v1::RegisterRequest, &str)> = vec![
            (
                v1::RegisterRequest {
                    record: None,
                    ..ok()
                },
                "record:",
            ),
            (
                v1::RegisterRequest {
                    record: Some(wire("mon_1", &["10.0.0.9"])),
                    ..ok()
                },
                "record.name:",
            ),
            (
                v1::RegisterRequest {
                    record: Some(v1::Record {
                        aliases: vec!["-x".into()],
                        ..wire("mon-1", &["10.0.0.9"])
                    }),
                    ..ok()
                },
                "record.aliases:",
            ),
            (
                v1::RegisterRequest {
                    record: Some(wire("mon-1", &[])),
                    ..ok()
                },
                "record.addresses:",
            ),
            (
                v1::RegisterRequest {
                    record: Some(wire("mon-1", &["10.0.0"])),
                    ..ok()
                },
                "record.addresses:",
            ),
            (
                v1::RegisterRequest {
                    record: Some(v1::Record {
                        state: 99,
                        ..wire("mon-1", &["10.0.0.9"])
                    }),
                    ..ok()
                },
                "record.state:",
            ),
            (
                v1::RegisterRequest {
                    ttl_seconds: 0,
                    ..ok()
                },
                "ttl_seconds:",
            ),
            // Within every per-field limit, but too large to gossip.
            (
                v1::RegisterRequest {
                    record: Some(v1::Record {
                        labels: (0..40)
                            .map(|i| (format!("label-{i}"), "v".repeat(200)))
                            .collect(),
                        ..wire("mon-1", &["10.0.0.9"])
                    }),
                    ..ok()
                },
                "record: record",
            ),
            (
                v1::RegisterRequest {
                    ttl_seconds: 86_401,
                    ..ok()
                },
                "ttl_seconds:",
            ),
        ];
        for (request, field) in cases {
            let status = refused(request.clone()).await;
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{request:?}");
            assert!(
                status.message().starts_with(field),
                "{field} not first in {:?}",
                status.message()
            );
        }
    }

    #[tokio::test]
    async fn the_response_has_the_published_record_and_other_holders_of_the_name() {
        let mut web = Record::new("web-1", "web-1", Source::Static);
        web.host = "b".into();
        web.addresses.push(Address {
            network: "static".into(),
            ip: "10.0.0.5".parse().expect("address"),
            local: false,
        });
        let snapshot = Snapshot::default().apply(vec![Change::Upsert(web)]);
        let registry = registry();
        let request = v1::RegisterRequest {
            record: Some(v1::Record {
                aliases: vec!["WEB-1".into()],
                host: "forged".into(),
                ..wire("mon-1", &["10.0.0.9"])
            }),
            ttl_seconds: 30,
        };
        let response = register(&registry, &snapshot, request).await.unwrap();
        let record = response.record.unwrap();
        assert_eq!(
            (record.id.as_str(), record.host.as_str(), record.source()),
            ("reg:mon-1", "a", v1::Source::Registered)
        );
        assert!(response.expires_at_ms > unix_ms(SystemTime::now()));
        let conflicts: Vec<_> = response
            .conflicts
            .iter()
            .map(|r| format!("{}@{}", r.id, r.host))
            .collect();
        assert_eq!(conflicts, ["web-1@b"]);
    }

    #[tokio::test]
    async fn an_id_another_source_of_this_agent_publishes_already_exists() {
        let mut taken = Record::new("reg:mon-1", "mon-1", Source::Static);
        taken.host = "a".into();
        let snapshot = Snapshot::default().apply(vec![Change::Upsert(taken)]);
        let request = v1::RegisterRequest {
            record: Some(wire("mon-1", &["10.0.0.9"])),
            ttl_seconds: 30,
        };
        let status = register(&registry(), &snapshot, request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
    }

    #[tokio::test]
    async fn unknown_ids_are_not_found() {
        let registry = registry();
        let status = keep_alive(
            &registry,
            v1::KeepAliveRequest {
                id: "nope".into(),
                ttl_seconds: 0,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        let status = deregister(&registry, v1::DeregisterRequest { id: "nope".into() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
}
