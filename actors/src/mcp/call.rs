//! `tools/call` relayed over a live session (ADR 0018): what the session
//! layer adds to a plain request.
//!
//! - The request is built once, with the client's `arguments` byte for
//!   byte (a [`RawValue`], never a `Value` round trip that would round a
//!   large integer), the client's `_meta` minus its protocol keys, and its
//!   other `params` keys (a 2026-07-28 retry's `inputResponses`,
//!   `requestState`) as they came; the era adds its own `_meta` keys (and
//!   on the 2026-07-28 wire the client's capabilities and the headers).
//! - Progress: the client's `progressToken` is replaced by one unique on
//!   this session (many clients share it, and their tokens may collide);
//!   the upstream's `notifications/progress` for it are handed on with the
//!   client's token put back.
//! - The deadline is the call's own (`call_timeout`), not
//!   `discovery.request_timeout`. On that deadline or on the caller's
//!   cancel the request future is dropped (over HTTP that closes its
//!   connection: the 2026-07-28 cancellation), and where the era wants it
//!   `notifications/cancelled` names the upstream request id.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::jsonrpc::numeric_id;
use super::relay::Relay;
use super::{McpError, Session, Tool};

/// The method of a progress notification.
pub(crate) const PROGRESS: &str = "notifications/progress";
/// The method that cancels a request.
pub(crate) const CANCELLED: &str = "notifications/cancelled";
/// The `_meta` keys of the protocol itself: the client's are not passed
/// on (the session sets its own for the upstream's era).
const PROTOCOL_META_PREFIX: &str = "io.modelcontextprotocol/";
/// The transports' own bound on a call's request sits this far behind the
/// call's deadline, so that the deadline (and its cancellation) decides.
const BACKSTOP: Duration = Duration::from_secs(1);

/// One relayed `tools/call` (see [`Session::call`]).
#[derive(Debug, Default)]
pub struct ToolCall {
    /// `params.arguments`, verbatim (None: absent).
    pub arguments: Option<Box<RawValue>>,
    /// The client's `params._meta`.
    pub meta: Option<Map<String, Value>>,
    /// The client's other `params` keys, verbatim (`name`, `arguments`
    /// and `_meta` among them are ignored: the call sets those).
    pub extra: Map<String, Value>,
    /// What the client declared; sent as the request's
    /// `clientCapabilities` on the 2026-07-28 wire (an object, else `{}`).
    /// A 2025 session declared its capabilities once, at `initialize`.
    pub client_capabilities: Option<Value>,
    /// The deadline of the whole call (a re-established session and its
    /// retry included).
    pub timeout: Duration,
    /// Where the call's progress notifications go (`params`, with the
    /// client's `progressToken`). Without it, or without a client
    /// `progressToken`, no progress is asked for.
    pub progress: Option<UnboundedSender<Value>>,
    /// Where the upstream's server-to-client requests during the call go
    /// (a 2025 client on its session; ADR 0024). None: they are refused
    /// with an error saying the client cannot be asked.
    pub relay: Option<Relay>,
}

/// Why a call produced no result.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    /// No result within the call's timeout; the request was cancelled.
    #[error("no result within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The caller cancelled; the request was cancelled upstream.
    #[error("cancelled")]
    Cancelled,
    /// An error answer, or the request failed.
    #[error(transparent)]
    Failed(#[from] McpError),
}

/// The progress of one call: matches the upstream's notifications to the
/// token sent, and hands them on with the client's own token.
#[derive(Clone, Debug)]
pub(crate) struct ProgressSink {
    token: u64,
    client_token: Value,
    tx: UnboundedSender<Value>,
}

impl ProgressSink {
    /// The token the upstream was given.
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    /// Hands on `params` of a `notifications/progress` if it is for this
    /// call; whether it was.
    pub(crate) fn offer(&self, params: Option<&Value>) -> bool {
        let Some(params) = params else {
            return false;
        };
        if progress_token(params) != Some(self.token) {
            return false;
        }
        let mut params = params.clone();
        if let Some(map) = params.as_object_mut() {
            map.insert("progressToken".into(), self.client_token.clone());
        }
        // The caller may have stopped listening: that is its business.
        let _ = self.tx.send(params);
        true
    }
}

/// What the upstream sends during one call that goes to its client: its
/// progress, and its server-to-client requests.
#[derive(Clone, Copy, Default)]
pub(crate) struct Sinks<'a> {
    pub(crate) progress: Option<&'a ProgressSink>,
    pub(crate) relay: Option<&'a Relay>,
}

impl Prepared {
    pub(crate) fn sinks(&self) -> Sinks<'_> {
        Sinks {
            progress: self.progress.as_ref(),
            relay: self.relay.as_ref(),
        }
    }
}

/// The progress token a `notifications/progress` carries, when it is one
/// of ours (an integer, or its decimal text).
pub(crate) fn progress_token(params: &Value) -> Option<u64> {
    params.get("progressToken").and_then(numeric_id)
}

