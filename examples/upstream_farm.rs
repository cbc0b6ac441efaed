//! Starts K test MCP upstreams on 127.0.0.1 for the load harness and runs
//! until killed.
//!
//! ```text
//! cargo run --release --example upstream_farm -- --count 1000 --tools 100 \
//!     --base-port 0 --config-out /tmp/farm.yaml [--faulty 500 --fault hang] \
//!     [--era modern]
//! ```
//!
//! `--era legacy` (the default) serves MCP 2025 (`initialize`, sessions, the
//! optional GET push stream); `--era modern` serves only 2026-07-28
//! (`server/discover`, `_meta`) with `subscriptions/listen` kept open, so a
//! modern upstream's push stream is its listen (`--push-streams` only
//! matters for `legacy`; `--no-listen` makes modern ones answer the listen
//! -32601, as a server without push does).
//!
//! Writes the `servers:` section of a config (u0..uK-1, then f0..fF-1 for the
//! faulty ones) to `--config-out` (atomically: the file appears complete), or
//! to stdout, then prints `READY <upstreams> <faulty> <path>` on stdout. Append
//! the snippet to a config that has the other sections:
//! `cat head.yaml /tmp/farm.yaml > config.yaml`.
//!
//! All upstreams share one actix server with `--workers` threads (a listener
//! per upstream), so K=1000 does not mean 1000 threads.
//!
//! Control, one command a line on stdin (the answer is one line on stdout):
//!
//! - `down` (or `down refuse`): every upstream goes off the network at once:
//!   the server stops, cutting open connections and push streams
//!   unanswered; until `up`, each port accepts every connection and closes
//!   it at once, counting it (`down refuse`: nothing listens, the kernel
//!   refuses, nothing is counted). Answers `DOWN <seconds it took>`.
//! - `up`: serves again on the same ports with the same state (sessions
//!   survive, as after a network blip). Answers `UP <seconds it took>`.
//! - `reset`: zeroes the per-upstream counters and the peaks. `RESET`.
//! - `stats`: `STATS {json}`: `open_connections`, `rounds_open` (upstreams
//!   between `initialize` or `server/discover` and `tools/list`: discovery
//!   rounds in flight as the farm sees them) and their peaks since the last
//!   reset, and per upstream (u0.., then f0..) since the last reset:
//!   `connections` (accepted while up), `closed_in_outage`, `initialize`,
//!   `server_discover`, `tools_list`, `http_requests`.
//!
//! At the end of stdin the farm serves on until killed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[path = "../tests/support/upstream.rs"]
mod upstream;

use upstream::{
    Fault, GetStream, ListenMode, Methods, Outage, ResponseMode, ServerEra, UpstreamBehavior,
    UpstreamFarm,
};

