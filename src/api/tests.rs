//! Handler tests on an in-process service: published snapshots come from
//! `watch` channels the test controls, and a stand-in actor answers
//! `RefreshServer`, so no engine is needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::{header, StatusCode};
use actix_web::test::{self, TestRequest};
use discovery_actors::catalog::ServerTools;
use discovery_actors::mcp::Tool;
use discovery_actors::supervisor::{
    ApiServerError, RefreshServer, ReleaseApiName, RemoveApiServer, ReserveApiName, UnknownServer,
    UpsertApiServer, UpsertOutcome,
};
use discovery_actors::{
    Catalog, DiscoveryEvents, DiscoveryState, PushStreamState, ServerView, ServersSnapshot,
};
use discovery_config::Config;
use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::watch;

use super::*;

/// The OpenAPI document against this service (same harness).
#[path = "openapi_tests.rs"]
mod openapi;

/// Answers `RefreshServer` for the names it knows, counting calls.
struct FakeSupervisor {
    known: Vec<String>,
    calls: Arc<AtomicUsize>,
}

impl Actor for FakeSupervisor {
    type Context = Context<Self>;
}

impl Handler<RefreshServer> for FakeSupervisor {
    type Result = Result<(), UnknownServer>;

    fn handle(&mut self, msg: RefreshServer, _: &mut Context<Self>) -> Self::Result {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.known.contains(&msg.name) {
            Ok(())
        } else {
            Err(UnknownServer(msg.name))
        }
    }
}

impl Handler<UpsertApiServer> for FakeSupervisor {
    type Result = Result<UpsertOutcome, ApiServerError>;

    fn handle(&mut self, _: UpsertApiServer, _: &mut Context<Self>) -> Self::Result {
        Ok(UpsertOutcome {
            generation: Some(1),
            restarted: true,
        })
    }
}

impl Handler<RemoveApiServer> for FakeSupervisor {
    type Result = Result<bool, ApiServerError>;

    fn handle(&mut self, _: RemoveApiServer, _: &mut Context<Self>) -> Self::Result {
        Ok(true)
    }
}

impl Handler<ReserveApiName> for FakeSupervisor {
    type Result = Result<(), ApiServerError>;

    fn handle(&mut self, _: ReserveApiName, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

impl Handler<ReleaseApiName> for FakeSupervisor {
    type Result = ();

    fn handle(&mut self, _: ReleaseApiName, _: &mut Context<Self>) {}
}

/// The API's reload route reaches the watcher; here it has no file.
impl Handler<Reload> for FakeSupervisor {
    type Result = Result<crate::reload::ReloadSummary, crate::reload::ReloadError>;

    fn handle(&mut self, _: Reload, _: &mut Context<Self>) -> Self::Result {
        Err(crate::reload::ReloadError::NoFile)
    }
}

fn tool(name: &str, description: &str) -> Tool {
    let raw = serde_json::json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object"},
        "x-vendor": {"keep": true},
    });
    Tool {
        name: name.into(),
        raw: Arc::from(RawValue::from_string(raw.to_string()).unwrap()),
    }
}

fn view(name: &str, state: DiscoveryState, tools: usize, attempted: bool) -> ServerView {
    ServerView {
        name: name.into(),
        source: "config",
        transport: "streamable-http",
        negotiated_transport: Some("streamable-http"),
        endpoint: format!("http://127.0.0.1:1/{name}"),
        state,
        last_error: (state == DiscoveryState::Degraded).then(|| "connection refused".to_owned()),
        last_success_at: None,
        last_attempt_at: None,
        consecutive_failures: 0,
        next_retry_at: None,
        next_refresh_at: None,
        push_stream: PushStreamState::Disabled,
        push_stream_error: None,
        auth: discovery_actors::status::AuthView {
            kind: "none",
            token_expires_at: None,
            last_token_error: None,
        },
        tool_count: tools,
        stale: false,
        protocol_version: None,
        server_info: None,
        listing_warning: None,
        cache: None,
        tool_report: std::sync::Arc::default(),
        generation: 1,
        first_attempt_done: attempted,
        call_timeout: std::time::Duration::from_secs(60),
    }
}

