//! The failure detector's rules, without I/O: SWIM's probes (a ping, then
//! pings through `k` other members) and its suspicion, refuted by
//! incarnation numbers.
//!
//! Why not chitchat's phi detector: it learns a node is alive from that
//! node's heartbeat, which every gossip digest carries for every node, so a
//! digest, and the gossip cost of every agent, grows with the cluster. Here
//! each agent probes one member per round, whatever the cluster's size, and
//! only a *failure* travels by gossip: the agent whose probe failed writes
//! a claim into its own chitchat state (`suspect:<generation>:<name>` =
//! `<incarnation>`, or `<incarnation> dead`), which reaches every agent
//! like any other key.
//!
//! The rules (unit-tested below):
//! - A member is probed in turn (a shuffled round-robin, so each is probed
//!   by every agent once per pass): a ping, and if no answer within the
//!   probe timeout, a ping request to `k` other members, which ping it and
//!   pass the answer on. No answer by the end of the round: the prober
//!   claims it suspect, at the incarnation it knows.
//! - An answer "not me" (another generation of the name, or another agent,
//!   now holds that address) proves the incarnation gone: claimed dead.
//! - A claim counts only for the incarnation it names or a later one: a
//!   member that sees itself claimed raises its incarnation (`inc` in its
//!   own state) past the claim, and every claim about the old one lapses.
//! - A member claimed dead is dead; one claimed suspect is dead once this
//!   agent has seen it suspect for the suspicion timeout, which grows with
//!   the log of the cluster's size (memberlist's rule: 4 rounds × log10 N),
//!   so a refutation has time to spread in a large cluster, and falls with
//!   the number of agents that claim it (Lifeguard's rule, as memberlist
//!   has it, to half with two confirmations), since independent
//!   failed probes are strong evidence.
//! - A claim is withdrawn by the agent that made it when the member
//!   answers it again, refutes it, or leaves the cluster; a suspicion the
//!   claimant sees time out becomes a dead claim, for agents that join
//!   later.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chitchat::ChitchatId;
use tokio::time::Instant;

/// The bit set in the sequence number of a ping sent for another member
/// (a relay); never in a detector's own.
pub(crate) const RELAYED: u32 = 1 << 31;
/// The key of an agent's incarnation in its own state.
pub(crate) const INCARNATION_KEY: &str = "inc";
/// The prefix of an agent's claims about others in its own state.
pub(crate) const CLAIM_PREFIX: &str = "suspect:";

/// Confirmations (claims beyond the first) that bring a suspicion to its
/// shortest timeout: memberlist's `SuspicionMult - 2`.
pub(crate) const CONFIRMATIONS: usize = 2;

/// How the detector paces itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// One member probed per round.
    pub round: Duration,
    /// Time for a direct answer before asking others to ping.
    pub probe_timeout: Duration,
    /// The suspicion timeout is this many rounds times log10 of the
    /// cluster's size (at least 1): memberlist's 4.
    pub suspicion_mult: u32,
    /// Members asked to ping a member that did not answer.
    pub indirect: usize,
}

impl Timing {
    /// Paces the detector on the gossip interval.
    pub fn for_interval(interval: Duration) -> Timing {
        Timing {
            round: interval,
            probe_timeout: interval / 2,
            suspicion_mult: 4,
            indirect: 3,
        }
    }

    /// How long a member claimed suspect by one agent alone stays suspect
    /// before it is dead, in a cluster of `members`.
    pub fn suspicion_timeout(&self, members: usize) -> Duration {
        let scale = (members.max(1) as f64).log10().max(1.0);
        self.round
            .mul_f64(f64::from(self.suspicion_mult) * scale)
            .max(Duration::from_secs(1))
    }

    /// How long a member stays suspect when `claimants` agents claim it
    /// (Lifeguard's rule, as memberlist has it): the timeout falls from
    /// [`Timing::suspicion_timeout`] with the log of the confirmations
    /// (claims beyond the first), to half of it (at least 1 s) at
    /// [`CONFIRMATIONS`]. Independent failed probes are strong evidence:
    /// a dead member is confirmed by about one new prober a round, while
    /// one agent's lost packets get the whole timeout to be refuted.
    /// memberlist goes further down (from 6× to 1× its base), but it also
    /// slows the probes of an agent that is itself unwell (Lifeguard's
    /// local health); without that, failures are not independent when
    /// agents are starved of CPU: with a quarter, 200 simulated members
    /// on two cores saw live members dead in 16% of polls at rest, with
    /// half in none.
    pub fn suspicion_timeout_confirmed(&self, members: usize, claimants: usize) -> Duration {
        let max = self.suspicion_timeout(members);
        let min = (max / 2).max(Duration::from_secs(1)).min(max);
        let confirmations = claimants.saturating_sub(1) as f64;
        let fraction = ((confirmations + 1.0).ln() / (CONFIRMATIONS as f64 + 1.0).ln()).min(1.0);
        max - (max - min).mul_f64(fraction)
    }
}

