//! Validated configuration. Actors only ever see these types.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use url::Url;

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: AdminConfig,
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub discovery: DiscoverySettings,
    /// `discovery.max_concurrent_attempts`: discovery attempts (connect,
    /// handshake, listings) in flight at once across every server. Global
    /// only, so it is not in [`DiscoverySettings`] (each server's copy):
    /// changing it restarts no server.
    pub max_concurrent_attempts: u32,
    pub catalog: CatalogSettings,
    pub mcp: McpSettings,
    /// Curated subsets of the catalog (`/mcp/{name}`), in file order. Their
    /// names never clash with a configured server's.
    pub views: IndexMap<ServerName, ViewSpec>,
    /// Upstream servers by name, in file order.
    pub servers: IndexMap<ServerName, ServerSpec>,
    /// The file this came from, if any (None: embedded defaults).
    pub source: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct AdminConfig {
    /// Write keys (a write key also reads). Empty: writes are refused, or
    /// taken from loopback peers with `allow_loopback_writes`.
    pub api_keys: Vec<Secret>,
    /// Keys that only read (`/v1/tools`, `/v1/servers`) when `protect_reads`.
    pub read_keys: Vec<Secret>,
    pub protect_reads: bool,
    /// With no `api_keys`: accept writes from loopback peers without a key
    /// (a local trial). Never combined with keys (validation refuses it).
    pub allow_loopback_writes: bool,
    /// Whether a registration over the API may define a stdio server (a
    /// command this process starts). Validated to imply `api_keys`.
    pub allow_stdio_registration: bool,
}

/// Who may talk to the API, by name: see `http.*` in the README.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HttpConfig {
    /// Extra `Host` names, lowercase, each `host` (any port) or `host:port`.
    pub allowed_hosts: Vec<String>,
    /// Web origins whose requests are served, normalised as browsers send
    /// them (`https://ui.example.com`, default port left out).
    pub allowed_origins: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct StoreConfig {
    /// `sqlite://...` or `postgres://...`; None: the default next to the config.
    pub url: Option<Secret>,
    /// Key that encrypts stored entries at rest; None: stored in clear. When
    /// set, [`parse_encryption_key`] accepts it (checked at load).
    pub encryption_key: Option<Secret>,
}

/// Length in bytes of `store.encryption_key`.
pub const ENCRYPTION_KEY_LEN: usize = 32;

/// `store.encryption_key` as key bytes: exactly 32 bytes written as 64
/// hexadecimal digits (either case; surrounding whitespace ignored), as
/// `openssl rand -hex 32` prints them. No passphrase and no KDF: the key is
/// used as given, so it must come from a random source. The error never
/// repeats the value.
pub fn parse_encryption_key(text: &str) -> Result<[u8; ENCRYPTION_KEY_LEN], String> {
    const HINT: &str = "Hint: generate one with `openssl rand -hex 32`.";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "must not be empty (an unset variable with an empty default is the usual \
             cause). {HINT}"
        ));
    }
    let digits = text.as_bytes();
    if digits.len() != 2 * ENCRYPTION_KEY_LEN {
        return Err(format!(
            "must be {} hexadecimal digits ({ENCRYPTION_KEY_LEN} bytes), found {} characters. \
             {HINT}",
            2 * ENCRYPTION_KEY_LEN,
            text.chars().count()
        ));
    }
    let mut key = [0u8; ENCRYPTION_KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (hex_value(pair[0]), hex_value(pair[1])) else {
            return Err(format!(
                "must be written in hexadecimal digits (0-9, a-f) only. {HINT}"
            ));
        };
        *byte = (hi << 4) | lo;
    }
    Ok(key)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Discovery timing and limits. The global block is the default for every
/// server; a server's effective copy lives in [`ServerSpec::discovery`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DiscoverySettings {
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff: BackoffSettings,
    pub stale_ttl: Duration,
    pub max_response_bytes: u64,
    /// Page cap for `tools/list` (and prompts/resources) pagination.
    pub max_pages: u32,
    /// Most items one listing (all pages of `tools/list`, `prompts/list` or
    /// `resources/list`) may have: what an upstream can make the engine hold.
    pub max_tools: u32,
    /// Most bytes one listing may have, all pages together.
    pub max_listing_bytes: u64,
    /// `/readyz` turns ready after this even if some first attempts hang.
    pub startup_grace: Duration,
    /// A push stream that sends no byte for this long (comments and
    /// priming events count) is considered hung and reconnected.
    pub push_idle_timeout: Duration,
    /// Which MCP era and revision to speak (`protocol:`).
    pub protocol: ProtocolChoice,
    /// The soonest a positive `ttlMs` may bring the next refresh forward
    /// to: a server sending tiny ttls cannot make us poll it in a loop.
    pub min_refresh: Duration,
}

