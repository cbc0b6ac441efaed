//! Upstream authentication (issue 4): OAuth2 client credentials against the
//! test token endpoint (`tests/support/token_endpoint.rs`), with a given
//! `token_url` or discovered the MCP authorization spec's way, and static
//! `bearer` / `basic` / `headers` — against the Rust test upstream with a
//! bearer requirement and the official Python SDK server behind one.
//!
//! Each test fails without the behaviour it names. Waiting is polling with a
//! deadline; the two "over a window" tests sample the state for a fixed time
//! and fail on the first bad sample.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{namespaced, servers_yaml, spawn_app, TestApp, DEADLINE, FAST, LOCAL_WRITES};
use crate::process::{find, EngineProcess};
use crate::support::peers::{self, PythonTransport, PYTHON_TOOLS};
use crate::support::token_endpoint::{
    base64_encode, client_secret_basic, http_basic, AcceptedAuth, AsMetadataDocs, ClientAuthMethod,
    TokenEndpoint, TokenError, TokenStore,
};
use crate::support::upstream::{tool_names, GetStream, TestUpstream, PRM_ROOT_PATH};

/// FAST, except that the first retry waits long enough for a test to count
/// exactly what one attempt did.
const ONE_ATTEMPT: &str = "\
discovery:
  poll_interval: 10m
  request_timeout: 5s
  connect_timeout: 2s
  backoff: { initial: 30s, max: 60s }
  stale_ttl: 10m
";

/// Outer timeouts shorter than the slow token endpoint's 3 s: only the
/// refresher's own `token_timeout` (30 s by default) may bound the exchange.
const SHORT_TIMEOUTS: &str = "\
discovery:
  poll_interval: 10m
  request_timeout: 2s
  connect_timeout: 1s
  backoff: { initial: 100ms, max: 1s }
  stale_ttl: 10m
";

/// The client secret of the leak tests: distinctive enough to grep for.
const LEAKY_SECRET: &str = "s3cr3t-value-xyz";

/// A YAML double-quoted scalar (a JSON string is one).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A Streamable HTTP entry with `auth: { type: oauth2, ... }`; `token_url`
/// `None` leaves it to discovery; `auth_more` and `more` are extra flow-map
/// entries (each starting with `, `) for the auth block and the entry.
fn oauth2_entry(
    url: &str,
    token_url: Option<&str>,
    id: &str,
    secret: &str,
    auth_more: &str,
    more: &str,
) -> String {
    let token_url = token_url
        .map(|u| format!(", token_url: {}", q(u)))
        .unwrap_or_default();
    format!(
        "{{ url: {}, transport: streamable-http{more}, auth: {{ type: oauth2{token_url}, \
         client_id: {}, client_secret: {}{auth_more} }} }}",
        q(url),
        q(id),
        q(secret)
    )
}

/// The value of the series `name{labels}` in a Prometheus text exposition,
/// whatever the order of the labels.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: HashSet<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once('}')?;
        let got: HashSet<String> = labels.split(',').map(str::to_owned).collect();
        (got == want).then(|| value.trim().parse().ok())?
    })
}

