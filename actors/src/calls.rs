//! `tools/call` relayed to an upstream over its live session (issue 11).
//!
//! The MCP endpoint (`src/gateway/`) sends [`CallTool`] to the owning
//! [`crate::upstream::Upstream`], found in the [`CallRoutes`] snapshot the
//! supervisor publishes (no supervisor round trip per call). The upstream
//! runs the call on its own arbiter with its current session: no connection
//! per call, no re-listing first. Per-server concurrency bounds and metrics
//! live with the endpoint (it knows the config as it is now, and the
//! outcomes the upstream never sees: unknown tool, busy). ADR 0018.
//!
//! `Recipient::send` failing (`MailboxError`) means the upstream actor is
//! gone (removed, or dead and about to be restarted): answer as
//! [`CallError::Stopping`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::mcp::McpError;
use crate::status::DiscoveryState;

/// Where a call for each running server goes: server name -> its upstream
/// actor (the newest generation). Published by the supervisor over `watch`
/// whenever the running set changes (start, stop, restart; one snapshot
/// per reload); a removed server has no route.
pub type CallRoutes = HashMap<String, Recipient<CallTool>>;

/// Shared, immutable snapshot of [`CallRoutes`].
pub type CallRoutesSnapshot = Arc<CallRoutes>;

/// Sent by the MCP endpoint to an upstream: call `tool` (its upstream name)
/// and answer with the upstream's result, verbatim.
///
/// Dropping the `cancel` sender (the client went away, sent
/// `notifications/cancelled`, or the endpoint gave up) cancels the call
/// upstream; so does `timeout`, and so does the upstream actor stopping.
/// Cancelling upstream: the request is dropped (over HTTP its connection
/// closed: the 2026-07-28 cancellation) and, for a 2025 session and for a
/// 2026-07-28 stdio server, `notifications/cancelled` names its id.
#[derive(Message)]
#[rtype(result = "Result<CallResult, CallError>")]
pub struct CallTool {
    /// The tool's name on the upstream (not the public name).
    pub tool: String,
    /// `params.arguments`, verbatim (None: absent).
    pub arguments: Option<Box<RawValue>>,
    /// The client's `params._meta`, passed through (trace context, custom
    /// keys) except its `io.modelcontextprotocol/*` keys: the engine sets
    /// its own for the upstream's era. Its `progressToken` is replaced by
    /// one unique on the upstream session when `progress` is given (and
    /// dropped when it is not).
    pub meta: Option<Map<String, Value>>,
    /// Every other key of the client's `params` (a 2026-07-28 retry's
    /// `inputResponses` and `requestState`), verbatim (`name`, `arguments`
    /// and `_meta` here are ignored).
    pub extra: Map<String, Value>,
    /// What the client declared (`clientCapabilities` of a modern client,
    /// `capabilities` of a 2025 session's `initialize`): a 2026-07-28
    /// upstream gets it as the request's `clientCapabilities` (an object,
    /// else `{}`); a 2025 session declared its capabilities once at its
    /// `initialize` and cannot change them per request, so there it is
    /// not forwarded: the call's server-to-client requests go to `relay`,
    /// which checks them against the capabilities it holds (ADR 0024).
    pub client_capabilities: Option<Value>,
    /// The deadline of the whole call, the server's `call_timeout` (a
    /// re-established session and the retry included).
    pub timeout: Duration,
    /// Progress notifications (`params` of `notifications/progress`, with
    /// the client's own `progressToken` put back) the upstream sends for
    /// this call, relayed as they come. Only when `meta` has a
    /// `progressToken`.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<Value>>,
    /// Where a 2025 upstream's server-to-client requests during the call
    /// go (the calling 2025 client, on its session); None refuses them
    /// with an error saying the client cannot be asked. ADR 0024.
    pub relay: Option<crate::mcp::relay::Relay>,
    /// Resolves (sender dropped or sent) when the caller cancels.
    pub cancel: tokio::sync::oneshot::Receiver<()>,
}

/// The upstream's `result` object, byte for byte (`isError`,
/// `structuredContent`, a 2026-07-28 `input_required` alike).
#[derive(Debug)]
pub struct CallResult {
    pub raw: Box<RawValue>,
}

/// Why a call produced no upstream result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server is not healthy (or has no session): answered at once,
    /// never after waiting for a timeout.
    #[error("server {server:?} is {}: {reason}", state.as_str())]
    Unavailable {
        server: String,
        state: DiscoveryState,
        /// Its `last_error`, or why there is no session.
        reason: String,
    },
    /// The last listing of the server has no such tool.
    #[error("server {server:?} lists no tool named {tool:?}")]
    UnknownTool { server: String, tool: String },
    /// No result within `timeout`; the upstream request was cancelled.
    #[error("tools/call of {tool:?} on server {server:?} got no result within {} (call_timeout); the upstream request was cancelled", humantime::format_duration(*after))]
    Timeout {
        server: String,
        tool: String,
        after: Duration,
    },
    /// The caller cancelled; the upstream request was cancelled too.
    #[error("cancelled by the client")]
    Cancelled,
    /// The upstream answered with a JSON-RPC error or the request failed
    /// (after the one re-established session and retry the session
    /// machinery makes: then [`McpError::SessionExpired`]). A JSON-RPC
    /// error is [`McpError::JsonRpc`], whose code, message and data (the
    /// JSON text of `data`) are passed to the client as they are.
    #[error(transparent)]
    Upstream(#[from] McpError),
    /// The upstream actor is stopping (removed, restarted by a reload).
    #[error("server {0:?} is stopping")]
    Stopping(String),
}
