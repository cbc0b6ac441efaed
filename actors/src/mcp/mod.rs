//! MCP client (upstream side): plain async code over awc, no actors inside.
//!
//! [`connect`] opens a session over the transport a [`Target`] names, in the
//! era (2025 handshake or 2026-07-28 stateless) [`era`] negotiates; a [`Session`] is a cheap `Clone` handle
//! (`Rc` inside: it lives on one arbiter thread, like awc itself).
//!
//! Submodules: `jsonrpc` (envelopes, ids), `sse` (incremental SSE parser),
//! `streamable_http`, `legacy_sse`, `stdio` (transports: they move JSON-RPC
//! messages and know no handshake), `era` (the 2025 handshake and session,
//! the 2026-07-28 `_meta` and headers, and the negotiation between them),
//! `http` (per-thread awc clients), `error`. See ADR 0015.

pub mod auth;
pub mod cache;
pub mod call;
pub mod era;
pub mod error;
/// Property tests (the stable-toolchain fuzz targets of the parsers).
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod jsonrpc;
pub mod legacy_sse;
pub mod relay;
pub mod sse;
pub mod stdio;
pub(crate) mod stream_http;
pub mod streamable_http;
#[cfg(test)]
pub(crate) mod test_server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::Value;
use url::Url;

pub use error::McpError;

/// Protocol revisions, newest first. We offer the first; we accept any.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[&str] =
    &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
pub const LATEST_PROTOCOL_VERSION: &str = "2025-11-25";

/// What to connect to. `Debug` shows no argument and no `env` value: they
/// may be secrets.
#[derive(Clone)]
pub enum Target {
    Http {
        url: Url,
        /// `Auto`, `StreamableHttp` or `Sse`.
        transport: discovery_config::TransportKind,
    },
    Stdio {
        command: String,
        args: Vec<String>,
        /// Set on top of the allowlisted environment (see `stdio`).
        env: IndexMap<String, String>,
        /// Start from the whole environment of this process instead.
        env_inherit: bool,
        cwd: Option<PathBuf>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Http { url, transport } => f
                .debug_struct("Http")
                .field("url", &error::redact_url(url))
                .field("transport", transport)
                .finish(),
            Target::Stdio {
                command,
                args,
                env,
                env_inherit,
                cwd,
            } => f
                .debug_struct("Stdio")
                .field("command", &crate::status::program_label(command))
                .field("args", &args.len())
                .field("env", &env.keys().collect::<Vec<_>>())
                .field("env_inherit", env_inherit)
                .field("cwd", &cwd.as_ref().map(|_| "[set]"))
                .finish(),
        }
    }
}

/// Limits and extras for one session. Every request has its own timeout.
/// `Debug` shows header names only.
#[derive(Clone)]
pub struct ClientOptions {
    /// Used in stdio stderr log lines and tracing fields.
    pub server_name: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response_bytes: usize,
    pub max_pages: u32,
    /// Caps on one whole listing (all pages): items and bytes.
    pub max_items: u32,
    pub max_listing_bytes: u64,
    /// Extra headers on every HTTP request (static headers and auth). Their
    /// values are secrets: never logged.
    pub headers: Vec<(String, String)>,
    /// An OAuth2 access token, read at every HTTP request (so a refreshed
    /// token is used at once, also by the push stream).
    pub bearer: Option<BearerSlot>,
    /// `auto` (negotiate the era) or a pinned revision.
    pub protocol: discovery_config::ProtocolChoice,
}

/// The current access token of a session, shared between the token's owner
/// (which replaces it when it refreshes) and the transport (which reads it
/// for every request). One arbiter thread: `Rc`, no lock.
#[derive(Clone, Default)]
pub struct BearerSlot(std::rc::Rc<std::cell::RefCell<Option<String>>>);

impl BearerSlot {
    pub fn set(&self, token: Option<String>) {
        *self.0.borrow_mut() = token;
    }

    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }
}

