"""Export a trained retrieval run for TF Serving, twice: over a ScaNN index and over brute force.

* ``BASE/NAME/<version>/``: the query tower + a ScaNN top-k index
  (:class:`tfrs_recsys.export.scann_index.ScaNNIndex`); loads only in a process with ScaNN's ops
  (``import scann`` first; a ScaNN-linked model server).
* ``BASE/NAME_portable/<version>/``: the same signatures with exact brute-force top-k
  (``tfrs.layers.factorized_top_k.BruteForce``), standard TensorFlow ops only.

Both versions get the same integer version; both are staged complete, with warmup requests and metadata,
before :func:`tfrs_recsys.export.tfserving.publish_versions` renames them into place as one.

Signatures (``K`` fixed at export; ``H`` and ``E`` any width, per request)::

    serving_default(user_id: string [B], history: string [B, H])
        -> item_ids: string [B, K], scores: float32 [B, K]
    query_with_exclusions(user_id: string [B], history: string [B, H], exclude_item_ids: string [B, E])
        -> item_ids: string [B, K], scores: float32 [B, K]

``history`` holds raw item ids, most recent last; ``""`` is padding (on either side, so padded requests
of any width work too) and unknown ids are skipped. The graph keeps each row's most recent ``L`` real ids
(``L`` = the run's ``max_history``), so a stock TF Serving behaves the same and no client pads.
The search looks ``K + e`` deep, ``e`` the most real exclusions of any row, so exclusions never shorten
a result while the catalog holds enough items.
Scores are the model's logits ``tau * <q, c(i)>``, best first; a run that fused co-occurrence counts
(:mod:`tfrs_recsys.models.cooccurrence`, its weight ``beta`` > 0) serves the fused scores
``tau * <q, c(i)> + beta * log(r(history, i) + eps)``, over the index's top items and the history's
neighbors, with the table of every user's full history. Where fewer than ``K`` items
qualify (a catalog smaller than ``K``, or exclusions), the row is padded with item id ``""``
and score ``PAD_SCORE`` (the lowest float32). No NaN leaves a signature: ScaNN's NaN padding
is dropped before the final top-k.

Before anything is written, ScaNN's top-k is compared with brute force on up to
``recall_queries`` real user queries; the recall goes into the metadata and the export fails
below ``scann_min_recall`` unless ``allow_low_recall``. The same queries narrow the search to
the fewest tree leaves that keep the default width's recall, or widen it, step by step, until it
reaches ``scann_min_recall`` where the default width falls short (:func:`narrow_scann_search`).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_recsys import paths, runs
from tfrs_recsys.data.sequences import pad_left
from tfrs_recsys.export.recall import narrow_scann_search, set_recall, top_k_ids
from tfrs_recsys.export.scann_index import ScaNNIndex
from tfrs_recsys.export.tfserving import (
    publish_versions,
    repair_exports,
    stage_version,
    update_models_config,
)
from tfrs_recsys.export.version_numbers import reserve_version
from tfrs_recsys.models.cooccurrence import CooccurrenceTable, FusedTopK
from tfrs_recsys.servable_layout import ROWS_INDEPENDENT

PAD_ID = ""
PAD_SCORE = float(np.finfo(np.float32).min)
SIGNATURES = ("serving_default", "query_with_exclusions")
_FINGERPRINT_BUCKETS = 2 ** 63 - 1  # to_hash_bucket_fast(s, this) is s's 64-bit fingerprint (mod 2^63 - 1)
MIN_NARROWING_QUERIES = 100  # fewer user queries measure recall too coarsely to narrow ScaNN's search on
SCANN_FLAGS = {  # ScaNNIndex option: (flag, help)
    "num_leaves": ("--scann-leaves", "k-means tree leaves (default: about sqrt(catalog size), at most 2000)"),
    "num_leaves_to_search": ("--scann-leaves-to-search", "leaves each query searches (default: narrowed)"),
    "num_reordering_candidates": ("--scann-reorder", "candidates re-scored exactly (default: max(2k, 200))"),
    "dimensions_per_block": ("--scann-dims-per-block", "dimensions per quantization block (default 2)")}

TopKIndex = tfrs.layers.factorized_top_k.TopK | ScaNNIndex  # index(queries [B, D], k) -> (scores, ids) [B, k]


class ExportError(RuntimeError):
    """The export would not serve what was trained (e.g. ScaNN recall below the threshold)."""


def default_scann_options(num_items: int, k: int) -> dict:
    """Tree-AH settings for a catalog, as :class:`ScaNNIndex` keyword arguments.

    About ``sqrt(num_items)`` leaves (at most 2000), of which a tenth are searched, at least 10 and at
    least enough to hold about ``4k`` items; the best ``max(2k, 200)`` candidates are re-scored exactly.

    Args:
      num_items: The catalog size.
      k: The most results a query asks for.

    Returns:
      The options.
    """
    leaves = int(min(2000, max(1, round(math.sqrt(num_items)))))
    search = max(10, leaves // 10, math.ceil(leaves * 4 * k / num_items))
    return {"num_leaves": leaves, "num_leaves_to_search": min(leaves, search), "dimensions_per_block": 2,
            "num_reordering_candidates": int(min(num_items, max(2 * k, 200))), "training_iterations": 12,
            "training_sample_size": 250_000, "anisotropic_quantization_threshold": 0.2}


def _excluded(ids: tf.Tensor, exclude: tf.Tensor, buckets: int = _FINGERPRINT_BUCKETS) -> tf.Tensor:
    """``[B, N]`` bool: ``ids[b, n]`` is one of the real (non-``""``) ids of ``exclude[b]`` ``[B, E]``.

    The ``N x E`` comparisons are made on 64-bit fingerprints (integer equality is cheaper than
    string equality); the few fingerprint matches are then confirmed by string, so a hash collision
    can never drop an item (``buckets`` < 2^63 - 1 only to test that).
    """
    same = tf.equal(tf.strings.to_hash_bucket_fast(ids, buckets)[:, :, None],
                    tf.strings.to_hash_bucket_fast(exclude, buckets)[:, None, :])
    pairs = tf.where(same & tf.not_equal(exclude, PAD_ID)[:, None, :])  # [M, 3]: (row, position, exclusion)
    confirmed = tf.equal(tf.gather_nd(ids, pairs[:, :2]), tf.gather_nd(exclude, pairs[:, ::2]))
    return tf.scatter_nd(pairs[:, :2], tf.cast(confirmed, tf.int32), tf.shape(ids, out_type=tf.int64)) > 0


def _finalize(scores: tf.Tensor, ids: tf.Tensor, k: int,
              exclude: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Best ``k`` of ``(scores, ids)`` [B, N] that are real (not NaN, not "") and not excluded, padded."""
    invalid = tf.math.is_nan(scores) | tf.equal(ids, PAD_ID)
    if exclude is not None:
        invalid |= _excluded(ids, exclude)
    masked = tf.where(invalid, tf.constant(-np.inf, scores.dtype), scores)
    take = tf.minimum(k, tf.shape(scores)[1])
    top, order = tf.math.top_k(masked, k=take)
    keep = tf.math.is_finite(top)
    missing = [[0, 0], [0, k - take]]
    picked = tf.where(keep, tf.gather(ids, order, batch_dims=1), PAD_ID)
    top = tf.pad(tf.where(keep, top, PAD_SCORE), missing, constant_values=PAD_SCORE)
    picked = tf.pad(picked, missing, constant_values=PAD_ID)
    return tf.ensure_shape(top, [None, k]), tf.ensure_shape(picked, [None, k])


