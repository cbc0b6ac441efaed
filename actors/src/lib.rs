//! The mcp-discovery engine.
//!
//! - [`supervisor::Supervisor`] owns every upstream and applies config diffs.
//! - [`upstream::Upstream`] runs one server's discovery state machine, with
//!   child actors ([`upstream::poller::Poller`]; push stream and token
//!   refresher come later) that report by message.
//! - [`registry::Registry`] aggregates results into immutable
//!   [`catalog::Catalog`] snapshots published over `tokio::sync::watch`.
//! - [`mcp`] is the MCP client, plain async code.

pub mod attempts;
pub mod calls;
pub mod catalog;
pub mod events;
pub mod mcp;
pub mod registry;
pub mod status;
pub mod supervisor;
pub mod tools;
pub mod upstream;

pub use catalog::{Catalog, CatalogEntry};
pub use events::{DiscoveryEvents, NoEvents, RefreshOutcome};
pub use status::{DiscoveryState, PushStreamState, ServerView, ServersSnapshot};
pub use supervisor::{start_engine, Engine};

/// Formats an error with its whole cause chain: `outer: middle: root`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // thiserror `#[error("...: {0}")]` often already embeds the cause.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A mutex of shared in-memory state, poisoned or not: what these mutexes
/// guard is plain maps and caches that a panicking holder cannot leave
/// half-updated.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
