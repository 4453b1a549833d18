//! Self-reported records, registered with this agent over gRPC with a TTL.
//!
//! A [`Registry`] handle (cheap to clone, held by the gRPC service as a
//! [`Registrar`]) talks to one task, returned by [`Registry::new`], that
//! owns every registration and publishes it like any other source:
//! [`SourceUpdate::Upsert`] when a record is registered or replaced,
//! [`SourceUpdate::Remove`] when it is deregistered or its TTL lapses
//! without a keep-alive. Because one task makes every change and sends
//! every update, a lapse can never overtake the registration it ends on
//! the channel (no ghost record).
//!
//! **Verdicts.** A registration is kept, and acknowledged to its client,
//! only once the publisher has taken its record: the upsert carries an
//! [`Ack`], and a refusal (too large to gossip, an id another source of
//! this agent holds) comes back to the client as
//! [`RegistrationError::Refused`], with nothing kept. The record is
//! checked against the record rules once, here, after the registry has
//! completed it (prefixed id, host, network names).
//!
//! **Expiry.** The task keeps the deadlines in one sorted set and sleeps
//! until the earliest: one timer whatever the number of registrations, no
//! task per record, no polling. A registration whose deadline has passed
//! is gone even if the timer has not fired yet: every command first
//! expires what is due, so a late KeepAlive gets [`RegistrationError::NotFound`].
//!
//! **Ids.** The client names its registration with an id (the record's
//! name when it gives none) and uses it for KeepAlive and Deregister. The
//! record is published under `reg:<id>` ([`PUBLISHED_ID_PREFIX`]), because
//! the publisher keys a host's records by id alone and refuses an id that
//! another source already holds: a client registering `web-1`, or a
//! container's id (a monitoring agent reporting the names its containers
//! go by), would otherwise block the static record or the container of the
//! same id on this host. Docker ids are hex and static ids are names, so
//! the prefix keeps registrations apart from both; only a static record
//! whose id itself starts with `reg:` could still collide, and the
//! publisher then refuses the later of the two (a registration gets that
//! refusal as its answer). Ids given
//! with the prefix (as a [`Registration`]'s record shows them) are
//! accepted too.
//!
//! **Names.** A registration is not checked against other records of the
//! same name: names may repeat across hosts and sources, and conflicts are
//! for the caller to report (the gRPC service does). Re-registering an id
//! replaces its record and restarts its TTL.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_core::{Record, Registrar, Registration, RegistrationError, Source};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Ack, SourceUpdate};

/// Shortest TTL a registration may ask for.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest TTL a registration may ask for (a day).
pub const MAX_TTL: Duration = Duration::from_secs(86_400);
/// Most registrations one agent holds at once: each is gossiped to every
/// agent, so a runaway client must not grow the directory without bound.
pub const MAX_REGISTRATIONS: usize = 10_000;
/// What a registration's id is prefixed with in the published record.
pub const PUBLISHED_ID_PREFIX: &str = "reg:";
/// Network name given to registered addresses that name none.
pub const REGISTERED_NETWORK: &str = "registered";

/// Commands waiting for the registry task; callers wait beyond that.
const COMMAND_QUEUE: usize = 64;

/// A handle on the records registered with this agent. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    /// The `host` of every registered record.
    node_name: Arc<str>,
    commands: mpsc::Sender<Command>,
}

enum Command {
    Register {
        /// The client's id (unprefixed).
        id: String,
        record: Box<Record>,
        ttl: Duration,
        reply: oneshot::Sender<Result<SystemTime, RegistrationError>>,
    },
    KeepAlive {
        id: String,
        ttl: Option<Duration>,
        reply: oneshot::Sender<Result<SystemTime, RegistrationError>>,
    },
    Deregister {
        id: String,
        reply: oneshot::Sender<Result<(), RegistrationError>>,
    },
}

