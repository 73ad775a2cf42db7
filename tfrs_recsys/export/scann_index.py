"""A ScaNN top-k index of our own, on ScaNN's public TensorFlow ops, saved with the SavedModel around it.

The searcher is built with ``scann_ops.builder(...)...build()`` and kept as the ``tf.Module`` that
``serialize_to_module()`` returns (ScaNN's config, tree and quantized dataset as variables); a
search gets the searcher from it with ``scann_ops.searcher_from_module``, in a traced graph too, so
a SavedModel holding the index needs ScaNN's ops (``import scann``) to load, and nothing of TFRS.
"""
from __future__ import annotations

import uuid

import tensorflow as tf


class ScaNNIndex(tf.Module):
    """Approximate top-k by dot product over a fixed catalog, called as ``index(queries, k)``.

    A catalog of at least ``MIN_TREE_ITEMS`` items is partitioned by a k-means tree of ``num_leaves``
    leaves trained on ``training_sample_size`` points; a query scores the items of its
    ``num_leaves_to_search`` nearest leaves with asymmetric hashing (anisotropic quantization at
    ``anisotropic_quantization_threshold``, ScaNN's recommended 0.2 for dot products; NaN: plain
    product quantization) and re-scores the best ``num_reordering_candidates`` exactly. A smaller
    catalog, too small to train the tree and the quantizer, is scored exactly.

    ``leaves_to_search``, when set, overrides ``num_leaves_to_search`` at query time, in a graph traced
    afterwards too; ``None`` searches as built.

    Args:
      k: Results per query when a call does not say.
      num_leaves: Leaves of the tree.
      num_leaves_to_search: Leaves a query searches.
      dimensions_per_block: Dimensions per AH code block (more: coarser, faster scoring).
      num_reordering_candidates: Candidates re-scored exactly (``None``: no re-scoring).
      training_iterations: k-means iterations of the tree.
      training_sample_size: Points the tree trains on (at most the catalog).
      anisotropic_quantization_threshold: AH's anisotropic threshold.
      parallelize_batch_searches: Search a batch's queries on ScaNN's thread pool; a serving request
        holds a few queries, for which the pool costs more than it saves.
      name: Module name.
    """

    MIN_TREE_ITEMS = 256

    def __init__(self, k: int = 10, *, num_leaves: int = 100, num_leaves_to_search: int = 10,
                 dimensions_per_block: int = 2, num_reordering_candidates: int | None = None,
                 training_iterations: int = 12, training_sample_size: int = 250_000,
                 anisotropic_quantization_threshold: float = 0.2, parallelize_batch_searches: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.k = int(k)
        self.num_leaves = int(num_leaves)
        self.num_leaves_to_search = int(num_leaves_to_search)
        self.leaves_to_search: int | None = None
        self.parallelize_batch_searches = parallelize_batch_searches
        self.is_tree = False
        self.state: tf.Module | None = None
        self.identifiers: tf.Variable | None = None

        def build(builder, size: int):
            builder = builder.tree(num_leaves=num_leaves, num_leaves_to_search=num_leaves_to_search,
                                   training_iterations=training_iterations,
                                   training_sample_size=min(size, training_sample_size))
            builder = builder.score_ah(dimensions_per_block,
                                       anisotropic_quantization_threshold=anisotropic_quantization_threshold)
            if num_reordering_candidates is not None:
                builder = builder.reorder(num_reordering_candidates)
            return builder

        self._configure_tree = build

    def index(self, candidates: tf.Tensor, identifiers: tf.Tensor | None = None) -> ScaNNIndex:
        """Builds the searcher, replacing any earlier one.

        Args:
          candidates: Candidate embeddings ``[N, D]``.
          identifiers: The candidates' ids ``[N]``, which results name them by (default: row numbers).

        Returns:
          The index.
        """
        from scann import scann_ops

        builder = scann_ops.builder(db=candidates, num_neighbors=self.k, distance_measure="dot_product")
        self.is_tree = candidates.shape[0] >= self.MIN_TREE_ITEMS
        if self.is_tree:
            builder = self._configure_tree(builder, int(candidates.shape[0]))
        else:
            builder = builder.score_brute_force()
        self.state = builder.build(shared_name=f"{self.name}/{uuid.uuid4()}").serialize_to_module()
        self.identifiers = None
        if identifiers is not None:
            self.identifiers = tf.Variable(identifiers, trainable=False, name="identifiers")
        return self

    def __call__(self, queries: tf.Tensor, k: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Scores and ids ``[B, k]`` of the best ``k`` candidates of each query ``[B, D]``, best first.

        Args:
          queries: Query embeddings.
          k: Results per query (default: the index's ``k``); rows with fewer candidates are padded
            with NaN scores.

        Returns:
          ``(scores, ids)``; ids are the identifiers given to :meth:`index`, or row numbers.
        """
        from scann import scann_ops

        if self.state is None:
            raise ValueError("the ScaNN index is empty: call index(candidates, identifiers) first")
        searcher = scann_ops.searcher_from_module(self.state)
        parallel = self.parallelize_batch_searches
        search = searcher.search_batched_parallel if parallel else searcher.search_batched
        result = search(queries, final_num_neighbors=self.k if k is None else k,
                        leaves_to_search=self.leaves_to_search)
        if self.identifiers is None:
            return result.distances, result.indices
        return result.distances, tf.gather(self.identifiers, result.indices)
