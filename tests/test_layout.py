"""The XDP programs' shared layout as Python reads it (roles/vocab.py) against the C that writes it.

gcc compiles a probe that includes ``bpf/ring.h`` (the header ``bpf/hardworker.c`` builds its
ring record and counters from) and prints each field's offset and size, the record's header
size, the SKIM_KIND_* values, the kernel's ring header size and every enumerator's value; the
field and enumerator *names* and their order come from the C source. ``mismatches`` compares all
of it with vocab's ``RING_RECORD_FIELDS``, ``HW_COUNTERS`` and ``SENSOR_COUNTERS`` (and the TCP
flag bits and mailbox slots with their ``#define``s), and each counter's class (outcome or event,
from its enum comment) with vocab's ``*_OUTCOMES`` / ``*_EVENTS`` and with how the programs
count it. The mutation tests prove it fails when
either side changes: they edit a temporary copy of ``bpf/`` or hand it an altered Python side.
"""

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from roles import vocab

BPF = Path(__file__).resolve().parent.parent / "bpf"
CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler (gcc)")
CAPTURE = 1448  # any SKIM_CAPTURE: the header before data does not depend on it


def _source(path: Path) -> str:
    """C text without comments."""
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", path.read_text(), flags=re.S)


def enumerators(path: Path, name: str = "skim_counter") -> list[str]:
    m = re.search(rf"enum\s+{name}\s*\{{(.*?)\}}", _source(path), re.S)
    assert m, f"{path.name}: no enum {name}"
    return [e.split("=")[0].strip() for e in m.group(1).split(",") if e.strip()]


def classes(path: Path, name: str = "skim_counter") -> dict:
    """{enumerator: "outcome" | "event"} from the comment each one's line starts with."""
    m = re.search(rf"enum\s+{name}\s*\{{(.*?)\}}", path.read_text(), re.S)
    assert m, f"{path.name}: no enum {name}"
    return dict(re.findall(r"^\s*(C_\w+)[^/\n]*/\*\s*(outcome|event)\b", m.group(1), re.M))


def _rule(enum_file: Path, programs: list, outcomes: tuple, events: tuple, what: str) -> list[str]:
    """The counting rule as the C states it: each counter's class in its enum comment matches
    vocab, and an outcome is only ever counted through verdict() or returned to it, an event
    only through count() (tests/test_verifier.py checks the counts themselves)."""
    got = classes(enum_file)
    want = {f"C_{n.upper()}": "outcome" for n in outcomes} | {f"C_{n.upper()}": "event" for n in events}
    bad = [] if got == want else [f"{what} classes: C {got} != vocab {want}"]
    for prog in programs:
        text = _source(prog)
        for name in re.findall(r"\bcount\(\s*(C_\w+)", text):
            if want.get(name) != "event":
                bad.append(f"{what} classes: {prog.name} count({name}): only events are counted so")
        for name in re.findall(r"\bverdict\(\s*(C_\w+)|\breturn\s+(C_\w+)\s*;", text):
            name = name[0] or name[1]
            if want.get(name) != "outcome":
                bad.append(f"{what} classes: {prog.name} ends a frame with {name}, not an outcome")
    return bad


def members(path: Path, name: str = "skim_rec") -> list[str]:
    m = re.search(rf"struct\s+{name}\s*\{{(.*?)\}};", _source(path), re.S)
    assert m, f"{path.name}: no struct {name}"
    return [re.search(r"(\w+)\s*(\[[^\]]*\])?\s*$", d).group(1) for d in m.group(1).split(";") if d.strip()]


def probe(bpf_dir: Path, tmp: Path, body: str, prelude: str = '#include "ring.h"') -> dict:
    """Compile and run a C program printing `name value` lines; returns {name: int}."""
    src, exe = tmp / "probe.c", tmp / "probe"
    src.write_text(f"#include <stdio.h>\n#include <stddef.h>\n#include <linux/bpf.h>\n{prelude}\n"
                   f"int main(void)\n{{\n{body}\treturn 0;\n}}\n")
    build = subprocess.run([CC, "-std=gnu11", f"-DSKIM_CAPTURE={CAPTURE}", "-I", str(bpf_dir),
                            "-o", str(exe), str(src)], capture_output=True, text=True, timeout=60)
    if build.returncode:
        return {"compile error": build.stderr.strip()}
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=10, check=True).stdout
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines())}


def _say(name: str, expr: str) -> str:
    return f'\tprintf("%s %lld\\n", "{name}", (long long)({expr}));\n'


