//! A test MCP upstream: a real actix-web HTTP server on 127.0.0.1 that speaks
//! MCP Streamable HTTP (and, as an option, the 2024-11-05 HTTP+SSE transport)
//! and can be told to misbehave in every way the engine must survive.
//!
//! No dependency on the test harness: the e2e test binary declares it through
//! `tests/support/mod.rs`, and the load harness includes it with
//! `#[path = "../tests/support/upstream.rs"] mod upstream;`.
//!
//! Each server runs on its own thread with its own actix `System`, so it keeps
//! answering while the test's runtime is busy or blocked, like a real remote
//! server. Behaviour lives behind a shared handle and can be changed while the
//! server runs:
//!
//! ```ignore
//! let up = TestUpstream::builder().tools(250).page_size(100).sse().start()?;
//! // ... point the engine at up.url() ...
//! up.set_fault(Some(Fault::Status(500)));
//! up.expire_sessions();
//! assert_eq!(up.requests("initialize"), 1);
//! up.stop().await;
//! ```
//!
//! As an OAuth-protected resource ([`UpstreamBuilder::require_bearer`]), it
//! demands a bearer token from a [`TokenStore`] on every request, answers
//! 401 with the MCP authorization spec's `WWW-Authenticate` challenge and
//! serves its protected resource metadata (see [`BearerAuth`]); the test
//! token endpoint in `token_endpoint.rs` issues into the same store.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Protocol revisions the test upstream accepts, newest first. An
/// `initialize` asking for one of them gets it back; any other gets the first.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 4] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The `nextCursor` returned forever when [`UpstreamBehavior::cursor_loop`] is set.
pub const LOOP_CURSOR: &str = "loop-cursor";

/// Interval of the `: keepalive` comments of [`Fault::EndlessSse`].
const ENDLESS_KEEPALIVE: Duration = Duration::from_millis(100);
/// Size of one chunk of an oversized body.
const OVERSIZED_CHUNK: usize = 64 * 1024;
/// Largest request body the upstream reads.
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;
/// How long `start()` retries binding an explicit port that is still in use
/// (a server on that port was just stopped).
const REBIND_DEADLINE: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------ behaviour

/// How a successful POST is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMode {
    /// `Content-Type: application/json`, the message as the body.
    Json,
    /// `Content-Type: text/event-stream`: a priming event (an `id` and empty
    /// data), then the response as an `event: message`.
    Sse,
}

/// Shape of SSE answers, to exercise the client's parser over a real socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseStyle {
    /// Send the body in chunks of this many bytes, 1 ms apart.
    pub chunk_size: Option<usize>,
    /// Pretty-print the JSON over several `data:` lines.
    pub multiline: bool,
    /// End lines with CRLF instead of LF.
    pub crlf: bool,
    /// Add `retry: N` to the priming event.
    pub retry_ms: Option<u64>,
    /// Send only the priming event, then end the stream: the response waits
    /// for a `GET` with `Last-Event-ID` set to the priming event's id.
    pub drop_before_response: bool,
}

/// A way to fail, injected instead of the normal answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This HTTP status with a small JSON body.
    Status(u16),
    /// 200 with bytes that are not JSON (or an SSE event whose data is not JSON).
    Garbage,
    /// 200 with a valid response of this many bytes, streamed in 64 KiB chunks
    /// without a Content-Length (as one `data:` line in SSE mode).
    Oversized(usize),
    /// 200 `text/event-stream`: a priming event, then a `: keepalive` comment
    /// every 100 ms, forever; the response never comes.
    EndlessSse,
    /// 200 with a JSON-RPC error object for the request's id.
    JsonRpcError { code: i64, message: String },
}

/// Which JSON-RPC methods a fault or a delay applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Methods {
    /// Every POSTed message (requests, notifications, responses).
    #[default]
    All,
    /// Only these methods, e.g. `["tools/list"]`.
    Only(Vec<String>),
}

impl Methods {
    pub fn only<I, S>(methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Methods::Only(methods.into_iter().map(Into::into).collect())
    }

    pub fn matches(&self, method: &str) -> bool {
        match self {
            Methods::All => true,
            Methods::Only(list) => list.iter().any(|m| m == method),
        }
    }
}

/// What `GET /mcp` (the optional server-push stream) does.
///
/// `Refuse` and `Status` answer at once, whatever the request carries. Every
/// other mode first checks the request as a real server does: `Accept` must
/// name `text/event-stream` (406, with `strict_accept`), the `Mcp-Session-Id`
/// must be a live session (404 for an unknown or expired one, 400 when missing
/// and `require_session`), and with `require_protocol_header` the
/// `MCP-Protocol-Version` must be the negotiated one (400). Every GET is
/// recorded ([`UpstreamHandle::get_log`]).
///
/// Streams that stay open (`Open`, `ResetAfter` until the reset, `Garbage`,
/// `OversizedEvent`) are "open push streams": [`UpstreamHandle::notify_tools_changed`],
/// [`UpstreamHandle::notify_burst`] and [`UpstreamHandle::send_ping_request`]
/// write to them, each message as an event with an increasing numeric `id:`.
/// A `Last-Event-ID` that names no withheld POST answer opens a fresh stream
/// (no replay).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GetStream {
    /// 405 Method Not Allowed, as servers without push streams answer.
    #[default]
    Refuse,
    /// An SSE stream that stays open: a `: stream open` comment, then whatever
    /// the handle sends.
    Open,
    /// This HTTP status with a small JSON body.
    Status(u16),
    /// 200 SSE: a priming event (`id: p1`, empty data, and `retry: N` when
    /// [`SseStyle::retry_ms`] is set), then (messages sent by
    /// the handle meanwhile, then) after this long the body stream fails and
    /// actix closes the connection (TCP FIN) in the middle of the chunked
    /// body: no terminating zero-length chunk, a truncated body. Strict
    /// clients report an incomplete payload; awc reports it as the end of the
    /// body. Either way the stream is gone without a goodbye.
    ResetAfter(Duration),
    /// 200 with `Content-Type: text/event-stream`, then never a byte: no
    /// comment, no priming event (a hang behind a proxy). The server notices
    /// a client's close only when it writes, so it holds these connections
    /// until it stops.
    Silent,
    /// 200 SSE whose first event is `data: this is not json`, followed by
    /// bytes that are not SSE at all (a NUL, invalid UTF-8, HTML); then it
    /// stays open.
    Garbage,
    /// 200 SSE with one event made of a single `data:` line of about this many
    /// bytes (`data: ` + a valid `notifications/message` padded out, then the
    /// blank line), streamed in 64 KiB chunks; then it stays open. Only a size
    /// limit can fault it.
    OversizedEvent(usize),
    /// 307 to `http://127.0.0.1:<port>/mcp?api_key=redirect-secret` (a
    /// recorder in `recorder.rs`), answered at once like `Status`.
    RedirectTo(u16),
}

/// What a modern server does with `subscriptions/listen` (2026-07-28): the
/// push stream of the stateless wire. Every mode but `Unknown` and
/// `Status` is a 200 SSE stream; the ones that acknowledge send
/// `notifications/subscriptions/acknowledged` first, tagged with the listen
/// request's id as `_meta["io.modelcontextprotocol/subscriptionId"]`, and
/// the ones that stay open are "open listen streams" (see
/// [`UpstreamHandle::open_listen_streams`]): the handle's notifications go
/// to them tagged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenMode {
    /// An unknown method: a JSON-RPC -32601 error in a 200 JSON body, as a
    /// server without listen answers.
    #[default]
    Unknown,
    /// Ack, then whatever the handle sends, until it ends the stream.
    Open,
    /// This HTTP status with a small JSON body.
    Status(u16),
    /// Ack (and what the handle sends meanwhile), then after this long the
    /// body fails in the middle (a reset, as [`GetStream::ResetAfter`]).
    ResetAfter(Duration),
    /// 200 SSE with a `: keepalive` comment every 100 ms and never an ack.
    NoAck,
    /// Ack, then never a byte.
    Silent,
    /// Ack, then an event that is not JSON and bytes that are not SSE.
    Garbage,
    /// Ack, then one event of about this many bytes (see
    /// [`GetStream::OversizedEvent`]).
    OversizedEvent(usize),
}

/// One `GET /mcp` as the upstream saw it.
#[derive(Clone, Debug)]
pub struct GetRecord {
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
    /// The `Mcp-Session-Id` it carried.
    pub session_id: Option<String>,
    /// Whether that id was a live session when the GET arrived.
    pub session_live: bool,
    pub last_event_id: Option<String>,
    pub accept: Option<String>,
    pub protocol_version: Option<String>,
    /// All its headers, lower-case names.
    pub headers: Vec<(String, String)>,
}

impl GetRecord {
    pub fn header(&self, name: &str) -> Option<String> {
        find_header(&self.headers, name)
    }
}

// --------------------------------------------------------------- bearer auth

/// The access tokens a protected upstream accepts, each with its expiry.
///
/// The test token endpoint (`tests/support/token_endpoint.rs`) issues into a
/// store; an upstream with [`BearerAuth`] validates against the same one.
/// Cloning shares the store; two stores are equal only if they are the same
/// store.
#[derive(Clone, Default)]
pub struct TokenStore {
    tokens: Arc<Mutex<HashMap<String, Option<Instant>>>>,
}

impl TokenStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// Accepts `token` for `ttl` from now (`None`, or a ttl too long to
    /// represent: forever). Inserting a known token again resets its expiry.
    pub fn insert(&self, token: impl Into<String>, ttl: Option<Duration>) {
        let expires = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        lock(&self.tokens).insert(token.into(), expires);
    }
    /// Issued, not revoked and not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        match lock(&self.tokens).get(token) {
            Some(Some(expires)) => Instant::now() < *expires,
            Some(None) => true,
            None => false,
        }
    }
    /// When `token` expires: `None` if unknown, `Some(None)` if never.
    pub fn expiry(&self, token: &str) -> Option<Option<Instant>> {
        lock(&self.tokens).get(token).copied()
    }
    /// Forgets `token`; whether it was known.
    pub fn revoke(&self, token: &str) -> bool {
        lock(&self.tokens).remove(token).is_some()
    }
    /// Forgets every token (the next request carrying one gets a 401);
    /// returns how many there were.
    pub fn revoke_all(&self) -> usize {
        let mut tokens = lock(&self.tokens);
        let n = tokens.len();
        tokens.clear();
        n
    }
    /// Every known token, expired ones included.
    pub fn tokens(&self) -> Vec<String> {
        lock(&self.tokens).keys().cloned().collect()
    }
    /// Tokens that are valid now.
    pub fn valid_count(&self) -> usize {
        let now = Instant::now();
        lock(&self.tokens)
            .values()
            .filter(|e| e.is_none_or(|e| now < e))
            .count()
    }
}

impl PartialEq for TokenStore {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tokens, &other.tokens)
    }
}

impl Eq for TokenStore {}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("tokens", &lock(&self.tokens).len())
            .finish()
    }
}

/// An OAuth-protected MCP server (MCP authorization spec 2025-06-18 /
/// 2025-11-25, RFC 6750, RFC 9728), as [`UpstreamBehavior::bearer`].
///
/// Every request (POST, the GET push stream, DELETE, and the legacy
/// transport's GET and POST) must carry `Authorization: Bearer <token>` with
/// a token valid in `store`. Otherwise: 401 with
/// `WWW-Authenticate: Bearer resource_metadata="<prm>"` (no `error` when no
/// token was sent, `error="invalid_token"` for an unknown, revoked or expired
/// one), plus `scope="..."` with [`challenge_scope`](Self::challenge_scope).
/// A request with a valid token gets 403
/// `Bearer error="insufficient_scope", scope="..."` when
/// [`insufficient_scope`](Self::insufficient_scope) is set.
///
/// The protected resource metadata (RFC 9728) is served by the upstream
/// itself, without authentication, at `GET /.well-known/oauth-protected-resource/mcp`
/// (`prm_at_path`) and `GET /.well-known/oauth-protected-resource`
/// (`prm_at_root`): `{"resource": <the MCP URL>, "authorization_servers":
/// [...], "bearer_methods_supported": ["header"]}`. These requests are logged
/// in [`UpstreamHandle::prm_requests`], not in the other counters. The
/// authorization server metadata lives with the token endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerAuth {
    pub store: TokenStore,
    /// Put `resource_metadata="..."` in the challenge (default true).
    pub challenge_resource_metadata: bool,
    /// The `resource_metadata` URL; default: this upstream's path-suffixed
    /// document, `http://127.0.0.1:P/.well-known/oauth-protected-resource/mcp`.
    pub resource_metadata_url: Option<String>,
    /// Add `scope="..."` to the 401 challenge.
    pub challenge_scope: Option<String>,
    /// Answer every request with a valid token 403 `insufficient_scope`,
    /// naming this scope.
    pub insufficient_scope: Option<String>,
    /// `authorization_servers` of the metadata (issuer URLs).
    pub authorization_servers: Vec<String>,
    /// `scopes_supported` of the metadata (left out when empty).
    pub scopes_supported: Vec<String>,
    /// The metadata's `resource`; default: the MCP URL.
    pub prm_resource: Option<String>,
    /// Serve `/.well-known/oauth-protected-resource/mcp` (default true).
    pub prm_at_path: bool,
    /// Serve `/.well-known/oauth-protected-resource` (default true).
    pub prm_at_root: bool,
}

