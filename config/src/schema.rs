//! Raw serde schema, exactly as written in the file (DESIGN.md section 7).
//!
//! Every field is an `Option` so that validation can tell "absent" (use the
//! default, or inherit the global setting) from "given", and every struct
//! denies unknown fields so a typo is an error instead of a silently ignored
//! key. Nothing here checks meaning; [`crate::validate`] turns these types
//! into the validated [`crate::Config`].
//!
//! Scalars are deliberately lenient about their *representation*: every
//! environment override arrives as a string, and YAML turns `client_id: 12345`
//! into a number, so a string field also takes a number or a boolean, and a
//! boolean or count field also takes `"true"` / `"100"`. Durations and byte
//! sizes are human strings (`"30s"`, `"16MiB"`).

use std::fmt;
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Socket address of the HTTP API, e.g. `127.0.0.1:8080`.
    pub listen: Option<Text>,
    pub admin: Option<RawAdmin>,
    pub http: Option<RawHttp>,
    pub store: Option<RawStore>,
    pub discovery: Option<RawDiscovery>,
    pub catalog: Option<RawCatalog>,
    pub mcp: Option<RawMcp>,
    /// Curated subsets of the catalog served at `/mcp/{name}`; the raw
    /// entries are read one by one (like `servers`), so this stays a map.
    pub views: Option<IndexMap<String, RawView>>,
    /// Upstream servers by name, in file order.
    pub servers: Option<IndexMap<String, RawServer>>,
}

/// `admin:` — who may write through the API.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub api_keys: Option<Vec<Text>>,
    pub read_keys: Option<Vec<Text>>,
    pub protect_reads: Option<Flag>,
    pub allow_loopback_writes: Option<Flag>,
    /// Let `POST`/`PUT /v1/servers` register stdio servers (a process
    /// start); needs `api_keys`.
    pub allow_stdio_registration: Option<Flag>,
}

/// `http:` — the names and web origins the API answers (DNS rebinding and
/// cross-site requests are refused otherwise).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub allowed_hosts: Option<Vec<Text>>,
    pub allowed_origins: Option<Vec<Text>>,
}

/// `store:` — where runtime registrations are persisted.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<Text>,
    /// Key for encryption at rest of stored entries (64 hex digits).
    pub encryption_key: Option<Text>,
}

/// `discovery:` — global timing and limits, the defaults of every server.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub poll_interval: Option<HumanDuration>,
    pub request_timeout: Option<HumanDuration>,
    pub connect_timeout: Option<HumanDuration>,
    pub backoff: Option<RawBackoff>,
    pub stale_ttl: Option<HumanDuration>,
    pub max_response_bytes: Option<HumanBytes>,
    pub max_pages: Option<Count>,
    pub max_tools: Option<Count>,
    pub max_listing_bytes: Option<HumanBytes>,
    pub startup_grace: Option<HumanDuration>,
    pub push_idle_timeout: Option<HumanDuration>,
    /// `auto` or a pinned MCP revision (see `ProtocolChoice`).
    pub protocol: Option<Text>,
    /// Earliest refresh a result's `ttlMs` may bring forward.
    pub min_refresh: Option<HumanDuration>,
    /// Discovery attempts in flight at once, across every server (global
    /// only: `Config::max_concurrent_attempts`).
    pub max_concurrent_attempts: Option<Count>,
}

/// `discovery.backoff:` — retry delays of a degraded server.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub initial: Option<HumanDuration>,
    pub max: Option<HumanDuration>,
}

/// `catalog:` — how public tool names are built.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    pub separator: Option<Text>,
}

/// `mcp:` — the MCP endpoint the engine serves (`/mcp`, `/mcp/{name}`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    /// Tools per `tools/list` page; 0 (default) = one page.
    pub page_size: Option<Count>,
    /// Longest `ttlMs` the endpoint promises.
    pub max_ttl: Option<HumanDuration>,
    /// Default deadline of a `tools/call` (per server: `call_timeout`).
    pub call_timeout: Option<HumanDuration>,
    /// Live 2025 sessions (`Mcp-Session-Id`) at most.
    pub max_sessions: Option<Count>,
    /// A 2025 session unused this long is forgotten.
    pub session_idle_timeout: Option<HumanDuration>,
    /// `tools/call` in flight per upstream server (more wait in a queue
    /// of the same length, then are refused).
    pub max_concurrent_calls: Option<Count>,
}

