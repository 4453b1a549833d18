//! Violations of the whole directory, kept up to date change by change.
//!
//! The [`Tracker`] follows the snapshots' journal: a change costs the
//! judging of the records it touched and a look at the holders of the
//! names it touched (for duplicates), never a pass over the directory. A
//! full pass happens only on start, on a new policy, and when the journal
//! no longer reaches back to the last revision judged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use imbl::{HashSet, OrdMap};
use muster_core::{Liveness, Record, RecordKey, Snapshot};

use crate::rules::{DUPLICATE_NODE_RULE, DUPLICATE_RULE, Finding, Policy};

/// One record breaking one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule (or `duplicate-name`, or `duplicate-node`).
    pub rule: String,
    /// Its severity.
    pub severity: crate::Severity,
    /// The record's host (for `duplicate-node`, the node name).
    pub host: String,
    /// The record's id (empty for `duplicate-node`).
    pub id: String,
    /// The record's name.
    pub name: String,
    /// Why, for people.
    pub why: String,
    /// When this agent first saw the record break the rule.
    pub since: SystemTime,
    /// The rule keeps violators out of DNS.
    pub exclude_from_dns: bool,
}

/// A violation starting or ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A record started to break a rule.
    Started(Violation),
    /// It no longer does (fixed, renamed or gone).
    Ended(Violation),
}

type Key = (String, String, String);

/// Every current violation: a cheap-to-clone snapshot for readers.
#[derive(Debug, Clone, Default)]
pub struct Violations {
    by_key: OrdMap<Key, Violation>,
    hidden: HashSet<RecordKey>,
    /// The directory revision last judged.
    pub revision: u64,
    /// This agent's policy digest.
    pub digest: String,
    /// Members whose published policy digest differs from ours, with theirs.
    pub mismatched: Vec<(String, String)>,
}

impl Violations {
    /// Every violation, by host, id and rule.
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.by_key.values()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether DNS must leave this record out. Inlined, so that the usual
    /// case (nothing hidden) costs DNS one comparison per record.
    #[inline]
    pub fn hides(&self, host: &str, id: &str) -> bool {
        !self.hidden.is_empty() && self.hidden_contains(host, id)
    }

    fn hidden_contains(&self, host: &str, id: &str) -> bool {
        self.hidden.contains(&RecordKey {
            host: Arc::from(host),
            id: Arc::from(id),
        })
    }
}

/// Judges the directory by a policy, change by change.
pub struct Tracker {
    policy: Policy,
    current: Violations,
    /// Duplicate holders by lower-case name, as last judged.
    duplicates: HashMap<String, BTreeSet<(String, String)>>,
    /// Node names in conflict, as last judged.
    conflicted: BTreeSet<String>,
    judged_once: bool,
}

impl Tracker {
    /// A tracker that has judged nothing yet.
    pub fn new(policy: Policy) -> Tracker {
        let current = Violations {
            digest: policy.digest().to_owned(),
            ..Violations::default()
        };
        Tracker {
            policy,
            current,
            duplicates: HashMap::new(),
            conflicted: BTreeSet::new(),
            judged_once: false,
        }
    }

    /// The policy judged by.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The current violations.
    pub fn violations(&self) -> &Violations {
        &self.current
    }

    /// Judges everything again by a new policy.
    pub fn set_policy(
        &mut self,
        policy: Policy,
        snapshot: &Snapshot,
        now: SystemTime,
    ) -> Vec<Event> {
        self.current.digest = policy.digest().to_owned();
        self.policy = policy;
        self.judge_all(snapshot, now)
    }

    /// Brings the violations up to `snapshot`: only what changed since the
    /// last revision judged, unless the journal no longer reaches back.
    pub fn update(&mut self, snapshot: &Snapshot, now: SystemTime) -> Vec<Event> {
        self.note_digests(snapshot);
        if !self.judged_once {
            return self.judge_all(snapshot, now);
        }
        let mut out = Vec::new();
        self.settle_nodes(snapshot, now, &mut out);
        let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        match snapshot.changes_since(self.current.revision) {
            Ok(events) => {
                for event in events {
                    for r in event.old.iter().chain(event.new.iter()) {
                        keys.insert((r.host.clone(), r.id.clone()));
                        names.insert(r.name.to_ascii_lowercase());
                    }
                }
            }
            Err(_) => {
                out.extend(self.judge_all(snapshot, now));
                return out;
            }
        }
        for (host, id) in &keys {
            let findings = snapshot
                .get(host, id)
                .map(|r| self.policy.judge(r))
                .unwrap_or_default();
            self.settle_rules(host, id, snapshot.get(host, id), findings, now, &mut out);
        }
        for name in &names {
            self.settle_duplicates(snapshot, name, now, &mut out);
        }
        self.current.revision = snapshot.revision();
        out
    }

