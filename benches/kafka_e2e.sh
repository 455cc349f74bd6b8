#!/usr/bin/env bash
# Kafka-path benchmark: a tansu broker, `tidemark ingest`, a worker cluster of PROCS processes
# x 1 worker, the example job submitted; tidemark-loadgen pushes to ingest.
#
#   benches/kafka_e2e.sh PROCS [loadgen args...]            live: workers consume while the load
#       is pushed; times acknowledged and in-the-hot-index (queryable) samples/s, then 200
#       single-sample probes for push-acknowledged -> queryable latency.
#   MODE=preload benches/kafka_e2e.sh PROCS [loadgen args...]   fills the topic first (no
#       worker running), then starts the workers and times the drain: Kafka -> hot index alone.
#
# WORKERS=N timely workers per process (default 1). NORULES=1 submits the job without its rules.
# CHECKPOINT=5s checkpoints the workers' hot indexes at that interval (live mode): at the end,
#   the WALs and checkpoints on disk and the WAL segments deleted, then every worker process
#   is killed and restarted, timing ready (checkpoint loaded, WALs replayed from their replay
#   points). SEGMENT_BYTES sets the WAL segment size (the unit truncation deletes; 256 MiB).
#   RESTART_WRAP="heaptrack -o FILE" RESTART_BIN=target/glibc/release/tidemark runs the
#   restarted workers under a heap profiler (a build without jemalloc: --no-default-features).
# PERF=FILE profiles worker process 0 (perf record -g) while it consumes; KEEP=1 keeps the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
procs=${1:-1}; shift || true
mode=${MODE:-live}
cargo build --release --bin tidemark --bin tidemark-loadgen
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "logs in $dir" || rm -rf "$dir"' EXIT
ready() { for _ in $(seq 1 200); do curl -fs "$1/-/ready" >/dev/null 2>&1 && return; sleep 0.05; done; echo "$1 not ready" >&2; exit 1; }

kport=$(free)
tansu broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
  --storage-engine memory://tansu/ >"$dir/tansu.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$kport) 2>/dev/null && break; sleep 0.1; done
tansu topic create metrics --partitions 4 --broker "tcp://127.0.0.1:$kport" >/dev/null
# The job's rules send alert events to this topic.
tansu topic create alerts --partitions 1 --broker "tcp://127.0.0.1:$kport" >/dev/null
iport=$(free)
printf '[kafka]\nbrokers = "127.0.0.1:%s"\npartition_key = "series"\n' "$kport" > "$dir/ingest.toml"
target/release/tidemark ingest --listen "127.0.0.1:$iport" --config "$dir/ingest.toml" 2>"$dir/ingest.log" & pids+=($!)
ingest="http://127.0.0.1:$iport"
ready "$ingest"

: > "$dir/hosts"; urls=()
for i in $(seq 0 $((procs-1))); do
  h=$(free); echo "127.0.0.1:$(free) 127.0.0.1:$h" >> "$dir/hosts"; urls+=("http://127.0.0.1:$h")
done
hot=$(IFS=,; echo "${urls[*]}")
if [ -n "${CHECKPOINT:-}" ]; then
  printf '[checkpoint]\ninterval = "%s"\n' "$CHECKPOINT" > "$dir/worker.toml"
else
  : > "$dir/worker.toml"
fi
start_workers() {
  local bin=target/release/tidemark
  [ -n "${RESTART:-}" ] && bin="${RESTART_WRAP:-} ${RESTART_BIN:-$bin}"
  for i in $(seq 0 $((procs-1))); do
    TIDEMARK_TEST_LOG_SEGMENT_BYTES=${SEGMENT_BYTES:-} \
    $bin worker --process $i --processes $procs --hosts "$dir/hosts" --workers "${WORKERS:-1}" \
      --config "$dir/worker.toml" --data-dir "$dir/w$i" --brokers "127.0.0.1:$kport" 2>>"$dir/worker-$i.log" & pids+=($!)
    wpids+=($!)
  done
  for u in "${urls[@]}"; do ready "$u"; done
  [ -n "${RESTART:-}" ] && return
  # NORULES=1: the job without its [rules] section (the last one of the file).
  sed -e "s/^brokers = .*/brokers = \"127.0.0.1:$kport\"/" -e "s|^url = .*|url = \"file://$dir/cold\"|" \
    ${NORULES:+-e '/^\[rules\]/,$d'} jobs/kafka-infra.toml > "$dir/job.toml"
  target/release/tidemark submit "$dir/job.toml" --to "${urls[0]}"
  # Profile after the submit so the job's decoder and librdkafka threads exist.
  if [ -n "${PERF:-}" ]; then
    sleep 0.2; perf record -F 499 -g -o "$PERF" -p "${wpids[0]}" 2>/dev/null & perfpid=$!
  fi
}
wpids=()
if [ "$mode" = preload ]; then
  out=$(target/release/tidemark-loadgen --url "$ingest" --hot-urls "$hot" --push-only "$@")
  echo "$out"
  n=$(echo "$out" | sed -n 's/^pushed (acknowledged): \([0-9]*\) samples.*/\1/p')
  start_workers
  target/release/tidemark-loadgen --url "$ingest" --hot-urls "$hot" --drain "$n" --latency 200
