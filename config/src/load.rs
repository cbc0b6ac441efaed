//! File + environment loading.
//!
//! The pipeline, in order (the reasons are in docs/adr/0002-config-loading.md):
//! 1. parse the text with config-rs's format parsers (`config::File`); an
//!    empty file (or one with only comments) is all defaults;
//! 2. expand `${VAR}` in the file's string values ([`crate::interpolate`]
//!    syntax: `${NAME}`, `${NAME:-default}`, `$$` for a literal `$`);
//! 3. collect `MCP_DISCOVERY__SECTION__KEY` overrides with config-rs's
//!    `Environment` source and layer them over the file with its
//!    `ConfigBuilder`, after matching each key to the file's own spelling;
//! 4. validate everything, reporting every problem at once.
//!
//! Why step 3 re-spells keys: config-rs lowercases environment keys (and
//! environment names cannot hold `-`), while server and header names are
//! case-sensitive. `MCP_DISCOVERY__SERVERS__SEARCH_API__URL` therefore
//! overrides the url of a server written `Search-API` in the file, instead of
//! creating a second, incomplete server `search_api`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use config::{Source, Value as CValue, ValueKind};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::interpolate::{interpolate, line_of};
use crate::tree::{self, Seg};
use crate::validate::{build_config, Report};
use crate::{Config, ConfigErrors};

/// Environment overrides are `MCP_DISCOVERY__SECTION__KEY`: this prefix,
/// then [`ENV_SEPARATOR`]-separated keys. Single-underscore variables such as
/// `MCP_DISCOVERY_CONFIG` are not overrides.
pub const ENV_PREFIX: &str = "MCP_DISCOVERY";

/// Separates the prefix and the keys of an environment override.
pub const ENV_SEPARATOR: &str = "__";

/// File format, chosen by extension (`.yaml`/`.yml`, `.toml`, `.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
    Json,
}

