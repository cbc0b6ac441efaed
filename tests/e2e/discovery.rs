//! The engine against the Rust test upstream: the happy path, each failure
//! mode of issue 2 (one test each), and that one bad upstream never affects
//! another.

use std::time::Duration;

use crate::helpers::{http, namespaced, servers_yaml, spawn_app, FAST, LOCAL_WRITES};
use crate::support::upstream::{
    hanging_server, refusing_port, tool_names, Fault, Methods, SseStyle, TestUpstream,
};

fn only_tools_list() -> Methods {
    Methods::only(["tools/list"])
}

#[actix_web::test]
async fn every_tool_of_every_server_namespaced_with_pagination() {
    let small = TestUpstream::builder().tools(3).start().unwrap();
    let paged = TestUpstream::builder()
        .tools(250)
        .page_size(40)
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("small", http(&small.url())), ("paged", http(&paged.url()))])
    ))
    .await;

    app.wait_healthy("small", 3).await;
    let s = app.wait_healthy("paged", 250).await;
    assert_eq!(paged.requests("tools/list"), 7, "250 tools in pages of 40");
    assert_eq!(s["last_error"], serde_json::Value::Null);
    assert_eq!(s["negotiated_transport"], "streamable-http");
    assert_eq!(s["protocol_version"], "2025-11-25");
    assert!(s["last_success_at"].is_string());

    let names = app.tool_names().await;
    let mut want = namespaced("small", &tool_names(3));
    want.extend(namespaced("paged", &tool_names(250)));
    assert_eq!(names, want);

    let (_, body) = app.get("/v1/tools?server=small").await;
    let first = &body["tools"][0];
    assert_eq!(first["server"], "small");
    assert_eq!(first["upstream_name"], "tool_0");
    assert_eq!(first["stale"], false);
    assert_eq!(
        first["tool"]["name"], "tool_0",
        "the upstream tool verbatim"
    );
    assert!(first["tool"]["inputSchema"].is_object());

    let (status, one) = app.get("/v1/servers/paged").await;
    assert_eq!(status, 200);
    assert_eq!(one["tools"].as_array().unwrap().len(), 250);
    app.stop().await;
}

#[actix_web::test]
async fn etag_and_if_none_match_give_304_until_the_catalog_changes() {
    let up = TestUpstream::builder().tools(2).start().unwrap();
    let app = spawn_app(&format!(
        "{LOCAL_WRITES}{FAST}{}",
        servers_yaml(&[("a", http(&up.url()))])
    ))
    .await;
    app.wait_healthy("a", 2).await;

    let res = app
        .client
        .get(format!("{}/v1/tools", app.base))
        .send()
        .await
        .unwrap();
    let etag = res
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let res = app
        .client
        .get(format!("{}/v1/tools", app.base))
        .insert_header(("If-None-Match", etag.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 304);

    up.set_tools(3);
    assert_eq!(app.post("/v1/servers/a/refresh").await, 202);
    app.wait_healthy("a", 3).await;
    let res = app
        .client
        .get(format!("{}/v1/tools", app.base))
        .insert_header(("If-None-Match", etag.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "a new catalog has a new ETag");
    app.stop().await;
}

#[actix_web::test]
async fn sse_answers_split_in_small_chunks_with_crlf_and_multiline_data() {
    let up = TestUpstream::builder()
        .tools(12)
        .page_size(5)
        .sse()
        .sse_style(SseStyle {
            chunk_size: Some(7),
            multiline: true,
            crlf: true,
            retry_ms: Some(50),
            drop_before_response: false,
        })
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("sse", http(&up.url()))])
    ))
    .await;
    app.wait_healthy("sse", 12).await;
    assert_eq!(app.tool_names().await, namespaced("sse", &tool_names(12)));
    app.stop().await;
}

