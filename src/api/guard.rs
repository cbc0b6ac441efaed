//! The checks every request passes before any handler or extractor runs
//! (ADR 0009): one middleware around the whole application, the default
//! 404 service included, so a route added later cannot forget them.
//!
//! In order:
//! 1. `Host` (or the request target's authority) must be one of the names
//!    this service answers: `localhost`, `127.0.0.1`, `[::1]` (any port),
//!    the listen address (and the address the client connected to),
//!    `http.allowed_hosts`. Else 421. This is what stops
//!    DNS rebinding: the browser sends the attacker's name.
//! 2. A request that changes anything (any method but GET, HEAD, OPTIONS),
//!    or a protected read, with an `Origin` not in `http.allowed_origins`:
//!    403 `forbidden_origin`.
//! 3. The key, from the route table's [`Access`] of the route: before the
//!    body is read, so a bad key is 401/403 whatever the body is.
//! 4. The content type of write routes: 415 for a JSON route without a JSON
//!    body; a body-less POST without a key must still say
//!    `Content-Type: application/json`, which no cross-site HTML form can.
//!
//! The outcome is put in the request's extensions as a [`Grant`]; handlers
//! check it ([`super::admin::require_admin`]), so a write route missing
//! from the table fails closed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::HttpMessage;
use discovery_config::{normalize_origin, split_host_port, Config, Secret};
use futures_util::future::{FutureExt, LocalBoxFuture};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use tokio::sync::watch;

use super::{find_endpoint, ApiError};

/// Who may call a route (a column of the route table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Health probes and metrics: no key, ever.
    Open,
    /// Catalog and servers: a read or write key when `admin.protect_reads`.
    Read,
    /// Anything that changes state: a write key, or a loopback peer with
    /// `admin.allow_loopback_writes`.
    Write,
    /// The MCP endpoint: keys as for [`Access::Read`]; `Origin` checked on
    /// every method (the spec: an invalid Origin MUST get 403), since a web
    /// page could otherwise read the catalog or call tools through a
    /// visitor's browser.
    Mcp,
}

/// What a route reads from the request body (a column of the route table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    /// A JSON document: any other content type is 415.
    Json,
}

/// What the guard let through, in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// A read (open, or with a read or write key).
    Read,
    /// A write, and on whose authority.
    Write(Writer),
}

/// Who a write is from, for the log: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writer {
    /// `admin.api_keys[index]`; `fingerprint` is the first 8 hex digits of
    /// its SHA-256, stable across reloads that reorder the list.
    Key { index: usize, fingerprint: String },
    /// No keys configured, `admin.allow_loopback_writes`, a loopback peer.
    Loopback,
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Writer::Key { index, fingerprint } => {
                write!(f, "admin.api_keys[{index}] (sha256 {fingerprint})")
            }
            Writer::Loopback => f.write_str("none (loopback peer)"),
        }
    }
}

/// The local address of the connection a request came on (the address the
/// client dialled), stored by [`remember_local_addr`]. On 0.0.0.0 this is
/// what lets a probe or scraper that dials the pod IP (kubelet sends
/// `Host: <pod IP>:<port>`) through: an IP the client connected to is not a
/// rebinding name.
#[derive(Clone, Copy, Debug)]
pub struct ConnLocalAddr(pub SocketAddr);

/// `HttpServer::on_connect` callback: keeps the connection's local address
/// for the Host check.
pub fn remember_local_addr(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(addr) = tcp.local_addr() {
            ext.insert(ConnLocalAddr(addr));
        }
    }
}

/// Longest piece of a client's header repeated in an error message.
const ECHO_MAX: usize = 100;

