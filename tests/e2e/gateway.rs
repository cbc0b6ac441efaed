//! The MCP endpoint `/mcp` (issue 11) at the protocol level, with a real
//! engine and real test upstreams: both eras on one path, the 2026-07-28
//! request checks, `/mcp/{server}` and views, pagination and its cursors,
//! cache hints, the list_changed fan-out, the guard.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{http, spawn_app, TestApp, DEADLINE, FAST, LOCAL_WRITES};
use crate::support::mcp_client::{names, sse_events, McpClient};
use crate::support::upstream::{ServerEra, TestUpstream};

pub const MODERN: &str = "2026-07-28";

pub fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
    })
}

/// A 2026-07-28 request with the headers the spec asks for.
pub async fn modern(url: &str, id: u64, method: &str, mut params: Value) -> (u16, Value) {
    if params.get("_meta").is_none() {
        params["_meta"] = meta();
    }
    let mut req = awc::Client::new()
        .post(url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("MCP-Protocol-Version", MODERN))
        .insert_header(("Mcp-Method", method));
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        req = req.insert_header(("Mcp-Name", name.to_owned()));
    }
    let mut res = req
        .send_body(
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        )
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.body().limit(64 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Raw POST with exactly these headers.
async fn post_raw(url: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
    let mut req = awc::Client::new().post(url);
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req.send_body(body.to_string()).await.unwrap();
    let status = res.status().as_u16();
    let body = res.body().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn upstream(tools: usize, era: ServerEra, prefix: &str) -> TestUpstream {
    TestUpstream::builder()
        .tools(tools)
        .tool_prefix(format!("{prefix}_tool_"))
        .era(era)
        .start()
        .unwrap()
}

/// Two upstreams (a: 2025, b: 2026-07-28), a view, writes from loopback.
async fn two_servers(extra: &str) -> (TestApp, TestUpstream, TestUpstream) {
    let a = upstream(2, ServerEra::Legacy, "a");
    let b = upstream(3, ServerEra::Modern, "b");
    let yaml = format!(
        "{FAST}{LOCAL_WRITES}{extra}views:\n  only-b:\n    servers: [b]\n    tools: {{ deny: [\"b__b_tool_2\"] }}\nservers:\n  a: {}\n  b: {}\n",
        http(&a.url()),
        http(&b.url())
    );
    let app = spawn_app(&yaml).await;
    app.wait_healthy("a", 2).await;
    app.wait_healthy("b", 3).await;
    (app, a, b)
}

fn tool_names(result: &Value) -> Vec<String> {
    names(result["tools"].as_array().unwrap())
}

#[actix_web::test]
async fn a_2025_client_gets_a_session_the_whole_catalog_and_can_end_it() {
    let (app, _a, _b) = two_servers("").await;
    let mut c = McpClient::new(format!("{}/mcp", app.base));
    let init = c.initialize().await.unwrap();
    assert_eq!(init["protocolVersion"], "2025-11-25");
    assert_eq!(init["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(init["serverInfo"]["name"], "mcp-discovery");
    assert!(
        init["instructions"].as_str().unwrap().contains("a, b"),
        "{init}"
    );
    assert!(c.session_id.is_some());
    assert_eq!(c.request("ping", json!({})).await.unwrap(), json!({}));
    let mut listed = c.list_tool_names().await.unwrap();
    listed.sort();
    assert_eq!(
        listed,
        [
            "a__a_tool_0",
            "a__a_tool_1",
            "b__b_tool_0",
            "b__b_tool_1",
            "b__b_tool_2"
        ]
    );
    let tools = c.list_tools().await.unwrap();
    let t = tools.iter().find(|t| t["name"] == "a__a_tool_0").unwrap();
    assert!(
        t["inputSchema"].is_object(),
        "the upstream's tool object, renamed: {t}"
    );
    // Without a session: 400; after DELETE: 404.
    let (status, body) = post_raw(
        &format!("{}/mcp", app.base),
        &[("Content-Type", "application/json")],
        &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["id"], 5);
    assert_eq!(c.delete_session().await.unwrap(), 200);
    let err = c.request("tools/list", json!({})).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    // A 2025 client offering an older revision gets it.
    let old = McpClient::new(format!("{}/mcp", app.base));
    let reply = old
        .post(&crate::support::mcp_client::initialize_request(
            1,
            "2025-03-26",
        ))
        .await
        .unwrap();
    assert_eq!(
        reply.response().unwrap()["result"]["protocolVersion"],
        "2025-03-26"
    );
    assert_eq!(app.metric("mcp_discovery_mcp_sessions").await, 1.0);
    app.stop().await;
}

#[actix_web::test]
async fn a_2026_client_is_served_statelessly_with_cache_hints() {
    let (app, _a, _b) = two_servers("mcp: { max_ttl: 2m }\n").await;
    let url = format!("{}/mcp", app.base);
    let (status, d) = modern(&url, 1, "server/discover", json!({})).await;
    assert_eq!(status, 200, "{d}");
    let r = &d["result"];
    assert_eq!(r["supportedVersions"], json!([MODERN]));
    assert_eq!(r["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcp-discovery"
    );
    assert_eq!(r["resultType"], "complete");
    // b (a 2026-07-28 test upstream) says `private`, so the aggregate is.
    assert_eq!(r["cacheScope"], "private");
    let (_, only_a) = modern(&format!("{}/mcp/a", app.base), 9, "tools/list", json!({})).await;
    assert_eq!(
        only_a["result"]["cacheScope"], "public",
        "a 2025 upstream states nothing: {only_a}"
    );
    let (status, l) = modern(&url, 2, "tools/list", json!({})).await;
    assert_eq!(status, 200, "{l}");
    let r = &l["result"];
    assert_eq!(tool_names(r).len(), 5);
    assert_eq!(r["resultType"], "complete");
    assert_eq!(r["cacheScope"], "private");
    // FAST polls every 10 minutes: the soonest scheduled change is ~9 min
    // away (poll_interval less its jitter), so the cap decides.
    let ttl = r["ttlMs"].as_u64().unwrap();
    assert!(ttl > 100_000 && ttl <= 120_000, "ttlMs {ttl}");
    assert!(r.get("nextCursor").is_none());
    // The order is deterministic: config order, then the upstream's order.
    let (_, again) = modern(&url, 3, "tools/list", json!({})).await;
    assert_eq!(tool_names(&again["result"]), tool_names(r));
    app.stop().await;
}

#[actix_web::test]
async fn modern_requests_are_checked_in_the_spec_order_and_errors_echo_the_id() {
    let (app, _a, _b) = two_servers("").await;
    let url = format!("{}/mcp", app.base);
    fn good(method: &str) -> Vec<(&'static str, &str)> {
        vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", MODERN),
            ("Mcp-Method", method),
        ]
    }
    // Missing _meta: -32602 / 400.
    let (s, b) = post_raw(
        &url,
        &good("tools/list"),
        &json!({"jsonrpc":"2.0","id":101,"method":"tools/list","params":{}}),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_i64(), b["id"].as_i64()),
        (400, Some(-32602), Some(101)),
        "{b}"
    );
    // Missing clientCapabilities.
    let (s, b) = post_raw(&url, &good("tools/list"), &json!({"jsonrpc":"2.0","id":102,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion": MODERN}}})).await;
    assert_eq!((s, b["error"]["code"].as_i64()), (400, Some(-32602)), "{b}");
    // Header and body disagree on the version: -32020.
    let mut m = meta();
    m["io.modelcontextprotocol/protocolVersion"] = json!("v999.0.0");
    let (s, b) = post_raw(
        &url,
        &good("server/discover"),
        &json!({"jsonrpc":"2.0","id":302,"method":"server/discover","params":{"_meta": m}}),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_i64()), (400, Some(-32020)), "{b}");
    // Both say v999: -32022 with the supported versions.
    let mut h = good("server/discover");
    h[2] = ("MCP-Protocol-Version", "v999.0.0");
    let (s, b) = post_raw(
        &url,
        &h,
        &json!({"jsonrpc":"2.0","id":301,"method":"server/discover","params":{"_meta": m}}),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_i64(), b["id"].as_i64()),
        (400, Some(-32022), Some(301)),
        "{b}"
    );
    assert_eq!(
        b["error"]["data"],
        json!({"supported": [MODERN], "requested": "v999.0.0"})
    );
    // Mcp-Method missing or wrong.
    let (s, b) = post_raw(
        &url,
        &good("tools/list")[..3],
        &json!({"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta": meta()}}),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_i64()), (400, Some(-32020)), "{b}");
    let (s, b) = post_raw(
        &url,
        &good("tools/call"),
        &json!({"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta": meta()}}),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_i64()), (400, Some(-32020)), "{b}");
    // Header names are case-insensitive; Mcp-Name compared after decoding.
    let lower = [
        ("content-type", "application/json"),
        ("mcp-protocol-version", MODERN),
        ("MCP-METHOD", "tools/call"),
        ("mcp-name", "=?base64?YV9fbm9wZQ?="), // "a__nope", unpadded
    ];
    let (s, b) = post_raw(&url, &lower, &json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"a__nope","_meta": meta()}})).await;
    assert_eq!(
        (s, b["error"]["code"].as_i64()),
        (400, Some(-32602)),
        "passes the header checks, unknown tool: {b}"
    );
    assert!(
        b["error"]["message"].as_str().unwrap().contains("a__nope"),
        "{b}"
    );
    let (s, b) = post_raw(&url, &lower, &json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"a__other","_meta": meta()}})).await;
    assert_eq!((s, b["error"]["code"].as_i64()), (400, Some(-32020)), "{b}");
    // Retired and unknown methods: 404 + -32601, initialize included.
    for (i, method) in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "unknown/method",
    ]
    .iter()
    .enumerate()
    {
        let (s, b) = modern(&url, 500 + i as u64, method, json!({})).await;
        assert_eq!(
            (s, b["error"]["code"].as_i64(), b["id"].as_u64()),
            (404, Some(-32601), Some(500 + i as u64)),
            "{method}: {b}"
        );
    }
    // A notification: 202.
    let (s, _) = post_raw(
        &url,
        &good("notifications/cancelled"),
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId": 1}}),
    )
    .await;
    assert_eq!(s, 202);
    // Not JSON-RPC at all.
    let (s, b) = post_raw(&url, &good("x"), &json!([1, 2])).await;
    assert_eq!((s, b["error"]["code"].as_i64()), (400, Some(-32600)), "{b}");
    app.stop().await;
}

