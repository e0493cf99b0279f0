"""Task options: every command-line value parsed and checked before any host is touched.

Invoke hands options over as text (a task whose default is ``None`` takes a string), and
converts typed defaults with ``int()``/``float()`` itself, which would end ``--timeout abc``
in a traceback and let ``nan`` or ``١٠`` through: so every numeric option here has a ``None``
default and is parsed with ``roles.vocab.number`` (ASCII digits only, no nan/inf) and checked
against a limit. A bad option raises ``OptionError``, one line naming the option
(``--timeout: 'abc' is not a number``); tasks.py prints it and exits 2.
"""

from __future__ import annotations

from roles import delivery, vocab

from .inventory import InventoryError


class OptionError(InventoryError):
    """A one-line, user-facing problem with a command-line option."""


# Limits of the options that only the control side has (the shared ones are vocab.LIMITS).
LIMITS = {
    "watch_interval_s": vocab.Limit(0.1, 3_600),
    "watch_misses": vocab.Limit(1, 1_000, int),
    "sensors": vocab.Limit(1, 10_000, int),
    "guard_events": vocab.Limit(0, 50, int),  # the guard's status keeps its last 50 events
}


def _limit(name: str) -> vocab.Limit:
    return LIMITS.get(name) or vocab.LIMITS[name]


def number(value, option: str, limit: str, hi=None):
    """One option as a number inside the limit (``hi`` narrows it, e.g. to the inventory's sensors)."""
    lim = _limit(limit)
    kind = lim.kind
    what = "a whole number" if kind is int else "a number"
    try:
        v = vocab.number(value, kind)
    except vocab.Invalid:
        raise OptionError(f"--{option}: {value!r} is not {what}") from None
    top = lim.hi if hi is None else hi
    if isinstance(v, float) and (v != v or (kind is int and not v.is_integer())):
        raise OptionError(f"--{option}: {value!r} is not {what}")
    if not lim.lo <= v <= top:
        raise OptionError(f"--{option}: {value!r} is out of range {lim.lo:g}..{top:g}")
    return int(v) if kind is int else float(v)


def numbers(text, option: str, limit: str) -> tuple:
    """A comma list of numbers (a sweep), each inside the limit; an empty list is an error."""
    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise OptionError(f"--{option}: {text!r} is empty")
    if not all(items):
        raise OptionError(f"--{option}: {text!r} has an empty item")
    return tuple(number(t, option, limit) for t in items)


def choices(text, option: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A comma list of distinct words from ``allowed``."""
    items = tuple(t.strip() for t in str(text).split(","))
    for t in items:
        if t not in allowed:
            raise OptionError(f"--{option}: {t!r} is not {' or '.join(allowed)}")
    if len(set(items)) != len(items):
        raise OptionError(f"--{option}: {text!r} must list distinct values")
    return items


def rule(value, option: str, validator, **kw):
    """A ``roles.vocab`` rule applied to an option's text; its reason names the option."""
    try:
        return validator(value, **kw)
    except vocab.Invalid as exc:
        raise OptionError(f"--{option}: {value!r} {exc}") from None


def wakeup(text) -> str:
    rule(text, "wakeup", vocab.wakeup)
    return text


def deliver(text) -> str:
    try:
        return str(delivery.parse(text))
    except delivery.DeliverError as exc:
        raise OptionError(f"--deliver: {exc}") from None


def tag(text) -> str:
    if text in (None, ""):
        return ""
    return rule(text, "tag", vocab.token, max_len=40)


def hosts(inv, text):
    """The inventory hosts a ``--hosts`` comma list names (``None``: all of them)."""
    try:
        return inv.select(text)
    except InventoryError as exc:
        raise OptionError(str(exc)) from None
