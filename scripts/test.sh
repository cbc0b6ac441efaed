#!/usr/bin/env bash
# The project's test command: installs the interop peers the tests need
# (pinned, into .deps/, skipped when already there), then runs every test of
# the workspace: unit tests and the end-to-end binary (tests/e2e).
#
#   scripts/test.sh                  # everything
#   scripts/test.sh --test e2e       # extra arguments go to `cargo test`
#   MCP_DISCOVERY_SKIP_INTEROP=1 scripts/test.sh   # no Python/Node peers
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n==> %s\n' "$*"; }

if [[ "${MCP_DISCOVERY_SKIP_INTEROP:-}" == "1" ]]; then
    section "Interop peers: skipped (MCP_DISCOVERY_SKIP_INTEROP=1)"
else
    section "Interop peers (scripts/setup-test-deps.sh)"
    scripts/setup-test-deps.sh
fi

section "cargo test --workspace $*"
cargo test --workspace "$@"
