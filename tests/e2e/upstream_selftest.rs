//! Self-tests of the test support: the Rust test upstream and the test
//! token endpoint (with the OAuth discovery documents), driven directly
//! with awc, and the interop peers, poked with the raw client. They prove the
//! tools before the engine's tests rely on them; when an engine test fails,
//! these say whether the upstream or the engine is at fault.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::mcp_client::{
    initialize_request, names, sse_events, LegacySseClient, McpClient, CLIENT_PROTOCOL_VERSION,
};
use crate::support::peers::{
    self, everything_tools_bare, EverythingTransport, PythonTransport, PYTHON_TOOLS,
};
use crate::support::token_endpoint::{
    base64_decode, base64_encode, client_secret_basic, form_urldecode, form_urlencode, http_basic,
    AcceptedAuth, AsMetadataDocs, ClientAuthMethod, TokenEndpoint, TokenError, TokenStore,
};
use crate::support::upstream::{
    hanging_server, refusing_port, tool_names, Fault, GetStream, Methods, Outage, SseStyle,
    TestUpstream, UpstreamBehavior, UpstreamFarm, LOOP_CURSOR,
};

fn tools_list(id: u64) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {} })
}

// ----------------------------------------------------------- handshake

#[actix_web::test]
async fn initialize_echoes_supported_version_and_assigns_a_session() {
    let up = TestUpstream::builder().tools(3).start().unwrap();
    let mut client = McpClient::new(up.url());
    let result = client.initialize().await.unwrap();

    assert_eq!(result["protocolVersion"], CLIENT_PROTOCOL_VERSION);
    assert_eq!(result["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(result["serverInfo"]["name"], "test-upstream");
    let session = client.session_id.clone().expect("a session id");
    assert_eq!(up.live_sessions(), vec![session]);
    assert_eq!(up.requests("initialize"), 1);
    assert_eq!(up.requests("notifications/initialized"), 1);
    assert_eq!(
        up.last_initialize_params().unwrap()["protocolVersion"],
        CLIENT_PROTOCOL_VERSION
    );

    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(3));
    assert_eq!(
        up.last_header_for("tools/list", "mcp-protocol-version")
            .as_deref(),
        Some(CLIENT_PROTOCOL_VERSION)
    );
}

#[actix_web::test]
async fn initialize_with_an_unknown_version_gets_the_latest_or_the_forced_one() {
    let up = TestUpstream::start_default().unwrap();
    let client = McpClient::new(up.url());
    let reply = client
        .post(&initialize_request(1, "1999-01-01"))
        .await
        .unwrap();
    assert_eq!(
        reply.response().unwrap()["result"]["protocolVersion"],
        "2025-11-25"
    );

    up.update(|b| b.protocol_version = Some("2025-03-26".to_owned()));
    let reply = client
        .post(&initialize_request(2, CLIENT_PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(
        reply.response().unwrap()["result"]["protocolVersion"],
        "2025-03-26"
    );
}

#[actix_web::test]
async fn tools_keep_unknown_fields_and_calls_answer() {
    let up = TestUpstream::builder().tools(2).start().unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let tools = client.list_tools().await.unwrap();
    assert_eq!(tools[1]["xTestExtra"]["index"], 1);
    assert_eq!(tools[1]["_meta"]["test/index"], 1);
    let called = client
        .request(
            "tools/call",
            json!({ "name": "tool_1", "arguments": { "value": "v" } }),
        )
        .await;
    assert!(called.unwrap()["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("tool_1"));
    assert!(client
        .request("tools/call", json!({ "name": "tool_9" }))
        .await
        .is_err());
}

// ---------------------------------------------------------- pagination

#[actix_web::test]
async fn pagination_follows_next_cursor_to_the_end() {
    let up = TestUpstream::builder()
        .tools(250)
        .page_size(100)
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(250));
    assert_eq!(up.requests("tools/list"), 3);

    up.set_tools(7);
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(7));
}

#[actix_web::test]
async fn a_looping_cursor_never_ends() {
    let up = TestUpstream::builder()
        .tools(10)
        .page_size(4)
        .cursor_loop()
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let first = client.request("tools/list", json!({})).await.unwrap();
    let again = client
        .request("tools/list", json!({ "cursor": LOOP_CURSOR }))
        .await
        .unwrap();
    assert_eq!(first["nextCursor"], LOOP_CURSOR);
    assert_eq!(again["nextCursor"], LOOP_CURSOR);
    assert!(client
        .request("tools/list", json!({ "cursor": "bogus" }))
        .await
        .is_err());
}

// ------------------------------------------------------------------ SSE

#[actix_web::test]
async fn sse_answers_start_with_a_priming_event() {
    let up = TestUpstream::builder().sse().start().unwrap();
    let client = McpClient::new(up.url());
    let reply = client
        .post(&initialize_request(1, CLIENT_PROTOCOL_VERSION))
        .await
        .unwrap();
    assert!(reply.is_sse(), "content-type {}", reply.content_type());
    assert!(reply.header("mcp-session-id").is_some());
    let events = sse_events(&reply.body);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[0].id.is_some() && events[0].data.is_empty(),
        "priming: {:?}",
        events[0]
    );
    assert_eq!(events[1].event.as_deref(), Some("message"));
    assert_eq!(
        reply.response().unwrap()["result"]["protocolVersion"],
        CLIENT_PROTOCOL_VERSION
    );
}

#[actix_web::test]
async fn sse_answers_in_small_crlf_multiline_chunks_still_parse() {
    let style = SseStyle {
        chunk_size: Some(7),
        multiline: true,
        crlf: true,
        retry_ms: Some(50),
        ..SseStyle::default()
    };
    let up = TestUpstream::builder()
        .tools(12)
        .page_size(5)
        .sse_style(style)
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let reply = client.post(&tools_list(9)).await.unwrap();
    assert!(reply.body.windows(2).any(|w| w == b"\r\n"));
    assert_eq!(sse_events(&reply.body)[0].retry, Some(50));
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(12));
}

#[actix_web::test]
async fn a_dropped_sse_answer_is_resumed_with_last_event_id() {
    let style = SseStyle {
        drop_before_response: true,
        retry_ms: Some(10),
        ..SseStyle::default()
    };
    let up = TestUpstream::builder()
        .sse_style(style)
        .sessions(false)
        .start()
        .unwrap();
    let client = McpClient::new(up.url());
    let reply = client.post(&tools_list(4)).await.unwrap();
    let events = sse_events(&reply.body);
    assert_eq!(events.len(), 1, "only the priming event: {events:?}");
    let last_id = events[0].id.clone().unwrap();

    let mut resumed = awc::Client::new()
        .get(up.url())
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Last-Event-ID", last_id.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    let body = resumed.body().await.unwrap();
    let msg: Value = serde_json::from_str(&sse_events(&body)[0].data).unwrap();
    assert_eq!(msg["id"], 4);
    assert_eq!(
        names(msg["result"]["tools"].as_array().unwrap()),
        tool_names(5)
    );
    assert_eq!(up.last_event_ids(), vec![last_id]);
}

// -------------------------------------------------------------- sessions

#[actix_web::test]
async fn an_expired_session_gets_404_and_a_new_initialize_recovers() {
    let up = TestUpstream::start_default().unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let old = client.session_id.clone().unwrap();

    assert_eq!(up.expire_sessions(), 1);
    let reply = client.post(&tools_list(5)).await.unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(
        client.post(&tools_list(6)).await.unwrap().status,
        404,
        "a dead id stays dead"
    );

    client.session_id = None;
    client.protocol_version = None;
    client.initialize().await.unwrap();
    assert_ne!(client.session_id.as_deref(), Some(old.as_str()));
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(5));
    assert_eq!(up.sessions_created(), 2);
    assert_eq!(up.requests("initialize"), 2);

    up.update(|b| b.expired_session_status = 400);
    up.expire_sessions();
    assert_eq!(client.post(&tools_list(7)).await.unwrap().status, 400);
}

