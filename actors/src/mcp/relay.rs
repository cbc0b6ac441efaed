//! Server-to-client requests of a 2025 upstream during a relayed
//! `tools/call`, handed to the client of that call (ADR 0024).
//!
//! The engine declares `sampling`, `elicitation` and `roots` in its own
//! `initialize` upstream (one session serves every gateway client), and
//! decides per request: a request that belongs to a call whose client
//! declared the capability is handed to that client through its
//! [`Relay`] and answered with the client's answer; every other request
//! gets a JSON-RPC error at once, saying why (no call, several calls on a
//! one-stream transport, a client that cannot be asked, a capability the
//! client did not declare). A relayed request is answered in every case:
//! with the client's answer, or with an error when the client does not
//! answer within the call's deadline, or when the call ends first.
//!
//! Which call a request belongs to: over Streamable HTTP the one whose
//! POST stream carried it (the 2025 spec sends requests related to a
//! client request on that request's stream). Where the wire says nothing
//! (stdio and legacy SSE have one stream; and servers send a call's
//! `roots/list` on the Streamable HTTP GET stream too), the one call in
//! flight on the upstream session, and none when several are: the
//! request is then refused, saying so.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::jsonrpc::{self, RpcError, METHOD_NOT_FOUND};

/// "Internal error": the client did not answer in time, or went away.
const INTERNAL_ERROR: i64 = -32603;

/// The server-to-client requests a client capability stands for, and that
/// capability's name.
pub const RELAYED: &[(&str, &str)] = &[
    ("sampling/createMessage", "sampling"),
    ("elicitation/create", "elicitation"),
    ("roots/list", "roots"),
];

/// What a client answered: its `result`, or its `error`.
pub type ClientAnswer = Result<Value, RpcError>;

/// One upstream request for the client of a call. Dropping `answer`
/// unanswered (the call ended, the client went away) answers the upstream
/// with an error.
#[derive(Debug)]
pub struct RelayedRequest {
    pub method: String,
    pub params: Option<Value>,
    pub answer: oneshot::Sender<ClientAnswer>,
}

/// Where the server-to-client requests of one call go: the client of the
/// call, with the capabilities it declared.
#[derive(Clone, Debug)]
pub struct Relay {
    tx: mpsc::Sender<RelayedRequest>,
    capabilities: Value,
    /// How long a relayed request waits for the client at most (the
    /// call's own bound; set by the session layer).
    within: Duration,
}

impl Relay {
    /// Requests for a client that declared `capabilities` (its
    /// `initialize`) go to `tx`; a full or closed channel refuses them.
    pub fn new(tx: mpsc::Sender<RelayedRequest>, capabilities: Value) -> Self {
        Self {
            tx,
            capabilities,
            within: Duration::from_secs(60),
        }
    }

    pub(crate) fn bounded_by(mut self, within: Duration) -> Self {
        self.within = within;
        self
    }

    /// Why the client cannot be asked `method` (with `params`), if it
    /// cannot.
    fn missing(&self, method: &str, capability: &str, params: Option<&Value>) -> Option<String> {
        let declared = self.capabilities.get(capability).filter(|c| c.is_object());
        let Some(declared) = declared else {
            return Some(format!(
                "{method}: the client of this call did not declare the {capability} capability"
            ));
        };
        // 2025-11-25: URL-mode elicitation needs `elicitation.url`; an
        // empty `elicitation` object means form mode only.
        let mode = params.and_then(|p| p.get("mode")).and_then(Value::as_str);
        if method == "elicitation/create" && mode == Some("url") && declared.get("url").is_none() {
            return Some(format!(
                "{method}: the client of this call did not declare URL-mode elicitation (elicitation.url)"
            ));
        }
        None
    }
}

/// Which call a server-to-client request belongs to.
pub(crate) enum Target<'a> {
    /// This call, whose client can (`Some`) or cannot be asked.
    Call(Option<&'a Relay>),
    /// No call is in flight (a request on the GET stream, or outside any
    /// call on a one-stream transport).
    NoCall,
    /// This many calls are in flight on a one-stream transport: the
    /// request cannot be told apart.
    Ambiguous(usize),
}

/// The answer to a server-to-client request: at once, or once the client
/// answered (always resolves, within the call's bound).
pub(crate) enum Handled {
    Now(Vec<u8>),
    Later(Pin<Box<dyn Future<Output = Vec<u8>>>>),
}

