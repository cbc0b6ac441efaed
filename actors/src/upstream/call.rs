//! `tools/call` through the upstream actor (ADR 0018).
//!
//! The handler only decides, from what the actor knows right now, whether
//! the call can go (healthy, a live session, a listed tool) and answers at
//! once when it cannot. The call itself runs as its own task on this
//! arbiter with a clone of the session: calls run side by side, never
//! behind each other or behind a discovery round, and a hung one holds
//! nothing of the actor. It touches no discovery state; a forgotten 2025
//! session is re-established by the session layer, as for any request.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use actix::prelude::*;
use tracing::Instrument;

use super::Upstream;
use crate::calls::{CallError, CallResult, CallTool};
use crate::mcp::call::{CallFailure, ToolCall};
use crate::mcp::{Session, Tool};
use crate::status::DiscoveryState;

/// The reason an upstream is told when a call is cancelled because the
/// server is being stopped (removed, or restarted by a reload).
const STOPPING_REASON: &str = "the server is being stopped by mcp-discovery";
/// ... and when the client cancelled (or went away).
const CLIENT_REASON: &str = "the client cancelled the request";

impl Upstream {
    /// The session and the listed tool for a call, or why it cannot go.
    fn admit(&self, tool: &str) -> Result<(Session, Tool), CallError> {
        let server = || self.spec.name.to_string();
        if self.stopping {
            return Err(CallError::Stopping(server()));
        }
        let state = self.discovery.state();
        let unavailable = |reason: String| CallError::Unavailable {
            server: server(),
            state,
            reason,
        };
        if state == DiscoveryState::Degraded {
            return Err(unavailable(
                self.discovery
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "discovery failed".to_owned()),
            ));
        }
        let Some(session) = self.session.clone() else {
            return Err(unavailable(
                self.discovery.last_error.clone().unwrap_or_else(|| {
                    "no live session yet: the server is still being connected".to_owned()
                }),
            ));
        };
        // A stdio child that just exited, before the actor heard of it.
        if let Some(closed) = session.closed() {
            return Err(unavailable(crate::error_chain(&closed)));
        }
        match self.part.find(tool) {
            Some(listed) => Ok((session, listed)),
            None => Err(CallError::UnknownTool {
                server: server(),
                tool: tool.to_owned(),
            }),
        }
    }
}

/// Sent by the MCP endpoint (through [`crate::calls::CallRoutes`]): answers
/// at once when the server is degraded, has no session or lists no such
/// tool; otherwise runs the call on the live session, cancelled by the
/// message's `cancel`, its `timeout`, or this actor stopping.
impl Handler<CallTool> for Upstream {
    type Result = ResponseFuture<Result<CallResult, CallError>>;

    fn handle(&mut self, msg: CallTool, _ctx: &mut Self::Context) -> Self::Result {
        let (session, tool) = match self.admit(&msg.tool) {
            Ok(admitted) => admitted,
            Err(e) => {
                let _g = self.span.enter();
                tracing::debug!(tool = %msg.tool, error = %e, "Tool call refused.");
                return Box::pin(async move { Err(e) });
            }
        };
        let server = self.spec.name.to_string();
        let CallTool {
            tool: name,
            arguments,
            meta,
            extra,
            client_capabilities,
            timeout,
            progress,
            relay,
            cancel,
        } = msg;
        let call = ToolCall {
            arguments,
            meta,
            extra,
            client_capabilities,
            timeout,
            progress,
            relay,
        };
        let mut stop = self.calls_stop.subscribe();
        let stopped = Rc::new(Cell::new(false));
        let cancel = {
            let stopped = Rc::clone(&stopped);
            async move {
                tokio::select! {
                    _ = cancel => CLIENT_REASON,
                    // Sent, or the actor is gone (its sender dropped).
                    _ = stop.wait_for(|stopping| *stopping) => {
                        stopped.set(true);
                        STOPPING_REASON
                    }
                }
            }
        };
        let work = async move {
            let started = Instant::now();
            let outcome = session.call(&tool, call, cancel).await;
            let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match outcome {
                Ok(raw) => {
                    tracing::debug!(tool = %name, took_ms, "Tool call answered.");
                    Ok(CallResult { raw })
                }
                Err(CallFailure::TimedOut(after)) => {
                    tracing::warn!(tool = %name, took_ms, "Tool call timed out; cancelled it upstream.");
                    Err(CallError::Timeout {
                        server,
                        tool: name,
                        after,
                    })
                }
                Err(_) if stopped.get() => Err(CallError::Stopping(server)),
                Err(CallFailure::Cancelled) => {
                    tracing::debug!(tool = %name, took_ms, "Tool call cancelled by the client; cancelled it upstream.");
                    Err(CallError::Cancelled)
                }
                Err(CallFailure::Failed(e)) => {
                    tracing::debug!(tool = %name, took_ms, error = %e.chain(), "Tool call failed.");
                    Err(CallError::Upstream(e))
                }
            }
        }
        .instrument(self.span.clone());
        Box::pin(work)
    }
}

#[cfg(test)]
mod tests;
