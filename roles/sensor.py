"""Sensor role: ``python3 -m roles.sensor --config F``.

Connects a TCP socket (TCP_NODELAY, IP_TOS = tos) to hardworker ip:port; in xdp mode it first
attaches SensorSkim (so the logger's replies look like the hardworker's) and the logger answers
transparently; in tcp mode it also connects to the logger and sends every record to both.
After ``ready`` and go.json it sends records seq 0, 1, ... with deadline-based pacing
(deadline_i = start_at + i / rate_hz: no drift, a late record goes out at once and is counted,
nothing is skipped) for warmup_s + duration_s + tail_s, then shuts down its write side and
waits (bounded: close_timeout_s, at most STOP_GRACE_S once SIGTERM came) for the peer to close.
"""

import logging
import os
import socket
import sys
import time

from roles import runtime
from roles.counterfile import CounterFile
from roles.record import HEADER_SIZE, encode

log = logging.getLogger("tcpskim.sensor")

SPIN_S = 0.0003  # sleep until this close to a deadline, then spin (sleep overshoots ~50-100 us)
SEND_TIMEOUT_S = 0.2  # send() blocks at most this long between stop-flag checks
STOP_GRACE_S = 1.0  # once stopped, wait at most this long for the peer to close
STOP_POLL_S = 0.1  # recv() blocks at most this long between stop-flag checks


class ConnectFailed(RuntimeError):
    pass


def record_mss(cfg) -> int:
    """The MSS the sensor asks for in the xdp mode.

    Policy ``all``: the capture size. Any other policy: one record per segment (the XDP
    program evaluates a segment only when it is exactly one record). TCP_MAXSEG clamps the
    MSS *before* options, and TCP timestamps (on by default on Linux) take 12 bytes of every
    segment, so ask for 12 more when they are on. A wrong guess only costs the fallback to
    full capture, never a record (bpf/deliver.h)."""
    if not cfg.get("deliver") or cfg["deliver"]["kind"] == "all":
        return cfg["capture_bytes"]
    try:
        with open("/proc/sys/net/ipv4/tcp_timestamps") as f:
            ts = f.read().strip() != "0"
    except OSError:
        ts = True
    return min(cfg["capture_bytes"], HEADER_SIZE + cfg["size_bytes"]) + (12 if ts else 0)


