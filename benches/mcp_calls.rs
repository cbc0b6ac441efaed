//! `tools/call` through the MCP endpoint against the same call made to the
//! upstream directly (issue 11: 1000 concurrent calls across 100
//! upstreams, p50 overhead under 1 ms).
//!
//! ```text
//! cargo bench --bench mcp_calls
//! cargo bench --bench mcp_calls -- --concurrency 1 --calls 2000
//! cargo bench --bench mcp_calls -- --era modern
//! ```
//!
//! K test upstreams (`UpstreamFarm`, one actix server in this process) and
//! the engine as a child process (the binary cargo built beside the bench)
//! configured with them. One load generator, two targets, the same call:
//! `tools/call` of `tool_7` with `{"value": "bench"}`, by C concurrent
//! workers (worker w always calls upstream w mod K), each taking the next
//! call until the round's total is reached:
//!
//! - direct: `POST` to upstream k itself;
//! - via /mcp: `POST /mcp` of the engine, tool `u<k>__tool_7`.
//!
//! With `--era legacy` (the default) the upstreams speak 2025 and the client
//! too, on both paths: one session per upstream directly, one session per
//! upstream's workers on the engine. With `--era modern` everything speaks
//! 2026-07-28 (stateless; `Mcp-Method`, `Mcp-Name` and `_meta` on every
//! call). Each answer is checked (`called on u-<k>`, not `isError`); a path
//! with failed calls is reported as not measured.
//!
//! A sample is one call, from just before the request is sent to its whole
//! answer read. The paths alternate each round (direct first on even
//! rounds); the overhead is the via-/mcp percentile minus the direct one of
//! the same round, and the median over rounds is printed last. The engine's
//! CPU time per call (its threads' schedstat) is printed too: on a shared
//! machine it is the steadier figure.
//!
//! `--rate R` paces the workers so that together they offer R calls/s (a
//! load below saturation, where the overhead is the engine's latency
//! rather than its queue); the default is a closed loop, each worker
//! calling again as soon as it has its answer.
//!
//! Options: `--upstreams K` (100), `--tools N` (100 per upstream),
//! `--concurrency C` (1000), `--calls N` (20000 per path and round),
//! `--warmup N` (2000 per path, not recorded), `--rounds R` (3), `--era
//! legacy|modern` (legacy), `--farm-workers N` (1: threads serving all
//! upstreams), `--client-threads N` (1: threads of the load generator,
//! workers split between them), `--only direct|via` (one path, e.g. to
//! profile the engine). `RUST_LOG` goes to the engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/upstream.rs"]
mod upstream;

#[path = "support/engine_process.rs"]
mod engine_process;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use engine_process::{self as ep, EngineProcess};
use serde_json::json;
use upstream::{ServerEra, UpstreamBehavior, UpstreamFarm};

/// The tool every call names (on every upstream).
const TOOL: &str = "tool_7";
/// Timeout of each call (far above any latency this measures).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for the engine to list every upstream.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
struct Args {
    upstreams: usize,
    tools: usize,
    concurrency: usize,
    calls: usize,
    warmup: usize,
    rounds: usize,
    era: ServerEra,
    farm_workers: usize,
    client_threads: usize,
    /// Measure one path only (for profiling the engine under load).
    only: Option<&'static str>,
    /// Calls per second offered by all workers together (0: each worker
    /// calls again as soon as it has its answer).
    rate: usize,
}

const HELP: &str = "
tools/call through POST /mcp vs the upstream directly: latency and overhead

  cargo bench --bench mcp_calls [-- OPTIONS]

  --upstreams K         test upstreams (100)
  --tools N             tools per upstream (100)
  --concurrency C       concurrent callers, worker w -> upstream w mod K (1000)
  --calls N             calls per path and round (20000)
  --warmup N            calls per path before recording (2000)
  --rounds R            rounds, paths alternating (3)
  --era legacy|modern   2025 sessions or 2026-07-28, upstreams and client alike (legacy)
  --farm-workers N      threads serving the upstreams (1)
  --client-threads N    threads of the load generator (1)
  --only direct|via     one path only (to profile the engine under load)
  --rate N              calls/s offered by all workers together, each worker
                        paced (0: closed loop, the next call at once) (0)
