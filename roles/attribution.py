"""Where the measured CPUs' time goes: kernel tracepoints through bcc (bpf/attribution.c).

    tr = Tracer(cpus=[1], pids=[os.getpid()], prog_stats=skim.prog_stats)  # compiles: seconds
    ...                      # before "ready"
    tr.open()                # window start (no thread, no polling during the window)
    ...
    tr.close()               # window end
    res = tr.result(marks)   # read the maps and the busy periods, after the window

Per measured CPU the BPF side follows what runs (task at depth 0; cpuidle state, softirqs
and hard interrupts nested on it) and charges the time between two events to the innermost
one, so nested intervals are subtracted from their parent: the parts (the role, other tasks
by comm, softirqs by vector, device IRQs, x86 system vectors / arm IPIs, the idle task's
entry/exit outside a cpuidle state, idle) add up to the window. The rest that no tracepoint
sees (interrupt entry/exit code, traps of a nested VM) is ``unattributed``: busy time from
the kernel's precise idle accounting minus the traced busy parts. Also counted: role
wake-ups, context switches, NAPI polls, IPIs sent by target and received. The XDP program's
time (run_time_ns) is a part of NET_RX.

Busy periods (leaving idle until idling again) are written to a ring buffer without
wake-ups and read after the window; they give the CPU-over-time series (ns resolution, any
bin) and robust per-record figures (``roles.attribution_stats``).

tracefs must be mounted for bcc's tracepoints; ``ensure_tracefs()`` mounts it and says so.
Groups missing on a kernel (x86's irq_vectors on arm64, ipi_send_* before 6.6) are left out
and listed in ``missing``.
"""

import ctypes
import logging
import os
import re
import threading
import time

log = logging.getLogger("tcpskim.attribution")

TRACEFS = "/sys/kernel/tracing"
KINDS = ("unknown", "idle", "role", "task", "cstate", "softirq", "irq", "vector", "ipi", "idle_exit")
CLASSES = ("role", "task", "softirq_net", "softirq", "hardirq", "idle", "unknown")
COUNTERS = ("wakeups", "switch_in", "switch_out_preempt", "switch_out_sleep", "napi", "napi_work",
            "ipi_sent", "ipi_recv", "mismatch", "depth", "rb_full", "switch", "unseen_switch")
NSOFT, NVEC, NIRQ = 10, 16, 512  # slot layout of attribution.c
S_SOFT, S_VEC = 5, 15
S_IRQ = S_VEC + NVEC
S_IDLE_EXIT = S_IRQ + NIRQ + 1
NSLOT = S_IDLE_EXIT + 1
SOFTIRQS = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED",
            "HRTIMER", "RCU")
VECTORS = ("local_timer", "call_function", "call_function_single", "reschedule", "irq_work",
           "x86_platform_ipi", "thermal_apic", "error_apic", "spurious_apic")
# (tracefs event that must exist, -D flag); sched and irq are required.
OPTIONAL = [("power/cpu_idle", "HAVE_CPU_IDLE"), ("napi/napi_poll", "HAVE_NAPI"),
            ("ipi/ipi_send_cpu", "HAVE_IPI_SEND"), ("ipi/ipi_entry", "HAVE_IPI_ENTRY"),
            ("ipi/ipi_raise", "HAVE_IPI_RAISE")] + \
           [(f"irq_vectors/{v}_entry", f"HAVE_VEC_{v}") for v in VECTORS]
REQUIRED = ("sched/sched_switch", "sched/sched_wakeup", "irq/softirq_entry", "irq/softirq_exit",
            "irq/irq_handler_entry", "irq/irq_handler_exit")
USER_HZ = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- host checks

def tracefs_mounted() -> bool:
    return os.path.isdir(os.path.join(TRACEFS, "events"))


def ensure_tracefs() -> bool:
    """Mount tracefs if missing (bcc's tracepoints need it). True if this call mounted it."""
    if tracefs_mounted():
        return False
    import subprocess

    r = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True, text=True)
    if r.returncode != 0 or not tracefs_mounted():
        raise RuntimeError(f"tracefs is not mounted at {TRACEFS} and mounting it failed: "
                           f"{(r.stderr or r.stdout).strip() or 'no events directory'}")
    log.warning("mounted tracefs at %s (bcc's tracepoints need it)", TRACEFS)
    return True


TRACEFS_PLACES = (TRACEFS, "/sys/kernel/debug/tracing")  # the second: tracefs inside debugfs
# Optional events whose absence loses something on this architecture (x86's system vectors do
# not exist on arm64, whose IPIs have ipi_entry instead; ipi_raise only stands in for
# ipi_send_cpu before 6.6), with what is lost.
_EXPECTED = {"power/cpu_idle": "idle states apart from the idle loop",
             "napi/napi_poll": "NAPI polls per record",
             "ipi/ipi_send_cpu": "IPIs sent by target CPU"}
