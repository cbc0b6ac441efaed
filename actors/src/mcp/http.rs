//! Per-thread awc clients, and the HTTP plumbing both HTTP transports share.
//!
//! awc clients are `!Send` (`Rc` inside) and own a connection pool, so there
//! is one per arbiter thread (and per connect timeout: the connector bakes
//! the timeout in), built lazily on that thread.
//!
//! The pool limit is lifted on purpose (STYLE.md rule 7): `Connector::limit`
//! defaults to 100 connections per client, and every open push stream or
//! legacy SSE stream holds one for its whole life. With more long-lived
//! streams than that on one arbiter, every discovery request there would
//! queue forever behind them. `limit(0)` means "no limit" (awc 3:
//! `if limit == 0 { self.config.limit = u32::MAX as usize }` in
//! `client/connector.rs`, documented "If limit is 0, the connector has no
//! limit").
//!
//! The client-wide timeout is disabled: every request sets its own
//! (`request_timeout`), and long-lived streams must not inherit one.
//!
//! Redirects are never followed (ADR 0011). awc 3 follows up to 10 by
//! default (its `Redirect` middleware is wrapped whenever `max_redirects` is
//! above 0) and, on an origin change, drops only `Authorization`, `Cookie`
//! and `Proxy-Authorization`: a static `X-Api-Key` header, and a 307/308's
//! body (a `client_secret` in a token request's form), would go to whatever
//! host the `Location` names. With `disable_redirects()` a 3xx comes back as
//! the response, and [`status_error`] turns it into
//! [`McpError::Redirected`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::{HeaderName, HeaderValue};
use awc::{Client, ClientRequest, ClientResponse, Connector};
use bytes::Bytes;
use futures_util::StreamExt;

use super::error::{excerpt, message};
use super::sse::{Event, SseParser};
use super::McpError;

/// How much of an error body we read for the message.
const ERROR_BODY_PREFIX: usize = 4 * 1024;

/// Characters of an error body shown in a message.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// A response being read: awc's, or a stream's of its own
/// ([`super::stream_http`]). The error helpers below take either.
pub(crate) trait Answer {
    fn status(&self) -> awc::http::StatusCode;
    fn header(&self, name: HeaderName) -> Option<&HeaderValue>;
    /// The next chunk of the body, `None` at its end.
    fn chunk(&mut self) -> impl std::future::Future<Output = Option<Result<Bytes, PayloadError>>>;
}

impl Answer for ClientResponse {
    fn status(&self) -> awc::http::StatusCode {
        ClientResponse::status(self)
    }

    fn header(&self, name: HeaderName) -> Option<&HeaderValue> {
        self.headers().get(name)
    }

    fn chunk(&mut self) -> impl std::future::Future<Output = Option<Result<Bytes, PayloadError>>> {
        self.next()
    }
}

impl Answer for super::stream_http::StreamResponse {
    fn status(&self) -> awc::http::StatusCode {
        super::stream_http::StreamResponse::status(self)
    }

    fn header(&self, name: HeaderName) -> Option<&HeaderValue> {
        self.headers().get(name)
    }

    fn chunk(&mut self) -> impl std::future::Future<Output = Option<Result<Bytes, PayloadError>>> {
        self.body_mut().next_chunk()
    }
}

/// How long an idle pooled connection is kept for reuse. Below the idle
/// timeout of common servers (5 s: Node, uvicorn, actix-web, Apache), so a
/// request never goes out on a connection the server is closing at that
/// very moment: awc 3 keeps connections 15 s by default, and the load
/// farm's 10k-upstream runs with 5 s polls failed rounds with "connector
/// has been disconnected" from exactly that race. It also frees the
/// buffers (about 16 KiB per connection) of connections that discovery
/// no longer needs: a poll comes minutes later.
const POOL_KEEP_ALIVE: Duration = Duration::from_secs(3);

thread_local! {
    static CLIENTS: RefCell<HashMap<Duration, Client>> = RefCell::new(HashMap::new());
}

/// The awc client of this thread for `connect_timeout`.
pub fn client(connect_timeout: Duration) -> Client {
    CLIENTS.with(|clients| {
        clients
            .borrow_mut()
            .entry(connect_timeout)
            .or_insert_with(|| build_client(connect_timeout))
            .clone()
    })
}

fn build_client(connect_timeout: Duration) -> Client {
    // awc builds its rustls config with the process default provider;
    // make sure there is one even if another crate enables a second
    // provider feature (rustls would then refuse to guess). An Err means
    // one is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let connector = Connector::new()
        .timeout(connect_timeout)
        .handshake_timeout(connect_timeout)
        .conn_keep_alive(POOL_KEEP_ALIVE)
        .limit(0);
    Client::builder()
        .connector(connector)
        .disable_timeout()
        .disable_redirects()
        .add_default_header((
            awc::http::header::USER_AGENT,
            concat!("mcp-discovery/", env!("CARGO_PKG_VERSION")),
        ))
        .finish()
}

