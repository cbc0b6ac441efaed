//! The protocol era of a session, above the transports (ADR 0015).
//!
//! A transport ([`Wire`]) moves JSON-RPC messages; it knows no handshake.
//! The era decides what goes around them:
//! - [`legacy`] (2024-11-05 .. 2025-11-25): `initialize` and
//!   `notifications/initialized`, the `Mcp-Session-Id` and the
//!   `MCP-Protocol-Version` header after the handshake, re-initialisation of
//!   an expired session, DELETE on close.
//! - [`modern`] (2026-07-28): no session; `server/discover`, and `_meta` and
//!   the standard headers on every request.
//!
//! [`negotiate`] picks the era of an upstream as the spec's
//! backward-compatibility sections say: `server/discover` first; a
//! `DiscoverResult` means modern, -32022 naming a version both sides speak
//! means a retry at it (or the handshake, when only a 2025 revision is
//! mutual), anything else (an error, a 4xx without a modern body, silence
//! past [`PROBE_TIMEOUT_MAX`]) means a 2025 server: `initialize` as before.

pub(crate) mod info;
pub(crate) mod legacy;
pub(crate) mod modern;
pub(crate) mod params;

use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::call::{Prepared, Sinks};
use super::legacy_sse::LegacySse;
use super::stdio::Stdio;
use super::streamable_http::{Answered, ExtraHeaders, NamedHeaders, StreamableHttp};
use super::{ClientOptions, McpError, Notification, ServerInfo, Target};
use discovery_config::{ProtocolChoice, TransportKind};

pub(crate) use legacy::Legacy;
pub(crate) use modern::Modern;

/// The probe (`server/discover`) waits at most this long, and never longer
/// than `request_timeout`: a 2025 server that stays silent to an unknown
/// method costs one bounded wait once per upstream, not a whole request
/// timeout (an HTTP server answers at once either way).
pub const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(5);

/// The modern revisions we speak, newest first.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

/// Which era a session speaks: kept by the upstream actor between
/// connects, so a 2025 server is not probed on every reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EraKind {
    /// The 2025 handshake (`initialize`).
    Legacy,
    /// The stateless 2026-07-28 wire.
    Modern,
}

impl EraKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EraKind::Legacy => "legacy",
            EraKind::Modern => "modern",
        }
    }

    /// The era a negotiated revision belongs to.
    pub fn of(protocol_version: &str) -> Self {
        if MODERN_VERSIONS.contains(&protocol_version) {
            EraKind::Modern
        } else {
            EraKind::Legacy
        }
    }
}

/// The transport under a session. An enum, not a trait object: three known
/// kinds, and async methods stay plain.
pub(crate) enum Wire {
    Http(StreamableHttp),
    /// Boxed: the largest by far, and the rarest.
    Sse(Box<LegacySse>),
    Stdio(Stdio),
}

impl Wire {
    pub(crate) fn target(&self) -> &str {
        match self {
            Wire::Http(t) => t.shown_url(),
            Wire::Sse(t) => t.shown_url(),
            Wire::Stdio(t) => t.label(),
        }
    }

    /// The next JSON-RPC id of the transport.
    pub(crate) fn next_id(&self) -> u64 {
        match self {
            Wire::Http(t) => t.next_id(),
            Wire::Sse(t) => t.next_id(),
            Wire::Stdio(t) => t.next_id(),
        }
    }

    /// A relayed `tools/call` with id `id` and serialized `params`, bounded
    /// by `after`; `extra` and `named` headers go on HTTP only; progress
    /// notifications and server-to-client requests for it go to `sinks`.
    pub(crate) async fn call(
        &self,
        id: u64,
        params: &RawValue,
        extra: &ExtraHeaders,
        named: &NamedHeaders,
        after: Duration,
        sinks: Sinks<'_>,
    ) -> Result<Box<RawValue>, McpError> {
        match self {
            Wire::Http(t) => Ok(t.call(id, params, extra, named, after, sinks).await?.result),
            Wire::Sse(t) => t.call(id, params, after, sinks).await,
            Wire::Stdio(t) => t.call(id, params, after, sinks).await,
        }
    }