/// One claim about a member, as gossiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The member's incarnation the claim is about.
    pub incarnation: u64,
    /// Dead, not merely suspect.
    pub dead: bool,
}

impl Claim {
    /// The claim key for `about`, in the claimant's state.
    pub fn key(about: &ChitchatId) -> String {
        format!("{CLAIM_PREFIX}{}:{}", about.generation_id, about.node_id)
    }

    /// The member a claim key is about, by name and generation.
    pub fn parse_key(key: &str) -> Option<(u64, &str)> {
        let rest = key.strip_prefix(CLAIM_PREFIX)?;
        let (generation, name) = rest.split_once(':')?;
        Some((generation.parse().ok()?, name))
    }

    /// The gossiped value: `<incarnation>` or `<incarnation> dead`.
    pub fn value(&self) -> String {
        if self.dead {
            format!("{} dead", self.incarnation)
        } else {
            self.incarnation.to_string()
        }
    }

    /// Reads a gossiped value; `None` for anything else.
    pub fn parse_value(value: &str) -> Option<Claim> {
        let (number, dead) = match value.strip_suffix(" dead") {
            Some(number) => (number, true),
            None => (value, false),
        };
        Some(Claim {
            incarnation: number.parse().ok()?,
            dead,
        })
    }
}

/// What the cluster's states say, as the detector needs it.
#[derive(Debug, Default, Clone)]
pub(crate) struct View {
    /// Every member but this agent, with its incarnation.
    pub members: HashMap<ChitchatId, u64>,
    /// Every claim about a member (this agent included), one per
    /// claimant: a claimant holds one claim key per member.
    pub claims: Vec<(ChitchatId, Claim)>,
}

/// The detector's verdict on a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Alive,
    /// Claimed suspect, and not yet for the suspicion timeout.
    Suspect,
    Dead,
}

/// What a probe round wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// Ping `target` (at its address), answers carry `seq`.
    Ping { seq: u32, target: ChitchatId },
    /// Ask `helper` to ping `target` for us.
    PingReq {
        helper: SocketAddr,
        seq: u32,
        target: ChitchatId,
    },
    /// Tell `target` it is claimed suspect at `incarnation`, so it can
    /// refute at once.
    Notice {
        target: ChitchatId,
        incarnation: u64,
    },
}

/// How a ping was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The incarnation pinged is there.
    Ack,
    /// Another incarnation, or another agent, holds its address.
    NotMe,
}

/// The probe under way.
#[derive(Debug)]
struct Probe {
    seq: u32,
    target: ChitchatId,
    started: Instant,
    asked_others: bool,
    answer: Option<Answer>,
}

/// The failure detector of one agent.
pub(crate) struct Detector {
    me: ChitchatId,
    timing: Timing,
    rng: fastrand::Rng,
    incarnation: u64,
    /// The probe order of this pass, and how far it got.
    order: Vec<ChitchatId>,
    next: usize,
    probe: Option<Probe>,
    seq: u32,
    /// This agent's claims, as they should stand in its state.
    mine: HashMap<ChitchatId, Claim>,
    /// Since when this agent has seen each member claimed suspect.
    suspected: HashMap<ChitchatId, Instant>,
    verdicts: HashMap<ChitchatId, Verdict>,
    members: HashMap<ChitchatId, u64>,
    /// When the first suspicion still running times out, as of the last
    /// judgement.
    next_timeout: Option<Instant>,
}

impl Detector {
    pub fn new(me: ChitchatId, timing: Timing, seed: u64) -> Detector {
        Detector {
            me,
            timing,
            rng: fastrand::Rng::with_seed(seed),
            incarnation: 0,
            order: Vec::new(),
            next: 0,
            probe: None,
            seq: 0,
            mine: HashMap::new(),
            suspected: HashMap::new(),
            verdicts: HashMap::new(),
            members: HashMap::new(),
            next_timeout: None,
        }
    }

    /// When the first suspicion still running at the last judgement times
    /// out (with the claimants seen then): judging again before that, with
    /// nothing gossiped in, changes no verdict.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    /// This agent's incarnation: gossiped as [`INCARNATION_KEY`].
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The claims this agent makes, as its state should hold them.
    pub fn claims(&self) -> &HashMap<ChitchatId, Claim> {
        &self.mine
    }

