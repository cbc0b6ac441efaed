//! mcp-discovery, the service: the HTTP API over the discovery engine
//! (`discovery-actors`), configured by `discovery-config`.
//!
//! - [`Application`] builds the engine and the HTTP server on a listener of
//!   its own and runs them until stopped, shutting down in order.
//! - [`api`] is the HTTP API, [`gateway`] its MCP endpoint, [`encoding`] the
//!   compressed bodies of both, [`metrics`] every Prometheus metric,
//!   [`telemetry`] the logging set-up.
//! - [`cli`] is the command line (`serve`, `check`, `probe`); `main.rs` only
//!   calls [`cli::main`].

pub mod api;
pub mod cli;
pub mod encoding;
pub mod fdlimit;
pub mod gateway;
pub mod metrics;
pub mod probe;
pub mod reload;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use metrics::Metrics;
pub use startup::{AppHandle, AppOptions, Application};

/// A mutex of shared in-memory state, poisoned or not: what these mutexes
/// guard is plain maps and caches that a panicking holder cannot leave
/// half-updated.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