    pub(crate) fn transport(&self) -> &'static str {
        match self {
            Wire::Http(_) => "streamable-http",
            Wire::Sse(_) => "sse",
            Wire::Stdio(_) => "stdio",
        }
    }

    /// One request; `extra` headers go on HTTP only.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
    ) -> Result<Answered, McpError> {
        let plain = |result: Box<RawValue>| Answered {
            result,
            session_id: None,
        };
        match self {
            Wire::Http(t) => t.request(method, params, extra).await,
            Wire::Sse(t) => t.request(method, params).await.map(plain),
            Wire::Stdio(t) => t.request(method, params).await.map(plain),
        }
    }

    /// One request with `named` headers besides `extra` (HTTP only: the
    /// stream transports have no headers, and SEP-2243 lets a stdio
    /// client ignore `x-mcp-header`).
    pub(crate) async fn request_named(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
        named: &NamedHeaders,
    ) -> Result<Answered, McpError> {
        match self {
            Wire::Http(t) => t.request_named(method, params, extra, named).await,
            other => other.request(method, params, extra).await,
        }
    }

    /// One request bounded by `after` (or by `request_timeout` if sooner:
    /// the stream transports apply their own on top).
    pub(crate) async fn request_within(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
        after: Duration,
    ) -> Result<Answered, McpError> {
        match self {
            Wire::Http(t) => t.request_within(method, params, extra, after).await,
            other => {
                super::within(
                    after,
                    method,
                    other.target(),
                    other.request(method, params, extra),
                )
                .await
            }
        }
    }

    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<&Value>,
        extra: &ExtraHeaders,
    ) -> Result<(), McpError> {
        match self {
            Wire::Http(t) => t.notify(method, params, extra).await,
            Wire::Sse(t) => t.notify(method, params).await,
            Wire::Stdio(t) => t.notify(method, params).await,
        }
    }

    pub(crate) fn take_notifications(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Notification>> {
        match self {
            Wire::Http(_) => None,
            Wire::Sse(t) => t.take_notifications(),
            Wire::Stdio(t) => t.take_notifications(),
        }
    }

    pub(crate) fn closed(&self) -> Option<McpError> {
        match self {
            Wire::Http(_) => None,
            Wire::Sse(t) => t.closed(),
            Wire::Stdio(t) => t.closed(),
        }
    }

    /// Closes the stream transports (the SSE stream, the stdio child);
    /// HTTP has nothing to close (its era may DELETE first).
    pub(crate) async fn close(&self) {
        match self {
            Wire::Http(_) => {}
            Wire::Sse(t) => t.close().await,
            Wire::Stdio(t) => t.close().await,
        }
    }
}

/// The era of one live session.
pub(crate) enum Era {
    Legacy(Legacy),
    Modern(Modern),
}

impl Era {
    pub(crate) fn wire(&self) -> &Wire {
        match self {
            Era::Legacy(e) => e.wire(),
            Era::Modern(e) => e.wire(),
        }
    }

    pub(crate) fn kind(&self) -> EraKind {
        match self {
            Era::Legacy(_) => EraKind::Legacy,
            Era::Modern(_) => EraKind::Modern,
        }
    }

    pub(crate) fn info(&self) -> ServerInfo {
        match self {
            Era::Legacy(e) => e.info(),
            Era::Modern(e) => e.info(),
        }
    }

    /// The hints of `server/discover` (none on the 2025 wire).
    pub(crate) fn discover_hint(&self) -> Option<super::cache::CacheHint> {
        match self {
            Era::Legacy(_) => None,
            Era::Modern(e) => Some(e.discover_hint()),
        }
    }

    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        match self {
            Era::Legacy(e) => e.request(method, params).await,
            Era::Modern(e) => e.request(method, params).await,
        }
    }

    /// `tools/call` of a tool whose `inputSchema` is `schema`: a 2025
    /// request as any other; on the 2026-07-28 wire also the
    /// `Mcp-Param-*` headers the schema's `x-mcp-header` annotations name
    /// (`params`).
    pub(crate) async fn call_tool(
        &self,
        params: Value,
        schema: &Value,
    ) -> Result<Box<RawValue>, McpError> {
        match self {
            Era::Legacy(e) => e.request("tools/call", Some(params)).await,
            Era::Modern(e) => {
                let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
                let named = params::param_headers(schema, &arguments);
                e.request_named("tools/call", Some(params), &named).await
            }
        }
    }

    /// Sets the era's own `_meta` keys of a relayed `tools/call` over the
    /// client's (2026-07-28: version, the client's capabilities, our
    /// clientInfo; the 2025 wire has none).
    pub(crate) fn set_call_meta(
        &self,
        meta: &mut Map<String, Value>,
        capabilities: Option<&Value>,
    ) {
        if let Era::Modern(e) = self {
            e.set_call_meta(meta, capabilities)
        }
    }

    /// Whether a call mirrors its arguments into `Mcp-Param-*` headers
    /// (2026-07-28 over HTTP; SEP-2243 lets stdio ignore them).
    pub(crate) fn mirrors_params(&self) -> bool {
        matches!(self, Era::Modern(e) if matches!(e.wire(), Wire::Http(_)))
    }

    /// A relayed `tools/call` (see `super::call`).
    pub(crate) async fn call(&self, call: &Prepared) -> Result<Box<RawValue>, McpError> {
        match self {
            Era::Legacy(e) => e.call(call).await,
            Era::Modern(e) => e.call(call).await,
        }
    }

    /// Cancels request `id` upstream after its future was dropped, as the
    /// era wants: `notifications/cancelled` (2025; 2026-07-28 on stdio);
    /// over 2026-07-28 HTTP the closed stream already was the cancellation.
    /// Best effort: a failure is logged.
    pub(crate) async fn cancel(&self, id: u64, reason: &str) {
        match self {
            Era::Legacy(e) => e.cancel(id, reason).await,
            Era::Modern(e) => e.cancel(id, reason).await,
        }
    }

    pub(crate) async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        match self {
            Era::Legacy(e) => e.notify(method, params).await,
            Era::Modern(e) => e.notify(method, params).await,
        }
    }

    pub(crate) async fn open_push(
        &self,
        last_event_id: Option<&str>,
    ) -> Option<Result<super::PushOpened, McpError>> {
        match self {
            Era::Legacy(e) => e.open_push(last_event_id).await,
            // 2026-07-28 has no GET stream: its push is
            // `subscriptions/listen` (no Last-Event-ID).
            Era::Modern(e) => e.open_listen().await,
        }
    }

    pub(crate) async fn answer_request(&self, id: &Value, method: &str, params: Option<Value>) {
        if let Era::Legacy(e) = self {
            e.answer_request(id, method, params).await
        }
    }

    pub(crate) fn session_id(&self) -> Option<String> {
        match self {
            Era::Legacy(e) => e.session_id(),
            Era::Modern(_) => None,
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Era::Legacy(e) => e.close().await,
            Era::Modern(e) => e.wire().close().await,
        }
    }
}

