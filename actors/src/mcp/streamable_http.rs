//! Streamable HTTP transport (MCP 2025-03-26, 2025-06-18, 2025-11-25).
//!
//! Every message is a POST to one URL. A request's answer is either one
//! JSON body or an SSE stream carrying, besides our response, server
//! requests (answered by POST) and notifications (ignored here: the push
//! stream is a separate child actor). A POST stream that drops before our
//! response arrived is resumed with GET + `Last-Event-ID` after the
//! server's `retry` delay.
//!
//! Each JSON-RPC request, including its stream and any resumption, runs
//! under one `request_timeout`.

use std::future::Future;
use std::time::Duration;

use awc::http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use awc::http::Method;
use awc::{Client, ClientRequest, ClientResponse};
use serde_json::value::RawValue;
use serde_json::Value;
use url::Url;

use super::call::{Sinks, PROGRESS};
use super::error::redact_url;
use super::http::{
    self, media_type, read_body, send_error, status_error, EventStream, Headers, StreamStop,
};
use super::jsonrpc::{
    self, encode_notification, encode_request, encode_request_raw, id_matches, IdGen, Incoming,
    Reply,
};
use super::relay::{self, CallsInFlight, Handled, Target};
use super::sse::SseParser;
use super::stream_http::{self, StreamRequest, StreamResponse};
use super::{ClientOptions, McpError};

