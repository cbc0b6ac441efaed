//! Legacy HTTP+SSE transport (MCP 2024-11-05).
//!
//! GET the URL for an event stream; its first `endpoint` event names the
//! URI to POST messages to (resolved against the stream URL, same origin
//! only: our credentials go nowhere else). Responses come back over the
//! stream; a reader task on the current arbiter routes them to waiters by
//! id. When the stream ends, every pending request fails and later ones
//! fail fast.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use awc::http::header::{ACCEPT, CONTENT_TYPE};
use awc::Client;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use super::call::{ProgressRoutes, Sinks};
use super::error::redact_url;
use super::http::{
    self, media_type, read_body, send_error, status_error, EventStream, Headers, StreamStop,
};
use super::jsonrpc::{
    self, encode_notification, encode_request, encode_request_raw, Closed, Failure, IdGen,
    Incoming, Pending,
};
use super::relay::{CallsInFlight, Handled};
use super::sse::SseParser;
use super::{ClientOptions, McpError, Notification};

/// Everything needed to POST a message to the endpoint (shared with the
/// reader task, which answers server pings).
#[derive(Clone)]
struct Poster {
    client: Client,
    endpoint: Url,
    shown: String,
    headers: Headers,
    opts: ClientOptions,
}

impl Poster {
    async fn post(&self, body: Vec<u8>, method: &str) -> Result<(), McpError> {
        let req = self
            .client
            .post(self.endpoint.as_str())
            .timeout(self.opts.request_timeout);
        let mut resp = self
            .headers
            .apply(req)
            .insert_header((CONTENT_TYPE, "application/json"))
            .send_body(body)
            .await
            .map_err(|e| {
                send_error(
                    e,
                    method,
                    &self.shown,
                    self.opts.request_timeout,
                    self.opts.connect_timeout,
                )
            })?;
        if !resp.status().is_success() {
            return Err(status_error(&mut resp, method, &self.shown).await);
        }
        // Read the short "Accepted" body so the connection can be reused.
        let _ = read_body(&mut resp, 4096, method, &self.shown).await;
        Ok(())
    }
}

pub(crate) struct LegacySse {
    shown: String,
    opts: ClientOptions,
    poster: Poster,
    ids: IdGen,
    pending: Rc<Pending>,
    /// Bytes received on the event stream (idle watchdog).
    received: Rc<Cell<u64>>,
    reader: RefCell<Option<JoinHandle<()>>>,
    notifications: RefCell<Option<UnboundedReceiver<Notification>>>,
    /// Calls in flight that asked for progress (the reader routes it).
    progress: ProgressRoutes,
    /// Every call in flight, with its relay (the reader hands it the
    /// server's requests when it is the only one).
    calls: CallsInFlight,
}

/// Resolves the `endpoint` event's data against the stream URL.
fn resolve_endpoint(sse_url: &Url, data: &str) -> Result<Url, String> {
    let endpoint = sse_url
        .join(data.trim())
        .map_err(|e| format!("`{}` is not a URI reference ({e})", data.trim()))?;
    if endpoint.origin() != sse_url.origin() {
        return Err(format!(
            "it points to another origin ({}); refusing to send requests and credentials there",
            redact_url(&endpoint)
        ));
    }
    Ok(endpoint)
}

struct Reader {
    stream: EventStream,
    sse_url: Url,
    shown: String,
    server: String,
    pending: Rc<Pending>,
    endpoint_tx: Option<oneshot::Sender<Result<Url, String>>>,
    notifications: UnboundedSender<Notification>,
    /// Filled once the endpoint is known (to answer server requests).
    poster: Option<Poster>,
    poster_template: Poster,
    progress: ProgressRoutes,
    calls: CallsInFlight,
}

