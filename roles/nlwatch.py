"""Netlink route events for the guard: one socket subscribed to the link and neighbour groups.

The socket is a plain stdlib ``AF_NETLINK`` socket, so the guard owns blocking and errors
(it sleeps in ``select`` and wakes only when the kernel sends something); pyroute2's rtnl
marshal parses the messages. The kernel reports a receive-queue overflow as ``ENOBUFS`` on the
next ``recv``: some events are gone for good, so :class:`Overflow` tells the caller to reopen
the socket and re-read whole tables.
"""

from __future__ import annotations

import errno
import socket

RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NAMES = {RTM_NEWLINK: "RTM_NEWLINK", RTM_DELLINK: "RTM_DELLINK",
         RTM_NEWNEIGH: "RTM_NEWNEIGH", RTM_DELNEIGH: "RTM_DELNEIGH"}


class Overflow(Exception):
    """The socket's receive queue overflowed (ENOBUFS): events were lost."""


class EventSocket:
    """Link and neighbour events; ``read()`` returns every message queued now (never blocks)."""

    def __init__(self, groups: int = RTMGRP_LINK | RTMGRP_NEIGH, rcvbuf: int | None = None):
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl  # host half only

        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            if rcvbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, groups))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.marshal = MarshalRtnl()

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list:
        """Parsed messages queued now. Raises Overflow after an ENOBUFS."""
        msgs = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return msgs
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise Overflow("netlink receive queue overflowed (ENOBUFS)") from None
                raise
            if not data:
                return msgs
            msgs.extend(m for m in self.marshal.parse(data) if m["header"]["type"] in NAMES)

    def close(self) -> None:
        self.sock.close()