    /// The verdict on every member of the last [`Detector::judge`].
    pub fn verdicts(&self) -> &HashMap<ChitchatId, Verdict> {
        &self.verdicts
    }

    /// Takes in what the cluster's states say and judges every member:
    /// raises this agent's incarnation past any claim about it, withdraws
    /// its claims that lapsed, and turns its suspicions that timed out into
    /// dead claims.
    pub fn judge(&mut self, view: View, now: Instant) {
        // Another generation of this agent's name at this agent's address
        // is an earlier run of it, gone: claimed dead at once.
        for (id, &incarnation) in &view.members {
            if id.node_id == self.me.node_id
                && id.gossip_advertise_addr == self.me.gossip_advertise_addr
            {
                self.mine.insert(
                    id.clone(),
                    Claim {
                        incarnation,
                        dead: true,
                    },
                );
            }
        }
        let members = view.members.len() + 1;
        let mut dead: HashSet<&ChitchatId> = HashSet::new();
        // Members claimed suspect, with how many agents claim them.
        let mut suspect: HashMap<&ChitchatId, usize> = HashMap::new();
        for (about, claim) in &view.claims {
            if about == &self.me {
                if claim.incarnation >= self.incarnation {
                    self.incarnation = claim.incarnation + 1;
                }
                continue;
            }
            let Some(&incarnation) = view.members.get(about) else {
                continue;
            };
            if claim.incarnation < incarnation {
                continue;
            }
            if claim.dead {
                dead.insert(about);
            } else {
                *suspect.entry(about).or_default() += 1;
            }
        }
        self.suspected.retain(|id, _| suspect.contains_key(id));
        let mut verdicts = HashMap::with_capacity(view.members.len());
        self.next_timeout = None;
        for id in view.members.keys() {
            let verdict = if dead.contains(id) {
                Verdict::Dead
            } else if let Some(&claimants) = suspect.get(id) {
                let since = *self.suspected.entry(id.clone()).or_insert(now);
                let until = since + self.timing.suspicion_timeout_confirmed(members, claimants);
                if now >= until {
                    Verdict::Dead
                } else {
                    self.next_timeout = Some(self.next_timeout.map_or(until, |t| t.min(until)));
                    Verdict::Suspect
                }
            } else {
                Verdict::Alive
            };
            verdicts.insert(id.clone(), verdict);
        }
        // Claims lapse with the member, or with its refutation; a
        // suspicion that timed out here becomes a dead claim.
        self.mine.retain(|id, claim| {
            view.members
                .get(id)
                .is_some_and(|&incarnation| claim.incarnation >= incarnation)
        });
        for (id, claim) in &mut self.mine {
            if verdicts.get(id) == Some(&Verdict::Dead) {
                claim.dead = true;
            }
        }
        self.verdicts = verdicts;
        self.members = view.members;
    }

    /// Moves the probe under way along (asks others once the probe timeout
    /// passed, claims the target suspect or dead once the round is over)
    /// and starts the next one; returns what to send.
    pub fn tick(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        if let Some(probe) = &mut self.probe {
            let elapsed = now.duration_since(probe.started);
            if probe.answer.is_none() && !probe.asked_others && elapsed >= self.timing.probe_timeout
            {
                probe.asked_others = true;
                let target = probe.target.clone();
                let seq = probe.seq;
                for helper in self.helpers(&target) {
                    out.push(Out::PingReq {
                        helper,
                        seq,
                        target: target.clone(),
                    });
                }
            }
            if elapsed < self.timing.round {
                return out;
            }
            let probe = self.probe.take().expect("a probe");
            if let Some(incarnation) = self.members.get(&probe.target).copied() {
                match probe.answer {
                    Some(Answer::Ack) => {}
                    Some(Answer::NotMe) => {
                        self.mine.insert(
                            probe.target,
                            Claim {
                                incarnation,
                                dead: true,
                            },
                        );
                    }
                    None => {
                        let claim = self.mine.entry(probe.target.clone()).or_insert(Claim {
                            incarnation,
                            dead: false,
                        });
                        if !claim.dead {
                            out.push(Out::Notice {
                                target: probe.target,
                                incarnation,
                            });
                        }
                    }
                }
            }
        }
        if let Some(target) = self.next_target() {
            // The top bit is the probe task's, for the pings it relays.
            self.seq = (self.seq + 1) & !RELAYED;
            out.push(Out::Ping {
                seq: self.seq,
                target: target.clone(),
            });
            self.probe = Some(Probe {
                seq: self.seq,
                target,
                started: now,
                asked_others: false,
                answer: None,
            });
        }
        out
    }

