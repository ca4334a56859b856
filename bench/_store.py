"""A throwaway embedded store for one benchmark run."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from clickhouse_connect.driver.client import Client

from spanhouse.clickhouse import Store, open_store


@contextmanager
def temporary_store() -> Iterator[Store]:
    """An open, migrated embedded store in a fresh directory, removed afterwards."""
    data_dir = tempfile.mkdtemp(prefix="spanhouse-bench-")
    try:
        store = open_store(f"chdb://{data_dir}")
        try:
            yield store
        finally:
            store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def settle(client: Client, timeout: float = 600.0, poll: float = 1.0) -> None:
    """Wait until no merge or mutation runs: on 2 cores, background merges of the freshly
    generated parts would otherwise take CPU from the timed calls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = client.command("SELECT (SELECT count() FROM system.merges) + "
                              "(SELECT count() FROM system.mutations WHERE NOT is_done)")
        if not int(busy):
            return
        time.sleep(poll)
    raise RuntimeError(f"merges were still running after {timeout:.0f} s")
