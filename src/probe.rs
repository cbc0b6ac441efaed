//! `mcp-discovery probe`: one discovery against one server, with the same
//! MCP client the engine uses, and a readable (or `--json`) report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use discovery_actors::error_chain;
use discovery_actors::mcp::auth::{self, AuthError, TokenEndpoint, TokenRequest};
use discovery_actors::mcp::cache::CacheHint;
use discovery_actors::mcp::era::EraKind;
use discovery_actors::mcp::{
    connect, BearerSlot, ClientOptions, Inventory, McpError, ServerInfo, Target, Tool,
};
use discovery_actors::tools::{ToolProblem, ToolReport};
use discovery_config::{ClientAuth, Secret};
use discovery_config::{DiscoverySettings, ProtocolChoice, TransportKind};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use url::Url;

use crate::cli::exit;
use crate::telemetry::{self, LogFormat};

const AFTER_HELP: &str = "\
Examples:
  mcp-discovery probe http://127.0.0.1:3001/mcp
  MCP_DISCOVERY_PROBE_TOKEN=\"$TOKEN\" mcp-discovery probe https://mcp.example.com/mcp -H 'X-Team: infra'
  mcp-discovery probe https://mcp.example.com/mcp --bearer-file /run/secrets/token -H @/run/secrets/headers
  mcp-discovery probe https://mcp.example.com/mcp --client-id my-app --client-secret-file /run/secrets/oauth --scope mcp.read
  mcp-discovery probe http://127.0.0.1:3001/sse --transport sse --json
  mcp-discovery probe --stdio -- npx -y @modelcontextprotocol/server-everything
  mcp-discovery probe http://127.0.0.1:3001/mcp --call get_weather --arguments '{\"city\": \"Oslo\"}'

Secrets: a flag's value is visible to every user of the machine (`ps`), so prefer a file
(--bearer-file, --client-secret-file, -H @FILE) or the environment (MCP_DISCOVERY_PROBE_TOKEN,
MCP_DISCOVERY_PROBE_CLIENT_SECRET). A flag wins over its file, a file over the environment.
A --stdio child gets the same cleared environment as in the service (--env-inherit: all of it,
MCP_DISCOVERY* excluded).

--call: after discovery, calls one listed tool on the same session and prints its result
verbatim (JSON) instead of the report; a tool that failed validation is never called.

Exit codes: 0 discovered (and called), 2 the server was unreachable or answered badly, the
tool cannot be called or its result has isError: true, 64 usage error.";

/// Environment variable with the bearer token (when no flag or file gives one).
pub const TOKEN_ENV: &str = "MCP_DISCOVERY_PROBE_TOKEN";
/// Environment variable with the OAuth2 client secret.
pub const CLIENT_SECRET_ENV: &str = "MCP_DISCOVERY_PROBE_CLIENT_SECRET";

/// HTTP transports `probe` can force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ProbeTransport {
    /// Streamable HTTP, falling back to HTTP+SSE on 400/404/405.
    #[default]
    Auto,
    /// Streamable HTTP only (2025-03-26 and later).
    StreamableHttp,
    /// Legacy HTTP+SSE (2024-11-05).
    Sse,
}

impl From<ProbeTransport> for TransportKind {
    fn from(t: ProbeTransport) -> Self {
        match t {
            ProbeTransport::Auto => TransportKind::Auto,
            ProbeTransport::StreamableHttp => TransportKind::StreamableHttp,
            ProbeTransport::Sse => TransportKind::Sse,
        }
    }
}

