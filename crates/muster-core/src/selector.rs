//! Label selectors, written as Kubernetes writes them:
//! `app=web,env in (prod,staging),!canary`.
//!
//! A selector is a comma-separated conjunction of requirements:
//! `k=v` and `k==v` (equal), `k!=v` (not equal or absent), `k in (a,b)`,
//! `k notin (a,b)` (absent also matches), `k` (present) and `!k` (absent).
//! The empty selector matches everything.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One condition on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn(String, Vec<String>),
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
}

/// A selector that cannot be parsed, with the 1-based column where reading
/// stopped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad selector at column {column}: {message}")]
pub struct SelectorError {
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// What was expected there.
    pub message: String,
}

impl Selector {
    /// The selector that matches every record.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Whether the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The `(key, value)` pairs that a match must carry, which an index can
    /// use to narrow its search before checking the whole selector.
    pub fn required_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.requirements.iter().filter_map(|r| match r {
            Requirement::Equals(k, v) => Some((k.as_str(), v.as_str())),
            Requirement::In(k, vs) if vs.len() == 1 => Some((k.as_str(), vs[0].as_str())),
            _ => None,
        })
    }
}

impl Requirement {
    /// Whether a set of labels satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| labels.get(k).map(String::as_str);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<Selector, SelectorError> {
        Parser::new(input).selector()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::NotExists(k) => write!(f, "!{k}"),
        }
    }
}