/// The body of `App::wrap_fn`: runs the checks on the running config (a
/// reload that changes keys or names applies to the next request).
pub(super) fn check<S, B>(
    config: &watch::Receiver<Arc<Config>>,
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    let config = config.borrow().clone();
    let matched = req
        .extensions()
        .get::<super::metrics::MatchedRoute>()
        .map(|m| find_endpoint(m.0.as_deref(), req.method()));
    let endpoint =
        matched.unwrap_or_else(|| find_endpoint(req.match_pattern().as_deref(), req.method()));
    let is_write = endpoint.is_some_and(|e| e.access == Access::Write);
    let decision = decide(&config, &req, endpoint.map(|e| (e.access, e.body)));
    let peer = req.peer_addr();
    let method = req.method().clone();
    let path = req.path().to_owned();
    match decision {
        Err(err) => {
            if is_write {
                tracing::info!(%method, path, peer = %display_peer(peer), status = actix_web::ResponseError::status_code(&err).as_u16(), error = err.code(), "Refused a write over the API.");
            }
            let res = req.error_response(err).map_into_right_body();
            std::future::ready(Ok(res)).boxed_local()
        }
        Ok(grant) => {
            let writer = match &grant {
                Some(Grant::Write(writer)) => Some(writer.clone()),
                _ => None,
            };
            if let Some(grant) = grant {
                req.extensions_mut().insert(grant);
            }
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                if let Some(writer) = writer {
                    tracing::info!(%method, path, peer = %display_peer(peer), key = %writer, status = res.status().as_u16(), "Write over the API.");
                }
                Ok(res.map_into_left_body())
            }
            .boxed_local()
        }
    }
}

fn display_peer(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}

/// Every check, in order; `endpoint` is the route's table entry (None: an
/// unknown route or method, which only gets the Host and Origin checks and
/// then its 404/405).
fn decide(
    config: &Config,
    req: &ServiceRequest,
    endpoint: Option<(Access, Body)>,
) -> Result<Option<Grant>, ApiError> {
    check_host(config, req)?;
    let access = endpoint.map(|(access, _)| access);
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let protected_read =
        config.admin.protect_reads && matches!(access, Some(Access::Read | Access::Mcp));
    if changes || protected_read || access == Some(Access::Mcp) {
        check_origin(config, req)?;
    }
    let Some((access, body)) = endpoint else {
        return Ok(None);
    };
    match access {
        Access::Open => Ok(Some(Grant::Read)),
        Access::Mcp if body == Body::Json && !is_json(req) => Err(ApiError::UnsupportedMediaType(
            "an MCP message is JSON. Hint: send Content-Type: application/json".into(),
        )),
        Access::Read | Access::Mcp => {
            if protected_read {
                let token = bearer(req).ok_or(ApiError::Unauthorized)?;
                let write = find_key(token, &config.admin.api_keys);
                let read = find_key(token, &config.admin.read_keys);
                if write.is_none() && read.is_none() {
                    return Err(ApiError::Unauthorized);
                }
            }
            Ok(Some(Grant::Read))
        }
        Access::Write => {
            let writer = writer(config, req)?;
            let json = is_json(req);
            if body == Body::Json && !json {
                return Err(ApiError::UnsupportedMediaType(
                    "the body must be JSON. Hint: send Content-Type: application/json".into(),
                ));
            }
            if body == Body::None
                && *req.method() == Method::POST
                && writer == Writer::Loopback
                && !json
            {
                return Err(ApiError::UnsupportedMediaType(
                    "a POST without an admin key must say Content-Type: application/json (an \
                     HTML form cannot, so a web page cannot trigger it). Hint: add \
                     -H 'Content-Type: application/json'"
                        .into(),
                ));
            }
            Ok(Some(Grant::Write(writer)))
        }
    }
}

/// The write authority of the request, or why it has none.
fn writer(config: &Config, req: &ServiceRequest) -> Result<Writer, ApiError> {
    let admin = &config.admin;
    if admin.api_keys.is_empty() {
        if !admin.allow_loopback_writes {
            return Err(ApiError::Forbidden(
                "writes over the API are turned off: no admin key is configured. Hint: set \
                 admin.api_keys and send Authorization: Bearer <key>, or, for a trial on this \
                 machine only, set admin.allow_loopback_writes: true",
            ));
        }
        let loopback = req
            .peer_addr()
            .is_some_and(|a| a.ip().to_canonical().is_loopback());
        return if loopback {
            Ok(Writer::Loopback)
        } else {
            Err(ApiError::Forbidden(
                "without admin keys, writes are accepted only from loopback clients \
                 (admin.allow_loopback_writes). Hint: set admin.api_keys and send \
                 Authorization: Bearer <key>",
            ))
        };
    }
    let token = bearer(req).ok_or(ApiError::Unauthorized)?;
    let write = find_key(token, &admin.api_keys);
    let read = find_key(token, &admin.read_keys);
    match (write, read) {
        (Some((index, fingerprint)), _) => Ok(Writer::Key { index, fingerprint }),
        (None, Some(_)) => Err(ApiError::Forbidden(
            "this key is a read key (admin.read_keys): it cannot write. Hint: use a key of \
             admin.api_keys",
        )),
        (None, None) => Err(ApiError::Unauthorized),
    }
}

