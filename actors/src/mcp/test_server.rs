//! A tiny MCP server for the client's tests: real actix-web on
//! 127.0.0.1:0, told by a `Behavior` how to misbehave. It records what it
//! received so tests can assert on headers and call sequences.
//!
//! Routes: `POST/GET/DELETE /mcp` (Streamable HTTP, the 2025 handshake or
//! with `modern` the 2026-07-28 wire), `GET /sse` + `POST /messages`
//! (legacy HTTP+SSE; `POST /sse` answers 405 for the auto fallback).
//!
//! `tools/call` of any listed tool echoes what it got (`structuredContent`:
//! name, arguments, `_meta`); `call_*` fields make it report progress,
//! hang (recording `<closed>` when the client drops the request), or ask
//! the client something first.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

#[derive(Clone, Debug)]
pub struct Behavior {
    /// Answer requests with SSE streams (priming event, comment, CRLF,
    /// multi-line data, odd chunking) instead of JSON.
    pub sse: bool,
    /// Issue `Mcp-Session-Id`s and require them.
    pub sessions: bool,
    /// The first request after the first initialize gets 404 (session
    /// forgotten).
    pub expire_once: bool,
    /// Every non-initialize request gets 404.
    pub expire_always: bool,
    pub pages: usize,
    pub tools_per_page: usize,
    /// `tools/list` always answers `nextCursor: "again"`.
    pub loop_cursor: bool,
    /// Extra bytes in each `tools/list` result.
    pub pad_bytes: usize,
    /// A method that is never answered.
    pub hang_on: Option<&'static str>,
    /// In SSE mode / legacy: send a `ping` request before the response.
    pub ping_first: bool,
    /// SSE mode: for this method, send only a priming event and end the
    /// stream; the response comes on GET with `Last-Event-ID`.
    pub drop_stream_on: Option<&'static str>,
    pub protocol_version: &'static str,
    pub capabilities: Value,
    /// Every POST to /mcp answers this status with a short body.
    pub post_status: Option<u16>,
    /// POST /mcp answers requests 200 with this non-JSON-RPC body (as one
    /// SSE event in SSE mode).
    pub garbage: Option<&'static str>,
    /// The Content-Type of the garbage answer (JSON mode).
    pub garbage_content_type: &'static str,
    /// Legacy: end the event stream when this method arrives.
    pub legacy_end_on: Option<&'static str>,
    /// Legacy: send `notifications/tools/list_changed` after initialized.
    pub legacy_list_changed: bool,
    /// The 2026-07-28 wire: `server/discover` answers, no sessions.
    pub modern: bool,
    /// Appended to the first page of `tools/list`.
    pub extra_tools: Vec<Value>,
    /// The first this many `tools/call`s get 404 and forget the session.
    pub expire_calls: u32,
    /// `tools/call` sends this many progress notifications (SSE and
    /// legacy) for the request's `progressToken`, and one for a stranger's.
    pub call_progress: u32,
    /// `tools/call` is never answered (keep-alives only: SSE comments, or
    /// whitespace in JSON mode); the client dropping the request is
    /// recorded as `<closed>` with its id.
    pub call_hangs: bool,
    /// SSE mode: `tools/call` first sends this server-to-client request
    /// on its stream and answers only once the client has answered it
    /// (the answer is in the result's `structuredContent.asked`).
    pub call_asks: Option<&'static str>,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            sse: false,
            sessions: true,
            expire_once: false,
            expire_always: false,
            pages: 1,
            tools_per_page: 2,
            loop_cursor: false,
            pad_bytes: 0,
            hang_on: None,
            ping_first: false,
            drop_stream_on: None,
            protocol_version: "2025-11-25",
            capabilities: json!({"tools": {"listChanged": true}}),
            post_status: None,
            garbage: None,
            garbage_content_type: "application/json",
            legacy_end_on: None,
            legacy_list_changed: false,
            modern: false,
            extra_tools: Vec::new(),
            expire_calls: 0,
            call_progress: 0,
            call_hangs: false,
            call_asks: None,
        }
    }
}

