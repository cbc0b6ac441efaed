//! Runtime registration: `POST /v1/servers`, `PUT /v1/servers/{name}`,
//! `DELETE /v1/servers/{name}`.
//!
//! A registration takes the path of a file server: the same validation
//! (`server_from_value`, the same effective settings), the same Upstream
//! actor. The write is stored (durably) before the answer, and the answer
//! does not wait for any discovery: the actor goes on on its own.
//!
//! One owner per name (ADR 13): every write takes the name's lock
//! ([`NameLocks`]) for its store write *and* its engine update, and runs as
//! a task of its own, so a client that hangs up cannot leave a write
//! half-done. A registration is stored and running, or neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use discovery_actors::supervisor::{
    ApiServerError, ReleaseApiName, RemoveApiServer, ReserveApiName, UpsertApiServer, UpsertOutcome,
};
use discovery_actors::upstream::initial_view;
use discovery_actors::DiscoveryState;
use discovery_config::{
    server_from_value, ConfigErrors, ServerName, ServerSource, ServerSpec, TransportKind,
};
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
        &discovery_config::ServerDefaults::of(&config),
        &config.catalog.separator,
        ServerSource::Api,
    )
    .map_err(ApiError::InvalidServer)?;
    if config.servers.contains_key(name) {
        return Err(ApiError::FileServer(name.to_owned()));
    }
    if config.views.contains_key(name) {
        return Err(ApiError::ViewName(name.to_owned()));
    }
    let stdio_allowed = config.admin.allow_stdio_registration && !config.admin.api_keys.is_empty();
    if spec.transport() == TransportKind::Stdio && !stdio_allowed {
        return Err(ApiError::InvalidServer(ConfigErrors::one(
            None,
            "command",
            "registering a stdio server (command/args/env/cwd) over the API is disabled: it \
             would start a process on this host. Hint: define it in the configuration file, or \
             set admin.allow_stdio_registration: true together with admin.api_keys",
        )));
    }
    Ok(spec)
}

/// One async lock per server name, for the registration writes: the store
/// write and the engine update of one name never interleave with another
/// write of that name. Entries are dropped once nobody holds or waits.
#[derive(Debug, Default)]
pub struct NameLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl NameLocks {
    /// Waits for `name`'s lock.
    pub async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            // A poisoned map only means a panic elsewhere mid-insert; the
            // map itself is still usable.
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if locks.len() > 64 {
                locks.retain(|_, lock| lock.strong_count() > 0);
            }
            match locks.get(name).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(name.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
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

fn store(state: &ApiState) -> Result<Arc<crate::store::Store>, ApiError> {
    state.store.clone().ok_or_else(|| {
        ApiError::EngineUnavailable("no store is configured for runtime registrations".into())
    })
}

async fn tell_supervisor<M, R>(to: &actix::Recipient<M>, msg: M) -> Result<R, ApiError>
where
    M: actix::Message<Result = Result<R, ApiServerError>> + Send + 'static,
    R: Send + 'static,
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

/// Test fault injection ([`crate::AppOptions::registration_pause`]): a
/// random pause between a write's store step and its engine update, the
/// window the name lock closes. Nothing when unset (always, outside tests).
async fn injected_pause(state: &ApiState) {
    use std::hash::BuildHasher;
    let Some((min, max)) = state.registration_pause else {
        return;
    };
    let span = u64::try_from(max.saturating_sub(min).as_micros()).unwrap_or(u64::MAX);
    // A fresh RandomState is freshly keyed: random enough, without a
    // dependency for a test knob.
    let jitter =
        std::collections::hash_map::RandomState::new().hash_one(()) % span.saturating_add(1);
    actix_rt::time::sleep(min + Duration::from_micros(jitter)).await;
}

/// Runs a write's critical section as a task of its own: it finishes (store
/// and engine both updated, or neither) even if the client goes away.
async fn owned<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, ApiError>> + 'static,
) -> Result<T, ApiError> {
    actix_rt::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(format!("a registration task failed: {e}")))?
}

/// The server as it starts (a new actor: discovery under way).
fn started_view(spec: &ServerSpec, generation: Option<u64>) -> Value {
    let mut view = initial_view(spec, generation.unwrap_or(0));
    view.state = DiscoveryState::Connecting;
    let mut json = serde_json::to_value(&view).unwrap_or(Value::Object(Map::new()));
    if generation.is_none() {
        if let Some(map) = json.as_object_mut() {
            map.remove("generation");
        }
    }
    json
}

