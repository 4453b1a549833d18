//! The static records file: records for hosts or services that Docker does
//! not know about, declared in TOML and re-read on demand (SIGHUP).
//!
//! ```toml
//! [[record]]
//! name = "web-1"
//! addresses = ["10.0.0.5", "fd00::5"]
//! labels = { app = "web", env = "prod" }
//! ports = ["8080/tcp"]
//! ```
//!
//! Optional fields: `id` (defaults to the name), `aliases`, `image`,
//! `state` (default `running`), `health` (default `none`). Unknown fields
//! are errors, so a typo never silently drops data. A file that fails to
//! load leaves the last good set in place.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use muster_core::{Address, Health, LineIndex, Port, Record, Source, UnknownState};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::SourceUpdate;

/// Network name given to static addresses.
pub const STATIC_NETWORK: &str = "static";

/// Why the static file could not be loaded.
#[derive(Debug, Error)]
pub enum StaticFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A record is well-formed TOML but not a valid record.
    #[error("{path}:{line}: record {name:?}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line where the record starts.
        line: usize,
        /// The record's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    record: Vec<toml::Spanned<RawRecord>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    name: String,
    id: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    image: String,
    state: Option<String>,
    health: Option<String>,
}

/// Reads and checks a static records file.
pub fn load(path: &Path) -> Result<Vec<Record>, StaticFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| StaticFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the text of a static records file; `path` names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Record>, StaticFileError> {
    let lines = LineIndex::new(text);
    let file: File = toml::from_str(text).map_err(|e| StaticFileError::Syntax {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| lines.line_of(s.start)),
        message: e.message().trim().to_owned(),
    })?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut records = Vec::with_capacity(file.record.len());
    for spanned in file.record {
        let line = lines.line_of(spanned.span().start);
        let raw = spanned.into_inner();
        let invalid = |reason: String| StaticFileError::Invalid {
            path: path.to_owned(),
            line,
            name: raw.name.clone(),
            reason,
        };
        let record = to_record(&raw).map_err(invalid)?;
        if let Some(first) = seen.insert(record.id.clone(), line) {
            return Err(invalid(format!(
                "id {:?} is already used by the record at line {first}",
                record.id
            )));
        }
        records.push(record);
    }
    Ok(records)
}

fn to_record(raw: &RawRecord) -> Result<Record, String> {
    let mut record = Record::new(
        raw.id.clone().unwrap_or_else(|| raw.name.clone()),
        raw.name.clone(),
        Source::Static,
    );
    record.aliases = raw.aliases.clone();
    record.image = raw.image.clone();
    record.labels = raw.labels.clone();
    for a in &raw.addresses {
        let ip = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))?;
        record.addresses.push(Address {
            network: STATIC_NETWORK.to_owned(),
            ip,
            local: false,
        });
    }
    for p in &raw.ports {
        record
            .ports
            .push(p.parse::<Port>().map_err(|e| e.to_string())?);
    }
    if let Some(state) = &raw.state {
        record.state = state.parse().map_err(|e: UnknownState| e.to_string())?;
    }
    if let Some(health) = &raw.health {
        record.health = parse_health(health)?;
    }
    record.validate().map_err(|e| e.to_string())?;
    Ok(record)
}

fn parse_health(s: &str) -> Result<Health, String> {
    Ok(match s {
        "none" => Health::None,
        "starting" => Health::Starting,
        "healthy" => Health::Healthy,
        "unhealthy" => Health::Unhealthy,
        _ => {
            return Err(format!(
                "health {s:?} is not one of none, starting, healthy, unhealthy"
            ));
        }
    })
}

/// The static file as a source: reports its records on every reload
/// request, and keeps the last good set (logging why) when a reload fails.
pub struct StaticFileSource {
    path: PathBuf,
    reload: Arc<Notify>,
}

impl fmt::Debug for StaticFileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticFileSource")
            .field("path", &self.path)
            .finish()
    }
}

impl StaticFileSource {
    /// A source for `path` that reloads whenever `reload` is notified.
    pub fn new(path: PathBuf, reload: Arc<Notify>) -> StaticFileSource {
        StaticFileSource { path, reload }
    }

    /// Runs until the receiver of `updates` is dropped: waits for a reload
    /// request, re-reads the file, and reports the new set if it loads.
    pub async fn run(self, updates: mpsc::Sender<SourceUpdate>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.reload.notified() => {}
                _ = updates.closed() => return,
                () = shutdown.cancelled() => return,
            }
            match load(&self.path) {
                Ok(records) => {
                    info!(path = %self.path.display(), records = records.len(), "static records reloaded");
                    let update = SourceUpdate::Replace {
                        source: Source::Static,
                        records,
                    };
                    if updates.send(update).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    error!(error = %e, "static records not reloaded; keeping the last good set")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Record>, StaticFileError> {
        parse(Path::new("records.toml"), text)
    }

    #[test]
    fn the_documented_example_loads() {
        let records = parse_str(
            r#"
[[record]]
name = "web-1"
addresses = ["10.0.0.5", "fd00::5"]
labels = { app = "web", env = "prod" }
ports = ["8080/tcp"]
"#,
        )
        .unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.id.as_str(), r.name.as_str()), ("web-1", "web-1"));
        assert_eq!(r.addresses.len(), 2);
        assert_eq!(r.labels["env"], "prod");
        assert_eq!(r.ports[0].to_string(), "8080/tcp");
        assert_eq!(r.state, muster_core::State::Running);
        assert_eq!(r.source, Source::Static);
    }

    #[test]
    fn an_empty_file_is_an_empty_set() {
        assert!(parse_str("").unwrap().is_empty());
    }

    fn error_of(text: &str) -> String {
        parse_str(text).expect_err("should fail").to_string()
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let syntax = error_of("[[record]]\nname = \"a\"\naddresses = [\"10.0.0.1\"\n");
        assert!(syntax.starts_with("records.toml:3:"), "{syntax}");

        let unknown = error_of("[[record]]\nname = \"a\"\nadresses = []\n");
        assert!(unknown.starts_with("records.toml:3:"), "{unknown}");
        assert!(unknown.contains("adresses"), "{unknown}");

        let bad_ip = error_of(
            "[[record]]\nname = \"a\"\n\n[[record]]\nname = \"b\"\naddresses = [\"10.0.0.300\"]\n",
        );
        assert!(
            bad_ip.starts_with("records.toml:4: record \"b\""),
            "{bad_ip}"
        );
        assert!(bad_ip.contains("10.0.0.300"), "{bad_ip}");

        let bad_name = error_of("[[record]]\nname = \"web_1\"\n");
        assert!(
            bad_name.starts_with("records.toml:1: record \"web_1\""),
            "{bad_name}"
        );

        let duplicate = error_of("[[record]]\nname = \"a\"\n[[record]]\nname = \"a\"\n");
        assert!(duplicate.contains("line 1"), "{duplicate}");

        let bad_port = error_of("[[record]]\nname = \"a\"\nports = [\"http\"]\n");
        assert!(bad_port.contains("\"http\""), "{bad_port}");
    }
}
