//! Latency from an upstream's `notifications/tools/list_changed` (sent on its
//! GET push stream) to the new catalog version being visible on
//! `GET /v1/tools` (DESIGN.md section 10: median under 20 ms on loopback).
//!
//! ```text
//! cargo bench --bench list_changed
//! cargo bench --bench list_changed -- --notifications 200 --tools 100
//! cargo bench --bench list_changed -- --era modern
//! ```
//!
//! One process, one actix System: a Rust test upstream (its own thread, as a
//! remote server would be) with an open push stream, and the real
//! application on port 0 with `poll_interval: 10m`, so only the push stream
//! can bring a change. Each round: `set_tools(n + 1)`, t0, notify, then poll
//! `GET /v1/tools` with `If-None-Match` (unchanged polls are 304s) until the
//! body shows a newer version with `n + 1` tools; the sample is t1 - t0. The
//! polling client runs on an arbiter of its own, off the engine's threads.
//!
//! `--era modern` runs the same rounds against a 2026-07-28 upstream
//! (`server/discover`, `_meta`) whose push stream is its
//! `subscriptions/listen`: the bench waits for `push_stream` `connected`
//! (the listen acknowledged) and the notifications go on the listen, tagged
//! with its subscription id. The default, `--era legacy`, is a 2025 upstream
//! with its GET push stream open.
//!
//! Options: `--era legacy|modern` (legacy), `--notifications N` (200), `--tools N` (100, the starting count),
//! `--warmup N` (5 rounds not recorded), `--deadline-ms N` (5000 per
//! notification), `--connect-deadline-s N` (30, for healthy + push stream
//! connected), `--poll-us N` (0: back-to-back polls; else a pause between
//! polls, which tokio rounds up to whole milliseconds), `--pause-ms N` (5,
//! between rounds). `RUST_LOG` turns on the engine's logs. A bare word is a
//! cargo bench filter, as for the criterion benches: this bench runs only if
//! it is part of `list_changed` (so `cargo bench -- catalog` skips it).
//!
//! Besides the sample (t0 to the body read), it reports two parts of it with
//! the same poll resolution: t0 to the upstream counting the engine's
//! `tools/list`, and t0 to the headers of the 200 carrying the new ETag. A
//! sample far above its headers time is transport (the body's last segment
//! held back), not the engine.
//!
//! `--listeners N [--legacy-listeners M]` measures the MCP endpoint's
//! fan-out instead (issue 11): the engine as a child process, N
//! `subscriptions/listen` clients and M 2025 GET-stream clients on
//! `POST /mcp`, t0 (the upstream's notification) to each client receiving
//! `notifications/tools/list_changed`, and the engine's RSS per idle
//! listener. See `list_changed/listeners.rs`.
//!
//! ```text
//! cargo bench --bench list_changed -- --listeners 1000 --notifications 50 --pause-ms 100
//! cargo bench --bench list_changed -- --listeners 900 --legacy-listeners 100 --notifications 50
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/upstream.rs"]
mod upstream;

#[path = "support/engine_process.rs"]
mod engine_process;
#[path = "list_changed/listeners.rs"]
mod listeners;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use discovery_config::{load_str, Format};
use mcp_discovery::telemetry::{self, LogFormat};
use mcp_discovery::{AppOptions, Application};
use serde::de::IgnoredAny;
use serde::Deserialize;
use upstream::{GetStream, ListenMode, ServerEra, TestUpstream};

