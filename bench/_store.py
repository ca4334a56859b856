"""A throwaway embedded store for one benchmark run."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

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