async fn token_refreshes(app: &TestApp, server: &str, outcome: &str) -> f64 {
    let (_, text) = app.get_text("/metrics").await;
    series(
        &text,
        "mcp_discovery_token_refreshes_total",
        &[("server", server), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

/// Polls `cond` (test-side state: counters of the support servers) until it
/// holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Samples server `name` every 50 ms for `window`; fails on the first sample
/// `check` rejects. Returns the samples.
async fn hold(
    app: &TestApp,
    name: &str,
    window: Duration,
    check: impl Fn(&Value) -> Result<(), String>,
) -> Vec<Value> {
    let end = Instant::now() + window;
    let mut samples = Vec::new();
    while Instant::now() < end {
        let s = app.server(name).await;
        if let Err(why) = check(&s) {
            panic!("{name}: {why} after {} samples: {s:#}", samples.len());
        }
        samples.push(s);
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    samples
}

fn healthy_and_clean(s: &Value) -> Result<(), String> {
    if s["state"] != "healthy" {
        return Err(format!("state {}", s["state"]));
    }
    if s["consecutive_failures"] != 0 {
        return Err(format!(
            "consecutive_failures {}",
            s["consecutive_failures"]
        ));
    }
    if !s["last_error"].is_null() {
        return Err(format!("last_error {}", s["last_error"]));
    }
    Ok(())
}

/// The first `n` entries of a log (fewer if it is shorter).
fn first<T>(log: Vec<T>, n: usize) -> Vec<T> {
    log.into_iter().take(n).collect()
}

/// The path-suffixed protected resource metadata of an upstream at `/mcp`.
const PRM_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

fn last_error(s: &Value) -> String {
    s["last_error"].as_str().unwrap_or_default().to_owned()
}

/// `token_expires_at` as seconds from now.
fn expires_in_secs(s: &Value) -> i64 {
    let at = s["auth"]["token_expires_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no auth.token_expires_at: {s:#}"));
    let at = chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds()
}

// ------------------------------------------------------- the field scenario

/// Field report: a slow token exchange was cancelled from outside, the
/// server stayed `unknown` with 0 tools. Here the token endpoint takes 3 s,
/// longer than every outer timeout; the server waits in `connecting`, a
/// manual refresh meanwhile neither cancels nor duplicates the exchange, and
/// it ends `healthy` with every tool.
#[actix_web::test]
async fn a_slow_token_endpoint_is_waited_for_in_connecting_then_healthy() {
    let idp = TokenEndpoint::builder()
        .client("field-client", "field-secret")
        .delay(Duration::from_secs(3))
        .expires_in(Some(3600))
        .start()
        .unwrap();
    let up = TestUpstream::builder()
        .tools(7)
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();
    let entry = oauth2_entry(
        &up.url(),
        Some(&idp.token_url()),
        "field-client",
        "field-secret",
        "",
        "",
    );
    let app = spawn_app(&format!(
        "{LOCAL_WRITES}{SHORT_TIMEOUTS}{}",
        servers_yaml(&[("field", entry)])
    ))
    .await;

    until("the token request arrives", || idp.in_flight() == 1).await;
    let s = app.server("field").await;
    assert_eq!(s["state"], "connecting", "{s:#}");
    assert_eq!(s["auth"]["type"], "oauth2", "{s:#}");
    assert_eq!(app.post("/v1/servers/field/refresh").await, 202);

    let deadline = Instant::now() + DEADLINE;
    let s = loop {
        let s = app.server("field").await;
        assert!(
            s["state"] == "connecting" || s["state"] == "unknown" || s["state"] == "healthy",
            "the exchange was cut short: {s:#}"
        );
        if s["state"] == "healthy" && s["tool_count"] == 7 {
            break s;
        }
        assert!(Instant::now() < deadline, "never healthy: {s:#}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(s["last_error"], Value::Null, "{s:#}");
    assert_eq!(s["consecutive_failures"], 0, "{s:#}");
    assert_eq!(s["auth"]["last_token_error"], Value::Null, "{s:#}");
    let left = expires_in_secs(&s);
    assert!((3400..=3600).contains(&left), "expires in {left} s: {s:#}");

    assert_eq!(idp.requests(), 1, "one exchange, shared by every need");
    assert_eq!(
        up.unauthorized_responses(),
        0,
        "a request went out before the token: {:?}",
        up.auth_rejections()
    );
    assert_eq!(up.bearer_tokens(), idp.issued_tokens());
    let request = idp.last_token_request().unwrap();
    assert_eq!(request.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(request.resource, Some(up.url()), "RFC 8707 resource");
    assert_eq!(token_refreshes(&app, "field", "success").await, 1.0);
    assert_eq!(token_refreshes(&app, "field", "failure").await, 0.0);
    let mut names = app.tool_names().await;
    names.sort();
    let mut want = namespaced("field", &tool_names(7));
    want.sort();
    assert_eq!(names, want);

    app.stop().await;
    assert_eq!(up.sessions_deleted(), 1, "the DELETE carried the bearer");
}

// ------------------------------------------------------------- refreshing

/// Tokens that live 2 s, polled every 500 ms for 10 s: refreshed ahead of
/// expiry (80% of `expires_in`), counted, and no 401 ever surfaces.
#[actix_web::test]
async fn short_lived_tokens_are_refreshed_ahead_and_discovery_never_fails() {
    let idp = TokenEndpoint::builder()
        .client("c", "s")
        .expires_in(Some(2))
        .start()
        .unwrap();
    let up = TestUpstream::builder()
        .tools(3)
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();
    let entry = oauth2_entry(
        &up.url(),
        Some(&idp.token_url()),
        "c",
        "s",
        "",
        ", poll_interval: 500ms",
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("short", entry)]))).await;
    app.wait_healthy("short", 3).await;
    let lists_before = up.requests("tools/list");

    let samples = hold(&app, "short", Duration::from_secs(10), |s| {
        healthy_and_clean(s)?;
        if s["tool_count"] != 3 {
            return Err(format!("tool_count {}", s["tool_count"]));
        }
        Ok(())
    })
    .await;

    let issued = idp.tokens_issued();
    assert!(issued > 3, "only {issued} tokens in 10 s of 2 s tokens");
    assert_eq!(idp.requests() as usize, issued, "a token request failed");
    assert!(
        up.requests("tools/list") >= lists_before + 10,
        "polling did not run: {} tools/list",
        up.requests("tools/list") - lists_before
    );
    assert!(
        up.bearer_tokens().len() >= issued - 1,
        "refreshed tokens not used: {} of {issued}",
        up.bearer_tokens().len()
    );
    // Proactive: each refresh came before the previous token expired.
    let requests = idp.token_requests();
    let late: Vec<Duration> = requests
        .windows(2)
        .map(|w| w[1].at.saturating_duration_since(w[0].answered_at))
        .filter(|gap| *gap >= Duration::from_secs(2))
        .collect();
    assert!(
        late.len() <= 1,
        "refreshes after expiry (on a 401, not ahead): {late:?}"
    );
    let expiries: HashSet<String> = samples
        .iter()
        .filter_map(|s| s["auth"]["token_expires_at"].as_str().map(str::to_owned))
        .collect();
    assert!(
        expiries.len() >= 3,
        "token_expires_at never moved: {expiries:?}"
    );
    assert_eq!(
        token_refreshes(&app, "short", "success").await,
        issued as f64
    );
    assert_eq!(token_refreshes(&app, "short", "failure").await, 0.0);
    eprintln!(
        "401s answered (and absorbed) over the window: {}",
        up.unauthorized_responses()
    );
    app.stop().await;
}

/// One 401 mid-session (every token revoked): one fresh token, the request
/// retried with it, the server still `healthy`.
#[actix_web::test]
async fn a_401_mid_session_gets_one_fresh_token_and_the_request_is_retried() {
    let idp = TokenEndpoint::builder().client("c", "s").start().unwrap();
    let up = TestUpstream::builder()
        .tools(4)
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();
    let entry = oauth2_entry(&up.url(), Some(&idp.token_url()), "c", "s", "", "");
    let app = spawn_app(&format!(
        "{LOCAL_WRITES}{FAST}{}",
        servers_yaml(&[("mid", entry)])
    ))
    .await;
    let before = app.wait_healthy("mid", 4).await;
    assert_eq!(idp.requests(), 1);
    let lists = up.requests("tools/list");

    assert_eq!(idp.store().revoke_all(), 1);
    up.set_tools(5);
    assert_eq!(app.post("/v1/servers/mid/refresh").await, 202);
    let s = app
        .wait_server("mid", "refreshed after the 401", |s| {
            s["state"] == "healthy"
                && s["tool_count"] == 5
                && s["last_success_at"] != before["last_success_at"]
        })
        .await;

    assert_eq!(s["last_error"], Value::Null, "{s:#}");
    assert_eq!(s["consecutive_failures"], 0, "{s:#}");
    assert_eq!(idp.requests(), 2, "exactly one fresh token");
    let rejections = up.auth_rejections();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(rejections[0].token, Some(idp.issued_tokens()[0].clone()));
    assert_eq!(
        up.requests("tools/list"),
        lists + 1,
        "the refused tools/list retried once"
    );
    assert_eq!(
        up.last_header_for("tools/list", "authorization"),
        Some(format!("Bearer {}", idp.issued_tokens()[1]))
    );
    assert_eq!(token_refreshes(&app, "mid", "success").await, 2.0);
    app.stop().await;
}

/// A fresh token refused too: `degraded`, and no third token.
#[actix_web::test]
async fn a_freshly_issued_token_refused_again_degrades_the_server() {
    let idp = TokenEndpoint::builder().client("c", "s").start().unwrap();
    // The upstream trusts another store: no issued token is ever valid.
    let up = TestUpstream::builder()
        .require_bearer(TokenStore::new())
        .start()
        .unwrap();
    let entry = oauth2_entry(&up.url(), Some(&idp.token_url()), "c", "s", "", "");
    let app = spawn_app(&format!(
        "{ONE_ATTEMPT}{}",
        servers_yaml(&[("refused", entry)])
    ))
    .await;
    let s = app.wait_state("refused", "degraded").await;
    let error = last_error(&s);
    assert!(
        error.contains("upstream rejected a freshly issued token (401)"),
        "{s:#}"
    );
    assert_eq!(idp.requests(), 2, "the first token and one fresh one");
    assert_eq!(up.unauthorized_responses(), 2, "{:?}", up.auth_rejections());
    app.stop().await;
}

// ------------------------------------------------------ token endpoint errors

/// `invalid_client`: `degraded` with the RFC 6749 error and the token URL;
/// the secret in no API output; the upstream never called.
#[actix_web::test]
async fn invalid_client_degrades_with_a_clear_error_and_no_secret_anywhere() {
    let idp = TokenEndpoint::builder()
        .fail_with(TokenError::invalid_client())
        .start()
        .unwrap();
    let up = TestUpstream::builder()
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();
    let entry = oauth2_entry(
        &up.url(),
        Some(&idp.token_url()),
        "leaky-client",
        LEAKY_SECRET,
        "",
        "",
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("oc", entry)]))).await;
    let s = app.wait_state("oc", "degraded").await;
    let error = last_error(&s);
    for needle in [
        "invalid_client",
        "client authentication failed",
        idp.token_url().as_str(),
    ] {
        assert!(error.contains(needle), "{needle:?} missing in {error:?}");
    }
    let token_error = s["auth"]["last_token_error"].as_str().unwrap_or_default();
    assert!(token_error.contains("invalid_client"), "{s:#}");
    assert_eq!(s["auth"]["token_expires_at"], Value::Null);
    // The secret did reach the token endpoint (so its absence below means
    // something).
    let sent = idp.token_requests()[0].clone();
    assert_eq!(sent.client_secret.as_deref(), Some(LEAKY_SECRET));
    assert_eq!(up.http_requests(), 0, "no request without a token");
    let deadline = Instant::now() + DEADLINE;
    while token_refreshes(&app, "oc", "failure").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the failed exchange is not counted"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    let basic = client_secret_basic("leaky-client", LEAKY_SECRET);
    for path in ["/v1/servers", "/v1/servers/oc", "/metrics", "/v1/tools"] {
        let (status, text) = app.get_text(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !text.contains(LEAKY_SECRET),
            "{path} leaks the secret: {text}"
        );
        assert!(!text.contains(&basic[6..]), "{path} leaks the credentials");
    }
    app.stop().await;
}

/// `token_timeout` bounds the exchange (and nothing else does).
#[actix_web::test]
async fn token_timeout_bounds_a_hung_token_endpoint() {
    let idp = TokenEndpoint::builder()
        .delay(Duration::from_secs(20))
        .start()
        .unwrap();
    let up = TestUpstream::builder()
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();
    let entry = oauth2_entry(
        &up.url(),
        Some(&idp.token_url()),
        "c",
        "s",
        ", token_timeout: 1s",
        "",
    );
    let app = spawn_app(&format!(
        "{ONE_ATTEMPT}{}",
        servers_yaml(&[("slow", entry)])
    ))
    .await;
    let started = Instant::now();
    let s = app.wait_state("slow", "degraded").await;
    assert!(started.elapsed() < Duration::from_secs(10), "{s:#}");
    assert!(last_error(&s).contains(&idp.token_url()), "{s:#}");
    assert!(s["auth"]["last_token_error"].is_string(), "{s:#}");
    assert_eq!(idp.requests(), 1);
    app.stop().await;
}

/// The leak check on the real binary's debug logs: every kind of secret
/// (client secrets, issued tokens, bearer token, password, header value, and
/// their Basic encodings) is absent from stderr, the API and the metrics.
#[actix_web::test]
async fn no_secret_in_the_binary_debug_logs_or_its_api() {
    let bad_idp = TokenEndpoint::builder()
        .fail_with(TokenError::invalid_client())
        .start()
        .unwrap();
    let bad = TestUpstream::builder()
        .require_bearer(bad_idp.bearer_auth())
        .start()
        .unwrap();
    let good_idp = TokenEndpoint::builder()
        .client("good-client", "good-secret-4d1f")
        .start()
        .unwrap();
    let good = TestUpstream::builder()
        .require_bearer(good_idp.bearer_auth())
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let static_store = TokenStore::new();
    static_store.insert("static-bearer-9c2e", None);
    let bearer = TestUpstream::builder()
        .require_bearer(static_store)
        .start()
        .unwrap();
    let basic = TestUpstream::builder()
        .required_header("Authorization", http_basic("reader", "basic-pw-77aa"))
        .start()
        .unwrap();
    let hdr = TestUpstream::builder()
        .required_header("X-Api-Key", "hdr-value-5e5e")
        .start()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let yaml = format!(
        "discovery:\n  backoff: {{ initial: 100ms, max: 1s }}\n{}",
        servers_yaml(&[
            (
                "bad",
                oauth2_entry(&bad.url(), Some(&bad_idp.token_url()), "bad-client", LEAKY_SECRET, "", "")
            ),
            (
                "good",
                oauth2_entry(
                    &good.url(),
                    Some(&good_idp.token_url()),
                    "good-client",
                    "good-secret-4d1f",
                    "",
                    ""
                )
            ),
            (
                "bearer",
                format!(
                    "{{ url: {}, auth: {{ type: bearer, token: static-bearer-9c2e }} }}",
                    q(&bearer.url())
                )
            ),
            (
                "basic",
                format!(
                    "{{ url: {}, auth: {{ type: basic, username: reader, password: basic-pw-77aa }} }}",
                    q(&basic.url())
                )
            ),
            (
                "hdr",
                format!(
                    "{{ url: {}, headers: {{ X-Api-Key: hdr-value-5e5e }} }}",
                    q(&hdr.url())
                )
            ),
        ])
    );
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("stderr.log");
    let mut engine = EngineProcess::start(&config, Some(&log));

    let servers = engine
        .wait("bad degraded, the others healthy", |s| {
            state(s, "bad") == "degraded"
                && ["good", "bearer", "basic", "hdr"]
                    .iter()
                    .all(|n| state(s, n) == "healthy")
                && find(s, "good")["push_stream"] == "connected"
        })
        .await;
    assert!(
        find(&servers, "bad")["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid_client"),
        "{servers:#?}"
    );
    // Let a second failed exchange happen, so retries are logged too.
    until("a retried exchange", || bad_idp.requests() >= 2).await;

    let mut secrets: Vec<String> = [
        LEAKY_SECRET,
        "good-secret-4d1f",
        "static-bearer-9c2e",
        "basic-pw-77aa",
        "hdr-value-5e5e",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    secrets.extend(good_idp.issued_tokens());
    assert!(!good_idp.issued_tokens().is_empty());
    for (id, secret) in [
        ("bad-client", LEAKY_SECRET),
        ("good-client", "good-secret-4d1f"),
    ] {
        secrets.push(client_secret_basic(id, secret)[6..].to_owned());
    }
    secrets.push(base64_encode(b"reader:basic-pw-77aa"));

    let mut outputs = Vec::new();
    for path in [
        "/v1/servers",
        "/v1/servers/bad",
        "/v1/servers/good",
        "/v1/servers/bearer",
        "/v1/servers/basic",
        "/v1/servers/hdr",
        "/metrics",
    ] {
        outputs.push((path.to_owned(), engine.get_text(path).await));
    }
    engine.terminate().await;
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.lines().count() > 5 && logs.contains("bad"),
        "the debug logs were not captured:\n{logs}"
    );
    outputs.push(("stderr (RUST_LOG=debug)".to_owned(), logs));
    for (what, text) in &outputs {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} contains the secret {secret:?}:\n{text}"
            );
        }
    }
}

