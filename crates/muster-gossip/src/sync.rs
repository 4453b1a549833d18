//! Follows chitchat's cluster state and keeps the directory snapshot in
//! step with it.
//!
//! On every wake-up or tick the task looks at nodes under the chitchat
//! lock just long enough to copy out what changed since its last look: for
//! a node whose max version moved, the keys with a newer version (deleted
//! ones included); for a node that appeared, was reset, or became visible
//! again, all of its keys. Decoding and index updates happen after the lock
//! is released, so gossip never waits on them and readers never wait at
//! all.
//!
//! A look costs what it visits, so what it visits depends on what woke it
//! (see [`Wake`]): a record gossiped in wakes a look at the hosts whose
//! records changed only, O(changed) (a host never seen before is noted
//! not alive yet, see [`note_new`]); the tick (once a round), a verdict of
//! the failure detector or a local change wakes a look at every host,
//! which also reads liveness, ages grace periods and lags, forgets what
//! chitchat forgot and refreshes the member list. Without that split a
//! member joining 1,000 hosts walked all of them for every delta it
//! received, and formation cost O(N²) per member.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use chitchat::{Chitchat, ChitchatId, NodeState};
use muster_core::{Behind, Change, LastHeard, Liveness, Member, Snapshot};
use tokio::sync::{Mutex, Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::codec::{META_PREFIX, READY_KEY, RECORD_PREFIX, decode};

/// Why the sync task should look again: the hosts whose records were
/// gossiped in since its last look, or everything.
#[derive(Default)]
pub(crate) struct Wake {
    notify: Notify,
    pending: std::sync::Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    everything: bool,
    hosts: HashSet<Arc<str>>,
}

impl Wake {
    /// A record key of `host` changed (chitchat's key-change event): a
    /// look at that host is enough.
    pub(crate) fn host(&self, host: &Arc<str>) {
        let mut pending = self.pending.lock().expect("not poisoned");
        if !pending.everything {
            pending.hosts.insert(host.clone());
        }
        drop(pending);
        self.notify.notify_one();
    }

    /// Something a look at a few hosts would miss (a verdict of the
    /// failure detector, a local change): a look at every host. A deleted
    /// key, which chitchat sends no event for, waits for the tick.
    pub(crate) fn everything(&self) {
        let mut pending = self.pending.lock().expect("not poisoned");
        pending.everything = true;
        pending.hosts.clear();
        drop(pending);
        self.notify.notify_one();
    }

    /// What is pending, cleared: the hosts to look at, or `None` for every
    /// host.
    fn take(&self) -> Option<HashSet<Arc<str>>> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        (!pending.everything).then_some(pending.hosts)
    }
}

pub(crate) struct Settings {
    pub dead_grace: Duration,
    pub tick: Duration,
    /// A live node whose heartbeat has not moved for this long is suspect.
    pub suspect_after: Duration,
    /// Two incarnations of one name whose heartbeats both move for this
    /// long are two agents claiming one name (see [`Claim`]).
    pub conflict_after: Duration,
    /// A node whose changes this agent has lacked this long is logged.
    pub lag_warn_after: Duration,
    pub metrics: crate::GossipMetrics,
    /// With the probe detector: the members it does not call alive. A
    /// member counts as running (its "heartbeat moves") while the detector
    /// calls it alive; without it, while its gossiped heartbeat moves.
    pub unsure: Option<crate::probe::Unsure>,
}

/// What the sync task remembers about one node name between looks.
struct Tracked {
    /// The incarnation whose records are in the index.
    id: ChitchatId,
    /// Its max version at the last look.
    seen_version: u64,
    /// Whether its records are in the index.
    visible: bool,
    /// What the failure detector said of it at the last look, for the log
    /// of its transitions.
    verdict: Verdict,
    /// When its heartbeat last moved, as last written to the last-heard map
    /// (which is written only when that changes).
    heard_moved: Option<Instant>,
    /// Records it publishes (live keys with the record prefix).
    records: usize,
    meta: BTreeMap<String, String>,
    /// Whether this agent lacks some of its changes, and since when.
    lag: Lag,
    /// The member as last shown in the directory, rebuilt only when it
    /// changes, so a look at a cluster at rest allocates nothing per member.
    shown: Option<Member>,
}