#[actix_web::test]
async fn one_server_and_views_have_their_own_paths() {
    let (app, _a, _b) = two_servers("").await;
    let (s, one) = modern(&format!("{}/mcp/b", app.base), 1, "tools/list", json!({})).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(
        tool_names(&one["result"]),
        ["b_tool_0", "b_tool_1", "b_tool_2"]
    );
    let (s, view) = modern(
        &format!("{}/mcp/only-b", app.base),
        1,
        "tools/list",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{view}");
    assert_eq!(tool_names(&view["result"]), ["b__b_tool_0", "b__b_tool_1"]);
    let mut legacy = McpClient::new(format!("{}/mcp/a", app.base));
    legacy.initialize().await.unwrap();
    assert_eq!(
        legacy.list_tool_names().await.unwrap(),
        ["a_tool_0", "a_tool_1"]
    );
    // A session of /mcp/a is not one of /mcp.
    let mut wrong = McpClient::new(format!("{}/mcp", app.base));
    wrong.session_id = legacy.session_id.clone();
    assert!(wrong.list_tools().await.is_err());
    // ... and using it there leaves it alive where it belongs.
    assert_eq!(
        legacy.list_tool_names().await.unwrap(),
        ["a_tool_0", "a_tool_1"]
    );
    let (s, b) = modern(
        &format!("{}/mcp/nobody", app.base),
        4,
        "tools/list",
        json!({}),
    )
    .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["id"], 4);
    // A tool outside the view cannot be called through it.
    let (s, b) = modern(
        &format!("{}/mcp/only-b", app.base),
        5,
        "tools/call",
        json!({"name": "b__b_tool_2", "arguments": {}}),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_i64()), (400, Some(-32602)), "{b}");
    app.stop().await;
}