/// `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Which key of `keys` the token is, with the key's short fingerprint.
/// Both sides are hashed first, so the comparison takes the same time
/// whatever the lengths, and every key is compared, so the time does not
/// say which matched either.
fn find_key(token: &str, keys: &[Secret]) -> Option<(usize, String)> {
    let presented = Sha256::digest(token.as_bytes());
    let mut found = Choice::from(0);
    let mut index = 0u32;
    for (i, key) in keys.iter().enumerate() {
        let digest = Sha256::digest(key.expose().as_bytes());
        let same = presented.as_slice().ct_eq(digest.as_slice());
        index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), same);
        found |= same;
    }
    if !bool::from(found) {
        return None;
    }
    let fingerprint = presented[..4].iter().map(|b| format!("{b:02x}")).collect();
    Some((usize::try_from(index).unwrap_or(usize::MAX), fingerprint))
}

/// Whether the content type is JSON (`application/json`, or a `+json`
/// type, with any parameters), as actix's JSON extractor takes it.
fn is_json(req: &ServiceRequest) -> bool {
    let Ok(Some(mime)) = req.mime_type() else {
        return false;
    };
    mime.type_() == "application"
        && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
}

/// The name the request was sent to: the request target's authority wins
/// over the `Host` header (HTTP/2's :authority, or an absolute-form
/// target); forwarding headers such as X-Forwarded-Host are
/// client-controlled and never consulted.
fn request_host(req: &ServiceRequest) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok()),
    }
}

/// 421 unless the request names this service.
fn check_host(config: &Config, req: &ServiceRequest) -> Result<(), ApiError> {
    let Some(host) = request_host(req) else {
        return Err(ApiError::MisdirectedRequest("(none)".into()));
    };
    let mut listen = vec![req.app_config().local_addr(), config.listen];
    if let Some(ConnLocalAddr(addr)) = req.conn_data::<ConnLocalAddr>() {
        listen.push(*addr);
    }
    if host_allowed(host, &config.http.allowed_hosts, &listen) {
        Ok(())
    } else {
        Err(ApiError::MisdirectedRequest(clip(host)))
    }
}

/// Whether `host` (a `Host` value) is one of the names this service
/// answers: the loopback names with any port, a listen address (IP, or
/// IP:port), or an entry of `allowed` (`name`: any port; `name:port`).
pub(crate) fn host_allowed(host: &str, allowed: &[String], listen: &[SocketAddr]) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let Some((name, port)) = split_host_port(&host) else {
        return false;
    };
    if matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
        return true;
    }
    let listen_match = listen.iter().any(|addr| {
        let ip = match addr.ip() {
            ip if ip.is_unspecified() => return false,
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        name == ip && port.is_none_or(|p| p == addr.port())
    });
    listen_match
        || allowed.iter().any(|entry| match split_host_port(entry) {
            Some((entry_name, entry_port)) => {
                entry_name == name && entry_port.is_none_or(|p| Some(p) == port)
            }
            None => false,
        })
}

/// 403 when an `Origin` is present and not listed. No `Origin` (curl, a
/// server) passes: only browsers send it, and they always do cross-site.
fn check_origin(config: &Config, req: &ServiceRequest) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(origin.as_bytes());
    let allowed = normalize_origin(&text).is_ok_and(|origin| {
        config.http.allowed_origins.contains(&origin) || same_origin(&origin, req)
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::ForbiddenOrigin(clip(&text)))
    }
}

/// Whether `origin` (normalized) is this request's own origin: the page
/// that sent it was loaded from the `Host` it names, which the Host check
/// already accepted (so a rebinding name never gets here). This service
/// serves no pages of its own, so this is a same-origin tool or a proxy
/// in front of it, never a cross-site one.
fn same_origin(origin: &str, req: &ServiceRequest) -> bool {
    let Some(host) = request_host(req) else {
        return false;
    };
    ["http", "https"].iter().any(|scheme| {
        normalize_origin(&format!("{scheme}://{}", host.trim())).is_ok_and(|own| own == origin)
    })
}

