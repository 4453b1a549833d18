//! `muster agent`: wires sources, gossip, DNS, gRPC and HTTP together and
//! runs them until SIGINT or SIGTERM.
//!
//! Shutdown is one signal: every server and task gets the same
//! [`CancellationToken`], and the agent cancels it once, then waits for all
//! of them together for at most [`DRAIN`], naming any that did not stop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use muster_api::{
    DirectoryService, GrpcMetrics, GrpcServer, HttpState, ServerTls, register_directory_metrics,
    serve_http,
};
use muster_dns::{DnsConfig, DnsMetrics, DnsServer, Handler};
use muster_gossip::{
    Gossip, GossipConfig, GossipKeys, GossipMetrics, Keyring, PublishReport, Publisher,
};
use muster_policy::{Policy, PolicyEngine};
use muster_sources::SourceUpdate;
use muster_sources::docker::{DockerMetrics, DockerSource, DockerStatus};
use muster_sources::registry::Registry;
use muster_sources::static_file::{self, StaticFileSource};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::AgentConfig;

/// How long the agent's tasks get, together, to stop on SIGTERM or SIGINT:
/// a stuck peer or client must not keep the process from exiting.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long chitchat keeps a dead node's state and deleted keys before
/// forgetting them. Long enough for a partitioned node to catch up on
/// deletions; short enough that dead nodes do not pile up in the digest.
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    // A bad static file stops start-up: better no agent than a wrong one.
    let initial_static = match &config.static_file {
        Some(path) => Some(static_file::load(path)?),
        None => None,
    };

    // Secrets readable by every user are worth a warning, not a refusal.
    for path in [
        config.gossip_key_file.as_ref(),
        config.api_token_file.as_ref(),
        config.grpc_tls.as_ref().map(|t| &t.key),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(why) = crate::config::too_open(path) {
            warn!("{why}");
        }
    }

    // A bad gossip key file stops start-up too.
    let gossip_keys = match &config.gossip_key_file {
        Some(path) => Some(GossipKeys::new(Keyring::load(path)?)),
        None => None,
    };
    match &gossip_keys {
        Some(keys) => {
            info!(keys = ?keys.ids(), "gossip is sealed; the first key seals, every key opens")
        }
        None => warn!(
            gossip = %config.gossip_addr,
            "GOSSIP IS NOT ENCRYPTED OR AUTHENTICATED: whoever can send a datagram to the gossip \
             address can rewrite the directory. Make a key with `muster keygen > FILE` and give \
             every agent --gossip-key-file FILE"
        ),
    }

    // So does bad TLS material.
    let grpc_tls = match &config.grpc_tls {
        Some(files) => Some(Arc::new(ServerTls::load(files.clone())?)),
        None => None,
    };

    // So does a bad token file.
    let write_token = match &config.api_token_file {
        Some(path) => Some(crate::config::read_token(path)?),
        None => None,
    };

    // So does a bad naming policy.
    let policy = match &config.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };

    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_millis() as u64;
    let meta = BTreeMap::from([
        ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("grpc_addr".to_owned(), config.grpc_addr.to_string()),
        ("dns_addr".to_owned(), config.dns_addr.to_string()),
        ("http_addr".to_owned(), config.http_addr.to_string()),
    ]);
    let shutdown = CancellationToken::new();
    let mut tasks = Tasks::default();
    let gossip_metrics = GossipMetrics::default();
    let gossip = Gossip::start(
        GossipConfig {
            node_name: config.node_name.clone(),
            generation,
            cluster_id: config.cluster_id.clone(),
            listen_addr: config.gossip_addr,
            advertise_addr: config.advertise_addr,
            seeds: config.join.clone(),
            gossip_interval: config.gossip_interval,
            failure_detection: config.failure_detection,
            phi_threshold: config.phi_threshold,
            dead_grace: config.dead_grace,
            forget_after: FORGET_AFTER,
            meta,
            // Registrations do not outlive the agent (their owners register
            // again), so readiness waits only for the file and the engine.
            sources: [
                config
                    .static_file
                    .as_ref()
                    .map(|_| muster_core::Source::Static),
                config.docker.as_ref().map(|_| muster_core::Source::Docker),
            ]
            .into_iter()
            .flatten()
            .collect::<BTreeSet<_>>(),
            metrics: gossip_metrics.clone(),
            keys: gossip_keys.clone(),
            mtu: config.gossip_mtu,
            receive_loss: 0.0,
        },
        &shutdown,
    )
    .await?;
    let directory = gossip.directory();
    gossip.publisher().set_meta("policy", policy.digest()).await;
    info!(
        digest = policy.digest(),
        rules = policy.rules().len(),
        "naming policy loaded"
    );
    let (policy_engine, policy_task) = PolicyEngine::start(
        policy,
        directory.clone(),
        gossip.revisions(),
        shutdown.clone(),
    );
    tasks.spawn("naming policy", policy_task);

    // Every metric, for /metrics.
    let (dns_metrics, docker_metrics, grpc_metrics) = (
        DnsMetrics::default(),
        DockerMetrics::default(),
        GrpcMetrics::default(),
    );
    let mut metrics = prometheus_client::registry::Registry::default();
    gossip_metrics.register(&mut metrics);
    if let Some(keys) = &gossip_keys {
        keys.register(&mut metrics);
    }
    dns_metrics.register(&mut metrics);
    docker_metrics.register(&mut metrics);
    grpc_metrics.register(&mut metrics);
    register_directory_metrics(&mut metrics, directory.clone(), policy_engine.judged());
    let metrics = Arc::new(metrics);

    let dns = DnsServer::bind(
        config.dns_addr,
        Handler::new(
            &DnsConfig {
                zone: config.zone.clone(),
                ttl: config.dns_ttl,
                node_name: config.node_name.clone(),
                forward_to: config.dns_forward.clone(),
                reverse_zones: config.reverse_zones.clone(),
            },
            policy_engine.judged(),
        )?
        .with_metrics(dns_metrics)
        .with_rate_limit(config.dns_rate_limit)
        .with_max_tcp_connections(config.dns_max_tcp_connections),
        shutdown.clone(),
    )
    .await?;
    let dns_addr = dns.local_addr();
    tasks.spawn("DNS server", dns.stopped());

    // Sources end when the token is cancelled and drop their senders; the
    // forwarder then publishes what is left and ends.
    let (updates_tx, updates_rx) = mpsc::channel::<SourceUpdate>(64);
    tasks.spawn("source forwarding", forward(updates_rx, gossip.publisher()));
    let (registry, registrations) = Registry::new(
        config.node_name.clone(),
        updates_tx.clone(),
        shutdown.clone(),
    );
    tasks.spawn("registry", registrations);
    let grpc = GrpcServer::bind(config.grpc_addr).await?;
    let grpc_addr = grpc.local_addr();
    let mut service = DirectoryService::new(directory.clone(), gossip.revisions(), generation)
        .with_last_heard(gossip.last_heard())
        .with_registrar(Arc::new(registry))
        .with_policy(policy_engine.clone())
        .with_max_watchers(config.max_watchers)
        .with_register_conflicts(config.register_conflicts);
    if let Some(token) = &write_token {
        service = service.with_write_token(token);
    }
    let grpc_serving = grpc.serve(
        service,
        grpc_metrics,
        grpc_tls.clone(),
        shutdown.clone().cancelled_owned(),
    );
    tasks.spawn("gRPC server", async {
        if let Err(e) = grpc_serving.await {
            warn!(error = %e, "gRPC server stopped with an error");
        }
    });
    let (http_addr, http) = serve_http(
        config.http_addr,
        HttpState {
            node_name: config.node_name.clone(),
            directory: directory.clone(),
            judged: policy_engine.judged(),
            metrics,
            heard: gossip.last_heard(),
        },
        shutdown.clone().cancelled_owned(),
    )
    .await?;
    tasks.spawn("HTTP server", async {
        if let Err(e) = http.await {
            warn!(error = %e, "HTTP server stopped with an error");
        }
    });

    let reload = Arc::new(Notify::new());
    if let (Some(path), Some(records)) = (&config.static_file, initial_static) {
        info!(path = %path.display(), records = records.len(), "static records loaded");
        updates_tx
            .send(SourceUpdate::Replace {
                source: muster_core::Source::Static,
                records,
            })
            .await
            .context("publishing static records")?;
        tasks.spawn(
            "static file source",
            StaticFileSource::new(path.clone(), reload.clone())
                .run(updates_tx.clone(), shutdown.clone()),
        );
    }
    let publisher = gossip.publisher();
    match config.docker.clone() {
        Some(docker) => {
            let (source, mut status) = DockerSource::new(docker);
            let source = source.with_metrics(docker_metrics);
            tasks.spawn(
                "Docker source",
                source.run(updates_tx.clone(), shutdown.clone()),
            );
            // Members show each agent's Docker connection.
            let shutdown = shutdown.clone();
            tasks.spawn("Docker status", async move {
                loop {
                    let now = status.borrow_and_update().clone();
                    publisher.set_meta("docker", &now.to_string()).await;
                    let error = match &now {
                        DockerStatus::Disconnected { error } => {
                            // An engine that does not answer at start has
                            // nothing to publish: readiness stops waiting.
                            publisher.settle(muster_core::Source::Docker).await;
                            error.as_str()
                        }
                        _ => "",
                    };
                    publisher.set_meta("docker_error", error).await;
                    tokio::select! {
                        changed = status.changed() => if changed.is_err() { return },
                        () = shutdown.cancelled() => return,
                    }
                }
            });
        }
        None => publisher.set_meta("docker", "disabled").await,
    }
    drop(updates_tx);

    info!(
        node = %config.node_name,
        gossip = %gossip.advertise_addr(),
        dns = %dns_addr,
        grpc = %grpc_addr,
        grpc_tls = match &grpc_tls {
            None => "off",
            Some(tls) if tls.mutual() => "mutual",
            Some(_) => "on",
        },
        http = %http_addr,
        zone = %config.zone,
        seeds = ?config.join,
        "muster agent started"
    );

    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let gossip_failed = gossip.failed();
    tokio::pin!(gossip_failed);
    let outcome = loop {
        tokio::select! {
            _ = hangup.recv() => {
                if config.static_file.is_some() {
                    info!("SIGHUP: reloading static records");
                    reload.notify_one();
                }
                if let Some(path) = &config.policy {
                    info!("SIGHUP: reloading the naming policy");
                    match Policy::load(path) {
                        Ok(policy) => {
                            gossip.publisher().set_meta("policy", policy.digest()).await;
                            policy_engine.set_policy(policy).await;
                        }
                        Err(e) => error!(error = %e, "naming policy not reloaded; the previous one stays"),
                    }
                }
                if let (Some(path), Some(keys)) = (&config.gossip_key_file, &gossip_keys) {
                    match Keyring::load(path) {
                        Ok(ring) => {
                            info!(keys = ?ring.ids(), "SIGHUP: gossip keys reloaded");
                            keys.replace(ring);
                        }
                        Err(e) => error!(error = %e, "gossip keys not reloaded; the previous ones stay"),
                    }
                }
                if let Some(tls) = &grpc_tls {
                    match tls.reload() {
                        Ok(()) => info!("SIGHUP: gRPC TLS certificates reloaded"),
                        Err(e) => error!(error = %e, "gRPC TLS certificates not reloaded; the previous ones stay"),
                    }
                }
                if config.static_file.is_none()
                    && config.policy.is_none()
                    && config.gossip_key_file.is_none()
                    && grpc_tls.is_none()
                {
                    info!("SIGHUP: nothing to reload");
                }
            }
            _ = terminate.recv() => break Ok(()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
            why = &mut gossip_failed => break Err(anyhow::anyhow!(why)),
        }
    };
    info!("shutting down");
    shutdown.cancel();
    tasks.spawn("gossip", gossip.stopped());
    tasks.drain(DRAIN).await;
    info!("stopped");
    outcome
}

