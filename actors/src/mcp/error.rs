//! Errors of the MCP client.
//!
//! Each variant names what was being done, against what, and where the
//! limit lives in the config, so `last_error` reads as an actionable
//! sentence. Lower-level causes (io errors, serde errors) hang off
//! `source()`; [`McpError::chain`] renders the whole chain on one line.
//! URLs in messages are redacted (no credentials, no query string).
//!
//! Every string an upstream chose (a JSON-RPC error message, an HTTP body or
//! challenge, a stdio exit reason, a stream's detail) is clipped here, when
//! the error is rendered, to [`UPSTREAM_TEXT_MAX`] characters: `last_error`
//! and the logs never hold more of it than that, whatever the server sent.

use std::fmt;
use std::time::Duration;

use super::SUPPORTED_PROTOCOL_VERSIONS;

/// Most characters of one upstream-provided string shown in an error.
pub const UPSTREAM_TEXT_MAX: usize = 512;

/// A cause that is only available as text (awc errors are not `Send`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an MCP operation failed. `Display` is a human sentence; the cause
/// chain is reachable through `source()`.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("Connection refused by {url}: nothing is listening there (is the server running, is the port right?)")]
    ConnectionRefused {
        url: String,
        #[source]
        source: std::io::Error,
    },

    #[error("Could not connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: BoxError,
    },

    #[error("Could not connect to {url} within {} (discovery.connect_timeout)", Dur(*after))]
    ConnectTimeout { url: String, after: Duration },

    #[error("No response to `{method}` from {target} within {} (discovery.request_timeout)", Dur(*after))]
    Timeout {
        method: String,
        target: String,
        after: Duration,
    },

    #[error("HTTP request `{method}` to {url} failed")]
    Http {
        method: String,
        url: String,
        #[source]
        source: BoxError,
    },

    #[error("{url} answered `{method}` with HTTP {status}{}", Excerpt(body))]
    HttpStatus {
        method: String,
        url: String,
        status: u16,
        /// A short, single-line excerpt of the response body.
        body: String,
    },

    /// A 3xx: redirects are never followed (ADR 0011), so nothing configured
    /// for this server (headers, token, body) can reach another host.
    #[error("{url} answered `{method}` with HTTP {status} redirecting to {location}; redirects are not followed, so credentials never go elsewhere. Hint: configure the final URL")]
    Redirected {
        method: String,
        url: String,
        status: u16,
        /// The redacted `Location`.
        location: String,
    },

    /// 401 or 403: the server wants (other) credentials. `challenge` is its
    /// `WWW-Authenticate` header (no secret: the server's own words).
    #[error("{url} answered `{method}` with HTTP {status}{}", Challenge(challenge.as_deref()))]
    Unauthorized {
        method: String,
        url: String,
        status: u16,
        challenge: Option<String>,
    },

    #[error("{url} answered `{method}` with Content-Type `{}`, expected application/json or text/event-stream", Clip(content_type, 100))]
    UnexpectedContentType {
        method: String,
        url: String,
        content_type: String,
    },

    #[error("{url} answered `{method}` with HTTP {status} but sent no JSON-RPC response")]
    NoResponse {
        method: String,
        url: String,
        status: u16,
    },

    #[error(
        "A message from {from} exceeds the limit of {limit} bytes (discovery.max_response_bytes)"
    )]
    BodyTooLarge { from: String, limit: usize },

    #[error("Malformed JSON in {context}")]
    MalformedJson {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "Not a JSON-RPC 2.0 message in {context}: {}",
        Clip(detail, UPSTREAM_TEXT_MAX)
    )]
    NotJsonRpc { context: String, detail: String },

    #[error(
        "Malformed result of `{method}` from {target}: {}",
        Clip(detail, UPSTREAM_TEXT_MAX)
    )]
    MalformedResult {
        method: String,
        target: String,
        detail: String,
    },

    #[error(
        "The event stream from {url} ended before the response to `{method}` arrived ({})",
        Clip(detail, UPSTREAM_TEXT_MAX)
    )]
    StreamEnded {
        method: String,
        url: String,
        detail: String,
    },

    #[error(
        "Server answered `{method}` with JSON-RPC error {code}: {}",
        Clip(message, UPSTREAM_TEXT_MAX)
    )]
    JsonRpc {
        method: String,
        code: i64,
        message: String,
        /// `error.data` as compact JSON, if any.
        data: Option<String>,
    },

    #[error("Session at {url} expired (HTTP {status}) and the new session was refused too")]
    SessionExpired { url: String, status: u16 },

    #[error(
        "`{method}` returned cursor `{}` a second time: the server's pagination loops",
        Clip(cursor, 100)
    )]
    PaginationLoop { method: String, cursor: String },

    #[error("`{method}` still had more pages after {cap} pages (discovery.max_pages)")]
    PageCapExceeded { method: String, cap: u32 },

    #[error("`{method}` exceeded discovery.max_tools ({cap}): {listed} {items} listed. Hint: raise discovery.max_tools if the server really offers that many")]
    TooManyItems {
        method: String,
        /// `tools`, `prompts` or `resources`.
        items: &'static str,
        cap: u32,
        listed: usize,
    },

    #[error("`{method}` exceeded discovery.max_listing_bytes ({cap} bytes): {bytes} bytes listed. Hint: raise discovery.max_listing_bytes if the server's listing is really that large")]
    ListingTooLarge {
        method: String,
        cap: u64,
        bytes: u64,
    },

    #[error("Could not start stdio server `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "Stdio server `{command}` exited ({})",
        Clip(status, UPSTREAM_TEXT_MAX)
    )]
    ChildExited { command: String, status: String },

    #[error("Server chose protocol version `{}`, which this client does not support (supported: {})", Clip(version, 40), SUPPORTED_PROTOCOL_VERSIONS.join(", "))]
    UnsupportedProtocolVersion { version: String },

    #[error(
        "{target} speaks no MCP revision this client does (it supports: {}). Hint: this client speaks 2026-07-28 and 2025-11-25 down to 2024-11-05",
        Clip(supported, 200)
    )]
    NoMutualVersion { target: String, supported: String },

    #[error("No `endpoint` event from {url} within {} (is this a legacy HTTP+SSE endpoint?)", Dur(*after))]
    NoEndpointEvent { url: String, after: Duration },

    #[error(
        "Unusable `endpoint` event from {url}: {}",
        Clip(detail, UPSTREAM_TEXT_MAX)
    )]
    InvalidEndpoint { url: String, detail: String },

    #[error(
        "Connection to {target} is closed: {}",
        Clip(reason, UPSTREAM_TEXT_MAX)
    )]
    TransportClosed { target: String, reason: String },

    #[error("I/O error talking to {target}")]
    Io {
        target: String,
        #[source]
        source: std::io::Error,
    },

    #[error("Streamable HTTP failed ({streamable}), and the legacy HTTP+SSE fallback on {url} failed too")]
    FallbackFailed {
        url: String,
        /// Why Streamable HTTP was given up.
        streamable: String,
        #[source]
        source: Box<McpError>,
    },

    #[error("Invalid MCP target: {}", Clip(.0, UPSTREAM_TEXT_MAX))]
    InvalidTarget(String),

    #[error("Tool `{}` cannot be called: {}", Clip(.tool, UPSTREAM_TEXT_MAX), Clip(.reason, UPSTREAM_TEXT_MAX))]
    InvalidTool { tool: String, reason: String },
}

