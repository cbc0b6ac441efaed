//! MCP 2026-07-28 upstreams (issue 10, items 1, 2, 7): era negotiation per
//! upstream, the strict modern wire (`_meta` and headers on every request),
//! the fallback each way, `protocol` pinned, and `probe`.

use std::time::Duration;

use crate::helpers::{servers_yaml, spawn_app, DEADLINE, FAST, LOCAL_WRITES};
use crate::support::upstream::{ServerEra, TestUpstream};

fn entry(url: &str, extra: &str) -> String {
    format!("{{ url: \"{url}\"{extra} }}")
}

/// Every modern request of the log passed the strict checks and carried
/// what the spec asks; no session id, ever.
fn assert_strict_wire(up: &TestUpstream) {
    let log = up.modern_log();
    assert!(!log.is_empty());
    for r in &log {
        assert_eq!(r.status, 200, "{r:?}");
        let header = |n: &str| {
            r.headers
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("mcp-protocol-version").as_deref(),
            Some("2026-07-28")
        );
        assert_eq!(header("mcp-method").as_deref(), Some(r.method.as_str()));
        assert_eq!(header("mcp-session-id"), None);
        assert_eq!(
            r.meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert!(r.meta["io.modelcontextprotocol/clientCapabilities"].is_object());
        assert_eq!(
            r.meta["io.modelcontextprotocol/clientInfo"]["name"],
            "mcp-discovery"
        );
    }
}

#[actix_web::test]
async fn modern_only_http_server_is_healthy_on_the_strict_wire() {
    let up = TestUpstream::builder()
        .tools(4)
        .era(ServerEra::Modern)
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("m", entry(&up.url(), ""))])
    ))
    .await;
    let s = app.wait_healthy("m", 4).await;
    assert_eq!(s["protocol_version"], "2026-07-28");
    assert_eq!(s["negotiated_transport"], "streamable-http");
    // Its push child is `subscriptions/listen`, which this upstream refuses
    // (-32601): unsupported, once the answer is in.
    app.wait_server("m", "push unsupported", |s| {
        s["push_stream"] == "unsupported"
    })
    .await;
    assert_eq!(up.requests("initialize"), 0);
    assert_eq!(up.requests("notifications/initialized"), 0);
    assert_strict_wire(&up);
    let methods: Vec<String> = up.modern_log().into_iter().map(|r| r.method).collect();
    assert_eq!(methods[..2], ["server/discover", "tools/list"]);
    app.stop().await;
    assert_eq!(up.delete_requests(), 0, "no DELETE: there is no session");
}

#[actix_web::test]
async fn a_2025_server_costs_exactly_one_probe_before_initialize() {
    let up = TestUpstream::builder().tools(3).start().unwrap();
    let app = spawn_app(&format!(
        "{FAST}{LOCAL_WRITES}{}",
        servers_yaml(&[("old", entry(&up.url(), ""))])
    ))
    .await;
    let s = app.wait_healthy("old", 3).await;
    assert_eq!(s["protocol_version"], "2025-11-25");
    assert_eq!(up.requests("server/discover"), 1);
    assert_eq!(up.requests("initialize"), 1);
    // The verdict is kept: a refresh does not probe again.
    assert_eq!(app.post("/v1/servers/old/refresh").await, 202);
    let deadline = std::time::Instant::now() + DEADLINE;
    while up.requests("tools/list") < 2 && std::time::Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.requests("tools/list"), 2);
    assert_eq!(up.requests("server/discover"), 1);
    app.stop().await;
}

#[actix_web::test]
async fn a_dual_era_server_is_spoken_to_in_2026() {
    let up = TestUpstream::builder()
        .tools(2)
        .era(ServerEra::Dual)
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("d", entry(&up.url(), ""))])
    ))
    .await;
    let s = app.wait_healthy("d", 2).await;
    assert_eq!(s["protocol_version"], "2026-07-28");
    assert_eq!(up.requests("initialize"), 0);
    assert_strict_wire(&up);
    app.stop().await;
}

#[actix_web::test]
async fn unsupported_version_with_only_2025_revisions_falls_back_to_initialize() {
    let up = TestUpstream::builder()
        .tools(2)
        .era(ServerEra::Dual)
        .start()
        .unwrap();
    up.update(|b| b.modern_versions = vec!["2025-11-25".into()]);
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("d", entry(&up.url(), ""))])
    ))
    .await;
    let s = app.wait_healthy("d", 2).await;
    assert_eq!(s["protocol_version"], "2025-11-25");
    let log = up.modern_log();
    assert_eq!(log.len(), 1, "one probe, answered -32022: {log:?}");
    assert_eq!(log[0].status, 400);
    assert_eq!(up.requests("initialize"), 1);
    app.stop().await;
}

