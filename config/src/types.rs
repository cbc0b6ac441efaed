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
    pub store: StoreConfig,
    pub discovery: DiscoverySettings,
    pub catalog: CatalogSettings,
    /// Upstream servers by name, in file order.
    pub servers: IndexMap<ServerName, ServerSpec>,
    /// The file this came from, if any (None: embedded defaults).
    pub source: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct AdminConfig {
    /// Empty: no key required (issue 5 restricts writes to loopback then).
    pub api_keys: Vec<Secret>,
    pub protect_reads: bool,
    /// Whether a registration over the API may define a stdio server (a
    /// command this process starts). Validated to imply `api_keys`.
    pub allow_stdio_registration: bool,
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
    /// `/readyz` turns ready after this even if some first attempts hang.
    pub startup_grace: Duration,
    /// A push stream that sends no byte for this long (comments and
    /// priming events count) is considered hung and reconnected.
    pub push_idle_timeout: Duration,
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
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
    pub const DEFAULT_STARTUP_GRACE: Duration = Duration::from_secs(30);
    pub const DEFAULT_PUSH_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
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
            startup_grace: Self::DEFAULT_STARTUP_GRACE,
            push_idle_timeout: Self::DEFAULT_PUSH_IDLE_TIMEOUT,
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

    /// The embedded defaults: no servers, listen on 127.0.0.1:8080.
    pub fn embedded_defaults() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: AdminConfig::default(),
            store: StoreConfig::default(),
            discovery: DiscoverySettings::default(),
            catalog: CatalogSettings::default(),
            servers: IndexMap::new(),
            source: None,
        }
    }
}
