"""The words both halves share: roles, modes, limits, the TOS marker rule, TCP flag bits, the
XDP programs' ring record and counters, and the validators.

Standard library only: the host half (``roles/``) and the control side (``tcpskim/``,
``tasks.py``, on Windows too) both import it. Where both halves validate the same thing, the
rule is written here once, so the control side never accepts what a host then refuses.

A validator returns the value (normalised where that matters: a MAC in lowercase) or raises
``Invalid`` whose message says what is wrong *after* the value, without naming the key: the
caller names it (``inventory.toml: hosts.sensor.mac: '01:00:5e:00:00:01' is a multicast MAC
address``). Every pattern is matched with ``re.fullmatch`` (``$`` would let a final newline
through), and numbers from text accept ASCII digits only (``int("١٠")`` is 10 in Python).

Sections are self-contained; add new vocabulary as a section of its own.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
import struct
from typing import NamedTuple


class Invalid(ValueError):
    """A value breaks a rule; the message is the reason, for the caller to prefix with the key."""


# --- roles and modes -------------------------------------------------------------------------
ROLES = ("sensor", "hardworker", "logger")
MODES = ("xdp", "tcp")  # the traffic modes a run compares
TRIAL_MODES = (*MODES, "idle")  # idle: the baseline trial, no traffic
XDP_MODES = ("generic", "native", "auto")
WAKEUP_POLICIES = ("per-record", "batch", "coalesce")


# --- limits ----------------------------------------------------------------------------------
class Limit(NamedTuple):
    lo: float
    hi: float
    kind: type = float  # int: whole numbers only


LIMITS = {
    "rate_hz": Limit(0.1, 100_000),
    "size_bytes": Limit(0, 65_000, int),  # payload bytes of one record
    "duration_s": Limit(0.5, 86_400),
    "warmup_s": Limit(0, 3_600),
    "tail_s": Limit(0, 60),
    "repeat": Limit(1, 1_000, int),
    "work_us": Limit(0, 1_000_000),
    "capture_bytes": Limit(1448, 9000, int),  # one MSS up to a jumbo frame
    "ringbuf_bytes": Limit(4096, 1 << 30, int),  # and a power of two
    "wakeup_ms": Limit(1, 10_000, int),
    "coalesce_records": Limit(1, 4_096, int),
    "coalesce_us": Limit(1, 10_000_000, int),
    "marker_port": Limit(1024, 65_535, int),
    "ssh_port": Limit(1, 65_535, int),
    "stop_timeout_s": Limit(0, 3_600),
}


def limited(name: str, value):
    """``value`` (a number, not a bool, not NaN) inside LIMITS[name], as that limit's kind."""
    lim = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid("must be a whole number" if lim.kind is int else "must be a number")
    if isinstance(value, float) and (math.isnan(value) or lim.kind is int and not value.is_integer()):
        raise Invalid("must be a whole number" if lim.kind is int else "is not a number")
    if not lim.lo <= value <= lim.hi:
        raise Invalid(f"is out of range {lim.lo:g}..{lim.hi:g}")
    return int(value) if lim.kind is int else float(value)


def cpu_list(value, count: int = 1024) -> list[int]:
    """Distinct CPU numbers in 0..count-1 (``count``: the host's CPUs, when known)."""
    if not isinstance(value, list) or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < count
                                          for c in value):
        raise Invalid(f"must be a list of CPU numbers in 0..{count - 1}")
    twice = sorted({c for c in value if value.count(c) > 1})
    if twice:
        raise Invalid(f"lists CPU {', '.join(map(str, twice))} more than once")
    return value


def ringbuf_bytes(value) -> int:
    v = limited("ringbuf_bytes", value)
    if v & (v - 1):
        raise Invalid("must be a power of two")
    return v


_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def number(text, kind: type = float):
    """A number typed by a user (ASCII digits only: no '١٠', 'nan', 'inf', '1_000'), or Invalid."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    s = str(text).strip()
    if not (_INT_TEXT if kind is int else _FLOAT_TEXT).fullmatch(s):
        raise Invalid("is not a whole number" if kind is int else "is not a number")
    return int(s) if kind is int else float(s)


# --- the TOS marker (one rule for the inventory, the role config and the XDP program) --------
ECN_MASK = 0x03  # the two low TOS bits are ECN, which the network may rewrite


def tos_marker(value) -> int:
    """The IP TOS byte that marks the skimmed stream: a non-zero DSCP, ECN bits zero."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("must be an integer")
    if not 4 <= value <= 252:  # 0 would mark every unmarked packet to the port
        raise Invalid("is out of range 4..252")
    if value & ECN_MASK:
        raise Invalid("must have its two low (ECN) bits zero")
    return value


# --- TCP flag bits (byte 13 of the TCP header; SKIM_FIN... in bpf/skim.h) -------------------
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