    /// Judges every record and every name.
    fn judge_all(&mut self, snapshot: &Snapshot, now: SystemTime) -> Vec<Event> {
        self.judged_once = true;
        let mut out = Vec::new();
        self.settle_nodes(snapshot, now, &mut out);
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        let mut names: BTreeSet<String> = self.duplicates.keys().cloned().collect();
        for r in snapshot.records() {
            seen.insert((r.host.clone(), r.id.clone()));
            names.insert(r.name.to_ascii_lowercase());
            let findings = self.policy.judge(r);
            self.settle_rules(&r.host, &r.id, Some(r), findings, now, &mut out);
        }
        // Records that are gone: their rule violations end.
        let gone: BTreeSet<(String, String)> = self
            .current
            .by_key
            .keys()
            .map(|(h, i, _)| (h.clone(), i.clone()))
            .filter(|k| !seen.contains(k))
            .collect();
        for (host, id) in gone {
            self.settle_rules(&host, &id, None, Vec::new(), now, &mut out);
        }
        for name in &names {
            self.settle_duplicates(snapshot, name, now, &mut out);
        }
        self.current.revision = snapshot.revision();
        out
    }

    /// Makes the rule violations of one record (duplicates aside) those of
    /// `findings`.
    fn settle_rules(
        &mut self,
        host: &str,
        id: &str,
        record: Option<&Arc<Record>>,
        findings: Vec<Finding>,
        now: SystemTime,
        out: &mut Vec<Event>,
    ) {
        let existing: Vec<Key> = self
            .current
            .by_key
            .range((host.to_owned(), id.to_owned(), String::new())..)
            .take_while(|((h, i, _), _)| h == host && i == id)
            .filter(|((_, _, rule), _)| rule != DUPLICATE_RULE && rule != DUPLICATE_NODE_RULE)
            .map(|(k, _)| k.clone())
            .collect();
        for key in existing {
            if !findings.iter().any(|f| f.rule == key.2) {
                self.end(&key, out);
            }
        }
        let Some(record) = record else { return };
        for f in findings {
            let violation = Violation {
                rule: f.rule,
                severity: f.severity,
                host: host.to_owned(),
                id: id.to_owned(),
                name: record.name.clone(),
                why: f.why,
                since: now,
                exclude_from_dns: f.exclude_from_dns,
            };
            self.start_or_refresh(violation, out);
        }
    }

    /// Makes the duplicate violations of one name match its holders now: a
    /// duplicate is a name that DNS would answer from several hosts.
    fn settle_duplicates(
        &mut self,
        snapshot: &Snapshot,
        name: &str,
        now: SystemTime,
        out: &mut Vec<Event>,
    ) {
        let holders: Vec<&Arc<Record>> = snapshot
            .lookup(name)
            .iter()
            .filter(|r| r.name.eq_ignore_ascii_case(name) && r.is_resolvable())
            .collect();
        let hosts: BTreeSet<&str> = holders.iter().map(|r| r.host.as_str()).collect();
        let now_held: BTreeSet<(String, String)> = if hosts.len() > 1 {
            holders
                .iter()
                .map(|r| (r.host.clone(), r.id.clone()))
                .collect()
        } else {
            BTreeSet::new()
        };
        let before = self.duplicates.remove(name).unwrap_or_default();
        for (host, id) in before.difference(&now_held) {
            self.end(&(host.clone(), id.clone(), DUPLICATE_RULE.to_owned()), out);
        }
        for r in holders
            .iter()
            .filter(|r| now_held.contains(&(r.host.clone(), r.id.clone())))
        {
            let others: Vec<&str> = hosts.iter().copied().filter(|h| *h != r.host).collect();
            let violation = Violation {
                rule: DUPLICATE_RULE.to_owned(),
                severity: self.policy.duplicates().severity,
                host: r.host.clone(),
                id: r.id.clone(),
                name: r.name.clone(),
                why: format!("name {:?} is also on host {}", r.name, others.join(", ")),
                since: now,
                exclude_from_dns: false,
            };
            self.start_or_refresh(violation, out);
        }
        if !now_held.is_empty() {
            self.duplicates.insert(name.to_owned(), now_held);
        }
    }

