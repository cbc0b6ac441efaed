//! Interop with MCP servers nobody here wrote (installed pinned by
//! scripts/setup-test-deps.sh): for each, the engine reaches `healthy` and
//! the catalog holds exactly that server's tools.

use crate::helpers::{namespaced, servers_yaml, spawn_app, FAST};
use crate::support::peers::{
    self, EverythingTransport, PythonTransport, EVERYTHING_TOOLS, PYTHON_TOOLS,
};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn assert_discovers(name: &str, entry: String, want: &[&str], transport: &str) {
    let app = spawn_app(&format!("{FAST}{}", servers_yaml(&[(name, entry)]))).await;
    let s = app.wait_healthy(name, want.len()).await;
    assert_eq!(s["negotiated_transport"], transport, "{s}");
    assert_eq!(s["last_error"], serde_json::Value::Null);
    let mut got = app.tool_names().await;
    let mut want = namespaced(name, &names(want));
    got.sort();
    want.sort();
    assert_eq!(got, want);
    app.stop().await;
}

#[actix_web::test]
async fn python_sdk_over_streamable_http() {
    let peer = crate::require_peer!(peers::python(PythonTransport::StreamableHttp));
    let entry = format!("{{ url: \"{}\", transport: streamable-http }}", peer.url());
    assert_discovers("py", entry, &PYTHON_TOOLS, "streamable-http").await;
}

#[actix_web::test]
async fn python_sdk_over_legacy_sse() {
    let peer = crate::require_peer!(peers::python(PythonTransport::Sse));
    let entry = format!("{{ url: \"{}\", transport: sse }}", peer.url());
    assert_discovers("pysse", entry, &PYTHON_TOOLS, "sse").await;
}

#[actix_web::test]
async fn python_sdk_legacy_sse_found_by_auto() {
    let peer = crate::require_peer!(peers::python(PythonTransport::Sse));
    let entry = format!("{{ url: \"{}\", transport: auto }}", peer.url());
    assert_discovers("pyauto", entry, &PYTHON_TOOLS, "sse").await;
}

#[actix_web::test]
async fn server_everything_over_stdio() {
    let cmd = crate::require_peer!(peers::everything_stdio());
    let args: Vec<String> = cmd.args.iter().map(|a| format!("\"{a}\"")).collect();
    let entry = format!(
        "{{ command: \"{}\", args: [{}] }}",
        cmd.command,
        args.join(", ")
    );
    assert_discovers("everything", entry, &EVERYTHING_TOOLS, "stdio").await;
}

#[actix_web::test]
async fn server_everything_over_streamable_http() {
    let peer = crate::require_peer!(peers::everything(EverythingTransport::StreamableHttp));
    let entry = format!("{{ url: \"{}\", transport: auto }}", peer.url());
    assert_discovers("evhttp", entry, &EVERYTHING_TOOLS, "streamable-http").await;
}

#[actix_web::test]
async fn server_everything_over_legacy_sse() {
    let peer = crate::require_peer!(peers::everything(EverythingTransport::Sse));
    let entry = format!("{{ url: \"{}\", transport: sse }}", peer.url());
    assert_discovers("evsse", entry, &EVERYTHING_TOOLS, "sse").await;
}
