//! The push stream (the optional GET SSE stream of a Streamable HTTP session)
//! against the Rust test upstream, one test per row of issue 3's fault
//! matrix, the field-bug regression, and interop with the official peers.
//!
//! Every row first waits for the server to be `healthy` with all its tools,
//! then watches it with [`watch`], which fails on any sample where the
//! server is not `healthy` with those tools: a push-stream problem never
//! changes the discovery state.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{namespaced, servers_yaml, spawn_app, TestApp, DEADLINE, LOCAL_WRITES};
use crate::support::peers::{self, EverythingTransport, PythonTransport};
use crate::support::upstream::{
    tool_names, GetStream, TestUpstream, UpstreamBehavior, UpstreamFarm, UpstreamHandle,
};

/// How long the counters must stay still before a test calls them settled.
const SETTLE: Duration = Duration::from_millis(500);

/// The `discovery:` section: FAST's settings with this `backoff` and `extra`
/// lines (each `"  key: value\n"`).
fn discovery(backoff: &str, extra: &str) -> String {
    format!(
        "\
discovery:
  poll_interval: 10m
  request_timeout: 5s
  connect_timeout: 2s
  backoff: {backoff}
  stale_ttl: 10m
{extra}"
    )
}

/// FAST's backoff.
const FAST_BACKOFF: &str = "{ initial: 100ms, max: 1s }";

/// A Streamable HTTP entry for `up`, with `more` flow-map entries appended.
fn entry(up: &UpstreamHandle, more: &str) -> String {
    format!(
        "{{ url: \"{}\", transport: streamable-http{more} }}",
        up.url()
    )
}

