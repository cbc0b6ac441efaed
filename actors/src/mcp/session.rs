//! Session internals: transport choice, initialize, paginated listings.
//!
//! Decisions worth knowing:
//! - Every tool entry of a listing is handed on, however broken: the
//!   engine validates and reports them (`crate::tools`), so one broken
//!   entry never hides a server's other tools and none is dropped unseen.
//! - `tools/list` is always called; "method not found" from a server that
//!   does not advertise `tools` means "no tools". `prompts/list` and
//!   `resources/list` are called only when advertised, and "method not
//!   found" from them means an empty list. They are best effort: any other
//!   failure (an error, a timeout, a listing over a cap) is reported in
//!   `Inventory::problems` and never fails or holds back the tools.
//! - What an upstream can make the engine hold is bounded: one listing
//!   (all its pages) by `discovery.max_tools` items and
//!   `discovery.max_listing_bytes` bytes, checked page by page so reading
//!   stops at the page that crosses a cap; `initialize`'s `serverInfo`,
//!   `capabilities` and `instructions` are clipped (see [`parse_initialize`]).

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::error::redact_url;
use super::jsonrpc::METHOD_NOT_FOUND;
use super::legacy_sse::LegacySse;
use super::stdio::Stdio;
use super::streamable_http::StreamableHttp;
use super::{
    ClientOptions, Inventory, McpError, Notification, ServerInfo, Session, Target, Tool,
    LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS,
};
use discovery_config::TransportKind;

/// The transport under a session. An enum, not a trait object: three known
/// kinds, and async methods stay plain.
pub(super) enum Transport {
    Streamable(StreamableHttp),
    Legacy(LegacySse),
    Stdio(Stdio),
}

pub(super) struct Inner {
    transport: Transport,
    opts: ClientOptions,
}

pub(super) async fn connect(target: &Target, opts: ClientOptions) -> Result<Session, McpError> {
    let transport = match target {
        Target::Http { url, transport } => connect_http(url, *transport, &opts).await?,
        Target::Stdio {
            command,
            args,
            env,
            env_inherit,
            cwd,
        } => Transport::Stdio(
            Stdio::connect(command, args, env, *env_inherit, cwd.as_deref(), &opts).await?,
        ),
    };
    let inner = Inner { transport, opts };
    let info = inner.info();
    tracing::debug!(
        server = %inner.opts.server_name,
        transport = info.transport,
        protocol_version = %info.protocol_version,
        "MCP session established"
    );
    Ok(Session {
        inner: Rc::new(inner),
    })
}

async fn connect_http(
    url: &url::Url,
    kind: TransportKind,
    opts: &ClientOptions,
) -> Result<Transport, McpError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(McpError::InvalidTarget(format!(
            "`{}` is not an http(s) URL",
            redact_url(url)
        )));
    }
    match kind {
        TransportKind::StreamableHttp => Ok(Transport::Streamable(
            StreamableHttp::connect(url, opts).await?,
        )),
        TransportKind::Sse => Ok(Transport::Legacy(LegacySse::connect(url, opts).await?)),
        TransportKind::Auto => match StreamableHttp::connect(url, opts).await {
            Ok(t) => {
                tracing::info!(
                    server = %opts.server_name,
                    url = %redact_url(url),
                    transport = "streamable-http",
                    "Transport chosen"
                );
                Ok(Transport::Streamable(t))
            }
            Err(e) if matches!(e.http_status(), Some(400 | 404 | 405)) => {
                tracing::info!(
                    server = %opts.server_name,
                    url = %redact_url(url),
                    status = e.http_status().unwrap_or_default(),
                    "Streamable HTTP initialize refused; trying legacy HTTP+SSE"
                );
                match LegacySse::connect(url, opts).await {
                    Ok(t) => {
                        tracing::info!(
                            server = %opts.server_name,
                            url = %redact_url(url),
                            transport = "sse",
                            "Transport chosen"
                        );
                        Ok(Transport::Legacy(t))
                    }
                    Err(legacy) => Err(McpError::FallbackFailed {
                        url: redact_url(url),
                        streamable: e.to_string(),
                        source: Box::new(legacy),
                    }),
                }
            }
            Err(e) => Err(e),
        },
        TransportKind::Stdio => Err(McpError::InvalidTarget(
            "an HTTP target cannot use the stdio transport".into(),
        )),
    }
}

