#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks, in a directory of its own, on a free
# loopback port, password auth over TCP (superuser `postgres`, password from $PG_PASSWORD or
# "syncledger-test").
#   tools/pg_cluster.sh start DIR [PORT]   prints the port; the cluster runs until `stop`
#   tools/pg_cluster.sh stop DIR [MODE]    pg_ctl stop (MODE fast by default; immediate = crash)
#   tools/pg_cluster.sh restart DIR        start an existing cluster again on its old port
# initdb refuses to run as root: as root the server runs as the `postgres` user (Debian's
# package creates it). When /dev/null is not a character device (some sandboxes make it a
# plain file only root may write), the server runs in a private mount namespace with a real
# null device bound over it, instead of writing around the problem.
set -euo pipefail
cmd=${1:?usage: pg_cluster.sh start|stop|restart DIR}
dir=${2:?usage: pg_cluster.sh start|stop|restart DIR}
bin=""
for v in 15 16 17 14 13; do
  if [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then bin="/usr/lib/postgresql/$v/bin"; break; fi
done
if [ -z "$bin" ] && command -v initdb >/dev/null 2>&1; then bin="$(dirname "$(command -v initdb)")"; fi
if [ -z "$bin" ]; then
  echo "pg_cluster: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 3
fi

as_server_user() {
  if [ "$(id -u)" != 0 ]; then "$@"; return; fi
  if [ -c /dev/null ]; then runuser -u postgres -- "$@"; return; fi
  local nulldev="$dir/null"
  [ -c "$nulldev" ] || { mknod "$nulldev" c 1 3; chmod 666 "$nulldev"; }
  unshare -m --propagation private -- sh -c 'mount --bind "$0" /dev/null && shift && exec runuser -u postgres -- "$@"' "$nulldev" _ "$@"
}

case "$cmd" in
start)
  port=${3:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
  mkdir -p "$dir"
  chmod 755 "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  printf '%s\n' "${PG_PASSWORD:-syncledger-test}" > "$dir/pwfile"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/pwfile"; fi
  as_server_user "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  # The port was free when asked; another cluster may take it before the server binds it, so a
  # failed start (with no port given) tries a fresh port, up to three times.
  for attempt in 1 2 3; do
    echo "$port" > "$dir/port"
    if as_server_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null; then
      break
    fi
    if [ -n "${3:-}" ] || [ "$attempt" = 3 ]; then cat "$dir/server.log" >&2; exit 1; fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  done
  echo "$port"
  ;;
restart)
  port=$(cat "$dir/port")
  as_server_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "$port"
  ;;
stop)
  mode=${3:-fast}
  as_server_user "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null 2>&1 || true
  ;;
*)
  echo "pg_cluster: unknown command $cmd" >&2; exit 2 ;;
esac
