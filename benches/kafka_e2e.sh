#!/usr/bin/env bash
# Kafka-path benchmark: a tansu broker, `tidemark ingest`, a worker cluster of PROCS processes
# x 1 worker, the example job submitted; tidemark-loadgen pushes to ingest and waits until
# every sample is in the workers' hot indexes (acknowledged -> queryable).
# Usage: benches/kafka_e2e.sh PROCS [loadgen args...]   (e.g. benches/kafka_e2e.sh 2 --points 120)
set -euo pipefail
cd "$(dirname "$0")/.."
procs=${1:-1}; shift || true
cargo build --release --bin tidemark --bin tidemark-loadgen
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
kport=$(free)
tansu broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
  --storage-engine memory://tansu/ 2>"$dir/tansu.log" & pids+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$kport) 2>/dev/null && break; sleep 0.1; done
tansu topic create metrics --partitions 4 --broker "tcp://127.0.0.1:$kport" >/dev/null
iport=$(free)
printf '[kafka]\nbrokers = "127.0.0.1:%s"\npartition_key = "series"\n' "$kport" > "$dir/ingest.toml"
target/release/tidemark ingest --listen "127.0.0.1:$iport" --config "$dir/ingest.toml" 2>"$dir/ingest.log" & pids+=($!)
: > "$dir/hosts"; urls=()
for i in $(seq 0 $((procs-1))); do
  h=$(free); echo "127.0.0.1:$(free) 127.0.0.1:$h" >> "$dir/hosts"; urls+=("http://127.0.0.1:$h")
done
for i in $(seq 0 $((procs-1))); do
  target/release/tidemark worker --process $i --processes $procs --hosts "$dir/hosts" --workers 1 \
    --data-dir "$dir/w$i" --brokers "127.0.0.1:$kport" 2>"$dir/worker-$i.log" & pids+=($!)
done
for u in "http://127.0.0.1:$iport" "${urls[@]}"; do
  for _ in $(seq 1 200); do curl -fs "$u/-/ready" >/dev/null 2>&1 && break; sleep 0.05; done
done
sed "s/^brokers = .*/brokers = \"127.0.0.1:$kport\"/" jobs/kafka-infra.toml > "$dir/job.toml"
target/release/tidemark submit "$dir/job.toml" --to "${urls[0]}"
hot=$(IFS=,; echo "${urls[*]}")
target/release/tidemark-loadgen --url "http://127.0.0.1:$iport" --hot-urls "$hot" "$@"
target/release/tidemark jobs --to "${urls[0]}" | head -3
