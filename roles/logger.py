"""Logger role: ``python3 -m roles.logger --config F``.

A TCP server on (hosts.logger.ip, port) that accepts one connection per sensor, cuts each
stream into records and stores every record exactly once in SQLite (``out_dir/logger.db``,
WAL): ``records`` keyed by (sensor_id, seq) with INSERT OR IGNORE, so a duplicate is counted,
not stored twice; anything that is not a valid record goes to ``bad_records`` with its raw
bytes and reason. Commits are batched (every 100 ms or 1000 rows). In xdp mode the sensor's
connection arrives rewritten by the hardworker's XDP program, apparently from the sensor to
the logger's own IP: nothing special is needed here. Runs until SIGTERM/SIGINT.
"""

import logging
import os
import selectors
import socket
import sqlite3
import sys
import time

from roles import runtime
from roles.record import Bad, DeliveryCounter, RecordStream

log = logging.getLogger("tcpskim.logger")

COMMIT_EVERY_S = 0.1
COMMIT_ROWS = 1000
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    sensor_id INTEGER NOT NULL, seq INTEGER NOT NULL, send_ns INTEGER NOT NULL,
    recv_ns INTEGER NOT NULL, length INTEGER NOT NULL, crc_ok INTEGER NOT NULL,
    PRIMARY KEY (sensor_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bad_records (
    id INTEGER PRIMARY KEY, peer TEXT NOT NULL, recv_ns INTEGER NOT NULL, reason TEXT NOT NULL,
    sensor_id INTEGER, seq INTEGER, raw BLOB NOT NULL);
"""


class Store:
    """Batched SQLite writer; counts stored rows and duplicates exactly."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.rows, self.bad_rows = [], []
        self.stored = self.duplicates = self.bad = self.commits = 0
        self.last_commit = time.monotonic()

    def add(self, peer, recv_ns, item):
        if isinstance(item, Bad):
            self.bad_rows.append((peer, recv_ns, item.reason, item.sensor_id, item.seq, item.raw))
        else:
            self.rows.append((item.sensor_id, item.seq, item.send_ns, recv_ns, len(item.payload), 1))

    def maybe_commit(self):
        if (len(self.rows) + len(self.bad_rows) >= COMMIT_ROWS
                or time.monotonic() - self.last_commit >= COMMIT_EVERY_S):
            self.commit()

    def commit(self):
        self.last_commit = time.monotonic()
        if not self.rows and not self.bad_rows:
            return
        self.db.execute("BEGIN")
        before = self.db.total_changes
        self.db.executemany("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?)", self.rows)
        inserted = self.db.total_changes - before
        self.db.executemany("INSERT INTO bad_records (peer, recv_ns, reason, sensor_id, seq, raw)"
                            " VALUES (?,?,?,?,?,?)", self.bad_rows)
        self.db.execute("COMMIT")
        self.stored += inserted
        self.duplicates += len(self.rows) - inserted
        self.bad += len(self.bad_rows)
        self.commits += 1
        self.rows, self.bad_rows = [], []

    def close(self):
        self.commit()
        self.db.close()


class Conn:
    def __init__(self, sock, peer):
        self.sock, self.peer = sock, f"{peer[0]}:{peer[1]}"
        self.stream = RecordStream()
        self.opened_at, self.closed_at = time.time(), None


def serve(role: runtime.Role) -> int:
    cfg = role.cfg
    me = cfg["hosts"]["logger"]
    db_path = os.path.join(cfg["out_dir"], "logger.db")
    store = Store(db_path)
    counter = DeliveryCounter()
    conns: list[Conn] = []
    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s = role.summary
    try:
        lsock.bind((me["ip"], cfg["port"]))
        lsock.listen(64)
        lsock.setblocking(False)
        sel.register(lsock, selectors.EVENT_READ, None)
        log.info("listening on %s:%d, db %s", me["ip"], cfg["port"], db_path)
        role.ready(listen=f"{me['ip']}:{cfg['port']}")
        while not role.stop.is_set():
            for key, _ in sel.select(timeout=COMMIT_EVERY_S):
                if key.data is None:
                    try:
                        sock, peer = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    sock.setblocking(False)
                    c = Conn(sock, peer)
                    conns.append(c)
                    sel.register(sock, selectors.EVENT_READ, c)
                    log.info("accepted %s", c.peer)
                    continue
                c = key.data
                try:
                    data = c.sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    log.warning("%s: %s", c.peer, exc)
                    data = b""
                now = time.time_ns()
                items = c.stream.feed(data) if data else c.stream.close()
                for item in items:
                    store.add(c.peer, now, item)
                    counter.add(item)
                if not data:
                    sel.unregister(c.sock)
                    c.sock.close()
                    c.closed_at = time.time()
                    log.info("%s closed: %d records, %d bad", c.peer, c.stream.records, c.stream.bad)
            store.maybe_commit()
    finally:
        for c in conns:
            if c.closed_at is None:
                for item in c.stream.close():
                    store.add(c.peer, time.time_ns(), item)
                    counter.add(item)
                c.sock.close()
        lsock.close()
        sel.close()
        store.close()
        s.update(accepted=len(conns), stored=store.stored, duplicates=store.duplicates,
                 bad=store.bad, commits=store.commits, delivery=counter.summary(),
                 connections=[{"peer": c.peer, "records": c.stream.records, "bad": c.stream.bad,
                               "bytes": c.stream.bytes_in, "opened_at": c.opened_at,
                               "closed_at": c.closed_at} for c in conns])
    return 0


def main(argv=None):
    return runtime.run_role("logger", serve, argv)


if __name__ == "__main__":
    sys.exit(main())
