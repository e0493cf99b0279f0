"""BPF maps as the roles read them, without bcc: what ``bcc.BPF()[name]`` gives, over raw bpf(2).

A pre-compiled program (``roles.bpfobj``) has no bcc module behind it, so its maps are these
tables: ``map_fd``, ``max_entries``, ``Key``/``Leaf`` ctypes types rebuilt from the type
descriptions bcc's compiler wrote (the same decoding as bcc's ``_decode_table_type``), and
the operations the roles use: ``t[key]``, ``t[key] = leaf``, ``items()``, ``clear()``,
``len(t)``. Keys may be ctypes values or ints. A per-CPU map's lookup returns one value per
possible CPU, as bcc's does. Stdlib only.
"""

from __future__ import annotations

import ctypes as ct
import json

from roles.bpfmap import _bpf

MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
HASH, ARRAY, PERCPU_HASH, PERCPU_ARRAY, LRU_HASH, LRU_PERCPU_HASH = 1, 2, 5, 6, 9, 10
PERCPU = (PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH)
ARRAYS = (ARRAY, PERCPU_ARRAY)

_CTYPES = {
    "_Bool": ct.c_bool, "char": ct.c_char, "wchar_t": ct.c_wchar, "unsigned char": ct.c_ubyte,
    "short": ct.c_short, "unsigned short": ct.c_ushort, "int": ct.c_int, "unsigned int": ct.c_uint,
    "long": ct.c_long, "unsigned long": ct.c_ulong, "long long": ct.c_longlong,
    "unsigned long long": ct.c_ulonglong, "float": ct.c_float, "double": ct.c_double,
    "long double": ct.c_longdouble, "__int128": ct.c_int64 * 2, "unsigned __int128": ct.c_uint64 * 2,
}


def decode_type(desc):
    """A ctypes type from bcc's JSON type description (a string, or [name, fields, kind])."""
    if isinstance(desc, str):
        return _CTYPES[desc]
    anon, fields = [], []
    for t in desc[1]:
        if len(t) == 2:
            fields.append((t[0], decode_type(t[1])))
        elif len(t) == 3 and isinstance(t[2], list):
            fields.append((t[0], decode_type(t[1]) * t[2][0]))
        elif len(t) == 3 and isinstance(t[2], int):
            fields.append((t[0], decode_type(t[1]), t[2]))  # a bit field
        elif len(t) == 3 and t[2] in ("union", "struct", "struct_packed"):
            name = t[0] or f"__anon{len(anon)}"
            if not t[0]:
                anon.append(name)
            fields.append((name, decode_type(t)))
        else:
            raise ValueError(f"type description: cannot decode {t!r}")
    kind = desc[2] if len(desc) > 2 else "struct"
    attrs = {"_anonymous_": anon, "_fields_": fields}
    if kind == "struct_packed":
        attrs["_pack_"] = 1
    return type(str(desc[0]), (ct.Union if kind == "union" else ct.Structure,), attrs)


def possible_cpus() -> int:
    """Number of possible CPUs (/sys/devices/system/cpu/possible, e.g. "0-3"): per-CPU values."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


class Table:
    """One map: ``spec`` is the cache entry's map record (type, sizes, key/leaf descriptions)."""

    def __init__(self, map_fd: int, spec: dict):
        self.map_fd, self.ttype, self.name = map_fd, spec["type"], spec["name"]
        self.max_entries = spec["max_entries"]
        self.Key = decode_type(json.loads(spec["key_desc"])) if spec.get("key_desc") else ct.c_int
        self.Leaf = decode_type(json.loads(spec["leaf_desc"])) if spec.get("leaf_desc") else ct.c_ubyte
        self._ncpu = possible_cpus() if self.ttype in PERCPU else 0
        if self._ncpu:  # the kernel pads each CPU's value to 8 bytes
            size = (ct.sizeof(self.Leaf) + 7) // 8 * 8
            self._Value = self.Leaf * self._ncpu if size == ct.sizeof(self.Leaf) else ct.c_ubyte * (size * self._ncpu)

    def _key(self, key):
        return key if isinstance(key, self.Key) else self.Key(key)

    def _op(self, cmd, key, value=None, flags=0):
        k = self._key(key) if key is not None else None
        attr = ct.create_string_buffer(32)
        ct.memmove(attr, ct.byref(ct.c_uint32(self.map_fd)), 4)
        ptrs = (ct.c_uint64 * 3)(ct.addressof(k) if k is not None else 0,
                                 ct.addressof(value) if value is not None else 0, flags)
        ct.memmove(ct.addressof(attr) + 8, ptrs, 24)
        return _bpf(cmd, attr)

    def __getitem__(self, key):
        value = self._Value() if self._ncpu else self.Leaf()
        try:
            self._op(MAP_LOOKUP_ELEM, key, value)
        except OSError as exc:
            raise KeyError(key) from exc
        if not self._ncpu:
            return value
        if self._Value._type_ is self.Leaf:
            return list(value)
        size = len(value) // self._ncpu
        return [self.Leaf.from_buffer_copy(bytes(value[i * size:i * size + ct.sizeof(self.Leaf)]))
                for i in range(self._ncpu)]

    def __setitem__(self, key, leaf):
        if self._ncpu:
            raise NotImplementedError(f"{self.name}: writing a per-CPU map")
        self._op(MAP_UPDATE_ELEM, key, leaf if isinstance(leaf, self.Leaf) else self.Leaf(leaf))

    def __len__(self):
        return self.max_entries

    def keys(self):
        """Every key of a hash map (walked with GET_NEXT_KEY); 0..max_entries-1 of an array."""
        if self.ttype in ARRAYS:
            return [self.Key(i) for i in range(self.max_entries)]
        out, key = [], None
        while True:
            nxt = self.Key()
            try:
                self._op(MAP_GET_NEXT_KEY, key, nxt)  # key None: the first key
            except OSError:  # ENOENT: the last key
                return out
            out.append(nxt)
            key = nxt

    def items(self):
        out = []
        for k in self.keys():
            try:
                out.append((k, self[k]))
            except KeyError:  # deleted meanwhile
                continue
        return out

    def clear(self):
        """A hash map emptied; an array's entries zeroed (per-CPU: on every CPU), as bcc does."""
        if self.ttype not in ARRAYS:
            for k in self.keys():
                try:
                    self._op(MAP_DELETE_ELEM, k)
                except OSError:
                    pass
            return
        zero = self._Value() if self._ncpu else self.Leaf()
        for i in range(self.max_entries):
            self._op(MAP_UPDATE_ELEM, i, zero)