impl BearerAuth {
    pub fn new(store: TokenStore) -> Self {
        Self {
            store,
            challenge_resource_metadata: true,
            resource_metadata_url: None,
            challenge_scope: None,
            insufficient_scope: None,
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            prm_resource: None,
            prm_at_path: true,
            prm_at_root: true,
        }
    }
    /// Adds an issuer to `authorization_servers`.
    pub fn authorization_server(mut self, issuer: impl Into<String>) -> Self {
        self.authorization_servers.push(issuer.into());
        self
    }
    /// A challenge without `resource_metadata` (the client must try the
    /// well-known URIs).
    pub fn without_resource_metadata(mut self) -> Self {
        self.challenge_resource_metadata = false;
        self
    }
    pub fn resource_metadata_url(mut self, url: impl Into<String>) -> Self {
        self.resource_metadata_url = Some(url.into());
        self
    }
    pub fn challenge_scope(mut self, scope: impl Into<String>) -> Self {
        self.challenge_scope = Some(scope.into());
        self
    }
    pub fn insufficient_scope(mut self, scope: impl Into<String>) -> Self {
        self.insufficient_scope = Some(scope.into());
        self
    }
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }
    pub fn prm_resource(mut self, resource: impl Into<String>) -> Self {
        self.prm_resource = Some(resource.into());
        self
    }
    /// Which protected resource metadata documents exist.
    pub fn prm_docs(mut self, at_path: bool, at_root: bool) -> Self {
        self.prm_at_path = at_path;
        self.prm_at_root = at_root;
        self
    }
}

impl From<TokenStore> for BearerAuth {
    fn from(store: TokenStore) -> Self {
        Self::new(store)
    }
}

/// A request a [`BearerAuth`] upstream refused (401 or 403).
#[derive(Clone, Debug)]
pub struct AuthRejection {
    pub at: Instant,
    /// `POST`, `GET`, `DELETE`.
    pub http_method: String,
    pub path: String,
    /// The JSON-RPC method of a POSTed message, when the body had one.
    pub rpc_method: Option<String>,
    /// The bearer token it carried, if any.
    pub token: Option<String>,
    pub status: u16,
    /// The `WWW-Authenticate` value sent back.
    pub challenge: String,
}

/// The protected resource metadata paths (RFC 9728 section 3.1) of the MCP
/// endpoint `/mcp` (or `/sse`), and the root one.
pub const PRM_ROOT_PATH: &str = "/.well-known/oauth-protected-resource";

/// Everything the test upstream can be told. `Default` is a well-behaved
/// server with 5 tools, sessions, JSON answers and no push stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamBehavior {
    /// `serverInfo.name`, also used in tool descriptions.
    pub server_name: String,
    /// Number of tools, named `<tool_prefix>0..`.
    pub tools: usize,
    pub tool_prefix: String,
    /// Extra bytes in each tool's description, to make big pages cheaply.
    pub description_padding: usize,
    /// Number of prompts / resources; when 0 the capability is not advertised.
    pub prompts: usize,
    pub resources: usize,
    /// Items per `*/list` page (`nextCursor` until the end); `None` = one page.
    pub page_size: Option<usize>,
    /// Always answer `nextCursor: "loop-cursor"`.
    pub cursor_loop: bool,
    pub response: ResponseMode,
    pub sse: SseStyle,
    /// Answer `initialize` with this version instead of negotiating.
    pub protocol_version: Option<String>,
    /// Assign an `Mcp-Session-Id` on `initialize`.
    pub sessions: bool,
    /// With `sessions`: reject a non-initialize request without the header (400).
    pub require_session: bool,
    /// Status for a request carrying an expired or unknown session id (404 per
    /// spec; some servers answer 400 "No valid session ID provided").
    pub expired_session_status: u16,
    /// Reject a non-initialize request whose `MCP-Protocol-Version` is missing
    /// or differs from the negotiated one (400).
    pub require_protocol_header: bool,
    /// Insist on `Accept: application/json, text/event-stream` (406) and
    /// `Content-Type: application/json` (415) on POST, as the SDKs do.
    pub strict_accept: bool,
    /// Every request must carry this header with this value, else 401.
    pub required_header: Option<(String, String)>,
    /// OAuth-protected resource: every request must carry a bearer token
    /// valid in [`BearerAuth::store`], and the protected resource metadata
    /// documents are served (see [`BearerAuth`]).
    pub bearer: Option<BearerAuth>,
    pub fault: Option<Fault>,
    pub fault_on: Methods,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    pub delay_on: Methods,
    pub get_stream: GetStream,
    /// Speak the 2024-11-05 HTTP+SSE transport instead of Streamable HTTP:
    /// `GET /sse` opens the stream (`event: endpoint`), `POST
    /// /messages?session_id=..` answers 202 and the response goes on the stream.
    /// `POST /sse` is 405 (what `transport: auto` falls back on).
    pub legacy_sse: bool,
    /// Tools listed verbatim after the generated ones (any JSON, however
    /// broken: what tool validation is tested with).
    pub raw_tools: Vec<Value>,
    /// Which MCP era(s) the server speaks on `POST /mcp` (see [`ServerEra`]).
    pub era: ServerEra,
    /// Modern revisions accepted; another gets 400 + -32022 naming these.
    pub modern_versions: Vec<String>,
    /// `ttlMs` and `cacheScope` on modern results.
    pub ttl_ms: u64,
    pub cache_scope: String,
    /// `resultType` on modern results of the methods in `result_type_on`
    /// (`complete` on the others).
    pub result_type: String,
    pub result_type_on: Methods,
    /// Dual-era: the modern side answers every request 404 with a plain
    /// text body (no JSON-RPC), as if it had been switched off.
    pub modern_broken: bool,
    /// `subscriptions/listen` on the modern side.
    pub listen: ListenMode,
    /// A `: keepalive` comment this often on open push and listen streams
    /// (`None`: silent until a notification). Only a write notices a
    /// client that went away: without it, every silent stream of a client
    /// that stopped stays open, as the load farm found (1000 connections
    /// kept per engine run, until out of file descriptors).
    pub stream_keepalive: Option<Duration>,
    /// How long the HTTP server keeps an idle connection open (`None`:
    /// actix's default, 5 s). Server-wide: in a farm, the first upstream's
    /// value holds for all.
    pub server_keep_alive: Option<Duration>,
    /// Counts this server's POSTs being answered, with others sharing the
    /// probe (the engine's attempts in flight across upstreams).
    pub in_flight: Option<InFlightProbe>,
}

/// POSTs being answered right now, and the most there ever were at once,
/// over every upstream given the same probe (clones share the counts).
#[derive(Clone, Default)]
pub struct InFlightProbe(Arc<(AtomicUsize, AtomicUsize)>);

impl InFlightProbe {
    /// The most POSTs that were being answered at the same moment.
    pub fn max(&self) -> usize {
        self.0 .1.load(Ordering::SeqCst)
    }

    /// POSTs being answered now.
    pub fn current(&self) -> usize {
        self.0 .0.load(Ordering::SeqCst)
    }

    fn enter(&self) -> InFlightGuard {
        let now = self.0 .0.fetch_add(1, Ordering::SeqCst) + 1;
        self.0 .1.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
}

impl PartialEq for InFlightProbe {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for InFlightProbe {}

impl std::fmt::Debug for InFlightProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "InFlightProbe(now {}, max {})",
            self.current(),
            self.max()
        )
    }
}

struct InFlightGuard(InFlightProbe);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The MCP era(s) of the test upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerEra {
    /// 2025 only: `initialize` and sessions, as always.
    #[default]
    Legacy,
    /// 2026-07-28 only, strict: `server/discover`; every request must carry
    /// `_meta` (400 + -32602), `MCP-Protocol-Version`, `Mcp-Method` and
    /// `Mcp-Name` matching the body (400 + -32020), a supported version
    /// (400 with -32022). `initialize` is refused: 404 + -32601 with modern headers,
    /// else 400 naming the supported versions.
    Modern,
    /// Both: a POST with a modern `MCP-Protocol-Version` header is modern,
    /// any other is 2025 (as the Python SDK routes).
    Dual,
}

/// One modern request as the upstream received it (after its checks).
#[derive(Clone, Debug)]
pub struct ModernRecord {
    pub method: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub meta: Value,
    /// The status it was answered with.
    pub status: u16,
}

impl Default for UpstreamBehavior {
    fn default() -> Self {
        Self {
            server_name: "test-upstream".to_owned(),
            tools: 5,
            tool_prefix: "tool_".to_owned(),
            description_padding: 0,
            prompts: 0,
            resources: 0,
            page_size: None,
            cursor_loop: false,
            response: ResponseMode::Json,
            sse: SseStyle::default(),
            protocol_version: None,
            sessions: true,
            require_session: true,
            expired_session_status: 404,
            require_protocol_header: false,
            strict_accept: true,
            required_header: None,
            bearer: None,
            fault: None,
            fault_on: Methods::All,
            delay: None,
            delay_on: Methods::All,
            get_stream: GetStream::Refuse,
            legacy_sse: false,
            raw_tools: Vec::new(),
            era: ServerEra::Legacy,
            modern_versions: vec!["2026-07-28".to_owned()],
            ttl_ms: 0,
            cache_scope: "private".to_owned(),
            result_type: "complete".to_owned(),
            result_type_on: Methods::All,
            modern_broken: false,
            listen: ListenMode::Unknown,
            stream_keepalive: None,
            server_keep_alive: None,
            in_flight: None,
        }
    }
}

/// The name of the tool with index `i` under the default prefix.
pub fn tool_name(i: usize) -> String {
    format!("tool_{i}")
}

/// The names `tool_0..tool_{n-1}`.
pub fn tool_names(n: usize) -> Vec<String> {
    (0..n).map(tool_name).collect()
}

// ------------------------------------------------------------------- builder

/// Builds a [`TestUpstream`]; every knob of [`UpstreamBehavior`] has a method.
#[derive(Clone, Debug, Default)]
pub struct UpstreamBuilder {
    behavior: UpstreamBehavior,
    port: Option<u16>,
}