/// Whether this agent lacks changes of one node that other members hold,
/// judged on every look from the versions peers advertise for the node
/// (chitchat's digests) against the version held here.
///
/// A lag of a few milliseconds is normal: a digest arrives a round trip
/// before the changes it announces. A lag that lasts means changes cannot
/// reach this agent, e.g. because TCP, which carries messages past the
/// MTU, is blocked between agents while UDP passes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Lag {
    /// Since when versions have been missing.
    since: Option<Instant>,
    /// How many are missing.
    versions: u64,
    /// Whether this lag was logged.
    warned: bool,
}

impl Lag {
    /// Notes one look: `missing` versions. Returns whether the lag changed
    /// (it started, ended, or its count moved).
    fn note(&mut self, missing: u64, now: Instant) -> bool {
        let before = (self.since, self.versions);
        if missing == 0 {
            *self = Lag::default();
        } else {
            self.since.get_or_insert(now);
            self.versions = missing;
        }
        before != (self.since, self.versions)
    }

    /// How long versions have been missing, if they are.
    fn age(&self, now: Instant) -> Option<Duration> {
        Some(now.duration_since(self.since?))
    }
}

/// The failure detector's verdict on the counted incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Not heard alive yet (learnt of second-hand, or just restarted).
    NotYet,
    Alive,
    /// Declared dead after having been alive.
    Dead,
}

impl Verdict {
    /// The verdict for a newly counted incarnation.
    fn first(alive: bool) -> Verdict {
        if alive {
            Verdict::Alive
        } else {
            Verdict::NotYet
        }
    }
}

/// What the sync task knows of one incarnation (one generation of a node
/// name) across looks.
struct Incarnation {
    heartbeat: u64,
    /// When its heartbeat last moved (or when it was first seen).
    moved_at: Instant,
    /// Since when the failure detector has called it dead. A node learnt of
    /// second-hand counts as dead until its first heartbeat reaches us, so
    /// its grace starts when we first see it: it is served at once and
    /// hidden only if it stays silent.
    dead_since: Option<Instant>,
    /// Whether it has been alive since we first saw it.
    ever_alive: bool,
}

impl Incarnation {
    /// Seen for the first time: not alive until the failure detector says
    /// so, its grace starting now.
    fn first_seen(heartbeat: u64, now: Instant) -> Incarnation {
        Incarnation {
            heartbeat,
            moved_at: now,
            dead_since: Some(now),
            ever_alive: false,
        }
    }
}

/// How an incarnation stands when the sync task picks which one counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    generation: u64,
    /// The failure detector calls it alive.
    alive: bool,
    /// Alive, and its heartbeat moved within `suspect_after`: an agent is
    /// running it right now.
    fresh: bool,
    /// It gossiped [`READY_KEY`]: its initial records are all there.
    ready: bool,
    /// Dead for longer than the grace.
    expired: bool,
}

