#!/usr/bin/env python3
"""Load harness: K test upstreams (100 tools each) + the engine, on loopback.

Prints the seconds from engine start until every upstream is `healthy` with
all its tools, and the engine's peak RSS (VmHWM). With --faulty F it adds F
faulty upstreams, to measure what they cost the healthy ones.

    cargo build --release --bin mcp-discovery --example upstream_farm
    python3 benches/harness.py --count 100
    python3 benches/harness.py --count 1000 --runs 3
    python3 benches/harness.py --count 500 --faulty 500 --fault hang
    python3 benches/harness.py --count 100 --wrk 10   # + GET /v1/tools and /mcp tools/list req/s (needs wrk)
    python3 benches/harness.py --count 100 --wrk 10 --wrk-rounds 3   # the same, alternated 3 times
                                      # (+ GET /v1/tools in gzip and zstd, tools/list in gzip: ADR 22)
    python3 benches/harness.py --count 1000 --push-streams   # + every GET push stream open
    python3 benches/harness.py --count 1000 --compare-push   # RSS per open push stream
    python3 benches/harness.py --count 1000 --runs 3 --era modern   # 2026-07-28 upstreams
    python3 benches/harness.py --count 1000 --compare-push --era modern   # RSS per open listen
    python3 benches/harness.py --count 1000 --runs 3 --protocol 2025-11-25   # no server/discover probe

--steady S (with --poll-interval, default 10m) also reports the engine's CPU
seconds over S seconds once all are healthy (/proc/PID/stat user + system);
every run reports cpu_s_to_all_healthy, the CPU seconds of the start-up:

    python3 benches/harness.py --count 1000 --runs 3 --poll-interval 15s --steady 60

--push-streams makes the upstreams accept the GET push stream and, once all
are healthy, waits until every one's `push_stream` is `connected` before
reading RSS. --compare-push runs the same K without, then with, push streams
(--runs times each) and prints the RSS difference per open push stream.

--era modern starts 2026-07-28 upstreams (server/discover, `_meta`) that keep
`subscriptions/listen` open: a modern upstream's push stream is its listen,
so "push streams open" means every listen connected (`push_stream ==
"connected"` in /v1/servers, as for the GET stream). Its plain runs have the
listens open (not waited for); the "without" side of --compare-push starts
them with --no-listen (listen answered -32601).

--wrk N loads each endpoint for N seconds with wrk (2 threads,
--wrk-connections): `GET /v1/tools` (full body, 304, `?server=u0`), then
`tools/list` on `POST /mcp` as a 2026-07-28 client sends it and as a 2025
client does on its session (benches/wrk/mcp_tools_list.lua), and on
`POST /mcp/u0` (one server's 100 tools: a small body, where the handler's
own cost shows, against `?server=u0`). Each row has
req/s, the p99 latency (wrk --latency) and the engine's CPU time per request
(the sum over its threads of /proc/PID/task/*/schedstat, so the machine's
other load does not count); `mcp_list_vs_v1_tools` is the /mcp req/s over
the /v1/tools req/s of the same run. --wrk-rounds R alternates the
endpoints R times and reports medians (the machine is shared: a ratio of
one run is what means something).

--protocol REV writes `protocol: REV` under `discovery:` in the engine's
config: `--era legacy --protocol 2025-11-25` skips the `server/discover`
probe each 2025 upstream otherwise gets first, so the difference to the
same run without it is the probe's cost.

--max-concurrent-attempts N writes `max_concurrent_attempts: N` under
`discovery:` (the bound on connection attempts and discovery rounds in
flight); unset, the engine's default holds.

--scaling N1,N2,.. runs each upstream count --runs times (a farm each) and
prints the cost table (medians): time to all healthy, engine CPU seconds,
peak RSS, RSS per upstream, and what the farm and this script cost;
--json-out writes it for benches/plot_scaling.py (matplotlib, pinned, in a
venv of its own: scripts/setup-bench-deps.sh). docs/scaling.json (every
push stream open) and docs/scaling-no-push.json come from these (--label
names the line in the plot; the plot script takes several JSON files to
compare runs, and its help has the command of the committed plot). At 10k
the farm is split over 3 processes: one process's accept loop over 10,000
listeners, not the engine, set the pace before.

    MALLOC_ARENA_MAX=2 python3 benches/harness.py --scaling 100,1000,10000 --tools 10 --runs 2 --farm-base-port 12000 --farm-procs 3 --push-streams --json-out docs/scaling.json
    MALLOC_ARENA_MAX=2 python3 benches/harness.py --scaling 100,1000,10000 --tools 10 --runs 2 --farm-base-port 12000 --farm-procs 3 --json-out docs/scaling-no-push.json

--probe-latency MS measures the API while the engine discovers: a thread
each for GET /v1/tools and GET /v1/servers (keep-alive, --probe-encoding
as Accept-Encoding) sends one request, reads the whole body, sleeps MS
milliseconds, until all are healthy; p50/p99/max (also to the headers):

    python3 benches/harness.py --count 10000 --tools 10 --farm-base-port 12000 --probe-latency 10

--recovery S measures a mass recovery: once all are healthy, the farm takes
every upstream off the network at once for S seconds (its `down` control
command: the server stops, cutting connections and push streams, then each
port accepts and closes every connection, counting it; --outage refuse:
nothing listens), then serves again on the same ports (`up`, sessions
kept: a network blip). Reported: how many upstreams the engine noticed
(not healthy), the seconds from `up` to all healthy again, per upstream
(median, max, sum) the failed discovery rounds (the engine's
consecutive_failures), the connections the farm closed unanswered while
down (a failed round of a 2025 upstream costs two: the server/discover
probe and the initialize), the initialize and server/discover requests
after up, and the peak of discovery
rounds in flight at once as the farm sees them (between initialize and
tools/list; summed over farm processes, so an upper bound with several).
The engine notices an outage by a failed discovery round, i.e. a poll:
with the default 10m poll it would not notice for minutes, so a
--poll-interval below S is required. (Whether a cut push stream alone makes
it notice was not isolated: with --push-streams 1000 of 1000 were noticed
within 0.9 s, as without them, because polls set going at start-up stay in
phase.) At 10k: one farm holds a listener and a connection per upstream,
20000 descriptors, the hard limit here, so --farm-procs 2 splits it; and
actix's default server keep-alive (5 s) against a 5 s poll makes polls
race the server's close of an idle pooled connection (awc: "connector has
been disconnected"), so --farm-keep-alive 60 keeps that out (without it,
before the attempt gate, 9074 of 10000 were healthy 180 s after up,
flapping; with the gate they recover, 61 of them in a second round).
With push streams each
farm process also holds a stream per upstream, so 10k runs with
--push-streams take --farm-procs 3; the recovery runs below use polls
alone:

    python3 benches/harness.py --count 1000 --tools 10 --poll-interval 2s --recovery 10 --runs 3
    python3 benches/harness.py --count 10000 --tools 10 --farm-base-port 12000 --farm-procs 2 --farm-keep-alive 60 --poll-interval 5s --recovery 15 --timeout 180

The farm's control commands (stdin, one a line; examples/upstream_farm.rs)
are down, down refuse, up, reset and stats.

BENCH_ENGINE_WRAPPER and BENCH_FARM_WRAPPER run the engine and the farm
under a profiler; instruction counts that a busy machine cannot blur, for
both sides of the wire:

    BENCH_ENGINE_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg/engine.%p" \
    BENCH_FARM_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg/farm.%p" \
        python3 benches/harness.py --count 200 --poll 1 --timeout 600 [--era modern]

Their totals include work that grows with the run's length (the polls of
/v1/servers, catalog rebuilds): compare the inclusive counts of the
engine's `discover_once` and of the farm's request handler
(`callgrind_annotate --inclusive=yes`).

Everything binds 127.0.0.1; both processes are stopped by PID at the end.
"""

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "target", "release")


