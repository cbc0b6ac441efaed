//! The engine's MCP endpoint (`/mcp`, `/mcp/{server}`, `/mcp/{view}`) with
//! clients and servers nobody here wrote (issue 11, "Tests (real clients,
//! real servers)"): each client era meets each upstream era.
//!
//! Clients (tests/support/clients.rs, drivers in tests/fixtures/clients/):
//! the Python SDK 2.3.0 in its default auto mode (2026-07-28) and forced to
//! the handshake, the Python SDK 1.30.0, the TypeScript SDK 1.32.2, the
//! TypeScript client 2.4.0 in auto and handshake modes, the inspector CLI
//! 1.0.3.
//!
//! Upstreams behind one engine, by the era the engine speaks with them:
//!
//! | server | what | era |
//! |---|---|---|
//! | `py2` | Python SDK 2.3.0 (tests/fixtures/python_server_v2.py) | 2026-07-28 (auto) |
//! | `py2h` | the same process, `protocol: 2025-11-25` | 2025 |
//! | `ev` | server-everything 2026.8.31, Streamable HTTP | 2025 |
//! | `rs` | the Rust test upstream, GET push stream | 2025 |
//! | `rsm` | the Rust test upstream, `ServerEra::Modern`, `subscriptions/listen` | 2026-07-28 |
//!
//! and the view `ops` (servers py2 and rs; allow `py2__*`, `rs__tool_0`,
//! `rs__tool_1`; deny `py2__slow_hello`).
//!
//! The `*_directly` tests run the same drivers against the servers without
//! the engine: a failure there is a driver's or a peer's, not the gateway's.

use serde_json::json;

use crate::helpers::{servers_yaml, spawn_app, TestApp, DEADLINE, FAST, LOCAL_WRITES};
use crate::support::clients::{ClientEra, ClientOutput, ClientRun, ClientTask, InteropClient};
use crate::support::peers::{
    self, EverythingTransport, PeerProcess, PythonV2Http, CONFORMANCE_UPSTREAM_TOOLS,
    MODERN_PEER_TOOLS, MODERN_REVISION,
};
use crate::support::upstream::{GetStream, ListenMode, Methods, ServerEra, TestUpstream};

/// What a 2025 client negotiates: each one here offers the latest 2025
/// revision, which the engine serves.
const HANDSHAKE_REVISION: &str = "2025-11-25";

const VIEW: &str = "ops";
const VIEW_TOOLS: [&str; 4] = ["py2__add", "py2__echo", "rs__tool_0", "rs__tool_1"];

// ------------------------------------------------------------ the engine

struct Peers {
    py2: PeerProcess,
    ev: PeerProcess,
    rs: TestUpstream,
    rsm: TestUpstream,
}

/// The peers, or the reason they are not running (skip or failure).
fn start_peers() -> Result<Peers, peers::PeerError> {
    Ok(Peers {
        py2: peers::python_v2(PythonV2Http::Stateful)?,
        ev: peers::everything(EverythingTransport::StreamableHttp)?,
        rs: legacy_upstream("rs-legacy"),
        rsm: modern_upstream("rs-modern"),
    })
}

fn legacy_upstream(name: &str) -> TestUpstream {
    TestUpstream::builder()
        .server_name(name)
        .get_stream(GetStream::Open)
        .start()
        .unwrap()
}

fn modern_upstream(name: &str) -> TestUpstream {
    TestUpstream::builder()
        .server_name(name)
        .era(ServerEra::Modern)
        .listen(ListenMode::Open)
        .start()
        .unwrap()
}

