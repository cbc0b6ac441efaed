//! The command line: `serve` (the default), `check`, `probe`.
//!
//! Exit codes (see [`exit`]): 0 success, 1 invalid configuration or the
//! service could not start, 2 probe failure, 64 usage error.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use discovery_config::{AuthConfig, Config, Endpoint, ServerSpec};

use crate::probe::ProbeArgs;
use crate::startup::{AppOptions, Application};
use crate::telemetry::{self, LogFormat};

/// Process exit codes (documented in `--help` and the README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The configuration is invalid (every problem was printed), or the
    /// service could not start with it (e.g. the listen address is taken).
    pub const CONFIG_INVALID: u8 = 1;
    /// `probe`: the upstream could not be reached or answered badly.
    pub const UPSTREAM_FAILURE: u8 = 2;
    /// The command line itself is wrong (sysexits `EX_USAGE`); kept apart
    /// from 2 so scripts can tell "server down" from "typo".
    pub const USAGE: u8 = 64;
}

const AFTER_HELP: &str = "\
Examples:
  # Run the service (serve is the default subcommand)
  mcp-discovery serve --config config/examples/quickstart.yaml
  MCP_DISCOVERY_CONFIG=/etc/mcp-discovery/config.yaml mcp-discovery --log-format json

  # Validate a configuration file: every problem at once, or a summary
  mcp-discovery check --config config.yaml

  # Discover one server once, without a configuration file
  MCP_DISCOVERY_PROBE_TOKEN=\"$TOKEN\" mcp-discovery probe http://127.0.0.1:3001/mcp
  mcp-discovery probe --json --stdio -- npx -y @modelcontextprotocol/server-everything

Exit codes:
  0   success
  1   invalid configuration (every problem is listed), or the service could not start
  2   probe failed: the upstream was unreachable or answered badly
  64  command-line usage error

Environment:
  MCP_DISCOVERY_CONFIG              configuration file when --config is absent
  MCP_DISCOVERY_STATE_DIR           directory of the default store when --state-dir is absent
  MCP_DISCOVERY__SECTION__KEY       overrides one configuration key
  MCP_DISCOVERY_PROBE_TOKEN         probe: bearer token (instead of --bearer)
  MCP_DISCOVERY_PROBE_CLIENT_SECRET probe: OAuth2 client secret (instead of --client-secret)
  RUST_LOG                          log filter (default: info)";

/// A live, aggregated catalog of the tools offered by many MCP servers.
#[derive(Debug, Parser)]
#[command(
    name = "mcp-discovery",
    version,
    about,
    long_about = "mcp-discovery keeps a live, aggregated catalog of the tools offered by many \
        upstream MCP servers and serves it over HTTP. Without a subcommand it runs `serve`.",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_required = false
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// `serve` options, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Validate a configuration file: print every problem (exit 1) or a
    /// summary (exit 0).
    Check(CheckArgs),
    /// Discover one MCP server once and print what it offers.
    Probe(Box<ProbeArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (YAML, TOML or JSON by extension). Without one the
    /// service starts with the embedded defaults and no servers.
    #[arg(long, short = 'c', value_name = "PATH", env = "MCP_DISCOVERY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on, overriding `listen` from the configuration.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Log format (logs go to stderr).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Writable directory for the default store (`mcp-discovery.db`, when
    /// `store.url` is not set). Default: the working directory.
    #[arg(long, value_name = "DIR", env = "MCP_DISCOVERY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Configuration file to validate.
    #[arg(long, short = 'c', value_name = "PATH", env = "MCP_DISCOVERY_CONFIG")]
    pub config: PathBuf,
}

/// Parses the command line and runs it; what `main` calls.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version are "errors" that print to stdout.
            let code = if err.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            // Nothing better to do if the terminal is gone.
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    run(cli)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Probe(args)) => crate::probe::run(*args),
    }
}

/// `serve`: load the configuration (all problems at once, exit 1), then run
/// the application on a fresh actix System until a signal stops it.
pub fn serve(args: ServeArgs) -> ExitCode {
    if let Err(err) = telemetry::init(args.log_format, "info") {
        eprintln!("warning: {err}");
    }
    let config = match &args.config {
        Some(path) => {
            match discovery_config::load_file(path) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("error: the configuration cannot be used\n{errors}");
                    eprintln!("Hint: `mcp-discovery check --config {}` shows the same list without starting.", path.display());
                    return ExitCode::from(exit::CONFIG_INVALID);
                }
            }
        }
        None => {
            tracing::warn!(
                "No configuration file given (--config or MCP_DISCOVERY_CONFIG); \
                 using the embedded defaults, so no servers are configured"
            );
            Config::embedded_defaults()
        }
    };
    if config.servers.is_empty() && config.source.is_some() {
        tracing::warn!("No servers are configured; the catalog stays empty");
    }
    let options = AppOptions {
        listen: args.listen,
        state_dir: args.state_dir,
        ..AppOptions::default()
    };
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        let outcome = match Application::build(Arc::new(config), options).await {
            Ok(app) => app.run().await,
            Err(err) => Err(err),
        };
        // Last step of the ordered shutdown (HTTP, upstreams, System).
        actix_rt::System::current().stop();
        outcome
    });
    match result {
        Ok(()) => {
            tracing::info!("Stopped");
            ExitCode::from(exit::OK)
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "Could not run the service");
            eprintln!("error: {err:#}");
            ExitCode::from(exit::CONFIG_INVALID)
        }
    }
}

