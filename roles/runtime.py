"""Shared plumbing of the role programs (sensor, hardworker, logger).

``run_role(name, body)`` is a role's whole ``main``: it parses ``--config``, loads and
validates the config, logs to stderr (the starter redirects it to the role's log file),
pins the CPUs, writes the pidfile, turns SIGTERM/SIGINT into a stop flag and, on every exit
path, writes the summary JSON and removes the pidfile. The body gets a ``Role`` with the
config, the stop event, ``ready()``, ``wait_go()`` and the ``summary`` dict to fill.
"""

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback

from roles import fsutil, vocab

log = logging.getLogger("tcpskim")

MODES = vocab.TRIAL_MODES
ROLES = vocab.ROLES
DEFAULTS = {
    "interface": "", "tos": 104, "port": 12345, "rate_hz": 100, "size_bytes": 1024,
    "warmup_s": 0.0, "duration_s": 10.0, "tail_s": 0.0, "wakeup": {"policy": "per-record"},
    "xdp_mode": "generic", "ringbuf_bytes": 1 << 20, "capture_bytes": 1448, "work_us": 0,
    "consumer_delay_us": 0, "cpus": [], "connect_timeout_s": 5.0, "close_timeout_s": 10.0,
    "sensor_host": None, "expected_streams": None, "clock_skew_s": {},
    "deliver": None, "chunk_bytes": 0, "trace_idle": True,
}


class ConfigError(ValueError):
    def __init__(self, key, msg):
        super().__init__(f"config key '{key}': {msg}")
        self.key = key


class Stopped(Exception):
    """The stop flag was set (SIGTERM/SIGINT) while waiting."""


def _need(cfg, key, kind, check=None, msg=""):
    if key not in cfg:
        raise ConfigError(key, "missing")
    val = cfg[key]
    if kind is float and isinstance(val, int) and not isinstance(val, bool):
        val = cfg[key] = float(val)
    if not isinstance(val, kind) or isinstance(val, bool) and kind is not bool:
        raise ConfigError(key, f"expected {getattr(kind, '__name__', kind)}, got {val!r}")
    if check is not None and not check(val):
        raise ConfigError(key, msg or f"invalid value {val!r}")
    return val


def _limit(v, name):
    return vocab.limited(name, v)


def _rule(cfg, key, rule, *args):
    """cfg[key] through a shared rule of roles.vocab (the control side checks the same)."""
    if key not in cfg:
        raise ConfigError(key, "missing")
    try:
        cfg[key] = rule(cfg[key], *args)
    except vocab.Invalid as exc:
        raise ConfigError(key, f"{cfg[key]!r} {exc}") from None
    return cfg[key]


def _host(cfg, key, h):
    if not isinstance(h, dict) or "ip" not in h:
        raise ConfigError(key, "expected an object with 'ip' (and 'mac', 'name')")
    try:
        vocab.ipv4_host(h["ip"])
    except vocab.Invalid as exc:
        raise ConfigError(key, f"bad IPv4 address {h.get('ip')!r}: {exc}") from None
    if h.get("mac") is not None:
        try:
            h["mac"] = vocab.mac(h["mac"])
        except vocab.Invalid as exc:
            raise ConfigError(key, f"bad MAC address {h['mac']!r}: {exc}") from None
    return h


