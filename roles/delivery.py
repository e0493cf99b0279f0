"""Delivery policies: what the hardworker is promised, the same in the xdp and tcp modes.

``--deliver`` (run-experiment) or ``experiment.deliver`` (inventory) takes one of::

    all                       every record, in order, none lost or duplicated (the default)
    filter:outside:LO..HI     records whose signal value lies outside [LO, HI]
    filter:deadband:D         records whose signal changed by more than D since the last
                              record delivered from that sensor (its first record always)
    filter:every:N            every Nth record of each sensor (seq % N == 0)
    latest[:HZ]               the hardworker decides HZ times a second (default 10) on the
                              newest record of each sensor, knowing how many it skipped and
                              how old the newest one is

The signal is the record payload's first four bytes (``roles.record.signal``). The logger
stores every record with TCP's guarantees under every policy; the policy only decides what
reaches the hardworker's decision step. In the xdp mode the XDP program evaluates it (it sees
each record exactly once, in order: see bpf/hardworker.c); in the tcp mode the hardworker
reads every byte and applies the same predicate in userspace, so both modes deliver the
same records.

Stdlib only: the control side validates the spec with ``parse`` before any SSH, the host
half builds its matchers and the BPF program's -D constants from the same object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("all", "filter", "latest")
FILTERS = ("outside", "deadband", "every")
SIGNAL_BYTES = 4  # the payload must hold the signal for the value filters
I32 = (-(1 << 31), (1 << 31) - 1)
MAX_LATEST_HZ = 1000
SPEC_HELP = "'all', 'filter:outside:LO..HI', 'filter:deadband:D', 'filter:every:N' or 'latest[:HZ]'"

_INT = r"[+-]?[0-9]+"
_OUTSIDE = re.compile(rf"filter:outside:({_INT})\.\.({_INT})", re.ASCII)
_DEADBAND = re.compile(r"filter:deadband:([0-9]+)", re.ASCII)
_EVERY = re.compile(r"filter:every:([0-9]+)", re.ASCII)
_LATEST = re.compile(r"latest(?::([0-9]+))?", re.ASCII)


class DeliverError(ValueError):
    """A spec that is not one of SPEC_HELP; the message names the spec."""


@dataclass(frozen=True)
class Policy:
    kind: str = "all"          # all | filter | latest
    filter: str = ""           # outside | deadband | every (kind filter)
    lo: int = 0                # outside: [lo, hi] is *not* delivered
    hi: int = 0
    deadband: int = 0          # deadband: deliver when |v - last delivered v| > deadband
    every: int = 1             # every: deliver seq % every == 0
    hz: int = 10               # latest: decisions per second

    def __str__(self) -> str:
        if self.kind == "filter":
            arg = {"outside": f"{self.lo}..{self.hi}", "deadband": f"{self.deadband}",
                   "every": f"{self.every}"}[self.filter]
            return f"filter:{self.filter}:{arg}"
        return f"latest:{self.hz}" if self.kind == "latest" else "all"

    @property
    def needs_signal(self) -> bool:
        return self.kind == "filter" and self.filter in ("outside", "deadband")

    def to_config(self) -> dict:
        """The role config's ``deliver`` value (JSON)."""
        return {"spec": str(self), "kind": self.kind, "filter": self.filter, "lo": self.lo,
                "hi": self.hi, "deadband": self.deadband, "every": self.every, "hz": self.hz}

    def matcher(self) -> "Matcher":
        """A fresh per-stream predicate (a deadband remembers the last delivered value)."""
        return Matcher(self)


def parse(spec: str) -> Policy:
    """``spec`` -> Policy; DeliverError naming the spec and the accepted forms otherwise."""
    if not isinstance(spec, str):
        raise DeliverError(f"{spec!r} is not a string; expected {SPEC_HELP}")
    if spec == "all":
        return Policy()
    if m := _OUTSIDE.fullmatch(spec):
        lo, hi = int(m[1]), int(m[2])
        if not (I32[0] <= lo <= hi <= I32[1]):
            raise DeliverError(f"{spec!r}: needs LO <= HI, both 32-bit signed integers")
        return Policy("filter", "outside", lo=lo, hi=hi)
    if m := _DEADBAND.fullmatch(spec):
        d = int(m[1])
        if not 0 <= d < (1 << 31):
            raise DeliverError(f"{spec!r}: the deadband must be 0..{(1 << 31) - 1}")
        return Policy("filter", "deadband", deadband=d)
    if m := _EVERY.fullmatch(spec):
        n = int(m[1])
        if not 1 <= n <= 1_000_000:
            raise DeliverError(f"{spec!r}: N must be 1..1000000")
        return Policy("filter", "every", every=n)
    if m := _LATEST.fullmatch(spec):
        hz = int(m[1]) if m[1] else 10
        if not 1 <= hz <= MAX_LATEST_HZ:
            raise DeliverError(f"{spec!r}: HZ must be 1..{MAX_LATEST_HZ}")
        return Policy("latest", hz=hz)
    raise DeliverError(f"{spec!r} is not {SPEC_HELP}")


def from_config(cfg: dict | None) -> Policy:
    """The role side: a config's ``deliver`` dict (or None = all) -> Policy, re-validated."""
    return parse(cfg["spec"]) if cfg else Policy()


class Matcher:
    """One stream's predicate, applied in sequence order (both modes see records in order)."""

    __slots__ = ("p", "last")

    def __init__(self, policy: Policy):
        self.p = policy
        self.last = None  # deadband: the value of the last delivered record

    def match(self, seq: int, value: int | None) -> bool:
        p = self.p
        if p.kind != "filter":
            return True
        if p.filter == "every":
            return seq % p.every == 0
        if value is None:  # a payload too short for a signal never matches a value filter
            return False
        if p.filter == "outside":
            return value < p.lo or value > p.hi
        if self.last is None or abs(value - self.last) > p.deadband:
            self.last = value
            return True
        return False


def bpf_defines(policy: Policy) -> dict[str, int]:
    """The XDP program's -D constants for ``policy`` (integers only: see roles/xdp.py)."""
    return {"SKIM_DELIVER": KINDS.index(policy.kind),
            "SKIM_FILTER": FILTERS.index(policy.filter) + 1 if policy.filter else 0,
            "SKIM_LO": policy.lo, "SKIM_HI": policy.hi, "SKIM_DEADBAND": policy.deadband,
            "SKIM_EVERY": policy.every}


def expected(policy: Policy, sent: int) -> int | None:
    """How many of one sensor's records 0..sent-1 the policy delivers (None for latest: that
    depends on when the hardworker decides). A replay of the predicate in order, so the
    control side can check a trial's delivered count without the records."""
    if policy.kind == "all":
        return sent
    if policy.kind == "latest":
        return None
    if policy.filter == "every":
        return (sent + policy.every - 1) // policy.every
    from roles.record import signal  # stdlib-only too; imported late to keep this module light

    m = policy.matcher()
    return sum(m.match(s, signal(s)) for s in range(sent))
