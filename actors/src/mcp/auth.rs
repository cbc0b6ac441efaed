//! OAuth2 client credentials (RFC 6749 section 4.4) and the MCP
//! authorization spec's discovery of the token endpoint: the server's 401
//! challenge -> protected resource metadata (RFC 9728) -> authorization
//! server metadata (RFC 8414 / OpenID Connect discovery) -> `token_endpoint`.
//!
//! Plain async code over awc; the TokenRefresher actor drives it. Secrets
//! (the client secret, tokens) never reach an error message or a log line.

use std::time::Duration;

use awc::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use discovery_config::ClientAuth;
use serde::Deserialize;
use url::Url;

use super::error::redact_url;
use super::http;

/// Largest metadata or token response accepted.
const MAX_AUTH_BODY: usize = 1024 * 1024;

/// Why getting a token failed. Display is a sentence with the URL and the
/// server's own error code, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("OAuth2 token request to {url} failed: {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TokenEndpoint {
        url: String,
        /// RFC 6749 5.2 `error` (e.g. `invalid_client`), or `HTTP <status>`.
        error: String,
        description: Option<String>,
    },
    #[error("OAuth2 token request to {url} did not answer within {} (auth.token_timeout)", humantime::format_duration(*after))]
    Timeout { url: String, after: Duration },
    #[error("OAuth2 request to {url} failed: {detail}")]
    Transport { url: String, detail: String },
    /// A 3xx from the token endpoint: not followed, so the client
    /// credentials stay where they were configured to go (ADR 0011).
    #[error("OAuth2 token request to {url} was answered with HTTP {status} redirecting to {location}; redirects are not followed, so the client secret never goes elsewhere. Hint: set auth.token_url to the final URL")]
    Redirected {
        url: String,
        status: u16,
        location: String,
    },
    /// `auth.allowed_issuers` is set and the discovered authorization
    /// server is not in it: refused before anything is sent to it.
    #[error("the authorization server {issuer} named by {server} is not in auth.allowed_issuers; nothing was sent to it. Hint: add it to auth.allowed_issuers if you trust it, or set auth.token_url")]
    IssuerNotAllowed { server: String, issuer: String },
    #[error(
        "could not discover the token endpoint of {server}: {detail}. Hint: set auth.token_url"
    )]
    Discovery { server: String, detail: String },
}

