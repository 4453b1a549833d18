//! The gossip keyring: the keys that seal and open gossip datagrams.
//!
//! A key file holds one or more keys, one per line, each the base64 of 32
//! random bytes; blank lines and `#` comments are allowed. The first key is
//! the primary: it seals every datagram this agent sends. Every key opens.
//! Rotation therefore goes: add the new key as a second line everywhere,
//! move it first everywhere, remove the old one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Bytes in a key.
pub const KEY_LEN: usize = 32;

/// Most keys a key file may hold: a rotation needs two.
pub const MAX_KEYS: usize = 16;

/// One key: the cipher, and the short id every sealed datagram names it by.
pub(crate) struct Key {
    pub(crate) id: [u8; 4],
    pub(crate) cipher: XChaCha20Poly1305,
}

/// The keys of a key file, primary first; never empty.
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).finish()
    }
}

/// Why a key file was refused: `path:line: why` (no line when the whole
/// file is at fault).
#[derive(Debug, Error)]
pub struct KeyFileError {
    /// The key file.
    pub path: PathBuf,
    /// The line at fault, from 1; 0 for the whole file.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.path.display(), self.why),
            line => write!(f, "{}:{line}: {}", self.path.display(), self.why),
        }
    }
}

/// Why the text of a key file holds no keyring (see [`Keyring::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {why}")]
pub struct KeyLineError {
    /// The line at fault, from 1; 0 for the whole text.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

const MAKE_ONE: &str = "make one with `muster keygen`";

impl Keyring {
    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Keyring, KeyFileError> {
        let at = |line, why| KeyFileError {
            path: path.to_owned(),
            line,
            why,
        };
        let text = std::fs::read(path).map_err(|e| at(0, format!("cannot read: {e}")))?;
        if text.len() > 64 * 1024 {
            return Err(at(0, "larger than 64 KiB: not a key file".into()));
        }
        let text = String::from_utf8(text).map_err(|_| at(0, "not UTF-8 text".into()))?;
        Keyring::parse(&text).map_err(|e| at(e.line, e.why))
    }

    /// Parses the text of a key file.
    pub fn parse(text: &str) -> Result<Keyring, KeyLineError> {
        let mut keys: Vec<(usize, [u8; KEY_LEN])> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let at = |why: String| KeyLineError { line: line_no, why };
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let bytes = STANDARD.decode(content).map_err(|e| {
                at(format!(
                    "not a key: a key is the base64 of {KEY_LEN} random bytes ({e}); {MAKE_ONE}"
                ))
            })?;
            let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                at(format!(
                    "a key is {KEY_LEN} bytes, this one is {}; {MAKE_ONE}",
                    bytes.len()
                ))
            })?;
            if let Some((first, _)) = keys.iter().find(|(_, k)| *k == key) {
                return Err(at(format!("the same key as line {first}")));
            }
            if keys.len() == MAX_KEYS {
                return Err(at(format!("more than {MAX_KEYS} keys")));
            }
            keys.push((line_no, key));
        }
        if keys.is_empty() {
            return Err(KeyLineError {
                line: 0,
                why: format!("holds no key (one base64 key per line; {MAKE_ONE})"),
            });
        }
        Ok(Keyring {
            keys: keys.iter().map(|(_, key)| Key::new(key)).collect(),
        })
    }

    /// The keys' ids in hex, primary first: what logs and metrics show
    /// (an id names a key without revealing it).
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| hex(&k.id)).collect()
    }

    /// The key that seals.
    pub(crate) fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// The keys a datagram naming `id` may have been sealed with (ids are
    /// short, so two keys may share one).
    pub(crate) fn named(&self, id: [u8; 4]) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| k.id == id)
    }
}

