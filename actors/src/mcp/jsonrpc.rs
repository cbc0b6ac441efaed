//! JSON-RPC 2.0 envelopes, per-session ids, and the pending-request table the
//! stream transports (stdio, legacy SSE) route responses through.
//!
//! Results stay raw (`Box<RawValue>`): a `tools/list` page is copied once
//! out of the body and never turned into a `Value` tree.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::oneshot;

use super::McpError;

/// "Method not found".
pub const METHOD_NOT_FOUND: i64 = -32601;

/// Request ids of one session: 1, 2, 3, ...
#[derive(Debug, Default)]
pub struct IdGen(Cell<u64>);

impl IdGen {
    pub fn next_id(&self) -> u64 {
        let n = self.0.get().wrapping_add(1);
        self.0.set(n);
        n
    }
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct RpcError {
    pub code: i64,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// The error as the `McpError` of a call to `method`.
    pub fn into_mcp(self, method: &str) -> McpError {
        McpError::JsonRpc {
            method: method.to_owned(),
            code: self.code,
            message: self.message,
            data: self.data.map(|d| d.to_string()),
        }
    }
}

/// 2026-07-28 errors: header mismatch, missing client capability,
/// unsupported protocol version. No 2025 server sends them.
pub const HEADER_MISMATCH: i64 = -32020;
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// The JSON-RPC error of an HTTP error body, when it is one of the
/// 2026-07-28 errors (see the constants above); None otherwise.
pub fn modern_error(body: &[u8]) -> Option<RpcError> {
    #[derive(Deserialize)]
    struct Body {
        error: RpcError,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    matches!(
        body.error.code,
        HEADER_MISMATCH | MISSING_CLIENT_CAPABILITY | UNSUPPORTED_PROTOCOL_VERSION
    )
    .then_some(body.error)
}

/// What a response carries.
pub type Reply = Result<Box<RawValue>, RpcError>;

/// One message received from a server.
#[derive(Debug)]
pub enum Incoming {
    Response {
        id: Value,
        reply: Reply,
    },
    /// A server-to-client request (e.g. `ping`): must be answered.
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    Notification {
        method: String,
        params: Option<Value>,
    },
}

#[derive(Serialize)]
struct OutRequest<'a> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a Value>,
}

#[derive(Serialize)]
struct OutNotification<'a> {
    jsonrpc: &'static str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a Value>,
}

#[derive(Serialize)]
struct OutResult<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a Value,
}

#[derive(Serialize)]
struct OutError<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    error: RpcError,
}

fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, McpError> {
    // Compact output: no raw newlines, as stdio framing requires.
    serde_json::to_vec(msg).map_err(|source| McpError::MalformedJson {
        context: "an outgoing message".into(),
        source,
    })
}

pub fn encode_request(id: u64, method: &str, params: Option<&Value>) -> Result<Vec<u8>, McpError> {
    encode(&OutRequest {
        jsonrpc: "2.0",
        id,
        method,
        params,
    })
}

/// A request whose `params` are already serialized (a relayed
/// `tools/call`: its arguments stay byte for byte as the client sent them).
pub fn encode_request_raw(id: u64, method: &str, params: &RawValue) -> Result<Vec<u8>, McpError> {
    #[derive(Serialize)]
    struct OutRawRequest<'a> {
        jsonrpc: &'static str,
        id: u64,
        method: &'a str,
        params: &'a RawValue,
    }
    encode(&OutRawRequest {
        jsonrpc: "2.0",
        id,
        method,
        params,
    })
}

pub fn encode_notification(method: &str, params: Option<&Value>) -> Result<Vec<u8>, McpError> {
    encode(&OutNotification {
        jsonrpc: "2.0",
        method,
        params,
    })
}

/// A response with `result`.
pub(crate) fn encode_result(id: &Value, result: &Value) -> Result<Vec<u8>, McpError> {
    encode(&OutResult {
        jsonrpc: "2.0",
        id,
        result,
    })
}