/// `protocol:` — `auto` negotiates the era per upstream (`server/discover`
/// first, `initialize` when the server is a 2025 one); a pinned revision
/// skips the probe: a modern revision speaks only the stateless wire, a
/// 2025 one only the `initialize` handshake (offering that revision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProtocolChoice {
    #[default]
    Auto,
    Pinned(&'static str),
}

impl ProtocolChoice {
    /// The revisions that can be pinned, newest first.
    pub const REVISIONS: &'static [&'static str] = &[
        "2026-07-28",
        "2025-11-25",
        "2025-06-18",
        "2025-03-26",
        "2024-11-05",
    ];

    /// `auto` or one of [`Self::REVISIONS`]; None for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        if text == "auto" {
            return Some(Self::Auto);
        }
        Self::REVISIONS
            .iter()
            .find(|r| **r == text)
            .map(|r| Self::Pinned(r))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Pinned(r) => r,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackoffSettings {
    pub initial: Duration,
    pub max: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogSettings {
    pub separator: String,
}

/// `mcp:` — the MCP endpoint the engine serves. Applied without a restart:
/// the endpoint reads the running config on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpSettings {
    /// Tools per `tools/list` page; 0 = every tool in one page.
    pub page_size: u32,
    /// Longest `ttlMs` an answer promises.
    pub max_ttl: Duration,
    /// Default deadline of a `tools/call`; [`ServerSpec::call_timeout`] is
    /// each server's effective one.
    pub call_timeout: Duration,
    /// Most live 2025 sessions; a new `initialize` beyond it is refused.
    pub max_sessions: u32,
    /// A 2025 session unused for this long is forgotten.
    pub session_idle_timeout: Duration,
    /// `tools/call` in flight per upstream server; as many more wait, the
    /// rest are refused at once.
    pub max_concurrent_calls: u32,
}

impl McpSettings {
    pub const DEFAULT_PAGE_SIZE: u32 = 0;
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_MAX_SESSIONS: u32 = 10_000;
    pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    pub const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 64;
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            page_size: Self::DEFAULT_PAGE_SIZE,
            max_ttl: Self::DEFAULT_MAX_TTL,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            session_idle_timeout: Self::DEFAULT_SESSION_IDLE_TIMEOUT,
            max_concurrent_calls: Self::DEFAULT_MAX_CONCURRENT_CALLS,
        }
    }
}

/// One `views.<name>` entry: which servers, and which of their tools by
/// public name.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewSpec {
    pub name: ServerName,
    /// None: every server (configured or registered).
    pub servers: Option<Vec<ServerName>>,
    /// Globs on public names (`<server><separator><tool>`).
    pub tools: ToolFilter,
}

impl ViewSpec {
    /// Whether the view covers `server` at all.
    pub fn covers(&self, server: &str) -> bool {
        self.servers
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s.as_str() == server))
    }
}

/// Where a server's definition came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerSource {
    Config,
    Api,
}

impl ServerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSource::Config => "config",
            ServerSource::Api => "api",
        }
    }
}

/// One upstream server with its *effective* settings (globals merged in), so
/// `PartialEq` on it is exactly "does this server need a restart".
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSpec {
    pub name: ServerName,
    pub source: ServerSource,
    pub endpoint: Endpoint,
    /// Static headers sent on every HTTP request (values are secrets).
    pub headers: IndexMap<String, Secret>,
    pub auth: AuthConfig,
    pub tools: ToolFilter,
    /// Open the optional GET push stream (Streamable HTTP only).
    pub push: bool,
    pub discovery: DiscoverySettings,
    /// Deadline of a `tools/call` relayed to this server (`call_timeout`,
    /// default `mcp.call_timeout`).
    pub call_timeout: Duration,
}