struct Harness {
    catalog_tx: watch::Sender<Arc<Catalog>>,
    servers_tx: watch::Sender<Arc<ServersSnapshot>>,
    refresh_calls: Arc<AtomicUsize>,
    state: web::Data<ApiState>,
}

/// Two servers: `alpha` (healthy, 2 tools) and `beta` (degraded, stale tool).
fn harness(readiness: Readiness) -> Harness {
    let alpha = Arc::new(ServerTools::build(
        "alpha",
        "__",
        false,
        &[tool("search", "Finds things"), tool("fetch", "Gets a URL")],
    ));
    let beta = Arc::new(ServerTools::build(
        "beta",
        "__",
        true,
        &[tool("echo", "Echoes")],
    ));
    let catalog = Arc::new(Catalog::assemble(5, vec![alpha, beta]));
    let mut servers = IndexMap::new();
    servers.insert(
        "alpha".to_owned(),
        view("alpha", DiscoveryState::Healthy, 2, true),
    );
    servers.insert(
        "beta".to_owned(),
        view("beta", DiscoveryState::Degraded, 1, true),
    );
    let (catalog_tx, catalog_rx) = watch::channel(catalog);
    let catalog_rx_for_compressor = catalog_rx.clone();
    let (servers_tx, servers_rx) = watch::channel(Arc::new(ServersSnapshot { servers }));
    let refresh_calls = Arc::new(AtomicUsize::new(0));
    let supervisor = FakeSupervisor {
        known: vec!["alpha".into(), "beta".into()],
        calls: refresh_calls.clone(),
    }
    .start();
    // Writes from loopback without a key, as on a developer's machine.
    let mut config = Config::embedded_defaults();
    config.admin.allow_loopback_writes = true;
    let (_config_tx, config_rx) = watch::channel(Arc::new(config));
    let metrics = Arc::new(Metrics::new().unwrap());
    let state = web::Data::new(ApiState {
        catalog: catalog_rx,
        servers: servers_rx,
        refresher: supervisor.clone().recipient(),
        metrics: metrics.clone(),
        readiness: Arc::new(readiness),
        liveness: Liveness::default().with("supervisor", {
            let supervisor = supervisor.clone();
            move || supervisor.connected()
        }),
        reloader: supervisor.clone().recipient(),
        config: config_rx,
        registrar: supervisor.clone().recipient(),
        unregistrar: supervisor.clone().recipient(),
        reserver: supervisor.clone().recipient(),
        releaser: supervisor.recipient(),
        store: None,
        name_locks: Default::default(),
        gateway: Arc::new(crate::gateway::Gateway::new(
            watch::channel(Arc::default()).1,
            metrics,
        )),
        compressor: Arc::new(crate::encoding::Compressor::start(
            catalog_rx_for_compressor,
            None,
        )),
        servers_body: Default::default(),
        registration_pause: None,
    });
    Harness {
        catalog_tx,
        servers_tx,
        refresh_calls,
        state,
    }
}

fn ready_now() -> Readiness {
    Readiness::new(
        Duration::from_secs(30),
        ["alpha".to_owned(), "beta".to_owned()],
    )
}

