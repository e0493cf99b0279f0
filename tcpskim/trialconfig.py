"""What the trials of one run share (the testbed's facts) and the JSON config of each role.

A ``Testbed`` is made once per run, after preflight: the fleet, the parameters, the sensors
taking part, every host's facts (MAC, absolute checkout, clock offset) and CPU set, and the
config overrides tests and benchmarks set. ``role_config`` turns it into one role's config
for one trial (the keys are documented in docs/host-half.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roles import delivery

from .inventory import Host, parse_wakeup
from .plan import Params, RoleInstance, Trial


@dataclass
class HostInfo:
    host: Host
    checkout: str  # absolute
    offset_s: float = 0.0  # this host's clock minus the control machine's

    @property
    def state_dir(self) -> str:
        return f"{self.checkout}/.tcpskim"


@dataclass
class Testbed:
    fleet: object  # tcpskim.fleet.Fleet, or a test's fake with the same methods
    p: Params
    sensors: list[Host]
    facts: dict[str, dict]  # host name -> preflight facts ("mac", "checkout", "clock_offset_s", ...)
    cpus: dict[str, list[int]] = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)  # role config keys set for every role
    info: dict[str, HostInfo] = field(default_factory=dict)

    def __post_init__(self):
        for h in self.hosts:
            if h.name not in self.info:
                f = self.facts[h.name]
                self.info[h.name] = HostInfo(h, f["checkout"], f.get("clock_offset_s", 0.0))

    @property
    def inv(self):
        return self.fleet.inv

    @property
    def hosts(self) -> list[Host]:
        return [self.inv.logger, self.inv.hardworker, *self.sensors]


def role_config(bed: Testbed, trial: Trial, run_id: str, ri: RoleInstance) -> dict:
    inv, p, hi = bed.inv, bed.p, bed.info[ri.host.name]

    def ref(h):
        return {"name": h.name, "ip": h.ip, "mac": bed.facts[h.name]["mac"]}

    return {
        "role": ri.role, "instance": ri.instance, "run_id": run_id, "trial": trial.id,
        "mode": trial.mode, "state_dir": hi.state_dir,
        "out_dir": f"{hi.state_dir}/runs/{run_id}/{trial.id}",
        "interface": ri.host.interface,
        "hosts": {"sensor": [ref(s) for s in bed.sensors], "hardworker": ref(inv.hardworker),
                  "logger": ref(inv.logger)},
        "sensor_host": ri.host.name if ri.role == "sensor" else None,
        "expected_streams": len(bed.sensors) if trial.mode != "idle" else None,
        "tos": inv.tos, "port": inv.port,
        "rate_hz": trial.rate_hz or 1.0, "size_bytes": trial.size_bytes,
        "warmup_s": p.warmup_s, "duration_s": p.duration_s, "tail_s": p.tail_s,
        "wakeup": parse_wakeup(p.wakeup),
        "xdp_mode": inv.experiment["xdp_mode"], "ringbuf_bytes": inv.experiment["ringbuf_bytes"],
        "capture_bytes": inv.experiment["capture_bytes"], "work_us": p.work_us,
        "trace_idle": inv.experiment["trace_idle"],
        "deliver": delivery.parse(p.deliver).to_config(),
        "cpus": bed.cpus.get(ri.host.name, []),
        # hardworker clock minus each sensor's clock (both measured against this machine),
        # so the hardworker takes each record's latency on one clock; 0 in the lab
        "clock_skew_s": {str(i + 1): 0.0 if inv.lab else
                         bed.info[inv.hardworker.name].offset_s - bed.info[s.name].offset_s
                         for i, s in enumerate(bed.sensors)} if ri.role == "hardworker" else {},
    } | bed.overrides