async fn app_with(discovery: &str, servers: &[(&str, String)]) -> TestApp {
    spawn_app(&format!("{discovery}{}", servers_yaml(servers))).await
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

/// Until `name`'s push stream is `connected` and the upstream holds exactly
/// one open stream (the server healthy with `tools` tools throughout).
async fn wait_push_connected(app: &TestApp, name: &str, tools: usize, up: &TestUpstream) -> Value {
    watch(app, name, tools, "push_stream connected", |s| {
        push_state(s) == "connected" && up.open_push_streams() == 1
    })
    .await
}

/// Polls `/v1/servers` until `cond(server)` holds, asserting at every sample
/// that `name` is still `healthy` with `tools` tools (the listen-stream
/// tests use it too).
pub(crate) async fn watch(
    app: &TestApp,
    name: &str,
    tools: usize,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = app.server(name).await;
        assert!(
            s["state"] == "healthy" && s["tool_count"] == tools,
            "{name} left healthy with {tools} tools while waiting for {what}: {s:#}"
        );
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {what}: {s:#}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `count()` has not changed for [`SETTLE`]; returns it.
async fn settled(what: &str, count: impl Fn() -> u64) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    let mut last = count();
    let mut since = Instant::now();
    loop {
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

/// The value of the series `name{server="<server>"}` on `/metrics`.
async fn metric(app: &TestApp, name: &str, server: &str) -> Option<f64> {
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    let label = format!("server=\"{server}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(&label))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// The `/metrics` lines about `server`, for failure messages.
async fn metric_lines(app: &TestApp, server: &str) -> String {
    let (_, text) = app.get_text("/metrics").await;
    let label = format!("server=\"{server}\"");
    text.lines()
        .filter(|l| l.contains(&label))
        .collect::<Vec<_>>()
        .join("\n")
}

// -------------------------------------------------------------- 405

#[actix_web::test]
async fn a_405_get_is_unsupported_and_never_retried() {
    let refuse = TestUpstream::start_default().unwrap();
    let failing = TestUpstream::builder()
        .get_stream(GetStream::Status(500))
        .start()
        .unwrap();
    let app = app_with(
        &discovery(FAST_BACKOFF, ""),
        &[
            ("refuse", entry(&refuse, ", headers: { X-Team: infra }")),
            ("failing", entry(&failing, "")),
        ],
    )
    .await;
    app.wait_healthy("refuse", 5).await;
    let s = watch(&app, "refuse", 5, "push_stream unsupported", |s| {
        push_state(s) == "unsupported"
    })
    .await;
    assert_eq!(s["last_error"], Value::Null);

    // The neighbour's push stream retries with the same backoff: once it has
    // been through a few rounds, the 405 one had every chance to retry.
    app.wait_healthy("failing", 5).await;
    watch(&app, "failing", 5, "3 GETs", |_| {
        failing.get_requests() >= 3
    })
    .await;
    let s = watch(&app, "refuse", 5, "still unsupported", |s| {
        push_state(s) == "unsupported"
    })
    .await;
    assert_eq!(refuse.get_requests(), 1, "a 405 is never retried");
    assert_eq!(refuse.requests("initialize"), 1);
    assert!(s["push_stream"] == "unsupported", "{s:#}");

    // The one GET was a proper push-stream request.
    let get = &refuse.get_log()[0];
    assert!(
        get.accept
            .as_deref()
            .is_some_and(|a| a.contains("text/event-stream")),
        "{get:?}"
    );
    assert!(get.session_live, "the live session id: {get:?}");
    assert_eq!(get.protocol_version.as_deref(), Some("2025-11-25"));
    assert_eq!(get.header("x-team").as_deref(), Some("infra"), "{get:?}");
    assert_eq!(get.last_event_id, None);
    app.stop().await;
}

// ---------------------------------------------------- 500, 403, 404

/// A GET answering `status`: `failed`, retried with backoff, never a hot loop.
async fn assert_failed_and_retried_with_backoff(status: u16, reinitialize_allowed: bool) {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Status(status))
        .start()
        .unwrap();
    let app = app_with(
        &discovery("{ initial: 200ms, max: 1s }", ""),
        &[("s", entry(&up, ""))],
    )
    .await;
    app.wait_healthy("s", 5).await;
    let s = watch(&app, "s", 5, "push_stream failed", |s| {
        push_state(s) == "failed"
    })
    .await;
    let error = push_error(&s);
    assert!(
        error.contains(&status.to_string()),
        "push_stream_error names the status: {s:#}"
    );
    assert_eq!(s["last_error"], Value::Null, "discovery is fine: {s:#}");

    // Retried: 4 GETs means 3 backoff rounds (200 + 400 + 800 ms without
    // jitter). A hot loop would do them in a few milliseconds.
    watch(&app, "s", 5, "4 GETs", |_| up.get_requests() >= 4).await;
    let log = up.get_log();
    let spent = log[3].at - log[0].at;
    assert!(
        spent >= Duration::from_millis(300),
        "3 retries in {spent:?}: not backing off"
    );
    let in_first_second = log
        .iter()
        .filter(|g| g.at - log[0].at < Duration::from_secs(1))
        .count();
    assert!(
        in_first_second <= 5,
        "{in_first_second} GETs in the first second"
    );
    assert!(
        log.iter().all(|g| g.status == status),
        "every GET got {status}"
    );
    eprintln!(
        "GET {status}: {} GETs, {} initialize, push_stream_error {error:?}",
        log.len(),
        up.requests("initialize")
    );
    if !reinitialize_allowed {
        assert_eq!(
            up.requests("initialize"),
            1,
            "a push-stream failure does not touch the session"
        );
    }
    let s = app.server("s").await;
    assert_eq!(s["state"], "healthy");
    assert!(
        metric(&app, "mcp_discovery_push_stream_reconnects_total", "s")
            .await
            .is_some_and(|v| v >= 1.0),
        "reconnects are counted"
    );
    assert_eq!(
        metric(&app, "mcp_discovery_push_stream_connected", "s").await,
        Some(0.0),
        "a failed stream shows 0, not no series:\n{}",
        metric_lines(&app, "s").await
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_get_answering_500_fails_and_is_retried_with_backoff() {
    assert_failed_and_retried_with_backoff(500, false).await;
}

#[actix_web::test]
async fn a_get_answering_403_fails_and_is_retried_with_backoff() {
    assert_failed_and_retried_with_backoff(403, false).await;
}

/// 404 on a request carrying a session id means "session expired" in the
/// spec, so re-initializing is allowed here; the backoff bound is not.
#[actix_web::test]
async fn a_get_answering_404_fails_and_is_retried_with_backoff() {
    assert_failed_and_retried_with_backoff(404, true).await;
}

// ------------------------------------------------------------ reset

/// Once the push stream is open it is the only connection the upstream
/// holds: the discovery round's pooled connection closes with the round
/// (its listing says `Connection: close`) instead of staying idle beside
/// the stream until the next round, which awc's pool would do (ADR 0027).
/// The wait is shorter than the server's 5 s keep-alive, so the server
/// closing the idle connection itself does not pass this.
pub(crate) async fn assert_the_stream_is_the_only_connection(up: &UpstreamHandle) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while up.open_connections() != 1 {
        assert!(
            Instant::now() < deadline,
            "{} connections open beside the push stream's",
            up.open_connections().saturating_sub(1)
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn an_open_push_stream_is_the_upstreams_only_connection() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let app = app_with(&discovery(FAST_BACKOFF, ""), &[("o", entry(&up, ""))]).await;
    app.wait_healthy("o", 5).await;
    wait_push_connected(&app, "o", 5, &up).await;
    assert_the_stream_is_the_only_connection(&up).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_reset_stream_reconnects_with_last_event_id() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::ResetAfter(Duration::from_millis(100)))
        .start()
        .unwrap();
    let app = app_with(&discovery(FAST_BACKOFF, ""), &[("r", entry(&up, ""))]).await;
    app.wait_healthy("r", 5).await;
    watch(&app, "r", 5, "a GET resuming from p1", |_| {
        up.last_event_ids().iter().any(|id| id == "p1")
    })
    .await;
    let log = up.get_log();
    assert_eq!(log[0].last_event_id, None, "the first GET starts afresh");
    let resumed = log
        .iter()
        .find(|g| g.last_event_id.as_deref() == Some("p1"))
        .unwrap();
    assert!(resumed.session_live, "same session: {resumed:?}");
    assert_eq!(resumed.status, 200);
    assert!(
        resumed.at - log[0].at >= Duration::from_millis(100),
        "after the reset"
    );
    assert_eq!(up.requests("initialize"), 1);
    assert!(
        metric(&app, "mcp_discovery_push_stream_reconnects_total", "r")
            .await
            .is_some_and(|v| v >= 1.0)
    );
    app.stop().await;
}

/// The server's `retry` (700 ms) is longer than the backoff (100 ms): the
/// reconnect waits for it.
#[actix_web::test]
async fn the_sse_retry_value_bounds_the_reconnect_delay() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::ResetAfter(Duration::from_millis(100)))
        .start()
        .unwrap();
    up.update(|b| b.sse.retry_ms = Some(700));
    let app = app_with(&discovery(FAST_BACKOFF, ""), &[("rt", entry(&up, ""))]).await;
    app.wait_healthy("rt", 5).await;
    watch(&app, "rt", 5, "a second GET", |_| up.get_requests() >= 2).await;
    let log = up.get_log();
    let gap = log[1].at - log[0].at;
    assert!(
        gap >= Duration::from_millis(750),
        "reconnected {gap:?} after the first GET: 100 ms of stream + at least retry (700 ms)"
    );
    assert_eq!(log[1].last_event_id.as_deref(), Some("p1"));
    app.stop().await;
}

#[actix_web::test]
async fn a_closed_stream_resumes_from_the_last_event_id_it_saw() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let app = app_with(&discovery(FAST_BACKOFF, ""), &[("c", entry(&up, ""))]).await;
    app.wait_healthy("c", 5).await;
    wait_push_connected(&app, "c", 5, &up).await;
    up.set_tools(6);
    assert_eq!(up.notify_tools_changed(), 1);
    app.wait_healthy("c", 6).await;
    let last = up.last_push_event_id().unwrap();

    up.close_push_streams();
    watch(&app, "c", 6, "a GET resuming after the last event", |_| {
        up.last_event_ids().contains(&last)
    })
    .await;
    watch(&app, "c", 6, "connected again", |s| {
        push_state(s) == "connected" && up.open_push_streams() == 1
    })
    .await;
    assert_eq!(up.requests("initialize"), 1);
    app.stop().await;
}

/// A server restart: sessions gone, streams closed. Once a refresh has
/// re-initialized the session, the push stream runs on the new one.
#[actix_web::test]
async fn a_reinitialized_session_restarts_the_push_stream() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let app = app_with(
        &format!("{LOCAL_WRITES}{}", discovery(FAST_BACKOFF, "")),
        &[("n", entry(&up, ""))],
    )
    .await;
    app.wait_healthy("n", 5).await;
    wait_push_connected(&app, "n", 5, &up).await;
    let old = up.live_sessions();

    assert_eq!(up.expire_sessions(), 1);
    up.close_push_streams();
    assert_eq!(app.post("/v1/servers/n/refresh").await, 202);
    watch(&app, "n", 5, "connected on a new session", |s| {
        push_state(s) == "connected" && up.open_push_streams() == 1 && up.sessions_created() == 2
    })
    .await;
    let get = up.get_log().pop().unwrap();
    assert!(get.session_live, "{get:?}");
    assert_ne!(Some(&get.session_id.unwrap()), old.first());

    up.set_tools(6);
    assert_eq!(up.notify_tools_changed(), 1);
    app.wait_healthy("n", 6).await;
    app.stop().await;
}

// ------------------------------------------------------------- hang

#[actix_web::test]
async fn a_silent_stream_is_reconnected_by_the_idle_watchdog() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Silent)
        .start()
        .unwrap();
    let app = app_with(
        &discovery(
            "{ initial: 300ms, max: 1s }",
            "  push_idle_timeout: 500ms\n",
        ),
        &[("quiet", entry(&up, ""))],
    )
    .await;
    app.wait_healthy("quiet", 5).await;
    let s = watch(&app, "quiet", 5, "an idle failure", |s| {
        push_error(s).contains("idle")
    })
    .await;
    assert_eq!(s["last_error"], Value::Null);
    watch(&app, "quiet", 5, "a second GET", |_| up.get_requests() >= 2).await;
    let log = up.get_log();
    let gap = log[1].at - log[0].at;
    assert!(
        gap >= Duration::from_millis(450),
        "reconnected after {gap:?}, before the idle timeout"
    );
    assert!(log[1].session_live, "{:?}", log[1]);
    assert_eq!(up.requests("initialize"), 1);
    app.stop().await;
}

// -------------------------------------------------- garbage, oversized

#[actix_web::test]
async fn garbage_on_the_stream_fails_it() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Garbage)
        .start()
        .unwrap();
    let app = app_with(
        &discovery("{ initial: 300ms, max: 1s }", ""),
        &[("g", entry(&up, ""))],
    )
    .await;
    app.wait_healthy("g", 5).await;
    let s = watch(&app, "g", 5, "push_stream failed", |s| {
        push_state(s) == "failed" && !push_error(s).is_empty()
    })
    .await;
    eprintln!("garbage: push_stream_error = {:?}", push_error(&s));
    watch(&app, "g", 5, "a reconnect", |_| up.get_requests() >= 2).await;
    assert_eq!(up.requests("initialize"), 1);
    app.stop().await;
}