/// The calls in flight on a stream transport (stdio, legacy SSE) that
/// asked for progress, by token: the reader hands each its notifications.
#[derive(Clone, Default)]
pub(crate) struct ProgressRoutes(Rc<RefCell<HashMap<u64, ProgressSink>>>);

impl ProgressRoutes {
    /// Routes `sink`'s notifications until the guard is dropped.
    pub(crate) fn register(&self, sink: &ProgressSink) -> ProgressRoute {
        self.0.borrow_mut().insert(sink.token(), sink.clone());
        ProgressRoute {
            routes: self.clone(),
            token: sink.token(),
        }
    }

    /// Hands a notification to the call it is for; false when it is not a
    /// progress notification of a call in flight (the caller handles it).
    pub(crate) fn deliver(&self, method: &str, params: Option<&Value>) -> bool {
        if method != PROGRESS {
            return false;
        }
        let Some(token) = params.and_then(progress_token) else {
            return false;
        };
        let sink = self.0.borrow().get(&token).cloned();
        sink.is_some_and(|sink| sink.offer(params))
    }
}

/// One registered route; dropping it removes the entry.
pub(crate) struct ProgressRoute {
    routes: ProgressRoutes,
    token: u64,
}

impl Drop for ProgressRoute {
    fn drop(&mut self) {
        self.routes.0.borrow_mut().remove(&self.token);
    }
}

/// A call, ready for the wire: its `params` serialized once (a retry on a
/// re-established session sends the same bytes under a new id).
pub(crate) struct Prepared {
    pub(crate) name: String,
    pub(crate) params: Box<RawValue>,
    /// `Mcp-Param-*` (2026-07-28 over HTTP; empty otherwise).
    pub(crate) named: Vec<(String, String)>,
    /// The transports' bound on one attempt (behind the call's deadline).
    pub(crate) after: Duration,
    pub(crate) progress: Option<ProgressSink>,
    /// Where the upstream's requests during the call go (bounded by
    /// `after`).
    pub(crate) relay: Option<Relay>,
    /// The JSON-RPC id of the attempt in flight, for the cancellation.
    pub(crate) in_flight: Cell<Option<u64>>,
}

