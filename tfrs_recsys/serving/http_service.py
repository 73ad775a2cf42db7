"""A small HTTP service over the recall -> rank pipeline (FastAPI), talking gRPC to the model server.

``GET /health`` (the model server and both models answer), ``GET /recall/<uid>?top_k=``,
``GET /recommend/<uid>?top_k=``. Run::

    python -m tfrs_recsys.serving.http_service --store DIR --address 127.0.0.1:8500 --port 8000
"""
from __future__ import annotations

import argparse
import sys

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from tfrs_recsys.serving.client import ServerUnavailableError, ServingClientError
from tfrs_recsys.serving.pipeline import RecallRankPipeline, add_pipeline_arguments, pipeline_from_args

MAX_TOP_K = 1000


def create_app(pipeline: RecallRankPipeline) -> FastAPI:
    """The service's FastAPI app.

    Args:
      pipeline: The pipeline that answers.

    Returns:
      The app: ``/health`` answers 503 while a model has no available version; a failed request is
      503 when no model server answers, 502 when it answers with an error, 400 for a bad request.
    """
    app = FastAPI(title="tfrs_recsys recommendations")

    @app.get("/health")
    def health():
        """Whether the model server answers and serves both models (their newest available versions)."""
        models = {}
        try:
            for name in (pipeline.retrieval_model, pipeline.ranker_model):
                available = [s["version"] for s in pipeline.client.status(name) if s["state"] == "AVAILABLE"]
                if not available:
                    error = f"model '{name}' has no AVAILABLE version"
                    return JSONResponse({"status": "unavailable", "error": error}, status_code=503)
                models[name] = max(available)
        except ServingClientError as e:
            return JSONResponse({"status": "unavailable", "error": str(e)}, status_code=503)
        return {"status": "ok", "model_server": pipeline.client.address, "models": models}

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
    args = p.parse_args(argv)
    try:
        pipeline = pipeline_from_args(args)
    except (ConfigError, UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(pipeline), host=args.host, port=args.port)
    pipeline.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