#[actix_web::test]
async fn a_dropped_post_stream_is_resumed_with_last_event_id() {
    let up = TestUpstream::builder()
        .tools(4)
        .sse()
        .sse_style(SseStyle {
            retry_ms: Some(20),
            drop_before_response: true,
            ..SseStyle::default()
        })
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("resume", http(&up.url()))])
    ))
    .await;
    app.wait_healthy("resume", 4).await;
    assert!(
        !up.last_event_ids().is_empty(),
        "the client resumed with Last-Event-ID"
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_expired_session_is_reinitialized_once_and_stays_healthy() {
    for status in [404u16, 400] {
        let up = TestUpstream::builder()
            .tools(2)
            .expired_session_status(status)
            .start()
            .unwrap();
        let app = spawn_app(&format!(
            "{LOCAL_WRITES}{FAST}{}",
            servers_yaml(&[("s", http(&up.url()))])
        ))
        .await;
        app.wait_healthy("s", 2).await;
        assert_eq!(up.requests("initialize"), 1);

        assert_eq!(up.expire_sessions(), 1);
        up.set_tools(5);
        assert_eq!(app.post("/v1/servers/s/refresh").await, 202);
        let s = app.wait_healthy("s", 5).await;
        assert_eq!(
            up.requests("initialize"),
            2,
            "re-initialized once ({status})"
        );
        assert_eq!(s["consecutive_failures"], 0, "never degraded ({status})");
        app.stop().await;
    }
}

#[actix_web::test]
async fn bad_upstreams_degrade_with_a_precise_error_and_no_one_else_notices() {
    let good = TestUpstream::builder().tools(10).start().unwrap();
    let garbage = TestUpstream::builder()
        .fault(Fault::Garbage)
        .fault_on(only_tools_list())
        .start()
        .unwrap();
    // A 1 GiB body: refused at max_response_bytes, never buffered.
    let huge = TestUpstream::builder()
        .fault(Fault::Oversized(1 << 30))
        .fault_on(only_tools_list())
        .start()
        .unwrap();
    let looping = TestUpstream::builder()
        .tools(10)
        .page_size(2)
        .cursor_loop()
        .start()
        .unwrap();
    let error500 = TestUpstream::builder()
        .fault(Fault::Status(500))
        .fault_on(only_tools_list())
        .start()
        .unwrap();
    let endless = TestUpstream::builder()
        .fault(Fault::EndlessSse)
        .fault_on(only_tools_list())
        .start()
        .unwrap();
    let rpc_error = TestUpstream::builder()
        .fault(Fault::JsonRpcError {
            code: -32603,
            message: "database unavailable".into(),
        })
        .fault_on(only_tools_list())
        .start()
        .unwrap();
    let yaml = format!(
        "{}{}",
        FAST.replace("request_timeout: 5s", "request_timeout: 2s")
            .replace(
                "poll_interval: 10m",
                "poll_interval: 10m\n  max_response_bytes: 1MiB"
            ),
        servers_yaml(&[
            ("good", http(&good.url())),
            ("garbage", http(&garbage.url())),
            ("huge", http(&huge.url())),
            ("looping", http(&looping.url())),
            ("error500", http(&error500.url())),
            ("endless", http(&endless.url())),
            ("rpcerror", http(&rpc_error.url())),
        ])
    );
    let app = spawn_app(&yaml).await;
    app.wait_healthy("good", 10).await;

    let expectations: [(&str, &[&str]); 6] = [
        ("garbage", &["json"]),
        ("huge", &["1048576", "limit"]),
        ("looping", &["cursor", "loop-cursor"]),
        ("error500", &["500"]),
        (
            "endless",
            &[
                "no response to `tools/list`",
                "within 2 s",
                "request_timeout",
            ],
        ),
        ("rpcerror", &["-32603", "database unavailable"]),
    ];
    for (name, needles) in expectations {
        let s = app.wait_state(name, "degraded").await;
        let error = s["last_error"].as_str().unwrap_or_default().to_lowercase();
        for needle in needles {
            assert!(
                error.contains(&needle.to_lowercase()),
                "{name}: last_error {error:?} should mention {needle:?}"
            );
        }
        assert!(s["consecutive_failures"].as_u64().unwrap() >= 1);
        assert!(s["next_retry_at"].is_string(), "{name}: {s}");
        assert!(s["last_attempt_at"].is_string());
    }
    let good_state = app.server("good").await;
    assert_eq!(good_state["state"], "healthy");
    assert_eq!(good_state["consecutive_failures"], 0);
    assert_eq!(app.tool_names().await, namespaced("good", &tool_names(10)));
    app.stop().await;
}

#[actix_web::test]
async fn a_refused_server_is_degraded_then_healthy_when_it_comes_up() {
    let port = refusing_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("late", http(&url))]))).await;
    let s = app.wait_state("late", "degraded").await;
    let error = s["last_error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("refused"), "{error}");
    assert!(
        error.contains(&port.to_string()),
        "names the address: {error}"
    );

    let up = TestUpstream::builder().tools(4).port(port).start().unwrap();
    let s = app.wait_healthy("late", 4).await;
    assert_eq!(s["last_error"], serde_json::Value::Null);
    assert_eq!(s["consecutive_failures"], 0);
    drop(up);
    app.stop().await;
}

