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
//! | `GET /openapi.json` | [`openapi`] (the OpenAPI 3.1 description of all of these) |
//!
//! Every error, including unknown routes, wrong methods and bad query
//! strings, is `{"error":{"code","message"}}` (see [`ApiError`]).

pub mod admin;
pub mod errors;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod registrations;
pub mod servers;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::{guard as method_guard, web, App, HttpRequest, HttpResponse, Route};
use discovery_actors::supervisor::{
    RefreshServer, ReleaseApiName, RemoveApiServer, ReserveApiName, UpsertApiServer,
};
use discovery_actors::{Catalog, Engine, ServersSnapshot};
use discovery_config::Config;
use tokio::sync::watch;

pub use errors::ApiError;
pub use guard::{Access, Body, Grant};
pub use health::{Liveness, Readiness, ReadyStatus};

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
    /// What `/healthz` checks (the engine's supervisor and registry).
    pub liveness: Liveness,
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
    /// The MCP endpoint's shared state (`/mcp`).
    pub gateway: Arc<crate::gateway::Gateway>,
    /// The compressed bodies of `/v1/tools` and `/mcp` listings.
    pub compressor: Arc<crate::encoding::Compressor>,
    /// `GET /v1/servers`, serialized once per snapshot.
    pub servers_body: Arc<servers::ServersBody>,
    /// Test fault injection (`AppOptions::registration_pause`); None.
    #[doc(hidden)]
    pub registration_pause: Option<(Duration, Duration)>,
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
            metrics: metrics.clone(),
            readiness,
            liveness: Liveness::of_engine(engine),
            reloader,
            config,
            registrar: engine.supervisor.clone().recipient(),
            unregistrar: engine.supervisor.clone().recipient(),
            reserver: engine.supervisor.clone().recipient(),
            releaser: engine.supervisor.clone().recipient(),
            store,
            name_locks: Arc::default(),
            gateway: Arc::new(crate::gateway::Gateway::new(
                engine.calls.clone(),
                metrics.clone(),
            )),
            compressor: Arc::new(crate::encoding::Compressor::start(
                engine.catalog.clone(),
                None,
            )),
            servers_body: Arc::default(),
            registration_pause: None,
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

/// The whole application: routes, JSON error handlers, the guard (Host,
/// Origin, keys, content type: [`guard`]) and the metrics middleware. `HttpServer` calls it once per worker; tests call it with
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
    let config = state.config.clone();
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
                    actix_web::error::JsonPayloadError::ContentType => {
                        ApiError::UnsupportedMediaType(
                            "the body must be JSON. Hint: send Content-Type: application/json"
                                .into(),
                        )
                        .into()
                    }
                    other => ApiError::BadRequest(format!("malformed JSON body: {other}")).into(),
                }),
        )
        .configure(routes)
        .default_service(web::to(not_found))
        // Inside the metrics middleware, so refusals are counted too.
        .wrap_fn(move |req, srv| guard::check(&config, req, srv))
        .wrap_fn(move |req, srv| metrics::track(metrics.clone(), req, srv))
}

/// One row of the route table: the single source of truth for routing, for
/// the guard ([`guard`]: who may call it, what body it takes) and for the
/// tests that prove every route is guarded.
pub struct Endpoint {
    pub method: Method,
    /// The actix pattern, as `match_pattern()` gives it back.
    pub path: &'static str,
    pub access: Access,
    pub body: Body,
    /// Attaches the handler to a route already guarded by method (a GET
    /// route also answers HEAD).
    handler: fn(Route) -> Route,
}

