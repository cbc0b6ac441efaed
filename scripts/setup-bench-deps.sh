#!/usr/bin/env bash
# Installs what the benchmark scripts need beyond the test peers, pinned,
# into .deps/ (git-ignored). Not part of CI: only benches/plot_scaling.py
# uses it.
#
#   .deps/bench-plot   Python venv with matplotlib, every package pinned in
#                      benches/plot-requirements.txt
#
# Idempotent: skipped when its stamp matches the pin file and the Python
# version. Needs python3 and network access to PyPI on a first run.
#
# Environment:
#   MCP_DISCOVERY_DEPS_DIR   install somewhere else than <repo>/.deps
#   PYTHON                   interpreter for the venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${MCP_DISCOVERY_DEPS_DIR:-$ROOT/.deps}"
PYTHON="${PYTHON:-python3}"
REQ="$ROOT/benches/plot-requirements.txt"

log() { printf 'setup-bench-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$DEPS"
venv="$DEPS/bench-plot"
want="$(sha256sum "$REQ" | cut -d' ' -f1)-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
have=""
[[ -f "$venv/.mcp-discovery-stamp" ]] && have="$(cat "$venv/.mcp-discovery-stamp")"
if [[ "$want" == "$have" ]] && "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "bench-plot venv up to date ($venv)"
    exit 0
fi
log "installing matplotlib into $venv"
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --requirement "$REQ"
"$venv/bin/python" -c 'import matplotlib' || die "matplotlib installed but does not import"
printf '%s\n' "$want" >"$venv/.mcp-discovery-stamp"
log "matplotlib $("$venv/bin/python" -c 'import matplotlib; print(matplotlib.__version__)')"
