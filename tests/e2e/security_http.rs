//! The HTTP API's doors (issue 9, items 1, 2, 4, 5): Host and Origin, the
//! access modes, read keys, authentication before the body, content types,
//! HEAD and OPTIONS. Every route of the route table is enumerated, so a new
//! route is covered the day it is added.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use mcp_discovery::api::{Access, Body, ROUTES};
use serde_json::{json, Value};

use crate::helpers::{http, servers_yaml, spawn_app, TestApp, DEADLINE, FAST, LOCAL_WRITES};
use crate::process::EngineProcess;
use crate::support::upstream::TestUpstream;

const EVIL_HOST: &str = "evil.example.com";
const EVIL_ORIGIN: &str = "http://evil.example.com";
const WRITE_KEY: &str = "write-key-0123456789abcdef";
const READ_KEY: &str = "read-key-0123456789abcdef";

/// One request with explicit headers and an optional raw body.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, awc::http::header::HeaderMap, Value) {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    let mut res = match body {
        Some(body) => req.send_body(body.to_vec()).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.body().limit(16 << 20).await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A concrete path for a table pattern.
fn concrete(pattern: &str) -> String {
    pattern.replace("{name}", "s")
}

/// A stdio registration that would leave `marker` behind if it ever ran.
fn touch_entry(marker: &Path) -> Value {
    json!({
        "name": "pwned",
        "command": "sh",
        "args": ["-c", format!("touch {}", marker.display())],
    })
}

