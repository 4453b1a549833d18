//! The failure detector at work: the task that runs [`crate::swim`]'s
//! rules on the gossip socket and in chitchat's state.
//!
//! Four times a round it moves the probe under way along and sends what
//! the rules ask; it answers pings, relays ping requests and passes their
//! answers on as they arrive. Judging reads every member's incarnation and
//! every claim under the chitchat lock, judges, and writes back what
//! changed: each member's verdict into chitchat (whose own phi detector is
//! switched off: `FailureDetectorConfig::external`), and this agent's
//! incarnation and claims into its own state, which gossip spreads. It
//! costs O(members), so it runs only when a verdict can change: at the
//! next quarter round after a claim or an incarnation was gossiped in,
//! this agent's claims or incarnation changed (and once more after they
//! are written, so its own claims count), a suspicion times out, or the number of
//! members changed; and every [`JUDGE_EVERY_ROUNDS`] rounds regardless
//! (for what no event announces: a claim withdrawn, which chitchat
//! deletes without an event, or a member replaced between two quarters).
//! At rest that is one walk over the members per ten rounds, not one a
//! round.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{Chitchat, ChitchatId};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace};

use crate::seal::Session;
use crate::swim::wire::Message;
use crate::swim::{
    CLAIM_PREFIX, Claim, Detector, INCARNATION_KEY, Out, RELAYED, Timing, Verdict, View,
};
use crate::transport::{Heard, Link};

/// The members this agent's detector does not call alive right now
/// (suspect or dead), for the sync task.
pub(crate) type Unsure = Arc<std::sync::RwLock<HashSet<ChitchatId>>>;

/// Rounds between two judgements when nothing announces a change.
const JUDGE_EVERY_ROUNDS: u32 = 10;

/// Most ping requests relayed at once; more are dropped.
const MAX_RELAYS: usize = 1024;

/// A ping sent for another member, whose answer is passed on.
struct Relay {
    to: SocketAddr,
    session: Session,
    seq: u32,
    until: Instant,
}