impl McpError {
    /// `Display` of this error and of every `source()`, joined with ": ".
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }

    /// A stable, machine-readable code (API `code` fields, metric labels).
    pub fn code(&self) -> &'static str {
        match self {
            McpError::ConnectionRefused { .. } => "connection_refused",
            McpError::Connect { .. } => "connect_failed",
            McpError::ConnectTimeout { .. } => "connect_timeout",
            McpError::Timeout { .. } => "timeout",
            McpError::Http { .. } => "http_failed",
            McpError::HttpStatus { .. } => "http_status",
            McpError::Unauthorized { .. } => "unauthorized",
            McpError::Redirected { .. } => "redirect_refused",
            McpError::UnexpectedContentType { .. } => "unexpected_content_type",
            McpError::NoResponse { .. } => "no_response",
            McpError::BodyTooLarge { .. } => "body_too_large",
            McpError::MalformedJson { .. } => "malformed_json",
            McpError::NotJsonRpc { .. } => "not_json_rpc",
            McpError::MalformedResult { .. } => "malformed_result",
            McpError::StreamEnded { .. } => "stream_ended",
            McpError::JsonRpc { .. } => "json_rpc_error",
            McpError::SessionExpired { .. } => "session_expired",
            McpError::PaginationLoop { .. } => "pagination_loop",
            McpError::PageCapExceeded { .. } => "page_cap_exceeded",
            McpError::TooManyItems { .. } => "too_many_items",
            McpError::ListingTooLarge { .. } => "listing_too_large",
            McpError::Spawn { .. } => "spawn_failed",
            McpError::ChildExited { .. } => "child_exited",
            McpError::UnsupportedProtocolVersion { .. } => "unsupported_protocol_version",
            McpError::NoMutualVersion { .. } => "no_mutual_version",
            McpError::NoEndpointEvent { .. } => "no_endpoint_event",
            McpError::InvalidEndpoint { .. } => "invalid_endpoint",
            McpError::TransportClosed { .. } => "transport_closed",
            McpError::Io { .. } => "io",
            McpError::FallbackFailed { .. } => "fallback_failed",
            McpError::InvalidTarget(_) => "invalid_target",
            McpError::InvalidTool { .. } => "invalid_tool",
        }
    }

    /// Whether this is a timeout of any kind.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            McpError::Timeout { .. } | McpError::ConnectTimeout { .. }
        )
    }

    /// The HTTP status for `HttpStatus` errors.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            McpError::HttpStatus { status, .. } | McpError::Unauthorized { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// How a 401/403 reads: `insufficient_scope` said plainly, the rest of the
