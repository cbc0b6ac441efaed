//! A test OAuth 2.0 authorization server: a real actix-web HTTP server on
//! 127.0.0.1 with a client-credentials token endpoint (RFC 6749 section 4.4)
//! and authorization server metadata (RFC 8414, OpenID Connect Discovery),
//! whose behaviour can be changed while it runs.
//!
//! ```ignore
//! let idp = TokenEndpoint::builder().client("id", "secret").expires_in(Some(2)).start()?;
//! let up = TestUpstream::builder().require_bearer(idp.bearer_auth()).start()?;
//! // ... auth: { type: oauth2, token_url: idp.token_url(), client_id: id, ... }
//! idp.store().revoke_all();            // the upstream now answers 401
//! assert_eq!(idp.last_token_request().unwrap().auth_method, Some(ClientAuthMethod::Basic));
//! ```
//!
//! Routes (`{p}` is the issuer path, empty by default):
//!
//! | route | what |
//! |---|---|
//! | `POST /token` | client credentials grant; every request recorded ([`TokenRequest`]) |
//! | `GET /.well-known/oauth-authorization-server{p}` | RFC 8414 metadata ([`AsMetadataDocs::oauth`]) |
//! | `GET /.well-known/openid-configuration{p}` | OpenID metadata, path insertion ([`AsMetadataDocs::openid_insert`]) |
//! | `GET {p}/.well-known/openid-configuration` | OpenID metadata, path appending ([`AsMetadataDocs::openid_append`]) |
//!
//! A metadata document that is switched off answers 404; every metadata GET
//! is logged ([`TokenEndpointHandle::metadata_requests`]).
//!
//! Who serves what: the authorization server metadata lives here; the
//! protected resource metadata (RFC 9728) is served by the protected
//! upstream itself (`tests/support/upstream.rs`, [`BearerAuth`]), as a real
//! MCP server does. [`TokenEndpointHandle::bearer_auth`] gives the
//! [`BearerAuth`] that names this server as the authorization server and
//! validates against its [`TokenStore`].
//!
//! The token endpoint checks, in this order: an injected failure
//! ([`TokenEndpointBehavior::fail_with`]); `Content-Type:
//! application/x-www-form-urlencoded` (400 `invalid_request`); client
//! authentication — exactly one of `client_secret_basic` (the `Authorization:
//! Basic` credentials are form-urlencoded before base64, RFC 6749 section
//! 2.3.1, and decoded so here) and `client_secret_post` (`client_id` and
//! `client_secret` in the form), else 400 `invalid_request` for both or 401
//! `invalid_client` for none, for a method not accepted, or for credentials
//! other than [`TokenEndpointBehavior::client`]; `grant_type=client_credentials`
//! (400 `unsupported_grant_type`). Then it waits
//! [`TokenEndpointBehavior::delay`] and issues a token: random (`tok-` and 32
//! hex digits) or [`TokenEndpointBehavior::fixed_token`], valid for
//! `expires_in` seconds in the store. The answer carries `expires_in` only
//! when set, and echoes `scope` when one was requested. Errors are RFC 6749
//! section 5.2 JSON (`error`, `error_description`).
//!
//! Runs on its own thread with its own actix `System`, like the test
//! upstream: a slow answer never blocks the test's runtime.
#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use rand::Rng;
use serde_json::json;

pub use super::upstream::{BearerAuth, TokenStore};

/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/token";
/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

// ------------------------------------------------------------------ behaviour

/// How a client authenticated to the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    Post,
}

impl ClientAuthMethod {
    /// The RFC 8414 / RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::Basic => "client_secret_basic",
            ClientAuthMethod::Post => "client_secret_post",
        }
    }
}

/// Which client authentication methods the token endpoint accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AcceptedAuth {
    #[default]
    Either,
    Basic,
    Post,
}

