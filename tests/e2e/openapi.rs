//! schemathesis against the real binary and its own `GET /openapi.json`:
//! a healthy upstream, one refusing connections, admin keys (writes are
//! authorized with a header passed to schemathesis), a SQLite store. No
//! server error, no answer outside the schema (status, content type, body,
//! headers), and every documented operation reached, counted by the
//! engine's own request metrics.
//!
//! The generated registration bodies are kept on loopback and off stdio by
//! tests/fixtures/schemathesis_hooks.py (every `url` becomes the refused
//! port; `command`/`args`/`env`/`cwd` are dropped).
//!
//! Knobs: `MCP_DISCOVERY_ST_SEED` (default fixed, printed),
//! `MCP_DISCOVERY_ST_EXAMPLES` (cases per operation, default 25). The long
//! run of the README sets both.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Command;

use serde_json::Value;

use crate::process::{find, EngineProcess};
use crate::require_peer;
use crate::support::peers::{repo_root, schemathesis};
use crate::support::upstream::{refusing_port, TestUpstream};

const ADMIN_KEY: &str = "openapi-test-admin-key-0123";
/// Fixed so that a failure reproduces; override to explore.
const DEFAULT_SEED: &str = "20260728";
const DEFAULT_EXAMPLES: &str = "25";
/// The checks that hold whatever another branch adds to the HTTP edge
/// (HEAD/OPTIONS answers would trip `unsupported_method`; data
/// acceptance checks judge validation the schema cannot express, such as
/// "`name` must equal the path's").
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance";

/// `(method, route pattern) -> {status: count}` from `/metrics`.
fn requests_by_route(metrics: &str) -> BTreeMap<(String, String), BTreeMap<u16, f64>> {
    let mut out: BTreeMap<(String, String), BTreeMap<u16, f64>> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("mcp_discovery_http_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned)
        };
        let (Some(method), Some(route), Some(status)) =
            (label("method"), label("route"), label("status"))
        else {
            continue;
        };
        *out.entry((method, route))
            .or_default()
            .entry(status.parse().unwrap())
            .or_default() += value.trim().parse::<f64>().unwrap();
    }
    out
}

#[actix_web::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let st = require_peer!(schemathesis());
    let healthy = TestUpstream::builder().tools(3).start().unwrap();
    let refused = refusing_port().unwrap();
    let refused_url = format!("http://127.0.0.1:{refused}/mcp");
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    let mut config = std::fs::File::create(&config_path).unwrap();
    write!(
        config,
        "admin:\n  api_keys: [\"{ADMIN_KEY}\"]\n\
         store:\n  url: \"sqlite://{}\"\n\
         discovery:\n  backoff: {{ initial: 100ms, max: 1s }}\n  connect_timeout: 2s\n  request_timeout: 5s\n\
         servers:\n  healthy: {{ url: \"{}\" }}\n  refused: {{ url: \"{refused_url}\" }}\n",
        dir.path().join("store.db").display(),
        healthy.url(),
    )
    .unwrap();
    drop(config);
    let engine = EngineProcess::start(&config_path, None);
    engine
        .wait("healthy up, refused degraded", |s| {
            find(s, "healthy")["state"] == "healthy" && find(s, "refused")["state"] == "degraded"
        })
        .await;

    let seed = std::env::var("MCP_DISCOVERY_ST_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let examples =
        std::env::var("MCP_DISCOVERY_ST_EXAMPLES").unwrap_or_else(|_| DEFAULT_EXAMPLES.into());
    eprintln!("schemathesis: seed {seed}, {examples} examples per operation");
    let mut cmd = Command::new(&st);
    cmd.current_dir(dir.path())
        .arg("run")
        .arg(format!("{}/openapi.json", engine.base))
        .args(["--url", &engine.base])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_KEY}")])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args(["--no-color"])
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", repo_root().join("tests/fixtures"))
        .env("MCP_DISCOVERY_ST_SAFE_URL", &refused_url);
    let output = actix_rt::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis failed (seed {seed}):\n{text}"
    );
    assert!(text.contains("17 selected / 17 total"), "{text}");

    // Every documented operation reached the route of the engine (the
    // metrics label is the route pattern), and nothing answered 5xx but a
    // starting /readyz.
    let doc: Value = serde_json::from_str(&engine.get_text("/openapi.json").await).unwrap();
    let seen = requests_by_route(&engine.get_text("/metrics").await);
    let mut missing = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let key = (method.to_uppercase(), path.clone());
            if !seen.contains_key(&key) {
                missing.insert(key);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operations schemathesis never reached: {missing:?}\n{seen:#?}"
    );
    for ((method, route), statuses) in &seen {
        for status in statuses.keys() {
            assert!(
                *status < 500 || (route == "/readyz" && *status == 503),
                "{method} {route} answered {status}: {statuses:?}"
            );
        }
    }
    // The writes did get through (the key is right, the bodies can be
    // valid): registrations were created.
    assert!(
        seen.get(&("POST".to_owned(), "/v1/servers".to_owned()))
            .is_some_and(|s| s.contains_key(&201)),
        "no registration succeeded: {seen:#?}"
    );
    let servers = engine.servers().await.unwrap();
    assert_eq!(find(&servers, "healthy")["state"], "healthy");
}
