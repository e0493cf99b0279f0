"""A cache miss: compile a program with bcc and turn it into a ``roles.bpfcache`` entry.

The entry holds, per function bcc compiled, its bytecode (``BPF.dump_func``) and the map
each ``BPF_LD_IMM64`` map reference means (by index into ``maps``); per map, its kind as the
kernel reports it (``bpf_map_info``: type, sizes, flags, name) and bcc's key/leaf type
descriptions (so the tables decode as bcc's do); and the module's license. bcc creates the
maps (and, for raw tracepoints, attaches the programs) while compiling; all of it is released
before this returns: the role then loads the entry like any hit.
"""

from __future__ import annotations

import ctypes as ct

from roles import bpfmap
from roles.bpfobj import map_relocs

def _kernel_map(fd: int) -> dict:
    info = bpfmap.map_info(fd)
    return {"type": info["type"], "key_size": info["key_size"], "value_size": info["value_size"],
            "max_entries": info["max_entries"], "flags": info["map_flags"]}


def _tables(b, lib) -> tuple[list[dict], dict[int, int]]:
    """The module's maps (spec per map) and fd -> index."""
    lib.bpf_num_tables.restype = ct.c_ulonglong
    lib.bpf_num_tables.argtypes = [ct.c_void_p]
    lib.bpf_table_name.restype = ct.c_char_p
    lib.bpf_table_name.argtypes = [ct.c_void_p, ct.c_ulonglong]
    maps, by_fd = [], {}
    for i in range(lib.bpf_num_tables(b.module)):
        name = lib.bpf_table_name(b.module, i)
        fd = lib.bpf_table_fd(b.module, name)
        if fd < 0:
            continue
        spec = {"name": name.decode(), **_kernel_map(fd)}
        for side, fn in (("key_desc", lib.bpf_table_key_desc), ("leaf_desc", lib.bpf_table_leaf_desc)):
            desc = fn(b.module, name)
            spec[side] = desc.decode() if desc else ""
        by_fd[fd] = len(maps)
        maps.append(spec)
    return maps, by_fd


def compile_entry(path: str, flags) -> dict:
    """bcc compiles ``path`` with ``flags``; the entry (bytecode as bytes) to store and load."""
    from bcc import BPF
    from bcc.libbcc import lib

    b = BPF(src_file=path.encode(), cflags=list(flags))
    try:
        maps, by_fd = _tables(b, lib)
        progs = {}
        for i in range(lib.bpf_num_functions(b.module)):
            name = lib.bpf_function_name(b.module, i)
            insns = b.dump_func(name)
            relocs = []
            for index, fd in map_relocs(insns):
                if fd not in by_fd:
                    raise ValueError(f"{name.decode()}: instruction {index} names fd {fd}, no map of the module")
                relocs.append([index, by_fd[fd]])
            progs[name.decode()] = {"insns": bytes(insns), "relocs": relocs}
        license_ = lib.bpf_module_license(b.module) or b"GPL"
        return {"source": path, "flags": list(flags), "maps": maps, "progs": progs,
                "license": license_.decode()}
    finally:
        b.cleanup()
