"""When a per-record figure is resolved, and what it would take when it is not.

The rule of the reports: never print a ratio or a saving from a mean <= 0 or from a 95 % CI
that spans 0. Print instead

    not resolved: ±X µs per record; about N repeats (or an M s window) would resolve it

with X the CI's half-width, N the repeats whose CI would exclude 0 at the observed spread
(Student t, so N is found by iteration), and M the window that would do the same with the
present repeats, taking the spread of a per-record figure to shrink as 1/sqrt(records), i.e.
as 1/sqrt(window). With a mean <= 0 the scale is the spread itself (a true CPU cost is > 0:
the figure is noise), so N and M say when a cost of one standard error would show.
"""

from __future__ import annotations

import math

from .stats import _clean, mean_ci, t_quantile


def resolution(values, window_s: float | None = None, level: float = 0.95) -> dict:
    """{"resolved", "mean", "lo", "hi", "n", "half", "repeats", "window_s", "text"}."""
    xs = _clean(values)
    m, lo, hi, n = mean_ci(xs, level)
    out = {"mean": m, "lo": lo, "hi": hi, "n": n, "half": None, "repeats": None,
           "window_s": None, "resolved": bool(m is not None and m > 0 and lo is not None and lo > 0)}
    if out["resolved"]:
        out["half"] = (hi - lo) / 2
        out["text"] = None
        return out
    if n < 2:
        out["text"] = (f"not resolved: {n} trial{'s' if n != 1 else ''}, no interval; "
                       "at least 3 repeats are needed")
        return out
    half = (hi - lo) / 2
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))
    scale = m if m > 0 else max(sd / math.sqrt(n), 1e-12)  # see the module docstring
    need = _repeats(sd, scale, level)
    out.update(half=half, repeats=need)
    text = f"not resolved: ±{half:.1f} µs per record; about {need} repeats"
    if window_s:
        # same n, longer window: sd scales as 1/sqrt(window); need t(n-1) sd' / sqrt(n) < scale
        t = t_quantile(level, n - 1)
        factor = (t * sd / math.sqrt(n) / scale) ** 2
        out["window_s"] = math.ceil(window_s * max(factor, 1.0))
        text += f" (or a {out['window_s']} s window)"
    out["text"] = text + " would resolve it"
    return out


def _repeats(sd: float, scale: float, level: float) -> int:
    """Smallest N with t(N-1) * sd / sqrt(N) < scale (the CI then excludes 0)."""
    if sd == 0:
        return 2
    n = 2
    while n < 100_000 and t_quantile(level, n - 1) * sd / math.sqrt(n) >= scale:
        n = max(n + 1, int(n * 1.2))
    return n


def ratio_allowed(xdp_values, tcp_values, window_s=None) -> tuple[bool, str | None]:
    """(True, None) when both modes' figures are resolved; else (False, the reason text).

    A single positive trial per mode has no interval to span 0: its ratio is shown, without
    a CI (the table says so), as before; a mean <= 0 never is."""
    for mode, vals in (("xdp", xdp_values), ("tcp", tcp_values)):
        r = resolution(vals, window_s)
        if r["n"] == 1 and r["mean"] > 0:
            continue
        if not r["resolved"]:
            return False, f"{mode} {r['text']}"
    return True, None