#[actix_web::test]
async fn requests_without_a_session_are_rejected_and_delete_ends_it() {
    let up = TestUpstream::start_default().unwrap();
    let anonymous = McpClient::new(up.url());
    let reply = anonymous.post(&tools_list(1)).await.unwrap();
    assert_eq!(reply.status, 400);
    assert!(String::from_utf8_lossy(&reply.body).contains("No valid session ID"));

    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    assert_eq!(client.delete_session().await.unwrap(), 200);
    assert_eq!(up.sessions_deleted(), 1);
    assert_eq!(client.post(&tools_list(2)).await.unwrap().status, 404);
    assert_eq!(client.delete_session().await.unwrap(), 404);
}

#[actix_web::test]
async fn the_protocol_version_header_can_be_required() {
    let up = TestUpstream::builder()
        .require_protocol_header()
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    assert_eq!(client.post(&tools_list(3)).await.unwrap().status, 200);
    client.protocol_version = Some("2025-03-26".to_owned());
    assert_eq!(
        client.post(&tools_list(4)).await.unwrap().status,
        400,
        "not the negotiated version"
    );
    client.protocol_version = None;
    assert_eq!(
        client.post(&tools_list(5)).await.unwrap().status,
        400,
        "missing"
    );
}

#[actix_web::test]
async fn a_required_header_is_enforced_and_headers_are_recorded() {
    let up = TestUpstream::builder()
        .required_header("X-Test-Key", "v")
        .start()
        .unwrap();
    let mut without = McpClient::new(up.url());
    assert!(without
        .initialize()
        .await
        .unwrap_err()
        .to_string()
        .contains("401"));
    let mut with = McpClient::new(up.url()).with_header("X-Test-Key", "v");
    with.initialize().await.unwrap();
    assert_eq!(up.last_header("x-test-key").as_deref(), Some("v"));
}

#[actix_web::test]
async fn strict_accept_wants_both_media_types() {
    let up = TestUpstream::start_default().unwrap();
    let res = awc::Client::new()
        .post(up.url())
        .insert_header(("Accept", "application/json"))
        .insert_header(("Content-Type", "application/json"))
        .send_body(initialize_request(1, CLIENT_PROTOCOL_VERSION).to_string())
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 406);
}

// ------------------------------------------------------------------ faults

#[actix_web::test]
async fn faults_hit_only_the_chosen_methods() {
    let up = TestUpstream::builder()
        .fault(Fault::Status(500))
        .fault_on(Methods::only(["tools/list"]))
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    assert_eq!(client.post(&tools_list(2)).await.unwrap().status, 500);

    up.set_fault(Some(Fault::Garbage));
    let reply = client.post(&tools_list(3)).await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.messages().is_err(), "garbage must not parse");

    up.set_fault(Some(Fault::JsonRpcError {
        code: -32603,
        message: "boom".to_owned(),
    }));
    let err = client.request("tools/list", json!({})).await.unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");

    up.set_fault(None);
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(5));
}

