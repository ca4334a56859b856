"""The store's reader pool: reads on connections of their own, side by side."""

from __future__ import annotations

import threading
import time

import pytest
from clickhouse_connect.driver.client import Client

from spanhouse.clickhouse import Store, connect, history
from spanhouse.clickhouse.pool import ClientPool, gather
from spanhouse.errors import StoreUnavailable


def test_pool_opens_clients_on_demand_up_to_its_size_and_reuses_them(store: Store) -> None:
    opened: list[Client] = []

    def open_client() -> Client:
        opened.append(connect(store.dsn))
        return opened[-1]

    pool = ClientPool(open_client, 2)
    try:
        assert pool.command("SELECT 1") == 1 and len(opened) == 1
        assert pool.command("SELECT 2") == 2 and len(opened) == 1  # the idle one again
        with pool.borrow() as a, pool.borrow() as b:
            assert a is not b and len(opened) == 2
            third: list[int] = []
            waiting = threading.Thread(target=lambda: third.append(pool.command("SELECT 3")))
            waiting.start()
            waiting.join(0.5)
            assert waiting.is_alive() and not third, "a third caller must wait while both clients are out"
        waiting.join(30)
        assert third == [3] and len(opened) == 2
    finally:
        pool.close()


def test_gather_runs_a_pools_calls_at_the_same_time_and_a_clients_in_order(store: Store) -> None:
    # Three calls that each wait for the other two: they finish only if they run together.
    barrier = threading.Barrier(3, timeout=30)

    def meet(n: int) -> int:
        barrier.wait()
        return int(store.readers.command(f"SELECT {n}"))

    assert gather(store.readers, *(lambda n=n: meet(n) for n in range(3))) == [0, 1, 2]
    seen: list[int] = []
    assert gather(store.client, *(lambda n=n: seen.append(n) or n for n in range(3))) == [0, 1, 2]
    assert seen == [0, 1, 2]


def test_a_read_does_not_wait_for_the_writers_connection(store: Store, tenant: str) -> None:
    """The writer holds its connection for a whole insert (seconds for a large batch);
    reads must not queue behind it. Here the writer's connection is held busy by an
    unfinished stream, which keeps its lock as an insert in progress does."""
    busy = store.writer._client.raw_stream("SELECT number FROM system.numbers LIMIT 10000000", fmt="TSV")
    try:
        done: list[object] = []
        reader = threading.Thread(target=lambda: done.append(history.list_executions(store.readers, tenant, {}, 5)))
        reader.start()
        reader.join(30)
        assert done, "a read waited for the writer's connection"
    finally:
        busy.close()


def test_a_closed_pool_refuses_and_closes_what_comes_back(store: Store) -> None:
    closed: list[Client] = []

    class Tracked:
        """A real client whose close is recorded (and done)."""

        def __init__(self) -> None:
            self.client = connect(store.dsn)

        def command(self, *args: object, **kwargs: object) -> object:
            return self.client.command(*args, **kwargs)  # type: ignore[arg-type]

        def close(self) -> None:
            closed.append(self.client)
            self.client.close()

    pool = ClientPool(Tracked, 2)  # type: ignore[arg-type]
    with pool.borrow(), pool.borrow():
        pass  # two clients open, both idle now
    with pool.borrow() as out:
        pool.close()
        assert len(closed) == 1, "the idle client is closed at once"
        assert out.command("SELECT 2") == 2  # a borrowed one still works until it comes back
    assert len(closed) == 2, "a client coming back to a closed pool is closed"
    with pytest.raises(StoreUnavailable, match="closed"):
        pool.command("SELECT 3")


def test_close_waits_for_a_borrow_whose_client_is_still_opening() -> None:
    """A borrow was counted only once its client was open: close() called meanwhile saw
    none out, said so, and the embedded engine could be closed under the query that
    followed."""

    class Slow:
        closed = False

        def command(self, sql: str, **_: object) -> str:
            time.sleep(0.3)
            return sql

        def close(self) -> None:
            self.closed = True

    opened: list[Slow] = []

    def open_client() -> Slow:
        time.sleep(0.5)
        opened.append(Slow())
        return opened[-1]

    pool = ClientPool(open_client, 1)  # type: ignore[arg-type]
    answers: list[object] = []
    borrower = threading.Thread(target=lambda: answers.append(pool.command("SELECT 1")))
    borrower.start()
    time.sleep(0.1)  # the client is being opened
    started = time.monotonic()
    assert pool.close(wait_s=5) is True
    assert time.monotonic() - started >= 0.5 and answers == ["SELECT 1"] and opened[0].closed
    borrower.join()
