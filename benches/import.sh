#!/usr/bin/env bash
# Import throughput: `tidemark import` from a file and from a real Prometheus over remote read,
# against `promtool tsdb create-blocks-from openmetrics` on the same OpenMetrics file.
#
# Usage: benches/import.sh   (settings by environment)
#   SERIES=10000 POINTS=360   fleet series and points per series at 10 s (3.6 M samples)
#   AGO_H=0                   the data ends this many hours ago (0: 10 minutes ago, all hot;
#                             48: beyond the default 26 h hot retention, so most of it goes
#                             straight to the cold tiers)
#   BIN=dir                   use the binaries in dir instead of building target/release
# Needs promtool and prometheus (Debian's prometheus package; .ci/test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES=${SERIES:-10000}
POINTS=${POINTS:-360}
AGO_H=${AGO_H:-0}
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin tidemark
  BIN=target/release
fi
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# The file: fleet metrics (cpu_load, mem_used_bytes, disk_used_bytes, http_requests_total)
# over SERIES/4 hosts, grouped by series as promtool's input usually is.
python3 - "$dir/fleet.om" "$SERIES" "$POINTS" "$AGO_H" <<'EOF'
import sys, time, random
path, series, points, ago = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
end = int(time.time()) - (ago * 3600 if ago else 600)
end -= end % 10
start = end - points * 10
rnd = random.Random(7)
hosts = series // 4
with open(path, "w") as f:
    for metric, typ in (("cpu_load", "gauge"), ("mem_used_bytes", "gauge"),
                        ("disk_used_bytes", "gauge"), ("http_requests", "counter")):
        f.write(f"# TYPE {metric} {typ}\n")
        name = metric + ("_total" if typ == "counter" else "")
        for h in range(hosts):
            lab = f'host="h{h}",region="r{h % 8}",env="{"prod" if h % 4 else "dev"}"'
            v = rnd.random() * 100
            lines = []
            for k in range(points):
                t = start + k * 10
                if typ == "counter":
                    v += rnd.randint(0, 100)
                    s = str(int(v))
                elif metric == "cpu_load":
                    s = f"{rnd.random():.2f}"
                else:
                    s = str(int(4e9 + rnd.randint(0, 1 << 20)))
                lines.append(f"{name}{{{lab}}} {s} {t}\n")
            f.write("".join(lines))
    f.write("# EOF\n")
EOF
samples=$(( SERIES / 4 * 4 * POINTS ))
echo "file: $(du -h "$dir/fleet.om" | cut -f1), $samples samples, $SERIES series"

rate() { python3 -c "import sys; n,s=float(sys.argv[1]),float(sys.argv[2]); print(f'{s:.2f} s, {n/s/1e6:.2f} M samples/s')" "$1" "$2"; }

# promtool, the reference.
t0=$(now)
promtool tsdb create-blocks-from openmetrics "$dir/fleet.om" "$dir/tsdb" >/dev/null
t1=$(now)
echo "promtool tsdb create-blocks-from openmetrics: $(rate $samples "$(echo "$t1 - $t0" | bc)")"

start_up() { # $1 = data dir; sets $url, records the pid (not in a subshell: the trap)
  local port; port=$(free_port)
  "$BIN/tidemark" up --listen "127.0.0.1:$port" --data-dir "$1" 2>"$1.log" >/dev/null &
  pids+=($!)
  for _ in $(seq 1 400); do
    curl -fs "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && break
    sleep 0.05
  done
  url="http://127.0.0.1:$port"
}
applied() { # $1 = url: samples the target has applied (hot and cold)
  curl -s "$1/api/v1/query" --data-urlencode 'query=sum(count_over_time(cpu_load[3y])) + sum(count_over_time(mem_used_bytes[3y])) + sum(count_over_time(disk_used_bytes[3y])) + sum(count_over_time(http_requests_total[3y]))' \
    --data-urlencode "time=$(date +%s)" | python3 -c '
import json, sys
a = json.load(sys.stdin)
if "data" not in a:
    print(a, file=sys.stderr); print(0); sys.exit()
r = a["data"]["result"]
print(int(float(r[0]["value"][1])) if r else 0)'
}
wait_applied() { # $1 = url, $2 = start time; prints seconds until every sample is queryable
  for _ in $(seq 1 1200); do
    [ "$(applied "$1")" -ge "$samples" ] && break
    sleep 0.25
  done
  echo "$(now) - $2" | bc
}

# tidemark import from the file.
start_up "$dir/a"
t0=$(now)
"$BIN/tidemark" import --from-file "$dir/fleet.om" --url "$url" --state "$dir/a.state" | sed 's/^/  /'
t1=$(now)
echo "tidemark import --from-file, acknowledged: $(rate $samples "$(echo "$t1 - $t0" | bc)")"
echo "  ... all queryable: $(rate $samples "$(wait_applied "$url" "$t0")")"

# A real Prometheus over promtool's blocks, and tidemark import over remote read.
pport=$(free_port)
printf 'global:\n  scrape_interval: 15s\n' > "$dir/prometheus.yml"
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
  --storage.tsdb.retention.time=10y --web.listen-address="127.0.0.1:$pport" 2>"$dir/prometheus.log" >/dev/null &
pids+=($!)
for _ in $(seq 1 400); do
  curl -fs "http://127.0.0.1:$pport/-/ready" >/dev/null 2>&1 && break
  sleep 0.05
done
start_up "$dir/b"
end=$(date +%s)
t0=$(now)
"$BIN/tidemark" import --from-prometheus "http://127.0.0.1:$pport" --match '{host=~".+"}' \
  --start $(( end - AGO_H * 3600 - POINTS * 10 - 1200 )) --end "$end" --url "$url" --state "$dir/b.state" | sed 's/^/  /'
t1=$(now)
echo "tidemark import --from-prometheus, acknowledged: $(rate $samples "$(echo "$t1 - $t0" | bc)")"
echo "  ... all queryable: $(rate $samples "$(wait_applied "$url" "$t0")")"
echo "peak RSS of the targets: $(grep VmHWM /proc/${pids[0]}/status | awk '{print $2/1024 " MiB"}'), $(grep VmHWM /proc/${pids[2]}/status | awk '{print $2/1024 " MiB"}')"
