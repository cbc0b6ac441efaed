//! The OpenAPI 3.1 description of the API, served at `GET /openapi.json`
//! and committed as `docs/openapi.json`.
//!
//! Each handler carries its own `#[utoipa::path]` (method, path, parameters,
//! its success and specific answers); [`ApiDoc`] lists the handlers, and
//! [`SharedErrors`] adds the error answers every route can give (they come
//! from middleware and extractors, not from the handler). The schemas below
//! are the wire shapes; the types that produce them live in the engine
//! crate (`ServerView`) or are pre-serialized (the catalog), so these are
//! descriptions, kept honest by tests that decode real answers into them
//! (`deny_unknown_fields`) and by schemathesis against the real binary.
//!
//! Regenerate the committed copy after an API change:
//! `UPDATE_OPENAPI=1 cargo test --lib api::openapi`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document, built once (it depends on nothing at run time).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        // Serializing a tree of strings and maps cannot fail; an empty
        // document would be caught by the tests that compare it.
        ApiDoc::openapi().to_pretty_json().unwrap_or_default() + "\n"
    })
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json", body = Object)),
)]
pub(super) async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(super::tools::mime_json())
        .body(document())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mcp-discovery",
        description = "Live, aggregated catalog of the tools offered by many MCP servers. Every error is `{\"error\":{\"code\",\"message\"}}` with a stable `code`; a rejected configuration or registration adds `error.errors`. Writes need `Authorization: Bearer <admin key>` when `admin.api_keys` is set.",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::tools::list_tools,
        super::servers::list_servers,
        super::registrations::register,
        super::servers::get_server,
        super::registrations::replace,
        super::registrations::remove,
        super::servers::refresh_server,
        super::admin::reload,
        super::health::healthz,
        super::health::readyz,
        super::metrics::metrics,
        crate::gateway::post_all,
        crate::gateway::get_all,
        crate::gateway::delete_all,
        crate::gateway::post_named,
        crate::gateway::get_named,
        crate::gateway::delete_named,
        openapi,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, Problem, ToolList, ToolEntry, ServerList, Server, ServerDetail, ToolProblem, CacheHints, CacheScope,
        Auth, Registration, RegistrationAuth, AuthType, ClientAuth, ToolFilter, Accepted, ReloadSummary, Health, Ready,
        DiscoveryState, PushStream, TransportName, JsonRpcMessage,
    )),
    modifiers(&SharedErrors),
    tags(
        (name = "catalog", description = "The aggregated tool catalog."),
        (name = "servers", description = "Upstream servers: their state, runtime registration, refresh."),
        (name = "admin", description = "Operations on the running service."),
        (name = "mcp", description = "The MCP endpoint (Streamable HTTP; protocol 2026-07-28 and the 2025 revisions): JSON-RPC, not REST. See the MCP specification."),
        (name = "probes", description = "Liveness, readiness and metrics."),
        (name = "meta", description = "This description."),
    ),
)]
pub struct ApiDoc;

/// The error statuses any operation may answer, with the code(s) behind
/// each; added to every operation that does not document the status itself.
/// 500 is left out on purpose: it is a bug, never part of the contract.
pub const SHARED_ERRORS: [(u16, &str); 11] = [
    (400, "`bad_request`: a malformed query string, path, header or body."),
    (401, "`unauthorized`: the route needs `Authorization: Bearer <key>` and none valid was sent."),
    (403, "`forbidden` / `forbidden_origin`: the client may not do this (no admin key configured and not a loopback client, or a foreign `Origin`)."),
    (404, "`not_found` (no such route) or `server_not_found`."),
    (405, "`method_not_allowed`: the `Allow` header lists the methods of the route."),
    (409, "`already_registered`, `file_server` or `no_config_file`."),
    (413, "`payload_too_large`: the body is over the limit."),
    (415, "`unsupported_media_type`: the body is not `application/json`."),
    (421, "`misdirected_request`: the `Host` is not one this service answers to."),
    (422, "`invalid_server` / `config_rejected`, every problem in `error.errors`."),
    (503, "`engine_unavailable`: the engine did not take the request (stopping, overloaded, or no store)."),
];

