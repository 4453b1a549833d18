//! The sealed datagram and the replay rules, without any I/O.
//!
//! A sealed datagram is a header, chitchat's encoding of the message
//! encrypted with XChaCha20-Poly1305, and the 16-byte tag:
//!
//! ```text
//! 0       format (0xA7; chitchat's own encoding starts 0x53 0xB0)
//! 1..5    key id (which key of the keyring sealed it)
//! 5..21   sender session: 16 random bytes drawn when the sender started
//! 21..29  counter: the sender's datagram number in that session, from 0
//! 29..45  destination session: the session of the agent it is meant for,
//!         or zeros for a Syn (the opener of an exchange, sent before the
//!         sender may know who answers at that address)
//! 45..    ciphertext, then the tag
//! ```
//!
//! The header is the associated data, so every byte of it is authentic
//! once the tag checks. The nonce is the session and the counter (24
//! bytes): fresh for every datagram, with no clock involved.
//!
//! Replay: a receiver keeps, per sender session, a window of the counters
//! it has accepted (the last [`WINDOW`]); a counter seen before or older
//! than the window is a replay. A datagram addressed to another session
//! (another agent, or an earlier run of this one) is a replay too. Clocks
//! play no part, so hosts hours apart are fine. What stays open: a Syn
//! replayed to an agent that has not seen its sender's session. A Syn
//! carries only a digest (version numbers), so it changes nothing; its
//! answer is sealed to the sender's session, so the replayer learns nothing.

use std::collections::HashMap;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Tag, XNonce};

use crate::keyring::{Key, Keyring};

/// First byte of every sealed datagram.
pub(crate) const FORMAT: u8 = 0xA7;
/// Bytes before the ciphertext.
pub(crate) const HEADER_LEN: usize = 45;
const TAG_LEN: usize = 16;
/// Bytes a seal adds to a message.
pub(crate) const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
const _: () = assert!(OVERHEAD <= chitchat::TRANSPORT_RESERVED_LEN);

/// How many counters back a receiver remembers per sender session.
pub(crate) const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// A session id: 16 random bytes per agent run; 0 means "anyone".
pub(crate) type Session = u128;

/// Seals the message in `buf[HEADER_LEN..]` in place: writes the header
/// into `buf[..HEADER_LEN]` and appends the tag.
pub(crate) fn seal(key: &Key, from: Session, counter: u64, to: Session, buf: &mut Vec<u8>) {
    debug_assert!(buf.len() >= HEADER_LEN);
    buf[0] = FORMAT;
    buf[1..5].copy_from_slice(&key.id);
    buf[5..21].copy_from_slice(&from.to_be_bytes());
    buf[21..29].copy_from_slice(&counter.to_be_bytes());
    buf[29..45].copy_from_slice(&to.to_be_bytes());
    let (header, body) = buf.split_at_mut(HEADER_LEN);
    let nonce = XNonce::try_from(&header[5..29]).expect("24 bytes");
    let tag = key
        .cipher
        .encrypt_inout_detached(&nonce, header, body.into())
        .expect("a datagram is far below the cipher's limit");
    buf.extend_from_slice(&tag);
}

/// What an authentic datagram says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    pub from: Session,
    pub counter: u64,
    pub to: Session,
}

/// Why a datagram did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not sealed at all (chitchat's plain encoding, or noise).
    NotSealed,
    /// Sealed under a key this keyring does not hold.
    UnknownKey,
    /// Names a key this keyring holds, but the tag does not check:
    /// forged, corrupted, or sealed with another key of the same id.
    Forged,
}

/// Opens `buf` in place: on success the message is `buf[HEADER_LEN..len -
/// TAG_LEN]`, decrypted.
pub(crate) fn open(ring: &Keyring, buf: &mut [u8]) -> Result<Opened, Refused> {
    if buf.len() < OVERHEAD || buf[0] != FORMAT {
        return Err(Refused::NotSealed);
    }
    let id: [u8; 4] = buf[1..5].try_into().expect("4 bytes");
    let (header, rest) = buf.split_at_mut(HEADER_LEN);
    let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let nonce = XNonce::try_from(&header[5..29]).expect("24 bytes");
    let tag = Tag::try_from(&*tag).expect("16 bytes");
    let mut named = false;
    for key in ring.named(id) {
        named = true;
        // The tag is checked before anything is decrypted: a failed try
        // leaves the body as it was for the next key.
        if key
            .cipher
            .decrypt_inout_detached(&nonce, header, (&mut *body).into(), &tag)
            .is_ok()
        {
            let session = |range: std::ops::Range<usize>| {
                u128::from_be_bytes(header[range].try_into().expect("16 bytes"))
            };
            return Ok(Opened {
                from: session(5..21),
                counter: u64::from_be_bytes(header[21..29].try_into().expect("8 bytes")),
                to: session(29..45),
            });
        }
    }
    Err(if named {
        Refused::Forged
    } else {
        Refused::UnknownKey
    })
}

/// The counters accepted from one sender session: the highest, and a
/// bitmap of the [`WINDOW`] below it (bit `counter % WINDOW`).
#[derive(Debug, Clone)]
pub(crate) struct Window {
    top: u64,
    bits: [u64; WORDS],
}

impl Window {
    /// A window that has accepted `counter` alone.
    pub(crate) fn starting_at(counter: u64) -> Window {
        let mut window = Window {
            top: counter,
            bits: [0; WORDS],
        };
        window.set(counter);
        window
    }

