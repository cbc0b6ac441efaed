//! `GET /v1/servers`, `GET /v1/servers/{name}`,
//! `POST /v1/servers/{name}/refresh`.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use discovery_actors::supervisor::RefreshServer;
use discovery_actors::{ServerView, ServersSnapshot};
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

/// `GET /v1/servers` serialized once per snapshot (at 10k upstreams a
/// body is 10k views, about 7 MB): the first request after a new snapshot
/// starts its serialization, every other one hands out the same bytes.
/// Lazy, so a flood of state changes at start-up (one snapshot each) costs
/// nothing unless someone asks.
///
/// The serialization runs on a blocking thread, never on an HTTP worker
/// (where it held up every request of that worker for its whole length),
/// and at most one runs at a time. A request waits up to [`FRESH_WAIT`]
/// for the body of the current snapshot; if that is not ready by then it
/// gets the newest body that is, with that body's ETag (a view at most one
/// serialization old: during a 10k start-up, snapshots come faster than
/// they serialize). Small snapshots serialize well within the wait, so
/// what a request sees is current whenever serializing is cheap.
#[derive(Default)]
pub struct ServersBody {
    state: Mutex<BodyState>,
    /// Told when a serialization ends.
    done: tokio::sync::Notify,
    /// Tests hold a serialization here until they pass the barrier.
    #[cfg(test)]
    pub(super) hold: Mutex<Option<Arc<std::sync::Barrier>>>,
}

/// How long a request waits for the current snapshot's body before taking
/// the newest ready one.
const FRESH_WAIT: Duration = Duration::from_millis(20);

#[derive(Default)]
struct BodyState {
    ready: Option<CachedBody>,
    /// The snapshot being serialized now.
    building: Option<Weak<ServersSnapshot>>,
    /// A snapshot that could not be serialized, and why (not retried).
    failed: Option<(Weak<ServersSnapshot>, String)>,
}

#[derive(Clone)]
struct CachedBody {
    /// Weak: the cache does not keep an old snapshot alive.
    snapshot: Weak<ServersSnapshot>,
    body: Bytes,
    etag: Arc<str>,
}

fn same(weak: &Weak<ServersSnapshot>, snapshot: &Arc<ServersSnapshot>) -> bool {
    weak.upgrade().is_some_and(|s| Arc::ptr_eq(&s, snapshot))
}

impl ServersBody {
    fn lock(&self) -> std::sync::MutexGuard<'_, BodyState> {
        crate::lock(&self.state)
    }

    /// The body and ETag of `snapshot`, or of the newest ready snapshot if
    /// `snapshot`'s is not ready within [`FRESH_WAIT`].
    pub(super) async fn get(
        self: &Arc<Self>,
        snapshot: &Arc<ServersSnapshot>,
    ) -> Result<(Bytes, Arc<str>), ApiError> {
        let deadline = tokio::time::Instant::now() + FRESH_WAIT;
        loop {
            // Registered before looking, so an end in between is not missed.
            let done = self.done.notified();
            let stale = {
                let mut state = self.lock();
                if let Some(c) = state.ready.as_ref().filter(|c| same(&c.snapshot, snapshot)) {
                    return Ok((c.body.clone(), c.etag.clone()));
                }
                if let Some((_, e)) = state.failed.as_ref().filter(|(f, _)| same(f, snapshot)) {
                    return Err(ApiError::Internal(e.clone()));
                }
                let idle = state
                    .building
                    .as_ref()
                    .is_none_or(|b| b.upgrade().is_none());
                if idle {
                    state.building = Some(Arc::downgrade(snapshot));
                    self.start(snapshot.clone());
                }
                state.ready.clone()
            };
            match stale {
                Some(c) if tokio::time::Instant::now() >= deadline => {
                    return Ok((c.body, c.etag));
                }
                Some(_) => {
                    let _ = tokio::time::timeout_at(deadline, done).await;
                }
                // Nothing ready yet (the first request): wait for it.
                None => done.await,
            }
        }
    }

    /// Serializes `snapshot` on a blocking thread.
    fn start(self: &Arc<Self>, snapshot: Arc<ServersSnapshot>) {
        let this = self.clone();
        actix_web::rt::task::spawn_blocking(move || {
            #[cfg(test)]
            {
                let hold = crate::lock(&this.hold).clone();
                if let Some(hold) = hold {
                    hold.wait();
                }
            }
            let built = serialize(&snapshot);
            let mut state = this.lock();
            state.building = None;
            match built {
                Ok((body, etag)) => {
                    state.ready = Some(CachedBody {
                        snapshot: Arc::downgrade(&snapshot),
                        body,
                        etag,
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "Could not serialize the server list.");
                    state.failed = Some((Arc::downgrade(&snapshot), e.to_string()));
                }
            }
            drop(state);
            this.done.notify_waiters();
        });
    }
}

fn serialize(snapshot: &ServersSnapshot) -> Result<(Bytes, Arc<str>), serde_json::Error> {
    let body = serde_json::to_vec(&ServerList {
        servers: snapshot.servers.values().collect(),
    })?;
    // The ETag is a hash of the bytes: equal bodies, equal tags, also
    // across restarts and replicas.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let etag: Arc<str> = format!("\"s{:016x}\"", hasher.finish()).into();
    Ok((Bytes::from(body), etag))
}

#[utoipa::path(
    get,
    path = "/v1/servers",
    tag = "servers",
    operation_id = "list_servers",
    summary = "Every server and its discovery state",
    params(
        ("If-None-Match" = Option<String>, Header, description = "Entity tags (a list, `*`, weak tags); a match gives 304."),
    ),
    responses(
        (status = 200, description = "In configuration order, then the registered ones.", body = super::openapi::ServerList,
            headers(("ETag" = String, description = "Strong entity tag of this server snapshot (a hash of the body)."))),
        (status = 304, description = "`If-None-Match` matched: no server's view has changed.",
            headers(("ETag" = String, description = "Strong entity tag of this server snapshot."))),
    ),
    security((), ("admin_key" = [])),
)]
pub(super) async fn list_servers(
    req: actix_web::HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    super::admin::require_reader(&req, &state)?;
    let snapshot = state.servers();
    let (body, etag) = state.servers_body.get(&snapshot).await?;
    if super::tools::if_none_match(req.headers(), &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, &*etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ETAG, &*etag))
        .body(crate::encoding::in_slices(body)))
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