#[actix_web::test]
async fn an_oversized_body_is_valid_json_of_the_asked_size() {
    const SIZE: usize = 3 * 1024 * 1024 + 17;
    let up = TestUpstream::builder()
        .fault(Fault::Oversized(SIZE))
        .fault_on(Methods::only(["tools/list"]))
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let reply = client.post(&tools_list(2)).await.unwrap();
    assert_eq!(reply.body.len(), SIZE);
    assert!(
        reply.header("content-length").is_none(),
        "streamed, no length up front"
    );
    assert_eq!(
        reply.response().unwrap()["result"]["tools"][0]["name"],
        "huge"
    );

    up.set_response_mode(crate::support::upstream::ResponseMode::Sse);
    let reply = client.post(&tools_list(3)).await.unwrap();
    assert_eq!(reply.body.len(), SIZE);
    assert_eq!(
        reply.response().unwrap()["result"]["tools"][0]["name"],
        "huge"
    );
}

#[actix_web::test]
async fn an_endless_sse_stream_never_answers() {
    let up = TestUpstream::builder()
        .fault(Fault::EndlessSse)
        .fault_on(Methods::only(["tools/list"]))
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let started = Instant::now();
    let res = awc::Client::new()
        .post(up.url())
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Mcp-Session-Id", client.session_id.clone().unwrap()))
        .send_body(tools_list(2).to_string())
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut res = res;
    let body = tokio::time::timeout(Duration::from_millis(700), res.body().limit(1 << 20)).await;
    assert!(body.is_err(), "the stream must still be open");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[actix_web::test]
async fn a_delay_holds_the_answer() {
    let up = TestUpstream::builder()
        .delay(Duration::from_millis(300))
        .delay_on(Methods::only(["tools/list"]))
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let started = Instant::now();
    client.list_tool_names().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

// ----------------------------------------------------------- push stream

#[actix_web::test]
async fn the_get_stream_is_refused_by_default_and_can_push_list_changed() {
    let up = TestUpstream::start_default().unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let session = client.session_id.clone().unwrap();
    let get = || {
        awc::Client::builder()
            .disable_timeout()
            .finish()
            .get(up.url())
            .insert_header(("Accept", "text/event-stream"))
            .insert_header(("Mcp-Session-Id", session.clone()))
    };
    assert_eq!(get().send().await.unwrap().status().as_u16(), 405);

    up.update(|b| b.get_stream = GetStream::Open);
    let mut stream = get().send().await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.open_push_streams() == 0 {
        assert!(Instant::now() < deadline, "push stream not registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.notify_tools_changed(), 1);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("list_changed") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
    up.close_push_streams();
}

/// A GET on the push stream as the engine sends it.
fn push_get(up: &TestUpstream, session: &str) -> awc::ClientRequest {
    awc::Client::builder()
        .disable_timeout()
        .finish()
        .get(up.url())
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Mcp-Session-Id", session))
        .insert_header(("MCP-Protocol-Version", CLIENT_PROTOCOL_VERSION))
}

/// Reads the stream until `done(bytes so far)` holds (5 s at most).
async fn read_until<S, E>(stream: &mut S, done: impl Fn(&[u8]) -> bool) -> Vec<u8>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut seen = Vec::new();
    while !done(&seen) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; got {:?}", String::from_utf8_lossy(&seen)))
            .expect("the stream ended")
            .expect("the stream failed");
        seen.extend_from_slice(&chunk);
    }
    seen
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// With `stream_keepalive` an open push stream gets `: keepalive`
/// comments, and one whose client went away is closed at the next writes.
/// Silent, the upstream never notices a client that left: the load farm
/// kept every finished engine run's streams open that way.
#[actix_web::test]
async fn keepalive_comments_close_a_push_stream_whose_client_left() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    up.update(|b| b.stream_keepalive = Some(Duration::from_millis(50)));
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let session = client.session_id.clone().unwrap();
    let mut stream = push_get(&up, &session).send().await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let seen = read_until(&mut stream, |seen| {
        String::from_utf8_lossy(seen).matches(": keepalive").count() >= 2
    })
    .await;
    assert!(String::from_utf8_lossy(&seen).starts_with(": stream open"));
    assert_eq!(up.open_push_streams(), 1);

    drop(stream);
    wait_for("the stream of the client that left is closed", || {
        up.open_push_streams() == 0
    })
    .await;
}

#[actix_web::test]
async fn a_get_stream_checks_accept_and_session_and_every_get_is_recorded() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let session = client.session_id.clone().unwrap();

    let no_accept = awc::Client::new()
        .get(up.url())
        .insert_header(("Mcp-Session-Id", session.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(no_accept.status().as_u16(), 406);
    let unknown = push_get(&up, "no-such-session").send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404, "unknown session on GET");
    let ok = push_get(&up, &session)
        .insert_header(("Last-Event-ID", "41"))
        .insert_header(("X-Static", "s"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(
        ok.headers().get("content-type").unwrap(),
        "text/event-stream"
    );

    let log = up.get_log();
    assert_eq!(log.len(), 3);
    assert_eq!(up.get_requests(), 3);
    assert_eq!(
        log.iter().map(|g| g.status).collect::<Vec<_>>(),
        [406, 404, 200]
    );
    assert!(log[0].session_live && !log[1].session_live && log[2].session_live);
    assert_eq!(log[1].session_id.as_deref(), Some("no-such-session"));
    assert_eq!(log[2].last_event_id.as_deref(), Some("41"));
    assert_eq!(log[2].accept.as_deref(), Some("text/event-stream"));
    assert_eq!(
        log[2].protocol_version.as_deref(),
        Some(CLIENT_PROTOCOL_VERSION)
    );
    assert_eq!(log[2].header("x-static").as_deref(), Some("s"));
    assert_eq!(up.last_event_ids(), vec!["41".to_owned()]);

    up.update(|b| b.get_stream = GetStream::Status(503));
    let injected = push_get(&up, "whatever").send().await.unwrap();
    assert_eq!(
        injected.status().as_u16(),
        503,
        "an injected status ignores the session"
    );
    drop(ok);
}

#[actix_web::test]
async fn push_events_carry_increasing_ids_and_a_ping_answer_is_recorded() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let mut stream = push_get(&up, client.session_id.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    wait_for("push stream registered", || up.open_push_streams() == 1).await;

    assert_eq!(up.notify_burst(3), 1);
    let (ping_id, sent) = up.send_ping_request();
    assert_eq!((ping_id.as_str(), sent), ("srv-ping-1", 1));
    let seen = read_until(&mut stream, |b| sse_events(b).len() >= 4).await;
    let events = sse_events(&seen);
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");
    assert_eq!(up.last_push_event_id(), Some(ids[3].to_string()));
    for e in &events[..3] {
        let msg: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(msg["method"], "notifications/tools/list_changed");
    }
    let ping: Value = serde_json::from_str(&events[3].data).unwrap();
    assert_eq!(
        ping,
        json!({ "jsonrpc": "2.0", "id": "srv-ping-1", "method": "ping" })
    );

    let answer = json!({ "jsonrpc": "2.0", "id": "srv-ping-1", "result": {} });
    assert_eq!(client.post(&answer).await.unwrap().status, 202);
    assert_eq!(up.ping_responses(), vec![answer]);
    assert_eq!(up.requests("<response>"), 1);

    up.close_push_streams();
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(
        rest.is_none(),
        "closing ends the stream gracefully: {rest:?}"
    );
    assert_eq!(up.open_push_streams(), 0);
}

#[actix_web::test]
async fn reset_after_primes_with_p1_then_drops_the_connection_mid_body() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::ResetAfter(Duration::from_millis(100)))
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let session = client.session_id.clone().unwrap();
    let started = Instant::now();
    let mut stream = push_get(&up, &session).send().await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let seen = read_until(&mut stream, |b| !sse_events(b).is_empty()).await;
    let events = sse_events(&seen);
    assert_eq!(events[0].id.as_deref(), Some("p1"));
    assert_eq!(events[0].data, "");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the connection must be dropped");
    assert!(
        !matches!(end, Some(Ok(_))),
        "nothing after the priming event: {end:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));

    // On the wire: the connection closes inside the chunked body, without
    // the terminating `0\r\n\r\n` chunk.
    let addr = up.addr();
    let raw = actix_web::rt::task::spawn_blocking(move || {
        use std::io::Read;
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            conn,
            "GET /mcp HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nMcp-Session-Id: {session}\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).unwrap();
        String::from_utf8(raw).unwrap()
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert!(
        raw.ends_with("id: p1\ndata: \n\n\r\n"),
        "truncated: {raw:?}"
    );
}

#[actix_web::test]
async fn a_silent_get_stream_sends_headers_and_then_nothing() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Silent)
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        push_get(&up, client.session_id.as_deref().unwrap()).send(),
    )
    .await
    .expect("the headers must come at once")
    .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(
        stream.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let next = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(next.is_err(), "not a byte: {next:?}");
    assert_eq!(up.open_push_streams(), 0, "nothing can be sent on it");
    assert_eq!(up.notify_tools_changed(), 0);
}

#[actix_web::test]
async fn garbage_and_oversized_get_streams() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Garbage)
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let session = client.session_id.clone().unwrap();
    let mut stream = push_get(&up, &session).send().await.unwrap();
    let seen = read_until(&mut stream, |b| b.contains(&0)).await;
    let events = sse_events(&seen);
    assert_eq!(events[0].data, "this is not json");
    assert!(serde_json::from_str::<Value>(&events[0].data).is_err());
    assert!(std::str::from_utf8(&seen).is_err(), "not even UTF-8");
    drop(stream);

    const SIZE: usize = 1024 * 1024;
    up.update(|b| b.get_stream = GetStream::OversizedEvent(SIZE));
    let mut stream = push_get(&up, &session).send().await.unwrap();
    let seen = read_until(&mut stream, |b| b.ends_with(b"\n\n")).await;
    assert_eq!(seen.len(), SIZE, "one event of the asked size");
    let events = sse_events(&seen);
    assert_eq!(events.len(), 1);
    let msg: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(msg["method"], "notifications/message");
    let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(next.is_err(), "it stays open: {next:?}");
}

// ------------------------------------------------------------- legacy SSE

#[actix_web::test]
async fn legacy_sse_mode_speaks_2024_11_05() {
    let up = TestUpstream::builder()
        .tools(30)
        .page_size(10)
        .legacy_sse()
        .start()
        .unwrap();
    assert!(up.url().ends_with("/sse"));
    let res = awc::Client::new()
        .post(up.url())
        .insert_header(("Content-Type", "application/json"))
        .send_body(initialize_request(1, "2024-11-05").to_string())
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        405,
        "POST to the SSE URL is what auto falls back on"
    );

    let mut client = LegacySseClient::connect(&up.url()).await.unwrap();
    assert!(client.endpoint().contains("/messages?session_id="));
    let result = client.initialize("2024-11-05").await.unwrap();
    assert_eq!(result["protocolVersion"], "2024-11-05");
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(30));
    assert_eq!(up.requests("tools/list"), 3);
}