/// `probe`'s command line. `Debug` shows the URL redacted and no argument
/// of a stdio command (secrets are [`Secret`]s already).
#[derive(Clone, Args)]
#[command(after_help = AFTER_HELP)]
pub struct ProbeArgs {
    /// The server's MCP endpoint (http:// or https://).
    #[arg(
        value_name = "URL",
        value_parser = parse_http_url,
        required_unless_present = "stdio",
        conflicts_with = "stdio"
    )]
    pub url: Option<Url>,

    /// Spawn a stdio server instead: the command and its arguments follow `--`.
    #[arg(long, requires = "command")]
    pub stdio: bool,

    /// HTTP transport to use.
    #[arg(long, value_enum, default_value_t = ProbeTransport::Auto, conflicts_with = "stdio")]
    pub transport: ProbeTransport,

    /// MCP era: `auto` (server/discover first, then the 2025 handshake) or
    /// a pinned revision (2026-07-28, 2025-11-25, 2025-06-18, 2025-03-26,
    /// 2024-11-05).
    #[arg(long, value_name = "auto|REVISION", default_value = "auto", value_parser = parse_protocol)]
    pub protocol: ProtocolChoice,

    /// Extra HTTP header, repeatable; `@FILE` reads `NAME: VALUE` lines
    /// from FILE (blank lines and `#` comments skipped), out of `ps`'s sight.
    #[arg(
        long = "header",
        short = 'H',
        value_name = "'NAME: VALUE' | @FILE",
        value_parser = parse_header_arg,
        conflicts_with = "stdio"
    )]
    pub headers: Vec<HeaderArg>,

    /// Send `Authorization: Bearer TOKEN`. Visible in `ps`: prefer
    /// --bearer-file or MCP_DISCOVERY_PROBE_TOKEN.
    #[arg(long, value_name = "TOKEN", value_parser = parse_secret, conflicts_with_all = ["stdio", "client_id", "bearer_file"])]
    pub bearer: Option<Secret>,

    /// Read the bearer token from FILE (surrounding whitespace trimmed).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stdio", "client_id"])]
    pub bearer_file: Option<PathBuf>,

    /// OAuth2 client credentials: the client id; the secret comes from
    /// --client-secret-file, MCP_DISCOVERY_PROBE_CLIENT_SECRET or --client-secret.
    #[arg(long, value_name = "ID", conflicts_with = "stdio")]
    pub client_id: Option<String>,

    /// OAuth2 client credentials: the client secret (never printed).
    /// Visible in `ps`: prefer --client-secret-file or the environment.
    #[arg(long, value_name = "SECRET", value_parser = parse_secret, requires = "client_id", conflicts_with = "client_secret_file")]
    pub client_secret: Option<Secret>,

    /// Read the OAuth2 client secret from FILE (surrounding whitespace trimmed).
    #[arg(long, value_name = "FILE", requires = "client_id")]
    pub client_secret_file: Option<PathBuf>,

    /// With --stdio: pass this whole environment to the child (MCP_DISCOVERY*
    /// excluded), not just the allowlist the service uses.
    #[arg(long, requires = "stdio")]
    pub env_inherit: bool,

    /// OAuth2 token endpoint; omitted: discovered from the server (MCP
    /// authorization spec).
    #[arg(long, value_name = "URL", value_parser = parse_http_url, requires = "client_id")]
    pub token_url: Option<Url>,

    /// OAuth2 scope to request, repeatable.
    #[arg(long = "scope", value_name = "SCOPE", requires = "client_id")]
    pub scopes: Vec<String>,

    /// Timeout of the connection and of each request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// After discovery, call this listed tool (`tools/call`) on the same
    /// session and print its result verbatim instead of the report.
    #[arg(long, value_name = "TOOL")]
    pub call: Option<String>,

    /// With --call: the tool's arguments, a JSON object (default `{}`).
    #[arg(long, value_name = "JSON", value_parser = parse_arguments, requires = "call")]
    pub arguments: Option<Value>,

    /// Log format (logs go to stderr; default level: warn).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// With --stdio: the command to spawn and its arguments.
    #[arg(last = true, value_name = "CMD", requires = "stdio")]
    pub command: Vec<String>,
}

impl std::fmt::Debug for ProbeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            url,
            stdio,
            transport,
            protocol,
            headers,
            bearer,
            bearer_file,
            client_id,
            client_secret,
            client_secret_file,
            env_inherit,
            token_url,
            scopes,
            timeout,
            json,
            call,
            arguments,
            log_format,
            command,
        } = self;
        f.debug_struct("ProbeArgs")
            .field(
                "url",
                &url.as_ref().map(discovery_actors::mcp::error::redact_url),
            )
            .field("stdio", stdio)
            .field("transport", transport)
            .field("protocol", protocol)
            .field("headers", headers)
            .field("bearer", bearer)
            .field("bearer_file", bearer_file)
            .field("client_id", client_id)
            .field("client_secret", client_secret)
            .field("client_secret_file", client_secret_file)
            .field("env_inherit", env_inherit)
            .field(
                "token_url",
                &token_url
                    .as_ref()
                    .map(discovery_actors::mcp::error::redact_url),
            )
            .field("scopes", scopes)
            .field("timeout", timeout)
            .field("json", json)
            .field("call", call)
            // Arguments may hold anything the caller typed: only their size.
            .field(
                "arguments",
                &arguments
                    .as_ref()
                    .map(|a| format!("{} bytes", a.to_string().len())),
            )
            .field("log_format", log_format)
            .field("command", &describe_command(command))
            .finish()
    }
}

/// A stdio command as `/v1/servers` shows it: program and argument count.
fn describe_command(command: &[String]) -> Option<String> {
    command
        .split_first()
        .map(|(c, args)| discovery_actors::status::stdio_display(c, args.len()))
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{e}; expected e.g. http://127.0.0.1:3001/mcp"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "unsupported scheme {other:?}; expected http:// or https:// (use --stdio -- CMD for a local command)"
        )),
    }
}

/// One `-H` argument.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderArg {
    Inline(String, Secret),
    File(PathBuf),
}