";

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut args = Args {
            upstreams: 100,
            tools: 100,
            concurrency: 1000,
            calls: 20_000,
            warmup: 2000,
            rounds: 3,
            era: ServerEra::Legacy,
            farm_workers: 1,
            client_threads: 1,
            only: None,
            rate: 0,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--bench" {
                continue;
            }
            if !flag.starts_with('-') {
                // A cargo bench filter: run only if it names this bench.
                if !"mcp_calls".contains(flag.as_str()) {
                    println!("mcp_calls: skipped (filter {flag:?})");
                    std::process::exit(0);
                }
                continue;
            }
            if flag == "--help" || flag == "-h" {
                println!("{}", HELP.trim());
                std::process::exit(0);
            }
            if flag == "--only" {
                args.only = match it.next().as_deref() {
                    Some("direct") => Some("direct"),
                    Some("via") => Some("via /mcp"),
                    other => bail!("--only needs direct or via, not {other:?}"),
                };
                continue;
            }
            if flag == "--era" {
                args.era = match it.next().as_deref() {
                    Some("legacy") => ServerEra::Legacy,
                    Some("modern") => ServerEra::Modern,
                    other => bail!("--era needs legacy or modern, not {other:?}"),
                };
                continue;
            }
            let v = it.next().with_context(|| format!("{flag} needs a value"))?;
            let n: usize = v
                .parse()
                .with_context(|| format!("{flag} {v}: not a whole number"))?;
            match flag.as_str() {
                "--upstreams" => args.upstreams = n,
                "--tools" => args.tools = n,
                "--concurrency" => args.concurrency = n,
                "--calls" => args.calls = n,
                "--warmup" => args.warmup = n,
                "--rounds" => args.rounds = n,
                "--farm-workers" => args.farm_workers = n,
                "--client-threads" => args.client_threads = n,
                "--rate" => args.rate = n,
                other => bail!("unknown argument {other:?}; see --help"),
            }
        }
        if args.upstreams == 0 || args.concurrency == 0 || args.calls == 0 || args.rounds == 0 {
            bail!("--upstreams, --concurrency, --calls and --rounds must be at least 1");
        }
        if args.tools <= 7 {
            bail!("--tools must be more than 7 (every call is to {TOOL})");
        }
        args.client_threads = args.client_threads.clamp(1, args.concurrency);
        Ok(args)
    }
}

/// Where worker w sends its calls on one path.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    /// The tool's name there.
    name: String,
    /// The 2025 session to use (None: 2026-07-28).
    session: Option<String>,
    /// What the answer must say.
    expect: String,
}

/// One path of one round, as measured.
struct Run {
    samples: Vec<Duration>,
    failures: usize,
    first_failure: Option<String>,
    elapsed: Duration,
    engine_cpu: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    actix_rt::System::new().block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let behavior = UpstreamBehavior {
        server_name: "u".to_owned(),
        tools: args.tools,
        era: args.era,
        ..UpstreamBehavior::default()
    };
    let farm = UpstreamFarm::start(args.upstreams, &behavior, None, args.farm_workers)
        .context("starting the upstreams")?;
    let mut sections = String::from(
        "discovery:\n  poll_interval: 10m\n  request_timeout: 30s\n  connect_timeout: 10s\nservers:\n",
    );
    for (i, up) in farm.upstreams().iter().enumerate() {
        sections.push_str(&format!(
            "  u{i}:\n    url: \"{}\"\n    transport: streamable-http\n",
            up.url()
        ));
    }
    let mut engine = EngineProcess::start(&sections)?;
    let client = ep::client(REQUEST_TIMEOUT);
    let ready = engine
        .wait_healthy(&client, args.upstreams, args.tools, false, HEALTHY_DEADLINE)
        .await?;

