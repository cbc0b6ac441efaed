//! Interop clients: MCP clients nobody here wrote, driven by the small
//! scripts in `tests/fixtures/clients/` (installed pinned into `.deps/` by
//! `scripts/setup-test-deps.sh`).
//!
//! | client | driver | SDK (pin) | eras |
//! |---|---|---|---|
//! | [`InteropClient::PythonSdk2Auto`] | `.deps/venv-mcp2/bin/python tests/fixtures/clients/py_client.py --mode auto` | PyPI `mcp` 2.3.0 | 2026-07-28 when offered, else 2025 |
//! | [`InteropClient::PythonSdk2Handshake`] | `... --mode legacy` | PyPI `mcp` 2.3.0 | 2025 (`initialize`) |
//! | [`InteropClient::PythonSdk1`] | `.deps/venv/bin/python tests/fixtures/clients/py_client_v1.py` | PyPI `mcp` 1.30.0 | 2025 |
//! | [`InteropClient::TsSdk1`] | `node tests/fixtures/clients/ts_sdk1.mjs` | npm `@modelcontextprotocol/sdk` 1.32.2 | 2025 |
//! | [`InteropClient::TsClientV2Auto`] | `node tests/fixtures/clients/ts_client_v2.mjs --mode auto` | npm `@modelcontextprotocol/client` 2.4.0 | 2026-07-28 when offered, else 2025 |
//! | [`InteropClient::TsClientV2Handshake`] | `... --mode legacy` (the SDK's default) | same | 2025 |
//! | [`InteropClient::InspectorCli`] | `node tests/fixtures/clients/inspector.mjs` | npm `@modelcontextprotocol/inspector-cli` 1.0.3 | 2025; cannot listen |
//!
//! Every driver takes `--url`, `--call JSON` (repeatable), `--listen`,
//! `--expect-tool NAME`, `--header`, `--timeout` and prints one JSON object
//! per step on stdout (`connect`, `list`, `call`, `listening`,
//! `list_changed`, `done`, or `error`; the format is documented in
//! `tests/fixtures/clients/_common.py`). [`ClientRun`] collects those lines
//! on a thread as they come, so a test can wait for `listening` before it
//! changes an upstream, and waits for the exit without blocking the test's
//! runtime (the engine under test may be running on it).
//!
//! Missing `.deps`: [`PeerError::Missing`]; `MCP_DISCOVERY_SKIP_INTEROP=1`:
//! [`PeerError::Skip`] (the rules of [`peers`](super::peers)).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::peers::{self, PeerError};

/// The drivers' own deadline for a whole run, and the test's for a step.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

/// The eras a client negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEra {
    /// 2026-07-28 with a server that offers it (`server/discover` first).
    Modern,
    /// A 2025 revision through `initialize`.
    Handshake,
}

/// One MCP client nobody here wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InteropClient {
    PythonSdk2Auto,
    PythonSdk2Handshake,
    PythonSdk1,
    TsSdk1,
    TsClientV2Auto,
    TsClientV2Handshake,
    InspectorCli,
}

impl InteropClient {
    pub const ALL: [InteropClient; 7] = [
        InteropClient::PythonSdk2Auto,
        InteropClient::PythonSdk2Handshake,
        InteropClient::PythonSdk1,
        InteropClient::TsSdk1,
        InteropClient::TsClientV2Auto,
        InteropClient::TsClientV2Handshake,
        InteropClient::InspectorCli,
    ];

