#!/usr/bin/env python3
"""The `file://` wrapper of the fault-injecting store front: a directory that
mirrors a remote from an S3 endpoint (moto, path-style, unauthenticated
ListObjectsV2 and GET) the way a careless `rsync`/NFS copy would, so agents
that follow `file://<dir>/<remote>` read a directory that misbehaves.

A file store is read with plain file system calls, so faults cannot be
injected per request; they are injected per copy, and every copy is
checked and repaired on a later round (--interval seconds apart):
  stale     `latest` is not updated this round (hosts keep seeing an older head)
  truncate  a new object is first written in place with half its bytes
  flip      a new archive is first written with one byte flipped
  reorder   `latest` is written before the release and archive it names
Every injected fault is one JSON line in --log (same shape as faultproxy.py).

Control: --rates-file holds a JSON object {kind: rate}, re-read every round
(missing or {} = no faults). --stats-file is rewritten every round with
{"rounds": N, "faults": {kind: N}}.

Usage: faultmirror.py --source http://127.0.0.1:PORT/BUCKET --prefix npcnix/remotes/prod
                      --dest DIR/prod [--rates-file F] [--log F] [--stats-file F] [--seed N]
"""

import argparse
import json
import os
import random
import sys
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

KINDS = ("stale", "truncate", "flip", "reorder")
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def list_keys(source, prefix):
    keys, token = [], None
    while True:
        q = {"list-type": "2", "prefix": prefix + "/"}
        if token:
            q["continuation-token"] = token
        with urllib.request.urlopen(f"{source}?{urllib.parse.urlencode(q)}", timeout=30) as r:
            root = ET.fromstring(r.read())
        for c in root.iter(NS + "Contents"):
            keys.append((c.find(NS + "Key").text, c.find(NS + "ETag").text))
        if root.findtext(NS + "IsTruncated") != "true":
            return keys
        token = root.findtext(NS + "NextContinuationToken")


# moto refuses anonymous reads of private objects; it does not check signatures.
DUMMY_SIGV4 = ("AWS4-HMAC-SHA256 Credential=mirror/20240101/us-east-1/s3/aws4_request, "
               "SignedHeaders=host, Signature=00")


def fetch(source, key):
    req = urllib.request.Request(f"{source}/{urllib.parse.quote(key)}", headers={"Authorization": DUMMY_SIGV4})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def write_atomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".mirror-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


class Mirror:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.log = open(a.log, "a", buffering=1) if a.log else None
        self.rounds = 0
        self.counts = {k: 0 for k in KINDS}
        self.good = {}  # relative key -> upstream ETag of what the mirror holds intact
        self.broken = {}  # relative key -> intact bytes still to write

    def rates(self):
        try:
            with open(self.a.rates_file) as f:
                return {k: float(v) for k, v in json.load(f).items() if k in KINDS}
        except (OSError, ValueError, TypeError):
            return {}

    def fault(self, rates, kind, rel, detail=""):
        if self.rng.random() >= rates.get(kind, 0.0):
            return False
        self.counts[kind] += 1
        if self.log:
            self.log.write(json.dumps({"time": round(time.time(), 3), "kind": kind, "method": "COPY",
                                       "path": rel, "detail": detail}) + "\n")
        return True

    def round(self):
        a, rates = self.a, self.rates()
        self.rounds += 1
        # Repair what an earlier round left broken.
        for rel, data in list(self.broken.items()):
            write_atomic(os.path.join(a.dest, rel), data)
            del self.broken[rel]
        listing = [(k[len(a.prefix) + 1:], e) for k, e in list_keys(a.source, a.prefix)]
        new = [(rel, e) for rel, e in listing if self.good.get(rel) != e and rel != "latest"]
        latest = [(rel, e) for rel, e in listing if rel == "latest" and self.good.get(rel) != e]
        order = new + latest
        if latest and new and self.fault(rates, "reorder", "latest", f"before {len(new)} new object(s)"):
            order = latest  # the others follow next round
        for rel, etag in order:
            data = fetch(a.source, f"{a.prefix}/{rel}")
            path = os.path.join(a.dest, rel)
            if rel == "latest" and self.fault(rates, "stale", rel, "not updated this round"):
                continue
            if len(data) > 1 and self.fault(rates, "truncate", rel, f"{len(data) // 2} of {len(data)} bytes"):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:  # in place, like a copy in progress
                    f.write(data[: len(data) // 2])
                self.broken[rel] = data
            elif rel.startswith("archives/") and data and self.fault(rates, "flip", rel):
                i = self.rng.randrange(len(data))
                write_atomic(path, data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
                self.broken[rel] = data
            else:
                write_atomic(path, data)
            self.good[rel] = etag
        if a.stats_file:
            tmp = a.stats_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"rounds": self.rounds, "faults": self.counts, "rates": rates}, f)
            os.rename(tmp, a.stats_file)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="http://host:port/bucket (path-style)")
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--dest", required=True)
    ap.add_argument("--rates-file")
    ap.add_argument("--stats-file")
    ap.add_argument("--log")
    ap.add_argument("--interval", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    a.prefix = a.prefix.strip("/")
    os.makedirs(a.dest, exist_ok=True)
    m = Mirror(a)
    while True:
        try:
            m.round()
        except (OSError, ET.ParseError) as e:
            print(f"faultmirror: round failed (retrying): {e}", file=sys.stderr, flush=True)
        time.sleep(a.interval)


if __name__ == "__main__":
    main()
