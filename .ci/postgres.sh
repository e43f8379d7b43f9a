#!/usr/bin/env bash
# Throwaway PostgreSQL for the test run, from Debian's packages.
#
#   .ci/postgres.sh install          install the server if it is missing (apt-get)
#   .ci/postgres.sh start DIR        initdb + start a cluster in DIR on a free
#                                    loopback port; prints its URL on stdout
#   .ci/postgres.sh stop DIR         stop it and delete DIR
#
# PG_EXTRA_OPTS adds server settings (the test run passes fsync=off: a
# throwaway cluster needs no durability; benchmarks leave it durable).
#
# PostgreSQL refuses to run as root, so as root the cluster runs as the
# `postgres` user (created by the Debian package). It listens on 127.0.0.1 only,
# trusts local connections (a throwaway test cluster) and keeps its socket in DIR.
set -euo pipefail

pg_bindir() {
  local initdb
  initdb=$(ls -1 /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$initdb" ] || return 1
  dirname "$initdb"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-}" in
  install)
    if pg_bindir >/dev/null; then
      exit 0
    fi
    if [ "$(id -u)" != 0 ]; then
      echo "postgres.sh: PostgreSQL is not installed and this user cannot apt-get install it" >&2
      exit 1
    fi
    echo "postgres.sh: installing PostgreSQL from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    pg_bindir >/dev/null
    ;;
  start)
    dir=${2:?usage: postgres.sh start DIR}
    bindir=$(pg_bindir) || { echo "postgres.sh: PostgreSQL is not installed (run: .ci/postgres.sh install)" >&2; exit 1; }
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    chmod 700 "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    as_pg "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 ${PG_EXTRA_OPTS:-}" \
      start >&2 || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://postgres:throwaway@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir=${2:?usage: postgres.sh stop DIR}
    bindir=$(pg_bindir) || exit 0
    if [ -d "$dir/data" ]; then
      as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
