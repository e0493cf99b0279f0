"""doctor's kernel range: a host below the supported kernels fails, a newer one is flagged."""

import pytest

from tcpskim.doctor import SUPPORTED_KERNELS, kernel_range


@pytest.mark.parametrize("release", ["6.1.0-28-arm64", "6.12.20+rpt-rpi-2712", "6.6.51+rpt-rpi-v8",
                                     "6.18.44-fc-v857", "6.12.38+deb13-arm64-16k"])
def test_supported_kernels_pass_without_a_note(release):
    assert kernel_range(release) == (None, None)


@pytest.mark.parametrize("release", ["5.15.0-91-generic", "5.10.0-30-arm64", "4.19.0"])
def test_older_kernels_are_a_problem_naming_the_range(release):
    problem, note = kernel_range(release)
    lo, hi = SUPPORTED_KERNELS
    assert note is None and release in problem and f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]}" in problem


def test_newer_kernels_are_noted_not_refused():
    problem, note = kernel_range("7.0.1-arm64")
    assert problem is None and "newer than the verified" in note


def test_unparsable_release_is_a_problem():
    problem, _ = kernel_range("weird")
    assert "'weird'" in problem