/// challenge kept for the reader.
struct Challenge<'a>(Option<&'a str>);

impl fmt::Display for Challenge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(challenge) = self.0 else {
            return Ok(());
        };
        let challenge = Clip(challenge, UPSTREAM_TEXT_MAX);
        if challenge.0.contains("insufficient_scope") {
            write!(
                f,
                ": insufficient_scope, the token lacks a scope the server requires ({challenge})"
            )
        } else {
            write!(f, " (WWW-Authenticate: {challenge})")
        }
    }
}

/// A cause we only have as text.
#[derive(Debug)]
pub struct Message(pub String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Clip(&self.0, UPSTREAM_TEXT_MAX).fmt(f)
    }
}

impl std::error::Error for Message {}

/// Boxes a text cause.
pub fn message(text: impl Into<String>) -> BoxError {
    Box::new(Message(text.into()))
}

/// Durations as people write them: `250 ms`, `5 s`, `1.5 s`.
pub(crate) struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms} ms")
        } else if ms % 1000 == 0 {
            write!(f, "{} s", ms / 1000)
        } else {
            let secs = format!("{:.3}", self.0.as_secs_f64());
            write!(f, "{} s", secs.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

/// `: <excerpt>` when there is a body, nothing otherwise.
struct Excerpt<'a>(&'a str);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", Clip(self.0, UPSTREAM_TEXT_MAX))
        }
    }
}

/// At most `n` characters, with an ellipsis when cut (on a char boundary).
pub(crate) struct Clip<'a>(pub &'a str, pub usize);

/// `text` cut to at most `max` characters, with an ellipsis when cut: the
/// one clipping rule for upstream-provided text kept outside an error
/// (token errors, push stream errors, `last_error` as a whole).
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => Clip(text, max).to_string(),
    }
}

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(self.1) {
            None => f.write_str(self.0),
            Some((i, _)) => write!(f, "{}…", &self.0[..i]),
        }
    }
}

/// A single-line excerpt of a body: at most `max` characters, whitespace
/// runs collapsed, invalid UTF-8 replaced.
pub(crate) fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut chars = 0;
    let mut last_space = false;
    for c in text.trim().chars() {
        if chars >= max {
            out.push('…');
            break;
        }
        let c = if c.is_whitespace() || c.is_control() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
        chars += 1;
    }
    out
}

