//! Raw -> validated, collecting every problem at once (Vector's
//! `compile()`): one bad server must not hide another's problems, so each
//! section and each server entry is deserialized on its own, and a bad value
//! is reported, dropped, and the rest checked again.
//!
//! [`server_from_value`] is the single validation path for one server, shared
//! by the config file and the REST API.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use url::Url;

use crate::schema::RawHttp;
use crate::schema::{
    Count, HumanDuration, RawAdmin, RawAuth, RawAuthType, RawClientAuth, RawConfig, RawDiscovery,
    RawMcp, RawServer, RawStore, RawToolFilter, RawTransport, RawView, Text,
};
use crate::tree;
use crate::types::{normalize_host, normalize_origin, HttpConfig, ProtocolChoice, MIN_API_KEY_LEN};
use crate::types::{
    parse_encryption_key, AdminConfig, AuthConfig, BackoffSettings, CatalogSettings, ClientAuth,
    Config, DiscoverySettings, Endpoint, McpSettings, OAuth2Config, Secret, ServerName,
    ServerSource, ServerSpec, StoreConfig, ToolFilter, TransportKind, ViewSpec,
};

/// One problem in a config: where (file, key path) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// Dotted key path, e.g. `servers.search.url`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: Option<&Path>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// `file: path: message`, leaving out the parts that are empty.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found, at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration error(s):\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single problem.
    pub fn one(file: Option<&Path>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError::new(file, path, message)])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Validates a whole config given as a generic tree (already interpolated
/// and with overrides applied; see [`crate::load_str`] for the usual way in).
pub fn validate_value(value: Value, file: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut report = Report::new(file);
    let mut config = build_config(value, &mut report);
    config.source = file.map(Path::to_path_buf);
    report.finish(Some(config))
}

/// Validates one server entry (the value under `servers.<name>`, or a REST
/// registration body) against the effective global `discovery` settings and
/// catalog `separator`. Paths in errors read `servers.<name>.<key>`.
///
/// A `name` key in `value` is accepted (the REST body carries one) if it
/// equals `name`. No `${VAR}` interpolation happens here: a value that came
/// over the API must never be able to read the service's environment.
pub fn server_from_value(
    name: &str,
    mut value: Value,
    defaults: &ServerDefaults<'_>,
    separator: &str,
    source: ServerSource,
) -> Result<ServerSpec, ConfigErrors> {
    let mut report = Report::new(None);
    tree::strip_nulls(&mut value);
    if let Value::Object(map) = &mut value {
        if let Some(given) = map.shift_remove("name") {
            if given.as_str() != Some(name) {
                report.error(
                    tree::join(&server_path(name), "name"),
                    format!("does not match the server name {name:?}"),
                );
            }
        }
    }
    let spec = server(name, value, defaults, separator, source, &mut report);
    report.finish(spec)
}

/// Deserialization passes per entry before giving up; each pass removes one
/// bad node, so this only bounds a pathological file.
const MAX_PASSES: usize = 256;

/// Collects problems. Knows which paths were dropped (a value of the wrong
/// type, an unset variable) so that their knock-on effects ("url: required"
/// after a bad url was dropped) are not reported as news, and which paths an
/// environment override set, so a message can say where a value came from.
#[derive(Debug)]
pub(crate) struct Report {
    file: Option<PathBuf>,
    errors: Vec<ConfigError>,
    dropped: Vec<String>,
    origins: Vec<(String, String)>,
}

impl Report {
    pub(crate) fn new(file: Option<&Path>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            errors: Vec::new(),
            dropped: Vec::new(),
            origins: Vec::new(),
        }
    }

    /// Records a problem, unless it is a consequence of a dropped value.
    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.dropped.iter().any(|d| is_within(&path, d)) {
            return;
        }
        let mut message = message.into();
        if let Some((_, var)) = self.origins.iter().find(|(p, _)| is_within(&path, p)) {
            message.push_str(&format!(" (set by environment variable {var})"));
        }
        self.errors.push(ConfigError {
            file: self.file.clone(),
            path,
            message,
        });
    }

    /// Records a problem with an environment variable, not with the file.
    pub(crate) fn env_error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(None, path, message));
    }

    /// True if a value at, under or above `path` was dropped.
    fn touches(&self, path: &str) -> bool {
        self.dropped
            .iter()
            .any(|d| is_within(path, d) || is_within(d, path))
    }

    /// Marks a path whose value was removed after being reported.
    pub(crate) fn drop_path(&mut self, path: impl Into<String>) {
        self.dropped.push(path.into());
    }

    /// Remembers that `path` was set by the environment variable `var`.
    pub(crate) fn origin(&mut self, path: String, var: String) {
        self.origins.push((path, var));
    }

    fn count(&self) -> usize {
        self.errors.len()
    }

    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ if self.errors.is_empty() => Err(ConfigErrors::one(
                self.file.as_deref(),
                "",
                "invalid configuration",
            )),
            _ => Err(ConfigErrors(self.errors)),
        }
    }
}

/// True if `path` is `base` or lies under it.
fn is_within(path: &str, base: &str) -> bool {
    base.is_empty()
        || path == base
        || (path.starts_with(base) && matches!(path.as_bytes().get(base.len()), Some(b'.' | b'[')))
}

fn server_path(name: &str) -> String {
    tree::join("servers", name)
}

/// Deserializes `T` from `value`; on each error, reports it, drops the bad
/// node and tries again, so every bad key of the entry is reported. Unknown
/// keys are dropped without marking anything: nothing depends on them.
fn deserialize_all<T: DeserializeOwned + Default>(
    mut value: Value,
    base: &str,
    r: &mut Report,
) -> T {
    for _ in 0..MAX_PASSES {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(parsed) => return parsed,
            Err(err) => err,
        };
        let segs = tree::from_serde_path(err.path());
        let path = tree::render(base, &segs);
        let message = tidy_serde_message(&err.inner().to_string());
        let unknown_key = message.starts_with("unknown key");
        r.error(path, message);
        match tree::remove(&mut value, &segs) {
            Some(len) => {
                if !unknown_key {
                    r.drop_path(tree::render(base, &segs[..len]));
                }
            }
            None => {
                r.drop_path(base);
                return T::default();
            }
        }
    }
    r.error(base, "too many problems here; fix the ones above first");
    r.drop_path(base);
    T::default()
}

/// serde's wording, in the words of a config file.
fn tidy_serde_message(message: &str) -> String {
    let message = if let Some(rest) = message.strip_prefix("unknown field ") {
        format!(
            "unknown key {}",
            rest.replacen(", expected", "; expected", 1)
        )
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        format!(
            "unknown value {}",
            rest.replacen(", expected", "; expected", 1)
        )
    } else {
        message.to_owned()
    };
    message
        .replace("expected a sequence", "expected a list")
        .replace("invalid type: sequence", "invalid type: list")
}

/// A section that serde would also accept as a list (derived structs take
/// sequences) must be a map; report and drop it otherwise.
fn require_map(map: &mut Map<String, Value>, key: &str, path: &str, r: &mut Report) {
    if let Some(value) = map.get(key) {
        if !value.is_object() {
            r.error(path, format!("expected a map, found {}", tree::kind(value)));
            r.drop_path(path);
            map.shift_remove(key);
        }
    }
}

/// The whole config from a tree. Problems go to `r`; the returned value is
/// only meaningful if none were found.
pub(crate) fn build_config(mut value: Value, r: &mut Report) -> Config {
    let defaults = Config::embedded_defaults();
    tree::strip_nulls(&mut value);
    let mut top = match value {
        Value::Object(top) => top,
        other => {
            r.error(
                "",
                format!(
                    "expected a map of settings at the top level, found {}",
                    tree::kind(&other)
                ),
            );
            return defaults;
        }
    };
    let servers_value = top.shift_remove("servers");
    let views_value = top.shift_remove("views");
    for section in ["admin", "http", "store", "discovery", "catalog", "mcp"] {
        require_map(&mut top, section, section, r);
    }
    if let Some(Value::Object(discovery)) = top.get_mut("discovery") {
        require_map(discovery, "backoff", "discovery.backoff", r);
    }
    let raw: RawConfig = deserialize_all(Value::Object(top), "", r);

    let listen = match raw.listen {
        None => defaults.listen,
        Some(Text(text)) => text.trim().parse::<SocketAddr>().unwrap_or_else(|_| {
            r.error(
                "listen",
                format!(
                    "{text:?} is not an IP:port socket address, e.g. 127.0.0.1:8080 or [::]:8080 \
                     (host names such as localhost are not accepted)"
                ),
            );
            defaults.listen
        }),
    };
    let admin = admin(raw.admin.unwrap_or_default(), r);
    let http = http(raw.http.unwrap_or_default(), r);
    let store = store(raw.store.unwrap_or_default(), r);
    let raw_discovery = raw.discovery.unwrap_or_default();
    let max_concurrent_attempts = match raw_discovery.max_concurrent_attempts {
        Some(Count(0)) => {
            r.error(
                "discovery.max_concurrent_attempts",
                format!(
                    "must be at least 1: it is how many discovery attempts may be in flight at \
                     once across every server (default {})",
                    Config::DEFAULT_MAX_CONCURRENT_ATTEMPTS
                ),
            );
            Config::DEFAULT_MAX_CONCURRENT_ATTEMPTS
        }
        Some(Count(n)) => n,
        None => Config::DEFAULT_MAX_CONCURRENT_ATTEMPTS,
    };
    let discovery = discovery(raw_discovery, r);
    let catalog = catalog(raw.catalog.map(|c| c.separator), r);
    let mcp = mcp(raw.mcp.unwrap_or_default(), r);

    let mut servers = IndexMap::new();
    match servers_value {
        None => {}
        Some(Value::Object(entries)) => {
            for (name, entry) in entries {
                let spec = server(
                    &name,
                    entry,
                    &ServerDefaults {
                        discovery: &discovery,
                        call_timeout: mcp.call_timeout,
                    },
                    &catalog.separator,
                    ServerSource::Config,
                    r,
                );
                if let Some(spec) = spec {
                    servers.insert(spec.name.clone(), spec);
                }
            }
        }
        Some(other) => r.error(
            "servers",
            format!(
                "expected a map of server name to settings, found {}",
                tree::kind(&other)
            ),
        ),
    }

    let views = views(views_value, &servers, &catalog.separator, r);

    Config {
        listen,
        admin,
        http,
        store,
        discovery,
        max_concurrent_attempts,
        catalog,
        mcp,
        views,
        servers,
        source: None,
    }
}

