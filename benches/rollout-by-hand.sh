#!/usr/bin/env bash
# The careful blue-green script a team writes by hand with the docker CLI, for benches/speed.sh
# to time against `slipway rollout IMAGE@sha256:...`: run the new release on the free port,
# sleep-1 poll its Docker health, rewrite the upstream, reload Caddy through a privileged
# nsenter sibling (the same `docker run --privileged --pid=host ... nsenter -t 1` slipway's
# reload uses), curl the public URL until it serves the new version, wait the drain, then stop
# and remove the old container.
#
# Usage: benches/rollout-by-hand.sh IMAGE VERSION
# Env: NAME, PORTS ("A B"), SNIPPETS (dir), URL (public, answers the version), RELOAD_IMAGE
#      (pinned, has nsenter), RELOAD_COMMAND, STATE (file holding "container port" of the live
#      release), PHASES (file: "phase ms" lines are appended), DRAIN (seconds, default 0).
set -euo pipefail
image=$1 version=$2
now_ms() { date +%s%3N; }
t=$(now_ms)
phase() { local n; n=$(now_ms); echo "$1 $((n - t))" >>"$PHASES"; t=$n; }

old="" old_port=""
[ -s "$STATE" ] && read -r old old_port <"$STATE"
read -r a b <<<"$PORTS"
port=$a; [ "$old_port" = "$a" ] && port=$b
new="$NAME-$version-$(date +%s%N | tail -c 7)"
docker run -d --name "$new" -p "127.0.0.1:$port:8080" --read-only --restart unless-stopped \
  "$image" >/dev/null
phase run

status=starting
for _ in $(seq 1 60); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$new")
  [ "$status" = healthy ] && break
  [ "$status" = unhealthy ] && { echo "$new is unhealthy" >&2; docker rm -f "$new"; exit 1; }
  sleep 1
done
[ "$status" = healthy ] || { echo "$new not healthy after 60 s" >&2; docker rm -f "$new"; exit 1; }
phase health

printf 'reverse_proxy 127.0.0.1:%s\n' "$port" >"$SNIPPETS/$NAME.caddy.tmp"
mv -f "$SNIPPETS/$NAME.caddy.tmp" "$SNIPPETS/$NAME.caddy"
# shellcheck disable=SC2086 # the reload command is a command line
docker run --rm --privileged --pid=host --network none "$RELOAD_IMAGE" \
  nsenter -t 1 -m -u -n -p -i -- $RELOAD_COMMAND
phase switch

ok=""
for _ in $(seq 1 30); do
  [ "$(curl -fsS --max-time 5 "$URL" || true)" = "$version" ] && { ok=1; break; }
  sleep 1
done
[ -n "$ok" ] || { echo "$URL does not serve $version after 30 s" >&2; exit 1; }
phase smoke

if [ "${DRAIN:-0}" != 0 ]; then
  sleep "$DRAIN"
  phase drain
fi
if [ -n "$old" ]; then
  docker stop "$old" >/dev/null
  docker rm "$old" >/dev/null
fi
echo "$new $port" >"$STATE"
phase retire