/// A URL safe to show: no user info, the query replaced by `?…`, no
/// fragment. The project's one URL redaction (API views, `check`, `probe`,
/// logs and errors all use it).
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let had_query = u.query().is_some();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    let mut s = u.to_string();
    if had_query {
        s.push_str("?…");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<McpError>();
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(Dur(Duration::from_millis(250)).to_string(), "250 ms");
        assert_eq!(Dur(Duration::from_secs(5)).to_string(), "5 s");
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1.5 s");
    }

    #[test]
    fn chain_includes_causes() {
        let e = McpError::ConnectionRefused {
            url: "http://127.0.0.1:9/mcp".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let chain = e.chain();
        assert!(
            chain.starts_with("Connection refused by http://127.0.0.1:9/mcp"),
            "{chain}"
        );
        assert!(chain.contains(": connection refused"), "{chain}");
        assert_eq!(e.code(), "connection_refused");
    }

    #[test]
    fn messages_are_precise() {
        let e = McpError::Timeout {
            method: "tools/list".into(),
            target: "http://h/mcp".into(),
            after: Duration::from_secs(10),
        };
        assert_eq!(
            e.to_string(),
            "No response to `tools/list` from http://h/mcp within 10 s (discovery.request_timeout)"
        );
        let e = McpError::HttpStatus {
            method: "initialize".into(),
            url: "http://h/mcp".into(),
            status: 500,
            body: "boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "http://h/mcp answered `initialize` with HTTP 500: boom"
        );
        let e = McpError::PageCapExceeded {
            method: "tools/list".into(),
            cap: 3,
        };
        assert_eq!(
            e.to_string(),
            "`tools/list` still had more pages after 3 pages (discovery.max_pages)"
        );
        let e = McpError::UnsupportedProtocolVersion {
            version: "1999-01-01".into(),
        };
        assert!(e.to_string().contains("`1999-01-01`"));
        assert!(e.to_string().contains("2025-11-25, 2025-06-18"));
    }

    #[test]
    fn excerpt_collapses_and_clips() {
        assert_eq!(excerpt(b"  a\n\n  b\tc  ", 100), "a b c");
        assert_eq!(excerpt(b"abcdef", 3), "abc…");
        assert_eq!(excerpt(b"\xFFx", 10), "\u{FFFD}x");
    }

    #[test]
    fn urls_are_redacted() {
        let u = url::Url::parse("https://user:pw@example.com:8443/mcp?api_key=s3cret#x").unwrap();
        assert_eq!(redact_url(&u), "https://example.com:8443/mcp?…");
        let u = url::Url::parse("http://example.com/mcp").unwrap();
        assert_eq!(redact_url(&u), "http://example.com/mcp");
    }

    #[test]
    fn upstream_text_is_clipped_when_rendered() {
        let huge = "é".repeat(100_000);
        let errors = [
            McpError::JsonRpc {
                method: "tools/list".into(),
                code: -32000,
                message: huge.clone(),
                data: None,
            },
            McpError::HttpStatus {
                method: "initialize".into(),
                url: "http://h/mcp".into(),
                status: 500,
                body: huge.clone(),
            },
            McpError::Unauthorized {
                method: "initialize".into(),
                url: "http://h/mcp".into(),
                status: 401,
                challenge: Some(huge.clone()),
            },
            McpError::ChildExited {
                command: "srv".into(),
                status: huge.clone(),
            },
            McpError::TransportClosed {
                target: "srv".into(),
                reason: huge.clone(),
            },
            McpError::Http {
                method: "initialize".into(),
                url: "http://h/mcp".into(),
                source: message(huge.clone()),
            },
        ];
        for e in errors {
            let chain = e.chain();
            assert!(
                chain.chars().count() < UPSTREAM_TEXT_MAX + 200,
                "{}",
                e.code()
            );
            assert!(chain.contains("ééé…"), "{chain}");
        }
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("aéc", 2), "aé…");
    }
}
