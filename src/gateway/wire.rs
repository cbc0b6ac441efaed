//! What arrives on `POST /mcp`: one JSON-RPC message, which era it speaks,
//! and, for the 2026-07-28 era, the request checks the spec asks of a
//! server, in the order the conformance suite and the SDKs apply them:
//! `_meta` present and complete (-32602), headers equal to the body
//! (-32020), version supported (-32022).
#![allow(clippy::result_large_err)]

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// The one 2026-07-28-era revision this endpoint serves.
pub const MODERN_VERSION: &str = "2026-07-28";

/// The 2025-era revisions an `initialize` may ask for, newest first.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// Generic server error (SDKs use it for "no session" and similar).
pub const SERVER_ERROR: i64 = -32000;
/// Request timeout, as the TypeScript SDK numbers it.
pub const REQUEST_TIMEOUT: i64 = -32001;
/// What the SDKs answer for an unknown or expired 2025 session.
pub const SESSION_NOT_FOUND: i64 = -32001;
pub const HEADER_MISMATCH: i64 = -32020;
/// `MissingRequiredClientCapabilityError`.
pub const MISSING_CAPABILITY: i64 = -32021;
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// One incoming JSON-RPC message.
#[derive(Debug, Clone)]
pub struct Message {
    /// None for a notification.
    pub id: Option<Value>,
    pub method: String,
    /// `params` as an object (absent: empty).
    pub params: Map<String, Value>,
}

impl Message {
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }

    /// The request's `_meta` object, if any.
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.params.get("_meta").and_then(Value::as_object)
    }
}

/// A JSON-RPC error answer, with the HTTP status it goes out with.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub status: StatusCode,
    pub id: Value,
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(
        status: StatusCode,
        id: Option<&Value>,
        code: i64,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            id: id.cloned().unwrap_or(Value::Null),
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The JSON-RPC response object.
    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        json!({"jsonrpc": "2.0", "id": self.id, "error": error})
    }
}

/// What one POST carries: a request or notification, or a 2025 client's
/// response to a request the engine relayed to it (ADR 0024).
#[derive(Debug)]
pub enum Parsed {
    Message(Message),
    Response {
        id: Value,
        answer: discovery_actors::mcp::relay::ClientAnswer,
    },
}

/// [`parse_any`], refusing responses (tests of the request path).
#[cfg(test)]
pub fn parse(body: &[u8]) -> Result<Message, RpcError> {
    match parse_any(body)? {
        Parsed::Message(m) => Ok(m),
        Parsed::Response { id, .. } => Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            Some(&id),
            INVALID_REQUEST,
            "Invalid request: a response",
        )),
    }
}

/// Parses the body of a POST: exactly one JSON-RPC message (batches are
/// refused: batching left the protocol in 2025-06-18). A response needs
/// exactly one of `result` and `error`, an error its integer `code`.
pub fn parse_any(body: &[u8]) -> Result<Parsed, RpcError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        RpcError::new(
            StatusCode::BAD_REQUEST,
            None,
            PARSE_ERROR,
            format!("Parse error: the body is not JSON ({e})"),
        )
    })?;
    let Value::Object(mut obj) = value else {
        let what = if value.is_array() {
            "a batch (JSON array); send one message per request"
        } else {
            "not a JSON-RPC message object"
        };
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            None,
            INVALID_REQUEST,
            format!("Invalid request: {what}"),
        ));
    };
    let id = obj.remove("id");
    if let Some(id) = &id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return Err(RpcError::new(
                StatusCode::BAD_REQUEST,
                None,
                INVALID_REQUEST,
                "Invalid request: id must be a string or an integer",
            ));
        }
    }
    let invalid = |message: &str| {
        RpcError::new(
            StatusCode::BAD_REQUEST,
            id.as_ref(),
            INVALID_REQUEST,
            format!("Invalid request: {message}"),
        )
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("jsonrpc must be \"2.0\""));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(invalid("method must be a string")),
        None if obj.contains_key("result") || obj.contains_key("error") => {
            let Some(id) = id.clone() else {
                return Err(invalid("a response needs the id of the request it answers"));
            };
            let answer = match (obj.remove("result"), obj.remove("error")) {
                (Some(result), None) => Ok(result),
                (None, Some(error)) => Err(serde_json::from_value::<
                    discovery_actors::mcp::jsonrpc::RpcError,
                >(error)
                .map_err(|e| invalid(&format!("the response's error is malformed ({e})")))?),
                _ => return Err(invalid("a response has exactly one of result and error")),
            };
            return Ok(Parsed::Response { id, answer });
        }
        None => return Err(invalid("method is missing")),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(RpcError::new(
                StatusCode::BAD_REQUEST,
                id.as_ref(),
                INVALID_PARAMS,
                "Invalid params: params must be an object",
            ))
        }
    };
    Ok(Parsed::Message(Message { id, method, params }))
}