/// One entry of `views:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawView {
    /// Servers whose tools the view shows; absent = every server.
    pub servers: Option<Vec<Text>>,
    /// Globs on public names (`<server>__<tool>`).
    pub tools: Option<RawToolFilter>,
}

/// One entry of `servers:` (and the body of a REST registration, minus
/// `name`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub url: Option<Text>,
    /// Default: `stdio` when only `command` is given, else `auto`.
    pub transport: Option<RawTransport>,
    pub command: Option<Text>,
    pub args: Option<Vec<Text>>,
    pub env: Option<IndexMap<String, Text>>,
    /// stdio: pass the service's whole environment (default: an allowlist).
    pub env_inherit: Option<Flag>,
    pub cwd: Option<Text>,
    pub headers: Option<IndexMap<String, Text>>,
    pub auth: Option<RawAuth>,
    pub poll_interval: Option<HumanDuration>,
    pub request_timeout: Option<HumanDuration>,
    pub tools: Option<RawToolFilter>,
    /// Open the optional GET push stream (default true).
    pub push: Option<Flag>,
    /// `auto` or a pinned MCP revision; default: `discovery.protocol`.
    pub protocol: Option<Text>,
    /// Default: `discovery.min_refresh`.
    pub min_refresh: Option<HumanDuration>,
    /// Deadline of a `tools/call` to this server; default `mcp.call_timeout`.
    pub call_timeout: Option<HumanDuration>,
}

/// `transport:` values, spelled as in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawTransport {
    Auto,
    StreamableHttp,
    Sse,
    Stdio,
}

/// `auth:` — one flat block; which fields are required (and allowed) depends
/// on `type`, which validation checks so that every misplaced field is
/// reported, not just the first.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(rename = "type")]
    pub kind: Option<RawAuthType>,
    pub token: Option<Text>,
    pub username: Option<Text>,
    pub password: Option<Text>,
    pub token_url: Option<Text>,
    pub client_id: Option<Text>,
    pub client_secret: Option<Text>,
    pub scopes: Option<Vec<Text>>,
    pub audience: Option<Text>,
    pub client_auth: Option<RawClientAuth>,
    pub token_timeout: Option<HumanDuration>,
    pub allowed_issuers: Option<Vec<Text>>,
}

/// `auth.type:` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAuthType {
    None,
    Bearer,
    Basic,
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl RawAuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            RawAuthType::None => "none",
            RawAuthType::Bearer => "bearer",
            RawAuthType::Basic => "basic",
            RawAuthType::OAuth2 => "oauth2",
        }
    }
}

/// `auth.client_auth:` — how the OAuth2 client authenticates to the token
/// endpoint (`client_secret_basic` or `client_secret_post`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawClientAuth {
    Basic,
    Post,
}

/// `tools:` — glob patterns on upstream tool names.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToolFilter {
    pub allow: Option<Vec<Text>>,
    pub deny: Option<Vec<Text>>,
}

