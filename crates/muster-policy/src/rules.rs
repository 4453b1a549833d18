//! The policy file and how one record is judged against it.
//!
//! ```toml
//! [[rule]]
//! name = "system-role-n"
//! description = "containers are named <system>-<role>-<n>"
//! selector = "!muster.policy.exempt"   # which records; default: all
//! severity = "error"                   # "warning" (default) or "error"
//! name_pattern = '^[a-z][a-z0-9]*-[a-z][a-z0-9]*-[0-9]+$'
//! required_labels = ["owner", "system"]
//! allowed_values = { env = ["prod", "staging", "dev"] }
//! forbidden_names = ["test", "tmp"]
//! exclude_from_dns = false             # true: violators are not answered
//!
//! [duplicates]
//! severity = "warning"
//! ```
//!
//! A `name_pattern` must match the whole name. `allowed_values` constrains
//! a label's value when the label is present (list it in `required_labels`
//! too to require it). Forbidden names match in any case. Unknown fields
//! are errors, so a typo never silently weakens the policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use muster_core::{LineIndex, Record, Selector};
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The rule name given to duplicate names across hosts.
pub const DUPLICATE_RULE: &str = "duplicate-name";

/// The rule name given to a node name claimed by several running agents.
pub const DUPLICATE_NODE_RULE: &str = "duplicate-node";

/// How bad breaking a rule is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Reported.
    #[default]
    Warning,
    /// Reported as an error.
    Error,
}

impl Severity {
    /// The lower-case name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// Why a policy file was refused.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (unknown fields included).
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// The parser's explanation.
        message: String,
    },
    /// A rule that cannot be applied.
    #[error("{path}:{line}: rule {rule:?}: {reason}")]
    Rule {
        /// The file.
        path: PathBuf,
        /// 1-based line where the rule starts.
        line: usize,
        /// The rule's name.
        rule: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
    #[serde(default)]
    duplicates: Duplicates,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    selector: String,
    #[serde(default)]
    severity: Severity,
    name_pattern: Option<String>,
    #[serde(default)]
    required_labels: Vec<String>,
    #[serde(default)]
    allowed_values: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    forbidden_names: Vec<String>,
    #[serde(default)]
    exclude_from_dns: bool,
}

/// How duplicate names across hosts are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Duplicates {
    /// Severity of a duplicate.
    #[serde(default)]
    pub severity: Severity,
}

/// One rule, checked.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name, reported with each violation.
    pub name: String,
    /// What the rule asks, for people.
    pub description: String,
    /// The records it applies to.
    pub selector: Selector,
    /// How bad breaking it is.
    pub severity: Severity,
    name_pattern: Option<Regex>,
    required_labels: Vec<String>,
    allowed_values: BTreeMap<String, Vec<String>>,
    forbidden_names: Vec<String>,
    /// Violators are left out of DNS answers.
    pub exclude_from_dns: bool,
}