/// Which era a POST speaks. A 2026-07-28 client says so on every request
/// (the `MCP-Protocol-Version` header, or at least the `_meta` key, or a
/// method only that era has); a 2025 client sends a handshake version or
/// nothing (before `initialize`).
pub fn is_modern(headers: &HeaderMap, msg: &Message) -> bool {
    match header_str(headers, "mcp-protocol-version") {
        Some(v) => !LEGACY_VERSIONS.contains(&v.trim()),
        None => {
            msg.meta()
                .is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION))
                || matches!(
                    msg.method.as_str(),
                    "server/discover" | "subscriptions/listen"
                )
        }
    }
}

/// A header as text, if present and visible ASCII (names are matched
/// case-insensitively by `HeaderMap`).
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The checks of a 2026-07-28 request (not of a notification: those carry
/// no `_meta` duty and get 202). Returns the client's declared
/// capabilities.
pub fn validate_modern(headers: &HeaderMap, msg: &Message) -> Result<Value, RpcError> {
    let id = msg.id.as_ref();
    let bad_params =
        |message: String| RpcError::new(StatusCode::BAD_REQUEST, id, INVALID_PARAMS, message);
    // 1. `_meta` and its required keys.
    let Some(meta) = msg.meta() else {
        return Err(bad_params(format!(
            "Invalid params: _meta is required on every request of protocol {MODERN_VERSION} \
             (with {META_PROTOCOL_VERSION} and {META_CLIENT_CAPABILITIES})"
        )));
    };
    let Some(version) = meta.get(META_PROTOCOL_VERSION).and_then(Value::as_str) else {
        return Err(bad_params(format!(
            "Invalid params: _meta[\"{META_PROTOCOL_VERSION}\"] must be a string"
        )));
    };
    let capabilities = match meta.get(META_CLIENT_CAPABILITIES) {
        Some(Value::Object(c)) => Value::Object(c.clone()),
        _ => {
            return Err(bad_params(format!(
                "Invalid params: _meta[\"{META_CLIENT_CAPABILITIES}\"] must be an object"
            )))
        }
    };
    // 2. Headers equal to the body.
    let mismatch =
        |message: String| RpcError::new(StatusCode::BAD_REQUEST, id, HEADER_MISMATCH, message);
    match header_str(headers, "mcp-protocol-version").map(str::trim) {
        Some(h) if h == version => {}
        Some(h) => {
            return Err(mismatch(format!(
                "Header mismatch: MCP-Protocol-Version is {h:?} but _meta says {version:?}"
            )))
        }
        None => {
            return Err(mismatch(
                "Header mismatch: the MCP-Protocol-Version header is required".into(),
            ))
        }
    }
    match headers
        .get("mcp-method")
        .map(|v| decode_header(v.as_bytes()))
    {
        Some(Some(m)) if m == msg.method => {}
        Some(Some(m)) => {
            return Err(mismatch(format!(
                "Header mismatch: Mcp-Method is {m:?} but the body's method is {:?}",
                msg.method
            )))
        }
        Some(None) => {
            return Err(mismatch(
                "Header mismatch: Mcp-Method has invalid characters".into(),
            ))
        }
        None => {
            return Err(mismatch(
                "Header mismatch: the Mcp-Method header is required".into(),
            ))
        }
    }
    if let Some(key) = name_param(&msg.method) {
        let expected = msg.params.get(key).and_then(Value::as_str);
        match (
            headers.get("mcp-name").map(|v| decode_header(v.as_bytes())),
            expected,
        ) {
            (Some(Some(n)), Some(e)) if n == e => {}
            (Some(Some(n)), e) => {
                return Err(mismatch(format!(
                    "Header mismatch: Mcp-Name is {n:?} but params.{key} is {}",
                    e.map_or("missing".to_owned(), |e| format!("{e:?}"))
                )))
            }
            (Some(None), _) => {
                return Err(mismatch(
                    "Header mismatch: Mcp-Name has invalid characters".into(),
                ))
            }
            (None, _) => {
                return Err(mismatch(format!(
                    "Header mismatch: the Mcp-Name header (params.{key}) is required for {}",
                    msg.method
                )))
            }
        }
    }
    // 3. A version this endpoint speaks.
    if version != MODERN_VERSION {
        return Err(RpcError::new(
            StatusCode::BAD_REQUEST,
            id,
            UNSUPPORTED_VERSION,
            format!("Unsupported protocol version {version:?}; supported: {MODERN_VERSION} (and the 2025 revisions through initialize)"),
        )
        .with_data(json!({"supported": [MODERN_VERSION], "requested": version})));
    }
    Ok(capabilities)
}

/// The params key `Mcp-Name` mirrors for `method`.
fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// A standard header's value: as-is when plain visible ASCII, or the
/// UTF-8 inside `=?base64?...?=` (padding optional). None when it is
/// neither (control characters, bad base64, not UTF-8).
pub fn decode_header(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let trimmed = text.trim_matches(|c| c == ' ' || c == '\t');
    if let Some(inner) = trimmed
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let inner = inner.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(inner)
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    if trimmed.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Some(trimmed.to_owned())
    } else {
        None
    }
}

