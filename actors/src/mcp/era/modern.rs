//! The 2026-07-28 era: stateless. No `initialize`, no session id, no
//! DELETE; every request carries `_meta` (protocol version, client
//! capabilities, client info) and, over HTTP, `MCP-Protocol-Version` equal
//! to it, `Mcp-Method`, and `Mcp-Name` for `tools/call`, `prompts/get`
//! (`params.name`) and `resources/read` (`params.uri`). `server/discover`
//! gives what `initialize` gave: capabilities, instructions, serverInfo.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::super::cache::{check_result_type, CacheHint};
use super::super::jsonrpc::UNSUPPORTED_PROTOCOL_VERSION;
use super::super::{ClientOptions, McpError, ServerInfo, SUPPORTED_PROTOCOL_VERSIONS};
use super::{info, Probed, Wire, MODERN_VERSIONS, PROBE_TIMEOUT_MAX};

pub(crate) const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub(crate) const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub(crate) const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub(crate) const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";
const DISCOVER: &str = "server/discover";
const LISTEN: &str = "subscriptions/listen";
const CANCELLED: &str = "notifications/cancelled";

/// The `notifications` a listen asks for: tool list changes always (what
/// discovery is about), prompts and resources when the server advertised
/// them in `server/discover`.
pub(crate) fn listen_params(info: &ServerInfo) -> Value {
    let mut wanted = Map::new();
    wanted.insert("toolsListChanged".into(), Value::Bool(true));
    if info.has_capability("prompts") {
        wanted.insert("promptsListChanged".into(), Value::Bool(true));
    }
    if info.has_capability("resources") {
        wanted.insert("resourcesListChanged".into(), Value::Bool(true));
    }
    serde_json::json!({ "notifications": wanted })
}

/// The `_meta` every modern request carries. We are a listing client: no
/// capabilities (an object, as the spec requires).
pub(crate) fn request_meta(version: &str) -> Value {
    serde_json::json!({
        META_VERSION: version,
        META_CAPABILITIES: {},
        META_CLIENT_INFO: {
            "name": "mcp-discovery",
            "version": env!("CARGO_PKG_VERSION"),
        },
    })
}

/// `params` with our `_meta` keys added (a `_meta` already there keeps its
/// other keys).
pub(crate) fn with_meta(params: Option<Value>, version: &str) -> Value {
    let mut params = match params {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let ours = request_meta(version);
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let (Value::Object(meta), Value::Object(ours)) = (meta, ours) {
        meta.extend(ours);
    }
    Value::Object(params)
}

/// A header value as the spec wants it: as-is when it is visible ASCII
/// with no leading or trailing whitespace, else `=?base64?{base64 of the
/// UTF-8}?=` (non-ASCII, control characters, edge whitespace).
pub(crate) fn header_value(text: &str) -> String {
    let safe = text.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !text.starts_with([' ', '\t'])
        && !text.ends_with([' ', '\t']);
    if safe {
        text.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
        )
    }
}

