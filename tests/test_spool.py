"""The durable spool: round trips, sealing, the byte bound, group commit, recovery from
torn tails and from a killed writer, quarantine and the spool's lifecycle.

Everything runs on real files, real threads and a real child process. ``Syncs`` wraps
``os.fsync`` and ``os.fdatasync`` to count syncs and, on demand, to hold them (a slow
disk) or fail one (a broken disk).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from spanhouse.collector.spool import Record, RecoveryReport, Segment, Spool, _header
from spanhouse.errors import Backpressure, ConfigError, InvalidData, SpoolFull

MB = 1 << 20


class Spools:
    """Opens spools, on ``directory`` unless told otherwise, and closes them all after
    the test. Age sealing is off (``seal_after`` 60 s) unless a test asks for it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opened: list[Spool] = []

    def recover(self, directory: Path | None = None, **options: Any) -> tuple[Spool, RecoveryReport]:
        spool = Spool(directory or self.directory, **{"max_bytes": 64 * MB, "seal_after": 60.0, **options})
        report = spool.open()
        self.opened.append(spool)
        return spool, report

    def open(self, directory: Path | None = None, **options: Any) -> Spool:
        return self.recover(directory, **options)[0]

    def record_size(self, tenant: str, payload: bytes) -> int:
        """The bytes one record takes in a spool, framing included."""
        spool = self.open(Path(tempfile.mkdtemp(dir=self.directory.parent)), fsync=False)
        spool.append(tenant, payload)
        return spool.bytes


