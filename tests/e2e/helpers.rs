//! `spawn_app`: the real application (engine + HTTP API) on port 0 inside the
//! test's actix System, with typed request helpers and deadline polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use discovery_config::{load_str, Format};
use mcp_discovery::{AppHandle, AppOptions, Application};
use serde_json::Value;

/// How long a test waits for a state before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Test-friendly global settings: fast backoff, no polling unless asked.
pub const FAST: &str = "\
discovery:
  poll_interval: 10m
  request_timeout: 5s
  connect_timeout: 2s
  backoff: { initial: 100ms, max: 1s }
  stale_ttl: 10m
";

/// Writes without a key from this (loopback) test client: the mode most
/// tests run in (the default, no keys, refuses every write).
pub const LOCAL_WRITES: &str = "admin: { allow_loopback_writes: true }\n";

pub struct TestApp {
    pub base: String,
    pub handle: AppHandle,
    pub client: awc::Client,
    task: Option<actix_rt::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts the application with `yaml` (a whole config; `listen` is
/// overridden to 127.0.0.1:0).
pub async fn spawn_app(yaml: &str) -> TestApp {
    let config = load_str(yaml, Format::Yaml, None, &[]).unwrap_or_else(|e| panic!("{e}"));
    start(config).await
}

/// Starts the application on the config file at `path` (so it can be
/// reloaded).
pub async fn spawn_app_file(path: &std::path::Path) -> TestApp {
    let config = discovery_config::load_file(path).unwrap_or_else(|e| panic!("{e}"));
    start(config).await
}

async fn start(config: discovery_config::Config) -> TestApp {
    start_with(config, AppOptions::for_tests()).await
}

/// Starts the application on `config` with `options`.
pub async fn start_with(config: discovery_config::Config, options: AppOptions) -> TestApp {
    let app = Application::build(Arc::new(config), options).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let task = actix_rt::spawn(app.run());
    TestApp {
        base,
        handle,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish(),
        task: Some(task),
    }
}

/// As [`spawn_app`], also handing back the engine (to reach its actors).
pub async fn spawn_app_with_engine(yaml: &str) -> (TestApp, discovery_actors::Engine) {
    let config = load_str(yaml, Format::Yaml, None, &[]).unwrap_or_else(|e| panic!("{e}"));
    let app = Application::build(Arc::new(config), AppOptions::for_tests())
        .await
        .unwrap();
    let engine = app.engine().clone();
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let task = actix_rt::spawn(app.run());
    let app = TestApp {
        base,
        handle,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish(),
        task: Some(task),
    };
    (app, engine)
}

/// `servers:` YAML for `(name, body)` pairs; `body` is the entry's YAML map
/// in flow style, e.g. `{ url: "http://..." }`.
pub fn servers_yaml(entries: &[(&str, String)]) -> String {
    let mut out = String::from("servers:\n");
    for (name, body) in entries {
        out.push_str(&format!("  {name}: {body}\n"));
    }
    out
}

pub fn http(url: &str) -> String {
    format!("{{ url: \"{url}\", transport: streamable-http }}")
}

impl TestApp {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let mut res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.body().limit(256 << 20).await.unwrap();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        (status, value)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let mut res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.body().limit(256 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// POST with an optional bearer token; the status and the JSON body.
    pub async fn post_json(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        // A JSON client says so, body or not (a body-less POST without a key
        // and without it is refused: it is what an HTML form sends).
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .content_type("application/json");
        if let Some(token) = bearer {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.body().limit(16 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The value of one series in `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get_text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub async fn post(&self, path: &str) -> u16 {
        self.client
            .post(format!("{}{path}", self.base))
            .content_type("application/json")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn servers(&self) -> Vec<Value> {
        let (status, body) = self.get("/v1/servers").await;
        assert_eq!(status, 200, "{body}");
        body["servers"].as_array().cloned().unwrap_or_default()
    }

    pub async fn server(&self, name: &str) -> Value {
        self.servers()
            .await
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    /// Tool names in the catalog, in order.
    pub async fn tool_names(&self) -> Vec<String> {
        let (status, body) = self.get("/v1/tools").await;
        assert_eq!(status, 200);
        body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Polls `/v1/servers` until `pred(server)` holds for `name`.
    pub async fn wait_server(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            // Not listed yet is "not yet" too: the engine registers its
            // servers just after the application starts.
            let s = self
                .servers()
                .await
                .into_iter()
                .find(|s| s["name"] == name)
                .unwrap_or(Value::Null);
            if !s.is_null() && pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became {what}: {s:#}"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_state(&self, name: &str, state: &str) -> Value {
        self.wait_server(name, state, |s| s["state"] == state).await
    }

    /// Healthy with exactly `tools` tools.
    /// `name` healthy with `tools` tools, in its view and in the catalog:
    /// the two are snapshots published apart, so a view can say healthy a
    /// moment before the catalog (`/v1/tools`, `/mcp`) holds its tools.
    pub async fn wait_healthy(&self, name: &str, tools: usize) -> Value {
        let view = self
            .wait_server(name, &format!("healthy with {tools} tools"), |s| {
                s["state"] == "healthy" && s["tool_count"] == tools
            })
            .await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, body) = self.get(&format!("/v1/tools?server={name}")).await;
            if body["tools"].as_array().is_some_and(|t| t.len() == tools) {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "{name}'s {tools} tools never reached the catalog: {body}"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/v1/tools` until `pred(body)` holds.
    pub async fn wait_tools(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, body) = self.get("/v1/tools").await;
            if pred(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "catalog never {what}: {body:#}");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            let _ = actix_rt::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// Names of `tools` as the catalog shows them for `server`.
pub fn namespaced(server: &str, tools: &[String]) -> Vec<String> {
    tools.iter().map(|t| format!("{server}__{t}")).collect()
}