/// One message the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub http_method: String,
    /// JSON-RPC method; `<response>` for a client response.
    pub method: String,
    pub body: Value,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    pub accept: Option<String>,
    pub last_event_id: Option<String>,
    /// The body as it came (for byte-exact checks).
    pub raw: String,
    /// Every request header, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    behavior: Option<Behavior>,
    seen: Vec<Seen>,
    sessions_issued: usize,
    current_session: Option<String>,
    expired_once: bool,
    /// Responses parked for a GET resume, by event id.
    parked: Vec<(String, Value)>,
    legacy_tx: Option<UnboundedSender<Bytes>>,
    /// `tools/call`s answered 404 so far (`expire_calls`).
    expired_calls: u32,
    /// Calls waiting for the client's answer to their question, by the
    /// question's id.
    asking: Vec<(String, tokio::sync::oneshot::Sender<Value>)>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("http://{}{}", self.addr, path)).unwrap()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn methods(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.method).collect()
    }

    /// What the server received for `method`.
    pub fn seen_of(&self, method: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method)
            .collect()
    }
}

/// Records `<closed>` for request `id` when dropped: the client dropped
/// the request the server was still working on.
struct ClosedGuard {
    state: Arc<Mutex<State>>,
    id: Value,
}

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.lock() {
            st.seen.push(Seen {
                http_method: "-".into(),
                method: "<closed>".into(),
                body: json!({ "id": self.id }),
                session_id: None,
                protocol_version: None,
                accept: None,
                last_event_id: None,
                raw: String::new(),
                headers: Vec::new(),
            });
        }
    }
}

pub async fn start(behavior: Behavior) -> TestServer {
    let state = Arc::new(Mutex::new(State {
        behavior: Some(behavior),
        ..State::default()
    }));
    let data = web::Data::from(Arc::clone(&state));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/mcp", web::post().to(post_mcp))
            .route("/mcp", web::get().to(get_mcp))
            .route("/mcp", web::delete().to(delete_mcp))
            .route("/sse", web::get().to(get_sse))
            .route(
                "/sse",
                web::post().to(|| async { HttpResponse::MethodNotAllowed().finish() }),
            )
            .route("/messages", web::post().to(post_messages))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    TestServer { addr, state }
}

type Shared = web::Data<Mutex<State>>;

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn record(state: &Shared, req: &HttpRequest, body: &Value) {
    record_raw(state, req, body, String::new());
}

fn record_raw(state: &Shared, req: &HttpRequest, body: &Value, raw: String) {
    let method = body
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| "<response>".into());
    state.lock().unwrap().seen.push(Seen {
        http_method: req.method().to_string(),
        method,
        body: body.clone(),
        session_id: header(req, "mcp-session-id"),
        protocol_version: header(req, "mcp-protocol-version"),
        accept: header(req, "accept"),
        last_event_id: header(req, "last-event-id"),
        raw,
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    });
}

/// The result for a request, or None for "never answer".
fn result_for(b: &Behavior, msg: &Value) -> Option<Value> {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    if b.hang_on == Some(method) {
        return None;
    }
    let result = match method {
        "initialize" => json!({
            "protocolVersion": b.protocol_version,
            "capabilities": b.capabilities,
            "serverInfo": {"name": "test-server", "version": "1.0"},
        }),
        "tools/list" => {
            let page: usize = msg
                .pointer("/params/cursor")
                .and_then(Value::as_str)
                .and_then(|c| c.strip_prefix('c'))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let tools: Vec<Value> = (0..b.tools_per_page)
                .map(|i| {
                    json!({
                        "name": format!("tool{page}_{i}"),
                        "inputSchema": {"type": "object"},
                        "x-extra": {"kept": [page, i]},
                    })
                })
                .collect();
            let mut tools = tools;
            if page == 0 {
                tools.extend(b.extra_tools.iter().cloned());
            }
            let mut r = json!({ "tools": tools });
            if b.loop_cursor {
                r["nextCursor"] = json!("again");
            } else if page + 1 < b.pages {
                r["nextCursor"] = json!(format!("c{}", page + 1));
            }
            if b.pad_bytes > 0 {
                r["pad"] = json!("x".repeat(b.pad_bytes));
            }
            r
        }
        "server/discover" if b.modern => json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": b.capabilities,
            "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "test-server", "version": "1.0"}},
        }),
        "tools/call" => call_result(msg, None),
        "prompts/list" => json!({"prompts": [{"name": "p1"}]}),
        "resources/list" => json!({"resources": [{"uri": "file:///a", "name": "a"}]}),
        "ping" => json!({}),
        _ => {
            return Some(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
            );
        }
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// What `tools/call` answers: what it got, and what the client answered
/// to its question (`call_asks`).
fn call_result(msg: &Value, asked: Option<Value>) -> Value {
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    json!({
        "content": [{"type": "text", "text": format!("called {name}")}],
        "structuredContent": {
            "name": name,
            "arguments": params.get("arguments"),
            "meta": params.get("_meta"),
            "asked": asked,
        },
        "isError": false,
    })
}