fn state<'a>(servers: &'a [Value], name: &str) -> &'a str {
    find(servers, name)["state"].as_str().unwrap_or_default()
}

// ----------------------------------------------------------------- discovery

/// No `token_url`: 401 + `resource_metadata` -> protected resource metadata
/// -> authorization server metadata -> token -> `healthy`; the token request
/// carries `resource` (the MCP URL) and the configured scopes.
#[actix_web::test]
async fn the_token_endpoint_is_discovered_from_the_challenge() {
    let idp = TokenEndpoint::builder().client("c", "s").start().unwrap();
    let up = TestUpstream::builder()
        .tools(2)
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();
    let entry = oauth2_entry(
        &up.url(),
        None,
        "c",
        "s",
        ", scopes: [mcp.read, mcp.write]",
        "",
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("disc", entry)]))).await;
    let s = app.wait_healthy("disc", 2).await;
    assert_eq!(s["last_error"], Value::Null);
    assert_eq!(s["auth"]["type"], "oauth2");

    let rejections = up.auth_rejections();
    assert_eq!(
        rejections.len(),
        1,
        "one unauthenticated probe: {rejections:?}"
    );
    assert_eq!(rejections[0].token, None);
    assert_eq!(rejections[0].http_method, "POST");
    assert_eq!(
        first(up.prm_requests(), 1),
        [(PRM_PATH.to_owned(), 200)],
        "the resource_metadata of the challenge first"
    );
    assert_eq!(
        first(idp.metadata_requests(), 1),
        [("/.well-known/oauth-authorization-server".to_owned(), 200)]
    );
    assert_eq!(idp.requests(), 1);
    let request = idp.last_token_request().unwrap();
    assert_eq!(request.resource, Some(up.url()), "RFC 8707 resource");
    assert_eq!(request.scope.as_deref(), Some("mcp.read mcp.write"));
    assert_eq!(request.auth_method, Some(ClientAuthMethod::Basic));
    app.stop().await;
}

