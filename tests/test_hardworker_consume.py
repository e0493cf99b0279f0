"""The xdp consumer's batch step (roles.hardworker.consume_batch) without a kernel: skimmed
segments -> reassembly -> records -> decision, including a reconnect from the same port."""

from roles.hardworker import Decider, consume_batch
from roles.reassembly import Reassembler
from roles.record import encode

SYN, FIN, PSH, ACK = 0x02, 0x01, 0x08, 0x10
KEY = ("198.18.0.11", 40000)


def connection(isn, sensor_id, seqs, size=64, cut=None):
    """Segments of one connection: SYN, one segment per record, FIN (after ``cut`` bytes if given)."""
    data = b"".join(encode(sensor_id, s, 1, size) for s in seqs)
    if cut is not None:
        data = data[:cut]
    segs = [(KEY, isn, SYN, b"")]
    seq = isn + 1
    step = 40 + size
    for i in range(0, len(data), step):
        segs.append((KEY, seq, PSH | ACK, data[i:i + step]))
        seq += len(data[i:i + step])
    if cut is None:
        segs.append((KEY, seq, FIN | ACK, b""))
    return segs


def test_one_connection_delivers_every_record_and_ends():
    streams, reasm, dec = {}, Reassembler(), Decider(0, 0, 0)
    consume_batch(connection(1000, 7, range(5)), streams, reasm, dec, 10)
    assert dec.counter.summary()["delivered"] == 5 and streams[KEY].finished


def test_reconnect_from_the_same_port_gets_a_new_stream():
    streams, reasm, dec = {}, Reassembler(), Decider(0, 0, 0)
    first = connection(1000, 7, range(3))
    second = connection(90_000, 7, range(3, 6))
    consume_batch(first[:2], streams, reasm, dec, 10)  # two batches: the restart spans them
    consume_batch(first[2:] + second, streams, reasm, dec, 20)
    s = dec.counter.summary()
    assert (s["delivered"], s["lost"], s["corrupt"], s["duplicates"]) == (6, 0, 0, 0)
    assert set(streams) == {KEY, (*KEY, "#0")}
    assert streams[(*KEY, "#0")].finished and streams[KEY].finished
    assert streams[KEY].records.records == 3 and streams[(*KEY, "#0")].records.records == 3


def test_restart_mid_record_reports_the_old_tail_for_its_sensor():
    streams, reasm, dec = {}, Reassembler(), Decider(0, 0, 0)
    old = connection(1000, 7, range(2), cut=104 + 60)  # record 0 whole, record 1 cut after its header
    consume_batch(old + connection(5000, 7, range(2, 4)), streams, reasm, dec, 10)
    per = dec.counter.summary()["per_sensor"]["7"]
    assert (per["delivered"], per["corrupt"], per["lost"]) == (3, 1, 0)
    assert streams[(*KEY, "#0")].finished
