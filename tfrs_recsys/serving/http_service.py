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
from tfrs_recsys.serving.pipeline import RecallRankPipeline
from tfrs_recsys.serving.recall_merge import add_recall_merge_arguments, recall_merge_from_args

MAX_TOP_K = 1000


def _error(e: Exception) -> JSONResponse:
    status = 503 if isinstance(e, ServerUnavailableError) else 502 if isinstance(e, ServingClientError) else 400
    return JSONResponse({"error": str(e)}, status_code=status)


def create_app(pipeline: RecallRankPipeline) -> FastAPI:
    app = FastAPI(title="tfrs_recsys recommendations")

    @app.get("/health")
    def health():
        models = {}
        try:
            for name in (pipeline.retrieval_model, pipeline.ranker_model):
                available = [s["version"] for s in pipeline.client.status(name) if s["state"] == "AVAILABLE"]
                if not available:
                    return JSONResponse({"status": "unavailable", "error": f"model '{name}' has no AVAILABLE version"},
                                        status_code=503)
                models[name] = max(available)
        except ServingClientError as e:
            return JSONResponse({"status": "unavailable", "error": str(e)}, status_code=503)
        return {"status": "ok", "model_server": pipeline.client.address, "models": models}

    @app.get("/recall/{user_id}")
    def recall(user_id: str, top_k: int = Query(10, ge=1, le=MAX_TOP_K)):
        try:
            return pipeline.recall(user_id, top_k).to_dict()
        except (ServingClientError, ValueError) as e:
            return _error(e)

    @app.get("/recommend/{user_id}")
    def recommend(user_id: str, top_k: int = Query(10, ge=1, le=MAX_TOP_K)):
        try:
            return pipeline.recommend(user_id, top_k).to_dict()
        except (ServingClientError, ValueError) as e:
            return _error(e)

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from tfrs_recsys.config import ConfigError
    from tfrs_recsys.errors import UserError
    from tfrs_recsys.serving.client import ServingClient
    from tfrs_recsys.serving.feature_store import FeatureStore

    p = argparse.ArgumentParser(prog="python -m tfrs_recsys.serving.http_service")
    p.add_argument("--store", required=True, help="feature store directory")
    p.add_argument("--address", default="127.0.0.1:8500", help="model server gRPC address")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--retrieval-model", default="retrieval")
    p.add_argument("--ranker-model", default="esmm")
    p.add_argument("--num-candidates", type=int, default=100)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_recall_merge_arguments(p)
    args = p.parse_args(argv)
    try:
        recall_merge = recall_merge_from_args(args)
        store = FeatureStore.load(args.store)
    except (ConfigError, UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = ServingClient(args.address, args.timeout, retrieval_model=args.retrieval_model,
                           ranker_model=args.ranker_model)
    app = create_app(RecallRankPipeline(client, store, num_candidates=args.num_candidates, recall_merge=recall_merge))
    uvicorn.run(app, host=args.host, port=args.port)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
