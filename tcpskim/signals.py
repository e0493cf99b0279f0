"""Signals during a run: SIGTERM and SIGHUP interrupt it like Ctrl-C, so the cleanup that
stops every role and detaches every XDP program runs whichever way the run was ended (a
closed terminal or SSH session to the control machine, a ``kill``)."""

from __future__ import annotations

import contextlib
import signal
import threading


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interrupting():
    """Within the block SIGTERM/SIGHUP raise KeyboardInterrupt(<signal name>); outside the
    main thread (where Python allows no handlers) it does nothing."""
    if not _main_thread():
        yield
        return

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    sigs = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {s: signal.signal(s, interrupt) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def ignore_hangup():
    """From now on a hang-up no longer interrupts: the terminal may be gone, clean up anyway."""
    if hasattr(signal, "SIGHUP") and _main_thread():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
