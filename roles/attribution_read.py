"""Reads a closed attribution window out of the BPF maps (bpf/attribution.c) into plain data.

The state map gives what each CPU was doing when the window closed: when no event came
after the close, the last stretch (last event -> close) and a busy period still open are
added here, as the BPF side would have on its next event.
"""

import ctypes
import struct

from roles.attribution import (CLASSES, COUNTERS, KINDS, NIRQ, NSLOT, NSOFT, NVEC, S_IDLE_EXIT,
                               S_IRQ, S_SOFT, S_VEC, irq_names)
from roles.ringbuf import RingReader

_PERIOD = struct.Struct("=QQIIII%dQ" % len(CLASSES))
K_SOFTIRQ_NET = (2, 3)
_FIXED = {0: ("unknown", 0), 1: ("idle", 0), 2: ("role", 0), 3: ("cstate", 0), 4: ("ipi", 0),
          S_IDLE_EXIT: ("idle_exit", 0)}
_AGG = ("unknown", "idle", "role", "cstate", "ipi", "idle_exit")  # one slot each: the id is dropped


def _slot_key(slot):
    """(kind index, id) of a slot of attribution.c's slots array."""
    if slot in _FIXED:
        k, i = _FIXED[slot]
    elif S_SOFT <= slot < S_SOFT + NSOFT:
        k, i = "softirq", slot - S_SOFT
    elif S_VEC <= slot < S_VEC + NVEC:
        k, i = "vector", slot - S_VEC
    else:
        k, i = "irq", slot - S_IRQ if slot < S_IRQ + NIRQ else -1
    return KINDS.index(k), i


def _frame_key(kind, ident):
    return (kind, 0) if KINDS[kind] in _AGG else (kind, ident)


def _cls(kind, ident):
    """Class index of a frame (same as cls_of() in attribution.c)."""
    k = KINDS[kind] if kind < len(KINDS) else "unknown"
    if k == "softirq":
        return CLASSES.index("softirq_net" if ident in K_SOFTIRQ_NET else "softirq")
    return CLASSES.index({"role": "role", "task": "task", "irq": "hardirq", "vector": "hardirq",
                          "ipi": "hardirq", "idle": "idle", "cstate": "idle",
                          "idle_exit": "idle"}.get(k, "unknown"))


def _periods(bpf, size):
    out = []
    reader = RingReader(bpf[b"periods"].map_fd, size)
    try:
        while True:
            got = reader.drain()
            if not got:
                break
            for b in got:
                v = _PERIOD.unpack_from(b)
                out.append({"start": v[0], "end": v[1], "cpu": v[2], "net_rx": v[3],
                            "role_in": v[4], "ns": dict(zip(CLASSES, v[6:]))})
    finally:
        reader.close()
    return out


def _tail(tr, acc, periods):
    """Charge each CPU's last stretch (no event since the close) like charge() would."""
    st = tr.bpf[b"st"]
    for cpu in tr.cpus:
        s = st[ctypes.c_int(cpu)]
        if not s.last or s.last >= tr.t_close:
            continue
        a = max(s.last, tr.t_open)
        f = s.f[min(s.depth, len(s.f) - 1)]
        if tr.t_close > a:
            key = (cpu, *_frame_key(f.kind, f.id))
            acc.setdefault(key, [0, 0])[0] += tr.t_close - a
        if s.busy and not s.emitted:
            ns = {c: s.pns[i] for i, c in enumerate(CLASSES)}
            ns[CLASSES[_cls(f.kind, f.id)]] += max(0, tr.t_close - a)
            periods.append({"start": max(s.pstart, tr.t_open), "end": tr.t_close, "cpu": cpu,
                            "net_rx": s.pnet, "role_in": s.prole, "ns": ns, "open": True})


def _acc(tr):
    bpf, acc = tr.bpf, {}
    slots = bpf[b"slots"]
    for cpu in tr.cpus:
        for slot in range(NSLOT):
            v = slots[ctypes.c_int(cpu * NSLOT + slot)]
            if v.ns or v.count:
                acc[(cpu, *_slot_key(slot))] = [v.ns, v.count]
    task = KINDS.index("task")
    for k, v in bpf[b"tasks"].items():
        acc[(k.cpu, task, k.task)] = [v.ns, v.count]
    return acc


