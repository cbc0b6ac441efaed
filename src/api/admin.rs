//! The handlers' side of access control (the checks run in
//! [`super::guard`]) and `POST /v1/admin/reload`.

use std::time::Duration;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use super::{ApiError, ApiState, Grant};
use crate::reload::{Reload, ReloadError, ReloadTrigger};

/// A reload reads one small file and does one supervisor round trip; this
/// only guards against an engine that is gone.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the guard ([`super::guard`]) let this request write. The key
/// check itself runs there, before any extractor reads the body; this is
/// the handler's side of it, so a write route that the route table does not
/// mark as a write fails closed instead of open.
pub fn require_admin(req: &HttpRequest, _state: &ApiState) -> Result<(), ApiError> {
    match req.extensions().get::<Grant>() {
        Some(Grant::Write(_)) => Ok(()),
        _ => Err(ApiError::Internal(
            "this write route is not marked as a write in the route table".into(),
        )),
    }
}

/// Whether the guard let this request read (with `admin.protect_reads`,
/// only with a read or write key).
pub fn require_reader(req: &HttpRequest, _state: &ApiState) -> Result<(), ApiError> {
    match req.extensions().get::<Grant>() {
        Some(Grant::Read | Grant::Write(_)) => Ok(()),
        None => Err(ApiError::Internal(
            "this read route is not in the route table".into(),
        )),
    }
}

#[utoipa::path(
    post,
    path = "/v1/admin/reload",
    tag = "admin",
    operation_id = "reload",
    summary = "Reload the configuration file now",
    responses((status = 200, description = "Applied.", body = super::openapi::ReloadSummary)),
    security(("admin_key" = [])),
)]
pub(super) async fn reload(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let answer = state
        .reloader
        .send(Reload {
            trigger: ReloadTrigger::Api,
        })
        .timeout(RELOAD_TIMEOUT)
        .await
        .map_err(|e| ApiError::EngineUnavailable(e.to_string()))?;
    match answer {
        Ok(summary) => Ok(HttpResponse::Ok().json(summary)),
        Err(ReloadError::Rejected(errors)) => Err(ApiError::ConfigRejected(errors)),
        Err(ReloadError::NoFile) => Err(ApiError::NoConfigFile),
        Err(ReloadError::Engine(e)) => Err(ApiError::EngineUnavailable(e)),
    }
}