impl std::fmt::Debug for BearerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.0.borrow().is_some() {
            "[redacted]"
        } else {
            "empty"
        };
        write!(f, "BearerSlot({state})")
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            server_name,
            request_timeout,
            connect_timeout,
            max_response_bytes,
            max_pages,
            max_items,
            max_listing_bytes,
            headers,
            bearer,
            protocol,
        } = self;
        f.debug_struct("ClientOptions")
            .field("server_name", server_name)
            .field("request_timeout", request_timeout)
            .field("connect_timeout", connect_timeout)
            .field("max_response_bytes", max_response_bytes)
            .field("max_pages", max_pages)
            .field("max_items", max_items)
            .field("max_listing_bytes", max_listing_bytes)
            .field(
                "headers",
                &headers
                    .iter()
                    .map(|(name, _)| (name.as_str(), "[redacted]"))
                    .collect::<Vec<_>>(),
            )
            .field("bearer", bearer)
            .field("protocol", protocol)
            .finish()
    }
}

impl ClientOptions {
    pub fn from_settings(server_name: &str, s: &discovery_config::DiscoverySettings) -> Self {
        Self {
            server_name: server_name.to_owned(),
            request_timeout: s.request_timeout,
            connect_timeout: s.connect_timeout,
            max_response_bytes: usize::try_from(s.max_response_bytes).unwrap_or(usize::MAX),
            max_pages: s.max_pages,
            max_items: s.max_tools,
            max_listing_bytes: s.max_listing_bytes,
            headers: Vec::new(),
            bearer: None,
            protocol: s.protocol,
        }
    }
}

/// What the server told us in `initialize`, clipped to bounded sizes
/// (see `era::info`) and shared: every clone (each
/// `Session::info()`, each server view) is a pointer copy, not a copy of
/// what the upstream sent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServerInfo {
    pub protocol_version: String,
    /// `serverInfo` (name, version, title, ...): strings clipped, large
    /// nested values dropped.
    pub server_info: Arc<Value>,
    /// Kept whole when small, else only the capability names.
    pub capabilities: Arc<Value>,
    /// Clipped to `era::MAX_INSTRUCTIONS_BYTES`.
    pub instructions: Option<Arc<str>>,
    /// The transport actually in use: `streamable-http`, `sse` or `stdio`.
    pub transport: &'static str,
}

impl ServerInfo {
    /// Before `initialize` has answered.
    pub fn unknown(transport: &'static str) -> Self {
        Self {
            protocol_version: String::new(),
            server_info: Arc::new(Value::Null),
            capabilities: Arc::new(Value::Null),
            instructions: None,
            transport,
        }
    }

    /// Whether `capabilities.<name>` is present (e.g. "tools", "prompts").
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).is_some_and(|v| !v.is_null())
    }
}

/// One upstream tool: raw JSON kept verbatim (unknown fields preserved); only
/// `name` is read.
#[derive(Clone, Debug)]
pub struct Tool {
    pub name: String,
    pub raw: Arc<RawValue>,
}

/// Everything one discovery round found.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub tools: Vec<Tool>,
    /// Raw prompt objects; empty when not advertised.
    pub prompts: Vec<Arc<RawValue>>,
    /// Raw resource objects; empty when not advertised.
    pub resources: Vec<Arc<RawValue>>,
    /// Why prompts or resources are missing (their listing failed, timed
    /// out or was over a cap). Best effort: never a failure of the tools.
    pub problems: Vec<String>,
    /// The cache hints of the listings in it, combined (`None` on the 2025
    /// wire, or when nothing was listed).
    pub cache: Option<cache::CacheHint>,
}

/// A server-sent notification (e.g. `notifications/tools/list_changed`)
/// that arrived on the transport itself (stdio stdout, legacy SSE stream).
#[derive(Clone, Debug)]
pub struct Notification {
    pub method: String,
    pub params: Option<Value>,
}

/// What opening the push stream (the 2025 GET stream, or a 2026-07-28
/// `subscriptions/listen`) gave.
pub enum PushOpened {
    Stream(Box<PushEvents>),
    /// The server offers no push stream (polling covers): GET 405; for a
    /// listen, 405, 404 or JSON-RPC -32601.
    Unsupported,
}

