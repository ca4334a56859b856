"""The durable spool: the collector acknowledges a request only once it is in here.

Requests are appended to segment files ``<name>.seg`` in one directory. One segment is
active (appended to); it is sealed, never to be written again, when it reaches
``segment_bytes``, when it is older than ``seal_after`` seconds, or on ``seal()`` /
``close()``. A single drainer thread takes sealed segments oldest first
(``next_sealed``), inserts each into ClickHouse as one batch with the segment's name as
the insert deduplication token, and then ``delete``s it, or ``quarantine``s it if
ClickHouse rejects its data for good. ``next_sealed`` hands out the same oldest segment
until it is gone, so the drainer retries it; there must be only one drainer.

Record framing (little-endian), one record after another with no file header::

    magic "SPL\\x01" (4) | crc32 (4) | tenant length u16 (2) | payload length u32 (4)
    | tenant (UTF-8) | payload

The CRC (``zlib.crc32``) covers everything after itself: both lengths, the tenant and
the payload, so a flipped length is caught as surely as a flipped payload byte.

Group commit: ``append`` frames its record in the caller's thread, adds it to the pending
group and waits. The flusher thread takes the whole group, writes it with one
``write`` and one ``fdatasync``, then wakes every appender of the group; records that
arrive meanwhile form the next group. If the write or sync fails, no appender of that
group is acknowledged (each gets ``Backpressure``, so its client retries), and the
active segment is cut back to its last synced byte and sealed.

Recovery (``open``): every segment on disk counts as sealed. A segment whose tail is not
a sequence of intact records (a crash mid-write, a crash right after creating the file,
garbage, a flipped bit) is cut at the end of its last intact record; the cut bytes are
copied to ``quarantine/`` first, since a corrupt record mid-segment also cuts the
acknowledged records after it. A segment left with nothing is deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from spanhouse.errors import Backpressure, ConfigError, InvalidData, PayloadTooLarge, SpoolFull

log = logging.getLogger(__name__)

_MAGIC = b"SPL\x01"
_HEADER = struct.Struct("<4sIHI")  # magic, crc32, tenant length, payload length
_LENGTHS = struct.Struct("<HI")
_CRC_START = 8  # the CRC covers a record from its lengths (byte 8) to its end
_MAX_TENANT = 0xFFFF
_MAX_PAYLOAD = 0xFFFFFFFF
_SUFFIX = ".seg"
SEGMENT_NAME = re.compile(r"\d{12}-[0-9a-f]{32}")
_QUARANTINE = "quarantine"
_SEQUENCE_FILE = "sequence"  # the next segment's sequence number
_LOCK_FILE = ".lock"
_RETRY_AFTER = 1.0
_WRITE_FAILURE_S = 5.0  # how long a failed write keeps the spool reported as refusing


@dataclass(frozen=True)
class Record:
    """One appended payload and the tenant it belongs to."""

    tenant: str
    payload: bytes


@dataclass(frozen=True)
class RecoveryReport:
    """What ``Spool.open`` found: ``segments`` that hold at least one intact record,
    their ``records``, and the ``torn_bytes`` cut from the tails of ``cut_segments``."""

    segments: int
    records: int
    torn_bytes: int
    cut_segments: tuple[str, ...]


@dataclass(frozen=True)
class Segment:
    """A sealed segment: never appended to again.

    ``name`` is a sequence number (the order) and a random UUID (uniqueness): it never
    repeats, even after the spool directory is emptied and reused, so it can serve as
    the ClickHouse deduplication token of the segment's insert.
    """

    name: str
    path: Path
    size: int

    def records(self) -> list[Record]:
        """Every record in append order; ``InvalidData`` if any fails its check."""
        with self.path.open("rb") as f:
            data = f.read(self.size)
        records, ranges, _ = intact_records(data)
        end = ranges[-1][1] if ranges else 0
        if end != self.size:
            raise InvalidData(f"spool segment {self.name} is corrupt after byte {end} of {self.size}; "
                              f"quarantine it")
        return records


def _header(tenant: bytes, payload: bytes) -> bytes:
    lengths = _LENGTHS.pack(len(tenant), len(payload))
    crc = zlib.crc32(payload, zlib.crc32(tenant, zlib.crc32(lengths)))
    return _HEADER.pack(_MAGIC, crc, len(tenant), len(payload))


def _intact(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(start of tenant, tenant length, payload length) of each record in ``data``, in
    order, up to the first that is incomplete, fails its magic or CRC, or names a tenant
    that is no UTF-8 (no spool writes one: a foreign file's, whose decoding failed out
    of the exporter, which retried the segment for ever and drained none behind it)."""
    view = memoryview(data)
    offset = 0
    while offset + _HEADER.size <= len(data):
        magic, crc, tenant_len, payload_len = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        end = start + tenant_len + payload_len
        if magic != _MAGIC or end > len(data) or zlib.crc32(view[offset + _CRC_START:end]) != crc:
            return
        try:
            str(view[start:start + tenant_len], "utf-8")
        except UnicodeDecodeError:
            return
        yield start, tenant_len, payload_len
        offset = end