/// What a token request gave.
#[derive(Clone)]
pub struct Token {
    pub access_token: String,
    /// Seconds, as the server said (None: not said).
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Where and how to ask for tokens, as configured or discovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEndpoint {
    pub url: Url,
    pub client_auth: ClientAuth,
    /// RFC 8707 `resource`: the canonical URL of the MCP server.
    pub resource: String,
    /// A `scope` from the server's challenge, which wins over configured ones.
    pub challenge_scope: Option<String>,
}

/// One client-credentials request.
pub struct TokenRequest<'a> {
    pub endpoint: &'a TokenEndpoint,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub scopes: &'a [String],
    pub audience: Option<&'a str>,
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// The canonical server URI (RFC 8707 / MCP spec): scheme and host lower
/// case, no fragment; the path is kept, a lone `/` dropped.
pub fn canonical_resource(url: &Url) -> String {
    let mut canon = url.clone();
    canon.set_fragment(None);
    canon.set_query(None);
    let _ = canon.set_username("");
    let _ = canon.set_password(None);
    let text = canon.to_string();
    if canon.path() == "/" {
        text.trim_end_matches('/').to_owned()
    } else {
        text
    }
}

/// `application/x-www-form-urlencoded` of one value (RFC 6749 2.3.1 uses it
/// for the Basic credentials too).
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Requests an access token with the client credentials grant.
pub async fn request_token(req: &TokenRequest<'_>) -> Result<Token, AuthError> {
    let shown = redact_url(&req.endpoint.url);
    let scope = req
        .endpoint
        .challenge_scope
        .clone()
        .or_else(|| (!req.scopes.is_empty()).then(|| req.scopes.join(" ")));
    let mut form: Vec<(&str, String)> = vec![("grant_type", "client_credentials".into())];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    form.push(("resource", req.endpoint.resource.clone()));
    if let Some(audience) = req.audience {
        form.push(("audience", audience.to_owned()));
    }
    let client = http::client(req.timeout);
    let mut post = client
        .post(req.endpoint.url.as_str())
        .timeout(req.timeout)
        .insert_header((ACCEPT, "application/json"))
        .insert_header((CONTENT_TYPE, "application/x-www-form-urlencoded"));
    match req.endpoint.client_auth {
        ClientAuth::Basic => {
            let credentials = format!(
                "{}:{}",
                form_encode(req.client_id),
                form_encode(req.client_secret)
            );
            let mut value = awc::http::header::HeaderValue::from_str(&format!(
                "Basic {}",
                BASE64.encode(credentials)
            ))
            .map_err(|_| AuthError::Transport {
                url: shown.clone(),
                detail: "the client credentials cannot be sent in a header".into(),
            })?;
            value.set_sensitive(true);
            post = post.insert_header((AUTHORIZATION, value));
        }
        ClientAuth::Post => {
            form.push(("client_id", req.client_id.to_owned()));
            form.push(("client_secret", req.client_secret.to_owned()));
        }
    }
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let sent = tokio::time::timeout(req.timeout, async {
        let mut resp = post
            .send_body(body)
            .await
            .map_err(|e| AuthError::Transport {
                url: shown.clone(),
                detail: e.to_string(),
            })?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(AuthError::Redirected {
                url: shown.clone(),
                status: status.as_u16(),
                location: http::redirect_location(&resp, req.endpoint.url.as_str()),
            });
        }
        let bytes = resp
            .body()
            .limit(MAX_AUTH_BODY)
            .await
            .map_err(|e| AuthError::Transport {
                url: shown.clone(),
                detail: e.to_string(),
            })?;
        Ok::<_, AuthError>((status, bytes))
    })
    .await
    .map_err(|_| AuthError::Timeout {
        url: shown.clone(),
        after: req.timeout,
    })??;
    let (status, bytes) = sent;
    if !status.is_success() {
        let parsed: Option<TokenErrorResponse> = serde_json::from_slice(&bytes).ok();
        return Err(match parsed {
            Some(e) => AuthError::TokenEndpoint {
                url: shown,
                error: e.error,
                description: e.error_description,
            },
            None => AuthError::TokenEndpoint {
                url: shown,
                error: format!("HTTP {}", status.as_u16()),
                description: None,
            },
        });
    }
    parse_token_response(&bytes).map_err(|e| AuthError::TokenEndpoint {
        url: shown.clone(),
        error: "invalid token response".into(),
        description: Some(e.to_string()),
    })
}

/// The body of a successful token response (RFC 6749 5.1); pure, so the
/// property tests can feed it anything.
pub(crate) fn parse_token_response(bytes: &[u8]) -> Result<Token, serde_json::Error> {
    let token: TokenResponse = serde_json::from_slice(bytes)?;
    let expires_in = token.expires_in.as_ref().and_then(parse_expires_in);
    Ok(Token {
        access_token: token.access_token,
        expires_in,
    })
}

/// `expires_in` as the server sent it, in whole seconds: an integer, a
/// float (truncated; huge ones saturate at `u64::MAX`), or either as a
/// string (some servers quote it). Negative means already expired (0);
/// anything else (NaN, `true`, `"soon"`) is as if it were absent. The
/// refresher clamps the result; this only reads it without panicking.
pub fn parse_expires_in(value: &serde_json::Value) -> Option<u64> {
    fn number(f: f64) -> Option<u64> {
        // `as` saturates: 1e30 is u64::MAX, -5.0 is 0.
        (!f.is_nan()).then_some(f as u64)
    }
    match value {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|_| 0))
            .or_else(|| n.as_f64().and_then(number)),
        serde_json::Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<i64>().ok().map(|_| 0))
                .or_else(|| s.parse::<f64>().ok().and_then(number))
        }
        _ => None,
    }
}

