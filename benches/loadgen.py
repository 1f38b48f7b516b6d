#!/usr/bin/env python3
"""Steady, bounded HTTP load for the rollout benchmark.

Two client kinds run side by side against one URL:
  new        a new TCP connection per request (Connection: close)
  keepalive  one persistent connection per thread; a request that fails on a connection that
             was already used is retried once on a fresh one (what browsers do), and only a
             failure of that retry counts
  slow       (SLOW_THREADS > 0) a new connection per request to SLOW_URL, a request the app
             takes ~2 s to answer: any failure is an in-flight request cut by the switch or
             the retire
Runs until STOP_FILE exists or MAX_SECONDS pass, then prints one JSON object on stdout (per kind:
counts, errors by kind, and failed_at: [unix ms, error] of the first 5000 failures).
"""
import http.client, json, os, sys, threading, time
from urllib.parse import urlparse

url = urlparse(sys.argv[1])
stop_file, max_seconds = sys.argv[2], float(sys.argv[3])
threads_per_kind, pause = int(os.environ.get("THREADS", "4")), float(os.environ.get("PAUSE", "0.005"))
deadline = time.monotonic() + max_seconds
lock = threading.Lock()
slow_threads, slow_url = int(os.environ.get("SLOW_THREADS", "0")), urlparse(os.environ.get("SLOW_URL", ""))
kinds = ("new", "keepalive") + (("slow",) if slow_threads > 0 else ())
stats = {k: {"requests": 0, "failures": 0, "retried": 0, "errors": {}, "versions": {}, "first_failures_at": [],
             "failed_at": []} for k in kinds}

def done():
    return os.path.exists(stop_file) or time.monotonic() > deadline

def record(kind, ok, detail, retried=False):
    with lock:
        s = stats[kind]
        s["requests"] += 1
        s["retried"] += retried
        if ok:
            s["versions"][detail] = s["versions"].get(detail, 0) + 1
        else:
            s["failures"] += 1
            s["errors"][detail] = s["errors"].get(detail, 0) + 1
            at = int(time.time() * 1000)
            if len(s["first_failures_at"]) < 20:
                s["first_failures_at"].append(at)
            if len(s["failed_at"]) < 5000:
                s["failed_at"].append([at, detail])

def get(conn, close, path=None):
    conn.request("GET", path or url.path or "/", headers={"Connection": "close"} if close else {})
    r = conn.getresponse()
    body = r.read().decode(errors="replace").strip()
    return r.status, body

def new_client():
    while not done():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
        try:
            status, body = get(conn, True)
            record("new", status == 200, body if status == 200 else f"HTTP {status}")
        except Exception as e:
            record("new", False, type(e).__name__)
        finally:
            conn.close()
        time.sleep(pause)

def slow_client():
    while not done():
        conn = http.client.HTTPConnection(slow_url.hostname, slow_url.port, timeout=10)
        try:
            status, body = get(conn, True, slow_url.path)
            record("slow", status == 200, body if status == 200 else f"HTTP {status}")
        except Exception as e:
            record("slow", False, type(e).__name__)
        finally:
            conn.close()

def keepalive_client():
    conn, used = None, False
    while not done():
        if conn is None:
            conn, used = http.client.HTTPConnection(url.hostname, url.port, timeout=5), False
        try:
            status, body = get(conn, False)
            used = True
            record("keepalive", status == 200, body if status == 200 else f"HTTP {status}")
        except Exception as e:
            conn.close()
            conn = None
            if not used:
                record("keepalive", False, type(e).__name__)
            else:
                # The server closed an idle, already used connection: retry once, fresh.
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
                try:
                    status, body = get(conn, False)
                    used = True
                    record("keepalive", status == 200, body if status == 200 else f"HTTP {status}", retried=True)
                except Exception as e2:
                    conn.close()
                    conn = None
                    record("keepalive", False, type(e2).__name__, retried=True)
        time.sleep(pause)

kinds_run = [new_client] * threads_per_kind + [keepalive_client] * threads_per_kind + [slow_client] * slow_threads
workers = [threading.Thread(target=f) for f in kinds_run]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps(stats))