/// `mcp:` — the endpoint's limits.
fn mcp(raw: RawMcp, r: &mut Report) -> McpSettings {
    let d = McpSettings::default();
    let count =
        |r: &mut Report, path: &str, value: Option<Count>, default: u32, min: u32| match value {
            Some(Count(n)) if n < min => {
                r.error(path, format!("must be at least {min}"));
                default
            }
            Some(Count(n)) => n,
            None => default,
        };
    McpSettings {
        page_size: count(r, "mcp.page_size", raw.page_size, d.page_size, 0),
        max_ttl: duration(r, "mcp.max_ttl", raw.max_ttl, d.max_ttl, MAX_TTL),
        call_timeout: duration(
            r,
            "mcp.call_timeout",
            raw.call_timeout,
            d.call_timeout,
            CALL_TIMEOUT,
        ),
        max_sessions: count(r, "mcp.max_sessions", raw.max_sessions, d.max_sessions, 1),
        session_idle_timeout: duration(
            r,
            "mcp.session_idle_timeout",
            raw.session_idle_timeout,
            d.session_idle_timeout,
            SESSION_IDLE_TIMEOUT,
        ),
        max_concurrent_calls: count(
            r,
            "mcp.max_concurrent_calls",
            raw.max_concurrent_calls,
            d.max_concurrent_calls,
            1,
        ),
    }
}

/// `views:` — names share the server name space; listed servers must be
/// configured ones or look like names a registration could take (a view
/// may show servers registered through the API).
fn views(
    value: Option<Value>,
    servers: &IndexMap<ServerName, ServerSpec>,
    separator: &str,
    r: &mut Report,
) -> IndexMap<ServerName, ViewSpec> {
    let mut out = IndexMap::new();
    let entries = match value {
        None => return out,
        Some(Value::Object(entries)) => entries,
        Some(other) => {
            r.error(
                "views",
                format!(
                    "expected a map of view name to settings, found {}",
                    tree::kind(&other)
                ),
            );
            return out;
        }
    };
    for (name, entry) in entries {
        let base = tree::join("views", &name);
        let before = r.count();
        let view_name = match ServerName::parse(&name, separator) {
            Ok(n) => Some(n),
            Err(e) => {
                r.error(&base, e.replacen("server name", "view name", 1));
                None
            }
        };
        if servers.contains_key(name.as_str()) {
            r.error(
                &base,
                format!(
                    "a server is also named {name:?}; views and servers share one name space                      (both are served at /mcp/{{name}}). Hint: rename the view"
                ),
            );
        }
        let mut map = match entry {
            Value::Object(map) => map,
            other => {
                r.error(
                    &base,
                    format!(
                        "expected a map of view settings, found {}",
                        tree::kind(&other)
                    ),
                );
                continue;
            }
        };
        require_map(&mut map, "tools", &tree::join(&base, "tools"), r);
        let raw: RawView = deserialize_all(Value::Object(map), &base, r);
        let listed = raw.servers.map(|list| {
            let mut names = Vec::new();
            for (i, Text(server)) in list.into_iter().enumerate() {
                match ServerName::parse(&server, separator) {
                    Ok(n) if names.contains(&n) => r.error(
                        format!("{base}.servers[{i}]"),
                        format!("{server:?} is listed twice"),
                    ),
                    Ok(n) => names.push(n),
                    Err(e) => r.error(format!("{base}.servers[{i}]"), e),
                }
            }
            names
        });
        let tools = tool_filter(raw.tools.unwrap_or_default(), &base, r);
        if r.count() > before {
            continue;
        }
        if let Some(name) = view_name {
            out.insert(
                name.clone(),
                ViewSpec {
                    name,
                    servers: listed,
                    tools,
                },
            );
        }
    }
    out
}

fn admin(raw: RawAdmin, r: &mut Report) -> AdminConfig {
    let mut rejected = r.touches("admin.api_keys") || r.touches("admin.read_keys");
    let api_keys = keys(raw.api_keys, "admin.api_keys", &mut rejected, r);
    let read_keys = keys(raw.read_keys, "admin.read_keys", &mut rejected, r);
    let protect_reads = raw.protect_reads.is_some_and(|f| f.0);
    let allow_loopback_writes = raw.allow_loopback_writes.is_some_and(|f| f.0);
    // After a rejected key, "no keys" is a consequence, not news.
    if protect_reads && api_keys.is_empty() && read_keys.is_empty() && !rejected {
        r.error(
            "admin.protect_reads",
            "needs at least one key in admin.api_keys or admin.read_keys, or nobody could read",
        );
    }
    if !read_keys.is_empty() && !protect_reads {
        r.error(
            "admin.read_keys",
            "has no effect while reads are open. Hint: set admin.protect_reads: true, or remove \
             the read keys",
        );
    }
    if allow_loopback_writes && (!api_keys.is_empty() || r.touches("admin.api_keys")) {
        r.error(
            "admin.allow_loopback_writes",
            "cannot be combined with admin.api_keys (with keys, every write needs one). Hint: \
             remove one of the two",
        );
    }
    let allow_stdio_registration =
        stdio_registration(&raw.allow_stdio_registration, &api_keys, rejected, r);
    AdminConfig {
        api_keys,
        read_keys,
        protect_reads,
        allow_loopback_writes,
        allow_stdio_registration,
    }
}

/// `admin.allow_stdio_registration`: a registered stdio server is a process
/// started on request, so it is never open to keyless callers.
fn stdio_registration(
    raw: &Option<crate::schema::Flag>,
    keys: &[Secret],
    rejected: bool,
    r: &mut Report,
) -> bool {
    let allowed = raw.as_ref().is_some_and(|f| f.0);
    if allowed && keys.is_empty() && !rejected {
        r.error(
            "admin.allow_stdio_registration",
            "needs at least one key in admin.api_keys: a stdio registration starts a process on \
             this host, which must never be open to any client that can reach the API. Hint: \
             set admin.api_keys, or remove allow_stdio_registration",
        );
    }
    allowed
}

/// One list of API keys: trimmed, never empty, never short. An error names
/// the key by its index and never repeats it.
fn keys(raw: Option<Vec<Text>>, path: &str, rejected: &mut bool, r: &mut Report) -> Vec<Secret> {
    let mut out = Vec::new();
    for (i, Text(key)) in raw.unwrap_or_default().into_iter().enumerate() {
        let key = key.trim();
        let len = key.chars().count();
        if len == 0 {
            *rejected = true;
            r.error(
                format!("{path}[{i}]"),
                "an API key must not be empty (an unset variable with an empty default is the \
                 usual cause)",
            );
        } else if len < MIN_API_KEY_LEN {
            *rejected = true;
            r.error(
                format!("{path}[{i}]"),
                format!(
                    "is {len} characters long; an API key needs at least {MIN_API_KEY_LEN}. \
                     Hint: generate one with `openssl rand -hex 32`"
                ),
            );
        } else {
            out.push(Secret::new(key));
        }
    }
    out
}

/// `http.allowed_hosts` and `http.allowed_origins`, normalised for exact
/// comparison with what clients send.
fn http(raw: RawHttp, r: &mut Report) -> HttpConfig {
    let mut config = HttpConfig::default();
    for (i, Text(host)) in raw
        .allowed_hosts
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match normalize_host(&host) {
            Ok(host) => config.allowed_hosts.push(host),
            Err(message) => r.error(format!("http.allowed_hosts[{i}]"), message),
        }
    }
    for (i, Text(origin)) in raw
        .allowed_origins
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match normalize_origin(&origin) {
            Ok(origin) => config.allowed_origins.push(origin),
            Err(message) => r.error(format!("http.allowed_origins[{i}]"), message),
        }
    }
    config
}

fn store(raw: RawStore, r: &mut Report) -> StoreConfig {
    let url = raw.url.and_then(|Text(url)| {
        // Never echo the URL: it may carry a database password.
        let lower = url.trim().to_ascii_lowercase();
        let known = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| lower.starts_with(scheme));
        if known {
            Some(Secret::new(url.trim()))
        } else {
            r.error(
                "store.url",
                "unsupported store URL; use sqlite://PATH or postgres://USER@HOST/DB",
            );
            None
        }
    });
    // Never echo the key, not even a part of it.
    let encryption_key =
        raw.encryption_key
            .and_then(|Text(key)| match parse_encryption_key(&key) {
                Ok(_) => Some(Secret::new(key.trim())),
                Err(message) => {
                    r.error("store.encryption_key", message);
                    None
                }
            });
    StoreConfig {
        url,
        encryption_key,
    }
}