def most_recent(ids: tf.Tensor, width: int) -> tf.Tensor:
    """The last ``width`` real (non-``""``) ids of each row of ``ids`` ``[B, H]``, left-padded ``[B, width]``.

    A stable sort on "is real" moves each row's padding before its ids, keeping their order, wherever the
    client put it.
    """
    order = tf.argsort(tf.cast(tf.not_equal(ids, PAD_ID), tf.int32), axis=1, stable=True)
    packed = tf.gather(ids, order, batch_dims=1)[:, -width:]
    packed = tf.pad(packed, [[0, 0], [width - tf.shape(packed)[1], 0]], constant_values=PAD_ID)
    return tf.ensure_shape(packed, [None, width])


class RetrievalSignatures(tf.Module):
    """The serving signatures (module docstring) around a query model and an indexed top-k layer.

    Args:
      query_model: Features ``{"user_id" [B], "history" [B, L]}`` -> query embeddings ``[B, D]``.
      index: ``index(queries, k)`` -> ``(scores, ids)`` ``[B, k]``, over the catalog.
      num_items: The catalog size.
      k: Results per query.
      max_history: ``L``.
      fusion: re-ranks the index's results with co-occurrence counts (:class:`FusedTopK`), or None.
    """

    def __init__(self, query_model: tf.keras.Model, index: TopKIndex, *, num_items: int, k: int,
                 max_history: int, fusion: FusedTopK | None = None):
        super().__init__(name="retrieval")
        self.query_model = query_model
        self.index = index
        self.fusion = fusion
        self.k, self.max_history, self.num_items = int(k), int(max_history), int(num_items)
        user = tf.TensorSpec([None], tf.string, name="user_id")
        history = tf.TensorSpec([None, None], tf.string, name="history")
        exclude = tf.TensorSpec([None, None], tf.string, name="exclude_item_ids")
        self.serving_default = tf.function(self._serve, input_signature=[user, history])
        self.query_with_exclusions = tf.function(self._serve, input_signature=[user, history, exclude])

    def _serve(self, user_id, history, exclude_item_ids=None):
        queries = self.query_model({"user_id": user_id, "history": most_recent(history, self.max_history)})
        search_k = min(self.k, self.num_items)
        if exclude_item_ids is not None:  # exclusions can remove up to e of the items found: search e more
            tf.debugging.assert_equal(tf.shape(exclude_item_ids)[0], tf.shape(user_id)[0], message=(
                "exclude_item_ids must hold one row per user_id"))
            excluded = tf.reduce_sum(tf.cast(tf.not_equal(exclude_item_ids, PAD_ID), tf.int32), axis=1)
            search_k = tf.minimum(self.k + tf.reduce_max(tf.concat([[0], excluded], 0)), self.num_items)
        scores, ids = self.index(queries, k=search_k)
        if self.fusion is not None:  # the counts read the request's last known items, past max_history too
            scores, ids = self.fusion(queries, history, scores, ids)
        scores, ids = _finalize(scores, ids, self.k, exclude_item_ids)
        return {"item_ids": ids, "scores": scores}

    def save(self, path: str) -> None:
        """Saves the module with both signatures; ScaNN's ops need the ``Scann`` namespace allowed.

        Args:
          path: The SavedModel directory.
        """
        signatures = {name: getattr(self, name).get_concrete_function() for name in SIGNATURES}
        options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
        tf.saved_model.save(self, path, signatures=signatures, options=options)


