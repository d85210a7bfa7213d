#!/usr/bin/env python3
"""Issue 38 probe (work in progress, not yet part of bench/soak): one
long-running `npcnix follow` (1 s interval), VmRSS sampled every 10 s.
Modes: (none) a file:// store refusing a garbage `latest` on every poll;
`http` the same store over a local HTTP server, alternating the good head
(304s) and garbage every 10 s; `activate` a new release every 10 s.
Usage: bench/probes/rss_probe.py BIN MINUTES [http|activate]"""
import json, os, subprocess, sys, tempfile, time
BIN, MIN = sys.argv[1], float(sys.argv[2])
HTTP = len(sys.argv) > 3 and sys.argv[3] == "http"
ACTIVATE = len(sys.argv) > 3 and sys.argv[3] == "activate"
w = tempfile.mkdtemp(prefix="npcnix-mem-")
env = dict(os.environ, NPCNIX_DATA_DIR=f"{w}/data", NPCNIX_TRUST_DIR=f"{w}/trust")
def sh(*a):
    return subprocess.run(a, check=True, capture_output=True, env=env)
sh(BIN, "keygen", "--unencrypted", "--out", f"{w}/k")
os.makedirs(f"{w}/src")
open(f"{w}/src/flake.nix", "w").write("{ outputs = { self }: { }; }\n")
open(f"{w}/src/flake.lock", "w").write('{"nodes":{"root":{}},"root":"root","version":7}\n')
sh(BIN, "publish", "--remote", f"file://{w}/store/prod", "--key", f"{w}/k.key", "--src", f"{w}/src")
pk = open(f"{w}/k.pub").read().splitlines()[1]
fake = f"{w}/rebuild"; open(fake, "w").write("#!/bin/sh\nexit 0\n"); os.chmod(fake, 0o755)
cfg = {"format": "npcnix-host-config/v1",
       "remote": {"url": f"file://{w}/store/prod", "name": "prod"},
       "configuration": "web", "trusted_keys": [{"public_key": pk, "remotes": ["prod"]}],
       "poll": {"interval_secs": 1, "jitter_secs": 0},
       "lockout": {"inspect": False, "probation_secs": 0}, "state_dir": f"{w}/data"}
json.dump(cfg, open(f"{w}/c.json", "w"))
env["NPCNIX_NIXOS_REBUILD"] = fake
sh(BIN, "follow", "--once", "--config", f"{w}/c.json")
good = open(f"{w}/store/prod/latest").read()
if HTTP:
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    srv = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                           cwd=f"{w}/store", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    cfg["remote"]["url"] = f"http://127.0.0.1:{port}/prod"
    json.dump(cfg, open(f"{w}/c.json", "w"))
open(f"{w}/store/prod/latest", "w").write("garbage\n")
p = subprocess.Popen([BIN, "follow", "--config", f"{w}/c.json"], env=env,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t0 = time.time()
try:
    while time.time() - t0 < MIN * 60:
        time.sleep(10)
        if ACTIVATE:
            # A new release every 10 s: downloads, extractions, activations.
            n = int(time.time() - t0)
            open(f"{w}/src/marker", "w").write(str(n))
            if n < 15:
                open(f"{w}/store/prod/latest", "w").write(good)
            sh(BIN, "publish", "--remote", f"file://{w}/store/prod", "--key", f"{w}/k.key", "--src", f"{w}/src")
        else:
            # Alternate: the good head (unchanged, then 304s) and garbage.
            open(f"{w}/store/prod/latest", "w").write(good if int(time.time() - t0) // 10 % 2 else "garbage\n")
        rss = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1]
        print(f"{time.time()-t0:6.0f} s  RSS {int(rss)/1024:.2f} MiB", flush=True)
finally:
    p.terminate(); p.wait()
