//! Violations and WatchViolations: the naming policy's verdicts.

use std::time::UNIX_EPOCH;

use muster_policy::{Event, PolicyEngine, Violation};
use muster_proto::v1;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Events a violations watcher may have queued for its client.
const BUFFER: usize = 256;

/// The stream a WatchViolations call returns.
pub type ViolationStream = ReceiverStream<Result<v1::ViolationEvent, Status>>;

fn to_wire(v: &Violation) -> v1::Violation {
    v1::Violation {
        rule: v.rule.clone(),
        severity: v.severity.as_str().to_owned(),
        host: v.host.clone(),
        id: v.id.clone(),
        name: v.name.clone(),
        why: v.why.clone(),
        since_ms: v
            .since
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        excluded_from_dns: v.exclude_from_dns,
    }
}

/// The current violations, of one rule or all.
pub(crate) fn list(engine: &PolicyEngine, rule: &str) -> v1::ViolationsResponse {
    let now = engine.violations();
    v1::ViolationsResponse {
        violations: now
            .iter()
            .filter(|v| rule.is_empty() || v.rule == rule)
            .map(to_wire)
            .collect(),
        revision: now.revision,
        policy_digest: now.digest.clone(),
        mismatched_members: now
            .mismatched
            .iter()
            .map(|(name, digest)| format!("{name}={digest}"))
            .collect(),
    }
}

/// Starts a watcher of violations; it ends when the client goes away.
pub(crate) fn watch(
    engine: PolicyEngine,
    rule: String,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> ViolationStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    // Subscribe before reading the set: nothing falls between the two.
    let mut events = engine.subscribe();
    tokio::spawn(async move {
        // Held for as long as the stream lasts (--max-watchers).
        let _slot = slot;
        let send = |kind: v1::violation_event::Kind, v: Option<&Violation>| {
            let event = v1::ViolationEvent {
                kind: kind as i32,
                violation: v.map(to_wire),
            };
            let tx = tx.clone();
            async move { tx.send(Ok(event)).await.is_ok() }
        };
        let full_set = |reset: bool| {
            let engine = &engine;
            let rule = &rule;
            async move {
                if reset && !send(v1::violation_event::Kind::Reset, None).await {
                    return false;
                }
                for v in engine
                    .violations()
                    .iter()
                    .filter(|v| rule.is_empty() || v.rule == *rule)
                {
                    if !send(v1::violation_event::Kind::Started, Some(v)).await {
                        return false;
                    }
                }
                send(v1::violation_event::Kind::Synced, None).await
            }
        };
        if !full_set(false).await {
            return;
        }
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = tx.closed() => return,
            };
            let sent = match event {
                Ok(Event::Started(v)) if rule.is_empty() || v.rule == rule => {
                    send(v1::violation_event::Kind::Started, Some(&v)).await
                }
                Ok(Event::Ended(v)) if rule.is_empty() || v.rule == rule => {
                    send(v1::violation_event::Kind::Ended, Some(&v)).await
                }
                Ok(_) => true,
                Err(broadcast::error::RecvError::Lagged(_)) => full_set(true).await,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !sent {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
