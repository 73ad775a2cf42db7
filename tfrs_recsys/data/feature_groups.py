"""Which group a feature belongs to, user, item or context: the towers and the feature store read it.

Explicit lists win, then the id columns, then names (``user_*``, ``item_*``, Ali-CCP's field ids), then
the sample: a value constant within every user (item) id is that user's (item's) attribute.
"""
from __future__ import annotations

import re

import pandas as pd

from tfrs_recsys.data.label_leaks import norm_name
from tfrs_recsys.data.schema import FeatureColumn, raw_strings

# user_*, u_*, visitor_*, *_user; Ali-CCP field ids 1xx (f101, D109_14) are user fields.
_USER_NAME = re.compile(r"^(user|u|visitor|customer)_|_user$|^userid$|^[fd]?1\d\d(_\d+)?$")
# item_*, prop_* (hotels), movie*, ad_*, i_*, *_item; Ali-CCP field ids 2xx are item fields.
_ITEM_NAME = re.compile(r"^(item|prop|ad|i|product)_|^movie|_item$|^itemid$|^[fd]?2\d\d(_\d+)?$")


def group_of(column: FeatureColumn, values: pd.Series, explicit: dict[str, str], user_column: str | None,
             item_column: str | None, ids: dict[str, pd.Series]) -> tuple[str, str]:
    """``column``'s group and why (module docstring).

    Args:
      column: The feature.
      values: Its sampled values.
      explicit: Groups given by name (``{column: group}``).
      user_column: The user id column, if any.
      item_column: The item id column, if any.
      ids: The sampled ``user`` / ``item`` ids, row-aligned with ``values``.

    Returns:
      (``user``, ``item`` or ``context``; the reason).
    """
    name, lname = column.name, norm_name(column.name)
    if name in explicit:
        return explicit[name], "listed explicitly"
    for group, hit, why in (("user", name == user_column, "the user id column"),
                            ("item", name == item_column, "the item id column"),
                            ("user", _USER_NAME.search(lname), "user-like name"),
                            ("item", _ITEM_NAME.search(lname), "item-like name")):
        if hit:
            return group, why
    key = raw_strings(values) if values.dtype == object else values
    per_user = "user" in ids and constant_within(key, ids["user"])
    per_item = "item" in ids and constant_within(key, ids["item"])
    if per_user != per_item:
        role = "user" if per_user else "item"
        return role, f"constant within each {role} id in the sample"
    return "context", "no user/item naming or id dependency"


def constant_within(values: pd.Series, ids: pd.Series) -> bool:
    """True when ``values`` never changes within an id, and ids repeat enough for that to mean something."""
    distinct_ids = ids.nunique()
    if distinct_ids == 0 or len(ids) < 2 * distinct_ids:
        return False
    return bool((values.groupby(ids.to_numpy(), sort=False).nunique(dropna=False) <= 1).all())