/// Why a push stream stopped delivering.
#[derive(Debug, thiserror::Error)]
pub enum PushStop {
    #[error("the server ended the stream")]
    End,
    #[error("the stream broke: {0}")]
    Broken(String),
    #[error("an event exceeds the limit of {limit} bytes (discovery.max_response_bytes)")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Malformed(McpError),
    /// A listen stream ended with its graceful result (`resultType:
    /// complete`).
    #[error("the server completed the subscription")]
    Complete,
    /// A listen stream's request was answered with a JSON-RPC error.
    #[error("{0}")]
    Rejected(McpError),
}

/// An open push stream: JSON-RPC messages, event by event.
pub struct PushEvents {
    source: Source,
    shown: String,
    session_id: Option<String>,
    /// A listen stream: the JSON-RPC id of its `subscriptions/listen`
    /// request, which every frame must carry as its subscription id.
    subscription: Option<u64>,
}

/// Where a push stream's messages come from.
enum Source {
    /// An SSE body (the GET stream, an HTTP listen).
    Sse(Box<http::EventStream>),
    /// A listen on a stdio channel: frames demultiplexed by the reader.
    Stdio(stdio::StdioListen),
}

impl PushEvents {
    /// A listen on a stdio channel.
    pub(crate) fn stdio_listen(listen: stdio::StdioListen, shown: &str) -> Self {
        Self {
            subscription: Some(listen.id()),
            source: Source::Stdio(listen),
            shown: shown.to_owned(),
            session_id: None,
        }
    }
}

/// The `_meta` key a listen stream's frames are tagged with.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

impl PushEvents {
    /// The messages of the next event (priming events are skipped). On a
    /// listen stream only the frames tagged with its subscription id are
    /// kept, and the response to the listen request ends it.
    pub async fn next_messages(&mut self) -> Result<Vec<jsonrpc::Incoming>, PushStop> {
        let stream = match &mut self.source {
            Source::Sse(stream) => stream,
            Source::Stdio(listen) => {
                let frame = listen.next().await.ok_or(PushStop::End)?;
                return listen_frames(vec![frame], listen.id());
            }
        };
        let event = stream.next_event().await.map_err(|stop| match stop {
            http::StreamStop::End => PushStop::End,
            http::StreamStop::Broken(e) => PushStop::Broken(e),
            http::StreamStop::TooLarge { limit } => PushStop::TooLarge { limit },
        })?;
        let context = format!("an event of the push stream from {}", self.shown);
        let messages = jsonrpc::parse_messages(event.data.as_bytes(), &context)
            .map_err(PushStop::Malformed)?;
        match self.subscription {
            None => Ok(messages),
            Some(ours) => listen_frames(messages, ours),
        }
    }

    /// Whether this is a `subscriptions/listen` stream.
    pub fn is_listen(&self) -> bool {
        self.subscription.is_some()
    }

    /// Bytes received so far (comments and priming events included), for
    /// the idle watchdog.
    pub fn received(&self) -> std::rc::Rc<std::cell::Cell<u64>> {
        match &self.source {
            Source::Sse(stream) => stream.received(),
            Source::Stdio(_) => std::rc::Rc::default(),
        }
    }

    /// Whether silence on it means a hang (HTTP). A stdio listen shares
    /// the channel, whose child the transport watches: a quiet server is
    /// not a hung one.
    pub fn watched(&self) -> bool {
        matches!(self.source, Source::Sse(_))
    }

    /// The id to resume from with `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        match &self.source {
            Source::Sse(stream) => stream.last_event_id(),
            Source::Stdio(_) => "",
        }
    }

    /// The server's `retry` advice, if any.
    pub fn retry(&self) -> Option<Duration> {
        match &self.source {
            Source::Sse(stream) => stream.retry(),
            Source::Stdio(_) => None,
        }
    }

    /// The session this stream belongs to.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

