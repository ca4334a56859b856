"""The public surface of spanhouse.sdk, and what it may depend on."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from spanhouse import sdk

SDK_DIR = Path(__file__).resolve().parents[1] / "sdk"


def test_all_is_pinned() -> None:
    assert sorted(sdk.__all__) == sorted([
        "configure", "flush", "shutdown",
        "execution", "workflow", "agent", "tool", "llm",
        "execution_span", "agent_span", "tool_call", "llm_call", "ActiveCall",
        "record_usage", "PRICES", "CACHED_INPUT_PRICES", "LONG_CONTEXT_PRICES", "register_price",
        "session", "current_execution_id", "feedback",
        "SpanhouseSpanProcessor",
    ])
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    assert sdk.workflow is sdk.execution
    assert sdk.tool.__module__ == "spanhouse.sdk"  # the public path, not the private module


def test_sdk_imports_only_opentelemetry_and_the_standard_library() -> None:
    """The modules ``import spanhouse.sdk`` loads, and its test helpers (``clickhouse_exporter``
    is an optional module with its own dependencies, never imported by these); wrapt, the
    proxy OpenTelemetry's instrumentations use, is imported only by a model call's first
    return (test_importing_the_sdk_loads_no_exporter_and_no_store)."""
    allowed_roots = {"opentelemetry", "spanhouse", "wrapt"}
    for path in [*SDK_DIR.glob("_*.py"), SDK_DIR / "testing.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                root = name.split(".")[0]
                assert root in allowed_roots or root in sys.stdlib_module_names, (path.name, name)
                assert not name.startswith(("spanhouse.collector", "spanhouse.clickhouse")), (path.name, name)


def test_importing_the_sdk_loads_no_exporter_and_no_store() -> None:
    code = ("import sys, spanhouse.sdk\n"
            "print(sorted(m for m in sys.modules if m.startswith(('grpc', 'chdb', 'clickhouse_connect', "
            "'spanhouse.collector', 'spanhouse.clickhouse', 'opentelemetry.exporter', 'wrapt'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