impl ServerSpec {
    pub fn transport(&self) -> TransportKind {
        match &self.endpoint {
            Endpoint::Http { transport, .. } => *transport,
            Endpoint::Stdio { .. } => TransportKind::Stdio,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    Http {
        url: Url,
        /// Never `Stdio`.
        transport: TransportKind,
    },
    Stdio {
        command: String,
        args: Vec<String>,
        env: IndexMap<String, Secret>,
        /// Start from the service's whole environment instead of the
        /// allowlist (`MCP_DISCOVERY*` variables are dropped either way).
        env_inherit: bool,
        cwd: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Auto,
    StreamableHttp,
    Sse,
    Stdio,
}

impl TransportKind {
    /// The config spelling, also used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Auto => "auto",
            TransportKind::StreamableHttp => "streamable-http",
            TransportKind::Sse => "sse",
            TransportKind::Stdio => "stdio",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum AuthConfig {
    None,
    Bearer { token: Secret },
    Basic { username: String, password: Secret },
    OAuth2(OAuth2Config),
}

impl AuthConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::Bearer { .. } => "bearer",
            AuthConfig::Basic { .. } => "basic",
            AuthConfig::OAuth2(_) => "oauth2",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OAuth2Config {
    /// None: discover it (MCP authorization spec).
    pub token_url: Option<Url>,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub client_auth: ClientAuth,
    pub token_timeout: Duration,
    /// Authorization servers (issuer URLs) a discovered token endpoint may
    /// belong to; empty: any that passes the discovery checks (ADR 0011).
    pub allowed_issuers: Vec<Url>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// allow / deny glob patterns on upstream tool names.
#[derive(Clone)]
pub struct ToolFilter {
    allow: Vec<String>,
    deny: Vec<String>,
    allow_set: globset::GlobSet,
    deny_set: globset::GlobSet,
}

impl ToolFilter {
    /// Compiles the patterns; the error names the first bad pattern.
    pub fn new(allow: Vec<String>, deny: Vec<String>) -> Result<Self, String> {
        fn build(patterns: &[String]) -> Result<globset::GlobSet, String> {
            let mut b = globset::GlobSetBuilder::new();
            for p in patterns {
                let glob = globset::Glob::new(p)
                    .map_err(|e| format!("invalid glob pattern {p:?}: {e}"))?;
                b.add(glob);
            }
            b.build().map_err(|e| e.to_string())
        }
        Ok(Self {
            allow_set: build(&allow)?,
            deny_set: build(&deny)?,
            allow,
            deny,
        })
    }

    /// Everything allowed, nothing denied.
    pub fn allow_all() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            allow_set: globset::GlobSet::empty(),
            deny_set: globset::GlobSet::empty(),
        }
    }

    /// An empty allow list means "all".
    pub fn allows(&self, tool: &str) -> bool {
        (self.allow.is_empty() || self.allow_set.is_match(tool)) && !self.deny_set.is_match(tool)
    }

    pub fn allow_patterns(&self) -> &[String] {
        &self.allow
    }

    pub fn deny_patterns(&self) -> &[String] {
        &self.deny
    }
}

impl Default for ToolFilter {
    fn default() -> Self {
        Self::allow_all()
    }
}

impl PartialEq for ToolFilter {
    fn eq(&self, other: &Self) -> bool {
        self.allow == other.allow && self.deny == other.deny
    }
}

impl fmt::Debug for ToolFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolFilter")
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .finish()
    }
}

/// A string that must never be logged or returned: `Debug` and `Display`
/// print `[redacted]`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A server name: `[A-Za-z0-9_-]+`, not containing the catalog separator.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    pub fn parse(name: &str, separator: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("server name must not be empty".into());
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "server name {name:?} contains {bad:?}; only letters, digits, '_' and '-' are allowed"
            ));
        }
        if !separator.is_empty() && name.contains(separator) {
            return Err(format!(
                "server name {name:?} contains the catalog separator {separator:?}"
            ));
        }
        if let Some(end) = separator_prefix_at_end(name, separator) {
            return Err(format!(
                "server name {name:?} ends with {end:?}, the start of the catalog separator \
                 {separator:?}, so its public tool names could equal another server's (with \
                 \"__\", server \"a_\" with tool \"x\" and server \"a\" with tool \"_x\" are \
                 both \"a___x\"). Hint: rename the server so it does not end with {end:?}"
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The longest non-empty proper prefix of `separator` that `name` ends
/// with, if any. With such an ending, `<name><separator><tool>` can equal
/// `<shorter><separator><other tool>` for the server name `name` minus that
/// ending; names that contain the whole separator are refused already, so
/// refusing these makes public names unique by construction.
fn separator_prefix_at_end<'a>(name: &str, separator: &'a str) -> Option<&'a str> {
    separator
        .char_indices()
        .skip(1)
        .map(|(i, _)| &separator[..i])
        .filter(|prefix| name.ends_with(prefix))
        .last()
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ServerName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl DiscoverySettings {
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(300);
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_STALE_TTL: Duration = Duration::from_secs(600);
    pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
    pub const DEFAULT_MAX_PAGES: u32 = 100;
    pub const DEFAULT_MAX_TOOLS: u32 = 10_000;
    pub const DEFAULT_MAX_LISTING_BYTES: u64 = 32 * 1024 * 1024;
    pub const DEFAULT_STARTUP_GRACE: Duration = Duration::from_secs(30);
    pub const DEFAULT_PUSH_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(1);
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            backoff: BackoffSettings::default(),
            stale_ttl: Self::DEFAULT_STALE_TTL,
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            max_pages: Self::DEFAULT_MAX_PAGES,
            max_tools: Self::DEFAULT_MAX_TOOLS,
            max_listing_bytes: Self::DEFAULT_MAX_LISTING_BYTES,
            startup_grace: Self::DEFAULT_STARTUP_GRACE,
            push_idle_timeout: Self::DEFAULT_PUSH_IDLE_TIMEOUT,
            protocol: ProtocolChoice::Auto,
            min_refresh: Self::DEFAULT_MIN_REFRESH,
        }
    }
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            separator: "__".into(),
        }
    }
}

