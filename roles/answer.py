"""The one shape every ``roles.hostctl`` command answers in, as Ansible modules do.

``{"changed": bool, "failed": bool, "msg": str, "data": {...}}``: ``changed`` says the host is
no longer as it was (or, under ``--check``, would not be), ``failed`` that the command could not
do its job (``msg`` says why), ``data`` what the control side reads. Read-only commands return
a plain dict, wrapped here with ``changed`` false. Stdlib only: the host half imports it.
"""

from __future__ import annotations

KEYS = frozenset(("changed", "failed", "msg", "data"))


class Answer(dict):
    """A command's answer already in the shape (a dict, so it prints as JSON as it is)."""


def answer(data: dict | None = None, *, changed: bool = False, msg: str = "", failed: bool = False) -> Answer:
    return Answer(changed=bool(changed), failed=bool(failed), msg=str(msg), data=dict(data or {}))


def failure(msg: str, data: dict | None = None) -> Answer:
    return answer(data, failed=True, msg=msg)


def shape(result) -> Answer:
    """Any command's return value as an Answer: an Answer as it is, a dict or None as data."""
    if isinstance(result, Answer):
        return result
    return answer(result if isinstance(result, dict) else {} if result is None else {"value": result})


def add_check(parser) -> None:
    """``--check`` on a command that changes state: report what it would change, change nothing."""
    parser.add_argument("--check", action="store_true",
                        help="report what would change, change nothing")
