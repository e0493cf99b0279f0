"""ARP on the wire for the guard: announcements of its own MAC, and a listener for its peers'.

A PERMANENT neighbour entry is never changed by received ARP (the kernel ignores ARP for it),
so a peer's new MAC is learnt here, from the frames themselves. The listener is an
``AF_PACKET`` socket for ETH_P_ARP on the data-plane interface with a classic BPF filter that
accepts only frames whose sender IP is one of the configured peers: the guard wakes for its
peers' ARP and for nothing else on a busy LAN. Announcements are gratuitous ARP in both forms
(a request and a reply with sender IP = target IP, RFC 5227 section 2.3), broadcast.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
import struct

ETH_P_ARP = 0x0806
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa (28 bytes)
_SPA_OFFSET = 14  # sender IP, from the ARP header (SOCK_DGRAM starts at the network header)


def mac_bytes(mac: str) -> bytes:
    return bytes(int(o, 16) for o in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def frame(op: int, mac: str, ip: str, target_mac: bytes = b"\0" * 6, target_ip: str | None = None) -> bytes:
    """An Ethernet/IPv4 ARP packet (no link header): op 1 = request, 2 = reply."""
    own = ipaddress.IPv4Address(ip).packed
    tpa = ipaddress.IPv4Address(target_ip).packed if target_ip else own
    return _ARP.pack(1, 0x0800, 6, 4, op, mac_bytes(mac), own, target_mac, tpa)


def parse(data: bytes):
    """(op, sender MAC, sender IP, target IP) of an Ethernet/IPv4 ARP packet, or None."""
    if len(data) < _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(data)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
        return None
    return op, mac_text(sha), str(ipaddress.IPv4Address(spa)), str(ipaddress.IPv4Address(tpa))


def _filter(peer_ips) -> ctypes.Array:
    """cBPF: accept when the ARP sender IP is one of peer_ips, else drop."""
    ips = sorted(int(ipaddress.IPv4Address(ip)) for ip in peer_ips)
    n = len(ips)
    prog = [(0x20, 0, 0, _SPA_OFFSET)]  # ld [14]  (BPF_LD|BPF_W|BPF_ABS, loaded in host order)
    prog += [(0x15, n - i, 0, ip) for i, ip in enumerate(ips)]  # jeq #ip -> accept
    prog += [(0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFF)]  # ret #0 (drop) / ret #0xffff (accept)
    return ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))


class Listener:
    """ARP frames from the peers on one interface; ``read()`` never blocks."""

    def __init__(self, ifname: str, peer_ips):
        # protocol 0: receives nothing until bind, so no unfiltered frame gets queued
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        try:
            self.set_peers(peer_ips)
            self.sock.bind((ifname, ETH_P_ARP))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def set_peers(self, peer_ips) -> None:
        self._prog = _filter(peer_ips)  # the kernel copies it; kept only for clarity
        fprog = struct.pack("HP", len(self._prog) // 8, ctypes.addressof(self._prog))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list:
        """Parsed (op, sha, spa, tpa) of every received (not our own outgoing) frame queued now."""
        out = []
        while True:
            try:
                data, addr = self.sock.recvfrom(256)
            except BlockingIOError:
                return out
            except OSError as exc:
                # The interface went down: the kernel reports it once (ENETDOWN) and hooks the
                # socket in again when the interface comes back up.
                if exc.errno == errno.ENETDOWN:
                    return out
                raise
            if addr[2] == PACKET_OUTGOING:
                continue
            p = parse(data)
            if p:
                out.append(p)

    def drops(self) -> int:
        """Frames the kernel dropped for lack of queue room since the last call (resets)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        return struct.unpack("II", raw)[1]

    def close(self) -> None:
        self.sock.close()


def announce(ifname: str, mac: str, ip: str) -> None:
    """Broadcast a gratuitous ARP request and reply: "ip is at mac"."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0) as s:
        for op, tha in ((1, b"\0" * 6), (2, mac_bytes(mac))):
            s.sendto(frame(op, mac, ip, tha), (ifname, ETH_P_ARP, 0, 0, BROADCAST))
