//! Register, KeepAlive and Deregister: self-reported records.
//!
//! This module converts between the wire and the [`Registrar`] (the agent's
//! registry: it owns registrations, their TTLs, and gets the publisher's
//! verdict on each) and maps its errors to status codes a client can act
//! on: INVALID_ARGUMENT for a bad record or TTL, or a record too large to
//! gossip, with the offending field first in the message
//! (`record.name: ...`, `ttl_seconds: ...`); NOT_FOUND for an id that is
//! not registered (never was, deregistered, or lapsed); ALREADY_EXISTS when
//! another source of this agent publishes the same id; RESOURCE_EXHAUSTED
//! when the agent holds all the registrations it takes; UNAVAILABLE while
//! it shuts down. Refusals come from the publisher's verdict, not from a
//! guess made here: nothing is checked twice.
//!
//! A registration whose names are already answered by other records (on
//! any host, from any source) is accepted, and the others are reported in
//! `conflicts` and logged: names may repeat, and merging is not muster's
//! call.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_core::{PublishError, Record, RecordError, Registrar, RegistrationError, Snapshot};
use muster_proto::{WireError, v1};
use tonic::Status;
use tracing::warn;

/// What Register does with a name other records already answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegisterConflicts {
    /// Register it, and report the others in `conflicts` (names may
    /// repeat; merging is not muster's call).
    #[default]
    Allow,
    /// Refuse it with FAILED_PRECONDITION, naming the others.
    Refuse,
}

pub(crate) async fn register(
    registrar: &dyn Registrar,
    snapshot: &Snapshot,
    on_conflict: RegisterConflicts,
    request: v1::RegisterRequest,
) -> Result<v1::RegisterResponse, Status> {
    let mut wire = request
        .record
        .ok_or_else(|| Status::invalid_argument("record: required"))?;
    // Host and source are the agent's to set, whatever the client sent.
    wire.host.clear();
    wire.source = v1::Source::Registered as i32;
    let name = wire.name.clone();
    // Parsed here; the registry completes the record and checks it.
    let record = muster_proto::parse_record(wire).map_err(|e| wire_error(&name, e))?;
    if on_conflict == RegisterConflicts::Refuse {
        let holders = conflicts(snapshot, &registrar.as_published(&record));
        if !holders.is_empty() {
            let holders: Vec<String> = holders
                .iter()
                .map(|r| format!("{} ({}@{}, {})", r.name, r.id, r.host, r.source.as_str()))
                .collect();
            return Err(Status::failed_precondition(format!(
                "record.name: other records already answer to its names: {} \
                 (this agent refuses conflicting registrations)",
                holders.join(", ")
            )));
        }
    }
    let ttl = Duration::from_secs(request.ttl_seconds.into());
    let registration = registrar
        .register(record, ttl)
        .await
        .map_err(|e| registration_error(&name, e))?;
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
    registrar: &dyn Registrar,
    request: v1::KeepAliveRequest,
) -> Result<v1::KeepAliveResponse, Status> {
    if request.id.is_empty() {
        return Err(Status::invalid_argument("id: required"));
    }
    let ttl = (request.ttl_seconds != 0).then(|| Duration::from_secs(request.ttl_seconds.into()));
    let expires_at = registrar
        .keep_alive(&request.id, ttl)
        .await
        .map_err(|e| registration_error("", e))?;
    Ok(v1::KeepAliveResponse {
        expires_at_ms: unix_ms(expires_at),
    })
}