/// `initialize` params: we offer the latest revision and no client
/// capabilities (we never sample, list roots or elicit).
pub(super) fn initialize_params() -> Value {
    serde_json::json!({
        "protocolVersion": LATEST_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {
            "name": "mcp-discovery",
            "version": env!("CARGO_PKG_VERSION"),
        },
    })
}

/// Most bytes of `instructions` kept (cut on a char boundary).
pub(crate) const MAX_INSTRUCTIONS_BYTES: usize = 64 * 1024;
/// Most characters of one string of `serverInfo` kept.
const SERVER_INFO_STRING_MAX: usize = 1024;
/// Most fields of `serverInfo` kept; longer field names are dropped.
const SERVER_INFO_FIELDS_MAX: usize = 32;
const SERVER_INFO_KEY_MAX: usize = 64;
/// A nested `serverInfo` value (e.g. `icons`) larger than this, serialized,
/// is dropped.
const SERVER_INFO_NESTED_MAX: usize = 4 * 1024;
/// `capabilities` larger than this, serialized, keep only their names.
const CAPABILITIES_MAX: usize = 64 * 1024;

/// Counts serialized bytes without keeping them.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn serialized_len(value: &Value) -> usize {
    let mut count = ByteCount(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// `text` cut to at most `max` bytes, on a char boundary.
fn clip_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// `serverInfo` with every string clipped, at most a few fields, and
/// nested values only when small: a few KiB at most, whatever was sent.
fn clip_server_info(value: Value) -> Value {
    let Value::Object(map) = value else {
        return Value::Null;
    };
    let clipped = map
        .into_iter()
        .filter(|(key, _)| key.len() <= SERVER_INFO_KEY_MAX)
        .filter_map(|(key, value)| {
            let value = match value {
                Value::String(s) => Value::String(super::error::clip(&s, SERVER_INFO_STRING_MAX)),
                v @ (Value::Array(_) | Value::Object(_)) => {
                    if serialized_len(&v) > SERVER_INFO_NESTED_MAX {
                        return None;
                    }
                    v
                }
                v => v,
            };
            Some((key, value))
        })
        .take(SERVER_INFO_FIELDS_MAX)
        .collect();
    Value::Object(clipped)
}

/// `capabilities` whole when small; else only the names (`has_capability`
/// still answers), each with an empty object.
fn clip_capabilities(value: Value) -> Value {
    match value {
        Value::Object(map) if serialized_len(&Value::Object(map.clone())) > CAPABILITIES_MAX => {
            // The capabilities the engine reads first, then others.
            const KNOWN: [&str; 3] = ["tools", "prompts", "resources"];
            let (known, other): (Vec<_>, Vec<_>) = map
                .into_iter()
                .filter(|(key, _)| key.len() <= SERVER_INFO_KEY_MAX)
                .partition(|(key, _)| KNOWN.contains(&key.as_str()));
            Value::Object(
                known
                    .into_iter()
                    .chain(other)
                    .take(SERVER_INFO_FIELDS_MAX)
                    .map(|(key, _)| (key, Value::Object(serde_json::Map::new())))
                    .collect(),
            )
        }
        Value::Object(map) => Value::Object(map),
        _ => Value::Object(serde_json::Map::new()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeResult {
    protocol_version: String,
    #[serde(default)]
    capabilities: Value,
    #[serde(default)]
    server_info: Value,
    #[serde(default)]
    instructions: Option<Value>,
}

/// Reads an `initialize` result; refuses a protocol version we do not
/// speak. What is kept is clipped: `instructions` to
/// [`MAX_INSTRUCTIONS_BYTES`], `serverInfo` to a few KiB, `capabilities`
/// to their names when large.
pub(super) fn parse_initialize(
    raw: &RawValue,
    transport: &'static str,
    target: &str,
) -> Result<ServerInfo, McpError> {
    let r: InitializeResult =
        serde_json::from_str(raw.get()).map_err(|e| McpError::MalformedResult {
            method: "initialize".into(),
            target: target.to_owned(),
            detail: e.to_string(),
        })?;
    if !SUPPORTED_PROTOCOL_VERSIONS.contains(&r.protocol_version.as_str()) {
        return Err(McpError::UnsupportedProtocolVersion {
            version: r.protocol_version,
        });
    }
    let instructions = match r.instructions {
        Some(Value::String(text)) => Some(Arc::from(clip_bytes(text, MAX_INSTRUCTIONS_BYTES))),
        _ => None,
    };
    Ok(ServerInfo {
        protocol_version: r.protocol_version,
        server_info: Arc::new(clip_server_info(r.server_info)),
        capabilities: Arc::new(clip_capabilities(r.capabilities)),
        instructions,
        transport,
    })
}

/// The pagination guard: a page cap and a repeated-cursor check. Pure, so
/// the rules are unit-tested apart from any transport.
#[derive(Debug)]
pub(crate) struct PageGuard {
    method: String,
    cap: u32,
    pages: u32,
    seen: HashSet<String>,
}

impl PageGuard {
    /// `cap` pages at most (a cap of 0 is treated as 1).
    pub(crate) fn new(method: &str, cap: u32) -> Self {
        Self {
            method: method.to_owned(),
            cap: cap.max(1),
            pages: 0,
            seen: HashSet::new(),
        }
    }

    /// Called after each page with its `nextCursor`: `Some(cursor)` to
    /// fetch the next page, `None` at the end. An absent or empty cursor
    /// ends the listing.
    pub(crate) fn after_page(
        &mut self,
        next_cursor: Option<String>,
    ) -> Result<Option<String>, McpError> {
        self.pages = self.pages.saturating_add(1);
        let Some(cursor) = next_cursor.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        if self.seen.contains(&cursor) {
            return Err(McpError::PaginationLoop {
                method: self.method.clone(),
                cursor,
            });
        }
        if self.pages >= self.cap {
            return Err(McpError::PageCapExceeded {
                method: self.method.clone(),
                cap: self.cap,
            });
        }
        self.seen.insert(cursor.clone());
        Ok(Some(cursor))
    }
}

#[derive(Clone, Copy, Debug)]
enum ListKind {
    Tools,
    Prompts,
    Resources,
}

impl ListKind {
    fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
        }
    }

    fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
        }
    }
}

