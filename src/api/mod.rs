//! The HTTP API (DESIGN.md section 6). Handlers read the engine's published
//! snapshots (`watch` receivers, no mailbox round trip) and send control
//! messages to the supervisor; no discovery work runs inside a request.
//!
//! | route | handler |
//! |---|---|
//! | `GET /v1/tools` | [`tools`] |
//! | `GET /v1/servers`, `GET /v1/servers/{name}`, `POST /v1/servers/{name}/refresh` | [`servers`] |
//! | `GET /healthz`, `GET /readyz` | [`health`] |
//! | `GET /metrics` | [`metrics`] |
//!
//! Every error, including unknown routes, wrong methods and bad query
//! strings, is `{"error":{"code","message"}}` (see [`ApiError`]).

pub mod admin;
pub mod errors;
pub mod health;
pub mod metrics;
pub mod registrations;
pub mod servers;
pub mod tools;

use std::sync::Arc;

use actix::Recipient;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpRequest};
use discovery_actors::supervisor::{
    RefreshServer, ReleaseApiName, RemoveApiServer, ReserveApiName, UpsertApiServer,
};
use discovery_actors::{Catalog, Engine, ServersSnapshot};
use discovery_config::Config;
use tokio::sync::watch;

pub use errors::ApiError;
pub use health::{Readiness, ReadyStatus};

use crate::metrics::Metrics;
use crate::reload::Reload;

/// What the handlers need; shared by every worker (`web::Data`).
#[derive(Clone)]
pub struct ApiState {
    pub catalog: watch::Receiver<Arc<Catalog>>,
    pub servers: watch::Receiver<Arc<ServersSnapshot>>,
    /// The supervisor, as far as the API needs it.
    pub refresher: Recipient<RefreshServer>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The config watcher, for `POST /v1/admin/reload`.
    pub reloader: Recipient<Reload>,
    /// The running configuration (admin keys are read from it, so a reload
    /// changes them at once).
    pub config: watch::Receiver<Arc<Config>>,
    /// Runtime registrations: the supervisor, and the store that keeps them.
    pub registrar: Recipient<UpsertApiServer>,
    pub unregistrar: Recipient<RemoveApiServer>,
    pub reserver: Recipient<ReserveApiName>,
    pub releaser: Recipient<ReleaseApiName>,
    pub store: Option<Arc<crate::store::Store>>,
    /// One owner per name for registration writes (ADR 13).
    pub name_locks: Arc<registrations::NameLocks>,
}

impl ApiState {
    pub fn new(
        engine: &Engine,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        reloader: Recipient<Reload>,
        config: watch::Receiver<Arc<Config>>,
        store: Option<Arc<crate::store::Store>>,
    ) -> Self {
        Self {
            catalog: engine.catalog.clone(),
            servers: engine.servers.clone(),
            refresher: engine.supervisor.clone().recipient(),
            metrics,
            readiness,
            reloader,
            config,
            registrar: engine.supervisor.clone().recipient(),
            unregistrar: engine.supervisor.clone().recipient(),
            reserver: engine.supervisor.clone().recipient(),
            releaser: engine.supervisor.clone().recipient(),
            store,
            name_locks: Arc::default(),
        }
    }

    /// The current catalog (the read lock is held only for the clone).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// The current server snapshot.
    pub fn servers(&self) -> Arc<ServersSnapshot> {
        self.servers.borrow().clone()
    }
}

/// The whole application: routes, JSON error handlers and the metrics
/// middleware. `HttpServer` calls it once per worker; tests call it with
/// `actix_web::test::init_service`.
pub fn app(
    state: web::Data<ApiState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    App::new()
        .app_data(state)
        .app_data(web::QueryConfig::default().error_handler(|err, _req| {
            ApiError::BadRequest(format!("invalid query string: {err}")).into()
        }))
        .app_data(
            web::PathConfig::default().error_handler(|err, _req| {
                ApiError::BadRequest(format!("invalid path: {err}")).into()
            }),
        )
        .app_data(
            web::JsonConfig::default()
                .limit(registrations::MAX_BODY_BYTES)
                .error_handler(|err, _req| match err {
                    actix_web::error::JsonPayloadError::Overflow { limit }
                    | actix_web::error::JsonPayloadError::OverflowKnownLength { limit, .. } => {
                        ApiError::PayloadTooLarge(limit).into()
                    }
                    other => ApiError::BadRequest(format!("malformed JSON body: {other}")).into(),
                }),
        )
        .configure(routes)
        .default_service(web::to(not_found))
        .wrap_fn(move |req, srv| metrics::track(metrics.clone(), req, srv))
}

/// Route table. Each resource answers other methods with a JSON 405.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/tools")
            .route(web::get().to(tools::list_tools))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/v1/servers")
            .route(web::get().to(servers::list_servers))
            .route(web::post().to(registrations::register))
            .default_service(web::to(method_not_allowed("GET, POST"))),
    )
    .service(
        web::resource("/v1/servers/{name}")
            .route(web::get().to(servers::get_server))
            .route(web::put().to(registrations::replace))
            .route(web::delete().to(registrations::remove))
            .default_service(web::to(method_not_allowed("GET, PUT, DELETE"))),
    )
    .service(
        web::resource("/v1/servers/{name}/refresh")
            .route(web::post().to(servers::refresh_server))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/v1/admin/reload")
            .route(web::post().to(admin::reload))
            .default_service(web::to(method_not_allowed("POST"))),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics::metrics))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn not_found(req: HttpRequest) -> Result<&'static str, ApiError> {
    Err(ApiError::NotFound {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

fn method_not_allowed(
    allowed: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<Result<&'static str, ApiError>> + Clone + 'static {
    move |req: HttpRequest| {
        std::future::ready(Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            allowed,
        }))
    }
}

#[cfg(test)]
mod tests;