_EXPECTED_BY_ARCH = {"x86_64": {f"irq_vectors/{v}_entry": f"{v} interrupt time (else unattributed)"
                                for v in VECTORS[:5]},
                     "aarch64": {"ipi/ipi_entry": "IPI time by reason (else in the IPI irq)"}}


def _events_in(root, events):
    return [e for e in events if os.path.isdir(os.path.join(root, "events", e))]


def _peek_events(events):
    """(events present, error) read from a tracefs mounted in a private mount namespace, so
    doctor changes nothing on the host (the role mounts tracefs for real when it starts)."""
    import subprocess

    script = ('mount -t tracefs nodev "$0" || exit 3; cd "$0/events" || exit 4; '
              'for e; do [ -d "$e" ] && echo "$e"; done; exit 0')
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, TRACEFS,
                            *events], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot try mounting it ({exc})"
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return r.stdout.split(), None


def _bpf_stats_switch():
    """(how run-time stats can be switched on, or None; the reason when not)."""
    from roles import xdp

    try:
        fd = xdp._enable_stats_fd()
    except OSError as exc:
        fd, why = None, str(exc)
    if fd is not None:
        os.close(fd)
        return "BPF_ENABLE_STATS", None
    if not os.path.exists(xdp._STATS_SYSCTL):
        return None, "no kernel.bpf_stats_enabled and BPF_ENABLE_STATS refused"
    if not os.access(xdp._STATS_SYSCTL, os.W_OK):
        return None, "kernel.bpf_stats_enabled is not writable and BPF_ENABLE_STATS refused"
    return "kernel.bpf_stats_enabled", None


def check(arch=None) -> dict:
    """For doctor: can attribution run here? Nothing on the host is changed.

    {"tracefs": where it is mounted, or "mountable" / None, "tracefs_error", "missing"
    (required events: attribution cannot run), "lost" ({optional event: what the figures
    lose}), "bpf_stats": how the XDP program's run time is switched on, or None,
    "bpf_stats_error"}."""
    import platform

    arch = arch or platform.machine()
    expected = {**_EXPECTED, **_EXPECTED_BY_ARCH.get(arch, {})}
    wanted = list(REQUIRED) + list(expected)
    out = {"tracefs": None, "tracefs_error": None}
    where = next((t for t in TRACEFS_PLACES if os.path.isdir(os.path.join(t, "events"))), None)
    if where:
        out["tracefs"], have = where, _events_in(where, wanted)
    else:
        have, out["tracefs_error"] = _peek_events(wanted)
        out["tracefs"] = "mountable" if have is not None else None
    if have is None:
        out["missing"], out["lost"] = None, None  # unknown: tracefs cannot be mounted
    else:
        out["missing"] = [e for e in REQUIRED if e not in have]
        out["lost"] = {e: why for e, why in expected.items() if e not in have}
    out["bpf_stats"], out["bpf_stats_error"] = _bpf_stats_switch()
    return out


def _probe_groups():
    """(-D flags, missing events) for this kernel."""
    have = lambda e: os.path.isdir(os.path.join(TRACEFS, "events", e))  # noqa: E731
    lost = [e for e in REQUIRED if not have(e)]
    if lost:
        raise RuntimeError(f"required tracepoints missing: {', '.join(lost)}")
    flags, missing = [], []
    for event, flag in OPTIONAL:
        (flags.append(f"-D{flag}") if have(event) else missing.append(event))
    return flags, missing


# ---------------------------------------------------------------------------- /proc readings

def _timer_list_idle_ns(cpu):
    """idle + iowait ns of ``cpu`` from /proc/timer_list (exact while ``cpu`` is awake)."""
    with open("/proc/timer_list") as f:
        text = f.read()
    cur, vals = None, {}
    for line in text.splitlines():
        if line.startswith("cpu: "):
            cur = int(line[5:])
        elif cur == cpu:
            key, _, val = line.strip().partition(":")
            if key.strip() in (".idle_sleeptime", ".iowait_sleeptime", ".idle_active"):
                vals[key.strip()] = int(val.split()[0])
    # 6.18 no longer prints .idle_active; running on ``cpu`` proves no idle period is open
    if ".idle_sleeptime" not in vals or ".iowait_sleeptime" not in vals or vals.get(".idle_active"):
        return None
    return vals[".idle_sleeptime"] + vals[".iowait_sleeptime"]