else
  start_workers
  target/release/tidemark-loadgen --url "$ingest" --hot-urls "$hot" --latency 200 "$@"
fi
[ -n "${PERF:-}" ] && { kill -INT $perfpid; wait $perfpid || true; }
if [ -n "${CHECKPOINT:-}" ]; then
  sleep "$(( ${CHECKPOINT%s} * 3 ))"  # two more checkpoints and an agreed safe time
  mem() { awk '/VmHWM|VmRSS/ { printf "%s %d MiB ", $1, $2 / 1024 }' "/proc/$1/status"; }
  metric() { curl -fs "$1/metrics" | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { print s + 0 }'; }
  for i in $(seq 0 $((procs-1))); do
    u=${urls[$i]}
    echo "process $i: WAL on disk $(du -sb "$dir/w$i/jobs" | cut -f1) bytes, $(metric "$u" tidemark_worker_wal_segments_deleted_total) segments of ${SEGMENT_BYTES:-268435456} bytes deleted; checkpoints $(du -sb "$dir/w$i/checkpoints" | cut -f1) bytes ($(metric "$u" 'tidemark_checkpoints_total{result="written"}') written, last $(metric "$u" tidemark_checkpoint_last_series) series in $(metric "$u" 'tidemark_checkpoint_last_duration_seconds{phase="write"}') s); chunks $(du -sb "$dir/w$i/chunks" | cut -f1) bytes; $(mem "${wpids[$i]}")"
  done
  components() { curl -fs "$1/metrics" | awk '/^tidemark_memory_bytes/ { sub(/.*component="/, ""); sub(/"}/, ""); printf "%s %d MiB, ", $1, $2 / 1048576 }'; echo; }
  echo "memory by component before the kill: $(components "${urls[0]}")"
  n_before=$(curl -fs "${urls[0]}/api/v1/query?query=count(%7B__name__%3D~%22.%2B%22%7D)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')
  for p in "${wpids[@]}"; do kill -9 "$p"; done
  wpids=()
  t0=$(date +%s.%N)
  RESTART=1 start_workers
  ready_s=$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$t0" "$(date +%s.%N)")
  # Memory first, 10 s after ready (the windows and rules the restart reopened have caught up),
  # before the query below, which reads every series (hundreds of MiB at 400,000 series).
  sleep 10
  for i in $(seq 0 $((procs-1))); do
    grep -h "loaded checkpoint\|replays its WAL\|WAL replayed" "$dir/worker-$i.log" | tail -4
    echo "process $i after the restart: $(mem "${wpids[$i]}")"
    echo "memory by component after the restart: $(components "${urls[$i]}")"
  done
  echo "restart: ready in $ready_s s (checkpoint loaded, WALs replayed from their replay points); series before $n_before, after $(curl -fs "${urls[0]}/api/v1/query?query=count(%7B__name__%3D~%22.%2B%22%7D)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')"
  # A profiled worker writes its data out when it exits.
  [ -n "${RESTART_WRAP:-}" ] && { sleep 10; pkill -TERM -f -- "--hosts $dir/hosts" || true; sleep 5; }
  exit 0
fi
target/release/tidemark jobs --to "${urls[0]}" | head -3
# Replay rate: rewind every partition to offset 0 and re-read the whole topic.
t0=$(date +%s.%N)
target/release/tidemark replay --job infra --from-offsets 0:0,1:0,2:0,3:0 --to "${urls[0]}" 2>/dev/null | tail -1
echo "replay: $(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$t0" "$(date +%s.%N)") s wall for the whole topic (all samples pushed above)"
echo "CPU seconds per process (broker, ingest, workers):"
ps -o comm=,times= -p "$(IFS=,; echo "${pids[*]}")"