impl Registry {
    /// A registry publishing records of host `node_name` on `updates`, and
    /// the task that owns them; spawn it. The task ends when `shutdown` is
    /// cancelled, or once every handle is dropped and the last
    /// registration has lapsed.
    pub fn new(
        node_name: impl Into<String>,
        updates: mpsc::Sender<SourceUpdate>,
        shutdown: CancellationToken,
    ) -> (Registry, impl Future<Output = ()> + Send) {
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let registry = Registry {
            node_name: node_name.into().into(),
            commands,
        };
        let task = Registrations {
            updates,
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
        .run(receiver, shutdown);
        (registry, task)
    }

    /// The node name registered records are published under.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The id the record of registration `id` is published under
    /// (`reg:<id>`); `id` may carry the prefix already.
    pub fn published_id(id: &str) -> String {
        format!("{PUBLISHED_ID_PREFIX}{}", client_id(id))
    }

    /// `record` under the id, host and source it is published with: its id
    /// (its name when it has none) prefixed, this agent as host.
    fn publish_form(&self, mut record: Record) -> Record {
        if record.id.is_empty() {
            record.id.clone_from(&record.name);
        }
        record.id = Registry::published_id(&record.id);
        record.host = self.node_name.to_string();
        record.source = Source::Registered;
        record
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, RegistrationError>>) -> Command,
    ) -> Result<T, RegistrationError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| RegistrationError::Stopped)?;
        answer.await.map_err(|_| RegistrationError::Stopped)?
    }
}

#[async_trait::async_trait]
impl Registrar for Registry {
    fn as_published(&self, record: &Record) -> Record {
        self.publish_form(record.clone())
    }

    /// Publishes `record` from this agent until `ttl` passes without a
    /// keep-alive. Its id defaults to its name; host, source and (when
    /// unset) the start time are filled in, and addresses without a
    /// network get [`REGISTERED_NETWORK`]. Re-registering an id replaces
    /// its record and restarts its TTL.
    async fn register(
        &self,
        record: Record,
        ttl: Duration,
    ) -> Result<Registration, RegistrationError> {
        check_ttl(ttl)?;
        let mut record = self.publish_form(record);
        let id = client_id(&record.id).to_owned();
        if record.started_at.is_none() {
            record.started_at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs() as i64);
        }
        for address in &mut record.addresses {
            if address.network.is_empty() {
                address.network = REGISTERED_NETWORK.to_owned();
            }
        }
        record.validate()?;
        if record.addresses.is_empty() {
            return Err(RegistrationError::NoAddress);
        }
        let expires_at = self
            .call(|reply| Command::Register {
                id,
                record: Box::new(record.clone()),
                ttl,
                reply,
            })
            .await?;
        Ok(Registration { record, expires_at })
    }

    /// Restarts the TTL of registration `id`, with a new TTL when `ttl` is
    /// given (its own otherwise); returns when it now lapses.
    async fn keep_alive(
        &self,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<SystemTime, RegistrationError> {
        if let Some(ttl) = ttl {
            check_ttl(ttl)?;
        }
        let id = client_id(id).to_owned();
        self.call(|reply| Command::KeepAlive { id, ttl, reply })
            .await
    }

    /// Withdraws registration `id` now.
    async fn deregister(&self, id: &str) -> Result<(), RegistrationError> {
        let id = client_id(id).to_owned();
        self.call(|reply| Command::Deregister { id, reply }).await
    }
}

/// The id a client means: its own, with the published prefix taken off.
fn client_id(id: &str) -> &str {
    id.strip_prefix(PUBLISHED_ID_PREFIX).unwrap_or(id)
}

fn check_ttl(ttl: Duration) -> Result<(), RegistrationError> {
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(())
    } else {
        Err(RegistrationError::BadTtl {
            seconds: ttl.as_secs(),
            min: MIN_TTL.as_secs(),
            max: MAX_TTL.as_secs(),
        })
    }
}

/// What the registry task owns.
struct Registrations {
    updates: mpsc::Sender<SourceUpdate>,
    /// By the client's id.
    entries: HashMap<String, Entry>,
    /// Every entry's `(deadline, client id)`, earliest first.
    deadlines: BTreeSet<(Instant, String)>,
}

