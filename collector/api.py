"""The query API app (port 8080): health, readiness and metrics.

``/healthz`` answers while the process runs; ``/readyz`` only while it accepts data (the
store is open, the exporter can insert, the spool has room); ``/metrics`` is Prometheus
text. The execution-history endpoints join this app (see README: not finished yet).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from spanhouse import __version__
from spanhouse.collector.metrics import CONTENT_TYPE, Metrics


def create_app(metrics: Metrics, readiness: Callable[[], tuple[bool, str]]) -> FastAPI:
    """The API app; ``readiness`` returns (ready, why-not)."""
    app = FastAPI(title="spanhouse", version=__version__,
                  description="Execution history for AI agents and workflows.")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not accepting data right now"}})
    def readyz() -> JSONResponse:
        """Ready to accept data."""
        ready, why = readiness()
        return JSONResponse({"status": "ready" if ready else "not ready", "reason": why}, 200 if ready else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app