def brute_force_index(candidates: np.ndarray, ids: np.ndarray,
                      k: int) -> tfrs.layers.factorized_top_k.BruteForce:
    """An exact top-k layer (TFRS's ``BruteForce``).

    Args:
      candidates: Candidate embeddings ``[N, D]``.
      ids: Their ids ``[N]``, which results name them by.
      k: Results per query.

    Returns:
      The indexed layer.
    """
    layer = tfrs.layers.factorized_top_k.BruteForce(k=k)
    layer.index(tf.constant(candidates, tf.float32), tf.constant(np.asarray(ids).astype(str)))
    return layer


def scann_index(candidates: np.ndarray, ids: np.ndarray, k: int, options: dict) -> ScaNNIndex:
    """An approximate top-k index (:class:`ScaNNIndex`).

    Args:
      candidates: Candidate embeddings ``[N, D]``.
      ids: Their ids ``[N]``, which results name them by.
      k: Results per query.
      options: :class:`ScaNNIndex` keyword arguments (:func:`default_scann_options`).

    Returns:
      The built index.
    """
    index = ScaNNIndex(k=k, **options)
    return index.index(tf.constant(candidates, tf.float32), tf.constant(np.asarray(ids).astype(str)))


def export_retrieval(model_dir: str | Path, export_base: str | Path, name: str, *, k: int = 100,
                     scann_min_recall: float = 0.95, allow_low_recall: bool = False,
                     scann_options: dict | None = None,
                     narrow_scann: bool = True, scann_recall_tolerance: float = 0.002,
                     recall_queries: int = 1000, version: int | None = None,
                     allow_incomplete: bool = False) -> dict:
    """Export a retrieval run as ``BASE/NAME/<v>`` (ScaNN) and ``BASE/NAME_portable/<v>`` (brute force).

    Unless ``scann_options`` sets ``num_leaves_to_search``, the ScaNN export searches the fewest leaves
    that keep its recall@k on the run's users within ``scann_recall_tolerance`` of the default width's
    (not when ``narrow_scann`` is false or the run has fewer than ``MIN_NARROWING_QUERIES`` users), or,
    where the default width is below ``scann_min_recall``, a width widened step by step until it reaches
    it (:func:`narrow_scann_search`).

    Args:
      model_dir: The run directory of ``python -m tfrs_recsys.train retrieval``.
      export_base: The model server's base path.
      name: The ScaNN model's name; the portable twin is ``NAME_portable``.
      k: Results per query, fixed in the signatures.
      scann_min_recall: The least recall@k of ScaNN against brute force that is exported.
      allow_low_recall: Export below ``scann_min_recall`` too.
      scann_options: :class:`ScaNNIndex` options over :func:`default_scann_options`.
      narrow_scann: Narrow the search as above.
      scann_recall_tolerance: The recall narrowing may lose.
      recall_queries: How many users' queries measure the recall.
      version: The version of both models (default: the next free one of both).
      allow_incomplete: Export a run that did not complete (killed, still training), with a warning.

    Returns:
      ``{"scann": dir, "portable": dir, "version": v, "metadata": {...}, "models_config": path}``; both
      models are added to ``BASE/models.config`` (:func:`~tfrs_recsys.export.tfserving.update_models_config`).

    Raises:
      ExportError: ScaNN's recall@k is below ``scann_min_recall`` and ``allow_low_recall`` is false
        (nothing is written).
      RunDirError: The run did not complete (and not ``allow_incomplete``), or lacks a file.
    """
    from tfrs_recsys.models.retrieval import query_vectors

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    runs.open_run(model_dir, ("retrieval",)).require_complete(allow_incomplete)
    trained = runs.load_retrieval(model_dir)
    model, max_history, catalog = trained.model, trained.cfg.max_history, trained.catalog
    candidates = model.candidate_embeddings().numpy()
    # The index is built for a search as deep as a request excluding a full history needs.
    search_k, recall_k = min(k + max_history, len(catalog)), min(k, len(catalog))
    options = {**default_scann_options(len(catalog), search_k), **(scann_options or {})}

    users = sorted(trained.histories)[:recall_queries]
    histories = [np.array(trained.histories[u], dtype=object) for u in users]
    queries = query_vectors(model, np.array(users, dtype=object), histories, max_history)
    exact = brute_force_index(candidates, catalog, search_k)
    approximate = scann_index(candidates, catalog, search_k, options)
    recall, narrowing = float("nan"), None
    if len(queries):
        exact_ids = top_k_ids(exact, queries, recall_k)
        explicit = "num_leaves_to_search" in (scann_options or {})
        if not explicit:
            narrowing = narrow_scann_search(approximate, queries, exact_ids, recall_k,
                                            tolerance=scann_recall_tolerance, floor=scann_min_recall,
                                            narrow=narrow_scann and len(queries) >= MIN_NARROWING_QUERIES)
            recall = narrowing["recall"]
            options["num_leaves_to_search"] = narrowing["leaves_to_search"]
        else:
            recall = set_recall(top_k_ids(approximate, queries, recall_k), exact_ids)
    if not (recall >= scann_min_recall) and not allow_low_recall:
        rescore = (f"re-score more candidates (--scann-reorder, now {options['num_reordering_candidates']}), "
                   "or pass --allow-low-recall")
        searched, leaves = options["num_leaves_to_search"], options["num_leaves"]
        fix = rescore if searched >= leaves else (
            f"search more leaves (--scann-leaves-to-search, now {searched} of {leaves}) or {rescore}")
        raise ExportError(f"ScaNN recall@{k} against brute force is {recall:.4f} on {len(queries)} "
                          f"user queries, below the threshold {scann_min_recall}; nothing was exported. "
                          f"Fix: {fix}")

    warmup = _warmup(users[:2], histories[:2], max_history)
    inputs = {"user_id": "string [B]", "history": "string [B, H]"}
    outputs = {"item_ids": f"string [B, {k}]", "scores": f"float32 [B, {k}]"}
    excluding = {**inputs, "exclude_item_ids": "string [B, E]"}
    metadata = {
        ROWS_INDEPENDENT: True,  # the model server may run a request's rows in parts
        "model": "retrieval", "k": int(k), "max_history": int(max_history),
        "num_items": len(catalog), "embedding_dim": int(candidates.shape[1]),
        "signatures": {"serving_default": {"inputs": inputs, "outputs": outputs},
                       "query_with_exclusions": {"inputs": excluding, "outputs": outputs}},
        "padding": {"history": PAD_ID, "item_id": PAD_ID, "score": PAD_SCORE},
        "history_order": "oldest first, most recent item last; the last max_history real ids are used",
        "scann_recall_at_k": recall, "scann_recall_queries": len(queries),
        "scann_min_recall": scann_min_recall, "scann_options": options, "scann_narrowing": narrowing,
        "inverse_temperature": trained.meta.get("inverse_temperature"),
        "source_run": paths.absolute(model_dir), "source_run_complete": runs.is_complete(model_dir),
    }
    repair_exports(export_base)  # what a killed export left
    if version is None:
        version = reserve_version(paths.join(export_base, name), paths.join(export_base, f"{name}_portable"))
    query_model = model.scaled_query()
    fusion = None
    if trained.cooccurrence is not None and trained.cooccurrence.beta > 0:
        fitted = trained.cooccurrence
        table = CooccurrenceTable.of_histories(trained.histories.values(), catalog, fitted.beta,
                                               fitted.damping)
        fusion = FusedTopK(table, candidates, catalog)
        metadata.update(cooccurrence_beta=table.beta, cooccurrence_damping=table.damping)

    def stage(top_k: TopKIndex, model_name: str, **about) -> tuple:
        module = RetrievalSignatures(query_model, top_k, num_items=len(catalog), k=k, max_history=max_history,
                                     fusion=fusion)
        for signature, feed in warmup:  # builds every function (and ScaNN's searcher) before saving
            getattr(module, signature)(**{n: tf.constant(v) for n, v in feed.items()})
        return stage_version(export_base, model_name, module.save, version=version, warmup=warmup,
                             metadata={**metadata, **about})

    # Both members are complete before either is published, and are published as one.
    scann_dir, portable_dir = publish_versions(export_base, [
        stage(approximate, name, index="scann", requires="import scann (ScaNN ops)"),
        stage(exact, f"{name}_portable", index="brute_force", requires="standard TF ops")])
    result = {"scann": str(scann_dir), "portable": str(portable_dir), "version": int(version),
              "metadata": metadata}
    result["models_config"] = str(update_models_config(export_base, [name, f"{name}_portable"]))
    return result