fn parse_header_arg(s: &str) -> Result<HeaderArg, String> {
    match s.strip_prefix('@') {
        Some(path) if !path.is_empty() => Ok(HeaderArg::File(PathBuf::from(path))),
        Some(_) => Err("@ needs a file name: -H @FILE".into()),
        None => parse_header(s).map(|(n, v)| HeaderArg::Inline(n, Secret::new(v))),
    }
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

/// A secret from a file: the contents, trimmed; never echoed.
fn read_secret_file(path: &Path, what: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(Secret::new(text))
}

/// The secrets of a probe, from flags, files and the environment.
#[derive(Debug, Default)]
pub struct ProbeSecrets {
    pub headers: Vec<(String, Secret)>,
    pub bearer: Option<Secret>,
    pub client_secret: Option<Secret>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not 'NAME: VALUE'"))?;
    let name = name.trim();
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_name {
        return Err(format!("{name:?} is not a valid header name"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

impl ProbeArgs {
    /// Gathers the secrets: a flag wins over its file, a file over the
    /// environment (`env` looks a variable up; empty counts as unset).
    pub fn secrets(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<ProbeSecrets, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut headers = Vec::new();
        for h in &self.headers {
            match h {
                HeaderArg::Inline(name, value) => headers.push((name.clone(), value.clone())),
                HeaderArg::File(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        format!("cannot read the header file {}: {e}", path.display())
                    })?;
                    for (n, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        // The line is not echoed: it holds a secret.
                        let (name, value) = parse_header(line).map_err(|_| {
                            format!("{} line {}: not 'NAME: VALUE'", path.display(), n + 1)
                        })?;
                        headers.push((name, Secret::new(value)));
                    }
                }
            }
        }
        let http = !self.stdio;
        let bearer = match (&self.bearer, &self.bearer_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(read_secret_file(path, "bearer token")?),
            (None, None) if http && self.client_id.is_none() => env(TOKEN_ENV).map(Secret::new),
            (None, None) => None,
        };
        let client_secret = match (
            &self.client_id,
            &self.client_secret,
            &self.client_secret_file,
        ) {
            (None, _, _) => None,
            (Some(_), Some(secret), _) => Some(secret.clone()),
            (Some(_), None, Some(path)) => Some(read_secret_file(path, "client secret")?),
            (Some(_), None, None) => {
                Some(env(CLIENT_SECRET_ENV).map(Secret::new).ok_or_else(|| {
                    format!(
                        "--client-id needs the client secret: --client-secret-file FILE, \
                         {CLIENT_SECRET_ENV}, or --client-secret"
                    )
                })?)
            }
        };
        Ok(ProbeSecrets {
            headers,
            bearer,
            client_secret,
        })
    }

    fn target(&self) -> Option<Target> {
        if self.stdio {
            let (command, args) = self.command.split_first()?;
            return Some(Target::Stdio {
                command: command.clone(),
                args: args.to_vec(),
                env: IndexMap::new(),
                env_inherit: self.env_inherit,
                cwd: None,
            });
        }
        Some(Target::Http {
            url: self.url.clone()?,
            transport: self.transport.into(),
        })
    }

    /// The OAuth2 client credentials, when given (HTTP only).
    #[allow(clippy::type_complexity)]
    fn oauth2(
        &self,
        secrets: &ProbeSecrets,
    ) -> Option<(Url, String, Secret, Option<Url>, Vec<String>)> {
        Some((
            self.url.clone()?,
            self.client_id.clone()?,
            secrets.client_secret.clone()?,
            self.token_url.clone(),
            self.scopes.clone(),
        ))
    }

    /// How the target is named in messages, as `/v1/servers` would show it
    /// (no user info or query of the URL, no argument of the command).
    pub fn describe(&self) -> String {
        if self.stdio {
            describe_command(&self.command)
                .map(|c| format!("`{c}`"))
                .unwrap_or_default()
        } else {
            self.url
                .as_ref()
                .map(discovery_actors::mcp::error::redact_url)
                .unwrap_or_default()
        }
    }

    fn client_options(&self, secrets: &ProbeSecrets) -> ClientOptions {
        let defaults = DiscoverySettings::default();
        let mut opts = ClientOptions::from_settings("probe", &defaults);
        opts.request_timeout = self.timeout;
        opts.connect_timeout = self.timeout;
        opts.protocol = self.protocol;
        opts.headers = secrets
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.expose().to_owned()))
            .collect();
        if let Some(token) = &secrets.bearer {
            opts.headers.push((
                "Authorization".to_owned(),
                format!("Bearer {}", token.expose()),
            ));
        }
        opts
    }
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Mcp(#[from] discovery_actors::mcp::McpError),
    #[error("{0}")]
    Auth(String),
    /// The tool cannot be called (not listed, or invalid): nothing sent.
    #[error("{0}")]
    Call(String),
    /// The `tools/call` request itself failed.
    #[error(transparent)]
    CallFailed(discovery_actors::mcp::McpError),
}

/// One client-credentials token, as the engine's TokenRefresher gets it.
async fn fetch_token(
    server: &Url,
    client_id: &str,
    client_secret: &str,
    token_url: Option<Url>,
    scopes: &[String],
    timeout: Duration,
) -> Result<String, AuthError> {
    let endpoint = match token_url {
        Some(url) => TokenEndpoint {
            url,
            client_auth: ClientAuth::Basic,
            resource: auth::canonical_resource(server),
            challenge_scope: None,
        },
        None => auth::discover(server, ClientAuth::Basic, timeout).await?,
    };
    let token = auth::request_token(&TokenRequest {
        endpoint: &endpoint,
        client_id,
        client_secret,
        scopes,
        audience: None,
        timeout,
    })
    .await?;
    Ok(token.access_token)
}

/// Runs `probe`: exit 0 with the report on stdout, or 2 with one sentence on
/// stderr.
pub fn run(args: ProbeArgs) -> ExitCode {
    if let Err(err) = telemetry::init(args.log_format, "warn") {
        eprintln!("warning: {err}");
    }
    let Some(target) = args.target() else {
        eprintln!("error: give a URL, or --stdio -- CMD ARGS...");
        return ExitCode::from(exit::USAGE);
    };
    let secrets = match args.secrets(&|name| std::env::var(name).ok()) {
        Ok(secrets) => secrets,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let mut opts = args.client_options(&secrets);
    let system = actix_rt::System::new();
    let oauth2 = args.oauth2(&secrets);
    let call = args.call.clone().map(|name| {
        let arguments = args
            .arguments
            .clone()
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        (name, arguments)
    });
    let result = system.block_on(async move {
        if let Some((server, client_id, secret, token_url, scopes)) = oauth2 {
            let token = fetch_token(
                &server,
                &client_id,
                secret.expose(),
                token_url,
                &scopes,
                args.timeout,
            )
            .await
            .map_err(|e| ProbeError::Auth(error_chain(&e)))?;
            let slot = BearerSlot::default();
            slot.set(Some(token));
            opts.bearer = Some(slot);
        }
        let session = connect(&target, opts).await?;
        let inventory = session.discover().await;
        let info = session.info();
        let discover_hint = session.discover_hint();
        let outcome = match (inventory, call) {
            (Ok(inv), None) => Ok(Probed::Discovered(info, inv, discover_hint)),
            (Ok(inv), Some((name, arguments))) => call_listed(&session, &inv, &name, arguments)
                .await
                .map(Probed::Called),
            (Err(e), _) => Err(ProbeError::from(e)),
        };
        session.close().await;
        outcome
    });
    match result {
        Ok(Probed::Called(called)) => {
            println!("{}", called.get());
            if is_error_result(&called) {
                eprintln!(
                    "error: tool {:?} answered with isError: true",
                    args.call.as_deref().unwrap_or_default()
                );
                return ExitCode::from(exit::UPSTREAM_FAILURE);
            }
            ExitCode::from(exit::OK)
        }
        Ok(Probed::Discovered(info, inventory, discover_hint)) => {
            let checked = Checked::new(&inventory, discover_hint);
            if args.json {
                match serde_json::to_string_pretty(&ProbeReport::new(&info, &inventory, &checked)) {
                    Ok(json) => println!("{json}"),
                    Err(err) => {
                        eprintln!("error: could not encode the report: {err}");
                        return ExitCode::from(exit::UPSTREAM_FAILURE);
                    }
                }
            } else {
                print!("{}", render_text(&info, &inventory, &checked));
            }
            ExitCode::from(exit::OK)
        }
        Err(ProbeError::Call(why)) => {
            eprintln!("error: {why}");
            ExitCode::from(exit::UPSTREAM_FAILURE)
        }
        Err(ProbeError::CallFailed(err)) => {
            eprintln!(
                "error: the call of {:?} on {} failed: {}",
                args.call.as_deref().unwrap_or_default(),
                args.describe(),
                error_chain(&err)
            );
            ExitCode::from(exit::UPSTREAM_FAILURE)
        }
        Err(err) => {
            eprintln!(
                "error: discovery of {} failed: {}",
                args.describe(),
                error_chain(&err)
            );
            ExitCode::from(exit::UPSTREAM_FAILURE)
        }
    }
}

/// `--arguments`: a JSON object.
fn parse_arguments(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => {
            Err("the tool's arguments must be a JSON object, e.g. '{\"city\": \"Oslo\"}'".into())
        }
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// What a probe brought back.
enum Probed {
    /// The server's description, its listings and the hints of its
    /// `server/discover` (2026-07-28).
    Discovered(
        ServerInfo,
        Inventory,
        Option<discovery_actors::mcp::cache::CacheHint>,
    ),
    /// `--call`: the call's raw result.
    Called(Box<RawValue>),
}

/// `--call`: the listed tool of that name (its copies must agree, as the
/// engine's validation wants), called with `arguments`.
async fn call_listed(
    session: &discovery_actors::mcp::Session,
    inventory: &Inventory,
    name: &str,
    arguments: Value,
) -> Result<Box<RawValue>, ProbeError> {
    let mut listed = inventory.tools.iter().filter(|t| t.name == name);
    let Some(tool) = listed.next() else {
        return Err(ProbeError::Call(format!(
            "the server does not list a tool named {:?} (it lists {})",
            discovery_actors::mcp::error::clip(name, 128),
            inventory.tools.len()
        )));
    };
    if listed.any(|other| other.raw.get() != tool.raw.get()) {
        return Err(ProbeError::Call(format!(
            "tool {:?} cannot be called: the server lists different tools under that name",
            discovery_actors::mcp::error::clip(name, 128)
        )));
    }
    session
        .call_tool(tool, arguments, None)
        .await
        .map_err(|e| match e {
            McpError::InvalidTool { .. } => ProbeError::Call(e.to_string()),
            e => ProbeError::CallFailed(e),
        })
}

/// Whether a `tools/call` result says the tool failed (`isError: true`).
fn is_error_result(result: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default, rename = "isError")]
        is_error: Option<Value>,
    }
    serde_json::from_str::<Head>(result.get())
        .ok()
        .and_then(|h| h.is_error)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// `--protocol`: `auto` or a known revision.
fn parse_protocol(text: &str) -> Result<ProtocolChoice, String> {
    ProtocolChoice::parse(text).ok_or_else(|| {
        format!(
            "use auto or one of {}",
            ProtocolChoice::REVISIONS.join(", ")
        )
    })
}

/// What the probe adds to the listing: the engine's tool check and the
/// cache hints.
pub struct Checked {
    /// The tools the engine would publish, in listing order.
    pub tools: Vec<Tool>,
    /// `invalid_tools` (left out) and `name_warnings` (flagged), as the
    /// engine reports them; a name warning judges the tool's own name (the
    /// engine publishes it as `<server><separator><name>`, longer still).
    pub report: ToolReport,
    pub cache: ProbeCache,
}

/// The cache hints of a 2026-07-28 server (`None` on the 2025 wire).
#[derive(Serialize, Default)]
pub struct ProbeCache {
    /// `server/discover`'s `ttlMs` and `cacheScope`.
    pub discover: Option<CacheHint>,
    /// Every page of `tools/list`, `prompts/list` and `resources/list`
    /// combined (the smallest ttl, `private` if any said so).
    pub listings: Option<CacheHint>,
}

impl Checked {
    pub fn new(inv: &Inventory, discover: Option<CacheHint>) -> Self {
        let checked = discovery_actors::tools::check(inv.tools.clone(), "", "", |_| true);
        Self {
            tools: checked.tools,
            report: checked.report,
            cache: ProbeCache {
                discover,
                listings: inv.cache,
            },
        }
    }
}

/// `--json` output.
#[derive(Serialize)]
pub struct ProbeReport<'a> {
    pub server_info: &'a Value,
    pub protocol_version: &'a str,
    /// `modern` (2026-07-28, stateless) or `legacy` (the 2025 handshake).
    pub era: &'static str,
    pub transport: &'a str,
    pub capabilities: &'a Value,
    pub instructions: Option<&'a str>,
    /// Raw tool objects, verbatim.
    pub tools: Vec<&'a RawValue>,
    pub prompts: &'a [Arc<RawValue>],
    pub resources: &'a [Arc<RawValue>],
    /// Tools of `tools` the engine would leave out, and why.
    pub invalid_tools: &'a [ToolProblem],
    /// Tool names outside `^[A-Za-z0-9_.-]{1,64}$` (published, flagged).
    pub name_warnings: &'a [ToolProblem],
    /// Why prompts or resources could not be listed.
    pub problems: &'a [String],
    /// `{discover, listings}`: each `{ttl_ms, scope}` or null (2025 wire).
    pub cache: &'a ProbeCache,
}

impl<'a> ProbeReport<'a> {
    pub fn new(info: &'a ServerInfo, inv: &'a Inventory, checked: &'a Checked) -> Self {
        Self {
            server_info: &info.server_info,
            protocol_version: &info.protocol_version,
            era: EraKind::of(&info.protocol_version).as_str(),
            transport: info.transport,
            capabilities: &info.capabilities,
            instructions: info.instructions.as_deref(),
            tools: inv.tools.iter().map(|t| t.raw.as_ref()).collect(),
            prompts: &inv.prompts,
            resources: &inv.resources,
            invalid_tools: &checked.report.invalid_tools,
            name_warnings: &checked.report.name_warnings,
            problems: &inv.problems,
            cache: &checked.cache,
        }
    }
}

/// `capabilities` as `tools (listChanged), prompts, logging`.
fn capabilities_text(caps: &Value) -> String {
    let Some(map) = caps.as_object() else {
        return "none".into();
    };
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(name, v)| {
            let flags: Vec<&str> = v
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, f)| f.as_bool() == Some(true))
                        .map(|(k, _)| k.as_str())
                        .collect()
                })
                .unwrap_or_default();
            if flags.is_empty() {
                name.clone()
            } else {
                format!("{name} ({})", flags.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Longest description shown per tool in the text report, in characters.
const DESCRIPTION_WIDTH: usize = 100;

/// `text` cut to `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if text[at..].chars().nth(1).is_some() => format!("{}…", &text[..at]).into(),
        _ => text.into(),
    }
}

