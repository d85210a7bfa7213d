#!/usr/bin/env python3
"""A fault-injecting store front: an HTTP proxy in front of an upstream
store (moto's S3 endpoint, or any static HTTP mirror of a remote).

Per request, at configurable rates, it
  error     answers 500 or 503 (without asking upstream)
  reset     resets the connection (RST) before answering
  stall     reads the request and answers nothing for --stall-secs, then closes
  truncate  sends the upstream's headers (full Content-Length) and half the body, then closes
  stale     answers a GET of `.../latest` with an older `latest` it saw earlier (and its ETag)
  flip      flips one byte of an `.../archives/...` body
  notmod    answers 304 Not Modified to a GET without If-None-Match

and forwards everything else unchanged (S3 SigV4 headers included: moto
does not check signatures, and the Host header is passed through). With
--authorize, a request without an Authorization header gets a dummy SigV4
one: moto refuses anonymous reads of private objects, and the proxy then
stands for a plain HTTP mirror (a CDN in front of the bucket) that serves
everything. Every
injected fault is one JSON line in --log:
  {"time": 1700000000.123, "kind": "flip", "method": "GET", "path": "/b/k", "detail": "..."}

Control (only from the harness): `PUT /__faultproxy__/rates` with a JSON
object {kind: rate} replaces the rates ({} turns faults off);
`GET /__faultproxy__/stats` returns {"requests": N, "faults": {kind: N}}.

Usage: faultproxy.py --upstream http://127.0.0.1:PORT [--port 0] [--port-file F]
                     [--log faults.jsonl] [--rates error=0.02,reset=0.01,...]
                     [--stall-secs 6] [--seed N] [--authorize] [--latency-ms MS]
"""

import argparse
import http.client
import http.server
import json
import os
import random
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

KINDS = ("error", "reset", "stall", "truncate", "stale", "flip", "notmod")
CONTROL = "/__faultproxy__/"
DUMMY_SIGV4 = ("AWS4-HMAC-SHA256 Credential=mirror/20240101/us-east-1/s3/aws4_request, "
               "SignedHeaders=host, Signature=00")
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "trailer"}