/// The progress notifications of a call: `n` for its token, then one for
/// somebody else's.
fn progress_events(msg: &Value, n: u32) -> Vec<Value> {
    let token = msg.pointer("/params/_meta/progressToken").cloned();
    let mut out: Vec<Value> = match token {
        Some(token) => (1..=n)
            .map(|i| {
                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                    "progressToken": token, "progress": i, "total": n, "message": format!("step {i}"),
                }})
            })
            .collect(),
        None => Vec::new(),
    };
    if n > 0 {
        out.push(
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                "progressToken": "somebody-else", "progress": 1,
            }}),
        );
    }
    out
}

/// An SSE event whose data is `v` pretty-printed over several `data:` lines.
fn sse_event(v: &Value, id: Option<&str>, crlf: bool) -> String {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut s = String::new();
    if let Some(id) = id {
        s.push_str(&format!("id: {id}{nl}"));
    }
    s.push_str(&format!("event: message{nl}"));
    for line in serde_json::to_string_pretty(v).unwrap().lines() {
        s.push_str(&format!("data: {line}{nl}"));
    }
    s.push_str(nl);
    s
}

/// A body sent in odd-sized chunks to exercise the parser.
fn chunked(body: String) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let bytes = body.into_bytes();
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks)
}

async fn post_mcp(state: Shared, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let b = state.lock().unwrap().behavior.clone().unwrap();
    if let Some(status) = b.post_status {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .body("server says no\n\n  (test)");
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return HttpResponse::BadRequest().body("Parse error"),
    };
    record_raw(
        &state,
        &req,
        &msg,
        String::from_utf8_lossy(&body).into_owned(),
    );
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if msg.get("id").is_none() || method.is_empty() {
        // A notification or a client response (maybe to a call's question).
        if let Some(id) = msg.get("id").and_then(Value::as_str) {
            let mut st = state.lock().unwrap();
            if let Some(pos) = st.asking.iter().position(|(q, _)| q == id) {
                let (_, tx) = st.asking.remove(pos);
                let _ = tx.send(msg.clone());
            }
        }
        return HttpResponse::Accepted().finish();
    }
    if let Some(g) = b.garbage {
        if b.sse {
            let body = format!("id: g1\ndata: {g}\n\n");
            return HttpResponse::Ok()
                .content_type("text/event-stream")
                .streaming(chunked(body));
        }
        return HttpResponse::Ok()
            .content_type(b.garbage_content_type)
            .body(g);
    }

    let mut new_session = None;
    {
        let mut st = state.lock().unwrap();
        if method == "initialize" {
            if b.sessions {
                st.sessions_issued += 1;
                let sid = format!("s{}", st.sessions_issued);
                st.current_session = Some(sid.clone());
                new_session = Some(sid);
            }
        } else if b.sessions && !b.modern {
            let sid = header(&req, "mcp-session-id");
            if sid.is_none() {
                return HttpResponse::BadRequest().body("Bad Request: Missing session ID");
            }
            if b.expire_always || sid != st.current_session {
                return HttpResponse::NotFound().body("Session not found");
            }
            if b.expire_once && !st.expired_once {
                st.expired_once = true;
                st.current_session = None;
                return HttpResponse::NotFound().body("Session not found");
            }
            if method == "tools/call" && st.expired_calls < b.expire_calls {
                st.expired_calls += 1;
                st.current_session = None;
                return HttpResponse::NotFound().body("Session not found");
            }
        }
    }

    if method == "tools/call" {
        return post_call(state.into_inner(), &b, msg, new_session);
    }

    let Some(response) = result_for(&b, &msg) else {
        futures_util::future::pending::<()>().await;
        return HttpResponse::Ok().finish();
    };
    let mut builder = HttpResponse::Ok();
    if let Some(sid) = new_session {
        builder.insert_header(("Mcp-Session-Id", sid));
    }
    if !b.sse {
        return builder
            .content_type("application/json")
            .body(response.to_string());
    }
    if b.drop_stream_on == Some(method.as_str()) {
        state.lock().unwrap().parked.push(("p1".into(), response));
        let body = "id: p1\nretry: 20\ndata:\n\n".to_owned();
        return builder
            .content_type("text/event-stream")
            .streaming(chunked(body));
    }
    // Priming event (CRLF), a comment, optionally a ping, then the answer.
    let mut body = String::from("id: e0\r\nretry: 1000\r\ndata: \r\n\r\n: keep-alive\n\n");
    if b.ping_first {
        body.push_str(&sse_event(
            &json!({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"}),
            Some("e1"),
            false,
        ));
        body.push_str(&sse_event(
            &json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}}),
            Some("e2"),
            true,
        ));
    }
    body.push_str(&sse_event(&response, Some("e3"), true));
    builder
        .content_type("text/event-stream")
        .streaming(chunked(body))
}

