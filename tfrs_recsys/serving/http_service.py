"""A small HTTP service over the recall -> rank pipeline (FastAPI), talking gRPC to the model server.

``GET /health`` (the model server, both models and the store answer), ``GET /recall/<uid>?top_k=``,
``GET /recommend/<uid>?top_k=&<context feature>=``, ``POST /events`` (:mod:`tfrs_recsys.serving.events`).
Run::

    python -m tfrs_recsys.serving.http_service --store DIR|redis://HOST:6379/0 --address 127.0.0.1:8500

uvicorn serves it behind the model server's connection guard
(:mod:`tfrs_recsys.model_server.rest_guard`): a request's head must arrive within 10 s (else 408), at most
``--max-connections`` stay open, malformed HTTP gets a 400, and ``POST /events`` bodies over
``--max-body-bytes`` get 413; every error is ``{"error": ...}`` JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tfrs_recsys.model_server.rest_guard import CONNECTION_KEY, ConnectionGuard, RestOptions
from tfrs_recsys.serving.client import ServerUnavailableError, ServingClientError
from tfrs_recsys.serving.events import (
    MAX_BATCH,
    MAX_ID_CHARS,
    EventError,
    id_problem,
    parse_events,
    staleness_warning,
)
from tfrs_recsys.serving.pipeline import RecallRankPipeline
from tfrs_recsys.serving.pipeline_cli import add_pipeline_arguments, pipeline_from_args
from tfrs_recsys.serving.stores import (
    StoreStateError,
    StoreUnavailableError,
    is_redis_url,
    store_from_environment,
)

logger = logging.getLogger(__name__)
MAX_TOP_K = 1000
MAX_QUERY_PARAMETERS = 256
MAX_PARAMETER_CHARS = 4096  # a query parameter's value; its name, as a user id, at most MAX_ID_CHARS
MAX_ERROR_CHARS = 1024  # an error answer quotes what it refuses: never a request's megabytes back
# A POST /events body: MAX_BATCH events of the longest ids, written as JSON escapes them (6 bytes a
# non-ASCII character), take ~3.1 MB. Its JSON is parsed on the event loop (~45 ms a MiB).
MAX_BODY_BYTES = 4 << 20
BODY_TIMEOUT_S = 10.0  # the time a body has to arrive in: a trickled one holds a connection so long


def create_app(pipeline: RecallRankPipeline, *, max_event_batch: int = MAX_BATCH,
               max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S) -> FastAPI:
    """The service's FastAPI app.

    Args:
      pipeline: The pipeline that answers.
      max_event_batch: The most events one ``POST /events`` may carry.
      max_body_bytes: The largest ``POST /events`` body; larger: 413.
      body_timeout_s: The time a ``POST /events`` body has to arrive in; later: 408.

    Returns:
      The app: ``/health`` answers 503 while a model has no available version or the store does not
      answer; a failed request is 503 when no model server answers, 502 when it answers with an error,
      400 for a bad request. A store that does not answer makes ``/recommend`` and ``/recall`` answer
      this process's hot list with ``fallback`` set, and ``/events`` 503 (nothing applied).
    """
    # No interactive docs: their page loads scripts from a CDN, and a service answers its routes alone.
    app = FastAPI(title="tfrs_recsys recommendations", docs_url=None, redoc_url=None, openapi_url=None)
    event_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="events")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        """A bad query parameter (``top_k=0``): 400 naming it, as every other error of the service."""
        first = error.errors()[0]
        field = str(first.get("loc", ("", ""))[-1])
        return JSONResponse({"error": f"{field}: {first.get('msg')}", "field": field}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        """An unknown path (404) or method (405), in the service's ``{"error": ...}`` form."""
        detail = f"{request.method[:16]} {request.url.path[:MAX_ID_CHARS]}: {error.detail}"
        return JSONResponse({"error": detail}, status_code=error.status_code, headers=error.headers)

    @app.get("/health")
    def health():
        """Whether the model server answers and serves both models (their newest available versions),
        and the store's state and latency."""
        store = pipeline.store.health()
        flags = {"store": store, pipeline.store.backend: store["status"]}
        models, deadline = {}, time.monotonic() + pipeline.client.timeout  # both models within one timeout
        try:
            for name in filter(None, (pipeline.retrieval_model, pipeline.ranker_model)):  # '': no ranker
                statuses = pipeline.client.status(name, timeout=max(0.05, deadline - time.monotonic()))
                available = [s["version"] for s in statuses if s["state"] == "AVAILABLE"]
                if not available:
                    error = f"model '{name}' has no AVAILABLE version"
                    return JSONResponse({"status": "unavailable", "error": error, **flags}, status_code=503)
                models[name] = max(available)
        except ServingClientError as e:
            return JSONResponse({"status": "unavailable", "error": str(e), **flags}, status_code=503)
        answer = {"status": "ok", "model_server": pipeline.client.address, "models": models, **flags}
        if store["status"] in ("down", "empty"):
            why = (f"does not answer: {store.get('error')}" if store["status"] == "down" else
                   "holds nothing published (never published, or its data was lost): publish again")
            answer.update(status="degraded", error=f"the {pipeline.store.backend} store {why}; answers fall "
                                                   f"back to this process's hot items")
            return JSONResponse(answer, status_code=503)
        return answer

    @app.post("/events")
    async def events(request: Request):
        """Applies a batch of user events, all or none (400 naming the bad field)."""
        kinds = request.headers.getlist("content-type")
        if [k.split(";")[0].strip().lower() for k in kinds] != ["application/json"]:
            # A web page in a browser on this host may post any other type (or none) without asking (CORS)
            why = (f"body: Content-Type {', '.join(kinds)[:64] or 'none'}; send exactly one, "
                   f"application/json (curl: -H 'Content-Type: application/json')")
            return JSONResponse({"error": why, "field": "body"}, status_code=415,
                                headers={"connection": "close"})  # its body unread
        try:
            body = await _bounded_body(request, max_body_bytes, body_timeout_s)
        except TimeoutError:  # a body that trickles in holds a connection: cut, as the model server does
            return JSONResponse({"error": f"body: not received within {body_timeout_s:g} s", "field": "body"},
                                status_code=408, headers={"connection": "close"})
        if body is None:
            return JSONResponse({"error": f"body: over --max-body-bytes={max_body_bytes}", "field": "body"},
                                status_code=413, headers={"connection": "close"})
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as e:  # not JSON, an integer of 4,300+ digits, or nested deep
            return JSONResponse({"error": f"body: not JSON ({type(e).__name__}: {str(e)[:200]})",
                                 "field": "body"}, status_code=400)
        try:
            parsed = parse_events(payload, time.time(), max_batch=max_event_batch)
            # their own threads: requests waiting on a slow model server never hold up events
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(event_threads, pipeline.store.apply_catalog_events, parsed)
        except EventError as e:
            return JSONResponse({"error": _cut(str(e)), "field": e.field[:MAX_ID_CHARS]}, status_code=400)
        except (StoreUnavailableError, StoreStateError) as e:
            return JSONResponse({"error": _cut(f"no event was applied: {e}")}, status_code=503)

    def answer(method, user_id: str, top_k: int, request: Request):
        user_id = user_id.removesuffix("/")  # /recommend/u1/ is u1's, as a web server reads a trailing slash
        try:
            if not user_id.strip() or len(user_id.strip()) > MAX_ID_CHARS:
                raise ValueError(f"the user id is {len(user_id.strip())} characters long (spaces trimmed); "
                                 f"ids have 1 to {MAX_ID_CHARS}")
            if problem := id_problem(user_id) or _not_utf8(request):
                raise ValueError(f"the user id {problem}")
            return JSONResponse(method(user_id, top_k).to_dict())  # rendered here: its errors caught below
        except (ServingClientError, ValueError) as e:
            unavailable = isinstance(e, ServerUnavailableError)
            status = 503 if unavailable else 502 if isinstance(e, ServingClientError) else 400
            return JSONResponse({"error": _cut(str(e))}, status_code=status)
        except Exception as e:  # a defect of ours: said as JSON, the connection kept, the trace in the log
            logger.exception("answering %s for user %r", method, user_id)
            return JSONResponse({"error": f"internal error ({type(e).__name__}); see the service's log"},
                                status_code=500)

    def context_of(request: Request) -> dict[str, str]:
        names = [name for name, _ in request.query_params.multi_items()]
        if len(names) > MAX_QUERY_PARAMETERS:
            raise ValueError(f"{len(names)} query parameters; at most {MAX_QUERY_PARAMETERS} (top_k and the "
                             f"ranker's request features)")
        for name, value in request.query_params.multi_items():  # checked before any is looked up
            if len(name) > MAX_ID_CHARS or len(value) > MAX_PARAMETER_CHARS:
                raise ValueError(f"a query parameter of a {len(name)}-character name and a {len(value)}-"
                                 f"character value; names have at most {MAX_ID_CHARS}, values "
                                 f"{MAX_PARAMETER_CHARS}")
        if twice := [name for name, n in Counter(names).items() if n > 1]:
            raise ValueError(f"query parameter {twice[0]!r} is given more than once; give it once")
        return {name: request.query_params[name] for name in names if name != "top_k"}

    @app.get("/recall/{user_id:path}")  # an id may hold a "/", sent as %2F
    async def recall(request: Request, user_id: str, top_k: int = Query(10, ge=1, le=MAX_TOP_K)):
        """The candidates the ranker would get, unranked (``top_k`` is the one query parameter)."""
        def candidates(user: str, k: int):
            if extra := context_of(request):
                raise ValueError(f"query parameter {next(iter(extra))!r} is not one of /recall's (top_k)")
            return pipeline.recall(user, k, deadline=deadline)
        deadline = time.monotonic() + pipeline.client.timeout
        return await run_in_threadpool(answer, candidates, user_id, top_k, request)

    @app.get("/recommend/{user_id:path}")
    async def recommend(request: Request, user_id: str, top_k: int = Query(10, ge=1, le=MAX_TOP_K)):
        """The user's top items: recall -> rank (hot items for a cold start); the other query parameters
        are the ranker's request context (``?device=mobile``). The model calls share one deadline, the
        client's timeout from the request's arrival (time spent queued for a thread included)."""
        def recommended(user: str, k: int):
            context = context_of(request)
            try:
                return pipeline.recommend(user, k, context, deadline=deadline)
            except ServerUnavailableError as e:  # a homepage never goes blank: the hot items, said so
                return pipeline.without_models(user, k, e)
        deadline = time.monotonic() + pipeline.client.timeout
        return await run_in_threadpool(answer, recommended, user_id, top_k, request)

    return app