/// The accepted range of a duration setting (README, configuration table).
/// Bounds keep untrusted or mistyped values from turning into a busy loop
/// (a 1 ms `poll_interval`) or a hang (a 100-year timeout), and keep every
/// derived computation (jitter, backoff, deadlines) far from overflow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Range(pub Duration, pub Duration);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const HOUR: u64 = 3600 * 1000;
const DAY: u64 = 24 * HOUR;

pub(crate) const POLL_INTERVAL: Range = Range(ms(100), ms(7 * DAY));
pub(crate) const REQUEST_TIMEOUT: Range = Range(ms(100), ms(HOUR));
pub(crate) const CONNECT_TIMEOUT: Range = Range(ms(100), ms(HOUR));
pub(crate) const BACKOFF_INITIAL: Range = Range(ms(10), ms(HOUR));
pub(crate) const BACKOFF_MAX: Range = Range(ms(100), ms(DAY));
pub(crate) const STALE_TTL: Range = Range(ms(0), ms(30 * DAY));
pub(crate) const STARTUP_GRACE: Range = Range(ms(0), ms(HOUR));
pub(crate) const PUSH_IDLE_TIMEOUT: Range = Range(ms(100), ms(DAY));
pub(crate) const MIN_REFRESH: Range = Range(ms(100), ms(DAY));
pub(crate) const MAX_TTL: Range = Range(ms(0), ms(DAY));
pub(crate) const CALL_TIMEOUT: Range = Range(ms(100), ms(HOUR));
pub(crate) const SESSION_IDLE_TIMEOUT: Range = Range(ms(1000), ms(7 * DAY));
pub(crate) const TOKEN_TIMEOUT: Range = Range(ms(100), ms(10 * 60 * 1000));

/// A duration from the file or its default; outside `range` it is an error
/// (and the default is used so that validation goes on).
fn duration(
    r: &mut Report,
    path: &str,
    value: Option<HumanDuration>,
    default: Duration,
    range: Range,
) -> Duration {
    let Range(min, max) = range;
    match value {
        None => default,
        Some(HumanDuration(d)) if d < min || d > max => {
            let shown = |d: Duration| {
                if d.is_zero() {
                    "0s".to_owned()
                } else {
                    humantime::format_duration(d).to_string()
                }
            };
            r.error(
                path,
                format!(
                    "{} is out of range. Hint: use a duration from {} to {}",
                    shown(d),
                    shown(min),
                    shown(max)
                ),
            );
            default
        }
        Some(HumanDuration(d)) => d,
    }
}

fn discovery(raw: RawDiscovery, r: &mut Report) -> DiscoverySettings {
    let d = DiscoverySettings::default();
    let backoff = raw.backoff.unwrap_or_default();
    let backoff = BackoffSettings {
        initial: duration(
            r,
            "discovery.backoff.initial",
            backoff.initial,
            d.backoff.initial,
            BACKOFF_INITIAL,
        ),
        max: duration(
            r,
            "discovery.backoff.max",
            backoff.max,
            d.backoff.max,
            BACKOFF_MAX,
        ),
    };
    if backoff.initial > backoff.max {
        r.error(
            "discovery.backoff",
            format!(
                "initial ({}) must not be longer than max ({}); the defaults are 500ms and 60s",
                humantime::format_duration(backoff.initial),
                humantime::format_duration(backoff.max)
            ),
        );
    }
    let max_response_bytes = match raw.max_response_bytes {
        Some(bytes) if bytes.0 == 0 => {
            r.error("discovery.max_response_bytes", "must be greater than zero");
            d.max_response_bytes
        }
        Some(bytes) => bytes.0,
        None => d.max_response_bytes,
    };
    let max_pages = match raw.max_pages {
        Some(pages) if pages.0 == 0 => {
            r.error("discovery.max_pages", "must be at least 1");
            d.max_pages
        }
        Some(pages) => pages.0,
        None => d.max_pages,
    };
    let (max_tools, max_listing_bytes) = listing_caps(raw.max_tools, raw.max_listing_bytes, &d, r);
    DiscoverySettings {
        poll_interval: duration(
            r,
            "discovery.poll_interval",
            raw.poll_interval,
            d.poll_interval,
            POLL_INTERVAL,
        ),
        request_timeout: duration(
            r,
            "discovery.request_timeout",
            raw.request_timeout,
            d.request_timeout,
            REQUEST_TIMEOUT,
        ),
        connect_timeout: duration(
            r,
            "discovery.connect_timeout",
            raw.connect_timeout,
            d.connect_timeout,
            CONNECT_TIMEOUT,
        ),
        backoff,
        stale_ttl: duration(
            r,
            "discovery.stale_ttl",
            raw.stale_ttl,
            d.stale_ttl,
            STALE_TTL,
        ),
        max_response_bytes,
        max_pages,
        max_tools,
        max_listing_bytes,
        startup_grace: duration(
            r,
            "discovery.startup_grace",
            raw.startup_grace,
            d.startup_grace,
            STARTUP_GRACE,
        ),
        push_idle_timeout: duration(
            r,
            "discovery.push_idle_timeout",
            raw.push_idle_timeout,
            d.push_idle_timeout,
            PUSH_IDLE_TIMEOUT,
        ),
        protocol: protocol(r, "discovery.protocol", raw.protocol, d.protocol),
        min_refresh: duration(
            r,
            "discovery.min_refresh",
            raw.min_refresh,
            d.min_refresh,
            MIN_REFRESH,
        ),
    }
}

/// `protocol:` (global and per server): `auto` or a known revision.
fn protocol(
    r: &mut Report,
    path: &str,
    raw: Option<crate::schema::Text>,
    default: ProtocolChoice,
) -> ProtocolChoice {
    let Some(text) = raw else {
        return default;
    };
    match ProtocolChoice::parse(text.as_str().trim()) {
        Some(choice) => choice,
        None => {
            r.error(
                path,
                format!(
                    "`{}` is not a protocol choice. Hint: use `auto` (the default) or one of {}",
                    text.as_str().chars().take(40).collect::<String>(),
                    ProtocolChoice::REVISIONS.join(", ")
                ),
            );
            default
        }
    }
}

/// `discovery.max_tools` and `discovery.max_listing_bytes`: the caps on
/// what one upstream listing may make the engine hold.
fn listing_caps(
    max_tools: Option<crate::schema::Count>,
    max_listing_bytes: Option<crate::schema::HumanBytes>,
    d: &DiscoverySettings,
    r: &mut Report,
) -> (u32, u64) {
    let max_tools = match max_tools {
        Some(n) if n.0 == 0 => {
            r.error(
                "discovery.max_tools",
                format!("must be at least 1. Hint: the default is {}", d.max_tools),
            );
            d.max_tools
        }
        Some(n) => n.0,
        None => d.max_tools,
    };
    let max_listing_bytes = match max_listing_bytes {
        Some(b) if b.0 == 0 => {
            r.error(
                "discovery.max_listing_bytes",
                "must be greater than zero. Hint: the default is 32MiB",
            );
            d.max_listing_bytes
        }
        Some(b) => b.0,
        None => d.max_listing_bytes,
    };
    (max_tools, max_listing_bytes)
}

fn catalog(separator: Option<Option<Text>>, r: &mut Report) -> CatalogSettings {
    match separator.flatten() {
        None => CatalogSettings::default(),
        Some(Text(sep)) if sep.is_empty() => {
            r.error(
                "catalog.separator",
                "must not be empty: it keeps tool names of different servers apart",
            );
            // Names are still checked, just not against a separator.
            CatalogSettings {
                separator: String::new(),
            }
        }
        Some(Text(separator)) => CatalogSettings { separator },
    }
}

/// One server. `None` if it has any problem (all of them reported).
/// What a server inherits from the global sections.
#[derive(Clone, Copy, Debug)]
pub struct ServerDefaults<'a> {
    pub discovery: &'a DiscoverySettings,
    pub call_timeout: Duration,
}

impl<'a> ServerDefaults<'a> {
    /// The running config's globals.
    pub fn of(config: &'a Config) -> Self {
        Self {
            discovery: &config.discovery,
            call_timeout: config.mcp.call_timeout,
        }
    }

    /// `discovery` with the other globals at their defaults.
    pub fn new(discovery: &'a DiscoverySettings) -> Self {
        Self {
            discovery,
            call_timeout: McpSettings::DEFAULT_CALL_TIMEOUT,
        }
    }
}