/// What this task last wrote into chitchat.
#[derive(Default)]
struct Written {
    incarnation: u64,
    claims: HashMap<ChitchatId, Claim>,
    verdicts: HashMap<ChitchatId, bool>,
    /// How many node states chitchat held at the last judgement.
    nodes: usize,
    /// The last judgement wrote a claim or the incarnation: the view it
    /// judged lacked them, so the next quarter round judges again.
    wrote: bool,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    _listeners: [chitchat::ListenerHandle; 2],
    judge: Arc<tokio::sync::Notify>,
    verdicts_changed: Arc<crate::sync::Wake>,
    chitchat: Arc<Mutex<Chitchat>>,
    me: ChitchatId,
    mut link: Link,
    mut heard: mpsc::Receiver<Heard>,
    timing: Timing,
    unsure: Unsure,
    stop: CancellationToken,
) {
    let seed = {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        u64::from_le_bytes(bytes)
    };
    let mut detector = Detector::new(me.clone(), timing, seed);
    let mut relays: HashMap<u32, Relay> = HashMap::new();
    let mut relay_seq: u32 = 0;
    let mut written = Written::default();
    let mut ticker = tokio::time::interval((timing.round / 4).max(Duration::from_millis(5)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_judgement = Instant::now();
    let mut judge_due = false;
    loop {
        tokio::select! {
            Some(Heard { from, session, message }) = heard.recv() => match message {
                Message::Ping { seq, generation, name } => {
                    let answer = detector.answer_for(&name, generation);
                    link.send(from, session, &Message::Answer { seq, answer });
                }
                Message::PingReq { seq, target } => {
                    if relays.len() < MAX_RELAYS {
                        relay_seq = (relay_seq + 1) & !RELAYED;
                        let ours = relay_seq | RELAYED;
                        relays.insert(ours, Relay {
                            to: from,
                            session,
                            seq,
                            until: Instant::now() + timing.round * 2,
                        });
                        link.send(target.gossip_advertise_addr, 0, &Message::Ping {
                            seq: ours,
                            generation: target.generation_id,
                            name: target.node_id.to_string(),
                        });
                    }
                }
                Message::Answer { seq, answer } if seq & RELAYED != 0 => {
                    if let Some(relay) = relays.remove(&seq) {
                        link.send(relay.to, relay.session, &Message::Answer { seq: relay.seq, answer });
                    }
                }
                Message::Answer { seq, answer } => detector.answered(seq, answer),
                Message::Notice { incarnation } => detector.noticed(incarnation),
            },
            // A claim or an incarnation changed somewhere: judged at the
            // next tick, with whatever else changed meanwhile. Judging
            // reads every member's state, so once per change would cost
            // O(members) per claim gossiped, and a burst of claims (an
            // overloaded cluster) would feed on itself.
            _ = judge.notified() => judge_due = true,
            _ = ticker.tick() => {
                let now = Instant::now();
                let outs = detector.tick(now);
                // A new claim (or an incarnation raised by a notice) is
                // written at once, claims and incarnations gossiped by
                // others are judged at this tick, so is a suspicion that
                // timed out or a member come or gone; the rest every few
                // rounds (see the module's documentation).
                let due = judge_due
                    || now >= next_judgement
                    || detector.next_timeout().is_some_and(|t| now >= t)
                    || *detector.claims() != written.claims
                    || detector.incarnation() != written.incarnation
                    || written.wrote;
                let mut chitchat = chitchat.lock().await;
                if due || chitchat.node_states().len() != written.nodes {
                    next_judgement = now + timing.round * JUDGE_EVERY_ROUNDS;
                    judge_due = false;
                    if refresh(&mut chitchat, &mut detector, &mut written, &unsure, now) {
                        verdicts_changed.everything();
                    }
                }
                drop(chitchat);
                for out in outs {
                    send(&mut link, out);
                }
                relays.retain(|_, relay| relay.until > now);
            }
            _ = stop.cancelled() => return,
        }
    }
}

fn send(link: &mut Link, out: Out) {
    match out {
        Out::Ping { seq, target } => link.send(
            target.gossip_advertise_addr,
            0,
            &Message::Ping {
                seq,
                generation: target.generation_id,
                name: target.node_id.to_string(),
            },
        ),
        Out::PingReq {
            helper,
            seq,
            target,
        } => link.send(helper, 0, &Message::PingReq { seq, target }),
        Out::Notice {
            target,
            incarnation,
        } => link.send(
            target.gossip_advertise_addr,
            0,
            &Message::Notice { incarnation },
        ),
    }
}

/// Reads what the cluster's states say, judges, and writes back what
/// changed (see the module's documentation). Returns whether a verdict
/// changed.
fn refresh(
    chitchat: &mut Chitchat,
    detector: &mut Detector,
    written: &mut Written,
    unsure: &Unsure,
    now: Instant,
) -> bool {
    let mut changed = false;
    written.nodes = chitchat.node_states().len();
    written.wrote = false;
    let view = view_of(chitchat);
    detector.judge(view, now);

    let mut not_alive = HashSet::new();
    for (id, verdict) in detector.verdicts() {
        if *verdict != Verdict::Alive {
            not_alive.insert(id.clone());
        }
        let alive = *verdict != Verdict::Dead;
        if written.verdicts.get(id) != Some(&alive) {
            match (written.verdicts.contains_key(id), alive) {
                (true, false) => {
                    info!(member = %id.node_id, generation = id.generation_id, "member dead: probes failed and no refutation")
                }
                (true, true) => {
                    info!(member = %id.node_id, generation = id.generation_id, "member alive again")
                }
                _ => trace!(member = %id.node_id, alive, "first verdict"),
            }
            chitchat.set_node_liveness(id, alive);
            written.verdicts.insert(id.clone(), alive);
            changed = true;
        }
    }
    written
        .verdicts
        .retain(|id, _| detector.verdicts().contains_key(id));
    {
        let mut shared = unsure.write().expect("not poisoned");
        if *shared != not_alive {
            *shared = not_alive;
            changed = true;
        }
    }

    let state = chitchat.self_node_state();
    if detector.incarnation() != written.incarnation {
        info!(
            incarnation = detector.incarnation(),
            "claimed suspect by another member: refuted with a new incarnation"
        );
        state.set(INCARNATION_KEY, detector.incarnation());
        written.incarnation = detector.incarnation();
        written.wrote = true;
    }
    for (id, claim) in detector.claims() {
        if written.claims.get(id) != Some(claim) {
            debug!(member = %id.node_id, generation = id.generation_id, incarnation = claim.incarnation, dead = claim.dead, "claim written");
            state.set(Claim::key(id), claim.value());
            written.claims.insert(id.clone(), *claim);
            written.wrote = true;
        }
    }
    written.claims.retain(|id, _| {
        let keep = detector.claims().contains_key(id);
        if !keep {
            state.delete(&Claim::key(id));
            written.wrote = true;
        }
        keep
    });
    changed
}

/// Every member's incarnation and every claim, from chitchat's states.
fn view_of(chitchat: &Chitchat) -> View {
    let me = chitchat.self_chitchat_id();
    let states = chitchat.node_states();
    let mut by_name: HashMap<(&str, u64), &ChitchatId> = HashMap::with_capacity(states.len());
    let mut view = View::default();
    for (id, state) in states {
        by_name.insert((&*id.node_id, id.generation_id), id);
        if id != me {
            let incarnation = state
                .get(INCARNATION_KEY)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            view.members.insert(id.clone(), incarnation);
        }
    }
    for state in states.values() {
        for (key, value) in state.iter_prefix(CLAIM_PREFIX) {
            let Some((generation, name)) = Claim::parse_key(key) else {
                continue;
            };
            let (Some(about), Some(claim)) = (
                by_name.get(&(name, generation)),
                Claim::parse_value(&value.value),
            ) else {
                continue;
            };
            view.claims.push(((*about).clone(), claim));
        }
    }
    view
}