/// The frames of a listen stream that belong to subscription `ours`
/// (others are dropped: several subscriptions may share a channel, and an
/// untagged frame is nobody's); the response to the listen request itself
/// ends the stream, gracefully or with its error.
fn listen_frames(
    messages: Vec<jsonrpc::Incoming>,
    ours: u64,
) -> Result<Vec<jsonrpc::Incoming>, PushStop> {
    let mut kept = Vec::with_capacity(messages.len());
    for message in messages {
        match message {
            jsonrpc::Incoming::Response { id, reply } if jsonrpc::id_matches(&id, ours) => {
                return match reply {
                    Ok(_) => Err(PushStop::Complete),
                    Err(e) => Err(PushStop::Rejected(e.into_mcp("subscriptions/listen"))),
                };
            }
            jsonrpc::Incoming::Notification { method, params } => {
                let tag = params
                    .as_ref()
                    .and_then(|p| p.get("_meta"))
                    .and_then(|m| m.get(SUBSCRIPTION_ID));
                if tag.is_some_and(|t| jsonrpc::id_matches(t, ours)) {
                    kept.push(jsonrpc::Incoming::Notification { method, params });
                } else {
                    tracing::debug!(
                        method = %method,
                        "Ignored a frame of another subscription on the listen stream."
                    );
                }
            }
            other @ jsonrpc::Incoming::Request { .. } => kept.push(other),
            jsonrpc::Incoming::Response { .. } => {
                tracing::debug!("Ignored a response to another request on the listen stream.");
            }
        }
    }
    Ok(kept)
}

/// Runs one request's future under its own timeout; a timeout names the
/// method and the target (every transport's requests go through this).
pub(crate) async fn within<T>(
    after: Duration,
    method: &str,
    target: &str,
    fut: impl std::future::Future<Output = Result<T, McpError>>,
) -> Result<T, McpError> {
    match tokio::time::timeout(after, fut).await {
        Ok(result) => result,
        Err(_) => Err(McpError::Timeout {
            method: method.to_owned(),
            target: target.to_owned(),
            after,
        }),
    }
}

/// A live MCP session with one upstream. Cheap to clone (`Rc` inside): the
/// owning actor clones it into each spawned request future.
#[derive(Clone)]
pub struct Session {
    inner: std::rc::Rc<session::Inner>,
}

mod session;

/// Opens a session: negotiates the era (`opts.protocol`; see [`era`]), then
/// for a 2025 server `initialize` as before (for `Auto`, POST initialize to
/// the URL and fall back to legacy HTTP+SSE on 400/404/405).
pub async fn connect(target: &Target, opts: ClientOptions) -> Result<Session, McpError> {
    session::connect(target, opts, None).await
}

/// [`connect`], knowing the era an earlier session of this upstream spoke:
/// a legacy verdict skips the `server/discover` probe (the owner forgets
/// the verdict when a connect fails, so the next one probes again).
pub async fn connect_known(
    target: &Target,
    opts: ClientOptions,
    known: Option<era::EraKind>,
) -> Result<Session, McpError> {
    session::connect(target, opts, known).await
}

impl Session {
    /// What `initialize` (or `server/discover`) returned (of the current
    /// session incarnation).
    pub fn info(&self) -> ServerInfo {
        self.inner.info()
    }

    /// The era this session speaks.
    pub fn era(&self) -> era::EraKind {
        self.inner.era()
    }

