#!/usr/bin/env bash
# The systemd host tier's figures: `scripts/host-tier benches/host-tier.sh [ROUNDS]` (the host is
# booted by scripts/host-tier, which prints its boot time). Per round, a FROM scratch job
# container with only the host's socket deploys the example app (build, push, prove, roll out,
# the real `systemctl reload caddy`, smoke); prints each deploy's wall time and the reload alone
# (systemd's "Reloading" to "Reloaded caddy.service" in the host's journal), then the medians.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SLIPWAY_HOST_LEADER:?run this inside scripts/host-tier}"
n=${1:-5}
bin=${SLIPWAY_BIN:-$(scripts/build-static)}
export DOCKER_HOST=$SLIPWAY_HOST_DOCKER_HOST
on_host() { nsenter -t "$SLIPWAY_HOST_LEADER" -m -u -n -p -i -- "$@"; }
now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/slipway"
cp -r tests/fixtures/app "$ctx/app"
cp tests/fixtures/host/example.toml "$ctx/example.toml"
printf 'FROM scratch\nCOPY slipway /slipway\nCOPY app /app\nCOPY example.toml /deploy/example.toml\nENTRYPOINT ["/slipway"]\n' >"$ctx/Dockerfile"
docker build -q -t slipway-job:bench "$ctx" >/dev/null

walls=() reloads=()
for i in $(seq 1 "$n"); do
  since=$(on_host date '+%Y-%m-%d %H:%M:%S')
  t0=$(now_ms)
  docker run --rm --network host -v /run/docker.sock:/var/run/docker.sock \
    -e SLIPWAY_CONFIG=/deploy/example.toml -e SLIPWAY_REGISTRY="$SLIPWAY_HOST_REGISTRY" \
    -e SLIPWAY_REPOSITORY=example/bench -e SLIPWAY_CONTEXT=/app -e SLIPWAY_REVISION_ARG=VERSION \
    -e SLIPWAY_BUILD_ARGS="BASE_IMAGE=$SLIPWAY_HOST_BASE_IMAGE" -e SLIPWAY_URL="$SLIPWAY_HOST_PUBLIC_URL/health" \
    -e SLIPWAY_RELOAD_IMAGE="$SLIPWAY_HOST_BASE_IMAGE" -e SLIPWAY_REVISION="$(printf 'beef%04x' "$i")" \
    slipway-job:bench deploy --watch 1s --smoke-interval 250ms >"$ctx/deploy.log" 2>&1 ||
    { tail -n 20 "$ctx/deploy.log" >&2; echo "round $i: the deploy failed" >&2; exit 1; }
  wall=$(($(now_ms) - t0))
  # systemd's own timestamps of the reload job, in microseconds.
  reload=$(on_host journalctl -u caddy.service --since "$since" -o short-unix --no-pager |
    awk '/Reloading caddy.service/ {s = $1} /Reloaded caddy.service/ && s {printf "%d\n", ($1 - s) * 1000; s = 0}' | tail -n 1)
  echo "round $i: deploy wall ${wall} ms, systemctl reload caddy ${reload} ms"
  walls+=("$wall") reloads+=("$reload")
done
echo "median of $n: deploy wall $(printf '%s\n' "${walls[@]}" | median) ms, reload $(printf '%s\n' "${reloads[@]}" | median) ms"
