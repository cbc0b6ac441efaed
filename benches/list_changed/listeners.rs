//! `--listeners N`: list_changed fanned out by the MCP endpoint to N
//! listening clients (issue 11: p99 under 50 ms for 1000), and the engine's
//! RSS per idle listener.
//!
//! The engine is the built binary as a child process (so its RSS is its
//! own), with one Rust test upstream (in this process, its own thread)
//! whose push stream is open. N modern clients hold `subscriptions/listen`
//! on `POST /mcp` (asking for `toolsListChanged`), and `--legacy-listeners
//! M` more are 2025 clients, each with its own session and its GET stream.
//! All clients are awc connections on this process's main thread (one
//! thread, one runtime); its CPU time per received notification is
//! reported, so a client that became the bottleneck would show.
//!
//! RSS: the engine's VmRSS after a settle with no listener (a `tools/list`
//! has built the listing the listeners compare against), then with the N
//! listens open and acknowledged, then with the M GET streams open too;
//! the differences per listener. What that is made of needs a heap
//! profile: `BENCH_ENGINE_WRAPPER="valgrind --tool=massif ..."` runs the
//! engine under massif (add `--deadline-ms 60000`; the RSS figures are
//! then valgrind's).
//!
//! Each round: `set_tools(n + 1)`, t0, the upstream's
//! `notifications/tools/list_changed`; the engine re-lists, publishes a new
//! catalog, and every listener must get one
//! `notifications/tools/list_changed`. A sample is t0 to a listener's
//! chunk carrying it; each round gives N + M samples and one "last
//! listener" time.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::engine_process::{self as ep, EngineProcess};
use crate::upstream::{GetStream, ListenMode, ServerEra, TestUpstream};
use crate::Args;

/// Timeout of the client's requests (a stream's body is not timed).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for the engine to list the upstream with its push stream open.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// Pause before reading RSS, so the engine's allocations settle.
const SETTLE: Duration = Duration::from_secs(1);
/// Connections opened at once while setting the listeners up.
const OPEN_BATCH: usize = 100;

/// What a listener's stream carried.
enum Frame {
    /// The listen's acknowledgement, or the GET stream's opening comment.
    Open,
    ListChanged,
}

/// A listener's news for the collector.
enum Event {
    Frame {
        listener: usize,
        frame: Frame,
        at: Instant,
    },
    Closed {
        listener: usize,
        why: String,
    },
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let builder = TestUpstream::builder().tools(args.tools);
    let builder = match args.era {
        ServerEra::Modern => builder.era(ServerEra::Modern).listen(ListenMode::Open),
        ServerEra::Legacy | ServerEra::Dual => builder.get_stream(GetStream::Open),
    };
    let up = builder.start().context("starting the test upstream")?;
    let sections = format!(
        "\
discovery:
  poll_interval: 10m
  request_timeout: 5s
  connect_timeout: 2s
servers:
  {}:
    url: \"{}\"
    transport: streamable-http
",
        crate::SERVER,
        up.url()
    );
    let mut engine = EngineProcess::start(&sections)?;
    let client = ep::client(REQUEST_TIMEOUT);
    let ready = engine
        .wait_healthy(&client, 1, args.tools, true, CONNECT_DEADLINE)
        .await?;
    let (n, m) = (args.listeners, args.legacy_listeners);
    println!(
        "list_changed fan-out: upstream notification -> notifications/tools/list_changed on {n} \
         subscriptions/listen (2026-07-28) + {m} GET streams (2025 sessions) of POST /mcp"
    );
    println!(
        "config: engine {} (pid {}, its own process); 1 upstream ({}) in the bench process, {} \
         tools at start (+1 per round); {} rounds recorded after {} warm-up, {} ms between \
         rounds; clients: awc on 1 thread; {} CPUs; healthy with push stream after {} ms",
        env!("CARGO_BIN_EXE_mcp-discovery"),
        engine.pid(),
        match args.era {
            ServerEra::Modern => "2026-07-28, subscriptions/listen open",
            ServerEra::Legacy | ServerEra::Dual => "2025, GET push stream open",
        },
        args.tools,
        args.notifications,
        args.warmup,
        args.pause.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        ready.as_millis(),
    );