impl Reader {
    async fn run(mut self) {
        let reason = loop {
            match self.stream.next_event().await {
                Ok(ev) => match ev.event.as_str() {
                    "endpoint" => self.on_endpoint(&ev.data),
                    "message" => self.on_message(&ev.data),
                    other => {
                        tracing::debug!(server = %self.server, event = other, "Ignoring an SSE event")
                    }
                },
                Err(StreamStop::End) => break "the server ended the event stream".to_owned(),
                Err(StreamStop::Broken(e)) => break format!("the event stream broke ({e})"),
                Err(StreamStop::TooLarge { limit }) => {
                    self.pending.fail_all(&Failure::TooLarge { limit });
                    break format!(
                        "an event exceeded the limit of {limit} bytes (discovery.max_response_bytes)"
                    );
                }
            }
        };
        tracing::info!(server = %self.server, url = %self.shown, reason = %reason, "Legacy SSE stream closed");
        self.pending.close(Closed::Ended(reason));
    }

    fn on_endpoint(&mut self, data: &str) {
        if self.poster.is_some() {
            tracing::debug!(server = %self.server, "Ignoring a second `endpoint` event");
            return;
        }
        let res = resolve_endpoint(&self.sse_url, data);
        if let Ok(url) = &res {
            let mut p = self.poster_template.clone();
            p.endpoint = url.clone();
            p.shown = redact_url(url);
            self.poster = Some(p);
        }
        if let Some(tx) = self.endpoint_tx.take() {
            let _ = tx.send(res);
        }
    }

    fn on_message(&mut self, data: &str) {
        let context = format!("an SSE message from {}", self.shown);
        let msgs = match jsonrpc::parse_messages(data.as_bytes(), &context) {
            Ok(m) => m,
            Err(e) => {
                // Most likely the answer to what is pending: fail it now
                // with the reason rather than let it time out.
                tracing::warn!(server = %self.server, error = %e.chain(), "Unreadable SSE message");
                self.pending.fail_all(&Failure::Malformed(e.chain()));
                return;
            }
        };
        for msg in msgs {
            match msg {
                Incoming::Response { id, reply } => {
                    if !self.pending.deliver(&id, reply) {
                        tracing::debug!(server = %self.server, id = %id, "Response nobody waits for (late?)");
                    }
                }
                Incoming::Request { id, method, params } => self.answer(id, method, params),
                Incoming::Notification { method, params } => {
                    if !self.progress.deliver(&method, params.as_ref()) {
                        forward_notification(&self.notifications, &self.server, method, params)
                    }
                }
            }
        }
    }

    /// Answers a server request, or relays it to the client of the one
    /// call in flight (`super::relay`) and answers with its answer.
    fn answer(&self, id: Value, method: String, params: Option<Value>) {
        let Some(poster) = self.poster.clone() else {
            return;
        };
        let server = self.server.clone();
        let handled = self.calls.handle(&id, &method, params);
        actix_rt::spawn(async move {
            let body = match handled {
                Some(Handled::Now(body)) => body,
                Some(Handled::Later(answer)) => answer.await,
                None => return,
            };
            let res = poster.post(body, &method).await;
            if let Err(e) = res {
                tracing::warn!(server = %server, method = %method, error = %e.chain(), "Could not answer a server request");
            }
        });
    }
}

/// `*/list_changed` notifications go to the session's channel; the rest
/// (logging, progress) are only traced, so an unread channel cannot grow
/// with chatter.
pub(crate) fn forward_notification(
    tx: &UnboundedSender<Notification>,
    server: &str,
    method: String,
    params: Option<Value>,
) {
    if method.ends_with("/list_changed") {
        let _ = tx.send(Notification { method, params });
    } else {
        tracing::debug!(server = %server, method = %method, "Ignoring a notification");
    }
}