    /// Makes the `duplicate-node` violations those of the node names the
    /// members list shows in conflict (several running agents, one name).
    fn settle_nodes(&mut self, snapshot: &Snapshot, now: SystemTime, out: &mut Vec<Event>) {
        let mut claimants: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for m in snapshot.members() {
            if m.liveness == Liveness::Conflict {
                claimants.entry(m.name.as_str()).or_default().push(format!(
                    "{} (generation {}{})",
                    m.gossip_addr,
                    m.generation,
                    if m.visible { ", serving" } else { "" }
                ));
            }
        }
        let now_conflicted: BTreeSet<String> = claimants.keys().map(|n| (*n).to_owned()).collect();
        let over: Vec<String> = self
            .conflicted
            .difference(&now_conflicted)
            .cloned()
            .collect();
        for name in over {
            self.end(&(name, String::new(), DUPLICATE_NODE_RULE.to_owned()), out);
        }
        for (name, agents) in claimants {
            let violation = Violation {
                rule: DUPLICATE_NODE_RULE.to_owned(),
                severity: crate::Severity::Error,
                host: name.to_owned(),
                id: String::new(),
                name: name.to_owned(),
                why: format!(
                    "node name {name:?} is claimed by {} running agents: {}; only the first generation's records are served",
                    agents.len(),
                    agents.join(", ")
                ),
                since: now,
                exclude_from_dns: false,
            };
            self.start_or_refresh(violation, out);
        }
        self.conflicted = now_conflicted;
    }

    fn start_or_refresh(&mut self, mut violation: Violation, out: &mut Vec<Event>) {
        let key = (
            violation.host.clone(),
            violation.id.clone(),
            violation.rule.clone(),
        );
        let record_key = RecordKey {
            host: Arc::from(violation.host.as_str()),
            id: Arc::from(violation.id.as_str()),
        };
        match self.current.by_key.get(&key) {
            Some(old) => {
                violation.since = old.since;
                if *old == violation {
                    return;
                }
            }
            None => out.push(Event::Started(violation.clone())),
        }
        if violation.exclude_from_dns {
            self.current.hidden.insert(record_key);
        }
        self.current.by_key.insert(key, violation);
    }

    fn end(&mut self, key: &Key, out: &mut Vec<Event>) {
        if let Some(old) = self.current.by_key.remove(key) {
            if old.exclude_from_dns {
                let still_hidden = self
                    .current
                    .by_key
                    .range((key.0.clone(), key.1.clone(), String::new())..)
                    .take_while(|((h, i, _), _)| *h == key.0 && *i == key.1)
                    .any(|(_, v)| v.exclude_from_dns);
                if !still_hidden {
                    self.current.hidden.remove(&RecordKey {
                        host: Arc::from(key.0.as_str()),
                        id: Arc::from(key.1.as_str()),
                    });
                }
            }
            out.push(Event::Ended(old));
        }
    }

