"""Requests without pause: THREADS threads each send GET PATH to HOST over a new
connection, in turn to each ADDR, until STOPFILE appears or SECONDS pass. Every request
carries a query `wid=RUN-T-N` naming it, so the proxy's access-log line can be matched to
it. Prints one JSON object: {"results": [[id, sent, done, status, pod or error], ...]},
times in seconds since the epoch, status 0 when no response came.

Usage: steady.py RUN HOST PATH SECONDS STOPFILE THREADS ADDR...
"""
import http.client
import json
import os
import sys
import threading
import time

RUN, HOST, PATH, SECONDS, STOP, THREADS = sys.argv[1:7]
ADDRS = sys.argv[7:]
END = time.time() + float(SECONDS)
SEP = "&" if "?" in PATH else "?"
results = []
lock = threading.Lock()


def one(addr, rid):
    conn = http.client.HTTPConnection(addr, 80, timeout=10)
    try:
        conn.request("GET", f"{PATH}{SEP}wid={rid}",
                     headers={"Host": HOST, "Connection": "close"})
        r = conn.getresponse()
        body = r.read()
        pod = ""
        if r.status == 200:
            try:
                v = json.loads(body)
                pod = f"{v.get('namespace')}/{v.get('pod')}"
            except ValueError:
                pod = "not an echo: " + body[:60].decode(errors="replace")
        return r.status, pod
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        return 0, repr(e)
    finally:
        conn.close()


def worker(t):
    n = 0
    while time.time() < END and not os.path.exists(STOP):
        rid = f"{RUN}-{t}-{n}"
        sent = time.time()
        status, pod = one(ADDRS[(t + n) % len(ADDRS)], rid)
        with lock:
            results.append([rid, sent, time.time(), status, pod])
        n += 1


threads = [threading.Thread(target=worker, args=(t,)) for t in range(int(THREADS))]
for th in threads:
    th.start()
for th in threads:
    th.join()
print(json.dumps({"results": results}))
