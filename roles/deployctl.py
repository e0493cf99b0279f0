"""``hostctl deploy``: a host's whole deploy in one call (one SSH round trip from the control side).

The checkout fast-forwards to ``--branch`` of ``--remote`` (it must already pull from there),
then the runtime is checked: python imports bcc and pyroute2, and bcc finds kernel headers
(``netops.headers_shim``). When the pull moved the checkout, the checks re-run under the new
code (the process re-executes itself with ``--after OLD``), so a deploy never checks with the
code it replaced. A fresh clone is the control side's shell before this command runs
(``--after none``).

Importing bcc costs about a second of CPU (more on a Raspberry Pi), so a passed import is
remembered in ``<checkout>/.tcpskim/runtime-check.json`` (written atomically), keyed by what a
package upgrade changes: the dpkg records of python3-bpfcc / python3-pyroute2 / libbpfcc
(their ``/var/lib/dpkg/info/*.list`` stat), the modules' own files, and the interpreter's
version and path. Only when the key changes is bcc imported again (in a child process, so this
one stays small). ``--check`` says what a deploy would change and changes nothing. It runs as
the SSH user (the checkout is the user's); only a missing headers link needs root, and is then
left to a ``headers-shim`` call as root (``needs_root`` in the answer).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from roles import fsutil
from roles.answer import add_check, answer, failure

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(CHECKOUT, ".tcpskim", "runtime-check.json")
DPKG_INFO = "/var/lib/dpkg/info"
PACKAGES = ("python3-bpfcc", "python3-pyroute2", "libbpfcc")
MODULES = ("bcc", "pyroute2")


def _git(*args: str, check: bool = True) -> str:
    r = subprocess.run(["git", "-C", CHECKOUT, *args], capture_output=True, text=True)
    if check and r.returncode:
        tail = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise RuntimeError(f"git {' '.join(args[:2])}: {tail}")
    return r.stdout.strip()


def _stat(path: str | None):
    try:
        st = os.stat(path)
        return [st.st_mtime_ns, st.st_size, st.st_ino]
    except (OSError, TypeError):
        return None


def runtime_key() -> dict:
    """What a package upgrade or another interpreter changes; no module is imported."""
    key = {"python": sys.version, "executable": sys.executable}
    for pkg in PACKAGES:
        key[pkg] = _stat(os.path.join(DPKG_INFO, f"{pkg}.list")) or _stat(os.path.join(DPKG_INFO, f"{pkg}:"
                                                                                       f"{_dpkg_arch()}.list"))
    for mod in MODULES:
        spec = importlib.util.find_spec(mod)  # finds the package, runs none of it
        origin = spec.origin if spec else None
        key[mod] = [origin, _stat(origin)]
    return key


def _dpkg_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def _cached(key: dict) -> bool:
    try:
        with open(CACHE) as f:
            return json.load(f) == key
    except (OSError, ValueError):
        return False


def _remember(key: dict) -> None:
    os.makedirs(os.path.dirname(CACHE), exist_ok=True)
    fsutil.atomic_write(CACHE, json.dumps(key), fsync=False)  # a cache: lost, it is rebuilt


def check_runtime(check: bool) -> str:
    """"cached" or "checked"; raises when python cannot import bcc/pyroute2."""
    key = runtime_key()
    if _cached(key):
        return "cached"
    missing = [m for m in MODULES if key[m][0] is None]
    if not missing:
        r = subprocess.run([sys.executable, "-c", "import " + ", ".join(MODULES)], capture_output=True, text=True)
        if r.returncode:
            missing = [(r.stderr.strip().splitlines() or ["?"])[-1]]
    if missing:
        raise RuntimeError(f"{sys.executable} cannot import bcc/pyroute2 ({', '.join(missing)}); "
                           "run invoke deploy --install-deps")
    if not check:
        _remember(key)
    return "checked"


def update(remote: str, branch: str, check: bool) -> tuple[str, str | None, str]:
    """(action, old, new) of the checkout's fast-forward to ``branch`` of ``remote``."""
    url = _git("config", "--get", "remote.origin.url", check=False)
    if url != remote:
        raise RuntimeError(f"checkout {CHECKOUT} pulls from {url!r}, inventory says {remote!r}")
    old = _git("rev-parse", "HEAD")
    on = _git("symbolic-ref", "-q", "--short", "HEAD", check=False)
    if check:
        tip = _git("ls-remote", "--", "origin", f"refs/heads/{branch}").split("\t")[0]
        if not tip:
            raise RuntimeError(f"origin has no branch {branch!r}")
        return ("would pull" if tip != old or on != branch else "up to date"), old, tip
    if on != branch:
        _git("checkout", "--quiet", branch)
    _git("pull", "--quiet", "--ff-only", "origin", branch)
    new = _git("rev-parse", "HEAD")
    return ("pulled" if new != old else "up to date"), old, new


def deploy(args):
    if args.after is None:
        action, old, new = update(args.remote, args.branch, args.check)
        if new != old and not args.check:  # check with the code just pulled, not this one
            argv = [sys.executable, "-m", "roles.hostctl", "deploy", "--remote", args.remote,
                    "--branch", args.branch, "--after", old]
            sys.stdout.flush()
            os.chdir(CHECKOUT)
            os.execv(sys.executable, argv)
    else:
        old = None if args.after == "none" else args.after
        new = _git("rev-parse", "HEAD")
        action = "cloned" if old is None else "pulled"
    return checks(args, action, old, new)


def checks(args, action: str, old: str | None, new: str):
    from roles import netops

    data = {"action": action, "old": old, "commit": new}
    try:
        data["runtime"] = check_runtime(args.check)
        if not netops._headers_dir().exists() and os.geteuid() != 0:
            # linking the headers needs root: the control side asks for it (headers-shim, once)
            shim = answer({"headers": None, "needs_root": True})
        else:
            shim = netops.headers_shim(args)
    except RuntimeError as exc:
        return failure(str(exc), data)
    data.update(shim["data"])
    moved = old != new
    short = f"{old[:10]}..{new[:10]}" if old and moved else new[:10]
    msg = f"{action} {short}" + (f"; {shim['msg']}" if shim["changed"] else "")
    return answer(data, changed=moved or shim["changed"], msg=msg)


def register(sub) -> None:
    p = sub.add_parser("deploy", help="fast-forward this checkout, then check bcc, pyroute2 and headers")
    p.add_argument("--remote", required=True, help="the URL (or path) the checkout must pull from")
    p.add_argument("--branch", required=True)
    p.add_argument("--after", help="the update is done (old commit, or 'none' after a clone): check only")
    add_check(p)
    p.set_defaults(func=deploy)
