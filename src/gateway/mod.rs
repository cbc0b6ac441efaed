//! The MCP endpoint (`/mcp`, `/mcp/{name}`): the catalog served to MCP
//! clients of both eras on one path (ADR 0017).
//!
//! - A 2026-07-28 client is recognized by its `MCP-Protocol-Version`
//!   header (or, without one, its `_meta`): stateless, every request
//!   checked as the spec says ([`wire::validate_modern`]); `server/discover`,
//!   `tools/list`, `tools/call`, `subscriptions/listen`.
//! - A 2025 client starts with `initialize` and gets an `Mcp-Session-Id`
//!   ([`sessions`]); `ping`, `tools/list`, `tools/call`, the GET stream,
//!   DELETE.
//! - Listings are pre-serialized per catalog version and scope
//!   ([`listing`]); their cache hints come from the covered servers'
//!   schedules ([`hints`]); list_changed is fanned out by [`hub`]; calls go
//!   over the upstream's live session ([`calls`]).
//!
//! Every route is in the API's route table with [`crate::api::Access::Mcp`],
//! so the guard's Host, Origin and key checks run before any of this.

// An error here is the answer to one failed request, built once: its size
// costs nothing that boxing would save.
#![allow(clippy::result_large_err)]

pub mod calls;
pub mod hints;
pub mod hub;
pub mod listing;
pub mod relay;
pub mod sessions;
pub mod wire;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use bytes::Bytes;
use discovery_actors::calls::{CallError, CallRoutesSnapshot};
use discovery_actors::{Catalog, ServersSnapshot};
use discovery_config::Config;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::api::ApiState;
use crate::metrics::Metrics;
use calls::{CallLimits, CallRequest, Refusal};
use hints::Hints;
use hub::{sse_event, Hub};
use listing::{Listings, Scope};
use sessions::{LegacySession, Sessions};
use wire::{Message, RpcError};

/// Largest request body (a `tools/call` with big arguments fits).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The session header of the 2025 Streamable HTTP transport.
const SESSION_HEADER: &str = "mcp-session-id";

/// Servers named in `instructions` at most.
const INSTRUCTIONS_MAX_SERVERS: usize = 20;

/// The endpoint's shared state (one per application, shared by workers).
pub struct Gateway {
    listings: Arc<Listings>,
    hints: Hints,
    hub: Arc<Hub>,
    sessions: Sessions,
    calls: Arc<CallLimits>,
    routes: watch::Receiver<CallRoutesSnapshot>,
    metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(routes: watch::Receiver<CallRoutesSnapshot>, metrics: Arc<Metrics>) -> Self {
        Self {
            listings: Arc::default(),
            hints: Hints::default(),
            hub: Arc::new(Hub::new(metrics.clone())),
            sessions: Sessions::default(),
            calls: Arc::default(),
            routes,
            metrics,
        }
    }
}

/// Which era a request speaks, with what that era knows of the client.
enum Era {
    Modern { capabilities: Value },
    Legacy { session: Option<Arc<LegacySession>> },
}

impl Era {
    fn is_modern(&self) -> bool {
        matches!(self, Era::Modern { .. })
    }
}

/// Everything one request works on, read once.
struct Ctx {
    state: web::Data<ApiState>,
    config: Arc<Config>,
    catalog: Arc<Catalog>,
    servers: Arc<ServersSnapshot>,
    scope: Scope,
}

impl Ctx {
    fn gateway(&self) -> &Arc<Gateway> {
        &self.state.gateway
    }
}

// ---- routes ---------------------------------------------------------------

#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    operation_id = "mcp_post",
    summary = "MCP: every tool of the catalog under its public name",
    request_body(content = crate::api::openapi::JsonRpcMessage, content_type = "application/json",
        description = "One JSON-RPC request or notification (no batches)."),
    responses(
        (status = 200, description = "The JSON-RPC response (`application/json`), or an SSE stream (`text/event-stream`: `subscriptions/listen`, a call with a progress token, a 2025 call whose upstream asks the client something: sampling, elicitation, roots). A 2025 `initialize` answers with `Mcp-Session-Id`.",
            content((crate::api::openapi::JsonRpcMessage = "application/json"), (String = "text/event-stream"))),
        (status = 202, description = "A notification was taken, or a 2025 client's JSON-RPC response to a request relayed to it during a call."),
        (status = 400, description = "A JSON-RPC error: not JSON-RPC (-32700, -32600), a 2026-07-28 request without `_meta` (-32602), headers not matching the body (-32020), an unsupported version (-32022), a 2025 request without a session, a response to no relayed request waiting for it (unknown id, answered already, or its call ended).", body = crate::api::openapi::JsonRpcMessage),
        (status = 404, description = "A JSON-RPC error: an unknown or retired method (-32601), an unknown or expired 2025 session (-32001).", body = crate::api::openapi::JsonRpcMessage),
        (status = 406, description = "A JSON-RPC error: the answer is an SSE stream and `Accept` does not list `text/event-stream`.", body = crate::api::openapi::JsonRpcMessage),
        (status = 503, description = "A JSON-RPC error: `mcp.max_sessions` 2025 sessions are live.", body = crate::api::openapi::JsonRpcMessage),
    ),
    security((), ("admin_key" = [])),
)]
pub(crate) async fn post_all(
    state: web::Data<ApiState>,
    req: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    post(state, req, body, None).await
}