def _counters(path: Path, got: dict, want: tuple, what: str) -> list[str]:
    """Enumerators in source order must be C_<WANT...>, C_MAX with the values 0, 1, ..."""
    names = enumerators(path)
    bad = []
    if [n.lower() for n in names] != [f"c_{w}" for w in want] + ["c_max"]:
        bad.append(f"{what}: C enum {names} != Python {list(want)} + C_MAX")
    values = [got.get(n) for n in names]
    if values != list(range(len(names))):
        bad.append(f"{what}: enumerator values {dict(zip(names, values))} are not 0, 1, ... in order")
    return bad


def _ring(bpf_dir: Path, tmp: Path, fields) -> list[str]:
    rec = struct.Struct("=" + "".join(code for _, code in fields))
    body = "".join(_say(f"off.{m}", f"offsetof(struct skim_rec, {m})") +
                   _say(f"size.{m}", f"sizeof(((struct skim_rec *)0)->{m})") for m in members(bpf_dir / "ring.h"))
    body += _say("sizeof", "sizeof(struct skim_rec)") + _say("hdr", "BPF_RINGBUF_HDR_SZ")
    body += _say("kind.raw", "SKIM_KIND_RAW") + _say("kind.record", "SKIM_KIND_RECORD")
    body += "".join(_say(n, n) for n in enumerators(bpf_dir / "ring.h"))
    got = probe(bpf_dir, tmp, body)
    if "compile error" in got:
        return [f"ring.h does not compile: {got['compile error']}"]
    names = [n for n, _ in fields]
    c_names = members(bpf_dir / "ring.h")
    bad = [] if c_names == names + ["data"] else [f"struct skim_rec members {c_names} != Python {names} + data"]
    for i, (name, code) in enumerate(fields):
        off, size = struct.calcsize("=" + "".join(c for _, c in fields[:i])), struct.calcsize("=" + code)
        if (got.get(f"off.{name}"), got.get(f"size.{name}")) != (off, size):
            bad.append(f"{name}: C offset/size {got.get(f'off.{name}')}/{got.get(f'size.{name}')}, "
                       f"Python {off}/{size}")
    if got.get("off.data") != rec.size:
        bad.append(f"payload starts at {got.get('off.data')} in C, after {rec.size} bytes in Python")
    if got["sizeof"] - CAPTURE - rec.size not in range(4):
        bad.append(f"sizeof(struct skim_rec) {got['sizeof']}: not header + SKIM_CAPTURE + padding")
    if (got["kind.raw"], got["kind.record"], got["hdr"]) != (vocab.KIND_RAW, vocab.KIND_RECORD,
                                                             vocab.RING_HEADER_BYTES):
        bad.append("SKIM_KIND_* or BPF_RINGBUF_HDR_SZ differ from vocab's KIND_* / RING_HEADER_BYTES")
    return bad


def _defines(bpf_dir: Path) -> list[str]:
    skim, deliver = _source(bpf_dir / "skim.h"), _source(bpf_dir / "deliver.h")
    c_flags = {n: int(v, 0) for n, v in re.findall(r"#define\s+SKIM_(FIN|SYN|RST|PSH|ACK)\s+(\w+)", skim)}
    py_flags = {n: getattr(vocab, n) for n in ("FIN", "SYN", "RST", "PSH", "ACK")}
    bad = [] if c_flags == py_flags else [f"TCP flags: skim.h {c_flags} != vocab {py_flags}"]
    slots = re.search(r"#define\s+SKIM_SLOTS\s+(\d+)", deliver)
    if not slots or int(slots.group(1)) != vocab.MAILBOX_SLOTS:
        bad.append(f"SKIM_SLOTS {slots and slots.group(1)} != vocab.MAILBOX_SLOTS {vocab.MAILBOX_SLOTS}")
    return bad


def mismatches(bpf_dir: Path, tmp: Path, fields=vocab.RING_RECORD_FIELDS, hw=vocab.HW_COUNTERS,
               sensor=vocab.SENSOR_COUNTERS, hw_outcomes=vocab.HW_OUTCOMES,
               hw_events=vocab.HW_EVENTS) -> list[str]:
    """Every way the C in ``bpf_dir`` and the given Python layout disagree ([] = they agree)."""
    bad = _ring(bpf_dir, tmp, fields)
    hw_got = probe(bpf_dir, tmp, "".join(_say(n, n) for n in enumerators(bpf_dir / "ring.h")))
    bad += _counters(bpf_dir / "ring.h", hw_got, hw, "hardworker counters")
    block = re.search(r"enum\s+skim_counter\s*\{.*?\};", _source(bpf_dir / "sensor.c"), re.S).group(0)
    sen_names = enumerators(bpf_dir / "sensor.c")
    sen_got = probe(bpf_dir, tmp, "".join(_say(n, n) for n in sen_names), prelude=block)
    bad += _counters(bpf_dir / "sensor.c", sen_got, sensor, "sensor counters")
    bad += _rule(bpf_dir / "ring.h", [bpf_dir / "hardworker.c"], hw_outcomes, hw_events, "hardworker")
    bad += _rule(bpf_dir / "sensor.c", [bpf_dir / "sensor.c"], vocab.SENSOR_OUTCOMES,
                 vocab.SENSOR_EVENTS, "sensor")
    return bad + _defines(bpf_dir)