#[actix_web::test]
async fn an_oversized_event_fails_the_stream() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::OversizedEvent(1024 * 1024))
        .start()
        .unwrap();
    let app = app_with(
        &discovery(
            "{ initial: 300ms, max: 1s }",
            "  max_response_bytes: 64KiB\n",
        ),
        &[("big", entry(&up, ""))],
    )
    .await;
    app.wait_healthy("big", 5).await;
    let s = watch(&app, "big", 5, "push_stream failed", |s| {
        push_state(s) == "failed" && !push_error(s).is_empty()
    })
    .await;
    eprintln!("oversized: push_stream_error = {:?}", push_error(&s));
    watch(&app, "big", 5, "a reconnect", |_| up.get_requests() >= 2).await;
    app.stop().await;
}

// -------------------------------------------------------- list_changed

#[actix_web::test]
async fn list_changed_on_the_stream_brings_a_new_tool_promptly() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    // poll_interval is 10m: only the push stream can bring the new tool.
    let app = app_with(
        &discovery(FAST_BACKOFF, ""),
        &[("a", entry(&up, ", headers: { X-Team: infra }"))],
    )
    .await;
    app.wait_healthy("a", 5).await;
    let s = wait_push_connected(&app, "a", 5, &up).await;
    assert_eq!(s["push_stream_error"], Value::Null, "{s:#}");
    let get = up.get_log().pop().unwrap();
    assert!(get.session_live, "{get:?}");
    assert_eq!(get.header("x-team").as_deref(), Some("infra"));
    assert_eq!(get.protocol_version.as_deref(), Some("2025-11-25"));
    let lists = up.requests("tools/list");

    up.set_tools(6);
    let sent = Instant::now();
    assert_eq!(up.notify_tools_changed(), 1);
    app.wait_tools("with a__tool_5", |body| {
        body["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "a__tool_5"))
    })
    .await;
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(app.tool_names().await, namespaced("a", &tool_names(6)));
    assert!(up.requests("tools/list") > lists);

    app.wait_healthy("a", 6).await;
    let s = watch(&app, "a", 6, "still connected", |s| {
        push_state(s) == "connected"
    })
    .await;
    assert_eq!(s["push_stream_error"], Value::Null);
    assert!(
        metric(&app, "mcp_discovery_list_changed_total", "a")
            .await
            .is_some_and(|v| v >= 1.0),
        "list_changed counted"
    );
    assert_eq!(
        metric(&app, "mcp_discovery_push_stream_connected", "a").await,
        Some(1.0)
    );
    assert_eq!(up.get_requests(), 1, "one stream, never reopened");
    app.stop().await;
}