impl UpstreamBuilder {
    pub fn behavior(mut self, behavior: UpstreamBehavior) -> Self {
        self.behavior = behavior;
        self
    }
    /// Bind this port instead of a free one (to bring a server up where a
    /// test saw connections refused).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.behavior.server_name = name.into();
        self
    }
    pub fn tools(mut self, n: usize) -> Self {
        self.behavior.tools = n;
        self
    }
    pub fn tool_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.behavior.tool_prefix = prefix.into();
        self
    }
    pub fn description_padding(mut self, bytes: usize) -> Self {
        self.behavior.description_padding = bytes;
        self
    }
    pub fn prompts(mut self, n: usize) -> Self {
        self.behavior.prompts = n;
        self
    }
    pub fn resources(mut self, n: usize) -> Self {
        self.behavior.resources = n;
        self
    }
    /// Lists `tools` verbatim after the generated ones.
    pub fn raw_tools(mut self, tools: Vec<Value>) -> Self {
        self.behavior.raw_tools = tools;
        self
    }
    pub fn page_size(mut self, n: usize) -> Self {
        self.behavior.page_size = Some(n);
        self
    }
    pub fn cursor_loop(mut self) -> Self {
        self.behavior.cursor_loop = true;
        self
    }
    pub fn json(mut self) -> Self {
        self.behavior.response = ResponseMode::Json;
        self
    }
    pub fn sse(mut self) -> Self {
        self.behavior.response = ResponseMode::Sse;
        self
    }
    pub fn sse_style(mut self, style: SseStyle) -> Self {
        self.behavior.response = ResponseMode::Sse;
        self.behavior.sse = style;
        self
    }
    pub fn protocol_version(mut self, version: impl Into<String>) -> Self {
        self.behavior.protocol_version = Some(version.into());
        self
    }
    pub fn sessions(mut self, on: bool) -> Self {
        self.behavior.sessions = on;
        self
    }
    pub fn require_session(mut self, on: bool) -> Self {
        self.behavior.require_session = on;
        self
    }
    pub fn expired_session_status(mut self, status: u16) -> Self {
        self.behavior.expired_session_status = status;
        self
    }
    pub fn require_protocol_header(mut self) -> Self {
        self.behavior.require_protocol_header = true;
        self
    }
    pub fn strict_accept(mut self, on: bool) -> Self {
        self.behavior.strict_accept = on;
        self
    }
    pub fn required_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.behavior.required_header = Some((name.into(), value.into()));
        self
    }
    /// Require a bearer token valid in a [`TokenStore`] on every request;
    /// takes a store or a configured [`BearerAuth`].
    pub fn require_bearer(mut self, auth: impl Into<BearerAuth>) -> Self {
        self.behavior.bearer = Some(auth.into());
        self
    }
    pub fn fault(mut self, fault: Fault) -> Self {
        self.behavior.fault = Some(fault);
        self
    }
    pub fn fault_on(mut self, methods: Methods) -> Self {
        self.behavior.fault_on = methods;
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.behavior.delay = Some(delay);
        self
    }
    pub fn in_flight(mut self, probe: InFlightProbe) -> Self {
        self.behavior.in_flight = Some(probe);
        self
    }

    pub fn delay_on(mut self, methods: Methods) -> Self {
        self.behavior.delay_on = methods;
        self
    }
    pub fn get_stream(mut self, mode: GetStream) -> Self {
        self.behavior.get_stream = mode;
        self
    }
    pub fn era(mut self, era: ServerEra) -> Self {
        self.behavior.era = era;
        self
    }
    pub fn listen(mut self, mode: ListenMode) -> Self {
        self.behavior.listen = mode;
        self
    }

    pub fn legacy_sse(mut self) -> Self {
        self.behavior.legacy_sse = true;
        self
    }

    /// Binds 127.0.0.1 and starts serving; returns once the socket listens.
    pub fn start(self) -> io::Result<TestUpstream> {
        let listener = match self.port {
            Some(port) => bind_retrying(port)?,
            None => TcpListener::bind(("127.0.0.1", 0))?,
        };
        let handle = UpstreamHandle::new(listener.local_addr()?, self.behavior);
        let server = RunningServer::start(vec![(listener, handle.clone())], 1)?;
        Ok(TestUpstream { handle, server })
    }
}

fn bind_retrying(port: u16) -> io::Result<TcpListener> {
    let deadline = Instant::now() + REBIND_DEADLINE;
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

// -------------------------------------------------------------- the handles

/// A running test upstream. Dropping it stops the server at once; `stop()`
/// stops it gracefully. Derefs to its [`UpstreamHandle`].
pub struct TestUpstream {
    handle: UpstreamHandle,
    server: RunningServer,
}

impl TestUpstream {
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder::default()
    }

    /// A well-behaved upstream with the default behaviour.
    pub fn start_default() -> io::Result<TestUpstream> {
        Self::builder().start()
    }

    /// A clonable handle to change behaviour and read counters from elsewhere.
    pub fn handle(&self) -> UpstreamHandle {
        self.handle.clone()
    }

    /// Stops accepting, lets open requests finish (1 s at most), closes the
    /// port.
    pub async fn stop(mut self) {
        self.server.stop(true).await;
    }
}

impl Deref for TestUpstream {
    type Target = UpstreamHandle;
    fn deref(&self) -> &UpstreamHandle {
        &self.handle
    }
}

/// Many upstreams served by one actix server (one listener each, shared
/// workers): what the load harness needs for K=1000 without 1000 threads.
///
/// [`go_down`](Self::go_down) and [`come_up`](Self::come_up) take every
/// upstream off the network at once and put it back on the same ports, as
/// a network blip would: the handles (sessions, counters) survive.
pub struct UpstreamFarm {
    handles: Vec<UpstreamHandle>,
    server: Option<RunningServer>,
    blackhole: Option<Blackhole>,
    workers: usize,
    gauges: Arc<FarmGauges>,
}

/// How the upstreams of a farm are unreachable while it is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// No listener: the kernel refuses every connection (nothing counted).
    Refuse,
    /// Every connection is accepted and closed at once, unanswered, and
    /// counted per upstream ([`UpstreamHandle::closed_in_outage`]).
    Close,
}

impl UpstreamFarm {
    /// Starts `count` upstreams with the same behaviour on free ports of
    /// 127.0.0.1, or on `base_port..base_port+count` when `base_port` is set.
    pub fn start(
        count: usize,
        behavior: &UpstreamBehavior,
        base_port: Option<u16>,
        workers: usize,
    ) -> io::Result<UpstreamFarm> {
        let gauges = Arc::new(FarmGauges::default());
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let listener = match base_port {
                Some(base) => {
                    let port = u16::try_from(usize::from(base) + i).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidInput, "port range overflows 65535")
                    })?;
                    TcpListener::bind(("127.0.0.1", port))?
                }
                None => TcpListener::bind(("127.0.0.1", 0))?,
            };
            let mut b = behavior.clone();
            b.server_name = format!("{}-{i}", behavior.server_name);
            let handle = UpstreamHandle::with_gauges(listener.local_addr()?, b, gauges.clone());
            entries.push((listener, handle));
        }
        let handles = entries.iter().map(|(_, h)| h.clone()).collect();
        let workers = workers.max(1);
        let server = RunningServer::start(entries, workers)?;
        Ok(UpstreamFarm {
            handles,
            server: Some(server),
            blackhole: None,
            workers,
            gauges,
        })
    }

    pub fn upstreams(&self) -> &[UpstreamHandle] {
        &self.handles
    }

    /// Open connections and discovery rounds in flight over all upstreams.
    pub fn gauges(&self) -> &FarmGauges {
        &self.gauges
    }

    /// Whether the upstreams are serving (not [`go_down`](Self::go_down)).
    pub fn is_up(&self) -> bool {
        self.server.is_some()
    }

    /// Takes every upstream off the network at once: the server stops
    /// (open connections and push streams are cut, unanswered), then the
    /// ports refuse or close every connection, per `outage`, until
    /// [`come_up`](Self::come_up). Blocks the calling thread until that
    /// holds (the servers run on threads of their own).
    pub fn go_down(&mut self, outage: Outage) -> io::Result<()> {
        if let Some(mut server) = self.server.take() {
            server.stop_blocking();
        }
        // The rounds in flight died with their connections.
        for h in &self.handles {
            if h.inner.round_open.swap(false, Ordering::Relaxed) {
                self.gauges.round_closed();
            }
        }
        if outage == Outage::Close && self.blackhole.is_none() {
            self.blackhole = Some(Blackhole::start(&self.handles)?);
        }
        Ok(())
    }

    /// Serves again on the same ports, with the same handles (sessions
    /// survive, as after a network blip). Blocks the calling thread until
    /// the ports listen.
    pub fn come_up(&mut self) -> io::Result<()> {
        if let Some(blackhole) = self.blackhole.take() {
            blackhole.stop();
        }
        if self.server.is_none() {
            let entries = self
                .handles
                .iter()
                .map(|h| Ok((bind_retrying(h.port())?, h.clone())))
                .collect::<io::Result<Vec<_>>>()?;
            self.server = Some(RunningServer::start(entries, self.workers)?);
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        self.blackhole.take();
        if let Some(server) = self.server.as_mut() {
            server.stop(true).await;
        }
    }
}

/// The ports of a farm that is down with [`Outage::Close`]: one thread
/// accepts every connection and closes it at once, counting it.
struct Blackhole {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Blackhole {
    fn start(handles: &[UpstreamHandle]) -> io::Result<Self> {
        let mut listeners = Vec::with_capacity(handles.len());
        for h in handles {
            let listener = bind_retrying(h.port())?;
            listener.set_nonblocking(true)?;
            listeners.push((listener, h.inner.clone()));
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("farm-blackhole".to_owned())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    for (listener, inner) in listeners {
                        let listener = match actix_web::rt::net::TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        };
                        actix_web::rt::spawn(async move {
                            loop {
                                match listener.accept().await {
                                    Ok((stream, _)) => {
                                        inner.closed_in_outage.fetch_add(1, Ordering::Relaxed);
                                        drop(stream);
                                    }
                                    // Out of descriptors, typically: try again soon.
                                    Err(_) => {
                                        actix_web::rt::time::sleep(Duration::from_millis(10)).await
                                    }
                                }
                            }
                        });
                    }
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.await;
                    // Returning drops the runtime: its tasks and listeners.
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("blackhole thread exited before listening"))??;
        Ok(Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Closes the ports; returns once they are closed.
    fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.shut();
    }
}

/// The server thread of one or more upstreams.
struct RunningServer {
    handle: Option<ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl RunningServer {
    fn start(entries: Vec<(TcpListener, UpstreamHandle)>, workers: usize) -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<ServerHandle>>();
        let thread = std::thread::Builder::new()
            .name("test-upstream".to_owned())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let routes: Arc<HashMap<u16, Arc<Inner>>> = Arc::new(
                        entries
                            .iter()
                            .map(|(_, h)| (h.inner.addr.port(), h.inner.clone()))
                            .collect(),
                    );
                    let by_port = routes.clone();
                    let keep_alive = entries
                        .first()
                        .and_then(|(_, h)| lock(&h.inner.behavior).server_keep_alive);
                    let routes = web::Data::from(routes);
                    let mut server = HttpServer::new(move || {
                        App::new()
                            .app_data(routes.clone())
                            .app_data(web::PayloadConfig::new(MAX_REQUEST_BODY))
                            .default_service(web::to(dispatch))
                    })
                    .on_connect(move |io, ext| {
                        // Counted per upstream, and open until the
                        // connection's extensions are dropped with it.
                        let Some(tcp) = io.downcast_ref::<actix_web::rt::net::TcpStream>() else {
                            return;
                        };
                        let Ok(local) = tcp.local_addr() else {
                            return;
                        };
                        if let Some(inner) = by_port.get(&local.port()) {
                            inner.connections.fetch_add(1, Ordering::Relaxed);
                            inner.gauges.connection_opened();
                            ext.insert(ConnectionGuard(inner.gauges.clone()));
                        }
                    })
                    .workers(workers)
                    .backlog(4096)
                    .keep_alive(match keep_alive {
                        Some(d) => actix_web::http::KeepAlive::Timeout(d),
                        None => actix_web::http::KeepAlive::default(),
                    })
                    .disable_signals()
                    .shutdown_timeout(1);
                    for (listener, _) in entries {
                        server = match server.listen(listener) {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        };
                    }
                    let server = server.run();
                    let _ = ready_tx.send(Ok(server.handle()));
                    let _ = server.await;
                });
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| io::Error::other("test upstream thread exited before serving"))??;
        Ok(Self {
            handle: Some(handle),
            thread: Some(thread),
        })
    }

    async fn stop(&mut self, graceful: bool) {
        if let Some(handle) = self.handle.take() {
            handle.stop(graceful).await;
        }
        // The server future has completed; the thread ends right after.
        self.thread.take();
    }

    /// Stops at once (open connections cut) and waits until the server
    /// thread, and with it every listener, is gone.
    fn stop_blocking(&mut self) {
        if let Some(handle) = self.handle.take() {
            block_on(handle.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `fut` to completion on this thread, parked between polls. Not a
/// runtime: for futures that only wait on another thread (the server's
/// stop command), where creating a runtime could fail (a farm of 10k
/// upstreams holds as many descriptors as the limit allows: 10k listeners
/// and the engine's 10k connections; a runtime needs more).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            // The command is sent now; the returned future only waits for it.
            drop(handle.stop(false));
        }
    }
}

