//! The naming policy: rules from a TOML file ([`Policy`]), judged on the
//! whole directory by every agent, change by change ([`Tracker`]), plus
//! duplicate names across hosts.
//!
//! [`PolicyEngine::start`] runs the tracker as a task that follows the
//! directory's revisions. Readers (gRPC, DNS, metrics) load the current
//! [`Violations`] without locking; a violation starting or ending is
//! logged once and broadcast to streaming readers.

#![warn(missing_docs)]

mod rules;
mod tracker;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use muster_core::Snapshot;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{info, warn};

pub use rules::{DUPLICATE_RULE, Duplicates, Finding, Policy, PolicyError, Rule, Severity};
pub use tracker::{Event, Tracker, Violation, Violations};

/// Violation events a slow streaming reader may lag behind by before it
/// is told to start over.
const EVENT_BUFFER: usize = 4096;

/// A running policy engine: the current violations and their changes.
#[derive(Clone)]
pub struct PolicyEngine {
    violations: Arc<ArcSwap<Violations>>,
    events: broadcast::Sender<Event>,
    policies: mpsc::Sender<Policy>,
}

impl PolicyEngine {
    /// An engine judging `directory` by `policy`, and the task that keeps
    /// it up to date as `revisions` move (spawn it).
    pub fn start(
        policy: Policy,
        directory: Arc<ArcSwap<Snapshot>>,
        mut revisions: watch::Receiver<u64>,
    ) -> (PolicyEngine, impl Future<Output = ()> + Send + use<>) {
        let violations = Arc::new(ArcSwap::from_pointee(
            Tracker::new(policy.clone()).violations().clone(),
        ));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (policies, mut new_policies) = mpsc::channel::<Policy>(4);
        let engine = PolicyEngine {
            violations: violations.clone(),
            events: events.clone(),
            policies,
        };
        let task = async move {
            let mut tracker = Tracker::new(policy);
            let mut mismatched: BTreeSet<(String, String)> = BTreeSet::new();
            loop {
                let snapshot = directory.load_full();
                let changes = tracker.update(&snapshot, SystemTime::now());
                publish(&tracker, &violations, &events, changes);
                warn_on_mismatch(&tracker, &mut mismatched);
                tokio::select! {
                    changed = revisions.changed() => if changed.is_err() { return },
                    policy = new_policies.recv() => match policy {
                        Some(policy) => {
                            info!(digest = policy.digest(), rules = policy.rules().len(), "naming policy loaded");
                            let snapshot = directory.load_full();
                            let changes = tracker.set_policy(policy, &snapshot, SystemTime::now());
                            publish(&tracker, &violations, &events, changes);
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
        self.violations.load_full()
    }

    /// The shared cell readers load the violations from.
    pub fn shared(&self) -> Arc<ArcSwap<Violations>> {
        self.violations.clone()
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

/// Logs each event once, stores the new set, and broadcasts the events.
fn publish(
    tracker: &Tracker,
    violations: &ArcSwap<Violations>,
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
    violations.store(Arc::new(tracker.violations().clone()));
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