def raise_nofile():
    """preexec_fn of the children: open-file soft limit up to the hard limit
    (10k upstreams need more than the usual 1024)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU seconds the process has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def cpu_ns(pid):
    """CPU time the process has run, summed over its threads (ns)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # the thread ended meanwhile
    return total


MODERN = "2026-07-28"
LEGACY = "2025-11-25"
WRK_MCP_SCRIPT = os.path.join(ROOT, "benches", "wrk", "mcp_tools_list.lua")


def mcp_post(base, body, headers, timeout=60, path="/mcp"):
    """One POST /mcp; returns (response headers, parsed body or None)."""
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json, text/event-stream",
                                          **headers})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return r.headers, (json.loads(raw) if raw else None)


def wait_coding(base, coding, mcp=False, timeout=30):
    """Asks for GET /v1/tools (or a 2026-07-28 tools/list) in `coding`
    until it comes so; its size in bytes."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {}}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                       "params": {"_meta": meta}}).encode()
    deadline = time.monotonic() + timeout
    while True:
        if mcp:
            req = urllib.request.Request(base + "/mcp", data=body, method="POST", headers={
                "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list",
                "Accept-Encoding": coding})
        else:
            req = urllib.request.Request(base + "/v1/tools", headers={"Accept-Encoding": coding})
        with urllib.request.urlopen(req, timeout=60) as r:
            got = r.headers.get("Content-Encoding") or "identity"
            size = len(r.read())
        if got == coding:
            return size
        if time.monotonic() > deadline:
            sys.exit(f"{'tools/list' if mcp else '/v1/tools'} never came in {coding}")
        time.sleep(0.05)


def mcp_modern_list(base, path="/mcp"):
    """tools/list as a 2026-07-28 client: the number of tools."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {}}
    _, body = mcp_post(base, {"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                              "params": {"_meta": meta}},
                       {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}, path=path)
    return len(body["result"]["tools"])


def mcp_legacy_session(base):
    """initialize + notifications/initialized as a 2025 client; returns the
    session id and the number of tools its tools/list shows."""
    headers, _ = mcp_post(base, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {},
        "clientInfo": {"name": "harness", "version": "0"}}}, {})
    session = headers["Mcp-Session-Id"]
    sh = {"Mcp-Session-Id": session, "MCP-Protocol-Version": LEGACY}
    mcp_post(base, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sh)
    _, body = mcp_post(base, {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}, sh)
    return session, len(body["result"]["tools"])


def start_farm(args, workdir, count, base_port, name_offset, index, push_streams=False, no_listen=False):
    """One farm process: `count` healthy upstreams named u<name_offset>..
    (and, in the first, the --faulty ones)."""
    out = os.path.join(workdir, f"farm{index}.yaml")
    # BENCH_FARM_WRAPPER: as BENCH_ENGINE_WRAPPER, for the farm.
    cmd = shlex.split(os.environ.get("BENCH_FARM_WRAPPER", "")) + [
           os.path.join(TARGET, "examples", "upstream_farm"),
           "--count", str(count), "--tools", str(args.tools),
           "--config-out", out, "--workers", str(args.farm_workers),
           "--base-port", str(base_port), "--name-offset", str(name_offset)]
    if args.faulty and index == 0:
        cmd += ["--faulty", str(args.faulty), "--fault", args.fault]
    cmd += ["--era", args.era]
    if args.farm_keep_alive is not None:
        cmd += ["--keep-alive", str(args.farm_keep_alive)]
    if args.era == "legacy" and push_streams:
        cmd.append("--push-streams")
    if args.era == "modern" and no_listen:
        cmd.append("--no-listen")
    err = open(os.path.join(workdir, f"farm{index}.err"), "w+")
    # stdin: the farm's control commands (examples/upstream_farm.rs: down, up,
    # reset, stats), one a line, each answered with one line on stdout.
    farm = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                            text=True, start_new_session=True, preexec_fn=raise_nofile)
    line = farm.stdout.readline()
    if not line.startswith("READY"):
        farm.kill()
        farm.wait()
        err.seek(0)
        sys.exit(f"upstream farm did not start: {line!r} {err.read()[-2000:]}")
    farm.err_file = err
    return farm, out


