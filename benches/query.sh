#!/usr/bin/env bash
# The query benchmark (issue 22): the fleet workload (HOSTS x 4 series, POINTS points at 10 s,
# identical data for both systems) pushed into `tidemark up` and into VictoriaMetrics (Debian's
# victoria-metrics, its result cache off: -search.disableCache), then each fleet query as a
# `query_range` over the data's last hour at STEP (60 s), RUNS times (5) per system,
# interleaved; prints the median and min per query and system, the series each returned, and
# Tidemark's cached time (the same request without nocache=1, after one warm-up).
# Usage: benches/query.sh          (10,000 series x 360 points, the issue's table)
#        HOSTS=25000 benches/query.sh   (100,000 series)
# BIN=DIR runs DIR/tidemark (an older build, for an A/B). PEER=none skips VictoriaMetrics.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-2500}
POINTS=${POINTS:-360}
RUNS=${RUNS:-5}
STEP=${STEP:-60}
cargo build --release --bin tidemark --bin tidemark-loadgen
bin=${BIN:-target/release}
dir=$(mktemp -d)
printf '[scrape]\nself_scrape = false\n' > "$dir/tidemark.toml"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
"$bin/tidemark" up --listen "127.0.0.1:$port" --data-dir "$dir/data" --config "$dir/tidemark.toml" \
  2>"$dir/server.log" &
pid=$!
trap 'kill $pid ${vmpid:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && break; sleep 0.05; done
now=$(date +%s)
start_ms=$(( (now / 10 - POINTS - 6) * 10000 ))
end=$(( start_ms / 1000 + POINTS * 10 - 10 ))
"$bin/tidemark-loadgen" --url "http://127.0.0.1:$port" --hosts "$HOSTS" --points "$POINTS" \
  --start "$start_ms" --queries 0 | grep -E "workload|queryable" || true
urls="tidemark=http://127.0.0.1:$port"
if [ "${PEER:-vm}" = vm ] && command -v victoria-metrics >/dev/null; then
  vmport=$(free_port)
  victoria-metrics -storageDataPath "$dir/vm" -httpListenAddr "127.0.0.1:$vmport" -retentionPeriod 100y \
    -search.disableCache -influxSkipSingleField -loggerLevel ERROR 2>>"$dir/vm.log" &
  vmpid=$!
  for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$vmport/health" >/dev/null 2>&1 && break; sleep 0.05; done
  "$bin/tidemark-loadgen" --url "http://127.0.0.1:$vmport" --hosts "$HOSTS" --points "$POINTS" \
    --start "$start_ms" --stream --peer | grep -E "acknowledged" || true
  curl -fs "http://127.0.0.1:$vmport/internal/force_flush" >/dev/null || true
  sleep 2
  urls="$urls victoria-metrics=http://127.0.0.1:$vmport"
fi
python3 - "$end" "$STEP" "$RUNS" $urls <<'EOF'
import json, statistics, sys, time, urllib.parse, urllib.request
end, step, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
systems = [a.split("=", 1) for a in sys.argv[4:]]
queries = [
    "rate(http_requests_total[5m])",
    "max_over_time(mem_used_bytes[10m])",
    "avg by (region) (cpu_load)",
    "quantile by (region) (0.9, cpu_load)",
    "topk(5, cpu_load)",
    'avg_over_time(cpu_load{env="prod"}[5m])',
    "sum by (env) (rate(http_requests_total[1m]))",
]
def get(url, q, extra):
    params = {"query": q, "start": end - 3600, "end": end, "step": step, **extra}
    # Timed: the request and the whole body read (as a dashboard waits for it); not the
    # client's JSON parse (3.5 MB for the 2,500-series queries: about as long again in Python).
    t = time.perf_counter()
    with urllib.request.urlopen(url + "/api/v1/query_range?" + urllib.parse.urlencode(params)) as r:
        body = r.read()
    ms = (time.perf_counter() - t) * 1000
    data = json.loads(body)
    assert data["status"] == "success", data
    return ms, len(data["data"]["result"]), sum(len(s["values"]) for s in data["data"]["result"]), body
print(f"query_range over [{end - 3600}, {end}] at {step} s, median (min) of {runs} runs, ms")
head = "| query | " + " | ".join(f"{n} ms | series | points" for n, _ in systems) + " | Tidemark cached ms |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
for q in queries:
    row, shapes = [], []
    times = {n: [] for n, _ in systems}
    shape = {}
    for n, u in systems:
        get(u, q, {"nocache": 1} if n == "tidemark" else {})  # warm-up (page cache, pools)
    for _ in range(runs):
        for n, u in systems:
            ms, series, points, _ = get(u, q, {"nocache": 1} if n == "tidemark" else {})
            times[n].append(ms)
            shape[n] = (series, points)
    for n, _ in systems:
        row.append(f"{statistics.median(times[n]):.1f} ({min(times[n]):.1f}) | {shape[n][0]} | {shape[n][1]}")
    tm = dict(systems)["tidemark"]
    get(tm, q, {})
    cached = statistics.median(get(tm, q, {})[0] for _ in range(runs))
    # The cached answer is the uncached one, byte for byte.
    assert get(tm, q, {})[3] == get(tm, q, {"nocache": 1})[3], f"cached answer differs: {q}"
    print(f"| `{q}` | " + " | ".join(row) + f" | {cached:.1f} |")
EOF
echo "tidemark peak RSS: $(grep VmHWM /proc/$pid/status | awk '{print $2/1024 " MiB"}')"
