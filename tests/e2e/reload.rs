//! Hot reload: one test per case of the issue. The config lives in a temp
//! directory so the watcher, renames and ConfigMap-style symlink swaps are
//! real.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{spawn_app_file, TestApp, DEADLINE, LOCAL_WRITES};
use crate::process::EngineProcess;
use crate::support::upstream::{Methods, TestUpstream};

const HEAD: &str = "\
discovery:
  poll_interval: 10m
  request_timeout: 5s
  connect_timeout: 2s
  backoff: { initial: 100ms, max: 1s }
";

/// A config with `servers` as `(name, url, extra YAML in the entry)`.
fn config(servers: &[(&str, &str, &str)]) -> String {
    let mut out = format!("{LOCAL_WRITES}{HEAD}servers:\n");
    for (name, url, extra) in servers {
        out.push_str(&format!("  {name}: {{ url: \"{url}\"{extra} }}\n"));
    }
    out
}

struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the file as editors do: write a sibling, rename over.
    fn replace(&self, yaml: &str) {
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

async fn reload(app: &TestApp) -> (u16, Value) {
    app.post_json("/v1/admin/reload", None).await
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

async fn server_names(app: &TestApp) -> Vec<String> {
    app.servers()
        .await
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_servers(app: &TestApp, want: &[&str]) {
    let deadline = Instant::now() + DEADLINE;
    while server_names(app).await != want {
        assert!(Instant::now() < deadline, "servers never became {want:?}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn add_remove_change_and_unchanged_is_not_touched() {
    let a = TestUpstream::builder().tools(2).start().unwrap();
    let b = TestUpstream::builder().tools(3).start().unwrap();
    let dir = ConfigDir::new(&config(&[("a", &a.url(), "")]));
    let app = spawn_app_file(&dir.path()).await;
    app.wait_healthy("a", 2).await;

    // Add b.
    std::fs::write(
        dir.path(),
        config(&[("a", &a.url(), ""), ("b", &b.url(), "")]),
    )
    .unwrap();
    let (status, body) = reload(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], true);
    assert_eq!(names(&body["added"]), ["b"]);
    assert!(names(&body["removed"]).is_empty() && names(&body["changed"]).is_empty());
    assert_eq!(body["unchanged"], 1);
    app.wait_healthy("b", 3).await;

    // Change b (a filter), leave a alone.
    let filter = ", tools: { allow: [\"tool_0\"] }";
    std::fs::write(
        dir.path(),
        config(&[("a", &a.url(), ""), ("b", &b.url(), filter)]),
    )
    .unwrap();
    let (status, body) = reload(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body["changed"]), ["b"]);
    app.wait_healthy("b", 1).await;
    assert_eq!(b.requests("initialize"), 2, "a changed server restarts");

    // Remove b: it stops (session DELETEd), its tools and series go.
    std::fs::write(dir.path(), config(&[("a", &a.url(), "")])).unwrap();
    let (status, body) = reload(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body["removed"]), ["b"]);
    wait_servers(&app, &["a"]).await;
    app.wait_tools("lost b's tools", |t| {
        t["tools"].as_array().is_some_and(|t| t.len() == 2)
    })
    .await;
    let deadline = Instant::now() + DEADLINE;
    while b.sessions_deleted() < 2 {
        assert!(Instant::now() < deadline, "b's session was not deleted");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        !metrics.contains("server=\"b\""),
        "b's series remain:\n{metrics}"
    );

    // a was never touched: one session, never deleted.
    assert_eq!(a.requests("initialize"), 1);
    assert_eq!(a.sessions_deleted(), 0);
    assert_eq!(app.server("a").await["generation"], 1);
    assert_eq!(
        app.metric("mcp_discovery_config_reloads_total{outcome=\"applied\"}")
            .await,
        3.0
    );
    app.stop().await;
}

#[actix_web::test]
async fn invalid_files_are_rejected_whole_and_nothing_changes() {
    let a = TestUpstream::builder().tools(2).start().unwrap();
    let good = config(&[("a", &a.url(), "")]);
    let dir = ConfigDir::new(&good);
    let app = spawn_app_file(&dir.path()).await;
    app.wait_healthy("a", 2).await;

    let cases: [(&str, String, &str); 4] = [
        ("not yaml", "servers: [unclosed\n  : : :\n".into(), ""),
        (
            "invalid value",
            format!("{good}  b: {{ url: \"not a url\", transport: streamable-http }}\n"),
            "servers.b.url",
        ),
        (
            "unset variable",
            format!("{good}  c: {{ url: \"${{MCP_DISCOVERY_TEST_RELOAD_UNSET}}\" }}\n"),
            "MCP_DISCOVERY_TEST_RELOAD_UNSET",
        ),
        (
            "listen needs a restart",
            format!("listen: 127.0.0.1:1\n{good}"),
            "restart",
        ),
    ];
    for (i, (case, yaml, needle)) in cases.iter().enumerate() {
        std::fs::write(dir.path(), yaml).unwrap();
        let (status, body) = reload(&app).await;
        assert_eq!(status, 422, "{case}: {body}");
        assert_eq!(body["error"]["code"], "config_rejected", "{case}");
        let problems = body["error"]["errors"].as_array().unwrap();
        assert!(!problems.is_empty(), "{case}");
        let text = body.to_string();
        assert!(
            text.contains(needle),
            "{case}: {needle:?} missing in {text}"
        );
        assert_eq!(
            app.metric("mcp_discovery_config_reloads_total{outcome=\"rejected\"}")
                .await,
            (i + 1) as f64
        );
        assert_eq!(
            app.metric("mcp_discovery_config_last_reload_successful")
                .await,
            0.0
        );
        assert_eq!(
            server_names(&app).await,
            ["a"],
            "{case}: running config touched"
        );
        assert_eq!(app.server("a").await["state"], "healthy");
    }
    assert_eq!(a.requests("initialize"), 1, "a never restarted");

    std::fs::write(dir.path(), &good).unwrap();
    let (status, body) = reload(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.metric("mcp_discovery_config_last_reload_successful")
            .await,
        1.0
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_file_replaced_by_rename_is_picked_up() {
    let a = TestUpstream::builder().tools(1).start().unwrap();
    let b = TestUpstream::builder().tools(2).start().unwrap();
    let dir = ConfigDir::new(&config(&[("a", &a.url(), "")]));
    let app = spawn_app_file(&dir.path()).await;
    app.wait_healthy("a", 1).await;
    dir.replace(&config(&[("a", &a.url(), ""), ("b", &b.url(), "")]));
    wait_servers(&app, &["a", "b"]).await;
    app.wait_healthy("b", 2).await;
    assert_eq!(a.requests("initialize"), 1);
    app.stop().await;
}

/// What the kubelet does: `config.yaml -> ..data/config.yaml`,
/// `..data -> ..<version>`; an update writes a new version directory and
/// renames a new `..data` symlink over the old one.
#[cfg(unix)]
#[actix_web::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;

    let a = TestUpstream::builder().tools(1).start().unwrap();
    let b = TestUpstream::builder().tools(2).start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let version = |name: &str, yaml: &str| {
        std::fs::create_dir(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("config.yaml"), yaml).unwrap();
    };
    version("..v1", &config(&[("a", &a.url(), "")]));
    symlink("..v1", root.join("..data")).unwrap();
    symlink("..data/config.yaml", root.join("config.yaml")).unwrap();
    let app = spawn_app_file(&root.join("config.yaml")).await;
    app.wait_healthy("a", 1).await;

    version("..v2", &config(&[("a", &a.url(), ""), ("b", &b.url(), "")]));
    symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..v1")).unwrap();
    wait_servers(&app, &["a", "b"]).await;
    app.wait_healthy("b", 2).await;
    assert_eq!(a.requests("initialize"), 1);
    app.stop().await;
}

#[actix_web::test]
async fn ten_edits_within_a_second_are_one_reload() {
    let a = TestUpstream::builder().tools(1).start().unwrap();
    let dir = ConfigDir::new(&config(&[("a", &a.url(), "")]));
    let app = spawn_app_file(&dir.path()).await;
    app.wait_healthy("a", 1).await;
    let ups: Vec<TestUpstream> = (0..10)
        .map(|_| TestUpstream::builder().tools(1).start().unwrap())
        .collect();
    for i in 1..=10 {
        let mut servers = vec![("a".to_owned(), a.url())];
        servers.extend((0..i).map(|j| (format!("s{j}"), ups[j].url())));
        let refs: Vec<(&str, &str, &str)> = servers
            .iter()
            .map(|(n, u)| (n.as_str(), u.as_str(), ""))
            .collect();
        std::fs::write(dir.path(), config(&refs)).unwrap();
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let want: Vec<String> = std::iter::once("a".to_owned())
        .chain((0..10).map(|j| format!("s{j}")))
        .collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    wait_servers(&app, &want).await;
    // Nothing else may follow: wait out two debounce periods.
    actix_rt::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.metric("mcp_discovery_config_reloads_total{outcome=\"applied\"}")
            .await,
        1.0
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_reload_during_a_discovery_drops_the_old_result() {
    // The first listing takes 1.5 s; the reload lands in the middle of it.
    let up = TestUpstream::builder()
        .tools(5)
        .delay(Duration::from_millis(1500))
        .delay_on(Methods::only(["tools/list"]))
        .start()
        .unwrap();
    let old = ", tools: { allow: [\"tool_0\"] }";
    let new = ", tools: { allow: [\"tool_1\", \"tool_2\"] }";
    let dir = ConfigDir::new(&config(&[("s", &up.url(), old)]));
    let app = spawn_app_file(&dir.path()).await;
    let deadline = Instant::now() + DEADLINE;
    while up.requests("tools/list") == 0 {
        assert!(Instant::now() < deadline, "no listing started");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(dir.path(), config(&[("s", &up.url(), new)])).unwrap();
    let started = Instant::now();
    let (status, body) = reload(&app).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the reload waited on the discovery"
    );
    assert_eq!(names(&body["changed"]), ["s"]);
    // Until the new incarnation is healthy, the old one's result (tool_0)
    // must never show up.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let tools = app.tool_names().await;
        assert!(
            !tools.contains(&"s__tool_0".to_owned()),
            "a stale result landed: {tools:?}"
        );
        if tools == ["s__tool_1", "s__tool_2"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never got the new tools: {tools:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // The old incarnation's listing has finished meanwhile; still clean.
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.tool_names().await, ["s__tool_1", "s__tool_2"]);
    app.stop().await;
}

#[actix_web::test]
async fn the_catalog_never_fails_during_fifty_reloads() {
    let a = TestUpstream::builder().tools(3).start().unwrap();
    let b = TestUpstream::builder().tools(4).start().unwrap();
    let one = config(&[("a", &a.url(), "")]);
    let two = config(&[("a", &a.url(), ""), ("b", &b.url(), "")]);
    let dir = ConfigDir::new(&one);
    let app = spawn_app_file(&dir.path()).await;
    app.wait_healthy("a", 3).await;

    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let base = app.base.clone();
    let client = app.client.clone();
    let flag = stop.clone();
    let reader = actix_rt::spawn(async move {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !flag.get() {
            match client.get(format!("{base}/v1/tools")).send().await {
                Ok(mut res) if res.status().is_success() => {
                    let body = res.body().limit(16 << 20).await.unwrap();
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    assert!(v["tools"].is_array());
                    ok += 1;
                }
                Ok(res) => failed.push(res.status().as_u16().to_string()),
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    });
    for i in 0..50 {
        std::fs::write(dir.path(), if i % 2 == 0 { &two } else { &one }).unwrap();
        let (status, body) = reload(&app).await;
        assert_eq!(status, 200, "reload {i}: {body}");
    }
    stop.set(true);
    let (ok, failed) = reader.await.unwrap();
    assert!(failed.is_empty(), "GET /v1/tools failed: {failed:?}");
    assert!(ok > 0);
    assert_eq!(a.requests("initialize"), 1, "a never restarted");
    app.stop().await;
}

#[actix_web::test]
async fn reload_and_refresh_need_the_admin_key_when_keys_are_set() {
    let a = TestUpstream::builder().tools(1).start().unwrap();
    let yaml = format!(
        "admin: {{ api_keys: [\"k-one-0123456789\", \"k-two-0123456789\"] }}\n{}",
        config(&[("a", &a.url(), "")]).replace(LOCAL_WRITES, "")
    );
    let dir = ConfigDir::new(&yaml);
    let app = spawn_app_file(&dir.path()).await;
    app.wait_healthy("a", 1).await;
    let (status, body) = app.post_json("/v1/admin/reload", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        app.post_json("/v1/admin/reload", Some("wrong-key-0123456789"))
            .await
            .0,
        401
    );
    assert_eq!(app.post_json("/v1/servers/a/refresh", None).await.0, 401);
    assert_eq!(
        app.post_json("/v1/admin/reload", Some("k-two-0123456789"))
            .await
            .0,
        200
    );
    assert_eq!(
        app.post_json("/v1/servers/a/refresh", Some("k-one-0123456789"))
            .await
            .0,
        202
    );
    assert_eq!(app.get("/v1/tools").await.0, 200, "reads stay open");
    app.stop().await;
}

#[actix_web::test]
async fn embedded_defaults_have_nothing_to_reload() {
    let app = crate::helpers::spawn_app(&format!("{LOCAL_WRITES}servers: {{}}\n")).await;
    let (status, body) = reload(&app).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "no_config_file");
    app.stop().await;
}

/// SIGHUP goes to the real binary (a signal to this test process would
/// reach every test).
#[actix_web::test]
async fn sighup_reloads_the_real_binary() {
    let a = TestUpstream::builder().tools(1).start().unwrap();
    let b = TestUpstream::builder().tools(2).start().unwrap();
    let dir = ConfigDir::new(&config(&[("a", &a.url(), "")]));
    let log_path = dir.dir.path().join("engine.log");
    let mut engine = EngineProcess::start(&dir.path(), Some(&log_path));
    let all_healthy = |want: usize| {
        move |s: &[Value]| s.len() == want && s.iter().all(|s| s["state"] == "healthy")
    };
    engine.wait("1 healthy server", all_healthy(1)).await;
    std::fs::write(
        dir.path(),
        config(&[("a", &a.url(), ""), ("b", &b.url(), "")]),
    )
    .unwrap();
    engine.signal("HUP");
    engine.wait("2 healthy servers", all_healthy(2)).await;
    engine.terminate().await;
    // The watcher sees the write too, but only after its debounce, and then
    // finds the bytes already applied: the reload that happened is SIGHUP's.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines()
            .any(|l| l.contains("Reloaded the configuration") && l.contains("sighup")),
        "{logs}"
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("Reloaded the configuration") && l.contains("trigger=\"file\"")),
        "{logs}"
    );
}
