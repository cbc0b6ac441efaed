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

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[path = "../tests/support/upstream.rs"]
mod upstream;

use upstream::{
    Fault, GetStream, ListenMode, Methods, ResponseMode, ServerEra, UpstreamBehavior, UpstreamFarm,
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
    let groups = [("u", Some(&farm)), ("f", faulty.as_ref())];
    for (prefix, group) in groups {
        for (i, up) in group
            .map(UpstreamFarm::upstreams)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            writeln!(
                yaml,
                "  {prefix}{i}:\n    url: {}\n    transport: streamable-http",
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

    // The servers run on their own threads; keep them (and this process) alive.
    let _keep = (farm, faulty);
    loop {
        std::thread::park();
    }
}
