"""The hardworker's delivery policy on the decision side, the same code in both modes.

``Gate`` sits between the record cutter and the decision step: ``all`` passes everything;
``filter`` applies the stream's predicate (``roles.delivery.Matcher``) to each record in
order, which in the xdp mode re-checks what the kernel chose (a disagreement is counted in
``policy_mismatch`` and must stay 0) and in the tcp mode is the choice itself; ``latest``
keeps only the newest record of each sensor until the next decision tick.

At a tick, ``Latest.take()`` hands over each sensor's newest record not decided yet, with
how many records of that sensor were skipped since the last decision and (from its send
time) how old it is.
"""

from roles import delivery
from roles.record import Record, signal_of


class Latest:
    """Newest record per sensor between decision ticks."""

    def __init__(self):
        self.newest: dict[int, tuple[Record, int]] = {}  # sid -> (record, recv_ns)
        self.decided: dict[int, int] = {}  # sid -> seq of the last decision
        self.skipped = 0
        self.decisions = 0
        self.stale = 0  # ticks on which a sensor had nothing newer

    def offer(self, rec: Record, recv_ns: int) -> None:
        cur = self.newest.get(rec.sensor_id)
        if cur is None or rec.seq > cur[0].seq:
            self.newest[rec.sensor_id] = (rec, recv_ns)

    def take(self):
        """[(record, recv_ns, skipped)] for each sensor with a record newer than its last decision."""
        out = []
        for sid, (rec, recv_ns) in self.newest.items():
            last = self.decided.get(sid)
            if last is not None and rec.seq <= last:
                self.stale += 1
                continue
            skipped = rec.seq - (last + 1 if last is not None else 0)
            self.decided[sid] = rec.seq
            self.skipped += skipped
            self.decisions += 1
            out.append((rec, recv_ns, skipped))
        return out

    def summary(self) -> dict:
        return {"decisions": self.decisions, "skipped": self.skipped, "stale_ticks": self.stale,
                "last_decided": {str(k): v for k, v in sorted(self.decided.items())}}


class Gate:
    """Per-stream predicate state and the counts of what the policy kept back."""

    def __init__(self, policy: delivery.Policy):
        self.policy = policy
        self.latest = Latest() if policy.kind == "latest" else None
        self._matchers = {}
        self.filtered = 0         # records the userspace predicate held back
        self.policy_mismatch = 0  # xdp: records the kernel delivered that the predicate refuses

    def passes(self, stream, rec: Record, kernel_chose: bool = False) -> bool:
        """True when ``rec`` goes to the decision step (latest: to the newest-record buffer).
        ``kernel_chose``: the xdp program delivered it whole, so this only re-checks; records
        of a flow that fell back to full capture are chosen here."""
        p = self.policy
        if p.kind == "all":
            return True
        if p.kind == "latest":
            return True
        m = self._matchers.get(stream)
        if m is None:
            m = self._matchers[stream] = p.matcher()
        if m.match(rec.seq, signal_of(rec.payload)):
            return True
        if kernel_chose:
            self.policy_mismatch += 1
            return True  # delivered anyway: the count says something disagrees
        self.filtered += 1
        return False

    def summary(self) -> dict:
        out = {"deliver": str(self.policy), "filtered_in_userspace": self.filtered,
               "policy_mismatch": self.policy_mismatch}
        if self.latest is not None:
            out["latest"] = self.latest.summary()
        return out