fn server(
    name: &str,
    value: Value,
    defaults: &ServerDefaults<'_>,
    separator: &str,
    source: ServerSource,
    r: &mut Report,
) -> Option<ServerSpec> {
    let base = server_path(name);
    let before = r.count();
    let server_name = match ServerName::parse(name, separator) {
        Ok(n) => Some(n),
        Err(e) => {
            r.error(&base, e);
            None
        }
    };
    let mut map = match value {
        Value::Object(map) => map,
        other => {
            r.error(
                &base,
                format!(
                    "expected a map of server settings, found {}",
                    tree::kind(&other)
                ),
            );
            return None;
        }
    };
    require_map(&mut map, "auth", &tree::join(&base, "auth"), r);
    require_map(&mut map, "tools", &tree::join(&base, "tools"), r);
    let raw: RawServer = deserialize_all(Value::Object(map), &base, r);

    let endpoint = endpoint(&raw, &base, r);
    let is_stdio = matches!(endpoint, Some(Endpoint::Stdio { .. }));
    if is_stdio {
        for (key, present) in [
            ("headers", raw.headers.is_some()),
            ("auth", raw.auth.is_some()),
        ] {
            if present {
                r.error(
                    tree::join(&base, key),
                    "not used by the stdio transport (it only applies to HTTP servers)",
                );
            }
        }
    }
    let headers = headers(raw.headers.unwrap_or_default(), &base, r);
    let auth = auth(raw.auth, &base, r);
    if !matches!(auth, AuthConfig::None) {
        if let Some(h) = headers
            .keys()
            .find(|h| h.eq_ignore_ascii_case("authorization"))
        {
            r.error(
                tree::join(&tree::join(&base, "headers"), h),
                format!(
                    "conflicts with auth type {}, which sets Authorization itself; remove one",
                    auth.kind()
                ),
            );
        }
    }
    let tools = tool_filter(raw.tools.unwrap_or_default(), &base, r);
    let global = defaults.discovery;
    let mut discovery = global.clone();
    discovery.poll_interval = duration(
        r,
        &tree::join(&base, "poll_interval"),
        raw.poll_interval,
        global.poll_interval,
        POLL_INTERVAL,
    );
    discovery.request_timeout = duration(
        r,
        &tree::join(&base, "request_timeout"),
        raw.request_timeout,
        global.request_timeout,
        REQUEST_TIMEOUT,
    );
    discovery.protocol = protocol(
        r,
        &tree::join(&base, "protocol"),
        raw.protocol,
        global.protocol,
    );
    discovery.min_refresh = duration(
        r,
        &tree::join(&base, "min_refresh"),
        raw.min_refresh,
        global.min_refresh,
        MIN_REFRESH,
    );
    let push = raw.push.is_none_or(|f| f.0);
    let call_timeout = duration(
        r,
        &tree::join(&base, "call_timeout"),
        raw.call_timeout,
        defaults.call_timeout,
        CALL_TIMEOUT,
    );

    if r.count() > before {
        return None;
    }
    Some(ServerSpec {
        name: server_name?,
        source,
        endpoint: endpoint?,
        headers,
        auth,
        tools,
        push,
        discovery,
        call_timeout,
    })
}

fn endpoint(raw: &RawServer, base: &str, r: &mut Report) -> Option<Endpoint> {
    let path = |key: &str| tree::join(base, key);
    let transport = match raw.transport {
        Some(t) => t,
        None if raw.command.is_some() && raw.url.is_none() => RawTransport::Stdio,
        None => RawTransport::Auto,
    };
    let transport = match transport {
        RawTransport::Stdio => return stdio_endpoint(raw, base, r),
        RawTransport::Auto => TransportKind::Auto,
        RawTransport::StreamableHttp => TransportKind::StreamableHttp,
        RawTransport::Sse => TransportKind::Sse,
    };
    let stdio_keys = [
        ("command", raw.command.is_some()),
        ("args", raw.args.is_some()),
        ("env", raw.env.is_some()),
        ("env_inherit", raw.env_inherit.is_some()),
        ("cwd", raw.cwd.is_some()),
    ];
    for (key, present) in stdio_keys {
        if present {
            r.error(
                path(key),
                format!(
                    "only used by the stdio transport, but this server's transport is {transport}"
                ),
            );
        }
    }
    let url = match &raw.url {
        Some(Text(url)) => match parse_http_url(url) {
            Ok(url) => Some(url),
            Err(e) => {
                r.error(path("url"), e);
                None
            }
        },
        None if raw.transport.is_some() => {
            r.error(path("url"), format!("required for transport {transport}"));
            None
        }
        None => {
            r.error(
                path("url"),
                "missing: give `url` for an HTTP server, or `command` for a stdio server",
            );
            None
        }
    };
    Some(Endpoint::Http {
        url: url?,
        transport,
    })
}

fn stdio_endpoint(raw: &RawServer, base: &str, r: &mut Report) -> Option<Endpoint> {
    let path = |key: &str| tree::join(base, key);
    if raw.url.is_some() {
        r.error(
            path("url"),
            "not used by the stdio transport, which runs `command`; remove it, or choose \
             transport auto, streamable-http or sse",
        );
    }
    let command = match &raw.command {
        Some(Text(c)) if !c.trim().is_empty() => Some(c.clone()),
        Some(_) => {
            r.error(path("command"), "must not be empty");
            None
        }
        None => {
            r.error(path("command"), "required for the stdio transport");
            None
        }
    };
    let args = raw
        .args
        .iter()
        .flatten()
        .map(|a| a.0.clone())
        .collect::<Vec<_>>();
    let mut env = IndexMap::new();
    for (key, Text(value)) in raw.env.iter().flatten() {
        if key.is_empty() || key.contains(['=', '\0']) {
            r.error(
                tree::join(&path("env"), key),
                "not a valid environment variable name (empty, or contains '=' or NUL)",
            );
        } else if value.contains('\0') {
            r.error(
                tree::join(&path("env"), key),
                "the value contains a NUL byte",
            );
        } else {
            env.insert(key.clone(), Secret::new(value.clone()));
        }
    }
    let cwd = match &raw.cwd {
        Some(Text(cwd)) if cwd.trim().is_empty() => {
            r.error(
                path("cwd"),
                "must not be empty; leave it out to use the service's directory",
            );
            None
        }
        Some(Text(cwd)) => Some(PathBuf::from(cwd)),
        None => None,
    };
    Some(Endpoint::Stdio {
        command: command?,
        args,
        env,
        env_inherit: raw.env_inherit.is_some_and(|f| f.0),
        cwd,
    })
}

/// An absolute http(s) URL. The URL itself is never echoed: it may carry
/// credentials or a token in its query.
fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            format!("{e}; write a full URL such as http://127.0.0.1:20200/mcp")
        }
        e => format!("invalid URL: {e}"),
    })?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported URL scheme {other:?}; use http or https"
            ))
        }
    }
    if url.host().is_none() {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

/// Headers the MCP client manages itself; a static value would break the
/// protocol (or, for the session id, mix sessions up).
const MANAGED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "last-event-id",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
];

fn headers(raw: IndexMap<String, Text>, base: &str, r: &mut Report) -> IndexMap<String, Secret> {
    let headers_path = tree::join(base, "headers");
    let mut out: IndexMap<String, Secret> = IndexMap::new();
    for (name, Text(value)) in raw {
        let path = tree::join(&headers_path, &name);
        let is_token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token {
            r.error(path, "not a valid HTTP header name");
            continue;
        }
        if MANAGED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            r.error(
                path,
                "set by the MCP client itself and cannot be configured",
            );
            continue;
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            // Never echo the value: header values are secrets.
            r.error(
                path,
                "the value contains a control character such as a line break",
            );
            continue;
        }
        if let Some(first) = out.keys().find(|k| k.eq_ignore_ascii_case(&name)) {
            r.error(
                path,
                format!("the same header as {first:?} (header names are case-insensitive)"),
            );
            continue;
        }
        out.insert(name, Secret::new(value));
    }
    out
}

fn auth(raw: Option<RawAuth>, base: &str, r: &mut Report) -> AuthConfig {
    let Some(raw) = raw else {
        return AuthConfig::None;
    };
    let auth_path = tree::join(base, "auth");
    let path = |key: &str| tree::join(&auth_path, key);
    let Some(kind) = raw.kind else {
        r.error(path("type"), "missing; one of none, bearer, basic, oauth2");
        return AuthConfig::None;
    };
    let present = [
        ("token", raw.token.is_some()),
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some()),
        ("token_url", raw.token_url.is_some()),
        ("client_id", raw.client_id.is_some()),
        ("client_secret", raw.client_secret.is_some()),
        ("scopes", raw.scopes.is_some()),
        ("audience", raw.audience.is_some()),
        ("client_auth", raw.client_auth.is_some()),
        ("token_timeout", raw.token_timeout.is_some()),
        ("allowed_issuers", raw.allowed_issuers.is_some()),
    ];
    let allowed: &[&str] = match kind {
        RawAuthType::None => &[],
        RawAuthType::Bearer => &["token"],
        RawAuthType::Basic => &["username", "password"],
        RawAuthType::OAuth2 => &[
            "token_url",
            "client_id",
            "client_secret",
            "scopes",
            "audience",
            "client_auth",
            "token_timeout",
            "allowed_issuers",
        ],
    };
    for (key, is_present) in present {
        if is_present && !allowed.contains(&key) {
            r.error(
                path(key),
                format!("not used by auth type {}", kind.as_str()),
            );
        }
    }
    let mut required = |key: &str, value: Option<Text>| match value {
        Some(Text(v)) if !v.is_empty() => Some(v),
        Some(_) => {
            r.error(path(key), "must not be empty");
            None
        }
        None => {
            r.error(
                path(key),
                format!("required for auth type {}", kind.as_str()),
            );
            None
        }
    };
    let config = match kind {
        RawAuthType::None => Some(AuthConfig::None),
        RawAuthType::Bearer => required("token", raw.token).map(|token| AuthConfig::Bearer {
            token: Secret::new(token),
        }),
        RawAuthType::Basic => {
            let username = required("username", raw.username);
            let password = required("password", raw.password);
            username
                .zip(password)
                .map(|(username, password)| AuthConfig::Basic {
                    username,
                    password: Secret::new(password),
                })
        }
        RawAuthType::OAuth2 => {
            let client_id = required("client_id", raw.client_id);
            let client_secret = required("client_secret", raw.client_secret);
            oauth2(
                raw.token_url,
                raw.scopes,
                raw.audience,
                raw.client_auth,
                raw.token_timeout,
                &auth_path,
                r,
            )
            .map(|partial| OAuth2Config {
                allowed_issuers: allowed_issuers(raw.allowed_issuers, &auth_path, r),
                ..partial
            })
            .zip(client_id.zip(client_secret))
            .map(|(partial, (client_id, client_secret))| {
                AuthConfig::OAuth2(OAuth2Config {
                    client_id,
                    client_secret: Secret::new(client_secret),
                    ..partial
                })
            })
        }
    };
    config.unwrap_or(AuthConfig::None)
}