#[derive(Serialize)]
struct CallParams<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta", skip_serializing_if = "Map::is_empty")]
    meta: &'a Map<String, Value>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// The client's `_meta` for the upstream: its protocol keys dropped (the
/// era sets its own), its `progressToken` replaced by `token` when
/// progress is relayed, else removed (nobody would listen).
fn client_meta(
    meta: Option<Map<String, Value>>,
    token: Option<u64>,
) -> (Map<String, Value>, Value) {
    let mut meta = meta.unwrap_or_default();
    meta.retain(|key, _| !key.starts_with(PROTOCOL_META_PREFIX));
    let client_token = meta.shift_remove("progressToken").unwrap_or(Value::Null);
    if let (Some(token), false) = (token, client_token.is_null()) {
        meta.insert("progressToken".into(), Value::from(token));
    }
    (meta, client_token)
}

impl Session {
    /// `tools/call` of `tool` (as listed by this session's server), relayed
    /// for a client: see the module doc. `cancel` resolving (with the
    /// reason the upstream is told) cancels the call. The raw `result`,
    /// verbatim; a tool that fails validation is refused with
    /// [`McpError::InvalidTool`] before anything is sent.
    pub async fn call(
        &self,
        tool: &Tool,
        call: ToolCall,
        cancel: impl Future<Output = &'static str>,
    ) -> Result<Box<RawValue>, CallFailure> {
        let timeout = call.timeout;
        let prepared = self.prepare(tool, call)?;
        let era = &self.inner.era;
        let (failure, reason) = {
            // Boxed: the request's future is large (the transport's
            // exchange and stream states), and this keeps it from being
            // copied at every layer that moves the call's future.
            let mut work = Box::pin(era.call(&prepared));
            tokio::pin!(cancel);
            tokio::select! {
                biased;
                result = &mut work => return result.map_err(CallFailure::Failed),
                reason = &mut cancel => (CallFailure::Cancelled, reason.to_owned()),
                () = tokio::time::sleep(timeout) => (
                    CallFailure::TimedOut(timeout),
                    format!(
                        "no result within {} (call_timeout)",
                        humantime::format_duration(timeout)
                    ),
                ),
            }
        };
        // The request future is gone: over HTTP its connection is closed.
        if let Some(id) = prepared.in_flight.get() {
            let session = self.clone();
            actix_rt::spawn(async move { session.inner.era.cancel(id, &reason).await });
        }
        Err(failure)
    }

    fn prepare(&self, tool: &Tool, call: ToolCall) -> Result<Prepared, McpError> {
        let invalid = |reason: String| McpError::InvalidTool {
            tool: tool.name.clone(),
            reason,
        };
        crate::tools::check_tool(&tool.raw).map_err(invalid)?;
        let era = &self.inner.era;
        let wants_progress = call.progress.is_some()
            && call
                .meta
                .as_ref()
                .is_some_and(|m| m.get("progressToken").is_some_and(|t| !t.is_null()));
        let token = wants_progress.then(|| era.wire().next_id());
        let (mut meta, client_token) = client_meta(call.meta, token);
        era.set_call_meta(&mut meta, call.client_capabilities.as_ref());
        let mut extra = call.extra;
        for key in ["name", "arguments", "_meta"] {
            extra.shift_remove(key);
        }
        let arguments = call.arguments.as_deref();
        let params = serde_json::value::to_raw_value(&CallParams {
            name: &tool.name,
            arguments,
            meta: &meta,
            extra: &extra,
        })
        .map_err(|source| McpError::MalformedJson {
            context: "the tools/call request".into(),
            source,
        })?;
        // Most tools carry no `x-mcp-header` annotation: parse the tool's
        // schema only when its text may hold one, as `check_tool` does.
        let annotated = crate::tools::may_hold_header_annotation(tool.raw.get());
        let named = if era.mirrors_params() && annotated {
            let schema = serde_json::from_str::<Value>(tool.raw.get())
                .map_err(|e| invalid(e.to_string()))?
                .get_mut("inputSchema")
                .map(Value::take)
                .unwrap_or(Value::Null);
            let arguments = arguments
                .and_then(|a| serde_json::from_str::<Value>(a.get()).ok())
                .unwrap_or(Value::Null);
            super::era::params::param_headers(&schema, &arguments)
        } else {
            Vec::new()
        };
        let progress = match (token, call.progress) {
            (Some(token), Some(tx)) => Some(ProgressSink {
                token,
                client_token,
                tx,
            }),
            _ => None,
        };
        Ok(Prepared {
            name: tool.name.clone(),
            params,
            named,
            after: call.timeout.saturating_add(BACKSTOP),
            progress,
            relay: call
                .relay
                .map(|r| r.bounded_by(call.timeout.saturating_add(BACKSTOP))),
            in_flight: Cell::new(None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_clients_meta_loses_its_protocol_keys_and_its_token() {
        let meta = json!({
            "progressToken": "client-7",
            "traceparent": "00-abc-def-01",
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/logLevel": "debug",
            "custom": {"a": 1},
        });
        let meta = meta.as_object().cloned();
        let (ours, client) = client_meta(meta.clone(), Some(42));
        assert_eq!(client, json!("client-7"));
        assert_eq!(
            Value::Object(ours),
            json!({"traceparent": "00-abc-def-01", "custom": {"a": 1}, "progressToken": 42})
        );
        let (ours, _) = client_meta(meta, None);
        assert!(ours.get("progressToken").is_none(), "nobody listens");
        let (ours, client) = client_meta(None, Some(1));
        assert!(ours.is_empty() && client.is_null());
    }

    #[test]
    fn params_keep_the_arguments_byte_for_byte() {
        let arguments = RawValue::from_string(
            r#"{"big": 123456789012345678901234567890, "f": 1.50, "z": 1, "a": 2}"#.into(),
        )
        .unwrap();
        let extra = json!({"inputResponses": {"k": {"x": 1}}, "requestState": "opaque=="});
        let meta = Map::new();
        let raw = serde_json::value::to_raw_value(&CallParams {
            name: "t",
            arguments: Some(&arguments),
            meta: &meta,
            extra: extra.as_object().unwrap(),
        })
        .unwrap();
        assert_eq!(
            raw.get(),
            r#"{"name":"t","arguments":{"big": 123456789012345678901234567890, "f": 1.50, "z": 1, "a": 2},"inputResponses":{"k":{"x":1}},"requestState":"opaque=="}"#
        );
    }

    #[test]
    fn progress_is_matched_by_token_and_handed_on_with_the_clients() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = ProgressSink {
            token: 9,
            client_token: json!("mine"),
            tx,
        };
        let routes = ProgressRoutes::default();
        let route = routes.register(&sink);
        let ours = json!({"progressToken": 9, "progress": 1, "total": 2});
        assert!(routes.deliver(PROGRESS, Some(&ours)));
        assert!(routes.deliver(
            PROGRESS,
            Some(&json!({"progressToken": "9", "progress": 2}))
        ));
        assert!(!routes.deliver(PROGRESS, Some(&json!({"progressToken": 8, "progress": 1}))));
        assert!(!routes.deliver("notifications/message", Some(&ours)));
        assert_eq!(
            rx.try_recv().unwrap(),
            json!({"progressToken": "mine", "progress": 1, "total": 2})
        );
        assert_eq!(rx.try_recv().unwrap()["progress"], 2);
        assert!(rx.try_recv().is_err());
        drop(route);
        assert!(
            !routes.deliver(PROGRESS, Some(&ours)),
            "the route went with its call"
        );
    }
}
