//! What judging costs: one record changing in a directory of 50,000
//! records, the tracker's incremental update against the index update that
//! carries the same change (the baseline), and a full judgement of the
//! whole directory for scale. In process, release build, median of 2,000
//! changes.
//!
//! Run: `cargo bench -p muster-policy --bench judge`

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use muster_core::{Address, Change, Record, Snapshot, Source};
use muster_policy::{Policy, Tracker};

const RECORDS: usize = 50_000;
const CHANGES: usize = 2_000;

fn record(i: usize, owner: bool) -> Record {
    let mut r = Record::new(
        format!("id-{i}"),
        format!("billing-batch-{i}"),
        Source::Static,
    );
    r.host = format!("host-{}", i % 100);
    r.addresses.push(Address {
        network: "static".into(),
        ip: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
            .parse()
            .unwrap(),
        local: false,
    });
    r.labels.insert("system".into(), "billing".into());
    if owner {
        r.labels.insert("owner".into(), "ops".into());
    }
    r
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let policy = Policy::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/policy.toml"
    )))
    .expect("deploy/policy.toml");
    let mut snapshot = Snapshot::new().apply((0..RECORDS).map(|i| Change::Upsert(record(i, true))));
    let mut tracker = Tracker::new(policy);
    let start = Instant::now();
    tracker.update(&snapshot, SystemTime::now());
    let full = start.elapsed();

    let (mut apply, mut judge) = (Vec::new(), Vec::new());
    for k in 0..CHANGES {
        // Break the `owned` rule of one record, then fix it.
        let i = (k / 2 * 7919) % RECORDS;
        let change = Change::Upsert(record(i, k % 2 == 1));
        let start = Instant::now();
        let next = snapshot.apply([change]);
        apply.push(start.elapsed());
        let start = Instant::now();
        let events = tracker.update(&next, SystemTime::now());
        judge.push(start.elapsed());
        assert!(!events.is_empty());
        snapshot = next;
    }
    let (apply, judge) = (median(apply), median(judge));
    println!(
        "## One record changes in a directory of {RECORDS} records (deploy/policy.toml), median of {CHANGES}\n"
    );
    println!("| work | time | vs the index update |");
    println!("|---|---|---|");
    println!(
        "| index update, `Snapshot::apply` (baseline) | {:.1} µs | 1.00 |",
        apply.as_secs_f64() * 1e6
    );
    println!(
        "| policy: judge the change (`Tracker::update`) | {:.1} µs | {:.2} |",
        judge.as_secs_f64() * 1e6,
        judge.as_secs_f64() / apply.as_secs_f64()
    );
    println!(
        "| policy: judge all {RECORDS} records (start, new policy) | {:.1} ms | {:.0} |",
        full.as_secs_f64() * 1e3,
        full.as_secs_f64() / apply.as_secs_f64()
    );
}
