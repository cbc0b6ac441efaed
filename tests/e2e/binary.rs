//! The real binary, as a user runs it: several upstreams, one refusing
//! connections and one that accepts and never answers; a bad config refused
//! with every problem listed; SIGTERM closes upstream sessions.

use std::io::Write;
use std::process::{Command, Output};

use serde_json::Value;

use crate::process::{find, EngineProcess, BIN};
use crate::support::upstream::{hanging_server, refusing_port, TestUpstream};

fn write_config(yaml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    file
}

#[actix_web::test]
async fn healthy_ones_first_refused_recovers_hung_times_out_sigterm_closes_sessions() {
    let a = TestUpstream::builder().tools(3).start().unwrap();
    let b = TestUpstream::builder()
        .tools(5)
        .page_size(2)
        .sse()
        .start()
        .unwrap();
    let refused = refusing_port().unwrap();
    let hung = hanging_server().unwrap();
    let config = write_config(&format!(
        "discovery:\n  request_timeout: 10s\n  connect_timeout: 2s\n  backoff: {{ initial: 100ms, max: 500ms }}\n\
         servers:\n  a: {{ url: \"{}\" }}\n  b: {{ url: \"{}\" }}\n  refused: {{ url: \"http://127.0.0.1:{refused}/mcp\" }}\n  hung: {{ url: \"{}\" }}\n",
        a.url(),
        b.url(),
        hung.url()
    ));
    let engine = EngineProcess::start(config.path(), None);

    let servers = engine
        .wait("a and b healthy", |s| {
            find(s, "a")["state"] == "healthy"
                && find(s, "a")["tool_count"] == 3
                && find(s, "b")["state"] == "healthy"
                && find(s, "b")["tool_count"] == 5
        })
        .await;
    // State, not timing: when the good ones were done, the hung one (10 s
    // request timeout) was still in its first attempt.
    assert_eq!(find(&servers, "hung")["state"], "connecting");

    let servers = engine
        .wait("refused degraded", |s| {
            find(s, "refused")["state"] == "degraded"
        })
        .await;
    let error = find(&servers, "refused")["last_error"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        error.contains("refused") && error.contains(&refused.to_string()),
        "{error}"
    );

    let late = TestUpstream::builder()
        .tools(2)
        .port(refused)
        .start()
        .unwrap();
    engine
        .wait("refused recovers on its own", |s| {
            find(s, "refused")["state"] == "healthy" && find(s, "refused")["tool_count"] == 2
        })
        .await;

    let servers = engine
        .wait("hung times out", |s| find(s, "hung")["state"] == "degraded")
        .await;
    assert!(find(&servers, "hung")["last_error"]
        .as_str()
        .unwrap()
        .contains("within 10 s"));

    // Graceful stop: every HTTP upstream sees its session DELETEd.
    let mut engine = engine;
    let exit = engine.terminate().await;
    assert!(exit.success(), "{exit:?}");
    for (name, up) in [("a", &a), ("b", &b), ("late", &late)] {
        assert_eq!(
            up.sessions_deleted(),
            1,
            "{name}: session not closed at shutdown"
        );
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn a_bad_config_is_refused_with_every_problem_and_exit_1() {
    let config = write_config(
        "listen: nowhere\n\
         discovery: { poll_interval: soon }\n\
         servers:\n\
         \x20 ok: { url: \"http://127.0.0.1:1/mcp\" }\n\
         \x20 bad__name: { url: \"http://127.0.0.1:1/mcp\" }\n\
         \x20 nourl: { transport: streamable-http }\n\
         \x20 relative: { url: \"/mcp\" }\n\
         \x20 secret: { url: \"http://127.0.0.1:1/mcp\", auth: { type: bearer, token: \"${MCP_DISCOVERY_TEST_UNSET_VAR}\" } }\n\
         \x20 typo: { url: \"http://127.0.0.1:1/mcp\", colour: blue }\n",
    );
    let path = config.path().to_str().unwrap();
    for args in [
        vec!["check", "--config", path],
        vec!["serve", "--config", path, "--listen", "127.0.0.1:0"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in [
            "listen",
            "discovery.poll_interval",
            "bad__name",
            "servers.nourl",
            "servers.relative.url",
            "MCP_DISCOVERY_TEST_UNSET_VAR",
            "colour",
        ] {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} missing in:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn not_yaml_is_refused_cleanly() {
    let config = write_config("servers: [unclosed\n  : : :\n");
    let out = run(&["check", "--config", config.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.is_empty());
}

#[test]
fn a_good_config_checks_ok_with_a_summary() {
    let out = run(&["check", "--config", "config/examples/full.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // full.yaml references env vars for its secrets; set them if it needs.
    if out.status.code() == Some(1) {
        assert!(stderr.contains("is not set"), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("servers"), "{stdout}");
}

#[actix_web::test]
async fn probe_prints_the_tools_or_fails_with_a_sentence() {
    let up = TestUpstream::builder().tools(3).start().unwrap();
    let url = up.url();
    // The probe runs its own System; keep ours free to serve the upstream.
    let out = actix_web::rt::task::spawn_blocking(move || run(&["probe", &url, "--json"]))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["protocol_version"], "2025-11-25");
    assert_eq!(v["tools"].as_array().unwrap().len(), 3);

    let port = refusing_port().unwrap();
    let out = run(&["probe", &format!("http://127.0.0.1:{port}/mcp")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("refused"), "{stderr}");
}
