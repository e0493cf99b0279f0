"""Which code the hosts pull (tcpskim.deploy.code_source): decided, or refused, before SSH."""

import pytest

from tcpskim import CHECKOUT, deploy, inventory, localgit


def test_detached_head_without_code_branch_is_a_clear_error(monkeypatch):
    inv = inventory.load(CHECKOUT / "inventory.toml")
    monkeypatch.setattr(localgit, "branch", lambda: "HEAD")  # what git says on a detached HEAD
    with pytest.raises(ValueError, match="detached HEAD.*code.branch"):
        deploy.code_source(inv)


def test_branch_of_the_control_checkout_otherwise(monkeypatch):
    inv = inventory.load(CHECKOUT / "inventory.toml")
    monkeypatch.setattr(localgit, "branch", lambda: "main")
    assert deploy.code_source(inv) == (str(CHECKOUT), "main")