/// Answers (or relays) the upstream's request `id`: `ping` gets an empty
/// result, the requests of [`RELAYED`] go to the client of the call when
/// it can be asked, everything else gets a JSON-RPC error saying why.
/// None when not even an error can be encoded.
pub(crate) fn handle(
    target: Target<'_>,
    id: &Value,
    method: &str,
    params: Option<Value>,
) -> Option<Handled> {
    let refuse = |why: String| {
        jsonrpc::encode_error(
            id,
            RpcError {
                code: METHOD_NOT_FOUND,
                message: format!("Method not found: {why}"),
                data: None,
            },
        )
        .ok()
        .map(Handled::Now)
    };
    let Some((_, capability)) = RELAYED.iter().find(|(m, _)| *m == method) else {
        return jsonrpc::answer_server_request(id, method)
            .ok()
            .map(Handled::Now);
    };
    let relay = match target {
        Target::Call(Some(relay)) => relay,
        Target::Call(None) => {
            return refuse(format!(
                "{method}: the client of this call cannot be asked (a 2026-07-28 client, or one without a 2025 session and its text/event-stream answer)"
            ))
        }
        Target::NoCall => {
            return refuse(format!(
                "{method}: mcp-discovery relays server-to-client requests only during a tools/call, to the client of that call; none is in flight"
            ))
        }
        Target::Ambiguous(n) => {
            return refuse(format!(
                "{method}: {n} tools/calls are in flight on this session's single stream and the request does not say which it belongs to"
            ))
        }
    };
    if let Some(why) = relay.missing(method, capability, params.as_ref()) {
        return refuse(why);
    }
    let (tx, rx) = oneshot::channel();
    let sent = relay.tx.try_send(RelayedRequest {
        method: method.to_owned(),
        params,
        answer: tx,
    });
    if let Err(e) = sent {
        let why = match e {
            mpsc::error::TrySendError::Full(_) => {
                "too many requests of this call wait for the client"
            }
            mpsc::error::TrySendError::Closed(_) => "the client of this call went away",
        };
        return jsonrpc::encode_error(id, internal(format!("{method}: {why}")))
            .ok()
            .map(Handled::Now);
    }
    let id = id.clone();
    let within = relay.within;
    let method = method.to_owned();
    Some(Handled::Later(Box::pin(async move {
        let encoded = match tokio::time::timeout(within, rx).await {
            Ok(Ok(Ok(result))) => jsonrpc::encode_result(&id, &result),
            Ok(Ok(Err(error))) => jsonrpc::encode_error(&id, error),
            Ok(Err(_)) => jsonrpc::encode_error(
                &id,
                internal(format!(
                    "{method}: the call ended (or its client went away) before the client answered"
                )),
            ),
            Err(_) => jsonrpc::encode_error(
                &id,
                internal(format!(
                    "{method}: the client did not answer within {}",
                    humantime::format_duration(within)
                )),
            ),
        };
        // An answer that cannot be encoded (a result that is not JSON
        // cannot happen: it was parsed) still answers.
        encoded.unwrap_or_else(|_| {
            jsonrpc::encode_error(&id, internal(format!("{method}: unencodable answer")))
                .unwrap_or_default()
        })
    })))
}

fn internal(message: String) -> RpcError {
    RpcError {
        code: INTERNAL_ERROR,
        message,
        data: None,
    }
}

/// The calls in flight on a one-stream transport (stdio, legacy SSE), with
/// their relays: a server request goes to the only one, or to none.
#[derive(Clone, Default)]
pub(crate) struct CallsInFlight(Rc<RefCell<Vec<CallInFlight>>>);

/// A call's JSON-RPC id upstream, and its relay.
type CallInFlight = (u64, Option<Relay>);

impl CallsInFlight {
    /// Counts call `id` in flight until the guard is dropped.
    pub(crate) fn register(&self, id: u64, relay: Option<&Relay>) -> InFlight {
        self.0.borrow_mut().push((id, relay.cloned()));
        InFlight {
            calls: self.clone(),
            id,
        }
    }

    /// Handles a server request as [`handle`] does, for the call in
    /// flight.
    pub(crate) fn handle(
        &self,
        id: &Value,
        method: &str,
        params: Option<Value>,
    ) -> Option<Handled> {
        let calls = self.0.borrow();
        let target = match calls.as_slice() {
            [] => Target::NoCall,
            [(_, relay)] => Target::Call(relay.as_ref()),
            many => Target::Ambiguous(many.len()),
        };
        handle(target, id, method, params)
    }
}