impl AcceptedAuth {
    fn accepts(self, method: ClientAuthMethod) -> bool {
        matches!(
            (self, method),
            (AcceptedAuth::Either, _)
                | (AcceptedAuth::Basic, ClientAuthMethod::Basic)
                | (AcceptedAuth::Post, ClientAuthMethod::Post)
        )
    }
}

/// An error answer (RFC 6749 section 5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError {
    pub status: u16,
    /// `invalid_client`, `invalid_scope`, ...
    pub error: String,
    pub description: Option<String>,
}

impl TokenError {
    pub fn new(status: u16, error: &str, description: Option<&str>) -> Self {
        Self {
            status,
            error: error.to_owned(),
            description: description.map(str::to_owned),
        }
    }
    /// 401 `invalid_client`: "client authentication failed".
    pub fn invalid_client() -> Self {
        Self::new(401, "invalid_client", Some("client authentication failed"))
    }
}

/// Which authorization server metadata documents exist (the others are 404).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsMetadataDocs {
    /// `/.well-known/oauth-authorization-server{issuer path}` (RFC 8414).
    pub oauth: bool,
    /// `/.well-known/openid-configuration{issuer path}`.
    pub openid_insert: bool,
    /// `{issuer path}/.well-known/openid-configuration` (OpenID Connect
    /// Discovery 1.0). For an issuer without a path both OpenID variants are
    /// the same URL, served when either is on.
    pub openid_append: bool,
}

impl AsMetadataDocs {
    /// RFC 8414 only (the default).
    pub const OAUTH: Self = Self {
        oauth: true,
        openid_insert: false,
        openid_append: false,
    };
    /// Both OpenID variants, no RFC 8414 document.
    pub const OPENID: Self = Self {
        oauth: false,
        openid_insert: true,
        openid_append: true,
    };
    /// No metadata at all.
    pub const NONE: Self = Self {
        oauth: false,
        openid_insert: false,
        openid_append: false,
    };
}

impl Default for AsMetadataDocs {
    fn default() -> Self {
        Self::OAUTH
    }
}

/// Everything the token endpoint can be told. `Default`: answers at once,
/// tokens valid for an hour, any client with any credentials, either client
/// authentication method, RFC 8414 metadata listing both methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEndpointBehavior {
    /// Wait this long before answering a token request.
    pub delay: Option<Duration>,
    /// `expires_in` of issued tokens, and their lifetime in the store
    /// (`None`: not sent, valid forever).
    pub expires_in: Option<u64>,
    /// The only accepted (client_id, client_secret); `None` accepts any
    /// client that authenticates somehow.
    pub client: Option<(String, String)>,
    pub auth_method: AcceptedAuth,
    /// Answer every token request with this error.
    pub fail_with: Option<TokenError>,
    /// Issue this token every time instead of a random one.
    pub fixed_token: Option<String>,
    pub metadata: AsMetadataDocs,
    /// `token_endpoint_auth_methods_supported` in the metadata (left out
    /// when `None`).
    pub auth_methods_supported: Option<Vec<String>>,
    /// The issuer's path, e.g. `/tenant1` (empty: the origin).
    pub issuer_path: String,
}

impl Default for TokenEndpointBehavior {
    fn default() -> Self {
        Self {
            delay: None,
            expires_in: Some(3600),
            client: None,
            auth_method: AcceptedAuth::Either,
            fail_with: None,
            fixed_token: None,
            metadata: AsMetadataDocs::OAUTH,
            auth_methods_supported: Some(vec![
                "client_secret_basic".to_owned(),
                "client_secret_post".to_owned(),
            ]),
            issuer_path: String::new(),
        }
    }
}