/// How often open push and listen streams get a `: keepalive` comment.
/// Without one the farm never writes to a silent stream, so never notices
/// that the engine of a finished run went away: each run left its 1000
/// listens open here, until the farm ran out of file descriptors. A write
/// every 2 s frees them within seconds and costs the engine 500 comment
/// frames a second with 1000 streams open.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(about = "Start K test MCP upstreams on 127.0.0.1 for load tests")]
struct Args {
    /// Number of healthy upstreams.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Tools per upstream.
    #[arg(long, default_value_t = 100)]
    tools: usize,
    /// First port of a consecutive range; 0 = any free ports.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// The healthy upstreams are named u<N>.. from this N on: several
    /// farm processes can share one config (each has its own open-file
    /// limit: a farm holds a listener and a connection per upstream).
    #[arg(long, default_value_t = 0)]
    name_offset: usize,
    /// Where to write the `servers:` YAML snippet (default: stdout).
    #[arg(long)]
    config_out: Option<PathBuf>,
    /// Worker threads serving all upstreams.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Paginate tools/list with this page size.
    #[arg(long)]
    page_size: Option<usize>,
    /// Answer with SSE instead of JSON.
    #[arg(long)]
    sse: bool,
    /// Accept the GET push stream (default: 405). Legacy era only: a
    /// modern upstream always keeps its `subscriptions/listen` open.
    #[arg(long)]
    push_streams: bool,
    /// Which MCP era the upstreams speak.
    #[arg(long, value_enum, default_value_t = Era::Legacy)]
    era: Era,
    /// Modern era: answer `subscriptions/listen` -32601 instead of keeping
    /// it open (the "without push streams" side of a comparison).
    #[arg(long)]
    no_listen: bool,
    /// Seconds the server keeps an idle connection open (default: actix's
    /// 5 s). A client that reuses a pooled connection idle for longer
    /// races the server's close.
    #[arg(long)]
    keep_alive: Option<u64>,
    /// Number of extra, faulty upstreams (named f0..).
    #[arg(long, default_value_t = 0)]
    faulty: usize,
    /// How the faulty upstreams fail.
    #[arg(long, value_enum, default_value_t = FaultKind::Hang)]
    fault: FaultKind,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Era {
    /// MCP 2025: `initialize` and sessions.
    Legacy,
    /// MCP 2026-07-28 only, with `subscriptions/listen` kept open.
    Modern,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FaultKind {
    /// Never answer tools/list (a one-hour delay).
    Hang,
    /// 500 on every request.
    Status500,
    /// Non-JSON bytes on tools/list.
    Garbage,
    /// A 50 MB tools/list body.
    Oversized,
    /// An SSE stream that never sends the tools/list response.
    Endless,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // 10k upstreams: a listener each plus the engine's connections to them
    // (and their push streams) are far past the usual soft limit of 1024.
    mcp_discovery::fdlimit::raise().context("raising the open-file limit")?;
    let base = |offset: usize| -> anyhow::Result<Option<u16>> {
        if args.base_port == 0 {
            return Ok(None);
        }
        let port = usize::from(args.base_port) + offset;
        Ok(Some(
            u16::try_from(port).context("--base-port + count exceeds 65535")?,
        ))
    };

    let healthy = UpstreamBehavior {
        server_name: "u".to_owned(),
        tools: args.tools,
        page_size: args.page_size,
        response: if args.sse {
            ResponseMode::Sse
        } else {
            ResponseMode::Json
        },
        get_stream: if args.push_streams {
            GetStream::Open
        } else {
            GetStream::Refuse
        },
        era: match args.era {
            Era::Legacy => ServerEra::Legacy,
            Era::Modern => ServerEra::Modern,
        },
        listen: match args.era {
            Era::Modern if !args.no_listen => ListenMode::Open,
            Era::Legacy | Era::Modern => ListenMode::default(),
        },
        stream_keepalive: Some(STREAM_KEEPALIVE),
        server_keep_alive: args.keep_alive.map(Duration::from_secs),
        ..UpstreamBehavior::default()
    };
    let farm = UpstreamFarm::start(args.count, &healthy, base(0)?, args.workers)
        .context("starting the healthy upstreams")?;

    let faulty_behavior = UpstreamBehavior {
        server_name: "f".to_owned(),
        fault_on: Methods::only(["tools/list"]),
        ..healthy.clone()
    };
    let faulty_behavior = match args.fault {
        FaultKind::Hang => UpstreamBehavior {
            delay: Some(Duration::from_secs(3600)),
            delay_on: Methods::only(["tools/list"]),
            ..faulty_behavior
        },
        FaultKind::Status500 => UpstreamBehavior {
            fault: Some(Fault::Status(500)),
            fault_on: Methods::All,
            ..faulty_behavior
        },
        FaultKind::Garbage => UpstreamBehavior {
            fault: Some(Fault::Garbage),
            ..faulty_behavior
        },
        FaultKind::Oversized => UpstreamBehavior {
            fault: Some(Fault::Oversized(50 * 1024 * 1024)),
            ..faulty_behavior
        },
        FaultKind::Endless => UpstreamBehavior {
            fault: Some(Fault::EndlessSse),
            ..faulty_behavior
        },
    };
    let faulty = if args.faulty > 0 {
        Some(
            UpstreamFarm::start(
                args.faulty,
                &faulty_behavior,
                base(args.count)?,
                args.workers,
            )
            .context("starting the faulty upstreams")?,
        )
    } else {
        None
    };

    let mut yaml = String::from("servers:\n");
    let groups = [
        ("u", Some(&farm), args.name_offset),
        ("f", faulty.as_ref(), 0),
    ];
    for (prefix, group, offset) in groups {
        for (i, up) in group
            .map(UpstreamFarm::upstreams)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            writeln!(
                yaml,
                "  {prefix}{}:\n    url: {}\n    transport: streamable-http",
                offset + i,
                up.url()
            )?;
        }
    }

    let target = match &args.config_out {
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &yaml).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming to {}", path.display()))?;
            path.display().to_string()
        }
        None => {
            print!("{yaml}");
            "-".to_owned()
        }
    };
    println!("READY {} {} {target}", args.count, args.faulty);
    std::io::stdout().flush()?;

    // The servers run on their own threads; this one takes the commands.
    let mut farms: Vec<UpstreamFarm> = std::iter::once(farm).chain(faulty).collect();
    for line in std::io::stdin().lines() {
        let line = line.context("reading stdin")?;
        let answer = command(&mut farms, line.trim())?;
        println!("{answer}");
        std::io::stdout().flush()?;
    }
    // Keep them (and this process) alive.
    let _keep = farms;
    loop {
        std::thread::park();
    }
}

