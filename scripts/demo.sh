#!/usr/bin/env bash
# make demo / make demo-stop: a backend, an origin listener and an edge on loopback, with the
# configs in conf/. A page that changes on every request is fetched through the edge; for each
# fetch the edge's metrics tell how many bytes crossed the tunnel.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
STATE=.demo
EDGE=http://127.0.0.1:8080
EDGE_ADMIN=http://127.0.0.1:9101
ORIGIN_ADMIN=http://127.0.0.1:9102

stop() {
  local any=0 pids=""
  for p in edge origin backend; do
    if [ -f "$STATE/$p.pid" ]; then
      pid=$(cat "$STATE/$p.pid")
      kill "$pid" 2>/dev/null && { any=1; pids="$pids $pid"; } || true
      rm -f "$STATE/$p.pid"
    fi
  done
  # SIGTERM drains gracefully; wait until the ports are free again (at most 30 s).
  for _ in $(seq 1 300); do
    alive=""; for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  [ $any = 1 ] && echo "demo stopped" || echo "demo was not running"
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

for port in 8000 2408 8080 9101 9102; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: is the demo already running? (make demo-stop)"; exit 1
  fi
done
mkdir -p "$STATE"
[ -f certs/ca.pem ] || "$BIN/railproxy" certs --out certs
"$BIN/railproxy" check -c conf/origin.yaml
"$BIN/railproxy" check -c conf/edge.yaml

start() {  # name, command...
  local name=$1; shift
  setsid nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}
wait_ok() {  # url, name
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$2 did not become ready; its log:"; cat "$STATE/$2.log"; stop; exit 1
}
# In order, each once the one before is ready: an edge that starts first finds its origin
# listener down and waits out a backoff before trying it again.
start backend "$BIN/railproxy-testbackend" --listen 127.0.0.1:8000
wait_ok http://127.0.0.1:8000/health backend
start origin "$BIN/railproxy" --mode origin -c conf/origin.yaml
wait_ok "$ORIGIN_ADMIN/health" origin
start edge "$BIN/railproxy" --mode edge -c conf/edge.yaml
wait_ok "$EDGE_ADMIN/health" edge

metric() {  # sum of a metric over the edge's series
  curl -fsS "$EDGE_ADMIN/metrics" | awk -v n="$1" '$1 ~ "^"n"[{ ]" && $1 ~ /mode="edge"/ {s += $2} END {printf "%d", s}'
}

echo
echo "edge http://127.0.0.1:8080  ->  tunnel (TLS 1.3, HTTP/2) 127.0.0.1:2408  ->  backend 127.0.0.1:8000"
echo "fetching a news page that changes on every request, 6 times:"
printf '%-7s %14s %18s %9s  %s\n' fetch "client bytes" "crossed tunnel" "of raw" encoding
for i in 1 2 3 4 5 6; do
  raw0=$(metric railproxy_delta_raw_bytes_total); wire0=$(metric railproxy_delta_wire_bytes_total)
  dcz0=$(curl -fsS "$EDGE_ADMIN/metrics" | awk '/^railproxy_delta_wire_bytes_total/ && /encoding="dcz"/ {print $2}')
  size=$(curl -fsS -o "$STATE/page.html" -w '%{size_download}' "$EDGE/")
  raw1=$(metric railproxy_delta_raw_bytes_total); wire1=$(metric railproxy_delta_wire_bytes_total)
  dcz1=$(curl -fsS "$EDGE_ADMIN/metrics" | awk '/^railproxy_delta_wire_bytes_total/ && /encoding="dcz"/ {print $2}')
  raw=$((raw1 - raw0)); wire=$((wire1 - wire0))
  enc=zstd; [ "${dcz1%.*}" != "${dcz0%.*}" ] && enc="dcz (delta)"
  printf '%-7s %14s %18s %8s%%  %s\n' "#$i" "$size" "$wire" "$(awk -v w=$wire -v r=$raw 'BEGIN {printf "%.2f", 100*w/r}')" "$enc"
done
echo
echo "The stack keeps running:"
echo "  curl -s $EDGE/ | head          # the page (changes every time)"
echo "  curl -s $EDGE_ADMIN/metrics | grep ^railproxy_delta"
echo "  logs in $STATE/*.log; stop everything with: make demo-stop"