impl LegacySse {
    /// Opens the GET stream and waits for the `endpoint` event; the era
    /// layer does the handshake.
    pub(crate) async fn open(url: &Url, opts: &ClientOptions) -> Result<Self, McpError> {
        let shown = redact_url(url);
        let headers = Headers::new(opts)?;
        let client = http::client(opts.connect_timeout);
        let method = "GET";
        let req = client.get(url.as_str()).timeout(opts.request_timeout);
        let mut resp = headers
            .apply(req)
            .insert_header((ACCEPT, "text/event-stream"))
            .send()
            .await
            .map_err(|e| {
                send_error(
                    e,
                    method,
                    &shown,
                    opts.request_timeout,
                    opts.connect_timeout,
                )
            })?;
        if !resp.status().is_success() {
            return Err(status_error(&mut resp, method, &shown).await);
        }
        let ct = media_type(&resp);
        if ct != "text/event-stream" {
            return Err(McpError::UnexpectedContentType {
                method: method.into(),
                url: shown,
                content_type: ct,
            });
        }

        let pending = Rc::new(Pending::default());
        let (endpoint_tx, endpoint_rx) = oneshot::channel();
        let (notif_tx, notif_rx) = unbounded_channel();
        let template = Poster {
            client,
            endpoint: url.clone(),
            shown: shown.clone(),
            headers,
            opts: opts.clone(),
        };
        let stream = EventStream::new(resp, SseParser::new(opts.max_response_bytes));
        let received = stream.received();
        let progress = ProgressRoutes::default();
        let calls = CallsInFlight::default();
        let reader = Reader {
            stream,
            sse_url: url.clone(),
            shown: shown.clone(),
            server: opts.server_name.clone(),
            pending: Rc::clone(&pending),
            endpoint_tx: Some(endpoint_tx),
            notifications: notif_tx,
            poster: None,
            poster_template: template.clone(),
            progress: progress.clone(),
            calls: calls.clone(),
        };
        let handle = actix_rt::spawn(reader.run());

        let endpoint = match tokio::time::timeout(opts.connect_timeout, endpoint_rx).await {
            Ok(Ok(Ok(u))) => u,
            Ok(Ok(Err(detail))) => {
                handle.abort();
                return Err(McpError::InvalidEndpoint { url: shown, detail });
            }
            Ok(Err(_)) => {
                let reason = match pending.closed() {
                    Some(Closed::Ended(r) | Closed::ChildExited(r)) => r,
                    None => "the reader stopped".into(),
                };
                return Err(McpError::TransportClosed {
                    target: shown,
                    reason: format!("{reason} before the `endpoint` event"),
                });
            }
            Err(_) => {
                handle.abort();
                return Err(McpError::NoEndpointEvent {
                    url: shown,
                    after: opts.connect_timeout,
                });
            }
        };
        let mut poster = template;
        poster.shown = redact_url(&endpoint);
        poster.endpoint = endpoint;

        let this = Self {
            shown,
            opts: opts.clone(),
            poster,
            ids: IdGen::default(),
            pending,
            received,
            reader: RefCell::new(Some(handle)),
            notifications: RefCell::new(Some(notif_rx)),
            progress,
            calls,
        };
        Ok(this)
    }

    pub(crate) fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The next JSON-RPC id of this session (a relayed call needs its id
    /// before it is sent, to cancel it).
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.next_id()
    }

    pub(crate) fn take_notifications(&self) -> Option<UnboundedReceiver<Notification>> {
        self.notifications.borrow_mut().take()
    }

    /// Why the transport closed, once it has (None while it is open).
    pub(crate) fn closed(&self) -> Option<McpError> {
        self.pending.closed().map(|c| self.closed_error(c))
    }

    fn closed_error(&self, c: Closed) -> McpError {
        match c {
            Closed::Ended(reason) | Closed::ChildExited(reason) => McpError::TransportClosed {
                target: self.shown.clone(),
                reason,
            },
        }
    }

    async fn timed<T>(
        &self,
        method: &str,
        fut: impl Future<Output = Result<T, McpError>>,
    ) -> Result<T, McpError> {
        super::within(self.opts.request_timeout, method, &self.shown, fut).await
    }

    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Box<RawValue>, McpError> {
        let id = self.ids.next_id();
        let body = encode_request(id, method, params)?;
        let received_before = self.received.get();
        let result = self
            .exchange(id, body, method, self.opts.request_timeout)
            .await;
        // Idle watchdog: the stream has no timeout of its own (it lives as
        // long as the session). A request that timed out while not one
        // byte, not even a keep-alive comment, arrived on the stream means
        // a dead or wedged connection: close the transport so later
        // requests fail fast and the owner reconnects.
        if matches!(result, Err(McpError::Timeout { .. })) && self.received.get() == received_before
        {
            tracing::info!(
                server = %self.opts.server_name,
                url = %self.shown,
                "Legacy SSE stream silent for a whole request timeout; closing it"
            );
            self.shut(format!(
                "the event stream stayed silent while `{method}` timed out"
            ));
        }
        result
    }