impl Format {
    /// By extension, case-insensitively; anything else is YAML, the format
    /// the docs use.
    pub fn from_path(path: &Path) -> Self {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("toml") => Format::Toml,
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Yaml => "YAML",
            Format::Toml => "TOML",
            Format::Json => "JSON",
        }
    }

    fn file_format(self) -> config::FileFormat {
        match self {
            Format::Yaml => config::FileFormat::Yaml,
            Format::Toml => config::FileFormat::Toml,
            Format::Json => config::FileFormat::Json,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Loads, interpolates `${VAR}`s, applies `MCP_DISCOVERY__SECTION__KEY`
/// overrides from the process environment, validates.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one(Some(path), "", format!("cannot read the file: {e}")))?;
    // Variables that are not valid Unicode cannot be referenced anyway.
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    load_str(&text, Format::from_path(path), Some(path), &env)
}

/// As [`load_file`] with the text and environment given (tests, `check`).
pub fn load_str(
    text: &str,
    format: Format,
    file: Option<&Path>,
    env: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    let mut report = Report::new(file);
    let mut tree = parse(text, format).map_err(|message| ConfigErrors::one(file, "", message))?;

    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut path = Vec::new();
    for (key, value) in tree.iter_mut() {
        path.push(Seg::Key(key.clone()));
        interpolate_value(value, &mut path, &vars, text, &mut report);
        path.pop();
    }

    let overrides = env_overrides(&tree, env, &mut report);
    let merged = config::Config::builder()
        .add_source(Layer(tree))
        .add_source(Layer(overrides))
        .build()
        .and_then(|c| c.try_deserialize::<serde_json::Value>())
        .map_err(|e| ConfigErrors::one(file, "", format!("cannot merge the configuration: {e}")))?;

    let mut config = build_config(merged, &mut report);
    config.source = file.map(Path::to_path_buf);
    report.finish(Some(config))
}

/// A ready-made tree as a config-rs source, so the builder can layer it.
#[derive(Clone, Debug)]
struct Layer(config::Map<String, CValue>);

impl Source for Layer {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, CValue>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

/// The file's top-level map.
fn parse(text: &str, format: Format) -> Result<config::Map<String, CValue>, String> {
    if is_blank(text, format) {
        return Ok(config::Map::new());
    }
    if format == Format::Json {
        // serde_json keeps the last of two equal keys; a duplicate server
        // name must be an error, as it is in YAML and TOML.
        let mut de = serde_json::Deserializer::from_str(text);
        NoDuplicates::deserialize(&mut de).map_err(|e| format!("not valid JSON: {e}"))?;
    }
    config::File::from_str(text, format.file_format())
        .collect()
        .map_err(|e| {
            let cause = match e {
                config::ConfigError::FileParse { cause, .. } => cause.to_string(),
                other => other.to_string(),
            };
            if cause.starts_with("invalid type") {
                // Well-formed, but a list or a scalar rather than settings.
                return format!("the top level must be a map of settings: {cause}");
            }
            let hint = if cause.contains("duplicated key") {
                ". Hint: each key, and each server name, may appear only once"
            } else if format == Format::Yaml
                && error_line(&cause, text).is_some_and(|l| l.contains("${"))
            {
                ". Hint: inside [...] or {...}, quote a variable reference: \"${NAME}\""
            } else {
                ""
            };
            format!("not valid {format}: {cause}{hint}")
        })
}

/// The line of `text` that a parser message (`... line 8 column 5`) points at.
fn error_line<'a>(message: &str, text: &'a str) -> Option<&'a str> {
    let (_, after) = message.rsplit_once("line ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    let line: usize = digits.parse().ok()?;
    text.lines().nth(line.checked_sub(1)?)
}

/// Nothing but blank lines, comments and YAML document markers: all
/// defaults. (config-rs reads an empty YAML document as `null`, which is not
/// a map.)
fn is_blank(text: &str, format: Format) -> bool {
    let mut content = text
        .lines()
        .map(str::trim)
        .filter(|line| !is_filler(line, format));
    match (content.next(), content.next()) {
        (None, _) => true,
        (Some("~" | "null"), None) => format == Format::Yaml,
        _ => false,
    }
}

/// A line that carries no setting: blank, a comment, a YAML document marker.
fn is_filler(line: &str, format: Format) -> bool {
    let comment = |l: &str| l.is_empty() || l.starts_with('#');
    match format {
        Format::Json => line.is_empty(),
        Format::Toml => comment(line),
        Format::Yaml => {
            comment(line)
                || ["---", "..."].iter().any(|marker| {
                    line.strip_prefix(marker)
                        .is_some_and(|rest| comment(rest.trim()))
                })
        }
    }
}

/// Expands `${VAR}`s in every string under `value`. A string that cannot
/// be expanded is reported (with its line in the raw text) and becomes null,
/// i.e. absent, so that it does not also fail as "not a URL" and the like.
fn interpolate_value(
    value: &mut CValue,
    path: &mut Vec<Seg>,
    vars: &HashMap<&str, &str>,
    raw_text: &str,
    report: &mut Report,
) {
    let failed = match &mut value.kind {
        ValueKind::String(s) if s.contains('$') => {
            match interpolate(s, |name| vars.get(name).copied()) {
                Ok(expanded) => {
                    *s = expanded;
                    false
                }
                Err(errors) => {
                    let at = tree::render("", path);
                    for e in errors {
                        let message = match line_of(raw_text, &e.needle()) {
                            Some(line) => format!("line {line}: {}", e.message()),
                            None => e.message(),
                        };
                        report.error(at.clone(), message);
                    }
                    report.drop_path(at);
                    true
                }
            }
        }
        ValueKind::Table(map) => {
            for (key, child) in map.iter_mut() {
                path.push(Seg::Key(key.clone()));
                interpolate_value(child, path, vars, raw_text, report);
                path.pop();
            }
            false
        }
        ValueKind::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                interpolate_value(child, path, vars, raw_text, report);
                path.pop();
            }
            false
        }
        _ => false,
    };
    if failed {
        value.kind = ValueKind::Nil;
    }
}