/// A response with `error`.
pub(crate) fn encode_error(id: &Value, error: RpcError) -> Result<Vec<u8>, McpError> {
    encode(&OutError {
        jsonrpc: "2.0",
        id,
        error,
    })
}

/// The answer to a server-to-client request outside a relayed call:
/// `ping` gets an empty result; anything else "method not found", at once,
/// so a server that asks does not wait for an answer that never comes.
/// The message says why for sampling, elicitation and roots (which are
/// relayed only during a call: `super::relay`).
pub fn answer_server_request(id: &Value, method: &str) -> Result<Vec<u8>, McpError> {
    if method == "ping" {
        encode(&OutResult {
            jsonrpc: "2.0",
            id,
            result: &Value::Object(serde_json::Map::new()),
        })
    } else {
        encode(&OutError {
            jsonrpc: "2.0",
            id,
            error: RpcError {
                code: METHOD_NOT_FOUND,
                message: if super::relay::RELAYED.iter().any(|(m, _)| *m == method) {
                    format!("Method not found: {method}: mcp-discovery relays server-to-client requests only during a tools/call, to the client of that call; none is in flight")
                } else {
                    format!("Method not found: {method}")
                },
                data: None,
            },
        })
    }
}

/// Whether a response id is the one we sent (numbers; a server that
/// stringifies ids is tolerated).
pub fn id_matches(id: &Value, ours: u64) -> bool {
    numeric_id(id) == Some(ours)
}

pub(crate) fn numeric_id(id: &Value) -> Option<u64> {
    match id {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    jsonrpc: Option<String>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<RpcError>,
}

/// `Some` whenever the key is present, even with `null` (`"id": null`
/// and `"result": null` are still an id and a result).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl Envelope {
    fn classify(self) -> Result<Incoming, String> {
        if let Some(v) = &self.jsonrpc {
            if v != "2.0" {
                return Err(format!("`jsonrpc` is {v:?}, expected \"2.0\""));
            }
        }
        match (self.method, self.id) {
            (Some(method), Some(id)) => Ok(Incoming::Request {
                id,
                method,
                params: self.params,
            }),
            (Some(method), None) => Ok(Incoming::Notification {
                method,
                params: self.params,
            }),
            (None, Some(id)) => match (self.result, self.error) {
                (Some(result), _) => Ok(Incoming::Response {
                    id,
                    reply: Ok(result),
                }),
                (None, Some(error)) => Ok(Incoming::Response {
                    id,
                    reply: Err(error),
                }),
                (None, None) => Err("a response with neither `result` nor `error`".into()),
            },
            (None, None) => Err("neither `method` nor `id`".into()),
        }
    }
}

fn from_serde(err: serde_json::Error, context: &str) -> McpError {
    if err.is_data() {
        McpError::NotJsonRpc {
            context: context.to_owned(),
            detail: err.to_string(),
        }
    } else {
        McpError::MalformedJson {
            context: context.to_owned(),
            source: err,
        }
    }
}

/// Parses one message or a batch (JSON array) of messages. `context` says
/// where the bytes came from, for the error message.
pub fn parse_messages(bytes: &[u8], context: &str) -> Result<Vec<Incoming>, McpError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let envelopes: Vec<Envelope> = if first == Some(&b'[') {
        serde_json::from_slice(bytes).map_err(|e| from_serde(e, context))?
    } else {
        vec![serde_json::from_slice(bytes).map_err(|e| from_serde(e, context))?]
    };
    envelopes
        .into_iter()
        .map(|env| {
            env.classify().map_err(|detail| McpError::NotJsonRpc {
                context: context.to_owned(),
                detail,
            })
        })
        .collect()
}

/// Why a pending request got no reply although the transport is up.
#[derive(Clone, Debug)]
pub enum Failure {
    /// A message over the size limit arrived: most likely our response.
    TooLarge { limit: usize },
    /// An unreadable message arrived (the error chain): most likely our
    /// response.
    Malformed(String),
}

