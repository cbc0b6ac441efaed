//! `tools/call` through the upstream actors, against real servers: the
//! HTTP test server (`mcp::test_server`, both eras, JSON and SSE, legacy
//! HTTP+SSE) and a stdio server in Python (both eras). Each upstream runs
//! in an engine with one worker arbiter, so every server shares it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::oneshot;

use crate::calls::{CallError, CallResult, CallTool};
use crate::events::NoEvents;
use crate::mcp::relay::{Relay, RelayedRequest};
use crate::mcp::test_server::{refused_port, start, Behavior, TestServer};
use crate::mcp::McpError;
use crate::registry::Registry;
use crate::status::{DiscoveryState, ServerView};
use crate::supervisor::{ApplyConfig, RefreshServer, Shutdown, Supervisor};
use crate::Engine;

/// Long enough never to be the reason a test ends.
const LONG: Duration = Duration::from_secs(600);

/// An engine on one worker arbiter, running `servers` (a JSON object of
/// server entries).
async fn start_engine(servers: Value) -> Engine {
    let events = Arc::new(NoEvents);
    let (registry, catalog, views) = Registry::new(events.clone());
    let registry = registry.start();
    let supervisor = Supervisor::new(registry.clone(), events, 1);
    let calls = supervisor.call_routes();
    let supervisor = supervisor.start();
    let engine = Engine {
        supervisor,
        registry,
        catalog,
        servers: views,
        calls,
    };
    apply(&engine, servers).await;
    engine
}

async fn apply(engine: &Engine, servers: Value) {
    let config = json!({
        "discovery": {"poll_interval": "10m", "request_timeout": "5s"},
        "servers": servers,
    });
    let config = discovery_config::load_str(
        &config.to_string(),
        discovery_config::Format::Json,
        None,
        &[],
    )
    .unwrap();
    engine
        .supervisor
        .send(ApplyConfig(Arc::new(config)))
        .await
        .unwrap()
        .unwrap();
}

fn http(server: &TestServer) -> Value {
    json!({"url": server.url("/mcp").as_str(), "transport": "streamable-http"})
}