/// The marker stays absent for a while (a started child would create it
/// within milliseconds).
async fn assert_never_created(marker: &Path) {
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(!marker.exists(), "the command ran: {}", marker.display());
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_rebinding_page_cannot_start_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let body = touch_entry(&marker).to_string();
    let attack = |host: &'static str, origin: Option<&'static str>| {
        let mut headers = vec![("Host", host), ("Content-Type", "application/json")];
        if let Some(origin) = origin {
            headers.push(("Origin", origin));
        }
        headers
    };

    // The default configuration: no keys, so no writes at all.
    let app = spawn_app(&format!("{FAST}servers: {{}}\n")).await;
    let (status, _, v) = send(
        &app,
        "POST",
        "/v1/servers",
        &attack(EVIL_HOST, Some(EVIL_ORIGIN)),
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!((status, code(&v)), (421, "misdirected_request"), "{v}");
    let (status, _, v) = send(
        &app,
        "POST",
        "/v1/servers",
        &attack("localhost", None),
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!((status, code(&v)), (403, "forbidden"), "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("admin.api_keys") && message.contains("allow_loopback_writes"),
        "the hint names both options: {message}"
    );
    assert_never_created(&marker).await;
    assert!(app.servers().await.is_empty());
    app.stop().await;

    // Loopback writes on (the quick start): still no way in from a page.
    let app = spawn_app(&format!("{LOCAL_WRITES}{FAST}servers: {{}}\n")).await;
    for (host, origin, want) in [
        (EVIL_HOST, Some(EVIL_ORIGIN), (421, "misdirected_request")),
        (EVIL_HOST, None, (421, "misdirected_request")),
        ("127.0.0.1", Some(EVIL_ORIGIN), (403, "forbidden_origin")),
        ("localhost:8080", Some("null"), (403, "forbidden_origin")),
    ] {
        let (status, _, v) = send(
            &app,
            "POST",
            "/v1/servers",
            &attack(host, origin),
            Some(body.as_bytes()),
        )
        .await;
        assert_eq!((status, code(&v)), want, "{host} {origin:?}: {v}");
    }
    assert_never_created(&marker).await;
    assert!(app.servers().await.is_empty());
    app.stop().await;
}

#[actix_web::test]
async fn cross_site_forms_cannot_reload_or_refresh() {
    let up = TestUpstream::builder().tools(1).start().unwrap();
    let app = spawn_app(&format!(
        "{LOCAL_WRITES}{FAST}{}",
        servers_yaml(&[("s", http(&up.url()))])
    ))
    .await;
    app.wait_healthy("s", 1).await;
    let lists = up.requests("tools/list");
    let forms = [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
    ];
    for path in ["/v1/admin/reload", "/v1/servers/s/refresh"] {
        for form in forms {
            // What a browser sends for a cross-site form: its Origin.
            let headers = [("Content-Type", form), ("Origin", EVIL_ORIGIN)];
            let (status, _, v) = send(&app, "POST", path, &headers, Some(b"a=1")).await;
            assert_eq!(
                (status, code(&v)),
                (403, "forbidden_origin"),
                "{path} {form}"
            );
            // Without an Origin (an old browser, a privacy setting): the
            // content type alone gives it away.
            let headers = [("Content-Type", form)];
            let (status, _, v) = send(&app, "POST", path, &headers, Some(b"a=1")).await;
            assert_eq!(
                (status, code(&v)),
                (415, "unsupported_media_type"),
                "{path} {form}: {v}"
            );
        }
        // No content type at all is refused too.
        let (status, _, v) = send(&app, "POST", path, &[], None).await;
        assert_eq!((status, code(&v)), (415, "unsupported_media_type"), "{v}");
    }
    assert_eq!(up.requests("tools/list"), lists, "nothing was refreshed");
    // The control: the same requests as a JSON client are accepted.
    assert_eq!(app.post("/v1/servers/s/refresh").await, 202);
    let (status, v) = app.post_json("/v1/admin/reload", None).await;
    assert_eq!((status, code(&v)), (409, "no_config_file"), "{v}");
    app.stop().await;
}

#[actix_web::test]
async fn every_route_of_the_table_is_guarded() {
    let yaml = format!(
        "{LOCAL_WRITES}{FAST}http: {{ allowed_hosts: [\"mcp.example.test\"], \
         allowed_origins: [\"https://ui.example.test\"] }}\nservers: {{}}\n"
    );
    let app = spawn_app(&yaml).await;
    assert!(ROUTES.len() >= 11, "the table lists every route");
    let mut methods: Vec<(String, String)> = Vec::new();
    for endpoint in ROUTES {
        let path = concrete(endpoint.path);
        methods.push((endpoint.method.to_string(), path.clone()));
        if endpoint.method == "GET" {
            methods.push(("HEAD".into(), path.clone()));
        }
        methods.push(("OPTIONS".into(), path.clone()));
        methods.push(("PATCH".into(), path));
    }
    methods.push(("GET".into(), "/no/such/route".into()));
    methods.push(("POST".into(), "/no/such/route".into()));

    for (method, path) in &methods {
        let json = [("Host", EVIL_HOST), ("Content-Type", "application/json")];
        let (status, _, v) = send(&app, method, path, &json, Some(b"{}")).await;
        assert_eq!(status, 421, "{method} {path}: {v}");
        if method != "HEAD" {
            assert_eq!(code(&v), "misdirected_request", "{method} {path}");
        }
    }
    // Every write route, and any method that changes something, refuses a
    // foreign Origin, and takes a listed one.
    for (method, path) in &methods {
        if matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
            continue;
        }
        let headers = [
            ("Origin", EVIL_ORIGIN),
            ("Content-Type", "application/json"),
        ];
        let (status, _, v) = send(&app, method, path, &headers, Some(b"{}")).await;
        assert_eq!(
            (status, code(&v)),
            (403, "forbidden_origin"),
            "{method} {path}"
        );
        let headers = [
            ("Origin", "https://UI.example.test"),
            ("Content-Type", "application/json"),
        ];
        let (status, _, _) = send(&app, method, path, &headers, Some(b"{}")).await;
        assert_ne!(status, 403, "{method} {path}: a listed origin passes");
    }
    let writes = ROUTES.iter().filter(|e| e.access == Access::Write).count();
    assert!(writes >= 5, "the write routes are marked as such");
    // Reads stay open to other origins while reads are not protected.
    let headers = [("Origin", EVIL_ORIGIN)];
    assert_eq!(send(&app, "GET", "/v1/tools", &headers, None).await.0, 200);
    // A listed name, any port; the listen address itself.
    for host in ["mcp.example.test", "MCP.example.test:443"] {
        let (status, _, _) = send(&app, "GET", "/healthz", &[("Host", host)], None).await;
        assert_eq!(status, 200, "{host}");
    }
    let listen = app.base.trim_start_matches("http://").to_owned();
    assert_eq!(
        send(&app, "GET", "/healthz", &[("Host", &listen)], None)
            .await
            .0,
        200
    );
    // No Host at all (HTTP/1.0 style), on a raw socket.
    let mut tcp = std::net::TcpStream::connect(&listen).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 421"), "{answer}");
    assert!(answer.contains("misdirected_request"), "{answer}");
    app.stop().await;
}

#[actix_web::test]
async fn protected_reads_check_the_origin_and_take_read_keys() {
    let app = spawn_app(&format!(
        "admin: {{ api_keys: [\"{WRITE_KEY}\"], read_keys: [\"{READ_KEY}\"], \
         protect_reads: true }}\n{FAST}servers: {{}}\n"
    ))
    .await;
    let read = format!("Bearer {READ_KEY}");
    let write = format!("Bearer {WRITE_KEY}");
    let wrong = "Bearer wrong-key-0123456789abcdef";
    for endpoint in ROUTES.iter().filter(|e| e.access == Access::Read) {
        let path = concrete(endpoint.path);
        let ok = if path.ends_with("/s") { 404 } else { 200 };
        for (auth, want) in [(&read, ok), (&write, ok)] {
            let (status, _, v) = send(&app, "GET", &path, &[("Authorization", auth)], None).await;
            assert_eq!(status, want, "{path}: {v}");
        }
        let (status, headers, v) = send(&app, "GET", &path, &[], None).await;
        assert_eq!((status, code(&v)), (401, "unauthorized"), "{path}");
        assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
        let (status, _, _) = send(&app, "GET", &path, &[("Authorization", wrong)], None).await;
        assert_eq!(status, 401, "{path}");
        let headers = [("Authorization", read.as_str()), ("Origin", EVIL_ORIGIN)];
        let (status, _, v) = send(&app, "GET", &path, &headers, None).await;
        assert_eq!((status, code(&v)), (403, "forbidden_origin"), "{path}");
    }
    for endpoint in ROUTES.iter().filter(|e| e.access == Access::Open) {
        let headers = [("Origin", EVIL_ORIGIN)];
        let (status, _, _) = send(&app, "GET", endpoint.path, &headers, None).await;
        assert!(
            status == 200 || status == 503,
            "{}: {status}",
            endpoint.path
        );
    }
    // A read key never writes, whatever the route.
    for endpoint in ROUTES.iter().filter(|e| e.access == Access::Write) {
        let path = concrete(endpoint.path);
        let headers = [
            ("Authorization", read.as_str()),
            ("Content-Type", "application/json"),
        ];
        let method = endpoint.method.as_str();
        let (status, _, v) = send(&app, method, &path, &headers, Some(b"{}")).await;
        assert_eq!((status, code(&v)), (403, "forbidden"), "{method} {path}");
        assert!(v["error"]["message"].as_str().unwrap().contains("read key"));
    }
    let (status, v) = app.post_json("/v1/admin/reload", Some(WRITE_KEY)).await;
    assert_eq!((status, code(&v)), (409, "no_config_file"), "{v}");
    app.stop().await;
}

#[actix_web::test]
async fn the_key_is_checked_before_the_body_is_read() {
    let app = spawn_app(&format!(
        "admin: {{ api_keys: [\"{WRITE_KEY}\"] }}\n{FAST}servers: {{}}\n"
    ))
    .await;
    let big = vec![b'x'; 100 * 1024];
    let bodies: [&[u8]; 3] = [b"{not json", &big, b"{\"name\": \"a\"}"];
    let good = format!("Bearer {WRITE_KEY}");
    for (method, path) in [("POST", "/v1/servers"), ("PUT", "/v1/servers/a")] {
        for body in bodies {
            for auth in [None, Some("Bearer wrong-key-0123456789abcdef")] {
                let mut headers = vec![("Content-Type", "application/json")];
                headers.extend(auth.map(|a| ("Authorization", a)));
                let (status, _, v) = send(&app, method, path, &headers, Some(body)).await;
                assert_eq!(
                    (status, code(&v)),
                    (401, "unauthorized"),
                    "{method} {path} {} bytes",
                    body.len()
                );
            }
            // A wrong content type is 415 once the key is good (and 401 before).
            let headers = [("Content-Type", "text/plain"), ("Authorization", &good)];
            let (status, _, v) = send(&app, method, path, &headers, Some(body)).await;
            assert_eq!(
                (status, code(&v)),
                (415, "unsupported_media_type"),
                "{method} {path}"
            );
        }
        // The controls: with the key, the body's own errors.
        let headers = [
            ("Content-Type", "application/json"),
            ("Authorization", &good),
        ];
        let (status, _, v) = send(&app, method, path, &headers, Some(b"{not json")).await;
        assert_eq!((status, code(&v)), (400, "bad_request"), "{v}");
        let (status, _, v) = send(&app, method, path, &headers, Some(&big)).await;
        assert_eq!((status, code(&v)), (413, "payload_too_large"), "{v}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn head_and_options_answer_on_every_route() {
    let up = TestUpstream::builder().tools(2).start().unwrap();
    let app = spawn_app(&format!(
        "{FAST}{}",
        servers_yaml(&[("s", http(&up.url()))])
    ))
    .await;
    app.wait_healthy("s", 2).await;
    for endpoint in ROUTES.iter().filter(|e| e.method == "GET") {
        let path = concrete(endpoint.path);
        let mut get = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let get_body = get.body().limit(16 << 20).await.unwrap();
        let mut head = app
            .client
            .head(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        assert!(
            head.body().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );
        for name in ["content-type", "etag", "cache-control"] {
            assert_eq!(
                head.headers().get(name),
                get.headers().get(name),
                "HEAD {path}: {name}"
            );
        }
        if path != "/metrics" {
            assert_eq!(
                head.headers()
                    .get("content-length")
                    .unwrap()
                    .to_str()
                    .unwrap(),
                get_body.len().to_string(),
                "HEAD {path}: the length of the GET body"
            );
        }
    }
    for path in mcp_discovery::api::route_paths() {
        let allow = mcp_discovery::api::allow_header(path);
        let path = concrete(path);
        let (status, headers, _) = send(&app, "OPTIONS", &path, &[], None).await;
        assert_eq!(status, 204, "OPTIONS {path}");
        assert_eq!(headers.get("allow").unwrap().to_str().unwrap(), allow);
        assert!(allow.ends_with("OPTIONS"), "{allow}");
        assert_eq!(
            allow.contains("GET"),
            allow.contains("GET, HEAD"),
            "{allow}"
        );
        let (status, headers, v) = send(&app, "PATCH", &path, &[], Some(b"{}")).await;
        assert_eq!((status, code(&v)), (405, "method_not_allowed"), "{path}");
        assert_eq!(headers.get("allow").unwrap().to_str().unwrap(), allow);
    }
    let (_, headers, _) = send(&app, "OPTIONS", "/v1/tools", &[], None).await;
    assert_eq!(headers.get("allow").unwrap(), "GET, HEAD, OPTIONS");
    readme_etag_example(&app).await;
    app.stop().await;
}

/// The README's quick-start lines, run as written (with the test's port).
async fn readme_etag_example(app: &TestApp) {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed: the README's curl example is not run");
        return;
    }
    let url = format!("{}/v1/tools", app.base);
    let script = format!(
        "etag=$(curl -sI {url} | tr -d '\\r' | awk -F': ' 'tolower($1)==\"etag\"{{print $2}}')\n\
         test -n \"$etag\" || exit 3\n\
         curl -si {url} -H \"If-None-Match: $etag\" | head -1"
    );
    let out = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.starts_with("HTTP/1.1 304"), "{stdout}");
}

/// Start-up says which access mode is in force; every write is logged with
/// the peer and the key's index and fingerprint, never the key.
#[actix_web::test]
async fn the_access_mode_and_every_write_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let up = TestUpstream::builder().tools(1).start().unwrap();
    let servers = servers_yaml(&[("s", http(&up.url()))]);
    let modes = [
        ("", "Access mode: writes refused"),
        (LOCAL_WRITES, "Access mode: loopback-only writes"),
    ];
    for (i, (admin, line)) in modes.iter().enumerate() {
        let config = dir.path().join(format!("mode{i}.yaml"));
        std::fs::write(&config, format!("{admin}{FAST}{servers}")).unwrap();
        let log = dir.path().join(format!("mode{i}.log"));
        let engine = EngineProcess::start(&config, Some(&log));
        engine.wait_listening().await;
        wait_log(&log, line).await;
    }

    let config = dir.path().join("keys.yaml");
    std::fs::write(
        &config,
        format!("admin: {{ api_keys: [\"{READ_KEY}\", \"{WRITE_KEY}\"] }}\n{FAST}{servers}"),
    )
    .unwrap();
    let log = dir.path().join("keys.log");
    let engine = EngineProcess::start(&config, Some(&log));
    engine.wait_listening().await;
    wait_log(&log, "Access mode: keys").await;
    let res = engine
        .client
        .post(format!("{}/v1/servers/s/refresh", engine.base))
        .insert_header(("Authorization", format!("Bearer {WRITE_KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let text = wait_log(&log, "Write over the API.").await;
    let line = text
        .lines()
        .find(|l| l.contains("Write over the API."))
        .unwrap();
    assert!(line.contains("admin.api_keys[1]"), "{line}");
    assert!(line.contains("127.0.0.1:"), "the peer: {line}");
    assert!(line.contains("202"), "{line}");
    let refused = engine
        .client
        .post(format!("{}/v1/admin/reload", engine.base))
        .insert_header(("Authorization", "Bearer not-a-key-0123456789"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let text = wait_log(&log, "Refused a write over the API.").await;
    for secret in [WRITE_KEY, READ_KEY, "not-a-key-0123456789"] {
        assert!(!text.contains(secret), "a key in the log");
    }
}

async fn wait_log(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_route_table_marks_bodies_and_writes_consistently() {
    for endpoint in ROUTES {
        let changes = !matches!(endpoint.method.as_str(), "GET" | "HEAD" | "OPTIONS");
        // The MCP endpoint's POST and DELETE are reads as far as keys go
        // (an MCP client lists and calls; it never changes the engine),
        // with the Origin check of a write on every method.
        if endpoint.access == Access::Mcp {
            assert!(endpoint.path.starts_with("/mcp"), "{}", endpoint.path);
            continue;
        }
        assert_eq!(
            changes,
            endpoint.access == Access::Write,
            "{} {}",
            endpoint.method,
            endpoint.path
        );
        if endpoint.body == Body::Json {
            assert_eq!(endpoint.access, Access::Write);
        }
    }
}
