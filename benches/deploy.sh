#!/usr/bin/env bash
# Whole-deploy benchmark, inside the sandbox: `scripts/sandbox benches/deploy.sh [ROUNDS]` (default 5).
# A whole `slipway deploy` of tests/fixtures/app (lint, build, push and prove, rollout behind
# Caddy, public smoke test) against benches/deploy-by-hand.sh, the docker CLI + sleep-polling +
# curl script teams write today, same run. Warm-up: one deploy of each side, not measured. Each
# round deploys a fresh random revision with each side (its own revision, so neither reuses the
# other's build cache; the fixture takes it as --revision-arg VERSION, so only its last build
# steps rerun), in alternating order. Prints every round, the medians, the ratio slipway/script,
# slipway's per-step medians (from --report) and the script's phase medians, and slipway's peak
# RSS (GNU time, maximum resident set size). Raw JSON: $SLIPWAY_SANDBOX_DIR/bench-deploy/results.json
# (with the reports and logs copied to directory $BENCH_OUT when set: the sandbox directory is
# removed at exit).
#
# Both sides get the same waits: WATCH (slipway --watch; the script keeps curling) and DRAIN
# (the spec's drain; the script sleeps) in seconds, default 0 on both. Each side has its own
# Caddy of the same shape: slipway the sandbox's (127.0.0.1:18080), the script a second one on
# 127.0.0.1:18081 started here, so both sides' snippets and public URLs never meet.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SLIPWAY_SANDBOX_DIR:?run this inside scripts/sandbox: scripts/sandbox benches/deploy.sh}"
rounds=${1:-5}
watch=${WATCH:-0}
drain=${DRAIN:-0}
bin=${SLIPWAY_BIN:-$(scripts/build-static)}
[ -x /usr/bin/time ] || { echo "deploy.sh: GNU time is missing (apt-get install time)" >&2; exit 2; }
work="$SLIPWAY_SANDBOX_DIR/bench-deploy"
mkdir -p "$work/logs" "$work/reports"
app=tests/fixtures/app

