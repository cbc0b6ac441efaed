//! One bad tool never hides the others: invalid tools left out of the
//! catalog and reported (`invalid_tools`, `mcp_discovery_invalid_tools`),
//! LLM-unsafe public names flagged, cross-server public-name clashes left
//! out on both sides, and server names that could clash refused.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{http, servers_yaml, spawn_app, spawn_app_file, DEADLINE, FAST, LOCAL_WRITES};
use crate::process::BIN;
use crate::support::upstream::TestUpstream;

fn tool(name: &str, schema: Value) -> Value {
    json!({"name": name, "description": "raw", "inputSchema": schema})
}

/// Good tools and bad ones side by side, as a real server might list them.
fn mixed_listing() -> Vec<Value> {
    vec![
        // The conformance scenario's valid tool and one of its invalid ones.
        tool(
            "valid_tool",
            json!({"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}),
        ),
        tool(
            "invalid_object_header",
            json!({"type": "object", "properties": {"data": {"type": "object", "x-mcp-header": "Data"}}}),
        ),
        json!({"description": "no name", "inputSchema": {}}),
        json!({"name": "string_schema", "inputSchema": "object"}),
        tool("twice", json!({"type": "object"})),
        tool("twice", json!({"type": "object", "properties": {}})),
        tool("has space", json!({"type": "object"})),
    ]
}

fn reasons(server: &Value) -> Vec<(Value, String)> {
    server["invalid_tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["reason"].as_str().unwrap().to_owned()))
        .collect()
}

#[actix_web::test]
async fn one_bad_tool_among_good_ones_is_left_out_and_reported() {
    let up = TestUpstream::builder()
        .tools(2)
        .raw_tools(mixed_listing())
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{LOCAL_WRITES}{FAST}{}",
        servers_yaml(&[("mixed", http(&up.url()))])
    ))
    .await;

    let s = app.wait_healthy("mixed", 4).await;
    assert_eq!(
        app.tool_names().await,
        [
            "mixed__tool_0",
            "mixed__tool_1",
            "mixed__valid_tool",
            "mixed__has space"
        ]
    );
    let got = reasons(&s);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0].0, "invalid_object_header");
    assert!(got[0].1.contains("x-mcp-header"), "{got:?}");
    assert_eq!(got[1].0, Value::Null);
    assert!(got[1].1.contains("no `name`"), "{got:?}");
    assert_eq!(got[2].0, "string_schema");
    assert!(got[2].1.contains("`inputSchema` is a string"), "{got:?}");
    for (name, reason) in &got[3..] {
        assert_eq!(name, "twice");
        assert!(reason.contains("2 different tools"), "{reason}");
    }
    let warnings = s["name_warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["name"], "mixed__has space");
    // The list view shows the same; the gauge counts them.
    let listed = app.servers().await;
    assert_eq!(listed[0]["invalid_tools"], s["invalid_tools"]);
    let series = "mcp_discovery_invalid_tools{server=\"mixed\"}";
    assert_eq!(app.metric(series).await, 5.0);
    let (_, detail) = app.get("/v1/servers/mixed").await;
    assert_eq!(detail["invalid_tools"], s["invalid_tools"]);
    assert_eq!(detail["tools"].as_array().unwrap().len(), 4);

    // Fixed upstream: nothing reported any more, the gauge back at 0.
    up.set_raw_tools(vec![tool("valid_tool", json!({"type": "object"}))]);
    assert_eq!(app.post("/v1/servers/mixed/refresh").await, 202);
    let s = app
        .wait_server("mixed", "clean", |s| {
            s["invalid_tools"].as_array().is_some_and(Vec::is_empty) && s["tool_count"] == 3
        })
        .await;
    assert_eq!(s["name_warnings"], json!([]));
    let deadline = Instant::now() + DEADLINE;
    while app.metric(series).await != 0.0 {
        assert!(Instant::now() < deadline, "the gauge stayed up");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_public_name_clash_leaves_both_out_and_reports_both() {
    // `a` + `_x` and `a_` + `x` are both `a___x` under `__`. `a_` is only
    // possible as a server registered while the separator was `::`: a
    // reload to `__` keeps it running with its settings.
    let one = TestUpstream::builder()
        .tools(0)
        .raw_tools(vec![
            tool("_x", json!({"type": "object"})),
            tool("ok", json!({"type": "object"})),
        ])
        .start()
        .unwrap();
    let two = TestUpstream::builder()
        .tools(0)
        .raw_tools(vec![tool("x", json!({"type": "object"}))])
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let file = |separator: &str| {
        format!(
            "{LOCAL_WRITES}{FAST}catalog: {{ separator: \"{separator}\" }}\n{}",
            servers_yaml(&[("a", http(&one.url()))])
        )
    };
    std::fs::write(&path, file("::")).unwrap();
    let app = spawn_app_file(&path).await;
    let mut res = app
        .client
        .post(format!("{}/v1/servers", app.base))
        .send_json(&json!({"name": "a_", "url": two.url()}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201, "{:?}", res.body().await);
    app.wait_healthy("a", 2).await;
    app.wait_healthy("a_", 1).await;

    std::fs::write(&path, file("__")).unwrap();
    let (status, body) = app.post_json("/v1/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let a = app
        .wait_server("a", "clashing", |s| {
            s["invalid_tools"].as_array().is_some_and(|v| !v.is_empty())
        })
        .await;
    let b = app
        .wait_server("a_", "clashing", |s| {
            s["invalid_tools"].as_array().is_some_and(|v| !v.is_empty())
        })
        .await;
    let (a, b) = (reasons(&a), reasons(&b));
    assert_eq!(a[0].0, "_x");
    assert!(
        a[0].1.contains("\"a___x\"") && a[0].1.contains("server \"a_\""),
        "{a:?}"
    );
    assert_eq!(b[0].0, "x");
    assert!(b[0].1.contains("server \"a\""), "{b:?}");
    let names = app
        .wait_tools("only the unclashed tool", |t| {
            t["tools"].as_array().is_some_and(|v| v.len() == 1)
        })
        .await;
    assert_eq!(names["tools"][0]["name"], "a__ok");
    assert_eq!(app.server("a").await["tool_count"], 1);
    assert_eq!(
        app.metric("mcp_discovery_invalid_tools{server=\"a\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("mcp_discovery_invalid_tools{server=\"a_\"}")
            .await,
        1.0
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_server_name_ending_with_the_start_of_the_separator_is_refused() {
    // At config load (the library and the binary's `check`)...
    let yaml = "servers:\n  a_: { url: \"http://127.0.0.1:1/mcp\" }\n";
    let err = discovery_config::load_str(yaml, discovery_config::Format::Yaml, None, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("servers.a_") && err.contains("Hint:"), "{err}");
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends with \"_\""));

    // ...and at registration: 422, nothing started.
    let app = spawn_app(&format!("{LOCAL_WRITES}{FAST}servers: {{}}\n")).await;
    let mut res = app
        .client
        .post(format!("{}/v1/servers", app.base))
        .send_json(&json!({"name": "b_", "url": "http://127.0.0.1:1/mcp"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);
    let body: Value = res.json().await.unwrap();
    assert!(body.to_string().contains("Hint:"), "{body}");
    assert!(app.servers().await.is_empty());
    app.stop().await;
}
