"""Shared fixtures: one embedded ClickHouse store per test session.

The embedded engine allows one data directory per process, so the session shares one
store and tests isolate themselves by tenant (``tenant`` fixture): every spanhouse
table and query is tenant-scoped, which these tests exercise as they go.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spanhouse.clickhouse import IngestItem, Store, open_store
from tests.collector_harness import stop_all
from tests.otlp import ExportTraceServiceRequest


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("store")
    s = open_store(f"chdb://{path}")
    yield s
    s.close()


@pytest.fixture(scope="session", autouse=True)
def _no_collector_outlives_the_session() -> Iterator[None]:
    """A test that fails before stopping its ``spanhouse serve`` child left it running
    after the session; it is killed at the end."""
    yield
    stop_all()


@pytest.fixture
def tenant() -> str:
    """A tenant no other test writes to."""
    return f"t-{uuid.uuid4().hex[:12]}"


def write(store: Store, tenant: str, *requests: ExportTraceServiceRequest, token: str | None = None) -> None:
    """Land ``requests`` for ``tenant`` through the writer, as one batch."""
    store.writer.write([IngestItem(tenant, r.SerializeToString()) for r in requests], token=token)