    let url = format!("{}/mcp", engine.base);
    // The listing the listeners will compare against, built before the
    // baseline (as on a server that has answered a tools/list).
    let (req, body) = ep::modern_post(&client, &url, json!(0), "tools/list", None, json!({}));
    let mut res = req
        .send_body(body)
        .await
        .map_err(|e| anyhow::anyhow!("tools/list: {e}"))?;
    let listed: Value = serde_json::from_slice(&ep::read_body(&mut res).await?)
        .context("parsing tools/list of /mcp")?;
    let listed = listed["result"]["tools"].as_array().map_or(0, Vec::len);
    if listed != args.tools {
        bail!(
            "tools/list of /mcp shows {listed} tools, expected {}",
            args.tools
        );
    }
    actix_rt::time::sleep(SETTLE).await;
    let rss_none = engine.rss_kib();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let opened = Instant::now();
    open_listeners(&client, &url, 0..n, true, &tx).await?;
    wait_open(&mut rx, n, CONNECT_DEADLINE).await?;
    let modern_open = opened.elapsed();
    actix_rt::time::sleep(SETTLE).await;
    let rss_modern = engine.rss_kib();
    let opened = Instant::now();
    open_listeners(&client, &url, n..n + m, false, &tx).await?;
    wait_open(&mut rx, m, CONNECT_DEADLINE).await?;
    let legacy_open = opened.elapsed();
    actix_rt::time::sleep(SETTLE).await;
    let rss_all = engine.rss_kib();

    let total = n + m;
    let mut samples: Vec<Duration> = Vec::with_capacity(total * args.notifications);
    let mut last: Vec<Duration> = Vec::with_capacity(args.notifications);
    let mut extra = 0usize;
    let mut tools = args.tools;
    let client_cpu = ep::thread_cpu_ns();
    let engine_cpu = engine.cpu_ns();
    for round in 0..args.warmup + args.notifications {
        // Whatever came since the last round is old news: keep-alives, or
        // a second notification for the last change (counted).
        while let Ok(ev) = rx.try_recv() {
            extra += usize::from(is_list_changed(&ev));
        }
        tools += 1;
        up.set_tools(tools);
        let t0 = Instant::now();
        if up.notify_tools_changed() == 0 {
            bail!("round {round}: the upstream has no open push stream to notify");
        }
        let mut got: Vec<Option<Duration>> = vec![None; total];
        let mut count = 0;
        let deadline = t0 + args.deadline;
        while count < total {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(Event::Frame {
                    listener,
                    frame: Frame::ListChanged,
                    at,
                })) => match &mut got[listener] {
                    Some(_) => extra += 1,
                    slot @ None => {
                        *slot = Some(at.saturating_duration_since(t0));
                        count += 1;
                    }
                },
                Ok(Some(Event::Frame { .. })) => {}
                Ok(Some(Event::Closed { listener, why })) => {
                    bail!("round {round}: listener {listener}'s stream ended: {why}")
                }
                Ok(None) => bail!("the listeners' channel closed"),
                Err(_) => bail!(
                    "round {round}: {count} of {total} listeners got list_changed within {} ms; \
                     engine log:\n{}",
                    args.deadline.as_millis(),
                    engine.log_tail()
                ),
            }
        }
        if round >= args.warmup {
            let times: Vec<Duration> = got.into_iter().flatten().collect();
            last.push(times.iter().copied().max().unwrap_or_default());
            samples.extend(times);
        }
        if !args.pause.is_zero() {
            actix_rt::time::sleep(args.pause).await;
        }
    }
    // Late duplicates of the last round.
    actix_rt::time::sleep(args.pause.max(Duration::from_millis(100))).await;
    while let Ok(ev) = rx.try_recv() {
        extra += usize::from(is_list_changed(&ev));
    }
    let rounds = (args.warmup + args.notifications) as f64;
    let client_us = (ep::thread_cpu_ns() - client_cpu) as f64 / 1000.0;
    let engine_us = (engine.cpu_ns() - engine_cpu) as f64 / 1000.0;
    let rss_after = engine.rss_kib();

    println!(
        "{}",
        crate::summary(
            &format!("upstream list_changed -> each of {total} listeners notified"),
            &samples
        )
    );
    println!(
        "{}",
        crate::summary("  the last listener of each round", &last)
    );
    println!(
        "extra notifications (a listener told twice for one change): {extra}; engine CPU {:.0} us \
         per round ({:.2} us per listener); client thread CPU {:.0} us per round ({:.2} us per \
         notification received)",
        engine_us / rounds,
        engine_us / rounds / total.max(1) as f64,
        client_us / rounds,
        client_us / rounds / total.max(1) as f64,
    );
    let per = |kib: u64, before: u64, count: usize| {
        if count == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:+.1} KiB per listener",
                (kib as f64 - before as f64) / count as f64
            )
        }
    };
    println!(
        "engine VmRSS: {:.1} MiB with no listener, {:.1} MiB with {n} listens ({}, open in {} ms), \
         {:.1} MiB with {m} GET streams more ({}, open in {} ms), {:.1} MiB after the rounds",
        rss_none as f64 / 1024.0,
        rss_modern as f64 / 1024.0,
        per(rss_modern, rss_none, n),
        modern_open.as_millis(),
        rss_all as f64 / 1024.0,
        per(rss_all, rss_modern, m),
        legacy_open.as_millis(),
        rss_after as f64 / 1024.0,
    );
    drop(engine);
    up.stop().await;
    Ok(())
}