/// What the probe concluded.
enum Probed {
    Modern(Modern),
    /// A 2025 server (or one that offers only a 2025 revision we speak):
    /// the wire, for the handshake.
    Legacy(Wire),
}

/// The probe's answer was the child exiting or closing its stdout.
fn died_of_the_probe(e: &McpError) -> bool {
    matches!(
        e,
        McpError::ChildExited { .. } | McpError::TransportClosed { .. }
    )
}

fn invalid(text: impl Into<String>) -> McpError {
    McpError::InvalidTarget(text.into())
}

/// Opens the transport and negotiates the era. `known` is the verdict of
/// an earlier session of this upstream: a legacy one skips the probe.
pub(crate) async fn negotiate(
    target: &Target,
    opts: &ClientOptions,
    known: Option<EraKind>,
) -> Result<Era, McpError> {
    let choice = opts.protocol;
    let pinned_modern = matches!(choice, ProtocolChoice::Pinned(v) if MODERN_VERSIONS.contains(&v));
    let offer = match choice {
        ProtocolChoice::Pinned(v) if !pinned_modern => v,
        _ => super::LATEST_PROTOCOL_VERSION,
    };
    let probe = choice == ProtocolChoice::Auto && known != Some(EraKind::Legacy);
    match target {
        Target::Stdio {
            command,
            args,
            env,
            env_inherit,
            cwd,
        } => {
            let spawn = || Stdio::spawn(command, args, env, *env_inherit, cwd.as_deref(), opts);
            let wire = Wire::Stdio(spawn().await?);
            if pinned_modern {
                return Ok(Era::Modern(
                    Modern::discover(wire, opts, MODERN_VERSIONS[0]).await?,
                ));
            }
            let wire = if probe {
                match modern::probe(wire, opts).await {
                    Ok(Probed::Modern(m)) => return Ok(Era::Modern(m)),
                    Ok(Probed::Legacy(wire)) => wire,
                    // Some 2025 servers exit on a method they do not know:
                    // that is a 2025 answer too. One new child, straight to
                    // the handshake (the actor keeps the legacy verdict once
                    // it succeeds, so the probe is not repeated).
                    Err(e) if died_of_the_probe(&e) => {
                        tracing::debug!(
                            server = %opts.server_name,
                            error = %e,
                            "The child ended on server/discover; starting it again for the initialize handshake"
                        );
                        Wire::Stdio(spawn().await?)
                    }
                    Err(e) => return Err(e),
                }
            } else {
                wire
            };
            Ok(Era::Legacy(Legacy::handshake(wire, opts, offer).await?))
        }
        Target::Http { url, transport } => {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "`{}` is not an http(s) URL",
                    super::error::redact_url(url)
                )));
            }
            match transport {
                TransportKind::Stdio => {
                    return Err(invalid(
                        "an HTTP target cannot use the stdio transport",
                    ))
                }
                TransportKind::Sse if pinned_modern => {
                    return Err(invalid(
                        "protocol 2026-07-28 needs Streamable HTTP; the legacy HTTP+SSE transport speaks only 2024-11-05",
                    ))
                }
                TransportKind::Sse => {
                    let wire = Wire::Sse(Box::new(LegacySse::open(url, opts).await?));
                    return Ok(Era::Legacy(Legacy::handshake(wire, opts, offer).await?));
                }
                TransportKind::Auto | TransportKind::StreamableHttp => {}
            }
            let http = Wire::Http(StreamableHttp::new(url, opts)?);
            if pinned_modern {
                return Ok(Era::Modern(
                    Modern::discover(http, opts, MODERN_VERSIONS[0]).await?,
                ));
            }
            let http = if probe {
                match modern::probe(http, opts).await? {
                    Probed::Modern(m) => return Ok(Era::Modern(m)),
                    Probed::Legacy(wire) => wire,
                }
            } else {
                http
            };
            legacy::connect_http(http, url, *transport, opts, offer).await
        }
    }
}
