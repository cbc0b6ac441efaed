//! A 2025 upstream's server-to-client requests during a `tools/call`
//! (sampling, elicitation, roots) relayed to the 2025 client that made the
//! call, on its session (issue 11, ADR 0024); refused with a clear error
//! for a client that did not declare the capability, and for a 2026-07-28
//! client; a client that never answers costs the call its `call_timeout`,
//! not a hang.
//!
//! Upstreams: server-everything 2026.8.31 over Streamable HTTP (`ev`: its
//! sampling and elicitation requests ride the call's POST stream, its
//! `roots/list` the GET stream) and over stdio (`evs`: one stream). Clients:
//! the Python SDK 1.30.0 with its sampling, elicitation and list-roots
//! callbacks (tests/fixtures/clients/py_client_v1.py), and 2.3.0 in auto
//! mode (2026-07-28).

use serde_json::{json, Value};

use crate::helpers::{servers_yaml, spawn_app, TestApp, FAST};
use crate::support::clients::{ClientOutput, ClientRun, ClientTask, InteropClient};
use crate::support::mcp_client::{initialize_request, McpClient};
use crate::support::peers::{self, EverythingTransport, PeerProcess};

const SAMPLED: &str = "sampled by the relaying client";
const ROOT: &str = "file:///relay/root";

/// `ev` (Streamable HTTP) and `evs` (stdio) with `call_timeout`.
async fn engine(ev: &PeerProcess, call_timeout: &str) -> Option<TestApp> {
    let stdio = match peers::everything_stdio() {
        Ok(cmd) => cmd,
        Err(peers::PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let args: Vec<String> = stdio.args.iter().map(|a| format!("\"{a}\"")).collect();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            (
                "ev",
                format!(
                    "{{ url: \"{}\", transport: streamable-http, call_timeout: {call_timeout} }}",
                    ev.url()
                )
            ),
            (
                "evs",
                format!(
                    "{{ command: \"{}\", args: [{}], call_timeout: {call_timeout} }}",
                    stdio.command,
                    args.join(", ")
                )
            ),
        ])
    ))
    .await;
    for name in ["ev", "evs"] {
        app.wait_healthy(name, peers::EVERYTHING_TOOLS.len()).await;
    }
    Some(app)
}