/// A string that also accepts a number or a boolean, written back as text.
/// Raw values may be secrets (tokens, header values, `env`), so `Debug`
/// shows only the length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Text([{} bytes])", self.0.len())
    }
}

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean that also accepts the strings `true` / `false` (any case).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "true" => Ok(Flag(true)),
                    "false" => Ok(Flag(false)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A positive-or-zero count that fits a `u32`; also accepts `"100"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number from 0 to {}", u32::MAX)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                u32::try_from(v)
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u32::try_from(v)
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                v.trim()
                    .parse::<u32>()
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A humantime duration: `"500ms"`, `"30s"`, `"5m"`, `"1h 30m"`.
///
/// A bare number is refused on purpose: `30` could mean seconds or
/// milliseconds, and guessing wrong silently is worse than asking for a unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn bare_number<E: de::Error>(n: impl fmt::Display) -> E {
                E::custom(format_args!(
                    "a duration needs a unit: write \"{n}s\" or \"{n}ms\" (units: ms, s, m, h, d)"
                ))
            }
        }
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                let trimmed = v.trim();
                if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
                    return Err(Self::bare_number(trimmed));
                }
                humantime::parse_duration(trimmed)
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format_args!(
                            "invalid duration {v:?}: {e}; write e.g. \"30s\", \"5m\" or \"500ms\""
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(Self::bare_number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(Self::bare_number(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(Self::bare_number(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size: `"16MiB"`, `"512 KiB"`, `"10MB"` (decimal), or a plain number
/// of bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HumanBytes(pub u64);

impl<'de> Deserialize<'de> for HumanBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"16MiB\", \"512KiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanBytes, E> {
                Ok(HumanBytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanBytes, E> {
                u64::try_from(v)
                    .map(HumanBytes)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanBytes, E> {
                v.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| HumanBytes(b.as_u64()))
                    .map_err(|_| {
                        E::custom(format_args!(
                            "invalid size {v:?}; write e.g. \"16MiB\", \"512KiB\" or \"10MB\""
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn raw_debug_output_shows_no_value() {
        let raw: RawServer = de(json!({
            "url": "http://u:url-secret@x/mcp", "headers": {"X-Key": "hdr-secret"},
            "env": {"T": "env-secret"}, "auth": {"type": "bearer", "token": "tok-secret"}
        }))
        .unwrap();
        let debug = format!("{raw:?}");
        for secret in ["url-secret", "hdr-secret", "env-secret", "tok-secret"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }

    fn de<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn durations_are_humantime_and_refuse_bare_numbers() {
        let ok = |s: &str| de::<HumanDuration>(json!(s)).map(|d| d.0);
        assert_eq!(ok("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(ok("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(ok("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(ok("1m 30s"), Ok(Duration::from_secs(90)));
        let bare = de::<HumanDuration>(json!(30)).unwrap_err();
        assert!(bare.contains("needs a unit"), "{bare}");
        let bare = ok("30").unwrap_err();
        assert!(bare.contains("\"30s\""), "{bare}");
        let bad = ok("soon").unwrap_err();
        assert!(bad.contains("invalid duration \"soon\""), "{bad}");
    }

    #[test]
    fn sizes_are_binary_or_decimal_or_bytes() {
        let ok = |v| de::<HumanBytes>(v).map(|b| b.0);
        assert_eq!(ok(json!("16MiB")), Ok(16 * 1024 * 1024));
        assert_eq!(ok(json!("512 KiB")), Ok(512 * 1024));
        assert_eq!(ok(json!("10MB")), Ok(10_000_000));
        assert_eq!(ok(json!(4096)), Ok(4096));
        assert_eq!(ok(json!("4096")), Ok(4096));
        assert!(ok(json!("lots")).unwrap_err().contains("invalid size"));
        assert!(ok(json!(-1)).is_err());
    }

    #[test]
    fn lenient_scalars_accept_their_string_forms() {
        assert_eq!(de::<Text>(json!(12345)), Ok(Text("12345".into())));
        assert_eq!(de::<Text>(json!(true)), Ok(Text("true".into())));
        assert_eq!(de::<Flag>(json!("FALSE")), Ok(Flag(false)));
        assert!(de::<Flag>(json!("maybe")).is_err());
        assert_eq!(de::<Count>(json!("100")), Ok(Count(100)));
        assert!(de::<Count>(json!(-1)).is_err());
        assert!(de::<Count>(json!(u64::MAX)).is_err());
        assert!(de::<Text>(json!({"a": 1})).is_err());
    }

    #[test]
    fn enum_spellings_match_the_design() {
        assert_eq!(
            de::<RawTransport>(json!("streamable-http")),
            Ok(RawTransport::StreamableHttp)
        );
        assert_eq!(de::<RawTransport>(json!("sse")), Ok(RawTransport::Sse));
        assert_eq!(de::<RawAuthType>(json!("oauth2")), Ok(RawAuthType::OAuth2));
        assert_eq!(de::<RawClientAuth>(json!("post")), Ok(RawClientAuth::Post));
        assert!(de::<RawTransport>(json!("http")).is_err());
    }
}