class Syncs:
    """``os.fsync`` and ``os.fdatasync``, counted; ``hold`` makes them wait until
    ``release``, ``fail_calls`` holds the numbers of calls that raise EIO instead."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.waiting = 0
        self.delay = 0.0
        self.fail_calls: set[int] = set()
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        for name in ("fsync", "fdatasync"):
            if hasattr(os, name):
                monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            with self._lock:
                self.calls += 1
                call = self.calls
                self.waiting += 1
            self._open.wait(timeout=10)
            with self._lock:
                self.waiting -= 1
            if call in self.fail_calls:
                raise OSError(errno.EIO, "injected I/O error")
            time.sleep(self.delay)
            real(fd)
        return sync

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()


@pytest.fixture
def spools(tmp_path: Path) -> Iterator[Spools]:
    made = Spools(tmp_path / "spool")
    yield made
    for spool in made.opened:
        spool.close()


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Syncs]:
    wrapped = Syncs(monkeypatch)
    yield wrapped
    wrapped.release()


def drain(spool: Spool) -> list[list[Record]]:
    """The records of every sealed segment, oldest first, deleting each."""
    segments = []
    while (segment := spool.next_sealed(timeout=0)) is not None:
        segments.append(segment.records())
        spool.delete(segment)
    return segments


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def segment_files(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.glob("*.seg"))}


def test_records_round_trip_in_order_across_segments(spools: Spools) -> None:
    spool = spools.open(segment_bytes=800)
    sent = [Record(f"tenant-{i % 3}", f"payload {i};".encode() * (i % 7 + 1)) for i in range(60)]
    for record in sent:
        spool.append(record.tenant, record.payload)
    spool.seal()
    segments = drain(spool)
    assert len(segments) >= 4
    assert [r for segment in segments for r in segment] == sent
    assert (spool.bytes, spool.segment_count) == (0, 0)


def test_a_segment_is_sealed_when_full(spools: Spools) -> None:
    size = spools.record_size("t", bytes(500))
    spool = spools.open(segment_bytes=3 * size)
    for _ in range(3):
        spool.append("t", bytes(500))
    first = spool.next_sealed(timeout=5)
    assert first is not None and first.size == 3 * size and len(first.records()) == 3
    for _ in range(7):
        spool.append("t", bytes(500))
    spool.seal()
    assert list(segment_files(spools.directory).values()) == [3 * size, 3 * size, 3 * size, size]


def test_a_segment_is_sealed_when_old(spools: Spools) -> None:
    spool = spools.open(seal_after=0.05)
    spool.append("t", b"lonely")
    appended = time.monotonic()
    assert spool.segment_count == 1
    segment = spool.next_sealed(timeout=5)
    assert segment is not None and time.monotonic() - appended >= 0.04
    assert segment.records() == [Record("t", b"lonely")]
    spool.append("t", b"next")
    assert spool.segment_count == 2


def test_a_full_spool_refuses_and_writes_nothing_until_space_is_freed(spools: Spools) -> None:
    size = spools.record_size("t", b"x" * 100)
    spool = spools.open(max_bytes=3 * size, segment_bytes=size)
    for _ in range(3):
        spool.append("t", b"x" * 100)
    on_disk = segment_files(spools.directory)
    assert spool.refusing is None  # full to the byte, but nothing was refused yet
    with pytest.raises(SpoolFull, match="holds") as refused:
        spool.append("t", b"y")
    assert refused.value.retry_after > 0
    assert spool.refusing is not None and "full" in spool.refusing  # /readyz: not ready
    with pytest.raises(SpoolFull):
        spool.check_room(1)
    spool.check_room(3 * size + 1)  # could never fit: left to append's PayloadTooLarge, not "retry later"
    assert spool.bytes == 3 * size and segment_files(spools.directory) == on_disk

    oldest = spool.next_sealed(timeout=5)
    assert oldest is not None
    spool.delete(oldest)
    assert spool.bytes == 2 * size and spool.refusing is None  # room again
    spool.check_room(size)
    spool.append("t", b"x" * 100)
    assert spool.bytes == 3 * size


def test_refusing_ends_once_something_leaves_even_if_the_spool_fills_again(spools: Spools) -> None:
    """The refusal was compared with the bytes held at its moment: one large record
    refused by a nearly empty spool left it 'full' for /readyz for as long as small
    records kept it above that level, all of them accepted."""
    size = spools.record_size("t", b"x" * 100)
    spool = spools.open(max_bytes=4 * size, segment_bytes=size)
    spool.append("t", b"x" * 100)
    with pytest.raises(SpoolFull):
        spool.check_room(4 * size)  # a large record that does not fit beside the first
    assert spool.refusing is not None
    spool.append("t", b"x" * 100)  # smaller ones still do: it is not full, but nothing left yet
    oldest = spool.next_sealed(timeout=5)
    assert oldest is not None
    spool.delete(oldest)
    spool.append("t", b"x" * 100)
    spool.append("t", b"x" * 100)  # above the level at the refusal again
    assert spool.refusing is None

def test_refusing_ends_once_a_record_fits_again(spools: Spools) -> None:
    """One request too large for the room left made /readyz say the spool was full for
    as long as nothing left it (the store down: for hours), while every smaller request
    was accepted; a load balancer took the collector out just when it should stay."""
    size = spools.record_size("t", b"x" * 100)
    spool = spools.open(max_bytes=4 * size, segment_bytes=size)
    spool.append("t", b"x" * 100)
    with pytest.raises(SpoolFull):
        spool.append("t", b"x" * (3 * size))
    assert spool.refusing is not None and "full" in spool.refusing
    spool.append("t", b"x" * 100)
    assert spool.refusing is None


def test_records_waiting_to_be_written_count_against_the_bound(spools: Spools, syncs: Syncs) -> None:
    size = spools.record_size("t", b"x" * 100)
    spool = spools.open(max_bytes=size + size // 2)
    syncs.hold()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(spool.append, "t", b"x" * 100)
        wait_until(lambda: syncs.waiting == 1)
        assert spool.bytes == size
        with pytest.raises(SpoolFull):
            spool.append("t", b"x" * 100)
        syncs.release()
        held.result(timeout=5)
    assert spool.bytes == size
    spool.seal()
    assert sum(segment_files(spools.directory).values()) == size


def test_concurrent_appends_are_all_durable_with_few_syncs(spools: Spools, syncs: Syncs) -> None:
    syncs.delay = 0.001  # a real disk's sync latency, so grouping does not depend on this machine
    threads, per_thread = 16, 200
    spool = spools.open(segment_bytes=128 << 10)
    start = threading.Barrier(threads)

    def append_all(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            spool.append(f"tenant-{t}", b"%d:%d:" % (t, i) + bytes(i % 300))

    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(append_all, t) for t in range(threads)]:
            done.result(timeout=30)
    spool.close()
    appends = threads * per_thread
    assert syncs.calls <= appends // 5, f"{syncs.calls} syncs for {appends} appends"

    reopened, report = spools.recover()
    assert report.records == appends and report.torn_bytes == 0
    stored = [r for segment in drain(reopened) for r in segment]
    by_thread: dict[int, list[int]] = {}
    for record in stored:
        t, i, filler = record.payload.split(b":", 2)
        assert record.tenant == f"tenant-{int(t)}" and filler == bytes(int(i) % 300)
        by_thread.setdefault(int(t), []).append(int(i))
    assert by_thread == {t: list(range(per_thread)) for t in range(threads)}


def test_a_failed_sync_acknowledges_no_record_of_its_group(spools: Spools, syncs: Syncs) -> None:
    size = spools.record_size("t", b"r0")
    spool = spools.open()
    spool.append("t", b"r0")
    with ThreadPoolExecutor(6) as pool:
        syncs.hold()
        first = pool.submit(spool.append, "t", b"r1")
        wait_until(lambda: syncs.waiting == 1)  # the flusher syncs r1 alone
        syncs.fail_calls.add(syncs.calls + 1)  # and will fail the group behind it
        group = [pool.submit(spool.append, "t", b"g%d" % i) for i in range(5)]
        wait_until(lambda: spool.bytes == 7 * size)
        syncs.release()
        first.result(timeout=5)
        for waiter in group:
            with pytest.raises(Backpressure, match="not acknowledged") as failed:
                waiter.result(timeout=5)
            assert not isinstance(failed.value, SpoolFull)
            assert isinstance(failed.value.__cause__, OSError)
    assert spool.bytes == 2 * size
    assert spool.refusing is not None and "write failed" in spool.refusing  # /readyz: not ready
    spool.append("t", b"r2")
    assert spool.refusing is None  # a write works again
    spool.close()

    reopened, report = spools.recover()
    assert report.torn_bytes == 0
    assert [[r.payload for r in segment] for segment in drain(reopened)] == [[b"r0", b"r1"], [b"r2"]]


def _valid_record(spools: Spools, tenant: str, payload: bytes) -> bytes:
    """One record exactly as a spool frames it on disk."""
    directory = Path(tempfile.mkdtemp(dir=spools.directory.parent))
    spool = spools.open(directory)
    spool.append(tenant, payload)
    spool.close()
    (path,) = directory.glob("*.seg")
    return path.read_bytes()


TORN_TAILS: dict[str, Callable[[bytes], bytes]] = {
    "truncated header": lambda record: record[:7],
    "truncated body": lambda record: record[:-5],
    "flipped payload byte": lambda record: record[:-1] + bytes([record[-1] ^ 0x01]),
    "flipped header byte": lambda record: record[:5] + bytes([record[5] ^ 0x80]) + record[6:],
    "trailing garbage": lambda record: b"\x00\xffgarbage" * 7,
    # a foreign file's record, checksum right, tenant no UTF-8: it stopped the exporter for good
    "tenant not utf-8": lambda record: _header(b"\xff\xfe", b"payload") + b"\xff\xfepayload",
}


@pytest.mark.parametrize("kind", TORN_TAILS)
def test_a_torn_tail_is_cut_at_the_last_intact_record(spools: Spools, kind: str) -> None:
    sent = [Record("t", b"first"), Record("u", b"second" * 50), Record("t", b"third")]
    spool = spools.open()
    for record in sent:
        spool.append(record.tenant, record.payload)
    spool.close()
    (path,) = spools.directory.glob("*.seg")
    intact = path.stat().st_size
    tail = TORN_TAILS[kind](_valid_record(spools, "t", b"fourth" * 30))
    with path.open("ab") as f:
        f.write(tail)

    reopened, report = spools.recover()
    assert report == RecoveryReport(segments=1, records=3, torn_bytes=len(tail), cut_segments=(path.stem,))
    assert path.stat().st_size == intact
    assert (spools.directory / "quarantine" / f"{path.stem}.{intact}.torn").read_bytes() == tail
    reopened.append("t", b"after")
    reopened.seal()
    segments = drain(reopened)
    assert segments == [sent, [Record("t", b"after")]]


def test_a_corrupt_record_mid_segment_cuts_from_there_and_keeps_a_copy(spools: Spools) -> None:
    size = spools.record_size("t", b"x" * 40)
    spool = spools.open()
    for i in range(5):
        spool.append("t", b"%d" % i + b"x" * 39)
    spool.close()
    (path,) = spools.directory.glob("*.seg")
    data = bytearray(path.read_bytes())
    data[3 * size - 1] ^= 0x01  # the last payload byte of the third record
    path.write_bytes(data)

    reopened, report = spools.recover()
    assert (report.records, report.torn_bytes) == (2, 3 * size)
    assert (spools.directory / "quarantine" / f"{path.stem}.{2 * size}.torn").read_bytes() == data[2 * size:]
    assert [r.payload[:1] for segment in drain(reopened) for r in segment] == [b"0", b"1"]


def test_a_record_inside_a_torn_requests_payload_is_not_taken_for_one(spools: Spools) -> None:
    """A payload is a client's bytes: one can embed a well-formed record with another
    tenant. Were a crash to tear that request, salvage searching its bytes kept the
    embedded record as acknowledged data of the other tenant."""
    forged = _valid_record(spools, "victim", b"spans for someone else")
    spool = spools.open()
    spool.append("a", b"honest request")
    spool.append("attacker", b"attribute: " + forged + b" ...the rest of a large request" * 10)
    spool.close()
    (path,) = spools.directory.glob("*.seg")
    path.write_bytes(path.read_bytes()[:-50])  # the crash: the request's last bytes never reached the disk

    reopened, report = spools.recover()
    assert report.records == 1
    assert [(r.tenant, r.payload) for segment in drain(reopened) for r in segment] == [("a", b"honest request")]


@pytest.mark.parametrize("damage", ["magic", "length longer", "length shorter"])
def test_a_record_with_a_damaged_header_cuts_the_segment_and_nothing_inside_it_is_taken(
        spools: Spools, damage: str) -> None:
    """Its lengths cannot be trusted (the CRC covers them): skipping to where they point
    kept records forged inside the payload, or threw the records after it out as a torn
    tail, and searching on from a damaged magic went through the payload. The segment is
    cut there, as recovery always did (the cut bytes are kept in the quarantine)."""
    forged = _valid_record(spools, "victim", b"spans for someone else")
    spool = spools.open()
    spool.append("a", b"first request")
    spool.append("attacker", b"attribute: " + forged + b" ...the rest of a large request" * 10)  # > 256 bytes
    spool.append("a", b"third request")
    spool.close()
    (path,) = spools.directory.glob("*.seg")
    data = bytearray(path.read_bytes())
    second = spools.record_size("a", b"first request")
    where = {"magic": second, "length longer": second + 13, "length shorter": second + 11}[damage]
    data[where] ^= {"magic": 0x01, "length longer": 0x01, "length shorter": 0x01}[damage]
    path.write_bytes(bytes(data))

    reopened, report = spools.recover()
    assert report.records == 1 and report.torn_bytes == len(data) - second
    assert [(r.tenant, r.payload) for segment in drain(reopened) for r in segment] == [("a", b"first request")]


def test_empty_and_garbage_only_segments_are_removed(spools: Spools) -> None:
    spool = spools.open()
    spool.append("t", b"kept")
    spool.close()
    empty = spools.directory / f"{5:012d}-{'a' * 32}.seg"  # a crash right after creating it
    garbage = spools.directory / f"{6:012d}-{'b' * 32}.seg"
    empty.touch()
    garbage.write_bytes(b"\xde\xad\xbe\xef" * 10)

    reopened, report = spools.recover()
    assert report == RecoveryReport(segments=1, records=1, torn_bytes=40, cut_segments=(garbage.stem,))
    assert not empty.exists() and not garbage.exists()
    assert [r.payload for segment in drain(reopened) for r in segment] == [b"kept"]


_WRITER = """
import os, sys, threading
from pathlib import Path
from spanhouse.collector.spool import Spool

