//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`
//! 0.2.0-alpha.12 on Node 22, installed pinned by scripts/setup-test-deps.sh)
//! runs its server scenarios against the engine's MCP endpoint (issue 11).
//!
//! The engine runs as a process of its own (the suite's runs block this
//! thread) with one upstream, tests/fixtures/conformance_server.py (Python
//! SDK 2.3.0, dual-era), which implements the tools the scenarios call,
//! configured twice: `conf` (the engine speaks 2026-07-28 with it) and
//! `confh` (`protocol: 2025-11-25`, the same process over the 2025
//! handshake). Targets:
//!
//! - `/mcp`: the scenarios about the endpoint itself (lifecycle, headers,
//!   DNS rebinding, caching, SSE streams, listing);
//! - `/mcp/conf` and `/mcp/confh`: the scenarios that call the fixture's
//!   tools by their upstream names (`tools-call-*`, `json-schema-2020-12`,
//!   and `server-stateless` once more, whose diagnostic tools live there).
//!
//! A run is one (scenario, target, spec version); a scenario that exists in
//! both eras runs at 2025-11-25 and at 2026-07-28. [`PASSING`] is the one
//! list of runs that pass, and the assertion is exact both ways, as in
//! `conformance.rs`: a listed run must pass (exit 0 and no WARNING), an
//! unlisted one must still fail, so a run that starts passing moves into the
//! list in the same change. The `fixture_*` tests run the same scenarios
//! against the fixture directly: a failure through the engine is then the
//! engine's.
//!
//! What a tools-only endpoint cannot pass (the `caching` scenario): it also
//! asks `prompts/list`, `resources/list` and `resources/templates/list`
//! (-32601 from a tools-only server, so those checks fail) and `resources/read`
//! (SKIPPED, nothing to read). Its checks that do apply are in
//! [`PASSING_CHECKS`].

use crate::process::{find, EngineProcess};
use crate::support::peers::{
    self, ConformanceRun, PeerError, PeerProcess, PythonV2Http, CONFORMANCE_UPSTREAM_TOOLS,
};

const V2025: &str = "2025-11-25";
const V2026: &str = "2026-07-28";