/// The server's name in the engine's configuration.
const SERVER: &str = "bench";
/// Timeout of every request the measuring client sends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/v1/tools` body the client reads.
const MAX_BODY: usize = 64 << 20;
/// Pause between status polls while waiting for the push stream.
const STATUS_POLL: Duration = Duration::from_millis(20);
/// How long the application gets to stop at the end.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
struct Args {
    era: ServerEra,
    notifications: usize,
    tools: usize,
    warmup: usize,
    deadline: Duration,
    connect_deadline: Duration,
    poll: Duration,
    pause: Duration,
    /// MCP-endpoint mode: modern listens on `/mcp` (0: the catalog mode).
    listeners: usize,
    /// MCP-endpoint mode: 2025 GET streams on `/mcp`.
    legacy_listeners: usize,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut args = Args {
            era: ServerEra::Legacy,
            notifications: 200,
            tools: 100,
            warmup: 5,
            deadline: Duration::from_millis(5000),
            connect_deadline: Duration::from_secs(30),
            poll: Duration::ZERO,
            pause: Duration::from_millis(5),
            listeners: 0,
            legacy_listeners: 0,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            // cargo bench passes `--bench` (and a filter, if given) to every
            // harness = false binary.
            if flag == "--bench" {
                continue;
            }
            if !flag.starts_with('-') {
                if !"list_changed".contains(flag.as_str()) {
                    println!("list_changed: skipped (filter {flag:?})");
                    std::process::exit(0);
                }
                continue;
            }
            if flag == "--help" || flag == "-h" {
                println!("{}", HELP.trim());
                std::process::exit(0);
            }
            if flag == "--era" {
                args.era = match it.next().as_deref() {
                    Some("legacy") => ServerEra::Legacy,
                    Some("modern") => ServerEra::Modern,
                    other => bail!("--era needs legacy or modern, not {other:?}"),
                };
                continue;
            }
            let mut value = || -> anyhow::Result<u64> {
                let v = it.next().with_context(|| format!("{flag} needs a value"))?;
                v.parse()
                    .with_context(|| format!("{flag} {v}: not a whole number"))
            };
            match flag.as_str() {
                "--notifications" => args.notifications = usize::try_from(value()?)?,
                "--tools" => args.tools = usize::try_from(value()?)?,
                "--warmup" => args.warmup = usize::try_from(value()?)?,
                "--deadline-ms" => args.deadline = Duration::from_millis(value()?),
                "--connect-deadline-s" => args.connect_deadline = Duration::from_secs(value()?),
                "--poll-us" => args.poll = Duration::from_micros(value()?),
                "--pause-ms" => args.pause = Duration::from_millis(value()?),
                "--listeners" => args.listeners = usize::try_from(value()?)?,
                "--legacy-listeners" => args.legacy_listeners = usize::try_from(value()?)?,
                other => bail!("unknown argument {other:?}; see --help"),
            }
        }
        if args.notifications == 0 {
            bail!("--notifications must be at least 1");
        }
        Ok(args)
    }
}

const HELP: &str = "
list_changed latency: upstream notification -> new catalog version on GET /v1/tools

  cargo bench --bench list_changed [-- OPTIONS]

  --era legacy|modern     2025 upstream with its GET push stream open, or a
                          2026-07-28 one with subscriptions/listen open (legacy)
  --notifications N       recorded notifications (200)
  --tools N               tools of the upstream at start (100); +1 per round
  --warmup N              rounds before recording (5)
  --deadline-ms N         deadline per notification (5000)
  --connect-deadline-s N  deadline for healthy + push stream connected (30)
  --poll-us N             pause between /v1/tools polls; 0 = back-to-back (0)
  --pause-ms N            pause between rounds (5)

MCP endpoint fan-out (the engine as a child process):
  --listeners N           N subscriptions/listen clients on POST /mcp; the
                          rounds then measure notification -> every client
                          notified, and RSS per idle listener
  --legacy-listeners M    M more clients: 2025 sessions with their GET stream
";

/// The part of `GET /v1/tools` the bench reads.
#[derive(Deserialize)]
struct ToolsBody {
    version: u64,
    tools: Vec<IgnoredAny>,
}

/// The part of `GET /v1/servers/{name}` the bench reads.
#[derive(Deserialize)]
struct ServerStatus {
    state: String,
    push_stream: String,
    tool_count: usize,
    last_error: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    if args.listeners + args.legacy_listeners > 0 {
        return actix_rt::System::new().block_on(async move { listeners::run(&args).await });
    }
    // Quiet unless RUST_LOG says otherwise; the figures go to stdout.
    telemetry::init(LogFormat::Text, "error").context("setting up logging")?;
    actix_rt::System::new().block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let builder = TestUpstream::builder().tools(args.tools);
    let builder = match args.era {
        ServerEra::Modern => builder.era(ServerEra::Modern).listen(ListenMode::Open),
        ServerEra::Legacy | ServerEra::Dual => builder.get_stream(GetStream::Open),
    };
    let up = builder.start().context("starting the test upstream")?;