#[actix_web::test]
async fn no_mutual_version_is_a_clear_error() {
    let up = TestUpstream::builder()
        .era(ServerEra::Modern)
        .start()
        .unwrap();
    up.update(|b| b.modern_versions = vec!["2099-01-01".into()]);
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("x", entry(&up.url(), ""))])
    ))
    .await;
    let s = app.wait_state("x", "degraded").await;
    let error = s["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("speaks no MCP revision this client does (it supports: 2099-01-01)"),
        "{error}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_broken_modern_side_is_probed_again_and_2025_takes_over() {
    let up = TestUpstream::builder()
        .tools(2)
        .era(ServerEra::Dual)
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{LOCAL_WRITES}{}",
        servers_yaml(&[("d", entry(&up.url(), ""))])
    ))
    .await;
    let s = app.wait_healthy("d", 2).await;
    assert_eq!(s["protocol_version"], "2026-07-28");
    up.update(|b| b.modern_broken = true);
    assert_eq!(app.post("/v1/servers/d/refresh").await, 202);
    let s = app
        .wait_server("d", "the 2025 side after a re-probe", |s| {
            s["state"] == "healthy" && s["protocol_version"] == "2025-11-25"
        })
        .await;
    assert_eq!(s["state"], "healthy");
    assert_eq!(app.tool_names().await.len(), 2);
    assert!(up.requests("server/discover") >= 2, "probed again");
    assert_eq!(up.requests("initialize"), 1);
    app.stop().await;
}

#[actix_web::test]
async fn protocol_pinned_to_2025_never_probes() {
    let up = TestUpstream::builder()
        .tools(2)
        .era(ServerEra::Dual)
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("p", entry(&up.url(), ", protocol: \"2025-06-18\""))])
    ))
    .await;
    let s = app.wait_healthy("p", 2).await;
    assert_eq!(s["protocol_version"], "2025-06-18");
    assert_eq!(up.requests("server/discover"), 0);
    assert_eq!(
        up.last_initialize_params().unwrap()["protocolVersion"],
        "2025-06-18"
    );
    app.stop().await;
}

#[actix_web::test]
async fn protocol_pinned_to_2026_never_falls_back() {
    let old = TestUpstream::builder().tools(2).start().unwrap();
    let new = TestUpstream::builder()
        .tools(2)
        .era(ServerEra::Dual)
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{}{}",
        FAST.replace("discovery:\n", "discovery:\n  protocol: \"2026-07-28\"\n"),
        servers_yaml(&[
            ("old", entry(&old.url(), "")),
            ("new", entry(&new.url(), "")),
        ])
    ))
    .await;
    let s = app.wait_healthy("new", 2).await;
    assert_eq!(s["protocol_version"], "2026-07-28");
    let s = app.wait_state("old", "degraded").await;
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("server/discover"),
        "{s}"
    );
    assert_eq!(old.requests("initialize"), 0, "pinned: no handshake");
    app.stop().await;
}

/// A stdio server speaking only 2026-07-28 (or both eras, with `--dual`).
fn modern_stdio(dual: bool) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/modern_stdio_server.py"
    );
    let args = if dual {
        format!("[\"{script}\", \"--dual\"]")
    } else {
        format!("[\"{script}\"]")
    };
    format!("{{ command: python3, args: {args} }}")
}

#[actix_web::test]
async fn modern_only_stdio_server_is_healthy() {
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("ms", modern_stdio(false)), ("ds", modern_stdio(true))])
    ))
    .await;
    let s = app.wait_healthy("ms", 2).await;
    assert_eq!(s["protocol_version"], "2026-07-28");
    assert_eq!(s["negotiated_transport"], "stdio");
    let s = app.wait_healthy("ds", 2).await;
    assert_eq!(s["protocol_version"], "2026-07-28");
    app.stop().await;
}

fn probe(args: Vec<String>) -> std::process::Output {
    std::process::Command::new(crate::process::BIN)
        .args(args)
        .output()
        .unwrap()
}

#[actix_web::test]
async fn probe_prints_the_negotiated_era_and_protocol_pins_one() {
    let up = TestUpstream::builder()
        .tools(2)
        .era(ServerEra::Dual)
        .start()
        .unwrap();
    let url = up.url();
    let args = vec!["probe".to_owned(), url.clone(), "--json".to_owned()];
    let out = actix_web::rt::task::spawn_blocking(move || probe(args))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["protocol_version"], "2026-07-28");
    assert_eq!(v["era"], "modern");
    assert_eq!(v["tools"].as_array().map(Vec::len), Some(2));

    let args = vec![
        "probe".to_owned(),
        url,
        "--protocol".to_owned(),
        "2025-06-18".to_owned(),
    ];
    let out = actix_web::rt::task::spawn_blocking(move || probe(args))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Protocol:      2025-06-18"), "{text}");
    assert!(
        text.contains("Era:           legacy (initialize handshake)"),
        "{text}"
    );

    let out = probe(vec![
        "probe".into(),
        up.url(),
        "--protocol".into(),
        "2030-01-01".into(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use auto or one of 2026-07-28"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