/// Extra headers (static headers, auth), validated once per session, plus
/// the OAuth2 bearer slot read at every request. Values are secrets: never
/// logged, never in error messages.
#[derive(Clone, Default)]
pub(crate) struct Headers {
    fixed: Vec<(HeaderName, HeaderValue)>,
    bearer: Option<super::BearerSlot>,
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.fixed.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Headers")
            .field("names", &names)
            .field("bearer", &self.bearer)
            .finish()
    }
}

impl Headers {
    pub(crate) fn new(opts: &super::ClientOptions) -> Result<Self, McpError> {
        let mut headers = Self::parse(&opts.headers)?;
        headers.bearer = opts.bearer.clone();
        Ok(headers)
    }

    pub(crate) fn parse(list: &[(String, String)]) -> Result<Self, McpError> {
        let mut out = Vec::with_capacity(list.len());
        for (name, value) in list {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                McpError::InvalidTarget(format!("`{name}` is not a valid HTTP header name"))
            })?;
            let v = HeaderValue::from_str(value).map_err(|_| {
                McpError::InvalidTarget(format!(
                    "the value of header `{name}` contains characters not allowed in HTTP headers"
                ))
            })?;
            out.push((n, v));
        }
        Ok(Self {
            fixed: out,
            bearer: None,
        })
    }

    pub(crate) fn apply(&self, mut req: ClientRequest) -> ClientRequest {
        for (n, v) in self.pairs() {
            req = req.insert_header((n, v));
        }
        req
    }

    /// Every header [`Self::apply`] sets, in the same order (the bearer
    /// last, so it wins over a static `Authorization`), for a request
    /// built by hand ([`super::stream_http`]).
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        let token = self.bearer.as_ref().and_then(super::BearerSlot::get);
        let bearer = match token.map(|t| HeaderValue::from_str(&format!("Bearer {t}"))) {
            Some(Ok(mut value)) => {
                value.set_sensitive(true);
                Some((awc::http::header::AUTHORIZATION, value))
            }
            _ => None,
        };
        self.fixed.iter().cloned().chain(bearer)
    }
}

/// Maps an awc send error to a precise `McpError`.
pub(crate) fn send_error(
    err: SendRequestError,
    method: &str,
    url: &str,
    request_timeout: Duration,
    connect_timeout: Duration,
) -> McpError {
    match err {
        SendRequestError::Connect(ConnectError::Io(e))
            if e.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            McpError::ConnectionRefused {
                url: url.to_owned(),
                source: e,
            }
        }
        SendRequestError::Connect(ConnectError::Io(e))
            if e.kind() == std::io::ErrorKind::TimedOut =>
        {
            McpError::ConnectTimeout {
                url: url.to_owned(),
                after: connect_timeout,
            }
        }
        SendRequestError::Connect(ConnectError::Timeout) => McpError::ConnectTimeout {
            url: url.to_owned(),
            after: connect_timeout,
        },
        SendRequestError::Connect(ConnectError::Io(e)) => McpError::Connect {
            url: url.to_owned(),
            source: Box::new(e),
        },
        SendRequestError::Connect(other) => McpError::Connect {
            url: url.to_owned(),
            source: message(other.to_string()),
        },
        SendRequestError::Timeout => McpError::Timeout {
            method: method.to_owned(),
            target: url.to_owned(),
            after: request_timeout,
        },
        SendRequestError::Send(e) => McpError::Http {
            method: method.to_owned(),
            url: url.to_owned(),
            source: Box::new(e),
        },
        other => McpError::Http {
            method: method.to_owned(),
            url: url.to_owned(),
            source: message(other.to_string()),
        },
    }
}

fn payload_error(err: PayloadError, method: &str, url: &str, limit: usize) -> McpError {
    match err {
        PayloadError::Overflow => McpError::BodyTooLarge {
            from: url.to_owned(),
            limit,
        },
        PayloadError::Io(e) => McpError::Http {
            method: method.to_owned(),
            url: url.to_owned(),
            source: Box::new(e),
        },
        other => McpError::Http {
            method: method.to_owned(),
            url: url.to_owned(),
            source: message(other.to_string()),
        },
    }
}

/// Reads a whole body, refusing more than `limit` bytes (awc checks
/// Content-Length up front and counts the bytes of chunked bodies).
pub(crate) async fn read_body(
    resp: &mut ClientResponse,
    limit: usize,
    method: &str,
    url: &str,
) -> Result<Bytes, McpError> {
    resp.body()
        .limit(limit)
        .await
        .map_err(|e| payload_error(e, method, url, limit))
}