/// A hand-written recursive-descent parser over the selector's characters.
struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    input: &'a str,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Parser<'a> {
        Parser {
            chars: input.chars().collect(),
            pos: 0,
            input,
        }
    }

    fn error(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            column: self.pos + 1,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        let matches = self.chars.len() >= self.pos + n
            && self.chars[self.pos..self.pos + n]
                .iter()
                .copied()
                .eq(s.chars());
        if matches {
            self.pos += n;
        }
        matches
    }

    fn take_while(&mut self, pred: fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(pred) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.input.trim().is_empty() {
            return Ok(Selector { requirements });
        }
        loop {
            self.skip_spaces();
            requirements.push(self.requirement()?);
            self.skip_spaces();
            match self.peek() {
                None => return Ok(Selector { requirements }),
                Some(',') => self.pos += 1,
                Some(c) => return Err(self.error(format!("expected ',' or end, found {c:?}"))),
            }
        }
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            Some(c) if c.is_ascii_alphanumeric() => {}
            Some(c) => return Err(self.error(format!("expected a label key, found {c:?}"))),
            None => return Err(self.error("expected a label key, found the end")),
        }
        let key = self.take_while(is_key_char);
        if key.len() > 253 {
            return Err(self.error("label key longer than 253 characters"));
        }
        Ok(key)
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        let value = self.take_while(is_value_char);
        if value.len() > 63 {
            return Err(self.error("label value longer than 63 characters"));
        }
        Ok(value)
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.eat("!") {
            self.skip_spaces();
            return Ok(Requirement::NotExists(self.key()?));
        }
        let key = self.key()?;
        self.skip_spaces();
        if self.eat("==") || self.eat("=") {
            self.skip_spaces();
            return Ok(Requirement::Equals(key, self.value()?));
        }
        if self.eat("!=") {
            self.skip_spaces();
            return Ok(Requirement::NotEquals(key, self.value()?));
        }
        // `in` and `notin` must be followed by a space or '(' so that a key
        // such as `app,inner` is never misread.
        let word_end = |p: &Parser| matches!(p.peek(), Some('(') | Some(' ') | Some('\t'));
        let start = self.pos;
        if self.eat("notin") && word_end(self) {
            return Ok(Requirement::NotIn(key, self.set()?));
        }
        self.pos = start;
        if self.eat("in") && word_end(self) {
            return Ok(Requirement::In(key, self.set()?));
        }
        self.pos = start;
        match self.peek() {
            None | Some(',') => Ok(Requirement::Exists(key)),
            Some(c) => Err(self.error(format!(
                "expected '=', '==', '!=', 'in', 'notin', ',' or end after key {key:?}, found {c:?}"
            ))),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.skip_spaces();
        if !self.eat("(") {
            return Err(self.error("expected '(' to open a set of values"));
        }
        let mut values = Vec::new();
        loop {
            self.skip_spaces();
            values.push(self.value()?);
            self.skip_spaces();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(values);
                }
                Some(c) => return Err(self.error(format!("expected ',' or ')', found {c:?}"))),
                None => return Err(self.error("expected ')' to close the set of values")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(selector: &str, printed: &str) {
        let parsed: Selector = selector
            .parse()
            .unwrap_or_else(|e| panic!("{selector:?}: {e}"));
        assert_eq!(parsed.to_string(), printed, "{selector:?}");
        let again: Selector = printed.parse().expect("printed selector parses");
        assert_eq!(again, parsed, "round trip of {selector:?}");
    }

    fn check_error(selector: &str, column: usize) {
        let err = selector
            .parse::<Selector>()
            .expect_err(&format!("{selector:?} parsed"));
        assert_eq!(err.column, column, "{selector:?}: {err}");
    }

    #[test]
    fn valid_selectors_parse_and_print() {
        check("", "");
        check("app=web", "app=web");
        check("app==web", "app=web");
        check(" app = web , env=prod ", "app=web,env=prod");
        check("app!=web", "app!=web");
        check("env in (prod, staging)", "env in (prod,staging)");
        check("env notin (dev)", "env notin (dev)");
        check("canary", "canary");
        check("!canary", "!canary");
        check(
            "app=web,env in (prod,staging),!canary",
            "app=web,env in (prod,staging),!canary",
        );
        check("example.com/team=ops", "example.com/team=ops");
        check("inner=1,index", "inner=1,index");
        check("app=", "app=");
    }

    #[test]
    fn invalid_selectors_point_at_the_column() {
        check_error("=web", 1);
        check_error("app=web,", 9);
        check_error("app=we b", 8);
        check_error("env in prod", 8);
        check_error("env in (prod", 13);
        check_error("app=web;env=prod", 8);
        check_error("app>3", 4);
        check_error("!", 2);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn key() -> impl Strategy<Value = String> {
            "[a-z][a-z0-9._/-]{0,8}"
        }

        fn value() -> impl Strategy<Value = String> {
            "[a-z0-9][a-z0-9._-]{0,8}"
        }

        fn requirement() -> impl Strategy<Value = Requirement> {
            prop_oneof![
                (key(), prop_oneof![value(), Just(String::new())])
                    .prop_map(|(k, v)| Requirement::Equals(k, v)),
                (key(), value()).prop_map(|(k, v)| Requirement::NotEquals(k, v)),
                (key(), prop::collection::vec(value(), 1..4))
                    .prop_map(|(k, vs)| Requirement::In(k, vs)),
                (key(), prop::collection::vec(value(), 1..4))
                    .prop_map(|(k, vs)| Requirement::NotIn(k, vs)),
                key().prop_map(Requirement::Exists),
                key().prop_map(Requirement::NotExists),
            ]
        }

        proptest! {
            /// Printing a selector and parsing it back gives the same
            /// selector: what `muster ls` prints can be pasted back.
            #[test]
            fn parse_after_print_is_the_identity(
                requirements in prop::collection::vec(requirement(), 0..5)
            ) {
                let selector = Selector { requirements };
                let printed = selector.to_string();
                let parsed: Selector = printed
                    .parse()
                    .map_err(|e| TestCaseError::fail(format!("{printed:?}: {e}")))?;
                prop_assert_eq!(parsed, selector);
            }

            /// No input makes the parser panic; an error always points
            /// inside the input or just past its end.
            #[test]
            fn any_input_parses_or_points_at_a_column(input in "\\PC{0,40}") {
                if let Err(e) = input.parse::<Selector>() {
                    prop_assert!(e.column >= 1 && e.column <= input.chars().count() + 1);
                }
            }
        }
    }

    #[test]
    fn requirements_match_as_kubernetes_defines_them() {
        let web = labels(&[("app", "web"), ("env", "prod")]);
        let none = labels(&[]);
        let cases = [
            ("app=web", true, false),
            ("app!=web", false, true),
            ("app!=db", true, true),
            ("env in (prod,staging)", true, false),
            ("env notin (prod)", false, true),
            ("env notin (dev)", true, true),
            ("app", true, false),
            ("!app", false, true),
            ("app=web,env=dev", false, false),
            ("", true, true),
        ];
        for (selector, on_web, on_none) in cases {
            let s: Selector = selector.parse().expect(selector);
            assert_eq!(s.matches(&web), on_web, "{selector:?} on web");
            assert_eq!(s.matches(&none), on_none, "{selector:?} on no labels");
        }
    }
}