#[actix_web::test]
async fn a_hung_server_does_not_hold_back_the_others() {
    let hung = hanging_server().unwrap();
    let a = TestUpstream::builder().tools(3).start().unwrap();
    let b = TestUpstream::builder().tools(4).sse().start().unwrap();
    let yaml = format!(
        "{}{}",
        FAST.replace("request_timeout: 5s", "request_timeout: 8s"),
        servers_yaml(&[
            ("hung", http(&hung.url())),
            ("a", http(&a.url())),
            ("b", http(&b.url())),
        ])
    );
    let app = spawn_app(&yaml).await;
    app.wait_healthy("a", 3).await;
    app.wait_healthy("b", 4).await;
    assert_eq!(
        app.server("hung").await["state"],
        "connecting",
        "the others were healthy while the hung one was still waiting"
    );
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 503, "not ready while a first attempt is pending");
    let s = app.wait_state("hung", "degraded").await;
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("No response to `initialize`"),
        "{s}"
    );
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[actix_web::test]
async fn degraded_keeps_tools_stale_for_stale_ttl_then_drops_them_and_recovers() {
    let up = TestUpstream::builder().tools(3).start().unwrap();
    let yaml = format!(
        "{LOCAL_WRITES}{}{}",
        FAST.replace("stale_ttl: 10m", "stale_ttl: 1s").replace(
            "backoff: { initial: 100ms, max: 1s }",
            "backoff: { initial: 30s, max: 60s }"
        ),
        servers_yaml(&[("s", http(&up.url()))])
    );
    let app = spawn_app(&yaml).await;
    app.wait_healthy("s", 3).await;

    up.set_fault(Some(Fault::Status(500)));
    assert_eq!(app.post("/v1/servers/s/refresh").await, 202);
    let s = app.wait_state("s", "degraded").await;
    assert_eq!(s["stale"], true);
    let (_, body) = app.get("/v1/tools").await;
    let tools = body["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 3, "last-known tools kept");
    assert!(tools.iter().all(|t| t["stale"] == true));

    app.wait_tools("dropped its stale tools", |b| {
        b["tools"].as_array().is_some_and(|t| t.is_empty())
    })
    .await;

    up.set_fault(None);
    assert_eq!(app.post("/v1/servers/s/refresh").await, 202);
    app.wait_healthy("s", 3).await;
    let body = app
        .wait_tools("had the tools back", |b| {
            b["tools"].as_array().is_some_and(|t| t.len() == 3)
        })
        .await;
    assert!(body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["stale"] == false));
    app.stop().await;
}

#[actix_web::test]
async fn allow_and_deny_filters_apply_per_server() {
    let up = TestUpstream::builder().tools(12).start().unwrap();
    let entry = format!(
        "{{ url: \"{}\", tools: {{ allow: [\"tool_1*\"], deny: [\"tool_11\"] }} }}",
        up.url()
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("f", entry)]))).await;
    app.wait_healthy("f", 2).await;
    assert_eq!(app.tool_names().await, ["f__tool_1", "f__tool_10"]);
    app.stop().await;
}

#[actix_web::test]
async fn polls_are_skipped_while_a_refresh_is_in_flight() {
    let up = TestUpstream::builder()
        .tools(1)
        .delay(Duration::from_millis(600))
        .delay_on(only_tools_list())
        .start()
        .unwrap();
    let yaml = format!(
        "{}{}",
        FAST.replace("poll_interval: 10m", "poll_interval: 100ms"),
        servers_yaml(&[("slow", http(&up.url()))])
    );
    let app = spawn_app(&yaml).await;
    app.wait_healthy("slow", 1).await;
    let before = up.requests("tools/list");
    // 15 polls fire in 1.5 s (100 ms, the shortest poll_interval allowed);
    // with one refresh of 600 ms in flight at a
    // time, only about one listing per 600 ms may start.
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    let during = up.requests("tools/list") - before;
    assert!(during <= 4, "{during} listings in 1.5 s: polls overlapped");
    assert!(during >= 1, "polling stopped altogether");
    app.stop().await;
}

#[actix_web::test]
async fn auto_falls_back_to_legacy_sse() {
    let up = TestUpstream::builder()
        .tools(3)
        .legacy_sse()
        .start()
        .unwrap();
    let entry = format!("{{ url: \"{}\", transport: auto }}", up.url());
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("legacy", entry)]))).await;
    let s = app.wait_healthy("legacy", 3).await;
    assert_eq!(s["negotiated_transport"], "sse");
    assert_eq!(s["transport"], "auto");
    app.stop().await;
}

#[actix_web::test]
async fn a_required_header_and_bearer_auth_are_sent() {
    let up = TestUpstream::builder()
        .tools(2)
        .required_header("Authorization", "Bearer s3cret-token")
        .start()
        .unwrap();
    let entry = format!(
        "{{ url: \"{}\", auth: {{ type: bearer, token: s3cret-token }}, headers: {{ X-Team: infra }} }}",
        up.url()
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("authd", entry)]))).await;
    app.wait_healthy("authd", 2).await;
    assert_eq!(up.last_header("x-team").as_deref(), Some("infra"));
    let (_, text) = app.get_text("/v1/servers").await;
    assert!(!text.contains("s3cret-token"), "a secret leaked: {text}");
    app.stop().await;
}

#[actix_web::test]
async fn refresh_of_an_unknown_server_is_404_and_metrics_show_state() {
    let up = TestUpstream::builder().tools(2).start().unwrap();
    let app = spawn_app(&format!(
        "{LOCAL_WRITES}{FAST}{}",
        servers_yaml(&[("m", http(&up.url()))])
    ))
    .await;
    app.wait_healthy("m", 2).await;
    assert_eq!(app.post("/v1/servers/nope/refresh").await, 404);
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "mcp_discovery_upstream_state{server=\"m\",state=\"healthy\"} 1",
        "mcp_discovery_upstream_state{server=\"m\",state=\"degraded\"} 0",
        "mcp_discovery_upstream_tools{server=\"m\"} 2",
        "mcp_discovery_refreshes_total{outcome=\"success\",server=\"m\"} 1",
        "mcp_discovery_catalog_tools 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("mcp_discovery_refresh_duration_seconds_bucket"));
    assert!(text.contains("mcp_discovery_http_requests_total{"));
    app.stop().await;
}