/// A challenge without `resource_metadata`: the well-known URIs, path-suffixed
/// first, then the root one.
#[actix_web::test]
async fn without_resource_metadata_the_well_known_uris_are_tried_in_order() {
    let idp = TokenEndpoint::builder().client("c", "s").start().unwrap();
    let suffixed = TestUpstream::builder()
        .tools(2)
        .require_bearer(
            idp.bearer_auth()
                .without_resource_metadata()
                .prm_docs(true, false),
        )
        .start()
        .unwrap();
    let rooted = TestUpstream::builder()
        .tools(3)
        .require_bearer(
            idp.bearer_auth()
                .without_resource_metadata()
                .prm_docs(false, true),
        )
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            (
                "suffixed",
                oauth2_entry(&suffixed.url(), None, "c", "s", "", "")
            ),
            (
                "rooted",
                oauth2_entry(&rooted.url(), None, "c", "s", "", "")
            ),
        ])
    ))
    .await;
    app.wait_healthy("suffixed", 2).await;
    app.wait_healthy("rooted", 3).await;
    assert_eq!(
        first(suffixed.prm_requests(), 1),
        [(PRM_PATH.to_owned(), 200)]
    );
    assert_eq!(
        first(rooted.prm_requests(), 2),
        [(PRM_PATH.to_owned(), 404), (PRM_ROOT_PATH.to_owned(), 200)]
    );
    let mut resources: Vec<String> = idp
        .token_requests()
        .iter()
        .filter_map(|r| r.resource.clone())
        .collect();
    resources.sort();
    let mut want = vec![suffixed.url(), rooted.url()];
    want.sort();
    assert_eq!(resources, want);
    app.stop().await;
}