/// One token request as the endpoint saw it, recorded when answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// When it arrived.
    pub at: Instant,
    /// When it was answered (after the delay).
    pub answered_at: Instant,
    /// How the client authenticated (`None`: not at all, or both ways).
    pub auth_method: Option<ClientAuthMethod>,
    /// Both Basic credentials and a `client_secret` in the form.
    pub both_methods: bool,
    /// The client id and secret, decoded, from whichever method was used.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub grant_type: Option<String>,
    pub scope: Option<String>,
    /// The first `resource` parameter (RFC 8707).
    pub resource: Option<String>,
    /// Every `resource` parameter.
    pub resources: Vec<String>,
    pub audience: Option<String>,
    /// The whole decoded form, in order.
    pub form: Vec<(String, String)>,
    /// All headers, lower-case names.
    pub headers: Vec<(String, String)>,
    pub status: u16,
    /// The RFC 6749 `error` code of a refusal.
    pub error: Option<String>,
    /// The access token issued.
    pub token: Option<String>,
}

impl TokenRequest {
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }
    /// The first value of a form field.
    pub fn field(&self, name: &str) -> Option<String> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

// ------------------------------------------------------------------- builder

#[derive(Clone, Debug, Default)]
pub struct TokenEndpointBuilder {
    behavior: TokenEndpointBehavior,
    store: Option<TokenStore>,
}

impl TokenEndpointBuilder {
    pub fn behavior(mut self, behavior: TokenEndpointBehavior) -> Self {
        self.behavior = behavior;
        self
    }
    /// Issue into this store instead of a new one.
    pub fn store(mut self, store: TokenStore) -> Self {
        self.store = Some(store);
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.behavior.delay = Some(delay);
        self
    }
    pub fn expires_in(mut self, secs: Option<u64>) -> Self {
        self.behavior.expires_in = secs;
        self
    }
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.behavior.client = Some((id.into(), secret.into()));
        self
    }
    pub fn auth_method(mut self, accepted: AcceptedAuth) -> Self {
        self.behavior.auth_method = accepted;
        self
    }
    pub fn fail_with(mut self, error: TokenError) -> Self {
        self.behavior.fail_with = Some(error);
        self
    }
    pub fn fixed_token(mut self, token: impl Into<String>) -> Self {
        self.behavior.fixed_token = Some(token.into());
        self
    }
    pub fn metadata(mut self, docs: AsMetadataDocs) -> Self {
        self.behavior.metadata = docs;
        self
    }
    /// `token_endpoint_auth_methods_supported`, e.g. `["client_secret_post"]`.
    pub fn auth_methods_supported<I, S>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.behavior.auth_methods_supported = Some(methods.into_iter().map(Into::into).collect());
        self
    }
    /// Leave `token_endpoint_auth_methods_supported` out of the metadata.
    pub fn no_auth_methods_supported(mut self) -> Self {
        self.behavior.auth_methods_supported = None;
        self
    }
    /// An issuer with a path, e.g. `/tenant1`.
    pub fn issuer_path(mut self, path: impl Into<String>) -> Self {
        self.behavior.issuer_path = path.into();
        self
    }

    /// Binds 127.0.0.1:0 and starts serving; returns once the socket listens.
    pub fn start(self) -> io::Result<TokenEndpoint> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let handle = TokenEndpointHandle {
            inner: Arc::new(Inner {
                addr: listener.local_addr()?,
                behavior: Mutex::new(self.behavior),
                store: self.store.unwrap_or_default(),
                stats: Mutex::new(Stats::default()),
                arrived: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
            }),
        };
        let server = ServerThread::start(listener, handle.inner.clone())?;
        Ok(TokenEndpoint { handle, server })
    }
}

// -------------------------------------------------------------- the handles

/// A running token endpoint. Dropping it stops the server at once; `stop()`
/// stops it gracefully. Derefs to its [`TokenEndpointHandle`].
pub struct TokenEndpoint {
    handle: TokenEndpointHandle,
    server: ServerThread,
}

impl TokenEndpoint {
    pub fn builder() -> TokenEndpointBuilder {
        TokenEndpointBuilder::default()
    }
    pub fn handle(&self) -> TokenEndpointHandle {
        self.handle.clone()
    }
    pub async fn stop(mut self) {
        self.server.stop().await;
    }
}