def precise_idle_ns(cpus):
    """{cpu: idle+iowait ns}: from /proc/timer_list read on each CPU in turn (this thread is
    moved there, which proves it awake, then moved back), else /proc/stat (10 ms ticks)."""
    out, old = {}, os.sched_getaffinity(0)
    try:
        for c in cpus:
            try:
                os.sched_setaffinity(0, {c})
                v = _timer_list_idle_ns(c)
            except OSError:
                v = None
            if v is not None:
                out[c] = v
    finally:
        os.sched_setaffinity(0, old)
    if len(out) < len(cpus):
        with open("/proc/stat") as f:
            for line in f:
                p = line.split()
                if p and p[0].startswith("cpu") and p[0][3:].isdigit() and int(p[0][3:]) in cpus:
                    out.setdefault(int(p[0][3:]), (int(p[4]) + int(p[5])) * 10**9 // USER_HZ)
    return out


def steal_ns(cpus):
    """{cpu: steal ns} from /proc/stat (10 ms units): time the hypervisor ran something else.

    Task runtimes (schedstat, thread_time) leave it out; the tracer's clock does not, so it
    is inside whatever component was running."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            p = line.split()
            if p and p[0].startswith("cpu") and p[0][3:].isdigit() and int(p[0][3:]) in cpus:
                out[int(p[0][3:])] = int(p[8]) * 10**9 // USER_HZ if len(p) > 8 else 0
    return out


def _threads_sched_ns(pid) -> int:
    """The scheduler's runtime of every thread of pid (``/proc/<pid>/schedstat`` is the main
    thread's alone, while the tracer's role time is any thread's)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return total


def proc_cpu(pids):
    """{"sched_ns", "utime_ticks", "stime_ticks"} summed over the processes ``pids`` (all their
    threads)."""
    out = {"sched_ns": 0, "utime_ticks": 0, "stime_ticks": 0}
    for pid in pids:
        try:
            out["sched_ns"] += _threads_sched_ns(pid)
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out["utime_ticks"] += int(fields[11])
            out["stime_ticks"] += int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return out


def irq_names():
    """{irq number: name} from /proc/interrupts."""
    out = {}
    try:
        with open("/proc/interrupts") as f:
            next(f)
            for line in f:
                head, _, rest = line.partition(":")
                if head.strip().isdigit():
                    out[int(head)] = rest.split()[-1] if rest.split() else head.strip()
    except OSError:
        pass
    return out


def comm_group(comm):
    """kworker/1:2H -> kworker, ksoftirqd/1 -> ksoftirqd, kdamond.0 -> kdamond."""
    return re.split(r"[/.:]", comm, maxsplit=1)[0] or comm


# ---------------------------------------------------------------------------- the tracer

def _tracer_args(cpus, ringbuf_bytes):
    cpus = sorted(set(int(c) for c in cpus))
    if not cpus or cpus[-1] >= 64:
        raise ValueError(f"cpus: need 1..64 CPU numbers below 64, got {cpus!r}")
    if ringbuf_bytes < 4096 or ringbuf_bytes & (ringbuf_bytes - 1):
        raise ValueError(f"ringbuf_bytes: must be a power of two >= 4096, got {ringbuf_bytes!r}")
    return cpus


def tracer_program(cpus, ringbuf_bytes=8 << 20, cpu_idle=True):
    """(cpus sorted, program, -D flags, missing events) of a Tracer for ``cpus`` on this kernel;
    tracefs must be mounted (the flags depend on which events exist). Loads nothing."""
    cpus = _tracer_args(cpus, ringbuf_bytes)
    flags, missing = _probe_groups()
    if not cpu_idle:  # two events fewer per idle period; idle loop and idle not split
        flags = [f for f in flags if f != "-DHAVE_CPU_IDLE"]
    mask = sum(1 << c for c in cpus)
    nr = os.sysconf("SC_NPROCESSORS_CONF")
    flags += [f"-DATTR_CPU_MASK={mask}ULL", f"-DATTR_NR_CPUS={min(64, max(nr, cpus[-1] + 1))}",
              f"-DATTR_RB_PAGES={ringbuf_bytes // 4096}"]
    return cpus, "attribution.c", flags, missing


class Tracer:
    """The attached tracepoint programs for ``cpus``; ``pids`` are the role's processes."""

    def __init__(self, cpus, pids=(), prog_stats=None, ringbuf_bytes=8 << 20, cpu_idle=True):
        from roles import bpfcache  # bcc only on a cache miss (host half only)

        _tracer_args(cpus, ringbuf_bytes)  # bad arguments fail before any mount
        self.pids, self.prog_stats = list(pids), prog_stats
        self.mounted_tracefs = ensure_tracefs()
        self.cpus, program, flags, self.missing = tracer_program(cpus, ringbuf_bytes, cpu_idle)
        self.rb_bytes = ringbuf_bytes
        t0 = time.process_time()
        # pre-compiled when the cache has it; attaches every RAW_TRACEPOINT_PROBE
        self.bpf = bpfcache.load(program, flags)
        self.setup_cpu_s = time.process_time() - t0
        self.t_open = self.t_close = None
        self.edges, self.base = [], None
        self.add_pids([])

    def add_pids(self, pids):
        """Count every thread of these processes (up to 4) as the role."""
        for pid in pids:
            if pid not in self.pids:
                self.pids.append(pid)
        if len(self.pids) > 4:
            raise ValueError(f"pids: at most 4 role processes, got {self.pids!r}")
        self._set_ctl()

    def _set_ctl(self):
        ctl = self.bpf[b"ctl"]
        leaf = ctl.Leaf()
        leaf.t_open, leaf.t_close = self.t_open or 0, self.t_close or 0
        for i, pid in enumerate(self.pids[:4]):
            leaf.tgid[i] = pid
        ctl[ctypes.c_int(0)] = leaf

    def self_time(self):
        """{cpu: [ns, runs]}: the programs' own run time on each measured CPU so far (they time
        themselves from their first clock read to their last; never reset)."""
        st = self.bpf[b"st"]
        return {c: [(s := st[ctypes.c_int(c)]).self_ns, s.self_runs] for c in self.cpus}

    def _edge(self):
        e = {"self": self.self_time(),
             "idle_ns": precise_idle_ns(self.cpus), "steal_ns": steal_ns(self.cpus),
             "proc": proc_cpu(self.pids),
             "mono_ns": time.monotonic_ns(), "wall": time.time()}
        if self.prog_stats is not None:
            try:
                e["prog"] = dict(self.prog_stats())
            except Exception as exc:  # noqa: BLE001 - the XDP figure is optional
                log.warning("prog_stats: %s", exc)
        return e

    def set_pids(self, pids):
        """The role's processes, replacing the previous ones (between windows)."""
        self.pids = []
        self.bpf[b"role_task"].clear()  # relearnt when the new role's threads switch out
        self.add_pids(pids)

    def open(self):
        """Open the window now (nothing of the tracer runs until an event happens).

        The maps keep what earlier windows counted: it is taken as the base and subtracted.
        The edge is a clock read, then a map update: an event in between starts the charged
        time at itself, so up to that gap (tens of µs; ms under TCG) is missing at each edge."""
        from roles import attribution_read
        self.t_open = self.t_close = None
        self._set_ctl()
        self._learn_idle()
        self.base = attribution_read.base(self)
        self.edges = [self._edge()]
        self.t_open = time.monotonic_ns()
        self._set_ctl()

    def _learn_idle(self, tries=10):
        """Make each measured CPU switch its idle task out once before the window opens.

        The program learns a CPU's idle task when it switches out (prev pid 0: no task_struct
        layout needed). Until then a switch *to* idle looks like a switch to an unknown task,
        and a CPU that stayed idle from attach to open (an idle trial, 50 Hz) had whole idle
        stretches charged as busy: 0.17-0.35 s of a 10 s window, seen as negative unattributed
        time. A 1 ms sleep pinned to the CPU wakes from idle: prev = the idle task. A CPU kept
        busy by another task does not idle, so this gives up after ``tries`` (the read side
        still reclassifies the idle task's time)."""
        st = self.bpf[b"st"]
        me = threading.get_native_id()
        old = os.sched_getaffinity(me)
        try:
            for c in self.cpus:
                try:
                    os.sched_setaffinity(me, {c})
                except OSError:  # not ours to run on (cpuset): the read side still reclassifies
                    continue
                for _ in range(tries):
                    if st[ctypes.c_int(c)].idle_task:
                        break
                    time.sleep(0.001)
        finally:
            os.sched_setaffinity(me, old)

    def close(self):
        self.t_close = time.monotonic_ns()
        self._set_ctl()
        self.edges.append(self._edge())

    def raw(self):
        """The maps as plain Python data (after close)."""
        from roles import attribution_read
        return attribution_read.read(self)

    def result(self, marks=None, bin_s=0.01, records=None, ns_per_event=None, xdp=None,
               dispatch_ns=None):
        """The window's attribution (see roles.attribution_stats.summarize)."""
        from roles import attribution_stats
        return attribution_stats.summarize(self.raw(), marks=marks, bin_s=bin_s, records=records,
                                           ns_per_event=ns_per_event, xdp=xdp,
                                           dispatch_ns=dispatch_ns)

    def cleanup(self):
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
