//! When each agent was last heard from: written by gossip, read by the
//! API. Kept apart from the snapshot, which would otherwise change (and
//! grow a revision) on every heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// When each node's heartbeat was last seen moving, by node name; cheap to
/// clone (shared).
#[derive(Debug, Clone, Default)]
pub struct LastHeard(Arc<Mutex<HashMap<String, SystemTime>>>);

impl LastHeard {
    /// When `node`'s heartbeat last moved, as seen here.
    pub fn get(&self, node: &str) -> Option<SystemTime> {
        self.0.lock().ok()?.get(node).copied()
    }

    /// Notes that `node`'s heartbeat moved at `at`.
    pub fn set(&self, node: &str, at: SystemTime) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(node.to_owned(), at);
        }
    }

    /// Forgets every node `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|name, _| keep(name));
        }
    }
}