/// The agent's tasks, by name, so that a drain that runs out of time says
/// which of them did not stop.
#[derive(Default)]
struct Tasks {
    set: JoinSet<&'static str>,
    running: std::collections::BTreeSet<&'static str>,
}

impl Tasks {
    fn spawn(&mut self, what: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.running.insert(what);
        self.set.spawn(async move {
            task.await;
            what
        });
    }

    /// Waits until every task has ended, for at most `limit`.
    async fn drain(mut self, limit: std::time::Duration) {
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.set.join_next() => match next {
                    None => return,
                    Some(Ok(what)) => {
                        self.running.remove(what);
                        debug!(task = what, "stopped");
                    }
                    Some(Err(e)) => warn!(error = %e, "a task failed while stopping"),
                },
                () = &mut deadline => {
                    warn!(still_running = ?self.running, "tasks did not stop within {limit:?}; exiting anyway");
                    return;
                }
            }
        }
    }
}

/// Forwards source updates to gossip: a verdict goes back to a source that
/// waits for it, and a refusal nobody waits for is logged.
async fn forward(mut updates: mpsc::Receiver<SourceUpdate>, publisher: Publisher) {
    while let Some(update) = updates.recv().await {
        match update {
            SourceUpdate::Replace { source, records } => {
                let report: PublishReport = publisher.replace(source, records).await;
                for why in &report.rejected {
                    error!(source = source.as_str(), error = %why, "record not published");
                }
                info!(
                    source = source.as_str(),
                    written = report.written,
                    withdrawn = report.withdrawn,
                    unchanged = report.unchanged,
                    rejected = report.rejected.len(),
                    "published"
                );
            }
            SourceUpdate::Upsert {
                source,
                record,
                ack,
            } => {
                let verdict = publisher.upsert(source, *record).await;
                match (ack, verdict) {
                    (Some(ack), verdict) => ack.send(verdict),
                    (None, Err(why)) => {
                        error!(source = source.as_str(), error = %why, "record not published")
                    }
                    (None, Ok(())) => {}
                }
            }
            SourceUpdate::Remove { source, id } => {
                publisher.remove(source, &id).await;
            }
        }
    }
}
