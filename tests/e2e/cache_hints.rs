//! Cache hints of 2026-07-28 servers (issue 10, items 3 and 7): a positive
//! `ttlMs` brings the next refresh forward (bounded by
//! `discovery.min_refresh` and `poll_interval`), `ttlMs: 0` changes nothing,
//! an unknown `resultType` is a clear error, `/v1/servers` shows `cache`,
//! `probe` prints the hints and the invalid tools; and a 2025 stdio server
//! that exits on `server/discover` is still discovered.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::helpers::{servers_yaml, spawn_app, DEADLINE, FAST, LOCAL_WRITES};
use crate::support::upstream::{Methods, ServerEra, TestUpstream, UpstreamBehavior};

fn entry(url: &str, extra: &str) -> String {
    format!("{{ url: \"{url}\"{extra} }}")
}

fn modern(ttl_ms: u64, cache_scope: &str) -> TestUpstream {
    TestUpstream::builder()
        .behavior(UpstreamBehavior {
            tools: 2,
            era: ServerEra::Modern,
            ttl_ms,
            cache_scope: cache_scope.to_owned(),
            ..UpstreamBehavior::default()
        })
        .start()
        .unwrap()
}

/// Waits `window` (a bounded window in which something must NOT happen
/// too often: there is no state to poll for).
async fn hold(window: Duration) {
    actix_rt::time::sleep(window).await;
}

#[actix_web::test]
async fn a_positive_ttl_brings_the_next_refresh_forward() {
    let up = modern(1500, "public");
    // FAST: poll_interval 10m, so only the ttl can cause a second listing.
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("m", entry(&up.url(), ""))])
    ))
    .await;
    let s = app.wait_healthy("m", 2).await;
    let healthy = Instant::now();
    assert_eq!(s["cache"]["ttl_ms"], 1500, "{s}");
    assert_eq!(s["cache"]["scope"], "public", "{s}");
    assert!(s["cache"]["fresh_until"].is_string(), "{s}");
    let deadline = Instant::now() + DEADLINE;
    while up.requests("tools/list") < 2 {
        assert!(Instant::now() < deadline, "no ttl-driven refresh");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let after = healthy.elapsed();
    // At the ttl minus at most 10% jitter: not before 1.35 s (less the
    // time between the listing and our first look at the view).
    assert!(after >= Duration::from_millis(1100), "too soon: {after:?}");
    assert!(after < Duration::from_secs(5), "too late: {after:?}");
    // Bounded above: refreshes at about 1.4, 2.8, 4.2 s after the first.
    let window_end = healthy + Duration::from_millis(4000);
    hold(window_end.saturating_duration_since(Instant::now())).await;
    let lists = up.requests("tools/list");
    assert!((2..=5).contains(&lists), "{lists} listings in ~4 s");
    assert_eq!(up.requests("server/discover"), 1, "the session is kept");
    app.stop().await;
}

#[actix_web::test]
async fn a_zero_ttl_leaves_poll_interval_in_charge() {
    let up = modern(0, "private");
    let old = TestUpstream::builder().tools(1).start().unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            ("m", entry(&up.url(), ", min_refresh: 100ms")),
            ("old", entry(&old.url(), "")),
        ])
    ))
    .await;
    let s = app.wait_healthy("m", 2).await;
    assert_eq!(
        s["cache"],
        serde_json::json!({"ttl_ms": 0, "scope": "private", "fresh_until": null}),
        "{s}"
    );
    let s = app.wait_healthy("old", 1).await;
    assert!(s["cache"].is_null(), "a 2025 server sends no hints: {s}");
    hold(Duration::from_millis(2500)).await;
    assert_eq!(up.requests("tools/list"), 1, "polled more often than 10m");
    assert_eq!(old.requests("tools/list"), 1);
    app.stop().await;
}

#[actix_web::test]
async fn min_refresh_is_the_floor_of_a_tiny_ttl() {
    let up = modern(10, "private");
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("m", entry(&up.url(), ", min_refresh: 1s"))])
    ))
    .await;
    app.wait_healthy("m", 2).await;
    let healthy = Instant::now();
    let deadline = Instant::now() + DEADLINE;
    while up.requests("tools/list") < 2 {
        assert!(Instant::now() < deadline, "no ttl-driven refresh");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        healthy.elapsed() >= Duration::from_millis(800),
        "sooner than the floor: {:?}",
        healthy.elapsed()
    );
    hold(Duration::from_millis(3000).saturating_sub(healthy.elapsed())).await;
    // 1 s to 1.1 s apart: at most 4 listings in ~3 s (a 10 ms ttl
    // unbounded would be hundreds).
    let lists = up.requests("tools/list");
    assert!((2..=5).contains(&lists), "{lists} listings in ~3 s");
    app.stop().await;
}