    /// An answer to probe `seq`, direct or passed on by a helper. An
    /// answer clears this agent's claim on the member.
    pub fn answered(&mut self, seq: u32, answer: Answer) {
        let Some(probe) = &mut self.probe else { return };
        if probe.seq != seq || probe.answer == Some(Answer::NotMe) {
            return;
        }
        probe.answer = Some(answer);
        if answer == Answer::Ack {
            self.mine.remove(&probe.target);
        }
    }

    /// Another member says this agent is suspect at `incarnation`.
    pub fn noticed(&mut self, incarnation: u64) {
        if incarnation >= self.incarnation {
            self.incarnation = incarnation + 1;
        }
    }

    /// Whether a ping for `name` at `generation` is for this agent.
    pub fn answer_for(&self, name: &str, generation: u64) -> Answer {
        if *name == *self.me.node_id && generation == self.me.generation_id {
            Answer::Ack
        } else {
            Answer::NotMe
        }
    }

    /// The next member to probe: a shuffled pass over the members not
    /// dead, reshuffled after each pass.
    fn next_target(&mut self) -> Option<ChitchatId> {
        for _ in 0..2 {
            while self.next < self.order.len() {
                let id = &self.order[self.next];
                self.next += 1;
                if matches!(
                    self.verdicts.get(id),
                    Some(Verdict::Alive | Verdict::Suspect)
                ) {
                    return Some(id.clone());
                }
            }
            self.order = self.members.keys().cloned().collect();
            self.order.sort();
            self.rng.shuffle(&mut self.order);
            self.next = 0;
        }
        None
    }

    /// Up to `indirect` members, other than `target` and not dead, to ask
    /// to ping it.
    fn helpers(&mut self, target: &ChitchatId) -> Vec<SocketAddr> {
        let mut candidates: Vec<&ChitchatId> = self
            .verdicts
            .iter()
            .filter(|(id, v)| *id != target && **v != Verdict::Dead)
            .map(|(id, _)| id)
            .collect();
        candidates.sort();
        self.rng.shuffle(&mut candidates);
        candidates
            .into_iter()
            .take(self.timing.indirect)
            .map(|id| id.gossip_advertise_addr)
            .collect()
    }
}

/// The probe messages, on the gossip socket next to chitchat's (and sealed
/// the same way). They start with [`MAGIC`], which no chitchat message
/// does.
pub(crate) mod wire {
    use super::*;

    /// The first two bytes of every probe message.
    pub const MAGIC: [u8; 2] = *b"MP";