/// Runs that pass: `(scenario, target, spec version)`.
///
/// Not listed, and why (each still runs, and must still fail):
/// - `server-stateless` on `/mcp`: four checks call the diagnostic tools
///   (`test_missing_capability`, `test_streaming_elicitation`,
///   `test_logging_tool`) by those names, which exist on `/mcp` only as
///   `conf__...` ("Not testable"), and `test_trigger_tool_change` likewise
///   (a WARNING: no list change). Every other check passes
///   ([`PASSING_CHECKS`]).
/// - `caching`: a tools-only endpoint (see the module comment).
/// - `tools-call-with-logging`: it sends `logging/setLevel` first, which a
///   2025 endpoint that declares no `logging` capability answers -32601
///   (the fixture alone passes it).
/// - `tools-call-sampling`, `tools-call-elicitation` (2025 only) through
///   `/mcp/conf`: the 2026-07-28 upstream answers `input_required`, which
///   the engine refuses for a 2025 session (-32603 with a hint to use
///   2026-07-28). Through `/mcp/confh` (a 2025 upstream) they pass: its
///   requests are relayed to the suite's client (ADR 0024).
///
/// `tools-call-simple-text` and `tools-call-error` ask little (some text
/// block; `isError` with text): tests/e2e/gateway_interop.rs checks what
/// calls return exactly.
const PASSING: &[(&str, &str, &str)] = &[
    // The endpoint itself.
    ("server-initialize", "/mcp", V2025),
    ("tools-list", "/mcp", V2025),
    ("tools-list", "/mcp", V2026),
    ("http-header-validation", "/mcp", V2026),
    ("server-sse-multiple-streams", "/mcp", V2025),
    ("server-sse-multiple-streams", "/mcp", V2026),
    // Host and Origin: `evil.example.com` refused (421/403), the engine's own
    // origin served.
    ("dns-rebinding-protection", "/mcp", V2025),
    ("dns-rebinding-protection", "/mcp", V2026),
    // Every check, the relayed -32021 with its HTTP 400 and the list change
    // the trigger causes upstream among them.
    ("server-stateless", "/mcp/conf", V2026),
    // The upstream's tools and calls, for either upstream era and either
    // client era.
    ("json-schema-2020-12", "/mcp/conf", V2025),
    ("json-schema-2020-12", "/mcp/conf", V2026),
    ("json-schema-2020-12", "/mcp/confh", V2025),
    ("json-schema-2020-12", "/mcp/confh", V2026),
    ("tools-call-simple-text", "/mcp/conf", V2025),
    ("tools-call-simple-text", "/mcp/conf", V2026),
    ("tools-call-simple-text", "/mcp/confh", V2025),
    ("tools-call-simple-text", "/mcp/confh", V2026),
    ("tools-call-image", "/mcp/conf", V2025),
    ("tools-call-image", "/mcp/conf", V2026),
    ("tools-call-image", "/mcp/confh", V2025),
    ("tools-call-image", "/mcp/confh", V2026),
    ("tools-call-audio", "/mcp/conf", V2025),
    ("tools-call-audio", "/mcp/conf", V2026),
    ("tools-call-audio", "/mcp/confh", V2025),
    ("tools-call-audio", "/mcp/confh", V2026),
    ("tools-call-embedded-resource", "/mcp/conf", V2025),
    ("tools-call-embedded-resource", "/mcp/conf", V2026),
    ("tools-call-embedded-resource", "/mcp/confh", V2025),
    ("tools-call-embedded-resource", "/mcp/confh", V2026),
    ("tools-call-mixed-content", "/mcp/conf", V2025),
    ("tools-call-mixed-content", "/mcp/conf", V2026),
    ("tools-call-mixed-content", "/mcp/confh", V2025),
    ("tools-call-mixed-content", "/mcp/confh", V2026),
    ("tools-call-error", "/mcp/conf", V2025),
    ("tools-call-error", "/mcp/conf", V2026),
    ("tools-call-error", "/mcp/confh", V2025),
    ("tools-call-error", "/mcp/confh", V2026),
    // Progress relayed on the client's request stream.
    ("tools-call-with-progress", "/mcp/conf", V2025),
    ("tools-call-with-progress", "/mcp/conf", V2026),
    ("tools-call-with-progress", "/mcp/confh", V2025),
    ("tools-call-with-progress", "/mcp/confh", V2026),
    // A 2025 upstream's requests relayed to the 2025 client of the call.
    ("tools-call-sampling", "/mcp/confh", V2025),
    ("tools-call-elicitation", "/mcp/confh", V2025),
];

