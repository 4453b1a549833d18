//! The directory index: an immutable snapshot of every visible record in
//! the cluster, keyed by host, name, IP and label.
//!
//! A [`Snapshot`] is built from persistent maps (`imbl`), so
//! [`Snapshot::apply`] makes a new snapshot that shares everything the
//! changes did not touch: an update costs O(changed records × log n), never
//! O(all records). One writer (the gossip sync task) applies changes and
//! publishes the result; readers hold an `Arc<Snapshot>` and never lock.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet, Vector};

use crate::record::Record;
use crate::selector::Selector;

/// Identifies one record in the cluster: the host that publishes it and
/// its id there.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    /// Node name of the publishing agent.
    pub host: Arc<str>,
    /// Record id, unique on that host.
    pub id: Arc<str>,
}

/// Record changes a snapshot remembers for watchers; older ones are
/// dropped (a watcher that far behind starts over with the full set).
pub const JOURNAL_LEN: usize = 16_384;

/// One change to one record, as a snapshot's journal keeps it.
#[derive(Debug, Clone)]
pub struct RecordEvent {
    /// The revision that made the change.
    pub revision: u64,
    /// The record before (`None`: it was added).
    pub old: Option<Arc<Record>>,
    /// The record after (`None`: it was removed).
    pub new: Option<Arc<Record>>,
}

/// The changes asked for are older than the journal holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryGone {
    /// Changes after this revision are all still held.
    pub complete_after: u64,
}

/// A change to apply to a snapshot.
#[derive(Debug, Clone)]
pub enum Change {
    /// Insert or replace the record `(record.host, record.id)`.
    Upsert(Record),
    /// Remove one record.
    Remove {
        /// Node name of the publishing agent.
        host: String,
        /// Record id.
        id: String,
    },
    /// Remove every record of a host.
    RemoveHost(String),
    /// Replace the member list.
    Members(Vec<Member>),
}

/// How the local agent sees another agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// Heard of, but its failure detector has no heartbeat rhythm yet (a
    /// node that just started, or that another agent told us about).
    Joining,
    /// Heard from recently.
    Alive,
    /// Alive for the failure detector, but its heartbeat has not moved for
    /// several gossip intervals.
    Suspect,
    /// Declared dead by the failure detector; its records stay visible
    /// until the dead grace has passed.
    Dead,
    /// One of several running agents that claim the same node name: only
    /// the first generation's records are in the directory.
    Conflict,
}

impl Liveness {
    /// The lower-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Joining => "joining",
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
            Liveness::Conflict => "conflict",
        }
    }
}

/// One agent of the cluster, as the local agent knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node name (the `host` of its records).
    pub name: String,
    /// Address it gossips on.
    pub gossip_addr: SocketAddr,
    /// Alive or dead.
    pub liveness: Liveness,
    /// Grows on every restart of the agent.
    pub generation: u64,
    /// Records it publishes (as gossiped, whether visible or not).
    pub records: usize,
    /// Whether its records are in the directory (false once dead past
    /// the grace).
    pub visible: bool,
    /// Facts it publishes about itself (agent version, API addresses).
    pub meta: BTreeMap<String, String>,
}

/// An immutable view of the whole directory.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    revision: u64,
    hosts: HashMap<Arc<str>, OrdMap<Arc<str>, Arc<Record>>>,
    by_name: HashMap<Arc<str>, Arc<[Arc<Record>]>>,
    by_ip: HashMap<IpAddr, Arc<[Arc<Record>]>>,
    /// The keys of `by_ip` in order, for questions about address ranges.
    ips: OrdSet<IpAddr>,
    by_service: HashMap<Arc<str>, Arc<[Arc<Record>]>>,
    by_label: HashMap<(Arc<str>, Arc<str>), OrdSet<RecordKey>>,
    members: Arc<[Member]>,
    len: usize,
    /// The latest record changes, oldest first (at most [`JOURNAL_LEN`]).
    journal: Vector<RecordEvent>,
    /// Every change after this revision is in `journal`.
    journal_floor: u64,
}

fn key_of(record: &Record) -> RecordKey {
    RecordKey {
        host: Arc::from(record.host.as_str()),
        id: Arc::from(record.id.as_str()),
    }
}

fn same_record(a: &Record, b: &Record) -> bool {
    a.host == b.host && a.id == b.id
}

