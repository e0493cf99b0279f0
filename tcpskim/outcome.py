"""What one step on one host comes to, shared by every module that talks to hosts.

``HostError`` is a one-line reason a step failed on a host; ``HostResult`` is one row of a
task's per-host table (ok / changed / failed); ``Answer`` is what a ``roles.hostctl`` command
answered, in the shape of ``roles.answer`` (changed, failed, msg, data). Kept apart from
``fleet`` so that modules ``fleet`` imports (``hostkeys``) can use them without a cycle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

SHAPE = frozenset(("changed", "failed", "msg", "data"))


class HostError(Exception):
    """A one-line reason a step failed on one host."""


@dataclass
class HostResult:
    host: str
    status: str  # "ok" | "changed" | "failed"
    detail: str = ""
    data: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass
class Answer:
    """A hostctl command's answer: the control side reads ``changed`` instead of deriving it."""

    changed: bool = False
    failed: bool = False
    msg: str = ""
    data: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, obj) -> "Answer | None":
        """The shape as printed; a checkout older than the shape printed its data bare (or
        ``{"error": ...}``), read as data that changed nothing. None if not a JSON object."""
        if not isinstance(obj, dict):
            return None
        if SHAPE <= obj.keys() and isinstance(obj["data"], dict):
            return cls(bool(obj["changed"]), bool(obj["failed"]), str(obj["msg"] or ""), obj["data"])
        if "error" in obj:
            return cls(failed=True, msg=str(obj["error"]))
        return cls(data=obj)

    def result(self, host: str, detail: str | None = None, data: dict | None = None) -> HostResult:
        """The table row: changed/ok from the answer itself."""
        status = "failed" if self.failed else "changed" if self.changed else "ok"
        return HostResult(host, status, self.msg if detail is None else detail,
                          self.data if data is None else data)


def read_answer(r, what: str) -> Answer:
    """The Answer in the last stdout line of a hostctl run (an invoke Result: stdout, stderr,
    exited); HostError("hostctl WHAT: msg") if it failed or printed none."""
    out = r.stdout.strip().splitlines()
    try:
        ans = Answer.parse(json.loads(out[-1])) if out else None
    except json.JSONDecodeError:
        ans = None
    if r.exited != 0 or ans is None or ans.failed:
        # exit 0 without a JSON object is a failure too (an old checkout, a stray print)
        msg = ans.msg if ans is not None and ans.failed else None
        if not msg:  # no error of hostctl's own: the last line of what it printed
            msg = (r.stderr.strip().splitlines() or out or [f"exit {r.exited}"])[-1][:300]
        raise HostError(f"hostctl {what}: {msg}")
    return ans