class Farms:
    """The farm processes of a run (--farm-procs; each has its own
    open-file limit). Their upstreams are u0.. in order of the processes."""

    def __init__(self, args, workdir, push_streams=False, no_listen=False):
        procs = max(1, args.farm_procs)
        if procs > 1 and args.faulty:
            sys.exit("--farm-procs above 1 takes no --faulty")
        self.procs, snippets = [], []
        offset = 0
        try:
            for index in range(procs):
                count = args.count // procs + (1 if index < args.count % procs else 0)
                base = args.farm_base_port + offset if args.farm_base_port else 0
                farm, yaml = start_farm(args, workdir, count, base, offset, index, push_streams, no_listen)
                self.procs.append(farm)
                snippets.append(yaml)
                offset += count
        except BaseException:
            self.stop()
            raise
        self.yaml = os.path.join(workdir, "farm.yaml")
        with open(self.yaml, "w") as out:
            out.write("servers:\n")
            for path in snippets:
                with open(path) as f:
                    out.writelines(line for line in f if line.strip() != "servers:")

    def cpu(self):
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def command(self, line):
        """Sends a control command to every farm at once; their answers."""
        for farm in self.procs:
            farm.stdin.write(line + "\n")
            farm.stdin.flush()
        return [farm_answer(farm, line) for farm in self.procs]

    def stop(self):
        for farm in self.procs:
            os.killpg(farm.pid, signal.SIGTERM)
            farm.wait()


def farm_answer(farm, line):
    """The farm's answer line to the command `line` just sent."""
    answer = farm.stdout.readline().strip()
    if not answer or answer.startswith("ERROR"):
        farm.err_file.seek(0)
        sys.exit(f"farm command {line!r}: {answer or 'no answer (farm gone?)'}\n"
                 f"{farm.err_file.read()[-2000:]}")
    return answer