/// `tools/call` on Streamable HTTP: JSON, or an SSE stream fed by a task
/// (progress, a question to the client, the result, or keep-alives until
/// the client goes).
fn post_call(
    state: Arc<Mutex<State>>,
    b: &Behavior,
    msg: Value,
    new_session: Option<String>,
) -> HttpResponse {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let mut builder = HttpResponse::Ok();
    if let Some(sid) = new_session {
        builder.insert_header(("Mcp-Session-Id", sid));
    }
    if !b.sse {
        if b.call_hangs {
            // Whitespace (valid before a JSON value) now and then, so the
            // server notices when the client has gone.
            let guard = ClosedGuard { state, id };
            let body = futures_util::stream::unfold(guard, |guard| async move {
                actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
                Some((Ok::<Bytes, std::io::Error>(Bytes::from_static(b" ")), guard))
            });
            return builder.content_type("application/json").streaming(body);
        }
        let response = json!({"jsonrpc": "2.0", "id": id, "result": call_result(&msg, None)});
        return builder
            .content_type("application/json")
            .body(response.to_string());
    }
    let (tx, rx) = unbounded_channel::<Bytes>();
    let b = b.clone();
    actix_rt::spawn(async move {
        let send = |v: &Value| tx.send(Bytes::from(sse_event(v, None, false))).is_ok();
        let _ = tx.send(Bytes::from_static(b"id: c0\ndata: \n\n"));
        for event in progress_events(&msg, b.call_progress) {
            send(&event);
        }
        let mut asked = None;
        if let Some(question) = b.call_asks {
            let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
            let qid = format!("srv-ask-{id}");
            state.lock().unwrap().asking.push((qid.clone(), answer_tx));
            send(&json!({"jsonrpc": "2.0", "id": qid, "method": question, "params": {}}));
            asked = answer_rx.await.ok();
        }
        if b.call_hangs {
            let _guard = ClosedGuard {
                state: Arc::clone(&state),
                id,
            };
            loop {
                actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).is_err() {
                    return;
                }
            }
        }
        send(&json!({"jsonrpc": "2.0", "id": id, "result": call_result(&msg, asked)}));
    });
    let body =
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<Bytes, std::io::Error>);
    builder.content_type("text/event-stream").streaming(body)
}

