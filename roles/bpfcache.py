"""Compiled BPF programs kept per host, so a role start loads bytecode instead of running clang.

bcc compiles a program at every ``BPF()`` (about 2 s of CPU here, close to a minute on an
emulated Raspberry Pi). The output only depends on the program's source, the headers it
includes, the ``-D`` flags, the kernel (its headers and struct layouts) and bcc itself, so it
is kept in ``<checkout>/.tcpskim/bpf-cache/<key>.json`` (``$TCPSKIM_BPF_CACHE`` overrides the
folder) under ``key`` = sha256 of all of those plus ``FORMAT`` (this loader's entry layout).
A change of any of them is a new key: it misses, and entries of another kernel, bcc or format
are pruned when a new one is written (at most ``KEEP`` entries stay).

A miss compiles with bcc, dumps per function the bytecode and per map its kind and type
descriptions (``roles.bpfobj`` explains the map references), stores that, and loads it like a
hit: every role runs the same raw-loaded object, whichever way its entry came. An entry that
cannot be read, fails its digest or cannot be loaded is removed and compiled again, never a
crash. ``hostctl precompile`` (``roles.precompile``) fills the cache ahead of a run.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import importlib.util
import json
import logging
import os
import re
import time

from roles import fsutil

log = logging.getLogger("tcpskim.bpfcache")

FORMAT = 1
KEEP = 64
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPF_DIR = os.path.join(CHECKOUT, "bpf")
_INCLUDE = re.compile(rb'^\s*#\s*include\s+"([^"]+)"', re.M)


def cache_dir() -> str:
    return os.environ.get("TCPSKIM_BPF_CACHE") or os.path.join(CHECKOUT, ".tcpskim", "bpf-cache")


def kernel() -> str:
    """The running kernel as its headers and layouts depend on it: release and build string."""
    u = os.uname()
    return f"{u.release} {u.version} {u.machine}"


def bcc_version() -> str:
    """bcc's version, read from its package without importing it (a hit never imports bcc)."""
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.origin:
        return "none"
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", f.read())
    except OSError:
        m = None
    return m.group(1) if m else "unknown"


def sources(path: str) -> list[str]:
    """The program and every local header it includes (``#include "x.h"``, recursively)."""
    out, todo = [], [path]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        with open(p, "rb") as f:
            for inc in _INCLUDE.findall(f.read()):
                cand = os.path.join(os.path.dirname(p), inc.decode())
                if os.path.exists(cand):
                    todo.append(cand)
    return sorted(out)


def env() -> dict:
    """What is not the program but changes its bytecode: kernel, bcc, loader format."""
    return {"kernel": kernel(), "bcc": bcc_version(), "format": FORMAT}


def key(path: str, flags) -> str:
    h = hashlib.sha256(json.dumps({**env(), "flags": list(flags)}, sort_keys=True).encode())
    for p in sources(path):
        with open(p, "rb") as f:
            data = f.read()
        h.update(f"\0{os.path.basename(p)}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _digest(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _entry_path(k: str) -> str:
    return os.path.join(cache_dir(), f"{k}.json")


def lookup(k: str) -> dict | None:
    """The entry of key ``k`` with its bytecode decoded, or None (missing, unreadable, corrupt:
    a corrupt one is removed)."""
    path = _entry_path(k)
    try:
        with open(path) as f:
            entry = json.load(f)
        if entry.get("key") != k or entry.get("format") != FORMAT or entry.get("digest") != _digest(entry):
            raise ValueError("key, format or digest does not match")
        for prog in entry["progs"].values():
            prog["insns"] = base64.b64decode(prog["insns"], validate=True)
        return entry
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("bpf cache entry %s unusable (%s): compiling again", path, exc)
        discard(k)
        return None


def discard(k: str) -> None:
    try:
        os.unlink(_entry_path(k))
    except OSError:
        pass


def store(k: str, entry: dict) -> None:
    """Write the entry (atomically; the folder is made if missing), then prune old ones."""
    body = dict(entry, key=k, format=FORMAT, env=env(), time=time.time(),
                progs={n: dict(p, insns=base64.b64encode(p["insns"]).decode())
                       for n, p in entry["progs"].items()})
    body["digest"] = _digest(body)
    os.makedirs(cache_dir(), mode=0o755, exist_ok=True)
    fsutil.atomic_write(_entry_path(k), json.dumps(body), fsync=False)  # lost: compiled again
    prune(keep=k)


def prune(keep: str | None = None) -> list[str]:
    """Remove entries of another kernel, bcc or format, then the oldest beyond ``KEEP``."""
    now, removed, live = env(), [], []
    for path in glob.glob(os.path.join(cache_dir(), "*.json")):
        k = os.path.basename(path)[:-5]
        try:
            with open(path) as f:
                stale = json.load(f).get("env") != now
        except (OSError, ValueError, AttributeError):
            stale = True
        if stale and k != keep:
            discard(k)
            removed.append(k)
        else:
            live.append((os.path.getmtime(path), k))
    for _, k in sorted(live, reverse=True)[KEEP:]:
        if k != keep:
            discard(k)
            removed.append(k)
    return removed


def program_path(program: str) -> str:
    return program if os.path.isabs(program) else os.path.join(BPF_DIR, program)


def ensure(program: str, flags) -> tuple[str, dict]:
    """("hit" | "compiled", entry) for ``program`` with ``flags``: compiled and stored on a miss."""
    path = program_path(program)
    k = key(path, flags)
    entry = lookup(k)
    if entry is not None:
        return "hit", entry
    from roles.bpfcompile import compile_entry

    entry = compile_entry(path, flags)
    try:
        store(k, entry)
    except OSError as exc:  # a read-only checkout still runs, it just compiles every time
        log.warning("cannot keep the compiled %s in %s: %s", program, cache_dir(), exc)
    return "compiled", entry


def load(program: str, flags, load_as=None):
    """The program loaded (``roles.bpfobj.Object``) from the cache, compiled first on a miss;
    ``load_as``: a program type every function not a raw tracepoint is loaded as at once.

    ``obj.cache`` says "hit" or "compiled", ``obj.setup_s`` the wall time it took. An entry
    the kernel refuses is thrown away and compiled once more; a fresh one refused is an error."""
    from roles.bpfobj import Object

    t0 = time.monotonic()
    how, entry = ensure(program, flags)
    try:
        obj = Object(entry, load_as)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with a cached entry: compile
        if how != "hit":
            raise
        log.warning("cached %s did not load (%s): compiling again", program, str(exc).splitlines()[0])
        discard(key(program_path(program), flags))
        how, entry = ensure(program, flags)
        obj = Object(entry, load_as)
    obj.cache, obj.setup_s = how, time.monotonic() - t0
    return obj