#[actix_web::test]
async fn a_burst_of_list_changed_is_coalesced() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let app = app_with(&discovery(FAST_BACKOFF, ""), &[("b", entry(&up, ""))]).await;
    app.wait_healthy("b", 5).await;
    wait_push_connected(&app, "b", 5, &up).await;
    let before = up.requests("tools/list");

    up.set_tools(8);
    assert_eq!(up.notify_burst(100), 1);
    app.wait_healthy("b", 8).await;
    let after = settled("tools/list count", || up.requests("tools/list")).await;
    let refreshes = after - before;
    eprintln!("a burst of 100 list_changed: {refreshes} tools/list calls");
    assert!(
        (1..=3).contains(&refreshes),
        "100 list_changed caused {refreshes} tools/list calls"
    );
    assert_eq!(app.tool_names().await, namespaced("b", &tool_names(8)));
    let s = app.server("b").await;
    assert_eq!(s["state"], "healthy");
    assert_eq!(push_state(&s), "connected");
    app.stop().await;
}

// ---------------------------------------------------------------- ping

#[actix_web::test]
async fn a_ping_request_on_the_stream_is_answered_by_post() {
    let up = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let app = app_with(&discovery(FAST_BACKOFF, ""), &[("p", entry(&up, ""))]).await;
    app.wait_healthy("p", 5).await;
    wait_push_connected(&app, "p", 5, &up).await;

    let (id, streams) = up.send_ping_request();
    assert_eq!(streams, 1);
    watch(&app, "p", 5, "the ping answered", |_| {
        !up.ping_responses().is_empty()
    })
    .await;
    assert_eq!(
        up.ping_responses(),
        vec![json!({ "jsonrpc": "2.0", "id": id, "result": {} })]
    );
    let s = app.server("p").await;
    assert_eq!(push_state(&s), "connected");
    assert_eq!(up.get_requests(), 1);
    app.stop().await;
}