def intact_records(data: bytes) -> tuple[list[Record], list[tuple[int, int]], int]:
    """A segment's records up to the first that is not intact, their (start, end) byte
    ranges, and how many bytes follow them: what recovery would keep of the segment, for
    a reader whose copy recovery did not cut (a forwarder's hard link, read later)."""
    records: list[Record] = []
    ranges: list[tuple[int, int]] = []
    offset = 0
    for start, tenant_len, payload_len in _intact(data):
        tenant_end = start + tenant_len
        records.append(Record(data[start:tenant_end].decode(), data[tenant_end:tenant_end + payload_len]))
        ranges.append((offset, tenant_end + payload_len))
        offset = tenant_end + payload_len
    return records, ranges, len(data) - offset


def sync_dir(path: Path) -> None:
    """fsync a directory: what was created, renamed or removed in it outlives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def holds_segments(directory: Path) -> bool:
    """Whether a spool's ``directory`` holds a segment (read without opening the spool)."""
    return any(directory.glob(f"*{_SUFFIX}"))


def write_atomic(path: Path, text: str, sync: bool = True) -> None:
    """Replace ``path``'s content by ``text`` so that a crash leaves the old or the new
    content, never a mix (a temporary file renamed over it; synced unless ``sync`` is off)."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        if sync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync:
        sync_dir(path.parent)


def sequence(name: str) -> int:
    """The sequence number of a segment name (its order among the spool's segments)."""
    return int(name[:12])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass
class _Group:
    """Records that share one write and one sync, and the appenders waiting on them."""

    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


@dataclass
class _Active:
    """The segment being appended to; ``size`` counts only synced bytes."""

    name: str
    path: Path
    fd: int
    created: float
    size: int = 0


class Spool:
    """A durable, bounded, append-only spool of records with group commit.

    ``max_bytes`` bounds every byte held: sealed and active segments on disk plus
    records waiting to be written; an append that would cross it raises ``SpoolFull``.
    ``fsync=False`` skips every sync (tests, or a disk that is already volatile).
    ``append`` is thread-safe; one drainer thread uses ``next_sealed``, ``delete``,
    ``quarantine``.
    """

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 << 20,
                 seal_after: float = 0.25, fsync: bool = True,
                 on_seal: Callable[[Segment], None] | None = None) -> None:
        """``on_seal`` is called with every segment once it is sealed (on the flusher
        thread) and with every segment recovered by ``open``: cheap work only."""
        if max_bytes <= 0 or segment_bytes <= 0 or seal_after <= 0:
            raise ConfigError(f"spool bounds must be positive: max_bytes={max_bytes}, "
                              f"segment_bytes={segment_bytes}, seal_after={seal_after}")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._seal_after = seal_after
        self._fsync = fsync
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the flusher waits for records here
        self._ready = threading.Condition(self._lock)  # next_sealed waits for a segment here
        # Guards the active segment's file; taken before _lock, never while holding it.
        self._io = threading.Lock()
        self._pending = _Group()
        self._sealed: list[Segment] = []
        self._active: _Active | None = None
        self._bytes = 0
        self._seq = 0
        self._accepting = False
        self._closed = False
        self._lock_fd: int | None = None
        self._flusher: threading.Thread | None = None
        self._flusher_idle = False
        self._on_seal = on_seal
        self._refused = False  # the last record offered was refused for room (see refusing)
        self._write_failed: float | None = None  # when a write last failed, until one succeeds

    def open(self) -> RecoveryReport:
        """Create or recover the directory and start the flusher.

        Raises ``ConfigError`` if the directory is unusable or another spool holds it.
        """
        if self._flusher is not None or self._closed:
            raise RuntimeError("a Spool opens once; make a new one to reopen its directory")
        if self._lock_fd is None:
            self.lock()
        try:
            report = self._recover()
        except OSError as exc:
            self._unlock_directory()
            raise self._unusable(exc) from exc
        log.info("spool %s opened: %s", self._dir, report)
        self._accepting = True
        self._flusher = threading.Thread(target=self._run, name="spanhouse-spool-flusher", daemon=True)
        self._flusher.start()
        return report

    def lock(self) -> None:
        """Take the directory before ``open`` (which takes it otherwise): whoever keeps
        files in it beside the spool (the forward backlogs) must not touch them while
        another collector holds it. ``ConfigError`` if another spool does."""
        try:
            self._lock_directory()
        except OSError as exc:
            raise self._unusable(exc) from exc

    def _unusable(self, exc: OSError) -> ConfigError:
        return ConfigError(f"spool directory {self._dir} cannot be used: {exc}")

    def append(self, tenant: str, payload: bytes) -> None:
        """Return once the record is written and synced: only then may it be acknowledged.

        Raises ``SpoolFull`` (nothing written) if the spool would exceed ``max_bytes``,
        ``Backpressure`` if the spool is closed or the write failed, ``PayloadTooLarge``
        if the record alone exceeds ``max_bytes``.
        """
        tenant_bytes = tenant.encode()
        if len(tenant_bytes) > _MAX_TENANT:
            raise InvalidData(f"tenant name of {len(tenant_bytes)} bytes is over the limit of {_MAX_TENANT}")
        size = _HEADER.size + len(tenant_bytes) + len(payload)
        if size > self._max_bytes or len(payload) > _MAX_PAYLOAD:
            raise PayloadTooLarge(f"a record of {size} bytes can never fit a spool of {self._max_bytes} bytes")
        header = _header(tenant_bytes, payload)
        with self._lock:
            if not self._accepting:
                raise Backpressure("the spool is closed; retry once the collector runs again", retry_after=_RETRY_AFTER)
            self._room_for(size)  # size <= max_bytes was checked above
            self._refused = False  # this one fits: refusing no longer
            self._bytes += size
            group = self._pending
            group.parts += (header, tenant_bytes, payload)
            group.size += size
            if self._flusher_idle:  # a busy flusher looks for pending records before it waits
                self._work.notify()
        group.done.wait()
        if group.error is not None:
            raise Backpressure(f"the spool could not store the record ({group.error}); it is not "
                               f"acknowledged, retry", retry_after=_RETRY_AFTER) from group.error

    def check_room(self, size: int) -> None:
        """Raise ``SpoolFull`` if a record of about ``size`` bytes would not fit now.

        Lets a receiver refuse under backpressure before it spends CPU decoding and
        validating a request it cannot store; ``append`` checks again under the lock.
        ``size`` is the received body's, an estimate (a JSON body's record is smaller), so
        a body larger than the whole spool passes: it is decoded, and refused as too large
        only if its record is, rather than asked to retry forever.
        """
        with self._lock:
            self._room_for(size)

    def _room_for(self, size: int) -> None:
        """``check_room`` under ``_lock``. A refusal makes ``refusing`` say so until a
        record fits again or something leaves the spool."""
        if size <= self._max_bytes and self._bytes + size > self._max_bytes:
            self._refused = True
            raise SpoolFull(f"the spool holds {self._bytes} of {self._max_bytes} bytes: ClickHouse is "
                            f"behind or down; retry later", retry_after=_RETRY_AFTER)

    def next_sealed(self, timeout: float) -> Segment | None:
        """The oldest sealed segment not yet deleted or quarantined, waiting up to
        ``timeout`` s for one; ``None`` if there is none or the spool is closed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._sealed and self._accepting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._ready.wait(remaining)
            return self._sealed[0] if self._sealed and self._accepting else None

    def sealed_names(self) -> list[str]:
        """The names of the sealed segments not yet deleted or quarantined, oldest first."""
        with self._lock:
            return [segment.name for segment in self._sealed]

    def delete(self, segment: Segment) -> None:
        """Remove a segment whose insert succeeded and free its bytes; again is a no-op."""
        segment.path.unlink(missing_ok=True)
        self._forget(segment)  # before the sync: if that fails, the file is gone all the same
        # Without this a power loss could bring the segment back: a replay the
        # deduplication token absorbs, but bytes held for nothing.
        self._sync_dir(self._dir)

    def lost(self, segment: Segment) -> None:
        """Forget a segment whose file is gone (removed by something else)."""
        self._forget(segment)

    def quarantine(self, segment: Segment, reason: str) -> Path:
        """Move a segment ClickHouse rejects for good to ``quarantine/`` (with a
        ``.reason`` file next to it) where it is kept and no longer counted; its new path."""
        target_dir = self._quarantine_dir()
        target = target_dir / segment.path.name
        self._write_file(target_dir / f"{segment.name}.reason", reason.encode())
        segment.path.rename(target)
        self._forget(segment)  # before the syncs: if they fail, the file has moved all the same
        self._sync_dir(target_dir)
        self._sync_dir(self._dir)
        log.warning("spool segment %s quarantined in %s: %s", segment.name, target_dir, reason)
        return target

    def seal(self) -> None:
        """Seal the active segment now if it holds any record."""
        with self._io:
            if self._active is not None:
                self._seal_active()

    def close(self) -> None:
        """Write what is pending, seal the active segment, stop the flusher; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._accepting = False
            self._work.notify()
            self._ready.notify_all()
        if self._flusher is not None:
            self._flusher.join()
            self.seal()
        self._unlock_directory()

    # -- the flusher ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending.parts and self._accepting:
                    wait = self._until_seal()
                    if wait is not None and wait <= 0:
                        break
                    self._flusher_idle = True
                    self._work.wait(wait)
                    self._flusher_idle = False
                group, self._pending = self._pending, _Group()
                stopping = not self._accepting
            try:
                if group.parts:
                    self._commit(group)
                self._seal_if_old()
            except Exception as exc:  # noqa: BLE001 - a dead flusher would leave every append waiting
                log.exception("spool flusher failed; the records in flight are not acknowledged")
                if not group.done.is_set():
                    group.error = exc
                    group.done.set()
            if stopping:  # no append is admitted once closing, so this group was the last
                return

    def _until_seal(self) -> float | None:
        """Seconds until the active segment is due to be sealed for age; None if none."""
        if self._active is None:
            return None
        return self._active.created + self._seal_after - time.monotonic()

    def _commit(self, group: _Group) -> None:
        with self._io:
            try:
                data = b"".join(group.parts)
                active = self._segment_for(len(data))
                _write_all(active.fd, data)
                self._sync(active.fd)
            except Exception as exc:  # whatever failed, the waiters must hear of it
                log.error("spool write of %d bytes failed; not acknowledged: %s", group.size, exc)
                self._abandon_active()
                with self._lock:
                    self._bytes -= group.size
                    self._refused = False
                self._write_failed = time.monotonic()
                group.error = exc
                group.done.set()
                return
            with self._lock:
                active.size += len(data)
            self._write_failed = None
            group.done.set()
            if active.size >= self._segment_bytes:
                self._seal_active()

    def _segment_for(self, size: int) -> _Active:
        """The active segment, sealed and replaced first if ``size`` more bytes would
        overfill it; a group larger than a segment gets one of its own."""
        if self._active is not None and self._active.size + size > self._segment_bytes:
            self._seal_active()
        return self._active or self._new_segment()

    def _new_segment(self) -> _Active:
        name = f"{self._seq:012d}-{uuid.uuid4().hex}"
        path = self._dir / f"{name}{_SUFFIX}"
        # Before the segment exists: a restart with an empty spool goes on from here, so
        # sequence numbers never repeat (forwarding orders and skips segments by them).
        write_atomic(self._dir / _SEQUENCE_FILE, str(self._seq + 1), sync=self._fsync)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._seq += 1
        active = _Active(name, path, fd, time.monotonic())
        with self._lock:
            self._active = active
        self._sync_dir(self._dir)  # the new name must outlive a power loss, with its records
        return active

    def _abandon_active(self) -> None:
        """After a failed write or sync, cut the active segment back to its synced bytes
        and seal it (or drop it if it has none). It is not written again: after a failed
        sync the kernel may have dropped pages, so a fresh file is the safe place."""
        active = self._active
        if active is None:
            return
        try:
            os.ftruncate(active.fd, active.size)
            self._sync(active.fd)
        except OSError as exc:
            log.error("spool segment %s may keep records that were not acknowledged; they would be "
                      "inserted along with their retries: %s", active.name, exc)
        if active.size:
            self._seal_active()
            return
        with self._lock:
            self._active = None
        # An empty file left behind is removed by the next open.
        with contextlib.suppress(OSError):
            os.close(active.fd)
            active.path.unlink()
            self._sync_dir(self._dir)

    def _seal_if_old(self) -> None:
        with self._io:
            if self._active is not None and time.monotonic() - self._active.created >= self._seal_after:
                self._seal_active()

    def _seal_active(self) -> None:
        """Seal the active segment; the caller holds ``_io``."""
        active = self._active
        assert active is not None
        with contextlib.suppress(OSError):  # its records are synced: a failing close loses nothing
            os.close(active.fd)
        segment = Segment(active.name, active.path, active.size)
        if self._on_seal is not None:
            try:
                self._on_seal(segment)
            except Exception:  # noqa: BLE001 - a hand-off failing must not stop the spool
                log.exception("handing sealed spool segment %s on failed; it is still exported", segment.name)
        with self._lock:
            self._active = None
            self._sealed.append(segment)
            self._ready.notify_all()

    # -- the directory ---------------------------------------------------------------

    def _lock_directory(self) -> None:
        """Create the directory and lock it: two spools on one directory would hand out,
        and delete, each other's segments."""
        created = not self._dir.exists()
        self._dir.mkdir(parents=True, exist_ok=True)
        if created:
            self._sync_dir(self._dir.parent)
        fd = os.open(self._dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"spool directory {self._dir} is in use by another spool; give each "
                              f"collector its own") from None
        self._lock_fd = fd

    def _unlock_directory(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _recover(self) -> RecoveryReport:
        sealed: list[Segment] = []
        records = torn = 0
        cut: list[str] = []
        for path in sorted(self._dir.glob(f"*{_SUFFIX}")):
            name = path.name[:-len(_SUFFIX)]
            if not SEGMENT_NAME.fullmatch(name):
                log.warning("spool ignores %s: not a segment name", path)
                continue
            data = path.read_bytes()
            count = end = 0
            for start, tenant_len, payload_len in _intact(data):
                count += 1
                end = start + tenant_len + payload_len
            if end < len(data):
                self._cut(path, data, end)
                torn += len(data) - end
                cut.append(name)
            if end == 0:  # torn to nothing, or a crash right after creating the file
                path.unlink()
                self._sync_dir(self._dir)
                continue
            sealed.append(Segment(name, path, end))
            records += count
        self._sealed = sealed
        for segment in sealed if self._on_seal is not None else ():
            self._on_seal(segment)  # type: ignore[misc]
        self._bytes = sum(s.size for s in sealed)
        self._seq = max(sequence(sealed[-1].name) + 1 if sealed else 0, self._stored_sequence())
        return RecoveryReport(len(sealed), records, torn, tuple(cut))

    def _stored_sequence(self) -> int:
        """The next sequence number as last stored, 0 if none was. ``ConfigError`` if the
        file is not a number: starting lower could reuse numbers a forwarder has already
        sent (it skips segments numbered at or below its progress), so a person decides."""
        stored = self._dir / _SEQUENCE_FILE
        if not stored.exists():
            return 0
        text = stored.read_text(errors="replace").strip()
        if not text.isdigit():
            raise ConfigError(f"spool file {stored} should hold the next segment number but holds {text[:40]!r}; "
                              f"write a number above every segment name's first part ever used there (with "
                              f"--forward-otlp: above the number in every forward/*/forwarded), or delete it "
                              f"if nothing is forwarded")
        return int(text)

    def _cut(self, path: Path, data: bytes, end: int) -> None:
        log.warning("spool segment %s: cutting %d torn or corrupt bytes after byte %d",
                    path.name, len(data) - end, end)
        # Best effort: failing to keep the copy must not keep the collector from starting.
        try:
            self._write_file(self._quarantine_dir() / f"{path.name[:-len(_SUFFIX)]}.{end}.torn", data[end:])
        except OSError as exc:
            log.error("spool could not keep a copy of the tail cut from %s: %s", path.name, exc)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, end)
            self._sync(fd)
        finally:
            os.close(fd)

    def _forget(self, segment: Segment) -> None:
        with self._lock:
            if segment in self._sealed:
                self._sealed.remove(segment)
                self._bytes -= segment.size
                self._refused = False  # something left: a refused record may fit now

    def _quarantine_dir(self) -> Path:
        path = self._dir / _QUARANTINE
        if not path.is_dir():
            path.mkdir(exist_ok=True)
            self._sync_dir(self._dir)
        return path

    def _write_file(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, data)
            self._sync(fd)
        finally:
            os.close(fd)
        self._sync_dir(path.parent)

    def _sync(self, fd: int) -> None:
        if self._fsync:
            # fdatasync skips timestamps but still syncs the file size, all a reader needs.
            (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)

    def _sync_dir(self, path: Path) -> None:
        if self._fsync:
            sync_dir(path)

    # Last in the class: a ``bytes`` attribute would shadow the type in later annotations.

    @property
    def segment_count(self) -> int:
        """Sealed segments plus the active one if it holds records."""
        with self._lock:
            return len(self._sealed) + (self._active is not None and self._active.size > 0)

    @property
    def refusing(self) -> str | None:
        """Why records are being refused now, or None: the last record offered was refused
        for room (and nothing has left the spool since), or the last write failed (within
        ``_WRITE_FAILURE_S``, so that a disk that is fixed is tried again)."""
        with self._lock:
            if self._refused:
                return f"the spool is full for the requests offered ({self._bytes} of {self._max_bytes} bytes held)"
            failed = self._write_failed
        if failed is not None and time.monotonic() - failed < _WRITE_FAILURE_S:
            return "the spool's last write failed (see the log)"
        return None

    @property
    def bytes(self) -> int:
        """Bytes counted against ``max_bytes``: segments on disk and pending records."""
        with self._lock:
            return self._bytes