/// Normalises a name for the by-name map; DNS names match regardless of
/// ASCII case.
fn name_key(name: &str) -> Arc<str> {
    Arc::from(name.to_ascii_lowercase())
}

impl Snapshot {
    /// An empty directory at revision 0.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Grows by one for every applied batch of changes that altered
    /// anything.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the directory holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records answering to `name` (its name or an alias), in any ASCII
    /// case; empty when none.
    pub fn lookup(&self, name: &str) -> &[Arc<Record>] {
        get_any_case(&self.by_name, name)
    }

    /// Members of a service group (see [`Record::service`]), in any state;
    /// empty when no record names the group.
    pub fn service(&self, name: &str) -> &[Arc<Record>] {
        get_any_case(&self.by_service, name)
    }

    /// Records holding `ip` on any network.
    pub fn by_ip(&self, ip: IpAddr) -> &[Arc<Record>] {
        self.by_ip.get(&ip).map_or(&[], |r| r)
    }

    /// Whether any record or member holds an address from `first` to
    /// `last`, both included (a reverse DNS name that has names below it).
    pub fn has_address_between(&self, first: IpAddr, last: IpAddr) -> bool {
        self.ips.range(first..=last).next().is_some()
            || self.members.iter().any(|m| {
                let ip = m.gossip_addr.ip();
                first <= ip && ip <= last
            })
    }

    /// One record by host and id.
    pub fn get(&self, host: &str, id: &str) -> Option<&Arc<Record>> {
        self.hosts.get(host)?.get(id)
    }

    /// Records of one host, by id.
    pub fn host_records(&self, host: &str) -> impl Iterator<Item = &Arc<Record>> {
        self.hosts.get(host).into_iter().flat_map(|m| m.values())
    }

    /// Every record, host by host.
    pub fn records(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.hosts.values().flat_map(|m| m.values())
    }

    /// Records whose labels match `selector`, sorted by name then host.
    /// Uses the label index when the selector requires a `key=value` pair.
    pub fn select(&self, selector: &Selector) -> Vec<Arc<Record>> {
        let narrowest = selector
            .required_pairs()
            .map(|(k, v)| {
                self.by_label
                    .get(&(Arc::from(k), Arc::from(v)))
                    .map_or(0, OrdSet::len)
            })
            .enumerate()
            .min_by_key(|(_, n)| *n);
        let mut out: Vec<Arc<Record>> = match narrowest {
            Some((i, _)) => {
                let (k, v) = selector
                    .required_pairs()
                    .nth(i)
                    .expect("index from same iterator");
                self.by_label
                    .get(&(Arc::from(k), Arc::from(v)))
                    .into_iter()
                    .flatten()
                    .filter_map(|key| self.get(&key.host, &key.id))
                    .filter(|r| selector.matches(&r.labels))
                    .cloned()
                    .collect()
            }
            None => self
                .records()
                .filter(|r| selector.matches(&r.labels))
                .cloned()
                .collect(),
        };
        out.sort_by(|a, b| (&a.name, &a.host, &a.id).cmp(&(&b.name, &b.host, &b.id)));
        out
    }

