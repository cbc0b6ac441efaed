//! Fuzz targets on the stable toolchain (proptest) for configuration
//! loading: arbitrary text in every format, and arbitrary documents built
//! from the real keys with values of every type. Loading never panics, and
//! every error has a message, the file, and (for a well-formed document) the
//! key path it is about. `PROPTEST_CASES` overrides the case count (see the
//! README, "Fuzzing").

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::{load_str, Format};

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Values of every kind, with the ones validation cares about (durations,
/// sizes, URLs, interpolation) over-represented.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[0-9]{1,20}(ns|ms|s|m|h|d|y|KiB|MiB|GB|)".prop_map(Value::String),
        "(http|https|ftp)://[a-z0-9.:@%\\[\\]]{0,20}/[a-z?=&]{0,8}".prop_map(Value::String),
        "\\$\\{[A-Z_:\\-]{0,8}\\}?[a-z$]{0,4}".prop_map(Value::String),
        ".{0,16}".prop_map(Value::String),
    ]
}

const KEYS: &[&str] = &[
    "listen",
    "admin",
    "api_keys",
    "protect_reads",
    "store",
    "url",
    "encryption_key",
    "discovery",
    "poll_interval",
    "request_timeout",
    "connect_timeout",
    "backoff",
    "initial",
    "max",
    "stale_ttl",
    "max_response_bytes",
    "max_pages",
    "startup_grace",
    "push_idle_timeout",
    "min_refresh",
    "max_concurrent_attempts",
    "catalog",
    "separator",
    "servers",
    "transport",
    "command",
    "args",
    "env",
    "cwd",
    "headers",
    "auth",
    "type",
    "token",
    "username",
    "password",
    "token_url",
    "client_id",
    "client_secret",
    "scopes",
    "audience",
    "client_auth",
    "token_timeout",
    "tools",
    "allow",
    "deny",
    "push",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_\\-.]{0,10}",
        1 => ".{0,6}",
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A document shaped like a configuration: the top-level sections, and
/// servers with the server keys.
fn document() -> impl Strategy<Value = Value> {
    let server = prop::collection::vec((key(), tree()), 0..6)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    let servers = prop::collection::vec(("[a-z_\\-]{0,6}", server), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()));
    (
        prop::collection::vec((key(), tree()), 0..5),
        prop::option::of(servers),
    )
        .prop_map(|(top, servers)| {
            let mut map: Map<String, Value> = top.into_iter().collect();
            if let Some(servers) = servers {
                map.insert("servers".into(), servers);
            }
            Value::Object(map)
        })
}

fn env_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop_oneof![
                "MCP_DISCOVERY__[A-Z_]{0,30}",
                "MCP_DISCOVERY__SERVERS__[A-Z]{1,4}__(URL|COMMAND|ARGS|HEADERS__X|AUTH__TYPE)",
                "[A-Z]{1,4}",
            ],
            ".{0,12}",
        ),
        0..4,
    )
}

const FILE: &str = "fuzz.yaml";

fn check_errors(
    result: Result<crate::Config, crate::ConfigErrors>,
    want_paths: bool,
) -> Result<(), TestCaseError> {
    if let Err(errors) = result {
        prop_assert!(errors.iter().next().is_some(), "an empty error list");
        for e in errors.iter() {
            prop_assert!(
                !e.message.trim().is_empty(),
                "an error without a message: {e:?}"
            );
            // An override's error is about the environment, not the file,
            // and names its variable (its path when it names a setting).
            let from_env = e.file.is_none() && e.message.contains("environment variable");
            prop_assert!(
                from_env || e.file.as_deref() == Some(Path::new(FILE)),
                "{e:?}"
            );
            if want_paths {
                prop_assert!(
                    from_env || !e.path.is_empty(),
                    "an error without a path: {e:?}"
                );
            }
        }
    }
    Ok(())
}

/// Found by `structured_documents_load_or_fail_with_paths`: an error under
/// an empty key had the empty path, the same as an error about the whole
/// file (`{"": "${"}`: "unterminated ${" with path "").
#[test]
fn an_error_under_an_empty_key_names_it() {
    let err = load_str(r#"{"": "${"}"#, Format::Json, Some(Path::new(FILE)), &[]).unwrap_err();
    assert!(err.iter().all(|e| e.path == r#""""#), "{err:?}");
    let err = load_str(
        r#"{"servers": {"": {"url": 5}}}"#,
        Format::Json,
        Some(Path::new(FILE)),
        &[],
    )
    .unwrap_err();
    assert!(
        err.iter().all(|e| e.path.starts_with(r#"servers."""#)),
        "{err:?}"
    );
}

proptest! {
    #![proptest_config(cases(256))]

    /// Any document built from the real keys, as JSON, YAML and TOML text:
    /// a config or errors that each name their key.
    #[test]
    fn structured_documents_load_or_fail_with_paths(doc in document(), env in env_pairs()) {
        let json = serde_json::to_string(&doc).unwrap();
        check_errors(load_str(&json, Format::Json, Some(Path::new(FILE)), &env), true)?;
        // JSON is YAML too.
        check_errors(load_str(&json, Format::Yaml, Some(Path::new(FILE)), &env), true)?;
    }

    /// Arbitrary text in every format never panics.
    #[test]
    fn any_text_loads_or_fails(
        text in prop_oneof![
            ".{0,200}",
            "[a-z_:\\- \\n\\[\\]{}\"'#&*!|>0-9.$]{0,200}",
        ],
        env in env_pairs(),
    ) {
        for format in [Format::Yaml, Format::Json, Format::Toml] {
            check_errors(load_str(&text, format, Some(Path::new(FILE)), &env), false)?;
        }
    }
}