/// A cluster-wide naming policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    duplicates: Duplicates,
    digest: String,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(path, &text)
    }

    /// Parses the text of a policy file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let lines = LineIndex::new(text);
        let file: File = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| lines.line_of(s.start)),
            message: e.message().trim().to_owned(),
        })?;
        // The digest is of the parsed policy, not of the text: comments and
        // layout may differ between hosts, the rules may not.
        let canonical = serde_json::to_vec(&file).unwrap_or_default();
        let digest: String = Sha256::digest(&canonical)
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut rules: Vec<Rule> = Vec::with_capacity(file.rule.len());
        for spanned in file.rule {
            let line = lines.line_of(spanned.span().start);
            let raw = spanned.into_inner();
            let bad = |reason: String| PolicyError::Rule {
                path: path.to_owned(),
                line,
                rule: raw.name.clone(),
                reason,
            };
            if raw.name.is_empty() || raw.name == DUPLICATE_RULE || raw.name == DUPLICATE_NODE_RULE
            {
                return Err(bad(format!(
                    "a rule needs a name other than {DUPLICATE_RULE:?} and {DUPLICATE_NODE_RULE:?}"
                )));
            }
            if rules.iter().any(|r| r.name == raw.name) {
                return Err(bad("the name is used by an earlier rule".into()));
            }
            let selector: Selector = raw
                .selector
                .parse()
                .map_err(|e| bad(format!("selector: {e}")))?;
            let name_pattern = raw
                .name_pattern
                .as_deref()
                .map(|p| Regex::new(&format!("^(?:{p})$")))
                .transpose()
                .map_err(|e| bad(format!("name_pattern: {e}")))?;
            if name_pattern.is_none()
                && raw.required_labels.is_empty()
                && raw.allowed_values.is_empty()
                && raw.forbidden_names.is_empty()
            {
                return Err(bad(
                    "it checks nothing: give name_pattern, required_labels, allowed_values or forbidden_names"
                        .into(),
                ));
            }
            rules.push(Rule {
                name: raw.name.clone(),
                description: raw.description.clone(),
                selector,
                severity: raw.severity,
                name_pattern,
                required_labels: raw.required_labels.clone(),
                allowed_values: raw.allowed_values.clone(),
                forbidden_names: raw
                    .forbidden_names
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect(),
                exclude_from_dns: raw.exclude_from_dns,
            });
        }
        Ok(Policy {
            rules,
            duplicates: file.duplicates,
            digest,
        })
    }

    /// A short digest of the rules (12 hex digits): agents that judge by
    /// the same policy show the same digest.
    pub fn digest(&self) -> &str {
        if self.digest.is_empty() {
            "none"
        } else {
            &self.digest
        }
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How duplicates are reported.
    pub fn duplicates(&self) -> Duplicates {
        self.duplicates
    }

    /// The rules `record` breaks, each with why.
    pub fn judge(&self, record: &Record) -> Vec<Finding> {
        self.rules
            .iter()
            .filter(|rule| rule.selector.matches(&record.labels))
            .filter_map(|rule| {
                let why = rule.reasons(record);
                (!why.is_empty()).then(|| Finding {
                    rule: rule.name.clone(),
                    severity: rule.severity,
                    why: why.join("; "),
                    exclude_from_dns: rule.exclude_from_dns,
                })
            })
            .collect()
    }
}

impl Rule {
    fn reasons(&self, record: &Record) -> Vec<String> {
        let mut why = Vec::new();
        if let Some(pattern) = &self.name_pattern
            && !pattern.is_match(&record.name)
        {
            why.push(format!(
                "name {:?} does not match {}",
                record.name,
                pattern
                    .as_str()
                    .trim_start_matches("^(?:")
                    .trim_end_matches(")$")
            ));
        }
        if self
            .forbidden_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&record.name))
        {
            why.push(format!("name {:?} is forbidden", record.name));
        }
        for label in &self.required_labels {
            if !record.labels.contains_key(label) {
                why.push(format!("label {label:?} is missing"));
            }
        }
        for (label, allowed) in &self.allowed_values {
            if let Some(value) = record.labels.get(label)
                && !allowed.iter().any(|a| a == value)
            {
                why.push(format!(
                    "label {label}={value:?} is not one of {}",
                    allowed.join(", ")
                ));
            }
        }
        why
    }
}

/// One rule a record breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's name.
    pub rule: String,
    /// Its severity.
    pub severity: Severity,
    /// Why, for people.
    pub why: String,
    /// The rule keeps violators out of DNS.
    pub exclude_from_dns: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONVENTION: &str = r#"