/// [`read_body`] for a stream's response (a listen answered in one JSON
/// body): the same limit, counted as the chunks come.
pub(crate) async fn read_stream_body(
    resp: &mut super::stream_http::StreamResponse,
    limit: usize,
    method: &str,
    url: &str,
) -> Result<Bytes, McpError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await {
        let chunk = chunk.map_err(|e| payload_error(e, method, url, limit))?;
        if body.len() + chunk.len() > limit {
            return Err(payload_error(PayloadError::Overflow, method, url, limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A single-line excerpt of an error body: reads at most a few KiB, so an
/// endless or huge error page costs nothing.
/// The error for a non-success response. 401 and 403 keep the server's
/// `WWW-Authenticate` challenge (token handling and `insufficient_scope`
/// need it); others carry a body excerpt.
pub(crate) async fn status_error(resp: &mut impl Answer, method: &str, url: &str) -> McpError {
    let status = resp.status().as_u16();
    if resp.status().is_redirection() {
        return McpError::Redirected {
            method: method.to_owned(),
            url: url.to_owned(),
            status,
            location: redirect_location(resp, url),
        };
    }
    if status == 401 || status == 403 {
        let challenge = resp
            .header(awc::http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(|v| excerpt(v.as_bytes(), EXCERPT_CHARS));
        return McpError::Unauthorized {
            method: method.to_owned(),
            url: url.to_owned(),
            status,
            challenge,
        };
    }
    McpError::HttpStatus {
        method: method.to_owned(),
        url: url.to_owned(),
        status,
        body: error_excerpt(resp).await,
    }
}

/// Where a 3xx points, safe to show: resolved against the request URL and
/// redacted (no user info, no query string); `(none)` when absent.
pub(crate) fn redirect_location(resp: &impl Answer, request_url: &str) -> String {
    let Some(location) = resp.header(awc::http::header::LOCATION) else {
        return "(none)".to_owned();
    };
    let text = String::from_utf8_lossy(location.as_bytes());
    let resolved = url::Url::parse(request_url)
        .and_then(|base| base.join(text.trim()))
        .or_else(|_| url::Url::parse(text.trim()));
    match resolved {
        Ok(target) => super::error::redact_url(&target),
        Err(_) => "(an unparsable Location)".to_owned(),
    }
}

pub(crate) async fn error_excerpt(resp: &mut impl Answer) -> String {
    excerpt(&error_prefix(resp).await, EXCERPT_CHARS)
}

/// The first few KiB of an error body (the rest is never read).
pub(crate) async fn error_prefix(resp: &mut impl Answer) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < ERROR_BODY_PREFIX {
        match resp.chunk().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(_)) | None => break,
        }
    }
    buf.truncate(ERROR_BODY_PREFIX);
    buf
}

/// The media type of a response, lower-cased, without parameters; empty
/// when absent.
pub(crate) fn media_type(resp: &impl Answer) -> String {
    resp.header(awc::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Why an event stream stopped.
#[derive(Debug)]
pub(crate) enum StreamStop {
    /// Clean end of the body.
    End,
    /// The connection broke mid-body.
    Broken(String),
    /// An event over the size limit.
    TooLarge { limit: usize },
}

/// Where an [`EventStream`]'s bytes come from.
pub(crate) enum SseBody {
    /// A POST's answer (or its resumption), through the pooled client.
    Pooled(ClientResponse),
    /// A push stream on a connection of its own.
    Own(super::stream_http::StreamBody),
}

impl From<ClientResponse> for SseBody {
    fn from(resp: ClientResponse) -> Self {
        Self::Pooled(resp)
    }
}

impl From<super::stream_http::StreamResponse> for SseBody {
    fn from(resp: super::stream_http::StreamResponse) -> Self {
        Self::Own(resp.into_body())
    }
}

impl SseBody {
    async fn next(&mut self) -> Option<Result<Bytes, PayloadError>> {
        match self {
            Self::Pooled(resp) => resp.next().await,
            Self::Own(body) => body.next_chunk().await,
        }
    }
}

/// An SSE body read event by event; memory bounded by the per-event limit.
pub(crate) struct EventStream {
    resp: SseBody,
    parser: SseParser,
    ready: VecDeque<Event>,
    done: bool,
    /// Bytes received so far, shared with whoever watches the stream for
    /// silence (keep-alive comments count: they prove the peer is alive).
    received: Rc<Cell<u64>>,
}

impl EventStream {
    pub(crate) fn new(resp: impl Into<SseBody>, parser: SseParser) -> Self {
        Self {
            resp: resp.into(),
            parser,
            ready: VecDeque::new(),
            done: false,
            received: Rc::new(Cell::new(0)),
        }
    }

    /// A counter of the bytes received, for an idle watchdog.
    pub(crate) fn received(&self) -> Rc<Cell<u64>> {
        Rc::clone(&self.received)
    }

    pub(crate) async fn next_event(&mut self) -> Result<Event, StreamStop> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(ev);
            }
            if self.done {
                return Err(StreamStop::End);
            }
            match self.resp.next().await {
                Some(Ok(chunk)) => {
                    let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                    self.received.set(self.received.get().saturating_add(n));
                    if let Err(e) = self.parser.feed(&chunk, &mut self.ready) {
                        self.done = true;
                        return Err(StreamStop::TooLarge { limit: e.limit });
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    self.parser.finish();
                    return Err(StreamStop::Broken(e.to_string()));
                }
                None => {
                    self.done = true;
                    self.parser.finish();
                    return Err(StreamStop::End);
                }
            }
        }
    }

    pub(crate) fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    pub(crate) fn retry(&self) -> Option<Duration> {
        self.parser.retry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_validated_without_echoing_values() {
        let h = Headers::parse(&[("X-Api-Key".into(), "s3cret".into())]).unwrap();
        assert_eq!(h.fixed.len(), 1);
        let e = Headers::parse(&[("bad name".into(), "v".into())]).unwrap_err();
        assert!(e.to_string().contains("`bad name`"));
        let e = Headers::parse(&[("X-Key".into(), "line\nbreak-s3cret".into())]).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[actix_web::test]
    async fn one_client_per_thread_and_connect_timeout() {
        let _a = client(Duration::from_secs(1));
        let _b = client(Duration::from_secs(1));
        let _c = client(Duration::from_secs(2));
        CLIENTS.with(|c| {
            let c = c.borrow();
            assert!(c.contains_key(&Duration::from_secs(1)));
            assert!(c.contains_key(&Duration::from_secs(2)));
            assert_eq!(c.len(), 2);
        });
        // Another thread builds its own.
        std::thread::spawn(|| CLIENTS.with(|c| assert!(c.borrow().is_empty())))
            .join()
            .unwrap();
    }

    /// awc follows redirects by default; ours must not: the 307 comes back
    /// as the response (and reads as `Redirected`, with the `Location`
    /// redacted), and the target is never asked.
    #[actix_web::test]
    async fn redirects_are_not_followed() {
        use actix_web::{web, App, HttpResponse, HttpServer};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&hits);
        let server = HttpServer::new(move || {
            let seen = Arc::clone(&seen);
            App::new()
                .route(
                    "/from",
                    web::post().to(|| async {
                        HttpResponse::TemporaryRedirect()
                            .insert_header(("Location", "/to?api_key=s3cret"))
                            .finish()
                    }),
                )
                .route(
                    "/to",
                    web::post().to(move || {
                        seen.fetch_add(1, Ordering::SeqCst);
                        async { HttpResponse::Ok().finish() }
                    }),
                )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        actix_rt::spawn(server.run());
        let url = format!("http://{addr}/from");
        let mut resp = client(Duration::from_secs(5))
            .post(&url)
            .insert_header(("X-Api-Key", "k"))
            .send_body("client_secret=x")
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 307);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        let e = status_error(&mut resp, "initialize", &url).await;
        assert_eq!(e.code(), "redirect_refused");
        let text = e.to_string();
        assert!(text.contains(&format!("http://{addr}/to?…")), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(e.http_status(), None, "no transport fallback on a 3xx");
    }

    /// More concurrent long-lived streams than awc's default pool limit (100)
    /// on one client, and a plain request still goes through at once.
    #[actix_web::test]
    async fn pool_limit_is_lifted() {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let server = HttpServer::new(|| {
            App::new()
                .route(
                    "/stream",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .content_type("text/event-stream")
                            .streaming(
                                futures_util::stream::pending::<Result<Bytes, std::io::Error>>(),
                            )
                    }),
                )
                .route(
                    "/ping",
                    web::get().to(|| async { HttpResponse::Ok().body("pong") }),
                )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let handle = server.run();
        actix_rt::spawn(handle);
        let c = client(Duration::from_secs(5));
        let mut streams = Vec::new();
        for _ in 0..110 {
            let resp = c
                .get(format!("http://{addr}/stream"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .unwrap();
            streams.push(resp);
        }
        // With awc's default limit this would wait for a free connection
        // forever.
        let ping = c
            .get(format!("http://{addr}/ping"))
            .timeout(Duration::from_secs(5))
            .send();
        let mut resp = tokio::time::timeout(Duration::from_secs(5), ping)
            .await
            .expect("a connection despite 110 open streams")
            .unwrap();
        assert_eq!(resp.body().await.unwrap(), Bytes::from_static(b"pong"));
        assert_eq!(streams.len(), 110);
    }
}
