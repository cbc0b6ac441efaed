//! Issue 9, items 12, 13, 17, 18: what an upstream can make the engine
//! hold, prompts and resources best effort, `/healthz` and dead actors, and
//! the config watcher's filter, maximum debounce and re-arm.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use discovery_actors::registry::Halt;
use discovery_actors::supervisor::{HaltUpstream, Shutdown};

use crate::helpers::{
    http, servers_yaml, spawn_app, spawn_app_file, spawn_app_with_engine, DEADLINE, FAST,
    LOCAL_WRITES,
};
use crate::support::upstream::{Fault, Methods, TestUpstream};

fn yaml(extra_discovery: &str, entries: &[(&str, String)]) -> String {
    format!(
        "{LOCAL_WRITES}{FAST}{extra_discovery}{}",
        servers_yaml(entries)
    )
}

/// Serialized size of a server's view.
fn view_bytes(view: &serde_json::Value) -> usize {
    view.to_string().len()
}

// ------------------------------------------------------------ item 12

#[actix_web::test]
async fn too_many_tools_is_a_clear_error_and_nothing_is_held() {
    let up = TestUpstream::builder()
        .tools(50)
        .page_size(20)
        .start()
        .unwrap();
    let app = spawn_app(&yaml("  max_tools: 30\n", &[("big", http(&up.url()))])).await;
    let view = app.wait_state("big", "degraded").await;
    let error = view["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("`tools/list` exceeded discovery.max_tools (30): 40 tools listed. Hint:"),
        "{error}"
    );
    assert_eq!(view["tool_count"], 0);
    assert!(app.tool_names().await.is_empty());
    // Reading stopped at the page that crossed the cap.
    assert_eq!(up.requests("tools/list"), 2);
    app.stop().await;
}

#[actix_web::test]
async fn a_listing_over_its_byte_cap_is_a_clear_error() {
    let up = TestUpstream::builder()
        .tools(20)
        .description_padding(10_000)
        .start()
        .unwrap();
    let app = spawn_app(&yaml(
        "  max_listing_bytes: 100KiB\n",
        &[("fat", http(&up.url()))],
    ))
    .await;
    let view = app.wait_state("fat", "degraded").await;
    let error = view["last_error"].as_str().unwrap();
    assert!(
        error.contains("exceeded discovery.max_listing_bytes (102400 bytes)"),
        "{error}"
    );
    assert_eq!(view["tool_count"], 0);
    app.stop().await;
}

#[actix_web::test]
async fn a_server_over_a_cap_keeps_its_last_tools_stale() {
    let up = TestUpstream::builder().tools(3).start().unwrap();
    let app = spawn_app(&yaml("  max_tools: 10\n", &[("s", http(&up.url()))])).await;
    app.wait_healthy("s", 3).await;
    up.set_tools(11);
    assert_eq!(app.post_json("/v1/servers/s/refresh", None).await.0, 202);
    let view = app.wait_state("s", "degraded").await;
    assert!(view["last_error"]
        .as_str()
        .unwrap()
        .contains("discovery.max_tools (10): 11 tools listed"));
    assert_eq!(view["tool_count"], 3);
    assert_eq!(view["stale"], true);
    app.stop().await;
}

#[actix_web::test]
async fn huge_upstream_texts_are_clipped_in_the_view() {
    // serverInfo.name of 200 KB, and a JSON-RPC error message of 1 MB.
    let up = TestUpstream::builder()
        .server_name("n".repeat(200_000))
        .tools(1)
        .start()
        .unwrap();
    let app = spawn_app(&yaml("", &[("s", http(&up.url()))])).await;
    let view = app.wait_healthy("s", 1).await;
    let name = view["server_info"]["name"].as_str().unwrap();
    assert!(name.chars().count() <= 1025, "{}", name.len());
    assert!(view_bytes(&view) < 8 * 1024, "{}", view_bytes(&view));

    up.update(|b| {
        b.fault = Some(Fault::JsonRpcError {
            code: -32000,
            message: "é".repeat(1_000_000),
        });
        b.fault_on = Methods::only(["tools/list"]);
    });
    assert_eq!(app.post_json("/v1/servers/s/refresh", None).await.0, 202);
    let view = app.wait_state("s", "degraded").await;
    let error = view["last_error"].as_str().unwrap();
    assert!(error.contains("JSON-RPC error -32000: éé"), "{error}");
    assert!(error.ends_with('…'), "{error}");
    assert!(error.chars().count() < 1000, "{}", error.chars().count());
    assert!(view_bytes(&view) < 8 * 1024, "{}", view_bytes(&view));
    app.stop().await;
}

// ------------------------------------------------------------ item 13

