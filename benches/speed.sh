#!/usr/bin/env bash
# Rollout speed against a careful hand-written blue-green script, same run, inside the sandbox:
# `scripts/sandbox benches/speed.sh [ROUNDS]` (default 10). Env: DRAIN (seconds, both sides,
# default 2: longer than the 2 s in-flight requests), THREADS/PAUSE/SLOW_THREADS (the load),
# CPU_QUOTA (e.g. 0.3: the whole sandbox held to that many CPUs, a loaded host reproduced),
# SETTLE (seconds before each deploy, both sides, default 1: the engine finishes tearing down the
# previous deploy's old container first, as it has long before a real next deploy; without it a
# deploy that follows slipway's at once waits for that teardown in its own first inspect).
#
# Both sides roll out the same prebuilt, digest-pinned images (the fixture app plus a /cgi-bin/slow
# endpoint that answers after 2 s), alternately v2 and v1, in alternating order per round, each
# behind its own Caddy of the same shape (slipway: the sandbox's 127.0.0.1:18080; the script,
# benches/rollout-by-hand.sh: a second one on 127.0.0.1:18081). The same load runs against both
# URLs for the whole run (benches/loadgen.py: new-connection and keep-alive clients, and
# SLOW_THREADS clients always holding a 2 s request in flight).
#
# Per deploy: time to switch (deploy start -> the first moment the public URL serves the new
# version, from a background poller, benches/served-at.py), the whole wall, start-to-healthy
# (slipway: its report; the script: its run + health phases), overhead = wall - start-to-healthy
# - drain, peak RSS of slipway (GNU time), and engine CPU (the cpuacct usage of a cgroup holding
# dockerd, containerd and the shims for the run; the containers themselves and the userland
# proxies carrying the load are outside it). Prints the medians, the ratios, slipway's per-step
# medians and the script's phases. Raw: $SLIPWAY_SANDBOX_DIR/bench-speed/results.json (copied to
# $BENCH_OUT when set, with the reports, the logs and the sandbox's dockerd, registry and Caddy logs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SLIPWAY_SANDBOX_DIR:?run this inside scripts/sandbox: scripts/sandbox benches/speed.sh}"
rounds=${1:-10}
drain=${DRAIN:-2}
settle=${SETTLE:-1}
bin=${SLIPWAY_BIN:-$(scripts/build-static)}
[ -x /usr/bin/time ] || { echo "speed.sh: GNU time is missing (apt-get install time)" >&2; exit 2; }
work="$SLIPWAY_SANDBOX_DIR/bench-speed"
mkdir -p "$work/logs" "$work/reports"
# shellcheck source=benches/common.sh
. benches/common.sh

# --- the images: the fixture app (Dockerfile.classic: the docker CLI here has only the classic
# builder; it carries the 2 s /cgi-bin/slow endpoint), two versions, pushed and pinned
for v in v1 v2; do
  docker build -q --build-arg BASE_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE" --build-arg VERSION=$v \
    -f tests/fixtures/app/Dockerfile.classic -t "$SLIPWAY_SANDBOX_REGISTRY/bench/speed:$v" tests/fixtures/app >/dev/null
  docker push -q "$SLIPWAY_SANDBOX_REGISTRY/bench/speed:$v" >/dev/null
