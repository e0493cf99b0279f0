"""Attaching an XDP program to an interface (or removing it) with one rtnetlink RTM_SETLINK.

What bcc's ``BPF.attach_xdp``/``remove_xdp`` do through libbpf, without bcc: a pre-compiled
program (``roles.bpfobj``) attaches with no bcc import. The attachment is netlink's (it outlives
the process, see ``roles.xdp``), not a bpf_link, so ``ip link set ... xdpgeneric off`` and the
guard see it as before. The kernel's extended ack says why it refused, when it says so.
"""

from __future__ import annotations

import os
import socket
import struct

RTM_SETLINK, NLMSG_ERROR = 19, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ACK_TLVS = 1, 4, 0x200
IFLA_XDP, IFLA_XDP_FD, IFLA_XDP_FLAGS, NLA_F_NESTED = 43, 1, 3, 0x8000
NETLINK_CAP_ACK, NETLINK_EXT_ACK, SOL_NETLINK = 10, 11, 270
NLMSGERR_ATTR_MSG = 1


def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _ext_msg(buf: bytes, off: int, end: int) -> str:
    while off + 4 <= end:
        n, kind = struct.unpack_from("=HH", buf, off)
        if n < 4:
            break
        if kind == NLMSGERR_ATTR_MSG:
            return buf[off + 4:off + n].split(b"\0", 1)[0].decode(errors="replace")
        off += (n + 3) & ~3
    return ""


def set_xdp(ifname: str, prog_fd: int, flags: int) -> None:
    """Attach ``prog_fd`` to ``ifname`` with XDP ``flags`` (mode); ``prog_fd`` -1 removes it.
    Raises OSError with the kernel's reason."""
    index = socket.if_nametoindex(ifname)
    xdp = _nla(IFLA_XDP | NLA_F_NESTED, _nla(IFLA_XDP_FD, struct.pack("=i", prog_fd))
               + (_nla(IFLA_XDP_FLAGS, struct.pack("=I", flags)) if flags else b""))
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0) + xdp
    seq = os.getpid() & 0xFFFF
    msg = struct.pack("=IHHII", 16 + len(body), RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                s.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass
        s.bind((0, 0))
        s.send(msg)
        while True:
            buf = s.recv(65536)
            off = 0
            while off + 16 <= len(buf):
                n, kind, mflags, rseq, _pid = struct.unpack_from("=IHHII", buf, off)
                if kind == NLMSG_ERROR and rseq == seq:
                    err, = struct.unpack_from("=i", buf, off + 16)
                    if err == 0:
                        return
                    why = _ext_msg(buf, off + 36, off + n) if mflags & NLM_F_ACK_TLVS else ""
                    raise OSError(-err, f"{os.strerror(-err)}" + (f" ({why})" if why else ""))
                off += (n + 3) & ~3 if n else len(buf)
