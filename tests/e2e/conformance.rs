//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`
//! 0.2.0-alpha.12 on Node 22, installed pinned by scripts/setup-test-deps.sh)
//! runs its client scenarios with `mcp-discovery probe <url> --json` as the
//! client, through tests/fixtures/conformance_client.sh (OAuth2 client
//! credentials from the scenario's context when it gives them; `probe --call`
//! for the scenarios that check what a client does with listed tools). Every server
//! the suite starts is pinned to 127.0.0.1 by
//! tests/fixtures/conformance-loopback.js.
//!
//! One test per scenario the issue names. [`PASSING`] is the one list of
//! scenarios that pass today, and the assertion is exact both ways: a listed
//! scenario must pass, and an unlisted one must still fail (its checks'
//! failures are printed), so that a scenario which starts passing moves into
//! the list in the same change.

use crate::process::BIN;
use crate::support::peers::{self, ConformanceRun};

/// The client scenarios of issue 10 that pass with today's client (all of
/// them). The two that check what a client does with the tools it listed
/// are driven by the adapter with `probe --call`.
const PASSING: &[&str] = &[
    // 2025-only scenario (removed in 2026-07-28): the `initialize` handshake.
    "initialize",
    // The mock answers `initialize` too; the check is that listing tools
    // never fetches a network `$ref` of an inputSchema.
    "json-schema-ref-no-deref",
    // client_secret_basic token request, discovered from the protected
    // resource metadata; the mock MCP server behind it is 2025-era.
    "auth/client-credentials-basic",
    // The 2026-07-28 client: `_meta`, `MCP-Protocol-Version` and
    // `Mcp-Method` on every request, and a retry at a version from
    // `supported` after -32022.
    "request-metadata",
    "http-standard-headers",
    // `probe --call` of every listed tool: `valid_tool` is called (with
    // `Mcp-Param-Region`), the eleven with an invalid `x-mcp-header` are
    // refused before anything is sent.
    "http-invalid-tool-headers",
    // `probe --call json_schema_echo` with the focal tool's inputSchema as
    // probe listed it: every 2020-12 keyword survived.
    "json-schema-2020-12-preservation",
];

/// Checks named on their own (a scenario's verdict alone would hide which
/// one regressed).
const PASSING_CHECKS: &[(&str, &str)] = &[
    (
        "json-schema-2020-12-preservation",
        "json-schema-2020-12-client-echo-completed",
    ),
    (
        "json-schema-2020-12-preservation",
        "json-schema-2020-12-client-$defs-preserved",
    ),
    // Every JSON-RPC message the client sent is valid per the spec's schema.
    ("json-schema-2020-12-preservation", "wire-schema-valid"),
    (
        "http-invalid-tool-headers",
        "sep-2243-client-reject-invalid-tool",
    ),
];

fn run(scenario: &str) -> Option<ConformanceRun> {
    let out = tempfile::tempdir().expect("tempdir");
    match peers::conformance_client(scenario, std::path::Path::new(BIN), out.path()) {
        Ok(run) => Some(run),
        Err(peers::PeerError::Skip(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn check(scenario: &str) {
    let Some(run) = run(scenario) else { return };
    let failures = run.failures();
    eprintln!(
        "conformance {scenario}: {} ({} checks)",
        if run.passed { "PASSED" } else { "FAILED" },
        run.checks.len()
    );
    for line in &failures {
        eprintln!("  {line}");
    }
    // The preload announces each listen it pinned to loopback.
    assert!(
        run.output.contains("LISTENING 127.0.0.1:"),
        "the conformance suite's servers were not pinned to 127.0.0.1:\n{}",
        run.output
    );
    for (_, id) in PASSING_CHECKS.iter().filter(|(s, _)| *s == scenario) {
        assert_eq!(
            run.status_of(id),
            Some("SUCCESS"),
            "conformance check {id} of {scenario}:\n{}",
            failures.join("\n")
        );
    }
    if PASSING.contains(&scenario) {
        assert!(
            run.passed,
            "conformance scenario {scenario} is listed as passing but failed:\n{}\n--- suite output:\n{}",
            failures.join("\n"),
            run.output
        );
    } else {
        assert!(
            !run.passed,
            "conformance scenario {scenario} passes now: add it to PASSING in tests/e2e/conformance.rs"
        );
        assert!(
            !run.checks.is_empty(),
            "conformance scenario {scenario} ran no check:\n{}",
            run.output
        );
    }
}

#[test]
fn client_initialize() {
    check("initialize");
}

#[test]
fn client_request_metadata() {
    check("request-metadata");
}

#[test]
fn client_http_standard_headers() {
    check("http-standard-headers");
}

#[test]
fn client_http_invalid_tool_headers() {
    check("http-invalid-tool-headers");
}

#[test]
fn client_json_schema_ref_no_deref() {
    check("json-schema-ref-no-deref");
}

#[test]
fn client_json_schema_2020_12_preservation() {
    check("json-schema-2020-12-preservation");
}

#[test]
fn client_auth_client_credentials_basic() {
    check("auth/client-credentials-basic");
}
