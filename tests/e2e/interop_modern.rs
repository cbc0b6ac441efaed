//! Interop with the 2026-era SDK servers nobody here wrote (installed pinned
//! by scripts/setup-test-deps.sh): the MCP Python SDK 2.3.0 and the
//! TypeScript SDK v2 (`@modelcontextprotocol/server` 2.4.0), over Streamable
//! HTTP and stdio. Both are dual-era: they answer `initialize` with the 2025
//! handshake and `server/discover` with 2026-07-28. For each, the engine
//! reaches `healthy`, the catalog holds exactly that server's tools, and the
//! view names the protocol revision negotiated.
//!
//! The 2025-only peers (Python SDK 1.30.0, server-everything) stay in
//! `interop.rs`, unchanged.
//!
//! With a dual-era peer the engine's `server/discover` probe wins, so the
//! view says 2026-07-28; the modern-only variants (the TS server with
//! `--legacy reject`, which refuses `initialize`) are discovered the same way.

use serde_json::Value;

use crate::helpers::{namespaced, servers_yaml, spawn_app, FAST};
use crate::support::peers::{
    self, NodeV2Eras, PythonV2Http, StdioCommand, MODERN_PEER_TOOLS, MODERN_REVISION,
};

/// serverInfo names of tests/fixtures/python_server_v2.py and node-v2/server.cjs.
const PY: &str = "mcp-discovery-python-v2-peer";
const TS: &str = "mcp-discovery-node-v2-peer";

fn http_entry(url: &str) -> String {
    format!("{{ url: \"{url}\", transport: auto }}")
}

fn stdio_entry(cmd: &StdioCommand) -> String {
    let args: Vec<String> = cmd.args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "{{ command: \"{}\", args: [{}] }}",
        cmd.command,
        args.join(", ")
    )
}

/// Discovers `entry` as server `name`: healthy, exactly the fixture's three
/// tools, no error, over `transport`, from the fixture named `peer` in its
/// serverInfo. Returns the server's view.
async fn assert_discovers(name: &str, entry: String, transport: &str, peer: &str) -> Value {
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[(name, entry)]))).await;
    let s = app.wait_healthy(name, MODERN_PEER_TOOLS.len()).await;
    assert_eq!(s["negotiated_transport"], transport, "{s}");
    assert_eq!(s["server_info"]["name"], peer, "{s}");
    assert_eq!(s["last_error"], Value::Null, "{s}");
    let mut got = app.tool_names().await;
    let want: Vec<String> = MODERN_PEER_TOOLS.iter().map(|t| (*t).to_owned()).collect();
    let mut want = namespaced(name, &want);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    app.stop().await;
    s
}

// The dual-era peers, discovered by today's 2025 client: it sends
// `initialize`, so the SDKs serve the 2025 session. With the 2026-07-28 client
// (issue 10) the engine tries `server/discover` first and these become
// MODERN_REVISION.

#[actix_web::test]
async fn python_sdk_v2_over_streamable_http() {
    let peer = crate::require_peer!(peers::python_v2(PythonV2Http::Stateful));
    let s = assert_discovers("py2", http_entry(peer.url()), "streamable-http", PY).await;
    // Dual-era: the engine chooses the stateless revision with it.
    assert_eq!(s["protocol_version"], MODERN_REVISION, "{s}");
}

#[actix_web::test]
async fn python_sdk_v2_over_stateless_streamable_http() {
    let peer = crate::require_peer!(peers::python_v2(PythonV2Http::Stateless));
    let s = assert_discovers("py2sl", http_entry(peer.url()), "streamable-http", PY).await;
    // Dual-era: the engine chooses the stateless revision with it.
    assert_eq!(s["protocol_version"], MODERN_REVISION, "{s}");
}

#[actix_web::test]
async fn python_sdk_v2_over_stdio() {
    let cmd = crate::require_peer!(peers::python_v2_stdio());
    let s = assert_discovers("py2io", stdio_entry(&cmd), "stdio", PY).await;
    // Dual-era: the engine chooses the stateless revision with it.
    assert_eq!(s["protocol_version"], MODERN_REVISION, "{s}");
}

#[actix_web::test]
async fn ts_sdk_v2_over_streamable_http() {
    let peer = crate::require_peer!(peers::node_v2(NodeV2Eras::Dual));
    let s = assert_discovers("ts2", http_entry(peer.url()), "streamable-http", TS).await;
    // Dual-era: the engine chooses the stateless revision with it.
    assert_eq!(s["protocol_version"], MODERN_REVISION, "{s}");
}

#[actix_web::test]
async fn ts_sdk_v2_over_stdio() {
    let cmd = crate::require_peer!(peers::node_v2_stdio(NodeV2Eras::Dual));
    let s = assert_discovers("ts2io", stdio_entry(&cmd), "stdio", TS).await;
    // Dual-era: the engine chooses the stateless revision with it.
    assert_eq!(s["protocol_version"], MODERN_REVISION, "{s}");
}

// Modern-only peers: the TS SDK v2 server with `legacy: 'reject'` answers
// `initialize` with -32022 (supported: [2026-07-28]); over HTTP the HTTP+SSE
// fallback gets 405. Today's engine leaves them degraded with 0 tools.

#[actix_web::test]
async fn ts_sdk_v2_modern_only_over_streamable_http() {
    let peer = crate::require_peer!(peers::node_v2(NodeV2Eras::ModernOnly));
    let s = assert_discovers("ts2m", http_entry(peer.url()), "streamable-http", TS).await;
    assert_eq!(s["protocol_version"], MODERN_REVISION, "{s}");
}

#[actix_web::test]
async fn ts_sdk_v2_modern_only_over_stdio() {
    let cmd = crate::require_peer!(peers::node_v2_stdio(NodeV2Eras::ModernOnly));
    let s = assert_discovers("ts2mio", stdio_entry(&cmd), "stdio", TS).await;
    assert_eq!(s["protocol_version"], MODERN_REVISION, "{s}");
}