def connect(cfg, src_ip, dst, what):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, cfg["tos"])
    if cfg["mode"] == "xdp":
        # No segment may exceed what the hardworker's XDP program captures (it would be
        # dropped, never forwarded uncaptured): cap the MSS, with or without TCP timestamps.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, record_mss(cfg))
    sock.settimeout(cfg["connect_timeout_s"])
    try:
        sock.bind((src_ip, 0))
        sock.connect((dst, cfg["port"]))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectFailed(f"cannot connect to the {what} {dst}:{cfg['port']} from {src_ip}: {reason}") from None
    sock.settimeout(SEND_TIMEOUT_S)
    log.info("connected to the %s %s:%d from %s:%d (mss %d)", what, dst, cfg["port"], *sock.getsockname(),
             sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
    return sock


def send_all(sock, data, stop) -> bool:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except socket.timeout:
            if stop.is_set():
                return False
    return True


def close_and_wait(sock, timeout, stop=None) -> bool:
    """SHUT_WR, then read until the peer closes; True if it did within timeout.

    Once ``stop`` is set (SIGTERM) the wait ends within STOP_GRACE_S, whatever ``timeout``
    says: the control side SIGKILLs 10 s after SIGTERM, and run()'s finally must detach the
    XDP program before that (a program left attached swallows the port's traffic)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        now = time.monotonic()
        end = now + timeout
        stopping = False
        while now < end:
            if not stopping and stop is not None and stop.is_set():
                stopping = True
                end = min(end, now + STOP_GRACE_S)
            # Short slices: the signal handler only sets the flag, recv() does not return.
            sock.settimeout(max(0.01, min(end - now, STOP_POLL_S)))
            try:
                if not sock.recv(65536):
                    return True
            except socket.timeout:
                pass
            now = time.monotonic()
        return False
    except OSError as exc:
        log.warning("closing: %s", exc)
        return False
    finally:
        sock.close()


def pace_and_send(role, socks, start_at) -> dict:
    cfg, stop = role.cfg, role.stop
    rate, size, sid = cfg["rate_hz"], cfg["size_bytes"], cfg["instance"]
    n = int(round((cfg["warmup_s"] + cfg["duration_s"] + cfg["tail_s"]) * rate))
    # Deadlines on the monotonic clock, anchored once to the wall-clock start_at.
    base = time.monotonic() + (start_at - time.time())
    late = runtime.Reservoir()
    late_100us = late_1ms = 0
    max_late = 0.0
    sent = 0
    first_ns = last_ns = None
    mono, sleep = time.monotonic, time.sleep
    chunk = cfg["chunk_bytes"]  # > 0: write each record in pieces (tests: unaligned segments)
    send = send_all if not chunk else (
        lambda s, rec, stop: all(send_all(s, rec[o:o + chunk], stop) for o in range(0, len(rec), chunk)))
    # How far it got, once a second, for the control side's progress bar (a store into a mapped
    # file: a flush or a system call inside the paced loop made the next record late)
    progress = CounterFile(os.path.join(cfg["out_dir"], f"sensor-{sid}.sent"))
    every = max(1, int(rate))
    for i in range(n):
        if i % every == 0:
            progress.set(sent)
        deadline = base + i / rate
        while True:
            left = deadline - mono()
            if left <= SPIN_S:
                break
            sleep(min(left - SPIN_S, 0.2))
            if stop.is_set():
                break
        if stop.is_set():
            break
        while mono() < deadline:
            pass
        now_ns = time.time_ns()
        lateness = mono() - deadline
        rec = encode(sid, i, now_ns, size)
        if not all(send(s, rec, stop) for s in socks):
            break
        sent += 1
        if first_ns is None:
            first_ns = now_ns
        last_ns = now_ns
        late.add(lateness)
        max_late = max(max_late, lateness)
        late_100us += lateness > 1e-4
        late_1ms += lateness > 1e-3
    progress.set(sent)
    p50, p99 = late.percentiles(50, 99)
    dur = (last_ns - first_ns) / 1e9 if sent > 1 else 0.0
    return {"planned": n, "sent": sent, "sensor_id": sid, "bytes_per_record": len(encode(sid, 0, 0, size)),
            "achieved_rate_hz": (sent - 1) / dur if dur > 0 else None,
            "lateness_us": {"p50": p50 and p50 * 1e6, "p99": p99 and p99 * 1e6,
                            "max": max_late * 1e6, "over_100us": late_100us, "over_1ms": late_1ms},
            "first_send_ns": first_ns, "last_send_ns": last_ns}


def run(role: runtime.Role) -> int:
    cfg = role.cfg
    hosts = cfg["hosts"]
    me = cfg["self_host"]["ip"]
    skim = None
    socks = []
    try:
        if cfg["mode"] == "xdp":
            from roles.skim import SensorSkim, sensor_args
            t0 = time.process_time()
            skim = SensorSkim(**sensor_args(cfg))
            role.summary.update(setup_cpu_s=time.process_time() - t0, bpf_cache=skim.bpf.cache)
            if role.stop.is_set():  # SIGTERM while compiling: never attach
                raise runtime.Stopped("stopped before attaching XDP")
            skim.attach()
            log.info("SensorSkim attached on %s", cfg["interface"])
        elif cfg["mode"] != "tcp":
            raise runtime.ConfigError("mode", "a sensor runs in 'xdp' or 'tcp' mode")
        try:
            socks.append(connect(cfg, me, hosts["hardworker"]["ip"], "hardworker"))
            if cfg["mode"] == "tcp":
                socks.append(connect(cfg, me, hosts["logger"]["ip"], "logger"))
        except ConnectFailed as exc:
            log.error("%s", exc)
            role.summary.update(status="connect_failed", error=str(exc), sent=0)
            return 1
        role.ready()
        start_at = role.wait_go()
        role.summary.update(start_at=start_at)
        role.summary.update(pace_and_send(role, socks, start_at))
        log.info("sent %d records; closing", role.summary["sent"])
        role.summary["peer_closed"] = [close_and_wait(s, cfg["close_timeout_s"], role.stop)
                                     for s in socks]
        socks = []
        return 0
    finally:
        for s in socks:
            s.close()
        if skim is not None:
            try:
                role.summary["skim_counters"] = skim.counters()
            except Exception as exc:  # noqa: BLE001 - counters are informative only
                log.warning("skim counters: %s", exc)
            skim.close()
            log.info("SensorSkim detached")


def main(argv=None):
    runtime.set_timer_slack_ns()
    return runtime.run_role("sensor", run, argv)


if __name__ == "__main__":
    sys.exit(main())
