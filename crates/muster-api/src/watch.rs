//! Watch: the records a filter matches, then every change to them, in
//! order, read from the snapshots' journal.
//!
//! Each watcher is a task that sends into a bounded channel
//! ([`BUFFER`] events) that tonic drains as the client reads. A client
//! that reads slowly makes its task wait, so it never holds more than that
//! buffer; meanwhile the directory moves on, and if the watcher's position
//! leaves the journal (the last [`muster_core::JOURNAL_LEN`] changes) it
//! is sent a RESET and the full matching set instead of the lost changes.

use std::sync::Arc;

use arc_swap::ArcSwap;
use muster_core::{RecordEvent, Snapshot};
use muster_proto::v1;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::Filter;

/// Events a watcher may have queued for its client.
const BUFFER: usize = 256;

/// The stream a Watch call returns.
pub type EventStream = ReceiverStream<Result<v1::WatchEvent, Status>>;

/// Starts a watcher; it ends when the client goes away.
pub(crate) fn start(
    directory: Arc<ArcSwap<Snapshot>>,
    revisions: watch::Receiver<u64>,
    epoch: u64,
    filter: Filter,
    from_revision: u64,
    client_epoch: u64,
    slot: OwnedSemaphorePermit,
) -> EventStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    let watcher = Watcher { tx, epoch, filter };
    tokio::spawn(async move {
        watcher
            .follow(directory, revisions, from_revision, client_epoch)
            .await;
        // The watcher's place among --max-watchers is free again.
        drop(slot);
    });
    ReceiverStream::new(rx)
}

/// The client went away.
struct Gone;

struct Watcher {
    tx: mpsc::Sender<Result<v1::WatchEvent, Status>>,
    epoch: u64,
    filter: Filter,
}

impl Watcher {
    async fn follow(
        self,
        directory: Arc<ArcSwap<Snapshot>>,
        mut revisions: watch::Receiver<u64>,
        from_revision: u64,
        client_epoch: u64,
    ) {
        revisions.borrow_and_update();
        let snapshot = directory.load_full();
        // A revision means something only in the run that issued it; a
        // client that gives no epoch is trusted.
        let same_run = client_epoch == 0 || client_epoch == self.epoch;
        let started = if from_revision == 0 {
            self.full_set(&snapshot).await
        } else if same_run && let Ok(events) = snapshot.changes_since(from_revision) {
            self.replay(events).await
        } else {
            self.reset(&snapshot).await
        };
        if started.is_err() || self.synced(snapshot.revision()).await.is_err() {
            return;
        }
        let mut position = snapshot.revision();
        loop {
            tokio::select! {
                changed = revisions.changed() => if changed.is_err() { return },
                _ = self.tx.closed() => return,
            }
            let snapshot = directory.load_full();
            if snapshot.revision() == position {
                continue;
            }
            let sent = match snapshot.changes_since(position) {
                Ok(events) => self.replay(events).await,
                // Fell behind the journal: start over.
                Err(_) => match self.reset(&snapshot).await {
                    Ok(()) => self.synced(snapshot.revision()).await,
                    Err(gone) => Err(gone),
                },
            };
            if sent.is_err() {
                return;
            }
            position = snapshot.revision();
        }
    }

    /// Every matching record as ADDED.
    async fn full_set(&self, snapshot: &Snapshot) -> Result<(), Gone> {
        for record in self.filter.select(snapshot) {
            self.send(v1::EventKind::Added, Some(&record), snapshot.revision())
                .await?;
        }
        Ok(())
    }

    /// RESET, then the full set.
    async fn reset(&self, snapshot: &Snapshot) -> Result<(), Gone> {
        self.send(v1::EventKind::Reset, None, snapshot.revision())
            .await?;
        self.full_set(snapshot).await
    }

    async fn synced(&self, revision: u64) -> Result<(), Gone> {
        self.send(v1::EventKind::Synced, None, revision).await
    }

    /// The journal's events, as the filter sees them: a record that starts
    /// matching is ADDED, one that stops is REMOVED.
    async fn replay(&self, events: impl Iterator<Item = &RecordEvent>) -> Result<(), Gone> {
        for event in events {
            let matching = |r: &Option<Arc<muster_core::Record>>| {
                r.as_ref().filter(|r| self.filter.matches(r)).cloned()
            };
            let (kind, record) = match (matching(&event.old), matching(&event.new)) {
                (None, Some(new)) => (v1::EventKind::Added, new),
                (Some(_), Some(new)) => (v1::EventKind::Updated, new),
                (Some(old), None) => (v1::EventKind::Removed, old),
                (None, None) => continue,
            };
            self.send(kind, Some(&record), event.revision).await?;
        }
        Ok(())
    }

    async fn send(
        &self,
        kind: v1::EventKind,
        record: Option<&muster_core::Record>,
        revision: u64,
    ) -> Result<(), Gone> {
        let event = v1::WatchEvent {
            kind: kind as i32,
            record: record.map(v1::Record::from),
            revision,
            epoch: self.epoch,
        };
        self.tx.send(Ok(event)).await.map_err(|_| Gone)
    }
}
