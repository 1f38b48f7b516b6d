#!/usr/bin/env bash
# Usage: SLIPWAY_BIN=$(scripts/build-static) scripts/sandbox benches/buildkit.sh [ROUNDS]
#   optional: SLIPWAY_BIN_CLASSIC_ONLY=<a slipway built without bollard's buildkit feature>,
#   to print the binary size the feature costs.
#
# Inside the sandbox (a real dockerd and registry), in one run:
#  1. build+push of tests/fixtures/app: BuildKit (its Dockerfile: cache and bind mounts) against
#     the classic builder (Dockerfile.classic: the same app without mounts), both with `slipway
#     build`. One warm-up each, then ROUNDS rounds (default 5) in alternating order, each with a
#     new revision (the revision-dependent steps rebuild, the dependency step is cached).
#  2. the fixture's cache-mount step (it "downloads" each dependency missing from the cache mount,
#     1 s each): cold (build cache pruned first) against warm (deps.txt changed, so the step
#     reruns on the cache mount earlier builds filled), alternating, ROUNDS each. The step's own
#     duration as BuildKit reports it.
#  3. binary size (with the feature; without it if SLIPWAY_BIN_CLASSIC_ONLY is given).
#  4. peak RSS (GNU time) of `slipway build` sending a generated 1 GiB context of incompressible
#     data, BuildKit and classic alternating, 3 rounds.
# Medians are printed for each.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-5}
for v in SLIPWAY_SANDBOX_DIR SLIPWAY_SANDBOX_REGISTRY SLIPWAY_SANDBOX_BASE_IMAGE DOCKER_HOST; do
  if [ -z "${!v:-}" ]; then
    echo "buildkit.sh: $v is not set: run it inside the sandbox: scripts/sandbox benches/buildkit.sh" >&2
    exit 2
  fi
