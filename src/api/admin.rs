//! Write access (`Authorization: Bearer <admin key>`) and
//! `POST /v1/admin/reload`.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState};
use crate::reload::{Reload, ReloadError, ReloadTrigger};

/// A reload reads one small file and does one supervisor round trip; this
/// only guards against an engine that is gone.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// When `admin.api_keys` is set, a write needs one of them as a bearer
/// token (compared in constant time); with no keys, writes are accepted only
/// from loopback clients. The keys come from the running configuration, so
/// a reload that changes them takes effect at once.
pub fn require_admin(req: &HttpRequest, state: &ApiState) -> Result<(), ApiError> {
    let config = state.config.borrow().clone();
    let keys = &config.admin.api_keys;
    if keys.is_empty() {
        // No keys: only a local operator may write.
        let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
        return if loopback {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        };
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(presented) = presented else {
        return Err(ApiError::Unauthorized);
    };
    // Every key is compared, so the time taken does not say which matched.
    let matched = keys.iter().fold(0u8, |acc, key| {
        acc | presented
            .as_bytes()
            .ct_eq(key.expose().as_bytes())
            .unwrap_u8()
    });
    if matched == 1 {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// With `admin.protect_reads: true`, reads of the catalog and the servers
/// need an admin key too (health probes and `/metrics` stay open).
pub fn require_reader(req: &HttpRequest, state: &ApiState) -> Result<(), ApiError> {
    let config = state.config.borrow().clone();
    if !config.admin.protect_reads || config.admin.api_keys.is_empty() {
        return Ok(());
    }
    require_admin(req, state)
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
