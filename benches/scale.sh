#!/usr/bin/env bash
# The footprint benchmark (issue 19): `tidemark up` with its defaults (fleet rules on, cold
# tiers on the local disk) takes HOSTS x 4 series of the fleet workload for POINTS points at
# 10 s, streamed; then prints peak RSS per active series, memory by component
# (tidemark_memory_bytes), data dir bytes per sample, and the restart: time to ready and peak
# RSS while it replays.
# Usage: HOSTS=250000 POINTS=180 benches/scale.sh      (1 M series, 30 minutes of event time)
# PROFILE=dev runs the debug build (memory figures are the same; rates are not).
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-50000}
POINTS=${POINTS:-60}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --bin tidemark --bin tidemark-loadgen
  bin=target/release
else
  cargo build --bin tidemark --bin tidemark-loadgen
  bin=target/debug
fi
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
start() {
  "$bin/tidemark" up --listen "127.0.0.1:$port" --data-dir "$dir/data" \
    ${TIDEMARK_CONFIG:+--config "$TIDEMARK_CONFIG"} 2>>"$dir/server.log" &
  pid=$!
}
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
ready() {
  for _ in $(seq 1 6000); do
    curl -fs "$url/-/ready" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "not ready after 300 s" >&2
  return 1
}
start
ready
"$bin/tidemark-loadgen" --url "$url" --hosts "$HOSTS" --points "$POINTS" --stream
series=$((HOSTS * 4))
samples=$((series * POINTS))
sleep 2
curl -fs "$url/metrics" | grep '^tidemark_memory_bytes' | awk -v n="$series" \
  '{printf "  %-60s %8.1f MiB  %6.0f B/series\n", $1, $2/1048576, $2/n}'
peak=$(grep VmHWM /proc/$pid/status | awk '{printf "%.0f", $2*1024}')
rss=$(grep VmRSS /proc/$pid/status | awk '{printf "%.0f", $2*1024}')
echo "peak RSS $((peak / 1048576)) MiB = $((peak / series)) B per active series (RSS now $((rss / 1048576)) MiB)"
t=$(date +%s.%N)
start_q="$(date +%s)"
q="sum by (region) (rate(http_requests_total[5m]))"
qs=()
for _ in 1 2 3 4 5; do
  t0=$(date +%s.%N)
  curl -fs --get "$url/api/v1/query" --data-urlencode "query=$q" >/dev/null
  qs+=("$(echo "$(date +%s.%N) - $t0" | bc)")
done
echo "instant query '$q': ${qs[*]} s"
kill -TERM $pid; wait $pid || true
bytes=$(du -sb "$dir/data" | cut -f1)
echo "data dir $((bytes / 1048576)) MiB = $(echo "scale=2; $bytes / $samples" | bc) bytes/sample ($(du -sb "$dir/data/log" | cut -f1) log, $(du -sb "$dir/data/cold" 2>/dev/null | cut -f1) cold)"
t0=$(date +%s.%N)
start
ready
took=$(echo "$(date +%s.%N) - $t0" | bc)
peak2=$(grep VmHWM /proc/$pid/status | awk '{printf "%.0f", $2*1024}')
grep -E "checkpoint .* written at shutdown|loaded checkpoint|checkpoint not usable" "$dir/server.log" | tail -3 || true
echo "restart: ready in $took s, peak RSS during restart $((peak2 / 1048576)) MiB ($(echo "scale=2; $peak2 / $peak" | bc) x the live peak)"
tail -3 "$dir/server.log"