/// One call counted in flight; dropping it removes the entry.
pub(crate) struct InFlight {
    calls: CallsInFlight,
    id: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut calls = self.calls.0.borrow_mut();
        if let Some(at) = calls.iter().position(|(id, _)| *id == self.id) {
            calls.swap_remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now(h: Option<Handled>) -> Value {
        match h {
            Some(Handled::Now(bytes)) => serde_json::from_slice(&bytes).unwrap(),
            _ => panic!("not answered at once"),
        }
    }

    async fn later(h: Option<Handled>) -> Value {
        match h {
            Some(Handled::Later(f)) => serde_json::from_slice(&f.await).unwrap(),
            _ => panic!("answered at once"),
        }
    }

    #[test]
    fn refusals_say_why_at_once() {
        let id = json!(4);
        let ping = now(handle(Target::NoCall, &id, "ping", None));
        assert_eq!(ping, json!({"jsonrpc": "2.0", "id": 4, "result": {}}));
        let no_call = now(handle(Target::NoCall, &id, "roots/list", None));
        assert_eq!(no_call["error"]["code"], -32601);
        assert!(no_call["error"]["message"]
            .as_str()
            .unwrap()
            .contains("none is in flight"));
        let many = now(handle(
            Target::Ambiguous(2),
            &id,
            "sampling/createMessage",
            None,
        ));
        assert!(many["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 tools/calls"));
        let modern = now(handle(Target::Call(None), &id, "elicitation/create", None));
        assert!(modern["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be asked"));
        let (tx, _rx) = mpsc::channel(1);
        let relay = Relay::new(tx, json!({"sampling": {}, "elicitation": {}}));
        let roots = now(handle(Target::Call(Some(&relay)), &id, "roots/list", None));
        assert_eq!(roots["error"]["code"], -32601);
        assert!(roots["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not declare the roots capability"));
        let url = now(handle(
            Target::Call(Some(&relay)),
            &id,
            "elicitation/create",
            Some(json!({"mode": "url"})),
        ));
        assert!(url["error"]["message"]
            .as_str()
            .unwrap()
            .contains("elicitation.url"));
        let other = now(handle(Target::Call(Some(&relay)), &id, "tasks/get", None));
        assert_eq!(other["error"]["code"], -32601);
    }

    #[actix_rt::test]
    async fn a_relayed_request_is_answered_with_the_clients_answer_or_an_error() {
        let (tx, mut rx) = mpsc::channel(1);
        let relay = Relay::new(tx, json!({"sampling": {}})).bounded_by(Duration::from_secs(5));
        let id = json!("up-1");
        // A `sampling/createMessage` without parameters through `relay`.
        let sample = |relay: &Relay| {
            handle(
                Target::Call(Some(relay)),
                &id,
                "sampling/createMessage",
                None,
            )
        };
        let pending = handle(
            Target::Call(Some(&relay)),
            &id,
            "sampling/createMessage",
            Some(json!({"maxTokens": 3})),
        );
        // The channel holds one: a second waits for nobody, refused at once.
        let full = now(sample(&relay));
        assert!(full["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many"));
        let asked = rx.recv().await.unwrap();
        assert_eq!(asked.method, "sampling/createMessage");
        assert_eq!(asked.params, Some(json!({"maxTokens": 3})));
        asked.answer.send(Ok(json!({"role": "assistant"}))).unwrap();
        assert_eq!(
            later(pending).await,
            json!({"jsonrpc": "2.0", "id": "up-1", "result": {"role": "assistant"}})
        );
        // The client's error goes back as it is.
        let pending = sample(&relay);
        let asked = rx.recv().await.unwrap();
        let declined = RpcError {
            code: -1,
            message: "User rejected".into(),
            data: None,
        };
        asked.answer.send(Err(declined)).unwrap();
        assert_eq!(later(pending).await["error"]["code"], -1);
        // The call ends first: an error, not silence.
        let pending = sample(&relay);
        drop(rx.recv().await.unwrap());
        let ended = later(pending).await;
        assert!(ended["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before the client answered"));
        // No answer within the bound.
        let short = relay.clone().bounded_by(Duration::from_millis(10));
        let pending = sample(&short);
        let _held = rx.recv().await.unwrap();
        let silent = later(pending).await;
        assert!(silent["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within"));
    }

    #[test]
    fn one_stream_transports_relay_to_the_only_call_in_flight() {
        let calls = CallsInFlight::default();
        let (tx, _rx) = mpsc::channel(4);
        let relay = Relay::new(tx, json!({"roots": {}}));
        let id = json!(1);
        let none = now(calls.handle(&id, "roots/list", None));
        assert!(none["error"]["message"]
            .as_str()
            .unwrap()
            .contains("none is in flight"));
        let one = calls.register(7, Some(&relay));
        assert!(matches!(
            calls.handle(&id, "roots/list", None),
            Some(Handled::Later(_))
        ));
        let two = calls.register(8, None);
        let many = now(calls.handle(&id, "roots/list", None));
        assert!(many["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 tools/calls"));
        drop(one);
        let other = now(calls.handle(&id, "roots/list", None));
        assert!(other["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be asked"));
        drop(two);
        assert!(calls.0.borrow().is_empty());
    }
}
