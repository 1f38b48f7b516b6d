#!/usr/bin/env bash
# Idle cost of `slipway watch`, inside the sandbox: `scripts/sandbox benches/watch.sh [SECONDS]`.
# Deploys 10 services (the fixture app, one Caddy, a snippet file each), then measures over
# SECONDS (default 60) each: the engine alone (baseline), the watchdog at the specs' probe
# interval (500 ms, the [health.http] default), and the watchdog with --interval 5s. For the
# watchdog: CPU % from /proc/PID/stat (utime+stime) and RSS/peak RSS from /proc/PID/status; for
# the engine (dockerd, containerd and the shims): CPU % above the baseline; for the probe
# siblings (their shell loop and the wget it runs per probe): CPU % from their cgroups.
# Prints a table and the JSON.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SLIPWAY_SANDBOX_DIR:?run this inside scripts/sandbox}"
secs=${1:-60}
n=10
bin=${SLIPWAY_BIN:-$(scripts/build-static)}
work="$SLIPWAY_SANDBOX_DIR/bench-watch"
mkdir -p "$work/snippets" "$work/specs" "$work/xdg"
tck=$(getconf CLK_TCK)

docker build -q --build-arg BASE_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE" --build-arg VERSION=v1 \
  -t "$SLIPWAY_SANDBOX_REGISTRY/bench/watch:v1" tests/fixtures/app >/dev/null
docker push -q "$SLIPWAY_SANDBOX_REGISTRY/bench/watch:v1" >/dev/null
image=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SANDBOX_REGISTRY/bench/watch:v1")

# One Caddy, ten sites, each importing only its own service's snippet.
{
  printf '{\n\tadmin unix/%s/admin.sock\n\tauto_https off\n}\n' "$work"
  for i in $(seq -w 1 $n); do
    printf 'http://127.0.0.1:191%s {\n\tbind 127.0.0.1\n\troute {\n\t\timport %s/snippets/watch-%s*.caddy\n\t\trespond "no upstream" 503\n\t}\n}\n' \
      "$i" "$work" "$i"
  done
} >"$work/Caddyfile"
XDG_CONFIG_HOME="$work/xdg" XDG_DATA_HOME="$work/xdg" \
  caddy run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
caddy_pid=$!
trap 'kill "$caddy_pid" 2>/dev/null || true; kill "${watch_pid:-}" 2>/dev/null || true' EXIT
until curl -s -o /dev/null "http://127.0.0.1:19101/"; do sleep 0.1; done

export SLIPWAY_RELOAD_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE"
for i in $(seq -w 1 $n); do
  cat >"$work/specs/watch-$i.toml" <<TOML
name = "watch-$i"
slots = [192$i, 193$i]
container_port = 8080
drain = "200ms"
[health]
docker = true
[health.http]
json_field = ".version"
[caddy]
snippet_dir = "$work/snippets"
reload_command = "caddy reload --config $work/Caddyfile --adapter caddyfile"
TOML
  "$bin" rollout "$image" --config "$work/specs/watch-$i.toml" >/dev/null 2>"$work/rollout-$i.log"
  curl -sf "http://127.0.0.1:191$i/version" >/dev/null
done
echo "deployed $n services" >&2

ticks() { # utime+stime (+ reaped children's with $2=all) of pid $1, in clock ticks
  awk -v all="${2:-}" '{ s = $14 + $15; if (all != "") s += $16 + $17; print s }' "/proc/$1/stat" 2>/dev/null || echo 0
}
engine_pids() { pgrep -x dockerd; pgrep -x containerd; pgrep -f containerd-shim; }
engine_ticks() { local t=0 p; for p in $(engine_pids); do t=$((t + $(ticks "$p" all))); done; echo "$t"; }
# The probe siblings' own CPU (the shell loop and its wget children), from their cgroups.
sibling_usec() {
  local t=0 id dir
  for id in $(docker ps -q --no-trunc --filter label=dev.slipway.role=watch-probe); do
    dir=$(find /sys/fs/cgroup -maxdepth 5 -type d -name "*$id*" 2>/dev/null | head -1)
    [ -n "$dir" ] && [ -r "$dir/cpu.stat" ] && t=$((t + $(awk '/^usage_usec/ { print $2 }' "$dir/cpu.stat")))
  done
  echo "$t"
}
pct() { awk -v t="$1" -v hz="$tck" -v s="$secs" 'BEGIN { printf "%.2f", 100 * t / hz / s }'; }