done
bin=${SLIPWAY_BIN:-target/x86_64-unknown-linux-gnu/release/slipway}
[ -x "$bin" ] || { echo "buildkit.sh: no slipway binary at $bin: SLIPWAY_BIN=\$(scripts/build-static)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "buildkit.sh: GNU time is missing (apt-get install time)" >&2; exit 2; }

registry=$SLIPWAY_SANDBOX_REGISTRY
base=$SLIPWAY_SANDBOX_BASE_IMAGE
socket=${DOCKER_HOST#unix://}
work="$SLIPWAY_SANDBOX_DIR/bench-buildkit"
mkdir -p "$work/logs"
trap 'rm -rf "$work/ctx" "$work/app"' EXIT

sha() { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
now_ms() { date +%s%3N; }
fail() { echo "buildkit.sh: $1 failed; last lines of $2:" >&2; tail -n 30 "$2" >&2; exit 1; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }

slipway_build() { # $1: context, $2: repository, $3: log, rest: extra flags
  local context=$1 repo=$2 log=$3
  shift 3
  "$bin" build --context "$context" --repository "$repo" --revision "$(sha)" --revision-arg VERSION \
    --build-arg BASE_IMAGE="$base" --registry "$registry" "$@" >"$log.out" 2>"$log" || fail "slipway build $*" "$log"
}
buildkit() { slipway_build tests/fixtures/app bench/buildkit "$1"; }
classic() { slipway_build tests/fixtures/app bench/classic "$1" --builder classic -f tests/fixtures/app/Dockerfile.classic; }
timed() { # $1: function, $2: log; prints ms
  local t0
  t0=$(now_ms)
  "$1" "$2"
  echo $(($(now_ms) - t0))
}

echo "== 1. build+push of tests/fixtures/app with slipway: BuildKit vs classic builder, $rounds rounds after a warm-up"
buildkit "$work/logs/warmup-buildkit.log"
classic "$work/logs/warmup-classic.log"
: >"$work/bk.ms"; : >"$work/cl.ms"
printf '%-6s %12s %12s\n' round buildkit_ms classic_ms
for i in $(seq 1 "$rounds"); do
  if [ $((i % 2)) = 1 ]; then
    b=$(timed buildkit "$work/logs/r$i-buildkit.log"); c=$(timed classic "$work/logs/r$i-classic.log")
  else
    c=$(timed classic "$work/logs/r$i-classic.log"); b=$(timed buildkit "$work/logs/r$i-buildkit.log")
  fi
  echo "$b" >>"$work/bk.ms"; echo "$c" >>"$work/cl.ms"
  printf '%-6s %12s %12s\n' "$i" "$b" "$c"
done
printf '%-6s %12s %12s\n' median "$(median <"$work/bk.ms")" "$(median <"$work/cl.ms")"

echo
echo "== 2. the cache-mount step (RUN --mount=type=cache ...): cold (build cache pruned) vs warm (deps.txt changed), $rounds each, alternating"
rm -rf "$work/app"; cp -r tests/fixtures/app "$work/app"
step_seconds() { # $1: log; the DONE time of the cache-mount step
  grep -F '] RUN --mount=type=cache' "$1" | grep -o ': DONE [0-9.]*s$' | grep -o '[0-9.]*' | tail -n 1
}
prune() { curl -sf --unix-socket "$socket" -X POST "http://localhost/build/prune?all=true" >/dev/null; }
cold() { prune; echo "# $(sha)" >>"$work/app/deps.txt"; slipway_build "$work/app" bench/cache "$1"; }
warm() { echo "# $(sha)" >>"$work/app/deps.txt"; slipway_build "$work/app" bench/cache "$1"; }
: >"$work/cold.s"; : >"$work/warm.s"
printf '%-6s %10s %10s\n' round cold_s warm_s
for i in $(seq 1 "$rounds"); do
  if [ $((i % 2)) = 1 ]; then
    cold "$work/logs/c$i-cold.log"; warm "$work/logs/c$i-warm.log"
  else
    warm "$work/logs/c$i-warm.log"; cold "$work/logs/c$i-cold.log"
  fi
  c=$(step_seconds "$work/logs/c$i-cold.log"); w=$(step_seconds "$work/logs/c$i-warm.log")
  [ -n "$c" ] && [ -n "$w" ] || fail "reading the step's time" "$work/logs/c$i-warm.log"
  echo "$c" >>"$work/cold.s"; echo "$w" >>"$work/warm.s"
  printf '%-6s %10s %10s\n' "$i" "$c" "$w"
done
printf '%-6s %10s %10s\n' median "$(median <"$work/cold.s")" "$(median <"$work/warm.s")"
grep -h "installed .* dependencies" "$work/logs/c1-cold.log" "$work/logs/c1-warm.log" | sed 's/^ *INFO */  /'

echo
echo "== 3. binary size"
size=$(stat -c %s "$bin")
echo "with bollard's buildkit feature: $size bytes ($(mib "$size") MiB; limit 12 MiB = 12582912 bytes)"
if [ -n "${SLIPWAY_BIN_CLASSIC_ONLY:-}" ]; then
  plain=$(stat -c %s "$SLIPWAY_BIN_CLASSIC_ONLY")
  echo "without it: $plain bytes ($(mib "$plain") MiB); the feature costs $((size - plain)) bytes ($(mib $((size - plain))) MiB)"
fi

echo
echo "== 4. peak RSS of slipway build sending a 1 GiB context (incompressible, files of 10 MiB), 3 rounds alternating"
ctx="$work/ctx"
mkdir -p "$ctx/data"
for n in $(seq 1 102); do head -c $((10 * 1024 * 1024)) /dev/urandom >"$ctx/data/part-$n.bin"; done
head -c $((4 * 1024 * 1024)) /dev/urandom >"$ctx/data/part-103.bin"
printf 'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nLABEL bench=context\nUSER 10001\nHEALTHCHECK CMD ["true"]\nCMD ["true"]\n' >"$ctx/Dockerfile"
printf '.env\n.git\n.venv\n' >"$ctx/.dockerignore"
rss() { # $1: builder, $2: log; prints "kib ms bytes_sent"
  local t0 ms
  t0=$(now_ms)
  /usr/bin/time -f '%M' -o "$work/rss" "$bin" build --context "$ctx" --repository bench/context \
    --revision "$(sha)" --build-arg BASE_IMAGE="$base" --registry "$registry" --builder "$1" \
    --format json >"$work/rss.json" 2>"$2" || fail "slipway build --builder $1 of 1 GiB" "$2"
  ms=$(($(now_ms) - t0))
  echo "$(tail -n 1 "$work/rss") $ms $(jq -r .context.bytes "$work/rss.json")"
}
: >"$work/rss-bk"; : >"$work/rss-cl"
printf '%-6s %16s %12s %16s %12s %12s\n' round buildkit_MiB buildkit_ms classic_MiB classic_ms sent_bytes
for i in 1 2 3; do
  if [ $((i % 2)) = 1 ]; then
    read -r bk bms sent < <(rss buildkit "$work/logs/rss$i-buildkit.log"); read -r cl cms _ < <(rss classic "$work/logs/rss$i-classic.log")
  else
    read -r cl cms _ < <(rss classic "$work/logs/rss$i-classic.log"); read -r bk bms sent < <(rss buildkit "$work/logs/rss$i-buildkit.log")
  fi
  echo "$bk" >>"$work/rss-bk"; echo "$cl" >>"$work/rss-cl"
  printf '%-6s %16s %12s %16s %12s %12s\n' "$i" "$(mib $((bk * 1024)))" "$bms" "$(mib $((cl * 1024)))" "$cms" "$sent"
done
printf '%-6s %16s %12s %16s\n' median "$(mib "$(median <"$work/rss-bk" | awk '{ print int($1 * 1024) }')")" "" "$(mib "$(median <"$work/rss-cl" | awk '{ print int($1 * 1024) }')")"
