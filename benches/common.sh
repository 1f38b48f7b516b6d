# Pieces the benches share; sourced (`. benches/common.sh`) inside the sandbox.

now_ms() { date +%s%3N; }
fail() { echo "${0##*/}: $1 failed; last lines of $2:" >&2; tail -n 30 "$2" >&2; exit 1; }

# A Caddy of the sandbox's shape (admin on a unix socket, the snippets of DIR/snippets imported
# in a route, else 503) on 127.0.0.1:PORT. `stop_caddy` stops it.
start_caddy() { # $1: dir, $2: port, $3: log file
  local dir=$1 port=$2
  mkdir -p "$dir/snippets" "$dir/xdg"
  cat >"$dir/Caddyfile" <<CADDY
{
	admin unix/$dir/admin.sock
	auto_https off
}

http://127.0.0.1:$port {
	bind 127.0.0.1
	route {
		import $dir/snippets/*.caddy
		respond "no upstream configured" 503
	}
}
CADDY
  XDG_CONFIG_HOME="$dir/xdg" XDG_DATA_HOME="$dir/xdg" \
    caddy run --config "$dir/Caddyfile" --adapter caddyfile >"$3" 2>&1 &
  caddy_pid=$!
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)" = 503 ] && return 0
    sleep 0.1
  done
  echo "caddy on 127.0.0.1:$port did not come up; see $3" >&2
  return 1
}
stop_caddy() { [ -n "${caddy_pid:-}" ] && kill "$caddy_pid" 2>/dev/null; wait "$caddy_pid" 2>/dev/null || true; }

# Engine CPU: a cpuacct cgroup holding this sandbox's dockerd, containerd, tini and the shims
# (their children, runc included, start in it; containers go to their own cgroups). The
# userland proxies (docker-proxy, carrying the load's traffic) are moved back out as they appear.
engine_cg_setup() { # $1: work dir (for the mover's log)
  local root=/sys/fs/cgroup/cpuacct p c
  engine_cg="$root/slipway-bench-$$"
  engine_cg_orig="$root$(awk -F: '$2 == "cpuacct" { print $3 }' "/proc/$SLIPWAY_SANDBOX_DOCKERD_PID/cgroup")"
  mkdir "$engine_cg"
  for p in $(engine_pids); do echo "$p" >"$engine_cg/cgroup.procs" 2>/dev/null || true; done
  (
    while [ -d "$engine_cg" ]; do
      while read -r p; do
        read -r c <"/proc/$p/comm" 2>/dev/null || continue
        [ "$c" = docker-proxy ] && echo "$p" >"$engine_cg_orig/cgroup.procs" 2>/dev/null
      done <"$engine_cg/cgroup.procs" 2>/dev/null
      sleep 0.05
    done
  ) >"$1/cg-mover.log" 2>&1 &
  engine_cg_mover=$!
}
engine_pids() { # this sandbox's engine processes: descendants of the dockerd unshare by name
  ps -e -o pid=,ppid=,comm= | awk -v top="$SLIPWAY_SANDBOX_DOCKERD_PID" '
    { parent[$1] = $2; comm[$1] = $3 }
    END { for (p in parent) { q = p; while (q in parent && q != top) q = parent[q];
            if (q == top && comm[p] ~ /^(tini|dockerd|containerd|containerd-shim)/) print p } }'
}
engine_cpu_ns() { cat "$engine_cg/cpuacct.usage"; }
engine_cg_teardown() {
  local p
  [ -n "${engine_cg:-}" ] && [ -d "$engine_cg" ] || return 0
  kill "$engine_cg_mover" 2>/dev/null || true
  for _ in 1 2 3; do
    while read -r p; do echo "$p" >"$engine_cg_orig/cgroup.procs" 2>/dev/null || true; done <"$engine_cg/cgroup.procs"
    rmdir "$engine_cg" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "could not remove $engine_cg" >&2
}

# Optional: the whole sandbox (engine, shims, containers, both Caddies, the load, the deploys)
# held to QUOTA CPUs (e.g. 0.3) by a cpu cgroup, to reproduce a loaded host without loading the
# shared machine. Containers start in the engine's own /docker/<id> cgroups: a mover brings this
# sandbox's ones (their ids from containerd's task dir) into the throttled cgroup as they appear.
throttle_start() { # $1: quota in CPUs, $2: work dir (for the mover's log); rest: other pids to hold
  local quota=$1 log=$2/throttle-mover.log root=/sys/fs/cgroup/cpu p
  shift 2
  throttle_cg="$root/slipway-bench-throttle-$$"
  mkdir "$throttle_cg"
  echo 10000 >"$throttle_cg/cpu.cfs_period_us"
  awk -v q="$quota" 'BEGIN { printf "%d\n", q * 10000 }' >"$throttle_cg/cpu.cfs_quota_us"
  for p in $(engine_pids) "$@" $$; do echo "$p" >"$throttle_cg/cgroup.procs" 2>/dev/null || true; done
  local tasks="$SLIPWAY_SANDBOX_DIR/exec/containerd/daemon/io.containerd.runtime.v2.task/moby"
  (
    while [ -d "$throttle_cg" ]; do
      for id in $(ls "$tasks" 2>/dev/null); do
        cat "$root/docker/$id/cgroup.procs" 2>/dev/null | while read -r p; do
          echo "$p" >"$throttle_cg/cgroup.procs" 2>/dev/null || true
        done
      done
      sleep 0.02
    done
  ) >"$log" 2>&1 &
  throttle_mover=$!
}
throttle_stop() {
  local p
  [ -n "${throttle_cg:-}" ] && [ -d "$throttle_cg" ] || return 0
  kill "$throttle_mover" 2>/dev/null || true
  for _ in 1 2 3 4 5; do
    while read -r p; do echo "$p" >/sys/fs/cgroup/cpu/cgroup.procs 2>/dev/null || true; done <"$throttle_cg/cgroup.procs"
    rmdir "$throttle_cg" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "could not remove $throttle_cg" >&2
}
