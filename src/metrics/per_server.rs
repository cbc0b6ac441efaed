//! The per-server series of the engine's events, kept as plain numbers per
//! server and written as text when scraped (ADR 0028).
//!
//! With the prometheus crate's vectors every series is an object of its
//! own, holding its own copy of the metric's description, name and label
//! names: about 4 KiB per server for the 11 series a server has (a heap
//! profile at 10,000 servers put them at 43 MB). Here a server costs one
//! small record, and a scrape writes its lines straight into the answer:
//! no metric objects are built for them, at 10,000 servers 270,000 lines
//! (21 MB). The text is the same, byte for byte, as the crate's encoder
//! wrote for the vectors (`per_server_series_render_as_before` in the
//! parent module holds it to that).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use discovery_actors::{DiscoveryState, RefreshOutcome};

use super::REFRESH_BUCKETS;

/// In the order their label values sort (`failure` < `success`), as the
/// lines of a family are.
const OUTCOMES: [RefreshOutcome; 2] = [RefreshOutcome::Failure, RefreshOutcome::Success];

fn outcome_index(outcome: RefreshOutcome) -> usize {
    match outcome {
        RefreshOutcome::Success => 0,
        RefreshOutcome::Failure => 1,
    }
}

/// Which numbers a family's lines show.
#[derive(Clone, Copy)]
enum Shows {
    State,
    Tools,
    Invalid,
    RefreshSeconds,
    Refreshes,
    PushConnected,
    PushReconnects,
    ListChanged,
    Tokens,
}

impl Shows {
    /// The family's type in the text format, which follows from what it
    /// shows.
    fn kind(self) -> &'static str {
        match self {
            Shows::State | Shows::Tools | Shows::Invalid | Shows::PushConnected => "gauge",
            Shows::Refreshes | Shows::PushReconnects | Shows::ListChanged | Shows::Tokens => {
                "counter"
            }
            Shows::RefreshSeconds => "histogram",
        }
    }
}

/// One family: its contract name, help and what it shows (which gives its
/// type). Its labels are `server` and, for some, `state` or `outcome`,
/// written sorted by name as the crate sorts a series' labels.
pub(super) struct Family {
    pub(super) name: &'static str,
    help: &'static str,
    shows: Shows,
}

const STATE: Family = Family {
    name: "mcp_discovery_upstream_state",
    help: "Discovery state of each upstream server: 1 for the current state, 0 for the others.",
    shows: Shows::State,
};
const TOOLS: Family = Family {
    name: "mcp_discovery_upstream_tools",
    help: "Tools each upstream server contributes to the catalog (after allow/deny).",
    shows: Shows::Tools,
};
const INVALID: Family = Family {
    name: "mcp_discovery_invalid_tools",
    help: "Tools each upstream server lists that are left out of the catalog as invalid (bad name or schema, x-mcp-header, duplicate, public-name clash).",
    shows: Shows::Invalid,
};
const REFRESH_SECONDS: Family = Family {
    name: "mcp_discovery_refresh_duration_seconds",
    help: "Duration of discovery rounds (connect + list) per server and outcome.",
    shows: Shows::RefreshSeconds,
};
const REFRESHES: Family = Family {
    name: "mcp_discovery_refreshes_total",
    help: "Discovery rounds per server and outcome.",
    shows: Shows::Refreshes,
};
const PUSH_CONNECTED: Family = Family {
    name: "mcp_discovery_push_stream_connected",
    help: "1 while the server's optional GET push stream is open.",
    shows: Shows::PushConnected,
};
const PUSH_RECONNECTS: Family = Family {
    name: "mcp_discovery_push_stream_reconnects_total",
    help: "Reconnections of the server's push stream.",
    shows: Shows::PushReconnects,
};
const LIST_CHANGED: Family = Family {
    name: "mcp_discovery_list_changed_total",
    help: "list_changed notifications received from the server.",
    shows: Shows::ListChanged,
};
const TOKENS: Family = Family {
    name: "mcp_discovery_token_refreshes_total",
    help: "OAuth2 token fetches per server and outcome.",
    shows: Shows::Tokens,
};

/// Every per-server family.
pub(super) const FAMILIES: [&Family; 9] = [
    &STATE,
    &TOOLS,
    &INVALID,
    &REFRESH_SECONDS,
    &REFRESHES,
    &PUSH_CONNECTED,
    &PUSH_RECONNECTS,
    &LIST_CHANGED,
    &TOKENS,
];

