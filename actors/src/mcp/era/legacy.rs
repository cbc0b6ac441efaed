//! The 2025 era (2024-11-05 .. 2025-11-25): the `initialize` handshake and,
//! on Streamable HTTP, the session it opens.
//!
//! Over HTTP every request after `initialize` carries `Mcp-Session-Id`
//! (when the server gave one) and `MCP-Protocol-Version`; a request the
//! server refuses because it forgot the session (404, or 400 naming a
//! missing/invalid session) re-initialises once and is retried; closing
//! DELETEs the session. Over stdio and legacy HTTP+SSE the handshake is all
//! there is.

use std::cell::RefCell;
use std::future::Future;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::super::error::redact_url;
use super::super::legacy_sse::LegacySse;
use super::super::streamable_http::{ExtraHeaders, PROTOCOL_HEADER, SESSION_HEADER};
use super::super::{ClientOptions, McpError, ServerInfo, SUPPORTED_PROTOCOL_VERSIONS};
use super::{info, Era, Wire};
use discovery_config::TransportKind;

/// `initialize` params: we offer `version` and the client capabilities we
/// can relay to our own clients during a call (ADR 0024): sampling,
/// elicitation (form and, from 2025-11-25, URL mode) and roots (no
/// `listChanged`: a client's changes are not relayed). One session serves
/// every client; a request for a client that did not declare the
/// capability is refused then, with an error naming it.
pub(crate) fn initialize_params(version: &str) -> Value {
    let elicitation = if version >= "2025-11-25" {
        serde_json::json!({"form": {}, "url": {}})
    } else {
        serde_json::json!({})
    };
    serde_json::json!({
        "protocolVersion": version,
        "capabilities": {
            "sampling": {},
            "elicitation": elicitation,
            "roots": {},
        },
        "clientInfo": {
            "name": "mcp-discovery",
            "version": env!("CARGO_PKG_VERSION"),
        },
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeResult {
    protocol_version: String,
    #[serde(default)]
    capabilities: Value,
    #[serde(default)]
    server_info: Value,
    #[serde(default)]
    instructions: Option<Value>,
}

/// Reads an `initialize` result; refuses a protocol version we do not
/// speak. What is kept is clipped (see [`info::server_info`]).
pub(crate) fn parse_initialize(
    raw: &RawValue,
    transport: &'static str,
    target: &str,
) -> Result<ServerInfo, McpError> {
    let r: InitializeResult =
        serde_json::from_str(raw.get()).map_err(|e| McpError::MalformedResult {
            method: "initialize".into(),
            target: target.to_owned(),
            detail: e.to_string(),
        })?;
    if !SUPPORTED_PROTOCOL_VERSIONS.contains(&r.protocol_version.as_str()) {
        return Err(McpError::UnsupportedProtocolVersion {
            version: r.protocol_version,
        });
    }
    Ok(info::server_info(
        r.protocol_version,
        r.capabilities,
        r.server_info,
        r.instructions,
        transport,
    ))
}

/// 404, or 400 naming a missing/invalid session: the server forgot us.
fn is_session_gone(err: &McpError) -> bool {
    match err {
        McpError::HttpStatus { status: 404, .. } => true,
        McpError::HttpStatus {
            status: 400, body, ..
        } => {
            let b = body.to_ascii_lowercase();
            b.contains("session")
                && [
                    "missing",
                    "invalid",
                    "unknown",
                    "not found",
                    "expired",
                    "no valid",
                    "terminated",
                ]
                .iter()
                .any(|w| b.contains(w))
        }
        _ => false,
    }
}

/// The session incarnation an exchange belongs to.
#[derive(Clone, Debug, Default, PartialEq)]
struct Ctx {
    session_id: Option<String>,
    protocol_version: Option<String>,
}

impl Ctx {
    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(2);
        if let Some(sid) = &self.session_id {
            out.push((SESSION_HEADER, sid.clone()));
        }
        if let Some(v) = &self.protocol_version {
            out.push((PROTOCOL_HEADER, v.clone()));
        }
        out
    }
}

#[derive(Clone, Debug)]
struct Established {
    session_id: Option<String>,
    info: ServerInfo,
}

/// A 2025 session over any transport.
pub(crate) struct Legacy {
    wire: Wire,
    opts: ClientOptions,
    /// The revision offered in `initialize`.
    offer: &'static str,
    state: RefCell<Option<Established>>,
    /// Serialises re-initialisation: concurrent requests that all hit an
    /// expired session re-initialise once.
    renewing: tokio::sync::Mutex<()>,
}

/// Streamable HTTP with the 2025 handshake; for `auto`, falls back to legacy
/// HTTP+SSE when `initialize` is refused with 400/404/405.
pub(crate) async fn connect_http(
    wire: Wire,
    url: &url::Url,
    kind: TransportKind,
    opts: &ClientOptions,
    offer: &'static str,
) -> Result<Era, McpError> {
    if kind != TransportKind::Auto {
        return Ok(Era::Legacy(Legacy::handshake(wire, opts, offer).await?));
    }
    match Legacy::handshake(wire, opts, offer).await {
        Ok(t) => {
            tracing::info!(
                server = %opts.server_name,
                url = %redact_url(url),
                transport = "streamable-http",
                "Transport chosen"
            );
            Ok(Era::Legacy(t))
        }
        Err(e) if matches!(e.http_status(), Some(400 | 404 | 405)) => {
            tracing::info!(
                server = %opts.server_name,
                url = %redact_url(url),
                status = e.http_status().unwrap_or_default(),
                "Streamable HTTP initialize refused; trying legacy HTTP+SSE"
            );
            let legacy = async {
                let wire = Wire::Sse(Box::new(LegacySse::open(url, opts).await?));
                Legacy::handshake(wire, opts, offer).await
            };
            match legacy.await {
                Ok(t) => {
                    tracing::info!(
                        server = %opts.server_name,
                        url = %redact_url(url),
                        transport = "sse",
                        "Transport chosen"
                    );
                    Ok(Era::Legacy(t))
                }
                Err(legacy) => Err(McpError::FallbackFailed {
                    url: redact_url(url),
                    streamable: e.to_string(),
                    source: Box::new(legacy),
                }),
            }
        }
        Err(e) => Err(e),
    }
}

impl Legacy {
    /// `initialize`, then `notifications/initialized`, over `wire`.
    pub(crate) async fn handshake(
        wire: Wire,
        opts: &ClientOptions,
        offer: &'static str,
    ) -> Result<Self, McpError> {
        let this = Self {
            wire,
            opts: opts.clone(),
            offer,
            state: RefCell::new(None),
            renewing: tokio::sync::Mutex::new(()),
        };
        this.initialize().await?;
        Ok(this)
    }

    pub(crate) fn wire(&self) -> &Wire {
        &self.wire
    }

    pub(crate) fn info(&self) -> ServerInfo {
        match &*self.state.borrow() {
            Some(s) => s.info.clone(),
            // `handshake` only returns an initialised session.
            None => ServerInfo::unknown(self.wire.transport()),
        }
    }

    pub(crate) fn session_id(&self) -> Option<String> {
        self.state
            .borrow()
            .as_ref()
            .and_then(|s| s.session_id.clone())
    }

    fn ctx(&self) -> Ctx {
        match &*self.state.borrow() {
            // Only HTTP carries session and version headers.
            Some(s) if matches!(self.wire, Wire::Http(_)) => Ctx {
                session_id: s.session_id.clone(),
                protocol_version: Some(s.info.protocol_version.clone()),
            },
            _ => Ctx::default(),
        }
    }

    /// A new session: initialize without session headers, then
    /// `notifications/initialized` with the new ones.
    async fn initialize(&self) -> Result<(), McpError> {
        let params = initialize_params(self.offer);
        let answered = self.wire.request("initialize", Some(&params), &[]).await?;
        let info = parse_initialize(&answered.result, self.wire.transport(), self.wire.target())?;
        let http = matches!(self.wire, Wire::Http(_));
        let ctx = Ctx {
            session_id: answered.session_id.clone(),
            protocol_version: http.then(|| info.protocol_version.clone()),
        };
        self.wire
            .notify("notifications/initialized", None, &ctx.headers())
            .await?;
        tracing::debug!(
            server = %self.opts.server_name,
            target = %self.wire.target(),
            protocol_version = %info.protocol_version,
            has_session = answered.session_id.is_some(),
            "Session initialised"
        );
        *self.state.borrow_mut() = Some(Established {
            session_id: answered.session_id,
            info,
        });
        Ok(())
    }

    /// Re-initialises after `failed` was refused as expired, unless a
    /// concurrent request already did.
    async fn renew(&self, failed: &Ctx, why: &McpError) -> Result<(), McpError> {
        let _guard = self.renewing.lock().await;
        if self.ctx().session_id != failed.session_id {
            return Ok(());
        }
        tracing::info!(
            server = %self.opts.server_name,
            url = %self.wire.target(),
            status = why.http_status().unwrap_or_default(),
            "Session expired; re-initialising"
        );
        self.initialize().await
    }

    /// Runs `op` in the current session; when the server says the session
    /// is gone, opens a new one once and runs `op` again.
    async fn with_session<T, F, Fut>(&self, op: F) -> Result<T, McpError>
    where
        F: Fn(Ctx) -> Fut,
        Fut: Future<Output = Result<T, McpError>>,
    {
        let ctx = self.ctx();
        match op(ctx.clone()).await {
            Err(e) if ctx.session_id.is_some() && is_session_gone(&e) => {
                self.renew(&ctx, &e).await?;
                op(self.ctx()).await.map_err(|e| match e.http_status() {
                    Some(status) if is_session_gone(&e) => McpError::SessionExpired {
                        url: self.wire.target().to_owned(),
                        status,
                    },
                    _ => e,
                })
            }
            other => other,
        }
    }

    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        self.with_session(|ctx| {
            let params = params.as_ref();
            async move {
                let answered = self.wire.request(method, params, &ctx.headers()).await?;
                Ok(answered.result)
            }
        })
        .await
    }

    /// A relayed `tools/call` in the current session; a forgotten session
    /// is re-established once and the call retried once, under a new id
    /// (the same machinery as every request).
    pub(crate) async fn call(
        &self,
        call: &super::super::call::Prepared,
    ) -> Result<Box<RawValue>, McpError> {
        self.with_session(|ctx| async move {
            let id = self.wire.next_id();
            call.in_flight.set(Some(id));
            self.wire
                .call(
                    id,
                    &call.params,
                    &ctx.headers(),
                    &[],
                    call.after,
                    call.sinks(),
                )
                .await
        })
        .await
    }

    /// `notifications/cancelled` for request `id`, in the current session
    /// (never re-established for it: a forgotten session forgot the
    /// request too). Best effort: a failure is logged.
    pub(crate) async fn cancel(&self, id: u64, reason: &str) {
        let params = serde_json::json!({ "requestId": id, "reason": reason });
        let sent = self
            .wire
            .notify(
                super::super::call::CANCELLED,
                Some(&params),
                &self.ctx().headers(),
            )
            .await;
        if let Err(e) = sent {
            tracing::debug!(server = %self.opts.server_name, error = %e.chain(), "Could not cancel a call upstream");
        }
    }

    pub(crate) async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        self.with_session(|ctx| {
            let params = params.as_ref();
            async move { self.wire.notify(method, params, &ctx.headers()).await }
        })
        .await
    }

    /// The GET push stream of a Streamable HTTP session; None for the
    /// stream transports (the transport is the stream).
    pub(crate) async fn open_push(
        &self,
        last_event_id: Option<&str>,
    ) -> Option<Result<super::super::PushOpened, McpError>> {
        match &self.wire {
            Wire::Http(t) => Some(t.open_push(last_event_id, &self.ctx().headers()).await),
            Wire::Sse(_) | Wire::Stdio(_) => None,
        }
    }

    pub(crate) async fn answer_request(&self, id: &Value, method: &str, params: Option<Value>) {
        if let Wire::Http(t) = &self.wire {
            t.answer_request(id, method, params, &self.ctx().headers())
                .await
        }
    }

    /// DELETE the HTTP session (best effort), then close the transport.
    pub(crate) async fn close(&self) {
        if let Wire::Http(t) = &self.wire {
            let ctx = self.ctx();
            let Some(sid) = ctx.session_id.clone() else {
                return;
            };
            let extra: &ExtraHeaders = &ctx.headers();
            t.delete(extra).await;
            if let Some(state) = self.state.borrow_mut().as_mut() {
                if state.session_id.as_deref() == Some(sid.as_str()) {
                    state.session_id = None;
                }
            }
        }
        self.wire.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_gone_detection() {
        let st = |status: u16, body: &str| McpError::HttpStatus {
            method: "tools/list".into(),
            url: "u".into(),
            status,
            body: body.into(),
        };
        assert!(is_session_gone(&st(404, "")));
        assert!(is_session_gone(&st(
            400,
            "Bad Request: No valid session ID provided"
        )));
        assert!(is_session_gone(&st(400, "Missing session ID")));
        assert!(is_session_gone(&st(400, "{\"error\":\"Unknown session\"}")));
        assert!(!is_session_gone(&st(400, "Invalid params")));
        assert!(!is_session_gone(&st(500, "session not found")));
    }
}