// ------------------------------------------------------ lifecycle, farm

#[actix_web::test]
async fn a_stopped_upstream_refuses_and_can_come_back_on_its_port() {
    let up = TestUpstream::start_default().unwrap();
    let port = up.port();
    up.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "port {port} still accepts after stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = TestUpstream::builder().port(port).tools(2).start().unwrap();
    let mut client = McpClient::new(again.url());
    client.initialize().await.unwrap();
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(2));
}

#[actix_web::test]
async fn refusing_and_hanging_servers_behave() {
    let port = refusing_port().unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    let hang = hanging_server().unwrap();
    let client = McpClient::new(hang.url());
    let started = Instant::now();
    let attempt = tokio::time::timeout(
        Duration::from_millis(500),
        client.post(&initialize_request(1, CLIENT_PROTOCOL_VERSION)),
    )
    .await;
    assert!(attempt.is_err(), "the hanging server answered: {attempt:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(hang.accepted() >= 1);
}

#[actix_web::test]
async fn a_farm_serves_each_upstream_on_its_own_port() {
    let behavior = UpstreamBehavior {
        tools: 4,
        ..UpstreamBehavior::default()
    };
    let farm = UpstreamFarm::start(3, &behavior, None, 1).unwrap();
    for (i, up) in farm.upstreams().iter().enumerate() {
        let mut client = McpClient::new(up.url());
        let result = client.initialize().await.unwrap();
        assert_eq!(result["serverInfo"]["name"], format!("test-upstream-{i}"));
        assert_eq!(client.list_tool_names().await.unwrap(), tool_names(4));
    }
    for up in farm.upstreams() {
        assert_eq!(up.requests("initialize"), 1);
    }
    farm.stop().await;
}

#[actix_web::test]
async fn a_farm_goes_off_the_network_and_back_on_the_same_ports() {
    let behavior = UpstreamBehavior {
        tools: 2,
        ..UpstreamBehavior::default()
    };
    let mut farm = UpstreamFarm::start(2, &behavior, None, 1).unwrap();
    let up = farm.upstreams()[0].clone();
    let mut client = McpClient::new(up.url());
    client.initialize().await.unwrap();
    let session = client.session_id.clone().expect("a session id");
    // A discovery round is open between initialize and tools/list.
    assert_eq!(farm.gauges().snapshot().rounds_open, 1);
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(2));
    let gauges = farm.gauges().snapshot();
    assert_eq!((gauges.rounds_open, gauges.peak_rounds_open), (0, 1));
    assert!(up.connections() >= 1, "connections are counted");
    assert!(gauges.peak_open_connections >= 1);
    assert_eq!(farm.upstreams()[1].connections(), 0, "per upstream");

    // Down, closing: every connection accepted, closed unanswered, counted.
    farm.go_down(Outage::Close).unwrap();
    assert!(!farm.is_up());
    for _ in 0..2 {
        let mut conn = TcpStream::connect(up.addr()).unwrap();
        let _ =
            conn.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        assert!(answer.is_empty(), "answered while down: {answer:?}");
    }
    assert_eq!(up.closed_in_outage(), 2);
    assert_eq!(farm.upstreams()[1].closed_in_outage(), 0);

    // Down, refusing: nothing listens.
    farm.come_up().unwrap();
    farm.go_down(Outage::Refuse).unwrap();
    assert!(
        TcpStream::connect(up.addr()).is_err(),
        "a port still listens"
    );
    assert_eq!(up.closed_in_outage(), 2);

    // Up again: the same port serves, and the session survived.
    farm.come_up().unwrap();
    assert!(farm.is_up());
    assert_eq!(up.live_sessions(), vec![session]);
    let mut again = McpClient::new(up.url());
    again.initialize().await.unwrap();
    assert_eq!(again.list_tool_names().await.unwrap(), tool_names(2));
    assert_eq!(up.requests("initialize"), 2);
    up.reset_counters();
    assert_eq!((up.connections(), up.closed_in_outage()), (0, 0));
    farm.stop().await;
}

