//! A 2025 upstream's server-to-client requests during a call, relayed to
//! the 2025 client that made the call (ADR 0024).
//!
//! The session layer (`discovery_actors::mcp::relay`) hands a request it
//! may relay to the call's [`Relay`]; here it becomes a JSON-RPC request
//! on the client's call stream (the POST answered as `text/event-stream`)
//! under an id the engine allocates on the client's session, never the
//! upstream's own. The client answers with a POST of its response to
//! `/mcp` with its `Mcp-Session-Id`: 202 when a request waits for it,
//! 400 when none does (unknown id, answered already, or its call ended).
//! At most [`super::sessions::MAX_PENDING_RELAYS`] wait per session; when
//! the call ends, those still waiting are answered upstream with an error.

use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;
use discovery_actors::mcp::jsonrpc::RpcError as UpstreamError;
use discovery_actors::mcp::relay::{ClientAnswer, Relay, RelayedRequest, RELAYED};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::hub::sse_event;
use super::sessions::LegacySession;
use super::wire::{self, RpcError};

/// Requests of one call waiting to be written on its stream; the
/// session layer refuses one more at once.
const RELAY_QUEUE: usize = 8;

/// The client's side of one call's relay: the requests to write on its
/// stream, and the session whose ids they get.
pub struct CallRelay {
    rx: mpsc::Receiver<RelayedRequest>,
    session: Arc<LegacySession>,
    call: Value,
}

/// A relay for call `call` of `session` (its client's declared
/// capabilities decide what may be relayed), and its client's side; none
/// when the client declared none of the capabilities (nothing can reach
/// it, and its answer stays plain JSON with no wait for a first request;
/// the relay still names the missing capability to the upstream).
pub fn for_call(session: &Arc<LegacySession>, call: &Value) -> (Relay, Option<CallRelay>) {
    let (tx, rx) = mpsc::channel(RELAY_QUEUE);
    let declared = RELAYED.iter().any(|(_, capability)| {
        session
            .capabilities
            .get(capability)
            .is_some_and(Value::is_object)
    });
    let relay = Relay::new(tx, session.capabilities.clone());
    let theirs = declared.then(|| CallRelay {
        rx,
        session: session.clone(),
        call: call.clone(),
    });
    (relay, theirs)
}

impl CallRelay {
    /// The first request the upstream relays, if it relays any before the
    /// call ends (None: the call ended, or the channel closed).
    pub async fn first(&mut self) -> Option<RelayedRequest> {
        self.rx.recv().await
    }

    /// The SSE frame of `req`, under an id of the session; None when the
    /// session has too many waiting (the upstream gets an error).
    pub fn frame(&self, req: RelayedRequest) -> Option<Bytes> {
        match self.session.open_relay(&self.call, req.answer) {
            Ok(id) => {
                let mut frame = json!({"jsonrpc": "2.0", "id": id, "method": req.method});
                if let Some(params) = req.params {
                    frame["params"] = params;
                }
                Some(sse_event(frame.to_string().as_bytes()))
            }
            Err((_, answer)) => {
                let _ = answer.send(Err(UpstreamError {
                    code: wire::INTERNAL_ERROR,
                    message: format!(
                        "{}: {} requests relayed to this client wait for its answer already",
                        req.method,
                        super::sessions::MAX_PENDING_RELAYS
                    ),
                    data: None,
                }));
                None
            }
        }
    }

    /// The frame of the next relayed request ready, skipping those refused.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(req)) => {
                    if let Some(frame) = self.frame(req) {
                        return Poll::Ready(Some(frame));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A 2025 client's response (`id`, `answer`) to a relayed request: 202
/// when it was waited for, else 400 (the spec's answer to input a server
/// cannot accept).
pub fn answered(session: &LegacySession, id: &Value, answer: ClientAnswer) -> HttpResponse {
    if session.answer_relay(id, answer) {
        return HttpResponse::Accepted().finish();
    }
    let e = RpcError::new(
        StatusCode::BAD_REQUEST,
        Some(id),
        wire::INVALID_REQUEST,
        format!("Invalid request: no relayed request with id {id} waits for an answer on this session (answered already, or its call ended)"),
    );
    HttpResponse::build(e.status)
        .content_type("application/json")
        .body(e.to_json().to_string())
}
