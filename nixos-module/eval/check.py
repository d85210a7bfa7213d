#!/usr/bin/env python3
"""The NixOS module checks; run through nixos-module/check (which picks the
nixpkgs lib and says which). See that file for what is checked.

Every evaluation runs `nix-instantiate --eval` against the dummy:// store:
no nixpkgs, no network, no daemon, no root.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent  # nixos-module/eval
MODULE = HERE.parent  # nixos-module
REPO = MODULE.parent
TESTS = MODULE / "tests"

failures = 0


def ok(msg):
    print(f"ok    {msg}")


def skip(msg):
    print(f"skip  {msg}")


def fail(msg, detail=""):
    global failures
    failures += 1
    print(f"FAIL  {msg}")
    for line in (detail or "").rstrip().splitlines():
        print(f"      {line}")


def rel(p):
    return str(Path(p).relative_to(REPO))


def nixi(*args):
    return subprocess.run(["nix-instantiate", "--store", "dummy://", *args],
                          capture_output=True, text=True)


def pretty(value):
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def first_error_line(stderr):
    """The first `error: ...` line without the prefix (the rest names files
    and positions, which differ between machines)."""
    for line in stderr.splitlines():
        if line.startswith("error: "):
            return line[len("error: "):]
    return stderr.strip().splitlines()[0] if stderr.strip() else "(no message)"


def evaluate(lib, case):
    r = nixi("--eval", "--strict", "--json", str(HERE / "eval.nix"),
             "--argstr", "lib", lib, "--arg", "case", str(case))
    if r.returncode != 0:
        return None, r.stderr
    return json.loads(r.stdout), None


def compare(expected_path, actual, update):
    """Snapshot comparison; returns a problem string or None."""
    text = pretty(actual)
    if update:
        expected_path.write_text(text)
        return None
    if not expected_path.is_file():
        return f"missing {rel(expected_path)} (run nixos-module/check --update, then review)"
    want = expected_path.read_text()
    if json.loads(want) == actual:
        return None
    import difflib
    diff = difflib.unified_diff(pretty(json.loads(want)).splitlines(), text.splitlines(),
                                rel(expected_path), "actual", lineterm="")
    return f"differs from {rel(expected_path)}:\n" + "\n".join(diff)


# ---------------------------------------------------------------------------
# What must hold for every enabled configuration, whatever the options say.
# The snapshots show everything; these say which parts are load-bearing
# (the agent's lockout inspection, the activation contract, the hardening
# rule in default.nix), so an --update cannot quietly accept a change to
# them.

CONFIG_PATH = "/etc/npcnix/config.json"
HARDENING = {
    "NoNewPrivileges": True,
    "RestrictRealtime": True,
    "LockPersonality": True,
    "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"],
}
# Each would break an activation that runs inside the unit (default.nix).
NEVER = ["ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
         "ProtectControlGroups", "ProtectKernelLogs", "ProtectProc", "ReadOnlyPaths", "ProtectHostname",
         "ProtectClock", "ProtectKernelModules", "RestrictSUIDSGID", "MemoryDenyWriteExecute",
         "RestrictNamespaces", "SystemCallFilter", "CapabilityBoundingSet", "UMask"]


def invariants(r):
    p = []
    sysv, hc = r["system"], r["host_config"]
    unit = sysv["services"].get("npcnix")
    if unit is None:
        return ["no systemd.services.npcnix (the agent's lockout check requires npcnix.service)"]
    sc = unit["serviceConfig"]
    if "multi-user.target" not in unit["wantedBy"]:
        p.append("npcnix.service is not wantedBy multi-user.target (lockout inspection requires it)")
    if not unit["enable"]:
        p.append("npcnix.service is disabled")
    pkgs = [x for x in sysv["system_packages"] if x.endswith("-npcnix")]
    want_exec = f"{pkgs[0] if pkgs else '?'}/bin/npcnix follow --config {CONFIG_PATH} --exit-after-switch"
    if sc.get("ExecStart") != want_exec:
        p.append(f"ExecStart is {sc.get('ExecStart')!r}, expected {want_exec!r} (the package on PATH, the config the module writes)")
    for k, v in {"Type": "simple", "Restart": "on-failure", "RestartForceExitStatus": "75",
                 "KillMode": "mixed"}.items():
        if sc.get(k) != v:
            p.append(f"serviceConfig.{k} is {sc.get(k)!r}, expected {v!r}")
    if unit["restartIfChanged"]:
        p.append("restartIfChanged must be false: an activation must not restart the agent running it")
    if unit["unitConfig"].get("X-StopOnRemoval") is not False:
        p.append("unitConfig.X-StopOnRemoval must be false")
    for k, v in HARDENING.items():
        if sc.get(k) != v:
            p.append(f"hardening: serviceConfig.{k} is {sc.get(k)!r}, expected {v!r}")
    for k in NEVER:
        if k in sc:
            p.append(f"serviceConfig.{k} is set: it would restrict every activation run in this unit")
    env = unit["environment"]
    if env.get("HOME") != "/root":
        p.append("environment.HOME is not /root")
    if "network-online.target" not in unit["after"] or "network-online.target" not in unit["wants"]:
        p.append("not after/wants network-online.target")
    etc = sysv["etc"].get("npcnix/config.json")
    if etc is None or not etc["enable"]:
        p.append("environment.etc.\"npcnix/config.json\" is missing (the agent and lockout inspection read it)")
    if hc is None or hc.get("format") != "npcnix-host-config/v1":
        p.append("host config is missing or has the wrong format")
        return p
    user = hc["fetcher"]["user"]
    u = sysv["users"].get(user)
    if u is None or not u["isSystemUser"] or u["group"] not in sysv["groups"]:
        p.append(f"fetcher.user {user!r} is not a system user with an existing group")
    sd = hc["state_dir"]
    if sd.startswith("/var/lib/"):
        if sc.get("StateDirectory") != sd[len("/var/lib/"):] or sc.get("StateDirectoryMode") != "0700":
            p.append(f"state_dir {sd}: StateDirectory/StateDirectoryMode do not match")
    elif f"d {sd} 0700 root root - -" not in sysv["tmpfiles"]:
        p.append(f"state_dir {sd}: no tmpfiles rule creating it 0700")
    return p


# The witness (witness.nix): a network client with no privilege. What an
# --update must not quietly drop: its own user, the key as a credential
# (never a path on the command line or in the store), the sandbox, the
# timer, and the script's every-log-is-tried contract.
WITNESS_HARDENING = {
    "Type": "oneshot",
    "User": "npcnix-witness",
    "NoNewPrivileges": True,
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": True,
    "PrivateTmp": True,
    "PrivateDevices": True,
    "RestrictAddressFamilies": ["AF_UNIX", "AF_INET", "AF_INET6"],
    "StateDirectoryMode": "0700",
    "UMask": "0077",
}


def witness_invariants(r):
    p = []
    sysv = r["system"]
    unit = sysv["services"]["npcnix-witness"]
    sc = unit["serviceConfig"]
    for k, v in WITNESS_HARDENING.items():
        if sc.get(k) != v:
            p.append(f"npcnix-witness: serviceConfig.{k} is {sc.get(k)!r}, expected {v!r}")
    u = sysv["users"].get("npcnix-witness")
    if u is None or not u["isSystemUser"] or u["group"] not in sysv["groups"]:
        p.append("npcnix-witness: no system user npcnix-witness with an existing group")
    creds = sc.get("LoadCredential", [])
    creds = creds if isinstance(creds, list) else [creds]
    key = [c for c in creds if c.startswith("witness-key:")]
    if len(key) != 1 or not key[0].startswith("witness-key:/") or "/nix/store" in key[0]:
        p.append(f"npcnix-witness: LoadCredential is {creds!r}: the key must be one credential from outside the store")
    script = unit["script"]
    if '--key "$CREDENTIALS_DIRECTORY/witness-key"' not in script:
        p.append("npcnix-witness: the script does not read the key from $CREDENTIALS_DIRECTORY")
    if not re.search(r"\|\| rc=\$\?", script) or not script.rstrip().endswith('exit "$result"'):
        p.append("npcnix-witness: the script must try every log (`|| rc=$?`) and exit with the result")
    if script.count("\nwitness ") < 1:
        p.append("npcnix-witness: the script runs no log")
    m = re.search(r"--state-dir '?([^' \n]+)", script)
    sd = m.group(1) if m else None
    if sd is None:
        p.append("npcnix-witness: the script passes no --state-dir")
    elif sd.startswith("/var/lib/"):
        if sc.get("StateDirectory") != sd[len("/var/lib/"):]:
            p.append(f"npcnix-witness: state dir {sd}: StateDirectory does not match")
    elif (f"d {sd} 0700 npcnix-witness npcnix-witness - -" not in sysv["tmpfiles"]
          or sd not in sc.get("ReadWritePaths", [])):
        p.append(f"npcnix-witness: state dir {sd}: no tmpfiles rule creating it 0700 for the witness, "
                 "or not in ReadWritePaths (ProtectSystem=strict makes it read-only)")
    t = sysv["timers"].get("npcnix-witness")
    if t is None or "timers.target" not in t["wantedBy"] or not t["timerConfig"].get("OnUnitActiveSec"):
        p.append("npcnix-witness: no timer wanted by timers.target with OnUnitActiveSec")
    if unit["wantedBy"]:
        p.append("npcnix-witness: the service is started by its timer only (wantedBy must be empty)")
    return p


# ---------------------------------------------------------------------------


def check_parse():
    print("== parse")
    files = [REPO / "flake.nix"] + sorted(
        f for d in (MODULE, REPO / "terraform") for f in d.rglob("*.nix")
        if ".ci-venv-tf" not in f.parts and ".terraform" not in f.parts)
    for f in files:
        r = nixi("--parse", str(f))
        if r.returncode == 0:
            ok(f"parse {rel(f)}")
        else:
            fail(f"parse {rel(f)}", r.stderr)
    r = nixi("--eval", "--strict", "--json", "-E", f"builtins.attrNames (import {REPO}/flake.nix).inputs")
    if r.returncode == 0 and json.loads(r.stdout) == ["nixpkgs"]:
        ok("flake.nix inputs are exactly [nixpkgs]")
    else:
        fail(f"flake.nix inputs: expected [\"nixpkgs\"], got: {r.stdout or r.stderr}")


# rustc of each NixOS release the flake may pin: the release's default
# `rustc` at branch-off (a later point release on the branch only raises it).
#   nixos-25.11: 1.91.1 (nixpkgs PR #460575, merged before the branch-off;
#                #470993, 1.92.0, after it). Too old for rust-version 1.94.1.
#   nixos-26.05: 1.95.0 (nixpkgs PR #510674, 1.94.1 -> 1.95.0, April 2026,
#                before the 2026-05-24 branch-off; #525279, 1.96.0, opened
#                2026-05-28 on staging, after it).
# Pinning another release means adding it here, after checking its rustc
# against Cargo.toml's rust-version (docs/decisions.md).
RELEASE_RUSTC = {"nixos-25.11": (1, 91, 1), "nixos-26.05": (1, 95, 0)}


def version_tuple(text):
    """Version triple as cargo reads rust-version: 1.94.1 -> (1, 94, 1), 1.94 -> (1, 94, 0)."""
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def show(version):
    return ".".join(str(p) for p in version)


def check_lock():
    """flake.lock pins the one input of flake.nix to a NixOS release whose
    rustc builds the crate, and the docs show that release."""
    print("== flake.lock")
    problems = []
    lock_path = REPO / "flake.lock"
    if not lock_path.is_file():
        fail("flake.lock is missing: nixpkgs would float")
        return
    lock = json.loads(lock_path.read_text())
    r = nixi("--eval", "--strict", "--json", "-E", f"(import {REPO}/flake.nix).inputs.nixpkgs.url")
    url = json.loads(r.stdout) if r.returncode == 0 else None
    m = re.fullmatch(r"github:NixOS/nixpkgs/(nixos-\d\d\.\d\d)", url or "")
    if not m:
        fail(f"flake.nix: inputs.nixpkgs.url is {url!r}, expected github:NixOS/nixpkgs/nixos-YY.MM (a release branch)")
        return
    ref = m.group(1)
    root = lock["nodes"][lock["root"]]
    node = lock["nodes"].get(root.get("inputs", {}).get("nixpkgs", ""), {})
    locked, original = node.get("locked", {}), node.get("original", {})
    if lock.get("version") != 7:
        problems.append(f"lock version {lock.get('version')}, expected 7")
    if sorted(root.get("inputs", {})) != ["nixpkgs"]:
        problems.append(f"root inputs {sorted(root.get('inputs', {}))}, expected [nixpkgs]")
    if original != {"owner": "NixOS", "ref": ref, "repo": "nixpkgs", "type": "github"}:
        problems.append(f"original {original} does not match flake.nix ({url})")
    if (locked.get("type"), locked.get("owner"), locked.get("repo")) != ("github", "NixOS", "nixpkgs"):
        problems.append(f"locked is not github:NixOS/nixpkgs: {locked}")
    if not re.fullmatch(r"[0-9a-f]{40}", locked.get("rev", "")):
        problems.append("locked.rev is not a 40-hex commit")
    if not re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked.get("narHash", "")):
        problems.append("locked.narHash is not a sha256 SRI hash")
    if not isinstance(locked.get("lastModified"), int):
        problems.append("locked.lastModified is missing")
    cargo = (REPO / "Cargo.toml").read_text()
    m_rv = re.search(r'^rust-version\s*=\s*"(\d+\.\d+(?:\.\d+)?)"', cargo, re.M)
    rv = version_tuple(m_rv.group(1)) if m_rv else None
    rustc = RELEASE_RUSTC.get(ref)
    if rustc is None:
        problems.append(f"{ref}: its rustc is not recorded in RELEASE_RUSTC (eval/check.py)")
    elif rv is None:
        problems.append("Cargo.toml has no rust-version")
    elif rv > rustc:
        problems.append(f"Cargo.toml rust-version {show(rv)} is newer than {ref}'s rustc {show(rustc)}")
    for doc in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
        if doc.name == "decisions.md":
            continue
        for other in set(re.findall(r"nixpkgs/(nixos-(?:\d\d\.\d\d|unstable))", doc.read_text())) - {ref}:
            problems.append(f"{rel(doc)} shows nixpkgs/{other}; the flake pins {ref}")
    if problems:
        fail("flake.lock", "\n".join(problems))
    else:
        ok(f"flake.lock pins nixpkgs {ref} at {locked['rev'][:12]} (rustc {show(rustc)} >= rust-version {show(rv)}); docs use {ref}")


def check_cases(lib, update):
    """tests/*.nix: accepted configurations. Returns the host configs."""
    print("== accepted configurations (tests/*.nix): snapshot and invariants")
    configs = {}
    for case in sorted(TESTS.glob("*.nix")):
        name = case.stem
        r, err = evaluate(lib, case)
        if r is None:
            fail(f"{name}: evaluation failed", err)
            continue
        if r["failed_assertions"]:
            fail(f"{name}: assertions failed", "\n".join(r["failed_assertions"]))
            continue
        witness = "npcnix-witness" in r["system"]["services"]
        if r["host_config"] is None:
            # Only a disabled agent may render nothing at all; the witness
            # may run without it.
            defined = [k for k in ("services", "timers", "etc", "users", "groups", "tmpfiles", "system_packages")
                       if r["system"][k]]
            problems = ([] if witness or not defined
                        else [f"no host config, but the module defined {', '.join(defined)}"])
            if witness and ("npcnix" in r["system"]["services"] or r["system"]["etc"]):
                problems.append("no host config, but the agent's unit or /etc entries are defined")
        else:
            problems = invariants(r)
        if witness:
            problems += witness_invariants(r)
        # Checked before the snapshot, so --update cannot write a broken one.
        if problems:
            fail(f"{name}: invariants", "\n".join(problems))
            continue
        snapshot = {k: r[k] for k in ("host_config", "system", "warnings")}
        problem = compare(TESTS / f"{name}.expected.json", snapshot, update)
        if problem:
            fail(f"{name}: {problem}")
            continue
        if r["host_config"] is not None:
            configs[name] = r["host_config"]
        what = ("witness only, its invariants hold" if r["host_config"] is None and witness
                else "disabled, defines nothing" if r["host_config"] is None
                else "invariants hold")
        ok(f"{name}: {what}, {'snapshot written' if update else 'matches snapshot'}")
    return configs


def check_overrides(lib):
    print("== user overrides (tests/override/*.nix): expectations")
    for case in sorted((TESTS / "override").glob("*.nix")):
        name = case.stem
        r, err = evaluate(lib, case)
        if r is None:
            fail(f"override/{name}: evaluation failed", err)
        elif r["failed_assertions"]:
            fail(f"override/{name}: assertions failed", "\n".join(r["failed_assertions"]))
        elif "failed_expectations" not in r:
            fail(f"override/{name}: not of the form {{ module; expect; }}")
        elif r["failed_expectations"]:
            fail(f"override/{name}: expectations failed", "\n".join(r["failed_expectations"]))
        else:
            ok(f"override/{name}: {r['expectation_count']} expectation(s) hold")


def check_rejects(lib, update):
    print("== refused configurations (tests/reject/*.nix)")
    for case in sorted((TESTS / "reject").glob("*.nix")):
        name = case.stem
        expected = case.with_suffix(".expected.json")
        r, err = evaluate(lib, case)
        got = ({"failed_assertions": r["failed_assertions"]} if r is not None
               else {"eval_error": first_error_line(err)})
        if update:
            expected.write_text(json.dumps(got, indent=2) + "\n")
            ok(f"reject/{name}: expected file written")
            continue
        if not expected.is_file():
            fail(f"reject/{name}: missing {rel(expected)} (run with --update, then review)")
            continue
        want = json.loads(expected.read_text())
        if "eval_error" in want:
            if r is not None:
                fail(f"reject/{name}: evaluation succeeded, expected error: {want['eval_error']}")
            elif want["eval_error"] not in err:
                fail(f"reject/{name}: wrong error; expected fragment: {want['eval_error']}", err)
            else:
                ok(f"reject/{name}: refused: {want['eval_error'][:90]}")
        else:
            if r is None:
                fail(f"reject/{name}: evaluation failed instead of failing assertions", err)
            elif not want["failed_assertions"]:
                fail(f"reject/{name}: the expected file lists no assertion: this case must be refused")
            elif r["failed_assertions"] != want["failed_assertions"]:
                fail(f"reject/{name}: failed assertions differ",
                     "expected:\n  " + "\n  ".join(want["failed_assertions"])
                     + "\ngot:\n  " + "\n  ".join(r["failed_assertions"]))
            else:
                ok(f"reject/{name}: refused by {len(r['failed_assertions'])} assertion(s)")


# ---------------------------------------------------------------------------
# docs/nixos.md: the options reference and the minimal host config are
# generated from the module (between the markers), never kept by hand.

DOC = REPO / "docs" / "nixos.md"
OPTIONS_BEGIN = "<!-- options:begin (generated from the module by nixos-module/check --update; do not edit) -->"
OPTIONS_END = "<!-- options:end -->"
MINIMAL_BEGIN = "<!-- minimal-config:begin (generated from tests/minimal.nix by nixos-module/check --update; do not edit) -->"
MINIMAL_END = "<!-- minimal-config:end -->"


def render_value(v):
    if v is None:
        return None
    text = v["text"] if isinstance(v, dict) and "text" in v else json.dumps(v)
    text = text.strip()
    if isinstance(v, dict) and v.get("_type") == "literalMD":
        return text
    if "\n" in text:
        return "\n```nix\n" + text + "\n```"
    return f"`{text}`"


def render_options(entries):
    out = []
    for o in entries:
        out.append(f"#### `{o['name']}`\n")
        if o.get("description"):
            out.append(o["description"].strip() + "\n")
        facts = [f"*Type:* `{o['type']}`"]
        for key in ("default", "example"):
            r = render_value(o.get(key))
            if r is not None:
                facts.append(f"*{key.capitalize()}:* {r}")
        if o.get("readOnly"):
            facts.append("*Read-only.*")
        out.append("\n\n".join(facts) + "\n")
    return "\n".join(out)


def replace_block(text, begin, end, body):
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"markers missing in {rel(DOC)}: {begin} ... {end}")
    return text[: i + len(begin)] + "\n" + body.rstrip("\n") + "\n" + text[j:]


def check_docs(lib, minimal_config, update):
    print("== docs/nixos.md (options reference and minimal host config, generated)")
    r = nixi("--eval", "--strict", "--json", str(HERE / "options-doc.nix"), "--argstr", "lib", lib)
    if r.returncode != 0:
        fail("options-doc.nix: evaluation failed", r.stderr)
        return
    entries = json.loads(r.stdout)
    text = DOC.read_text()
    try:
        new = replace_block(text, OPTIONS_BEGIN, OPTIONS_END, render_options(entries))
        if minimal_config is not None:
            new = replace_block(new, MINIMAL_BEGIN, MINIMAL_END,
                                "```json\n" + json.dumps(minimal_config, indent=2, sort_keys=True) + "\n```")
    except ValueError as e:
        fail(str(e))
        return
    if new == text:
        ok(f"{rel(DOC)}: options reference ({len(entries)} options) and minimal host config are current")
    elif update:
        DOC.write_text(new)
        ok(f"{rel(DOC)}: options reference ({len(entries)} options) and minimal host config written")
    else:
        fail(f"{rel(DOC)} is stale: run nixos-module/check --update (it regenerates the options reference)")


# Host-config fields the agent learns with issue 14 (lockout inspection and
# the reboot policy). A binary without them refuses them as unknown; that
# is reported as a skip naming the field, never as a pass.
PENDING_FIELDS = ("lockout", "reboot")


def check_rust(configs, tmp):
    print("== npcnix config check (the agent accepts what the module writes)")
    binary = os.environ.get("NPCNIX_BIN")
    if not binary:
        skip("NPCNIX_BIN is not set")
        return
    for name, hc in configs.items():
        path = Path(tmp) / f"{name}.json"
        path.write_text(pretty(hc))
        r = subprocess.run([binary, "config", "check", str(path)], capture_output=True, text=True)
        out = (r.stdout or "") + (r.stderr or "")
        if r.returncode == 0:
            ok(f"npcnix config check {name}")
            continue
        pending = [f for f in PENDING_FIELDS if f in hc and re.search(rf"unknown field `{f}`", out)]
        if pending:
            skip(f"npcnix config check {name}: this npcnix does not know `{pending[0]}` yet (issue 14)")
        else:
            fail(f"npcnix config check {name}", out)


def main():
    lib = os.environ["NPCNIX_CHECK_LIB"]
    update = "--update" in sys.argv[1:]
    check_parse()
    check_lock()
    configs = check_cases(lib, update)
    check_overrides(lib)
    check_rejects(lib, update)
    check_docs(lib, configs.get("minimal"), update)
    with tempfile.TemporaryDirectory() as tmp:
        check_rust(configs, tmp)
    print()
    if failures:
        print(f"nixos-module/check: {failures} failure(s)")
        return 1
    print("nixos-module/check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
