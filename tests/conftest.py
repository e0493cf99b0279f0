"""Shared fixtures: one end-to-end lab (prefix ``tse``, 198.18.0.192/26) for the tests that
drive the real tasks over real SSH, built once per session and always torn down."""

from __future__ import annotations

import pytest
from hypothesis import settings

from helpers import ROOT_LINUX, lab_built, run_invoke, write_lab_inventory

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
    inv = write_lab_inventory(tmp_path_factory.mktemp("e2e"), sensors=2)
    # Roles and XDP programs stopped over SSH first; lab.down runs even if stop hung.
    with lab_built(inv, areas=(), before_down=lambda: run_invoke(inv.path, "stop", timeout=120)):
        yield inv, inv.path


@pytest.fixture(scope="module")
def deployed(e2e_lab):
    """The e2e lab after ``invoke lab.up deploy fix-network`` (the hosts run committed HEAD)."""
    inv, path = e2e_lab
    r = run_invoke(path, "lab.up", "deploy", "fix-network")
    assert r.returncode == 0, r.stdout + r.stderr
    return inv, path
