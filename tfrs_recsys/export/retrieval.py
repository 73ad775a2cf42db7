"""Export a trained retrieval run for TF Serving, twice (DESIGN §3).

* ``BASE/NAME/<version>/``: the query tower + a ScaNN top-k index
  (:class:`tfrs_recsys.export.scann_index.ScaNNIndex`); loads only in a process with ScaNN's ops
  (``import scann`` first; a ScaNN-linked model server).
* ``BASE/NAME_portable/<version>/``: the same signatures with exact brute-force top-k
  (``tfrs.layers.factorized_top_k.BruteForce``), standard TensorFlow ops only.

Both versions get the same integer version and are written atomically by
:func:`tfrs_recsys.export.tfserving.publish_version`, with warmup requests and metadata.

Signatures (``K`` fixed at export, ``L`` = the run's ``max_history``, ``E`` = exclusion width)::

    serving_default(user_id: string [B], history: string [B, L])
        -> item_ids: string [B, K], scores: float32 [B, K]
    query_with_exclusions(user_id: string [B], history: string [B, L], exclude_item_ids: string [B, E])
        -> item_ids: string [B, K], scores: float32 [B, K]

``history`` holds raw item ids, most recent last, ``""`` as padding; unknown ids are skipped.
Scores are the model's logits ``tau * <q, c(i)>``, best first. Where fewer than ``K`` items
qualify (a catalog smaller than ``K``, or exclusions), the row is padded with item id ``""``
and score ``PAD_SCORE`` (the lowest float32). No NaN leaves a signature: ScaNN's NaN padding
is dropped before the final top-k.

Before anything is written, ScaNN's top-k is compared with brute force on up to
``recall_queries`` real user queries; the recall goes into the metadata and the export fails
below ``scann_min_recall`` unless ``allow_low_recall``. The same queries narrow the search to
the fewest tree leaves that keep the default width's recall (:func:`narrow_scann_search`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import tfrs_recsys  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_recsys import paths, runs
from tfrs_recsys.data.sequences import pad_left
from tfrs_recsys.export.scann_index import ScaNNIndex
from tfrs_recsys.export.tfserving import existing_versions, publish_version

PAD_ID = ""
PAD_SCORE = float(np.finfo(np.float32).min)
_FINGERPRINT_BUCKETS = 2 ** 63 - 1  # to_hash_bucket_fast(s, this) is s's 64-bit fingerprint (mod 2^63 - 1)

TopKIndex = tfrs.layers.factorized_top_k.TopK | ScaNNIndex  # index(queries [B, D], k) -> (scores, ids) [B, k]


MIN_NARROWING_QUERIES = 100  # fewer user queries measure recall too coarsely to narrow ScaNN's search on


class ExportError(RuntimeError):
    """The export would not serve what was trained (e.g. ScaNN recall below the threshold)."""


def default_scann_options(num_items: int, k: int) -> dict:
    """Tree-AH settings by catalog size for up to ``k`` results: ~sqrt(n) leaves (at most 2000); a
    tenth of them searched, at least 10 and at least enough to hold ~4k items; exact re-scoring
    of the best ``max(2k, 200)`` candidates."""
    leaves = int(min(2000, max(1, round(math.sqrt(num_items)))))
    search = max(10, leaves // 10, math.ceil(leaves * 4 * k / num_items))
    return {"num_leaves": leaves, "num_leaves_to_search": min(leaves, search),
            "dimensions_per_block": 2, "num_reordering_candidates": int(min(num_items, max(2 * k, 200))),
            "training_iterations": 12, "training_sample_size": 250_000, "anisotropic_quantization_threshold": 0.2}


def _excluded(ids: tf.Tensor, exclude: tf.Tensor, buckets: int = _FINGERPRINT_BUCKETS) -> tf.Tensor:
    """``[B, N]`` bool: ``ids[b, n]`` is one of the real (non-``""``) ids of ``exclude[b]`` ``[B, E]``.

    The ``N x E`` comparisons are made on 64-bit fingerprints (integer equality, ~5x cheaper than
    string equality: ~0.15 ms less per request at N = 150, E = 50); the few fingerprint matches
    are then confirmed by string, so a hash collision can never drop an item (``buckets`` < 2^63 - 1
    only to test that).
    """
    same = tf.equal(tf.strings.to_hash_bucket_fast(ids, buckets)[:, :, None],
                    tf.strings.to_hash_bucket_fast(exclude, buckets)[:, None, :])
    pairs = tf.where(same & tf.not_equal(exclude, PAD_ID)[:, None, :])  # [M, 3]: (row, position, exclusion)
    confirmed = tf.equal(tf.gather_nd(ids, pairs[:, :2]), tf.gather_nd(exclude, pairs[:, ::2]))
    return tf.scatter_nd(pairs[:, :2], tf.cast(confirmed, tf.int32), tf.shape(ids, out_type=tf.int64)) > 0


def _finalize(scores: tf.Tensor, ids: tf.Tensor, k: int,
              exclude: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Best ``k`` of ``(scores, ids)`` [B, N] that are real (not NaN, not "") and not excluded, padded to k."""
    invalid = tf.math.is_nan(scores) | tf.equal(ids, PAD_ID)
    if exclude is not None:
        invalid |= _excluded(ids, exclude)
    masked = tf.where(invalid, tf.constant(-np.inf, scores.dtype), scores)
    take = tf.minimum(k, tf.shape(scores)[1])
    top, order = tf.math.top_k(masked, k=take)
    picked = tf.gather(ids, order, batch_dims=1)
    keep = tf.math.is_finite(top)
    top = tf.where(keep, top, PAD_SCORE)
    picked = tf.where(keep, picked, PAD_ID)
    missing = [[0, 0], [0, k - take]]
    top = tf.ensure_shape(tf.pad(top, missing, constant_values=PAD_SCORE), [None, k])
    picked = tf.ensure_shape(tf.pad(picked, missing, constant_values=PAD_ID), [None, k])
    return top, picked


