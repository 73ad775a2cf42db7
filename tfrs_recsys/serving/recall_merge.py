"""Which candidates the ranker sees: the retrieval top-N with global hot items mixed in.

Pure list logic (no TensorFlow, no gRPC): :class:`RecallMergeConfig` states the strategy,
:func:`merge_candidates` applies it, and the serving CLIs build the config from flags.
:class:`tfrs_recsys.serving.pipeline.RecallRankPipeline` calls it on every request.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Collection, Sequence

from tfrs_recsys.config import ConfigError

RECALL = "recall"
HOT = "hot"
STRATEGIES = ("none", "ratio", "positions")


@dataclasses.dataclass(frozen=True)
class RecallMergeConfig:
    """How global hot items join the retrieval candidates handed to the ranker.

    * ``none``: the N candidates are the retrieval top-N.
    * ``ratio``: ``floor(N * hot_ratio)`` of the N slots hold hot items, spread evenly: the
      1-based slot ``i`` is hot when ``floor(i * hot_ratio) > floor((i - 1) * hot_ratio)``
      (0.2 makes slots 5, 10, 15, ... hot; 0.5 every second slot).
    * ``positions``: the 1-based slots in ``hot_positions`` hold hot items (slots past N are unused).

    Hot items are taken hottest first from the ``num_hot`` hottest items that are not in the
    user's history (``None``: all of them). An item already placed is skipped (it keeps its
    first slot and source). A slot whose source has run out is filled from the other source,
    so the list is shorter than N only when both are spent.
    """

    strategy: str = "none"
    hot_ratio: float = 0.2
    hot_positions: tuple[int, ...] = ()
    num_hot: int | None = None

    def __post_init__(self):
        positions = tuple(self.hot_positions)
        object.__setattr__(self, "hot_positions", positions)

        def bad(field: str, why: str, fix: str) -> ConfigError:
            return ConfigError(f"recall merge: field '{field}' = {getattr(self, field)!r} {why}; {fix}")

        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"is not one of {STRATEGIES}", "pick one, e.g. --recall-merge ratio")
        if not isinstance(self.hot_ratio, (int, float)) or not 0.0 <= self.hot_ratio <= 1.0:
            raise bad("hot_ratio", "is not a share in [0, 1]", "e.g. 0.2 for one hot slot in five")
        if any(not isinstance(p, int) or isinstance(p, bool) or p < 1 for p in positions):
            raise bad("hot_positions", "must hold 1-based slot numbers (integers >= 1)", "e.g. 3,7")
        if len(set(positions)) != len(positions):
            raise bad("hot_positions", "repeats a slot", "list each slot once")
        if self.strategy == "positions" and not positions:
            raise bad("hot_positions", "is empty but strategy is 'positions'", "list slots, e.g. 3,7")
        if self.num_hot is not None and (not isinstance(self.num_hot, int) or self.num_hot < 0):
            raise bad("num_hot", "must be an integer >= 0 (or None for all hot items)", "e.g. 50")

    def hot_slots(self, n: int) -> list[int]:
        """The 0-based indices of the hot slots in a candidate list of length ``n``."""
        if self.strategy == "ratio":
            eps = 1e-9  # 0.29 * 100 is 28.999...: slot counts follow the decimal ratio
            return [i - 1 for i in range(1, n + 1)
                    if math.floor(i * self.hot_ratio + eps) > math.floor((i - 1) * self.hot_ratio + eps)]
        if self.strategy == "positions":
            return sorted(p - 1 for p in self.hot_positions if p <= n)
        return []


def merge_candidates(recalled: Sequence[str], hot: Sequence[str], n: int, config: RecallMergeConfig, *,
                     exclude: Collection[str] = ()) -> list[tuple[str, str]]:
    """The ``n`` candidates handed to the ranker, each from the retrieval list or the hot items.

    Args:
      recalled: The retrieval top list, best first (the model already left out what it excludes).
      hot: The hot items, hottest first.
      n: How many candidates.
      config: Which slots take hot items (:class:`RecallMergeConfig`).
      exclude: Items never taken from ``hot`` (the user's history).

    Returns:
      ``(item_id, source)`` per slot, source ``"recall"`` or ``"hot"``; fewer than ``n`` only when
      both lists are spent.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    excluded = set(exclude)
    unseen = [i for i in hot if i not in excluded] if config.strategy != "none" else []
    pools = {RECALL: iter(recalled), HOT: iter(unseen if config.num_hot is None else unseen[:config.num_hot])}
    hot_slots = set(config.hot_slots(n))
    placed: dict[str, str] = {}  # item -> source, in slot order
    for slot in range(n):
        first, second = (HOT, RECALL) if slot in hot_slots else (RECALL, HOT)
        for source in (first, second):
            # Items already placed are passed over (and used up) in either pool.
            item = next((i for i in pools[source] if i not in placed), None)
            if item is not None:
                placed[item] = source
                break
        else:
            break  # both sources are spent
    return list(placed.items())


def add_recall_merge_arguments(parser: argparse.ArgumentParser) -> None:
    """``--recall-merge``, ``--hot-ratio``, ``--hot-positions``, ``--num-hot`` (the serving CLIs)."""
    defaults = RecallMergeConfig()
    parser.add_argument("--recall-merge", default=defaults.strategy, choices=STRATEGIES,
                        help="mix global hot items into the ranker's candidates: none, ratio or positions")
    parser.add_argument("--hot-ratio", type=float, default=defaults.hot_ratio,
                        help="with ratio: share of the candidates that are hot items (default 0.2)")
    parser.add_argument("--hot-positions", default="",
                        help="with positions: comma-separated 1-based candidate slots of hot items, e.g. 3,7")
    parser.add_argument("--num-hot", type=int, default=None,
                        help="draw hot items from this many hottest items (default: all)")


def recall_merge_from_args(args: argparse.Namespace) -> RecallMergeConfig:
    """The config the flags of :func:`add_recall_merge_arguments` describe.

    Raises:
      ConfigError: A flag's value is not valid (the message names the field and a fix).
    """
    try:
        positions = tuple(int(p) for p in str(args.hot_positions).replace(" ", "").split(",") if p)
    except ValueError:
        raise ConfigError(f"recall merge: field 'hot_positions' = {args.hot_positions!r} is not a "
                          "comma-separated list of integers; e.g. --hot-positions 3,7") from None
    return RecallMergeConfig(args.recall_merge, args.hot_ratio, positions, args.num_hot)
