//! Criterion benches of the engine's hot pure paths: catalog rebuilds (what
//! the registry does when tools change) and rendering (what `GET /v1/tools`
//! does per request), plus the SSE parser and the tool lookup of a relayed
//! `tools/call`.
//!
//! Run: `cargo bench --bench engine` (add `-- catalog` to filter).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use discovery_actors::catalog::{Catalog, ServerTools};
use discovery_actors::mcp::sse::SseParser;
use discovery_actors::mcp::Tool;
use serde_json::value::RawValue;

fn tools(count: usize) -> Vec<Tool> {
    (0..count)
        .map(|i| {
            let raw = format!(
                r#"{{"name":"tool_{i}","description":"Tool number {i} does a useful thing","inputSchema":{{"type":"object","properties":{{"query":{{"type":"string"}},"limit":{{"type":"integer"}}}},"required":["query"]}}}}"#
            );
            Tool {
                name: format!("tool_{i}"),
                raw: Arc::from(RawValue::from_string(raw).unwrap_or_else(|_| unreachable!())),
            }
        })
        .collect()
}

fn catalog(c: &mut Criterion) {
    let servers = 100;
    let per_server = tools(100);
    let parts: Vec<Arc<ServerTools>> = (0..servers)
        .map(|s| {
            Arc::new(ServerTools::build(
                &format!("server{s}"),
                "__",
                false,
                &per_server,
            ))
        })
        .collect();

    let mut group = c.benchmark_group("catalog");
    group.throughput(Throughput::Elements((servers * per_server.len()) as u64));
    group.bench_function("build_all_parts_10k_tools", |b| {
        b.iter(|| {
            (0..servers)
                .map(|s| ServerTools::build(&format!("server{s}"), "__", false, &per_server))
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("assemble_10k_tools", |b| {
        b.iter(|| Catalog::assemble(7, parts.clone()))
    });
    group.bench_function("one_server_changed_10k_tools", |b| {
        // What a list_changed costs the registry: one part rebuilt, all joined.
        b.iter(|| {
            let mut next = parts.clone();
            next[42] = Arc::new(ServerTools::build("server42", "__", false, &per_server));
            Catalog::assemble(8, next)
        })
    });
    let cat = Catalog::assemble(7, parts.clone());
    group.bench_function("render_full_10k_tools", |b| b.iter(|| cat.body()));
    group.bench_function("render_filtered_q_10k_tools", |b| {
        b.iter(|| cat.render_filtered(None, Some("number 42")))
    });
    group.bench_function("render_one_server_10k_tools", |b| {
        b.iter(|| cat.render_filtered(Some("server42"), None))
    });
    group.finish();
}

fn sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("catalog_build_by_size");
    for n in [100usize, 1_000, 10_000] {
        let t = tools(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &t, |b, t| {
            b.iter(|| Catalog::assemble(1, vec![Arc::new(ServerTools::build("s", "__", false, t))]))
        });
    }
    group.finish();
}

/// A `tools/list` answer of `tools` tools as one SSE stream: a priming
/// event, then the response as `event: message`, optionally pretty-printed
/// over several `data:` lines.
fn sse_stream(tools: usize, multiline: bool) -> Vec<u8> {
    let list: Vec<serde_json::Value> = (0..tools)
        .map(|i| serde_json::json!({"name": format!("tool_{i}"), "description": "d", "inputSchema": {"type": "object"}}))
        .collect();
    let msg = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": list}});
    let body = if multiline {
        serde_json::to_string_pretty(&msg).unwrap_or_default()
    } else {
        msg.to_string()
    };
    let mut out = String::from("id: 1\ndata:\n\n: keepalive\nevent: message\nid: 2\n");
    for line in body.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.into_bytes()
}

fn sse(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_parser");
    for (name, multiline) in [("one_line", false), ("multiline", true)] {
        let stream = sse_stream(1000, multiline);
        group.throughput(Throughput::Bytes(stream.len() as u64));
        for chunk in [64usize, 16 * 1024] {
            group.bench_with_input(
                BenchmarkId::new(name, format!("chunk_{chunk}")),
                &stream,
                |b, stream| {
                    b.iter(|| {
                        let mut parser = SseParser::new(16 << 20);
                        let mut events = Vec::new();
                        for part in stream.chunks(chunk) {
                            let _ = parser.feed(part, &mut events);
                        }
                        events
                    })
                },
            );
        }
    }
    group.finish();
}

/// What a relayed `tools/call` costs the upstream actor to find the listed
/// tool (its last entry: the worst case of the scan) and copy its JSON.
fn call_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_lookup");
    for n in [100usize, 10_000] {
        let part = ServerTools::build("s", "__", false, &tools(n));
        let last = format!("tool_{}", n - 1);
        group.bench_with_input(BenchmarkId::from_parameter(n), &part, |b, part| {
            b.iter(|| part.find(&last))
        });
    }
    group.finish();
}

criterion_group!(benches, catalog, sizes, sse, call_lookup);
criterion_main!(benches);