#[utoipa::path(
    post,
    path = "/mcp/{name}",
    tag = "mcp",
    operation_id = "mcp_post_named",
    summary = "MCP: one server's tools, or a view's",
    params(("name" = String, Path, description = "A server (its tools under their upstream names) or a view (`views.<name>`)")),
    request_body(content = crate::api::openapi::JsonRpcMessage, content_type = "application/json",
        description = "One JSON-RPC request or notification (no batches)."),
    responses(
        (status = 200, description = "The JSON-RPC response (`application/json`), or an SSE stream (`text/event-stream`: `subscriptions/listen`, a call with a progress token, a 2025 call whose upstream asks the client something: sampling, elicitation, roots). A 2025 `initialize` answers with `Mcp-Session-Id`.",
            content((crate::api::openapi::JsonRpcMessage = "application/json"), (String = "text/event-stream"))),
        (status = 202, description = "A notification was taken, or a 2025 client's JSON-RPC response to a request relayed to it during a call."),
        (status = 400, description = "A JSON-RPC error: not JSON-RPC (-32700, -32600), a 2026-07-28 request without `_meta` (-32602), headers not matching the body (-32020), an unsupported version (-32022), a 2025 request without a session, a response to no relayed request waiting for it (unknown id, answered already, or its call ended).", body = crate::api::openapi::JsonRpcMessage),
        (status = 404, description = "A JSON-RPC error: an unknown or retired method (-32601), an unknown or expired 2025 session (-32001), or no server or view of that name.", body = crate::api::openapi::JsonRpcMessage),
        (status = 406, description = "A JSON-RPC error: the answer is an SSE stream and `Accept` does not list `text/event-stream`.", body = crate::api::openapi::JsonRpcMessage),
        (status = 503, description = "A JSON-RPC error: `mcp.max_sessions` 2025 sessions are live.", body = crate::api::openapi::JsonRpcMessage),
    ),
    security((), ("admin_key" = [])),
)]
pub(crate) async fn post_named(
    state: web::Data<ApiState>,
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Payload,
) -> HttpResponse {
    post(state, req, body, Some(name.into_inner())).await
}

#[utoipa::path(
    get,
    path = "/mcp",
    tag = "mcp",
    operation_id = "mcp_get",
    summary = "MCP (2025 sessions): the server-to-client stream",
    responses(
        (status = 200, description = "An SSE stream of `notifications/tools/list_changed`.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A JSON-RPC error: no `Mcp-Session-Id`.", body = crate::api::openapi::JsonRpcMessage),
        (status = 404, description = "A JSON-RPC error: the session is unknown or expired.", body = crate::api::openapi::JsonRpcMessage),
        (status = 406, description = "A JSON-RPC error: `Accept` does not list `text/event-stream`.", body = crate::api::openapi::JsonRpcMessage),
    ),
    security((), ("admin_key" = [])),
)]
pub(crate) async fn get_all(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    get_stream(state, req, None)
}

#[utoipa::path(
    get,
    path = "/mcp/{name}",
    tag = "mcp",
    operation_id = "mcp_get_named",
    summary = "MCP (2025 sessions): the server-to-client stream of one server or view",
    params(("name" = String, Path, description = "A server (its tools under their upstream names) or a view (`views.<name>`)")),
    responses(
        (status = 200, description = "An SSE stream of `notifications/tools/list_changed`.", content_type = "text/event-stream", body = String),
        (status = 400, description = "A JSON-RPC error: no `Mcp-Session-Id`.", body = crate::api::openapi::JsonRpcMessage),
        (status = 404, description = "A JSON-RPC error: the session is unknown or expired, or no server or view of that name.", body = crate::api::openapi::JsonRpcMessage),
        (status = 406, description = "A JSON-RPC error: `Accept` does not list `text/event-stream`.", body = crate::api::openapi::JsonRpcMessage),
    ),
    security((), ("admin_key" = [])),
)]
pub(crate) async fn get_named(
    state: web::Data<ApiState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    get_stream(state, req, Some(name.into_inner()))
}

#[utoipa::path(
    delete,
    path = "/mcp",
    tag = "mcp",
    operation_id = "mcp_delete",
    summary = "MCP (2025 sessions): end the session",
    responses(
        (status = 200, description = "The session ended; its streams close and its calls are cancelled."),
        (status = 400, description = "A JSON-RPC error: no `Mcp-Session-Id`.", body = crate::api::openapi::JsonRpcMessage),
        (status = 404, description = "A JSON-RPC error: the session is unknown or expired.", body = crate::api::openapi::JsonRpcMessage),
        (status = 406, description = "A JSON-RPC error: `Accept` does not list `text/event-stream`.", body = crate::api::openapi::JsonRpcMessage),
    ),
    security((), ("admin_key" = [])),
)]
pub(crate) async fn delete_all(state: web::Data<ApiState>, req: HttpRequest) -> HttpResponse {
    delete(state, req, None)
}