/// Shared state of one upstream: behaviour (changeable at run time) and what
/// it has seen. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamHandle {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    behavior: Mutex<UpstreamBehavior>,
    stats: Mutex<Stats>,
    sessions: Mutex<Sessions>,
    push_streams: Mutex<Vec<UnboundedSender<Bytes>>>,
    legacy_streams: Mutex<HashMap<String, UnboundedSender<Bytes>>>,
    /// Responses withheld by `SseStyle::drop_before_response`, by the id of
    /// the priming event a resuming GET names in `Last-Event-ID`.
    resumable: Mutex<HashMap<String, Bytes>>,
    next_event_id: AtomicU64,
    next_session: AtomicU64,
    /// Number of the next `srv-ping-N` request.
    next_ping: AtomicU64,
    /// The `id:` of the last event written to the push streams.
    last_push_event_id: Mutex<Option<String>>,
    /// Open `subscriptions/listen` streams: the request id, the sender.
    listen_streams: Mutex<Vec<(Value, UnboundedSender<Bytes>)>>,
    /// The params of every `subscriptions/listen` received.
    listen_requests: Mutex<Vec<Value>>,
    /// Shared by every upstream of one farm (each standalone upstream has
    /// its own): what the load harness reads of all of them at once.
    gauges: Arc<FarmGauges>,
    /// TCP connections the HTTP server accepted on this port.
    connections: AtomicU64,
    /// Connections accepted and closed at once during an outage
    /// ([`UpstreamFarm::go_down`] with [`Outage::Close`]).
    closed_in_outage: AtomicU64,
    /// A discovery round is under way: `initialize` (or `server/discover`)
    /// came, `tools/list` has not yet.
    round_open: AtomicBool,
}

/// A count of things open now, and its peak since the last reset.
#[derive(Debug, Default)]
struct PeakGauge {
    now: AtomicU64,
    peak: AtomicU64,
}

impl PeakGauge {
    fn opened(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self) {
        // Saturating: a reset between open and close must not wrap.
        let _ = self
            .now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// The peak starts again from the current value.
    fn reset_peak(&self) {
        self.peak
            .store(self.now.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Now and the peak.
    fn read(&self) -> (u64, u64) {
        (
            self.now.load(Ordering::Relaxed),
            self.peak.load(Ordering::Relaxed),
        )
    }
}

/// Counters over all the upstreams of a farm: open connections and
/// discovery rounds in flight, each with its peak since the last
/// [`FarmGauges::reset_peaks`].
#[derive(Debug, Default)]
pub struct FarmGauges {
    connections: PeakGauge,
    rounds: PeakGauge,
}

/// What [`FarmGauges::snapshot`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaugeSnapshot {
    pub open_connections: u64,
    pub peak_open_connections: u64,
    /// Upstreams between `initialize` (or `server/discover`) and
    /// `tools/list`: discovery rounds in flight as the farm sees them.
    pub rounds_open: u64,
    pub peak_rounds_open: u64,
}

impl FarmGauges {
    pub fn snapshot(&self) -> GaugeSnapshot {
        let (open_connections, peak_open_connections) = self.connections.read();
        let (rounds_open, peak_rounds_open) = self.rounds.read();
        GaugeSnapshot {
            open_connections,
            peak_open_connections,
            rounds_open,
            peak_rounds_open,
        }
    }

    /// Peaks start again from the current values.
    pub fn reset_peaks(&self) {
        self.connections.reset_peak();
        self.rounds.reset_peak();
    }

    fn connection_opened(&self) {
        self.connections.opened();
    }

    fn connection_closed(&self) {
        self.connections.closed();
    }

    fn round_opened(&self) {
        self.rounds.opened();
    }

    fn round_closed(&self) {
        self.rounds.closed();
    }
}

/// Lives in a connection's extensions: counts it closed when dropped.
struct ConnectionGuard(Arc<FarmGauges>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

#[derive(Default)]
struct Stats {
    http_requests: u64,
    posts: u64,
    gets: u64,
    deletes: u64,
    by_method: HashMap<String, u64>,
    last_headers: Vec<(String, String)>,
    headers_by_method: HashMap<String, Vec<(String, String)>>,
    last_event_ids: Vec<String>,
    get_log: Vec<GetRecord>,
    /// JSON-RPC responses the client POSTed (to server requests such as ping).
    client_responses: Vec<Value>,
    last_initialize_params: Option<Value>,
    sessions_created: u64,
    sessions_deleted: u64,
    /// Requests refused by [`BearerAuth`].
    auth_rejections: Vec<AuthRejection>,
    /// Distinct bearer tokens accepted, in order of first use.
    bearer_tokens: Vec<String>,
    /// Protected resource metadata fetches: path and status.
    prm_requests: Vec<(String, u16)>,
    /// Modern requests, in order.
    modern_log: Vec<ModernRecord>,
}

#[derive(Default)]
struct Sessions {
    /// Session id -> negotiated protocol version.
    live: HashMap<String, String>,
    dead: HashSet<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UpstreamHandle {
    fn new(addr: SocketAddr, behavior: UpstreamBehavior) -> Self {
        Self::with_gauges(addr, behavior, Arc::default())
    }

    fn with_gauges(addr: SocketAddr, behavior: UpstreamBehavior, gauges: Arc<FarmGauges>) -> Self {
        Self {
            inner: Arc::new(Inner {
                addr,
                behavior: Mutex::new(behavior),
                stats: Mutex::new(Stats::default()),
                sessions: Mutex::new(Sessions::default()),
                push_streams: Mutex::new(Vec::new()),
                legacy_streams: Mutex::new(HashMap::new()),
                resumable: Mutex::new(HashMap::new()),
                next_event_id: AtomicU64::new(1),
                next_session: AtomicU64::new(1),
                next_ping: AtomicU64::new(1),
                last_push_event_id: Mutex::new(None),
                listen_streams: Mutex::new(Vec::new()),
                listen_requests: Mutex::new(Vec::new()),
                gauges,
                connections: AtomicU64::new(0),
                closed_in_outage: AtomicU64::new(0),
                round_open: AtomicBool::new(false),
            }),
        }
    }

    pub fn port(&self) -> u16 {
        self.inner.addr.port()
    }
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }
    /// The URL to configure: `http://127.0.0.1:PORT/mcp`, or `.../sse` in
    /// legacy SSE mode.
    pub fn url(&self) -> String {
        if lock(&self.inner.behavior).legacy_sse {
            self.sse_url()
        } else {
            self.mcp_url()
        }
    }
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.inner.addr)
    }
    pub fn sse_url(&self) -> String {
        format!("http://{}/sse", self.inner.addr)
    }

    // -- behaviour -------------------------------------------------------

    pub fn behavior(&self) -> UpstreamBehavior {
        lock(&self.inner.behavior).clone()
    }
    pub fn set_behavior(&self, behavior: UpstreamBehavior) {
        *lock(&self.inner.behavior) = behavior;
    }
    /// Changes the behaviour in place: `up.update(|b| b.page_size = Some(10))`.
    pub fn update(&self, f: impl FnOnce(&mut UpstreamBehavior)) {
        f(&mut lock(&self.inner.behavior));
    }
    /// Lists `tools` verbatim after the generated ones.
    pub fn set_raw_tools(&self, tools: Vec<Value>) {
        self.update(|b| b.raw_tools = tools);
    }
    pub fn set_tools(&self, n: usize) {
        self.update(|b| b.tools = n);
    }
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.update(|b| b.fault = fault);
    }
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.update(|b| b.delay = delay);
    }
    pub fn set_response_mode(&self, mode: ResponseMode) {
        self.update(|b| b.response = mode);
    }
    pub fn set_page_size(&self, page_size: Option<usize>) {
        self.update(|b| b.page_size = page_size);
    }

    // -- sessions and streams -------------------------------------------

    /// Ends every live session as a server restart would: a later request
    /// with one of those ids gets `expired_session_status` (404). Returns how
    /// many sessions there were.
    pub fn expire_sessions(&self) -> usize {
        let mut sessions = lock(&self.inner.sessions);
        let ids: Vec<String> = sessions.live.drain().map(|(id, _)| id).collect();
        let n = ids.len();
        sessions.dead.extend(ids);
        n
    }
    pub fn live_sessions(&self) -> Vec<String> {
        lock(&self.inner.sessions).live.keys().cloned().collect()
    }
    /// Sends `notifications/tools/list_changed` on every open push stream
    /// (see [`GetStream`]) and legacy SSE stream; returns how many got it.
    pub fn notify_tools_changed(&self) -> usize {
        self.notify_burst(1)
    }
    /// Sends `n` `notifications/tools/list_changed` back to back (each its
    /// own event, with its own `id:` on push streams) on every open push
    /// stream and legacy SSE stream; returns how many streams got them.
    pub fn notify_burst(&self, n: usize) -> usize {
        let msg = json!({ "jsonrpc": "2.0", "method": "notifications/tools/list_changed" });
        self.inner.broadcast(&vec![msg; n])
    }
    /// Sends the server request `{"jsonrpc":"2.0","id":"srv-ping-N","method":"ping"}`
    /// on every open push stream and legacy SSE stream. Returns its id and
    /// how many streams got it; the client's answer shows up in
    /// [`ping_responses`](Self::ping_responses).
    pub fn send_ping_request(&self) -> (String, usize) {
        let n = self.inner.next_ping.fetch_add(1, Ordering::Relaxed);
        let id = format!("srv-ping-{n}");
        let sent = self
            .inner
            .broadcast(&[json!({ "jsonrpc": "2.0", "id": id, "method": "ping" })]);
        (id, sent)
    }
    /// `subscriptions/listen` streams currently open and writable by the
    /// handle.
    pub fn open_listen_streams(&self) -> usize {
        let mut streams = lock(&self.inner.listen_streams);
        streams.retain(|(_, tx)| !tx.is_closed());
        streams.len()
    }
    /// Ends every open listen stream: with the graceful result
    /// `{resultType: "complete", _meta: {subscriptionId}}` when `with_result`,
    /// else by closing it without a word.
    pub fn end_listen_streams(&self, with_result: bool) {
        for (id, tx) in lock(&self.inner.listen_streams).drain(..) {
            if with_result {
                let done = json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "result": { "resultType": "complete", "_meta": { LISTEN_TAG: id } },
                });
                let _ = tx.send(message_event(&done));
            }
        }
    }
    /// Sends `notifications/tools/list_changed` on every open listen stream
    /// twice: untagged, and tagged with a subscription id that is not the
    /// stream's. A client must ignore both. Returns how many streams got them.
    pub fn notify_listen_mistagged(&self) -> usize {
        let msg = json!({ "jsonrpc": "2.0", "method": "notifications/tools/list_changed" });
        let untagged = self
            .inner
            .broadcast_listen(std::slice::from_ref(&msg), |_| None);
        let wrong = self
            .inner
            .broadcast_listen(std::slice::from_ref(&msg), |_| Some(json!(987_654_321)));
        untagged.min(wrong)
    }
    /// The params of every `subscriptions/listen` received, in order.
    pub fn listen_requests(&self) -> Vec<Value> {
        lock(&self.inner.listen_requests).clone()
    }
    /// Push streams (`GET /mcp`) currently open and writable by the handle
    /// (not `Silent` ones).
    pub fn open_push_streams(&self) -> usize {
        let mut streams = lock(&self.inner.push_streams);
        streams.retain(|tx| !tx.is_closed());
        streams.len()
    }
    /// Ends every open push stream gracefully (the client should reconnect).
    pub fn close_push_streams(&self) {
        lock(&self.inner.push_streams).clear();
    }
    /// The `id:` of the last event written to the push streams: what a
    /// client resuming after it should send as `Last-Event-ID`.
    pub fn last_push_event_id(&self) -> Option<String> {
        lock(&self.inner.last_push_event_id).clone()
    }

    // -- counters --------------------------------------------------------

    /// JSON-RPC messages received with this method (`"initialize"`,
    /// `"tools/list"`, `"notifications/initialized"`, ...); responses sent
    /// by the client count as `"<response>"`.
    pub fn requests(&self, method: &str) -> u64 {
        lock(&self.inner.stats)
            .by_method
            .get(method)
            .copied()
            .unwrap_or(0)
    }
    pub fn method_counts(&self) -> HashMap<String, u64> {
        lock(&self.inner.stats).by_method.clone()
    }
    /// HTTP requests of any kind, including rejected ones.
    pub fn http_requests(&self) -> u64 {
        lock(&self.inner.stats).http_requests
    }
    pub fn post_requests(&self) -> u64 {
        lock(&self.inner.stats).posts
    }
    pub fn get_requests(&self) -> u64 {
        lock(&self.inner.stats).gets
    }
    pub fn delete_requests(&self) -> u64 {
        lock(&self.inner.stats).deletes
    }
    pub fn sessions_created(&self) -> u64 {
        lock(&self.inner.stats).sessions_created
    }
    pub fn sessions_deleted(&self) -> u64 {
        lock(&self.inner.stats).sessions_deleted
    }
    /// Headers (lower-case names) of the last HTTP request.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        lock(&self.inner.stats).last_headers.clone()
    }
    pub fn last_header(&self, name: &str) -> Option<String> {
        find_header(&lock(&self.inner.stats).last_headers, name)
    }
    /// A header of the last request that carried this JSON-RPC method.
    pub fn last_header_for(&self, method: &str, name: &str) -> Option<String> {
        let stats = lock(&self.inner.stats);
        stats
            .headers_by_method
            .get(method)
            .and_then(|h| find_header(h, name))
    }
    /// `Last-Event-ID` values seen on GET requests, in order (GETs without
    /// the header add nothing).
    pub fn last_event_ids(&self) -> Vec<String> {
        lock(&self.inner.stats).last_event_ids.clone()
    }
    /// Every `GET /mcp`, in order of arrival.
    pub fn get_log(&self) -> Vec<GetRecord> {
        lock(&self.inner.stats).get_log.clone()
    }
    /// JSON-RPC responses the client POSTed with a live session (answers to
    /// server requests), in order.
    pub fn client_responses(&self) -> Vec<Value> {
        lock(&self.inner.stats).client_responses.clone()
    }
    /// The client's answers to [`send_ping_request`](Self::send_ping_request)
    /// (responses whose id starts with `srv-ping-`), in order.
    pub fn ping_responses(&self) -> Vec<Value> {
        self.client_responses()
            .into_iter()
            .filter(|r| {
                r.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.starts_with("srv-ping-"))
            })
            .collect()
    }
    /// `params` of the last `initialize` (protocolVersion, clientInfo, ...).
    pub fn last_initialize_params(&self) -> Option<Value> {
        lock(&self.inner.stats).last_initialize_params.clone()
    }
    pub fn reset_counters(&self) {
        *lock(&self.inner.stats) = Stats::default();
        self.inner.connections.store(0, Ordering::Relaxed);
        self.inner.closed_in_outage.store(0, Ordering::Relaxed);
    }
    /// TCP connections open now, over the farm this upstream belongs to
    /// (a single upstream has gauges of its own).
    pub fn open_connections(&self) -> u64 {
        self.inner.gauges.snapshot().open_connections
    }
    /// TCP connections the HTTP server accepted on this port.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Relaxed)
    }
    /// Connections accepted and closed at once during an outage.
    pub fn closed_in_outage(&self) -> u64 {
        self.inner.closed_in_outage.load(Ordering::Relaxed)
    }

    // -- bearer auth -------------------------------------------------------

    /// Protects the upstream from now on (`None`: open again).
    pub fn set_bearer(&self, auth: Option<BearerAuth>) {
        self.update(|b| b.bearer = auth);
    }
    /// The path-suffixed protected resource metadata URL,
    /// `http://127.0.0.1:P/.well-known/oauth-protected-resource/mcp`.
    pub fn prm_url(&self) -> String {
        self.inner.prm_url(&self.behavior())
    }
    /// `http://127.0.0.1:P/.well-known/oauth-protected-resource`.
    pub fn prm_root_url(&self) -> String {
        format!("http://{}{PRM_ROOT_PATH}", self.inner.addr)
    }
    /// Requests refused with 401 or 403 by [`BearerAuth`], in order.
    pub fn auth_rejections(&self) -> Vec<AuthRejection> {
        lock(&self.inner.stats).auth_rejections.clone()
    }
    /// How many requests were answered 401.
    pub fn unauthorized_responses(&self) -> usize {
        self.count_rejections(401)
    }
    /// How many requests were answered 403.
    pub fn forbidden_responses(&self) -> usize {
        self.count_rejections(403)
    }
    fn count_rejections(&self, status: u16) -> usize {
        lock(&self.inner.stats)
            .auth_rejections
            .iter()
            .filter(|r| r.status == status)
            .count()
    }
    /// The distinct bearer tokens the upstream accepted, in order of first use.
    pub fn bearer_tokens(&self) -> Vec<String> {
        lock(&self.inner.stats).bearer_tokens.clone()
    }
    /// Protected resource metadata fetches (path, status), in order.
    /// The modern requests received, in order, with the status each got.
    pub fn modern_log(&self) -> Vec<ModernRecord> {
        lock(&self.inner.stats).modern_log.clone()
    }

    pub fn prm_requests(&self) -> Vec<(String, u16)> {
        lock(&self.inner.stats).prm_requests.clone()
    }
}