/// The `MCP_DISCOVERY__...` variables of `env` as a nested tree, keys
/// spelled as in `file`. Lists (`admin.api_keys`, `args`, `scopes`,
/// `tools.allow`/`deny`) are comma-separated, or a JSON array when the value
/// starts with `[`.
fn env_overrides(
    file: &config::Map<String, CValue>,
    env: &[(String, String)],
    report: &mut Report,
) -> config::Map<String, CValue> {
    let source: config::Map<String, String> = env.iter().cloned().collect();
    let collected = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .ignore_empty(true)
        .source(Some(source))
        .collect();
    let collected = match collected {
        Ok(c) => c,
        Err(e) => {
            report.env_error("", format!("cannot read the environment overrides: {e}"));
            return config::Map::new();
        }
    };
    let origin = "the environment".to_owned();
    let mut out = config::Map::new();
    for (key, value) in collected {
        let var = format!(
            "{ENV_PREFIX}{ENV_SEPARATOR}{}",
            key.to_ascii_uppercase().replace('.', ENV_SEPARATOR)
        );
        let segments: Vec<&str> = key.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            report.env_error(
                "",
                format!("environment variable {var} does not name a setting"),
            );
            continue;
        }
        let resolved = match resolve_case(file, &segments) {
            Ok(r) => r,
            Err(message) => {
                report.env_error(
                    segments.join("."),
                    format!("environment variable {var}: {message}"),
                );
                continue;
            }
        };
        let path = resolved.join(".");
        let text = match value.kind {
            ValueKind::String(s) => s,
            other => other.to_string(),
        };
        let kind = if is_list_key(&resolved) {
            match split_list(&text) {
                Ok(items) => ValueKind::Array(
                    items
                        .into_iter()
                        .map(|s| CValue::new(Some(&origin), ValueKind::String(s)))
                        .collect(),
                ),
                Err(e) => {
                    report.env_error(path, format!("environment variable {var}: {e}"));
                    continue;
                }
            }
        } else {
            ValueKind::String(text)
        };
        insert_nested(&mut out, &resolved, CValue::new(Some(&origin), kind));
        report.origin(path, var);
    }
    out
}

/// Spells each segment as the file does: exact match, else the one key
/// equal ignoring ASCII case and `-`/`_`. A segment the file does not have
/// is kept as given (lowercase): it adds a setting.
fn resolve_case(
    file: &config::Map<String, CValue>,
    segments: &[&str],
) -> Result<Vec<String>, String> {
    let mut node = Some(file);
    let mut out = Vec::with_capacity(segments.len());
    for seg in segments {
        let key = match node {
            Some(map) if map.contains_key(*seg) => (*seg).to_owned(),
            Some(map) => {
                let norm = |k: &str| k.replace('-', "_").to_ascii_lowercase();
                let matches: Vec<&String> = map.keys().filter(|k| norm(k) == norm(seg)).collect();
                match matches.as_slice() {
                    [] => (*seg).to_owned(),
                    [one] => (*one).clone(),
                    many => {
                        let names: Vec<String> = many.iter().map(|k| format!("{k:?}")).collect();
                        return Err(format!(
                            "ambiguous: {seg:?} matches {} in the file",
                            names.join(" and ")
                        ));
                    }
                }
            }
            None => (*seg).to_owned(),
        };
        node = node
            .and_then(|map| map.get(&key))
            .and_then(|v| match &v.kind {
                ValueKind::Table(t) => Some(t),
                _ => None,
            });
        out.push(key);
    }
    Ok(out)
}

fn is_list_key(path: &[String]) -> bool {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        p.as_slice(),
        ["admin", "api_keys" | "read_keys"]
            | ["http", "allowed_hosts" | "allowed_origins"]
            | ["servers", _, "args"]
            | ["servers", _, "auth", "scopes"]
            | ["servers", _, "tools", "allow" | "deny"]
    )
}

fn split_list(text: &str) -> Result<Vec<String>, String> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str::<Vec<String>>(text)
            .map_err(|e| format!("not a JSON list of strings: {e}"));
    }
    Ok(text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

fn insert_nested(map: &mut config::Map<String, CValue>, path: &[String], value: CValue) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = map;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| CValue::new(None, ValueKind::Table(config::Map::new())));
        if !matches!(entry.kind, ValueKind::Table(_)) {
            entry.kind = ValueKind::Table(config::Map::new());
        }
        node = match &mut entry.kind {
            ValueKind::Table(t) => t,
            _ => return,
        };
    }
    node.insert(last.clone(), value);
}

