//! The naming policy: rules from a TOML file ([`Policy`]), judged on the
//! whole directory by every agent, change by change ([`Tracker`]), plus
//! duplicate names across hosts.
//!
//! [`PolicyEngine::start`] runs the tracker as a task that follows the
//! directory's revisions. It publishes each snapshot it judged together
//! with its verdicts on exactly that snapshot ([`Judged`], one swap), so a
//! reader that leaves out what the policy hides (DNS) never answers a
//! record before it has been judged. Readers load it without locking; a
//! violation starting or ending is logged once and broadcast to streaming
//! readers.

#![warn(missing_docs)]

mod rules;
mod tracker;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use muster_core::Snapshot;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use rules::{
    DUPLICATE_NODE_RULE, DUPLICATE_RULE, Duplicates, Finding, Policy, PolicyError, Rule, Severity,
};
pub use tracker::{Event, Tracker, Violation, Violations};

/// Violation events a slow streaming reader may lag behind by before it
/// is told to start over.
const EVENT_BUFFER: usize = 4096;

/// A directory snapshot and the policy's verdicts on that very snapshot,
/// stored and loaded as one value.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    /// The snapshot judged.
    pub snapshot: Arc<Snapshot>,
    /// The verdicts on it (`violations.revision == snapshot.revision()`).
    pub violations: Arc<Violations>,
}

/// A judged snapshot reads as the snapshot it is.
impl std::ops::Deref for Judged {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl Judged {
    /// Whether the policy keeps `r` out of DNS.
    pub fn hides(&self, r: &muster_core::Record) -> bool {
        self.violations.hides(&r.host, &r.id)
    }

    /// `snapshot` under no policy: nothing hidden, nothing broken.
    pub fn without_policy(snapshot: Snapshot) -> Judged {
        let mut violations = Violations::default();
        violations.revision = snapshot.revision();
        Judged {
            violations: Arc::new(violations),
            snapshot: Arc::new(snapshot),
        }
    }
}

/// A running policy engine: the current violations and their changes.
#[derive(Clone)]
pub struct PolicyEngine {
    judged: Arc<ArcSwap<Judged>>,
    events: broadcast::Sender<Event>,
    policies: mpsc::Sender<Policy>,
}

impl PolicyEngine {
    /// An engine judging `directory` by `policy`, and the task that keeps
    /// it up to date as `revisions` move, until `shutdown` is cancelled
    /// (spawn it).
    pub fn start(
        policy: Policy,
        directory: Arc<ArcSwap<Snapshot>>,
        mut revisions: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) -> (PolicyEngine, impl Future<Output = ()> + Send + use<>) {
        let judged = Arc::new(ArcSwap::from_pointee(Judged {
            snapshot: Arc::new(Snapshot::new()),
            violations: Arc::new(Tracker::new(policy.clone()).violations().clone()),
        }));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (policies, mut new_policies) = mpsc::channel::<Policy>(4);
        let engine = PolicyEngine {
            judged: judged.clone(),
            events: events.clone(),
            policies,
        };
        let task = async move {
            let mut tracker = Tracker::new(policy);
            let mut mismatched: BTreeSet<(String, String)> = BTreeSet::new();
            loop {
                let snapshot = directory.load_full();
                let changes = tracker.update(&snapshot, SystemTime::now());
                publish(&tracker, snapshot, &judged, &events, changes);
                warn_on_mismatch(&tracker, &mut mismatched);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = revisions.changed() => if changed.is_err() { return },
                    policy = new_policies.recv() => match policy {
                        Some(policy) => {
                            info!(digest = policy.digest(), rules = policy.rules().len(), "naming policy loaded");
                            let snapshot = directory.load_full();
                            let changes = tracker.set_policy(policy, &snapshot, SystemTime::now());
                            publish(&tracker, snapshot, &judged, &events, changes);
                        }
                        None => return,
                    },
                }
            }
        };
        (engine, task)
    }

    /// The violations now.
    pub fn violations(&self) -> Arc<Violations> {
        self.judged.load().violations.clone()
    }

    /// The shared cell readers load the last judged snapshot and its
    /// verdicts from.
    pub fn judged(&self) -> Arc<ArcSwap<Judged>> {
        self.judged.clone()
    }

    /// Violations starting and ending from now on. A receiver that lags by
    /// more than 4,096 events gets `RecvError::Lagged` and should read the
    /// whole set again.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Judges everything again by `policy` (after a reload).
    pub async fn set_policy(&self, policy: Policy) {
        let _ = self.policies.send(policy).await;
    }
}

/// Logs each event once, stores the new set with the snapshot it judged,
/// and broadcasts the events.
fn publish(
    tracker: &Tracker,
    snapshot: Arc<Snapshot>,
    judged: &ArcSwap<Judged>,
    events: &broadcast::Sender<Event>,
    changes: Vec<Event>,
) {
    for event in &changes {
        match event {
            Event::Started(v) => warn!(
                rule = %v.rule, severity = v.severity.as_str(), host = %v.host, name = %v.name,
                id = %v.id, why = %v.why, "policy violation started"
            ),
            Event::Ended(v) => info!(
                rule = %v.rule, host = %v.host, name = %v.name, id = %v.id,
                "policy violation ended"
            ),
        }
    }
    judged.store(Arc::new(Judged {
        snapshot,
        violations: Arc::new(tracker.violations().clone()),
    }));
    for event in changes {
        let _ = events.send(event);
    }
}

/// One warning per member whose policy digest starts to differ.
fn warn_on_mismatch(tracker: &Tracker, seen: &mut BTreeSet<(String, String)>) {
    let now: BTreeSet<(String, String)> = tracker.violations().mismatched.iter().cloned().collect();
    for (member, theirs) in now.difference(seen) {
        warn!(
            %member, theirs = %theirs, ours = tracker.policy().digest(),
            "member judges by a different naming policy"
        );
    }
    *seen = now;
}
