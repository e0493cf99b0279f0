"""XDP plumbing for the roles: validated compile flags, load (pre-compiled), attach/detach, BPF stats.

``load`` is the one way a role gets its program: from the host's compiled-program cache
(``roles.bpfcache``), bcc compiling only on a miss. Attaching is one rtnetlink call
(``roles.xdplink``). pyroute2 and bcc are imported lazily, so that ``detach_any`` (used by
``hostctl stop``) and the flag validation work on a host where bcc is missing.

XDP attached through netlink outlives the process that attached it, so ``attach`` first removes
a stale program (a previous role that crashed) and says so, and ``detach``/``detach_any`` never
raise when nothing is attached.
"""

import contextlib
import ipaddress
import logging
import mmap
import os
import re
import subprocess

from roles import vocab

log = logging.getLogger(__name__)

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
PAGE_SIZE = mmap.PAGESIZE

XDP_FLAGS_SKB_MODE = 1 << 1  # same values as bcc's BPF.XDP_FLAGS_*; usable without bcc
XDP_FLAGS_DRV_MODE = 1 << 2
MODES = vocab.XDP_MODES

# key -> kind; the kind decides validation and rendering of the -D value.
_KINDS = {
    "SKIM_TOS": "tos", "SKIM_PORT": "port",
    "HW_IP": "ip", "LOGGER_IP": "ip", "SENSOR_IP": "ip",
    "HW_MAC": "mac", "LOGGER_MAC": "mac",
    "SKIM_CAPTURE": "capture", "SKIM_RINGBUF_BYTES": "ringbuf", "SKIM_WAKEUP": "wakeup",
    # delivery policy (roles/delivery.py: bpf_defines)
    "SKIM_DELIVER": "deliver", "SKIM_FILTER": "filter", "SKIM_LO": "i32", "SKIM_HI": "i32",
    "SKIM_DEADBAND": "i32", "SKIM_EVERY": "every", "SKIM_RECORD_LEN": "capture",
    "SKIM_WAKE_RECORDS": "wake_records",
}
_INT_RANGES = {"deliver": (0, 2), "filter": (0, 3), "i32": (-(1 << 31), (1 << 31) - 1),
               "every": (1, 1_000_000), "wake_records": (1, 4_096)}


def _render(key, kind, value):
    bad = ValueError(f"{key}: invalid value {value!r}")
    if kind == "ip":
        try:
            addr = ipaddress.IPv4Address(vocab.ipv4_host(str(value)))
        except vocab.Invalid:
            raise bad from None
        return [f"-D{key}=0x{int(addr):08x}U"]
    if kind == "mac":
        try:
            value = vocab.mac(value)
        except vocab.Invalid:
            raise bad from None
        return [f"-D{key}=" + ",".join(f"0x{o}" for o in value.split(":"))]
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad
    if kind == "tos":
        try:
            vocab.tos_marker(value)
        except vocab.Invalid as exc:
            raise ValueError(f"{key}: TOS {value!r} {exc}") from None
    if kind == "port" and not 1 <= value <= 65535:
        raise bad
    if kind == "capture" and not 1 <= value <= 9000:
        raise bad
    if kind in _INT_RANGES and not _INT_RANGES[kind][0] <= value <= _INT_RANGES[kind][1]:
        raise bad
    if kind == "wakeup" and value not in (0, 1, 2):  # 0, BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP
        raise bad
    if kind == "ringbuf":
        if value < PAGE_SIZE or value & (value - 1) or value > (1 << 30):
            raise ValueError(f"{key}: ring buffer size must be a power of two >= page size "
                             f"({PAGE_SIZE}) and <= 1 GiB, got {value!r}")
        return [f"-D{key}={value}", f"-DSKIM_RINGBUF_PAGES={value // PAGE_SIZE}"]
    return [f"-D{key}={value}"]


def compile_flags(**constants):
    """Validate every constant and return the list of ``-D`` flags (sorted by key).

    Unknown keys and bad values raise ValueError naming the key.
    """
    flags = [f"-I{BPF_DIR}"]
    for key in sorted(constants):
        kind = _KINDS.get(key)
        if kind is None:
            raise ValueError(f"{key}: unknown constant")
        flags += _render(key, kind, constants[key])
    return flags