fn find_header(headers: &[(String, String)], name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
}

// ------------------------------------------------------------ hang & refuse

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn refusing_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(port)
}

/// A server that accepts TCP connections and never answers; it holds every
/// connection open until dropped.
pub struct HangingServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

pub fn hanging_server() -> io::Result<HangingServer> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let thread = {
        let stop = stop.clone();
        let accepted = accepted.clone();
        std::thread::Builder::new()
            .name("hanging-server".to_owned())
            .spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            held.push(conn);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?
    };
    Ok(HangingServer {
        addr,
        stop,
        accepted,
        thread: Some(thread),
    })
}

impl HangingServer {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for HangingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ------------------------------------------------------------------ serving

async fn dispatch(
    req: HttpRequest,
    body: web::Bytes,
    routes: web::Data<HashMap<u16, Arc<Inner>>>,
) -> HttpResponse {
    let port = req.app_config().local_addr().port();
    match routes.get(&port) {
        Some(inner) => inner.clone().serve(req, body).await,
        None => HttpResponse::NotFound().finish(),
    }
}

enum Reply {
    /// A notification or a client's response: 202, no body.
    Accepted,
    Message(Value),
}

impl Inner {
    fn behavior(&self) -> UpstreamBehavior {
        lock(&self.behavior).clone()
    }

    async fn serve(self: Arc<Self>, req: HttpRequest, body: Bytes) -> HttpResponse {
        let b = self.behavior();
        if let Some(auth) = &b.bearer {
            if let Some(doc) = self.protected_resource_metadata(&req, auth, &b) {
                return doc;
            }
        }
        self.record_request(&req);
        if let Some(auth) = &b.bearer {
            if let Some(rejection) = self.check_bearer(&req, &body, auth, &b) {
                return rejection;
            }
        }
        if let Some((name, value)) = &b.required_header {
            if header_str(&req, name).as_deref() != Some(value.as_str()) {
                return json_status(
                    StatusCode::UNAUTHORIZED,
                    &json!({ "error": format!("missing or wrong {name} header") }),
                );
            }
        }
        let method = req.method().as_str().to_owned();
        match (b.legacy_sse, method.as_str(), req.path()) {
            (false, "POST", "/mcp") => self.post(&req, body, &b).await,
            (false, "GET", "/mcp") => self.get(&req, &b),
            (false, "DELETE", "/mcp") => self.delete(&req, &b),
            (false, _, "/mcp") => method_not_allowed("GET, POST, DELETE"),
            (true, "GET", "/sse") => self.legacy_open(),
            (true, _, "/sse") => method_not_allowed("GET"),
            (true, "POST", "/messages") => self.legacy_post(&req, body, &b).await,
            _ => HttpResponse::NotFound().finish(),
        }
    }

    fn record_request(&self, req: &HttpRequest) {
        let mut stats = lock(&self.stats);
        stats.http_requests += 1;
        match req.method().as_str() {
            "POST" => stats.posts += 1,
            "GET" => stats.gets += 1,
            "DELETE" => stats.deletes += 1,
            _ => {}
        }
        stats.last_headers = request_headers(req);
    }

    fn record_method(&self, method: &str, msg: &Value) {
        let mut stats = lock(&self.stats);
        *stats.by_method.entry(method.to_owned()).or_default() += 1;
        let headers = stats.last_headers.clone();
        stats.headers_by_method.insert(method.to_owned(), headers);
        if method == "initialize" {
            stats.last_initialize_params = msg.get("params").cloned();
        }
        drop(stats);
        let opens = matches!(method, "initialize" | "server/discover");
        if opens && !self.round_open.swap(true, Ordering::Relaxed) {
            self.gauges.round_opened();
        }
        if method == "tools/list" && self.round_open.swap(false, Ordering::Relaxed) {
            self.gauges.round_closed();
        }
    }

    // -- OAuth-protected resource -----------------------------------------

    /// The MCP endpoint's URL: what the metadata names as `resource`.
    fn endpoint_url(&self, b: &UpstreamBehavior) -> String {
        let path = if b.legacy_sse { "sse" } else { "mcp" };
        format!("http://{}/{path}", self.addr)
    }

    /// `http://127.0.0.1:P/.well-known/oauth-protected-resource/mcp`.
    fn prm_url(&self, b: &UpstreamBehavior) -> String {
        let path = if b.legacy_sse { "sse" } else { "mcp" };
        format!("http://{}{PRM_ROOT_PATH}/{path}", self.addr)
    }

    /// Answers a GET of a protected resource metadata path (a document, or
    /// 404 when that one is switched off); `None` for any other request.
    fn protected_resource_metadata(
        &self,
        req: &HttpRequest,
        auth: &BearerAuth,
        b: &UpstreamBehavior,
    ) -> Option<HttpResponse> {
        let path = req.path();
        if !path.starts_with(PRM_ROOT_PATH) {
            return None;
        }
        let endpoint_path = if b.legacy_sse { "/sse" } else { "/mcp" };
        let exists = if path == PRM_ROOT_PATH {
            auth.prm_at_root
        } else if path.strip_prefix(PRM_ROOT_PATH) == Some(endpoint_path) {
            auth.prm_at_path
        } else {
            false
        };
        let res = if req.method().as_str() != "GET" {
            method_not_allowed("GET")
        } else if exists {
            let mut doc = json!({
                "resource": auth.prm_resource.clone().unwrap_or_else(|| self.endpoint_url(b)),
                "authorization_servers": auth.authorization_servers,
                "bearer_methods_supported": ["header"],
            });
            if !auth.scopes_supported.is_empty() {
                doc["scopes_supported"] = json!(auth.scopes_supported);
            }
            json_status(StatusCode::OK, &doc)
        } else {
            json_status(StatusCode::NOT_FOUND, &json!({ "error": "not found" }))
        };
        lock(&self.stats)
            .prm_requests
            .push((path.to_owned(), res.status().as_u16()));
        Some(res)
    }

    /// 401 without a valid bearer token, 403 with `insufficient_scope`;
    /// `None` lets the request through.
    fn check_bearer(
        &self,
        req: &HttpRequest,
        body: &Bytes,
        auth: &BearerAuth,
        b: &UpstreamBehavior,
    ) -> Option<HttpResponse> {
        let token = header_str(req, "authorization").and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
        let valid = token.as_deref().is_some_and(|t| auth.store.is_valid(t));
        let mut params = Vec::new();
        let status = if !valid {
            if token.is_some() {
                params.push(("error", "invalid_token".to_owned()));
            }
            if let Some(scope) = &auth.challenge_scope {
                params.push(("scope", scope.clone()));
            }
            StatusCode::UNAUTHORIZED
        } else if let Some(scope) = &auth.insufficient_scope {
            params.push(("error", "insufficient_scope".to_owned()));
            params.push(("scope", scope.clone()));
            StatusCode::FORBIDDEN
        } else {
            if let Some(t) = token {
                let mut stats = lock(&self.stats);
                if !stats.bearer_tokens.contains(&t) {
                    stats.bearer_tokens.push(t);
                }
            }
            return None;
        };
        if auth.challenge_resource_metadata {
            let url = auth
                .resource_metadata_url
                .clone()
                .unwrap_or_else(|| self.prm_url(b));
            params.push(("resource_metadata", url));
        }
        let challenge = if params.is_empty() {
            "Bearer".to_owned()
        } else {
            let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("Bearer {}", params.join(", "))
        };
        let rpc_method = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|m| m.get("method").and_then(Value::as_str).map(str::to_owned));
        lock(&self.stats).auth_rejections.push(AuthRejection {
            at: Instant::now(),
            http_method: req.method().as_str().to_owned(),
            path: req.path().to_owned(),
            rpc_method,
            token,
            status: status.as_u16(),
            challenge: challenge.clone(),
        });
        let error = if status == StatusCode::FORBIDDEN {
            "insufficient_scope"
        } else {
            "invalid_token"
        };
        Some(
            HttpResponse::build(status)
                .insert_header((header::WWW_AUTHENTICATE, challenge))
                .content_type("application/json")
                .body(json!({ "error": error }).to_string()),
        )
    }

