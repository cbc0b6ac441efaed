//! Runtime registration: `POST /v1/servers`, `PUT /v1/servers/{name}`,
//! `DELETE /v1/servers/{name}`.
//!
//! A registration takes the path of a file server: the same validation
//! (`server_from_value`, the same effective settings), the same Upstream
//! actor. The write is stored (durably) before the answer, and the answer
//! does not wait for any discovery: the actor goes on on its own.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use discovery_actors::supervisor::{ApiServerError, RemoveApiServer, UpsertApiServer};
use discovery_actors::upstream::initial_view;
use discovery_actors::DiscoveryState;
use discovery_config::{server_from_value, ConfigErrors, ServerName, ServerSource, ServerSpec};
use serde_json::{Map, Value};

use super::admin::require_admin;
use super::{ApiError, ApiState};
use crate::store::StoreError;

/// How long a write waits for the supervisor to take the change (not for
/// any discovery).
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest registration body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Validates `entry` for `name` exactly as a file entry, under the running
/// globals.
fn validate(state: &ApiState, name: &str, entry: &Value) -> Result<ServerSpec, ApiError> {
    let config = state.config.borrow().clone();
    let spec = server_from_value(
        name,
        entry.clone(),
        &config.discovery,
        &config.catalog.separator,
        ServerSource::Api,
    )
    .map_err(ApiError::InvalidServer)?;
    if config.servers.contains_key(name) {
        return Err(ApiError::FileServer(name.to_owned()));
    }
    Ok(spec)
}

/// The body as an object; `name` taken out (and checked against the path
/// when there is one).
fn split_body(body: Value, path_name: Option<&str>) -> Result<(String, Value), ApiError> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object with `name` and the fields of a config entry".into(),
        ));
    };
    let name = match map.remove("name") {
        Some(Value::String(name)) => Some(name),
        Some(_) => {
            return Err(ApiError::InvalidServer(ConfigErrors::one(
                None,
                "name",
                "must be a string",
            )))
        }
        None => None,
    };
    let name = match (name, path_name) {
        (Some(name), Some(path)) if name != path => {
            return Err(ApiError::InvalidServer(ConfigErrors::one(
                None,
                "name",
                format!("{name:?} differs from the name in the path ({path:?})"),
            )))
        }
        (Some(name), _) => name,
        (None, Some(path)) => path.to_owned(),
        (None, None) => {
            return Err(ApiError::InvalidServer(ConfigErrors::one(
                None,
                "name",
                "is required",
            )))
        }
    };
    Ok((name, Value::Object(map)))
}

fn store(state: &ApiState) -> Result<&crate::store::Store, ApiError> {
    state.store.as_deref().ok_or_else(|| {
        ApiError::EngineUnavailable("no store is configured for runtime registrations".into())
    })
}

async fn tell_supervisor<M>(to: &actix::Recipient<M>, msg: M) -> Result<(), ApiError>
where
    M: actix::Message<Result = Result<(), ApiServerError>> + Send + 'static,
{
    let answer = to
        .send(msg)
        .timeout(SUPERVISOR_TIMEOUT)
        .await
        .map_err(|e| ApiError::EngineUnavailable(e.to_string()))?;
    answer.map_err(|e| match e {
        ApiServerError::FileServer(name) => ApiError::FileServer(name),
        ApiServerError::NotFound(name) => ApiError::ServerNotFound(name),
        ApiServerError::Invalid(errors) => ApiError::InvalidServer(errors),
        ApiServerError::ShuttingDown => ApiError::EngineUnavailable(e.to_string()),
    })
}

/// What the answer shows: the server as it starts (discovery under way).
fn created_view(spec: &ServerSpec) -> Value {
    let mut view = initial_view(spec, 0);
    view.state = DiscoveryState::Connecting;
    let mut json = serde_json::to_value(&view).unwrap_or(Value::Object(Map::new()));
    if let Some(map) = json.as_object_mut() {
        // The generation is the supervisor's; not known here.
        map.remove("generation");
    }
    json
}

