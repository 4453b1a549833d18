//! The status page at `/`: the members with their liveness, the records
//! (searched by label selector, name, host and state, a page at a time)
//! and the naming policy's violations, as one server-rendered HTML page
//! that needs no JavaScript and no other file.
//!
//! The page answers from one snapshot and one violations set, loaded once
//! per request. Only the rows of the page asked for are rendered: with
//! 50,000 records a request filters and sorts references to them and
//! formats 100. Every value comes from the network (record names, labels,
//! member meta) or from the query string, so all of it goes through
//! maud's escaping; the only unescaped text is the style sheet below.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use muster_core::{
    Health, LastHeard, Liveness, Member, Record, Selector, Snapshot, State as RecordState,
};
use muster_policy::{Severity, Violations};
use serde::Deserialize;

use super::HttpState;

/// Records shown per page.
const PAGE_SIZE: usize = 100;
/// Violations listed at most; `muster violations` lists every one.
const MAX_VIOLATIONS_SHOWN: usize = 500;
/// Label values longer than this many characters are cut on the page (the
/// whole value is in the label's tooltip).
const MAX_LABEL_VALUE_CHARS: usize = 60;

/// The query string of the page. Every field is text, so that a bad value
/// (`?page=x`) still gets the page, with an error where it matters.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StatusQuery {
    /// Label selector, as `muster ls -l` takes it.
    #[serde(default)]
    selector: String,
    /// Substring of a record's name or alias, in any case.
    #[serde(default)]
    q: String,
    /// Only the records of this host.
    #[serde(default)]
    host: String,
    /// Only records in this state.
    #[serde(default)]
    state: String,
    /// 1-based page number.
    #[serde(default)]
    page: String,
}

/// `GET /`.
pub(super) async fn page(
    State(state): State<HttpState>,
    Query(query): Query<StatusQuery>,
) -> Response {
    let judged = state.judged.load_full();
    let (status, markup) = render(
        &judged.snapshot,
        &judged.violations,
        &query,
        Some(&state.node_name),
        &state.heard,
        SystemTime::now(),
    );
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Html(markup.into_string()),
    )
        .into_response()
}

/// The records the query asks for, parsed.
struct Filter {
    selector: Selector,
    name: String,
    host: String,
    state: Option<RecordState>,
}

impl Filter {
    /// Reads the query; the error is shown on the page.
    fn parse(query: &StatusQuery) -> Result<Filter, String> {
        let selector: Selector = query
            .selector
            .trim()
            .parse()
            .map_err(|e| format!("selector {:?}: {e}", query.selector))?;
        let state = match query.state.as_str() {
            "" => None,
            s => Some(
                s.parse::<RecordState>()
                    .map_err(|_| format!("unknown state {s:?}"))?,
            ),
        };
        Ok(Filter {
            selector,
            name: query.q.trim().to_owned(),
            host: query.host.clone(),
            state,
        })
    }

    /// Whether `r` passes the name, host and state filters (the selector
    /// is checked by whoever lists the records).
    fn keeps(&self, r: &Record) -> bool {
        (self.host.is_empty() || r.host == self.host)
            && self.state.is_none_or(|s| r.state == s)
            && (self.name.is_empty() || r.names().any(|n| contains_ignoring_case(n, &self.name)))
    }

    /// Whether the query lists the whole directory.
    fn is_everything(&self) -> bool {
        self.selector.is_empty()
            && self.name.is_empty()
            && self.host.is_empty()
            && self.state.is_none()
    }
}

/// Whether `needle` is in `haystack`, ASCII letters in any case (record
/// names are DNS labels: ASCII).
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// One page of the matching records.
struct RecordPage {
    /// The records of this page, in order.
    rows: Vec<Arc<Record>>,
    /// How many records match.
    total: usize,
    /// This page, from 1.
    number: usize,
    /// How many pages there are (at least 1).
    pages: usize,
    /// Index of the first row among all matching records.
    first: usize,
}