/// Checks named on their own: `(scenario, target, spec version, check id)`.
const PASSING_CHECKS: &[(&str, &str, &str, &str)] = &[
    // caching: what a tools-only server can pass.
    (
        "caching",
        "/mcp",
        V2026,
        "sep-2549-tools-list-caching-hints",
    ),
    ("caching", "/mcp", V2026, "sep-2549-ttl-non-negative"),
    ("caching", "/mcp", V2026, "sep-2549-cache-scope-valid"),
    // server-stateless on /mcp: every check but the diagnostic tools' ones.
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-request-meta-invalid-missing-meta",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-meta-invalid-400",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-request-meta-invalid-missing-protocol-version",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-request-meta-invalid-missing-client-capabilities",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-request-meta-client-info-optional",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-server-implements-discover",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-server-identifies-in-result-meta",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-server-declares-prompts-in-discover",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-discover-capabilities-match-handlers",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-server-unsupported-version-error",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-unsupported-version-400",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-header-mismatch-400",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-method-not-found-404-initialize",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-method-not-found-404-ping",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-method-not-found-404-logging-setlevel",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-method-not-found-404-resources-subscribe",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-method-not-found-404-resources-unsubscribe",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-method-not-found-404",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-server-sends-subscription-ack",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-server-tags-subscription-id",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-server-honors-notification-filter",
    ),
    (
        "server-stateless",
        "/mcp",
        V2026,
        "sep-2575-http-server-error-jsonrpc-id",
    ),
    // server-stateless on /mcp/conf: the upstream's -32021 comes back as
    // it was sent, and its list change reaches the listen stream.
    (
        "server-stateless",
        "/mcp/conf",
        V2026,
        "sep-2575-server-rejects-undeclared-capability",
    ),
    (
        "server-stateless",
        "/mcp/conf",
        V2026,
        "sep-2575-http-server-no-independent-requests-on-stream",
    ),
    (
        "server-stateless",
        "/mcp/conf",
        V2026,
        "sep-2575-server-no-log-without-loglevel",
    ),
    (
        "server-stateless",
        "/mcp/conf",
        V2026,
        "sep-2575-server-sends-tools-list-changed-on-subscription",
    ),
    // The attacker's Host is refused (the valid-origin half fails, above).
    (
        "dns-rebinding-protection",
        "/mcp",
        V2025,
        "localhost-host-rebinding-rejected",
    ),
    (
        "dns-rebinding-protection",
        "/mcp",
        V2026,
        "localhost-host-rebinding-rejected",
    ),
    // Valid tool names (SEP-986), one order every time.
    ("tools-list", "/mcp", V2025, "tools-name-format"),
    ("tools-list", "/mcp", V2026, "tools-name-format"),
    (
        "tools-list",
        "/mcp",
        V2026,
        "tools-list-deterministic-order",
    ),
    // Every message the engine sent is valid per the spec's schema.
    ("tools-list", "/mcp", V2025, "wire-schema-valid"),
    ("tools-list", "/mcp", V2026, "wire-schema-valid"),
    ("server-initialize", "/mcp", V2025, "wire-schema-valid"),
    (
        "tools-call-with-progress",
        "/mcp/conf",
        V2025,
        "wire-schema-valid",
    ),
    (
        "tools-call-with-progress",
        "/mcp/conf",
        V2026,
        "wire-schema-valid",
    ),
    (
        "tools-call-with-progress",
        "/mcp/confh",
        V2026,
        "wire-schema-valid",
    ),
];

/// The fixture and an engine in front of it, both ready.
struct Bench {
    _dir: tempfile::TempDir,
    _upstream: PeerProcess,
    engine: EngineProcess,
}

async fn bench() -> Result<Bench, PeerError> {
    let upstream = peers::conformance_upstream(PythonV2Http::Stateful)?;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mcp-discovery.yaml");
    let entry = |more: &str| {
        format!(
            "{{ url: \"{}\", transport: streamable-http{more} }}",
            upstream.url()
        )
    };
    std::fs::write(
        &config,
        format!(
            "{}{}",
            crate::helpers::FAST,
            crate::helpers::servers_yaml(&[
                ("conf", entry("")),
                ("confh", entry(", protocol: 2025-11-25")),
            ])
        ),
    )
    .unwrap();
    let engine = EngineProcess::start(&config, None);
    engine.wait_listening().await;
    let tools = CONFORMANCE_UPSTREAM_TOOLS.len();
    engine
        .wait("conf and confh healthy with the fixture's tools", |s| {
            ["conf", "confh"].iter().all(|name| {
                let s = find(s, name);
                s["state"] == "healthy" && s["tool_count"] == tools
            })
        })
        .await;
    Ok(Bench {
        _dir: dir,
        _upstream: upstream,
        engine,
    })
}

