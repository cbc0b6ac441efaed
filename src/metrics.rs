//! Every Prometheus metric of the service, on one per-application
//! [`Registry`] (never the global one, so several applications in one test
//! process do not collide). Names and labels are a contract (DESIGN.md
//! section 8): dashboards and alerts depend on them.
//!
//! The engine reports through [`DiscoveryEvents`]; the HTTP layer through
//! [`Metrics::http_request`]. Later features (push stream, OAuth2, hot
//! reload) have their typed methods here already.

use std::collections::HashMap;
use std::time::Duration;

use discovery_actors::{DiscoveryEvents, DiscoveryState, RefreshOutcome};

mod per_server;
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Buckets of `mcp_discovery_refresh_duration_seconds`: a discovery round
/// is a connect plus one or more list calls, from milliseconds on loopback
/// to the request timeout (30 s by default) and beyond with pagination.
pub const REFRESH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Buckets of `mcp_discovery_http_request_duration_seconds`: the catalog is
/// pre-serialized, so most answers take well under a millisecond.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Buckets of `mcp_discovery_tool_call_duration_seconds`: a relayed call
/// is as long as the upstream's tool takes, up to `mcp.call_timeout`.
pub const TOOL_CALL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The `outcome` of a `tools/call` through the MCP endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// The upstream answered with a result (`isError` results included:
    /// the tool ran and said it failed).
    Ok,
    /// The upstream answered with a JSON-RPC error, or the request failed.
    Error,
    /// The server was not healthy: answered at once without a call.
    Unavailable,
    /// No result within `call_timeout`.
    Timeout,
    /// The server's call slots and queue were full.
    Busy,
    /// The client went away or cancelled.
    Cancelled,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Unavailable => "unavailable",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Busy => "busy",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// Label value of `route` for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `outcome` of a configuration reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new configuration was valid and its diff was applied.
    Applied,
    /// The new configuration was invalid; the old one keeps running.
    Rejected,
}

impl ReloadOutcome {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Rejected => "rejected",
        }
    }
}