def test_python_and_c_agree(tmp_path):
    assert mismatches(BPF, tmp_path) == []


def test_vocab_derives_the_overhead_from_the_layout():
    assert vocab.RING_RECORD.size == 20 and vocab.RING_RECORD_OVERHEAD == 28


def _edit(tmp_path, name, old, new) -> Path:
    copy = tmp_path / "bpf"
    shutil.copytree(BPF, copy)
    text = (copy / name).read_text()
    assert old in text, f"the mutation no longer applies to {name}: {old!r}"
    (copy / name).write_text(text.replace(old, new, 1))
    return copy


@pytest.mark.parametrize("name, old, new, expect", [
    ("ring.h", "__u8 flags;    /* TCP flags byte */\n\t__u8 kind;",  # same sizes, other order
     "__u8 kind;\n\t__u8 flags;", "members"),
    ("ring.h", "__u32 base;", "__u64 base;", "base: C offset/size"),  # a wider field
    ("ring.h", "__u32 len; ", "__u16 len; ", "len: C offset/size"),
    ("ring.h", "__u32 base;", "__u32 base;\n\t__u8 extra;", "members"),  # a field added
    ("ring.h", "C_PASSED,", "C_PASSED,\n\tC_NEW,", "hardworker counters"),  # a counter added
    ("ring.h", "C_CAPTURED,", "C_CAPTURED = 5,", "values"),
    ("sensor.c", "C_REWRITTEN = 0,  /* outcome: a logger reply made the hardworker's: XDP_PASS */\n\tC_PASSED,",
     "C_PASSED = 0,  /* outcome */\n\tC_REWRITTEN,", "sensor counters"),  # two swapped
    ("ring.h", "#define SKIM_KIND_RECORD 1", "#define SKIM_KIND_RECORD 2", "SKIM_KIND_"),
    ("skim.h", "#define SKIM_PSH 0x08", "#define SKIM_PSH 0x80", "TCP flags"),
    ("deliver.h", "#define SKIM_SLOTS 64", "#define SKIM_SLOTS 32", "SKIM_SLOTS"),
    ("ring.h", "C_MAILBOX,          /* event", "C_MAILBOX,          /* outcome", "hardworker classes"),
    ("sensor.c", "C_PASSED,         /* outcome", "C_PASSED,         /* event", "sensor classes"),
    ("hardworker.c", "count(C_MATCHED);", "count(C_MATCHED);\n\tcount(C_PASSED);", "count(C_PASSED)"),
    ("hardworker.c", "return C_DROPPED_ORDER;", "return C_MATCHED;", "not an outcome"),
    ("sensor.c", "return verdict(C_REWRITTEN, XDP_PASS);", "count(C_REWRITTEN);\n\treturn XDP_PASS;",
     "count(C_REWRITTEN)"),
])
def test_a_changed_c_side_is_caught(tmp_path, name, old, new, expect):
    bad = mismatches(_edit(tmp_path, name, old, new), tmp_path)
    assert any(expect in b for b in bad), bad


SWAPPED = tuple(vocab.RING_RECORD_FIELDS[i] for i in (0, 1, 3, 2, 4, 5, 6))
NARROW = vocab.RING_RECORD_FIELDS[:-1] + (("base", "H"),)


@pytest.mark.parametrize("over, expect", [
    ({"fields": SWAPPED}, "members"),
    ({"fields": NARROW}, "payload starts"),
    ({"fields": vocab.RING_RECORD_FIELDS[:-1]}, "members"),
    ({"hw": vocab.HW_COUNTERS[:-1]}, "hardworker counters"),
    ({"sensor": ("passed", "rewritten", "malformed")}, "sensor counters"),
    ({"hw_outcomes": vocab.HW_OUTCOMES + ("matched",),
      "hw_events": vocab.HW_EVENTS[1:]}, "hardworker classes"),
])
def test_a_changed_python_side_is_caught(tmp_path, over, expect):
    bad = mismatches(BPF, tmp_path, **over)
    assert any(expect in b for b in bad), bad
