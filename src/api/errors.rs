//! The API's error type: each variant maps to one status code and one
//! stable `code` (contract: clients match on it), rendered as
//! `{"error":{"code":"...","message":"..."}}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route matches the path.
    #[error("no route for {method} {path}. Hint: the API lives under /v1 (GET /v1/tools, GET /v1/servers), plus /healthz, /readyz and /metrics")]
    NotFound { method: String, path: String },

    /// The route exists, the method does not.
    #[error("method {method} is not allowed on {path}; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },

    /// The `Host` is none of the names this service answers (DNS
    /// rebinding, or a name the operator did not list).
    #[error("this service does not answer for Host {0}. Hint: use localhost, 127.0.0.1, [::1] or the listen address, or add the name to http.allowed_hosts")]
    MisdirectedRequest(String),

    /// A request from a web page whose origin is not listed.
    #[error("requests from the web origin {0} are not accepted. Hint: add it to http.allowed_origins if a page there must use this API")]
    ForbiddenOrigin(String),

    /// A body of the wrong type (a JSON route), or a body-less POST without
    /// a JSON content type or a key (what a cross-site HTML form sends).
    #[error("{0}")]
    UnsupportedMediaType(String),

    /// A `{name}` in the path or `?server=` names no known server.
    #[error("no server named {0:?}. Hint: GET /v1/servers lists the servers")]
    ServerNotFound(String),

    /// The request is malformed (query string, ...).
    #[error("{0}")]
    BadRequest(String),

    /// A registration body that is not a valid config entry.
    #[error("the server definition is invalid ({} problem(s))", .0.len())]
    InvalidServer(discovery_config::ConfigErrors),

    /// The name belongs to a server of the configuration file.
    #[error("server {0:?} is defined in the configuration file. Hint: change or remove it there (the file is reloaded on change), or register under another name")]
    FileServer(String),

    /// A registration under the name of a configured view (`/mcp/{name}`
    /// serves either, so they share one name space).
    #[error("{0:?} is the name of a view in the config file (views.{0}); views and servers share one name space. Hint: pick another name")]
    ViewName(String),

    /// POST of a name that is already registered.
    #[error("a server named {0:?} is already registered. Hint: PUT /v1/servers/{0} replaces it")]
    AlreadyRegistered(String),

    /// A body over the limit.
    #[error("the body exceeds {0} bytes")]
    PayloadTooLarge(usize),

    /// A write that is not allowed at all (why, with a hint, is the text).
    #[error("{0}")]
    Forbidden(&'static str),

    /// A write without a valid admin key (when keys are configured).
    #[error("this endpoint needs `Authorization: Bearer <key>`. Hint: writes take a key of `admin.api_keys`; protected reads one of `admin.api_keys` or `admin.read_keys`")]
    Unauthorized,

    /// A reload found problems; nothing changed.
    #[error("the configuration was rejected ({} problem(s)); the running one is unchanged", .0.len())]
    ConfigRejected(discovery_config::ConfigErrors),

    /// A reload without a file to read.
    #[error("the service runs on its embedded defaults: there is no configuration file to reload. Hint: start it with --config PATH")]
    NoConfigFile,

    /// The engine did not answer (stopping, or overloaded).
    #[error("the discovery engine did not accept the request: {0}")]
    EngineUnavailable(String),

    /// The store of runtime registrations did not answer in time or
    /// failed; nothing was changed.
    #[error(
        "the store of runtime registrations is unavailable: {0}. Nothing was changed; retry later"
    )]
    StoreUnavailable(String),

    /// `Accept-Encoding` refuses every coding the answer has, identity
    /// included (RFC 9110 12.5.3).
    #[error("Accept-Encoding accepts none of the codings this answer has ({0}). Hint: allow identity (drop `identity;q=0` and `*;q=0`) or accept one of those")]
    NotAcceptable(String),

    /// A bug or an unexpected failure on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::ServerNotFound(_) => "server_not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidServer(_) => "invalid_server",
            ApiError::FileServer(_) => "file_server",
            ApiError::ViewName(_) => "view_name",
            ApiError::AlreadyRegistered(_) => "already_registered",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::MisdirectedRequest(_) => "misdirected_request",
            ApiError::ForbiddenOrigin(_) => "forbidden_origin",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::ConfigRejected(_) => "config_rejected",
            ApiError::NoConfigFile => "no_config_file",
            ApiError::EngineUnavailable(_) => "engine_unavailable",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::NotAcceptable(_) => "not_acceptable",
            ApiError::Internal(_) => "internal",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    /// Every problem of a rejected configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<ProblemJson<'a>>>,
}