    /// A probe message.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Message {
        /// Are you `name` at `generation`?
        Ping {
            seq: u32,
            generation: u64,
            name: String,
        },
        /// Ping `target` and pass its answer on, with `seq`.
        PingReq {
            seq: u32,
            target: ChitchatId,
        },
        Answer {
            seq: u32,
            answer: Answer,
        },
        /// You are claimed suspect at `incarnation`.
        Notice {
            incarnation: u64,
        },
    }

    impl Message {
        /// Whether it opens an exchange (so may be sent to no session).
        pub fn opens(&self) -> bool {
            !matches!(self, Message::Answer { .. })
        }

        pub fn encode(&self, buf: &mut Vec<u8>) {
            buf.extend_from_slice(&MAGIC);
            match self {
                Message::Ping {
                    seq,
                    generation,
                    name,
                } => {
                    buf.push(1);
                    buf.extend_from_slice(&seq.to_be_bytes());
                    put_name(buf, *generation, name);
                }
                Message::PingReq { seq, target } => {
                    buf.push(2);
                    buf.extend_from_slice(&seq.to_be_bytes());
                    put_name(buf, target.generation_id, &target.node_id);
                    let addr = target.gossip_advertise_addr;
                    match addr.ip() {
                        IpAddr::V4(ip) => {
                            buf.push(4);
                            buf.extend_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            buf.push(6);
                            buf.extend_from_slice(&ip.octets());
                        }
                    }
                    buf.extend_from_slice(&addr.port().to_be_bytes());
                }
                Message::Answer { seq, answer } => {
                    buf.push(match answer {
                        Answer::Ack => 3,
                        Answer::NotMe => 4,
                    });
                    buf.extend_from_slice(&seq.to_be_bytes());
                }
                Message::Notice { incarnation } => {
                    buf.push(5);
                    buf.extend_from_slice(&incarnation.to_be_bytes());
                }
            }
        }

        /// Decodes one message; `None` for anything malformed.
        pub fn decode(buf: &[u8]) -> Option<Message> {
            let mut r = Reader(buf.strip_prefix(&MAGIC)?);
            let kind = r.u8()?;
            let message = match kind {
                1 => {
                    let seq = r.u32()?;
                    let (generation, name) = r.name()?;
                    Message::Ping {
                        seq,
                        generation,
                        name,
                    }
                }
                2 => {
                    let seq = r.u32()?;
                    let (generation, name) = r.name()?;
                    let ip = match r.u8()? {
                        4 => IpAddr::from(<[u8; 4]>::try_from(r.take(4)?).ok()?),
                        6 => IpAddr::from(<[u8; 16]>::try_from(r.take(16)?).ok()?),
                        _ => return None,
                    };
                    let port = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
                    Message::PingReq {
                        seq,
                        target: ChitchatId::new(name, generation, SocketAddr::new(ip, port)),
                    }
                }
                3 | 4 => Message::Answer {
                    seq: r.u32()?,
                    answer: if kind == 3 {
                        Answer::Ack
                    } else {
                        Answer::NotMe
                    },
                },
                5 => Message::Notice {
                    incarnation: u64::from_be_bytes(r.take(8)?.try_into().ok()?),
                },
                _ => return None,
            };
            r.0.is_empty().then_some(message)
        }
    }

    fn put_name(buf: &mut Vec<u8>, generation: u64, name: &str) {
        buf.extend_from_slice(&generation.to_be_bytes());
        // Node names are DNS labels: far below 255 bytes.
        let name = &name.as_bytes()[..name.len().min(255)];
        buf.push(name.len() as u8);
        buf.extend_from_slice(name);
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u8(&mut self) -> Option<u8> {
            Some(self.take(1)?[0])
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
        fn name(&mut self) -> Option<(u64, String)> {
            let generation = u64::from_be_bytes(self.take(8)?.try_into().ok()?);
            let len = usize::from(self.u8()?);
            let name = std::str::from_utf8(self.take(len)?).ok()?.to_owned();
            Some((generation, name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wire::Message;
    use super::*;

    fn id(name: &str, generation: u64) -> ChitchatId {
        let port = 7000 + name.bytes().map(u16::from).sum::<u16>();
        ChitchatId::new(
            name.to_owned(),
            generation,
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
    }

    fn timing() -> Timing {
        Timing::for_interval(Duration::from_millis(200))
    }

    fn view(members: &[(&ChitchatId, u64)], claims: &[(&ChitchatId, Claim)]) -> View {
        View {
            members: members.iter().map(|(id, i)| ((*id).clone(), *i)).collect(),
            claims: claims.iter().map(|(id, c)| ((*id).clone(), *c)).collect(),
        }
    }

    fn suspect(incarnation: u64) -> Claim {
        Claim {
            incarnation,
            dead: false,
        }
    }

    fn dead(incarnation: u64) -> Claim {
        Claim {
            incarnation,
            dead: true,
        }
    }

    /// Runs probe rounds until `target` is pinged; returns the ping's seq.
    fn ping_of(d: &mut Detector, target: &ChitchatId, now: &mut Instant) -> u32 {
        for _ in 0..20 {
            *now += timing().round;
            for out in d.tick(*now) {
                if let Out::Ping { seq, target: t } = out
                    && &t == target
                {
                    return seq;
                }
            }
        }
        panic!("{target:?} never pinged");
    }

    #[test]
    fn claims_and_their_keys_read_back() {
        let b = id("b.example", 17);
        let key = Claim::key(&b);
        assert_eq!(key, "suspect:17:b.example");
        assert_eq!(Claim::parse_key(&key), Some((17, "b.example")));
        assert_eq!(Claim::parse_key("suspect:x:b"), None);
        for claim in [suspect(0), dead(41)] {
            assert_eq!(Claim::parse_value(&claim.value()), Some(claim));
        }
        assert_eq!(Claim::parse_value("dead"), None);
        assert_eq!(Claim::parse_value("3 gone"), None);
    }

    #[test]
    fn every_message_reads_back_and_junk_is_refused() {
        let target = ChitchatId::new("c", 9, "[::1]:7946".parse().unwrap());
        for m in [
            Message::Ping {
                seq: 7,
                generation: 3,
                name: "a".into(),
            },
            Message::PingReq { seq: 8, target },
            Message::PingReq {
                seq: 9,
                target: id("d", 1),
            },
            Message::Answer {
                seq: 1,
                answer: Answer::Ack,
            },
            Message::Answer {
                seq: 2,
                answer: Answer::NotMe,
            },
            Message::Notice { incarnation: 5 },
        ] {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            assert_eq!(Message::decode(&buf), Some(m.clone()));
            // Cut short, or with a byte too many: refused.
            assert_eq!(Message::decode(&buf[..buf.len() - 1]), None);
            buf.push(0);
            assert_eq!(Message::decode(&buf), None);
        }
        assert_eq!(Message::decode(b"MP\x09"), None);
        assert_eq!(Message::decode(b"\x2e\x3d\x01"), None);
    }

    #[test]
    fn the_suspicion_timeout_grows_with_the_log_of_the_cluster() {
        let t = timing();
        assert_eq!(t.suspicion_timeout(3), Duration::from_secs(1));
        assert_eq!(t.suspicion_timeout(10), Duration::from_secs(1));
        assert_eq!(t.suspicion_timeout(100), Duration::from_millis(1_600));
        assert_eq!(t.suspicion_timeout(1000), Duration::from_millis(2_400));
    }

    #[test]
    fn confirmations_shorten_a_suspicion_to_half_never_below_one_second() {
        let t = Timing::for_interval(Duration::from_secs(1));
        // 1,000 members: 12 s for one claimant alone.
        assert_eq!(
            t.suspicion_timeout_confirmed(1000, 1),
            Duration::from_secs(12)
        );
        // One confirmation: ln 2 / ln 3 of the way down to 6 s (8.21 s).
        let one = t.suspicion_timeout_confirmed(1000, 2);
        assert!(
            one > Duration::from_millis(8_200) && one < Duration::from_millis(8_250),
            "{one:?}"
        );
        // CONFIRMATIONS of them: half, and no lower with more.
        let least = Duration::from_secs(6);
        assert_eq!(
            t.suspicion_timeout_confirmed(1000, 1 + CONFIRMATIONS),
            least
        );
        assert_eq!(t.suspicion_timeout_confirmed(1000, 50), least);
        // Never shorter than a second, however many confirm.
        assert_eq!(
            timing().suspicion_timeout_confirmed(100, 10),
            Duration::from_secs(1)
        );
        // No claimant at all reads as one: the longest timeout.
        assert_eq!(t.suspicion_timeout_confirmed(3, 0), Duration::from_secs(4));
    }

    #[test]
    fn a_suspect_claimed_by_several_agents_is_dead_sooner() {
        let (b, c) = (id("b", 1), id("c", 1));
        let t = Timing::for_interval(Duration::from_secs(1));
        let mut d = Detector::new(id("a", 1), t, 9);
        let t0 = Instant::now();
        let members = [(&b, 0), (&c, 0)];
        let alone = t.suspicion_timeout_confirmed(3, 1);
        let confirmed = t.suspicion_timeout_confirmed(3, 1 + CONFIRMATIONS);
        assert!(confirmed < alone);
        // One claim: still suspect once the confirmed timeout has passed.
        d.judge(view(&members, &[(&b, suspect(0))]), t0);
        d.judge(view(&members, &[(&b, suspect(0))]), t0 + confirmed);
        assert_eq!(d.verdicts()[&b], Verdict::Suspect);
        assert_eq!(d.next_timeout(), Some(t0 + alone));
        // Three agents claim it (one entry per claimant's state): dead,
        // counted from when this agent first saw it suspect.
        let three = [(&b, suspect(0)), (&b, suspect(0)), (&b, suspect(0))];
        d.judge(view(&members, &three), t0 + confirmed);
        assert_eq!(d.verdicts()[&b], Verdict::Dead);
        // Claims about an incarnation it has refuted do not count.
        let stale = [(&b, suspect(0)), (&b, suspect(0)), (&b, suspect(1))];
        let mut d = Detector::new(id("a", 1), t, 10);
        d.judge(view(&[(&b, 1), (&c, 0)], &stale), t0);
        d.judge(view(&[(&b, 1), (&c, 0)], &stale), t0 + confirmed);
        assert_eq!(d.verdicts()[&b], Verdict::Suspect);
    }

    #[test]
    fn each_member_is_probed_once_per_pass() {
        let others: Vec<ChitchatId> = (0..5).map(|i| id(&format!("m{i}"), 1)).collect();
        let mut d = Detector::new(id("a", 1), timing(), 1);
        let members: Vec<(&ChitchatId, u64)> = others.iter().map(|o| (o, 0)).collect();
        let mut now = Instant::now();
        d.judge(view(&members, &[]), now);
        let mut pinged = Vec::new();
        for _ in 0..10 {
            now += timing().round;
            for out in d.tick(now) {
                if let Out::Ping { seq, target } = out {
                    d.answered(seq, Answer::Ack);
                    pinged.push(target);
                }
            }
        }
        for pass in pinged.chunks(5) {
            let mut pass = pass.to_vec();
            pass.sort();
            assert_eq!(pass, others, "every member once per pass");
        }
        assert!(d.claims().is_empty(), "all answered");
    }

    #[test]
    fn a_member_that_answers_neither_directly_nor_through_others_is_claimed_suspect() {
        let (b, c, e) = (id("b", 1), id("c", 1), id("e", 1));
        let mut d = Detector::new(id("a", 1), timing(), 2);
        let mut now = Instant::now();
        d.judge(view(&[(&b, 4), (&c, 0), (&e, 0)], &[]), now);
        let seq = ping_of(&mut d, &b, &mut now);
        // Past the probe timeout: two others are asked to ping it.
        now += timing().probe_timeout;
        let asked: Vec<Out> = d.tick(now);
        assert_eq!(
            asked
                .iter()
                .filter(|o| matches!(o, Out::PingReq { seq: s, target, .. } if *s == seq && target == &b))
                .count(),
            2
        );
        // The round ends unanswered: claimed suspect at its incarnation, and told.
        now += timing().round;
        let out = d.tick(now);
        assert!(out.contains(&Out::Notice {
            target: b.clone(),
            incarnation: 4
        }));
        assert_eq!(d.claims().get(&b), Some(&suspect(4)));
    }

    #[test]
    fn an_answer_through_another_member_is_as_good_as_a_direct_one() {
        let (b, c) = (id("b", 1), id("c", 1));
        let mut d = Detector::new(id("a", 1), timing(), 3);
        let mut now = Instant::now();
        d.judge(view(&[(&b, 0), (&c, 0)], &[]), now);
        let seq = ping_of(&mut d, &b, &mut now);
        now += timing().probe_timeout;
        d.tick(now);
        d.answered(seq, Answer::Ack);
        now += timing().round;
        d.tick(now);
        assert!(d.claims().is_empty());
    }

    #[test]
    fn a_late_answer_to_an_earlier_probe_counts_for_nothing() {
        let b = id("b", 1);
        let mut d = Detector::new(id("a", 1), timing(), 4);
        let mut now = Instant::now();
        d.judge(view(&[(&b, 0)], &[]), now);
        let seq = ping_of(&mut d, &b, &mut now);
        d.answered(seq.wrapping_sub(1), Answer::Ack);
        now += timing().round;
        d.tick(now);
        assert_eq!(d.claims().get(&b), Some(&suspect(0)));
    }

    #[test]
    fn not_me_at_a_members_address_proves_that_incarnation_gone() {
        let old = id("b", 1);
        let mut d = Detector::new(id("a", 1), timing(), 5);
        let mut now = Instant::now();
        d.judge(view(&[(&old, 2)], &[]), now);
        let seq = ping_of(&mut d, &old, &mut now);
        d.answered(seq, Answer::NotMe);
        // A stray Ack after it does not undo it.
        d.answered(seq, Answer::Ack);
        now += timing().round;
        d.tick(now);
        assert_eq!(d.claims().get(&old), Some(&dead(2)));
        d.judge(view(&[(&old, 2)], &[(&old, dead(2))]), now);
        assert_eq!(d.verdicts().get(&old), Some(&Verdict::Dead));
    }

    #[test]
    fn a_ping_is_answered_only_by_the_incarnation_it_names() {
        let d = Detector::new(id("a", 7), timing(), 6);
        assert_eq!(d.answer_for("a", 7), Answer::Ack);
        assert_eq!(d.answer_for("a", 6), Answer::NotMe);
        assert_eq!(d.answer_for("b", 7), Answer::NotMe);
    }

    #[test]
    fn a_suspect_is_dead_after_the_suspicion_timeout_unless_it_refutes() {
        let (b, c) = (id("b", 1), id("c", 1));
        let mut d = Detector::new(id("a", 1), timing(), 7);
        let t0 = Instant::now();
        let timeout = timing().suspicion_timeout(3);
        let claimed = [(&b, suspect(0))];
        d.judge(view(&[(&b, 0), (&c, 0)], &claimed), t0);
        assert_eq!(d.verdicts()[&b], Verdict::Suspect);
        assert_eq!(d.verdicts()[&c], Verdict::Alive);
        // Nothing to judge before then, unless something is gossiped in.
        assert_eq!(d.next_timeout(), Some(t0 + timeout));
        d.judge(
            view(&[(&b, 0), (&c, 0)], &claimed),
            t0 + timeout - Duration::from_millis(1),
        );
        assert_eq!(d.verdicts()[&b], Verdict::Suspect);
        d.judge(view(&[(&b, 0), (&c, 0)], &claimed), t0 + timeout);
        assert_eq!(d.verdicts()[&b], Verdict::Dead);
        assert_eq!(d.next_timeout(), None);
        // It refutes: incarnation 1 outranks the claim about 0.
        d.judge(view(&[(&b, 1), (&c, 0)], &claimed), t0 + timeout * 2);
        assert_eq!(d.verdicts()[&b], Verdict::Alive);
        assert_eq!(d.next_timeout(), None);
        // Claimed again at 1: the timer starts afresh.
        let again = [(&b, suspect(1))];
        let t1 = t0 + timeout * 3;
        d.judge(view(&[(&b, 1), (&c, 0)], &again), t1);
        assert_eq!(d.verdicts()[&b], Verdict::Suspect);
    }

    #[test]
    fn an_agent_claims_its_own_earlier_run_at_its_address_dead_at_once() {
        let me = id("a", 9);
        let earlier = id("a", 3);
        let elsewhere = ChitchatId::new("a", 4, "127.0.0.2:7946".parse().unwrap());
        let mut d = Detector::new(me, timing(), 12);
        d.judge(view(&[(&earlier, 1), (&elsewhere, 0)], &[]), Instant::now());
        assert_eq!(d.claims().get(&earlier), Some(&dead(1)));
        // Another address: perhaps another agent with the same name (a
        // conflict), not this one's past.
        assert_eq!(d.claims().get(&elsewhere), None);
    }

    #[test]
    fn a_dead_claim_is_final_for_its_incarnation_only() {
        let b = id("b", 1);
        let mut d = Detector::new(id("a", 1), timing(), 8);
        let now = Instant::now();
        d.judge(view(&[(&b, 3)], &[(&b, dead(3))]), now);
        assert_eq!(d.verdicts()[&b], Verdict::Dead);
        d.judge(view(&[(&b, 4)], &[(&b, dead(3))]), now);
        assert_eq!(d.verdicts()[&b], Verdict::Alive);
    }

    #[test]
    fn a_member_claimed_suspect_raises_its_incarnation_past_the_claim() {
        let (a, b) = (id("a", 1), id("b", 1));
        let mut d = Detector::new(a.clone(), timing(), 9);
        let now = Instant::now();
        d.judge(view(&[(&b, 0)], &[(&a, suspect(0))]), now);
        assert_eq!(d.incarnation(), 1);
        // A stale claim (about incarnation 0) changes nothing now.
        d.judge(view(&[(&b, 0)], &[(&a, suspect(0))]), now);
        assert_eq!(d.incarnation(), 1);
        d.judge(view(&[(&b, 0)], &[(&a, dead(5))]), now);
        assert_eq!(d.incarnation(), 6);
        // A notice sent directly does the same.
        d.noticed(6);
        assert_eq!(d.incarnation(), 7);
        d.noticed(2);
        assert_eq!(d.incarnation(), 7);
    }

    #[test]
    fn a_claim_is_withdrawn_on_an_answer_a_refutation_or_the_members_departure_and_hardens_on_timeout()
     {
        let (b, c, e) = (id("b", 1), id("c", 1), id("e", 1));
        let mut d = Detector::new(id("a", 1), timing(), 10);
        let mut now = Instant::now();
        d.judge(view(&[(&b, 0), (&c, 0), (&e, 0)], &[]), now);
        // Claim all three suspect: no answers.
        for _ in 0..3 {
            now += timing().round;
            d.tick(now);
        }
        now += timing().round;
        d.tick(now);
        assert_eq!(d.claims().len(), 3, "{:?}", d.claims());
        let all = [(&b, suspect(0)), (&c, suspect(0)), (&e, suspect(0))];
        // b refutes, c leaves the cluster.
        d.judge(view(&[(&b, 1), (&e, 0)], &all), now);
        assert_eq!(d.claims().keys().collect::<Vec<_>>(), vec![&e]);
        // e stays silent past the timeout: the claim hardens.
        now += timing().suspicion_timeout(3);
        d.judge(view(&[(&b, 1), (&e, 0)], &all), now);
        assert_eq!(d.claims().get(&e), Some(&dead(0)));
        // A dead member is probed no more.
        for _ in 0..4 {
            now += timing().round;
            for out in d.tick(now) {
                assert!(!matches!(out, Out::Ping { target, .. } if target == e));
            }
        }
        // And an answer from a suspect withdraws the claim.
        let mut d = Detector::new(id("a", 1), timing(), 11);
        d.judge(view(&[(&b, 0)], &[]), now);
        let seq = ping_of(&mut d, &b, &mut now);
        now += timing().round;
        d.tick(now);
        assert_eq!(d.claims().get(&b), Some(&suspect(0)));
        let seq2 = ping_of(&mut d, &b, &mut now);
        assert_ne!(seq, seq2);
        d.answered(seq2, Answer::Ack);
        assert!(d.claims().is_empty());
    }
}
