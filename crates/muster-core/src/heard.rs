//! What this agent has heard of each member, written by gossip and read by
//! the API: when its heartbeat last moved, and since when this agent has
//! known it lacks some of the member's changes (a peer advertised a newer
//! version of the member's state than this agent holds). Kept apart from
//! the snapshot, which would otherwise change (and grow a revision) on
//! every heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// This agent lacks changes of a member that other members hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    /// Since when, as seen here.
    pub since: SystemTime,
    /// How many versions of the member's state are missing.
    pub versions: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Heard {
    moved: Option<SystemTime>,
    behind: Option<Behind>,
}

/// What was heard of each node, by node name; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct LastHeard(Arc<Mutex<HashMap<String, Heard>>>);

impl LastHeard {
    /// When `node`'s heartbeat last moved, as seen here.
    pub fn get(&self, node: &str) -> Option<SystemTime> {
        self.0.lock().ok()?.get(node)?.moved
    }

    /// Notes that `node`'s heartbeat moved at `at`.
    pub fn set(&self, node: &str, at: SystemTime) {
        if let Ok(mut map) = self.0.lock() {
            map.entry(node.to_owned()).or_default().moved = Some(at);
        }
    }

    /// Whether, and since when, this agent lacks changes of `node`.
    pub fn behind(&self, node: &str) -> Option<Behind> {
        self.0.lock().ok()?.get(node)?.behind
    }

    /// Notes whether this agent lacks changes of `node`.
    pub fn set_behind(&self, node: &str, behind: Option<Behind>) {
        if let Ok(mut map) = self.0.lock() {
            map.entry(node.to_owned()).or_default().behind = behind;
        }
    }

    /// Forgets every node `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|name, _| keep(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn heartbeat_and_lag_are_noted_apart_and_forgotten_together() {
        let heard = LastHeard::default();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        heard.set("a", t);
        assert_eq!(heard.behind("a"), None);
        let behind = Behind {
            since: t,
            versions: 3,
        };
        heard.set_behind("a", Some(behind));
        heard.set_behind("b", Some(behind));
        assert_eq!((heard.get("a"), heard.behind("a")), (Some(t), Some(behind)));
        assert_eq!((heard.get("b"), heard.behind("b")), (None, Some(behind)));
        heard.set_behind("a", None);
        assert_eq!((heard.get("a"), heard.behind("a")), (Some(t), None));
        heard.retain(|name| name == "a");
        assert_eq!(heard.behind("b"), None);
    }
}