    let yaml = format!(
        "\
listen: 127.0.0.1:0
discovery:
  poll_interval: 10m
  request_timeout: 5s
  connect_timeout: 2s
servers:
  {SERVER}:
    url: \"{}\"
    transport: streamable-http
",
        up.url()
    );
    let config = load_str(&yaml, Format::Yaml, None, &[])
        .map_err(|e| anyhow::anyhow!("the bench's configuration is invalid: {e}"))?;
    let options = AppOptions::for_tests();
    let app_workers = options.workers;
    let app = Application::build(Arc::new(config), options)
        .await
        .context("building the application")?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let running = actix_rt::spawn(app.run());

    println!("list_changed latency: upstream notification -> new version on GET /v1/tools");
    println!(
        "config: 1 upstream ({}) on loopback, {} tools at start (+1 per round), poll_interval 10m; {} notifications recorded after {} \
         warm-up; polls {}; {} ms between rounds; deadline {} ms per notification; \
         API workers {}; {} CPUs; profile {}",
        match args.era {
            ServerEra::Modern =>
                "2026-07-28, Streamable HTTP, JSON answers, subscriptions/listen open",
            ServerEra::Legacy | ServerEra::Dual =>
                "2025, Streamable HTTP, JSON answers, GET push stream open",
        },
        args.tools,
        args.notifications,
        args.warmup,
        if args.poll.is_zero() {
            "back-to-back with If-None-Match".to_owned()
        } else {
            format!("every {} us with If-None-Match", args.poll.as_micros())
        },
        args.pause.as_millis(),
        args.deadline.as_millis(),
        app_workers.map_or_else(|| "default".to_owned(), |w| w.to_string()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "optimized"
        },
    );

    // The measuring client on an arbiter of its own, so its polling does not
    // share a thread with the registry that publishes the catalog.
    let client_arbiter = actix_rt::Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle_up = up.handle();
    // awc's futures are not Send: build them on the arbiter's own thread.
    let spawned = client_arbiter.spawn_fn(move || {
        actix_rt::spawn(async move {
            let result = measure(&args, &base, &handle_up).await;
            let _ = tx.send(result);
        });
    });
    if !spawned {
        bail!("could not start the client's arbiter");
    }
    let result = rx
        .await
        .context("the measuring client ended without an answer");
    client_arbiter.stop();

    handle.stop(true).await;
    match tokio::time::timeout(STOP_DEADLINE, running).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("warning: the application stopped with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("warning: the application task failed: {e}"),
        Err(_) => eprintln!("warning: the application did not stop within {STOP_DEADLINE:?}"),
    }
    up.stop().await;

    let measured = result??;
    report(&measured);
    Ok(())
}

/// What the recorded rounds measured.
struct Measured {
    /// t1 - t0 of each recorded notification.
    samples: Vec<Duration>,
    /// `GET /v1/tools` requests sent during the recorded rounds (the
    /// resolution of a sample is about sum(samples) / polls).
    polls: u64,
    /// t0 to the first poll that saw the upstream count one more
    /// `tools/list`: the push path's share of a sample (same resolution).
    to_tools_list: Vec<Duration>,
    /// t0 to the response headers of the 200 that carried the new catalog
    /// (before its body was read): the gap to the sample is transport.
    to_headers: Vec<Duration>,
}