    /// The agents of the cluster, sorted by name.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The record changes after revision `after`, oldest first, or
    /// [`HistoryGone`] when the journal no longer reaches back that far.
    pub fn changes_since(
        &self,
        after: u64,
    ) -> Result<impl Iterator<Item = &RecordEvent>, HistoryGone> {
        if after < self.journal_floor || after > self.revision {
            return Err(HistoryGone {
                complete_after: self.journal_floor,
            });
        }
        // Revisions grow along the journal: skip to the first one after.
        let start = self.journal.binary_search_by(|e| {
            if e.revision <= after {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        let start = start.unwrap_or_else(|i| i);
        Ok(self.journal.iter().skip(start))
    }

    /// A new snapshot with `changes` applied in order. The revision grows
    /// by one if anything changed; record changes go to the journal.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) -> Snapshot {
        let mut next = self.clone();
        let revision = self.revision + 1;
        let mut changed = false;
        for change in changes {
            changed |= next.apply_one(change, revision);
        }
        if changed {
            next.revision = revision;
        }
        while next.journal.len() > JOURNAL_LEN {
            if let Some(dropped) = next.journal.pop_front() {
                next.journal_floor = dropped.revision;
            }
        }
        next
    }

    fn log(&mut self, revision: u64, old: Option<Arc<Record>>, new: Option<Arc<Record>>) {
        self.journal.push_back(RecordEvent { revision, old, new });
    }

    fn apply_one(&mut self, change: Change, revision: u64) -> bool {
        match change {
            Change::Upsert(record) => {
                if self
                    .get(&record.host, &record.id)
                    .is_some_and(|old| **old == record)
                {
                    return false;
                }
                let old = self.remove(&record.host, &record.id);
                let new = Arc::new(record);
                self.insert(new.clone());
                self.log(revision, old, Some(new));
                true
            }
            Change::Remove { host, id } => match self.remove(&host, &id) {
                Some(old) => {
                    self.log(revision, Some(old), None);
                    true
                }
                None => false,
            },
            Change::RemoveHost(host) => {
                let Some(records) = self.hosts.get(host.as_str()).cloned() else {
                    return false;
                };
                for id in records.keys() {
                    let old = self.remove(&host, id);
                    self.log(revision, old, None);
                }
                true
            }
            Change::Members(mut members) => {
                members.sort_by(|a, b| a.name.cmp(&b.name));
                if *self.members == *members {
                    return false;
                }
                self.members = members.into();
                true
            }
        }
    }

    fn insert(&mut self, record: Arc<Record>) {
        let key = key_of(&record);
        self.hosts
            .entry(key.host.clone())
            .or_default()
            .insert(key.id.clone(), record.clone());
        self.len += 1;
        let mut names: Vec<Arc<str>> = record.names().map(name_key).collect();
        names.sort();
        names.dedup();
        for name in names {
            add_to_list(&mut self.by_name, name, &record);
        }
        if let Some(service) = record.service() {
            add_to_list(&mut self.by_service, Arc::from(service), &record);
        }
        let mut ips: Vec<IpAddr> = record.addresses.iter().map(|a| a.ip).collect();
        ips.sort();
        ips.dedup();
        for ip in ips {
            add_to_list(&mut self.by_ip, ip, &record);
            self.ips.insert(ip);
        }
        for (k, v) in &record.labels {
            self.by_label
                .entry((Arc::from(k.as_str()), Arc::from(v.as_str())))
                .or_default()
                .insert(key.clone());
        }
    }

    /// Removes one record from every index; returns it.
    fn remove(&mut self, host: &str, id: &str) -> Option<Arc<Record>> {
        let records = self.hosts.get_mut(host)?;
        let old = records.remove(id)?;
        if records.is_empty() {
            self.hosts.remove(host);
        }
        self.len -= 1;
        for name in old.names() {
            remove_from_list(&mut self.by_name, name_key(name), &old);
        }
        if let Some(service) = old.service() {
            remove_from_list(&mut self.by_service, Arc::from(service), &old);
        }
        for address in &old.addresses {
            remove_from_list(&mut self.by_ip, address.ip, &old);
            if !self.by_ip.contains_key(&address.ip) {
                self.ips.remove(&address.ip);
            }
        }
        let key = key_of(&old);
        for (k, v) in &old.labels {
            let label = (Arc::from(k.as_str()), Arc::from(v.as_str()));
            if let Some(set) = self.by_label.get_mut(&label) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_label.remove(&label);
                }
            }
        }
        Some(old)
    }
}

/// The list under `name` in a map keyed by lower-case names; allocates
/// only when `name` has upper-case letters (DNS hands over lower case).
fn get_any_case<'a>(
    map: &'a HashMap<Arc<str>, Arc<[Arc<Record>]>>,
    name: &str,
) -> &'a [Arc<Record>] {
    let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        map.get(name.to_ascii_lowercase().as_str())
    } else {
        map.get(name)
    };
    found.map_or(&[], |r| r)
}

/// Adds a record to a small per-key list, kept sorted by (host, id) so that
/// answers are stable.
fn add_to_list<K>(map: &mut HashMap<K, Arc<[Arc<Record>]>>, key: K, record: &Arc<Record>)
where
    K: std::hash::Hash + Eq + Clone,
{
    let mut list: Vec<Arc<Record>> = map.get(&key).map(|l| l.to_vec()).unwrap_or_default();
    list.push(record.clone());
    list.sort_by(|a, b| (&a.host, &a.id).cmp(&(&b.host, &b.id)));
    map.insert(key, list.into());
}