/// Polls `f` until it holds, within a deadline.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The view of `name` once `pred` holds.
async fn view_when(engine: &Engine, name: &str, pred: impl Fn(&ServerView) -> bool) -> ServerView {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rx = engine.servers.clone();
    loop {
        if let Some(v) = rx.borrow_and_update().servers.get(name).cloned() {
            if pred(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "{name} never got there");
        let _ = actix_rt::time::timeout(Duration::from_millis(100), rx.changed()).await;
    }
}

async fn healthy(engine: &Engine, name: &str) -> ServerView {
    view_when(engine, name, |v| v.state == DiscoveryState::Healthy).await
}

fn route(engine: &Engine, name: &str) -> Recipient<CallTool> {
    engine.calls.borrow().get(name).cloned().expect("a route")
}

/// One call of ours: the message, and its cancel and progress ends.
struct Call {
    msg: CallTool,
    cancel: oneshot::Sender<()>,
    progress: UnboundedReceiver<Value>,
}

fn call(tool: &str, arguments: &str, timeout: Duration) -> Call {
    let (cancel, cancel_rx) = oneshot::channel();
    let (progress_tx, progress) = unbounded_channel();
    Call {
        msg: CallTool {
            tool: tool.to_owned(),
            arguments: Some(RawValue::from_string(arguments.to_owned()).unwrap()),
            meta: None,
            extra: Map::new(),
            client_capabilities: None,
            timeout,
            progress: Some(progress_tx),
            relay: None,
            cancel: cancel_rx,
        },
        cancel,
        progress,
    }
}

fn with_token(mut c: Call, token: Value) -> Call {
    c.msg.meta = json!({"progressToken": token}).as_object().cloned();
    c
}

/// How long a test waits for what must come (a guard against a hang, not
/// a timing assertion).
const PATIENCE: Duration = Duration::from_secs(30);

async fn send(to: &Recipient<CallTool>, msg: CallTool) -> Result<CallResult, CallError> {
    actix_rt::time::timeout(PATIENCE, to.send(msg))
        .await
        .expect("an answer")
        .expect("the upstream answers")
}

/// `send` on a task of its own, for a call the test acts on while it runs.
fn spawn_send(
    to: &Recipient<CallTool>,
    msg: CallTool,
) -> actix_rt::task::JoinHandle<Result<CallResult, CallError>> {
    let to = to.clone();
    actix_rt::spawn(async move { send(&to, msg).await })
}

/// The next request relayed to the calling client.
async fn next_asked(rx: &mut tokio::sync::mpsc::Receiver<RelayedRequest>) -> RelayedRequest {
    tokio::time::timeout(LONG, rx.recv())
        .await
        .unwrap()
        .unwrap()
}

/// The next progress notification.
async fn next(progress: &mut UnboundedReceiver<Value>) -> Value {
    actix_rt::time::timeout(PATIENCE, progress.recv())
        .await
        .expect("progress")
        .expect("progress, not the end")
}

/// The outcome of a call sent in the background.
async fn outcome(
    call: actix_rt::task::JoinHandle<Result<CallResult, CallError>>,
) -> Result<CallResult, CallError> {
    actix_rt::time::timeout(PATIENCE, call)
        .await
        .expect("the call to end")
        .unwrap()
}

fn result(r: Result<CallResult, CallError>) -> Value {
    serde_json::from_str(r.expect("a result").raw.get()).unwrap()
}

/// The id of the `n`th `tools/call` the test server received.
fn call_id(server: &TestServer, n: usize) -> Value {
    server.seen_of("tools/call")[n].body["id"].clone()
}

fn cancelled_ids(server: &TestServer) -> Vec<Value> {
    server
        .seen_of("notifications/cancelled")
        .into_iter()
        .map(|s| s.body["params"]["requestId"].clone())
        .collect()
}

fn closed_ids(server: &TestServer) -> Vec<Value> {
    server
        .seen_of("<closed>")
        .into_iter()
        .map(|s| s.body["id"].clone())
        .collect()
}

#[actix_rt::test]
async fn routes_follow_starts_stops_and_restarts() {
    let a = start(Behavior::default()).await;
    let b = start(Behavior::default()).await;
    let engine = start_engine(json!({"a": http(&a), "b": http(&b)})).await;
    {
        let routes = engine.calls.borrow();
        let mut names: Vec<_> = routes.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["a", "b"], "published when they start");
    }
    let first = healthy(&engine, "a").await;
    let old = route(&engine, "a");
    assert!(send(&old, call("tool0_0", "{}", LONG).msg).await.is_ok());

    // b removed, a changed: b's route goes, a's is the new generation.
    let mut changed = http(&a);
    changed["call_timeout"] = json!("7s");
    apply(&engine, json!({ "a": changed })).await;
    let names: Vec<_> = engine.calls.borrow().keys().cloned().collect();
    assert_eq!(names, ["a"]);
    let new = route(&engine, "a");
    assert_ne!(new, old, "the restarted incarnation");
    let again = view_when(&engine, "a", |v| {
        v.generation > first.generation && v.state == DiscoveryState::Healthy
    })
    .await;
    assert!(again.generation > first.generation);
    assert!(send(&new, call("tool0_1", "{}", LONG).msg).await.is_ok());

    engine
        .supervisor
        .send(Shutdown {
            deadline: Duration::from_secs(5),
        })
        .await
        .unwrap();
    assert!(engine.calls.borrow().is_empty(), "no route after shutdown");
}