def _not_utf8(request: Request) -> str | None:
    """Why the request's path is no UTF-8 (``%ff``: every such id would read as one user, "\ufffd")."""
    try:
        unquote_to_bytes(request.scope.get("raw_path", b"")).decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8 (percent-escapes of bytes no text is made of); send ids as UTF-8"
    return None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "... (cut)"


async def _bounded_body(request: Request, limit: int, timeout_s: float) -> bytes | None:
    """The request's body, or None once it is over ``limit`` bytes (read no further).

    Raises:
      TimeoutError: The body did not arrive within ``timeout_s``.
    """
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None

    async def read() -> bytes | None:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    return await asyncio.wait_for(read(), timeout_s)


class GuardedApp:
    """An ASGI app behind :class:`~tfrs_recsys.model_server.rest_guard.ConnectionGuard`: tells the
    connection when each answer is out, so its next (pipelined) request goes through.

    Args:
      app: The ASGI app.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        connection = scope.get("state", {}).get(CONNECTION_KEY) if scope["type"] == "http" else None
        if connection is None:
            await self.app(scope, receive, send)
            return
        closes = False

        async def sending(message) -> None:
            nonlocal closes
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                closes = (b"connection", b"close") in [(k.lower(), v.lower()) for k, v in headers]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                connection.response_done(closes)

        await self.app(scope, receive, sending)


def guarded_server(app, host: str, port: int, *, max_connections: int = 1000,
                   header_timeout_s: float = 10.0) -> tuple:
    """uvicorn serving ``app`` behind a connection guard: head timeout, connection limit, clean 4xx.

    Args:
      app: The ASGI app.
      host: The address to bind.
      port: The port.
      max_connections: Open connections at most: one more closes the longest idle, or gets 503.
      header_timeout_s: A request's line and headers must arrive within this, else 408.

    Returns:
      ``(uvicorn.Server, its guard)``; close the guard's connections once the server has stopped.
    """
    import uvicorn

    options = RestOptions(max_connections=max_connections, header_timeout_s=header_timeout_s,
                          connections_flag="--max-connections")
    guard = ConnectionGuard(options)
    config = uvicorn.Config(GuardedApp(app), host=host, port=port, http=guard.protocol_factory, ws="none",
                            lifespan="off", log_level="warning", server_header=False, backlog=options.backlog,
                            timeout_keep_alive=options.keep_alive_s, timeout_graceful_shutdown=5,
                            h11_max_incomplete_event_size=options.max_header_bytes)
    return uvicorn.Server(config), guard


class BackgroundServer:
    """An app under uvicorn on a free loopback port, in a thread of this process (the demo, the benchmark,
    the tests)::

        with BackgroundServer(create_app(pipeline)) as url:
            httpx.get(f"{url}/health")

    Args:
      app: The ASGI app.
      port: The port (default: a free one).
      header_timeout_s: A request's line and headers must arrive within this, else 408.
    """

    def __init__(self, app, port: int | None = None, header_timeout_s: float = 10.0):
        import socket
        import threading


        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server, self.guard = guarded_server(app, "127.0.0.1", port, header_timeout_s=header_timeout_s)
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
        self.guard.close_all()


def _say_missing_models(pipeline: RecallRankPipeline) -> None:
    """Warns at start when the model server answers but serves no model of a name the service asks for
    (the defaults ``retrieval`` and ``deepfm`` are the demo's; an export names its own)."""
    asked = (("--retrieval-model", pipeline.retrieval_model), ("--ranker-model", pipeline.ranker_model))
    for flag, name in ((flag, name) for flag, name in asked if name):
        try:
            pipeline.client.status(name, timeout=2.0)
        except ServerUnavailableError:
            return  # not up yet: /health says so until it is
        except ServingClientError:
            print(f"warning: the model server at {pipeline.client.address} serves no model '{name}': name "
                  f"yours with {flag} (its name in models.config)", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m tfrs_recsys.serving.http_service --store DIR [options]``: serve until stopped.

    Args:
      argv: The command line's arguments (default: ``sys.argv[1:]``).

    Returns:
      The exit code: 0, or 2 for a bad flag or feature store.
    """
    from tfrs_recsys.config import ConfigError
    from tfrs_recsys.errors import UserError

    p = argparse.ArgumentParser(prog="python -m tfrs_recsys.serving.http_service")
    add_pipeline_arguments(p, store_required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--max-event-batch", type=int, default=MAX_BATCH,
                   help="the most events one POST /events may carry")
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                   help="the largest POST /events body, in bytes (larger: 413)")
    p.add_argument("--max-connections", type=int, default=1000,
                   help="open HTTP connections at most (one more closes the longest idle, or gets 503)")
    p.add_argument("--store-poll-seconds", type=float, default=10.0,
                   help="a folder store: look this often for a new feature store written there and make it "
                        "live, keeping the histories events wrote; 0: never")
    args = p.parse_args(argv)
    if not 0 <= args.store_poll_seconds < float("inf"):
        p.error("--store-poll-seconds must be seconds >= 0 (0: never look)")
    for flag in ("port", "max_event_batch", "max_body_bytes", "max_connections"):
        if not 0 < getattr(args, flag) <= (65535 if flag == "port" else 1 << 40):
            p.error(f"--{flag.replace('_', '-')} must be a positive number (a port: at most 65535)")
    try:
        pipeline = pipeline_from_args(args)
    except (ConfigError, UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = create_app(pipeline, max_event_batch=args.max_event_batch, max_body_bytes=args.max_body_bytes)
    server, guard = guarded_server(app, args.host, args.port, max_connections=args.max_connections)
    print(f"recommendations at http://{args.host}:{args.port}/recommend/<user_id>: retrieval model "
          f"'{pipeline.retrieval_model}', ranker "
          f"{repr(pipeline.ranker_model) if pipeline.ranker_model else 'none (the candidates, unranked)'} at "
          f"{pipeline.client.address}, "
          f"store {pipeline.store.backend}", flush=True)
    _say_missing_models(pipeline)
    if stale := staleness_warning(pipeline.store.meta, time.time()):
        print(f"warning: {stale}", file=sys.stderr, flush=True)
    spec = args.store or store_from_environment()
    refresher = None
    if args.store_poll_seconds and not is_redis_url(spec):  # Redis stores are refreshed by serving.publish
        from tfrs_recsys.serving.store_refresh import FolderStoreRefresher

        refresher = FolderStoreRefresher(pipeline.store, spec, args.store_poll_seconds).start()
    server.run()
    if refresher is not None:
        refresher.close()
    guard.close_all()
    pipeline.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