impl Deref for TokenEndpoint {
    type Target = TokenEndpointHandle;
    fn deref(&self) -> &TokenEndpointHandle {
        &self.handle
    }
}

/// Shared state of a token endpoint: behaviour (changeable at run time), its
/// store and what it has seen. Cheap to clone.
#[derive(Clone)]
pub struct TokenEndpointHandle {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    behavior: Mutex<TokenEndpointBehavior>,
    store: TokenStore,
    stats: Mutex<Stats>,
    /// Token requests that arrived (answered or not).
    arrived: AtomicU64,
    /// Token requests arrived and not yet answered. (A client that gives
    /// up meanwhile is not noticed: actix-web finishes the handler anyway.)
    in_flight: AtomicU64,
}

#[derive(Default)]
struct Stats {
    token_requests: Vec<TokenRequest>,
    metadata_requests: Vec<(String, u16)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TokenEndpointHandle {
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }
    /// `http://127.0.0.1:P`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }
    /// `http://127.0.0.1:P/token`.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.url())
    }
    /// `http://127.0.0.1:P` plus the issuer path.
    pub fn issuer(&self) -> String {
        format!("{}{}", self.url(), self.behavior().issuer_path)
    }
    /// The tokens this endpoint issued; give it to an upstream's
    /// `require_bearer`.
    pub fn store(&self) -> TokenStore {
        self.inner.store.clone()
    }
    /// An upstream protection validating against [`store`](Self::store) with
    /// this endpoint's issuer as the authorization server.
    pub fn bearer_auth(&self) -> BearerAuth {
        BearerAuth::new(self.store()).authorization_server(self.issuer())
    }

    // -- behaviour -------------------------------------------------------

    pub fn behavior(&self) -> TokenEndpointBehavior {
        lock(&self.inner.behavior).clone()
    }
    pub fn set_behavior(&self, behavior: TokenEndpointBehavior) {
        *lock(&self.inner.behavior) = behavior;
    }
    pub fn update(&self, f: impl FnOnce(&mut TokenEndpointBehavior)) {
        f(&mut lock(&self.inner.behavior));
    }
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.update(|b| b.delay = delay);
    }
    pub fn set_expires_in(&self, secs: Option<u64>) {
        self.update(|b| b.expires_in = secs);
    }
    pub fn set_fail_with(&self, error: Option<TokenError>) {
        self.update(|b| b.fail_with = error);
    }

    // -- counters --------------------------------------------------------

    /// Token requests that arrived, answered or not.
    pub fn requests(&self) -> u64 {
        self.inner.arrived.load(Ordering::SeqCst)
    }
    /// Token requests arrived and not answered yet (waiting out the delay).
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::SeqCst)
    }
    /// Answered token requests, in order of answer.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.inner.stats).token_requests.clone()
    }
    pub fn last_token_request(&self) -> Option<TokenRequest> {
        lock(&self.inner.stats).token_requests.last().cloned()
    }
    /// Tokens issued, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.inner.stats)
            .token_requests
            .iter()
            .filter_map(|r| r.token.clone())
            .collect()
    }
    /// Successful token requests.
    pub fn tokens_issued(&self) -> usize {
        self.issued_tokens().len()
    }
    /// Metadata fetches (path, status), in order.
    pub fn metadata_requests(&self) -> Vec<(String, u16)> {
        lock(&self.inner.stats).metadata_requests.clone()
    }
    pub fn reset_counters(&self) {
        *lock(&self.inner.stats) = Stats::default();
        self.inner.arrived.store(0, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------ serving

struct ServerThread {
    handle: Option<ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    fn start(listener: TcpListener, inner: Arc<Inner>) -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<ServerHandle>>();
        let thread = std::thread::Builder::new()
            .name("test-token-endpoint".to_owned())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let data = web::Data::from(inner);
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .app_data(web::PayloadConfig::new(MAX_BODY))
                            .default_service(web::to(serve))
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .listen(listener);
                    let server = match server {
                        Ok(s) => s.run(),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(server.handle()));
                    let _ = server.await;
                });
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| io::Error::other("token endpoint thread exited before serving"))??;
        Ok(Self {
            handle: Some(handle),
            thread: Some(thread),
        })
    }

    async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop(true).await;
        }
        self.thread.take();
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            drop(handle.stop(false));
        }
    }
}