/// Adds [`SHARED_ERRORS`] to every operation, all with [`ErrorBody`].
pub struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in SHARED_ERRORS {
                    let status = status.to_string();
                    if operation.responses.responses.contains_key(&status) {
                        continue;
                    }
                    let response = ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                                    "ErrorBody",
                                ))))
                                .build(),
                        )
                        .build();
                    operation
                        .responses
                        .responses
                        .insert(status, RefOr::T(response));
                }
            }
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "One of `admin.api_keys`. Needed by writes when keys are configured, and by reads with `admin.protect_reads`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// `{"error":{"code","message"}}`, the body of every error.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`server_not_found`, `unauthorized`, ...).
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// With 422 (`invalid_server`, `config_rejected`): every problem.
    #[serde(default)]
    pub errors: Option<Vec<Problem>>,
}

/// One problem of a rejected configuration or registration.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    /// The file, for a configuration file; null for a request body.
    pub file: Option<String>,
    /// The key path (`servers.a.url`, `url`).
    pub path: String,
    pub message: String,
}

/// `GET /v1/tools`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolList {
    /// The catalog version; it grows with every change.
    pub version: u64,
    pub tools: Vec<ToolEntry>,
}

/// One tool of the catalog.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolEntry {
    /// Public name: `<server><separator><upstream_name>`.
    pub name: String,
    pub server: String,
    /// The tool's name on its server.
    pub upstream_name: String,
    /// Last-known tool of a server that is currently failing.
    pub stale: bool,
    /// The upstream's tool object verbatim (unknown fields kept).
    #[schema(value_type = Object)]
    pub tool: serde_json::Value,
}

/// `GET /v1/servers`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerList {
    /// In configuration order, then the registered ones.
    pub servers: Vec<Server>,
}

/// Discovery state of a server.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryState {
    Unknown,
    Connecting,
    Healthy,
    Degraded,
}

/// State of a server's push stream.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushStream {
    Connected,
    Connecting,
    Unsupported,
    Failed,
    Disabled,
}

/// A transport name.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportName {
    Auto,
    StreamableHttp,
    Sse,
    Stdio,
}

/// Where a server was defined.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    Api,
}

/// How a server authenticates (never a secret).
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// `none`, `bearer`, `basic` or `oauth2`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(none|bearer|basic|oauth2)$")]
    pub kind: String,
    #[schema(format = DateTime)]
    pub token_expires_at: Option<String>,
    pub last_token_error: Option<String>,
}

/// A tool the catalog leaves out, or whose public name is flagged.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolProblem {
    /// The upstream's name of the tool (`invalid_tools`) or its public name
    /// (`name_warnings`), clipped to 128 characters; null when the tool has
    /// no string name.
    pub name: Option<String>,
    /// A sentence saying what is wrong.
    pub reason: String,
}

/// `cacheScope` of a 2026-07-28 result.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Any client or shared cache may reuse it.
    Public,
    /// Only within the same authorization context.
    Private,
}

/// What a 2026-07-28 server's last listing said about its own freshness.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheHints {
    /// `ttlMs`: the smallest over every page of `tools/list` and of
    /// `prompts/list` and `resources/list` (0: no freshness promised). A
    /// positive one brings the next refresh forward to when the listing goes
    /// stale (minus up to 10% jitter), never sooner than
    /// `discovery.min_refresh` nor later than `poll_interval`.
    pub ttl_ms: u64,
    /// `private` if any of those results said so; null when none stated a
    /// known scope.
    pub scope: Option<CacheScope>,
    /// When the listing goes stale; null for a ttl of 0.
    #[schema(format = DateTime)]
    pub fresh_until: Option<String>,
}

