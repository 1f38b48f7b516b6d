#!/usr/bin/env bash
# Swarm benchmark, inside the sandbox with the cluster:
#   SANDBOX_SWARM=1 scripts/sandbox benches/swarm.sh [UPDATES] [ROLLBACKS]
# Cluster bring-up (from scripts/swarm-cluster), the first deploy (create, 3 replicas), UPDATES
# start-first updates of 3 replicas alternating v2/v1 under steady load through Caddy on the
# overlay (benches/loadgen.py: new-connection and keep-alive clients), then ROLLBACKS updates to
# an unhealthy release, timed to slipway's exit 1 (Swarm's automatic rollback). Medians.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SLIPWAY_SWARM_MANAGER:?run this inside SANDBOX_SWARM=1 scripts/sandbox}"
n=${1:-6}
m=${2:-3}
bin=${SLIPWAY_BIN:-$(scripts/build-static)}
export DOCKER_HOST=$SLIPWAY_SWARM_MANAGER
work="$SLIPWAY_SWARM_DIR/bench-swarm"
mkdir -p "$work"
manager_ip=${SLIPWAY_SWARM_NODE_IPS%%,*}
url="http://$manager_ip:18301/health"
now_ms() { date +%s%3N; }

for v in bv1 bv2; do
  docker build -q -f tests/fixtures/app/Dockerfile.classic --build-arg BASE_IMAGE="$SLIPWAY_SWARM_BASE_IMAGE" --build-arg VERSION=$v \
    -t "$SLIPWAY_SWARM_REGISTRY/bench/app:$v" tests/fixtures/app >/dev/null
  docker push -q "$SLIPWAY_SWARM_REGISTRY/bench/app:$v" >/dev/null
done
v1=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SWARM_REGISTRY/bench/app:bv1")
v2=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SWARM_REGISTRY/bench/app:bv2")

printf '{\n\tadmin off\n\tauto_https off\n}\n:80 {\n\treverse_proxy {\n\t\tdynamic a {\n\t\t\tname tasks.bench\n\t\t\tport 8080\n\t\t\trefresh 1s\n\t\t}\n\t\tlb_try_duration 3s\n\t}\n}\n' >"$work/Caddyfile"
docker config create bench-caddy "$work/Caddyfile" >/dev/null
docker service create -d -q --name bench-caddy --network "$SLIPWAY_SWARM_OVERLAY" \
  --constraint node.role==manager --publish mode=host,target=80,published=18301 \
  --config source=bench-caddy,target=/etc/caddy/Caddyfile "$SLIPWAY_SWARM_CADDY_IMAGE" >/dev/null

cat >"$work/slipway.toml" <<TOML
name = "bench"
container_port = 8080
env = ["APP_HEALTH", "APP_STOP_DRAIN"]
[health]
docker = true
deadline = "30s"
[swarm]
replicas = 3
network = "$SLIPWAY_SWARM_OVERLAY"
monitor = "3s"
TOML
export APP_HEALTH=ok APP_STOP_DRAIN=4
deploy() { "$bin" deploy --config "$work/slipway.toml" --image "$1" --url "$url" --watch 1s --smoke-deadline 30s --format json >"$work/report.json" 2>"$work/deploy.log"; }
load_pid=""
on_exit() {
  local rc=$?
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null
  [ "$rc" = 0 ] || { echo "benches/swarm.sh failed (exit $rc); the last deploy said:" >&2; tail -8 "$work/deploy.log" >&2; }
}
trap on_exit EXIT

t0=$(now_ms); deploy "$v1"; create_ms=$(( $(now_ms) - t0 ))

rm -f "$work/stop"
benches/loadgen.py "$url" "$work/stop" 900 >"$work/load.json" &
load_pid=$!
sleep 1
: >"$work/updates"
for i in $(seq 1 "$n"); do
  img=$v2; [ $((i % 2)) -eq 0 ] && img=$v1
  t0=$(now_ms); deploy "$img"; echo $(( $(now_ms) - t0 )) >>"$work/updates"
done
sleep 1; touch "$work/stop"; wait "$load_pid"; load_pid=""

: >"$work/rollbacks"
for i in $(seq 1 "$m"); do
  t0=$(now_ms)
  rc=0; APP_HEALTH=fail deploy "$v2" || rc=$?
  [ "$rc" = 1 ] || { echo "an unhealthy update exited $rc, not 1" >&2; tail -5 "$work/deploy.log" >&2; exit 1; }
  echo $(( $(now_ms) - t0 )) >>"$work/rollbacks"
done

docker service rm bench bench-caddy >/dev/null
docker config rm bench-caddy >/dev/null
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
jq -n --argjson up "$SLIPWAY_SWARM_UP_MS" --argjson create "$create_ms" \
  --argjson upd "$(jq -s . "$work/updates")" --argjson rb "$(jq -s . "$work/rollbacks")" \
  --argjson umed "$(median "$work/updates")" --argjson rmed "$(median "$work/rollbacks")" \
  --slurpfile load "$work/load.json" '{
    cluster_up_ms: $up, first_deploy_create_ms: $create,
    update_wall_ms: {median: $umed, all: $upd},
    load: ($load[0] | map_values({requests, failures, retried, errors})),
    unhealthy_update_to_exit_1_ms: {median: $rmed, all: $rb}
  }'