/// Which of one node name's incarnations the directory shows (an index
/// into `all`, which is not empty), given whether the name is in
/// `conflict` (see [`Claim`]).
///
/// The rules, in order:
/// 1. In a conflict, the first generation of those the failure detector
///    calls alive counts, ready or not: every agent makes the same choice,
///    and an agent started later with a name already taken (a cloned VM, a
///    copied config) never takes over the records of the one running.
/// 2. The best is the first generation among incarnations whose heartbeat
///    still moves (so a restart takes over once its predecessor's heartbeat
///    has stopped for `suspect_after`), else the newest among those not
///    dead past the grace, else the newest. Generations are start times:
///    an agent restarted with its clock set back has a smaller one, and
///    must still replace its silent predecessor.
/// 3. If the best is ready, it counts.
/// 4. Else an incarnation that is ready and not dead past the grace keeps
///    counting (the best of them by the same order): a restarted agent
///    takes over only once it has published its initial records, so its
///    host never drops out of the directory in between.
/// 5. Else the best counts, ready or not.
fn counted(all: &[Standing], conflict: bool) -> usize {
    let first_of = |keep: &dyn Fn(&Standing) -> bool| {
        (0..all.len())
            .filter(|&i| keep(&all[i]))
            .min_by_key(|&i| all[i].generation)
    };
    if conflict && let Some(first) = first_of(&|s| s.alive && !s.expired) {
        return first;
    }
    let rank = |s: &Standing| (!s.expired, s.generation);
    let best_of = |keep: &dyn Fn(&Standing) -> bool| {
        (0..all.len())
            .filter(|&i| keep(&all[i]))
            .max_by_key(|&i| rank(&all[i]))
    };
    let by_order = |keep: &dyn Fn(&Standing) -> bool| {
        first_of(&|s| keep(s) && s.fresh && !s.expired).or_else(|| best_of(keep))
    };
    let best = by_order(&|_| true).expect("a node name has at least one incarnation");
    if all[best].ready {
        return best;
    }
    by_order(&|s| s.ready && !s.expired).unwrap_or(best)
}

/// Whether one node name is claimed by more than one running agent.
///
/// Two incarnations whose heartbeats both move are normal for a moment: a
/// restart, until the old heartbeat is seen to stop. When that lasts past
/// the `debounce`, two agents run with one name: a conflict, which lasts
/// until the failure detector calls all but one of them dead (a heartbeat
/// that looks still for a moment, through loss, does not end it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Claim {
    /// Since when more than one incarnation's heartbeat has moved.
    overlap_since: Option<Instant>,
    conflict: bool,
}

impl Claim {
    /// Notes one look: how many incarnations are `fresh` and how many the
    /// failure detector calls `alive`. Returns whether the name is in
    /// conflict now.
    fn note(&mut self, fresh: usize, alive: usize, now: Instant, debounce: Duration) -> bool {
        if fresh >= 2 {
            let since = *self.overlap_since.get_or_insert(now);
            if now.duration_since(since) >= debounce {
                self.conflict = true;
            }
        } else {
            self.overlap_since = None;
        }
        if alive < 2 {
            self.conflict = false;
        }
        self.conflict
    }
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
    wake: Arc<Wake>,
    settings: Settings,
    revisions: watch::Sender<u64>,
    heard: LastHeard,
    stop: CancellationToken,
) {
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut incarnations: Incarnations = HashMap::new();
    let mut claims: HashMap<String, Claim> = HashMap::new();
    // Conflicting claimants shown at the last look (see `look`).
    let mut shown_extras = 0usize;
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ticked = tokio::select! {
            _ = wake.notify.notified() => false,
            _ = tick.tick() => true,
            _ = stop.cancelled() => return,
        };
        let only = wake.take().filter(|_| !ticked);
        let (copied, members) = {
            let chitchat = chitchat.lock().await;
            let now = Instant::now();
            match &only {
                Some(hosts) => note_new(&chitchat, &mut incarnations, hosts, now),
                None => {
                    note_incarnations(&chitchat, &mut incarnations, settings.unsure.as_ref(), now)
                }
            }
            look(
                &chitchat,
                only.as_ref(),
                &mut tracked,
                &mut claims,
                &mut shown_extras,
                &incarnations,
                &settings,
                &heard,
                now,
            )
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
        if let Some(members) = members {
            changes.push(Change::Members(members));
        }
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

/// Every incarnation chitchat holds of the node named `name`, oldest
/// generation first.
fn states_named<'a>(
    chitchat: &'a Chitchat,
    name: &'a str,
) -> impl Iterator<Item = (&'a ChitchatId, &'a NodeState)> + 'a {
    let first = ChitchatId::new(name.to_owned(), 0, ([0, 0, 0, 0], 0).into());
    chitchat
        .node_states()
        .range(first..)
        .take_while(move |(id, _)| &*id.node_id == name)
}