struct Entry {
    /// As published (prefixed id).
    record: Record,
    ttl: Duration,
    deadline: Instant,
}

impl Registrations {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let mut handles_left = true;
        loop {
            self.expire_due().await;
            let next = self.deadlines.first().map(|(at, _)| *at);
            if !handles_left && next.is_none() {
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                command = commands.recv(), if handles_left => match command {
                    Some(command) => self.handle(command).await,
                    None => handles_left = false,
                },
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Register {
                id,
                record,
                ttl,
                reply,
            } => {
                let _ = reply.send(self.register(id, *record, ttl).await);
            }
            Command::KeepAlive { id, ttl, reply } => {
                let answer = match self.entries.remove(&id) {
                    Some(entry) => {
                        self.deadlines.remove(&(entry.deadline, id.clone()));
                        Ok(self.set_deadline(&id, ttl.unwrap_or(entry.ttl), entry.record))
                    }
                    None => Err(RegistrationError::NotFound(id)),
                };
                let _ = reply.send(answer);
            }
            Command::Deregister { id, reply } => {
                let answer = match self.entries.remove(&id) {
                    Some(entry) => {
                        self.deadlines.remove(&(entry.deadline, id));
                        info!(id = %entry.record.id, "deregistered");
                        self.withdraw(entry.record).await;
                        Ok(())
                    }
                    None => Err(RegistrationError::NotFound(id)),
                };
                let _ = reply.send(answer);
            }
        }
    }

    async fn register(
        &mut self,
        id: String,
        record: Record,
        ttl: Duration,
    ) -> Result<SystemTime, RegistrationError> {
        if self.entries.len() >= MAX_REGISTRATIONS && !self.entries.contains_key(&id) {
            return Err(RegistrationError::Full {
                limit: MAX_REGISTRATIONS,
            });
        }
        // Kept only once the publisher has taken it: a refused record must
        // be neither acknowledged nor kept alive.
        let (ack, verdict) = Ack::new();
        self.publish(SourceUpdate::Upsert {
            source: Source::Registered,
            record: Box::new(record.clone()),
            ack: Some(ack),
        })
        .await;
        verdict.await.map_err(|_| RegistrationError::Stopped)??;
        let expires_at = self.set_deadline(&id, ttl, record.clone());
        info!(id = %record.id, name = %record.name, ttl = ?ttl, "registered");
        Ok(expires_at)
    }

    /// Stores (or replaces) entry `id` with a deadline `ttl` from now, and
    /// returns that deadline on the wall clock.
    fn set_deadline(&mut self, id: &str, ttl: Duration, record: Record) -> SystemTime {
        let deadline = Instant::now() + ttl;
        if let Some(old) = self.entries.insert(
            id.to_owned(),
            Entry {
                record,
                ttl,
                deadline,
            },
        ) {
            self.deadlines.remove(&(old.deadline, id.to_owned()));
        }
        self.deadlines.insert((deadline, id.to_owned()));
        SystemTime::now() + ttl
    }

    /// Withdraws every registration whose deadline has passed.
    async fn expire_due(&mut self) {
        let now = Instant::now();
        while let Some((deadline, _)) = self.deadlines.first() {
            if *deadline > now {
                break;
            }
            let (_, id) = self.deadlines.pop_first().expect("first() was Some");
            if let Some(entry) = self.entries.remove(&id) {
                info!(id = %entry.record.id, name = %entry.record.name, "registration lapsed");
                self.withdraw(entry.record).await;
            }
        }
    }

    async fn withdraw(&self, record: Record) {
        self.publish(SourceUpdate::Remove {
            source: Source::Registered,
            id: record.id,
        })
        .await;
    }

