"""Export of a large tenant: read a page at a time vs the whole result in one query.

Why: ``GET /api/v1/export`` runs inside the collector, so its memory is the collector's.
Read whole, an export holds its entire result (and the engine's copy of it) at once;
read in pages of ``history.EXPORT_PAGE`` executions it holds one page. With ``--spans``
spans generated inside ClickHouse as bench/mv_vs_raw.py does (default 5M: 500k
executions), each format is exported twice, each time in a fresh process on the same
store: in pages (as the API does) and as one page as large as the result (the baseline:
what the export did before it was paged). It prints the seconds, the bytes (identical
in both, checked by hash) and the process's peak RSS above its RSS once the store was
open.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mv_vs_raw import TENANT, generate

from spanhouse.clickhouse import history, open_store

WHOLE = 1 << 31
"""A page larger than any result here: the export in one query."""


def _kib(field: str) -> int:
    """A ``/proc/self/status`` memory figure (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(data_dir: str, fmt: str, page: int) -> None:
    """One export of the tenant, printed as a JSON line: seconds, bytes, hash, RSS figures."""
    store = open_store(f"chdb://{data_dir}")
    try:
        before = _kib("VmRSS")
        digest, size = hashlib.sha256(), 0
        start = time.perf_counter()
        for chunk in history.export_executions(store.readers, TENANT, {}, fmt, page=page):
            digest.update(chunk)
            size += len(chunk)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "bytes": size, "sha256": digest.hexdigest(),
                          "rss_mb": before / 1024, "peak_above_mb": (_kib("VmHWM") - before) / 1024}))
    finally:
        store.close()


def measure(data_dir: str, fmt: str, page: int) -> dict[str, float | str]:
    """Run ``child`` in a fresh process (peak RSS is per process) and return its figures."""
    out = subprocess.run([sys.executable, __file__, "--child", data_dir, fmt, str(page)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=5_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, metavar=("DIR", "FORMAT", "PAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    data_dir = tempfile.mkdtemp(prefix="spanhouse-bench-")
    try:
        store = open_store(f"chdb://{data_dir}")
        try:
            gen_s = generate(store.client, args.spans, args.chunk, (int(time.time()) // 3600 + 1) * 3600)
            store.client.command("OPTIMIZE TABLE executions FINAL")
            executions = int(store.client.command(
                "SELECT count() FROM executions FINAL WHERE Tenant = {t:String}", parameters={"t": TENANT}))
        finally:
            store.close()  # one process at a time opens an embedded data directory
        print(f"\n{args.spans:,} spans generated in {gen_s:.0f} s; tenant {TENANT!r}: {executions:,} executions; "
              f"pages of {history.EXPORT_PAGE:,}")
        print(f"{'format':<8} {'read':<7} {'seconds':>8} {'MB':>7} {'peak RSS above open, MB':>24} "
              f"{'paged/whole time':>17} {'memory':>7}")
        for fmt in history.EXPORT_FORMATS:
            paged = measure(data_dir, fmt, history.EXPORT_PAGE)
            whole = measure(data_dir, fmt, WHOLE)
            for label, r in (("paged", paged), ("whole", whole)):
                print(f"{fmt:<8} {label:<7} {r['seconds']:>8.2f} {float(r['bytes']) / 1e6:>7.1f} "
                      f"{r['peak_above_mb']:>24.0f}", end="")
                print(f" {float(paged['seconds']) / float(whole['seconds']):>16.2f}x "
                      f"{float(paged['peak_above_mb']) / float(whole['peak_above_mb']):>6.2f}x" if label == "paged" else "")
            if fmt != "parquet":  # Parquet's bytes differ (row groups per page; a different writer)
                same = paged["sha256"] == whole["sha256"]
                print(f"{fmt:<8} identical bytes paged and whole: {'YES' if same else 'NO'}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
