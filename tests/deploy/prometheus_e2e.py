"""A real Prometheus scraping a real engine, evaluating deploy/prometheus/alerts.yaml.

Starts, all on 127.0.0.1 and free ports:
- one healthy test upstream with its push stream open (examples/upstream_farm.rs),
- the engine (target/debug/mcp-discovery) with that upstream and a broken
  one (a closed port),
- once the engine is ready and an MCP client made a tools/list and a
  tools/call through /mcp, a Prometheus server (1 s scrapes and evaluations) with the alert
  rules, every `for:` cut to 2 s (this script's override, see
  TEST_FOR_EXCEPT for the one exception; the rules are otherwise the
  shipped ones).

Passes when McpDiscoveryUpstreamDegraded fires for the broken upstream,
every other alert is inactive at the end and never fired during the run
(ALERTS), no rule fails to evaluate, and
the recording rule has a sample for the healthy upstream.

Then a reload (SIGHUP) adds an OAuth2 upstream whose token endpoint
refuses, so that every metric family has series, and `promtool check
metrics` runs on that scrape (fails on any output: naming warnings too);
the scrape is kept for check_promql.py. Every process is stopped by PID at
the end, whatever happened.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

DEADLINE_S = 60
TEST_FOR = "2s"
# Prometheus evaluates its rules a few seconds before its first scrape, when
# absent(up{job="mcp-discovery"}) is rightly true: that alert keeps a `for:`
# longer than this start-up (it must still be inactive at the end).
TEST_FOR_EXCEPT = {"McpDiscoveryNotScraped": "30s"}
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, log_path, **kwargs):
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stderr=log, stdin=subprocess.DEVNULL, **kwargs)
    procs.append((proc, log_path))
    return proc


def stop_all():
    for proc, _ in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _ in reversed(procs):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fail(message):
    print(f"ERROR {message}", file=sys.stderr)
    for proc, log in procs:
        print(f"--- {' '.join(proc.args[:2])} (exit {proc.poll()}), {log}:", file=sys.stderr)
        with open(log, errors="replace") as f:
            sys.stderr.write("".join(f.readlines()[-20:]))
    raise SystemExit(1)


def get(url, timeout=5):
    """(status, body) of a GET; (None, error) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


MCP_VERSION = "2026-07-28"


