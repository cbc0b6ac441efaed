//! The per-server series of the engine's events, kept as plain numbers per
//! server and turned into metric families only when scraped (ADR 0028).
//!
//! With the prometheus crate's vectors every series is an object of its
//! own, holding its own copy of the metric's description, name and label
//! names: about 4 KiB per server for the 11 series a server has (a heap
//! profile at 10,000 servers put them at 43 MB). Here a
//! server costs one small record; what a scrape renders is the same text,
//! byte for byte (`per_server_series_render_as_before` in the parent
//! module holds it to what the vectors rendered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use discovery_actors::{DiscoveryState, RefreshOutcome};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use super::REFRESH_BUCKETS;

const OUTCOMES: [RefreshOutcome; 2] = [RefreshOutcome::Success, RefreshOutcome::Failure];

fn outcome_index(outcome: RefreshOutcome) -> usize {
    match outcome {
        RefreshOutcome::Success => 0,
        RefreshOutcome::Failure => 1,
    }
}

/// One family: its contract name, help, type and label names (sorted, as
/// the crate sorts a series' labels).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const STATE: Family = Family {
    name: "mcp_discovery_upstream_state",
    help: "Discovery state of each upstream server: 1 for the current state, 0 for the others.",
    kind: MetricType::GAUGE,
    labels: &["server", "state"],
};
const TOOLS: Family = Family {
    name: "mcp_discovery_upstream_tools",
    help: "Tools each upstream server contributes to the catalog (after allow/deny).",
    kind: MetricType::GAUGE,
    labels: &["server"],
};
const INVALID: Family = Family {
    name: "mcp_discovery_invalid_tools",
    help: "Tools each upstream server lists that are left out of the catalog as invalid (bad name or schema, x-mcp-header, duplicate, public-name clash).",
    kind: MetricType::GAUGE,
    labels: &["server"],
};
const REFRESH_SECONDS: Family = Family {
    name: "mcp_discovery_refresh_duration_seconds",
    help: "Duration of discovery rounds (connect + list) per server and outcome.",
    kind: MetricType::HISTOGRAM,
    labels: &["outcome", "server"],
};
const REFRESHES: Family = Family {
    name: "mcp_discovery_refreshes_total",
    help: "Discovery rounds per server and outcome.",
    kind: MetricType::COUNTER,
    labels: &["outcome", "server"],
};
const PUSH_CONNECTED: Family = Family {
    name: "mcp_discovery_push_stream_connected",
    help: "1 while the server's optional GET push stream is open.",
    kind: MetricType::GAUGE,
    labels: &["server"],
};
const PUSH_RECONNECTS: Family = Family {
    name: "mcp_discovery_push_stream_reconnects_total",
    help: "Reconnections of the server's push stream.",
    kind: MetricType::COUNTER,
    labels: &["server"],
};
const LIST_CHANGED: Family = Family {
    name: "mcp_discovery_list_changed_total",
    help: "list_changed notifications received from the server.",
    kind: MetricType::COUNTER,
    labels: &["server"],
};
const TOKENS: Family = Family {
    name: "mcp_discovery_token_refreshes_total",
    help: "OAuth2 token fetches per server and outcome.",
    kind: MetricType::COUNTER,
    labels: &["outcome", "server"],
};

const FAMILIES: [&Family; 9] = [
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
#[derive(Clone)]
pub(super) struct PerServer {
    servers: Arc<Mutex<HashMap<Box<str>, Series>>>,
    descs: Arc<Vec<Desc>>,
}

impl PerServer {
    pub(super) fn new() -> Result<Self, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.to_owned(),
                    f.help.to_owned(),
                    f.labels.iter().map(|l| (*l).to_owned()).collect(),
                    HashMap::new(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            servers: Arc::default(),
            descs: Arc::new(descs),
        })
    }

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
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn labelled(labels: Vec<proto::LabelPair>) -> proto::Metric {
    proto::Metric::from_label(labels)
}

fn gauge(server: &str, value: i64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value as f64);
    let mut m = labelled(vec![label("server", server)]);
    m.set_gauge(g);
    m
}

fn counter(labels: Vec<proto::LabelPair>, value: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = labelled(labels);
    m.set_counter(c);
    m
}

fn by_outcome(server: &str, outcome: RefreshOutcome) -> Vec<proto::LabelPair> {
    vec![label("outcome", outcome.as_str()), label("server", server)]
}

fn histogram(server: &str, outcome: RefreshOutcome, rounds: &Rounds) -> proto::Metric {
    let mut h = proto::Histogram::default();
    let mut cumulative = 0;
    let buckets = REFRESH_BUCKETS
        .iter()
        .zip(rounds.buckets)
        .map(|(bound, n)| {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*bound);
            b
        })
        .collect();
    h.set_bucket(buckets);
    h.set_sample_count(rounds.count());
    h.set_sample_sum(rounds.sum);
    let mut m = labelled(by_outcome(server, outcome));
    m.set_histogram(h);
    m
}

impl Collector for PerServer {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (mut state, mut tools, mut invalid, mut seconds, mut rounds_total) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut connected, mut reconnects, mut changed, mut tokens) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // A copy of the numbers under the lock, the families built after
        // it: the engine's events never wait for a scrape's rendering.
        let servers: Vec<(Box<str>, Series)> = self
            .servers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(server, s)| (server.clone(), s.clone()))
            .collect();
        for (server, s) in &servers {
            let server: &str = server;
            if let Some(current) = s.state {
                for each in DiscoveryState::ALL {
                    let mut g = proto::Gauge::default();
                    g.set_value(if each == current { 1.0 } else { 0.0 });
                    let mut m =
                        labelled(vec![label("server", server), label("state", each.as_str())]);
                    m.set_gauge(g);
                    state.push(m);
                }
            }
            if let Some(n) = s.tools {
                tools.push(gauge(server, n));
            }
            if let Some(n) = s.invalid {
                invalid.push(gauge(server, n));
            }
            for outcome in OUTCOMES {
                if let Some(rounds) = &s.rounds[outcome_index(outcome)] {
                    seconds.push(histogram(server, outcome, rounds));
                    rounds_total.push(counter(by_outcome(server, outcome), rounds.count()));
                }
                if let Some(n) = s.tokens[outcome_index(outcome)] {
                    tokens.push(counter(by_outcome(server, outcome), n));
                }
            }
            if let Some(n) = s.push_connected {
                connected.push(gauge(server, n));
            }
            if let Some(n) = s.push_reconnects {
                reconnects.push(counter(vec![label("server", server)], n));
            }
            if let Some(n) = s.list_changed {
                changed.push(counter(vec![label("server", server)], n));
            }
        }
        [
            (&STATE, state),
            (&TOOLS, tools),
            (&INVALID, invalid),
            (&REFRESH_SECONDS, seconds),
            (&REFRESHES, rounds_total),
            (&PUSH_CONNECTED, connected),
            (&PUSH_RECONNECTS, reconnects),
            (&LIST_CHANGED, changed),
            (&TOKENS, tokens),
        ]
        .into_iter()
        .map(|(family, metrics)| {
            let mut mf = MetricFamily::default();
            mf.set_name(family.name.to_owned());
            mf.set_help(family.help.to_owned());
            mf.set_field_type(family.kind);
            mf.set_metric(metrics);
            mf
        })
        .collect()
    }
}
