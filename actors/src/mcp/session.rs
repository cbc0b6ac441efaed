//! Session internals: paginated listings over whichever era
//! ([`super::era`]) the session speaks.
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
//!   stops at the page that crosses a cap; what `initialize` or
//!   `server/discover` said about the server is clipped (`era::info`).

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::cache::CacheHint;
use super::era::{self, Era, EraKind};
use super::jsonrpc::METHOD_NOT_FOUND;
use super::{ClientOptions, Inventory, McpError, Notification, ServerInfo, Session, Target, Tool};

pub(super) struct Inner {
    pub(super) era: Era,
    opts: ClientOptions,
}

pub(super) async fn connect(
    target: &Target,
    opts: ClientOptions,
    known: Option<EraKind>,
) -> Result<Session, McpError> {
    let era = era::negotiate(target, &opts, known).await?;
    let inner = Inner { era, opts };
    let info = inner.info();
    tracing::debug!(
        server = %inner.opts.server_name,
        transport = info.transport,
        era = inner.era.kind().as_str(),
        protocol_version = %info.protocol_version,
        "MCP session established"
    );
    Ok(Session {
        inner: Rc::new(inner),
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
    /// Cache hints and `resultType` (2026-07-28; see `super::cache`).
    #[serde(default, rename = "ttlMs")]
    ttl_ms: Option<Value>,
    #[serde(default, rename = "cacheScope")]
    cache_scope: Option<Value>,
    #[serde(default, rename = "resultType")]
    result_type: Option<Value>,
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
        self.era.wire().target().to_owned()
    }

    pub(super) fn info(&self) -> ServerInfo {
        self.era.info()
    }

    pub(super) fn era(&self) -> EraKind {
        self.era.kind()
    }

    pub(super) async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        self.era.request(method, params).await
    }

    pub(super) async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        self.era.notify(method, params).await
    }

    /// Every item of a paginated list, within the listing caps (checked
    /// at each page: reading stops at the page that crosses one), and on
    /// the modern wire the cache hints of all its pages combined (an
    /// unknown `resultType` on any page fails the listing).
    async fn list_all(
        &self,
        kind: ListKind,
    ) -> Result<(Vec<Box<RawValue>>, Option<CacheHint>), McpError> {
        let method = kind.method();
        let mut guard = PageGuard::new(method, self.opts.max_pages);
        let mut cursor: Option<String> = None;
        let mut items = Vec::new();
        let mut bytes: u64 = 0;
        let modern = self.era() == EraKind::Modern;
        let mut hint: Option<CacheHint> = None;
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
            if modern {
                super::cache::check_result_type(page.result_type.as_ref()).map_err(|detail| {
                    McpError::MalformedResult {
                        method: method.to_owned(),
                        target: self.target(),
                        detail,
                    }
                })?;
                let this = CacheHint::of(page.ttl_ms.as_ref(), page.cache_scope.as_ref());
                hint = CacheHint::merge(hint, Some(this));
            }
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
                None => return Ok((items, hint)),
            }
        }
    }

    /// A listing where "method not found" means "none".
    async fn list_or_empty(
        &self,
        kind: ListKind,
    ) -> Result<(Vec<Box<RawValue>>, Option<CacheHint>), McpError> {
        match self.list_all(kind).await {
            Err(McpError::JsonRpc {
                code: METHOD_NOT_FOUND,
                ..
            }) => Ok((Vec::new(), None)),
            other => other,
        }
    }

    pub(super) async fn list_tools(&self) -> Result<Vec<Tool>, McpError> {
        Ok(self.list_tools_hinted().await?.0)
    }

    /// The tools and the cache hints of their listing (`None` on the 2025
    /// wire).
    pub(super) async fn list_tools_hinted(
        &self,
    ) -> Result<(Vec<Tool>, Option<CacheHint>), McpError> {
        let (items, hint) = match self.list_all(ListKind::Tools).await {
            Err(McpError::JsonRpc {
                code: METHOD_NOT_FOUND,
                ..
            }) if !self.info().has_capability("tools") => (Vec::new(), None),
            other => other?,
        };
        Ok((crate::tools::from_listing(items), hint))
    }

    pub(super) async fn discover(&self) -> Result<Inventory, McpError> {
        let (tools, hint) = self.list_tools_hinted().await?;
        let extras = self.list_extras().await;
        Ok(Inventory {
            tools,
            cache: CacheHint::merge(hint, extras.cache),
            ..extras
        })
    }

    /// The hints of `server/discover` (modern sessions only).
    pub(super) fn discover_hint(&self) -> Option<CacheHint> {
        self.era.discover_hint()
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
                Ok((items, hint)) => {
                    inventory.cache = CacheHint::merge(inventory.cache, hint);
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

    /// `tools/call` of a listed tool, refused (no request sent) when the
    /// tool fails validation (`crate::tools::check_tool`): the spec says
    /// such a tool is dropped, so it is never called.
    pub(super) async fn call_tool(
        &self,
        tool: &Tool,
        arguments: Value,
        meta: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        let invalid = |reason: String| McpError::InvalidTool {
            tool: tool.name.clone(),
            reason,
        };
        crate::tools::check_tool(&tool.raw).map_err(invalid)?;
        let schema = serde_json::from_str::<Value>(tool.raw.get())
            .map_err(|e| invalid(e.to_string()))?
            .get_mut("inputSchema")
            .map(Value::take)
            .unwrap_or(Value::Null);
        let mut params = serde_json::json!({ "name": tool.name, "arguments": arguments });
        if let Some(meta) = meta {
            params["_meta"] = meta;
        }
        self.era.call_tool(params, &schema).await
    }

    pub(super) fn take_notifications(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Notification>> {
        self.era.wire().take_notifications()
    }

    pub(super) async fn open_push(
        &self,
        last_event_id: Option<&str>,
    ) -> Option<Result<super::PushOpened, McpError>> {
        self.era.open_push(last_event_id).await
    }

    pub(super) async fn answer_request(&self, id: &Value, method: &str, params: Option<Value>) {
        self.era.answer_request(id, method, params).await
    }

    pub(super) fn closed(&self) -> Option<McpError> {
        self.era.wire().closed()
    }

    pub(super) fn session_id(&self) -> Option<String> {
        self.era.session_id()
    }

    pub(super) async fn close(&self) {
        self.era.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::super::era::info::{serialized_len, CAPABILITIES_MAX, MAX_INSTRUCTIONS_BYTES};
    use super::super::era::legacy::parse_initialize;
    use super::*;
    use discovery_config::TransportKind;

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
