"""What the recall -> rank pipeline answers: the items for one user, best first, and how lists merge."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One item of an answer.

    Attributes:
      item_id: The item.
      score: What the list is sorted by: the ranker's ``sort_by`` output; unranked, the retrieval
        score (source ``"recall"``) or the hotness (source ``"hot"``).
      source: Where the candidate came from: ``"recall"`` (the retrieval model) or ``"hot"``
        (the global hot items).
      scores: Every score the item got: the ranker's outputs, ``retrieval`` or ``hotness``.
    """

    item_id: str
    score: float
    source: str
    scores: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """The answer for one user: the items, best first, and the model versions that made it
    (``published``: the published recall lists' version, when the candidates came from them).
    ``fallback`` says why the answer is not the ranked list: the store or the model server did not answer,
    or retrieval found nothing."""

    user_id: str
    items: list[Recommendation]
    is_cold_start: bool
    versions: dict[str, int] = dataclasses.field(default_factory=dict)
    fallback: str | None = None

    @property
    def item_ids(self) -> list[str]:
        """The items' ids, in order."""
        return [r.item_id for r in self.items]

    def to_dict(self) -> dict:
        """The answer as JSON-ready dicts and lists; a score that is not finite (a ranker's NaN) is None."""
        def finite(score: float) -> float | None:
            return score if math.isfinite(score) else None

        answer = dataclasses.asdict(self)
        for item in answer["items"]:
            item["score"] = finite(item["score"])
            item["scores"] = {name: finite(value) for name, value in item["scores"].items()}
        return answer


Merge = Callable[[list[Recommendation], list[Recommendation], int], list[Recommendation]]


def ranked_only(ranked: list[Recommendation], hot: list[Recommendation], k: int) -> list[Recommendation]:
    """The default merge: the ranked list as is."""
    return ranked[:k]
