//! `tools/call` through the MCP endpoint (issue 11): to the owning server
//! over its live session, both client eras, both upstream eras; failures
//! fast and clear (unknown tool, a server that is down, a call past its
//! deadline, a full server); a hung server never slows another's calls.

use std::time::Duration;

use serde_json::{json, Value};

use crate::gateway::modern;
use crate::helpers::{http, spawn_app, DEADLINE, FAST, LOCAL_WRITES};
use crate::support::mcp_client::McpClient;
use crate::support::upstream::{Methods, ServerEra, TestUpstream};

fn upstream(era: ServerEra, name: &str) -> TestUpstream {
    TestUpstream::builder()
        .tools(2)
        .tool_prefix(format!("{name}_tool_"))
        .server_name(name)
        .era(era)
        .start()
        .unwrap()
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[actix_web::test]
async fn calls_reach_the_owning_server_from_clients_of_both_eras() {
    let a = upstream(ServerEra::Legacy, "a");
    let b = upstream(ServerEra::Modern, "b");
    let app = spawn_app(&format!(
        "{FAST}servers:\n  a: {}\n  b: {}\n",
        http(&a.url()),
        http(&b.url())
    ))
    .await;
    app.wait_healthy("a", 2).await;
    app.wait_healthy("b", 2).await;
    let url = format!("{}/mcp", app.base);
    // A 2026-07-28 client, a 2025 upstream and a 2026 one.
    for (tool, upstream_tool) in [("a__a_tool_0", "a_tool_0"), ("b__b_tool_1", "b_tool_1")] {
        let (s, r) = modern(
            &url,
            1,
            "tools/call",
            json!({"name": tool, "arguments": {"q": "x"}}),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["id"], 1);
        let result = &r["result"];
        assert_eq!(result["isError"], false, "{r}");
        assert_eq!(
            result["resultType"], "complete",
            "a modern client gets resultType: {r}"
        );
        let t = text(result);
        assert!(
            t.starts_with(&format!("{upstream_tool} called")),
            "the upstream's own name: {t}"
        );
        assert!(t.contains(r#"{"q":"x"}"#), "arguments verbatim: {t}");
    }
    // A 2025 client through /mcp/b (upstream names).
    let mut c = McpClient::new(format!("{}/mcp/b", app.base));
    c.initialize().await.unwrap();
    let result = c
        .request(
            "tools/call",
            json!({"name": "b_tool_0", "arguments": {"n": 1}}),
        )
        .await
        .unwrap();
    assert!(text(&result).starts_with("b_tool_0 called"), "{result}");
    // The calls went over the sessions discovery opened: one initialize
    // on the 2025 upstream, however many calls.
    assert_eq!(a.requests("initialize"), 1);
    assert!(
        app.metric("mcp_discovery_tool_calls_total{outcome=\"ok\",server=\"b\"}")
            .await
            >= 2.0
    );
    app.stop().await;
}

#[actix_web::test]
async fn failures_are_fast_and_clear_and_a_hung_server_slows_nobody_else() {
    let ok = upstream(ServerEra::Legacy, "ok");
    let slow = TestUpstream::builder()
        .tools(1)
        .tool_prefix("slow_tool_")
        .delay(Duration::from_secs(30))
        .delay_on(Methods::only(["tools/call"]))
        .start()
        .unwrap();
    let down = upstream(ServerEra::Legacy, "down");
    let app = spawn_app(&format!(
        "{FAST}{LOCAL_WRITES}mcp: {{ max_concurrent_calls: 1 }}\nservers:\n  ok: {}\n  slow: {{ url: \"{}\", transport: streamable-http, call_timeout: 2s }}\n  down: {}\n",
        http(&ok.url()),
        slow.url(),
        http(&down.url())
    ))
    .await;
    app.wait_healthy("ok", 2).await;
    app.wait_healthy("slow", 1).await;
    app.wait_healthy("down", 2).await;
    let url = format!("{}/mcp", app.base);

    // Unknown tool: -32602 naming it.
    let (_, r) = modern(&url, 1, "tools/call", json!({"name": "ok__nope"})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("ok__nope"));

    // A hung call times out at the server's call_timeout; meanwhile the
    // other server's calls finish.
    let hung = {
        let url = url.clone();
        actix_rt::spawn(async move {
            modern(&url, 2, "tools/call", json!({"name": "slow__slow_tool_0"})).await
        })
    };
    for i in 0..3 {
        let (_, r) = modern(&url, 10 + i, "tools/call", json!({"name": "ok__ok_tool_0"})).await;
        assert_eq!(r["result"]["isError"], false, "{r}");
    }
    // One slot (taken by the hung call) and a queue of one: of two more
    // calls, one waits and one is refused at once, whichever came second.
    let deadline = std::time::Instant::now() + DEADLINE;
    while slow.requests("tools/call") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hung call never reached the upstream"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let spawn_call = |id: u64| {
        let url = url.clone();
        actix_rt::spawn(async move {
            modern(&url, id, "tools/call", json!({"name": "slow__slow_tool_0"})).await
        })
    };
    let (second, third) = (spawn_call(3), spawn_call(4));
    let (_, r) = hung.await.unwrap();
    assert_eq!(r["error"]["code"], -32001, "timeout: {r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("call_timeout"),
        "{r}"
    );
    let (_, a) = second.await.unwrap();
    let (_, b) = third.await.unwrap();
    let codes = [a["error"]["code"].as_i64(), b["error"]["code"].as_i64()];
    assert!(
        codes.contains(&Some(-32000)) && codes.contains(&Some(-32001)),
        "{a} {b}"
    );
    let busy = if codes[0] == Some(-32000) { &a } else { &b };
    assert!(
        busy["error"]["message"].as_str().unwrap().contains("busy"),
        "{busy}"
    );
    assert_eq!(busy["error"]["data"]["retryAfterMs"], 1000);
    assert!(
        app.metric("mcp_discovery_tool_calls_total{outcome=\"timeout\",server=\"slow\"}")
            .await
            >= 1.0
    );

    // A server that went down: its stale tools are still listed, and a
    // call answers at once with its last error (no wait for a timeout).
    down.stop().await;
    assert_eq!(app.post("/v1/servers/down/refresh").await, 202);
    app.wait_state("down", "degraded").await;
    let (_, r) = modern(&url, 5, "tools/call", json!({"name": "down__down_tool_0"})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(text(&r["result"]).contains("degraded"), "{r}");
    app.stop().await;
}

#[actix_web::test]
async fn progress_of_a_call_is_relayed_on_the_clients_stream() {
    use crate::support::peers::{self, EverythingTransport};
    use futures_util::StreamExt;
    let peer = crate::require_peer!(peers::everything(EverythingTransport::StreamableHttp));
    let app = spawn_app(&format!("{FAST}servers:\n  ev: {}\n", http(peer.url()))).await;
    app.wait_server("ev", "healthy with its tools", |s| {
        s["state"] == "healthy" && s["tool_count"].as_u64().unwrap_or(0) >= 12
    })
    .await;
    let mut params = json!({
        "name": "ev__trigger-long-running-operation",
        "arguments": {"duration": 1, "steps": 3},
        "_meta": crate::gateway::meta(),
    });
    params["_meta"]["progressToken"] = json!("client-token-1");
    let mut res = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish()
        .post(format!("{}/mcp", app.base))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("MCP-Protocol-Version", crate::gateway::MODERN))
        .insert_header(("Mcp-Method", "tools/call"))
        .insert_header(("Mcp-Name", "ev__trigger-long-running-operation"))
        .send_body(
            json!({"jsonrpc":"2.0","id":77,"method":"tools/call","params":params}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = Vec::new();
    while let Some(chunk) = actix_rt::time::timeout(DEADLINE, res.next()).await.unwrap() {
        body.extend_from_slice(&chunk.unwrap());
    }
    let messages: Vec<Value> = crate::support::mcp_client::sse_events(&body)
        .into_iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let progress: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{messages:?}");
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "client-token-1"),
        "the client's own token: {progress:?}"
    );
    let last = messages.last().unwrap();
    assert_eq!(last["id"], 77, "the result comes last: {messages:?}");
    assert!(text(&last["result"]).contains("completed"), "{last}");
    app.stop().await;
}

#[actix_web::test]
async fn a_2025_client_cancels_with_a_notification_and_the_upstream_hears_it() {
    let slow = TestUpstream::builder()
        .tools(1)
        .delay(Duration::from_secs(30))
        .delay_on(Methods::only(["tools/call"]))
        .start()
        .unwrap();
    let app = spawn_app(&format!("{FAST}servers:\n  slow: {}\n", http(&slow.url()))).await;
    app.wait_healthy("slow", 1).await;
    let mut c = McpClient::new(format!("{}/mcp", app.base));
    c.initialize().await.unwrap();
    let call = {
        let mut c2 = McpClient::new(format!("{}/mcp", app.base));
        c2.session_id = c.session_id.clone();
        c2.protocol_version = c.protocol_version.clone();
        let c = c2;
        actix_rt::spawn(async move {
            c.post(&json!({"jsonrpc":"2.0","id":"call-1","method":"tools/call","params":{"name":"slow__tool_0"}}))
                .await
                .unwrap()
        })
    };
    let deadline = std::time::Instant::now() + DEADLINE;
    while slow.requests("tools/call") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never reached the upstream"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let ack = c
        .post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"call-1","reason":"user"}}))
        .await
        .unwrap();
    assert_eq!(ack.status, 202);
    let reply = call.await.unwrap();
    let r = reply.response().unwrap();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{r}"
    );
    while slow.requests("notifications/cancelled") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream never heard the cancel"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        app.metric("mcp_discovery_tool_calls_total{outcome=\"cancelled\",server=\"slow\"}")
            .await
            >= 1.0
    );
    app.stop().await;
}