class RetrievalSignatures(tf.Module):
    """The serving signatures around a query model (features -> [B, D]) and an indexed top-k layer."""

    def __init__(self, query_model: tf.keras.Model, index: TopKIndex, *, num_items: int,
                 k: int, max_history: int, exclusion_width: int):
        super().__init__(name="retrieval")
        self.query_model = query_model
        self.index = index
        self.k, self.max_history, self.exclusion_width = int(k), int(max_history), int(exclusion_width)
        self._search_k = min(self.k, num_items)
        self._search_k_excluding = min(self.k + self.exclusion_width, num_items)
        user = tf.TensorSpec([None], tf.string, name="user_id")
        history = tf.TensorSpec([None, self.max_history], tf.string, name="history")
        exclude = tf.TensorSpec([None, self.exclusion_width], tf.string, name="exclude_item_ids")
        self.serving_default = tf.function(self._serve, input_signature=[user, history])
        self.query_with_exclusions = tf.function(self._serve_excluding, input_signature=[user, history, exclude])

    def _serve(self, user_id, history):
        queries = self.query_model({"user_id": user_id, "history": history})
        scores, ids = self.index(queries, k=self._search_k)
        scores, ids = _finalize(scores, ids, self.k)
        return {"item_ids": ids, "scores": scores}

    def _serve_excluding(self, user_id, history, exclude_item_ids):
        queries = self.query_model({"user_id": user_id, "history": history})
        scores, ids = self.index(queries, k=self._search_k_excluding)
        scores, ids = _finalize(scores, ids, self.k, exclude_item_ids)
        return {"item_ids": ids, "scores": scores}

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default.get_concrete_function(),
                "query_with_exclusions": self.query_with_exclusions.get_concrete_function()}

    def save(self, path: str) -> None:
        """Save; ScaNN's ops need the ``Scann`` namespace whitelisted."""
        options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
        tf.saved_model.save(self, path, signatures=self.signatures(), options=options)


