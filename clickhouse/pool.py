"""Clients for concurrent reads, and running independent queries side by side.

Why: a clickhouse-connect client runs one call at a time (the embedded engine's handle
holds a lock for each call; a server session refuses a second concurrent query). With
one client for everything, an API request waited behind the writer's insert of a whole
batch, and the five queries of an execution's detail ran one after the other. The
embedded engine runs the queries of separate connections to one data directory in
parallel, as a server runs separate sessions' queries, so the API reads through a
``ClientPool`` and ``gather`` runs a request's independent queries on several of its
clients at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.query import QueryResult

from spanhouse.errors import StoreUnavailable

_EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spanhouse-query")
"""Runs the second and later calls of a ``gather``; the first runs in the caller's thread."""


class ClientPool:
    """Up to ``size`` clients opened on demand by ``open_client``; each call borrows one.

    It answers the calls the query layer makes on a client (``query``, ``raw_query``,
    ``command``, ``insert``), so the history and analytics functions take either a
    pool or a single client (``Reader``).
    """

    def __init__(self, open_client: Callable[[], Client], size: int) -> None:
        if size < 1:
            raise ValueError(f"a client pool needs at least one client, not {size}")
        self._open = open_client
        self._size = size
        self._idle: list[Client] = []  # under _lock; the last one back is the next out
        self._count = 0  # clients opened
        self._out = 0  # clients borrowed now
        self._closed = False
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)

    @property
    def size(self) -> int:
        """How many clients it opens at most: how many of its calls run at once."""
        return self._size

    @contextmanager
    def borrow(self) -> Iterator[Client]:
        """A client for this thread alone until the block ends; waits while all are busy.
        Raises ``StoreUnavailable`` once the pool is closed."""
        client = self._take()
        try:
            yield client
        finally:
            with self._lock:
                self._out -= 1
                self._returned.notify_all()
                kept = not self._closed
                if kept:
                    self._idle.append(client)
            if not kept:  # the pool closed while it was out
                client.close()

    def _take(self) -> Client:
        """An idle client, a new one if fewer than ``size`` are open, else the next one back.
        Counted as out from the moment it is reserved, under the lock ``close`` waits on."""
        with self._lock:
            while True:
                if self._closed:
                    raise StoreUnavailable("the store is closed; nothing can be read from it any more")
                if self._idle:
                    self._out += 1
                    return self._idle.pop()
                if self._count < self._size:
                    self._count += 1
                    self._out += 1
                    break
                self._returned.wait()  # all out: until one comes back (or the pool closes)
        try:  # outside the lock: connecting to a server can take a while
            return self._open()
        except BaseException:
            with self._lock:
                self._count -= 1
                self._out -= 1
                self._returned.notify_all()
            raise

    def query(self, query: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> QueryResult:
        with self.borrow() as client:
            return client.query(query, parameters=parameters, **kwargs)

    def raw_query(self, query: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> bytes:
        with self.borrow() as client:
            return client.raw_query(query, parameters=parameters, **kwargs)

    def command(self, cmd: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        with self.borrow() as client:
            return client.command(cmd, parameters=parameters, **kwargs)

    def insert(self, table: str, data: Sequence[Sequence[Any]], **kwargs: Any) -> Any:
        with self.borrow() as client:
            return client.insert(table, data, **kwargs)

    def close(self, wait_s: float = 0.0) -> bool:
        """Close the idle clients; a borrowed one is closed when it comes back. Later
        calls raise ``StoreUnavailable``. Waits up to ``wait_s`` for the borrowed ones
        (the embedded engine must not close under a running query); True if none is out."""
        with self._lock:
            self._closed = True
            self._returned.notify_all()  # takers waiting for a client: the pool is closed
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()
        with self._lock:
            return self._returned.wait_for(lambda: self._out == 0, timeout=wait_s)


Reader = Client | ClientPool
"""What the history and analytics functions read through."""


def gather(reader: Reader, *calls: Callable[[], Any]) -> list[Any]:
    """The results of ``calls``, in order: at the same time when ``reader`` is a pool
    (each call's queries borrow their own client), else one after the other (a single
    client would only serialize them, and a server session refuses concurrent queries).
    The calls must not gather themselves: they would wait for the executor they hold.
    """
    if not isinstance(reader, ClientPool) or len(calls) < 2:
        return [call() for call in calls]
    later = [_EXECUTOR.submit(call) for call in calls[1:]]
    first = calls[0]()
    return [first, *(f.result() for f in later)]