def validate(cfg: dict) -> dict:
    """Fill defaults and check every key the roles use; raises ConfigError naming the key."""
    if not isinstance(cfg, dict):
        raise ConfigError("<top>", "the config must be a JSON object")
    for k, v in DEFAULTS.items():
        cfg.setdefault(k, json.loads(json.dumps(v)))
    role = _need(cfg, "role", str, lambda v: v in ROLES, f"one of {ROLES}")
    _need(cfg, "instance", int, lambda v: 0 <= v <= 0xFFFFFFFF)
    for k in ("run_id", "trial"):
        _rule(cfg, k, vocab.token)
    _need(cfg, "mode", str, lambda v: v in MODES, f"one of {MODES}")
    for k in ("state_dir", "out_dir"):
        _need(cfg, k, str, os.path.isabs, "must be an absolute path")
    if cfg["interface"] != "":  # none in tcp mode
        _rule(cfg, "interface", vocab.interface)
    hosts = _need(cfg, "hosts", dict)
    for k in ("hardworker", "logger"):
        if k not in hosts:
            raise ConfigError(f"hosts.{k}", "missing")
        _host(cfg, f"hosts.{k}", hosts[k])
    sensors = hosts.get("sensor", [])
    if not isinstance(sensors, list):
        raise ConfigError("hosts.sensor", "expected a list")
    for i, h in enumerate(sensors):
        _host(cfg, f"hosts.sensor[{i}]", h)
    _rule(cfg, "tos", vocab.tos_marker)
    _rule(cfg, "port", _limit, "marker_port")
    for k in ("rate_hz", "size_bytes", "warmup_s", "duration_s", "tail_s", "capture_bytes", "work_us"):
        _rule(cfg, k, _limit, k)
    for k in ("connect_timeout_s", "close_timeout_s"):
        _need(cfg, k, float, lambda v: 0 <= v <= 86400)
    wk = _need(cfg, "wakeup", dict)
    if wk.get("policy") not in vocab.WAKEUP_POLICIES:
        raise ConfigError("wakeup.policy", f"one of {vocab.WAKEUP_POLICIES}")
    if wk["policy"] == "batch":
        iv, hi = wk.get("interval_ms"), vocab.LIMITS["wakeup_ms"].hi
        if not isinstance(iv, (int, float)) or isinstance(iv, bool) or not 0 < iv <= hi:
            raise ConfigError("wakeup.interval_ms", f"a number in (0, {hi}] for the batch policy")
    if wk["policy"] == "coalesce":
        for k, lim in (("records", "coalesce_records"), ("timeout_us", "coalesce_us")):
            try:
                vocab.limited(lim, wk.get(k))
            except vocab.Invalid as exc:
                raise ConfigError(f"wakeup.{k}", str(exc)) from None
    _need(cfg, "xdp_mode", str, lambda v: v in vocab.XDP_MODES, f"one of {vocab.XDP_MODES}")
    _need(cfg, "trace_idle", bool)
    _rule(cfg, "ringbuf_bytes", vocab.ringbuf_bytes)
    # One ring-buffer record = 8-byte header + skim_rec's header + capture, padded: room for two
    # at least, or every reservation fails and the stream stalls on retransmissions forever.
    two = 2 * (cfg["capture_bytes"] + vocab.RING_RECORD_OVERHEAD)
    if cfg["ringbuf_bytes"] < two:
        raise ConfigError("ringbuf_bytes", f"at least 2 x (capture_bytes + {vocab.RING_RECORD_OVERHEAD}) = {two}")
    _need(cfg, "consumer_delay_us", float, lambda v: 0 <= v <= 1e7)
    _rule(cfg, "cpus", vocab.cpu_list, os.cpu_count() or 1)
    _need(cfg, "clock_skew_s", dict, lambda v: all(
        isinstance(k, str) and isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 86400
        for k, x in v.items()), "{sensor id: seconds}")
    if cfg["expected_streams"] is not None:
        _need(cfg, "expected_streams", int, lambda v: v >= 1)
    if role == "sensor":
        cfg["self_host"] = _sensor_host(cfg, sensors)
    if cfg["mode"] == "xdp" and not cfg["interface"]:
        raise ConfigError("interface", "required in xdp mode")
    if cfg["mode"] == "xdp":
        for k in ("hardworker", "logger"):
            if not hosts[k].get("mac"):
                raise ConfigError(f"hosts.{k}.mac", "required in xdp mode")
    return cfg


def _sensor_host(cfg, sensors):
    """The sensor's own entry in hosts.sensor: by name (``sensor_host``) or the only one."""
    name = cfg["sensor_host"]
    if name is None:
        if len(sensors) != 1:
            raise ConfigError("sensor_host", f"needed: hosts.sensor has {len(sensors)} entries")
        return sensors[0]
    for h in sensors:
        if h.get("name") == name:
            return h
    raise ConfigError("sensor_host", f"no hosts.sensor entry named {name!r}")


def load_config(path: str) -> dict:
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError("<file>", f"{path} is not valid JSON: {exc}") from None
    return validate(cfg)


def write_json_atomic(path: str, obj) -> None:
    """Readers see the old file or the whole new one (roles.fsutil)."""
    fsutil.atomic_write(path, json.dumps(obj, indent=1, sort_keys=True, default=str))


def role_name(cfg) -> str:
    return f"{cfg['role']}-{cfg['instance']}"


def paths(cfg) -> dict:
    name, out = role_name(cfg), cfg["out_dir"]
    return {"pid": os.path.join(cfg["state_dir"], "pids", f"{name}.pid"),
            "ready": os.path.join(out, f"{name}.ready"),
            "log": os.path.join(out, f"{name}.log"),
            "summary": os.path.join(out, f"{name}.summary.json"),
            "go": os.path.join(out, "go.json")}