#[utoipa::path(
    delete,
    path = "/mcp/{name}",
    tag = "mcp",
    operation_id = "mcp_delete_named",
    summary = "MCP (2025 sessions): end a session of one server or view",
    params(("name" = String, Path, description = "A server (its tools under their upstream names) or a view (`views.<name>`)")),
    responses(
        (status = 200, description = "The session ended; its streams close and its calls are cancelled."),
        (status = 400, description = "A JSON-RPC error: no `Mcp-Session-Id`.", body = crate::api::openapi::JsonRpcMessage),
        (status = 404, description = "A JSON-RPC error: the session is unknown or expired, or no server or view of that name.", body = crate::api::openapi::JsonRpcMessage),
        (status = 406, description = "A JSON-RPC error: `Accept` does not list `text/event-stream`.", body = crate::api::openapi::JsonRpcMessage),
    ),
    security((), ("admin_key" = [])),
)]
pub(crate) async fn delete_named(
    state: web::Data<ApiState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    delete(state, req, Some(name.into_inner()))
}

/// The context of a request to `/mcp` (None) or `/mcp/{name}`.
fn context(
    state: web::Data<ApiState>,
    name: Option<String>,
    id: Option<&Value>,
) -> Result<Ctx, RpcError> {
    let config = state.config.borrow().clone();
    let servers = state.servers();
    let scope = match name {
        None => Scope::All,
        Some(n) if config.views.contains_key(n.as_str()) => Scope::View(n),
        Some(n) if servers.servers.contains_key(n.as_str()) => Scope::Server(n),
        Some(n) => {
            return Err(RpcError::new(
                StatusCode::NOT_FOUND,
                id,
                wire::INVALID_REQUEST,
                format!(
                    "no server or view named {n:?}. Hint: GET /v1/servers lists the servers; views are configured under views:"
                ),
            ))
        }
    };
    let catalog = state.catalog();
    // The fan-out task starts with the first request of any kind, so a
    // listener never waits for it.
    state.gateway.hub.start(
        state.catalog.clone(),
        state.config.clone(),
        state.gateway.listings.clone(),
    );
    Ok(Ctx {
        state,
        config,
        catalog,
        servers,
        scope,
    })
}