async fn call(
    h: &Harness,
    req: TestRequest,
) -> (StatusCode, actix_web::http::header::HeaderMap, bytes::Bytes) {
    let app = test::init_service(app(h.state.clone())).await;
    // Every client sends a Host; the guard refuses a request without one.
    let req = req.insert_header((header::HOST, "localhost:8080"));
    let res = test::call_service(&app, req.to_request()).await;
    let status = res.status();
    let headers = res.headers().clone();
    let body = test::read_body(res).await;
    (status, headers, body)
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn assert_error(status: StatusCode, body: &[u8], want_status: u16, want_code: &str) {
    assert_eq!(
        status.as_u16(),
        want_status,
        "{}",
        String::from_utf8_lossy(body)
    );
    let v = json(body);
    assert_eq!(v["error"]["code"], want_code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[actix_web::test]
async fn tools_returns_the_catalog_body_with_etag() {
    let h = harness(ready_now());
    let (status, headers, body) = call(&h, TestRequest::get().uri("/v1/tools")).await;
    assert_eq!(status, StatusCode::OK);
    let catalog = h.state.catalog();
    assert_eq!(headers.get(header::ETAG).unwrap(), catalog.etag.as_str());
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    assert_eq!(body, catalog.body().to_bytes());
    let v = json(&body);
    assert_eq!(v["version"], 5);
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha__search", "alpha__fetch", "beta__echo"]);
    assert_eq!(v["tools"][2]["stale"], true);
    assert_eq!(v["tools"][0]["tool"]["x-vendor"]["keep"], true);
}

#[actix_web::test]
async fn if_none_match_gives_304_until_the_catalog_changes() {
    let h = harness(ready_now());
    let etag = h.state.catalog().etag.clone();
    let (status, headers, body) = call(
        &h,
        TestRequest::get()
            .uri("/v1/tools")
            .insert_header((header::IF_NONE_MATCH, etag.as_str())),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers.get(header::ETAG).unwrap(), etag.as_str());
    assert!(body.is_empty());

    for value in [
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let (status, _, _) = call(
            &h,
            TestRequest::get()
                .uri("/v1/tools?q=search")
                .insert_header((header::IF_NONE_MATCH, value.as_str())),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{value}");
    }

    // A new catalog version: the old tag no longer matches.
    let gamma = Arc::new(ServerTools::build("gamma", "__", false, &[tool("t", "")]));
    h.catalog_tx
        .send_replace(Arc::new(Catalog::assemble(6, vec![gamma])));
    let (status, headers, _) = call(
        &h,
        TestRequest::get()
            .uri("/v1/tools")
            .insert_header((header::IF_NONE_MATCH, etag.as_str())),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(headers.get(header::ETAG).unwrap(), etag.as_str());
}

#[actix_web::test]
async fn tools_filters_by_server_and_query() {
    let h = harness(ready_now());
    let names = |body: &[u8]| -> Vec<String> {
        json(body)["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/tools?server=beta")).await;
    assert_eq!(names(&body), ["beta__echo"]);
    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/tools?q=URL")).await;
    assert_eq!(names(&body), ["alpha__fetch"]);
    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/tools?server=alpha&q=find")).await;
    assert_eq!(names(&body), ["alpha__search"]);
    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/tools?q=")).await;
    assert_eq!(names(&body).len(), 3, "empty q is no filter");
}

#[actix_web::test]
async fn unknown_server_filter_is_404_and_known_empty_server_is_200() {
    let h = harness(ready_now());
    let (status, _, body) = call(&h, TestRequest::get().uri("/v1/tools?server=nope")).await;
    assert_error(status, &body, 404, "server_not_found");

    // A server that exists but contributes no tools: an empty list.
    let mut snapshot = (**h.state.servers.borrow()).clone();
    snapshot.servers.insert(
        "empty".into(),
        view("empty", DiscoveryState::Connecting, 0, false),
    );
    h.servers_tx.send_replace(Arc::new(snapshot));
    let (status, _, body) = call(&h, TestRequest::get().uri("/v1/tools?server=empty")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["tools"], serde_json::json!([]));
}

#[actix_web::test]
async fn bad_query_strings_are_json_400() {
    let h = harness(ready_now());
    for uri in ["/v1/tools?sever=alpha", "/v1/tools?server=a&server=b"] {
        let (status, _, body) = call(&h, TestRequest::get().uri(uri)).await;
        assert_error(status, &body, 400, "bad_request");
    }
}

#[actix_web::test]
async fn servers_list_has_views_without_tools() {
    let h = harness(ready_now());
    let (status, _, body) = call(&h, TestRequest::get().uri("/v1/servers")).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["name"], "alpha");
    assert_eq!(servers[0]["state"], "healthy");
    assert_eq!(servers[0]["source"], "config");
    assert_eq!(servers[1]["state"], "degraded");
    assert_eq!(servers[1]["last_error"], "connection refused");
    assert!(servers[0].get("tools").is_none());
    assert!(servers[0].get("first_attempt_done").is_none());
}

#[actix_web::test]
async fn servers_list_is_served_once_per_snapshot_with_an_etag() {
    let h = harness(ready_now());
    let (status, headers, first) = call(&h, TestRequest::get().uri("/v1/servers")).await;
    assert_eq!(status, StatusCode::OK);
    let etag = headers
        .get(header::ETAG)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    // The same snapshot: the same bytes, and a 304 for its tag.
    let (_, headers, again) = call(&h, TestRequest::get().uri("/v1/servers")).await;
    assert_eq!(again, first);
    assert_eq!(headers.get(header::ETAG).unwrap(), etag.as_str());
    let conditional = || {
        TestRequest::get()
            .uri("/v1/servers")
            .insert_header((header::IF_NONE_MATCH, etag.as_str()))
    };
    let (status, headers, body) = call(&h, conditional()).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers.get(header::ETAG).unwrap(), etag.as_str());
    assert!(body.is_empty());

    // A new snapshot with another state: a new body and tag, the old tag a 200.
    let mut snapshot = (**h.state.servers.borrow()).clone();
    snapshot.servers.insert(
        "gamma".into(),
        view("gamma", DiscoveryState::Connecting, 0, false),
    );
    h.servers_tx.send_replace(Arc::new(snapshot));
    let (status, headers, body) = call(&h, conditional()).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(headers.get(header::ETAG).unwrap(), etag.as_str());
    let v = json(&body);
    assert_eq!(v["servers"].as_array().unwrap().len(), 3);
    assert_eq!(v["servers"][2]["name"], "gamma");
}

#[actix_web::test]
async fn one_server_has_its_catalog_entries_in_the_tools_shape() {
    let h = harness(ready_now());
    let (status, _, body) = call(&h, TestRequest::get().uri("/v1/servers/alpha")).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["name"], "alpha");
    assert_eq!(v["state"], "healthy");
    // Exactly the entries `GET /v1/tools?server=alpha` shows.
    let (_, _, tools_body) = call(&h, TestRequest::get().uri("/v1/tools?server=alpha")).await;
    assert_eq!(v["tools"], json(&tools_body)["tools"]);

    let (_, _, body) = call(&h, TestRequest::get().uri("/v1/servers/beta")).await;
    assert_eq!(json(&body)["tools"][0]["stale"], true);

    let (status, _, body) = call(&h, TestRequest::get().uri("/v1/servers/nope")).await;
    assert_error(status, &body, 404, "server_not_found");
}

#[actix_web::test]
async fn refresh_is_202_for_a_known_server_and_404_otherwise() {
    let h = harness(ready_now());
    let local = "127.0.0.1:40000".parse().unwrap();
    let (status, _, body) = call(
        &h,
        TestRequest::post()
            .uri("/v1/servers/alpha/refresh")
            .insert_header(header::ContentType::json())
            .peer_addr(local),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(json(&body), serde_json::json!({"accepted": true}));
    let (status, _, body) = call(
        &h,
        TestRequest::post()
            .uri("/v1/servers/nope/refresh")
            .insert_header(header::ContentType::json())
            .peer_addr(local),
    )
    .await;
    assert_error(status, &body, 404, "server_not_found");
    assert_eq!(h.refresh_calls.load(Ordering::SeqCst), 2);
    // No admin key configured: a write from elsewhere is refused.
    let (status, _, body) = call(
        &h,
        TestRequest::post()
            .uri("/v1/servers/alpha/refresh")
            .peer_addr("10.1.2.3:5555".parse().unwrap()),
    )
    .await;
    assert_error(status, &body, 403, "forbidden");
    assert_eq!(h.refresh_calls.load(Ordering::SeqCst), 2);

    let (status, headers, body) =
        call(&h, TestRequest::get().uri("/v1/servers/alpha/refresh")).await;
    assert_error(status, &body, 405, "method_not_allowed");
    assert_eq!(headers.get(header::ALLOW).unwrap(), "POST, OPTIONS");
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let h = harness(ready_now());
    let (status, _, body) = call(&h, TestRequest::get().uri("/v2/nothing")).await;
    assert_error(status, &body, 404, "not_found");
    let (status, headers, body) = call(&h, TestRequest::delete().uri("/v1/tools")).await;
    assert_error(status, &body, 405, "method_not_allowed");
    assert_eq!(headers.get(header::ALLOW).unwrap(), "GET, HEAD, OPTIONS");
}

#[actix_web::test]
async fn healthz_is_ok() {
    let h = harness(ready_now());
    let (status, _, body) = call(&h, TestRequest::get().uri("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!({"status": "ok"}));
}

#[actix_web::test]
async fn healthz_fails_when_an_engine_part_is_gone() {
    let h = harness(ready_now());
    let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut state = (*h.state.clone().into_inner()).clone();
    state.liveness = state.liveness.clone().with("registry", {
        let alive = alive.clone();
        move || alive.load(std::sync::atomic::Ordering::Relaxed)
    });
    let h = Harness {
        state: web::Data::new(state),
        ..h
    };
    let (status, _, _) = call(&h, TestRequest::get().uri("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    alive.store(false, std::sync::atomic::Ordering::Relaxed);
    let (status, _, body) = call(&h, TestRequest::get().uri("/healthz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json(&body),
        serde_json::json!({"status": "failing", "gone": ["registry"]})
    );
}

#[actix_web::test]
async fn readyz_waits_for_every_first_attempt() {
    // `late` is configured but not yet published; `beta` not yet attempted.
    let h = harness(Readiness::new(
        Duration::from_secs(30),
        ["alpha", "beta", "late"].map(str::to_owned),
    ));
    let mut snapshot = (**h.state.servers.borrow()).clone();
    if let Some(beta) = snapshot.servers.get_mut("beta") {
        beta.first_attempt_done = false;
    }
    h.servers_tx.send_replace(Arc::new(snapshot.clone()));
    let (status, _, body) = call(&h, TestRequest::get().uri("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v = json(&body);
    assert_eq!(v["status"], "starting");
    assert_eq!(v["pending"], serde_json::json!(["beta", "late"]));

    if let Some(beta) = snapshot.servers.get_mut("beta") {
        beta.first_attempt_done = true;
    }
    snapshot.servers.insert(
        "late".into(),
        view("late", DiscoveryState::Degraded, 0, true),
    );
    h.servers_tx.send_replace(Arc::new(snapshot.clone()));
    let (status, _, body) = call(&h, TestRequest::get().uri("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["status"], "ready");

    // Once ready, a server added later does not take readiness away.
    snapshot.servers.insert(
        "added".into(),
        view("added", DiscoveryState::Connecting, 0, false),
    );
    h.servers_tx.send_replace(Arc::new(snapshot));
    let (status, _, body) = call(&h, TestRequest::get().uri("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["pending"], serde_json::json!(["added"]));
}

#[test]
fn readiness_turns_ready_when_the_grace_has_passed() {
    let long_ago = Instant::now().checked_sub(Duration::from_secs(60)).unwrap();
    let readiness = Readiness::starting_at(long_ago, Duration::from_secs(30), ["hung".to_owned()]);
    let mut servers = IndexMap::new();
    servers.insert(
        "hung".to_owned(),
        view("hung", DiscoveryState::Connecting, 0, false),
    );
    let status = readiness.check(&ServersSnapshot { servers });
    assert!(status.ready);
    assert_eq!(status.reason, Some("startup_grace_elapsed"));
    assert_eq!(status.pending, ["hung"]);

    let fresh = Readiness::new(Duration::from_secs(30), ["hung".to_owned()]);
    let status = fresh.check(&ServersSnapshot::default());
    assert!(!status.ready);
    assert!(status.startup_grace_remaining_ms.is_some_and(|ms| ms > 0));
}

#[test]
fn no_servers_means_ready_at_once() {
    let readiness = Readiness::new(Duration::from_secs(30), Vec::new());
    assert!(readiness.check(&ServersSnapshot::default()).ready);
}

/// Scrapes render one at a time: a scrape waits while another holds the
/// turn (here the test holds it), and answers once it is free. Many
/// scrapes at once then cost one rendering's memory, not one each.
#[actix_web::test]
async fn scrapes_render_one_at_a_time() {
    let h = harness(ready_now());
    let turn = h.state.metrics.render_turn().await;
    let scrape = call(&h, TestRequest::get().uri("/metrics"));
    let mut scrape = std::pin::pin!(scrape);
    let waited = actix_rt::time::timeout(Duration::from_millis(200), &mut scrape).await;
    assert!(
        waited.is_err(),
        "a scrape rendered while another held the turn"
    );
    drop(turn);
    let (status, _, body) = scrape.await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_empty());
}

#[actix_web::test]
async fn metrics_count_requests_by_route_pattern() {
    let h = harness(ready_now());
    h.state
        .metrics
        .state_changed("alpha", DiscoveryState::Healthy);
    let _ = call(&h, TestRequest::get().uri("/v1/servers/alpha")).await;
    let _ = call(&h, TestRequest::get().uri("/v1/servers/beta")).await;
    let _ = call(&h, TestRequest::get().uri("/no/such/path/1")).await;
    let _ = call(&h, TestRequest::get().uri("/no/such/path/2")).await;
    let (status, headers, body) = call(&h, TestRequest::get().uri("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains(
            "mcp_discovery_http_requests_total{method=\"GET\",route=\"/v1/servers/{name}\",status=\"200\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("mcp_discovery_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 2"),
        "{text}"
    );
    assert!(
        !text.contains("/no/such/path"),
        "raw paths never become labels"
    );
    assert!(text.contains("mcp_discovery_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/servers/{name}\""));
    assert!(
        text.contains("mcp_discovery_upstream_state{server=\"alpha\",state=\"healthy\"} 1"),
        "{text}"
    );
}

/// `GET /v1/servers` bodies (`servers::ServersBody`).
mod servers_body {
    use super::*;

    fn snapshot(names: &[&str]) -> Arc<ServersSnapshot> {
        let servers = names
            .iter()
            .map(|n| ((*n).to_owned(), view(n, DiscoveryState::Healthy, 0, true)))
            .collect();
        Arc::new(ServersSnapshot { servers })
    }

    fn names(body: &bytes::Bytes) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[actix_web::test]
    async fn a_snapshot_is_serialized_once_and_served_fresh_when_quick() {
        let cache = Arc::new(super::servers::ServersBody::default());
        let a = snapshot(&["a"]);
        let (one, tag1) = cache.get(&a).await.unwrap();
        let (two, tag2) = cache.get(&a).await.unwrap();
        assert_eq!(
            one.as_ptr(),
            two.as_ptr(),
            "the same bytes, not serialized again"
        );
        assert_eq!(tag1, tag2);
        let b = snapshot(&["a", "b"]);
        let (three, tag3) = cache.get(&b).await.unwrap();
        assert_eq!(
            names(&three),
            ["a", "b"],
            "a quick serialization is waited for"
        );
        assert_ne!(tag1, tag3);
    }

    #[actix_web::test]
    async fn a_slow_serialization_is_not_waited_for_past_the_fresh_wait() {
        let cache = Arc::new(super::servers::ServersBody::default());
        let a = snapshot(&["a"]);
        let (_, tag_a) = cache.get(&a).await.unwrap();
        // The next serialization is held until the barrier is passed.
        let hold = Arc::new(std::sync::Barrier::new(2));
        *cache.hold.lock().unwrap() = Some(hold.clone());
        let b = snapshot(&["a", "b"]);
        let (body, tag) = cache.get(&b).await.unwrap();
        assert_eq!(names(&body), ["a"], "the newest ready body, not a wait");
        assert_eq!(tag, tag_a, "with its own ETag");
        *cache.hold.lock().unwrap() = None;
        let waiter = std::thread::spawn(move || hold.wait());
        // Once it is done, b is served.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (body, _) = cache.get(&b).await.unwrap();
            if names(&body) == ["a", "b"] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "b never served");
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        waiter.join().unwrap();
    }
}