async fn get_mcp(state: Shared, req: HttpRequest) -> HttpResponse {
    record(&state, &req, &json!({"method": "<GET>"}));
    let Some(last) = header(&req, "last-event-id") else {
        return HttpResponse::MethodNotAllowed().finish();
    };
    let parked = {
        let mut st = state.lock().unwrap();
        let pos = st.parked.iter().position(|(id, _)| *id == last);
        pos.map(|p| st.parked.remove(p).1)
    };
    match parked {
        Some(resp) => HttpResponse::Ok()
            .content_type("text/event-stream")
            .streaming(chunked(sse_event(&resp, Some("p2"), false))),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn delete_mcp(state: Shared, req: HttpRequest) -> HttpResponse {
    record(&state, &req, &json!({"method": "<DELETE>"}));
    HttpResponse::Ok().finish()
}

async fn get_sse(state: Shared, req: HttpRequest) -> HttpResponse {
    record(&state, &req, &json!({"method": "<GET>"}));
    let (tx, rx) = unbounded_channel::<Bytes>();
    state.lock().unwrap().legacy_tx = Some(tx);
    let first = Bytes::from_static(b": hello\n\nevent: endpoint\ndata: /messages?sessionId=L1\n\n");
    let rest = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let stream = futures_util::stream::once(async move { first })
        .chain(rest)
        .map(Ok::<Bytes, std::io::Error>);
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(stream)
}

async fn post_messages(state: Shared, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let b = state.lock().unwrap().behavior.clone().unwrap();
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().body("Parse error");
    };
    record_raw(
        &state,
        &req,
        &msg,
        String::from_utf8_lossy(&body).into_owned(),
    );
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut st = state.lock().unwrap();
    if b.legacy_end_on == Some(method.as_str()) {
        st.legacy_tx = None;
        return HttpResponse::Accepted().body("Accepted");
    }
    let Some(tx) = st.legacy_tx.clone() else {
        return HttpResponse::NotFound().body("no stream");
    };
    drop(st);
    if method == "notifications/initialized" && b.legacy_list_changed {
        let n = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        let _ = tx.send(Bytes::from(sse_event(&n, None, false)));
    }
    if msg.get("id").is_none() || method.is_empty() {
        return HttpResponse::Accepted().body("Accepted");
    }
    if b.ping_first && method == "tools/list" {
        let ping = json!({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"});
        let _ = tx.send(Bytes::from(sse_event(&ping, None, false)));
    }
    if method == "tools/call" {
        for event in progress_events(&msg, b.call_progress) {
            let _ = tx.send(Bytes::from(sse_event(&event, None, false)));
        }
        if b.call_hangs {
            return HttpResponse::Accepted().body("Accepted");
        }
    }
    if let Some(resp) = result_for(&b, &msg) {
        let _ = tx.send(Bytes::from(sse_event(&resp, None, false)));
    }
    HttpResponse::Accepted().body("Accepted")
}

/// A port nothing listens on.
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Test options: generous timeouts, small limits.
pub fn opts() -> super::ClientOptions {
    super::ClientOptions {
        server_name: "test".into(),
        request_timeout: std::time::Duration::from_secs(5),
        connect_timeout: std::time::Duration::from_secs(2),
        max_response_bytes: 256 * 1024,
        max_pages: 100,
        max_items: 10_000,
        max_listing_bytes: 32 * 1024 * 1024,
        headers: vec![("X-Test".into(), "yes".into())],
        bearer: None,
        // The 2025 handshake, no probe: these tests pin its exact wire.
        protocol: discovery_config::ProtocolChoice::Pinned("2025-11-25"),
    }
}

/// Captures tracing events of the current thread (the test's arbiter):
/// each event's fields as `name=value` strings.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<Fields>>>);

/// One event's fields, `(name, value)`.
pub type Fields = Vec<(String, String)>;

struct Visitor<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl tracing::Subscriber for LogCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = vec![("level".to_owned(), event.metadata().level().to_string())];
        event.record(&mut Visitor(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl LogCapture {
    pub fn events(&self) -> Vec<Fields> {
        self.0.lock().unwrap().clone()
    }
}
