//! Compressed representations (issue 13, ADR 0022): `GET /v1/tools` in
//! gzip and zstd and `/mcp` `tools/list` in gzip, decoded by real decoders
//! (flate2 and zstd in-process, gzip/zstd/curl/Python/Node processes, the
//! official MCP Python SDK clients through their own HTTP stacks), with
//! ETags, 304, `Vary`, HEAD and 406 checked, and a compression held back
//! while the catalog moves on.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use awc::http::header::HeaderMap;
use bytes::Bytes;
use mcp_discovery::encoding::Gate;
use mcp_discovery::AppOptions;
use serde_json::{json, Value};

use crate::helpers::{http, spawn_app, start_with, TestApp, DEADLINE, FAST, LOCAL_WRITES};
use crate::support::peers;
use crate::support::upstream::TestUpstream;

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn encoding(&self) -> &str {
        self.header("content-encoding").unwrap_or("identity")
    }
}

async fn send(req: awc::ClientRequest, body: Option<String>) -> Answer {
    let mut res = match body {
        Some(b) => req.send_body(b).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.body().limit(256 << 20).await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = app.client.get(format!("{}{path}", app.base));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    send(req, None).await
}

async fn head(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = app.client.head(format!("{}{path}", app.base));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    send(req, None).await
}

/// GETs until the answer comes in `coding` (a body is compressed after
/// the first ask for it, off the request path).
async fn get_until(app: &TestApp, path: &str, accept: &str, coding: &str) -> Answer {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let a = get(app, path, &[("Accept-Encoding", accept)]).await;
        assert_eq!(a.status, 200);
        if a.encoding() == coding {
            return a;
        }
        // Meanwhile another acceptable coding that is ready stands in.
        assert!(
            a.encoding() == "identity" || accept.contains(a.encoding()),
            "{accept}: {}",
            a.encoding()
        );
        assert!(Instant::now() < deadline, "{path} never came in {coding}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One gzip member, read by the single-member decoder: the whole input
/// must be that member (a second member would be lost by httpx and zlib
/// stream readers).
fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut d = flate2::bufread::GzDecoder::new(data);
    let mut out = Vec::new();
    d.read_to_end(&mut out).unwrap();
    assert!(d.into_inner().is_empty(), "bytes after the gzip member");
    out
}

fn unzstd(data: &[u8]) -> Vec<u8> {
    // One frame, and nothing after it (Node's zstd reads one frame only).
    let size = zstd::zstd_safe::find_frame_compressed_size(data).unwrap();
    assert_eq!(size, data.len(), "bytes after the zstd frame");
    zstd::stream::decode_all(data).unwrap()
}

/// Runs `program args` with `input` on stdin; its stdout.
fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A decoder program, or a skip when the interop peers are switched off.
fn peer_path(what: &str, path: PathBuf) -> Option<PathBuf> {
    if peers::interop_skipped() {
        eprintln!("skipped: interop peers off ({what})");
        return None;
    }
    assert!(
        path.exists(),
        "{what} is not installed ({}). Hint: run scripts/setup-test-deps.sh",
        path.display()
    );
    Some(path)
}

fn upstream(tools: usize) -> TestUpstream {
    TestUpstream::builder()
        .tools(tools)
        .description_padding(200)
        .start()
        .unwrap()
}

#[actix_web::test]
async fn the_catalog_comes_in_gzip_and_zstd_that_real_decoders_read() {
    let a = upstream(150);
    let b = upstream(20);
    let yaml = format!(
        "{FAST}servers:\n  a: {}\n  b: {}\n",
        http(&a.url()),
        http(&b.url())
    );
    let app = spawn_app(&yaml).await;
    app.wait_healthy("a", 150).await;
    app.wait_healthy("b", 20).await;

    let plain = get(&app, "/v1/tools", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.encoding(), "identity");
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    let etag = plain.header("etag").unwrap().to_owned();
    let gz_tag = format!("{}-gzip\"", etag.trim_end_matches('"'));
    let zs_tag = format!("{}-zstd\"", etag.trim_end_matches('"'));

    let gz = get_until(&app, "/v1/tools", "gzip", "gzip").await;
    assert_eq!(gz.header("etag"), Some(gz_tag.as_str()));
    assert_eq!(gz.header("vary"), Some("accept-encoding"));
    assert_eq!(gz.header("content-type"), Some("application/json"));
    assert!(
        gz.body.len() * 5 < plain.body.len(),
        "{} bytes",
        gz.body.len()
    );
    assert_eq!(gunzip(&gz.body), plain.body);
    assert_eq!(pipe("gzip", &["-dc"], &gz.body), plain.body);
    assert_eq!(
        pipe(
            "python3",
            &["-c", "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))"],
            &gz.body
        ),
        plain.body
    );

    let zs = get_until(&app, "/v1/tools", "gzip;q=0.5, zstd", "zstd").await;
    assert_eq!(zs.header("etag"), Some(zs_tag.as_str()));
    assert!(zs.body.len() < gz.body.len());
    assert_eq!(unzstd(&zs.body), plain.body);
    assert_eq!(pipe("zstd", &["-dcq"], &zs.body), plain.body);
    if let Some(node) = peer_path("Node 22 (zstd)", peers::conformance_node()) {
        let script = "process.stdout.write(require('zlib').zstdDecompressSync(require('fs').readFileSync(0)))";
        let node = node.to_string_lossy().into_owned();
        assert_eq!(pipe(&node, &["-e", script], &zs.body), plain.body);
    }
    // Our favourite among equals is the smaller body.
    assert_eq!(
        get(&app, "/v1/tools", &[("Accept-Encoding", "gzip, zstd")])
            .await
            .encoding(),
        "zstd"
    );
    // A coding we do not have: identity.
    let br = get(&app, "/v1/tools", &[("Accept-Encoding", "br")]).await;
    assert_eq!(
        (br.encoding(), br.header("etag")),
        ("identity", Some(etag.as_str()))
    );

    // curl decodes what it negotiates (it offers every coding it has).
    let url = format!("{}/v1/tools", app.base);
    for coding in ["gzip", "zstd"] {
        let dir = tempfile::tempdir().unwrap();
        let headers = dir.path().join("headers");
        let out = Command::new("curl")
            .args(["-sS", "--compressed", "-H"])
            .arg(format!("Accept-Encoding: {coding}"))
            .arg("-D")
            .arg(&headers)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head = std::fs::read_to_string(&headers).unwrap().to_lowercase();
        assert!(
            head.contains(&format!("content-encoding: {coding}")),
            "{head}"
        );
        assert_eq!(out.stdout, plain.body);
    }
    // httpx (the Python SDK's HTTP stack) with its own Accept-Encoding.
    if let Some(python) = peer_path("the Python SDK venv", peers::python_bin()) {
        let script = "import httpx,sys; r=httpx.get(sys.argv[1]); sys.stdout.write(r.headers.get('content-encoding','identity')+'\\n'+r.text)";
        let out = Command::new(python)
            .args(["-c", script, &url])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (coding, body) = text.split_once('\n').unwrap();
        assert_eq!(coding, "gzip");
        assert_eq!(body.as_bytes(), plain.body);
    }

    // HEAD: the headers GET would send, no body.
    for (accept, coding, len) in [
        ("gzip", "gzip", gz.body.len()),
        ("zstd", "zstd", zs.body.len()),
        ("identity", "identity", plain.body.len()),
    ] {
        let h = head(&app, "/v1/tools", &[("Accept-Encoding", accept)]).await;
        assert_eq!(h.status, 200);
        assert_eq!(h.encoding(), coding);
        assert_eq!(h.header("content-length"), Some(len.to_string().as_str()));
        assert_eq!(h.header("vary"), Some("accept-encoding"));
        assert!(h.body.is_empty());
    }

    // 304 for any current representation the request accepts, naming it.
    for (accept, inm, want) in [
        ("gzip", gz_tag.as_str(), gz_tag.as_str()),
        ("gzip", etag.as_str(), etag.as_str()),
        ("gzip, zstd", zs_tag.as_str(), zs_tag.as_str()),
        ("", etag.as_str(), etag.as_str()),
    ] {
        let both = format!("\"nope\", W/{inm}");
        let a = get(
            &app,
            "/v1/tools",
            &[("Accept-Encoding", accept), ("If-None-Match", &both)],
        )
        .await;
        assert_eq!(a.status, 304, "{accept} {inm}");
        assert_eq!(a.header("etag"), Some(want));
        assert_eq!(a.header("vary"), Some("accept-encoding"));
        assert!(a.body.is_empty());
        let h = head(
            &app,
            "/v1/tools",
            &[("Accept-Encoding", accept), ("If-None-Match", inm)],
        )
        .await;
        assert_eq!(h.status, 304);
    }
    // A tag of a representation the request does not accept: 200.
    let a = get(
        &app,
        "/v1/tools",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &zs_tag)],
    )
    .await;
    assert_eq!((a.status, a.encoding()), (200, "gzip"));
    let a = get(&app, "/v1/tools", &[("If-None-Match", &gz_tag)]).await;
    assert_eq!((a.status, a.encoding()), (200, "identity"));
    let a = get(
        &app,
        "/v1/tools",
        &[
            ("Accept-Encoding", "gzip, identity;q=0"),
            ("If-None-Match", &etag),
        ],
    )
    .await;
    assert_eq!((a.status, a.encoding()), (200, "gzip"));

    // Nothing acceptable: 406, with Vary.
    for accept in ["identity;q=0", "br, *;q=0"] {
        let a = get(&app, "/v1/tools", &[("Accept-Encoding", accept)]).await;
        assert_eq!(a.status, 406, "{accept}");
        assert_eq!(a.header("vary"), Some("accept-encoding"));
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["error"]["code"], "not_acceptable");
    }

    // ?server=: its own bodies, the catalog's tag.
    let one = get(&app, "/v1/tools?server=b", &[]).await;
    let one_gz = get_until(&app, "/v1/tools?server=b", "gzip", "gzip").await;
    assert_eq!(gunzip(&one_gz.body), one.body);
    assert_eq!(one_gz.header("etag"), Some(gz_tag.as_str()));
    let one_zs = get_until(&app, "/v1/tools?server=b", "zstd", "zstd").await;
    assert_eq!(unzstd(&one_zs.body), one.body);
    let v: Value = serde_json::from_slice(&one.body).unwrap();
    assert_eq!(v["tools"].as_array().unwrap().len(), 20);
    // An unknown server is still a 404 (with Vary).
    let nope = get(&app, "/v1/tools?server=zz", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(
        (nope.status, nope.header("vary")),
        (404, Some("accept-encoding"))
    );

    // ?q= is cut per request: identity only, even for gzip clients.
    let q = get(&app, "/v1/tools?q=tool", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!((q.status, q.encoding()), (200, "identity"));
    assert_eq!(q.header("vary"), Some("accept-encoding"));
    assert_eq!(q.header("etag"), Some(etag.as_str()));
    let q = get(
        &app,
        "/v1/tools?q=tool",
        &[("Accept-Encoding", "gzip, identity;q=0")],
    )
    .await;
    assert_eq!(q.status, 406);
    app.stop().await;
}

#[actix_web::test]
async fn a_new_version_is_published_and_served_while_a_compression_is_held_back() {
    let up = upstream(60);
    let gate = Gate::closed();
    let yaml = format!("{FAST}{LOCAL_WRITES}servers:\n  a: {}\n", http(&up.url()));
    let config =
        discovery_config::load_str(&yaml, discovery_config::Format::Yaml, None, &[]).unwrap();
    let options = AppOptions {
        compression_gate: Some(gate.clone()),
        ..AppOptions::for_tests()
    };
    let app = start_with(config, options).await;
    app.wait_healthy("a", 60).await;

    let v1 = get(&app, "/v1/tools", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!((v1.status, v1.encoding()), (200, "identity"));
    let v1_tag = v1.header("etag").unwrap().to_owned();
    // The compression it asked for is held at the gate now.
    let deadline = Instant::now() + DEADLINE;
    while gate.held() == 0 {
        assert!(Instant::now() < deadline, "no compression reached the gate");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // The upstream changes; the engine publishes a new version meanwhile.
    up.set_tools(61);
    let (status, _) = app.post_json("/v1/servers/a/refresh", None).await;
    assert_eq!(status, 202);
    app.wait_healthy("a", 61).await;
    let v2 = get(&app, "/v1/tools", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!((v2.status, v2.encoding()), (200, "identity"));
    let v2_tag = v2.header("etag").unwrap().to_owned();
    assert_ne!(v2_tag, v1_tag);
    let v: Value = serde_json::from_slice(&v2.body).unwrap();
    assert_eq!(v["tools"].as_array().unwrap().len(), 61);
    let h = head(&app, "/v1/tools", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!((h.status, h.encoding()), (200, "identity"));
    assert_eq!(gate.held(), 1, "still held: nothing above waited for it");

    // Let it go: the answer turns gzip, of the new version only.
    gate.open();
    let gz = get_until(&app, "/v1/tools", "gzip", "gzip").await;
    assert_eq!(
        gz.header("etag").unwrap(),
        format!("{}-gzip\"", v2_tag.trim_end_matches('"'))
    );
    assert_eq!(gunzip(&gz.body), v2.body);
    app.stop().await;
}

// ---- /mcp ---------------------------------------------------------------------

async fn mcp_post(app: &TestApp, accept: Option<&str>, body: Value) -> Answer {
    let mut req = app
        .client
        .post(format!("{}/mcp", app.base))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("MCP-Protocol-Version", crate::gateway::MODERN));
    if let Some(method) = body["method"].as_str() {
        req = req.insert_header(("Mcp-Method", method.to_owned()));
    }
    if let Some(accept) = accept {
        req = req.insert_header(("Accept-Encoding", accept.to_owned()));
    }
    send(req, Some(body.to_string())).await
}

fn list_request(id: Value, cursor: Option<&str>) -> Value {
    let mut params = json!({"_meta": crate::gateway::meta()});
    if let Some(c) = cursor {
        params["cursor"] = json!(c);
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
}

/// Lists until the answer comes in gzip; the decoded JSON.
async fn list_gzip(app: &TestApp, id: Value, cursor: Option<&str>) -> (Answer, Value) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let a = mcp_post(app, Some("gzip, deflate"), list_request(id.clone(), cursor)).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.header("vary"), Some("accept-encoding"));
        if a.encoding() == "gzip" {
            let v = serde_json::from_slice(&gunzip(&a.body)).unwrap();
            return (a, v);
        }
        assert!(Instant::now() < deadline, "tools/list never came in gzip");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tool_names(result: &Value) -> Vec<String> {
    result["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn mcp_listings_come_in_one_spliced_gzip_member_per_answer() {
    let a = upstream(120);
    let yaml = format!("{FAST}servers:\n  a: {}\n", http(&a.url()));
    let app = spawn_app(&yaml).await;
    app.wait_healthy("a", 120).await;

    let plain = mcp_post(&app, None, list_request(json!(1), None)).await;
    assert_eq!((plain.status, plain.encoding()), (200, "identity"));
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    let plain: Value = serde_json::from_slice(&plain.body).unwrap();
    assert_eq!(tool_names(&plain).len(), 120);

    // Every answer carries its own id around the one compressed piece.
    let (first, v) = list_gzip(&app, json!("a-string-id"), None).await;
    assert_eq!(v["id"], "a-string-id");
    assert_eq!(tool_names(&v), tool_names(&plain));
    assert!(v["result"]["ttlMs"].is_u64(), "{}", v["result"]);
    let long_id = "x".repeat(70_000);
    let (second, v) = list_gzip(&app, json!(long_id), None).await;
    assert_eq!(v["id"], json!(long_id));
    assert_eq!(tool_names(&v), tool_names(&plain));
    // The piece is shared; the bodies differ by their envelope only.
    assert!(first.body.len() * 4 < serde_json::to_vec(&plain).unwrap().len());
    assert!(second.body.len() > 70_000);
    // zlib's stream reader (what httpx does) and the gzip tool agree.
    let script = "import zlib,sys; d=zlib.decompressobj(zlib.MAX_WBITS|16); b=d.decompress(sys.stdin.buffer.read()); assert d.eof and not d.unused_data; sys.stdout.buffer.write(b)";
    assert_eq!(
        pipe("python3", &["-c", script], &first.body),
        gunzip(&first.body)
    );
    assert_eq!(pipe("gzip", &["-dc"], &second.body), gunzip(&second.body));
    // zstd is not offered on /mcp (ADR 0022): identity.
    let z = mcp_post(&app, Some("zstd"), list_request(json!(3), None)).await;
    assert_eq!((z.status, z.encoding()), (200, "identity"));
    let z = mcp_post(
        &app,
        Some("zstd, identity;q=0"),
        list_request(json!(4), None),
    )
    .await;
    assert_eq!(z.status, 406);
    let err: Value = serde_json::from_slice(&z.body).unwrap();
    assert_eq!(err["id"], 4);

    // Node's fetch (the TypeScript SDK's HTTP stack) decodes it itself.
    let url = format!("{}/mcp", app.base);
    let body = list_request(json!(9), None).to_string();
    let script = format!(
        "fetch({url:?}, {{method: 'POST', headers: {{'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '{m}', 'mcp-method': 'tools/list'}}, body: process.argv[1]}}).then(async r => {{ const v = await r.json(); console.log(JSON.stringify({{enc: r.headers.get('content-encoding'), n: v.result.tools.length, id: v.id}})); }})",
        m = crate::gateway::MODERN
    );
    if !peers::interop_skipped() {
        let out = Command::new("node")
            .args(["-e", &script, &body])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v, json!({"enc": "gzip", "n": 120, "id": 9}));
    }
    app.stop().await;
}

#[actix_web::test]
async fn mcp_pages_are_compressed_one_by_one() {
    let a = upstream(25);
    let yaml = format!(
        "{FAST}mcp: {{ page_size: 10 }}\nservers:\n  a: {}\n",
        http(&a.url())
    );
    let app = spawn_app(&yaml).await;
    app.wait_healthy("a", 25).await;
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..3 {
        let (_, v) = list_gzip(&app, json!(page), cursor.as_deref()).await;
        names.extend(tool_names(&v));
        cursor = v["result"]["nextCursor"].as_str().map(str::to_owned);
    }
    assert!(cursor.is_none());
    assert_eq!(names.len(), 25);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 25);
    app.stop().await;
}

/// Runs tests/fixtures/mcp_list_client.py with `python` until its
/// `tools/list` answer came gzip; what it printed.
fn sdk_lists(python: &PathBuf, url: &str) -> Value {
    let script = peers::repo_root().join("tests/fixtures/mcp_list_client.py");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = Command::new(python).arg(&script).arg(url).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["encodings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "gzip")
        {
            return v;
        }
        assert!(Instant::now() < deadline, "the SDK never got gzip: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[actix_web::test]
async fn the_official_python_sdk_clients_read_gzip_listings() {
    let a = upstream(80);
    let yaml = format!("{FAST}servers:\n  a: {}\n", http(&a.url()));
    let app = spawn_app(&yaml).await;
    app.wait_healthy("a", 80).await;
    let url = format!("{}/mcp", app.base);
    let mut want: Vec<String> = (0..80)
        .map(|i| format!("a__{}", crate::support::upstream::tool_name(i)))
        .collect();
    want.sort();
    for (what, python) in [
        ("the MCP Python SDK 1.x venv", peers::python_bin()),
        ("the MCP Python SDK 2.x venv", peers::python_v2_bin()),
    ] {
        let Some(python) = peer_path(what, python) else {
            return;
        };
        let url = url.clone();
        let v = actix_web::rt::task::spawn_blocking(move || sdk_lists(&python, &url))
            .await
            .unwrap();
        assert!(
            v["accept_encoding"].as_str().unwrap().contains("gzip"),
            "{what}: {v}"
        );
        let mut got: Vec<String> = v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        got.sort();
        assert_eq!(got, want, "{what}");
    }
    app.stop().await;
}
