#!/usr/bin/env bash
# A throwaway PostgreSQL for the store tests (tests/e2e/store.rs), from
# Debian's packages.
#
#   scripts/postgres-test.sh start [DIR]   start one; prints, on stdout only,
#                                          DATABASE_URL=postgres://...
#                                          PID=<postmaster pid>
#                                          DIR=<its directory>
#   scripts/postgres-test.sh stop DIR      stop it (pg_ctl, then its PID) and
#                                          remove DIR
#
# The server lives in DIR (default: a new temporary directory): data, log,
# Unix socket. It listens on 127.0.0.1 only, on a free port, with a random
# password (SCRAM) for the superuser `mcp`, and has one database,
# `mcp_discovery`. initdb and the server refuse to run as root: as root, they
# run as the `postgres` user that the package creates.
#
# If initdb/pg_ctl are not found (under /usr/lib/postgresql/*/bin or on PATH),
# `start` installs the `postgresql` package with apt-get (root only).
#
# Environment: PG_BIN_DIR  use the initdb/pg_ctl/postgres in this directory.
set -euo pipefail

log() { printf 'postgres-test: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

MARKER=.mcp-discovery-postgres-test

# The directory with initdb and pg_ctl: PG_BIN_DIR, the newest Debian
# version, or PATH.
find_bin_dir() {
    if [[ -n "${PG_BIN_DIR:-}" ]]; then
        [[ -x "$PG_BIN_DIR/initdb" && -x "$PG_BIN_DIR/pg_ctl" ]] \
            || die "PG_BIN_DIR=$PG_BIN_DIR has no initdb/pg_ctl"
        printf '%s\n' "$PG_BIN_DIR"
        return 0
    fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    local initdb
    if initdb="$(command -v initdb)" && command -v pg_ctl >/dev/null; then
        dirname "$(readlink -f "$initdb")"
        return 0
    fi
    return 1
}

install_postgres() {
    [[ "$(id -u)" -eq 0 ]] \
        || die "PostgreSQL is not installed and only root can install it: apt-get install postgresql"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is not available"
    log "installing PostgreSQL with apt-get (once)"
    # No service is started inside containers (policy-rc.d); on a full system
    # the package's own cluster may start, as with any install of it.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
}

# Runs a command as the user that owns the cluster.
as_owner() {
    if [[ "$OWNER" == "$(id -un)" ]]; then
        "$@"
    else
        runuser -u "$OWNER" -- "$@"
    fi
}

# A port on 127.0.0.1 that nothing answers on (the server's bind is the
# real test: start retries with another port if it fails).
pick_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "no free port found on 127.0.0.1"
}

start() {
    local bin
    if ! bin="$(find_bin_dir)"; then
        install_postgres
        bin="$(find_bin_dir)" || die "initdb/pg_ctl still not found after installing postgresql"
    fi

    local dir="${1:-}"
    if [[ -z "$dir" ]]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/mcp-discovery-pg.XXXXXX")"
    else
        mkdir -p "$dir"
        [[ -z "$(ls -A "$dir")" ]] || die "$dir is not empty"
    fi
    touch "$dir/$MARKER"

    OWNER="$(id -un)"
    if [[ "$(id -u)" -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root and there is no postgres user to run the server as"
        OWNER=postgres
    fi
    printf '%s\n' "$OWNER" >"$dir/owner"
    printf '%s\n' "$bin" >"$dir/bin"

    local password
    password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    (umask 077 && printf '%s\n' "$password" >"$dir/pwfile")
    chown -R "$OWNER" "$dir"
    chmod 700 "$dir"

    as_owner "$bin/initdb" -D "$dir/data" -U mcp --pwfile="$dir/pwfile" \
        --auth=scram-sha-256 -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    rm -f "$dir/pwfile"

    local port="" attempt
    for attempt in 1 2 3 4 5; do
        port="$(pick_port)"
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >&2; then
            break
        fi
        if [[ $attempt -eq 5 ]] || ! grep -q "could not bind\|already in use" "$dir/server.log"; then
            tail -n 20 "$dir/server.log" >&2 || true
            die "the server did not start (log: $dir/server.log)"
        fi
        log "port $port taken; trying another"
        port=""
    done

    local pid
    pid="$(head -n 1 "$dir/data/postmaster.pid")"
    printf '%s\n' "$pid" >"$dir/pid"
    # A client: runs as anyone.
    PGPASSWORD="$password" "$bin/createdb" -h 127.0.0.1 -p "$port" -U mcp mcp_discovery >&2 \
        || { stop "$dir"; die "createdb failed"; }

    printf 'DATABASE_URL=postgres://mcp:%s@127.0.0.1:%s/mcp_discovery\n' "$password" "$port"
    printf 'PID=%s\n' "$pid"
    printf 'DIR=%s\n' "$dir"
}

stop() {
    local dir="${1:-}"
    [[ -n "$dir" ]] || die "usage: $0 stop DIR"
    [[ -f "$dir/$MARKER" ]] || die "$dir was not made by this script"
    OWNER="$(cat "$dir/owner" 2>/dev/null || id -un)"
    local bin pid=""
    bin="$(cat "$dir/bin" 2>/dev/null || true)"
    pid="$(cat "$dir/pid" 2>/dev/null || true)"
    if [[ -n "$bin" && -f "$dir/data/postmaster.pid" ]]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 20 stop >&2 || true
    fi
    # Whatever pg_ctl left, by PID: TERM, then KILL.
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    log "stopped and removed $dir"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) die "usage: $0 start [DIR] | stop DIR" ;;
esac
