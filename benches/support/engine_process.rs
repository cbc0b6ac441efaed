//! The engine as a child process (the binary cargo built beside the bench,
//! `CARGO_BIN_EXE_mcp-discovery`) for the benches that read its RSS and
//! CPU time, and MCP client helpers on awc shared by them.
//!
//! The process gets a config of `listen: 127.0.0.1:<free port>` plus the
//! bench's own sections, its logs go to a file in a temporary directory
//! (shown when it fails to start), and it is killed by PID when dropped.
//! `BENCH_ENGINE_WRAPPER` (a command line, e.g. `valgrind --tool=massif
//! --massif-out-file=/tmp/m.out`) starts it under a profiler instead.
#![allow(dead_code)] // each bench uses its own part of this

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use serde_json::{json, Value};

/// The one 2026-07-28 revision.
pub const MODERN: &str = "2026-07-28";
/// The 2025 revision the helpers' sessions ask for.
pub const LEGACY: &str = "2025-11-25";
/// Largest body the helpers read.
const MAX_BODY: usize = 64 << 20;
/// How long the engine gets to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between status polls while waiting for the engine.
const STATUS_POLL: Duration = Duration::from_millis(20);

pub struct EngineProcess {
    child: Child,
    pub port: u16,
    pub base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EngineProcess {
    /// Starts `mcp-discovery serve` with `sections` (YAML: `discovery:`,
    /// `servers:`, ... everything but `listen:`). `RUST_LOG` passes through
    /// (default `warn`).
    pub fn start(sections: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let port = free_port()?;
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, format!("listen: 127.0.0.1:{port}\n{sections}"))
            .context("writing the engine's config")?;
        let log = dir.path().join("engine.log");
        let log_file = std::fs::File::create(&log).context("creating the engine's log")?;
        // BENCH_ENGINE_WRAPPER="valgrind --tool=massif ..." runs the engine
        // under a profiler (its RSS and CPU figures are then the wrapper's).
        let wrapper = std::env::var("BENCH_ENGINE_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(env!("CARGO_BIN_EXE_mcp-discovery"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_mcp-discovery")),
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting mcp-discovery")?;
        Ok(Self {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The engine's resident set now (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS")
    }

    /// CPU time the engine has run so far, summed over its threads (ns).
    pub fn cpu_ns(&self) -> u64 {
        process_cpu_ns(self.pid())
    }

    /// The end of the engine's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// Polls `GET /v1/servers` until `count` servers are healthy with
    /// `tools` tools each (and, with `push`, their push stream connected).
    pub async fn wait_healthy(
        &mut self,
        client: &awc::Client,
        count: usize,
        tools: usize,
        push: bool,
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        #[derive(Deserialize)]
        struct Servers {
            servers: Vec<Server>,
        }
        #[derive(Deserialize)]
        struct Server {
            state: String,
            tool_count: usize,
            push_stream: String,
        }
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < deadline {
            if let Some(status) = self.child.try_wait().context("checking the engine")? {
                bail!(
                    "the engine exited ({status}) before all servers were healthy; its log:\n{}",
                    self.log_tail()
                );
            }
            match get_json::<Servers>(client, &format!("{}/v1/servers", self.base)).await {
                Ok(s) => {
                    let ready = s
                        .servers
                        .iter()
                        .filter(|v| {
                            v.state == "healthy"
                                && v.tool_count == tools
                                && (!push || v.push_stream == "connected")
                        })
                        .count();
                    if ready == count {
                        return Ok(started.elapsed());
                    }
                    last = format!("{ready} of {count} ready");
                }
                Err(e) => last = format!("{e:#}"),
            }
            actix_rt::time::sleep(STATUS_POLL).await;
        }
        bail!(
            "the engine's {count} servers were not all healthy with {tools} tools{} within {} s \
             ({last}); its log:\n{}",
            if push {
                " and push streams connected"
            } else {
                ""
            },
            deadline.as_secs(),
            self.log_tail()
        )
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        // SIGTERM first (a profiler wrapping the engine writes its output
        // when the engine exits), SIGKILL after STOP_DEADLINE.
        let pid = self.pid().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", pid.as_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + STOP_DEADLINE;
        while termed && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of a process so far (ns), summed over its threads' schedstat.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time of the calling thread so far (ns).
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// An awc client for many concurrent connections to few hosts: no
/// connection limit (awc's default is 100 per client), `timeout` per
/// request (streams read past it: awc times out only the head).
pub fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(timeout)
        .finish()
}

pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &awc::Client,
    url: &str,
) -> anyhow::Result<T> {
    let mut res = client
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    let body = res
        .body()
        .limit(MAX_BODY)
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?;
    if !res.status().is_success() {
        bail!(
            "GET {url} answered {}: {}",
            res.status(),
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("parsing {url}"))
}

/// `_meta` of a 2026-07-28 request.
pub fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// A POST of `method` as a 2026-07-28 client sends it: the standard
/// headers (`Mcp-Name` when `name` is given) and `_meta` in `params`.
/// Returns the request and its body.
pub fn modern_post(
    client: &awc::Client,
    url: &str,
    id: Value,
    method: &str,
    name: Option<&str>,
    mut params: Value,
) -> (awc::ClientRequest, String) {
    params["_meta"] = modern_meta();
    let mut req = client
        .post(url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("MCP-Protocol-Version", MODERN))
        .insert_header(("Mcp-Method", method));
    if let Some(name) = name {
        req = req.insert_header(("Mcp-Name", name));
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    (req, body.to_string())
}

/// A POST on a 2025 session (`session` None: before `initialize`).
pub fn legacy_post(client: &awc::Client, url: &str, session: Option<&str>) -> awc::ClientRequest {
    let mut req = client
        .post(url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "application/json, text/event-stream"));
    if let Some(s) = session {
        req = req
            .insert_header(("Mcp-Session-Id", s))
            .insert_header(("MCP-Protocol-Version", LEGACY));
    }
    req
}

/// `initialize` and `notifications/initialized` as a 2025 client: the
/// session id.
pub async fn legacy_session(client: &awc::Client, url: &str) -> anyhow::Result<String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {},
        "clientInfo": {"name": "bench", "version": "0"}}});
    let mut res = legacy_post(client, url, None)
        .send_body(init.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("initialize at {url}: {e}"))?;
    let body = res
        .body()
        .limit(MAX_BODY)
        .await
        .map_err(|e| anyhow::anyhow!("reading initialize of {url}: {e}"))?;
    let Some(session) = res
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        bail!(
            "initialize at {url} answered {} without Mcp-Session-Id: {}",
            res.status(),
            String::from_utf8_lossy(&body)
        );
    };
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let res = legacy_post(client, url, Some(&session))
        .send_body(done.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("notifications/initialized at {url}: {e}"))?;
    if !res.status().is_success() {
        bail!(
            "notifications/initialized at {url} answered {}",
            res.status()
        );
    }
    Ok(session)
}

/// Reads a whole body (at most 64 MiB).
pub async fn read_body<S>(res: &mut awc::ClientResponse<S>) -> anyhow::Result<bytes::Bytes>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    res.body()
        .limit(MAX_BODY)
        .await
        .map_err(|e| anyhow::anyhow!("reading a body: {e}"))
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    // n is at most a few million: exact enough in f64.
    let rank = (p * n as f64).ceil().max(1.0) as usize;
    sorted[rank.min(n) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
