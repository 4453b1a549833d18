//! How records and agent facts are laid out in chitchat's key-value state.
//!
//! `r:<id>` holds one record: the protobuf encoding of `muster.v1.Record`
//! (host left empty: the key's owner says it), in unpadded base64 because
//! chitchat values are strings. `meta:<key>` holds a fact about the agent.
//! `ready` is set once the agent has published every source's first full
//! set: chitchat sends a node's keys in version order, so a peer that holds
//! `ready` holds every record written before it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use muster_core::Record;
use muster_proto::{WireError, v1};
use prost::Message;

/// Key prefix of records.
pub const RECORD_PREFIX: &str = "r:";
/// Key prefix of facts an agent publishes about itself.
pub const META_PREFIX: &str = "meta:";
/// Key an agent sets once its initial records are all published. Until
/// then, a restarted agent's earlier incarnation keeps answering for it.
pub const READY_KEY: &str = "ready";
/// Largest encoded record value. chitchat cannot carry a value larger
/// than one datagram, and one such value blocks every later key of its
/// node, so the bound is set well below that.
pub const MAX_RECORD_BYTES: usize = 4096;

/// Encodes a record as a chitchat value.
pub(crate) fn encode(record: &Record) -> String {
    let mut wire = v1::Record::from(record);
    wire.host.clear();
    STANDARD_NO_PAD.encode(wire.encode_to_vec())
}

/// Why a gossiped value is not a record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("value is {0} bytes, over the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("value is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("key says id {key_id:?} but the record says {record_id:?}")]
    IdMismatch { key_id: String, record_id: String },
}

/// Decodes the value of key `r:<id>` published by `host`.
pub(crate) fn decode(host: &str, id: &str, value: &str) -> Result<Record, DecodeError> {
    if value.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLarge(value.len()));
    }
    let bytes = STANDARD_NO_PAD.decode(value)?;
    let wire = v1::Record::decode(bytes.as_slice()).map_err(WireError::from)?;
    let mut record = Record::try_from(wire)?;
    if record.id != id {
        return Err(DecodeError::IdMismatch {
            key_id: id.to_owned(),
            record_id: record.id,
        });
    }
    record.host = host.to_owned();
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::Source;

    #[test]
    fn a_record_decodes_as_it_was_encoded_with_its_owner_as_host() {
        let mut r = Record::new("web-1", "web-1", Source::Static);
        r.host = "ignored".into();
        r.labels.insert("app".into(), "web".into());
        let back = decode("a", "web-1", &encode(&r)).unwrap();
        assert_eq!(back.host, "a");
        assert_eq!(back.labels, r.labels);
    }

    #[test]
    fn junk_values_are_errors_not_records() {
        assert!(decode("a", "x", "!!!not base64").is_err());
        assert!(decode("a", "x", "AAAA").is_err());
        assert!(decode("a", "x", &"A".repeat(MAX_RECORD_BYTES + 1)).is_err());
        let r = Record::new("web-1", "web-1", Source::Static);
        assert!(matches!(
            decode("a", "other", &encode(&r)),
            Err(DecodeError::IdMismatch { .. })
        ));
    }
}
