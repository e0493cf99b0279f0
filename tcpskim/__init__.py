"""tcpskim, control half: inventory, SSH fleet, local lab, deploy, network fixes, experiments, reports.

Imports nothing Linux-only at module import time (bcc and pyroute2 do not exist on a
Windows control machine); the host half lives in ``roles/`` and ``bpf/``.
"""

from pathlib import Path

__version__ = "0.1.0"
CHECKOUT = Path(__file__).resolve().parent.parent  # the control checkout (git toplevel)
