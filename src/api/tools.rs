//! `GET /v1/tools`: the pre-serialized catalog, with conditional GET.

use std::convert::Infallible;

use actix_web::body::{BoxBody, SizedStream};
use actix_web::http::header::{self, HeaderMap};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use discovery_actors::catalog::Body;
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::encoding::{self, Accept, Coding};

/// `?server=NAME&q=TEXT`; any other parameter is refused (a typo such as
/// `?sever=` would otherwise silently return the whole catalog).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ToolsQuery {
    /// Only this server's tools; 404 `server_not_found` if there is no such
    /// server (a known server without tools gives an empty list).
    pub server: Option<String>,
    /// Case-insensitive substring of the tool's name or description; empty
    /// means no filter.
    pub q: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/tools",
    tag = "catalog",
    operation_id = "list_tools",
    summary = "The aggregated tool catalog",
    params(
        ToolsQuery,
        ("If-None-Match" = Option<String>, Header, description = "Entity tags (a list, `*`, weak tags); the tag of any representation of the current catalog that the request accepts gives 304."),
        ("Accept-Encoding" = Option<String>, Header, description = "`zstd`, `gzip` (or `x-gzip`), `identity`, `*`, with q-values. Without it: identity. `?q=` answers are identity only."),
    ),
    responses(
        (status = 200, description = "The catalog (or one server's part of it, or the tools matching `q`), in the coding `Content-Encoding` names (none: identity).", body = super::openapi::ToolList,
            headers(("ETag" = String, description = "Strong entity tag of this representation: the catalog's, with `-gzip` or `-zstd` appended for a compressed one."),
                ("Content-Encoding" = Option<String>, description = "`gzip` or `zstd`; absent for identity."),
                ("Vary" = String, description = "`accept-encoding`."),
                ("Cache-Control" = String, description = "`no-cache`."))),
        (status = 304, description = "`If-None-Match` matched: the catalog has not changed.",
            headers(("ETag" = String, description = "The tag that matched: the representation the client holds."),
                ("Vary" = String, description = "`accept-encoding`."))),
        (status = 406, description = "`Accept-Encoding` refuses identity and every coding this answer has (`not_acceptable`).", body = super::openapi::ErrorBody),
    ),
    security((), ("admin_key" = [])),
)]
pub(super) async fn list_tools(
    state: web::Data<ApiState>,
    req: HttpRequest,
    query: web::Query<ToolsQuery>,
) -> HttpResponse {
    let mut res = respond(&state, &req, query.into_inner())
        .unwrap_or_else(|e| actix_web::ResponseError::error_response(&e));
    let (name, value) = encoding::vary();
    res.headers_mut().insert(name, value);
    res
}

fn respond(
    state: &ApiState,
    req: &HttpRequest,
    ToolsQuery { server, q }: ToolsQuery,
) -> Result<HttpResponse, ApiError> {
    super::admin::require_reader(req, state)?;
    if let Some(name) = &server {
        if !state.servers.borrow().servers.contains_key(name.as_str()) {
            return Err(ApiError::ServerNotFound(name.clone()));
        }
    }
    let catalog = state.catalog();
    let q = q.as_deref().filter(|q| !q.is_empty());
    // `?q=` is cut per request from the text the user typed: compressing
    // it would be compressing per request. An empty answer is not worth
    // a coding either.
    let has_tools = match &server {
        Some(name) => catalog.server(name).is_some(),
        None => catalog.tool_count() > 0,
    };
    let offered = if q.is_some() || !has_tools {
        encoding::IDENTITY_ONLY
    } else {
        encoding::CATALOG_CODINGS
    };
    let accept = Accept::from_headers(req.headers());
    // A filtered body is a function of the catalog content and the URL, so
    // the catalog's ETag validates it too (an ETag is per URL).
    if let Some((_, etag)) = encoding::not_modified(req.headers(), &catalog.etag, &accept, offered)
    {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .finish());
    }
    let compressor = &state.compressor;
    let mut compressed = None;
    // Only the favourite compressed coding is scheduled when missing; the
    // others are only looked at.
    let mut first = true;
    let chosen = accept
        .choose(offered, |coding| {
            let schedule = std::mem::replace(&mut first, false);
            compressed = match &server {
                None => compressor.catalog_body(&catalog, coding, schedule),
                Some(name) => compressor.server_body(&catalog, name, coding, schedule),
            };
            compressed.is_some()
        })
        .map_err(|_| ApiError::NotAcceptable(offered_list(offered)))?;
    let mut res = HttpResponse::Ok();
    res.content_type(mime_json())
        .insert_header((header::ETAG, chosen.etag(&catalog.etag)))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    match (chosen.token(), compressed) {
        (Some(token), Some(bytes)) => {
            res.insert_header((header::CONTENT_ENCODING, token));
            Ok(res.body(bytes))
        }
        _ => Ok(res.body(into_body(catalog.render_filtered(server.as_deref(), q)))),
    }
}