    /// One JSON-RPC request with its own timeout; the raw `result`.
    /// Streamable HTTP: on 404 (or 400 naming a missing/invalid session) to a
    /// request that carried a session id, re-initializes once and retries.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        self.inner.request(method, params).await
    }

    /// Calls `tool` (as listed by this session's server) with `arguments`
    /// and, when given, `meta` as the request's `_meta` (the 2026-07-28
    /// era adds its own keys to it). On the 2026-07-28 wire the request
    /// carries `Mcp-Name` and the `Mcp-Param-*` headers the tool's
    /// `x-mcp-header` annotations name. Bounded like every request
    /// (`request_timeout`, `max_response_bytes`). The raw `result`,
    /// verbatim; a tool that fails validation is refused with
    /// [`McpError::InvalidTool`] before anything is sent.
    pub async fn call_tool(
        &self,
        tool: &Tool,
        arguments: Value,
        meta: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        self.inner.call_tool(tool, arguments, meta).await
    }

    /// A JSON-RPC notification (no response expected; 202 over HTTP).
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        self.inner.notify(method, params).await
    }

    /// `tools/list` followed through `nextCursor` to the end, with the page
    /// cap and the repeated-cursor guard.
    pub async fn list_tools(&self) -> Result<Vec<Tool>, McpError> {
        self.inner.list_tools().await
    }

    /// `list_tools` with the cache hints of the listing (2026-07-28;
    /// `None` on the 2025 wire).
    pub async fn list_tools_hinted(
        &self,
    ) -> Result<(Vec<Tool>, Option<cache::CacheHint>), McpError> {
        self.inner.list_tools_hinted().await
    }

    /// The cache hints of `server/discover` (modern sessions only).
    pub fn discover_hint(&self) -> Option<cache::CacheHint> {
        self.inner.discover_hint()
    }

    /// Tools, plus prompts and resources when the server advertises them
    /// (best effort: their failure is in `problems`, never an error).
    pub async fn discover(&self) -> Result<Inventory, McpError> {
        self.inner.discover().await
    }

    /// Prompts and resources only, best effort (`tools` stays empty): the
    /// upstream actor lists them after its tools are published, so they can
    /// never hold the tools back.
    pub async fn list_extras(&self) -> Inventory {
        self.inner.list_extras().await
    }

    /// Notifications that arrive on the transport itself (stdio, legacy
    /// SSE). Some only once; None for Streamable HTTP (its push stream is a
    /// separate child actor).
    pub fn take_notifications(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Notification>> {
        self.inner.take_notifications()
    }

    /// Opens the optional GET push stream of a Streamable HTTP session
    /// (None for the other transports, whose stream is the transport).
    /// `last_event_id` resumes a dropped stream.
    pub async fn open_push_stream(
        &self,
        last_event_id: Option<&str>,
    ) -> Option<Result<PushOpened, McpError>> {
        self.inner.open_push(last_event_id).await
    }

    /// Answers a server-to-client request (e.g. `ping`) that arrived on the
    /// push stream: by POST, best effort (a failure is logged). Sampling,
    /// elicitation and roots go to the client of the one call in flight on
    /// the session, if exactly one is (ADR 0024); the answer then comes
    /// later, from a task of its own.
    pub async fn answer_server_request(&self, id: &Value, method: &str, params: Option<Value>) {
        self.inner.answer_request(id, method, params).await
    }

    /// Why a stream transport (stdio, legacy SSE) closed, once it has: the
    /// stdio exit status or the stream's end. None while open, and always
    /// for Streamable HTTP (each request has its own connection).
    pub fn closed(&self) -> Option<McpError> {
        self.inner.closed()
    }

    /// Whether both handles are the same session (not merely equal ids).
    pub fn same_as(&self, other: &Session) -> bool {
        std::rc::Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Current `Mcp-Session-Id`, if the server gave one.
    pub fn session_id(&self) -> Option<String> {
        self.inner.session_id()
    }

    /// Ends the session: DELETE for Streamable HTTP (best effort, short
    /// timeout), close the stream for legacy SSE, kill the stdio child.
    pub async fn close(&self) {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(text: &str) -> Vec<jsonrpc::Incoming> {
        jsonrpc::parse_messages(text.as_bytes(), "test").unwrap()
    }

    fn methods(kept: &[jsonrpc::Incoming]) -> Vec<&str> {
        kept.iter()
            .filter_map(|m| match m {
                jsonrpc::Incoming::Notification { method, .. } => Some(method.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_listen_keeps_only_its_own_frames() {
        let batch = r#"[
            {"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":7}}},
            {"jsonrpc":"2.0","method":"notifications/prompts/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":"7"}}},
            {"jsonrpc":"2.0","method":"notifications/tools/list_changed"},
            {"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":8}}},
            {"jsonrpc":"2.0","id":3,"result":{}}
        ]"#;
        let kept = listen_frames(frames(batch), 7).unwrap();
        assert_eq!(
            methods(&kept),
            [
                "notifications/tools/list_changed",
                "notifications/prompts/list_changed"
            ]
        );
    }

    #[test]
    fn the_listen_response_ends_the_stream() {
        let done = r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete","_meta":{"io.modelcontextprotocol/subscriptionId":7}}}"#;
        assert!(matches!(
            listen_frames(frames(done), 7),
            Err(PushStop::Complete)
        ));
        let refused = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}"#;
        assert!(matches!(
            listen_frames(frames(refused), 7),
            Err(PushStop::Rejected(McpError::JsonRpc {
                code: jsonrpc::METHOD_NOT_FOUND,
                ..
            }))
        ));
    }
}