/// A `scope` in the 401 challenge wins over the configured scopes.
#[actix_web::test]
async fn a_scope_in_the_challenge_wins_over_configured_scopes() {
    let idp = TokenEndpoint::builder().client("c", "s").start().unwrap();
    let up = TestUpstream::builder()
        .require_bearer(idp.bearer_auth().challenge_scope("mcp:tools mcp:read"))
        .start()
        .unwrap();
    let entry = oauth2_entry(
        &up.url(),
        None,
        "c",
        "s",
        ", scopes: [configured.scope]",
        "",
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("sc", entry)]))).await;
    app.wait_healthy("sc", 5).await;
    assert_eq!(
        idp.last_token_request().unwrap().scope.as_deref(),
        Some("mcp:tools mcp:read")
    );
    app.stop().await;
}

/// RFC 9728 section 3.3 and the MCP spec's token audience binding: metadata
/// whose `resource` is not this server (here another origin) must not be
/// used — else any upstream could have the engine mint, with its client
/// credentials, a token for someone else's resource and receive it.
#[actix_web::test]
async fn metadata_for_another_resource_is_not_used() {
    let idp = TokenEndpoint::builder().client("c", "s").start().unwrap();
    let up = TestUpstream::builder()
        .require_bearer(
            idp.bearer_auth()
                .prm_resource("https://elsewhere.example/mcp"),
        )
        .start()
        .unwrap();
    let entry = oauth2_entry(&up.url(), None, "c", "s", "", "");
    let app = spawn_app(&format!(
        "{ONE_ATTEMPT}{}",
        servers_yaml(&[("other", entry)])
    ))
    .await;
    let s = app
        .wait_server("other", "done with its first attempt", |s| {
            s["state"] == "healthy" || s["state"] == "degraded"
        })
        .await;
    assert_eq!(
        idp.token_requests()
            .iter()
            .map(|r| r.resource.clone())
            .collect::<Vec<_>>(),
        Vec::<Option<String>>::new(),
        "a token was requested for another resource: {s:#}"
    );
    assert_eq!(s["state"], "degraded", "{s:#}");
    assert!(last_error(&s).contains("resource"), "{s:#}");
    app.stop().await;
}