/// Discovery rounds of one outcome: the counter and the histogram, which
/// always move together.
#[derive(Clone)]
struct Rounds {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [u64; REFRESH_BUCKETS.len() + 1],
    sum: f64,
}

impl Rounds {
    fn new() -> Self {
        Self {
            buckets: [0; REFRESH_BUCKETS.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        // `le`: a value on a bound counts in that bucket.
        let at = REFRESH_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(REFRESH_BUCKETS.len());
        self.buckets[at] += 1;
        self.sum += seconds;
    }

    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// What one server has reported; `None` is a series not created yet
/// (absent from the output, as a vector's child that was never touched).
#[derive(Clone, Default)]
struct Series {
    state: Option<DiscoveryState>,
    tools: Option<i64>,
    invalid: Option<i64>,
    push_connected: Option<i64>,
    push_reconnects: Option<u64>,
    list_changed: Option<u64>,
    rounds: [Option<Box<Rounds>>; 2],
    tokens: [Option<u64>; 2],
}

/// The per-server series of every server; one lock, taken briefly by each
/// event and by a scrape to copy the numbers.
#[derive(Clone, Default)]
pub(super) struct PerServer {
    servers: Arc<Mutex<HashMap<Box<str>, Series>>>,
}

impl PerServer {
    fn with(&self, server: &str, f: impl FnOnce(&mut Series)) {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        match servers.get_mut(server) {
            Some(series) => f(series),
            None => f(servers.entry(server.into()).or_default()),
        }
    }

    pub(super) fn started(&self, server: &str) {
        self.with(server, |s| {
            s.push_connected = Some(0);
            s.push_reconnects.get_or_insert(0);
            s.list_changed.get_or_insert(0);
        });
    }

    pub(super) fn state(&self, server: &str, state: DiscoveryState) {
        self.with(server, |s| s.state = Some(state));
    }

    pub(super) fn round(&self, server: &str, outcome: RefreshOutcome, took: Duration) {
        self.with(server, |s| {
            s.rounds[outcome_index(outcome)]
                .get_or_insert_with(|| Box::new(Rounds::new()))
                .observe(took.as_secs_f64());
        });
    }

    pub(super) fn tools(&self, server: &str, count: i64) {
        self.with(server, |s| s.tools = Some(count));
    }

    pub(super) fn invalid(&self, server: &str, count: i64) {
        self.with(server, |s| s.invalid = Some(count));
    }

    pub(super) fn push_connected(&self, server: &str, connected: bool) {
        self.with(server, |s| s.push_connected = Some(i64::from(connected)));
    }

    pub(super) fn push_reconnect(&self, server: &str) {
        self.with(server, |s| *s.push_reconnects.get_or_insert(0) += 1);
    }

    pub(super) fn list_changed(&self, server: &str) {
        self.with(server, |s| *s.list_changed.get_or_insert(0) += 1);
    }

    pub(super) fn token(&self, server: &str, outcome: RefreshOutcome) {
        self.with(server, |s| {
            *s.tokens[outcome_index(outcome)].get_or_insert(0) += 1
        });
    }

    pub(super) fn removed(&self, server: &str) {
        self.servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(server);
    }
    /// A copy of the numbers, taken under the lock; the text is written
    /// after it, so the engine's events never wait for a scrape.
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut servers: Vec<(Box<str>, Series)> = self
            .servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(server, s)| (server.clone(), s.clone()))
            .collect();
        servers.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Snapshot(servers)
    }
}

/// The numbers of every server at one moment, sorted by server: what a
/// scrape writes.
pub(super) struct Snapshot(Vec<(Box<str>, Series)>);

/// The text format's escaping of a label value (`\`, newline, `"`) or,
/// without quotes, of a help text.
fn escaped(out: &mut String, text: &str, quotes: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// One line: `name{labels} value`, the labels in the order given.
fn line(out: &mut String, name: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push_str(suffix);
    let mut separator = '{';
    for (label, value) in labels {
        out.push(separator);
        out.push_str(label);
        out.push_str("=\"");
        escaped(out, value, true);
        out.push('"');
        separator = ',';
    }
    if !labels.is_empty() {
        out.push('}');
    }
    // As the crate's encoder writes a value: `f64`'s `Display`.
    let _ = writeln!(out, " {value}");
}

impl Snapshot {
    /// Writes `family` (`# HELP`, `# TYPE`, its lines) to `out`, nothing
    /// when it has no line (as the crate leaves out an empty family).
    pub(super) fn write(&self, family: &Family, out: &mut String) {
        let start = out.len();
        let _ = write!(out, "# HELP {} ", family.name);
        escaped(out, family.help, false);
        let kind = family.shows.kind();
        let _ = writeln!(out, "\n# TYPE {} {kind}", family.name);
        let header = out.len();
        let name = family.name;
        let by_server = |out: &mut String, value: &dyn Fn(&Series) -> Option<f64>| {
            for (server, s) in &self.0 {
                if let Some(v) = value(s) {
                    line(out, name, "", &[("server", server)], v);
                }
            }
        };
        match family.shows {
            Shows::State => {
                let mut states = DiscoveryState::ALL;
                states.sort_unstable_by_key(|d| d.as_str());
                for (server, s) in &self.0 {
                    let Some(current) = s.state else { continue };
                    for each in states {
                        let v = if each == current { 1.0 } else { 0.0 };
                        line(
                            out,
                            name,
                            "",
                            &[("server", server), ("state", each.as_str())],
                            v,
                        );
                    }
                }
            }
            Shows::Tools => by_server(out, &|s| s.tools.map(|v| v as f64)),
            Shows::Invalid => by_server(out, &|s| s.invalid.map(|v| v as f64)),
            Shows::PushConnected => by_server(out, &|s| s.push_connected.map(|v| v as f64)),
            Shows::PushReconnects => by_server(out, &|s| s.push_reconnects.map(|v| v as f64)),
            Shows::ListChanged => by_server(out, &|s| s.list_changed.map(|v| v as f64)),
            Shows::Refreshes | Shows::Tokens => {
                for outcome in OUTCOMES {
                    let at = outcome_index(outcome);
                    for (server, s) in &self.0 {
                        let value = match family.shows {
                            Shows::Tokens => s.tokens[at],
                            _ => s.rounds[at].as_ref().map(|r| r.count()),
                        };
                        if let Some(v) = value {
                            let labels = [("outcome", outcome.as_str()), ("server", &**server)];
                            line(out, name, "", &labels, v as f64);
                        }
                    }
                }
            }
            Shows::RefreshSeconds => {
                for outcome in OUTCOMES {
                    for (server, s) in &self.0 {
                        let Some(rounds) = &s.rounds[outcome_index(outcome)] else {
                            continue;
                        };
                        let labels = [("outcome", outcome.as_str()), ("server", &**server)];
                        let mut cumulative = 0;
                        for (bound, n) in REFRESH_BUCKETS.iter().zip(rounds.buckets) {
                            cumulative += n;
                            let le = bound.to_string();
                            let with_le = [labels[0], labels[1], ("le", le.as_str())];
                            line(out, name, "_bucket", &with_le, cumulative as f64);
                        }
                        let count = rounds.count() as f64;
                        let with_le = [labels[0], labels[1], ("le", "+Inf")];
                        line(out, name, "_bucket", &with_le, count);
                        line(out, name, "_sum", &labels, rounds.sum);
                        line(out, name, "_count", &labels, count);
                    }
                }
            }
        }
        if out.len() == header {
            out.truncate(start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text format's escaping, as the crate's encoder does it: label
    /// values escape `\\`, newline and `"`; help texts leave `"` alone.
    #[test]
    fn values_and_help_are_escaped() {
        let mut out = String::new();
        escaped(&mut out, "a\"b\\c\nd", true);
        assert_eq!(out, r#"a\"b\\c\nd"#);
        out.clear();
        escaped(&mut out, "a\"b\\c\nd", false);
        assert_eq!(out, r#"a"b\\c\nd"#);
    }

    #[test]
    fn an_empty_family_writes_nothing() {
        let none = PerServer::default();
        none.state("s", DiscoveryState::Healthy);
        let mut out = String::new();
        none.snapshot().write(&TOOLS, &mut out);
        assert_eq!(out, "");
        none.snapshot().write(&STATE, &mut out);
        assert!(
            out.starts_with("# HELP mcp_discovery_upstream_state "),
            "{out}"
        );
    }
}