/// What a PUT answers: an upstream that was not restarted keeps running as
/// it was, so the answer is its published view (healthy, its tools...), not
/// a made-up `connecting`; a restarted one is starting.
fn view_after(state: &ApiState, spec: &ServerSpec, outcome: UpsertOutcome) -> Value {
    if !outcome.restarted {
        let snapshot = state.servers();
        if let Some(view) = snapshot.servers.get(spec.name.as_str()) {
            if Some(view.generation) == outcome.generation {
                return serde_json::to_value(view).unwrap_or(Value::Object(Map::new()));
            }
        }
    }
    started_view(spec, outcome.generation)
}

fn store_error(e: StoreError, name: &str) -> ApiError {
    match e {
        StoreError::Conflict(_) => ApiError::AlreadyRegistered(name.to_owned()),
        StoreError::NotFound(_) => ApiError::ServerNotFound(name.to_owned()),
        other if other.is_unavailable() => {
            tracing::warn!(server = %name, error = %other, "The store failed a registration write; nothing was changed.");
            ApiError::StoreUnavailable(other.to_string())
        }
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
    let state = state.into_inner();
    let (spec, outcome) = owned({
        let state = state.clone();
        async move {
            let _owner = state.name_locks.lock(&name).await;
            tell_supervisor(
                &state.reserver,
                ReserveApiName {
                    name: spec.name.clone(),
                },
            )
            .await?;
            let stored = match store.insert(&name, &entry).await {
                Ok(stored) => stored,
                Err(e) => {
                    state.releaser.do_send(ReleaseApiName {
                        name: spec.name.clone(),
                    });
                    return Err(store_error(e, &name));
                }
            };
            injected_pause(&state).await;
            let upsert = UpsertApiServer {
                name: spec.name.clone(),
                entry,
                revision: stored.revision,
            };
            match tell_supervisor(&state.registrar, upsert).await {
                Ok(outcome) => Ok((spec, outcome)),
                Err(e) => {
                    // Not running, so not kept: a registration is stored and
                    // running, or neither.
                    if let Err(undo) = store.delete(&name).await {
                        tracing::error!(server = %name, error = %undo, "Could not undo a registration the engine refused; the stored row stays until DELETE /v1/servers/NAME.");
                    }
                    Err(e)
                }
            }
        }
    })
    .await?;
    let name = spec.name.as_str();
    tracing::info!(server = %name, "Registered a server over the API.");
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/servers/{name}")))
        .json(started_view(&spec, outcome.generation)))
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
    let state = state.into_inner();
    let (spec, outcome) = owned({
        let state = state.clone();
        async move {
            let _owner = state.name_locks.lock(&name).await;
            // Kept to undo the replace if the engine refuses it; a row that
            // cannot be read is simply overwritten.
            let previous = match store.get(&name).await {
                Ok(previous) => Some(previous.entry),
                Err(e @ StoreError::NotFound(_)) => return Err(store_error(e, &name)),
                Err(e) if e.is_unavailable() => return Err(store_error(e, &name)),
                Err(_) => None,
            };
            let stored = store
                .replace(&name, &entry)
                .await
                .map_err(|e| store_error(e, &name))?;
            injected_pause(&state).await;
            let upsert = UpsertApiServer {
                name: spec.name.clone(),
                entry,
                revision: stored.revision,
            };
            match tell_supervisor(&state.registrar, upsert).await {
                Ok(outcome) => Ok((spec, outcome)),
                Err(e) => {
                    if let Some(previous) = previous {
                        if let Err(undo) = store.replace(&name, &previous).await {
                            tracing::error!(server = %name, error = %undo, "Could not undo a replacement the engine refused.");
                        }
                    }
                    Err(e)
                }
            }
        }
    })
    .await?;
    tracing::info!(server = %spec.name, restarted = outcome.restarted, "Replaced a server over the API.");
    Ok(HttpResponse::Ok().json(view_after(&state, &spec, outcome)))
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
    let state = state.into_inner();
    let found = owned({
        let state = state.clone();
        let name = name.clone();
        async move {
            let _owner = state.name_locks.lock(&name).await;
            let revision = match store.delete(&name).await {
                Ok(revision) => Some(revision),
                // The row is gone already; the engine may still run it.
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(store_error(e, &name)),
            };
            injected_pause(&state).await;
            let running = tell_supervisor(
                &state.unregistrar,
                RemoveApiServer {
                    name: server,
                    revision,
                },
            )
            .await?;
            Ok(revision.is_some() || running)
        }
    })
    .await?;
    if !found {
        return Err(ApiError::ServerNotFound(name));
    }
    tracing::info!(server = %name, "Deleted a server registered over the API.");
    Ok(HttpResponse::NoContent().finish())
}
