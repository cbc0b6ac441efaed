//! The real `mcp-discovery` binary as a child process, for the tests that
//! need a process of its own (signals, `kill -9`, logs, replicas). Killed by
//! PID when dropped, whatever the test did.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-discovery");

pub struct EngineProcess {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub client: awc::Client,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the binary binds it itself).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EngineProcess {
    /// `serve --config <config>` on a free loopback port; stderr to `log`
    /// (with `RUST_LOG=debug`) or discarded (`warn`).
    pub fn start(config: &Path, log: Option<&Path>) -> EngineProcess {
        Self::start_with_env(config, log, &[])
    }

    pub async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .client
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the engine never listened");
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A 200 body as text.
    pub async fn get_text(&self, path: &str) -> String {
        let mut res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let body = res.body().limit(1 << 24).await.unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// `/v1/servers`, or None while the engine is not answering.
    pub async fn servers(&self) -> Option<Vec<Value>> {
        let mut res = self
            .client
            .get(format!("{}/v1/servers", self.base))
            .send()
            .await
            .ok()?;
        let v: Value = res.json().limit(1 << 24).await.ok()?;
        v["servers"].as_array().cloned()
    }

    /// Polls `/v1/servers` until `pred` holds.
    pub async fn wait(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(servers) = self.servers().await {
                if pred(&servers) {
                    return servers;
                }
            }
            assert!(
                Instant::now() < deadline,
                "never: {what}: {:#?}",
                self.servers().await
            );
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGTERM, then waits for the exit (so every log line is written).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            actix_rt::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The server named `name` in a `/v1/servers` list, or `null` while it is
/// not listed yet (safe inside a `wait` predicate: the first snapshots of a
/// starting engine may list only some servers).
pub fn find<'a>(servers: &'a [Value], name: &str) -> &'a Value {
    static MISSING: Value = Value::Null;
    servers
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or(&MISSING)
}

impl EngineProcess {
    /// Like [`EngineProcess::start`], with extra environment variables for
    /// the engine (and so for what it may pass on to stdio children).
    pub fn start_with_env(
        config: &Path,
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> EngineProcess {
        let port = free_port();
        let (stderr, level) = match log {
            Some(path) => (Stdio::from(std::fs::File::create(path).unwrap()), "debug"),
            None => (Stdio::null(), "warn"),
        };
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // The default store next to the config, in the test's own
            // directory (not in the working directory of the test run).
            .env(
                "MCP_DISCOVERY_STATE_DIR",
                config.parent().unwrap_or(Path::new(".")),
            )
            .env("RUST_LOG", level)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        EngineProcess {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
        }
    }
}
