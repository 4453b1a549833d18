//! Publishes this host's records into the local chitchat node state.
//!
//! Each source (static file, Docker, registration) owns the records it
//! published; a source replaces its whole set or changes single records,
//! and only records whose encoding changed are written, so gossip carries
//! what changed and nothing else.
//!
//! Readiness: the publisher knows which sources the agent runs and marks
//! the node ready (the `ready` key) once each of them has published its
//! first full set, or given up for now (a Docker engine that does not
//! answer). A restarted agent's earlier incarnation keeps answering for
//! the host until then, so a restart never leaves the host without
//! records (see `sync`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chitchat::Chitchat;
use muster_core::{PublishError, Record, Source, Verdict};
use tokio::sync::Mutex;

use crate::codec::{MAX_RECORD_BYTES, READY_KEY, RECORD_PREFIX, encode};

/// What a publish call did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Records written (new or changed).
    pub written: usize,
    /// Records withdrawn.
    pub withdrawn: usize,
    /// Records left as they were.
    pub unchanged: usize,
    /// Records refused, with why.
    pub rejected: Vec<PublishError>,
}

struct Published {
    source: Source,
    value: String,
}

/// What this host publishes, by record id, and which sources have yet to
/// publish their first full set.
#[derive(Default)]
struct Local {
    records: HashMap<String, Published>,
    /// Sources the node's readiness still waits for; the `ready` key is
    /// written when the last one settles.
    awaiting: BTreeSet<Source>,
}

/// A handle to publish local records. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    chitchat: Arc<Mutex<Chitchat>>,
    local: Arc<Mutex<Local>>,
    wake: Arc<crate::sync::Wake>,
}

impl Publisher {
    /// A publisher that marks the node ready once every source in
    /// `awaiting` has settled (a node awaiting none starts ready: see
    /// [`crate::Gossip::start`]).
    pub(crate) fn new(
        chitchat: Arc<Mutex<Chitchat>>,
        wake: Arc<crate::sync::Wake>,
        awaiting: BTreeSet<Source>,
    ) -> Publisher {
        Publisher {
            chitchat,
            local: Arc::new(Mutex::new(Local {
                records: HashMap::new(),
                awaiting,
            })),
            wake,
        }
    }

    /// Says that `source` has nothing to publish for now (the Docker engine
    /// did not answer at start): readiness no longer waits for it. Its
    /// first full set, when it comes, is published as usual.
    pub async fn settle(&self, source: Source) {
        let mut local = self.local.lock().await;
        let mut chitchat = self.chitchat.lock().await;
        if settle(&mut local, &mut chitchat, source) {
            drop(chitchat);
            self.wake.everything();
        }
    }

    /// Makes `records` the whole set published by `source`: new and
    /// changed records are written, records of that source missing from the
    /// set are withdrawn. Records too large to gossip, or whose id another
    /// source holds, are refused one by one (see the report); the others
    /// are published. Records are checked against the record rules where
    /// they enter (the source), not again here.
    pub async fn replace(&self, source: Source, records: Vec<Record>) -> PublishReport {
        let mut report = PublishReport::default();
        let mut local = self.local.lock().await;
        let local = &mut *local;
        let published = &mut local.records;
        let mut wanted: HashMap<String, String> = HashMap::with_capacity(records.len());
        for record in records {
            match check(published, source, &record) {
                Ok(value) => {
                    if wanted.insert(record.id.clone(), value).is_some() {
                        report.rejected.push(PublishError::Duplicate(record.id));
                    }
                }
                Err(e) => report.rejected.push(e),
            }
        }
        let withdrawn: Vec<String> = published
            .iter()
            .filter(|(id, p)| p.source == source && !wanted.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let mut chitchat = self.chitchat.lock().await;
        let state = chitchat.self_node_state();
        for id in withdrawn {
            state.delete(&format!("{RECORD_PREFIX}{id}"));
            published.remove(&id);
            report.withdrawn += 1;
        }
        for (id, value) in wanted {
            if published.get(&id).is_some_and(|p| p.value == value) {
                report.unchanged += 1;
                continue;
            }
            state.set(format!("{RECORD_PREFIX}{id}"), &value);
            published.insert(id, Published { source, value });
            report.written += 1;
        }
        // Under the same lock as the records: `ready` gets a later version
        // than every record of this set.
        settle(local, &mut chitchat, source);
        drop(chitchat);
        self.wake.everything();
        report
    }

    /// Publishes or replaces one record of `source`; the verdict says
    /// whether it was taken.
    pub async fn upsert(&self, source: Source, record: Record) -> Verdict {
        let mut local = self.local.lock().await;
        let published = &mut local.records;
        let value = check(published, source, &record)?;
        if published.get(&record.id).is_some_and(|p| p.value == value) {
            return Ok(());
        }
        self.chitchat
            .lock()
            .await
            .self_node_state()
            .set(format!("{RECORD_PREFIX}{}", record.id), &value);
        published.insert(record.id, Published { source, value });
        self.wake.everything();
        Ok(())
    }

    /// Withdraws one record of `source`; false if it had none by that id.
    pub async fn remove(&self, source: Source, id: &str) -> bool {
        let mut local = self.local.lock().await;
        let published = &mut local.records;
        if published.get(id).is_none_or(|p| p.source != source) {
            return false;
        }
        published.remove(id);
        self.chitchat
            .lock()
            .await
            .self_node_state()
            .delete(&format!("{RECORD_PREFIX}{id}"));
        self.wake.everything();
        true
    }

    /// Publishes (or replaces) a fact about this agent under `meta:<key>`.
    pub async fn set_meta(&self, key: &str, value: &str) {
        self.chitchat
            .lock()
            .await
            .self_node_state()
            .set(format!("{}{key}", crate::codec::META_PREFIX), value);
        self.wake.everything();
    }
}

/// Takes `source` off the sources readiness waits for, and writes the
/// `ready` key when it was the last; true if it wrote it.
fn settle(local: &mut Local, chitchat: &mut Chitchat, source: Source) -> bool {
    if !local.awaiting.remove(&source) || !local.awaiting.is_empty() {
        return false;
    }
    chitchat.self_node_state().set(READY_KEY, "1");
    true
}

fn check(
    published: &HashMap<String, Published>,
    source: Source,
    record: &Record,
) -> Result<String, PublishError> {
    if let Some(owner) = published.get(&record.id).filter(|p| p.source != source) {
        return Err(PublishError::IdTaken {
            id: record.id.clone(),
            owner: owner.source,
        });
    }
    let value = encode(record);
    if value.len() > MAX_RECORD_BYTES {
        return Err(PublishError::TooLarge {
            id: record.id.clone(),
            bytes: value.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    Ok(value)
}