    // -- Streamable HTTP ------------------------------------------------

    async fn post(&self, req: &HttpRequest, body: Bytes, b: &UpstreamBehavior) -> HttpResponse {
        let _in_flight = b.in_flight.as_ref().map(InFlightProbe::enter);
        if b.strict_accept {
            let accept = header_str(req, "accept").unwrap_or_default();
            if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
                return json_status(
                    StatusCode::NOT_ACCEPTABLE,
                    &rpc_error(Value::Null, -32000, "Not Acceptable: Client must accept both application/json and text/event-stream"),
                );
            }
            let content_type = header_str(req, "content-type").unwrap_or_default();
            if !content_type.starts_with("application/json") {
                return json_status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &rpc_error(
                        Value::Null,
                        -32000,
                        "Unsupported Media Type: Content-Type must be application/json",
                    ),
                );
            }
        }
        let msg: Value = match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return json_status(
                    StatusCode::BAD_REQUEST,
                    &rpc_error(
                        Value::Null,
                        -32600,
                        "Invalid Request: expected one JSON-RPC object",
                    ),
                )
            }
            Err(e) => {
                return json_status(
                    StatusCode::BAD_REQUEST,
                    &rpc_error(Value::Null, -32700, &format!("Parse error: {e}")),
                )
            }
        };
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let key = method.clone().unwrap_or_else(|| "<response>".to_owned());
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        self.record_method(&key, &msg);
        let is_initialize = key == "initialize";
        if let Some(answer) = self.modern_post(req, &msg, &key, b).await {
            return answer;
        }

        let session = header_str(req, "mcp-session-id");
        if b.sessions && !is_initialize {
            if let Some(rejection) = self.check_session(session.as_deref(), b, &id) {
                return rejection;
            }
        }
        if method.is_none() {
            lock(&self.stats).client_responses.push(msg.clone());
        }
        if b.require_protocol_header
            && !is_initialize
            && !self.protocol_header_ok(req, session.as_deref())
        {
            return json_status(
                StatusCode::BAD_REQUEST,
                &rpc_error(
                    id,
                    -32000,
                    "Bad Request: missing or unsupported MCP-Protocol-Version header",
                ),
            );
        }
        if let Some(delay) = b.delay.filter(|_| b.delay_on.matches(&key)) {
            actix_web::rt::time::sleep(delay).await;
        }
        if let Some(fault) = b.fault.as_ref().filter(|_| b.fault_on.matches(&key)) {
            return self.fault_response(fault, id, b);
        }
        let (reply, new_session) = self.rpc(&msg, b, true);
        match reply {
            Reply::Accepted => HttpResponse::Accepted().finish(),
            Reply::Message(v) => self.render(&v, b, new_session),
        }
    }

    /// The 2026-07-28 side of `POST /mcp`: None when the 2025 side answers.
    async fn modern_post(
        &self,
        req: &HttpRequest,
        msg: &Value,
        method: &str,
        b: &UpstreamBehavior,
    ) -> Option<HttpResponse> {
        let header_version = header_str(req, "mcp-protocol-version");
        let modern_header = header_version
            .as_deref()
            .is_some_and(|v| !SUPPORTED_PROTOCOL_VERSIONS.contains(&v));
        match b.era {
            ServerEra::Legacy => return None,
            ServerEra::Dual if !modern_header => return None,
            _ => {}
        }
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let meta = params.get("_meta").cloned().unwrap_or(Value::Null);
        let record = |status: u16| {
            lock(&self.stats).modern_log.push(ModernRecord {
                method: method.to_owned(),
                headers: request_headers(req)
                    .into_iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v))
                    .collect(),
                meta: meta.clone(),
                status,
            });
        };
        let bad = |code: i64, message: &str, data: Option<Value>| {
            let mut body = rpc_error(id.clone(), code, message);
            if let Some(data) = data {
                body["error"]["data"] = data;
            }
            body
        };
        if b.modern_broken {
            record(404);
            return Some(
                HttpResponse::NotFound()
                    .content_type("text/plain")
                    .body("Not Found"),
            );
        }
        if method == "initialize" {
            let supported = json!({ "supported": b.modern_versions });
            return Some(if modern_header {
                record(404);
                json_status(
                    StatusCode::NOT_FOUND,
                    &bad(-32601, "Method not found: initialize", None),
                )
            } else {
                record(400);
                json_status(
                    StatusCode::BAD_REQUEST,
                    &bad(
                        -32600,
                        "Bad Request: this server speaks only 2026-07-28 (no initialize)",
                        Some(supported),
                    ),
                )
            });
        }
        // 1. `_meta` presence.
        let meta_version = meta
            .get("io.modelcontextprotocol/protocolVersion")
            .and_then(Value::as_str);
        let caps_ok = meta
            .get("io.modelcontextprotocol/clientCapabilities")
            .is_some_and(Value::is_object);
        if msg.get("id").is_some() && (meta_version.is_none() || !caps_ok) {
            record(400);
            return Some(json_status(
                StatusCode::BAD_REQUEST,
                &bad(
                    -32602,
                    "Invalid params: _meta must carry protocolVersion and clientCapabilities",
                    None,
                ),
            ));
        }
        // 2. Header/body match.
        let expected_name = match method {
            "tools/call" | "prompts/get" => params.get("name").and_then(Value::as_str),
            "resources/read" => params.get("uri").and_then(Value::as_str),
            _ => None,
        };
        let method_header = header_str(req, "mcp-method").and_then(|v| modern_decode(&v));
        let name_header = header_str(req, "mcp-name").and_then(|v| modern_decode(&v));
        let mismatch = header_version.as_deref() != meta_version
            || method_header.as_deref() != Some(method)
            || name_header.as_deref() != expected_name;
        if mismatch {
            record(400);
            return Some(json_status(
                StatusCode::BAD_REQUEST,
                &bad(
                    -32020,
                    "Header mismatch: MCP-Protocol-Version, Mcp-Method or Mcp-Name",
                    None,
                ),
            ));
        }
        // 3. Version supported.
        let version = header_version.unwrap_or_default();
        if !b.modern_versions.contains(&version) {
            record(400);
            return Some(json_status(
                StatusCode::BAD_REQUEST,
                &bad(
                    -32022,
                    "Unsupported protocol version",
                    Some(json!({ "supported": b.modern_versions, "requested": version })),
                ),
            ));
        }
        record(200);
        let Some(id) = msg.get("id").cloned() else {
            return Some(HttpResponse::Accepted().finish());
        };
        if method == "subscriptions/listen" && b.listen != ListenMode::Unknown {
            return Some(self.listen_response(&id, &params, b));
        }
        let hints = |mut result: Value| {
            result["resultType"] = if b.result_type_on.matches(method) {
                json!(b.result_type)
            } else {
                json!("complete")
            };
            result["ttlMs"] = json!(b.ttl_ms);
            result["cacheScope"] = json!(b.cache_scope);
            result["_meta"] = json!({
                "io.modelcontextprotocol/serverInfo": { "name": b.server_name, "version": "0.0.0-test" }
            });
            result
        };
        let result = match method {
            "server/discover" => {
                let mut capabilities = json!({ "tools": { "listChanged": true } });
                if b.prompts > 0 {
                    capabilities["prompts"] = json!({ "listChanged": false });
                }
                if b.resources > 0 {
                    capabilities["resources"] = json!({ "listChanged": false });
                }
                Ok(hints(json!({
                    "supportedVersions": b.modern_versions,
                    "capabilities": capabilities,
                    "instructions": "modern test upstream",
                })))
            }
            _ => {
                // The 2025 handlers, minus the handshake.
                let (reply, _) = self.rpc(msg, b, false);
                match reply {
                    // Moved out, not cloned: a 100-tool result copied and
                    // dropped once more per request made the modern farm
                    // the slow side of the start-up benchmark.
                    Reply::Message(mut m) => match m.get_mut("result").map(Value::take) {
                        Some(result) => Ok(hints(result)),
                        None => Err(m),
                    },
                    Reply::Accepted => return Some(HttpResponse::Accepted().finish()),
                }
            }
        };
        let message = match result {
            Ok(result) => rpc_result(id, result),
            Err(error) => error,
        };
        Some(self.render(&message, b, None))
    }

    fn check_session(
        &self,
        session: Option<&str>,
        b: &UpstreamBehavior,
        id: &Value,
    ) -> Option<HttpResponse> {
        match session {
            Some(s) if lock(&self.sessions).live.contains_key(s) => None,
            Some(_) => Some(json_status(
                status(b.expired_session_status),
                &rpc_error(id.clone(), -32001, "Session not found"),
            )),
            None if b.require_session => Some(json_status(
                StatusCode::BAD_REQUEST,
                &rpc_error(
                    id.clone(),
                    -32000,
                    "Bad Request: No valid session ID provided",
                ),
            )),
            None => None,
        }
    }

    fn get(&self, req: &HttpRequest, b: &UpstreamBehavior) -> HttpResponse {
        let at = Instant::now();
        let last_event_id = header_str(req, "last-event-id");
        let session_id = header_str(req, "mcp-session-id");
        let session_live = session_id
            .as_deref()
            .is_some_and(|s| lock(&self.sessions).live.contains_key(s));
        let res = self.get_response(req, b, last_event_id.as_deref());
        let mut stats = lock(&self.stats);
        if let Some(last) = &last_event_id {
            stats.last_event_ids.push(last.clone());
        }
        let record = GetRecord {
            at,
            status: res.status().as_u16(),
            session_id,
            session_live,
            last_event_id,
            accept: header_str(req, "accept"),
            protocol_version: header_str(req, "mcp-protocol-version"),
            headers: request_headers(req),
        };
        stats.get_log.push(record);
        res
    }

    fn get_response(
        &self,
        req: &HttpRequest,
        b: &UpstreamBehavior,
        last_event_id: Option<&str>,
    ) -> HttpResponse {
        if let Some(event) = last_event_id.and_then(|last| lock(&self.resumable).remove(last)) {
            return sse_stream_response(stream::iter([Ok::<_, io::Error>(event)]), None);
        }
        let mode = b.get_stream;
        if !matches!(
            mode,
            GetStream::Refuse | GetStream::Status(_) | GetStream::RedirectTo(_)
        ) {
            if let Some(rejection) = self.check_get(req, b) {
                return rejection;
            }
        }
        let body: BodyStream = match mode {
            GetStream::Refuse => return method_not_allowed("POST, DELETE"),
            GetStream::Status(code) => {
                return json_status(status(code), &json!({ "error": "injected GET status" }))
            }
            GetStream::RedirectTo(port) => return redirect_to(port, req.path()),
            GetStream::Open => {
                let opening =
                    stream::iter([Ok::<_, io::Error>(Bytes::from_static(b": stream open\n\n"))]);
                Box::pin(opening.chain(self.push_receiver(b.stream_keepalive)))
            }
            GetStream::ResetAfter(after) => {
                let priming = match b.sse.retry_ms {
                    Some(ms) => format!("id: p1\nretry: {ms}\ndata: \n\n"),
                    None => "id: p1\ndata: \n\n".to_owned(),
                };
                let priming = stream::iter([Ok::<_, io::Error>(Bytes::from(priming))]);
                let window = self
                    .push_receiver(b.stream_keepalive)
                    .take_until(actix_web::rt::time::sleep(after));
                let reset = stream::once(async {
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "injected push-stream reset",
                    ))
                });
                Box::pin(priming.chain(window).chain(reset))
            }
            GetStream::Silent => Box::pin(stream::pending()),
            GetStream::Garbage => {
                let garbage = stream::iter([
                    Ok::<_, io::Error>(Bytes::from_static(b"data: this is not json\n\n")),
                    Ok(Bytes::from_static(
                        b"\x00\x9f<html>this is not SSE {{{\n\n<body>\n\n",
                    )),
                ]);
                Box::pin(garbage.chain(self.push_receiver(b.stream_keepalive)))
            }
            GetStream::OversizedEvent(n) => {
                let event = oversized_event_chunks(n).map(Ok::<_, io::Error>);
                Box::pin(stream::iter(event).chain(self.push_receiver(b.stream_keepalive)))
            }
        };
        sse_stream_response(body, None)
    }

    /// What a real server checks before opening a GET stream.
    fn check_get(&self, req: &HttpRequest, b: &UpstreamBehavior) -> Option<HttpResponse> {
        if b.strict_accept
            && !header_str(req, "accept").is_some_and(|a| a.contains("text/event-stream"))
        {
            return Some(json_status(
                StatusCode::NOT_ACCEPTABLE,
                &rpc_error(
                    Value::Null,
                    -32000,
                    "Not Acceptable: Client must accept text/event-stream",
                ),
            ));
        }
        let session = header_str(req, "mcp-session-id");
        if b.sessions {
            if let Some(rejection) = self.check_session(session.as_deref(), b, &Value::Null) {
                return Some(rejection);
            }
        }
        if b.require_protocol_header && !self.protocol_header_ok(req, session.as_deref()) {
            return Some(json_status(
                StatusCode::BAD_REQUEST,
                &rpc_error(
                    Value::Null,
                    -32000,
                    "Bad Request: missing or unsupported MCP-Protocol-Version header",
                ),
            ));
        }
        None
    }

    /// `MCP-Protocol-Version` is present and is the session's negotiated
    /// version (any supported one without a session).
    fn protocol_header_ok(&self, req: &HttpRequest, session: Option<&str>) -> bool {
        let sent = header_str(req, "mcp-protocol-version");
        let negotiated = session.and_then(|s| lock(&self.sessions).live.get(s).cloned());
        match (&sent, &negotiated) {
            (Some(v), Some(n)) => v == n,
            (Some(v), None) => SUPPORTED_PROTOCOL_VERSIONS.contains(&v.as_str()),
            (None, _) => false,
        }
    }

    /// Registers a new open push stream; the stream yields what the handle
    /// broadcasts and ends when the handle drops its sender.
    fn push_receiver(
        &self,
        keepalive: Option<Duration>,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> {
        let (tx, rx) = unbounded_channel();
        lock(&self.push_streams).push(tx);
        receiver_stream(rx, keepalive)
    }

    /// Writes `messages` (each one event with the next `id:`) to every open
    /// push stream, and (without ids) to every legacy SSE stream. Returns how
    /// many streams got them.
    fn broadcast(&self, messages: &[Value]) -> usize {
        let mut push_events = Vec::with_capacity(messages.len());
        let mut last_id = None;
        for msg in messages {
            let id = self.next_event_id.fetch_add(1, Ordering::Relaxed);
            push_events.push(Bytes::from(format!(
                "id: {id}\nevent: message\ndata: {msg}\n\n"
            )));
            last_id = Some(id.to_string());
        }
        if last_id.is_some() {
            *lock(&self.last_push_event_id) = last_id;
        }
        let legacy_events: Vec<Bytes> = messages.iter().map(message_event).collect();
        let mut sent = 0;
        lock(&self.push_streams).retain(|tx| {
            let ok = push_events.iter().all(|e| tx.send(e.clone()).is_ok());
            sent += usize::from(ok);
            ok
        });
        lock(&self.legacy_streams).retain(|_, tx| {
            let ok = legacy_events.iter().all(|e| tx.send(e.clone()).is_ok());
            sent += usize::from(ok);
            ok
        });
        sent += self.broadcast_listen(messages, |id| Some(id.clone()));
        sent
    }

    /// Writes `messages` to every open listen stream, tagged with
    /// `tag(listen request id)` (None: untagged). Returns how many got them.
    fn broadcast_listen(&self, messages: &[Value], tag: impl Fn(&Value) -> Option<Value>) -> usize {
        let mut sent = 0;
        lock(&self.listen_streams).retain(|(id, tx)| {
            let ok = messages.iter().all(|m| {
                let mut m = m.clone();
                if let Some(tag) = tag(id) {
                    m["params"]["_meta"][LISTEN_TAG] = tag;
                }
                tx.send(message_event(&m)).is_ok()
            });
            sent += usize::from(ok);
            ok
        });
        sent
    }

    /// The answer to `subscriptions/listen` (see [`ListenMode`]).
    fn listen_response(&self, id: &Value, params: &Value, b: &UpstreamBehavior) -> HttpResponse {
        lock(&self.listen_requests).push(params.clone());
        let mut ack = json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": { "notifications": params.get("notifications").cloned().unwrap_or(Value::Null) },
        });
        ack["params"]["_meta"][LISTEN_TAG] = id.clone();
        let ack = stream::iter([Ok::<_, io::Error>(message_event(&ack))]);
        let body: BodyStream = match b.listen {
            ListenMode::Unknown => {
                return json_status(
                    StatusCode::OK,
                    &rpc_error(id.clone(), -32601, "Method not found"),
                )
            }
            ListenMode::Status(code) => {
                return json_status(status(code), &json!({ "error": "injected listen status" }))
            }
            ListenMode::Open => Box::pin(ack.chain(self.listen_receiver(id, b.stream_keepalive))),
            ListenMode::ResetAfter(after) => {
                let window = self
                    .listen_receiver(id, b.stream_keepalive)
                    .take_until(actix_web::rt::time::sleep(after));
                let reset = stream::once(async {
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "injected listen-stream reset",
                    ))
                });
                Box::pin(ack.chain(window).chain(reset))
            }
            ListenMode::NoAck => Box::pin(stream::unfold((), |()| async {
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                Some((Ok(Bytes::from_static(b": keepalive\n\n")), ()))
            })),
            ListenMode::Silent => Box::pin(ack.chain(stream::pending())),
            ListenMode::Garbage => {
                let garbage = stream::iter([
                    Ok::<_, io::Error>(Bytes::from_static(b"data: this is not json\n\n")),
                    Ok(Bytes::from_static(
                        b"\x00\x9f<html>this is not SSE {{{\n\n<body>\n\n",
                    )),
                ]);
                Box::pin(
                    ack.chain(garbage)
                        .chain(self.listen_receiver(id, b.stream_keepalive)),
                )
            }
            ListenMode::OversizedEvent(n) => {
                let event = oversized_event_chunks(n).map(Ok::<_, io::Error>);
                Box::pin(
                    ack.chain(stream::iter(event))
                        .chain(self.listen_receiver(id, b.stream_keepalive)),
                )
            }
        };
        let mut res = HttpResponse::Ok();
        res.content_type("text/event-stream")
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header(("X-Accel-Buffering", "no"));
        res.streaming(body)
    }

    /// Registers a new open listen stream for request `id`.
    fn listen_receiver(
        &self,
        id: &Value,
        keepalive: Option<Duration>,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> {
        let (tx, rx) = unbounded_channel();
        lock(&self.listen_streams).push((id.clone(), tx));
        receiver_stream(rx, keepalive)
    }

    fn delete(&self, req: &HttpRequest, b: &UpstreamBehavior) -> HttpResponse {
        if !b.sessions {
            return method_not_allowed("GET, POST");
        }
        let Some(session) = header_str(req, "mcp-session-id") else {
            return json_status(
                StatusCode::BAD_REQUEST,
                &rpc_error(
                    Value::Null,
                    -32000,
                    "Bad Request: No valid session ID provided",
                ),
            );
        };
        let mut sessions = lock(&self.sessions);
        if sessions.live.remove(&session).is_some() {
            sessions.dead.insert(session);
            drop(sessions);
            lock(&self.stats).sessions_deleted += 1;
            HttpResponse::Ok().finish()
        } else {
            json_status(
                StatusCode::NOT_FOUND,
                &rpc_error(Value::Null, -32001, "Session not found"),
            )
        }
    }

    // -- 2024-11-05 HTTP+SSE --------------------------------------------

    fn legacy_open(&self) -> HttpResponse {
        let session = self.new_session_id();
        let (tx, rx) = unbounded_channel();
        lock(&self.legacy_streams).insert(session.clone(), tx);
        let endpoint = format!("event: endpoint\ndata: /messages?session_id={session}\n\n");
        let first = stream::iter([Ok::<_, io::Error>(Bytes::from(endpoint))]);
        sse_stream_response(first.chain(receiver_stream(rx, None)), None)
    }

    async fn legacy_post(
        &self,
        req: &HttpRequest,
        body: Bytes,
        b: &UpstreamBehavior,
    ) -> HttpResponse {
        let session = web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("session_id").cloned())
            .unwrap_or_default();
        let Some(tx) = lock(&self.legacy_streams).get(&session).cloned() else {
            return HttpResponse::NotFound().body("Could not find session");
        };
        let Ok(msg @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
            return HttpResponse::BadRequest().body("Could not parse message");
        };
        let key = msg
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("<response>")
            .to_owned();
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        self.record_method(&key, &msg);
        if key == "<response>" {
            lock(&self.stats).client_responses.push(msg.clone());
        }

        let event = match b.fault.as_ref().filter(|_| b.fault_on.matches(&key)) {
            Some(Fault::Status(code)) => {
                return json_status(status(*code), &json!({ "error": "injected fault" }))
            }
            Some(Fault::EndlessSse) => return accepted_legacy(),
            Some(Fault::Garbage) => Some(Bytes::from_static(
                b"event: message\ndata: {this is not json\n\n",
            )),
            Some(Fault::Oversized(n)) => {
                let mut event = Vec::with_capacity(n + 32);
                event.extend_from_slice(b"event: message\n");
                oversized_chunks(*n, &id, true).for_each(|c| event.extend_from_slice(&c));
                Some(Bytes::from(event))
            }
            Some(Fault::JsonRpcError { code, message }) => {
                Some(message_event(&rpc_error(id, *code, message)))
            }
            None => match self.rpc(&msg, b, false).0 {
                Reply::Accepted => None,
                Reply::Message(v) => Some(message_event(&v)),
            },
        };
        if let Some(event) = event {
            match b.delay.filter(|_| b.delay_on.matches(&key)) {
                Some(delay) => {
                    actix_web::rt::spawn(async move {
                        actix_web::rt::time::sleep(delay).await;
                        let _ = tx.send(event);
                    });
                }
                None => {
                    if tx.send(event).is_err() {
                        lock(&self.legacy_streams).remove(&session);
                    }
                }
            }
        }
        accepted_legacy()
    }

    // -- JSON-RPC ---------------------------------------------------------

    fn new_session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("s{}-{n}-{nanos:08x}", self.addr.port())
    }

    /// Answers one message; returns the session id created by an `initialize`
    /// (Streamable HTTP with sessions only).
    fn rpc(&self, msg: &Value, b: &UpstreamBehavior, streamable: bool) -> (Reply, Option<String>) {
        let (Some(method), Some(id)) = (
            msg.get("method").and_then(Value::as_str),
            msg.get("id").cloned(),
        ) else {
            return (Reply::Accepted, None);
        };
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let mut new_session = None;
        let result = match method {
            "initialize" => {
                let requested = params.get("protocolVersion").and_then(Value::as_str);
                let version = b
                    .protocol_version
                    .clone()
                    .unwrap_or_else(|| match requested {
                        Some(v) if SUPPORTED_PROTOCOL_VERSIONS.contains(&v) => v.to_owned(),
                        _ => SUPPORTED_PROTOCOL_VERSIONS[0].to_owned(),
                    });
                let mut capabilities = json!({ "tools": { "listChanged": true } });
                if b.prompts > 0 {
                    capabilities["prompts"] = json!({ "listChanged": false });
                }
                if b.resources > 0 {
                    capabilities["resources"] = json!({ "subscribe": false, "listChanged": false });
                }
                if streamable && b.sessions {
                    let session = self.new_session_id();
                    lock(&self.sessions)
                        .live
                        .insert(session.clone(), version.clone());
                    lock(&self.stats).sessions_created += 1;
                    new_session = Some(session);
                }
                Ok(json!({
                    "protocolVersion": version,
                    "capabilities": capabilities,
                    "serverInfo": { "name": b.server_name, "version": "0.0.0-test" },
                }))
            }
            "ping" => Ok(json!({})),
            "tools/list" => page(&params, b, "tools", b.tools + b.raw_tools.len(), |i| {
                listed_tool(i, b)
            }),
            "prompts/list" if b.prompts > 0 => page(
                &params,
                b,
                "prompts",
                b.prompts,
                |i| json!({ "name": format!("prompt_{i}"), "description": format!("Test prompt {i}") }),
            ),
            "resources/list" if b.resources > 0 => page(
                &params,
                b,
                "resources",
                b.resources,
                |i| json!({ "uri": format!("test://resource/{i}"), "name": format!("resource_{i}") }),
            ),
            "tools/call" => call_tool(&params, b),
            other => Err((-32601, format!("Method not found: {other}"))),
        };
        let message = match result {
            Ok(result) => rpc_result(id, result),
            Err((code, message)) => rpc_error(id, code, &message),
        };
        (Reply::Message(message), new_session)
    }

    // -- rendering ----------------------------------------------------------

    fn render(&self, msg: &Value, b: &UpstreamBehavior, session: Option<String>) -> HttpResponse {
        match b.response {
            ResponseMode::Json => {
                let mut res = HttpResponse::Ok();
                res.content_type("application/json");
                if let Some(s) = session {
                    res.insert_header(("Mcp-Session-Id", s));
                }
                res.body(msg.to_string())
            }
            ResponseMode::Sse => {
                let style = &b.sse;
                let priming_id = self
                    .next_event_id
                    .fetch_add(1, Ordering::Relaxed)
                    .to_string();
                let mut priming = format!("id: {priming_id}\n");
                if let Some(ms) = style.retry_ms {
                    priming.push_str(&format!("retry: {ms}\n"));
                }
                priming.push_str("data: \n\n");
                let event_id = self.next_event_id.fetch_add(1, Ordering::Relaxed);
                let mut event = format!("id: {event_id}\nevent: message\n");
                let data = if style.multiline {
                    serde_json::to_string_pretty(msg).unwrap_or_else(|_| msg.to_string())
                } else {
                    msg.to_string()
                };
                for line in data.lines() {
                    event.push_str("data: ");
                    event.push_str(line);
                    event.push('\n');
                }
                event.push('\n');
                if style.crlf {
                    priming = priming.replace('\n', "\r\n");
                    event = event.replace('\n', "\r\n");
                }
                let body = if style.drop_before_response {
                    lock(&self.resumable).insert(priming_id, Bytes::from(event));
                    priming.into_bytes()
                } else {
                    let mut all = priming.into_bytes();
                    all.extend_from_slice(event.as_bytes());
                    all
                };
                match style.chunk_size.filter(|&n| n > 0) {
                    Some(n) => {
                        let chunks: Vec<Bytes> =
                            body.chunks(n).map(Bytes::copy_from_slice).collect();
                        let slow = stream::iter(chunks).then(|chunk| async move {
                            actix_web::rt::time::sleep(Duration::from_millis(1)).await;
                            Ok::<_, io::Error>(chunk)
                        });
                        sse_stream_response(slow, session)
                    }
                    None => sse_stream_response(
                        stream::iter([Ok::<_, io::Error>(Bytes::from(body))]),
                        session,
                    ),
                }
            }
        }
    }

    fn fault_response(&self, fault: &Fault, id: Value, b: &UpstreamBehavior) -> HttpResponse {
        let sse = b.response == ResponseMode::Sse;
        let content_type = if sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        match fault {
            Fault::Status(code) => {
                json_status(status(*code), &json!({ "error": "injected fault" }))
            }
            Fault::Garbage => {
                let body: &'static [u8] = if sse {
                    b"event: message\ndata: {this is not json\n\n"
                } else {
                    b"\x00\x9f<html>this is not json {{{"
                };
                HttpResponse::Ok().content_type(content_type).body(body)
            }
            Fault::Oversized(n) => {
                let chunks = oversized_chunks(*n, &id, sse).map(Ok::<_, io::Error>);
                HttpResponse::Ok()
                    .content_type(content_type)
                    .streaming(stream::iter(chunks))
            }
            Fault::EndlessSse => {
                let priming = format!(
                    "id: {}\ndata: \n\n",
                    self.next_event_id.fetch_add(1, Ordering::Relaxed)
                );
                let keepalive = stream::unfold((), |()| async {
                    actix_web::rt::time::sleep(ENDLESS_KEEPALIVE).await;
                    Some((
                        Ok::<_, io::Error>(Bytes::from_static(b": keepalive\n\n")),
                        (),
                    ))
                });
                let first = stream::iter([Ok::<_, io::Error>(Bytes::from(priming))]);
                sse_stream_response(first.chain(keepalive), None)
            }
            Fault::JsonRpcError { code, message } => {
                self.render(&rpc_error(id, *code, message), b, None)
            }
        }
    }
}