/// The standard headers of one modern request: version, method, and the
/// name the method routes on.
pub(crate) fn headers(method: &str, params: &Value, version: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (
            super::super::streamable_http::PROTOCOL_HEADER,
            version.to_owned(),
        ),
        (METHOD_HEADER, header_value(method)),
    ];
    let name = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        _ => None,
    };
    if let Some(name) = name.and_then(Value::as_str) {
        out.push((NAME_HEADER, header_value(name)));
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiscoverResult {
    #[serde(default)]
    supported_versions: Vec<String>,
    #[serde(default)]
    capabilities: Value,
    #[serde(default)]
    instructions: Option<Value>,
    /// Older modern servers (and the conformance mocks) put it here.
    #[serde(default)]
    server_info: Value,
    #[serde(default)]
    result_type: Option<Value>,
    #[serde(default)]
    ttl_ms: Option<Value>,
    #[serde(default)]
    cache_scope: Option<Value>,
    #[serde(default, rename = "_meta")]
    meta: Option<Map<String, Value>>,
}

/// A modern session.
pub(crate) struct Modern {
    wire: Wire,
    version: &'static str,
    info: ServerInfo,
    hint: CacheHint,
}

/// Why a `server/discover` answer is not one we can use.
enum Rejected {
    /// No modern server we speak: the probe falls back to `initialize`.
    NotModern(String),
    /// A DiscoverResult listing our version but invalid (an unknown
    /// `resultType`): a modern server, and an error for it, not a 2025 one.
    Invalid(String),
}

/// Reads a `server/discover` answer.
fn discovered(
    raw: &RawValue,
    version: &'static str,
    wire: &Wire,
) -> Result<(ServerInfo, CacheHint), Rejected> {
    let d: DiscoverResult = serde_json::from_str(raw.get())
        .map_err(|e| Rejected::NotModern(format!("unreadable result: {e}")))?;
    if !d.supported_versions.iter().any(|v| v == version) {
        return Err(Rejected::NotModern(format!(
            "supportedVersions does not list {version}: {}",
            super::super::error::clip(&d.supported_versions.join(", "), 200)
        )));
    }
    check_result_type(d.result_type.as_ref()).map_err(Rejected::Invalid)?;
    let hint = CacheHint::of(d.ttl_ms.as_ref(), d.cache_scope.as_ref());
    let server_info = d
        .meta
        .and_then(|mut m| m.remove(META_SERVER_INFO))
        .filter(Value::is_object)
        .unwrap_or(d.server_info);
    Ok((
        info::server_info(
            version.to_owned(),
            d.capabilities,
            server_info,
            d.instructions,
            wire.transport(),
        ),
        hint,
    ))
}

fn malformed(wire: &Wire, detail: String) -> McpError {
    McpError::MalformedResult {
        method: DISCOVER.into(),
        target: wire.target().to_owned(),
        detail,
    }
}

/// Errors after which no fallback can help (the transport itself failed,
/// or the server wants credentials): the probe reports them as they are.
fn is_transport_failure(e: &McpError) -> bool {
    matches!(
        e,
        McpError::ConnectionRefused { .. }
            | McpError::ConnectTimeout { .. }
            | McpError::Connect { .. }
            | McpError::Unauthorized { .. }
            | McpError::Redirected { .. }
            | McpError::Spawn { .. }
            | McpError::ChildExited { .. }
            | McpError::TransportClosed { .. }
            | McpError::InvalidTarget(_)
    )
}

/// `data.supported` of a -32022 error.
fn supported_of(data: Option<&str>) -> Vec<String> {
    data.and_then(|d| serde_json::from_str::<Value>(d).ok())
        .and_then(|d| d.get("supported").cloned())
        .and_then(|s| serde_json::from_value::<Vec<String>>(s).ok())
        .unwrap_or_default()
}

/// Asks `server/discover` at our newest modern revision, bounded by
/// `min(request_timeout, PROBE_TIMEOUT_MAX)`, and reads the answer as the
/// spec's backward-compatibility sections say (see the module doc of
/// `era`). Hands the wire back for the handshake when the server is a
/// 2025 one.
pub(super) async fn probe(wire: Wire, opts: &ClientOptions) -> Result<Probed, McpError> {
    let bound = opts.request_timeout.min(PROBE_TIMEOUT_MAX);
    let mut version = MODERN_VERSIONS[0];
    let mut retried = false;
    loop {
        let params = with_meta(None, version);
        let extra = headers(DISCOVER, &params, version);
        let outcome = wire
            .request_within(DISCOVER, Some(&params), &extra, bound)
            .await;
        let why = match outcome {
            Ok(answered) => match discovered(&answered.result, version, &wire) {
                Ok((info, hint)) => {
                    tracing::debug!(
                        server = %opts.server_name,
                        protocol_version = version,
                        "Server answered server/discover; speaking the stateless protocol"
                    );
                    return Ok(Probed::Modern(Modern {
                        wire,
                        version,
                        info,
                        hint,
                    }));
                }
                Err(Rejected::Invalid(detail)) => return Err(malformed(&wire, detail)),
                Err(Rejected::NotModern(why)) => why,
            },
            Err(McpError::JsonRpc {
                code: UNSUPPORTED_PROTOCOL_VERSION,
                data,
                ..
            }) => {
                let supported = supported_of(data.as_deref());
                let mutual = MODERN_VERSIONS
                    .iter()
                    .find(|v| supported.iter().any(|s| s == *v));
                match mutual {
                    // Once, even at the version just refused: the error
                    // names what the server speaks, and "pick from
                    // `supported`" is the spec's rule whatever was sent
                    // (a server may refuse one request, as the
                    // conformance suite's `request-metadata` does).
                    Some(v) if !retried => {
                        version = v;
                        retried = true;
                        continue;
                    }
                    _ if supported
                        .iter()
                        .any(|s| SUPPORTED_PROTOCOL_VERSIONS.contains(&s.as_str())) =>
                    {
                        "-32022: the server offers only a 2025 revision".to_owned()
                    }
                    _ => {
                        return Err(McpError::NoMutualVersion {
                            target: wire.target().to_owned(),
                            supported: supported.join(", "),
                        })
                    }
                }
            }
            Err(e) if is_transport_failure(&e) => return Err(e),
            Err(e) => e.chain(),
        };
        tracing::debug!(
            server = %opts.server_name,
            reason = %super::super::error::clip(&why, 300),
            "No usable server/discover answer; using the initialize handshake"
        );
        return Ok(Probed::Legacy(wire));
    }
}

impl Modern {
    /// `server/discover` at `version` with the whole request timeout, for
    /// a pinned modern revision: any failure is the error.
    pub(crate) async fn discover(
        wire: Wire,
        _opts: &ClientOptions,
        version: &'static str,
    ) -> Result<Self, McpError> {
        let params = with_meta(None, version);
        let extra = headers(DISCOVER, &params, version);
        let answered = match wire.request(DISCOVER, Some(&params), &extra).await {
            Err(McpError::JsonRpc {
                code: UNSUPPORTED_PROTOCOL_VERSION,
                data,
                ..
            }) => {
                return Err(McpError::NoMutualVersion {
                    target: wire.target().to_owned(),
                    supported: supported_of(data.as_deref()).join(", "),
                })
            }
            other => other?,
        };
        let (info, hint) = discovered(&answered.result, version, &wire).map_err(|r| match r {
            Rejected::NotModern(detail) | Rejected::Invalid(detail) => malformed(&wire, detail),
        })?;
        Ok(Self {
            wire,
            version,
            info,
            hint,
        })
    }

    /// The cache hints `server/discover` answered with.
    pub(crate) fn discover_hint(&self) -> CacheHint {
        self.hint
    }

    pub(crate) fn wire(&self) -> &Wire {
        &self.wire
    }

    pub(crate) fn info(&self) -> ServerInfo {
        self.info.clone()
    }

    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        let params = with_meta(params, self.version);
        let extra = headers(method, &params, self.version);
        Ok(self
            .wire
            .request(method, Some(&params), &extra)
            .await?
            .result)
    }

    /// [`Self::request`] with `named` headers too (`Mcp-Param-*`).
    pub(crate) async fn request_named(
        &self,
        method: &str,
        params: Option<Value>,
        named: &super::super::streamable_http::NamedHeaders,
    ) -> Result<Box<RawValue>, McpError> {
        let params = with_meta(params, self.version);
        let extra = headers(method, &params, self.version);
        Ok(self
            .wire
            .request_named(method, Some(&params), &extra, named)
            .await?
            .result)
    }

    /// Opens the push stream of a modern server: `subscriptions/listen`
    /// asking for the list changes the server advertised (tools always).
    /// On stdio it shares the channel (see `stdio::StdioListen`).
    pub(crate) async fn open_listen(&self) -> Option<Result<super::super::PushOpened, McpError>> {
        let params = with_meta(Some(listen_params(&self.info)), self.version);
        match &self.wire {
            Wire::Http(t) => {
                let extra = headers(LISTEN, &params, self.version);
                Some(t.open_listen(&params, &extra).await)
            }
            Wire::Stdio(t) => {
                let version = self.version;
                let cancel = |id: u64| {
                    let params = with_meta(
                        Some(serde_json::json!({
                            "requestId": id,
                            "reason": "the client stopped listening",
                        })),
                        version,
                    );
                    super::super::jsonrpc::encode_notification(CANCELLED, Some(&params))
                };
                let opened = t.open_listen(&params, cancel).await.map(|listen| {
                    super::super::PushOpened::Stream(Box::new(
                        super::super::PushEvents::stdio_listen(listen, t.label()),
                    ))
                });
                Some(opened)
            }
            Wire::Sse(_) => None,
        }
    }

    /// Our `_meta` keys of a relayed call, over the client's: the version,
    /// the client's own capabilities (so the upstream may ask it for input
    /// with an `input_required` result), our clientInfo.
    pub(crate) fn set_call_meta(
        &self,
        meta: &mut Map<String, Value>,
        capabilities: Option<&Value>,
    ) {
        let capabilities = capabilities
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        if let Value::Object(ours) = request_meta(self.version) {
            meta.extend(ours);
        }
        meta.insert(META_CAPABILITIES.into(), capabilities);
    }

    /// A relayed `tools/call`: `params` already carry our `_meta`; the
    /// standard headers name the upstream's own tool name.
    pub(crate) async fn call(
        &self,
        call: &super::super::call::Prepared,
    ) -> Result<Box<RawValue>, McpError> {
        let extra = headers(
            "tools/call",
            &serde_json::json!({ "name": call.name }),
            self.version,
        );
        let id = self.wire.next_id();
        call.in_flight.set(Some(id));
        self.wire
            .call(
                id,
                &call.params,
                &extra,
                &call.named,
                call.after,
                // A 2026-07-28 server asks for input with `input_required`
                // results, never with requests: none are relayed.
                super::super::call::Sinks {
                    progress: call.progress.as_ref(),
                    relay: None,
                },
            )
            .await
    }

    /// Over HTTP the request's stream is closed already (the future that
    /// held it was dropped): that is the cancellation. On stdio,
    /// `notifications/cancelled` naming the request.
    pub(crate) async fn cancel(&self, id: u64, reason: &str) {
        if matches!(self.wire, Wire::Http(_)) {
            return;
        }
        let params = serde_json::json!({ "requestId": id, "reason": reason });
        if let Err(e) = self.notify(CANCELLED, Some(params)).await {
            tracing::debug!(target = %self.wire.target(), error = %e.chain(), "Could not cancel a call upstream");
        }
    }

    pub(crate) async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        let params = with_meta(params, self.version);
        let extra = headers(method, &params, self.version);
        self.wire.notify(method, Some(&params), &extra).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_header_values_go_as_they_are() {
        assert_eq!(header_value("tools/call"), "tools/call");
        assert_eq!(header_value("get_weather"), "get_weather");
        assert_eq!(header_value("file:///a b.txt"), "file:///a b.txt");
    }

    #[test]
    fn unsafe_header_values_are_base64() {
        // Non-ASCII.
        assert_eq!(header_value("héllo"), "=?base64?aMOpbGxv?=");
        assert_eq!(header_value("日本"), "=?base64?5pel5pys?=");
        // Control characters.
        assert_eq!(header_value("a\nb"), "=?base64?YQpi?=");
        assert_eq!(header_value("a\u{7f}"), "=?base64?YX8=?=");
        // Leading and trailing whitespace.
        assert_eq!(header_value(" x"), "=?base64?IHg=?=");
        assert_eq!(header_value("x\t"), "=?base64?eAk=?=");
    }

    #[test]
    fn headers_name_the_method_and_the_routed_name() {
        let p = serde_json::json!({"name": "weather", "arguments": {}});
        let h = headers("tools/call", &p, "2026-07-28");
        assert_eq!(
            h,
            [
                ("mcp-protocol-version", "2026-07-28".to_owned()),
                ("mcp-method", "tools/call".to_owned()),
                ("mcp-name", "weather".to_owned()),
            ]
        );
        let p = serde_json::json!({"uri": "file:///é"});
        let h = headers("resources/read", &p, "2026-07-28");
        assert_eq!(h[2], ("mcp-name", header_value("file:///é")));
        let h = headers(
            "tools/list",
            &serde_json::json!({"name": "x"}),
            "2026-07-28",
        );
        assert_eq!(h.len(), 2, "no Mcp-Name on tools/list");
    }

    #[test]
    fn listen_asks_for_what_the_server_advertised() {
        let info = |caps: Value| {
            info::server_info(
                "2026-07-28".into(),
                caps,
                Value::Null,
                None,
                "streamable-http",
            )
        };
        let p = listen_params(&info(serde_json::json!({"tools": {}})));
        assert_eq!(
            p,
            serde_json::json!({"notifications": {"toolsListChanged": true}})
        );
        let p = listen_params(&info(serde_json::json!({
            "tools": {}, "prompts": {"listChanged": true}, "resources": {}
        })));
        assert_eq!(
            p,
            serde_json::json!({"notifications": {
                "toolsListChanged": true,
                "promptsListChanged": true,
                "resourcesListChanged": true
            }})
        );
    }

    #[test]
    fn meta_is_added_and_keeps_other_keys() {
        let p = with_meta(
            Some(serde_json::json!({"cursor": "c", "_meta": {"progressToken": 1}})),
            "2026-07-28",
        );
        assert_eq!(p["cursor"], "c");
        assert_eq!(p["_meta"]["progressToken"], 1);
        assert_eq!(p["_meta"][META_VERSION], "2026-07-28");
        assert!(p["_meta"][META_CAPABILITIES].is_object());
        assert_eq!(p["_meta"][META_CLIENT_INFO]["name"], "mcp-discovery");
        let p = with_meta(None, "2026-07-28");
        assert_eq!(p.as_object().map(Map::len), Some(1));
    }
}