// ------------------------------------------------------------ push: false

#[actix_web::test]
async fn push_false_disables_the_stream() {
    let off = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let on = TestUpstream::builder()
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let app = app_with(
        &discovery(FAST_BACKOFF, ""),
        &[
            ("off", entry(&off, ", push: false")),
            ("on", entry(&on, "")),
        ],
    )
    .await;
    app.wait_healthy("off", 5).await;
    // The neighbour's stream is open: the engine had its chance to open one.
    app.wait_healthy("on", 5).await;
    watch(&app, "on", 5, "push_stream connected", |s| {
        push_state(s) == "connected"
    })
    .await;
    let s = watch(&app, "off", 5, "push_stream disabled", |s| {
        push_state(s) == "disabled"
    })
    .await;
    assert_eq!(s["push_stream_error"], Value::Null);
    assert_eq!(off.get_requests(), 0, "no GET at all");
    assert_eq!(off.open_push_streams(), 0);
    app.stop().await;
}

// ---------------------------------------------------- the field bug

/// 16 upstreams whose GET answers 500 and 16 whose GET hangs (5 tools each):
/// all 32 reach `healthy` with every tool, and no sample of `/v1/servers`
/// ever shows one `degraded`.
#[actix_web::test]
async fn failing_and_hanging_push_streams_never_cost_a_tool() {
    let failing = UpstreamFarm::start(
        16,
        &UpstreamBehavior {
            get_stream: GetStream::Status(500),
            server_name: "failing".to_owned(),
            ..UpstreamBehavior::default()
        },
        None,
        2,
    )
    .unwrap();
    let hanging = UpstreamFarm::start(
        16,
        &UpstreamBehavior {
            get_stream: GetStream::Silent,
            server_name: "hanging".to_owned(),
            ..UpstreamBehavior::default()
        },
        None,
        2,
    )
    .unwrap();
    let mut servers = Vec::new();
    for (i, up) in failing.upstreams().iter().enumerate() {
        servers.push((format!("f{i}"), entry(up, "")));
    }
    for (i, up) in hanging.upstreams().iter().enumerate() {
        servers.push((format!("h{i}"), entry(up, "")));
    }
    let refs: Vec<(&str, String)> = servers
        .iter()
        .map(|(n, e)| (n.as_str(), e.clone()))
        .collect();
    // The default push_idle_timeout (5m): the hanging streams just hang.
    let app = app_with(&discovery(FAST_BACKOFF, ""), &refs).await;

    let deadline = Instant::now() + DEADLINE;
    let mut samples = 0;
    loop {
        let all = app.servers().await;
        samples += 1;
        let degraded: Vec<&Value> = all.iter().filter(|s| s["state"] == "degraded").collect();
        assert!(
            degraded.is_empty(),
            "sample {samples}: degraded: {degraded:#?}"
        );
        let healthy = all
            .iter()
            .filter(|s| s["state"] == "healthy" && s["tool_count"] == 5)
            .count();
        let retried = failing.upstreams().iter().all(|u| u.get_requests() >= 2);
        let hung = hanging.upstreams().iter().all(|u| u.get_requests() >= 1);
        if all.len() == 32 && healthy == 32 && retried && hung {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {samples} samples: {healthy}/32 healthy, failing retried: {retried}, \
             hanging opened: {hung}: {all:#?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    let names = app.tool_names().await;
    assert_eq!(names.len(), 160);
    for (name, _) in &servers {
        let want = namespaced(name, &tool_names(5));
        assert!(
            want.iter().all(|t| names.contains(t)),
            "{name} is missing tools"
        );
    }
    for s in app.servers().await {
        let name = s["name"].as_str().unwrap();
        assert_eq!(s["last_error"], Value::Null, "{s:#}");
        if name.starts_with('f') {
            // Between retries the stream reads `connecting` again; either
            // way it keeps the failure it had.
            assert!(
                matches!(push_state(&s), "failed" | "connecting")
                    && push_error(&s).contains("HTTP 500"),
                "{s:#}"
            );
        } else {
            assert!(
                matches!(push_state(&s), "connected" | "connecting"),
                "a hanging stream that sent headers: {s:#}"
            );
        }
    }
    for up in failing.upstreams().iter().chain(hanging.upstreams()) {
        assert_eq!(up.requests("initialize"), 1);
    }
    app.stop().await;
    failing.stop().await;
    hanging.stop().await;
}

/// More open push streams per arbiter than awc's default connection pool
/// (100 per client): a refresh of every server still goes through.
#[actix_web::test]
async fn more_open_push_streams_than_the_default_connection_pool() {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let count = (120 * cores).clamp(240, 1000);
    let farm = UpstreamFarm::start(
        count,
        &UpstreamBehavior {
            get_stream: GetStream::Open,
            tools: 2,
            ..UpstreamBehavior::default()
        },
        None,
        2,
    )
    .unwrap();
    let servers: Vec<(String, String)> = farm
        .upstreams()
        .iter()
        .enumerate()
        .map(|(i, up)| (format!("u{i}"), entry(up, "")))
        .collect();
    let refs: Vec<(&str, String)> = servers
        .iter()
        .map(|(n, e)| (n.as_str(), e.clone()))
        .collect();
    let app = app_with(&discovery(FAST_BACKOFF, ""), &refs).await;

    let deadline = Instant::now() + DEADLINE;
    loop {
        let all = app.servers().await;
        let ready = all
            .iter()
            .filter(|s| s["state"] == "healthy" && push_state(s) == "connected")
            .count();
        let open = farm
            .upstreams()
            .iter()
            .filter(|u| u.open_push_streams() == 1)
            .count();
        if ready == count && open == count {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ready}/{count} healthy and connected, {open} streams open"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    for up in farm.upstreams() {
        up.set_tools(3);
        assert_eq!(up.notify_tools_changed(), 1);
    }
    app.wait_tools(&format!("with {} tools", 3 * count), |body| {
        body["tools"].as_array().map(Vec::len) == Some(3 * count)
    })
    .await;
    app.stop().await;
    farm.stop().await;
}

// -------------------------------------------------------------- interop

async fn assert_push_connects(name: &str, url: &str, tools: usize) {
    let app = app_with(
        &discovery(FAST_BACKOFF, ""),
        &[(
            name,
            format!("{{ url: \"{url}\", transport: streamable-http }}"),
        )],
    )
    .await;
    app.wait_healthy(name, tools).await;
    let s = watch(&app, name, tools, "push_stream connected", |s| {
        push_state(s) == "connected"
    })
    .await;
    assert_eq!(s["push_stream_error"], Value::Null, "{s:#}");
    assert_eq!(
        metric(&app, "mcp_discovery_push_stream_connected", name).await,
        Some(1.0)
    );
    app.stop().await;
}

#[actix_web::test]
async fn python_sdk_push_stream_connects() {
    let peer = crate::require_peer!(peers::python(PythonTransport::StreamableHttp));
    assert_push_connects("py", peer.url(), peers::PYTHON_TOOLS.len()).await;
}

#[actix_web::test]
async fn server_everything_push_stream_connects() {
    let peer = crate::require_peer!(peers::everything(EverythingTransport::StreamableHttp));
    assert_push_connects("ev", peer.url(), peers::EVERYTHING_TOOLS.len()).await;
}