impl Key {
    fn new(key: &[u8; KEY_LEN]) -> Key {
        let digest = Sha256::new()
            .chain_update(b"muster gossip key id\0")
            .chain_update(key)
            .finalize();
        Key {
            id: digest[..4].try_into().expect("4 bytes of 32"),
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key, as a key file line: the base64 of 32 bytes from the
/// operating system's random source.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key)?;
    Ok(STANDARD.encode(key))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    id: String,
    primary: &'static str,
}

/// The keyring a running agent seals and opens with, replaceable while it
/// runs (SIGHUP); cheap to clone.
#[derive(Clone, Debug)]
pub struct GossipKeys {
    ring: Arc<ArcSwap<Keyring>>,
    info: Family<KeyLabels, Gauge>,
}

impl GossipKeys {
    /// Starts with `ring`.
    pub fn new(ring: Keyring) -> GossipKeys {
        let keys = GossipKeys {
            ring: Arc::new(ArcSwap::from_pointee(ring)),
            info: Family::default(),
        };
        keys.show();
        keys
    }

    /// From now on, seals with `ring`'s primary and opens with its keys.
    pub fn replace(&self, ring: Keyring) {
        self.ring.store(Arc::new(ring));
        self.show();
    }

    /// The keyring in use.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Keyring>> {
        self.ring.load()
    }

    /// The ids of the keys in use, primary first.
    pub fn ids(&self) -> Vec<String> {
        self.ring.load().ids()
    }

    /// Registers `muster_gossip_key_info{id, primary}`: one series per key
    /// in use, so a rotation can be checked on every agent.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "muster_gossip_key_info",
            "The gossip keys in use, by id; primary=\"true\" for the one that seals",
            self.info.clone(),
        );
    }

    fn show(&self) {
        self.info.clear();
        for (i, id) in self.ids().into_iter().enumerate() {
            let primary = if i == 0 { "true" } else { "false" };
            self.info.get_or_create(&KeyLabels { id, primary }).set(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; KEY_LEN])
    }

    #[test]
    fn the_first_key_is_the_primary_and_comments_and_blank_lines_are_skipped() {
        let text = format!("# rotation in progress\n\n{}  # new\n{}\n", key(2), key(1));
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.ids().len(), 2);
        assert_eq!(ring.ids()[0], hex(&Key::new(&[2; KEY_LEN]).id));
        assert_eq!(hex(&ring.primary().id), ring.ids()[0]);
    }

    #[test]
    fn a_bad_line_is_named_with_what_is_wrong() {
        let err = |text: &str| Keyring::parse(text).unwrap_err();
        assert_eq!(err(&format!("{}\nnot base64!\n", key(1))).line, 2);
        let short = err(&STANDARD.encode([7u8; 16]));
        assert_eq!(short.line, 1);
        assert!(short.why.contains("32 bytes, this one is 16"), "{short}");
        let twice = err(&format!("{}\n# x\n{}\n", key(1), key(1)));
        assert_eq!(
            (twice.line, twice.why.as_str()),
            (3, "the same key as line 1")
        );
        let empty = err("# nothing here\n\n");
        assert_eq!(empty.line, 0);
        assert!(empty.why.contains("muster keygen"), "{empty}");
        let many: String = (0..=MAX_KEYS as u8).map(|b| key(b) + "\n").collect();
        assert_eq!(err(&many).line, MAX_KEYS + 1);
    }

    #[test]
    fn a_key_file_error_reads_path_colon_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gossip.key");
        std::fs::write(&path, format!("{}\nzz\n", key(1))).unwrap();
        let e = Keyring::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: ", path.display())), "{e}");
        let missing = Keyring::load(&dir.path().join("none")).unwrap_err();
        assert_eq!(missing.line, 0);
    }

    #[test]
    fn generated_keys_parse_and_differ() {
        let (a, b) = (generate_key().unwrap(), generate_key().unwrap());
        assert_ne!(a, b);
        assert_eq!(Keyring::parse(&format!("{a}\n{b}")).unwrap().ids().len(), 2);
    }

    #[test]
    fn replacing_the_keyring_shows_the_new_ids_in_metrics() {
        let keys = GossipKeys::new(Keyring::parse(&key(1)).unwrap());
        let mut registry = Registry::default();
        keys.register(&mut registry);
        keys.replace(Keyring::parse(&format!("{}\n{}", key(2), key(1))).unwrap());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let ids = keys.ids();
        assert!(
            text.contains(&format!("id=\"{}\",primary=\"true\"", ids[0])),
            "{text}"
        );
        assert!(
            text.contains(&format!("id=\"{}\",primary=\"false\"", ids[1])),
            "{text}"
        );
        assert_eq!(text.matches("muster_gossip_key_info{").count(), 2, "{text}");
    }
}