/// `check`: every problem (exit 1), or a one-screen summary (exit 0).
pub fn check(args: &CheckArgs) -> ExitCode {
    match discovery_config::load_file(&args.config) {
        Ok(config) => {
            print!("{}", summary(&config));
            ExitCode::from(exit::OK)
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(exit::CONFIG_INVALID)
        }
    }
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    match n {
        0 => "0 bytes".into(),
        n if n % GIB == 0 => format!("{} GiB", n / GIB),
        n if n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

/// Where a server is, as `/v1/servers` shows it: the URL without user info
/// and query, or the program and its number of arguments.
pub fn endpoint_text(spec: &ServerSpec) -> String {
    discovery_actors::status::endpoint_display(&spec.endpoint)
}

/// Settings of a server that differ from the global ones, for the summary.
fn server_notes(spec: &ServerSpec, config: &Config) -> String {
    let mut notes = Vec::new();
    let (own, global) = (&spec.discovery, &config.discovery);
    if own.poll_interval != global.poll_interval {
        notes.push(format!("poll_interval {}", dur(own.poll_interval)));
    }
    if own.request_timeout != global.request_timeout {
        notes.push(format!("request_timeout {}", dur(own.request_timeout)));
    }
    if own.connect_timeout != global.connect_timeout {
        notes.push(format!("connect_timeout {}", dur(own.connect_timeout)));
    }
    if own.backoff != global.backoff {
        notes.push(format!(
            "backoff {}..{}",
            dur(own.backoff.initial),
            dur(own.backoff.max)
        ));
    }
    if own.stale_ttl != global.stale_ttl {
        notes.push(format!("stale_ttl {}", dur(own.stale_ttl)));
    }
    if own.max_response_bytes != global.max_response_bytes {
        notes.push(format!(
            "max_response_bytes {}",
            bytes(own.max_response_bytes)
        ));
    }
    if own.max_pages != global.max_pages {
        notes.push(format!("max_pages {}", own.max_pages));
    }
    let (allow, deny) = (spec.tools.allow_patterns(), spec.tools.deny_patterns());
    if !allow.is_empty() {
        notes.push(format!("allow {}", allow.join(",")));
    }
    if !deny.is_empty() {
        notes.push(format!("deny {}", deny.join(",")));
    }
    if !spec.headers.is_empty() {
        notes.push(format!("{} header(s)", spec.headers.len()));
    }
    if !spec.push && matches!(spec.endpoint, Endpoint::Http { .. }) {
        notes.push("push off".into());
    }
    if let AuthConfig::OAuth2(o) = &spec.auth {
        notes.push(match &o.token_url {
            Some(_) => "token_url set".into(),
            None => "token_url discovered".into(),
        });
    }
    notes.join(", ")
}

/// The one-screen summary `check` prints. Never contains a secret.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let source = config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "embedded defaults".into());
    let d = &config.discovery;
    // Writing to a String cannot fail.
    let _ = writeln!(out, "Configuration OK: {source}\n");
    let _ = writeln!(out, "listen     {}", config.listen);
    let _ = writeln!(
        out,
        "discovery  poll_interval {}, request_timeout {}, connect_timeout {},\n           \
         backoff {}..{}, stale_ttl {}, max_response_bytes {},\n           \
         max_pages {}, startup_grace {}",
        dur(d.poll_interval),
        dur(d.request_timeout),
        dur(d.connect_timeout),
        dur(d.backoff.initial),
        dur(d.backoff.max),
        dur(d.stale_ttl),
        bytes(d.max_response_bytes),
        d.max_pages,
        dur(d.startup_grace),
    );
    let _ = writeln!(out, "catalog    separator {:?}", config.catalog.separator);
    let admin = &config.admin;
    let count = |n: usize, what: &str| match n {
        1 => format!("1 {what} key"),
        n => format!("{n} {what} keys"),
    };
    let mode = if !admin.api_keys.is_empty() {
        format!(
            "writes need a key ({}, {})",
            count(admin.api_keys.len(), "write"),
            count(admin.read_keys.len(), "read")
        )
    } else if admin.allow_loopback_writes {
        "loopback-only writes without a key".to_owned()
    } else {
        "writes refused (no API keys)".to_owned()
    };
    let _ = writeln!(
        out,
        "admin      {mode}{}",
        if admin.protect_reads {
            ", reads protected"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "store      {}",
        if config.store.url.is_some() {
            "configured"
        } else {
            "default"
        }
    );
    let n = config.servers.len();
    let _ = writeln!(
        out,
        "\n{n} server{}{}",
        if n == 1 { "" } else { "s" },
        if n == 0 { "" } else { ":" }
    );
    if n == 0 {
        return out;
    }
    let rows: Vec<[String; 5]> = config
        .servers
        .values()
        .map(|s| {
            [
                s.name.to_string(),
                s.transport().as_str().to_owned(),
                s.auth.kind().to_owned(),
                endpoint_text(s),
                server_notes(s, config),
            ]
        })
        .collect();
    let header = ["NAME", "TRANSPORT", "AUTH", "ENDPOINT", "NOTES"];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: [&str; 5]| {
        let mut l = String::from("  ");
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use discovery_config::{
        DiscoverySettings, OAuth2Config, Secret, ServerName, ServerSource, ToolFilter,
        TransportKind,
    };
    use indexmap::IndexMap;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default() {
        let cli = Cli::try_parse_from(["mcp-discovery", "--listen", "127.0.0.1:9"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.serve.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        let cli = Cli::try_parse_from(["mcp-discovery", "serve", "--log-format", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Serve(ServeArgs {
                log_format: LogFormat::Json,
                ..
            }))
        ));
    }

    #[test]
    fn check_takes_a_config() {
        let cli = Cli::try_parse_from(["mcp-discovery", "check", "--config", "x.yaml"]).unwrap();
        match cli.command {
            Some(Command::Check(a)) => assert_eq!(a.config, PathBuf::from("x.yaml")),
            other => panic!("{other:?}"),
        }
    }

    fn spec(name: &str, endpoint: Endpoint, auth: AuthConfig) -> ServerSpec {
        ServerSpec {
            name: ServerName::parse(name, "__").unwrap(),
            source: ServerSource::Config,
            endpoint,
            headers: IndexMap::from([("X-Api-Key".to_owned(), Secret::new("header-secret"))]),
            auth,
            tools: ToolFilter::new(vec![], vec!["admin_*".into()]).unwrap(),
            push: true,
            discovery: DiscoverySettings::default(),
            call_timeout: discovery_config::McpSettings::DEFAULT_CALL_TIMEOUT,
        }
    }

    #[test]
    fn summary_lists_servers_and_never_a_secret() {
        let mut config = Config::embedded_defaults();
        let mut http = spec(
            "search",
            Endpoint::Http {
                url: "http://user:url-secret@127.0.0.1:20200/mcp?api_key=query-secret"
                    .parse()
                    .unwrap(),
                transport: TransportKind::Auto,
            },
            AuthConfig::OAuth2(OAuth2Config {
                token_url: None,
                client_id: "abc".into(),
                client_secret: Secret::new("oauth-secret"),
                scopes: vec![],
                audience: None,
                client_auth: discovery_config::ClientAuth::Basic,
                token_timeout: Duration::from_secs(10),
                allowed_issuers: vec![],
            }),
        );
        http.discovery.poll_interval = Duration::from_secs(60);
        let stdio = spec(
            "files",
            Endpoint::Stdio {
                command: "npx".into(),
                args: vec![
                    "-y".into(),
                    "@modelcontextprotocol/server-filesystem".into(),
                    "/srv dir".into(),
                    "--password=arg-secret".into(),
                ],
                env: IndexMap::from([("TOKEN".to_owned(), Secret::new("env-secret"))]),
                env_inherit: false,
                cwd: None,
            },
            AuthConfig::Bearer {
                token: Secret::new("bearer-secret"),
            },
        );
        config.servers.insert(http.name.clone(), http);
        config.servers.insert(stdio.name.clone(), stdio);
        let text = summary(&config);
        for secret in [
            "header-secret",
            "url-secret",
            "oauth-secret",
            "env-secret",
            "bearer-secret",
            "query-secret",
            "arg-secret",
            "user:",
        ] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        assert!(text.contains("2 servers:"), "{text}");
        assert!(text.contains("search"), "{text}");
        assert!(text.contains("http://127.0.0.1:20200/mcp?…"), "{text}");
        assert!(text.contains("npx (+4 args)"), "{text}");
        assert!(text.contains("poll_interval 1m"), "{text}");
        assert!(text.contains("oauth2"), "{text}");
        assert!(text.contains("max_response_bytes 16 MiB"), "{text}");
        assert!(text.lines().count() < 25, "one screen:\n{text}");
    }

    #[test]
    fn byte_sizes_read_naturally() {
        assert_eq!(bytes(16 * 1024 * 1024), "16 MiB");
        assert_eq!(bytes(1536), "1536 bytes");
        assert_eq!(bytes(2048), "2 KiB");
    }
}
