"""Shared fixtures: one end-to-end lab (prefix ``tse``, 198.18.0.192/26) for the tests that
drive the real tasks over real SSH, built once per session and always torn down."""

from __future__ import annotations

import pytest
from hypothesis import settings

from helpers import ROOT_LINUX, lab_inventory_text, run_invoke

# Property tests check outcomes, not speed: no per-example deadline on a shared, noisy machine.
settings.register_profile("tcpskim", deadline=None)
settings.load_profile("tcpskim")


@pytest.fixture(scope="session")
def e2e_lab(tmp_path_factory):
    """The e2e lab's inventory; yields (inventory, path). Tests bring the lab up themselves
    (``deployed`` or a task); whatever they built is torn down even on failure, and a lab
    left behind by a killed earlier session is removed first."""
    if not ROOT_LINUX:
        pytest.skip("the lab end-to-end tests need Linux and root")
    from tcpskim import inventory, lab

    d = tmp_path_factory.mktemp("e2e")
    path = d / "inventory.toml"
    path.write_text(lab_inventory_text(d / "state", sensors=2))
    inv = inventory.load(path)
    lab.down(inv, log=lambda *_: None)
    try:
        yield inv, path
    finally:
        try:
            run_invoke(path, "stop", timeout=120)  # roles and XDP programs, over SSH
        finally:
            lab.down(inv, log=lambda *_: None)  # even if stop hung or the lab is half-built


@pytest.fixture(scope="module")
def deployed(e2e_lab):
    """The e2e lab after ``invoke lab.up deploy fix-network`` (the hosts run committed HEAD)."""
    inv, path = e2e_lab
    r = run_invoke(path, "lab.up", "deploy", "fix-network")
    assert r.returncode == 0, r.stdout + r.stderr
    return inv, path