def _warmup(users: list[str], histories: list[np.ndarray], max_history: int) -> list:
    """Warmup requests of both signatures from (up to) two users, or one empty request."""
    encode = np.vectorize(lambda s: s.encode(), otypes=[object])
    feed = {"user_id": encode(np.array(users or [PAD_ID], dtype=object)),
            "history": encode(pad_left(histories or [np.array([], dtype=object)], max_history))}
    excluding = {**feed, "exclude_item_ids": feed["history"]}
    return [("serving_default", feed), ("query_with_exclusions", excluding)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfrs_recsys.export retrieval --model-dir RUN --export-base BASE [options]``.

    Args:
      argv: The arguments after ``retrieval`` (default: the command line's).

    Returns:
      The exit code: 0, or 2 when nothing was exported.
    """
    parser = argparse.ArgumentParser(
        prog="python -m tfrs_recsys.export retrieval",
        description="Export a retrieval run: ScaNN SavedModel + portable brute-force twin")
    parser.add_argument("--model-dir", required=True, help="run directory written by `train retrieval`")
    parser.add_argument("--export-base", required=True, help="TF Serving base path (model folders go inside)")
    parser.add_argument("--name", default="retrieval",
                        help="model name; the portable twin is NAME_portable (default: %(default)s)")
    parser.add_argument("--k", type=int, default=100,
                        help="results per query, fixed in the signatures (default: %(default)s)")
    parser.add_argument("--min-scann-recall", type=float, default=0.95,
                        help="fail when ScaNN's recall@k against brute force is lower (default: %(default)s)")
    parser.add_argument("--allow-low-recall", action="store_true",
                        help="export even below --min-scann-recall")
    for option, (flag, about) in SCANN_FLAGS.items():
        parser.add_argument(flag, type=int, dest=option, help=about)
    parser.add_argument("--no-scann-narrowing", action="store_true",
                        help="search the default number of leaves instead of the fewest that keep its recall "
                             "(a default width below --min-scann-recall is still widened)")
    parser.add_argument("--scann-recall-tolerance", type=float, default=0.002,
                        help="recall@k the narrowed search may lose against the default width's "
                             "(default: %(default)s)")
    parser.add_argument("--version", type=int, help="version number (default: the next free one)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="export a run that did not complete (killed or still training), with a warning")
    args = parser.parse_args(argv)
    if not 0 <= args.min_scann_recall <= 1:
        parser.error(f"--min-scann-recall is a recall, between 0 and 1; got {args.min_scann_recall}")
    scann_options = {o: getattr(args, o) for o in SCANN_FLAGS if getattr(args, o) is not None}
    try:
        result = export_retrieval(args.model_dir, args.export_base, args.name, k=args.k,
                                  scann_min_recall=args.min_scann_recall,
                                  allow_low_recall=args.allow_low_recall,
                                  scann_options=scann_options,
                                  narrow_scann=not args.no_scann_narrowing,
                                  scann_recall_tolerance=args.scann_recall_tolerance, version=args.version,
                                  allow_incomplete=args.allow_incomplete)
    except (ExportError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if k != "metadata"} |
                     {"scann_recall_at_k": result["metadata"]["scann_recall_at_k"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
