"""The recommender app: recall -> rank over gRPC to a model server.

``client`` talks to any TF Serving (or :mod:`tfrs_recsys.model_server`) over gRPC; ``pipeline``
(with ``feature_store`` and ``recall_merge``) answers top-k per user, exposed by
``python -m tfrs_recsys.recommend --address`` (CLI) and ``http_service`` (FastAPI).
"""

DEFAULT_ADDRESS = "127.0.0.1:8500"  # the model server's gRPC address, as TF Serving's default port
RECALL_SOURCES = ("model", "published")  # where the pipeline's candidates come from