# --- what the XDP programs share with userspace (bpf/ring.h, bpf/sensor.c) -------------------
# tests/test_layout.py compiles the C side and checks it against this, field by field.
RING_RECORD_FIELDS = (  # struct skim_rec before its payload: (name, struct code), in C order
    ("saddr", "4s"),  # __be32, network order: kept as bytes for inet_ntoa
    ("sport", "H"),   # host order
    ("flags", "B"),   # the TCP flags byte
    ("kind", "B"),    # KIND_RAW / KIND_RECORD
    ("seq", "I"),     # host order
    ("len", "I"),     # payload bytes that follow
    ("base", "I"),    # filter/latest: the flow's evaluated frontier before this segment
)
RING_RECORD = struct.Struct("=" + "".join(code for _, code in RING_RECORD_FIELDS))
KIND_RAW, KIND_RECORD = 0, 1  # SKIM_KIND_*: segment bytes at seq / one whole record
RING_HEADER_BYTES = 8  # BPF_RINGBUF_HDR_SZ: the kernel's header before each record
RING_RECORD_OVERHEAD = RING_HEADER_BYTES + RING_RECORD.size  # bytes per ring record besides the capture
MAILBOX_SLOTS = 64  # SKIM_SLOTS in bpf/deliver.h: latest's slots, indexed by sensor id

# enum skim_counter, in order (index = the enumerator's value), lowercase without the C_ prefix
HW_COUNTERS = ("matched", "captured", "dropped_full", "dropped_oversize", "passed", "malformed",
               "fragments", "forwarded", "uncaptured", "dropped_order", "mailbox")  # bpf/ring.h
SENSOR_COUNTERS = ("rewritten", "passed", "malformed")  # bpf/sensor.c
# The counting rule (bpf/ring.h): each frame a program sees counts exactly one OUTCOME (so
# the outcomes sum to the frames seen); EVENTS are extra facts about a frame, zero or more.
HW_OUTCOMES = ("dropped_full", "dropped_oversize", "passed", "malformed", "fragments", "forwarded",
               "dropped_order")
HW_EVENTS = ("matched", "captured", "uncaptured", "mailbox")
SENSOR_OUTCOMES, SENSOR_EVENTS = SENSOR_COUNTERS, ()


def frames_seen(counters: dict, outcomes=HW_OUTCOMES) -> int:
    """Frames a program saw, from its counters (``skim.counters()``): the sum of its outcomes."""
    return sum(counters.get(name, 0) for name in outcomes)


# --- wake-up policy --------------------------------------------------------------------------
_WAKEUP = re.compile(r"per-record|batch:([0-9]+)ms|coalesce:([0-9]+):([0-9]+)(us|ms)")
WAKEUP_FORMS = "'per-record', 'batch:<N>ms' or 'coalesce:<records>:<T>us|ms'"


def wakeup(text) -> dict:
    """The wake-up policy from its text form:

    * 'per-record' -> {"policy": "per-record"}: wake for every record (adaptively: only a
      consumer that is waiting is woken);
    * 'batch:10ms' -> {"policy": "batch", "interval_ms": 10}: wake on a period;
    * 'coalesce:16:500us' -> {"policy": "coalesce", "records": 16, "timeout_us": 500}: wake
      once 16 records wait, or 500 µs after the consumer began waiting, whichever is first
      (the wait's resolution is epoll's 1 ms, so a T under 1 ms waits up to 1 ms)."""
    m = _WAKEUP.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise Invalid(f"is not {WAKEUP_FORMS}")
    if m.group(2) is not None:
        n = limited("coalesce_records", int(m.group(2)))
        us = int(m.group(3)) * (1000 if m.group(4) == "ms" else 1)
        try:
            return {"policy": "coalesce", "records": n, "timeout_us": limited("coalesce_us", us)}
        except Invalid:
            raise Invalid("timeout must be 1 us..10 s") from None
    if m.group(1) is None:
        return {"policy": "per-record"}
    try:
        return {"policy": "batch", "interval_ms": limited("wakeup_ms", int(m.group(1)))}
    except Invalid:
        raise Invalid("interval must be 1..10000 ms") from None


def wakeup_text(w) -> str:
    """The text form of a wake-up dict (the inverse of ``wakeup``); other values as str."""
    if not isinstance(w, dict):
        return "-" if w is None else str(w)
    if w.get("policy") == "coalesce":
        return f"coalesce:{w.get('records')}:{w.get('timeout_us')}us"
    if w.get("interval_ms") is not None:
        return f"{w.get('policy', '?')}:{w['interval_ms']:g}ms"
    return str(w.get("policy", "?"))


# --- names and addresses ---------------------------------------------------------------------
def matching(value, pattern: str, why: str) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string")
    if not re.fullmatch(pattern, value):
        raise Invalid(why)
    return value


def host_name(value) -> str:
    """An inventory host name: it becomes a namespace and veth suffix in the lab."""
    return matching(value, r"[a-z][a-z0-9-]{0,14}", "is not a host name (lowercase letters, digits, '-', max 15)")


def token(value, max_len: int = 64) -> str:
    """A run id, trial id or tag: a safe file name (no '.' or '..', no leading '-')."""
    v = matching(value, rf"[A-Za-z0-9._-]{{1,{max_len}}}", f"may hold only letters, digits, '.', '_', '-' (max {max_len})")
    if v in (".", "..") or v.startswith("-"):
        raise Invalid("is not a usable name ('.', '..' or a leading '-')")
    return v