/// Whether the client takes an SSE answer (`Accept` names
/// `text/event-stream` or `*/*`).
pub fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .any(|m| m.eq_ignore_ascii_case("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn msg(body: Value) -> Message {
        parse(body.to_string().as_bytes()).unwrap()
    }

    fn meta(version: &str) -> Value {
        json!({META_PROTOCOL_VERSION: version, META_CLIENT_CAPABILITIES: {}})
    }

    #[test]
    fn parse_refuses_what_is_not_one_request() {
        assert_eq!(parse(b"{").unwrap_err().code, PARSE_ERROR);
        let batch = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(batch.code, INVALID_REQUEST);
        assert!(batch.message.contains("batch"));
        let e = parse(br#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#).unwrap_err();
        assert_eq!((e.code, e.id.clone()), (INVALID_REQUEST, json!(7)));
        let r = parse_any(br#"{"jsonrpc":"2.0","id":"x","result":{"a":1}}"#).unwrap();
        assert!(
            matches!(r, Parsed::Response { id, answer: Ok(v) } if id == json!("x") && v == json!({"a": 1}))
        );
        let r =
            parse_any(br#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#).unwrap();
        assert!(matches!(r, Parsed::Response { answer: Err(e), .. } if e.code == -1));
        for bad in [
            r#"{"jsonrpc":"2.0","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":""}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"message":"no code"}}"#,
        ] {
            assert_eq!(
                parse_any(bad.as_bytes()).unwrap_err().code,
                INVALID_REQUEST,
                "{bad}"
            );
        }
        let e =
            parse(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":[1]}"#).unwrap_err();
        assert_eq!((e.code, e.id.clone()), (INVALID_PARAMS, json!(2)));
        assert!(parse(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#).is_err());
        let n = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(n.is_notification());
    }

    #[test]
    fn era_follows_the_version_header_then_the_body() {
        let legacy = msg(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}));
        assert!(!is_modern(&headers(&[]), &legacy));
        assert!(!is_modern(
            &headers(&[("MCP-Protocol-Version", "2025-06-18")]),
            &legacy
        ));
        assert!(is_modern(
            &headers(&[("mcp-protocol-version", "2026-07-28")]),
            &legacy
        ));
        // An unknown version is answered as the modern era would (-32022).
        assert!(is_modern(
            &headers(&[("MCP-Protocol-Version", "v999")]),
            &legacy
        ));
        let with_meta = msg(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta": meta("2026-07-28")}}),
        );
        assert!(is_modern(&headers(&[]), &with_meta));
        let discover = msg(json!({"jsonrpc":"2.0","id":1,"method":"server/discover"}));
        assert!(is_modern(&headers(&[]), &discover));
    }

    fn check(pairs: &[(&str, &str)], body: Value) -> Result<Value, RpcError> {
        validate_modern(&headers(pairs), &msg(body))
    }

    #[test]
    fn modern_checks_come_in_the_spec_order() {
        let ok_headers = [
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/list"),
        ];
        // Missing _meta beats a header mismatch.
        let e = check(
            &[("MCP-Protocol-Version", "2026-07-28")],
            json!({"jsonrpc":"2.0","id":9,"method":"tools/list","params":{}}),
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.status, e.id.clone()),
            (INVALID_PARAMS, StatusCode::BAD_REQUEST, json!(9))
        );
        let e = check(
            &ok_headers,
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{META_PROTOCOL_VERSION:"2026-07-28"}}}),
        )
        .unwrap_err();
        assert_eq!(e.code, INVALID_PARAMS);
        // A header mismatch beats an unsupported version.
        let e = check(
            &ok_headers,
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta": meta("v999")}}),
        )
        .unwrap_err();
        assert_eq!(e.code, HEADER_MISMATCH);
        let e = check(
            &[
                ("MCP-Protocol-Version", "v999"),
                ("Mcp-Method", "tools/list"),
            ],
            json!({"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta": meta("v999")}}),
        )
        .unwrap_err();
        assert_eq!(e.code, UNSUPPORTED_VERSION);
        assert_eq!(
            e.data.unwrap(),
            json!({"supported":["2026-07-28"],"requested":"v999"})
        );
        let e = check(
            &[("MCP-Protocol-Version", "2026-07-28")],
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta": meta("2026-07-28")}}),
        )
        .unwrap_err();
        assert!(e.message.contains("Mcp-Method"), "{}", e.message);
        let e = check(
            &[("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", "tools/call")],
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta": meta("2026-07-28")}}),
        )
        .unwrap_err();
        assert_eq!(e.code, HEADER_MISMATCH);
        assert!(check(
            &ok_headers,
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta": meta("2026-07-28")}}),
        )
        .is_ok());
    }

    #[test]
    fn mcp_name_is_compared_after_base64_decoding_with_or_without_padding() {
        let call = |name_header: Option<&str>, name: &str| {
            let mut h = vec![
                ("MCP-Protocol-Version", "2026-07-28"),
                ("mcp-method", "tools/call"),
            ];
            if let Some(v) = name_header {
                h.push(("MCP-NAME", v));
            }
            check(
                &h,
                json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name": name, "_meta": meta("2026-07-28")}}),
            )
        };
        assert!(call(Some("search"), "search").is_ok());
        assert_eq!(
            call(Some("other"), "search").unwrap_err().code,
            HEADER_MISMATCH
        );
        assert_eq!(call(None, "search").unwrap_err().code, HEADER_MISMATCH);
        // "köln" in base64, padded and unpadded.
        let b64 = base64::engine::general_purpose::STANDARD.encode("köln");
        assert!(b64.ends_with('='));
        assert!(call(Some(&format!("=?base64?{b64}?=")), "köln").is_ok());
        let unpadded = b64.trim_end_matches('=');
        assert!(call(Some(&format!("=?base64?{unpadded}?=")), "köln").is_ok());
        assert_eq!(
            call(Some("=?base64?!!!?="), "x").unwrap_err().code,
            HEADER_MISMATCH
        );
    }

    #[test]
    fn decode_header_refuses_control_characters() {
        assert_eq!(decode_header(b"tools/list").as_deref(), Some("tools/list"));
        assert_eq!(decode_header(b" padded ").as_deref(), Some("padded"));
        assert_eq!(decode_header(b"a\x01b"), None);
        assert_eq!(decode_header("k\u{f6}ln".as_bytes()), None);
    }

    #[test]
    fn accept_lists_are_read_in_full() {
        assert!(accepts_sse(&headers(&[(
            "Accept",
            "application/json, text/event-stream"
        )])));
        assert!(accepts_sse(&headers(&[
            ("Accept", "application/json"),
            ("Accept", "Text/Event-Stream;q=0.5")
        ])));
        assert!(!accepts_sse(&headers(&[("Accept", "application/json")])));
    }
}