/// The 2025 session header. The transport only echoes it: a session the
/// server assigns in a response is reported to the era layer
/// ([`Answered::session_id`]) and carried by that response's own SSE
/// follow-ups (answers, resumption), which run before the era layer sees
/// the response.
pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
pub(crate) const PROTOCOL_HEADER: &str = "mcp-protocol-version";
const ACCEPT_POST: &str = "application/json, text/event-stream";
/// Reconnection delay when the server sent no `retry`.
const DEFAULT_RETRY: Duration = Duration::from_millis(1000);
/// Resumptions of one request's stream; the request timeout bounds them
/// too, this only stops a server that drops every stream at once.
const MAX_RESUMES: u32 = 16;
/// The requests a discovery round (a discovery, a poll, a refetch) ends
/// with; each closes its connection instead of leaving it in awc's pool.
/// The next round comes long after the pool's keep-alive, and awc closes
/// an idle connection only when the same host is asked again, so it would
/// stay open, a descriptor per upstream, until then, beside the push
/// stream's own (ADR 0027). A listing of several pages costs a connect
/// per page.
const ENDS_A_ROUND: [&str; 3] = ["tools/list", "prompts/list", "resources/list"];
/// DELETE is best effort and must not hold up a shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Headers the era layer puts on one exchange (name, value): session and
/// version headers of 2025, `MCP-Protocol-Version`/`Mcp-Method`/`Mcp-Name`
/// of 2026-07-28. Applied after the static headers, so they win.
pub(crate) type ExtraHeaders = [(&'static str, String)];

/// Headers whose names are known only at run time: the `Mcp-Param-*`
/// headers a tool's schema asks for (`era::params`).
pub(crate) type NamedHeaders = [(String, String)];

/// What one request brought back: the result, and the `Mcp-Session-Id`
/// the response carried (if any).
pub(crate) struct Answered {
    pub(crate) result: Box<RawValue>,
    pub(crate) session_id: Option<String>,
}

/// What a relayed `tools/call` changes about one exchange.
#[derive(Clone, Copy, Default)]
struct Bound<'a> {
    /// How long the response head may take (default `request_timeout`).
    post: Option<Duration>,
    /// Whether the exchange is a relayed call: its stream's server
    /// requests belong to it (ADR 0024).
    call: bool,
    /// Where progress and server requests on the response stream go.
    sinks: Sinks<'a>,
}

/// What one POST brought back.
struct Exchanged {
    reply: Option<Reply>,
    session_id: Option<String>,
}

/// The Streamable HTTP transport: JSON-RPC messages over POST (and the
/// GET stream and DELETE the 2025 era uses). Knows no handshake: whatever
/// headers an exchange needs come from the era layer.
pub(crate) struct StreamableHttp {
    url: Url,
    shown: String,
    opts: ClientOptions,
    headers: Headers,
    client: Client,
    ids: IdGen,
    /// The calls in flight, with their relays (for requests on the push
    /// stream).
    calls: CallsInFlight,
}

impl StreamableHttp {
    /// A transport to `url`; no I/O yet.
    pub(crate) fn new(url: &Url, opts: &ClientOptions) -> Result<Self, McpError> {
        Ok(Self {
            url: url.clone(),
            shown: redact_url(url),
            opts: opts.clone(),
            headers: Headers::new(opts)?,
            client: http::client(opts.connect_timeout),
            ids: IdGen::default(),
            calls: CallsInFlight::default(),
        })
    }

    pub(crate) fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The next JSON-RPC id of this transport (a relayed call needs its id
    /// before it is sent, to cancel it).
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.next_id()
    }

    async fn timed<T>(
        &self,
        method: &str,
        after: Duration,
        fut: impl Future<Output = Result<T, McpError>>,
    ) -> Result<T, McpError> {
        super::within(after, method, &self.shown, fut).await
    }

    /// One JSON-RPC request under `request_timeout`.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
    ) -> Result<Answered, McpError> {
        self.request_within(method, params, extra, self.opts.request_timeout)
            .await
    }

    /// One JSON-RPC request under its own bound (the era probe uses a
    /// shorter one).
    pub(crate) async fn request_within(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
        after: Duration,
    ) -> Result<Answered, McpError> {
        self.request_named_within(method, params, extra, &[], after)
            .await
    }

    /// One JSON-RPC request under `request_timeout`, with `named` headers
    /// on its POST besides `extra` (a 2026-07-28 `tools/call`).
    pub(crate) async fn request_named(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
        named: &NamedHeaders,
    ) -> Result<Answered, McpError> {
        self.request_named_within(method, params, extra, named, self.opts.request_timeout)
            .await
    }

    async fn request_named_within(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
        named: &NamedHeaders,
        after: Duration,
    ) -> Result<Answered, McpError> {
        let id = self.ids.next_id();
        let body = encode_request(id, method, params)?;
        let ex = self
            .timed(
                method,
                after,
                self.exchange_with(body, method, Some(id), extra, named, Bound::default()),
            )
            .await?;
        self.answered(ex, method)
    }

    /// A relayed `tools/call` with id `id`: bounded by `after` (the call's
    /// own deadline, also on the POST itself) instead of
    /// `request_timeout`; progress notifications on its stream go to
    /// `progress`. Dropping the future closes the request's connection,
    /// which is how a 2026-07-28 client cancels.
    pub(crate) async fn call(
        &self,
        id: u64,
        params: &RawValue,
        extra: &ExtraHeaders,
        named: &NamedHeaders,
        after: Duration,
        sinks: Sinks<'_>,
    ) -> Result<Answered, McpError> {
        const METHOD: &str = "tools/call";
        let body = encode_request_raw(id, METHOD, params)?;
        let _in_flight = self.calls.register(id, sinks.relay);
        let bound = Bound {
            post: Some(after),
            call: true,
            sinks,
        };
        let ex = self
            .timed(
                METHOD,
                after,
                self.exchange_with(body, METHOD, Some(id), extra, named, bound),
            )
            .await?;
        self.answered(ex, METHOD)
    }

    fn answered(&self, ex: Exchanged, method: &str) -> Result<Answered, McpError> {
        match ex.reply {
            Some(reply) => Ok(Answered {
                result: reply.map_err(|e| e.into_mcp(method))?,
                session_id: ex.session_id,
            }),
            None => Err(McpError::NoResponse {
                method: method.to_owned(),
                url: self.shown.clone(),
                status: 202,
            }),
        }
    }

    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
    ) -> Result<(), McpError> {
        let body = encode_notification(method, params)?;
        self.timed(
            method,
            self.opts.request_timeout,
            self.exchange(body, method, None, extra),
        )
        .await?;
        Ok(())
    }

    fn with_extra(&self, req: ClientRequest, extra: &ExtraHeaders) -> ClientRequest {
        // Static headers first: ours must win.
        let mut req = self.headers.apply(req);
        for (name, value) in extra {
            req = req.insert_header((*name, value.as_str()));
        }
        req
    }

    fn post(&self, extra: &ExtraHeaders) -> ClientRequest {
        self.post_within(extra, self.opts.request_timeout)
    }

    /// A POST whose response head may take `after`.
    fn post_within(&self, extra: &ExtraHeaders, after: Duration) -> ClientRequest {
        // Static values: no copy of them per request.
        const JSON: HeaderValue = HeaderValue::from_static("application/json");
        const ACCEPTED: HeaderValue = HeaderValue::from_static(ACCEPT_POST);
        let req = self.client.post(self.url.as_str()).timeout(after);
        self.with_extra(req, extra)
            .insert_header((CONTENT_TYPE, JSON))
            .insert_header((ACCEPT, ACCEPTED))
    }

    /// Sends a push stream's request on a connection of its own
    /// ([`stream_http`]), with the headers [`Self::with_extra`] gives a
    /// pooled one, and reads the response head within the request
    /// timeout.
    async fn open_stream(
        &self,
        method: Method,
        what: &str,
        extra: &ExtraHeaders,
        more: Vec<(HeaderName, HeaderValue)>,
        body: Option<Vec<u8>>,
    ) -> Result<StreamResponse, McpError> {
        let invalid = |detail: String| McpError::Http {
            method: what.to_owned(),
            url: self.shown.clone(),
            source: super::error::message(detail),
        };
        let uri = awc::http::Uri::try_from(self.url.as_str())
            .map_err(|e| invalid(format!("the URL is not a valid request target: {e}")))?;
        let mut headers: Vec<(HeaderName, HeaderValue)> = self.headers.pairs().collect();
        for (name, value) in extra {
            let value = HeaderValue::from_str(value).map_err(|_| {
                invalid(format!("the value of `{name}` is not a valid header value"))
            })?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("`{name}` is not a valid header name")))?;
            headers.push((name, value));
        }
        headers.extend(more);
        stream_http::open(StreamRequest {
            method,
            uri,
            headers,
            body: body.map(bytes::Bytes::from),
            connect_timeout: self.opts.connect_timeout,
            head_timeout: self.opts.request_timeout,
        })
        .await
        .map_err(|e| self.send_error(e, what))
    }

    /// The error for a non-success answer to a POST. A JSON body carrying
    /// a 2026-07-28 error (-32020, -32021, -32022) is that JSON-RPC error:
    /// the era layer acts on its code and `data`; anything else is the
    /// status with an excerpt, as before.
    async fn post_failure(&self, resp: &mut impl http::Answer, method: &str) -> McpError {
        let status = resp.status().as_u16();
        if !matches!(status, 400 | 404) || media_type(resp) != "application/json" {
            return status_error(resp, method, &self.shown).await;
        }
        let prefix = http::error_prefix(resp).await;
        if let Some(error) = jsonrpc::modern_error(&prefix) {
            return error.into_mcp(method);
        }
        McpError::HttpStatus {
            method: method.to_owned(),
            url: self.shown.clone(),
            status,
            body: super::error::excerpt(&prefix, http::EXCERPT_CHARS),
        }
    }

    /// One POST. For a request (`expect = Some(id)`) reads the JSON body
    /// or the SSE stream until our response; for a notification or a
    /// response only checks the status.
    async fn exchange(
        &self,
        body: Vec<u8>,
        method: &str,
        expect: Option<u64>,
        extra: &ExtraHeaders,
    ) -> Result<Exchanged, McpError> {
        self.exchange_with(body, method, expect, extra, &[], Bound::default())
            .await
    }

    /// [`Self::exchange`] with `named` headers on the POST (not on the
    /// follow-ups of its stream: they are no `tools/call`), and a relayed
    /// call's `bound`.
    async fn exchange_with(
        &self,
        body: Vec<u8>,
        method: &str,
        expect: Option<u64>,
        extra: &ExtraHeaders,
        named: &NamedHeaders,
        bound: Bound<'_>,
    ) -> Result<Exchanged, McpError> {
        let mut post = self.post_within(extra, bound.post.unwrap_or(self.opts.request_timeout));
        if ENDS_A_ROUND.contains(&method) {
            post = post.force_close();
        }
        for (name, value) in named {
            post = post.insert_header((name.as_str(), value.as_str()));
        }
        let mut resp = post
            .send_body(body)
            .await
            .map_err(|e| self.send_error(e, method))?;
        let session_id = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = resp.status();
        if !status.is_success() {
            return Err(self.post_failure(&mut resp, method).await);
        }
        let Some(id) = expect else {
            return Ok(Exchanged {
                reply: None,
                session_id,
            });
        };
        let no_response = || McpError::NoResponse {
            method: method.to_owned(),
            url: self.shown.clone(),
            status: status.as_u16(),
        };
        if status.as_u16() == 202 || status.as_u16() == 204 {
            return Err(no_response());
        }
        let reply = match media_type(&resp).as_str() {
            "text/event-stream" => {
                // During initialize the session id arrives with this very
                // response; answers and resumptions on the stream need it.
                let mut follow_up = extra.to_vec();
                if let Some(sid) = &session_id {
                    if !extra.iter().any(|(name, _)| *name == SESSION_HEADER) {
                        follow_up.push((SESSION_HEADER, sid.clone()));
                    }
                }
                self.read_stream(resp, method, id, &follow_up, bound)
                    .await?
            }
            "application/json" | "" => {
                let bytes =
                    read_body(&mut resp, self.opts.max_response_bytes, method, &self.shown).await?;
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Err(no_response());
                }
                let context = format!("the response to `{method}` from {}", self.shown);
                jsonrpc::parse_messages(&bytes, &context)?
                    .into_iter()
                    .find_map(|m| match m {
                        Incoming::Response { id: rid, reply } if id_matches(&rid, id) => {
                            Some(reply)
                        }
                        _ => None,
                    })
                    .ok_or_else(|| McpError::NotJsonRpc {
                        context,
                        detail: format!("no response with id {id}"),
                    })?
            }
            other => {
                return Err(McpError::UnexpectedContentType {
                    method: method.to_owned(),
                    url: self.shown.clone(),
                    content_type: other.to_owned(),
                })
            }
        };
        Ok(Exchanged {
            reply: Some(reply),
            session_id,
        })
    }

    fn send_error(&self, e: awc::error::SendRequestError, method: &str) -> McpError {
        send_error(
            e,
            method,
            &self.shown,
            self.opts.request_timeout,
            self.opts.connect_timeout,
        )
    }

    /// Reads a POST's SSE stream until the response with `id`, resuming
    /// with GET + `Last-Event-ID` when the stream drops first.
    async fn read_stream(
        &self,
        resp: ClientResponse,
        method: &str,
        id: u64,
        extra: &ExtraHeaders,
        bound: Bound<'_>,
    ) -> Result<Reply, McpError> {
        let progress = bound.sinks.progress;
        let limit = self.opts.max_response_bytes;
        let mut stream = EventStream::new(resp, SseParser::new(limit));
        let mut resumes = 0u32;
        loop {
            let stop = match stream.next_event().await {
                Ok(ev) => {
                    let context = format!("an SSE event from {}", self.shown);
                    for msg in jsonrpc::parse_messages(ev.data.as_bytes(), &context)? {
                        match msg {
                            Incoming::Response { id: rid, reply } if id_matches(&rid, id) => {
                                return Ok(reply)
                            }
                            Incoming::Response { id: rid, .. } => tracing::debug!(
                                server = %self.opts.server_name,
                                id = %rid,
                                "Ignoring a response to another request"
                            ),
                            Incoming::Request {
                                id: rid,
                                method: m,
                                params,
                            } => {
                                let target = if bound.call {
                                    Target::Call(bound.sinks.relay)
                                } else {
                                    Target::NoCall
                                };
                                match relay::handle(target, &rid, &m, params) {
                                    Some(Handled::Now(body)) => {
                                        self.post_answer(body, &m, extra).await
                                    }
                                    Some(Handled::Later(answer)) => {
                                        self.answer_later(answer, m, extra)
                                    }
                                    None => {}
                                }
                            }
                            Incoming::Notification { method: m, params } => {
                                let relayed = m == PROGRESS
                                    && progress.is_some_and(|p| p.offer(params.as_ref()));
                                if !relayed {
                                    tracing::debug!(
                                        server = %self.opts.server_name,
                                        method = %m,
                                        "Ignoring a notification on a POST stream"
                                    )
                                }
                            }
                        }
                    }
                    continue;
                }
                Err(StreamStop::TooLarge { limit }) => {
                    return Err(McpError::BodyTooLarge {
                        from: self.shown.clone(),
                        limit,
                    })
                }
                Err(StreamStop::End) => "the server closed it".to_owned(),
                Err(StreamStop::Broken(e)) => format!("it broke: {e}"),
            };
            let last_id = stream.last_event_id().to_owned();
            let ended = |detail: String| McpError::StreamEnded {
                method: method.to_owned(),
                url: self.shown.clone(),
                detail,
            };
            if last_id.is_empty() {
                return Err(ended(format!("{stop}; no event id to resume from")));
            }
            if resumes >= MAX_RESUMES {
                return Err(ended(format!(
                    "{stop}; gave up after {MAX_RESUMES} resumptions"
                )));
            }
            resumes += 1;
            let retry = stream.retry();
            let delay = retry
                .unwrap_or(DEFAULT_RETRY)
                .min(self.opts.request_timeout);
            tracing::debug!(
                server = %self.opts.server_name,
                method,
                last_event_id = %last_id,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "POST stream dropped before the response; resuming"
            );
            actix_rt::time::sleep(delay).await;
            let resp = self.resume(&last_id, method, extra).await.map_err(|e| {
                ended(format!(
                    "{stop}; resuming with GET + Last-Event-ID failed: {}",
                    e.chain()
                ))
            })?;
            let retry_ms = retry.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            stream = EventStream::new(resp, SseParser::resuming(limit, &last_id, retry_ms));
        }
    }

    async fn resume(
        &self,
        last_event_id: &str,
        method: &str,
        extra: &ExtraHeaders,
    ) -> Result<ClientResponse, McpError> {
        let req = self
            .client
            .get(self.url.as_str())
            .timeout(self.opts.request_timeout);
        let mut resp = self
            .with_extra(req, extra)
            .insert_header((ACCEPT, "text/event-stream"))
            .insert_header(("last-event-id", last_event_id))
            .send()
            .await
            .map_err(|e| self.send_error(e, method))?;
        if !resp.status().is_success() {
            return Err(status_error(&mut resp, method, &self.shown).await);
        }
        match media_type(&resp).as_str() {
            "text/event-stream" => Ok(resp),
            other => Err(McpError::UnexpectedContentType {
                method: method.to_owned(),
                url: self.shown.clone(),
                content_type: other.to_owned(),
            }),
        }
    }

    /// POSTs the answer to a relayed server request once the client gave
    /// it (or the call ended): a task of its own, which outlives the
    /// call's stream, so the server is answered in every case.
    fn answer_later(
        &self,
        answer: std::pin::Pin<Box<dyn Future<Output = Vec<u8>>>>,
        method: String,
        extra: &ExtraHeaders,
    ) {
        let post = self.post(extra);
        let server = self.opts.server_name.clone();
        let shown = self.shown.clone();
        actix_rt::spawn(async move {
            let body = answer.await;
            match post.send_body(body).await {
                Ok(resp) if resp.status().is_success() => {
                    tracing::debug!(server = %server, method, "Answered a relayed server request")
                }
                Ok(resp) => {
                    tracing::warn!(server = %server, method, url = %shown, status = resp.status().as_u16(), "The answer to a relayed server request was refused")
                }
                Err(e) => {
                    tracing::warn!(server = %server, method, url = %shown, error = %e, "Could not answer a relayed server request")
                }
            }
        });
    }

    /// POSTs `body`, the answer to a server request. Best effort: a
    /// failure is logged, the stream goes on.
    async fn post_answer(&self, body: Vec<u8>, method: &str, extra: &ExtraHeaders) {
        let result = async {
            let resp = self
                .post(extra)
                .send_body(body)
                .await
                .map_err(|e| self.send_error(e, method))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(McpError::HttpStatus {
                    method: method.to_owned(),
                    url: self.shown.clone(),
                    status: resp.status().as_u16(),
                    body: String::new(),
                })
            }
        }
        .await;
        match result {
            Ok(()) => {
                tracing::debug!(server = %self.opts.server_name, method, "Answered a server request")
            }
            Err(e) => tracing::warn!(
                server = %self.opts.server_name,
                method,
                error = %e.chain(),
                "Could not answer a server request"
            ),
        }
    }

    /// Opens the optional GET push stream with the era's headers, resuming
    /// after `last_event_id` when given. The connect and the response head
    /// are bounded by the request timeout; the body is open-ended (the push
    /// stream actor watches it for silence). 405 means the server offers no
    /// push stream.
    pub(crate) async fn open_push(
        &self,
        last_event_id: Option<&str>,
        extra: &ExtraHeaders,
    ) -> Result<super::PushOpened, McpError> {
        const METHOD: &str = "GET push stream";
        let mut more = vec![(ACCEPT, HeaderValue::from_static("text/event-stream"))];
        if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
            let id = HeaderValue::from_str(id).map_err(|_| McpError::Http {
                method: METHOD.to_owned(),
                url: self.shown.clone(),
                source: super::error::message(
                    "the server's last event id is not a valid header value".to_owned(),
                ),
            })?;
            more.push((HeaderName::from_static("last-event-id"), id));
        }
        let mut resp = self
            .open_stream(Method::GET, METHOD, extra, more, None)
            .await?;
        let status = resp.status().as_u16();
        if status == 405 {
            return Ok(super::PushOpened::Unsupported);
        }
        if !resp.status().is_success() {
            return Err(status_error(&mut resp, METHOD, &self.shown).await);
        }
        match media_type(&resp).as_str() {
            "text/event-stream" => {}
            other => {
                return Err(McpError::UnexpectedContentType {
                    method: METHOD.to_owned(),
                    url: self.shown.clone(),
                    content_type: other.to_owned(),
                })
            }
        }
        let parser = match last_event_id {
            Some(id) => SseParser::resuming(self.opts.max_response_bytes, id, None),
            None => SseParser::new(self.opts.max_response_bytes),
        };
        Ok(super::PushOpened::Stream(Box::new(super::PushEvents {
            source: super::Source::Sse(Box::new(EventStream::new(resp, parser))),
            shown: self.shown.clone(),
            session_id: extra
                .iter()
                .find(|(name, _)| *name == SESSION_HEADER)
                .map(|(_, value)| value.clone()),
            subscription: None,
        })))
    }

    /// Opens a 2026-07-28 `subscriptions/listen`: one POST whose SSE
    /// response stays open. The connect and the response head are bounded
    /// by the request timeout; the body is open-ended (the push stream
    /// actor waits for the acknowledgement and watches for silence). 405,
    /// 404 and a JSON-RPC -32601 mean the server has no listen.
    pub(crate) async fn open_listen(
        &self,
        params: &Value,
        extra: &ExtraHeaders,
    ) -> Result<super::PushOpened, McpError> {
        const METHOD: &str = "subscriptions/listen";
        let id = self.ids.next_id();
        let body = encode_request(id, METHOD, Some(params))?;
        let more = vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (ACCEPT, HeaderValue::from_static(ACCEPT_POST)),
        ];
        let mut resp = self
            .open_stream(Method::POST, METHOD, extra, more, Some(body))
            .await?;
        let status = resp.status().as_u16();
        if matches!(status, 404 | 405) {
            return Ok(super::PushOpened::Unsupported);
        }
        if !resp.status().is_success() {
            return match self.post_failure(&mut resp, METHOD).await {
                McpError::JsonRpc {
                    code: jsonrpc::METHOD_NOT_FOUND,
                    ..
                } => Ok(super::PushOpened::Unsupported),
                other => Err(other),
            };
        }
        let ended = |detail: &str| McpError::StreamEnded {
            method: METHOD.to_owned(),
            url: self.shown.clone(),
            detail: detail.to_owned(),
        };
        match media_type(&resp).as_str() {
            "text/event-stream" => {}
            "application/json" => {
                // A server without listen answers in one JSON body.
                let bytes = http::read_stream_body(
                    &mut resp,
                    self.opts.max_response_bytes,
                    METHOD,
                    &self.shown,
                )
                .await?;
                let context = format!("the response to `{METHOD}` from {}", self.shown);
                let reply = jsonrpc::parse_messages(&bytes, &context)?
                    .into_iter()
                    .find_map(|m| match m {
                        Incoming::Response { id: rid, reply } if id_matches(&rid, id) => {
                            Some(reply)
                        }
                        _ => None,
                    });
                return match reply {
                    Some(Err(e)) if e.code == jsonrpc::METHOD_NOT_FOUND => {
                        Ok(super::PushOpened::Unsupported)
                    }
                    Some(Err(e)) => Err(e.into_mcp(METHOD)),
                    Some(Ok(_)) => Err(ended("answered at once in JSON instead of a stream")),
                    None => Err(McpError::NotJsonRpc {
                        context,
                        detail: format!("no response with id {id}"),
                    }),
                };
            }
            other => {
                return Err(McpError::UnexpectedContentType {
                    method: METHOD.to_owned(),
                    url: self.shown.clone(),
                    content_type: other.to_owned(),
                })
            }
        }
        Ok(super::PushOpened::Stream(Box::new(super::PushEvents {
            source: super::Source::Sse(Box::new(EventStream::new(
                resp,
                SseParser::new(self.opts.max_response_bytes),
            ))),
            shown: self.shown.clone(),
            session_id: None,
            subscription: Some(id),
        })))
    }

    /// Answers a server request that arrived on the push stream, by POST.
    /// The 2025 spec calls those unrelated to any request, but servers
    /// send a call's `roots/list` there too (the Python SDK's
    /// `list_roots`, server-everything's `get-roots-list`): it goes to the
    /// client of the one call in flight, if exactly one is (ADR 0024).
    pub(crate) async fn answer_request(
        &self,
        id: &Value,
        method: &str,
        params: Option<Value>,
        extra: &ExtraHeaders,
    ) {
        match self.calls.handle(id, method, params) {
            Some(Handled::Now(body)) => self.post_answer(body, method, extra).await,
            Some(Handled::Later(answer)) => self.answer_later(answer, method.to_owned(), extra),
            None => {}
        }
    }

    /// A DELETE with the era's headers: best effort, short timeout; 405
    /// (the server does not let clients end sessions) is fine.
    pub(crate) async fn delete(&self, extra: &ExtraHeaders) {
        let after = CLOSE_TIMEOUT.min(self.opts.request_timeout);
        let req = self.client.delete(self.url.as_str()).timeout(after);
        let res = tokio::time::timeout(after, self.with_extra(req, extra).send()).await;
        match res {
            Ok(Ok(resp)) => tracing::debug!(
                server = %self.opts.server_name,
                status = resp.status().as_u16(),
                "Session deleted"
            ),
            Ok(Err(e)) => tracing::debug!(
                server = %self.opts.server_name,
                error = %self.send_error(e, "DELETE").chain(),
                "Could not delete the session"
            ),
            Err(_) => {
                tracing::debug!(server = %self.opts.server_name, "Deleting the session timed out")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use discovery_config::TransportKind;

    use super::super::test_server::{self, opts, refused_port, start, Behavior};
    use super::super::{connect, ClientOptions, Session, Target};

    fn target(server: &test_server::TestServer) -> Target {
        Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::StreamableHttp,
        }
    }

    async fn session(b: Behavior) -> (test_server::TestServer, Session) {
        let server = start(b).await;
        let s = connect(&target(&server), opts()).await.unwrap();
        (server, s)
    }

    #[actix_web::test]
    async fn json_session_headers_and_tools() {
        let (server, s) = session(Behavior::default()).await;
        let info = s.info();
        assert_eq!(info.transport, "streamable-http");
        assert_eq!(info.protocol_version, "2025-11-25");
        assert_eq!(info.server_info["name"], "test-server");
        assert_eq!(s.session_id().as_deref(), Some("s1"));
        assert!(s.take_notifications().is_none());
        let tools = s.list_tools().await.unwrap();
        let names: Vec<_> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["tool0_0", "tool0_1"]);
        assert_eq!(
            tools[0].raw.get(),
            r#"{"name":"tool0_0","inputSchema":{"type":"object"},"x-extra":{"kept":[0,0]}}"#
        );

        let seen = server.seen();
        let methods: Vec<_> = seen.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(
            methods,
            ["initialize", "notifications/initialized", "tools/list"]
        );
        // initialize: no session, no version; every later request: both.
        assert_eq!(seen[0].session_id, None);
        assert_eq!(seen[0].protocol_version, None);
        assert_eq!(seen[0].body["params"]["protocolVersion"], "2025-11-25");
        assert_eq!(
            seen[0].body["params"]["clientInfo"]["name"],
            "mcp-discovery"
        );
        for s in &seen[1..] {
            assert_eq!(s.session_id.as_deref(), Some("s1"));
            assert_eq!(s.protocol_version.as_deref(), Some("2025-11-25"));
        }
        for s in &seen {
            assert_eq!(
                s.accept.as_deref(),
                Some("application/json, text/event-stream")
            );
        }
    }

    #[actix_web::test]
    async fn older_protocol_version_is_accepted_and_sent() {
        let (server, s) = session(Behavior {
            protocol_version: "2025-03-26",
            ..Behavior::default()
        })
        .await;
        assert_eq!(s.info().protocol_version, "2025-03-26");
        s.list_tools().await.unwrap();
        assert_eq!(
            server.seen()[2].protocol_version.as_deref(),
            Some("2025-03-26")
        );
    }

    #[actix_web::test]
    async fn unsupported_protocol_version_is_refused() {
        let server = start(Behavior {
            protocol_version: "2099-01-01",
            ..Behavior::default()
        })
        .await;
        let e = connect(&target(&server), opts()).await.err().unwrap();
        assert!(
            matches!(e, McpError::UnsupportedProtocolVersion { ref version } if version == "2099-01-01"),
            "{e:?}"
        );
    }

    #[actix_web::test]
    async fn sse_answers_with_priming_multiline_data_and_ping() {
        let (server, s) = session(Behavior {
            sse: true,
            ping_first: true,
            ..Behavior::default()
        })
        .await;
        let tools = s.list_tools().await.unwrap();
        assert_eq!(tools.len(), 2);
        // The ping that arrived on the stream was answered by POST.
        let pong = server
            .seen()
            .into_iter()
            .find(|s| s.method == "<response>")
            .expect("the client answered the ping");
        assert_eq!(
            pong.body,
            serde_json::json!({"jsonrpc": "2.0", "id": "srv-1", "result": {}})
        );
        assert_eq!(pong.session_id.as_deref(), Some("s1"));
    }

    #[actix_web::test]
    async fn dropped_stream_is_resumed_with_last_event_id() {
        let (server, s) = session(Behavior {
            sse: true,
            drop_stream_on: Some("tools/list"),
            ..Behavior::default()
        })
        .await;
        let tools = s.list_tools().await.unwrap();
        assert_eq!(tools.len(), 2);
        let get = server
            .seen()
            .into_iter()
            .find(|s| s.http_method == "GET")
            .expect("a resuming GET");
        assert_eq!(get.last_event_id.as_deref(), Some("p1"));
        assert_eq!(get.session_id.as_deref(), Some("s1"));
        assert_eq!(get.protocol_version.as_deref(), Some("2025-11-25"));
    }

    #[actix_web::test]
    async fn expired_session_reinitializes_once_and_retries() {
        let (server, s) = session(Behavior {
            expire_once: true,
            ..Behavior::default()
        })
        .await;
        let tools = s.list_tools().await.unwrap();
        assert_eq!(tools.len(), 2);
        assert_eq!(s.session_id().as_deref(), Some("s2"));
        let seen = server.seen();
        let calls: Vec<_> = seen
            .iter()
            .map(|s| format!("{}@{}", s.method, s.session_id.as_deref().unwrap_or("-")))
            .collect();
        assert_eq!(
            calls,
            [
                "initialize@-",
                "notifications/initialized@s1",
                "tools/list@s1",
                "initialize@-",
                "notifications/initialized@s2",
                "tools/list@s2",
            ]
        );
    }

    #[actix_web::test]
    async fn session_expired_again_is_an_error_after_one_retry() {
        let (server, s) = session(Behavior {
            expire_always: true,
            ..Behavior::default()
        })
        .await;
        let e = s.list_tools().await.unwrap_err();
        assert!(
            matches!(e, McpError::SessionExpired { status: 404, .. }),
            "{e:?}"
        );
        let inits = server
            .methods()
            .iter()
            .filter(|m| *m == "initialize")
            .count();
        assert_eq!(inits, 2, "re-initialised exactly once");
    }

    #[actix_web::test]
    async fn pagination_follows_three_pages() {
        let (server, s) = session(Behavior {
            pages: 3,
            ..Behavior::default()
        })
        .await;
        let tools = s.list_tools().await.unwrap();
        let names: Vec<_> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["tool0_0", "tool0_1", "tool1_0", "tool1_1", "tool2_0", "tool2_1"]
        );
        let cursors: Vec<_> = server
            .seen()
            .into_iter()
            .filter(|s| s.method == "tools/list")
            .map(|s| s.body.pointer("/params/cursor").cloned())
            .collect();
        assert_eq!(
            cursors,
            [
                None,
                Some(serde_json::json!("c1")),
                Some(serde_json::json!("c2"))
            ]
        );
    }

    #[actix_web::test]
    async fn cursor_loop_is_an_error() {
        let (_server, s) = session(Behavior {
            loop_cursor: true,
            ..Behavior::default()
        })
        .await;
        let e = s.list_tools().await.unwrap_err();
        assert!(
            matches!(e, McpError::PaginationLoop { ref cursor, .. } if cursor == "again"),
            "{e:?}"
        );
    }

    #[actix_web::test]
    async fn page_cap_is_an_error() {
        let server = start(Behavior {
            pages: 5,
            ..Behavior::default()
        })
        .await;
        let s = connect(
            &target(&server),
            ClientOptions {
                max_pages: 3,
                ..opts()
            },
        )
        .await
        .unwrap();
        let e = s.list_tools().await.unwrap_err();
        assert!(
            matches!(e, McpError::PageCapExceeded { cap: 3, .. }),
            "{e:?}"
        );
        let lists = server
            .methods()
            .iter()
            .filter(|m| *m == "tools/list")
            .count();
        assert_eq!(lists, 3);
    }

    #[actix_web::test]
    async fn oversized_bodies_are_errors_json_and_sse() {
        for sse in [false, true] {
            let server = start(Behavior {
                sse,
                pad_bytes: 64 * 1024,
                ..Behavior::default()
            })
            .await;
            let s = connect(
                &target(&server),
                ClientOptions {
                    max_response_bytes: 16 * 1024,
                    ..opts()
                },
            )
            .await
            .unwrap();
            let e = s.list_tools().await.unwrap_err();
            assert!(
                matches!(e, McpError::BodyTooLarge { limit: 16384, .. }),
                "sse={sse}: {e:?}"
            );
            assert!(
                e.to_string()
                    .contains("16384 bytes (discovery.max_response_bytes)"),
                "{e}"
            );
        }
    }

    #[actix_web::test]
    async fn hanging_server_times_out() {
        for sse in [false, true] {
            let server = start(Behavior {
                sse,
                hang_on: Some("tools/list"),
                ..Behavior::default()
            })
            .await;
            let s = connect(
                &target(&server),
                ClientOptions {
                    request_timeout: Duration::from_millis(300),
                    ..opts()
                },
            )
            .await
            .unwrap();
            let started = std::time::Instant::now();
            let e = s.list_tools().await.unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(3));
            assert!(
                matches!(e, McpError::Timeout { ref method, .. } if method == "tools/list"),
                "{e:?}"
            );
            assert!(e.to_string().contains("within 300 ms"), "{e}");
        }
    }

    #[actix_web::test]
    async fn http_error_carries_status_and_excerpt() {
        let server = start(Behavior {
            post_status: Some(500),
            ..Behavior::default()
        })
        .await;
        let e = connect(&target(&server), opts()).await.err().unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "{} answered `initialize` with HTTP 500: server says no (test)",
                server.url("/mcp")
            )
        );
    }

    #[actix_web::test]
    async fn garbage_body_is_malformed_json() {
        let server = start(Behavior {
            garbage: Some("<html>not json</html>"),
            ..Behavior::default()
        })
        .await;
        let e = connect(&target(&server), opts()).await.err().unwrap();
        assert!(matches!(e, McpError::MalformedJson { .. }), "{e:?}");
        assert!(
            e.chain()
                .contains("Malformed JSON in the response to `initialize`"),
            "{}",
            e.chain()
        );
    }

    #[actix_web::test]
    async fn garbage_sse_event_is_malformed_json() {
        let server = start(Behavior {
            sse: true,
            garbage: Some("this is not json"),
            ..Behavior::default()
        })
        .await;
        let e = connect(&target(&server), opts()).await.err().unwrap();
        assert!(matches!(e, McpError::MalformedJson { .. }), "{e:?}");
        assert!(e.to_string().contains("an SSE event from"), "{e}");
    }

    #[actix_web::test]
    async fn unexpected_content_type_is_named() {
        let server = start(Behavior {
            garbage: Some("<html>login page</html>"),
            garbage_content_type: "text/html; charset=utf-8",
            ..Behavior::default()
        })
        .await;
        let e = connect(&target(&server), opts()).await.err().unwrap();
        assert!(
            matches!(e, McpError::UnexpectedContentType { ref content_type, .. } if content_type == "text/html"),
            "{e:?}"
        );
    }

    #[actix_web::test]
    async fn refused_connection_names_the_url() {
        let url = url::Url::parse(&format!("http://127.0.0.1:{}/mcp", refused_port())).unwrap();
        let t = Target::Http {
            url: url.clone(),
            transport: TransportKind::StreamableHttp,
        };
        let e = connect(&t, opts()).await.err().unwrap();
        assert!(matches!(e, McpError::ConnectionRefused { .. }), "{e:?}");
        assert!(e.to_string().contains(url.as_str()), "{e}");
    }

    #[actix_web::test]
    async fn close_deletes_the_session() {
        let (server, s) = session(Behavior::default()).await;
        s.close().await;
        let del = server
            .seen()
            .into_iter()
            .find(|s| s.http_method == "DELETE")
            .expect("a DELETE");
        assert_eq!(del.session_id.as_deref(), Some("s1"));
        assert_eq!(s.session_id(), None);
    }

    #[actix_web::test]
    async fn json_rpc_errors_are_reported() {
        let (_server, s) = session(Behavior::default()).await;
        let e = s.request("nope/nothing", None).await.unwrap_err();
        assert!(matches!(e, McpError::JsonRpc { code: -32601, .. }), "{e:?}");
    }
}
