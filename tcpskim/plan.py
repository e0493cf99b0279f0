"""Experiment plans: which trials run, in which order, which role instances each trial
runs (and in which order they start and stop), and how long that takes.

Modes alternate within each repeat and the alternation flips between repeats
(xdp,tcp / tcp,xdp / ...), so slow drift on a shared machine hits both modes alike.
An idle-baseline trial (no traffic) opens every repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import options
from .inventory import MODES, Host

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
    guard: bool = False  # the network guard runs on every host during the run

    def as_dict(self) -> dict:
        return {"rates": list(self.rates), "sizes": list(self.sizes), "duration_s": self.duration_s,
                "warmup_s": self.warmup_s, "tail_s": self.tail_s, "modes": list(self.modes),
                "repeat": self.repeat, "wakeup": self.wakeup, "sensors": self.sensors, "idle": self.idle,
                "tag": self.tag, "work_us": self.work_us, "deliver": self.deliver, "guard": self.guard}


def params(defaults: dict, *, rate=None, size=None, duration=None, warmup=None, modes=None, repeat=None,
           wakeup=None, sensors=None, idle=None, tag="", max_sensors=1, work_us=None, deliver=None,
           guard=None) -> Params:
    """Task options over inventory defaults; every bad option is a one-line error naming it
    (``options.OptionError``, an ``InventoryError``)."""
    def given(value, key):
        return value if value is not None else defaults[key]

    modes_t = options.choices(modes if modes is not None else ",".join(defaults["modes"]), "modes", MODES)
    wk = options.wakeup(given(wakeup, "wakeup"))
    n_sensors = 1 if sensors is None else sensors
    try:
        n_sensors = options.number(n_sensors, "sensors", "sensors", hi=max_sensors)
    except options.OptionError as exc:
        raise options.OptionError(f"{exc} (sensor hosts in the inventory)") from None
    return Params(
        rates=options.numbers(given(rate, "rate"), "rate", "rate_hz"),
        sizes=options.numbers(given(size, "size"), "size", "size_bytes"),
        duration_s=options.number(given(duration, "duration"), "duration", "duration_s"),
        warmup_s=options.number(given(warmup, "warmup"), "warmup", "warmup_s"),
        tail_s=float(defaults["tail"]), modes=modes_t,
        repeat=options.number(given(repeat, "repeat"), "repeat", "repeat"),
        wakeup=wk, sensors=n_sensors, idle=bool(defaults["idle"] if idle is None else idle),
        tag=options.tag(tag), work_us=options.number(given(work_us, "work_us"), "work-us", "work_us"),
        deliver=options.deliver(deliver if deliver is not None else defaults.get("deliver", "all")),
        guard=bool(defaults.get("guard", False) if guard is None else guard))


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
