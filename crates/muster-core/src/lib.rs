//! The heart of muster, with no I/O: what a record is, how names are
//! checked, how label selectors match, and the directory index that every
//! reader (DNS, gRPC) queries through an immutable [`Snapshot`].
//!
//! Nothing here knows about chitchat, Docker, sockets or tokio. Gossip turns
//! cluster state into [`Change`]s, [`Snapshot::apply`] turns changes into a
//! new snapshot, and readers only ever hold an `Arc<Snapshot>`.

#![warn(missing_docs)]

mod heard;
mod index;
mod lines;
mod name;
mod record;
mod registration;
mod selector;

pub use heard::{Behind, LastHeard};
pub use index::{
    Change, HistoryGone, JOURNAL_LEN, Liveness, Member, RecordEvent, RecordKey, Snapshot,
};
pub use lines::LineIndex;
pub use name::{NameError, dns_label_from, validate_dns_label, validate_dns_name};
pub use record::{
    Address, Health, MAX_ADDRESSES, MAX_ALIASES, MAX_LABEL_BYTES, MAX_LABELS, MAX_PORTS, Port,
    PortError, Protocol, Record, RecordError, SERVICE_LABELS, Source, State, UnknownState,
};
pub use registration::{PublishError, Registrar, Registration, RegistrationError, Verdict};
pub use selector::{Requirement, Selector, SelectorError};
