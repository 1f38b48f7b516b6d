#!/usr/bin/env bash
# The three proxies side by side, inside the sandbox: `scripts/sandbox benches/proxies.sh [N]`.
# One service behind each of Caddy (the sandbox's), nginx and Traefik (file provider, API on
# loopback), each rolled out N times (v1/v2 alternating) under benches/loadgen.py load, the proxy
# order rotating each round. Per proxy: requests and failures (new-connection and keep-alive
# clients), and the switch time: from the switch step's start (the write) to the first response
# of the new version on a new connection (polled every 5 ms), with the switch step's own duration
# (write, test/reload or confirm, record) beside it. Medians.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SLIPWAY_SANDBOX_DIR:?run this inside scripts/sandbox}"
n=${1:-10}
bin=${SLIPWAY_BIN:-$(scripts/build-static)}
work="$SLIPWAY_SANDBOX_DIR/bench-proxies"
rm -rf "$work" && mkdir -p "$work/nginx/upstream" "$work/nginx/tmp" "$work/traefik/dynamic"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    for c in $(cat "/proc/$p/task/$p/children" 2>/dev/null) "$p"; do kill -TERM "$c" 2>/dev/null || true; done
  done
  docker ps -aq --filter label=dev.slipway.service | xargs -r docker rm -f >/dev/null 2>&1 || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

for v in v1 v2; do
  docker build -q --build-arg BASE_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE" --build-arg VERSION=$v \
    -t "$SLIPWAY_SANDBOX_REGISTRY/bench/proxies:$v" tests/fixtures/app >/dev/null
  docker push -q "$SLIPWAY_SANDBOX_REGISTRY/bench/proxies:$v" >/dev/null
done
img_v1=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SANDBOX_REGISTRY/bench/proxies:v1")
img_v2=$(docker inspect --format '{{index .RepoDigests 0}}' "$SLIPWAY_SANDBOX_REGISTRY/bench/proxies:v2")