[[rule]]
name = "system-role-n"
selector = "!muster.policy.exempt"
severity = "error"
name_pattern = '[a-z][a-z0-9]*-[a-z][a-z0-9]*-[0-9]+'
required_labels = ["owner", "system"]
allowed_values = { env = ["prod", "staging", "dev"] }
forbidden_names = ["test-box-1"]
"#;

    fn policy(text: &str) -> Policy {
        Policy::parse(Path::new("policy.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn record(name: &str, labels: &[(&str, &str)]) -> Record {
        let mut r = Record::new(name, name, muster_core::Source::Static);
        r.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    #[test]
    fn records_are_judged_by_every_rule_that_selects_them() {
        let p = policy(CONVENTION);
        let owned = [("owner", "ops"), ("system", "billing")];
        let cases: Vec<(Record, Vec<&str>)> = vec![
            (record("billing-batch-1", &owned), vec![]),
            (
                record("billing_batch", &owned),
                vec![r#"name "billing_batch" does not match [a-z][a-z0-9]*-[a-z][a-z0-9]*-[0-9]+"#],
            ),
            (
                record("billing-batch-1", &[("owner", "ops")]),
                vec![r#"label "system" is missing"#],
            ),
            (
                record(
                    "billing-batch-1",
                    &[("owner", "ops"), ("system", "b"), ("env", "qa")],
                ),
                vec![r#"label env="qa" is not one of prod, staging, dev"#],
            ),
            (
                record("Test-Box-1", &owned),
                vec![
                    r#"name "Test-Box-1" does not match [a-z][a-z0-9]*-[a-z][a-z0-9]*-[0-9]+; name "Test-Box-1" is forbidden"#,
                ],
            ),
            // Exempt by the rule's selector.
            (
                record("whatever", &[("muster.policy.exempt", "yes")]),
                vec![],
            ),
        ];
        for (r, want) in cases {
            let found: Vec<String> = p.judge(&r).into_iter().map(|f| f.why).collect();
            assert_eq!(found, want, "{}", r.name);
        }
        assert_eq!(p.judge(&record("x", &[]))[0].severity, Severity::Error);
    }

    #[test]
    fn the_digest_ignores_layout_and_follows_the_rules() {
        let a = policy(CONVENTION);
        let b = policy(&format!(
            "# a comment\n\n{}",
            CONVENTION.replace(" = ", "=")
        ));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 12);
        let c = policy(&CONVENTION.replace("\"error\"", "\"warning\""));
        assert_ne!(a.digest(), c.digest());
        assert_eq!(Policy::default().digest(), "none");
    }

    #[test]
    fn bad_policies_are_refused_with_file_line_and_reason() {
        let cases = [
            (
                "[[rule]]\nname = \"a\"\nname_pattern = \"(\"\n",
                "policy.toml:1: rule \"a\": name_pattern",
            ),
            (
                "[[rule]]\nname = \"a\"\nselector = \"a in (b\"\nrequired_labels = [\"x\"]\n",
                "policy.toml:1: rule \"a\": selector",
            ),
            (
                "[[rule]]\nname = \"a\"\nname_patern = \"x\"\n",
                "policy.toml:3: unknown field `name_patern`",
            ),
            ("[[rule]]\nname = \"a\"\n", "it checks nothing"),
            (
                "[[rule]]\nname = \"a\"\nrequired_labels = [\"x\"]\n[[rule]]\nname = \"a\"\nrequired_labels = [\"y\"]\n",
                "policy.toml:4: rule \"a\": the name is used",
            ),
            (
                "[[rule]]\nname = \"a\"\nseverity = \"fatal\"\nrequired_labels = [\"x\"]\n",
                "policy.toml:3",
            ),
            (
                "[[rule]]\nname = \"duplicate-name\"\nrequired_labels = [\"x\"]\n",
                "needs a name other than",
            ),
            (
                "[[rule]]\nname = \"duplicate-node\"\nrequired_labels = [\"x\"]\n",
                "needs a name other than",
            ),
        ];
        for (text, want) in cases {
            let err = Policy::parse(Path::new("policy.toml"), text)
                .expect_err(text)
                .to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