def _reclassify_tasks(tr, acc, comms):
    """Task stretches the program could not name, named after the window (after the base is
    subtracted, so base and window are keyed alike):

    * the CPU's idle task, switched to before the program knew it (it learns a CPU's idle task
      when that switches out): idle time;
    * a role thread, switched to before it was learnt (at its first switch-out): the role;
    * a task never seen switching out on this CPU: its switch-out was not traced (seen here:
      the control machine's own threads, switched to and then the next switch is from another
      task), so the stretch up to the next event is not known to be that task's, nor busy at
      all: it goes to "unknown", which the busy sum leaves out (it ends up in unattributed)."""
    task, idle, role, unknown = (KINDS.index(k) for k in ("task", "idle", "role", "unknown"))
    st = tr.bpf[b"st"]
    idle_task = {cpu: st[ctypes.c_int(cpu)].idle_task for cpu in tr.cpus}
    roles = {k.value for k in tr.bpf[b"role_task"].keys()}
    for key in [k for k in acc if k[1] == task and k[2] not in comms]:
        cpu, ptr = key[0], key[2]
        kind = idle if ptr and ptr == idle_task.get(cpu) else role if ptr in roles else unknown
        ns, n = acc.pop(key)
        a = acc.setdefault((cpu, kind, 0), [0, 0])
        a[0], a[1] = a[0] + ns, a[1] + n


def _counters(tr):
    """{(cpu, name, id): n}: per-CPU counters (all CPUs: a wake-up counts where it completes)."""
    out = {}
    st = tr.bpf[b"st"]
    for cpu in range(len(st)):
        s = st[ctypes.c_int(cpu)]
        for i, name in enumerate(COUNTERS):
            if s.cnt[i]:
                out[(cpu, name, 0)] = s.cnt[i]
        for j in range(len(s.ipi_to)):
            if s.ipi_to[j]:
                out[(cpu, "ipi_sent_to", j)] = s.ipi_to[j]
            if s.ipi_from[j]:
                out[(cpu, "ipi_recv_from", j)] = s.ipi_from[j]
    for k, v in tr.bpf[b"ipifn"].items():
        out[(k.cpu, "ipi_recv_fn" if k.dir else "ipi_sent_fn", k.fn)] = v.value
    return out


def base(tr):
    """What the maps hold before a window opens (earlier windows); the ring is emptied."""
    _periods(tr.bpf, tr.rb_bytes)
    return _acc(tr), _counters(tr)


def _minus(now, before, pair=False):
    out = {}
    for k, v in now.items():
        b = before.get(k)
        if b is not None:
            v = [v[0] - b[0], v[1] - b[1]] if pair else v - b
        if (v[0] or v[1]) if pair else v:
            out[k] = v
    return out


def read(tr) -> dict:
    """acc {(cpu, kind, id): [ns, count]}, counters, comms, periods, edges and metadata."""
    bpf = tr.bpf
    acc, counters = _acc(tr), _counters(tr)
    if tr.base is not None:
        acc, counters = _minus(acc, tr.base[0], pair=True), _minus(counters, tr.base[1])
    comms = {k.value: bytes(v.comm).split(b"\0", 1)[0].decode(errors="replace")
             for k, v in bpf[b"tinfo"].items()}
    periods = _periods(bpf, tr.rb_bytes)
    _tail(tr, acc, periods)
    _reclassify_tasks(tr, acc, comms)
    periods.sort(key=lambda p: (p["start"], p["cpu"]))
    fns = {ident: _ksym(bpf, ident) for (_c, name, ident) in counters if name.endswith("_fn")}
    return {"cpus": tr.cpus, "t_open": tr.t_open, "t_close": tr.t_close, "acc": acc,
            "counters": counters, "comms": comms, "periods": periods, "edges": tr.edges,
            "irq_names": irq_names(), "fn_names": fns, "missing": tr.missing,
            "mounted_tracefs": tr.mounted_tracefs, "setup_cpu_s": tr.setup_cpu_s}


def _ksym(bpf, addr):
    if not addr:
        return "none (reschedule)"
    try:
        return bpf.ksym(addr).decode()
    except Exception:  # noqa: BLE001 - an address without a symbol
        return hex(addr)