// --------------------------------------------- OAuth: token endpoint, bearer

/// POSTs a token request; the status, the JSON answer and the
/// `WWW-Authenticate` header.
async fn token_request(
    url: &str,
    basic: Option<&str>,
    content_type: &str,
    form: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req = awc::Client::new()
        .post(url)
        .insert_header(("Content-Type", content_type));
    if let Some(value) = basic {
        req = req.insert_header(("Authorization", value));
    }
    let mut res = req.send_body(body).await.unwrap();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.body().await.unwrap();
    let status = res.status().as_u16();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        challenge,
    )
}

const FORM: &str = "application/x-www-form-urlencoded";

async fn get_json(url: &str) -> (u16, Value) {
    let mut res = awc::Client::new().get(url).send().await.unwrap();
    let body = res.body().await.unwrap();
    (
        res.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// The parameters of a `Bearer k="v", k2="v2"` challenge.
fn challenge_params(challenge: &str) -> Vec<(String, String)> {
    let rest = challenge.strip_prefix("Bearer").unwrap_or_default().trim();
    rest.split(", ")
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('"').to_owned()))
        })
        .collect()
}

fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[actix_web::test]
async fn issued_tokens_open_a_bearer_upstream_until_revoked() {
    let idp = TokenEndpoint::builder()
        .client("id-1", "secret-1")
        .expires_in(Some(60))
        .start()
        .unwrap();
    let up = TestUpstream::builder()
        .tools(2)
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();

    let mut anonymous = McpClient::new(up.url());
    assert!(anonymous
        .initialize()
        .await
        .unwrap_err()
        .to_string()
        .contains("401"));
    let rejection = &up.auth_rejections()[0];
    assert_eq!(rejection.status, 401);
    assert_eq!(rejection.rpc_method.as_deref(), Some("initialize"));
    assert_eq!(rejection.token, None);
    assert_eq!(
        rejection.challenge,
        format!("Bearer resource_metadata=\"{}\"", up.prm_url())
    );
    assert_eq!(up.requests("initialize"), 0, "refused before the RPC");

    let (status, answer, _) = token_request(
        &idp.token_url(),
        Some(&client_secret_basic("id-1", "secret-1")),
        FORM,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "a b"),
            ("resource", &up.url()),
            ("audience", "aud-1"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 60);
    assert_eq!(answer["scope"], "a b");
    let token = answer["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tok-") && token.len() == 36, "{token}");
    let record = idp.last_token_request().unwrap();
    assert_eq!(record.auth_method, Some(ClientAuthMethod::Basic));
    assert_eq!(record.client_id.as_deref(), Some("id-1"));
    assert_eq!(record.client_secret.as_deref(), Some("secret-1"));
    assert_eq!(record.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(record.scope.as_deref(), Some("a b"));
    assert_eq!(record.resource, Some(up.url()));
    assert_eq!(record.audience.as_deref(), Some("aud-1"));
    assert_eq!(record.token.as_deref(), Some(token.as_str()));
    assert_eq!(idp.issued_tokens(), vec![token.clone()]);
    let expiry = idp.store().expiry(&token).unwrap().unwrap();
    assert!(expiry > Instant::now() + Duration::from_secs(55));

    let bearer = format!("Bearer {token}");
    let mut client = McpClient::new(up.url()).with_header("Authorization", &bearer);
    client.initialize().await.unwrap();
    assert_eq!(client.list_tool_names().await.unwrap(), tool_names(2));
    assert_eq!(up.bearer_tokens(), vec![token.clone()]);

    // Revoked: the next request gets a 401 naming the bad token.
    assert_eq!(idp.store().revoke_all(), 1);
    assert!(client
        .request("tools/list", json!({}))
        .await
        .unwrap_err()
        .to_string()
        .contains("401"));
    let last = up.auth_rejections().pop().unwrap();
    assert_eq!(last.rpc_method.as_deref(), Some("tools/list"));
    assert_eq!(last.token.as_deref(), Some(token.as_str()));
    let params = challenge_params(&last.challenge);
    assert_eq!(param(&params, "error").as_deref(), Some("invalid_token"));
    assert_eq!(param(&params, "resource_metadata"), Some(up.prm_url()));
    assert_eq!(up.unauthorized_responses(), 2);
    assert_eq!(up.forbidden_responses(), 0);

    // An expired token is refused too.
    idp.store().insert("short", Some(Duration::from_millis(1)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while idp.store().is_valid("short") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expired = McpClient::new(up.url()).with_header("Authorization", "Bearer short");
    let reply = expired
        .post(&initialize_request(1, CLIENT_PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
}

#[actix_web::test]
async fn the_token_endpoint_checks_client_authentication_like_rfc_6749() {
    let id = "svc:reader";
    let secret = "p@ss w+rd&=x";
    let idp = TokenEndpoint::builder().client(id, secret).start().unwrap();
    let url = idp.token_url();
    let grant = ("grant_type", "client_credentials");

    // client_secret_basic: form-urlencoded, then base64 (RFC 6749 2.3.1).
    let basic = client_secret_basic(id, secret);
    let (status, body, _) = token_request(&url, Some(&basic), FORM, &[grant]).await;
    assert_eq!(status, 200, "{body}");
    let r = idp.last_token_request().unwrap();
    assert_eq!(
        (
            r.auth_method,
            r.client_id.as_deref(),
            r.client_secret.as_deref()
        ),
        (Some(ClientAuthMethod::Basic), Some(id), Some(secret))
    );
    // Not encoded first: the colon in the id splits in the wrong place.
    let raw = http_basic(id, secret);
    let (status, body, challenge) = token_request(&url, Some(&raw), FORM, &[grant]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(challenge.unwrap().starts_with("Basic"));

    // client_secret_post.
    let post = [grant, ("client_id", id), ("client_secret", secret)];
    let (status, _, _) = token_request(&url, None, FORM, &post).await;
    assert_eq!(status, 200);
    assert_eq!(
        idp.last_token_request().unwrap().auth_method,
        Some(ClientAuthMethod::Post)
    );

    // Both at once, neither, a wrong secret, the wrong body, the wrong grant.
    let (status, body, _) = token_request(&url, Some(&basic), FORM, &post).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(idp.last_token_request().unwrap().both_methods);
    let (status, body, _) = token_request(&url, None, FORM, &[grant]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let wrong = client_secret_basic(id, "nope");
    let (status, body, _) = token_request(&url, Some(&wrong), FORM, &[grant]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert_eq!(body["error_description"], "client authentication failed");
    let (status, body, _) = token_request(&url, Some(&basic), "application/json", &[grant]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body, _) =
        token_request(&url, Some(&basic), FORM, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // Only one method accepted.
    idp.update(|b| b.auth_method = AcceptedAuth::Post);
    let (status, _, _) = token_request(&url, Some(&basic), FORM, &[grant]).await;
    assert_eq!(status, 401);
    let (status, _, _) = token_request(&url, None, FORM, &post).await;
    assert_eq!(status, 200);
    idp.update(|b| b.auth_method = AcceptedAuth::Basic);
    let (status, _, _) = token_request(&url, None, FORM, &post).await;
    assert_eq!(status, 401);

    // Injected failure, fixed token, no expires_in.
    idp.set_fail_with(Some(TokenError::new(503, "temporarily_unavailable", None)));
    let (status, body, _) = token_request(&url, Some(&basic), FORM, &[grant]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    idp.set_fail_with(None);
    idp.update(|b| b.fixed_token = Some("fixed-1".to_owned()));
    idp.set_expires_in(None);
    let (status, body, _) = token_request(&url, Some(&basic), FORM, &[grant]).await;
    assert_eq!(status, 200);
    assert_eq!(body["access_token"], "fixed-1");
    assert!(body.get("expires_in").is_none(), "{body}");
    assert_eq!(idp.store().expiry("fixed-1"), Some(None));
    assert_eq!(idp.requests(), 13);
    assert_eq!(idp.token_requests().len(), 13);
    assert_eq!(idp.tokens_issued(), 4);
}

#[actix_web::test]
async fn a_delayed_token_request_is_in_flight_then_answered() {
    let idp = TokenEndpoint::builder()
        .delay(Duration::from_millis(600))
        .start()
        .unwrap();
    let url = idp.token_url();
    let basic = client_secret_basic("a", "b");
    let started = Instant::now();
    let request = actix_web::rt::spawn(async move {
        token_request(
            &url,
            Some(&basic),
            FORM,
            &[("grant_type", "client_credentials")],
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while idp.in_flight() == 0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(idp.requests(), 1);
    assert!(idp.token_requests().is_empty(), "recorded when answered");
    let (status, _, _) = request.await.unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(idp.in_flight(), 0);
    assert_eq!(idp.tokens_issued(), 1);
}

#[actix_web::test]
async fn discovery_documents_lead_from_the_challenge_to_the_token_endpoint() {
    let idp = TokenEndpoint::builder()
        .auth_methods_supported(["client_secret_post"])
        .start()
        .unwrap();
    let up = TestUpstream::builder()
        .require_bearer(
            idp.bearer_auth()
                .challenge_scope("mcp:tools")
                .scopes_supported(["mcp:tools"]),
        )
        .start()
        .unwrap();
    let reply = McpClient::new(up.url())
        .post(&initialize_request(1, CLIENT_PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    let params = challenge_params(reply.header("www-authenticate").unwrap());
    assert_eq!(param(&params, "scope").as_deref(), Some("mcp:tools"));
    assert_eq!(param(&params, "error"), None, "no token, no error code");
    let prm_url = param(&params, "resource_metadata").unwrap();
    assert_eq!(prm_url, up.prm_url());
    assert!(prm_url.ends_with("/.well-known/oauth-protected-resource/mcp"));

    let (status, prm) = get_json(&prm_url).await;
    assert_eq!(status, 200);
    assert_eq!(prm["resource"], up.url());
    assert_eq!(prm["authorization_servers"], json!([idp.issuer()]));
    assert_eq!(prm["scopes_supported"], json!(["mcp:tools"]));
    let (status, root) = get_json(&up.prm_root_url()).await;
    assert_eq!((status, &root), (200, &prm));
    assert_eq!(
        up.prm_requests(),
        vec![
            ("/.well-known/oauth-protected-resource/mcp".to_owned(), 200),
            ("/.well-known/oauth-protected-resource".to_owned(), 200),
        ]
    );
    assert_eq!(up.http_requests(), 1, "metadata GETs are not MCP traffic");

    let (status, meta) = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        idp.issuer()
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(meta["issuer"], idp.issuer());
    assert_eq!(meta["token_endpoint"], idp.token_url());
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!(["client_secret_post"])
    );
    let (status, _) = get_json(&format!("{}/.well-known/openid-configuration", idp.url())).await;
    assert_eq!(status, 404);

    // Without resource_metadata in the challenge, and with only the root
    // document.
    up.update(|b| {
        let auth = b.bearer.as_mut().unwrap();
        auth.challenge_resource_metadata = false;
        auth.challenge_scope = None;
        auth.prm_at_path = false;
    });
    let reply = McpClient::new(up.url())
        .post(&initialize_request(1, CLIENT_PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(get_json(&up.prm_url()).await.0, 404);
    assert_eq!(get_json(&up.prm_root_url()).await.0, 200);

    // 403 insufficient_scope for a valid token.
    idp.store().insert("good", None);
    up.update(|b| b.bearer.as_mut().unwrap().insufficient_scope = Some("mcp:admin".to_owned()));
    let reply = McpClient::new(up.url())
        .with_header("Authorization", "Bearer good")
        .post(&initialize_request(1, CLIENT_PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(reply.status, 403);
    let params = challenge_params(reply.header("www-authenticate").unwrap());
    assert_eq!(
        param(&params, "error").as_deref(),
        Some("insufficient_scope")
    );
    assert_eq!(param(&params, "scope").as_deref(), Some("mcp:admin"));
    assert_eq!(up.forbidden_responses(), 1);
}

#[actix_web::test]
async fn openid_and_issuer_path_metadata_sit_where_the_specs_put_them() {
    let idp = TokenEndpoint::builder()
        .issuer_path("/tenant1")
        .metadata(AsMetadataDocs {
            oauth: false,
            openid_insert: false,
            openid_append: true,
        })
        .start()
        .unwrap();
    assert_eq!(idp.issuer(), format!("{}/tenant1", idp.url()));
    let base = idp.url();
    for (path, want) in [
        ("/.well-known/oauth-authorization-server/tenant1", 404),
        ("/.well-known/openid-configuration/tenant1", 404),
        ("/tenant1/.well-known/openid-configuration", 200),
        ("/.well-known/oauth-authorization-server", 404),
    ] {
        let (status, doc) = get_json(&format!("{base}{path}")).await;
        assert_eq!(status, want, "{path}");
        if want == 200 {
            assert_eq!(doc["issuer"], idp.issuer());
            assert_eq!(doc["token_endpoint"], idp.token_url());
        }
    }
    assert_eq!(idp.metadata_requests().len(), 4);

    idp.update(|b| b.metadata = AsMetadataDocs::OAUTH);
    let (status, _) = get_json(&format!(
        "{base}/.well-known/oauth-authorization-server/tenant1"
    ))
    .await;
    assert_eq!(status, 200);
    idp.update(|b| {
        b.metadata = AsMetadataDocs::OPENID;
        b.issuer_path = String::new();
    });
    let (status, doc) = get_json(&format!("{base}/.well-known/openid-configuration")).await;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], base);
}

#[actix_web::test]
async fn the_push_stream_and_delete_need_the_bearer_too() {
    let store = TokenStore::new();
    store.insert("t", None);
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .require_bearer(store)
        .start()
        .unwrap();
    let mut client = McpClient::new(up.url()).with_header("Authorization", "Bearer t");
    client.initialize().await.unwrap();
    let session = client.session_id.clone().unwrap();
    let get = |bearer: Option<&'static str>| {
        let mut req = awc::Client::new()
            .get(up.url())
            .insert_header(("Accept", "text/event-stream"))
            .insert_header(("Mcp-Session-Id", session.as_str()));
        if let Some(token) = bearer {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status().as_u16(), 401);
    assert_eq!(get(Some("other")).await.unwrap().status().as_u16(), 401);
    let open = get(Some("t")).await.unwrap();
    assert_eq!(open.status().as_u16(), 200);
    let rejections = up.auth_rejections();
    assert_eq!(rejections.len(), 2);
    assert!(rejections.iter().all(|r| r.http_method == "GET"));

    let delete = awc::Client::new()
        .delete(up.url())
        .insert_header(("Mcp-Session-Id", session.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status().as_u16(), 401);
    assert_eq!(up.sessions_deleted(), 0);
    let delete = awc::Client::new()
        .delete(up.url())
        .insert_header(("Mcp-Session-Id", session.as_str()))
        .insert_header(("Authorization", "Bearer t"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status().as_u16(), 200);
    assert_eq!(up.sessions_deleted(), 1);
}

#[test]
fn base64_and_form_encoding_round_trip() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("user:pass", "dXNlcjpwYXNz"),
    ] {
        assert_eq!(base64_encode(plain.as_bytes()), encoded);
        assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
    }
    assert_eq!(base64_decode("not base64!"), None);
    assert_eq!(form_urlencode("p@ss w+rd&=x:"), "p%40ss+w%2Brd%26%3Dx%3A");
    assert_eq!(form_urldecode("p%40ss+w%2Brd%26%3Dx%3A"), "p@ss w+rd&=x:");
    assert_eq!(
        client_secret_basic("svc:reader", "s"),
        format!("Basic {}", base64_encode(b"svc%3Areader:s"))
    );
}

// ------------------------------------------------------- interop peers

#[actix_web::test]
async fn python_sdk_streamable_http_lists_its_tools() {
    let peer = crate::require_peer!(peers::python(PythonTransport::StreamableHttp));
    let mut client = McpClient::new(peer.url());
    let result = client.initialize().await.unwrap();
    assert_eq!(result["protocolVersion"], CLIENT_PROTOCOL_VERSION);
    assert_eq!(client.list_tool_names().await.unwrap(), PYTHON_TOOLS);
}

#[actix_web::test]
async fn python_sdk_sse_lists_its_tools() {
    let peer = crate::require_peer!(peers::python(PythonTransport::Sse));
    let mut client = LegacySseClient::connect(peer.url()).await.unwrap();
    client.initialize("2024-11-05").await.unwrap();
    assert_eq!(client.list_tool_names().await.unwrap(), PYTHON_TOOLS);
}

#[actix_web::test]
async fn python_sdk_behind_a_bearer_requires_the_token() {
    let peer = crate::require_peer!(peers::python_with_bearer(
        PythonTransport::StreamableHttp,
        "py-selftest-token"
    ));
    let reply = McpClient::new(peer.url())
        .post(&initialize_request(1, CLIENT_PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let wrong = McpClient::new(peer.url())
        .with_header("Authorization", "Bearer nope")
        .post(&initialize_request(1, CLIENT_PROTOCOL_VERSION))
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    let mut client =
        McpClient::new(peer.url()).with_header("Authorization", "Bearer py-selftest-token");
    client.initialize().await.unwrap();
    assert_eq!(client.list_tool_names().await.unwrap(), PYTHON_TOOLS);
}

#[actix_web::test]
async fn server_everything_streamable_http_lists_its_tools() {
    let peer = crate::require_peer!(peers::everything(EverythingTransport::StreamableHttp));
    let mut client = McpClient::new(peer.url());
    client.initialize().await.unwrap();
    assert_eq!(
        client.list_tool_names().await.unwrap(),
        everything_tools_bare()
    );
}

#[actix_web::test]
async fn server_everything_sse_lists_its_tools() {
    let peer = crate::require_peer!(peers::everything(EverythingTransport::Sse));
    let mut client = LegacySseClient::connect(peer.url()).await.unwrap();
    client.initialize("2024-11-05").await.unwrap();
    assert_eq!(
        client.list_tool_names().await.unwrap(),
        everything_tools_bare()
    );
}

#[test]
fn server_everything_stdio_lists_its_tools() {
    let cmd = crate::require_peer!(peers::everything_stdio());
    let mut child = Command::new(&cmd.command)
        .args(&cmd.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for msg in [
        initialize_request(1, CLIENT_PROTOCOL_VERSION),
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        tools_list(2),
    ] {
        writeln!(stdin, "{msg}").unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(msg) = serde_json::from_str::<Value>(&line) {
                if msg["id"] == 2 {
                    let _ = tx.send(msg);
                    break;
                }
            }
        }
    });
    let answer = rx.recv_timeout(peers::START_DEADLINE);
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    let msg = answer.expect("no tools/list answer from server-everything over stdio");
    assert_eq!(
        names(msg["result"]["tools"].as_array().unwrap()),
        everything_tools_bare()
    );
}