def interface(value) -> str:
    """A Linux interface name as the kernel accepts it (IFNAMSIZ 16 with the NUL; no ':' or '/')."""
    return matching(value, r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}",
                 "is not an interface name (1-15 of A-Z a-z 0-9 _ . -; `ip link` shows eth0@if5 for eth0)")


_HEX2 = r"[0-9A-Fa-f]{2}"


def mac(value) -> str:
    """A unicast Ethernet address, returned in lowercase."""
    v = matching(value, rf"{_HEX2}(:{_HEX2}){{5}}", "is not a MAC address (aa:bb:cc:dd:ee:ff)").lower()
    if v == "00:00:00:00:00:00":
        raise Invalid("is the all-zero MAC address")
    if int(v[:2], 16) & 1:
        raise Invalid("is a multicast MAC address")
    return v


def ipv4_host(value, *, loopback: bool = False) -> str:
    """One host's IPv4 address: never 0.0.0.0, broadcast, multicast or reserved; loopback only if allowed."""
    if not isinstance(value, str):
        raise Invalid("must be a string")
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise Invalid("is not an IPv4 address") from None
    for bad, what in ((addr.is_unspecified, "the unspecified address"), (addr.is_multicast, "a multicast address"),
                      (addr.is_reserved, "a reserved or broadcast address"),
                      (addr.is_loopback and not loopback, "a loopback address")):
        if bad:
            raise Invalid(f"is {what}, not a host's address")
    return str(addr)


def ipv4_network(value) -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise Invalid("must be a string")
    try:
        net = ipaddress.IPv4Network(value)
    except ValueError:
        raise Invalid("is not an IPv4 network (like 198.18.0.0/24)") from None
    if net.is_multicast or net.is_loopback or net.is_reserved or net.is_unspecified or not 8 <= net.prefixlen <= 30:
        raise Invalid("is not a usable host network (unicast, /8../30)")
    return net


def user(value) -> str:
    return matching(value, r"[a-z_][a-z0-9_.-]{0,31}", "is not a user name")


def ssh_host(value) -> str:
    """A DNS name or an IPv4 address to reach a host over SSH (loopback allowed: a tunnel)."""
    v = matching(value, r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", "is not a host name or address")
    if re.fullmatch(r"[0-9.]+", v):
        return ipv4_host(v, loopback=True)
    labels = v[:-1].split(".") if v.endswith(".") else v.split(".")
    if any(not lb or len(lb) > 63 or lb.startswith("-") or lb.endswith("-") for lb in labels):
        raise Invalid("is not a host name or address")
    return v


# --- git -------------------------------------------------------------------------------------
def git_branch(value) -> str:
    """A branch name git accepts (the rules of ``git check-ref-format --branch``), in a safe charset."""
    v = matching(value, r"[A-Za-z0-9._/-]{1,100}", "is not a branch name (letters, digits, . _ / -)")
    if v == "HEAD":
        raise Invalid("is not a branch: HEAD names whatever is checked out; give the branch's name")
    parts = v.split("/")
    bad = (v.startswith("-"), ".." in v, "" in parts, v.endswith("."), v == "@",
           any(p.startswith(".") or p.endswith(".lock") for p in parts))
    if any(bad):
        raise Invalid("is not a branch name git accepts (git check-ref-format: no '..', '//', "
                      "leading '-' or '/', trailing '.' or '/', no part starting '.' or ending '.lock')")
    return v


def git_remote(value) -> str:
    v = matching(value, r"[A-Za-z0-9@:/._~+-]+", "is not a git URL or path")
    if v.startswith("-"):
        raise Invalid("is not a git URL or path (a leading '-' is an option to git)")
    return v


# --- paths -----------------------------------------------------------------------------------
def path(value) -> str:
    """A path without spaces or shell syntax; never an option ('-...'); '~' only as a leading '~/'."""
    if isinstance(value, str) and value.startswith("-"):
        raise Invalid("is not a path (a leading '-' reads as an option)")
    v = matching(value, r"[A-Za-z0-9_./~+-]+", "is not a path without spaces")
    if "~" in v and not (v.startswith("~/") and "~" not in v[2:]):
        raise Invalid("may use '~' only as a leading '~/'")
    return v


def checkout(value) -> str:
    """A checkout directory: below home (relative or ``~/``) or absolute, never '/', home or '..'."""
    v = path(value)
    rest = v[2:] if v.startswith("~/") else v
    if ".." in rest.split("/") or posixpath.normpath(rest) in (".", "/", "//") or rest == "":
        raise Invalid("is not a checkout directory ('/', the home directory itself, or '..')")
    return v


def command_path(value) -> str:
    """A program to run remotely (python): quoted when used, so '~' would never expand."""
    v = path(value)
    if "~" in v:
        raise Invalid("may not use '~' (it is quoted and never expands): give an absolute path")
    return v