def percentile(values, q):
    """The q-th percentile (0..100) of values, nearest rank; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


class LatencyProbe:
    """Side loop during start-up: one thread per path, each a keep-alive
    GET, its latency (until the whole body is read, and until the status
    line and headers), then `interval` seconds of sleep, until stopped.
    Requests before the engine listens are not counted."""

    def __init__(self, port, paths, interval, encoding):
        self.port, self.interval, self.encoding = port, interval, encoding
        self.stop_event = threading.Event()
        self.samples = {path: [] for path in paths}
        self.started = time.perf_counter()
        self.threads = [threading.Thread(target=self.loop, args=(path,), daemon=True) for path in paths]

    def start(self):
        for t in self.threads:
            t.start()

    def loop(self, path):
        conn = None
        headers = {"Accept-Encoding": self.encoding} if self.encoding else {}
        while not self.stop_event.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                t_head = time.perf_counter() - t0
                size = len(r.read())
                t_all = time.perf_counter() - t0
                self.samples[path].append((t_all, t_head, r.status, size,
                                           r.headers.get("Content-Encoding") or "identity",
                                           t0 - self.started))
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                self.stop_event.wait(0.02)
                continue
            self.stop_event.wait(self.interval)
        if conn is not None:
            conn.close()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)

    def summary(self):
        out = {}
        for path, samples in self.samples.items():
            key = path.strip("/").replace("/", "_")
            full = [s[0] * 1000 for s in samples]
            head = [s[1] * 1000 for s in samples]
            statuses = sorted({s[2] for s in samples})
            out[key] = {
                "requests": len(samples),
                "p50_ms": round(percentile(full, 50), 2) if full else None,
                "p99_ms": round(percentile(full, 99), 2) if full else None,
                "max_ms": round(max(full), 2) if full else None,
                "p99_ms_headers": round(percentile(head, 99), 2) if head else None,
                "max_bytes": max((s[3] for s in samples), default=None),
                "statuses": statuses,
                "encodings": sorted({s[4] for s in samples}),
                # The three slowest: seconds since the probe started, ms.
                "slowest": [[round(s[5], 2), round(s[0] * 1000, 1)]
                            for s in sorted(samples, key=lambda s: -s[0])[:3]],
            }
        return out


def servers_states(base):
    """/v1/servers parsed: {name: (state, tool_count, consecutive_failures)}."""
    servers = get_json(base + "/v1/servers", timeout=60)["servers"]
    return {s["name"]: (s["state"], s["tool_count"], s.get("consecutive_failures") or 0) for s in servers}


def state_summary(base):
    """What /v1/servers says when a deadline passed: upstreams per state
    and the most common errors (for a run that never got there)."""
    try:
        servers = get_json(base + "/v1/servers", timeout=60)["servers"]
    except OSError as e:
        return {"error": str(e)}
    states, errors = {}, {}
    for s in servers:
        states[s["state"]] = states.get(s["state"], 0) + 1
        if s.get("last_error"):
            key = s["last_error"][:120]
            errors[key] = errors.get(key, 0) + 1
    top = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    return {"states": states, "errors": dict(top)}


def recovery(args, base, farms, engine_pid):
    """Mass recovery (--recovery S): every upstream off the network at once
    for S seconds (farm `down`), then back (`up`); how long until all are
    healthy again, and what the engine sent meanwhile (farm counters)."""
    want = args.count
    farms.command("reset")
    cpu0, farm_cpu0 = cpu_seconds(engine_pid), farms.cpu()
    t_down = time.monotonic()
    farms.command("down refuse" if args.outage == "refuse" else "down")
    # During the outage: how many the engine has noticed (not healthy), by
    # a failed poll (push-stream failures leave the discovery state alone).
    not_healthy_max = 0
    first_all_noticed = None
    failures = {}
    while time.monotonic() - t_down < args.recovery:
        try:
            states = servers_states(base)
        except OSError:
            time.sleep(0.1)
            continue
        ups = {n: v for n, v in states.items() if n.startswith("u")}
        bad = sum(1 for st, _, _ in ups.values() if st != "healthy")
        not_healthy_max = max(not_healthy_max, bad)
        if bad == want and first_all_noticed is None:
            first_all_noticed = time.monotonic() - t_down
        for n, (_, _, f) in ups.items():
            failures[n] = max(failures.get(n, 0), f)
        time.sleep(0.25)
    t_up = time.monotonic()
    up_answer = " ".join(farms.command("up"))
    recovered_at = None
    deadline = t_up + args.timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/v1/servers", timeout=60) as r:
                raw = r.read()
        except OSError:
            time.sleep(0.02)
            continue
        if raw.count(b'"state":"healthy"') >= want:
            servers = json.loads(raw)["servers"]
            ok = sum(1 for s in servers if s["name"].startswith("u") and s["state"] == "healthy"
                     and s["tool_count"] == args.tools)
            if ok == want:
                recovered_at = time.monotonic() - t_up
                for s in servers:
                    if s["name"].startswith("u"):
                        failures[s["name"]] = max(failures.get(s["name"], 0),
                                                  s.get("consecutive_failures") or 0)
                break
        time.sleep(args.poll)
    cpu = cpu_seconds(engine_pid) - cpu0
    farm_cpu = farms.cpu() - farm_cpu0
    at_deadline = None if recovered_at else state_summary(base)
    stats = {}
    for answer in farms.command("stats"):
        # Columns concatenated in farm order (u0.. first); peaks summed,
        # so with several farms a peak is an upper bound.
        for key, value in json.loads(answer.split(" ", 1)[1]).items():
            if isinstance(value, list):
                stats.setdefault(key, []).extend(value)
            else:
                stats[key] = stats.get(key, 0) + value
    n = want
    fails = [failures.get(f"u{i}", 0) for i in range(n)]

    def dist(values):
        return {"median": statistics.median(values), "max": max(values), "sum": sum(values)}

    return {
        "recovery_outage_s": args.recovery,
        "recovery_outage_mode": args.outage,
        "recovery_noticed_max": not_healthy_max,
        "recovery_s_to_all_noticed": round(first_all_noticed, 3) if first_all_noticed else None,
        "recovery_farm_up": up_answer,
        "recovery_s_to_all_healthy": round(recovered_at, 3) if recovered_at else None,
        "recovery_engine_cpu_s": round(cpu, 2),
        "recovery_farm_cpu_s": round(farm_cpu, 2),
        # Per upstream: failed discovery rounds as the engine counts them
        # (the highest consecutive_failures seen, sampled every 0.25 s),
        # then from the farm's counters over outage + recovery: connections
        # it closed unanswered while down, and what came after up.
        "recovery_failed_rounds": dist(fails),
        "recovery_closed_in_outage": dist(stats["closed_in_outage"][:n]),
        "recovery_initialize_after_up": dist(stats["initialize"][:n]),
        "recovery_server_discover_after_up": dist(stats["server_discover"][:n]),
        "recovery_connections_after_up": dist(stats["connections"][:n]),
        "recovery_http_requests_after_up": dist(stats["http_requests"][:n]),
        "recovery_peak_rounds_open": stats["peak_rounds_open"],
        "recovery_peak_open_connections": stats["peak_open_connections"],
        **({"recovery_states_at_deadline": at_deadline} if at_deadline else {}),
    }


def run_once(args, workdir, farms, push_streams=False):
    farm_yaml = farms.yaml
    port = free_port()
    config = os.path.join(workdir, "config.yaml")
    with open(config, "w") as f:
        f.write(f"listen: 127.0.0.1:{port}\n")
        f.write(f"discovery:\n  poll_interval: {args.poll_interval}\n"
                f"  request_timeout: {args.request_timeout}\n  connect_timeout: 10s\n")
        if args.protocol:
            f.write(f"  protocol: {args.protocol}\n")
        if args.max_concurrent_attempts is not None:
            f.write(f"  max_concurrent_attempts: {args.max_concurrent_attempts}\n")
        with open(farm_yaml) as snippet:
            f.write(snippet.read())
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    t0 = time.monotonic()
    # BENCH_ENGINE_WRAPPER="perf record -g -o /tmp/engine.data" runs the
    # engine under a profiler (stopped by SIGTERM like the engine).
    wrapper = shlex.split(os.environ.get("BENCH_ENGINE_WRAPPER", ""))
    harness_cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    farm_cpu0 = farms.cpu()
    engine_err = open(os.path.join(workdir, "engine.err"), "w+")
    engine = subprocess.Popen(wrapper + [os.path.join(TARGET, "mcp-discovery"), "serve", "--config", config],
                              stdout=subprocess.DEVNULL, stderr=engine_err, env=env,
                              preexec_fn=raise_nofile)
    base = f"http://127.0.0.1:{port}"
    want = args.count
    healthy_at = None
    deadline = t0 + args.timeout
    probe = None
    if args.probe_latency:
        probe = LatencyProbe(port, ["/v1/tools", "/v1/servers"], args.probe_latency / 1000,
                             args.probe_encoding)
        probe.start()
    try:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/v1/servers", timeout=10) as r:
                    raw = r.read()
            except OSError:
                if engine.poll() is not None:
                    engine_err.seek(0)
                    sys.exit(f"the engine exited with status {engine.returncode}:\n"
                             f"{engine_err.read()[-3000:]}")
                time.sleep(0.02)
                continue
            # Parse only once enough say healthy: at 10k upstreams parsing
            # every poll made this script the superlinear part of the run
            # (its CPU seconds grew 40x for 10x the upstreams).
            if raw.count(b'"state":"healthy"') < want:
                time.sleep(args.poll)
                continue
            servers = json.loads(raw)["servers"]
            ok = sum(1 for s in servers
                     if s["name"].startswith("u") and s["state"] == "healthy"
                     and s["tool_count"] == args.tools)
            if ok == want:
                healthy_at = time.monotonic() - t0
                cpu_at_healthy = cpu_seconds(engine.pid)
                # What the load generator cost meanwhile: the farm's CPU
                # seconds and this script's own (its /v1/servers polls).
                farm_cpu = farms.cpu() - farm_cpu0
                harness_cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - harness_cpu0
                break
            time.sleep(args.poll)
        if probe:
            probe.stop()
        at_deadline = None if healthy_at else state_summary(base)
        push = wait_push_connected(args, base, t0, deadline) if push_streams and healthy_at else None
        # Let the engine settle (catalog rebuilds, push streams) before reading RSS.
        time.sleep(1.0)
        steady = None
        if args.steady and healthy_at:
            # CPU of the running engine over a fixed window: polls every
            # --poll-interval, nothing else asks anything of it.
            before = cpu_seconds(engine.pid)
            time.sleep(args.steady)
            steady = round(cpu_seconds(engine.pid) - before, 2)
        catalog = get_json(base + "/v1/tools", timeout=60)
        result = {
            "seconds_to_all_healthy": round(healthy_at, 3) if healthy_at else None,
            "peak_rss_mib": round(rss_kib(engine.pid, "VmHWM") / 1024, 1),
            "rss_mib": round(rss_kib(engine.pid, "VmRSS") / 1024, 1),
            # Exact figures for --compare-push; not printed (leading underscore).
            "_peak_rss_kib": rss_kib(engine.pid, "VmHWM"),
            "_rss_kib": rss_kib(engine.pid, "VmRSS"),
            "catalog_tools": len(catalog["tools"]),
            "cpu_s_to_all_healthy": round(cpu_at_healthy, 2) if healthy_at else None,
            "rss_kib_per_upstream": round(rss_kib(engine.pid, "VmHWM") / max(1, args.count + args.faulty), 1),
            "farm_cpu_s_to_all_healthy": round(farm_cpu, 2) if healthy_at and farm_cpu is not None else None,
            "harness_cpu_s_to_all_healthy": round(harness_cpu, 2) if healthy_at else None,
        }
        if args.steady:
            result[f"cpu_s_over_{args.steady:g}s_steady"] = steady
        if push_streams:
            result.update(push or {"push_connected": None, "seconds_to_all_push_connected": None,
                                   "push_states": None})
        if at_deadline:
            result["states_at_deadline"] = at_deadline
        if probe:
            result["startup_latency"] = probe.summary()
        if args.wrk:
            result.update(wrk_rows(args, base, engine.pid, len(catalog["tools"])))
        if args.recovery and healthy_at:
            result.update(recovery(args, base, farms, engine.pid))
            result["peak_rss_mib_after_recovery"] = round(rss_kib(engine.pid, "VmHWM") / 1024, 1)
            if push_streams:
                again = wait_push_connected(args, base, time.monotonic(), time.monotonic() + args.timeout)
                result["recovery_push_connected"] = again["push_connected"]
        return result
    finally:
        if probe:
            probe.stop()
        engine.send_signal(signal.SIGTERM)
        try:
            # A profiler may take long to write its output; a kill loses it.
            engine.wait(timeout=300 if wrapper else 15)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()


def wait_push_connected(args, base, t0, deadline):
    """Polls /v1/servers until every healthy upstream's push stream is
    `connected` (or the deadline); returns the counts."""
    connected_at = None
    states = {}
    while time.monotonic() < deadline:
        try:
            servers = get_json(base + "/v1/servers")["servers"]
        except OSError:
            time.sleep(0.02)
            continue
        states = {}
        for s in servers:
            if s["name"].startswith("u"):
                state = s.get("push_stream")
                states[state] = states.get(state, 0) + 1
        if states.get("connected", 0) == args.count:
            connected_at = time.monotonic() - t0
            break
        time.sleep(args.poll)
    return {
        "push_connected": states.get("connected", 0),
        "seconds_to_all_push_connected": round(connected_at, 3) if connected_at else None,
        "push_states": states,
    }


def wrk_rows(args, base, pid, catalog_tools):
    """The wrk rows: /v1/tools three ways, /mcp tools/list in both eras.
    Each endpoint --wrk-rounds times, alternated; medians."""
    with urllib.request.urlopen(base + "/v1/tools") as r:
        etag = r.headers["ETag"]
    # One answer of each /mcp kind checked before loading it (the wrk script
    # has no response callback: it would copy every body into Lua).
    modern_tools = mcp_modern_list(base)
    session, legacy_tools = mcp_legacy_session(base)
    if modern_tools != catalog_tools or legacy_tools != catalog_tools:
        sys.exit(f"/mcp tools/list shows {modern_tools} (2026-07-28) and {legacy_tools} (2025) "
                 f"tools, /v1/tools {catalog_tools}")
    if mcp_modern_list(base, "/mcp/u0") != args.tools:
        sys.exit(f"/mcp/u0 tools/list does not show the {args.tools} tools of u0")
    # Compressed bodies are computed off the request path, once per
    # catalog version: asked for (and waited for) before their runs.
    sizes = {f"bytes_{coding}": wait_coding(base, coding) for coding in ("gzip", "zstd")}
    sizes["bytes_mcp_list_gzip"] = wait_coding(base, "gzip", mcp=True)
    endpoints = [
        ("full", base + "/v1/tools", [], {}),
        ("full_gzip", base + "/v1/tools", ["-H", "Accept-Encoding: gzip"], {}),
        ("full_zstd", base + "/v1/tools", ["-H", "Accept-Encoding: zstd"], {}),
        ("mcp_list_gzip", base + "/mcp", ["-H", "Accept-Encoding: gzip", "-s", WRK_MCP_SCRIPT], {}),
        ("mcp_list", base + "/mcp", ["-s", WRK_MCP_SCRIPT], {}),
        ("mcp_list_2025", base + "/mcp", ["-s", WRK_MCP_SCRIPT],
         {"MCP_SESSION_ID": session, "MCP_LEGACY_VERSION": LEGACY}),
        ("304", base + "/v1/tools", ["-H", f"If-None-Match: {etag}"], {}),
        ("one_server", base + "/v1/tools?server=u0", [], {}),
        ("mcp_one_server", base + "/mcp/u0", ["-s", WRK_MCP_SCRIPT], {}),
    ]
    runs = {name: [] for name, *_ in endpoints}
    for round_ in range(args.wrk_rounds):
        # Alternate the order, so neither side always runs first.
        order = endpoints if round_ % 2 == 0 else list(reversed(endpoints))
        for name, url, extra, env in order:
            runs[name].append(wrk(args, url, extra, env, pid))
    out = {}
    for name, rs in runs.items():
        out[f"rps_{name}"] = round(statistics.median(r["rps"] for r in rs), 1)
        out[f"p99_ms_{name}"] = round(statistics.median(r["p99_ms"] for r in rs), 2)
        out[f"cpu_us_per_req_{name}"] = round(statistics.median(r["cpu_us_per_req"] for r in rs), 1)
        errors = [r["errors"] for r in rs if r["errors"]]
        if errors:
            out[f"socket_errors_{name}"] = errors
    out.update(sizes)
    out["gzip_vs_identity"] = round(out["rps_full_gzip"] / out["rps_full"], 1)
    out["zstd_vs_identity"] = round(out["rps_full_zstd"] / out["rps_full"], 1)
    out["mcp_list_gzip_vs_v1_tools_gzip"] = round(out["rps_mcp_list_gzip"] / out["rps_full_gzip"], 3)
    out["mcp_list_vs_v1_tools"] = round(out["rps_mcp_list"] / out["rps_full"], 3)
    out["mcp_list_2025_vs_v1_tools"] = round(out["rps_mcp_list_2025"] / out["rps_full"], 3)
    out["mcp_one_server_vs_v1"] = round(out["rps_mcp_one_server"] / out["rps_one_server"], 3)
    if args.wrk_rounds > 1:
        out["wrk_rounds"] = {name: [(r["rps"], r["p99_ms"]) for r in rs] for name, rs in runs.items()}
    return out


def wrk(args, url, extra=(), env=None, pid=None):
    """One wrk run (2 threads, --wrk-connections, --latency): req/s, p99 in
    ms, and the engine's CPU time per request. Non-2xx answers or socket
    errors fail the harness: a fast error is not a fast listing."""
    cmd = ["wrk", "-t2", f"-c{args.wrk_connections}", f"-d{args.wrk}s", "--latency", *extra, url]
    before = cpu_ns(pid) if pid else 0
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=dict(os.environ, **(env or {}))).stdout
    cpu = cpu_ns(pid) - before if pid else 0
    rps = p99 = requests = None
    errors = None
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(words[1])
        elif len(words) == 2 and words[0] == "99%":
            p99 = wrk_ms(words[1])
        elif "requests in" in line:
            requests = int(words[0])
        elif line.lstrip().startswith("Non-2xx"):
            sys.exit(f"wrk {url}: {line.strip()}\n{out}")
        elif line.lstrip().startswith("Socket errors"):
            # wrk's own 2 s timeout under load, typically: kept, not fatal.
            errors = line.split(":", 1)[1].strip()
    if rps is None or p99 is None or not requests:
        sys.exit(f"could not read wrk's output:\n{out}")
    return {"rps": rps, "p99_ms": p99, "cpu_us_per_req": cpu / 1000 / requests, "errors": errors}


def wrk_ms(text):
    """A wrk duration (`812.00us`, `3.21ms`, `1.02s`, `2.00m`) in ms."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(unit) and text[:-len(unit)].replace(".", "", 1).isdigit():
            return float(text[:-len(unit)]) * factor
    sys.exit(f"wrk latency {text!r}: unknown unit")