/// Authorization server metadata in the spec's order: RFC 8414 first, then
/// OpenID Connect Discovery; with an issuer path, path insertion before path
/// appending.
#[actix_web::test]
async fn openid_configuration_and_issuer_paths_are_found_in_the_spec_order() {
    let openid = TokenEndpoint::builder()
        .client("c", "s")
        .metadata(AsMetadataDocs::OPENID)
        .start()
        .unwrap();
    let tenant = TokenEndpoint::builder()
        .client("c", "s")
        .issuer_path("/tenant1")
        .metadata(AsMetadataDocs {
            oauth: false,
            openid_insert: false,
            openid_append: true,
        })
        .start()
        .unwrap();
    let up1 = TestUpstream::builder()
        .tools(2)
        .require_bearer(openid.bearer_auth())
        .start()
        .unwrap();
    let up2 = TestUpstream::builder()
        .tools(3)
        .require_bearer(tenant.bearer_auth())
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            ("openid", oauth2_entry(&up1.url(), None, "c", "s", "", "")),
            ("tenant", oauth2_entry(&up2.url(), None, "c", "s", "", "")),
        ])
    ))
    .await;
    app.wait_healthy("openid", 2).await;
    app.wait_healthy("tenant", 3).await;
    assert_eq!(
        first(openid.metadata_requests(), 2),
        [
            ("/.well-known/oauth-authorization-server".to_owned(), 404),
            ("/.well-known/openid-configuration".to_owned(), 200),
        ]
    );
    assert_eq!(
        first(tenant.metadata_requests(), 3),
        [
            (
                "/.well-known/oauth-authorization-server/tenant1".to_owned(),
                404
            ),
            ("/.well-known/openid-configuration/tenant1".to_owned(), 404),
            ("/tenant1/.well-known/openid-configuration".to_owned(), 200),
        ]
    );
    assert_eq!(openid.tokens_issued(), 1);
    assert_eq!(tenant.tokens_issued(), 1);
    app.stop().await;
}

// ------------------------------------------------------ client authentication

/// `client_secret_basic` by default, credentials form-urlencoded before
/// base64 (RFC 6749 2.3.1) — a colon in the id and `@ +&=` in the secret
/// survive — with `audience` and `resource`.
#[actix_web::test]
async fn client_secret_basic_is_the_default_with_form_urlencoded_credentials() {
    let (id, secret) = ("svc:reader", "p@ss w+rd&=x");
    let idp = TokenEndpoint::builder()
        .client(id, secret)
        .auth_method(AcceptedAuth::Basic)
        .start()
        .unwrap();
    let up = TestUpstream::builder()
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();
    let entry = oauth2_entry(
        &up.url(),
        Some(&idp.token_url()),
        id,
        secret,
        ", audience: \"https://api.example.test\"",
        "",
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("basic", entry)]))).await;
    app.wait_healthy("basic", 5).await;
    let r = idp.last_token_request().unwrap();
    assert_eq!(r.auth_method, Some(ClientAuthMethod::Basic));
    assert_eq!(r.client_id.as_deref(), Some(id));
    assert_eq!(r.client_secret.as_deref(), Some(secret));
    assert_eq!(
        r.header("authorization"),
        Some(client_secret_basic(id, secret))
    );
    assert_eq!(
        r.field("client_secret"),
        None,
        "the secret went in the form too"
    );
    assert_eq!(r.grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(r.audience.as_deref(), Some("https://api.example.test"));
    assert_eq!(r.resource, Some(up.url()));
    assert_eq!(r.scope, None, "no scopes configured, none sent");
    assert_eq!(idp.requests(), 1);
    app.stop().await;
}

/// `client_auth: post`: id and secret in the form, no Authorization header.
#[actix_web::test]
async fn client_secret_post_when_configured() {
    let idp = TokenEndpoint::builder()
        .client("post-client", "post-secret")
        .auth_method(AcceptedAuth::Post)
        .start()
        .unwrap();
    let up = TestUpstream::builder()
        .require_bearer(idp.bearer_auth())
        .start()
        .unwrap();
    let entry = oauth2_entry(
        &up.url(),
        Some(&idp.token_url()),
        "post-client",
        "post-secret",
        ", client_auth: post, scopes: [one]",
        "",
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("post", entry)]))).await;
    app.wait_healthy("post", 5).await;
    let r = idp.last_token_request().unwrap();
    assert_eq!(r.auth_method, Some(ClientAuthMethod::Post));
    assert_eq!(r.field("client_id").as_deref(), Some("post-client"));
    assert_eq!(r.field("client_secret").as_deref(), Some("post-secret"));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.scope.as_deref(), Some("one"));
    assert_eq!(idp.requests(), 1);
    app.stop().await;
}