/// Notes the incarnations of `hosts` never noted before
/// ([`Incarnation::first_seen`]): the failure detector's verdict is read
/// at the next look at every host, at most a round later, and until then,
/// as for any incarnation noted not alive, its records are visible for the
/// dead grace.
fn note_new(
    chitchat: &Chitchat,
    incarnations: &mut Incarnations,
    hosts: &HashSet<Arc<str>>,
    now: Instant,
) {
    for (id, state) in hosts.iter().flat_map(|h| states_named(chitchat, h)) {
        incarnations
            .entry(id.clone())
            .or_insert_with(|| Incarnation::first_seen(u64::from(state.heartbeat()), now));
    }
}

/// Every incarnation chitchat knows, as the sync task has followed it.
type Incarnations = HashMap<ChitchatId, Incarnation>;

/// Notes heartbeats and the failure detector's verdicts of every
/// incarnation, and forgets those chitchat forgot.
fn note_incarnations(
    chitchat: &Chitchat,
    incarnations: &mut Incarnations,
    unsure: Option<&crate::probe::Unsure>,
    now: Instant,
) {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let unsure = unsure.map(|u| u.read().expect("not poisoned"));
    for (id, state) in chitchat.node_states() {
        let heartbeat = u64::from(state.heartbeat());
        let alive = live.contains(id);
        let i = entry(incarnations, id, || Incarnation::first_seen(heartbeat, now));
        let moved = match &unsure {
            Some(unsure) => alive && !unsure.contains(id),
            None => i.heartbeat != heartbeat,
        };
        i.heartbeat = heartbeat;
        if moved {
            i.moved_at = now;
        }
        if alive {
            i.dead_since = None;
            i.ever_alive = true;
        } else if i.dead_since.is_none() {
            i.dead_since = Some(now);
        }
    }
    // Every node state has its incarnation now: more incarnations than
    // states are ones chitchat forgot.
    if incarnations.len() > chitchat.node_states().len() {
        incarnations.retain(|id, _| chitchat.node_states().contains_key(id));
    }
}

