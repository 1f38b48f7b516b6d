#!/usr/bin/env bash
# Zero-downtime benchmark, inside the sandbox: `scripts/sandbox benches/rollout.sh [ROLLOUTS]`.
# Under steady bounded load through Caddy, N back-to-back slipway rollouts, then the naive
# "stop old, run new" sequence with the docker CLI, same run. Prints a table and the JSON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SLIPWAY_SANDBOX_DIR:?run this inside scripts/sandbox}"
n=${1:-10}
bin=${SLIPWAY_BIN:-$(scripts/build-static)}
work="$SLIPWAY_SANDBOX_DIR/bench-rollout"
mkdir -p "$work"
url="$SLIPWAY_SANDBOX_PUBLIC_URL/version"

for v in v1 v2; do
  docker build -q --build-arg BASE_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE" --build-arg VERSION=$v \
    -t "$SLIPWAY_SANDBOX_REGISTRY/bench/app:$v" tests/fixtures/app >/dev/null
  docker push -q "$SLIPWAY_SANDBOX_REGISTRY/bench/app:$v" >/dev/null
done
v1=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SANDBOX_REGISTRY/bench/app:v1")
v2=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SANDBOX_REGISTRY/bench/app:v2")

cat >"$work/slipway.toml" <<TOML
name = "bench"
slots = [18201, 18202]
container_port = 8080
drain = "2s"
stop_grace_period = "10s"
[health]
docker = true
[health.http]
json_field = ".version"
interval = "200ms"
[caddy]
snippet_dir = "$SLIPWAY_SANDBOX_SNIPPETS"
reload_command = "$SLIPWAY_SANDBOX_RELOAD_COMMAND"
TOML
export SLIPWAY_RELOAD_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE"
now_ms() { date +%s%3N; }

load_start() { rm -f "$work/stop"; benches/loadgen.py "$url" "$work/stop" 600 >"$work/load-$1.json" & load_pid=$!; sleep 1; }
load_stop() { sleep 1; touch "$work/stop"; wait "$load_pid"; }

# --- slipway: first deploy outside the measured window, then N rollouts under load
"$bin" rollout "$v1" --config "$work/slipway.toml" >/dev/null
load_start slipway
: >"$work/reports.jsonl"
for i in $(seq 1 "$n"); do
  img=$v2; [ $((i % 2)) -eq 0 ] && img=$v1
  t0=$(now_ms)
  "$bin" rollout "$img" --config "$work/slipway.toml" --format json >"$work/report.json"
  t1=$(now_ms)
  jq -c --argjson t0 "$t0" '[.steps[] | {(.name): ($t0 + .start_ms)}] | add' "$work/report.json" >>"$work/steps-at.jsonl"
  jq -c --argjson wall $((t1 - t0)) '{outcome, wall: $wall, healthy: .start_to_healthy_ms, steps: [.steps[] | {(.name): .duration_ms}] | add}' "$work/report.json" >>"$work/reports.jsonl"
done
load_stop
"$bin" rollout "$v1" --config "$work/slipway.toml" >/dev/null 2>&1 || true
docker ps -aq --filter label=dev.slipway.service=bench | xargs -r docker rm -f >/dev/null

# --- naive: stop old, run new, with the docker CLI, same load
printf '# naive\nreverse_proxy 127.0.0.1:18203\n' >"$SLIPWAY_SANDBOX_SNIPPETS/bench.caddy"
$SLIPWAY_SANDBOX_RELOAD_COMMAND >/dev/null 2>&1
docker run -d --name naive -p 127.0.0.1:18203:8080 "$v1" >/dev/null
until curl -sf "$url" >/dev/null; do sleep 0.1; done
load_start naive
naive_walls=()
for i in $(seq 1 "$n"); do
  img=$v2; [ $((i % 2)) -eq 0 ] && img=$v1
  t0=$(now_ms)
  docker stop naive >/dev/null && docker rm naive >/dev/null
  docker run -d --name naive -p 127.0.0.1:18203:8080 "$img" >/dev/null
  until curl -sf "$url" >/dev/null; do sleep 0.1; done
  naive_walls+=($(( $(now_ms) - t0 )))
done
load_stop
docker rm -f naive >/dev/null
rm -f "$SLIPWAY_SANDBOX_SNIPPETS/bench.caddy"; $SLIPWAY_SANDBOX_RELOAD_COMMAND >/dev/null 2>&1

# --- results
jq -s '{
  rollouts: length,
  deployed: map(select(.outcome == "deployed")) | length,
  wall_ms_median: (map(.wall) | sort | .[length/2|floor]),
  start_to_healthy_ms_median: (map(.healthy) | sort | .[length/2|floor]),
  overhead_ms_median: (map(.wall - .healthy - .steps.drain) | sort | .[length/2|floor]),
  overhead_ms_max: (map(.wall - .healthy - .steps.drain) | max),
  switch_ms_median: (map(.steps.switch) | sort | .[length/2|floor]),
  retire_ms_median: (map(.steps.retire) | sort | .[length/2|floor])
}' "$work/reports.jsonl" >"$work/summary.json"
echo "== slipway: $n rollouts (wall includes the 2 s drain)"; cat "$work/summary.json"
for who in slipway naive; do
  jq -r --arg who "$who" 'to_entries[] | "\($who) \(.key): requests \(.value.requests), failures \(.value.failures), retried \(.value.retried), errors \(.value.errors)"' "$work/load-$who.json"
done
echo "naive walls (ms): ${naive_walls[*]}"
if [ -n "${BENCH_DEBUG:-}" ]; then cat "$work/steps-at.jsonl"; jq -c '.[].first_failures_at' "$work/load-slipway.json"; fi
