"""``invoke stop``: stop tcpskim roles by pidfile and detach XDP, on every host, any time.

A role killed with SIGKILL cannot detach its own XDP program, and a program attached through
netlink outlives its process and silently swallows the port's traffic: this is the sweep
that removes it. Safe to run any number of times, with nothing running, or before deploy.
``invoke stop`` stops the network guard too (``guard=True``, in the same host command); the
sweeps before and after a run's trials leave a running guard alone (it is no trial's role).
"""

from __future__ import annotations

import re
import shlex

from .fleet import Fleet, HostResult, remote_path
from .inventory import Host


_XDP_SHOWN = re.compile(r"\bxdp(generic|drv|offload|multi)?\b|prog/xdp")  # how `ip link` shows one


def stop_host(fleet: Fleet, host: Host, timeout: float = 5.0, guard: bool = False) -> HostResult:
    if fleet.run(host, f"test -d {remote_path(host.checkout)}/roles", warn=True).exited != 0:
        # No checkout yet, so no roles; still sweep XDP with iproute2 in case something is left.
        # Plain "xdp off" would only clear the driver mode: clear each mode, then read back.
        dev = shlex.quote(host.interface)
        r = fleet.run(host, f"for m in xdpgeneric xdpdrv; do ip link set dev {dev} $m off 2>/dev/null; done; "
                            f"ip -o link show dev {dev}", root=True, warn=True)
        if r.exited or _XDP_SHOWN.search(r.stdout):
            return HostResult(host.name, "failed", f"no checkout, and XDP still on {host.interface}: "
                                                   f"{(r.stderr or r.stdout).strip()[:160]}")
        return HostResult(host.name, "ok", "no checkout: nothing to stop")
    ans = fleet.call(host, "stop", "--interface", host.interface, "--timeout", str(timeout),
                     *(["--guard"] if guard else []), timeout=timeout + 60)
    return ans.result(host.name, data={"detached": bool(ans.data.get("xdp_detached")),
                                       "guard": "stopped" if ans.data.get("guard_stopped") else ""})


def stop(fleet: Fleet, hosts: list[Host], timeout: float = 5.0, guard: bool = True) -> list[HostResult]:
    return fleet.each(hosts, lambda h: stop_host(fleet, h, timeout, guard))