/// `zstd, gzip, identity`: what a 406 says the answer has.
fn offered_list(offered: &[Coding]) -> String {
    offered
        .iter()
        .map(|c| c.token().unwrap_or("identity"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The catalog's pre-serialized pieces as a sized body: no copy of the
/// catalog per request (a filtered body is one piece already).
fn into_body(body: Body) -> BoxBody {
    match <[Bytes; 1]>::try_from(body.chunks) {
        Ok([one]) => BoxBody::new(one),
        Err(chunks) => BoxBody::new(SizedStream::new(
            body.len as u64,
            futures_util::stream::iter(chunks.into_iter().map(Ok::<_, Infallible>)),
        )),
    }
}

pub(super) fn mime_json() -> &'static str {
    "application/json"
}

/// Whether any `If-None-Match` header of the request matches `etag`.
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| etag_list_matches(v, etag))
}

/// `If-None-Match` semantics (RFC 9110 13.1.2): `*` matches any current
/// representation; otherwise a comma-separated list of entity tags compared
/// weakly (`W/"x"` matches `"x"`). Quoted tags may contain commas. A
/// malformed list matches nothing from the point where it breaks, so a
/// garbled header yields a full 200, never a wrong 304.
pub fn etag_list_matches(list: &str, etag: &str) -> bool {
    let ours = opaque(etag.trim());
    let mut rest = list.trim_start();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('*') {
            if after.trim_start().is_empty() || after.trim_start().starts_with(',') {
                return true;
            }
            return false;
        }
        let tag_start = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(inner) = tag_start.strip_prefix('"') else {
            return false;
        };
        let Some(end) = inner.find('"') else {
            return false;
        };
        let candidate = &tag_start[..end + 2];
        if Some(candidate) == ours {
            return true;
        }
        rest = inner[end + 1..].trim_start();
        match rest.strip_prefix(',') {
            Some(after) => rest = after.trim_start(),
            None if rest.is_empty() => {}
            None => return false,
        }
        // Tolerate empty list elements: `"a", , "b"`.
        while let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        }
    }
    false
}

/// The quoted opaque part of an entity tag (`W/` removed), if well formed.
fn opaque(tag: &str) -> Option<&str> {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    (tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"')).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"7-00000000deadbeef\"";

    #[test]
    fn exact_tag_matches() {
        assert!(etag_list_matches(ETAG, ETAG));
        assert!(etag_list_matches(&format!("  {ETAG}  "), ETAG));
    }

    #[test]
    fn weak_comparison() {
        assert!(etag_list_matches(&format!("W/{ETAG}"), ETAG));
        assert!(etag_list_matches(ETAG, &format!("W/{ETAG}")));
    }

    #[test]
    fn lists_and_star() {
        assert!(etag_list_matches(&format!("\"a\", {ETAG}"), ETAG));
        assert!(etag_list_matches(&format!("\"a\",W/{ETAG},\"b\""), ETAG));
        assert!(etag_list_matches(&format!("\"a\", , {ETAG}"), ETAG));
        assert!(etag_list_matches("*", ETAG));
        assert!(etag_list_matches(" * ", ETAG));
        assert!(!etag_list_matches("\"a\", \"b\"", ETAG));
    }

    #[test]
    fn quoted_commas_do_not_split_a_tag() {
        // `"x,<ours-without-quotes>"` is one foreign tag, not ours.
        let foreign = format!("\"x,{}", &ETAG[1..]);
        assert!(!etag_list_matches(&foreign, ETAG));
        assert!(etag_list_matches(&format!("\"x,y\", {ETAG}"), ETAG));
    }

    #[test]
    fn malformed_headers_never_match() {
        assert!(!etag_list_matches("", ETAG));
        assert!(!etag_list_matches("7-00000000deadbeef", ETAG));
        assert!(!etag_list_matches(&ETAG[..ETAG.len() - 1], ETAG));
        assert!(!etag_list_matches("*x", ETAG));
        assert!(!etag_list_matches(&format!("\"a\" junk {ETAG}"), ETAG));
        assert!(!etag_list_matches("W/", ETAG));
    }

    #[test]
    fn several_header_lines_are_all_considered() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::IF_NONE_MATCH,
            header::HeaderValue::from_static("\"a\""),
        );
        assert!(!if_none_match(&headers, ETAG));
        headers.append(
            header::IF_NONE_MATCH,
            header::HeaderValue::from_str(ETAG).unwrap(),
        );
        assert!(if_none_match(&headers, ETAG));
    }
}