async fn serve(req: HttpRequest, body: web::Bytes, inner: web::Data<Inner>) -> HttpResponse {
    let path = req.path().to_owned();
    match req.method().as_str() {
        "POST" if path == TOKEN_PATH => inner.token(&req, body).await,
        "GET" => inner.metadata(&path),
        _ => error_response(&TokenError::new(404, "not_found", None)),
    }
}

/// Counts a token request as in flight until answered (or dropped, when the
/// server stops).
struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Inner {
    fn behavior(&self) -> TokenEndpointBehavior {
        lock(&self.behavior).clone()
    }

    fn issuer(&self, b: &TokenEndpointBehavior) -> String {
        format!("http://{}{}", self.addr, b.issuer_path)
    }

    fn metadata(&self, path: &str) -> HttpResponse {
        let b = self.behavior();
        let p = b.issuer_path.as_str();
        let oauth = format!("/.well-known/oauth-authorization-server{p}");
        let openid_insert = format!("/.well-known/openid-configuration{p}");
        let openid_append = format!("{p}/.well-known/openid-configuration");
        let docs = b.metadata;
        let serve = (docs.oauth && path == oauth)
            || (docs.openid_insert && path == openid_insert)
            || (docs.openid_append && path == openid_append);
        let res = if serve {
            let issuer = self.issuer(&b);
            let mut doc = json!({
                "issuer": issuer,
                "token_endpoint": format!("http://{}{TOKEN_PATH}", self.addr),
                "grant_types_supported": ["client_credentials"],
                "response_types_supported": ["token"],
            });
            if let Some(methods) = &b.auth_methods_supported {
                doc["token_endpoint_auth_methods_supported"] = json!(methods);
            }
            if path.contains("openid-configuration") {
                doc["jwks_uri"] = json!(format!("{issuer}/jwks"));
                doc["subject_types_supported"] = json!(["public"]);
                doc["id_token_signing_alg_values_supported"] = json!(["RS256"]);
            }
            HttpResponse::Ok()
                .content_type("application/json")
                .body(doc.to_string())
        } else {
            error_response(&TokenError::new(404, "not_found", None))
        };
        lock(&self.stats)
            .metadata_requests
            .push((path.to_owned(), res.status().as_u16()));
        res
    }

    async fn token(&self, req: &HttpRequest, body: Bytes) -> HttpResponse {
        let at = Instant::now();
        self.arrived.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self);
        let b = self.behavior();
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let basic = header_str(req, "authorization").and_then(|v| parse_basic(&v));
        let post_id = field("client_id");
        let post_secret = field("client_secret");
        let both_methods = basic.is_some() && post_secret.is_some();
        let (auth_method, client_id, client_secret) = match (&basic, &post_secret) {
            (Some(_), Some(_)) => (None, None, None),
            (Some((id, secret)), None) => (
                Some(ClientAuthMethod::Basic),
                Some(id.clone()),
                Some(secret.clone()),
            ),
            (None, Some(secret)) => (
                Some(ClientAuthMethod::Post),
                post_id.clone(),
                Some(secret.clone()),
            ),
            (None, None) => (None, post_id.clone(), None),
        };
        let mut record = TokenRequest {
            at,
            answered_at: at,
            auth_method,
            both_methods,
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            grant_type: field("grant_type"),
            scope: field("scope"),
            resource: field("resource"),
            resources: form
                .iter()
                .filter(|(k, _)| k == "resource")
                .map(|(_, v)| v.clone())
                .collect(),
            audience: field("audience"),
            form: form.clone(),
            headers: request_headers(req),
            status: 200,
            error: None,
            token: None,
        };

        let content_type = header_str(req, "content-type").unwrap_or_default();
        let verdict: Result<(), TokenError> = if let Some(e) = &b.fail_with {
            Err(e.clone())
        } else if !content_type.starts_with("application/x-www-form-urlencoded") {
            Err(TokenError::new(
                400,
                "invalid_request",
                Some("the body must be application/x-www-form-urlencoded"),
            ))
        } else if both_methods {
            Err(TokenError::new(
                400,
                "invalid_request",
                Some("more than one client authentication method"),
            ))
        } else if auth_method.is_none() {
            Err(TokenError::new(
                401,
                "invalid_client",
                Some("no client authentication"),
            ))
        } else if !auth_method.is_some_and(|m| b.auth_method.accepts(m)) {
            Err(TokenError::new(
                401,
                "invalid_client",
                Some("client authentication method not allowed"),
            ))
        } else if b.client.as_ref().is_some_and(|(id, secret)| {
            client_id.as_deref() != Some(id.as_str())
                || client_secret.as_deref() != Some(secret.as_str())
        }) {
            Err(TokenError::invalid_client())
        } else if record.grant_type.as_deref() != Some("client_credentials") {
            Err(TokenError::new(
                400,
                "unsupported_grant_type",
                Some("only client_credentials is supported"),
            ))
        } else {
            Ok(())
        };

        if let Some(delay) = b.delay {
            actix_web::rt::time::sleep(delay).await;
        }
        let res = match verdict {
            Ok(()) => {
                let token = b.fixed_token.clone().unwrap_or_else(random_token);
                self.store
                    .insert(token.clone(), b.expires_in.map(Duration::from_secs));
                let mut answer = json!({ "access_token": token, "token_type": "Bearer" });
                if let Some(secs) = b.expires_in {
                    answer["expires_in"] = json!(secs);
                }
                if let Some(scope) = &record.scope {
                    answer["scope"] = json!(scope);
                }
                record.token = Some(token);
                HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .insert_header((header::PRAGMA, "no-cache"))
                    .body(answer.to_string())
            }
            Err(e) => {
                record.status = e.status;
                record.error = Some(e.error.clone());
                let mut res = error_response(&e);
                if e.status == 401 && basic.is_some() {
                    res.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Basic realm=\"test-token-endpoint\""),
                    );
                }
                res
            }
        };
        record.answered_at = Instant::now();
        lock(&self.stats).token_requests.push(record);
        drop(guard);
        res
    }
}