/// Discovered: the method comes from `token_endpoint_auth_methods_supported`
/// — the configured one if listed, else the first of basic/post listed.
#[actix_web::test]
async fn the_client_auth_method_is_picked_from_the_metadata() {
    // Only post listed (and accepted); basic configured by default.
    let post_only = TokenEndpoint::builder()
        .client("c", "s")
        .auth_method(AcceptedAuth::Post)
        .auth_methods_supported(["client_secret_post"])
        .start()
        .unwrap();
    // Both listed, post first: the configured basic still wins.
    let both = TokenEndpoint::builder()
        .client("c", "s")
        .auth_methods_supported(["client_secret_post", "client_secret_basic"])
        .start()
        .unwrap();
    let up1 = TestUpstream::builder()
        .require_bearer(post_only.bearer_auth())
        .start()
        .unwrap();
    let up2 = TestUpstream::builder()
        .require_bearer(both.bearer_auth())
        .start()
        .unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            ("postonly", oauth2_entry(&up1.url(), None, "c", "s", "", "")),
            ("both", oauth2_entry(&up2.url(), None, "c", "s", "", "")),
        ])
    ))
    .await;
    app.wait_healthy("postonly", 5).await;
    app.wait_healthy("both", 5).await;
    let methods = |idp: &TokenEndpoint| -> Vec<_> {
        idp.token_requests().iter().map(|r| r.auth_method).collect()
    };
    assert_eq!(methods(&post_only), vec![Some(ClientAuthMethod::Post)]);
    assert_eq!(methods(&both), vec![Some(ClientAuthMethod::Basic)]);
    app.stop().await;
}

// ------------------------------------------------------------------ 403

/// 403 `insufficient_scope` is reported as such.
#[actix_web::test]
async fn insufficient_scope_degrades_and_says_so() {
    let idp = TokenEndpoint::builder().client("c", "s").start().unwrap();
    let up = TestUpstream::builder()
        .require_bearer(idp.bearer_auth().insufficient_scope("mcp:admin"))
        .start()
        .unwrap();
    let entry = oauth2_entry(&up.url(), Some(&idp.token_url()), "c", "s", "", "");
    let app = spawn_app(&format!(
        "{ONE_ATTEMPT}{}",
        servers_yaml(&[("scope", entry)])
    ))
    .await;
    let s = app.wait_state("scope", "degraded").await;
    assert!(last_error(&s).contains("insufficient_scope"), "{s:#}");
    assert!(up.forbidden_responses() >= 1);
    app.stop().await;
}

// ------------------------------------------------------------ static auth

/// `bearer`, `basic` and static `headers` reach the upstream on every
/// request: POSTs, the push stream's GET, and the DELETE at shutdown.
#[actix_web::test]
async fn static_bearer_basic_and_headers_reach_every_request() {
    let store = TokenStore::new();
    store.insert("static-bearer-9c2e", None);
    let bearer = TestUpstream::builder()
        .tools(2)
        .require_bearer(store)
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let basic_value = http_basic("reader", "pa:ss w0rd");
    let basic = TestUpstream::builder()
        .tools(3)
        .required_header("Authorization", basic_value.clone())
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let hdr = TestUpstream::builder()
        .tools(4)
        .required_header("X-Api-Key", "hdr-value-5e5e")
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let plain = TestUpstream::builder().tools(1).start().unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            (
                "bearer",
                format!(
                    "{{ url: {}, auth: {{ type: bearer, token: static-bearer-9c2e }} }}",
                    q(&bearer.url())
                )
            ),
            (
                "basic",
                format!(
                    "{{ url: {}, auth: {{ type: basic, username: reader, password: \"pa:ss w0rd\" }} }}",
                    q(&basic.url())
                )
            ),
            (
                "hdr",
                format!(
                    "{{ url: {}, headers: {{ X-Api-Key: hdr-value-5e5e }} }}",
                    q(&hdr.url())
                )
            ),
            ("plain", format!("{{ url: {} }}", q(&plain.url()))),
        ])
    ))
    .await;
    for (name, tools, kind) in [
        ("bearer", 2, "bearer"),
        ("basic", 3, "basic"),
        ("hdr", 4, "none"),
        ("plain", 1, "none"),
    ] {
        let s = app.wait_healthy(name, tools).await;
        assert_eq!(s["auth"]["type"], kind, "{s:#}");
        assert_eq!(s["auth"]["token_expires_at"], Value::Null, "{s:#}");
        assert_eq!(s["auth"]["last_token_error"], Value::Null, "{s:#}");
    }
    for name in ["bearer", "basic", "hdr"] {
        app.wait_server(name, "push stream connected", |s| {
            s["push_stream"] == "connected"
        })
        .await;
    }
    assert_eq!(bearer.unauthorized_responses(), 0);
    for (up, header, value) in [
        (&bearer, "authorization", "Bearer static-bearer-9c2e"),
        (&basic, "authorization", basic_value.as_str()),
        (&hdr, "x-api-key", "hdr-value-5e5e"),
    ] {
        let gets = up.get_log();
        assert!(!gets.is_empty());
        for get in &gets {
            assert_eq!(get.header(header).as_deref(), Some(value), "{get:?}");
            assert_eq!(get.status, 200, "{get:?}");
        }
    }
    let (_, servers) = app.get_text("/v1/servers").await;
    for secret in [
        "static-bearer-9c2e",
        "pa:ss w0rd",
        &basic_value[6..],
        "hdr-value-5e5e",
    ] {
        assert!(!servers.contains(secret), "{secret:?} leaked: {servers}");
    }
    app.stop().await;
    for (name, up) in [("bearer", &bearer), ("basic", &basic), ("hdr", &hdr)] {
        assert_eq!(up.sessions_deleted(), 1, "{name}: DELETE without the auth");
    }
}