def mcp_post(url, rpc_id, method, params):
    """One stateless 2026-07-28 request: (status, decoded JSON-RPC answer)."""
    params = dict(params)
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": MCP_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "check-deploy", "version": "1"},
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MCP_VERSION,
        "Mcp-Method": method,
    }
    if "name" in params:
        headers["Mcp-Name"] = params["name"]
    body = json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as res:
            status, text = res.status, res.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if text.startswith("event:") or text.startswith("data:") or "\ndata:" in text:
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for(what, check, deadline):
    """Polls check() (a value, or None to go on) until it gives a value."""
    while True:
        for proc, _ in procs:
            if proc.poll() is not None:
                fail(f"{proc.args[0]} exited ({proc.returncode}) while waiting for: {what}")
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            fail(f"never: {what}")
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser()
    for arg in ("engine", "farm", "prometheus", "promtool", "rules", "work", "scrape_out"):
        parser.add_argument("--" + arg.replace("_", "-"), required=True)
    args = parser.parse_args()
    work = args.work
    os.makedirs(work, exist_ok=True)
    deadline = time.monotonic() + DEADLINE_S

    # ---------------------------------------------------------- upstreams
    farm_yaml = os.path.join(work, "farm.yaml")
    farm = start(
        [args.farm, "--count", "1", "--tools", "5", "--push-streams", "--workers", "1", "--config-out", farm_yaml],
        os.path.join(work, "farm.log"),
        stdout=subprocess.PIPE,
    )
    line = farm.stdout.readline().decode()
    if not line.startswith("READY"):
        fail(f"upstream_farm said {line!r}")
    with open(farm_yaml) as f:
        servers = yaml.safe_load(f)["servers"]
    closed = free_port()  # nothing listens there: connection refused
    servers["broken"] = {"url": f"http://127.0.0.1:{closed}/mcp", "transport": "streamable-http"}

    # ------------------------------------------------------------- engine
    port = free_port()
    config = {
        "discovery": {
            "request_timeout": "2s",
            "connect_timeout": "1s",
            "backoff": {"initial": "200ms", "max": "1s"},
        },
        "servers": servers,
    }
    config_path = os.path.join(work, "engine.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    engine_env = dict(os.environ, RUST_LOG="warn", MCP_DISCOVERY_STATE_DIR=work)
    engine = start(
        [args.engine, "serve", "--config", config_path, "--listen", f"127.0.0.1:{port}"],
        os.path.join(work, "engine.log"),
        stdout=subprocess.DEVNULL,
        env=engine_env,
    )
    base = f"http://127.0.0.1:{port}"

    def engine_settled():
        status, _ = get(f"{base}/readyz")
        if status != 200:
            return None
        status, body = get(f"{base}/v1/servers")
        if status != 200:
            return None
        by_name = {s["name"]: s for s in json.loads(body)["servers"]}
        u0, broken = by_name.get("u0", {}), by_name.get("broken", {})
        if u0.get("state") == "healthy" and u0.get("push_stream") == "connected" and broken.get("consecutive_failures", 0) >= 1:
            return by_name
        return None

    wait_for("engine ready, u0 healthy with its push stream, broken failed", engine_settled, deadline)
    for path in ("/v1/tools", "/v1/servers", "/nope"):
        get(base + path)
    # A 2026-07-28 MCP client on /mcp: a listing and a routed tools/call,
    # so that the MCP endpoint's metrics have series too.
    _, body = get(f"{base}/v1/tools?server=u0")
    tool = json.loads(body)["tools"][0]["name"]
    for rpc_id, method, params in ((1, "tools/list", {}), (2, "tools/call", {"name": tool, "arguments": {}})):
        status, answer = mcp_post(f"{base}/mcp", rpc_id, method, params)
        if status != 200 or "result" not in answer:
            fail(f"/mcp {method} answered {status}: {answer}")

    # ----------------------------------------------------------- prometheus
    with open(args.rules) as f:
        rules = yaml.safe_load(f)
    alert_names = []
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "alert" in rule:
                alert_names.append(rule["alert"])
                rule["for"] = TEST_FOR_EXCEPT.get(rule["alert"], TEST_FOR)
    rules_path = os.path.join(work, "alerts.yaml")
    with open(rules_path, "w") as f:
        yaml.safe_dump(rules, f, sort_keys=False)
    prom_config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [rules_path],
        "scrape_configs": [{"job_name": "mcp-discovery", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }
    prom_config_path = os.path.join(work, "prometheus.yaml")
    with open(prom_config_path, "w") as f:
        yaml.safe_dump(prom_config, f)
    prom_port = free_port()
    start(
        [
            args.prometheus,
            f"--config.file={prom_config_path}",
            f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        os.path.join(work, "prometheus.log"),
        stdout=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1"

    def api_get(path, **params):
        url = f"{api}/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        status, body = get(url)
        if status != 200:
            return None
        return json.loads(body)["data"]

    def degraded_firing():
        data = api_get("alerts")
        if data is None:
            return None
        firing = [
            a for a in data["alerts"] if a["labels"]["alertname"] == "McpDiscoveryUpstreamDegraded" and a["state"] == "firing"
        ]
        return firing or None

    firing = wait_for("McpDiscoveryUpstreamDegraded firing", degraded_firing, deadline)
    servers_firing = sorted(a["labels"]["server"] for a in firing)
    if servers_firing != ["broken"]:
        fail(f"McpDiscoveryUpstreamDegraded fires for {servers_firing}, want only broken")
    alert = firing[0]
    for key in ("summary", "description", "runbook_url"):
        if not alert["annotations"].get(key):
            fail(f"the firing alert has no {key}: {alert}")
    if "broken" not in alert["annotations"]["description"]:
        fail(f"the description does not name the server: {alert['annotations']['description']}")

    # Three more evaluations of every group (so that an alert about to go
    # pending would), then every rule's state, health and history.
    def evaluations():
        data = api_get("rules")
        return data["groups"] if data else []

    def evaluated_since(when, group):
        return group.get("lastEvaluation", "")[:19] > when

    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3))
    groups = wait_for(
        "three more rule evaluations",
        lambda: (lambda gs: gs if gs and all(evaluated_since(since, g) for g in gs) else None)(evaluations()),
        deadline,
    )
    seen = set()
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("name")
            seen.add(name)
            if rule.get("health") != "ok":
                fail(f"rule {name} does not evaluate: {rule.get('lastError')}")
            if rule["type"] == "alerting" and name != "McpDiscoveryUpstreamDegraded" and rule["state"] != "inactive":
                fail(f"{name} is {rule['state']}: {rule.get('alerts')}")
    missing = set(alert_names) - seen
    if missing:
        fail(f"Prometheus did not load {sorted(missing)}")
    # Firing at any evaluation of the run. (Pending is allowed before the
    # first scrape: McpDiscoveryNotScraped's absent(up) is true then.)
    history = api_get("query", query='count by (alertname, server) (max_over_time(ALERTS{alertstate="firing"}[5m]))')
    others = [r["metric"] for r in history["result"] if r["metric"].get("alertname") != "McpDiscoveryUpstreamDegraded"]
    if others:
        fail(f"other alerts fired during the run: {others}")
    ever_degraded = sorted(r["metric"].get("server") for r in history["result"])
    if ever_degraded != ["broken"]:
        fail(f"McpDiscoveryUpstreamDegraded fired for {ever_degraded}")
    recorded = api_get("query", query='mcp_discovery:upstream_healthy:timestamp_seconds{server="u0"}')
    if not recorded["result"]:
        fail("the recording rule has no sample for the healthy upstream u0")
    # ------------------------------------------- promtool check metrics
    # Now every series family of the contract: a reload (SIGHUP) that adds
    # an OAuth2 upstream whose token endpoint refuses, so that reload and
    # token counters have children too, then the scrape.
    config["servers"]["tokenless"] = {
        "url": f"http://127.0.0.1:{closed}/mcp",
        "auth": {"type": "oauth2", "token_url": f"http://127.0.0.1:{closed}/token", "client_id": "e2e", "client_secret": "e2e"},
    }
    with open(config_path + ".tmp", "w") as f:
        yaml.safe_dump(config, f)
    os.replace(config_path + ".tmp", config_path)
    engine.send_signal(signal.SIGHUP)

    def full_scrape():
        status, text = get(f"{base}/metrics")
        if status != 200:
            return None
        lines = text.splitlines()
        reloaded = any(l.startswith('mcp_discovery_config_reloads_total{outcome="applied"}') for l in lines)
        token_failed = any(
            l.startswith("mcp_discovery_token_refreshes_total{") and 'server="tokenless"' in l and 'outcome="failure"' in l
            for l in lines
        )
        called = any(l.startswith("mcp_discovery_tool_calls_total{") and 'server="u0"' in l for l in lines)
        return text if reloaded and token_failed and called else None

    scrape = wait_for("a reload applied and a failed token request in /metrics", full_scrape, deadline)
    with open(args.scrape_out, "w") as f:
        f.write(scrape)
    for needle in ('state="healthy"', 'state="degraded"', 'server="broken"', "mcp_discovery_push_stream_connected"):
        if needle not in scrape:
            fail(f"the scrape lacks {needle}")
    lint = subprocess.run([args.promtool, "check", "metrics"], input=scrape, capture_output=True, text=True)
    if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
        fail(f"promtool check metrics (exit {lint.returncode}): {lint.stdout}{lint.stderr}")
    families = sorted({line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE ")})
    print(f"promtool check metrics: {len(families)} metric families, no finding")
    calls = [l for l in scrape.splitlines() if l.startswith("mcp_discovery_tool_calls_total{")]
    print(f"/mcp tools/call counted as: {'; '.join(calls)}")

    up = api_get("query", query='up{job="mcp-discovery"}')
    print(
        f"prometheus: {len(alert_names)} alerts loaded (for: {TEST_FOR}); McpDiscoveryUpstreamDegraded firing for broken; "
        f"the other {len(alert_names) - 1} stayed inactive; up={up['result'][0]['value'][1]}"
    )


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    finally:
        stop_all()