fn clip(text: &str) -> String {
    let clipped: String = text.chars().take(ECHO_MAX).collect();
    format!("{clipped:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> Vec<SocketAddr> {
        vec!["10.0.0.5:8080".parse().unwrap()]
    }

    #[test]
    fn the_loopback_names_are_allowed_with_any_port() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:9",
        ] {
            assert!(host_allowed(host, &[], &listen()), "{host}");
        }
    }

    #[test]
    fn the_listen_address_is_allowed_on_its_port_only() {
        assert!(host_allowed("10.0.0.5", &[], &listen()));
        assert!(host_allowed("10.0.0.5:8080", &[], &listen()));
        assert!(!host_allowed("10.0.0.5:8081", &[], &listen()));
        let any: Vec<SocketAddr> = vec!["0.0.0.0:8080".parse().unwrap()];
        assert!(!host_allowed("0.0.0.0:8080", &[], &any), "never 0.0.0.0");
        let v6: Vec<SocketAddr> = vec!["[fd00::1]:8080".parse().unwrap()];
        assert!(host_allowed("[FD00::1]:8080", &[], &v6));
    }

    #[test]
    fn foreign_and_malformed_hosts_are_refused() {
        for host in [
            "evil.example.com",
            "evil.example.com:8080",
            "localhost.evil.example.com",
            "127.0.0.1.nip.io",
            "",
            "local host",
            "localhost:80:80",
            "::1",
            "localhost@evil",
        ] {
            assert!(!host_allowed(host, &[], &listen()), "{host:?}");
        }
    }

    #[test]
    fn allowed_hosts_match_by_name_and_optional_port() {
        let allowed = vec!["mcp.example.com".to_owned(), "api.internal:8443".to_owned()];
        assert!(host_allowed("MCP.example.com", &allowed, &listen()));
        assert!(host_allowed("mcp.example.com:443", &allowed, &listen()));
        assert!(host_allowed("api.internal:8443", &allowed, &listen()));
        assert!(!host_allowed("api.internal", &allowed, &listen()));
        assert!(!host_allowed("api.internal:80", &allowed, &listen()));
        assert!(!host_allowed("example.com", &allowed, &listen()));
    }

    #[actix_web::test]
    async fn the_dialled_address_is_remembered_per_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut ext = actix_web::dev::Extensions::new();
        remember_local_addr(&server, &mut ext);
        let ConnLocalAddr(seen) = ext.get::<ConnLocalAddr>().copied().unwrap();
        assert_eq!(seen, addr);
        // On 0.0.0.0, the address the client dialled is a name it may use.
        let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        assert!(!host_allowed(
            &format!("10.9.8.7:{}", addr.port()),
            &[],
            &[any]
        ));
        let dialled: SocketAddr = SocketAddr::from(([10, 9, 8, 7], addr.port()));
        assert!(host_allowed(
            &format!("10.9.8.7:{}", addr.port()),
            &[],
            &[any, dialled]
        ));
        drop(client);
    }

    #[test]
    fn keys_match_whatever_their_length_and_report_their_index() {
        let keys = vec![
            Secret::new("first-key-0123456789"),
            Secret::new("second-key-0123456789-longer"),
        ];
        let (index, fp) = find_key("second-key-0123456789-longer", &keys).unwrap();
        assert_eq!(index, 1);
        assert_eq!(fp.len(), 8);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(find_key("first-key-0123456789", &keys).unwrap().0, 0);
        for wrong in ["", "first-key-012345678", "first-key-0123456789x", "x"] {
            assert_eq!(find_key(wrong, &keys), None, "{wrong:?}");
        }
        assert_eq!(find_key("anything", &[]), None);
    }

    #[test]
    fn the_writer_never_shows_the_key() {
        let keys = vec![Secret::new("first-key-0123456789")];
        let (index, fingerprint) = find_key("first-key-0123456789", &keys).unwrap();
        let shown = Writer::Key { index, fingerprint }.to_string();
        assert!(shown.starts_with("admin.api_keys[0] (sha256 "), "{shown}");
        assert!(!shown.contains("first-key"), "{shown}");
    }
}