/// Runs `client` on `task` to its end.
async fn run(client: InteropClient, task: &ClientTask) -> Option<ClientOutput> {
    match ClientRun::start(client, task) {
        Ok(run) => Some(run.finish().await),
        Err(peers::PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Every text block of a call's result, joined.
fn texts(out: &ClientOutput, name: &str) -> String {
    let call = out.call(name);
    call["result"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no result: {}", out.transcript()))
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn sampling(prompt: &str) -> Value {
    json!({"prompt": prompt, "maxTokens": 5})
}

#[actix_web::test]
async fn requests_reach_the_2025_client_that_called_and_its_answers_return() {
    let ev = crate::require_peer!(peers::everything(EverythingTransport::StreamableHttp));
    let Some(app) = engine(&ev, "30s").await else {
        return;
    };
    let task = ClientTask::new(format!("{}/mcp", app.base))
        .call("ev__trigger-sampling-request", sampling("over HTTP"))
        .call("ev__trigger-elicitation-request", json!({}))
        .call("ev__get-roots-list", json!({}))
        .call("evs__trigger-sampling-request", sampling("over stdio"))
        .call("evs__trigger-elicitation-request", json!({}))
        .args(&["--sampling", SAMPLED])
        .args(&["--elicit", r#"{"name": "Ada Lovelace", "check": true}"#])
        .args(&["--roots", ROOT]);
    let Some(out) = run(InteropClient::PythonSdk1, &task).await else {
        return;
    };
    out.assert_ok();
    // The client was asked each question once, with the upstream's params.
    let asked: Vec<&str> = out
        .steps("asked")
        .iter()
        .filter_map(|a| a["method"].as_str())
        .collect();
    let count = |m: &str| asked.iter().filter(|a| **a == m).count();
    assert_eq!(count("sampling/createMessage"), 2, "{}", out.transcript());
    assert_eq!(count("elicitation/create"), 2, "{}", out.transcript());
    assert_eq!(count("roots/list"), 1, "{}", out.transcript());
    let first = out.steps("asked")[0];
    assert_eq!(
        first["params"]["messages"][0]["content"]["text"],
        "Resource trigger-sampling-request context: over HTTP",
        "{}",
        out.transcript()
    );
    // ... and the upstreams got its answers back.
    for server in ["ev", "evs"] {
        let sampled = texts(&out, &format!("{server}__trigger-sampling-request"));
        assert!(
            sampled.contains("LLM sampling result") && sampled.contains(SAMPLED),
            "{server}: {sampled}"
        );
        let elicited = texts(&out, &format!("{server}__trigger-elicitation-request"));
        assert!(
            elicited.contains("- Name: Ada Lovelace")
                && elicited.contains("- Agreed to terms: true"),
            "{server}: {elicited}"
        );
    }
    let roots = texts(&out, "ev__get-roots-list");
    assert!(roots.contains(ROOT), "{roots}");
    app.stop().await;
}

#[actix_web::test]
async fn clients_that_cannot_be_asked_get_a_clear_error_at_once() {
    let ev = crate::require_peer!(peers::everything(EverythingTransport::StreamableHttp));
    // A refusal that came only after a wait would be this timeout instead.
    let Some(app) = engine(&ev, "40s").await else {
        return;
    };
    let url = format!("{}/mcp", app.base);
    // A 2025 client that declared none of the capabilities.
    let task = ClientTask::new(url.clone())
        .call("ev__trigger-sampling-request", sampling("x"))
        .call("ev__trigger-elicitation-request", json!({}))
        .call("evs__trigger-sampling-request", sampling("x"));
    let Some(out) = run(InteropClient::PythonSdk1, &task).await else {
        return;
    };
    out.assert_ok();
    for (tool, capability) in [
        ("ev__trigger-sampling-request", "sampling"),
        ("ev__trigger-elicitation-request", "elicitation"),
        ("evs__trigger-sampling-request", "sampling"),
    ] {
        let call = out.call(tool);
        assert_eq!(call["result"]["isError"], true, "{}", out.transcript());
        let text = texts(&out, tool);
        assert!(
            text.contains(&format!(
                "the client of this call did not declare the {capability} capability"
            )),
            "{tool}: {text}"
        );
    }
    assert!(out.steps("asked").is_empty());
    // A 2026-07-28 client has no server-to-client requests.
    let task = ClientTask::new(url).call("ev__trigger-sampling-request", sampling("x"));
    let Some(out) = run(InteropClient::PythonSdk2Auto, &task).await else {
        return;
    };
    out.assert_ok();
    assert_eq!(out.era(), Some(peers::MODERN_REVISION));
    let text = texts(&out, "ev__trigger-sampling-request");
    assert!(text.contains("cannot be asked"), "{text}");
    app.stop().await;
}

/// A 2025 session on `url` whose client declares `capabilities`, without
/// answering anything (the SDK clients cannot be made to: the 1.x one
/// stops reading while a callback is pending).
async fn raw_session(url: &str, capabilities: Value) -> McpClient {
    let mut client = McpClient::new(url);
    let mut init = initialize_request(1, "2025-11-25");
    init["params"]["capabilities"] = capabilities;
    let reply = client.post(&init).await.unwrap();
    assert_eq!(reply.status, 200);
    client.session_id = reply.header("mcp-session-id").map(str::to_owned);
    client.protocol_version = Some("2025-11-25".into());
    let ack = client
        .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .unwrap();
    assert_eq!(ack.status, 202);
    client
}

#[actix_web::test]
async fn a_client_that_never_answers_costs_the_call_its_timeout() {
    let ev = crate::require_peer!(peers::everything(EverythingTransport::StreamableHttp));
    let Some(app) = engine(&ev, "2s").await else {
        return;
    };
    let url = format!("{}/mcp", app.base);
    let client = raw_session(&url, json!({"sampling": {}})).await;
    for (id, tool) in [
        (2, "ev__trigger-sampling-request"),
        (3, "evs__trigger-sampling-request"),
    ] {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": sampling("never answered")}});
        // The stream carries the relayed request, then the call's end.
        let reply = client.post(&call).await.unwrap();
        assert!(reply.is_sse(), "{tool}: {}", reply.content_type());
        let messages = reply.messages().unwrap();
        assert_eq!(messages.len(), 2, "{tool}: {messages:?}");
        let asked = &messages[0];
        assert_eq!(asked["method"], "sampling/createMessage", "{asked}");
        let relayed_id = asked["id"].as_str().unwrap_or_default();
        assert!(
            relayed_id.starts_with("mcp-discovery-"),
            "the engine's own id, never the upstream's: {asked}"
        );
        let end = &messages[1];
        assert_eq!(end["id"], id, "{end}");
        assert_eq!(end["error"]["code"], -32001, "{end}");
        assert!(
            end["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("call_timeout")),
            "{end}"
        );
        // Too late: the call is over, and its request with it.
        let late = json!({"jsonrpc": "2.0", "id": relayed_id, "result": {}});
        assert_eq!(client.post(&late).await.unwrap().status, 400);
    }
    // Both upstreams were answered (with an error) and serve the next call.
    let task = ClientTask::new(url)
        .call("ev__echo", json!({"message": "still here"}))
        .call("evs__echo", json!({"message": "still here"}));
    let Some(out) = run(InteropClient::PythonSdk1, &task).await else {
        return;
    };
    out.assert_ok();
    assert_eq!(texts(&out, "ev__echo"), "Echo: still here");
    assert_eq!(texts(&out, "evs__echo"), "Echo: still here");
    app.stop().await;
}

#[actix_web::test]
async fn responses_nobody_waits_for_are_refused() {
    let app = spawn_app(FAST).await;
    let url = format!("{}/mcp", app.base);
    let mut client = McpClient::new(url.clone());
    client.initialize().await.unwrap();
    let stray = json!({"jsonrpc": "2.0", "id": "mcp-discovery-1", "result": {}});
    let reply = client.post(&stray).await.unwrap();
    assert_eq!(reply.status, 400);
    let body = reply.response().unwrap();
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no relayed request with id")),
        "{body}"
    );
    // Without a session there is nobody to answer for.
    let reply = McpClient::new(url).post(&stray).await.unwrap();
    assert_eq!(reply.status, 400);
    let body = reply.response().unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Mcp-Session-Id")),
        "{body}"
    );
    app.stop().await;
}
