#!/usr/bin/env bash
# The footprint benchmark (issue 19): `tidemark up` with its defaults (fleet rules on, cold
# tiers on the local disk) takes HOSTS x 4 series of the fleet workload for POINTS points at
# 10 s, streamed; then prints peak RSS per active series, memory by component
# (tidemark_memory_bytes), data dir bytes per sample, and the restart: time to ready and peak
# RSS while it replays.
# Usage: HOSTS=250000 POINTS=180 benches/scale.sh      (1 M series, 30 minutes of event time)
# TRACE=FILE appends RSS and memory by component (MiB) every 3 s (TRACE_EVERY) to FILE;
# RESTART_TRACE=FILE the same every 0.2 s during the restart. SETTLE: see below.
# PROFILE=dev runs the debug build (memory figures are the same; rates are not). The restart
# after SIGTERM loads the checkpoint written at shutdown. Then, when Debian's victoria-metrics
# is installed (PEER=none skips it), VictoriaMetrics takes the same workload: its peak RSS,
# data dir bytes per sample and CPU until idle, and Tidemark's ratios to them.
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
# BIN=DIR runs DIR/tidemark (for example a glibc build under WRAP="heaptrack -o FILE").
bin=${BIN:-$bin}
dir=$(mktemp -d)
# The loadgen pushes POINTS x 10 s of past event time in a few minutes. The self-scrape (on by
# default) stamps samples with the wall clock, which would move the watermark to now and make
# every older pushed sample late (dropped from the rollups once past allowed_lateness): off,
# unless TIDEMARK_CONFIG names a configuration.
if [ -z "${TIDEMARK_CONFIG:-}" ]; then
  printf '[scrape]\nself_scrape = false\n' > "$dir/tidemark.toml"
  TIDEMARK_CONFIG="$dir/tidemark.toml"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
# WRAP (for example "heaptrack -o FILE") wraps the first start only; RESTART_WRAP the restart.
wrap=${WRAP:-}
start() {
  $wrap "$bin/tidemark" up --listen "127.0.0.1:$port" --data-dir "$dir/data" \
    ${TIDEMARK_CONFIG:+--config "$TIDEMARK_CONFIG"} 2>>"$dir/server.log" &
  pid=$!
  if [ -n "$wrap" ]; then
    # The wrapper's child is the server: its RSS and CPU are the figures.
    for _ in $(seq 1 100); do
      p=$(pgrep -n -f "tidemark up --listen 127.0.0.1:$port" || true)
      [ -n "$p" ] && [ "$p" != "$pid" ] && { pid=$p; break; }
      sleep 0.1
    done
  fi
  wrap=${RESTART_WRAP:-}
}
trap 'kill $pid ${vmpid:-} 2>/dev/null || true; wait $pid 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
ready() {
  for _ in $(seq 1 6000); do
    curl -fs "$url/-/ready" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "not ready after 300 s" >&2
  return 1
}
# Stops the server and waits for it (a wrapped one is not this shell's child).
stop() {
  kill -TERM $pid
  wait $pid 2>/dev/null || while kill -0 $pid 2>/dev/null; do sleep 0.2; done
}
# The host's speed: CPU seconds of a fixed loop. This machine runs at one of two speeds that
# change within minutes (benches/README.md, thirteenth session), which moves CPU-per-sample
# figures by 2x; a probe before and after each system's run says which speed it had.
probe() {
  python3 -c '
import time
t = time.process_time()
s = 0
for i in range(3_000_000):
    s += i * i
print(round(time.process_time() - t, 3))'
}
probe0=$(probe)
start
ready
# CPU seconds (user + system) of a process.
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' /proc/$1/stat; }
# Waits until a process uses less than 5% of a core over 2 s (its deferred work is done).
idle() {
  local a b
  a=$(cpu "$1")
  while :; do
    sleep 2
    b=$(cpu "$1")
    [ "$(echo "$b - $a < 0.1" | bc)" = 1 ] && break
    a=$b
  done
}
# Memory by component every 5 s while the workload runs, to show where the peak is (the
# figures after idle below are lower: the job catches up and the allocator purges).
( best=0
  while kill -0 $pid 2>/dev/null; do
    m=$(curl -fs "$url/metrics" 2>/dev/null || true)
    r=$(awk '/^VmRSS/{printf "%.0f", $2 * 1024}' /proc/$pid/status 2>/dev/null)
    if [ -n "${TRACE:-}" ] && [ -n "$r" ]; then
      # One line per sample: seconds, RSS and every component (MiB), to see when the peak comes.
      echo "$(date +%s) rss=$((r / 1048576)) $(echo "$m" | awk -F'[="} ]+' '/^tidemark_memory_bytes/{printf "%s=%.0f ", $2, $3/1048576} /^tidemark_log_(end|consumer)_offset /{printf "%s=%s ", $1, $2} /^tidemark_rule_evaluations_total/{printf "rules_%s=%s ", $2, $3}')" >> "$TRACE"
    fi
    if [ -n "$r" ] && [ "$r" -gt "$best" ]; then
      best=$r
      { echo "rss $r"; echo "$m" | grep -E '^tidemark_memory_bytes|^tidemark_log_(end|consumer)_offset'; } > "$dir/peak_components"
    fi
    sleep "${TRACE_EVERY:-3}"
  done ) &
