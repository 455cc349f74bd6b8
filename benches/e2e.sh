#!/usr/bin/env bash
# End-to-end benchmark: builds release binaries, starts `tidemark up` on a fresh data dir and a
# free loopback port, runs tidemark-loadgen against it, prints the figures and stops the server.
# Usage: benches/e2e.sh [loadgen args...]   (e.g. --points 60 for a quick run)
# TIDEMARK_CONFIG=path runs the server with that tidemark.toml (e.g. `[rules] incremental = false`).
# BIN=DIR runs DIR/tidemark and DIR/tidemark-loadgen (an older build, for an A/B).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tidemark --bin tidemark-loadgen
bin=${BIN:-target/release}
dir=$(mktemp -d)
# The loadgen pushes an hour of past event time at once; the self-scrape's wall-clock samples
# would make the part of it pushed after the first scrape late (see benches/scale.sh): off,
# unless TIDEMARK_CONFIG names a configuration.
if [ -z "${TIDEMARK_CONFIG:-}" ]; then
  printf '[scrape]\nself_scrape = false\n' > "$dir/tidemark.toml"
  TIDEMARK_CONFIG="$dir/tidemark.toml"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/tidemark" up --listen "127.0.0.1:$port" --data-dir "$dir/data" \
  ${TIDEMARK_CONFIG:+--config "$TIDEMARK_CONFIG"} 2>"$dir/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 200); do
  curl -fs "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && break
  sleep 0.05
done
"$bin/tidemark-loadgen" --url "http://127.0.0.1:$port" "$@"
echo "peak RSS of tidemark: $(grep VmHWM /proc/$pid/status | awk '{print $2/1024 " MiB"}')"
# CPU seconds of the server (user + system) so far, and who evaluated the rules.
echo "CPU of tidemark: $(awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t " s"}' /proc/$pid/stat)"
curl -fs "http://127.0.0.1:$port/metrics" | awk '/^tidemark_rule_evaluations_total/{print "rule evaluations: " $1 " " $2} /^tidemark_late_samples_total/{print "late samples: " $1 " " $2}' || true