def load(program_path, flags):
    """``program_path`` with ``flags`` loaded: a ``roles.bpfobj.Object`` with every XDP function
    verified. From the host's compiled-program cache (``roles.bpfcache``: milliseconds); bcc
    compiles it only on a miss (seconds)."""
    from roles import bpfcache
    from roles.bpfobj import Object

    path = program_path if os.path.isabs(program_path) else os.path.join(BPF_DIR, program_path)
    return bpfcache.load(path, flags, load_as=Object.XDP)


def _b(name):
    """bcc wants bytes for names (and warns about str)."""
    return name.encode() if isinstance(name, str) else name


def _check_ifname(ifname):
    try:
        vocab.interface(ifname)
    except vocab.Invalid:
        raise ValueError(f"interface: invalid name {ifname!r}") from None


def attached_prog(ifname):
    """Info about the XDP program(s) on ``ifname`` or None: {"mode", "prog_id", "skb_prog_id", "drv_prog_id"}."""
    _check_ifname(ifname)
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise ValueError(f"interface: {ifname!r} does not exist")
        link = ipr.get_links(idx[0])[0]
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return None
    mode = xdp.get_attr("IFLA_XDP_ATTACHED")
    if not mode:
        return None
    names = {1: "native", 2: "generic", 3: "offload", 4: "multi",  # raw or as pyroute2 names it
             "xdpdrv": "native", "xdpgeneric": "generic", "xdpoffload": "offload",
             "xdpmulti": "multi"}
    if mode in ("none", "xdpnone"):
        return None
    info = {"mode": names.get(mode, str(mode))}
    for attr, key in (("IFLA_XDP_PROG_ID", "prog_id"), ("IFLA_XDP_SKB_PROG_ID", "skb_prog_id"),
                      ("IFLA_XDP_DRV_PROG_ID", "drv_prog_id")):
        v = xdp.get_attr(attr)
        if v:
            info[key] = v
    return info