sampler=$!
# The loadgen's event times: POINTS steps of 10 s ending about a minute before it starts.
# END_AGO=SECONDS ends them that long before the start instead (default 60): a run started
# just after the hour can keep its events inside the hour before, so no partition seals.
end_ago=${END_AGO:-60}
ev_end=$(( ($(date +%s) / 10 - end_ago / 10) * 10 ))
"$bin/tidemark-loadgen" --url "$url" --hosts "$HOSTS" --points "$POINTS" --stream --end-ago "$end_ago"
series=$((HOSTS * 4))
samples=$((series * POINTS))
idle $pid
tm_cpu=$(cpu $pid)
echo "CPU until idle: $tm_cpu s = $(echo "scale=2; $tm_cpu * 1000000 / $samples" | bc) us per sample (ingest, rollups, rules, tiers)"
echo "host speed probe (a fixed loop's CPU seconds; lower is faster): $probe0 before the run, $(probe) after it"
curl -fs "$url/metrics" | grep '^tidemark_memory_bytes' | awk -v n="$series" \
  '{printf "  %-60s %8.1f MiB  %6.0f B/series\n", $1, $2/1048576, $2/n}'
ooo=$(curl -fs "$url/metrics" | awk '/^tidemark_hot_samples_out_of_order_total /{print $2}')
echo "out-of-order samples (at or before their series' newest): ${ooo:-0} of $samples"
# Chunk files by kind, and how many raw chunks were merged into larger ones (after 2 hours).
curl -fs "$url/metrics" | awk '/^tidemark_hot_chunk_files_bytes/{printf "  %s %.1f MiB\n", $1, $2/1048576} /^tidemark_hot_chunks_compacted_total/{print "  compacted: " $1 " " $2} /^tidemark_hot_chunk_disk_bytes /{printf "  raw chunks referenced: %.1f MiB\n", $2/1048576}'
curl -fs "$url/metrics" | awk '/^tidemark_rule_evaluations_total/{print "rule evaluations: " $1 " " $2}'
# Samples behind the watermark (the loadgen's events are in order: nonzero means something
# moved event time ahead of them, as a self-scrape at the wall clock would).
curl -fs "$url/metrics" | awk '/^tidemark_late_samples_total/{print "late samples: " $1 " " $2}'
# The input stops here, as a fleet's push would at a network split: after `[log] idle_timeout`
# (30 s) event time follows wall time, so the windows close and the open hour partition seals
# (when the wall clock is past its end). SETTLE=SECONDS (default 45) keeps sampling through
# it; the peak below includes it.
settle=${SETTLE:-45}
if [ "$settle" -gt 0 ]; then
  sleep "$settle"
  idle $pid
  echo "CPU after the input went idle ($settle s and until idle again): $(echo "$(cpu $pid) - $tm_cpu" | bc) s"
fi
kill $sampler 2>/dev/null || true
if [ -s "$dir/peak_components" ]; then
  echo "memory by component at the highest RSS sampled during the run ($(awk '/^rss/{printf "%.0f MiB", $2/1048576}' "$dir/peak_components")):"
  grep '^tidemark_memory_bytes' "$dir/peak_components" | awk -v n="$series" \
    '{printf "  %-60s %8.1f MiB  %6.0f B/series\n", $1, $2/1048576, $2/n}'
fi
peak=$(grep VmHWM /proc/$pid/status | awk '{printf "%.0f", $2*1024}')
rss=$(grep VmRSS /proc/$pid/status | awk '{printf "%.0f", $2*1024}')
echo "peak RSS $((peak / 1048576)) MiB = $((peak / series)) B per active series (RSS now $((rss / 1048576)) MiB)"
t=$(date +%s.%N)
start_q="$(date +%s)"
q="sum by (region) (rate(http_requests_total[5m]))"
# At the last pushed time: the wall clock is minutes past it by now, and at `now` the 5 m range
# holds little or nothing of the run (before 2026-12-07 the query ran there: its figures were
# of a range holding 0 to 1 minute of the data).
qs=()
for _ in 1 2 3 4 5; do
  t0=$(date +%s.%N)
  out=$(curl -fs --get "$url/api/v1/query" --data-urlencode "query=$q" --data-urlencode "time=$ev_end")
  qs+=("$(echo "$(date +%s.%N) - $t0" | bc)")