done
pinned() { docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SANDBOX_REGISTRY/bench/speed:$1"; }
declare -A image=([v1]=$(pinned v1) [v2]=$(pinned v2))

start_caddy "$work/caddy-script" 18081 "$work/logs/caddy-script.log"
url_s=$SLIPWAY_SANDBOX_PUBLIC_URL url_b=http://127.0.0.1:18081
engine_cg_setup "$work"
# The engine's events, for lining failed requests up with what the engine did.
docker events --format '{{json .}}' >"$work/logs/docker-events.jsonl" 2>&1 &
events_pid=$!
load_pids=()
trap 'touch "$work/stop"; [ ${#load_pids[@]} = 0 ] || wait "${load_pids[@]}"; kill $events_pid 2>/dev/null; stop_caddy; throttle_stop; engine_cg_teardown' EXIT
if [ -n "${CPU_QUOTA:-}" ]; then
  throttle_start "$CPU_QUOTA" "$work" "$caddy_pid" $(pgrep -f "caddy run --config $SLIPWAY_SANDBOX_CADDYFILE" || true)
fi

# --- slipway
cat >"$work/slipway.toml" <<TOML
name = "speed"
slots = [18401, 18402]
container_port = 8080
read_only = true
drain = "${drain}s"
[health]
docker = true
[health.http]
path = "/health"
json_field = ".version"
[caddy]
snippet_dir = "$SLIPWAY_SANDBOX_SNIPPETS"
reload_command = "$SLIPWAY_SANDBOX_RELOAD_COMMAND"
TOML
export SLIPWAY_RELOAD_IMAGE=$SLIPWAY_SANDBOX_BASE_IMAGE
# Each deploy prints one JSON line: wall, switch (served), start-to-healthy, drain, cpu, rss.
slipway_deploy() { # $1: version, $2: tag
  local t0 t1 c0 c1 served log="$work/logs/$2-slipway.log" rep="$work/reports/$2.json"
  sleep "$settle"
  benches/served-at.py "$url_s/version" "$1" 60 >"$work/logs/$2-slipway-served" &
  local poller=$!
  c0=$(engine_cpu_ns) t0=$(now_ms)
  /usr/bin/time -v -o "$work/logs/$2-time.txt" "$bin" rollout "${image[$1]}" \
    --config "$work/slipway.toml" --format json >"$rep" 2>"$log" || fail "slipway rollout ($2)" "$log"
  t1=$(now_ms) c1=$(engine_cpu_ns)
  wait "$poller"; served=$(cat "$work/logs/$2-slipway-served")
  jq -c --argjson t0 "$t0" --argjson t1 "$t1" --argjson served "$served" --argjson cpu $(((c1 - c0) / 1000000)) \
    --argjson rss "$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/logs/$2-time.txt")" '
    {wall: ($t1 - $t0), served: ($served - $t0), healthy: .start_to_healthy_ms,
     drain: ([.steps[] | select(.name == "drain") | .duration_ms] | add // 0),
     cpu_ms: $cpu, rss_kib: $rss, outcome,
     steps: ({"before": (.started_unix_ms - $t0), "after": ($t1 - .started_unix_ms - .wall_ms)}
             + reduce .steps[] as $s ({}; .[$s.name] += $s.duration_ms))}' "$rep"
}

# --- the script
export NAME=byhand PORTS="18411 18412" SNIPPETS="$work/caddy-script/snippets" URL="$url_b/version"
export RELOAD_IMAGE=$SLIPWAY_SANDBOX_BASE_IMAGE STATE="$work/script-state" DRAIN=$drain
export RELOAD_COMMAND="caddy reload --config $work/caddy-script/Caddyfile --adapter caddyfile"
script_deploy() { # $1: version, $2: tag
  local t0 t1 c0 c1 served log="$work/logs/$2-script.log"
  sleep "$settle"
  export PHASES="$work/logs/$2-phases.txt"
  : >"$PHASES"
  benches/served-at.py "$url_b/version" "$1" 60 >"$work/logs/$2-script-served" &
  local poller=$!
  c0=$(engine_cpu_ns) t0=$(now_ms)
  benches/rollout-by-hand.sh "${image[$1]}" "$1" >"$log" 2>&1 || fail "the script ($2)" "$log"
  t1=$(now_ms) c1=$(engine_cpu_ns)
  wait "$poller"; served=$(cat "$work/logs/$2-script-served")
  awk '{ printf "%s\"%s\":%s", (NR > 1 ? "," : ""), $1, $2 } END { print "" }' "$PHASES" |
    jq -c --argjson t0 "$t0" --argjson t1 "$t1" --argjson served "$served" --argjson cpu $(((c1 - c0) / 1000000)) '
    "{\(.)}" | fromjson | {wall: ($t1 - $t0), served: ($served - $t0), healthy: (.run + .health),
      drain: (.drain // 0), cpu_ms: $cpu, steps: .}' -R
}

loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== speed: slipway rollout vs the hand-written script; first deploy each, then $rounds rounds (drain ${drain}s, settle ${settle}s)" >&2
slipway_deploy v1 first >/dev/null
script_deploy v1 first >/dev/null
load_start() { # $1: url, $2: tag
  SLOW_THREADS=${SLOW_THREADS:-2} SLOW_URL="$1/cgi-bin/slow" THREADS=${THREADS:-2} PAUSE=${PAUSE:-0.01} \
    benches/loadgen.py "$1/version" "$work/stop" 1800 >"$work/load-$2.json" &
  load_pids+=($!)
}
rm -f "$work/stop"
load_start "$url_s" slipway; load_start "$url_b" script
sleep 2

: >"$work/rounds.jsonl"
printf '%-6s %-14s %-3s %12s %12s %10s %10s\n' round order to switch_s_ms switch_b_ms wall_s_ms wall_b_ms >&2
for i in $(seq 1 "$rounds"); do
  v=v2; [ $((i % 2)) = 0 ] && v=v1
  if [ $((i % 2)) = 1 ]; then
    order=slipway-first; s=$(slipway_deploy $v "r$i"); b=$(script_deploy $v "r$i")
  else
    order=script-first; b=$(script_deploy $v "r$i"); s=$(slipway_deploy $v "r$i")
  fi
  jq -cn --argjson i "$i" --arg order "$order" --argjson s "$s" --argjson b "$b" \
    '{round: $i, order: $order, slipway: $s, script: $b}' >>"$work/rounds.jsonl"
  jq -rn --argjson s "$s" --argjson b "$b" --arg i "$i" --arg o "$order" --arg v "$v" \
    '"\($i | . + " " * (6 - length)) \($o) \($v) \($s.served | tostring | " " * (12 - length) + .) \($b.served | tostring | " " * (12 - length) + .) \($s.wall | tostring | " " * (10 - length) + .) \($b.wall | tostring | " " * (10 - length) + .)"' >&2
done
sleep 2
touch "$work/stop"; wait "${load_pids[@]}"; load_pids=()

loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)
jq -s --argjson drain "$drain" --arg quota "${CPU_QUOTA:-}" --arg la0 "$loadavg_before" --arg la1 "$loadavg_after" --slurpfile ls "$work/load-slipway.json" --slurpfile lb "$work/load-script.json" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
    else ((.[length / 2 - 1] + .[length / 2]) / 2) end;
  def side(f): map(f) | {
    switch_ms: (map(.served) | median), wall_ms: (map(.wall) | median),
    healthy_ms: (map(.healthy) | median), overhead_ms: (map(.wall - .healthy - .drain) | median),
    overhead_ms_max: (map(.wall - .healthy - .drain) | max),
    engine_cpu_ms: (map(.cpu_ms) | median), max_rss_kib: (map(.rss_kib // empty) | max),
    steps: ((map(.steps | keys[]) | unique) as $n
      | [$n[] as $k | {($k): (map(.steps[$k] // empty) | median)}] | add)};
  def load(l): l[0] | with_entries(.value |= {requests, failures, retried, errors});
  {rounds: length, drain_s: $drain, cpu_quota: $quota, loadavg: {before: $la0, after: $la1}, slipway: side(.slipway), script: side(.script),
   load: {slipway: load($ls), script: load($lb)}, per_round: .}
  | .ratio = {switch: (.slipway.switch_ms / .script.switch_ms), wall: (.slipway.wall_ms / .script.wall_ms)}
' "$work/rounds.jsonl" >"$work/results.json"
if [ -n "${BENCH_OUT:-}" ]; then
  mkdir -p "$BENCH_OUT/sandbox"
  cp -r "$work/results.json" "$work/rounds.jsonl" "$work/reports" "$work/logs" "$work"/load-*.json "$BENCH_OUT/"
  cp "$SLIPWAY_SANDBOX_DIR"/*.log "$BENCH_OUT/sandbox/" 2>/dev/null || true
fi

jq -r '
  def r2: . * 100 | round / 100;
  "machine load average (1/5/15 min): \(.loadavg.before) before, \(.loadavg.after) after; sandbox CPU quota: \(if .cpu_quota == "" then "none" else .cpu_quota end)",
  "medians over \(.rounds) rounds (drain \(.drain_s) s)      slipway     script   ratio",
  "  time to switch (ms)              \(.slipway.switch_ms)  \(.script.switch_ms)  \(.ratio.switch | r2)",
  "  whole wall (ms)                  \(.slipway.wall_ms)  \(.script.wall_ms)  \(.ratio.wall | r2)",
  "  start to healthy (ms)            \(.slipway.healthy_ms)  \(.script.healthy_ms)",
  "  overhead = wall - healthy - drain \(.slipway.overhead_ms) (max \(.slipway.overhead_ms_max))  \(.script.overhead_ms) (max \(.script.overhead_ms_max))",
  "  engine CPU per deploy (ms)       \(.slipway.engine_cpu_ms)  \(.script.engine_cpu_ms)",
  "  slipway peak RSS (MiB, max)      \(.slipway.max_rss_kib / 1024 * 10 | round / 10)",
  "load (whole run, each side its own URL):",
  (.load | to_entries[] | .key as $side | .value | to_entries[]
   | "  \($side) \(.key): requests \(.value.requests), failures \(.value.failures), retried \(.value.retried), errors \(.value.errors)"),
  "slipway steps (median ms; before = process start, lock, facts, plan; after = release, report, exit):",
  (.slipway.steps | to_entries[] | "  \(.key) \(.value)"),
  "script phases (median ms):",
  (.script.steps | to_entries[] | "  \(.key) \(.value)")
' "$work/results.json"
echo "raw: $work/results.json"
