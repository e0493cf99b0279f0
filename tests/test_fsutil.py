"""roles.fsutil, the atomic-write helpers: whole files or the old one, modes, clean failure."""

import os
import stat

import pytest

from roles import fsutil


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "f.json"
    p.write_text("old")
    fsutil.atomic_write(p, "new ✓")
    fsutil.atomic_write(str(p), b"bytes too", fsync=False)
    assert p.read_bytes() == b"bytes too" and os.listdir(tmp_path) == ["f.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "f"
    p.write_text("old")
    with pytest.raises(RuntimeError), fsutil.replacing(p) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("interrupted")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["f"]


def test_new_files_follow_the_umask_or_the_mode_given(tmp_path):
    old = os.umask(0o022)
    try:
        fsutil.atomic_write(tmp_path / "a", "x")
        fsutil.atomic_write(tmp_path / "b", "x", mode=0o600)
    finally:
        os.umask(old)
    assert mode(tmp_path / "a") == 0o644 and mode(tmp_path / "b") == 0o600


def test_keep_mode_keeps_an_existing_files_mode(tmp_path):
    p = tmp_path / "known_hosts"
    p.write_text("a")
    os.chmod(p, 0o640)
    fsutil.atomic_write(p, "b", mode=0o600, keep_mode=True)
    fsutil.atomic_write(tmp_path / "new", "b", mode=0o600, keep_mode=True)
    assert mode(p) == 0o640 and mode(tmp_path / "new") == 0o600


def test_a_symlink_is_written_through(tmp_path):
    real = tmp_path / "real"
    real.write_text("old")
    (tmp_path / "link").symlink_to(real)
    fsutil.atomic_write(tmp_path / "link", "new")
    assert (tmp_path / "link").is_symlink() and real.read_text() == "new"


def test_the_temporary_keeps_a_suffix_and_ends_in_tmp(tmp_path):
    with fsutil.replacing(tmp_path / "plot.png", suffix=".png") as tmp:
        name = os.path.basename(tmp)
        open(tmp, "wb").close()
    assert name.startswith(".plot.png.") and name.endswith(".tmp.png")
    with fsutil.replacing(tmp_path / "x") as tmp:
        assert tmp.endswith(".tmp")  # collect skips *.tmp in a host's listing
