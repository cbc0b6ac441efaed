//! Typed engine events. The service implements [`DiscoveryEvents`] with its
//! Prometheus metrics; the engine never depends on a metrics crate.

use std::time::Duration;

use crate::status::DiscoveryState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    Success,
    Failure,
}

impl RefreshOutcome {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Success => "success",
            RefreshOutcome::Failure => "failure",
        }
    }
}

/// Called from actor threads; implementations must be cheap and non-blocking.
pub trait DiscoveryEvents: Send + Sync + 'static {
    /// A server (incarnation) started: series that are counted later can be
    /// created at zero now, so alerts on them see the server at once.
    fn server_started(&self, _server: &str) {}
    /// A server entered `state` (also called once when it starts).
    fn state_changed(&self, _server: &str, _state: DiscoveryState) {}
    /// A discovery round (connect + list) ended.
    fn refresh_finished(&self, _server: &str, _outcome: RefreshOutcome, _took: Duration) {}
    /// The number of (filtered) tools a server contributes to the catalog.
    fn tool_count(&self, _server: &str, _count: usize) {}
    /// The number of tools a server lists that the catalog leaves out as
    /// invalid (sent by the registry, which also sees public-name clashes).
    fn invalid_tools(&self, _server: &str, _count: usize) {}
    /// A server was removed: drop its series.
    fn server_removed(&self, _server: &str) {}
    /// A push stream opened (`true`) or stopped being open (`false`).
    fn push_stream_connected(&self, _server: &str, _connected: bool) {}
    /// A push stream is being reopened after a failure.
    fn push_stream_reconnect(&self, _server: &str) {}
    /// A `notifications/*/list_changed` arrived (push stream, stdio,
    /// legacy SSE).
    fn list_changed(&self, _server: &str) {}
    /// An OAuth2 token request ended.
    fn token_refreshed(&self, _server: &str, _outcome: RefreshOutcome) {}
    /// A new catalog snapshot was published.
    fn catalog_published(&self, _version: u64, _tools: usize) {}
    /// Discovery attempts waiting for a permit of the attempt gate, and
    /// holding one, changed by these amounts (see [`crate::attempts`]).
    fn attempts_gate(&self, _waiting: i64, _running: i64) {}
}

/// For tests and `probe`.
pub struct NoEvents;

impl DiscoveryEvents for NoEvents {}
