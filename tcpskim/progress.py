"""The progress bar of one trial: seconds of the trial so far, records sent and delivered.

Drawn with tqdm on stderr when asked (run-experiment turns it on for an interactive
terminal); ``TrialBar(None, ...)`` is the silent stand-in, so callers never test for it.
"""

from __future__ import annotations

import time


class TrialBar:
    def __init__(self, desc: str | None, end: float):
        """``desc``: the bar's title (the trial id), or None for no bar; ``end``: the planned
        end of the trial (epoch seconds)."""
        self.end = end
        self.bar = None
        if desc is not None:
            from tqdm import tqdm

            self.bar = tqdm(total=round(end - time.time()), desc=desc, unit="s", leave=False,
                            bar_format="{desc} {bar} {n:.0f}/{total:.0f} s{postfix}")

    @property
    def wants_counts(self) -> bool:
        return self.bar is not None

    def tick(self, now: float | None = None):
        if self.bar is not None:
            now = time.time() if now is None else now
            self.bar.n = min(self.bar.total, max(0, round(now - (self.end - self.bar.total))))
            self.bar.refresh()

    def counts(self, sent: int, delivered: int | None):
        """Records sent by all sensors and delivered to the hardworker so far (None: unknown)."""
        if self.bar is not None and (sent or delivered is not None):
            self.bar.set_postfix_str(f"sent {sent} delivered {delivered if delivered is not None else '-'}",
                                     refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