    /// Accepts `counter` if it was not accepted before and is not older
    /// than the window; false means a replay.
    pub(crate) fn accept(&mut self, counter: u64) -> bool {
        if counter > self.top {
            let advance = counter - self.top;
            if advance >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for c in self.top + 1..counter {
                    self.clear(c);
                }
            }
            self.top = counter;
            self.set(counter);
            return true;
        }
        if self.top - counter >= WINDOW || self.is_set(counter) {
            return false;
        }
        self.set(counter);
        true
    }

    fn is_set(&self, counter: u64) -> bool {
        let bit = counter % WINDOW;
        self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn set(&mut self, counter: u64) {
        let bit = counter % WINDOW;
        self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    fn clear(&mut self, counter: u64) {
        let bit = counter % WINDOW;
        self.bits[(bit / 64) as usize] &= !(1 << (bit % 64));
    }
}

/// The windows of every sender session heard from, at most `capacity`:
/// only authentic datagrams create one, so the honest cluster's size
/// bounds it; past the capacity the least recently heard goes.
#[derive(Debug)]
pub(crate) struct Windows {
    windows: HashMap<Session, (Window, u64)>,
    capacity: usize,
    clock: u64,
}

impl Windows {
    pub(crate) fn new(capacity: usize) -> Windows {
        Windows {
            windows: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Accepts counter `counter` of session `from`; false means a replay.
    pub(crate) fn accept(&mut self, from: Session, counter: u64) -> bool {
        self.clock += 1;
        if let Some((window, heard)) = self.windows.get_mut(&from) {
            *heard = self.clock;
            return window.accept(counter);
        }
        if self.windows.len() >= self.capacity {
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(_, (_, heard))| *heard)
                .map(|(session, _)| *session);
            if let Some(oldest) = oldest {
                self.windows.remove(&oldest);
            }
        }
        self.windows
            .insert(from, (Window::starting_at(counter), self.clock));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(lines: &[u8]) -> Keyring {
        use base64::Engine;
        let text: Vec<String> = lines
            .iter()
            .map(|b| base64::engine::general_purpose::STANDARD.encode([*b; 32]))
            .collect();
        Keyring::parse(&text.join("\n")).unwrap()
    }

    fn sealed(ring: &Keyring, message: &[u8], counter: u64, to: Session) -> Vec<u8> {
        let mut buf = vec![0; HEADER_LEN];
        buf.extend_from_slice(message);
        seal(ring.primary(), 7, counter, to, &mut buf);
        buf
    }

    #[test]
    fn a_sealed_message_opens_under_any_key_of_the_ring_and_says_who_sent_it() {
        let old = ring(&[1]);
        let mut datagram = sealed(&old, b"hello", 3, 9);
        assert_eq!(datagram.len(), 5 + OVERHEAD);
        assert!(!datagram.windows(5).any(|w| w == b"hello"), "encrypted");
        let rotating = ring(&[2, 1]);
        let opened = open(&rotating, &mut datagram).unwrap();
        assert_eq!(
            opened,
            Opened {
                from: 7,
                counter: 3,
                to: 9
            }
        );
        assert_eq!(&datagram[HEADER_LEN..HEADER_LEN + 5], b"hello");
    }

    #[test]
    fn a_datagram_under_an_unknown_key_or_with_any_bit_changed_does_not_open() {
        let mine = ring(&[1]);
        let theirs = ring(&[2]);
        assert_eq!(
            open(&mine, &mut sealed(&theirs, b"x", 0, 0)),
            Err(Refused::UnknownKey)
        );
        let good = sealed(&mine, b"record", 0, 0);
        for byte in 1..good.len() {
            let mut bad = good.clone();
            bad[byte] ^= 0x10;
            let refused = open(&mine, &mut bad).unwrap_err();
            let expected = if (1..5).contains(&byte) {
                Refused::UnknownKey
            } else {
                Refused::Forged
            };
            assert_eq!(refused, expected, "byte {byte} flipped");
        }
        assert_eq!(
            open(&mine, &mut [0x53, 0xB0, 1, 0]),
            Err(Refused::NotSealed),
            "chitchat's plain encoding"
        );
        let mut truncated = good[..OVERHEAD - 1].to_vec();
        assert_eq!(open(&mine, &mut truncated), Err(Refused::NotSealed));
    }

    #[test]
    fn a_counter_is_accepted_once() {
        let mut w = Window::starting_at(10);
        assert!(!w.accept(10));
        assert!(w.accept(12));
        assert!(w.accept(11), "late but new");
        assert!(!w.accept(11));
        assert!(!w.accept(12));
    }

    #[test]
    fn a_counter_older_than_the_window_is_a_replay_even_if_never_seen() {
        let mut w = Window::starting_at(0);
        assert!(w.accept(WINDOW + 5));
        assert!(!w.accept(5), "exactly WINDOW behind");
        assert!(w.accept(6), "inside the window, never seen");
        assert!(!w.accept(3));
    }

    #[test]
    fn sliding_forgets_bits_that_belong_to_older_counters() {
        let mut w = Window::starting_at(1);
        // Counter 1 and 1 + WINDOW share a bit; sliding past must not make
        // the new one look seen.
        assert!(w.accept(WINDOW - 1));
        assert!(w.accept(WINDOW + 1));
        assert!(!w.accept(WINDOW + 1));
        // A jump wider than the window clears everything.
        assert!(w.accept(10 * WINDOW));
        assert!(w.accept(10 * WINDOW - 1));
        assert!(!w.accept(9 * WINDOW));
    }

    #[test]
    fn sessions_have_windows_of_their_own_and_the_least_recently_heard_goes_first() {
        let mut windows = Windows::new(2);
        assert!(windows.accept(1, 0));
        assert!(windows.accept(2, 0));
        assert!(!windows.accept(1, 0));
        // Session 2 is the least recently heard: a third evicts it.
        assert!(windows.accept(3, 0));
        assert!(!windows.accept(1, 0), "session 1 kept");
        assert!(windows.accept(2, 0), "session 2 forgotten");
    }
}