/// Every route of the API. Per path, the methods missing here answer 405
/// with `Allow`, OPTIONS answers 204 with `Allow`, and GET answers HEAD too.
pub static ROUTES: &[Endpoint] = &[
    Endpoint {
        method: Method::GET,
        path: "/v1/tools",
        access: Access::Read,
        body: Body::None,
        handler: |r| r.to(tools::list_tools),
    },
    Endpoint {
        method: Method::GET,
        path: "/v1/servers",
        access: Access::Read,
        body: Body::None,
        handler: |r| r.to(servers::list_servers),
    },
    Endpoint {
        method: Method::POST,
        path: "/v1/servers",
        access: Access::Write,
        body: Body::Json,
        handler: |r| r.to(registrations::register),
    },
    Endpoint {
        method: Method::GET,
        path: "/v1/servers/{name}",
        access: Access::Read,
        body: Body::None,
        handler: |r| r.to(servers::get_server),
    },
    Endpoint {
        method: Method::PUT,
        path: "/v1/servers/{name}",
        access: Access::Write,
        body: Body::Json,
        handler: |r| r.to(registrations::replace),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/v1/servers/{name}",
        access: Access::Write,
        body: Body::None,
        handler: |r| r.to(registrations::remove),
    },
    Endpoint {
        method: Method::POST,
        path: "/v1/servers/{name}/refresh",
        access: Access::Write,
        body: Body::None,
        handler: |r| r.to(servers::refresh_server),
    },
    Endpoint {
        method: Method::POST,
        path: "/v1/admin/reload",
        access: Access::Write,
        body: Body::None,
        handler: |r| r.to(admin::reload),
    },
    Endpoint {
        method: Method::POST,
        path: "/mcp",
        access: Access::Mcp,
        body: Body::Json,
        handler: |r| r.to(crate::gateway::post_all),
    },
    Endpoint {
        method: Method::GET,
        path: "/mcp",
        access: Access::Mcp,
        body: Body::None,
        handler: |r| r.to(crate::gateway::get_all),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/mcp",
        access: Access::Mcp,
        body: Body::None,
        handler: |r| r.to(crate::gateway::delete_all),
    },
    Endpoint {
        method: Method::POST,
        path: "/mcp/{name}",
        access: Access::Mcp,
        body: Body::Json,
        handler: |r| r.to(crate::gateway::post_named),
    },
    Endpoint {
        method: Method::GET,
        path: "/mcp/{name}",
        access: Access::Mcp,
        body: Body::None,
        handler: |r| r.to(crate::gateway::get_named),
    },
    Endpoint {
        method: Method::DELETE,
        path: "/mcp/{name}",
        access: Access::Mcp,
        body: Body::None,
        handler: |r| r.to(crate::gateway::delete_named),
    },
    Endpoint {
        method: Method::GET,
        path: "/healthz",
        access: Access::Open,
        body: Body::None,
        handler: |r| r.to(health::healthz),
    },
    Endpoint {
        method: Method::GET,
        path: "/readyz",
        access: Access::Open,
        body: Body::None,
        handler: |r| r.to(health::readyz),
    },
    Endpoint {
        method: Method::GET,
        path: "/openapi.json",
        access: Access::Open,
        body: Body::None,
        handler: |r| r.to(openapi::openapi),
    },
    Endpoint {
        method: Method::GET,
        path: "/metrics",
        access: Access::Open,
        body: Body::None,
        handler: |r| r.to(metrics::metrics),
    },
];

/// The table's entry for a matched route pattern and a method (HEAD is
/// served by the GET entry).
pub fn find_endpoint(pattern: Option<&str>, method: &Method) -> Option<&'static Endpoint> {
    let pattern = pattern?;
    let method = if *method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|e| e.path == pattern && e.method == *method)
}

/// The table's paths, each once, in table order.
pub fn route_paths() -> Vec<&'static str> {
    let mut paths: Vec<&'static str> = Vec::new();
    for endpoint in ROUTES {
        if !paths.contains(&endpoint.path) {
            paths.push(endpoint.path);
        }
    }
    paths
}

/// The `Allow` value of a path: its methods, HEAD after GET, and OPTIONS.
pub fn allow_header(path: &str) -> String {
    let mut methods: Vec<&str> = Vec::new();
    for endpoint in ROUTES.iter().filter(|e| e.path == path) {
        methods.push(endpoint.method.as_str());
        if endpoint.method == Method::GET {
            methods.push("HEAD");
        }
    }
    methods.push("OPTIONS");
    methods.join(", ")
}

/// Registers [`ROUTES`], one resource per path.
fn routes(cfg: &mut web::ServiceConfig) {
    for path in route_paths() {
        let allow = allow_header(path);
        let mut resource = web::resource(path);
        for endpoint in ROUTES.iter().filter(|e| e.path == path) {
            let route = if endpoint.method == Method::GET {
                web::route().guard(method_guard::Any(method_guard::Get()).or(method_guard::Head()))
            } else {
                web::route().method(endpoint.method.clone())
            };
            resource = resource.route((endpoint.handler)(route));
        }
        let options_allow = allow.clone();
        resource = resource
            .route(web::route().method(Method::OPTIONS).to(move || {
                let allow = options_allow.clone();
                async move {
                    HttpResponse::NoContent()
                        .insert_header((header::ALLOW, allow))
                        .finish()
                }
            }))
            .default_service(web::to(method_not_allowed(allow)));
        cfg.service(resource);
    }
}

async fn not_found(req: HttpRequest) -> Result<&'static str, ApiError> {
    Err(ApiError::NotFound {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

fn method_not_allowed(
    allowed: String,
) -> impl Fn(HttpRequest) -> std::future::Ready<Result<&'static str, ApiError>> + Clone + 'static {
    move |req: HttpRequest| {
        std::future::ready(Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            allowed: allowed.clone(),
        }))
    }
}

#[cfg(test)]
mod tests;