/// One look at the cluster under the chitchat lock: at the hosts named in
/// `only`, or at every host. Returns, per host whose indexed records must
/// change, what to change, and the member list if any member changed since
/// the last look (`None` at rest, and always from a look at a few hosts:
/// the member list, the lag gauge and what chitchat forgot follow at the
/// next look at every host, at most a round later).
#[allow(clippy::too_many_arguments)]
fn look(
    chitchat: &Chitchat,
    only: Option<&HashSet<Arc<str>>>,
    tracked: &mut HashMap<String, Tracked>,
    claims: &mut HashMap<String, Claim>,
    shown_extras: &mut usize,
    incarnations: &Incarnations,
    settings: &Settings,
    heard: &LastHeard,
    now: Instant,
) -> (Vec<(String, Copied)>, Option<Vec<Member>>) {
    let dead_grace = settings.dead_grace;
    // chitchat orders node states by name, then generation: the
    // incarnations of one name are neighbours, oldest first, in a walk of
    // every host as in a walk of a few by name. One buffer for the look,
    // nothing allocated or hashed per host by the grouping.
    let visited: Box<dyn Iterator<Item = (&ChitchatId, &NodeState)>> = match only {
        Some(hosts) => Box::new(hosts.iter().flat_map(|h| states_named(chitchat, h))),
        None => Box::new(chitchat.node_states().iter()),
    };
    let visited: Vec<(&ChitchatId, &NodeState, &Incarnation)> = visited
        .filter_map(|(id, state)| Some((id, state, incarnations.get(id)?)))
        .collect();
    let mut copied = Vec::new();
    let mut members_changed = false;
    // Claimants in conflict, shown but not indexed: rare, rebuilt on every
    // look while there are any.
    let mut extras: Vec<Member> = Vec::new();
    let (mut lagging, mut longest_lag) = (0usize, Duration::ZERO);
    let mut standings: Vec<Standing> = Vec::new();
    let mut names = 0usize;
    for all in visited.chunk_by(|a, b| a.0.node_id == b.0.node_id) {
        let name: &str = &all[0].0.node_id;
        debug_assert!(all.is_sorted_by_key(|(id, _, _)| id.generation_id));
        names += 1;
        standings.clear();
        standings.extend(all.iter().map(|(id, state, i)| {
            let alive = i.dead_since.is_none();
            Standing {
                generation: id.generation_id,
                alive,
                fresh: alive && now.duration_since(i.moved_at) <= settings.suspect_after,
                // Read only where there is a choice: a lone incarnation
                // counts, ready or not.
                ready: all.len() > 1 && state.get(READY_KEY).is_some(),
                expired: i
                    .dead_since
                    .is_some_and(|since| now.duration_since(since) >= dead_grace),
            }
        }));
        let claim = entry(claims, name, Claim::default);
        let was_conflict = claim.conflict;
        let conflict = claim.note(
            standings.iter().filter(|s| s.fresh && !s.expired).count(),
            standings.iter().filter(|s| s.alive && !s.expired).count(),
            now,
            settings.conflict_after,
        );
        let chosen = counted(&standings, conflict);
        if conflict && !was_conflict {
            let others: Vec<String> = all
                .iter()
                .zip(&standings)
                .enumerate()
                .filter(|(i, (_, s))| *i != chosen && s.alive && !s.expired)
                .map(|(_, ((id, _, _), _))| {
                    format!(
                        "{} (generation {})",
                        id.gossip_advertise_addr, id.generation_id
                    )
                })
                .collect();
            error!(
                host = %name,
                serving = %format!("{} (generation {})", all[chosen].0.gossip_advertise_addr, all[chosen].0.generation_id),
                ignored = %others.join(", "),
                "two running agents claim one node name: the first keeps its records, the other's are not indexed; give each agent a node name of its own"
            );
        } else if was_conflict && !conflict {
            info!(host = %name, "node name conflict over: one agent claims it");
        }
        let (id, state, incarnation) = all[chosen];
        let alive = incarnation.dead_since.is_none();
        let t = entry(tracked, name, || {
            info!(host = %name, generation = id.generation_id, "host discovered");
            Tracked {
                id: id.clone(),
                seen_version: 0,
                visible: false,
                verdict: Verdict::first(alive),
                heard_moved: None,
                records: 0,
                meta: BTreeMap::new(),
                lag: Lag::default(),
                shown: None,
            }
        });
        let restarted = t.id != *id;
        if restarted {
            info!(host = %name, generation = id.generation_id, "host restarted: its new generation takes over");
            t.id = id.clone();
            t.verdict = Verdict::first(alive);
        }
        t.verdict = match (t.verdict, alive) {
            (Verdict::Dead, true) => {
                info!(host = %name, "host is alive again");
                Verdict::Alive
            }
            (Verdict::Alive, false) => {
                info!(host = %name, grace = ?dead_grace, "host declared dead by the failure detector");
                Verdict::Dead
            }
            (Verdict::NotYet, true) => Verdict::Alive,
            (verdict, _) => verdict,
        };
        if t.heard_moved != Some(incarnation.moved_at) {
            t.heard_moved = Some(incarnation.moved_at);
            heard.set(
                name,
                SystemTime::now() - now.duration_since(incarnation.moved_at),
            );
        }
        let missing = state
            .advertised_max_version()
            .saturating_sub(state.max_version());
        if t.lag.note(missing, now) {
            heard.set_behind(
                name,
                t.lag.since.map(|since| Behind {
                    since: SystemTime::now() - now.duration_since(since),
                    versions: t.lag.versions,
                }),
            );
        }
        if let Some(age) = t.lag.age(now) {
            lagging += 1;
            longest_lag = longest_lag.max(age);
            if age >= settings.lag_warn_after && !t.lag.warned {
                t.lag.warned = true;
                warn!(
                    host = %name,
                    missing_versions = t.lag.versions,
                    for_seconds = age.as_secs(),
                    "this agent lacks changes of this host that other agents hold: \
                     is the gossip port open to TCP as well as UDP between agents?"
                );
            }
        }
        let suspect = alive && now.duration_since(incarnation.moved_at) > settings.suspect_after;
        let visible = incarnation
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
        } else if !t.visible
            || restarted
            || needs_full_copy(state.max_version(), state.last_gc_version(), t.seen_version)
        {
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
        if only.is_some() {
            continue;
        }
        let liveness = match (alive, incarnation.ever_alive) {
            _ if conflict => Liveness::Conflict,
            (true, _) if suspect => Liveness::Suspect,
            (true, _) => Liveness::Alive,
            (false, false) if visible => Liveness::Joining,
            (false, _) => Liveness::Dead,
        };
        let same = t.shown.as_ref().is_some_and(|m| {
            m.liveness == liveness
                && m.generation == id.generation_id
                && m.gossip_addr == id.gossip_advertise_addr
                && m.records == t.records
                && m.visible == visible
                && m.meta == t.meta
        });
        if !same {
            members_changed = true;
            t.shown = Some(Member {
                name: name.to_owned(),
                gossip_addr: id.gossip_advertise_addr,
                liveness,
                generation: id.generation_id,
                records: t.records,
                visible,
                meta: t.meta.clone(),
            });
        }
        if conflict {
            // The other claimants, shown but not indexed.
            for (i, (other, state, _)) in all.iter().enumerate() {
                if i == chosen || !standings[i].alive || standings[i].expired {
                    continue;
                }
                extras.push(Member {
                    name: name.to_owned(),
                    gossip_addr: other.gossip_advertise_addr,
                    liveness: Liveness::Conflict,
                    generation: other.generation_id,
                    records: state.iter_prefix(RECORD_PREFIX).count(),
                    visible: false,
                    meta: meta_of(state),
                });
            }
        }
    }
    if only.is_some() {
        return (copied, None);
    }
    // Every name looked at is tracked now; more tracked names than that
    // are names chitchat forgot (rare: a walk to find them).
    if tracked.len() > names {
        let present: HashSet<&str> = visited.iter().map(|(id, _, _)| &*id.node_id).collect();
        tracked.retain(|name, t| {
            let keep = present.contains(name.as_str());
            members_changed |= !keep;
            if !keep && t.visible {
                info!(host = %name, "host forgotten by gossip; its records leave the directory");
                copied.push((name.clone(), Copied::Hide));
            }
            keep
        });
        heard.retain(|name| tracked.contains_key(name));
        claims.retain(|name, _| tracked.contains_key(name));
    }
    settings.metrics.set_lag(lagging, longest_lag);
    members_changed |= !extras.is_empty() || *shown_extras > 0;
    *shown_extras = extras.len();
    let members = members_changed.then(|| {
        tracked
            .values()
            .filter_map(|t| t.shown.clone())
            .chain(extras)
            .collect()
    });
    (copied, members)
}