/// `auth.allowed_issuers`: absolute http(s) issuer URLs.
fn allowed_issuers(list: Option<Vec<Text>>, auth_path: &str, r: &mut Report) -> Vec<Url> {
    let path = tree::join(auth_path, "allowed_issuers");
    let mut out = Vec::new();
    for (i, Text(issuer)) in list.into_iter().flatten().enumerate() {
        match parse_http_url(&issuer) {
            Ok(url) => out.push(url),
            Err(e) => r.error(
                format!("{path}[{i}]"),
                format!("{e}. Hint: an issuer URL as its metadata states it, e.g. https://idp.example.com"),
            ),
        }
    }
    out
}

/// The optional OAuth2 fields; `client_id`/`client_secret` are filled in by
/// the caller.
fn oauth2(
    token_url: Option<Text>,
    scopes: Option<Vec<Text>>,
    audience: Option<Text>,
    client_auth: Option<RawClientAuth>,
    token_timeout: Option<HumanDuration>,
    auth_path: &str,
    r: &mut Report,
) -> Option<OAuth2Config> {
    let before = r.count();
    let path = |key: &str| tree::join(auth_path, key);
    let token_url = token_url.and_then(|Text(url)| match parse_http_url(&url) {
        Ok(url) => Some(url),
        Err(e) => {
            r.error(path("token_url"), e);
            None
        }
    });
    let mut scope_list = Vec::new();
    for (i, Text(scope)) in scopes.into_iter().flatten().enumerate() {
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            r.error(
                format!("{}[{i}]", path("scopes")),
                "a scope must be one non-empty word; list several scopes as list items",
            );
        } else {
            scope_list.push(scope);
        }
    }
    let audience = match audience {
        Some(Text(a)) if a.is_empty() => {
            r.error(path("audience"), "must not be empty; leave it out instead");
            None
        }
        other => other.map(|t| t.0),
    };
    let token_timeout = duration(
        r,
        &path("token_timeout"),
        token_timeout,
        Duration::from_secs(30),
        TOKEN_TIMEOUT,
    );
    if r.count() > before {
        return None;
    }
    Some(OAuth2Config {
        token_url,
        client_id: String::new(),
        client_secret: Secret::default(),
        scopes: scope_list,
        audience,
        client_auth: match client_auth {
            Some(RawClientAuth::Post) => ClientAuth::Post,
            Some(RawClientAuth::Basic) | None => ClientAuth::Basic,
        },
        token_timeout,
        allowed_issuers: Vec::new(),
    })
}

fn tool_filter(raw: RawToolFilter, base: &str, r: &mut Report) -> ToolFilter {
    let tools_path = tree::join(base, "tools");
    let before = r.count();
    let allow = glob_list(raw.allow, &tree::join(&tools_path, "allow"), r);
    let deny = glob_list(raw.deny, &tree::join(&tools_path, "deny"), r);
    if r.count() > before {
        return ToolFilter::allow_all();
    }
    ToolFilter::new(allow, deny).unwrap_or_else(|e| {
        r.error(&tools_path, e);
        ToolFilter::allow_all()
    })
}