pub(crate) async fn deregister(
    registrar: &dyn Registrar,
    request: v1::DeregisterRequest,
) -> Result<v1::DeregisterResponse, Status> {
    if request.id.is_empty() {
        return Err(Status::invalid_argument("id: required"));
    }
    registrar
        .deregister(&request.id)
        .await
        .map_err(|e| registration_error("", e))?;
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

fn registration_error(name: &str, e: RegistrationError) -> Status {
    match &e {
        RegistrationError::BadTtl { .. } => Status::invalid_argument(format!("ttl_seconds: {e}")),
        RegistrationError::NoAddress => Status::invalid_argument(format!("record.addresses: {e}")),
        RegistrationError::BadRecord(record) => invalid_record(name, record),
        RegistrationError::Refused(PublishError::IdTaken { .. }) => {
            Status::already_exists(format!("record.id: {e}"))
        }
        RegistrationError::Refused(_) => Status::invalid_argument(format!("record: {e}")),
        RegistrationError::Full { .. } => Status::resource_exhausted(e.to_string()),
        RegistrationError::NotFound(_) => Status::not_found(e.to_string()),
        RegistrationError::Stopped => Status::unavailable(e.to_string()),
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use muster_core::{Address, Change, Source};

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

    /// The status a refusal of a registration of `name` becomes: its
    /// code, and the field its message names first.
    fn check(e: RegistrationError, name: &str, code: tonic::Code, field: &str) {
        let status = registration_error(name, e.clone());
        assert_eq!(status.code(), code, "{e:?}");
        assert!(
            status.message().starts_with(field),
            "{field:?} not first in {:?}",
            status.message()
        );
    }

    /// The record rule `record` breaks (with its id defaulted to its name,
    /// as the registry does).
    fn broken(record: v1::Record) -> RecordError {
        let mut record = muster_proto::parse_record(record).expect("parses");
        record.id.clone_from(&record.name);
        record.validate().expect_err("breaks a rule")
    }

    #[test]
    fn refusals_become_status_codes_naming_the_field_first() {
        use tonic::Code::*;
        let bad = RegistrationError::BadRecord;
        check(
            bad(broken(wire("mon_1", &["10.0.0.9"]))),
            "mon_1",
            InvalidArgument,
            "record.name:",
        );
        let bad_alias = v1::Record {
            aliases: vec!["-x".into()],
            ..wire("mon-1", &["10.0.0.9"])
        };
        check(
            bad(broken(bad_alias)),
            "mon-1",
            InvalidArgument,
            "record.aliases:",
        );
        check(
            RegistrationError::NoAddress,
            "mon-1",
            InvalidArgument,
            "record.addresses:",
        );
        check(
            RegistrationError::BadTtl {
                seconds: 0,
                min: 1,
                max: 86_400,
            },
            "mon-1",
            InvalidArgument,
            "ttl_seconds:",
        );
        check(
            PublishError::TooLarge {
                id: "reg:mon-1".into(),
                bytes: 5000,
                limit: 4096,
            }
            .into(),
            "mon-1",
            InvalidArgument,
            "record: record",
        );
        check(
            PublishError::IdTaken {
                id: "reg:mon-1".into(),
                owner: Source::Static,
            }
            .into(),
            "mon-1",
            AlreadyExists,
            "record.id:",
        );
        check(
            RegistrationError::Full { limit: 10 },
            "mon-1",
            ResourceExhausted,
            "this agent",
        );
        check(
            RegistrationError::NotFound("x".into()),
            "",
            NotFound,
            "no registration",
        );
        check(RegistrationError::Stopped, "", Unavailable, "the registry");
    }

    #[test]
    fn malformed_wire_records_name_their_field_first() {
        let cases = [
            (wire("mon-1", &["10.0.0"]), "record.addresses:"),
            (
                v1::Record {
                    state: 99,
                    ..wire("mon-1", &["10.0.0.9"])
                },
                "record.state:",
            ),
            (
                v1::Record {
                    ports: vec![v1::Port {
                        port: 70_000,
                        ..Default::default()
                    }],
                    ..wire("mon-1", &["10.0.0.9"])
                },
                "record.ports:",
            ),
        ];
        for (record, field) in cases {
            let e = muster_proto::parse_record(record).expect_err("malformed");
            let status = wire_error("mon-1", e);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().starts_with(field),
                "{:?}",
                status.message()
            );
        }
    }

    #[test]
    fn conflicts_are_the_other_holders_of_the_registered_names_once_each() {
        let mut web = Record::new("web-1", "web-1", Source::Static);
        web.host = "b".into();
        web.aliases.push("mon-1".into());
        web.addresses.push(Address {
            network: "static".into(),
            ip: "10.0.0.5".parse().expect("address"),
            local: false,
        });
        let mut registered = Record::new("reg:mon-1", "mon-1", Source::Registered);
        registered.host = "a".into();
        registered.aliases.push("web-1".into());
        let snapshot = Snapshot::default().apply(vec![
            Change::Upsert(web),
            Change::Upsert(registered.clone()),
        ]);
        let found: Vec<String> = conflicts(&snapshot, &registered)
            .iter()
            .map(|r| format!("{}@{}", r.id, r.host))
            .collect();
        assert_eq!(found, ["web-1@b"]);
    }
}