/// One page of a list result. Items stay raw.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    tools: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    prompts: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    resources: Option<Vec<Box<RawValue>>>,
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
}

impl Page {
    fn take(self, kind: ListKind) -> Option<Vec<Box<RawValue>>> {
        match kind {
            ListKind::Tools => self.tools,
            ListKind::Prompts => self.prompts,
            ListKind::Resources => self.resources,
        }
    }
}

impl Inner {
    fn target(&self) -> String {
        match &self.transport {
            Transport::Streamable(t) => t.shown_url().to_owned(),
            Transport::Legacy(t) => t.shown_url().to_owned(),
            Transport::Stdio(t) => t.label().to_owned(),
        }
    }

    pub(super) fn info(&self) -> ServerInfo {
        match &self.transport {
            Transport::Streamable(t) => t.info(),
            Transport::Legacy(t) => t.info(),
            Transport::Stdio(t) => t.info(),
        }
    }

    pub(super) async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        match &self.transport {
            Transport::Streamable(t) => t.request(method, params).await,
            Transport::Legacy(t) => t.request(method, params).await,
            Transport::Stdio(t) => t.request(method, params).await,
        }
    }

    pub(super) async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        match &self.transport {
            Transport::Streamable(t) => t.notify(method, params).await,
            Transport::Legacy(t) => t.notify(method, params).await,
            Transport::Stdio(t) => t.notify(method, params).await,
        }
    }

    /// Every item of a paginated list, within the listing caps (checked
    /// at each page: reading stops at the page that crosses one).
    async fn list_all(&self, kind: ListKind) -> Result<Vec<Box<RawValue>>, McpError> {
        let method = kind.method();
        let mut guard = PageGuard::new(method, self.opts.max_pages);
        let mut cursor: Option<String> = None;
        let mut items = Vec::new();
        let mut bytes: u64 = 0;
        loop {
            let params = cursor.as_ref().map(|c| serde_json::json!({ "cursor": c }));
            let raw = self.request(method, params).await?;
            bytes = bytes.saturating_add(u64::try_from(raw.get().len()).unwrap_or(u64::MAX));
            if bytes > self.opts.max_listing_bytes {
                return Err(McpError::ListingTooLarge {
                    method: method.to_owned(),
                    cap: self.opts.max_listing_bytes,
                    bytes,
                });
            }
            let page: Page =
                serde_json::from_str(raw.get()).map_err(|e| McpError::MalformedResult {
                    method: method.to_owned(),
                    target: self.target(),
                    detail: e.to_string(),
                })?;
            let next = page.next_cursor.clone();
            let Some(page_items) = page.take(kind) else {
                return Err(McpError::MalformedResult {
                    method: method.to_owned(),
                    target: self.target(),
                    detail: format!("no `{}` array in the result", kind.key()),
                });
            };
            drop(raw);
            items.extend(page_items);
            if items.len() > usize::try_from(self.opts.max_items).unwrap_or(usize::MAX) {
                return Err(McpError::TooManyItems {
                    method: method.to_owned(),
                    items: kind.key(),
                    cap: self.opts.max_items,
                    listed: items.len(),
                });
            }
            match guard.after_page(next)? {
                Some(c) => cursor = Some(c),
                None => return Ok(items),
            }
        }
    }

    /// A listing where "method not found" means "none".
    async fn list_or_empty(&self, kind: ListKind) -> Result<Vec<Box<RawValue>>, McpError> {
        match self.list_all(kind).await {
            Err(McpError::JsonRpc {
                code: METHOD_NOT_FOUND,
                ..
            }) => Ok(Vec::new()),
            other => other,
        }
    }

    pub(super) async fn list_tools(&self) -> Result<Vec<Tool>, McpError> {
        let items = match self.list_all(ListKind::Tools).await {
            Err(McpError::JsonRpc {
                code: METHOD_NOT_FOUND,
                ..
            }) if !self.info().has_capability("tools") => Vec::new(),
            other => other?,
        };
        Ok(crate::tools::from_listing(items))
    }

    pub(super) async fn discover(&self) -> Result<Inventory, McpError> {
        let tools = self.list_tools().await?;
        Ok(Inventory {
            tools,
            ..self.list_extras().await
        })
    }

    /// Prompts and resources when advertised, best effort: a failure is a
    /// line in `problems`, the other list is still tried.
    pub(super) async fn list_extras(&self) -> Inventory {
        let info = self.info();
        let mut inventory = Inventory::default();
        for kind in [ListKind::Prompts, ListKind::Resources] {
            if !info.has_capability(kind.key()) {
                continue;
            }
            match self.list_or_empty(kind).await {
                Ok(items) => {
                    let items = items.into_iter().map(Arc::from).collect();
                    match kind {
                        ListKind::Prompts => inventory.prompts = items,
                        ListKind::Resources => inventory.resources = items,
                        ListKind::Tools => {}
                    }
                }
                Err(e) => {
                    tracing::debug!(
                        server = %self.opts.server_name,
                        method = kind.method(),
                        error = %crate::error_chain(&e),
                        "Listing failed; the tools are not affected."
                    );
                    inventory.problems.push(crate::error_chain(&e));
                }
            }
        }
        inventory
    }

    pub(super) fn take_notifications(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Notification>> {
        match &self.transport {
            Transport::Streamable(_) => None,
            Transport::Legacy(t) => t.take_notifications(),
            Transport::Stdio(t) => t.take_notifications(),
        }
    }

    pub(super) async fn open_push(
        &self,
        last_event_id: Option<&str>,
    ) -> Option<Result<super::PushOpened, McpError>> {
        match &self.transport {
            Transport::Streamable(t) => Some(t.open_push(last_event_id).await),
            Transport::Legacy(_) | Transport::Stdio(_) => None,
        }
    }

    pub(super) async fn answer_request(&self, id: &Value, method: &str) {
        if let Transport::Streamable(t) = &self.transport {
            t.answer_request(id, method).await
        }
    }

    pub(super) fn closed(&self) -> Option<McpError> {
        match &self.transport {
            Transport::Streamable(_) => None,
            Transport::Legacy(t) => t.closed(),
            Transport::Stdio(t) => t.closed(),
        }
    }

    pub(super) fn session_id(&self) -> Option<String> {
        match &self.transport {
            Transport::Streamable(t) => t.session_id(),
            Transport::Legacy(_) | Transport::Stdio(_) => None,
        }
    }

    pub(super) async fn close(&self) {
        match &self.transport {
            Transport::Streamable(t) => t.close().await,
            Transport::Legacy(t) => t.close().await,
            Transport::Stdio(t) => t.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_follows_cursors_to_the_end() {
        let mut g = PageGuard::new("tools/list", 10);
        assert_eq!(g.after_page(Some("a".into())).unwrap(), Some("a".into()));
        assert_eq!(g.after_page(Some("b".into())).unwrap(), Some("b".into()));
        assert_eq!(g.after_page(None).unwrap(), None);
    }

    #[test]
    fn guard_treats_empty_cursor_as_end() {
        let mut g = PageGuard::new("tools/list", 10);
        assert_eq!(g.after_page(Some(String::new())).unwrap(), None);
    }

    #[test]
    fn guard_names_the_repeated_cursor() {
        let mut g = PageGuard::new("tools/list", 10);
        g.after_page(Some("a".into())).unwrap();
        g.after_page(Some("b".into())).unwrap();
        let e = g.after_page(Some("a".into())).unwrap_err();
        assert!(matches!(&e, McpError::PaginationLoop { cursor, .. } if cursor == "a"));
        assert_eq!(
            e.to_string(),
            "`tools/list` returned cursor `a` a second time: the server's pagination loops"
        );
    }

    #[test]
    fn guard_names_the_cap() {
        let mut g = PageGuard::new("tools/list", 3);
        g.after_page(Some("1".into())).unwrap();
        g.after_page(Some("2".into())).unwrap();
        // The third page is the last allowed one; it still points further.
        let e = g.after_page(Some("3".into())).unwrap_err();
        assert!(
            matches!(e, McpError::PageCapExceeded { cap: 3, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("after 3 pages"));
        // Exactly `cap` pages that end cleanly are fine.
        let mut g = PageGuard::new("tools/list", 3);
        g.after_page(Some("1".into())).unwrap();
        g.after_page(Some("2".into())).unwrap();
        assert_eq!(g.after_page(None).unwrap(), None);
        // A cap of 0 means one page.
        let mut g = PageGuard::new("tools/list", 0);
        assert!(g.after_page(Some("x".into())).is_err());
    }

    #[test]
    fn initialize_result_is_checked() {
        let raw = RawValue::from_string(
            r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"s","version":"1"},"instructions":"hi"}"#
                .into(),
        )
        .unwrap();
        let info = parse_initialize(&raw, "stdio", "x").unwrap();
        assert_eq!(info.protocol_version, "2025-06-18");
        assert!(info.has_capability("tools"));
        assert!(!info.has_capability("prompts"));
        assert_eq!(info.instructions.as_deref(), Some("hi"));
        let raw =
            RawValue::from_string(r#"{"protocolVersion":"2099-01-01","capabilities":{}}"#.into())
                .unwrap();
        let e = parse_initialize(&raw, "stdio", "x").unwrap_err();
        assert!(matches!(e, McpError::UnsupportedProtocolVersion { .. }));
        let raw = RawValue::from_string(r#"{"capabilities":{}}"#.into()).unwrap();
        let e = parse_initialize(&raw, "stdio", "x").unwrap_err();
        assert!(
            e.to_string().contains("Malformed result of `initialize`"),
            "{e}"
        );
    }

    use super::super::connect;
    use super::super::test_server::{opts, start, Behavior};

    #[actix_web::test]
    async fn auto_falls_back_to_legacy_sse_on_405() {
        let server = start(Behavior {
            protocol_version: "2024-11-05",
            ..Behavior::default()
        })
        .await;
        let t = Target::Http {
            url: server.url("/sse"),
            transport: TransportKind::Auto,
        };
        let s = connect(&t, opts()).await.unwrap();
        assert_eq!(s.info().transport, "sse");
        assert_eq!(s.list_tools().await.unwrap().len(), 2);
    }

    #[actix_web::test]
    async fn auto_prefers_streamable_http() {
        let server = start(Behavior::default()).await;
        let t = Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::Auto,
        };
        let s = connect(&t, opts()).await.unwrap();
        assert_eq!(s.info().transport, "streamable-http");
    }

    #[actix_web::test]
    async fn auto_reports_both_failures() {
        let server = start(Behavior {
            post_status: Some(404),
            ..Behavior::default()
        })
        .await;
        let t = Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::Auto,
        };
        let e = connect(&t, opts()).await.err().unwrap();
        assert!(matches!(e, McpError::FallbackFailed { .. }), "{e:?}");
        let chain = e.chain();
        assert!(chain.contains("HTTP 404"), "{chain}");
        assert!(chain.contains("answered `GET` with HTTP 405"), "{chain}");
    }

    #[actix_web::test]
    async fn discover_lists_prompts_and_resources_only_when_advertised() {
        let server = start(Behavior {
            capabilities: serde_json::json!({"tools": {}, "prompts": {}, "resources": {}}),
            ..Behavior::default()
        })
        .await;
        let t = Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::StreamableHttp,
        };
        let s = connect(&t, opts()).await.unwrap();
        let inv = s.discover().await.unwrap();
        assert_eq!(inv.tools.len(), 2);
        assert_eq!(inv.prompts.len(), 1);
        assert_eq!(inv.resources.len(), 1);
        assert_eq!(inv.prompts[0].get(), r#"{"name":"p1"}"#);

        let server = start(Behavior::default()).await;
        let t = Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::StreamableHttp,
        };
        let s = connect(&t, opts()).await.unwrap();
        let inv = s.discover().await.unwrap();
        assert!(inv.prompts.is_empty() && inv.resources.is_empty());
        assert!(!server
            .methods()
            .iter()
            .any(|m| m == "prompts/list" || m == "resources/list"));
    }

    #[test]
    fn initialize_result_is_clipped() {
        let huge = "é".repeat(200_000);
        let icons: Vec<Value> = (0..1000)
            .map(|i| serde_json::json!({"src": format!("data:image/png;base64,{i:0>100}")}))
            .collect();
        let caps: serde_json::Map<String, Value> = (0..5000)
            .map(|i| (format!("cap{i}"), serde_json::json!({"x": "y".repeat(20)})))
            .chain([("tools".to_owned(), serde_json::json!({}))])
            .collect();
        let result = serde_json::json!({
            "protocolVersion": "2025-06-18",
            "capabilities": caps,
            "serverInfo": {"name": huge, "version": "1", "icons": icons, "small": [1, 2]},
            "instructions": huge,
        });
        let raw = RawValue::from_string(result.to_string()).unwrap();
        let info = parse_initialize(&raw, "stdio", "x").unwrap();
        let instructions = info.instructions.as_deref().unwrap();
        assert!(instructions.len() <= MAX_INSTRUCTIONS_BYTES);
        assert!(instructions.len() > MAX_INSTRUCTIONS_BYTES - 4);
        assert!(
            serialized_len(&info.server_info) < 8 * 1024,
            "{}",
            serialized_len(&info.server_info)
        );
        assert_eq!(info.server_info["version"], "1");
        assert_eq!(info.server_info["small"], serde_json::json!([1, 2]));
        assert!(
            info.server_info.get("icons").is_none(),
            "a large nested value is dropped"
        );
        assert!(serialized_len(&info.capabilities) <= CAPABILITIES_MAX);
        assert!(info.has_capability("tools"), "names survive");
        // Clones share, not copy.
        let again = info.clone();
        assert!(Arc::ptr_eq(&info.server_info, &again.server_info));
    }

    #[actix_web::test]
    async fn listing_caps_stop_reading_at_the_page_that_crosses_them() {
        let server = start(Behavior {
            pages: 5,
            tools_per_page: 2,
            ..Behavior::default()
        })
        .await;
        let t = Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::StreamableHttp,
        };
        let s = connect(
            &t,
            ClientOptions {
                max_items: 5,
                ..opts()
            },
        )
        .await
        .unwrap();
        let e = s.list_tools().await.unwrap_err();
        assert!(
            matches!(
                e,
                McpError::TooManyItems {
                    cap: 5,
                    listed: 6,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "`tools/list` exceeded discovery.max_tools (5): 6 tools listed. Hint: raise discovery.max_tools if the server really offers that many"
        );
        let pages = |server: &super::super::test_server::TestServer| {
            server
                .methods()
                .iter()
                .filter(|m| *m == "tools/list")
                .count()
        };
        assert_eq!(pages(&server), 3, "no page read after the cap");

        let server = start(Behavior {
            pages: 5,
            pad_bytes: 1000,
            ..Behavior::default()
        })
        .await;
        let t = Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::StreamableHttp,
        };
        let s = connect(
            &t,
            ClientOptions {
                max_listing_bytes: 2500,
                ..opts()
            },
        )
        .await
        .unwrap();
        let e = s.list_tools().await.unwrap_err();
        assert!(
            matches!(e, McpError::ListingTooLarge { cap: 2500, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("discovery.max_listing_bytes (2500 bytes)"),
            "{e}"
        );
        assert_eq!(pages(&server), 3);
    }

    #[actix_web::test]
    async fn failing_prompts_or_resources_do_not_fail_the_discovery() {
        let server = start(Behavior {
            capabilities: serde_json::json!({"tools": {}, "prompts": {}, "resources": {}}),
            hang_on: Some("resources/list"),
            ..Behavior::default()
        })
        .await;
        let t = Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::StreamableHttp,
        };
        let s = connect(
            &t,
            ClientOptions {
                request_timeout: std::time::Duration::from_millis(300),
                ..opts()
            },
        )
        .await
        .unwrap();
        let inv = s.discover().await.unwrap();
        assert_eq!(inv.tools.len(), 2);
        assert_eq!(inv.prompts.len(), 1, "the other list is still read");
        assert!(inv.resources.is_empty());
        assert_eq!(inv.problems.len(), 1, "{:?}", inv.problems);
        assert!(
            inv.problems[0].contains("No response to `resources/list`"),
            "{:?}",
            inv.problems
        );
    }

    #[actix_web::test]
    async fn non_http_url_is_an_invalid_target() {
        let t = Target::Http {
            url: url::Url::parse("ftp://127.0.0.1/x").unwrap(),
            transport: TransportKind::Auto,
        };
        let e = connect(&t, opts()).await.err().unwrap();
        assert!(matches!(e, McpError::InvalidTarget(_)), "{e:?}");
    }
}
