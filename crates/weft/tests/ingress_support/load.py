"""Load while the ingress is reconfigured: keep-alive requests, new-connection requests
and an upgraded (WebSocket) connection echoing a message every 50 ms, until STOPFILE
appears. Prints one JSON object with counts and every failure seen.

Usage: load.py ADDR HOST STOPFILE
"""
import http.client
import json
import os
import socket
import sys
import threading
import time

ADDR, HOST, STOP = sys.argv[1], sys.argv[2], sys.argv[3]
counts = {"keepalive_ok": 0, "fresh_ok": 0, "ws_echoes": 0}
failures = []
lock = threading.Lock()


def note(kind, what):
    with lock:
        if len(failures) < 50:
            failures.append(f"{kind}: {what}")
        counts[kind + "_failed"] = counts.get(kind + "_failed", 0) + 1


def keepalive():
    conn = http.client.HTTPConnection(ADDR, 80, timeout=10)
    while not os.path.exists(STOP):
        try:
            conn.request("GET", "/stable", headers={"Host": HOST})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                counts["keepalive_ok"] += 1
            else:
                note("keepalive", r.status)
        except Exception as e:  # noqa: BLE001 - every failure is a result here
            note("keepalive", repr(e))
            conn.close()
            conn = http.client.HTTPConnection(ADDR, 80, timeout=10)


def fresh():
    while not os.path.exists(STOP):
        conn = http.client.HTTPConnection(ADDR, 80, timeout=10)
        try:
            conn.request("GET", "/stable", headers={"Host": HOST, "Connection": "close"})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                counts["fresh_ok"] += 1
            else:
                note("fresh", r.status)
        except Exception as e:  # noqa: BLE001
            note("fresh", repr(e))
        finally:
            conn.close()


def websocket():
    s = socket.create_connection((ADDR, 80), timeout=10)
    s.sendall((f"GET /stable/ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\n"
               "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            note("ws", "closed during the handshake")
            return
        head += chunk
    if not head.startswith(b"HTTP/1.1 101") or b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" not in head:
        note("ws", head.split(b"\r\n")[0].decode(errors="replace"))
        return
    extra = head.split(b"\r\n\r\n", 1)[1]
    i = 0
    while not os.path.exists(STOP):
        msg = f"message {i}\n".encode()
        try:
            s.sendall(msg)
            got = extra
            while len(got) < len(msg):
                chunk = s.recv(4096)
                if not chunk:
                    note("ws", f"closed after {i} echoes")
                    return
                got += chunk
            extra = got[len(msg):]
            if got[: len(msg)] != msg:
                note("ws", f"echo {i} was {got[:len(msg)]!r}")
                return
            counts["ws_echoes"] += 1
        except Exception as e:  # noqa: BLE001
            note("ws", repr(e))
            return
        i += 1
        time.sleep(0.05)
    s.close()


threads = [threading.Thread(target=f) for f in (keepalive, fresh, websocket)]
for t in threads:
    t.start()
for t in threads:
    t.join()
counts["failures"] = failures
print(json.dumps(counts))
