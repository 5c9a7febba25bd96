"""Hostile and malformed HTTP against the ingress proxy, from the lab's external host.

Usage: hostile.py ADDR HOST. Prints one JSON object: case name -> status code seen
(0: the connection closed without a response), plus the slow client's fate.
"""
import json
import socket
import sys
import threading
import time

ADDR, HOST = sys.argv[1], sys.argv[2]


def exchange(raw, timeout=5.0):
    s = socket.create_connection((ADDR, 80), timeout=timeout)
    try:
        s.sendall(raw)
        got = b""
        while b"\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        if not got.startswith(b"HTTP/1."):
            return 0
        return int(got.split(b" ", 2)[1])
    except (ConnectionResetError, BrokenPipeError):
        return 0
    finally:
        s.close()


def req(head, body=b""):
    return head.replace("\n", "\r\n").encode() + body


results = {}
results["normal"] = exchange(req(f"GET / HTTP/1.1\nHost: {HOST}\nConnection: close\n\n"))


def responses(raw, timeout=5.0):
    """How many responses come back before the proxy closes the connection."""
    s = socket.create_connection((ADDR, 80), timeout=timeout)
    got = b""
    try:
        s.sendall(raw)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    finally:
        s.close()
    return got.count(b"HTTP/1.1 ")


# Content-Length and Transfer-Encoding together: a front end honouring the length would
# read the trailing bytes as a second request (a smuggled GET). RFC 9112 6.3: chunked
# wins and the connection closes after the answer, so no second request is ever read.
results["cl_and_te_responses"] = responses(req(
    f"POST /stable HTTP/1.1\nHost: {HOST}\nContent-Length: 6\nTransfer-Encoding: chunked\n\n",
    b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"))
results["two_lengths"] = exchange(req(
    f"POST / HTTP/1.1\nHost: {HOST}\nContent-Length: 4\nContent-Length: 5\n\n", b"abcde"))
results["obs_fold"] = exchange(req(f"GET / HTTP/1.1\nHost: {HOST}\nX-A: 1\n folded\n\n"))
results["bare_cr"] = exchange(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: a\rb\r\n\r\n".encode())
results["te_not_chunked"] = exchange(req(
    f"POST / HTTP/1.1\nHost: {HOST}\nTransfer-Encoding: gzip\n\n", b"abcd"))
results["huge_header"] = exchange(req(
    f"GET / HTTP/1.1\nHost: {HOST}\nX-Big: {'a' * 40000}\n\n"))
results["huge_body_declared"] = exchange(req(
    f"POST / HTTP/1.1\nHost: {HOST}\nContent-Length: {9 << 20}\n\n"))

# A slow client sends half a head and stalls; others are served meanwhile, and the
# proxy closes the slow one after its header timeout.
slow = socket.create_connection((ADDR, 80), timeout=30)
slow.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n".encode())
during = [exchange(req(f"GET / HTTP/1.1\nHost: {HOST}\nConnection: close\n\n")) for _ in range(5)]
results["served_while_slow"] = min(during)
start = time.time()
try:
    got = slow.recv(4096)
    fate = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.") else 0
except (ConnectionResetError, socket.timeout):
    fate = -1
results["slow_client"] = fate
results["slow_closed_after_s"] = round(time.time() - start, 1)
print(json.dumps(results))
