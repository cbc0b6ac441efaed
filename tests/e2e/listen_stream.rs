//! `subscriptions/listen`, the push stream of a 2026-07-28 server (issue 10,
//! item 4), against the Rust test upstream in its modern mode: one test per
//! row of the fault matrix, a list_changed over listen, the graceful end,
//! frames of other subscriptions, `push: false`.
//!
//! Every row first waits for the server to be `healthy` with all its tools,
//! then watches it with [`watch`], which fails on any sample where the
//! server is not `healthy` with those tools: a listen problem never changes
//! the discovery state (never `degraded`).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{namespaced, servers_yaml, spawn_app, TestApp, DEADLINE};
use crate::push_stream::watch;
use crate::support::upstream::{tool_names, ListenMode, ServerEra, TestUpstream};

/// How long a counter must stay still before a test calls it settled.
const SETTLE: Duration = Duration::from_millis(500);

const LISTEN: &str = "subscriptions/listen";

/// The `discovery:` section with this `backoff`, `request_timeout` and
/// `extra` lines (each `"  key: value\n"`).
fn discovery(backoff: &str, request_timeout: &str, extra: &str) -> String {
    format!(
        "\
discovery:
  poll_interval: 10m
  request_timeout: {request_timeout}
  connect_timeout: 2s
  backoff: {backoff}
  stale_ttl: 10m
{extra}"
    )
}

const FAST_BACKOFF: &str = "{ initial: 200ms, max: 1s }";
/// A backoff long enough that "reopened at once" is told from "with backoff".
const SLOW_BACKOFF: &str = "{ initial: 3s, max: 5s }";

fn modern(mode: ListenMode) -> TestUpstream {
    TestUpstream::builder()
        .era(ServerEra::Modern)
        .listen(mode)
        .start()
        .unwrap()
}

async fn app_for(discovery: &str, up: &TestUpstream, more: &str) -> TestApp {
    let entry = format!("{{ url: \"{}\"{more} }}", up.url());
    spawn_app(&format!("{discovery}{}", servers_yaml(&[("m", entry)]))).await
}

fn push_state(s: &Value) -> &str {
    s["push_stream"].as_str().unwrap_or("<missing>")
}

fn push_error(s: &Value) -> String {
    s["push_stream_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Polls until `count()` has not changed for [`SETTLE`] (the server healthy
/// throughout); returns it.
async fn settled(app: &TestApp, tools: usize, what: &str, count: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    let mut last = count();
    let mut since = Instant::now();
    loop {
        watch(app, "m", tools, what, |_| true).await;
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= SETTLE {
            return now;
        }
        assert!(Instant::now() < deadline, "{what} never settled: {now}");
    }
}

/// The value of the series `name{server="m"}` on `/metrics`.
async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains("server=\"m\""))
        })
        .and_then(|(_, value)| value.parse().ok())
}

async fn wait_connected(app: &TestApp, up: &TestUpstream, tools: usize) -> Value {
    watch(app, "m", tools, "listen connected", |s| {
        push_state(s) == "connected" && up.open_listen_streams() == 1
    })
    .await
}

/// As for the GET stream: the listen is the upstream's only connection.
#[actix_web::test]
async fn an_open_listen_is_the_upstreams_only_connection() {
    let up = modern(ListenMode::Open);
    let app = app_for(&discovery(FAST_BACKOFF, "5s", ""), &up, "").await;
    app.wait_healthy("m", 5).await;
    wait_connected(&app, &up, 5).await;
    crate::push_stream::assert_the_stream_is_the_only_connection(&up).await;
    app.stop().await;
}

// ------------------------------------------------- 405, 404, -32601