/// Opens listeners `ids` (modern listens, or 2025 sessions with their GET
/// stream), at most [`OPEN_BATCH`] connections being set up at once; each
/// stream is then read by a task of its own.
async fn open_listeners(
    client: &awc::Client,
    url: &str,
    ids: std::ops::Range<usize>,
    modern: bool,
    tx: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let ids: Vec<usize> = ids.collect();
    for batch in ids.chunks(OPEN_BATCH) {
        let opened = futures_util::future::join_all(
            batch
                .iter()
                .map(|&id| open_one(client, url, id, modern, tx.clone())),
        )
        .await;
        for r in opened {
            r?;
        }
    }
    Ok(())
}

async fn open_one(
    client: &awc::Client,
    url: &str,
    id: usize,
    modern: bool,
    tx: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let res = if modern {
        let (req, body) = ep::modern_post(
            client,
            url,
            json!(format!("listen-{id}")),
            "subscriptions/listen",
            None,
            json!({"notifications": {"toolsListChanged": true}}),
        );
        req.send_body(body)
            .await
            .map_err(|e| anyhow::anyhow!("listener {id}: subscriptions/listen: {e}"))?
    } else {
        let session = ep::legacy_session(client, url).await?;
        client
            .get(url)
            .insert_header(("Accept", "text/event-stream"))
            .insert_header(("Mcp-Session-Id", session.as_str()))
            .insert_header(("MCP-Protocol-Version", ep::LEGACY))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("listener {id}: GET stream: {e}"))?
    };
    let sse = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !res.status().is_success() || !sse {
        bail!(
            "listener {id}: {} answered {} ({})",
            if modern {
                "subscriptions/listen"
            } else {
                "the GET stream"
            },
            res.status(),
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("no content type")
        );
    }
    actix_rt::spawn(read_frames(res, id, tx));
    Ok(())
}

/// Reads one listener's SSE body, event by event, until it ends.
async fn read_frames<S>(
    mut res: awc::ClientResponse<S>,
    listener: usize,
    tx: mpsc::UnboundedSender<Event>,
) where
    awc::ClientResponse<S>:
        futures_util::Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut buf = BytesMut::new();
    loop {
        let chunk = match res.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                let _ = tx.send(Event::Closed {
                    listener,
                    why: e.to_string(),
                });
                return;
            }
            None => {
                let _ = tx.send(Event::Closed {
                    listener,
                    why: "the engine ended it".into(),
                });
                return;
            }
        };
        let at = Instant::now();
        buf.extend_from_slice(&chunk);
        while let Some(end) = find(&buf, b"\n\n") {
            let event = buf.split_to(end + 2);
            let frame = if contains(&event, b"notifications/tools/list_changed") {
                Frame::ListChanged
            } else if contains(&event, b"notifications/subscriptions/acknowledged")
                || event.starts_with(b": stream open")
            {
                Frame::Open
            } else {
                continue; // a keep-alive comment
            };
            if tx
                .send(Event::Frame {
                    listener,
                    frame,
                    at,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

/// Waits for `count` streams to show they are open.
async fn wait_open(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    count: usize,
    deadline: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    let mut open = 0;
    while open < count {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(Event::Frame {
                frame: Frame::Open, ..
            })) => open += 1,
            Ok(Some(Event::Frame { .. })) => {}
            Ok(Some(Event::Closed { listener, why })) => {
                bail!("listener {listener}'s stream ended while opening: {why}")
            }
            Ok(None) => bail!("the listeners' channel closed"),
            Err(_) => bail!(
                "{open} of {count} streams acknowledged within {} s",
                deadline.as_secs()
            ),
        }
    }
    Ok(())
}

fn is_list_changed(ev: &Event) -> bool {
    matches!(
        ev,
        Event::Frame {
            frame: Frame::ListChanged,
            ..
        }
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