/// Sorted by name, then host and id, as `muster ls` sorts.
fn by_name(a: &&Arc<Record>, b: &&Arc<Record>) -> std::cmp::Ordering {
    (&a.name, &a.host, &a.id).cmp(&(&b.name, &b.host, &b.id))
}

/// The records `filter` keeps, page `requested` of them (clamped to the
/// pages there are). The matching records are collected as references and
/// only the page's rows are cloned (as `Arc`s).
fn record_page(snapshot: &Snapshot, filter: &Filter, requested: usize) -> RecordPage {
    let selected: Vec<Arc<Record>>;
    let (mut matching, sorted): (Vec<&Arc<Record>>, bool) =
        if filter.selector.required_pairs().next().is_some() {
            // The label index narrows the records; select() sorts them.
            selected = snapshot.select(&filter.selector);
            (selected.iter().filter(|r| filter.keeps(r)).collect(), true)
        } else {
            let all = snapshot
                .records()
                .filter(|r| filter.selector.matches(&r.labels) && filter.keeps(r))
                .collect();
            (all, false)
        };
    let total = matching.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let number = requested.clamp(1, pages);
    let first = ((number - 1) * PAGE_SIZE).min(total);
    let end = (first + PAGE_SIZE).min(total);
    if !sorted {
        sort_window(&mut matching, first, end);
    }
    let rows = matching[first..end].iter().map(|r| Arc::clone(r)).collect();
    RecordPage {
        rows,
        total,
        number,
        pages,
        first,
    }
}

/// Puts in `records[first..end]` the records that sorting all of them
/// would put there, sorted: two selections in linear time and a sort of
/// one page, instead of sorting 50,000 records to show 100.
fn sort_window(records: &mut [&Arc<Record>], first: usize, end: usize) {
    if first > 0 && first < records.len() {
        records.select_nth_unstable_by(first, by_name);
    }
    let rest = &mut records[first..];
    if end - first < rest.len() {
        rest.select_nth_unstable_by(end - first, by_name);
    }
    records[first..end].sort_unstable_by(by_name);
}

/// Renders the page. A query that cannot be read gets status 400 and the
/// page with the error in place of the records.
fn render(
    snapshot: &Snapshot,
    violations: &Violations,
    query: &StatusQuery,
    node_name: Option<&str>,
    heard: &LastHeard,
    now: SystemTime,
) -> (StatusCode, Markup) {
    let me = node_name.and_then(|n| snapshot.members().iter().find(|m| m.name == n));
    let requested = query.page.trim().parse::<usize>().unwrap_or(1);
    let listing = Filter::parse(query).map(|f| {
        let page = record_page(snapshot, &f, requested);
        (f, page)
    });
    let status = if listing.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let members = snapshot.members();
    let alive = members
        .iter()
        .filter(|m| m.liveness == Liveness::Alive)
        .count();
    let title = match me {
        Some(m) => format!("muster · {}", m.name),
        None => "muster".to_owned(),
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 {
                        "muster"
                        @if let Some(m) = me {
                            span.node { "node " strong { (m.name) } }
                        }
                    }
                    p.summary {
                        "directory revision " strong { (snapshot.revision()) }
                        " · " strong { (thousands(snapshot.len())) } " records"
                        " · " strong { (members.len()) } " members (" (alive) " alive)"
                        " · " strong { (thousands(violations.len())) } " violations"
                        " · policy " span.mono { (violations.digest) }
                        " · rendered " (humantime::format_rfc3339_seconds(now))
                    }
                    nav {
                        a href="#members" { "Members" }
                        a href="#records" { "Records" }
                        a href="#violations" { "Violations" }
                    }
                }
                main {
                    (members_section(members, me, violations, heard, now))
                    (records_section(snapshot, query, &listing, now))
                    (violations_section(violations, now))
                }
            }
        }
    };
    (status, markup)
}