done
qseries=$(echo "$out" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))')
echo "instant query '$q' at the last pushed time: ${qs[*]} s ($qseries series out)"
stop
bytes=$(du -sb "$dir/data" | cut -f1)
# How much of the run sits in the hour partition still open at the end (the cold writers
# rebuild it at a restart, and it pins its raw chunks and 1-minute rollups): the restart
# figures depend on it, and it depends on the wall-clock minute the run started at.
ev_start=$(( ev_end - POINTS * 10 ))
open_from=$(( ev_end / 3600 * 3600 ))
held=$(( ev_end - (ev_start > open_from ? ev_start : open_from) ))
echo "event time $(date -u -d @$ev_start +%H:%M) to $(date -u -d @$ev_end +%H:%M): $((held / 60)) minutes of it in the hour partition open at the end (from $(date -u -d @$open_from +%H:%M))"
echo "data dir $((bytes / 1048576)) MiB = $(echo "scale=2; $bytes / $samples" | bc) bytes/sample ($(du -sb "$dir/data/log" | cut -f1) log, $(du -sb "$dir/data/cold" 2>/dev/null | cut -f1) cold)"
t0=$(date +%s.%N)
start
# RESTART_TRACE=FILE: RSS every 0.2 s and memory by component (MiB, when /metrics answers)
# while the restart loads and catches up, to see what its peak is made of.
if [ -n "${RESTART_TRACE:-}" ]; then
  ( while kill -0 $pid 2>/dev/null; do
      r=$(awk '/^VmRSS/{printf "%.0f", $2 / 1024}' /proc/$pid/status 2>/dev/null || true)
      m=$(curl -fs -m 1 "$url/metrics" 2>/dev/null | awk -F'[="} ]+' '/^tidemark_memory_bytes/{printf "%s=%.0f ", $2, $3/1048576}' || true)
      echo "$(date +%s.%N | cut -c1-14) rss=$r $m" >> "$RESTART_TRACE"
      sleep 0.2
    done ) &
fi
ready
took=$(echo "$(date +%s.%N) - $t0" | bc)
peak2=$(grep VmHWM /proc/$pid/status | awk '{printf "%.0f", $2*1024}')
grep -E "checkpoint .* written|loaded checkpoint|checkpoint not usable" "$dir/server.log" | tail -3 || true
echo "restart: ready in $took s, peak RSS during restart $((peak2 / 1048576)) MiB ($(echo "scale=2; $peak2 / $peak" | bc) x the live peak)"
tail -3 "$dir/server.log"
stop
# The peer: VictoriaMetrics (Debian's victoria-metrics) takes the same workload.
if [ "${PEER:-vm}" = vm ] && command -v victoria-metrics >/dev/null; then
  vmport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  victoria-metrics -storageDataPath "$dir/vm" -httpListenAddr "127.0.0.1:$vmport" -retentionPeriod 100y \
    -loggerLevel ERROR 2>>"$dir/vm.log" &
  vmpid=$!
  for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$vmport/health" >/dev/null 2>&1 && break; sleep 0.05; done
  vmprobe0=$(probe)
  "$bin/tidemark-loadgen" --url "http://127.0.0.1:$vmport" --hosts "$HOSTS" --points "$POINTS" --stream --peer
  curl -fs "http://127.0.0.1:$vmport/internal/force_flush" >/dev/null || true
  idle $vmpid
  vm_cpu=$(cpu $vmpid)
  vmpeak=$(grep VmHWM /proc/$vmpid/status | awk '{printf "%.0f", $2*1024}')
  got=$(curl -fs "http://127.0.0.1:$vmport/api/v1/series/count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0])' 2>/dev/null || echo "?")
  kill -TERM $vmpid; wait $vmpid || true
  vmbytes=$(du -sb "$dir/vm" | cut -f1)
  echo "VictoriaMetrics $(dpkg-query -W -f '${Version}' victoria-metrics 2>/dev/null): $got series; peak RSS $((vmpeak / 1048576)) MiB = $((vmpeak / series)) B per active series; data dir $((vmbytes / 1048576)) MiB = $(echo "scale=2; $vmbytes / $samples" | bc) bytes/sample; CPU until idle $vm_cpu s = $(echo "scale=2; $vm_cpu * 1000000 / $samples" | bc) us per sample"
  echo "host speed probe around VictoriaMetrics's run: $vmprobe0 before, $(probe) after"
  echo "ratios (Tidemark / VictoriaMetrics): peak RSS $(echo "scale=2; $peak / $vmpeak" | bc), data dir bytes/sample $(echo "scale=2; $bytes / $vmbytes" | bc), CPU per sample $(echo "scale=2; $tm_cpu / $vm_cpu" | bc)"
elif [ "${PEER:-vm}" = vm ]; then
  echo "no VictoriaMetrics run: victoria-metrics is not installed (apt-get install victoria-metrics; PEER=none skips the peer)"
fi
