"""The in-memory shapes every loader returns and every later stage consumes.

Raw ids are strings everywhere (``user_id``, ``item_id``): they are what a
serving client sends, and string vocabularies live inside the SavedModels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tfrs_recsys.data.errors import DataError, SkipReport

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
# Item columns of free text (a title): read by people, never a feature (a title is an id of its own).
FREE_TEXT_COLUMNS = ("title", "name", "imdb_url")


@dataclass
class InteractionData:
    """User-item interactions for retrieval.

    Attributes:
      interactions: ``user_id`` (str), ``item_id`` (str), ``rating`` (float), ``timestamp`` (int64 seconds).
      items: ``item_id`` (str), ``title`` (str), ``genres`` (list of str), plus any other item columns.
      users: ``user_id`` (str) plus user feature columns, or None.
      name: The dataset's name.
      skipped: What the loaders skipped (``skip_bad_rows``), one report per file.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    name: str = "interactions"
    skipped: list[SkipReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise DataError(f"interactions lack column(s) {missing}", column=missing[0],
                            fix="map your columns to user_id, item_id, rating, timestamp")
        if "item_id" not in self.items.columns:
            raise DataError("items lack the item_id column", column="item_id",
                            fix="name the item id column item_id")

    @property
    def num_users(self) -> int:
        """Distinct users with an interaction."""
        return int(self.interactions["user_id"].nunique())

    @property
    def num_items(self) -> int:
        """Distinct items with an interaction."""
        return int(self.interactions["item_id"].nunique())


@dataclass
class LabeledData:
    """Impressions with labels for the rankers (ESMM: click + conversion; DeepFM: label).

    Attributes:
      frame: Features and label columns side by side.
      labels: The label columns, which must never be used as features.
      name: The dataset's name.
      session_column: The column grouping the rows of one search or page view, when known.
      user_column: The user id column, when known.
      item_column: The item id column, when known.
      skipped: What the loaders skipped (``skip_bad_rows``), one report per file.
      table_columns: The columns joined from ``--items`` / ``--users`` tables, by group
        (``{"item": ["cuisine", "rating"]}``): attributes of the item or user, whatever their names say;
        ``{"times": [...]}``: those of them read from dates (timestamps, whatever their values);
        ``{"left_out": [...]}``: the tables' columns ``--exclude-columns`` kept from the join.
      truth: The ground truth of synthetic data (e.g. ``true_ctr``), row-aligned with ``frame`` and kept
        apart so that it can never leak into the features.
    """

    frame: pd.DataFrame
    labels: list[str]
    name: str = "impressions"
    session_column: str | None = None
    user_column: str | None = None
    item_column: str | None = None
    skipped: list[SkipReport] = field(default_factory=list)
    table_columns: dict[str, list[str]] = field(default_factory=dict)
    truth: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        missing = [c for c in self.labels if c not in self.frame.columns]
        if missing:
            raise DataError(f"label column(s) {missing} not in the data", column=missing[0],
                            fix="name the label column, or pass the labels the file actually has")

    @property
    def feature_columns(self) -> list[str]:
        """The columns of ``frame`` other than the labels."""
        return [c for c in self.frame.columns if c not in self.labels]


def item_labels(items: pd.DataFrame, max_columns: int = 3) -> dict[str, str]:
    """A readable label per item id, for people to judge recommendations by.

    Args:
      items: An item table (``item_id`` and metadata columns).
      max_columns: The most ``name=value`` pairs of an item without a title.

    Returns:
      ``{item_id: label}``: the title, and the genres the title does not already name; an item without a
      title gets its other columns as ``name=value`` (e.g. ``category=shoes``), or its id.
    """
    def text(value) -> str:
        if isinstance(value, (list, tuple)) or hasattr(value, "tolist") and not isinstance(value, str):
            return ", ".join(map(str, list(value)))
        if isinstance(value, float) and value.is_integer():
            return str(int(value))  # a code of a column with gaps (read as floats): 100, not 100.0
        return "" if value is None or (isinstance(value, float) and value != value) else str(value)

    others = [c for c in items.columns if c not in ("item_id", "title", "genres")][:max_columns]
    labels = {}
    for row in items.to_dict("records"):
        title, genres = text(row.get("title")), text(row.get("genres"))
        missing = [g for g in genres.split(", ") if g and g not in title]
        if title:
            labels[str(row["item_id"])] = f"{title} [{', '.join(missing)}]" if missing else title
        else:
            pairs = [f"{c}={text(row[c])}" for c in ("genres", *others) if c in row and text(row[c])]
            labels[str(row["item_id"])] = " ".join(pairs) or str(row["item_id"])
    return labels

