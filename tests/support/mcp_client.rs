//! A deliberately small MCP client for tests, over awc: enough to poke the
//! test upstream, the interop peers, or the engine's own `/mcp` endpoint, and
//! to see raw statuses and headers. It is not the engine's client (that one is
//! under test); keep it simple and obvious.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Protocol version this client offers.
pub const CLIENT_PROTOCOL_VERSION: &str = "2025-11-25";
const TIMEOUT: Duration = Duration::from_secs(20);
const BODY_LIMIT: usize = 64 * 1024 * 1024;
const MAX_PAGES: usize = 1000;

/// A raw HTTP answer to one POST.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    pub fn is_sse(&self) -> bool {
        self.content_type().starts_with("text/event-stream")
    }

    /// The JSON-RPC messages of the body: the JSON body, or the data of each
    /// SSE event (events with empty data skipped).
    pub fn messages(&self) -> anyhow::Result<Vec<Value>> {
        if self.body.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_sse() {
            sse_events(&self.body)
                .into_iter()
                .filter(|e| !e.data.is_empty())
                .map(|e| {
                    serde_json::from_str(&e.data)
                        .with_context(|| format!("SSE data is not JSON: {}", e.data))
                })
                .collect()
        } else {
            Ok(vec![
                serde_json::from_slice(&self.body).context("body is not JSON")?
            ])
        }
    }

    /// The single JSON-RPC response in the body.
    pub fn response(&self) -> anyhow::Result<Value> {
        self.messages()?
            .into_iter()
            .find(|m| m.get("id").is_some() && m.get("method").is_none())
            .ok_or_else(|| {
                anyhow!(
                    "no JSON-RPC response in a {} reply: {:?}",
                    self.status,
                    self.body
                )
            })
    }
}