def brute_force_index(candidates: np.ndarray, ids: np.ndarray, k: int) -> tfrs.layers.factorized_top_k.BruteForce:
    layer = tfrs.layers.factorized_top_k.BruteForce(k=k)
    layer.index(tf.constant(candidates, tf.float32), tf.constant(np.asarray(ids).astype(str)))
    return layer


def scann_index(candidates: np.ndarray, ids: np.ndarray, k: int, options: dict) -> ScaNNIndex:
    index = ScaNNIndex(k=k, **options)
    return index.index(tf.constant(candidates, tf.float32), tf.constant(np.asarray(ids).astype(str)))


def top_k_ids(index: TopKIndex, queries: np.ndarray, k: int, batch_size: int = 256) -> list[set]:
    """The set of ids each query's top ``k`` holds (ScaNN's NaN padding left out)."""
    out = []
    for lo in range(0, len(queries), batch_size):
        scores, ids = index(tf.constant(queries[lo:lo + batch_size], tf.float32), k=k)
        out += [{i for s, i in zip(row_scores, row_ids) if np.isfinite(s)}
                for row_scores, row_ids in zip(scores.numpy(), ids.numpy())]
    return out


def set_recall(found: list[set], exact: list[set]) -> float:
    """``sum |found_q & exact_q| / sum |exact_q|`` (1.0 when there is nothing to find)."""
    total = sum(len(e) for e in exact)
    return sum(len(f & e) for f, e in zip(found, exact)) / total if total else 1.0