fn run_scenario(url: &str, scenario: &str, version: &str) -> Option<ConformanceRun> {
    let out = tempfile::tempdir().expect("tempdir");
    match peers::conformance_server(scenario, url, Some(version), out.path()) {
        Ok(run) => Some(run),
        Err(PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Runs `scenario` against `target` of the engine at each of `versions` and
/// holds each run to [`PASSING`] and [`PASSING_CHECKS`]; every version runs
/// before the test fails, and the failure names all that went wrong.
async fn check(scenario: &str, target: &str, versions: &[&str]) {
    let wrong = check_all(scenario, &[target], versions).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// [`check`] on several targets of one engine; what went wrong.
async fn check_all(scenario: &str, targets: &[&str], versions: &[&str]) -> Vec<String> {
    let bench = match bench().await {
        Ok(bench) => bench,
        Err(PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            return Vec::new();
        }
        Err(e) => panic!("{e}"),
    };
    let mut wrong = Vec::new();
    for target in targets {
        let url = format!("{}{target}", bench.engine.base);
        for version in versions {
            let Some(run) = run_scenario(&url, scenario, version) else {
                return Vec::new();
            };
            wrong.extend(judge(&run, scenario, target, version));
        }
    }
    wrong
}

/// Passed: the suite's exit status 0 and not one WARNING (a SHOULD it missed).
fn passed(run: &ConformanceRun) -> bool {
    run.passed && run.checks.iter().all(|c| c.status != "WARNING")
}

/// What is wrong with `run` by [`PASSING`] and [`PASSING_CHECKS`].
fn judge(run: &ConformanceRun, scenario: &str, target: &str, version: &str) -> Vec<String> {
    let failures = run.failures();
    let ok = passed(run);
    eprintln!(
        "conformance server {scenario} on {target} at {version}: {} ({} checks)",
        if ok { "PASSED" } else { "FAILED" },
        run.checks.len()
    );
    for line in &failures {
        eprintln!("  {line}");
    }
    let mut wrong = Vec::new();
    for (.., id) in PASSING_CHECKS
        .iter()
        .filter(|(s, t, v, _)| *s == scenario && *t == target && *v == version)
    {
        if run.status_of(id) != Some("SUCCESS") {
            wrong.push(format!(
                "conformance check {id} of {scenario} on {target} at {version} is {:?}:\n{}",
                run.status_of(id),
                failures.join("\n")
            ));
        }
    }
    if PASSING.contains(&(scenario, target, version)) {
        if !ok {
            wrong.push(format!(
                "conformance scenario {scenario} on {target} at {version} is listed as passing but failed:\n{}\n--- suite output:\n{}",
                failures.join("\n"),
                run.output
            ));
        }
    } else if ok {
        wrong.push(format!(
            "conformance scenario {scenario} on {target} at {version} passes now: add it to PASSING in tests/e2e/conformance_server.rs"
        ));
    } else if run.checks.is_empty() {
        wrong.push(format!(
            "conformance scenario {scenario} on {target} at {version} ran no check:\n{}",
            run.output
        ));
    }
    wrong
}

// ------------------------------------------------------ the endpoint itself

#[actix_web::test]
async fn server_initialize() {
    check("server-initialize", "/mcp", &[V2025]).await;
}

#[actix_web::test]
async fn server_stateless() {
    check("server-stateless", "/mcp", &[V2026]).await;
}

#[actix_web::test]
async fn server_stateless_with_the_diagnostic_tools() {
    check("server-stateless", "/mcp/conf", &[V2026]).await;
}

#[actix_web::test]
async fn tools_list() {
    check("tools-list", "/mcp", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn caching() {
    check("caching", "/mcp", &[V2026]).await;
}

#[actix_web::test]
async fn http_header_validation() {
    check("http-header-validation", "/mcp", &[V2026]).await;
}

#[actix_web::test]
async fn dns_rebinding_protection() {
    check("dns-rebinding-protection", "/mcp", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn server_sse_multiple_streams() {
    check("server-sse-multiple-streams", "/mcp", &[V2025, V2026]).await;
}

// ---------------------------------------- calls through /mcp/{server}

/// `scenario` through both servers: `conf` (2026-07-28 upstream) and
/// `confh` (2025 upstream), at `versions`.
async fn through_both(scenario: &str, versions: &[&str]) {
    let wrong = check_all(scenario, &["/mcp/conf", "/mcp/confh"], versions).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[actix_web::test]
async fn json_schema_2020_12() {
    through_both("json-schema-2020-12", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn tools_call_simple_text() {
    through_both("tools-call-simple-text", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn tools_call_image() {
    through_both("tools-call-image", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn tools_call_audio() {
    through_both("tools-call-audio", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn tools_call_embedded_resource() {
    through_both("tools-call-embedded-resource", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn tools_call_mixed_content() {
    through_both("tools-call-mixed-content", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn tools_call_error() {
    through_both("tools-call-error", &[V2025, V2026]).await;
}

#[actix_web::test]
async fn tools_call_with_progress() {
    through_both("tools-call-with-progress", &[V2025, V2026]).await;
}

// The three scenarios of features 2026-07-28 removed run at 2025-11-25 only.

#[actix_web::test]
async fn tools_call_with_logging() {
    through_both("tools-call-with-logging", &[V2025]).await;
}

#[actix_web::test]
async fn tools_call_sampling() {
    through_both("tools-call-sampling", &[V2025]).await;
}

#[actix_web::test]
async fn tools_call_elicitation() {
    through_both("tools-call-elicitation", &[V2025]).await;
}

// ----------------------------------------------- the fixture, directly

/// Every scenario the engine is held to, against the fixture with no engine
/// in between: all pass (so a failure through the engine is the engine's).
/// `caching` and `server-sse-multiple-streams` pass there too: the SDK
/// serves (empty) prompt and resource lists.
const FIXTURE_RUNS: &[(&str, &[&str])] = &[
    ("server-initialize", &[V2025]),
    ("server-stateless", &[V2026]),
    ("tools-list", &[V2025, V2026]),
    ("caching", &[V2026]),
    ("http-header-validation", &[V2026]),
    ("dns-rebinding-protection", &[V2025, V2026]),
    ("server-sse-multiple-streams", &[V2025, V2026]),
    ("json-schema-2020-12", &[V2025, V2026]),
    ("tools-call-simple-text", &[V2025, V2026]),
    ("tools-call-image", &[V2025, V2026]),
    ("tools-call-audio", &[V2025, V2026]),
    ("tools-call-embedded-resource", &[V2025, V2026]),
    ("tools-call-mixed-content", &[V2025, V2026]),
    ("tools-call-error", &[V2025, V2026]),
    ("tools-call-with-progress", &[V2025, V2026]),
    ("tools-call-with-logging", &[V2025]),
    ("tools-call-sampling", &[V2025]),
    ("tools-call-elicitation", &[V2025]),
];

fn fixture_passes(scenarios: &[(&str, &[&str])]) {
    let upstream = match peers::conformance_upstream(PythonV2Http::Stateful) {
        Ok(p) => p,
        Err(PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut failed = Vec::new();
    for (scenario, versions) in scenarios {
        for version in *versions {
            let Some(run) = run_scenario(upstream.url(), scenario, version) else {
                return;
            };
            if !passed(&run) {
                failed.push(format!(
                    "{scenario} at {version}:\n  {}",
                    run.failures().join("\n  ")
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "the conformance fixture fails on its own:\n{}",
        failed.join("\n")
    );
}

#[test]
fn fixture_passes_the_endpoint_scenarios() {
    fixture_passes(&FIXTURE_RUNS[..7]);
}

#[test]
fn fixture_passes_the_tool_scenarios() {
    fixture_passes(&FIXTURE_RUNS[7..]);
}