spool = Spool(Path(sys.argv[1]), max_bytes=1 << 30, segment_bytes=16 << 10, seal_after=0.01)
spool.open()

def write(t):
    for i in range(10**9):
        spool.append(f"tenant-{t}", b"%d:%d:" % (t, i) + bytes(300))
        os.write(1, b"%d:%d\\n" % (t, i))

for t in range(4):
    threading.Thread(target=write, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def test_a_killed_writer_loses_no_acknowledged_record(spools: Spools) -> None:
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(spools.directory)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(30, writer.kill)
    watchdog.start()
    try:
        acknowledged: list[bytes] = []
        while len(acknowledged) < 2000 and (line := writer.stdout.readline()):  # type: ignore[union-attr]
            acknowledged.append(line.strip())
        writer.kill()  # SIGKILL, mid-stream
        rest, errors = writer.communicate(timeout=10)
    finally:
        watchdog.cancel()
    assert len(acknowledged) == 2000, errors.decode()
    acknowledged += rest.split()

    reopened, report = spools.recover()
    stored = [r for segment in drain(reopened) for r in segment]
    assert report.records == len(stored)
    keys = [b":".join(r.payload.split(b":")[:2]) for r in stored]
    assert len(keys) == len(set(keys)), "a record is stored twice"
    assert set(acknowledged) <= set(keys), "an acknowledged record is lost"
    by_thread: dict[int, list[int]] = {}
    for record, key in zip(stored, keys):
        t, i = map(int, key.split(b":"))
        assert record.tenant == f"tenant-{t}"
        by_thread.setdefault(t, []).append(i)
    assert all(indexes == list(range(len(indexes))) for indexes in by_thread.values())


def test_segment_names_stay_unique_when_the_directory_is_reused(spools: Spools) -> None:
    names: list[str] = []
    for _ in range(3):
        spool = spools.open(segment_bytes=1)
        spool.append("t", b"one")
        spool.append("t", b"two")
        for _ in range(2):
            segment = spool.next_sealed(timeout=5)
            assert segment is not None
            names.append(segment.name)
            spool.delete(segment)
        spool.close()
        assert segment_files(spools.directory) == {}
        assert names[-2] < names[-1]
    assert len(names) == 6 and len(set(names)) == 6


def test_quarantine_moves_the_segment_and_frees_its_bytes(spools: Spools) -> None:
    spool = spools.open(segment_bytes=1)
    spool.append("t", b"rejected")
    spool.append("t", b"fine")
    rejected = spool.next_sealed(timeout=5)
    assert rejected is not None
    content = rejected.path.read_bytes()
    moved = spool.quarantine(rejected, "CANNOT_PARSE_PROTOBUF")
    assert moved == spools.directory / "quarantine" / rejected.path.name
    assert moved.read_bytes() == content and not rejected.path.exists()
    assert (moved.parent / f"{rejected.name}.reason").read_text() == "CANNOT_PARSE_PROTOBUF"
    fine = spool.next_sealed(timeout=5)
    assert fine is not None and fine.records() == [Record("t", b"fine")]
    assert spool.bytes == fine.size
    spool.close()

    reopened, report = spools.recover()
    assert (report.segments, reopened.bytes) == (1, fine.size)
    assert moved.exists()


def test_a_segment_that_rots_after_sealing_fails_to_read(spools: Spools) -> None:
    spool = spools.open()
    spool.append("t", b"payload")
    spool.seal()
    segment = spool.next_sealed(timeout=5)
    assert segment is not None
    data = bytearray(segment.path.read_bytes())
    data[-1] ^= 0x01
    segment.path.write_bytes(data)
    with pytest.raises(InvalidData, match="corrupt"):
        segment.records()


def test_close_seals_the_active_segment_and_is_idempotent(spools: Spools) -> None:
    spool = spools.open()
    spool.append("t", b"one")
    spool.append("t", b"two")
    assert spool.segment_count == 1 and spool.next_sealed(timeout=0) is None
    spool.close()
    spool.close()
    assert spool.segment_count == 1
    assert spool.next_sealed(timeout=0) is None
    with pytest.raises(Backpressure, match="closed"):
        spool.append("t", b"late")

    reopened, report = spools.recover()
    assert (report.segments, report.records) == (1, 2)
    assert drain(reopened) == [[Record("t", b"one"), Record("t", b"two")]]


def test_reopening_hands_out_the_remaining_sealed_segments_oldest_first(spools: Spools) -> None:
    spool = spools.open(segment_bytes=1)
    for i in range(4):
        spool.append("t", b"%d" % i)
    drained = spool.next_sealed(timeout=5)
    assert drained is not None
    spool.delete(drained)
    spool.close()

    reopened, report = spools.recover(segment_bytes=1)
    assert (report.segments, report.records) == (3, 3)
    reopened.append("t", b"4")  # after the recovered segments, in this run and the next
    reopened.close()
    again = spools.open()
    assert [[r.payload for r in segment] for segment in drain(again)] == [[b"1"], [b"2"], [b"3"], [b"4"]]


def test_a_directory_takes_one_spool_at_a_time(spools: Spools) -> None:
    first = spools.open()
    with pytest.raises(ConfigError, match="in use"):
        Spool(spools.directory, max_bytes=MB).open()
    first.close()
    spools.open()


def test_a_failing_seal_hand_off_stops_nothing(spools: Spools) -> None:
    """A forwarder that cannot take a sealed segment (say the disk is full) must not end
    the flusher: appends go on being acknowledged and every segment reaches the exporter."""
    handed: list[str] = []

    def on_seal(segment: Segment) -> None:
        handed.append(segment.name)
        raise OSError(28, "No space left on device")

    spool = spools.open(segment_bytes=800, on_seal=on_seal)
    # several segments, every seal failing its hand-off; on a thread, so a flusher that
    # died (leaving appends waiting forever) fails the test instead of hanging it
    appends = threading.Thread(target=lambda: [spool.append("t", b"x" * 100 + bytes([i])) for i in range(20)],
                               daemon=True)
    appends.start()
    appends.join(timeout=30)
    assert not appends.is_alive(), "appends hang: the flusher died"
    spool.seal()
    sealed, payloads = [], []
    while (segment := spool.next_sealed(timeout=0.1)) is not None:
        sealed.append(segment.name)
        payloads += [r.payload[-1] for r in segment.records()]
        spool.delete(segment)
    assert len(sealed) >= 3 and sealed == handed
    assert payloads == list(range(20))


def test_sequence_numbers_go_on_after_a_restart_with_an_empty_spool(spools: Spools) -> None:
    names = []
    for _ in range(3):  # each run: one segment, exported (deleted), spool closed
        spool = spools.open()
        spool.append("t", b"x")
        spool.seal()
        segment = spool.next_sealed(timeout=5)
        assert segment is not None
        names.append(segment.name)
        spool.delete(segment)
        spool.close()
    assert [int(n[:12]) for n in names] == [0, 1, 2]


@pytest.mark.parametrize("content", ["", "garbage", "12x", "\x00\x00"])
def test_an_unreadable_sequence_file_stops_the_start_saying_what_to_do(spools: Spools, content: str) -> None:
    spools.open().close()
    (spools.directory / "sequence").write_text(content)
    with pytest.raises(ConfigError, match="should hold the next segment number"):
        spools.open()