/// One parsed SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// Parses complete SSE events out of `text` (LF or CRLF; comments skipped).
pub fn sse_events(text: &[u8]) -> Vec<SseEvent> {
    let text = String::from_utf8_lossy(text).replace("\r\n", "\n");
    let mut events = Vec::new();
    let mut current = SseEvent::default();
    let mut data_lines: Vec<String> = Vec::new();
    let mut touched = false;
    for line in text.split('\n') {
        if line.is_empty() {
            if touched {
                current.data = data_lines.join("\n");
                events.push(std::mem::take(&mut current));
                data_lines.clear();
                touched = false;
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        touched = true;
        match field {
            "data" => data_lines.push(value.to_owned()),
            "id" => current.id = Some(value.to_owned()),
            "event" => current.event = Some(value.to_owned()),
            "retry" => current.retry = value.parse().ok(),
            _ => {}
        }
    }
    events
}

/// Streamable HTTP client state: URL, session, negotiated version.
pub struct McpClient {
    client: awc::Client,
    url: String,
    headers: Vec<(String, String)>,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
    next_id: u64,
}

impl McpClient {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            client: awc::Client::builder()
                .timeout(TIMEOUT)
                .disable_redirects()
                .finish(),
            url: url.into(),
            headers: Vec::new(),
            session_id: None,
            protocol_version: None,
            next_id: 1,
        }
    }

    /// Sends this header on every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// POSTs one message with the session and version headers, as a client
    /// should; returns whatever came back.
    pub async fn post(&self, msg: &Value) -> anyhow::Result<RawReply> {
        let mut req = self
            .client
            .post(&self.url)
            .insert_header(("Accept", "application/json, text/event-stream"))
            .insert_header(("Content-Type", "application/json"));
        if let Some(s) = &self.session_id {
            req = req.insert_header(("Mcp-Session-Id", s.as_str()));
        }
        if let Some(v) = &self.protocol_version {
            req = req.insert_header(("MCP-Protocol-Version", v.as_str()));
        }
        for (k, v) in &self.headers {
            req = req.insert_header((k.as_str(), v.as_str()));
        }
        let mut res = req
            .send_body(msg.to_string())
            .await
            .map_err(|e| anyhow!("POST {} failed: {e}", self.url))?;
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = res
            .body()
            .limit(BODY_LIMIT)
            .await
            .map_err(|e| anyhow!("reading the body failed: {e}"))?;
        Ok(RawReply {
            status,
            headers,
            body,
        })
    }

    /// `initialize` + `notifications/initialized`; keeps the session id and
    /// the negotiated version. Returns the initialize result.
    pub async fn initialize(&mut self) -> anyhow::Result<Value> {
        let id = self.next_id();
        let reply = self
            .post(&initialize_request(id, CLIENT_PROTOCOL_VERSION))
            .await?;
        if reply.status != 200 {
            bail!(
                "initialize answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        let result = result_of(reply.response()?)?;
        self.session_id = reply.header("mcp-session-id").map(str::to_owned);
        self.protocol_version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let ack = self
            .post(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        if ack.status != 202 {
            bail!(
                "notifications/initialized answered {} (expected 202)",
                ack.status
            );
        }
        Ok(result)
    }

    /// One request; the result, or an error naming the status or the
    /// JSON-RPC error.
    pub async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id();
        let reply = self
            .post(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        if reply.status != 200 {
            bail!(
                "{method} answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
        }
        result_of(reply.response()?)
    }

    /// Every tool (raw objects), following `nextCursor`.
    pub async fn list_tools(&mut self) -> anyhow::Result<Vec<Value>> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = self.request("tools/list", params).await?;
            tools.extend(
                page.get("tools")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(tools),
            }
        }
        bail!("tools/list did not end within {MAX_PAGES} pages")
    }

    pub async fn list_tool_names(&mut self) -> anyhow::Result<Vec<String>> {
        Ok(names(&self.list_tools().await?))
    }

    /// DELETE the session.
    pub async fn delete_session(&self) -> anyhow::Result<u16> {
        let mut req = self.client.delete(&self.url);
        if let Some(s) = &self.session_id {
            req = req.insert_header(("Mcp-Session-Id", s.as_str()));
        }
        let res = req
            .send()
            .await
            .map_err(|e| anyhow!("DELETE {} failed: {e}", self.url))?;
        Ok(res.status().as_u16())
    }
}

/// A 2024-11-05 HTTP+SSE client: GET the stream, POST to the endpoint it
/// names, read responses off the stream.
pub struct LegacySseClient {
    client: awc::Client,
    base: String,
    endpoint: String,
    stream: awc::ClientResponse,
    buffer: BytesMut,
    next_id: u64,
}

impl LegacySseClient {
    /// Opens the stream at `sse_url` and waits for the `endpoint` event.
    pub async fn connect(sse_url: &str) -> anyhow::Result<Self> {
        let client = awc::Client::builder().disable_timeout().finish();
        let res = client
            .get(sse_url)
            .insert_header(("Accept", "text/event-stream"))
            .send()
            .await
            .map_err(|e| anyhow!("GET {sse_url} failed: {e}"))?;
        if res.status().as_u16() != 200 {
            bail!("GET {sse_url} answered {}", res.status());
        }
        let url = url::Url::parse(sse_url).context("bad SSE URL")?;
        let base = format!(
            "{}://{}",
            url.scheme(),
            url.host_str().unwrap_or("127.0.0.1")
        ) + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let mut this = Self {
            client,
            base,
            endpoint: String::new(),
            stream: res,
            buffer: BytesMut::new(),
            next_id: 1,
        };
        let event = this.next_event().await?;
        if event.event.as_deref() != Some("endpoint") {
            bail!("first SSE event is not `endpoint`: {event:?}");
        }
        this.endpoint = if event.data.starts_with('/') {
            format!("{}{}", this.base, event.data)
        } else {
            event.data
        };
        Ok(this)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next complete event on the stream (comments skipped), within 20 s.
    pub async fn next_event(&mut self) -> anyhow::Result<SseEvent> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(raw) = take_event(&mut self.buffer) {
                match sse_events(&raw).into_iter().next() {
                    Some(event) => return Ok(event),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| anyhow!("no SSE event within {TIMEOUT:?}"))?;
            match chunk {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(e)) => bail!("SSE stream failed: {e}"),
                None => bail!("SSE stream ended"),
            }
        }
    }

    /// POSTs a message to the endpoint; returns the HTTP status (202 expected).
    pub async fn post(&self, msg: &Value) -> anyhow::Result<u16> {
        let res = self
            .client
            .post(&self.endpoint)
            .timeout(TIMEOUT)
            .insert_header(("Content-Type", "application/json"))
            .send_body(msg.to_string())
            .await
            .map_err(|e| anyhow!("POST {} failed: {e}", self.endpoint))?;
        Ok(res.status().as_u16())
    }

    /// Sends a request and reads events until its response arrives.
    pub async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let status = self
            .post(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        if status != 202 && status != 200 {
            bail!("{method} POST answered {status}");
        }
        loop {
            let event = self.next_event().await?;
            if event.data.is_empty() {
                continue;
            }
            let msg: Value = serde_json::from_str(&event.data)
                .with_context(|| format!("not JSON: {}", event.data))?;
            if msg.get("id") == Some(&json!(id)) && msg.get("method").is_none() {
                return result_of(msg);
            }
        }
    }

    pub async fn initialize(&mut self, version: &str) -> anyhow::Result<Value> {
        let result = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": version,
                    "capabilities": {},
                    "clientInfo": { "name": "mcp-discovery-tests", "version": "0" },
                }),
            )
            .await?;
        self.post(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        Ok(result)
    }

    pub async fn list_tool_names(&mut self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor
                .as_ref()
                .map(|c| json!({ "cursor": c }))
                .unwrap_or(json!({}));
            let page = self.request("tools/list", params).await?;
            out.extend(names(
                page.get("tools")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
            ));
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(out),
            }
        }
        bail!("tools/list did not end within {MAX_PAGES} pages")
    }
}

/// Splits the first complete event (up to and including its blank line,
/// LF or CRLF) off the buffer.
fn take_event(buf: &mut BytesMut) -> Option<Bytes> {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + nl];
        let blank = line.is_empty() || line == b"\r";
        start += nl + 1;
        if blank {
            return Some(buf.split_to(start).freeze());
        }
    }
    None
}

pub fn initialize_request(id: u64, version: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": { "name": "mcp-discovery-tests", "version": "0" },
        },
    })
}

/// The `result` of a JSON-RPC response, or its `error` as an error.
pub fn result_of(msg: Value) -> anyhow::Result<Value> {
    if let Some(err) = msg.get("error") {
        bail!("JSON-RPC error: {err}");
    }
    msg.get("result")
        .cloned()
        .ok_or_else(|| anyhow!("response without result: {msg}"))
}

/// The `name` of each tool.
pub fn names(tools: &[Value]) -> Vec<String> {
    tools
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}