/// The patterns of one list; each bad one is reported with its index
/// (`ToolFilter::new` alone would only name the first).
fn glob_list(patterns: Option<Vec<Text>>, path: &str, r: &mut Report) -> Vec<String> {
    let patterns: Vec<String> = patterns.into_iter().flatten().map(|t| t.0).collect();
    for (i, pattern) in patterns.iter().enumerate() {
        if let Err(e) = globset::Glob::new(pattern) {
            r.error(
                format!("{path}[{i}]"),
                format!("invalid glob pattern {pattern:?}: {}", e.kind()),
            );
        }
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(errors: &ConfigErrors) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    fn one_server(value: Value) -> Result<ServerSpec, ConfigErrors> {
        server_from_value(
            "s",
            value,
            &ServerDefaults::new(&DiscoverySettings::default()),
            "__",
            ServerSource::Api,
        )
    }

    fn server_err(value: Value) -> Vec<(String, String)> {
        match one_server(value) {
            Ok(spec) => panic!("expected errors, got {spec:?}"),
            Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    fn has(errors: &[(String, String)], path: &str, needle: &str) -> bool {
        errors.iter().any(|(p, m)| p == path && m.contains(needle))
    }

    #[test]
    fn error_display_leaves_out_empty_parts() {
        let e = ConfigError::new(Some(Path::new("c.yaml")), "servers.a.url", "bad");
        assert_eq!(e.to_string(), "c.yaml: servers.a.url: bad");
        assert_eq!(ConfigError::new(None, "", "bad").to_string(), "bad");
        let all = ConfigErrors(vec![e.clone(), e]);
        assert!(all
            .to_string()
            .starts_with("2 configuration error(s):\n  - c.yaml"));
    }

    #[test]
    fn http_server_defaults() {
        let spec = one_server(json!({"url": "https://example.com/mcp"})).unwrap();
        assert_eq!(spec.transport(), TransportKind::Auto);
        assert!(spec.push);
        assert_eq!(spec.auth, AuthConfig::None);
        assert_eq!(spec.source, ServerSource::Api);
        assert_eq!(spec.discovery, DiscoverySettings::default());
        assert!(spec.tools.allows("anything"));
    }

    #[test]
    fn command_without_url_means_stdio() {
        let spec = one_server(json!({
            "command": "npx", "args": ["-y", "pkg", 8080], "env": {"A": "1"}, "cwd": "/srv"
        }))
        .unwrap();
        match spec.endpoint {
            Endpoint::Stdio {
                command,
                args,
                env,
                env_inherit,
                cwd,
            } => {
                assert!(!env_inherit, "an allowlist by default");
                assert_eq!(command, "npx");
                assert_eq!(args, ["-y", "pkg", "8080"]);
                assert_eq!(env.get("A").map(Secret::expose), Some("1"));
                assert_eq!(cwd, Some(PathBuf::from("/srv")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stdio_needs_a_command_and_no_url() {
        let errs = server_err(json!({"transport": "stdio", "url": "http://x/mcp"}));
        assert!(
            has(&errs, "servers.s.url", "not used by the stdio transport"),
            "{errs:?}"
        );
        assert!(has(&errs, "servers.s.command", "required"), "{errs:?}");
        let errs = server_err(json!({"command": "  "}));
        assert!(
            has(&errs, "servers.s.command", "must not be empty"),
            "{errs:?}"
        );
    }

    #[test]
    fn env_inherit_is_for_stdio_only() {
        let spec = one_server(json!({"command": "x", "env_inherit": true})).unwrap();
        assert!(matches!(
            spec.endpoint,
            Endpoint::Stdio {
                env_inherit: true,
                ..
            }
        ));
        let errs = server_err(json!({"url": "http://x/mcp", "env_inherit": true}));
        assert!(
            has(
                &errs,
                "servers.s.env_inherit",
                "only used by the stdio transport"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn stdio_refuses_http_only_keys() {
        let errs = server_err(json!({
            "command": "x", "headers": {"X-A": "1"}, "auth": {"type": "bearer", "token": "t"}
        }));
        assert!(has(&errs, "servers.s.headers", "stdio"), "{errs:?}");
        assert!(has(&errs, "servers.s.auth", "stdio"), "{errs:?}");
    }

    #[test]
    fn http_transports_need_a_url() {
        let errs = server_err(json!({"transport": "sse"}));
        assert!(
            has(&errs, "servers.s.url", "required for transport sse"),
            "{errs:?}"
        );
        let errs = server_err(json!({}));
        assert!(has(&errs, "servers.s.url", "or `command`"), "{errs:?}");
        let errs = server_err(json!({"url": "http://x/mcp", "command": "npx", "args": []}));
        assert!(
            has(&errs, "servers.s.command", "only used by the stdio"),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.args", "only used by the stdio"),
            "{errs:?}"
        );
    }

    #[test]
    fn urls_must_be_absolute_http() {
        let errs = server_err(json!({"url": "search.local/mcp"}));
        assert!(
            has(&errs, "servers.s.url", "relative URL without a base"),
            "{errs:?}"
        );
        let errs = server_err(json!({"url": "ftp://x/mcp"}));
        assert!(
            has(&errs, "servers.s.url", "unsupported URL scheme \"ftp\""),
            "{errs:?}"
        );
        let errs = server_err(json!({"url": "http://[::1/mcp"}));
        assert!(has(&errs, "servers.s.url", "invalid URL"), "{errs:?}");
        let spec =
            one_server(json!({"url": "http://127.0.0.1:1/mcp", "transport": "streamable-http"}))
                .unwrap();
        assert_eq!(spec.transport(), TransportKind::StreamableHttp);
    }

    #[test]
    fn server_names_are_checked_against_the_separator() {
        let d = DiscoverySettings::default();
        let ok = json!({"url": "http://x/mcp"});
        let err = server_from_value(
            "a__b",
            ok.clone(),
            &ServerDefaults::new(&d),
            "__",
            ServerSource::Config,
        )
        .unwrap_err();
        assert_eq!(paths(&err), ["servers.a__b"]);
        assert!(err.0[0].message.contains("separator"));
        let err = server_from_value(
            "a b",
            ok.clone(),
            &ServerDefaults::new(&d),
            "__",
            ServerSource::Config,
        )
        .unwrap_err();
        assert!(err.0[0].message.contains("only letters"));
        assert!(server_from_value(
            "a__b",
            ok,
            &ServerDefaults::new(&d),
            "::",
            ServerSource::Config
        )
        .is_ok());
    }

    #[test]
    fn server_names_ending_with_the_start_of_the_separator_are_refused() {
        let d = DiscoverySettings::default();
        let ok = json!({"url": "http://x/mcp"});
        let err = server_from_value(
            "a_",
            ok.clone(),
            &ServerDefaults::new(&d),
            "__",
            ServerSource::Config,
        )
        .unwrap_err();
        assert_eq!(paths(&err), ["servers.a_"]);
        let msg = &err.0[0].message;
        assert!(
            msg.contains("ends with \"_\"") && msg.contains("Hint:"),
            "{msg}"
        );
        assert!(server_from_value(
            "_a",
            ok.clone(),
            &ServerDefaults::new(&d),
            "__",
            ServerSource::Config
        )
        .is_ok());
        assert!(server_from_value(
            "a-",
            ok.clone(),
            &ServerDefaults::new(&d),
            "__",
            ServerSource::Config
        )
        .is_ok());
        // Any separator: every non-empty proper prefix counts.
        let err = server_from_value(
            "a-x",
            ok.clone(),
            &ServerDefaults::new(&d),
            "-x-",
            ServerSource::Config,
        )
        .unwrap_err();
        assert!(
            err.0[0].message.contains("ends with \"-x\""),
            "{}",
            err.0[0].message
        );
        assert!(server_from_value(
            "a-",
            ok.clone(),
            &ServerDefaults::new(&d),
            "-x-",
            ServerSource::Config
        )
        .is_err());
        assert!(server_from_value(
            "a_",
            ok.clone(),
            &ServerDefaults::new(&d),
            "::",
            ServerSource::Config
        )
        .is_ok());
        // A one-character separator has no proper prefix: only "contains" applies.
        assert!(server_from_value(
            "a-",
            ok,
            &ServerDefaults::new(&d),
            "_",
            ServerSource::Config
        )
        .is_ok());
    }

    #[test]
    fn auth_fields_are_required_per_type() {
        let errs = server_err(json!({"url": "http://x/", "auth": {"type": "bearer"}}));
        assert!(has(
            &errs,
            "servers.s.auth.token",
            "required for auth type bearer"
        ));
        let errs =
            server_err(json!({"url": "http://x/", "auth": {"type": "basic", "username": "u"}}));
        assert!(has(
            &errs,
            "servers.s.auth.password",
            "required for auth type basic"
        ));
        let errs = server_err(
            json!({"url": "http://x/", "auth": {"type": "oauth2", "token_url": "idp/token"}}),
        );
        assert!(
            has(&errs, "servers.s.auth.client_id", "required"),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.auth.client_secret", "required"),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.auth.token_url", "relative URL"),
            "{errs:?}"
        );
        let errs = server_err(json!({"url": "http://x/", "auth": {"token": "t"}}));
        assert!(has(&errs, "servers.s.auth.type", "missing"), "{errs:?}");
        let errs = server_err(
            json!({"url": "http://x/", "auth": {"type": "bearer", "token": "t", "username": "u"}}),
        );
        assert!(has(
            &errs,
            "servers.s.auth.username",
            "not used by auth type bearer"
        ));
        let errs = server_err(json!({"url": "http://x/", "auth": {"type": "kerberos"}}));
        assert!(
            has(&errs, "servers.s.auth.type", "unknown value `kerberos`"),
            "{errs:?}"
        );
    }

    #[test]
    fn oauth2_is_fully_parsed_and_secret() {
        let spec = one_server(json!({
            "url": "http://x/mcp",
            "auth": {
                "type": "oauth2", "client_id": 123, "client_secret": "s3cret",
                "scopes": ["mcp.read", "mcp.write"], "audience": "api",
                "client_auth": "post", "token_timeout": "5s"
            }
        }))
        .unwrap();
        let AuthConfig::OAuth2(o) = &spec.auth else {
            panic!("{:?}", spec.auth);
        };
        assert_eq!(o.client_id, "123");
        assert_eq!(o.client_secret.expose(), "s3cret");
        assert_eq!(o.token_url, None);
        assert_eq!(o.scopes, ["mcp.read", "mcp.write"]);
        assert_eq!(o.audience.as_deref(), Some("api"));
        assert_eq!(o.client_auth, ClientAuth::Post);
        assert_eq!(o.token_timeout, Duration::from_secs(5));
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[test]
    fn oauth2_defaults() {
        let spec = one_server(json!({
            "url": "http://x/mcp",
            "auth": {"type": "oauth2", "client_id": "c", "client_secret": "s", "token_url": "https://idp/token"}
        }))
        .unwrap();
        let AuthConfig::OAuth2(o) = spec.auth else {
            panic!()
        };
        assert_eq!(o.client_auth, ClientAuth::Basic);
        assert_eq!(o.token_timeout, Duration::from_secs(30));
        assert_eq!(
            o.token_url.map(|u| u.to_string()).as_deref(),
            Some("https://idp/token")
        );
    }

    #[test]
    fn headers_are_checked() {
        let errs = server_err(json!({"url": "http://x/", "headers": {
            "Bad Name": "1", "Mcp-Session-Id": "x", "X-A": "a\nb", "x-team": "1", "X-Team": "2"
        }}));
        assert!(has(
            &errs,
            "servers.s.headers.Bad Name",
            "not a valid HTTP header name"
        ));
        assert!(has(
            &errs,
            "servers.s.headers.Mcp-Session-Id",
            "set by the MCP client"
        ));
        assert!(has(&errs, "servers.s.headers.X-A", "control character"));
        assert!(
            has(&errs, "servers.s.headers.X-Team", "case-insensitive"),
            "{errs:?}"
        );
        let errs = server_err(
            json!({"url": "http://x/", "headers": {"authorization": "x"},
            "auth": {"type": "bearer", "token": "t"}}),
        );
        assert!(has(
            &errs,
            "servers.s.headers.authorization",
            "conflicts with auth type bearer"
        ));
    }

    #[test]
    fn tool_globs_must_compile() {
        let errs = server_err(
            json!({"url": "http://x/", "tools": {"allow": ["ok_*", "[bad"], "deny": ["{a"]}}),
        );
        assert!(
            has(
                &errs,
                "servers.s.tools.allow[1]",
                "invalid glob pattern \"[bad\""
            ),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.tools.deny[0]", "invalid glob"),
            "{errs:?}"
        );
        let spec =
            one_server(json!({"url": "http://x/", "tools": {"allow": ["*"], "deny": ["admin_*"]}}))
                .unwrap();
        assert!(spec.tools.allows("search"));
        assert!(!spec.tools.allows("admin_drop"));
    }

    #[test]
    fn protocol_is_auto_or_a_known_revision_globally_and_per_server() {
        let spec = one_server(json!({"url": "http://x/"})).unwrap();
        assert_eq!(spec.discovery.protocol, ProtocolChoice::Auto);
        let global = DiscoverySettings {
            protocol: ProtocolChoice::Pinned("2025-06-18"),
            ..DiscoverySettings::default()
        };
        let inherit = server_from_value(
            "s",
            json!({"url": "http://x/"}),
            &ServerDefaults::new(&global),
            "__",
            ServerSource::Api,
        )
        .unwrap();
        assert_eq!(inherit.discovery.protocol.as_str(), "2025-06-18");
        let spec = one_server(json!({"url": "http://x/", "protocol": "2026-07-28"})).unwrap();
        assert_eq!(
            spec.discovery.protocol,
            ProtocolChoice::Pinned("2026-07-28")
        );
        let errs = server_err(json!({"url": "http://x/", "protocol": "2027-01-01"}));
        assert!(
            has(&errs, "servers.s.protocol", "Hint: use `auto`"),
            "{errs:?}"
        );
        let errs = validate_value(json!({"discovery": {"protocol": "latest"}}), None)
            .err()
            .unwrap();
        assert_eq!(paths(&errs), ["discovery.protocol"]);
    }

    #[test]
    fn per_server_timing_overrides_the_global() {
        let global = DiscoverySettings {
            poll_interval: Duration::from_secs(300),
            ..DiscoverySettings::default()
        };
        let spec = server_from_value(
            "s",
            json!({"url": "http://x/", "poll_interval": "1m", "request_timeout": "5s", "push": "false"}),
            &ServerDefaults::new(&global),
            "__",
            ServerSource::Config,
        )
        .unwrap();
        assert_eq!(spec.discovery.poll_interval, Duration::from_secs(60));
        assert_eq!(spec.discovery.request_timeout, Duration::from_secs(5));
        assert_eq!(spec.discovery.connect_timeout, global.connect_timeout);
        assert!(!spec.push);
        let errs = server_err(json!({"url": "http://x/", "poll_interval": "0s"}));
        assert!(has(&errs, "servers.s.poll_interval", "0s is out of range"));
    }

    #[test]
    fn min_refresh_is_global_and_per_server_with_a_range() {
        let config = validate_value(json!({"discovery": {"min_refresh": "2s"}}), None).unwrap();
        assert_eq!(config.discovery.min_refresh, Duration::from_secs(2));
        assert_eq!(
            DiscoverySettings::default().min_refresh,
            Duration::from_secs(1)
        );
        let spec = one_server(json!({"url": "http://x/", "min_refresh": "500ms"})).unwrap();
        assert_eq!(spec.discovery.min_refresh, Duration::from_millis(500));
        let errs = server_err(json!({"url": "http://x/", "min_refresh": "10ms"}));
        assert!(
            has(
                &errs,
                "servers.s.min_refresh",
                "10ms is out of range. Hint: use a duration from 100ms to 1day"
            ),
            "{errs:?}"
        );
        let errs = validate_value(json!({"discovery": {"min_refresh": "2d"}}), None)
            .err()
            .unwrap();
        assert_eq!(paths(&errs), ["discovery.min_refresh"]);
    }

    #[test]
    fn max_concurrent_attempts_is_global_only_and_at_least_one() {
        let config = validate_value(json!({}), None).unwrap();
        assert_eq!(config.max_concurrent_attempts, 256);
        let config =
            validate_value(json!({"discovery": {"max_concurrent_attempts": 8}}), None).unwrap();
        assert_eq!(config.max_concurrent_attempts, 8);
        let errs = validate_value(json!({"discovery": {"max_concurrent_attempts": 0}}), None)
            .err()
            .unwrap();
        assert_eq!(paths(&errs), ["discovery.max_concurrent_attempts"]);
        // A server has no such key: it bounds every server together.
        let errs = server_err(json!({"url": "http://x/", "max_concurrent_attempts": 4}));
        assert!(!errs.is_empty());
        // Changing it changes no server's settings (so restarts none).
        let a = validate_value(
            json!({"discovery": {"max_concurrent_attempts": 8}, "servers": {"s": {"url": "http://x/"}}}),
            None,
        )
        .unwrap();
        let b = validate_value(
            json!({"discovery": {"max_concurrent_attempts": 9}, "servers": {"s": {"url": "http://x/"}}}),
            None,
        )
        .unwrap();
        assert_eq!(a.servers, b.servers);
    }

    #[test]
    fn durations_have_sane_ranges() {
        let errs = validate_value(
            json!({"discovery": {
                "poll_interval": "1ms", "request_timeout": "50ms", "connect_timeout": "2h",
                "backoff": {"initial": "1ms", "max": "30d"}, "stale_ttl": "100d",
                "startup_grace": "2h", "push_idle_timeout": "10ms"
            }}),
            None,
        )
        .unwrap_err();
        let errs: Vec<(String, String)> = errs.0.into_iter().map(|e| (e.path, e.message)).collect();
        for path in [
            "discovery.poll_interval",
            "discovery.request_timeout",
            "discovery.connect_timeout",
            "discovery.backoff.initial",
            "discovery.backoff.max",
            "discovery.stale_ttl",
            "discovery.startup_grace",
            "discovery.push_idle_timeout",
        ] {
            assert!(
                has(&errs, path, "is out of range. Hint: use a duration from"),
                "{path}: {errs:?}"
            );
        }
        assert!(
            has(
                &errs,
                "discovery.poll_interval",
                "1ms is out of range. Hint: use a duration from 100ms to 7days"
            ),
            "{errs:?}"
        );
        // The bounds themselves are accepted.
        let config = validate_value(
            json!({"discovery": {
                "poll_interval": "100ms", "request_timeout": "1h", "connect_timeout": "100ms",
                "backoff": {"initial": "10ms", "max": "24h"}, "stale_ttl": "0s",
                "startup_grace": "0s", "push_idle_timeout": "100ms"
            }}),
            None,
        )
        .unwrap();
        assert_eq!(config.discovery.poll_interval, Duration::from_millis(100));
        assert_eq!(config.discovery.backoff.max, Duration::from_secs(24 * 3600));
        // A registration goes through the same checks, per server and auth.
        let errs = server_err(json!({
            "url": "http://x/", "poll_interval": "1ms", "request_timeout": "2h",
            "auth": {"type": "oauth2", "client_id": "a", "client_secret": "b", "token_timeout": "1h"}
        }));
        assert!(
            has(&errs, "servers.s.poll_interval", "out of range"),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.request_timeout", "out of range"),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.auth.token_timeout", "from 100ms to 10m"),
            "{errs:?}"
        );
    }

    #[test]
    fn allowed_issuers_are_urls_and_only_for_oauth2() {
        let oauth2 = |issuers: Value| {
            json!({"url": "http://x/", "auth": {
                "type": "oauth2", "client_id": "a", "client_secret": "b", "allowed_issuers": issuers
            }})
        };
        let spec = one_server(oauth2(json!(["https://idp.example/t"]))).unwrap();
        let AuthConfig::OAuth2(o) = spec.auth else {
            panic!("not oauth2")
        };
        assert_eq!(
            o.allowed_issuers,
            vec![Url::parse("https://idp.example/t").unwrap()]
        );
        let errs = server_err(oauth2(json!([
            "https://ok.example",
            "not a url",
            "ftp://x"
        ])));
        assert!(
            has(&errs, "servers.s.auth.allowed_issuers[1]", "Hint:"),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.auth.allowed_issuers[2]", "scheme"),
            "{errs:?}"
        );
        let errs = server_err(json!({"url": "http://x/", "auth": {
            "type": "bearer", "token": "t", "allowed_issuers": ["https://a"]
        }}));
        assert!(
            has(
                &errs,
                "servers.s.auth.allowed_issuers",
                "not used by auth type bearer"
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn every_unknown_and_mistyped_key_of_one_server_is_reported() {
        let errs = server_err(json!({
            "url": "http://x/", "urll": 1, "pol_interval": "1m",
            "push": "sometimes", "tools": {"allow": "x", "block": []}
        }));
        assert!(
            has(&errs, "servers.s.urll", "unknown key `urll`"),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.pol_interval", "unknown key"),
            "{errs:?}"
        );
        assert!(has(&errs, "servers.s.push", "true or false"), "{errs:?}");
        assert!(
            has(&errs, "servers.s.tools.allow", "expected a list"),
            "{errs:?}"
        );
        assert!(
            has(&errs, "servers.s.tools.block", "unknown key"),
            "{errs:?}"
        );
        assert_eq!(errs.len(), 5, "{errs:?}");
    }

    #[test]
    fn a_dropped_value_does_not_cause_follow_up_errors() {
        // The bad url is reported once, not again as "url: missing".
        let errs = server_err(json!({"url": ["http://x/"]}));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(has(&errs, "servers.s.url", "invalid type"), "{errs:?}");
    }

    #[test]
    fn a_list_is_not_a_server() {
        let errs = server_err(json!(["http://x/mcp"]));
        assert!(has(&errs, "servers.s", "expected a map"), "{errs:?}");
        let errs = server_err(json!({"url": "http://x/", "auth": ["bearer", "t"]}));
        assert!(
            has(&errs, "servers.s.auth", "expected a map, found a list"),
            "{errs:?}"
        );
    }

    #[test]
    fn api_body_may_carry_its_name() {
        assert!(one_server(json!({"name": "s", "url": "http://x/"})).is_ok());
        let errs = server_err(json!({"name": "t", "url": "http://x/"}));
        assert!(has(&errs, "servers.s.name", "does not match"), "{errs:?}");
    }

    #[test]
    fn global_checks() {
        let err = validate_value(
            json!({
                "listen": "localhost:8080",
                "admin": {"protect_reads": true},
                "store": {"url": "mysql://u:pw@h/db"},
                "discovery": {
                    "poll_interval": "0s", "backoff": {"initial": "2m", "max": "1m"},
                    "max_response_bytes": 0, "max_pages": 0, "stale_ttl": "0s"
                },
                "catalog": {"separator": ""}
            }),
            None,
        )
        .unwrap_err();
        let p = paths(&err);
        for expected in [
            "listen",
            "admin.protect_reads",
            "store.url",
            "discovery.poll_interval",
            "discovery.backoff",
            "discovery.max_response_bytes",
            "discovery.max_pages",
            "catalog.separator",
        ] {
            assert!(p.contains(&expected), "{expected} missing in {p:?}");
        }
        assert!(!err.to_string().contains("pw@"), "store URL echoed: {err}");
        assert_eq!(p.len(), 8, "{err}");

        // An empty key (say `${KEY:-}`) would let anyone in; the follow-up
        // "protect_reads needs a key" is not reported on top.
        let err = validate_value(
            json!({"admin": {"api_keys": [" "], "protect_reads": true}}),
            None,
        )
        .unwrap_err();
        assert_eq!(paths(&err), ["admin.api_keys[0]"]);
    }

    #[test]
    fn stdio_registration_needs_admin_keys() {
        let err =
            validate_value(json!({"admin": {"allow_stdio_registration": true}}), None).unwrap_err();
        assert_eq!(paths(&err), ["admin.allow_stdio_registration"]);
        assert!(err.to_string().contains("starts a process"), "{err}");
        let config = validate_value(
            json!({"admin": {"api_keys": ["k-0123456789abcdef"], "allow_stdio_registration": true}}),
            None,
        )
        .unwrap();
        assert!(config.admin.allow_stdio_registration);
        let config = validate_value(json!({}), None).unwrap();
        assert!(!config.admin.allow_stdio_registration, "off by default");
    }

    #[test]
    fn store_encryption_key_is_64_hex_digits_and_never_echoed() {
        let key = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let config = validate_value(
            json!({"store": {"encryption_key": format!(" {key}\n")}}),
            None,
        )
        .unwrap();
        let stored = config.store.encryption_key.unwrap();
        assert_eq!(stored.expose(), key, "kept trimmed");
        let bytes = crate::parse_encryption_key(stored.expose()).unwrap();
        assert_eq!(bytes[0], 0x00);
        assert_eq!(bytes[15], 0xff);
        assert_eq!(bytes[31], 0xff);

        for (bad, needle) in [
            ("", "must not be empty"),
            (
                "c2VjcmV0LWtleS10aGF0LWlzLWJhc2U2NC1lbmNvZGVkMTI=",
                "64 hexadecimal digits",
            ),
            (&key[..62], "found 62 characters"),
            (
                "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                "hexadecimal digits (0-9, a-f) only",
            ),
        ] {
            let err = validate_value(json!({"store": {"encryption_key": bad}}), None).unwrap_err();
            assert_eq!(paths(&err), ["store.encryption_key"], "{err}");
            let text = err.to_string();
            assert!(text.contains(needle), "{bad:?}: {text}");
            assert!(text.contains("openssl rand -hex 32"), "{text}");
            if !bad.is_empty() {
                assert!(!text.contains(&bad[..16]), "key echoed: {text}");
            }
        }
        assert_eq!(
            validate_value(json!({}), None)
                .unwrap()
                .store
                .encryption_key,
            None
        );
    }

    #[test]
    fn defaults_for_an_empty_tree() {
        let config = validate_value(json!({}), None).unwrap();
        let mut expected = Config::embedded_defaults();
        expected.source = None;
        assert_eq!(config, expected);
    }

    #[test]
    fn not_a_map_at_the_top() {
        let err = validate_value(json!([1]), None).unwrap_err();
        assert_eq!(paths(&err), [""]);
        let err = validate_value(json!({"servers": [1], "admin": "x"}), None).unwrap_err();
        assert_eq!(paths(&err), ["admin", "servers"]);
    }
    fn all_errors(value: Value) -> Vec<(String, String)> {
        match validate_value(value, None) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    #[test]
    fn keys_are_trimmed_and_long_enough_and_never_echoed() {
        let config = validate_value(
            json!({"admin": {
                "api_keys": ["  write-key-0123456789 "],
                "read_keys": ["read-key-0123456789"],
                "protect_reads": true,
            }}),
            None,
        )
        .unwrap();
        assert_eq!(config.admin.api_keys[0].expose(), "write-key-0123456789");
        assert_eq!(config.admin.read_keys[0].expose(), "read-key-0123456789");
        let errors = all_errors(json!({"admin": {
            "api_keys": ["short-key", "ok-key-0123456789abc"],
            "read_keys": ["  "],
            "protect_reads": true,
        }}));
        assert!(
            has(&errors, "admin.api_keys[0]", "at least 16"),
            "{errors:?}"
        );
        assert!(has(&errors, "admin.api_keys[0]", "Hint:"), "{errors:?}");
        assert!(has(&errors, "admin.read_keys[0]", "must not be empty"));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().all(|(_, m)| !m.contains("short-key")));
    }

    #[test]
    fn admin_modes_that_mean_nothing_are_refused() {
        let errors = all_errors(json!({"admin": {
            "api_keys": ["write-key-0123456789"], "allow_loopback_writes": true
        }}));
        assert!(
            has(&errors, "admin.allow_loopback_writes", "Hint:"),
            "{errors:?}"
        );
        let errors = all_errors(json!({"admin": {"read_keys": ["read-key-0123456789"]}}));
        assert!(
            has(&errors, "admin.read_keys", "protect_reads"),
            "{errors:?}"
        );
        let errors = all_errors(json!({"admin": {"protect_reads": true}}));
        assert!(
            has(&errors, "admin.protect_reads", "read_keys"),
            "{errors:?}"
        );
        // Read keys alone may protect reads; writes stay refused then.
        let config = validate_value(
            json!({"admin": {"read_keys": ["read-key-0123456789"], "protect_reads": true}}),
            None,
        )
        .unwrap();
        assert!(config.admin.api_keys.is_empty() && !config.admin.allow_loopback_writes);
    }

    #[test]
    fn allowed_hosts_and_origins_are_normalised() {
        let config = validate_value(
            json!({"http": {
                "allowed_hosts": ["MCP.Example.com", "mcp.example.com:8443", "[FD00::1]:80"],
                "allowed_origins": ["HTTPS://UI.Example.com:443", "http://localhost:3000"],
            }}),
            None,
        )
        .unwrap();
        assert_eq!(
            config.http.allowed_hosts,
            ["mcp.example.com", "mcp.example.com:8443", "[fd00::1]:80"]
        );
        assert_eq!(
            config.http.allowed_origins,
            ["https://ui.example.com", "http://localhost:3000"]
        );
        let errors = all_errors(json!({"http": {
            "allowed_hosts": ["https://mcp.example.com", "a b", "h:port"],
            "allowed_origins": ["null", "https://ui.example.com/app", "ftp://x", "https://u@x"],
        }}));
        for i in 0..3 {
            assert!(
                has(&errors, &format!("http.allowed_hosts[{i}]"), ""),
                "{errors:?}"
            );
        }
        for i in 0..4 {
            assert!(
                has(&errors, &format!("http.allowed_origins[{i}]"), "Hint:"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn listing_caps_default_and_are_checked() {
        let config = validate_value(json!({"servers": {"s": {"url": "http://x/"}}}), None).unwrap();
        assert_eq!(config.discovery.max_tools, 10_000);
        assert_eq!(config.discovery.max_listing_bytes, 32 * 1024 * 1024);
        let config = validate_value(
            json!({"discovery": {"max_tools": 7, "max_listing_bytes": "1KiB"},
                   "servers": {"s": {"url": "http://x/"}}}),
            None,
        )
        .unwrap();
        let s = &config.servers.values().next().unwrap().discovery;
        assert_eq!(
            (s.max_tools, s.max_listing_bytes),
            (7, 1024),
            "servers inherit"
        );
        let err = validate_value(
            json!({"discovery": {"max_tools": 0, "max_listing_bytes": 0}}),
            None,
        )
        .unwrap_err();
        assert_eq!(
            paths(&err),
            ["discovery.max_tools", "discovery.max_listing_bytes"]
        );
        assert!(err.to_string().contains("Hint:"), "{err}");
    }
    #[test]
    fn mcp_settings_have_defaults_ranges_and_a_per_server_call_timeout() {
        let config = validate_value(
            json!({
                "mcp": {"page_size": 50, "max_ttl": "30s", "call_timeout": "5s"},
                "servers": {
                    "a": {"url": "http://127.0.0.1:1/mcp"},
                    "b": {"url": "http://127.0.0.1:2/mcp", "call_timeout": "2m"}
                }
            }),
            None,
        )
        .unwrap();
        assert_eq!(config.mcp.page_size, 50);
        assert_eq!(config.mcp.max_ttl, Duration::from_secs(30));
        assert_eq!(config.mcp.max_sessions, McpSettings::DEFAULT_MAX_SESSIONS);
        assert_eq!(config.servers["a"].call_timeout, Duration::from_secs(5));
        assert_eq!(config.servers["b"].call_timeout, Duration::from_secs(120));
        let err = validate_value(
            json!({
                "mcp": {"call_timeout": "1ms", "max_sessions": 0, "max_concurrent_calls": "0",
                        "max_ttl": "2d", "nonsense": 1},
                "servers": {"a": {"url": "http://127.0.0.1:1/mcp", "call_timeout": "9h"}}
            }),
            None,
        )
        .unwrap_err();
        let mut p = paths(&err);
        p.sort_unstable();
        assert_eq!(
            p,
            [
                "mcp.call_timeout",
                "mcp.max_concurrent_calls",
                "mcp.max_sessions",
                "mcp.max_ttl",
                "mcp.nonsense",
                "servers.a.call_timeout"
            ]
        );
    }

    #[test]
    fn views_share_the_server_name_space_and_check_every_entry() {
        let config = validate_value(
            json!({
                "views": {
                    "ops": {"servers": ["a", "registered-later"], "tools": {"allow": ["a__*"], "deny": ["a__drop_*"]}},
                    "all": {}
                },
                "servers": {"a": {"url": "http://127.0.0.1:1/mcp"}}
            }),
            None,
        )
        .unwrap();
        let ops = &config.views["ops"];
        assert!(ops.covers("a") && ops.covers("registered-later") && !ops.covers("b"));
        assert!(ops.tools.allows("a__search") && !ops.tools.allows("a__drop_table"));
        assert!(config.views["all"].covers("anything"));
        let err = validate_value(
            json!({
                "views": {
                    "a": {},
                    "bad name": {},
                    "x": {"servers": ["a", "a", "no__sep"], "tools": {"allow": ["[oops"]}},
                    "y": {"servers": "a"},
                    "z": 3
                },
                "servers": {"a": {"url": "http://127.0.0.1:1/mcp"}}
            }),
            None,
        )
        .unwrap_err();
        let p = paths(&err);
        for expected in [
            "views.a",
            "views.bad name",
            "views.x.servers[1]",
            "views.x.servers[2]",
            "views.x.tools.allow[0]",
            "views.y.servers",
            "views.z",
        ] {
            assert!(p.contains(&expected), "{expected} missing from {p:?}");
        }
        assert!(err.to_string().contains("share one name space"), "{err}");
    }
}