/// One `*/list` page: `cursor` is `c-<start>` (or the loop cursor).
fn page(
    params: &Value,
    b: &UpstreamBehavior,
    key: &str,
    total: usize,
    item: impl Fn(usize) -> Value,
) -> Result<Value, (i64, String)> {
    let start = match params.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) if c == LOOP_CURSOR => 0,
        Some(Value::String(c)) => c
            .strip_prefix("c-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n <= total)
            .ok_or_else(|| (-32602, format!("Invalid cursor: {c}")))?,
        Some(other) => return Err((-32602, format!("Invalid cursor: {other}"))),
    };
    let end = match b.page_size {
        Some(size) if size > 0 => (start + size).min(total),
        _ => total,
    };
    let items: Vec<Value> = (start..end).map(item).collect();
    // Moved in: `json!` would copy the whole list through `to_value`.
    let mut result = Value::Object(Map::from_iter([(key.to_owned(), Value::Array(items))]));
    if b.cursor_loop {
        result["nextCursor"] = json!(LOOP_CURSOR);
    } else if end < total {
        result["nextCursor"] = json!(format!("c-{end}"));
    }
    Ok(result)
}

/// The `i`th listed tool: a generated one, then [`UpstreamBehavior::raw_tools`].
fn listed_tool(i: usize, b: &UpstreamBehavior) -> Value {
    match i.checked_sub(b.tools) {
        Some(raw) => b.raw_tools.get(raw).cloned().unwrap_or(Value::Null),
        None => tool_json(i, b),
    }
}