# Baseline: the engine with ten running apps (each with a 1 s HEALTHCHECK), no watchdog.
sleep 5
e0=$(engine_ticks); sleep "$secs"; e1=$(engine_ticks)
base=$((e1 - e0))

measure() { # label, extra args
  local label=$1
  shift
  "$bin" watch --config-dir "$work/specs" "$@" >"$work/events-$label.jsonl" 2>"$work/watch-$label.log" &
  watch_pid=$!
  sleep 10 # warm-up: every service found, every probe sibling started
  local w0 e0 s0 w1 e1 s1 rss hwm anon siblings
  siblings=$(docker ps -q --filter label=dev.slipway.role=watch-probe | wc -l)
  w0=$(ticks "$watch_pid"); e0=$(engine_ticks); s0=$(sibling_usec)
  sleep "$secs"
  w1=$(ticks "$watch_pid"); e1=$(engine_ticks); s1=$(sibling_usec)
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$watch_pid/status")
  hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$watch_pid/status")
  anon=$(awk '/^RssAnon/ { print $2 }' "/proc/$watch_pid/status")
  kill -TERM "$watch_pid"
  wait "$watch_pid" || { echo "watch exited non-zero" >&2; exit 1; }
  watch_pid=""
  local watching failed
  watching=$(grep -c '"event":"watching"' "$work/events-$label.jsonl" || true)
  failed=$(grep -c '"event":"probe_failed"' "$work/events-$label.jsonl" || true)
  [ "$watching" = "$n" ] || { echo "$label: watching $watching of $n services" >&2; exit 1; }
  [ "$failed" = 0 ] || { echo "$label: $failed failed probes while idle" >&2; exit 1; }
  [ -z "$(docker ps -aq --filter label=dev.slipway.role=watch-probe)" ] || {
    echo "$label: probe siblings left behind" >&2
    exit 1
  }
  jq -nc --arg mode "$label" --argjson n "$n" --argjson secs "$secs" \
    --arg cpu "$(pct $((w1 - w0)))" --argjson rss "$rss" --argjson hwm "$hwm" --argjson anon "$anon" \
    --arg engine "$(pct $((e1 - e0 - base)))" --argjson siblings "$siblings" \
    --arg sib "$(awk -v u=$((s1 - s0)) -v s="$secs" 'BEGIN { printf "%.2f", u / 10000 / s }')" \
    '{mode: $mode, services: $n, seconds: $secs, watch_cpu_pct: ($cpu | tonumber), watch_rss_kib: $rss,
      watch_peak_rss_kib: $hwm, watch_rss_anon_kib: $anon, engine_cpu_pct_above_baseline: ($engine | tonumber),
      probe_siblings: $siblings, siblings_cpu_pct: ($sib | tonumber)}'
}

{
  measure interval-500ms
  measure interval-5s --interval 5s
} | tee "$work/results.jsonl"
echo "== $n services, ${secs} s each; engine baseline (no watchdog) $(pct "$base") % CPU" >&2
jq -r '"\(.mode): watchdog \(.watch_cpu_pct) % CPU, RSS \(.watch_rss_kib) KiB (peak \(.watch_peak_rss_kib), anonymous \(.watch_rss_anon_kib)); engine +\(.engine_cpu_pct_above_baseline) % CPU; \(.probe_siblings) probe siblings \(.siblings_cpu_pct) % CPU"' \
  "$work/results.jsonl" >&2