/// Parses JSON only to refuse a key that appears twice in one object.
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {key:?}. Hint: each key, and each server name, may appear only once"
                )));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{AuthConfig, Endpoint, ServerName, TransportKind};

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn yaml(text: &str) -> Result<Config, ConfigErrors> {
        load_str(text, Format::Yaml, Some(Path::new("test.yaml")), &[])
    }

    fn yaml_env(text: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        load_str(
            text,
            Format::Yaml,
            Some(Path::new("test.yaml")),
            &env(pairs),
        )
    }

    fn errors(result: Result<Config, ConfigErrors>) -> ConfigErrors {
        match result {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(e) => e,
        }
    }

    fn find<'a>(errors: &'a ConfigErrors, path: &str) -> &'a crate::ConfigError {
        errors
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path:?} in:\n{errors}"))
    }

    fn server<'a>(config: &'a Config, name: &str) -> &'a crate::ServerSpec {
        config
            .servers
            .get(name)
            .unwrap_or_else(|| panic!("no server {name:?} in {:?}", config.servers.keys()))
    }

    fn url(config: &Config, name: &str) -> String {
        match &server(config, name).endpoint {
            Endpoint::Http { url, .. } => url.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "\
listen: nowhere
colour: blue
discovery:
  poll_interval: 5
  backoff: { initial: 2m, max: 1m }
servers:
  search:
    url: search.local/mcp
  bad name:
    url: http://x/mcp
  files:
    transport: stdio
  writer:
    command: npx
    comand: typo
  api:
    url: http://x/mcp
    auth: { type: oauth2, client_id: abc }
  gh:
    url: http://x/mcp
    tools: { allow: ['[oops'] }
";
        let errs = errors(yaml(text));
        for (path, needle) in [
            ("listen", "not an IP:port socket address"),
            ("colour", "unknown key `colour`"),
            ("discovery.poll_interval", "needs a unit"),
            ("discovery.backoff", "must not be longer than max"),
            ("servers.search.url", "relative URL without a base"),
            ("servers.bad name", "only letters"),
            ("servers.files.command", "required for the stdio transport"),
            ("servers.writer.comand", "unknown key `comand`"),
            (
                "servers.api.auth.client_secret",
                "required for auth type oauth2",
            ),
            ("servers.gh.tools.allow[0]", "invalid glob"),
        ] {
            let e = find(&errs, path);
            assert!(e.message.contains(needle), "{path}: {}", e.message);
            assert_eq!(e.file.as_deref(), Some(Path::new("test.yaml")));
        }
        assert_eq!(errs.len(), 10, "{errs}");
        assert!(errs
            .to_string()
            .contains("test.yaml: servers.search.url: relative URL without a base"));
    }

    #[test]
    fn loads_a_full_server_and_keeps_file_order() {
        let config = yaml(
            "\
listen: 0.0.0.0:9000
servers:
  zeta: { url: 'http://127.0.0.1:1/mcp' }
  alpha: { command: npx, args: [-y, pkg] }
  mid: { url: 'http://127.0.0.1:2/sse', transport: sse }
",
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        let names: Vec<&str> = config.servers.keys().map(ServerName::as_str).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        assert_eq!(server(&config, "alpha").transport(), TransportKind::Stdio);
        assert_eq!(server(&config, "mid").transport(), TransportKind::Sse);
        assert_eq!(config.source.as_deref(), Some(Path::new("test.yaml")));
        assert_eq!(server(&config, "zeta").source, crate::ServerSource::Config);
    }

    #[test]
    fn names_and_headers_keep_their_case() {
        let config = yaml(
            "\
servers:
  Search-API:
    url: http://127.0.0.1:1/mcp
    headers: { X-Team: infra }
",
        )
        .unwrap();
        let spec = server(&config, "Search-API");
        assert_eq!(spec.name.as_str(), "Search-API");
        let (name, value) = spec.headers.first().unwrap();
        assert_eq!(name, "X-Team");
        assert_eq!(value.expose(), "infra");
    }

    #[test]
    fn empty_and_comment_only_files_are_all_defaults() {
        let defaults = Config {
            source: Some("test.yaml".into()),
            ..Config::embedded_defaults()
        };
        for text in [
            "",
            "  \n\n",
            "# nothing yet\n",
            "---\n# c\n",
            "~\n",
            "servers:\n",
        ] {
            assert_eq!(yaml(text), Ok(defaults.clone()), "{text:?}");
        }
        for format in [Format::Toml, Format::Json] {
            let config = load_str("\n", format, Some(Path::new("test.yaml")), &[]);
            assert_eq!(config, Ok(defaults.clone()));
        }
    }

    #[test]
    fn not_yaml_is_one_clear_error() {
        for (text, needle) in [
            ("servers: [unclosed\n", "not valid YAML"),
            ("just a sentence\n", "expected a map"),
            ("- a\n- b\n", "expected a map"),
            ("a: 1\n---\nb: 2\n", "YAML documents"),
            ("\t- :\n  ]\n", "not valid YAML"),
        ] {
            let errs = errors(yaml(text));
            assert_eq!(errs.len(), 1, "{text:?}: {errs}");
            assert!(errs.0[0].message.contains(needle), "{text:?}: {errs}");
        }
    }

    #[test]
    fn an_unquoted_reference_in_a_flow_map_gets_a_hint() {
        let errs = errors(yaml_env(
            "servers:\n  a: { url: 'http://x/', auth: { type: bearer, token: ${TOK} } }\n",
            &[("TOK", "t")],
        ));
        assert!(
            errs.0[0].message.contains("quote a variable reference"),
            "{errs}"
        );
        // Quoted, it works.
        yaml_env(
            "servers:\n  a: { url: 'http://x/', auth: { type: bearer, token: \"${TOK}\" } }\n",
            &[("TOK", "t")],
        )
        .unwrap();
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        let errs = errors(yaml(
            "\
listen: [1, 2]
admin: { api_keys: key, protect_reads: maybe }
discovery: { max_pages: -1, max_response_bytes: lots, backoff: 5 }
catalog: []
servers:
  a: 5
  b: { url: {x: 1}, args: 3, push: 7 }
",
        ));
        for path in [
            "listen",
            "admin.api_keys",
            "admin.protect_reads",
            "discovery.max_pages",
            "discovery.max_response_bytes",
            "discovery.backoff",
            "catalog",
            "servers.a",
            "servers.b.url",
            "servers.b.args",
            "servers.b.push",
        ] {
            find(&errs, path);
        }
        let errs = errors(yaml("servers: 5\n"));
        assert!(find(&errs, "servers").message.contains("found a number"));
    }

    #[test]
    fn duplicate_server_names_are_errors() {
        let errs = errors(yaml(
            "servers:\n  a: { url: 'http://x/' }\n  a: { url: 'http://y/' }\n",
        ));
        assert!(errs.0[0].message.contains("duplicated key"), "{errs}");
        assert!(errs.0[0].message.contains("line 3"), "{errs}");
        let errs = errors(load_str(
            r#"{"servers": {"a": {"url": "http://x/"}, "a": {"url": "http://y/"}}}"#,
            Format::Json,
            None,
            &[],
        ));
        assert!(errs.0[0].message.contains("duplicate key \"a\""), "{errs}");
        let errs = errors(load_str(
            "[servers.a]\nurl = 'http://x/'\n[servers.a]\nurl = 'http://y/'\n",
            Format::Toml,
            None,
            &[],
        ));
        assert!(errs.0[0].message.contains("not valid TOML"), "{errs}");
    }

    #[test]
    fn toml_and_json_read_like_yaml() {
        let from_yaml = yaml(
            "\
discovery: { poll_interval: 1m, max_response_bytes: 1MiB }
servers:
  Search-API: { url: 'http://127.0.0.1:1/mcp', headers: { X-Team: infra } }
  files: { command: npx, args: [-y, pkg] }
",
        )
        .unwrap();
        let from_toml = load_str(
            r#"
[discovery]
poll_interval = "1m"
max_response_bytes = "1MiB"

[servers.Search-API]
url = "http://127.0.0.1:1/mcp"
headers = { X-Team = "infra" }

[servers.files]
command = "npx"
args = ["-y", "pkg"]
"#,
            Format::Toml,
            Some(Path::new("test.yaml")),
            &[],
        )
        .unwrap();
        let from_json = load_str(
            r#"{
  "discovery": {"poll_interval": "1m", "max_response_bytes": "1MiB"},
  "servers": {
    "Search-API": {"url": "http://127.0.0.1:1/mcp", "headers": {"X-Team": "infra"}},
    "files": {"command": "npx", "args": ["-y", "pkg"]}
  }
}"#,
            Format::Json,
            Some(Path::new("test.yaml")),
            &[],
        )
        .unwrap();
        assert_eq!(from_toml, from_yaml);
        assert_eq!(from_json, from_yaml);
        assert_eq!(from_yaml.discovery.max_response_bytes, 1024 * 1024);
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::from_path(Path::new("a.yml")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a.YAML")), Format::Yaml);
        assert_eq!(Format::from_path(Path::new("a.toml")), Format::Toml);
        assert_eq!(Format::from_path(Path::new("a.json")), Format::Json);
        assert_eq!(Format::from_path(Path::new("config")), Format::Yaml);
    }

    #[test]
    fn durations_and_sizes() {
        let config = yaml(
            "\
discovery:
  poll_interval: 1h 30m
  request_timeout: 500ms
  connect_timeout: 2s
  backoff: { initial: 100ms, max: 10s }
  stale_ttl: 0s
  max_response_bytes: 10MB
  max_pages: '7'
  startup_grace: 0s
  push_idle_timeout: 45s
",
        )
        .unwrap();
        let d = &config.discovery;
        assert_eq!(d.poll_interval, Duration::from_secs(5400));
        assert_eq!(d.request_timeout, Duration::from_millis(500));
        assert_eq!(d.connect_timeout, Duration::from_secs(2));
        assert_eq!(d.backoff.initial, Duration::from_millis(100));
        assert_eq!(d.backoff.max, Duration::from_secs(10));
        assert_eq!(d.stale_ttl, Duration::ZERO);
        assert_eq!(d.max_response_bytes, 10_000_000);
        assert_eq!(d.max_pages, 7);
        assert_eq!(d.startup_grace, Duration::ZERO);
        assert_eq!(d.push_idle_timeout, Duration::from_secs(45));
        let errs = errors(yaml(
            "discovery: { request_timeout: 0s, connect_timeout: soon, max_response_bytes: 0 }\n",
        ));
        find(&errs, "discovery.request_timeout");
        assert!(find(&errs, "discovery.connect_timeout")
            .message
            .contains("invalid duration \"soon\""));
        find(&errs, "discovery.max_response_bytes");
    }

    #[test]
    fn global_settings_flow_into_each_server() {
        let config = yaml(
            "\
discovery: { poll_interval: 2m, request_timeout: 10s, max_pages: 5 }
servers:
  a: { url: 'http://x/mcp' }
  b: { url: 'http://x/mcp', poll_interval: 30s }
",
        )
        .unwrap();
        let a = &server(&config, "a").discovery;
        let b = &server(&config, "b").discovery;
        assert_eq!(a, &config.discovery);
        assert_eq!(b.poll_interval, Duration::from_secs(30));
        assert_eq!(b.request_timeout, Duration::from_secs(10));
        assert_eq!(b.max_pages, 5);
    }

    #[test]
    fn interpolation_expands_set_variables() {
        let config = yaml_env(
            "\
admin: { api_keys: [\"${ADMIN_KEY}\"] }
servers:
  search:
    url: http://${HOST}:${PORT:-20200}/mcp
    headers: { X-Literal: \"$${NOT_A_VAR} costs $$5\" }
    auth:
      type: oauth2
      client_id: abc
      client_secret: ${SEARCH_SECRET}
# A ${COMMENTED_OUT} reference in a comment is not expanded.
",
            &[
                ("ADMIN_KEY", "k1-key-0123456789"),
                ("HOST", "10.0.0.5"),
                ("SEARCH_SECRET", "a: \"b\" # c"),
            ],
        )
        .unwrap();
        assert_eq!(config.admin.api_keys[0].expose(), "k1-key-0123456789");
        assert_eq!(url(&config, "search"), "http://10.0.0.5:20200/mcp");
        let spec = server(&config, "search");
        assert_eq!(
            spec.headers.get("X-Literal").map(|s| s.expose()),
            Some("${NOT_A_VAR} costs $5")
        );
        let AuthConfig::OAuth2(o) = &spec.auth else {
            panic!("{:?}", spec.auth)
        };
        // A secret with YAML syntax in it stays a plain value.
        assert_eq!(o.client_secret.expose(), "a: \"b\" # c");
    }

    #[test]
    fn an_unset_variable_is_an_error_naming_it_and_its_line() {
        let errs = errors(yaml_env(
            "\
servers:
  search:
    url: http://x/mcp
    auth:
      type: oauth2
      client_id: abc
      client_secret: ${SEARCH_SECRET}
  other:
    url: ${OTHER_URL}
admin: { api_keys: [\"${ADMIN_KEY}\"] }
",
            &[("ADMIN_KEY", "k-key-0123456789")],
        ));
        let e = find(&errs, "servers.search.auth.client_secret");
        assert!(
            e.message
                .starts_with("line 7: environment variable SEARCH_SECRET is not set"),
            "{}",
            e.message
        );
        let e = find(&errs, "servers.other.url");
        assert!(e.message.contains("OTHER_URL"), "{}", e.message);
        // No knock-on "client_secret: required" / "url: missing" errors.
        assert_eq!(errs.len(), 2, "{errs}");
    }

    #[test]
    fn env_overrides_apply_with_double_underscores_only() {
        let config = yaml_env(
            "\
listen: 127.0.0.1:8080
discovery: { poll_interval: 5m }
servers:
  search: { url: 'http://old/mcp' }
",
            &[
                ("MCP_DISCOVERY__LISTEN", "0.0.0.0:9999"),
                ("MCP_DISCOVERY__DISCOVERY__POLL_INTERVAL", "1m"),
                ("MCP_DISCOVERY__DISCOVERY__BACKOFF__MAX", "2m"),
                ("MCP_DISCOVERY__SERVERS__SEARCH__URL", "http://new/mcp"),
                ("MCP_DISCOVERY__SERVERS__SEARCH__PUSH", "false"),
                (
                    "MCP_DISCOVERY__ADMIN__API_KEYS",
                    "k1-key-0123456789, k2-key-0123456789",
                ),
                ("MCP_DISCOVERY__ADMIN__PROTECT_READS", "true"),
                ("MCP_DISCOVERY__SERVERS__EXTRA__COMMAND", "npx"),
                ("MCP_DISCOVERY__SERVERS__EXTRA__ARGS", r#"["-y", "a,b"]"#),
                ("MCP_DISCOVERY__STORE__URL", ""),
                // Not overrides: single underscore after the prefix.
                ("MCP_DISCOVERY_CONFIG", "/etc/x.yaml"),
                ("MCP_DISCOVERY_ADMIN_KEY", "nope"),
                ("OTHER__LISTEN", "1.1.1.1:1"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9999");
        assert_eq!(config.discovery.poll_interval, Duration::from_secs(60));
        assert_eq!(config.discovery.backoff.max, Duration::from_secs(120));
        assert_eq!(url(&config, "search"), "http://new/mcp");
        assert!(!server(&config, "search").push);
        // The server inherits the overridden global.
        assert_eq!(
            server(&config, "search").discovery.poll_interval,
            Duration::from_secs(60)
        );
        let keys: Vec<&str> = config.admin.api_keys.iter().map(|k| k.expose()).collect();
        assert_eq!(keys, ["k1-key-0123456789", "k2-key-0123456789"]);
        assert!(config.admin.protect_reads);
        assert_eq!(config.store.url, None, "an empty variable is unset");
        match &server(&config, "extra").endpoint {
            Endpoint::Stdio { args, .. } => assert_eq!(args, &["-y", "a,b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn env_overrides_find_mixed_case_names() {
        let config = yaml_env(
            "\
servers:
  Search-API:
    url: http://old/mcp
    headers: { X-Team: infra }
",
            &[
                ("MCP_DISCOVERY__SERVERS__SEARCH_API__URL", "http://new/mcp"),
                (
                    "MCP_DISCOVERY__SERVERS__SEARCH_API__HEADERS__X_TEAM",
                    "search",
                ),
            ],
        )
        .unwrap();
        assert_eq!(config.servers.len(), 1, "{:?}", config.servers.keys());
        assert_eq!(url(&config, "Search-API"), "http://new/mcp");
        let headers = &server(&config, "Search-API").headers;
        assert_eq!(headers.len(), 1);
        assert_eq!(headers.get("X-Team").map(|s| s.expose()), Some("search"));
    }

    #[test]
    fn env_override_errors_name_the_variable() {
        let errs = errors(yaml_env(
            "servers:\n  Search: { url: 'http://x/' }\n  SEARCH: { url: 'http://y/' }\n",
            &[
                ("MCP_DISCOVERY__DISCOVERY__POLL_INTERVAL", "soon"),
                ("MCP_DISCOVERY__SERVERS__SEARCH__PUSH", "false"),
                ("MCP_DISCOVERY__NOPE", "1"),
            ],
        ));
        let e = find(&errs, "discovery.poll_interval");
        assert!(
            e.message
                .contains("(set by environment variable MCP_DISCOVERY__DISCOVERY__POLL_INTERVAL)"),
            "{}",
            e.message
        );
        let e = find(&errs, "servers.search.push");
        assert!(e.message.contains("ambiguous"), "{}", e.message);
        assert_eq!(e.file, None);
        let e = find(&errs, "nope");
        assert!(e.message.contains("MCP_DISCOVERY__NOPE"), "{}", e.message);
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = yaml_env(
            "\
admin: { api_keys: [k-secret-1-0123456789] }
store: { url: 'postgres://u:pw-secret-2@db/x' }
servers:
  a:
    url: http://x/mcp
    headers: { X-Key: hdr-secret-3 }
    auth: { type: bearer, token: tok-secret-4 }
  b:
    command: x
    env: { TOKEN: env-secret-5 }
",
            &[],
        )
        .unwrap();
        let debug = format!("{config:?}");
        for secret in [
            "k-secret-1",
            "pw-secret-2",
            "hdr-secret-3",
            "tok-secret-4",
            "env-secret-5",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
    }

    #[test]
    fn load_file_reads_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, r#"{"listen": "127.0.0.1:1"}"#).unwrap();
        let config = load_file(&path).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:1");
        assert_eq!(config.source.as_deref(), Some(path.as_path()));
        let missing = dir.path().join("missing.yaml");
        let errs = load_file(&missing).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs.0[0].message.starts_with("cannot read the file"),
            "{errs}"
        );
        assert_eq!(errs.0[0].file.as_deref(), Some(missing.as_path()));
    }

    #[test]
    fn the_examples_load() {
        let quickstart = load_str(
            include_str!("../examples/quickstart.yaml"),
            Format::Yaml,
            Some(Path::new("quickstart.yaml")),
            &[],
        )
        .unwrap();
        assert_eq!(quickstart.listen.to_string(), "127.0.0.1:8080");
        assert!(quickstart
            .servers
            .values()
            .all(|s| s.transport() == TransportKind::Stdio));
        assert!(quickstart.servers.contains_key("everything"));

        let full = load_str(
            include_str!("../examples/full.yaml"),
            Format::Yaml,
            Some(Path::new("full.yaml")),
            &env(&[
                ("MCP_DISCOVERY_ADMIN_KEY", "admin-key-0123456789"),
                ("MCP_DISCOVERY_READ_KEY", "read-key-0123456789"),
                ("SEARCH_SECRET", "s"),
                ("TICKETS_TOKEN", "t"),
                ("WIKI_PASSWORD", "p"),
            ]),
        )
        .unwrap();
        assert!(full.admin.protect_reads);
        assert_eq!(full.admin.read_keys.len(), 1);
        assert_eq!(full.http.allowed_origins, ["https://ui.example.com"]);
        assert!(quickstart.admin.allow_loopback_writes);
        assert_eq!(full.servers.len(), 4);
        let kinds: Vec<&str> = full.servers.values().map(|s| s.auth.kind()).collect();
        assert_eq!(kinds, ["oauth2", "bearer", "basic", "none"]);
        let transports: Vec<TransportKind> = full.servers.values().map(|s| s.transport()).collect();
        assert_eq!(
            transports,
            [
                TransportKind::Auto,
                TransportKind::Sse,
                TransportKind::StreamableHttp,
                TransportKind::Stdio
            ]
        );
        // Without the variables, each is named.
        let errs = errors(load_str(
            include_str!("../examples/full.yaml"),
            Format::Yaml,
            None,
            &[],
        ));
        assert_eq!(errs.len(), 5, "{errs}");
    }
}