fn members_section(
    members: &[Member],
    me: Option<&Member>,
    violations: &Violations,
    heard: &LastHeard,
    now: SystemTime,
) -> Markup {
    html! {
        section #members {
            h2 { "Members " span.count { (members.len()) } }
            @if members.is_empty() {
                p.muted { "No member list yet: this agent has not joined gossip." }
            } @else {
                table {
                    thead { tr {
                        th { "name" } th { "liveness" } th { "gossip address" }
                        th.num { "records" } th { "docker" } th { "version" }
                        th { "policy" } th.num { "generation" } th { "behind" }
                    } }
                    tbody {
                        @for m in members {
                            @let policy = m.meta.get("policy").map_or("", String::as_str);
                            @let docker = m.meta.get("docker").map_or("", String::as_str);
                            @let docker_error = m.meta.get("docker_error").map_or("", String::as_str);
                            tr {
                                td {
                                    strong { (m.name) }
                                    @if me.is_some_and(|me| me.name == m.name) {
                                        " " span.badge.idle { "this agent" }
                                    }
                                }
                                td { span.badge.(liveness_class(m.liveness)) { (m.liveness.as_str()) } }
                                td.mono { (m.gossip_addr) }
                                td.num {
                                    (thousands(m.records))
                                    @if !m.visible { " " span.muted title="dead past the grace: its records left the directory" { "(gone)" } }
                                }
                                td {
                                    @if docker.is_empty() {
                                        span.muted { "–" }
                                    } @else {
                                        span.badge.(docker_class(docker)) title=(docker_error) { (docker) }
                                        @if !docker_error.is_empty() {
                                            div.why { (docker_error) }
                                        }
                                    }
                                }
                                td.mono { (m.meta.get("version").map_or("–", String::as_str)) }
                                td.mono {
                                    @if policy.is_empty() {
                                        span.muted { "–" }
                                    } @else if policy != violations.digest {
                                        span.badge.warn title="differs from this agent's policy" { (policy) }
                                    } @else {
                                        (policy)
                                    }
                                }
                                td.num.mono { (m.generation) }
                                td {
                                    @if let Some(behind) = heard.behind(&m.name) {
                                        @let secs = now.duration_since(behind.since).unwrap_or_default().as_secs_f64();
                                        span.badge.warn title="other agents hold changes of this member that this agent lacks" {
                                            (format!("{secs:.1} s, {} version{}", behind.versions, if behind.versions == 1 { "" } else { "s" }))
                                        }
                                    } @else {
                                        span.muted { "–" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn records_section(
    snapshot: &Snapshot,
    query: &StatusQuery,
    listing: &Result<(Filter, RecordPage), String>,
    now: SystemTime,
) -> Markup {
    let mut hosts: Vec<&str> = snapshot.members().iter().map(|m| m.name.as_str()).collect();
    if !query.host.is_empty() && !hosts.contains(&query.host.as_str()) {
        hosts.push(&query.host);
    }
    html! {
        section #records {
            h2 { "Records " span.count { (thousands(snapshot.len())) } }
            form.search method="get" action="/" {
                label {
                    "label selector"
                    input type="text" name="selector" value=(query.selector)
                        placeholder="app=web,env in (prod,staging),!canary" size="42";
                }
                label {
                    "name contains"
                    input type="search" name="q" value=(query.q) placeholder="web-" size="16";
                }
                label {
                    "host"
                    select name="host" {
                        option value="" { "any" }
                        @for h in &hosts {
                            option value=(h) selected[*h == query.host] { (h) }
                        }
                    }
                }
                label {
                    "state"
                    select name="state" {
                        option value="" { "any" }
                        @for s in RecordState::ALL {
                            option value=(s.as_str()) selected[s.as_str() == query.state] { (s.as_str()) }
                        }
                    }
                }
                button type="submit" { "Search" }
                a.clear href="/" { "clear" }
            }
            @match listing {
                Err(why) => {
                    p.error { strong { "Bad request: " } (why) }
                }
                Ok((filter, page)) => {
                    (pager(query, filter, page, snapshot.len()))
                    @if !page.rows.is_empty() {
                        table.records {
                            thead { tr {
                                th { "name" } th { "host" } th { "state" } th { "health" }
                                th { "addresses" } th { "ports" } th { "labels" } th { "image" }
                                th { "started" }
                            } }
                            tbody {
                                @for r in &page.rows {
                                    (record_row(r, now))
                                }
                            }
                        }
                        @if page.pages > 1 {
                            (pager(query, filter, page, snapshot.len()))
                        }
                    }
                }
            }
        }
    }
}

/// The count and the links to other pages.
fn pager(query: &StatusQuery, filter: &Filter, page: &RecordPage, directory_len: usize) -> Markup {
    let last_row = (page.first + page.rows.len()).min(page.total);
    html! {
        nav.pages {
            span.range {
                @if page.total == 0 {
                    @if filter.is_everything() { "No records." } @else { "No record matches." }
                } @else {
                    "records " strong { (thousands(page.first + 1)) "–" (thousands(last_row)) }
                    " of " strong { (thousands(page.total)) }
                    @if !filter.is_everything() {
                        " matching (" (thousands(directory_len)) " in the directory)"
                    }
                }
            }
            @if page.pages > 1 {
                @if page.number > 1 {
                    a href=(page_link(query, 1)) { "« first" }
                    a href=(page_link(query, page.number - 1)) rel="prev" { "‹ previous" }
                } @else {
                    span.off { "« first" } span.off { "‹ previous" }
                }
                span { "page " (thousands(page.number)) " of " (thousands(page.pages)) }
                @if page.number < page.pages {
                    a href=(page_link(query, page.number + 1)) rel="next" { "next ›" }
                    a href=(page_link(query, page.pages)) { "last »" }
                } @else {
                    span.off { "next ›" } span.off { "last »" }
                }
            }
        }
    }
}

fn record_row(r: &Record, now: SystemTime) -> Markup {
    let started = r
        .started_at
        .map(|s| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64));
    html! {
        tr {
            td {
                strong.mono { (r.name) }
                @if !r.aliases.is_empty() {
                    div.muted.small { "also " (r.aliases.join(", ")) }
                }
            }
            td { (r.host) }
            td { span.badge.(state_class(r.state)) { (r.state.as_str()) } }
            td {
                @if r.health == Health::None {
                    span.muted { "–" }
                } @else {
                    span.badge.(health_class(r.health)) { (r.health.as_str()) }
                }
            }
            td.mono {
                @for ip in r.routable_addresses() { div { (ip) } }
            }
            td.mono {
                @for p in &r.ports { div { (p) } }
            }
            td.labels {
                @for (k, v) in &r.labels {
                    @let shown = clip(v, MAX_LABEL_VALUE_CHARS);
                    span.label title=[(shown.len() < v.len()).then_some(v)] {
                        (k) "=" (shown) @if shown.len() < v.len() { "…" }
                    }
                    " "
                }
            }
            td.mono.small {
                @if r.image.is_empty() { span.muted { "–" } } @else { (r.image) }
            }
            td.nowrap {
                @match started {
                    Some(t) => span title=(humantime::format_rfc3339_seconds(t)) { (age(t, now)) },
                    None => span.muted { "–" },
                }
            }
        }
    }
}

fn violations_section(violations: &Violations, now: SystemTime) -> Markup {
    html! {
        section #violations {
            h2 { "Violations " span.count { (thousands(violations.len())) } }
            @if !violations.mismatched.is_empty() {
                div.warnbox {
                    strong { "Members with a different policy" }
                    " (this agent's is " span.mono { (violations.digest) } "; they may judge otherwise):"
                    ul {
                        @for (member, digest) in &violations.mismatched {
                            li { strong { (member) } " " span.mono { (digest) } }
                        }
                    }
                }
            }
            @if violations.is_empty() {
                p.muted { "No record breaks the naming policy (" span.mono { (violations.digest) } ")." }
            } @else {
                table {
                    thead { tr {
                        th { "rule" } th { "severity" } th { "name" } th { "host" }
                        th { "why" } th { "since" }
                    } }
                    tbody {
                        @for v in violations.iter().take(MAX_VIOLATIONS_SHOWN) {
                            tr {
                                td.mono {
                                    (v.rule)
                                    @if v.exclude_from_dns { " " span.badge.idle title="violators are left out of DNS" { "hidden from DNS" } }
                                }
                                td { span.badge.(severity_class(v.severity)) { (v.severity.as_str()) } }
                                td.mono { strong { (v.name) } }
                                td { (v.host) }
                                td.why { (v.why) }
                                td.nowrap {
                                    span title=(humantime::format_rfc3339_seconds(v.since)) { (age(v.since, now)) }
                                }
                            }
                        }
                    }
                }
                @if violations.len() > MAX_VIOLATIONS_SHOWN {
                    p.muted {
                        "The first " (MAX_VIOLATIONS_SHOWN) " of " (thousands(violations.len()))
                        " are listed; " code { "muster violations" } " lists every one."
                    }
                }
            }
        }
    }
}

/// `/?...&page=N`, keeping the other fields of the query.
fn page_link(query: &StatusQuery, page: usize) -> String {
    let mut link = form_urlencoded::Serializer::for_suffix(String::from("/?"), 2);
    for (key, value) in [
        ("selector", query.selector.as_str()),
        ("q", query.q.as_str()),
        ("host", query.host.as_str()),
        ("state", query.state.as_str()),
    ] {
        if !value.is_empty() {
            link.append_pair(key, value);
        }
    }
    link.append_pair("page", &page.to_string());
    link.finish()
}

/// `s` cut to at most `max_chars` characters.
fn clip(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// `50000` as `50,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    // The first group has 1 to 3 digits, every later one 3.
    let (head, rest) = digits.split_at((digits.len() - 1) % 3 + 1);
    let mut out = String::from(head);
    for group in rest.as_bytes().chunks(3) {
        out.push(',');
        out.extend(group.iter().map(|&d| char::from(d)));
    }
    out
}

/// How long ago `then` was, in its largest whole unit: `12s ago`, `3m ago`,
/// `5h ago`, `2d ago`. A time ahead of this host's clock (another host's
/// clock may be ahead) is `just now`.
fn age(then: SystemTime, now: SystemTime) -> String {
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    match secs {
        0 => "just now".to_owned(),
        1..60 => format!("{secs}s ago"),
        60..3_600 => format!("{}m ago", secs / 60),
        3_600..86_400 => format!("{}h ago", secs / 3_600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn liveness_class(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "ok",
        Liveness::Joining => "idle",
        Liveness::Suspect => "warn",
        Liveness::Dead | Liveness::Conflict => "bad",
    }
}

fn state_class(s: RecordState) -> &'static str {
    match s {
        RecordState::Running => "ok",
        RecordState::Restarting | RecordState::Paused => "warn",
        RecordState::Created | RecordState::Exited => "idle",
    }
}

fn health_class(h: Health) -> &'static str {
    match h {
        Health::Healthy => "ok",
        Health::Starting => "warn",
        Health::Unhealthy => "bad",
        Health::None => "idle",
    }
}

fn severity_class(s: Severity) -> &'static str {
    match s {
        Severity::Error => "bad",
        Severity::Warning => "warn",
    }
}

fn docker_class(state: &str) -> &'static str {
    match state {
        "connected" => "ok",
        "disconnected" => "bad",
        "connecting" => "warn",
        _ => "idle",
    }
}

/// The page's only style sheet; no other file is fetched.
const STYLE: &str = r#"
:root { --fg: #1d232a; --muted: #5e6873; --line: #dde2e7; --head: #f2f4f7; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #1f2933; color: #fff; padding: 14px 24px 10px; }
header h1 { margin: 0; font-size: 22px; font-weight: 650; }
header h1 .node { font-size: 16px; font-weight: 400; color: #cbd2d9; margin-left: 14px; }
header h1 .node strong { color: #fff; }
header .summary { margin: 4px 0 6px; color: #cbd2d9; }
header .summary strong { color: #fff; }
header nav a { color: #9ec5f7; margin-right: 16px; text-decoration: none; }
header nav a:hover { text-decoration: underline; }
main { padding: 0 24px 32px; }
section { margin-top: 22px; }
h2 { font-size: 17px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h2 .count { font-weight: 400; color: var(--muted); font-size: 14px; margin-left: 4px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4fb; }
.mono, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.nowrap { white-space: nowrap; }
.small { font-size: 12px; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 0 7px; border: 1px solid; border-radius: 10px; font-size: 12px; white-space: nowrap; }
.ok { color: #1a7f37; background: #e7f5eb; border-color: #a8d9b6; }
.warn { color: #8a5300; background: #fff5d9; border-color: #efcf7c; }
.bad { color: #b42318; background: #fdeceb; border-color: #f2aca6; }
.idle { color: #4f5a65; background: #f0f2f4; border-color: #d1d6db; }
.label { display: inline-block; margin: 1px 0; padding: 0 5px; border-radius: 3px; background: #edf1f6;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12px;
  overflow-wrap: anywhere; }
td.labels { max-width: 34em; }
.why { color: var(--muted); font-size: 12.5px; overflow-wrap: anywhere; }
form.search { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-end; margin: 0 0 6px; }
form.search label { display: flex; flex-direction: column; gap: 2px; font-size: 12px; color: var(--muted); }
input, select, button { font: inherit; color: var(--fg); padding: 4px 7px; border: 1px solid #b5bec7; border-radius: 4px; background: #fff; }
input[name=selector] { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 13px; }
button { background: var(--accent); border-color: var(--accent); color: #fff; padding: 4px 14px; cursor: pointer; }
a { color: var(--accent); }
a.clear { align-self: flex-end; padding-bottom: 6px; font-size: 13px; }
nav.pages { display: flex; flex-wrap: wrap; gap: 14px; align-items: baseline; margin: 8px 0; }
nav.pages .range { margin-right: auto; }
nav.pages .off { color: #aab2ba; }
.error { color: #b42318; background: #fdeceb; border: 1px solid #f2aca6; border-radius: 4px; padding: 8px 12px; }
.warnbox { background: #fff5d9; border: 1px solid #efcf7c; border-radius: 4px; padding: 8px 12px; margin-bottom: 10px; }
.warnbox ul { margin: 4px 0 0; }
"#;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use muster_core::{Address, Change, Port, Source};
    use muster_policy::{Policy, Tracker};

    use super::*;

    fn member(name: &str, ip: &str, liveness: Liveness, policy: &str) -> Member {
        Member {
            name: name.to_owned(),
            gossip_addr: format!("{ip}:7946").parse().expect("address"),
            liveness,
            generation: 1_700_000_000_000,
            records: 0,
            visible: true,
            meta: BTreeMap::from([
                ("version".to_owned(), "0.1.0".to_owned()),
                ("http_addr".to_owned(), format!("{ip}:8800")),
                ("policy".to_owned(), policy.to_owned()),
                ("docker".to_owned(), "disabled".to_owned()),
            ]),
        }
    }

    fn record(host: &str, name: &str, labels: &[(&str, &str)]) -> Record {
        let mut r = Record::new(name, name, Source::Static);
        r.host = host.to_owned();
        r.addresses.push(Address {
            network: "static".into(),
            ip: "10.0.0.5".parse().expect("ip"),
            local: false,
        });
        r.ports.push(Port {
            port: 8080,
            protocol: muster_core::Protocol::Tcp,
            host_port: None,
        });
        r.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    /// Members a and b, `records` records named `web-0001`... on a (every
    /// third one `app=db`), and a `<script>` label on `evil`.
    fn directory(records: usize) -> Snapshot {
        let mut changes = vec![Change::Members(vec![
            member("a", "127.0.0.1", Liveness::Alive, policy().digest()),
            member("b", "127.0.0.2", Liveness::Suspect, "0123456789ab"),
        ])];
        for i in 1..=records {
            let app = if i % 3 == 0 { "db" } else { "web" };
            changes.push(Change::Upsert(record(
                "a",
                &format!("web-{i:04}"),
                &[("app", app)],
            )));
        }
        changes.push(Change::Upsert(record(
            "b",
            "evil",
            &[("note", "<script>alert(1)</script>")],
        )));
        Snapshot::new().apply(changes)
    }

    /// Records with a `note` label need an `owner`.
    fn policy() -> Policy {
        Policy::parse(
            Path::new("policy.toml"),
            "[[rule]]\nname = \"owned\"\nrequired_labels = [\"owner\"]\nselector = \"note\"\n",
        )
        .expect("policy")
    }

    fn violations_of(snapshot: &Snapshot) -> Violations {
        let mut tracker = Tracker::new(policy());
        tracker.update(snapshot, SystemTime::now() - Duration::from_secs(180));
        tracker.violations().clone()
    }

    fn query(pairs: &[(&str, &str)]) -> StatusQuery {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map_or(String::new(), |(_, v)| v.to_string())
        };
        StatusQuery {
            selector: get("selector"),
            q: get("q"),
            host: get("host"),
            state: get("state"),
            page: get("page"),
        }
    }

    fn page_of(snapshot: &Snapshot, pairs: &[(&str, &str)]) -> (StatusCode, String) {
        let violations = violations_of(snapshot);
        let (status, markup) = render(
            snapshot,
            &violations,
            &query(pairs),
            Some("a"),
            &LastHeard::default(),
            SystemTime::now(),
        );
        (status, markup.into_string())
    }

    #[test]
    fn a_member_this_agent_lacks_changes_of_is_shown_behind_with_how_long_and_how_many() {
        let snapshot = directory(3);
        let violations = violations_of(&snapshot);
        let now = SystemTime::now();
        let heard = LastHeard::default();
        heard.set_behind(
            "b",
            Some(muster_core::Behind {
                since: now - Duration::from_millis(12_400),
                versions: 99,
            }),
        );
        let (_, page) = render(&snapshot, &violations, &query(&[]), Some("a"), &heard, now);
        let page = page.into_string();
        assert!(page.contains(">behind<"), "a column for it");
        assert!(page.contains("12.4 s, 99 versions"), "{page}");
        assert_eq!(page.matches("99 versions").count(), 1, "only b is behind");
    }

    #[test]
    fn page_shows_members_records_and_violations() {
        let snapshot = directory(3);
        let (status, page) = page_of(&snapshot, &[]);
        assert_eq!(status, StatusCode::OK);
        for expected in [
            "node <strong>a</strong>",
            "this agent",
            "127.0.0.2:7946",
            ">suspect<",
            "0123456789ab",
            "web-0001",
            "evil",
            "10.0.0.5",
            "8080/tcp",
            "records <strong>1–4</strong> of <strong>4</strong>",
            "owned",
            "3m ago",
            "Members with a different policy",
        ] {
            assert!(page.contains(expected), "{expected:?} not on the page");
        }
    }

    #[test]
    fn values_from_the_network_and_the_query_are_escaped() {
        let snapshot = directory(1);
        let (_, page) = page_of(&snapshot, &[("q", "\"><script>x</script>")]);
        assert!(!page.contains("<script"), "unescaped script tag");
        assert!(page.contains("&quot;&gt;&lt;script&gt;x&lt;/script&gt;"));
        let (_, page) = page_of(&snapshot, &[]);
        assert!(!page.contains("<script"), "unescaped script tag");
        assert!(page.contains("note=&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn pages_count_and_link_the_matching_records() {
        let snapshot = directory(249); // and `evil`: 250 records.
        let check = |pairs: &[(&str, &str)], expected: &[&str], absent: &[&str]| {
            let (status, page) = page_of(&snapshot, pairs);
            assert_eq!(status, StatusCode::OK, "{pairs:?}");
            for e in expected {
                assert!(page.contains(e), "{pairs:?}: {e:?} not on the page");
            }
            for a in absent {
                assert!(!page.contains(a), "{pairs:?}: {a:?} on the page");
            }
        };
        check(
            &[],
            &[
                "records <strong>1–100</strong> of <strong>250</strong>",
                "page 1 of 3",
                "href=\"/?page=2\" rel=\"next\"",
                "href=\"/?page=3\"",
                "<span class=\"off\">‹ previous</span>",
                "evil",
                "web-0099",
            ],
            &["rel=\"prev\"", "web-0100"],
        );
        check(
            &[("page", "2")],
            &[
                "records <strong>101–200</strong> of <strong>250</strong>",
                "href=\"/?page=1\" rel=\"prev\"",
                "href=\"/?page=3\" rel=\"next\"",
                "web-0100",
                "web-0199",
            ],
            &["web-0099<", "web-0200"],
        );
        // Past the last page: the last page. Not a number: the first.
        check(
            &[("page", "9")],
            &[
                "records <strong>201–250</strong> of <strong>250</strong>",
                "web-0249",
            ],
            &["rel=\"next\""],
        );
        check(&[("page", "x")], &["records <strong>1–100</strong>"], &[]);
        // 83 records are app=db; the links keep the selector.
        check(
            &[("selector", "app=db")],
            &[
                "records <strong>1–83</strong> of <strong>83</strong> matching (250 in the directory)",
                "web-0003",
            ],
            &["web-0001<", "page 1 of"],
        );
        check(
            &[("selector", "app in (web)"), ("q", "WEB-01"), ("page", "1")],
            &[
                "records <strong>1–67</strong> of <strong>67</strong> matching",
                "web-0100",
            ],
            &["web-0099"],
        );
        check(
            &[("selector", "app!=db"), ("page", "2")],
            &[
                "records <strong>101–167</strong> of <strong>167</strong>",
                "href=\"/?selector=app%21%3Ddb&amp;page=1\" rel=\"prev\"",
            ],
            &[],
        );
        check(
            &[("host", "b"), ("state", "running")],
            &["records <strong>1–1</strong> of <strong>1</strong>", "evil"],
            &["web-0001"],
        );
        check(&[("q", "nothing-like-it")], &["No record matches."], &[]);
    }

    #[test]
    fn a_bad_selector_or_state_is_a_400_with_the_error_on_the_page() {
        let snapshot = directory(3);
        for (pairs, why) in [
            (
                &[("selector", "bad sel")][..],
                "selector &quot;bad sel&quot;: bad selector at column",
            ),
            (
                &[("state", "sleeping")][..],
                "unknown state &quot;sleeping&quot;",
            ),
        ] {
            let (status, page) = page_of(&snapshot, pairs);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{pairs:?}");
            assert!(page.contains(why), "{pairs:?}: {why:?} not on the page");
            // The members and the form are still there.
            assert!(page.contains("127.0.0.2:7946") && page.contains("name=\"selector\""));
        }
    }

    #[test]
    fn ages_and_counts_read_naturally() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for (ago, expected) in [
            (0, "just now"),
            (12, "12s ago"),
            (59, "59s ago"),
            (60, "1m ago"),
            (3_599, "59m ago"),
            (7_200, "2h ago"),
            (3 * 86_400, "3d ago"),
        ] {
            assert_eq!(age(now - Duration::from_secs(ago), now), expected);
        }
        assert_eq!(age(now + Duration::from_secs(5), now), "just now");
        for (n, expected) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (50_000, "50,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), expected);
        }
        assert_eq!(clip("ééé", 2), "éé");
        assert_eq!(clip("ab", 2), "ab");
    }
}
