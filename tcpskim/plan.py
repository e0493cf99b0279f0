"""Experiment plans: which trials run, in which order, which role instances each trial
runs (and in which order they start and stop), and how long that takes.

Modes alternate within each repeat and the alternation flips between repeats
(xdp,tcp / tcp,xdp / ...), so slow drift on a shared machine hits both modes alike.
An idle-baseline trial (no traffic) opens every repeat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from roles import delivery

from .inventory import Host, InventoryError, parse_wakeup

STARTUP_S = {"xdp": 9.0, "tcp": 3.0, "idle": 3.0}  # measured here: bcc compiles take seconds
# Start in this order, each ready before the next: the logger must listen before the hardworker
# bounces to it, and both before a sensor connects. Stop in the reverse order.
START_ORDER = ("logger", "hardworker", "sensor")
STOP_ORDER = tuple(reversed(START_ORDER))


@dataclass(frozen=True)
class Trial:
    index: int
    repeat: int
    mode: str  # xdp | tcp | idle
    rate_hz: float
    size_bytes: int

    @property
    def id(self) -> str:
        rate = f"{self.rate_hz:g}".replace(".", "p")
        return f"t{self.index:03d}-{self.mode}-r{rate}-s{self.size_bytes}-n{self.repeat}"


@dataclass(frozen=True)
class RoleInstance:
    """One role a trial runs on one host. ``instance`` is the sensor id (1..) for sensors, else 0."""
    host: Host
    role: str  # sensor | hardworker | logger
    instance: int = 0

    @property
    def name(self) -> str:  # as in the role's files: <role>-<instance>.json, .pid, .summary.json
        return f"{self.role}-{self.instance}"

    @property
    def key(self) -> tuple[str, str, int]:  # (host name, role, instance)
        return self.host.name, self.role, self.instance


def role_instances(trial: Trial, logger: Host, hardworker: Host, sensors: list[Host]) -> list[RoleInstance]:
    """The roles of one trial in START_ORDER; an idle trial runs the hardworker alone."""
    if trial.mode == "idle":
        return [RoleInstance(hardworker, "hardworker")]
    roles = [RoleInstance(s, "sensor", i + 1) for i, s in enumerate(sensors)]
    roles += [RoleInstance(hardworker, "hardworker"), RoleInstance(logger, "logger")]
    return sorted(roles, key=lambda r: START_ORDER.index(r.role))  # stable: sensors keep their ids' order


@dataclass(frozen=True)
class Params:
    rates: tuple[float, ...]
    sizes: tuple[int, ...]
    duration_s: float
    warmup_s: float
    tail_s: float
    modes: tuple[str, ...]
    repeat: int
    wakeup: str
    sensors: int
    idle: bool
    tag: str
    work_us: float = 0.0
    deliver: str = "all"

    def as_dict(self) -> dict:
        return {"rates": list(self.rates), "sizes": list(self.sizes), "duration_s": self.duration_s,
                "warmup_s": self.warmup_s, "tail_s": self.tail_s, "modes": list(self.modes),
                "repeat": self.repeat, "wakeup": self.wakeup, "sensors": self.sensors, "idle": self.idle,
                "tag": self.tag, "work_us": self.work_us, "deliver": self.deliver}


def _list(text, conv, name, lo, hi):
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise InventoryError(f"--{name}: {text!r} is empty")
    out = []
    for t in items:
        try:
            v = conv(t)
        except ValueError:
            raise InventoryError(f"--{name}: {t!r} is not a number") from None
        if not lo <= v <= hi:
            raise InventoryError(f"--{name}: {t!r} is out of range {lo:g}..{hi:g}")
        out.append(v)
    return tuple(out)


def _one(value, conv, name, lo, hi):
    """One task option as a number in lo..hi, or a one-line error naming it."""
    try:
        v = conv(str(value).strip())
    except ValueError:
        what = "a whole number" if conv is int else "a number"
        raise InventoryError(f"--{name}: {value!r} is not {what}") from None
    if not lo <= v <= hi:
        raise InventoryError(f"--{name}: {value!r} is out of range {lo:g}..{hi:g}")
    return v


def params(defaults: dict, *, rate=None, size=None, duration=None, warmup=None, modes=None, repeat=None,
           wakeup=None, sensors=1, idle=None, tag="", max_sensors=1, work_us=None, deliver=None) -> Params:
    """Task options over inventory defaults; every bad option is a one-line error naming it."""
    modes_t = tuple(m.strip() for m in (modes or ",".join(defaults["modes"])).split(",") if m.strip())
    for m in modes_t:
        if m not in ("xdp", "tcp"):
            raise InventoryError(f"--modes: {m!r} is not xdp or tcp")
    if len(set(modes_t)) != len(modes_t) or not modes_t:
        raise InventoryError(f"--modes: {modes!r} must list distinct modes")
    wk = wakeup or defaults["wakeup"]
    try:
        parse_wakeup(wk)
    except InventoryError as exc:
        raise InventoryError(f"--{exc}") from None
    if not re.match(r"^[A-Za-z0-9._-]{0,40}$", tag or ""):
        raise InventoryError(f"--tag: {tag!r} may hold only letters, digits, '.', '_', '-' (max 40)")
    try:
        sensors = _one(sensors, int, "sensors", 1, max_sensors)
    except InventoryError as exc:
        raise InventoryError(f"{exc} (sensor hosts in the inventory)") from None
    dl = deliver or defaults.get("deliver", "all")
    try:
        policy = delivery.parse(dl)
    except delivery.DeliverError as exc:
        raise InventoryError(f"--deliver: {exc}") from None
    rep = _one(repeat if repeat is not None else defaults["repeat"], int, "repeat", 1, 1000)
    dur = _one(duration if duration is not None else defaults["duration"], float, "duration", 0.5, 86400)
    wu = _one(warmup if warmup is not None else defaults["warmup"], float, "warmup", 0, 3600)
    work = _one(work_us if work_us is not None else defaults["work_us"], float, "work-us", 0, 1_000_000)
    return Params(
        rates=_list(rate if rate is not None else defaults["rate"], float, "rate", 0.1, 100_000),
        sizes=_list(size if size is not None else defaults["size"], int, "size", 0, 65_000),
        duration_s=dur, warmup_s=wu, tail_s=float(defaults["tail"]), modes=modes_t, repeat=rep,
        wakeup=wk, sensors=sensors, idle=bool(defaults["idle"] if idle is None else idle), tag=tag or "",
        work_us=work, deliver=str(policy))


def trials(p: Params) -> list[Trial]:
    out = []
    for r in range(p.repeat):
        if p.idle:
            out.append(Trial(len(out), r, "idle", 0.0, 0))
        order = p.modes if r % 2 == 0 else tuple(reversed(p.modes))
        for rate in p.rates:
            for size in p.sizes:
                for mode in order:
                    out.append(Trial(len(out), r, mode, rate, size))
    return out


def estimate_s(p: Params, plan: list[Trial]) -> float:
    per = p.warmup_s + p.duration_s + p.tail_s + 2.0  # + go delay and stopping
    return sum(per + STARTUP_S[t.mode] for t in plan)