/// The parameters of a `Bearer` challenge (`WWW-Authenticate`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    pub resource_metadata: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
}

/// Parses the `Bearer` challenge of a `WWW-Authenticate` value
/// (`Bearer k="v", k2=v2`); other schemes are ignored.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let start = header.to_ascii_lowercase().find("bearer")?;
    let mut rest = header[start + "bearer".len()..].trim_start();
    let mut challenge = Challenge::default();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = quoted[end.min(quoted.len())..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches(',').trim_start();
        match key.as_str() {
            "resource_metadata" => challenge.resource_metadata = Some(value),
            "scope" => challenge.scope = Some(value),
            "error" => challenge.error = Some(value),
            _ => {}
        }
    }
    Some(challenge)
}

#[derive(Deserialize)]
struct ProtectedResourceMetadata {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    authorization_servers: Vec<String>,
}

#[derive(Deserialize)]
struct AuthorizationServerMetadata {
    #[serde(default)]
    issuer: Option<String>,
    token_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// The discovery detail for a 3xx: named, not followed (ADR 0011).
fn redirect_detail(method: &str, url: &Url, resp: &awc::ClientResponse) -> String {
    format!(
        "{method} {} answered HTTP {} redirecting to {}; redirects are not followed",
        redact_url(url),
        resp.status().as_u16(),
        http::redirect_location(resp, url.as_str())
    )
}

async fn get_json<T: serde::de::DeserializeOwned>(
    url: &Url,
    timeout: Duration,
) -> Result<Option<T>, String> {
    let client = http::client(timeout);
    let mut resp = match tokio::time::timeout(
        timeout,
        client
            .get(url.as_str())
            .timeout(timeout)
            .insert_header((ACCEPT, "application/json"))
            .send(),
    )
    .await
    {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(format!("GET {}: {e}", redact_url(url))),
        Err(_) => return Err(format!("GET {}: timed out", redact_url(url))),
    };
    if resp.status().is_redirection() {
        return Err(redirect_detail("GET", url, &resp));
    }
    if !resp.status().is_success() {
        return Ok(None);
    }
    let bytes = resp
        .body()
        .limit(MAX_AUTH_BODY)
        .await
        .map_err(|e| format!("GET {}: {e}", redact_url(url)))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("GET {}: not the expected JSON: {e}", redact_url(url)))
}

/// `/.well-known/<suffix>` inserted before the path of `base` (RFC 8414 /
/// RFC 9728 style), or appended to the origin when `base` has no path.
fn well_known(base: &Url, suffix: &str, with_path: bool) -> Option<Url> {
    let path = base.path().trim_end_matches('/');
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if with_path && !path.is_empty() {
        url.set_path(&format!("/.well-known/{suffix}{path}"));
    } else {
        url.set_path(&format!("/.well-known/{suffix}"));
    }
    Some(url)
}

/// Whether `host` is loopback: 127.0.0.0/8, ::1 or `localhost`.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Discovered URLs (metadata, authorization server, token endpoint) must be
/// https: over plain http anyone on the path could name another token
/// endpoint and receive the client secret. The one exception is a loopback
/// http MCP URL (a local test or sidecar), which may use loopback http.
fn require_secure(what: &str, url: &Url, server: &Url) -> Result<(), String> {
    let local = server.scheme() == "http" && is_loopback(server);
    if url.scheme() == "https" || (local && url.scheme() == "http" && is_loopback(url)) {
        return Ok(());
    }
    Err(format!(
        "the {what} {} is not https (plain http is accepted only on loopback, with a loopback http MCP URL)",
        redact_url(url)
    ))
}

/// RFC 8414 3.3: the metadata's `issuer` is the issuer its URL was built
/// from (a trailing `/` aside).
fn same_issuer(stated: &str, issuer: &Url) -> bool {
    stated.trim_end_matches('/') == issuer.as_str().trim_end_matches('/')
}