impl Config {
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:8080";
    pub const DEFAULT_MAX_CONCURRENT_ATTEMPTS: u32 = 256;

    /// The embedded defaults: no servers, listen on 127.0.0.1:8080.
    pub fn embedded_defaults() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: AdminConfig::default(),
            http: HttpConfig::default(),
            store: StoreConfig::default(),
            discovery: DiscoverySettings::default(),
            max_concurrent_attempts: Self::DEFAULT_MAX_CONCURRENT_ATTEMPTS,
            catalog: CatalogSettings::default(),
            mcp: McpSettings::default(),
            views: IndexMap::new(),
            servers: IndexMap::new(),
            source: None,
        }
    }
}

/// Shortest `admin.api_keys` / `admin.read_keys` entry accepted: a guessable
/// key is no key.
pub const MIN_API_KEY_LEN: usize = 16;

/// Splits `host[:port]` (`[v6]` in brackets) as it appears in a `Host`
/// header; None when it is not of that shape. The name is returned as
/// written (callers lowercase).
pub fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if text.starts_with('[') {
        let end = text.find(']')?;
        let (name, rest) = text.split_at(end + 1);
        match rest {
            "" => (name, None),
            _ => (name, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        }
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty() && name.chars().all(ok_char)
    };
    if !name_ok {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((name, port))
}

/// An `http.allowed_hosts` entry, lowercased: `name` (any port) or
/// `name:port`, the way clients write the `Host` header.
pub fn normalize_host(text: &str) -> Result<String, String> {
    let host = text.trim().to_ascii_lowercase();
    if host.contains("://") || host.contains('/') {
        return Err(format!(
            "{host:?} is not a host name. Hint: write the name clients put in the Host header, \
             e.g. mcp.example.com or mcp.example.com:8443, without a scheme or a path"
        ));
    }
    match split_host_port(&host) {
        Some(_) => Ok(host),
        None => Err(format!(
            "{host:?} is not a host name with an optional port (IPv6 addresses in brackets, \
             e.g. [fd00::1]:8080)"
        )),
    }
}

/// An `Origin` as browsers send it: `scheme://host[:port]`, host
/// lowercased, the scheme's default port left out. Used for the
/// `http.allowed_origins` entries and for the requests' `Origin` alike, so
/// the comparison is exact. `null` and anything with a path, user info,
/// query or fragment is refused.
pub fn normalize_origin(text: &str) -> Result<String, String> {
    const HINT: &str = "Hint: write the origin of the web page, e.g. https://ui.example.com or \
                        http://localhost:3000";
    let text = text.trim();
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not an origin ({e}). {HINT}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{text:?}: the scheme must be http or https. {HINT}"
        ));
    }
    let bare = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && !text.ends_with('/')
        && url.query().is_none()
        && url.fragment().is_none();
    if !bare {
        return Err(format!(
            "{text:?} has more than scheme://host[:port] (no path, user, query or trailing \
             slash in an origin). {HINT}"
        ));
    }
    Ok(url.origin().ascii_serialization())
}