#[actix_web::test]
async fn pages_follow_a_cursor_and_a_cursor_of_a_changed_listing_is_refused() {
    let (app, a, _b) = two_servers("mcp: { page_size: 2 }\n").await;
    let url = format!("{}/mcp", app.base);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut first_cursor = None;
    for id in 0..10 {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let (s, page) = modern(&url, id, "tools/list", params).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(tool_names(&page["result"]));
        cursor = page["result"]["nextCursor"].as_str().map(str::to_owned);
        first_cursor = first_cursor.or(cursor.clone());
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    // The legacy client follows the same cursors.
    let mut legacy = McpClient::new(url.clone());
    legacy.initialize().await.unwrap();
    assert_eq!(legacy.list_tool_names().await.unwrap(), seen);
    // The listing changes: the old cursor is refused, never a mix.
    a.handle().set_tools(4);
    assert_eq!(app.post("/v1/servers/a/refresh").await, 202);
    app.wait_healthy("a", 4).await;
    let (s, b) = modern(
        &url,
        20,
        "tools/list",
        json!({"cursor": first_cursor.unwrap()}),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_i64()), (400, Some(-32602)), "{b}");
    let (_, b) = modern(&url, 21, "tools/list", json!({"cursor": "garbage"})).await;
    assert_eq!(b["error"]["code"], -32602, "{b}");
    app.stop().await;
}

