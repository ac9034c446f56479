#!/usr/bin/env bash
# Load figures for `syncledger serve` (BENCHMARKS.md, "The server"). Loopback only, bounded runs.
#   ./tools/serve_load.sh [debug|release] [SECONDS]
# Needs: wrk (apt-get install -y wrk), python3, a built package (swift build [-c release]).
# 1. GET /api/v1/appointments (admin token) with wrk: requests/s and latency percentiles.
# 2. Webhook intake (each request a new id → inbox append + fsync) with wrk while the server runs
#    a full sync (POST /api/v1/sync every 2 s) and drains the inbox.
# 3. /healthz p50/p99/max, probed sequentially while the server catches its views up from scratch
#    over a 200k-event log (syncledger-bench's store, projections deleted).
set -euo pipefail
CONF=${1:-debug}
SECS=${2:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/.build/$CONF
TMP=$(mktemp -d /tmp/serve-load-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== building a store from the fixtures (syncledger-demo)"
"$BIN/syncledger-demo" --store "$TMP/store" --syncledger "$BIN/syncledger" > "$TMP/demo.out" 2>&1
TOKEN=$("$BIN/syncledger" --store "$TMP/store" token new --name bench --role admin 2>/dev/null)
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
(umask 077; echo -n "$SECRET" > "$TMP/secret")

FAKE_PORT=$(free_port)
"$BIN/fake-intakeq" --fixtures "$ROOT/Fixtures/practice" --day 5 --port "$FAKE_PORT" --api-key bench > "$TMP/fake.log" 2>&1 &
PIDS+=($!)
PORT=$(free_port)
INTAKEQ_API_KEY=bench "$BIN/syncledger" --store "$TMP/store" serve --roster "$ROOT/Fixtures/roster.json" \
  --listen "127.0.0.1:$PORT" --base-url "http://127.0.0.1:$FAKE_PORT/api/v1" --webhook-secret-file "$TMP/secret" \
  --requests-per-minute 100000 --daily-budget 10000000 --log-level error > "$TMP/serve.out" 2> "$TMP/serve.err" &
PIDS+=($!)
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && break; sleep 0.1; done
ROWS=$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/appointments?include_removed=true" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')

echo "== GET /api/v1/appointments?include_removed=true ($ROWS rows), wrk -t2 -c8 -d${SECS}s"
wrk -t2 -c8 -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$PORT/api/v1/appointments?include_removed=true" | grep -E "Requests/sec|50%|90%|99%|Latency|requests in"

echo "== webhook intake (new id per request: inbox append + fsync) while full syncs run, wrk -t2 -c8 -d${SECS}s"
cat > "$TMP/webhook.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  local body = '{"EventType":"AppointmentUpdated","ActionPerformedByClient":false,"Appointment":{"Id":"load-' ..
    tostring(math.random(1, 1000000000)) .. '-' .. counter .. '","ClientId":4101}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
LUA
( end=$((SECONDS + SECS)); while [ $SECONDS -lt $end ]; do
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -d '{"scope":"all"}' "http://127.0.0.1:$PORT/api/v1/sync"; sleep 2; done ) &
SYNCER=$!
wrk -t2 -c8 -d"${SECS}s" --latency -s "$TMP/webhook.lua" "http://127.0.0.1:$PORT/webhooks/intakeq/$SECRET" | grep -E "Requests/sec|50%|90%|99%|Latency|requests in|Non-2xx"
wait $SYNCER || true
curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("after: inbox depth", s["inbox"]["depth"], "webhooks", s["webhooks"], "queue", s["queue"])'
curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/sync-logs?limit=200" | python3 -c 'import json,sys; r=json.load(sys.stdin); import collections; print("runs:", dict(collections.Counter((x["sync_type"], x["status"]) for x in r)))'
kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true

echo "== /healthz while the server catches up a 200k-event log from scratch"
"$BIN/syncledger-bench" --events 200000 --runs 1 --skip-views --keep --scratch "$TMP/bench" > "$TMP/bench.out" 2>&1 || { cat "$TMP/bench.out"; exit 1; }
BSTORE=$(find "$TMP/bench" -maxdepth 3 -type d -name log -printf '%h\n' | head -1)
rm -f "$BSTORE"/projections.sqlite*
PORT=$(free_port)
INTAKEQ_API_KEY=bench "$BIN/syncledger" --store "$BSTORE" serve --roster "$ROOT/Fixtures/roster.json" \
  --listen "127.0.0.1:$PORT" --base-url "http://127.0.0.1:$FAKE_PORT/api/v1" --log-level error > "$TMP/serve2.out" 2>&1 &
PIDS+=($!)
python3 - "$PORT" <<'PY'
import http.client, sys, time
port = int(sys.argv[1])
lat, start = [], time.time()
while time.time() - start < 600:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        t = time.perf_counter(); c.request("GET", "/healthz"); c.getresponse().read(); lat.append(time.perf_counter() - t)
        c.request("GET", "/readyz"); ready = c.getresponse().status == 200; c.close()
        if ready and lat: break
    except OSError:
        time.sleep(0.05)
    time.sleep(0.01)
lat.sort()
if not lat: sys.exit("no probe answered")
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"catch-up took {time.time() - start:.1f} s; {len(lat)} /healthz probes: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1]*1000:.2f} ms")
PY