def read_go(out_dir: str):
    """start_at from go.json, or None while it does not exist (or is being written)."""
    try:
        with open(os.path.join(out_dir, "go.json")) as f:
            return float(json.load(f)["start_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def wait_go(out_dir: str, stop: threading.Event | None = None, timeout: float | None = None,
            poll: float = 0.02) -> float:
    """Block until go.json exists; returns start_at. Raises Stopped / TimeoutError."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        start_at = read_go(out_dir)
        if start_at is not None:
            return start_at
        if stop is not None and stop.is_set():
            raise Stopped("stopped while waiting for go.json")
        if end is not None and time.monotonic() > end:
            raise TimeoutError(f"no go.json in {out_dir} after {timeout} s")
        time.sleep(poll)


def sleep_until(t_wall: float, stop: threading.Event, step: float = 0.2) -> bool:
    """Sleep until wall-clock time t_wall; False if stopped first."""
    while True:
        left = t_wall - time.time()
        if left <= 0:
            return True
        if stop.wait(min(left, step)):
            return False


def set_timer_slack_ns(ns: int = 1000) -> None:
    """Shrink the timer slack (default 50 us) so short sleeps end close to their deadline."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(29, ctypes.c_ulong(ns), 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


class Role:
    def __init__(self, cfg):
        self.cfg = cfg
        self.name = role_name(cfg)
        self.paths = paths(cfg)
        self.stop = threading.Event()
        self.summary = {"role": cfg["role"], "instance": cfg["instance"], "mode": cfg["mode"],
                        "run_id": cfg["run_id"], "trial": cfg["trial"], "pid": os.getpid()}

    def ready(self, **extra) -> None:
        write_json_atomic(self.paths["ready"], {"pid": os.getpid(), "time": time.time(), **extra})
        log.info("ready")

    def wait_go(self) -> float:
        start_at = wait_go(self.cfg["out_dir"], self.stop)
        log.info("go: start_at=%.3f (in %.3f s)", start_at, start_at - time.time())
        return start_at


def _on_signal(role, signum, _frame):
    log.info("signal %s: stopping", signal.Signals(signum).name)
    role.stop.set()


def run_role(role_kind: str, body, argv=None) -> int:
    """main() of a role: body(role) does the work; returns the process exit status."""
    parser = argparse.ArgumentParser(prog=f"roles.{role_kind}")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s {role_kind}[%(process)d] %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config)
        if cfg["role"] != role_kind:
            raise ConfigError("role", f"is {cfg['role']!r}, but this is roles.{role_kind}")
    except ConfigError as exc:
        log.error("bad config: %s", exc)
        return 2
    role = Role(cfg)
    os.makedirs(os.path.dirname(role.paths["pid"]), exist_ok=True)
    os.makedirs(cfg["out_dir"], exist_ok=True)
    status = 1
    try:
        fsutil.atomic_write(role.paths["pid"], f"{os.getpid()}\n")  # `procs wait-ready` polls it
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, f: _on_signal(role, s, f))
        if cfg["cpus"]:
            os.sched_setaffinity(0, cfg["cpus"])
        role.summary["cpus"] = sorted(os.sched_getaffinity(0))
        role.summary["started_at"] = time.time()
        status = body(role) or 0
        role.summary.setdefault("status", "ok" if status == 0 else "failed")
    except Stopped as exc:
        log.info("%s", exc)
        role.summary["status"] = "stopped"
        status = 0
    except BaseException as exc:  # noqa: BLE001 - the summary must say why we died
        log.error("failed: %s\n%s", exc, traceback.format_exc())
        role.summary["status"] = "failed"
        role.summary["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    finally:
        role.summary["stopped_by_signal"] = role.stop.is_set()
        role.summary["ended_at"] = time.time()
        try:
            write_json_atomic(role.paths["summary"], role.summary)
        except OSError as exc:
            log.error("cannot write summary: %s", exc)
        try:
            os.unlink(role.paths["pid"])
        except FileNotFoundError:
            pass
    log.info("exit %d (%s)", status, role.summary.get("status"))
    return status


class Reservoir:
    """Bounded uniform sample of a stream of numbers (Algorithm R) for percentiles."""

    def __init__(self, size: int = 100_000, seed: int = 1):
        import random
        self.size, self.n, self.items = size, 0, []
        self._rand = random.Random(seed).random

    def add(self, x) -> None:
        self.n += 1
        if len(self.items) < self.size:
            self.items.append(x)
        else:
            j = int(self._rand() * self.n)
            if j < self.size:
                self.items[j] = x

    def percentiles(self, *qs) -> list:
        """Nearest-rank percentiles (None when empty)."""
        if not self.items:
            return [None for _ in qs]
        s = sorted(self.items)
        return [s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))] for q in qs]
