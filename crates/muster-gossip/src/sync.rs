//! Follows chitchat's cluster state and keeps the directory snapshot in
//! step with it.
//!
//! On every wake-up (a key changed) or tick (liveness may have changed),
//! the task looks at each node under the chitchat lock just long enough to
//! copy out what changed since its last look: for a node whose max version
//! moved, the keys with a newer version (deleted ones included); for a node
//! that appeared, was reset, or became visible again, all of its keys.
//! Decoding and index updates happen after the lock is released, so gossip
//! never waits on them and readers never wait at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use chitchat::{Chitchat, ChitchatId, NodeState};
use muster_core::{Change, LastHeard, Liveness, Member, Snapshot};
use tokio::sync::{Mutex, Notify, watch};
use tracing::{debug, info, warn};

use crate::codec::{META_PREFIX, RECORD_PREFIX, decode};

pub(crate) struct Settings {
    pub dead_grace: Duration,
    pub tick: Duration,
    /// A live node whose heartbeat has not moved for this long is suspect.
    pub suspect_after: Duration,
    pub metrics: crate::GossipMetrics,
}

/// What the sync task remembers about one node name between looks.
struct Tracked {
    /// The generation whose records are in the index.
    id: ChitchatId,
    /// The node's max version at the last look.
    seen_version: u64,
    /// Whether its records are in the index.
    visible: bool,
    /// When the failure detector was first seen calling it dead.
    dead_since: Option<Instant>,
    /// Its heartbeat at the last look, and when it last moved.
    heartbeat: u64,
    heard_at: Instant,
    /// Whether this generation has been alive since we first saw it.
    ever_alive: bool,
    /// Records it publishes (live keys with the record prefix).
    records: usize,
    meta: BTreeMap<String, String>,
}

/// What was copied out of chitchat for one node in one look.
enum Copied {
    /// Every record key: the index's entries for the host are replaced.
    Full(Vec<(String, String)>),
    /// Keys changed since the last look; `None` for deleted ones.
    Delta(Vec<(String, Option<String>)>),
    /// The host's records leave the index.
    Hide,
}

pub(crate) async fn run(
    chitchat: Arc<Mutex<Chitchat>>,
    directory: Arc<ArcSwap<Snapshot>>,
    wake: Arc<Notify>,
    settings: Settings,
    revisions: watch::Sender<u64>,
    heard: LastHeard,
    mut stop: watch::Receiver<bool>,
) {
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut beats: Beats = HashMap::new();
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (copied, members) = {
            let chitchat = chitchat.lock().await;
            let now = Instant::now();
            note_beats(&chitchat, &mut beats, now);
            look(&chitchat, &mut tracked, &beats, &settings, &heard, now)
        };
        let mut changes: Vec<Change> = Vec::new();
        for (host, copy) in copied {
            match copy {
                Copied::Hide => changes.push(Change::RemoveHost(host)),
                Copied::Full(keys) => {
                    changes.push(Change::RemoveHost(host.clone()));
                    for (id, value) in keys {
                        if let Some(change) = upsert(&host, &id, &value) {
                            changes.push(change);
                        }
                    }
                }
                Copied::Delta(keys) => {
                    for (id, value) in keys {
                        let change = value.and_then(|v| upsert(&host, &id, &v));
                        changes.push(change.unwrap_or(Change::Remove {
                            host: host.clone(),
                            id,
                        }));
                    }
                }
            }
        }
        changes.push(Change::Members(members));
        let current = directory.load();
        let started = Instant::now();
        let next = current.apply(changes);
        let took = started.elapsed();
        if next.revision() != current.revision() {
            debug!(
                revision = next.revision(),
                records = next.len(),
                "directory updated"
            );
            settings.metrics.apply_seconds.observe(took.as_secs_f64());
            let revision = next.revision();
            directory.store(Arc::new(next));
            revisions.send_replace(revision);
        }
    }
}

/// The change for one gossiped record value; a value that does not decode
/// is logged and treated as absent, so a bad peer cannot plant a bad entry.
fn upsert(host: &str, id: &str, value: &str) -> Option<Change> {
    match decode(host, id, value) {
        Ok(record) => Some(Change::Upsert(record)),
        Err(e) => {
            warn!(%host, %id, error = %e, "ignoring undecodable gossiped record");
            None
        }
    }
}

/// One look at the cluster under the chitchat lock. Returns, per host whose
/// indexed records must change, what to change, and the member list.
/// Every incarnation's heartbeat at the last look, and when it last moved.
type Beats = HashMap<ChitchatId, (u64, Instant)>;

fn note_beats(chitchat: &Chitchat, beats: &mut Beats, now: Instant) {
    for (id, state) in chitchat.node_states() {
        let heartbeat = u64::from(state.heartbeat());
        let entry = beats.entry(id.clone()).or_insert((heartbeat, now));
        if entry.0 != heartbeat {
            *entry = (heartbeat, now);
        }
    }
    beats.retain(|id, _| chitchat.node_states().contains_key(id));
}