    let modern = args.era == ServerEra::Modern;
    let mcp = format!("{}/mcp", engine.base);
    let mut direct = Vec::with_capacity(args.upstreams);
    let mut via = Vec::with_capacity(args.upstreams);
    for (k, up) in farm.upstreams().iter().enumerate() {
        let url = up.url();
        let (direct_session, via_session) = if modern {
            (None, None)
        } else {
            (
                Some(ep::legacy_session(&client, &url).await?),
                Some(ep::legacy_session(&client, &mcp).await?),
            )
        };
        let expect = format!("called on u-{k} with");
        direct.push(Target {
            url,
            name: TOOL.to_owned(),
            session: direct_session,
            expect: expect.clone(),
        });
        via.push(Target {
            url: mcp.clone(),
            name: format!("u{k}__{TOOL}"),
            session: via_session,
            expect,
        });
    }
    let (direct, via) = (Arc::new(direct), Arc::new(via));

    println!("tools/call: through POST /mcp vs the upstream directly");
    println!(
        "config: {} upstreams ({}, JSON answers) x {} tools on {} farm thread(s) in the bench \
         process; engine {} (pid {}, its own process, all healthy after {} ms); {} concurrent \
         callers on {} client thread(s) (awc, keep-alive), worker w -> upstream w mod {}, {}; \
         {} calls per path and round after {} warm-up, {} rounds; {} CPUs",
        args.upstreams,
        if modern {
            "2026-07-28, client too"
        } else {
            "2025 sessions, client too"
        },
        args.tools,
        args.farm_workers,
        env!("CARGO_BIN_EXE_mcp-discovery"),
        engine.pid(),
        ready.as_millis(),
        args.concurrency,
        args.client_threads,
        args.upstreams,
        if args.rate == 0 {
            "closed loop".to_owned()
        } else {
            format!("{} calls/s offered in all", args.rate)
        },
        args.calls,
        args.warmup,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    if args.warmup > 0 {
        for (label, targets) in [("to the upstreams", &direct), ("through /mcp", &via)] {
            let r = load(&args, targets, args.warmup, &engine).await?;
            if r.failures > 0 {
                // Measured anyway (a path that fails stays "not measured").
                println!(
                    "warning: {} of {} warm-up calls {label} failed; the first answer: {}{}",
                    r.failures,
                    args.warmup,
                    r.first_failure.unwrap_or_default(),
                    if label == "through /mcp" {
                        ". Hint: without tools/call over the live upstream session the endpoint \
                         answers every call \"not running\""
                    } else {
                        ""
                    }
                );
            }
        }
    }

    let mut overhead_p50 = Vec::new();
    let mut overhead_p99 = Vec::new();
    let mut rows: Vec<(String, Stats)> = Vec::new();
    for round in 0..args.rounds {
        let order: [(&str, &Arc<Vec<Target>>); 2] = if round % 2 == 0 {
            [("direct", &direct), ("via /mcp", &via)]
        } else {
            [("via /mcp", &via), ("direct", &direct)]
        };
        let mut this = Vec::new();
        for (label, targets) in order {
            if args.only.is_some_and(|o| o != label) {
                continue;
            }
            let r = load(&args, targets, args.calls, &engine).await?;
            let s = Stats::of(&r);
            println!("round {round} {label:>9}: {}", s.line(&r));
            if r.failures > 0 {
                println!(
                    "  first failed answer: {}",
                    r.first_failure.as_deref().unwrap_or("")
                );
            }
            this.push((label, s, r.failures));
        }
        let get = |l: &str| this.iter().find(|(label, ..)| *label == l);
        if let (Some((_, d, 0)), Some((_, v, 0))) = (get("direct"), get("via /mcp")) {
            overhead_p50.push(ms(v.p50) - ms(d.p50));
            overhead_p99.push(ms(v.p99) - ms(d.p99));
        }
        rows.extend(this.into_iter().map(|(l, s, _)| (l.to_owned(), s)));
        rows.retain(|(_, s)| s.complete);
    }
    let median_of = |label: &str, f: fn(&Stats) -> f64| {
        median(
            rows.iter()
                .filter(|(l, _)| l == label)
                .map(|(_, s)| f(s))
                .collect(),
        )
    };
    for label in ["direct", "via /mcp"] {
        if args.only.is_some_and(|o| o != label) {
            continue;
        }
        if !rows.iter().any(|(l, s)| l == label && s.complete) {
            println!("median over rounds {label:>9}: not measured (failed calls in every round)");
            continue;
        }
        println!(
            "median over rounds {label:>9}: p50 {:.3} ms  p99 {:.3} ms  {:.0} calls/s  engine CPU \
             {:.1} us per call",
            median_of(label, |s| ms(s.p50)),
            median_of(label, |s| ms(s.p99)),
            median_of(label, |s| s.rate),
            median_of(label, |s| s.engine_cpu_us),
        );
    }
    if args.only.is_some() {
        // One path: no overhead to compute.
    } else if overhead_p50.is_empty() {
        println!(
            "overhead: not measured (no round where both paths answered every call correctly)"
        );
    } else {
        println!(
            "overhead of /mcp (via minus direct, same round; median of {} rounds): p50 {:+.3} ms, \
             p99 {:+.3} ms; per round p50 {}",
            overhead_p50.len(),
            median(overhead_p50.clone()),
            median(overhead_p99),
            overhead_p50
                .iter()
                .map(|v| format!("{v:+.3}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    drop(engine);
    farm.stop().await;
    Ok(())
}

/// Percentiles and rates of one run.
struct Stats {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    rate: f64,
    engine_cpu_us: f64,
    /// Every call answered right (else the run is not a measurement).
    complete: bool,
}

impl Stats {
    fn of(r: &Run) -> Self {
        let mut sorted = r.samples.clone();
        sorted.sort_unstable();
        // Rates per call taken, answered right or not.
        let n = (sorted.len() + r.failures).max(1) as f64;
        Self {
            p50: ep::percentile(&sorted, 0.50),
            p90: ep::percentile(&sorted, 0.90),
            p99: ep::percentile(&sorted, 0.99),
            max: sorted.last().copied().unwrap_or_default(),
            rate: n / r.elapsed.as_secs_f64().max(1e-9),
            engine_cpu_us: r.engine_cpu.as_secs_f64() * 1e6 / n,
            complete: r.failures == 0,
        }
    }

    fn line(&self, r: &Run) -> String {
        format!(
            "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  {:.0} calls/s  engine CPU \
             {:.1} us per call  {} calls, {} failed",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            self.rate,
            self.engine_cpu_us,
            r.samples.len(),
            r.failures,
        )
    }
}

/// `total` calls by `--concurrency` workers over `--client-threads`
/// threads (each a runtime with its own awc client).
async fn load(
    args: &Args,
    targets: &Arc<Vec<Target>>,
    total: usize,
    engine: &EngineProcess,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = engine.cpu_ns();
    let started = Instant::now();
    let threads = args.client_threads;
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        // Workers t, t + threads, ...: each thread covers its share of
        // the upstreams evenly.
        let workers: Vec<usize> = (t..args.concurrency).step_by(threads).collect();
        let targets = targets.clone();
        let next = next.clone();
        let modern = args.era == ServerEra::Modern;
        let (concurrency, rate) = (args.concurrency, args.rate);
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || {
                    actix_rt::System::new().block_on(async move {
                        let client = ep::client(REQUEST_TIMEOUT);
                        let runs = futures_util::future::join_all(workers.into_iter().map(|w| {
                            let pace = pace(w, concurrency, rate);
                            worker(
                                &client,
                                &targets[w % targets.len()],
                                &next,
                                total,
                                modern,
                                pace,
                            )
                        }))
                        .await;
                        let mut out = (Vec::new(), 0usize, None::<String>);
                        for (samples, failures, first) in runs {
                            out.0.extend(samples);
                            out.1 += failures;
                            if out.2.is_none() {
                                out.2 = first;
                            }
                        }
                        out
                    })
                })
                .context("starting a load thread")?,
        );
    }
    let mut run = Run {
        samples: Vec::with_capacity(total),
        failures: 0,
        first_failure: None,
        elapsed: Duration::ZERO,
        engine_cpu: Duration::ZERO,
    };
    for h in handles {
        // The load threads block; wait for them off this runtime.
        let (samples, failures, first) = actix_rt::task::spawn_blocking(move || h.join())
            .await
            .context("joining a load thread")?
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        run.samples.extend(samples);
        run.failures += failures;
        if run.first_failure.is_none() {
            run.first_failure = first;
        }
    }
    run.elapsed = started.elapsed();
    run.engine_cpu = Duration::from_nanos(engine.cpu_ns().saturating_sub(cpu_before));
    Ok(run)
}

/// One worker: calls `target` until `total` calls have been taken.
async fn worker(
    client: &awc::Client,
    target: &Target,
    next: &AtomicUsize,
    total: usize,
    modern: bool,
    pace: Option<(Duration, Duration)>,
) -> (Vec<Duration>, usize, Option<String>) {
    // With a rate, the calls of this worker are due at start + offset +
    // k * period (a late one goes at once, the next is due a period later).
    let mut due = pace.map(|(offset, _)| Instant::now() + offset);
    let mut samples = Vec::new();
    let mut failures = 0;
    let mut first_failure = None;
    let arguments = json!({"value": "bench"});
    loop {
        // The call's number is its JSON-RPC id: unique among the calls in
        // flight on a session, which 2025 requires (workers share them).
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            break;
        }
        let id = json!(n + 1);
        if let (Some(at), Some((_, period))) = (due, pace) {
            actix_rt::time::sleep_until(at.into()).await;
            let late_floor = Instant::now().checked_sub(period).unwrap_or(at);
            due = Some(at.max(late_floor) + period);
        }
        let params = json!({"name": target.name, "arguments": arguments});
        let (req, body) = if modern {
            ep::modern_post(
                client,
                &target.url,
                id,
                "tools/call",
                Some(&target.name),
                params,
            )
        } else {
            let body =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
            (
                ep::legacy_post(client, &target.url, target.session.as_deref()),
                body.to_string(),
            )
        };
        let t0 = Instant::now();
        let answer = match req.send_body(body).await {
            Ok(mut res) => {
                let status = res.status();
                ep::read_body(&mut res).await.map(|b| (status, b))
            }
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        let took = t0.elapsed();
        let ok = match &answer {
            Ok((status, body)) => {
                status.is_success()
                    && contains(body, target.expect.as_bytes())
                    && !contains(body, b"\"isError\":true")
            }
            Err(_) => false,
        };
        if ok {
            samples.push(took);
        } else {
            failures += 1;
            if first_failure.is_none() {
                first_failure = Some(match answer {
                    Ok((status, body)) => format!(
                        "{status} {}",
                        String::from_utf8_lossy(&body[..body.len().min(500)])
                    ),
                    Err(e) => format!("{e:#}"),
                });
            }
        }
    }
    (samples, failures, first_failure)
}

/// Worker w's first delay and period when all `workers` together offer
/// `rate` calls per second (None: closed loop).
fn pace(w: usize, workers: usize, rate: usize) -> Option<(Duration, Duration)> {
    if rate == 0 {
        return None;
    }
    let period = Duration::from_secs_f64(workers as f64 / rate as f64);
    Some((period.mul_f64(w as f64 / workers as f64), period))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn ms(d: Duration) -> f64 {
    ep::ms(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
