//! What the API shows about servers: plain data, published by the registry.

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::Serialize;

/// The discovery state machine's states (contract: these four names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryState {
    Unknown,
    Connecting,
    Healthy,
    Degraded,
}

impl PushStreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            PushStreamState::Connected => "connected",
            PushStreamState::Connecting => "connecting",
            PushStreamState::Unsupported => "unsupported",
            PushStreamState::Failed => "failed",
            PushStreamState::Disabled => "disabled",
        }
    }
}

impl DiscoveryState {
    pub const ALL: [DiscoveryState; 4] = [
        DiscoveryState::Unknown,
        DiscoveryState::Connecting,
        DiscoveryState::Healthy,
        DiscoveryState::Degraded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryState::Unknown => "unknown",
            DiscoveryState::Connecting => "connecting",
            DiscoveryState::Healthy => "healthy",
            DiscoveryState::Degraded => "degraded",
        }
    }
}

/// State of the optional GET push stream (its own issue fills this in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushStreamState {
    Connected,
    Connecting,
    Unsupported,
    Failed,
    Disabled,
}

/// How a server authenticates, and how its OAuth2 token is doing.
#[derive(Clone, Debug, Serialize)]
pub struct AuthView {
    /// `none|bearer|basic|oauth2`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub last_token_error: Option<String>,
}

/// One server as `/v1/servers` shows it. Never holds a secret.
#[derive(Clone, Debug, Serialize)]
pub struct ServerView {
    pub name: String,
    /// `config` or `api`.
    pub source: &'static str,
    /// Configured transport: `auto|streamable-http|sse|stdio`.
    pub transport: &'static str,
    /// Transport in use once connected (what `auto` resolved to).
    pub negotiated_transport: Option<&'static str>,
    /// URL for HTTP transports, the command for stdio.
    pub endpoint: String,
    pub state: DiscoveryState,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub next_retry_at: Option<DateTime<Utc>>,
    /// The soonest the server's tools can next be re-listed on a schedule
    /// (a poll, a `ttlMs` refresh, a retry): what the MCP endpoint's
    /// `ttlMs` promises. `null` when no attempt is scheduled yet (starting)
    /// or a change can come at any moment. Changes announced by the
    /// server's own `list_changed` are not scheduled and not counted.
    pub next_refresh_at: Option<DateTime<Utc>>,
    /// Only Streamable HTTP has a separate push stream; stdio and legacy
    /// SSE carry notifications on the transport itself (`disabled` here).
    pub push_stream: PushStreamState,
    /// The push stream's last failure, until it connects again.
    pub push_stream_error: Option<String>,
    pub auth: AuthView,
    pub tool_count: usize,
    /// Whether the tools shown are last-known ones from before a failure.
    pub stale: bool,
    pub protocol_version: Option<String>,
    /// `serverInfo`, clipped, shared with the upstream (not a copy per view).
    pub server_info: Option<std::sync::Arc<serde_json::Value>>,
    /// Why prompts or resources are not listed (failed, timed out, over a
    /// cap) while the tools are fine; None when they are (or not offered).
    pub listing_warning: Option<String>,
    /// The cache hints of the last listing (2026-07-28 servers; `null` for
    /// a 2025 one, which sends none).
    pub cache: Option<CacheView>,
    /// `invalid_tools` and `name_warnings` (flattened into the view).
    #[serde(flatten)]
    pub tool_report: std::sync::Arc<crate::tools::ToolReport>,
    /// Increments each time the server is (re)started by a config change.
    pub generation: u64,
    /// Set once the first discovery attempt ended, success or not.
    #[serde(skip)]
    pub first_attempt_done: bool,
    /// The server's `call_timeout` (what the MCP endpoint gives a call).
    #[serde(skip)]
    pub call_timeout: std::time::Duration,
}