    /// Members whose policy digest (meta `policy`) differs from ours.
    fn note_digests(&mut self, snapshot: &Snapshot) {
        let ours = self.policy.digest();
        self.current.mismatched = snapshot
            .members()
            .iter()
            .filter_map(|m| {
                let theirs = m.meta.get("policy")?;
                (theirs != ours).then(|| (m.name.clone(), theirs.clone()))
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use muster_core::{Address, Change, Source};

    use super::*;

    fn policy() -> Policy {
        Policy::parse(
            Path::new("p.toml"),
            r#"
[[rule]]
name = "owned"
required_labels = ["owner"]
exclude_from_dns = true

[[rule]]
name = "shape"
name_pattern = '[a-z]+-[0-9]+'
"#,
        )
        .unwrap()
    }

    fn record(host: &str, id: &str, name: &str, owner: bool) -> Record {
        let mut r = Record::new(id, name, Source::Static);
        r.host = host.into();
        r.addresses.push(Address {
            network: "static".into(),
            ip: "10.0.0.1".parse().unwrap(),
            local: false,
        });
        if owner {
            r.labels.insert("owner".into(), "ops".into());
        }
        r
    }

    fn names(events: &[Event]) -> Vec<String> {
        let mut out: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::Started(v) => format!("+{}@{} {}", v.name, v.host, v.rule),
                Event::Ended(v) => format!("-{}@{} {}", v.name, v.host, v.rule),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn violations_start_and_end_with_the_changes_that_cause_them() {
        let now = SystemTime::UNIX_EPOCH;
        let mut tracker = Tracker::new(policy());
        let s = Snapshot::new().apply([
            Change::Upsert(record("a", "1", "web-1", true)),
            Change::Upsert(record("a", "2", "Bad_Name", false)),
        ]);
        assert_eq!(
            names(&tracker.update(&s, now)),
            ["+Bad_Name@a owned", "+Bad_Name@a shape"]
        );
        assert!(tracker.violations().hides("a", "2"));
        assert!(!tracker.violations().hides("a", "1"));

        // Fixed label: one violation ends, the other stays (since kept).
        let later = now + std::time::Duration::from_secs(5);
        let s = s.apply([Change::Upsert(record("a", "2", "Bad_Name", true))]);
        assert_eq!(names(&tracker.update(&s, later)), ["-Bad_Name@a owned"]);
        assert!(!tracker.violations().hides("a", "2"));
        let shape = tracker.violations().iter().next().unwrap();
        assert_eq!(shape.since, now);

        // Renamed to fit: the rest ends. Removed: nothing left.
        let s = s.apply([Change::Upsert(record("a", "2", "db-2", true))]);
        assert_eq!(names(&tracker.update(&s, later)), ["-Bad_Name@a shape"]);
        assert!(tracker.violations().is_empty());
        let s = s.apply([Change::Upsert(record("a", "3", "x", true))]);
        assert_eq!(names(&tracker.update(&s, later)), ["+x@a shape"]);
        let s = s.apply([Change::Remove {
            host: "a".into(),
            id: "3".into(),
        }]);
        assert_eq!(names(&tracker.update(&s, later)), ["-x@a shape"]);
    }

    fn member(
        name: &str,
        addr: &str,
        liveness: muster_core::Liveness,
        generation: u64,
    ) -> muster_core::Member {
        muster_core::Member {
            name: name.into(),
            gossip_addr: addr.parse().unwrap(),
            liveness,
            generation,
            records: 1,
            visible: generation == 1,
            meta: Default::default(),
        }
    }

    #[test]
    fn a_node_name_claimed_by_two_running_agents_is_one_duplicate_node_error_until_one_stops() {
        use muster_core::Liveness::{Alive, Conflict};
        let now = SystemTime::UNIX_EPOCH;
        let mut tracker = Tracker::new(policy());
        let s = Snapshot::new().apply([Change::Members(vec![member(
            "a",
            "10.0.0.1:7946",
            Alive,
            1,
        )])]);
        assert!(tracker.update(&s, now).is_empty());
        let s = s.apply([Change::Members(vec![
            member("a", "10.0.0.1:7946", Conflict, 1),
            member("a", "10.0.0.9:7946", Conflict, 2),
        ])]);
        assert_eq!(names(&tracker.update(&s, now)), ["+a@a duplicate-node"]);
        let v = tracker.violations().iter().next().unwrap();
        assert_eq!(v.severity, crate::Severity::Error);
        assert!(
            v.why
                .contains("10.0.0.1:7946 (generation 1, serving), 10.0.0.9:7946 (generation 2)"),
            "{}",
            v.why
        );
        assert!(
            !tracker.violations().hides("a", ""),
            "it hides nothing by itself"
        );
        // Judged again from scratch (a new policy), it is the same one.
        assert!(tracker.set_policy(policy(), &s, now).is_empty());
        let s = s.apply([Change::Members(vec![member(
            "a",
            "10.0.0.1:7946",
            Alive,
            1,
        )])]);
        assert_eq!(names(&tracker.update(&s, now)), ["-a@a duplicate-node"]);
    }

    #[test]
    fn the_same_name_on_two_hosts_is_a_duplicate_for_every_holder() {
        let now = SystemTime::UNIX_EPOCH;
        let mut tracker = Tracker::new(policy());
        let s = Snapshot::new().apply([Change::Upsert(record("a", "1", "web-1", true))]);
        assert!(tracker.update(&s, now).is_empty());
        // Names match in any case, as in DNS.
        let s = s.apply([Change::Upsert(record("b", "9", "WEB-1", true))]);
        let events = tracker.update(&s, now);
        assert_eq!(
            names(&events),
            [
                "+WEB-1@b duplicate-name",
                "+WEB-1@b shape",
                "+web-1@a duplicate-name"
            ]
        );
        let why: Vec<&str> = tracker
            .violations()
            .iter()
            .map(|v| v.why.as_str())
            .collect();
        assert!(why.contains(&"name \"web-1\" is also on host b"), "{why:?}");
        // b's copy goes: the duplicate ends for both.
        let s = s.apply([Change::RemoveHost("b".into())]);
        assert_eq!(
            names(&tracker.update(&s, now)),
            [
                "-WEB-1@b duplicate-name",
                "-WEB-1@b shape",
                "-web-1@a duplicate-name"
            ]
        );
    }

    #[test]
    fn a_new_policy_judges_everything_again() {
        let now = SystemTime::UNIX_EPOCH;
        let mut tracker = Tracker::new(Policy::default());
        let s = Snapshot::new().apply([Change::Upsert(record("a", "1", "web", false))]);
        assert!(tracker.update(&s, now).is_empty());
        assert_eq!(
            names(&tracker.set_policy(policy(), &s, now)),
            ["+web@a owned", "+web@a shape"]
        );
        assert_eq!(
            names(&tracker.set_policy(Policy::default(), &s, now)),
            ["-web@a owned", "-web@a shape"]
        );
    }
}
