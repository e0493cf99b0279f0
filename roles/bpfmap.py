"""The XDP programs' address map (``skim_addrs``), read and written with raw bpf(2) calls.

The MACs an XDP program writes into frames can change at run time (a replaced board, Wi-Fi
MAC randomisation, ``ip link set address``), so they live in a small BPF array read per
packet, not in ``-D`` constants. Each entry is ``struct skim_addr`` (bpf/skim.h): the IPv4
address (network order) whose MAC it holds, the MAC, two bytes of padding. The role fills it
at load; the guard, a separate process without bcc, finds the program attached to its
interface by id, the map among the program's maps by name, and rewrites every entry whose
address it knows a newer MAC for. A packet may read an entry while it is rewritten and go out
with a torn MAC: it is lost on the wire, never ACKed, and the sensor's TCP retransmits it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import socket
import struct

MAP_NAME = "skim_addrs"
ADDR = struct.Struct("4s6s2x")  # struct skim_addr
_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "armv6l": 386, "i686": 357}
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 1, 2, 13, 14, 15
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(f"bpf syscall number unknown for {platform.machine()}")
    r = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return r


def _fd_by_id(cmd: int, obj_id: int) -> int:
    return _bpf(cmd, ctypes.create_string_buffer(struct.pack("=III", obj_id, 0, 0), 16))


def _info(fd: int, size: int, fill: bytes = b"") -> bytes:
    buf = ctypes.create_string_buffer(fill.ljust(size, b"\0"), size)
    attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, size, ctypes.addressof(buf)), 16)
    _bpf(OBJ_GET_INFO_BY_FD, attr)
    return buf.raw


def prog_map_ids(prog_fd: int) -> list[int]:
    """The ids of the maps a program uses (struct bpf_prog_info: nr_map_ids @52, map_ids @56)."""
    n = struct.unpack_from("=I", _info(prog_fd, 64), 52)[0]
    ids = (ctypes.c_uint32 * max(n, 1))()
    fill = bytearray(64)
    struct.pack_into("=IQ", fill, 52, n, ctypes.addressof(ids))
    _info(prog_fd, 64, bytes(fill))
    return list(ids)[:n]


def map_info(map_fd: int) -> dict:
    """struct bpf_map_info: type @0, key_size @8, value_size @12, max_entries @16, map_flags @20,
    name[16] @24."""
    raw = _info(map_fd, 40)
    mtype, _id, key, value, entries, flags = struct.unpack_from("=IIIIII", raw, 0)
    return {"type": mtype, "key_size": key, "value_size": value, "max_entries": entries,
            "map_flags": flags, "name": raw[24:40].split(b"\0", 1)[0].decode(errors="replace")}


def _elem(cmd: int, map_fd: int, key: int, value: ctypes.Array) -> None:
    k = ctypes.c_uint32(key)
    attr = ctypes.create_string_buffer(struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(k),
                                                   ctypes.addressof(value), 0), 32)
    _bpf(cmd, attr)


def read_addrs(map_fd: int, entries: int) -> list[tuple[str, str]]:
    out = []
    for slot in range(entries):
        v = ctypes.create_string_buffer(ADDR.size)
        _elem(MAP_LOOKUP_ELEM, map_fd, slot, v)
        ip, mac = ADDR.unpack(v.raw)
        out.append((socket.inet_ntoa(ip), ":".join(f"{b:02x}" for b in mac)))
    return out


def write_addr(map_fd: int, slot: int, ip: str, mac: str) -> None:
    value = ADDR.pack(socket.inet_aton(ip), bytes(int(o, 16) for o in mac.split(":")))
    _elem(MAP_UPDATE_ELEM, map_fd, slot, ctypes.create_string_buffer(value, ADDR.size))


def fill(map_fd: int, addrs: list[tuple[str, str]]) -> None:
    """The role's initial entries: slot i = addrs[i] (ip, mac)."""
    for slot, (ip, mac) in enumerate(addrs):
        write_addr(map_fd, slot, ip, mac)


@contextlib.contextmanager
def _addr_map(prog_id: int):
    """The fd and info of program ``prog_id``'s address map, or (None, None): not ours."""
    prog_fd = _fd_by_id(PROG_GET_FD_BY_ID, prog_id)
    try:
        for map_id in prog_map_ids(prog_fd):
            map_fd = _fd_by_id(MAP_GET_FD_BY_ID, map_id)
            try:
                info = map_info(map_fd)
                if info["name"] == MAP_NAME and info["value_size"] == ADDR.size:
                    yield map_fd, info
                    return
            finally:
                os.close(map_fd)
        yield None, None
    finally:
        os.close(prog_fd)


def prog_addrs(prog_id: int) -> list[tuple[str, str]] | None:
    """The (ip, mac) slots of program ``prog_id``'s address map, or None (not ours)."""
    with _addr_map(prog_id) as (map_fd, info):
        return None if map_fd is None else read_addrs(map_fd, info["max_entries"])


def sync_prog(prog_id: int, macs: dict[str, str]) -> list[dict] | None:
    """Rewrite the address map of program ``prog_id`` where ``macs`` (ip -> mac) knows better.
    Returns the changes made, or None when the program has no such map (not ours)."""
    with _addr_map(prog_id) as (map_fd, info):
        if map_fd is None:
            return None
        changes = []
        for slot, (ip, mac) in enumerate(read_addrs(map_fd, info["max_entries"])):
            want = macs.get(ip)
            if want and want != mac:
                write_addr(map_fd, slot, ip, want)
                changes.append({"slot": slot, "ip": ip, "old": mac, "mac": want})
        return changes
