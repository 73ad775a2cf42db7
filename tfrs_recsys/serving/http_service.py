"""A small HTTP service over the recall -> rank pipeline (FastAPI), talking gRPC to the model server.

``GET /health`` (the model server, both models and the store answer), ``GET /recall/<uid>?top_k=``,
``GET /recommend/<uid>?top_k=``, ``POST /events`` (:mod:`tfrs_recsys.serving.events`). Run::

    python -m tfrs_recsys.serving.http_service --store DIR|redis://HOST:6379/0 --address 127.0.0.1:8500
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from tfrs_recsys.serving.client import ServerUnavailableError, ServingClientError
from tfrs_recsys.serving.events import MAX_BATCH, EventError, parse_events
from tfrs_recsys.serving.pipeline import RecallRankPipeline, add_pipeline_arguments, pipeline_from_args
from tfrs_recsys.serving.stores import StoreStateError, StoreUnavailableError

MAX_TOP_K = 1000


def create_app(pipeline: RecallRankPipeline, *, max_event_batch: int = MAX_BATCH) -> FastAPI:
    """The service's FastAPI app.

    Args:
      pipeline: The pipeline that answers.
      max_event_batch: The most events one ``POST /events`` may carry.

    Returns:
      The app: ``/health`` answers 503 while a model has no available version or the store does not
      answer; a failed request is 503 when no model server answers, 502 when it answers with an error,
      400 for a bad request. A store that does not answer makes ``/recommend`` and ``/recall`` answer
      this process's hot list with ``fallback`` set, and ``/events`` 503 (nothing applied).
    """
    app = FastAPI(title="tfrs_recsys recommendations")

    @app.get("/health")
    def health():
        """Whether the model server answers and serves both models (their newest available versions),
        and the store's state and latency."""
        store = pipeline.store.health()
        flags = {"store": store, pipeline.store.backend: store["status"]}
        models = {}
        try:
            for name in (pipeline.retrieval_model, pipeline.ranker_model):
                available = [s["version"] for s in pipeline.client.status(name) if s["state"] == "AVAILABLE"]
                if not available:
                    error = f"model '{name}' has no AVAILABLE version"
                    return JSONResponse({"status": "unavailable", "error": error, **flags}, status_code=503)
                models[name] = max(available)
        except ServingClientError as e:
            return JSONResponse({"status": "unavailable", "error": str(e), **flags}, status_code=503)
        answer = {"status": "ok", "model_server": pipeline.client.address, "models": models, **flags}
        if store["status"] == "down":
            answer.update(status="degraded", error=f"the {pipeline.store.backend} store does not answer: "
                                                   f"{store.get('error')}; answers fall back to hot items")
            return JSONResponse(answer, status_code=503)
        return answer

    @app.post("/events")
    async def events(request: Request):
        """Applies a batch of user events, all or none (400 naming the bad field)."""
        try:
            payload = json.loads(await request.body())
        except ValueError as e:
            return JSONResponse({"error": f"body: not JSON ({e})", "field": "body"}, status_code=400)
        try:
            parsed = parse_events(payload, time.time(), max_batch=max_event_batch)
            return await run_in_threadpool(pipeline.store.apply_events, parsed)
        except EventError as e:
            return JSONResponse({"error": str(e), "field": e.field}, status_code=400)
        except (StoreUnavailableError, StoreStateError) as e:
            return JSONResponse({"error": f"no event was applied: {e}"}, status_code=503)

    def answer(method, user_id: str, top_k: int):
        try:
            return method(user_id, top_k).to_dict()
        except (ServingClientError, ValueError) as e:
            unavailable = isinstance(e, ServerUnavailableError)
            status = 503 if unavailable else 502 if isinstance(e, ServingClientError) else 400
            return JSONResponse({"error": str(e)}, status_code=status)

    @app.get("/recall/{user_id}")
    def recall(user_id: str, top_k: int = Query(10, ge=1, le=MAX_TOP_K)):
        """The candidates the ranker would get, unranked."""
        return answer(pipeline.recall, user_id, top_k)

    @app.get("/recommend/{user_id}")
    def recommend(user_id: str, top_k: int = Query(10, ge=1, le=MAX_TOP_K)):
        """The user's top items: recall -> rank (hot items for a cold start)."""
        return answer(pipeline.recommend, user_id, top_k)

    return app


class BackgroundServer:
    """An app under uvicorn on a free loopback port, in a thread of this process (the demo, the benchmark,
    the tests)::

        with BackgroundServer(create_app(pipeline)) as url:
            httpx.get(f"{url}/health")

    Args:
      app: The ASGI app.
      port: The port (default: a free one).
    """

    def __init__(self, app, port: int | None = None):
        import socket
        import threading

        import uvicorn

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP service did not start on {self.url}")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """``python -m tfrs_recsys.serving.http_service --store DIR [options]``: serve until stopped.

    Args:
      argv: The command line's arguments (default: ``sys.argv[1:]``).

    Returns:
      The exit code: 0, or 2 for a bad flag or feature store.
    """
    import uvicorn

    from tfrs_recsys.config import ConfigError
    from tfrs_recsys.errors import UserError

    p = argparse.ArgumentParser(prog="python -m tfrs_recsys.serving.http_service")
    add_pipeline_arguments(p, store_required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port")
    p.add_argument("--max-event-batch", type=int, default=MAX_BATCH,
                   help="the most events one POST /events may carry")
    args = p.parse_args(argv)
    try:
        pipeline = pipeline_from_args(args)
    except (ConfigError, UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(pipeline, max_event_batch=args.max_event_batch), host=args.host, port=args.port)
    pipeline.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