#[actix_web::test]
async fn failing_resources_never_withhold_the_tools() {
    let up = TestUpstream::builder()
        .tools(4)
        .resources(3)
        .prompts(2)
        .fault(Fault::JsonRpcError {
            code: -32603,
            message: "resources are broken".into(),
        })
        .fault_on(Methods::only(["resources/list"]))
        .start()
        .unwrap();
    let app = spawn_app(&yaml("", &[("s", http(&up.url()))])).await;
    app.wait_healthy("s", 4).await;
    let view = app
        .wait_server("s", "warned", |v| v["listing_warning"].is_string())
        .await;
    let warning = view["listing_warning"].as_str().unwrap();
    assert!(
        warning.contains("`resources/list` with JSON-RPC error -32603: resources are broken"),
        "{warning}"
    );
    assert_eq!(view["state"], "healthy");
    assert!(view["last_error"].is_null());
    assert_eq!(up.requests("prompts/list"), 1, "prompts still listed");

    // Fixed: the warning goes away at the next round.
    up.set_fault(None);
    assert_eq!(app.post_json("/v1/servers/s/refresh", None).await.0, 202);
    app.wait_server("s", "unwarned", |v| v["listing_warning"].is_null())
        .await;
    app.stop().await;
}

#[actix_web::test]
async fn hanging_resources_never_withhold_the_tools() {
    let up = TestUpstream::builder()
        .tools(2)
        .resources(1)
        .delay(Duration::from_secs(30))
        .delay_on(Methods::only(["resources/list"]))
        .start()
        .unwrap();
    let config = format!(
        "{}{}",
        FAST.replace("request_timeout: 5s", "request_timeout: 1s"),
        servers_yaml(&[("s", http(&up.url()))])
    );
    let app = spawn_app(&config).await;
    let started = Instant::now();
    app.wait_healthy("s", 2).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the tools waited for resources/list: {:?}",
        started.elapsed()
    );
    let view = app
        .wait_server("s", "warned", |v| v["listing_warning"].is_string())
        .await;
    assert!(view["listing_warning"]
        .as_str()
        .unwrap()
        .contains("No response to `resources/list`"));
    assert_eq!(view["state"], "healthy");
    app.stop().await;
}

#[actix_web::test]
async fn a_resources_list_over_the_cap_never_degrades_the_tools() {
    let up = TestUpstream::builder()
        .tools(5)
        .resources(50)
        .start()
        .unwrap();
    let app = spawn_app(&yaml("  max_tools: 20\n", &[("s", http(&up.url()))])).await;
    app.wait_healthy("s", 5).await;
    let view = app
        .wait_server("s", "warned", |v| v["listing_warning"].is_string())
        .await;
    assert!(
        view["listing_warning"]
            .as_str()
            .unwrap()
            .contains("`resources/list` exceeded discovery.max_tools (20): 50 resources listed"),
        "{view}"
    );
    assert_eq!(view["state"], "healthy");
    assert_eq!(app.tool_names().await.len(), 5);
    app.stop().await;
}

// ------------------------------------------------------------ item 17

