#!/usr/bin/env python3
"""Polls URL with a new connection every 10 ms until its body (stripped) equals VERSION; prints
that moment as Unix epoch milliseconds (or "timeout" after MAX_SECONDS). For benches/speed.sh:
the first moment the public URL serves the new release."""
import http.client, sys, time
from urllib.parse import urlparse

url, version, max_seconds = urlparse(sys.argv[1]), sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + max_seconds
while time.monotonic() < deadline:
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=2)
    try:
        conn.request("GET", url.path or "/", headers={"Connection": "close"})
        body = conn.getresponse().read().decode(errors="replace").strip()
        if body == version:
            print(int(time.time() * 1000))
            sys.exit(0)
    except Exception:
        pass
    finally:
        conn.close()
    time.sleep(0.01)
print("timeout")