/// Why the metrics could not be set up or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("could not register metric: {0}")]
    Register(#[source] prometheus::Error),
    #[error("could not encode the metrics: {0}")]
    Encode(#[source] prometheus::Error),
}

/// All metrics of one application instance.
pub struct Metrics {
    registry: Registry,
    /// The engine's per-server series (state, tools, rounds, push stream,
    /// tokens): plain numbers per server, rendered when scraped.
    per_server: per_server::PerServer,
    /// The length of the last rendering: the next one starts with that
    /// much room (21 MB at 10k servers) instead of doubling up to it.
    last_render: std::sync::atomic::AtomicUsize,
    /// One rendering at a time ([`Metrics::render_turn`]).
    rendering: tokio::sync::Mutex<()>,
    catalog_tools: IntGauge,
    catalog_version: IntGauge,
    config_reloads_total: IntCounterVec,
    config_last_reload_successful: IntGauge,
    http_requests_total: IntCounterVec,
    http_request_duration_seconds: HistogramVec,
    store_rows_skipped_total: prometheus::IntCounter,
    mcp_sessions: IntGauge,
    attempts_waiting: IntGauge,
    attempts_running: IntGauge,
    mcp_listeners: IntGauge,
    mcp_listeners_dropped_total: prometheus::IntCounter,
    tool_calls_total: IntCounterVec,
    tool_call_duration_seconds: HistogramVec,
    list_changed_sent_total: prometheus::IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> Result<C, MetricsError> {
    registry
        .register(Box::new(c.clone()))
        .map_err(MetricsError::Register)?;
    Ok(c)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).map_err(MetricsError::Register)?;
    register(r, vec)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, MetricsError> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let vec = HistogramVec::new(opts, labels).map_err(MetricsError::Register)?;
    register(r, vec)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let g = IntGauge::new(name, help).map_err(MetricsError::Register)?;
    register(r, g)
}

/// Removes every series of `vec` whose `server` label is `server`, whatever
/// its other labels are (prometheus 0.14 has no partial-match delete).
fn remove_server_series<T: MetricVecBuilder>(vec: &MetricVec<T>, server: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("server") == Some(&server) {
                // Absent by now only if removed concurrently: nothing to do.
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// Bounded `method` label: the standard methods, anything else is `other`.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

impl Metrics {
    /// A stored registration could not be decoded and was skipped.
    pub fn store_row_skipped(&self) {
        self.store_rows_skipped_total.inc();
    }

    /// Creates and registers every metric on a fresh registry, plus the
    /// process collector (Linux).
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let metrics = Self {
            per_server: per_server::PerServer::default(),
            last_render: std::sync::atomic::AtomicUsize::new(16 * 1024),
            rendering: tokio::sync::Mutex::new(()),
            catalog_tools: gauge(
                &r,
                "mcp_discovery_catalog_tools",
                "Tools in the current catalog snapshot.",
            )?,
            catalog_version: gauge(
                &r,
                "mcp_discovery_catalog_version",
                "Version of the current catalog snapshot.",
            )?,
            config_reloads_total: counter_vec(
                &r,
                "mcp_discovery_config_reloads_total",
                "Configuration reloads by outcome (applied|rejected).",
                &["outcome"],
            )?,
            config_last_reload_successful: gauge(
                &r,
                "mcp_discovery_config_last_reload_successful",
                "1 if the last configuration load (start-up or reload) succeeded, else 0.",
            )?,
            http_requests_total: counter_vec(
                &r,
                "mcp_discovery_http_requests_total",
                "HTTP requests served, by method, route pattern and status.",
                &["method", "route", "status"],
            )?,
            http_request_duration_seconds: histogram_vec(
                &r,
                "mcp_discovery_http_request_duration_seconds",
                "Time to produce an HTTP response, by method and route pattern.",
                &["method", "route"],
                HTTP_BUCKETS,
            )?,
            store_rows_skipped_total: {
                let c = prometheus::IntCounter::new(
                    "mcp_discovery_store_rows_skipped_total",
                    "Stored registrations skipped because they could not be decoded (bad ciphertext, bad JSON, unknown format), counted at every read.",
                )
                .map_err(MetricsError::Register)?;
                register(&r, c)?
            },
            attempts_waiting: gauge(
                &r,
                "mcp_discovery_attempts_waiting",
                "Discovery attempts waiting for a slot of discovery.max_concurrent_attempts.",
            )?,
            attempts_running: gauge(
                &r,
                "mcp_discovery_attempts_running",
                "Discovery attempts holding a slot of discovery.max_concurrent_attempts (an attempt gives its slot back when it ends, or after 2 s).",
            )?,
            mcp_sessions: gauge(
                &r,
                "mcp_discovery_mcp_sessions",
                "Live 2025 sessions (Mcp-Session-Id) of the MCP endpoint.",
            )?,
            mcp_listeners: gauge(
                &r,
                "mcp_discovery_mcp_listeners",
                "Open list_changed streams of MCP clients (subscriptions/listen and 2025 GET streams).",
            )?,
            mcp_listeners_dropped_total: {
                let c = prometheus::IntCounter::new(
                    "mcp_discovery_mcp_listeners_dropped_total",
                    "MCP client streams closed because the client did not read its notifications.",
                )
                .map_err(MetricsError::Register)?;
                register(&r, c)?
            },
            tool_calls_total: counter_vec(
                &r,
                "mcp_discovery_tool_calls_total",
                "tools/call relayed through the MCP endpoint, by server and outcome (ok|error|unavailable|timeout|busy|cancelled).",
                &["server", "outcome"],
            )?,
            tool_call_duration_seconds: histogram_vec(
                &r,
                "mcp_discovery_tool_call_duration_seconds",
                "Duration of tools/call through the MCP endpoint, by server.",
                &["server"],
                TOOL_CALL_BUCKETS,
            )?,
            list_changed_sent_total: {
                let c = prometheus::IntCounter::new(
                    "mcp_discovery_list_changed_sent_total",
                    "notifications/tools/list_changed sent to MCP clients.",
                )
                .map_err(MetricsError::Register)?;
                register(&r, c)?
            },
            registry: r,
        };
        // The running configuration was loaded successfully, or we would not
        // be here.
        metrics.config_last_reload_successful.set(1);
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .map_err(MetricsError::Register)?;
        Ok(metrics)
    }

    /// The registry, for extra collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A turn to render for `/metrics`: renderings run one at a time, so
    /// many scrapes at once cost one rendering's memory (21 MB at 10k
    /// servers) at a time, not one each, and wait without holding a
    /// thread.
    pub async fn render_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.rendering.lock().await
    }

    /// Everything in the Prometheus text exposition format.
    ///
    /// The registry's families and the per-server ones (written as text by
    /// [`per_server`], not registered) interleave in name order, as the
    /// registry alone orders its own.
    pub fn render(&self) -> Result<String, MetricsError> {
        let gathered = self.registry.gather();
        let servers = self.per_server.snapshot();
        let mut ours: Vec<&per_server::Family> = per_server::FAMILIES.to_vec();
        ours.sort_unstable_by_key(|f| f.name);
        let mut ours = ours.into_iter().peekable();
        let room = self.last_render.load(std::sync::atomic::Ordering::Relaxed);
        let mut out = String::with_capacity(room + room / 16);
        let encoder = TextEncoder::new();
        for family in &gathered {
            while let Some(mine) = ours.next_if(|f| f.name < family.name()) {
                servers.write(mine, &mut out);
            }
            encoder
                .encode_utf8(std::slice::from_ref(family), &mut out)
                .map_err(MetricsError::Encode)?;
        }
        for mine in ours {
            servers.write(mine, &mut out);
        }
        self.last_render
            .store(out.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub fn content_type() -> &'static str {
        prometheus::TEXT_FORMAT
    }

    /// One HTTP request served. `route` is the matched pattern (bounded
    /// cardinality), [`UNMATCHED_ROUTE`] when none matched.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let status = status.to_string();
        self.http_requests_total
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.http_request_duration_seconds
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }

    /// The number of live 2025 sessions of the MCP endpoint.
    pub fn mcp_sessions(&self, n: usize) {
        self.mcp_sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A listener stream opened (+1) or closed (-1).
    pub fn mcp_listener(&self, delta: i64) {
        self.mcp_listeners.add(delta);
    }

    /// A listener was disconnected for not keeping up.
    pub fn mcp_listener_dropped(&self) {
        self.mcp_listeners_dropped_total.inc();
    }

    /// `n` list_changed notifications were queued to clients.
    pub fn list_changed_sent(&self, n: u64) {
        self.list_changed_sent_total.inc_by(n);
    }

    /// One `tools/call` through the MCP endpoint ended.
    pub fn tool_call(&self, server: &str, outcome: CallOutcome, took: Duration) {
        self.tool_calls_total
            .with_label_values(&[server, outcome.as_str()])
            .inc();
        self.tool_call_duration_seconds
            .with_label_values(&[server])
            .observe(took.as_secs_f64());
    }

    /// A configuration reload ended.
    pub fn config_reloaded(&self, outcome: ReloadOutcome) {
        self.config_reloads_total
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.config_last_reload_successful
            .set(i64::from(outcome == ReloadOutcome::Applied));
    }
}

impl DiscoveryEvents for Metrics {
    fn attempts_gate(&self, waiting: i64, running: i64) {
        if waiting != 0 {
            self.attempts_waiting.add(waiting);
        }
        if running != 0 {
            self.attempts_running.add(running);
        }
    }

    fn server_started(&self, server: &str) {
        // A restarted server's push stream is not open (yet); counters
        // start at zero rather than missing.
        self.per_server.started(server);
    }

    fn state_changed(&self, server: &str, state: DiscoveryState) {
        self.per_server.state(server, state);
    }

    fn refresh_finished(&self, server: &str, outcome: RefreshOutcome, took: Duration) {
        self.per_server.round(server, outcome, took);
    }

    fn tool_count(&self, server: &str, count: usize) {
        self.per_server
            .tools(server, i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn invalid_tools(&self, server: &str, count: usize) {
        self.per_server
            .invalid(server, i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn server_removed(&self, server: &str) {
        self.per_server.removed(server);
        remove_server_series(&self.tool_calls_total, server);
        remove_server_series(&self.tool_call_duration_seconds, server);
    }

    fn push_stream_connected(&self, server: &str, connected: bool) {
        self.per_server.push_connected(server, connected);
    }

    fn push_stream_reconnect(&self, server: &str) {
        self.per_server.push_reconnect(server);
    }

    fn list_changed(&self, server: &str) {
        self.per_server.list_changed(server);
    }

    fn token_refreshed(&self, server: &str, outcome: RefreshOutcome) {
        self.per_server.token(server, outcome);
    }

    fn catalog_published(&self, version: u64, tools: usize) {
        self.catalog_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.catalog_tools
            .set(i64::try_from(tools).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name{labels}` in the text output, if present.
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
                if metric != name {
                    return None;
                }
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                let count = rest.matches("=\"").count();
                (all && count == labels.len()).then(|| value.parse().ok())?
            })
    }

    #[test]
    fn every_contract_name_is_exposed() {
        let m = Metrics::new().unwrap();
        m.state_changed("a", DiscoveryState::Healthy);
        m.tool_count("a", 3);
        m.invalid_tools("a", 2);
        m.refresh_finished("a", RefreshOutcome::Success, Duration::from_millis(12));
        m.push_stream_connected("a", true);
        m.push_stream_reconnect("a");
        m.list_changed("a");
        m.token_refreshed("a", RefreshOutcome::Success);
        m.catalog_published(7, 3);
        m.config_reloaded(ReloadOutcome::Applied);
        m.http_request("GET", "/v1/tools", 200, Duration::from_micros(300));
        let text = m.render().unwrap();
        for name in [
            "mcp_discovery_upstream_state",
            "mcp_discovery_upstream_tools",
            "mcp_discovery_invalid_tools",
            "mcp_discovery_refresh_duration_seconds_bucket",
            "mcp_discovery_refresh_duration_seconds_sum",
            "mcp_discovery_refresh_duration_seconds_count",
            "mcp_discovery_refreshes_total",
            "mcp_discovery_push_stream_connected",
            "mcp_discovery_push_stream_reconnects_total",
            "mcp_discovery_list_changed_total",
            "mcp_discovery_token_refreshes_total",
            "mcp_discovery_catalog_tools",
            "mcp_discovery_catalog_version",
            "mcp_discovery_config_reloads_total",
            "mcp_discovery_config_last_reload_successful",
            "mcp_discovery_http_requests_total",
            "mcp_discovery_http_request_duration_seconds_bucket",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} missing from:\n{text}"
            );
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert_eq!(
            sample(&text, "mcp_discovery_catalog_version", &[]),
            Some(7.0)
        );
        assert_eq!(sample(&text, "mcp_discovery_catalog_tools", &[]), Some(3.0));
        assert_eq!(
            sample(&text, "mcp_discovery_upstream_tools", &[("server", "a")]),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                "mcp_discovery_refreshes_total",
                &[("server", "a"), ("outcome", "success")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "mcp_discovery_http_requests_total",
                &[("method", "GET"), ("route", "/v1/tools"), ("status", "200")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "mcp_discovery_config_reloads_total",
                &[("outcome", "applied")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn upstream_state_is_one_for_the_current_state_and_zero_for_the_others() {
        let m = Metrics::new().unwrap();
        m.state_changed("s", DiscoveryState::Connecting);
        m.state_changed("s", DiscoveryState::Degraded);
        let text = m.render().unwrap();
        for state in DiscoveryState::ALL {
            let want = if state == DiscoveryState::Degraded {
                1.0
            } else {
                0.0
            };
            assert_eq!(
                sample(
                    &text,
                    "mcp_discovery_upstream_state",
                    &[("server", "s"), ("state", state.as_str())]
                ),
                Some(want),
                "state {}",
                state.as_str()
            );
        }
    }

    #[test]
    fn a_removed_server_leaves_no_series_and_others_keep_theirs() {
        let m = Metrics::new().unwrap();
        for server in ["gone", "kept"] {
            m.state_changed(server, DiscoveryState::Healthy);
            m.tool_count(server, 2);
            m.invalid_tools(server, 1);
            m.refresh_finished(server, RefreshOutcome::Success, Duration::from_millis(5));
            m.refresh_finished(server, RefreshOutcome::Failure, Duration::from_millis(5));
            m.push_stream_connected(server, true);
            m.push_stream_reconnect(server);
            m.list_changed(server);
            m.token_refreshed(server, RefreshOutcome::Failure);
        }
        m.server_removed("gone");
        let text = m.render().unwrap();
        assert!(!text.contains("server=\"gone\""), "{text}");
        assert!(text.contains("server=\"kept\""), "{text}");
        assert_eq!(
            sample(
                &text,
                "mcp_discovery_upstream_state",
                &[("server", "kept"), ("state", "healthy")]
            ),
            Some(1.0)
        );
        // Removing twice, or an unknown server, is harmless.
        m.server_removed("gone");
        m.server_removed("never-existed");
    }

    /// The per-server families, whole (`# HELP`, `# TYPE` and samples),
    /// after a script of every per-server event: the text the prometheus
    /// crate's own vectors rendered, kept in `metrics/per_server.txt`, is
    /// what the per-server collector must render byte for byte (the names,
    /// help, types, label order and bucket bounds are a contract).
    #[test]
    fn per_server_series_render_as_before() {
        let m = Metrics::new().unwrap();
        m.server_started("a");
        m.state_changed("a", DiscoveryState::Connecting);
        m.state_changed("a", DiscoveryState::Healthy);
        m.tool_count("a", 3);
        m.invalid_tools("a", 1);
        m.refresh_finished("a", RefreshOutcome::Success, Duration::from_millis(12));
        m.refresh_finished("a", RefreshOutcome::Failure, Duration::from_secs(3));
        m.refresh_finished("a", RefreshOutcome::Success, Duration::from_secs(700));
        m.push_stream_connected("a", true);
        m.push_stream_reconnect("a");
        m.push_stream_reconnect("a");
        m.list_changed("a");
        m.token_refreshed("a", RefreshOutcome::Success);
        m.token_refreshed("a", RefreshOutcome::Failure);
        m.token_refreshed("a", RefreshOutcome::Failure);
        m.server_started("b");
        m.state_changed("b", DiscoveryState::Degraded);
        // On a bucket's bound: counted in it (`le`).
        m.refresh_finished("b", RefreshOutcome::Failure, Duration::from_millis(250));
        m.push_stream_connected("b", false);
        m.server_started("c");
        m.state_changed("c", DiscoveryState::Unknown);
        m.tool_count("c", 9);
        m.server_removed("c");
        let text = m.render().unwrap();
        let families = [
            "mcp_discovery_upstream_state",
            "mcp_discovery_upstream_tools",
            "mcp_discovery_invalid_tools",
            "mcp_discovery_refresh_duration_seconds",
            "mcp_discovery_refreshes_total",
            "mcp_discovery_push_stream_connected",
            "mcp_discovery_push_stream_reconnects_total",
            "mcp_discovery_list_changed_total",
            "mcp_discovery_token_refreshes_total",
        ];
        let ours: String = text
            .lines()
            .filter(|l| {
                let name = l
                    .strip_prefix("# HELP ")
                    .or_else(|| l.strip_prefix("# TYPE "))
                    .unwrap_or(l);
                let name = name.split(['{', ' ']).next().unwrap_or("");
                families.iter().any(|f| {
                    name == *f
                        || name
                            .strip_prefix(f)
                            .is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest))
                })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics/per_server.txt");
        if std::env::var_os("UPDATE_METRICS_GOLDEN").is_some() {
            std::fs::write(golden, &ours).unwrap();
        }
        let want = std::fs::read_to_string(golden).unwrap();
        assert_eq!(ours, want, "the per-server series changed");
        // And they sit among the registry's own families in name order.
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert!(names.len() > families.len(), "{names:?}");
    }

    #[test]
    fn reload_outcome_drives_last_reload_successful() {
        let m = Metrics::new().unwrap();
        let text = m.render().unwrap();
        assert_eq!(
            sample(&text, "mcp_discovery_config_last_reload_successful", &[]),
            Some(1.0)
        );
        m.config_reloaded(ReloadOutcome::Rejected);
        let text = m.render().unwrap();
        assert_eq!(
            sample(&text, "mcp_discovery_config_last_reload_successful", &[]),
            Some(0.0)
        );
    }

    #[test]
    fn two_instances_do_not_collide() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.catalog_published(1, 1);
        b.catalog_published(2, 2);
        assert_eq!(
            sample(&a.render().unwrap(), "mcp_discovery_catalog_version", &[]),
            Some(1.0)
        );
    }

    #[test]
    fn unusual_methods_share_one_label() {
        let m = actix_web::http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&m), "other");
        assert_eq!(method_label(&actix_web::http::Method::GET), "GET");
    }
}