async fn post(
    state: web::Data<ApiState>,
    req: HttpRequest,
    payload: web::Payload,
    name: Option<String>,
) -> HttpResponse {
    if let Err(e) = crate::api::admin::require_reader(&req, &state) {
        return actix_web::ResponseError::error_response(&e);
    }
    let body = match read_body(payload).await {
        Ok(b) => b,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let msg = match wire::parse_any(&body) {
        Ok(wire::Parsed::Message(m)) => m,
        Ok(wire::Parsed::Response { id, answer }) => {
            return answer_relayed(state, &req, name, &id, answer)
        }
        Err(e) => return error_response(&e),
    };
    let ctx = match context(state, name, msg.id.as_ref()) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let result = if wire::is_modern(req.headers(), &msg) {
        modern(&ctx, &req, msg).await
    } else {
        legacy(&ctx, &req, msg).await
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// A 2025 client's response to a request relayed to it (ADR 0024), on
/// its session.
fn answer_relayed(
    state: web::Data<ApiState>,
    req: &HttpRequest,
    name: Option<String>,
    id: &Value,
    answer: discovery_actors::mcp::relay::ClientAnswer,
) -> HttpResponse {
    let ctx = match context(state, name, Some(id)) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    match legacy_session(&ctx, req, Some(id)) {
        Ok(session) => relay::answered(&session, id, answer),
        Err(e) => error_response(&e),
    }
}

/// The request body, at most [`MAX_BODY_BYTES`] (the API's error shape
/// beyond it, like every other route).
async fn read_body(mut payload: web::Payload) -> Result<Bytes, crate::api::ApiError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut payload).await {
        let chunk = chunk.map_err(|e| {
            crate::api::ApiError::BadRequest(format!("reading the body failed: {e}"))
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(crate::api::ApiError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

// ---- 2026-07-28 -------------------------------------------------------------

async fn modern(ctx: &Ctx, req: &HttpRequest, msg: Message) -> Result<HttpResponse, RpcError> {
    if msg.is_notification() {
        // Stateless: nothing a notification can change here (a request is
        // cancelled by closing its stream).
        return Ok(HttpResponse::Accepted().finish());
    }
    let capabilities = wire::validate_modern(req.headers(), &msg)?;
    let id = msg.id.clone().unwrap_or(Value::Null);
    let era = Era::Modern { capabilities };
    match msg.method.as_str() {
        "server/discover" => Ok(json_result(&id, &discover_result(ctx, true))),
        "tools/list" => list_tools(ctx, req, &msg, &era),
        "tools/call" => call_tool(ctx, req, msg, era).await,
        "subscriptions/listen" => listen(ctx, req, &msg),
        other => Err(RpcError::new(
            StatusCode::NOT_FOUND,
            msg.id.as_ref(),
            wire::METHOD_NOT_FOUND,
            match other {
                "initialize" | "ping" | "logging/setLevel" | "resources/subscribe"
                | "resources/unsubscribe" => format!(
                    "Method not found: {other} is not part of protocol {} (it is served to 2025 sessions, which start with initialize and no MCP-Protocol-Version header)",
                    wire::MODERN_VERSION
                ),
                _ => format!("Method not found: {other} (this endpoint serves tools only)"),
            },
        )),
    }
}

/// The `server/discover` (modern) or `initialize` (2025) result's common
/// part, with the era's extras.
fn discover_result(ctx: &Ctx, modern: bool) -> Value {
    let info = server_info();
    let mut result = json!({
        "capabilities": {"tools": {"listChanged": true}},
        "serverInfo": info,
        "instructions": instructions(ctx),
    });
    if modern {
        let hint = ctx
            .gateway()
            .hints
            .get(&ctx.servers, &ctx.config, &ctx.scope);
        result["supportedVersions"] = json!([wire::MODERN_VERSION]);
        result["resultType"] = json!("complete");
        result["ttlMs"] = json!(hint.ttl_ms(chrono::Utc::now(), ctx.config.mcp.max_ttl));
        result["cacheScope"] = json!(hint.scope(&ctx.config));
        result["_meta"] = json!({ wire::META_SERVER_INFO: info });
    }
    result
}

fn server_info() -> Value {
    json!({"name": "mcp-discovery", "title": "mcp-discovery", "version": env!("CARGO_PKG_VERSION")})
}

/// What the endpoint is, naming the servers it covers.
fn instructions(ctx: &Ctx) -> String {
    let names: Vec<&str> = ctx
        .servers
        .servers
        .keys()
        .filter(|n| ctx.scope.covers(n, &ctx.config))
        .map(String::as_str)
        .collect();
    let shown = names
        .iter()
        .take(INSTRUCTIONS_MAX_SERVERS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let more = names.len().saturating_sub(INSTRUCTIONS_MAX_SERVERS);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    let sep = &ctx.config.catalog.separator;
    match &ctx.scope {
        Scope::All => format!(
            "The tools of {} MCP servers ({shown}{more}), aggregated by mcp-discovery. Each tool is named <server>{sep}<tool>; calls go to the server that owns it.",
            names.len()
        ),
        Scope::Server(s) => format!(
            "The tools of the MCP server {s:?}, through mcp-discovery, under their own names."
        ),
        Scope::View(v) => format!(
            "The view {v:?} of mcp-discovery: tools of {shown}{more}, named <server>{sep}<tool>."
        ),
    }
}

// ---- 2025 -------------------------------------------------------------------

async fn legacy(ctx: &Ctx, req: &HttpRequest, msg: Message) -> Result<HttpResponse, RpcError> {
    if msg.method == "initialize" {
        return initialize(ctx, &msg);
    }
    let session = legacy_session(ctx, req, msg.id.as_ref())?;
    if msg.is_notification() {
        if msg.method == "notifications/cancelled" {
            if let Some(id) = msg.params.get("requestId") {
                session.cancel_call(id);
            }
        }
        return Ok(HttpResponse::Accepted().finish());
    }
    let id = msg.id.clone().unwrap_or(Value::Null);
    let era = Era::Legacy {
        session: Some(session),
    };
    match msg.method.as_str() {
        "ping" => Ok(json_result(&id, &json!({}))),
        "tools/list" => list_tools(ctx, req, &msg, &era),
        "tools/call" => call_tool(ctx, req, msg, era).await,
        other => Err(RpcError::new(
            StatusCode::OK,
            msg.id.as_ref(),
            wire::METHOD_NOT_FOUND,
            format!("Method not found: {other} (this endpoint serves tools only)"),
        )),
    }
}

fn initialize(ctx: &Ctx, msg: &Message) -> Result<HttpResponse, RpcError> {
    let Some(id) = msg.id.clone() else {
        return Ok(HttpResponse::Accepted().finish());
    };
    let requested = msg.params.get("protocolVersion").and_then(Value::as_str);
    let version = requested
        .filter(|v| wire::LEGACY_VERSIONS.contains(v))
        .unwrap_or(wire::LEGACY_VERSIONS[0])
        .to_owned();
    let capabilities = msg
        .params
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mcp = &ctx.config.mcp;
    let (session, expired) = ctx
        .gateway()
        .sessions
        .create(
            ctx.scope.clone(),
            version.clone(),
            capabilities,
            mcp.max_sessions as usize,
            mcp.session_idle_timeout,
        )
        .map_err(|e| {
            RpcError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&id),
                wire::SERVER_ERROR,
                e.to_string(),
            )
        })?;
    for gone in &expired {
        ctx.gateway().hub.close_session(gone);
    }
    ctx.gateway()
        .metrics
        .mcp_sessions(ctx.gateway().sessions.len());
    let mut result = discover_result(ctx, false);
    result["protocolVersion"] = json!(version);
    let mut res = json_result(&id, &result);
    if let Ok(value) = header::HeaderValue::from_str(&session.id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static(SESSION_HEADER), value);
    }
    Ok(res)
}

/// The live session a 2025 request names.
fn legacy_session(
    ctx: &Ctx,
    req: &HttpRequest,
    id: Option<&Value>,
) -> Result<Arc<LegacySession>, RpcError> {
    let Some(sid) = wire::header_str(req.headers(), SESSION_HEADER) else {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            id,
            wire::SERVER_ERROR,
            "Bad Request: no Mcp-Session-Id header. Hint: a 2025 client starts with initialize; a 2026-07-28 client sends MCP-Protocol-Version and _meta on every request",
        ));
    };
    let mcp = &ctx.config.mcp;
    let not_found = || {
        RpcError::new(
            StatusCode::NOT_FOUND,
            id,
            wire::SESSION_NOT_FOUND,
            "Session not found (expired, deleted, or of another path): initialize again",
        )
    };
    match ctx.gateway().sessions.get(sid, mcp.session_idle_timeout) {
        Some(s) if s.scope == ctx.scope => Ok(s),
        // A session of another path: refused here, left alone there.
        Some(_) => Err(not_found()),
        None => {
            // Gone (or expired just now): its streams go with it.
            ctx.gateway().hub.close_session(sid);
            ctx.gateway()
                .metrics
                .mcp_sessions(ctx.gateway().sessions.len());
            Err(not_found())
        }
    }
}

fn get_stream(state: web::Data<ApiState>, req: HttpRequest, name: Option<String>) -> HttpResponse {
    if let Err(e) = crate::api::admin::require_reader(&req, &state) {
        return actix_web::ResponseError::error_response(&e);
    }
    let ctx = match context(state, name, None) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let session = match legacy_session(&ctx, &req, None) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    if !wire::accepts_sse(req.headers()) {
        return error_response(&RpcError::new(
            StatusCode::NOT_ACCEPTABLE,
            None,
            wire::INVALID_REQUEST,
            "the GET stream is text/event-stream. Hint: send Accept: text/event-stream",
        ));
    }
    let seen = seen_fingerprint(&ctx);
    let frame = sse_event(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
    let stream = ctx.gateway().hub.listen(
        ctx.scope.clone(),
        seen,
        // An SSE comment first, so the client sees the stream open at once.
        Some(Bytes::from_static(b": stream open\n\n")),
        frame,
        Some(session.id.clone()),
    );
    sse_response().streaming(stream)
}

fn delete(state: web::Data<ApiState>, req: HttpRequest, name: Option<String>) -> HttpResponse {
    if let Err(e) = crate::api::admin::require_reader(&req, &state) {
        return actix_web::ResponseError::error_response(&e);
    }
    let ctx = match context(state, name, None) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    let session = match legacy_session(&ctx, &req, None) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    ctx.gateway().sessions.remove(&session.id);
    ctx.gateway().hub.close_session(&session.id);
    ctx.gateway()
        .metrics
        .mcp_sessions(ctx.gateway().sessions.len());
    HttpResponse::Ok().finish()
}

// ---- tools/list ---------------------------------------------------------------

fn seen_fingerprint(ctx: &Ctx) -> u64 {
    ctx.gateway()
        .listings
        .get(&ctx.catalog, &ctx.scope, &ctx.config)
        .map_or(0, |l| l.fingerprint)
}

fn list_tools(
    ctx: &Ctx,
    req: &HttpRequest,
    msg: &Message,
    era: &Era,
) -> Result<HttpResponse, RpcError> {
    let id = msg.id.clone().unwrap_or(Value::Null);
    let listing = ctx
        .gateway()
        .listings
        .get(&ctx.catalog, &ctx.scope, &ctx.config)
        .ok_or_else(|| {
            RpcError::new(
                StatusCode::NOT_FOUND,
                Some(&id),
                wire::INVALID_REQUEST,
                "this view was removed by a config reload",
            )
        })?;
    let cursor = msg.params.get("cursor").and_then(Value::as_str);
    let page_size = ctx.config.mcp.page_size;
    let invalid_cursor = |why: &str| {
        RpcError::new(
            error_status(wire::INVALID_PARAMS, era.is_modern()),
            Some(&id),
            wire::INVALID_PARAMS,
            format!("Invalid params: {why}. Hint: list again without a cursor"),
        )
    };
    let (chunks, next, page): (Vec<Bytes>, Option<String>, Option<usize>) = if page_size == 0 {
        if cursor.is_some() {
            return Err(invalid_cursor(
                "this endpoint never gave out a cursor (it lists in one page)",
            ));
        }
        (listing.body.clone(), None, None)
    } else {
        let page = match cursor {
            None => 0,
            Some(c) => match decode_cursor(c) {
                Some((fp, page)) if fp == listing.fingerprint && page < listing.pages.len() => page,
                Some(_) => {
                    return Err(invalid_cursor(
                        "the cursor is from a listing that has changed since (a notifications/tools/list_changed went out)",
                    ))
                }
                None => return Err(invalid_cursor("the cursor is not one this endpoint gave out")),
            },
        };
        let chunk = listing.pages.get(page).cloned().unwrap_or_default();
        let next =
            (page + 1 < listing.pages.len()).then(|| encode_cursor(listing.fingerprint, page + 1));
        (vec![chunk], next, Some(page))
    };
    let mut prefix = Vec::with_capacity(64);
    prefix.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    write_json(&mut prefix, &id);
    prefix.extend_from_slice(b",\"result\":{\"tools\":[");
    let mut suffix = Vec::with_capacity(256);
    suffix.push(b']');
    if let Some(next) = next {
        suffix.extend_from_slice(b",\"nextCursor\":");
        write_json(&mut suffix, &Value::String(next));
    }
    if era.is_modern() {
        let hint = ctx
            .gateway()
            .hints
            .get(&ctx.servers, &ctx.config, &ctx.scope);
        let ttl = hint.ttl_ms(chrono::Utc::now(), ctx.config.mcp.max_ttl);
        suffix.extend_from_slice(
            format!(
                ",\"ttlMs\":{ttl},\"cacheScope\":\"{}\",\"resultType\":\"complete\",\"_meta\":",
                hint.scope(&ctx.config)
            )
            .as_bytes(),
        );
        write_json(
            &mut suffix,
            &json!({ wire::META_SERVER_INFO: server_info() }),
        );
    }
    suffix.extend_from_slice(b"}}");
    // The tools array is compressed once per listing (and page); the
    // envelope around it is per request (ADR 0022).
    let answer = crate::encoding::Answer {
        prefix,
        chunks,
        suffix,
    };
    crate::encoding::listing_answer(&ctx.state.compressor, req.headers(), &listing, page, answer)
        .map_err(|e| {
            RpcError::new(
                StatusCode::NOT_ACCEPTABLE,
                Some(&id),
                wire::INVALID_REQUEST,
                e.hint(),
            )
        })
}

fn encode_cursor(fingerprint: u64, page: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{fingerprint:016x}.{page}"))
}

fn decode_cursor(cursor: &str) -> Option<(u64, usize)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    let (fp, page) = text.split_once('.')?;
    Some((u64::from_str_radix(fp, 16).ok()?, page.parse().ok()?))
}

fn write_json(out: &mut Vec<u8>, value: &Value) {
    // Serializing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

// ---- subscriptions/listen -----------------------------------------------------

fn listen(ctx: &Ctx, req: &HttpRequest, msg: &Message) -> Result<HttpResponse, RpcError> {
    let id = msg.id.clone().unwrap_or(Value::Null);
    if !wire::accepts_sse(req.headers()) {
        return Err(RpcError::new(
            StatusCode::NOT_ACCEPTABLE,
            Some(&id),
            wire::INVALID_REQUEST,
            "subscriptions/listen answers with text/event-stream. Hint: send Accept: application/json, text/event-stream",
        ));
    }
    let wants_tools = msg
        .params
        .get("notifications")
        .and_then(|n| n.get("toolsListChanged"))
        .and_then(Value::as_bool)
        == Some(true);
    let honoured = if wants_tools {
        json!({"toolsListChanged": true})
    } else {
        json!({})
    };
    let ack = json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": honoured, "_meta": { wire::META_SUBSCRIPTION_ID: id }},
    });
    let frame = if wants_tools {
        let changed = json!({
            "jsonrpc": "2.0",
            "method": "notifications/tools/list_changed",
            "params": {"_meta": { wire::META_SUBSCRIPTION_ID: id }},
        });
        sse_event(changed.to_string().as_bytes())
    } else {
        // Nothing asked for that this endpoint sends: the stream stays
        // open (keep-alives only) until the client closes it.
        Bytes::new()
    };
    let stream = ctx.gateway().hub.listen(
        ctx.scope.clone(),
        seen_fingerprint(ctx),
        Some(sse_event(ack.to_string().as_bytes())),
        frame,
        None,
    );
    Ok(sse_response().streaming(stream))
}

fn sse_response() -> actix_web::HttpResponseBuilder {
    let mut res = HttpResponse::Ok();
    res.content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"));
    res
}

// ---- tools/call ---------------------------------------------------------------

/// The owning server and the upstream's name of `name` in this scope.
fn resolve_tool(ctx: &Ctx, name: &str) -> Option<(String, String)> {
    let sep = ctx.config.catalog.separator.as_str();
    let (server, tool) = match &ctx.scope {
        Scope::Server(s) => (s.as_str(), name),
        Scope::All | Scope::View(_) => {
            let at = name.find(sep)?;
            (&name[..at], &name[at + sep.len()..])
        }
    };
    if let Scope::View(v) = &ctx.scope {
        let view = ctx.config.views.get(v.as_str())?;
        if !view.covers(server) || !view.tools.allows(name) {
            return None;
        }
    }
    let part = ctx.catalog.server(server)?;
    part.entries()
        .iter()
        .any(|e| e.upstream_name() == tool)
        .then(|| (server.to_owned(), tool.to_owned()))
}

async fn call_tool(
    ctx: &Ctx,
    req: &HttpRequest,
    mut msg: Message,
    era: Era,
) -> Result<HttpResponse, RpcError> {
    let id = msg.id.clone().unwrap_or(Value::Null);
    let status = error_status(wire::INVALID_PARAMS, era.is_modern());
    let invalid = |m: String| RpcError::new(status, Some(&id), wire::INVALID_PARAMS, m);
    let Some(name) = msg
        .params
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Err(invalid(
            "Invalid params: tools/call needs params.name".into(),
        ));
    };
    let Some((server, tool)) = resolve_tool(ctx, &name) else {
        return Err(invalid(format!(
            "Invalid params: unknown tool {name:?}. Hint: tools/list shows the tools of this endpoint"
        )));
    };
    msg.params.remove("name");
    let arguments = match msg.params.remove("arguments") {
        None | Some(Value::Null) => None,
        Some(a) => serde_json::value::to_raw_value(&a).ok(),
    };
    // The client's `_meta` without the protocol keys of its own era: the
    // upstream's era gets its own from the session layer.
    let meta = match msg.params.remove("_meta") {
        Some(Value::Object(mut m)) => {
            m.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
            (!m.is_empty()).then_some(m)
        }
        _ => None,
    };
    let wants_progress = meta
        .as_ref()
        .is_some_and(|m| m.contains_key("progressToken"))
        && wire::accepts_sse(req.headers());
    let (client_capabilities, session) = match era {
        Era::Modern { capabilities } => (Some(capabilities), None),
        Era::Legacy { session } => (session.as_ref().map(|s| s.capabilities.clone()), session),
    };
    let modern = session.is_none();
    let timeout = ctx
        .servers
        .servers
        .get(server.as_str())
        .map_or(ctx.config.mcp.call_timeout, |v| v.call_timeout);
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let (progress_tx, progress_rx) = if wants_progress {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    // A 2025 client taking the call's answer as a stream can be asked by
    // the upstream during the call (ADR 0024).
    let (relay, call_relay) = match &session {
        Some(s) if wire::accepts_sse(req.headers()) => {
            let (relay, theirs) = relay::for_call(s, &id);
            (Some(relay), theirs)
        }
        _ => (None, None),
    };
    let call = CallRequest {
        server,
        tool,
        arguments,
        meta,
        extra: std::mem::take(&mut msg.params),
        client_capabilities,
        timeout,
        progress: progress_tx,
        relay,
        cancel: cancel_rx,
    };
    // A 2025 client cancels with notifications/cancelled (closing the
    // stream is not a cancellation there); a 2026-07-28 client by closing
    // the stream, which drops `cancel_tx` with this future or the stream.
    let held_cancel = match &session {
        Some(s) => {
            if !s.track_call(&id, cancel_tx) {
                return Err(RpcError::new(
                    StatusCode::OK,
                    Some(&id),
                    wire::INVALID_REQUEST,
                    format!("Invalid request: a call with id {id} is already in flight on this session; ids must be unique while in use"),
                ));
            }
            None
        }
        None => Some(cancel_tx),
    };
    let gateway = ctx.gateway().clone();
    let max = ctx.config.mcp.max_concurrent_calls as usize;
    let run = {
        let gateway = gateway.clone();
        let session = session.clone();
        let id = id.clone();
        async move {
            let result = gateway
                .calls
                .call(&gateway.routes, &gateway.metrics, max, call)
                .await;
            if let Some(s) = &session {
                s.end_call(&id);
                s.end_relays(&id);
            }
            call_response(&id, result, modern)
        }
    };
    match (progress_rx, call_relay) {
        (None, None) => {
            let (status, body) = run.await;
            drop(held_cancel);
            Ok(HttpResponse::build(status)
                .content_type("application/json")
                .body(body))
        }
        // The answer is a stream once the upstream asks the client
        // something; a call that asks nothing is answered as JSON.
        (None, Some(mut call_relay)) => {
            let (done_tx, mut done_rx) = oneshot::channel();
            actix_rt::spawn(async move {
                let _ = done_tx.send(run.await);
            });
            let first = tokio::select! {
                biased;
                done = &mut done_rx => return Ok(json_answer(done, held_cancel)),
                first = call_relay.first() => first,
            };
            let Some(first) = first else {
                // The relay closed with the call: its answer is next.
                return Ok(json_answer(done_rx.await, held_cancel));
            };
            let first = call_relay.frame(first);
            Ok(sse_response().streaming(CallStream {
                progress: None,
                relay: Some(call_relay),
                first,
                done: done_rx,
                _cancel: held_cancel,
                finished: false,
            }))
        }
        (Some(progress), call_relay) => {
            let (done_tx, done_rx) = oneshot::channel();
            actix_rt::spawn(async move {
                let _ = done_tx.send(run.await);
            });
            Ok(sse_response().streaming(CallStream {
                progress: Some(progress),
                relay: call_relay,
                first: None,
                done: done_rx,
                _cancel: held_cancel,
                finished: false,
            }))
        }
    }
}

/// The JSON answer of a call that finished before asking anything.
fn json_answer(
    done: Result<(StatusCode, Bytes), oneshot::error::RecvError>,
    held_cancel: Option<oneshot::Sender<()>>,
) -> HttpResponse {
    drop(held_cancel);
    match done {
        Ok((status, body)) => HttpResponse::build(status)
            .content_type("application/json")
            .body(body),
        // The call's task went away without an answer.
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// The HTTP status of a JSON-RPC error on the 2026-07-28 wire, as the spec
/// gives it for request errors (an upstream's -32021 or -32602 keeps the
/// status the upstream itself would have sent); 200 on the 2025 wire.
fn error_status(code: i64, modern: bool) -> StatusCode {
    if !modern {
        return StatusCode::OK;
    }
    match code {
        wire::PARSE_ERROR
        | wire::INVALID_REQUEST
        | wire::INVALID_PARAMS
        | wire::HEADER_MISMATCH
        | wire::MISSING_CAPABILITY
        | wire::UNSUPPORTED_VERSION => StatusCode::BAD_REQUEST,
        wire::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// The JSON-RPC response to a call, as bytes, and its HTTP status.
fn call_response(
    id: &Value,
    result: Result<discovery_actors::calls::CallResult, Refusal>,
    modern: bool,
) -> (StatusCode, Bytes) {
    let error = |code: i64, message: String, data: Option<Value>| {
        let mut e = RpcError::new(StatusCode::OK, Some(id), code, message);
        e.data = data;
        (
            error_status(code, modern),
            Bytes::from(e.to_json().to_string()),
        )
    };
    let tool_error = |text: String| {
        let mut result = json!({"content": [{"type": "text", "text": text}], "isError": true});
        if modern {
            result["resultType"] = json!("complete");
        }
        (
            StatusCode::OK,
            Bytes::from(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()),
        )
    };
    match result {
        Ok(r) => {
            let raw = r.raw.get();
            if let Some(fixed) = adapt_result(raw, modern) {
                return match fixed {
                    Ok(v) => (
                        StatusCode::OK,
                        Bytes::from(json!({"jsonrpc": "2.0", "id": id, "result": v}).to_string()),
                    ),
                    Err(message) => error(wire::INTERNAL_ERROR, message, None),
                };
            }
            let mut out = Vec::with_capacity(raw.len() + 48);
            out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
            write_json(&mut out, id);
            out.extend_from_slice(b",\"result\":");
            out.extend_from_slice(raw.as_bytes());
            out.push(b'}');
            (StatusCode::OK, Bytes::from(out))
        }
        Err(Refusal::NotRunning(server)) => {
            tool_error(format!("server {server:?} is not running (removed or restarting)"))
        }
        Err(Refusal::Busy { server, max }) => error(
            wire::SERVER_ERROR,
            format!("server {server:?} is busy: {max} calls in flight and {max} queued (mcp.max_concurrent_calls). Try again shortly"),
            Some(json!({"retryAfterMs": 1000})),
        ),
        Err(Refusal::Call(e)) => match e {
            CallError::Unavailable { .. } | CallError::Stopping(_) => tool_error(e.to_string()),
            CallError::UnknownTool { .. } => error(wire::INVALID_PARAMS, format!("Invalid params: {e}"), None),
            CallError::Timeout { .. } => error(wire::REQUEST_TIMEOUT, e.to_string(), None),
            CallError::Cancelled => error(wire::SERVER_ERROR, e.to_string(), None),
            CallError::Upstream(inner) => {
                let (code, message, data) = calls::upstream_error(&inner);
                error(code, message, data)
            }
        },
    }
}

/// A result that needs changing for the client's era: a 2026-07-28 client
/// needs `resultType` (a 2025 upstream sends none); a 2025 client cannot
/// answer an `input_required` result. None: pass it on byte for byte.
fn adapt_result(raw: &str, modern: bool) -> Option<Result<Value, String>> {
    let has_type = raw.contains("\"resultType\"");
    if modern && has_type {
        return None;
    }
    if !modern && !raw.contains("input_required") {
        return None;
    }
    let mut value: Map<String, Value> = serde_json::from_str(raw).ok()?;
    if modern {
        value.insert("resultType".into(), json!("complete"));
        return Some(Ok(Value::Object(value)));
    }
    if value.get("resultType").and_then(Value::as_str) == Some("input_required") {
        return Some(Err(
            "the upstream asked for more input (a 2026-07-28 input_required result), which a 2025 session cannot answer. Hint: connect with protocol 2026-07-28".into(),
        ));
    }
    None
}

/// The SSE answer of a call with a progress token, or one whose upstream
/// asked the client something: progress and relayed requests as they
/// come, then the response. Dropping it (the client went away) cancels
/// the call.
struct CallStream {
    progress: Option<mpsc::UnboundedReceiver<Value>>,
    /// The upstream's requests for the client (ADR 0024).
    relay: Option<relay::CallRelay>,
    /// A relayed request's frame, written first.
    first: Option<Bytes>,
    /// The response (its HTTP status does not apply inside a stream).
    done: oneshot::Receiver<(StatusCode, Bytes)>,
    _cancel: Option<oneshot::Sender<()>>,
    finished: bool,
}

impl futures_util::Stream for CallStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if let Some(relay) = self.relay.as_mut() {
            match relay.poll_frame(cx) {
                Poll::Ready(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Poll::Ready(None) => self.relay = None,
                Poll::Pending => {}
            }
        }
        if let Some(progress) = self.progress.as_mut() {
            match progress.poll_recv(cx) {
                Poll::Ready(Some(params)) => {
                    let frame = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": params});
                    return Poll::Ready(Some(Ok(sse_event(frame.to_string().as_bytes()))));
                }
                Poll::Ready(None) => self.progress = None,
                Poll::Pending => {}
            }
        }
        match Pin::new(&mut self.done).poll(cx) {
            Poll::Ready(Ok((_, body))) => {
                self.finished = true;
                Poll::Ready(Some(Ok(sse_event(&body))))
            }
            Poll::Ready(Err(_)) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future as _;

pub(crate) use crate::lock;

// ---- answers ------------------------------------------------------------------

fn json_result(id: &Value, result: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
}

fn error_response(e: &RpcError) -> HttpResponse {
    HttpResponse::build(e.status)
        .content_type("application/json")
        .body(e.to_json().to_string())
}