/// A tool as the upstream lists it; `_meta` and `xTestExtra` are there to
/// check that the engine keeps fields it does not know, verbatim.
fn tool_json(i: usize, b: &UpstreamBehavior) -> Value {
    let mut description = format!("Test tool {i} of {}", b.server_name);
    if b.description_padding > 0 {
        description.push(' ');
        description.extend(std::iter::repeat_n('x', b.description_padding));
    }
    json!({
        "name": format!("{}{i}", b.tool_prefix),
        "description": description,
        "inputSchema": {
            "type": "object",
            "properties": { "value": { "type": "string" } },
        },
        "annotations": { "readOnlyHint": true },
        "_meta": { "test/index": i },
        "xTestExtra": { "index": i, "server": b.server_name },
    })
}

fn call_tool(params: &Value, b: &UpstreamBehavior) -> Result<Value, (i64, String)> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let known = name
        .strip_prefix(b.tool_prefix.as_str())
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|i| i < b.tools);
    if !known {
        return call_raw_tool(name, params, b);
    }
    let arguments = params.get("arguments").cloned().unwrap_or(json!({}));
    Ok(json!({
        "content": [{ "type": "text", "text": format!("{name} called on {} with {arguments}", b.server_name) }],
        "isError": false,
    }))
}

/// `tools/call` of one of `raw_tools`: echoes the arguments; a tool with
/// `"xTestIsError": true` answers `isError: true`.
fn call_raw_tool(name: &str, params: &Value, b: &UpstreamBehavior) -> Result<Value, (i64, String)> {
    let Some(tool) = b.raw_tools.iter().find(|t| t["name"] == name) else {
        return Err((-32602, format!("Unknown tool: {name}")));
    };
    let arguments = params.get("arguments").cloned().unwrap_or(json!({}));
    Ok(json!({
        "content": [{ "type": "text", "text": format!("{name} called with {arguments}") }],
        "isError": tool["xTestIsError"] == true,
    }))
}

/// The chunks of a valid response of about `total` bytes (a single tool with
/// a huge description), as a JSON body or one SSE `data:` line.
fn oversized_chunks(total: usize, id: &Value, sse: bool) -> impl Iterator<Item = Bytes> {
    let prefix = format!(
        "{}{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"tools\":[{{\"name\":\"huge\",\"description\":\"",
        if sse { "event: message\ndata: " } else { "" }
    );
    let suffix = if sse { "\"}]}}\n\n" } else { "\"}]}}" };
    let filler = total.saturating_sub(prefix.len() + suffix.len());
    let chunk = Bytes::from(vec![b'a'; OVERSIZED_CHUNK]);
    let last = chunk.slice(..filler % OVERSIZED_CHUNK);
    std::iter::once(Bytes::from(prefix))
        .chain(std::iter::repeat_n(chunk, filler / OVERSIZED_CHUNK))
        .chain(std::iter::once(last))
        .chain(std::iter::once(Bytes::from_static(suffix.as_bytes())))
}

/// A boxed response body.
/// The `_meta` key that tags a listen stream's frames.
const LISTEN_TAG: &str = "io.modelcontextprotocol/subscriptionId";

type BodyStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>>>>;

/// A 307 to the same path on `127.0.0.1:<port>`, with a secret-looking query.
fn redirect_to(port: u16, path: &str) -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((
            header::LOCATION,
            format!("http://127.0.0.1:{port}{path}?api_key=redirect-secret"),
        ))
        .finish()
}

/// The chunks of [`GetStream::OversizedEvent`]: one `data:` line of about
/// `total` bytes holding a valid notification, then the blank line.
fn oversized_event_chunks(total: usize) -> impl Iterator<Item = Bytes> {
    let prefix = r#"data: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","logger":"test-upstream","data":""#;
    let suffix = "\"}}\n\n";
    let filler = total.saturating_sub(prefix.len() + suffix.len());
    let chunk = Bytes::from(vec![b'a'; OVERSIZED_CHUNK]);
    let last = chunk.slice(..filler % OVERSIZED_CHUNK);
    std::iter::once(Bytes::from_static(prefix.as_bytes()))
        .chain(std::iter::repeat_n(chunk, filler / OVERSIZED_CHUNK))
        .chain(std::iter::once(last))
        .chain(std::iter::once(Bytes::from_static(suffix.as_bytes())))
}

/// What `rx` gets, ending when its sender is dropped; with `keepalive`, a
/// comment whenever that long passes without a message.
fn receiver_stream(
    rx: UnboundedReceiver<Bytes>,
    keepalive: Option<Duration>,
) -> impl Stream<Item = Result<Bytes, io::Error>> {
    stream::unfold(rx, move |mut rx| async move {
        let next = match keepalive {
            None => rx.recv().await,
            Some(every) => tokio::select! {
                next = rx.recv() => next,
                () = actix_web::rt::time::sleep(every) => Some(Bytes::from_static(b": keepalive\n\n")),
            },
        };
        next.map(|b| (Ok(b), rx))
    })
}

fn sse_stream_response<S>(body: S, session: Option<String>) -> HttpResponse
where
    S: Stream<Item = Result<Bytes, io::Error>> + 'static,
{
    let mut res = HttpResponse::Ok();
    res.content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if let Some(s) = session {
        res.insert_header(("Mcp-Session-Id", s));
    }
    res.streaming(Box::pin(body))
}

fn message_event(msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}

/// A JSON-RPC response carrying `result`, moved in (`json!` would copy
/// it whole through `to_value`: for a 100-tool listing, as much work as
/// building it).
fn rpc_result(id: Value, result: Value) -> Value {
    Value::Object(Map::from_iter([
        ("jsonrpc".to_owned(), Value::from("2.0")),
        ("id".to_owned(), id),
        ("result".to_owned(), result),
    ]))
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn json_status(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow))
        .finish()
}

fn accepted_legacy() -> HttpResponse {
    HttpResponse::Accepted().body("Accepted")
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// All headers of `req`, lower-case names.
fn request_headers(req: &HttpRequest) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A standard header value as the spec encodes it: `=?base64?..?=` decoded
/// (None when that is not valid base64 of UTF-8), others as they are,
/// without the padding whitespace servers must accept.
fn modern_decode(value: &str) -> Option<String> {
    let value = value.trim();
    let Some(inner) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Some(value.to_owned());
    };
    let mut out = Vec::with_capacity(inner.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in inner.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

fn header_str(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