    async fn publish(&self, update: SourceUpdate) {
        if self.updates.send(update).await.is_err() {
            // Only at shutdown: the agent stops forwarding before the
            // registry's handles are gone.
            warn!("registration update dropped: no one forwards source updates");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use muster_core::{Address, MAX_ADDRESSES, PublishError, RecordError, Verdict};

    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn record(name: &str, ip: &str) -> Record {
        let mut r = Record::new("", name, Source::Static);
        r.addresses.push(Address {
            network: String::new(),
            ip: ip.parse::<IpAddr>().expect("test address"),
            local: false,
        });
        r
    }

    /// A registry whose updates are answered as a publisher would, with
    /// `verdict`, then passed on to the returned receiver; and its task.
    fn start_judged(
        verdict: fn(&Record) -> Verdict,
    ) -> (
        Registry,
        mpsc::UnboundedReceiver<SourceUpdate>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, mut rx) = mpsc::channel::<SourceUpdate>(16);
        let (out, judged) = mpsc::unbounded_channel();
        let (registry, task) = Registry::new("a", tx, CancellationToken::new());
        tokio::spawn(async move {
            while let Some(mut update) = rx.recv().await {
                if let SourceUpdate::Upsert { record, ack, .. } = &mut update
                    && let Some(ack) = ack.take()
                {
                    ack.send(verdict(record));
                }
                let _ = out.send(update);
            }
        });
        (registry, judged, tokio::spawn(task))
    }

    fn start() -> (Registry, mpsc::UnboundedReceiver<SourceUpdate>) {
        let (registry, updates, _task) = start_judged(|_| Ok(()));
        (registry, updates)
    }

    fn upserted(update: Option<SourceUpdate>) -> Record {
        match update {
            Some(SourceUpdate::Upsert {
                source: Source::Registered,
                record,
                ..
            }) => *record,
            other => panic!("expected an upsert of a registered record, got {other:?}"),
        }
    }

    fn removed(update: Option<SourceUpdate>) -> String {
        match update {
            Some(SourceUpdate::Remove {
                source: Source::Registered,
                id,
            }) => id,
            other => panic!("expected a removal of a registered record, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_registration_is_published_under_a_prefixed_id_with_this_host() {
        let (registry, mut updates) = start();
        let before = SystemTime::now();
        let reg = registry
            .register(record("mon-1", "10.0.0.9"), TTL)
            .await
            .unwrap();
        assert_eq!(reg.record.id, "reg:mon-1");
        assert_eq!(reg.record.host, "a");
        assert_eq!(reg.record.source, Source::Registered);
        assert_eq!(reg.record.addresses[0].network, REGISTERED_NETWORK);
        assert!(reg.record.started_at.is_some());
        assert!(reg.expires_at >= before + TTL);
        assert_eq!(upserted(updates.recv().await), reg.record);
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_id_is_kept_and_a_prefixed_one_means_the_same() {
        let (registry, mut updates) = start();
        let mut r = record("mon-1", "10.0.0.9");
        r.id = "container-abc".into();
        let reg = registry.register(r, TTL).await.unwrap();
        assert_eq!(reg.record.id, "reg:container-abc");
        upserted(updates.recv().await);
        registry
            .keep_alive("reg:container-abc", None)
            .await
            .unwrap();
        registry.deregister("container-abc").await.unwrap();
        assert_eq!(removed(updates.recv().await), "reg:container-abc");
    }

    #[tokio::test(start_paused = true)]
    async fn a_registration_lapses_after_its_ttl_without_keep_alive() {
        let (registry, mut updates) = start();
        registry
            .register(record("mon-1", "10.0.0.9"), TTL)
            .await
            .unwrap();
        upserted(updates.recv().await);
        let registered = Instant::now();
        assert_eq!(removed(updates.recv().await), "reg:mon-1");
        assert_eq!(registered.elapsed(), TTL);
        assert_eq!(
            registry.keep_alive("mon-1", None).await,
            Err(RegistrationError::NotFound("mon-1".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_restarts_the_ttl() {
        let (registry, mut updates) = start();
        registry
            .register(record("mon-1", "10.0.0.9"), TTL)
            .await
            .unwrap();
        upserted(updates.recv().await);
        let start = Instant::now();
        tokio::time::sleep(TTL - Duration::from_secs(1)).await;
        registry.keep_alive("mon-1", None).await.unwrap();
        assert_eq!(removed(updates.recv().await), "reg:mon-1");
        assert_eq!(start.elapsed(), 2 * TTL - Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_with_a_ttl_replaces_the_registrations_own() {
        let (registry, mut updates) = start();
        registry
            .register(record("mon-1", "10.0.0.9"), TTL)
            .await
            .unwrap();
        upserted(updates.recv().await);
        let start = Instant::now();
        registry
            .keep_alive("mon-1", Some(Duration::from_secs(60)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(59)).await;
        // The new TTL sticks: a keep-alive without one restarts 60 s.
        registry.keep_alive("mon-1", None).await.unwrap();
        assert_eq!(removed(updates.recv().await), "reg:mon-1");
        assert_eq!(start.elapsed(), Duration::from_secs(59 + 60));
    }

    #[tokio::test(start_paused = true)]
    async fn re_registering_an_id_replaces_the_record_and_restarts_the_ttl() {
        let (registry, mut updates) = start();
        registry
            .register(record("mon-1", "10.0.0.9"), TTL)
            .await
            .unwrap();
        upserted(updates.recv().await);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        registry
            .register(record("mon-1", "10.0.0.10"), TTL)
            .await
            .unwrap();
        let replaced = upserted(updates.recv().await);
        assert_eq!(replaced.addresses[0].ip.to_string(), "10.0.0.10");
        // One removal, at the second registration's deadline, not the first's.
        assert_eq!(removed(updates.recv().await), "reg:mon-1");
        assert_eq!(start.elapsed(), Duration::from_secs(5) + TTL);
    }

    #[tokio::test(start_paused = true)]
    async fn deregister_withdraws_at_once_and_then_knows_nothing() {
        let (registry, mut updates) = start();
        registry
            .register(record("mon-1", "10.0.0.9"), TTL)
            .await
            .unwrap();
        upserted(updates.recv().await);
        registry.deregister("mon-1").await.unwrap();
        assert_eq!(removed(updates.recv().await), "reg:mon-1");
        assert_eq!(
            registry.deregister("mon-1").await,
            Err(RegistrationError::NotFound("mon-1".into()))
        );
        // Nothing more is published: no late lapse of the withdrawn entry.
        tokio::time::sleep(2 * TTL).await;
        assert!(updates.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn many_registrations_lapse_in_deadline_order() {
        let (registry, mut updates) = start();
        for (name, secs) in [("c", 30), ("a", 10), ("b", 20)] {
            registry
                .register(record(name, "10.0.0.9"), Duration::from_secs(secs))
                .await
                .unwrap();
            upserted(updates.recv().await);
        }
        let mut lapsed = Vec::new();
        for _ in 0..3 {
            lapsed.push(removed(updates.recv().await));
        }
        assert_eq!(lapsed, ["reg:a", "reg:b", "reg:c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_registrations_are_refused_and_publish_nothing() {
        let (registry, mut updates) = start();
        let check = |r: Record, ttl: Duration| {
            let registry = registry.clone();
            async move { registry.register(r, ttl).await.unwrap_err() }
        };
        assert_eq!(
            check(record("mon-1", "10.0.0.9"), Duration::ZERO).await,
            RegistrationError::BadTtl {
                seconds: 0,
                min: 1,
                max: 86_400
            }
        );
        assert_eq!(
            check(
                record("mon-1", "10.0.0.9"),
                MAX_TTL + Duration::from_secs(1)
            )
            .await,
            RegistrationError::BadTtl {
                seconds: 86_401,
                min: 1,
                max: 86_400
            }
        );
        assert!(matches!(
            check(record("mon_1", "10.0.0.9"), TTL).await,
            RegistrationError::BadRecord(RecordError::BadName { .. })
        ));
        assert!(matches!(
            check(record("", "10.0.0.9"), TTL).await,
            RegistrationError::BadRecord(RecordError::BadName { .. })
        ));
        let mut no_address = record("mon-1", "10.0.0.9");
        no_address.addresses.clear();
        assert_eq!(check(no_address, TTL).await, RegistrationError::NoAddress);
        let mut too_many = record("mon-1", "10.0.0.9");
        too_many.addresses = vec![too_many.addresses[0].clone(); MAX_ADDRESSES + 1];
        assert!(matches!(
            check(too_many, TTL).await,
            RegistrationError::BadRecord(RecordError::TooMany {
                what: "addresses",
                ..
            })
        ));
        let mut long_id = record("mon-1", "10.0.0.9");
        long_id.id = "x".repeat(126);
        assert!(matches!(
            check(long_id, TTL).await,
            RegistrationError::BadRecord(RecordError::BadId(_))
        ));
        assert_eq!(
            registry.keep_alive("mon-1", Some(Duration::ZERO)).await,
            Err(RegistrationError::BadTtl {
                seconds: 0,
                min: 1,
                max: 86_400
            })
        );
        assert!(updates.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_ids_are_not_found() {
        let (registry, _updates) = start();
        assert_eq!(
            registry.keep_alive("nope", None).await,
            Err(RegistrationError::NotFound("nope".into()))
        );
        assert_eq!(
            registry.deregister("nope").await,
            Err(RegistrationError::NotFound("nope".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_when_the_handles_are_gone_and_the_last_registration_lapsed() {
        let (registry, mut updates, task) = start_judged(|_| Ok(()));
        registry
            .register(record("mon-1", "10.0.0.9"), TTL)
            .await
            .unwrap();
        drop(registry);
        upserted(updates.recv().await);
        // Still withdrawn on time, then the task is done.
        assert_eq!(removed(updates.recv().await), "reg:mon-1");
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_registry_says_so() {
        let (tx, _updates) = mpsc::channel(16);
        let (registry, task) = Registry::new("a", tx, CancellationToken::new());
        drop(task);
        assert_eq!(
            registry.register(record("mon-1", "10.0.0.9"), TTL).await,
            Err(RegistrationError::Stopped)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_registration_the_publisher_refuses_is_refused_and_not_kept() {
        let (registry, mut updates, _task) = start_judged(|r| {
            Err(PublishError::IdTaken {
                id: r.id.clone(),
                owner: Source::Static,
            })
        });
        assert_eq!(
            registry.register(record("mon-1", "10.0.0.9"), TTL).await,
            Err(RegistrationError::Refused(PublishError::IdTaken {
                id: "reg:mon-1".into(),
                owner: Source::Static
            }))
        );
        upserted(updates.recv().await);
        // Nothing to keep alive, and nothing withdrawn when its TTL would
        // have passed.
        assert_eq!(
            registry.keep_alive("mon-1", None).await,
            Err(RegistrationError::NotFound("mon-1".into()))
        );
        tokio::time::sleep(TTL * 2).await;
        assert!(updates.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_replacement_keeps_the_registration_it_would_have_replaced() {
        let (registry, mut updates, _task) = start_judged(|r| {
            if r.addresses[0].ip.to_string() == "10.0.0.66" {
                Err(PublishError::TooLarge {
                    id: r.id.clone(),
                    bytes: 5000,
                    limit: 4096,
                })
            } else {
                Ok(())
            }
        });
        let first = registry
            .register(record("mon-1", "10.0.0.9"), TTL)
            .await
            .unwrap();
        upserted(updates.recv().await);
        assert!(matches!(
            registry.register(record("mon-1", "10.0.0.66"), TTL).await,
            Err(RegistrationError::Refused(PublishError::TooLarge { .. }))
        ));
        upserted(updates.recv().await);
        // The first registration still stands, on its own TTL.
        assert!(registry.keep_alive("mon-1", None).await.is_ok());
        assert_eq!(removed(updates.recv().await), first.record.id);
    }
}