/// One server, as `GET /v1/servers` lists it.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    #[schema(inline)]
    pub source: Source,
    /// Configured transport.
    pub transport: TransportName,
    /// What `auto` resolved to, once connected.
    pub negotiated_transport: Option<TransportName>,
    /// Redacted: the URL without user info, query or fragment (HTTP
    /// transports), or the program and its argument count (stdio).
    pub endpoint: String,
    pub state: DiscoveryState,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub last_success_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_attempt_at: Option<String>,
    pub consecutive_failures: u32,
    #[schema(format = DateTime)]
    pub next_retry_at: Option<String>,
    /// The soonest the tools can next be re-listed on a schedule (poll,
    /// `ttlMs`, retry); what the MCP endpoint's `ttlMs` is derived from.
    #[schema(format = DateTime)]
    pub next_refresh_at: Option<String>,
    pub push_stream: PushStream,
    /// The push stream's last failure, until it connects again.
    pub push_stream_error: Option<String>,
    pub auth: Auth,
    pub tool_count: u64,
    /// Whether the tools shown are last-known ones from before a failure.
    pub stale: bool,
    pub protocol_version: Option<String>,
    /// The server's `serverInfo`, clipped (long strings cut, large nested
    /// values such as `icons` dropped).
    #[schema(value_type = Option<Object>)]
    pub server_info: Option<serde_json::Value>,
    /// Why prompts or resources could not be listed (an error, a timeout or
    /// a cap) while the tools are fine.
    pub listing_warning: Option<String>,
    /// Tools the server lists that the catalog leaves out (a bad name or
    /// `inputSchema`, an invalid `x-mcp-header`, a name listed twice, a
    /// public name another server also publishes), at most 100; the gauge
    /// `mcp_discovery_invalid_tools` counts them all.
    pub invalid_tools: Vec<ToolProblem>,
    /// Published tools whose public name is outside `^[A-Za-z0-9_.-]{1,64}$`
    /// (what LLM APIs commonly accept), at most 100.
    pub name_warnings: Vec<ToolProblem>,
    /// The cache hints of the last listing; null for a 2025 server (it
    /// sends none) and before the first listing.
    #[serde(default)]
    pub cache: Option<CacheHints>,
    /// Increments each time the server is (re)started by a config change;
    /// absent from the answer of a registration.
    #[serde(default)]
    pub generation: Option<u64>,
}

/// `GET /v1/servers/{name}`: the fields of [`Server`] plus its catalog
/// entries (spelled out rather than `allOf`, so that both can refuse
/// unknown fields).
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerDetail {
    pub name: String,
    #[schema(inline)]
    pub source: Source,
    /// Configured transport.
    pub transport: TransportName,
    /// What `auto` resolved to, once connected.
    pub negotiated_transport: Option<TransportName>,
    /// Redacted: the URL without user info, query or fragment (HTTP
    /// transports), or the program and its argument count (stdio).
    pub endpoint: String,
    pub state: DiscoveryState,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub last_success_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_attempt_at: Option<String>,
    pub consecutive_failures: u32,
    #[schema(format = DateTime)]
    pub next_retry_at: Option<String>,
    /// The soonest the tools can next be re-listed on a schedule (poll,
    /// `ttlMs`, retry); what the MCP endpoint's `ttlMs` is derived from.
    #[schema(format = DateTime)]
    pub next_refresh_at: Option<String>,
    pub push_stream: PushStream,
    /// The push stream's last failure, until it connects again.
    pub push_stream_error: Option<String>,
    pub auth: Auth,
    pub tool_count: u64,
    /// Whether the tools shown are last-known ones from before a failure.
    pub stale: bool,
    pub protocol_version: Option<String>,
    /// The server's `serverInfo`, clipped (long strings cut, large nested
    /// values such as `icons` dropped).
    #[schema(value_type = Option<Object>)]
    pub server_info: Option<serde_json::Value>,
    /// Why prompts or resources could not be listed (an error, a timeout or
    /// a cap) while the tools are fine.
    pub listing_warning: Option<String>,
    /// Tools the server lists that the catalog leaves out (a bad name or
    /// `inputSchema`, an invalid `x-mcp-header`, a name listed twice, a
    /// public name another server also publishes), at most 100; the gauge
    /// `mcp_discovery_invalid_tools` counts them all.
    pub invalid_tools: Vec<ToolProblem>,
    /// Published tools whose public name is outside `^[A-Za-z0-9_.-]{1,64}$`
    /// (what LLM APIs commonly accept), at most 100.
    pub name_warnings: Vec<ToolProblem>,
    /// The cache hints of the last listing; null for a 2025 server (it
    /// sends none) and before the first listing.
    #[serde(default)]
    pub cache: Option<CacheHints>,
    /// Increments each time the server is (re)started by a config change;
    /// absent from the answer of a registration.
    #[serde(default)]
    pub generation: Option<u64>,
    /// Its entries of the catalog, the same shape as in `GET /v1/tools`.
    pub tools: Vec<ToolEntry>,
}

