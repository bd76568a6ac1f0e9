#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests.
#
#   eval "$(.ci/postgres.sh start)"     # exports LORAMGR_TEST_POSTGRES_URL and LORAMGR_PG_DIR
#   .ci/postgres.sh stop [DIR]          # DIR defaults to $LORAMGR_PG_DIR; removes the cluster
#
# `start` runs initdb into a fresh temp folder, listens on 127.0.0.1 only (on a free port, unix
# socket inside that folder), trusts the local test user `loramgr` (a superuser, so tests can
# CREATE DATABASE per test), creates the database `loramgr` and prints two `export` lines.
# Run as root, the server runs as the `postgres` user (PostgreSQL refuses to run as root);
# run as anyone else, it runs as that user. PG_BIN overrides where the binaries are found.
set -euo pipefail

find_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
    if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        pg_config --bindir; return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
        echo "postgres.sh: no PostgreSQL binaries (initdb) found; set PG_BIN" >&2
        exit 1
    fi
    echo "$dir"
}

as_owner() {
    # The cluster belongs to `postgres` when we are root, to ourselves otherwise.
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 - <<'EOF'
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
EOF
}

start() {
    local bin dir port
    bin=$(find_bin)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/loramgr-pg.XXXXXX")
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir"; fi
    as_owner "$bin/initdb" -D "$dir/data" -U loramgr --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    # The port is free when asked for and taken a moment later; retry on the rare collision.
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
                -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            >/dev/null; then
            echo "$port" >"$dir/port"
            as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U loramgr loramgr
            echo "export LORAMGR_TEST_POSTGRES_URL=postgresql+psycopg://loramgr@127.0.0.1:$port/loramgr"
            echo "export LORAMGR_PG_DIR=$dir"
            return
        fi
    done
    cat "$dir/server.log" >&2
    rm -rf "$dir"
    exit 1
}

stop() {
    local dir=${1:-${LORAMGR_PG_DIR:-}}
    if [[ -z "$dir" || ! -d "$dir/data" ]]; then
        echo "postgres.sh: no cluster folder given (pass DIR or set LORAMGR_PG_DIR)" >&2
        exit 1
    fi
    as_owner "$(find_bin)/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 start | stop [DIR]" >&2; exit 2 ;;
esac