#[actix_rt::test]
async fn a_2025_call_uses_the_live_session_and_passes_everything_verbatim() {
    let server = start(Behavior::default()).await;
    let engine = start_engine(json!({ "a": http(&server) })).await;
    healthy(&engine, "a").await;
    let arguments =
        r#"{"big": 123456789012345678901234567890, "f": 1.50, "z": 1, "a": [true, null]}"#;
    let mut c = call("tool0_0", arguments, LONG);
    // Progress is not listened for here: no token goes upstream.
    c.msg.progress = None;
    c.msg.meta = json!({
        "progressToken": "t-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "io.modelcontextprotocol/logLevel": "debug",
        "x.example/custom": {"k": [1, 2]},
    })
    .as_object()
    .cloned();
    c.msg.extra = json!({"x-extension": {"kept": true}})
        .as_object()
        .cloned()
        .unwrap();
    c.msg.client_capabilities = Some(json!({"sampling": {}}));
    let got = result(send(&route(&engine, "a"), c.msg).await);
    assert_eq!(got["content"][0]["text"], "called tool0_0");
    assert_eq!(got["structuredContent"]["name"], "tool0_0");
    assert_eq!(got["isError"], false);

    let seen = server.seen_of("tools/call");
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert!(
        sent.raw.contains(&format!(r#""arguments":{arguments}"#)),
        "arguments byte for byte: {}",
        sent.raw
    );
    assert_eq!(
        sent.body["params"]["_meta"],
        json!({
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "x.example/custom": {"k": [1, 2]},
        }),
        "the client's own keys; no protocol keys, no token nobody listens to"
    );
    assert_eq!(sent.body["params"]["x-extension"], json!({"kept": true}));
    assert_eq!(
        sent.session_id.as_deref(),
        Some("s1"),
        "the discovery session"
    );
    assert_eq!(sent.protocol_version.as_deref(), Some("2025-11-25"));
    assert!(sent.header("mcp-name").is_none(), "no 2026-07-28 headers");
    let methods = server.methods();
    let count = |m: &str| methods.iter().filter(|x| *x == m).count();
    assert_eq!(count("initialize"), 1, "no connection per call");
    assert_eq!(count("tools/list"), 1, "no re-listing first");
}

#[actix_rt::test]
async fn a_modern_call_carries_the_headers_the_meta_and_the_clients_capabilities() {
    let routed = json!({
        "name": "routed",
        "inputSchema": {"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "n": {"type": "integer", "x-mcp-header": "N"},
        }},
    });
    let server = start(Behavior {
        modern: true,
        sessions: false,
        extra_tools: vec![routed],
        ..Behavior::default()
    })
    .await;
    let engine = start_engine(json!({ "a": http(&server) })).await;
    let view = healthy(&engine, "a").await;
    assert_eq!(view.protocol_version.as_deref(), Some("2026-07-28"));
    let mut c = call("routed", r#"{"region": "eu-west", "n": 7}"#, LONG);
    let capabilities = json!({"sampling": {}, "elicitation": {"form": {}}});
    c.msg.client_capabilities = Some(capabilities.clone());
    c.msg.extra = json!({
        "inputResponses": {"ask": {"result": {"action": "accept"}}},
        "requestState": "b3BhcXVl==",
    })
    .as_object()
    .cloned()
    .unwrap();
    let got = result(send(&route(&engine, "a"), c.msg).await);
    assert_eq!(got["structuredContent"]["name"], "routed");

    let sent = &server.seen_of("tools/call")[0];
    assert_eq!(sent.header("mcp-method"), Some("tools/call"));
    assert_eq!(sent.header("mcp-name"), Some("routed"));
    assert_eq!(sent.header("mcp-param-region"), Some("eu-west"));
    assert_eq!(sent.header("mcp-param-n"), Some("7"));
    assert_eq!(sent.header("mcp-protocol-version"), Some("2026-07-28"));
    assert_eq!(sent.header("mcp-session-id"), None);
    let params = &sent.body["params"];
    let meta = &params["_meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert_eq!(
        meta["io.modelcontextprotocol/clientCapabilities"],
        capabilities
    );
    assert_eq!(
        meta["io.modelcontextprotocol/clientInfo"]["name"],
        "mcp-discovery"
    );
    assert_eq!(
        params["inputResponses"]["ask"]["result"]["action"],
        "accept"
    );
    assert_eq!(params["requestState"], "b3BhcXVl==");
}

#[actix_rt::test]
async fn a_degraded_server_an_unconnected_one_and_an_unknown_tool_answer_at_once() {
    let hung = start(Behavior {
        hang_on: Some("initialize"),
        ..Behavior::default()
    })
    .await;
    let listed = start(Behavior::default()).await;
    let refused = format!("http://127.0.0.1:{}/mcp", refused_port());
    let mut hung_entry = http(&hung);
    hung_entry["request_timeout"] = json!("10m");
    let engine = start_engine(json!({
        "down": {"url": refused, "transport": "streamable-http"},
        "hung": hung_entry,
        "up": http(&listed),
    }))
    .await;
    view_when(&engine, "down", |v| v.state == DiscoveryState::Degraded).await;
    until("the handshake to hang", || {
        hung.methods().iter().any(|m| m == "initialize")
    })
    .await;
    healthy(&engine, "up").await;

    // A call timeout of ten minutes: only an answer at once ends these.
    match send(&route(&engine, "down"), call("x", "{}", LONG).msg).await {
        Err(CallError::Unavailable {
            server,
            state: DiscoveryState::Degraded,
            reason,
        }) => {
            assert_eq!(server, "down");
            assert!(reason.contains("Connection refused"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match send(&route(&engine, "hung"), call("x", "{}", LONG).msg).await {
        Err(CallError::Unavailable { state, reason, .. }) => {
            assert_eq!(state, DiscoveryState::Connecting);
            assert!(reason.contains("no live session"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    match send(&route(&engine, "up"), call("nope", "{}", LONG).msg).await {
        Err(CallError::UnknownTool { server, tool }) => {
            assert_eq!((server.as_str(), tool.as_str()), ("up", "nope"));
        }
        other => panic!("{other:?}"),
    }
    assert!(listed.seen_of("tools/call").is_empty(), "nothing was sent");
}

#[actix_rt::test]
async fn a_timed_out_2025_call_is_cancelled_upstream() {
    for sse in [true, false] {
        let server = start(Behavior {
            sse,
            call_hangs: true,
            ..Behavior::default()
        })
        .await;
        let engine = start_engine(json!({ "a": http(&server) })).await;
        healthy(&engine, "a").await;
        let timeout = Duration::from_secs(1);
        match send(&route(&engine, "a"), call("tool0_0", "{}", timeout).msg).await {
            Err(CallError::Timeout {
                server,
                tool,
                after,
            }) => {
                assert_eq!(
                    (server.as_str(), tool.as_str(), after),
                    ("a", "tool0_0", timeout)
                );
            }
            other => panic!("sse={sse}: {other:?}"),
        }
        let id = call_id(&server, 0);
        until("notifications/cancelled", || {
            cancelled_ids(&server) == [id.clone()]
        })
        .await;
        let cancel = &server.seen_of("notifications/cancelled")[0];
        assert!(
            cancel.body["params"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("call_timeout")),
            "{cancel:?}"
        );
        assert_eq!(
            cancel.session_id.as_deref(),
            Some("s1"),
            "in the call's session"
        );
        // The request's connection was dropped too.
        until("the request to close", || {
            closed_ids(&server) == [id.clone()]
        })
        .await;
        let view = healthy(&engine, "a").await;
        assert_eq!(view.consecutive_failures, 0, "a call never fails discovery");
    }
}

#[actix_rt::test]
async fn a_cancelled_modern_http_call_closes_its_stream_and_nothing_else() {
    let server = start(Behavior {
        modern: true,
        sessions: false,
        sse: true,
        call_hangs: true,
        ..Behavior::default()
    })
    .await;
    let engine = start_engine(json!({ "a": http(&server) })).await;
    healthy(&engine, "a").await;
    let Call { msg, cancel, .. } = call("tool0_0", "{}", LONG);
    let to = route(&engine, "a");
    let pending = spawn_send(&to, msg);
    until("the call to arrive", || {
        server.seen_of("tools/call").len() == 1
    })
    .await;
    drop(cancel);
    assert!(matches!(outcome(pending).await, Err(CallError::Cancelled)));
    let id = call_id(&server, 0);
    until("the stream to close", || {
        closed_ids(&server) == [id.clone()]
    })
    .await;
    assert!(
        cancelled_ids(&server).is_empty(),
        "on the 2026-07-28 HTTP wire the closed stream is the cancellation"
    );
}

#[actix_rt::test]
async fn progress_on_the_call_stream_is_relayed_as_it_comes() {
    for modern in [false, true] {
        let server = start(Behavior {
            modern,
            sessions: !modern,
            sse: true,
            call_progress: 3,
            call_hangs: true,
            ..Behavior::default()
        })
        .await;
        let engine = start_engine(json!({ "a": http(&server) })).await;
        healthy(&engine, "a").await;
        let Call {
            msg,
            cancel,
            mut progress,
        } = with_token(call("tool0_0", "{}", LONG), json!("client-token"));
        let to = route(&engine, "a");
        let pending = spawn_send(&to, msg);
        // Three arrive while the call is still running.
        for step in 1..=3 {
            let p = next(&mut progress).await;
            assert_eq!(
                p,
                json!({"progressToken": "client-token", "progress": step, "total": 3, "message": format!("step {step}")}),
                "modern={modern}"
            );
        }
        assert!(!pending.is_finished());
        let _ = cancel.send(());
        assert!(matches!(outcome(pending).await, Err(CallError::Cancelled)));
        assert!(progress.try_recv().is_err(), "not somebody else's");
        let token = &server.seen_of("tools/call")[0].body["params"]["_meta"]["progressToken"];
        assert!(token.is_u64(), "the engine's own token upstream: {token}");
    }
}

#[actix_rt::test]
async fn a_forgotten_session_is_reestablished_once_and_the_call_retried_once() {
    let server = start(Behavior {
        expire_calls: 1,
        ..Behavior::default()
    })
    .await;
    let engine = start_engine(json!({ "a": http(&server) })).await;
    let before = healthy(&engine, "a").await;
    let got = result(send(&route(&engine, "a"), call("tool0_0", "{}", LONG).msg).await);
    assert_eq!(got["content"][0]["text"], "called tool0_0");
    let trail: Vec<String> = server
        .seen()
        .iter()
        .filter(|s| s.http_method == "POST")
        .map(|s| format!("{}@{}", s.method, s.session_id.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(
        trail[trail.len() - 4..],
        [
            "tools/call@s1",
            "initialize@-",
            "notifications/initialized@s2",
            "tools/call@s2",
        ]
    );
    let after = healthy(&engine, "a").await;
    assert_eq!(
        (
            after.generation,
            after.consecutive_failures,
            after.last_success_at
        ),
        (before.generation, 0, before.last_success_at),
        "the discovery state is untouched"
    );

    // Forgotten again right after: one retry only, then the error.
    let server = start(Behavior {
        expire_calls: 2,
        ..Behavior::default()
    })
    .await;
    let engine = start_engine(json!({ "a": http(&server) })).await;
    healthy(&engine, "a").await;
    match send(&route(&engine, "a"), call("tool0_0", "{}", LONG).msg).await {
        Err(CallError::Upstream(McpError::SessionExpired { status: 404, .. })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(server.seen_of("initialize").len(), 2, "re-established once");
    assert_eq!(server.seen_of("tools/call").len(), 2, "retried once");
}

/// A relay for a client that declared `capabilities`, and its end.
fn relay(capabilities: Value) -> (Relay, tokio::sync::mpsc::Receiver<RelayedRequest>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (Relay::new(tx, capabilities), rx)
}

#[actix_rt::test]
async fn server_requests_during_a_call_are_relayed_or_refused_at_once() {
    let asks = [
        ("sampling/createMessage", "sampling"),
        ("elicitation/create", "elicitation"),
        ("roots/list", "roots"),
    ];
    for (question, capability) in asks {
        let server = start(Behavior {
            sse: true,
            call_asks: Some(question),
            ..Behavior::default()
        })
        .await;
        let engine = start_engine(json!({ "a": http(&server) })).await;
        healthy(&engine, "a").await;
        let init = &server.seen_of("initialize")[0].body["params"]["capabilities"];
        assert!(init[capability].is_object(), "declared upstream: {init}");
        let to = route(&engine, "a");
        // The server answers the call only after hearing back. A client
        // that cannot be asked (no relay: a 2026-07-28 client) ...
        let got = result(send(&to, call("tool0_0", "{}", LONG).msg).await);
        let asked = &got["structuredContent"]["asked"];
        assert_eq!(asked["error"]["code"], -32601, "{question}: {asked}");
        let message = asked["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(question) && message.contains("cannot be asked"),
            "{message}"
        );
        // ... a client without the capability ...
        let (without, _rx) = relay(json!({"other": {}}));
        let mut c = call("tool0_0", "{}", LONG);
        c.msg.relay = Some(without);
        let got = result(send(&to, c.msg).await);
        let message = got["structuredContent"]["asked"]["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains(&format!("did not declare the {capability} capability")),
            "{message}"
        );
        // ... and one with it: relayed, and its answer goes back.
        let (with, mut rx) = relay(json!({capability: {}}));
        let mut c = call("tool0_0", "{}", LONG);
        c.msg.relay = Some(with);
        let pending = spawn_send(&to, c.msg);
        let asked = next_asked(&mut rx).await;
        assert_eq!(asked.method, question);
        asked
            .answer
            .send(Ok(json!({"answered": question})))
            .unwrap();
        let got = result(outcome(pending).await);
        assert_eq!(
            got["structuredContent"]["asked"]["result"],
            json!({"answered": question}),
            "{got}"
        );
    }
}

#[actix_rt::test]
async fn a_hung_call_slows_no_other_call_and_no_listing() {
    let hung = start(Behavior {
        sse: true,
        call_hangs: true,
        ..Behavior::default()
    })
    .await;
    let fine = start(Behavior::default()).await;
    // One worker arbiter: both upstreams share it.
    let engine = start_engine(json!({"hung": http(&hung), "fine": http(&fine)})).await;
    healthy(&engine, "hung").await;
    healthy(&engine, "fine").await;
    let Call {
        msg: first,
        cancel: first_cancel,
        ..
    } = call("tool0_0", "{}", LONG);
    let Call {
        msg: second,
        cancel: second_cancel,
        ..
    } = call("tool0_1", "{}", LONG);
    let to = route(&engine, "hung");
    let first_call = spawn_send(&to, first);
    let second_call = spawn_send(&to, second);
    until("both calls to reach the hung server", || {
        hung.seen_of("tools/call").len() == 2
    })
    .await;

    // Another server's calls go on.
    for _ in 0..5 {
        assert!(
            send(&route(&engine, "fine"), call("tool0_0", "{}", LONG).msg)
                .await
                .is_ok()
        );
    }
    // The hung server's own listing too.
    let listed = hung.seen_of("tools/list").len();
    let before = healthy(&engine, "hung").await;
    engine
        .supervisor
        .send(RefreshServer {
            name: "hung".into(),
        })
        .await
        .unwrap()
        .unwrap();
    view_when(&engine, "hung", |v| {
        v.last_success_at > before.last_success_at
    })
    .await;
    assert_eq!(hung.seen_of("tools/list").len(), listed + 1);
    assert!(!first_call.is_finished() && !second_call.is_finished());

    drop(first_cancel);
    drop(second_cancel);
    assert!(matches!(
        outcome(first_call).await,
        Err(CallError::Cancelled)
    ));
    assert!(matches!(
        outcome(second_call).await,
        Err(CallError::Cancelled)
    ));
}

#[actix_rt::test]
async fn a_call_in_flight_ends_when_its_server_is_removed() {
    let server = start(Behavior {
        sse: true,
        call_hangs: true,
        ..Behavior::default()
    })
    .await;
    let engine = start_engine(json!({ "a": http(&server) })).await;
    healthy(&engine, "a").await;
    let Call { msg, cancel, .. } = call("tool0_0", "{}", LONG);
    let to = route(&engine, "a");
    let pending = spawn_send(&to, msg);
    until("the call to arrive", || {
        server.seen_of("tools/call").len() == 1
    })
    .await;
    apply(&engine, json!({})).await;
    match outcome(pending).await {
        Err(CallError::Stopping(name)) => assert_eq!(name, "a"),
        other => panic!("{other:?}"),
    }
    let id = call_id(&server, 0);
    until("the stream to close", || closed_ids(&server).contains(&id)).await;
    drop(cancel);
}

#[actix_rt::test]
async fn legacy_sse_relays_progress_and_cancels() {
    let server = start(Behavior {
        protocol_version: "2024-11-05",
        sessions: false,
        call_progress: 2,
        call_hangs: true,
        ..Behavior::default()
    })
    .await;
    let engine = start_engine(json!({
        "a": {"url": server.url("/sse").as_str(), "transport": "sse"},
    }))
    .await;
    let view = healthy(&engine, "a").await;
    assert_eq!(view.negotiated_transport, Some("sse"));
    let to = route(&engine, "a");

    // Progress over the event stream as it comes; a cancel by the client.
    let Call {
        msg,
        cancel,
        mut progress,
    } = with_token(call("tool0_0", "{}", LONG), json!(77));
    let pending = spawn_send(&to, msg);
    for step in 1..=2 {
        let p = next(&mut progress).await;
        assert_eq!(
            (p["progressToken"].clone(), p["progress"].clone()),
            (json!(77), json!(step))
        );
    }
    drop(cancel);
    assert!(matches!(outcome(pending).await, Err(CallError::Cancelled)));
    let id = call_id(&server, 0);
    until("notifications/cancelled", || {
        cancelled_ids(&server) == [id.clone()]
    })
    .await;

    // A timeout, the same.
    let short = call("tool0_1", "{}", Duration::from_secs(1));
    assert!(matches!(
        send(&to, short.msg).await,
        Err(CallError::Timeout { .. })
    ));
    let id = call_id(&server, 1);
    until("notifications/cancelled", || {
        cancelled_ids(&server).contains(&id)
    })
    .await;

    // The event stream stayed: the timeout was the tool's, not the
    // stream's (a listing works, and without a second GET).
    let before = healthy(&engine, "a").await;
    engine
        .supervisor
        .send(RefreshServer { name: "a".into() })
        .await
        .unwrap()
        .unwrap();
    view_when(&engine, "a", |v| v.last_success_at > before.last_success_at).await;
    assert_eq!(server.seen_of("<GET>").len(), 1);
}

/// A stdio server of both eras (`--modern` answers `server/discover`),
/// logging every line it reads to the file named by its first argument.
/// Tools: `echo` (what it got), `progress` (three notifications for the
/// call's token and one for a stranger's, then the result), `hang`
/// (progress, then nothing), `ask` (asks the client `sampling/createMessage`
/// and answers with what came back).
const STDIO: &str = r#"
import json, sys
MODERN = "--modern" in sys.argv[2:]
log = open(sys.argv[1], "a")
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
def result(i, r):
    if MODERN:
        r["resultType"] = "complete"
    send({"jsonrpc": "2.0", "id": i, "result": r})
TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "progress", "hang", "ask")]
asking = {}
for line in sys.stdin:
    log.write(line); log.flush()
    m = json.loads(line)
    meth, i, p = m.get("method"), m.get("id"), m.get("params") or {}
    if meth is None:
        call = asking.pop(i, None)
        if call is not None:
            result(call, {"content": [], "structuredContent": {"asked": m}, "isError": False})
        continue
    if i is None:
        continue
    if meth == "server/discover" and MODERN:
        result(i, {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                   "serverInfo": {"name": "py", "version": "0"}})
    elif meth == "initialize" and not MODERN:
        result(i, {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                   "serverInfo": {"name": "py", "version": "0"}})
    elif meth == "tools/list":
        result(i, {"tools": TOOLS})
    elif meth == "tools/call":
        name = p.get("name")
        token = (p.get("_meta") or {}).get("progressToken")
        if name in ("progress", "hang") and token is not None:
            for k in (1, 2, 3):
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": k, "total": 3}})
            send({"jsonrpc": "2.0", "method": "notifications/progress",
                  "params": {"progressToken": "stranger", "progress": 1}})
        if name == "hang":
            continue
        if name == "ask":
            q = "ask-%s" % i
            asking[q] = i
            send({"jsonrpc": "2.0", "id": q, "method": "sampling/createMessage", "params": {}})
            continue
        result(i, {"content": [{"type": "text", "text": "called " + name}],
                   "structuredContent": {"arguments": p.get("arguments"), "meta": p.get("_meta")},
                   "isError": False})
    else:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
"#;

/// The stdio server's log of what it read.
struct StdioLog(std::path::PathBuf);

impl StdioLog {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "mcp-discovery-calls-{}-{tag}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn of(&self, method: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|m| m["method"] == method)
            .collect()
    }

    fn server(&self, modern: bool) -> Value {
        let mut args = vec![
            json!("-u"),
            json!("-c"),
            json!(STDIO),
            json!(self.0.to_string_lossy()),
        ];
        if modern {
            args.push(json!("--modern"));
        }
        json!({"command": "python3", "args": args})
    }
}

impl Drop for StdioLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[actix_rt::test]
async fn stdio_calls_of_both_eras() {
    for modern in [false, true] {
        let log = StdioLog::new(if modern { "modern" } else { "legacy" });
        let engine = start_engine(json!({ "s": log.server(modern) })).await;
        let view = healthy(&engine, "s").await;
        let era = if modern { "2026-07-28" } else { "2025-06-18" };
        assert_eq!(view.protocol_version.as_deref(), Some(era));
        let to = route(&engine, "s");

        // Verbatim, on the one channel.
        let arguments = r#"{"big": 123456789012345678901234567890, "s": "é"}"#;
        let mut c = call("echo", arguments, LONG);
        c.msg.client_capabilities = Some(json!({"elicitation": {}}));
        let got = result(send(&to, c.msg).await);
        assert!(
            got["structuredContent"]["arguments"]["s"] == "é",
            "modern={modern}: {got}"
        );
        let line = std::fs::read_to_string(&log.0).unwrap();
        assert!(
            line.contains(&format!(r#""arguments":{arguments}"#)),
            "byte for byte: {line}"
        );
        let meta = &got["structuredContent"]["meta"];
        if modern {
            assert_eq!(
                meta["io.modelcontextprotocol/clientCapabilities"],
                json!({"elicitation": {}})
            );
            assert_eq!(log.of("server/discover").len(), 1);
        } else {
            assert!(meta.is_null(), "a 2025 call has no protocol _meta: {meta}");
            assert_eq!(log.of("initialize").len(), 1, "the discovery session");
        }

        // Progress as it comes, then a cancel by the client: cancelled
        // upstream.
        let Call {
            msg,
            cancel,
            mut progress,
        } = with_token(call("hang", "{}", LONG), json!("mine"));
        let pending = spawn_send(&to, msg);
        for step in 1..=3 {
            let p = next(&mut progress).await;
            assert_eq!(
                p,
                json!({"progressToken": "mine", "progress": step, "total": 3})
            );
        }
        drop(cancel);
        assert!(matches!(outcome(pending).await, Err(CallError::Cancelled)));
        assert!(progress.try_recv().is_err(), "not the stranger's");
        let id = log.of("tools/call")[1]["id"].clone();
        until("notifications/cancelled", || {
            log.of("notifications/cancelled").iter().any(|n| {
                n["params"]["requestId"] == id
                    && n["params"]["reason"] == "the client cancelled the request"
            })
        })
        .await;

        // A timeout, the same.
        let short = call("hang", "{}", Duration::from_secs(1));
        assert!(matches!(
            send(&to, short.msg).await,
            Err(CallError::Timeout { .. })
        ));
        let id = log.of("tools/call")[2]["id"].clone();
        until("notifications/cancelled", || {
            log.of("notifications/cancelled")
                .iter()
                .any(|n| n["params"]["requestId"] == id)
        })
        .await;
        let cancel = log.of("notifications/cancelled").pop().unwrap();
        assert!(
            cancel["params"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("call_timeout")),
            "{cancel}"
        );
        assert_eq!(
            cancel["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"].is_string(),
            modern,
            "{cancel}"
        );

        if !modern {
            // A question during a call for a client that cannot be asked
            // gets its answer at once.
            let got = result(send(&to, call("ask", "{}", LONG).msg).await);
            let asked = &got["structuredContent"]["asked"];
            assert_eq!(asked["error"]["code"], -32601, "{asked}");
            // The client of the one call in flight is asked, and answers.
            let (with, mut rx) = relay(json!({"sampling": {}}));
            let mut c = call("ask", "{}", LONG);
            c.msg.relay = Some(with.clone());
            let pending = spawn_send(&to, c.msg);
            let asked = next_asked(&mut rx).await;
            asked.answer.send(Ok(json!({"role": "assistant"}))).unwrap();
            let got = result(outcome(pending).await);
            assert_eq!(
                got["structuredContent"]["asked"]["result"],
                json!({"role": "assistant"})
            );
            // A client that never answers: the call times out, and the
            // server gets an error answer, not silence.
            let mut c = call("ask", "{}", Duration::from_secs(1));
            c.msg.relay = Some(with);
            let pending = spawn_send(&to, c.msg);
            let unanswered = next_asked(&mut rx).await;
            assert!(matches!(
                outcome(pending).await,
                Err(CallError::Timeout { .. })
            ));
            let question = log
                .lines()
                .into_iter()
                .rfind(|m| m["method"] == "tools/call" && m["params"]["name"] == "ask")
                .unwrap();
            let asked_id = format!("ask-{}", question["id"]);
            drop(unanswered);
            until("an error answer to the unanswered question", || {
                log.lines()
                    .iter()
                    .any(|m| m["id"] == asked_id.as_str() && m["error"]["code"] == -32603)
            })
            .await;
        }
        let view = healthy(&engine, "s").await;
        assert_eq!(view.consecutive_failures, 0);
        engine
            .supervisor
            .send(Shutdown {
                deadline: Duration::from_secs(5),
            })
            .await
            .unwrap();
    }
}