fn config(p: &Peers) -> String {
    let http =
        |url: &str, more: &str| format!("{{ url: \"{url}\", transport: streamable-http{more} }}");
    format!(
        "{FAST}\
views:
  {VIEW}: {{ servers: [py2, rs], tools: {{ allow: [\"py2__*\", \"rs__tool_0\", \"rs__tool_1\"], deny: [\"py2__slow_hello\"] }} }}
{}",
        servers_yaml(&[
            ("py2", http(p.py2.url(), "")),
            ("py2h", http(p.py2.url(), ", protocol: 2025-11-25")),
            ("ev", http(p.ev.url(), "")),
            ("rs", http(&p.rs.url(), "")),
            ("rsm", http(&p.rsm.url(), "")),
        ])
    )
}

/// Every server healthy with the tools it should have.
async fn wait_ready(app: &TestApp) {
    for (name, tools) in [
        ("py2", MODERN_PEER_TOOLS.len()),
        ("py2h", MODERN_PEER_TOOLS.len()),
        ("ev", peers::EVERYTHING_TOOLS.len()),
        ("rs", 5),
        ("rsm", 5),
    ] {
        app.wait_healthy(name, tools).await;
    }
    let py2 = app.server("py2").await;
    assert_eq!(py2["protocol_version"], MODERN_REVISION, "{py2:#}");
    let py2h = app.server("py2h").await;
    assert_eq!(py2h["protocol_version"], HANDSHAKE_REVISION, "{py2h:#}");
}

/// `/v1/tools` as (public name, server, upstream name).
async fn catalog(app: &TestApp) -> Vec<(String, String, String)> {
    let (status, body) = app.get("/v1/tools").await;
    assert_eq!(status, 200, "{body}");
    body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap().to_owned();
            (s("name"), s("server"), s("upstream_name"))
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn run(client: InteropClient, task: ClientTask) -> Option<ClientOutput> {
    match ClientRun::start(client, &task) {
        Ok(run) => Some(run.finish().await),
        Err(peers::PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn assert_era(out: &ClientOutput) {
    if !out.client.reports_era() {
        return;
    }
    let want = match out.client.era() {
        ClientEra::Modern => MODERN_REVISION,
        ClientEra::Handshake => HANDSHAKE_REVISION,
    };
    assert_eq!(out.era(), Some(want), "{}", out.transcript());
}

/// The first text block of a successful call, asserting the call succeeded.
fn ok_text(out: &ClientOutput, name: &str) -> String {
    let call = out.call(name);
    assert!(
        call["error"].is_null() && call["result"]["isError"] != true,
        "{name} failed: {call}\n{}",
        out.transcript()
    );
    out.call_text(name)
}

/// A call the endpoint must refuse with -32602 naming the tool.
fn assert_unknown_tool(out: &ClientOutput, name: &str) {
    let call = out.call(name);
    assert_eq!(
        call["error"]["code"],
        -32602,
        "{call}\n{}",
        out.transcript()
    );
    let message = call["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(name), "{call}\n{}", out.transcript());
}

// ---------------------------------------------------- list and call, matrix

/// One client through `/mcp`, `/mcp/<server>` for a server of each era, and
/// the view: it lists exactly what the catalog says each endpoint holds and
/// calls tools of every upstream era, results verbatim.
async fn list_and_call(client: InteropClient) {
    let p = crate::require_peer!(start_peers());
    let app = spawn_app(&config(&p)).await;
    wait_ready(&app).await;
    let catalog = catalog(&app).await;
    let mcp = |path: &str| format!("{}{path}", app.base);

    // Every run first, then what each listed, then what each call gave: a
    // failing call never hides what the listings show.
    //
    // The whole catalog, public names; a call to each upstream era.
    let whole = ClientTask::new(mcp("/mcp"))
        .call("py2__add", json!({ "a": 2, "b": 3 }))
        .call("py2h__echo", json!({ "message": "through a 2025 session" }))
        .call("ev__echo", json!({ "message": "hi" }))
        .call("rs__tool_0", json!({ "value": "x" }))
        .call("rsm__tool_1", json!({ "value": "y" }))
        .call("nope__missing", json!({}));
    let Some(whole) = run(client, whole).await else {
        return;
    };
    // One server of each upstream era: its tools under their upstream names.
    let singles = [
        ("py2", "add", json!({ "a": 20, "b": 22 }), "42"),
        (
            "py2h",
            "echo",
            json!({ "message": "2025 upstream" }),
            "2025 upstream",
        ),
        ("ev", "echo", json!({ "message": "direct" }), "Echo: direct"),
        (
            "rsm",
            "tool_3",
            json!({ "value": "z" }),
            r#"tool_3 called on rs-modern with {"value":"z"}"#,
        ),
    ];
    let mut single_runs = Vec::new();
    for (server, call, args, _) in &singles {
        let task = ClientTask::new(mcp(&format!("/mcp/{server}"))).call(call, args.clone());
        single_runs.push(run(client, task).await.unwrap());
    }
    // The view: its subset under public names; what it leaves out is unknown.
    let view = ClientTask::new(mcp(&format!("/mcp/{VIEW}")))
        .call("py2__echo", json!({ "message": "in the view" }))
        .call("rs__tool_1", json!({ "value": "v" }))
        .call(
            "py2__slow_hello",
            json!({ "name": "x", "delay_seconds": 0 }),
        )
        .call("ev__echo", json!({ "message": "not in the view" }));
    let view = run(client, view).await.unwrap();

    // What they listed, and in which era.
    for out in std::iter::once(&whole).chain(&single_runs).chain([&view]) {
        out.assert_ok();
        assert_era(out);
    }
    let all: Vec<String> = catalog.iter().map(|(name, ..)| name.clone()).collect();
    assert_eq!(sorted(whole.tools()), sorted(all), "{}", whole.transcript());
    for ((server, ..), out) in singles.iter().zip(&single_runs) {
        let own: Vec<String> = catalog
            .iter()
            .filter(|(_, s, _)| s == server)
            .map(|(_, _, upstream)| upstream.clone())
            .collect();
        assert!(!own.is_empty());
        assert_eq!(
            sorted(out.tools()),
            sorted(own),
            "/mcp/{server}: {}",
            out.transcript()
        );
    }
    assert_eq!(
        sorted(view.tools()),
        sorted(strings(&VIEW_TOOLS)),
        "{}",
        view.transcript()
    );

    // What the calls gave: the upstream's result, verbatim.
    assert_unknown_tool(&whole, "nope__missing");
    assert_unknown_tool(&view, "py2__slow_hello");
    assert_unknown_tool(&view, "ev__echo");
    assert_eq!(ok_text(&whole, "py2__add"), "5");
    assert_eq!(
        whole.call("py2__add")["result"]["structuredContent"],
        json!({ "result": 5 }),
        "{}",
        whole.transcript()
    );
    assert_eq!(ok_text(&whole, "py2h__echo"), "through a 2025 session");
    assert_eq!(ok_text(&whole, "ev__echo"), "Echo: hi");
    assert_eq!(
        ok_text(&whole, "rs__tool_0"),
        r#"tool_0 called on rs-legacy with {"value":"x"}"#
    );
    assert_eq!(
        ok_text(&whole, "rsm__tool_1"),
        r#"tool_1 called on rs-modern with {"value":"y"}"#
    );
    for ((server, call, _, want), out) in singles.iter().zip(&single_runs) {
        assert_eq!(ok_text(out, call), *want, "/mcp/{server}");
    }
    assert_eq!(ok_text(&view, "py2__echo"), "in the view");
    assert_eq!(
        ok_text(&view, "rs__tool_1"),
        r#"tool_1 called on rs-legacy with {"value":"v"}"#
    );

    app.stop().await;
}

#[actix_web::test]
async fn python_sdk_2_auto_lists_and_calls() {
    list_and_call(InteropClient::PythonSdk2Auto).await;
}

#[actix_web::test]
async fn python_sdk_2_handshake_lists_and_calls() {
    list_and_call(InteropClient::PythonSdk2Handshake).await;
}

#[actix_web::test]
async fn python_sdk_1_lists_and_calls() {
    list_and_call(InteropClient::PythonSdk1).await;
}

#[actix_web::test]
async fn typescript_sdk_1_lists_and_calls() {
    list_and_call(InteropClient::TsSdk1).await;
}

#[actix_web::test]
async fn typescript_client_2_auto_lists_and_calls() {
    list_and_call(InteropClient::TsClientV2Auto).await;
}

#[actix_web::test]
async fn typescript_client_2_handshake_lists_and_calls() {
    list_and_call(InteropClient::TsClientV2Handshake).await;
}

#[actix_web::test]
async fn inspector_cli_lists_and_calls() {
    list_and_call(InteropClient::InspectorCli).await;
}

// ------------------------------------------------------------ list_changed

/// The clients that can listen, each on `path` of the engine, waiting for a
/// listing that shows `expect`; returns them once each printed `listening`
/// and the engine counts them all as listeners.
async fn listeners(app: &TestApp, path: &str, expect: &str) -> Option<Vec<ClientRun>> {
    let task = ClientTask::new(format!("{}{path}", app.base)).listen_for(expect);
    let mut runs = Vec::new();
    for client in InteropClient::ALL.into_iter().filter(|c| c.can_listen()) {
        match ClientRun::start(client, &task) {
            Ok(run) => runs.push(run),
            Err(peers::PeerError::Skip(why)) => {
                eprintln!("skipped: {why}");
                return None;
            }
            Err(e) => panic!("{e}"),
        }
    }
    for run in &mut runs {
        run.wait_step("listening").await;
    }
    Some(runs)
}

/// Until the engine has at least `n` listeners (a 2025 client says
/// `listening` once its session is up; its GET stream may open just after).
async fn wait_listeners(app: &TestApp, n: usize) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let have = app.metric("mcp_discovery_mcp_listeners ").await;
        if have >= n as f64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the engine counts {have} MCP listeners, not {n}"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every listener was told, and its last listing holds `expect` and the
/// tools it had before.
async fn assert_relisted(runs: Vec<ClientRun>, expect: &str, before: &[String]) {
    for run in runs {
        let out = run.finish().await;
        out.assert_ok();
        assert!(
            !out.steps("list_changed").is_empty(),
            "{}",
            out.transcript()
        );
        let listings = out.listings();
        let last = listings.last().unwrap();
        assert!(last.contains(&expect.to_owned()), "{}", out.transcript());
        for tool in before {
            assert!(last.contains(tool), "{tool} vanished: {}", out.transcript());
        }
        assert_eq!(
            sorted(listings[0].clone()),
            sorted(before.to_vec()),
            "{}",
            out.transcript()
        );
    }
}

/// An upstream of `era` gains a tool: every listening client, of each era,
/// on `/mcp` and on `/mcp/<server>`, is notified and lists it.
async fn list_changed_reaches_every_client(era: ServerEra) {
    let up = match era {
        ServerEra::Modern => modern_upstream("changing"),
        _ => legacy_upstream("changing"),
    };
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("up", format!("{{ url: \"{}\" }}", up.url()))])
    ))
    .await;
    app.wait_healthy("up", 5).await;
    app.wait_server("up", "push stream connected", |s| {
        s["push_stream"] == "connected"
    })
    .await;
    let before_all = catalog(&app).await;
    let public: Vec<String> = before_all.iter().map(|(n, ..)| n.clone()).collect();
    let upstream: Vec<String> = before_all.iter().map(|(.., u)| u.clone()).collect();

    let Some(on_mcp) = listeners(&app, "/mcp", "up__tool_5").await else {
        return;
    };
    let on_server = listeners(&app, "/mcp/up", "tool_5").await.unwrap();
    wait_listeners(&app, on_mcp.len() + on_server.len()).await;

    up.set_tools(6);
    assert_eq!(
        up.notify_tools_changed(),
        1,
        "the engine's push stream is the one open"
    );

    assert_relisted(on_mcp, "up__tool_5", &public).await;
    assert_relisted(on_server, "tool_5", &upstream).await;
    assert!(app.metric("mcp_discovery_list_changed_sent_total").await >= 1.0);
    app.stop().await;
}

#[actix_web::test]
async fn list_changed_from_a_2025_upstream_reaches_clients_of_both_eras() {
    list_changed_reaches_every_client(ServerEra::Legacy).await;
}

#[actix_web::test]
async fn list_changed_from_a_2026_upstream_reaches_clients_of_both_eras() {
    list_changed_reaches_every_client(ServerEra::Modern).await;
}

/// The Python SDK upstream adds a tool when a client calls its trigger (a
/// client of its own, so that this test does not depend on tools/call
/// through the engine) and says so on its own streams to the engine
/// (2026-07-28 listen stream for `conf`, 2025 GET stream for `confh`, the
/// same process): listeners on both servers' tools see the new tool.
#[actix_web::test]
async fn list_changed_from_the_python_sdk_upstream_in_both_eras() {
    let conf = crate::require_peer!(peers::conformance_upstream(PythonV2Http::Stateful));
    let entry = |more: &str| {
        format!(
            "{{ url: \"{}\", transport: streamable-http{more} }}",
            conf.url()
        )
    };
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[
            ("conf", entry("")),
            ("confh", entry(", protocol: 2025-11-25"))
        ])
    ))
    .await;
    for name in ["conf", "confh"] {
        app.wait_healthy(name, CONFORMANCE_UPSTREAM_TOOLS.len())
            .await;
        app.wait_server(name, "push stream connected", |s| {
            s["push_stream"] == "connected"
        })
        .await;
    }
    let before: Vec<String> = catalog(&app).await.into_iter().map(|(n, ..)| n).collect();
    let Some(modern_side) = listeners(&app, "/mcp", "conf__dynamic_tool_1").await else {
        return;
    };
    let legacy_side = listeners(&app, "/mcp", "confh__dynamic_tool_1")
        .await
        .unwrap();
    wait_listeners(&app, modern_side.len() + legacy_side.len()).await;

    let trigger = run(
        InteropClient::PythonSdk2Auto,
        ClientTask::new(conf.url()).call("test_trigger_tool_change", json!({})),
    )
    .await
    .unwrap();
    trigger.assert_ok();
    assert_eq!(
        ok_text(&trigger, "test_trigger_tool_change"),
        "added dynamic_tool_1"
    );

    assert_relisted(modern_side, "conf__dynamic_tool_1", &before).await;
    assert_relisted(legacy_side, "confh__dynamic_tool_1", &before).await;
    app.stop().await;
}

// ------------------------------------------------------------- isolation

/// A call that failed, as a JSON-RPC error or an `isError` result.
fn failed(call: &serde_json::Value) -> bool {
    !call["error"].is_null() || call["result"]["isError"] == true
}

/// 20 upstreams behind one engine: 18 well-behaved (the two eras
/// alternating), `hung` (answers discovery, never a call; `call_timeout:
/// 15s`) and `gone` (healthy, then refusing connections, so `degraded` with
/// its last tools). While a client's call to `hung` is outstanding, clients
/// of both eras list every tool of the catalog and call every healthy
/// server; `gone`'s call fails at once with an error; then the hung call
/// ends with a timeout error and the upstream is told to cancel it.
#[actix_web::test]
async fn twenty_upstreams_one_hung_one_refusing() {
    let healthy: Vec<TestUpstream> = (0..18)
        .map(|i| {
            let name = format!("up{i}");
            if i % 2 == 0 {
                TestUpstream::builder()
                    .server_name(&name)
                    .tools(3)
                    .start()
                    .unwrap()
            } else {
                TestUpstream::builder()
                    .server_name(&name)
                    .tools(3)
                    .era(ServerEra::Modern)
                    .start()
                    .unwrap()
            }
        })
        .collect();
    let hung = TestUpstream::builder()
        .server_name("hung")
        .tools(3)
        .delay(std::time::Duration::from_secs(3600))
        .delay_on(Methods::only(["tools/call"]))
        .start()
        .unwrap();
    let gone = TestUpstream::builder()
        .server_name("gone")
        .tools(3)
        .start()
        .unwrap();
    let mut entries: Vec<(String, String)> = healthy
        .iter()
        .enumerate()
        .map(|(i, up)| (format!("up{i}"), format!("{{ url: \"{}\" }}", up.url())))
        .collect();
    entries.push((
        "hung".into(),
        format!("{{ url: \"{}\", call_timeout: 15s }}", hung.url()),
    ));
    entries.push(("gone".into(), format!("{{ url: \"{}\" }}", gone.url())));
    let entries: Vec<(&str, String)> = entries
        .iter()
        .map(|(n, e)| (n.as_str(), e.clone()))
        .collect();
    let app = spawn_app(&format!("{FAST}{LOCAL_WRITES}{}", servers_yaml(&entries))).await;
    for (name, _) in &entries {
        app.wait_healthy(name, 3).await;
    }
    gone.stop().await;
    assert_eq!(app.post("/v1/servers/gone/refresh").await, 202);
    app.wait_state("gone", "degraded").await;
    let catalog: Vec<String> = catalog(&app).await.into_iter().map(|(n, ..)| n).collect();
    let mcp = format!("{}/mcp", app.base);

    // The hung call, outstanding from here on.
    let hung_task = ClientTask::new(&mcp).call("hung__tool_0", json!({ "value": "h" }));
    let mut hung_run = match ClientRun::start(InteropClient::PythonSdk2Auto, &hung_task) {
        Ok(run) => run,
        Err(peers::PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    hung_run.wait_step("list").await;
    let deadline = std::time::Instant::now() + DEADLINE;
    while hung.requests("tools/call") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hung call never reached its upstream"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    for client in [InteropClient::TsSdk1, InteropClient::TsClientV2Auto] {
        let mut task = ClientTask::new(&mcp);
        for i in 0..18 {
            task = task.call(&format!("up{i}__tool_{}", i % 3), json!({ "value": i }));
        }
        task = task.call("gone__tool_0", json!({}));
        let out = run(client, task).await.unwrap();
        out.assert_ok();
        assert_eq!(
            sorted(out.tools()),
            sorted(catalog.clone()),
            "{}",
            out.transcript()
        );
        for i in 0..18 {
            let name = format!("up{i}__tool_{}", i % 3);
            assert_eq!(
                ok_text(&out, &name),
                format!("tool_{} called on up{i} with {{\"value\":{i}}}", i % 3),
                "{}",
                out.transcript()
            );
        }
        let gone_call = out.call("gone__tool_0");
        assert!(
            failed(gone_call),
            "a degraded server's call must fail: {gone_call}"
        );
        // Meanwhile the hung call is still waiting (its deadline is 15 s).
        assert!(
            hung_run.lines().iter().all(|l| l["step"] != "call"),
            "the hung call ended before the healthy calls did: {:?}",
            hung_run.lines()
        );
    }

    let out = hung_run.finish().await;
    out.assert_ok();
    let call = out.call("hung__tool_0");
    assert!(
        failed(call),
        "the hung server's call must time out: {}",
        out.transcript()
    );
    let deadline = std::time::Instant::now() + DEADLINE;
    while hung.requests("notifications/cancelled") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the timed-out call was never cancelled upstream: {:?}",
            hung.method_counts()
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.stop().await;
}

// ------------------------------------------------- the drivers, directly

/// Each driver against the Python SDK 2.3.0 conformance upstream with no
/// engine in between: lists, calls, and (when it can) is told of a change.
async fn client_directly(client: InteropClient) {
    let conf = crate::require_peer!(peers::conformance_upstream(PythonV2Http::Stateful));
    let mut task = ClientTask::new(conf.url())
        .call("test_simple_text", json!({}))
        .call("test_error_handling", json!({}))
        .call("test_missing_capability", json!({}));
    if client.can_listen() {
        task = task.listen_for("dynamic_tool_1");
    }
    let mut listener = match ClientRun::start(client, &task) {
        Ok(run) => run,
        Err(peers::PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    if client.can_listen() {
        listener.wait_step("listening").await;
        // A 2025 client's GET stream opens after `initialize`; the fixture
        // notifies every session it has seen, so a trigger sent before that
        // stream is open would be lost: trigger until the listener hears.
        let deadline = std::time::Instant::now() + DEADLINE;
        while !listener.lines().iter().any(|l| l["step"] == "list_changed") {
            assert!(
                std::time::Instant::now() < deadline,
                "never told: {:?}",
                listener.lines()
            );
            let trigger = run(
                InteropClient::PythonSdk2Auto,
                ClientTask::new(conf.url()).call("test_trigger_tool_change", json!({})),
            )
            .await
            .unwrap();
            trigger.assert_ok();
            actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let out = listener.finish().await;
    out.assert_ok();
    let want = match (client.reports_era(), client.era()) {
        (false, _) => None,
        (true, ClientEra::Modern) => Some(MODERN_REVISION),
        (true, ClientEra::Handshake) => Some(HANDSHAKE_REVISION),
    };
    assert_eq!(out.era(), want, "{}", out.transcript());
    assert_eq!(
        out.tools(),
        strings(&CONFORMANCE_UPSTREAM_TOOLS),
        "{}",
        out.transcript()
    );
    assert_eq!(
        ok_text(&out, "test_simple_text"),
        "This is a simple text response for testing."
    );
    assert_eq!(out.call("test_error_handling")["result"]["isError"], true);
    let missing = out.call("test_missing_capability");
    match client.era() {
        // 2026-07-28: a JSON-RPC error naming the capability.
        ClientEra::Modern => {
            assert_eq!(missing["error"]["code"], -32021, "{}", out.transcript());
            assert_eq!(
                missing["error"]["data"]["requiredCapabilities"],
                json!({ "sampling": {} })
            );
        }
        ClientEra::Handshake => assert_eq!(missing["result"]["isError"], true, "{missing}"),
    }
    if client.can_listen() {
        let last = out.listings().pop().unwrap();
        assert!(
            last.contains(&"dynamic_tool_1".to_owned()),
            "{}",
            out.transcript()
        );
    }
}

#[actix_web::test]
async fn python_sdk_2_auto_directly() {
    client_directly(InteropClient::PythonSdk2Auto).await;
}

#[actix_web::test]
async fn python_sdk_2_handshake_directly() {
    client_directly(InteropClient::PythonSdk2Handshake).await;
}

#[actix_web::test]
async fn python_sdk_1_directly() {
    client_directly(InteropClient::PythonSdk1).await;
}

#[actix_web::test]
async fn typescript_sdk_1_directly() {
    client_directly(InteropClient::TsSdk1).await;
}

#[actix_web::test]
async fn typescript_client_2_auto_directly() {
    client_directly(InteropClient::TsClientV2Auto).await;
}

#[actix_web::test]
async fn typescript_client_2_handshake_directly() {
    client_directly(InteropClient::TsClientV2Handshake).await;
}

#[actix_web::test]
async fn inspector_cli_directly() {
    client_directly(InteropClient::InspectorCli).await;
}

/// Each driver reports a JSON-RPC error of a call as an error (the Rust test
/// upstream answers an unknown tool -32602, as the engine must), and the
/// 2025 ones list and call the Rust test upstream like any server.
#[actix_web::test]
async fn drivers_report_rpc_errors_directly() {
    let up = TestUpstream::builder()
        .server_name("direct")
        .start()
        .unwrap();
    for client in InteropClient::ALL
        .into_iter()
        .filter(|c| c.era() == ClientEra::Handshake)
    {
        let task = ClientTask::new(up.url())
            .call("tool_2", json!({ "value": "d" }))
            .call("no_such_tool", json!({}));
        let Some(out) = run(client, task).await else {
            return;
        };
        out.assert_ok();
        assert_eq!(
            out.tools(),
            strings(&["tool_0", "tool_1", "tool_2", "tool_3", "tool_4"])
        );
        assert_eq!(
            ok_text(&out, "tool_2"),
            r#"tool_2 called on direct with {"value":"d"}"#
        );
        let missing = out.call("no_such_tool");
        assert_eq!(missing["error"]["code"], -32602, "{}", out.transcript());
    }
}
