//! `mcp-discovery probe --call TOOL [--arguments JSON]`: a `tools/call` on
//! the discovery session, in both eras (2026-07-28: `Mcp-Name` and the
//! `Mcp-Param-*` headers of SEP-2243), the result printed verbatim,
//! `isError` and invalid tools as exit 2.

use serde_json::{json, Value};

use crate::support::upstream::{ServerEra, TestUpstream};

fn probe(args: Vec<String>) -> std::process::Output {
    std::process::Command::new(crate::process::BIN)
        .args(args)
        .output()
        .unwrap()
}

/// Runs probe off the test's System (it serves the upstream).
async fn run(url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["probe".to_owned(), url.to_owned()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    actix_web::rt::task::spawn_blocking(move || probe(args))
        .await
        .unwrap()
}

fn routed_tool() -> Value {
    json!({
        "name": "routed",
        "description": "A tool with x-mcp-header annotations",
        "inputSchema": {
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "priority": {"type": "integer", "x-mcp-header": "Priority"},
                "verbose": {"type": "boolean", "x-mcp-header": "Verbose"},
                "query": {"type": "string"}
            },
            "required": ["region"]
        }
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[actix_web::test]
async fn probe_call_prints_the_result_in_both_eras_with_param_headers_when_modern() {
    let up = TestUpstream::builder()
        .tools(1)
        .raw_tools(vec![routed_tool()])
        .era(ServerEra::Dual)
        .start()
        .unwrap();
    let url = up.url();
    let arguments = r#"{"region":"Région","priority":3,"verbose":null,"query":"SELECT 1"}"#;

    let out = run(&url, &["--call", "routed", "--arguments", arguments]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["isError"], false);
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("routed called with"), "{text}");
    assert!(
        text.contains("Région"),
        "the arguments went through: {text}"
    );
    let log = up.modern_log();
    let call = log
        .iter()
        .find(|r| r.method == "tools/call")
        .expect("a modern tools/call");
    assert_eq!(
        call.status, 200,
        "the strict upstream accepted it: {call:?}"
    );
    let header = |n: &str| {
        call.headers
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("mcp-name").as_deref(), Some("routed"));
    assert_eq!(header("mcp-method").as_deref(), Some("tools/call"));
    assert_eq!(
        header("mcp-param-region").as_deref(),
        Some("=?base64?UsOpZ2lvbg==?="),
        "non-ASCII goes base64"
    );
    assert_eq!(header("mcp-param-priority").as_deref(), Some("3"));
    assert_eq!(header("mcp-param-verbose"), None, "null omits the header");
    assert_eq!(header("mcp-param-query"), None, "unannotated: never");
    assert_eq!(
        call.meta["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );

    // The 2025 era: the same call on the initialized session.
    let out = run(
        &url,
        &[
            "--protocol",
            "2025-11-25",
            "--call",
            "tool_0",
            "--arguments",
            r#"{"value":"x"}"#,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("tool_0 called"),
        "{result}"
    );
    assert_eq!(up.requests("tools/call"), 2);
    assert_eq!(
        up.modern_log()
            .iter()
            .filter(|r| r.method == "tools/call")
            .count(),
        1,
        "the second call was a 2025 one"
    );
}

#[actix_web::test]
async fn probe_call_refuses_invalid_and_unlisted_tools_and_fails_on_is_error() {
    let up = TestUpstream::builder()
        .raw_tools(vec![
            json!({"name": "bad", "inputSchema": {"type": "object", "properties": {
                "data": {"type": "object", "x-mcp-header": "Data"}}}}),
            json!({"name": "failing", "inputSchema": {"type": "object"}, "xTestIsError": true}),
        ])
        .era(ServerEra::Modern)
        .start()
        .unwrap();
    let url = up.url();

    let out = run(&url, &["--call", "bad"]).await;
    assert_eq!(out.status.code(), Some(2));
    let why = stderr(&out);
    assert!(
        why.contains("Tool `bad` cannot be called") && why.contains("x-mcp-header"),
        "{why}"
    );
    assert!(out.stdout.is_empty());

    let out = run(&url, &["--call", "missing"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not list a tool named \"missing\""));
    assert_eq!(up.requests("tools/call"), 0, "nothing was sent for either");

    let out = run(&url, &["--call", "failing", "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "isError: true is a failure");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["isError"], true, "the result is still printed");
    assert!(stderr(&out).contains("isError"));

    let out = run(&url, &["--call", "failing", "--arguments", "[1]"]).await;
    assert_eq!(out.status.code(), Some(64), "arguments must be an object");
    let out = run(&url, &["--arguments", "{}"]).await;
    assert_eq!(out.status.code(), Some(64), "--arguments needs --call");
    assert_eq!(up.requests("tools/call"), 1);
}