/// `ttl 1500 ms, private` (or `none` on the 2025 wire).
fn hint_text(hint: Option<CacheHint>) -> String {
    match hint {
        None => "none".into(),
        Some(h) => {
            let scope = h.scope.map_or("scope not stated", |s| s.as_str());
            if h.ttl_ms == 0 {
                format!("ttl 0 (poll_interval decides), {scope}")
            } else {
                format!("ttl {} ms, {scope}", h.ttl_ms)
            }
        }
    }
}

/// The text report.
pub fn render_text(info: &ServerInfo, inv: &Inventory, checked: &Checked) -> String {
    use std::fmt::Write as _;
    let field = |k: &str| info.server_info.get(k).and_then(Value::as_str);
    let name = field("title").or(field("name")).unwrap_or("(unnamed)");
    let version = field("version").unwrap_or("");
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "Server:        {name} {version}");
    let _ = writeln!(out, "Protocol:      {}", info.protocol_version);
    let era = match EraKind::of(&info.protocol_version) {
        EraKind::Modern => "modern (stateless, server/discover)",
        EraKind::Legacy => "legacy (initialize handshake)",
    };
    let _ = writeln!(out, "Era:           {era}");
    let _ = writeln!(out, "Transport:     {}", info.transport);
    let _ = writeln!(
        out,
        "Capabilities:  {}",
        capabilities_text(&info.capabilities)
    );
    if let Some(instructions) = info.instructions.as_deref().map(first_line) {
        if !instructions.is_empty() {
            let _ = writeln!(out, "Instructions:  {instructions}");
        }
    }
    let _ = writeln!(
        out,
        "Prompts:       {}\nResources:     {}",
        inv.prompts.len(),
        inv.resources.len()
    );
    if EraKind::of(&info.protocol_version) == EraKind::Modern {
        let _ = writeln!(
            out,
            "Cache:         discover {}; listings {}",
            hint_text(checked.cache.discover),
            hint_text(checked.cache.listings)
        );
    }
    for problem in &inv.problems {
        let _ = writeln!(out, "Listing problem: {problem}");
    }
    let _ = writeln!(out, "\nTools ({}):", checked.tools.len());
    let width = checked
        .tools
        .iter()
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(0);
    for tool in &checked.tools {
        let description = serde_json::from_str::<Value>(tool.raw.get())
            .ok()
            .and_then(|v| {
                v.get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let line = format!(
            "  {:<width$}  {}",
            tool.name,
            clip(first_line(&description), DESCRIPTION_WIDTH)
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let problems = |out: &mut String, title: &str, list: &[ToolProblem], total: usize| {
        if list.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n{title} ({total}):");
        for p in list {
            let name = p.name.as_deref().unwrap_or("(no string name)");
            let _ = writeln!(out, "  {name}: {}", p.reason);
        }
    };
    problems(
        &mut out,
        "Invalid tools, left out",
        &checked.report.invalid_tools,
        checked.report.invalid_total,
    );
    problems(
        &mut out,
        "Name warnings",
        &checked.report.name_warnings,
        checked.report.name_warnings.len(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use discovery_actors::mcp::Tool;

    fn parse(args: &[&str]) -> Result<ProbeArgs, clap::Error> {
        let mut all = vec!["mcp-discovery", "probe"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Some(Command::Probe(p)) => Ok(*p),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn http_probe_arguments() {
        let p = parse(&[
            "http://127.0.0.1:3001/mcp",
            "--transport",
            "streamable-http",
            "-H",
            "X-Team: infra",
            "--header",
            "X-Other:v:with:colons",
            "--bearer",
            "tok",
            "--timeout",
            "5s",
            "--json",
        ])
        .unwrap();
        assert_eq!(p.transport, ProbeTransport::StreamableHttp);
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert!(p.json);
        let opts = p.client_options(&p.secrets(&|_| None).unwrap());
        assert_eq!(
            opts.headers,
            [
                ("X-Team".to_owned(), "infra".to_owned()),
                ("X-Other".to_owned(), "v:with:colons".to_owned()),
                ("Authorization".to_owned(), "Bearer tok".to_owned()),
            ]
        );
        assert!(matches!(
            p.target(),
            Some(Target::Http {
                transport: TransportKind::StreamableHttp,
                ..
            })
        ));
    }

    #[test]
    fn stdio_probe_arguments() {
        let p = parse(&[
            "--stdio",
            "--",
            "npx",
            "-y",
            "@modelcontextprotocol/server-everything",
        ])
        .unwrap();
        match p.target() {
            Some(Target::Stdio { command, args, .. }) => {
                assert_eq!(command, "npx");
                assert_eq!(args, ["-y", "@modelcontextprotocol/server-everything"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_probe_command_lines_are_usage_errors() {
        assert!(parse(&[]).is_err(), "needs a URL or --stdio");
        assert!(parse(&["--stdio"]).is_err(), "--stdio needs a command");
        assert!(parse(&["ftp://x/"]).is_err(), "scheme");
        assert!(parse(&["localhost:3000/mcp"]).is_err(), "no scheme");
        assert!(parse(&["http://x/", "-H", "no colon"]).is_err());
        assert!(parse(&["http://x/", "--stdio", "--", "cmd"]).is_err());
        assert!(parse(&["--stdio", "--transport", "sse", "--", "cmd"]).is_err());
        assert!(parse(&["http://x/", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn secrets_come_from_flags_files_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "file-token\n").unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "  file-secret \n").unwrap();
        let headers = dir.path().join("headers");
        std::fs::write(
            &headers,
            "# team headers\nX-Api-Key: file-header\n\nX-Team: infra\n",
        )
        .unwrap();
        let env = |name: &str| match name {
            TOKEN_ENV => Some("env-token".to_owned()),
            CLIENT_SECRET_ENV => Some("env-secret".to_owned()),
            _ => None,
        };
        let url = "http://127.0.0.1:1/mcp";

        let p = parse(&[url]).unwrap();
        let s = p.secrets(&env).unwrap();
        assert_eq!(s.bearer.as_ref().map(Secret::expose), Some("env-token"));
        let s = p.secrets(&|_| None).unwrap();
        assert!(s.bearer.is_none());

        let file = token_file.to_str().unwrap();
        let p = parse(&[url, "--bearer-file", file]).unwrap();
        let s = p.secrets(&env).unwrap();
        assert_eq!(
            s.bearer.as_ref().map(Secret::expose),
            Some("file-token"),
            "file over env"
        );
        let p = parse(&[url, "--bearer", "flag-token"]).unwrap();
        let s = p.secrets(&env).unwrap();
        assert_eq!(
            s.bearer.as_ref().map(Secret::expose),
            Some("flag-token"),
            "flag over env"
        );
        assert!(parse(&[url, "--bearer", "t", "--bearer-file", file]).is_err());

        let p = parse(&[url, "--client-id", "app"]).unwrap();
        let s = p.secrets(&env).unwrap();
        assert_eq!(
            s.client_secret.as_ref().map(Secret::expose),
            Some("env-secret")
        );
        assert!(
            s.bearer.is_none(),
            "no bearer token with client credentials"
        );
        let e = p.secrets(&|_| None).unwrap_err();
        assert!(e.contains(CLIENT_SECRET_ENV), "{e}");
        let p = parse(&[
            url,
            "--client-id",
            "app",
            "--client-secret-file",
            secret_file.to_str().unwrap(),
        ])
        .unwrap();
        let s = p.secrets(&env).unwrap();
        assert_eq!(
            s.client_secret.as_ref().map(Secret::expose),
            Some("file-secret")
        );
        assert!(
            parse(&[url, "--client-secret-file", "x"]).is_err(),
            "needs --client-id"
        );

        let at = format!("@{}", headers.display());
        let p = parse(&[url, "-H", &at, "-H", "X-Other: 1"]).unwrap();
        let opts = p.client_options(&p.secrets(&|_| None).unwrap());
        assert_eq!(
            opts.headers,
            [
                ("X-Api-Key".to_owned(), "file-header".to_owned()),
                ("X-Team".to_owned(), "infra".to_owned()),
                ("X-Other".to_owned(), "1".to_owned()),
            ]
        );
        let missing = parse(&[url, "--bearer-file", "/nonexistent/token"]).unwrap();
        assert!(missing
            .secrets(&env)
            .unwrap_err()
            .contains("/nonexistent/token"));
    }

    #[test]
    fn no_debug_output_shows_a_probe_secret() {
        let p = parse(&[
            "http://user:url-pw@127.0.0.1:1/mcp?api_key=q-secret",
            "--bearer",
            "flag-token",
            "-H",
            "X-Api-Key: hdr-secret",
        ])
        .unwrap();
        let s = p.secrets(&|_| None).unwrap();
        let opts = p.client_options(&s);
        let p2 = parse(&[
            "http://x/mcp",
            "--client-id",
            "a",
            "--client-secret",
            "cs-secret",
        ])
        .unwrap();
        let debug = format!(
            "{p:?} {s:?} {opts:?} {p2:?} {:?}",
            p2.secrets(&|_| None).unwrap()
        );
        for secret in [
            "flag-token",
            "hdr-secret",
            "cs-secret",
            "url-pw",
            "q-secret",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        // Messages name the target as /v1/servers does.
        let shown = p.describe();
        assert_eq!(shown, "http://127.0.0.1:1/mcp?…");
        let p = parse(&["--stdio", "--", "srv", "--password", "pw-secret"]).unwrap();
        assert_eq!(p.describe(), "`srv (+2 args)`");
        assert!(!format!("{:?} {p:?}", p.target()).contains("pw-secret"));
    }

    fn sample() -> (ServerInfo, Inventory) {
        let info = ServerInfo {
            protocol_version: "2025-06-18".into(),
            server_info: serde_json::json!({"name": "everything", "version": "1.2.3"}).into(),
            capabilities: serde_json::json!({"tools": {"listChanged": true}, "logging": {}}).into(),
            instructions: Some("\nUse wisely.\nMore text".into()),
            transport: "streamable-http",
        };
        let tool = |name: &str, desc: &str| {
            Tool {
            name: name.into(),
            raw: Arc::from(
                RawValue::from_string(
                    serde_json::json!({"name": name, "description": desc, "inputSchema": {"type": "object"}, "x-extra": 1})
                        .to_string(),
                )
                .unwrap(),
            ),
        }
        };
        let inv = Inventory {
            tools: vec![tool("echo", "Echoes back.\nSecond line"), tool("add", "")],
            prompts: vec![],
            resources: vec![],
            problems: vec![],
            cache: None,
        };
        (info, inv)
    }

    #[test]
    fn text_report() {
        let (info, inv) = sample();
        let text = render_text(&info, &inv, &Checked::new(&inv, None));
        assert!(text.contains("Server:        everything 1.2.3"), "{text}");
        assert!(text.contains("Protocol:      2025-06-18"), "{text}");
        assert!(
            text.contains("Era:           legacy (initialize handshake)"),
            "{text}"
        );
        assert!(text.contains("Transport:     streamable-http"), "{text}");
        assert!(
            text.contains("Capabilities:  tools (listChanged), logging"),
            "{text}"
        );
        assert!(text.contains("Instructions:  Use wisely."), "{text}");
        assert!(text.contains("Tools (2):"), "{text}");
        assert!(text.contains("  echo  Echoes back.\n"), "{text}");
        assert!(!text.contains("Second line"), "{text}");
    }

    #[test]
    fn long_descriptions_are_clipped_on_a_char_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly10!", 10), "exactly10!");
        assert_eq!(clip("ééééééééééé", 10), "ééééééééé…");
        assert_eq!(clip("ééééééééééé", 10).chars().count(), 10);
    }

    #[test]
    fn json_report_keeps_tools_verbatim() {
        let (info, inv) = sample();
        let checked = Checked::new(&inv, None);
        let v: Value = serde_json::to_value(ProbeReport::new(&info, &inv, &checked)).unwrap();
        assert_eq!(v["protocol_version"], "2025-06-18");
        assert_eq!(v["era"], "legacy");
        assert_eq!(v["transport"], "streamable-http");
        assert_eq!(v["server_info"]["name"], "everything");
        assert_eq!(v["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(v["tools"][0]["x-extra"], 1);
        assert_eq!(v["tools"].as_array().unwrap().len(), 2);
        assert_eq!(v["prompts"], serde_json::json!([]));
        assert_eq!(v["resources"], serde_json::json!([]));
        assert_eq!(v["invalid_tools"], serde_json::json!([]));
        assert_eq!(
            v["cache"],
            serde_json::json!({"discover": null, "listings": null})
        );
        assert!(!render_text(&info, &inv, &checked).contains("Cache:"));
    }

    #[test]
    fn reports_show_cache_hints_invalid_tools_and_listing_problems() {
        use discovery_actors::mcp::cache::CacheScope;
        let (mut info, mut inv) = sample();
        info.protocol_version = "2026-07-28".into();
        let raw = |v: Value| Arc::from(RawValue::from_string(v.to_string()).unwrap());
        inv.tools.push(Tool {
            name: "bad".into(),
            raw: raw(serde_json::json!({"name": "bad", "inputSchema": "nope"})),
        });
        inv.tools.push(Tool {
            name: "has space".into(),
            raw: raw(serde_json::json!({"name": "has space", "inputSchema": {}})),
        });
        inv.problems.push("`prompts/list` timed out".into());
        inv.cache = Some(CacheHint {
            ttl_ms: 1500,
            scope: Some(CacheScope::Private),
        });
        let discover = Some(CacheHint {
            ttl_ms: 0,
            scope: Some(CacheScope::Public),
        });
        let checked = Checked::new(&inv, discover);
        let text = render_text(&info, &inv, &checked);
        assert!(
            text.contains(
                "Cache:         discover ttl 0 (poll_interval decides), public; listings ttl 1500 ms, private"
            ),
            "{text}"
        );
        assert!(
            text.contains("Listing problem: `prompts/list` timed out"),
            "{text}"
        );
        assert!(
            text.contains("Invalid tools, left out (1):\n  bad: "),
            "{text}"
        );
        assert!(text.contains("Name warnings (1):\n  has space: "), "{text}");
        assert!(!text.contains("  bad  "), "{text}");
        let v: Value = serde_json::to_value(ProbeReport::new(&info, &inv, &checked)).unwrap();
        assert_eq!(
            v["cache"]["listings"],
            serde_json::json!({"ttl_ms": 1500, "scope": "private"})
        );
        assert_eq!(v["cache"]["discover"]["scope"], "public");
        assert_eq!(v["invalid_tools"][0]["name"], "bad");
        assert_eq!(v["name_warnings"][0]["name"], "has space");
        assert_eq!(v["problems"][0], "`prompts/list` timed out");
        assert_eq!(
            v["tools"].as_array().unwrap().len(),
            4,
            "every listed tool, verbatim"
        );
    }
}