# --- nginx, in the PID namespace the sibling's nsenter reaches (nginx -s reload reads its pid file)
d="$work/nginx"
printf '# slipway: no release serves here\nserver 127.0.0.1:9 down;\n' >"$d/upstream/bench-nginx.upstream"
cat >"$d/nginx.conf" <<NGINX
daemon off;
user root;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $d/tmp/body;
	proxy_temp_path $d/tmp/proxy;
	upstream app { include $d/upstream/bench-nginx.upstream; }
	server { listen 127.0.0.1:18410; location / { proxy_pass http://app; } }
}
NGINX
nsenter -t "$SLIPWAY_SANDBOX_HOST_PID" -p -m -- "$SLIPWAY_SANDBOX_NGINX" -c "$d/nginx.conf" -e "$d/error.log" &
pids+=($!)

# --- Traefik, file provider on a directory, API on a loopback port
d="$work/traefik"
cat >"$d/traefik.yml" <<YML
global: {checkNewVersion: false, sendAnonymousUsage: false}
entryPoints:
  web: {address: "127.0.0.1:18420"}
  traefik: {address: "127.0.0.1:18421"}
api: {insecure: true}
providers:
  file: {directory: "$d/dynamic", watch: true}
log: {level: WARN, noColor: true}
YML
"$SLIPWAY_SANDBOX_TRAEFIK" --configFile="$d/traefik.yml" >"$d/traefik.log" 2>&1 &
pids+=($!)

spec() { # NAME SLOT_A SLOT_B TABLE
  printf 'name = "%s"\nslots = [%s, %s]\ncontainer_port = 8080\ndrain = "1s"\n[health]\ndocker = true\n[health.http]\njson_field = ".version"\ninterval = "200ms"\n%s\n' "$@"
}
spec bench-caddy 18401 18402 "[caddy]
snippet_dir = \"$SLIPWAY_SANDBOX_SNIPPETS\"
reload_command = \"$SLIPWAY_SANDBOX_RELOAD_COMMAND\"" >"$work/caddy.toml"
ng="$SLIPWAY_SANDBOX_NGINX -c $work/nginx/nginx.conf -e $work/nginx/error.log"
spec bench-nginx 18411 18412 "[nginx]
upstream_file = \"$work/nginx/upstream/bench-nginx.upstream\"
test_command = \"$SLIPWAY_SANDBOX_NGINX -t -q -c $work/nginx/nginx.conf -e $work/nginx/error.log\"
reload_command = \"$ng -s reload\"" >"$work/nginx.toml"
spec bench-traefik 18423 18424 "[traefik]
dynamic_dir = \"$work/traefik/dynamic\"
rule = \"PathPrefix(\`/\`)\"
entrypoints = [\"web\"]
api_url = \"http://127.0.0.1:18421\"" >"$work/traefik.toml"
declare -A url=([caddy]="$SLIPWAY_SANDBOX_PUBLIC_URL/version" [nginx]=http://127.0.0.1:18410/version [traefik]=http://127.0.0.1:18420/version)
export SLIPWAY_RELOAD_IMAGE="$SLIPWAY_SANDBOX_BASE_IMAGE"
sleep 1

# First seen: unix ms of the first new-connection response with body $2.
cat >"$work/first_seen.py" <<'PY'
import sys, time, urllib.request
url, want, stop = sys.argv[1], sys.argv[2], time.time() + 60
while time.time() < stop:
    try:
        if urllib.request.urlopen(url, timeout=2).read().decode().strip() == want:
            print(int(time.time() * 1000)); sys.exit(0)
    except Exception:
        pass
    time.sleep(0.005)
print(-1)
PY

for p in caddy nginx traefik; do
  "$bin" rollout "$img_v1" --config "$work/$p.toml" >/dev/null
  : >"$work/$p.jsonl"
done

roll() { # PROXY ROUND
  local p=$1 i=$2 img=$img_v2 want=v2 seen
  [ $((i % 2)) -eq 0 ] && { img=$img_v1; want=v1; }
  rm -f "$work/stop"
  THREADS=2 benches/loadgen.py "${url[$p]}" "$work/stop" 120 >"$work/load.json" &
  local load=$!
  python3 "$work/first_seen.py" "${url[$p]}" "$want" >"$work/seen" &
  local poll=$!
  sleep 0.7
  "$bin" rollout "$img" --config "$work/$p.toml" --format json >"$work/report.json" || true
  wait "$poll"; seen=$(cat "$work/seen")
  sleep 0.7; touch "$work/stop"; wait "$load"
  jq -c --argjson seen "$seen" --slurpfile load "$work/load.json" '{
      outcome,
      switch_step: (.steps[] | select(.name == "switch") | .duration_ms),
      served_after: ($seen - .started_unix_ms - (.steps[] | select(.name == "switch") | .start_ms)),
      new: $load[0].new, keepalive: $load[0].keepalive
    }' "$work/report.json" >>"$work/$p.jsonl"
}

order=(caddy nginx traefik)
for i in $(seq 1 "$n"); do
  for k in 0 1 2; do roll "${order[$(( (i + k) % 3 ))]}" "$i"; done
done

echo "== $n rollouts per proxy under load, order rotating each round"
printf '%-8s %9s %14s %14s %16s %16s %14s\n' proxy deployed new-req/fail keepalive/fail "ka retried" "switch step ms" "served after ms"
for p in caddy nginx traefik; do
  jq -rs --arg p "$p" '
    def med: sort | .[length/2|floor];
    [ $p,
      (map(select(.outcome == "deployed")) | length | tostring),
      ((map(.new.requests) | add | tostring) + "/" + (map(.new.failures) | add | tostring)),
      ((map(.keepalive.requests) | add | tostring) + "/" + (map(.keepalive.failures) | add | tostring)),
      (map(.keepalive.retried) | add | tostring),
      (map(.switch_step) | med | tostring),
      (map(.served_after) | med | tostring) + " (max " + (map(.served_after) | max | tostring) + ")"
    ] | @tsv' "$work/$p.jsonl" | awk -F'\t' '{printf "%-8s %9s %14s %14s %16s %16s %14s\n", $1, $2, $3, $4, $5, $6, $7}'
done
for p in caddy nginx traefik; do
  jq -c --arg p "$p" '{p: $p, errors_new: .new.errors, errors_keepalive: .keepalive.errors}' "$work/$p.jsonl" | grep -v '"errors_new":{},"errors_keepalive":{}' || true
done