    pub fn name(self) -> &'static str {
        match self {
            InteropClient::PythonSdk2Auto => "python-sdk-2.3.0-auto",
            InteropClient::PythonSdk2Handshake => "python-sdk-2.3.0-handshake",
            InteropClient::PythonSdk1 => "python-sdk-1.30.0",
            InteropClient::TsSdk1 => "typescript-sdk-1.32.2",
            InteropClient::TsClientV2Auto => "typescript-client-2.4.0-auto",
            InteropClient::TsClientV2Handshake => "typescript-client-2.4.0-handshake",
            InteropClient::InspectorCli => "inspector-cli-1.0.3",
        }
    }

    /// The era it picks with a server that speaks both.
    pub fn era(self) -> ClientEra {
        match self {
            InteropClient::PythonSdk2Auto | InteropClient::TsClientV2Auto => ClientEra::Modern,
            _ => ClientEra::Handshake,
        }
    }

    /// Whether the driver reports the negotiated revision (the inspector
    /// CLI prints results only).
    pub fn reports_era(self) -> bool {
        self != InteropClient::InspectorCli
    }

    /// Whether it can wait for `notifications/tools/list_changed`.
    pub fn can_listen(self) -> bool {
        self != InteropClient::InspectorCli
    }

    fn driver(self) -> &'static str {
        match self {
            InteropClient::PythonSdk2Auto | InteropClient::PythonSdk2Handshake => "py_client.py",
            InteropClient::PythonSdk1 => "py_client_v1.py",
            InteropClient::TsSdk1 => "ts_sdk1.mjs",
            InteropClient::TsClientV2Auto | InteropClient::TsClientV2Handshake => {
                "ts_client_v2.mjs"
            }
            InteropClient::InspectorCli => "inspector.mjs",
        }
    }

    /// The interpreter, what must be installed, and the mode flag.
    fn launch(self) -> (PathBuf, PathBuf, Option<&'static str>) {
        let deps = peers::deps_dir();
        let node = || PathBuf::from("node");
        match self {
            InteropClient::PythonSdk2Auto => {
                (peers::python_v2_bin(), peers::python_v2_bin(), Some("auto"))
            }
            InteropClient::PythonSdk2Handshake => (
                peers::python_v2_bin(),
                peers::python_v2_bin(),
                Some("legacy"),
            ),
            InteropClient::PythonSdk1 => (peers::python_bin(), peers::python_bin(), None),
            InteropClient::TsSdk1 => (
                node(),
                deps.join("node-sdk1/node_modules/@modelcontextprotocol/sdk/package.json"),
                None,
            ),
            InteropClient::TsClientV2Auto => (
                node(),
                deps.join("node-client-v2/node_modules/@modelcontextprotocol/client/package.json"),
                Some("auto"),
            ),
            InteropClient::TsClientV2Handshake => (
                node(),
                deps.join("node-client-v2/node_modules/@modelcontextprotocol/client/package.json"),
                Some("legacy"),
            ),
            InteropClient::InspectorCli => (
                node(),
                deps.join(
                    "inspector/node_modules/@modelcontextprotocol/inspector-cli/build/cli.js",
                ),
                None,
            ),
        }
    }

    fn modules(self) -> Option<PathBuf> {
        let deps = peers::deps_dir();
        match self {
            InteropClient::TsSdk1 => Some(deps.join("node-sdk1/node_modules")),
            InteropClient::TsClientV2Auto | InteropClient::TsClientV2Handshake => {
                Some(deps.join("node-client-v2/node_modules"))
            }
            InteropClient::InspectorCli => Some(deps.join("inspector/node_modules")),
            _ => None,
        }
    }
}

/// What a driver is asked to do.
#[derive(Clone, Debug, Default)]
pub struct ClientTask {
    pub url: String,
    /// `{"name": ..., "arguments": {...}}`, in order.
    pub calls: Vec<Value>,
    pub listen: bool,
    pub expect_tool: Option<String>,
    pub headers: Vec<(String, String)>,
    /// More arguments for the driver (e.g. the 1.x driver's `--sampling`).
    pub args: Vec<String>,
}

impl ClientTask {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    pub fn call(mut self, name: &str, arguments: Value) -> Self {
        self.calls
            .push(json!({ "name": name, "arguments": arguments }));
        self
    }

    /// Waits for list_changed until a listing shows `tool`.
    pub fn listen_for(mut self, tool: &str) -> Self {
        self.listen = true;
        self.expect_tool = Some(tool.to_owned());
        self
    }

