#!/usr/bin/env bash
# What a worker and a release command add to a rollout, inside the sandbox:
# `scripts/sandbox benches/app-shapes.sh [ROUNDS]`. Two services from the same image, one plain
# and one with a worker (min_uptime 1s) and a release command (`true`), rolled out in turn,
# alternating which goes first each round; prints the wall medians and the per-step medians.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SLIPWAY_SANDBOX_DIR:?run this inside scripts/sandbox}"
n=${1:-6}
bin=${SLIPWAY_BIN:-$(scripts/build-static)}
work="$SLIPWAY_SANDBOX_DIR/bench-shapes"
mkdir -p "$work"

for v in v1 v2; do
  docker build -q --build-arg BASE_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE" --build-arg VERSION=$v \
    -t "$SLIPWAY_SANDBOX_REGISTRY/bench/shapes:$v" tests/fixtures/app >/dev/null
  docker push -q "$SLIPWAY_SANDBOX_REGISTRY/bench/shapes:$v" >/dev/null
done
v1=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SANDBOX_REGISTRY/bench/shapes:v1")
v2=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SANDBOX_REGISTRY/bench/shapes:v2")

spec() { # NAME SLOT_A SLOT_B EXTRA_TOP EXTRA_END
  cat <<TOML
name = "$1"
slots = [$2, $3]
container_port = 8080
drain = "0s"
$4
[health]
docker = true
[health.http]
json_field = ".version"
interval = "200ms"
$5
[caddy]
snippet_dir = "$SLIPWAY_SANDBOX_SNIPPETS"
reload_command = "$SLIPWAY_SANDBOX_RELOAD_COMMAND"
TOML
}
spec plain 18301 18302 "" "" >"$work/plain.toml"
spec shaped 18303 18304 'release_command = ["true"]' \
  $'[workers.jobs]\ncommand = ["sh", "-c", "trap \'exit 0\' TERM; while :; do sleep 0.2; done"]\n[workers.jobs.health]\nmin_uptime = "1s"' \
  >"$work/shaped.toml"
export SLIPWAY_RELOAD_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE"
now_ms() { date +%s%3N; }
roll() { # SPEC IMAGE
  local t0 t1
  t0=$(now_ms)
  "$bin" rollout "$2" --config "$work/$1.toml" --format json >"$work/report.json"
  t1=$(now_ms)
  jq -c --arg who "$1" --argjson wall $((t1 - t0)) \
    '{who: $who, outcome, wall: $wall, steps: ([.steps[] | {(.name): .duration_ms}] | add)}' \
    "$work/report.json" >>"$work/runs.jsonl"
}
for s in plain shaped; do "$bin" rollout "$v1" --config "$work/$s.toml" >/dev/null; done
: >"$work/runs.jsonl"
for i in $(seq 1 "$n"); do
  img=$v2; [ $((i % 2)) -eq 0 ] && img=$v1
  if [ $((i % 2)) -eq 0 ]; then roll plain "$img"; roll shaped "$img"; else roll shaped "$img"; roll plain "$img"; fi
done
for s in plain shaped; do
  docker ps -aq --filter "label=dev.slipway.service=$s" | xargs -r docker rm -f >/dev/null
  rm -f "$SLIPWAY_SANDBOX_SNIPPETS/$s.caddy" "$SLIPWAY_SANDBOX_SNIPPETS/.$s.caddy.applied"
done
jq -s 'def med: sort | .[length/2|floor];
  group_by(.who) | map({who: .[0].who, rounds: length,
    deployed: map(select(.outcome == "deployed")) | length,
    wall_ms_median: (map(.wall) | med),
    release_ms_median: (map(.steps.release // 0) | med),
    workers_ms_median: (map(.steps.workers // 0) | med),
    health_ms_median: (map(.steps.health) | med)})' "$work/runs.jsonl"