/// The server has no listen: `unsupported`, asked once, never again.
async fn assert_unsupported(mode: ListenMode) {
    let up = modern(mode);
    let app = app_for(&discovery(FAST_BACKOFF, "5s", ""), &up, "").await;
    app.wait_healthy("m", 5).await;
    let s = watch(&app, "m", 5, "push_stream unsupported", |s| {
        push_state(s) == "unsupported"
    })
    .await;
    assert_eq!(s["push_stream_error"], Value::Null, "{s:#}");
    assert_eq!(s["last_error"], Value::Null, "{s:#}");
    let listens = settled(&app, 5, "listen requests", || up.requests(LISTEN)).await;
    assert_eq!(listens, 1, "an unsupported listen is never retried");
    assert_eq!(
        metric(&app, "mcp_discovery_push_stream_connected").await,
        Some(0.0)
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_listen_answering_405_is_unsupported() {
    assert_unsupported(ListenMode::Status(405)).await;
}

#[actix_web::test]
async fn a_listen_answering_404_is_unsupported() {
    assert_unsupported(ListenMode::Status(404)).await;
}

#[actix_web::test]
async fn a_listen_answering_method_not_found_is_unsupported() {
    assert_unsupported(ListenMode::Unknown).await;
}

// --------------------------------- 500, reset, no ack, garbage, oversized

/// `failed` with an error containing `needle`, then reopened with backoff
/// (4 listens take at least 200 + 400 + 800 ms minus jitter), discovery
/// untouched.
async fn assert_failed_and_reopened(mode: ListenMode, request_timeout: &str, needle: &str) {
    assert_failed_and_reopened_with(mode, request_timeout, "", needle).await;
}

/// The reopenings after failures never refetch the tools; a reset (which
/// awc cannot tell from a clean close, see the test) may once.
fn refetches_allowed(mode: ListenMode) -> u64 {
    u64::from(matches!(mode, ListenMode::ResetAfter(_)))
}

async fn assert_failed_and_reopened_with(
    mode: ListenMode,
    request_timeout: &str,
    extra: &str,
    needle: &str,
) {
    let up = modern(mode);
    let app = app_for(&discovery(FAST_BACKOFF, request_timeout, extra), &up, "").await;
    app.wait_healthy("m", 5).await;
    let s = watch(&app, "m", 5, "push_stream failed", |s| {
        push_state(s) == "failed"
    })
    .await;
    let error = push_error(&s);
    assert!(error.contains(needle), "{needle:?} in {error:?}: {s:#}");
    assert_eq!(s["last_error"], Value::Null, "discovery is fine: {s:#}");
    let started = Instant::now();
    watch(&app, "m", 5, "3 more listens", |_| up.requests(LISTEN) >= 4).await;
    let spent = started.elapsed();
    assert!(
        spent >= Duration::from_millis(300),
        "3 reopenings in {spent:?}: not backing off"
    );
    assert!(
        metric(&app, "mcp_discovery_push_stream_reconnects_total")
            .await
            .is_some_and(|v| v >= 1.0),
        "reconnects are counted"
    );
    assert!(
        up.requests("tools/list") <= 1 + refetches_allowed(mode),
        "no refetch after a failure: {}",
        up.requests("tools/list")
    );
    eprintln!("{mode:?}: push_stream_error = {error:?}");
    app.stop().await;
}

#[actix_web::test]
async fn a_listen_answering_500_fails_and_is_reopened_with_backoff() {
    assert_failed_and_reopened(ListenMode::Status(500), "5s", "500").await;
}

/// The body breaks off mid-chunk, which awc reports as the end of the body,
/// as it does a clean close: the first one is reopened at once (a clean
/// close, see below), the next within a second is a failure with backoff.
/// A server resetting its listen streams thus never gets a hot loop.
#[actix_web::test]
async fn a_reset_listen_fails_and_is_reopened_with_backoff() {
    assert_failed_and_reopened(ListenMode::ResetAfter(Duration::from_millis(100)), "5s", "").await;
}

#[actix_web::test]
async fn a_listen_never_acknowledged_fails_after_the_request_timeout() {
    assert_failed_and_reopened(ListenMode::NoAck, "500ms", "not acknowledged").await;
}

#[actix_web::test]
async fn garbage_on_the_listen_stream_fails_it() {
    assert_failed_and_reopened(ListenMode::Garbage, "5s", "").await;
}

#[actix_web::test]
async fn an_oversized_listen_frame_fails_the_stream() {
    assert_failed_and_reopened_with(
        ListenMode::OversizedEvent(1024 * 1024),
        "5s",
        "  max_response_bytes: 64KiB\n",
        "limit",
    )
    .await;
}

#[actix_web::test]
async fn a_silent_listen_is_reopened_by_the_idle_watchdog() {
    let up = modern(ListenMode::Silent);
    let app = app_for(
        &discovery(FAST_BACKOFF, "5s", "  push_idle_timeout: 500ms\n"),
        &up,
        "",
    )
    .await;
    app.wait_healthy("m", 5).await;
    // Acknowledged, so connected first.
    watch(&app, "m", 5, "connected", |s| push_state(s) == "connected").await;
    let first = Instant::now();
    let s = watch(&app, "m", 5, "an idle failure", |s| {
        push_state(s) == "failed" && push_error(s).contains("idle")
    })
    .await;
    assert_eq!(s["last_error"], Value::Null);
    watch(&app, "m", 5, "a second listen", |_| {
        up.requests(LISTEN) >= 2
    })
    .await;
    assert!(
        first.elapsed() >= Duration::from_millis(400),
        "reopened after {:?}, before the idle timeout",
        first.elapsed()
    );
    app.stop().await;
}

// ------------------------------------------------------- graceful end

/// A graceful end reopens at once (well before the 3 s backoff), and the
/// tools are refetched once the new subscription is acknowledged.
async fn assert_reopened_at_once(with_result: bool) {
    let up = modern(ListenMode::Open);
    let app = app_for(&discovery(SLOW_BACKOFF, "5s", ""), &up, "").await;
    app.wait_healthy("m", 5).await;
    wait_connected(&app, &up, 5).await;
    let lists = up.requests("tools/list");
    // A change the old subscription never delivers.
    up.set_tools(6);
    let ended = Instant::now();
    up.end_listen_streams(with_result);
    app.wait_healthy("m", 6).await;
    let took = ended.elapsed();
    assert!(took < Duration::from_secs(2), "refetched after {took:?}");
    assert_eq!(up.requests(LISTEN), 2);
    assert!(up.requests("tools/list") > lists);
    assert_eq!(app.tool_names().await, namespaced("m", &tool_names(6)));
    let s = wait_connected(&app, &up, 6).await;
    assert_eq!(s["push_stream_error"], Value::Null, "{s:#}");
    assert_eq!(
        metric(&app, "mcp_discovery_push_stream_reconnects_total").await,
        Some(0.0),
        "a graceful end is not a failure"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_completed_listen_is_reopened_at_once_then_refetched() {
    assert_reopened_at_once(true).await;
}

#[actix_web::test]
async fn a_cleanly_closed_listen_is_reopened_at_once_then_refetched() {
    assert_reopened_at_once(false).await;
}

// -------------------------------------------------------- list_changed

#[actix_web::test]
async fn list_changed_over_listen_brings_a_new_tool_promptly() {
    let up = TestUpstream::builder()
        .era(ServerEra::Modern)
        .listen(ListenMode::Open)
        .prompts(1)
        .start()
        .unwrap();
    let app = app_for(&discovery(FAST_BACKOFF, "5s", ""), &up, "").await;
    app.wait_healthy("m", 5).await;
    let s = wait_connected(&app, &up, 5).await;
    assert_eq!(s["push_stream_error"], Value::Null, "{s:#}");
    assert_eq!(
        metric(&app, "mcp_discovery_push_stream_connected").await,
        Some(1.0)
    );

    // The one listen asked for what the server advertised, on the strict
    // modern wire (the upstream refuses a request without `_meta` and the
    // headers).
    let params = up.listen_requests();
    assert_eq!(params.len(), 1);
    let wanted = &params[0]["notifications"];
    assert_eq!(wanted["toolsListChanged"], true, "{wanted}");
    assert_eq!(wanted["promptsListChanged"], true, "{wanted}");
    assert_eq!(wanted["resourcesListChanged"], Value::Null, "{wanted}");
    assert_eq!(
        params[0]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    let record = up
        .modern_log()
        .into_iter()
        .find(|r| r.method == LISTEN)
        .unwrap();
    assert_eq!(record.status, 200);
    let header = |n: &str| {
        record
            .headers
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("mcp-method").as_deref(), Some(LISTEN));
    assert_eq!(header("mcp-session-id"), None);
    assert_eq!(header("last-event-id"), None);

    let lists = up.requests("tools/list");
    up.set_tools(6);
    let sent = Instant::now();
    assert_eq!(up.notify_tools_changed(), 1);
    app.wait_tools("with m__tool_5", |body| {
        body["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "m__tool_5"))
    })
    .await;
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    eprintln!("list_changed over listen to the new tool: {took:?}");
    assert!(up.requests("tools/list") > lists);
    let s = watch(&app, "m", 6, "still connected", |s| {
        push_state(s) == "connected"
    })
    .await;
    assert_eq!(s["push_stream_error"], Value::Null);
    assert!(metric(&app, "mcp_discovery_list_changed_total")
        .await
        .is_some_and(|v| v >= 1.0));
    assert_eq!(up.requests(LISTEN), 1, "one listen, never reopened");
    app.stop().await;
}

#[actix_web::test]
async fn untagged_or_wrongly_tagged_frames_are_ignored() {
    let up = modern(ListenMode::Open);
    let app = app_for(&discovery(FAST_BACKOFF, "5s", ""), &up, "").await;
    app.wait_healthy("m", 5).await;
    wait_connected(&app, &up, 5).await;
    let lists = up.requests("tools/list");
    up.set_tools(6);
    assert_eq!(up.notify_listen_mistagged(), 1);
    let after = settled(&app, 5, "tools/list", || up.requests("tools/list")).await;
    assert_eq!(after, lists, "a frame of another subscription refreshed");
    assert_eq!(
        metric(&app, "mcp_discovery_list_changed_total").await,
        Some(0.0)
    );
    // The stream itself works: a tagged one does refresh.
    assert_eq!(up.notify_tools_changed(), 1);
    app.wait_healthy("m", 6).await;
    let s = wait_connected(&app, &up, 6).await;
    assert_eq!(s["push_stream_error"], Value::Null);
    app.stop().await;
}

// ------------------------------------------------------------ push: false

#[actix_web::test]
async fn push_false_sends_no_listen() {
    let up = modern(ListenMode::Open);
    let app = app_for(&discovery(FAST_BACKOFF, "5s", ""), &up, ", push: false").await;
    app.wait_healthy("m", 5).await;
    let s = watch(&app, "m", 5, "push_stream disabled", |s| {
        push_state(s) == "disabled"
    })
    .await;
    assert_eq!(s["push_stream_error"], Value::Null);
    // Discovery is done (healthy): a listen would have been sent by now.
    settled(&app, 5, "requests", || up.http_requests()).await;
    assert_eq!(up.requests(LISTEN), 0);
    assert_eq!(up.open_listen_streams(), 0);
    app.stop().await;
}

// ------------------------------------------------------------------ stdio

fn stdio_entry(mode: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/modern_listen_stdio.py"
    );
    format!("{{ command: python3, args: [\"{script}\", \"--listen\", \"{mode}\"] }}")
}

#[actix_web::test]
async fn a_modern_stdio_server_listens_on_the_shared_channel() {
    let app = spawn_app(&format!(
        "{}{}",
        discovery(FAST_BACKOFF, "5s", ""),
        servers_yaml(&[("m", stdio_entry("open"))])
    ))
    .await;
    let s = app.wait_healthy("m", 2).await;
    assert_eq!(s["protocol_version"], "2026-07-28", "{s:#}");
    // 300 ms after the listen, a tagged list_changed brings a third tool
    // (poll_interval is 10m).
    let s = app.wait_healthy("m", 3).await;
    assert_eq!(push_state(&s), "connected", "{s:#}");
    assert_eq!(s["push_stream_error"], Value::Null);
    assert!(metric(&app, "mcp_discovery_list_changed_total")
        .await
        .is_some_and(|v| v >= 1.0));
    app.stop().await;
}

#[actix_web::test]
async fn a_modern_stdio_server_without_listen_is_unsupported() {
    let app = spawn_app(&format!(
        "{}{}",
        discovery(FAST_BACKOFF, "5s", ""),
        servers_yaml(&[("m", stdio_entry("unknown"))])
    ))
    .await;
    app.wait_healthy("m", 2).await;
    let s = watch(&app, "m", 2, "push_stream unsupported", |s| {
        push_state(s) == "unsupported"
    })
    .await;
    assert_eq!(s["push_stream_error"], Value::Null);
    app.stop().await;
}

// ------------------------------------------------------- never degraded

/// One modern server per failing row of the matrix, in one engine: until
/// each has failed and reopened its listen at least three times, every
/// sample shows all of them `healthy` with their 5 tools and no
/// `last_error`: a listen's failure is a message, never a cancellation.
#[actix_web::test]
async fn failing_listens_never_degrade_their_servers() {
    let modes = [
        ListenMode::Status(500),
        ListenMode::ResetAfter(Duration::from_millis(50)),
        ListenMode::NoAck,
        ListenMode::Silent,
        ListenMode::Garbage,
        ListenMode::OversizedEvent(256 * 1024),
    ];
    let ups: Vec<TestUpstream> = modes.iter().map(|m| modern(*m)).collect();
    let names: Vec<String> = (0..ups.len()).map(|i| format!("f{i}")).collect();
    let entries: Vec<(&str, String)> = names
        .iter()
        .zip(&ups)
        .map(|(n, up)| (n.as_str(), format!("{{ url: \"{}\" }}", up.url())))
        .collect();
    let app = spawn_app(&format!(
        "{}{}",
        discovery(
            "{ initial: 100ms, max: 300ms }",
            "500ms",
            "  push_idle_timeout: 300ms\n  max_response_bytes: 64KiB\n"
        ),
        servers_yaml(&entries)
    ))
    .await;
    for n in &names {
        app.wait_healthy(n, 5).await;
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        for s in app.servers().await {
            assert!(
                s["state"] == "healthy" && s["tool_count"] == 5 && s["last_error"].is_null(),
                "a listen fault reached discovery: {s:#}"
            );
            assert_ne!(push_state(&s), "unsupported", "{s:#}");
        }
        if ups.iter().all(|up| up.requests(LISTEN) >= 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listens: {:?}",
            ups.iter().map(|u| u.requests(LISTEN)).collect::<Vec<_>>()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    for up in &ups {
        assert_eq!(up.requests("tools/list"), 1 + refetches_allowed_any(up));
    }
    app.stop().await;
}

/// The reset row may refetch once (see `a_reset_listen_...`).
fn refetches_allowed_any(up: &TestUpstream) -> u64 {
    refetches_allowed(up.behavior().listen)
}