    /// A relayed `tools/call` with id `id`, bounded by `after` (the call's
    /// own deadline); its progress notifications go to `progress` while it
    /// is in flight. No idle watchdog: a tool may take its time without a
    /// byte on the stream, which says nothing about the stream.
    pub(crate) async fn call(
        &self,
        id: u64,
        params: &RawValue,
        after: Duration,
        sinks: Sinks<'_>,
    ) -> Result<Box<RawValue>, McpError> {
        let _route = sinks.progress.map(|sink| self.progress.register(sink));
        let _in_flight = self.calls.register(id, sinks.relay);
        let body = encode_request_raw(id, "tools/call", params)?;
        self.exchange(id, body, "tools/call", after).await
    }

    /// POSTs request `body` (id `id`) and waits for its response on the
    /// stream, within `after`.
    async fn exchange(
        &self,
        id: u64,
        body: Vec<u8>,
        method: &str,
        after: Duration,
    ) -> Result<Box<RawValue>, McpError> {
        let mut waiter = self
            .pending
            .register(id)
            .map_err(|c| self.closed_error(c))?;
        super::within(after, method, &self.shown, async {
            self.poster.post(body, method).await?;
            match waiter.wait().await {
                Ok(Ok(reply)) => reply.map_err(|e| e.into_mcp(method)),
                Ok(Err(Failure::TooLarge { limit })) => Err(McpError::BodyTooLarge {
                    from: self.shown.clone(),
                    limit,
                }),
                Ok(Err(Failure::Malformed(detail))) => Err(McpError::NotJsonRpc {
                    context: format!("the event stream from {}", self.shown),
                    detail,
                }),
                Err(c) => Err(self.closed_error(c)),
            }
        })
        .await
    }

    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<&Value>,
    ) -> Result<(), McpError> {
        if let Some(c) = self.pending.closed() {
            return Err(self.closed_error(c));
        }
        let body = encode_notification(method, params)?;
        self.timed(method, self.poster.post(body, method)).await
    }

    /// Stops the reader (which drops the GET stream) and fails what is
    /// pending.
    pub(crate) async fn close(&self) {
        self.shut("the session was closed".into());
    }

    fn shut(&self, reason: String) {
        self.pending.close(Closed::Ended(reason));
        if let Some(h) = self.reader.borrow_mut().take() {
            h.abort();
        }
    }
}

