#!/usr/bin/env bash
# The deploy script teams write today with the docker CLI, for benches/deploy.sh to time against
# `slipway deploy`: build, push, run the new release on the free port, sleep-poll its Docker
# health, point Caddy at it and reload, curl the public URL until it serves the new version
# (sleep-poll), optionally watch and drain, then stop and remove the old container.
#
# Usage: benches/deploy-by-hand.sh REVISION
# Env: REGISTRY REPOSITORY CONTEXT BASE_IMAGE NAME PORTS ("A B") SNIPPETS RELOAD_COMMAND URL
#      STATE (file holding "container port" of the live release), PHASES (file: "phase ms"
#      lines are appended), WATCH and DRAIN (seconds, default 0).
set -euo pipefail
rev=$1
image="$REGISTRY/$REPOSITORY:$rev"
new="$NAME-${rev:0:12}"
now_ms() { date +%s%3N; }
t=$(now_ms)
phase() { local n; n=$(now_ms); echo "$1 $((n - t))" >>"$PHASES"; t=$n; }

DOCKER_BUILDKIT=0 docker build --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VERSION="$rev" \
  --label org.opencontainers.image.revision="$rev" -t "$image" "$CONTEXT"
phase build
docker push "$image"
phase push

# The free port: the one the live release is not on.
old="" old_port=""
[ -s "$STATE" ] && read -r old old_port <"$STATE"
read -r a b <<<"$PORTS"
port=$a; [ "$old_port" = "$a" ] && port=$b
docker rm -f "$new" >/dev/null 2>&1 || true
docker run -d --name "$new" -p "127.0.0.1:$port:8080" --read-only --memory 64m --pids-limit 64 \
  --restart unless-stopped "$image"
phase run

for _ in $(seq 1 60); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$new")
  [ "$status" = healthy ] && break
  [ "$status" = unhealthy ] && { echo "$new is unhealthy" >&2; docker rm -f "$new"; exit 1; }
  sleep 1
done
[ "$status" = healthy ] || { echo "$new not healthy after 60 s" >&2; docker rm -f "$new"; exit 1; }
phase health

printf 'reverse_proxy 127.0.0.1:%s\n' "$port" >"$SNIPPETS/$NAME.caddy"
$RELOAD_COMMAND
phase switch

serves() { curl -fsS --max-time 5 "$URL" | grep -q "\"version\":\"$rev\""; }
ok=""
for _ in $(seq 1 30); do
  serves && { ok=1; break; }
  sleep 1
done
[ -n "$ok" ] || { echo "$URL does not serve $rev after 30 s" >&2; exit 1; }
phase smoke
if [ "${WATCH:-0}" != 0 ]; then
  until=$(( $(now_ms) + WATCH * 1000 ))
  while [ "$(now_ms)" -lt "$until" ]; do sleep 1; serves || { echo "$URL stopped serving $rev" >&2; exit 1; }; done
  phase watch
fi
if [ "${DRAIN:-0}" != 0 ]; then
  sleep "$DRAIN"
  phase drain
fi

if [ -n "$old" ]; then
  docker stop "$old"
  docker rm "$old"
fi
echo "$new $port" >"$STATE"
phase retire
