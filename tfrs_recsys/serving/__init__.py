"""The recommender app: recall -> rank over gRPC to a model server.

``client`` talks to any TF Serving (or :mod:`tfrs_recsys.model_server`) over gRPC; ``pipeline``
(with ``feature_store`` and ``recall_merge``) answers top-k per user, exposed by
``python -m tfrs_recsys.recommend --address`` (CLI) and ``http_service`` (FastAPI).
"""