fn look(
    chitchat: &Chitchat,
    tracked: &mut HashMap<String, Tracked>,
    beats: &Beats,
    settings: &Settings,
    heard: &LastHeard,
    now: Instant,
) -> (Vec<(String, Copied)>, Vec<Member>) {
    let dead_grace = settings.dead_grace;
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    // One incarnation of a node name counts: the newest generation among
    // those whose heartbeat still moves (an agent that restarted replaces
    // its earlier incarnation at once), else the newest. Generations are
    // start times: an agent restarted with its clock set back has a
    // smaller one, and must still replace its silent predecessor.
    let fresh = |id: &ChitchatId| {
        beats
            .get(id)
            .is_some_and(|(_, moved)| now.duration_since(*moved) <= settings.suspect_after)
    };
    let mut newest: HashMap<&str, (&ChitchatId, &NodeState)> = HashMap::new();
    for (id, state) in chitchat.node_states() {
        let entry = newest.entry(&id.node_id).or_insert((id, state));
        if (fresh(id), id.generation_id) > (fresh(entry.0), entry.0.generation_id) {
            *entry = (id, state);
        }
    }
    let mut copied = Vec::new();
    tracked.retain(|name, t| {
        let keep = newest.contains_key(name.as_str());
        if !keep && t.visible {
            info!(host = %name, "host forgotten by gossip; its records leave the directory");
            copied.push((name.clone(), Copied::Hide));
        }
        keep
    });
    heard.retain(|name| tracked.contains_key(name) || newest.contains_key(name));
    let mut members = Vec::with_capacity(newest.len());
    for (name, (id, state)) in newest {
        let alive = live.contains(id);
        let t = tracked.entry(name.to_owned()).or_insert_with(|| {
            info!(host = %name, generation = id.generation_id, "host discovered");
            Tracked {
                id: id.clone(),
                seen_version: 0,
                visible: false,
                // A node learnt of second-hand has not been heard from yet:
                // the failure detector counts it dead until its first
                // heartbeat. Start its grace now so that it is served at
                // once, and hidden only if it stays silent.
                dead_since: (!alive).then_some(now),
                ever_alive: false,
                heartbeat: 0,
                heard_at: now,
                records: 0,
                meta: BTreeMap::new(),
            }
        });
        let restarted = t.id != *id;
        if restarted {
            info!(host = %name, generation = id.generation_id, "host restarted with a new generation");
            t.id = id.clone();
            t.dead_since = (!alive).then_some(now);
            t.ever_alive = false;
        }
        match (alive, t.dead_since) {
            (true, Some(_)) => {
                if t.ever_alive {
                    info!(host = %name, "host is alive again");
                }
                t.dead_since = None;
            }
            (false, None) => {
                info!(host = %name, grace = ?dead_grace, "host declared dead by the failure detector");
                t.dead_since = Some(now);
            }
            _ => {}
        }
        t.ever_alive |= alive;
        let heartbeat = u64::from(state.heartbeat());
        if heartbeat != t.heartbeat || restarted {
            t.heartbeat = heartbeat;
            t.heard_at = now;
            heard.set(name, SystemTime::now());
        }
        let suspect = alive && now.duration_since(t.heard_at) > settings.suspect_after;
        let visible = t
            .dead_since
            .is_none_or(|since| now.duration_since(since) < dead_grace);
        let version_moved = state.max_version() != t.seen_version;
        if version_moved || restarted {
            t.meta = meta_of(state);
        }
        // Each branch walks the node's keys at most once, and counts its
        // records on the way.
        if !visible {
            if t.visible {
                info!(host = %name, "host dead past the grace; its records leave the directory");
                copied.push((name.to_owned(), Copied::Hide));
            }
            if version_moved || restarted {
                t.records = state.iter_prefix(RECORD_PREFIX).count();
            }
        } else if !t.visible || restarted || needs_full_copy(state, t.seen_version) {
            let all = all_records(state);
            t.records = all.len();
            copied.push((name.to_owned(), Copied::Full(all)));
        } else if version_moved {
            let (records, changed) = changed_records(state, t.seen_version);
            t.records = records;
            copied.push((name.to_owned(), Copied::Delta(changed)));
        }
        t.visible = visible;
        t.seen_version = state.max_version();
        members.push(Member {
            name: name.to_owned(),
            gossip_addr: id.gossip_advertise_addr,
            liveness: match (alive, t.ever_alive) {
                (true, _) if suspect => Liveness::Suspect,
                (true, _) => Liveness::Alive,
                (false, false) if visible => Liveness::Joining,
                (false, _) => Liveness::Dead,
            },
            generation: id.generation_id,
            records: t.records,
            visible,
            meta: t.meta.clone(),
        });
    }
    (copied, members)
}

/// A delta is only safe when every tombstone since our last look is still
/// there; chitchat forgets tombstones up to `last_gc_version`, and a reset
/// can make versions go backwards.
fn needs_full_copy(state: &NodeState, seen_version: u64) -> bool {
    state.max_version() < seen_version || state.last_gc_version() > seen_version
}

fn record_id(key: &str) -> Option<&str> {
    key.strip_prefix(RECORD_PREFIX)
}

fn all_records(state: &NodeState) -> Vec<(String, String)> {
    state
        .key_values()
        .filter_map(|(k, v)| Some((record_id(k)?.to_owned(), v.to_owned())))
        .collect()
}

/// The number of live records, and the record keys changed since
/// `seen_version` (`None` for deleted ones), in one walk of the keys.
fn changed_records(state: &NodeState, seen_version: u64) -> (usize, Vec<(String, Option<String>)>) {
    let mut live = 0;
    let mut changed = Vec::new();
    for (key, v) in state.key_values_including_deleted() {
        let Some(id) = record_id(key) else { continue };
        if !v.is_deleted() {
            live += 1;
        }
        if v.version > seen_version {
            changed.push((id.to_owned(), (!v.is_deleted()).then(|| v.value.clone())));
        }
    }
    (live, changed)
}

fn meta_of(state: &NodeState) -> BTreeMap<String, String> {
    state
        .iter_prefix(META_PREFIX)
        .map(|(k, v)| (k[META_PREFIX.len()..].to_owned(), v.value.clone()))
        .collect()
}
