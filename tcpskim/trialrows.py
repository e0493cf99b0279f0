"""Summary rows as the report and its plots read them: which trials count, in what order, by cell.

Shared by ``tcpskim.report`` (tables) and ``tcpskim.plots`` (PNGs), so both select the same
trials and never disagree about a cell.
"""

from __future__ import annotations

from collections import defaultdict

MODE_ORDER = ("xdp", "tcp", "idle")


def ok(row) -> bool:
    """In the statistics: ok trials, and incomplete ones (their CPU figures are real; flagged)."""
    return row.get("status", "ok") in ("ok", "incomplete")


def mode_key(mode):
    return (MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), str(mode))


def groups(rows, modes=None):
    """{(mode, rate, size): [rows]} in report order (mode, rate, size)."""
    g = defaultdict(list)
    for r in rows:
        if modes is None or r.get("mode") in modes:
            g[(r.get("mode"), r.get("rate_hz"), r.get("size_bytes"))].append(r)
    return dict(sorted(g.items(), key=lambda kv: (mode_key(kv[0][0]), kv[0][1] or 0,
                                                   kv[0][2] or 0)))