class Faults:
    def __init__(self, rates, log_path, seed, stall_secs):
        self.lock = threading.Lock()
        self.rates = dict(rates)
        self.rng = random.Random(seed)
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.stall_secs = stall_secs
        self.requests = 0
        self.counts = {k: 0 for k in KINDS}
        # path -> list of (etag, body) of `latest` answers seen, oldest first
        self.latest_seen = {}

    def pick(self, method, path, headers):
        """Chooses at most one fault that applies to this request."""
        key = urllib.parse.urlsplit(path).path
        applicable = ["error", "reset", "stall", "truncate"]
        if method == "GET":
            if key.endswith("/latest") and len(self.latest_seen.get(key, [])) > 1:
                applicable.append("stale")
            if "/archives/" in key:
                applicable.append("flip")
            if "if-none-match" not in {h.lower() for h in headers.keys()}:
                applicable.append("notmod")
        with self.lock:
            self.requests += 1
            for kind in applicable:
                rate = self.rates.get(kind, 0.0)
                if rate > 0 and self.rng.random() < rate:
                    return kind
        return None

    def record(self, kind, method, path, detail=""):
        with self.lock:
            self.counts[kind] += 1
            if self.log:
                self.log.write(json.dumps({"time": round(time.time(), 3), "kind": kind, "method": method,
                                           "path": path, "detail": detail}) + "\n")

    def remember_latest(self, key, etag, body):
        with self.lock:
            seen = self.latest_seen.setdefault(key, [])
            if not seen or seen[-1][1] != body:
                seen.append((etag, body))
                del seen[:-16]

    def stale_latest(self, key):
        with self.lock:
            seen = self.latest_seen.get(key, [])
            if len(seen) < 2:
                return None
            return seen[self.rng.randrange(len(seen) - 1)]

    def flip_at(self, n):
        with self.lock:
            return self.rng.randrange(n)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"

    def log_message(self, *_):
        pass

    def do_GET(self):
        self.handle_any("GET")

    def do_HEAD(self):
        self.handle_any("HEAD")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def read_body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def send_raw(self, status, headers, body, include_body=True):
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if include_body and body:
            self.wfile.write(body)

    def reset(self):
        # SO_LINGER {on, 0}: close() sends RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def control(self, method, body):
        f = self.server.faults
        if method == "PUT" and self.path == CONTROL + "rates":
            rates = json.loads(body or b"{}")
            unknown = set(rates) - set(KINDS)
            if unknown:
                return self.send_raw(400, [], f"unknown fault kinds {sorted(unknown)}\n".encode())
            with f.lock:
                f.rates = {k: float(v) for k, v in rates.items()}
            return self.send_raw(200, [], b"ok\n")
        if method == "GET" and self.path == CONTROL + "stats":
            with f.lock:
                out = {"requests": f.requests, "faults": dict(f.counts), "rates": dict(f.rates)}
            return self.send_raw(200, [("content-type", "application/json")], json.dumps(out).encode())
        return self.send_raw(404, [], b"")

    def upstream(self, method, body):
        u = self.server.upstream
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            if self.server.authorize and "authorization" not in {k.lower() for k in headers}:
                headers["Authorization"] = DUMMY_SIGV4
            conn.request(method, self.path, body=body if body or method in ("PUT", "POST") else None,
                         headers=headers)
            r = conn.getresponse()
            data = r.read()
            out_headers = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP | {"content-length"}]
            return r.status, out_headers, data
        finally:
            conn.close()

    def handle_any(self, method):
        body = self.read_body()
        if self.path.startswith(CONTROL):
            return self.control(method, body)
        f = self.server.faults
        if self.server.latency:
            # A distant store's round trip (bench/fleet), before anything.
            time.sleep(self.server.latency)
        key = urllib.parse.urlsplit(self.path).path
        kind = f.pick(method, self.path, self.headers)
        if kind == "error":
            status = 500 if f.flip_at(2) == 0 else 503
            f.record(kind, method, self.path, f"HTTP {status}")
            self.close_connection = True
            return self.send_raw(status, [("connection", "close")], b"injected fault\n")
        if kind == "reset":
            f.record(kind, method, self.path)
            return self.reset()
        if kind == "stall":
            f.record(kind, method, self.path, f"{f.stall_secs}s")
            time.sleep(f.stall_secs)
            self.close_connection = True
            return None
        if kind == "notmod":
            f.record(kind, method, self.path, "304 without If-None-Match")
            return self.send_raw(304, [], b"")
        if kind == "stale":
            old = f.stale_latest(key)
            if old is not None:
                etag, stale = old
                f.record(kind, method, self.path, f"older latest, etag {etag}")
                return self.send_raw(200, [("etag", etag)] if etag else [], stale)
        try:
            status, headers, data = self.upstream(method, body)
        except OSError as e:
            return self.send_raw(502, [], f"upstream: {e}\n".encode())
        if method == "GET" and status == 200 and key.endswith("/latest"):
            etag = next((v for k, v in headers if k.lower() == "etag"), None)
            f.remember_latest(key, etag, data)
        if kind == "flip" and status in (200, 206) and data:
            i = f.flip_at(len(data))
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
            f.record(kind, method, self.path, f"byte {i} of {len(data)}")
        if kind == "truncate" and data and method != "HEAD":
            cut = len(data) // 2
            f.record(kind, method, self.path, f"{cut} of {len(data)} bytes")
            self.send_response_only(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:cut])
            self.wfile.flush()
            return self.reset()
        return self.send_raw(status, headers, data, include_body=method != "HEAD")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def parse_rates(text):
    rates = {}
    for part in filter(None, (text or "").split(",")):
        k, _, v = part.partition("=")
        if k not in KINDS:
            raise SystemExit(f"unknown fault kind {k!r} (kinds: {', '.join(KINDS)})")
        rates[k] = float(v)
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--log")
    ap.add_argument("--rates", default="")
    ap.add_argument("--stall-secs", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--authorize", action="store_true")
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="delay every request this long (a distant store's round trip)")
    a = ap.parse_args()
    server = Server(("127.0.0.1", a.port), Handler)
    server.authorize = a.authorize
    server.latency = a.latency_ms / 1000.0
    server.upstream = urllib.parse.urlsplit(a.upstream)
    server.faults = Faults(parse_rates(a.rates), a.log, a.seed, a.stall_secs)
    port = server.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{port}\n")
        os.rename(tmp, a.port_file)
    print(f"faultproxy on 127.0.0.1:{port} -> {a.upstream}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