sha() { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
now_ms() { date +%s%3N; }
fail() { echo "deploy.sh: $1 failed; last lines of $2:" >&2; tail -n 30 "$2" >&2; exit 1; }

# --- the script side's own Caddy, the same shape as the sandbox's
cdir="$work/caddy-script"
mkdir -p "$cdir/snippets" "$cdir/xdg"
cat >"$cdir/Caddyfile" <<CADDY
{
	admin unix/$cdir/admin.sock
	auto_https off
}

http://127.0.0.1:18081 {
	bind 127.0.0.1
	route {
		import $cdir/snippets/*.caddy
		respond "no upstream configured" 503
	}
}
CADDY
XDG_CONFIG_HOME="$cdir/xdg" XDG_DATA_HOME="$cdir/xdg" \
  caddy run --config "$cdir/Caddyfile" --adapter caddyfile >"$work/logs/caddy-script.log" 2>&1 &
caddy_pid=$!
trap 'kill "$caddy_pid" 2>/dev/null; wait "$caddy_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18081/ || true)" = 503 ] && break
  sleep 0.1
done

# --- slipway: the spec of scripts/example, as its own service
cat >"$work/slipway.toml" <<TOML
name = "bench"
slots = [18301, 18302]
container_port = 8080
read_only = true
drain = "${drain}s"
[limits]
memory = "64m"
pids = 64
[health]
docker = true
[health.http]
path = "/health"
json_field = ".version"
[caddy]
snippet_dir = "$SLIPWAY_SANDBOX_SNIPPETS"
reload_command = "$SLIPWAY_SANDBOX_RELOAD_COMMAND"
TOML
slipway_deploy() { # $1: revision, $2: tag for the files; prints "wall_ms rss_kib"
  local t0 ms log="$work/logs/$2-slipway.log"
  t0=$(now_ms)
  SLIPWAY_RELOAD_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE" /usr/bin/time -v -o "$work/logs/$2-time.txt" \
    "$bin" deploy --config "$work/slipway.toml" --watch "${watch}s" \
    --registry "$SLIPWAY_SANDBOX_REGISTRY" --repository bench/slipway --context "$app" \
    --revision "$1" --revision-arg VERSION --build-arg BASE_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE" \
    --url "$SLIPWAY_SANDBOX_PUBLIC_URL/health" --report "$work/reports/$2.json" \
    >"$log" 2>&1 || fail "slipway deploy ($2)" "$log"
  ms=$(( $(now_ms) - t0 ))
  echo "$ms $(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/logs/$2-time.txt")"
}

# --- the script side
export REGISTRY=$SLIPWAY_SANDBOX_REGISTRY REPOSITORY=bench/script CONTEXT=$app
export BASE_IMAGE=$SLIPWAY_SANDBOX_BASE_IMAGE NAME=byhand PORTS="18311 18312"
export SNIPPETS="$cdir/snippets" URL=http://127.0.0.1:18081/health STATE="$work/script-state"
export RELOAD_COMMAND="caddy reload --config $cdir/Caddyfile --adapter caddyfile"
export WATCH=$watch DRAIN=$drain
script_deploy() { # $1: revision, $2: tag for the files; prints "wall_ms"
  local t0 ms log="$work/logs/$2-script.log"
  export PHASES="$work/logs/$2-phases.txt"
  : >"$PHASES"
  t0=$(now_ms)
  benches/deploy-by-hand.sh "$1" >"$log" 2>&1 || fail "the script deploy ($2)" "$log"
  ms=$(( $(now_ms) - t0 ))
  echo "$ms"
}

echo "== whole deploy of $app: slipway deploy vs docker CLI script; warm-up, then $rounds rounds (watch ${watch}s, drain ${drain}s)"
slipway_deploy "$(sha)" warmup >/dev/null
script_deploy "$(sha)" warmup >/dev/null

: >"$work/rounds.jsonl"
printf '%-6s %-14s %11s %10s %7s %12s\n' round order slipway_ms script_ms ratio slipway_rss
for i in $(seq 1 "$rounds"); do
  rs=$(sha) rb=$(sha)
  if [ $((i % 2)) = 1 ]; then
    order=slipway-first
    s_out=$(slipway_deploy "$rs" "round$i")
    b_ms=$(script_deploy "$rb" "round$i")
  else
    order=script-first
    b_ms=$(script_deploy "$rb" "round$i")
    s_out=$(slipway_deploy "$rs" "round$i")
  fi
  read -r s_ms s_rss <<<"$s_out"
  phases=$(awk '{ printf "%s\"%s\":%s", (NR > 1 ? "," : ""), $1, $2 }' "$work/logs/round$i-phases.txt")
  jq -c --argjson round "$i" --arg order "$order" --argjson s_ms "$s_ms" --argjson s_rss "$s_rss" \
    --argjson b_ms "$b_ms" --argjson phases "{$phases}" '
    . as $r
    | ($r.steps | map(.start_unix_ms + .duration_ms) | max) as $last
    | ($r.steps | map(select(.name == "build"))[0]) as $b
    | ($r.steps | map(select(.name != "build")) | map(.start_unix_ms) | min) as $roll
    | {round: $round, order: $order,
       slipway: {wall_ms: $s_ms, report_wall_ms: $r.wall_ms, max_rss_kib: $s_rss, outcome: $r.outcome,
         steps: ({"inputs+lint": ($b.start_unix_ms - $r.started_unix_ms),
                  "lock+plan": ($roll - $b.start_unix_ms - $b.duration_ms),
                  "unlock+report": ($r.started_unix_ms + $r.wall_ms - $last),
                  "process": ($s_ms - $r.wall_ms)}
                 + reduce $r.steps[] as $s ({}; .[$s.name] += $s.duration_ms))},
       script: {wall_ms: $b_ms, phases: ($phases + {"process": ($b_ms - ($phases | add))})}}
    ' "$work/reports/round$i.json" >>"$work/rounds.jsonl"
  awk -v i="$i" -v o="$order" -v s="$s_ms" -v b="$b_ms" -v r="$s_rss" \
    'BEGIN { printf "%-6s %-14s %11d %10d %7.2f %8.1f MiB\n", i, o, s, b, s / b, r / 1024 }'
done

jq -s --argjson watch "$watch" --argjson drain "$drain" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
    else ((.[length / 2 - 1] + .[length / 2]) / 2) end;
  def stepmedians(f): (map(f | keys[]) | unique) as $names
    | [$names[] as $n | {name: $n, median_ms: (map(f[$n] // empty) | median), rounds: (map(f[$n] // empty) | length)}];
  {rounds: length, watch_s: $watch, drain_s: $drain,
   slipway_wall_ms_median: (map(.slipway.wall_ms) | median),
   script_wall_ms_median: (map(.script.wall_ms) | median),
   ratio_of_medians: ((map(.slipway.wall_ms) | median) / (map(.script.wall_ms) | median)),
   ratio_median_per_round: (map(.slipway.wall_ms / .script.wall_ms) | median),
   slipway_max_rss_kib_median: (map(.slipway.max_rss_kib) | median),
   slipway_max_rss_kib_max: (map(.slipway.max_rss_kib) | max),
   slipway_steps: stepmedians(.slipway.steps),
   script_phases: stepmedians(.script.phases),
   per_round: .}' "$work/rounds.jsonl" >"$work/results.json"
[ -n "${BENCH_OUT:-}" ] && mkdir -p "$BENCH_OUT" && cp -r "$work/results.json" "$work/rounds.jsonl" "$work/reports" "$work/logs" "$BENCH_OUT/"

jq -r '
  "median \(.slipway_wall_ms_median) ms slipway, \(.script_wall_ms_median) ms script: ratio slipway/script \(.ratio_of_medians * 100 | round / 100) (median of per-round ratios \(.ratio_median_per_round * 100 | round / 100))",
  "slipway peak RSS (max resident set size): median \(.slipway_max_rss_kib_median / 1024 * 10 | round / 10) MiB, max \(.slipway_max_rss_kib_max / 1024 * 10 | round / 10) MiB",
  "",
  "slipway steps (median ms, in order; rounds with the step)",
  (.slipway_steps as $s
   | ["process", "inputs+lint", "build", "lock+plan", "image", "reconcile", "start", "verify", "health", "switch", "smoke", "drain", "retire", "prune", "unlock+report"] as $order
   | ($order + (($s | map(.name)) - $order))[] as $n | $s[] | select(.name == $n)
   | "  \(.name | . + " " * (14 - length)) \(.median_ms | tostring | " " * (8 - length) + .)   \(.rounds)"),
  "script phases (median ms, in order)",
  (.script_phases as $s
   | ["process", "build", "push", "run", "health", "switch", "smoke", "watch", "drain", "retire"] as $order
   | ($order + (($s | map(.name)) - $order))[] as $n | $s[] | select(.name == $n)
   | "  \(.name | . + " " * (14 - length)) \(.median_ms | tostring | " " * (8 - length) + .)   \(.rounds)")
' "$work/results.json"
echo "(slipway: process = its start and exit outside the report; inputs+lint before the build; build = build, push, prove; lock+plan before the rollout; unlock+report = lock release, outputs and report. script: process = bash and the timers outside the phases.)"
echo "raw: $work/results.json"
