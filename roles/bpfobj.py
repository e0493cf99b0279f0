"""A pre-compiled BPF object loaded with raw bpf(2) calls: no clang, no bcc at load time.

``roles.bpfcache`` keeps what bcc's compiler produced for a program (per function: the
bytecode; per map: type, sizes, flags, name, key/leaf type descriptions; the license). Its
bytecode names maps by fd in ``BPF_LD_IMM64`` instructions (``src_reg`` BPF_PSEUDO_MAP_FD or
BPF_PSEUDO_MAP_VALUE); the entry records, per such instruction, which map it means. Loading:
``BPF_MAP_CREATE`` every map (same name, so the guard still finds ``skim_addrs``), patch each
recorded instruction's ``imm`` with the new fd, ``BPF_PROG_LOAD`` on demand (``load_func``, as
bcc does), and attach every ``raw_tracepoint__<tp>`` function at once (bcc's auto-attach).

``Object`` offers what the roles used of ``bcc.BPF``: ``obj[name]`` tables (``roles.bpftable``),
``load_func(name, type).fd``, ``funcs``, ``attach/detach_raw_tracepoint``, ``ksym``, ``cleanup``.
Programs load without BTF: the verifier checks the same instructions either way.
"""

from __future__ import annotations

import bisect
import ctypes as ct
import os
import struct

from roles.bpfmap import _bpf
from roles.bpftable import Table

MAP_CREATE, PROG_LOAD, RAW_TRACEPOINT_OPEN = 0, 5, 17
LD_IMM64, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE = 0x18, 1, 2
RAW_TP_PREFIX = b"raw_tracepoint__"
_INSN = struct.Struct("<BBhi")
_LOG_SIZE = 1 << 20


def map_relocs(insns: bytes) -> list[tuple[int, int]]:
    """[(instruction index, fd)] of every map reference; other pseudo loads are refused."""
    out, i, n = [], 0, len(insns) // 8
    while i < n:
        code, regs, _off, imm = _INSN.unpack_from(insns, i * 8)
        if code == LD_IMM64:
            src = regs >> 4
            if src in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE):
                out.append((i, imm))
            elif src:
                raise ValueError(f"instruction {i}: ld_imm64 with src_reg {src} cannot be cached")
            i += 2
            continue
        i += 1
    return out


def _name16(name: str) -> bytes:
    return name.encode()[:15].ljust(16, b"\0")


def create_map(spec: dict) -> int:
    attr = ct.create_string_buffer(struct.pack(
        "=IIIIIII16s", spec["type"], spec["key_size"], spec["value_size"], spec["max_entries"],
        spec["flags"], 0, 0, _name16(spec["name"])), 128)
    try:
        return _bpf(MAP_CREATE, attr)
    except OSError as exc:
        raise OSError(exc.errno, f"creating map {spec['name']}: {exc.strerror}") from None


def load_prog(name: str, prog_type: int, insns: bytes, license_: bytes) -> int:
    """BPF_PROG_LOAD; on a rejection, again with the verifier's log, which the error carries."""
    code = ct.create_string_buffer(insns, len(insns))
    lic = ct.create_string_buffer(license_)
    for level in (0, 1):
        log = ct.create_string_buffer(_LOG_SIZE if level else 1)
        attr = ct.create_string_buffer(struct.pack(
            "=IIQQIIQII16s", prog_type, len(insns) // 8, ct.addressof(code), ct.addressof(lic),
            level, _LOG_SIZE if level else 0, ct.addressof(log) if level else 0, 0, 0,
            _name16(name)), 128)
        try:
            return _bpf(PROG_LOAD, attr)
        except OSError as exc:
            err = exc
    tail = log.value.decode(errors="replace").strip().splitlines()[-12:]
    raise OSError(err.errno, f"loading {name}: {os.strerror(err.errno)}\n" + "\n".join(tail))


class Function:
    def __init__(self, name: bytes, fd: int):
        self.name, self.fd = name, fd


class Object:
    """The maps created and the raw tracepoints attached; ``entry``: a ``roles.bpfcache`` entry;
    ``load_as``: the type every other function is loaded as now (else on ``load_func``)."""

    XDP, RAW_TRACEPOINT = 6, 17

    def __init__(self, entry: dict, load_as: int | None = None):
        self.funcs, self.tables, self._tps, self._fds = {}, {}, {}, []
        self._progs, self._license = entry["progs"], entry["license"].encode()
        self._ksyms = None
        try:
            for spec in entry["maps"]:
                fd = create_map(spec)
                self._fds.append(fd)
                self.tables[spec["name"].encode()] = Table(fd, spec)
            for name in self._progs:
                if name.encode().startswith(RAW_TP_PREFIX):
                    self.attach_raw_tracepoint(tp=name.encode()[len(RAW_TP_PREFIX):], fn_name=name)
                elif load_as is not None:
                    self.load_func(name, load_as)
        except BaseException:
            self.cleanup()
            raise

    def __getitem__(self, name):
        return self.tables[name.encode() if isinstance(name, str) else name]

    def _insns(self, name: str) -> bytes:
        prog = self._progs[name]
        code = bytearray(prog["insns"])
        for index, map_index in prog["relocs"]:
            _INSN.pack_into(code, index * 8, *_INSN.unpack_from(code, index * 8)[:3],
                            self._fds[map_index])
        return bytes(code)

    def load_func(self, func_name, prog_type) -> Function:
        name = func_name.decode() if isinstance(func_name, bytes) else func_name
        key = name.encode()
        if key not in self.funcs:
            if name not in self._progs:
                raise KeyError(f"no program {name!r} in this object")
            fd = load_prog(name, prog_type, self._insns(name), self._license)
            self.funcs[key] = Function(key, fd)
        return self.funcs[key]

    def attach_raw_tracepoint(self, tp, fn_name):
        tp = tp.encode() if isinstance(tp, str) else tp
        fn = self.load_func(fn_name, self.RAW_TRACEPOINT)
        name = ct.create_string_buffer(tp)
        attr = ct.create_string_buffer(struct.pack("=QI", ct.addressof(name), fn.fd), 16)
        try:
            self._tps[tp] = _bpf(RAW_TRACEPOINT_OPEN, attr)
        except OSError as exc:
            raise OSError(exc.errno, f"attaching raw tracepoint {tp.decode()}: {exc.strerror}") from None

    def detach_raw_tracepoint(self, tp):
        fd = self._tps.pop(tp.encode() if isinstance(tp, str) else tp, None)
        if fd is not None:
            os.close(fd)

    def ksym(self, addr: int) -> bytes:
        """The kernel symbol at or below ``addr`` (/proc/kallsyms), as bcc's ``BPF.ksym``."""
        if self._ksyms is None:
            syms = []
            with open("/proc/kallsyms") as f:
                for line in f:
                    a, _t, name = line.split()[:3]
                    if int(a, 16):
                        syms.append((int(a, 16), name))
            syms.sort()
            self._ksyms = ([a for a, _ in syms], [n for _, n in syms])
        i = bisect.bisect_right(self._ksyms[0], addr) - 1
        if i < 0:
            raise KeyError(hex(addr))
        return self._ksyms[1][i].encode()

    def cleanup(self):
        """Close every fd (tracepoints detach, programs and maps go once nothing holds them)."""
        for fd in [*self._tps.values(), *(f.fd for f in self.funcs.values()), *self._fds]:
            try:
                os.close(fd)
            except OSError:
                pass
        self._tps, self.funcs, self._fds = {}, {}, []
