//! `GET /metrics` and the middleware that counts every HTTP request.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{web, HttpMessage as _, HttpResponse};

use super::{ApiError, ApiState};
use crate::metrics::{method_label, Metrics, UNMATCHED_ROUTE};

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format.", content_type = "text/plain", body = String)),
)]
pub(super) async fn metrics(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    // On a blocking thread, as `/v1/servers` is serialized: at 10k servers
    // a rendering takes tens of milliseconds (21 MB), which an HTTP
    // worker would spend away from every other request it holds.
    let _turn = state.metrics.render_turn().await;
    let metrics = Arc::clone(&state.metrics);
    let text = web::block(move || metrics.render())
        .await
        .map_err(|e| ApiError::Internal(format!("the metrics rendering did not finish: {e}")))?
        .map_err(|e| ApiError::Internal(discovery_actors::error_chain(&e)))?;
    Ok(HttpResponse::Ok()
        .content_type(Metrics::content_type())
        .body(crate::encoding::in_slices(text.into())))
}

/// The route pattern of a request (`match_pattern()`), found once by
/// [`track`] and read by the guard inside it.
pub(super) struct MatchedRoute(pub(super) Option<String>);

/// The body of `App::wrap_fn`: times the request and records it under its
/// route *pattern* (`/v1/servers/{name}`, never the raw path), so the
/// number of series stays bounded whatever clients send.
pub(super) fn track<S, B>(
    metrics: Arc<Metrics>,
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req.match_pattern();
    // The guard inside needs the pattern too: matching it again would walk
    // the resource map (and its regexes) a second time per request.
    req.extensions_mut().insert(MatchedRoute(route.clone()));
    let fut = srv.call(req);
    async move {
        let res = fut.await;
        let status = match &res {
            Ok(res) => res.status(),
            Err(err) => err.as_response_error().status_code(),
        };
        let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
        let took = started.elapsed();
        metrics.http_request(method, route, status.as_u16(), took);
        tracing::debug!(
            method,
            route,
            status = status.as_u16(),
            took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            "Served request"
        );
        res
    }
}