    /// More arguments for the driver.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A running driver; killed by PID and reaped when dropped.
pub struct ClientRun {
    client: InteropClient,
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    /// stderr, and stdout lines that were not JSON.
    noise: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ClientRun {
    /// Starts `client` on `task`.
    pub fn start(client: InteropClient, task: &ClientTask) -> Result<ClientRun, PeerError> {
        if peers::interop_skipped() {
            return Err(PeerError::Skip(format!(
                "MCP_DISCOVERY_SKIP_INTEROP=1: interop test with {} not run",
                client.name()
            )));
        }
        let (interpreter, installed, mode) = client.launch();
        if !installed.exists() {
            return Err(PeerError::Missing(format!(
                "interop client {} is not installed ({} is missing). \
                 Hint: run scripts/setup-test-deps.sh (or set MCP_DISCOVERY_SKIP_INTEROP=1 to skip interop tests).",
                client.name(),
                installed.display()
            )));
        }
        let mut cmd = Command::new(interpreter);
        cmd.arg(
            peers::repo_root()
                .join("tests/fixtures/clients")
                .join(client.driver()),
        )
        .args(["--url", &task.url])
        .args(["--timeout", &CLIENT_TIMEOUT.as_secs().to_string()])
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(peers::repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(mode) = mode {
            cmd.args(["--mode", mode]);
        }
        if let Some(modules) = client.modules() {
            cmd.arg("--modules").arg(modules);
        }
        for call in &task.calls {
            cmd.args(["--call", &call.to_string()]);
        }
        if task.listen {
            cmd.arg("--listen");
        }
        if let Some(tool) = &task.expect_tool {
            cmd.args(["--expect-tool", tool]);
        }
        for (name, value) in &task.headers {
            cmd.args(["--header", &format!("{name}: {value}")]);
        }
        cmd.args(&task.args);
        let mut child = cmd.spawn().map_err(|e| {
            PeerError::Failed(format!(
                "cannot start client {} ({cmd:?}): {e}",
                client.name()
            ))
        })?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let noise = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (lines, noise) = (lines.clone(), noise.clone());
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) if v.get("step").is_some() => lock(&lines).push(v),
                        _ => lock(&noise).push(line),
                    }
                }
            }));
        }
        if let Some(err) = child.stderr.take() {
            let noise = noise.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    lock(&noise).push(line);
                }
            }));
        }
        Ok(ClientRun {
            client,
            child,
            lines,
            noise,
            readers,
        })
    }

    pub fn client(&self) -> InteropClient {
        self.client
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<Value> {
        lock(&self.lines).clone()
    }

    /// Waits (polling, without blocking the runtime) until the driver printed
    /// a line with `step`; panics with everything it printed when it exits
    /// first or the deadline passes.
    pub async fn wait_step(&mut self, step: &str) -> Value {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l["step"] == step) {
                return line;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                // The reader threads may still hold the last lines.
                actix_rt::time::sleep(Duration::from_millis(50)).await;
                if let Some(line) = self.lines().into_iter().find(|l| l["step"] == step) {
                    return line;
                }
                panic!(
                    "client {} {} before printing a `{step}` line:\n{}",
                    self.client.name(),
                    if exited { "exited" } else { "timed out" },
                    self.transcript()
                );
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the exit (polling), then everything the driver printed.
    pub async fn finish(mut self) -> ClientOutput {
        let deadline = Instant::now() + CLIENT_TIMEOUT + Duration::from_secs(15);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                }
                _ => break None,
            }
        };
        if status.is_none() {
            self.kill();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        ClientOutput {
            client: self.client,
            lines: self.lines(),
            noise: lock(&self.noise).join("\n"),
            success: status.is_some_and(|s| s.success()),
            exit: status.map_or_else(|| "killed at the deadline".to_owned(), |s| s.to_string()),
        }
    }

    fn transcript(&self) -> String {
        let lines: Vec<String> = self.lines().iter().map(Value::to_string).collect();
        format!(
            "--- stdout:\n{}\n--- stderr:\n{}",
            lines.join("\n"),
            lock(&self.noise).join("\n")
        )
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ClientRun {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything one driver run printed.
#[derive(Clone, Debug)]
pub struct ClientOutput {
    pub client: InteropClient,
    pub lines: Vec<Value>,
    pub noise: String,
    pub success: bool,
    pub exit: String,
}

impl ClientOutput {
    /// Everything, for an assertion message.
    pub fn transcript(&self) -> String {
        let lines: Vec<String> = self.lines.iter().map(Value::to_string).collect();
        format!(
            "client {} ({}):\n--- stdout:\n{}\n--- stderr:\n{}",
            self.client.name(),
            self.exit,
            lines.join("\n"),
            self.noise
        )
    }

    /// Panics with the transcript unless the driver ran every step.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.success && self.lines.last().is_some_and(|l| l["step"] == "done"),
            "{}",
            self.transcript()
        );
        self
    }

    pub fn steps(&self, step: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["step"] == step).collect()
    }

    /// The `connect` line.
    pub fn connect(&self) -> &Value {
        self.steps("connect")
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no connect line: {}", self.transcript()))
    }

    /// The negotiated revision, as the client reported it.
    pub fn era(&self) -> Option<&str> {
        self.connect()["era"].as_str()
    }

    /// The tool names of each listing, in order.
    pub fn listings(&self) -> Vec<Vec<String>> {
        self.steps("list")
            .iter()
            .map(|l| {
                l["tools"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|n| n.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The first listing.
    pub fn tools(&self) -> Vec<String> {
        self.listings()
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no list line: {}", self.transcript()))
    }

    /// The `call` line of the `i`th call of `name`.
    pub fn call(&self, name: &str) -> &Value {
        self.steps("call")
            .into_iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no call of {name}: {}", self.transcript()))
    }

    /// The text of the first text block of `name`'s result.
    pub fn call_text(&self, name: &str) -> String {
        let call = self.call(name);
        call["result"]["content"]
            .as_array()
            .and_then(|c| c.iter().find(|b| b["type"] == "text"))
            .and_then(|b| b["text"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{name} gave no text block: {call}\n{}", self.transcript()))
    }
}
