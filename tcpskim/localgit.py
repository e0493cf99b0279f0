"""Facts about the control checkout (the git tree tasks.py runs from)."""

from __future__ import annotations

import subprocess

from . import CHECKOUT


def git(*args: str) -> str:
    r = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
    return r.stdout.strip()


def head() -> str:
    return git("rev-parse", "HEAD")


def branch() -> str:
    return git("rev-parse", "--abbrev-ref", "HEAD")


def dirty() -> bool:
    """Uncommitted changes to tracked files (hosts would not get them)."""
    return bool(git("status", "--porcelain", "--untracked-files=no"))


def unpushed(remote_branch: str) -> int | None:
    """Commits on HEAD not on ``remote_branch`` (e.g. origin/main); None when unknown."""
    try:
        return int(git("rev-list", "--count", f"{remote_branch}..HEAD"))
    except RuntimeError:
        return None