#[derive(Serialize)]
struct ProblemJson<'a> {
    file: Option<String>,
    path: &'a str,
    message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::ServerNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InvalidServer(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::FileServer(_) | ApiError::ViewName(_) | ApiError::AlreadyRegistered(_) => {
                StatusCode::CONFLICT
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forbidden(_) | ApiError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ConfigRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoConfigFile => StatusCode::CONFLICT,
            ApiError::EngineUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            res.insert_header((header::ALLOW, allowed.as_str()));
        }
        if let ApiError::Unauthorized = self {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        let errors = match self {
            ApiError::ConfigRejected(errors) | ApiError::InvalidServer(errors) => Some(
                errors
                    .iter()
                    .map(|e| ProblemJson {
                        file: e.file.as_ref().map(|f| f.display().to_string()),
                        path: &e.path,
                        message: &e.message,
                    })
                    .collect(),
            ),
            _ => None,
        };
        res.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                errors,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_json(err: &ApiError) -> (StatusCode, serde_json::Value) {
        let res = err.error_response();
        let status = res.status();
        let bytes = res.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn error_body_has_code_and_message_only() {
        let (status, v) = body_json(&ApiError::ServerNotFound("nope".into()));
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["code"], "server_not_found");
        assert!(v["error"]["message"].as_str().unwrap().contains("\"nope\""));
        assert_eq!(v.as_object().unwrap().len(), 1);
        assert_eq!(v["error"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn every_variant_has_its_status_and_code() {
        let cases = [
            (
                ApiError::NotFound {
                    method: "GET".into(),
                    path: "/x".into(),
                },
                404,
                "not_found",
            ),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                    path: "/v1/tools".into(),
                    allowed: "GET".into(),
                },
                405,
                "method_not_allowed",
            ),
            (
                ApiError::ServerNotFound("s".into()),
                404,
                "server_not_found",
            ),
            (ApiError::BadRequest("b".into()), 400, "bad_request"),
            (
                ApiError::EngineUnavailable("e".into()),
                503,
                "engine_unavailable",
            ),
            (
                ApiError::StoreUnavailable("s".into()),
                503,
                "store_unavailable",
            ),
            (ApiError::Internal("i".into()), 500, "internal"),
            (
                ApiError::MisdirectedRequest("evil.example.com".into()),
                421,
                "misdirected_request",
            ),
            (
                ApiError::ForbiddenOrigin("https://evil.example.com".into()),
                403,
                "forbidden_origin",
            ),
            (
                ApiError::UnsupportedMediaType("u".into()),
                415,
                "unsupported_media_type",
            ),
            (ApiError::Forbidden("f"), 403, "forbidden"),
            (
                ApiError::NotAcceptable("gzip, identity".into()),
                406,
                "not_acceptable",
            ),
        ];
        for (err, status, code) in cases {
            let (got, v) = body_json(&err);
            assert_eq!(got.as_u16(), status, "{err}");
            assert_eq!(v["error"]["code"], code);
        }
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let res = ApiError::MethodNotAllowed {
            method: "PUT".into(),
            path: "/v1/tools".into(),
            allowed: "GET".into(),
        }
        .error_response();
        assert_eq!(res.headers().get(header::ALLOW).unwrap(), "GET");
    }
}