fn store_error(e: StoreError, name: &str) -> ApiError {
    match e {
        StoreError::Conflict(_) => ApiError::AlreadyRegistered(name.to_owned()),
        StoreError::NotFound(_) => ApiError::ServerNotFound(name.to_owned()),
        other => ApiError::Internal(format!("the store failed: {other}")),
    }
}

#[utoipa::path(
    post,
    path = "/v1/servers",
    tag = "servers",
    operation_id = "register_server",
    summary = "Register a server at runtime",
    request_body(content = super::openapi::Registration, content_type = "application/json"),
    responses((status = 201, description = "Stored and starting; discovery runs after the answer.", body = super::openapi::Server,
        headers(("Location" = String, description = "`/v1/servers/{name}`.")))),
    security(("admin_key" = [])),
)]
pub(super) async fn register(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let (name, entry) = split_body(body.into_inner(), None)?;
    let spec = validate(&state, &name, &entry)?;
    let store = store(&state)?;
    store
        .insert(&name, &entry)
        .await
        .map_err(|e| store_error(e, &name))?;
    let server = spec.name.clone();
    if let Err(e) = tell_supervisor(
        &state.registrar,
        UpsertApiServer {
            name: server,
            entry,
        },
    )
    .await
    {
        // Not running, so not kept: a registration is stored and running,
        // or neither.
        let _ = store.delete(&name).await;
        return Err(e);
    }
    tracing::info!(server = %name, "Registered a server over the API.");
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/servers/{name}")))
        .json(created_view(&spec)))
}

#[utoipa::path(
    put,
    path = "/v1/servers/{name}",
    tag = "servers",
    operation_id = "replace_server",
    summary = "Register or replace a runtime server",
    params(("name" = String, Path, description = "The server's name.")),
    request_body(content = super::openapi::Registration, content_type = "application/json"),
    responses((status = 200, description = "Stored and (re)starting.", body = super::openapi::Server)),
    security(("admin_key" = [])),
)]
pub(super) async fn replace(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let path = path.into_inner();
    if state.config.borrow().servers.contains_key(path.as_str()) {
        return Err(ApiError::FileServer(path));
    }
    let (name, entry) = split_body(body.into_inner(), Some(&path))?;
    let spec = validate(&state, &name, &entry)?;
    let store = store(&state)?;
    store
        .replace(&name, &entry)
        .await
        .map_err(|e| store_error(e, &name))?;
    tell_supervisor(
        &state.registrar,
        UpsertApiServer {
            name: spec.name.clone(),
            entry,
        },
    )
    .await?;
    tracing::info!(server = %name, "Replaced a server over the API.");
    Ok(HttpResponse::Ok().json(created_view(&spec)))
}

#[utoipa::path(
    delete,
    path = "/v1/servers/{name}",
    tag = "servers",
    operation_id = "remove_server",
    summary = "Remove a runtime server",
    params(("name" = String, Path, description = "The server's name.")),
    responses((status = 204, description = "Removed.")),
    security(("admin_key" = [])),
)]
pub(super) async fn remove(
    req: HttpRequest,
    state: web::Data<ApiState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let name = path.into_inner();
    if state.config.borrow().servers.contains_key(name.as_str()) {
        return Err(ApiError::FileServer(name));
    }
    let server = ServerName::parse(&name, &state.config.borrow().catalog.separator)
        .map_err(|_| ApiError::ServerNotFound(name.clone()))?;
    let store = store(&state)?;
    store
        .delete(&name)
        .await
        .map_err(|e| store_error(e, &name))?;
    match tell_supervisor(&state.unregistrar, RemoveApiServer { name: server }).await {
        Ok(()) | Err(ApiError::ServerNotFound(_)) => {}
        Err(e) => return Err(e),
    }
    tracing::info!(server = %name, "Deleted a server registered over the API.");
    Ok(HttpResponse::NoContent().finish())
}