/// Waits for the push stream, then runs the rounds.
async fn measure(
    args: &Args,
    base: &str,
    up: &upstream::UpstreamHandle,
) -> anyhow::Result<Measured> {
    let client = awc::Client::builder().timeout(REQUEST_TIMEOUT).finish();
    wait_push_connected(&client, base, args).await?;

    let (mut etag, mut version, mut tools) = fetch_tools(&client, base).await?;
    if tools != args.tools {
        bail!(
            "the catalog has {tools} tools, expected {} from the upstream",
            args.tools
        );
    }

    let mut samples = Vec::with_capacity(args.notifications);
    let mut polls = 0u64;
    let mut to_tools_list = Vec::with_capacity(args.notifications);
    let mut to_headers = Vec::with_capacity(args.notifications);
    let mut warned_streams = false;
    for round in 0..args.warmup + args.notifications {
        let want = tools + 1;
        up.set_tools(want);
        let lists_before = up.requests("tools/list");
        let mut listed_at = None;
        let t0 = Instant::now();
        let streams = up.notify_tools_changed();
        if streams == 0 {
            bail!(
                "round {round}: the upstream has no open push stream or listen to notify \
                 (the engine closed it)"
            );
        }
        if streams > 1 && !warned_streams {
            warned_streams = true;
            eprintln!("warning: the upstream has {streams} open push streams, expected 1");
        }
        let deadline = t0 + args.deadline;
        loop {
            if round >= args.warmup {
                polls += 1;
            }
            let mut res = client
                .get(format!("{base}/v1/tools"))
                .insert_header(("If-None-Match", etag.as_str()))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("GET /v1/tools: {e}"))?;
            if listed_at.is_none() && up.requests("tools/list") > lists_before {
                listed_at = Some(Instant::now());
            }
            match res.status().as_u16() {
                304 => {}
                200 => {
                    let headers_at = Instant::now();
                    let new_etag = etag_of(&res)?;
                    let body = res
                        .body()
                        .limit(MAX_BODY)
                        .await
                        .map_err(|e| anyhow::anyhow!("reading /v1/tools: {e}"))?;
                    let t1 = Instant::now();
                    let parsed: ToolsBody =
                        serde_json::from_slice(&body).context("parsing /v1/tools")?;
                    etag = new_etag;
                    if parsed.version > version && parsed.tools.len() == want {
                        if round >= args.warmup {
                            samples.push(t1 - t0);
                            to_tools_list.push(listed_at.unwrap_or(t1) - t0);
                            to_headers.push(headers_at - t0);
                        }
                        version = parsed.version;
                        tools = want;
                        break;
                    }
                    // Another change (a status flip): keep waiting for ours.
                    version = version.max(parsed.version);
                }
                other => bail!("GET /v1/tools answered {other}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "round {round}: the catalog did not show {want} tools within {} ms of the \
                     notification (still version {version}, {tools} tools). Hint: the engine \
                     may not act on list_changed from the push stream yet",
                    args.deadline.as_millis()
                );
            }
            if !args.poll.is_zero() {
                actix_rt::time::sleep(args.poll).await;
            }
        }
        if !args.pause.is_zero() {
            actix_rt::time::sleep(args.pause).await;
        }
    }
    Ok(Measured {
        samples,
        polls,
        to_tools_list,
        to_headers,
    })
}

/// Polls `GET /v1/servers/{SERVER}` until it is healthy with all its tools
/// and its push stream is `connected`.
async fn wait_push_connected(client: &awc::Client, base: &str, args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + args.connect_deadline;
    let mut last: Option<ServerStatus> = None;
    let mut last_err = None;
    while Instant::now() < deadline {
        match server_status(client, base).await {
            Ok(s) => {
                if s.state == "healthy"
                    && s.tool_count == args.tools
                    && s.push_stream == "connected"
                {
                    println!(
                        "ready: healthy with {} tools and push stream connected after {} ms",
                        s.tool_count,
                        started.elapsed().as_millis()
                    );
                    return Ok(());
                }
                last = Some(s);
            }
            Err(e) => last_err = Some(e),
        }
        actix_rt::time::sleep(STATUS_POLL).await;
    }
    match last {
        Some(s) if s.state == "healthy" && s.tool_count == args.tools => bail!(
            "the push stream never connected within {} s: server {SERVER:?} is healthy but its \
             push_stream is {:?}. Hint: {}",
            args.connect_deadline.as_secs(),
            s.push_stream,
            if s.push_stream == "disabled" {
                "`disabled` for a Streamable HTTP upstream that accepts GET means the engine's \
                 push stream has not landed yet"
            } else {
                "see the engine's logs with RUST_LOG=discovery_actors=debug"
            }
        ),
        Some(s) => bail!(
            "server {SERVER:?} did not become healthy with {} tools within {} s: state {}, \
             {} tools, push_stream {}, last_error {}",
            args.tools,
            args.connect_deadline.as_secs(),
            s.state,
            s.tool_count,
            s.push_stream,
            s.last_error.as_deref().unwrap_or("none")
        ),
        None => bail!(
            "the application never answered GET /v1/servers/{SERVER} within {} s: {}",
            args.connect_deadline.as_secs(),
            last_err.map_or_else(|| "no attempt".to_owned(), |e| format!("{e:#}"))
        ),
    }
}