def top_k_recall(approximate: TopKIndex, exact: TopKIndex, queries: np.ndarray, k: int,
                 batch_size: int = 256) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / |exact top-k| (ScaNN's NaN padding never counts)."""
    return set_recall(top_k_ids(approximate, queries, k, batch_size), top_k_ids(exact, queries, k, batch_size))


def narrow_scann_search(index: ScaNNIndex, queries: np.ndarray, exact: list[set], k: int, *,
                        tolerance: float = 0.002, floor: float = 0.0, step: float = 0.7) -> dict:
    """Search the fewest leaves that keep ScaNN's recall@k on ``queries`` as it is at the built width.

    A query's neighbours sit in a few of the tree's leaves; the other leaves searched cost time and
    find nothing (on clustered embeddings most of a default width can be such leaves). Tries the
    built ``num_leaves_to_search`` ``w``, then ``floor(w * step)``, ... down to 1, and stops at the first
    width whose recall@k against ``exact`` (each query's exact top-k ids) drops below
    ``max(recall(w) - tolerance, floor)``; the narrowest width before it is set as
    ``index.leaves_to_search`` (which the serving graph then uses). Returns the chosen width, its
    recall and every width tried with its recall.
    """
    index.leaves_to_search = None
    reference = set_recall(top_k_ids(index, queries, k), exact)
    tried = {index.num_leaves_to_search: reference}
    chosen = index.num_leaves_to_search
    if index.is_tree:
        width = index.num_leaves_to_search
        while width > 1:
            width = max(1, int(width * step))
            index.leaves_to_search = width
            tried[width] = set_recall(top_k_ids(index, queries, k), exact)
            if tried[width] < max(reference - tolerance, floor):
                break
            chosen = width
    index.leaves_to_search = chosen if chosen != index.num_leaves_to_search else None
    return {"leaves_to_search": chosen, "recall": tried[chosen], "built_leaves_to_search": index.num_leaves_to_search,
            "tolerance": tolerance, "tried": {str(w): round(r, 5) for w, r in tried.items()}}


def export_retrieval(model_dir: str | Path, export_base: str | Path, name: str, *, k: int = 100,
                     scann_min_recall: float = 0.95, allow_low_recall: bool = False,
                     exclusion_width: int | None = None, scann_options: dict | None = None,
                     narrow_scann: bool = True, scann_recall_tolerance: float = 0.002,
                     recall_queries: int = 1000, version: int | None = None) -> dict:
    """Export the run in ``model_dir`` as ``BASE/NAME/<v>`` (ScaNN) and ``BASE/NAME_portable/<v>`` (brute force).

    Unless ``scann_options`` sets ``num_leaves_to_search``, ``narrow_scann`` is false or the run has
    fewer than ``MIN_NARROWING_QUERIES`` users, the ScaNN export searches the fewest leaves that keep
    its recall@k on the run's users within ``scann_recall_tolerance`` of the default width's
    (:func:`narrow_scann_search`). Returns
    ``{"scann": dir, "portable": dir, "version": v, "metadata": {...}}``. Raises
    :class:`ExportError` (nothing written) when ScaNN's recall@k is below ``scann_min_recall``
    and ``allow_low_recall`` is false.
    """
    from tfrs_recsys.models.retrieval import query_vectors

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    trained = runs.load_retrieval(model_dir)
    model, max_history = trained.model, trained.cfg.max_history
    width = max_history if exclusion_width is None else int(exclusion_width)
    if width < 1:
        raise ValueError(f"exclusion width must be >= 1, got {width}")
    catalog = trained.catalog
    candidates = model.candidate_embeddings().numpy()
    search_k = min(k + width, len(catalog))
    options = {**default_scann_options(len(catalog), search_k), **(scann_options or {})}

    users = sorted(trained.histories)[:recall_queries]
    histories = [np.array(trained.histories[u], dtype=object) for u in users]
    queries = query_vectors(model, np.array(users, dtype=object), histories, max_history)
    exact = brute_force_index(candidates, catalog, search_k)
    approximate = scann_index(candidates, catalog, search_k, options)
    recall_k, recall, narrowing = min(k, len(catalog)), float("nan"), None
    if len(queries):
        exact_ids = top_k_ids(exact, queries, recall_k)
        explicit = "num_leaves_to_search" in (scann_options or {})
        if narrow_scann and not explicit and len(queries) >= MIN_NARROWING_QUERIES:
            narrowing = narrow_scann_search(approximate, queries, exact_ids, recall_k,
                                            tolerance=scann_recall_tolerance, floor=scann_min_recall)
            recall = narrowing["recall"]
            options["num_leaves_to_search"] = narrowing["leaves_to_search"]
        else:
            recall = set_recall(top_k_ids(approximate, queries, recall_k), exact_ids)
    if not (recall >= scann_min_recall) and not allow_low_recall:
        raise ExportError(f"ScaNN recall@{k} against brute force is {recall:.4f} on {len(queries)} user queries, "
                          f"below the threshold {scann_min_recall}; nothing was exported. Fix: search more leaves "
                          f"(--scann-leaves-to-search, now {options['num_leaves_to_search']} of "
                          f"{options['num_leaves']}) or re-score more candidates (--scann-reorder, now "
                          f"{options['num_reordering_candidates']}), or pass --allow-low-recall")

    query_model = model.scaled_query()
    warmup = _warmup(users[:2], histories[:2], max_history, width)
    metadata = {
        "model": "retrieval", "k": int(k), "max_history": int(max_history), "exclusion_width": int(width),
        "num_items": len(catalog), "embedding_dim": int(candidates.shape[1]),
        "signatures": {
            "serving_default": {"inputs": {"user_id": "string [B]", "history": f"string [B, {max_history}]"},
                                "outputs": {"item_ids": f"string [B, {k}]", "scores": f"float32 [B, {k}]"}},
            "query_with_exclusions": {"inputs": {"user_id": "string [B]", "history": f"string [B, {max_history}]",
                                                 "exclude_item_ids": f"string [B, {width}]"},
                                      "outputs": {"item_ids": f"string [B, {k}]", "scores": f"float32 [B, {k}]"}}},
        "padding": {"history": PAD_ID, "item_id": PAD_ID, "score": PAD_SCORE},
        "history_order": "oldest first, most recent item last",
        "scann_recall_at_k": recall, "scann_recall_queries": len(queries), "scann_min_recall": scann_min_recall,
        "scann_options": options, "scann_narrowing": narrowing,
        "inverse_temperature": trained.meta.get("inverse_temperature"),
        "source_run": paths.absolute(model_dir),
    }
    if version is None:
        version = max([0, *existing_versions(paths.join(export_base, name)),
                       *existing_versions(paths.join(export_base, f"{name}_portable"))]) + 1

    def save_with(index):
        def save(path: str) -> None:
            module = RetrievalSignatures(query_model, index, num_items=len(catalog), k=k, max_history=max_history,
                                         exclusion_width=width)
            for signature, inputs in warmup:  # builds every function (and ScaNN's searcher) before saving
                getattr(module, signature)(**{n: tf.constant(v) for n, v in inputs.items()})
            module.save(path)
        return save

    scann_dir = publish_version(export_base, name, save_with(approximate), version=version, warmup=warmup,
                                metadata={**metadata, "index": "scann", "requires": "import scann (ScaNN ops)"})
    portable_dir = publish_version(export_base, f"{name}_portable", save_with(exact), version=version, warmup=warmup,
                                   metadata={**metadata, "index": "brute_force", "requires": "standard TF ops"})
    return {"scann": str(scann_dir), "portable": str(portable_dir), "version": int(version), "metadata": metadata}


def _warmup(users: list[str], histories: list[np.ndarray], max_history: int, width: int) -> list:
    users = users or [PAD_ID]
    histories = histories or [np.array([], dtype=object)]
    user_ids = np.array([u.encode() for u in users], dtype=object)
    history = np.vectorize(lambda s: s.encode(), otypes=[object])(pad_left(histories, max_history))
    exclude = np.vectorize(lambda s: s.encode(), otypes=[object])(pad_left(histories, width))
    return [("serving_default", {"user_id": user_ids, "history": history}),
            ("query_with_exclusions", {"user_id": user_ids, "history": history, "exclude_item_ids": exclude})]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfrs_recsys.export retrieval",
                                     description="Export a retrieval run: ScaNN SavedModel + portable brute-force twin")
    parser.add_argument("--model-dir", required=True, help="run directory written by `train retrieval`")
    parser.add_argument("--export-base", required=True, help="TF Serving base path (model folders go inside)")
    parser.add_argument("--name", default="retrieval", help="model name; the portable twin is NAME_portable")
    parser.add_argument("--k", type=int, default=100, help="results per query (fixed in the signatures)")
    parser.add_argument("--exclusion-width", type=int, default=None,
                        help="width E of exclude_item_ids (default: the run's max_history)")
    parser.add_argument("--min-scann-recall", type=float, default=0.95,
                        help="fail when ScaNN's recall@k against brute force is lower")
    parser.add_argument("--allow-low-recall", action="store_true", help="export even below --min-scann-recall")
    parser.add_argument("--scann-leaves", type=int, dest="num_leaves")
    parser.add_argument("--scann-leaves-to-search", type=int, dest="num_leaves_to_search")
    parser.add_argument("--scann-reorder", type=int, dest="num_reordering_candidates")
    parser.add_argument("--scann-dims-per-block", type=int, dest="dimensions_per_block")
    parser.add_argument("--no-scann-narrowing", action="store_true",
                        help="search the default number of leaves instead of the fewest that keep its recall")
    parser.add_argument("--scann-recall-tolerance", type=float, default=0.002,
                        help="recall@k the narrowed search may lose against the default width's")
    parser.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    args = parser.parse_args(argv)
    scann_options = {key: getattr(args, key) for key in
                     ("num_leaves", "num_leaves_to_search", "num_reordering_candidates", "dimensions_per_block")
                     if getattr(args, key) is not None}
    try:
        result = export_retrieval(args.model_dir, args.export_base, args.name, k=args.k,
                                  scann_min_recall=args.min_scann_recall, allow_low_recall=args.allow_low_recall,
                                  exclusion_width=args.exclusion_width, scann_options=scann_options,
                                  narrow_scann=not args.no_scann_narrowing,
                                  scann_recall_tolerance=args.scann_recall_tolerance, version=args.version)
    except (ExportError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "metadata"} |
                     {"scann_recall_at_k": result["metadata"]["scann_recall_at_k"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