async fn wait_healthz(app: &crate::helpers::TestApp, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (got, body) = app.get("/healthz").await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never {status}: {got} {body}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn healthz_fails_when_the_registry_is_gone() {
    let (app, engine) = spawn_app_with_engine(FAST).await;
    assert_eq!(app.get("/healthz").await.0, 200);
    engine.registry.do_send(Halt);
    let body = wait_healthz(&app, 503).await;
    assert_eq!(
        body,
        serde_json::json!({"status": "failing", "gone": ["registry"]})
    );
    app.stop().await;
}

#[actix_web::test]
async fn healthz_fails_when_the_supervisor_is_gone() {
    let (app, engine) = spawn_app_with_engine(FAST).await;
    assert_eq!(app.get("/healthz").await.0, 200);
    engine
        .supervisor
        .send(Shutdown {
            deadline: Duration::from_secs(5),
        })
        .await
        .unwrap();
    let body = wait_healthz(&app, 503).await;
    assert_eq!(
        body,
        serde_json::json!({"status": "failing", "gone": ["supervisor"]})
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_upstream_actor_that_dies_comes_back_healthy() {
    let up = TestUpstream::builder().tools(3).start().unwrap();
    let (app, engine) = spawn_app_with_engine(&yaml("", &[("s", http(&up.url()))])).await;
    let before = app.wait_healthy("s", 3).await;
    let generation = before["generation"].as_u64().unwrap();
    let halted = engine
        .supervisor
        .send(HaltUpstream { name: "s".into() })
        .await
        .unwrap();
    assert!(halted);
    let after = app
        .wait_server("s", "restarted and healthy", |v| {
            v["generation"].as_u64().unwrap() > generation && v["state"] == "healthy"
        })
        .await;
    assert_eq!(after["tool_count"], 3);
    assert_eq!(
        up.requests("initialize"),
        2,
        "a new session after the restart"
    );
    assert_eq!(app.get("/healthz").await.0, 200);
    app.stop().await;
}

// ------------------------------------------------------------ item 18

const APPLIED: &str = "mcp_discovery_config_reloads_total{outcome=\"applied\"}";

/// The config in `<tmp>/conf/config.yaml`, so the directory itself can be
/// replaced.
struct Conf {
    root: tempfile::TempDir,
}

impl Conf {
    fn new(yaml: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("conf")).unwrap();
        std::fs::write(root.path().join("conf/config.yaml"), yaml).unwrap();
        Self { root }
    }
    fn dir(&self) -> PathBuf {
        self.root.path().join("conf")
    }
    fn path(&self) -> PathBuf {
        self.dir().join("config.yaml")
    }
}

fn two(a: &str, b: Option<&str>) -> String {
    let mut entries = vec![("a", http(a))];
    if let Some(b) = b {
        entries.push(("b", http(b)));
    }
    yaml("", &entries)
}

async fn wait_metric(app: &crate::helpers::TestApp, series: &str, at_least: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while app.metric(series).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn unrelated_files_in_the_directory_never_reload_nor_delay() {
    let a = TestUpstream::builder().tools(1).start().unwrap();
    let b = TestUpstream::builder().tools(2).start().unwrap();
    let conf = Conf::new(&two(&a.url(), None));
    let app = spawn_app_file(&conf.path()).await;
    app.wait_healthy("a", 1).await;
    // A log file next to the config, written every 200 ms.
    let log = conf.dir().join("engine.log");
    for i in 0..10 {
        std::fs::write(&log, format!("line {i}\n")).unwrap();
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    // Past any debounce: nothing was reloaded.
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.metric(APPLIED).await, 0.0);
    // Still written while the config changes: the reload is not held back
    // by them (the debounce is 1 s; counted as events, they would hold it
    // back to its maximum, 5 s).
    std::fs::write(conf.path(), two(&a.url(), Some(&b.url()))).unwrap();
    let changed = Instant::now();
    let mut i = 0;
    while app.metric(APPLIED).await < 1.0 {
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "an unrelated file held the reload back"
        );
        std::fs::write(&log, format!("more {i}\n")).unwrap();
        i += 1;
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    app.wait_healthy("b", 2).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_steady_stream_of_edits_cannot_postpone_the_reload() {
    let a = TestUpstream::builder().tools(1).start().unwrap();
    let b = TestUpstream::builder().tools(2).start().unwrap();
    let conf = Conf::new(&two(&a.url(), None));
    let app = spawn_app_file(&conf.path()).await;
    app.wait_healthy("a", 1).await;
    let started = Instant::now();
    let mut n = 0;
    // An edit every 500 ms (each a real change), for up to 12 s.
    while app.metric(APPLIED).await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "the reload was postponed for as long as the edits went on"
        );
        let comment = format!("# edit {n}\n");
        std::fs::write(conf.path(), comment + &two(&a.url(), Some(&b.url()))).unwrap();
        n += 1;
        actix_rt::time::sleep(Duration::from_millis(500)).await;
    }
    app.wait_healthy("b", 2).await;
    app.stop().await;
}

#[actix_web::test]
async fn the_watch_survives_its_directory_being_replaced() {
    let a = TestUpstream::builder().tools(1).start().unwrap();
    let b = TestUpstream::builder().tools(2).start().unwrap();
    let conf = Conf::new(&two(&a.url(), None));
    let app = spawn_app_file(&conf.path()).await;
    app.wait_healthy("a", 1).await;

    // Removed and created again, same content.
    std::fs::remove_dir_all(conf.dir()).unwrap();
    std::fs::create_dir(conf.dir()).unwrap();
    std::fs::write(conf.path(), two(&a.url(), None)).unwrap();
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    std::fs::write(conf.path(), two(&a.url(), Some(&b.url()))).unwrap();
    app.wait_healthy("b", 2).await;
    wait_metric(&app, APPLIED, 1.0, DEADLINE).await;

    // Another directory renamed in its place.
    let next = conf.root.path().join("conf.next");
    std::fs::create_dir(&next).unwrap();
    std::fs::write(next.join("config.yaml"), two(&a.url(), Some(&b.url()))).unwrap();
    std::fs::rename(conf.dir(), conf.root.path().join("conf.old")).unwrap();
    std::fs::rename(&next, conf.dir()).unwrap();
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    std::fs::write(conf.path(), two(&a.url(), None)).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while app.servers().await.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the edit after the rename was never picked up"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