/// `cache` of a server's view: what its last listing said about itself.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CacheView {
    /// `ttlMs`, the smallest of all pages and listings (0: none promised).
    pub ttl_ms: u64,
    /// `public` or `private` (`private` if any result said so); `null`
    /// when none stated a known scope.
    pub scope: Option<crate::mcp::cache::CacheScope>,
    /// When the listing goes stale; `null` for a ttl of 0 (no freshness
    /// promised: `poll_interval` alone decides).
    pub fresh_until: Option<DateTime<Utc>>,
}

impl CacheView {
    pub fn new(hint: crate::mcp::cache::CacheHint, received: DateTime<Utc>) -> Self {
        let fresh_until = (hint.ttl_ms > 0)
            .then(|| {
                i64::try_from(hint.ttl_ms)
                    .ok()
                    .and_then(chrono::TimeDelta::try_milliseconds)
                    .and_then(|d| received.checked_add_signed(d))
            })
            .flatten();
        Self {
            ttl_ms: hint.ttl_ms,
            scope: hint.scope,
            fresh_until,
        }
    }
}

/// All servers, in config order. Immutable; replaced on every change.
#[derive(Clone, Debug, Default)]
pub struct ServersSnapshot {
    pub servers: IndexMap<String, ServerView>,
}

impl ServersSnapshot {
    /// True when every server has finished its first discovery attempt.
    pub fn all_attempted(&self) -> bool {
        self.servers.values().all(|s| s.first_attempt_done)
    }
}

/// How `/v1/servers`, `check` and `probe` show where a server is, without
/// anything that may be a secret: an HTTP URL through
/// [`crate::mcp::error::redact_url`] (scheme, host, port and path; no user
/// info, the query as `?…`), a stdio server as its program and the number
/// of its arguments (`npx (+3 args)`): arguments, `env` and `cwd` are never
/// shown.
pub fn endpoint_display(endpoint: &discovery_config::Endpoint) -> String {
    match endpoint {
        discovery_config::Endpoint::Http { url, .. } => crate::mcp::error::redact_url(url),
        discovery_config::Endpoint::Stdio { command, args, .. } => {
            stdio_display(command, args.len())
        }
    }
}

/// `program (+N args)`; see [`program_label`] for the program.
pub fn stdio_display(command: &str, args: usize) -> String {
    let program = program_label(command);
    match args {
        0 => program,
        1 => format!("{program} (+1 arg)"),
        n => format!("{program} (+{n} args)"),
    }
}

/// A stdio server's program as configured (its path is where it lives, not
/// a secret), cut at the first whitespace: a whole command line written into
/// `command` by mistake would otherwise show its arguments.
pub fn program_label(command: &str) -> String {
    let command = command.trim();
    match command.find(char::is_whitespace) {
        Some(at) => format!("{}…", &command[..at]),
        None => command.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use discovery_config::{Endpoint, TransportKind};
    use indexmap::IndexMap;

    #[test]
    fn endpoints_are_shown_without_secrets() {
        let http = Endpoint::Http {
            url: "https://user:pw-secret@mcp.example.com:8443/v1/mcp?api_key=q-secret#frag"
                .parse()
                .unwrap(),
            transport: TransportKind::Auto,
        };
        assert_eq!(
            endpoint_display(&http),
            "https://mcp.example.com:8443/v1/mcp?…"
        );
        let stdio = |command: &str, args: &[&str]| Endpoint::Stdio {
            command: command.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: IndexMap::new(),
            env_inherit: false,
            cwd: None,
        };
        assert_eq!(
            endpoint_display(&stdio("npx", &["-y", "pkg", "--token=a-secret"])),
            "npx (+3 args)"
        );
        assert_eq!(
            endpoint_display(&stdio("/usr/bin/srv", &["x"])),
            "/usr/bin/srv (+1 arg)"
        );
        assert_eq!(endpoint_display(&stdio("node", &[])), "node");
        assert_eq!(
            endpoint_display(&stdio("npx -y pkg --password hunter2", &[])),
            "npx…"
        );
    }
}