/// OAuth2 on the push stream: the GET carries the current token, the stream
/// connects, and a list_changed on it refreshes the tools.
#[actix_web::test]
async fn the_push_stream_carries_the_oauth2_token() {
    let idp = TokenEndpoint::builder().client("c", "s").start().unwrap();
    let up = TestUpstream::builder()
        .tools(2)
        .require_bearer(idp.bearer_auth())
        .get_stream(GetStream::Open)
        .start()
        .unwrap();
    let entry = oauth2_entry(&up.url(), Some(&idp.token_url()), "c", "s", "", "");
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("push", entry)]))).await;
    app.wait_healthy("push", 2).await;
    app.wait_server("push", "push stream connected", |s| {
        s["push_stream"] == "connected"
    })
    .await;
    let token = idp.issued_tokens()[0].clone();
    for get in up.get_log() {
        assert_eq!(get.header("authorization"), Some(format!("Bearer {token}")));
        assert_eq!(get.status, 200);
    }
    assert_eq!(up.unauthorized_responses(), 0, "{:?}", up.auth_rejections());

    up.set_tools(6);
    until("the stream is open", || up.open_push_streams() == 1).await;
    assert_eq!(up.notify_tools_changed(), 1);
    app.wait_healthy("push", 6).await;
    assert_eq!(idp.requests(), 1);
    app.stop().await;
}

// --------------------------------------------------------- Python SDK server

/// The official Python SDK server behind a bearer requirement, with a static
/// `bearer` — over Streamable HTTP and over the 2024-11-05 transport.
#[actix_web::test]
async fn python_sdk_behind_a_bearer_with_a_static_token() {
    let peer = crate::require_peer!(peers::python_with_bearer(
        PythonTransport::StreamableHttp,
        "py-static-token"
    ));
    let sse = crate::require_peer!(peers::python_with_bearer(
        PythonTransport::Sse,
        "py-static-token"
    ));
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            (
                "py",
                format!(
                    "{{ url: {}, transport: streamable-http, auth: {{ type: bearer, token: py-static-token }} }}",
                    q(peer.url())
                )
            ),
            (
                "pysse",
                format!(
                    "{{ url: {}, transport: sse, auth: {{ type: bearer, token: py-static-token }} }}",
                    q(sse.url())
                )
            ),
        ])
    ))
    .await;
    for name in ["py", "pysse"] {
        let s = app.wait_healthy(name, PYTHON_TOOLS.len()).await;
        assert_eq!(s["last_error"], Value::Null);
        assert_eq!(s["auth"]["type"], "bearer");
    }
    app.stop().await;
}

/// The Python SDK server behind a bearer, with `oauth2`: the token endpoint
/// issues the token the server expects.
#[actix_web::test]
async fn python_sdk_behind_a_bearer_with_oauth2() {
    let peer = crate::require_peer!(peers::python_with_bearer(
        PythonTransport::StreamableHttp,
        "py-oauth-token"
    ));
    let idp = TokenEndpoint::builder()
        .client("py-client", "py-secret")
        .fixed_token("py-oauth-token")
        .start()
        .unwrap();
    let entry = oauth2_entry(
        peer.url(),
        Some(&idp.token_url()),
        "py-client",
        "py-secret",
        "",
        "",
    );
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[("pyoauth", entry)]))).await;
    let s = app.wait_healthy("pyoauth", PYTHON_TOOLS.len()).await;
    assert_eq!(s["last_error"], Value::Null);
    assert_eq!(s["auth"]["type"], "oauth2");
    assert!(s["auth"]["token_expires_at"].is_string(), "{s:#}");
    assert_eq!(idp.requests(), 1);
    assert_eq!(
        idp.last_token_request().unwrap().resource.as_deref(),
        Some(peer.url())
    );
    let mut names = app.tool_names().await;
    names.sort();
    let want: Vec<String> = PYTHON_TOOLS
        .iter()
        .map(|t| format!("pyoauth__{t}"))
        .collect();
    assert_eq!(names, want);
    app.stop().await;
}

#[test]
fn the_metric_helper_ignores_label_order() {
    let text = "x_total{outcome=\"success\",server=\"a\"} 3\nx_total{outcome=\"failure\",server=\"a\"} 1\n";
    assert_eq!(
        series(text, "x_total", &[("server", "a"), ("outcome", "success")]),
        Some(3.0)
    );
    assert_eq!(
        series(text, "x_total", &[("server", "b"), ("outcome", "success")]),
        None
    );
}
