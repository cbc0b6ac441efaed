//! `GET /v1/servers`, `GET /v1/servers/{name}`,
//! `POST /v1/servers/{name}/refresh`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use discovery_actors::supervisor::RefreshServer;
use discovery_actors::ServerView;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{ApiError, ApiState};

/// How long a refresh request waits for the supervisor to take the message
/// (not for the discovery: that runs on after the 202).
const REFRESH_SEND_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct ServerList<'a> {
    servers: Vec<&'a ServerView>,
}

#[utoipa::path(
    get,
    path = "/v1/servers",
    tag = "servers",
    operation_id = "list_servers",
    summary = "Every server and its discovery state",
    responses((status = 200, description = "In configuration order, then the registered ones.", body = super::openapi::ServerList)),
    security((), ("admin_key" = [])),
)]
pub(super) async fn list_servers(
    req: actix_web::HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    super::admin::require_reader(&req, &state)?;
    let snapshot = state.servers();
    Ok(HttpResponse::Ok().json(ServerList {
        servers: snapshot.servers.values().collect(),
    }))
}

#[derive(Serialize)]
struct ServerDetail<'a> {
    #[serde(flatten)]
    server: &'a ServerView,
    /// The server's entries of the current catalog, the same shape as in
    /// `GET /v1/tools` (copied from the catalog's pre-serialized bytes).
    tools: Box<RawValue>,
}

#[utoipa::path(
    get,
    path = "/v1/servers/{name}",
    tag = "servers",
    operation_id = "get_server",
    summary = "One server, with its catalog entries",
    params(("name" = String, Path, description = "The server's name.")),
    responses((status = 200, description = "The server.", body = super::openapi::ServerDetail)),
    security((), ("admin_key" = [])),
)]
pub(super) async fn get_server(
    req: actix_web::HttpRequest,
    state: web::Data<ApiState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::admin::require_reader(&req, &state)?;
    let name = name.into_inner();
    let snapshot = state.servers();
    let view = snapshot
        .servers
        .get(name.as_str())
        .ok_or_else(|| ApiError::ServerNotFound(name.clone()))?;
    let catalog = state.catalog();
    let entries = catalog
        .server(&name)
        .map(|s| s.entries_json())
        .unwrap_or_default();
    let array = format!("[{}]", String::from_utf8_lossy(&entries));
    let tools = RawValue::from_string(array).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(ServerDetail {
        server: view,
        tools,
    }))
}

#[derive(Serialize)]
struct Accepted {
    accepted: bool,
}

#[utoipa::path(
    post,
    path = "/v1/servers/{name}/refresh",
    tag = "servers",
    operation_id = "refresh_server",
    summary = "Rediscover a server now",
    description = "Answers before the discovery runs.",
    params(("name" = String, Path, description = "The server's name.")),
    responses((status = 202, description = "Taken; the discovery runs after the answer.", body = super::openapi::Accepted)),
    security(("admin_key" = [])),
)]
pub(super) async fn refresh_server(
    req: actix_web::HttpRequest,
    state: web::Data<ApiState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::admin::require_admin(&req, &state)?;
    let name = name.into_inner();
    let answer = state
        .refresher
        .send(RefreshServer { name: name.clone() })
        .timeout(REFRESH_SEND_TIMEOUT)
        .await
        .map_err(|e| ApiError::EngineUnavailable(e.to_string()))?;
    answer.map_err(|e| ApiError::ServerNotFound(e.0))?;
    tracing::info!(server = %name, "Refresh requested over the API");
    Ok(HttpResponse::Accepted().json(Accepted { accepted: true }))
}