#[actix_web::test]
async fn an_unknown_result_type_is_a_clear_error() {
    let listing = TestUpstream::builder()
        .behavior(UpstreamBehavior {
            era: ServerEra::Modern,
            result_type: "input_required".to_owned(),
            result_type_on: Methods::only(["tools/list"]),
            ..UpstreamBehavior::default()
        })
        .start()
        .unwrap();
    let discover = TestUpstream::builder()
        .behavior(UpstreamBehavior {
            era: ServerEra::Modern,
            result_type: "bogus".to_owned(),
            result_type_on: Methods::only(["server/discover"]),
            ..UpstreamBehavior::default()
        })
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            ("l", entry(&listing.url(), "")),
            ("d", entry(&discover.url(), "")),
        ])
    ))
    .await;
    let s = app.wait_state("l", "degraded").await;
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("tools/list") && error.contains("unknown resultType `input_required`"),
        "{error}"
    );
    let s = app.wait_state("d", "degraded").await;
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("server/discover") && error.contains("unknown resultType `bogus`"),
        "{error}"
    );
    assert_eq!(
        discover.requests("initialize"),
        0,
        "a DiscoverResult is a modern server: no 2025 fallback"
    );
    app.stop().await;
}

fn fixture_entry(script: &str, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let mut all = vec![format!("\"{}\"", script.display())];
    all.extend(args.iter().map(|a| format!("\"{a}\"")));
    format!("{{ command: python3, args: [{}] }}", all.join(", "))
}

#[actix_web::test]
async fn a_2025_stdio_server_that_exits_on_server_discover_is_discovered() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let starts_arg = starts.display().to_string();
    let app = spawn_app(&format!(
        "{FAST}{LOCAL_WRITES}{}",
        servers_yaml(&[(
            "crash",
            fixture_entry(
                "tests/fixtures/crash_on_discover.py",
                &["--tools", "3", "--starts", &starts_arg]
            )
        )])
    ))
    .await;
    let s = app.wait_healthy("crash", 3).await;
    assert_eq!(s["protocol_version"], "2025-06-18", "{s}");
    assert!(s["cache"].is_null(), "{s}");
    let count = || std::fs::read_to_string(&starts).unwrap().lines().count();
    assert_eq!(count(), 2, "one child for the probe, one for the handshake");
    // A refresh keeps the session: no new child, no new probe.
    let before = s["last_success_at"].clone();
    assert_eq!(app.post("/v1/servers/crash/refresh").await, 202);
    app.wait_server("crash", "refreshed", |s| {
        s["state"] == "healthy" && s["last_success_at"] != before
    })
    .await;
    assert_eq!(count(), 2);
    app.stop().await;
}

fn probe(args: Vec<String>) -> std::process::Output {
    std::process::Command::new(crate::process::BIN)
        .args(args)
        .output()
        .unwrap()
}

#[actix_web::test]
async fn probe_prints_cache_hints_and_invalid_tools() {
    let up = TestUpstream::builder()
        .behavior(UpstreamBehavior {
            tools: 2,
            era: ServerEra::Modern,
            ttl_ms: 1500,
            cache_scope: "public".to_owned(),
            raw_tools: vec![
                serde_json::json!({"name": "broken", "inputSchema": "not an object"}),
                serde_json::json!({"name": "with space", "inputSchema": {"type": "object"}}),
            ],
            ..UpstreamBehavior::default()
        })
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
    assert_eq!(
        v["cache"]["listings"],
        serde_json::json!({"ttl_ms": 1500, "scope": "public"})
    );
    assert_eq!(v["cache"]["discover"]["ttl_ms"], 1500);
    assert_eq!(v["invalid_tools"][0]["name"], "broken", "{v}");
    assert_eq!(v["name_warnings"][0]["name"], "with space", "{v}");
    assert_eq!(v["tools"].as_array().map(Vec::len), Some(4));

    let args = vec!["probe".to_owned(), url];
    let out = actix_web::rt::task::spawn_blocking(move || probe(args))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Cache:         discover ttl 1500 ms, public; listings ttl 1500 ms, public"),
        "{text}"
    );
    assert!(text.contains("Tools (3):"), "{text}");
    assert!(
        text.contains("Invalid tools, left out (1):\n  broken: "),
        "{text}"
    );
    assert!(
        text.contains("Name warnings (1):\n  with space: "),
        "{text}"
    );
}