/// `map`'s value for `key`, made by `make` if missing: like `entry`, but
/// the key is cloned only when it is inserted, not on every look.
fn entry<'m, K, Q, V>(map: &'m mut HashMap<K, V>, key: &Q, make: impl FnOnce() -> V) -> &'m mut V
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
{
    if !map.contains_key(key) {
        map.insert(key.to_owned(), make());
    }
    map.get_mut(key).expect("inserted above")
}

/// A delta is only safe when every tombstone since our last look is still
/// there; chitchat forgets tombstones up to `last_gc_version`, and a reset
/// can make versions go backwards.
fn needs_full_copy(max_version: u64, last_gc_version: u64, seen_version: u64) -> bool {
    max_version < seen_version || last_gc_version > seen_version
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_made_once_and_then_found() {
        let mut map: HashMap<String, u32> = HashMap::new();
        *entry(&mut map, "a", || 1) += 10;
        assert_eq!(*entry(&mut map, "a", || panic!("made twice")), 11);
        assert_eq!(map.len(), 1);
    }

    /// An incarnation of generation `generation`, heard from lately,
    /// ready, and alive.
    fn up(generation: u64) -> Standing {
        Standing {
            generation,
            alive: true,
            fresh: true,
            ready: true,
            expired: false,
        }
    }

    fn unready(s: Standing) -> Standing {
        Standing { ready: false, ..s }
    }

    fn silent(s: Standing) -> Standing {
        Standing { fresh: false, ..s }
    }

    fn expired(s: Standing) -> Standing {
        Standing {
            expired: true,
            alive: false,
            ..silent(s)
        }
    }

    #[test]
    fn a_gossiped_record_wakes_a_look_at_its_host_and_anything_else_a_look_at_every_host() {
        let wake = Wake::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        wake.host(&a);
        wake.host(&b);
        wake.host(&a);
        assert_eq!(wake.take(), Some(HashSet::from([a.clone(), b.clone()])));
        // Taken means cleared: a wake with nothing pending looks at nothing.
        assert_eq!(wake.take(), Some(HashSet::new()));
        // Everything absorbs hosts named before and after it.
        wake.host(&a);
        wake.everything();
        wake.host(&b);
        assert_eq!(wake.take(), None);
        assert_eq!(wake.take(), Some(HashSet::new()));
    }

    #[test]
    fn a_delta_since_the_last_look_is_enough_only_while_every_tombstone_since_is_kept() {
        // Seen up to version 10; the node is at 15 and has forgotten
        // tombstones up to 8: every deletion after 10 is still there.
        assert!(!needs_full_copy(15, 8, 10));
        assert!(
            !needs_full_copy(15, 10, 10),
            "forgotten up to exactly what was seen"
        );
        // Tombstones up to 12 are gone: a record deleted at 11 would be
        // missed by a delta, so the host's records are copied whole.
        assert!(needs_full_copy(15, 12, 10));
        // Versions went backwards (chitchat reset the node): whole copy.
        assert!(needs_full_copy(4, 0, 10));
        // Nothing new and nothing forgotten: no copy at all is needed, and
        // a delta (of nothing) is what the caller takes.
        assert!(!needs_full_copy(10, 0, 10));
    }

    #[test]
    fn a_lag_starts_when_versions_are_missing_and_keeps_its_start_until_caught_up() {
        let t0 = Instant::now();
        let mut lag = Lag::default();
        assert!(!lag.note(0, t0), "nothing missing, nothing changes");
        assert_eq!(lag.age(t0), None);
        assert!(lag.note(3, t0));
        // More versions announced later: the same lag, older by now.
        assert!(lag.note(5, t0 + Duration::from_secs(2)));
        assert!(!lag.note(5, t0 + Duration::from_secs(3)));
        assert_eq!(
            lag.age(t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(lag.versions, 5);
        lag.warned = true;
        assert!(lag.note(0, t0 + Duration::from_secs(4)), "caught up");
        assert_eq!(lag, Lag::default(), "a later lag is a new one, warned anew");
    }

    /// `all[expected]` is the incarnation that counts, in no conflict.
    fn check(all: &[Standing], expected: usize) {
        assert_eq!(counted(all, false), expected, "among {all:#?}");
    }

    #[test]
    fn a_lone_incarnation_counts_ready_or_not() {
        check(&[up(1)], 0);
        check(&[unready(up(1))], 0);
        check(&[expired(unready(up(1)))], 0);
    }

    #[test]
    fn a_ready_restart_replaces_its_silent_predecessor_at_once() {
        check(&[silent(up(1)), up(2)], 1);
        check(&[up(2), silent(up(1))], 0);
    }

    #[test]
    fn a_restart_that_has_not_published_yet_leaves_its_predecessor_answering() {
        // Silent (killed, or declared dead) but within the grace.
        check(&[silent(up(1)), unready(up(2))], 0);
    }

    #[test]
    fn a_predecessor_dead_past_the_grace_gives_way_to_an_unready_restart() {
        check(&[expired(up(1)), unready(up(2))], 1);
    }

    #[test]
    fn a_restart_with_the_clock_set_back_still_replaces_its_predecessor_once_ready() {
        // Generation 5 ran with the clock ahead; generation 3 is its restart.
        check(&[silent(up(5)), up(3)], 1);
        check(&[silent(up(5)), unready(up(3))], 0);
    }

    #[test]
    fn a_paused_agent_is_not_replaced_by_a_predecessor_dead_past_the_grace() {
        // The skewed case: the predecessor has the larger generation, the
        // current incarnation pauses (SIGSTOP) and stops heartbeating.
        check(&[expired(up(5)), silent(up(3))], 1);
    }

    #[test]
    fn of_two_incarnations_whose_heartbeats_move_the_first_keeps_counting_until_its_stops() {
        // A restart's first moments, or two agents with one name.
        check(&[up(1), up(2)], 0);
        check(&[up(2), up(1)], 1);
        check(&[up(1), unready(up(2))], 0);
        // The first one's heartbeat stopped: the restart takes over.
        check(&[silent(up(1)), up(2)], 1);
    }

    #[test]
    fn in_a_conflict_the_first_alive_generation_counts_even_when_its_heartbeat_looks_still() {
        // Loss hides a heartbeat for a moment: the choice stays.
        let all = [silent(up(1)), up(2)];
        assert_eq!(counted(&all, true), 0);
        assert_eq!(
            counted(&[up(2), unready(silent(up(1)))], true),
            1,
            "ready or not"
        );
        // Once the failure detector calls it dead, the other counts.
        assert_eq!(counted(&[expired(up(1)), up(2)], true), 1);
        let dead_not_expired = Standing {
            alive: false,
            ..silent(up(1))
        };
        assert_eq!(counted(&[dead_not_expired, up(2)], true), 1);
    }

    const DEBOUNCE: Duration = Duration::from_millis(600);

    #[test]
    fn a_restart_overlapping_its_predecessor_briefly_is_no_conflict() {
        let t0 = Instant::now();
        let mut claim = Claim::default();
        assert!(!claim.note(2, 2, t0, DEBOUNCE));
        assert!(!claim.note(2, 2, t0 + DEBOUNCE / 2, DEBOUNCE));
        // The old heartbeat is seen to stop; the detector still calls it alive.
        assert!(!claim.note(1, 2, t0 + DEBOUNCE, DEBOUNCE));
        assert!(!claim.note(1, 2, t0 + DEBOUNCE * 3, DEBOUNCE));
        assert!(!claim.note(1, 1, t0 + DEBOUNCE * 10, DEBOUNCE));
    }

    #[test]
    fn two_heartbeats_moving_past_the_debounce_are_a_conflict_until_one_is_dead() {
        let t0 = Instant::now();
        let mut claim = Claim::default();
        assert!(!claim.note(2, 2, t0, DEBOUNCE));
        assert!(claim.note(2, 2, t0 + DEBOUNCE, DEBOUNCE));
        // A heartbeat looking still for a moment does not end it.
        assert!(claim.note(1, 2, t0 + DEBOUNCE * 2, DEBOUNCE));
        assert!(claim.note(2, 2, t0 + DEBOUNCE * 3, DEBOUNCE));
        // The failure detector calls one dead: over.
        assert!(!claim.note(1, 1, t0 + DEBOUNCE * 4, DEBOUNCE));
        // A new overlap needs the whole debounce again.
        assert!(!claim.note(2, 2, t0 + DEBOUNCE * 5, DEBOUNCE));
    }

    #[test]
    fn agents_that_never_gossip_ready_fall_back_to_the_newest_live_generation() {
        // A cluster partly on an earlier version, which sets no `ready`.
        check(&[silent(unready(up(1))), unready(up(2))], 1);
        check(&[unready(up(1)), silent(unready(up(2)))], 0);
    }
}