/// Whether `issuer` may receive a secret: any when `allowed` is empty, else
/// one of the list (compared as parsed URLs, a trailing `/` aside).
fn issuer_allowed(issuer: &Url, allowed: &[Url]) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a.as_str().trim_end_matches('/') == issuer.as_str().trim_end_matches('/'))
}

/// [`discover_checked`] with no `auth.allowed_issuers`.
pub async fn discover(
    server: &Url,
    configured: ClientAuth,
    timeout: Duration,
) -> Result<TokenEndpoint, AuthError> {
    discover_checked(server, configured, timeout, &[]).await
}

/// Finds the token endpoint of the MCP server at `server`, as the MCP
/// authorization spec says: its 401 challenge (made with an unauthenticated
/// request) names the protected resource metadata, or the well-known
/// locations are tried; its first authorization server's metadata names the
/// token endpoint. `configured` is the client auth method of the config.
///
/// Nothing is trusted blindly (ADR 0011): every URL involved must be https
/// (loopback http only for a loopback http MCP URL), the resource metadata
/// must name this server as its `resource`, the authorization server
/// metadata must state the issuer it was fetched for, and when
/// `allowed_issuers` is not empty the issuer must be one of them.
pub async fn discover_checked(
    server: &Url,
    configured: ClientAuth,
    timeout: Duration,
    allowed_issuers: &[Url],
) -> Result<TokenEndpoint, AuthError> {
    let shown = redact_url(server);
    let fail = |detail: String| AuthError::Discovery {
        server: shown.clone(),
        detail,
    };
    // 1. An unauthenticated request: the challenge.
    let client = http::client(timeout);
    let probe = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": super::era::legacy::initialize_params(super::LATEST_PROTOCOL_VERSION),
    });
    let challenge = match tokio::time::timeout(
        timeout,
        client
            .post(server.as_str())
            .timeout(timeout)
            .insert_header((ACCEPT, "application/json, text/event-stream"))
            .send_json(&probe),
    )
    .await
    {
        Ok(Ok(resp)) if resp.status().as_u16() == 401 => resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .unwrap_or_default(),
        Ok(Ok(resp)) if resp.status().is_redirection() => {
            return Err(fail(redirect_detail("POST", server, &resp)))
        }
        Ok(Ok(resp)) => {
            return Err(fail(format!(
                "an unauthenticated request got HTTP {}, not 401",
                resp.status().as_u16()
            )))
        }
        Ok(Err(e)) => return Err(fail(format!("the unauthenticated request failed: {e}"))),
        Err(_) => return Err(fail("the unauthenticated request timed out".into())),
    };

    // 2. Protected resource metadata.
    let mut candidates = Vec::new();
    if let Some(url) = challenge.resource_metadata.as_deref() {
        candidates.push(
            server
                .join(url)
                .map_err(|e| fail(format!("bad resource_metadata URL: {e}")))?,
        );
    } else {
        candidates.extend(well_known(server, "oauth-protected-resource", true));
        candidates.extend(well_known(server, "oauth-protected-resource", false));
        candidates.dedup();
    }
    let mut prm = None;
    for url in &candidates {
        require_secure("protected resource metadata URL", url, server).map_err(&fail)?;
        if let Some(doc) = get_json::<ProtectedResourceMetadata>(url, timeout)
            .await
            .map_err(&fail)?
        {
            prm = Some(doc);
            break;
        }
    }
    let prm = prm.ok_or_else(|| {
        fail(format!(
            "no protected resource metadata at {}",
            candidates
                .iter()
                .map(redact_url)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    // RFC 9728 3.3: the metadata must be about this server, or a token for
    // another resource would be requested (and sent here).
    // `resource` is REQUIRED (RFC 9728 2): without it nothing says the
    // document is about this server.
    let resource = match prm.resource.as_deref() {
        Some(resource) => {
            if !resource_covers(resource, server) {
                return Err(fail(format!(
                    "the protected resource metadata is for {resource}, not for this server"
                )));
            }
            resource.to_owned()
        }
        None => {
            return Err(fail(
                "the protected resource metadata has no `resource` (RFC 9728 requires it)".into(),
            ))
        }
    };
    let issuer = prm.authorization_servers.first().ok_or_else(|| {
        fail("the protected resource metadata lists no authorization_servers".into())
    })?;
    let issuer =
        Url::parse(issuer).map_err(|e| fail(format!("bad authorization server URL: {e}")))?;
    require_secure("authorization server", &issuer, server).map_err(&fail)?;
    if !issuer_allowed(&issuer, allowed_issuers) {
        return Err(AuthError::IssuerNotAllowed {
            server: shown.clone(),
            issuer: redact_url(&issuer),
        });
    }

    // 3. Authorization server metadata, in the spec's order.
    let has_path = !issuer.path().trim_end_matches('/').is_empty();
    let mut as_candidates: Vec<Url> = Vec::new();
    if has_path {
        as_candidates.extend(well_known(&issuer, "oauth-authorization-server", true));
        as_candidates.extend(well_known(&issuer, "openid-configuration", true));
        let mut appended = issuer.clone();
        appended.set_path(&format!(
            "{}/.well-known/openid-configuration",
            issuer.path().trim_end_matches('/')
        ));
        as_candidates.push(appended);
    } else {
        as_candidates.extend(well_known(&issuer, "oauth-authorization-server", false));
        as_candidates.extend(well_known(&issuer, "openid-configuration", false));
    }
    let mut asm = None;
    for url in &as_candidates {
        if let Some(doc) = get_json::<AuthorizationServerMetadata>(url, timeout)
            .await
            .map_err(&fail)?
        {
            asm = Some(doc);
            break;
        }
    }
    let asm = asm.ok_or_else(|| {
        fail(format!(
            "no authorization server metadata for {}",
            redact_url(&issuer)
        ))
    })?;
    // RFC 8414 3.3: the document must be the named issuer's own (`issuer`
    // is REQUIRED).
    match asm.issuer.as_deref() {
        Some(stated) if same_issuer(stated, &issuer) => {}
        Some(stated) => {
            return Err(fail(format!(
                "the authorization server metadata names issuer {}, not {}",
                super::error::excerpt(stated.as_bytes(), 200),
                redact_url(&issuer)
            )))
        }
        None => {
            return Err(fail(format!(
                "the authorization server metadata for {} has no `issuer` (RFC 8414 requires it)",
                redact_url(&issuer)
            )))
        }
    }
    let token_url = asm
        .token_endpoint
        .ok_or_else(|| fail("the authorization server metadata has no token_endpoint".into()))?;
    let token_url = Url::parse(&token_url).map_err(|e| fail(format!("bad token_endpoint: {e}")))?;
    require_secure("token endpoint", &token_url, server).map_err(&fail)?;
    let client_auth = pick_client_auth(
        configured,
        asm.token_endpoint_auth_methods_supported.as_deref(),
    );
    Ok(TokenEndpoint {
        url: token_url,
        client_auth,
        resource,
        challenge_scope: challenge.scope,
    })
}

/// Whether the metadata's `resource` identifies `server`: the same origin,
/// and a path that is the server's or a parent of it.
fn resource_covers(resource: &str, server: &Url) -> bool {
    let Ok(resource) = Url::parse(resource) else {
        return false;
    };
    let path = resource.path().trim_end_matches('/');
    let server_path = server.path().trim_end_matches('/');
    resource.origin() == server.origin()
        && (path.is_empty() || server_path == path || server_path.starts_with(&format!("{path}/")))
}

/// The configured method if the server supports it (or says nothing),
/// else the first of basic / post it lists.
pub fn pick_client_auth(configured: ClientAuth, supported: Option<&[String]>) -> ClientAuth {
    let Some(supported) = supported else {
        return configured;
    };
    let name = |m: ClientAuth| match m {
        ClientAuth::Basic => "client_secret_basic",
        ClientAuth::Post => "client_secret_post",
    };
    if supported.iter().any(|s| s == name(configured)) {
        return configured;
    }
    [ClientAuth::Basic, ClientAuth::Post]
        .into_iter()
        .find(|m| supported.iter().any(|s| s == name(*m)))
        .unwrap_or(configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer resource_metadata="https://s/.well-known/oauth-protected-resource/mcp", scope="a b""#,
        )
        .unwrap();
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://s/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c.scope.as_deref(), Some("a b"));
        let c = parse_challenge(r#"Bearer error="insufficient_scope", scope=read"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(c.scope.as_deref(), Some("read"));
        assert_eq!(parse_challenge("Bearer").unwrap(), Challenge::default());
        assert!(parse_challenge("Basic realm=x").is_none());
        let c = parse_challenge(r#"Basic realm="x", Bearer realm="a\"b", scope="s""#).unwrap();
        assert_eq!(c.scope.as_deref(), Some("s"));
    }

    #[test]
    fn canonical_resource_drops_fragment_query_and_lone_slash() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            canonical_resource(&u("HTTPS://Example.COM/mcp#x")),
            "https://example.com/mcp"
        );
        assert_eq!(
            canonical_resource(&u("https://example.com/")),
            "https://example.com"
        );
        assert_eq!(
            canonical_resource(&u("http://127.0.0.1:8080/mcp?a=1")),
            "http://127.0.0.1:8080/mcp"
        );
    }

    #[test]
    fn well_known_urls_follow_rfc_8414_and_9728() {
        let server = Url::parse("https://s.example/api/mcp").unwrap();
        assert_eq!(
            well_known(&server, "oauth-protected-resource", true)
                .unwrap()
                .as_str(),
            "https://s.example/.well-known/oauth-protected-resource/api/mcp"
        );
        assert_eq!(
            well_known(&server, "oauth-protected-resource", false)
                .unwrap()
                .as_str(),
            "https://s.example/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn metadata_must_be_about_this_server() {
        let server = Url::parse("http://127.0.0.1:8000/api/mcp").unwrap();
        assert!(resource_covers("http://127.0.0.1:8000/api/mcp", &server));
        assert!(resource_covers("http://127.0.0.1:8000/api", &server));
        assert!(resource_covers("http://127.0.0.1:8000/", &server));
        assert!(!resource_covers("http://127.0.0.1:8000/ap", &server));
        assert!(!resource_covers(
            "https://elsewhere.example/api/mcp",
            &server
        ));
        assert!(!resource_covers("http://127.0.0.1:8001/api/mcp", &server));
        assert!(!resource_covers("not a url", &server));
    }

    #[test]
    fn discovered_urls_must_be_https_unless_all_loopback_http() {
        let u = |s: &str| Url::parse(s).unwrap();
        let remote = u("https://mcp.example/mcp");
        assert!(require_secure("x", &u("https://idp.example/token"), &remote).is_ok());
        let e = require_secure(
            "token endpoint",
            &u("http://idp.example/token?k=v"),
            &remote,
        )
        .unwrap_err();
        assert!(
            e.contains("token endpoint http://idp.example/token?…"),
            "{e}"
        );
        // An https MCP URL does not open loopback http.
        assert!(require_secure("x", &u("http://127.0.0.1:9/token"), &remote).is_err());
        // A plain-http remote MCP URL does not either.
        let plain = u("http://mcp.example/mcp");
        assert!(require_secure("x", &u("http://mcp.example/.well-known/x"), &plain).is_err());
        assert!(require_secure("x", &u("http://127.0.0.1:9/token"), &plain).is_err());
        for local in [
            "http://127.0.0.1:8000/mcp",
            "http://127.8.9.1/mcp",
            "http://[::1]:1/mcp",
            "http://LocalHost:1/mcp",
        ] {
            let local = u(local);
            assert!(require_secure("x", &u("http://127.0.0.1:9/token"), &local).is_ok());
            assert!(require_secure("x", &u("http://localhost:9/token"), &local).is_ok());
            assert!(require_secure("x", &u("http://[::1]:9/token"), &local).is_ok());
            assert!(require_secure("x", &u("https://idp.example/token"), &local).is_ok());
            assert!(require_secure("x", &u("http://idp.example/token"), &local).is_err());
            assert!(require_secure("x", &u("http://10.0.0.1/token"), &local).is_err());
        }
        assert!(require_secure("x", &u("ftp://127.0.0.1/x"), &u("http://127.0.0.1/")).is_err());
    }

    #[test]
    fn the_issuer_must_be_the_one_asked_and_allowed() {
        let issuer = Url::parse("https://idp.example/tenant").unwrap();
        assert!(same_issuer("https://idp.example/tenant", &issuer));
        assert!(same_issuer("https://idp.example/tenant/", &issuer));
        assert!(!same_issuer("https://evil.example/tenant", &issuer));
        assert!(!same_issuer("https://idp.example/other", &issuer));
        assert!(issuer_allowed(&issuer, &[]));
        let list = |v: &[&str]| v.iter().map(|s| Url::parse(s).unwrap()).collect::<Vec<_>>();
        assert!(issuer_allowed(
            &issuer,
            &list(&["https://IDP.example/tenant/"])
        ));
        assert!(!issuer_allowed(&issuer, &list(&["https://idp.example/"])));
        assert!(!issuer_allowed(
            &issuer,
            &list(&["https://other.example/tenant"])
        ));
    }

    #[test]
    fn client_auth_is_picked_from_what_the_server_supports() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pick_client_auth(ClientAuth::Basic, None), ClientAuth::Basic);
        assert_eq!(
            pick_client_auth(ClientAuth::Basic, Some(&list(&["client_secret_post"]))),
            ClientAuth::Post
        );
        assert_eq!(
            pick_client_auth(
                ClientAuth::Post,
                Some(&list(&["client_secret_basic", "client_secret_post"]))
            ),
            ClientAuth::Post
        );
        assert_eq!(
            pick_client_auth(ClientAuth::Post, Some(&list(&["private_key_jwt"]))),
            ClientAuth::Post
        );
    }

    #[test]
    fn expires_in_is_read_in_every_form_without_panicking() {
        use serde_json::json;
        let p = |v: serde_json::Value| parse_expires_in(&v);
        assert_eq!(p(json!(3600)), Some(3600));
        assert_eq!(p(json!(0)), Some(0));
        assert_eq!(p(json!(u64::MAX)), Some(u64::MAX));
        assert_eq!(p(json!(3600.9)), Some(3600));
        assert_eq!(p(json!(1e30)), Some(u64::MAX));
        assert_eq!(p(json!(-5)), Some(0));
        assert_eq!(p(json!(-1e30)), Some(0));
        assert_eq!(p(json!("120")), Some(120));
        assert_eq!(p(json!(" 1e30 ")), Some(u64::MAX));
        assert_eq!(p(json!("-3")), Some(0));
        assert_eq!(p(json!("99999999999999999999999999")), Some(u64::MAX));
        assert_eq!(p(json!("NaN")), None);
        assert_eq!(p(json!("soon")), None);
        assert_eq!(p(json!(true)), None);
        assert_eq!(p(json!(null)), None);
        assert_eq!(p(json!({"s": 1})), None);
    }

    #[test]
    fn errors_never_show_the_secret() {
        let e = AuthError::TokenEndpoint {
            url: "https://idp/token".into(),
            error: "invalid_client".into(),
            description: Some("client authentication failed".into()),
        };
        assert_eq!(
            e.to_string(),
            "OAuth2 token request to https://idp/token failed: invalid_client: client authentication failed"
        );
        let t = Token {
            access_token: "tok-123".into(),
            expires_in: Some(3),
        };
        assert!(!format!("{t:?}").contains("tok-123"));
    }
}