/// Reads SSE events from a streaming response until `want` events with
/// data arrived or the deadline passed.
async fn read_events<S>(body: &mut S, want: usize, within: Duration) -> Vec<Value>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    loop {
        let events: Vec<Value> = sse_events(&buf)
            .into_iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        // Only complete events count (sse_events keeps a trailing partial
        // one only once its blank line arrived).
        if events.len() >= want {
            return events;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return events;
        }
        match actix_rt::time::timeout(left, body.next()).await {
            Ok(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
            _ => return events,
        }
    }
}

#[actix_web::test]
async fn list_changed_reaches_listeners_of_both_eras_that_see_the_change_only() {
    let (app, a, _b) = two_servers("").await;
    let url = format!("{}/mcp", app.base);
    // A modern listener of /mcp.
    let mut listen = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
        .post(&url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("MCP-Protocol-Version", MODERN))
        .insert_header(("Mcp-Method", "subscriptions/listen"))
        .send_body(json!({"jsonrpc":"2.0","id":"sub-1","method":"subscriptions/listen","params":{"_meta": meta(),"notifications":{"toolsListChanged":true,"promptsListChanged":true}}}).to_string())
        .await
        .unwrap();
    assert_eq!(listen.status(), 200);
    assert!(listen
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let ack = read_events(&mut listen, 1, DEADLINE).await;
    assert_eq!(
        ack[0]["method"], "notifications/subscriptions/acknowledged",
        "{ack:?}"
    );
    assert_eq!(
        ack[0]["params"]["notifications"],
        json!({"toolsListChanged": true}),
        "only what it sends"
    );
    assert_eq!(
        ack[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub-1"
    );
    // A 2025 session's GET stream on /mcp, and a modern listener of /mcp/b.
    let mut legacy = McpClient::new(url.clone());
    legacy.initialize().await.unwrap();
    let mut get = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
        .get(&url)
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Mcp-Session-Id", legacy.session_id.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let mut only_b = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
        .post(format!("{}/mcp/b", app.base))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("MCP-Protocol-Version", MODERN))
        .insert_header(("Mcp-Method", "subscriptions/listen"))
        .send_body(json!({"jsonrpc":"2.0","id":9,"method":"subscriptions/listen","params":{"_meta": meta(),"notifications":{"toolsListChanged":true}}}).to_string())
        .await
        .unwrap();
    assert_eq!(
        read_events(&mut only_b, 1, DEADLINE).await.len(),
        1,
        "its ack"
    );
    let listeners = app.metric("mcp_discovery_mcp_listeners").await;
    assert_eq!(listeners, 3.0);
    // a's tool list changes.
    a.handle().set_tools(3);
    assert_eq!(app.post("/v1/servers/a/refresh").await, 202);
    let changed = read_events(&mut listen, 1, DEADLINE).await;
    assert_eq!(
        changed[0]["method"], "notifications/tools/list_changed",
        "{changed:?}"
    );
    assert_eq!(
        changed[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub-1"
    );
    let changed = read_events(&mut get, 1, DEADLINE).await;
    assert_eq!(
        changed[0]["method"], "notifications/tools/list_changed",
        "{changed:?}"
    );
    // Both re-list and see the new tool.
    let (_, l) = modern(&url, 3, "tools/list", json!({})).await;
    assert!(tool_names(&l["result"]).contains(&"a__a_tool_2".to_owned()));
    assert!(legacy
        .list_tool_names()
        .await
        .unwrap()
        .contains(&"a__a_tool_2".to_owned()));
    // /mcp/b did not change: nothing for its listener.
    assert!(read_events(&mut only_b, 1, Duration::from_millis(500))
        .await
        .is_empty());
    assert!(app.metric("mcp_discovery_list_changed_sent_total").await >= 2.0);
    // DELETE ends the session's GET stream.
    assert_eq!(legacy.delete_session().await.unwrap(), 200);
    let end = actix_rt::time::timeout(DEADLINE, async {
        while let Some(Ok(_)) = get.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the GET stream ended with the session");
    // (A client that goes away is noticed at the next keep-alive write;
    // the unregistering itself is the hub's unit test.)
    drop(listen);
    drop(only_b);
    app.stop().await;
}

#[actix_web::test]
async fn the_endpoint_refuses_foreign_hosts_and_origins_and_needs_a_key_when_reads_are_protected() {
    let (app, _a, _b) = two_servers("").await;
    let url = format!("{}/mcp", app.base);
    let body =
        json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta": meta()}});
    let base = [
        ("Content-Type", "application/json"),
        ("MCP-Protocol-Version", MODERN),
        ("Mcp-Method", "server/discover"),
    ];
    let mut h = base.to_vec();
    h.push(("Origin", "http://evil.example.com"));
    assert_eq!(post_raw(&url, &h, &body).await.0, 403);
    let mut h = base.to_vec();
    h.push(("Host", "evil.example.com"));
    assert_eq!(post_raw(&url, &h, &body).await.0, 421);
    let mut h = base.to_vec();
    h[0] = ("Content-Type", "text/plain");
    assert_eq!(post_raw(&url, &h, &body).await.0, 415);
    assert_eq!(post_raw(&url, &base, &body).await.0, 200);
    // The engine's own origin (the Host it was asked by) is same-origin.
    let own = app.base.clone();
    let mut h = base.to_vec();
    h.push(("Origin", own.as_str()));
    assert_eq!(post_raw(&url, &h, &body).await.0, 200);
    let mut h = base.to_vec();
    h.push(("Origin", "http://localhost:1"));
    assert_eq!(
        post_raw(&url, &h, &body).await.0,
        403,
        "another loopback origin is not ours"
    );
    // The GET stream checks Origin too.
    let res = awc::Client::new()
        .get(&url)
        .insert_header(("Origin", "http://evil.example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    app.stop().await;

    let key = "read-key-0123456789abcdef";
    let a = upstream(1, ServerEra::Legacy, "a");
    let app = spawn_app(&format!(
        "{FAST}admin: {{ read_keys: [\"{key}\"], protect_reads: true }}\nservers:\n  a: {}\n",
        http(&a.url())
    ))
    .await;
    let url = format!("{}/mcp", app.base);
    let mut res = awc::Client::new()
        .post(&url)
        .insert_header(("Content-Type", "application/json"))
        .send_body(crate::support::mcp_client::initialize_request(1, "2025-11-25").to_string())
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers().get("www-authenticate").unwrap(), "Bearer");
    let _ = res.body().await;
    let bearer = format!("Bearer {key}");
    let mut c = McpClient::new(url.clone()).with_header("Authorization", &bearer);
    c.initialize().await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, l) = {
            let mut h = base.to_vec();
            h[2] = ("Mcp-Method", "tools/list");
            h.push(("Authorization", bearer.as_str()));
            post_raw(
                &url,
                &h,
                &json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta": meta()}}),
            )
            .await
        };
        if tool_names(&l["result"]).len() == 1 {
            assert_eq!(l["result"]["cacheScope"], "private", "protected reads: {l}");
            break;
        }
        assert!(Instant::now() < deadline, "{l}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_view_named_like_a_registration_is_refused() {
    let (app, _a, _b) = two_servers("").await;
    let (status, body) = app
        .client
        .post(format!("{}/v1/servers", app.base))
        .insert_header(("Content-Type", "application/json"))
        .send_json(&json!({"name": "only-b", "url": "http://127.0.0.1:9/mcp"}))
        .await
        .map(|mut r| (r.status().as_u16(), r.body()))
        .unwrap();
    let body = body.await.unwrap();
    assert_eq!(status, 409, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("view_name"));
    app.stop().await;
}

#[actix_web::test]
async fn views_hot_reload_and_their_listeners_hear_only_their_changes() {
    let a = upstream(2, ServerEra::Legacy, "a");
    let b = upstream(1, ServerEra::Modern, "b");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let write = |views: &str| {
        std::fs::write(
            &path,
            format!(
                "{FAST}{LOCAL_WRITES}{views}servers:\n  a: {}\n  b: {}\n",
                http(&a.url()),
                http(&b.url())
            ),
        )
        .unwrap();
    };
    write("views:\n  pick:\n    tools: { allow: [\"a__a_tool_0\"] }\n");
    let app = crate::helpers::spawn_app_file(&path).await;
    app.wait_healthy("a", 2).await;
    app.wait_healthy("b", 1).await;
    let url = format!("{}/mcp/pick", app.base);
    let (_, l) = modern(&url, 1, "tools/list", json!({})).await;
    assert_eq!(tool_names(&l["result"]), ["a__a_tool_0"]);
    let mut listen = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
        .post(&url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("MCP-Protocol-Version", MODERN))
        .insert_header(("Mcp-Method", "subscriptions/listen"))
        .send_body(json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"_meta": meta(),"notifications":{"toolsListChanged":true}}}).to_string())
        .await
        .unwrap();
    assert_eq!(read_events(&mut listen, 1, DEADLINE).await.len(), 1, "ack");
    // b changes: not in the view, no notification.
    b.handle().set_tools(2);
    assert_eq!(app.post("/v1/servers/b/refresh").await, 202);
    app.wait_healthy("b", 2).await;
    assert!(read_events(&mut listen, 1, Duration::from_millis(500))
        .await
        .is_empty());
    // The view itself changes by a reload: its listener is told.
    write("views:\n  pick:\n    tools: { allow: [\"a__*\", \"b__b_tool_1\"] }\n");
    let (status, body) = app.post_json("/v1/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let changed = read_events(&mut listen, 1, DEADLINE).await;
    assert_eq!(
        changed[0]["method"], "notifications/tools/list_changed",
        "{changed:?}"
    );
    let (_, l) = modern(&url, 2, "tools/list", json!({})).await;
    assert_eq!(
        tool_names(&l["result"]),
        ["a__a_tool_0", "a__a_tool_1", "b__b_tool_1"]
    );
    // A view named like a server is refused whole; the old one keeps running.
    write("views:\n  a: {}\n");
    let (status, body) = app.post_json("/v1/admin/reload", None).await;
    assert_eq!(status, 422, "{body}");
    let (s, _) = modern(&url, 3, "tools/list", json!({})).await;
    assert_eq!(s, 200);
    // Removed: the path is gone.
    write("");
    let (status, _) = app.post_json("/v1/admin/reload", None).await;
    assert_eq!(status, 200);
    let (s, b2) = modern(&url, 4, "tools/list", json!({})).await;
    assert_eq!(s, 404, "{b2}");
    app.stop().await;
}

#[actix_web::test]
async fn a_hung_and_a_refusing_upstream_never_hold_up_or_blank_the_listing() {
    let hung = crate::support::upstream::hanging_server().unwrap();
    let refused = crate::support::upstream::refusing_port().unwrap();
    let ups: Vec<TestUpstream> = (0..18)
        .map(|i| {
            upstream(
                2,
                if i % 2 == 0 {
                    ServerEra::Legacy
                } else {
                    ServerEra::Modern
                },
                &format!("u{i}"),
            )
        })
        .collect();
    let mut yaml = format!(
        "{FAST}servers:\n  hung: {}\n  refused: {}\n",
        http(&hung.url()),
        http(&format!("http://127.0.0.1:{refused}/mcp"))
    );
    for (i, u) in ups.iter().enumerate() {
        yaml.push_str(&format!("  s{i}: {}\n", http(&u.url())));
    }
    let app = spawn_app(&yaml).await;
    for i in 0..18 {
        app.wait_healthy(&format!("s{i}"), 2).await;
    }
    app.wait_state("refused", "degraded").await;
    let url = format!("{}/mcp", app.base);
    let (s, l) = modern(&url, 1, "tools/list", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(tool_names(&l["result"]).len(), 36, "every healthy tool");
    // hung is still connecting: a change can come at any moment.
    assert_eq!(l["result"]["ttlMs"], 0, "{}", l["result"]["ttlMs"]);
    let mut c = McpClient::new(url);
    c.initialize().await.unwrap();
    assert_eq!(c.list_tool_names().await.unwrap().len(), 36);
    // Served while the hung one is still on its first attempt: nothing
    // waited for it.
    assert_ne!(app.server("hung").await["state"], "healthy");
    app.stop().await;
}