fn error_response(e: &TokenError) -> HttpResponse {
    let mut body = json!({ "error": e.error });
    if let Some(d) = &e.description {
        body["error_description"] = json!(d);
    }
    HttpResponse::build(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.to_string())
}

fn random_token() -> String {
    let n: u128 = rand::rng().random();
    format!("tok-{n:032x}")
}

/// `Basic <base64(urlencode(id):urlencode(secret))>` -> (id, secret),
/// decoded as RFC 6749 section 2.3.1 says.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(rest.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_urldecode(id), form_urldecode(secret)))
}

fn header_str(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn request_headers(req: &HttpRequest) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

// ------------------------------------------------------------ small codecs

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padding optional; `None` if malformed.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Decodes one form-urlencoded value (`+` is a space).
pub fn form_urldecode(value: &str) -> String {
    url::form_urlencoded::parse(
        format!("v={}", value.replace('&', "%26").replace('=', "%3D")).as_bytes(),
    )
    .next()
    .map(|(_, v)| v.into_owned())
    .unwrap_or_default()
}

/// The `Authorization` value of `client_secret_basic` for these credentials.
pub fn client_secret_basic(id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", form_urlencode(id), form_urlencode(secret));
    format!("Basic {}", base64_encode(pair.as_bytes()))
}

/// The `Authorization` value of HTTP Basic (RFC 7617) for `auth.type: basic`.
pub fn http_basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}