/// Runs one control command (see the module docs); returns its answer line.
fn command(farms: &mut [UpstreamFarm], line: &str) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let took = |word: &str| format!("{word} {:.3}", started.elapsed().as_secs_f64());
    Ok(match line {
        "down" | "down close" | "down refuse" => {
            let outage = if line == "down refuse" {
                Outage::Refuse
            } else {
                Outage::Close
            };
            for farm in farms.iter_mut() {
                farm.go_down(outage).context("taking the upstreams down")?;
            }
            took("DOWN")
        }
        "up" => {
            for farm in farms.iter_mut() {
                farm.come_up().context("bringing the upstreams up")?;
            }
            took("UP")
        }
        "reset" => {
            for farm in farms.iter() {
                farm.upstreams()
                    .iter()
                    .for_each(upstream::UpstreamHandle::reset_counters);
                farm.gauges().reset_peaks();
            }
            "RESET".to_owned()
        }
        "stats" => format!("STATS {}", stats(farms)),
        "" => "ERROR empty command".to_owned(),
        other => format!("ERROR unknown command {other:?}"),
    })
}

/// The `stats` answer: the gauges summed over the farms, and per upstream
/// the counters as columns (one array each, u0.. then f0..).
fn stats(farms: &[UpstreamFarm]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let (mut open, mut peak_open, mut rounds, mut peak_rounds) = (0, 0, 0, 0);
    for farm in farms {
        let g = farm.gauges().snapshot();
        open += g.open_connections;
        peak_open += g.peak_open_connections;
        rounds += g.rounds_open;
        peak_rounds += g.peak_rounds_open;
    }
    out.insert("open_connections".into(), open.into());
    out.insert("peak_open_connections".into(), peak_open.into());
    out.insert("rounds_open".into(), rounds.into());
    out.insert("peak_rounds_open".into(), peak_rounds.into());
    type Column = fn(&upstream::UpstreamHandle) -> u64;
    let columns: [(&str, Column); 6] = [
        ("connections", |h| h.connections()),
        ("closed_in_outage", |h| h.closed_in_outage()),
        ("initialize", |h| h.requests("initialize")),
        ("server_discover", |h| h.requests("server/discover")),
        ("tools_list", |h| h.requests("tools/list")),
        ("http_requests", |h| h.http_requests()),
    ];
    for (name, column) in columns {
        let values: Vec<u64> = farms
            .iter()
            .flat_map(|f| f.upstreams().iter().map(column))
            .collect();
        out.insert(name.into(), values.into());
    }
    serde_json::Value::Object(out)
}