/// A registration body: a config entry plus its `name` (the fields and
/// rules of `servers.<name>` in the configuration file; see the README).
/// Strings also accept numbers and booleans, as in the file.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Required for POST; optional for PUT (it must equal the path's).
    #[schema(example = "search")]
    pub name: Option<String>,
    /// Absolute http(s) URL of the MCP endpoint (HTTP transports).
    #[schema(example = "http://127.0.0.1:3001/mcp")]
    pub url: Option<String>,
    /// Default: `stdio` when only `command` is given, else `auto`.
    pub transport: Option<TransportName>,
    /// Program to spawn (stdio).
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    /// Extra environment of the child (secrets: never shown).
    pub env: Option<std::collections::BTreeMap<String, String>>,
    pub cwd: Option<String>,
    /// Static headers on every HTTP request (secrets: never shown).
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub auth: Option<RegistrationAuth>,
    /// A duration with a unit (`30s`, `5m`).
    pub poll_interval: Option<String>,
    /// A duration with a unit (`30s`).
    pub request_timeout: Option<String>,
    pub tools: Option<ToolFilter>,
    /// Open the optional GET push stream (default true).
    pub push: Option<bool>,
}

/// `auth` of a registration; which fields apply depends on `type`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationAuth {
    #[serde(rename = "type")]
    pub kind: AuthType,
    pub token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<String>,
    /// How the client authenticates to the token endpoint.
    pub client_auth: Option<ClientAuth>,
    pub token_timeout: Option<String>,
}

/// `auth.type` of a registration.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    None,
    Bearer,
    Basic,
    #[serde(rename = "oauth2")]
    OAuth2,
}

/// `auth.client_auth`: HTTP Basic or the form.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Basic,
    Post,
}

/// Glob patterns on upstream tool names.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFilter {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// One JSON-RPC 2.0 message of the MCP endpoint (a request, a response or
/// a notification): what the MCP specification says of each method.
#[derive(ToSchema, Deserialize)]
pub struct JsonRpcMessage {
    pub jsonrpc: String,
    /// A string or an integer (null in some errors).
    pub id: Option<serde_json::Value>,
    pub method: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
}

/// The answer of a refresh: the request was taken; discovery runs after.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    pub accepted: bool,
}

/// The answer of a reload that was applied.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSummary {
    pub applied: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: u64,
}

/// `GET /healthz`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok`, or `failing` (503) when an engine actor is gone.
    #[schema(example = "ok", pattern = "^(ok|failing)$")]
    pub status: String,
    /// With `failing`: which of `supervisor`, `registry` is gone.
    #[serde(default)]
    #[schema(nullable = false)]
    pub gone: Option<Vec<String>>,
}

/// `GET /readyz`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// `ready` or `starting`.
    #[schema(pattern = "^(ready|starting)$")]
    pub status: String,
    /// Servers whose first discovery attempt has not finished.
    pub pending: Vec<String>,
    /// When ready: `all_attempted` or `startup_grace_elapsed`.
    #[serde(default)]
    pub reason: Option<String>,
    /// While starting: milliseconds until the grace period ends.
    #[serde(default)]
    pub startup_grace_remaining_ms: Option<u64>,
}
