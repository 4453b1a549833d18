//! DNS name rules for the names records are published under.
//!
//! A record's name (and each alias) becomes the first label of
//! `<name>.<zone>`, so it must be one RFC 1123 label: 1 to 63 characters of
//! ASCII letters, digits and `-`, neither starting nor ending with `-`.
//! Names are matched case-insensitively; the index keys them in lower case.

use thiserror::Error;

/// Why a name cannot be published in DNS.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// A label is longer than 63 bytes.
    #[error("label {label:?} is {len} bytes long; a DNS label holds at most 63")]
    TooLong {
        /// The offending label.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside `[A-Za-z0-9-]`.
    #[error("label {label:?} has {ch:?} at byte {at}; only letters, digits and '-' are allowed")]
    BadChar {
        /// The offending label.
        label: String,
        /// The character.
        ch: char,
        /// Its byte offset in the label.
        at: usize,
    },
    /// A label that starts or ends with a hyphen.
    #[error("label {0:?} starts or ends with '-'")]
    EdgeHyphen(String),
    /// A whole name longer than 253 bytes.
    #[error("name is {0} bytes long; a DNS name holds at most 253")]
    NameTooLong(usize),
}

/// Checks that `label` is a single RFC 1123 DNS label.
pub fn validate_dns_label(label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::Empty);
    }
    if label.len() > 63 {
        return Err(NameError::TooLong {
            label: label.to_owned(),
            len: label.len(),
        });
    }
    if let Some((at, ch)) = label
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(NameError::BadChar {
            label: label.to_owned(),
            ch,
            at,
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::EdgeHyphen(label.to_owned()));
    }
    Ok(())
}

/// Maps an arbitrary container name to a DNS label, the way muster
/// publishes Docker containers: ASCII letters are lower-cased, `_`, `.` and
/// spaces become `-`, other characters are dropped, runs of `-` collapse to
/// one, `-` is trimmed from both ends, and the result is cut to 63 bytes.
/// Returns `None` when nothing valid is left (the caller then falls back to
/// another name, e.g. the container's short id).
pub fn dns_label_from(name: &str) -> Option<String> {
    let mut label = String::with_capacity(name.len());
    for c in name.chars() {
        let mapped = match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            '_' | '.' | ' ' | '-' => '-',
            _ => continue,
        };
        if mapped == '-' && (label.is_empty() || label.ends_with('-')) {
            continue;
        }
        label.push(mapped);
    }
    label.truncate(63);
    while label.ends_with('-') {
        label.pop();
    }
    (!label.is_empty()).then_some(label)
}

/// Checks that `name` is a dotted DNS name of RFC 1123 labels (a zone, for
/// example). A single trailing dot is allowed.
pub fn validate_dns_name(name: &str) -> Result<(), NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 253 {
        return Err(NameError::NameTooLong(name.len()));
    }
    name.split('.').try_for_each(validate_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(label: &str, ok: bool) {
        assert_eq!(validate_dns_label(label).is_ok(), ok, "{label:?}");
    }

    #[test]
    fn labels_follow_rfc_1123() {
        check("web-1", true);
        check("WEB-1", true);
        check("1web", true);
        check("a", true);
        check(&"a".repeat(63), true);
        check(&"a".repeat(64), false);
        check("", false);
        check("-web", false);
        check("web-", false);
        check("web_1", false);
        check("web.1", false);
        check("wéb", false);
    }

    #[test]
    fn container_names_map_to_dns_labels() {
        for (docker, label) in [
            ("web-1", Some("web-1")),
            ("Web_1", Some("web-1")),
            ("billing.batch_job", Some("billing-batch-job")),
            ("__weird__name__", Some("weird-name")),
            ("caf\u{e9}-1", Some("caf-1")),
            ("___", None),
            ("\u{1f980}", None),
        ] {
            assert_eq!(dns_label_from(docker).as_deref(), label, "{docker:?}");
        }
        let long = "a".repeat(62) + "_b";
        let mapped = dns_label_from(&long).unwrap();
        assert_eq!(
            mapped,
            "a".repeat(62),
            "a trailing '-' left by the cut is trimmed"
        );
        assert!(validate_dns_label(&mapped).is_ok());
    }

    #[test]
    fn zones_are_dotted_labels() {
        assert!(validate_dns_name("muster").is_ok());
        assert!(validate_dns_name("muster.example.").is_ok());
        assert!(validate_dns_name("muster..example").is_err());
        assert!(validate_dns_name("bad_zone").is_err());
    }
}