async fn server_status(client: &awc::Client, base: &str) -> anyhow::Result<ServerStatus> {
    let mut res = client
        .get(format!("{base}/v1/servers/{SERVER}"))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET /v1/servers/{SERVER}: {e}"))?;
    let body = res
        .body()
        .limit(MAX_BODY)
        .await
        .map_err(|e| anyhow::anyhow!("reading /v1/servers/{SERVER}: {e}"))?;
    if !res.status().is_success() {
        bail!(
            "GET /v1/servers/{SERVER} answered {}: {}",
            res.status(),
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).context("parsing /v1/servers/{name}")
}

/// The current catalog: its ETag, version and tool count.
async fn fetch_tools(client: &awc::Client, base: &str) -> anyhow::Result<(String, u64, usize)> {
    let mut res = client
        .get(format!("{base}/v1/tools"))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET /v1/tools: {e}"))?;
    if !res.status().is_success() {
        bail!("GET /v1/tools answered {}", res.status());
    }
    let etag = etag_of(&res)?;
    let body = res
        .body()
        .limit(MAX_BODY)
        .await
        .map_err(|e| anyhow::anyhow!("reading /v1/tools: {e}"))?;
    let parsed: ToolsBody = serde_json::from_slice(&body).context("parsing /v1/tools")?;
    Ok((etag, parsed.version, parsed.tools.len()))
}

fn etag_of<S>(res: &awc::ClientResponse<S>) -> anyhow::Result<String> {
    res.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .context("GET /v1/tools has no ETag")
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    // n is at most a few thousand: exact in f64.
    let rank = (p * n as f64).ceil().max(1.0) as usize;
    sorted[rank.min(n) - 1]
}

fn report(measured: &Measured) {
    println!(
        "{}",
        summary("list_changed -> new catalog version", &measured.samples)
    );
    println!(
        "{}",
        summary(
            "  of which notification -> upstream got tools/list",
            &measured.to_tools_list
        )
    );
    println!(
        "{}",
        summary(
            "  of which notification -> headers of the 200 with the new ETag",
            &measured.to_headers
        )
    );
    let total: f64 = measured.samples.iter().map(|d| ms(*d)).sum();
    let n = measured.samples.len().max(1) as f64;
    println!(
        "polls of GET /v1/tools: {:.1} per notification, one every {:.3} ms on average",
        measured.polls as f64 / n,
        total / (measured.polls.max(1) as f64)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `what (ms): median .. p90 .. p99 .. min .. max .. mean .. count N`.
fn summary(what: &str, samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
        return format!("{what}: no samples");
    };
    let n = sorted.len();
    let median = if n % 2 == 1 {
        ms(sorted[n / 2])
    } else {
        (ms(sorted[n / 2 - 1]) + ms(sorted[n / 2])) / 2.0
    };
    let mean = sorted.iter().map(|d| ms(*d)).sum::<f64>() / n as f64;
    format!(
        "{what} (ms): median {median:.3}  p90 {:.3}  p99 {:.3}  min {:.3}  max {:.3}  \
         mean {mean:.3}  count {n}",
        ms(percentile(&sorted, 0.90)),
        ms(percentile(&sorted, 0.99)),
        ms(*first),
        ms(*last),
    )
}