/// Why a transport stopped: every pending and later request fails with it.
#[derive(Clone, Debug)]
pub enum Closed {
    /// The stdio child exited; its exit status.
    ChildExited(String),
    /// The stream ended or was closed; why.
    Ended(String),
}

type Slot = oneshot::Sender<Result<Reply, Failure>>;

/// Requests awaiting a response on a stream transport, by id.
#[derive(Default)]
pub struct Pending {
    waiters: RefCell<HashMap<u64, Slot>>,
    closed: RefCell<Option<Closed>>,
}

impl Pending {
    /// Registers `id` before the request is written, so a fast response
    /// cannot be missed. Fails fast once the transport is closed.
    pub fn register(self: &Rc<Self>, id: u64) -> Result<Waiter, Closed> {
        if let Some(c) = self.closed() {
            return Err(c);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(id, tx);
        Ok(Waiter {
            pending: Rc::clone(self),
            id,
            rx,
        })
    }

    /// Hands a response to its waiter. False when nobody waits for it (a
    /// late response after a timeout, or an id we never sent).
    pub fn deliver(&self, id: &Value, reply: Reply) -> bool {
        let Some(n) = numeric_id(id) else {
            return false;
        };
        let slot = self.waiters.borrow_mut().remove(&n);
        match slot {
            Some(tx) => tx.send(Ok(reply)).is_ok(),
            None => false,
        }
    }

    /// Fails every waiter with `failure`; the transport stays up.
    pub fn fail_all(&self, failure: &Failure) {
        let drained: Vec<Slot> = self
            .waiters
            .borrow_mut()
            .drain()
            .map(|(_, tx)| tx)
            .collect();
        for tx in drained {
            let _ = tx.send(Err(failure.clone()));
        }
    }

    /// Marks the transport closed (the first reason wins) and wakes every
    /// waiter, which then reports the reason.
    pub fn close(&self, reason: Closed) {
        {
            let mut closed = self.closed.borrow_mut();
            if closed.is_none() {
                *closed = Some(reason);
            }
        }
        let drained: Vec<Slot> = self
            .waiters
            .borrow_mut()
            .drain()
            .map(|(_, tx)| tx)
            .collect();
        drop(drained);
    }

    pub fn closed(&self) -> Option<Closed> {
        self.closed.borrow().clone()
    }

    pub fn len(&self) -> usize {
        self.waiters.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One registered request. Dropping it (timeout, cancellation) removes the
/// entry, so the table never leaks.
pub struct Waiter {
    pending: Rc<Pending>,
    id: u64,
    rx: oneshot::Receiver<Result<Reply, Failure>>,
}

impl Waiter {
    pub async fn wait(&mut self) -> Result<Result<Reply, Failure>, Closed> {
        match (&mut self.rx).await {
            Ok(v) => Ok(v),
            Err(_) => Err(self
                .pending
                .closed()
                .unwrap_or_else(|| Closed::Ended("the transport went away".into()))),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.pending.waiters.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Incoming {
        let mut v = parse_messages(s.as_bytes(), "test").unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn ids_count_up_per_generator() {
        let a = IdGen::default();
        let b = IdGen::default();
        assert_eq!((a.next_id(), a.next_id(), b.next_id()), (1, 2, 1));
    }

    #[test]
    fn encodes_requests_and_notifications() {
        let r = encode_request(7, "tools/list", Some(&serde_json::json!({"cursor": "c"}))).unwrap();
        assert_eq!(
            std::str::from_utf8(&r).unwrap(),
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"c"}}"#
        );
        let n = encode_notification("notifications/initialized", None).unwrap();
        assert_eq!(
            std::str::from_utf8(&n).unwrap(),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
        );
    }

    #[test]
    fn answers_ping_and_refuses_the_rest() {
        let id = serde_json::json!("srv-1");
        let p = answer_server_request(&id, "ping").unwrap();
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            r#"{"jsonrpc":"2.0","id":"srv-1","result":{}}"#
        );
        let e = answer_server_request(&serde_json::json!(3), "sampling/createMessage").unwrap();
        let v: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["id"], 3);
    }

    #[test]
    fn parses_results_raw_and_verbatim() {
        match one(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","x":{"y":1}}]}}"#) {
            Incoming::Response { id, reply } => {
                assert!(id_matches(&id, 1));
                assert_eq!(
                    reply.unwrap().get(),
                    r#"{"tools":[{"name":"a","x":{"y":1}}]}"#
                );
            }
            other => panic!("{other:?}"),
        }
        // A null result is still a result.
        match one(r#"{"jsonrpc":"2.0","id":"2","result":null}"#) {
            Incoming::Response { id, reply } => {
                assert!(id_matches(&id, 2));
                assert_eq!(reply.unwrap().get(), "null");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_errors_requests_notifications_and_batches() {
        match one(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"bad cursor"}}"#) {
            Incoming::Response { reply: Err(e), .. } => {
                assert_eq!(e.code, -32602);
                let m = e.into_mcp("tools/list");
                assert_eq!(
                    m.to_string(),
                    "Server answered `tools/list` with JSON-RPC error -32602: bad cursor"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            one(r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#),
            Incoming::Request { method, .. } if method == "ping"
        ));
        assert!(matches!(
            one(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#),
            Incoming::Notification { .. }
        ));
        let batch = parse_messages(
            br#" [{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":1,"result":{}}]"#,
            "t",
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn garbage_is_malformed_json_and_strangers_are_not_json_rpc() {
        let e = parse_messages(b"<html>oops</html>", "the response to `initialize`").unwrap_err();
        assert!(matches!(e, McpError::MalformedJson { .. }), "{e:?}");
        assert!(e
            .chain()
            .contains("Malformed JSON in the response to `initialize`: "));
        let e = parse_messages(br#"{"hello":"world"}"#, "x").unwrap_err();
        assert!(matches!(e, McpError::NotJsonRpc { .. }), "{e:?}");
        let e = parse_messages(br#""just a string""#, "x").unwrap_err();
        assert!(matches!(e, McpError::NotJsonRpc { .. }), "{e:?}");
        let e = parse_messages(br#"{"jsonrpc":"1.0","id":1,"result":{}}"#, "x").unwrap_err();
        assert!(e.to_string().contains("expected \"2.0\""), "{e}");
        let e = parse_messages(br#"{"jsonrpc":"2.0","id":1}"#, "x").unwrap_err();
        assert!(
            e.to_string().contains("neither `result` nor `error`"),
            "{e}"
        );
    }

    #[actix_web::test]
    async fn pending_routes_fails_and_closes() {
        let p = Rc::new(Pending::default());
        let mut w1 = p.register(1).unwrap();
        let mut w2 = p.register(2).unwrap();
        let raw = RawValue::from_string("{}".into()).unwrap();
        assert!(p.deliver(&serde_json::json!(1), Ok(raw)));
        assert!(matches!(w1.wait().await, Ok(Ok(Ok(_)))));
        assert!(!p.deliver(
            &serde_json::json!(99),
            Err(RpcError {
                code: 1,
                message: String::new(),
                data: None
            })
        ));
        p.fail_all(&Failure::TooLarge { limit: 5 });
        assert!(matches!(
            w2.wait().await,
            Ok(Err(Failure::TooLarge { limit: 5 }))
        ));
        let mut w3 = p.register(3).unwrap();
        p.close(Closed::ChildExited("exit status: 3".into()));
        assert!(matches!(w3.wait().await, Err(Closed::ChildExited(s)) if s == "exit status: 3"));
        assert!(matches!(p.register(4), Err(Closed::ChildExited(_))));
        // A later reason does not overwrite the first.
        p.close(Closed::Ended("x".into()));
        assert!(matches!(p.closed(), Some(Closed::ChildExited(_))));
    }

    #[test]
    fn dropped_waiter_leaves_no_entry() {
        let p = Rc::new(Pending::default());
        let w = p.register(1).unwrap();
        assert_eq!(p.len(), 1);
        drop(w);
        assert!(p.is_empty());
    }
}
