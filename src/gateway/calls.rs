//! `tools/call` through the endpoint: find the owning server, bound the
//! calls per server (`mcp.max_concurrent_calls` in flight, as many more
//! queued, the rest refused at once), and hand the call to the server's
//! upstream actor (`discovery_actors::calls`), which runs it over its
//! live session. No bound is global: a hung server fills its own slots
//! and nobody else's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use discovery_actors::calls::{CallError, CallResult, CallRoutesSnapshot, CallTool};
use discovery_actors::mcp::McpError;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::metrics::{CallOutcome, Metrics};

/// Slack over the upstream's own deadline before the endpoint gives up on
/// the actor's answer (it enforces `timeout` itself; this only guards
/// against a lost reply).
const REPLY_SLACK: Duration = Duration::from_secs(5);

struct Limit {
    max: usize,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
}

/// Per-server call slots.
#[derive(Default)]
pub struct CallLimits {
    servers: Mutex<HashMap<String, Arc<Limit>>>,
}

/// Why the endpoint itself refused a call (before or instead of the
/// upstream's answer).
#[derive(Debug)]
pub enum Refusal {
    /// Every slot and queue place taken.
    Busy { server: String, max: usize },
    /// The engine has no running upstream of that name.
    NotRunning(String),
    /// The upstream's own error.
    Call(CallError),
}

/// One call as the endpoint hands it over.
pub struct CallRequest {
    pub server: String,
    pub tool: String,
    pub arguments: Option<Box<RawValue>>,
    pub meta: Option<Map<String, Value>>,
    pub extra: Map<String, Value>,
    pub client_capabilities: Option<Value>,
    pub timeout: Duration,
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<Value>>,
    /// Where the upstream's server-to-client requests go (ADR 0024).
    pub relay: Option<discovery_actors::mcp::relay::Relay>,
    pub cancel: oneshot::Receiver<()>,
}

impl CallLimits {
    fn limit(&self, server: &str, max: usize) -> Arc<Limit> {
        let mut servers = super::lock(&self.servers);
        match servers.get(server) {
            Some(l) if l.max == max => l.clone(),
            // New, or the limit changed by a reload: calls in flight keep
            // their slots of the old one.
            _ => {
                let l = Arc::new(Limit {
                    max,
                    slots: Arc::new(Semaphore::new(max)),
                    queued: AtomicUsize::new(0),
                });
                servers.insert(server.to_owned(), l.clone());
                l
            }
        }
    }

    /// A slot for a call to `server`, waiting in its queue up to `wait`.
    async fn slot(
        &self,
        server: &str,
        max: usize,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, Refusal> {
        let limit = self.limit(server, max);
        if let Ok(permit) = limit.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let busy = || Refusal::Busy {
            server: server.to_owned(),
            max,
        };
        if limit.queued.fetch_add(1, Ordering::AcqRel) >= max {
            limit.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        let acquired = tokio::time::timeout(wait, limit.slots.clone().acquire_owned()).await;
        limit.queued.fetch_sub(1, Ordering::AcqRel);
        match acquired {
            Ok(Ok(permit)) => Ok(permit),
            // Waited the whole call deadline for a slot.
            Err(_) => Err(Refusal::Call(CallError::Timeout {
                server: server.to_owned(),
                tool: String::new(),
                after: wait,
            })),
            Ok(Err(_)) => Err(busy()),
        }
    }

    /// Runs one call: slot, hand-over, outcome metrics.
    pub async fn call(
        &self,
        routes: &watch::Receiver<CallRoutesSnapshot>,
        metrics: &Metrics,
        max_concurrent: usize,
        req: CallRequest,
    ) -> Result<CallResult, Refusal> {
        let started = Instant::now();
        let server = req.server.clone();
        let result = self.call_inner(routes, max_concurrent, req).await;
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(Refusal::Busy { .. }) => CallOutcome::Busy,
            Err(Refusal::NotRunning(_)) => CallOutcome::Unavailable,
            Err(Refusal::Call(e)) => match e {
                CallError::Unavailable { .. } | CallError::Stopping(_) => CallOutcome::Unavailable,
                CallError::Timeout { .. } => CallOutcome::Timeout,
                CallError::Cancelled => CallOutcome::Cancelled,
                CallError::UnknownTool { .. } | CallError::Upstream(_) => CallOutcome::Error,
            },
        };
        metrics.tool_call(&server, outcome, started.elapsed());
        result
    }

    async fn call_inner(
        &self,
        routes: &watch::Receiver<CallRoutesSnapshot>,
        max_concurrent: usize,
        req: CallRequest,
    ) -> Result<CallResult, Refusal> {
        let Some(route) = routes.borrow().get(req.server.as_str()).cloned() else {
            return Err(Refusal::NotRunning(req.server));
        };
        let started = Instant::now();
        let _permit = self
            .slot(&req.server, max_concurrent, req.timeout)
            .await
            .map_err(|r| match r {
                Refusal::Call(CallError::Timeout { server, after, .. }) => {
                    Refusal::Call(CallError::Timeout {
                        server,
                        tool: req.tool.clone(),
                        after,
                    })
                }
                other => other,
            })?;
        let timeout = req.timeout.saturating_sub(started.elapsed());
        let server = req.server.clone();
        let tool = req.tool.clone();
        let msg = CallTool {
            tool: req.tool,
            arguments: req.arguments,
            meta: req.meta,
            extra: req.extra,
            client_capabilities: req.client_capabilities,
            timeout,
            progress: req.progress,
            relay: req.relay,
            cancel: req.cancel,
        };
        match tokio::time::timeout(timeout + REPLY_SLACK, route.send(msg)).await {
            Ok(Ok(answer)) => answer.map_err(Refusal::Call),
            // The actor stopped (a reload removed or restarted the server).
            Ok(Err(_)) => Err(Refusal::Call(CallError::Stopping(server))),
            Err(_) => Err(Refusal::Call(CallError::Timeout {
                server,
                tool,
                after: timeout,
            })),
        }
    }
}

/// The JSON-RPC error an upstream failure becomes: a JSON-RPC error from
/// the upstream is passed on as it is (code, message, data).
pub fn upstream_error(err: &McpError) -> (i64, String, Option<Value>) {
    match err {
        McpError::JsonRpc {
            code,
            message,
            data,
            ..
        } => (
            *code,
            message.clone(),
            data.as_deref().and_then(|d| serde_json::from_str(d).ok()),
        ),
        other => (
            super::wire::INTERNAL_ERROR,
            format!(
                "the upstream request failed: {}",
                discovery_actors::error_chain(other)
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn slots_then_a_queue_of_the_same_length_then_busy() {
        let limits = CallLimits::default();
        let wait = Duration::from_secs(5);
        let a1 = limits.slot("a", 1, wait).await.unwrap();
        // The queue takes one more; it gets the slot once a1 is released.
        let queued = {
            let limits = &limits;
            async move { limits.slot("a", 1, wait).await }
        };
        let mut queued = Box::pin(queued);
        assert!(futures_util::poll!(&mut queued).is_pending());
        // A third is refused at once.
        assert!(matches!(
            limits.slot("a", 1, wait).await,
            Err(Refusal::Busy { max: 1, .. })
        ));
        // Another server is not affected.
        let _b = limits.slot("b", 1, wait).await.unwrap();
        drop(a1);
        assert!(queued.await.is_ok());
        // A queued call waits at most its deadline.
        let _held = limits.slot("c", 1, wait).await.unwrap();
        assert!(matches!(
            limits.slot("c", 1, Duration::from_millis(20)).await,
            Err(Refusal::Call(CallError::Timeout { .. }))
        ));
    }
}