impl Drop for LegacySse {
    fn drop(&mut self) {
        if let Some(h) = self.reader.get_mut().take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_resolution() {
        let base = Url::parse("http://127.0.0.1:8000/sse").unwrap();
        assert_eq!(
            resolve_endpoint(&base, "/messages/?session_id=abc")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8000/messages/?session_id=abc"
        );
        assert_eq!(
            resolve_endpoint(&base, "messages?x=1").unwrap().as_str(),
            "http://127.0.0.1:8000/messages?x=1"
        );
        assert_eq!(
            resolve_endpoint(&base, "http://127.0.0.1:8000/m")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8000/m"
        );
        let e = resolve_endpoint(&base, "http://evil.example/m").unwrap_err();
        assert!(e.contains("another origin"), "{e}");
    }

    use discovery_config::TransportKind;

    use super::super::test_server::{opts, start, Behavior};
    use super::super::{connect, Target};

    fn legacy_behavior() -> Behavior {
        Behavior {
            protocol_version: "2024-11-05",
            sessions: false,
            ..Behavior::default()
        }
    }

    #[actix_web::test]
    async fn endpoint_flow_with_responses_over_the_stream() {
        let server = start(Behavior {
            ping_first: true,
            pages: 2,
            ..legacy_behavior()
        })
        .await;
        let t = Target::Http {
            url: server.url("/sse"),
            transport: TransportKind::Sse,
        };
        let s = connect(&t, opts()).await.unwrap();
        let info = s.info();
        assert_eq!(info.transport, "sse");
        assert_eq!(info.protocol_version, "2024-11-05");
        assert_eq!(s.session_id(), None);
        let tools = s.list_tools().await.unwrap();
        assert_eq!(tools.len(), 4);
        let seen = server.seen();
        let calls: Vec<_> = seen
            .iter()
            .map(|s| format!("{} {}", s.http_method, s.method))
            .collect();
        assert_eq!(
            calls[..4],
            [
                "GET <GET>",
                "POST initialize",
                "POST notifications/initialized",
                "POST tools/list"
            ]
        );
        // The ping that came over the stream was answered by POST to the
        // endpoint.
        let pong = seen
            .iter()
            .find(|s| s.method == "<response>")
            .expect("ping answered");
        assert_eq!(
            pong.body,
            serde_json::json!({"jsonrpc": "2.0", "id": "srv-1", "result": {}})
        );
        assert_eq!(seen[0].accept.as_deref(), Some("text/event-stream"));
        s.close().await;
        let e = s.request("ping", None).await.unwrap_err();
        assert!(matches!(e, McpError::TransportClosed { .. }), "{e:?}");
    }

    #[actix_web::test]
    async fn stream_end_fails_pending_and_later_requests_fast() {
        let server = start(Behavior {
            legacy_end_on: Some("tools/list"),
            ..legacy_behavior()
        })
        .await;
        let t = Target::Http {
            url: server.url("/sse"),
            transport: TransportKind::Sse,
        };
        let s = connect(&t, opts()).await.unwrap();
        let e = s.list_tools().await.unwrap_err();
        assert!(
            matches!(e, McpError::TransportClosed { ref reason, .. } if reason.contains("ended")),
            "{e:?}"
        );
        let started = std::time::Instant::now();
        let e = s.request("ping", None).await.unwrap_err();
        assert!(matches!(e, McpError::TransportClosed { .. }), "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[actix_web::test]
    async fn list_changed_notifications_reach_the_channel() {
        let server = start(Behavior {
            legacy_list_changed: true,
            ..legacy_behavior()
        })
        .await;
        let t = Target::Http {
            url: server.url("/sse"),
            transport: TransportKind::Sse,
        };
        let s = connect(&t, opts()).await.unwrap();
        let mut rx = s.take_notifications().expect("a channel");
        assert!(s.take_notifications().is_none(), "only once");
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n.method, "notifications/tools/list_changed");
    }

    #[actix_web::test]
    async fn non_sse_url_is_refused_with_its_status() {
        // /mcp answers GET without Last-Event-ID with 405: not an SSE
        // endpoint at all.
        let server = start(legacy_behavior()).await;
        let t = Target::Http {
            url: server.url("/mcp"),
            transport: TransportKind::Sse,
        };
        let e = connect(&t, opts()).await.err().unwrap();
        assert!(
            matches!(e, McpError::HttpStatus { status: 405, .. }),
            "{e:?}"
        );
    }

    #[actix_web::test]
    async fn silent_stream_is_closed_after_a_timeout() {
        let server = start(Behavior {
            hang_on: Some("tools/list"),
            ..legacy_behavior()
        })
        .await;
        let t = Target::Http {
            url: server.url("/sse"),
            transport: TransportKind::Sse,
        };
        let s = connect(
            &t,
            super::super::ClientOptions {
                request_timeout: std::time::Duration::from_millis(300),
                ..opts()
            },
        )
        .await
        .unwrap();
        let e = s.list_tools().await.unwrap_err();
        assert!(matches!(e, McpError::Timeout { .. }), "{e:?}");
        let e = s.request("ping", None).await.unwrap_err();
        assert!(
            matches!(e, McpError::TransportClosed { ref reason, .. } if reason.contains("silent")),
            "{e:?}"
        );
    }
}