fn remove_from_list<K>(map: &mut HashMap<K, Arc<[Arc<Record>]>>, key: K, record: &Record)
where
    K: std::hash::Hash + Eq + Clone,
{
    let Some(list) = map.get(&key) else { return };
    if !list.iter().any(|r| same_record(r, record)) {
        return;
    }
    let kept: Vec<Arc<Record>> = list
        .iter()
        .filter(|r| !same_record(r, record))
        .cloned()
        .collect();
    if kept.is_empty() {
        map.remove(&key);
    } else {
        map.insert(key, kept.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Address, Source};

    fn record(host: &str, id: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> Record {
        let mut r = Record::new(id, name, Source::Static);
        r.host = host.into();
        r.addresses.push(Address {
            network: "static".into(),
            ip: ip.parse().expect("test ip"),
            local: false,
        });
        r.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    fn names(records: &[Arc<Record>]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{}@{}", r.name, r.host))
            .collect()
    }

    #[test]
    fn lookup_is_case_insensitive_and_spans_hosts() {
        let s = Snapshot::new().apply([
            Change::Upsert(record("a", "1", "Web-1", "10.0.0.1", &[])),
            Change::Upsert(record("b", "1", "web-1", "10.0.0.2", &[])),
        ]);
        assert_eq!(names(s.lookup("WEB-1")), ["Web-1@a", "web-1@b"]);
        assert_eq!(names(s.lookup("web-1")), ["Web-1@a", "web-1@b"]);
        assert!(s.lookup("web-2").is_empty());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn the_journal_replays_changes_after_a_revision_in_order() {
        let s1 =
            Snapshot::new().apply([Change::Upsert(record("a", "1", "web-1", "10.0.0.1", &[]))]);
        let s2 = s1.apply([
            Change::Upsert(record("a", "1", "web-1", "10.0.0.2", &[])),
            Change::Upsert(record("a", "2", "web-2", "10.0.0.3", &[])),
        ]);
        let s3 = s2.apply([Change::RemoveHost("a".into())]);
        // An unchanged record is no change and no new revision.
        let s4 = s3.apply([Change::Remove {
            host: "a".into(),
            id: "9".into(),
        }]);
        assert_eq!(s4.revision(), 3);
        let seen = |after| -> Vec<(u64, Option<String>, Option<String>)> {
            s4.changes_since(after)
                .expect("held")
                .map(|e| {
                    let ip = |r: &Option<Arc<Record>>| {
                        r.as_ref()
                            .map(|r| format!("{}={}", r.name, r.addresses[0].ip))
                    };
                    (e.revision, ip(&e.old), ip(&e.new))
                })
                .collect()
        };
        let all = seen(0);
        assert_eq!(all.len(), 5);
        assert_eq!(all[0], (1, None, Some("web-1=10.0.0.1".into())));
        assert_eq!(
            all[1],
            (
                2,
                Some("web-1=10.0.0.1".into()),
                Some("web-1=10.0.0.2".into())
            )
        );
        assert_eq!(all[2], (2, None, Some("web-2=10.0.0.3".into())));
        assert!(all[3..].iter().all(|e| e.0 == 3 && e.2.is_none()));
        assert_eq!(seen(2).len(), 2);
        assert!(seen(3).is_empty());
        assert!(s4.changes_since(4).is_err(), "a revision from the future");
    }

    #[test]
    fn the_journal_is_bounded_and_says_when_history_is_gone() {
        let mut s = Snapshot::new();
        for i in 0..JOURNAL_LEN + 10 {
            s = s.apply([Change::Upsert(record(
                "a",
                "1",
                "web-1",
                &format!("10.0.{}.{}", i / 256 % 256, i % 256),
                &[],
            ))]);
        }
        assert_eq!(s.journal.len(), JOURNAL_LEN);
        assert_eq!(
            s.changes_since(5).err(),
            Some(HistoryGone { complete_after: 10 })
        );
        assert_eq!(s.changes_since(10).expect("held").count(), JOURNAL_LEN);
    }

    #[test]
    fn upsert_replaces_every_index_entry_of_the_old_record() {
        let s = Snapshot::new().apply([Change::Upsert(record(
            "a",
            "1",
            "web-1",
            "10.0.0.1",
            &[("app", "web")],
        ))]);
        let s = s.apply([Change::Upsert(record(
            "a",
            "1",
            "api-1",
            "10.0.0.9",
            &[("app", "api")],
        ))]);
        assert!(s.lookup("web-1").is_empty());
        assert!(s.by_ip("10.0.0.1".parse().unwrap()).is_empty());
        assert!(s.select(&"app=web".parse().unwrap()).is_empty());
        assert_eq!(names(s.lookup("api-1")), ["api-1@a"]);
        assert_eq!(names(s.by_ip("10.0.0.9".parse().unwrap())), ["api-1@a"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(s.has_address_between(ip("10.0.0.0"), ip("10.0.0.255")));
        assert!(!s.has_address_between(ip("10.0.0.1"), ip("10.0.0.1")));
        assert!(!s.has_address_between(ip("10.0.1.0"), ip("10.255.255.255")));
        assert_eq!(names(&s.select(&"app=api".parse().unwrap())), ["api-1@a"]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn removing_a_host_removes_only_its_records() {
        let s = Snapshot::new().apply([
            Change::Upsert(record("a", "1", "web-1", "10.0.0.1", &[("app", "web")])),
            Change::Upsert(record("a", "2", "web-2", "10.0.0.2", &[("app", "web")])),
            Change::Upsert(record("b", "1", "web-3", "10.0.0.3", &[("app", "web")])),
        ]);
        let s2 = s.apply([Change::RemoveHost("a".into())]);
        assert_eq!(names(&s2.select(&"app=web".parse().unwrap())), ["web-3@b"]);
        assert_eq!(s2.len(), 1);
        assert_eq!(s2.revision(), s.revision() + 1);
        // The earlier snapshot is untouched: readers holding it see no change.
        assert_eq!(s.len(), 3);
        assert_eq!(names(s.lookup("web-1")), ["web-1@a"]);
    }

    #[test]
    fn service_groups_follow_the_service_labels() {
        let s = Snapshot::new().apply([
            Change::Upsert(record(
                "a",
                "1",
                "web-1",
                "10.0.0.1",
                &[("com.docker.compose.service", "web")],
            )),
            Change::Upsert(record(
                "b",
                "1",
                "web-2",
                "10.0.0.2",
                &[("muster.service", "Web")],
            )),
            Change::Upsert(record("b", "2", "db-1", "10.0.0.3", &[("app", "web")])),
        ]);
        assert_eq!(names(s.service("web")), ["web-1@a", "web-2@b"]);
        let s = s.apply([Change::Remove {
            host: "a".into(),
            id: "1".into(),
        }]);
        assert_eq!(names(s.service("WEB")), ["web-2@b"]);
        assert!(s.service("db").is_empty());
    }

    #[test]
    fn unchanged_input_does_not_bump_the_revision() {
        let r = record("a", "1", "web-1", "10.0.0.1", &[]);
        let s = Snapshot::new().apply([Change::Upsert(r.clone())]);
        let again = s.apply([
            Change::Upsert(r),
            Change::Remove {
                host: "a".into(),
                id: "nope".into(),
            },
        ]);
        assert_eq!(again.revision(), s.revision());
    }

    #[test]
    fn select_combines_index_and_full_match() {
        let s = Snapshot::new().apply([
            Change::Upsert(record(
                "a",
                "1",
                "web-1",
                "10.0.0.1",
                &[("app", "web"), ("env", "prod")],
            )),
            Change::Upsert(record(
                "a",
                "2",
                "web-2",
                "10.0.0.2",
                &[("app", "web"), ("env", "dev")],
            )),
            Change::Upsert(record(
                "a",
                "3",
                "db-1",
                "10.0.0.3",
                &[("app", "db"), ("env", "prod")],
            )),
        ]);
        let select = |sel: &str| names(&s.select(&sel.parse().unwrap()));
        assert_eq!(select("app=web,env=prod"), ["web-1@a"]);
        assert_eq!(select("env=prod"), ["db-1@a", "web-1@a"]);
        assert_eq!(select("app!=web"), ["db-1@a"]);
        assert_eq!(select(""), ["db-1@a", "web-1@a", "web-2@a"]);
        assert!(select("app=cache").is_empty());
    }
}