def run_set(args, push_streams, no_listen=False):
    """Starts a farm, runs the engine against it --runs times, stops the farm."""
    with tempfile.TemporaryDirectory(prefix="mcpd-harness-") as workdir:
        farms = Farms(args, workdir, push_streams, no_listen)
        try:
            return [run_once(args, workdir, farms, push_streams) for _ in range(args.runs)]
        finally:
            farms.stop()


def duration_s(text):
    """A humantime duration of the kinds used here (`500ms`, `2s`, `10m`,
    `1h`) in seconds."""
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(unit) and text[:-len(unit)].replace(".", "", 1).isdigit():
            return float(text[:-len(unit)]) * factor
    sys.exit(f"duration {text!r}: use ms, s, m or h")


def print_set(args, results, push_streams):
    """One JSON line per run and a median line; returns whether every run
    reached all-healthy (and, with push streams, all-connected)."""
    for r in results:
        line = {"count": args.count, "tools": args.tools, "era": args.era, "faulty": args.faulty,
                "fault": args.fault if args.faulty else None}
        if args.protocol:
            line["protocol"] = args.protocol
        if push_streams or args.compare_push:
            line["push_streams"] = push_streams
        line.update({k: v for k, v in r.items() if not k.startswith("_")})
        print(json.dumps(line))
    secs = [r["seconds_to_all_healthy"] for r in results if r["seconds_to_all_healthy"] is not None]
    if secs:
        summary = (f"median seconds_to_all_healthy={statistics.median(secs):.3f} "
                   f"median peak_rss_mib={statistics.median(r['peak_rss_mib'] for r in results)} ")
        if push_streams:
            summary += (f"median push_connected={statistics.median(r['push_connected'] or 0 for r in results)} "
                        f"median rss_mib={statistics.median(r['rss_mib'] for r in results)} ")
        print(summary + f"runs={len(results)}")
    for r in results:
        if "recovery_s_to_all_healthy" in r:
            print(f"recovery: outage {r['recovery_outage_s']:g}s ({r['recovery_outage_mode']}), "
                  f"{r['recovery_noticed_max']}/{args.count} noticed, all healthy "
                  f"{r['recovery_s_to_all_healthy']}s after up; per upstream (median/max): "
                  f"failed rounds {r['recovery_failed_rounds']['median']:g}/{r['recovery_failed_rounds']['max']}, "
                  f"connections closed in the outage {r['recovery_closed_in_outage']['median']:g}/"
                  f"{r['recovery_closed_in_outage']['max']}, initialize after up "
                  f"{r['recovery_initialize_after_up']['median']:g}/{r['recovery_initialize_after_up']['max']}, "
                  f"server/discover after up {r['recovery_server_discover_after_up']['median']:g}/"
                  f"{r['recovery_server_discover_after_up']['max']}; "
                  f"peak rounds in flight {r['recovery_peak_rounds_open']}, engine CPU "
                  f"{r['recovery_engine_cpu_s']}s")
        for path, lat in (r.get("startup_latency") or {}).items():
            print(f"start-up latency {path}: {lat['requests']} requests, p50 {lat['p50_ms']} ms, "
                  f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms (p99 to headers "
                  f"{lat['p99_ms_headers']} ms, up to {lat['max_bytes']} bytes, {lat['encodings']})")
    ok = len(secs) == len(results)
    if push_streams:
        ok = ok and all(r["push_connected"] == args.count for r in results)
    return ok


def compare_push(args, without, with_push):
    """Prints the engine's RSS cost per open push stream (medians of the runs)."""
    connected = statistics.median(r["push_connected"] or 0 for r in with_push)
    if not connected:
        print("compare-push: no push stream connected; nothing to compare")
        return
    for label, key in (("rss", "_rss_kib"), ("peak rss", "_peak_rss_kib")):
        a = statistics.median(r[key] for r in without)
        b = statistics.median(r[key] for r in with_push)
        print(f"compare-push count={args.count} tools={args.tools} era={args.era}: {label} "
              f"{a / 1024:.1f} MiB without, {b / 1024:.1f} MiB with {connected:g} push streams "
              f"connected: {b - a:+.0f} KiB, {(b - a) / connected:+.1f} KiB per open push stream")


def git_describe():
    """The commit the binaries were built from, `+dirty` if changed."""
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


SCALING_COLUMNS = [
    # key, header, format
    ("seconds_to_all_healthy", "all healthy (s)", "{:.3f}"),
    ("cpu_s_to_all_healthy", "engine CPU (s)", "{:.2f}"),
    ("peak_rss_mib", "peak RSS (MiB)", "{:.1f}"),
    ("rss_kib_per_upstream", "RSS/upstream (KiB)", "{:.1f}"),
    ("farm_cpu_s_to_all_healthy", "farm CPU (s)", "{:.2f}"),
    ("harness_cpu_s_to_all_healthy", "harness CPU (s)", "{:.2f}"),
]


def scaling(args):
    """--scaling N1,N2,..: each count --runs times (a farm each), medians;
    a table on stdout and, with --json-out, the JSON benches/plot_scaling.py
    reads. Returns whether every run reached all-healthy."""
    counts = [int(c) for c in args.scaling.split(",") if c.strip()]
    rows, ok = [], True
    for count in counts:
        args.count = count
        results = run_set(args, args.push_streams)
        ok = print_set(args, results, args.push_streams) and ok
        done = [r for r in results if r["seconds_to_all_healthy"] is not None]
        row = {"count": count, "runs": len(results), "runs_healthy": len(done)}
        for key, _, _ in SCALING_COLUMNS:
            values = [r[key] for r in done if r.get(key) is not None]
            row[key] = round(statistics.median(values), 3) if values else None
        row["per_run"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
        rows.append(row)
    widths = [max(len(h), 8) for _, h, _ in SCALING_COLUMNS]
    print(f"\nmedians of {args.runs} run(s), {args.tools} tools per upstream, era {args.era}"
          + (f", max_concurrent_attempts {args.max_concurrent_attempts}"
             if args.max_concurrent_attempts is not None else ""))
    print("upstreams  " + "  ".join(h.rjust(w) for (_, h, _), w in zip(SCALING_COLUMNS, widths)))
    for row in rows:
        cells = [(fmt.format(row[k]) if row[k] is not None else "-").rjust(w)
                 for (k, _, fmt), w in zip(SCALING_COLUMNS, widths)]
        print(f"{row['count']:>9}  " + "  ".join(cells))
    if args.json_out:
        doc = {
            "label": args.label or (f"max_concurrent_attempts {args.max_concurrent_attempts}"
                                    if args.max_concurrent_attempts is not None else git_describe()),
            "command": "python3 benches/harness.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": git_describe(),
            "cpus": os.cpu_count(),
            "tools": args.tools, "era": args.era, "runs": args.runs,
            "poll_interval": args.poll_interval,
            "max_concurrent_attempts": args.max_concurrent_attempts,
            "push_streams": args.push_streams,
            "farm_procs": args.farm_procs,
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
            "rows": rows,
        }
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json_out}")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100, help="healthy upstreams (K)")
    p.add_argument("--tools", type=int, default=100)
    p.add_argument("--faulty", type=int, default=0)
    p.add_argument("--fault", default="hang", choices=["hang", "status500", "garbage", "oversized", "endless"])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--poll", type=float, default=0.05, help="seconds between status polls")
    p.add_argument("--request-timeout", default="30s")
    p.add_argument("--poll-interval", default="10m", help="discovery.poll_interval of the engine")
    p.add_argument("--steady", type=float, default=0,
                   help="once all are healthy, also measure the engine's CPU seconds over this many seconds")
    p.add_argument("--farm-workers", type=int, default=1)
    p.add_argument("--farm-keep-alive", type=int, default=None, metavar="S",
                   help="seconds the farm keeps an idle connection (default: actix's 5 s; "
                        "a --poll-interval near it makes polls race the server's close)")
    p.add_argument("--farm-procs", type=int, default=1,
                   help="split the upstreams over this many farm processes (each has its own "
                        "open-file limit: a farm holds a listener and a connection per upstream, "
                        "so 10k upstreams in one farm sit at a 20000 limit)")
    p.add_argument("--farm-base-port", type=int, default=0,
                   help="first port of the farm's consecutive range (0: any free ports). At 10k "
                        "upstreams use one below the ephemeral range (e.g. 12000): the farm's 10k "
                        "listeners and the engine's 10k connections do not both fit in it")
    p.add_argument("--wrk", type=int, default=0, help="seconds of wrk load per endpoint (0: none)")
    p.add_argument("--wrk-connections", type=int, default=32)
    p.add_argument("--wrk-rounds", type=int, default=1,
                   help="run the wrk endpoints this many times, alternated; medians")
    p.add_argument("--era", default="legacy", choices=["legacy", "modern"],
                   help="MCP 2025 upstreams, or 2026-07-28 ones with subscriptions/listen open")
    p.add_argument("--protocol", default=None,
                   help="discovery.protocol for the engine (default: unset, i.e. auto); "
                        "2025-11-25 skips the server/discover probe")
    p.add_argument("--push-streams", action="store_true",
                   help="upstreams accept the GET push stream; wait until all are connected")
    p.add_argument("--compare-push", action="store_true",
                   help="run without, then with, push streams; print RSS per open push stream")
    p.add_argument("--max-concurrent-attempts", type=int, default=None,
                   help="discovery.max_concurrent_attempts for the engine (default: unset)")
    p.add_argument("--probe-latency", type=float, default=0, metavar="MS",
                   help="during start-up, GET /v1/tools and /v1/servers (a thread each, keep-alive) "
                        "every MS milliseconds and report p50/p99/max latency")
    p.add_argument("--probe-encoding", default=None,
                   help="Accept-Encoding of the --probe-latency requests (default: none, identity)")
    p.add_argument("--recovery", type=float, default=0, metavar="S",
                   help="once all are healthy, take every upstream off the network for S seconds, "
                        "then back; time to all healthy again and retries per upstream. The "
                        "engine notices only by failed polls: use --poll-interval below S")
    p.add_argument("--outage", default="close", choices=["close", "refuse"],
                   help="--recovery: ports accept and close every connection (counted), or refuse")
    p.add_argument("--scaling", default=None, metavar="N1,N2,..",
                   help="run each upstream count (--runs each) and print the cost table")
    p.add_argument("--json-out", default=None, help="--scaling: write the results here as JSON")
    p.add_argument("--label", default=None, help="--scaling: the legend label in the JSON")
    args = p.parse_args()
    if args.recovery and duration_s(args.poll_interval) >= args.recovery:
        sys.exit(f"--recovery {args.recovery:g}: the engine notices an outage when a poll fails, "
                 f"and --poll-interval {args.poll_interval} is not shorter than it")
    if args.scaling:
        if not scaling(args):
            sys.exit("some runs never reached all-healthy")
        return
    if args.wrk and shutil.which("wrk") is None:
        sys.exit("--wrk needs wrk on the PATH (Debian: apt-get install wrk)")

    if args.compare_push:
        without = run_set(args, False, no_listen=True)
        ok = print_set(args, without, False)
        with_push = run_set(args, True)
        ok = print_set(args, with_push, True) and ok
        compare_push(args, without, with_push)
    else:
        results = run_set(args, args.push_streams)
        ok = print_set(args, results, args.push_streams)
    if not ok:
        sys.exit("some runs never reached all-healthy"
                 + (" with every push stream connected" if args.push_streams or args.compare_push else ""))


if __name__ == "__main__":
    main()