def detach_any(ifname):
    """Remove whatever XDP program is on ``ifname`` (generic, native, offload). Returns what was there."""
    info = attached_prog(ifname)
    if info is None:
        return None
    for kw in ("xdpgeneric", "xdpdrv", "xdpoffload"):
        # argument list, never a shell: ifname was validated anyway
        subprocess.run(["ip", "link", "set", "dev", ifname, kw, "off"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    left = attached_prog(ifname)
    if left is not None:
        raise RuntimeError(f"could not detach XDP from {ifname}: {left}")
    return info


def _mode_flags(mode):
    if mode == "generic":
        return [XDP_FLAGS_SKB_MODE]
    if mode == "native":
        return [XDP_FLAGS_DRV_MODE]
    if mode == "auto":
        return [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]
    raise ValueError(f"xdp_mode: must be one of {MODES}, got {mode!r}")


def attach(bpf, fn_name, ifname, mode="generic"):
    """Attach ``fn_name`` of ``bpf`` to ``ifname``. Returns {"mode", "stale"} (stale: what was removed).

    A program already on the interface is detached first (and logged): it can only be the
    leftover of a role that died without cleaning up.
    """
    _check_ifname(ifname)
    from roles.xdplink import set_xdp

    candidates = _mode_flags(mode)
    stale = detach_any(ifname)
    if stale:
        log.warning("detached a stale XDP program from %s: %s", ifname, stale)
    fn = bpf.load_func(_b(fn_name), bpf.XDP)
    errors = []
    for flags in candidates:
        try:
            set_xdp(ifname, fn.fd, flags)
        except OSError as exc:
            errors.append(f"{'native' if flags == XDP_FLAGS_DRV_MODE else 'generic'}: {exc}")
            continue
        return {"mode": "native" if flags == XDP_FLAGS_DRV_MODE else "generic", "stale": stale}
    raise RuntimeError(f"cannot attach XDP to {ifname}: " + "; ".join(errors))


def detach(ifname, mode="generic"):
    """Detach the XDP program of ``mode`` from ``ifname``; idempotent, never raises for 'nothing attached'."""
    _check_ifname(ifname)
    try:
        info = attached_prog(ifname)
    except ValueError:  # interface gone: nothing to detach
        return False
    if info is None:
        return False
    from roles.xdplink import set_xdp

    for flags in _mode_flags(mode):
        try:
            set_xdp(ifname, -1, flags)
        except OSError:
            pass
    if attached_prog(ifname) is not None:  # another mode, or remove_xdp failed quietly
        detach_any(ifname)
    if attached_prog(ifname) is not None:
        raise RuntimeError(f"an XDP program is still attached to {ifname} after detaching")
    return True


def _prog_fd(bpf_or_prog_fd, fn_name=None):
    if isinstance(bpf_or_prog_fd, int):
        return bpf_or_prog_fd
    funcs = bpf_or_prog_fd.funcs
    if fn_name is None:
        if len(funcs) != 1:
            raise ValueError("bpf_stats: several programs loaded, name one")
        return next(iter(funcs.values())).fd
    return funcs[_b(fn_name)].fd


def bpf_stats(bpf_or_prog_fd, fn_name=None):
    """{"run_time_ns", "run_cnt"} of a loaded program, from /proc/self/fdinfo (0 while stats are off)."""
    fd = _prog_fd(bpf_or_prog_fd, fn_name)
    out = {"run_time_ns": 0, "run_cnt": 0}
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in out:
                out[key] = int(val)
    return out


_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
_BPF_ENABLE_STATS = 32  # bpf(2) command; attr.enable_stats.type = BPF_STATS_RUN_TIME (0)


def _enable_stats_fd():
    """BPF_ENABLE_STATS: run-time stats stay on while the returned fd is open. The kernel counts
    the holders, so unlike toggling the sysctl, a concurrent user cannot switch them off under
    us (seen here: another process restoring the sysctl mid-window gave run_cnt = 0)."""
    import ctypes
    import platform

    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(8)  # union bpf_attr { struct { __u32 type; } enable_stats; }
    fd = libc.syscall(nr, _BPF_ENABLE_STATS, attr, ctypes.sizeof(attr))
    return fd if fd >= 0 else None


@contextlib.contextmanager
def bpf_stats_enabled():
    """BPF program run-time stats on for the block: via BPF_ENABLE_STATS (kernel >= 5.8), else by
    setting kernel.bpf_stats_enabled=1 and restoring the previous value."""
    fd = _enable_stats_fd()
    if fd is not None:
        try:
            yield
        finally:
            os.close(fd)
        return
    with open(_STATS_SYSCTL) as f:
        old = f.read().strip()
    with open(_STATS_SYSCTL, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(_STATS_SYSCTL, "w") as f:
            f.write(old)


@contextlib.contextmanager
def receive_offloads_off(ifname):
    """GRO/LRO off on the interface for the block, restored afterwards.

    Generic XDP runs after GRO: merged segments would be larger than the capture size and
    dropped (never forwarded uncaptured), so the stream would stall. Wi-Fi drivers use GRO
    through mac80211; veths in the lab have it off already."""
    changed = []
    try:
        out = subprocess.run(["ethtool", "-k", ifname], capture_output=True, text=True).stdout
    except FileNotFoundError:
        log.warning("no ethtool: cannot check GRO/LRO on %s", ifname)
        out = ""
    for feature, short in (("generic-receive-offload", "gro"), ("large-receive-offload", "lro")):
        m = re.search(rf"^{feature}: on(?! \[fixed\])", out, re.M)
        if m and subprocess.run(["ethtool", "-K", ifname, short, "off"], capture_output=True).returncode == 0:
            changed.append(short)
            log.info("%s off on %s for the xdp path", short, ifname)
    try:
        yield changed
    finally:
        for short in changed:
            subprocess.run(["ethtool", "-K", ifname, short, "on"], capture_output=True)


_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "armv6l": 386, "i686": 357}
_BPF_PROG_TEST_RUN = 10


def prog_test_run(prog_fd, frame, repeat=1, out_size=4096):
    """BPF_PROG_TEST_RUN on an XDP program: (action, output frame, avg ns per run).

    Runs the program on ``frame`` without any network: used by tests (checksum math across
    a /16) and by the ring-buffer benchmark (one record per run).
    """
    import ctypes
    import platform
    import struct

    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(f"bpf syscall number unknown for {platform.machine()}")
    inbuf = ctypes.create_string_buffer(bytes(frame), len(frame))
    outbuf = ctypes.create_string_buffer(out_size)
    attr = ctypes.create_string_buffer(struct.pack(
        "=IIIIQQII", prog_fd, 0, len(frame), out_size, ctypes.addressof(inbuf),
        ctypes.addressof(outbuf), repeat, 0).ljust(128, b"\0"))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(nr), ctypes.c_int(_BPF_PROG_TEST_RUN), attr,
                    ctypes.c_uint(len(attr))) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
    _, retval, _, size_out, _, _, _, duration = struct.unpack_from("=IIIIQQII", attr.raw)
    return retval, outbuf.raw[:size_out], duration
